//! RATELIMIT.MCHECK and RATELIMIT.MPEEK against real servers: several
//! limits, each on its own key, admitted all together or not at all.
//!
//! Times are checked exactly, never within a tolerance: a call's own "now"
//! is read back from what it answers about a window whose end is known
//! (`reset_after_ms` of a fixed window is its end minus "now"), and calls
//! that must see the same instant run in one MULTI/EXEC at one millisecond
//! of the server's clock (`at_one_instant`). The only waits are for an
//! instant the server named, by its own clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::thread::sleep;
use std::time::Duration;

use common::cluster::Cluster;
use common::fallback::{module_cmd, Route};
use common::{
    algorithms, assert_fires_exactly, assert_replica_took_everything, at_a_pinned_instant,
    at_one_instant, check, command, counters, dumped, error, error_of, exists, get_str, group,
    master_with_replicas, mcheck, mpeek, multi_args, multi_command, pexpiretime, propagated_by,
    reset, run, server_ms, stored, try_run, wait_for_rewrite, wait_replicas, wrong_algorithm,
    Abilities, DataDir, Dataset, Decision, Group, Lcg, Limiter, Multi, Server, FIXED,
    NOT_LIMITER_STATE, SLIDING, THROTTLE, TOKEN, WRONGTYPE,
};
use redis::{Connection, Value};

const ERR_NUMKEYS: &str = "ERR numkeys must be an integer from 1 to 16";
const ERR_GROUPS: &str = "ERR expected one LIMIT group per key, in the order of the keys";
const ERR_DUPLICATE: &str = "ERR each key may appear only once";
const ERR_LIMIT: &str = "ERR limit must be a positive integer (at most 1000000000000000)";
const ERR_PERIOD: &str =
    "ERR period must be a positive integer number of seconds (at most 1000000000)";
const ERR_COST: &str = "ERR cost must be a non-negative integer (at most 1000000000000000)";
const ERR_ALGORITHM: &str = "ERR ALGORITHM must be FIXED, SLIDING or TOKEN";
const ERR_BURST: &str = "ERR burst must be a positive integer (at most 1000000000000000)";
const ERR_BURST_TOO_LARGE: &str =
    "ERR burst is too large for this rate: a full bucket must refill within 1000000000 seconds";
const ERR_BURST_WITHOUT_TOKEN: &str = "ERR BURST is only valid with ALGORITHM TOKEN";

const HOUR_MS: i64 = 3_600_000;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A fixed window of `limit` per `period_s`.
fn fixed(limit: u64, period_s: u64) -> Group {
    group(limit, period_s, &[])
}

/// A sliding window of `limit` per `period_s`.
fn sliding(limit: u64, period_s: u64) -> Group {
    group(limit, period_s, &["ALGORITHM", "SLIDING"])
}

/// A token bucket of `burst` refilled at `limit` per `period_s`.
fn token(limit: u64, period_s: u64, burst: u64) -> Group {
    let burst = burst.to_string();
    group(limit, period_s, &["ALGORITHM", "TOKEN", "BURST", &burst])
}

/// A command given as one line of text.
fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

/// CHECK of `key` with `group`'s arguments, as a command for a transaction.
fn check_command(key: &str, group: &Group) -> redis::Cmd {
    command(&group.check_args("RATELIMIT.CHECK", key))
}

/// The key's value and absolute expiry, for every key.
fn stored_all(con: &mut Connection, keys: &[&str]) -> Vec<common::Stored> {
    keys.iter().map(|k| stored(con, *k)).collect()
}

/// DUMP and absolute expiry of every key: everything about them.
fn dumped_all(con: &mut Connection, keys: &[&str]) -> Vec<(Option<Vec<u8>>, i64)> {
    keys.iter().map(|k| dumped(con, *k)).collect()
}

/// Waits, by the server's clock, until at least `room_ms` are left in the
/// current hour, so that hour-long sliding windows do not roll over during
/// a step that assumes one window.
fn wait_for_room_in_the_hour(con: &mut Connection, room_ms: i64) {
    let left = HOUR_MS - server_ms(con) % HOUR_MS;
    if left < room_ms {
        sleep(Duration::from_millis((left + 5) as u64));
    }
}

/// Sleeps, in steps the server's clock decides, until it reads `at_ms`.
fn sleep_until(con: &mut Connection, at_ms: i64) {
    loop {
        let now = server_ms(con);
        if now >= at_ms {
            return;
        }
        sleep(Duration::from_millis((at_ms - now) as u64));
    }
}

/// Replies of a transaction, parsed.
fn parse<T: redis::FromRedisValue>(value: &Value) -> T {
    redis::from_redis_value(value.clone()).unwrap_or_else(|e| panic!("{value:?}: {e}"))
}

// ---------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------

#[test]
fn mcheck_replies_exactly_for_mixed_algorithms() {
    let server = Server::start();
    let mut con = server.connect();
    let keys = ["mix:fixed", "mix:sliding", "mix:token"];
    wait_for_room_in_the_hour(&mut con, 10_000);

    // Admitted: each limit charged its own cost at one instant.
    let first = mcheck(
        &mut con,
        &keys,
        &[fixed(10, 60), sliding(5, 3600), token(3, 60, 6).cost(2)],
    );
    // The fixed window opened at the call's instant.
    let now = pexpiretime(&mut con, keys[0]) - 60_000;
    // A sliding window ends with the window after the epoch-aligned one it
    // counts in; a token takes 20 s to come back.
    let sliding_end = (now / HOUR_MS + 2) * HOUR_MS;
    let full_at = now + 40_000;
    assert_eq!(
        first.each,
        [
            Decision::allowed(9, 10, 60_000),
            Decision::allowed(4, 5, sliding_end - now),
            Decision::allowed(4, 3, 40_000),
        ]
    );
    // Binding: the least room left, 4 of 5 (9 of 10 and 4 of 3 are more).
    assert_eq!((first.allowed, first.position), (true, 2), "{first:?}");
    assert_eq!(first.binding, first.each[1]);
    let after_first = stored_all(&mut con, &keys);
    let values: Vec<Option<&str>> = after_first.iter().map(|s| s.text()).collect();
    assert_eq!(values, [Some("1"), Some("S0:1"), Some("T0")]);
    let expiries: Vec<i64> = after_first.iter().map(|s| s.expires_at).collect();
    assert_eq!(expiries, [now + 60_000, sliding_end, full_at]);

    // Denied: the bucket holds 4 tokens and 5 are asked; the other two
    // would admit their costs exactly.
    let second = mcheck(
        &mut con,
        &keys,
        &[
            fixed(10, 60).cost(9),
            sliding(5, 3600).cost(4),
            token(3, 60, 6).cost(5),
        ],
    );
    let now2 = now + 60_000 - second.each[0].reset_after_ms;
    assert!(
        (now..now + 20_000).contains(&now2) && now2 / HOUR_MS == now / HOUR_MS,
        "the second call ran at {now2}, the first at {now}"
    );
    assert_eq!(
        second.each,
        [
            Decision::allowed(9, 10, now + 60_000 - now2),
            Decision::allowed(4, 5, sliding_end - now2),
            // Five tokens are there 20 s before the bucket is full.
            Decision::denied(4, 3, full_at - 20_000 - now2, full_at - now2),
        ]
    );
    assert_eq!((second.allowed, second.position), (false, 3), "{second:?}");
    assert_eq!(second.binding, second.each[2]);
    assert_eq!(
        stored_all(&mut con, &keys),
        after_first,
        "a denial changed a key"
    );
}

