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
    algorithms, check, dumped, error_of, exists, get_str, make_one_of_each, master_with_replicas,
    not_a_limiter, peek, pexpiretime, raw, run, timed, wait_replicas, wrong_algorithm, Decision,
    Limiter, Server, Timed,
};
use redis::{ConnectionLike, Value};

/// Asserts that a time in both replies (picked by `time`) names the same
/// instant (or that both name none: -1 for no retry time, 0 for nothing to
/// reset).
fn assert_same_instant(
    what: &str,
    a: &Timed<Decision>,
    b: &Timed<Decision>,
    time: impl Fn(&Decision) -> i64,
) {
    let (ta, tb) = (time(&a.reply), time(&b.reply));
    if ta <= 0 || tb <= 0 {
        assert_eq!(ta, tb, "{what}: {:?} and {:?}", a.reply, b.reply);
        return;
    }
    let (a_from, a_to) = (a.before + ta, a.after + ta);
    let (b_from, b_to) = (b.before + tb, b.after + tb);
    assert!(
        a_from <= b_to && b_from <= a_to,
        "{what}: [{a_from}, {a_to}] in {:?} but [{b_from}, {b_to}] in {:?}",
        a.reply,
        b.reply
    );
}

/// Asserts that both replies name the same retry and reset instants.
fn assert_same_instants(what: &str, a: &Timed<Decision>, b: &Timed<Decision>) {
    assert_same_instant(&format!("{what}: retry"), a, b, |d| d.retry_after_ms);
    assert_same_instant(&format!("{what}: reset"), a, b, |d| d.reset_after_ms);
}

/// CHECK's algorithms, 5 units a minute.
fn limiters() -> Vec<Limiter> {
    algorithms().iter().map(|k| k.limiter(5, 60)).collect()
}

/// Runs `args` (CHECK or PEEK) between two readings of the server's clock.
fn timed_call(con: &mut dyn ConnectionLike, args: &[String]) -> Timed<Decision> {
    timed(con, |con| run(con, args))
}

#[test]
fn peek_on_a_missing_key_creates_nothing() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "peek:missing";
    // The default algorithm, then each by name.
    let mut namings: Vec<Vec<&str>> = vec![vec![]];
    namings.extend(algorithms().iter().map(|k| vec!["ALGORITHM", k.name]));
    for naming in &namings {
        let costing = |cost| [&["COST", cost][..], naming].concat();
        assert_eq!(
            peek(&mut con, key, 5, 60, &costing("1")),
            Decision::allowed(5, 5, 0),
            "{naming:?}"
        );
        assert_eq!(
            peek(&mut con, key, 5, 60, &costing("5")),
            Decision::allowed(5, 5, 0),
            "{naming:?}"
        );
        // A cost that can never fit: not allowed, no retry time.
        assert_eq!(
            peek(&mut con, key, 5, 60, &costing("6")),
            Decision::denied(5, 5, -1, 0),
            "{naming:?}"
        );
        assert_eq!(peek(&mut con, key, 5, 60, &[]), Decision::allowed(5, 5, 0));
    }
    assert_eq!(
        peek(&mut con, key, 5, 60, &["ALGORITHM", "TOKEN", "BURST", "8"]),
        Decision::allowed(8, 5, 0)
    );
    assert_eq!(run::<i64>(&mut con, &["DBSIZE"]), 0);
}

