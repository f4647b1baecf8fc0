//! Limiters under failure and stress: a master killed mid-workload, many
//! clients hammering a few keys, millions of keys coming and going, and a
//! server out of memory.
//!
//! Limits are large but finite and state cannot change by itself during a
//! test: windows of a day (a sliding one is only used well clear of its
//! end, see [`clear_of_window_end`]) and buckets refilled at one token an
//! hour. Workloads are bounded by counts, never by time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{
    error_of, exists, five, get_str, pexpiretime, run, server_ms, Server, REPLICATION_DEADLINE,
};
use redis::{Connection, Value};

const DAY_MS: i64 = 86_400_000;

/// Added to a server-given wait so that the moment has surely passed.
const MARGIN_MS: i64 = 30;

/// One limiter as the workloads call it: the command taking one unit (or
/// `cost` units) from it.
#[derive(Clone, Copy)]
struct Limiter {
    key: &'static str,
    /// The arguments after the key.
    args: &'static [&'static str],
    /// RATELIMIT.THROTTLE rather than RATELIMIT.CHECK.
    throttle: bool,
    /// Units each call takes.
    cost: i64,
    /// Units it admits in all (limit or burst).
    capacity: i64,
}

impl Limiter {
    fn cmd(&self) -> redis::Cmd {
        let mut cmd = redis::cmd(if self.throttle {
            "RATELIMIT.THROTTLE"
        } else {
            "RATELIMIT.CHECK"
        });
        cmd.arg(self.key).arg(self.args);
        cmd
    }

    /// Whether a reply admitted the call, and the units it says remain.
    fn admitted(&self, reply: &[i64; 5]) -> (bool, i64) {
        if self.throttle {
            (reply[0] == 0, reply[2])
        } else {
            (reply[0] == 1, reply[1])
        }
    }
}

/// The five integers of a pipelined reply.
fn five_of(value: &Value) -> [i64; 5] {
    let ints: Vec<i64> = redis::from_redis_value(value.clone())
        .unwrap_or_else(|e| panic!("not five integers: {value:?}: {e}"));
    ints.try_into().unwrap()
}

/// Runs `calls` calls on `limiter`, pipelined, and returns the replies.
fn call_many(con: &mut Connection, limiter: &Limiter, calls: usize) -> Vec<[i64; 5]> {
    let mut pipe = redis::pipe();
    for _ in 0..calls {
        pipe.add_command(limiter.cmd());
    }
    let replies: Vec<Value> = pipe.query(con).unwrap();
    replies.iter().map(five_of).collect()
}

/// If a sliding window of `period_ms` (aligned to the epoch) ends within
/// `needed_ms` on the server's clock, waits until it has ended, so that a
/// test needing one window has at least `needed_ms` of it.
fn clear_of_window_end(con: &mut Connection, period_ms: i64, needed_ms: i64) {
    let now = server_ms(con);
    let left = period_ms - now % period_ms;
    if left < needed_ms {
        eprintln!("waiting {left} ms for a sliding window to end");
        sleep(Duration::from_millis((left + MARGIN_MS) as u64));
    }
}

