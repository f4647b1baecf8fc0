//! Limiters survive what a server's data survives: an RDB snapshot, the AOF
//! (across a rewrite), the replication stream a replica's MONITOR sees, and
//! a replica's promotion. Every path carries the same plain strings and
//! absolute expiries, so a limiter continues from its stored state: a full
//! window stays full, a partly used one keeps counting, a token bucket keeps
//! its debt; and a limiter whose window ended while the server was down is
//! gone when it comes back.
//!
//! Decisions are followed on limiters whose state cannot change by itself
//! within a test: hour-long windows and buckets refilled at one token per
//! hour. A sliding window is aligned to the epoch, so a test may cross the
//! start of an hour; the counts asserted are those both sides of such a
//! boundary give (a few seconds into a new window, the previous window's
//! counts weigh all but a sliver).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{
    aof_contents, exists, five, get, get_str, pexpiretime, run, wait_replicas, Server,
    REPLICATION_DEADLINE,
};
use redis::{Connection, Value};

/// The databases the workload writes to.
const DATABASES: [&str; 2] = ["0", "3"];

/// How long a background AOF rewrite may take.
const REWRITE_DEADLINE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn check(con: &mut Connection, key: &str, limit: &str, period: &str, options: &[&str]) -> [i64; 5] {
    let mut args = vec!["RATELIMIT.CHECK", key, limit, period];
    args.extend_from_slice(options);
    five(con, &args)
}

fn throttle(con: &mut Connection, args: &[&str]) -> [i64; 5] {
    let mut all = vec!["RATELIMIT.THROTTLE"];
    all.extend_from_slice(args);
    five(con, &all)
}

