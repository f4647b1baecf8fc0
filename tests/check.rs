//! RATELIMIT.CHECK against a real server.
//!
//! Every test starts its own server and uses its own keys. Timing is checked
//! against the server's clock: a reply's `retry_after_ms`/`reset_after_ms`
//! is compared with the key's absolute expiry (`PEXPIRETIME`) and with the
//! server's `TIME` read just before and just after the command, so no bound
//! depends on how fast this machine is. The only sleeps wait out a window the
//! server itself said was about to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::thread::sleep;
use std::time::Duration;

use common::{
    all_keys, check, dumped, error_of, exists, get, get_str, not_a_limiter, pexpiretime, pttl, raw,
    run, server_ms, timed, Decision, Server, Timed,
};
use redis::{Connection, Value};

/// Added to a server-given wait so that the window has surely ended.
const MARGIN_MS: u64 = 30;

const ERR_LIMIT: &str = "ERR limit must be a positive integer (at most 1000000000000000)";
const ERR_PERIOD: &str =
    "ERR period must be a positive integer number of seconds (at most 1000000000)";
const ERR_COST: &str = "ERR cost must be a non-negative integer (at most 1000000000000000)";
const ERR_ARITY: &str = "ERR wrong number of arguments for 'ratelimit.check' command";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `RATELIMIT.CHECK` with raw byte arguments (after the command name).
fn check_raw(con: &mut Connection, args: &[&[u8]]) -> redis::RedisResult<Value> {
    raw(con, &[&[b"RATELIMIT.CHECK".as_slice()][..], args].concat())
}

/// Asserts that the key's window ends `after_ms` after the command's "now",
/// which was between the readings of `timed`.
fn assert_window_ends_in<T>(con: &mut Connection, key: &str, after_ms: i64, timed: &Timed<T>) {
    let end = pexpiretime(con, key);
    let now = end - after_ms;
    let (before, after) = (timed.before, timed.after);
    assert!(
        (before..=after).contains(&now),
        "{key}: expiry {end} - {after_ms} ms = {now}, but the command ran in [{before}, {after}]"
    );
}

/// Asserts that PTTL, read right now, agrees with `reply_ms` given by a
/// command that ran at or after `before`: the TTL can only have gone down by
/// the time that has passed since.
fn assert_pttl_agrees(con: &mut Connection, key: &str, reply_ms: i64, before: i64) {
    let ttl = pttl(con, key);
    let elapsed = server_ms(con) - before;
    assert!(ttl > 0, "{key}: PTTL {ttl}");
    assert!(
        ttl <= reply_ms && reply_ms - ttl <= elapsed,
        "{key}: PTTL {ttl} vs reply {reply_ms} ms, {elapsed} ms elapsed"
    );
}

