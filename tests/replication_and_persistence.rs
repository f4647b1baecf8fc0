//! Limiters through replication and persistence: replicas (with and
//! without the module, attached before or after the writes), a replica's
//! MONITOR and its promotion, RDB snapshots and the AOF (across a rewrite,
//! and after windows ended while the server was down) all end with the same
//! values and absolute expiries, because the module propagates effects as
//! plain `SET … PXAT`, `INCR`/`INCRBY` and `DEL`, never itself; and a
//! limiter continues from that state: a full window stays full, a partly
//! used one keeps counting, a token bucket keeps its debt.
//!
//! One setup for replicas (`replication_master`, `attach_replicas`,
//! `master_with_replicas`) and one for restarts (`DataDir`: servers started
//! one after another on the same files), from the kit. Three workloads:
//! CHECK's fixed window in every way it writes (and does not), every
//! command and algorithm, and limiters whose decisions are followed across
//! a restart. Those decisions are made on limiters whose state cannot
//! change by itself within a test: hour-long windows and buckets refilled at
//! one token per hour. A sliding window is aligned to the epoch, so a test
//! may cross the start of an hour; the counts asserted are those both sides
//! of such a boundary give (a few seconds into a new window, the previous
//! window's counts weigh all but a sliver).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{
    all_keys, assert_replica_took_everything, attach_replicas, check, error_of, exists, get_str,
    master_with_replicas, peek, pexpiretime, propagated_by, raw, replication_master, reset, run,
    server_ms, stored, throttle, wait_for_rewrite, wait_replicas, Builder, Command, DataDir,
    Dataset, Decision, Kind, Limiter, Server, Stored, Throttled, KINDS, REPLICATION_DEADLINE,
};
use redis::{Connection, Value};

/// Added to a server-given wait so that the window has surely ended.
const MARGIN_MS: u64 = 30;

/// The databases the workloads of every command and of continuing
/// decisions write to.
const DATABASES: [u32; 2] = [0, 3];

/// Value and absolute expiry of every key in [`DATABASES`].
fn snapshot(con: &mut Connection) -> Dataset {
    Dataset::read(con, &DATABASES)
}

/// The kinds of limiter `entries` hold, each asserted to hold a limiter's
/// value with an expiry.
fn kinds_held<'a>(entries: impl Iterator<Item = (&'a [u8], &'a Stored)>) -> BTreeSet<&'static str> {
    entries
        .map(|(key, state)| {
            let key = key.escape_ascii();
            let value = state
                .value
                .as_deref()
                .unwrap_or_else(|| panic!("{key} has no value"));
            assert!(state.expires_at > 0, "{key} has no expiry");
            let kind = Kind::of_value(value)
                .unwrap_or_else(|| panic!("{key} holds {}", value.escape_ascii()));
            kind.name
        })
        .collect()
}

/// Every kind's name.
fn every_kind() -> BTreeSet<&'static str> {
    KINDS.iter().map(|k| k.name).collect()
}

// ---------------------------------------------------------------------------
// CHECK's fixed window
// ---------------------------------------------------------------------------

/// Keys a workload left on the master, and keys it must not have created.
struct Touched {
    written: Vec<Vec<u8>>,
    untouched: Vec<Vec<u8>>,
}

/// Checks done before any replica is attached (reach it by full sync).
fn fixed_windows_before_sync(con: &mut Connection) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for i in 0..5 {
        let key = format!("pre:{i}");
        for _ in 0..=i {
            check(con, &key, 3, 60, &[]);
        }
        keys.push(key.into_bytes());
    }
    keys
}

/// A mix of everything CHECK's fixed window writes (and does not write).
fn fixed_window_workload(con: &mut Connection) -> Touched {
    let mut written: Vec<Vec<u8>> = Vec::new();
    let mut untouched: Vec<Vec<u8>> = Vec::new();

    // Admitted and denied requests on many keys.
    for i in 0..40 {
        let key = format!("rep:many:{i}");
        for _ in 0..(i % 5 + 1) {
            check(con, &key, 3, 60, &[]);
        }
        written.push(key.into_bytes());
    }
    // Costs: one fits, one fits exactly, one is denied.
    for cost in ["3", "7", "5"] {
        check(con, "rep:cost", 10, 60, &["COST", cost]);
    }
    written.push(b"rep:cost".to_vec());
    // Only looks, and a cost that never fits: no key.
    for _ in 0..3 {
        check(con, "rep:look", 5, 60, &["COST", "0"]);
        check(con, "rep:never", 5, 60, &["COST", "6"]);
    }
    untouched.push(b"rep:look".to_vec());
    untouched.push(b"rep:never".to_vec());
    // Looks and denials on an existing window propagate nothing either
    // (checked through the values staying equal).
    check(con, "rep:full", 1, 60, &[]);
    check(con, "rep:full", 1, 60, &[]);
    check(con, "rep:full", 1, 60, &["COST", "0"]);
    written.push(b"rep:full".to_vec());
    // Bare counters: admitted, denied (gets a TTL), looked at (keeps none).
    let _: () = run(con, &["SET", "rep:bare", "3"]);
    check(con, "rep:bare", 5, 60, &[]);
    let _: () = run(con, &["SET", "rep:bare-over", "9"]);
    check(con, "rep:bare-over", 5, 60, &[]);
    let _: () = run(con, &["SET", "rep:bare-look", "2"]);
    check(con, "rep:bare-look", 5, 60, &["COST", "0"]);
    written.extend([
        b"rep:bare".to_vec(),
        b"rep:bare-over".to_vec(),
        b"rep:bare-look".to_vec(),
    ]);
    // Inside MULTI/EXEC and Lua.
    let mut pipe = redis::pipe();
    pipe.atomic();
    for _ in 0..4 {
        pipe.cmd("RATELIMIT.CHECK").arg("rep:multi").arg(3).arg(60);
    }
    let _: Value = pipe.query(con).unwrap();
    written.push(b"rep:multi".to_vec());
    let _: i64 = redis::cmd("EVAL")
        .arg(
            "for i = 1, 5 do redis.call('RATELIMIT.CHECK', KEYS[1], '4', '60') end
             redis.call('RATELIMIT.CHECK', KEYS[1], '4', '60', 'COST', '0')
             return 0",
        )
        .arg(1)
        .arg("rep:lua")
        .query(con)
        .unwrap();
    written.push(b"rep:lua".to_vec());
    // Binary and empty keys.
    for key in [&b"\xff\xfe"[..], b""] {
        check(con, key, 2, 60, &[]);
        written.push(key.to_vec());
    }
    // A window that ends, then a new one (with a longer period, so that it
    // outlives the comparison).
    check(con, "rep:renew", 1, 1, &[]);
    let retry = check(con, "rep:renew", 1, 1, &[]).retry_after_ms;
    assert!(retry > 0 && retry <= 1000, "{retry}");
    sleep(Duration::from_millis(retry as u64 + MARGIN_MS));
    let renewed = check(con, "rep:renew", 1, 60, &[]);
    assert_eq!((renewed.allowed, renewed.remaining), (true, 0));
    written.push(b"rep:renew".to_vec());

    Touched { written, untouched }
}

