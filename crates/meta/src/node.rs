//! [`MetaNode`]: the crate's API. Opens (or creates) a node's metadata directory, runs openraft
//! over it, and lets callers propose records and read the applied state.
//!
//! Step 1 of the cluster plan: a one-voter cluster that this node initializes on first start.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fs2::FileExt;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, ReadPolicy, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::fsutil;
use crate::log_store::LogStore;
use crate::network::NetworkFactory;
use crate::raft_types::{LogIndex, NodeId, Raft};
use crate::record::{MetadataRecord, Outcome};
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
    /// This node's controller address as stored in the Raft membership (unused until the
    /// quorum has a transport).
    pub address: String,
}

impl Default for MetaOptions {
    fn default() -> Self {
        Self {
            snapshot_every_entries: 1000,
            entries_kept_after_snapshot: 100,
            ready_timeout: Duration::from_secs(10),
            address: String::new(),
        }
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
    #[error("node {node} did not become the metadata leader within {timeout:?}: {reason}")]
    NotReady {
        node: NodeId,
        timeout: Duration,
        reason: String,
    },
}

/// Why a proposal did not commit (or may not have).
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("this node is not the metadata leader; the leader is {leader:?}")]
    NotLeader { leader: Option<NodeId> },
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
/// dropping it: openraft's tasks keep running otherwise.
pub struct MetaNode {
    id: NodeId,
    raft: Raft,
    applied: watch::Receiver<Applied>,
    ready_timeout: Duration,
    /// Kept to see when openraft has let go of the storage (see [`MetaNode::shutdown`]).
    log_store: LogStore,
    snapshots: SnapshotFile,
    /// Held for the node's lifetime: one process per metadata directory.
    _lock: File,
}

impl std::fmt::Debug for MetaNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaNode")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
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
        let config = Config {
            cluster_name: "sluice-metadata".to_string(),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_every_entries),
            max_in_snapshot_log_to_keep: options.entries_kept_after_snapshot,
            ..Config::default()
        }
        .validate()
        .map_err(|e| OpenError::Raft(e.to_string()))?;
        let raft = Raft::new(
            node_id,
            Arc::new(config),
            NetworkFactory::default(),
            log_store.clone(),
            state_machine,
        )
        .await
        .map_err(|e| OpenError::Raft(e.to_string()))?;
        let node = Self {
            id: node_id,
            raft,
            applied,
            ready_timeout: options.ready_timeout,
            log_store,
            snapshots,
            _lock: lock,
        };
        if let Err(e) = node.start(&options.address).await {
            // Don't leave openraft's tasks running on a directory we report as not opened.
            let _ = node.raft.shutdown().await;
            return Err(e);
        }
        Ok(node)
    }

    /// Initializes the one-voter cluster on first start, then waits until ready.
    async fn start(&self, address: &str) -> Result<(), OpenError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| OpenError::Raft(e.to_string()))?;
        if !initialized {
            let voters = BTreeMap::from([(self.id, BasicNode::new(address))]);
            self.raft
                .initialize(voters)
                .await
                .map_err(|e| OpenError::Raft(e.to_string()))?;
        }
        self.wait_ready().await
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

    /// Commits `record` through the quorum and applies it; returns once the state machine has
    /// applied it, so [`MetaNode::state`] already reflects it.
    pub async fn propose(&self, record: MetadataRecord) -> Result<Committed, ProposeError> {
        match self.raft.client_write(record).await {
            Ok(response) => Ok(Committed {
                index: LogIndex(response.log_id.index),
                outcome: response.data,
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(ProposeError::NotLeader {
                    leader: forward.leader_id,
                })
            }
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(forward))) => {
                Err(ProposeError::Discarded {
                    leader: forward.leader_id,
                })
            }
            Err(RaftError::APIError(other)) => Err(ProposeError::Refused(other.to_string())),
            Err(RaftError::Fatal(fatal)) => Err(ProposeError::Stopped(fatal.to_string())),
        }
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

    /// Stops openraft and waits until nothing of it touches the directory any more, which can
    /// then be reopened. (openraft builds snapshots in detached tasks that outlive
    /// `Raft::shutdown`; we wait for them to drop their storage handles.)
    pub async fn shutdown(&self) -> Result<(), OpenError> {
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
        Ok(())
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
