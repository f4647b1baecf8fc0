//! Test fixture: a Redis Cluster of real servers with the module loaded.
//!
//! Every node is a `redis-server` on 127.0.0.1 in its own temporary
//! directory, started here (not through `Builder`) because a cluster node
//! needs two ports chosen up front: the data port and the cluster bus port.
//! Servers with `cluster-port` (Redis 7.0+, Valkey) get both chosen freely;
//! Redis 6.2 always listens on the data port + 10000, so there the data port
//! is one below 55535 whose +10000 neighbour was free too. A start that
//! loses a port to a parallel test is retried on others.
//!
//! The cluster is made by `redis-cli --cluster create` (redis-cli from
//! PATH), then waited for, under a deadline, until every node says the
//! cluster is ok, covers all 16384 slots, knows every node, and shows the
//! same topology as every other node, and every replica's link to its master
//! is up. Every node is killed when the `Cluster` is dropped, also when the
//! test panics.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::server::{
    assert_module_built, binary_is_7_or_later, connect_to, lost_its_port, module_path,
    output_and_log, server_binary, server_command, spawn, wait_until_ready, Directives,
};

/// How long the cluster may take to form, or to settle after a failover.
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(30);
/// Starts retried when a port was taken between choosing and binding it.
const START_ATTEMPTS: usize = 5;
/// `cluster-node-timeout`. Nodes ping each other at least every half of it,
/// and a master delays its "ok" by it (at most 5 s) after a partition, so a
/// short one makes the cluster settle fast; failovers are only ever manual
/// (`cluster-replica-no-failover yes`), so a node taken for failed for a
/// moment on a busy machine does not change the topology.
const NODE_TIMEOUT_MS: &str = "2000";
/// Slots in a Redis Cluster.
pub const SLOTS: u32 = 16384;
/// Redis 6.2's bus port is the data port plus this.
const BUS_PORT_OFFSET: u16 = 10000;

/// Whether the server takes `cluster-port` (Redis 7.0+ and Valkey do; Redis
/// 6.2 does not, and puts the bus on the data port + 10000).
pub fn has_cluster_port() -> bool {
    binary_is_7_or_later()
}

/// Options for a cluster to start.
pub struct ClusterBuilder {
    masters: usize,
    replicas_per_master: usize,
    directives: Directives,
}

impl ClusterBuilder {
    /// One configuration directive for every node, e.g.
    /// `arg("maxmemory", "10mb")`.
    pub fn arg(mut self, name: &str, value: &str) -> ClusterBuilder {
        self.directives.arg(name, value);
        self
    }

    /// One load-time module argument pair for every node, e.g.
    /// `module_arg("CL-THROTTLE", "yes")`.
    pub fn module_arg(mut self, name: &str, value: &str) -> ClusterBuilder {
        self.directives.module_arg(name, value);
        self
    }

