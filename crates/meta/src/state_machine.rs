//! The state machine side of openraft (`RaftStateMachine`): applies committed entries to a
//! [`MetadataState`], publishes it to readers, and keeps the snapshot in `<dir>/snapshot.json`.
//!
//! The state machine itself lives in memory only. What makes it durable is the snapshot plus
//! the log: on start-up openraft installs the snapshot and re-applies the log up to the saved
//! committed id (see `log_store`'s `committed.json`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::fsutil;
use crate::node::OpenError;
use crate::raft_types::{LogId, LogIndex, SnapshotMeta, StoredMembership, TypeConfig};
use crate::record::Outcome;
use crate::state::MetadataState;

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, MetadataState>;

/// What readers see: the state and the last log index applied to it. (openraft's metrics lag
/// behind `client_write` returning, so they cannot tell a proposer what it may read.)
#[derive(Debug, Clone, Default)]
pub(crate) struct Applied {
    pub(crate) index: Option<LogIndex>,
    pub(crate) state: Arc<MetadataState>,
}

/// The snapshot document on disk.
#[derive(Serialize, Deserialize)]
struct SnapshotDocument {
    meta: SnapshotMeta,
    state: MetadataState,
}

/// The one snapshot file, shared by the state machine and its snapshot builders.
#[derive(Clone)]
pub(crate) struct SnapshotFile {
    path: PathBuf,
    /// The last log id the file covers; the lock also orders writers (a builder runs in its own
    /// task and may race an installed snapshot).
    current: Arc<Mutex<Option<LogId>>>,
}

impl SnapshotFile {
    pub(crate) fn open(dir: &Path) -> Result<Self, OpenError> {
        let path = dir.join("snapshot.json");
        let current = Self::read_at(&path)?.and_then(|doc| doc.meta.last_log_id);
        Ok(Self {
            path,
            current: Arc::new(Mutex::new(current)),
        })
    }

    /// How many handles to this file exist (the state machine, snapshot builders, the node).
    pub(crate) fn handles(&self) -> usize {
        Arc::strong_count(&self.current)
    }

    fn read_at(path: &Path) -> Result<Option<SnapshotDocument>, OpenError> {
        let bytes = fsutil::read_if_exists(path).map_err(|source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        bytes
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| OpenError::Corrupt {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// Makes `meta`/`state` the current snapshot unless the file already covers as much.
    fn save(&self, meta: &SnapshotMeta, state: &MetadataState) -> io::Result<()> {
        let mut current = self.current.lock();
        if meta.last_log_id <= *current {
            // Raft guarantees equal log ids mean equal states; never go back to an older one.
            return Ok(());
        }
        let document = SnapshotDocument {
            meta: meta.clone(),
            state: state.clone(),
        };
        let bytes = serde_json::to_vec(&document).map_err(io::Error::other)?;
        fsutil::write_atomic(&self.path, &bytes)?;
        *current = meta.last_log_id;
        Ok(())
    }

    fn load(&self) -> io::Result<Option<Snapshot>> {
        let _guard = self.current.lock();
        let document = Self::read_at(&self.path).map_err(io::Error::other)?;
        Ok(document.map(|doc| Snapshot {
            meta: doc.meta,
            snapshot: doc.state,
        }))
    }
}

/// openraft's state machine (see the module docs).
pub(crate) struct StateMachineStore {
    state: Arc<MetadataState>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// Readers' view: replaced after every applied batch, before any client hears back.
    published: watch::Sender<Applied>,
    snapshots: SnapshotFile,
}

impl StateMachineStore {
    pub(crate) fn new(snapshots: SnapshotFile, published: watch::Sender<Applied>) -> Self {
        Self {
            state: Arc::default(),
            last_applied: None,
            membership: StoredMembership::default(),
            published,
            snapshots,
        }
    }

    fn publish(&self) {
        self.published.send_replace(Applied {
            index: self.last_applied.map(|id| LogIndex(id.index)),
            state: Arc::clone(&self.state),
        });
    }
}

/// Builds a snapshot from a frozen view of the state (the `Arc` is not mutated after cloning:
/// the state machine copies on write).
pub(crate) struct SnapshotBuilder {
    meta: SnapshotMeta,
    state: Arc<MetadataState>,
    snapshots: SnapshotFile,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = MetadataState;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        self.snapshots.save(&self.meta, &self.state)?;
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: MetadataState::clone(&self.state),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = MetadataState;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut responses = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let outcome = match &entry.payload {
                EntryPayload::Blank => Outcome::Applied,
                EntryPayload::Normal(record) => Arc::make_mut(&mut self.state).apply(record),
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                    Outcome::Applied
                }
            };
            self.last_applied = Some(entry.log_id);
            if let Some(responder) = responder {
                responses.push((responder, outcome));
            }
        }
        // Publish first, so a proposer that hears back reads its own write.
        self.publish();
        for (responder, outcome) in responses {
            responder.send(outcome);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
            },
            state: Arc::clone(&self.state),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: MetadataState,
    ) -> Result<(), io::Error> {
        self.snapshots.save(meta, &snapshot)?;
        self.state = Arc::new(snapshot);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        self.snapshots.load()
    }
}
