//! Holds: RATELIMIT.RESERVE, SETTLE and EXTEND against real servers.
//!
//! A hold's times come from the command's own clock: its record in the
//! holds hash shows its deadline and charge time, so a test reads them
//! exactly. A test that needs a deadline or a window to pass polls the
//! server's clock until it has; none sleeps in the hope that enough time
//! went by. Limits that must not refill or roll over during a test have a
//! period of a day.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::thread;

use common::cluster::Cluster;
use common::{
    assert_fires_exactly, assert_replica_took_everything, at_one_instant, attach_replicas, check,
    counters, error, error_of, exists, extend, get_str, group, mcheck, peek, pexpiretime,
    replication_master, run, timed, try_run, wait_replicas, wait_until_past, wrong_algorithm,
    Abilities, DataDir, Decision, Group, Reserved, Server, Settled, FIELDS, WRONGTYPE,
};
use redis::ConnectionLike;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A limit of a call: its key and its `LIMIT` group (units option included).
type Limit<'a> = (&'a str, Group);

fn limit<'a>(key: &'a str, limit: u64, period_s: u64, options: &[&str]) -> Limit<'a> {
    (key, group(limit, period_s, options))
}

fn split<'a>(limits: &[Limit<'a>]) -> (Vec<&'a str>, Vec<Group>) {
    limits.iter().cloned().unzip()
}

fn reserve_args(holds: &str, id: &str, ttl_ms: u64, limits: &[Limit]) -> Vec<String> {
    let (keys, groups) = split(limits);
    common::reserve_args(holds, id, ttl_ms, &keys, &groups)
}

fn settle_args(holds: &str, id: &str, limits: &[Limit]) -> Vec<String> {
    let (keys, groups) = split(limits);
    common::settle_args(holds, id, &keys, &groups)
}

fn reserve(
    con: &mut dyn ConnectionLike,
    holds: &str,
    id: &str,
    ttl_ms: u64,
    limits: &[Limit],
) -> Reserved {
    let (keys, groups) = split(limits);
    common::reserve(con, holds, id, ttl_ms, &keys, &groups)
}

fn settle(con: &mut dyn ConnectionLike, holds: &str, id: &str, limits: &[Limit]) -> Settled {
    let (keys, groups) = split(limits);
    common::settle(con, holds, id, &keys, &groups)
}

/// The fixed-window count at `key` (0 for none).
fn count(con: &mut dyn ConnectionLike, key: &str) -> i64 {
    get_str(con, key).map_or(0, |v| v.parse().unwrap())
}

/// A sliding window's two counts, previous and current.
fn sliding_counts(con: &mut dyn ConnectionLike, key: &str) -> (i64, i64) {
    let value = get_str(con, key).unwrap_or_else(|| panic!("no {key}"));
    let (previous, current) = value
        .strip_prefix('S')
        .and_then(|v| v.split_once(':'))
        .unwrap_or_else(|| panic!("{key} holds no sliding window: {value}"));
    (previous.parse().unwrap(), current.parse().unwrap())
}

/// The holds hash, field by field.
fn holds_of(con: &mut dyn ConnectionLike, key: &str) -> BTreeMap<String, String> {
    run(con, &["HGETALL", key])
}

/// A live record's deadline and charge time (its first words).
fn record_times(con: &mut dyn ConnectionLike, holds: &str, id: &str) -> (i64, i64) {
    let record: String = run(con, &["HGET", holds, id]);
    let words: Vec<&str> = record.split(' ').collect();
    assert_eq!(words[0], "L", "{record}");
    (words[1].parse().unwrap(), words[2].parse().unwrap())
}

/// A key's type, value (a hash field by field) and absolute expiry.
type KeyState = (String, String, i64);

/// One key as [`snapshot`] sees it.
fn key_state(con: &mut dyn ConnectionLike, key: &str) -> KeyState {
    let kind: String = run(con, &["TYPE", key]);
    let value = match kind.as_str() {
        "string" => get_str(con, key).unwrap(),
        "hash" => format!("{:?}", holds_of(con, key)),
        "list" => format!("{:?}", run::<Vec<String>>(con, &["LRANGE", key, "0", "-1"])),
        other => other.to_string(),
    };
    (kind, value, pexpiretime(con, key))
}

/// Every key's type, value and expiry: all a call may change.
fn snapshot(con: &mut dyn ConnectionLike) -> BTreeMap<String, KeyState> {
    let keys: Vec<String> = run(con, &["KEYS", "*"]);
    keys.into_iter()
        .map(|key| {
            let state = key_state(con, &key);
            (key, state)
        })
        .collect()
}

/// `DEBUG DIGEST`: one hash of every key's name, type and value and
/// whether it expires (the server needs `Builder::debug_command`); asserted
/// not to be the empty dataset's.
fn digest(con: &mut dyn ConnectionLike) -> String {
    let digest: String = run(con, &["DEBUG", "DIGEST"]);
    assert_ne!(digest, "0".repeat(40), "DEBUG DIGEST of an empty dataset");
    digest
}

/// `options` after `ALGORITHM algorithm`.
fn with_algorithm<'a>(algorithm: &'a str, options: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["ALGORITHM", algorithm];
    all.extend_from_slice(options);
    all
}

const ALGORITHMS: [&str; 3] = ["FIXED", "SLIDING", "TOKEN"];
/// A day: no limit of this period refills or rolls over during a test.
const DAY: u64 = 86_400;

const HOLDS: &str = "{u}:holds";
const RPM: &str = "{u}:rpm";
const TPM: &str = "{u}:tpm";

// ---------------------------------------------------------------------------
// 1. Reserve, settle, extend
// ---------------------------------------------------------------------------

#[test]
fn holds_reserve_charges_costs_and_estimates_and_records_the_hold() {
    let server = Server::start();
    let mut con = server.connect();
    let r = reserve(
        &mut con,
        HOLDS,
        "req-1",
        30_000,
        &[
            limit(RPM, 60, 60, &[]),
            limit(TPM, 10_000, 60, &["HOLD", "800"]),
        ],
    );
    assert!(r.multi.allowed);
    assert_eq!((r.held, r.hold_ttl_ms), (800, 30_000));
    assert_eq!(r.multi.each[0].counts(), (true, 59, 60));
    assert_eq!(r.multi.each[1].counts(), (true, 9_200, 10_000));
    assert_eq!((count(&mut con, RPM), count(&mut con, TPM)), (1, 800));
    // Every other caller sees the held estimate as used.
    assert_eq!(peek(&mut con, TPM, 10_000, 60, &[]).remaining, 9_200);
    let (deadline, charged_at) = record_times(&mut con, HOLDS, "req-1");
    assert_eq!(deadline - charged_at, 30_000);
    // The sweep time is the earliest deadline; the key outlives the hold by
    // two periods at least.
    assert_eq!(holds_of(&mut con, HOLDS)[""], deadline.to_string());
    assert!(pexpiretime(&mut con, HOLDS) >= deadline + 120_000);

    // A RESERVE of COST limits only is recorded too: a SETTLE finds it.
    let r = reserve(
        &mut con,
        HOLDS,
        "req-2",
        30_000,
        &[limit(RPM, 60, 60, &["COST", "2"])],
    );
    assert!(r.multi.allowed);
    assert_eq!((r.held, r.hold_ttl_ms), (0, 30_000));
    assert!(holds_of(&mut con, HOLDS)["req-2"].starts_with("L "));
    assert_eq!(count(&mut con, RPM), 3);
    let s = settle(
        &mut con,
        HOLDS,
        "req-2",
        &[limit(TPM, 10_000, 60, &["ACTUAL", "5"])],
    );
    // Settled; nothing was held on TPM, so the whole actual is charged.
    assert_eq!(s.status, 1);
    assert_eq!((count(&mut con, RPM), count(&mut con, TPM)), (3, 805));
    assert!(holds_of(&mut con, HOLDS)["req-2"].starts_with("S "));
}