/// Asserts that `replica` holds exactly what `master` holds for `keys`
/// (values and absolute expiries) and nothing more.
fn assert_same_data(master: &mut Connection, replica: &mut Connection, workload: &Touched) {
    for key in &workload.written {
        let state = stored(master, key.as_slice());
        assert!(state.value.is_some(), "master lacks {key:?}");
        assert_eq!(stored(replica, key.as_slice()), state, "{key:?}");
    }
    for key in &workload.untouched {
        assert!(!exists(master, key.as_slice()), "master has {key:?}");
        assert!(!exists(replica, key.as_slice()), "replica has {key:?}");
    }
    assert_eq!(all_keys(replica), all_keys(master));
}

/// Runs the workloads on a master with replicas attached, and checks every
/// replica ends identical.
fn assert_replicas_follow_fixed_windows(replica_builders: Vec<Builder>) -> Vec<Server> {
    let master = replication_master(Server::builder());
    let mut con = master.connect();
    let mut workload = Touched {
        written: fixed_windows_before_sync(&mut con),
        untouched: Vec::new(),
    };
    let replicas = attach_replicas(&master, replica_builders);

    // A denial, a look and a cost that never fits propagate nothing: the
    // replication stream does not grow. A counted request does.
    check(&mut con, "rep:quiet", 1, 60, &[]);
    let quiet = propagated_by(&mut con, |con| {
        check(con, "rep:quiet", 1, 60, &[]);
        check(con, "rep:quiet", 1, 60, &["COST", "0"]);
        check(con, "rep:quiet", 1, 60, &["COST", "5"]);
        check(con, "rep:quiet-look", 1, 60, &["COST", "0"]);
        check(con, "rep:quiet-never", 1, 60, &["COST", "2"]);
    });
    assert_eq!(quiet, 0, "something was propagated");
    let counted = propagated_by(&mut con, |con| {
        check(con, "rep:quiet-counted", 1, 60, &[]);
    });
    assert!(counted > 0, "nothing was propagated");
    workload.written.push(b"rep:quiet".to_vec());
    workload.written.push(b"rep:quiet-counted".to_vec());
    workload.untouched.push(b"rep:quiet-look".to_vec());
    workload.untouched.push(b"rep:quiet-never".to_vec());

    let more = fixed_window_workload(&mut con);
    // Another database: the effects must land in the same one.
    let mut other_db = master.connect();
    let _: () = run(&mut other_db, &["SELECT", "7"]);
    check(&mut other_db, "rep:db7", 5, 60, &[]);
    check(&mut other_db, "rep:db7", 5, 60, &["COST", "2"]);
    workload.written.extend(more.written);
    workload.untouched.extend(more.untouched);

    wait_replicas(&mut con, replicas.len());
    for replica in &replicas {
        let mut rcon = replica.connect();
        assert_same_data(&mut con, &mut rcon, &workload);
        let _: () = run(&mut rcon, &["SELECT", "7"]);
        assert_eq!(get_str(&mut rcon, "rep:db7").as_deref(), Some("3"));
        assert_eq!(
            pexpiretime(&mut rcon, "rep:db7"),
            pexpiretime(&mut other_db, "rep:db7")
        );
        assert_replica_took_everything(replica);
    }
    replicas
}

#[test]
fn replication_check_replica_ends_with_the_same_values_and_expiries() {
    let replicas = assert_replicas_follow_fixed_windows(vec![Server::builder()]);
    // `write`: a replica refuses the command from its own clients.
    let mut rcon = replicas[0].connect();
    let err = error_of(raw(
        &mut rcon,
        &[b"RATELIMIT.CHECK", b"rep:on-replica", b"5", b"60"],
    ));
    assert!(err.starts_with("READONLY"), "{err}");
}

#[test]
fn replication_check_replica_without_the_module_ends_identical() {
    // A replica that does not know RATELIMIT.CHECK can only follow if the
    // master propagates plain SETs.
    assert_replicas_follow_fixed_windows(vec![Server::builder().without_module()]);
}

/// Value and absolute expiry of each key.
fn stored_keys(con: &mut Connection, keys: &[&str]) -> Vec<Stored> {
    keys.iter().map(|k| stored(con, k)).collect()
}

