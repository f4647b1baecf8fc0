//! Holds: RATELIMIT.RESERVE, SETTLE and EXTEND against real servers.
//!
//! A hold's times come from the command's own clock: its record in the
//! holds hash shows its deadline and charge time, so a test reads them
//! exactly. A test that needs a deadline or a window to pass polls the
//! server's clock until it has; none sleeps in the hope that enough time
//! went by.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::thread;

use common::cluster::Cluster;
use common::{
    assert_fires_exactly, assert_replica_took_everything, attach_replicas, check, counters, error,
    error_of, exists, get_str, peek, pexpiretime, replication_master, run, server_ms, try_run,
    wait_replicas, wait_until_past, Abilities, DataDir, Decision, Multi, Server,
};
use redis::{Connection, ConnectionLike, FromRedisValue, ParsingError, Value};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// RESERVE's reply: MCHECK's, then what is held and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reserved {
    multi: Multi,
    held: i64,
    hold_ttl_ms: i64,
}

impl FromRedisValue for Reserved {
    fn from_redis_value(value: Value) -> Result<Reserved, ParsingError> {
        let Value::Array(mut items) = value else {
            return Err(ParsingError::from(format!(
                "expected an array, got {value:?}"
            )));
        };
        if items.len() != 9 {
            return Err(ParsingError::from(format!(
                "expected 9 elements, got {items:?}"
            )));
        }
        let hold_ttl_ms: i64 = redis::from_redis_value(items.pop().unwrap())?;
        let held: i64 = redis::from_redis_value(items.pop().unwrap())?;
        let multi = Multi::from_redis_value(Value::Array(items))?;
        Ok(Reserved {
            multi,
            held,
            hold_ttl_ms,
        })
    }
}

/// SETTLE's reply: its status and each limit as PEEK of one unit shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settled {
    status: i64,
    each: Vec<Decision>,
}

impl FromRedisValue for Settled {
    fn from_redis_value(value: Value) -> Result<Settled, ParsingError> {
        let (status, each): (i64, Vec<Decision>) = redis::from_redis_value(value)?;
        Ok(Settled { status, each })
    }
}

/// A limit of a call: key, `LIMIT …` words (the units option included).
type Limit<'a> = (&'a str, Vec<String>);

fn limit<'a>(key: &'a str, limit: u64, period_s: u64, options: &[&str]) -> Limit<'a> {
    let mut words = vec!["LIMIT".to_string(), limit.to_string(), period_s.to_string()];
    words.extend(options.iter().map(|o| o.to_string()));
    (key, words)
}

fn reserve_args(holds: &str, id: &str, ttl_ms: u64, limits: &[Limit]) -> Vec<String> {
    let mut args = vec![
        "RATELIMIT.RESERVE".to_string(),
        holds.to_string(),
        id.to_string(),
        ttl_ms.to_string(),
        limits.len().to_string(),
    ];
    args.extend(limits.iter().map(|(k, _)| k.to_string()));
    for (_, words) in limits {
        args.extend(words.iter().cloned());
    }
    args
}

fn settle_args(holds: &str, id: &str, limits: &[Limit]) -> Vec<String> {
    let mut args = vec![
        "RATELIMIT.SETTLE".to_string(),
        holds.to_string(),
        id.to_string(),
        limits.len().to_string(),
    ];
    args.extend(limits.iter().map(|(k, _)| k.to_string()));
    for (_, words) in limits {
        args.extend(words.iter().cloned());
    }
    args
}

fn reserve(
    con: &mut dyn ConnectionLike,
    holds: &str,
    id: &str,
    ttl_ms: u64,
    limits: &[Limit],
) -> Reserved {
    run(con, &reserve_args(holds, id, ttl_ms, limits))
}

fn settle(con: &mut dyn ConnectionLike, holds: &str, id: &str, limits: &[Limit]) -> Settled {
    run(con, &settle_args(holds, id, limits))
}

fn extend(con: &mut dyn ConnectionLike, holds: &str, id: &str, ttl_ms: u64) -> i64 {
    run(con, &["RATELIMIT.EXTEND", holds, id, &ttl_ms.to_string()])
}

