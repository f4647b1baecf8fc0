//! Every command and algorithm through replication and the AOF: replicas
//! (with and without the module) and a restarted server end with the same
//! values and absolute expiries, because the module propagates effects as
//! plain `SET … PXAT` and `DEL`, never itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{
    all_keys, aof_contents, exists, five, get, pexpiretime, raw, repl_offset, run, server_ms,
    wait_for_link, wait_replicas, Builder, Server,
};
use redis::{Connection, Value};

/// The databases the workload writes to.
const DATABASES: [&str; 2] = ["0", "3"];

/// Keys the workload only looks at or is refused on: never created.
const UNTOUCHED: [&str; 6] = [
    "wl:look:fixed",
    "wl:look:sliding",
    "wl:look:token",
    "wl:look:gcra",
    "wl:never:token",
    "wl:peek:missing",
];

fn check(con: &mut Connection, key: &str, limit: &str, period: &str, options: &[&str]) -> [i64; 5] {
    let mut args = vec!["RATELIMIT.CHECK", key, limit, period];
    args.extend_from_slice(options);
    five(con, &args)
}

/// The limiters `quiet_calls` looks at.
fn quiet_setup(con: &mut Connection) {
    check(con, "wl:fixed", "3", "60", &[]);
    check(con, "wl:sliding", "3", "60", &["ALGORITHM", "SLIDING"]);
    check(con, "wl:token", "3", "60", &["ALGORITHM", "TOKEN"]);
    five(con, &["RATELIMIT.THROTTLE", "wl:gcra", "4", "7", "60"]);
}

/// Calls that must change nothing, and so propagate nothing.
fn quiet_calls(con: &mut Connection) {
    for (algorithm, key) in [
        ("FIXED", "wl:fixed"),
        ("SLIDING", "wl:sliding"),
        ("TOKEN", "wl:token"),
    ] {
        // Looks, a denial, and peeks, on state in use.
        check(con, key, "3", "60", &["ALGORITHM", algorithm, "COST", "0"]);
        check(con, key, "3", "60", &["ALGORITHM", algorithm, "COST", "3"]);
        for cost in ["0", "1", "9"] {
            five(
                con,
                &[
                    "RATELIMIT.PEEK",
                    key,
                    "3",
                    "60",
                    "ALGORITHM",
                    algorithm,
                    "COST",
                    cost,
                ],
            );
        }
    }
    for (algorithm, key) in [
        ("FIXED", "wl:look:fixed"),
        ("SLIDING", "wl:look:sliding"),
        ("TOKEN", "wl:look:token"),
    ] {
        check(con, key, "3", "60", &["ALGORITHM", algorithm, "COST", "0"]);
    }
    check(
        con,
        "wl:never:token",
        "3",
        "60",
        &["ALGORITHM", "TOKEN", "BURST", "2", "COST", "3"],
    );
    five(con, &["RATELIMIT.PEEK", "wl:peek:missing", "3", "60"]);
    five(
        con,
        &["RATELIMIT.THROTTLE", "wl:look:gcra", "4", "7", "60", "0"],
    );
    five(con, &["RATELIMIT.THROTTLE", "wl:gcra", "4", "7", "60", "0"]);
    five(con, &["CL.THROTTLE", "wl:gcra", "4", "7", "60", "100"]);
    let removed: i64 = run(con, &["RATELIMIT.RESET", "wl:missing", "wl:missing2"]);
    assert_eq!(removed, 0);
}

