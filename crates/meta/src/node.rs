//! [`MetaNode`]: the crate's API. Opens (or creates) a node's metadata directory, runs openraft
//! over it, and lets callers propose records and read the applied state.
//!
//! [`MetaNode::open`] runs a one-voter cluster that this node initializes on first start, with no
//! listener; [`MetaNode::open_cluster`] (in `cluster.rs`) runs one voter of a multi-voter quorum
//! over TCP.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fs2::FileExt;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Config, ReadPolicy, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::Peers;
use crate::fsutil;
use crate::liveness::{Leadership, Liveness};
use crate::log_store::LogStore;
use crate::membership::{ClusterSecret, WarnLimiter};
use crate::network::{Credentials, NetworkFactory};
use crate::raft_types::{LogIndex, NodeId, Raft};
use crate::record::Outcome;
use crate::server::{self, Server};
use crate::state::MetadataState;
use crate::state_machine::{Applied, SnapshotFile, StateMachineStore};

/// Tunables of a [`MetaNode`]; [`Default`] suits production, tests shrink them.
#[derive(Debug, Clone)]
pub struct MetaOptions {
    /// Build a snapshot once this many entries were applied since the last one.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind a snapshot (for followers that are slightly behind).
    pub entries_kept_after_snapshot: u64,
    /// How long [`MetaNode::open`] waits for this node to lead and catch up.
    pub ready_timeout: Duration,
    /// This node's controller address as stored in the Raft membership by [`MetaNode::open`]
    /// (a one-voter quorum never dials it). [`MetaNode::open_cluster`] takes the addresses from
    /// its `voters` argument instead.
    pub address: String,
    /// How often the leader sends heartbeats (empty append-entries) to followers.
    pub heartbeat_interval: Duration,
    /// A follower that hears no leader for a random time between these two starts an election
    /// (with pre-vote). Small values mean fast failover; they must stay well above the
    /// heartbeat interval and the network round trip.
    pub election_timeout_min: Duration,
    /// See [`MetaOptions::election_timeout_min`].
    pub election_timeout_max: Duration,
    /// How long [`MetaNode::propose`] and [`MetaNode::heartbeat`] keep trying to reach a leader
    /// (and, for a proposal, to apply it locally) before giving up.
    pub propose_timeout: Duration,
    /// How long sending a whole snapshot to a lagging follower (and its installing it) may
    /// take. openraft's default of 200 ms is too short for a state of any size.
    pub snapshot_send_timeout: Duration,
}

impl Default for MetaOptions {
    fn default() -> Self {
        Self {
            snapshot_every_entries: 1000,
            entries_kept_after_snapshot: 100,
            ready_timeout: Duration::from_secs(10),
            address: String::new(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            propose_timeout: Duration::from_secs(10),
            snapshot_send_timeout: Duration::from_secs(10),
        }
    }
}

impl MetaOptions {
    /// openraft's config for these options.
    fn raft_config(&self) -> Result<Config, OpenError> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Config {
            cluster_name: "sluice-metadata".to_string(),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: self.entries_kept_after_snapshot,
            heartbeat_interval: millis(self.heartbeat_interval),
            election_timeout_min: millis(self.election_timeout_min),
            election_timeout_max: millis(self.election_timeout_max),
            install_snapshot_timeout: millis(self.snapshot_send_timeout),
            // Our transport implements pre-vote: a restarted or partitioned voter asks before
            // bumping its term, so it cannot depose a healthy leader when it comes back.
            enable_pre_vote: Some(true),
            ..Config::default()
        }
        .validate()
        .map_err(|e| OpenError::Raft(e.to_string()))
    }
}

/// Why a metadata directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot use the metadata directory at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata file {path} is unreadable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("the metadata directory {path} belongs to node {stored}, not node {requested}")]
    WrongNode {
        path: PathBuf,
        stored: NodeId,
        requested: NodeId,
    },
    #[error("the metadata directory {path} is in use by another process or node")]
    Locked {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the metadata quorum: {0}")]
    Raft(String),
    #[error("cannot listen for metadata RPCs on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("node {node} is not among the metadata voters {voters:?}")]
    NotAVoter { node: NodeId, voters: Vec<NodeId> },
    #[error("node {node} did not become the metadata leader within {timeout:?}: {reason}")]
    NotReady {
        node: NodeId,
        timeout: Duration,
        reason: String,
    },
}

