//! The module in Redis Cluster: routing by key (MOVED, CROSSSLOT), hash-tagged
//! groups in one transaction, replicas, and a manual failover in the middle
//! of a workload.
//!
//! Every test starts its own cluster (`common::cluster`), all on 127.0.0.1,
//! killed when the test ends, also when it fails. Outcomes are made
//! independent of timing: limiters [last](common::Kind::lasting) (or have
//! periods of an hour), so no window ends and no token comes back during a
//! test, and `allowed`, `remaining` and `limit` depend only on the sequence
//! of calls; the time fields are only compared within the time the run took.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{
    algorithms, all_keys, check, error_of, exists, get_str, mixed_limiters, pexpiretime, reset,
    run, server_ms, stored, throttle, try_run, Action, Limiter, Reply, Server, Stored, Workload,
    FIXED, KINDS, SLIDING, THROTTLE,
};

/// Deadline for the concurrent workload of the failover test.
const WORKLOAD_DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A command line as text, for messages.
fn text(args: &[impl AsRef<str>]) -> String {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    args.join(" ")
}

/// Asserts that two replies to the same call, one from the cluster and one
/// from a single server, are the same decision: the same `allowed`,
/// `remaining` and `limit`, the same -1 or 0 in the time fields, and
/// otherwise times no further apart than the run has lasted (`span_ms`, in
/// both directions: each side's window or bucket began and the call ran at
/// some point of the run).
fn assert_same_decision(what: &str, cluster: Reply, single: Reply, span_ms: i64) {
    assert_eq!(
        cluster.counts(),
        single.counts(),
        "{what}: cluster {cluster:?}, single server {single:?}"
    );
    // Rounded up to the unit: one more for the rounding.
    let tolerance = 2 * span_ms / cluster.time_unit_ms() + 2;
    for (field, (a, b)) in cluster.times().into_iter().zip(single.times()).enumerate() {
        if a <= 0 || b <= 0 {
            assert_eq!(
                a, b,
                "{what}: time {field}: cluster {cluster:?}, single server {single:?}"
            );
        } else {
            assert!(
                (a - b).abs() <= tolerance,
                "{what}: time {field} differs by more than {tolerance}: cluster {cluster:?}, single server {single:?}"
            );
        }
    }
}

/// Direct connections to every node, used as a client that knows nothing of
/// slots would: send to any node, follow one MOVED (as `redis-cli -c`).
struct Redirecting {
    nodes: BTreeMap<u16, redis::Connection>,
    redirects: usize,
}

impl Redirecting {
    fn new(cluster: &Cluster) -> Redirecting {
        Redirecting {
            nodes: cluster
                .node_ports()
                .into_iter()
                .map(|port| (port, cluster.connect(port)))
                .collect(),
            redirects: 0,
        }
    }

    /// `args` sent to node `port`; a MOVED is followed once.
    fn query<T: redis::FromRedisValue>(&mut self, port: u16, args: &[impl AsRef<str>]) -> T {
        let con = self.nodes.get_mut(&port).unwrap();
        let reply = match try_run(con, args) {
            Err(e) if e.code() == Some("MOVED") => {
                let (address, _slot) = e.redirect_node().unwrap();
                let to: u16 = address.rsplit_once(':').unwrap().1.parse().unwrap();
                self.redirects += 1;
                try_run(self.nodes.get_mut(&to).unwrap(), args)
            }
            other => other,
        };
        let reply = reply.unwrap_or_else(|e| panic!("{} on {port}: {e}", text(args)));
        redis::from_redis_value(reply).unwrap()
    }
}

/// Which client a mirrored call goes through on the cluster side.
#[derive(Clone, Copy)]
enum Via {
    /// The cluster client: to the key's master, by its own slot map.
    Client,
    /// Straight to this node, following a MOVED.
    Node(u16),
}

/// The same calls on the cluster and on a single server, compared reply
/// for reply.
struct Mirror {
    cluster: redis::cluster::ClusterConnection,
    nodes: Redirecting,
    single: redis::Connection,
    since: Instant,
}

