//! RESERVE, SETTLE and EXTEND of the script fallback against the module's:
//! the same calls on one server, the module's keys in database 0 and the
//! library's of the same names in database 1, at one instant, give the same
//! replies, error texts, limiter values, hashes of holds (every field and
//! record, byte for byte) and absolute expiries.
//!
//! - A fuzz target: proptest makes sequences of RESERVE, SETTLE and EXTEND
//!   on two hashes of holds, mixed with CHECK, PEEK, MCHECK and MPEEK on
//!   the limiter keys they hold, with holds aged past their deadlines (the
//!   next call sweeps and refunds them), hashes and limiter keys set by
//!   hand (records written by hand, live and settled, due and not; foreign
//!   fields; another kind's state where a hold refunds), and malformed
//!   arguments of every kind. After each call every key of the case is
//!   compared, since a sweep refunds keys the call does not name.
//! - Every refusal the commands have, with the module's text.
//! - A session of holds run by both in turn: records the module wrote
//!   settled by the library and the other way round.
//! - The functions' flags: what runs at `maxmemory` and under `FCALL_RO`.
//! - The library's effects on a server without the module: its replica and
//!   a restart from its AOF hold exactly its keys.
//!
//! The fuzz run is bounded by its number of cases and its seed is fixed;
//! failing cases are kept in `proptest-regressions/fallback_holds.txt` and
//! tried first on later runs (commit that file). To fuzz longer:
//!
//! ```text
//! RATELIMIT_FUZZ_CASES=20000 RATELIMIT_FUZZ_SEED=7 \
//!     cargo test --test fallback_holds -- --nocapture
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::RefCell;
use std::fmt;
use std::time::Instant;

use std::collections::BTreeMap;

use common::fallback::{
    age_keys, load_library, module_cmd, read_all, unix_ms, Clock, KeyState, Naming, Route, Step,
    Twins,
};
use common::{
    attach_replicas, error_of, has_command, replication_master, run, try_run, wait_replicas,
    DataDir, Server,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed, TestRunner};
use redis::Value;

/// Cases `cargo test` runs.
const DEFAULT_CASES: u32 = 1_200;
/// The seed `cargo test` runs.
const DEFAULT_SEED: u64 = 0x00f0_1d5e;
/// Where failing cases are kept.
const REGRESSIONS: &str = "proptest-regressions/fallback_holds.txt";

/// The keys a case may name: two hashes of holds (one hash-tagged), then
/// limiter keys, named plainly, like keywords, in binary with a space
/// (a record counts a key's bytes) and empty (a record then ends in a
/// space).
const KEY_NAMES: [&[u8]; 9] = [
    b"h",
    b"{t}h",
    b"a",
    b"b",
    b"{t}c",
    b"LIMIT",
    b"HOLD",
    b"\x00\xff k\n",
    b"",
];

/// Where the hashes of holds are among [`KEY_NAMES`], and the limiter keys.
const HOLDS_KEYS: [usize; 2] = [0, 1];
const LIMITER_KEYS: [usize; 7] = [2, 3, 4, 5, 6, 7, 8];

/// The limit each limiter key is mostly asked with: algorithm, limit,
/// period in seconds (short, so that windows turn over within a case) and
/// burst.
fn home(key: usize) -> (&'static str, u64, u64, Option<u64>) {
    match key {
        2 => ("FIXED", 10, 1, None),
        3 => ("SLIDING", 8, 2, None),
        4 => ("TOKEN", 6, 1, Some(12)),
        5 => ("FIXED", 4, 3, None),
        6 => ("TOKEN", 5, 2, None),
        7 => ("SLIDING", 3, 1, None),
        _ => ("FIXED", 2, 2, None),
    }
}

/// Numbers no command takes, and ones at every bound of these commands.
const ODD_NUMBERS: [&str; 20] = [
    "0",
    "-1",
    "01",
    "+5",
    " 5",
    "1.5",
    "",
    "x",
    "NOW",
    "LIMIT",
    "60000",
    "60001",
    "86400000",
    "86400001",
    "1000000000000000",
    "1000000000000001",
    "9007199254740993",
    "9223372036854775808",
    "-9223372036854775808",
    "99999999999999999999999",
];

/// An argument: bytes, shown escaped.
#[derive(Clone, PartialEq, Eq)]
struct Arg(Vec<u8>);

impl fmt::Debug for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

fn text(s: impl Into<String>) -> Arg {
    Arg(s.into().into_bytes())
}

/// One step of a case.
#[derive(Clone, Debug)]
enum HoldsStep {
    Call {
        verb: &'static str,
        keys: Vec<usize>,
        args: Vec<Arg>,
    },
    /// Both twins of the keys aged by `by_ms`: holds reach their deadlines,
    /// windows end, buckets refill.
    Age { keys: Vec<usize>, by_ms: u64 },
    /// Both twins of a key set by hand to the state of this label
    /// ([`seeding`]).
    Seed { key: usize, label: &'static str },
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
        4 => Just(text(word)),
        1 => Just(text(word.to_lowercase())),
        1 => Just(text(mixed)),
    ]
    .boxed()
}

/// A number: mostly `valid`, else anything.
fn number(valid: impl Strategy<Value = u64> + 'static) -> BoxedStrategy<Arg> {
    prop_oneof![
        100 => valid.prop_map(|n| text(n.to_string())),
        2 => select(&ODD_NUMBERS[..]).prop_map(text),
        1 => any::<u64>().prop_map(|n| text(n.to_string())),
    ]
    .boxed()
}

/// A hold's id: a few the calls share, or one no command takes.
fn id() -> BoxedStrategy<Arg> {
    prop_oneof![
        80 => (0u8..4).prop_map(|n| text(format!("r{n}"))),
        1 => select(&["NOW", "now", "nOw", "LIMIT", "HOLD"][..]).prop_map(text),
        1 => Just(Arg(Vec::new())),
        1 => vec(any::<u8>(), 63..=65).prop_map(Arg),
        1 => vec(any::<u8>(), 1..=4).prop_map(Arg),
    ]
    .boxed()
}

/// A `ttl_ms`: mostly short, so that a case outlives its holds.
fn ttl_ms() -> BoxedStrategy<Arg> {
    prop_oneof![
        30 => (1u64..4_000).prop_map(|n| text(n.to_string())),
        2 => (60_000u64..=86_400_000).prop_map(|n| text(n.to_string())),
        1 => number(1u64..100),
    ]
    .boxed()
}

