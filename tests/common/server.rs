//! A real `redis-server` with the module loaded, one per test.
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

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a server may take to answer its first PING.
pub const START_DEADLINE: Duration = Duration::from_secs(15);
/// Starts retried when the port was taken between choosing and binding it.
pub const START_ATTEMPTS: usize = 5;

/// The module file the servers load.
pub fn module_path() -> PathBuf {
    if let Some(path) = std::env::var_os("RATELIMIT_MODULE") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    // The debug build (`cargo build`, `make test`), else the release build
    // (all `make run` makes), as scripts/module-path chooses for the other
    // examples.
    let debug = target.join("debug").join("libredis_ratelimit.so");
    let release = target.join("release").join("libredis_ratelimit.so");
    if !debug.exists() && release.exists() {
        return release;
    }
    debug
}

/// The server binary.
pub fn server_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string())
}

/// Whether the server binary is Redis 7.0+ or Valkey, from its `--version`
/// (read once): those take directives Redis 6.2 refuses at start
/// (`cluster-port`, `enable-debug-command`).
pub fn binary_is_7_or_later() -> bool {
    static IS: OnceLock<bool> = OnceLock::new();
    *IS.get_or_init(|| {
        let output = Command::new(server_binary())
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} --version: {e}", server_binary()));
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if text.contains("Valkey") {
            return true;
        }
        let major: u32 = text
            .split_once("v=")
            .and_then(|(_, rest)| rest.split('.').next())
            .and_then(|major| major.parse().ok())
            .unwrap_or_else(|| panic!("no version in `{} --version`: {text}", server_binary()));
        major >= 7
    })
}

/// Panics unless the module has been built.
pub fn assert_module_built(module: &Path) {
    assert!(
        module.exists(),
        "the module is not built: {} is missing. Run `cargo build` (or `make test`, which builds it) first, or set RATELIMIT_MODULE.",
        module.display()
    );
}

/// Configuration directives and load-time module arguments, in the order
/// given: what a single server and every node of a cluster start with.
#[derive(Clone, Default)]
pub struct Directives {
    pub args: Vec<String>,
    pub module_args: Vec<String>,
}

impl Directives {
    pub fn arg(&mut self, name: &str, value: &str) {
        self.args.push(format!("--{name}"));
        self.args.push(value.to_string());
    }

    pub fn module_arg(&mut self, name: &str, value: &str) {
        self.module_args.push(name.to_string());
        self.module_args.push(value.to_string());
    }
}

/// The command line every test server starts from: 127.0.0.1:`port`, its
/// files in `dir`, nothing saved, its log in `log`, and what it prints
/// before the log is open (a bad directive, a module that refuses to load)
/// in `out`.
pub fn server_command(port: u16, dir: &Path, log: &Path, out: &Path) -> Command {
    let output = std::fs::File::create(out).expect("create the server's output file");
    let mut command = Command::new(server_binary());
    command
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(log)
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("share the output file"))
        .stderr(output);
    command
}

/// Starts `command`, with a hint when the binary is missing.
pub fn spawn(command: &mut Command) -> Child {
    command.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run {}: {e}; is redis-server installed? (`make test` installs it)",
            server_binary()
        )
    })
}

/// What a server printed: its output before the log was open, then its log.
pub fn output_and_log(out: &Path, log: &Path) -> String {
    std::fs::read_to_string(out).unwrap_or_default()
        + &std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits until the server on `port` answers PING. On failure the process is
/// killed and what it printed returned.
pub fn wait_until_ready(
    child: &mut Child,
    port: u16,
    printed: impl Fn() -> String,
) -> Result<(), String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let deadline = Instant::now() + START_DEADLINE;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Err(printed());
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
        printed()
    ))
}

/// Whether a failed start lost its port to another test (and may be retried).
pub fn lost_its_port(printed: &str) -> bool {
    printed.contains("Address already in use")
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// A connection to 127.0.0.1:`port`, with timeouts so that a hung server
/// fails the test instead of hanging it; `log` is shown when it fails.
pub fn connect_to(port: u16, log: impl FnOnce() -> String) -> redis::Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to port {port}: {e}\n{}", log()));
    con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    con.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    con
}

/// Options for a server to start.
#[derive(Default)]
pub struct Builder {
    dir: Option<PathBuf>,
    directives: Directives,
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
        self.directives.arg(name, value);
        self
    }

    /// One load-time module argument pair, e.g. `module_arg("CL-THROTTLE",
    /// "yes")`, given after `--loadmodule path` in the order added.
    pub fn module_arg(mut self, name: &str, value: &str) -> Builder {
        self.directives.module_arg(name, value);
        self
    }

    /// Make this server a replica of `master`.
    pub fn replica_of(mut self, master: &Server) -> Builder {
        // Three separate arguments: Redis 6.2 does not split a quoted pair.
        let args = &mut self.directives.args;
        args.push("--replicaof".to_string());
        args.push("127.0.0.1".to_string());
        args.push(master.port.to_string());
        self
    }

    /// Allow DEBUG (e.g. `DEBUG DIGEST`) on this server: Redis 7.0+ and
    /// Valkey refuse it unless `enable-debug-command` says so; Redis 6.2 has
    /// no such directive and always allows it.
    pub fn debug_command(self) -> Builder {
        if binary_is_7_or_later() {
            self.arg("enable-debug-command", "yes")
        } else {
            self
        }
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
            assert_module_built(&module);
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
            let out = dir.join(format!("redis-{port}.out"));
            let mut command = server_command(port, &dir, &log, &out);
            if !self.without_module {
                command
                    .arg("--loadmodule")
                    .arg(&module)
                    .args(&self.directives.module_args);
            }
            command.args(&self.directives.args);
            let mut child = spawn(&mut command);
            match wait_until_ready(&mut child, port, || output_and_log(&out, &log)) {
                Ok(()) => {
                    return Ok(Server {
                        child,
                        port,
                        dir,
                        log,
                        _owned_dir: owned_dir,
                    })
                }
                Err(text) if lost_its_port(&text) => last_log = text,
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
        connect_to(self.port, || self.log())
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

    /// Kills the server with SIGKILL, the way a crash or the OOM killer
    /// would (no SHUTDOWN, no final save or fsync), and waits for it to exit.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
