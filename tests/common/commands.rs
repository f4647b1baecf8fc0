//! The module's commands, called the one way every suite calls them, with
//! typed replies (RESERVE, SETTLE and EXTEND too); the server's clock around
//! a call, or waited for; and several calls at one instant of it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use redis::{ConnectionLike, FromRedisValue};

use redis::Value;

use super::abilities::Abilities;
use super::keys::dumped;
use super::reply::{Decision, Lease, Multi, Reserved, Settled, Throttled};

/// A key as text for messages (escaped, so that any bytes show).
pub fn key_text<K: AsRef<[u8]>>(key: K) -> String {
    key.as_ref().escape_ascii().to_string()
}

/// Runs `cmd`, which must succeed; `what` names it in the failure.
fn query<T: FromRedisValue>(
    con: &mut dyn ConnectionLike,
    cmd: &redis::Cmd,
    what: impl FnOnce() -> String,
) -> T {
    cmd.query(con).unwrap_or_else(|e| panic!("{}: {e}", what()))
}

/// `RATELIMIT.<name> key limit period [options…]` (CHECK or PEEK).
fn limit_call<K: AsRef<[u8]>>(
    con: &mut dyn ConnectionLike,
    name: &str,
    key: K,
    limit: u64,
    period_s: u64,
    options: &[&str],
) -> Decision {
    let mut cmd = redis::cmd(name);
    cmd.arg(key.as_ref()).arg(limit).arg(period_s).arg(options);
    query(con, &cmd, || {
        format!(
            "{name} {} {limit} {period_s} {}",
            key_text(&key),
            options.join(" ")
        )
    })
}

/// `RATELIMIT.CHECK key limit period [options…]`.
pub fn check<K: AsRef<[u8]>>(
    con: &mut dyn ConnectionLike,
    key: K,
    limit: u64,
    period_s: u64,
    options: &[&str],
) -> Decision {
    limit_call(con, "RATELIMIT.CHECK", key, limit, period_s, options)
}

/// `RATELIMIT.PEEK key limit period [options…]`.
pub fn peek<K: AsRef<[u8]>>(
    con: &mut dyn ConnectionLike,
    key: K,
    limit: u64,
    period_s: u64,
    options: &[&str],
) -> Decision {
    limit_call(con, "RATELIMIT.PEEK", key, limit, period_s, options)
}

/// `RATELIMIT.THROTTLE key max_burst count_per_period period [quantity]`.
pub fn throttle<K: AsRef<[u8]>>(
    con: &mut dyn ConnectionLike,
    key: K,
    max_burst: u64,
    count_per_period: u64,
    period_s: u64,
    quantity: Option<u64>,
) -> Throttled {
    let mut cmd = redis::cmd("RATELIMIT.THROTTLE");
    cmd.arg(key.as_ref())
        .arg(max_burst)
        .arg(count_per_period)
        .arg(period_s)
        .arg(quantity);
    query(con, &cmd, || {
        format!(
            "RATELIMIT.THROTTLE {} {max_burst} {count_per_period} {period_s} {quantity:?}",
            key_text(&key)
        )
    })
}

/// `RATELIMIT.RESET key…`: how many keys it removed.
pub fn reset<K: AsRef<[u8]>>(con: &mut dyn ConnectionLike, keys: &[K]) -> i64 {
    let mut cmd = redis::cmd("RATELIMIT.RESET");
    for key in keys {
        cmd.arg(key.as_ref());
    }
    query(con, &cmd, || {
        let keys: Vec<String> = keys.iter().map(key_text).collect();
        format!("RATELIMIT.RESET {}", keys.join(" "))
    })
}

/// `RATELIMIT.ACQUIRE key max lease_ms [ID id]`.
pub fn acquire<K: AsRef<[u8]>>(
    con: &mut dyn ConnectionLike,
    key: K,
    max: u64,
    lease_ms: u64,
    id: Option<&[u8]>,
) -> Lease {
    let mut cmd = redis::cmd("RATELIMIT.ACQUIRE");
    cmd.arg(key.as_ref()).arg(max).arg(lease_ms);
    if let Some(id) = id {
        cmd.arg("ID").arg(id);
    }
    query(con, &cmd, || {
        let id = id.map(|id| format!(" ID {}", key_text(id)));
        format!(
            "RATELIMIT.ACQUIRE {} {max} {lease_ms}{}",
            key_text(&key),
            id.unwrap_or_default()
        )
    })
}