#[test]
fn mcheck_binds_the_least_room_when_admitted() {
    let server = Server::start();
    let mut con = server.connect();
    // What it shows, the groups, (remaining, limit) of each, the binding
    // position; every case on fresh keys.
    type Case = (&'static str, Vec<Group>, Vec<(i64, i64)>, i64);
    let cases: Vec<Case> = vec![
        (
            "one limit binds itself",
            vec![fixed(10, 60)],
            vec![(9, 10)],
            1,
        ),
        (
            "a share, not a count: 50 of 1000 is less room than 9 of 10",
            vec![fixed(10, 60), fixed(1000, 60).cost(950)],
            vec![(9, 10), (50, 1000)],
            2,
        ),
        (
            "equal shares: the first",
            vec![fixed(10, 60), fixed(20, 60).cost(2)],
            vec![(9, 10), (18, 20)],
            1,
        ),
        (
            "equal shares the other way round: the first",
            vec![fixed(20, 60).cost(2), fixed(10, 60)],
            vec![(18, 20), (9, 10)],
            1,
        ),
        (
            "across algorithms: a bucket's room is a share of its rate",
            vec![
                token(2, 60, 4).cost(2),
                sliding(4, 3600),
                fixed(10, 60).cost(5),
            ],
            vec![(2, 2), (3, 4), (5, 10)],
            3,
        ),
        (
            "a look counts its room as it is",
            vec![fixed(10, 60).cost(0), fixed(10, 60).cost(10)],
            vec![(10, 10), (0, 10)],
            2,
        ),
    ];
    for (i, (what, groups, shares, position)) in cases.into_iter().enumerate() {
        let keys: Vec<String> = (0..groups.len()).map(|k| format!("room:{i}:{k}")).collect();
        let reply = mcheck(&mut con, &keys, &groups);
        assert!(reply.allowed, "{what}: {reply:?}");
        let each: Vec<(i64, i64)> = reply.each.iter().map(|d| (d.remaining, d.limit)).collect();
        assert_eq!(each, shares, "{what}");
        assert_eq!(reply.position, position, "{what}: {reply:?}");
        assert_eq!(reply.binding, reply.binding_each(), "{what}");
    }
}

#[test]
fn mcheck_binds_the_latest_retry_when_denied() {
    let server = Server::start();
    let mut con = server.connect();

    // Full windows of 50, 200 and 100 s, opened by one call at one instant.
    let late = ["late:50", "late:200", "late:100"];
    let windows = [fixed(1, 50), fixed(1, 200), fixed(1, 100)];
    assert!(mcheck(&mut con, &late, &windows).allowed);
    let ends: Vec<i64> = late.iter().map(|k| pexpiretime(&mut con, *k)).collect();
    let denied = mcheck(&mut con, &late, &windows);
    assert_eq!((denied.allowed, denied.position), (false, 2), "{denied:?}");
    let now = ends[1] - denied.binding.retry_after_ms;
    let expected: Vec<Decision> = ends
        .iter()
        .map(|end| Decision::denied(0, 1, end - now, end - now))
        .collect();
    assert_eq!(denied.each, expected);
    assert_eq!(denied.binding, denied.each[1]);

    // Only a denying limit binds, however little room another has.
    let reply = mcheck(
        &mut con,
        &["late:50", "fresh:all"],
        &[fixed(1, 50), fixed(5, 60).cost(5)],
    );
    assert_eq!((reply.allowed, reply.position), (false, 1), "{reply:?}");
    // The admitting limit answers as its PEEK: nothing deducted.
    assert_eq!(reply.each[1], Decision::allowed(5, 5, 0));
    assert!(!exists(&mut con, "fresh:all"));

    // Equal retry times: the first, in either order.
    let tie = ["tie:a", "tie:b"];
    assert!(mcheck(&mut con, &tie, &[fixed(1, 100), fixed(1, 100)]).allowed);
    for keys in [tie, ["tie:b", "tie:a"]] {
        let reply = mcheck(&mut con, &keys, &[fixed(1, 100), fixed(1, 100)]);
        assert_eq!((reply.allowed, reply.position), (false, 1), "{reply:?}");
        assert_eq!(reply.each[0], reply.each[1]);
        assert!(reply.binding.retry_after_ms > 0, "{reply:?}");
    }

    // A cost that can never fit (-1) outranks any wait, in either place.
    let never = fixed(5, 60).cost(6);
    let reply = mcheck(
        &mut con,
        &["late:200", "never:a"],
        &[fixed(1, 200), never.clone()],
    );
    assert_eq!((reply.allowed, reply.position), (false, 2), "{reply:?}");
    assert_eq!(reply.binding, Decision::denied(5, 5, -1, 0));
    let reply = mcheck(
        &mut con,
        &["never:a", "late:200"],
        &[never.clone(), fixed(1, 200)],
    );
    assert_eq!((reply.allowed, reply.position), (false, 1), "{reply:?}");
    assert_eq!(reply.binding, Decision::denied(5, 5, -1, 0));
    assert!(reply.each[1].retry_after_ms > 100_000, "{reply:?}");
    // ... and of several, the first.
    let reply = mcheck(
        &mut con,
        &["never:a", "late:200", "never:b"],
        &[never, fixed(1, 200), fixed(8, 60).cost(9)],
    );
    assert_eq!((reply.allowed, reply.position), (false, 1), "{reply:?}");
    assert_eq!(reply.each[2], Decision::denied(8, 8, -1, 0));
    assert!(!exists(&mut con, "never:a") && !exists(&mut con, "never:b"));
}

/// Runs PEEK of each key with its group, MPEEK, then MCHECK, at one
/// instant, and asserts MPEEK's rule: each limit's numbers are its PEEK
/// (nothing deducted, admitted or not), the verdict and binding limit are
/// MCHECK's, and the head's numbers are the binding limit's PEEK. Returns
/// MCHECK's reply.
fn assert_mpeek_is_each_peek_with_mchecks_verdict(
    con: &mut Connection,
    what: &str,
    keys: &[&str],
    groups: &[Group],
) -> Multi {
    let mut cmds: Vec<redis::Cmd> = keys
        .iter()
        .zip(groups)
        .map(|(key, group)| command(&group.check_args("RATELIMIT.PEEK", key)))
        .collect();
    cmds.push(multi_command("RATELIMIT.MPEEK", keys, groups));
    cmds.push(multi_command("RATELIMIT.MCHECK", keys, groups));
    let replies = at_one_instant(con, keys, &cmds);
    let peeks: Vec<Decision> = replies[..keys.len()].iter().map(parse).collect();
    let (peeked, checked): (Multi, Multi) =
        (parse(&replies[keys.len()]), parse(&replies[keys.len() + 1]));
    assert_eq!(peeked.each, peeks, "{what}: MPEEK's limits are their PEEKs");
    assert_eq!(
        (peeked.allowed, peeked.position),
        (checked.allowed, checked.position),
        "{what}: MPEEK's verdict is MCHECK's: {peeked:?} {checked:?}"
    );
    assert_eq!(
        peeked.binding,
        peeks[usize::try_from(peeked.position - 1).unwrap()],
        "{what}: MPEEK's head is the binding limit's PEEK"
    );
    checked
}

#[test]
fn mpeek_answers_each_limits_peek_with_the_verdict_mcheck_would_give() {
    let server = Server::start();
    let mut con = server.connect();
    wait_for_room_in_the_hour(&mut con, 30_000);
    let keys = ["{p}:fixed", "{p}:sliding", "{p}:token"];
    let groups = |costs: [u64; 3]| {
        vec![
            fixed(5, 3600).cost(costs[0]),
            sliding(5, 3600).cost(costs[1]),
            token(2, 3600, 4).cost(costs[2]),
        ]
    };
    // (costs, admitted), and what is left after each step.
    let steps: [([u64; 3], bool); 9] = [
        // Fresh keys: 4, 4 and 3 left.
        ([1, 1, 1], true),
        // State in use: 2, 3 and 1 left.
        ([2, 1, 2], true),
        // A look.
        ([0, 0, 0], true),
        // Denied by each limit in turn, and by a cost that never fits.
        ([3, 1, 1], false),
        ([1, 4, 1], false),
        ([1, 1, 2], false),
        ([1, 9, 1], false),
        // The fixed window and the bucket emptied.
        ([2, 0, 1], true),
        ([1, 1, 0], false),
    ];
    for (i, (costs, admitted)) in steps.into_iter().enumerate() {
        let reply = assert_mpeek_is_each_peek_with_mchecks_verdict(
            &mut con,
            &format!("step {i}, costs {costs:?}"),
            &keys,
            &groups(costs),
        );
        assert_eq!(reply.allowed, admitted, "step {i}: {reply:?}");
    }

    // A counter without an expiry that denies by itself, next to a fresh
    // limit; a window longer than the period allows, admitted.
    let _: () = run(&mut con, &["SET", "{p}:bare", "9"]);
    let reply = assert_mpeek_is_each_peek_with_mchecks_verdict(
        &mut con,
        "a bare counter",
        &["{p}:bare", "{p}:fresh"],
        &[fixed(5, 60), fixed(5, 60)],
    );
    assert_eq!((reply.allowed, reply.position), (false, 1));
    let far = (server_ms(&mut con) + 1_000_000_000).to_string();
    let _: () = run(&mut con, &["SET", "{p}:long", "1", "PXAT", &far]);
    let reply = assert_mpeek_is_each_peek_with_mchecks_verdict(
        &mut con,
        "a long window",
        &["{p}:long", "{p}:fresh"],
        &[fixed(5, 60), fixed(5, 60)],
    );
    assert!(reply.allowed, "{reply:?}");

    // MPEEK alone changes nothing and creates nothing, even where MCHECK
    // would store (a bare counter denying by itself).
    let _: () = run(&mut con, &["SET", "{p}:bare2", "9"]);
    let all = [
        "{p}:fixed",
        "{p}:sliding",
        "{p}:token",
        "{p}:bare2",
        "{p}:new",
    ];
    let before = dumped_all(&mut con, &all);
    let reply = mpeek(
        &mut con,
        &all,
        &[
            fixed(5, 3600),
            sliding(5, 3600),
            token(2, 3600, 4),
            fixed(5, 60),
            fixed(5, 60),
        ],
    );
    assert!(!reply.allowed, "{reply:?}");
    assert_eq!(dumped_all(&mut con, &all), before);
    assert!(!exists(&mut con, "{p}:new"));
}

/// Runs `CHECK twin` and `MCHECK 1 key` with `group` at one instant, on
/// keys holding the same state; asserts MCHECK answers CHECK's five
/// integers (as its head and as its one limit) and leaves the same state.
fn assert_like_check(con: &mut Connection, key: &str, twin: &str, group: &Group, what: &str) {
    let replies = at_one_instant(
        con,
        &[key, twin],
        &[
            check_command(twin, group),
            multi_command("RATELIMIT.MCHECK", &[key], std::slice::from_ref(group)),
        ],
    );
    let (checked, multi): (Decision, Multi) = (parse(&replies[0]), parse(&replies[1]));
    assert_eq!(
        (multi.allowed, multi.binding, multi.position, &multi.each),
        (checked.allowed, checked, 1, &vec![checked]),
        "{what}: {:?}",
        group.args()
    );
    assert_eq!(
        stored(con, key),
        stored(con, twin),
        "{what}: {:?}",
        group.args()
    );
}

/// Sets `key` and `twin` to the same value, with the same absolute expiry
/// (`None`: none).
fn set_both(con: &mut Connection, keys: [&str; 2], value: &str, expires_at: Option<i64>) {
    for key in keys {
        let mut args = vec!["SET".to_string(), key.to_string(), value.to_string()];
        if let Some(at) = expires_at {
            args.extend(["PXAT".to_string(), at.to_string()]);
        }
        let _: () = run(con, &args);
    }
}

#[test]
fn mcheck_of_one_key_is_check() {
    let server = Server::start();
    let mut con = server.connect();

    // Every algorithm through a sequence of costs: admitted, looks, denied,
    // never fitting.
    let sequences: [(&str, Group, &[u64]); 3] = [
        ("fixed", fixed(3, 3600), &[1, 0, 2, 1, 4, 0, 3]),
        ("sliding", sliding(3, 3600), &[1, 0, 2, 1, 4, 0, 3]),
        ("token", token(3, 3600, 5), &[2, 3, 1, 0, 6, 0, 5]),
    ];
    for (name, group, costs) in sequences {
        let (key, twin) = (format!("one:{name}"), format!("twin:{name}"));
        for &cost in costs {
            let group = group.clone().cost(cost);
            assert_like_check(&mut con, &key, &twin, &group, name);
        }
        assert!(exists(&mut con, &key), "{key}");
    }

    // A look at a missing key creates nothing, in any algorithm.
    for (name, group) in [
        ("fixed", fixed(3, 60)),
        ("sliding", sliding(3, 60)),
        ("token", token(3, 60, 5)),
    ] {
        let (key, twin) = (format!("look:{name}"), format!("look-twin:{name}"));
        assert_like_check(&mut con, &key, &twin, &group.cost(0), name);
        assert!(!exists(&mut con, &key) && !exists(&mut con, &twin));
    }

    // Counters without an expiry: a look leaves them so, a counted request
    // gives them one, admitted or not.
    let bare = ["one:bare", "twin:bare"];
    set_both(&mut con, bare, "2", None);
    assert_like_check(
        &mut con,
        bare[0],
        bare[1],
        &fixed(5, 60).cost(0),
        "bare look",
    );
    assert_eq!(pexpiretime(&mut con, bare[0]), -1);
    assert_like_check(&mut con, bare[0], bare[1], &fixed(5, 60), "bare admitted");
    assert!(pexpiretime(&mut con, bare[0]) > 0);
    set_both(&mut con, bare, "7", None);
    for what in ["bare denied", "bare denied again"] {
        assert_like_check(&mut con, bare[0], bare[1], &fixed(5, 60), what);
        assert_eq!(get_str(&mut con, bare[0]).as_deref(), Some("7"));
        assert!(pexpiretime(&mut con, bare[0]) > 0);
    }

    // State whose expiry lies beyond what the parameters allow (the period
    // was shortened): admitted or denied, the expiry is brought in.
    let far = server_ms(&mut con) + 1_000_000_000;
    let long = ["one:long", "twin:long"];
    let cases: [(&str, Group); 5] = [
        ("1", fixed(5, 60)),
        ("9", fixed(5, 60)),
        ("S0:9", sliding(5, 60)),
        ("S0:2", sliding(5, 60)),
        ("T0", token(1, 60, 1)),
    ];
    for (value, group) in cases {
        set_both(&mut con, long, value, Some(far));
        assert_like_check(&mut con, long[0], long[1], &group, value);
        assert!(
            pexpiretime(&mut con, long[0]) < far,
            "{value}: the expiry was not brought in"
        );
    }
}

/// Where the one-key comparisons run: the module, or the fallback library
/// with `NOW` pinned to the instant of its transaction.
enum Backend {
    Module,
    Fallback(Route),
}

/// One call: the command (`check`, `mpeek`, …), its keys, its arguments
/// after them.
type Call = (&'static str, Vec<String>, Vec<String>);

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Module => "module",
            Backend::Fallback(_) => "fallback",
        }
    }

    /// Runs `calls` in one MULTI/EXEC at one instant: the module's clock,
    /// or the fallback's NOW, which is the server's then.
    fn at_one_instant(&self, con: &mut Connection, keys: &[&str], calls: &[Call]) -> Vec<Value> {
        let bytes =
            |v: &[String]| -> Vec<Vec<u8>> { v.iter().map(|s| s.as_bytes().to_vec()).collect() };
        match self {
            Backend::Module => {
                let cmds: Vec<redis::Cmd> = calls
                    .iter()
                    .map(|(verb, keys, args)| module_cmd(verb, &bytes(keys), &bytes(args)))
                    .collect();
                at_one_instant(con, keys, &cmds)
            }
            Backend::Fallback(route) => at_a_pinned_instant(con, keys, |now| {
                calls
                    .iter()
                    .map(|(verb, keys, args)| {
                        let mut args = bytes(args);
                        args.extend([b"NOW".to_vec(), now.to_string().into_bytes()]);
                        route.cmd(verb, &bytes(keys), &args)
                    })
                    .collect()
            }),
        }
    }
}

