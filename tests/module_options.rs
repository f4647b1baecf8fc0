//! The module's options: module configs (`CONFIG GET/SET ratelimit.*`),
//! load-time arguments, the line the module logs at load, options that
//! refuse the load, and unloading and loading the module again.
//!
//! What a server version cannot do is not run there, and the test says so
//! on stderr.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{
    check, counters, error, error_of, events_during, get_str, has_command, run, Abilities, DataDir,
    Server, Throttled,
};
use redis::Connection;

// ---------------------------------------------------------------------------
// Module configs
// ---------------------------------------------------------------------------

/// `CONFIG GET ratelimit.*` as a map.
fn module_configs(con: &mut Connection) -> BTreeMap<String, String> {
    run(con, &["CONFIG", "GET", "ratelimit.*"])
}

fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn module_options_configs_show_and_change_the_options() {
    let server = Server::start();
    let mut con = server.connect();
    if !Abilities::of(&mut con).command_info() {
        // Load-time arguments only: covered by the next test.
        assert_eq!(module_configs(&mut con), configs(&[]));
        eprintln!("not run (CONFIG GET/SET ratelimit.*): no module configs before Redis 7.0");
        return;
    }
    assert_eq!(
        module_configs(&mut con),
        configs(&[
            ("ratelimit.cl-throttle", "no"),
            ("ratelimit.denied-events", "no"),
            ("ratelimit.hold-max-percent", "50"),
            ("ratelimit.hold-max-ttl-ms", "60000"),
        ])
    );

    // A bad value is refused and the old one stays.
    let err = error(
        &mut con,
        &["CONFIG", "SET", "ratelimit.denied-events", "maybe"],
    );
    assert!(
        err.starts_with("ERR") && err.contains("ratelimit.denied-events"),
        "{err}"
    );
    // cl-throttle registers a command at load: it cannot change later.
    let err = error(&mut con, &["CONFIG", "SET", "ratelimit.cl-throttle", "yes"]);
    assert!(err.starts_with("ERR") && err.contains("immutable"), "{err}");
    assert_eq!(
        module_configs(&mut con),
        configs(&[
            ("ratelimit.cl-throttle", "no"),
            ("ratelimit.denied-events", "no"),
            ("ratelimit.hold-max-percent", "50"),
            ("ratelimit.hold-max-ttl-ms", "60000"),
        ])
    );
    assert!(!has_command(&mut con, "CL.THROTTLE"));

    // The numeric options take a value in their range, at once.
    let err = error(
        &mut con,
        &["CONFIG", "SET", "ratelimit.hold-max-percent", "101"],
    );
    assert!(err.starts_with("ERR"), "{err}");
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "ratelimit.hold-max-percent", "100"],
    );
    assert_eq!(
        module_configs(&mut con)["ratelimit.hold-max-percent"],
        "100"
    );
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "ratelimit.hold-max-percent", "50"],
    );

    // denied-events takes effect at once.
    let _: () = run(&mut con, &["CONFIG", "SET", "notify-keyspace-events", "Kd"]);
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "ratelimit.denied-events", "yes"],
    );
    assert_eq!(module_configs(&mut con)["ratelimit.denied-events"], "yes");
    let events = events_during(&server, |con| {
        assert!(!check(con, "cfg:full", 1, 60, &["COST", "2"]).allowed);
    });
    assert_eq!(
        events,
        [(
            "__keyspace@0__:cfg:full".to_string(),
            "ratelimit.denied".to_string()
        )]
    );

    // Load-time arguments are the values CONFIG GET shows.
    let server = Server::builder()
        .module_arg("cl-throttle", "yes")
        .module_arg("denied-events", "yes")
        .module_arg("hold-max-percent", "20")
        .module_arg("hold-max-ttl-ms", "1000")
        .start();
    let mut con = server.connect();
    assert_eq!(
        module_configs(&mut con),
        configs(&[
            ("ratelimit.cl-throttle", "yes"),
            ("ratelimit.denied-events", "yes"),
            ("ratelimit.hold-max-percent", "20"),
            ("ratelimit.hold-max-ttl-ms", "1000"),
        ])
    );
    assert!(has_command(&mut con, "CL.THROTTLE"));
    let err = error(&mut con, &["CONFIG", "SET", "ratelimit.cl-throttle", "no"]);
    assert!(err.contains("immutable"), "{err}");
    let err = error(&mut con, &["CONFIG", "SET", "ratelimit.denied-events", "1"]);
    assert!(err.starts_with("ERR"), "{err}");
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "ratelimit.denied-events", "no"],
    );
    assert_eq!(
        module_configs(&mut con),
        configs(&[
            ("ratelimit.cl-throttle", "yes"),
            ("ratelimit.denied-events", "no"),
            ("ratelimit.hold-max-percent", "20"),
            ("ratelimit.hold-max-ttl-ms", "1000"),
        ])
    );

    // Lines of a configuration file (here included from the command line).
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ratelimit.conf");
    std::fs::write(
        &conf,
        "ratelimit.cl-throttle yes\nratelimit.denied-events yes\nratelimit.hold-max-ttl-ms 5000\n",
    )
    .unwrap();
    let server = Server::builder()
        .arg("include", conf.to_str().unwrap())
        .start();
    let mut con = server.connect();
    assert_eq!(
        module_configs(&mut con),
        configs(&[
            ("ratelimit.cl-throttle", "yes"),
            ("ratelimit.denied-events", "yes"),
            ("ratelimit.hold-max-percent", "50"),
            ("ratelimit.hold-max-ttl-ms", "5000"),
        ])
    );
    assert_eq!(
        run::<Throttled>(&mut con, &["CL.THROTTLE", "cfg:cell", "0", "1", "60"]),
        Throttled::admitted(1, 0, 60)
    );
    assert!(
        server
            .log()
            .contains("options: cl-throttle yes, denied-events yes, hold-max-percent"),
        "{}",
        server.log()
    );
}

