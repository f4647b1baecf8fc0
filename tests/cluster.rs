//! The module in Redis Cluster: routing by key (MOVED, CROSSSLOT), hash-tagged
//! groups in one transaction, replicas, and a manual failover in the middle
//! of a workload.
//!
//! Every test starts its own cluster (`common::cluster`), all on 127.0.0.1,
//! killed when the test ends, also when it fails. Outcomes are made
//! independent of timing: periods are long enough (an hour, or up to 10^9 s)
//! that no window ends and no token comes back during a test, so
//! `allowed`, `remaining` and `limit` depend only on the sequence of calls;
//! the time fields are only compared within the time the run took.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{all_keys, error_of, exists, get_str, pexpiretime, run, server_ms, Server};
use redis::{ConnectionLike, Value};

/// Deadline for the concurrent workload of the failover test.
const WORKLOAD_DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd
}

/// A command replying five integers (CHECK, PEEK, THROTTLE), on a plain or
/// a cluster connection.
fn five(con: &mut dyn ConnectionLike, args: &[&str]) -> [i64; 5] {
    let reply: Vec<i64> = cmd(args)
        .query(con)
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    reply.try_into().unwrap_or_else(|r: Vec<i64>| {
        panic!("{}: expected five integers, got {r:?}", args.join(" "))
    })
}

/// A command replying an integer (RESET).
fn int(con: &mut dyn ConnectionLike, args: &[&str]) -> i64 {
    cmd(args)
        .query(con)
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")))
}

fn try_run(con: &mut dyn ConnectionLike, args: &[&str]) -> redis::RedisResult<Value> {
    cmd(args).query(con)
}

/// A deterministic pseudo-random sequence (a 64-bit LCG, high bits).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// A limiter of the workloads: an algorithm with its parameters, chosen so
/// that nothing depends on when a call runs: fixed windows of an hour,
/// sliding windows of 10^9 s (aligned to the epoch: the current one began in
/// 2001 and ends in 2033), token buckets and THROTTLE refilling one unit in
/// over a day.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Fixed,
    Sliding,
    Token { burst: u64 },
    Throttle,
}

#[derive(Clone, Copy, Debug)]
struct Limiter {
    kind: Kind,
    limit: u64,
}

impl Limiter {
    /// The call: CHECK (or PEEK) with `cost`, or THROTTLE with `cost` as
    /// the quantity (0 to look, for PEEK).
    fn args(&self, key: &str, cost: u64, peek: bool) -> Vec<String> {
        let command = if peek {
            "RATELIMIT.PEEK"
        } else {
            "RATELIMIT.CHECK"
        };
        let limit = self.limit.to_string();
        let cost = cost.to_string();
        let strings = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
        match self.kind {
            Kind::Fixed => strings(&[command, key, &limit, "3600", "COST", &cost]),
            Kind::Sliding => strings(&[
                command,
                key,
                &limit,
                "1000000000",
                "ALGORITHM",
                "SLIDING",
                "COST",
                &cost,
            ]),
            Kind::Token { burst } => strings(&[
                command,
                key,
                &limit,
                "1000000",
                "ALGORITHM",
                "TOKEN",
                "BURST",
                &burst.to_string(),
                "COST",
                &cost,
            ]),
            Kind::Throttle => strings(&[
                "RATELIMIT.THROTTLE",
                key,
                &(self.limit - 1).to_string(),
                "1",
                "1000000",
                if peek { "0" } else { &cost },
            ]),
        }
    }

    fn throttle(&self) -> bool {
        matches!(self.kind, Kind::Throttle)
    }

    /// Whether a reply admitted the request.
    fn allowed(&self, reply: &[i64; 5]) -> bool {
        if self.throttle() {
            reply[0] == 0
        } else {
            reply[0] == 1
        }
    }

    /// `remaining` in a reply.
    fn remaining(&self, reply: &[i64; 5]) -> i64 {
        if self.throttle() {
            reply[2]
        } else {
            reply[1]
        }
    }

