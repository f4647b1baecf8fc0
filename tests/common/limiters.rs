//! Every kind of limiter the module has, in one table, and limiters of each
//! kind: the command that takes units from one, the one that only looks,
//! and how to read "admitted" and "remaining" from what they reply.
//!
//! A suite that means "every kind" iterates over [`KINDS`] (or, for what
//! CHECK and PEEK take, [`algorithms`]). A new algorithm of CHECK is one
//! more row of [`KINDS`]; a new command that takes units is one more
//! [`Command`] with its arguments and reply here.
//!
//! Concurrency leases (RATELIMIT.ACQUIRE) are not a row of [`KINDS`]: the
//! suites that iterate over it mean "every rate limiter", whose state is a
//! string (`GET` reads it, [`Kind::of_value`] tells its kind, the kit's
//! `Dataset` snapshots it), which takes units with a cost, answers a look
//! (PEEK, THROTTLE quantity 0) even at maxmemory, and which RATELIMIT.RESET
//! removes. A lease set is a sorted set, has no cost and no look, and RESET
//! refuses it. A suite that means every kind of state the module keeps adds
//! a [`LeasePool`] to its limiters.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use redis::{ConnectionLike, Value};

use super::keys::exists;
use super::reply::{run, Decision, Throttled};

/// How a kind of limiter is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `RATELIMIT.CHECK key limit period ALGORITHM <name> [COST cost]`,
    /// looked at by `RATELIMIT.PEEK` with the same arguments.
    Check,
    /// `RATELIMIT.THROTTLE key max_burst count_per_period period
    /// [quantity]`, looked at with quantity 0.
    Throttle,
}

/// One kind of limiter: an algorithm of CHECK, or THROTTLE's GCRA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    /// Its name in `ALGORITHM` and in errors.
    pub name: &'static str,
    pub command: Command,
    /// A bucket refills continuously and its capacity is set apart from
    /// its rate (TOKEN's BURST, THROTTLE's max_burst); a window admits its
    /// limit per period.
    pub bucket: bool,
    /// The first byte of the value it stores (`#`: a decimal digit).
    pub tag: u8,
}

pub const FIXED: Kind = Kind {
    name: "FIXED",
    command: Command::Check,
    bucket: false,
    tag: b'#',
};
pub const SLIDING: Kind = Kind {
    name: "SLIDING",
    command: Command::Check,
    bucket: false,
    tag: b'S',
};
pub const TOKEN: Kind = Kind {
    name: "TOKEN",
    command: Command::Check,
    bucket: true,
    tag: b'T',
};
pub const THROTTLE: Kind = Kind {
    name: "THROTTLE",
    command: Command::Throttle,
    bucket: true,
    tag: b'G',
};

/// Every kind of limiter.
pub const KINDS: [Kind; 4] = [FIXED, SLIDING, TOKEN, THROTTLE];

/// The kinds CHECK and PEEK take (`ALGORITHM <name>`).
pub fn algorithms() -> Vec<Kind> {
    KINDS
        .into_iter()
        .filter(|k| k.command == Command::Check)
        .collect()
}

impl Kind {
    /// The name in lower case, for key names (`wt:fixed`).
    pub fn lower(&self) -> String {
        self.name.to_lowercase()
    }

    /// The kind whose state `value` looks like, by its first byte.
    pub fn of_value(value: &[u8]) -> Option<Kind> {
        let tag = match value.first()? {
            b'0'..=b'9' => b'#',
            other => *other,
        };
        KINDS.into_iter().find(|k| k.tag == tag)
    }

    /// `limit` units per `period_s`, holding `limit` at most.
    pub const fn limiter(self, limit: u64, period_s: u64) -> Limiter {
        Limiter {
            kind: self,
            limit,
            period_s,
            capacity: limit,
        }
    }

