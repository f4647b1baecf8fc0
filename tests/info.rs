//! `INFO ratelimit`: the module's counters, in which INFO sections they
//! show, and exactly what each call adds to them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{
    check, counters, error, exists, parse_section, peek, ratelimit_section, reset, run, throttle,
    wrong_algorithm, Abilities, Server, FIELDS, FIXED, NOT_LIMITER_STATE, THROTTLE, WRONGTYPE,
};

#[test]
fn info_section_lists_every_counter_in_the_right_sections() {
    let server = Server::start();
    let mut con = server.connect();
    // Something counted, so that the values are not all zero.
    check(&mut con, "sections", 1, 60, &[]);

    let own: String = run(&mut con, &["INFO", "ratelimit"]);
    assert_eq!(
        own.lines().next().map(str::trim_end),
        Some("# ratelimit"),
        "INFO ratelimit:\n{own}"
    );
    let lines = ratelimit_section(&own).unwrap();
    let values = parse_section(&lines, "INFO ratelimit");
    assert_eq!(values["check_calls"], 1);
    // Nothing else in the reply but the section.
    let rest: Vec<&str> = own
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(rest.len(), 1 + FIELDS.len(), "INFO ratelimit:\n{own}");

    for section in ["modules", "everything"] {
        let info: String = run(&mut con, &["INFO", section]);
        let lines = ratelimit_section(&info)
            .unwrap_or_else(|| panic!("INFO {section} has no # ratelimit section:\n{info}"));
        assert_eq!(
            parse_section(&lines, &format!("INFO {section}")),
            values,
            "INFO {section}"
        );
    }
    for args in [&["INFO"][..], &["INFO", "default"]] {
        let info: String = run(&mut con, args);
        assert!(
            ratelimit_section(&info).is_none() && !info.contains("ratelimit_"),
            "{}:\n{info}",
            args.join(" ")
        );
    }
}