/// Text of a reply element (bulk or status string).
fn text(value: &Value) -> String {
    match value {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".to_string(),
        other => panic!("not a string: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Counting, windows, costs
// ---------------------------------------------------------------------------

#[test]
fn check_counts_a_sequence_of_requests_exactly() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "seq";

    let first = timed(&mut con, |con| check(con, key, 3, 60, &[]));
    assert_eq!(first.reply, Decision::allowed(2, 3, 60_000));
    assert_window_ends_in(&mut con, key, 60_000, &first);
    assert_pttl_agrees(&mut con, key, first.reply.reset_after_ms, first.before);
    let end = pexpiretime(&mut con, key);

    for remaining in [1, 0] {
        let t = timed(&mut con, |con| check(con, key, 3, 60, &[]));
        let reply = t.reply;
        assert_eq!(reply.without_reset(), (true, remaining, 3, -1), "{reply:?}");
        assert!(
            reply.reset_after_ms > 0 && reply.reset_after_ms <= 60_000,
            "{reply:?}"
        );
        assert_window_ends_in(&mut con, key, reply.reset_after_ms, &t);
        assert_pttl_agrees(&mut con, key, reply.reset_after_ms, t.before);
        assert_eq!(pexpiretime(&mut con, key), end, "the window end moved");
    }
    assert_eq!(get_str(&mut con, key).as_deref(), Some("3"));

    for _ in 0..3 {
        let t = timed(&mut con, |con| check(con, key, 3, 60, &[]));
        let denied = t.reply;
        let retry = denied.retry_after_ms;
        assert_eq!(denied, Decision::denied(0, 3, retry, retry), "{denied:?}");
        assert!(retry > 0 && retry <= 60_000, "{denied:?}");
        assert_window_ends_in(&mut con, key, retry, &t);
        assert_pttl_agrees(&mut con, key, retry, t.before);
        // A denied request consumes nothing.
        assert_eq!(get_str(&mut con, key).as_deref(), Some("3"));
        assert_eq!(pexpiretime(&mut con, key), end);
    }
}

#[test]
fn check_retry_after_is_the_time_left_in_the_window() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "retry";
    check(&mut con, key, 1, 30, &[]);
    let t = timed(&mut con, |con| check(con, key, 1, 30, &[]));
    let denied = t.reply;
    let retry = denied.retry_after_ms;
    assert_eq!(denied, Decision::denied(0, 1, retry, retry));
    assert!(retry > 0 && retry <= 30_000, "{denied:?}");
    // From the server's view: the expiry is exactly `retry` ms after the
    // command's "now", and PTTL read right after is within the elapsed time.
    assert_window_ends_in(&mut con, key, retry, &t);
    assert_pttl_agrees(&mut con, key, retry, t.before);
}

#[test]
fn check_opens_a_new_window_after_expiry() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "expiry";
    assert_eq!(
        check(&mut con, key, 2, 1, &[]),
        Decision::allowed(1, 2, 1000)
    );
    let old_end = pexpiretime(&mut con, key);
    assert_eq!(
        check(&mut con, key, 2, 1, &[]).without_reset(),
        (true, 0, 2, -1)
    );
    let denied = check(&mut con, key, 2, 1, &[]);
    let retry = denied.retry_after_ms;
    assert_eq!(denied, Decision::denied(0, 2, retry, retry));
    assert!(retry > 0 && retry <= 1000, "{denied:?}");

    sleep(Duration::from_millis(retry as u64 + MARGIN_MS));

    let t = timed(&mut con, |con| check(con, key, 2, 1, &[]));
    assert_eq!(
        t.reply,
        Decision::allowed(1, 2, 1000),
        "no fresh window: {:?}",
        t.reply
    );
    assert_eq!(get_str(&mut con, key).as_deref(), Some("1"));
    assert_window_ends_in(&mut con, key, 1000, &t);
    assert!(pexpiretime(&mut con, key) > old_end);
}

#[test]
fn check_cost_takes_several_units_or_none() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "cost";
    assert_eq!(
        check(&mut con, key, 5, 60, &["COST", "3"]),
        Decision::allowed(2, 5, 60_000)
    );
    let end = pexpiretime(&mut con, key);

    // Does not fit: denied whole, nothing consumed.
    let denied = check(&mut con, key, 5, 60, &["cost", "3"]);
    assert_eq!(denied.counts(), (false, 2, 5), "{denied:?}");
    assert!(
        denied.retry_after_ms > 0 && denied.retry_after_ms <= 60_000,
        "{denied:?}"
    );
    assert_eq!(denied.retry_after_ms, denied.reset_after_ms);
    assert_eq!(get_str(&mut con, key).as_deref(), Some("3"));
    assert_eq!(pexpiretime(&mut con, key), end);

    // Fits exactly (option name in any case).
    let exact = check(&mut con, key, 5, 60, &["CoSt", "2"]);
    assert_eq!(exact.without_reset(), (true, 0, 5, -1), "{exact:?}");
    assert_eq!(get_str(&mut con, key).as_deref(), Some("5"));
    assert_eq!(pexpiretime(&mut con, key), end);

    assert_eq!(
        check(&mut con, key, 5, 60, &["COST", "1"]).counts(),
        (false, 0, 5)
    );
    assert_eq!(get_str(&mut con, key).as_deref(), Some("5"));
}

