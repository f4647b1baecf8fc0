//! The script fallback where it is meant to run: servers without the
//! module, with replicas, an AOF, and Redis Cluster.

mod common;

use std::collections::BTreeMap;

use common::cluster::Cluster;
use common::fallback::{library_workload, read_all, unix_ms, KeyState, Route, LIBRARY};
use common::{
    attach_replicas, error_of, propagated_by, replication_master, wait_replicas, DataDir, Server,
};
use redis::Value;

/// Calls of the workload replicated and persisted.
const STEPS: usize = 3_000;

/// One limiter of each kind, lasting an hour, on `{prefix}:<kind>`.
fn lasting_limiters(con: &mut redis::Connection, route: &Route, prefix: &str) {
    let calls: [(&str, &str, &[&str]); 5] = [
        ("check", "fixed", &["10", "3600", "COST", "3"]),
        (
            "check",
            "sliding",
            &["10", "3600", "ALGORITHM", "SLIDING", "COST", "3"],
        ),
        (
            "check",
            "token",
            &["10", "3600", "ALGORITHM", "TOKEN", "COST", "3"],
        ),
        ("throttle", "throttle", &["9", "1", "3600", "3"]),
        ("acquire", "leases", &["5", "3600000", "ID", "job"]),
    ];
    for (verb, kind, args) in calls {
        route
            .call(con, verb, &[&format!("{prefix}:{kind}")], args)
            .unwrap();
    }
}

/// `all` less the keys expiring from `from_ms` to `to_ms`: two servers
/// read in that interval may see such a key there or gone.
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

