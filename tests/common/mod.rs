//! Test harness: a real `redis-server` with the module loaded, one per test.
//!
//! Each server listens on 127.0.0.1 on a port the OS just handed out (a
//! start that loses the port to a parallel test is retried on another),
//! keeps its files in a temporary directory, must answer PING within a
//! deadline, and is killed when dropped, also when the test panics.
//!
//! - `REDIS_SERVER`: the server binary (default: `redis-server` on PATH).
//! - `RATELIMIT_MODULE`: the module to load (default: the debug build,
//!   `target/debug/libredis_ratelimit.so`, which `make test` builds first).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a server may take to answer its first PING.
const START_DEADLINE: Duration = Duration::from_secs(15);
/// Starts retried when the port was taken between choosing and binding it.
const START_ATTEMPTS: usize = 5;

/// The module file the servers load.
pub fn module_path() -> PathBuf {
    if let Some(path) = std::env::var_os("RATELIMIT_MODULE") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("debug").join("libredis_ratelimit.so")
}

/// The server binary.
pub fn server_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string())
}

/// Options for a server to start.
#[derive(Default)]
pub struct Builder {
    dir: Option<PathBuf>,
    args: Vec<String>,
    module_args: Vec<String>,
    without_module: bool,
}

impl Builder {
    /// Keep the server's files (RDB, AOF, log) in `dir`, so that a later
    /// server started on the same directory finds them.
    pub fn dir(mut self, dir: &Path) -> Builder {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// One configuration directive, e.g. `arg("appendonly", "yes")`.
    pub fn arg(mut self, name: &str, value: &str) -> Builder {
        self.args.push(format!("--{name}"));
        self.args.push(value.to_string());
        self
    }

    /// One load-time module argument pair, e.g. `module_arg("CL-THROTTLE",
    /// "yes")`, given after `--loadmodule path` in the order added.
    pub fn module_arg(mut self, name: &str, value: &str) -> Builder {
        self.module_args.push(name.to_string());
        self.module_args.push(value.to_string());
        self
    }

    /// Make this server a replica of `master`.
    pub fn replica_of(mut self, master: &Server) -> Builder {
        // Three separate arguments: Redis 6.2 does not split a quoted pair.
        self.args.push("--replicaof".to_string());
        self.args.push("127.0.0.1".to_string());
        self.args.push(master.port.to_string());
        self
    }

    /// Start the server without loading the module.
    pub fn without_module(mut self) -> Builder {
        self.without_module = true;
        self
    }

    /// Starts the server and waits until it answers PING.
    pub fn start(self) -> Server {
        match self.try_start() {
            Ok(server) => server,
            Err(log) => panic!("redis-server did not start; its log:\n{log}"),
        }
    }

    /// Starts the server and waits until it answers PING, or returns the
    /// server's log when it exits (or stays silent) before answering: for
    /// starts that are meant to fail. Bounded by the same start deadline.
    pub fn try_start(self) -> Result<Server, String> {
        let module = module_path();
        if !self.without_module {
            assert!(
                module.exists(),
                "the module is not built: {} is missing. Run `cargo build` (or `make test`, which builds it) first, or set RATELIMIT_MODULE.",
                module.display()
            );
        }
        let (owned_dir, dir) = match &self.dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("ratelimit-test-")
                    .tempdir()
                    .expect("create a temporary directory");
                let path = tmp.path().to_path_buf();
                (Some(tmp), path)
            }
        };
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let log = dir.join(format!("redis-{port}.log"));
            // What the server prints before its log file is open (a bad
            // directive, a module that refuses to load).
            let output = std::fs::File::create(dir.join(format!("redis-{port}.out")))
                .expect("create the server's output file");
            let mut command = Command::new(server_binary());
            command
                .arg("--port")
                .arg(port.to_string())
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .arg("--logfile")
                .arg(&log);
            if !self.without_module {
                command
                    .arg("--loadmodule")
                    .arg(&module)
                    .args(&self.module_args);
            }
            command.args(&self.args);
            command
                .stdin(Stdio::null())
                .stdout(output.try_clone().expect("share the output file"))
                .stderr(output);
            let mut child = command.spawn().unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e}; is redis-server installed? (`make test` installs it)",
                    server_binary()
                )
            });
            match wait_until_ready(&mut child, port, &log) {
                Ok(()) => {
                    return Ok(Server {
                        child,
                        port,
                        dir,
                        log,
                        _owned_dir: owned_dir,
                    })
                }
                // Another test took the port between choosing and binding it.
                Err(text) if text.contains("Address already in use") => last_log = text,
                Err(text) => return Err(text),
            }
        }
        Err(format!(
            "no start after {START_ATTEMPTS} attempts (port taken each time); last log:\n{last_log}"
        ))
    }
}

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    _owned_dir: Option<tempfile::TempDir>,
}