impl Mirror {
    fn new(cluster: &Cluster, single: &Server) -> Mirror {
        Mirror {
            cluster: cluster.connection(),
            nodes: Redirecting::new(cluster),
            single: single.connect(),
            since: Instant::now(),
        }
    }

    fn span_ms(&self) -> i64 {
        self.since.elapsed().as_millis() as i64 + 1
    }

    fn cluster_query<T: redis::FromRedisValue>(&mut self, via: Via, args: &[impl AsRef<str>]) -> T {
        match via {
            Via::Client => run(&mut self.cluster, args),
            Via::Node(port) => self.nodes.query(port, args),
        }
    }

    /// One call on both, through the cluster client; returns the cluster's
    /// reply.
    fn call(&mut self, limiter: &Limiter, key: &str, cost: u64, peek: bool) -> Reply {
        self.call_via(Via::Client, limiter, key, cost, peek)
    }

    fn call_via(&mut self, via: Via, limiter: &Limiter, key: &str, cost: u64, peek: bool) -> Reply {
        let args = if peek {
            limiter.look(key, cost)
        } else {
            limiter.take(key, cost)
        };
        let cluster = limiter.reply(self.cluster_query(via, &args));
        let single = limiter.call(&mut self.single, &args);
        assert_same_decision(&text(&args), cluster, single, self.span_ms());
        cluster
    }

    /// RESET on both; returns the cluster's reply.
    fn reset(&mut self, via: Via, keys: &[&str]) -> i64 {
        let mut args = vec!["RATELIMIT.RESET"];
        args.extend_from_slice(keys);
        let cluster: i64 = self.cluster_query(via, &args);
        let single = reset(&mut self.single, keys);
        assert_eq!(cluster, single, "{}", text(&args));
        cluster
    }
}

/// Asserts that every key lives on its master and on no other master, and
/// (when `single` is given) exists there exactly when it exists on the
/// single server, with the same value for the algorithms whose value does
/// not depend on time.
fn assert_keys_where_they_belong(
    cluster: &Cluster,
    keys: &[(String, Limiter)],
    mut single: Option<&mut redis::Connection>,
) {
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    let owners = cluster.masters_for_keys(&names);
    // What each master stores (KEYS on a node lists its own keys, whatever
    // their slots).
    let mut masters: BTreeMap<u16, (redis::Connection, BTreeSet<Vec<u8>>)> = cluster
        .masters()
        .into_iter()
        .map(|port| {
            let mut con = cluster.connect(port);
            let stored = all_keys(&mut con);
            (port, (con, stored))
        })
        .collect();
    for (key, limiter) in keys {
        let owner = owners[key.as_str()];
        for (port, (_, stored)) in &masters {
            if *port != owner {
                assert!(
                    !stored.contains(key.as_bytes()),
                    "{key} is on {port}, not its master {owner}"
                );
            }
        }
        let Some(single) = single.as_deref_mut() else {
            continue;
        };
        let (con, stored) = masters.get_mut(&owner).unwrap();
        assert_eq!(
            stored.contains(key.as_bytes()),
            exists(single, key),
            "{key}: exists on the cluster vs the single server"
        );
        // A window's value does not depend on when it was written.
        if !limiter.kind.bucket {
            assert_eq!(get_str(con, key), get_str(single, key), "{key}: value");
        }
    }
}

// ---------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------

