//! Every command and algorithm through replication and the AOF: replicas
//! (with and without the module) and a restarted server end with the same
//! values and absolute expiries, because the module propagates effects as
//! plain `SET … PXAT` and `DEL`, never itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{
    assert_replica_took_everything, attach_replicas, check, exists, propagated_by, reset, run,
    server_ms, wait_replicas, Builder, Command, DataDir, Dataset, Kind, Limiter, Server, Throttled,
    KINDS,
};
use redis::{Connection, Value};

/// The databases the workload writes to.
const DATABASES: [u32; 2] = [0, 3];

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
fn workload(con: &mut Connection, tag: &str) {
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

fn snapshot(con: &mut Connection) -> Dataset {
    Dataset::read(con, &DATABASES)
}

/// Asserts the snapshot holds what the workload leaves: the expected kinds
/// of value, each with an expiry.
fn assert_plausible(snapshot: &Dataset) {
    let db0 = &snapshot.0[&0];
    assert!(db0.len() > 20, "only {} keys", db0.len());
    let mut kinds = BTreeSet::new();
    for (_, key, state) in snapshot.entries() {
        let value = state
            .value
            .as_deref()
            .unwrap_or_else(|| panic!("{key:?} has no value"));
        assert!(state.expires_at > 0, "{key:?} has no expiry");
        let kind = Kind::of_value(value).unwrap_or_else(|| panic!("{key:?} holds {value:?}"));
        kinds.insert(kind.name);
    }
    assert_eq!(kinds, KINDS.iter().map(|k| k.name).collect());
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
    let master = common::replication_master(Server::builder().module_arg("CL-THROTTLE", "yes"));
    let mut con = master.connect();
    // Before the replicas attach: they get it by full sync.
    workload(&mut con, "pre");
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
    workload(&mut con, "post");
    wait_replicas(&mut con, replicas.len());

    let expected = snapshot(&mut con);
    assert_plausible(&expected);
    assert_nothing_untouched_exists(&mut con);
    for replica in &replicas {
        let mut rcon = replica.connect();
        snapshot(&mut rcon).assert_same(&expected, &format!("replica on port {}", replica.port()));
        assert_nothing_untouched_exists(&mut rcon);
        assert_replica_took_everything(replica);
    }
}

#[test]
fn replication_aof_restart_restores_every_limiter() {
    let data = DataDir::new();
    let server = data.aof().module_arg("CL-THROTTLE", "yes").start();
    let mut con = server.connect();
    workload(&mut con, "aof");
    quiet_setup(&mut con);
    quiet_calls(&mut con);
    let stored = snapshot(&mut con);
    assert_plausible(&stored);
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