/// A workload through the functions (or the script, on Redis 6.2) on a
/// master without the module leaves its replica, and a restart from its
/// AOF, holding exactly its keys: values, lease sets and absolute
/// expiries.
#[test]
fn fallback_effects_replicate_and_persist_exactly() {
    let data = DataDir::new();
    let master = replication_master(data.aof().without_module());
    let replicas = attach_replicas(&master, vec![Server::builder().without_module()]);
    let mut con = master.connect();
    let route = Route::for_server(&mut con);
    let (mut ok, mut refused) = (0, 0);
    let mut compared_keys = 0;
    let (mut from_ms, mut on_master) = (0, BTreeMap::new());
    for round in 0..6 {
        let (o, r) = library_workload(&mut con, &route, 0x5eed_0010 + round, STEPS / 6);
        (ok, refused) = (ok + o, refused + r);
        if round == 5 {
            lasting_limiters(&mut con, &route, "lasting");
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
            "the replica differs from its master after round {round}"
        );
    }
    assert!(
        ok > STEPS as u64 / 3 && refused > 0,
        "{ok} calls succeeded, {refused} refused"
    );
    assert_eq!(
        on_master
            .keys()
            .filter(|k| k.starts_with(b"lasting:"))
            .count(),
        5,
        "{on_master:?}"
    );
    eprintln!("{compared_keys} keys compared on the replica, in 6 rounds");

    drop(replicas);
    master.kill();
    let restarted = data.aof().without_module().start();
    let mut con = restarted.connect();
    let reloaded = read_all(&mut con);
    let to_ms = unix_ms();
    let compared = without_expiring(&on_master, from_ms, to_ms);
    eprintln!("{} keys compared after the restart", compared.len());
    assert_eq!(
        compared,
        without_expiring(&reloaded, from_ms, to_ms),
        "the AOF reloads other keys than the master held"
    );

    // The library is still there, and the limiters go on from their state.
    let route = Route::for_server(&mut con);
    let fixed: Vec<i64> = redis::from_redis_value(
        route
            .call(&mut con, "check", &["lasting:fixed"], &["10", "3600"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(&fixed[..3], [1, 6, 10]);
}

/// In Redis Cluster the library must be loaded on every master (FUNCTION
/// LOAD is not routed); FCALL is then routed by its keys like the
/// module's commands, and several keys must share a slot.
#[test]
fn fallback_in_a_cluster_runs_on_each_keys_master() {
    let cluster = Cluster::start(3, 0);
    let masters = cluster.masters();
    let keys: Vec<String> = (0..30).map(|i| format!("user:{i}")).collect();
    let owners = cluster.masters_for_keys(&keys.iter().map(String::as_str).collect::<Vec<_>>());

    // Loaded on one master only: calls for the others' keys find nothing.
    let route = Route::for_server(&mut cluster.connect(masters[0]));
    let mut con = cluster.connection();
    for key in &keys {
        let reply = route.call(&mut con, "check", &[key], &["5", "60"]);
        if owners[key.as_str()] == masters[0] {
            assert!(reply.is_ok(), "{key}: {reply:?}");
        } else {
            let error = error_of(reply);
            assert!(
                error.contains("Function not found") || error.starts_with("NOSCRIPT"),
                "{key}: {error}"
            );
        }
    }
    // On every master: functions with redis-cli, as the documentation
    // says; the script (whose text redis-cli would take for options there)
    // master by master.
    match &route {
        Route::Function => {
            let node = format!("127.0.0.1:{}", masters[0]);
            let loaded = cluster.redis_cli(&[
                "--cluster",
                "call",
                &node,
                "FUNCTION",
                "LOAD",
                "REPLACE",
                LIBRARY,
                "--cluster-only-masters",
            ]);
            assert!(loaded.success, "{}{}", loaded.stdout, loaded.stderr);
        }
        Route::Eval { .. } => {
            for &master in &masters[1..] {
                Route::eval(&mut cluster.connect(master));
            }
        }
    }
    for key in &keys {
        let tagged_module = format!("{{{key}}}:module");
        let tagged_library = format!("{{{key}}}:library");
        let module: Vec<i64> = redis::cmd("RATELIMIT.CHECK")
            .arg(&tagged_module)
            .arg(5)
            .arg(60)
            .query(&mut con)
            .unwrap();
        let library: Vec<i64> = redis::from_redis_value(
            route
                .call(&mut con, "check", &[&tagged_library], &["5", "60"])
                .unwrap(),
        )
        .unwrap();
        assert_eq!(module[..3], library[..3], "{key}");
        let owner = owners[key.as_str()];
        assert!(
            cluster.holds(owner, &tagged_library),
            "{key} not on its master {owner}"
        );
        let mcheck: Value = route
            .call(
                &mut con,
                "mcheck",
                &[&tagged_library, &format!("{{{key}}}:other")],
                &["LIMIT", "5", "60", "LIMIT", "10", "60"],
            )
            .unwrap();
        assert!(
            matches!(mcheck, Value::Array(ref a) if a.len() == 7),
            "{mcheck:?}"
        );
    }
    let spread = ["user:0", "user:1", "user:2", "user:3"];
    let crossing = route.call(&mut con, "reset", &spread, &[]);
    assert!(error_of(crossing).starts_with("CROSSSLOT"));
}

/// Where the module writes nothing (a denied request, COST 0, PEEK, a
/// RELEASE of no live lease, a RESET of missing keys), neither does the
/// library: nothing reaches the replicas or the AOF.
#[test]
fn fallback_propagates_nothing_where_the_module_writes_nothing() {
    let master = replication_master(Server::builder());
    let _replicas = attach_replicas(&master, vec![Server::builder()]);
    let mut con = master.connect();
    let route = Route::for_server(&mut con);
    let full: [(&str, &[&str]); 4] = [
        ("check", &["1", "60"]),
        ("check", &["1", "60", "ALGORITHM", "SLIDING"]),
        ("check", &["1", "60", "ALGORITHM", "TOKEN"]),
        ("throttle", &["0", "1", "60"]),
    ];
    for (n, (verb, args)) in full.into_iter().enumerate() {
        let (module_key, library_key) = (format!("m:{n}"), format!("f:{n}"));
        let mut first = redis::cmd(&format!("ratelimit.{verb}"));
        first.arg(&module_key).arg(args);
        let _: Value = first.query(&mut con).unwrap();
        route.call(&mut con, verb, &[&library_key], args).unwrap();
        let mut look = args.to_vec();
        if verb == "check" {
            look.extend(["COST", "0"]);
        } else {
            look.push("0");
        }
        // Denied now, a look, and (for CHECK's algorithms) a PEEK.
        let mut nothing = vec![(verb, args.to_vec()), (verb, look)];
        if verb == "check" {
            nothing.push(("peek", args.to_vec()));
        }
        for (verb, args) in nothing {
            let by_module = propagated_by(&mut con, |con| {
                let mut cmd = redis::cmd(&format!("ratelimit.{verb}"));
                cmd.arg(&module_key).arg(&args);
                let _: Value = cmd.query(con).unwrap();
            });
            let by_library = propagated_by(&mut con, |con| {
                route.call(con, verb, &[&library_key], &args).unwrap();
            });
            assert_eq!((by_module, by_library), (0, 0), "{verb} {args:?}");
        }
    }
    let released = propagated_by(&mut con, |con| {
        route
            .call(con, "release", &["leases"], &["nobody"])
            .unwrap();
    });
    assert_eq!(released, 0);
    let reset = propagated_by(&mut con, |con| {
        route.call(con, "reset", &["gone", "gone"], &[]).unwrap();
    });
    assert_eq!(reset, 0);
}