#[test]
fn holds_a_denied_reserve_changes_nothing() {
    let server = Server::start();
    let mut con = server.connect();
    let (sliding, bucket) = ("{u}:sliding", "{u}:bucket");
    reserve(
        &mut con,
        HOLDS,
        "a",
        30_000,
        &[limit(TPM, 100, DAY, &["HOLD", "50"])],
    );
    // Full: one request a minute; a sliding window of 5 and a bucket of 5
    // per day, both emptied.
    check(&mut con, RPM, 1, 60, &[]);
    check(
        &mut con,
        sliding,
        5,
        DAY,
        &["ALGORITHM", "SLIDING", "COST", "5"],
    );
    check(
        &mut con,
        bucket,
        5,
        DAY,
        &["ALGORITHM", "TOKEN", "COST", "5"],
    );
    let before = snapshot(&mut con);
    assert_eq!(before.len(), 5, "{before:?}");
    let cases: Vec<(&str, &str, Vec<Limit>, i64)> = vec![
        // The first limit is full; the second would fit.
        (
            HOLDS,
            "b",
            vec![
                limit(RPM, 1, 60, &[]),
                limit(TPM, 100, DAY, &["HOLD", "10"]),
            ],
            1,
        ),
        // The estimate fits; the cost after it does not.
        (
            HOLDS,
            "c",
            vec![
                limit(TPM, 100, DAY, &["HOLD", "40"]),
                limit(RPM, 1, 60, &["COST", "2"]),
            ],
            2,
        ),
        (HOLDS, "d", vec![limit(TPM, 100, DAY, &["COST", "51"])], 1),
        // An estimate that does not fit in a sliding window or a bucket.
        (
            HOLDS,
            "e",
            vec![
                limit(TPM, 100, DAY, &["HOLD", "1"]),
                limit(sliding, 5, DAY, &["ALGORITHM", "SLIDING", "HOLD", "1"]),
            ],
            2,
        ),
        (
            HOLDS,
            "f",
            vec![
                limit(bucket, 5, DAY, &["ALGORITHM", "TOKEN", "HOLD", "2"]),
                limit(TPM, 100, DAY, &["HOLD", "1"]),
            ],
            1,
        ),
        // No holds key yet: none is made.
        (
            "{u}:holds:new",
            "g",
            vec![
                limit(TPM, 100, DAY, &["HOLD", "10"]),
                limit(RPM, 1, 60, &[]),
            ],
            2,
        ),
    ];
    let denials = cases.len() as u64;
    for (holds, id, limits, binding) in cases {
        let r = reserve(&mut con, holds, id, 30_000, &limits);
        assert!(!r.multi.allowed, "{id}: {r:?}");
        assert_eq!(r.multi.position, binding, "{id}: {r:?}");
        assert_eq!((r.held, r.hold_ttl_ms), (0, -1), "{id}");
        assert_eq!(snapshot(&mut con), before, "{id} changed something");
    }
    // Nothing recorded: SETTLE finds no hold under those ids.
    let s = settle(
        &mut con,
        HOLDS,
        "c",
        &[limit(TPM, 100, DAY, &["ACTUAL", "0"])],
    );
    assert_eq!(s.status, 0);
    let c = counters(&mut con);
    assert_eq!((c["reserve_denied"], c["reserve_allowed"]), (denials, 1));
}

#[test]
fn holds_settle_refunds_charges_or_leaves_the_estimate() {
    let server = Server::start();
    let mut con = server.connect();
    // actual below, equal to and above the estimate, and 0, for each
    // algorithm: what is left is the limit less the actual, exactly.
    let mut settled = 0;
    for algorithm in ALGORITHMS {
        for (name, actual) in [("below", 30), ("equal", 100), ("above", 250), ("zero", 0)] {
            let key = format!("{{u}}:{algorithm}:{name}");
            let id = format!("{algorithm}-{name}");
            let what = format!("{algorithm} {name}");
            let r = reserve(
                &mut con,
                HOLDS,
                &id,
                30_000,
                &[limit(
                    &key,
                    1000,
                    DAY,
                    &with_algorithm(algorithm, &["HOLD", "100"]),
                )],
            );
            assert_eq!(r.held, 100, "{what}");
            assert_eq!(
                peek(&mut con, &key, 1000, DAY, &with_algorithm(algorithm, &[])).remaining,
                900,
                "{what}"
            );
            let actual_text = actual.to_string();
            let s = settle(
                &mut con,
                HOLDS,
                &id,
                &[limit(
                    &key,
                    1000,
                    DAY,
                    &with_algorithm(algorithm, &["ACTUAL", &actual_text]),
                )],
            );
            settled += 1;
            assert_eq!(s.status, 1, "{what}");
            let look = peek(&mut con, &key, 1000, DAY, &with_algorithm(algorithm, &[]));
            assert_eq!(look.counts(), (true, 1000 - actual, 1000), "{what}");
            assert_eq!(
                s.each
                    .iter()
                    .map(Decision::without_reset)
                    .collect::<Vec<_>>(),
                [look.without_reset()],
                "{what}: SETTLE shows PEEK's look"
            );
            match algorithm {
                "FIXED" => assert_eq!(count(&mut con, &key), actual, "{what}"),
                "SLIDING" => assert_eq!(sliding_counts(&mut con, &key), (0, actual), "{what}"),
                _ => assert_eq!(exists(&mut con, &key), actual > 0, "{what}: a full bucket"),
            }
            // Settled: a retry charges nothing and says so.
            let state = snapshot(&mut con);
            let again = settle(
                &mut con,
                HOLDS,
                &id,
                &[limit(
                    &key,
                    1000,
                    DAY,
                    &with_algorithm(algorithm, &["ACTUAL", "999"]),
                )],
            );
            assert_eq!(again.status, 2, "{what}");
            assert_eq!(
                again
                    .each
                    .iter()
                    .map(Decision::without_reset)
                    .collect::<Vec<_>>(),
                [look.without_reset()],
                "{what}"
            );
            assert_eq!(snapshot(&mut con), state, "{what}: a repeated SETTLE");
        }
    }
    let c = counters(&mut con);
    assert_eq!(
        (c["settle_settled"], c["settle_repeated"]),
        (settled, settled)
    );

    // SETTLE names some keys: each is charged its actual less what it held
    // (a key held nothing: the whole actual); a held key it does not name
    // keeps its estimate.
    let other = "{u}:tpd";
    reserve(
        &mut con,
        HOLDS,
        "partial",
        30_000,
        &[
            limit(RPM, 100, DAY, &[]),
            limit(TPM, 1000, DAY, &["HOLD", "100"]),
            limit(other, 1000, DAY, &["HOLD", "200"]),
        ],
    );
    let s = settle(
        &mut con,
        HOLDS,
        "partial",
        &[
            limit(TPM, 1000, DAY, &["ACTUAL", "10"]),
            limit(RPM, 100, DAY, &["ACTUAL", "3"]),
        ],
    );
    assert_eq!(s.status, 1);
    assert_eq!(
        s.each.iter().map(Decision::counts).collect::<Vec<_>>(),
        [(true, 990, 1000), (true, 96, 100)]
    );
    assert_eq!(
        [
            count(&mut con, RPM),
            count(&mut con, TPM),
            count(&mut con, other)
        ],
        [4, 10, 200]
    );
}

#[test]
fn holds_a_debt_denies_until_its_window_ends() {
    let server = Server::start();
    let mut con = server.connect();
    reserve(
        &mut con,
        HOLDS,
        "big",
        30_000,
        &[limit(TPM, 1000, 60, &["HOLD", "900"])],
    );
    // At most half the limit is held; the rest is charged at SETTLE.
    assert_eq!(count(&mut con, TPM), 500);
    let s = settle(
        &mut con,
        HOLDS,
        "big",
        &[limit(TPM, 1000, 60, &["ACTUAL", "1700"])],
    );
    assert_eq!(s.status, 1);
    assert_eq!(count(&mut con, TPM), 1700);
    let end = pexpiretime(&mut con, TPM);
    let shown = s.each[0];
    assert_eq!(shown.counts(), (false, 0, 1000));
    assert_eq!(shown.retry_after_ms, shown.reset_after_ms);
    let d = timed(&mut con, |con| check(con, TPM, 1000, 60, &[]));
    assert_eq!(d.reply.counts(), (false, 0, 1000));
    // retry_after is the window's end, from the call's own "now".
    assert!(
        (end - d.after..=end - d.before).contains(&d.reply.retry_after_ms),
        "{d:?}, end {end}"
    );
    assert_eq!(count(&mut con, TPM), 1700, "a denial charges nothing");
    // A new RESERVE is denied too, whatever its estimate.
    let r = timed(&mut con, |con| {
        reserve(
            con,
            HOLDS,
            "next",
            30_000,
            &[limit(TPM, 1000, 60, &["HOLD", "0"])],
        )
    });
    assert!(!r.reply.multi.allowed);
    assert_eq!(r.reply.multi.binding.counts(), (false, 0, 1000));
    assert!(
        (end - r.after..=end - r.before).contains(&r.reply.multi.binding.retry_after_ms),
        "{r:?}, end {end}"
    );
}

