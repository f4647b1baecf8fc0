//! RATELIMIT.THROTTLE (and CL.THROTTLE, on request) against a real server:
//! redis-cell's answers, integer for integer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    all_keys, dumped, error_of, exists, get, get_str, make_one_of_each, not_a_limiter, pexpiretime,
    raw, run, server_ms, throttle, wrong_algorithm, Server, Throttled, NOT_LIMITER_STATE, THROTTLE,
};
use redis::{Connection, Value};

const ERR_ARITY: &str = "ERR wrong number of arguments for 'ratelimit.throttle' command";
const ERR_MAX_BURST: &str =
    "ERR max_burst must be a non-negative integer (at most 999999999999999)";
const ERR_COUNT: &str =
    "ERR count_per_period must be a positive integer (at most 1000000000000000)";
const ERR_PERIOD: &str =
    "ERR period must be a positive integer number of seconds (at most 1000000000)";
const ERR_QUANTITY: &str = "ERR quantity must be a non-negative integer (at most 1000000000000000)";
const ERR_RATE: &str = "ERR count_per_period is too high for period: the emission interval would be under 1 nanosecond";
const ERR_TOO_LARGE: &str =
    "ERR max_burst is too large for this rate: a full bucket must refill within 1000000000 seconds";

/// Whole seconds, plus one when at least a millisecond is left over.
fn seconds_rounded_up(ns: i64) -> i64 {
    ns / 1_000_000_000 + i64::from(ns % 1_000_000_000 >= 1_000_000)
}

/// redis-cell's own sequence: a bucket of 5 (max_burst 4), one per second,
/// called back to back, by `command`.
fn assert_redis_cell_sequence(con: &mut Connection, command: &str, key: &str) {
    let call = |con: &mut Connection, quantity: &str| -> Throttled {
        run(con, &[command, key, "4", "1", "1", quantity])
    };
    let before = server_ms(con);
    // More than the bucket holds: refused, and never possible.
    assert_eq!(call(con, "6"), Throttled::limited(5, 5, -1, 0));
    assert!(!exists(con, key), "a refused call created the key");
    let mut replies = Vec::new();
    for _ in 0..6 {
        replies.push(call(con, "1"));
    }
    let after = server_ms(con);
    assert!(
        after - before < 1_000,
        "the calls took {} ms",
        after - before
    );
    assert_eq!(
        replies,
        [
            Throttled::admitted(5, 4, 1),
            Throttled::admitted(5, 3, 2),
            Throttled::admitted(5, 2, 3),
            Throttled::admitted(5, 1, 4),
            Throttled::admitted(5, 0, 5),
            Throttled::limited(5, 0, 1, 5),
        ]
    );
    // The theoretical arrival time, five seconds after the first admitted
    // call, is the expiry; the value is what is left below the millisecond.
    assert_eq!(get_str(con, key).as_deref(), Some("G0"));
    let first = pexpiretime(con, key) - 5_000;
    assert!(
        (before..=after).contains(&first),
        "{first} not in [{before}, {after}]"
    );
}

#[test]
fn throttle_answers_as_redis_cell_does() {
    let server = Server::start();
    let mut con = server.connect();
    // The example of redis-cell's README.
    assert_eq!(
        throttle(&mut con, "user123", 15, 30, 60, Some(1)),
        Throttled::admitted(16, 15, 2)
    );
    // Without a quantity: 1.
    assert_eq!(
        throttle(&mut con, "user123", 15, 30, 60, None),
        Throttled::admitted(16, 14, 4)
    );
    assert_redis_cell_sequence(&mut con, "RATELIMIT.THROTTLE", "cell");
}

#[test]
fn throttle_stores_the_arrival_time_to_the_nanosecond() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "gcra:thirds";
    // 3 per second: an interval of 333 333 333 ns; the expiry is rounded up
    // to the millisecond and the value holds the nanoseconds before it.
    let before = server_ms(&mut con);
    assert_eq!(
        throttle(&mut con, key, 2, 3, 1, None),
        Throttled::admitted(3, 2, 1)
    );
    let after = server_ms(&mut con);
    assert_eq!(get_str(&mut con, key).as_deref(), Some("G666667"));
    let start = pexpiretime(&mut con, key) - 334;
    assert!((before..=after).contains(&start));
    let second = throttle(&mut con, key, 2, 3, 1, None);
    let third = throttle(&mut con, key, 2, 3, 1, None);
    let now = server_ms(&mut con);
    if now - start < 333 {
        assert_eq!(second, Throttled::admitted(3, 1, 1));
        assert_eq!(third, Throttled::admitted(3, 0, 1));
        // Zero-padded to the width of the value it replaced.
        assert_eq!(get_str(&mut con, key).as_deref(), Some("G000001"));
        assert_eq!(pexpiretime(&mut con, key), start + 1_000);
    }
}