/// The option that says a group's units: RESERVE's COST or HOLD (or
/// none), SETTLE's ACTUAL; sometimes both, the other command's, repeated
/// or cut short.
fn amount(verb: &'static str) -> BoxedStrategy<Vec<Arg>> {
    let small = || number(0u64..30);
    let pair = |word: &'static str, value: BoxedStrategy<Arg>| {
        (keyword(word), value).prop_map(|(k, v)| vec![k, v]).boxed()
    };
    if verb == "reserve" {
        prop_oneof![
            16 => Just(Vec::new()),
            16 => pair("COST", number(0u64..4)),
            40 => pair("HOLD", small()),
            2 => pair("HOLD", Just(text("1000000000000000")).boxed()),
            1 => (pair("COST", small()), pair("HOLD", small())).prop_map(|(a, b)| [a, b].concat()),
            1 => (pair("HOLD", small()), pair("COST", small())).prop_map(|(a, b)| [a, b].concat()),
            1 => (pair("HOLD", small()), pair("HOLD", small())).prop_map(|(a, b)| [a, b].concat()),
            1 => pair("ACTUAL", small()),
            1 => keyword("HOLD").prop_map(|k| vec![k]),
        ]
        .boxed()
    } else {
        prop_oneof![
            60 => pair("ACTUAL", small()),
            1 => Just(Vec::new()),
            1 => pair("COST", small()),
            1 => pair("HOLD", small()),
            1 => (pair("ACTUAL", small()), pair("ACTUAL", small())).prop_map(|(a, b)| [a, b].concat()),
            1 => keyword("ACTUAL").prop_map(|k| vec![k]),
        ]
        .boxed()
    }
}

/// `limit period [ALGORITHM a] [BURST b]` for `key`: mostly its home,
/// sometimes other parameters or another algorithm, sometimes anything.
fn limit_params(key: usize) -> BoxedStrategy<Vec<Arg>> {
    let (kind, limit, period_s, burst) = home(key);
    let shaped = |kind: &'static str, limit: u64, period_s: u64, burst: Option<u64>| {
        (keyword("ALGORITHM"), keyword("BURST"), any::<bool>()).prop_map(
            move |(a, b, name_fixed)| {
                let mut args = vec![text(limit.to_string()), text(period_s.to_string())];
                if kind != "FIXED" || name_fixed {
                    args.extend([a, text(kind)]);
                }
                if let Some(burst) = burst {
                    args.extend([b, text(burst.to_string())]);
                }
                args
            },
        )
    };
    let other = (
        select(&["FIXED", "SLIDING", "TOKEN"][..]),
        1u64..12,
        1u64..4,
        prop::option::of(1u64..20),
    )
        .prop_flat_map(move |(kind, limit, period_s, burst)| {
            shaped(kind, limit, period_s, burst.filter(|_| kind == "TOKEN"))
        });
    let any_params = (
        number(1u64..12),
        number(1u64..4),
        prop::option::of((
            select(&["ALGORITHM", "BURST", "WEIGHT", "LIMIT", "NOW"][..]),
            number(1u64..4),
        )),
    )
        .prop_map(|(limit, period, option)| {
            let mut args = vec![limit, period];
            if let Some((word, value)) = option {
                args.extend([text(word), value]);
            }
            args
        });
    prop_oneof![
        40 => shaped(kind, limit, period_s, burst),
        3 => other,
        1 => any_params,
    ]
    .boxed()
}

/// A `LIMIT` group of `verb` for `key`, its units option before or after
/// the others.
fn group(key: usize, verb: &'static str) -> BoxedStrategy<Vec<Arg>> {
    (
        prop_oneof![60 => keyword("LIMIT"), 1 => Just(text("HOLD"))],
        limit_params(key),
        amount(verb),
        any::<bool>(),
    )
        .prop_map(|(limit_word, params, amount, amount_first)| {
            let mut group = vec![limit_word, params[0].clone(), params[1].clone()];
            if amount_first {
                group.extend(amount);
                group.extend(params[2..].iter().cloned());
            } else {
                group.extend(params[2..].iter().cloned());
                group.extend(amount);
            }
            group
        })
        .boxed()
}

/// A hash of holds: mostly one of the two, else any key.
fn holds_key() -> BoxedStrategy<usize> {
    prop_oneof![
        12 => select(&HOLDS_KEYS[..]),
        1 => 0..KEY_NAMES.len(),
    ]
    .boxed()
}

