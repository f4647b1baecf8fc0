//! The first steps of a new user: `make run` (scripts/run) against real
//! servers and real ports (its hint's command gives the reply the README
//! shows first), `make help`, `make clean`, and which build the client
//! examples load (scripts/module-path). The documents' sessions and links
//! are tested by tests/docs.rs.
//!
//! scripts/run is started the way `make run` starts it, with the module and
//! port from the environment (`RATELIMIT_MODULE`, `PORT`): here the debug
//! build and a port the OS just handed out. Each run is its own process
//! group, and is stopped by that group's id (SIGINT, as Ctrl-C sends it),
//! or killed with it when a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod markdown;

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{module_path, run, server_binary, Server};
use markdown::{assert_reply_matches, code_blocks, Kind, Shown};

/// How long scripts/run may take to print its hint, or to fail.
const RUN_DEADLINE: Duration = Duration::from_secs(30);
/// What `make run` tells the user to try, after `redis-cli [-p PORT] `.
const HINT_COMMAND: &str = "RATELIMIT.CHECK user:42 3 60";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `kill -SIGNAL -- -PGID`: a signal to a whole process group, by its id.
fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), "--".into(), format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// scripts/run in its own process group, as `make run` runs it; killed with
/// its group (the server included) when dropped.
struct RunScript {
    child: Child,
    /// Lines of stdout and stderr, as they come.
    lines: mpsc::Receiver<String>,
    /// Every line received so far.
    output: Vec<String>,
}

impl RunScript {
    fn start(port: u16, module: &Path) -> RunScript {
        let mut child = Command::new(repo().join("scripts/run"))
            .env("PORT", port.to_string())
            .env("RATELIMIT_MODULE", module)
            .env("REDIS_SERVER", server_binary())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("run scripts/run");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for stream in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        RunScript {
            child,
            lines,
            output: Vec::new(),
        }
    }

    /// Reads output until a line satisfies `wanted` (returned), or the
    /// script's output ends, or the deadline passes (`None` for both).
    fn read_until(&mut self, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + RUN_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.output.push(line.clone());
                    if wanted(&line) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Waits for the script to exit, with all of its output.
    fn wait(&mut self) -> ExitStatus {
        let _ = self.read_until(|_| false);
        let deadline = Instant::now() + RUN_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "scripts/run did not exit; its output:\n{}",
                self.text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn text(&self) -> String {
        self.output.join("\n")
    }
}

impl Drop for RunScript {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            signal_group(self.child.id(), "KILL");
            let _ = self.child.wait();
        }
    }
}

/// Runs scripts/run on a port that something else holds, until it exits;
/// asserts it failed without printing the hint, and returns its output.
fn run_on_a_taken_port(port: u16, module: &Path) -> String {
    let mut script = RunScript::start(port, module);
    let status = script.wait();
    let output = script.text();
    assert!(
        !status.success(),
        "exit {status} on a taken port:\n{output}"
    );
    assert!(
        !output.contains("try:"),
        "the hint was printed for a server that is not up:\n{output}"
    );
    output
}

fn assert_names_the_taken_port(output: &str, port: u16) {
    for wanted in [
        format!("port {port}"),
        "already in use".to_string(),
        "sudo systemctl stop redis-server".to_string(),
        "PORT=".to_string(),
    ] {
        assert!(output.contains(&wanted), "no {wanted:?} in:\n{output}");
    }
}

// ---------------------------------------------------------------------------
// make run
// ---------------------------------------------------------------------------

/// The Debian case without its service: something else listens on the
/// port. The script must stop at once, not print a success line and then
/// the server's bind error.
#[test]
fn run_stops_with_the_cause_and_the_fix_when_another_listener_holds_the_port() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let output = run_on_a_taken_port(port, &module_path());
    assert_names_the_taken_port(&output, port);
    assert!(output.contains("another process"), "{output}");
}

/// Two ports in a row, both held by listeners: the port the script would
/// have suggested (the next one) is taken too, so it must name another,
/// one that is free: binding it here succeeds once the script is done.
#[test]
fn run_suggests_a_port_that_is_free_now() {
    let (holder, next) = loop {
        let holder = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = holder.local_addr().unwrap().port();
        if port == u16::MAX {
            continue;
        }
        if let Ok(next) = TcpListener::bind(("127.0.0.1", port + 1)) {
            break (holder, next);
        }
    };
    let port = holder.local_addr().unwrap().port();
    let output = run_on_a_taken_port(port, &module_path());
    assert_names_the_taken_port(&output, port);
    let suggested: u16 = output
        .split("PORT=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no PORT=<number> in:\n{output}"));
    assert_ne!(suggested, port, "{output}");
    assert_ne!(suggested, port + 1, "the next port is held:\n{output}");
    drop(next);
    assert!(
        TcpListener::bind(("127.0.0.1", suggested)).is_ok(),
        "port {suggested}, suggested, is not free:\n{output}"
    );
}