/// Why a proposal (or a heartbeat, or [`MetaNode::wait_leader`]) did not succeed, or may not
/// have.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error(
        "no metadata leader took the request within {timeout:?} (last problem: {last_problem})"
    )]
    NoLeader {
        timeout: Duration,
        last_problem: String,
    },
    #[error("the proposal reached leader {leader} but no answer came back; it may or may not commit ({reason})")]
    Indeterminate { leader: NodeId, reason: String },
    #[error(
        "the proposal committed at {index:?} but this node did not apply it within {timeout:?}"
    )]
    NotApplied { index: LogIndex, timeout: Duration },
    #[error("a leader change discarded the proposal; it may still commit, so retry only idempotent records (leader now {leader:?})")]
    Discarded { leader: Option<NodeId> },
    #[error("the metadata quorum has stopped: {0}")]
    Stopped(String),
    #[error("the metadata quorum refused the proposal: {0}")]
    Refused(String),
}

/// A committed proposal: where it is in the log and what applying it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub index: LogIndex,
    pub outcome: Outcome,
}

/// Follows the applied metadata state (see [`MetaNode::subscribe`]).
#[derive(Clone)]
pub struct StateWatch {
    applied: watch::Receiver<Applied>,
}

impl StateWatch {
    /// The applied state now (marks it seen).
    pub fn state(&mut self) -> Arc<MetadataState> {
        Arc::clone(&self.applied.borrow_and_update().state)
    }

    /// Waits until a newer state is applied; `false` once the node stopped.
    pub async fn changed(&mut self) -> bool {
        self.applied.changed().await.is_ok()
    }
}

/// Identifies the node a metadata directory belongs to (`<dir>/node.json`).
#[derive(Serialize, Deserialize)]
struct NodeFile {
    node_id: NodeId,
}

/// One node of the metadata quorum (see the module docs). Call [`MetaNode::shutdown`] before
/// dropping it: openraft's tasks (and the listener of a cluster node) keep running otherwise.
pub struct MetaNode {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft,
    pub(crate) applied: watch::Receiver<Applied>,
    ready_timeout: Duration,
    pub(crate) propose_timeout: Duration,
    /// Heartbeats received while this node leads.
    pub(crate) liveness: Arc<Liveness>,
    /// Connections to other voters for forwarded proposals, heartbeats and read indexes.
    pub(crate) peers: Peers,
    /// The controller RPC listener; `None` for a one-voter node from [`MetaNode::open`].
    server: parking_lot::Mutex<Option<Server>>,
    /// Resets [`Liveness`] the moment this node becomes leader.
    leadership_watch: parking_lot::Mutex<Option<JoinHandle<()>>>,
    /// Kept to see when openraft has let go of the storage (see [`MetaNode::shutdown`]).
    log_store: LogStore,
    snapshots: SnapshotFile,
    /// Held for the node's lifetime: one process per metadata directory.
    /// Dropped (unlocked) by [`MetaNode::shutdown`], so the directory can be reopened while
    /// this value is still referenced.
    lock: parking_lot::Mutex<Option<File>>,
}

impl std::fmt::Debug for MetaNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaNode")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// How a node reaches the others, decided at open.
pub(crate) enum Membership {
    /// One voter at `MetaOptions::address`; no listener.
    Single,
    /// These voters (id to `HOST:PORT`), serving RPCs on this listener to nodes that prove
    /// they hold `secret`.
    Cluster {
        voters: BTreeMap<NodeId, String>,
        listener: tokio::net::TcpListener,
        secret: ClusterSecret,
    },
}

impl MetaNode {
    /// Opens the metadata under `dir` as node `node_id` with default options.
    pub async fn open(dir: &Path, node_id: NodeId) -> Result<Self, OpenError> {
        Self::open_with(dir, node_id, MetaOptions::default()).await
    }

    /// Opens the metadata under `dir` as node `node_id`: creates a one-voter cluster on first
    /// start, reloads snapshot and log on later ones, and returns once this node leads and has
    /// applied everything in its log.
    pub async fn open_with(
        dir: &Path,
        node_id: NodeId,
        options: MetaOptions,
    ) -> Result<Self, OpenError> {
        Self::open_as(dir, node_id, options, Membership::Single).await
    }

    /// Opens the directory and starts openraft (and the listener of a cluster node).
    pub(crate) async fn open_as(
        dir: &Path,
        node_id: NodeId,
        options: MetaOptions,
        membership: Membership,
    ) -> Result<Self, OpenError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OpenError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
        lock.try_lock_exclusive()
            .map_err(|source| OpenError::Locked {
                path: dir.to_path_buf(),
                source,
            })?;
        check_node_id(dir, node_id)?;