/// The fixed-window count at `key` (0 for none).
fn count(con: &mut dyn ConnectionLike, key: &str) -> i64 {
    get_str(con, key).map_or(0, |v| v.parse().unwrap())
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

/// Every key's type, value (or hash) and expiry: what a call may change.
fn snapshot(con: &mut Connection) -> BTreeMap<String, (String, String, i64)> {
    let keys: Vec<String> = run(con, &["KEYS", "*"]);
    keys.into_iter()
        .map(|key| {
            let kind: String = run(con, &["TYPE", &key]);
            let value = match kind.as_str() {
                "string" => get_str(con, &key).unwrap(),
                "hash" => format!("{:?}", holds_of(con, &key)),
                other => other.to_string(),
            };
            let at = pexpiretime(con, key.as_str());
            (key, (kind, value, at))
        })
        .collect()
}

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
    let (deadline, charged_at) = record_times(&mut con, HOLDS, "req-1");
    assert_eq!(deadline - charged_at, 30_000);
    // The sweep time is the earliest deadline; the key outlives the hold by
    // two periods at least.
    assert_eq!(holds_of(&mut con, HOLDS)[""], deadline.to_string());
    assert!(pexpiretime(&mut con, HOLDS) >= deadline + 120_000);
}

#[test]
fn holds_a_denied_reserve_changes_nothing() {
    let server = Server::start();
    let mut con = server.connect();
    reserve(
        &mut con,
        HOLDS,
        "a",
        30_000,
        &[limit(TPM, 100, 60, &["HOLD", "50"])],
    );
    check(&mut con, RPM, 1, 60, &[]);
    let before = snapshot(&mut con);
    for (id, limits) in [
        (
            "b",
            vec![limit(RPM, 1, 60, &[]), limit(TPM, 100, 60, &["HOLD", "10"])],
        ),
        (
            "c",
            vec![
                limit(TPM, 100, 60, &["HOLD", "40"]),
                limit(RPM, 1, 60, &["COST", "2"]),
            ],
        ),
        ("d", vec![limit(TPM, 100, 60, &["COST", "51"])]),
    ] {
        let r = reserve(&mut con, HOLDS, id, 30_000, &limits);
        assert!(!r.multi.allowed, "{id}: {r:?}");
        assert_eq!((r.held, r.hold_ttl_ms), (0, -1), "{id}");
        assert_eq!(snapshot(&mut con), before, "{id} changed something");
    }
    assert_eq!(counters(&mut con)["reserve_denied"], 3);
}

#[test]
fn holds_settle_refunds_charges_or_leaves_the_estimate() {
    let server = Server::start();
    let mut con = server.connect();
    // actual below, equal to and above the estimate, and 0
    for (id, actual, after) in [
        ("below", 30, 30),
        ("equal", 100, 100),
        ("above", 250, 250),
        ("zero", 0, 0),
    ] {
        let key = format!("{{u}}:tpm:{id}");
        let r = reserve(
            &mut con,
            HOLDS,
            id,
            30_000,
            &[limit(&key, 1000, 60, &["HOLD", "100"])],
        );
        assert_eq!(r.held, 100);
        assert_eq!(count(&mut con, &key), 100);
        let s = settle(
            &mut con,
            HOLDS,
            id,
            &[limit(&key, 1000, 60, &["ACTUAL", &actual.to_string()])],
        );
        assert_eq!(s.status, 1, "{id}");
        assert_eq!(count(&mut con, &key), after, "{id}");
        assert_eq!(s.each[0].counts(), (true, 1000 - after, 1000), "{id}");
        // Settled: a retry charges nothing and says so.
        let again = settle(
            &mut con,
            HOLDS,
            id,
            &[limit(&key, 1000, 60, &["ACTUAL", "999"])],
        );
        assert_eq!(again.status, 2, "{id}");
        assert_eq!(count(&mut con, &key), after, "{id}");
    }
    let c = counters(&mut con);
    assert_eq!((c["settle_settled"], c["settle_repeated"]), (4, 4));
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
    let before = server_ms(&mut con);
    let d = check(&mut con, TPM, 1000, 60, &[]);
    let after = server_ms(&mut con);
    assert_eq!(d.counts(), (false, 0, 1000));
    assert!(
        (end - after..=end - before).contains(&d.retry_after_ms),
        "{d:?}, end {end}"
    );
    // A new RESERVE is denied too, whatever its estimate.
    let r = reserve(
        &mut con,
        HOLDS,
        "next",
        30_000,
        &[limit(TPM, 1000, 60, &["HOLD", "0"])],
    );
    assert!(!r.multi.allowed);
}

