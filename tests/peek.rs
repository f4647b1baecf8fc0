//! RATELIMIT.PEEK against a real server: CHECK's answer without counting.
//!
//! A time in a reply (`retry_after_ms`, `reset_after_ms`) names an instant:
//! the command's "now" plus that time. "Now" lies between the server's
//! `TIME` read just before and just after the command, so two replies name
//! the same instant when those intervals, shifted by the times, overlap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{
    dump, error_of, exists, five, get_str, master_with_replicas, pexpiretime, raw, run, server_ms,
    wait_replicas, Server, WRONGTYPE,
};
use redis::{Connection, Value};

/// A reply with the server clock read just before and just after it.
struct Timed {
    reply: [i64; 5],
    before: i64,
    after: i64,
}

fn timed(con: &mut Connection, args: &[&str]) -> Timed {
    let before = server_ms(con);
    let reply = five(con, args);
    let after = server_ms(con);
    Timed {
        reply,
        before,
        after,
    }
}

/// Asserts that field `i` of both replies names the same instant (or that
/// both name none: -1 for no retry time, 0 for nothing to reset).
fn assert_same_instant(what: &str, i: usize, a: &Timed, b: &Timed) {
    if a.reply[i] <= 0 || b.reply[i] <= 0 {
        assert_eq!(
            a.reply[i], b.reply[i],
            "{what}: field {i} of {:?} and {:?}",
            a.reply, b.reply
        );
        return;
    }
    let (a_from, a_to) = (a.before + a.reply[i], a.after + a.reply[i]);
    let (b_from, b_to) = (b.before + b.reply[i], b.after + b.reply[i]);
    assert!(
        a_from <= b_to && b_from <= a_to,
        "{what}: field {i} names [{a_from}, {a_to}] in {:?} but [{b_from}, {b_to}] in {:?}",
        a.reply,
        b.reply
    );
}

/// `RATELIMIT.<command> key 5 60 COST cost <algorithm options>`.
fn call<'a>(command: &'a str, key: &'a str, cost: &'a str, algorithm: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![command, key, "5", "60", "COST", cost];
    args.extend_from_slice(algorithm);
    args
}

const ALGORITHMS: [&[&str]; 3] = [
    &["ALGORITHM", "FIXED"],
    &["ALGORITHM", "SLIDING"],
    &["ALGORITHM", "TOKEN"],
];

/// Value, expiry and encoding of `key`.
fn snapshot(con: &mut Connection, key: &str) -> (Option<Vec<u8>>, i64) {
    (dump(con, key), pexpiretime(con, key))
}

#[test]
fn peek_on_a_missing_key_creates_nothing() {
    let server = Server::start();
    let mut con = server.connect();
    for algorithm in [&[][..], ALGORITHMS[0], ALGORITHMS[1], ALGORITHMS[2]] {
        let key = "peek:missing";
        assert_eq!(
            five(&mut con, &call("RATELIMIT.PEEK", key, "1", algorithm)),
            [1, 5, 5, -1, 0],
            "{algorithm:?}"
        );
        assert_eq!(
            five(&mut con, &call("RATELIMIT.PEEK", key, "5", algorithm)),
            [1, 5, 5, -1, 0],
            "{algorithm:?}"
        );
        // A cost that can never fit: not allowed, no retry time.
        assert_eq!(
            five(&mut con, &call("RATELIMIT.PEEK", key, "6", algorithm)),
            [0, 5, 5, -1, 0],
            "{algorithm:?}"
        );
        assert_eq!(
            five(&mut con, &["RATELIMIT.PEEK", key, "5", "60"]),
            [1, 5, 5, -1, 0]
        );
    }
    assert_eq!(
        five(
            &mut con,
            &[
                "RATELIMIT.PEEK",
                "peek:missing",
                "5",
                "60",
                "ALGORITHM",
                "TOKEN",
                "BURST",
                "8"
            ]
        ),
        [1, 8, 5, -1, 0]
    );
    assert_eq!(run::<i64>(&mut con, &["DBSIZE"]), 0);
}