        let log_store = LogStore::open(dir)?;
        let (publisher, applied) = watch::channel(Applied::default());
        let snapshots = SnapshotFile::open(dir)?;
        let state_machine = StateMachineStore::new(snapshots.clone(), publisher);
        let config = options.raft_config()?;
        let secret = match &membership {
            Membership::Cluster { secret, .. } => secret.clone(),
            // A one-voter quorum never dials anyone; a throwaway secret nobody else has keeps
            // the transport's types simple.
            Membership::Single => {
                ClusterSecret::generate().map_err(|e| OpenError::Raft(e.to_string()))?
            }
        };
        let credentials = Credentials {
            me: node_id,
            secret,
        };
        let raft = Raft::new(
            node_id,
            Arc::new(config),
            NetworkFactory::new(credentials.clone()),
            log_store.clone(),
            state_machine,
        )
        .await
        .map_err(|e| OpenError::Raft(e.to_string()))?;
        let liveness = Arc::new(Liveness::default());
        let (voters, server) = match membership {
            Membership::Single => (
                BTreeMap::from([(node_id, BasicNode::new(&options.address))]),
                None,
            ),
            Membership::Cluster {
                voters,
                listener,
                secret,
            } => {
                let handler = Arc::new(server::Handler {
                    id: node_id,
                    raft: raft.clone(),
                    liveness: Arc::clone(&liveness),
                    secret,
                    refusals: WarnLimiter::new(),
                });
                let addr = listener.local_addr().ok();
                let server =
                    Server::spawn(listener, handler).map_err(|source| OpenError::Bind {
                        addr: addr.map_or_else(|| "?".to_string(), |a| a.to_string()),
                        source,
                    })?;
                let voters = voters
                    .into_iter()
                    .map(|(id, addr)| (id, BasicNode::new(addr)))
                    .collect();
                (voters, Some(server))
            }
        };
        let single = server.is_none();
        let node = Self {
            id: node_id,
            leadership_watch: parking_lot::Mutex::new(Some(tokio::spawn(watch_leadership(
                raft.clone(),
                node_id,
                Arc::clone(&liveness),
            )))),
            raft,
            applied,
            ready_timeout: options.ready_timeout,
            propose_timeout: options.propose_timeout,
            liveness,
            peers: Peers::new(credentials),
            server: parking_lot::Mutex::new(server),
            log_store,
            snapshots,
            lock: parking_lot::Mutex::new(Some(lock)),
        };
        let started = async {
            node.initialize(voters).await?;
            if single {
                node.wait_ready().await?;
            }
            Ok(())
        };
        if let Err(e) = started.await {
            // Don't leave tasks running on a directory we report as not opened.
            node.stop_tasks().await;
            let _ = node.raft.shutdown().await;
            return Err(e);
        }
        Ok(node)
    }

    /// Writes the initial membership on first start (a no-op on later ones). Every voter of a new
    /// cluster does this with the same voter set, openraft's documented pattern: whichever
    /// initializes first, they agree, and "already initialized" is fine.
    async fn initialize(&self, voters: BTreeMap<NodeId, BasicNode>) -> Result<(), OpenError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| OpenError::Raft(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        match self.raft.initialize(voters).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(OpenError::Raft(e.to_string())),
        }
    }

    /// Waits until this node leads and has applied every entry in its log, so `state()` shows
    /// everything committed before the restart.
    async fn wait_ready(&self) -> Result<(), OpenError> {
        let not_ready = |e: openraft::metrics::WaitError| OpenError::NotReady {
            node: self.id,
            timeout: self.ready_timeout,
            reason: e.to_string(),
        };
        self.raft
            .wait(Some(self.ready_timeout))
            .state(ServerState::Leader, "metadata node becomes leader")
            .await
            .map_err(not_ready)?;
        // A read index: at least the committed id and the first entry of the leader's term, so
        // whatever an earlier run committed (or left uncommitted in this term) is applied.
        let read = self.raft.ensure_linearizable(ReadPolicy::ReadIndex);
        match tokio::time::timeout(self.ready_timeout, read).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(OpenError::NotReady {
                    node: self.id,
                    timeout: self.ready_timeout,
                    reason: e.to_string(),
                })
            }
            Err(_elapsed) => {
                return Err(OpenError::NotReady {
                    node: self.id,
                    timeout: self.ready_timeout,
                    reason: "the log was not applied in time".to_string(),
                })
            }
        }
        Ok(())
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The applied metadata: an immutable view, cheap to take (an `Arc`).
    pub fn state(&self) -> Arc<MetadataState> {
        Arc::clone(&self.applied.borrow().state)
    }

    /// Waits until the state changes (a new batch applied); `false` once the node stopped.
    pub async fn changed(&mut self) -> bool {
        self.applied.changed().await.is_ok()
    }

    /// A handle that sees every newly applied state, for tasks that react to metadata changes.
    pub fn subscribe(&self) -> StateWatch {
        StateWatch {
            applied: self.applied.clone(),
        }
    }

    /// The index of the last log entry applied to [`MetaNode::state`].
    pub fn applied_index(&self) -> Option<LogIndex> {
        self.applied.borrow().index
    }

    /// The last log index the current snapshot covers, if there is one.
    pub fn snapshot_index(&self) -> Option<LogIndex> {
        self.raft
            .metrics()
            .borrow_watched()
            .snapshot
            .map(|id| LogIndex(id.index))
    }

    /// The last purged log index (entries at or below it live only in the snapshot).
    pub fn purged_index(&self) -> Option<LogIndex> {
        self.raft
            .metrics()
            .borrow_watched()
            .purged
            .map(|id| LogIndex(id.index))
    }

    /// Builds a snapshot of everything applied now and waits until it is on disk; returns the
    /// last log index it covers.
    pub async fn snapshot(&self) -> Result<Option<LogIndex>, ProposeError> {
        let applied = self.applied_index();
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| ProposeError::Stopped(e.to_string()))?;
        let metrics = self
            .raft
            .wait(Some(self.ready_timeout))
            .metrics(
                move |m| m.snapshot.map(|id| LogIndex(id.index)) >= applied,
                "snapshot covers the applied log",
            )
            .await
            .map_err(|e| ProposeError::Stopped(e.to_string()))?;
        Ok(metrics.snapshot.map(|id| LogIndex(id.index)))
    }

    /// Stops the listener and its connections, then openraft, and waits until nothing of them
    /// runs or touches the directory any more: the directory (and the listen port) can then be
    /// reopened. (openraft builds snapshots in detached tasks that outlive `Raft::shutdown`; we
    /// wait for them to drop their storage handles.) Reads of [`MetaNode::state`] keep
    /// answering the last applied state.
    pub async fn shutdown(&self) -> Result<(), OpenError> {
        self.stop_tasks().await;
        self.raft
            .shutdown()
            .await
            .map_err(|e| OpenError::Raft(format!("shutdown: {e}")))?;
        let deadline = tokio::time::Instant::now() + self.ready_timeout;
        while self.log_store.handles() > 1 || self.snapshots.handles() > 1 {
            if tokio::time::Instant::now() >= deadline {
                return Err(OpenError::Raft(format!(
                    "shutdown: openraft tasks still hold the metadata storage after {:?}",
                    self.ready_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(self.lock.lock().take());
        Ok(())
    }

    /// Stops our own tasks: the listener (first, so no request reaches a stopping `Raft`) and
    /// the leadership watch.
    async fn stop_tasks(&self) {
        let server = self.server.lock().take();
        if let Some(server) = server {
            server.stop().await;
        }
        let watch = self.leadership_watch.lock().take();
        if let Some(watch) = watch {
            watch.abort();
            // Aborted, or ended with the metrics channel; either way it no longer runs.
            let _ = watch.await;
        }
    }

    /// The address the controller listener is bound to (`None` for [`MetaNode::open`]).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.server.lock().as_ref().map(Server::local_addr)
    }
}

/// Follows openraft's metrics and resets the heartbeat map the moment this node starts leading
/// (and empties it when it stops). Ends when openraft stops.
async fn watch_leadership(raft: Raft, id: NodeId, liveness: Arc<Liveness>) {
    let mut metrics = raft.metrics();
    loop {
        match server::leadership(&raft, id) {
            Some((term, voters)) => liveness.observe(Some(Leadership {
                term,
                voters: &voters,
            })),
            None => liveness.observe(None),
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Records the owner on first use and refuses a directory that belongs to another node: its vote
/// and log would be another node's.
fn check_node_id(dir: &Path, node_id: NodeId) -> Result<(), OpenError> {
    let path = dir.join("node.json");
    let io_err = |source| OpenError::Io {
        path: path.clone(),
        source,
    };
    match fsutil::read_if_exists(&path).map_err(io_err)? {
        Some(bytes) => {
            let stored: NodeFile =
                serde_json::from_slice(&bytes).map_err(|e| OpenError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if stored.node_id != node_id {
                return Err(OpenError::WrongNode {
                    path: dir.to_path_buf(),
                    stored: stored.node_id,
                    requested: node_id,
                });
            }
            Ok(())
        }
        None => {
            let bytes = serde_json::to_vec(&NodeFile { node_id }).expect("serializes");
            fsutil::write_atomic(&path, &bytes).map_err(io_err)
        }
    }
}
