//! The module's commands, called the one way every suite calls them, with
//! typed replies; and the server's clock around a call.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use redis::{ConnectionLike, FromRedisValue};

use super::reply::{Decision, Throttled};

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