#[test]
fn holds_a_refund_does_not_reach_the_next_fixed_window() {
    let server = Server::start();
    let mut con = server.connect();
    reserve(
        &mut con,
        HOLDS,
        "old",
        30_000,
        &[limit(TPM, 100, 1, &["HOLD", "40"])],
    );
    let end = pexpiretime(&mut con, TPM);
    wait_until_past(&mut con, end);
    check(&mut con, TPM, 100, 1, &["COST", "7"]);
    let s = settle(
        &mut con,
        HOLDS,
        "old",
        &[limit(TPM, 100, 1, &["ACTUAL", "0"])],
    );
    assert_eq!(s.status, 1);
    assert_eq!(
        count(&mut con, TPM),
        7,
        "the new window paid for the old one"
    );
}

#[test]
fn holds_a_sliding_refund_reaches_the_previous_window() {
    let server = Server::start();
    let mut con = server.connect();
    let sliding = |options: &[&str]| {
        let mut o = vec!["ALGORITHM", "SLIDING"];
        o.extend_from_slice(options);
        limit(TPM, 100, 1, &o)
    };
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
    settle(&mut con, HOLDS, "s", &[sliding(&["ACTUAL", "15"])]);
    assert_eq!(get_str(&mut con, TPM).unwrap(), "S15:5");
}

#[test]
fn holds_a_token_refund_stops_at_a_full_bucket() {
    let server = Server::start();
    let mut con = server.connect();
    let bucket = |options: &[&str]| {
        let mut o = vec!["ALGORITHM", "TOKEN"];
        o.extend_from_slice(options);
        limit(TPM, 100, 60, &o)
    };
    reserve(&mut con, HOLDS, "t", 30_000, &[bucket(&["HOLD", "40"])]);
    assert_eq!(
        peek(&mut con, TPM, 100, 60, &["ALGORITHM", "TOKEN"]).remaining,
        60
    );
    let s = settle(&mut con, HOLDS, "t", &[bucket(&["ACTUAL", "0"])]);
    assert_eq!(s.each[0].counts(), (true, 100, 100));
    assert!(!exists(&mut con, TPM), "a full bucket is no key");
    // A refund larger than what was taken leaves it full, not fuller.
    check(
        &mut con,
        TPM,
        100,
        60,
        &["ALGORITHM", "TOKEN", "COST", "10"],
    );
    reserve(&mut con, HOLDS, "u", 30_000, &[bucket(&["HOLD", "30"])]);
    check(&mut con, TPM, 100, 60, &["ALGORITHM", "TOKEN", "COST", "0"]);
    let s = settle(&mut con, HOLDS, "u", &[bucket(&["ACTUAL", "0"])]);
    assert!(
        s.each[0].remaining >= 90 && s.each[0].remaining <= 100,
        "{s:?}"
    );
    assert!(peek(&mut con, TPM, 100, 60, &["ALGORITHM", "TOKEN"]).remaining <= 100);
}

