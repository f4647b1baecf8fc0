//! A fuzz target, the script fallback against the module: proptest makes
//! short sequences of hostile calls of every command (CHECK, PEEK, MCHECK,
//! MPEEK, RESET, THROTTLE, ACQUIRE, RELEASE, RENEW), with numbers out of
//! every range or not numbers at all, repeated and unknown options, wrong
//! arities, keywords as keys and as lease ids, binary ids and keys, and
//! trailing `NOW x` pairs; between them, keys aged and set to hostile
//! state by hand. Each call runs on one server against the module (keys
//! in database 0) and against the library (the same key names in
//! database 1), at one instant, and replies, error texts, values and
//! absolute expiries must be the same, every reply integer at most 2^53 -
//! 1 (see `common::fallback`). A case that fails is shrunk to a shortest
//! sequence, which the failure shows.
//!
//! The run is bounded by its number of cases, so that `cargo test` (and
//! `make test`) spends about 25 s on it on two cores; the seed is fixed,
//! so every run tries the same cases, and failing ones are kept in
//! `proptest-regressions/fallback_fuzz.txt` and tried first on later runs
//! (commit that file). To fuzz longer, or elsewhere:
//!
//! ```text
//! RATELIMIT_FUZZ_CASES=200000 RATELIMIT_FUZZ_SEED=7 \
//!     cargo test --test fallback_fuzz -- --nocapture
//! ```
//!
//! - `RATELIMIT_FUZZ_CASES`: cases to run (default [`DEFAULT_CASES`]).
//! - `RATELIMIT_FUZZ_SEED`: the random seed (default [`DEFAULT_SEED`]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::RefCell;
use std::fmt;
use std::time::Instant;

use common::fallback::{hostile_seeds, unix_ms, Clock, Naming, Route, Step, Twins};
use common::Server;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed, TestRunner};

/// Cases `cargo test` runs.
const DEFAULT_CASES: u32 = 5_000;
/// The seed `cargo test` runs.
const DEFAULT_SEED: u64 = 0x00f0_22ed;
/// Where failing cases are kept.
const REGRESSIONS: &str = "proptest-regressions/fallback_fuzz.txt";

/// The keys a case may name: plain, hash-tagged, keywords of the commands
/// (so that `MCHECK 2 a LIMIT LIMIT 1 1` has a key named LIMIT), binary.
const KEY_NAMES: [&[u8]; 8] = [
    b"a",
    b"b",
    b"{t}c",
    b"LIMIT",
    b"NOW",
    b"ID",
    b"cost",
    b"\x00\xff k\n",
];

/// Numbers no command takes, and ones at every bound.
const ODD_NUMBERS: [&str; 35] = [
    "0",
    "-1",
    "-0",
    "01",
    "+5",
    " 5",
    "5 ",
    "1.5",
    "1e3",
    "0x10",
    "",
    "x",
    "NOW",
    "LIMIT",
    "inf",
    "nan",
    "٣",
    "86400000",
    "86400001",
    "100000",
    "100001",
    "1000000000",
    "1000000001",
    "999999999999999",
    "1000000000000000",
    "1000000000000001",
    "9007199254740991",
    "9007199254740992",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "99999999999999999999999",
];

/// An argument of a call.
#[derive(Clone, PartialEq, Eq)]
enum Arg {
    Bytes(Vec<u8>),
    /// The `n`-th (modulo how many) lease id the module made for the
    /// call's first key, or `job-0` when it made none.
    Made(usize),
}

impl fmt::Debug for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Bytes(b) => write!(f, "\"{}\"", b.escape_ascii()),
            Arg::Made(n) => write!(f, "made#{n}"),
        }
    }
}

/// One step of a case.
#[derive(Clone, Debug)]
enum FuzzStep {
    Call {
        verb: &'static str,
        keys: Vec<usize>,
        args: Vec<Arg>,
    },
    /// Both twins of the keys aged by `by_ms`.
    Age { keys: Vec<usize>, by_ms: u64 },
    /// Both twins of a key set to the hostile state of this label.
    Seed { key: usize, label: String },
}

fn text(s: impl Into<String>) -> Arg {
    Arg::Bytes(s.into().into_bytes())
}