/// Debian's own redis-server service on the port: a Redis that answers, but
/// without the module, where the hint's command would be `ERR unknown
/// command`. The script says that a Redis server holds the port, and leaves
/// it running.
#[test]
fn run_names_a_redis_server_that_already_holds_the_port() {
    let service = Server::builder().without_module().start();
    let output = run_on_a_taken_port(service.port(), &module_path());
    assert_names_the_taken_port(&output, service.port());
    assert!(output.contains("a Redis server"), "{output}");
    let pong: String = run(&mut service.connect(), &["PING"]);
    assert_eq!(pong, "PONG");
}

/// A port held by a socket that is bound but not listening: nothing answers
/// on it, so it looks free, and the server's own bind fails. The script
/// reads the cause from the server's log.
#[test]
fn run_names_the_taken_port_when_the_server_cannot_bind_it() {
    let script = "import socket, sys\n\
                  s = socket.socket()\n\
                  s.bind(('127.0.0.1', 0))\n\
                  print(s.getsockname()[1], flush=True)\n\
                  sys.stdin.read()\n";
    let holder = match Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(holder) => holder,
        Err(e) => {
            eprintln!("not run: python3 holds the port here, and cannot run: {e}");
            return;
        }
    };
    // Ends the holder (its stdin closes) also when the test fails.
    struct Holder(Child);
    impl Drop for Holder {
        fn drop(&mut self) {
            drop(self.0.stdin.take());
            let _ = self.0.wait();
        }
    }
    let mut holder = Holder(holder);
    let mut line = String::new();
    BufReader::new(holder.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the bound socket accepts connections"
    );
    let output = run_on_a_taken_port(port, &module_path());
    assert_names_the_taken_port(&output, port);
    assert!(output.contains("Address already in use"), "{output}");
}

/// A file that is not a module: the server exits, and so does the script,
/// naming the module and without the hint.
#[test]
fn run_stops_with_the_cause_when_the_module_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("libredis_ratelimit.so");
    std::fs::write(&bogus, "not a shared object").unwrap();
    let status = Command::new("chmod")
        .arg("755")
        .arg(&bogus)
        .status()
        .unwrap();
    assert!(status.success());
    let mut script = RunScript::start(free_port(), &bogus);
    let status = script.wait();
    let output = script.text();
    assert!(!status.success(), "{output}");
    assert!(!output.contains("try:"), "{output}");
    assert!(
        output.contains("could not load the module") && output.contains(&*bogus.to_string_lossy()),
        "{output}"
    );
}

