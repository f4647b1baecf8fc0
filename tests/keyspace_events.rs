//! Keyspace events and WATCH: the module signals a key exactly when a call
//! changes it (`ratelimit.check`, `ratelimit.throttle`, `ratelimit.reset`,
//! of class `d`), and `ratelimit.denied` for denials when asked to.
//!
//! Events are collected until a sentinel message published after the
//! workload arrives: no test waits on a timer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    check, error, events_during, get_str, peek, reset, run, throttle, wrong_algorithm, Abilities,
    Server, FIXED, THROTTLE,
};
use redis::Connection;

/// One event a workload fires: the key, the event name and its class (`d`
/// for module events, `$` for string commands).
type Fired = (String, &'static str, char);

/// What a subscriber sees of `fired` with `notify-keyspace-events` set to
/// `flags` (`K`, `E`, classes; `A` is every class used here).
fn seen(fired: &[Fired], flags: &str) -> Vec<(String, String)> {
    let all = flags.contains('A');
    let mut out = Vec::new();
    for (key, event, class) in fired {
        if !all && !flags.contains(*class) {
            continue;
        }
        if flags.contains('K') {
            out.push((format!("__keyspace@0__:{key}"), event.to_string()));
        }
        if flags.contains('E') {
            out.push((format!("__keyevent@0__:{event}"), key.clone()));
        }
    }
    out
}

/// Every kind of call, on keys under `prefix`; returns the events they must
/// fire, in order, with `denied-events` as given.
fn event_workload(con: &mut Connection, prefix: &str, denied_events: bool) -> Vec<Fired> {
    let key = |name: &str| format!("{prefix}:{name}");
    let (fixed, sliding, token, bare, cell) = (
        key("fixed"),
        key("sliding"),
        key("token"),
        key("bare"),
        key("cell"),
    );
    let mut fired: Vec<Fired> = Vec::new();
    let denied = |fired: &mut Vec<Fired>, key: &str| {
        if denied_events {
            fired.push((key.to_string(), "ratelimit.denied", 'd'));
        }
    };

    // Admitted requests change the key: one event each.
    for remaining in [1, 0] {
        let reply = check(con, &fixed, 2, 60, &[]);
        assert_eq!(
            (reply.allowed, reply.remaining),
            (true, remaining),
            "{reply:?}"
        );
        fired.push((fixed.clone(), "ratelimit.check", 'd'));
    }
    // A denied request changes nothing.
    assert!(!check(con, &fixed, 2, 60, &[]).allowed);
    denied(&mut fired, &fixed);
    // A request that can never fit is denied too.
    let reply = check(con, &fixed, 2, 60, &["COST", "3"]);
    assert_eq!(reply.without_reset(), (false, 0, 2, -1), "{reply:?}");
    denied(&mut fired, &fixed);
    // A COST 0 look and PEEKs (even of a full limiter) change nothing.
    let look = check(con, &fixed, 2, 60, &["COST", "0"]);
    assert_eq!((look.allowed, look.remaining), (true, 0));
    assert!(!peek(con, &fixed, 2, 60, &[]).allowed);
    // Even a look that answers "denied" (a limit now below the count) is a
    // look: no `ratelimit.denied`.
    assert!(!check(con, &fixed, 1, 60, &["COST", "0"]).allowed);

    let sliding_options = ["ALGORITHM", "SLIDING"];
    assert!(check(con, &sliding, 5, 60, &sliding_options).allowed);
    fired.push((sliding.clone(), "ratelimit.check", 'd'));
    assert!(peek(con, &sliding, 5, 60, &sliding_options).allowed);

    let token_options = ["ALGORITHM", "TOKEN"];
    assert!(check(con, &token, 1, 60, &token_options).allowed);
    fired.push((token.clone(), "ratelimit.check", 'd'));
    assert!(!check(con, &token, 1, 60, &token_options).allowed);
    denied(&mut fired, &token);
    assert!(!peek(con, &token, 1, 60, &token_options).allowed);

    // A counter stored without an expiry gets its window from the first
    // request that counts, even a denied one: the key changed.
    let _: () = run(con, &["SET", &bare, "9"]);
    fired.push((bare.clone(), "set", '$'));
    assert!(!check(con, &bare, 5, 60, &[]).allowed);
    fired.push((bare.clone(), "ratelimit.check", 'd'));
    denied(&mut fired, &bare);
    // From then on a denied request changes nothing.
    assert!(!check(con, &bare, 5, 60, &[]).allowed);
    denied(&mut fired, &bare);

    // THROTTLE: admitted, limited, a quantity-0 look.
    assert!(!throttle(con, &cell, 0, 1, 60, None).limited);
    fired.push((cell.clone(), "ratelimit.throttle", 'd'));
    assert!(throttle(con, &cell, 0, 1, 60, None).limited);
    denied(&mut fired, &cell);
    assert!(!throttle(con, &cell, 0, 1, 60, Some(0)).limited);

    // Errors change nothing.
    error(con, &["RATELIMIT.CHECK", &key("error"), "0", "60"]);
    assert_eq!(
        error(con, &["RATELIMIT.THROTTLE", &fixed, "0", "1", "60"]),
        wrong_algorithm(FIXED.name, THROTTLE.name)
    );

    // RESET: one event per key removed, in argument order; none for a
    // missing key.
    assert_eq!(reset(con, &[&fixed, &key("missing"), &cell, &token]), 3);
    for k in [&fixed, &cell, &token] {
        fired.push((k.clone(), "ratelimit.reset", 'd'));
    }
    fired
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn keyspace_events_fire_for_changes_only() {
    let server = Server::start();
    let mut con = server.connect();
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "notify-keyspace-events", "KEA"],
    );
    let mut fired = Vec::new();
    let events = events_during(&server, |con| fired = event_workload(con, "ev", false));
    assert_eq!(events, seen(&fired, "KEA"));
    // The workload fired module events of each kind, on both channels.
    for event in ["ratelimit.check", "ratelimit.throttle", "ratelimit.reset"] {
        let channel = format!("__keyevent@0__:{event}");
        assert!(
            events.iter().any(|(c, _)| *c == channel),
            "{event} missing from {events:?}"
        );
    }
    assert!(!events.iter().any(|(_, e)| e == "ratelimit.denied"));
}