/// `word` in upper, lower or mixed case.
fn keyword(word: &'static str) -> BoxedStrategy<Arg> {
    let mixed: String = word
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_lowercase()
            } else {
                c
            }
        })
        .collect();
    prop_oneof![
        3 => Just(text(word)),
        1 => Just(text(word.to_lowercase())),
        1 => Just(text(mixed)),
    ]
    .boxed()
}

/// A number argument: mostly small and valid, else anything.
fn number() -> BoxedStrategy<Arg> {
    prop_oneof![
        6 => (1u64..12).prop_map(|n| text(n.to_string())),
        2 => (0u64..4_000).prop_map(|n| text(n.to_string())),
        2 => select(&ODD_NUMBERS[..]).prop_map(text),
        1 => any::<u64>().prop_map(|n| text(n.to_string())),
        1 => any::<i64>().prop_map(|n| text(n.to_string())),
    ]
    .boxed()
}

fn key() -> BoxedStrategy<usize> {
    (0..KEY_NAMES.len()).boxed()
}

/// A lease id: a client's, one the module made, a keyword (`NOW` is
/// refused), binary, around the 64-byte bound, or empty.
fn id() -> BoxedStrategy<Arg> {
    prop_oneof![
        4 => (0u8..4).prop_map(|n| text(format!("job-{n}"))),
        3 => (0usize..8).prop_map(Arg::Made),
        2 => select(&["NOW", "now", "Now", "nOW", "LIMIT", "ID", "COST", "nobody"][..]).prop_map(text),
        2 => vec(any::<u8>(), 1..=4).prop_map(Arg::Bytes),
        1 => vec(any::<u8>(), 62..=66).prop_map(Arg::Bytes),
        1 => Just(Arg::Bytes(Vec::new())),
    ]
    .boxed()
}

/// One of CHECK's options, sometimes unknown or cut short.
fn option() -> BoxedStrategy<Vec<Arg>> {
    let algorithm = prop_oneof![
        keyword("FIXED"),
        keyword("SLIDING"),
        keyword("TOKEN"),
        Just(text("LEAKY")),
        Just(text("")),
    ];
    let cost = prop_oneof![3 => (0u64..4).prop_map(|n| text(n.to_string())), 1 => number()];
    prop_oneof![
        3 => (keyword("COST"), cost).prop_map(|(k, v)| vec![k, v]),
        3 => (keyword("ALGORITHM"), algorithm).prop_map(|(k, v)| vec![k, v]),
        2 => (keyword("BURST"), number()).prop_map(|(k, v)| vec![k, v]),
        1 => (select(&["WEIGHT", "LIMIT", "ID", "NOW", "BURSTS", ""][..]), number())
            .prop_map(|(k, v)| vec![text(k), v]),
        1 => prop_oneof![keyword("COST"), keyword("ALGORITHM"), keyword("BURST")].prop_map(|k| vec![k]),
    ]
    .boxed()
}

/// Valid `limit period [COST c] [ALGORITHM a] [BURST b]`: small limits,
/// periods of 1 to 3 s so that windows turn over within a case.
fn valid_limit_args() -> BoxedStrategy<Vec<Arg>> {
    (
        1u64..12,
        1u64..4,
        prop::option::of(0u64..5),
        0usize..3,
        prop::option::of(1u64..20),
        (keyword("COST"), keyword("ALGORITHM"), keyword("BURST")),
    )
        .prop_map(|(limit, period, cost, kind, burst, (c, a, b))| {
            let mut args = vec![text(limit.to_string()), text(period.to_string())];
            if let Some(cost) = cost {
                args.extend([c, text(cost.to_string())]);
            }
            let kind = ["FIXED", "SLIDING", "TOKEN"][kind];
            if kind != "FIXED" || cost.is_none() {
                args.extend([a, text(kind)]);
            }
            if let Some(burst) = burst.filter(|_| kind == "TOKEN") {
                args.extend([b, text(burst.to_string())]);
            }
            args
        })
        .boxed()
}

/// `limit period [options…]`, CHECK's arguments after its key: valid
/// ones half the time, else anything.
fn limit_args() -> BoxedStrategy<Vec<Arg>> {
    let any_args =
        (number(), number(), vec(option(), 0..=3)).prop_map(|(limit, period, options)| {
            let mut args = vec![limit, period];
            args.extend(options.into_iter().flatten());
            args
        });
    prop_oneof![valid_limit_args(), any_args].boxed()
}

