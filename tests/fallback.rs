//! The script fallback (`fallback/ratelimit.lua`) against the module it
//! stands in for: the same calls, on one server at one instant, give the
//! same replies, error texts, values and absolute expiries.
//!
//! The differential runs go through functions where the server has them
//! (Redis 7.0+, Valkey) and through EVAL where it does not (Redis 6.2); one
//! run takes the EVAL route on every server.

mod common;

use std::time::Instant;

use common::fallback::{eval_script, load_library, unix_ms, Clock, Route, Twins, LIBRARY};
use common::{error_of, has_command, run, Server};
use redis::Value;

/// Calls the main differential run compares.
const CALLS: u64 = 10_000;
/// Calls the other runs compare.
const SHORTER_CALLS: u64 = 3_000;

fn differential(
    route: impl Fn(&mut redis::Connection) -> Route,
    clock: Clock,
    seed: u64,
    calls: u64,
    handover: bool,
) {
    let server = Server::start();
    let mut con = server.connect();
    let route = route(&mut con);
    let mut twins = Twins::new(&mut con, route.clone(), clock, seed);
    twins.handover = handover;
    let started = Instant::now();
    twins.run(&mut con, calls);
    eprintln!(
        "{route:?}, {clock:?}{}: {} in {:.1?}",
        if handover { ", handing keys over" } else { "" },
        twins.summary(),
        started.elapsed()
    );
    // Most steps fall in one millisecond; a run that resyncs more is not
    // comparing what it claims to. Without a frozen command clock (Redis
    // 6.2) the clock runs between the calls of a step, and a loaded
    // machine splits more of them.
    assert!(
        twins.resynced * 3 < twins.compared,
        "{} steps resynced for {} compared",
        twins.resynced,
        twins.compared
    );
}

/// The path for servers that refuse TIME in scripts: NOW on every call.
#[test]
fn fallback_with_now_pinned_matches_the_module_call_for_call() {
    differential(
        |c| Route::for_server(c),
        Clock::Pinned,
        0x5eed_0001,
        CALLS,
        false,
    );
}

/// The default path: the library reads the server's TIME. Compared where
/// the module's clock and the script's TIME name the same millisecond
/// (both are probed around the calls, in one MULTI).
#[test]
fn fallback_on_the_server_clock_matches_the_module_call_for_call() {
    differential(
        |c| Route::for_server(c),
        Clock::Server,
        0x5eed_0002,
        SHORTER_CALLS,
        false,
    );
}

/// The same source as a script, on servers that have functions too.
#[test]
fn fallback_through_eval_matches_the_module_call_for_call() {
    differential(
        |c| Route::eval(c),
        Clock::Pinned,
        0x5eed_0003,
        SHORTER_CALLS,
        false,
    );
}

/// Keys written by the module and read by the library, and the other way
/// round: the second twin of each key is driven by both, in turn.
#[test]
fn keys_handed_between_module_and_fallback_behave_as_the_modules_alone() {
    differential(
        |c| Route::for_server(c),
        Clock::Pinned,
        0x5eed_0004,
        SHORTER_CALLS,
        true,
    );
}

/// The decision of a key, as the module or the library replies it.
fn fields(v: &Value) -> Vec<i64> {
    redis::from_redis_value_ref(v).unwrap()
}