/// A random group of `kind`: a limit of 1 to 6 per 1 to 3 s, a cost of 0
/// to 2 past it, a token bucket's burst its limit or 1 to 8.
fn random_group(rng: &mut Lcg, kind: &str) -> Vec<String> {
    let limit = 1 + rng.below(6);
    let mut args = vec![limit.to_string(), (1 + rng.below(3)).to_string()];
    args.extend(["COST".to_string(), rng.below(limit + 3).to_string()]);
    args.extend(["ALGORITHM".to_string(), kind.to_string()]);
    if kind == "TOKEN" && rng.below(2) == 0 {
        args.extend(["BURST".to_string(), (1 + rng.below(8)).to_string()]);
    }
    args
}

/// A state of `kind` as a hand, or another client, may leave it: its
/// value, and its absolute expiry (`None`: none).
fn random_state(rng: &mut Lcg, kind: &str, now: i64) -> (String, Option<i64>) {
    let value = match kind {
        "FIXED" => rng.below(9).to_string(),
        "SLIDING" => format!("S{}:{}", rng.below(7), rng.below(7)),
        _ if rng.below(4) == 0 => format!("T{}", "0".repeat(1 + rng.index(20))),
        _ => format!("T{}", rng.below(3_000_000)),
    };
    let expires_at = match rng.below(5) {
        0 => None,
        1 => Some(now + 1_000_000_000),
        _ => Some(now + 1 + rng.below(6_000) as i64),
    };
    (value, expires_at)
}