#[test]
fn cluster_decides_exactly_as_a_single_server() {
    let cluster = Cluster::start(3, 0);
    let single = Server::start();
    let keys = mixed_limiters("same", 300);
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    let owners = cluster.masters_for_keys(&names);
    for master in cluster.masters() {
        let count = owners.values().filter(|&&p| p == master).count();
        assert!(count >= 30, "only {count} of 300 keys on master {master}");
    }

    // Half of the calls through the cluster client, half sent to any master
    // and redirected.
    let masters = cluster.masters();
    let mut mirror = Mirror::new(&cluster, &single);
    let (mut admitted, mut denied, mut resets) = (0, 0, 0);
    for step in Workload::new(42, keys.len(), 2 * masters.len()).take(3000) {
        let (key, limiter) = &keys[step.key];
        let via = match masters.get(step.route) {
            Some(&master) => Via::Node(master),
            None => Via::Client,
        };
        match step.action {
            Action::Reset => resets += mirror.reset(via, &[key]),
            Action::Look => {
                mirror.call_via(via, limiter, key, 1, true);
            }
            Action::Take { cost } => {
                let reply = mirror.call_via(via, limiter, key, cost, false);
                if reply.admitted() {
                    admitted += 1;
                } else {
                    denied += 1;
                }
            }
        }
    }
    eprintln!(
        "3000 calls: {admitted} admitted, {denied} denied, {resets} keys reset, {} redirected, in {} ms",
        mirror.nodes.redirects,
        mirror.span_ms()
    );
    assert!(admitted > 500 && denied > 500 && resets > 20);
    assert!(mirror.nodes.redirects > 500);
    assert_keys_where_they_belong(&cluster, &keys, Some(&mut mirror.single));
}

// ---------------------------------------------------------------------------
// Hash-tagged groups, transactions, CROSSSLOT
// ---------------------------------------------------------------------------

#[test]
fn cluster_hash_tagged_group_counts_exactly_in_one_transaction() {
    let cluster = Cluster::start(3, 0);
    let [api, upload, login] = ["{user:42}:api", "{user:42}:upload", "{user:42}:login"];
    let slot = cluster.keyslot(api);
    assert_eq!(cluster.keyslot(upload), slot);
    assert_eq!(cluster.keyslot(login), slot);
    let owner = cluster.master_for_slot(slot);
    let mut con = cluster.connect(owner);

    // Four rounds of three checks, all in one MULTI/EXEC on the master.
    let mut pipe = redis::pipe();
    pipe.atomic();
    for _ in 0..4 {
        pipe.cmd("RATELIMIT.CHECK").arg(api).arg(3).arg(60);
        pipe.cmd("RATELIMIT.CHECK")
            .arg(upload)
            .arg(5)
            .arg(60)
            .arg("ALGORITHM")
            .arg("TOKEN")
            .arg("COST")
            .arg(2);
        pipe.cmd("RATELIMIT.CHECK")
            .arg(login)
            .arg(2)
            .arg(1_000_000_000)
            .arg("ALGORITHM")
            .arg("SLIDING");
    }
    let replies: Vec<common::Decision> = pipe.query(&mut con).unwrap();
    assert_eq!(replies.len(), 12);
    // (allowed, remaining, limit) per round.
    let expected_api = [(true, 2, 3), (true, 1, 3), (true, 0, 3), (false, 0, 3)];
    let expected_upload = [(true, 3, 5), (true, 1, 5), (false, 1, 5), (false, 1, 5)];
    let expected_login = [(true, 1, 2), (true, 0, 2), (false, 0, 2), (false, 0, 2)];
    for round in 0..4 {
        assert_eq!(
            replies[3 * round].counts(),
            expected_api[round],
            "api, round {round}"
        );
        assert_eq!(
            replies[3 * round + 1].counts(),
            expected_upload[round],
            "upload, round {round}"
        );
        assert_eq!(
            replies[3 * round + 2].counts(),
            expected_login[round],
            "login, round {round}"
        );
    }
    assert_eq!(get_str(&mut con, api).as_deref(), Some("3"));
    assert_eq!(get_str(&mut con, login).as_deref(), Some("S0:2"));
    assert!(get_str(&mut con, upload).unwrap().starts_with('T'));

    // The same transaction on another master is refused at queueing time
    // (MOVED), so EXEC aborts and nothing runs anywhere.
    let wrong = cluster.masters().into_iter().find(|&p| p != owner).unwrap();
    let mut other = cluster.connect(wrong);
    run::<()>(&mut other, &["MULTI"]);
    let queued = try_run(&mut other, &["RATELIMIT.CHECK", api, "3", "60"]);
    assert_eq!(
        error_of(queued),
        format!("MOVED {slot} 127.0.0.1:{owner}"),
        "queueing on {wrong}"
    );
    let exec = error_of(try_run(&mut other, &["EXEC"]));
    assert!(exec.starts_with("EXECABORT"), "{exec}");
    assert_eq!(get_str(&mut con, api).as_deref(), Some("3"));
    assert!(!cluster.holds(wrong, api));

    // The whole group is reset in one call, through the cluster client.
    let mut client = cluster.connection();
    assert_eq!(reset(&mut client, &[api, upload, login]), 3);
    for key in [api, upload, login] {
        assert!(!exists(&mut con, key), "{key} still exists");
    }
    assert_eq!(reset(&mut client, &[api, upload, login]), 0);
    // And starts afresh.
    assert_eq!(check(&mut client, api, 3, 60, &[]).counts(), (true, 2, 3));
}

