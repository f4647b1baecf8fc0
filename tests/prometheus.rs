//! The Prometheus route: Debian's `prometheus-redis-exporter` (redis_exporter
//! 1.45) running `prometheus/ratelimit.lua` through its `--script` option,
//! scraped over HTTP like Prometheus does.
//!
//! - `REDIS_EXPORTER`: the exporter binary (default:
//!   `prometheus-redis-exporter`, then `redis_exporter`, on PATH).
//!
//! Without an exporter (`scripts/install-deps --test` installs it) the test
//! says so on stderr and passes without running.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{run, Server};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long the exporter may take to serve its first scrape.
const START_DEADLINE: Duration = Duration::from_secs(15);
/// Starts retried when the port was taken between choosing and binding it.
const START_ATTEMPTS: usize = 5;

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus/ratelimit.lua")
}

/// The exporter binary, if one is installed.
fn exporter_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("REDIS_EXPORTER") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["prometheus-redis-exporter", "redis_exporter"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A running exporter; killed when dropped, also when the test panics.
struct Exporter {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Exporter {
    /// Starts `binary` on a free loopback port, scraping `server` with the
    /// script, and waits until it serves `/metrics`.
    fn start(binary: &Path, server: &Server) -> Exporter {
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let log = server.dir().join(format!("exporter-{port}.log"));
            let output = std::fs::File::create(&log).unwrap();
            let child = Command::new(binary)
                .arg("-redis.addr")
                .arg(format!("redis://127.0.0.1:{}", server.port()))
                .arg("-web.listen-address")
                .arg(format!("127.0.0.1:{port}"))
                .arg("-script")
                .arg(script_path())
                .stdin(Stdio::null())
                .stdout(output.try_clone().unwrap())
                .stderr(output)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            let mut exporter = Exporter { child, port, log };
            let deadline = Instant::now() + START_DEADLINE;
            while Instant::now() < deadline {
                if exporter.child.try_wait().unwrap().is_some() {
                    break;
                }
                if http_get(port, "/metrics").is_some() {
                    return exporter;
                }
                sleep(Duration::from_millis(20));
            }
            last_log = exporter.log();
            if !last_log.contains("address already in use") {
                break;
            }
        }
        panic!("the exporter did not serve /metrics; its log:\n{last_log}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One scrape: `/metrics` as Prometheus reads it.
    fn scrape(&self) -> String {
        http_get(self.port, "/metrics")
            .unwrap_or_else(|| panic!("scrape failed; the exporter's log:\n{}", self.log()))
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// The body of a `200 OK` answer to `GET path`, or `None`.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    // HTTP/1.0: the server closes the connection after the answer.
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_string())
}

/// Every `ratelimit_<name>:<value>` field of `INFO ratelimit`.
fn info_counters(con: &mut redis::Connection) -> BTreeMap<String, f64> {
    let info: String = run(con, &["INFO", "ratelimit"]);
    info.lines()
        .filter_map(|line| line.trim().split_once(':'))
        .filter(|(name, _)| name.starts_with("ratelimit_"))
        .map(|(name, value)| {
            let value = value
                .parse()
                .unwrap_or_else(|e| panic!("{name}:{value} is not a number: {e}"));
            (name.to_string(), value)
        })
        .collect()
}

/// Every `redis_script_values{…key="<name>"…} <value>` sample of a scrape.
fn script_values(metrics: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("redis_script_values{"))
        .map(|rest| {
            let (labels, value) = rest.rsplit_once("} ").unwrap();
            let key = labels
                .split(',')
                .find_map(|label| label.strip_prefix("key=\""))
                .and_then(|key| key.strip_suffix('"'))
                .unwrap_or_else(|| panic!("no key label in {rest}"));
            (key.to_string(), value.trim().parse().unwrap())
        })
        .collect()
}

#[test]
fn exporter_script_exports_every_info_counter_with_its_value() {
    let Some(binary) = exporter_binary() else {
        // Written to stderr itself, not through the test's captured output,
        // so that the skip shows in `cargo test`'s output.
        let _ = writeln!(
            std::io::stderr(),
            "tests/prometheus.rs: SKIPPED: no prometheus-redis-exporter or redis_exporter on PATH \
             (`scripts/install-deps --test` installs Debian's prometheus-redis-exporter)"
        );
        return;
    };
    let server = Server::start();
    let mut con = server.connect();
    // Traffic that moves counters of every kind: admissions, a denial, each
    // algorithm, a look, a reset, THROTTLE, and an error.
    for _ in 0..3 {
        run::<Vec<i64>>(&mut con, &["RATELIMIT.CHECK", "fixed", "2", "60"]);
    }
    run::<Vec<i64>>(
        &mut con,
        &[
            "RATELIMIT.CHECK",
            "sliding",
            "5",
            "60",
            "ALGORITHM",
            "SLIDING",
        ],
    );
    run::<Vec<i64>>(
        &mut con,
        &["RATELIMIT.CHECK", "token", "5", "60", "ALGORITHM", "TOKEN"],
    );
    run::<Vec<i64>>(&mut con, &["RATELIMIT.PEEK", "fixed", "2", "60"]);
    run::<i64>(&mut con, &["RATELIMIT.RESET", "fixed"]);
    run::<Vec<i64>>(&mut con, &["RATELIMIT.THROTTLE", "t", "15", "30", "60"]);
    let error: redis::RedisResult<redis::Value> = redis::cmd("RATELIMIT.CHECK")
        .arg("bad")
        .arg("ten")
        .arg(60)
        .query(&mut con);
    assert!(error.is_err());

    let counters = info_counters(&mut con);
    for (name, value) in [
        ("ratelimit_check_calls", 6.0),
        ("ratelimit_check_errors", 1.0),
        ("ratelimit_fixed_allowed", 2.0),
        ("ratelimit_fixed_denied", 1.0),
        ("ratelimit_reset_keys", 1.0),
        ("ratelimit_throttle_calls", 1.0),
    ] {
        assert_eq!(counters.get(name), Some(&value), "{name} in {counters:?}");
    }

    let exporter = Exporter::start(&binary, &server);
    let exported = script_values(&exporter.scrape());
    assert_eq!(
        exported,
        counters,
        "redis_script_values differ from INFO ratelimit; the exporter's log:\n{}",
        exporter.log()
    );

    // Each scrape reads the counters anew.
    run::<Vec<i64>>(&mut con, &["RATELIMIT.CHECK", "fixed", "2", "60"]);
    let exported = script_values(&exporter.scrape());
    assert_eq!(exported.get("ratelimit_check_calls"), Some(&7.0));
    assert_eq!(exported, info_counters(&mut con));
}