#[test]
fn throttle_quantity_zero_only_looks() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "look";
    assert_eq!(
        throttle(&mut con, key, 4, 1, 1, Some(0)),
        Throttled::admitted(5, 5, 0)
    );
    assert!(!exists(&mut con, key));

    assert_eq!(
        throttle(&mut con, key, 4, 1, 60, Some(2)),
        Throttled::admitted(5, 3, 120)
    );
    let before = dumped(&mut con, key);
    for _ in 0..3 {
        assert_eq!(
            throttle(&mut con, key, 4, 1, 60, Some(0)),
            Throttled::admitted(5, 3, 120)
        );
    }
    // A refused quantity changes nothing either.
    let refused = throttle(&mut con, key, 4, 1, 60, Some(4));
    assert_eq!(refused.counts(), (true, 5, 3), "{refused:?}");
    assert_eq!(refused.retry_after_s, 60);
    assert_eq!(dumped(&mut con, key), before);
    assert_eq!(run::<i64>(&mut con, &["DBSIZE"]), 1);
}

#[test]
fn throttle_rounds_times_up_to_the_second() {
    let server = Server::start();
    let mut con = server.connect();
    let cases: &[(u64, u64, i64)] = &[
        // 1.0005 s: less than a millisecond over, 1.
        (1999, 2000, 1_000_500_250),
        // 1.001 s: a millisecond over, 2.
        (1000, 1001, 1_001_000_000),
        // 0.333 s: 1.
        (3, 1, 333_333_333),
        // Exactly 2 s: 2.
        (1, 2, 2_000_000_000),
    ];
    for (i, &(count, period, interval_ns)) in cases.iter().enumerate() {
        let key = format!("round:{i}");
        // max_burst 0: one request, then the next waits an interval.
        let first = throttle(&mut con, &key, 0, count, period, None);
        let reset = seconds_rounded_up(interval_ns);
        assert_eq!(first, Throttled::admitted(1, 0, reset), "{count}/{period}");
        let tat_ns = pexpiretime(&mut con, &key) * 1_000_000
            - get_str(&mut con, &key).unwrap()[1..]
                .parse::<i64>()
                .unwrap();
        let before = server_ms(&mut con);
        let second = throttle(&mut con, &key, 0, count, period, None);
        let after = server_ms(&mut con);
        // Refused until the arrival time, which is also when it is empty.
        let found = (before..=after).any(|now| {
            let left = seconds_rounded_up(tat_ns - now * 1_000_000);
            second == Throttled::limited(1, 0, left, left)
        });
        assert!(found, "{count}/{period}: {second:?}, arrival {tat_ns} ns");
    }
}