#[test]
fn holds_a_refund_does_not_reach_the_next_fixed_window() {
    let server = Server::start();
    let mut con = server.connect();
    for (id, estimate) in [("old", "40"), ("older", "30")] {
        reserve(
            &mut con,
            HOLDS,
            id,
            30_000,
            &[limit(TPM, 100, 1, &["HOLD", estimate])],
        );
    }
    assert_eq!(count(&mut con, TPM), 70);
    let end = pexpiretime(&mut con, TPM);
    wait_until_past(&mut con, end);
    check(&mut con, TPM, 100, 1, &["COST", "7"]);
    assert_eq!(count(&mut con, TPM), 7);
    let s = settle(
        &mut con,
        HOLDS,
        "old",
        &[limit(TPM, 100, 1, &["ACTUAL", "0"])],
    );
    assert_eq!(s.status, 1);
    assert_eq!(s.each[0].counts(), (true, 93, 100));
    assert_eq!(
        count(&mut con, TPM),
        7,
        "the new window paid for the old one"
    );
    // What goes past the estimate is charged to the window in force.
    let s = settle(
        &mut con,
        HOLDS,
        "older",
        &[limit(TPM, 100, 1, &["ACTUAL", "50"])],
    );
    assert_eq!(s.status, 1);
    assert_eq!(count(&mut con, TPM), 7 + 20);
}

#[test]
fn holds_a_sliding_refund_reaches_the_previous_window() {
    let server = Server::start();
    let mut con = server.connect();
    let sliding = |options: &[&str]| limit(TPM, 100, 1, &with_algorithm("SLIDING", options));
    reserve(&mut con, HOLDS, "s", 30_000, &[sliding(&["HOLD", "40"])]);
    let (_, charged_at) = record_times(&mut con, HOLDS, "s");
    let next_window = (charged_at / 1000 + 1) * 1000;
    wait_until_past(&mut con, next_window - 1);
    check(
        &mut con,
        TPM,
        100,
        1,
        &["ALGORITHM", "SLIDING", "COST", "5"],
    );
    assert_eq!(get_str(&mut con, TPM).unwrap(), "S40:5");
    let s = settle(&mut con, HOLDS, "s", &[sliding(&["ACTUAL", "15"])]);
    assert_eq!(s.status, 1);
    assert_eq!(get_str(&mut con, TPM).unwrap(), "S15:5");
}

#[test]
fn holds_a_token_refund_stops_at_a_full_bucket() {
    let server = Server::start();
    let mut con = server.connect();
    let bucket = |options: &[&str]| limit(TPM, 100, 60, &with_algorithm("TOKEN", options));
    reserve(&mut con, HOLDS, "t", 30_000, &[bucket(&["HOLD", "40"])]);
    assert_eq!(
        peek(&mut con, TPM, 100, 60, &["ALGORITHM", "TOKEN"]).remaining,
        60
    );
    let s = settle(&mut con, HOLDS, "t", &[bucket(&["ACTUAL", "0"])]);
    assert_eq!(s.each[0].counts(), (true, 100, 100));
    assert!(!exists(&mut con, TPM), "a full bucket is no key");

    // A bucket that refilled while the hold lived: the refund finds it full
    // and gives back nothing past that.
    let fast = "{u}:fast";
    let quick = |options: &[&str]| limit(fast, 100, 1, &with_algorithm("TOKEN", options));
    reserve(&mut con, HOLDS, "u", 30_000, &[quick(&["HOLD", "40"])]);
    let (_, charged_at) = record_times(&mut con, HOLDS, "u");
    // 40 tokens at 100 a second: full again 400 ms later.
    wait_until_past(&mut con, charged_at + 400);
    assert_eq!(
        peek(&mut con, fast, 100, 1, &["ALGORITHM", "TOKEN"]).remaining,
        100
    );
    let s = settle(&mut con, HOLDS, "u", &[quick(&["ACTUAL", "0"])]);
    assert_eq!((s.status, s.each[0].counts()), (1, (true, 100, 100)));
    assert!(!exists(&mut con, fast), "a full bucket is no key");
    // Exactly full: a hundred tokens at one instant, not one more.
    let take = |cost: &str| {
        common::command(&[
            "RATELIMIT.CHECK",
            fast,
            "100",
            "1",
            "ALGORITHM",
            "TOKEN",
            "COST",
            cost,
        ])
    };
    let replies = at_one_instant(&mut con, &[fast], &[take("100"), take("1")]);
    let decided: Vec<bool> = replies
        .into_iter()
        .map(|v| redis::from_redis_value::<Decision>(v).unwrap().allowed)
        .collect();
    assert_eq!(decided, [true, false]);
}

#[test]
fn holds_a_token_bucket_settled_past_empty_is_empty_not_in_debt() {
    // A bucket keeps no debt: CHECK reads a refill longer than the bucket's
    // as a bucket emptied under other parameters. So an actual past what
    // the bucket holds empties it, and the next token comes back as it
    // would for any empty bucket.
    let server = Server::start();
    let mut con = server.connect();
    let bucket = |options: &[&str]| limit(TPM, 100, 60, &with_algorithm("TOKEN", options));
    reserve(&mut con, HOLDS, "t", 30_000, &[bucket(&["HOLD", "10"])]);
    let s = timed(&mut con, |con| {
        settle(con, HOLDS, "t", &[bucket(&["ACTUAL", "500"])])
    });
    assert_eq!(s.reply.status, 1);
    let shown = s.reply.each[0];
    assert_eq!(shown.counts(), (false, 0, 100));
    // 100 tokens a minute: one every 600 ms, not 400 tokens' worth later.
    assert!((1..=600).contains(&shown.retry_after_ms), "{shown:?}");
    // Full again one whole refill after the settle, no later.
    let full_at = pexpiretime(&mut con, TPM);
    assert!(
        (s.before + 60_000..=s.after + 60_000).contains(&full_at),
        "full at {full_at}, settled between {} and {}",
        s.before,
        s.after
    );
}

#[test]
fn holds_replays_answer_the_first_reply_and_charge_nothing() {
    let server = Server::start();
    let mut con = server.connect();
    let limits = [
        limit(RPM, 60, 60, &[]),
        limit(TPM, 10_000, DAY, &["ALGORITHM", "SLIDING", "HOLD", "800"]),
        limit("{u}:bucket", 50, 60, &["ALGORITHM", "TOKEN", "HOLD", "5"]),
    ];
    let first = reserve(&mut con, HOLDS, "r", 30_000, &limits);
    assert!(first.multi.allowed);
    assert_eq!((first.held, first.hold_ttl_ms), (5, 30_000));
    let (deadline, _) = record_times(&mut con, HOLDS, "r");
    // Other callers move the limits on; the replay still answers the first
    // reply, holds what the first held, and charges and records nothing.
    check(
        &mut con,
        TPM,
        10_000,
        DAY,
        &["ALGORITHM", "SLIDING", "COST", "100"],
    );
    let before = snapshot(&mut con);
    let again = timed(&mut con, |con| reserve(con, HOLDS, "r", 30_000, &limits));
    assert_eq!(again.reply.multi, first.multi);
    assert_eq!(again.reply.held, 5);
    assert!(
        (deadline - again.after..=deadline - again.before).contains(&again.reply.hold_ttl_ms),
        "{again:?}, deadline {deadline}"
    );
    assert_eq!(snapshot(&mut con), before, "a replay changed something");
    // Whatever it asks now.
    let other = reserve(
        &mut con,
        HOLDS,
        "r",
        5_000,
        &[limit(RPM, 1, 60, &["COST", "100"])],
    );
    assert_eq!(other.multi, first.multi);
    assert_eq!(snapshot(&mut con), before, "a replay changed something");

    let s = settle(
        &mut con,
        HOLDS,
        "r",
        &[limit(
            TPM,
            10_000,
            DAY,
            &["ALGORITHM", "SLIDING", "ACTUAL", "500"],
        )],
    );
    assert_eq!(s.status, 1);
    assert_eq!(sliding_counts(&mut con, TPM).1, 600);
    // Settled: the first reply still, nothing held, nothing charged.
    let before = snapshot(&mut con);
    let settled = reserve(&mut con, HOLDS, "r", 30_000, &limits);
    assert_eq!(settled.multi, first.multi);
    assert_eq!((settled.held, settled.hold_ttl_ms), (0, -1));
    assert_eq!(snapshot(&mut con), before, "a replay changed something");
    assert_eq!(counters(&mut con)["reserve_replayed"], 3);
}