#[test]
fn holds_replays_answer_the_first_reply_and_charge_nothing() {
    let server = Server::start();
    let mut con = server.connect();
    let limits = [
        limit(RPM, 60, 60, &[]),
        limit(TPM, 10_000, 60, &["HOLD", "800"]),
    ];
    let first = reserve(&mut con, HOLDS, "r", 30_000, &limits);
    check(&mut con, TPM, 10_000, 60, &["COST", "100"]);
    let again = reserve(&mut con, HOLDS, "r", 30_000, &limits);
    assert_eq!(
        again
            .multi
            .each
            .iter()
            .map(Decision::counts)
            .collect::<Vec<_>>(),
        first
            .multi
            .each
            .iter()
            .map(Decision::counts)
            .collect::<Vec<_>>()
    );
    assert_eq!(again.held, 800);
    assert!(again.hold_ttl_ms <= 30_000 && again.hold_ttl_ms > 20_000);
    assert_eq!((count(&mut con, RPM), count(&mut con, TPM)), (1, 900));
    settle(
        &mut con,
        HOLDS,
        "r",
        &[limit(TPM, 10_000, 60, &["ACTUAL", "500"])],
    );
    // Settled: the first reply still, nothing held.
    let settled = reserve(&mut con, HOLDS, "r", 30_000, &limits);
    assert_eq!(settled.multi.position, first.multi.position);
    assert_eq!((settled.held, settled.hold_ttl_ms), (0, -1));
    assert_eq!((count(&mut con, RPM), count(&mut con, TPM)), (1, 600));
    assert_eq!(counters(&mut con)["reserve_replayed"], 2);
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
    assert_eq!(count(&mut con, TPM), 70);

    reserve(
        &mut con,
        HOLDS,
        "gone",
        20,
        &[limit(TPM, 1000, 60, &["HOLD", "300"])],
    );
    assert_eq!(count(&mut con, TPM), 370);
    let (deadline, _) = record_times(&mut con, HOLDS, "gone");
    wait_until_past(&mut con, deadline);
    // Still charged until a command touches the holds key…
    assert_eq!(count(&mut con, TPM), 370);
    assert_eq!(extend(&mut con, HOLDS, "gone", 1000), 0);
    // …which refunds it once and forgets it.
    assert_eq!(count(&mut con, TPM), 70);
    assert!(!exists(&mut con, HOLDS));
    let s = settle(
        &mut con,
        HOLDS,
        "gone",
        &[limit(TPM, 1000, 60, &["ACTUAL", "120"])],
    );
    assert_eq!(s.status, 0);
    assert_eq!(count(&mut con, TPM), 190);
    let c = counters(&mut con);
    assert_eq!((c["settle_unknown"], c["holds_expired"]), (2, 1));
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
    let (first, _) = record_times(&mut con, HOLDS, "e");
    assert_eq!(extend(&mut con, HOLDS, "e", 4_000), 4_000);
    assert_eq!(extend(&mut con, HOLDS, "e", 90_000), 5_000);
    let (moved, _) = record_times(&mut con, HOLDS, "e");
    assert!(moved >= first, "{moved} < {first}");
    settle(
        &mut con,
        HOLDS,
        "e",
        &[limit(TPM, 1000, 60, &["ACTUAL", "10"])],
    );
    assert_eq!(extend(&mut con, HOLDS, "e", 1_000), 0, "a settled hold");
    assert_eq!(extend(&mut con, HOLDS, "nope", 1_000), 0);
}

#[test]
fn holds_estimates_are_capped_by_hold_max_percent() {
    let server = Server::start();
    let mut con = server.connect();
    let r = reserve(
        &mut con,
        HOLDS,
        "a",
        30_000,
        &[limit("{u}:a", 100, 60, &["HOLD", "90"])],
    );
    assert_eq!(r.held, 50);
    if Abilities::of(&mut con).command_info() {
        let _: () = run(
            &mut con,
            &["CONFIG", "SET", "ratelimit.hold-max-percent", "80"],
        );
        let r = reserve(
            &mut con,
            HOLDS,
            "b",
            30_000,
            &[limit("{u}:b", 100, 60, &["HOLD", "90"])],
        );
        assert_eq!(r.held, 80);
    }
    let server = Server::builder()
        .module_arg("hold-max-percent", "10")
        .start();
    let mut con = server.connect();
    let bucket = limit(
        "{u}:t",
        1000,
        60,
        &["HOLD", "900", "ALGORITHM", "TOKEN", "BURST", "200"],
    );
    assert_eq!(
        reserve(&mut con, HOLDS, "c", 30_000, &[bucket]).held,
        20,
        "a share of the burst"
    );
}