#[test]
fn mpeek_and_mcheck_of_one_key_are_peek_and_check_from_random_states() {
    // MPEEK of one key is that key's PEEK, and MCHECK of one key its CHECK,
    // for every algorithm and from any state: a random sequence of calls,
    // states set by hand and time passing (expiries moved back, as waiting
    // would leave them) on twin keys, compared at one instant after every
    // step. MPEEK used to answer an admitted limit as charged.
    let server = Server::start();
    let mut con = server.connect();
    let route = Route::for_server(&mut con);
    let mut rng = Lcg::new(0x0e_0001);
    let mut compared = 0;
    for backend in [Backend::Module, Backend::Fallback(route)] {
        let who = backend.name();
        for kind in ["FIXED", "SLIDING", "TOKEN"] {
            let (a, b) = (format!("{who}:{kind}:a"), format!("{who}:{kind}:b"));
            let keys = [a.as_str(), b.as_str()];
            let one = |verb: &'static str, key: &str, group: &[String]| -> Call {
                (verb, vec![key.to_string()], group.to_vec())
            };
            let multi = |verb: &'static str, key: &str, group: &[String]| -> Call {
                let mut args = vec!["LIMIT".to_string()];
                args.extend(group.iter().cloned());
                (verb, vec![key.to_string()], args)
            };
            for step in 0..120 {
                let group = random_group(&mut rng, kind);
                let what = format!("{who} {kind} step {step}, {group:?}");
                match rng.below(10) {
                    // The same CHECK on both.
                    0..=4 => {
                        let replies = backend.at_one_instant(
                            &mut con,
                            &keys,
                            &[one("check", &a, &group), one("check", &b, &group)],
                        );
                        assert_eq!(replies[0], replies[1], "{what}");
                    }
                    5 => {
                        let (value, at) = random_state(&mut rng, kind, server_ms(&mut con));
                        set_both(&mut con, keys, &value, at);
                    }
                    6 => {
                        let by = 1 + rng.below(3_000) as i64;
                        let at = pexpiretime(&mut con, &a);
                        if at > 0 {
                            for key in keys {
                                let _: () =
                                    run(&mut con, &["PEXPIREAT", key, &(at - by).to_string()]);
                            }
                        }
                    }
                    _ => {}
                }
                assert_eq!(stored(&mut con, &a), stored(&mut con, &b), "{what}");

                let replies = backend.at_one_instant(
                    &mut con,
                    &keys,
                    &[one("peek", &a, &group), multi("mpeek", &b, &group)],
                );
                let (peeked, multi_peeked): (Decision, Multi) =
                    (parse(&replies[0]), parse(&replies[1]));
                assert_eq!(
                    multi_peeked,
                    Multi {
                        allowed: peeked.allowed,
                        binding: peeked,
                        position: 1,
                        each: vec![peeked],
                    },
                    "{what}: MPEEK of one key is its PEEK"
                );

                let replies = backend.at_one_instant(
                    &mut con,
                    &keys,
                    &[one("check", &a, &group), multi("mcheck", &b, &group)],
                );
                let (checked, multi_checked): (Decision, Multi) =
                    (parse(&replies[0]), parse(&replies[1]));
                assert_eq!(
                    multi_checked,
                    Multi {
                        allowed: checked.allowed,
                        binding: checked,
                        position: 1,
                        each: vec![checked],
                    },
                    "{what}: MCHECK of one key is its CHECK"
                );
                assert_eq!(
                    stored(&mut con, &a),
                    stored(&mut con, &b),
                    "{what}: MCHECK of one key stores what CHECK does"
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 2 * 3 * 120);
}

// ---------------------------------------------------------------------------
// What a denial stores
// ---------------------------------------------------------------------------

#[test]
fn mcheck_denied_charges_nothing() {
    let server = Server::start();
    let mut con = server.connect();
    let keys = [
        "{d}:fixed",
        "{d}:sliding",
        "{d}:token",
        "{d}:full",
        "{d}:fresh",
    ];
    check(&mut con, keys[0], 5, 3600, &["COST", "2"]);
    check(
        &mut con,
        keys[1],
        5,
        3600,
        &["ALGORITHM", "SLIDING", "COST", "3"],
    );
    check(
        &mut con,
        keys[2],
        2,
        3600,
        &["ALGORITHM", "TOKEN", "BURST", "4"],
    );
    check(&mut con, keys[3], 1, 3600, &[]);
    let before = dumped_all(&mut con, &keys);
    let values = stored_all(&mut con, &keys);

    // Each other limit admits its cost exactly; one is full.
    let admitting = [
        fixed(5, 3600).cost(3),
        sliding(5, 3600).cost(2),
        token(2, 3600, 4).cost(3),
    ];
    let mut groups = admitting.to_vec();
    groups.extend([fixed(1, 3600), fixed(5, 60).cost(5)]);
    let denied = mcheck(&mut con, &keys, &groups);
    assert_eq!((denied.allowed, denied.position), (false, 4), "{denied:?}");
    assert!(denied
        .each
        .iter()
        .enumerate()
        .all(|(i, d)| d.allowed == (i != 3)));
    // The full one first, and a cost that never fits: the same.
    let mut first = vec![keys[3]];
    first.extend(&keys[..3]);
    let mut groups = vec![fixed(1, 3600)];
    groups.extend(admitting.iter().cloned());
    assert!(!mcheck(&mut con, &first, &groups).allowed);
    let mut never = keys.to_vec();
    never[3] = "{d}:never";
    let mut groups = admitting.to_vec();
    groups.extend([fixed(5, 60).cost(6), fixed(5, 60)]);
    let reply = mcheck(&mut con, &never, &groups);
    assert_eq!((reply.allowed, reply.position), (false, 4), "{reply:?}");

    // GET, PEXPIRETIME (and DUMP) of every key as they were; nothing new.
    assert_eq!(stored_all(&mut con, &keys), values);
    assert_eq!(dumped_all(&mut con, &keys), before);
    assert!(!exists(&mut con, "{d}:fresh") && !exists(&mut con, "{d}:never"));
}

#[test]
fn mcheck_denied_stores_only_what_check_would_store_alone() {
    let server = Server::start();
    let mut con = server.connect();

    // A counter without an expiry that denies by itself gets its window,
    // exactly as CHECK gives it to a twin at the same instant; the limit
    // next to it, which would admit, is not charged (and not created).
    set_both(&mut con, ["{b}:bare", "{b}:twin"], "7", None);
    let replies = at_one_instant(
        &mut con,
        &["{b}:bare", "{b}:twin", "{b}:other"],
        &[
            check_command("{b}:twin", &fixed(5, 60)),
            multi_command(
                "RATELIMIT.MCHECK",
                &["{b}:bare", "{b}:other"],
                &[fixed(5, 60), fixed(10, 60)],
            ),
        ],
    );
    let (checked, multi): (Decision, Multi) = (parse(&replies[0]), parse(&replies[1]));
    assert_eq!((multi.allowed, multi.position), (false, 1), "{multi:?}");
    assert_eq!(multi.each[0], checked);
    // Its window starts at the call: the whole period to wait.
    assert_eq!(checked, Decision::denied(0, 5, 60_000, 60_000));
    let bare = stored(&mut con, "{b}:bare");
    assert_eq!(bare, stored(&mut con, "{b}:twin"));
    assert_eq!(bare.text(), Some("7"));
    assert!(bare.expires_at > 0, "{bare:?}");
    assert!(!exists(&mut con, "{b}:other"));

    // A window longer than the period allows, denying by itself: brought
    // in, as CHECK brings in its twin's.
    let far = server_ms(&mut con) + 1_000_000_000;
    set_both(&mut con, ["{b}:long", "{b}:long-twin"], "9", Some(far));
    let replies = at_one_instant(
        &mut con,
        &["{b}:long", "{b}:long-twin", "{b}:other"],
        &[
            check_command("{b}:long-twin", &fixed(5, 60)),
            multi_command(
                "RATELIMIT.MCHECK",
                &["{b}:other", "{b}:long"],
                &[fixed(10, 60), fixed(5, 60)],
            ),
        ],
    );
    let (checked, multi): (Decision, Multi) = (parse(&replies[0]), parse(&replies[1]));
    assert_eq!((multi.allowed, multi.position), (false, 2), "{multi:?}");
    assert_eq!(multi.each[1], checked);
    assert_eq!(checked, Decision::denied(0, 5, 60_000, 60_000));
    let long = stored(&mut con, "{b}:long");
    assert_eq!(long, stored(&mut con, "{b}:long-twin"));
    assert!(long.expires_at < far, "{long:?}");
    assert!(!exists(&mut con, "{b}:other"));

    // A bare counter that would admit is not charged when another limit
    // denies: it keeps its value and stays without an expiry. Nor does a
    // look (COST 0) at one over its limit store anything.
    check(&mut con, "{b}:full", 1, 3600, &[]);
    let _: () = run(&mut con, &["SET", "{b}:small", "3"]);
    let _: () = run(&mut con, &["SET", "{b}:over", "9"]);
    let reply = mcheck(
        &mut con,
        &["{b}:small", "{b}:over", "{b}:full"],
        &[fixed(5, 60), fixed(5, 60).cost(0), fixed(1, 3600)],
    );
    assert_eq!(
        reply.each.iter().map(|d| d.allowed).collect::<Vec<_>>(),
        [true, false, false]
    );
    for (key, value) in [("{b}:small", "3"), ("{b}:over", "9")] {
        assert_eq!(get_str(&mut con, key).as_deref(), Some(value));
        assert_eq!(pexpiretime(&mut con, key), -1, "{key}");
    }
}

// ---------------------------------------------------------------------------
// The aggregate retry time
// ---------------------------------------------------------------------------

/// One call of the replay, at its own instant.
struct Replayed {
    now: i64,
    reply: Multi,
}

/// Sets up limits that deny a request for a second or two and replays it
/// around the instant the denial named, by the server's clock. `None` when
/// this machine did not give calls in both the millisecond before that
/// instant and that very millisecond (a stall), to be tried again.
fn replay_around_retry(con: &mut Connection, attempt: usize) -> Option<(i64, Vec<Replayed>)> {
    let tag = format!("{{r{attempt}}}");
    let keys: Vec<String> = ["clock", "fixed", "token", "sliding"]
        .iter()
        .map(|name| format!("{tag}:{name}"))
        .collect();
    // The first limit is a clock: a window no call fills, whose
    // `reset_after_ms` is its known end minus the call's instant.
    let limits = |costs: [u64; 3]| {
        vec![
            fixed(1_000_000_000_000_000, 3600),
            fixed(2, 1).cost(costs[0]),
            token(1, 1, 3).cost(costs[1]),
            sliding(3, 1).cost(costs[2]),
        ]
    };
    let filled = mcheck(con, &keys, &limits([2, 3, 3]));
    assert!(filled.allowed, "{filled:?}");
    let clock_end = pexpiretime(con, keys[0].as_str());
    let now_of = |reply: &Multi| clock_end - reply.each[0].reset_after_ms;

    let request = limits([1, 2, 1]);
    let denied = mcheck(con, &keys, &request);
    assert!(!denied.allowed, "{denied:?}");
    // The binding limit is the denying one that frees up last.
    let latest = denied
        .each
        .iter()
        .filter(|d| !d.allowed)
        .map(|d| d.retry_after_ms)
        .max()
        .unwrap();
    assert_eq!(denied.binding.retry_after_ms, latest, "{denied:?}");
    let admit_at = now_of(&denied) + denied.binding.retry_after_ms;

    // Wait by the server's clock until just before, then replay as fast as
    // the connection goes until one is admitted.
    sleep_until(con, admit_at - 4);
    let mut calls = Vec::new();
    loop {
        let reply = mcheck(con, &keys, &request);
        let now = now_of(&reply);
        let admitted = reply.allowed;
        calls.push(Replayed { now, reply });
        if admitted {
            break;
        }
        assert!(
            now <= admit_at + 1000,
            "still denied at {now}, {admit_at} was named"
        );
    }
    let saw = |at: i64| calls.iter().any(|c| c.now == at);
    (saw(admit_at - 1) && saw(admit_at)).then_some((admit_at, calls))
}

#[test]
fn mcheck_retry_after_is_exactly_when_the_whole_request_passes() {
    let server = Server::start();
    let mut con = server.connect();
    for attempt in 0..5 {
        let Some((admit_at, calls)) = replay_around_retry(&mut con, attempt) else {
            continue;
        };
        for call in &calls {
            let reply = &call.reply;
            if call.now < admit_at {
                // Still denied, and still naming the same instant.
                assert!(
                    !reply.allowed,
                    "admitted at {}, before {admit_at}",
                    call.now
                );
                assert_eq!(
                    reply.binding.retry_after_ms,
                    admit_at - call.now,
                    "at {}: {reply:?}",
                    call.now
                );
            } else {
                // The first call at the named instant is admitted.
                assert_eq!(call.now, admit_at, "{reply:?}");
                assert!(reply.allowed, "denied at {admit_at}: {reply:?}");
            }
        }
        return;
    }
    panic!("five replays missed the millisecond before or at the named instant");
}

// ---------------------------------------------------------------------------
// Replication and persistence
// ---------------------------------------------------------------------------

/// The limiters of the replicated workload: per tenant (a hash tag), one of
/// each algorithm CHECK takes and a second fixed window, none of which
/// changes by itself within a test ([`common::Kind::lasting`]).
fn tenant_limiters(tenants: usize) -> Vec<Vec<(String, Limiter)>> {
    let kinds = algorithms();
    (0..tenants)
        .map(|t| {
            (0..4)
                .map(|i| {
                    let kind = kinds[i % kinds.len()];
                    let capacity = [3, 5, 4, 2][i];
                    (
                        format!("{{t{t}}}:{}:{i}", kind.lower()),
                        kind.lasting(capacity),
                    )
                })
                .collect()
        })
        .collect()
}

/// What a workload did.
#[derive(Debug, Default)]
struct Tally {
    admitted_several: usize,
    denied_several: usize,
    bare_counters_given_a_window: usize,
}

/// A seeded workload of MCHECK (mostly over several keys), MPEEK, CHECK,
/// RESET and counters written without an expiry, over three tenants.
fn multi_workload(con: &mut Connection, seed: u64, steps: usize) -> Tally {
    const COSTS: [u64; 7] = [1, 1, 1, 2, 3, 0, 1];
    let tenants = tenant_limiters(3);
    let mut rng = Lcg::new(seed);
    let mut tally = Tally::default();
    for _ in 0..steps {
        let tenant = &tenants[rng.index(tenants.len())];
        let action = rng.below(20);
        // 1 to 4 distinct keys of the tenant, in a random order.
        let mut picked: Vec<usize> = (0..tenant.len()).collect();
        for i in (1..picked.len()).rev() {
            picked.swap(i, rng.index(i + 1));
        }
        picked.truncate(1 + rng.index(tenant.len()));
        let keys: Vec<&str> = picked.iter().map(|&i| tenant[i].0.as_str()).collect();
        let groups: Vec<Group> = picked
            .iter()
            .map(|&i| tenant[i].1.group(COSTS[rng.index(COSTS.len())]))
            .collect();
        let (key, limiter) = &tenant[picked[0]];
        match action {
            0..=11 => {
                let bare: Vec<&str> = keys
                    .iter()
                    .copied()
                    .filter(|k| exists(con, *k) && pexpiretime(con, *k) == -1)
                    .collect();
                let reply = mcheck(con, &keys, &groups);
                if keys.len() > 1 {
                    match reply.allowed {
                        true => tally.admitted_several += 1,
                        false => tally.denied_several += 1,
                    }
                }
                if !reply.allowed && bare.iter().any(|k| pexpiretime(con, *k) > 0) {
                    tally.bare_counters_given_a_window += 1;
                }
            }
            12..=13 => {
                mpeek(con, &keys, &groups);
            }
            14..=16 => {
                let cost = COSTS[rng.index(COSTS.len())];
                limiter.call(con, &limiter.take(key, cost));
            }
            17 => {
                reset(con, &[key]);
            }
            _ => {
                // A counter written without an expiry (by hand, or an INCR
                // whose EXPIRE never came), at or over its limit.
                if limiter.kind == FIXED {
                    let count = limiter.capacity + rng.below(3);
                    let _: () = run(con, &["SET", key, &count.to_string()]);
                }
            }
        }
    }
    tally
}

#[test]
fn replication_replicas_end_identical_after_an_mcheck_workload() {
    let (master, replicas) =
        master_with_replicas(vec![Server::builder(), Server::builder().without_module()]);
    let mut con = master.connect();
    let tally = multi_workload(&mut con, 0x5eed_0001, 600);
    assert!(
        tally.admitted_several > 10
            && tally.denied_several > 10
            && tally.bare_counters_given_a_window > 0,
        "the workload did not do everything: {tally:?}"
    );

    // Looks and plain denials propagate nothing; an admitted call does.
    check(&mut con, "{q}:full", 1, 3600, &[]);
    let quiet = propagated_by(&mut con, |con| {
        mpeek(
            con,
            &["{q}:full", "{q}:new"],
            &[fixed(1, 3600), fixed(5, 60)],
        );
        let denied = mcheck(
            con,
            &["{q}:new", "{q}:full"],
            &[fixed(5, 60), fixed(1, 3600)],
        );
        assert!(!denied.allowed);
        let look = mcheck(
            con,
            &["{q}:new", "{q}:full"],
            &[fixed(5, 60).cost(0), fixed(1, 3600).cost(0)],
        );
        assert!(look.allowed);
    });
    assert_eq!(quiet, 0, "a look or a denial was propagated");
    let counted = propagated_by(&mut con, |con| {
        assert!(mcheck(con, &["{q}:a", "{q}:b"], &[fixed(5, 60), fixed(5, 60)]).allowed);
    });
    assert!(counted > 0, "nothing was propagated");

    wait_replicas(&mut con, replicas.len());
    let expected = Dataset::read(&mut con, &[0]);
    assert!(expected.0[&0].len() > 10, "{expected:?}");
    for replica in &replicas {
        let mut rcon = replica.connect();
        Dataset::read(&mut rcon, &[0])
            .assert_same(&expected, &format!("replica on port {}", replica.port()));
        assert_replica_took_everything(replica);
    }
}

#[test]
fn persistence_aof_holds_mcheck_effects_in_one_transaction_and_reloads_identical() {
    let data = DataDir::new();
    let server = data.aof().start();
    let mut con = server.connect();
    wait_for_rewrite(&mut con);
    let tally = multi_workload(&mut con, 0x5eed_0002, 400);
    assert!(tally.admitted_several > 5, "{tally:?}");

    // A charge of two keys is one transaction: the window opening, then
    // growing.
    let keys = ["{x}:a", "{x}:b"];
    for _ in 0..2 {
        assert!(mcheck(&mut con, &keys, &[fixed(5, 3600), fixed(7, 3600)]).allowed);
    }
    let lower = |arg: &[u8]| String::from_utf8_lossy(arg).to_lowercase();
    let commands: Vec<Vec<String>> = data
        .aof_commands()
        .iter()
        .map(|c| c.iter().map(|a| lower(a)).collect())
        .collect();
    let touching = |c: &Vec<String>| c.len() > 1 && keys.contains(&c[1].as_str());
    let first = commands
        .iter()
        .position(touching)
        .expect("no effect of {x}:a in the AOF");
    let shape: Vec<Vec<&str>> = commands[first - 1..]
        .iter()
        .take(8)
        .map(|c| c.iter().take(3).map(String::as_str).collect())
        .collect();
    let set_or_incr = |c: &Vec<&str>, key: &str, value: &str| match c.as_slice() {
        ["set", k, v] => *k == key && *v == value,
        ["incr", k] => *k == key && value == "+1",
        ["incrby", k, "1"] => *k == key && value == "+1",
        _ => false,
    };
    assert!(
        shape[0] == ["multi"]
            && set_or_incr(&shape[1], "{x}:a", "1")
            && set_or_incr(&shape[2], "{x}:b", "1")
            && shape[3] == ["exec"]
            && shape[4] == ["multi"]
            && set_or_incr(&shape[5], "{x}:a", "+1")
            && set_or_incr(&shape[6], "{x}:b", "+1")
            && shape[7] == ["exec"],
        "the AOF around the charges of {{x}}: {shape:?}"
    );
    assert!(
        !commands.iter().any(|c| c[0].starts_with("ratelimit")),
        "the AOF holds a module command"
    );

    let stored = Dataset::read(&mut con, &[0]);
    server.shutdown();
    for (builder, what) in [
        (data.aof(), "reloaded with the module"),
        (data.aof().without_module(), "reloaded without the module"),
    ] {
        let server = builder.start();
        let mut con = server.connect();
        Dataset::read(&mut con, &[0]).assert_same(&stored, what);
        server.shutdown();
    }
}

#[test]
fn mpeek_runs_on_replicas_and_in_read_only_scripts() {
    let (master, replicas) = master_with_replicas(vec![Server::builder()]);
    let mut con = master.connect();
    let keys = ["{ro}:a", "{ro}:b"];
    let groups = [fixed(5, 3600), sliding(3, 3600)];
    let charged = mcheck(&mut con, &keys, &groups);
    assert!(charged.allowed);
    wait_replicas(&mut con, 1);

    // Admitted, each limit's numbers its PEEK: nothing deducted.
    let mut rcon = replicas[0].connect();
    let on_replica = mpeek(&mut rcon, &keys, &groups);
    assert_eq!(
        on_replica
            .each
            .iter()
            .map(Decision::counts)
            .collect::<Vec<_>>(),
        [(true, 4, 5), (true, 2, 3)]
    );
    let err = error(&mut rcon, &multi_args("RATELIMIT.MCHECK", &keys, &groups));
    assert!(err.starts_with("READONLY"), "{err}");

    if !common::has_read_only_scripts(&mut con, "MPEEK in EVAL_RO") {
        return;
    }
    let script = "return redis.call(ARGV[1], '2', KEYS[1], KEYS[2], 'LIMIT', '5', '3600', \
                  'LIMIT', '3', '3600', 'ALGORITHM', 'SLIDING')";
    let peeked: Multi = redis::cmd("EVAL_RO")
        .arg(script)
        .arg(2)
        .arg(&keys)
        .arg("RATELIMIT.MPEEK")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        peeked.each.iter().map(Decision::counts).collect::<Vec<_>>(),
        [(true, 4, 5), (true, 2, 3)]
    );
    let refused = error_of(
        redis::cmd("EVAL_RO")
            .arg(script)
            .arg(2)
            .arg(&keys)
            .arg("RATELIMIT.MCHECK")
            .query(&mut con),
    );
    assert!(
        refused.contains("Write commands are not allowed"),
        "{refused}"
    );
    assert_eq!(get_str(&mut con, keys[0]).as_deref(), Some("1"));
}

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