#[test]
fn peek_reports_the_state_without_deducting() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "peek:fixed";
    check(&mut con, key, 5, 60, &[]);
    check(&mut con, key, 5, 60, &[]);
    let end = pexpiretime(&mut con, key);

    // Three left, and they stay three however often one looks.
    for _ in 0..3 {
        let t = timed(&mut con, |con| peek(con, key, 5, 60, &[]));
        assert_eq!(t.reply.without_reset(), (true, 3, 5, -1), "{:?}", t.reply);
        let now = end - t.reply.reset_after_ms;
        assert!((t.before..=t.after).contains(&now), "{:?}", t.reply);
    }
    // A cost that fits: allowed, still nothing deducted.
    assert_eq!(
        peek(&mut con, key, 5, 60, &["COST", "3"]).without_reset(),
        (true, 3, 5, -1)
    );
    // One that does not: when the window ends, as CHECK says.
    let peeked = timed(&mut con, |con| peek(con, key, 5, 60, &["COST", "4"]));
    let checked = timed(&mut con, |con| check(con, key, 5, 60, &["COST", "4"]));
    assert_eq!(peeked.reply.counts(), (false, 3, 5));
    assert_eq!(checked.reply.counts(), peeked.reply.counts());
    assert_same_instants("fixed", &peeked, &checked);
    let now = end - peeked.reply.retry_after_ms;
    assert!((peeked.before..=peeked.after).contains(&now));

    // The peeks counted nothing: CHECK goes on from 2.
    assert_eq!(
        check(&mut con, key, 5, 60, &[]).without_reset(),
        (true, 2, 5, -1)
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
    let sliding = ["ALGORITHM", "SLIDING"];
    check(&mut con, key, 5, 60, &["ALGORITHM", "SLIDING", "COST", "2"]);
    let window_end = pexpiretime(&mut con, key) - 60_000;
    let look = timed(&mut con, |con| peek(con, key, 5, 60, &sliding));
    if look.after < window_end {
        assert_eq!(look.reply.without_reset(), (true, 3, 5, -1));
        // Empty once the next window is over.
        let now = pexpiretime(&mut con, key) - look.reply.reset_after_ms;
        assert!(
            (look.before..=look.after).contains(&now),
            "{:?}",
            look.reply
        );
        // Four more would fit only once the 2 weigh 1 at most: half way
        // into the next window.
        let four = timed(&mut con, |con| {
            peek(con, key, 5, 60, &["ALGORITHM", "SLIDING", "COST", "4"])
        });
        assert_eq!(four.reply.counts(), (false, 3, 5));
        let at = window_end + 30_000 - four.reply.retry_after_ms;
        assert!((four.before..=four.after).contains(&at), "{:?}", four.reply);
    }
    assert_eq!(get_str(&mut con, key).as_deref(), Some("S0:2"));

    // Token bucket of 5, one token a minute.
    let key = "peek:token";
    let bucket = ["ALGORITHM", "TOKEN", "BURST", "5"];
    let taken = timed(&mut con, |con| {
        check(
            con,
            key,
            1,
            60,
            &["ALGORITHM", "TOKEN", "BURST", "5", "COST", "5"],
        )
    });
    assert_eq!(taken.reply, Decision::allowed(0, 1, 300_000));
    let full_at = pexpiretime(&mut con, key);
    let look = timed(&mut con, |con| peek(con, key, 1, 60, &bucket));
    assert_eq!(look.reply.counts(), (false, 0, 1));
    let first_token = full_at - 4 * 60_000;
    assert!((look.before..=look.after).contains(&(first_token - look.reply.retry_after_ms)));
    assert!((look.before..=look.after).contains(&(full_at - look.reply.reset_after_ms)));
    // Looking costs nothing.
    assert_eq!(
        peek(
            &mut con,
            key,
            1,
            60,
            &["ALGORITHM", "TOKEN", "BURST", "5", "COST", "0"]
        )
        .without_reset(),
        (true, 0, 1, -1)
    );
    assert_eq!(get_str(&mut con, key).as_deref(), Some("T0"));
    assert_eq!(pexpiretime(&mut con, key), full_at);

    // Fixed window over its limit (limit lowered): nothing fits.
    let key = "peek:over";
    let _: () = run(&mut con, &["SET", key, "9", "PX", "60000"]);
    let over = peek(&mut con, key, 5, 60, &[]);
    assert_eq!(over.counts(), (false, 0, 5));
    assert!(
        over.retry_after_ms > 0
            && over.retry_after_ms <= 60_000
            && over.retry_after_ms == over.reset_after_ms,
        "{over:?}"
    );
}

#[test]
fn peek_changes_nothing_in_any_algorithm() {
    let server = Server::start();
    let mut con = server.connect();
    let mut watcher = server.connect();
    for limiter in limiters() {
        let key = format!("peek:still:{}", limiter.kind.lower());
        limiter.call(&mut con, &limiter.take(&key, 2));
        let before = dumped(&mut con, &key);

        // A watched key stays untouched through any peek: EXEC runs.
        let _: () = run(&mut watcher, &["WATCH", &key]);
        for cost in [0, 1, 3, 4, 5, 6, 1000] {
            limiter.call(&mut con, &limiter.look(&key, cost));
        }
        let result: Option<(i64,)> = redis::pipe()
            .atomic()
            .cmd("EXISTS")
            .arg(&key)
            .query(&mut watcher)
            .unwrap();
        assert_eq!(result, Some((1,)), "EXEC aborted: a peek touched {key}");
        assert_eq!(dumped(&mut con, &key), before, "{}", limiter.kind.name);
    }
}