/// `RATELIMIT.RELEASE key id…`: how many of the leases were live.
pub fn release<K: AsRef<[u8]>, I: AsRef<[u8]>>(
    con: &mut dyn ConnectionLike,
    key: K,
    ids: &[I],
) -> i64 {
    let mut cmd = redis::cmd("RATELIMIT.RELEASE");
    cmd.arg(key.as_ref());
    for id in ids {
        cmd.arg(id.as_ref());
    }
    query(con, &cmd, || {
        let ids: Vec<String> = ids.iter().map(key_text).collect();
        format!("RATELIMIT.RELEASE {} {}", key_text(&key), ids.join(" "))
    })
}

/// `RATELIMIT.RENEW key id lease_ms`: whether the lease was live.
pub fn renew<K: AsRef<[u8]>>(
    con: &mut dyn ConnectionLike,
    key: K,
    id: &[u8],
    lease_ms: u64,
) -> bool {
    let mut cmd = redis::cmd("RATELIMIT.RENEW");
    cmd.arg(key.as_ref()).arg(id).arg(lease_ms);
    let renewed: i64 = query(con, &cmd, || {
        format!(
            "RATELIMIT.RENEW {} {} {lease_ms}",
            key_text(&key),
            key_text(id)
        )
    });
    match renewed {
        0 | 1 => renewed == 1,
        other => panic!("RATELIMIT.RENEW replied {other}, not 0 or 1"),
    }
}

/// The server's clock (`TIME`) in UNIX milliseconds, truncated like the
/// server's own millisecond clock.
pub fn server_ms(con: &mut dyn ConnectionLike) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query(con).unwrap();
    secs * 1000 + micros / 1000
}

/// A reply with the server's clock read just before and just after the
/// call: the command's own "now" lies in `before..=after`.
#[derive(Clone, Copy, Debug)]
pub struct Timed<T> {
    pub reply: T,
    pub before: i64,
    pub after: i64,
}

impl<T> Timed<T> {
    /// The same readings around a part of the reply.
    pub fn map<U>(&self, part: impl FnOnce(&T) -> U) -> Timed<U> {
        Timed {
            reply: part(&self.reply),
            before: self.before,
            after: self.after,
        }
    }
}

/// Runs `call` between two readings of the server's clock.
pub fn timed<T>(
    con: &mut dyn ConnectionLike,
    call: impl FnOnce(&mut dyn ConnectionLike) -> T,
) -> Timed<T> {
    let before = server_ms(con);
    let reply = call(con);
    let after = server_ms(con);
    Timed {
        reply,
        before,
        after,
    }
}

/// How long [`wait_until_past`] may wait beyond the instant it waits for.
pub const CLOCK_WAIT_SLACK: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until the server's clock (`TIME`) is past `at_ms` (UNIX ms), by
/// polling it: a deadline on the server is judged by the server's clock,
/// never by a sleep on ours. Returns the first reading past it.
pub fn wait_until_past(con: &mut dyn ConnectionLike, at_ms: i64) -> i64 {
    let give_up = std::time::Instant::now()
        + CLOCK_WAIT_SLACK
        + std::time::Duration::from_millis(u64::try_from(at_ms - server_ms(con)).unwrap_or(0));
    loop {
        let now = server_ms(con);
        if now > at_ms {
            return now;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "the server's clock stays at {now}, not past {at_ms}"
        );
        // Polling, not waiting for the instant: a short pause between reads.
        std::thread::sleep(std::time::Duration::from_millis(
            u64::try_from(at_ms - now).unwrap_or(0).clamp(1, 20),
        ));
    }
}

/// One `LIMIT limit period [options…]` group of MCHECK and MPEEK: what
/// CHECK takes after its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub limit: u64,
    pub period_s: u64,
    /// `COST`, `ALGORITHM` and `BURST`, as CHECK takes them.
    pub options: Vec<String>,
}

/// The group `LIMIT limit period options…`.
pub fn group(limit: u64, period_s: u64, options: &[&str]) -> Group {
    Group {
        limit,
        period_s,
        options: options.iter().map(|o| o.to_string()).collect(),
    }
}

impl Group {
    /// The same group with `COST cost` added.
    pub fn cost(mut self, cost: u64) -> Group {
        self.options.extend(["COST".to_string(), cost.to_string()]);
        self
    }

    /// The same group with `HOLD estimate` added (RESERVE's).
    pub fn hold(mut self, estimate: u64) -> Group {
        self.options
            .extend(["HOLD".to_string(), estimate.to_string()]);
        self
    }

    /// The same group with `ACTUAL actual` added (SETTLE's).
    pub fn actual(mut self, actual: u64) -> Group {
        self.options
            .extend(["ACTUAL".to_string(), actual.to_string()]);
        self
    }

    /// Its arguments, `LIMIT` first.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "LIMIT".to_string(),
            self.limit.to_string(),
            self.period_s.to_string(),
        ];
        args.extend(self.options.iter().cloned());
        args
    }

    /// CHECK of `key` with this group's arguments, as text (for
    /// [`run`](super::reply::run) or a [`Limiter`](super::limiters::Limiter)
    /// reply).
    pub fn check_args(&self, name: &str, key: &str) -> Vec<String> {
        let mut args = vec![name.to_string(), key.to_string()];
        args.extend(self.args().into_iter().skip(1));
        args
    }
}