/// MCHECK's and MPEEK's keys (their count is numkeys) and groups.
fn multi() -> BoxedStrategy<(Vec<usize>, Vec<Arg>)> {
    let group = (
        prop_oneof![9 => keyword("LIMIT"), 1 => Just(text("COST"))],
        limit_args(),
    )
        .prop_map(|(limit, args)| {
            let mut group = vec![limit];
            group.extend(args);
            group
        });
    // Mostly one group per key, the keys distinct.
    let matched = (1usize..=3)
        .prop_flat_map(move |n| {
            let keys = proptest::sample::subsequence((0..KEY_NAMES.len()).collect::<Vec<_>>(), n)
                .prop_shuffle();
            let groups = vec(
                (keyword("LIMIT"), valid_limit_args()).prop_map(|(limit, args)| {
                    let mut group = vec![limit];
                    group.extend(args);
                    group
                }),
                n,
            );
            (keys, groups)
        })
        .prop_map(|(keys, groups)| (keys, groups.into_iter().flatten().collect()));
    prop_oneof![
        12 => matched,
        8 => (vec(key(), 0..=4), vec(group, 0..=4))
            .prop_map(|(keys, groups)| (keys, groups.into_iter().flatten().collect())),
        1 => Just(((0..17).map(|i| i % KEY_NAMES.len()).collect(), vec![text("LIMIT"), text("1"), text("1")])),
    ]
    .boxed()
}

fn lease_ms() -> BoxedStrategy<Arg> {
    prop_oneof![4 => (1u64..3_000).prop_map(|n| text(n.to_string())), 1 => number()].boxed()
}

fn max_leases() -> BoxedStrategy<Arg> {
    prop_oneof![4 => (1u64..5).prop_map(|n| text(n.to_string())), 1 => number()].boxed()
}

/// A call of any command, sometimes ending in `NOW x`.
fn call() -> BoxedStrategy<FuzzStep> {
    let one = |verb: &'static str, args: BoxedStrategy<Vec<Arg>>| {
        (key(), args)
            .prop_map(move |(key, args)| FuzzStep::Call {
                verb,
                keys: vec![key],
                args,
            })
            .boxed()
    };
    let acquire_tail = prop_oneof![
        3 => Just(Vec::new()),
        4 => (keyword("ID"), id()).prop_map(|(k, id)| vec![k, id]),
        1 => (prop_oneof![keyword("ID"), Just(text("NAME"))], id(), id()).prop_map(|(k, a, b)| vec![k, a, b]),
        1 => vec(id(), 1..=3),
    ];
    let acquire = (max_leases(), lease_ms(), acquire_tail)
        .prop_map(|(max, ms, tail)| {
            let mut args = vec![max, ms];
            args.extend(tail);
            args
        })
        .boxed();
    let renew = prop_oneof![
        6 => (id(), lease_ms()).prop_map(|(id, ms)| vec![id, ms]),
        1 => id().prop_map(|id| vec![id]),
        1 => (id(), lease_ms(), number()).prop_map(|(id, ms, n)| vec![id, ms, n]),
    ]
    .boxed();
    let throttle = (
        prop_oneof![3 => (0u64..5).prop_map(|n| text(n.to_string())), 1 => number()],
        number(),
        number(),
        vec(number(), 0..=2),
    )
        .prop_map(|(burst, count, period, rest)| {
            let mut args = vec![burst, count, period];
            args.extend(rest);
            args
        })
        .boxed();
    let calls = prop_oneof![
        6 => one("check", limit_args()),
        2 => one("peek", limit_args()),
        3 => multi().prop_map(|(keys, args)| FuzzStep::Call { verb: "mcheck", keys, args }),
        2 => multi().prop_map(|(keys, args)| FuzzStep::Call { verb: "mpeek", keys, args }),
        1 => vec(key(), 0..=3).prop_map(|keys| FuzzStep::Call { verb: "reset", keys, args: Vec::new() }),
        3 => one("throttle", throttle),
        4 => one("acquire", acquire),
        3 => one("release", vec(id(), 0..=4).boxed()),
        2 => one("renew", renew),
    ];
    (
        calls,
        prop::option::weighted(0.1, (keyword("NOW"), number())),
    )
        .prop_map(|(mut step, now)| {
            if let (FuzzStep::Call { args, .. }, Some((word, at))) = (&mut step, now) {
                args.extend([word, at]);
            }
            step
        })
        .boxed()
}