// ---------------------------------------------------------------------------
// 2. Exact under concurrency
// ---------------------------------------------------------------------------

#[test]
fn holds_concurrent_reserves_and_checks_never_pass_a_limit() {
    let server = Server::start();
    for algorithm in ["FIXED", "SLIDING", "TOKEN"] {
        let prefix = format!("{{c}}:{algorithm}");
        let (rpm, tpm, holds) = (
            format!("{prefix}:rpm"),
            format!("{prefix}:tpm"),
            format!("{prefix}:holds"),
        );
        const THREADS: usize = 10;
        const CALLS: usize = 25;
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (client, barrier) = (server.client(), Arc::clone(&barrier));
                let (rpm, tpm, holds) = (rpm.clone(), tpm.clone(), holds.clone());
                let algorithm = algorithm.to_string();
                thread::spawn(move || {
                    let mut con = client.get_connection().unwrap();
                    barrier.wait();
                    let (mut requests, mut tokens) = (0, 0);
                    for i in 0..CALLS {
                        let a = ["ALGORITHM", algorithm.as_str()];
                        if (t + i) % 3 == 0 {
                            let d = check(&mut con, &rpm, 50, 3600, &a);
                            requests += i64::from(d.allowed);
                        } else {
                            let mut hold = vec!["HOLD", "40"];
                            hold.extend_from_slice(&a);
                            let r = reserve(
                                &mut con,
                                &holds,
                                &format!("{t}-{i}"),
                                60_000,
                                &[limit(&rpm, 50, 3600, &a), limit(&tpm, 1000, 3600, &hold)],
                            );
                            if r.multi.allowed {
                                requests += 1;
                                tokens += 40;
                            }
                        }
                    }
                    (requests, tokens)
                })
            })
            .collect();
        let (requests, tokens) = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        assert_eq!(
            requests, 50,
            "{algorithm}: every request slot used, none twice"
        );
        assert!(tokens <= 1000, "{algorithm}: {tokens} tokens held of 1000");
        let mut con = server.connect();
        assert!(!check(&mut con, &rpm, 50, 3600, &["ALGORITHM", algorithm]).allowed);
    }
}

// ---------------------------------------------------------------------------
// 3. Replication, persistence, failover
// ---------------------------------------------------------------------------