/// `RATELIMIT.<name> numkeys key… LIMIT …` (MCHECK or MPEEK) as a command,
/// e.g. for a pipeline.
pub fn multi_command<K: AsRef<[u8]>>(name: &str, keys: &[K], groups: &[Group]) -> redis::Cmd {
    let mut cmd = redis::cmd(name);
    cmd.arg(keys.len());
    for key in keys {
        cmd.arg(key.as_ref());
    }
    for group in groups {
        cmd.arg(group.args());
    }
    cmd
}

/// The same as text, for [`error`](super::reply::error) and messages.
pub fn multi_args<K: AsRef<[u8]>>(name: &str, keys: &[K], groups: &[Group]) -> Vec<String> {
    let mut args = vec![name.to_string(), keys.len().to_string()];
    args.extend(keys.iter().map(key_text));
    args.extend(groups.iter().flat_map(Group::args));
    args
}

fn multi_call<K: AsRef<[u8]>>(
    con: &mut dyn ConnectionLike,
    name: &str,
    keys: &[K],
    groups: &[Group],
) -> Multi {
    query(con, &multi_command(name, keys, groups), || {
        multi_args(name, keys, groups).join(" ")
    })
}

/// `RATELIMIT.MCHECK numkeys key… LIMIT …`: group `i` applies to key `i`.
pub fn mcheck<K: AsRef<[u8]>>(con: &mut dyn ConnectionLike, keys: &[K], groups: &[Group]) -> Multi {
    multi_call(con, "RATELIMIT.MCHECK", keys, groups)
}

/// `RATELIMIT.MPEEK numkeys key… LIMIT …`.
pub fn mpeek<K: AsRef<[u8]>>(con: &mut dyn ConnectionLike, keys: &[K], groups: &[Group]) -> Multi {
    multi_call(con, "RATELIMIT.MPEEK", keys, groups)
}

/// `RATELIMIT.RESERVE holds id ttl_ms numkeys key… LIMIT …` as a command:
/// group `i` (with its `COST` or `HOLD`) applies to key `i`.
pub fn reserve_command<K: AsRef<[u8]>>(
    holds: &str,
    id: &str,
    ttl_ms: u64,
    keys: &[K],
    groups: &[Group],
) -> redis::Cmd {
    let mut cmd = redis::cmd("RATELIMIT.RESERVE");
    cmd.arg(holds).arg(id).arg(ttl_ms).arg(keys.len());
    for key in keys {
        cmd.arg(key.as_ref());
    }
    for group in groups {
        cmd.arg(group.args());
    }
    cmd
}

/// The same as text, for [`error`](super::reply::error) and messages.
pub fn reserve_args<K: AsRef<[u8]>>(
    holds: &str,
    id: &str,
    ttl_ms: u64,
    keys: &[K],
    groups: &[Group],
) -> Vec<String> {
    let mut args = vec![
        "RATELIMIT.RESERVE".to_string(),
        holds.to_string(),
        id.to_string(),
        ttl_ms.to_string(),
        keys.len().to_string(),
    ];
    args.extend(keys.iter().map(key_text));
    args.extend(groups.iter().flat_map(Group::args));
    args
}

/// `RATELIMIT.SETTLE holds id numkeys key… LIMIT …` as a command: group `i`
/// (with its `ACTUAL`) applies to key `i`.
pub fn settle_command<K: AsRef<[u8]>>(
    holds: &str,
    id: &str,
    keys: &[K],
    groups: &[Group],
) -> redis::Cmd {
    let mut cmd = redis::cmd("RATELIMIT.SETTLE");
    cmd.arg(holds).arg(id).arg(keys.len());
    for key in keys {
        cmd.arg(key.as_ref());
    }
    for group in groups {
        cmd.arg(group.args());
    }
    cmd
}

/// The same as text, for [`error`](super::reply::error) and messages.
pub fn settle_args<K: AsRef<[u8]>>(
    holds: &str,
    id: &str,
    keys: &[K],
    groups: &[Group],
) -> Vec<String> {
    let mut args = vec![
        "RATELIMIT.SETTLE".to_string(),
        holds.to_string(),
        id.to_string(),
        keys.len().to_string(),
    ];
    args.extend(keys.iter().map(key_text));
    args.extend(groups.iter().flat_map(Group::args));
    args
}