#[test]
fn peek_reports_the_state_without_deducting() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "peek:fixed";
    five(&mut con, &["RATELIMIT.CHECK", key, "5", "60"]);
    five(&mut con, &["RATELIMIT.CHECK", key, "5", "60"]);
    let end = pexpiretime(&mut con, key);

    // Three left, and they stay three however often one looks.
    for _ in 0..3 {
        let t = timed(&mut con, &["RATELIMIT.PEEK", key, "5", "60"]);
        assert_eq!(t.reply[..4], [1, 3, 5, -1], "{:?}", t.reply);
        let now = end - t.reply[4];
        assert!((t.before..=t.after).contains(&now), "{:?}", t.reply);
    }
    // A cost that fits: allowed, still nothing deducted.
    assert_eq!(
        five(&mut con, &["RATELIMIT.PEEK", key, "5", "60", "COST", "3"])[..4],
        [1, 3, 5, -1]
    );
    // One that does not: when the window ends, as CHECK says.
    let peeked = timed(&mut con, &["RATELIMIT.PEEK", key, "5", "60", "COST", "4"]);
    let checked = timed(&mut con, &["RATELIMIT.CHECK", key, "5", "60", "COST", "4"]);
    assert_eq!(peeked.reply[..3], [0, 3, 5]);
    assert_eq!(checked.reply[..3], peeked.reply[..3]);
    assert_same_instant("retry", 3, &peeked, &checked);
    assert_same_instant("reset", 4, &peeked, &checked);
    let now = end - peeked.reply[3];
    assert!((peeked.before..=peeked.after).contains(&now));

    // The peeks counted nothing: CHECK goes on from 2.
    assert_eq!(
        five(&mut con, &["RATELIMIT.CHECK", key, "5", "60"])[..4],
        [1, 2, 5, -1]
    );
    assert_eq!(get_str(&mut con, key).as_deref(), Some("3"));
    assert_eq!(pexpiretime(&mut con, key), end);
}

#[test]
fn peek_answers_for_each_algorithm() {
    let server = Server::start();
    let mut con = server.connect();

    // Sliding window, counts in the current window only (1 minute windows:
    // the check and the peek below see the same window unless a boundary
    // falls between them, in which case the window is re-read).
    let key = "peek:sliding";
    five(
        &mut con,
        &[
            "RATELIMIT.CHECK",
            key,
            "5",
            "60",
            "ALGORITHM",
            "SLIDING",
            "COST",
            "2",
        ],
    );
    let window_end = pexpiretime(&mut con, key) - 60_000;
    let peek = timed(
        &mut con,
        &["RATELIMIT.PEEK", key, "5", "60", "ALGORITHM", "SLIDING"],
    );
    if peek.after < window_end {
        assert_eq!(peek.reply[..4], [1, 3, 5, -1]);
        // Empty once the next window is over.
        let now = pexpiretime(&mut con, key) - peek.reply[4];
        assert!(
            (peek.before..=peek.after).contains(&now),
            "{:?}",
            peek.reply
        );
        // Four more would fit only once the 2 weigh 1 at most: half way
        // into the next window.
        let four = timed(
            &mut con,
            &[
                "RATELIMIT.PEEK",
                key,
                "5",
                "60",
                "ALGORITHM",
                "SLIDING",
                "COST",
                "4",
            ],
        );
        assert_eq!(four.reply[..3], [0, 3, 5]);
        let at = window_end + 30_000 - four.reply[3];
        assert!((four.before..=four.after).contains(&at), "{:?}", four.reply);
    }
    assert_eq!(get_str(&mut con, key).as_deref(), Some("S0:2"));

    // Token bucket of 5, one token a minute.
    let key = "peek:token";
    let taken = timed(
        &mut con,
        &[
            "RATELIMIT.CHECK",
            key,
            "1",
            "60",
            "ALGORITHM",
            "TOKEN",
            "BURST",
            "5",
            "COST",
            "5",
        ],
    );
    assert_eq!(taken.reply, [1, 0, 1, -1, 300_000]);
    let full_at = pexpiretime(&mut con, key);
    let peek = timed(
        &mut con,
        &[
            "RATELIMIT.PEEK",
            key,
            "1",
            "60",
            "ALGORITHM",
            "TOKEN",
            "BURST",
            "5",
        ],
    );
    assert_eq!(peek.reply[..3], [0, 0, 1]);
    let first_token = full_at - 4 * 60_000;
    assert!((peek.before..=peek.after).contains(&(first_token - peek.reply[3])));
    assert!((peek.before..=peek.after).contains(&(full_at - peek.reply[4])));
    // Looking costs nothing.
    assert_eq!(
        five(
            &mut con,
            &[
                "RATELIMIT.PEEK",
                key,
                "1",
                "60",
                "ALGORITHM",
                "TOKEN",
                "BURST",
                "5",
                "COST",
                "0"
            ]
        )[..4],
        [1, 0, 1, -1]
    );
    assert_eq!(get_str(&mut con, key).as_deref(), Some("T0"));
    assert_eq!(pexpiretime(&mut con, key), full_at);

    // Fixed window over its limit (limit lowered): nothing fits.
    let key = "peek:over";
    let _: () = run(&mut con, &["SET", key, "9", "PX", "60000"]);
    let over = five(&mut con, &["RATELIMIT.PEEK", key, "5", "60"]);
    assert_eq!(over[..3], [0, 0, 5]);
    assert!(
        over[3] > 0 && over[3] <= 60_000 && over[3] == over[4],
        "{over:?}"
    );
}