#[test]
fn cluster_reset_across_slots_is_crossslot_and_deletes_nothing() {
    let cluster = Cluster::start(3, 0);
    let mut client = cluster.connection();
    let (a, b) = ("a", "b");
    let owner = cluster.master_for_key(a);
    assert_ne!(owner, cluster.master_for_key(b), "a and b on one master");
    // A key in another slot of the same master as `a`.
    let same_master = (0..1000)
        .map(|i| format!("near:{i}"))
        .find(|k| cluster.master_for_key(k) == owner && cluster.keyslot(k) != cluster.keyslot(a))
        .expect("a key in another slot of a's master");
    let keys = [a, b, same_master.as_str()];
    for key in keys {
        check(&mut client, key, 10, 3600, &[]);
        check(&mut client, key, 10, 3600, &[]);
    }
    let state = |key: &str| {
        let mut con = cluster.connect(cluster.master_for_key(key));
        stored(&mut con, key)
    };
    let before: Vec<Stored> = keys.iter().map(|k| state(k)).collect();
    for (key, state) in keys.iter().zip(&before) {
        assert_eq!(state.text(), Some("2"), "{key}");
        assert!(state.expires_at > 0, "{key}: {state:?}");
    }

    let refused = [
        // Through the cluster client: sent to a's master, which refuses.
        error_of(try_run(&mut client, &["RATELIMIT.RESET", a, b])),
        // Straight to a's master: keys on two masters, and keys in two
        // slots of the one master.
        error_of(try_run(
            &mut cluster.connect(owner),
            &["RATELIMIT.RESET", a, b],
        )),
        error_of(try_run(
            &mut cluster.connect(owner),
            &["RATELIMIT.RESET", a, &same_master],
        )),
        error_of(try_run(
            &mut client,
            &["RATELIMIT.RESET", &same_master, a, "nosuchkey"],
        )),
    ];
    for error in refused {
        assert!(error.starts_with("CROSSSLOT"), "{error}");
    }
    let after: Vec<_> = keys.iter().map(|k| state(k)).collect();
    assert_eq!(after, before, "a refused RESET changed something");
    for key in keys {
        assert_eq!(reset(&mut client, &[key]), 1, "{key}");
    }
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

#[test]
fn cluster_redirects_every_command_to_the_key_master() {
    let cluster = Cluster::builder(3, 0)
        .module_arg("CL-THROTTLE", "yes")
        .start();
    let masters = cluster.masters();

    // Every command, in order: CHECK creates the key PEEK looks at, RESET
    // removes a tagged pair. `None` in a reply is a time field, checked
    // against the elapsed time below.
    let calls: Vec<(Vec<&str>, Vec<Option<i64>>)> = vec![
        (
            vec!["RATELIMIT.CHECK", "moved:check", "10", "60"],
            vec![Some(1), Some(9), Some(10), Some(-1), None],
        ),
        (
            vec!["RATELIMIT.PEEK", "moved:check", "10", "60"],
            vec![Some(1), Some(9), Some(10), Some(-1), None],
        ),
        // redis-cell's numbers: not limited, 5 in all, 4 left, no retry,
        // full again in 6 s.
        (
            vec!["RATELIMIT.THROTTLE", "moved:throttle", "4", "10", "60"],
            vec![Some(0), Some(5), Some(4), Some(-1), Some(6)],
        ),
        (
            vec!["CL.THROTTLE", "moved:cl", "4", "10", "60"],
            vec![Some(0), Some(5), Some(4), Some(-1), Some(6)],
        ),
        (
            vec!["RATELIMIT.CHECK", "{moved}:1", "10", "60"],
            vec![Some(1), Some(9), Some(10), Some(-1), None],
        ),
        (
            vec!["RATELIMIT.CHECK", "{moved}:2", "10", "60"],
            vec![Some(1), Some(9), Some(10), Some(-1), None],
        ),
        (
            vec!["RATELIMIT.RESET", "{moved}:1", "{moved}:2", "{moved}:none"],
            vec![Some(2)],
        ),
    ];
    let mut owners_seen = BTreeSet::new();
    let since = Instant::now();
    for (args, expected) in calls {
        let what = args.join(" ");
        let key = args[1];
        let (slot, owner) = (cluster.keyslot(key), cluster.master_for_key(key));
        owners_seen.insert(owner);
        let wrong = *masters.iter().find(|&&p| p != owner).unwrap();
        let state = || stored(&mut cluster.connect(owner), key);
        let before = state();

        // Straight to another master: MOVED to the key's master, nothing done.
        assert_eq!(
            error_of(try_run(&mut cluster.connect(wrong), &args)),
            format!("MOVED {slot} 127.0.0.1:{owner}"),
            "{what} on {wrong}"
        );
        assert_eq!(state(), before, "{what}: a redirected call changed the key");

        // redis-cli -c on that master follows the redirection and prints
        // the normal reply (integers one per line, not being on a terminal).
        let port = wrong.to_string();
        let mut cli = vec!["-c", "-h", "127.0.0.1", "-p", &port];
        cli.extend_from_slice(&args);
        let out = cluster.redis_cli(&cli);
        // Every window was opened since `since`.
        let elapsed = since.elapsed().as_millis() as i64 + 1;
        assert!(
            out.success,
            "redis-cli {cli:?}: {}{}",
            out.stdout, out.stderr
        );
        let reply: Vec<i64> = out
            .stdout
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.parse()
                    .unwrap_or_else(|_| panic!("{what}: redis-cli printed {:?}", out.stdout))
            })
            .collect();
        assert_eq!(reply.len(), expected.len(), "{what}: {reply:?}");
        for (field, (&got, want)) in reply.iter().zip(&expected).enumerate() {
            match want {
                Some(want) => assert_eq!(got, *want, "{what}: field {field} of {reply:?}"),
                // A window of 60 s, opened during the test.
                None => assert!(
                    (60_000 - elapsed..=60_000).contains(&got),
                    "{what}: field {field} of {reply:?}"
                ),
            }
        }

        // The key is on its master only (RESET: on none).
        for &master in &masters {
            let stored = master == owner && args[0] != "RATELIMIT.RESET";
            assert_eq!(
                cluster.holds(master, key),
                stored,
                "{key} on {master} after {what}"
            );
        }
    }
    assert!(owners_seen.len() >= 2, "every key on one master");
    // PEEK changed nothing.
    let mut con = cluster.connect(cluster.master_for_key("moved:check"));
    assert_eq!(get_str(&mut con, "moved:check").as_deref(), Some("1"));
}