#[test]
fn persistence_check_state_survives_an_aof_restart() {
    let data = DataDir::new();
    let keys = ["aof:a", "aof:b", "aof:bare", "aof:bare-over"];

    let server = data.aof().start();
    let mut con = server.connect();
    for _ in 0..3 {
        check(&mut con, "aof:a", 5, 60, &[]);
    }
    check(&mut con, "aof:b", 2, 120, &["COST", "2"]);
    check(&mut con, "aof:b", 2, 120, &[]);
    check(&mut con, "aof:look", 2, 120, &["COST", "0"]);
    let _: () = run(&mut con, &["SET", "aof:bare", "1"]);
    check(&mut con, "aof:bare", 5, 60, &[]);
    let _: () = run(&mut con, &["SET", "aof:bare-over", "7"]);
    check(&mut con, "aof:bare-over", 5, 60, &[]);
    // Denials and looks write nothing to the AOF (written and fsynced
    // before the reply is sent, with `appendfsync always`).
    let size = data.aof_size();
    check(&mut con, "aof:b", 2, 120, &[]);
    check(&mut con, "aof:b", 2, 120, &["COST", "0"]);
    check(&mut con, "aof:look", 2, 120, &["COST", "0"]);
    check(&mut con, "aof:look", 2, 120, &["COST", "3"]);
    assert_eq!(data.aof_size(), size, "the AOF grew");

    let stored = stored_keys(&mut con, &keys);
    assert_eq!(
        stored.iter().map(Stored::text).collect::<Vec<_>>(),
        [Some("3"), Some("2"), Some("2"), Some("7")]
    );
    assert!(stored.iter().all(|s| s.expires_at > 0), "{stored:?}");
    server.shutdown();

    // Restarted with the module: same counts, same absolute expiries, and
    // counting goes on from there.
    let server = data.aof().start();
    let mut con = server.connect();
    assert_eq!(stored_keys(&mut con, &keys), stored);
    assert!(!exists(&mut con, "aof:look"));
    assert_eq!(
        check(&mut con, "aof:a", 5, 60, &[]).without_reset(),
        (true, 1, 5, -1)
    );
    assert_eq!(
        check(&mut con, "aof:b", 2, 120, &[]).counts(),
        (false, 0, 2)
    );
    assert_eq!(
        check(&mut con, "aof:a", 5, 60, &["COST", "2"]).counts(),
        (false, 1, 5)
    );
    let stored = stored_keys(&mut con, &keys);
    assert_eq!(stored[0].text(), Some("4"));
    server.shutdown();

    // The files hold plain SETs with absolute expiries, never the command.
    let contents = data.aof_contents();
    assert!(!contents.contains("ratelimit"), "AOF:\n{contents}");
    assert!(contents.contains("pxat"), "AOF:\n{contents}");

    // A server without the module loads them.
    let server = data.aof().without_module().start();
    let mut con = server.connect();
    assert_eq!(stored_keys(&mut con, &keys), stored);
    assert!(!exists(&mut con, "aof:look"));
}

// ---------------------------------------------------------------------------
// Every command and algorithm
// ---------------------------------------------------------------------------

/// The limiters `quiet_calls` looks at: one of each kind, 3 units a minute,
/// on `wl:{kind}`.
fn quiet_limiters() -> Vec<(String, Limiter)> {
    KINDS
        .iter()
        .map(|k| (format!("wl:{}", k.lower()), k.limiter(3, 60)))
        .collect()
}

/// Keys the quiet calls only look at or are refused on: never created.
fn untouched() -> Vec<String> {
    let mut keys: Vec<String> = KINDS
        .iter()
        .map(|k| format!("wl:look:{}", k.lower()))
        .collect();
    keys.extend(["wl:never:token".to_string(), "wl:peek:missing".to_string()]);
    keys
}

/// Takes a unit from each of the limiters `quiet_calls` looks at.
fn quiet_setup(con: &mut Connection) {
    for (key, limiter) in quiet_limiters() {
        limiter.call(con, &limiter.take_one(&key));
    }
}

/// Calls that must change nothing, and so propagate nothing.
fn quiet_calls(con: &mut Connection) {
    for (key, limiter) in quiet_limiters() {
        // Peeks and looks on state in use; a denial (3 units, 2 left); a
        // quantity that never fits, under redis-cell's name.
        for cost in [0, 1, 9] {
            limiter.call(con, &limiter.look(&key, cost));
        }
        match limiter.kind.command {
            Command::Check => {
                limiter.call(con, &limiter.take(&key, 0));
                limiter.call(con, &limiter.take(&key, 3));
            }
            Command::Throttle => {
                let mut never = limiter.take(&key, 100);
                never[0] = "CL.THROTTLE".to_string();
                limiter.call(con, &never);
            }
        }
        // Looks at a limiter that does not exist.
        let missing = format!("wl:look:{}", limiter.kind.lower());
        limiter.call(con, &limiter.take(&missing, 0));
    }
    check(
        con,
        "wl:never:token",
        3,
        60,
        &["ALGORITHM", "TOKEN", "BURST", "2", "COST", "3"],
    );
    common::peek(con, "wl:peek:missing", 3, 60, &[]);
    assert_eq!(reset(con, &["wl:missing", "wl:missing2"]), 0);
}