#[test]
fn holds_unknown_and_expired_ids_charge_the_actual_once() {
    let server = Server::start();
    let mut con = server.connect();
    let s = settle(
        &mut con,
        HOLDS,
        "never",
        &[limit(TPM, 1000, 60, &["ACTUAL", "70"])],
    );
    assert_eq!(s.status, 0);
    assert_eq!(s.each[0].counts(), (true, 930, 1000));
    assert_eq!(count(&mut con, TPM), 70);
    assert!(!exists(&mut con, HOLDS), "an unknown id records nothing");

    // Expired, then settled: the SETTLE refunds the estimate (of every key
    // the hold had, named or not), finds no hold and charges the actual.
    let spaced = "{u}:t p m";
    reserve(
        &mut con,
        HOLDS,
        "gone",
        20,
        &[
            limit(TPM, 1000, 60, &["HOLD", "300"]),
            limit(spaced, 1000, 60, &["HOLD", "50"]),
        ],
    );
    assert_eq!((count(&mut con, TPM), count(&mut con, spaced)), (370, 50));
    let (deadline, _) = record_times(&mut con, HOLDS, "gone");
    wait_until_past(&mut con, deadline);
    // Still charged until a command touches the holds key…
    assert_eq!(count(&mut con, TPM), 370);
    let s = settle(
        &mut con,
        HOLDS,
        "gone",
        &[limit(TPM, 1000, 60, &["ACTUAL", "120"])],
    );
    assert_eq!(s.status, 0);
    // …which refunds it once and forgets it.
    assert_eq!((count(&mut con, TPM), count(&mut con, spaced)), (190, 0));
    assert!(!exists(&mut con, HOLDS));
    assert_eq!(extend(&mut con, HOLDS, "gone", 1000), 0);
    let s = settle(
        &mut con,
        HOLDS,
        "gone",
        &[limit(TPM, 1000, 60, &["ACTUAL", "0"])],
    );
    assert_eq!(s.status, 0);
    assert_eq!((count(&mut con, TPM), count(&mut con, spaced)), (190, 0));

    // Expired and swept by an EXTEND of the same id first: refunded once.
    reserve(
        &mut con,
        HOLDS,
        "late",
        30,
        &[limit(TPM, 1000, 60, &["HOLD", "200"])],
    );
    assert_eq!(count(&mut con, TPM), 390);
    let (deadline, _) = record_times(&mut con, HOLDS, "late");
    wait_until_past(&mut con, deadline);
    assert_eq!(extend(&mut con, HOLDS, "late", 1000), 0);
    assert_eq!(count(&mut con, TPM), 190);
    let s = settle(
        &mut con,
        HOLDS,
        "late",
        &[limit(TPM, 1000, 60, &["ACTUAL", "10"])],
    );
    assert_eq!(s.status, 0);
    assert_eq!(count(&mut con, TPM), 200);
    let c = counters(&mut con);
    assert_eq!((c["settle_unknown"], c["holds_expired"]), (4, 2));
}

#[test]
fn holds_extend_moves_a_live_deadline_within_the_cap() {
    let server = Server::builder()
        .module_arg("hold-max-ttl-ms", "5000")
        .start();
    let mut con = server.connect();
    let r = reserve(
        &mut con,
        HOLDS,
        "e",
        60_000,
        &[limit(TPM, 1000, 60, &["HOLD", "10"])],
    );
    assert_eq!(r.hold_ttl_ms, 5_000, "capped by hold-max-ttl-ms");
    let (first, charged_at) = record_times(&mut con, HOLDS, "e");
    assert_eq!(first - charged_at, 5_000);
    let t = timed(&mut con, |con| extend(con, HOLDS, "e", 4_000));
    assert_eq!(t.reply, 4_000);
    let (moved, _) = record_times(&mut con, HOLDS, "e");
    assert!(
        (t.before + 4_000..=t.after + 4_000).contains(&moved),
        "{moved}, {t:?}"
    );
    // The sweep time follows a deadline moved earlier.
    assert_eq!(holds_of(&mut con, HOLDS)[""], moved.to_string());
    assert_eq!(extend(&mut con, HOLDS, "e", 90_000), 5_000);
    let (moved, _) = record_times(&mut con, HOLDS, "e");
    assert!(moved >= first, "{moved} < {first}");
    // The charge time stays: a refund goes to the window charged.
    assert_eq!(record_times(&mut con, HOLDS, "e").1, charged_at);
    settle(
        &mut con,
        HOLDS,
        "e",
        &[limit(TPM, 1000, 60, &["ACTUAL", "10"])],
    );
    assert_eq!(extend(&mut con, HOLDS, "e", 1_000), 0, "a settled hold");
    assert_eq!(extend(&mut con, HOLDS, "nope", 1_000), 0);
    assert_eq!(count(&mut con, TPM), 10);
    assert_eq!(counters(&mut con)["extend_extended"], 2);
}

#[test]
fn holds_estimates_are_capped_by_hold_max_percent() {
    let server = Server::start();
    let mut con = server.connect();
    // 90 on a limit of 100 holds 50 by default; the rest is charged at
    // SETTLE.
    let r = reserve(
        &mut con,
        HOLDS,
        "a",
        30_000,
        &[limit("{u}:a", 100, 60, &["HOLD", "90"])],
    );
    assert_eq!((r.held, count(&mut con, "{u}:a")), (50, 50));
    let s = settle(
        &mut con,
        HOLDS,
        "a",
        &[limit("{u}:a", 100, 60, &["ACTUAL", "90"])],
    );
    assert_eq!(s.status, 1);
    assert_eq!(count(&mut con, "{u}:a"), 90);
    // Rounded down, but at least one unit; an estimate of 0 holds nothing.
    for (key, limit_units, estimate, held) in [
        ("{u}:r1", 101, 90, 50),
        ("{u}:r2", 3, 3, 1),
        ("{u}:r3", 1, 5, 1),
        ("{u}:r4", 100, 0, 0),
    ] {
        let estimate_text = estimate.to_string();
        let r = reserve(
            &mut con,
            HOLDS,
            key,
            30_000,
            &[limit(key, limit_units, 60, &["HOLD", &estimate_text])],
        );
        assert!(r.multi.allowed, "{key}");
        assert_eq!((r.held, count(&mut con, key)), (held, held), "{key}");
    }

    // Where module configs exist, both options change at once.
    if Abilities::of(&mut con).command_info() {
        let _: () = run(
            &mut con,
            &["CONFIG", "SET", "ratelimit.hold-max-percent", "80"],
        );
        let _: () = run(
            &mut con,
            &["CONFIG", "SET", "ratelimit.hold-max-ttl-ms", "2000"],
        );
        let r = reserve(
            &mut con,
            HOLDS,
            "b",
            30_000,
            &[limit("{u}:b", 100, 60, &["HOLD", "90"])],
        );
        assert_eq!((r.held, r.hold_ttl_ms), (80, 2_000));
        assert_eq!(extend(&mut con, HOLDS, "b", 60_000), 2_000);
    } else {
        eprintln!("not run (CONFIG SET ratelimit.hold-max-*): no module configs before Redis 7.0");
    }

    // Load-time arguments: a share of a bucket's burst, a shorter ttl.
    let server = Server::builder()
        .module_arg("hold-max-percent", "10")
        .module_arg("hold-max-ttl-ms", "1500")
        .start();
    let mut con = server.connect();
    let bucket = limit(
        "{u}:t",
        1000,
        60,
        &["HOLD", "900", "ALGORITHM", "TOKEN", "BURST", "200"],
    );
    let r = reserve(&mut con, HOLDS, "c", 30_000, &[bucket]);
    assert_eq!((r.held, r.hold_ttl_ms), (20, 1_500), "a share of the burst");
    let r = reserve(
        &mut con,
        HOLDS,
        "d",
        1_000,
        &[limit("{u}:f", 1000, 60, &["HOLD", "900"])],
    );
    assert_eq!((r.held, r.hold_ttl_ms), (100, 1_000));
}

// ---------------------------------------------------------------------------
// 2. Exact under concurrency
// ---------------------------------------------------------------------------