/// RESERVE's or SETTLE's keys (the holds key first) and arguments (`id`,
/// RESERVE's `ttl_ms`, the groups): mostly one group per key, the keys
/// distinct; sometimes the holds key among them, a key twice, a group
/// more or less.
fn counted_call(verb: &'static str) -> BoxedStrategy<HoldsStep> {
    let keys = (
        holds_key(),
        (1usize..=3).prop_flat_map(|n| subsequence(LIMITER_KEYS.to_vec(), n).prop_shuffle()),
        prop_oneof![
            60 => Just(0u8),
            1 => Just(1u8),
            1 => Just(2u8),
        ],
    )
        .prop_map(|(holds, mut limiters, twist)| {
            match twist {
                1 => limiters.push(holds),
                2 => limiters.push(limiters[0]),
                _ => {}
            }
            (holds, limiters)
        });
    keys.prop_flat_map(move |(holds, limiters)| {
        let groups: Vec<BoxedStrategy<Vec<Arg>>> =
            limiters.iter().map(|&k| group(k.max(2), verb)).collect();
        let ttl = if verb == "reserve" {
            ttl_ms().prop_map(Some).boxed()
        } else {
            Just(None).boxed()
        };
        (
            Just(holds),
            Just(limiters),
            id(),
            ttl,
            groups,
            prop_oneof![60 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
            group(2, verb),
        )
    })
    .prop_map(move |(holds, limiters, id, ttl, groups, twist, extra)| {
        let mut args = vec![id];
        args.extend(ttl);
        let mut groups = groups;
        match twist {
            1 => {
                groups.pop();
            }
            2 => groups.push(extra),
            _ => {}
        }
        args.extend(groups.into_iter().flatten());
        let mut keys = vec![holds];
        keys.extend(limiters);
        HoldsStep::Call { verb, keys, args }
    })
    .boxed()
}

fn extend_call() -> BoxedStrategy<HoldsStep> {
    let args = prop_oneof![
        30 => (id(), ttl_ms()).prop_map(|(id, ttl)| vec![id, ttl]),
        1 => id().prop_map(|id| vec![id]),
        1 => (id(), ttl_ms(), ttl_ms()).prop_map(|(id, a, b)| vec![id, a, b]),
    ];
    (holds_key(), args)
        .prop_map(|(key, args)| HoldsStep::Call {
            verb: "extend",
            keys: vec![key],
            args,
        })
        .boxed()
}

/// CHECK or PEEK of a limiter key with its home and a cost of 0 to 3.
fn single_call() -> BoxedStrategy<HoldsStep> {
    (
        select(&["check", "check", "peek"][..]),
        select(&LIMITER_KEYS[..]),
        0u64..4,
        keyword("COST"),
    )
        .prop_flat_map(|(verb, key, cost, cost_word)| {
            (
                Just(verb),
                Just(key),
                limit_params(key),
                Just(vec![cost_word, text(cost.to_string())]),
            )
        })
        .prop_map(|(verb, key, mut args, cost)| {
            args.extend(cost);
            HoldsStep::Call {
                verb,
                keys: vec![key],
                args,
            }
        })
        .boxed()
}

/// MCHECK or MPEEK of one to three limiter keys.
fn multi_call() -> BoxedStrategy<HoldsStep> {
    (
        select(&["mcheck", "mcheck", "mpeek"][..]),
        (1usize..=3).prop_flat_map(|n| subsequence(LIMITER_KEYS.to_vec(), n).prop_shuffle()),
    )
        .prop_flat_map(|(verb, keys)| {
            let groups: Vec<BoxedStrategy<Vec<Arg>>> = keys
                .iter()
                .map(|&k| {
                    (keyword("LIMIT"), limit_params(k))
                        .prop_map(|(limit, params)| [vec![limit], params].concat())
                        .boxed()
                })
                .collect();
            (Just(verb), Just(keys), groups)
        })
        .prop_map(|(verb, keys, groups)| HoldsStep::Call {
            verb,
            keys,
            args: groups.into_iter().flatten().collect(),
        })
        .boxed()
}

/// A call, sometimes ending in `NOW x` (the library's clock pair where
/// the rest makes the arity, else the module's arguments).
fn call() -> BoxedStrategy<HoldsStep> {
    let calls = prop_oneof![
        10 => counted_call("reserve"),
        7 => counted_call("settle"),
        3 => extend_call(),
        3 => single_call(),
        2 => multi_call(),
    ];
    (
        calls,
        prop::option::weighted(0.04, (keyword("NOW"), number(0u64..10))),
    )
        .prop_map(|(mut step, now)| {
            if let (HoldsStep::Call { args, .. }, Some((word, at))) = (&mut step, now) {
                args.extend([word, at]);
            }
            step
        })
        .boxed()
}

/// The states a key may be set to by hand, by label.
const SEEDS: [&str; 18] = [
    "plain",
    "string",
    "foreign hash",
    "sweep not a number",
    "record not a record, sweep due",
    "record not a record, sweep far",
    "record with a bad charge time, sweep due",
    "record with a bad hold limit, sweep due",
    "record with a space after it, sweep due",
    "live by hand, due",
    "live by hand, lower-case algorithms",
    "live by hand holding itself, due",
    "settled by hand, no sweep field, due",
    "settled by hand, one limit",
    "settled by hand, binding past its limits",
    "limiter SLIDING state",
    "limiter TOKEN state without expiry",
    "limiter not limiter state",
];

/// The commands that set a key to the state `label` names at `now_ms`
/// (`{k}` for the key). Records by hand name the limiter keys `a`, `b`
/// and `{t}c` (and the holds keys themselves), and reply integers the
/// commands could have replied.
fn seeding(label: &str, now_ms: i64) -> Vec<Vec<String>> {
    let at = |ms: i64| (now_ms + ms).to_string();
    let cmd = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    let hash = |pairs: Vec<(String, String)>, expires: Option<String>| {
        let mut hset = vec!["HSET".to_string(), "{k}".into()];
        for (field, value) in pairs {
            hset.extend([field, value]);
        }
        let mut commands = vec![cmd(&["DEL", "{k}"]), hset];
        if let Some(at) = expires {
            commands.push(vec!["PEXPIREAT".into(), "{k}".into(), at]);
        }
        commands
    };
    let pair = |field: &str, value: String| (field.to_string(), value);
    match label {
        "plain" => vec![cmd(&["DEL", "{k}"])],
        "string" => vec![cmd(&["SET", "{k}", "hello"])],
        "foreign hash" => hash(vec![pair("f", "v".into())], None),
        "sweep not a number" => hash(vec![pair("", "12x".into())], None),
        "record not a record, sweep due" => hash(
            vec![pair("", at(-5)), pair("r9", "L 1 2".into())],
            Some(at(60_000)),
        ),
        "record not a record, sweep far" => hash(
            vec![pair("", at(1_000_000)), pair("r1", "S 5 1".into())],
            Some(at(2_000_000)),
        ),
        "record with a bad charge time, sweep due" => hash(
            vec![
                pair("", at(-5)),
                pair("r0", format!("L {} x 1000 0 1 1 5 10 1000", at(-5))),
            ],
            Some(at(60_000)),
        ),
        "record with a bad hold limit, sweep due" => hash(
            vec![
                pair("", at(-5)),
                pair(
                    "r0",
                    format!(
                        "L {} {} 1000 1 FIXED 01 1 0 5 1 a 1 1 5 10 1000",
                        at(-5),
                        at(-1005)
                    ),
                ),
            ],
            Some(at(60_000)),
        ),
        "record with a space after it, sweep due" => hash(
            vec![
                pair("", at(-5)),
                pair("r1", format!("S {} 1 1 5 10 60000 ", at(-5))),
            ],
            Some(at(60_000)),
        ),
        "live by hand, due" => hash(
            vec![
                pair("", at(-5)),
                pair(
                    "r2",
                    format!(
                        "L {} {} 1000 1 FIXED 10 1 0 5 1 a 1 1 5 10 1000",
                        at(-5),
                        at(-1005)
                    ),
                ),
                pair("r3", format!("S {} 2 2 7 10 1000 2 8 4000", at(3_000))),
            ],
            Some(at(10_000)),
        ),
        "live by hand, lower-case algorithms" => hash(
            vec![
                pair("", at(1_500)),
                pair(
                    "r0",
                    format!(
                        "L {} {} 1500 2 token 6 1 12 3 4 {{t}}c sliding 8 2 7 2 1 b \
                         1 2 3 6 500 6 8 2000",
                        at(1_500),
                        at(-200)
                    ),
                ),
            ],
            Some(at(6_000)),
        ),
        "live by hand holding itself, due" => hash(
            vec![
                pair("", at(-1)),
                pair(
                    "r1",
                    format!(
                        "L {} {} 900 2 FIXED 1 1 0 1 1 h FIXED 1 1 0 1 4 {{t}}h 1 1 0 1 900",
                        at(-1),
                        at(-901)
                    ),
                ),
            ],
            Some(at(3_000)),
        ),
        "settled by hand, no sweep field, due" => hash(
            vec![pair("r3", format!("S {} 1 1 2 8 4000", at(-10)))],
            None,
        ),
        "settled by hand, one limit" => hash(
            vec![
                pair("", at(2_000)),
                pair("r0", format!("S {} 1 1 5 10 60000", at(2_000))),
            ],
            Some(at(2_000)),
        ),
        "settled by hand, binding past its limits" => hash(
            vec![
                pair("", at(-2)),
                pair("r0", format!("S {} 2 1 5 10 60000", at(2_000))),
            ],
            Some(at(2_000)),
        ),
        "limiter SLIDING state" => vec![vec![
            "SET".into(),
            "{k}".into(),
            "S1:2".into(),
            "PXAT".into(),
            at(2_500),
        ]],
        "limiter TOKEN state without expiry" => vec![cmd(&["SET", "{k}", "T5"])],
        "limiter not limiter state" => vec![cmd(&["SET", "{k}", "hello"])],
        other => panic!("no seed {other}"),
    }
}

fn step() -> BoxedStrategy<HoldsStep> {
    prop_oneof![
        14 => call(),
        3 => (
            subsequence((0..KEY_NAMES.len()).collect::<Vec<_>>(), 1..=4),
            prop_oneof![1 => 1u64..200, 2 => 200u64..4_000, 1 => 4_000u64..10_000],
        )
            .prop_map(|(keys, by_ms)| HoldsStep::Age { keys, by_ms }),
        2 => (0..KEY_NAMES.len(), select(&SEEDS[..]))
            .prop_map(|(key, label)| HoldsStep::Seed { key, label }),
    ]
    .boxed()
}

/// A case: the clock the library reads (mostly NOW, the module's instant;
/// else the server's TIME), then up to 16 steps.
fn case() -> BoxedStrategy<(bool, Vec<HoldsStep>)> {
    (prop::bool::weighted(0.25), vec(step(), 1..=16)).boxed()
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

fn run_case(
    con: &mut redis::Connection,
    twins: &mut Twins,
    server_clock: bool,
    steps: &[HoldsStep],
) {
    twins.clear(con);
    twins.clock = if server_clock {
        Clock::Server
    } else {
        Clock::Pinned
    };
    for step in steps {
        match step {
            HoldsStep::Call { verb, keys, args } => {
                let args: Vec<Vec<u8>> = args.iter().map(|a| a.0.clone()).collect();
                twins.call(con, verb, keys, &args);
            }
            HoldsStep::Age { keys, by_ms } => twins.step(
                con,
                Step::Age {
                    keys: keys.clone(),
                    by_ms: *by_ms,
                },
            ),
            HoldsStep::Seed { key, label } => twins.step(
                con,
                Step::Seed {
                    key: *key,
                    label: label.to_string(),
                    commands: seeding(label, unix_ms()),
                },
            ),
        }
    }
}

/// Twins of [`KEY_NAMES`], every key compared after every call.
fn twins(con: &mut redis::Connection, route: Route) -> Twins {
    let names = KEY_NAMES.iter().map(|k| k.to_vec()).collect();
    let mut twins = Twins::with_naming(con, route, Clock::Pinned, Naming::Databases(names));
    twins.watched = (0..KEY_NAMES.len()).collect();
    twins
}

fn fuzz(route: impl Fn(&mut redis::Connection) -> Route, cases: u32, seed: u64) {
    let server = Server::start();
    let con = RefCell::new(server.connect());
    let route = route(&mut con.borrow_mut());
    let twins = RefCell::new(twins(&mut con.borrow_mut(), route.clone()));
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
        "{route:?}: up to {cases} cases (seed {seed}) in {:.1?}: {}; after a seed: {:?}",
        started.elapsed(),
        twins.summary(),
        twins.after_seed
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // Every command was compared, answered and refused (a short call is
    // not always drawn: Redis 6.2 has no arity of its own to refuse it).
    for verb in ["reserve", "settle", "extend"] {
        let outcomes: Vec<&String> = twins
            .seen
            .keys()
            .filter(|k| k.split(' ').next() == Some(verb))
            .collect();
        for outcome in ["ok", "error", "wrongtype"] {
            assert!(
                outcomes.iter().any(|k| k.ends_with(outcome)),
                "{verb}: no {outcome} among {outcomes:?}"
            );
        }
    }
    // Every state set by hand met a command of holds ("plain" is none).
    for label in &SEEDS[1..] {
        assert!(
            ["reserve", "settle", "extend"]
                .iter()
                .any(|verb| twins.after_seed.contains_key(&format!("{label} / {verb}"))),
            "no call of holds after {label}: {:?}",
            twins.after_seed
        );
    }
    assert!(
        twins.resynced * 5 < twins.compared,
        "{} steps resynced for {} compared",
        twins.resynced,
        twins.compared
    );
}

#[test]
fn fallback_holds_answer_sequences_of_calls_exactly_as_the_module() {
    fuzz(
        |c| Route::for_server(c),
        env("RATELIMIT_FUZZ_CASES", DEFAULT_CASES),
        env("RATELIMIT_FUZZ_SEED", DEFAULT_SEED),
    );
}

/// The same source as a script (Redis 6.2's way), on any server.
#[test]
fn fallback_holds_through_eval_answer_as_the_module() {
    fuzz(|c| Route::eval(c), DEFAULT_CASES / 4, DEFAULT_SEED + 1);
}

/// A call in the library's form: FCALL's keys (the holds key first) and
/// arguments, as text.
struct Refused {
    verb: &'static str,
    keys: &'static [&'static str],
    args: &'static [&'static str],
    error: &'static str,
}