#[test]
fn cluster_mcheck_needs_one_slot_and_its_node() {
    let cluster = Cluster::start(3, 0);
    let keys = ["{user:42}:rps", "{user:42}:tpm"];
    let groups = [fixed(60, 60), fixed(100_000, 60).cost(750)];
    let slot = cluster.keyslot(keys[0]);
    assert_eq!(cluster.keyslot(keys[1]), slot);
    let owner = cluster.master_for_slot(slot);
    // Keys in other slots: one this node serves, one another node does.
    let other_slot = |same_node: bool| {
        (0..)
            .map(|i| format!("{{other:{i}}}:rps"))
            .find(|k| {
                cluster.keyslot(k) != slot && (cluster.master_for_key(k) == owner) == same_node
            })
            .unwrap()
    };
    let (near, far) = (other_slot(true), other_slot(false));

    // Hash-tagged keys on their node: counted, both there.
    let mut con = cluster.connect(owner);
    let reply = mcheck(&mut con, &keys, &groups);
    assert_eq!(
        reply.each.iter().map(Decision::counts).collect::<Vec<_>>(),
        [(true, 59, 60), (true, 99_250, 100_000)]
    );
    for key in keys {
        assert!(cluster.holds(owner, key), "{key} not on {owner}");
    }
    // MPEEK: each limit's PEEK, nothing deducted.
    let peeked = mpeek(&mut con, &keys, &groups);
    assert_eq!(peeked.each[0].counts(), (true, 59, 60));

    // Keys of two slots, served by this node or another: CROSSSLOT,
    // nothing counted anywhere.
    for other in [&near, &far] {
        for name in ["RATELIMIT.MCHECK", "RATELIMIT.MPEEK"] {
            let args = multi_args(name, &[keys[0], other.as_str()], &groups);
            let err = error(&mut con, &args);
            assert!(err.starts_with("CROSSSLOT"), "{name}: {err}");
        }
        for port in cluster.masters() {
            assert!(!cluster.holds(port, other), "{other} on {port}");
        }
    }
    assert_eq!(get_str(&mut con, keys[0]).as_deref(), Some("1"));
    // Arguments that name no keys are answered by the node, which lives on.
    for (line, expected) in [
        (
            "RATELIMIT.MCHECK",
            "ERR wrong number of arguments for 'ratelimit.mcheck' command",
        ),
        ("RATELIMIT.MPEEK x {user:42}:rps LIMIT 1 60", ERR_NUMKEYS),
        ("RATELIMIT.MCHECK 5 {user:42}:rps LIMIT 1 60", ERR_GROUPS),
    ] {
        assert_eq!(error(&mut con, &words(line)), expected, "{line}");
    }
    assert_eq!(run::<String>(&mut con, &["PING"]), "PONG");

    // Sent to a node that does not serve the slot: MOVED to the owner.
    let wrong = cluster.masters().into_iter().find(|&p| p != owner).unwrap();
    let mut other = cluster.connect(wrong);
    for name in ["RATELIMIT.MCHECK", "RATELIMIT.MPEEK"] {
        let err = error(&mut other, &multi_args(name, &keys, &groups));
        assert_eq!(err, format!("MOVED {slot} 127.0.0.1:{owner}"), "{name}");
    }
    assert!(!cluster.holds(wrong, keys[0]));

    // A cluster client gets there (following MOVED if it must).
    let mut client = cluster.connection();
    let reply = mcheck(&mut client, &keys, &groups);
    assert_eq!(reply.each[0].counts(), (true, 58, 60));
    assert_eq!(get_str(&mut con, keys[1]).as_deref(), Some("1500"));
}

#[test]
fn cluster_mcheck_whose_numkeys_the_arguments_cannot_hold_gets_its_own_error() {
    // a and b live in different slots: read as keys, they made the call
    // CROSSSLOT. Named no keys, it runs on the node asked and is refused as
    // on a single server.
    let single = Server::start();
    let mut alone = single.connect();
    let cluster = Cluster::start(3, 0);
    assert_ne!(cluster.keyslot("a"), cluster.keyslot("b"));
    for line in [
        "RATELIMIT.MCHECK 3 a b LIMIT 1 1",
        "RATELIMIT.MPEEK 3 a b LIMIT 1 1",
        "RATELIMIT.MCHECK 2 a b LIMIT 1 1",
    ] {
        let expected = error(&mut alone, &words(line));
        assert!(expected.starts_with("ERR"), "{line}: {expected}");
        for port in cluster.masters() {
            let refused = error(&mut cluster.connect(port), &words(line));
            assert_eq!(refused, expected, "{line} on node {port}");
        }
    }
}