#[test]
fn check_cost_zero_only_looks() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "look";

    // On a missing key: a normal answer, and no key.
    assert_eq!(
        check(&mut con, key, 5, 60, &["COST", "0"]),
        Decision::allowed(5, 5, 0)
    );
    assert!(!exists(&mut con, key));

    // On a window in progress: reports it, changes nothing.
    check(&mut con, key, 5, 60, &["COST", "2"]);
    let end = pexpiretime(&mut con, key);
    let look = timed(&mut con, |con| check(con, key, 5, 60, &["COST", "0"]));
    assert_eq!(
        look.reply.without_reset(),
        (true, 3, 5, -1),
        "{:?}",
        look.reply
    );
    assert_window_ends_in(&mut con, key, look.reply.reset_after_ms, &look);
    assert_eq!(get_str(&mut con, key).as_deref(), Some("2"));
    assert_eq!(pexpiretime(&mut con, key), end);

    // On a full window: still answered, still nothing written.
    check(&mut con, key, 5, 60, &["COST", "3"]);
    let look = check(&mut con, key, 5, 60, &["COST", "0"]);
    assert_eq!(look.without_reset(), (true, 0, 5, -1), "{look:?}");
    assert_eq!(get_str(&mut con, key).as_deref(), Some("5"));
    assert_eq!(pexpiretime(&mut con, key), end);
}

#[test]
fn check_watch_sees_only_requests_that_change_the_key() {
    let server = Server::start();
    let mut watcher = server.connect();
    let mut other = server.connect();
    let key = "watched";
    check(&mut other, key, 1, 60, &[]);

    // A look and a denied request change nothing: the transaction runs.
    let _: () = run(&mut watcher, &["WATCH", key]);
    check(&mut other, key, 1, 60, &["COST", "0"]);
    check(&mut other, key, 1, 60, &[]);
    let result: Option<(String,)> = redis::pipe()
        .atomic()
        .cmd("GET")
        .arg(key)
        .query(&mut watcher)
        .unwrap();
    assert_eq!(result, Some(("1".to_string(),)));

    // An admitted request changes the key: the transaction is aborted.
    let _: () = run(&mut watcher, &["WATCH", key]);
    check(&mut other, key, 5, 60, &[]);
    let result: Option<(String,)> = redis::pipe()
        .atomic()
        .cmd("GET")
        .arg(key)
        .query(&mut watcher)
        .unwrap();
    assert_eq!(result, None, "EXEC ran although the key changed");
}

#[test]
fn check_cost_above_limit_is_denied_without_retry_time() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "never";
    assert_eq!(
        check(&mut con, key, 5, 60, &["COST", "6"]),
        Decision::denied(5, 5, -1, 0)
    );
    assert!(!exists(&mut con, key));

    // On a window in progress: the count and expiry stay.
    check(&mut con, key, 5, 60, &["COST", "2"]);
    let end = pexpiretime(&mut con, key);
    let denied = timed(&mut con, |con| check(con, key, 5, 60, &["COST", "1000"]));
    assert_eq!(
        denied.reply.without_reset(),
        (false, 3, 5, -1),
        "{:?}",
        denied.reply
    );
    assert_window_ends_in(&mut con, key, denied.reply.reset_after_ms, &denied);
    assert_eq!(get_str(&mut con, key).as_deref(), Some("2"));
    assert_eq!(pexpiretime(&mut con, key), end);
}

// ---------------------------------------------------------------------------
// Storage layout
// ---------------------------------------------------------------------------