fn info_field(con: &mut Connection, section: &str, field: &str) -> i64 {
    let info: String = run(con, &["INFO", section]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in:\n{info}"))
        .trim()
        .parse()
        .unwrap()
}

fn used_memory(con: &mut Connection) -> i64 {
    info_field(con, "memory", "used_memory")
}

fn dbsize(con: &mut Connection) -> i64 {
    run(con, &["DBSIZE"])
}

/// `S<previous>:<current>` as its two counts.
fn sliding_counts(value: &str) -> (i64, i64) {
    let (previous, current) = value
        .strip_prefix('S')
        .and_then(|v| v.split_once(':'))
        .unwrap_or_else(|| panic!("not a sliding window: {value}"));
    (previous.parse().unwrap(), current.parse().unwrap())
}

// ---------------------------------------------------------------------------
// A master killed mid-workload
// ---------------------------------------------------------------------------

/// The limiters of the kill test: 1 000 units each, none coming back
/// within the test.
const KILL_LIMITERS: [Limiter; 4] = [
    Limiter {
        key: "kill:fixed",
        args: &["1000", "86400"],
        throttle: false,
        cost: 1,
        capacity: 1000,
    },
    Limiter {
        key: "kill:sliding",
        args: &["1000", "86400", "ALGORITHM", "SLIDING"],
        throttle: false,
        cost: 1,
        capacity: 1000,
    },
    Limiter {
        key: "kill:token",
        args: &["1", "3600", "ALGORITHM", "TOKEN", "BURST", "1000"],
        throttle: false,
        cost: 1,
        capacity: 1000,
    },
    Limiter {
        key: "kill:gcra",
        args: &["999", "1", "3600"],
        throttle: true,
        cost: 1,
        capacity: 1000,
    },
];

#[test]
fn faults_killed_master_loses_nothing_acknowledged() {
    const PREFIX: usize = 100;
    /// Rounds of the suffix: each takes 5 units from every limiter.
    const SUFFIX_ROUNDS: usize = 160;
    const PER_ROUND: usize = 5;
    /// Suffix rounds the master answers before it is killed.
    const KILL_AFTER_ROUNDS: usize = 40;

    let (master, replicas) = common::master_with_replicas(vec![Server::builder()]);
    let replica = &replicas[0];
    let mut con = master.connect();
    clear_of_window_end(&mut con, DAY_MS, 60_000);

    // The prefix, acknowledged by the replica.
    for limiter in &KILL_LIMITERS {
        let replies = call_many(&mut con, limiter, PREFIX);
        assert!(
            replies.iter().all(|r| limiter.admitted(r).0),
            "{}: {replies:?}",
            limiter.key
        );
    }
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(REPLICATION_DEADLINE.as_millis() as u64)
        .query(&mut con)
        .unwrap();
    assert_eq!(acked, 1, "the replica did not acknowledge the prefix");
    let mut rcon = replica.connect();
    let acknowledged: Vec<(String, i64)> = KILL_LIMITERS
        .iter()
        .map(|l| {
            let state = (
                get_str(&mut rcon, l.key).unwrap(),
                pexpiretime(&mut rcon, l.key),
            );
            assert_eq!(
                state,
                (
                    get_str(&mut con, l.key).unwrap(),
                    pexpiretime(&mut con, l.key)
                ),
                "{}: the replica differs after WAIT",
                l.key
            );
            state
        })
        .collect();
    assert_eq!(acknowledged[0].0, PREFIX.to_string());
    assert_eq!(sliding_counts(&acknowledged[1].0).1, PREFIX as i64);

    // The suffix, from another client, while the master is killed.
    let rounds = AtomicUsize::new(0);
    let sent = std::thread::scope(|scope| {
        let suffix = scope.spawn(|| {
            let mut pipe = redis::pipe();
            for limiter in &KILL_LIMITERS {
                for _ in 0..PER_ROUND {
                    pipe.add_command(limiter.cmd());
                }
            }
            for round in 0..SUFFIX_ROUNDS {
                // Sent, whether answered or not.
                let sent = (round + 1) * PER_ROUND;
                if pipe.query::<Vec<Value>>(&mut con).is_err() {
                    return sent;
                }
                rounds.store(round + 1, Ordering::SeqCst);
            }
            SUFFIX_ROUNDS * PER_ROUND
        });
        let deadline = Instant::now() + REPLICATION_DEADLINE;
        while rounds.load(Ordering::SeqCst) < KILL_AFTER_ROUNDS && !suffix.is_finished() {
            assert!(Instant::now() < deadline, "the suffix is stuck");
            sleep(Duration::from_millis(1));
        }
        master.kill();
        suffix.join().unwrap()
    });
    eprintln!(
        "master killed after {} answered suffix rounds",
        rounds.load(Ordering::SeqCst)
    );

    let _: () = run(&mut rcon, &["REPLICAOF", "NO", "ONE"]);
    let prefix = PREFIX as i64;
    let sent = sent as i64;
    for (limiter, (value, expiry)) in KILL_LIMITERS.iter().zip(&acknowledged) {
        let key = limiter.key;
        let now_value = get_str(&mut rcon, key)
            .unwrap_or_else(|| panic!("{key} is gone from the promoted replica"));
        let now_expiry = pexpiretime(&mut rcon, key);
        // What the replica holds: the prefix, and perhaps part of the suffix.
        let held = match key {
            "kill:fixed" => {
                assert_eq!(now_expiry, *expiry, "{key}: the window moved");
                now_value.parse::<i64>().unwrap()
            }
            "kill:sliding" => {
                assert_eq!(now_expiry, *expiry, "{key}: the window moved");
                let (previous, current) = sliding_counts(&now_value);
                assert_eq!(previous, sliding_counts(value).0, "{key}");
                current
            }
            // One token is an hour: the bucket is full that many hours after
            // the debt's expiry said.
            _ => {
                assert!(
                    now_expiry >= *expiry,
                    "{key}: debt lost: full at {now_expiry}, was {expiry} after WAIT"
                );
                assert_eq!((now_expiry - *expiry) % 3_600_000, 0, "{key}");
                prefix + (now_expiry - *expiry) / 3_600_000
            }
        };
        eprintln!("{key}: the promoted replica holds {held} of {prefix} + {sent} sent");
        assert!(
            (prefix..=prefix + sent).contains(&held),
            "{key}: the promoted replica holds {held} units ({now_value}), \
             the prefix took {prefix} and {sent} more were sent"
        );

        // Continuing on the promoted replica: at most what the replica
        // knows is left, never more than the prefix left.
        let mut admitted = 0;
        let mut replies = Vec::new();
        for _ in 0..12 {
            let batch = call_many(&mut rcon, limiter, 100);
            admitted += batch.iter().filter(|r| limiter.admitted(r).0).count() as i64;
            let done = batch.iter().any(|r| !limiter.admitted(r).0);
            replies.extend(batch);
            if done {
                break;
            }
        }
        assert!(
            admitted <= limiter.capacity - prefix,
            "{key}: admitted {admitted} after promotion, the prefix left {}",
            limiter.capacity - prefix
        );
        assert_eq!(
            admitted,
            limiter.capacity - held,
            "{key}: after promotion; held {held}"
        );
        let last = replies.last().unwrap();
        assert_eq!(limiter.admitted(last), (false, 0), "{key}: {last:?}");
    }
    let log = replica.log();
    assert!(!log.contains("sending an error"), "replica log:\n{log}");
}

// ---------------------------------------------------------------------------
// Many clients, few keys
// ---------------------------------------------------------------------------

/// Large limits that no refill or window end touches during the test.
const HOT_LIMITERS: [Limiter; 5] = [
    Limiter {
        key: "hot:fixed",
        args: &["5000", "86400"],
        throttle: false,
        cost: 1,
        capacity: 5000,
    },
    Limiter {
        key: "hot:fixed:cost",
        args: &["5000", "86400", "COST", "2"],
        throttle: false,
        cost: 2,
        capacity: 5000,
    },
    Limiter {
        key: "hot:sliding",
        args: &["5000", "86400", "ALGORITHM", "SLIDING"],
        throttle: false,
        cost: 1,
        capacity: 5000,
    },
    Limiter {
        key: "hot:token",
        args: &["1", "3600", "ALGORITHM", "TOKEN", "BURST", "5000"],
        throttle: false,
        cost: 1,
        capacity: 5000,
    },
    Limiter {
        key: "hot:gcra",
        args: &["4999", "1", "3600"],
        throttle: true,
        cost: 1,
        capacity: 5000,
    },
];

#[test]
fn faults_concurrent_clients_share_each_limit_exactly() {
    const CLIENTS: usize = 64;
    const BATCHES: usize = 10;
    const BATCH: usize = 50;

    let server = Server::builder().arg("maxclients", "1000").start();
    let mut con = server.connect();
    clear_of_window_end(&mut con, DAY_MS, 60_000);
    let started = server_ms(&mut con);

    // Every client sends its batches, each mixing all the keys.
    let replies: Vec<Vec<(usize, [i64; 5])>> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let mut con = server.connect();
                scope.spawn(move || {
                    let mut replies = Vec::with_capacity(BATCHES * BATCH);
                    for batch in 0..BATCHES {
                        let mut pipe = redis::pipe();
                        let targets: Vec<usize> = (0..BATCH)
                            .map(|i| (client + batch + i) % HOT_LIMITERS.len())
                            .collect();
                        for &t in &targets {
                            pipe.add_command(HOT_LIMITERS[t].cmd());
                        }
                        let values: Vec<Value> = pipe.query(&mut con).unwrap();
                        assert_eq!(values.len(), BATCH);
                        replies.extend(targets.into_iter().zip(values.iter().map(five_of)));
                    }
                    replies
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let elapsed = server_ms(&mut con) - started;
    let total: usize = replies.iter().map(Vec::len).sum();
    assert_eq!(total, CLIENTS * BATCHES * BATCH);
    eprintln!("{total} requests from {CLIENTS} clients in {elapsed} ms");

    let mut by_limiter: BTreeMap<usize, Vec<[i64; 5]>> = BTreeMap::new();
    for (target, reply) in replies.into_iter().flatten() {
        by_limiter.entry(target).or_default().push(reply);
    }
    for (target, limiter) in HOT_LIMITERS.iter().enumerate() {
        let replies = &by_limiter[&target];
        assert!(
            replies.len() as i64 * limiter.cost > limiter.capacity,
            "{}: not enough requests to exceed the limit",
            limiter.key
        );
        let mut remaining: Vec<i64> = Vec::new();
        for reply in replies {
            match limiter.admitted(reply) {
                (true, left) => remaining.push(left),
                (false, left) => assert_eq!(left, 0, "{}: denied with {reply:?}", limiter.key),
            }
        }
        // Exactly the limit admitted, each unit to one request only: the
        // remaining counts are all different, one per admitted request.
        assert_eq!(
            remaining.len() as i64 * limiter.cost,
            limiter.capacity,
            "{}: admitted",
            limiter.key
        );
        remaining.sort_unstable();
        let expected: Vec<i64> = (0..limiter.capacity / limiter.cost)
            .map(|i| i * limiter.cost)
            .collect();
        assert_eq!(remaining, expected, "{}: remaining counts", limiter.key);
    }
    // The stored state says the same.
    assert_eq!(get_str(&mut con, "hot:fixed").as_deref(), Some("5000"));
    assert_eq!(get_str(&mut con, "hot:fixed:cost").as_deref(), Some("5000"));
    assert_eq!(get_str(&mut con, "hot:sliding").as_deref(), Some("S0:5000"));
    let token = five(
        &mut con,
        &[
            "RATELIMIT.PEEK",
            "hot:token",
            "1",
            "3600",
            "ALGORITHM",
            "TOKEN",
            "BURST",
            "5000",
            "COST",
            "0",
        ],
    );
    assert_eq!(token[..2], [1, 0], "{token:?}");
    let gcra = five(
        &mut con,
        &["RATELIMIT.THROTTLE", "hot:gcra", "4999", "1", "3600", "0"],
    );
    assert_eq!(gcra[2], 0, "{gcra:?}");
}

// ---------------------------------------------------------------------------
// Keys coming and going
// ---------------------------------------------------------------------------

/// Creates `keys` one-second limiters of every kind (a fifth of them
/// called twice and peeked), all expiring within two seconds.
fn create_short_lived(con: &mut Connection, keys: usize) {
    const BATCH: usize = 1000;
    for start in (0..keys).step_by(BATCH) {
        let mut pipe = redis::pipe();
        for i in start..(start + BATCH).min(keys) {
            let key = format!("leak:{i}");
            let args: &[&str] = match i % 4 {
                0 => &["RATELIMIT.CHECK", &key, "10", "1"],
                1 => &["RATELIMIT.CHECK", &key, "10", "1", "ALGORITHM", "SLIDING"],
                2 => &["RATELIMIT.CHECK", &key, "10", "1", "ALGORITHM", "TOKEN"],
                _ => &["RATELIMIT.THROTTLE", &key, "9", "10", "1"],
            };
            let times = if i % 5 == 0 { 2 } else { 1 };
            for _ in 0..times {
                let mut cmd = redis::cmd(args[0]);
                cmd.arg(&args[1..]);
                pipe.add_command(cmd);
            }
            if i % 5 == 0 && args[0] == "RATELIMIT.CHECK" {
                let mut cmd = redis::cmd("RATELIMIT.PEEK");
                cmd.arg(&args[1..]);
                pipe.add_command(cmd);
            }
        }
        let replies: Vec<Value> = pipe.query(con).unwrap();
        for reply in &replies {
            five_of(reply);
        }
    }
}

/// Waits until every key has expired: SCAN looks at every key, which
/// removes the expired ones it meets, and active expiry does the rest.
fn wait_until_empty(con: &mut Connection) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut cursor = 0u64;
        loop {
            let (next, _): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query(con)
                .unwrap();
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let left = dbsize(con);
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} keys have not expired yet"
        );
        sleep(Duration::from_millis(50));
    }
}