#[test]
fn cluster_replicas_answer_peek_only_after_readonly() {
    let cluster = Cluster::start(3, 1);
    let mut client = cluster.connection();
    let key = "replica:peek";
    for _ in 0..3 {
        check(&mut client, key, 10, 3600, &[]);
    }
    throttle(&mut client, "replica:gcra", 4, 1, 1_000_000, None);
    let owner = cluster.master_for_key(key);
    let slot = cluster.keyslot(key);
    cluster.wait_replicas(owner);
    let replica = cluster.replicas_of(owner)[0];
    let mut con = cluster.connect(replica);
    let moved = format!("MOVED {slot} 127.0.0.1:{owner}");
    let peek = ["RATELIMIT.PEEK", key, "10", "3600"];

    // A replica redirects every command to the master until READONLY.
    assert_eq!(error_of(try_run(&mut con, &peek)), moved);
    run::<()>(&mut con, &["READONLY"]);
    // Then it answers PEEK (readonly) from its copy, as the master would.
    let mut master = cluster.connect(owner);
    let before = server_ms(&mut con);
    let on_replica = common::peek(&mut con, key, 10, 3600, &[]);
    let after = server_ms(&mut con);
    let on_master = common::peek(&mut master, key, 10, 3600, &[]);
    assert_eq!(on_replica.without_reset(), (true, 7, 10, -1));
    assert_eq!(on_master.without_reset(), on_replica.without_reset());
    // The window ends when the master says, counted from the replica's now.
    let end = pexpiretime(&mut master, key);
    assert_eq!(pexpiretime(&mut con, key), end);
    assert!(
        (end - after..=end - before).contains(&on_replica.reset_after_ms),
        "{on_replica:?}: the window ends at {end}, the call ran in [{before}, {after}]"
    );
    // But every command that writes still goes to the master.
    for args in [
        vec!["RATELIMIT.CHECK", key, "10", "3600"],
        vec!["RATELIMIT.CHECK", key, "10", "3600", "COST", "0"],
        vec!["RATELIMIT.RESET", key],
    ] {
        assert_eq!(
            error_of(try_run(&mut con, &args)),
            moved,
            "{}",
            args.join(" ")
        );
    }
    let gcra_slot = cluster.keyslot("replica:gcra");
    let gcra_owner = cluster.master_for_slot(gcra_slot);
    let mut gcra_replica = cluster.connect(cluster.replicas_of(gcra_owner)[0]);
    run::<()>(&mut gcra_replica, &["READONLY"]);
    assert_eq!(
        error_of(try_run(
            &mut gcra_replica,
            &[
                "RATELIMIT.THROTTLE",
                "replica:gcra",
                "4",
                "1",
                "1000000",
                "0"
            ],
        )),
        format!("MOVED {gcra_slot} 127.0.0.1:{gcra_owner}")
    );
    assert_eq!(get_str(&mut master, key).as_deref(), Some("3"));
    assert_eq!(get_str(&mut con, key).as_deref(), Some("3"));
}

