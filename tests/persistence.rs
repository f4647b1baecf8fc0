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
    check, exists, get_str, master_with_replicas, peek, pexpiretime, reset, run, server_ms,
    throttle, wait_for_rewrite, wait_replicas, DataDir, Dataset, Decision, Kind, Server, KINDS,
    REPLICATION_DEADLINE,
};
use redis::{Connection, Value};

/// The databases the workload writes to.
const DATABASES: [u32; 2] = [0, 3];

fn snapshot(con: &mut Connection) -> Dataset {
    Dataset::read(con, &DATABASES)
}

/// Asserts the snapshot holds what `workload(tag)` leaves: every kind of
/// limiter, each key with a value and an expiry.
fn assert_plausible(snapshot: &Dataset, tag: &str) {
    let mut kinds = BTreeSet::new();
    let mut count = 0;
    for (_, key, state) in snapshot.entries() {
        if !key.starts_with(format!("{tag}:").as_bytes()) {
            continue;
        }
        count += 1;
        let key = key.escape_ascii();
        let value = state
            .value
            .as_deref()
            .unwrap_or_else(|| panic!("{key} has no value"));
        assert!(state.expires_at > 0, "{key} has no expiry");
        let kind =
            Kind::of_value(value).unwrap_or_else(|| panic!("{key} holds {}", value.escape_ascii()));
        kinds.insert(kind.name);
    }
    assert_eq!(count, 18, "keys of {tag}: {snapshot:?}");
    assert_eq!(kinds, KINDS.iter().map(|k| k.name).collect());
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
    let allowed: Vec<bool> = (0..4)
        .map(|_| check(con, key("fixed:full"), 3, 3600, &[]).allowed)
        .collect();
    assert_eq!(allowed, [true, true, true, false]);
    assert_eq!(
        check(con, key("fixed:part"), 5, 3600, &["COST", "2"]).without_reset(),
        (true, 3, 5, -1)
    );
    assert_eq!(
        check(con, key("fixed:part"), 5, 3600, &["COST", "0"]).without_reset(),
        (true, 3, 5, -1)
    );
    let _: () = run(con, &["SET", &key("fixed:bare"), "3"]);
    assert_eq!(
        check(con, key("fixed:bare"), 5, 3600, &[]).without_reset(),
        (true, 1, 5, -1)
    );
    for _ in 0..2 {
        check(con, key("fixed:minute"), 10, 60, &[]);
    }
    // Sliding windows: one full (and a denial), one partly used.
    let allowed: Vec<bool> = (0..4)
        .map(|_| check(con, key("sliding:full"), 3, 3600, &sliding).allowed)
        .collect();
    assert_eq!(allowed, [true, true, true, false]);
    let mut options = sliding.to_vec();
    options.extend(["COST", "2"]);
    let part = check(con, key("sliding:part"), 5, 3600, &options);
    assert_eq!((part.allowed, part.remaining), (true, 3));
    check(con, key("sliding:minute"), 10, 60, &sliding);
    // Token buckets: 5 tokens refilled at one an hour, 3 taken, then 3
    // more asked and denied; and tokens of 8 571 3/7 ms (a tick remainder).
    let debt = ["ALGORITHM", "TOKEN", "BURST", "5", "COST", "3"];
    let taken = check(con, key("token:debt"), 1, 3600, &debt);
    assert_eq!((taken.allowed, taken.remaining), (true, 2));
    let denied = check(con, key("token:debt"), 1, 3600, &debt);
    assert_eq!((denied.allowed, denied.remaining), (false, 2));
    for _ in 0..2 {
        check(
            con,
            key("token:frac"),
            7,
            60,
            &["ALGORITHM", "TOKEN", "BURST", "3"],
        );
    }
    // THROTTLE: a bucket of 3 at one an hour emptied at once (and a
    // refusal), and one at 7 a minute.
    assert_eq!(
        throttle(con, key("gcra:full"), 2, 1, 3600, Some(3)).counts(),
        (false, 3, 0)
    );
    assert_eq!(
        throttle(con, key("gcra:full"), 2, 1, 3600, None).counts(),
        (true, 3, 0)
    );
    for _ in 0..2 {
        throttle(con, key("gcra:frac"), 4, 7, 60, None);
    }
    // Looks create nothing; a reset key is gone.
    check(con, key("look:fixed"), 3, 60, &["COST", "0"]);
    check(
        con,
        key("look:token"),
        3,
        60,
        &["ALGORITHM", "TOKEN", "COST", "0"],
    );
    throttle(con, key("look:gcra"), 2, 1, 3600, Some(0));
    peek(con, key("look:peek"), 3, 60, &[]);
    check(con, key("gone"), 3, 60, &[]);
    assert_eq!(reset(con, &[key("gone")]), 1);
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
    check(con, key("db3:fixed"), 3, 3600, &[]);
    check(con, key("db3:token"), 7, 60, &["ALGORITHM", "TOKEN"]);
    let _: () = run(con, &["SELECT", "0"]);
}