    /// `capacity` units of which none comes back within a test: windows of
    /// 10^9 s (a sliding window is aligned to the epoch: the current one
    /// runs from 2001 to 2033), buckets refilled at one unit per
    /// [`LASTING_UNIT_S`].
    pub fn lasting(self, capacity: u64) -> Limiter {
        if self.bucket {
            self.limiter(1, LASTING_UNIT_S).holding(capacity)
        } else {
            self.limiter(capacity, 1_000_000_000)
        }
    }
}

/// One limiter of each kind, for tests where any will do: 5 units a minute.
pub fn one_of_each() -> Vec<Limiter> {
    KINDS.iter().map(|k| k.limiter(5, 60)).collect()
}

/// Makes one limiter of each kind ([`one_of_each`]) on `{prefix}:{kind}`
/// (`rs:fixed`, …) by a call taking one unit; returns each with its key, in
/// the order of [`KINDS`].
pub fn make_one_of_each(con: &mut dyn ConnectionLike, prefix: &str) -> Vec<(Limiter, String)> {
    one_of_each()
        .into_iter()
        .map(|limiter| {
            let key = format!("{prefix}:{}", limiter.kind.lower());
            limiter.call(con, &limiter.take_one(&key));
            assert!(exists(con, &key), "{key} not made");
            (limiter, key)
        })
        .collect()
}

/// How long a bucket made by [`Kind::lasting`] takes to give one unit back:
/// over a day, and short enough that a full bucket of 10 000 refills within
/// the module's bound of 10^9 s.
pub const LASTING_UNIT_S: u64 = 100_000;

/// A limiter: a kind with its rate and capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limiter {
    pub kind: Kind,
    /// Units per period: CHECK's limit, THROTTLE's count_per_period.
    pub limit: u64,
    pub period_s: u64,
    /// Units it admits at once at most.
    pub capacity: u64,
}

impl Limiter {
    /// The same rate in a bucket of `capacity` units.
    pub fn holding(self, capacity: u64) -> Limiter {
        assert!(
            self.kind.bucket || capacity == self.limit,
            "a {} window holds its limit",
            self.kind.name
        );
        Limiter { capacity, ..self }
    }

    /// The arguments after the key.
    pub fn args(&self) -> Vec<String> {
        let (limit, period) = (self.limit.to_string(), self.period_s.to_string());
        match self.kind.command {
            Command::Check => {
                let mut args = vec![limit, period, "ALGORITHM".into(), self.kind.name.into()];
                if self.capacity != self.limit {
                    args.extend(["BURST".to_string(), self.capacity.to_string()]);
                }
                args
            }
            Command::Throttle => vec![(self.capacity - 1).to_string(), limit, period],
        }
    }

    /// Its group in an MCHECK or MPEEK, taking `cost` units (a kind CHECK
    /// takes only).
    pub fn group(&self, cost: u64) -> super::commands::Group {
        assert_eq!(
            self.kind.command,
            Command::Check,
            "{} has no group",
            self.kind.name
        );
        let args = self.args();
        let options: Vec<&str> = args[2..].iter().map(String::as_str).collect();
        super::commands::group(self.limit, self.period_s, &options).cost(cost)
    }

    /// The command taking one unit from `key`, written without a cost.
    pub fn take_one(&self, key: &str) -> Vec<String> {
        let name = match self.kind.command {
            Command::Check => "RATELIMIT.CHECK",
            Command::Throttle => "RATELIMIT.THROTTLE",
        };
        let mut args = vec![name.to_string(), key.to_string()];
        args.extend(self.args());
        args
    }

    /// The command taking `cost` units (THROTTLE's quantity) from `key`.
    pub fn take(&self, key: &str, cost: u64) -> Vec<String> {
        let mut args = self.take_one(key);
        if self.kind.command == Command::Check {
            args.push("COST".to_string());
        }
        args.push(cost.to_string());
        args
    }