/// A mix of everything the module does, on long-lived keys (every expiry a
/// minute or more away). Needs `CL.THROTTLE`.
fn every_command_workload(con: &mut Connection, tag: &str) {
    // Fixed window: admitted, up to and over the limit, with costs.
    for i in 0..6 {
        let key = format!("wl:{tag}:fixed:{i}");
        for _ in 0..=i {
            check(con, &key, 3, 60, &[]);
        }
        check(con, &key, 10, 60, &["COST", "4"]);
    }
    // Sliding window: admitted and denied, and counts carried from a
    // previous window written by hand.
    for i in 0..4 {
        let key = format!("wl:{tag}:sliding:{i}");
        for _ in 0..=i {
            check(con, &key, 3, 60, &["ALGORITHM", "SLIDING"]);
        }
    }
    let window = server_ms(con) / 60_000;
    let carried = format!("wl:{tag}:sliding:carried");
    let _: () = run(
        con,
        &[
            "SET",
            &carried,
            "S0:40",
            "PXAT",
            &((window + 1) * 60_000).to_string(),
        ],
    );
    for _ in 0..3 {
        check(
            con,
            &carried,
            50,
            60,
            &["ALGORITHM", "SLIDING", "COST", "5"],
        );
    }
    // Token buckets: whole-millisecond tokens and tokens of 8 571 3/7 ms
    // (a tick remainder in the value), burst above and below the limit.
    for (i, (limit, burst)) in [(1, "5"), (7, "7"), (7, "3"), (7, "20")]
        .into_iter()
        .enumerate()
    {
        let key = format!("wl:{tag}:token:{i}");
        for cost in ["1", "2", "4", "1"] {
            check(
                con,
                &key,
                limit,
                60,
                &["ALGORITHM", "TOKEN", "BURST", burst, "COST", cost],
            );
        }
    }
    // THROTTLE under both names: whole and fractional intervals, admitted
    // and limited.
    for (i, count) in ["1", "7"].into_iter().enumerate() {
        let key = format!("wl:{tag}:gcra:{i}");
        for quantity in ["1", "2", "3", "1"] {
            for name in ["RATELIMIT.THROTTLE", "CL.THROTTLE"] {
                run::<Throttled>(con, &[name, &key, "4", count, "60", quantity]);
            }
        }
    }
    // Removals: some keys, a missing one and a duplicate.
    let removed = reset(
        con,
        &[
            format!("wl:{tag}:fixed:0"),
            format!("wl:{tag}:sliding:0"),
            format!("wl:{tag}:token:0"),
            format!("wl:{tag}:gcra:0"),
            format!("wl:{tag}:missing"),
            format!("wl:{tag}:fixed:0"),
        ],
    );
    assert_eq!(removed, 4);
    // MULTI/EXEC and a script mixing all of them.
    let key = |name: &str| format!("wl:{tag}:{name}");
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("RATELIMIT.CHECK")
        .arg(key("multi:fixed"))
        .arg(2)
        .arg(60);
    pipe.cmd("RATELIMIT.CHECK")
        .arg(key("multi:sliding"))
        .arg(2)
        .arg(60)
        .arg("ALGORITHM")
        .arg("SLIDING");
    pipe.cmd("RATELIMIT.CHECK")
        .arg(key("multi:token"))
        .arg(7)
        .arg(60)
        .arg("ALGORITHM")
        .arg("TOKEN");
    pipe.cmd("RATELIMIT.THROTTLE")
        .arg(key("multi:gcra"))
        .arg(2)
        .arg(7)
        .arg(60);
    pipe.cmd("RATELIMIT.PEEK")
        .arg(key("multi:fixed"))
        .arg(2)
        .arg(60);
    pipe.cmd("RATELIMIT.RESET").arg(key("multi:sliding"));
    pipe.cmd("RATELIMIT.CHECK")
        .arg(key("multi:fixed"))
        .arg(2)
        .arg(60);
    pipe.cmd("RATELIMIT.CHECK")
        .arg(key("multi:fixed"))
        .arg(2)
        .arg(60);
    let _: Value = pipe.query(con).unwrap();
    let _: Value = redis::cmd("EVAL")
        .arg(
            "for i = 1, 4 do
                 redis.call('RATELIMIT.CHECK', KEYS[1], '3', '60')
                 redis.call('RATELIMIT.CHECK', KEYS[2], '3', '60', 'ALGORITHM', 'SLIDING')
                 redis.call('RATELIMIT.CHECK', KEYS[3], '7', '60', 'ALGORITHM', 'TOKEN', 'BURST', '3')
                 redis.call('RATELIMIT.THROTTLE', KEYS[4], '2', '7', '60')
                 redis.call('RATELIMIT.PEEK', KEYS[1], '3', '60')
             end
             redis.call('RATELIMIT.RESET', KEYS[2])
             return 0",
        )
        .arg(4)
        .arg(key("lua:fixed"))
        .arg(key("lua:sliding"))
        .arg(key("lua:token"))
        .arg(key("lua:gcra"))
        .query(con)
        .unwrap();
    // A binary key.
    let binary = format!("wl:{tag}:bin:");
    let mut binary = binary.into_bytes();
    binary.extend_from_slice(b"\xff\x00");
    check(con, &binary, 3, 60, &["ALGORITHM", "TOKEN"]);
    // Another database.
    let _: () = run(con, &["SELECT", "3"]);
    check(con, key("db3:fixed"), 3, 60, &[]);
    check(con, key("db3:sliding"), 3, 60, &["ALGORITHM", "SLIDING"]);
    check(con, key("db3:token"), 7, 60, &["ALGORITHM", "TOKEN"]);
    run::<Throttled>(con, &["CL.THROTTLE", &key("db3:gcra"), "2", "7", "60"]);
    let _: () = run(con, &["SELECT", "0"]);
}

