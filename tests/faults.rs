//! Limiters under failure and stress: a master killed mid-workload, many
//! clients hammering a few keys, millions of keys coming and going, and a
//! server out of memory.
//!
//! Limiters are large but finite and state cannot change by itself during a
//! test: every one [lasts](common::Kind::lasting) (windows of 10^9 s,
//! buckets refilled at one unit a day and more). Workloads are bounded by
//! counts, never by time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{
    check, command, error_of, exists, get_str, master_with_replicas, peek, pexpiretime, raw, run,
    server_ms, stored, throttle, Command, Limiter, Reply, Server, Stored, FIXED, KINDS,
    LASTING_UNIT_S, REPLICATION_DEADLINE, SLIDING,
};
use redis::{Connection, Value};

/// Runs `calls` calls taking one unit each from `key`, pipelined, and
/// returns the replies.
fn call_many(con: &mut Connection, limiter: &Limiter, key: &str, calls: usize) -> Vec<Reply> {
    let mut pipe = redis::pipe();
    for _ in 0..calls {
        pipe.add_command(command(&limiter.take_one(key)));
    }
    let replies: Vec<Value> = pipe.query(con).unwrap();
    replies.into_iter().map(|r| limiter.reply(r)).collect()
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

/// The limiters of the kill test, one of each kind: 1 000 units each, none
/// coming back within the test.
fn kill_limiters() -> Vec<(String, Limiter)> {
    KINDS
        .iter()
        .map(|k| (format!("kill:{}", k.lower()), k.lasting(1000)))
        .collect()
}

#[test]
fn faults_killed_master_loses_nothing_acknowledged() {
    const PREFIX: usize = 100;
    /// Rounds of the suffix: each takes 5 units from every limiter.
    const SUFFIX_ROUNDS: usize = 160;
    const PER_ROUND: usize = 5;
    /// Suffix rounds the master answers before it is killed.
    const KILL_AFTER_ROUNDS: usize = 40;

    let (master, replicas) = master_with_replicas(vec![Server::builder()]);
    let replica = &replicas[0];
    let mut con = master.connect();
    let limiters = kill_limiters();

    // The prefix, acknowledged by the replica.
    for (key, limiter) in &limiters {
        let replies = call_many(&mut con, limiter, key, PREFIX);
        assert!(replies.iter().all(Reply::admitted), "{key}: {replies:?}");
    }
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(REPLICATION_DEADLINE.as_millis() as u64)
        .query(&mut con)
        .unwrap();
    assert_eq!(acked, 1, "the replica did not acknowledge the prefix");
    let mut rcon = replica.connect();
    let acknowledged: Vec<Stored> = limiters
        .iter()
        .map(|(key, _)| {
            let state = stored(&mut rcon, key);
            assert!(state.value.is_some(), "{key}: not on the replica");
            assert_eq!(
                state,
                stored(&mut con, key),
                "{key}: the replica differs after WAIT"
            );
            state
        })
        .collect();
    assert_eq!(acknowledged[0].text(), Some(PREFIX.to_string().as_str()));
    assert_eq!(
        sliding_counts(acknowledged[1].text().unwrap()).1,
        PREFIX as i64
    );

    // The suffix, from another client, while the master is killed.
    let rounds = AtomicUsize::new(0);
    let sent = std::thread::scope(|scope| {
        let suffix = scope.spawn(|| {
            let mut pipe = redis::pipe();
            for (key, limiter) in &limiters {
                for _ in 0..PER_ROUND {
                    pipe.add_command(command(&limiter.take_one(key)));
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
    for ((key, limiter), acked) in limiters.iter().zip(&acknowledged) {
        let (value, expiry) = (acked.text().unwrap(), &acked.expires_at);
        let now_value = get_str(&mut rcon, key)
            .unwrap_or_else(|| panic!("{key} is gone from the promoted replica"));
        let now_expiry = pexpiretime(&mut rcon, key);
        // What the replica holds: the prefix, and perhaps part of the suffix.
        let unit_ms = (LASTING_UNIT_S * 1000) as i64;
        let held = match limiter.kind {
            FIXED => {
                assert_eq!(now_expiry, *expiry, "{key}: the window moved");
                now_value.parse::<i64>().unwrap()
            }
            SLIDING => {
                assert_eq!(now_expiry, *expiry, "{key}: the window moved");
                let (previous, current) = sliding_counts(&now_value);
                assert_eq!(previous, sliding_counts(value).0, "{key}");
                current
            }
            // A bucket is full that many units after the debt's expiry said.
            _ => {
                assert!(
                    now_expiry >= *expiry,
                    "{key}: debt lost: full at {now_expiry}, was {expiry} after WAIT"
                );
                assert_eq!((now_expiry - *expiry) % unit_ms, 0, "{key}");
                prefix + (now_expiry - *expiry) / unit_ms
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
            let batch = call_many(&mut rcon, limiter, key, 100);
            admitted += batch.iter().filter(|r| r.admitted()).count() as i64;
            let done = batch.iter().any(|r| !r.admitted());
            replies.extend(batch);
            if done {
                break;
            }
        }
        let capacity = limiter.capacity as i64;
        assert!(
            admitted <= capacity - prefix,
            "{key}: admitted {admitted} after promotion, the prefix left {}",
            capacity - prefix
        );
        assert_eq!(
            admitted,
            capacity - held,
            "{key}: after promotion; held {held}"
        );
        let last = replies.last().unwrap();
        assert_eq!(
            (last.admitted(), last.remaining()),
            (false, 0),
            "{key}: {last:?}"
        );
    }
    common::assert_replica_took_everything(replica);
}

// ---------------------------------------------------------------------------
// Many clients, few keys
// ---------------------------------------------------------------------------

/// The keys of the hot test: one limiter of each kind and a fixed window
/// taken two units at a time, of 5 000 units each, none coming back during
/// the test; with the units each call takes.
fn hot_limiters() -> Vec<(String, Limiter, u64)> {
    let mut hot: Vec<(String, Limiter, u64)> = KINDS
        .iter()
        .map(|k| (format!("hot:{}", k.lower()), k.lasting(5000), 1))
        .collect();
    hot.push(("hot:fixed:cost".to_string(), FIXED.lasting(5000), 2));
    hot
}

#[test]
fn faults_concurrent_clients_share_each_limit_exactly() {
    const CLIENTS: usize = 64;
    const BATCHES: usize = 10;
    const BATCH: usize = 50;

    let server = Server::builder().arg("maxclients", "1000").start();
    let mut con = server.connect();
    let started = server_ms(&mut con);
    let hot = &hot_limiters();

    // Every client sends its batches, each mixing all the keys.
    let replies: Vec<Vec<(usize, Reply)>> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let mut con = server.connect();
                scope.spawn(move || {
                    let mut replies = Vec::with_capacity(BATCHES * BATCH);
                    for batch in 0..BATCHES {
                        let mut pipe = redis::pipe();
                        let targets: Vec<usize> = (0..BATCH)
                            .map(|i| (client + batch + i) % hot.len())
                            .collect();
                        for &t in &targets {
                            let (key, limiter, cost) = &hot[t];
                            pipe.add_command(command(&limiter.take(key, *cost)));
                        }
                        let values: Vec<Value> = pipe.query(&mut con).unwrap();
                        assert_eq!(values.len(), BATCH);
                        let replies_of = targets.iter().zip(values);
                        replies.extend(replies_of.map(|(&t, v)| (t, hot[t].1.reply(v))));
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

    let mut by_limiter: BTreeMap<usize, Vec<Reply>> = BTreeMap::new();
    for (target, reply) in replies.into_iter().flatten() {
        by_limiter.entry(target).or_default().push(reply);
    }
    for (target, (key, limiter, cost)) in hot.iter().enumerate() {
        let replies = &by_limiter[&target];
        let (cost, capacity) = (*cost as i64, limiter.capacity as i64);
        assert!(
            replies.len() as i64 * cost > capacity,
            "{key}: not enough requests to exceed the limit"
        );
        let mut remaining: Vec<i64> = Vec::new();
        for reply in replies {
            match (reply.admitted(), reply.remaining()) {
                (true, left) => remaining.push(left),
                (false, left) => assert_eq!(left, 0, "{key}: denied with {reply:?}"),
            }
        }
        // Exactly the limit admitted, each unit to one request only: the
        // remaining counts are all different, one per admitted request.
        assert_eq!(remaining.len() as i64 * cost, capacity, "{key}: admitted");
        remaining.sort_unstable();
        let expected: Vec<i64> = (0..capacity / cost).map(|i| i * cost).collect();
        assert_eq!(remaining, expected, "{key}: remaining counts");
    }
    // The stored state says the same.
    assert_eq!(get_str(&mut con, "hot:fixed").as_deref(), Some("5000"));
    assert_eq!(get_str(&mut con, "hot:fixed:cost").as_deref(), Some("5000"));
    assert_eq!(get_str(&mut con, "hot:sliding").as_deref(), Some("S0:5000"));
    for (key, limiter, _) in hot.iter().filter(|(_, l, _)| l.kind.bucket) {
        let look = limiter.call(&mut con, &limiter.look(key, 0));
        assert_eq!(look.remaining(), 0, "{key}: {look:?}");
        if limiter.kind.command == Command::Check {
            assert!(look.admitted(), "{key}: a look at cost 0 {look:?}");
        }
    }
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
        let mut callees = Vec::new();
        for i in start..(start + BATCH).min(keys) {
            let key = format!("leak:{i}");
            let limiter = KINDS[i % KINDS.len()].limiter(10, 1);
            let mut calls = vec![limiter.take_one(&key)];
            if i % 5 == 0 {
                calls.push(limiter.take_one(&key));
                if limiter.kind.command == Command::Check {
                    calls.push(limiter.look(&key, 1));
                }
            }
            for call in calls {
                pipe.add_command(command(&call));
                callees.push(limiter);
            }
        }
        let replies: Vec<Value> = pipe.query(con).unwrap();
        for (reply, limiter) in replies.into_iter().zip(callees) {
            limiter.reply(reply);
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

    // A limiter of each kind made before memory runs out (`oom:fixed`, …),
    // and one of each to be made after (`oom:new:fixed`, …).
    let limiters: Vec<Limiter> = KINDS.iter().map(|k| k.limiter(5, 3600)).collect();
    let keys = |prefix: &str| -> Vec<String> {
        limiters
            .iter()
            .map(|l| format!("{prefix}:{}", l.kind.lower()))
            .collect()
    };
    let (existing, new) = (keys("oom"), keys("oom:new"));
    for (limiter, key) in limiters.iter().zip(&existing) {
        limiter.call(&mut con, &limiter.take_one(key));
    }
    check(&mut con, "oom:spare", 5, 3600, &[]);
    let before: Vec<Stored> = existing.iter().map(|k| stored(&mut con, k)).collect();

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
    let mut calls: Vec<(Limiter, Vec<String>)> = Vec::new();
    for keys in [&new, &existing] {
        for (limiter, key) in limiters.iter().zip(keys) {
            calls.push((*limiter, limiter.take_one(key)));
        }
    }
    calls.push((limiters[0], limiters[0].take(&existing[0], 0)));
    for (_, args) in &calls {
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let error = error_of(raw(&mut con, &bytes));
        assert!(error.starts_with("OOM"), "{args:?}: {error}");
    }
    for key in &new {
        assert!(!exists(&mut con, key), "a refused call created {key}");
    }
    let after: Vec<Stored> = existing.iter().map(|k| stored(&mut con, k)).collect();
    assert_eq!(after, before, "a refused call changed a limiter");
    // Looking still works, and so does removing, which frees memory.
    let look = peek(&mut con, "oom:fixed", 5, 3600, &[]);
    assert_eq!(look.without_reset(), (true, 4, 5, -1));
    let removed: i64 = run(&mut con, &["RATELIMIT.RESET", "oom:spare"]);
    assert_eq!(removed, 1);

    // With eviction allowed, calls work again at the limit: other keys go.
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    );
    let evicted_before = info_field(&mut con, "stats", "evicted_keys");
    for (limiter, args) in &calls {
        limiter.call(&mut con, args);
    }
    let reply = check(&mut con, "oom:new2", 5, 3600, &[]);
    assert_eq!(reply.without_reset(), (true, 4, 5, -1));
    // A megabyte more of plain keys, each making room for itself.
    for i in 0..100 {
        let _: () = run(&mut con, &["SET", &format!("more:{i}"), &value]);
    }
    let reply = throttle(&mut con, "oom:new3", 4, 1, 3600, None);
    assert_eq!(reply.counts(), (false, 5, 4));
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
