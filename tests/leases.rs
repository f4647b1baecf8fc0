//! Concurrency leases: RATELIMIT.ACQUIRE, RELEASE and RENEW against real
//! servers.
//!
//! A lease's deadline is the command's own clock plus `lease_ms`, and the
//! sorted set shows it (`ZSCORE`): a test reads the command's "now" from it
//! exactly, and where a reply's times depend on a "now" it cannot see (a
//! denial), it asserts the relations between them exactly and brackets that
//! "now" with the server's `TIME` read before and after. A test that needs a
//! deadline to pass polls the server's clock until it has; none sleeps in the
//! hope that enough time went by.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::cluster::Cluster;
use common::fallback::{Route, MAX_EXACT};
use common::{
    acquire, all_lease_sets, assert_fires_exactly, assert_replica_took_everything, attach_replicas,
    check, counters, dumped, error, error_of, exists, has_command, lease_id, leases, pexpiretime,
    raw, release, renew, replication_master, reset, run, server_ms, stored_leases, throttle, timed,
    try_run, wait_replicas, wait_until_past, Abilities, DataDir, Lcg, Lease, LeaseAction,
    LeasePool, LeaseStep, LeaseWorkload, Server, StoredLeases, Timed, WRONGTYPE,
};
use redis::{Connection, ConnectionLike, Value};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Whether `id` is what ACQUIRE generates: 32 lowercase hex digits.
fn is_generated_id(id: &[u8]) -> bool {
    id.len() == 32 && id.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The deadline of lease `id` in `key` (`ZSCORE`), which must be there
/// and be a whole number of ms.
fn deadline_of(con: &mut dyn ConnectionLike, key: &str, id: &[u8]) -> i64 {
    let score: Option<f64> = redis::cmd("ZSCORE").arg(key).arg(id).query(con).unwrap();
    let score = score.unwrap_or_else(|| panic!("{key} holds no lease {}", id.escape_ascii()));
    assert!(
        score.fract() == 0.0 && score.abs() < 2f64.powi(53),
        "{key}: the deadline of {} is {score}",
        id.escape_ascii()
    );
    score as i64
}

/// A granted lease's "now": its deadline less `lease_ms`, which must lie
/// between the clock readings around the call.
fn granted_at(con: &mut dyn ConnectionLike, key: &str, t: &Timed<Lease>, lease_ms: i64) -> i64 {
    assert!(t.reply.acquired, "{key}: {:?}", t.reply);
    let now = deadline_of(con, key, t.reply.id()) - lease_ms;
    assert!(
        (t.before..=t.after).contains(&now),
        "{key}: granted at {now}, outside {}..={}",
        t.before,
        t.after
    );
    now
}

/// A denial's "now", from its `reset_after_ms` and the last deadline it
/// saw; it must lie between the clock readings around the call.
fn denied_at(t: &Timed<Lease>, last_deadline: i64) -> i64 {
    assert!(!t.reply.acquired, "{:?}", t.reply);
    let now = last_deadline - t.reply.reset_after_ms;
    assert!(
        (t.before..=t.after).contains(&now),
        "denied at {now}, outside {}..={}: {:?}",
        t.before,
        t.after,
        t.reply
    );
    now
}

/// Asserts a key of leases keeps its expiry at its last deadline.
fn assert_expiry_is_last_deadline(state: &StoredLeases, what: &str) {
    let last = state
        .last_deadline()
        .unwrap_or_else(|| panic!("{what}: no lease in {state:?}"));
    assert_eq!(
        state.expires_at, last,
        "{what}: PEXPIRETIME is not the last deadline"
    );
}

/// Runs a [`LeaseWorkload`], remembering the ids ACQUIRE generated per key
/// so that RELEASE can end them, and every id it was given.
struct LeaseRunner {
    keys: Vec<String>,
    generated: BTreeMap<usize, VecDeque<Vec<u8>>>,
    issued: BTreeSet<Vec<u8>>,
    /// The longest lease taken so far.
    longest_ms: u64,
}

impl LeaseRunner {
    fn new(prefix: &str, keys: usize) -> LeaseRunner {
        LeaseRunner {
            keys: (0..keys).map(|i| format!("{prefix}:{i}")).collect(),
            generated: BTreeMap::new(),
            issued: BTreeSet::new(),
            longest_ms: 0,
        }
    }

    fn step(&mut self, con: &mut dyn ConnectionLike, step: &LeaseStep) {
        let key = &self.keys[step.key];
        match &step.action {
            LeaseAction::Acquire { max, lease_ms, id } => {
                let id = id.map(lease_id);
                let lease = acquire(con, key, *max, *lease_ms, id.as_deref());
                assert_eq!(lease.max, *max as i64, "{lease:?}");
                if lease.acquired {
                    self.longest_ms = self.longest_ms.max(*lease_ms);
                    if id.is_none() {
                        assert!(is_generated_id(lease.id()), "{lease:?}");
                        assert!(
                            self.issued.insert(lease.id().to_vec()),
                            "reissued: {lease:?}"
                        );
                        self.generated
                            .entry(step.key)
                            .or_default()
                            .push_back(lease.id().to_vec());
                    }
                }
            }
            LeaseAction::Release { ids, generated } => {
                let mut ids: Vec<Vec<u8>> = ids.iter().map(|&i| lease_id(i)).collect();
                if *generated {
                    if let Some(id) = self.generated.entry(step.key).or_default().pop_front() {
                        ids.push(id);
                    }
                }
                if ids.is_empty() {
                    return;
                }
                let distinct: BTreeSet<&Vec<u8>> = ids.iter().collect();
                let released = release(con, key, &ids);
                assert!(
                    (0..=distinct.len() as i64).contains(&released),
                    "{key}: released {released} of {ids:?}"
                );
            }
            LeaseAction::Renew { id, lease_ms } => {
                if renew(con, key, &lease_id(*id), *lease_ms) {
                    self.longest_ms = self.longest_ms.max(*lease_ms);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Exact replies
// ---------------------------------------------------------------------------

#[test]
fn acquire_grants_up_to_max_then_denies_with_exact_retry_and_reset() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "pool";

    // a: 60 s, generated id; b: 20 s; c: 40 s. Deadlines b < c < a.
    let t = timed(&mut con, |c| acquire(c, key, 3, 60_000, None));
    let a_id = t.reply.id().to_vec();
    assert!(is_generated_id(&a_id), "{:?}", t.reply);
    assert_eq!(t.reply, Lease::acquired(2, 3, 60_000, &a_id));
    let a = granted_at(&mut con, key, &t, 60_000) + 60_000;
    assert_eq!(pexpiretime(&mut con, key), a);

    let t = timed(&mut con, |c| acquire(c, key, 3, 20_000, Some(b"b")));
    let now = granted_at(&mut con, key, &t, 20_000);
    let b = now + 20_000;
    // The last lease is still a: reset is until a, not until b.
    assert_eq!(t.reply, Lease::acquired(1, 3, a - now, b"b"));

    let t = timed(&mut con, |c| acquire(c, key, 3, 40_000, Some(b"c")));
    let now = granted_at(&mut con, key, &t, 40_000);
    let c = now + 40_000;
    assert_eq!(t.reply, Lease::acquired(0, 3, a - now, b"c"));
    let full = stored_leases(&mut con, key);
    assert_eq!(
        full.leases,
        vec![(b"b".to_vec(), b), (b"c".to_vec(), c), (a_id.clone(), a)]
    );
    assert_eq!(full.expires_at, a);

    // Full: denied, a slot frees when the earliest lease (b) ends.
    let t = timed(&mut con, |c| acquire(c, key, 3, 1_000, Some(b"late")));
    let now = denied_at(&t, a);
    assert_eq!(t.reply, Lease::denied(0, 3, b - now, a - now));
    // The id of a denial is a nil, not an empty string.
    let value = raw(
        &mut con,
        &[b"RATELIMIT.ACQUIRE", key.as_bytes(), b"3", b"1000"],
    )
    .unwrap();
    let Value::Array(items) = &value else {
        panic!("not an array: {value:?}")
    };
    assert_eq!(items.len(), 6, "{value:?}");
    assert_eq!(
        [&items[0], &items[2], &items[5]],
        [&Value::Int(0), &Value::Int(3), &Value::Nil],
        "{value:?}"
    );
    // A denial changes nothing.
    assert_eq!(stored_leases(&mut con, key), full);

    // max lowered to 2 with 3 live: nothing is revoked, and a slot frees
    // once two have ended (fewer than 2 live), at c.
    let t = timed(&mut con, |con| acquire(con, key, 2, 1_000, None));
    let now = denied_at(&t, a);
    assert_eq!(t.reply, Lease::denied(0, 2, c - now, a - now));
    // max 1: once all three have ended, at a.
    let t = timed(&mut con, |con| acquire(con, key, 1, 1_000, None));
    let now = denied_at(&t, a);
    assert_eq!(t.reply, Lease::denied(0, 1, a - now, a - now));
    assert_eq!(stored_leases(&mut con, key), full);

    // max raised to 5: granted, 5 - 4 remaining.
    let t = timed(&mut con, |con| acquire(con, key, 5, 10_000, Some(b"d")));
    let now = granted_at(&mut con, key, &t, 10_000);
    assert_eq!(t.reply, Lease::acquired(1, 5, a - now, b"d"));
    assert_eq!(leases(&mut con, key).len(), 4);
}

#[test]
fn acquire_with_a_live_id_renews_it_without_a_second_slot() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "idem";

    let t = timed(&mut con, |c| acquire(c, key, 2, 30_000, Some(b"job")));
    granted_at(&mut con, key, &t, 30_000);
    assert_eq!(t.reply, Lease::acquired(1, 2, 30_000, b"job"));
    // A retry of the same call (its reply lost, say): the same lease,
    // renewed, still one slot.
    let t = timed(&mut con, |c| acquire(c, key, 2, 45_000, Some(b"job")));
    let now = granted_at(&mut con, key, &t, 45_000);
    assert_eq!(t.reply, Lease::acquired(1, 2, 45_000, b"job"));
    assert_eq!(leases(&mut con, key), vec![(b"job".to_vec(), now + 45_000)]);
    assert_eq!(pexpiretime(&mut con, key), now + 45_000);

    // Full, then renewed by id: acquired, and still only two leases.
    let other = acquire(&mut con, key, 2, 60_000, None);
    assert!(other.acquired && other.remaining == 0, "{other:?}");
    let last = deadline_of(&mut con, key, other.id());
    let t = timed(&mut con, |c| acquire(c, key, 2, 10_000, Some(b"job")));
    let now = granted_at(&mut con, key, &t, 10_000);
    assert_eq!(t.reply, Lease::acquired(0, 2, last - now, b"job"));
    assert_eq!(leases(&mut con, key).len(), 2);

    // Even with max lowered below the live count, a live lease is renewed
    // (never revoked, never refused its renewal).
    let t = timed(&mut con, |c| acquire(c, key, 1, 20_000, Some(b"job")));
    let now = granted_at(&mut con, key, &t, 20_000);
    assert_eq!(t.reply, Lease::acquired(0, 1, last - now, b"job"));
    assert_eq!(leases(&mut con, key).len(), 2);
    // A lease shortened below the other one leaves the key's expiry on the
    // other; one lengthened past it moves the expiry.
    assert_eq!(pexpiretime(&mut con, key), last);
    let t = timed(&mut con, |c| acquire(c, key, 1, 120_000, Some(b"job")));
    let now = granted_at(&mut con, key, &t, 120_000);
    assert_eq!(t.reply, Lease::acquired(0, 1, 120_000, b"job"));
    assert_eq!(pexpiretime(&mut con, key), now + 120_000);
    // A new id is refused a slot meanwhile.
    assert!(!acquire(&mut con, key, 1, 1_000, Some(b"new")).acquired);
}

#[test]
fn acquire_ids_are_binary_safe_and_generated_ones_are_hex() {
    let server = Server::start();
    let mut con = server.connect();

    let binary: [&[u8]; 4] = [
        b"\x00",
        b"\xff\xfe\x00\r\n",
        &[b'x'; 64],
        "zürich".as_bytes(),
    ];
    for id in binary {
        let lease = acquire(&mut con, "bin", 10, 60_000, Some(id));
        assert_eq!(lease.id.as_deref(), Some(id), "{lease:?}");
    }
    let stored: BTreeSet<Vec<u8>> = leases(&mut con, "bin")
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    let given: BTreeSet<Vec<u8>> = binary.iter().map(|i| i.to_vec()).collect();
    assert_eq!(stored, given);
    for id in binary {
        assert!(renew(&mut con, "bin", id, 30_000), "{}", id.escape_ascii());
    }
    assert_eq!(release(&mut con, "bin", &binary), 4);
    assert!(!exists(&mut con, "bin"));

    // Generated ids: 32 lowercase hex digits, 128 random bits, all new.
    let mut seen = BTreeSet::new();
    for _ in 0..1_000 {
        let lease = acquire(&mut con, "gen", 1_000, 60_000, None);
        assert!(is_generated_id(lease.id()), "{lease:?}");
        assert!(seen.insert(lease.id().to_vec()), "reissued: {lease:?}");
    }
    // Not one fixed pattern: every hex digit shows up in every position.
    for position in 0..32 {
        let digits: BTreeSet<u8> = seen.iter().map(|id| id[position]).collect();
        assert_eq!(digits.len(), 16, "position {position}: {digits:?}");
    }
}

#[test]
fn release_and_renew_reply_exactly() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "rr";
    acquire(&mut con, key, 5, 60_000, Some(b"a"));
    acquire(&mut con, key, 5, 30_000, Some(b"b"));
    let a = deadline_of(&mut con, key, b"a");

    // RENEW: 1 for a live lease, its deadline now + lease_ms.
    let t = timed(&mut con, |c| renew(c, key, b"b", 90_000));
    assert!(t.reply);
    let b = deadline_of(&mut con, key, b"b");
    assert!((t.before + 90_000..=t.after + 90_000).contains(&b), "{b}");
    assert_eq!(
        pexpiretime(&mut con, key),
        b,
        "the key expires with its last lease"
    );
    // Shortened again: the expiry goes back to a.
    assert!(renew(&mut con, key, b"b", 1_000));
    assert_eq!(pexpiretime(&mut con, key), a);
    // 0 for an unknown lease, and nothing changes.
    let before = stored_leases(&mut con, key);
    assert!(!renew(&mut con, key, b"nobody", 90_000));
    assert_eq!(stored_leases(&mut con, key), before);
    assert!(!renew(&mut con, "missing", b"a", 90_000));
    assert!(!exists(&mut con, "missing"));

    // RELEASE: how many were live; unknown ids and repeats count nothing.
    assert_eq!(release(&mut con, key, &["zz", "a", "a", "yy"]), 1);
    assert_eq!(release(&mut con, key, &["a"]), 0);
    assert_eq!(release(&mut con, "missing", &["a", "b"]), 0);
    assert!(!exists(&mut con, "missing"));
    assert_eq!(ids(&mut con, key), vec![b"b".to_vec()]);
    // A released lease can't be renewed: its slot may be someone else's.
    assert!(!renew(&mut con, key, b"a", 60_000));
    // The last one released: the key is gone at once.
    assert_eq!(release(&mut con, key, &["b"]), 1);
    assert!(!exists(&mut con, key));
    assert_eq!(pexpiretime(&mut con, key), -2);
}

/// The ids in `key`, earliest deadline first.
fn ids(con: &mut dyn ConnectionLike, key: &str) -> Vec<Vec<u8>> {
    run(con, &["ZRANGE", key, "0", "-1"])
}

// ---------------------------------------------------------------------------
// 2. Expiry
// ---------------------------------------------------------------------------

#[test]
fn leases_a_crashed_holders_slot_comes_back_after_lease_ms() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "crash";
    let lease_ms = 1_500;
    let expired_before = counters(&mut con)["leases_expired"];

    // Two slots: a steady holder for a minute, and one that takes the other
    // slot and crashes: it never releases.
    assert!(acquire(&mut con, key, 2, 60_000, Some(b"steady")).acquired);
    let steady = deadline_of(&mut con, key, b"steady");
    let held = acquire(&mut con, key, 2, lease_ms, Some(b"crashed"));
    assert!(held.acquired, "{held:?}");
    let deadline = deadline_of(&mut con, key, b"crashed");
    let state = stored_leases(&mut con, key);
    assert_eq!(
        state.leases,
        vec![
            (b"crashed".to_vec(), deadline),
            (b"steady".to_vec(), steady)
        ]
    );
    assert_expiry_is_last_deadline(&state, "held");

    // Meanwhile everyone else is denied, and told when the slot frees.
    let t = timed(&mut con, |c| acquire(c, key, 2, lease_ms, Some(b"next")));
    assert!(
        t.after < deadline,
        "the machine took over {lease_ms} ms between two calls"
    );
    let now = denied_at(&t, steady);
    assert_eq!(t.reply, Lease::denied(0, 2, deadline - now, steady - now));

    // Once the server's clock is past the deadline, the slot is back: the
    // crashed lease is pruned and its slot granted.
    wait_until_past(&mut con, deadline);
    let t = timed(&mut con, |c| acquire(c, key, 2, 30_000, Some(b"next")));
    let now = granted_at(&mut con, key, &t, 30_000);
    assert!(now >= deadline, "granted at {now}, before {deadline}");
    assert_eq!(t.reply, Lease::acquired(0, 2, steady - now, b"next"));
    let state = stored_leases(&mut con, key);
    assert_eq!(
        state.leases,
        vec![
            (b"next".to_vec(), now + 30_000),
            (b"steady".to_vec(), steady)
        ]
    );
    assert_expiry_is_last_deadline(&state, "after the crash");
    assert_eq!(counters(&mut con)["leases_expired"], expired_before + 1);
    // The crashed holder's lease is gone for good.
    assert!(!renew(&mut con, key, b"crashed", 60_000));
    assert_eq!(release(&mut con, key, &["crashed"]), 0);

    // A lone crashed lease: the key itself expires with it (so no lease is
    // pruned: nothing is left to prune), and the next holder starts afresh.
    let alone = "crash:alone";
    assert!(acquire(&mut con, alone, 1, 300, Some(b"crashed")).acquired);
    let deadline = deadline_of(&mut con, alone, b"crashed");
    assert_eq!(pexpiretime(&mut con, alone), deadline);
    wait_until_past(&mut con, deadline);
    assert!(!exists(&mut con, alone));
    let expired = counters(&mut con)["leases_expired"];
    let lease = acquire(&mut con, alone, 1, 300, None);
    assert_eq!(lease.counts(), (true, 0, 1));
    assert_eq!(counters(&mut con)["leases_expired"], expired);
}

#[test]
fn leases_end_by_themselves_and_the_key_with_the_last() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "ends";

    // Three short leases and their deadlines.
    for (id, ms) in [("s1", 200), ("s2", 400), ("s3", 300)] {
        assert!(acquire(&mut con, key, 5, ms, Some(id.as_bytes())).acquired);
    }
    let state = stored_leases(&mut con, key);
    let ids: Vec<&[u8]> = state.leases.iter().map(|(i, _)| i.as_slice()).collect();
    assert_eq!(ids, [b"s1", b"s3", b"s2"], "ZRANGE orders by deadline");
    assert_expiry_is_last_deadline(&state, "three leases");
    let s1 = state.leases[0].1;
    let s2 = state.leases[2].1;

    // Past s1: a call prunes it (RELEASE of nothing, here) and the reply
    // counts only live leases.
    wait_until_past(&mut con, s1);
    let expired = counters(&mut con)["leases_expired"];
    assert_eq!(
        release(&mut con, key, &["s1"]),
        0,
        "an ended lease is not released"
    );
    assert_eq!(counters(&mut con)["leases_expired"], expired + 1);
    let state = stored_leases(&mut con, key);
    assert_eq!(state.leases.len(), 2, "{state:?}");
    assert_expiry_is_last_deadline(&state, "s1 pruned");

    // Past the last deadline the key is gone, with no call: it expires.
    wait_until_past(&mut con, s2);
    assert!(!exists(&mut con, key));
    assert_eq!(pexpiretime(&mut con, key), -2);
    let fresh = acquire(&mut con, key, 1, 60_000, None);
    assert_eq!(fresh.counts(), (true, 0, 1));
    assert_eq!(leases(&mut con, key).len(), 1);
}

#[test]
fn leases_the_key_expires_with_its_last_lease_through_every_change() {
    // The module knows the last deadline from the key's expiry while it
    // only grows; each change below can move it the other way.
    let server = Server::start();
    let mut con = server.connect();
    let key = "last";
    for (id, ms) in [("a", 60_000), ("b", 90_000), ("c", 30_000)] {
        assert!(acquire(&mut con, key, 5, ms, Some(id.as_bytes())).acquired);
        assert_expiry_is_last_deadline(&stored_leases(&mut con, key), id);
    }
    // A lease shorter than the last leaves the expiry where it is.
    assert!(acquire(&mut con, key, 5, 10_000, Some(b"d")).acquired);
    assert_expiry_is_last_deadline(&stored_leases(&mut con, key), "d, shorter");
    // The last lease released: the expiry moves back to a's.
    assert_eq!(release(&mut con, key, &["b"]), 1);
    assert_expiry_is_last_deadline(&stored_leases(&mut con, key), "b released");
    // The last lease renewed shorter: back to the next one.
    assert!(renew(&mut con, key, b"a", 5_000));
    assert_expiry_is_last_deadline(&stored_leases(&mut con, key), "a renewed shorter");
    // ACQUIRE of a live id, shorter: the same.
    assert!(acquire(&mut con, key, 5, 1_000, Some(b"c")).acquired);
    assert_expiry_is_last_deadline(&stored_leases(&mut con, key), "c renewed shorter");
    // A member added by hand beyond the expiry is seen, and kept.
    let far = server_ms(&mut con) + 3_600_000;
    let added: i64 = run(&mut con, &["ZADD", key, &far.to_string(), "by-hand"]);
    assert_eq!(added, 1);
    assert!(acquire(&mut con, key, 5, 1_000, Some(b"e")).acquired);
    assert_expiry_is_last_deadline(&stored_leases(&mut con, key), "a member by hand");
    assert_eq!(pexpiretime(&mut con, key), far);
}

#[test]
fn renew_keeps_a_lease_past_its_first_deadline_and_refuses_an_ended_one() {
    let server = Server::start();
    let mut con = server.connect();
    let key = "keep";
    acquire(&mut con, key, 1, 300, Some(b"worker"));
    let first = deadline_of(&mut con, key, b"worker");
    assert!(renew(&mut con, key, b"worker", 60_000));
    wait_until_past(&mut con, first);
    // Still live past its first deadline: the slot is still taken.
    let state = stored_leases(&mut con, key);
    assert_eq!(state.ids(), vec![b"worker".to_vec()]);
    assert!(!acquire(&mut con, key, 1, 300, Some(b"other")).acquired);

    // Shortened, then ended: RENEW says 0 and the holder must acquire again.
    assert!(renew(&mut con, key, b"worker", 200));
    let end = deadline_of(&mut con, key, b"worker");
    assert_eq!(pexpiretime(&mut con, key), end);
    wait_until_past(&mut con, end);
    assert!(!renew(&mut con, key, b"worker", 60_000));
    assert!(!exists(&mut con, key));
}

/// The latest instant a key can expire at: Redis keeps expiries as signed
/// 64-bit ms.
const NEVER_MS: i64 = i64::MAX;

/// Asserts `key` expires at [`NEVER_MS`]. Without PEXPIRETIME (Redis 6.2)
/// the kit reads the expiry through a script, whose numbers are doubles:
/// there PTTL, read directly, must be NEVER_MS less the server's clock.
fn assert_expires_never(con: &mut dyn ConnectionLike, key: &str, what: &str) {
    if has_command(con, "PEXPIRETIME") {
        assert_eq!(pexpiretime(con, key), NEVER_MS, "{what}");
        return;
    }
    let before = server_ms(con);
    let ttl: i64 = run(con, &["PTTL", key]);
    let after = server_ms(con);
    assert!(
        (before..=after).contains(&(NEVER_MS - ttl)),
        "{what}: PTTL {ttl} between {before} and {after}"
    );
}

/// Where a lease test sends its calls: the module, or the fallback library
/// with `NOW` pinned to the server's clock (its "now" is then known
/// exactly). Each has its own keys.
enum Backend {
    Module,
    Fallback(Route),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Module => "module",
            Backend::Fallback(_) => "fallback",
        }
    }

    /// `key` as this backend's own key.
    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.name())
    }

    fn acquire(
        &self,
        con: &mut Connection,
        key: &str,
        max: u64,
        lease_ms: u64,
        id: Option<&[u8]>,
    ) -> Timed<Lease> {
        match self {
            Backend::Module => timed(con, |c| acquire(c, key, max, lease_ms, id)),
            Backend::Fallback(route) => {
                let now = server_ms(con);
                let mut args = vec![
                    max.to_string().into_bytes(),
                    lease_ms.to_string().into_bytes(),
                ];
                if let Some(id) = id {
                    args.extend([b"ID".to_vec(), id.to_vec()]);
                }
                args.extend([b"NOW".to_vec(), now.to_string().into_bytes()]);
                let reply: Lease = route
                    .cmd("acquire", &[key.as_bytes().to_vec()], &args)
                    .query(con)
                    .unwrap_or_else(|e| panic!("fallback ACQUIRE {key}: {e}"));
                Timed {
                    reply,
                    before: now,
                    after: now,
                }
            }
        }
    }

    fn release(&self, con: &mut Connection, key: &str, ids: &[&str]) -> i64 {
        match self {
            Backend::Module => release(con, key, ids),
            Backend::Fallback(route) => {
                let now = server_ms(con).to_string();
                let mut args = ids.to_vec();
                args.extend(["NOW", &now]);
                let released = route
                    .call(con, "release", &[key], &args)
                    .unwrap_or_else(|e| panic!("fallback RELEASE {key}: {e}"));
                redis::from_redis_value(released).unwrap()
            }
        }
    }

    /// The error of `RATELIMIT.<verb> key args…` (the fallback's without a
    /// clock pair, then with one).
    fn errors(&self, con: &mut Connection, verb: &str, key: &str, args: &[&str]) -> Vec<String> {
        let text = |result: redis::RedisResult<Value>| match result {
            Ok(reply) => format!("no error but {reply:?}"),
            Err(_) => error_of(result),
        };
        match self {
            Backend::Module => {
                let mut call = vec![format!("RATELIMIT.{verb}"), key.to_string()];
                call.extend(args.iter().map(|a| a.to_string()));
                vec![text(try_run(con, &call))]
            }
            Backend::Fallback(route) => {
                let verb = verb.to_lowercase();
                let now = server_ms(con).to_string();
                let mut pinned = args.to_vec();
                pinned.extend(["NOW", &now]);
                vec![
                    text(route.call(con, &verb, &[key], args)),
                    text(route.call(con, &verb, &[key], &pinned)),
                ]
            }
        }
    }
}