#[test]
fn check_stores_a_plain_integer_string_with_the_window_as_ttl() {
    let server = Server::start();
    let mut con = server.connect();

    let key = "layout";
    check(&mut con, key, 5, 60, &[]);
    assert_eq!(get_str(&mut con, key).as_deref(), Some("1"));
    assert_eq!(run::<String>(&mut con, &["TYPE", key]), "string");
    let encoding: String = run(&mut con, &["OBJECT", "ENCODING", key]);
    assert!(
        ["int", "embstr", "raw"].contains(&encoding.as_str()),
        "{encoding}"
    );
    let ttl = pttl(&mut con, key);
    assert!(ttl > 59_000 && ttl <= 60_000, "PTTL {ttl}");

    // INCR treats it as the integer it is, and the limiter counts INCR's unit.
    let end = pexpiretime(&mut con, key);
    assert_eq!(run::<i64>(&mut con, &["INCR", key]), 2);
    assert_eq!(pexpiretime(&mut con, key), end);
    assert_eq!(
        check(&mut con, key, 5, 60, &[]).without_reset(),
        (true, 2, 5, -1)
    );
    assert_eq!(get_str(&mut con, key).as_deref(), Some("3"));
    assert_eq!(pexpiretime(&mut con, key), end);

    // A counter written by SET, without TTL: a window starting now, counting on.
    let bare = "layout-bare";
    let _: () = run(&mut con, &["SET", bare, "3"]);
    let t = timed(&mut con, |con| check(con, bare, 5, 60, &[]));
    assert_eq!(t.reply, Decision::allowed(1, 5, 60_000));
    assert_eq!(get_str(&mut con, bare).as_deref(), Some("4"));
    assert_window_ends_in(&mut con, bare, 60_000, &t);
    let ttl = pttl(&mut con, bare);
    assert!(ttl > 59_000 && ttl <= 60_000, "PTTL {ttl}");

    // "0" without TTL is a counter too.
    let zero = "layout-zero";
    let _: () = run(&mut con, &["SET", zero, "0"]);
    assert_eq!(
        check(&mut con, zero, 5, 60, &[]),
        Decision::allowed(4, 5, 60_000)
    );
    assert_eq!(get_str(&mut con, zero).as_deref(), Some("1"));
    assert!(pttl(&mut con, zero) > 59_000);
}

#[test]
fn check_bare_counter_gets_a_window_only_from_counted_requests() {
    let server = Server::start();
    let mut con = server.connect();

    // Over the limit and denied: the window starts anyway, the count stays.
    let over = "bare-over";
    let _: () = run(&mut con, &["SET", over, "9"]);
    let denied = timed(&mut con, |con| check(con, over, 5, 60, &[]));
    assert_eq!(denied.reply, Decision::denied(0, 5, 60_000, 60_000));
    assert_eq!(get_str(&mut con, over).as_deref(), Some("9"));
    assert_window_ends_in(&mut con, over, 60_000, &denied);
    let ttl = pttl(&mut con, over);
    assert!(ttl > 59_000 && ttl <= 60_000, "PTTL {ttl}");

    // COST 0 looks at a bare counter as a window starting now, and sets no TTL.
    let look = "bare-look";
    let _: () = run(&mut con, &["SET", look, "3"]);
    assert_eq!(
        check(&mut con, look, 5, 60, &["COST", "0"]),
        Decision::allowed(2, 5, 60_000)
    );
    assert_eq!(pttl(&mut con, look), -1);
    assert_eq!(get_str(&mut con, look).as_deref(), Some("3"));

    let look_over = "bare-look-over";
    let _: () = run(&mut con, &["SET", look_over, "9"]);
    assert_eq!(
        check(&mut con, look_over, 5, 60, &["COST", "0"]),
        Decision::denied(0, 5, 60_000, 60_000)
    );
    assert_eq!(pttl(&mut con, look_over), -1);
    assert_eq!(get_str(&mut con, look_over).as_deref(), Some("9"));
}