/// Every kind of state, taken mid-window by the module, continued by the
/// library and handed back: the count carries over both ways, exactly as
/// on a key the module alone served.
#[test]
fn a_key_handed_over_mid_window_keeps_its_count() {
    let server = Server::start();
    let mut con = server.connect();
    let route = Route::for_server(&mut con);
    let kinds: [(&str, &[&str]); 5] = [
        ("check", &["5", "60"]),
        ("check", &["5", "60", "ALGORITHM", "SLIDING"]),
        ("check", &["5", "60", "ALGORITHM", "TOKEN"]),
        ("throttle", &["4", "5", "60"]),
        ("acquire", &["5", "60000", "ID", "job"]),
    ];
    for (n, (verb, args)) in kinds.into_iter().enumerate() {
        let module = |con: &mut redis::Connection, key: &str| -> Vec<i64> {
            let mut cmd = redis::cmd(&format!("ratelimit.{verb}"));
            cmd.arg(key).arg(args);
            let v: Value = cmd.query(con).unwrap();
            let Value::Array(mut items) = v else { panic!() };
            items.truncate(5);
            fields(&Value::Array(items))
        };
        let library = |con: &mut redis::Connection, key: &str| -> Vec<i64> {
            let v = route.call(con, verb, &[key], args).unwrap();
            let Value::Array(mut items) = v else { panic!() };
            items.truncate(5);
            fields(&Value::Array(items))
        };
        // Two calls by the module, one by the library, one by the module:
        // the remaining count goes down by one each time on the handed key
        // as on a key only the module serves. Leases: the same id renews.
        let (alone, handed) = (format!("alone:{n}"), format!("handed:{n}"));
        // THROTTLE replies `limited, limit, remaining`; the others
        // `allowed, remaining, limit`.
        let remaining = if verb == "throttle" { 2 } else { 1 };
        let mut seen = Vec::new();
        for by_library in [false, false, true, false] {
            let a = module(&mut con, &alone);
            let h = if by_library {
                library(&mut con, &handed)
            } else {
                module(&mut con, &handed)
            };
            // Times may differ by the ms between the calls; the counts may not.
            assert_eq!((a[0], a[1], a[2]), (h[0], h[1], h[2]), "{verb} {args:?}");
            seen.push(h[remaining]);
        }
        if verb == "acquire" {
            assert_eq!(seen, [4, 4, 4, 4], "one lease, renewed");
        } else {
            let first = seen[0];
            assert_eq!(
                seen,
                [first, first - 1, first - 2, first - 3],
                "{verb} {args:?}: {seen:?}"
            );
        }
    }
}

/// The version the library reports is the module's (MODULE LIST's `ver`),
/// computed from Cargo.toml's as src/lib.rs computes MODULE_VERSION.
#[test]
fn ratelimit_version_is_the_modules() {
    let parts: Vec<i64> = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    let expected = parts[0] * 10000 + parts[1] * 100 + parts[2];
    assert!(
        LIBRARY.contains(&format!("local VERSION = '{}'", env!("CARGO_PKG_VERSION"))),
        "fallback/ratelimit.lua states another version than Cargo.toml"
    );
    let server = Server::start();
    let mut con = server.connect();
    let route = Route::for_server(&mut con);
    let version: i64 =
        redis::from_redis_value(route.call(&mut con, "version", &[], &[]).unwrap()).unwrap();
    assert_eq!(version, expected);
    // Some servers list modules of their own (Redis 8's vector sets).
    let modules: Vec<Vec<Value>> = run(&mut con, &["MODULE", "LIST"]);
    let field = |module: &[Value], name: &str| -> Value {
        module
            .chunks(2)
            .find(|pair| redis::from_redis_value_ref::<String>(&pair[0]).unwrap() == name)
            .map(|pair| pair[1].clone())
            .unwrap()
    };
    let ours = modules
        .iter()
        .find(|m| redis::from_redis_value::<String>(field(m, "name")).unwrap() == "ratelimit")
        .expect("the module is listed");
    let listed: i64 = redis::from_redis_value(field(ours, "ver")).unwrap();
    assert_eq!(version, listed);
}

