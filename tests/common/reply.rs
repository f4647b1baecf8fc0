//! Commands given as text or bytes, and what they reply: CHECK's and PEEK's
//! five integers as a [`Decision`], THROTTLE's as a [`Throttled`], MCHECK's
//! and MPEEK's seven elements as a [`Multi`], ACQUIRE's six as a [`Lease`],
//! RESERVE's nine as a [`Reserved`], SETTLE's as a [`Settled`], an error as
//! its text.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use redis::{ConnectionLike, FromRedisValue, ParsingError, RedisResult, Value};

/// The WRONGTYPE error as the commands reply it for a key that holds no
/// limiter (a hash, a list, "hello").
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// The WRONGTYPE error for a key that holds a string that is no limiter's
/// state ("hello", "007").
pub const NOT_LIMITER_STATE: &str = "WRONGTYPE the key holds a string that is not limiter state";

/// The error a limiter command replies for `key`, which holds no limiter:
/// [`NOT_LIMITER_STATE`] for a string, [`WRONGTYPE`] for another type.
pub fn not_a_limiter(con: &mut dyn ConnectionLike, key: &str) -> String {
    let kind: String = redis::cmd("TYPE").arg(key).query(con).unwrap();
    match kind.as_str() {
        "string" => NOT_LIMITER_STATE,
        _ => WRONGTYPE,
    }
    .to_string()
}

/// The error for a command of kind `wanted` (FIXED, SLIDING, TOKEN,
/// THROTTLE) on a key holding a limiter of kind `held`.
pub fn wrong_algorithm(held: &str, wanted: &str) -> String {
    assert_ne!(held, wanted, "a key of {held} is of the kind asked for");
    let use_it = match held {
        "THROTTLE" => "RATELIMIT.THROTTLE".to_string(),
        algorithm => format!("ALGORITHM {algorithm}"),
    };
    format!("WRONGTYPE the key holds {held} limiter state, not {wanted}; use {use_it} or RATELIMIT.RESET it")
}

/// RATELIMIT.CHECK's and RATELIMIT.PEEK's reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub remaining: i64,
    pub limit: i64,
    /// -1 when allowed, or when the cost can never fit.
    pub retry_after_ms: i64,
    /// Until the limiter is back to full; 0 when it already is.
    pub reset_after_ms: i64,
}

impl Decision {
    /// An admitted request (no retry time).
    pub const fn allowed(remaining: i64, limit: i64, reset_after_ms: i64) -> Decision {
        Decision {
            allowed: true,
            remaining,
            limit,
            retry_after_ms: -1,
            reset_after_ms,
        }
    }

    /// A denied request.
    pub const fn denied(
        remaining: i64,
        limit: i64,
        retry_after_ms: i64,
        reset_after_ms: i64,
    ) -> Decision {
        Decision {
            allowed: false,
            remaining,
            limit,
            retry_after_ms,
            reset_after_ms,
        }
    }

    /// allowed, remaining and limit: what does not depend on the time.
    pub fn counts(&self) -> (bool, i64, i64) {
        (self.allowed, self.remaining, self.limit)
    }

    /// Everything but `reset_after_ms`.
    pub fn without_reset(&self) -> (bool, i64, i64, i64) {
        (
            self.allowed,
            self.remaining,
            self.limit,
            self.retry_after_ms,
        )
    }
}

/// RATELIMIT.THROTTLE's (redis-cell's CL.THROTTLE's) reply; times in
/// seconds, rounded up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    /// Whether the request was refused (redis-cell's 0 is "allowed").
    pub limited: bool,
    pub limit: i64,
    pub remaining: i64,
    /// -1 when not limited.
    pub retry_after_s: i64,
    pub reset_after_s: i64,
}

impl Throttled {
    /// An admitted request (no retry time).
    pub const fn admitted(limit: i64, remaining: i64, reset_after_s: i64) -> Throttled {
        Throttled {
            limited: false,
            limit,
            remaining,
            retry_after_s: -1,
            reset_after_s,
        }
    }

    /// A refused request.
    pub const fn limited(
        limit: i64,
        remaining: i64,
        retry_after_s: i64,
        reset_after_s: i64,
    ) -> Throttled {
        Throttled {
            limited: true,
            limit,
            remaining,
            retry_after_s,
            reset_after_s,
        }
    }

    /// limited, limit and remaining: what does not depend on the time.
    pub fn counts(&self) -> (bool, i64, i64) {
        (self.limited, self.limit, self.remaining)
    }
}