impl Server {
    /// A server with the module loaded and default options.
    pub fn start() -> Server {
        Server::builder().start()
    }

    /// Options for a server to start.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client for this server.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap()
    }

    /// A new connection, with timeouts so that a hung server fails the test
    /// instead of hanging it.
    pub fn connect(&self) -> redis::Connection {
        let con = self
            .client()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to port {}: {e}\n{}", self.port, self.log()));
        con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        con.set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        con
    }

    /// Stops the server the clean way (SHUTDOWN, which writes the AOF out) and
    /// waits for it to exit.
    pub fn shutdown(mut self) {
        let mut con = self.connect();
        let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query(&mut con);
        let deadline = Instant::now() + START_DEADLINE;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not shut down; its log:\n{}", self.log());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the server on `port` answers PING. On failure the process is
/// killed and its log returned.
fn wait_until_ready(child: &mut Child, port: u16, log: &Path) -> Result<(), String> {
    let read_log = || {
        let output = log.with_extension("out");
        std::fs::read_to_string(&output).unwrap_or_default()
            + &std::fs::read_to_string(log).unwrap_or_default()
    };
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let deadline = Instant::now() + START_DEADLINE;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Err(read_log());
        }
        if let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(200)) {
            if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                return Ok(());
            }
        }
        sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!(
        "no PING answer within {START_DEADLINE:?}\n{}",
        read_log()
    ))
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// `RATELIMIT.CHECK key limit period [extra…]` as its five integers.
pub fn check(
    con: &mut redis::Connection,
    key: &str,
    limit: u64,
    period_s: u64,
    extra: &[&str],
) -> [i64; 5] {
    let reply: Vec<i64> = redis::cmd("RATELIMIT.CHECK")
        .arg(key)
        .arg(limit)
        .arg(period_s)
        .arg(extra)
        .query(con)
        .unwrap_or_else(|e| panic!("RATELIMIT.CHECK {key} {limit} {period_s} {extra:?}: {e}"));
    reply
        .try_into()
        .unwrap_or_else(|r: Vec<i64>| panic!("expected five integers, got {r:?}"))
}

/// The error a command replies, as text (code first).
///
/// The command name in the standard wrong-arity error is given in lower
/// case: Redis 7 writes the registered name, Redis 6.2 the name as typed.
pub fn error_of(result: redis::RedisResult<redis::Value>) -> String {
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

// ---------------------------------------------------------------------------
// Helpers shared by the suites
// ---------------------------------------------------------------------------

/// The WRONGTYPE error as the commands reply it.
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// Deadline for replicas to connect and to catch up.
pub const REPLICATION_DEADLINE: Duration = Duration::from_secs(15);

/// A command given as text, expected to succeed.
pub fn run<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(con)
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")))
}

/// A command given as raw bytes (the name first), success or error.
pub fn raw(con: &mut redis::Connection, args: &[&[u8]]) -> redis::RedisResult<redis::Value> {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(con)
}

/// A command given as text, replying five integers (CHECK, PEEK, THROTTLE).
pub fn five(con: &mut redis::Connection, args: &[&str]) -> [i64; 5] {
    let reply: Vec<i64> = run(con, args);
    reply.try_into().unwrap_or_else(|r: Vec<i64>| {
        panic!("{}: expected five integers, got {r:?}", args.join(" "))
    })
}

/// The server's clock (`TIME`) in UNIX milliseconds, truncated like the
/// server's own millisecond clock.
pub fn server_ms(con: &mut redis::Connection) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query(con).unwrap();
    secs * 1000 + micros / 1000
}

pub fn get<K: redis::ToRedisArgs>(con: &mut redis::Connection, key: K) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query(con).unwrap()
}

pub fn get_str(con: &mut redis::Connection, key: &str) -> Option<String> {
    get(con, key).map(|v| String::from_utf8(v).unwrap())
}

/// The key's absolute expiry in UNIX ms (-1 without one, -2 without the
/// key), exactly. Servers before Redis 7.0 lack PEXPIRETIME: there it is read
/// as TIME, PTTL, TIME inside one script, until both clock readings fall in
/// the same millisecond, which is then the one PTTL was computed against.
pub fn pexpiretime<K: redis::ToRedisArgs>(con: &mut redis::Connection, key: K) -> i64 {
    let key = key.to_redis_args();
    if has_command(con, "PEXPIRETIME") {
        return redis::cmd("PEXPIRETIME").arg(&key).query(con).unwrap();
    }
    let script = "local a = redis.call('TIME') \
                  local ttl = redis.call('PTTL', KEYS[1]) \
                  local b = redis.call('TIME') \
                  return {a[1], a[2], ttl, b[1], b[2]}";
    for _ in 0..1000 {
        let (a_s, a_us, ttl, b_s, b_us): (i64, i64, i64, i64, i64) = redis::cmd("EVAL")
            .arg(script)
            .arg(1)
            .arg(&key)
            .query(con)
            .unwrap();
        if ttl < 0 {
            return ttl;
        }
        let (a_ms, b_ms) = (a_s * 1000 + a_us / 1000, b_s * 1000 + b_us / 1000);
        if a_ms == b_ms {
            return a_ms + ttl;
        }
    }
    panic!("could not read the expiry of {key:?} within one millisecond");
}