// ---------------------------------------------------------------------------
// Failover
// ---------------------------------------------------------------------------

/// What the failover test's concurrent workload saw.
#[derive(Debug, Default)]
struct Hammered {
    /// Units admitted per key.
    admitted: BTreeMap<String, u64>,
    /// Calls before, during and after the failover.
    calls: [usize; 3],
    /// Admitted calls before, during and after the failover.
    admissions: [usize; 3],
}

/// Checks keys round-robin, each until refused, through its own cluster
/// connection, until the failover is over and every key has been refused.
/// A key `(from, key, limiter)` is checked from phase `from` on: 0 from
/// the start, 1 from the moment the failover starts, 2 once it is over.
fn hammer(
    client: redis::cluster::ClusterClient,
    keys: Vec<(usize, String, Limiter)>,
    phase: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
) -> Hammered {
    let mut con = client.get_connection().unwrap();
    let deadline = Instant::now() + WORKLOAD_DEADLINE;
    let mut seen = Hammered::default();
    let mut refused: BTreeSet<&str> = BTreeSet::new();
    loop {
        let now = phase.load(Ordering::SeqCst);
        if now == 2 && refused.len() == keys.len() {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "workload not done within {WORKLOAD_DEADLINE:?}: {seen:?}"
        );
        let started: Vec<&(usize, String, Limiter)> =
            keys.iter().filter(|(from, _, _)| *from <= now).collect();
        let active: Vec<_> = started
            .iter()
            .filter(|(_, key, _)| !refused.contains(key.as_str()))
            .collect();
        // With every started key refused, keep checking a few of them
        // (they must stay refused) until the next phase.
        let round: Vec<_> = if active.is_empty() {
            started.iter().take(3).collect()
        } else {
            active
        };
        for (_, key, limiter) in round {
            let reply = limiter.call(&mut con, &limiter.take(key, 1));
            seen.calls[now] += 1;
            calls.fetch_add(1, Ordering::SeqCst);
            if reply.admitted() {
                assert!(
                    !refused.contains(key.as_str()),
                    "{key}: admitted after a refusal"
                );
                *seen.admitted.entry(key.clone()).or_default() += 1;
                seen.admissions[now] += 1;
            } else {
                refused.insert(key);
            }
        }
    }
}