#[test]
fn throttle_rejects_bad_arguments_with_exact_errors() {
    let server = Server::start();
    let mut con = server.connect();
    let k = "bad";
    let cases: &[(&[&str], &str)] = &[
        (&[], ERR_ARITY),
        (&[k], ERR_ARITY),
        (&[k, "15"], ERR_ARITY),
        (&[k, "15", "30"], ERR_ARITY),
        (&[k, "15", "30", "60", "1", "1"], ERR_ARITY),
        (&[k, "-1", "30", "60"], ERR_MAX_BURST),
        (&[k, "x", "30", "60"], ERR_MAX_BURST),
        (&[k, "1.5", "30", "60"], ERR_MAX_BURST),
        (&[k, "1000000000000000", "30", "60"], ERR_MAX_BURST),
        (&[k, "15", "0", "60"], ERR_COUNT),
        (&[k, "15", "-30", "60"], ERR_COUNT),
        (&[k, "15", "1000000000000001", "60"], ERR_COUNT),
        (&[k, "15", "thirty", "60"], ERR_COUNT),
        (&[k, "15", "30", "0"], ERR_PERIOD),
        (&[k, "15", "30", "1000000001"], ERR_PERIOD),
        (&[k, "15", "30", "60s"], ERR_PERIOD),
        (&[k, "15", "30", "60", "-1"], ERR_QUANTITY),
        (&[k, "15", "30", "60", "1.5"], ERR_QUANTITY),
        (&[k, "15", "30", "60", "1000000000000001"], ERR_QUANTITY),
        (&[k, "0", "2000000000", "1"], ERR_RATE),
        (&[k, "1", "1", "1000000000"], ERR_TOO_LARGE),
        (&[k, "999999999999999", "1", "1"], ERR_TOO_LARGE),
    ];
    for (args, expected) in cases {
        let mut all: Vec<&[u8]> = vec![b"RATELIMIT.THROTTLE"];
        all.extend(args.iter().map(|a| a.as_bytes()));
        assert_eq!(error_of(raw(&mut con, &all)), *expected, "{args:?}");
    }
    assert!(!exists(&mut con, k), "a refused call created the key");

    // The bounds themselves are accepted.
    assert_eq!(
        throttle(&mut con, "edge:1", 0, 1_000_000_000, 1, None),
        Throttled::admitted(1, 0, 0)
    );
    assert_eq!(
        throttle(&mut con, "edge:2", 0, 1, 1_000_000_000, None),
        Throttled::admitted(1, 0, 1_000_000_000)
    );
    assert_eq!(
        throttle(
            &mut con,
            "edge:3",
            999_999_999_999_999,
            1_000_000_000,
            1,
            Some(0)
        ),
        Throttled::admitted(1_000_000_000_000_000, 1_000_000_000_000_000, 0)
    );
}

#[test]
fn throttle_refuses_foreign_values_without_crashing() {
    let server = Server::builder().module_arg("CL-THROTTLE", "yes").start();
    let mut con = server.connect();
    // redis-cell aborts the server on exactly this.
    let _: () = run(&mut con, &["SET", "k", "hello"]);
    for command in ["RATELIMIT.THROTTLE", "CL.THROTTLE"] {
        assert_eq!(
            error_of(raw(
                &mut con,
                &[command.as_bytes(), b"k", b"15", b"30", b"60"]
            )),
            NOT_LIMITER_STATE
        );
        assert_eq!(run::<String>(&mut con, &["PING"]), "PONG");
    }
    assert_eq!(get_str(&mut con, "k").as_deref(), Some("hello"));

    // Other limiters' state, malformed state and other types.
    let mut keys: Vec<(String, Option<&str>)> = vec![("k".to_string(), None)];
    for (limiter, key) in make_one_of_each(&mut con, "foreign") {
        if limiter.kind != THROTTLE {
            keys.push((key, Some(limiter.kind.name)));
        }
    }
    let _: () = run(&mut con, &["SET", "g-bad", "G-5", "PX", "100000"]);
    let _: () = run(&mut con, &["SET", "g-empty", "G"]);
    let _: i64 = run(&mut con, &["RPUSH", "list", "a"]);
    keys.extend(["g-bad", "g-empty", "list"].map(|k| (k.to_string(), None)));
    let before: Vec<_> = keys.iter().map(|(k, _)| dumped(&mut con, k)).collect();
    for (key, held) in &keys {
        let expected = match held {
            Some(held) => wrong_algorithm(held, THROTTLE.name),
            None => not_a_limiter(&mut con, key),
        };
        for quantity in ["0", "1", "100"] {
            for command in ["RATELIMIT.THROTTLE", "CL.THROTTLE"] {
                let args: [&[u8]; 6] = [
                    command.as_bytes(),
                    key.as_bytes(),
                    b"15",
                    b"30",
                    b"60",
                    quantity.as_bytes(),
                ];
                assert_eq!(error_of(raw(&mut con, &args)), expected, "{key} {quantity}");
            }
        }
    }
    let after: Vec<_> = keys.iter().map(|(k, _)| dumped(&mut con, k)).collect();
    assert_eq!(after, before);
    assert_eq!(run::<String>(&mut con, &["PING"]), "PONG");
}