/// RATELIMIT.ACQUIRE's reply: CHECK's five integers, then the lease id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub acquired: bool,
    /// Leases still available after this call.
    pub remaining: i64,
    pub max: i64,
    /// -1 when acquired; otherwise until a slot frees up by itself.
    pub retry_after_ms: i64,
    /// Until the last live lease ends; 0 when none is live.
    pub reset_after_ms: i64,
    /// The lease's id; `None` (a nil reply) when not acquired.
    pub id: Option<Vec<u8>>,
}

impl Lease {
    /// A granted (or renewed) lease.
    pub fn acquired(remaining: i64, max: i64, reset_after_ms: i64, id: &[u8]) -> Lease {
        Lease {
            acquired: true,
            remaining,
            max,
            retry_after_ms: -1,
            reset_after_ms,
            id: Some(id.to_vec()),
        }
    }

    /// A denial.
    pub fn denied(remaining: i64, max: i64, retry_after_ms: i64, reset_after_ms: i64) -> Lease {
        Lease {
            acquired: false,
            remaining,
            max,
            retry_after_ms,
            reset_after_ms,
            id: None,
        }
    }

    /// acquired, remaining and max: what does not depend on the time.
    pub fn counts(&self) -> (bool, i64, i64) {
        (self.acquired, self.remaining, self.max)
    }

    /// The id of a granted lease, which must be there.
    pub fn id(&self) -> &[u8] {
        self.id
            .as_deref()
            .unwrap_or_else(|| panic!("no lease id in {self:?}"))
    }
}

impl FromRedisValue for Lease {
    fn from_redis_value(value: Value) -> Result<Lease, ParsingError> {
        let bad = |what: &str| ParsingError::from(format!("not an ACQUIRE reply ({what})"));
        let Value::Array(items) = value else {
            return Err(bad("not an array"));
        };
        let [flag, remaining, max, retry, reset, id]: [Value; 6] = items
            .try_into()
            .map_err(|items: Vec<Value>| bad(&format!("{} elements", items.len())))?;
        let (acquired, [remaining, max, retry_after_ms, reset_after_ms]) =
            five_integers(Value::Array(vec![flag, remaining, max, retry, reset]))?;
        let id = match id {
            Value::Nil => None,
            Value::BulkString(bytes) => Some(bytes),
            other => return Err(bad(&format!("the id is {other:?}"))),
        };
        if acquired != id.is_some() {
            return Err(bad("an id exactly when acquired"));
        }
        Ok(Lease {
            acquired,
            remaining,
            max,
            retry_after_ms,
            reset_after_ms,
            id,
        })
    }
}

/// RATELIMIT.MCHECK's and RATELIMIT.MPEEK's reply: the whole request's
/// verdict with the binding limit's numbers, that limit's position, and each
/// limit's own five integers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Multi {
    /// Whether the whole request was (or would be) admitted.
    pub allowed: bool,
    /// The first five elements: `allowed`, then the binding limit's
    /// remaining, limit, retry_after_ms and reset_after_ms.
    pub binding: Decision,
    /// The binding limit's position among the keys, from 1.
    pub position: i64,
    /// Each limit's five integers, in key order.
    pub each: Vec<Decision>,
}

impl Multi {
    /// The binding limit's own five integers (its entry in `each`).
    pub fn binding_each(&self) -> Decision {
        self.each[usize::try_from(self.position - 1).unwrap()]
    }
}

impl FromRedisValue for Multi {
    fn from_redis_value(value: Value) -> Result<Multi, ParsingError> {
        let Value::Array(items) = value else {
            return Err(ParsingError::from(format!(
                "expected an array of 7, got {value:?}"
            )));
        };
        let [allowed, remaining, limit, retry, reset, position, each]: [Value; 7] =
            items.try_into().map_err(|items: Vec<Value>| {
                ParsingError::from(format!("expected 7 elements, got {items:?}"))
            })?;
        let head = Value::Array(vec![allowed, remaining, limit, retry, reset]);
        let binding = Decision::from_redis_value(head)?;
        let position: i64 = redis::from_redis_value(position)?;
        let each: Vec<Decision> = redis::from_redis_value(each)?;
        if !(1..=each.len() as i64).contains(&position) {
            return Err(ParsingError::from(format!(
                "binding position {position} among {} limits",
                each.len()
            )));
        }
        Ok(Multi {
            allowed: binding.allowed,
            binding,
            position,
            each,
        })
    }
}

/// RATELIMIT.RESERVE's reply: MCHECK's seven elements, then the units held
/// under the id and the ms until the hold expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reserved {
    /// MCHECK's part (a replay's: the first RESERVE's).
    pub multi: Multi,
    /// Units held under the id; 0 when denied, settled or nothing is held.
    pub held: i64,
    /// Ms until the hold expires; -1 when nothing is held.
    pub hold_ttl_ms: i64,
}