/// Sets lease `id` of `key` to have ended a second ago (as if its holder
/// had crashed that long since), without touching the key's expiry.
fn end_lease(con: &mut Connection, key: &str, id: &str) {
    let ended = (server_ms(con) - 1_000).to_string();
    let changed: i64 = run(con, &["ZADD", key, "XX", "CH", &ended, id]);
    assert_eq!(changed, 1, "{key} holds no lease {id}");
}

#[test]
fn leases_a_slot_held_by_hand_until_released_keeps_the_key_and_its_leases() {
    // The set is a plain sorted set, so an operator can hold a slot by hand
    // with a member that never ends: `ZADD pool +inf maintenance`. Such a
    // member used to read as a deadline of 0, so the next grant set the
    // key's expiry to 0 and deleted the whole set, the lease it had just
    // acknowledged included; a score between 2^63 and 10^19 made the grant
    // fail after it had changed the set. The fallback deleted the set on
    // the next ACQUIRE, RELEASE or RENEW, and replied waits past 2^53 that
    // a double cannot hold. Every score from 2^63 up, +inf included, is a
    // slot held until released: the key expires at 2^63 - 1, and a wait
    // until then is replied as 2^53 - 1.
    let master = replication_master(Server::builder());
    let replicas = attach_replicas(&master, vec![Server::builder()]);
    let mut con = master.connect();
    let mut rcon = replicas[0].connect();
    let route = Route::for_server(&mut con);
    for backend in [Backend::Module, Backend::Fallback(route)] {
        let who = backend.name();
        for (name, score) in [
            ("inf", "+inf"),
            ("2^63", "9223372036854775808"),
            ("9.5e18", "9.5e18"),
        ] {
            let key = &backend.key(&format!("pool:{name}"));
            assert!(
                backend
                    .acquire(&mut con, key, 3, 60_000, Some(b"a"))
                    .reply
                    .acquired
            );
            let added: i64 = run(&mut con, &["ZADD", key, score, "maintenance"]);
            assert_eq!(added, 1);

            // Granted beside it; the set now lasts until released.
            let t = backend.acquire(&mut con, key, 3, 30_000, Some(b"b"));
            assert!(
                exists(&mut con, key),
                "{who} {key}: the grant deleted the set: {:?}",
                t.reply
            );
            let now = granted_at(&mut con, key, &t, 30_000);
            let b = now + 30_000;
            assert_eq!(
                t.reply,
                Lease::acquired(0, 3, MAX_EXACT, b"b"),
                "{who} {key}"
            );
            assert_eq!(
                ids(&mut con, key),
                [b"b".to_vec(), b"a".to_vec(), b"maintenance".to_vec()],
                "{who} {key}"
            );
            assert_expires_never(&mut con, key, &format!("{who} {key}"));
            // A replica takes the same expiry.
            wait_replicas(&mut con, 1);
            assert_expires_never(&mut rcon, key, &format!("{who} {key} on the replica"));
            assert_eq!(
                ids(&mut rcon, key),
                ids(&mut con, key),
                "{who} {key} on the replica"
            );

            // Full: the first slot frees when b ends; with max 1 (3 live),
            // never by itself.
            let t = backend.acquire(&mut con, key, 3, 1_000, None);
            assert_eq!(
                (t.reply.counts(), t.reply.reset_after_ms),
                ((false, 0, 3), MAX_EXACT),
                "{who} {key}: {:?}",
                t.reply
            );
            assert!(
                (b - t.after..=b - t.before).contains(&t.reply.retry_after_ms),
                "{who} {key}: {:?}, b ends at {b}, asked from {} to {}",
                t.reply,
                t.before,
                t.after
            );
            let t = backend.acquire(&mut con, key, 1, 1_000, None);
            assert_eq!(
                t.reply,
                Lease::denied(0, 1, MAX_EXACT, MAX_EXACT),
                "{who} {key}"
            );

            // RELEASE of another lease, and one that prunes an ended lease,
            // keep the key and its held slot.
            assert_eq!(backend.release(&mut con, key, &["b"]), 1, "{who} {key}");
            assert_expires_never(&mut con, key, &format!("{who} {key} after RELEASE"));
            end_lease(&mut con, key, "a");
            assert_eq!(
                backend.release(&mut con, key, &["nobody"]),
                0,
                "{who} {key}"
            );
            assert_eq!(ids(&mut con, key), [b"maintenance".to_vec()], "{who} {key}");
            assert_expires_never(&mut con, key, &format!("{who} {key} after pruning"));

            // Released, the key expires with its last lease again.
            let t = backend.acquire(&mut con, key, 3, 40_000, Some(b"c"));
            let c = granted_at(&mut con, key, &t, 40_000) + 40_000;
            assert_eq!(backend.release(&mut con, key, &["maintenance"]), 1);
            assert_eq!(pexpiretime(&mut con, key), c, "{who} {key}");
            assert_eq!(ids(&mut con, key), [b"c".to_vec()], "{who} {key}");
        }

        // A set made by hand without a TTL, holding only such a slot: a
        // grant gives it the expiry of a set held until released.
        let key = &backend.key("pool:bare");
        let _: i64 = run(&mut con, &["ZADD", key, "+inf", "maintenance"]);
        let t = backend.acquire(&mut con, key, 2, 10_000, Some(b"x"));
        assert_eq!(t.reply, Lease::acquired(0, 2, MAX_EXACT, b"x"), "{who}");
        assert_expires_never(&mut con, key, &format!("{who} {key}"));
    }
}