const fn refused(
    verb: &'static str,
    keys: &'static [&'static str],
    args: &'static [&'static str],
    error: &'static str,
) -> Refused {
    Refused {
        verb,
        keys,
        args,
        error,
    }
}

const ARITY_RESERVE: &str = "ERR wrong number of arguments for 'ratelimit.reserve' command";
const ARITY_SETTLE: &str = "ERR wrong number of arguments for 'ratelimit.settle' command";
const ARITY_EXTEND: &str = "ERR wrong number of arguments for 'ratelimit.extend' command";
const BAD_ID: &str = "ERR id must be 1 to 64 bytes and not NOW";
const BAD_TTL: &str = "ERR ttl_ms must be an integer from 1 to 86400000";
const BAD_NUMKEYS: &str = "ERR numkeys must be an integer from 1 to 16";
const GROUP_PER_KEY: &str = "ERR expected one LIMIT group per key, in the order of the keys";
const SHORT_GROUP: &str = "ERR syntax error: LIMIT needs a limit and a period";
const BAD_LIMIT: &str = "ERR limit must be a positive integer (at most 1000000000000000)";
const BAD_ESTIMATE: &str = "ERR estimate must be a non-negative integer (at most 1000000000000000)";
const BAD_ACTUAL: &str = "ERR actual must be a non-negative integer (at most 1000000000000000)";
const COST_OR_HOLD: &str = "ERR syntax error: a LIMIT takes COST or HOLD, not both";
const NEEDS_ACTUAL: &str = "ERR syntax error: each LIMIT of SETTLE needs ACTUAL";
const DUPLICATE: &str = "ERR each key may appear only once";
const HOLDS_IS_LIMITER: &str = "ERR the holds key cannot also be a limiter key";
const NOT_HOLDS: &str = "WRONGTYPE the key holds a hash that is not a record of holds";
const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const NOT_LIMITER: &str = "WRONGTYPE the key holds a string that is not limiter state";

