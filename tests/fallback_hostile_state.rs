//! The script fallback against the module on state no command writes:
//! lease sets an operator scored `+inf`, `-inf`, 2^63, 9.5e18, past 2^53,
//! below zero or between milliseconds, members named `NOW` or `LIMIT`,
//! sets with and without a TTL, limiter values wider than 21 bytes, and
//! lease ids named like keywords. The same calls on twin keys give the
//! same replies, error texts, values and absolute expiries (exactly: read
//! with PEXPIRETIME, 2^63 - 1 included), and no reply of either carries an
//! integer a double cannot hold.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use common::fallback::{
    audit_reply_integers, hostile_seeds, unix_ms, Clock, Generator, Route, Twins, MAX_EXACT,
};
use common::Server;

/// Calls each differential run compares.
const CALLS: u64 = 4_000;
/// Steps of the reply-integer audit.
const AUDIT_STEPS: usize = 4_000;

/// The kinds of lease set [`hostile_seeds`] makes (its labels up to the
/// comma, which is followed by the TTL), and the labels of all.
fn labels() -> (BTreeSet<String>, BTreeSet<String>) {
    let seeds = hostile_seeds(unix_ms());
    let kinds = seeds
        .iter()
        .filter(|s| s.lease_set)
        .map(|s| s.label.split(',').next().unwrap().to_string())
        .collect();
    (kinds, seeds.into_iter().map(|s| s.label).collect())
}

/// Asserts that every hostile state met at least one compared call, and
/// every kind of lease set each lease command.
fn assert_every_state_compared(after_seed: &BTreeMap<String, u64>) {
    let (kinds, labels) = labels();
    let met: BTreeSet<&str> = after_seed
        .keys()
        .map(|k| k.split(" / ").next().unwrap())
        .collect();
    let missing: Vec<&String> = labels
        .iter()
        .filter(|l| !met.contains(l.as_str()))
        .collect();
    assert!(missing.is_empty(), "never compared after: {missing:?}");
    for kind in &kinds {
        for verb in ["acquire", "release", "renew"] {
            let calls: u64 = after_seed
                .iter()
                .filter(|(k, _)| k.starts_with(kind.as_str()) && k.ends_with(&format!(" / {verb}")))
                .map(|(_, n)| n)
                .sum();
            assert!(calls > 0, "no {verb} compared on a {kind}");
        }
    }
}

fn differential(route: impl Fn(&mut redis::Connection) -> Route, clock: Clock, seed: u64) {
    let server = Server::start();
    let mut con = server.connect();
    let route = route(&mut con);
    let mut twins = Twins::with_generator(&mut con, route.clone(), clock, Generator::hostile(seed));
    let started = Instant::now();
    twins.run(&mut con, CALLS);
    eprintln!(
        "{route:?}, {clock:?}: {} in {:.1?}",
        twins.summary(),
        started.elapsed()
    );
    // Most steps fall in one millisecond; a run that resyncs more is not
    // comparing what it claims to. On the server's clock a step counts only
    // when the module's call, the library's call and both probes share one
    // millisecond, and without a frozen command clock (Redis 6.2, where the
    // library also runs through EVALSHA) a loaded machine splits up to a
    // third of them; the pinned run holds the tighter bound.
    let most = match clock {
        Clock::Pinned => 5,
        Clock::Server => 2,
    };
    assert!(
        twins.resynced * most < twins.compared,
        "{} steps resynced for {} compared",
        twins.resynced,
        twins.compared
    );
    assert_every_state_compared(&twins.after_seed);
}

/// NOW on every call: the library decides at the module's instant.
#[test]
fn fallback_matches_the_module_on_hostile_stored_state() {
    differential(|c| Route::for_server(c), Clock::Pinned, 0x4057_0001);
}

/// The library on the server's TIME (calls ending in what it would take
/// for its clock are left out).
#[test]
fn fallback_on_the_server_clock_matches_the_module_on_hostile_stored_state() {
    differential(|c| Route::for_server(c), Clock::Server, 0x4057_0002);
}

/// Every integer of every reply, of the module and of the library, is at
/// most 2^53 - 1, so that a client reading it as a double (a Lua script,
/// JavaScript) reads it unchanged. A wait past that (a slot held until
/// released: 2^63 - 1 less now) is replied as 2^53 - 1. Each side runs on
/// its own, so that a difference between them hides no inexact reply.
#[test]
fn no_reply_integer_of_the_module_or_the_fallback_exceeds_2_pow_53_minus_1() {
    let server = Server::start();
    let mut con = server.connect();
    let route = Route::for_server(&mut con);
    let started = Instant::now();
    let audit = audit_reply_integers(
        &mut con,
        &route,
        Generator::hostile(0x4057_0003),
        AUDIT_STEPS,
    );
    eprintln!(
        "{:?} replies, {:?} integers, largest {:?}, {} over 2^53 - 1, in {:.1?}",
        audit.replies,
        audit.integers,
        audit.largest,
        audit.over.len(),
        started.elapsed()
    );
    // The run met the slots held until released, with every lease command.
    for verb in ["acquire", "release", "renew"] {
        assert!(
            audit
                .after_seed
                .iter()
                .any(|(k, &n)| k.starts_with("lease set +inf slot") && k.ends_with(verb) && n > 0),
            "no {verb} on a +inf slot: {:?}",
            audit.after_seed
        );
    }
    assert!(audit.largest.iter().all(|&n| n > 0), "{audit:?}");
    let first = |side: &str| -> Vec<&String> {
        audit
            .over
            .iter()
            .filter(|o| o.starts_with(side))
            .take(4)
            .collect()
    };
    assert!(
        audit.over.is_empty(),
        "{} replies above {MAX_EXACT}, the first ones:\n{:#?}\n{:#?}",
        audit.over.len(),
        first("module"),
        first("library")
    );
}