#[test]
fn leases_refuse_now_as_an_id_in_any_case_in_the_module_and_the_fallback() {
    // The fallback reads a trailing `NOW unix_ms` as its clock, so a lease
    // named NOW could not be released through it the way the module
    // releases it (`RELEASE k job NOW 5` would release job at instant 5):
    // neither takes NOW as an id, in any case, and both say so alike.
    let server = Server::start();
    let mut con = server.connect();
    let route = Route::for_server(&mut con);
    let refused = "ERR id must be 1 to 64 bytes and not NOW";
    for backend in [Backend::Module, Backend::Fallback(route)] {
        let who = backend.name();
        let key = &backend.key("k");
        assert!(
            backend
                .acquire(&mut con, key, 5, 60_000, Some(b"held"))
                .reply
                .acquired
        );
        let before = stored_leases(&mut con, key);
        let cases: [(&str, &[&str]); 10] = [
            ("ACQUIRE", &["5", "1000", "ID", "NOW"]),
            ("ACQUIRE", &["5", "1000", "ID", "now"]),
            ("ACQUIRE", &["5", "1000", "id", "Now"]),
            ("ACQUIRE", &["5", "1000", "ID", "nOw"]),
            ("RELEASE", &["NOW"]),
            ("RELEASE", &["now"]),
            // One such id among good ones: nothing is released.
            ("RELEASE", &["held", "NoW"]),
            ("RELEASE", &["NOW", "5"]),
            ("RENEW", &["NOW", "1000"]),
            ("RENEW", &["now", "1000"]),
        ];
        for (verb, args) in cases {
            for error in backend.errors(&mut con, verb, key, args) {
                assert_eq!(error, refused, "{who}: {verb} {args:?}");
            }
        }
        assert_eq!(
            stored_leases(&mut con, key),
            before,
            "{who}: a refused call changed the leases"
        );
        // Ids that merely contain it, or other keywords, are ids.
        for id in ["NOWHERE", "LIMIT", "ID", "now!"] {
            let t = backend.acquire(&mut con, key, 5, 60_000, Some(id.as_bytes()));
            assert!(t.reply.acquired, "{who}: {id}: {:?}", t.reply);
            assert_eq!(backend.release(&mut con, key, &[id]), 1, "{who}: {id}");
        }
    }
}

