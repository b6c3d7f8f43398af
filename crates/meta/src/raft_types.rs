//! The openraft type configuration: which of our types fill openraft's generic slots.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::record::{MetadataRecord, Outcome};

/// A node of the metadata quorum (in combined mode also the broker id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The index of an entry in the metadata log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LogIndex(pub u64);

openraft::declare_raft_types!(
    /// Sluice's metadata quorum: records in, outcomes out, `BasicNode` (an address) per node.
    pub(crate) TypeConfig:
        D = MetadataRecord,
        R = Outcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

pub(crate) type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachineStore>;
pub(crate) type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub(crate) type Vote = openraft::alias::VoteOf<TypeConfig>;
pub(crate) type Entry = openraft::alias::EntryOf<TypeConfig>;
pub(crate) type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub(crate) type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;

impl From<u64> for NodeId {
    fn from(id: u64) -> Self {
        Self(id)
    }
}