/// Whether the server has `command` (PEXPIRETIME, EVAL_RO and FUNCTION
/// arrived in Redis 7.0).
pub fn has_command(con: &mut redis::Connection, command: &str) -> bool {
    let info: Vec<redis::Value> = redis::cmd("COMMAND")
        .arg("INFO")
        .arg(command)
        .query(con)
        .unwrap();
    !matches!(info.first(), None | Some(redis::Value::Nil))
}

pub fn exists<K: redis::ToRedisArgs>(con: &mut redis::Connection, key: K) -> bool {
    let n: i64 = redis::cmd("EXISTS").arg(key).query(con).unwrap();
    n == 1
}

/// `DUMP` of a key (`None` when missing): type, value and encoding at once.
pub fn dump<K: redis::ToRedisArgs>(con: &mut redis::Connection, key: K) -> Option<Vec<u8>> {
    redis::cmd("DUMP").arg(key).query(con).unwrap()
}

/// Every key of the current database.
pub fn all_keys(con: &mut redis::Connection) -> std::collections::BTreeSet<Vec<u8>> {
    run::<Vec<Vec<u8>>>(con, &["KEYS", "*"])
        .into_iter()
        .collect()
}

/// Waits until `replica` reports its link to the master up.
pub fn wait_for_link(replica: &Server) {
    let mut con = replica.connect();
    let deadline = Instant::now() + REPLICATION_DEADLINE;
    loop {
        let info: String = run(&mut con, &["INFO", "replication"]);
        if info.contains("master_link_status:up") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica link not up:\n{info}\n{}",
            replica.log()
        );
        sleep(Duration::from_millis(20));
    }
}

/// `WAIT replicas`: asserts that all of them acknowledged what the master
/// has propagated so far.
pub fn wait_replicas(master: &mut redis::Connection, replicas: usize) {
    let acked: i64 = redis::cmd("WAIT")
        .arg(replicas)
        .arg(REPLICATION_DEADLINE.as_millis() as u64)
        .query(master)
        .unwrap();
    assert_eq!(acked, replicas as i64, "replicas did not acknowledge");
}

/// A master that replicates at once (no diskless-sync delay, no PINGs moving
/// the offset) with `replicas` replicas attached and linked.
pub fn master_with_replicas(replicas: Vec<Builder>) -> (Server, Vec<Server>) {
    let master = Server::builder()
        .arg("repl-diskless-sync-delay", "0")
        .arg("repl-ping-replica-period", "3600")
        .start();
    let replicas: Vec<Server> = replicas
        .into_iter()
        .map(|b| b.replica_of(&master).start())
        .collect();
    for replica in &replicas {
        wait_for_link(replica);
    }
    (master, replicas)
}

/// The master's replication offset: how much it has propagated so far.
pub fn repl_offset(con: &mut redis::Connection) -> i64 {
    let info: String = run(con, &["INFO", "replication"]);
    info.lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .unwrap_or_else(|| panic!("no offset in:\n{info}"))
        .trim()
        .parse()
        .unwrap()
}

/// The AOF files a server writes in `dir`: a directory of parts since Redis
/// 7.0, one file before.
pub fn aof_files(dir: &Path) -> Vec<PathBuf> {
    let parts = dir.join("appendonlydir");
    if parts.is_dir() {
        return std::fs::read_dir(parts)
            .unwrap()
            .map(|f| f.unwrap().path())
            .collect();
    }
    vec![dir.join("appendonly.aof")]
}

/// Every byte of the AOF files in `dir`, as lower-case text.
pub fn aof_contents(dir: &Path) -> String {
    let mut contents = Vec::new();
    for file in aof_files(dir) {
        contents.extend(std::fs::read(file).unwrap());
    }
    String::from_utf8_lossy(&contents).to_lowercase()
}

/// Whether the server has Redis 7's script flags, `EVAL_RO` and functions;
/// when not, says which part of a test it cannot run.
pub fn has_read_only_scripts(con: &mut redis::Connection, part: &str) -> bool {
    let has = has_command(con, "EVAL_RO");
    if !has {
        eprintln!("not run ({part}): this server has no read-only scripts (Redis < 7.0)");
    }
    has
}

impl Server {
    /// Kills the server with SIGKILL, the way a crash or the OOM killer
    /// would (no SHUTDOWN, no final save or fsync), and waits for it to exit.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }
}
