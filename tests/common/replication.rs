//! A master with replicas attached, and waiting for them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::thread::sleep;
use std::time::{Duration, Instant};

use redis::{Connection, ConnectionLike};

use super::reply::run;
use super::server::{Builder, Server};

/// Deadline for replicas to connect and to catch up.
pub const REPLICATION_DEADLINE: Duration = Duration::from_secs(15);

/// A master that replicates at once: no wait for more replicas before a
/// full sync, and no PINGs to them (which would move the replication
/// offset) during a test.
pub fn replication_master(builder: Builder) -> Server {
    builder
        .arg("repl-diskless-sync-delay", "0")
        .arg("repl-ping-replica-period", "3600")
        .start()
}

/// Starts `replicas` as replicas of `master` and waits until each is linked.
pub fn attach_replicas(master: &Server, replicas: Vec<Builder>) -> Vec<Server> {
    let replicas: Vec<Server> = replicas
        .into_iter()
        .map(|b| b.replica_of(master).start())
        .collect();
    for replica in &replicas {
        wait_for_link(replica);
    }
    replicas
}

/// A [replication master](replication_master) with `replicas` attached
/// and linked.
pub fn master_with_replicas(replicas: Vec<Builder>) -> (Server, Vec<Server>) {
    let master = replication_master(Server::builder());
    let replicas = attach_replicas(&master, replicas);
    (master, replicas)
}

/// Waits until `replica` reports its link to the master up.
pub fn wait_for_link(replica: &Server) {
    let mut con = replica.connect();
    let deadline = Instant::now() + REPLICATION_DEADLINE;
    loop {
        let info: String = run(&mut con, &["INFO", "replication"]);
        if info.contains("master_link_status:up") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica link not up:\n{info}\n{}",
            replica.log()
        );
        sleep(Duration::from_millis(20));
    }
}

/// `WAIT replicas`: asserts that all of them acknowledged what the master
/// has propagated so far.
pub fn wait_replicas(master: &mut dyn ConnectionLike, replicas: usize) {
    let acked: i64 = redis::cmd("WAIT")
        .arg(replicas)
        .arg(REPLICATION_DEADLINE.as_millis() as u64)
        .query(master)
        .unwrap();
    assert_eq!(acked, replicas as i64, "replicas did not acknowledge");
}

/// The master's replication offset: how much it has propagated so far.
pub fn repl_offset(con: &mut dyn ConnectionLike) -> i64 {
    let info: String = run(con, &["INFO", "replication"]);
    info.lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .unwrap_or_else(|| panic!("no offset in:\n{info}"))
        .trim()
        .parse()
        .unwrap()
}

/// How many bytes `calls` added to the master's replication stream.
pub fn propagated_by(con: &mut Connection, calls: impl FnOnce(&mut Connection)) -> i64 {
    let offset = repl_offset(con);
    calls(con);
    repl_offset(con) - offset
}

/// Asserts that `replica` accepted every command its master sent.
pub fn assert_replica_took_everything(replica: &Server) {
    let log = replica.log();
    assert!(!log.contains("sending an error"), "replica log:\n{log}");
}
