//! Rate limiting from a Rust application, with the `redis` crate.
//!
//! `check` and `peek` below are what an application copies: one round trip
//! each, on any connection the `redis` crate offers (a single server, a
//! pooled connection, or a Redis Cluster connection, which routes the
//! command to the key's master). The server needs the module loaded.
//!
//! ```sh
//! make run                                 # a server with the module on 127.0.0.1:6379
//! cargo run --example rate_limit           # or REDIS_URL=redis://host:port/ cargo run …
//! cargo test --example rate_limit          # its tests, against servers they start
//! ```
//!
//! The limit here is a fixed window (the module's default). For another
//! algorithm, add its options to the command: `.arg("ALGORITHM").arg("SLIDING")`,
//! or `.arg("ALGORITHM").arg("TOKEN").arg("BURST").arg(20)`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::time::Duration;

use redis::{ConnectionLike, FromRedisValue, ParsingError, RedisResult, Value};

/// One answer of the limiter: a `RATELIMIT.CHECK` or `RATELIMIT.PEEK` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request was admitted (CHECK: and counted).
    pub allowed: bool,
    /// Units still admissible now, after this request.
    pub remaining: u64,
    /// The limit applied.
    pub limit: u64,
    /// When the same request would be admitted, if nothing else is; `None`
    /// when it was admitted, or when it never can be (a cost above the
    /// limit).
    pub retry_after: Option<Duration>,
    /// When the limiter is empty again.
    pub reset_after: Duration,
}

impl Decision {
    /// The HTTP response headers for this decision: `RateLimit-Limit`,
    /// `RateLimit-Remaining`, `RateLimit-Reset`, and `Retry-After` on a
    /// denial that can be retried. Times are rounded up to whole seconds,
    /// so that a client that waits `Retry-After` is never early.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("RateLimit-Limit", self.limit.to_string()),
            ("RateLimit-Remaining", self.remaining.to_string()),
            ("RateLimit-Reset", ceil_secs(self.reset_after).to_string()),
        ];
        if let (false, Some(retry_after)) = (self.allowed, self.retry_after) {
            headers.push(("Retry-After", ceil_secs(retry_after).to_string()));
        }
        headers
    }
}

fn ceil_secs(d: Duration) -> u128 {
    d.as_millis().div_ceil(1000)
}

/// `[allowed, remaining, limit, retry_after_ms, reset_after_ms]`.
///
/// Read as `i64`s and converted with checks: the `redis` crate reads an
/// integer reply into a `u64` with `as`, so a -1 would become `u64::MAX`.
impl FromRedisValue for Decision {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let reply: (i64, i64, i64, i64, i64) = FromRedisValue::from_redis_value(v)?;
        let (allowed, remaining, limit, retry_after_ms, reset_after_ms) = reply;
        let bad = || ParsingError::from(format!("not a rate limiter reply: {reply:?}"));
        let count = |n: i64| u64::try_from(n).map_err(|_| bad());
        Ok(Decision {
            allowed: match allowed {
                0 => false,
                1 => true,
                _ => return Err(bad()),
            },
            remaining: count(remaining)?,
            limit: count(limit)?,
            retry_after: match retry_after_ms {
                -1 => None,
                ms => Some(Duration::from_millis(count(ms)?)),
            },
            reset_after: Duration::from_millis(count(reset_after_ms)?),
        })
    }
}

/// Counts one request against `key`, if it is admitted: at most `limit`
/// per `period_s` seconds (`RATELIMIT.CHECK`).
///
/// A connection error, a timeout, or an error reply (a bad argument,
/// `WRONGTYPE`) comes back as `Err`. What to do then (admit the request, or
/// deny it) is the application's choice; a bad argument is a bug.
pub fn check<C: ConnectionLike>(
    con: &mut C,
    key: &str,
    limit: u64,
    period_s: u64,
) -> RedisResult<Decision> {
    redis::cmd("RATELIMIT.CHECK")
        .arg(key)
        .arg(limit)
        .arg(period_s)
        .query(con)
}

