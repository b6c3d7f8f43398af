//! Test harness for several `sluice serve` processes forming one cluster on loopback: fixed free
//! ports per node (so a restarted node comes back where the others expect it), one cluster
//! secret file (made with `sluice cluster secret`, as a person would), a data dir and a stderr
//! log file per node, process control (kill -9, SIGTERM, SIGSTOP, SIGCONT, restart), and
//! metadata helpers over librdkafka (leader, replicas, ISR) with deadline-bounded waits.
//!
//! Every child is killed when the [`Cluster`] drops, and is under the test's
//! [`watchdog`](crate::watchdog) while it runs. When it drops during a panic (a failed
//! assertion or a blown deadline) it prints the tail of every node's log, and keeps the temp dir
//! (data dirs and whole logs) when `SLUICE_TEST_KEEP_DIRS` is set.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::Metadata;

/// How long a node may take to print its startup lines.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERMed node may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound of one metadata request.
const METADATA_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between two polls of a wait helper.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Set (to anything) to keep a failed test's data dirs and node logs instead of deleting them.
const KEEP_DIRS_VARIABLE: &str = "SLUICE_TEST_KEEP_DIRS";
/// Lines of each node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// Broker settings every cluster node runs with: short failure detection so tests fail over in
/// seconds, small internal topics so they are created quickly. `{rf}` is the node count (at most
/// 3). `min.insync.replicas` is a topic config in Sluice (the broker refuses it as a broker
/// config), so tests set it when they create topics.
const CLUSTER_CONFIG: &str = r#""broker.session.timeout.ms" = 3000
"broker.heartbeat.interval.ms" = 500
"replica.lag.time.max.ms" = 5000
"default.replication.factor" = {rf}
"offsets.topic.num.partitions" = 3
"transaction.state.log.num.partitions" = 3
"auto.create.topics.enable" = false
"auto.leader.rebalance.enable" = false
"#;

/// One node: its fixed addresses, its data dir and log file, and its process when running.
struct Node {
    id: i32,
    port: u16,
    controller_port: u16,
    admin_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// The `--cluster-secret-file` it starts with.
    secret_path: PathBuf,
    child: Option<Child>,
    paused: bool,
    starts: u32,
}

impl Node {
    fn running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// One multi-node cluster runs at a time (see [`Cluster::start_alone`]).
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// N `sluice serve` processes, node ids 1..=N, all voters of one metadata quorum.
pub(crate) struct Cluster {
    dir: Option<tempfile::TempDir>,
    config_path: PathBuf,
    nodes: Vec<Node>,
    /// Held by a cluster started with [`Cluster::start_alone`]; released after the children are
    /// killed (fields drop after `Drop::drop`).
    _alone: Option<tokio::sync::MutexGuard<'static, ()>>,
}

impl Cluster {
    /// Allocates ports, data dirs and the config file for `n` nodes; starts nothing.
    pub(crate) fn new(n: usize) -> Cluster {
        assert!(n >= 1, "a cluster has at least one node");
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("cluster.toml");
        let config = CLUSTER_CONFIG.replace("{rf}", &n.min(3).to_string());
        std::fs::write(&config_path, config).expect("write cluster config");
        let secret_path = dir.path().join("cluster.secret");
        create_secret(&secret_path);
        let ports = free_ports(3 * n);
        let nodes = (0..n)
            .map(|i| {
                let id = i as i32 + 1;
                let data_dir = dir.path().join(format!("node-{id}"));
                std::fs::create_dir_all(&data_dir).expect("create data dir");
                Node {
                    id,
                    port: ports[3 * i],
                    controller_port: ports[3 * i + 1],
                    admin_port: ports[3 * i + 2],
                    data_dir,
                    log_path: dir.path().join(format!("node-{id}.log")),
                    secret_path: secret_path.clone(),
                    child: None,
                    paused: false,
                    starts: 0,
                }
            })
            .collect();
        Cluster {
            dir: Some(dir),
            config_path,
            nodes,
            _alone: None,
        }
    }

    /// [`Cluster::start`] once no other cluster started this way is running. Failover tests
    /// detect failures with 3 s broker sessions; several three-node clusters of concurrent tests
    /// on a two-core machine would starve each other into false failovers.
    pub(crate) async fn start_alone(n: usize) -> Cluster {
        let alone = ALONE.lock().await;
        let mut cluster = Cluster::new(n);
        cluster._alone = Some(alone);
        cluster.start_all();
        cluster
    }