#[test]
fn holds_concurrent_reserves_and_checks_never_pass_a_limit() {
    /// Client threads, each on its own connection, released together.
    const THREADS: usize = 50;
    /// Calls per thread: each of the five kinds of call below twice, so
    /// four RESERVEs per thread.
    const CALLS: usize = 10;
    const KINDS: usize = 5;
    /// Requests a day, and tokens a day (each request takes `COST`). The
    /// plain CHECKs of either key alone ask for more than its limit
    /// (`THREADS * CALLS / KINDS` = 100 requests, and 100 × 40 tokens): both
    /// limits are reached whatever order the calls run in.
    const REQUESTS: i64 = 60;
    const TOKENS: i64 = 2000;
    const COST: i64 = 40;
    /// What one thread saw admitted: the remaining count each admission
    /// replied, per key, and the ids of the RESERVEs admitted.
    #[derive(Default)]
    struct Admitted {
        rpm: Vec<i64>,
        tpm: Vec<i64>,
        reserved: Vec<String>,
    }
    let server = Server::start();
    for algorithm in ALGORITHMS {
        let prefix = format!("{{c}}:{algorithm}");
        let (rpm, tpm, holds) = (
            format!("{prefix}:rpm"),
            format!("{prefix}:tpm"),
            format!("{prefix}:holds"),
        );
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (client, barrier) = (server.client(), Arc::clone(&barrier));
                let (rpm, tpm, holds) = (rpm.clone(), tpm.clone(), holds.clone());
                thread::spawn(move || {
                    let mut con = client.get_connection().unwrap();
                    let a = ["ALGORITHM", algorithm];
                    let costly = ["ALGORITHM", algorithm, "COST", "40"];
                    let requests = group(REQUESTS as u64, DAY, &a);
                    let tokens = group(TOKENS as u64, DAY, &a);
                    let mut admitted = Admitted::default();
                    let mut reserves_sent = 0;
                    barrier.wait();
                    // Each thread starts with another kind of call.
                    for i in 0..CALLS {
                        match (t + i) % KINDS {
                            0 => {
                                let d = check(&mut con, &rpm, REQUESTS as u64, DAY, &a);
                                if d.allowed {
                                    admitted.rpm.push(d.remaining);
                                }
                            }
                            1 => {
                                let d = check(&mut con, &tpm, TOKENS as u64, DAY, &costly);
                                if d.allowed {
                                    admitted.tpm.push(d.remaining);
                                }
                            }
                            2 => {
                                let m = mcheck(
                                    &mut con,
                                    &[&rpm, &tpm],
                                    &[requests.clone(), tokens.clone().cost(COST as u64)],
                                );
                                if m.allowed {
                                    admitted.rpm.push(m.each[0].remaining);
                                    admitted.tpm.push(m.each[1].remaining);
                                }
                            }
                            _ => {
                                let id = format!("{t}-{i}");
                                let r = common::reserve(
                                    &mut con,
                                    &holds,
                                    &id,
                                    60_000,
                                    &[&rpm, &tpm],
                                    &[requests.clone(), tokens.clone().hold(COST as u64)],
                                );
                                reserves_sent += 1;
                                if r.multi.allowed {
                                    assert_eq!(r.held, COST, "{algorithm} {id}");
                                    admitted.rpm.push(r.multi.each[0].remaining);
                                    admitted.tpm.push(r.multi.each[1].remaining);
                                    admitted.reserved.push(id);
                                } else {
                                    assert_eq!((r.held, r.hold_ttl_ms), (0, -1), "{algorithm}");
                                }
                            }
                        }
                    }
                    assert!(reserves_sent > 0, "thread {t} sent no RESERVE");
                    admitted
                })
            })
            .collect();
        let mut all = Admitted::default();
        for handle in handles {
            let admitted = handle.join().unwrap();
            all.rpm.extend(admitted.rpm);
            all.tpm.extend(admitted.tpm);
            all.reserved.extend(admitted.reserved);
        }
        // Every admission took the next unit (or the next 40 tokens) of its
        // limit: each remaining count from the limit down to 0 was replied
        // once, none twice, none below 0. So the limits were reached, and
        // never passed.
        all.rpm.sort_unstable();
        all.tpm.sort_unstable();
        assert_eq!(
            all.rpm,
            (0..REQUESTS).collect::<Vec<_>>(),
            "{algorithm}: the requests' remaining counts"
        );
        assert_eq!(
            all.tpm,
            (0..TOKENS / COST).map(|n| n * COST).collect::<Vec<_>>(),
            "{algorithm}: the tokens' remaining counts"
        );
        let mut con = server.connect();
        let a = ["ALGORITHM", algorithm];
        // The limiters hold exactly what was admitted.
        match algorithm {
            "FIXED" => assert_eq!(
                (count(&mut con, &rpm), count(&mut con, &tpm)),
                (REQUESTS, TOKENS)
            ),
            "SLIDING" => assert_eq!(
                (
                    sliding_counts(&mut con, &rpm),
                    sliding_counts(&mut con, &tpm)
                ),
                ((0, REQUESTS), (0, TOKENS))
            ),
            _ => {}
        }
        assert_eq!(
            peek(&mut con, &rpm, REQUESTS as u64, DAY, &a).counts(),
            (false, 0, REQUESTS),
            "{algorithm}"
        );
        assert_eq!(
            peek(&mut con, &tpm, TOKENS as u64, DAY, &a).counts(),
            (false, 0, TOKENS),
            "{algorithm}"
        );
        assert!(!check(&mut con, &rpm, REQUESTS as u64, DAY, &a).allowed);
        assert!(!check(&mut con, &tpm, TOKENS as u64, DAY, &a).allowed);
        // And one record per RESERVE admitted, besides the sweep time; none
        // for a RESERVE denied.
        let mut records: Vec<String> = holds_of(&mut con, &holds)
            .into_keys()
            .filter(|field| !field.is_empty())
            .collect();
        records.sort_unstable();
        all.reserved.sort_unstable();
        assert!(!all.reserved.is_empty(), "{algorithm}: no RESERVE admitted");
        assert_eq!(records, all.reserved, "{algorithm}");
    }
}

// ---------------------------------------------------------------------------
// 3. Replication, persistence, failover
// ---------------------------------------------------------------------------

#[test]
fn holds_expiry_refunds_reach_replicas_and_the_aof() {
    let data = DataDir::new();
    let master = replication_master(data.aof().debug_command());
    let replicas = attach_replicas(
        &master,
        vec![
            Server::builder().debug_command(),
            Server::builder().without_module().debug_command(),
        ],
    );
    let mut con = master.connect();
    for (i, ttl) in [30, 60_000, 40, 60_000].iter().enumerate() {
        reserve(
            &mut con,
            HOLDS,
            &format!("h{i}"),
            *ttl,
            &[
                limit(RPM, 100, 600, &[]),
                limit(TPM, 10_000, 600, &["HOLD", "700"]),
                limit(
                    "{u}:s",
                    10_000,
                    600,
                    &["HOLD", "300", "ALGORITHM", "SLIDING"],
                ),
                limit("{u}:b", 10_000, DAY, &["HOLD", "100", "ALGORITHM", "TOKEN"]),
            ],
        );
    }
    settle(
        &mut con,
        HOLDS,
        "h1",
        &[limit(TPM, 10_000, 600, &["ACTUAL", "100"])],
    );
    let (deadline, _) = record_times(&mut con, HOLDS, "h2");
    wait_until_past(&mut con, deadline);
    // The short holds expire: the next call on the holds key refunds them.
    assert_eq!(extend(&mut con, HOLDS, "h3", 60_000), 60_000);
    assert_eq!(count(&mut con, TPM), 700 + 100);
    assert_eq!(counters(&mut con)["holds_expired"], 2);
    // 4 estimates of 300, two refunded (in whichever window they went to).
    let (previous, current) = sliding_counts(&mut con, "{u}:s");
    assert_eq!(previous + current, 600);
    let bucket = peek(&mut con, "{u}:b", 10_000, DAY, &["ALGORITHM", "TOKEN"]);
    assert_eq!(bucket.remaining, 9_800);
    // Both replicas acknowledged everything the master propagated.
    wait_replicas(&mut con, 2);
    let expected = snapshot(&mut con);
    assert_eq!(expected.len(), 5, "{expected:?}");
    let expected_digest = digest(&mut con);
    for replica in &replicas {
        assert_replica_took_everything(replica);
        let mut on_replica = replica.connect();
        assert_eq!(
            snapshot(&mut on_replica),
            expected,
            "replica on port {}",
            replica.port()
        );
        assert_eq!(
            digest(&mut on_replica),
            expected_digest,
            "replica on port {}",
            replica.port()
        );
    }
    drop(con);
    master.kill();
    drop(replicas);
    // The files hold the effects, never the commands.
    let contents = data.aof_contents();
    assert!(!contents.contains("ratelimit."), "AOF:\n{contents}");
    assert!(contents.contains("$4\r\nhdel\r\n"), "AOF:\n{contents}");
    for builder in [data.aof(), data.aof().without_module()] {
        let server = builder.debug_command().start();
        let mut con = server.connect();
        assert_eq!(snapshot(&mut con), expected, "from the AOF");
        assert_eq!(digest(&mut con), expected_digest, "from the AOF");
    }
}