/// `used_memory` once it has settled. The server shrinks emptied key tables
/// (half a megabyte for 50 000 keys) and idle client buffers in its periodic
/// tasks, a step at a time: readings are taken every 100 ms until four in a
/// row agree within 16 kB.
fn settled_used_memory(con: &mut Connection) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut readings = vec![used_memory(con)];
    loop {
        sleep(Duration::from_millis(100));
        readings.push(used_memory(con));
        let last = &readings[readings.len().saturating_sub(4)..];
        let spread = last.iter().max().unwrap() - last.iter().min().unwrap();
        if last.len() == 4 && spread < 16 * 1024 {
            return *last.last().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "used_memory does not settle: {readings:?}"
        );
    }
}

#[test]
fn faults_expired_limiters_leave_no_memory_behind() {
    const KEYS: usize = 50_000;
    const CYCLES: usize = 4;
    /// Growth allowed between the second cycle and any later one: a leak
    /// of even 8 bytes a call (70 000 calls a cycle) is over it by the
    /// third cycle.
    const TOLERANCE: i64 = 512 * 1024;

    let server = Server::start();
    let mut con = server.connect();
    let mut readings = Vec::new();
    for cycle in 0..CYCLES {
        create_short_lived(&mut con, KEYS);
        let full = used_memory(&mut con);
        wait_until_empty(&mut con);
        let empty = settled_used_memory(&mut con);
        eprintln!("cycle {cycle}: used_memory {full} with the keys, {empty} without");
        readings.push(empty);
    }
    // The first cycle grows the server's caches once; from the second on,
    // each cycle ends where the one before did.
    let baseline = readings[1];
    for (cycle, &reading) in readings.iter().enumerate().skip(2) {
        assert!(
            reading - baseline < TOLERANCE,
            "cycle {cycle}: used_memory {reading}, {} more than after cycle 1 ({baseline}); readings {readings:?}",
            reading - baseline
        );
    }
}