// ---------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------

/// What one client did: admitted requests' `remaining` per key.
#[derive(Default)]
struct Seen {
    a: Vec<i64>,
    b: Vec<i64>,
}

#[test]
fn mcheck_never_admits_beyond_either_limit_under_concurrency() {
    let server = Server::start();
    let (a, b) = ("{t}:a", "{t}:b");
    let both = [fixed(100, 3600), fixed(60, 3600)];
    let seen: Vec<Seen> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..32)
            .map(|client| {
                let server = &server;
                let both = &both;
                scope.spawn(move || {
                    let mut con = server.connect();
                    let mut seen = Seen::default();
                    for i in 0..30 {
                        // One request in five charges only one of the keys.
                        match (client + i) % 10 {
                            0 => {
                                let d = check(&mut con, a, 100, 3600, &[]);
                                if d.allowed {
                                    seen.a.push(d.remaining);
                                }
                            }
                            1 => {
                                let d = check(&mut con, b, 60, 3600, &[]);
                                if d.allowed {
                                    seen.b.push(d.remaining);
                                }
                            }
                            _ => {
                                let reply = mcheck(&mut con, &[a, b], both);
                                let admitted = reply.each.iter().all(|d| d.allowed);
                                assert_eq!(reply.allowed, admitted, "{reply:?}");
                                if reply.allowed {
                                    seen.a.push(reply.each[0].remaining);
                                    seen.b.push(reply.each[1].remaining);
                                }
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut con = server.connect();
    for (key, limit, remaining) in [
        (
            a,
            100,
            seen.iter()
                .flat_map(|s| s.a.iter().copied())
                .collect::<Vec<_>>(),
        ),
        (
            b,
            60,
            seen.iter().flat_map(|s| s.b.iter().copied()).collect(),
        ),
    ] {
        // Every admitted unit is in the counter, each one saw its own
        // `remaining`, and the limit was reached, never passed.
        let count: i64 = get_str(&mut con, key).unwrap().parse().unwrap();
        assert_eq!(count, remaining.len() as i64, "{key}");
        assert_eq!(count, limit, "{key}");
        let distinct: BTreeSet<i64> = remaining.iter().copied().collect();
        assert_eq!(distinct, (0..limit).collect::<BTreeSet<i64>>(), "{key}");
    }
}

// ---------------------------------------------------------------------------
// Keys declared: ACL, COMMAND GETKEYS, COMMAND INFO and DOCS
// ---------------------------------------------------------------------------

/// A connection authenticated as `user` (created with `nopass`).
fn connect_as(server: &Server, user: &str) -> Connection {
    let mut con = server.connect();
    let _: () = run(&mut con, &["AUTH", user, "any-password"]);
    con
}

#[test]
fn mcheck_acl_key_patterns_apply_to_every_key() {
    let server = Server::start();
    let mut con = server.connect();
    let keys = ["{t}:a", "{t}:b"];
    let groups = [fixed(5, 3600), fixed(5, 3600)];
    assert!(mcheck(&mut con, &keys, &groups).allowed);
    let before = dumped_all(&mut con, &keys);

    let _: () = run(
        &mut con,
        &["ACL", "SETUSER", "one", "on", "nopass", "~{t}:a", "+@all"],
    );
    let mut one = connect_as(&server, "one");
    for name in ["RATELIMIT.MCHECK", "RATELIMIT.MPEEK"] {
        for keys in [keys, ["{t}:b", "{t}:a"]] {
            let err = error(&mut one, &multi_args(name, &keys, &groups));
            assert!(err.starts_with("NOPERM"), "{name} {keys:?}: {err}");
        }
    }
    assert_eq!(
        dumped_all(&mut con, &keys),
        before,
        "a refused call changed a key"
    );
    assert_eq!(
        mcheck(&mut one, &["{t}:a"], &groups[..1]).each[0].counts(),
        (true, 3, 5)
    );

    let abilities = Abilities::of(&mut con);
    if !abilities.command_info() {
        eprintln!("not run (read-only key patterns): no %R~ selectors before Redis 7.0");
        return;
    }
    // Keys readable only: MPEEK (its keys read-only) runs, MCHECK does not.
    let _: () = run(
        &mut con,
        &[
            "ACL", "SETUSER", "reader", "on", "nopass", "%R~{t}:*", "+@all",
        ],
    );
    let mut reader = connect_as(&server, "reader");
    assert_eq!(
        mpeek(&mut reader, &keys, &groups).each[1].counts(),
        (true, 4, 5)
    );
    let err = error(&mut reader, &multi_args("RATELIMIT.MCHECK", &keys, &groups));
    assert!(err.starts_with("NOPERM"), "{err}");
    assert_eq!(get_str(&mut con, keys[1]).as_deref(), Some("1"));
}

/// The value after `name` in a flat key/value list.
fn field<'a>(list: &'a Value, name: &str) -> &'a Value {
    let Value::Array(items) = list else {
        panic!("not a list: {list:?}");
    };
    items
        .chunks(2)
        .find(|pair| text(&pair[0]) == name)
        .map(|pair| &pair[1])
        .unwrap_or_else(|| panic!("no {name} in {list:?}"))
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        other => panic!("not a text: {other:?}"),
    }
}

fn texts(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) | Value::Set(items) => items.iter().map(text).collect(),
        other => panic!("not a list: {other:?}"),
    }
}

fn items(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        other => panic!("not a list: {other:?}"),
    }
}

/// One argument of COMMAND DOCS in short: name:type, token, flags, and its
/// own arguments.
fn describe_argument(arg: &Value) -> String {
    let mut out = format!("{}:{}", text(field(arg, "name")), text(field(arg, "type")));
    let pairs: Vec<String> = items(arg).chunks(2).map(|p| text(&p[0])).collect();
    if pairs.iter().any(|p| p == "token") {
        out += &format!(" token={}", text(field(arg, "token")));
    }
    if pairs.iter().any(|p| p == "flags") {
        out += &format!(" [{}]", texts(field(arg, "flags")).join(","));
    }
    if pairs.iter().any(|p| p == "arguments") {
        let inner: Vec<String> = items(field(arg, "arguments"))
            .iter()
            .map(describe_argument)
            .collect();
        out += &format!(" ({})", inner.join(", "));
    }
    out
}

#[test]
fn mcheck_and_mpeek_declare_their_keys() {
    let server = Server::start();
    let mut con = server.connect();
    for (name, keys) in [
        ("RATELIMIT.MCHECK", &["a", "b", "c"][..]),
        ("ratelimit.mpeek", &["k"]),
    ] {
        let groups = vec![fixed(1, 60).cost(2); keys.len()];
        let mut args = vec!["COMMAND".to_string(), "GETKEYS".to_string()];
        args.extend(multi_args(name, keys, &groups));
        let found: Vec<String> = run(&mut con, &args);
        assert_eq!(found, keys, "{}", args.join(" "));
    }

    let abilities = Abilities::of(&mut con);
    for (name, flags, key_flags, categories) in [
        (
            "ratelimit.mcheck",
            &["write", "denyoom", "fast", "movablekeys"][..],
            &["RW", "access", "update"][..],
            &["@write", "@fast"][..],
        ),
        (
            "ratelimit.mpeek",
            &["readonly", "fast", "movablekeys"],
            &["RO", "access"],
            &["@read", "@fast"],
        ),
    ] {
        let info: Value = run(&mut con, &["COMMAND", "INFO", name]);
        let entry = &items(&info)[0];
        let entry = items(entry);
        assert_eq!(text(&entry[0]), name);
        let shown: BTreeSet<String> = texts(&entry[2]).into_iter().collect();
        for flag in flags {
            assert!(
                shown.contains(*flag),
                "{name}: {flag} missing from {shown:?}"
            );
        }
        assert_eq!(
            shown.contains("write"),
            name == "ratelimit.mcheck",
            "{shown:?}"
        );
        // No legacy key range: the keys follow numkeys.
        assert_eq!(
            entry[3..6],
            [Value::Int(0), Value::Int(0), Value::Int(0)],
            "{name}"
        );
        if abilities.acl_categories() {
            let mut expected: BTreeSet<String> = categories.iter().map(|c| c.to_string()).collect();
            if abilities.own_category() {
                expected.insert("@ratelimit".to_string());
            }
            let shown: BTreeSet<String> = texts(&entry[6]).into_iter().collect();
            assert_eq!(shown, expected, "{name}: ACL categories");
        }
        if !abilities.command_info() {
            assert_eq!(entry[1], Value::Int(-1), "{name}");
            continue;
        }
        assert_eq!(entry[1], Value::Int(-6), "{name}: arity");
        let specs = items(&entry[8]);
        assert_eq!(specs.len(), 1, "{name}: {specs:?}");
        let spec = &specs[0];
        assert_eq!(texts(field(spec, "flags")), key_flags, "{name}");
        let begin = field(spec, "begin_search");
        assert_eq!(text(field(begin, "type")), "index");
        assert_eq!(field(field(begin, "spec"), "index"), &Value::Int(1));
        let find = field(spec, "find_keys");
        assert_eq!(text(field(find, "type")), "keynum");
        let keynum = field(find, "spec");
        for (part, value) in [("keynumidx", 0), ("firstkey", 1), ("keystep", 1)] {
            assert_eq!(field(keynum, part), &Value::Int(value), "{name}: {part}");
        }
    }
    if !abilities.acl_categories() {
        eprintln!(
            "not checked (ACL categories): no RedisModule_SetCommandACLCategories before Redis 7.2"
        );
    }
    if !abilities.command_info() {
        eprintln!("not checked (arity, key specs, COMMAND DOCS): no RedisModule_SetCommandInfo before Redis 7.0");
        return;
    }

    let arguments = [
        "numkeys:integer",
        "key:key [multiple]",
        "limit:block token=LIMIT [multiple] (limit:integer, period:integer, \
         cost:integer token=COST [optional], algorithm:oneof token=ALGORITHM [optional] \
         (fixed:pure-token token=FIXED, sliding:pure-token token=SLIDING, token:pure-token token=TOKEN), \
         burst:integer token=BURST [optional])",
    ];
    for (name, summary) in [
        (
            "ratelimit.mcheck",
            "Counts a request against several rate limits, all of them or none",
        ),
        (
            "ratelimit.mpeek",
            "Says what RATELIMIT.MCHECK would answer, counting nothing",
        ),
    ] {
        let docs: Value = run(&mut con, &["COMMAND", "DOCS", name]);
        let doc = field(&docs, name);
        assert_eq!(text(field(doc, "summary")), summary);
        assert_eq!(
            text(field(doc, "complexity")),
            "O(N) where N is the number of keys"
        );
        assert_eq!(text(field(doc, "since")), "0.2.0");
        assert_eq!(text(field(doc, "module")), "ratelimit");
        let args: Vec<String> = items(field(doc, "arguments"))
            .iter()
            .map(describe_argument)
            .collect();
        assert_eq!(args, arguments, "{name}");
        let key = &items(field(doc, "arguments"))[1];
        assert_eq!(field(key, "key_spec_index"), &Value::Int(0), "{name}");
    }
}