#[test]
fn check_refuses_keys_that_are_not_counters() {
    let server = Server::start();
    let mut con = server.connect();
    let setups: &[(&str, &[&str])] = &[
        ("wt-list", &["RPUSH", "wt-list", "a", "b"]),
        ("wt-hash", &["HSET", "wt-hash", "f", "1"]),
        ("wt-set", &["SADD", "wt-set", "1"]),
        ("wt-zset", &["ZADD", "wt-zset", "1", "m"]),
        ("wt-stream", &["XADD", "wt-stream", "1-1", "f", "v"]),
        ("wt-hello", &["SET", "wt-hello", "hello"]),
        ("wt-negative", &["SET", "wt-negative", "-5"]),
        ("wt-leading-zero", &["SET", "wt-leading-zero", "007"]),
        ("wt-float", &["SET", "wt-float", "1.5"]),
        ("wt-empty", &["SET", "wt-empty", ""]),
        ("wt-plus", &["SET", "wt-plus", "+5"]),
        ("wt-space", &["SET", "wt-space", " 5"]),
        ("wt-huge", &["SET", "wt-huge", "9223372036854775808"]),
    ];
    let mut before = Vec::new();
    for (i, (key, setup)) in setups.iter().enumerate() {
        let _: Value = run(&mut con, setup);
        // Half of them with a TTL, which must survive too.
        if i % 2 == 0 {
            let _: i64 = run(&mut con, &["PEXPIRE", key, "100000"]);
        }
        let kind: String = run(&mut con, &["TYPE", key]);
        before.push((kind, dumped(&mut con, *key)));
    }
    for ((key, _), (kind, dumped_before)) in setups.iter().zip(&before) {
        for extra in [&[][..], &["COST", "0"], &["COST", "3"], &["COST", "100"]] {
            let mut args: Vec<&[u8]> = vec![key.as_bytes(), b"5", b"60"];
            args.extend(extra.iter().map(|a| a.as_bytes()));
            assert_eq!(
                error_of(check_raw(&mut con, &args)),
                not_a_limiter(&mut con, key),
                "{key} {extra:?}"
            );
        }
        assert_eq!(&run::<String>(&mut con, &["TYPE", key]), kind, "{key}");
        assert_eq!(&dumped(&mut con, *key), dumped_before, "{key}");
    }
    assert_eq!(get_str(&mut con, "wt-leading-zero").as_deref(), Some("007"));
    assert_eq!(get_str(&mut con, "wt-empty").as_deref(), Some(""));
}

// ---------------------------------------------------------------------------
// Arguments and keys
// ---------------------------------------------------------------------------