#[test]
fn throttle_accepts_non_utf8_keys() {
    let server = Server::start();
    let mut con = server.connect();
    let key: &[u8] = b"\xff\xfe\x00\xc3(";
    let call = |con: &mut Connection| throttle(con, key, 15, 30, 60, None);
    assert_eq!(call(&mut con), Throttled::admitted(16, 15, 2));
    assert_eq!(call(&mut con), Throttled::admitted(16, 14, 4));
    assert_eq!(get(&mut con, key), Some(b"G0".to_vec()));
    assert!(pexpiretime(&mut con, key) > 0);
    assert_eq!(all_keys(&mut con), [key.to_vec()].into_iter().collect());
    let empty = throttle(&mut con, b"", 0, 1, 60, None);
    assert_eq!(empty, Throttled::admitted(1, 0, 60));
    assert_eq!(get(&mut con, ""), Some(b"G0".to_vec()));
}

fn is_unknown_command(con: &mut Connection) -> bool {
    let err = error_of(raw(con, &[b"CL.THROTTLE", b"cl", b"15", b"30", b"60"]));
    err.starts_with("ERR unknown command")
}

#[test]
fn cl_throttle_exists_only_with_the_module_option() {
    // Not by default, nor with `no`.
    let server = Server::start();
    let mut con = server.connect();
    assert!(is_unknown_command(&mut con));
    assert!(!exists(&mut con, "cl"));
    let server = Server::builder().module_arg("CL-THROTTLE", "no").start();
    assert!(is_unknown_command(&mut server.connect()));

    // With `yes`, in any case: the same command under redis-cell's name.
    for (name, value) in [("CL-THROTTLE", "yes"), ("cl-throttle", "YES")] {
        let server = Server::builder().module_arg(name, value).start();
        let mut con = server.connect();
        assert_redis_cell_sequence(&mut con, "CL.THROTTLE", "cell");
        assert!(server.log().contains("cl-throttle yes"), "{}", server.log());

        // Both names work on the same key, as one limiter.
        let both = "both";
        let mut replies = Vec::new();
        for command in ["CL.THROTTLE", "RATELIMIT.THROTTLE", "cl.throttle"] {
            replies.push(run::<Throttled>(
                &mut con,
                &[command, both, "15", "30", "60"],
            ));
        }
        assert_eq!(
            replies,
            [
                Throttled::admitted(16, 15, 2),
                Throttled::admitted(16, 14, 4),
                Throttled::admitted(16, 13, 6)
            ]
        );
        assert_eq!(get_str(&mut con, both).as_deref(), Some("G0"));
        assert_eq!(
            error_of(raw(&mut con, &[b"CL.THROTTLE", b"x", b"15"])),
            "ERR wrong number of arguments for 'cl.throttle' command"
        );

        let info: Vec<Value> = run(&mut con, &["COMMAND", "INFO", "cl.throttle"]);
        let Some(Value::Array(entry)) = info.first() else {
            panic!("COMMAND INFO: {info:?}");
        };
        assert_eq!(entry[3..6], [Value::Int(1), Value::Int(1), Value::Int(1)]);
        let Value::Array(flags) = &entry[2] else {
            panic!("flags: {entry:?}");
        };
        for flag in ["write", "denyoom", "fast"] {
            assert!(
                flags.contains(&Value::SimpleString(flag.to_string())),
                "{flag} missing from {flags:?}"
            );
        }
    }
}

#[test]
fn cl_throttle_bad_module_option_refuses_the_load() {
    let cases = [
        (
            "CL-THROTTLE",
            "maybe",
            "module option CL-THROTTLE must be yes or no",
        ),
        (
            "CL-THROTTLE",
            "1",
            "module option CL-THROTTLE must be yes or no",
        ),
        ("FOO", "bar", "unknown module option FOO"),
    ];
    for (name, value, reason) in cases {
        match Server::builder().module_arg(name, value).try_start() {
            Ok(server) => panic!(
                "the server started with `{name} {value}`:\n{}",
                server.log()
            ),
            Err(log) => {
                assert!(log.contains(reason), "`{name} {value}`; log:\n{log}");
                assert!(
                    log.contains("initialization failed"),
                    "`{name} {value}`; log:\n{log}"
                );
            }
        }
    }
}