/// Bytes as text, escaped (so distinct bytes stay distinct).
fn text(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Value and absolute expiry of every key, per database.
type Snapshot = Vec<(String, Vec<(String, Option<String>, i64)>)>;

fn snapshot(con: &mut Connection) -> Snapshot {
    let mut all = Vec::new();
    for db in DATABASES {
        let _: () = run(con, &["SELECT", db]);
        let keys: BTreeSet<Vec<u8>> = common::all_keys(con);
        let entries = keys
            .into_iter()
            .map(|k| {
                let value = get(con, k.as_slice()).map(|v| text(&v));
                let expiry = pexpiretime(con, k.as_slice());
                (text(&k), value, expiry)
            })
            .collect();
        all.push((db.to_string(), entries));
    }
    let _: () = run(con, &["SELECT", "0"]);
    all
}

/// Asserts two snapshots are equal, naming the entries that differ.
fn assert_same(actual: &Snapshot, expected: &Snapshot, what: &str) {
    if actual == expected {
        return;
    }
    let flat = |s: &Snapshot| -> BTreeSet<(String, String, Option<String>, i64)> {
        s.iter()
            .flat_map(|(db, entries)| {
                entries
                    .iter()
                    .map(move |(k, v, e)| (db.clone(), k.clone(), v.clone(), *e))
            })
            .collect()
    };
    let (actual, expected) = (flat(actual), flat(expected));
    panic!(
        "{what}: (db, key, value, expiry) expected but missing: {:#?}\nfound instead: {:#?}",
        expected.difference(&actual).collect::<Vec<_>>(),
        actual.difference(&expected).collect::<Vec<_>>()
    );
}

/// The stored expiry of `key` (database 0) in a snapshot.
fn expiry_in(snapshot: &Snapshot, key: &str) -> i64 {
    snapshot[0]
        .1
        .iter()
        .find(|(k, _, _)| k == key)
        .unwrap_or_else(|| panic!("{key} is not in the snapshot"))
        .2
}

/// Asserts the snapshot holds what `workload(tag)` leaves: every kind of
/// limiter, each key with a value and an expiry.
fn assert_plausible(snapshot: &Snapshot, tag: &str) {
    let mut kinds = BTreeSet::new();
    let mut count = 0;
    for (key, value, expiry) in snapshot.iter().flat_map(|(_, entries)| entries) {
        if !key.starts_with(&format!("{tag}:")) {
            continue;
        }
        count += 1;
        let value = value
            .as_deref()
            .unwrap_or_else(|| panic!("{key} has no value"));
        assert!(*expiry > 0, "{key} has no expiry");
        kinds.insert(match value.as_bytes()[0] {
            b'S' => 'S',
            b'T' => 'T',
            b'G' => 'G',
            b'0'..=b'9' => '#',
            _ => panic!("{key} holds {value}"),
        });
    }
    assert_eq!(count, 18, "keys of {tag}: {snapshot:?}");
    assert_eq!(kinds, BTreeSet::from(['S', 'T', 'G', '#']));
}

/// A mix of everything that changes limiters, on keys `{tag}:…`: admitted
/// and denied calls of every algorithm and of THROTTLE, looks (COST 0,
/// quantity 0, PEEK) that create nothing, a bare counter made by SET, a
/// removal, a transaction, a script and a second database. Leaves 18 keys.
fn workload(con: &mut Connection, tag: &str) {
    let key = |name: &str| format!("{tag}:{name}");
    let sliding = ["ALGORITHM", "SLIDING"];
    // Fixed windows: one full (and a denial), one partly used, one a bare
    // counter written by SET without an expiry.
    let allowed: Vec<i64> = (0..4)
        .map(|_| check(con, &key("fixed:full"), "3", "3600", &[])[0])
        .collect();
    assert_eq!(allowed, [1, 1, 1, 0]);
    assert_eq!(
        check(con, &key("fixed:part"), "5", "3600", &["COST", "2"])[..4],
        [1, 3, 5, -1]
    );
    assert_eq!(
        check(con, &key("fixed:part"), "5", "3600", &["COST", "0"])[..4],
        [1, 3, 5, -1]
    );
    let _: () = run(con, &["SET", &key("fixed:bare"), "3"]);
    assert_eq!(
        check(con, &key("fixed:bare"), "5", "3600", &[])[..4],
        [1, 1, 5, -1]
    );
    for _ in 0..2 {
        check(con, &key("fixed:minute"), "10", "60", &[]);
    }
    // Sliding windows: one full (and a denial), one partly used.
    let allowed: Vec<i64> = (0..4)
        .map(|_| check(con, &key("sliding:full"), "3", "3600", &sliding)[0])
        .collect();
    assert_eq!(allowed, [1, 1, 1, 0]);
    let mut options = sliding.to_vec();
    options.extend(["COST", "2"]);
    assert_eq!(
        check(con, &key("sliding:part"), "5", "3600", &options)[..2],
        [1, 3]
    );
    check(con, &key("sliding:minute"), "10", "60", &sliding);
    // Token buckets: 5 tokens refilled at one an hour, 3 taken, then 3
    // more asked and denied; and tokens of 8 571 3/7 ms (a tick remainder).
    let debt = ["ALGORITHM", "TOKEN", "BURST", "5", "COST", "3"];
    assert_eq!(
        check(con, &key("token:debt"), "1", "3600", &debt)[..2],
        [1, 2]
    );
    assert_eq!(
        check(con, &key("token:debt"), "1", "3600", &debt)[..2],
        [0, 2]
    );
    for _ in 0..2 {
        check(
            con,
            &key("token:frac"),
            "7",
            "60",
            &["ALGORITHM", "TOKEN", "BURST", "3"],
        );
    }
    // THROTTLE: a bucket of 3 at one an hour emptied at once (and a
    // refusal), and one at 7 a minute.
    assert_eq!(
        throttle(con, &[&key("gcra:full"), "2", "1", "3600", "3"])[..3],
        [0, 3, 0]
    );
    assert_eq!(
        throttle(con, &[&key("gcra:full"), "2", "1", "3600"])[..3],
        [1, 3, 0]
    );
    for _ in 0..2 {
        throttle(con, &[&key("gcra:frac"), "4", "7", "60"]);
    }
    // Looks create nothing; a reset key is gone.
    check(con, &key("look:fixed"), "3", "60", &["COST", "0"]);
    check(
        con,
        &key("look:token"),
        "3",
        "60",
        &["ALGORITHM", "TOKEN", "COST", "0"],
    );
    throttle(con, &[&key("look:gcra"), "2", "1", "3600", "0"]);
    five(con, &["RATELIMIT.PEEK", &key("look:peek"), "3", "60"]);
    check(con, &key("gone"), "3", "60", &[]);
    let removed: i64 = run(con, &["RATELIMIT.RESET", &key("gone")]);
    assert_eq!(removed, 1);
    // A transaction and a script.
    let mut pipe = redis::pipe();
    pipe.atomic();
    for _ in 0..2 {
        pipe.cmd("RATELIMIT.CHECK")
            .arg(key("multi:fixed"))
            .arg(5)
            .arg(3600);
        pipe.cmd("RATELIMIT.CHECK")
            .arg(key("multi:token"))
            .arg(7)
            .arg(60)
            .arg("ALGORITHM")
            .arg("TOKEN");
    }
    let _: Value = pipe.query(con).unwrap();
    let _: Value = redis::cmd("EVAL")
        .arg(
            "for i = 1, 3 do
                 redis.call('RATELIMIT.CHECK', KEYS[1], '5', '3600')
                 redis.call('RATELIMIT.CHECK', KEYS[2], '5', '3600', 'ALGORITHM', 'SLIDING')
                 redis.call('RATELIMIT.THROTTLE', KEYS[3], '4', '7', '60')
             end
             return 0",
        )
        .arg(3)
        .arg(key("lua:fixed"))
        .arg(key("lua:sliding"))
        .arg(key("lua:gcra"))
        .query(con)
        .unwrap();
    // Another database.
    let _: () = run(con, &["SELECT", "3"]);
    check(con, &key("db3:fixed"), "3", "3600", &[]);
    check(con, &key("db3:token"), "7", "60", &["ALGORITHM", "TOKEN"]);
    let _: () = run(con, &["SELECT", "0"]);
}

/// Asserts that the limiters of `workload(tag)` decide from the state it
/// left (as recorded in `stored`), and takes a little more from them.
fn assert_decisions_continue(con: &mut Connection, tag: &str, stored: &Snapshot) {
    let key = |name: &str| format!("{tag}:{name}");
    let sliding = ["ALGORITHM", "SLIDING"];

    // The full fixed window stays full until its old end.
    let end = expiry_in(stored, &key("fixed:full"));
    let denied = check(con, &key("fixed:full"), "3", "3600", &[]);
    let retry = denied[3];
    assert_eq!(denied, [0, 0, 3, retry, retry], "{tag}:fixed:full");
    assert!(retry > 0 && retry <= 3_600_000, "{denied:?}");
    assert_eq!(get_str(con, &key("fixed:full")).as_deref(), Some("3"));
    assert_eq!(pexpiretime(con, key("fixed:full")), end);

    // The partly used one counts on, in the same window.
    let end = expiry_in(stored, &key("fixed:part"));
    let reply = check(con, &key("fixed:part"), "5", "3600", &[]);
    assert_eq!(reply[..4], [1, 2, 5, -1], "{tag}:fixed:part");
    assert_eq!(get_str(con, &key("fixed:part")).as_deref(), Some("3"));
    assert_eq!(pexpiretime(con, key("fixed:part")), end);

    // The bare counter kept the window its first check gave it.
    let end = expiry_in(stored, &key("fixed:bare"));
    assert_eq!(
        check(con, &key("fixed:bare"), "5", "3600", &[])[..4],
        [1, 0, 5, -1]
    );
    assert_eq!(check(con, &key("fixed:bare"), "5", "3600", &[])[0], 0);
    assert_eq!(pexpiretime(con, key("fixed:bare")), end);

    // Sliding windows: full stays denied, the partly used one counts on.
    assert_eq!(
        check(con, &key("sliding:full"), "3", "3600", &sliding)[..2],
        [0, 0],
        "{tag}:sliding:full"
    );
    assert_eq!(
        check(con, &key("sliding:part"), "5", "3600", &sliding)[..2],
        [1, 2],
        "{tag}:sliding:part"
    );

    // The bucket still owes its three tokens: two left, then none.
    let token = |cost: &'static str| ["ALGORITHM", "TOKEN", "BURST", "5", "COST", cost];
    assert_eq!(
        check(con, &key("token:debt"), "1", "3600", &token("0"))[..2],
        [1, 2],
        "{tag}:token:debt"
    );
    assert_eq!(
        check(con, &key("token:debt"), "1", "3600", &token("2"))[..2],
        [1, 0]
    );
    assert_eq!(
        check(con, &key("token:debt"), "1", "3600", &token("1"))[..2],
        [0, 0]
    );

    // The emptied THROTTLE bucket stays empty.
    assert_eq!(
        throttle(con, &[&key("gcra:full"), "2", "1", "3600"])[..3],
        [1, 3, 0],
        "{tag}:gcra:full"
    );

    // Still nothing where the workload only looked or removed.
    for name in ["look:fixed", "look:token", "look:gcra", "look:peek", "gone"] {
        assert!(!exists(con, key(name)), "{tag}:{name} exists");
    }
}

/// Waits until no AOF rewrite is running or scheduled.
fn wait_for_rewrite(con: &mut Connection) {
    let deadline = Instant::now() + REWRITE_DEADLINE;
    loop {
        let info: String = run(con, &["INFO", "persistence"]);
        if info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0") {
            assert!(
                info.contains("aof_last_bgrewrite_status:ok"),
                "the rewrite failed:\n{info}"
            );
            return;
        }
        assert!(Instant::now() < deadline, "AOF rewrite still busy:\n{info}");
        sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// RDB and AOF
// ---------------------------------------------------------------------------

#[test]
fn persistence_rdb_restart_continues_every_limiter() {
    let dir = tempfile::tempdir().unwrap();

    let server = Server::builder().dir(dir.path()).start();
    let mut con = server.connect();
    workload(&mut con, "rdb");
    let stored = snapshot(&mut con);
    assert_plausible(&stored, "rdb");
    let _: () = run(&mut con, &["SAVE"]);
    // Killed: what comes back is what SAVE wrote, nothing more.
    server.kill();

    // Without the module: the same plain strings and expiries.
    let server = Server::builder().dir(dir.path()).without_module().start();
    let mut con = server.connect();
    assert_same(&snapshot(&mut con), &stored, "loaded without the module");
    server.kill();

    // With it: the same, and every limiter continues where it was.
    let server = Server::builder().dir(dir.path()).start();
    let mut con = server.connect();
    assert_same(&snapshot(&mut con), &stored, "loaded with the module");
    assert_decisions_continue(&mut con, "rdb", &stored);
}

#[test]
fn persistence_aof_restart_continues_every_limiter_across_a_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let aof = |b: common::Builder| {
        b.dir(dir.path())
            .arg("appendonly", "yes")
            .arg("appendfsync", "always")
    };

    let server = aof(Server::builder()).start();
    let mut con = server.connect();
    wait_for_rewrite(&mut con);
    workload(&mut con, "old");
    // The rewrite turns what is there into the base (an RDB preamble or
    // plain commands); what follows is appended as the commands' effects.
    // A full window's counter, written by SET and INCR, is not written again
    // after the rewrite: its INCRs leave the files.
    let incr_full = "\r\nincr\r\n$14\r\nold:fixed:full\r\n";
    assert!(
        aof_contents(dir.path()).contains(incr_full),
        "no INCR of old:fixed:full in the AOF"
    );
    let _: Value = run(&mut con, &["BGREWRITEAOF"]);
    wait_for_rewrite(&mut con);
    assert!(!aof_contents(dir.path()).contains(incr_full), "no rewrite");
    workload(&mut con, "new");
    // The limiters from before the rewrite continue, in the appended part.
    let before = snapshot(&mut con);
    assert_decisions_continue(&mut con, "old", &before);
    let stored = snapshot(&mut con);
    assert_plausible(&stored, "old");
    assert_plausible(&stored, "new");
    // appendfsync always: every reply had its effect on disk.
    server.kill();

    // The files hold effects with absolute expiries, never the commands.
    let contents = aof_contents(dir.path());
    assert!(!contents.contains("ratelimit"), "AOF:\n{contents}");
    assert!(!contents.contains("cl.throttle"), "AOF:\n{contents}");
    assert!(contents.contains("pxat"), "AOF:\n{contents}");
    assert!(!contents.contains(incr_full), "AOF:\n{contents}");

    // Without the module: the same plain strings and expiries.
    let server = aof(Server::builder().without_module()).start();
    let mut con = server.connect();
    assert_same(&snapshot(&mut con), &stored, "loaded without the module");
    server.kill();

    // With it: the same, and the new limiters continue.
    let server = aof(Server::builder()).start();
    let mut con = server.connect();
    assert_same(&snapshot(&mut con), &stored, "loaded with the module");
    assert_decisions_continue(&mut con, "new", &stored);
}

// ---------------------------------------------------------------------------
// Replication
// ---------------------------------------------------------------------------

/// One line of MONITOR output: its arguments, unquoted.
fn monitor_args(line: &str) -> Vec<String> {
    // `<time> [<db> <client>] "arg" "arg" …`
    let Some((_, quoted)) = line.split_once("] ") else {
        panic!("not a MONITOR line: {line}");
    };
    let mut args = Vec::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut arg = String::new();
        loop {
            match chars.next() {
                Some('"') | None => break,
                Some('\\') => match chars.next() {
                    Some('x') => {
                        let hex: String = chars.by_ref().take(2).collect();
                        arg.push(char::from(u8::from_str_radix(&hex, 16).unwrap()));
                    }
                    Some('n') => arg.push('\n'),
                    Some('r') => arg.push('\r'),
                    Some('t') => arg.push('\t'),
                    Some('a') => arg.push('\u{7}'),
                    Some('b') => arg.push('\u{8}'),
                    Some(other) => arg.push(other),
                    None => break,
                },
                Some(other) => arg.push(other),
            }
        }
        args.push(arg);
    }
    args
}