#[test]
fn check_rejects_malformed_arguments_with_exact_errors() {
    let server = Server::start();
    let mut con = server.connect();
    let k: &[u8] = b"args";
    let cases: &[(&[&[u8]], &str)] = &[
        // Arity.
        (&[], ERR_ARITY),
        (&[k], ERR_ARITY),
        (&[k, b"5"], ERR_ARITY),
        // Limit.
        (&[k, b"abc", b"60"], ERR_LIMIT),
        (&[k, b"0", b"60"], ERR_LIMIT),
        (&[k, b"-1", b"60"], ERR_LIMIT),
        (&[k, b"-0", b"60"], ERR_LIMIT),
        (&[k, b"1.5", b"60"], ERR_LIMIT),
        (&[k, b"5.0", b"60"], ERR_LIMIT),
        (&[k, b"1e3", b"60"], ERR_LIMIT),
        (&[k, b" 5", b"60"], ERR_LIMIT),
        (&[k, b"5 ", b"60"], ERR_LIMIT),
        (&[k, b"+5", b"60"], ERR_LIMIT),
        (&[k, b"05", b"60"], ERR_LIMIT),
        (&[k, b"", b"60"], ERR_LIMIT),
        (&[k, b"1000000000000001", b"60"], ERR_LIMIT),
        (&[k, b"9223372036854775807", b"60"], ERR_LIMIT),
        (&[k, b"99999999999999999999", b"60"], ERR_LIMIT),
        (&[k, b"\xff\xfe", b"60"], ERR_LIMIT),
        (&[k, b"5\x00", b"60"], ERR_LIMIT),
        // Period.
        (&[k, b"5", b"0"], ERR_PERIOD),
        (&[k, b"5", b"-1"], ERR_PERIOD),
        (&[k, b"5", b"1.5"], ERR_PERIOD),
        (&[k, b"5", b"60s"], ERR_PERIOD),
        (&[k, b"5", b"1e3"], ERR_PERIOD),
        (&[k, b"5", b"+60"], ERR_PERIOD),
        (&[k, b"5", b""], ERR_PERIOD),
        (&[k, b"5", b"1000000001"], ERR_PERIOD),
        (&[k, b"5", b"99999999999999999999"], ERR_PERIOD),
        (&[k, b"5", b"\xff"], ERR_PERIOD),
        // Cost.
        (&[k, b"5", b"60", b"COST", b"-1"], ERR_COST),
        (&[k, b"5", b"60", b"COST", b"x"], ERR_COST),
        (&[k, b"5", b"60", b"COST", b"1.5"], ERR_COST),
        (&[k, b"5", b"60", b"COST", b"1e3"], ERR_COST),
        (&[k, b"5", b"60", b"COST", b""], ERR_COST),
        (&[k, b"5", b"60", b"COST", b"1000000000000001"], ERR_COST),
        (
            &[k, b"5", b"60", b"COST", b"99999999999999999999"],
            ERR_COST,
        ),
        (&[k, b"5", b"60", b"cost", b"\xfe\xff"], ERR_COST),
        // Options.
        (
            &[k, b"5", b"60", b"COST"],
            "ERR syntax error: COST needs a value",
        ),
        (
            &[k, b"5", b"60", b"cost"],
            "ERR syntax error: COST needs a value",
        ),
        (
            &[k, b"5", b"60", b"COST", b"1", b"COST", b"1"],
            "ERR syntax error: COST given twice",
        ),
        (
            &[k, b"5", b"60", b"COST", b"1", b"cost", b"2"],
            "ERR syntax error: COST given twice",
        ),
        (
            &[k, b"5", b"60", b"WEIGHT", b"1"],
            "ERR syntax error: unknown option 'WEIGHT'",
        ),
        (
            &[k, b"5", b"60", b"COSTS", b"1"],
            "ERR syntax error: unknown option 'COSTS'",
        ),
        (
            &[k, b"5", b"60", b"1"],
            "ERR syntax error: unknown option '1'",
        ),
        (
            &[k, b"5", b"60", b"COST", b"1", b"extra"],
            "ERR syntax error: unknown option 'extra'",
        ),
        (
            &[k, b"5", b"60", b"\xff\xfe"],
            "ERR syntax error: unknown option '??'",
        ),
        (
            &[k, b"5", b"60", b""],
            "ERR syntax error: unknown option ''",
        ),
    ];
    for (args, expected) in cases {
        assert_eq!(
            error_of(check_raw(&mut con, args)),
            *expected,
            "RATELIMIT.CHECK {args:?}"
        );
    }
    assert_eq!(run::<String>(&mut con, &["PING"]), "PONG");
    assert!(!exists(&mut con, k), "a refused call created the key");

    // The documented bounds are accepted.
    assert_eq!(
        check(
            &mut con,
            "bounds",
            1_000_000_000_000_000,
            1_000_000_000,
            &["COST", "1000000000000000"]
        )
        .without_reset(),
        (true, 0, 1_000_000_000_000_000, -1)
    );
    assert_eq!(
        get_str(&mut con, "bounds").as_deref(),
        Some("1000000000000000")
    );
    let ttl = pttl(&mut con, "bounds");
    assert!(ttl > 999_999_000_000 && ttl <= 1_000_000_000_000, "{ttl}");
}

#[test]
fn check_accepts_binary_and_empty_keys() {
    let server = Server::start();
    let mut con = server.connect();

    let binary: &[u8] = b"\xff\xfe\x00bin";
    assert_eq!(
        check(&mut con, binary, 2, 60, &[]),
        Decision::allowed(1, 2, 60_000)
    );
    assert_eq!(
        check(&mut con, binary, 2, 60, &[]).without_reset(),
        (true, 0, 2, -1)
    );
    assert_eq!(check(&mut con, binary, 2, 60, &[]).counts(), (false, 0, 2));
    assert_eq!(get(&mut con, binary), Some(b"2".to_vec()));
    let ttl = pttl(&mut con, binary);
    assert!(ttl > 59_000 && ttl <= 60_000, "{ttl}");

    let empty: &[u8] = b"";
    assert_eq!(
        check(&mut con, empty, 2, 60, &[]),
        Decision::allowed(1, 2, 60_000)
    );
    assert_eq!(get(&mut con, empty), Some(b"1".to_vec()));
    assert!(pttl(&mut con, empty) > 59_000);
    assert_eq!(
        all_keys(&mut con),
        BTreeSet::from([binary.to_vec(), empty.to_vec()])
    );
}

