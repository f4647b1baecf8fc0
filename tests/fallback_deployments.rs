//! The script fallback where it is meant to run: servers without the
//! module, with replicas, an AOF, and Redis Cluster.

mod common;

use std::collections::BTreeMap;

use common::cluster::Cluster;
use common::fallback::{library_workload, read_all, unix_ms, KeyState, Route, LIBRARY};
use common::{
    attach_replicas, error_of, propagated_by, replication_master, wait_replicas, DataDir, Reserved,
    Server, Settled,
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

/// The library's holds functions in a Cluster: the holds key and every
/// limiter key of FCALL ratelimit_reserve and ratelimit_settle must share a
/// slot, as for the module's RESERVE and SETTLE. A call whose keys cross
/// slots is refused with CROSSSLOT, also when they are on the same master,
/// and changes nothing; with one hash tag, the calls work, directly and
/// through a cluster client.
#[test]
fn fallback_holds_need_one_slot_in_a_cluster() {
    const HOLDS: &str = "{u}:holds";
    const RPM: &str = "{u}:rpm";
    const TPM: &str = "{u}:tpm";
    let cluster = Cluster::start(3, 0);
    // The library (on Redis 6.2, the script, of one SHA) on every master.
    let masters = cluster.masters();
    for &master in &masters[1..] {
        Route::for_server(&mut cluster.connect(master));
    }
    let route = Route::for_server(&mut cluster.connect(masters[0]));
    let owner = cluster.master_for_key(HOLDS);
    let mut con = cluster.connect(owner);
    // RESERVE's groups: a request, and an estimate of 100 tokens; a call
    // with one limiter key takes the first.
    let groups: [&[&str]; 2] = [
        &["LIMIT", "10", "60"],
        &["LIMIT", "1000", "60", "HOLD", "100"],
    ];
    let reserve = |con: &mut dyn redis::ConnectionLike, keys: &[&str], id: &str| {
        let mut args = vec![id, "60000"];
        args.extend(groups[..keys.len() - 1].concat());
        route.call(con, "reserve", keys, &args)
    };
    let settle = |con: &mut dyn redis::ConnectionLike, keys: &[&str], actual: &str| {
        route.call(
            con,
            "settle",
            keys,
            &["a", "LIMIT", "1000", "60", "ACTUAL", actual],
        )
    };

    // One slot: the hold is taken on the slot's master.
    let reserved: Reserved =
        redis::from_redis_value(reserve(&mut con, &[HOLDS, RPM, TPM], "a").unwrap()).unwrap();
    assert!(reserved.multi.allowed, "{reserved:?}");
    assert_eq!(reserved.held, 100);
    for key in [HOLDS, RPM, TPM] {
        assert!(cluster.holds(owner, key), "{key} not on its master {owner}");
    }

    // Another slot of the same master (the node itself refuses the call,
    // with no MOVED to follow), and a slot of another master.
    let same_master = (0..)
        .map(|i| format!("{{o:{i}}}:x"))
        .find(|k| {
            cluster.keyslot(k) != cluster.keyslot(HOLDS) && cluster.master_for_key(k) == owner
        })
        .unwrap();
    let other_master = (0..)
        .map(|i| format!("{{m:{i}}}:x"))
        .find(|k| cluster.master_for_key(k) != owner)
        .unwrap();
    let before = read_all(&mut con);
    for other in [same_master.as_str(), other_master.as_str()] {
        for (verb, reply) in [
            ("reserve", reserve(&mut con, &[other, RPM, TPM], "b")),
            ("reserve", reserve(&mut con, &[HOLDS, other], "b")),
            ("reserve", reserve(&mut con, &[HOLDS, RPM, other], "b")),
            ("settle", settle(&mut con, &[other, TPM], "1")),
            ("settle", settle(&mut con, &[HOLDS, other], "1")),
        ] {
            let e = error_of(reply);
            assert!(e.starts_with("CROSSSLOT"), "{verb} with {other}: {e}");
        }
    }
    assert_eq!(
        read_all(&mut con),
        before,
        "a refused call changed something"
    );

    // Through a cluster client, which routes FCALL by its first key: the
    // hold is still live (no refused SETTLE settled it), and settles.
    let mut client = cluster.connection();
    let crossing = settle(&mut client, &[HOLDS, &other_master], "1");
    assert!(error_of(crossing).starts_with("CROSSSLOT"));
    let settled: Settled =
        redis::from_redis_value(settle(&mut client, &[HOLDS, TPM], "30").unwrap()).unwrap();
    assert_eq!(settled.status, 1, "{settled:?}");
    assert_eq!(settled.each[0].remaining, 1000 - 30);
    let extended = route
        .call(&mut client, "extend", &[HOLDS], &["a", "1000"])
        .unwrap();
    assert_eq!(extended, Value::Int(0), "a settled hold is not extended");
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