#[test]
fn peek_names_the_retry_time_check_would() {
    let server = Server::start();
    let mut con = server.connect();
    // States whose `remaining` does not move within a few milliseconds.
    for limiter in limiters() {
        let name = limiter.kind.name;
        let key = format!("peek:retry:{}", limiter.kind.lower());
        limiter.call(&mut con, &limiter.take(&key, 3));
        let before = dumped(&mut con, &key);
        for cost in [3, 4, 5] {
            // PEEK first, then the CHECK, which is denied and changes nothing.
            let peeked = timed_call(&mut con, &limiter.look(&key, cost));
            let checked = timed_call(&mut con, &limiter.take(&key, cost));
            let what = format!("{name} cost {cost}");
            assert!(!peeked.reply.allowed, "{what}: {:?}", peeked.reply);
            assert_eq!(checked.reply.counts(), peeked.reply.counts(), "{what}");
            assert!(
                peeked.reply.retry_after_ms > 0,
                "{what}: {:?}",
                peeked.reply
            );
            assert_same_instants(&what, &peeked, &checked);
        }
        assert_eq!(dumped(&mut con, &key), before, "{name}");
        // And a cost that fits: allowed by both; PEEK keeps the units.
        let peeked: Decision = run(&mut con, &limiter.look(&key, 2));
        let checked: Decision = run(&mut con, &limiter.take(&key, 2));
        assert_eq!(peeked.without_reset(), (true, 2, 5, -1), "{name}");
        assert_eq!(checked.without_reset(), (true, 0, 5, -1), "{name}");
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

    let key_of = |limiter: &Limiter| format!("peek:replica:{}", limiter.kind.lower());
    for limiter in limiters() {
        limiter.call(&mut con, &limiter.take(&key_of(&limiter), 3));
    }
    wait_replicas(&mut con, 1);
    for limiter in limiters() {
        let key = key_of(&limiter);
        for cost in [0, 1, 2, 4] {
            let on_master = timed_call(&mut con, &limiter.look(&key, cost));
            let on_replica = timed_call(&mut rcon, &limiter.look(&key, cost));
            let what = format!("{key} {} cost {cost}", limiter.kind.name);
            assert_eq!(
                on_replica.reply.counts(),
                on_master.reply.counts(),
                "{what}"
            );
            assert_eq!(on_master.reply.remaining, 2, "{what}");
            assert_same_instants(&what, &on_master, &on_replica);
        }
        assert_eq!(get_str(&mut rcon, &key), get_str(&mut con, &key));
        assert_eq!(pexpiretime(&mut rcon, &key), pexpiretime(&mut con, &key));
    }
    // Missing keys too, and nothing is created.
    assert_eq!(
        peek(&mut rcon, "peek:replica:none", 5, 60, &[]),
        Decision::allowed(5, 5, 0)
    );
    // Read-only scripts on the replica.
    if common::has_read_only_scripts(&mut rcon, "PEEK in EVAL_RO on a replica") {
        let reply: Decision = redis::cmd("EVAL_RO")
            .arg("return redis.call('RATELIMIT.PEEK', KEYS[1], '5', '60')")
            .arg(1)
            .arg("peek:replica:fixed")
            .query(&mut rcon)
            .unwrap();
        assert_eq!(reply.without_reset(), (true, 2, 5, -1));
    }

    // CHECK is refused there.
    let err = error_of(raw(
        &mut rcon,
        &[b"RATELIMIT.CHECK", b"peek:replica:fixed", b"5", b"60"],
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
    check(&mut con, key, 5, 60, &["COST", "2"]);
    let before = dumped(&mut con, key);

    let peek = "return redis.call('RATELIMIT.PEEK', KEYS[1], '5', '60')";
    let reply: Decision = redis::cmd("EVAL_RO")
        .arg(peek)
        .arg(1)
        .arg(key)
        .query(&mut con)
        .unwrap();
    assert_eq!(reply.without_reset(), (true, 3, 5, -1));
    let reply: Decision = redis::cmd("EVAL")
        .arg(format!("#!lua flags=no-writes\n{peek}"))
        .arg(1)
        .arg(key)
        .query(&mut con)
        .unwrap();
    assert_eq!(reply.without_reset(), (true, 3, 5, -1));

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
    let reply: Decision = run(&mut con, &["FCALL_RO", "peek", "1", "peek:fn", "5", "60"]);
    assert_eq!(reply, Decision::allowed(5, 5, 0));
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
    assert_eq!(dumped(&mut con, key), before);
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
        peek(&mut con, "oom", 5, 60, &[]),
        Decision::allowed(5, 5, 0)
    );
    let _: () = run(&mut con, &["CONFIG", "SET", "maxmemory", "0"]);
}

#[test]
fn peek_refuses_bad_arguments_and_foreign_keys() {
    let server = Server::start();
    let mut con = server.connect();
    let mut keys: Vec<(String, Option<&str>)> = make_one_of_each(&mut con, "pk")
        .into_iter()
        .map(|(limiter, key)| (key, Some(limiter.kind.name)))
        .collect();
    let _: () = run(&mut con, &["SET", "pk:hello", "hello"]);
    let _: i64 = run(&mut con, &["RPUSH", "pk:list", "a"]);
    keys.extend([
        ("pk:hello".to_string(), None),
        ("pk:list".to_string(), None),
    ]);
    let before: Vec<_> = keys.iter().map(|(k, _)| dumped(&mut con, k)).collect();
    for limiter in limiters() {
        let wanted = limiter.kind.name;
        for (key, held) in &keys {
            if *held == Some(wanted) {
                continue;
            }
            let expected = match held {
                Some(held) => wrong_algorithm(held, wanted),
                None => not_a_limiter(&mut con, key),
            };
            for cost in [0, 1] {
                let args = limiter.look(key, cost);
                let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
                assert_eq!(error_of(raw(&mut con, &bytes)), expected, "{args:?}");
            }
        }
    }
    let after: Vec<_> = keys.iter().map(|(k, _)| dumped(&mut con, k)).collect();
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
            "ERR syntax error: COST needs a value",
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
