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
//!
//! `concurrency` limits work in flight rather than a rate: a guard holding
//! one of `max` leases on a key, released when dropped, and ending by
//! itself after `lease_ms` if the process dies holding it.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::time::Duration;

use redis::{ConnectionLike, FromRedisValue, ParsingError, RedisError, RedisResult, Value};

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

/// A `RATELIMIT.ACQUIRE` reply: `[acquired, remaining, max, retry_after_ms,
/// reset_after_ms, id]`, the id a nil when not acquired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquired {
    /// The lease's id when granted; `None` when every slot is taken.
    pub id: Option<Vec<u8>>,
    /// Slots still free after this call.
    pub remaining: u64,
    /// The `max` applied.
    pub max: u64,
    /// When denied: when a slot frees up by itself (if no holder releases
    /// one earlier).
    pub retry_after: Option<Duration>,
    /// When the last live lease ends by itself.
    pub reset_after: Duration,
}

impl FromRedisValue for Acquired {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let reply: (i64, i64, i64, i64, i64, Option<Vec<u8>>) =
            FromRedisValue::from_redis_value(v)?;
        let (acquired, remaining, max, retry_after_ms, reset_after_ms, id) = reply;
        let bad = || ParsingError::from("not an ACQUIRE reply");
        let count = |n: i64| u64::try_from(n).map_err(|_| bad());
        if (acquired == 1) != id.is_some() || !matches!(acquired, 0 | 1) {
            return Err(bad());
        }
        Ok(Acquired {
            id,
            remaining: count(remaining)?,
            max: count(max)?,
            retry_after: match retry_after_ms {
                -1 => None,
                ms => Some(Duration::from_millis(count(ms)?)),
            },
            reset_after: Duration::from_millis(count(reset_after_ms)?),
        })
    }
}

/// Why [`concurrency`] gave no lease.
#[derive(Debug)]
pub enum ConcurrencyError {
    /// All `max` slots are taken: answer 429 (or 503) with `Retry-After`.
    /// A slot frees by itself after `retry_after` at the latest.
    Busy { max: u64, retry_after: Duration },
    /// The server could not be asked (down, slow, an error reply). Whether
    /// to do the work anyway is the application's choice.
    Redis(RedisError),
}

impl From<RedisError> for ConcurrencyError {
    fn from(e: RedisError) -> Self {
        ConcurrencyError::Redis(e)
    }
}

/// One of `max` slots of work in flight on `key`, taken by [`concurrency`]
/// and given back (`RATELIMIT.RELEASE`) when dropped. If the process dies
/// holding it, the slot comes back by itself `lease_ms` after it was taken
/// (or last renewed): make `lease_ms` longer than the work takes, or
/// [`renew`](Lease::renew) it as the work goes on.
pub struct Lease<'c, C: ConnectionLike> {
    con: &'c mut C,
    key: String,
    id: Vec<u8>,
}

impl<C: ConnectionLike> Lease<'_, C> {
    /// The lease's id (generated by the server).
    pub fn id(&self) -> &[u8] {
        &self.id
    }

    /// The connection, for the work done under the lease.
    pub fn connection(&mut self) -> &mut C {
        self.con
    }

    /// Moves the lease's end to `lease_ms` from now (`RATELIMIT.RENEW`);
    /// `false` when it had already ended (its slot may be someone else's:
    /// stop, or acquire again).
    pub fn renew(&mut self, lease_ms: u64) -> RedisResult<bool> {
        redis::cmd("RATELIMIT.RENEW")
            .arg(&self.key)
            .arg(&self.id)
            .arg(lease_ms)
            .query(self.con)
    }
}

impl<C: ConnectionLike> Drop for Lease<'_, C> {
    fn drop(&mut self) {
        // A release that fails (the server is unreachable) is not retried:
        // the lease ends by itself at its deadline.
        let _ = redis::cmd("RATELIMIT.RELEASE")
            .arg(&self.key)
            .arg(&self.id)
            .exec(self.con);
    }
}