/// Asserts the snapshot holds what the workload leaves: the expected kinds
/// of value, each with an expiry.
fn assert_every_command_plausible(snapshot: &Dataset) {
    let db0 = &snapshot.0[&0];
    assert!(db0.len() > 20, "only {} keys", db0.len());
    let entries = snapshot.entries().map(|(_, key, state)| (key, state));
    assert_eq!(kinds_held(entries), every_kind());
    // Some tokens and arrival times are not whole milliseconds.
    let fractional = db0
        .values()
        .filter_map(|s| s.value.as_deref())
        .filter(|v| Kind::of_value(v).is_some_and(|k| k.bucket) && v[1..] != *b"0")
        .count();
    assert!(fractional > 0, "no fractional state");
}

fn assert_nothing_untouched_exists(con: &mut Connection) {
    for key in untouched() {
        assert!(!exists(con, &key), "{key} was created");
    }
}

#[test]
fn replication_replicas_end_identical_after_every_command() {
    let master = replication_master(Server::builder().module_arg("CL-THROTTLE", "yes"));
    let mut con = master.connect();
    // Before the replicas attach: they get it by full sync.
    every_command_workload(&mut con, "pre");
    quiet_setup(&mut con);

    // One replica with the module (without CL.THROTTLE), one without it.
    let builders: Vec<Builder> = vec![Server::builder(), Server::builder().without_module()];
    let replicas = attach_replicas(&master, builders);
    wait_replicas(&mut con, replicas.len());

    // Looks, denials and peeks propagate nothing.
    assert_eq!(
        propagated_by(&mut con, quiet_calls),
        0,
        "a quiet call was propagated"
    );

    // After: through the replication stream.
    every_command_workload(&mut con, "post");
    wait_replicas(&mut con, replicas.len());

    let expected = snapshot(&mut con);
    assert_every_command_plausible(&expected);
    assert_nothing_untouched_exists(&mut con);
    for replica in &replicas {
        let mut rcon = replica.connect();
        snapshot(&mut rcon).assert_same(&expected, &format!("replica on port {}", replica.port()));
        assert_nothing_untouched_exists(&mut rcon);
        assert_replica_took_everything(replica);
    }
}

#[test]
fn persistence_aof_restart_restores_every_limiter() {
    let data = DataDir::new();
    let server = data.aof().module_arg("CL-THROTTLE", "yes").start();
    let mut con = server.connect();
    every_command_workload(&mut con, "aof");
    quiet_setup(&mut con);
    quiet_calls(&mut con);
    let stored = snapshot(&mut con);
    assert_every_command_plausible(&stored);
    server.shutdown();

    // The files hold the effects with absolute expiries, never the commands.
    let contents = data.aof_contents();
    assert!(!contents.contains("ratelimit"), "AOF:\n{contents}");
    assert!(!contents.contains("cl.throttle"), "AOF:\n{contents}");
    assert!(contents.contains("pxat"), "AOF:\n{contents}");
    assert!(contents.contains("$3\r\ndel\r\n"), "AOF:\n{contents}");

    // Restarted with the module: the same values and expiries.
    let server = data.aof().module_arg("CL-THROTTLE", "yes").start();
    let mut con = server.connect();
    snapshot(&mut con).assert_same(&stored, "restarted with the module");
    assert_nothing_untouched_exists(&mut con);
    server.shutdown();

    // And without it.
    let server = data.aof().without_module().start();
    let mut con = server.connect();
    snapshot(&mut con).assert_same(&stored, "restarted without the module");
    assert_nothing_untouched_exists(&mut con);
}

// ---------------------------------------------------------------------------
// Decisions that continue: the workload
// ---------------------------------------------------------------------------

/// Asserts the snapshot holds what `continuing_workload(tag)` leaves: 18
/// keys, every kind of limiter, each key with a value and an expiry.
fn assert_continuing_plausible(snapshot: &Dataset, tag: &str) {
    let prefix = format!("{tag}:");
    let tagged: Vec<(&[u8], &Stored)> = snapshot
        .entries()
        .filter(|(_, key, _)| key.starts_with(prefix.as_bytes()))
        .map(|(_, key, state)| (key, state))
        .collect();
    assert_eq!(tagged.len(), 18, "keys of {tag}: {snapshot:?}");
    assert_eq!(kinds_held(tagged.into_iter()), every_kind());
}