#[test]
fn info_counts_calls_errors_and_decisions_exactly() {
    let server = Server::start();
    let mut con = server.connect();
    let abilities = Abilities::of(&mut con);
    let before = counters(&mut con);

    // CHECK: fixed window of 3, five requests; sliding admitted; token
    // admitted then denied.
    let mut decisions = Vec::new();
    for _ in 0..5 {
        decisions.push(check(&mut con, "info:fixed", 3, 60, &[]).allowed);
    }
    assert_eq!(decisions, [true, true, true, false, false]);
    let sliding = ["ALGORITHM", "SLIDING"];
    assert!(check(&mut con, "info:sliding", 5, 60, &sliding).allowed);
    let token = ["ALGORITHM", "TOKEN"];
    assert!(check(&mut con, "info:token", 1, 60, &token).allowed);
    assert!(!check(&mut con, "info:token", 1, 60, &token).allowed);
    // Two PEEKs of different algorithms.
    peek(&mut con, "info:fixed", 3, 60, &[]);
    peek(&mut con, "info:sliding", 5, 60, &sliding);
    // Looks through CHECK and THROTTLE: counted as looks, not decisions,
    // even when what they look at is full (the fixed window is).
    assert!(check(&mut con, "info:fixed", 3, 60, &["COST", "0"]).allowed);
    throttle(&mut con, "info:look", 0, 1, 60, Some(0));
    // THROTTLE admitted, then limited.
    assert!(!throttle(&mut con, "info:cell", 0, 1, 60, None).limited);
    assert!(throttle(&mut con, "info:cell", 0, 1, 60, None).limited);
    // RESET of two limiters and a missing key.
    assert_eq!(
        reset(&mut con, &["info:fixed", "info:missing", "info:sliding"]),
        2
    );

    // Errors: bad arguments and keys of the wrong kind, for each command.
    let _: () = run(&mut con, &["RPUSH", "info:list", "x"]);
    let _: () = run(&mut con, &["SET", "info:text", "hello"]);
    let wrong_kind: [(&[&str], String); 6] = [
        (
            &["RATELIMIT.CHECK", "info:list", "1", "60"],
            WRONGTYPE.into(),
        ),
        // A THROTTLE key is no fixed-window counter.
        (
            &["RATELIMIT.CHECK", "info:cell", "1", "60"],
            wrong_algorithm(THROTTLE.name, FIXED.name),
        ),
        (
            &["RATELIMIT.PEEK", "info:list", "1", "60"],
            WRONGTYPE.into(),
        ),
        (&["RATELIMIT.RESET", "info:list"], WRONGTYPE.into()),
        // A limiter and a string that is not one: nothing is removed.
        (
            &["RATELIMIT.RESET", "info:token", "info:text"],
            NOT_LIMITER_STATE.into(),
        ),
        (
            &["RATELIMIT.THROTTLE", "info:list", "0", "1", "60"],
            WRONGTYPE.into(),
        ),
    ];
    for (args, expected) in wrong_kind {
        assert_eq!(error(&mut con, args), expected, "{}", args.join(" "));
    }
    let bad_arguments: [&[&str]; 4] = [
        &["RATELIMIT.CHECK", "info:e", "0", "60"],
        &["RATELIMIT.CHECK", "info:e", "1", "60", "ALGORITHM", "LEAKY"],
        &["RATELIMIT.PEEK", "info:e", "1", "0"],
        &["RATELIMIT.THROTTLE", "info:e", "-1", "1", "60"],
    ];
    for args in bad_arguments {
        let err = error(&mut con, args);
        assert!(err.starts_with("ERR "), "{}: {err}", args.join(" "));
    }
    // The RESET that failed removed nothing.
    assert!(exists(&mut con, "info:token"));
    // Too few arguments: Redis 7.0+ knows the arity and refuses the call
    // before the module sees it; older servers let the module refuse it.
    assert_eq!(
        error(&mut con, &["RATELIMIT.CHECK", "info:e", "1"]),
        "ERR wrong number of arguments for 'ratelimit.check' command"
    );
    let arity_counted = u64::from(!abilities.command_info());

    let after = counters(&mut con);
    let delta: BTreeMap<&str, u64> = FIELDS
        .iter()
        .map(|f| (*f, after[*f] - before[*f]))
        .collect();
    // Every other counter stays where it was.
    let mut expected: BTreeMap<&str, u64> = FIELDS.iter().map(|f| (*f, 0)).collect();
    expected.extend([
        ("check_calls", 8 + 1 + 4 + arity_counted),
        ("check_errors", 4 + arity_counted),
        ("peek_calls", 2 + 2),
        ("peek_errors", 2),
        ("reset_calls", 1 + 2),
        ("reset_errors", 2),
        ("reset_keys", 2),
        ("throttle_calls", 2 + 1 + 2),
        ("throttle_errors", 2),
        ("allowed", 3 + 1 + 1 + 1),
        ("denied", 2 + 1 + 1),
        ("fixed_allowed", 3),
        ("fixed_denied", 2),
        // One PEEK and one COST 0 look; the PEEK that failed on a list
        // does not count.
        ("fixed_peeks", 1 + 1),
        ("sliding_allowed", 1),
        ("sliding_denied", 0),
        ("sliding_peeks", 1),
        ("token_allowed", 1),
        ("token_denied", 1),
        ("token_peeks", 0),
        ("throttle_allowed", 1),
        ("throttle_denied", 1),
        ("throttle_peeks", 1),
    ]);
    assert_eq!(delta, expected);

    // The totals are the sums over the algorithms.
    for total in ["allowed", "denied"] {
        let sum: u64 = ["fixed", "sliding", "token", "throttle"]
            .iter()
            .map(|a| after[&format!("{a}_{total}")])
            .sum();
        assert_eq!(after[total], sum, "{total}: {after:?}");
    }
}