/// A mix of everything the module does, on long-lived keys (every expiry a
/// minute or more away). Needs `CL.THROTTLE`.
fn workload(con: &mut Connection, tag: &str) {
    // Fixed window: admitted, up to and over the limit, with costs.
    for i in 0..6 {
        let key = format!("wl:{tag}:fixed:{i}");
        for _ in 0..=i {
            check(con, &key, "3", "60", &[]);
        }
        check(con, &key, "10", "60", &["COST", "4"]);
    }
    // Sliding window: admitted and denied, and counts carried from a
    // previous window written by hand.
    for i in 0..4 {
        let key = format!("wl:{tag}:sliding:{i}");
        for _ in 0..=i {
            check(con, &key, "3", "60", &["ALGORITHM", "SLIDING"]);
        }
    }
    let window = server_ms(con) / 60_000;
    let carried = format!("wl:{tag}:sliding:carried");
    let _: () = run(
        con,
        &[
            "SET",
            &carried,
            "S0:40",
            "PXAT",
            &((window + 1) * 60_000).to_string(),
        ],
    );
    for _ in 0..3 {
        check(
            con,
            &carried,
            "50",
            "60",
            &["ALGORITHM", "SLIDING", "COST", "5"],
        );
    }
    // Token buckets: whole-millisecond tokens and tokens of 8 571 3/7 ms
    // (a tick remainder in the value), burst above and below the limit.
    for (i, (limit, burst)) in [("1", "5"), ("7", "7"), ("7", "3"), ("7", "20")]
        .into_iter()
        .enumerate()
    {
        let key = format!("wl:{tag}:token:{i}");
        for cost in ["1", "2", "4", "1"] {
            check(
                con,
                &key,
                limit,
                "60",
                &["ALGORITHM", "TOKEN", "BURST", burst, "COST", cost],
            );
        }
    }
    // THROTTLE under both names: whole and fractional intervals, admitted
    // and limited.
    for (i, count) in ["1", "7"].into_iter().enumerate() {
        let key = format!("wl:{tag}:gcra:{i}");
        for quantity in ["1", "2", "3", "1"] {
            five(
                con,
                &["RATELIMIT.THROTTLE", &key, "4", count, "60", quantity],
            );
            five(con, &["CL.THROTTLE", &key, "4", count, "60", quantity]);
        }
    }
    // Removals: some keys, a missing one and a duplicate.
    let removed: i64 = run(
        con,
        &[
            "RATELIMIT.RESET",
            &format!("wl:{tag}:fixed:0"),
            &format!("wl:{tag}:sliding:0"),
            &format!("wl:{tag}:token:0"),
            &format!("wl:{tag}:gcra:0"),
            &format!("wl:{tag}:missing"),
            &format!("wl:{tag}:fixed:0"),
        ],
    );
    assert_eq!(removed, 4);
    // MULTI/EXEC and a script mixing all of them.
    let key = |name: &str| format!("wl:{tag}:{name}");
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("RATELIMIT.CHECK")
        .arg(key("multi:fixed"))
        .arg(2)
        .arg(60);
    pipe.cmd("RATELIMIT.CHECK")
        .arg(key("multi:sliding"))
        .arg(2)
        .arg(60)
        .arg("ALGORITHM")
        .arg("SLIDING");
    pipe.cmd("RATELIMIT.CHECK")
        .arg(key("multi:token"))
        .arg(7)
        .arg(60)
        .arg("ALGORITHM")
        .arg("TOKEN");
    pipe.cmd("RATELIMIT.THROTTLE")
        .arg(key("multi:gcra"))
        .arg(2)
        .arg(7)
        .arg(60);
    pipe.cmd("RATELIMIT.PEEK")
        .arg(key("multi:fixed"))
        .arg(2)
        .arg(60);
    pipe.cmd("RATELIMIT.RESET").arg(key("multi:sliding"));
    pipe.cmd("RATELIMIT.CHECK")
        .arg(key("multi:fixed"))
        .arg(2)
        .arg(60);
    pipe.cmd("RATELIMIT.CHECK")
        .arg(key("multi:fixed"))
        .arg(2)
        .arg(60);
    let _: Value = pipe.query(con).unwrap();
    let _: Value = redis::cmd("EVAL")
        .arg(
            "for i = 1, 4 do
                 redis.call('RATELIMIT.CHECK', KEYS[1], '3', '60')
                 redis.call('RATELIMIT.CHECK', KEYS[2], '3', '60', 'ALGORITHM', 'SLIDING')
                 redis.call('RATELIMIT.CHECK', KEYS[3], '7', '60', 'ALGORITHM', 'TOKEN', 'BURST', '3')
                 redis.call('RATELIMIT.THROTTLE', KEYS[4], '2', '7', '60')
                 redis.call('RATELIMIT.PEEK', KEYS[1], '3', '60')
             end
             redis.call('RATELIMIT.RESET', KEYS[2])
             return 0",
        )
        .arg(4)
        .arg(key("lua:fixed"))
        .arg(key("lua:sliding"))
        .arg(key("lua:token"))
        .arg(key("lua:gcra"))
        .query(con)
        .unwrap();
    // A binary key.
    let binary = format!("wl:{tag}:bin:");
    let mut binary = binary.into_bytes();
    binary.extend_from_slice(b"\xff\x00");
    let _: Value = raw(
        con,
        &[
            b"RATELIMIT.CHECK",
            &binary,
            b"3",
            b"60",
            b"ALGORITHM",
            b"TOKEN",
        ],
    )
    .unwrap();
    // Another database.
    let _: () = run(con, &["SELECT", "3"]);
    check(con, &key("db3:fixed"), "3", "60", &[]);
    check(
        con,
        &key("db3:sliding"),
        "3",
        "60",
        &["ALGORITHM", "SLIDING"],
    );
    check(con, &key("db3:token"), "7", "60", &["ALGORITHM", "TOKEN"]);
    five(con, &["CL.THROTTLE", &key("db3:gcra"), "2", "7", "60"]);
    let _: () = run(con, &["SELECT", "0"]);
}

/// Value and absolute expiry of every key in every database.
type Snapshot = Vec<(String, Vec<(Vec<u8>, Option<Vec<u8>>, i64)>)>;