/// Asserts that the limiters of `workload(tag)` decide from the state it
/// left (as recorded in `stored`), and takes a little more from them.
fn assert_decisions_continue(con: &mut Connection, tag: &str, stored: &Dataset) {
    let key = |name: &str| format!("{tag}:{name}");
    let sliding = ["ALGORITHM", "SLIDING"];

    // The full fixed window stays full until its old end.
    let end = stored.get(0, &key("fixed:full")).expires_at;
    let denied = check(con, key("fixed:full"), 3, 3600, &[]);
    let retry = denied.retry_after_ms;
    assert_eq!(
        denied,
        Decision::denied(0, 3, retry, retry),
        "{tag}:fixed:full"
    );
    assert!(retry > 0 && retry <= 3_600_000, "{denied:?}");
    assert_eq!(get_str(con, &key("fixed:full")).as_deref(), Some("3"));
    assert_eq!(pexpiretime(con, key("fixed:full")), end);

    // The partly used one counts on, in the same window.
    let end = stored.get(0, &key("fixed:part")).expires_at;
    let reply = check(con, key("fixed:part"), 5, 3600, &[]);
    assert_eq!(reply.without_reset(), (true, 2, 5, -1), "{tag}:fixed:part");
    assert_eq!(get_str(con, &key("fixed:part")).as_deref(), Some("3"));
    assert_eq!(pexpiretime(con, key("fixed:part")), end);

    // The bare counter kept the window its first check gave it.
    let end = stored.get(0, &key("fixed:bare")).expires_at;
    assert_eq!(
        check(con, key("fixed:bare"), 5, 3600, &[]).without_reset(),
        (true, 0, 5, -1)
    );
    assert!(!check(con, key("fixed:bare"), 5, 3600, &[]).allowed);
    assert_eq!(pexpiretime(con, key("fixed:bare")), end);

    // Sliding windows: full stays denied, the partly used one counts on.
    let full = check(con, key("sliding:full"), 3, 3600, &sliding);
    assert_eq!(
        (full.allowed, full.remaining),
        (false, 0),
        "{tag}:sliding:full"
    );
    let part = check(con, key("sliding:part"), 5, 3600, &sliding);
    assert_eq!(
        (part.allowed, part.remaining),
        (true, 2),
        "{tag}:sliding:part"
    );

    // The bucket still owes its three tokens: two left, then none.
    let token = |con: &mut Connection, cost: &'static str| {
        let reply = check(
            con,
            key("token:debt"),
            1,
            3600,
            &["ALGORITHM", "TOKEN", "BURST", "5", "COST", cost],
        );
        (reply.allowed, reply.remaining)
    };
    assert_eq!(token(con, "0"), (true, 2), "{tag}:token:debt");
    assert_eq!(token(con, "2"), (true, 0));
    assert_eq!(token(con, "1"), (false, 0));

    // The emptied THROTTLE bucket stays empty.
    assert_eq!(
        throttle(con, key("gcra:full"), 2, 1, 3600, None).counts(),
        (true, 3, 0),
        "{tag}:gcra:full"
    );

    // Still nothing where the workload only looked or removed.
    for name in ["look:fixed", "look:token", "look:gcra", "look:peek", "gone"] {
        assert!(!exists(con, key(name)), "{tag}:{name} exists");
    }
}

// ---------------------------------------------------------------------------
// RDB and AOF
// ---------------------------------------------------------------------------

#[test]
fn persistence_rdb_restart_continues_every_limiter() {
    let data = DataDir::new();

    let server = data.rdb().start();
    let mut con = server.connect();
    workload(&mut con, "rdb");
    let stored = snapshot(&mut con);
    assert_plausible(&stored, "rdb");
    let _: () = run(&mut con, &["SAVE"]);
    // Killed: what comes back is what SAVE wrote, nothing more.
    server.kill();

    // Without the module: the same plain strings and expiries.
    let server = data.rdb().without_module().start();
    let mut con = server.connect();
    snapshot(&mut con).assert_same(&stored, "loaded without the module");
    server.kill();

    // With it: the same, and every limiter continues where it was.
    let server = data.rdb().start();
    let mut con = server.connect();
    snapshot(&mut con).assert_same(&stored, "loaded with the module");
    assert_decisions_continue(&mut con, "rdb", &stored);
}