/// Every refusal of RESERVE, SETTLE and EXTEND, in the library's form
/// (FCALL's keys: the holds key, then the limiter keys). The keys `string`,
/// `foreign`, `garbage`, `sliding` and `hello` are set by [`set_hostile_keys`].
const REFUSALS: [Refused; 53] = [
    // RESERVE, in argument order.
    refused("reserve", &["h", "a"], &["r", "1000", "LIMIT", "5"], ARITY_RESERVE),
    refused("reserve", &["h"], &["r", "1000", "LIMIT", "5", "60"], ARITY_RESERVE),
    refused("reserve", &["h", "a"], &["", "1000", "LIMIT", "5", "60"], BAD_ID),
    refused("reserve", &["h", "a"], &["NOW", "1000", "LIMIT", "5", "60"], BAD_ID),
    refused("reserve", &["h", "a"], &["nOw", "x", "LIMIT", "5", "60"], BAD_ID),
    refused("reserve", &["h", "a"], &["r", "0", "LIMIT", "5", "60"], BAD_TTL),
    refused("reserve", &["h", "a"], &["r", "86400001", "LIMIT", "5", "60"], BAD_TTL),
    refused("reserve", &["h", "a"], &["r", "1e3", "LIMIT", "0", "60"], BAD_TTL),
    refused("reserve", &["h", "a", "b"], &["r", "1000", "LIMIT", "5", "60"], GROUP_PER_KEY),
    refused("reserve", &["h", "a"], &["r", "1000", "COST", "5", "60"], GROUP_PER_KEY),
    refused("reserve", &["h", "a", "b"], &["r", "1000", "LIMIT", "5", "60", "LIMIT", "5"], SHORT_GROUP),
    refused("reserve", &["h", "a"], &["r", "1000", "LIMIT", "0", "60"], BAD_LIMIT),
    refused("reserve", &["h", "a"], &["r", "1000", "LIMIT", "5", "60", "HOLD", "-1"], BAD_ESTIMATE),
    refused("reserve", &["h", "a"], &["r", "1000", "LIMIT", "5", "60", "HOLD", "1000000000000001"], BAD_ESTIMATE),
    refused("reserve", &["h", "a"], &["r", "1000", "LIMIT", "5", "60", "COST", "1", "HOLD", "2"], COST_OR_HOLD),
    refused("reserve", &["h", "a"], &["r", "1000", "LIMIT", "5", "60", "hold", "2", "cost"], COST_OR_HOLD),
    refused("reserve", &["h", "a"], &["r", "1000", "LIMIT", "5", "60", "HOLD", "1", "HOLD", "2"], "ERR syntax error: HOLD given twice"),
    refused("reserve", &["h", "a"], &["r", "1000", "LIMIT", "5", "60", "HOLD"], "ERR syntax error: HOLD needs a value"),
    refused("reserve", &["h", "a"], &["r", "1000", "LIMIT", "5", "60", "ACTUAL", "1"], "ERR syntax error: unknown option 'ACTUAL'"),
    refused("reserve", &["h", "a"], &["r", "1000", "LIMIT", "5", "60", "HOLD", "1", "BURST", "2"], "ERR BURST is only valid with ALGORITHM TOKEN"),
    refused("reserve", &["h", "a", "a"], &["r", "1000", "LIMIT", "5", "60", "LIMIT", "0", "60"], BAD_LIMIT),
    refused("reserve", &["h", "a", "a"], &["r", "1000", "LIMIT", "5", "60", "LIMIT", "5", "60"], DUPLICATE),
    refused("reserve", &["h", "a", "h"], &["r", "1000", "LIMIT", "5", "60", "LIMIT", "5", "60"], HOLDS_IS_LIMITER),
    refused("reserve", &["string", "a"], &["r", "1000", "LIMIT", "5", "60"], WRONGTYPE),
    refused("reserve", &["foreign", "a"], &["r", "1000", "LIMIT", "5", "60"], NOT_HOLDS),
    refused("reserve", &["garbage", "a"], &["r", "1000", "LIMIT", "5", "60"], NOT_HOLDS),
    refused("reserve", &["h", "sliding"], &["r", "1000", "LIMIT", "5", "60", "HOLD", "1"], "WRONGTYPE the key holds SLIDING limiter state, not FIXED; use ALGORITHM SLIDING or RATELIMIT.RESET it"),
    refused("reserve", &["h", "hello"], &["r", "1000", "LIMIT", "5", "60"], NOT_LIMITER),
    refused("reserve", &["h", "foreign"], &["r", "1000", "LIMIT", "5", "60"], WRONGTYPE),
    // SETTLE: ACTUAL is checked once every group and key is read.
    refused("settle", &["h", "a"], &["r", "LIMIT", "5", "60", "ACTUAL"], ARITY_SETTLE),
    refused("settle", &["h", "a", "b"], &["r", "LIMIT", "5", "60", "ACTUAL", "1", "LIMIT", "5", "60", "ACTUAL"], "ERR syntax error: ACTUAL needs a value"),
    refused("settle", &["h", "a"], &["r", "LIMIT", "5", "60", "1"], ARITY_SETTLE),
    refused("settle", &["h", "a"], &["", "LIMIT", "5", "60", "ACTUAL", "1"], BAD_ID),
    refused("settle", &["h", "a"], &["r", "LIMIT", "5", "60", "ACTUAL", "x"], BAD_ACTUAL),
    refused("settle", &["h", "a"], &["r", "LIMIT", "5", "60", "ACTUAL", "1", "ACTUAL", "1"], "ERR syntax error: ACTUAL given twice"),
    refused("settle", &["h", "a"], &["r", "LIMIT", "5", "60", "COST", "1"], "ERR syntax error: unknown option 'COST'"),
    refused("settle", &["h", "a"], &["r", "LIMIT", "5", "60", "HOLD", "1"], "ERR syntax error: unknown option 'HOLD'"),
    refused("settle", &["h", "a"], &["r", "LIMIT", "5", "60", "ALGORITHM", "FIXED"], NEEDS_ACTUAL),
    refused("settle", &["h", "a", "b"], &["r", "LIMIT", "5", "60", "ALGORITHM", "FIXED", "LIMIT", "0", "60", "ACTUAL", "1"], BAD_LIMIT),
    refused("settle", &["h", "a", "a"], &["r", "LIMIT", "5", "60", "ALGORITHM", "FIXED", "LIMIT", "5", "60", "ALGORITHM", "FIXED"], DUPLICATE),
    refused("settle", &["h", "a", "h"], &["r", "LIMIT", "5", "60", "ALGORITHM", "FIXED", "LIMIT", "5", "60", "ALGORITHM", "FIXED"], NEEDS_ACTUAL),
    refused("settle", &["h", "a", "h"], &["r", "LIMIT", "5", "60", "ACTUAL", "1", "LIMIT", "5", "60", "ACTUAL", "1"], HOLDS_IS_LIMITER),
    refused("settle", &["h", "a", "b"], &["r", "LIMIT", "5", "60", "ACTUAL", "1"], GROUP_PER_KEY),
    refused("settle", &["string", "a"], &["r", "LIMIT", "5", "60", "ACTUAL", "1"], WRONGTYPE),
    refused("settle", &["garbage", "a"], &["r", "LIMIT", "5", "60", "ACTUAL", "1"], NOT_HOLDS),
    refused("settle", &["h", "sliding"], &["r", "LIMIT", "5", "60", "ACTUAL", "0"], "WRONGTYPE the key holds SLIDING limiter state, not FIXED; use ALGORITHM SLIDING or RATELIMIT.RESET it"),
    // EXTEND.
    refused("extend", &["h"], &["r"], ARITY_EXTEND),
    refused("extend", &["h"], &["r", "1000", "5"], ARITY_EXTEND),
    refused("extend", &["h"], &["Now", "1000"], BAD_ID),
    refused("extend", &["h"], &["r", "86400001"], BAD_TTL),
    refused("extend", &["string"], &["r", "1000"], WRONGTYPE),
    refused("extend", &["foreign"], &["r", "1000"], NOT_HOLDS),
    refused("extend", &["garbage"], &["r", "1000"], NOT_HOLDS),
];