/// The functions are registered with the module's flags: PEEK and MPEEK
/// run through FCALL_RO, the writing ones do not.
#[test]
fn read_only_functions_run_under_fcall_ro_and_writing_ones_do_not() {
    let server = Server::start();
    let mut con = server.connect();
    if !has_command(&mut con, "FUNCTION") {
        eprintln!("not run: this server has no functions (Redis < 7.0)");
        return;
    }
    load_library(&mut con);
    let peek: Vec<i64> = run(
        &mut con,
        &["FCALL_RO", "ratelimit_peek", "1", "k", "5", "60"],
    );
    assert_eq!(peek, [1, 5, 5, -1, 0]);
    let mpeek: Value = run(
        &mut con,
        &["FCALL_RO", "ratelimit_mpeek", "1", "k", "LIMIT", "5", "60"],
    );
    assert!(
        matches!(mpeek, Value::Array(ref a) if a.len() == 7),
        "{mpeek:?}"
    );
    let refused = error_of(common::try_run(
        &mut con,
        &["FCALL_RO", "ratelimit_check", "1", "k", "5", "60"],
    ));
    assert!(refused.contains("write flag"), "{refused}");
    let listed: Value = run(&mut con, &["FUNCTION", "LIST", "LIBRARYNAME", "ratelimit"]);
    let text = format!("{listed:?}");
    for verb in [
        "check", "peek", "reset", "throttle", "mcheck", "mpeek", "acquire", "release", "renew",
        "reserve", "settle", "extend", "version",
    ] {
        assert!(
            text.contains(&format!("ratelimit_{verb}")),
            "{verb} missing from {text}"
        );
    }
}

/// Under maxmemory, RESET and RELEASE (which free memory) still run, as
/// the module registers them without deny-oom; CHECK is refused.
#[test]
fn reset_and_release_run_at_maxmemory_and_check_does_not() {
    let server = Server::builder()
        .arg("maxmemory-policy", "noeviction")
        .start();
    let mut con = server.connect();
    if !has_command(&mut con, "FUNCTION") {
        eprintln!("not run: this server has no functions (Redis < 7.0)");
        return;
    }
    load_library(&mut con);
    let route = Route::Function;
    route.call(&mut con, "check", &["k"], &["5", "60"]).unwrap();
    route
        .call(&mut con, "acquire", &["l"], &["5", "60000", "ID", "a"])
        .unwrap();
    let _: () = run(&mut con, &["CONFIG", "SET", "maxmemory", "1"]);
    let refused = error_of(route.call(&mut con, "check", &["k"], &["5", "60"]));
    assert!(refused.starts_with("OOM"), "{refused}");
    let released: i64 =
        redis::from_redis_value(route.call(&mut con, "release", &["l"], &["a"]).unwrap()).unwrap();
    assert_eq!(released, 1);
    let reset: i64 =
        redis::from_redis_value(route.call(&mut con, "reset", &["k"], &[]).unwrap()).unwrap();
    assert_eq!(reset, 1);
    let _: () = run(&mut con, &["CONFIG", "SET", "maxmemory", "0"]);
}