#[test]
fn holds_expiry_refunds_reach_replicas_and_the_aof() {
    let data = DataDir::new();
    let master = replication_master(data.aof());
    let replicas = attach_replicas(
        &master,
        vec![Server::builder(), Server::builder().without_module()],
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
    // 4 estimates of 300, two refunded (in whichever window they went to).
    let sliding = get_str(&mut con, "{u}:s").unwrap();
    let (previous, current) = sliding[1..].split_once(':').unwrap();
    assert_eq!(
        previous.parse::<i64>().unwrap() + current.parse::<i64>().unwrap(),
        600,
        "{sliding}"
    );
    wait_replicas(&mut con, 2);
    let expected = snapshot(&mut con);
    for replica in &replicas {
        assert_replica_took_everything(replica);
        assert_eq!(snapshot(&mut replica.connect()), expected);
    }
    drop(con);
    master.kill();
    drop(replicas);
    for builder in [data.aof(), data.aof().without_module()] {
        let server = builder.start();
        assert_eq!(snapshot(&mut server.connect()), expected, "from the AOF");
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
    drop(con);
    master.kill();
    let mut con = replicas[0].connect();
    let _: () = run(&mut con, &["REPLICAOF", "NO", "ONE"]);
    let s = settle(
        &mut con,
        HOLDS,
        "f",
        &[limit(TPM, 1000, 60, &["ACTUAL", "150"])],
    );
    assert_eq!(s.status, 1);
    assert_eq!((count(&mut con, RPM), count(&mut con, TPM)), (1, 150));
    assert_eq!(
        settle(
            &mut con,
            HOLDS,
            "f",
            &[limit(TPM, 1000, 60, &["ACTUAL", "150"])]
        )
        .status,
        2
    );
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
    let tpm = [limit(TPM, 10, 60, &["HOLD", "1"])];
    for holds in ["str", "list"] {
        assert!(error(&mut con, &reserve_args(holds, "a", 1000, &tpm))
            .starts_with("WRONGTYPE Operation"));
        assert!(error(&mut con, &["RATELIMIT.EXTEND", holds, "a", "1000"])
            .starts_with("WRONGTYPE Operation"));
    }
    for holds in ["bad", "badsweep"] {
        assert_eq!(
            error(&mut con, &reserve_args(holds, "id", 1000, &tpm)),
            "WRONGTYPE the key holds a hash that is not a record of holds",
            "{holds}"
        );
    }
    let e = error(
        &mut con,
        &reserve_args(
            HOLDS,
            "a",
            1000,
            &[limit("{u}:sliding", 10, 60, &["HOLD", "1"])],
        ),
    );
    assert!(
        e.starts_with("WRONGTYPE the key holds SLIDING limiter state, not FIXED"),
        "{e}"
    );
    assert!(!exists(&mut con, HOLDS));
    // RESET leaves a holds key alone.
    assert!(error(&mut con, &["RATELIMIT.RESET", "bad"]).starts_with("WRONGTYPE"));
}

#[test]
fn holds_refuse_malformed_calls_with_exact_errors() {
    let server = Server::start();
    let mut con = server.connect();
    let cases: &[(&str, &str)] = &[
        (
            "RATELIMIT.RESERVE h id 1000 1 k LIMIT 10",
            "ERR wrong number of arguments for 'ratelimit.reserve' command",
        ),
        (
            "RATELIMIT.RESERVE h NOW 1000 1 k LIMIT 10 60",
            "ERR id must be 1 to 64 bytes and not NOW",
        ),
        (
            "RATELIMIT.RESERVE h id 0 1 k LIMIT 10 60",
            "ERR ttl_ms must be an integer from 1 to 86400000",
        ),
        (
            "RATELIMIT.RESERVE h id 86400001 1 k LIMIT 10 60",
            "ERR ttl_ms must be an integer from 1 to 86400000",
        ),
        (
            "RATELIMIT.RESERVE h id 1000 0 k LIMIT 10 60",
            "ERR numkeys must be an integer from 1 to 16",
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 k LIMIT 10 60 COST 1 HOLD 2",
            "ERR syntax error: a LIMIT takes COST or HOLD, not both",
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 k LIMIT 10 60 HOLD 2 HOLD 2",
            "ERR syntax error: HOLD given twice",
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 k LIMIT 10 60 HOLD -1",
            "ERR estimate must be a non-negative integer (at most 1000000000000000)",
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 k LIMIT 10 60 ACTUAL 1",
            "ERR syntax error: unknown option 'ACTUAL'",
        ),
        (
            "RATELIMIT.RESERVE h id 1000 2 k k LIMIT 10 60 LIMIT 10 60",
            "ERR each key may appear only once",
        ),
        (
            "RATELIMIT.RESERVE h id 1000 1 h LIMIT 10 60",
            "ERR the holds key cannot also be a limiter key",
        ),
        (
            "RATELIMIT.SETTLE h id 1 k LIMIT 10 60 ACTUAL",
            "ERR wrong number of arguments for 'ratelimit.settle' command",
        ),
        (
            "RATELIMIT.SETTLE h id 1 k LIMIT 10 60 COST 1",
            "ERR syntax error: unknown option 'COST'",
        ),
        (
            "RATELIMIT.SETTLE h id 1 k LIMIT 10 60 ALGORITHM FIXED",
            "ERR syntax error: each LIMIT of SETTLE needs ACTUAL",
        ),
        (
            "RATELIMIT.SETTLE h id 1 k LIMIT 10 60 ACTUAL x",
            "ERR actual must be a non-negative integer (at most 1000000000000000)",
        ),
        (
            "RATELIMIT.SETTLE h id 1 h LIMIT 10 60 ACTUAL 1",
            "ERR the holds key cannot also be a limiter key",
        ),
        (
            "RATELIMIT.EXTEND h id",
            "ERR wrong number of arguments for 'ratelimit.extend' command",
        ),
        (
            "RATELIMIT.EXTEND h id x",
            "ERR ttl_ms must be an integer from 1 to 86400000",
        ),
    ];
    for (call, expected) in cases {
        let args: Vec<&str> = call.split(' ').collect();
        assert_eq!(error(&mut con, &args), *expected, "{call}");
    }
    let keys: Vec<String> = run(&mut con, &["KEYS", "*"]);
    assert!(keys.is_empty(), "{keys:?}");
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
    let e = error(&mut app, &reserve_args(HOLDS, "a", 1000, &limits));
    assert!(e.starts_with("NOPERM"), "{e}");
    let e = error(
        &mut app,
        &reserve_args("{u}:rpm", "a", 1000, &[limit("{u}:other", 10, 60, &[])]),
    );
    assert!(e.starts_with("NOPERM"), "{e}");
    let _: () = run(&mut con, &["ACL", "SETUSER", "app", "~{u}:holds"]);
    assert!(reserve(&mut app, HOLDS, "a", 1000, &limits).multi.allowed);
    assert_eq!(
        settle(
            &mut app,
            HOLDS,
            "a",
            &[limit(TPM, 10, 60, &["ACTUAL", "1"])]
        )
        .status,
        1
    );
}

#[test]
fn holds_settle_and_extend_work_at_maxmemory_where_reserve_is_refused() {
    let server = Server::start();
    let mut con = server.connect();
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
    );
    reserve(
        &mut con,
        HOLDS,
        "live",
        60_000,
        &[limit(TPM, 1000, 60, &["HOLD", "100"])],
    );
    reserve(
        &mut con,
        HOLDS,
        "short",
        30,
        &[limit(TPM, 1000, 60, &["HOLD", "200"])],
    );
    let (deadline, _) = record_times(&mut con, HOLDS, "short");
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
    let e = error_of(try_run(
        &mut con,
        &reserve_args(HOLDS, "new", 1000, &[limit(TPM, 1000, 60, &["HOLD", "1"])]),
    ));
    assert!(e.starts_with("OOM"), "{e}");
    wait_until_past(&mut con, deadline);
    // EXTEND sweeps the expired hold (its estimate refunded) and extends.
    assert_eq!(extend(&mut con, HOLDS, "live", 60_000), 60_000);
    assert_eq!(count(&mut con, TPM), 100);
    assert_eq!(
        settle(
            &mut con,
            HOLDS,
            "live",
            &[limit(TPM, 1000, 60, &["ACTUAL", "40"])]
        )
        .status,
        1
    );
    assert_eq!(count(&mut con, TPM), 40);
    let _: () = run(&mut con, &["CONFIG", "SET", "maxmemory", "0"]);
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
        reserve(con, HOLDS, "b", 60_000, &[limit(RPM, 1, 60, &[])]);
        extend(con, HOLDS, "a", 60_000);
        settle(con, HOLDS, "a", &[limit(TPM, 100, 60, &["ACTUAL", "4"])]);
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
            (TPM, "ratelimit.reserve"),
            (HOLDS, "ratelimit.reserve"),
            (TPM, "ratelimit.refund"),
            (HOLDS, "ratelimit.refund"),
        ]
    });
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
    let other = (0..)
        .map(|i| format!("{{o:{i}}}:holds"))
        .find(|k| {
            cluster.keyslot(k) != cluster.keyslot(HOLDS) && cluster.master_for_key(k) == owner
        })
        .unwrap();
    for args in [
        reserve_args(&other, "b", 60_000, &limits),
        settle_args(&other, "a", &[limit(TPM, 1000, 60, &["ACTUAL", "1"])]),
    ] {
        let e = error(&mut con, &args);
        assert!(e.starts_with("CROSSSLOT"), "{e}");
    }
    assert_eq!(
        settle(
            &mut con,
            HOLDS,
            "a",
            &[limit(TPM, 1000, 60, &["ACTUAL", "30"])]
        )
        .status,
        1
    );
    assert_eq!(count(&mut con, TPM), 30);
}