#[test]
fn leases_a_set_emptied_by_pruning_keeps_an_expiry_on_the_master_and_a_replica() {
    // A set whose leases have all ended, under a TTL that happens to be the
    // new lease's deadline: pruning empties the set, and the server deletes
    // it, TTL and all; the new lease makes a new set. The module judged the
    // expiry by the one it had read when it opened the key, found it equal
    // to the new deadline and set none: the set then never expired (PTTL
    // -1), on the master and on its replicas. A script makes the case at
    // one instant: the module's clock is the script's TIME there (a
    // millisecond later now and then, which sets the expiry anyway: those
    // tries are retried).
    let master = replication_master(Server::builder());
    let replicas = attach_replicas(&master, vec![Server::builder()]);
    let mut con = master.connect();
    let mut rcon = replicas[0].connect();
    let script = "local t = redis.call('TIME') \
                  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
                  redis.call('ZADD', KEYS[1], string.format('%d', now - 5000), 'old') \
                  redis.call('PEXPIREAT', KEYS[1], string.format('%d', now + 3000)) \
                  local granted = redis.call('RATELIMIT.ACQUIRE', KEYS[1], 5, 3000, 'ID', 'new') \
                  return {now, granted[1], redis.call('PTTL', KEYS[1]), \
                          redis.call('ZSCORE', KEYS[1], 'new')}";
    let mut cases = Vec::new();
    for attempt in 0..200 {
        let key = format!("emptied:{attempt}");
        let (now, granted, pttl, deadline): (i64, i64, i64, i64) = redis::cmd("EVAL")
            .arg(script)
            .arg(1)
            .arg(&key)
            .query(&mut con)
            .unwrap();
        assert_eq!(granted, 1, "{key}");
        assert!(
            pttl > 0,
            "{key}: PTTL {pttl} after the grant (deadline {deadline})"
        );
        assert_eq!(pexpiretime(&mut con, &key), deadline, "{key}");
        if deadline == now + 3000 {
            cases.push(key);
            if cases.len() == 5 {
                break;
            }
        }
    }
    assert!(
        !cases.is_empty(),
        "the module's clock was never the script's"
    );

    // The fallback, at a pinned instant, in one transaction.
    let route = Route::for_server(&mut con);
    let now = server_ms(&mut con);
    let key = "emptied:fallback";
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("ZADD")
        .arg(key)
        .arg(now - 5000)
        .arg("old")
        .ignore()
        .cmd("PEXPIREAT")
        .arg(key)
        .arg(now + 3000)
        .ignore()
        .add_command(route.cmd(
            "acquire",
            &[key.as_bytes().to_vec()],
            &[
                b"5".to_vec(),
                b"3000".to_vec(),
                b"ID".to_vec(),
                b"new".to_vec(),
                b"NOW".to_vec(),
                now.to_string().into_bytes(),
            ],
        ))
        .ignore()
        .cmd("PTTL")
        .arg(key);
    let (pttl,): (i64,) = pipe.query(&mut con).unwrap();
    assert!(pttl > 0, "fallback: PTTL {pttl}");
    assert_eq!(pexpiretime(&mut con, key), now + 3000, "fallback");
    cases.push(key.to_string());

    wait_replicas(&mut con, 1);
    for key in &cases {
        let on_master = stored_leases(&mut con, key.as_str());
        assert_eq!(on_master.leases.len(), 1, "{key}: {on_master:?}");
        assert_eq!(
            on_master.expires_at,
            on_master.last_deadline().unwrap(),
            "{key}"
        );
        assert_eq!(
            stored_leases(&mut rcon, key.as_str()),
            on_master,
            "{key} on the replica"
        );
    }
}

// ---------------------------------------------------------------------------
// 3. Concurrency
// ---------------------------------------------------------------------------

/// One call of the concurrency test, as the server ordered it (`seq`, an
/// INCR in the same transaction).
#[derive(Debug, Clone)]
enum Event {
    /// Granted until `deadline`, which the transaction read (ZSCORE).
    Grant {
        seq: i64,
        id: String,
        deadline: i64,
        lease_ms: i64,
    },
    /// Denied; the server's clock read before the transaction began.
    Deny { seq: i64, before: i64 },
    /// RELEASE of `id`, replying `released`; clock readings before the
    /// transaction and after the command within it.
    Release {
        seq: i64,
        id: String,
        released: bool,
        before: i64,
        after: i64,
    },
}

impl Event {
    fn seq(&self) -> i64 {
        match self {
            Event::Grant { seq, .. } | Event::Deny { seq, .. } | Event::Release { seq, .. } => *seq,
        }
    }
}