// ---------------------------------------------------------------------------
// Out of memory
// ---------------------------------------------------------------------------

#[test]
fn faults_out_of_memory_refuses_and_writes_nothing() {
    let server = Server::start();
    let mut con = server.connect();
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
    );

    // Limiters made before memory runs out.
    check_args(&mut con, &["oom:fixed", "5", "3600"]);
    check_args(&mut con, &["oom:token", "5", "3600", "ALGORITHM", "TOKEN"]);
    let _: Value = run(
        &mut con,
        &["RATELIMIT.THROTTLE", "oom:gcra", "4", "1", "3600"],
    );
    check_args(&mut con, &["oom:spare", "5", "3600"]);
    let existing = ["oom:fixed", "oom:token", "oom:gcra"];
    let before: Vec<(Option<String>, i64)> = existing
        .iter()
        .map(|k| (get_str(&mut con, k), pexpiretime(&mut con, k)))
        .collect();

    // Fill a little room with plain keys until writes are refused.
    let limit = used_memory(&mut con) + 1024 * 1024;
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "maxmemory", &limit.to_string()],
    );
    let value = "x".repeat(10_000);
    let mut filled = 0;
    loop {
        let reply = redis::cmd("SET")
            .arg(format!("fill:{filled}"))
            .arg(&value)
            .query::<Value>(&mut con);
        match reply {
            Ok(_) => filled += 1,
            Err(e) => {
                assert!(error_of(Err(e)).starts_with("OOM"), "SET refused otherwise");
                break;
            }
        }
        assert!(filled < 1000, "1000 SETs of 10 kB fit in 1 MB");
    }
    assert!(filled > 10, "only {filled} SETs fit");
    // The refused SET was over the limit with its own 10 kB argument; without
    // it the server may be just under. Lowered below what is in use, the limit
    // refuses every write, however small.
    let limit = used_memory(&mut con) - 256 * 1024;
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "maxmemory", &limit.to_string()],
    );

    // Every call that may write is refused, on new and existing keys alike.
    let calls: [&[&str]; 8] = [
        &["RATELIMIT.CHECK", "oom:new:fixed", "5", "3600"],
        &[
            "RATELIMIT.CHECK",
            "oom:new:sliding",
            "5",
            "3600",
            "ALGORITHM",
            "SLIDING",
        ],
        &[
            "RATELIMIT.CHECK",
            "oom:new:token",
            "5",
            "3600",
            "ALGORITHM",
            "TOKEN",
        ],
        &["RATELIMIT.THROTTLE", "oom:new:gcra", "4", "1", "3600"],
        &["RATELIMIT.CHECK", "oom:fixed", "5", "3600"],
        &[
            "RATELIMIT.CHECK",
            "oom:token",
            "5",
            "3600",
            "ALGORITHM",
            "TOKEN",
        ],
        &["RATELIMIT.THROTTLE", "oom:gcra", "4", "1", "3600"],
        &["RATELIMIT.CHECK", "oom:fixed", "5", "3600", "COST", "0"],
    ];
    for args in calls {
        let error = error_of(common::raw(
            &mut con,
            &args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>(),
        ));
        assert!(error.starts_with("OOM"), "{args:?}: {error}");
    }
    for key in [
        "oom:new:fixed",
        "oom:new:sliding",
        "oom:new:token",
        "oom:new:gcra",
    ] {
        assert!(!exists(&mut con, key), "a refused call created {key}");
    }
    let after: Vec<(Option<String>, i64)> = existing
        .iter()
        .map(|k| (get_str(&mut con, k), pexpiretime(&mut con, k)))
        .collect();
    assert_eq!(after, before, "a refused call changed a limiter");
    // Looking still works, and so does removing, which frees memory.
    let peek = five(&mut con, &["RATELIMIT.PEEK", "oom:fixed", "5", "3600"]);
    assert_eq!(peek[..4], [1, 4, 5, -1]);
    let removed: i64 = run(&mut con, &["RATELIMIT.RESET", "oom:spare"]);
    assert_eq!(removed, 1);

    // With eviction allowed, calls work again at the limit: other keys go.
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    );
    let evicted_before = info_field(&mut con, "stats", "evicted_keys");
    for args in calls {
        let reply: Vec<i64> = run(&mut con, args);
        assert_eq!(reply.len(), 5, "{args:?}: {reply:?}");
    }
    let reply = five(&mut con, &["RATELIMIT.CHECK", "oom:new2", "5", "3600"]);
    assert_eq!(reply[..4], [1, 4, 5, -1]);
    // A megabyte more of plain keys, each making room for itself.
    for i in 0..100 {
        let _: () = run(&mut con, &["SET", &format!("more:{i}"), &value]);
    }
    let reply = five(
        &mut con,
        &["RATELIMIT.THROTTLE", "oom:new3", "4", "1", "3600"],
    );
    assert_eq!(reply[..3], [0, 5, 4]);
    assert!(
        info_field(&mut con, "stats", "evicted_keys") > evicted_before,
        "nothing was evicted"
    );
    let used = used_memory(&mut con);
    assert!(
        used <= limit + 256 * 1024,
        "used_memory {used} well above maxmemory {limit}"
    );
}

fn check_args(con: &mut Connection, args: &[&str]) -> [i64; 5] {
    let mut all = vec!["RATELIMIT.CHECK"];
    all.extend_from_slice(args);
    five(con, &all)
}