    /// [`Cluster::new`] then [`Cluster::start_all`].
    pub(crate) fn start(n: usize) -> Cluster {
        let mut cluster = Cluster::new(n);
        cluster.start_all();
        cluster
    }

    /// [`Cluster::new`] once no other cluster of [`Cluster::start_alone`] runs (see there), for
    /// a test that changes nodes before starting them.
    pub(crate) async fn new_alone(n: usize) -> Cluster {
        let alone = ALONE.lock().await;
        let mut cluster = Cluster::new(n);
        cluster._alone = Some(alone);
        cluster
    }

    /// Sets `key = value` (TOML) in every node's config file, replacing the harness's own
    /// setting of `key` if it has one; for nodes not started yet.
    pub(crate) fn set_config(&self, key: &str, value: &str) {
        let config = std::fs::read_to_string(&self.config_path).expect("read cluster config");
        let quoted = format!("\"{key}\"");
        let mut lines: Vec<String> = config
            .lines()
            .filter(|line| line.split('=').next().map(str::trim) != Some(quoted.as_str()))
            .map(str::to_owned)
            .collect();
        lines.push(format!("{quoted} = {value}"));
        std::fs::write(&self.config_path, lines.join("\n") + "\n").expect("write cluster config");
    }

    /// A file in the cluster's temp dir.
    fn file(&self, name: &str) -> PathBuf {
        self.dir.as_ref().expect("temp dir").path().join(name)
    }

    /// Gives node `id` its own, different cluster secret from its next start on: a node that
    /// is not a member of this cluster.
    pub(crate) fn give_foreign_secret(&mut self, id: i32) {
        let path = self.file(&format!("foreign-{id}.secret"));
        create_secret(&path);
        self.node_mut(id).secret_path = path;
    }

    /// Gives node `id` the cluster's secret again from its next start on.
    pub(crate) fn give_cluster_secret(&mut self, id: i32) {
        let path = self.file("cluster.secret");
        self.node_mut(id).secret_path = path;
    }

    /// The node ids, 1..=N.
    pub(crate) fn ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    fn node(&self, id: i32) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    fn node_mut(&mut self, id: i32) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    /// `--voters`: `1@127.0.0.1:C1,2@127.0.0.1:C2,...`.
    pub(crate) fn voters(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `sluice serve` arguments of node `id`.
    pub(crate) fn serve_args(&self, id: i32) -> Vec<String> {
        let node = self.node(id);
        vec![
            "serve".into(),
            "--node-id".into(),
            id.to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", node.port),
            "--controller-listen".into(),
            format!("127.0.0.1:{}", node.controller_port),
            "--voters".into(),
            self.voters(),
            "--data-dir".into(),
            node.data_dir.display().to_string(),
            "--admin-listen".into(),
            format!("127.0.0.1:{}", node.admin_port),
            "--config".into(),
            self.config_path.display().to_string(),
            "--cluster-secret-file".into(),
            node.secret_path.display().to_string(),
        ]
    }

    /// Node `id`'s controller (metadata quorum) port.
    pub(crate) fn controller_port(&self, id: i32) -> u16 {
        self.node(id).controller_port
    }

    /// Whether node `id`'s log contains `text`.
    pub(crate) fn log_contains(&self, id: i32, text: &str) -> bool {
        std::fs::read_to_string(&self.node(id).log_path).is_ok_and(|log| log.contains(text))
    }

    /// Spawns node `id` (stdout piped for the startup lines, stderr appended to its log file);
    /// returns a receiver of its first two stdout lines.
    fn spawn(&mut self, id: i32) -> Receiver<String> {
        let args = self.serve_args(id);
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} is already running");
        node.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("open node log");
        writeln!(
            log,
            "==== node {id}, start #{}: sluice {} ====",
            node.starts,
            args.join(" ")
        )
        .expect("write node log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(&args)
            .env(
                "RUST_LOG",
                std::env::var("SLUICE_TEST_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .env_remove("SLUICE_BOOTSTRAP_SERVER")
            .env_remove("SLUICE_TEST_KEEP_DIRS")
            .env_remove("SLUICE_TEST_NODE_LOG")
            .env_remove(crate::watchdog::BOUND_VARIABLE)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn sluice serve");
        crate::watchdog::track(child.id());
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            // The startup line, then the admin listener's line.
            for _ in 0..2 {
                match lines.next() {
                    Some(Ok(line)) => {
                        let _ = tx.send(line);
                    }
                    _ => return,
                }
            }
            // Keep draining so the node never blocks on a full pipe.
            for _ in lines {}
        });
        node.child = Some(child);
        node.paused = false;
        rx
    }

    /// Waits (bounded) for node `id`'s startup lines and checks it listens where it should.
    fn await_started(&mut self, id: i32, lines: Receiver<String>) {
        let deadline = Instant::now() + START_TIMEOUT;
        let next = |what: &str| {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("node {id} did not print its {what} line within {START_TIMEOUT:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("node {id} exited before printing its {what} line")
                }
            }
        };
        let startup = next("startup");
        let admin = next("admin listener");
        let node = self.node(id);
        assert_eq!(listening_port(&startup), node.port, "node {id}: {startup}");
        assert_eq!(
            listening_port(&admin),
            node.admin_port,
            "node {id}: {admin}"
        );
    }