/// One client of the concurrency test: `rounds` tries to take a lease,
/// holding a granted one for 0 to 2 ms and releasing it; one time in 20
/// crashing with it (never releasing a lease of 10 to 40 ms), and one time in
/// 20 overrunning it (releasing a lease of 3 ms after 4 to 7 ms). A denied
/// one tries again 0.5 to 2.5 ms later.
fn lease_client(
    con: &mut Connection,
    key: &str,
    max: u64,
    client: usize,
    rounds: usize,
) -> Vec<Event> {
    let mut rng = Lcg::new(client as u64 + 1);
    let mut events = Vec::new();
    for round in 0..rounds {
        let id = format!("c{client}-{round}");
        // 0: crashes; 1: overruns its lease of 3 ms, releasing it late.
        let fate = rng.below(20);
        let crash = fate == 0;
        let (lease_ms, hold_us): (i64, u64) = match fate {
            0 => (10 + rng.below(30) as i64, 0),
            1 => (3, 4_000 + 1_000 * rng.below(4)),
            _ => (2_000, 1_000 * rng.below(3)),
        };
        let before = server_ms(con);
        let (lease, score, seq): (Lease, Option<i64>, i64) = redis::pipe()
            .atomic()
            .cmd("RATELIMIT.ACQUIRE")
            .arg(key)
            .arg(max)
            .arg(lease_ms)
            .arg("ID")
            .arg(&id)
            .cmd("ZSCORE")
            .arg(key)
            .arg(&id)
            .cmd("INCR")
            .arg("seq")
            .query(con)
            .unwrap();
        if !lease.acquired {
            assert_eq!(score, None);
            events.push(Event::Deny { seq, before });
            thread::sleep(Duration::from_micros(500 + 500 * rng.below(5)));
            continue;
        }
        assert_eq!(lease.id.as_deref(), Some(id.as_bytes()));
        events.push(Event::Grant {
            seq,
            id: id.clone(),
            deadline: score.expect("a granted lease has a deadline"),
            lease_ms,
        });
        if crash {
            continue;
        }
        thread::sleep(Duration::from_micros(hold_us));
        let before = server_ms(con);
        let (released, seq, (after_s, after_us)): (i64, i64, (i64, i64)) = redis::pipe()
            .atomic()
            .cmd("RATELIMIT.RELEASE")
            .arg(key)
            .arg(&id)
            .cmd("INCR")
            .arg("seq")
            .cmd("TIME")
            .query(con)
            .unwrap();
        events.push(Event::Release {
            seq,
            id,
            released: released == 1,
            before,
            after: after_s * 1000 + after_us / 1000,
        });
    }
    events
}

#[test]
fn leases_never_more_than_max_held_under_32_concurrent_clients() {
    const CLIENTS: usize = 32;
    const ROUNDS: usize = 300;
    const MAX: u64 = 6;
    let server = Server::start();
    let key = "hot";
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let mut con = server.connect();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                lease_client(&mut con, key, MAX, client, ROUNDS)
            })
        })
        .collect();
    let mut events: Vec<Event> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("a client panicked"))
        .collect();
    events.sort_by_key(Event::seq);
    let seqs: Vec<i64> = events.iter().map(Event::seq).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as i64).collect::<Vec<_>>(),
        "one INCR per call"
    );

    // Replay in the server's order. `held`: every lease granted and not
    // released, by id, with its deadline; live at t if its deadline is
    // later than t.
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    let live_at = |held: &BTreeMap<String, i64>, t: i64| held.values().filter(|&&d| d > t).count();
    let (mut grants, mut denials, mut full_grants, mut expired_releases) = (0, 0, 0, 0);
    let mut last_grant_at = i64::MIN;
    for event in &events {
        match event {
            Event::Grant {
                id,
                deadline,
                lease_ms,
                ..
            } => {
                let now = deadline - lease_ms;
                assert!(
                    now >= last_grant_at,
                    "the server's clock went back: {event:?}"
                );
                last_grant_at = now;
                let live = live_at(&held, now);
                assert!(
                    live < MAX as usize,
                    "{event:?}: granted with {live} leases live: {held:?}"
                );
                if live + 1 == MAX as usize {
                    full_grants += 1;
                }
                held.insert(id.clone(), *deadline);
                grants += 1;
            }
            Event::Deny { before, .. } => {
                // Denied at some "now" at or after `before`: at least MAX
                // were live then, so at least MAX at `before`.
                let live = live_at(&held, *before);
                assert!(
                    live >= MAX as usize,
                    "{event:?}: denied with {live} live: {held:?}"
                );
                denials += 1;
            }
            Event::Release {
                id,
                released,
                before,
                after,
                ..
            } => {
                let deadline = held.remove(id).expect("released a lease never granted");
                if *released {
                    assert!(
                        deadline > *before,
                        "{event:?}: released a lease ended at {deadline}"
                    );
                } else {
                    assert!(
                        deadline <= *after,
                        "{event:?}: a live lease (to {deadline}) not released"
                    );
                    expired_releases += 1;
                }
            }
        }
    }
    // Not vacuous: the pool was full often, and calls were denied.
    assert!(
        full_grants > 10 && denials > 100 && expired_releases > 10,
        "{full_grants} full, {denials} denied, {expired_releases} released late"
    );
    let mut con = server.connect();
    let c = counters(&mut con);
    assert_eq!(
        (c["leases_acquired"], c["leases_denied"], c["acquire_calls"]),
        (grants, denials, grants + denials)
    );
    assert!(
        c["leases_expired"] > 0,
        "no crashed lease ever ended: {c:?}"
    );
    eprintln!(
        "{grants} grants ({full_grants} filling the pool), {denials} denials, {} releases of ended leases, {} leases pruned",
        expired_releases, c["leases_expired"]
    );
}

// ---------------------------------------------------------------------------
// 4. Generated ids are never reissued
// ---------------------------------------------------------------------------

/// Takes `count` leases with generated ids on `key` in pipelines of 1,000
/// (each batch released in one RELEASE when `release_each_batch`); returns
/// the ids, each checked for shape.
fn generated_ids(
    con: &mut Connection,
    key: &str,
    count: usize,
    release_each_batch: bool,
) -> Vec<Vec<u8>> {
    const BATCH: usize = 1_000;
    let mut all = Vec::with_capacity(count);
    for _ in 0..count.div_ceil(BATCH) {
        let mut pipe = redis::pipe();
        for _ in 0..BATCH {
            pipe.cmd("RATELIMIT.ACQUIRE")
                .arg(key)
                .arg(100_000)
                .arg(600_000);
        }
        let replies: Vec<Lease> = pipe.query(con).unwrap();
        let ids: Vec<Vec<u8>> = replies
            .into_iter()
            .map(|l| {
                assert!(l.acquired && is_generated_id(l.id()), "{l:?}");
                l.id.unwrap()
            })
            .collect();
        if release_each_batch {
            assert_eq!(release(con, key, &ids), BATCH as i64);
        }
        all.extend(ids);
    }
    all
}

/// Asserts `ids` are all distinct, and none of them is in `earlier`.
fn assert_all_new(ids: &[Vec<u8>], earlier: &BTreeSet<Vec<u8>>, what: &str) -> BTreeSet<Vec<u8>> {
    let set: BTreeSet<Vec<u8>> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "{what}: an id was issued twice");
    let again: Vec<_> = set.intersection(earlier).collect();
    assert!(again.is_empty(), "{what}: reissued {again:?}");
    set
}

#[test]
fn leases_generated_ids_are_unique_over_100000_grants() {
    let server = Server::start();
    let mut con = server.connect();
    let ids = generated_ids(&mut con, "many", 100_000, true);
    assert_all_new(&ids, &BTreeSet::new(), "100,000 grants");
    assert!(!exists(&mut con, "many"), "every batch was released");
    assert_eq!(counters(&mut con)["leases_released"], 100_000);
}

#[test]
fn leases_generated_ids_are_not_reissued_after_an_aof_restart() {
    let data = DataDir::new();
    let server = data.aof().start();
    let mut con = server.connect();
    let before = generated_ids(&mut con, "ids", 5_000, false);
    let before = assert_all_new(&before, &BTreeSet::new(), "before the restart");
    let state = stored_leases(&mut con, "ids");
    assert_eq!(state.leases.len(), 5_000);
    server.kill();

    let server = data.aof().start();
    let mut con = server.connect();
    assert_eq!(
        stored_leases(&mut con, "ids"),
        state,
        "the leases after the restart"
    );
    let after = generated_ids(&mut con, "ids", 5_000, false);
    assert_all_new(&after, &before, "after the restart");
    assert_eq!(leases(&mut con, "ids").len(), 10_000);
}

#[test]
fn leases_generated_ids_are_not_reissued_after_a_replica_is_promoted() {
    let master = replication_master(Server::builder());
    let replicas = attach_replicas(&master, vec![Server::builder()]);
    let mut con = master.connect();
    let before = generated_ids(&mut con, "ids", 5_000, false);
    let before = assert_all_new(&before, &BTreeSet::new(), "on the master");
    wait_replicas(&mut con, 1);
    let state = stored_leases(&mut con, "ids");
    drop(master);

    let mut rcon = replicas[0].connect();
    let _: () = run(&mut rcon, &["REPLICAOF", "NO", "ONE"]);
    assert_eq!(
        stored_leases(&mut rcon, "ids"),
        state,
        "the promoted replica's leases"
    );
    let after = generated_ids(&mut rcon, "ids", 5_000, false);
    assert_all_new(&after, &before, "on the promoted replica");
}

// ---------------------------------------------------------------------------
// 5. Replication, AOF and RDB
// ---------------------------------------------------------------------------