fn snapshot(con: &mut Connection) -> Snapshot {
    let mut all = Vec::new();
    for db in DATABASES {
        let _: () = run(con, &["SELECT", db]);
        let keys: BTreeSet<Vec<u8>> = all_keys(con);
        let entries = keys
            .into_iter()
            .map(|k| {
                let value = get(con, k.as_slice());
                let expiry = pexpiretime(con, k.as_slice());
                (k, value, expiry)
            })
            .collect();
        all.push((db.to_string(), entries));
    }
    let _: () = run(con, &["SELECT", "0"]);
    all
}

/// Asserts the snapshot holds what the workload leaves: the expected kinds
/// of value, each with an expiry.
fn assert_plausible(snapshot: &Snapshot) {
    let db0 = &snapshot[0].1;
    assert!(db0.len() > 20, "only {} keys", db0.len());
    let mut tags = BTreeSet::new();
    for (key, value, expiry) in db0.iter().chain(&snapshot[1].1) {
        let value = value
            .as_deref()
            .unwrap_or_else(|| panic!("{key:?} has no value"));
        assert!(*expiry > 0, "{key:?} has no expiry");
        tags.insert(match value[0] {
            b'S' | b'T' | b'G' => value[0],
            b'0'..=b'9' => b'#',
            _ => panic!("{key:?} holds {value:?}"),
        });
    }
    assert_eq!(tags, BTreeSet::from([b'S', b'T', b'G', b'#']));
    // Some tokens and arrival times are not whole milliseconds.
    let fractional = db0
        .iter()
        .filter_map(|(_, v, _)| v.as_deref())
        .filter(|v| (v[0] == b'T' || v[0] == b'G') && v[1..] != *b"0")
        .count();
    assert!(fractional > 0, "no fractional state");
}

fn assert_nothing_untouched_exists(con: &mut Connection) {
    for key in UNTOUCHED {
        assert!(!exists(con, key), "{key} was created");
    }
}

#[test]
fn replication_replicas_end_identical_after_every_command() {
    let master = Server::builder()
        .module_arg("CL-THROTTLE", "yes")
        .arg("repl-diskless-sync-delay", "0")
        .arg("repl-ping-replica-period", "3600")
        .start();
    let mut con = master.connect();
    // Before the replicas attach: they get it by full sync.
    workload(&mut con, "pre");
    quiet_setup(&mut con);

    // One replica with the module (without CL.THROTTLE), one without it.
    let builders: Vec<Builder> = vec![Server::builder(), Server::builder().without_module()];
    let replicas: Vec<Server> = builders
        .into_iter()
        .map(|b| b.replica_of(&master).start())
        .collect();
    for replica in &replicas {
        wait_for_link(replica);
    }
    wait_replicas(&mut con, replicas.len());

    // Looks, denials and peeks propagate nothing.
    let offset = repl_offset(&mut con);
    quiet_calls(&mut con);
    assert_eq!(repl_offset(&mut con), offset, "a quiet call was propagated");

    // After: through the replication stream.
    workload(&mut con, "post");
    wait_replicas(&mut con, replicas.len());

    let expected = snapshot(&mut con);
    assert_plausible(&expected);
    assert_nothing_untouched_exists(&mut con);
    for replica in &replicas {
        let mut rcon = replica.connect();
        assert_eq!(
            snapshot(&mut rcon),
            expected,
            "replica on port {}",
            replica.port()
        );
        assert_nothing_untouched_exists(&mut rcon);
        let log = replica.log();
        assert!(!log.contains("sending an error"), "replica log:\n{log}");
    }
}

#[test]
fn replication_aof_restart_restores_every_limiter() {
    let dir = tempfile::tempdir().unwrap();
    let aof = |b: Builder| {
        b.dir(dir.path())
            .arg("appendonly", "yes")
            .arg("appendfsync", "always")
    };

    let server = aof(Server::builder().module_arg("CL-THROTTLE", "yes")).start();
    let mut con = server.connect();
    workload(&mut con, "aof");
    quiet_setup(&mut con);
    quiet_calls(&mut con);
    let stored = snapshot(&mut con);
    assert_plausible(&stored);
    server.shutdown();

    // The files hold the effects with absolute expiries, never the commands.
    let contents = aof_contents(dir.path());
    assert!(!contents.contains("ratelimit"), "AOF:\n{contents}");
    assert!(!contents.contains("cl.throttle"), "AOF:\n{contents}");
    assert!(contents.contains("pxat"), "AOF:\n{contents}");
    assert!(contents.contains("$3\r\ndel\r\n"), "AOF:\n{contents}");

    // Restarted with the module: the same values and expiries.
    let server = aof(Server::builder().module_arg("CL-THROTTLE", "yes")).start();
    let mut con = server.connect();
    assert_eq!(snapshot(&mut con), stored);
    assert_nothing_untouched_exists(&mut con);
    server.shutdown();

    // And without it.
    let server = aof(Server::builder().without_module()).start();
    let mut con = server.connect();
    assert_eq!(snapshot(&mut con), stored);
    assert_nothing_untouched_exists(&mut con);
}