/// Keys the refusals meet: a string where a hash of holds belongs, hashes
/// that hold no records (a foreign field; a garbage sweep time), SLIDING
/// state and a string no limiter wrote where a FIXED limit is asked.
fn set_hostile_keys(con: &mut redis::Connection) {
    let later = (unix_ms() + 600_000).to_string();
    for command in [
        vec!["SET", "string", "x"],
        vec!["HSET", "foreign", "f", "v"],
        vec!["HSET", "garbage", "", "soon"],
        vec!["SET", "sliding", "S1:2", "PXAT", &later],
        vec!["SET", "hello", "hello"],
    ] {
        let _: Value = run(con, &command);
    }
}

#[test]
fn every_refusal_of_reserve_settle_and_extend_is_the_modules() {
    let server = Server::start();
    let mut con = server.connect();
    let route = Route::for_server(&mut con);
    for db in ["0", "1"] {
        let _: () = run(&mut con, &["SELECT", db]);
        set_hostile_keys(&mut con);
    }
    for case in &REFUSALS {
        let keys: Vec<Vec<u8>> = case.keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        let args: Vec<Vec<u8>> = case.args.iter().map(|a| a.as_bytes().to_vec()).collect();
        let context = format!("{} {:?} {:?}", case.verb, case.keys, case.args);
        let _: () = run(&mut con, &["SELECT", "0"]);
        let module = error_of(module_cmd(case.verb, &keys, &args).query(&mut con));
        let _: () = run(&mut con, &["SELECT", "1"]);
        let library = error_of(route.cmd(case.verb, &keys, &args).query(&mut con));
        assert_eq!(module, case.error, "the module: {context}");
        assert_eq!(library, case.error, "the library: {context}");
    }
    // Nothing was written by a refused call.
    for db in ["0", "1"] {
        let _: () = run(&mut con, &["SELECT", db]);
        let mut keys: Vec<String> = run(&mut con, &["KEYS", "*"]);
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["foreign", "garbage", "hello", "sliding", "string"],
            "database {db}"
        );
    }
}

/// With no key at all, FCALL's numkeys (one more than the module's) is 0:
/// the module's `numkeys` error, or its arity error for a call too short.
#[test]
fn a_call_without_its_holds_key_is_refused_as_numkeys() {
    let server = Server::start();
    let mut con = server.connect();
    let route = Route::for_server(&mut con);
    let call = |con: &mut redis::Connection, verb: &str, args: &[&str]| {
        error_of(route.call(con, verb, &[], args))
    };
    assert_eq!(
        call(
            &mut con,
            "reserve",
            &["r", "1000", "LIMIT", "5", "60", "COST", "1"]
        ),
        BAD_NUMKEYS
    );
    assert_eq!(
        call(
            &mut con,
            "settle",
            &["r", "LIMIT", "5", "60", "ACTUAL", "1", "x", "y"]
        ),
        BAD_NUMKEYS
    );
    assert_eq!(
        call(&mut con, "reserve", &["r", "1000", "LIMIT", "5", "60"]),
        ARITY_RESERVE
    );
    assert_eq!(call(&mut con, "extend", &["r", "1000"]), ARITY_EXTEND);
}