/// What `check` would answer now, counting nothing (`RATELIMIT.PEEK`): a
/// read-only command, which replicas answer too. `remaining` is what `key`
/// may still use.
pub fn peek<C: ConnectionLike>(
    con: &mut C,
    key: &str,
    limit: u64,
    period_s: u64,
) -> RedisResult<Decision> {
    redis::cmd("RATELIMIT.PEEK")
        .arg(key)
        .arg(limit)
        .arg(period_s)
        .query(con)
}

/// Five requests against a limit of 3 per minute, then a look.
#[cfg_attr(test, allow(dead_code))]
fn main() -> RedisResult<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let client = redis::Client::open(url.as_str())?;
    // A limiter must not hang a request on a dead or slow server.
    let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
    con.set_read_timeout(Some(Duration::from_millis(200)))?;
    con.set_write_timeout(Some(Duration::from_millis(200)))?;

    let key = format!("example:{}", std::process::id());
    for i in 1..=5 {
        let d = check(&mut con, &key, 3, 60)?;
        let status = if d.allowed { 200 } else { 429 };
        println!("request {i}: {status} {:?}", d.headers());
    }
    let d = peek(&mut con, &key, 3, 60)?;
    println!(
        "peek: {} remaining, empty again in {:?}",
        d.remaining, d.reset_after
    );
    redis::cmd("RATELIMIT.RESET").arg(&key).exec(&mut con)?;
    Ok(())
}