/// Arguments that need integers past 2^53 in Lua are refused by the
/// library, with its own error, where the module accepts them; the largest
/// accepted ones give the module's answer.
#[test]
fn the_fallbacks_own_bounds_are_refused_with_a_clear_error() {
    let server = Server::start();
    let mut con = server.connect();
    let route = Route::for_server(&mut con);
    let refused: [(&str, &[&str], &str); 4] = [
        ("check", &["9007199254741", "1", "ALGORITHM", "SLIDING"], "ERR limit x period is too large for the script fallback: a SLIDING window needs limit x period_ms below 2^53"),
        ("check", &["10000000", "1000000", "ALGORITHM", "TOKEN"], "ERR burst x period is too large for the script fallback: a TOKEN bucket needs burst x period_ms below 2^53"),
        ("check", &["10000", "1", "ALGORITHM", "TOKEN", "BURST", "9007199254741"], "ERR burst x period is too large for the script fallback: a TOKEN bucket needs burst x period_ms below 2^53"),
        ("throttle", &["0", "1", "9007200"], "ERR max_burst is too large for this rate for the script fallback: THROTTLE needs (max_burst + 1) x period / count_per_period below 2^53 ns (about 104 days)"),
    ];
    for (n, (verb, args, error)) in refused.into_iter().enumerate() {
        let mut module = redis::cmd(&format!("ratelimit.{verb}"));
        module.arg(format!("m:{n}")).arg(args);
        let taken = module.query::<Vec<i64>>(&mut con);
        assert!(taken.is_ok(), "the module takes {verb} {args:?}: {taken:?}");
        assert_eq!(
            error_of(route.call(&mut con, verb, &[&format!("f:{n}")], args)),
            error,
            "{verb} {args:?}"
        );
    }
    // Just within: 2^53 - 1 unit-milliseconds and token-milliseconds, and
    // a tolerance of 2^53 - 1 ns.
    let accepted: [(&str, &[&str]); 3] = [
        (
            "check",
            &["9007199254740", "1", "COST", "0", "ALGORITHM", "SLIDING"],
        ),
        (
            "check",
            &[
                "10000",
                "1",
                "COST",
                "0",
                "ALGORITHM",
                "TOKEN",
                "BURST",
                "9007199254740",
            ],
        ),
        ("throttle", &["0", "1", "9007199", "0"]),
    ];
    for (n, (verb, args)) in accepted.into_iter().enumerate() {
        let mut module = redis::cmd(&format!("ratelimit.{verb}"));
        module.arg(format!("m2:{n}")).arg(args);
        let m: Value = module.query(&mut con).unwrap();
        let f = route
            .call(&mut con, verb, &[&format!("f2:{n}")], args)
            .unwrap();
        assert_eq!(m, f, "{verb} {args:?}");
    }
}