/// The hint comes once the module answers: its own command works at that
/// very moment and gives the reply the README shows first. Ctrl-C (SIGINT
/// to the process group) then shuts the server down cleanly and leaves
/// nothing running.
#[test]
fn run_prints_the_hint_once_the_module_answers_and_stops_on_ctrl_c() {
    let module = module_path();
    let mut attempts = 0;
    let (mut script, port, hint) = loop {
        attempts += 1;
        let port = free_port();
        let mut script = RunScript::start(port, &module);
        if let Some(hint) = script.read_until(|l| l.contains("try: ")) {
            break (script, port, hint);
        }
        let status = script.wait();
        let output = script.text();
        // Another process took the port between choosing and binding it.
        assert!(
            output.contains("already in use") && attempts < 5,
            "no hint (exit {status}):\n{output}"
        );
    };

    // At the moment of the hint, the module answers.
    let cli_command = hint.split_once("try: ").unwrap().1;
    let expected = format!("redis-cli -p {port} {HINT_COMMAND}");
    assert_eq!(cli_command, expected, "the hint: {hint}");
    let reply = redis_cli(port, HINT_COMMAND);
    let modules = redis_cli(port, "MODULE LIST");
    assert!(modules.contains("\"ratelimit\""), "{modules}");
    assert!(hint.contains(&format!("127.0.0.1:{port}")), "{hint}");
    assert!(
        script.output.iter().any(|l| l.contains("Ready to accept")),
        "the hint came before the server's ready line:\n{}",
        script.text()
    );

    // README's first example is this command, and shows this reply.
    let first = readme_first_command();
    assert_eq!(
        first.command, HINT_COMMAND,
        "README's first example is not the hint's command"
    );
    assert_reply_matches(&format!("README.md:{}", first.line), &first, &reply, 0);

    // Ctrl-C.
    let pid = server_pid(port);
    signal_group(script.child.id(), "INT");
    let status = script.wait();
    let output = script.text();
    assert!(status.success(), "exit {status} after Ctrl-C:\n{output}");
    // The server gets the same Ctrl-C as the script: it may have exited
    // cleanly before the script's own handler ran.
    assert!(
        output.contains("ready to exit")
            && (output.contains("stopped") || output.contains("exited (status 0)")),
        "no clean shutdown in:\n{output}"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "redis-server {pid} is still running:\n{output}"
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// SIGTERM to the script alone (a supervisor, `kill PID`) stops the server
/// too: the script does not exit and leave it running.
#[test]
fn run_stops_the_server_when_the_script_alone_is_stopped() {
    let module = module_path();
    let mut attempts = 0;
    let (mut script, port) = loop {
        attempts += 1;
        let port = free_port();
        let mut script = RunScript::start(port, &module);
        if script.read_until(|l| l.contains("try: ")).is_some() {
            break (script, port);
        }
        let status = script.wait();
        let output = script.text();
        assert!(
            output.contains("already in use") && attempts < 5,
            "no hint (exit {status}):\n{output}"
        );
    };
    let pid = server_pid(port);
    let status = Command::new("kill")
        .args(["-TERM", &script.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = script.wait();
    let output = script.text();
    assert!(status.success(), "exit {status}:\n{output}");
    assert!(output.contains("ready to exit"), "{output}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "redis-server {pid} is still running:\n{output}"
    );
}

/// The server's process id, from `INFO server`.
fn server_pid(port: u16) -> u32 {
    let info = redis_cli(port, "INFO server");
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap_or_else(|| panic!("no process_id in:\n{info}"))
        .trim()
        .parse()
        .unwrap()
}

/// The first command of the first session the README shows.
fn readme_first_command() -> Shown {
    code_blocks(&markdown::read("README.md"))
        .iter()
        .find_map(|block| match markdown::kind(block) {
            Ok(Kind::Replayed(_, shown)) => shown.into_iter().next(),
            _ => None,
        })
        .expect("README shows no redis-cli session")
}

/// `redis-cli -p PORT <command>`, formatted as redis-cli shows it in a
/// terminal (`--no-raw`).
fn redis_cli(port: u16, command: &str) -> String {
    let output = Command::new("redis-cli")
        .args(["--no-raw", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(command.split_whitespace())
        .output()
        .expect("run redis-cli");
    assert!(output.status.success(), "redis-cli {command}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

// ---------------------------------------------------------------------------
// make help, make clean
// ---------------------------------------------------------------------------

fn make(dir: &Path, args: &[&str], port: Option<&str>) -> String {
    let mut command = Command::new("make");
    command
        .args(["-s", "--no-print-directory", "-C"])
        .arg(dir)
        .args(args)
        .env_remove("MAKEFLAGS")
        .env_remove("MAKELEVEL");
    match port {
        Some(port) => command.env("PORT", port),
        None => command.env_remove("PORT"),
    };
    let output = command.output().expect("run make");
    assert!(output.status.success(), "make {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// `make help` lists every target with its description, the descriptions in
/// one column, whatever the length of the targets' names.
#[test]
fn make_help_lines_up_its_descriptions() {
    let help = make(repo(), &["help"], None);
    let makefile = std::fs::read_to_string(repo().join("Makefile")).unwrap();
    let targets: Vec<&str> = makefile
        .lines()
        .filter(|l| l.contains(":") && l.contains(" ## ") && !l.starts_with(['\t', '#', ' ']))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    let lines: Vec<&str> = help.lines().collect();
    assert_eq!(lines.len(), targets.len(), "{help}");
    let mut columns = std::collections::BTreeSet::new();
    for (line, target) in lines.iter().zip(&targets) {
        let rest = line
            .strip_prefix(&format!("  make {target} "))
            .unwrap_or_else(|| panic!("{line:?} is not `make {target}`"));
        let description = rest.trim_start();
        assert!(!description.is_empty(), "{line:?}");
        columns.insert(line.len() - description.len());
    }
    assert_eq!(
        columns.len(),
        1,
        "descriptions start at columns {columns:?}:\n{help}"
    );
}

/// `make help` shows the port `make run` serves on, not `$(PORT)`.
#[test]
fn make_help_shows_the_real_port() {
    let help = make(repo(), &["help"], None);
    assert!(help.contains("127.0.0.1:6379"), "{help}");
    assert!(!help.contains("$("), "{help}");
    let help = make(repo(), &["help"], Some("6380"));
    assert!(help.contains("127.0.0.1:6380"), "{help}");
    assert!(help.contains("make clean"), "{help}");
}

/// `make clean` removes what the builds and `make test` made: target/
/// (builds, virtualenvs, servers, make run's logs), the Node.js example's
/// installed dependencies and Python's bytecode caches, and nothing else.
/// Run on a copy of the Makefile, so as not to remove this very build.
#[test]
fn make_clean_removes_what_make_test_made_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::copy(repo().join("Makefile"), root.join("Makefile")).unwrap();
    let made = [
        "target/debug/libredis_ratelimit.so",
        "target/release/libredis_ratelimit.so",
        "target/clients/venv/bin/python",
        "target/servers/install.log",
        "target/run/6379/redis.log",
        "examples/node/node_modules/redis/package.json",
        "examples/python/__pycache__/flask_app.cpython-311.pyc",
    ];
    let kept = [
        "README.md",
        "src/lib.rs",
        "bench/results/latest.txt",
        "examples/python/flask_app.py",
        "examples/node/package-lock.json",
        "notes.txt",
    ];
    for file in made.iter().chain(&kept) {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "x").unwrap();
    }
    make(root, &["clean"], None);
    for made in [
        "target",
        "examples/node/node_modules",
        "examples/python/__pycache__",
    ] {
        assert!(!root.join(made).exists(), "{made} is still there");
    }
    for file in kept {
        assert!(root.join(file).exists(), "make clean removed {file}");
    }
}

/// `make bench` writes its results under target/bench/, where a run to try
/// something changes nothing committed; only `BENCH_SAVE=1` writes the
/// committed results under bench/results/, and never from a quick run.
/// Read from what make would run (`make -n`), without running it.
#[test]
fn make_bench_writes_the_committed_results_only_when_asked() {
    let plan = make(repo(), &["-n", "bench", "BENCH_QUICK=1"], None);
    assert!(
        plan.contains("BENCH_OUT=target/bench python3 bench/run.py"),
        "{plan}"
    );
    assert!(
        plan.contains("> target/bench/latest-decisions.txt"),
        "{plan}"
    );
    assert!(!plan.contains("bench/results"), "{plan}");
    let saved = make(repo(), &["-n", "bench", "BENCH_SAVE=1"], None);
    assert!(
        saved.contains("BENCH_OUT=bench/results python3 bench/run.py"),
        "{saved}"
    );
    assert!(
        saved.contains("BENCH_OUT=bench/results target/bench-venv/bin/python bench/plot.py"),
        "{saved}"
    );
    let refused = Command::new("make")
        .args(["-n", "-C"])
        .arg(repo())
        .args(["bench", "BENCH_SAVE=1", "BENCH_QUICK=1"])
        .env_remove("MAKEFLAGS")
        .env_remove("MAKELEVEL")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("BENCH_QUICK"),
        "{refused:?}"
    );
    // The scripts' own default is target/bench too.
    for script in ["bench/run.py", "bench/plot.py"] {
        let text = std::fs::read_to_string(repo().join(script)).unwrap();
        assert!(
            text.contains(r#"os.environ.get("BENCH_OUT", "target/bench")"#),
            "{script} writes elsewhere by default"
        );
    }
}

// ---------------------------------------------------------------------------
// Which build the client examples load
// ---------------------------------------------------------------------------

/// scripts/module-path with `CARGO_TARGET_DIR` at `target`.
fn module_path_script(target: &Path, module: Option<&Path>) -> (bool, String, String) {
    let mut command = Command::new(repo().join("scripts/module-path"));
    command
        .env("CARGO_TARGET_DIR", target)
        // A build, if it comes to that, fails at once instead of compiling.
        .env("CARGO", "false");
    match module {
        Some(module) => command.env("RATELIMIT_MODULE", module),
        None => command.env_remove("RATELIMIT_MODULE"),
    };
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap().trim().to_string(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// After `make run` only the release build exists; the examples' tests must
/// load it rather than fail on a missing debug build.
#[test]
fn examples_load_whichever_build_exists() {
    let target = tempfile::tempdir().unwrap();
    let target = target.path().canonicalize().unwrap();
    let build = |profile: &str| -> PathBuf {
        let path = target.join(profile).join("libredis_ratelimit.so");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "").unwrap();
        path
    };

    // No build at all: it builds one (here CARGO=false, so that fails).
    let (ok, _, stderr) = module_path_script(&target, None);
    assert!(!ok);
    assert!(stderr.contains("cargo build"), "{stderr}");

    let release = build("release");
    let (ok, path, _) = module_path_script(&target, None);
    assert!(ok);
    assert_eq!(Path::new(&path), release);

    let debug = build("debug");
    let (ok, path, _) = module_path_script(&target, None);
    assert!(ok);
    assert_eq!(Path::new(&path), debug);

    // RATELIMIT_MODULE wins, and must exist.
    let (ok, path, _) = module_path_script(&target, Some(&release));
    assert!(ok);
    assert_eq!(Path::new(&path), release);
    let (ok, _, stderr) = module_path_script(&target, Some(&target.join("missing.so")));
    assert!(!ok);
    assert!(stderr.contains("missing.so"), "{stderr}");
}