/// A mix of everything that changes limiters, on keys `{tag}:…`: admitted
/// and denied calls of every algorithm and of THROTTLE, looks (COST 0,
/// quantity 0, PEEK) that create nothing, a bare counter made by SET, a
/// removal, a transaction, a script and a second database. Leaves 18 keys.
fn continuing_workload(con: &mut Connection, tag: &str) {
    let key = |name: &str| format!("{tag}:{name}");
    let sliding = ["ALGORITHM", "SLIDING"];
    // Fixed windows: one full (and a denial), one partly used, one a bare
    // counter written by SET without an expiry.
    let allowed: Vec<bool> = (0..4)
        .map(|_| check(con, key("fixed:full"), 3, 3600, &[]).allowed)
        .collect();
    assert_eq!(allowed, [true, true, true, false]);
    assert_eq!(
        check(con, key("fixed:part"), 5, 3600, &["COST", "2"]).without_reset(),
        (true, 3, 5, -1)
    );
    assert_eq!(
        check(con, key("fixed:part"), 5, 3600, &["COST", "0"]).without_reset(),
        (true, 3, 5, -1)
    );
    let _: () = run(con, &["SET", &key("fixed:bare"), "3"]);
    assert_eq!(
        check(con, key("fixed:bare"), 5, 3600, &[]).without_reset(),
        (true, 1, 5, -1)
    );
    for _ in 0..2 {
        check(con, key("fixed:minute"), 10, 60, &[]);
    }
    // Sliding windows: one full (and a denial), one partly used.
    let allowed: Vec<bool> = (0..4)
        .map(|_| check(con, key("sliding:full"), 3, 3600, &sliding).allowed)
        .collect();
    assert_eq!(allowed, [true, true, true, false]);
    let mut options = sliding.to_vec();
    options.extend(["COST", "2"]);
    let part = check(con, key("sliding:part"), 5, 3600, &options);
    assert_eq!((part.allowed, part.remaining), (true, 3));
    check(con, key("sliding:minute"), 10, 60, &sliding);
    // Token buckets: 5 tokens refilled at one an hour, 3 taken, then 3
    // more asked and denied; and tokens of 8 571 3/7 ms (a tick remainder).
    let debt = ["ALGORITHM", "TOKEN", "BURST", "5", "COST", "3"];
    let taken = check(con, key("token:debt"), 1, 3600, &debt);
    assert_eq!((taken.allowed, taken.remaining), (true, 2));
    let denied = check(con, key("token:debt"), 1, 3600, &debt);
    assert_eq!((denied.allowed, denied.remaining), (false, 2));
    for _ in 0..2 {
        check(
            con,
            key("token:frac"),
            7,
            60,
            &["ALGORITHM", "TOKEN", "BURST", "3"],
        );
    }
    // THROTTLE: a bucket of 3 at one an hour emptied at once (and a
    // refusal), and one at 7 a minute.
    assert_eq!(
        throttle(con, key("gcra:full"), 2, 1, 3600, Some(3)).counts(),
        (false, 3, 0)
    );
    assert_eq!(
        throttle(con, key("gcra:full"), 2, 1, 3600, None).counts(),
        (true, 3, 0)
    );
    for _ in 0..2 {
        throttle(con, key("gcra:frac"), 4, 7, 60, None);
    }
    // Looks create nothing; a reset key is gone.
    check(con, key("look:fixed"), 3, 60, &["COST", "0"]);
    check(
        con,
        key("look:token"),
        3,
        60,
        &["ALGORITHM", "TOKEN", "COST", "0"],
    );
    throttle(con, key("look:gcra"), 2, 1, 3600, Some(0));
    peek(con, key("look:peek"), 3, 60, &[]);
    check(con, key("gone"), 3, 60, &[]);
    assert_eq!(reset(con, &[key("gone")]), 1);
    // A transaction and a script.
    let mut pipe = redis::pipe();
    pipe.atomic();
    for _ in 0..2 {
        pipe.cmd("RATELIMIT.CHECK")
            .arg(key("multi:fixed"))
            .arg(5)
            .arg(3600);
        pipe.cmd("RATELIMIT.CHECK")
            .arg(key("multi:token"))
            .arg(7)
            .arg(60)
            .arg("ALGORITHM")
            .arg("TOKEN");
    }
    let _: Value = pipe.query(con).unwrap();
    let _: Value = redis::cmd("EVAL")
        .arg(
            "for i = 1, 3 do
                 redis.call('RATELIMIT.CHECK', KEYS[1], '5', '3600')
                 redis.call('RATELIMIT.CHECK', KEYS[2], '5', '3600', 'ALGORITHM', 'SLIDING')
                 redis.call('RATELIMIT.THROTTLE', KEYS[3], '4', '7', '60')
             end
             return 0",
        )
        .arg(3)
        .arg(key("lua:fixed"))
        .arg(key("lua:sliding"))
        .arg(key("lua:gcra"))
        .query(con)
        .unwrap();
    // Another database.
    let _: () = run(con, &["SELECT", "3"]);
    check(con, key("db3:fixed"), 3, 3600, &[]);
    check(con, key("db3:token"), 7, 60, &["ALGORITHM", "TOKEN"]);
    let _: () = run(con, &["SELECT", "0"]);
}

/// Asserts that the limiters of `continuing_workload(tag)` decide from the
/// state it left (as recorded in `stored`), and takes a little more from
/// them.
fn assert_decisions_continue(con: &mut Connection, tag: &str, stored: &Dataset) {
    let key = |name: &str| format!("{tag}:{name}");
    let sliding = ["ALGORITHM", "SLIDING"];

    // The full fixed window stays full until its old end.
    let end = stored.get(0, &key("fixed:full")).expires_at;
    let denied = check(con, key("fixed:full"), 3, 3600, &[]);
    let retry = denied.retry_after_ms;
    assert_eq!(
        denied,
        Decision::denied(0, 3, retry, retry),
        "{tag}:fixed:full"
    );
    assert!(retry > 0 && retry <= 3_600_000, "{denied:?}");
    assert_eq!(get_str(con, &key("fixed:full")).as_deref(), Some("3"));
    assert_eq!(pexpiretime(con, key("fixed:full")), end);

    // The partly used one counts on, in the same window.
    let end = stored.get(0, &key("fixed:part")).expires_at;
    let reply = check(con, key("fixed:part"), 5, 3600, &[]);
    assert_eq!(reply.without_reset(), (true, 2, 5, -1), "{tag}:fixed:part");
    assert_eq!(get_str(con, &key("fixed:part")).as_deref(), Some("3"));
    assert_eq!(pexpiretime(con, key("fixed:part")), end);

    // The bare counter kept the window its first check gave it.
    let end = stored.get(0, &key("fixed:bare")).expires_at;
    assert_eq!(
        check(con, key("fixed:bare"), 5, 3600, &[]).without_reset(),
        (true, 0, 5, -1)
    );
    assert!(!check(con, key("fixed:bare"), 5, 3600, &[]).allowed);
    assert_eq!(pexpiretime(con, key("fixed:bare")), end);

    // Sliding windows: full stays denied, the partly used one counts on.
    let full = check(con, key("sliding:full"), 3, 3600, &sliding);
    assert_eq!(
        (full.allowed, full.remaining),
        (false, 0),
        "{tag}:sliding:full"
    );
    let part = check(con, key("sliding:part"), 5, 3600, &sliding);
    assert_eq!(
        (part.allowed, part.remaining),
        (true, 2),
        "{tag}:sliding:part"
    );

    // The bucket still owes its three tokens: two left, then none.
    let token = |con: &mut Connection, cost: &'static str| {
        let reply = check(
            con,
            key("token:debt"),
            1,
            3600,
            &["ALGORITHM", "TOKEN", "BURST", "5", "COST", cost],
        );
        (reply.allowed, reply.remaining)
    };
    assert_eq!(token(con, "0"), (true, 2), "{tag}:token:debt");
    assert_eq!(token(con, "2"), (true, 0));
    assert_eq!(token(con, "1"), (false, 0));

    // The emptied THROTTLE bucket stays empty.
    assert_eq!(
        throttle(con, key("gcra:full"), 2, 1, 3600, None).counts(),
        (true, 3, 0),
        "{tag}:gcra:full"
    );

    // Still nothing where the workload only looked or removed.
    for name in ["look:fixed", "look:token", "look:gcra", "look:peek", "gone"] {
        assert!(!exists(con, key(name)), "{tag}:{name} exists");
    }
}