/// The commands the AOF logged while `call` ran, as text, without SELECT.
/// Redis 6.2 wraps even a single effect of a module command in MULTI/EXEC,
/// later servers only several: one effect is given unwrapped.
fn effects<T>(
    data: &DataDir,
    con: &mut Connection,
    call: impl FnOnce(&mut Connection) -> T,
) -> (T, Vec<String>) {
    let before = data.aof_commands().len();
    let out = call(con);
    let logged = data.aof_commands();
    let mut effects: Vec<String> = logged[before..]
        .iter()
        .map(|args| {
            args.iter()
                .map(|a| a.escape_ascii().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|c| !c.starts_with("SELECT "))
        .collect();
    if effects.len() == 3 && effects[0] == "MULTI" && effects[2] == "EXEC" {
        effects = vec![effects.remove(1)];
    }
    (out, effects)
}

#[test]
fn leases_propagate_exact_effects_with_absolute_times() {
    let data = DataDir::new();
    let server = data.aof().start();
    let mut con = server.connect();
    let k = "fx";

    let (lease, fx) = effects(&data, &mut con, |c| acquire(c, k, 2, 60_000, Some(b"a")));
    assert!(lease.acquired);
    let a = deadline_of(&mut con, k, b"a");
    assert_eq!(
        fx,
        [
            "MULTI".to_string(),
            format!("ZADD fx {a} a"),
            format!("PEXPIREAT fx {a}"),
            "EXEC".into()
        ]
    );
    // An earlier deadline leaves the expiry: one effect, no transaction.
    let (_, fx) = effects(&data, &mut con, |c| {
        acquire(c, k, 2, 30_000, Some(b"b\x00"))
    });
    let b = deadline_of(&mut con, k, b"b\x00");
    assert_eq!(fx, [format!("ZADD fx {b} b\\x00")]);

    // What changes nothing propagates nothing.
    let (_, fx) = effects(&data, &mut con, |c| {
        assert!(!acquire(c, k, 2, 1_000, None).acquired, "a denial");
        assert!(!renew(c, k, b"zz", 1_000), "a RENEW of an unknown id");
        assert_eq!(release(c, k, &["zz"]), 0, "a RELEASE of an unknown id");
        assert_eq!(release(c, "none", &["a"]), 0, "a RELEASE on a missing key");
    });
    assert!(
        fx.is_empty(),
        "calls that changed nothing propagated {fx:?}"
    );

    // A renewal by ACQUIRE and by RENEW: the new deadline, the new expiry.
    let (_, fx) = effects(&data, &mut con, |c| acquire(c, k, 2, 90_000, Some(b"a")));
    let a = deadline_of(&mut con, k, b"a");
    assert_eq!(
        fx,
        [
            "MULTI".to_string(),
            format!("ZADD fx {a} a"),
            format!("PEXPIREAT fx {a}"),
            "EXEC".into()
        ]
    );
    let (_, fx) = effects(&data, &mut con, |c| assert!(renew(c, k, b"b\x00", 120_000)));
    let b = deadline_of(&mut con, k, b"b\x00");
    assert_eq!(
        fx,
        [
            "MULTI".to_string(),
            format!("ZADD fx {b} b\\x00"),
            format!("PEXPIREAT fx {b}"),
            "EXEC".into()
        ]
    );
    // Releasing the last lease moves the expiry back to the one before it.
    let (_, fx) = effects(&data, &mut con, |c| {
        assert_eq!(release(c, k, &[b"b\x00".as_slice(), b"zz"]), 1)
    });
    assert_eq!(
        fx,
        [
            "MULTI".to_string(),
            "ZREM fx b\\x00".into(),
            format!("PEXPIREAT fx {a}"),
            "EXEC".into()
        ]
    );
    assert_eq!(pexpiretime(&mut con, k), a);
    // Releasing the only one: the set is emptied, which deletes the key.
    let (_, fx) = effects(&data, &mut con, |c| assert_eq!(release(c, k, &["a"]), 1));
    assert_eq!(fx, ["ZREM fx a"]);
    assert!(!exists(&mut con, k));

    // Pruning: a short lease next to a long one, then a call after the
    // short one ended. The prune is up to the command's own "now".
    acquire(&mut con, k, 2, 60_000, Some(b"long"));
    acquire(&mut con, k, 2, 100, Some(b"short"));
    let long = deadline_of(&mut con, k, b"long");
    let short = deadline_of(&mut con, k, b"short");
    wait_until_past(&mut con, short);
    let (_, fx) = effects(&data, &mut con, |c| {
        assert!(acquire(c, k, 2, 90_000, Some(b"next")).acquired)
    });
    let next = deadline_of(&mut con, k, b"next");
    let now = next - 90_000;
    assert!(now >= short);
    assert_eq!(
        fx,
        [
            "MULTI".to_string(),
            format!("ZREMRANGEBYSCORE fx -inf {now}"),
            format!("ZADD fx {next} next"),
            format!("PEXPIREAT fx {next}"),
            "EXEC".into()
        ]
    );
    // A denial that prunes propagates the prune alone.
    acquire(&mut con, k, 3, 100, Some(b"short2"));
    let short2 = deadline_of(&mut con, k, b"short2");
    wait_until_past(&mut con, short2);
    let (t, fx) = effects(&data, &mut con, |c| {
        timed(c, |c| acquire(c, k, 1, 1_000, None))
    });
    let now = denied_at(&t, next);
    assert_eq!(t.reply, Lease::denied(0, 1, next - now, next - now));
    assert_eq!(fx, [format!("ZREMRANGEBYSCORE fx -inf {now}")]);
    assert_eq!(ids(&mut con, k), [b"long".to_vec(), b"next".to_vec()]);
    assert!(long < next);
    // Nothing but plain commands in the whole AOF.
    for args in data.aof_commands() {
        let name = String::from_utf8_lossy(&args[0]).to_uppercase();
        assert!(
            [
                "SELECT",
                "MULTI",
                "EXEC",
                "ZADD",
                "ZREM",
                "ZREMRANGEBYSCORE",
                "PEXPIREAT",
                "DEL"
            ]
            .contains(&name.as_str()),
            "the AOF holds {args:?}"
        );
    }
}

#[test]
fn leases_replicas_aof_and_rdb_hold_the_same_sets_and_expiries() {
    let data = DataDir::new();
    let master = replication_master(data.aof());
    let replicas = attach_replicas(
        &master,
        vec![Server::builder(), Server::builder().without_module()],
    );
    let mut routes = [master.connect(), master.connect()];
    const SHORT_MS: u64 = 50;
    let mut runner = LeaseRunner::new("eq", 12);
    for step in LeaseWorkload::new(7, 12, 2, 8)
        .with_short_leases(SHORT_MS)
        .take(3_000)
    {
        runner.step(&mut routes[step.route], &step);
    }
    let con = &mut routes[0];
    // Every short lease has ended, and with it every key whose last lease
    // was short: what remains is stable for a minute at least.
    let end = server_ms(con);
    wait_until_past(con, end + SHORT_MS as i64);
    let _: () = run(con, &["SET", "eq:end", "1"]);
    let _: () = run(con, &["DEL", "eq:end"]);
    wait_replicas(con, 2);
    let expected = all_lease_sets(con);
    assert!(
        expected.len() >= 6,
        "only {} keys of leases left",
        expected.len()
    );
    for (key, state) in &expected {
        assert_expiry_is_last_deadline(state, &key.escape_ascii().to_string());
    }
    let c = counters(con);
    assert!(
        c["leases_expired"] > 50 && c["leases_denied"] > 50 && c["leases_renewed"] > 50,
        "the workload did not prune, deny and renew: {c:?}"
    );

    for (replica, what) in replicas
        .iter()
        .zip(["with the module", "without the module"])
    {
        assert_replica_took_everything(replica);
        assert_eq!(
            all_lease_sets(&mut replica.connect()),
            expected,
            "the replica {what}"
        );
    }

    // An RDB snapshot next to the AOF, then the master dies.
    let _: () = run(con, &["SAVE"]);
    drop(routes);
    master.kill();
    drop(replicas);

    // Servers without the module load both: plain sorted sets and expiries.
    for (builder, what) in [
        (data.aof().without_module(), "the AOF without the module"),
        (data.rdb().without_module(), "the RDB without the module"),
        (data.rdb(), "the RDB with the module"),
    ] {
        let server = builder.start();
        assert_eq!(all_lease_sets(&mut server.connect()), expected, "{what}");
    }
    // With the module, from the AOF: the same, and the leases go on.
    let server = data.aof().start();
    let mut con = server.connect();
    assert_eq!(
        all_lease_sets(&mut con),
        expected,
        "the AOF with the module"
    );
    let (key, state) = expected.iter().next().unwrap();
    let live = state
        .leases
        .iter()
        .filter(|(_, d)| *d > server_ms(&mut con))
        .count() as u64;
    let lease = acquire(&mut con, key.as_slice(), live, 1_000, None);
    assert_eq!(lease.counts(), (false, 0, live as i64), "{lease:?}");
    let lease = acquire(&mut con, key.as_slice(), live + 1, 1_000, None);
    assert_eq!(lease.counts(), (true, 0, live as i64 + 1), "{lease:?}");
}

// ---------------------------------------------------------------------------
// 6. Types and arguments
// ---------------------------------------------------------------------------

#[test]
fn leases_refuse_other_types_and_leave_them_untouched() {
    let server = Server::start();
    let mut con = server.connect();
    let _: () = run(&mut con, &["SET", "string", "hello"]);
    let _: () = run(&mut con, &["HSET", "hash", "f", "v"]);
    check(&mut con, "fixed", 5, 60, &[]);
    throttle(&mut con, "gcra", 4, 5, 60, None);
    for key in ["string", "hash", "fixed", "gcra"] {
        let before = dumped(&mut con, key);
        for call in [
            vec!["RATELIMIT.ACQUIRE", key, "5", "60000"],
            vec!["RATELIMIT.ACQUIRE", key, "5", "60000", "ID", "x"],
            vec!["RATELIMIT.RELEASE", key, "x"],
            vec!["RATELIMIT.RENEW", key, "x", "60000"],
        ] {
            assert_eq!(error(&mut con, &call), WRONGTYPE, "{}", call.join(" "));
        }
        assert_eq!(dumped(&mut con, key), before, "{key} changed");
    }

    // The other way: limiters refuse a key of leases, and RESET refuses it
    // (all or nothing: a limiter named with it stays too).
    let pool = LeasePool::lasting(5);
    pool.make(&mut con, "pool");
    let before = dumped(&mut con, "pool");
    let fixed_before = dumped(&mut con, "fixed");
    for call in [
        vec!["RATELIMIT.CHECK", "pool", "5", "60"],
        vec!["RATELIMIT.PEEK", "pool", "5", "60"],
        vec!["RATELIMIT.THROTTLE", "pool", "4", "5", "60"],
        vec!["RATELIMIT.RESET", "pool"],
        vec!["RATELIMIT.RESET", "fixed", "pool"],
    ] {
        assert_eq!(error(&mut con, &call), WRONGTYPE, "{}", call.join(" "));
    }
    assert_eq!(dumped(&mut con, "pool"), before);
    assert_eq!(dumped(&mut con, "fixed"), fixed_before);
    // DEL removes a key of leases, and the pool starts empty again.
    let deleted: i64 = run(&mut con, &["DEL", "pool"]);
    assert_eq!(deleted, 1);
    assert_eq!(pool.acquire(&mut con, "pool", None).counts(), (true, 4, 5));
    assert_eq!(reset(&mut con, &["fixed"]), 1);
}

#[test]
fn leases_refuse_every_bad_argument_with_its_exact_error() {
    let server = Server::start();
    let mut con = server.connect();
    let max = "ERR max must be an integer from 1 to 100000";
    let lease = "ERR lease_ms must be an integer from 1 to 86400000";
    let id = "ERR id must be 1 to 64 bytes and not NOW";
    let arity =
        |name: &str| format!("ERR wrong number of arguments for 'ratelimit.{name}' command");
    let long = "x".repeat(65);
    acquire(&mut con, "k", 5, 60_000, Some(b"held"));
    let before = stored_leases(&mut con, "k");
    let errors_before = counters(&mut con);

    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["ACQUIRE", "k", "5"], arity("acquire")),
        (vec!["ACQUIRE", "k"], arity("acquire")),
        (vec!["ACQUIRE", "k", "0", "1"], max.into()),
        (vec!["ACQUIRE", "k", "100001", "1"], max.into()),
        (vec!["ACQUIRE", "k", "-1", "1"], max.into()),
        (vec!["ACQUIRE", "k", "abc", "1"], max.into()),
        (vec!["ACQUIRE", "k", "1.5", "1"], max.into()),
        (vec!["ACQUIRE", "k", "", "1"], max.into()),
        (
            vec!["ACQUIRE", "k", "99999999999999999999", "1"],
            max.into(),
        ),
        (vec!["ACQUIRE", "k", "0", "0"], max.into()),
        (vec!["ACQUIRE", "k", "1", "0"], lease.into()),
        (vec!["ACQUIRE", "k", "1", "86400001"], lease.into()),
        (vec!["ACQUIRE", "k", "1", "-5"], lease.into()),
        (vec!["ACQUIRE", "k", "1", "1s"], lease.into()),
        (vec!["ACQUIRE", "k", "1", "1", "ID", ""], id.into()),
        (vec!["ACQUIRE", "k", "1", "1", "ID", &long], id.into()),
        (
            vec!["ACQUIRE", "k", "1", "1", "ID"],
            "ERR syntax error: ID needs a value".into(),
        ),
        (
            vec!["ACQUIRE", "k", "1", "1", "NAME", "x"],
            "ERR syntax error: unknown option 'NAME'".into(),
        ),
        (
            vec!["ACQUIRE", "k", "1", "1", "ID", "a", "ID", "b"],
            "ERR syntax error: ID given twice".into(),
        ),
        (
            vec!["ACQUIRE", "k", "1", "1", "ID", "a", "extra"],
            "ERR syntax error: unknown option 'extra'".into(),
        ),
        (vec!["RELEASE", "k"], arity("release")),
        (vec!["RELEASE", "k", ""], id.into()),
        (vec!["RELEASE", "k", &long], id.into()),
        // One bad id among good ones: nothing is released.
        (vec!["RELEASE", "k", "held", ""], id.into()),
        (vec!["RENEW", "k", "held"], arity("renew")),
        (vec!["RENEW", "k", "held", "1", "2"], arity("renew")),
        (vec!["RENEW", "k", "", "1000"], id.into()),
        (vec!["RENEW", "k", &long, "1000"], id.into()),
        (vec!["RENEW", "k", "held", "0"], lease.into()),
        (vec!["RENEW", "k", "held", "86400001"], lease.into()),
        (vec!["RENEW", "k", "held", "x"], lease.into()),
    ];
    // Wrong arity is the server's refusal, which the module never sees;
    // Redis 6.2 knows no arity of module commands and lets the module refuse.
    let server_checks_arity = Abilities::of(&mut con).command_info();
    let mut module_errors: BTreeMap<&str, u64> = BTreeMap::new();
    for (args, expected) in &cases {
        let mut call = vec![format!("RATELIMIT.{}", args[0])];
        call.extend(args[1..].iter().map(|a| a.to_string()));
        assert_eq!(&error(&mut con, &call), expected, "{}", call.join(" "));
        if !(server_checks_arity && expected.contains("wrong number")) {
            *module_errors.entry(args[0]).or_default() += 1;
        }
    }
    assert_eq!(
        stored_leases(&mut con, "k"),
        before,
        "a refused call changed the leases"
    );
    let c = counters(&mut con);
    for (command, errors) in module_errors {
        let name = command.to_lowercase();
        assert_eq!(
            c[&format!("{name}_errors")] - errors_before[&format!("{name}_errors")],
            errors,
            "{name}_errors"
        );
    }

    // The bounds themselves are accepted; the keyword in any case.
    let id64 = "y".repeat(64);
    for call in [
        vec!["RATELIMIT.ACQUIRE", "b1", "100000", "86400000"],
        vec!["RATELIMIT.ACQUIRE", "b2", "1", "1", "id", "z"],
        vec!["RATELIMIT.ACQUIRE", "b3", "1", "1000", "Id", &id64],
        vec!["RATELIMIT.RENEW", "k", "held", "86400000"],
        vec!["RATELIMIT.RENEW", "k", "held", "1"],
    ] {
        if let Err(e) = try_run(&mut con, &call) {
            panic!("{}: {e}", call.join(" "));
        }
    }
    assert_eq!(ids(&mut con, "b3"), vec![id64.into_bytes()]);
}