#[test]
fn keyspace_events_of_the_module_are_of_class_d() {
    let server = Server::start();
    let mut con = server.connect();
    // Class d alone: every module event and nothing else, on the channel
    // asked for.
    for (round, flags) in ["Kd", "Ed", "KEd"].into_iter().enumerate() {
        let _: () = run(
            &mut con,
            &["CONFIG", "SET", "notify-keyspace-events", flags],
        );
        let prefix = format!("class{round}");
        let mut fired = Vec::new();
        let events = events_during(&server, |con| fired = event_workload(con, &prefix, false));
        let expected = seen(&fired, flags);
        assert!(!expected.is_empty());
        assert_eq!(events, expected, "notify-keyspace-events {flags}");
    }
    // Every class but d: no module event.
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "notify-keyspace-events", "KEg$lshzxet"],
    );
    let mut fired = Vec::new();
    let events = events_during(&server, |con| fired = event_workload(con, "nod", false));
    assert_eq!(events, seen(&fired, "KE$"));
    assert_eq!(
        events,
        [
            ("__keyspace@0__:nod:bare".to_string(), "set".to_string()),
            ("__keyevent@0__:set".to_string(), "nod:bare".to_string()),
        ]
    );
}

#[test]
fn keyspace_events_none_with_notifications_off() {
    let server = Server::start();
    let mut con = server.connect();
    let flags: Vec<String> = run(&mut con, &["CONFIG", "GET", "notify-keyspace-events"]);
    assert_eq!(flags, ["notify-keyspace-events", ""]);
    let events = events_during(&server, |con| {
        let fired = event_workload(con, "off", false);
        assert!(fired.len() > 5);
    });
    assert_eq!(events, []);
    // Not even denied events, when asked for, while notifications are off.
    let server = Server::builder().module_arg("denied-events", "yes").start();
    let events = events_during(&server, |con| {
        event_workload(con, "off", true);
    });
    assert_eq!(events, []);
}

#[test]
fn keyspace_events_denied_from_the_module_argument() {
    let server = Server::builder().module_arg("denied-events", "yes").start();
    let mut con = server.connect();
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "notify-keyspace-events", "KEA"],
    );
    let mut fired = Vec::new();
    let events = events_during(&server, |con| fired = event_workload(con, "arg", true));
    assert_eq!(events, seen(&fired, "KEA"));
    let denied: Vec<&String> = fired
        .iter()
        .filter(|(_, e, _)| *e == "ratelimit.denied")
        .map(|(k, _, _)| k)
        .collect();
    // Denied CHECKs of each kind, the bare counter twice, a limited THROTTLE.
    assert_eq!(
        denied,
        [
            "arg:fixed",
            "arg:fixed",
            "arg:token",
            "arg:bare",
            "arg:bare",
            "arg:cell"
        ]
    );
    assert!(
        server.log().contains("denied-events yes"),
        "{}",
        server.log()
    );
}

#[test]
fn keyspace_events_denied_switch_with_config_set() {
    let server = Server::start();
    let mut con = server.connect();
    if !Abilities::of(&mut con).command_info() {
        let err = error(
            &mut con,
            &["CONFIG", "SET", "ratelimit.denied-events", "yes"],
        );
        assert!(err.starts_with("ERR"), "{err}");
        eprintln!("not run (denied-events by CONFIG SET): no module configs before Redis 7.0");
        return;
    }
    let _: () = run(&mut con, &["CONFIG", "SET", "notify-keyspace-events", "Kd"]);
    for (round, on) in [false, true, false].into_iter().enumerate() {
        let value = if on { "yes" } else { "no" };
        let _: () = run(
            &mut con,
            &["CONFIG", "SET", "ratelimit.denied-events", value],
        );
        let prefix = format!("set{round}");
        let mut fired = Vec::new();
        let events = events_during(&server, |con| fired = event_workload(con, &prefix, on));
        assert_eq!(events, seen(&fired, "Kd"), "denied-events {value}");
        assert_eq!(
            events.iter().any(|(_, e)| e == "ratelimit.denied"),
            on,
            "denied-events {value}: {events:?}"
        );
    }
}

#[test]
fn keyspace_watch_sees_an_admitted_throttle_not_a_limited_one() {
    let server = Server::start();
    let mut watcher = server.connect();
    let mut other = server.connect();
    let key = "watched:cell";
    let transaction = |con: &mut Connection| -> Option<(Option<String>,)> {
        redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(key)
            .query(con)
            .unwrap()
    };
    assert!(!throttle(&mut other, key, 0, 1, 60, None).limited);
    let value = get_str(&mut other, key);

    // A limited call and a quantity-0 look change nothing: EXEC runs.
    let _: () = run(&mut watcher, &["WATCH", key]);
    assert!(throttle(&mut other, key, 0, 1, 60, None).limited);
    throttle(&mut other, key, 0, 1, 60, Some(0));
    assert_eq!(transaction(&mut watcher), Some((value,)));

    // An admitted call changes the key: EXEC is aborted.
    let _: () = run(&mut watcher, &["WATCH", key]);
    assert!(!throttle(&mut other, key, 5, 1, 60, None).limited);
    assert_eq!(
        transaction(&mut watcher),
        None,
        "EXEC ran although the key changed"
    );
}