#[test]
fn holds_survive_a_failover_and_settle_on_the_new_master() {
    let master = replication_master(Server::builder());
    let replicas = attach_replicas(&master, vec![Server::builder()]);
    let mut con = master.connect();
    reserve(
        &mut con,
        HOLDS,
        "f",
        60_000,
        &[
            limit(RPM, 10, 60, &[]),
            limit(TPM, 1000, 60, &["HOLD", "400"]),
        ],
    );
    wait_replicas(&mut con, 1);
    let expected = snapshot(&mut con);
    drop(con);
    // The master is lost in the middle of the hold; its replica takes over.
    master.kill();
    let mut con = replicas[0].connect();
    assert_eq!(snapshot(&mut con), expected, "the replica before promotion");
    let _: () = run(&mut con, &["REPLICAOF", "NO", "ONE"]);
    let info: String = run(&mut con, &["INFO", "replication"]);
    assert!(info.contains("role:master"), "{info}");
    let s = settle(
        &mut con,
        HOLDS,
        "f",
        &[limit(TPM, 1000, 60, &["ACTUAL", "150"])],
    );
    assert_eq!(s.status, 1);
    assert_eq!(s.each[0].counts(), (true, 850, 1000));
    assert_eq!((count(&mut con, RPM), count(&mut con, TPM)), (1, 150));
    let again = settle(
        &mut con,
        HOLDS,
        "f",
        &[limit(TPM, 1000, 60, &["ACTUAL", "150"])],
    );
    assert_eq!(again.status, 2);
    assert_eq!(count(&mut con, TPM), 150);
}

// ---------------------------------------------------------------------------
// 4. Types, arguments, ACL, memory, cluster
// ---------------------------------------------------------------------------

#[test]
fn holds_refuse_what_they_cannot_read() {
    let server = Server::start();
    let mut con = server.connect();
    let _: () = run(&mut con, &["SET", "str", "x"]);
    let _: () = run(&mut con, &["RPUSH", "list", "x"]);
    let _: () = run(&mut con, &["HSET", "bad", "id", "not a record"]);
    let _: () = run(&mut con, &["HSET", "badsweep", "", "soon"]);
    check(&mut con, "{u}:sliding", 5, 60, &["ALGORITHM", "SLIDING"]);
    let before = snapshot(&mut con);
    let tpm = [limit(TPM, 10, 60, &["HOLD", "1"])];
    let settle_tpm = [limit(TPM, 10, 60, &["ACTUAL", "1"])];
    for holds in ["str", "list"] {
        for args in [
            reserve_args(holds, "a", 1000, &tpm),
            settle_args(holds, "a", &settle_tpm),
            ["RATELIMIT.EXTEND", holds, "a", "1000"]
                .map(String::from)
                .to_vec(),
        ] {
            assert_eq!(error(&mut con, &args), WRONGTYPE, "{args:?}");
        }
    }
    for holds in ["bad", "badsweep"] {
        for args in [
            reserve_args(holds, "id", 1000, &tpm),
            settle_args(holds, "id", &settle_tpm),
            ["RATELIMIT.EXTEND", holds, "id", "1000"]
                .map(String::from)
                .to_vec(),
        ] {
            assert_eq!(
                error(&mut con, &args),
                "WRONGTYPE the key holds a hash that is not a record of holds",
                "{args:?}"
            );
        }
    }
    // A limiter of another kind: CHECK's error.
    let wrong_kind = wrong_algorithm("SLIDING", "FIXED");
    let e = error(
        &mut con,
        &reserve_args(
            HOLDS,
            "a",
            1000,
            &[limit("{u}:sliding", 10, 60, &["HOLD", "1"])],
        ),
    );
    assert_eq!(e, wrong_kind);
    let e = error(
        &mut con,
        &settle_args(
            HOLDS,
            "a",
            &[limit("{u}:sliding", 10, 60, &["ACTUAL", "1"])],
        ),
    );
    assert_eq!(e, wrong_kind);
    assert_eq!(
        snapshot(&mut con),
        before,
        "a refused call changed something"
    );
    // RESET leaves a holds key alone.
    assert_eq!(error(&mut con, &["RATELIMIT.RESET", "bad"]), WRONGTYPE);

    // An expired hold whose key now holds something else: the sweep leaves
    // that key alone and forgets the hold, without an error.
    reserve(
        &mut con,
        HOLDS,
        "x",
        20,
        &[limit("{u}:other", 100, 60, &["HOLD", "10"])],
    );
    let _: () = run(&mut con, &["DEL", "{u}:other"]);
    let _: () = run(&mut con, &["RPUSH", "{u}:other", "kept"]);
    let (deadline, _) = record_times(&mut con, HOLDS, "x");
    wait_until_past(&mut con, deadline);
    assert_eq!(extend(&mut con, HOLDS, "x", 1000), 0);
    assert!(!exists(&mut con, HOLDS));
    let list: Vec<String> = run(&mut con, &["LRANGE", "{u}:other", "0", "-1"]);
    assert_eq!(list, ["kept"]);
}