/// `RATELIMIT.RESERVE holds id ttl_ms numkeys key… LIMIT …`.
pub fn reserve<K: AsRef<[u8]>>(
    con: &mut dyn ConnectionLike,
    holds: &str,
    id: &str,
    ttl_ms: u64,
    keys: &[K],
    groups: &[Group],
) -> Reserved {
    query(
        con,
        &reserve_command(holds, id, ttl_ms, keys, groups),
        || reserve_args(holds, id, ttl_ms, keys, groups).join(" "),
    )
}

/// `RATELIMIT.SETTLE holds id numkeys key… LIMIT …`.
pub fn settle<K: AsRef<[u8]>>(
    con: &mut dyn ConnectionLike,
    holds: &str,
    id: &str,
    keys: &[K],
    groups: &[Group],
) -> Settled {
    query(con, &settle_command(holds, id, keys, groups), || {
        settle_args(holds, id, keys, groups).join(" ")
    })
}

/// `RATELIMIT.EXTEND holds id ttl_ms`: ms until the hold now expires, 0
/// when the id holds nothing.
pub fn extend(con: &mut dyn ConnectionLike, holds: &str, id: &str, ttl_ms: u64) -> i64 {
    let mut cmd = redis::cmd("RATELIMIT.EXTEND");
    cmd.arg(holds).arg(id).arg(ttl_ms);
    query(con, &cmd, || {
        format!("RATELIMIT.EXTEND {holds} {id} {ttl_ms}")
    })
}

/// Attempts [`at_one_instant`] makes before it gives up.
const INSTANT_ATTEMPTS: usize = 100;

/// Runs `cmds` in one MULTI/EXEC, all at one instant of the module's clock,
/// and returns their replies.
///
/// A server that freezes the command time for a transaction (Redis 7.2+,
/// Valkey) does that by itself. On others the module reads the wall clock,
/// so the transaction is bracketed by `TIME`: when both readings fall in the
/// same millisecond, every call in between read that millisecond. When they
/// do not, `keys` (every key the calls may change) are put back as they were
/// (`DUMP`/`RESTORE … ABSTTL`) and the transaction is tried again.
pub fn at_one_instant(
    con: &mut dyn ConnectionLike,
    keys: &[&str],
    cmds: &[redis::Cmd],
) -> Vec<Value> {
    let frozen = Abilities::of(con).frozen_clock();
    in_one_millisecond(
        con,
        keys,
        false,
        |_| cmds.to_vec(),
        |before, after, _| frozen || before == after,
    )
}

/// Runs the commands `cmds(ms)` makes for the instant `ms` (the fallback's
/// `NOW ms`) in one MULTI/EXEC that runs within that millisecond of the
/// server's clock, so that what the server does by its own clock (keys
/// expiring) agrees with them; tried again, as [`at_one_instant`], when the
/// clock moves.
pub fn at_a_pinned_instant(
    con: &mut dyn ConnectionLike,
    keys: &[&str],
    cmds: impl Fn(i64) -> Vec<redis::Cmd>,
) -> Vec<Value> {
    in_one_millisecond(con, keys, true, cmds, |before, after, planned| {
        before == planned && after == planned
    })
}

/// The transaction of `cmds(planned)` between two readings of `TIME`
/// until `held(before, after, planned)`; `planned` is the server's clock
/// read just before it when `plan`, else 0.
fn in_one_millisecond(
    con: &mut dyn ConnectionLike,
    keys: &[&str],
    plan: bool,
    cmds: impl Fn(i64) -> Vec<redis::Cmd>,
    held: impl Fn(i64, i64, i64) -> bool,
) -> Vec<Value> {
    let saved: Vec<_> = keys.iter().map(|k| dumped(con, *k)).collect();
    for _ in 0..INSTANT_ATTEMPTS {
        let planned = if plan { server_ms(con) } else { 0 };
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("TIME");
        for cmd in cmds(planned) {
            pipe.add_command(cmd);
        }
        pipe.cmd("TIME");
        let mut replies: Vec<Value> = pipe.query(con).unwrap();
        let after: (i64, i64) = redis::from_redis_value(replies.pop().unwrap()).unwrap();
        let before: (i64, i64) = redis::from_redis_value(replies.remove(0)).unwrap();
        let ms = |(s, us): (i64, i64)| s * 1000 + us / 1000;
        if held(ms(before), ms(after), planned) {
            return replies;
        }
        for (key, (payload, expires_at)) in keys.iter().zip(&saved) {
            let _: () = redis::cmd("DEL").arg(*key).query(con).unwrap();
            if let Some(payload) = payload {
                let _: () = redis::cmd("RESTORE")
                    .arg(*key)
                    .arg((*expires_at).max(0))
                    .arg(payload.as_slice())
                    .arg("ABSTTL")
                    .query(con)
                    .unwrap();
            }
        }
    }
    panic!("no transaction ran within one millisecond in {INSTANT_ATTEMPTS} attempts");
}