#[test]
fn module_options_load_time_arguments_work_on_every_server() {
    let server = Server::builder().module_arg("cl-throttle", "yes").start();
    let mut con = server.connect();
    let before = counters(&mut con);
    assert_eq!(
        run::<Throttled>(&mut con, &["CL.THROTTLE", "arg:cell", "0", "1", "60"]),
        Throttled::admitted(1, 0, 60)
    );
    // CL.THROTTLE counts as THROTTLE.
    let after = counters(&mut con);
    assert_eq!(after["throttle_calls"] - before["throttle_calls"], 1);
    assert_eq!(after["throttle_allowed"] - before["throttle_allowed"], 1);
    if !Abilities::of(&mut con).command_info() {
        assert_eq!(module_configs(&mut con), configs(&[]));
        assert!(
            server
                .log()
                .contains("no module configs on this server: load-time arguments only"),
            "{}",
            server.log()
        );
    }
    // Without the option there is no CL.THROTTLE.
    let server = Server::start();
    let mut con = server.connect();
    assert!(!has_command(&mut con, "CL.THROTTLE"));
    let err = error(&mut con, &["CL.THROTTLE", "arg:cell", "0", "1", "60"]);
    assert!(err.contains("unknown command"), "{err}");
}

// ---------------------------------------------------------------------------
// The load log line
// ---------------------------------------------------------------------------