/// A session of holds, each call made by the module on one twin and by the
/// module or the library in turn on the other (keys handed over at every
/// other call): a record either wrote is replayed, extended, settled and
/// swept by the other, and every reply and key is what the module alone
/// gives.
#[test]
fn holds_handed_between_module_and_fallback_behave_as_the_modules_alone() {
    let server = Server::start();
    let mut con = server.connect();
    let route = Route::for_server(&mut con);
    let mut twins = twins(&mut con, route);
    twins.handover = true;
    let (h, a, b, c) = (0, 2, 3, 4);
    twins.watched = vec![h, a, b, c];
    let s =
        |words: &[&str]| -> Vec<Vec<u8>> { words.iter().map(|w| w.as_bytes().to_vec()).collect() };
    let reserve = s(&[
        "r0",
        "1500",
        "LIMIT",
        "10",
        "1",
        "HOLD",
        "8",
        "LIMIT",
        "8",
        "2",
        "ALGORITHM",
        "SLIDING",
        "COST",
        "2",
        "LIMIT",
        "6",
        "1",
        "ALGORITHM",
        "TOKEN",
        "BURST",
        "12",
        "HOLD",
        "3",
    ]);
    let settle = |id: &str, fixed: u64, token: u64| {
        s(&[
            id,
            "LIMIT",
            "10",
            "1",
            "ACTUAL",
            &fixed.to_string(),
            "LIMIT",
            "6",
            "1",
            "ALGORITHM",
            "TOKEN",
            "BURST",
            "12",
            "ACTUAL",
            &token.to_string(),
        ])
    };
    // Rounds until enough calls were compared: a handed-over call counts
    // only when both its transactions fall in one millisecond.
    let mut round = 0;
    while twins.compared < 150 {
        assert!(round < 100, "only {} calls compared", twins.compared);
        round += 1;
        twins.clear(&mut con);
        twins.call(&mut con, "reserve", &[h, a, b, c], &reserve);
        // Replayed, then another hold on the same limits.
        twins.call(&mut con, "reserve", &[h, a, b, c], &reserve);
        let mut second = reserve.clone();
        second[0] = b"r1".to_vec();
        twins.call(&mut con, "reserve", &[h, a, b, c], &second);
        twins.call(&mut con, "extend", &[h], &s(&["r1", "4000"]));
        match round % 3 {
            // Settled below the estimate (a refund) and above (a debt),
            // then settled again (nothing charged).
            0 => {
                twins.call(&mut con, "settle", &[h, a, c], &settle("r0", 2, 9));
                twins.call(&mut con, "settle", &[h, a, c], &settle("r0", 2, 9));
            }
            // Let r0 expire: the next call refunds it, then settles r1 with
            // no units: the bucket refilled to full is deleted.
            1 => {
                twins.step(
                    &mut con,
                    Step::Age {
                        keys: vec![h, a, b, c],
                        by_ms: 1_600,
                    },
                );
                twins.call(&mut con, "settle", &[h, a, c], &settle("r1", 0, 0));
                twins.call(&mut con, "settle", &[h, a, c], &settle("r0", 1, 1));
            }
            // Both expire; a refund meets a key that now holds another
            // kind's state and leaves it alone.
            _ => {
                let _: () = run(&mut con, &["SET", "{t}c", "S1:2"]);
                let _: () = run(&mut con, &["SELECT", "1"]);
                let _: () = run(&mut con, &["SET", "{t}c", "S1:2"]);
                let _: () = run(&mut con, &["SELECT", "0"]);
                twins.step(
                    &mut con,
                    Step::Age {
                        keys: vec![h, a, b, c],
                        by_ms: 5_000,
                    },
                );
                twins.call(&mut con, "extend", &[h], &s(&["r1", "1000"]));
            }
        }
        twins.call(&mut con, "reserve", &[h, a, b, c], &reserve);
        twins.call(&mut con, "check", &[a], &s(&["10", "1"]));
        twins.call(
            &mut con,
            "mpeek",
            &[a, c],
            &s(&[
                "LIMIT",
                "10",
                "1",
                "LIMIT",
                "6",
                "1",
                "ALGORITHM",
                "TOKEN",
                "BURST",
                "12",
            ]),
        );
    }
    eprintln!("{round} rounds: {}", twins.summary());
    assert!(
        twins.resynced * 3 < twins.compared,
        "{} steps resynced for {} compared",
        twins.resynced,
        twins.compared
    );
}