// ---------------------------------------------------------------------------
// Transactions, scripts, concurrency
// ---------------------------------------------------------------------------

#[test]
fn check_counts_each_call_inside_multi_exec() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "multi";
    let limit = 3;
    let mut pipe = redis::pipe();
    pipe.atomic();
    for _ in 0..limit + 2 {
        pipe.cmd("RATELIMIT.CHECK").arg(key).arg(limit).arg(60);
    }
    pipe.cmd("GET").arg(key);
    let (replies, count): (Vec<Decision>, String) = {
        let mut all: Vec<Value> = pipe.query(&mut con).unwrap();
        let count = text(&all.pop().unwrap());
        let replies = all
            .into_iter()
            .map(|v| redis::from_redis_value(v).unwrap())
            .collect();
        (replies, count)
    };
    let decisions: Vec<(bool, i64, i64)> = replies.iter().map(Decision::counts).collect();
    assert_eq!(
        decisions,
        [
            (true, 2, 3),
            (true, 1, 3),
            (true, 0, 3),
            (false, 0, 3),
            (false, 0, 3)
        ]
    );
    assert_eq!(replies[0].reset_after_ms, 60_000);
    for denied in &replies[3..] {
        assert!(
            denied.retry_after_ms > 0 && denied.retry_after_ms == denied.reset_after_ms,
            "{denied:?}"
        );
    }
    assert_eq!(count, "3");
    assert_eq!(get_str(&mut con, key).as_deref(), Some("3"));
    let ttl = pttl(&mut con, key);
    assert!(ttl > 59_000 && ttl <= 60_000, "{ttl}");
}

#[test]
fn check_works_from_lua_scripts() {
    let server = Server::start();
    let mut con = server.connect();
    let one = "return redis.call('RATELIMIT.CHECK', KEYS[1], ARGV[1], ARGV[2])";

    let key = "lua";
    let eval = |con: &mut Connection| -> Decision {
        redis::cmd("EVAL")
            .arg(one)
            .arg(1)
            .arg(key)
            .arg(3)
            .arg(60)
            .query(con)
            .unwrap()
    };
    assert_eq!(eval(&mut con), Decision::allowed(2, 3, 60_000));
    assert_eq!(eval(&mut con).without_reset(), (true, 1, 3, -1));
    assert_eq!(eval(&mut con).without_reset(), (true, 0, 3, -1));
    let denied = eval(&mut con);
    assert_eq!(denied.counts(), (false, 0, 3));
    assert!(
        denied.retry_after_ms > 0 && denied.retry_after_ms == denied.reset_after_ms,
        "{denied:?}"
    );
    assert_eq!(get_str(&mut con, key).as_deref(), Some("3"));

    // Many calls in one script: exactly `limit` admitted.
    let many = "local admitted = 0
        for i = 1, tonumber(ARGV[3]) do
            local r = redis.call('RATELIMIT.CHECK', KEYS[1], ARGV[1], ARGV[2])
            admitted = admitted + r[1]
        end
        return admitted";
    let admitted: i64 = redis::cmd("EVAL")
        .arg(many)
        .arg(1)
        .arg("lua-loop")
        .arg(7)
        .arg(60)
        .arg(20)
        .query(&mut con)
        .unwrap();
    assert_eq!(admitted, 7);
    assert_eq!(get_str(&mut con, "lua-loop").as_deref(), Some("7"));
    assert!(pttl(&mut con, "lua-loop") > 59_000);

    // Errors reach the script as errors.
    let caught = "return redis.pcall('RATELIMIT.CHECK', KEYS[1], '0', '60')['err']";
    let err: String = redis::cmd("EVAL")
        .arg(caught)
        .arg(1)
        .arg("lua-err")
        .query(&mut con)
        .unwrap();
    assert!(err.contains("limit must be a positive integer"), "{err}");
    assert!(!exists(&mut con, "lua-err"));
}