    /// Starts every node that is not running: all are spawned first (a quorum needs a majority
    /// up before any node can finish starting), then each one's startup is awaited.
    pub(crate) fn start_all(&mut self) {
        let ids: Vec<i32> = self
            .nodes
            .iter_mut()
            .filter_map(|n| (!n.running()).then_some(n.id))
            .collect();
        let mut started = Vec::new();
        for id in ids {
            self.node_mut(id).child = None;
            started.push((id, self.spawn(id)));
        }
        for (id, lines) in started {
            self.await_started(id, lines);
        }
    }

    /// Restarts node `id` (after [`Cluster::kill9`] or [`Cluster::stop`]) on the same data dir
    /// and ports, and waits for its startup line.
    pub(crate) fn restart(&mut self, id: i32) {
        let node = self.node_mut(id);
        assert!(!node.running(), "restart({id}): the node is still running");
        node.child = None;
        let lines = self.spawn(id);
        self.await_started(id, lines);
    }

    /// SIGKILL: no chance to clean up. Waits until the process is gone.
    pub(crate) fn kill9(&mut self, id: i32) {
        let node = self.node_mut(id);
        if let Some(mut child) = node.child.take() {
            crate::watchdog::untrack(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// SIGTERM and wait (bounded) for the exit; returns whether the node exited successfully.
    /// A node that does not exit in time is killed (and `false` returned).
    pub(crate) fn stop(&mut self, id: i32) -> bool {
        let node = self.node_mut(id);
        let Some(mut child) = node.child.take() else {
            return false;
        };
        crate::watchdog::untrack(child.id());
        if node.paused {
            signal(&child, "CONT");
            node.paused = false;
        }
        signal(&child, "TERM");
        crate::harness::wait_for_exit(&mut child, STOP_TIMEOUT)
    }

    /// SIGSTOP: the process freezes with its sockets open (a long GC pause, a stalled VM).
    pub(crate) fn sigstop(&mut self, id: i32) {
        let node = self.node_mut(id);
        let child = node.child.as_ref().expect("sigstop: node is running");
        signal(child, "STOP");
        wait_all_threads_stopped(child.id());
        node.paused = true;
    }

    /// SIGCONT: a SIGSTOPped node resumes where it was.
    pub(crate) fn sigcont(&mut self, id: i32) {
        let node = self.node_mut(id);
        let child = node.child.as_ref().expect("sigcont: node is running");
        signal(child, "CONT");
        node.paused = false;
    }

    /// Whether node `id`'s process is alive (paused counts as alive).
    pub(crate) fn is_running(&mut self, id: i32) -> bool {
        self.node_mut(id).running()
    }

    /// Node `id`'s Kafka listener, `127.0.0.1:PORT`.
    pub(crate) fn listener(&self, id: i32) -> String {
        format!("127.0.0.1:{}", self.node(id).port)
    }

    /// Node `id`'s Kafka listener port.
    pub(crate) fn port(&self, id: i32) -> u16 {
        self.node(id).port
    }

    /// Node `id`'s admin HTTP port.
    pub(crate) fn admin_port(&self, id: i32) -> u16 {
        self.node(id).admin_port
    }

    /// Every node's listener, comma separated.
    pub(crate) fn bootstrap(&self) -> String {
        self.bootstrap_of(&self.ids())
    }

    /// The listeners of the given nodes, comma separated.
    pub(crate) fn bootstrap_of(&self, ids: &[i32]) -> String {
        ids.iter()
            .map(|id| self.listener(*id))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes running and not paused.
    pub(crate) fn live_ids(&mut self) -> Vec<i32> {
        self.nodes
            .iter_mut()
            .filter_map(|n| (n.running() && !n.paused).then_some(n.id))
            .collect()
    }

    /// The listeners of the live nodes (a client bootstrapped to a paused node can hang on it).
    pub(crate) fn live_bootstrap(&mut self) -> String {
        let ids = self.live_ids();
        self.bootstrap_of(&ids)
    }

    /// Client settings for a client of the given bootstrap list.
    pub(crate) fn client_config_for(bootstrap: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("broker.address.family", "v4")
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "500")
            .set("log_level", "3");
        config
    }

    /// Client settings bootstrapped to the live nodes.
    pub(crate) fn client_config(&mut self) -> ClientConfig {
        Self::client_config_for(&self.live_bootstrap())
    }

    /// Waits until every live node's admin `/ready` says ready; panics after `timeout`.
    pub(crate) async fn wait_ready(&mut self, timeout: Duration) {
        self.wait_until("every live node's /ready to answer 200", timeout, |c| {
            let ids = c.live_ids();
            let not_ready: Vec<i32> = ids
                .into_iter()
                .filter(|id| admin_status(c.admin_port(*id), "/ready") != Some(200))
                .collect();
            if not_ready.is_empty() {
                Ok(())
            } else {
                Err(format!("not ready: {not_ready:?}"))
            }
        })
        .await
    }

    /// Polls `check` every [`POLL_INTERVAL`] until it returns `Ok`; after `timeout` panics naming
    /// `what` and the last `Err` (the state seen). `check` may block briefly (metadata requests
    /// are bounded).
    pub(crate) async fn wait_until<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&mut Cluster) -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match tokio::task::block_in_place(|| check(self)) {
                Ok(value) => return value,
                Err(last) => last,
            };
            if Instant::now() >= deadline {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Metadata (of `topic`, or of everything) from the live nodes; None when none answers in
    /// time.
    pub(crate) fn metadata(&mut self, topic: Option<&str>) -> Option<Metadata> {
        let bootstrap = self.live_bootstrap();
        if bootstrap.is_empty() {
            return None;
        }
        metadata_from(&bootstrap, topic)
    }

    /// The leader of `topic`/`partition` that every live node's metadata agrees on; None when
    /// there is none, the nodes disagree or one does not answer.
    pub(crate) fn leader_of(&mut self, topic: &str, partition: i32) -> Option<i32> {
        self.partition_state(topic, partition)
            .and_then(|p| (p.leader >= 0).then_some(p.leader))
    }

    /// The ISR of `topic`/`partition` that every live node's metadata agrees on (empty when
    /// unknown or disputed).
    pub(crate) fn isr_of(&mut self, topic: &str, partition: i32) -> Vec<i32> {
        self.partition_state(topic, partition)
            .map(|p| p.isr)
            .unwrap_or_default()
    }

    /// Each live node's own view of one partition (None: no answer, or no such partition).
    pub(crate) fn partition_views(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Vec<(i32, Option<PartitionState>)> {
        self.live_ids()
            .into_iter()
            .map(|id| {
                let view = metadata_from(&self.listener(id), Some(topic))
                    .and_then(|m| partition_state(&m, topic, partition));
                (id, view)
            })
            .collect()
    }

    /// Leader, replicas and ISR of one partition as every live node sees it. None when a node
    /// does not answer or they disagree: a node that just restarted or resumed may still hold
    /// stale metadata (itself in the ISR, or itself the leader), so no single node is trusted.
    pub(crate) fn partition_state(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Option<PartitionState> {
        agreed(&self.partition_views(topic, partition))
    }

    /// Waits until every live node agrees on `topic`/`partition`'s state and it satisfies
    /// `accept`; returns it.
    pub(crate) async fn wait_for_partition(
        &mut self,
        topic: &str,
        partition: i32,
        what: &str,
        timeout: Duration,
        accept: impl Fn(&PartitionState) -> bool,
    ) -> PartitionState {
        let what = format!("{topic}/{partition}: {what}");
        self.wait_until(&what, timeout, |c| {
            let views = c.partition_views(topic, partition);
            match agreed(&views) {
                Some(state) if accept(&state) => Ok(state),
                _ => Err(format!("views of the live nodes (id, view): {views:?}")),
            }
        })
        .await
    }

    /// Waits until `topic`/`partition` has a leader that `accept` accepts; returns it.
    pub(crate) async fn wait_for_leader(
        &mut self,
        topic: &str,
        partition: i32,
        timeout: Duration,
        accept: impl Fn(i32) -> bool,
    ) -> i32 {
        self.wait_for_partition(topic, partition, "an acceptable leader", timeout, |s| {
            s.leader >= 0 && accept(s.leader)
        })
        .await
        .leader
    }

    /// Waits until `topic`/`partition` has a leader and an ISR of exactly `size` members.
    pub(crate) async fn wait_for_isr_size(
        &mut self,
        topic: &str,
        partition: i32,
        size: usize,
        timeout: Duration,
    ) -> PartitionState {
        let what = format!("a leader and {size} in-sync replicas");
        self.wait_for_partition(topic, partition, &what, timeout, |s| {
            s.leader >= 0 && s.isr.len() == size
        })
        .await
    }

    /// Waits until node `id` is in the ISR of `topic`/`partition` (which has a leader).
    pub(crate) async fn wait_in_isr(
        &mut self,
        topic: &str,
        partition: i32,
        id: i32,
        timeout: Duration,
    ) -> PartitionState {
        let what = format!("node {id} in the ISR");
        self.wait_for_partition(topic, partition, &what, timeout, |s| {
            s.leader >= 0 && s.isr.contains(&id)
        })
        .await
    }

    /// An admin client of the live nodes.
    pub(crate) fn admin(&mut self) -> AdminClient<DefaultClientContext> {
        self.client_config().create().expect("admin client")
    }

    /// Creates a topic with `partitions` partitions and `replication_factor` replicas (and topic
    /// configs), asserting success.
    pub(crate) async fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        configs: &[(&str, &str)],
    ) {
        let mut topic = NewTopic::new(
            name,
            partitions,
            TopicReplication::Fixed(replication_factor),
        );
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        self.submit_topic(&topic).await;
    }

    /// Sends one CreateTopics for `topic` (bounded), asserting success.
    async fn submit_topic(&mut self, topic: &NewTopic<'_>) {
        let admin = self.admin();
        let results = tokio::time::timeout(
            Duration::from_secs(30),
            admin.create_topics(
                [topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            ),
        )
        .await
        .expect("create_topics answered within 30 s")
        .expect("create_topics request");
        for result in results {
            result.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
        }
    }

    /// Creates a topic with explicit replicas per partition (CreateTopics assignments),
    /// asserting success.
    pub(crate) async fn create_topic_assigned(&mut self, name: &str, assignments: &[&[i32]]) {
        self.create_topic_assigned_with(name, assignments, &[])
            .await;
    }

    /// [`Cluster::create_topic_assigned`] with topic configs.
    pub(crate) async fn create_topic_assigned_with(
        &mut self,
        name: &str,
        assignments: &[&[i32]],
        configs: &[(&str, &str)],
    ) {
        let mut topic = NewTopic::new(
            name,
            assignments.len() as i32,
            TopicReplication::Variable(assignments),
        );
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        self.submit_topic(&topic).await;
    }

    /// Node `id`'s data directory (its partitions' logs are `<topic>-<index>` in it).
    pub(crate) fn data_dir(&self, id: i32) -> PathBuf {
        self.node(id).data_dir.clone()
    }

    /// The last `lines` lines of node `id`'s log.
    pub(crate) fn log_tail(&self, id: i32, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.node(id).log_path) {
            let _ = file.read_to_string(&mut text);
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Prints the tail of every node's log to stderr (the test's output).
    pub(crate) fn print_log_tails(&self) {
        for node in &self.nodes {
            eprintln!(
                "---- node {} ({}), last {LOG_TAIL_LINES} lines of {} ----\n{}",
                node.id,
                self.listener(node.id),
                node.log_path.display(),
                self.log_tail(node.id, LOG_TAIL_LINES)
            );
        }
    }

    /// Runs `body` bounded by `limit`; on a timeout panics while the cluster is still alive, so
    /// its drop prints the logs.
    pub(crate) async fn bounded<T>(limit: Duration, body: impl Future<Output = T>) -> T {
        match tokio::time::timeout(limit, body).await {
            Ok(value) => value,
            Err(_) => panic!("test exceeded its limit of {limit:?}"),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids = self.ids();
        for id in ids {
            self.kill9(id);
        }
        if std::thread::panicking() {
            self.print_log_tails();
            match self.dir.take() {
                Some(dir) if std::env::var_os(KEEP_DIRS_VARIABLE).is_some() => eprintln!(
                    "cluster test failed; data dirs and logs kept in {}",
                    dir.keep().display()
                ),
                _ => eprintln!(
                    "cluster test failed; set {KEEP_DIRS_VARIABLE}=1 to keep its data dirs and logs"
                ),
            }
        }
    }
}

/// What Metadata says about one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionState {
    /// -1 when there is none.
    pub(crate) leader: i32,
    /// In assignment order (the first is the preferred leader).
    pub(crate) replicas: Vec<i32>,
    /// Sorted by id.
    pub(crate) isr: Vec<i32>,
}

/// The view all of `views` share (None when one is missing or they differ).
fn agreed(views: &[(i32, Option<PartitionState>)]) -> Option<PartitionState> {
    let (_, first) = views.first()?;
    let first = first.as_ref()?;
    views
        .iter()
        .all(|(_, view)| view.as_ref() == Some(first))
        .then(|| first.clone())
}

fn partition_state(metadata: &Metadata, topic: &str, partition: i32) -> Option<PartitionState> {
    let topic = metadata.topics().iter().find(|t| t.name() == topic)?;
    if topic.error().is_some() {
        return None;
    }
    let p = topic.partitions().iter().find(|p| p.id() == partition)?;
    if p.error().is_some() && p.leader() < 0 {
        return None;
    }
    Some(PartitionState {
        leader: p.leader(),
        replicas: p.replicas().to_vec(),
        isr: {
            // Sorted: nodes may list the same ISR in different orders.
            let mut isr = p.isr().to_vec();
            isr.sort_unstable();
            isr
        },
    })
}

/// Metadata from a fresh client of `bootstrap` (a fresh client has no stale cache).
pub(crate) fn metadata_from(bootstrap: &str, topic: Option<&str>) -> Option<Metadata> {
    let consumer: BaseConsumer = Cluster::client_config_for(bootstrap).create().ok()?;
    consumer.fetch_metadata(topic, METADATA_TIMEOUT).ok()
}

/// `sluice cluster secret --file path`, asserting success.
pub(crate) fn create_secret(path: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["cluster", "secret", "--file"])
        .arg(path)
        .output()
        .expect("run sluice cluster secret");
    assert!(out.status.success(), "sluice cluster secret: {out:?}");
}

/// `n` distinct free loopback ports: all bound at once (so none repeats), then released.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {} failed", child.id());
}

/// The port in a `... listening on HOST:PORT ...` line.
fn listening_port(line: &str) -> u16 {
    line.split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in startup line: {line}"))
}

/// `GET path` on an admin port with short timeouts: the status code, or None when the node does
/// not answer (down, or paused).
pub(crate) fn admin_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    String::from_utf8_lossy(&head[..n])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The internal-topic partition (`__consumer_offsets` for a group id, `__transaction_state` for
/// a transactional id) whose leader coordinates `key`: Java's `String.hashCode`, made
/// non-negative as Kafka's `Utils.abs`, modulo the partitions.
pub(crate) fn coordinator_partition(key: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in key.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let positive = if h == i32::MIN { 0 } else { h.abs() };
    positive % partitions
}

/// Waits until every thread of process `pid` is stopped (state `T` in /proc): `kill -STOP`
/// returns when the signal is sent, and a loaded machine may still run a thread that was mid
/// request for a while after, so a test that checks "a paused node does not answer" must wait.
fn wait_all_threads_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("sigstop: the process's threads are listed in /proc");
        let all_stopped = tasks.filter_map(Result::ok).all(|task| {
            std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                // The state follows the command name in parentheses, which may hold spaces.
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with(['T', 't']))
            })
        });
        if all_stopped {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sigstop: process {pid} still has running threads after 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