#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod common;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::common::cluster::Cluster;
    use crate::common::Server;

    const MINUTE: Duration = Duration::from_secs(60);

    /// Headers as owned pairs, to compare with `Decision::headers`.
    fn expected(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|&(k, v)| (k, v.to_string())).collect()
    }

    /// ⌈d / 1 s⌉ as text.
    fn secs(d: Duration) -> String {
        d.as_millis().div_ceil(1000).to_string()
    }

    #[test]
    fn check_admits_exactly_the_limit_then_denies() {
        let server = Server::start();
        let mut con = server.connect();
        for remaining in (0..5).rev() {
            let d = check(&mut con, "user:1", 5, 60).unwrap();
            assert!(d.allowed, "{d:?}");
            assert_eq!((d.remaining, d.limit, d.retry_after), (remaining, 5, None));
            assert!(
                d.reset_after > Duration::ZERO && d.reset_after <= MINUTE,
                "{d:?}"
            );
        }
        for _ in 0..3 {
            let d = check(&mut con, "user:1", 5, 60).unwrap();
            assert!(!d.allowed, "{d:?}");
            assert_eq!((d.remaining, d.limit), (0, 5));
            let retry_after = d.retry_after.expect("a denial says when to retry");
            assert!(
                retry_after > Duration::ZERO && retry_after <= MINUTE,
                "{d:?}"
            );
        }
        // Another key is another limiter.
        assert!(check(&mut con, "user:2", 5, 60).unwrap().allowed);
    }

    #[test]
    fn peek_counts_nothing() {
        let server = Server::start();
        let mut con = server.connect();
        let d = peek(&mut con, "user:1", 2, 60).unwrap();
        assert_eq!(
            (d.allowed, d.remaining, d.reset_after),
            (true, 2, Duration::ZERO)
        );
        assert!(check(&mut con, "user:1", 2, 60).unwrap().allowed);
        for _ in 0..3 {
            assert_eq!(peek(&mut con, "user:1", 2, 60).unwrap().remaining, 1);
        }
        assert!(check(&mut con, "user:1", 2, 60).unwrap().allowed);
        let d = peek(&mut con, "user:1", 2, 60).unwrap();
        assert!(
            !d.allowed && d.remaining == 0 && d.retry_after.is_some(),
            "{d:?}"
        );
    }

    #[test]
    fn headers_follow_the_reply() {
        let server = Server::start();
        let mut con = server.connect();
        let d = check(&mut con, "user:1", 1, 60).unwrap();
        assert_eq!(
            d.headers(),
            expected(&[
                ("RateLimit-Limit", "1"),
                ("RateLimit-Remaining", "0"),
                ("RateLimit-Reset", &secs(d.reset_after)),
            ])
        );
        let d = check(&mut con, "user:1", 1, 60).unwrap();
        assert_eq!(
            d.headers(),
            expected(&[
                ("RateLimit-Limit", "1"),
                ("RateLimit-Remaining", "0"),
                ("RateLimit-Reset", &secs(d.reset_after)),
                ("Retry-After", &secs(d.retry_after.unwrap())),
            ])
        );
    }

    #[test]
    fn headers_round_up_to_whole_seconds() {
        let d = Decision::from_redis_value(Value::Array(
            [0, 0, 3, 1500, 60001].map(Value::Int).to_vec(),
        ))
        .unwrap();
        assert_eq!(
            d.headers(),
            expected(&[
                ("RateLimit-Limit", "3"),
                ("RateLimit-Remaining", "0"),
                ("RateLimit-Reset", "61"),
                ("Retry-After", "2"),
            ])
        );
        let exact = Decision {
            retry_after: Some(Duration::from_secs(1)),
            reset_after: Duration::from_secs(2),
            ..d.clone()
        };
        assert_eq!(
            exact.headers()[2..],
            expected(&[("RateLimit-Reset", "2"), ("Retry-After", "1")])
        );
        // Never admissible: no Retry-After.
        let never = Decision {
            retry_after: None,
            ..d.clone()
        };
        assert_eq!(never.headers(), d.headers()[..3]);
        // Admitted: no Retry-After either.
        let admitted = Decision {
            allowed: true,
            retry_after: None,
            ..d
        };
        assert!(admitted.headers().iter().all(|(k, _)| *k != "Retry-After"));
    }

    #[test]
    fn a_malformed_reply_is_an_error() {
        for reply in [
            vec![1, 2, 3, -1],
            vec![2, 0, 3, -1, 0],
            vec![1, -1, 3, -1, 0],
            vec![0, 0, 3, -2, 0],
        ] {
            let value = Value::Array(reply.iter().map(|&i| Value::Int(i)).collect());
            assert!(Decision::from_redis_value(value).is_err(), "{reply:?}");
        }
    }

    #[test]
    fn an_error_reply_is_an_error() {
        let server = Server::start();
        let mut con = server.connect();
        let e = check(&mut con, "user:1", 0, 60).unwrap_err();
        assert_eq!(e.code(), Some("ERR"), "{e}");
        assert!(
            e.to_string().contains("limit must be a positive integer"),
            "{e}"
        );
        redis::cmd("SET")
            .arg("plain")
            .arg("text")
            .exec(&mut con)
            .unwrap();
        let e = peek(&mut con, "plain", 5, 60).unwrap_err();
        assert_eq!(e.code(), Some("WRONGTYPE"), "{e}");
    }

    #[test]
    fn works_through_a_cluster_connection() {
        let cluster = Cluster::start(3, 0);
        let mut con = cluster.client().get_connection().unwrap();
        let keys: Vec<String> = (0..12).map(|i| format!("user:{i}")).collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let masters = cluster.masters_for_keys(&key_refs);
        assert_eq!(
            masters.values().collect::<BTreeSet<_>>().len(),
            3,
            "the keys should spread over the 3 masters: {masters:?}"
        );
        for key in &keys {
            for remaining in (0..3).rev() {
                let d = check(&mut con, key, 3, 60).unwrap();
                assert!(d.allowed && d.remaining == remaining, "{key}: {d:?}");
            }
            let d = check(&mut con, key, 3, 60).unwrap();
            assert!(!d.allowed && d.retry_after.is_some(), "{key}: {d:?}");
            assert!(d
                .headers()
                .contains(&("Retry-After", secs(d.retry_after.unwrap()))));
            assert_eq!(peek(&mut con, key, 3, 60).unwrap().remaining, 0);
            // The limiter lives on the key's master, and there only.
            for port in cluster.masters() {
                assert_eq!(
                    cluster.holds(port, key),
                    port == masters[key.as_str()],
                    "{key} on {port}"
                );
            }
        }
    }
}