    /// Starts the nodes, makes the cluster and waits until it has settled.
    pub fn start(self) -> Cluster {
        assert!(
            self.masters >= 3,
            "redis-cli makes clusters of 3 masters or more"
        );
        let module = module_path();
        assert_module_built(&module);
        let count = self.masters * (1 + self.replicas_per_master);
        let mut cluster = Cluster {
            nodes: Vec::with_capacity(count),
            masters: self.masters,
            replicas_per_master: self.replicas_per_master,
            work: tempfile::Builder::new()
                .prefix("ratelimit-cluster-")
                .tempdir()
                .expect("create a temporary directory"),
        };
        for _ in 0..count {
            let node = self.start_node(&module);
            cluster.nodes.push(node);
        }
        let mut create: Vec<String> = vec!["--cluster".into(), "create".into()];
        create.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port)),
        );
        create.extend([
            "--cluster-replicas".to_string(),
            self.replicas_per_master.to_string(),
            "--cluster-yes".to_string(),
        ]);
        let args: Vec<&str> = create.iter().map(String::as_str).collect();
        let out = cluster.redis_cli(&args);
        if !out.success {
            panic!(
                "redis-cli --cluster create failed:\n{}\n{}\n{}",
                out.stdout,
                out.stderr,
                cluster.logs()
            );
        }
        cluster.wait_settled();
        cluster
    }

    /// Starts one node on fresh ports, retrying when a port was taken.
    fn start_node(&self, module: &Path) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("ratelimit-node-")
            .tempdir()
            .expect("create a temporary directory");
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let (port, bus_port) = choose_ports();
            let log = dir.path().join(format!("redis-{port}.log"));
            let out = dir.path().join(format!("redis-{port}.out"));
            let mut command = server_command(port, dir.path(), &log, &out);
            command
                .arg("--loadmodule")
                .arg(module)
                .args(&self.directives.module_args)
                .args(["--cluster-enabled", "yes"])
                .arg("--cluster-config-file")
                .arg(format!("nodes-{port}.conf"))
                .args(["--cluster-node-timeout", NODE_TIMEOUT_MS])
                .args(["--cluster-replica-no-failover", "yes"])
                // Replicas sync at once, not after the diskless-sync delay.
                .args(["--repl-diskless-sync-delay", "0"]);
            if has_cluster_port() {
                command.arg("--cluster-port").arg(bus_port.to_string());
            }
            command.args(&self.directives.args);
            let mut node = Node {
                child: spawn(&mut command),
                port,
                bus_port,
                log,
                out,
                _dir: None,
            };
            match node.wait_until_ready() {
                Ok(()) => {
                    node._dir = Some(dir);
                    return node;
                }
                Err(text) if lost_its_port(&text) => last = text,
                Err(text) => panic!("cluster node did not start; its log:\n{text}"),
            }
        }
        panic!("no node start after {START_ATTEMPTS} attempts (port taken each time); last log:\n{last}");
    }
}

/// Data port and bus port, both free a moment ago on 127.0.0.1.
fn choose_ports() -> (u16, u16) {
    let bind = |port: u16| TcpListener::bind(("127.0.0.1", port));
    loop {
        let data = bind(0).expect("find a free port");
        let port = data.local_addr().unwrap().port();
        if has_cluster_port() {
            let bus = bind(0).expect("find a free port");
            return (port, bus.local_addr().unwrap().port());
        }
        // Redis 6.2: the bus is on port + 10000, which must exist and be free.
        if port < u16::MAX - BUS_PORT_OFFSET && bind(port + BUS_PORT_OFFSET).is_ok() {
            return (port, port + BUS_PORT_OFFSET);
        }
    }
}

/// One node of a cluster; killed when dropped.
struct Node {
    child: Child,
    port: u16,
    bus_port: u16,
    log: PathBuf,
    out: PathBuf,
    /// Kept until the node is known to have started, then owned here.
    _dir: Option<tempfile::TempDir>,
}

impl Node {
    fn log(&self) -> String {
        output_and_log(&self.out, &self.log)
    }

    /// Waits until the node answers PING; on failure it is killed and its
    /// log returned.
    fn wait_until_ready(&mut self) -> Result<(), String> {
        let (out, log) = (self.out.clone(), self.log.clone());
        wait_until_ready(&mut self.child, self.port, || output_and_log(&out, &log))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a program run with a deadline printed.
pub struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// One node as a node of the cluster sees it in `CLUSTER NODES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub port: u16,
    pub master: bool,
    /// For a replica, its master's port (`None` while unknown).
    pub master_port: Option<u16>,
    /// Slot ranges served, inclusive.
    pub slots: Vec<(u16, u16)>,
    /// Flags other than the role and `myself` (`fail`, `pfail`,
    /// `handshake`, `noaddr`, …), and `disconnected` when the link is down.
    pub trouble: Vec<String>,
}

/// A running cluster; every node is killed when dropped.
pub struct Cluster {
    nodes: Vec<Node>,
    masters: usize,
    replicas_per_master: usize,
    /// redis-cli's output files.
    work: tempfile::TempDir,
}

impl Cluster {
    /// `masters` masters with `replicas_per_master` replicas each, settled.
    pub fn start(masters: usize, replicas_per_master: usize) -> Cluster {
        Cluster::builder(masters, replicas_per_master).start()
    }

    /// Options for a cluster to start.
    pub fn builder(masters: usize, replicas_per_master: usize) -> ClusterBuilder {
        ClusterBuilder {
            masters,
            replicas_per_master,
            directives: Directives::default(),
        }
    }