#[test]
fn mcheck_keys_position_requests_never_run_the_command() {
    // The server asks the command itself where its keys are (in cluster
    // routing; on Redis 6.2 also for COMMAND GETKEYS and ACL key checks),
    // with no client to reply to: arguments that name no keys crashed
    // Redis 6.2 (RM_WrongArity on that missing client) while the command
    // still ran for such a question.
    let server = Server::start();
    let mut con = server.connect();
    let before = counters(&mut con);
    for line in [
        "COMMAND GETKEYS RATELIMIT.MCHECK",
        "COMMAND GETKEYS RATELIMIT.MPEEK 1",
        "COMMAND GETKEYS RATELIMIT.MCHECK 0 a LIMIT 1 60",
        "COMMAND GETKEYS RATELIMIT.MPEEK x a LIMIT 1 60",
        "COMMAND GETKEYS RATELIMIT.MCHECK 9 a LIMIT 1 60",
    ] {
        let err = error(&mut con, &words(line));
        assert!(err.starts_with("ERR"), "{line}: {err}");
        assert_eq!(run::<String>(&mut con, &["PING"]), "PONG", "after {line}");
    }
    // A user limited to some keys makes the server ask on every call.
    let _: () = run(
        &mut con,
        &["ACL", "SETUSER", "some", "on", "nopass", "~t:*", "+@all"],
    );
    let mut some = connect_as(&server, "some");
    for (line, expected) in [
        (
            "RATELIMIT.MCHECK",
            "ERR wrong number of arguments for 'ratelimit.mcheck' command",
        ),
        (
            "RATELIMIT.MPEEK",
            "ERR wrong number of arguments for 'ratelimit.mpeek' command",
        ),
        ("RATELIMIT.MCHECK 0 t:a LIMIT 1 60", ERR_NUMKEYS),
        ("RATELIMIT.MPEEK 17 t:a LIMIT 1 60", ERR_NUMKEYS),
    ] {
        assert_eq!(error(&mut some, &words(line)), expected, "{line}");
        assert_eq!(run::<String>(&mut con, &["PING"]), "PONG", "after {line}");
    }
    // Each call that reached the module counted once, none of the keys
    // questions: servers that know the arity (7.0+) refuse the calls
    // without arguments themselves.
    let calls = if Abilities::of(&mut con).command_info() {
        1
    } else {
        2
    };
    let after = counters(&mut con);
    for name in [
        "mcheck_calls",
        "mcheck_errors",
        "mpeek_calls",
        "mpeek_errors",
    ] {
        assert_eq!(after[name] - before[name], calls, "{name}");
    }
}