#[test]
fn persistence_aof_restart_continues_every_limiter_across_a_rewrite() {
    let data = DataDir::new();

    let server = data.aof().start();
    let mut con = server.connect();
    wait_for_rewrite(&mut con);
    workload(&mut con, "old");
    // The rewrite turns what is there into the base (an RDB preamble or
    // plain commands); what follows is appended as the commands' effects.
    // A full window's counter, written by SET and INCR, is not written again
    // after the rewrite: its INCRs leave the files.
    let incr_full = "\r\nincr\r\n$14\r\nold:fixed:full\r\n";
    assert!(
        data.aof_contents().contains(incr_full),
        "no INCR of old:fixed:full in the AOF"
    );
    let _: Value = run(&mut con, &["BGREWRITEAOF"]);
    wait_for_rewrite(&mut con);
    assert!(!data.aof_contents().contains(incr_full), "no rewrite");
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
    let contents = data.aof_contents();
    assert!(!contents.contains("ratelimit"), "AOF:\n{contents}");
    assert!(!contents.contains("cl.throttle"), "AOF:\n{contents}");
    assert!(contents.contains("pxat"), "AOF:\n{contents}");
    assert!(!contents.contains(incr_full), "AOF:\n{contents}");

    // Without the module: the same plain strings and expiries.
    let server = data.aof().without_module().start();
    let mut con = server.connect();
    snapshot(&mut con).assert_same(&stored, "loaded without the module");
    server.kill();

    // With it: the same, and the new limiters continue.
    let server = data.aof().start();
    let mut con = server.connect();
    snapshot(&mut con).assert_same(&stored, "loaded with the module");
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
    let (master, replicas) = master_with_replicas(vec![Server::builder()]);
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
    reset(&mut con, &["mon:fixed:part"]);
    let _: () = run(&mut con, &["SET", "mon:end", "1"]);
    wait_replicas(&mut con, 1);

    // Every key the workload left, and the one it removed at the end.
    let mut unseen: BTreeSet<String> = stored
        .entries()
        .map(|(_, k, _)| k.escape_ascii().to_string())
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
    let (master, replicas) = master_with_replicas(vec![Server::builder()]);
    let replica = &replicas[0];
    let mut con = master.connect();
    workload(&mut con, "promo");
    wait_replicas(&mut con, 1);
    let stored = snapshot(&mut con);
    assert_plausible(&stored, "promo");

    let mut rcon = replica.connect();
    snapshot(&mut rcon).assert_same(&stored, "the replica before promotion");
    let _: () = run(&mut rcon, &["REPLICAOF", "NO", "ONE"]);
    let info: String = run(&mut rcon, &["INFO", "replication"]);
    assert!(info.contains("role:master"), "{info}");
    // The old master's absolute expiries, not ones recomputed on promotion.
    snapshot(&mut rcon).assert_same(&stored, "the replica after promotion");
    assert_decisions_continue(&mut rcon, "promo", &stored);
}

#[test]
fn persistence_aof_restart_after_windows_end_leaves_no_counter() {
    let data = DataDir::new();
    let server = data.aof().start();
    let mut con = server.connect();
    wait_for_rewrite(&mut con);
    // A counter opened before a rewrite (in the base) and grown after it
    // (INCR in the appended part), and one opened and grown after it.
    let first = check(&mut con, "exp:base", 5, 2, &[]);
    assert_eq!((first.allowed, first.remaining), (true, 4));
    let _: Value = run(&mut con, &["BGREWRITEAOF"]);
    wait_for_rewrite(&mut con);
    let second = check(&mut con, "exp:base", 5, 2, &[]);
    assert_eq!((second.allowed, second.remaining), (true, 3));
    for remaining in [4, 3] {
        let reply = check(&mut con, "exp:incr", 5, 2, &[]);
        assert_eq!((reply.allowed, reply.remaining), (true, remaining));
    }
    let contents = data.aof_contents();
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
    let now = server_ms(&mut con);
    // Killed before the windows end, so no DEL reaches the AOF.
    server.kill();
    sleep(Duration::from_millis((end - now + 50).max(0) as u64));

    for builder in [data.aof(), data.aof().without_module()] {
        let server = builder.start();
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