    /// The data ports of every node, in the order they were created.
    pub fn node_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The cluster bus port of every node, in the same order.
    pub fn bus_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.bus_port).collect()
    }

    /// Every node's log, each headed by its port.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("---- node {} ----\n{}", n.port, n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A cluster-aware client knowing every node.
    pub fn client(&self) -> redis::cluster::ClusterClient {
        let nodes: Vec<String> = self
            .node_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect();
        redis::cluster::ClusterClientBuilder::new(nodes)
            .connection_timeout(Duration::from_secs(5))
            .response_timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    /// A cluster connection: routes each command to its key's master and
    /// follows MOVED.
    pub fn connection(&self) -> redis::cluster::ClusterConnection {
        self.client()
            .get_connection()
            .unwrap_or_else(|e| panic!("cluster connection: {e}\n{}", self.logs()))
    }

    /// A direct connection to one node, with timeouts so that a hung node
    /// fails the test instead of hanging it.
    pub fn connect(&self, port: u16) -> redis::Connection {
        connect_to(port, || self.logs())
    }

    /// `CLUSTER KEYSLOT key`.
    pub fn keyslot(&self, key: &str) -> u16 {
        let mut con = self.connect(self.nodes[0].port);
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut con)
            .unwrap()
    }

    /// The cluster as node `port` sees it, by port.
    pub fn view(&self, port: u16) -> BTreeMap<u16, NodeView> {
        let mut con = self.connect(port);
        let text: String = redis::cmd("CLUSTER").arg("NODES").query(&mut con).unwrap();
        parse_cluster_nodes(&text)
    }

    /// The masters' ports, as the first node sees them.
    pub fn masters(&self) -> Vec<u16> {
        self.view(self.nodes[0].port)
            .values()
            .filter(|n| n.master)
            .map(|n| n.port)
            .collect()
    }

    /// The replicas of `master`, as `master` sees them.
    pub fn replicas_of(&self, master: u16) -> Vec<u16> {
        self.view(master)
            .values()
            .filter(|n| !n.master && n.master_port == Some(master))
            .map(|n| n.port)
            .collect()
    }

    /// The master serving `slot`, as the first node sees it.
    pub fn master_for_slot(&self, slot: u16) -> u16 {
        let view = self.view(self.nodes[0].port);
        owner(&view, slot).unwrap_or_else(|| panic!("no master serves slot {slot}: {view:?}"))
    }

    /// The master serving `key` (`CLUSTER KEYSLOT`, then `CLUSTER NODES`).
    pub fn master_for_key(&self, key: &str) -> u16 {
        self.master_for_slot(self.keyslot(key))
    }

    /// The master of every key at once, by key (one topology read).
    pub fn masters_for_keys<'a>(&self, keys: &[&'a str]) -> BTreeMap<&'a str, u16> {
        let view = self.view(self.nodes[0].port);
        let mut con = self.connect(self.nodes[0].port);
        keys.iter()
            .map(|key| {
                let slot: u16 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(*key)
                    .query(&mut con)
                    .unwrap();
                let port = owner(&view, slot)
                    .unwrap_or_else(|| panic!("no master serves slot {slot}: {view:?}"));
                (*key, port)
            })
            .collect()
    }

    /// Waits until every node says the cluster is ok, with all slots
    /// covered, knows every node with nothing wrong with any, shows the
    /// same topology as the others with the expected number of masters and
    /// replicas, and every replica's link to its master is up (and its
    /// master counts it online).
    pub fn wait_settled(&self) {
        self.wait_until("the cluster to settle", |_| true);
    }

    /// Whether node `port` stores `key`, whether or not it serves the key's
    /// slot (`CLUSTER GETKEYSINSLOT`, which any node answers for any slot,
    /// where `EXISTS` on a node not serving it is redirected).
    pub fn holds(&self, port: u16, key: &str) -> bool {
        let slot = self.keyslot(key);
        let mut con = self.connect(port);
        let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(1_000_000)
            .query(&mut con)
            .unwrap();
        keys.iter().any(|k| k == key.as_bytes())
    }

    /// `WAIT` for every replica of `master` to have everything the master
    /// has propagated so far (from any client: WAIT counts from the
    /// connection's own last write, so the connection first writes and
    /// deletes a key of its own in one of the master's slots).
    pub fn wait_replicas(&self, master: u16) {
        let view = self.view(master);
        let key = (0..)
            .map(|i| format!("{{wait-for-replicas-{i}}}"))
            .find(|k| owner(&view, self.keyslot(k)) == Some(master))
            .unwrap();
        let replicas = self.replicas_of(master).len();
        let mut con = self.connect(master);
        let _: () = redis::cmd("SET").arg(&key).arg(1).query(&mut con).unwrap();
        let _: () = redis::cmd("DEL").arg(&key).query(&mut con).unwrap();
        let acked: usize = redis::cmd("WAIT")
            .arg(replicas)
            .arg(SETTLE_DEADLINE.as_millis() as u64)
            .query(&mut con)
            .unwrap();
        assert_eq!(
            acked,
            replicas,
            "replicas of {master} did not acknowledge\n{}",
            self.logs()
        );
    }

    /// Waits as `wait_settled`, and until `also(topology)` holds for the
    /// topology every node agrees on.
    pub fn wait_until(&self, what: &str, also: impl Fn(&BTreeMap<u16, NodeView>) -> bool) {
        let deadline = Instant::now() + SETTLE_DEADLINE;
        loop {
            let problem = match self.unsettled() {
                Some(problem) => problem,
                None => {
                    let view = self.view(self.nodes[0].port);
                    if also(&view) {
                        return;
                    }
                    format!("the condition does not hold yet on {view:#?}")
                }
            };
            if Instant::now() >= deadline {
                panic!(
                    "waited {SETTLE_DEADLINE:?} for {what}: {problem}\n{}",
                    self.logs()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// What keeps the cluster from being settled, `None` when nothing.
    fn unsettled(&self) -> Option<String> {
        let ports = self.node_ports();
        let mut first: Option<(u16, BTreeMap<u16, NodeView>)> = None;
        for &port in &ports {
            let mut con = self.connect(port);
            let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut con).unwrap();
            for wanted in [
                "cluster_state:ok".to_string(),
                format!("cluster_slots_ok:{SLOTS}"),
                format!("cluster_known_nodes:{}", ports.len()),
            ] {
                if !info.lines().any(|l| l.trim() == wanted) {
                    return Some(format!("node {port}: no {wanted} in\n{info}"));
                }
            }
            let view = self.view(port);
            if let Some(bad) = view.values().find(|n| !n.trouble.is_empty()) {
                return Some(format!("node {port} sees {bad:?}"));
            }
            match &first {
                None => first = Some((port, view)),
                Some((other, first_view)) => {
                    if *first_view != view {
                        return Some(format!(
                            "nodes {other} and {port} disagree:\n{first_view:#?}\n{view:#?}"
                        ));
                    }
                }
            }
        }
        let (_, view) = first.unwrap();
        let masters: Vec<&NodeView> = view.values().filter(|n| n.master).collect();
        if masters.len() != self.masters {
            return Some(format!("{} masters, not {}", masters.len(), self.masters));
        }
        for master in masters {
            let replicas: Vec<u16> = view
                .values()
                .filter(|n| !n.master && n.master_port == Some(master.port))
                .map(|n| n.port)
                .collect();
            if replicas.len() != self.replicas_per_master {
                return Some(format!("master {} has replicas {replicas:?}", master.port));
            }
            let mut con = self.connect(master.port);
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut con)
                .unwrap();
            if !info.lines().any(|l| l.trim() == "role:master") {
                return Some(format!(
                    "master {}: not role:master in\n{info}",
                    master.port
                ));
            }
            let online = info
                .lines()
                .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                .count();
            if online != replicas.len() {
                return Some(format!(
                    "master {}: {online} replicas online:\n{info}",
                    master.port
                ));
            }
            for replica in replicas {
                let mut con = self.connect(replica);
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut con)
                    .unwrap();
                let wanted = [
                    "role:slave".to_string(),
                    format!("master_port:{}", master.port),
                    "master_link_status:up".to_string(),
                ];
                if let Some(missing) = wanted
                    .iter()
                    .find(|w| !info.lines().any(|l| l.trim() == w.as_str()))
                {
                    return Some(format!("replica {replica}: no {missing} in\n{info}"));
                }
            }
        }
        None
    }

    /// Promotes the replica of `master` with `CLUSTER FAILOVER` (the
    /// coordinated, lossless manual failover) and waits until it is master,
    /// the old master is its replica, and the cluster has settled. Returns
    /// the promoted node's port.
    pub fn failover(&self, master: u16) -> u16 {
        let replica = *self
            .replicas_of(master)
            .first()
            .unwrap_or_else(|| panic!("master {master} has no replica"));
        self.promote(replica);
        replica
    }

    /// `CLUSTER FAILOVER` on `replica`, then waits until it is a master
    /// everyone agrees on and the cluster has settled.
    pub fn promote(&self, replica: u16) {
        let old_master = self.view(replica)[&replica]
            .master_port
            .unwrap_or_else(|| panic!("node {replica} is no replica"));
        let mut con = self.connect(replica);
        let reply: String = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query(&mut con)
            .unwrap_or_else(|e| panic!("CLUSTER FAILOVER on {replica}: {e}\n{}", self.logs()));
        assert_eq!(reply, "OK");
        self.wait_until(
            &format!("{replica} to take over from {old_master}"),
            |view| {
                view[&replica].master
                    && !view[&old_master].master
                    && view[&old_master].master_port == Some(replica)
            },
        );
    }

    /// Runs redis-cli (from PATH) with `args`, under a deadline.
    pub fn redis_cli(&self, args: &[&str]) -> CliOutput {
        run_with_deadline(
            Command::new("redis-cli").args(args),
            self.work.path(),
            SETTLE_DEADLINE,
        )
    }
}