/// Takes one of `max` slots of work in flight on `key`, for at most
/// `lease_ms` (`RATELIMIT.ACQUIRE`); the slot is given back when the
/// returned guard is dropped.
///
/// ```ignore
/// match concurrency(&mut con, "reports", 4, 30_000) {
///     Ok(mut lease) => { /* the work, on lease.connection() if it needs Redis */ }
///     Err(ConcurrencyError::Busy { retry_after, .. }) => { /* 429, Retry-After */ }
///     Err(ConcurrencyError::Redis(e)) => { /* the application's choice */ }
/// }
/// ```
pub fn concurrency<'c, C: ConnectionLike>(
    con: &'c mut C,
    key: &str,
    max: u64,
    lease_ms: u64,
) -> Result<Lease<'c, C>, ConcurrencyError> {
    let reply: Acquired = redis::cmd("RATELIMIT.ACQUIRE")
        .arg(key)
        .arg(max)
        .arg(lease_ms)
        .query(con)?;
    match reply.id {
        Some(id) => Ok(Lease {
            con,
            key: key.to_string(),
            id,
        }),
        None => Err(ConcurrencyError::Busy {
            max: reply.max,
            // A denial always says when a slot frees; never zero.
            retry_after: reply.retry_after.unwrap_or(reply.reset_after),
        }),
    }
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

    // One report built at a time, for 30 s at most.
    let jobs = format!("example:jobs:{}", std::process::id());
    let mut other = client.get_connection_with_timeout(Duration::from_secs(1))?;
    let first = concurrency(&mut con, &jobs, 1, 30_000);
    println!(
        "report 1: {}",
        if first.is_ok() { "building" } else { "busy" }
    );
    match concurrency(&mut other, &jobs, 1, 30_000) {
        Ok(_) => println!("report 2: building"),
        Err(ConcurrencyError::Busy { retry_after, .. }) => {
            println!("report 2: 429, Retry-After {}", ceil_secs(retry_after))
        }
        Err(ConcurrencyError::Redis(e)) => return Err(e),
    }
    // Dropping the first lease gives its slot back.
    drop(first);
    let again = concurrency(&mut other, &jobs, 1, 30_000);
    println!(
        "report 2 again: {}",
        if again.is_ok() { "building" } else { "busy" }
    );
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

    /// `RATELIMIT.ACQUIRE key max lease_ms` as the holder process sees it:
    /// what the holder test below reads from its environment.
    const HOLDER_ENV: &str = "RATE_LIMIT_EXAMPLE_HOLDER";

    /// The deadline of lease `id` in `key`, in the server's UNIX ms.
    fn deadline_ms(con: &mut redis::Connection, key: &str, id: &[u8]) -> i64 {
        redis::cmd("ZSCORE").arg(key).arg(id).query(con).unwrap()
    }

    #[test]
    fn concurrency_holds_at_most_max_and_gives_back_on_drop() {
        let server = Server::start();
        let (mut a, mut b, mut c) = (server.connect(), server.connect(), server.connect());
        let first = concurrency(&mut a, "jobs", 2, 60_000).unwrap();
        let second = concurrency(&mut b, "jobs", 2, 60_000).unwrap();
        assert_ne!(first.id(), second.id());
        match concurrency(&mut c, "jobs", 2, 60_000) {
            Err(ConcurrencyError::Busy { max, retry_after }) => {
                assert_eq!(max, 2);
                assert!(
                    retry_after > Duration::ZERO && retry_after <= MINUTE,
                    "{retry_after:?}"
                );
            }
            Ok(_) => panic!("a third lease of 2"),
            Err(e) => panic!("{e:?}"),
        }
        drop(first);
        let third = concurrency(&mut c, "jobs", 2, 60_000).unwrap();
        drop((second, third));
        // Both given back: the key is gone.
        let exists: bool = redis::cmd("EXISTS").arg("jobs").query(&mut a).unwrap();
        assert!(!exists);
    }

    #[test]
    fn concurrency_lease_can_be_renewed_and_work_uses_its_connection() {
        let server = Server::start();
        let (mut con, mut admin) = (server.connect(), server.connect());
        let mut lease = concurrency(&mut con, "jobs", 1, 1_000).unwrap();
        let id = lease.id().to_vec();
        let first = deadline_ms(&mut admin, "jobs", &id);
        assert!(lease.renew(60_000).unwrap());
        assert!(deadline_ms(&mut admin, "jobs", &id) > first);
        let _: () = redis::cmd("SET")
            .arg("during")
            .arg("work")
            .query(lease.connection())
            .unwrap();
        // Ended by hand (as if it had run out): renew says so.
        let _: () = redis::cmd("DEL").arg("jobs").query(&mut admin).unwrap();
        assert!(!lease.renew(60_000).unwrap());
    }

    /// Not a test by itself: the holder process of the test below, which
    /// runs this binary again with only this test and a key in
    /// [`HOLDER_ENV`]. It takes a lease, says so on stdout, and waits to be
    /// killed, never releasing it (or, should the test die first, for its
    /// stdin to close).
    #[test]
    #[ignore]
    fn holder_process() {
        let Ok(spec) = std::env::var(HOLDER_ENV) else {
            return;
        };
        let [port, key, lease_ms] = spec.split(' ').collect::<Vec<_>>()[..] else {
            panic!("{HOLDER_ENV}={spec}");
        };
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let mut con = client.get_connection().unwrap();
        let lease = concurrency(&mut con, key, 1, lease_ms.parse().unwrap()).unwrap();
        println!("held {}", String::from_utf8_lossy(lease.id()));
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        std::process::exit(1);
    }

    #[test]
    fn concurrency_slot_of_a_killed_holder_comes_back_after_lease_ms() {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        use std::time::Instant;

        let server = Server::start();
        let mut con = server.connect();
        let lease_ms = 1_500;
        /// The holder process, killed when dropped (also when the test fails).
        struct Holder(std::process::Child);
        impl Drop for Holder {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let mut holder = Holder(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "tests::holder_process",
                    "--ignored",
                    "--nocapture",
                ])
                .env(HOLDER_ENV, format!("{} crashy {lease_ms}", server.port()))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut id = None;
        for line in BufReader::new(holder.0.stdout.take().unwrap()).lines() {
            if let Some(held) = line.unwrap().strip_prefix("held ") {
                id = Some(held.to_string());
                break;
            }
        }
        let id = id.expect("the holder took no lease");
        let deadline = deadline_ms(&mut con, "crashy", id.as_bytes());
        // The holder dies with its lease: no Drop, no RELEASE.
        holder.0.kill().unwrap();
        holder.0.wait().unwrap();

        let retry_after = match concurrency(&mut con, "crashy", 1, 60_000) {
            Err(ConcurrencyError::Busy { retry_after, .. }) => retry_after,
            Ok(_) => panic!("a slot while the killed holder's lease runs"),
            Err(e) => panic!("{e:?}"),
        };
        let now = common::server_ms(&mut con);
        assert!(now < deadline, "the machine took over {lease_ms} ms");
        assert!(
            retry_after <= Duration::from_millis(lease_ms),
            "{retry_after:?}"
        );

        // Try again when told, until the slot is back.
        let give_up = Instant::now() + Duration::from_secs(15);
        let mut wait = retry_after;
        loop {
            std::thread::sleep(wait);
            match concurrency(&mut con, "crashy", 1, 60_000) {
                Ok(_) => break,
                Err(ConcurrencyError::Busy { retry_after, .. }) => wait = retry_after,
                Err(e) => panic!("{e:?}"),
            }
            assert!(Instant::now() < give_up, "the slot never came back");
        }
        assert!(common::server_ms(&mut con) >= deadline);
    }

    #[test]
    fn a_malformed_acquire_reply_is_an_error() {
        let ints = |v: &[i64]| v.iter().map(|&i| Value::Int(i)).collect::<Vec<_>>();
        for (numbers, id) in [
            (&[1, 0, 1, -1, 10][..], Value::Nil),
            (&[0, 0, 1, 10, 10], Value::BulkString(b"x".to_vec())),
            (&[2, 0, 1, -1, 10], Value::BulkString(b"x".to_vec())),
            (&[1, -1, 1, -1, 10], Value::BulkString(b"x".to_vec())),
            (&[1, 0, 1, -1], Value::BulkString(b"x".to_vec())),
        ] {
            let mut reply = ints(numbers);
            reply.push(id);
            assert!(
                Acquired::from_redis_value(Value::Array(reply.clone())).is_err(),
                "{reply:?}"
            );
        }
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