#[test]
fn check_admits_exactly_the_limit_under_concurrency() {
    let server = Server::start();
    let threads = 16;
    let per_thread = 50;

    let run_all = |key: &str, cost: &str| -> Vec<Decision> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut con = server.connect();
                        (0..per_thread)
                            .map(|_| check(&mut con, key, 100, 60, &["COST", cost]))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        })
    };
    let mut con = server.connect();

    let replies = run_all("conc", "1");
    let admitted: Vec<i64> = replies
        .iter()
        .filter(|r| r.allowed)
        .map(|r| r.remaining)
        .collect();
    assert_eq!(admitted.len(), 100);
    // Every admitted request saw its own `remaining`: no two shared a unit.
    let remaining: BTreeSet<i64> = admitted.iter().copied().collect();
    assert_eq!(remaining, (0..100).collect::<BTreeSet<i64>>());
    assert_eq!(get_str(&mut con, "conc").as_deref(), Some("100"));

    let replies = run_all("conc-cost", "3");
    let admitted = replies.iter().filter(|r| r.allowed).count() as i64;
    assert!(admitted * 3 <= 100, "{admitted} admitted");
    assert!(100 - admitted * 3 < 3, "only {admitted} admitted");
    assert_eq!(
        get_str(&mut con, "conc-cost"),
        Some((admitted * 3).to_string())
    );
}

// ---------------------------------------------------------------------------
// Command table
// ---------------------------------------------------------------------------

#[test]
fn check_declares_its_key_and_flags() {
    let server = Server::start();
    let mut con = server.connect();

    let keys: Vec<String> = run(
        &mut con,
        &["COMMAND", "GETKEYS", "RATELIMIT.CHECK", "mykey", "1", "1"],
    );
    assert_eq!(keys, ["mykey"]);
    let keys: Vec<String> = run(
        &mut con,
        &[
            "COMMAND",
            "GETKEYS",
            "ratelimit.check",
            "other",
            "5",
            "60",
            "COST",
            "2",
        ],
    );
    assert_eq!(keys, ["other"]);

    let info: Vec<Value> = run(&mut con, &["COMMAND", "INFO", "ratelimit.check"]);
    let Some(Value::Array(entry)) = info.first() else {
        panic!("COMMAND INFO: {info:?}");
    };
    assert_eq!(text(&entry[0]), "ratelimit.check");
    let Value::Array(flags) = &entry[2] else {
        panic!("flags: {entry:?}");
    };
    let flags: BTreeSet<String> = flags.iter().map(text).collect();
    for flag in ["write", "denyoom", "fast"] {
        assert!(flags.contains(flag), "{flag} missing from {flags:?}");
    }
    // First key, last key, step.
    assert_eq!(entry[3..6], [Value::Int(1), Value::Int(1), Value::Int(1)]);

    // `write`: refused in a read-only script.
    if common::has_read_only_scripts(&mut con, "CHECK in a no-writes script") {
        let err = error_of(
            redis::cmd("EVAL")
                .arg("#!lua flags=no-writes\nreturn redis.call('RATELIMIT.CHECK', KEYS[1], '1', '60')")
                .arg(1)
                .arg("ro")
                .query(&mut con),
        );
        assert!(err.contains("Write commands are not allowed"), "{err}");
        assert!(!exists(&mut con, "ro"));
    }

    // `deny-oom`: refused over maxmemory, accepted again below it.
    let _: () = run(&mut con, &["CONFIG", "SET", "maxmemory", "1"]);
    let err = error_of(check_raw(&mut con, &[b"oom", b"1", b"60"]));
    assert!(err.starts_with("OOM "), "{err}");
    let _: () = run(&mut con, &["CONFIG", "SET", "maxmemory", "0"]);
    assert!(check(&mut con, "oom", 1, 60, &[]).allowed);
}