#[test]
fn persistence_replica_monitor_sees_only_plain_commands() {
    let (master, replicas) = common::master_with_replicas(vec![Server::builder()]);
    let replica = &replicas[0];
    let mut con = master.connect();

    let mut monitor = replica.connect();
    monitor
        .send_packed_command(&redis::cmd("MONITOR").get_packed_command())
        .unwrap();
    assert_eq!(monitor.recv_response().unwrap(), Value::Okay);

    workload(&mut con, "mon");
    let stored = snapshot(&mut con);
    assert_plausible(&stored, "mon");
    let _: () = run(&mut con, &["RATELIMIT.RESET", "mon:fixed:part"]);
    let _: () = run(&mut con, &["SET", "mon:end", "1"]);
    wait_replicas(&mut con, 1);

    // Every key the workload left, and the one it removed at the end.
    let mut unseen: BTreeSet<String> = stored
        .iter()
        .flat_map(|(_, entries)| entries)
        .map(|(k, _, _)| k.clone())
        .collect();
    unseen.insert("mon:end".to_string());
    let plain = [
        "set", "incr", "incrby", "del", "ping", "select", "multi", "exec",
    ];
    let mut commands = BTreeSet::new();
    let deadline = Instant::now() + REPLICATION_DEADLINE;
    let mut lines = Vec::new();
    while !unseen.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "MONITOR did not show {unseen:?}; it showed:\n{}",
            lines.join("\n")
        );
        monitor.set_read_timeout(Some(left)).unwrap();
        let line = match monitor.recv_response() {
            Ok(Value::SimpleString(line)) => line,
            Ok(Value::Okay) => "OK".to_string(),
            Ok(other) => panic!("MONITOR sent {other:?}"),
            Err(e) => panic!(
                "MONITOR: {e}; still unseen {unseen:?}; seen:\n{}",
                lines.join("\n")
            ),
        };
        assert!(
            !line.to_lowercase().contains("ratelimit")
                && !line.to_lowercase().contains("cl.throttle"),
            "the replica executed a module command: {line}"
        );
        let args = monitor_args(&line);
        let name = args.first().map(|a| a.to_lowercase()).unwrap_or_default();
        assert!(
            plain.contains(&name.as_str()),
            "the replica executed {line}"
        );
        commands.insert(name);
        if let Some(key) = args.get(1) {
            unseen.remove(key);
        }
        lines.push(line);
    }
    // The effects arrive as SET … PXAT, INCR/INCRBY and DEL.
    for expected in ["set", "incr", "del"] {
        assert!(
            commands.contains(expected),
            "no {expected} in:\n{}",
            lines.join("\n")
        );
    }
    assert!(
        lines.iter().any(|l| l.to_lowercase().contains("\"pxat\"")),
        "no PXAT in:\n{}",
        lines.join("\n")
    );
}