#[test]
fn holds_refuse_malformed_calls_with_exact_errors() {
    const ARITY_RESERVE: &str = "ERR wrong number of arguments for 'ratelimit.reserve' command";
    const ARITY_SETTLE: &str = "ERR wrong number of arguments for 'ratelimit.settle' command";
    const ARITY_EXTEND: &str = "ERR wrong number of arguments for 'ratelimit.extend' command";
    const BAD_ID: &str = "ERR id must be 1 to 64 bytes and not NOW";
    const BAD_TTL: &str = "ERR ttl_ms must be an integer from 1 to 86400000";
    const BAD_NUMKEYS: &str = "ERR numkeys must be an integer from 1 to 16";
    const GROUP_PER_KEY: &str = "ERR expected one LIMIT group per key, in the order of the keys";
    const SHORT_GROUP: &str = "ERR syntax error: LIMIT needs a limit and a period";
    const BAD_LIMIT: &str = "ERR limit must be a positive integer (at most 1000000000000000)";
    const BAD_PERIOD: &str =
        "ERR period must be a positive integer number of seconds (at most 1000000000)";
    const BAD_COST: &str = "ERR cost must be a non-negative integer (at most 1000000000000000)";
    const BAD_ESTIMATE: &str =
        "ERR estimate must be a non-negative integer (at most 1000000000000000)";
    const BAD_ACTUAL: &str = "ERR actual must be a non-negative integer (at most 1000000000000000)";
    const COST_OR_HOLD: &str = "ERR syntax error: a LIMIT takes COST or HOLD, not both";
    const NEEDS_ACTUAL: &str = "ERR syntax error: each LIMIT of SETTLE needs ACTUAL";
    const DUPLICATE: &str = "ERR each key may appear only once";
    const HOLDS_AMONG: &str = "ERR the holds key cannot also be a limiter key";

    let server = Server::start();
    let mut con = server.connect();
    let long_id = "i".repeat(65);
    let id_64 = "i".repeat(64);
    let cases: Vec<(String, &str)> = vec![
        // RESERVE: arity, id, ttl_ms, numkeys, groups, keys.
        (
            "RATELIMIT.RESERVE h id 1000 1 k LIMIT 10".into(),
            ARITY_RESERVE,
        ),
        (
            "RATELIMIT.RESERVE h NOW 1000 1 k LIMIT 10 60".into(),
            BAD_ID,
        ),
        ("RATELIMIT.RESERVE h now 0 0 k LIMIT 10 60".into(), BAD_ID),
        (
            format!("RATELIMIT.RESERVE h {long_id} 1000 1 k LIMIT 10 60"),
            BAD_ID,
        ),
        ("RATELIMIT.RESERVE h id 0 1 k LIMIT 10 60".into(), BAD_TTL),
        (
            "RATELIMIT.RESERVE h id 86400001 1 k LIMIT 10 60".into(),
            BAD_TTL,
        ),
        ("RATELIMIT.RESERVE h id -5 0 k LIMIT 0 60".into(), BAD_TTL),
        (
            "RATELIMIT.RESERVE h id 1000 0 k LIMIT 10 60".into(),
            BAD_NUMKEYS,
        ),
        (
            "RATELIMIT.RESERVE h id 1000 17 k LIMIT 10 60".into(),
            BAD_NUMKEYS,
        ),
        (
            "RATELIMIT.RESERVE h id 1000 x k LIMIT 0 60".into(),
            BAD_NUMKEYS,
        ),
        (
            "RATELIMIT.RESERVE h id 1000 2 k LIMIT 10 60".into(),
            GROUP_PER_KEY,
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 k k LIMIT 10 60".into(),
            GROUP_PER_KEY,
        ),
        (
            "RATELIMIT.RESERVE h id 1000 2 k j LIMIT 10 60 LIMIT 10".into(),
            SHORT_GROUP,
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 k LIMIT 0 60".into(),
            BAD_LIMIT,
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 k LIMIT 10 0".into(),
            BAD_PERIOD,
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 k LIMIT 10 60 COST 1000000000000001".into(),
            BAD_COST,
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 k LIMIT 10 60 COST 1 HOLD 2".into(),
            COST_OR_HOLD,
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 k LIMIT 10 60 hold 1 cost x".into(),
            COST_OR_HOLD,
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 k LIMIT 10 60 HOLD 2 HOLD 2".into(),
            "ERR syntax error: HOLD given twice",
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 k LIMIT 10 60 COST 2 COST 2".into(),
            "ERR syntax error: COST given twice",
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 k LIMIT 10 60 HOLD".into(),
            "ERR syntax error: HOLD needs a value",
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 k LIMIT 10 60 HOLD -1".into(),
            BAD_ESTIMATE,
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 k LIMIT 10 60 HOLD 1000000000000001".into(),
            BAD_ESTIMATE,
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 k LIMIT 10 60 ACTUAL 1".into(),
            "ERR syntax error: unknown option 'ACTUAL'",
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 k LIMIT 10 60 BURST 5".into(),
            "ERR BURST is only valid with ALGORITHM TOKEN",
        ),
        (
            "RATELIMIT.RESERVE h id 1000 2 k k LIMIT 10 60 LIMIT 10 60".into(),
            DUPLICATE,
        ),
        (
            "RATELIMIT.RESERVE h id 1000 2 h h LIMIT 10 60 LIMIT 10 60".into(),
            DUPLICATE,
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 h LIMIT 10 60".into(),
            HOLDS_AMONG,
        ),
        (
            "RATELIMIT.RESERVE h id 1000 2 k h LIMIT 10 60 LIMIT 10 60 HOLD 1".into(),
            HOLDS_AMONG,
        ),
        // SETTLE: arity, id, numkeys, groups, duplicate keys, ACTUAL, the
        // holds key.
        (
            "RATELIMIT.SETTLE h id 1 k LIMIT 10 60 ACTUAL".into(),
            ARITY_SETTLE,
        ),
        (
            format!("RATELIMIT.SETTLE h {long_id} 1 k LIMIT 10 60 ACTUAL 1"),
            BAD_ID,
        ),
        (
            "RATELIMIT.SETTLE h NOW 0 k LIMIT 10 60 ACTUAL 1".into(),
            BAD_ID,
        ),
        (
            "RATELIMIT.SETTLE h id 0 k LIMIT 10 60 ACTUAL 1".into(),
            BAD_NUMKEYS,
        ),
        (
            "RATELIMIT.SETTLE h id 2 k LIMIT 10 60 ACTUAL 1".into(),
            GROUP_PER_KEY,
        ),
        (
            "RATELIMIT.SETTLE h id 1 k LIMIT 10 60 ACTUAL 1 LIMIT".into(),
            GROUP_PER_KEY,
        ),
        (
            "RATELIMIT.SETTLE h id 1 k LIMIT 0 60 ACTUAL 1".into(),
            BAD_LIMIT,
        ),
        (
            "RATELIMIT.SETTLE h id 1 k LIMIT 10 60 COST 1".into(),
            "ERR syntax error: unknown option 'COST'",
        ),
        (
            "RATELIMIT.SETTLE h id 1 k LIMIT 10 60 HOLD 1".into(),
            "ERR syntax error: unknown option 'HOLD'",
        ),
        (
            "RATELIMIT.SETTLE h id 1 k LIMIT 10 60 ACTUAL 1 ACTUAL 1".into(),
            "ERR syntax error: ACTUAL given twice",
        ),
        (
            "RATELIMIT.SETTLE h id 1 k LIMIT 10 60 ALGORITHM LEAKY".into(),
            "ERR ALGORITHM must be FIXED, SLIDING or TOKEN",
        ),
        (
            "RATELIMIT.SETTLE h id 1 k LIMIT 10 60 ALGORITHM FIXED".into(),
            NEEDS_ACTUAL,
        ),
        (
            "RATELIMIT.SETTLE h id 1 k LIMIT 10 60 ACTUAL x".into(),
            BAD_ACTUAL,
        ),
        (
            "RATELIMIT.SETTLE h id 1 k LIMIT 10 60 ACTUAL 1000000000000001".into(),
            BAD_ACTUAL,
        ),
        // A duplicate key before a group without ACTUAL, that before the
        // holds key among the keys.
        (
            "RATELIMIT.SETTLE h id 2 h h LIMIT 10 60 LIMIT 10 60".into(),
            DUPLICATE,
        ),
        (
            "RATELIMIT.SETTLE h id 2 h k LIMIT 10 60 ACTUAL 1 LIMIT 10 60".into(),
            NEEDS_ACTUAL,
        ),
        (
            "RATELIMIT.SETTLE h id 1 h LIMIT 10 60 ACTUAL 1".into(),
            HOLDS_AMONG,
        ),
        // EXTEND: arity, id, ttl_ms.
        ("RATELIMIT.EXTEND h id".into(), ARITY_EXTEND),
        ("RATELIMIT.EXTEND h id 1000 1000".into(), ARITY_EXTEND),
        (format!("RATELIMIT.EXTEND h {long_id} x"), BAD_ID),
        ("RATELIMIT.EXTEND h id x".into(), BAD_TTL),
        ("RATELIMIT.EXTEND h id 0".into(), BAD_TTL),
        ("RATELIMIT.EXTEND h id 86400001".into(), BAD_TTL),
    ];
    for (call, expected) in &cases {
        let args: Vec<&str> = call.split(' ').collect();
        assert_eq!(error(&mut con, &args), *expected, "{call}");
    }
    // An empty id: not one of 1 to 64 bytes.
    let e = error(&mut con, &["RATELIMIT.EXTEND", "h", "", "1000"]);
    assert_eq!(e, BAD_ID);
    let keys: Vec<String> = run(&mut con, &["KEYS", "*"]);
    assert!(keys.is_empty(), "{keys:?}");
    // The bounds themselves are accepted.
    let r = reserve(
        &mut con,
        "h",
        &id_64,
        86_400_000,
        &[limit("k", 10, 60, &["hold", "1000000000000000"])],
    );
    assert_eq!((r.held, r.hold_ttl_ms), (5, 60_000));
    assert_eq!(extend(&mut con, "h", &id_64, 1), 1);
}

#[test]
fn holds_need_the_holds_key_in_the_users_key_patterns() {
    let server = Server::start();
    let mut con = server.connect();
    let _: () = run(
        &mut con,
        &[
            "ACL", "SETUSER", "app", "on", ">pw", "+@all", "~{u}:rpm", "~{u}:tpm",
        ],
    );
    let mut app = server.connect();
    let _: () = run(&mut app, &["AUTH", "app", "pw"]);
    let limits = [limit(TPM, 10, 60, &["HOLD", "1"])];
    let settles = [limit(TPM, 10, 60, &["ACTUAL", "1"])];
    // Limiter keys allowed, the holds key not; then the holds key allowed
    // and a limiter key not.
    for args in [
        reserve_args(HOLDS, "a", 1000, &limits),
        settle_args(HOLDS, "a", &settles),
        ["RATELIMIT.EXTEND", HOLDS, "a", "1000"]
            .map(String::from)
            .to_vec(),
        reserve_args(RPM, "a", 1000, &[limit("{u}:other", 10, 60, &[])]),
        settle_args(RPM, "a", &[limit("{u}:other", 10, 60, &["ACTUAL", "1"])]),
    ] {
        let e = error(&mut app, &args);
        assert!(e.starts_with("NOPERM"), "{args:?}: {e}");
    }
    assert!(snapshot(&mut con).is_empty(), "a refused call wrote");
    let _: () = run(&mut con, &["ACL", "SETUSER", "app", "~{u}:holds"]);
    assert!(reserve(&mut app, HOLDS, "a", 1000, &limits).multi.allowed);
    assert_eq!(extend(&mut app, HOLDS, "a", 1000), 1000);
    assert_eq!(settle(&mut app, HOLDS, "a", &settles).status, 1);
}