/// SETTLE and EXTEND run at `maxmemory`, as the module registers them
/// without deny-oom (a hold can always end); RESERVE is refused. None of
/// them runs under FCALL_RO.
#[test]
fn settle_and_extend_run_at_maxmemory_and_reserve_does_not() {
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
    let reserve = ["r", "60000", "LIMIT", "5", "60", "HOLD", "2"];
    route
        .call(&mut con, "reserve", &["h", "k"], &reserve)
        .unwrap();
    for verb in ["reserve", "settle", "extend"] {
        let refused = error_of(try_run(
            &mut con,
            &[
                "FCALL_RO",
                &format!("ratelimit_{verb}"),
                "1",
                "h",
                "r",
                "1000",
            ],
        ));
        assert!(refused.contains("write flag"), "{verb}: {refused}");
    }
    let _: () = run(&mut con, &["CONFIG", "SET", "maxmemory", "1"]);
    let refused = error_of(route.call(&mut con, "reserve", &["h", "k"], &reserve));
    assert!(refused.starts_with("OOM"), "{refused}");
    let extended: i64 = redis::from_redis_value(
        route
            .call(&mut con, "extend", &["h"], &["r", "5000"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(extended, 5000);
    let settled = route
        .call(
            &mut con,
            "settle",
            &["h", "k"],
            &["r", "LIMIT", "5", "60", "ACTUAL", "1"],
        )
        .unwrap();
    let Value::Array(settled) = settled else {
        panic!("{settled:?}")
    };
    assert_eq!(settled[0], Value::Int(1));
    let _: () = run(&mut con, &["CONFIG", "SET", "maxmemory", "0"]);
}

/// A hold past its deadline is refunded by the next call on its holds key,
/// whatever the call: into the FIXED window it was charged to, into a
/// bucket (one refilled to full is deleted), and not at all where the key
/// now holds something else; the hash, left without records, is deleted.
/// The library's keys are checked, and compared with the module's.
#[test]
fn an_expired_hold_is_refunded_by_the_next_call_on_its_holds_key() {
    let server = Server::start();
    let mut con = server.connect();
    let route = Route::for_server(&mut con);
    let mut twins = twins(&mut con, route);
    let s =
        |words: &[&str]| -> Vec<Vec<u8>> { words.iter().map(|w| w.as_bytes().to_vec()).collect() };
    let (h, a, b, c) = (0, 2, 3, 4);
    let library = |con: &mut redis::Connection, command: &[&str]| -> Value {
        let _: () = run(con, &["SELECT", "1"]);
        let value: Value = run(con, command);
        let _: () = run(con, &["SELECT", "0"]);
        value
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(attempts < 20, "no attempt was compared throughout");
        twins.clear(&mut con);
        let compared = twins.compared;
        twins.call(
            &mut con,
            "reserve",
            &[h, a, b, c],
            &s(&[
                "r0",
                "1000",
                "LIMIT",
                "10",
                "60",
                "HOLD",
                "4",
                "LIMIT",
                "8",
                "60",
                "HOLD",
                "2",
                "LIMIT",
                "6",
                "60",
                "ALGORITHM",
                "TOKEN",
                "BURST",
                "12",
                "HOLD",
                "5",
            ]),
        );
        assert_eq!(
            library(&mut con, &["GET", "a"]),
            Value::BulkString(b"4".to_vec())
        );
        // b now holds what no limiter wrote: its refund is skipped.
        for db in ["0", "1"] {
            let _: () = run(&mut con, &["SELECT", db]);
            let _: () = run(&mut con, &["SET", "b", "hello"]);
        }
        let _: () = run(&mut con, &["SELECT", "0"]);
        twins.step(
            &mut con,
            Step::Age {
                keys: vec![h, a, c],
                by_ms: 1_500,
            },
        );
        twins.call(&mut con, "extend", &[h], &s(&["r9", "1000"]));
        if twins.compared - compared < 2 {
            continue;
        }
        assert_eq!(
            library(&mut con, &["GET", "a"]),
            Value::BulkString(b"0".to_vec())
        );
        assert_eq!(
            library(&mut con, &["GET", "b"]),
            Value::BulkString(b"hello".to_vec())
        );
        assert_eq!(library(&mut con, &["EXISTS", "{t}c"]), Value::Int(0));
        assert_eq!(library(&mut con, &["EXISTS", "h"]), Value::Int(0));
        break;
    }
}

/// `all` less the keys expiring from `from_ms` to `to_ms`: two servers read
/// in that interval may see such a key there or gone.
fn without_expiring(
    all: &BTreeMap<Vec<u8>, KeyState>,
    from_ms: i64,
    to_ms: i64,
) -> BTreeMap<Vec<u8>, KeyState> {
    all.iter()
        .filter(|(_, s)| !(from_ms - 5..=to_ms + 5).contains(&s.expires_at))
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect()
}

/// The fuzz target's cases run through the library alone, on a master
/// without the module and on its clock: its replica, and a restart from
/// its AOF, hold exactly its keys (hashes of holds field for field, values,
/// absolute expiries), sweeps and refunds included: what the library
/// propagates is what it did.
#[test]
fn holds_effects_replicate_and_persist_exactly() {
    let data = DataDir::new();
    let master = replication_master(data.aof().without_module());
    let replicas = attach_replicas(&master, vec![Server::builder().without_module()]);
    let mut con = master.connect();
    let route = Route::for_server(&mut con);
    let mut runner = TestRunner::deterministic();
    let (mut ok, mut refused, mut compared_keys) = (0, 0, 0);
    let (mut from_ms, mut on_master) = (0, BTreeMap::new());
    for case_number in 0..200 {
        let (_, steps) = case().new_tree(&mut runner).unwrap().current();
        // Each case on keys of its own making, as in the fuzz target.
        let mut del = redis::cmd("DEL");
        del.arg(&KEY_NAMES[..]);
        let _: i64 = del.query(&mut con).unwrap();
        for step in steps {
            match step {
                HoldsStep::Call { verb, keys, args } => {
                    let keys: Vec<Vec<u8>> = keys.iter().map(|&k| KEY_NAMES[k].to_vec()).collect();
                    let args: Vec<Vec<u8>> = args.into_iter().map(|a| a.0).collect();
                    match route.cmd(verb, &keys, &args).query::<Value>(&mut con) {
                        Ok(_) => ok += 1,
                        Err(_) => refused += 1,
                    }
                }
                HoldsStep::Age { keys, by_ms } => {
                    let keys: Vec<Vec<u8>> = keys.iter().map(|&k| KEY_NAMES[k].to_vec()).collect();
                    age_keys(&mut con, &keys, by_ms);
                }
                HoldsStep::Seed { key, label } => {
                    let mut pipe = redis::pipe();
                    for command in seeding(label, unix_ms()) {
                        let c = pipe.cmd(&command[0]);
                        for a in &command[1..] {
                            if a == "{k}" {
                                c.arg(KEY_NAMES[key]);
                            } else {
                                c.arg(a);
                            }
                        }
                    }
                    let _: Vec<Value> = pipe.query(&mut con).unwrap();
                }
            }
        }
        wait_replicas(&mut con, 1);
        from_ms = unix_ms();
        on_master = read_all(&mut con);
        let on_replica = read_all(&mut replicas[0].connect());
        let to_ms = unix_ms();
        let compared = without_expiring(&on_master, from_ms, to_ms);
        compared_keys += compared.len();
        assert_eq!(
            compared,
            without_expiring(&on_replica, from_ms, to_ms),
            "the replica differs from its master after case {case_number}"
        );
    }
    assert!(
        ok > 500 && refused > 0,
        "{ok} calls succeeded, {refused} refused"
    );
    eprintln!(
        "{ok} calls answered, {refused} refused; {compared_keys} keys compared on the replica"
    );
    drop(replicas);
    master.kill();
    let restarted = data.aof().without_module().start();
    let reloaded = read_all(&mut restarted.connect());
    let to_ms = unix_ms();
    assert_eq!(
        without_expiring(&on_master, from_ms, to_ms),
        without_expiring(&reloaded, from_ms, to_ms),
        "the AOF reloads other keys than the master held"
    );
}