/// Waits until `calls` reaches `target`.
fn wait_for_calls(calls: &AtomicUsize, target: usize) {
    let deadline = Instant::now() + WORKLOAD_DEADLINE;
    while calls.load(Ordering::SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "the workload made {} calls, not {target}, within {WORKLOAD_DEADLINE:?}",
            calls.load(Ordering::SeqCst)
        );
        sleep(Duration::from_millis(1));
    }
}

#[test]
fn cluster_failover_keeps_every_limiter_where_it_was() {
    let cluster = Cluster::start(3, 1);
    let single = Server::start();
    let mut mirror = Mirror::new(&cluster, &single);

    // 80 limiters of 20, cost 1 to 3, half of them used up, the other half
    // partly.
    let keys: Vec<(String, Limiter, u64)> = (0..80)
        .map(|i| {
            let kind = KINDS[i % KINDS.len()];
            let cost = if kind == THROTTLE {
                1
            } else {
                (i / KINDS.len()) % 3 + 1
            };
            (format!("fo:{i}"), kind.lasting(20), cost as u64)
        })
        .collect();
    let mut admitted: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, (key, limiter, cost)) in keys.iter().enumerate() {
        let calls = if i % 2 == 0 { usize::MAX } else { i % 5 + 1 };
        for _ in 0..calls {
            let reply = mirror.call(limiter, key, *cost, false);
            if !reply.admitted() {
                break;
            }
            *admitted.entry(key).or_default() += cost;
        }
    }

    // The master to fail over, and its keys as they are.
    let names: Vec<&str> = keys.iter().map(|(k, _, _)| k.as_str()).collect();
    let owners = cluster.masters_for_keys(&names);
    let old_master = cluster.masters()[0];
    let moving: Vec<&str> = names
        .iter()
        .copied()
        .filter(|k| owners[k] == old_master)
        .collect();
    assert!(
        moving.len() >= 10,
        "only {} keys on {old_master}",
        moving.len()
    );
    for master in cluster.masters() {
        cluster.wait_replicas(master);
    }
    // Values and absolute expiries, read on a master or (READONLY) a replica.
    let snapshot = |port: u16| -> Vec<Stored> {
        let mut con = cluster.connect(port);
        run::<()>(&mut con, &["READONLY"]);
        moving.iter().map(|k| stored(&mut con, k)).collect()
    };
    let before = snapshot(old_master);
    assert!(
        before.iter().all(|s| s.value.is_some() && s.expires_at > 0),
        "{before:?}"
    );
    let peek = |mirror: &mut Mirror| -> Vec<Reply> {
        keys.iter()
            .map(|(k, l, c)| mirror.call(l, k, *c, true))
            .collect()
    };
    let peeks_before = peek(&mut mirror);

    // A concurrent workload on other keys, on every master, across the
    // failover: fixed windows, sliding windows and token buckets of 100 to
    // 400, each checked until refused.
    let algorithms = algorithms();
    let hammered = |prefix: &str, n: usize| -> Vec<(String, Limiter)> {
        (0..n)
            .map(|i| {
                let capacity = 100 * (i as u64 % 4 + 1);
                let kind = algorithms[i % algorithms.len()];
                (format!("{prefix}:{i}"), kind.lasting(capacity))
            })
            .collect()
    };
    let all: Vec<(usize, String, Limiter)> = (0..3)
        .flat_map(|from| {
            hammered(["before", "during", "after"][from], 10)
                .into_iter()
                .map(move |(key, limiter)| (from, key, limiter))
        })
        .collect();
    let all_names: Vec<&str> = all.iter().map(|(_, k, _)| k.as_str()).collect();
    let hammer_owners = cluster.masters_for_keys(&all_names);
    for master in cluster.masters() {
        assert!(
            hammer_owners.values().any(|&p| p == master),
            "no concurrent key on {master}"
        );
    }
    let phase = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let worker = {
        let (client, phase, calls) = (cluster.client(), phase.clone(), calls.clone());
        let keys = all.clone();
        std::thread::spawn(move || hammer(client, keys, phase, calls))
    };
    wait_for_calls(&calls, 200);

    let started = Instant::now();
    phase.store(1, Ordering::SeqCst);
    let new_master = cluster.failover(old_master);
    phase.store(2, Ordering::SeqCst);
    eprintln!(
        "failover of {old_master} to {new_master}: {:?}",
        started.elapsed()
    );

    // The promoted replica has every key as it was, to the millisecond.
    assert_eq!(snapshot(new_master), before, "keys on the promoted replica");
    for key in &moving {
        assert_eq!(cluster.master_for_key(key), new_master, "{key}");
    }
    // PEEK through the (same) cluster client says what it said before.
    let peeks_after = peek(&mut mirror);
    for (((key, _, _), a), b) in keys.iter().zip(&peeks_after).zip(&peeks_before) {
        assert_same_decision(key, *a, *b, mirror.span_ms());
    }

    // Every limiter goes on where it was: used-up ones stay refused, the
    // others count down from where they were, and in all no more than the
    // limit is ever admitted.
    for (i, (key, limiter, cost)) in keys.iter().enumerate() {
        let before_total = admitted.get(key.as_str()).copied().unwrap_or(0);
        let mut first = true;
        loop {
            let reply = mirror.call(limiter, key, *cost, false);
            if first && i % 2 == 0 {
                assert!(!reply.admitted(), "{key}: used up, admitted again");
            }
            if first && reply.admitted() {
                assert_eq!(
                    reply.remaining() as u64,
                    limiter.capacity - before_total - cost,
                    "{key}: remaining after the failover {reply:?}"
                );
            }
            first = false;
            if !reply.admitted() {
                let total = admitted.get(key.as_str()).copied().unwrap_or(0);
                assert_eq!(
                    reply.remaining() as u64,
                    limiter.capacity - total,
                    "{key}: refused {reply:?} after {total} units"
                );
                break;
            }
            *admitted.entry(key).or_default() += cost;
        }
        let total = admitted.get(key.as_str()).copied().unwrap_or(0);
        assert_eq!(
            total,
            20 / cost * cost,
            "{key}: admitted {total} units in all"
        );
    }
    // The old master, now a replica of the new one, follows it exactly.
    cluster.wait_replicas(new_master);
    assert_eq!(
        snapshot(old_master),
        snapshot(new_master),
        "the demoted master vs the new one"
    );

    let seen = worker.join().expect("the concurrent workload failed");
    eprintln!(
        "concurrent workload: calls {:?}, admitted {:?} (before, during, after the failover)",
        seen.calls, seen.admissions
    );
    assert!(seen.admissions[1] > 0 && seen.admissions[2] > 0);
    let final_owners = cluster.masters_for_keys(&all_names);
    for (_, key, limiter) in &all {
        let units = seen.admitted.get(key).copied().unwrap_or(0);
        assert_eq!(units, limiter.capacity, "{key}: admitted {units}");
        let mut con = cluster.connect(final_owners[key.as_str()]);
        let value = get_str(&mut con, key);
        let expected = match limiter.kind {
            FIXED => Some(units.to_string()),
            SLIDING => Some(format!("S0:{units}")),
            _ => value.clone(),
        };
        assert_eq!(value, expected, "{key}");
    }
    let all: Vec<(String, Limiter)> = all.into_iter().map(|(_, k, l)| (k, l)).collect();
    assert_keys_where_they_belong(&cluster, &all, None);
    let fo_keys: Vec<(String, Limiter)> = keys.iter().map(|(k, l, _)| (k.clone(), *l)).collect();
    assert_keys_where_they_belong(&cluster, &fo_keys, Some(&mut mirror.single));
}
