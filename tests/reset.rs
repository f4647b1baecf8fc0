//! RATELIMIT.RESET against a real server: limiters forgotten, all or nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{
    all_keys, assert_replica_took_everything, check, dumped, error_of, exists, get_str,
    make_one_of_each, master_with_replicas, not_a_limiter, raw, reset, run, throttle,
    wait_replicas, Decision, Server, Throttled,
};
use redis::{Connection, Value};

/// One limiter of each kind, on keys `{prefix}:{kind}`.
fn make_limiters(con: &mut Connection, prefix: &str) -> Vec<String> {
    make_one_of_each(con, prefix)
        .into_iter()
        .map(|(_, key)| key)
        .collect()
}

#[test]
fn reset_removes_every_algorithms_state_and_counts_it() {
    let server = Server::start();
    let mut con = server.connect();
    let keys = make_limiters(&mut con, "rs");
    // Limiter state written by hand counts too.
    let by_hand: &[(&str, &str)] = &[
        ("rs:counter", "7"),
        ("rs:zero", "0"),
        ("rs:s", "S12:3"),
        ("rs:t", "T0"),
        ("rs:g", "G999999"),
    ];
    for (key, value) in by_hand {
        let _: () = run(&mut con, &["SET", key, value]);
    }
    let _: () = run(&mut con, &["SET", "rs:other", "kept"]);

    let mut names: Vec<&str> = keys.iter().map(String::as_str).collect();
    names.extend(by_hand.iter().map(|(k, _)| *k));
    assert_eq!(reset(&mut con, &names), 9);
    for key in &names {
        assert!(!exists(&mut con, *key), "{key} still there");
    }
    assert_eq!(all_keys(&mut con), BTreeSet::from([b"rs:other".to_vec()]));
    // Counting starts afresh.
    assert_eq!(
        check(&mut con, "rs:fixed", 5, 60, &[]),
        Decision::allowed(4, 5, 60_000)
    );
    assert_eq!(
        throttle(&mut con, "rs:throttle", 4, 5, 60, None),
        Throttled::admitted(5, 4, 12)
    );
}

#[test]
fn reset_skips_missing_keys_and_counts_duplicates_once() {
    let server = Server::start();
    let mut con = server.connect();
    check(&mut con, "dup", 5, 60, &[]);
    assert_eq!(reset(&mut con, &["nothing"]), 0);
    assert_eq!(reset(&mut con, &["dup", "nothing", "dup", "dup"]), 1);
    assert!(!exists(&mut con, "dup"));
    assert_eq!(reset(&mut con, &["dup"]), 0);
    assert_eq!(run::<i64>(&mut con, &["DBSIZE"]), 0);

    // Binary and empty key names.
    let binary: &[u8] = b"\xff\xfe\x00";
    for key in [binary, b""] {
        let _: Value = raw(&mut con, &[b"RATELIMIT.CHECK", key, b"5", b"60"]).unwrap();
    }
    let removed: i64 = redis::from_redis_value(
        raw(&mut con, &[b"RATELIMIT.RESET", binary, b"", b"\xff"]).unwrap(),
    )
    .unwrap();
    assert_eq!(removed, 2);
    assert_eq!(run::<i64>(&mut con, &["DBSIZE"]), 0);
}

#[test]
fn reset_removes_nothing_when_one_key_is_not_a_limiter() {
    let server = Server::start();
    let mut con = server.connect();
    let keys = make_limiters(&mut con, "aon");
    let foreign: &[(&str, &[&str])] = &[
        ("aon:list", &["RPUSH", "aon:list", "a"]),
        ("aon:hash", &["HSET", "aon:hash", "f", "1"]),
        ("aon:set", &["SADD", "aon:set", "m"]),
        ("aon:hello", &["SET", "aon:hello", "hello"]),
        ("aon:negative", &["SET", "aon:negative", "-1"]),
        ("aon:leading-zero", &["SET", "aon:leading-zero", "007"]),
        ("aon:empty", &["SET", "aon:empty", ""]),
        ("aon:s-bad", &["SET", "aon:s-bad", "S1:2:3"]),
        ("aon:t-bad", &["SET", "aon:t-bad", "t1"]),
        ("aon:g-bad", &["SET", "aon:g-bad", "G"]),
    ];
    for (_, setup) in foreign {
        let _: Value = run(&mut con, setup);
    }
    let mut all: Vec<&str> = keys.iter().map(String::as_str).collect();
    all.extend(foreign.iter().map(|(k, _)| *k));
    let snapshot = |con: &mut Connection| -> Vec<(Option<Vec<u8>>, i64)> {
        all.iter().map(|k| dumped(con, *k)).collect()
    };
    let before = snapshot(&mut con);

    for (bad, _) in foreign {
        // The bad key first, last, or among missing ones: nothing goes.
        let orders: [Vec<&str>; 3] = [
            [&[*bad][..], &all[..4]].concat(),
            [&all[..4], &[*bad][..]].concat(),
            vec![all[0], "aon:missing", bad, all[3]],
        ];
        for order in orders {
            let mut args: Vec<&[u8]> = vec![b"RATELIMIT.RESET"];
            args.extend(order.iter().map(|k| k.as_bytes()));
            let expected = not_a_limiter(&mut con, bad);
            assert_eq!(error_of(raw(&mut con, &args)), expected, "{order:?}");
        }
    }
    assert_eq!(
        snapshot(&mut con),
        before,
        "a refused RESET removed something"
    );
    assert_eq!(get_str(&mut con, "aon:hello").as_deref(), Some("hello"));

    // Without the bad ones, the limiters go.
    assert_eq!(reset(&mut con, &all[..4]), 4);
}