// ---------------------------------------------------------------------------
// 7. Out of memory
// ---------------------------------------------------------------------------

fn used_memory(con: &mut Connection) -> i64 {
    let info: String = run(con, &["INFO", "memory"]);
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn leases_release_works_at_maxmemory_where_acquire_and_renew_are_refused() {
    let server = Server::start();
    let mut con = server.connect();
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
    );
    for id in ["a", "b", "c"] {
        acquire(&mut con, "pool", 10, 600_000, Some(id.as_bytes()));
    }
    let before = stored_leases(&mut con, "pool");

    // Fill a little room with plain keys until writes are refused, then set
    // the limit below what is in use: every write that may grow is refused.
    let limit = used_memory(&mut con) + 1024 * 1024;
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "maxmemory", &limit.to_string()],
    );
    let value = "x".repeat(10_000);
    for filled in 0.. {
        assert!(filled < 1000, "1000 SETs of 10 kB fit in 1 MB");
        if let Err(e) = try_run(&mut con, &["SET", &format!("fill:{filled}"), &value]) {
            assert!(error_of(Err(e)).starts_with("OOM"));
            break;
        }
    }
    let limit = used_memory(&mut con) - 256 * 1024;
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "maxmemory", &limit.to_string()],
    );

    for call in [
        vec!["RATELIMIT.ACQUIRE", "pool", "10", "1000"],
        vec!["RATELIMIT.ACQUIRE", "pool", "10", "1000", "ID", "a"],
        vec!["RATELIMIT.ACQUIRE", "new", "10", "1000"],
        vec!["RATELIMIT.RENEW", "pool", "a", "1000"],
    ] {
        let e = error(&mut con, &call);
        assert!(e.starts_with("OOM"), "{}: {e}", call.join(" "));
    }
    assert_eq!(
        stored_leases(&mut con, "pool"),
        before,
        "a refused call changed the leases"
    );
    assert!(!exists(&mut con, "new"));

    // RELEASE frees a slot when the server is full.
    assert_eq!(release(&mut con, "pool", &["a", "b"]), 2);
    assert_eq!(ids(&mut con, "pool"), vec![b"c".to_vec()]);
    assert_eq!(release(&mut con, "pool", &["c"]), 1);
    assert!(!exists(&mut con, "pool"));
}

// ---------------------------------------------------------------------------
// 8. Cluster
// ---------------------------------------------------------------------------