    /// The most units a limiter can ever have admitted at once.
    fn capacity(&self) -> u64 {
        match self.kind {
            Kind::Token { burst } => burst,
            _ => self.limit,
        }
    }
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Asserts that two replies to the same call, one from the cluster and one
/// from a single server, are the same decision: the same `allowed`,
/// `remaining` and `limit` (THROTTLE: `limited`, limit, `remaining`), the
/// same -1 or 0 in the time fields, and otherwise times no further apart
/// than the run has lasted (`span_ms`, in both directions: each side's
/// window or bucket began and the call ran at some point of the run).
fn assert_same_decision(
    what: &str,
    throttle: bool,
    cluster: [i64; 5],
    single: [i64; 5],
    span_ms: i64,
) {
    assert_eq!(
        cluster[..3],
        single[..3],
        "{what}: cluster {cluster:?}, single server {single:?}"
    );
    let tolerance = if throttle {
        // Seconds, rounded up: one more for the rounding.
        2 * span_ms / 1000 + 2
    } else {
        2 * span_ms + 2
    };
    for field in 3..5 {
        let (a, b) = (cluster[field], single[field]);
        if a <= 0 || b <= 0 {
            assert_eq!(
                a, b,
                "{what}: field {field}: cluster {cluster:?}, single server {single:?}"
            );
        } else {
            assert!(
                (a - b).abs() <= tolerance,
                "{what}: field {field} differs by more than {tolerance}: cluster {cluster:?}, single server {single:?}"
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
    fn query<T: redis::FromRedisValue>(&mut self, port: u16, args: &[&str]) -> T {
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
        let reply = reply.unwrap_or_else(|e| panic!("{} on {port}: {e}", args.join(" ")));
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

    fn cluster_query<T: redis::FromRedisValue>(&mut self, via: Via, args: &[&str]) -> T {
        match via {
            Via::Client => cmd(args)
                .query(&mut self.cluster)
                .unwrap_or_else(|e| panic!("{}: {e}", args.join(" "))),
            Via::Node(port) => self.nodes.query(port, args),
        }
    }

    /// One call on both, through the cluster client; returns the cluster's
    /// reply.
    fn call(&mut self, limiter: &Limiter, key: &str, cost: u64, peek: bool) -> [i64; 5] {
        self.call_via(Via::Client, limiter, key, cost, peek)
    }

    fn call_via(
        &mut self,
        via: Via,
        limiter: &Limiter,
        key: &str,
        cost: u64,
        peek: bool,
    ) -> [i64; 5] {
        let args = limiter.args(key, cost, peek);
        let args = as_strs(&args);
        let cluster: Vec<i64> = self.cluster_query(via, &args);
        let cluster: [i64; 5] = cluster.try_into().unwrap();
        let single = five(&mut self.single, &args);
        assert_same_decision(
            &args.join(" "),
            limiter.throttle(),
            cluster,
            single,
            self.span_ms(),
        );
        cluster
    }

    /// RESET on both; returns the cluster's reply.
    fn reset(&mut self, via: Via, keys: &[&str]) -> i64 {
        let mut args = vec!["RATELIMIT.RESET"];
        args.extend_from_slice(keys);
        let cluster: i64 = self.cluster_query(via, &args);
        let single = int(&mut self.single, &args);
        assert_eq!(cluster, single, "{}", args.join(" "));
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
        if matches!(limiter.kind, Kind::Fixed | Kind::Sliding) {
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
    let limits = [1, 2, 3, 5, 8, 13];
    let keys: Vec<(String, Limiter)> = (0..300)
        .map(|i| {
            let limit = limits[(i / 4) % limits.len()];
            let kind = match i % 4 {
                0 => Kind::Fixed,
                1 => Kind::Sliding,
                2 => Kind::Token {
                    burst: if i % 8 < 4 { limit } else { 2 * limit },
                },
                _ => Kind::Throttle,
            };
            (format!("same:{i}"), Limiter { kind, limit })
        })
        .collect();
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
    let mut rng = Lcg(42);
    let (mut admitted, mut denied, mut resets) = (0, 0, 0);
    let costs = [1, 1, 1, 2, 3, 0];
    for _ in 0..3000 {
        let (key, limiter) = &keys[rng.below(keys.len() as u64) as usize];
        let via = match rng.below(2 * masters.len() as u64) as usize {
            n if n < masters.len() => Via::Node(masters[n]),
            _ => Via::Client,
        };
        match rng.below(20) {
            0 => resets += mirror.reset(via, &[key]),
            1..=3 => {
                mirror.call_via(via, limiter, key, 1, true);
            }
            _ => {
                let cost = costs[rng.below(costs.len() as u64) as usize];
                let reply = mirror.call_via(via, limiter, key, cost, false);
                if limiter.allowed(&reply) {
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
    let replies: Vec<Vec<i64>> = pipe.query(&mut con).unwrap();
    assert_eq!(replies.len(), 12);
    let firsts = |r: &[Vec<i64>], i: usize| (r[i][0], r[i][1], r[i][2]);
    // (allowed, remaining, limit) per round.
    let expected_api = [(1, 2, 3), (1, 1, 3), (1, 0, 3), (0, 0, 3)];
    let expected_upload = [(1, 3, 5), (1, 1, 5), (0, 1, 5), (0, 1, 5)];
    let expected_login = [(1, 1, 2), (1, 0, 2), (0, 0, 2), (0, 0, 2)];
    for round in 0..4 {
        assert_eq!(
            firsts(&replies, 3 * round),
            expected_api[round],
            "api, round {round}"
        );
        assert_eq!(
            firsts(&replies, 3 * round + 1),
            expected_upload[round],
            "upload, round {round}"
        );
        assert_eq!(
            firsts(&replies, 3 * round + 2),
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
    assert_eq!(
        int(&mut client, &["RATELIMIT.RESET", api, upload, login]),
        3
    );
    for key in [api, upload, login] {
        assert!(!exists(&mut con, key), "{key} still exists");
    }
    assert_eq!(
        int(&mut client, &["RATELIMIT.RESET", api, upload, login]),
        0
    );
    // And starts afresh.
    assert_eq!(
        five(&mut client, &["RATELIMIT.CHECK", api, "3", "60"])[..3],
        [1, 2, 3]
    );
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
        five(&mut client, &["RATELIMIT.CHECK", key, "10", "3600"]);
        five(&mut client, &["RATELIMIT.CHECK", key, "10", "3600"]);
    }
    let state = |key: &str| {
        let mut con = cluster.connect(cluster.master_for_key(key));
        (get_str(&mut con, key), pexpiretime(&mut con, key))
    };
    let before: Vec<_> = keys.iter().map(|k| state(k)).collect();
    for (key, (value, expiry)) in keys.iter().zip(&before) {
        assert_eq!(value.as_deref(), Some("2"), "{key}");
        assert!(*expiry > 0, "{key}: expiry {expiry}");
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
        assert_eq!(int(&mut client, &["RATELIMIT.RESET", key]), 1, "{key}");
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
        let state = || {
            let mut con = cluster.connect(owner);
            (get_str(&mut con, key), pexpiretime(&mut con, key))
        };
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
        five(&mut client, &["RATELIMIT.CHECK", key, "10", "3600"]);
    }
    five(
        &mut client,
        &["RATELIMIT.THROTTLE", "replica:gcra", "4", "1", "1000000"],
    );
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
    let on_replica = five(&mut con, &peek);
    let after = server_ms(&mut con);
    let on_master = five(&mut master, &peek);
    assert_eq!(on_replica[..4], [1, 7, 10, -1]);
    assert_eq!(on_master[..4], on_replica[..4]);
    // The window ends when the master says, counted from the replica's now.
    let end = pexpiretime(&mut master, key);
    assert_eq!(pexpiretime(&mut con, key), end);
    assert!(
        (end - after..=end - before).contains(&on_replica[4]),
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
            let args = limiter.args(key, 1, false);
            let reply = five(&mut con, &as_strs(&args));
            seen.calls[now] += 1;
            calls.fetch_add(1, Ordering::SeqCst);
            if limiter.allowed(&reply) {
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
            let kind = match i % 4 {
                0 => Kind::Fixed,
                1 => Kind::Sliding,
                2 => Kind::Token { burst: 20 },
                _ => Kind::Throttle,
            };
            let cost = if matches!(kind, Kind::Throttle) {
                1
            } else {
                (i / 4) % 3 + 1
            };
            (format!("fo:{i}"), Limiter { kind, limit: 20 }, cost as u64)
        })
        .collect();
    let mut admitted: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, (key, limiter, cost)) in keys.iter().enumerate() {
        let calls = if i % 2 == 0 { usize::MAX } else { i % 5 + 1 };
        for _ in 0..calls {
            let reply = mirror.call(limiter, key, *cost, false);
            if !limiter.allowed(&reply) {
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
    let snapshot = |port: u16| -> Vec<(Option<String>, i64)> {
        let mut con = cluster.connect(port);
        run::<()>(&mut con, &["READONLY"]);
        moving
            .iter()
            .map(|k| (get_str(&mut con, k), pexpiretime(&mut con, k)))
            .collect()
    };
    let before = snapshot(old_master);
    assert!(
        before.iter().all(|(v, e)| v.is_some() && *e > 0),
        "{before:?}"
    );
    let peek = |mirror: &mut Mirror| -> Vec<[i64; 5]> {
        keys.iter()
            .map(|(k, l, c)| mirror.call(l, k, *c, true))
            .collect()
    };
    let peeks_before = peek(&mut mirror);

    // A concurrent workload on other keys, on every master, across the
    // failover: fixed windows, sliding windows and token buckets of 100 to
    // 400, each checked until refused.
    let hammered = |prefix: &str, n: usize| -> Vec<(String, Limiter)> {
        (0..n)
            .map(|i| {
                let limit = 100 * (i as u64 % 4 + 1);
                let kind = match i % 3 {
                    0 => Kind::Fixed,
                    1 => Kind::Sliding,
                    _ => Kind::Token { burst: limit },
                };
                (format!("{prefix}:{i}"), Limiter { kind, limit })
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
    for (((key, limiter, _), a), b) in keys.iter().zip(&peeks_after).zip(&peeks_before) {
        assert_same_decision(key, limiter.throttle(), *a, *b, mirror.span_ms());
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
                assert!(!limiter.allowed(&reply), "{key}: used up, admitted again");
            }
            if first && limiter.allowed(&reply) {
                assert_eq!(
                    limiter.remaining(&reply) as u64,
                    limiter.capacity() - before_total - cost,
                    "{key}: remaining after the failover {reply:?}"
                );
            }
            first = false;
            if !limiter.allowed(&reply) {
                let total = admitted.get(key.as_str()).copied().unwrap_or(0);
                assert_eq!(
                    limiter.remaining(&reply) as u64,
                    limiter.capacity() - total,
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
        assert_eq!(units, limiter.capacity(), "{key}: admitted {units}");
        let mut con = cluster.connect(final_owners[key.as_str()]);
        let value = get_str(&mut con, key);
        let expected = match limiter.kind {
            Kind::Fixed => Some(units.to_string()),
            Kind::Sliding => Some(format!("S0:{units}")),
            _ => value.clone(),
        };
        assert_eq!(value, expected, "{key}");
    }
    let all: Vec<(String, Limiter)> = all.into_iter().map(|(_, k, l)| (k, l)).collect();
    assert_keys_where_they_belong(&cluster, &all, None);
    let fo_keys: Vec<(String, Limiter)> = keys.iter().map(|(k, l, _)| (k.clone(), *l)).collect();
    assert_keys_where_they_belong(&cluster, &fo_keys, Some(&mut mirror.single));
}