#[test]
fn peek_changes_nothing_in_any_algorithm() {
    let server = Server::start();
    let mut con = server.connect();
    let mut watcher = server.connect();
    for (i, algorithm) in ALGORITHMS.iter().enumerate() {
        let key = format!("peek:still:{i}");
        five(&mut con, &call("RATELIMIT.CHECK", &key, "2", algorithm));
        let before = snapshot(&mut con, &key);

        // A watched key stays untouched through any peek: EXEC runs.
        let _: () = run(&mut watcher, &["WATCH", &key]);
        for cost in ["0", "1", "3", "4", "5", "6", "1000"] {
            five(&mut con, &call("RATELIMIT.PEEK", &key, cost, algorithm));
        }
        let result: Option<(i64,)> = redis::pipe()
            .atomic()
            .cmd("EXISTS")
            .arg(&key)
            .query(&mut watcher)
            .unwrap();
        assert_eq!(result, Some((1,)), "EXEC aborted: a peek touched {key}");
        assert_eq!(snapshot(&mut con, &key), before, "{algorithm:?}");
    }
}

#[test]
fn peek_names_the_retry_time_check_would() {
    let server = Server::start();
    let mut con = server.connect();
    // States whose `remaining` does not move within a few milliseconds.
    for (i, algorithm) in ALGORITHMS.iter().enumerate() {
        let key = format!("peek:retry:{i}");
        five(&mut con, &call("RATELIMIT.CHECK", &key, "3", algorithm));
        let before = snapshot(&mut con, &key);
        for cost in ["3", "4", "5"] {
            // PEEK first, then the CHECK, which is denied and changes nothing.
            let peeked = timed(&mut con, &call("RATELIMIT.PEEK", &key, cost, algorithm));
            let checked = timed(&mut con, &call("RATELIMIT.CHECK", &key, cost, algorithm));
            let what = format!("{algorithm:?} cost {cost}");
            assert_eq!(peeked.reply[0], 0, "{what}: {:?}", peeked.reply);
            assert_eq!(checked.reply[..3], peeked.reply[..3], "{what}");
            assert!(peeked.reply[3] > 0, "{what}: {:?}", peeked.reply);
            assert_same_instant(&what, 3, &peeked, &checked);
            assert_same_instant(&what, 4, &peeked, &checked);
        }
        assert_eq!(snapshot(&mut con, &key), before, "{algorithm:?}");
        // And a cost that fits: allowed by both; PEEK keeps the units.
        let peeked = five(&mut con, &call("RATELIMIT.PEEK", &key, "2", algorithm));
        let checked = five(&mut con, &call("RATELIMIT.CHECK", &key, "2", algorithm));
        assert_eq!(peeked[..4], [1, 2, 5, -1], "{algorithm:?}");
        assert_eq!(checked[..4], [1, 0, 5, -1], "{algorithm:?}");
    }
}