#[test]
fn module_options_load_log_line_names_version_options_and_server_apis() {
    let server = Server::start();
    let mut con = server.connect();
    let abilities = Abilities::of(&mut con);
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("<ratelimit> version"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    let found = |b: bool| if b { "found" } else { "absent" };
    let cached = abilities.acl_categories();
    let expected = format!(
        "* <ratelimit> version {} loaded; options: cl-throttle no, denied-events no, \
         hold-max-percent 50, hold-max-ttl-ms 60000 ({}); \
         server APIs: CachedMicroseconds {} (clock: {}), SetCommandInfo {}, \
         SetCommandACLCategories {}, AddACLCategory {}",
        env!("CARGO_PKG_VERSION"),
        if abilities.command_info() {
            "CONFIG GET/SET ratelimit.*"
        } else {
            "no module configs on this server: load-time arguments only"
        },
        found(cached),
        if cached {
            "the command time the server froze"
        } else {
            "the wall clock"
        },
        found(abilities.command_info()),
        found(abilities.acl_categories()),
        if abilities.own_category() {
            "found (@ratelimit)"
        } else {
            "absent"
        },
    );
    assert!(
        lines[0].ends_with(&expected),
        "log line:\n{}\nexpected it to end with:\n{expected}",
        lines[0]
    );
    // Nothing the module logs is a warning when the load succeeds... except
    // what redis-module itself says of defrag callbacks on old servers.
    for line in log.lines().filter(|l| l.contains("<ratelimit>")) {
        assert!(
            line.contains(" * ") || line.contains("defrag"),
            "unexpected module log line: {line}"
        );
    }
}

#[test]
fn module_options_bad_option_refuses_the_load_with_a_reason() {
    let cases = [
        (
            "denied-events maybe",
            "module option denied-events must be yes or no",
        ),
        (
            "DENIED-EVENTS 1",
            "module option DENIED-EVENTS must be yes or no",
        ),
        ("denied-events", "module option denied-events has no value"),
        (
            "cl-throttle yes fast yes",
            "unknown module option fast (known: cl-throttle, denied-events, hold-max-percent, hold-max-ttl-ms)",
        ),
        (
            "hold-max-percent 0",
            "module option hold-max-percent must be an integer from 1 to 100",
        ),
        (
            "hold-max-ttl-ms 86400001",
            "module option hold-max-ttl-ms must be an integer from 1 to 86400000",
        ),
        // A repeated option is refused, not decided by the last one.
        (
            "cl-throttle yes cl-throttle no",
            "module option cl-throttle is given twice",
        ),
        (
            "denied-events no DENIED-EVENTS no",
            "module option DENIED-EVENTS is given twice",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (args, reason)) in cases.into_iter().enumerate() {
        // A `loadmodule` line of a configuration file: the harness gives
        // module arguments in pairs, and one case has an odd count.
        let conf = dir.path().join(format!("bad-{i}.conf"));
        let line = format!("loadmodule {} {args}\n", common::module_path().display());
        std::fs::write(&conf, line).unwrap();
        let started = Server::builder()
            .without_module()
            .arg("include", conf.to_str().unwrap())
            .try_start();
        match started {
            Ok(server) => panic!("the server started with `{args}`:\n{}", server.log()),
            Err(log) => {
                assert!(log.contains(reason), "`{args}`; log:\n{log}");
                assert!(log.contains("Module not loaded"), "`{args}`; log:\n{log}");
            }
        }
    }
}

#[test]
fn module_options_unload_and_load_again() {
    // MODULE needs `enable-module-command` from Redis 7.0 on; 6.2 has no
    // such directive and always allows it.
    let data = DataDir::new();
    let server = match data.aof().arg("enable-module-command", "yes").try_start() {
        Ok(server) => server,
        // Only a server that does not know the directive (6.2) may start
        // without it; any other failure is the test's.
        Err(log) if log.contains("enable-module-command") => data.aof().start(),
        Err(log) => panic!("redis-server did not start:\n{log}"),
    };
    let mut con = server.connect();
    let sliding = ["ALGORITHM", "SLIDING"];
    assert!(check(&mut con, "u:a", 5, 60, &sliding).allowed);

    let _: () = run(&mut con, &["MODULE", "UNLOAD", "ratelimit"]);
    let err = error_of(
        redis::cmd("RATELIMIT.CHECK")
            .arg("u:a")
            .arg(5)
            .arg(60)
            .query(&mut con),
    );
    assert!(err.contains("unknown command"), "{err}");

    // Loaded again, a check that propagates a SET … PXAT (whose PXAT string
    // the module keeps from load to unload) works and is written out.
    let module = common::module_path();
    let _: () = run(&mut con, &["MODULE", "LOAD", module.to_str().unwrap()]);
    let b = check(&mut con, "u:b", 5, 60, &sliding);
    assert_eq!((b.allowed, b.remaining), (true, 4));
    let a = check(&mut con, "u:a", 5, 60, &sliding);
    assert_eq!((a.allowed, a.remaining), (true, 3));
    assert_eq!(get_str(&mut con, "u:b").as_deref(), Some("S0:1"));
    assert_eq!(run::<String>(&mut con, &["PING"]), "PONG");
    let aof = data.aof_contents();
    assert!(aof.contains("u:b") && aof.contains("pxat"), "{aof}");
}

#[test]
fn module_options_a_second_load_is_refused_with_the_reason_in_the_log() {
    // The module loaded twice at start-up, as two `loadmodule` lines would:
    // the server refuses the second and stops, and the log says why.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("twice.conf");
    let line = format!("loadmodule {}\n", common::module_path().display());
    std::fs::write(&conf, line).unwrap();
    let started = Server::builder()
        .arg("include", conf.to_str().unwrap())
        .try_start();
    match started {
        Ok(server) => panic!(
            "the server started with the module twice:\n{}",
            server.log()
        ),
        Err(log) => assert!(
            log.contains("a module named ratelimit is loaded already")
                && log.contains("MODULE UNLOAD ratelimit first"),
            "log:\n{log}"
        ),
    }
}