#[test]
fn mcheck_numkeys_the_arguments_cannot_hold_names_no_keys() {
    // Each key needs its own `LIMIT limit period` after the keys: a numkeys
    // the arguments cannot hold names no keys. It used to name what
    // followed it, `LIMIT` or a number included (`3 a b LIMIT 1 1` named a,
    // b and LIMIT), so that in a cluster the malformed call was refused
    // with CROSSSLOT, or sent to the node of a key that is none, instead of
    // getting its own error.
    let server = Server::start();
    let mut con = server.connect();
    for name in ["RATELIMIT.MCHECK", "RATELIMIT.MPEEK"] {
        let cases: [(&str, &[&str]); 7] = [
            ("3 a b LIMIT 1 1", &[]),
            ("2 a b LIMIT 1 1", &[]),
            ("2 a LIMIT 1 1 LIMIT", &[]),
            ("4 a b c d LIMIT 1 1 LIMIT 1 1 LIMIT 1 1", &[]),
            // Just enough: every key has its group.
            ("2 a b LIMIT 1 1 LIMIT 2 2", &["a", "b"]),
            ("1 a LIMIT 1 60 COST 2", &["a"]),
            // A key named LIMIT is a key.
            ("1 LIMIT LIMIT 1 1", &["LIMIT"]),
        ];
        // Where the server has key specs (7.0+), COMMAND GETKEYS reads the
        // keys off MCHECK's `numkeys` key spec, which cannot check the
        // groups; cluster routing asks the command itself (the test
        // below). Without key specs (6.2), GETKEYS asks the command too.
        let asks_the_command = !Abilities::of(&mut con).command_info();
        for (args, expected) in cases {
            if !asks_the_command && expected.is_empty() {
                continue;
            }
            let line = format!("COMMAND GETKEYS {name} {args}");
            let found: Vec<String> = match try_run(&mut con, &words(&line)) {
                Ok(keys) => redis::from_redis_value(keys).unwrap(),
                // No keys: the server's error for a command without any.
                Err(_) => Vec::new(),
            };
            assert_eq!(found, expected, "{line}");
            assert_eq!(run::<String>(&mut con, &["PING"]), "PONG", "after {line}");
        }
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[test]
fn mcheck_rejects_malformed_calls_with_exact_errors() {
    let server = Server::start();
    let mut con = server.connect();
    // The arguments after `numkeys`, with the error expected.
    let cases: &[(&str, &str)] = &[
        // Fewer than `numkeys key LIMIT limit period`.
        ("", "arity"),
        ("1", "arity"),
        ("1 {e}:a LIMIT 10", "arity"),
        // numkeys: 1 to 16, an integer as Redis reads one.
        ("0 {e}:a LIMIT 10 60", ERR_NUMKEYS),
        ("17 {e}:a LIMIT 10 60", ERR_NUMKEYS),
        ("-1 {e}:a LIMIT 10 60", ERR_NUMKEYS),
        ("x {e}:a LIMIT 10 60", ERR_NUMKEYS),
        ("1.5 {e}:a LIMIT 10 60", ERR_NUMKEYS),
        ("01 {e}:a LIMIT 10 60", ERR_NUMKEYS),
        // One LIMIT group per key: fewer, more, more keys than there are,
        // a group that does not start with LIMIT.
        ("2 {e}:a {e}:b LIMIT 10 60", ERR_GROUPS),
        ("1 {e}:a LIMIT 10 60 LIMIT 10 60", ERR_GROUPS),
        ("3 {e}:a {e}:b LIMIT 10 60", ERR_GROUPS),
        ("5 {e}:a {e}:b LIMIT 10 60", ERR_GROUPS),
        ("1 {e}:a 10 60 COST 1", ERR_GROUPS),
        ("1 {e}:a COST 1 LIMIT 10 60", ERR_GROUPS),
        ("2 {e}:a {e}:b COST 1 LIMIT 10 60 LIMIT 10 60", ERR_GROUPS),
        // A group cut short, or words where its options go.
        ("2 {e}:a {e}:b LIMIT 10 LIMIT 10 60", ERR_PERIOD),
        (
            "2 {e}:a {e}:b LIMIT 10 60 10 60",
            "ERR syntax error: unknown option '10'",
        ),
        // CHECK's own errors, in either group.
        ("1 {e}:a LIMIT 0 60", ERR_LIMIT),
        ("1 {e}:a LIMIT ten 60", ERR_LIMIT),
        ("1 {e}:a LIMIT 10 0", ERR_PERIOD),
        ("2 {e}:a {e}:b LIMIT 10 60 LIMIT 10 1000000001", ERR_PERIOD),
        ("2 {e}:a {e}:b LIMIT 10 60 LIMIT 10 60 COST -1", ERR_COST),
        (
            "1 {e}:a LIMIT 10 60 COST",
            "ERR syntax error: COST needs a value",
        ),
        (
            "1 {e}:a LIMIT 10 60 COST 1 cost 1",
            "ERR syntax error: COST given twice",
        ),
        (
            "1 {e}:a LIMIT 10 60 WEIGHT 1",
            "ERR syntax error: unknown option 'WEIGHT'",
        ),
        (
            "2 {e}:a {e}:b LIMIT 10 60 ALGORITHM LEAKY LIMIT 10 60",
            ERR_ALGORITHM,
        ),
        (
            "1 {e}:a LIMIT 10 60 ALGORITHM TOKEN ALGORITHM TOKEN",
            "ERR syntax error: ALGORITHM given twice",
        ),
        ("1 {e}:a LIMIT 10 60 BURST 5", ERR_BURST_WITHOUT_TOKEN),
        ("1 {e}:a LIMIT 10 60 ALGORITHM TOKEN BURST 0", ERR_BURST),
        (
            "1 {e}:a LIMIT 10 60 ALGORITHM TOKEN BURST 100000000000000",
            ERR_BURST_TOO_LARGE,
        ),
        // A key named twice, once the groups are read.
        ("2 {e}:a {e}:a LIMIT 10 60 LIMIT 10 60", ERR_DUPLICATE),
        // The first bad argument wins.
        ("0 {e}:a {e}:a LIMIT 0 60", ERR_NUMKEYS),
        ("2 {e}:a {e}:a LIMIT 10 60 LIMIT 0 60", ERR_LIMIT),
        ("2 {e}:a {e}:b LIMIT 0 60 LIMIT 10 0", ERR_LIMIT),
    ];
    for name in ["RATELIMIT.MCHECK", "RATELIMIT.MPEEK"] {
        let arity = format!(
            "ERR wrong number of arguments for '{}' command",
            name.to_lowercase()
        );
        for (args, expected) in cases {
            let line = format!("{name} {args}");
            let expected = if *expected == "arity" {
                arity.as_str()
            } else {
                expected
            };
            assert_eq!(error(&mut con, &words(&line)), expected, "{line}");
        }
    }
    assert_eq!(
        run::<i64>(&mut con, &["DBSIZE"]),
        0,
        "an error created a key"
    );

    // Keywords in any case, options in any order; 16 keys.
    let reply: Multi = run(
        &mut con,
        &words(
            "ratelimit.mcheck 2 {e}:x {e}:y limit 10 60 cost 2 algorithm sliding \
             Limit 5 60 Burst 9 cOsT 3 Algorithm Token",
        ),
    );
    assert_eq!(
        reply.each.iter().map(Decision::counts).collect::<Vec<_>>(),
        [(true, 8, 10), (true, 6, 5)]
    );
    let sixteen: Vec<String> = (0..16).map(|i| format!("{{e}}:k{i}")).collect();
    let reply = mcheck(&mut con, &sixteen, &vec![fixed(1, 60); 16]);
    assert_eq!((reply.allowed, reply.each.len()), (true, 16));
}

#[test]
fn mcheck_refuses_keys_of_another_kind_and_changes_nothing() {
    let server = Server::builder().module_arg("cl-throttle", "yes").start();
    let mut con = server.connect();
    check(&mut con, "{w}:fixed", 5, 3600, &[]);
    check(&mut con, "{w}:sliding", 5, 3600, &["ALGORITHM", "SLIDING"]);
    check(&mut con, "{w}:token", 5, 3600, &["ALGORITHM", "TOKEN"]);
    common::throttle(&mut con, "{w}:cell", 5, 1, 3600, None);
    let _: () = run(&mut con, &["HSET", "{w}:hash", "f", "v"]);
    let _: () = run(&mut con, &["SET", "{w}:text", "hello"]);
    // A counter without an expiry, which a counted request would give one.
    let _: () = run(&mut con, &["SET", "{w}:bare", "9"]);
    let all = [
        "{w}:fixed",
        "{w}:sliding",
        "{w}:token",
        "{w}:cell",
        "{w}:hash",
        "{w}:text",
        "{w}:bare",
    ];
    let before = dumped_all(&mut con, &all);

    // The limits before the bad key would admit (or, the bare counter,
    // store): with the bad key last, anything written as the call went
    // would show.
    let good = (
        ["{w}:fixed", "{w}:bare", "{w}:fresh"],
        [fixed(5, 3600), fixed(5, 60), token(2, 60, 2)],
    );
    let cases: [(&str, Group, String); 6] = [
        ("{w}:hash", fixed(5, 60), WRONGTYPE.to_string()),
        ("{w}:text", sliding(5, 60), NOT_LIMITER_STATE.to_string()),
        (
            "{w}:sliding",
            fixed(5, 60),
            wrong_algorithm(SLIDING.name, FIXED.name),
        ),
        (
            "{w}:token",
            sliding(5, 60),
            wrong_algorithm(TOKEN.name, SLIDING.name),
        ),
        (
            "{w}:fixed",
            token(5, 60, 5),
            wrong_algorithm(FIXED.name, TOKEN.name),
        ),
        (
            "{w}:cell",
            fixed(5, 60),
            wrong_algorithm(THROTTLE.name, FIXED.name),
        ),
    ];
    for (bad, bad_group, expected) in cases {
        for name in ["RATELIMIT.MCHECK", "RATELIMIT.MPEEK"] {
            // The bad key last, and first.
            let (mut keys, mut groups) = (good.0.to_vec(), good.1.to_vec());
            if bad == "{w}:fixed" {
                keys[0] = "{w}:other";
            }
            keys.push(bad);
            groups.push(bad_group.clone());
            let line = multi_args(name, &keys, &groups);
            assert_eq!(error(&mut con, &line), expected, "{}", line.join(" "));
            keys.rotate_right(1);
            groups.rotate_right(1);
            let line = multi_args(name, &keys, &groups);
            assert_eq!(error(&mut con, &line), expected, "{}", line.join(" "));
        }
    }
    assert_eq!(
        dumped_all(&mut con, &all),
        before,
        "a refused call changed a key"
    );
    for fresh in ["{w}:fresh", "{w}:other"] {
        assert!(!exists(&mut con, fresh), "{fresh} was created");
    }
}

// ---------------------------------------------------------------------------
// INFO, keyspace events, WATCH
// ---------------------------------------------------------------------------

#[test]
fn mcheck_info_counts_calls_errors_and_decisions() {
    let server = Server::start();
    let mut con = server.connect();
    let before = counters(&mut con);

    let keys = ["{i}:a", "{i}:b"];
    let groups = [fixed(2, 3600), sliding(5, 3600)];
    // Two admitted, one denied (a full), one look (all costs 0, even of a
    // full limit), one cost that never fits (denied).
    assert!(mcheck(&mut con, &keys, &groups).allowed);
    assert!(mcheck(&mut con, &keys, &groups).allowed);
    assert!(!mcheck(&mut con, &keys, &groups).allowed);
    let look = [fixed(2, 3600).cost(0), sliding(5, 3600).cost(0)];
    assert!(mcheck(&mut con, &keys, &look).allowed);
    assert!(
        !mcheck(
            &mut con,
            &keys,
            &[fixed(2, 3600).cost(0), sliding(5, 3600).cost(6)]
        )
        .allowed
    );
    // Three MPEEKs.
    for groups in [&groups, &look, &groups] {
        mpeek(&mut con, &keys, groups);
    }
    // Errors: a bad numkeys, a key of another kind, for each command.
    let _: () = run(&mut con, &["SET", "{i}:text", "hello"]);
    for name in ["RATELIMIT.MCHECK", "RATELIMIT.MPEEK"] {
        error(&mut con, &words(&format!("{name} 0 {{i}}:a LIMIT 2 3600")));
        error(&mut con, &multi_args(name, &["{i}:a", "{i}:text"], &groups));
    }
    // One CHECK, to tell the totals apart from MCHECK's.
    assert!(check(&mut con, "{i}:c", 1, 60, &[]).allowed);

    let after = counters(&mut con);
    let expected: BTreeMap<&str, u64> = [
        ("mcheck_calls", 7),
        ("mcheck_errors", 2),
        ("mcheck_allowed", 2),
        ("mcheck_denied", 2),
        ("mpeek_calls", 5),
        ("mpeek_errors", 2),
        ("check_calls", 1),
        ("fixed_allowed", 1),
        // A request MCHECK decides is one request, whatever its limits.
        ("allowed", 3),
        ("denied", 2),
    ]
    .into_iter()
    .collect();
    for (name, value) in &after {
        let delta = value - before[name];
        assert_eq!(
            delta,
            expected.get(name.as_str()).copied().unwrap_or(0),
            "{name}"
        );
    }
}

/// One event: the key and the event name.
type Fired = (String, &'static str);

/// Calls of every outcome; the events they must fire, with `denied`
/// events as asked.
fn event_workload(con: &mut Connection, denied_events: bool) -> Vec<Fired> {
    let mut fired: Vec<Fired> = Vec::new();
    let denied = |fired: &mut Vec<Fired>, key: &str| {
        if denied_events {
            fired.push((key.to_string(), "ratelimit.denied"));
        }
    };
    let (a, b, c) = ("{v}:a", "{v}:b", "{v}:c");
    // Admitted: one event per key, in key order.
    assert!(mcheck(con, &[b, a], &[fixed(1, 60), fixed(5, 60)]).allowed);
    fired.extend([
        (b.to_string(), "ratelimit.check"),
        (a.to_string(), "ratelimit.check"),
    ]);
    assert!(mcheck(con, &[c], &[fixed(1, 600)]).allowed);
    fired.push((c.to_string(), "ratelimit.check"));
    // Denied: nothing changes; `denied` on the binding key only (c's window
    // ends last).
    let reply = mcheck(
        con,
        &[a, b, c],
        &[fixed(5, 60), fixed(1, 60), fixed(1, 600)],
    );
    assert_eq!((reply.allowed, reply.position), (false, 3));
    denied(&mut fired, c);
    // A counter without an expiry that denies by itself gets one: it
    // changed, and it binds.
    let _: () = run(con, &["SET", "{v}:bare", "9"]);
    fired.push(("{v}:bare".to_string(), "set"));
    let reply = mcheck(con, &[a, "{v}:bare"], &[fixed(5, 60), fixed(5, 60)]);
    assert_eq!((reply.allowed, reply.position), (false, 2));
    fired.push(("{v}:bare".to_string(), "ratelimit.check"));
    denied(&mut fired, "{v}:bare");
    // Looks, even answering "denied" (a count over the limit), MPEEK and
    // errors fire nothing.
    let reply = mcheck(
        con,
        &[a, "{v}:bare"],
        &[fixed(5, 60).cost(0), fixed(5, 60).cost(0)],
    );
    assert!(!reply.allowed);
    mpeek(con, &[a, b], &[fixed(5, 60), fixed(1, 60)]);
    error(
        con,
        &multi_args("RATELIMIT.MCHECK", &[a, a], &[fixed(5, 60), fixed(5, 60)]),
    );
    fired
}

#[test]
fn mcheck_keyspace_events_as_check_fires_them() {
    for denied_events in [false, true] {
        assert_fires_exactly(denied_events, "KEA", |con| {
            event_workload(con, denied_events)
        });
    }
}

#[test]
fn mcheck_watch_sees_a_charged_key_only() {
    let server = Server::start();
    let mut watcher = server.connect();
    let mut other = server.connect();
    let keys = ["{wt}:a", "{wt}:b"];
    let groups = [fixed(5, 60), fixed(1, 60)];
    assert!(mcheck(&mut other, &keys, &groups).allowed);
    let transaction = |con: &mut Connection| -> Option<(Option<String>,)> {
        redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(keys[0])
            .query(con)
            .unwrap()
    };
    // Denied, looked at, peeked at: no key changed, EXEC runs.
    let _: () = run(&mut watcher, &["WATCH", keys[0], keys[1]]);
    assert!(!mcheck(&mut other, &keys, &groups).allowed);
    assert!(
        mcheck(
            &mut other,
            &keys,
            &[fixed(5, 60).cost(0), fixed(1, 60).cost(0)]
        )
        .allowed
    );
    mpeek(&mut other, &keys, &groups);
    assert_eq!(transaction(&mut watcher), Some((Some("1".to_string()),)));
    // Admitted with a COST 0 group: only the charged key changed.
    let _: () = run(&mut watcher, &["WATCH", keys[1]]);
    assert!(mcheck(&mut other, &keys, &[fixed(5, 60), fixed(1, 60).cost(0)]).allowed);
    assert_eq!(
        transaction(&mut watcher),
        Some((Some("2".to_string()),)),
        "EXEC aborted: the look changed {}",
        keys[1]
    );
    let _: () = run(&mut watcher, &["WATCH", keys[0]]);
    assert!(mcheck(&mut other, &keys, &[fixed(5, 60), fixed(1, 60).cost(0)]).allowed);
    assert_eq!(
        transaction(&mut watcher),
        None,
        "EXEC ran although the key changed"
    );
}