#[test]
fn peek_works_on_a_read_only_replica() {
    let (master, replicas) = master_with_replicas(vec![Server::builder()]);
    let replica = &replicas[0];
    let mut con = master.connect();
    let mut rcon = replica.connect();
    let read_only: Vec<String> = run(&mut rcon, &["CONFIG", "GET", "replica-read-only"]);
    assert_eq!(read_only, ["replica-read-only", "yes"]);

    for (i, algorithm) in ALGORITHMS.iter().enumerate() {
        let key = format!("peek:replica:{i}");
        five(&mut con, &call("RATELIMIT.CHECK", &key, "3", algorithm));
    }
    wait_replicas(&mut con, 1);
    for (i, algorithm) in ALGORITHMS.iter().enumerate() {
        let key = format!("peek:replica:{i}");
        for cost in ["0", "1", "2", "4"] {
            let on_master = timed(&mut con, &call("RATELIMIT.PEEK", &key, cost, algorithm));
            let on_replica = timed(&mut rcon, &call("RATELIMIT.PEEK", &key, cost, algorithm));
            let what = format!("{key} {algorithm:?} cost {cost}");
            assert_eq!(on_replica.reply[..3], on_master.reply[..3], "{what}");
            assert_eq!(on_master.reply[1], 2, "{what}");
            assert_same_instant(&what, 3, &on_master, &on_replica);
            assert_same_instant(&what, 4, &on_master, &on_replica);
        }
        assert_eq!(get_str(&mut rcon, &key), get_str(&mut con, &key));
        assert_eq!(pexpiretime(&mut rcon, &key), pexpiretime(&mut con, &key));
    }
    // Missing keys too, and nothing is created.
    assert_eq!(
        five(
            &mut rcon,
            &["RATELIMIT.PEEK", "peek:replica:none", "5", "60"]
        ),
        [1, 5, 5, -1, 0]
    );
    // Read-only scripts on the replica.
    if common::has_read_only_scripts(&mut rcon, "PEEK in EVAL_RO on a replica") {
        let reply: Vec<i64> = redis::cmd("EVAL_RO")
            .arg("return redis.call('RATELIMIT.PEEK', KEYS[1], '5', '60')")
            .arg(1)
            .arg("peek:replica:0")
            .query(&mut rcon)
            .unwrap();
        assert_eq!(reply[..4], [1, 2, 5, -1]);
    }

    // CHECK is refused there.
    let err = error_of(raw(
        &mut rcon,
        &[b"RATELIMIT.CHECK", b"peek:replica:0", b"5", b"60"],
    ));
    assert!(err.starts_with("READONLY"), "{err}");
    assert!(!exists(&mut rcon, "peek:replica:none"));
    assert!(!exists(&mut con, "peek:replica:none"));
}

#[test]
fn peek_runs_in_read_only_scripts() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "peek:script";
    if !common::has_read_only_scripts(&mut con, "the whole test") {
        return;
    }
    five(&mut con, &["RATELIMIT.CHECK", key, "5", "60", "COST", "2"]);
    let before = snapshot(&mut con, key);

    let peek = "return redis.call('RATELIMIT.PEEK', KEYS[1], '5', '60')";
    let reply: Vec<i64> = redis::cmd("EVAL_RO")
        .arg(peek)
        .arg(1)
        .arg(key)
        .query(&mut con)
        .unwrap();
    assert_eq!(reply[..4], [1, 3, 5, -1]);
    let reply: Vec<i64> = redis::cmd("EVAL")
        .arg(format!("#!lua flags=no-writes\n{peek}"))
        .arg(1)
        .arg(key)
        .query(&mut con)
        .unwrap();
    assert_eq!(reply[..4], [1, 3, 5, -1]);

    // A function flagged no-writes, called with FCALL_RO.
    let library = "#!lua name=peeklib
        redis.register_function{
            function_name = 'peek',
            callback = function(keys, args)
                return redis.call('RATELIMIT.PEEK', keys[1], args[1], args[2], 'ALGORITHM', 'SLIDING')
            end,
            flags = {'no-writes'}
        }";
    let _: String = run(&mut con, &["FUNCTION", "LOAD", library]);
    let reply: Vec<i64> = run(&mut con, &["FCALL_RO", "peek", "1", "peek:fn", "5", "60"]);
    assert_eq!(reply, [1, 5, 5, -1, 0]);
    assert!(!exists(&mut con, "peek:fn"));

    // CHECK is refused in the same places, and creates nothing.
    let check = "return redis.call('RATELIMIT.CHECK', KEYS[1], '5', '60')";
    let err = error_of(
        redis::cmd("EVAL_RO")
            .arg(check)
            .arg(1)
            .arg("peek:script:ro")
            .query(&mut con),
    );
    assert!(err.contains("Write commands are not allowed"), "{err}");
    let err = error_of(
        redis::cmd("EVAL")
            .arg(format!("#!lua flags=no-writes\n{check}"))
            .arg(1)
            .arg("peek:script:ro")
            .query(&mut con),
    );
    assert!(err.contains("Write commands are not allowed"), "{err}");
    assert!(!exists(&mut con, "peek:script:ro"));
    assert_eq!(snapshot(&mut con, key), before);
}