fn fuzz_step() -> BoxedStrategy<FuzzStep> {
    let seeds: Vec<String> = hostile_seeds(0).into_iter().map(|s| s.label).collect();
    prop_oneof![
        12 => call(),
        1 => (vec(key(), 1..=3), 1u64..10_000).prop_map(|(keys, by_ms)| FuzzStep::Age { keys, by_ms }),
        2 => (key(), select(seeds)).prop_map(|(key, label)| FuzzStep::Seed { key, label }),
    ]
    .boxed()
}

/// A case: the clock the library reads (mostly NOW, the module's
/// instant; else the server's TIME), then up to 12 steps.
fn case() -> BoxedStrategy<(bool, Vec<FuzzStep>)> {
    (prop::bool::weighted(0.25), vec(fuzz_step(), 1..=12)).boxed()
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

/// Runs one case on cleared twins.
fn run_case(
    con: &mut redis::Connection,
    twins: &mut Twins,
    server_clock: bool,
    steps: &[FuzzStep],
) {
    twins.clear(con);
    twins.clock = if server_clock {
        Clock::Server
    } else {
        Clock::Pinned
    };
    for step in steps {
        match step {
            FuzzStep::Call { verb, keys, args } => {
                let made = keys.first().map(|&k| twins.made_ids(k)).unwrap_or_default();
                let args: Vec<Vec<u8>> = args
                    .iter()
                    .map(|a| match a {
                        Arg::Bytes(b) => b.clone(),
                        Arg::Made(_) if made.is_empty() => b"job-0".to_vec(),
                        Arg::Made(n) => made[n % made.len()].clone(),
                    })
                    .collect();
                twins.call(con, verb, keys, &args);
            }
            FuzzStep::Age { keys, by_ms } => twins.step(
                con,
                Step::Age {
                    keys: keys.clone(),
                    by_ms: *by_ms,
                },
            ),
            FuzzStep::Seed { key, label } => {
                let seeding = hostile_seeds(unix_ms())
                    .into_iter()
                    .find(|s| &s.label == label)
                    .unwrap();
                twins.step(
                    con,
                    Step::Seed {
                        key: *key,
                        label: seeding.label,
                        commands: seeding.commands,
                    },
                );
            }
        }
    }
}

#[test]
fn fallback_fuzz_answers_hostile_calls_exactly_as_the_module() {
    let cases: u32 = env("RATELIMIT_FUZZ_CASES", DEFAULT_CASES);
    let seed: u64 = env("RATELIMIT_FUZZ_SEED", DEFAULT_SEED);
    let server = Server::start();
    let con = RefCell::new(server.connect());
    let names = KEY_NAMES.iter().map(|k| k.to_vec()).collect();
    let route = Route::for_server(&mut con.borrow_mut());
    let twins = RefCell::new(Twins::with_naming(
        &mut con.borrow_mut(),
        route,
        Clock::Pinned,
        Naming::Databases(names),
    ));
    let mut runner = TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        max_shrink_iters: 2_000,
        max_shrink_time: 60_000,
        ..Config::default()
    });
    let started = Instant::now();
    let result = runner.run(&case(), |(server_clock, steps)| {
        run_case(
            &mut con.borrow_mut(),
            &mut twins.borrow_mut(),
            server_clock,
            &steps,
        );
        Ok(())
    });
    let twins = twins.into_inner();
    eprintln!(
        "up to {cases} cases (seed {seed}) in {:.1?}: {}",
        started.elapsed(),
        twins.summary()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // Every command was compared, refused and answered.
    for verb in [
        "check", "peek", "mcheck", "mpeek", "reset", "throttle", "acquire", "release", "renew",
    ] {
        let outcomes: Vec<&String> = twins
            .seen
            .keys()
            .filter(|k| k.split(' ').next() == Some(verb))
            .collect();
        assert!(
            outcomes.iter().any(|k| k.ends_with(" ok"))
                && outcomes.iter().any(|k| !k.ends_with(" ok")),
            "{verb}: only {outcomes:?} compared"
        );
    }
    assert!(
        twins.resynced * 5 < twins.compared,
        "{} steps resynced for {} compared",
        twins.resynced,
        twins.compared
    );
}