#[test]
fn reset_touches_watched_keys_only_when_it_removes_them() {
    let server = Server::start();
    let mut con = server.connect();
    let mut watcher = server.connect();
    check(&mut con, "watched", 5, 60, &[]);
    let exec = |watcher: &mut Connection| -> Option<(i64,)> {
        redis::pipe()
            .atomic()
            .cmd("EXISTS")
            .arg("watched")
            .query(watcher)
            .unwrap()
    };
    // A refused RESET and one of other keys leave the transaction alone.
    let _: () = run(&mut watcher, &["WATCH", "watched"]);
    let _: i64 = run(&mut con, &["RPUSH", "list", "a"]);
    let _ = error_of(raw(&mut con, &[b"RATELIMIT.RESET", b"watched", b"list"]));
    assert_eq!(reset(&mut con, &["other"]), 0);
    assert_eq!(exec(&mut watcher), Some((1,)));
    // Removing it aborts the transaction.
    let _: () = run(&mut watcher, &["WATCH", "watched"]);
    assert_eq!(reset(&mut con, &["watched"]), 1);
    assert_eq!(
        exec(&mut watcher),
        None,
        "EXEC ran although the key was removed"
    );
}

#[test]
fn reset_propagates_to_replicas() {
    // One replica with the module, one without: DEL is all they need.
    let (master, replicas) =
        master_with_replicas(vec![Server::builder(), Server::builder().without_module()]);
    let mut con = master.connect();
    let keys = make_limiters(&mut con, "rep");
    let kept = make_limiters(&mut con, "kept");
    wait_replicas(&mut con, replicas.len());
    for replica in &replicas {
        let mut rcon = replica.connect();
        for key in keys.iter().chain(&kept) {
            assert!(exists(&mut rcon, key.as_str()), "{key} not replicated");
        }
    }

    let mut names: Vec<&str> = keys.iter().map(String::as_str).collect();
    names.push("rep:missing");
    names.push(&keys[0]);
    assert_eq!(reset(&mut con, &names), 4);
    // Inside MULTI and a script, too.
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("RATELIMIT.RESET")
        .arg(&kept[0])
        .arg(&kept[1]);
    let _: Value = pipe.query(&mut con).unwrap();
    let removed: i64 = redis::cmd("EVAL")
        .arg("return redis.call('RATELIMIT.RESET', KEYS[1])")
        .arg(1)
        .arg(&kept[2])
        .query(&mut con)
        .unwrap();
    assert_eq!(removed, 1);
    wait_replicas(&mut con, replicas.len());

    let remaining = all_keys(&mut con);
    assert_eq!(remaining, BTreeSet::from([kept[3].clone().into_bytes()]));
    for replica in &replicas {
        let mut rcon = replica.connect();
        assert_eq!(all_keys(&mut rcon), remaining);
        assert_eq!(get_str(&mut rcon, &kept[3]), get_str(&mut con, &kept[3]));
        assert_replica_took_everything(replica);
    }
    // The replicas refuse it from their own clients.
    let mut rcon = replicas[0].connect();
    let err = error_of(raw(&mut rcon, &[b"RATELIMIT.RESET", kept[3].as_bytes()]));
    assert!(err.starts_with("READONLY"), "{err}");
}

#[test]
fn reset_declares_every_argument_a_key() {
    let server = Server::start();
    let mut con = server.connect();
    let keys: Vec<String> = run(
        &mut con,
        &["COMMAND", "GETKEYS", "RATELIMIT.RESET", "a", "b", "c"],
    );
    assert_eq!(keys, ["a", "b", "c"]);
    let keys: Vec<String> = run(&mut con, &["COMMAND", "GETKEYS", "ratelimit.reset", "one"]);
    assert_eq!(keys, ["one"]);

    let info: Vec<Value> = run(&mut con, &["COMMAND", "INFO", "ratelimit.reset"]);
    let Some(Value::Array(entry)) = info.first() else {
        panic!("COMMAND INFO: {info:?}");
    };
    // First key, last key, step.
    assert_eq!(entry[3..6], [Value::Int(1), Value::Int(-1), Value::Int(1)]);
    let Value::Array(flags) = &entry[2] else {
        panic!("flags: {entry:?}");
    };
    assert!(
        flags.contains(&Value::SimpleString("write".to_string())),
        "{flags:?}"
    );

    assert_eq!(
        error_of(raw(&mut con, &[b"RATELIMIT.RESET"])),
        "ERR wrong number of arguments for 'ratelimit.reset' command"
    );
    assert_eq!(
        error_of(raw(&mut con, &[b"ratelimit.reset"])),
        "ERR wrong number of arguments for 'ratelimit.reset' command"
    );
}