// ---------------------------------------------------------------------------
// Decisions that continue: RDB and AOF
// ---------------------------------------------------------------------------

#[test]
fn persistence_rdb_restart_continues_every_limiter() {
    let data = DataDir::new();

    let server = data.rdb().start();
    let mut con = server.connect();
    continuing_workload(&mut con, "rdb");
    let stored = snapshot(&mut con);
    assert_continuing_plausible(&stored, "rdb");
    let _: () = run(&mut con, &["SAVE"]);
    // Killed: what comes back is what SAVE wrote, nothing more.
    server.kill();

    // Without the module: the same plain strings and expiries.
    let server = data.rdb().without_module().start();
    let mut con = server.connect();
    snapshot(&mut con).assert_same(&stored, "loaded without the module");
    server.kill();

    // With it: the same, and every limiter continues where it was.
    let server = data.rdb().start();
    let mut con = server.connect();
    snapshot(&mut con).assert_same(&stored, "loaded with the module");
    assert_decisions_continue(&mut con, "rdb", &stored);
}

#[test]
fn persistence_aof_restart_continues_every_limiter_across_a_rewrite() {
    let data = DataDir::new();

    let server = data.aof().start();
    let mut con = server.connect();
    wait_for_rewrite(&mut con);
    continuing_workload(&mut con, "old");
    // The rewrite turns what is there into the base (an RDB preamble or
    // plain commands); what follows is appended as the commands' effects.
    // A full window's counter, written by SET and INCR, is not written again
    // after the rewrite: its INCRs leave the files.
    let incr_full = "\r\nincr\r\n$14\r\nold:fixed:full\r\n";
    assert!(
        data.aof_contents().contains(incr_full),
        "no INCR of old:fixed:full in the AOF"
    );
    let _: Value = run(&mut con, &["BGREWRITEAOF"]);
    wait_for_rewrite(&mut con);
    assert!(!data.aof_contents().contains(incr_full), "no rewrite");
    continuing_workload(&mut con, "new");
    // The limiters from before the rewrite continue, in the appended part.
    let before = snapshot(&mut con);
    assert_decisions_continue(&mut con, "old", &before);
    let stored = snapshot(&mut con);
    assert_continuing_plausible(&stored, "old");
    assert_continuing_plausible(&stored, "new");
    // appendfsync always: every reply had its effect on disk.
    server.kill();

    // The files hold effects with absolute expiries, never the commands.
    let contents = data.aof_contents();
    assert!(!contents.contains("ratelimit"), "AOF:\n{contents}");
    assert!(!contents.contains("cl.throttle"), "AOF:\n{contents}");
    assert!(contents.contains("pxat"), "AOF:\n{contents}");
    assert!(!contents.contains(incr_full), "AOF:\n{contents}");

    // Without the module: the same plain strings and expiries.
    let server = data.aof().without_module().start();
    let mut con = server.connect();
    snapshot(&mut con).assert_same(&stored, "loaded without the module");
    server.kill();

    // With it: the same, and the new limiters continue.
    let server = data.aof().start();
    let mut con = server.connect();
    snapshot(&mut con).assert_same(&stored, "loaded with the module");
    assert_decisions_continue(&mut con, "new", &stored);
}

// ---------------------------------------------------------------------------
// Decisions that continue: replicas
// ---------------------------------------------------------------------------

/// One line of MONITOR output: its arguments, unquoted.
fn monitor_args(line: &str) -> Vec<String> {
    // `<time> [<db> <client>] "arg" "arg" …`
    let Some((_, quoted)) = line.split_once("] ") else {
        panic!("not a MONITOR line: {line}");
    };
    let mut args = Vec::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut arg = String::new();
        loop {
            match chars.next() {
                Some('"') | None => break,
                Some('\\') => match chars.next() {
                    Some('x') => {
                        let hex: String = chars.by_ref().take(2).collect();
                        arg.push(char::from(u8::from_str_radix(&hex, 16).unwrap()));
                    }
                    Some('n') => arg.push('\n'),
                    Some('r') => arg.push('\r'),
                    Some('t') => arg.push('\t'),
                    Some('a') => arg.push('\u{7}'),
                    Some('b') => arg.push('\u{8}'),
                    Some(other) => arg.push(other),
                    None => break,
                },
                Some(other) => arg.push(other),
            }
        }
        args.push(arg);
    }
    args
}