/// Runs `command` with no input, its output in files under `dir`; killed
/// when it has not ended by `deadline`.
pub fn run_with_deadline(command: &mut Command, dir: &Path, deadline: Duration) -> CliOutput {
    let file = tempfile::Builder::new()
        .prefix("cli-")
        .tempdir_in(dir)
        .expect("create a temporary directory");
    let (stdout, stderr) = (file.path().join("stdout"), file.path().join("stderr"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}; is redis-cli installed?"));
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(10));
    };
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let mut stderr = read(&stderr);
    if status.is_none() {
        stderr.push_str(&format!("\n(killed: still running after {deadline:?})"));
    }
    CliOutput {
        success: status.is_some_and(|s| s.success()),
        stdout: read(&stdout),
        stderr,
    }
}

/// The master serving `slot` in `view`.
fn owner(view: &BTreeMap<u16, NodeView>, slot: u16) -> Option<u16> {
    view.values()
        .find(|n| n.master && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
        .map(|n| n.port)
}

/// Parses `CLUSTER NODES`: `<id> <ip:port@cport[,hostname]> <flags>
/// <master-id|-> <ping> <pong> <epoch> <link-state> <slot>…`.
pub fn parse_cluster_nodes(text: &str) -> BTreeMap<u16, NodeView> {
    let lines: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    let port_of = |address: &str| -> Option<u16> {
        let host_port = address.split(['@', ',']).next()?;
        host_port.rsplit_once(':')?.1.parse().ok()
    };
    let ids: BTreeMap<&str, Option<u16>> = lines.iter().map(|f| (f[0], port_of(f[1]))).collect();
    let mut nodes = BTreeMap::new();
    for fields in &lines {
        assert!(
            fields.len() >= 8,
            "bad CLUSTER NODES line: {fields:?}\n{text}"
        );
        let Some(port) = port_of(fields[1]) else {
            // A node met by its id only so far: not settled.
            nodes.insert(
                0,
                NodeView {
                    port: 0,
                    master: false,
                    master_port: None,
                    slots: Vec::new(),
                    trouble: vec![format!("no address: {fields:?}")],
                },
            );
            continue;
        };
        let flags: Vec<&str> = fields[2].split(',').collect();
        let master = flags.contains(&"master");
        let mut trouble: Vec<String> = flags
            .iter()
            .filter(|f| !matches!(**f, "master" | "slave" | "myself" | "nofailover"))
            .map(|f| f.to_string())
            .collect();
        if fields[7] != "connected" {
            trouble.push(fields[7].to_string());
        }
        let master_port = match fields[3] {
            "-" => None,
            id => ids.get(id).copied().flatten(),
        };
        let slots = fields[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .map(|s| match s.split_once('-') {
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                None => {
                    let slot = s.parse().unwrap();
                    (slot, slot)
                }
            })
            .collect();
        nodes.insert(
            port,
            NodeView {
                port,
                master,
                master_port,
                slots,
                trouble,
            },
        );
    }
    nodes
}