#[test]
fn persistence_promoted_replica_continues_every_limiter() {
    let (master, replicas) = common::master_with_replicas(vec![Server::builder()]);
    let replica = &replicas[0];
    let mut con = master.connect();
    workload(&mut con, "promo");
    wait_replicas(&mut con, 1);
    let stored = snapshot(&mut con);
    assert_plausible(&stored, "promo");

    let mut rcon = replica.connect();
    assert_same(
        &snapshot(&mut rcon),
        &stored,
        "the replica before promotion",
    );
    let _: () = run(&mut rcon, &["REPLICAOF", "NO", "ONE"]);
    let info: String = run(&mut rcon, &["INFO", "replication"]);
    assert!(info.contains("role:master"), "{info}");
    // The old master's absolute expiries, not ones recomputed on promotion.
    assert_same(&snapshot(&mut rcon), &stored, "the replica after promotion");
    assert_decisions_continue(&mut rcon, "promo", &stored);
}

#[test]
fn persistence_aof_restart_after_windows_end_leaves_no_counter() {
    let dir = tempfile::tempdir().unwrap();
    let aof = |b: common::Builder| {
        b.dir(dir.path())
            .arg("appendonly", "yes")
            .arg("appendfsync", "always")
    };
    let server = aof(Server::builder()).start();
    let mut con = server.connect();
    wait_for_rewrite(&mut con);
    // A counter opened before a rewrite (in the base) and grown after it
    // (INCR in the appended part), and one opened and grown after it.
    assert_eq!(check(&mut con, "exp:base", "5", "2", &[])[..2], [1, 4]);
    let _: Value = run(&mut con, &["BGREWRITEAOF"]);
    wait_for_rewrite(&mut con);
    assert_eq!(check(&mut con, "exp:base", "5", "2", &[])[..2], [1, 3]);
    for remaining in [4, 3] {
        assert_eq!(
            check(&mut con, "exp:incr", "5", "2", &[])[..2],
            [1, remaining]
        );
    }
    let contents = aof_contents(dir.path());
    assert!(
        !contents.contains("$3\r\nset\r\n$8\r\nexp:base\r\n$1\r\n1\r\n$4\r\npxat\r\n"),
        "the SET opening exp:base outlived the rewrite; AOF:\n{contents}"
    );
    assert!(
        contents.contains("$4\r\nincr\r\n$8\r\nexp:base\r\n"),
        "AOF:\n{contents}"
    );
    assert!(
        contents.contains("$4\r\nincr\r\n$8\r\nexp:incr\r\n"),
        "AOF:\n{contents}"
    );
    let end = pexpiretime(&mut con, "exp:base").max(pexpiretime(&mut con, "exp:incr"));
    let now = common::server_ms(&mut con);
    // Killed before the windows end, so no DEL reaches the AOF.
    server.kill();
    sleep(Duration::from_millis((end - now + 50).max(0) as u64));

    for builder in [Server::builder(), Server::builder().without_module()] {
        let server = aof(builder).start();
        let mut con = server.connect();
        for key in ["exp:base", "exp:incr"] {
            assert_eq!(
                (get_str(&mut con, key), pexpiretime(&mut con, key)),
                (None, -2),
                "{key} outlived its window"
            );
        }
        server.kill();
    }
}