#[test]
fn replication_replica_monitor_sees_only_plain_commands() {
    let (master, replicas) = master_with_replicas(vec![Server::builder()]);
    let replica = &replicas[0];
    let mut con = master.connect();

    let mut monitor = replica.connect();
    monitor
        .send_packed_command(&redis::cmd("MONITOR").get_packed_command())
        .unwrap();
    assert_eq!(monitor.recv_response().unwrap(), Value::Okay);

    continuing_workload(&mut con, "mon");
    let stored = snapshot(&mut con);
    assert_continuing_plausible(&stored, "mon");
    reset(&mut con, &["mon:fixed:part"]);
    let _: () = run(&mut con, &["SET", "mon:end", "1"]);
    wait_replicas(&mut con, 1);

    // Every key the workload left, and the one it removed at the end.
    let mut unseen: BTreeSet<String> = stored
        .entries()
        .map(|(_, k, _)| k.escape_ascii().to_string())
        .collect();
    unseen.insert("mon:end".to_string());
    let plain = [
        "set", "incr", "incrby", "del", "ping", "select", "multi", "exec",
    ];
    let mut commands = BTreeSet::new();
    let deadline = Instant::now() + REPLICATION_DEADLINE;
    let mut lines = Vec::new();
    while !unseen.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "MONITOR did not show {unseen:?}; it showed:\n{}",
            lines.join("\n")
        );
        monitor.set_read_timeout(Some(left)).unwrap();
        let line = match monitor.recv_response() {
            Ok(Value::SimpleString(line)) => line,
            Ok(Value::Okay) => "OK".to_string(),
            Ok(other) => panic!("MONITOR sent {other:?}"),
            Err(e) => panic!(
                "MONITOR: {e}; still unseen {unseen:?}; seen:\n{}",
                lines.join("\n")
            ),
        };
        assert!(
            !line.to_lowercase().contains("ratelimit")
                && !line.to_lowercase().contains("cl.throttle"),
            "the replica executed a module command: {line}"
        );
        let args = monitor_args(&line);
        let name = args.first().map(|a| a.to_lowercase()).unwrap_or_default();
        assert!(
            plain.contains(&name.as_str()),
            "the replica executed {line}"
        );
        commands.insert(name);
        if let Some(key) = args.get(1) {
            unseen.remove(key);
        }
        lines.push(line);
    }
    // The effects arrive as SET … PXAT, INCR/INCRBY and DEL.
    for expected in ["set", "incr", "del"] {
        assert!(
            commands.contains(expected),
            "no {expected} in:\n{}",
            lines.join("\n")
        );
    }
    assert!(
        lines.iter().any(|l| l.to_lowercase().contains("\"pxat\"")),
        "no PXAT in:\n{}",
        lines.join("\n")
    );
}

#[test]
fn replication_promoted_replica_continues_every_limiter() {
    let (master, replicas) = master_with_replicas(vec![Server::builder()]);
    let replica = &replicas[0];
    let mut con = master.connect();
    continuing_workload(&mut con, "promo");
    wait_replicas(&mut con, 1);
    let stored = snapshot(&mut con);
    assert_continuing_plausible(&stored, "promo");

    let mut rcon = replica.connect();
    snapshot(&mut rcon).assert_same(&stored, "the replica before promotion");
    let _: () = run(&mut rcon, &["REPLICAOF", "NO", "ONE"]);
    let info: String = run(&mut rcon, &["INFO", "replication"]);
    assert!(info.contains("role:master"), "{info}");
    // The old master's absolute expiries, not ones recomputed on promotion.
    snapshot(&mut rcon).assert_same(&stored, "the replica after promotion");
    assert_decisions_continue(&mut rcon, "promo", &stored);
}

#[test]
fn persistence_aof_restart_after_windows_end_leaves_no_counter() {
    let data = DataDir::new();
    let server = data.aof().start();
    let mut con = server.connect();
    wait_for_rewrite(&mut con);
    // A counter opened before a rewrite (in the base) and grown after it
    // (INCR in the appended part), and one opened and grown after it.
    let first = check(&mut con, "exp:base", 5, 2, &[]);
    assert_eq!((first.allowed, first.remaining), (true, 4));
    let _: Value = run(&mut con, &["BGREWRITEAOF"]);
    wait_for_rewrite(&mut con);
    let second = check(&mut con, "exp:base", 5, 2, &[]);
    assert_eq!((second.allowed, second.remaining), (true, 3));
    for remaining in [4, 3] {
        let reply = check(&mut con, "exp:incr", 5, 2, &[]);
        assert_eq!((reply.allowed, reply.remaining), (true, remaining));
    }
    let contents = data.aof_contents();
    assert!(
        !contents.contains("$3\r\nset\r\n$8\r\nexp:base\r\n$1\r\n1\r\n$4\r\npxat\r\n"),
        "the SET opening exp:base outlived the rewrite; AOF:\n{contents}"
    );
    assert!(
        contents.contains("$4\r\nincr\r\n$8\r\nexp:base\r\n"),
        "AOF:\n{contents}"
    );
    assert!(
        contents.contains("$4\r\nincr\r\n$8\r\nexp:incr\r\n"),
        "AOF:\n{contents}"
    );
    let end = pexpiretime(&mut con, "exp:base").max(pexpiretime(&mut con, "exp:incr"));
    let now = server_ms(&mut con);
    // Killed before the windows end, so no DEL reaches the AOF.
    server.kill();
    sleep(Duration::from_millis((end - now + 50).max(0) as u64));

    for builder in [data.aof(), data.aof().without_module()] {
        let server = builder.start();
        let mut con = server.connect();
        for key in ["exp:base", "exp:incr"] {
            assert_eq!(
                (get_str(&mut con, key), pexpiretime(&mut con, key)),
                (None, -2),
                "{key} outlived its window"
            );
        }
        server.kill();
    }
}