impl FromRedisValue for Reserved {
    fn from_redis_value(value: Value) -> Result<Reserved, ParsingError> {
        let Value::Array(mut items) = value else {
            return Err(ParsingError::from(format!(
                "expected an array of 9, got {value:?}"
            )));
        };
        if items.len() != 9 {
            return Err(ParsingError::from(format!(
                "expected 9 elements, got {items:?}"
            )));
        }
        let hold_ttl_ms: i64 = redis::from_redis_value(items.pop().unwrap())?;
        let held: i64 = redis::from_redis_value(items.pop().unwrap())?;
        let multi = Multi::from_redis_value(Value::Array(items))?;
        Ok(Reserved {
            multi,
            held,
            hold_ttl_ms,
        })
    }
}

/// RATELIMIT.SETTLE's reply: 1 settled, 0 unknown or expired id (the actual
/// charged in full), 2 settled already (nothing charged); then each limit
/// as PEEK of one unit shows it after the settle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    pub status: i64,
    pub each: Vec<Decision>,
}

impl FromRedisValue for Settled {
    fn from_redis_value(value: Value) -> Result<Settled, ParsingError> {
        let (status, each): (i64, Vec<Decision>) = redis::from_redis_value(value)?;
        if !(0..=2).contains(&status) {
            return Err(ParsingError::from(format!("SETTLE's status is {status}")));
        }
        Ok(Settled { status, each })
    }
}

/// The five integers of a reply, the first one 0 or 1.
fn five_integers(value: Value) -> Result<(bool, [i64; 4]), ParsingError> {
    let ints: Vec<i64> = redis::from_redis_value(value)?;
    let [flag, a, b, c, d]: [i64; 5] = ints
        .try_into()
        .map_err(|r: Vec<i64>| ParsingError::from(format!("expected five integers, got {r:?}")))?;
    match flag {
        0 | 1 => Ok((flag == 1, [a, b, c, d])),
        other => Err(ParsingError::from(format!(
            "the first integer is {other}, not 0 or 1"
        ))),
    }
}

impl FromRedisValue for Decision {
    fn from_redis_value(value: Value) -> Result<Decision, ParsingError> {
        let (allowed, [remaining, limit, retry_after_ms, reset_after_ms]) = five_integers(value)?;
        Ok(Decision {
            allowed,
            remaining,
            limit,
            retry_after_ms,
            reset_after_ms,
        })
    }
}

impl FromRedisValue for Throttled {
    fn from_redis_value(value: Value) -> Result<Throttled, ParsingError> {
        let (limited, [limit, remaining, retry_after_s, reset_after_s]) = five_integers(value)?;
        Ok(Throttled {
            limited,
            limit,
            remaining,
            retry_after_s,
            reset_after_s,
        })
    }
}

/// A command given as text (the name first).
pub fn command(args: &[impl AsRef<str>]) -> redis::Cmd {
    let mut cmd = redis::cmd(args[0].as_ref());
    for arg in &args[1..] {
        cmd.arg(arg.as_ref());
    }
    cmd
}

/// A command given as text, success or error.
pub fn try_run(con: &mut dyn ConnectionLike, args: &[impl AsRef<str>]) -> RedisResult<Value> {
    command(args).query(con)
}

/// A command given as text, expected to succeed.
pub fn run<T: FromRedisValue>(con: &mut dyn ConnectionLike, args: &[impl AsRef<str>]) -> T {
    command(args).query(con).unwrap_or_else(|e| {
        let text: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        panic!("{}: {e}", text.join(" "))
    })
}

/// The error a command given as text replies (see [`error_of`]).
pub fn error(con: &mut dyn ConnectionLike, args: &[impl AsRef<str>]) -> String {
    error_of(try_run(con, args))
}

/// A command given as raw bytes (the name first), success or error.
pub fn raw(con: &mut dyn ConnectionLike, args: &[&[u8]]) -> RedisResult<Value> {
    let mut cmd = redis::Cmd::new();
    for arg in args {
        cmd.arg(*arg);
    }
    cmd.query(con)
}

/// The error a reply is, as text (code first).
///
/// The command name in the standard wrong-arity error is given in lower
/// case: Redis 7 writes the registered name, Redis 6.2 the name as typed.
pub fn error_of(result: RedisResult<Value>) -> String {
    let text = match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => match (e.code(), e.detail()) {
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            (Some(code), None) => code.to_string(),
            _ => e.to_string(),
        },
    };
    match text.split_once("wrong number of arguments for '") {
        Some((head, rest)) => format!(
            "{head}wrong number of arguments for '{}",
            rest.to_lowercase()
        ),
        None => text,
    }
}