#[test]
fn holds_settle_and_extend_work_at_maxmemory_where_reserve_is_refused() {
    let server = Server::start();
    let mut con = server.connect();
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
    );
    let hold = |estimate: &str| [limit(TPM, 1000, 60, &["HOLD", estimate])];
    let actual = |units: &str| [limit(TPM, 1000, 60, &["ACTUAL", units])];
    reserve(&mut con, HOLDS, "live", 60_000, &hold("100"));
    reserve(&mut con, HOLDS, "short", 30, &hold("200"));
    reserve(&mut con, HOLDS, "shorter", 20, &hold("300"));
    assert_eq!(count(&mut con, TPM), 600);
    let (deadline, _) = record_times(&mut con, HOLDS, "short");
    // Below what is in use: every write that may grow memory is refused.
    let info: String = run(&mut con, &["INFO", "memory"]);
    let used: i64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _: () = run(
        &mut con,
        &[
            "CONFIG",
            "SET",
            "maxmemory",
            &(used - 256 * 1024).to_string(),
        ],
    );
    let e = error_of(try_run(&mut con, &["SET", "plain", "x"]));
    assert!(e.starts_with("OOM"), "{e}");
    let before = snapshot(&mut con);
    for id in ["new", "live"] {
        let e = error_of(try_run(
            &mut con,
            &reserve_args(HOLDS, id, 1000, &hold("1")),
        ));
        assert!(e.starts_with("OOM"), "{id}: {e}");
    }
    assert_eq!(
        snapshot(&mut con),
        before,
        "a refused RESERVE changed something"
    );
    wait_until_past(&mut con, deadline);
    // SETTLE sweeps the expired holds (their estimates refunded) and
    // charges an expired id's actual in full.
    let s = settle(&mut con, HOLDS, "short", &actual("50"));
    assert_eq!(s.status, 0);
    assert_eq!(count(&mut con, TPM), 100 + 50);
    assert_eq!(counters(&mut con)["holds_expired"], 2);
    // EXTEND and SETTLE of the live hold.
    assert_eq!(extend(&mut con, HOLDS, "live", 60_000), 60_000);
    let s = settle(&mut con, HOLDS, "live", &actual("40"));
    assert_eq!(s.status, 1);
    assert_eq!(count(&mut con, TPM), 40 + 50);
    let _: () = run(&mut con, &["CONFIG", "SET", "maxmemory", "0"]);
    assert!(
        reserve(&mut con, HOLDS, "new", 1000, &hold("1"))
            .multi
            .allowed
    );
}

#[test]
fn holds_fire_their_keyspace_events() {
    assert_fires_exactly(true, "KEd", |con| {
        reserve(
            con,
            HOLDS,
            "a",
            60_000,
            &[limit(RPM, 1, 60, &[]), limit(TPM, 100, 60, &["HOLD", "10"])],
        );
        // Denied, replayed: nothing but the denial.
        reserve(con, HOLDS, "b", 60_000, &[limit(RPM, 1, 60, &[])]);
        reserve(con, HOLDS, "a", 60_000, &[limit(RPM, 1, 60, &[])]);
        extend(con, HOLDS, "a", 60_000);
        extend(con, HOLDS, "nobody", 60_000);
        settle(con, HOLDS, "a", &[limit(TPM, 100, 60, &["ACTUAL", "4"])]);
        settle(con, HOLDS, "a", &[limit(TPM, 100, 60, &["ACTUAL", "4"])]);
        // An unknown id: the actual charged, no record.
        settle(con, HOLDS, "z", &[limit(TPM, 100, 60, &["ACTUAL", "1"])]);
        reserve(con, HOLDS, "c", 20, &[limit(TPM, 100, 60, &["HOLD", "10"])]);
        let (deadline, _) = record_times(con, HOLDS, "c");
        wait_until_past(con, deadline);
        extend(con, HOLDS, "c", 20);
        vec![
            (RPM, "ratelimit.reserve"),
            (TPM, "ratelimit.reserve"),
            (HOLDS, "ratelimit.reserve"),
            (RPM, "ratelimit.denied"),
            (HOLDS, "ratelimit.extend"),
            (TPM, "ratelimit.settle"),
            (HOLDS, "ratelimit.settle"),
            (TPM, "ratelimit.settle"),
            (TPM, "ratelimit.reserve"),
            (HOLDS, "ratelimit.reserve"),
            (TPM, "ratelimit.refund"),
            (HOLDS, "ratelimit.refund"),
        ]
    });
}

#[test]
fn holds_count_calls_errors_and_outcomes_exactly() {
    let server = Server::start();
    let mut con = server.connect();
    let before = counters(&mut con);
    let hold = [limit(RPM, 2, 60, &[]), limit(TPM, 100, 60, &["HOLD", "10"])];
    let actual = [limit(TPM, 100, 60, &["ACTUAL", "3"])];
    assert!(reserve(&mut con, HOLDS, "a", 60_000, &hold).multi.allowed);
    assert!(reserve(&mut con, HOLDS, "a", 60_000, &hold).multi.allowed);
    assert!(reserve(&mut con, HOLDS, "b", 20, &hold).multi.allowed);
    assert!(!reserve(&mut con, HOLDS, "c", 60_000, &hold).multi.allowed);
    assert_eq!(extend(&mut con, HOLDS, "a", 60_000), 60_000);
    assert_eq!(extend(&mut con, HOLDS, "x", 60_000), 0);
    assert_eq!(settle(&mut con, HOLDS, "a", &actual).status, 1);
    assert_eq!(settle(&mut con, HOLDS, "a", &actual).status, 2);
    let (deadline, _) = record_times(&mut con, HOLDS, "b");
    wait_until_past(&mut con, deadline);
    // The expired hold refunded by this SETTLE, which finds no hold.
    assert_eq!(settle(&mut con, HOLDS, "b", &actual).status, 0);
    assert_eq!(settle(&mut con, HOLDS, "y", &actual).status, 0);
    // Errors: arguments, and keys of the wrong type.
    let _: () = run(&mut con, &["SET", "str", "x"]);
    for args in [
        reserve_args(HOLDS, "NOW", 1000, &hold),
        reserve_args("str", "d", 1000, &hold),
        settle_args(HOLDS, "a", &[limit(TPM, 100, 60, &["ALGORITHM", "FIXED"])]),
        ["RATELIMIT.EXTEND", HOLDS, "a", "0"]
            .map(String::from)
            .to_vec(),
        ["RATELIMIT.EXTEND", "str", "a", "10"]
            .map(String::from)
            .to_vec(),
    ] {
        let e = error(&mut con, &args);
        assert!(
            e.starts_with("ERR ") || e.starts_with("WRONGTYPE "),
            "{args:?}: {e}"
        );
    }
    let after = counters(&mut con);
    let delta: BTreeMap<&str, u64> = FIELDS
        .iter()
        .map(|f| (*f, after[*f] - before[*f]))
        .collect();
    let mut expected: BTreeMap<&str, u64> = FIELDS.iter().map(|f| (*f, 0)).collect();
    expected.extend([
        ("reserve_calls", 4 + 2),
        ("reserve_errors", 2),
        ("reserve_allowed", 2),
        ("reserve_denied", 1),
        ("reserve_replayed", 1),
        ("settle_calls", 4 + 1),
        ("settle_errors", 1),
        ("settle_settled", 1),
        ("settle_unknown", 2),
        ("settle_repeated", 1),
        ("extend_calls", 2 + 2),
        ("extend_errors", 2),
        ("extend_extended", 1),
        ("holds_expired", 1),
        // A RESERVE decided is a request decided.
        ("allowed", 2),
        ("denied", 1),
    ]);
    assert_eq!(delta, expected);
}

#[test]
fn holds_need_one_slot_in_a_cluster() {
    let cluster = Cluster::start(3, 0);
    let owner = cluster.master_for_key(HOLDS);
    let mut con = cluster.connect(owner);
    let limits = [
        limit(RPM, 10, 60, &[]),
        limit(TPM, 1000, 60, &["HOLD", "100"]),
    ];
    assert!(reserve(&mut con, HOLDS, "a", 60_000, &limits).multi.allowed);
    // Another slot of the same master: the node itself refuses the call.
    let other = (0..)
        .map(|i| format!("{{o:{i}}}:x"))
        .find(|k| {
            cluster.keyslot(k) != cluster.keyslot(HOLDS) && cluster.master_for_key(k) == owner
        })
        .unwrap();
    let before = snapshot(&mut con);
    for args in [
        reserve_args(&other, "b", 60_000, &limits),
        reserve_args(HOLDS, "b", 60_000, &[limit(&other, 10, 60, &[])]),
        reserve_args(
            HOLDS,
            "b",
            60_000,
            &[limit(RPM, 10, 60, &[]), limit(&other, 10, 60, &[])],
        ),
        settle_args(&other, "a", &[limit(TPM, 1000, 60, &["ACTUAL", "1"])]),
        settle_args(HOLDS, "a", &[limit(&other, 1000, 60, &["ACTUAL", "1"])]),
    ] {
        let e = error(&mut con, &args);
        assert!(e.starts_with("CROSSSLOT"), "{args:?}: {e}");
    }
    assert_eq!(
        snapshot(&mut con),
        before,
        "a refused call changed something"
    );
    // Through a cluster client, which routes by the holds key: the hash
    // tag keeps every key in its slot.
    let mut client = cluster.connection();
    let s = settle(
        &mut client,
        HOLDS,
        "a",
        &[limit(TPM, 1000, 60, &["ACTUAL", "30"])],
    );
    assert_eq!(s.status, 1);
    assert_eq!(count(&mut con, TPM), 30);
    assert_eq!(extend(&mut client, HOLDS, "a", 1000), 0);
}