/// `NOW unix_ms` decides at that instant, on every function; a bad value
/// is refused; where TIME is refused to scripts (here by ACL), a call
/// without NOW says to pass it, and a call with NOW works.
#[test]
fn now_pins_the_instant_and_replaces_a_refused_time() {
    let server = Server::start();
    let mut con = server.connect();
    let route = Route::for_server(&mut con);
    let now = unix_ms();
    let at = |ms: i64| ms.to_string();
    let first: Vec<i64> = redis::from_redis_value(
        route
            .call(&mut con, "check", &["k"], &["5", "60", "NOW", &at(now)])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first, [1, 4, 5, -1, 60_000]);
    let later: Vec<i64> = redis::from_redis_value(
        route
            .call(
                &mut con,
                "check",
                &["k"],
                &["5", "60", "now", &at(now + 1234)],
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(later, [1, 3, 5, -1, 60_000 - 1234]);
    let expiry = common::pexpiretime(&mut con, "k");
    assert_eq!(expiry, now + 60_000);
    for bad in ["-1", "x", "1000000000000001", "01"] {
        assert_eq!(
            error_of(route.call(&mut con, "check", &["k"], &["5", "60", "NOW", bad])),
            "ERR NOW must be a UNIX time in milliseconds, an integer from 0 to 1000000000000000"
        );
    }
    let _: () = run(
        &mut con,
        &[
            "ACL", "SETUSER", "app", "on", "nopass", "~*", "&*", "+@all", "-time",
        ],
    );
    let _: () = run(&mut con, &["AUTH", "app", "x"]);
    assert_eq!(
        error_of(route.call(&mut con, "check", &["t"], &["5", "60"])),
        "ERR the server refused TIME in a script: pass NOW unix_ms"
    );
    let pinned: Vec<i64> = redis::from_redis_value(
        route
            .call(
                &mut con,
                "check",
                &["t"],
                &["5", "60", "NOW", &at(unix_ms())],
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(pinned, [1, 4, 5, -1, 60_000]);
}

/// The EVAL script is the library less its first line, and says so when
/// asked for a function it does not have.
#[test]
fn the_script_is_the_library_less_its_first_line() {
    assert!(LIBRARY.starts_with("#!lua name=ratelimit\n"));
    assert_eq!(format!("#!lua name=ratelimit\n{}", eval_script()), LIBRARY);
    let server = Server::start();
    let mut con = server.connect();
    let reply = redis::cmd("EVAL")
        .arg(eval_script())
        .arg(0)
        .arg("ratelimit_nothing")
        .query::<Value>(&mut con);
    assert_eq!(error_of(reply), "ERR Function not found");
    let ok: Vec<i64> = redis::cmd("EVAL")
        .arg(eval_script())
        .arg(1)
        .arg("k")
        .arg("ratelimit_check")
        .arg(5)
        .arg(60)
        .query(&mut con)
        .unwrap();
    assert_eq!(ok, [1, 4, 5, -1, 60_000]);
}

/// A final `NOW x` is the library's clock only when what comes before it
/// still makes the command's arity; otherwise the library reads the call
/// as the module does: `NOW` is then a lease id (refused by both) or a
/// limit.
#[test]
fn a_trailing_now_pair_is_the_clock_only_when_the_rest_makes_the_arity() {
    let server = Server::start();
    let mut con = server.connect();
    let route = Route::for_server(&mut con);
    let ahead = unix_ms() + 60_000;
    let at = |ms: i64| ms.to_string();
    // A minute ahead: the lease ends a minute and a second from now.
    let acquired = route
        .call(
            &mut con,
            "acquire",
            &["k"],
            &["1", "1000", "ID", "job", "NOW", &at(ahead)],
        )
        .unwrap();
    let ints: Vec<i64> = match &acquired {
        Value::Array(items) => {
            redis::from_redis_value_ref(&Value::Array(items[..5].to_vec())).unwrap()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(ints, [1, 0, 1, -1, 1000]);
    assert_eq!(common::pexpiretime(&mut con, "k"), ahead + 1000);
    // RENEW k job lease_ms NOW x and RELEASE k job NOW x keep their arity
    // without the pair: it is their clock.
    let renewed: i64 = redis::from_redis_value(
        route
            .call(
                &mut con,
                "renew",
                &["k"],
                &["job", "2000", "NOW", &at(ahead + 500)],
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(renewed, 1);
    assert_eq!(common::pexpiretime(&mut con, "k"), ahead + 2500);
    // Too few without the pair: NOW is the id asked for, refused.
    let refused = "ERR id must be 1 to 64 bytes and not NOW";
    for (verb, args) in [
        ("renew", &["NOW", "30000"][..]),
        ("renew", &["now", "30000"]),
        ("release", &["NOW", "5"]),
        ("release", &["Now"]),
        ("acquire", &["1", "1000", "ID", "NOW"]),
    ] {
        assert_eq!(
            error_of(route.call(&mut con, verb, &["k"], args)),
            refused,
            "{verb} {args:?}"
        );
    }
    // Still the lease a minute ahead, untouched.
    assert_eq!(common::pexpiretime(&mut con, "k"), ahead + 2500);
    // CHECK c 10 NOW x is the module's call: NOW is the period.
    let module = error_of(common::try_run(
        &mut con,
        &["RATELIMIT.CHECK", "c", "10", "NOW", "5"],
    ));
    assert_eq!(
        error_of(route.call(&mut con, "check", &["c"], &["10", "NOW", "5"])),
        module
    );
    // With the arity made, a clock pair is checked as one.
    assert_eq!(
        error_of(route.call(&mut con, "release", &["k"], &["job", "NOW", "soon"])),
        "ERR NOW must be a UNIX time in milliseconds, an integer from 0 to 1000000000000000"
    );
    let released: i64 = redis::from_redis_value(
        route
            .call(
                &mut con,
                "release",
                &["k"],
                &["job", "NOW", &at(ahead + 600)],
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(released, 1);
    assert_eq!(
        common::pexpiretime(&mut con, "k"),
        -2,
        "the set left empty is gone"
    );
}