    /// The command that answers for `cost` units from `key` and takes
    /// nothing: PEEK, or THROTTLE with quantity 0.
    pub fn look(&self, key: &str, cost: u64) -> Vec<String> {
        match self.kind.command {
            Command::Check => {
                let mut args = self.take(key, cost);
                args[0] = "RATELIMIT.PEEK".to_string();
                args
            }
            Command::Throttle => self.take(key, 0),
        }
    }

    /// A reply to one of this limiter's commands.
    pub fn reply(&self, value: Value) -> Reply {
        let parsed = match self.kind.command {
            Command::Check => redis::from_redis_value(value.clone()).map(Reply::Decision),
            Command::Throttle => redis::from_redis_value(value.clone()).map(Reply::Throttled),
        };
        parsed.unwrap_or_else(|e| panic!("{}: not its reply: {value:?}: {e}", self.kind.name))
    }

    /// Runs `args`, one of this limiter's commands.
    pub fn call(&self, con: &mut dyn ConnectionLike, args: &[String]) -> Reply {
        self.reply(run(con, args))
    }
}

/// What any limiter replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    Decision(Decision),
    Throttled(Throttled),
}

impl Reply {
    /// Whether the request was (or would be) admitted.
    pub fn admitted(&self) -> bool {
        match self {
            Reply::Decision(d) => d.allowed,
            Reply::Throttled(t) => !t.limited,
        }
    }

    /// Units left after the request.
    pub fn remaining(&self) -> i64 {
        match self {
            Reply::Decision(d) => d.remaining,
            Reply::Throttled(t) => t.remaining,
        }
    }

    /// admitted, remaining and limit: what does not depend on the time.
    pub fn counts(&self) -> (bool, i64, i64) {
        match self {
            Reply::Decision(d) => d.counts(),
            Reply::Throttled(t) => (!t.limited, t.remaining, t.limit),
        }
    }

    /// The retry and reset times, in [`Reply::time_unit_ms`].
    pub fn times(&self) -> [i64; 2] {
        match self {
            Reply::Decision(d) => [d.retry_after_ms, d.reset_after_ms],
            Reply::Throttled(t) => [t.retry_after_s, t.reset_after_s],
        }
    }

    /// Milliseconds in a unit of [`Reply::times`]: THROTTLE answers in
    /// seconds, rounded up.
    pub fn time_unit_ms(&self) -> i64 {
        match self {
            Reply::Decision(_) => 1,
            Reply::Throttled(_) => 1000,
        }
    }
}

/// Concurrency leases on a key: at most `max` live at once, each ending
/// `lease_ms` after it was granted (RATELIMIT.ACQUIRE). Not a [`Kind`]: see
/// the top of this file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeasePool {
    pub max: u64,
    pub lease_ms: u64,
}

impl LeasePool {
    /// `max` leases of an hour: none ends by itself during a test.
    pub const fn lasting(max: u64) -> LeasePool {
        LeasePool {
            max,
            lease_ms: 3_600_000,
        }
    }

    /// The command taking a lease on `key`, with a generated id.
    pub fn acquire_args(&self, key: &str) -> Vec<String> {
        vec![
            "RATELIMIT.ACQUIRE".to_string(),
            key.to_string(),
            self.max.to_string(),
            self.lease_ms.to_string(),
        ]
    }

    /// Takes a lease on `key` with id `id` (generated when `None`).
    pub fn acquire(
        &self,
        con: &mut dyn ConnectionLike,
        key: &str,
        id: Option<&[u8]>,
    ) -> super::reply::Lease {
        super::commands::acquire(con, key, self.max, self.lease_ms, id)
    }

    /// Makes a lease set on `key` holding one lease; returns its id.
    pub fn make(&self, con: &mut dyn ConnectionLike, key: &str) -> Vec<u8> {
        let lease = self.acquire(con, key, None);
        assert!(lease.acquired, "{key}: {lease:?}");
        assert!(exists(con, key), "{key} not made");
        lease.id().to_vec()
    }
}