#[test]
fn peek_declares_itself_read_only_and_fast() {
    let server = Server::start();
    let mut con = server.connect();
    let info: Vec<Value> = run(&mut con, &["COMMAND", "INFO", "ratelimit.peek"]);
    let Some(Value::Array(entry)) = info.first() else {
        panic!("COMMAND INFO: {info:?}");
    };
    let Value::Array(flags) = &entry[2] else {
        panic!("flags: {entry:?}");
    };
    let flags: BTreeSet<String> = flags
        .iter()
        .map(|f| match f {
            Value::SimpleString(s) => s.clone(),
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("flag {other:?}"),
        })
        .collect();
    for flag in ["readonly", "fast"] {
        assert!(flags.contains(flag), "{flag} missing from {flags:?}");
    }
    for flag in ["write", "denyoom"] {
        assert!(!flags.contains(flag), "{flag} in {flags:?}");
    }
    assert_eq!(entry[3..6], [Value::Int(1), Value::Int(1), Value::Int(1)]);
    let keys: Vec<String> = run(
        &mut con,
        &[
            "COMMAND",
            "GETKEYS",
            "RATELIMIT.PEEK",
            "k",
            "5",
            "60",
            "COST",
            "1",
        ],
    );
    assert_eq!(keys, ["k"]);

    // Not `deny-oom`: it answers over maxmemory, where CHECK is refused.
    let _: () = run(&mut con, &["CONFIG", "SET", "maxmemory", "1"]);
    let err = error_of(raw(&mut con, &[b"RATELIMIT.CHECK", b"oom", b"5", b"60"]));
    assert!(err.starts_with("OOM "), "{err}");
    assert_eq!(
        five(&mut con, &["RATELIMIT.PEEK", "oom", "5", "60"]),
        [1, 5, 5, -1, 0]
    );
    let _: () = run(&mut con, &["CONFIG", "SET", "maxmemory", "0"]);
}

#[test]
fn peek_refuses_bad_arguments_and_foreign_keys() {
    let server = Server::start();
    let mut con = server.connect();
    five(&mut con, &["RATELIMIT.CHECK", "pk:fixed", "5", "60"]);
    five(
        &mut con,
        &[
            "RATELIMIT.CHECK",
            "pk:sliding",
            "5",
            "60",
            "ALGORITHM",
            "SLIDING",
        ],
    );
    five(
        &mut con,
        &[
            "RATELIMIT.CHECK",
            "pk:token",
            "5",
            "60",
            "ALGORITHM",
            "TOKEN",
        ],
    );
    five(&mut con, &["RATELIMIT.THROTTLE", "pk:gcra", "4", "5", "60"]);
    let _: () = run(&mut con, &["SET", "pk:hello", "hello"]);
    let _: i64 = run(&mut con, &["RPUSH", "pk:list", "a"]);
    let keys = [
        "pk:fixed",
        "pk:sliding",
        "pk:token",
        "pk:gcra",
        "pk:hello",
        "pk:list",
    ];
    let before: Vec<_> = keys.iter().map(|k| snapshot(&mut con, k)).collect();
    for (i, algorithm) in ALGORITHMS.iter().enumerate() {
        for (j, key) in keys.iter().enumerate() {
            if i == j {
                continue;
            }
            for cost in ["0", "1"] {
                let args = call("RATELIMIT.PEEK", key, cost, algorithm);
                let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
                assert_eq!(error_of(raw(&mut con, &bytes)), WRONGTYPE, "{args:?}");
            }
        }
    }
    let after: Vec<_> = keys.iter().map(|k| snapshot(&mut con, k)).collect();
    assert_eq!(after, before);

    let cases: &[(&[&[u8]], &str)] = &[
        (
            &[b"RATELIMIT.PEEK", b"pk:x", b"5"],
            "ERR wrong number of arguments for 'ratelimit.peek' command",
        ),
        (
            &[b"RATELIMIT.PEEK", b"pk:x", b"0", b"60"],
            "ERR limit must be a positive integer (at most 1000000000000000)",
        ),
        (
            &[b"RATELIMIT.PEEK", b"pk:x", b"5", b"60", b"COST"],
            "ERR syntax error",
        ),
        (
            &[
                b"RATELIMIT.PEEK",
                b"pk:x",
                b"5",
                b"60",
                b"ALGORITHM",
                b"LEAKY",
            ],
            "ERR ALGORITHM must be FIXED, SLIDING or TOKEN",
        ),
        (
            &[b"RATELIMIT.PEEK", b"pk:x", b"5", b"60", b"BURST", b"3"],
            "ERR BURST is only valid with ALGORITHM TOKEN",
        ),
    ];
    for (args, expected) in cases {
        assert_eq!(error_of(raw(&mut con, args)), *expected, "{args:?}");
    }
    assert!(!exists(&mut con, "pk:x"));
}