#[test]
fn leases_are_routed_by_key_in_a_cluster() {
    let cluster = Cluster::start(3, 0);
    let keys: Vec<String> = (0..12).map(|i| format!("pool:{i}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let owners = cluster.masters_for_keys(&key_refs);
    assert_eq!(
        owners.values().collect::<BTreeSet<_>>().len(),
        3,
        "the keys should spread over the 3 masters: {owners:?}"
    );
    for key in &keys {
        let owner = owners[key.as_str()];
        let slot = cluster.keyslot(key);
        // Every node but the owner redirects each command to it.
        for port in cluster.masters().into_iter().filter(|p| *p != owner) {
            let mut con = cluster.connect(port);
            for call in [
                vec!["RATELIMIT.ACQUIRE", key, "2", "60000"],
                vec!["RATELIMIT.RELEASE", key, "a", "b"],
                vec!["RATELIMIT.RENEW", key, "a", "60000"],
            ] {
                let e = try_run(&mut con, &call).unwrap_err();
                assert_eq!(e.code(), Some("MOVED"), "{}: {e}", call.join(" "));
                let (address, moved_slot) = e.redirect_node().unwrap();
                assert_eq!(moved_slot, slot, "{}", call.join(" "));
                assert_eq!(address, format!("127.0.0.1:{owner}"), "{}", call.join(" "));
            }
        }
    }

    // Through a cluster connection: every command reaches the key's
    // master, and the leases live there only.
    let mut con = cluster.connection();
    for key in &keys {
        let a = acquire(&mut con, key, 2, 60_000, Some(b"a"));
        let b = acquire(&mut con, key, 2, 60_000, None);
        assert_eq!(
            (a.counts(), b.counts()),
            ((true, 1, 2), (true, 0, 2)),
            "{key}"
        );
        assert!(!acquire(&mut con, key, 2, 60_000, None).acquired, "{key}");
        assert!(renew(&mut con, key, b"a", 90_000), "{key}");
        for port in cluster.masters() {
            assert_eq!(
                cluster.holds(port, key),
                port == owners[key.as_str()],
                "{key} on {port}"
            );
        }
        let mut owner = cluster.connect(owners[key.as_str()]);
        assert_eq!(ids(&mut owner, key).len(), 2);
        assert_eq!(
            release(&mut con, key, &[b"a".as_slice(), b.id()]),
            2,
            "{key}"
        );
        assert!(!exists(&mut owner, key));
    }
}

// ---------------------------------------------------------------------------
// 9. INFO, keyspace events, command flags
// ---------------------------------------------------------------------------

#[test]
fn leases_count_calls_and_outcomes_in_info_exactly() {
    let server = Server::start();
    let mut con = server.connect();
    let start = counters(&mut con);
    assert!(start.values().all(|v| *v == 0), "{start:?}");
    let mut expected: BTreeMap<String, u64> = start.clone();
    let add = |expected: &mut BTreeMap<String, u64>, changes: &[(&str, u64)]| {
        for (name, n) in changes {
            *expected
                .get_mut(*name)
                .unwrap_or_else(|| panic!("no counter {name}")) += n;
        }
    };
    let _: () = run(&mut con, &["SET", "text", "x"]);

    acquire(&mut con, "k", 2, 60_000, None);
    acquire(&mut con, "k", 2, 60_000, Some(b"a"));
    add(
        &mut expected,
        &[("acquire_calls", 2), ("leases_acquired", 2)],
    );
    assert!(!acquire(&mut con, "k", 2, 60_000, Some(b"b")).acquired);
    add(&mut expected, &[("acquire_calls", 1), ("leases_denied", 1)]);
    assert!(acquire(&mut con, "k", 2, 60_000, Some(b"a")).acquired);
    add(
        &mut expected,
        &[("acquire_calls", 1), ("leases_renewed", 1)],
    );
    assert!(renew(&mut con, "k", b"a", 60_000));
    assert!(!renew(&mut con, "k", b"zz", 60_000));
    add(&mut expected, &[("renew_calls", 2), ("leases_renewed", 1)]);
    assert_eq!(release(&mut con, "k", &["a", "zz", "a"]), 1);
    assert_eq!(release(&mut con, "k", &["zz"]), 0);
    add(
        &mut expected,
        &[("release_calls", 2), ("leases_released", 1)],
    );
    // Errors: refused arguments and WRONGTYPE count as calls and errors.
    error(&mut con, &["RATELIMIT.ACQUIRE", "k", "0", "1"]);
    error(&mut con, &["RATELIMIT.ACQUIRE", "text", "1", "1"]);
    error(&mut con, &["RATELIMIT.RELEASE", "k", ""]);
    error(&mut con, &["RATELIMIT.RENEW", "text", "a", "1"]);
    add(
        &mut expected,
        &[
            ("acquire_calls", 2),
            ("acquire_errors", 2),
            ("release_calls", 1),
            ("release_errors", 1),
            ("renew_calls", 1),
            ("renew_errors", 1),
        ],
    );
    // Wrong arity is refused by the server before the module: not counted
    // (Redis 6.2 knows no arity of module commands: the module refuses it).
    error(&mut con, &["RATELIMIT.ACQUIRE", "k", "1"]);
    if !Abilities::of(&mut con).command_info() {
        add(
            &mut expected,
            &[("acquire_calls", 1), ("acquire_errors", 1)],
        );
    }
    assert_eq!(counters(&mut con), expected);

    // Pruned leases: two ended ones next to a live one, pruned by a RENEW.
    acquire(&mut con, "p", 5, 60_000, Some(b"live"));
    acquire(&mut con, "p", 5, 50, Some(b"s1"));
    acquire(&mut con, "p", 5, 60, Some(b"s2"));
    add(
        &mut expected,
        &[("acquire_calls", 3), ("leases_acquired", 3)],
    );
    let ended = deadline_of(&mut con, "p", b"s1").max(deadline_of(&mut con, "p", b"s2"));
    wait_until_past(&mut con, ended);
    assert!(renew(&mut con, "p", b"live", 60_000));
    add(
        &mut expected,
        &[
            ("renew_calls", 1),
            ("leases_renewed", 1),
            ("leases_expired", 2),
        ],
    );
    assert_eq!(counters(&mut con), expected);
    // CHECK's counters are not the leases'.
    assert_eq!((expected["allowed"], expected["denied"]), (0, 0));
}

/// The calls of the event test, on keys under `prefix`, and the module
/// events they must fire (key, event), with `denied-events` as given.
fn lease_event_workload(
    con: &mut Connection,
    prefix: &str,
    denied_events: bool,
) -> Vec<(String, &'static str)> {
    let k = format!("{prefix}:pool");
    let mut fired = Vec::new();
    assert!(acquire(con, &k, 1, 60_000, Some(b"a")).acquired);
    fired.push((k.clone(), "ratelimit.acquire"));
    assert!(!acquire(con, &k, 1, 60_000, Some(b"b")).acquired);
    if denied_events {
        fired.push((k.clone(), "ratelimit.denied"));
    }
    assert!(
        acquire(con, &k, 1, 60_000, Some(b"a")).acquired,
        "a renewal"
    );
    fired.push((k.clone(), "ratelimit.acquire"));
    assert!(renew(con, &k, b"a", 60_000));
    fired.push((k.clone(), "ratelimit.renew"));
    // What changes nothing fires nothing.
    assert!(!renew(con, &k, b"zz", 60_000));
    assert_eq!(release(con, &k, &["zz"]), 0);
    // One event per RELEASE, however many leases it ends.
    assert!(acquire(con, &k, 2, 60_000, Some(b"b")).acquired);
    fired.push((k.clone(), "ratelimit.acquire"));
    assert_eq!(release(con, &k, &["a", "b"]), 2);
    fired.push((k.clone(), "ratelimit.release"));
    fired
}

#[test]
fn leases_fire_keyspace_events_exactly() {
    for denied_events in [false, true] {
        assert_fires_exactly(denied_events, "KEd", |con| {
            lease_event_workload(con, "ev", denied_events)
        });
    }
}

#[test]
fn leases_watch_sees_changes_and_only_changes() {
    let server = Server::start();
    let mut con = server.connect();
    let mut other = server.connect();
    acquire(&mut con, "w", 1, 60_000, Some(b"a"));
    // A transaction watching the key goes through when calls changed
    // nothing, and fails when one did.
    let watched =
        |con: &mut Connection, other: &mut Connection, call: &dyn Fn(&mut Connection)| -> bool {
            let _: () = run(con, &["WATCH", "w"]);
            call(other);
            let exec: Value = redis::pipe().atomic().cmd("PING").query(con).unwrap();
            exec != Value::Nil
        };
    assert!(watched(&mut con, &mut other, &|c| assert!(
        !acquire(c, "w", 1, 1_000, None).acquired
    )));
    assert!(watched(&mut con, &mut other, &|c| assert!(!renew(
        c, "w", b"zz", 1_000
    ))));
    assert!(watched(&mut con, &mut other, &|c| assert_eq!(
        release(c, "w", &["zz"]),
        0
    )));
    assert!(!watched(&mut con, &mut other, &|c| assert!(renew(
        c, "w", b"a", 1_000
    ))));
    assert!(!watched(&mut con, &mut other, &|c| assert_eq!(
        release(c, "w", &["a"]),
        1
    )));
}

#[test]
fn leases_commands_carry_their_flags_and_key_positions() {
    let server = Server::start();
    let mut con = server.connect();
    for (command, flags) in [
        (
            "ratelimit.acquire",
            &["write", "denyoom", "module", "fast"][..],
        ),
        ("ratelimit.release", &["write", "module", "fast"]),
        ("ratelimit.renew", &["write", "denyoom", "module", "fast"]),
    ] {
        let info: Vec<Value> = run(&mut con, &["COMMAND", "INFO", command]);
        let Value::Array(entry) = &info[0] else {
            panic!("COMMAND INFO {command}: {info:?}")
        };
        let mut found: BTreeSet<String> = redis::from_redis_value(entry[2].clone()).unwrap();
        // Redis 6.2 does not list the `module` flag.
        if !Abilities::of(&mut con).command_info() {
            assert!(found.insert("module".to_string()), "{command}: {found:?}");
        }
        let expected: BTreeSet<String> = flags.iter().map(|f| f.to_string()).collect();
        assert_eq!(found, expected, "{command}");
        let positions: Vec<i64> = entry[3..6]
            .iter()
            .map(|v| redis::from_redis_value(v.clone()).unwrap())
            .collect();
        assert_eq!(positions, [1, 1, 1], "{command}: first, last key and step");
    }
    // The key only, never the ids.
    for args in [
        &["RATELIMIT.ACQUIRE", "k1", "2", "1000", "ID", "x"][..],
        &["RATELIMIT.RELEASE", "k1", "a", "b", "c"],
        &["RATELIMIT.RENEW", "k1", "a", "1000"],
    ] {
        let mut getkeys = vec!["COMMAND", "GETKEYS"];
        getkeys.extend_from_slice(args);
        let keys: Vec<String> = run(&mut con, &getkeys);
        assert_eq!(keys, ["k1"], "{}", args.join(" "));
    }
    // `write` commands: a read-only replica refuses them all.
    let replicas = attach_replicas(&server, vec![Server::builder()]);
    let mut rcon = replicas[0].connect();
    for call in [
        vec!["RATELIMIT.ACQUIRE", "k", "1", "1000"],
        vec!["RATELIMIT.RELEASE", "k", "a"],
        vec!["RATELIMIT.RENEW", "k", "a", "1000"],
    ] {
        let e = error(&mut rcon, &call);
        assert!(e.starts_with("READONLY"), "{}: {e}", call.join(" "));
    }
}
