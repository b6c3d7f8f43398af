//! The metadata records: the entries of the Raft log, and what applying one answers.
//!
//! The serde form of these types is the on-disk and (later) on-wire format of the metadata log,
//! so variants and fields are only ever added, never renamed.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::raft_types::NodeId;

/// One listener a broker accepts clients on (Kafka's `listeners` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// The listener name, e.g. `PLAINTEXT`.
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// One partition's replicas and leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Assigned replicas, the preferred leader first.
    pub replicas: Vec<NodeId>,
    /// In-sync replicas (a subset of `replicas`).
    pub isr: Vec<NodeId>,
    /// None while no eligible replica is alive.
    pub leader: Option<NodeId>,
    /// Bumped on every leader change; stamped into the batches the leader writes.
    pub leader_epoch: i32,
    /// Bumped on every change of this partition (ISR, leader, replicas).
    pub partition_epoch: i32,
    /// A reassignment's replicas not yet caught up.
    #[serde(default)]
    pub adding: Vec<NodeId>,
    /// A reassignment's replicas to drop once `adding` are in sync.
    #[serde(default)]
    pub removing: Vec<NodeId>,
}

impl PartitionState {
    /// A new partition led by its first replica, every replica in sync.
    pub fn new(replicas: Vec<NodeId>) -> Self {
        PartitionState {
            leader: replicas.first().copied(),
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }
}

/// The leader a [`MetadataRecord::PartitionChange`] sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderChange {
    /// No leader (no eligible replica alive).
    None,
    Node(NodeId),
}

/// A change to the cluster metadata, replicated through Raft and applied in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// A broker announces itself and where clients reach it; a later registration of the same
    /// id replaces the earlier one.
    RegisterBroker {
        id: NodeId,
        listeners: Vec<Listener>,
        /// `broker.rack`, for rack-aware replica placement.
        #[serde(default)]
        rack: Option<String>,
    },
    /// The controller stopped hearing from a broker: it leads nothing and is left out of
    /// Metadata answers until unfenced.
    FenceBroker { id: NodeId },
    /// A fenced broker is heartbeating again.
    UnfenceBroker { id: NodeId },
    /// Sets one partition's assignment and leadership whole (topic creation, added partitions,
    /// migration of a single-node data directory).
    Partition {
        topic: String,
        partition: i32,
        state: PartitionState,
    },
    /// Changes a partition's ISR, leader or replicas (Kafka's PartitionChangeRecord, also how
    /// AlterPartition lands). Refused unless the partition is still at `partition_epoch` (and,
    /// when given, `leader_epoch`), so a change computed from stale state never applies. A new
    /// leader bumps the leader epoch; every applied change bumps the partition epoch.
    PartitionChange {
        topic: String,
        partition: i32,
        partition_epoch: i32,
        #[serde(default)]
        leader_epoch: Option<i32>,
        #[serde(default)]
        leader: Option<LeaderChange>,
        #[serde(default)]
        isr: Option<Vec<NodeId>>,
        #[serde(default)]
        replicas: Option<Vec<NodeId>>,
        /// Replicas a reassignment is still adding / will remove (cleared with `Some(vec![])`).
        #[serde(default)]
        adding: Option<Vec<NodeId>>,
        #[serde(default)]
        removing: Option<Vec<NodeId>>,
    },
    /// Names the cluster (Kafka's cluster id); only the first one applies.
    ClusterId { id: String },
    /// Several records applied together: all of them, or (when one is refused) none.
    Batch(Vec<MetadataRecord>),
    /// Creates a topic, or updates it: the id must stay the same and the partition count may
    /// only grow. `configs` are the topic-level overrides (Kafka names), replacing earlier ones.
    Topic {
        name: String,
        /// The topic id, a UUID in its hyphenated string form.
        id: String,
        partitions: i32,
        configs: BTreeMap<String, String>,
    },
    /// Deletes a topic.
    RemoveTopic { name: String },
    /// Replaces a topic's config overrides with `configs`.
    ConfigRecord {
        topic: String,
        configs: BTreeMap<String, String>,
    },
    /// Reserves producer ids below `next`: the next block starts there. Must increase.
    ProducerIds { next: i64 },
}

impl fmt::Display for MetadataRecord {
    // openraft's `AppData` needs `Display`; it shows up in openraft's logs, so keep it short.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RegisterBroker { id, .. } => write!(f, "RegisterBroker({id})"),
            Self::FenceBroker { id } => write!(f, "FenceBroker({id})"),
            Self::UnfenceBroker { id } => write!(f, "UnfenceBroker({id})"),
            Self::Partition {
                topic,
                partition,
                state,
            } => write!(
                f,
                "Partition({topic}-{partition}, leader {:?} epoch {})",
                state.leader, state.leader_epoch
            ),
            Self::PartitionChange {
                topic,
                partition,
                leader,
                isr,
                ..
            } => write!(
                f,
                "PartitionChange({topic}-{partition}, {leader:?}, {isr:?})"
            ),
            Self::ClusterId { id } => write!(f, "ClusterId({id})"),
            Self::Batch(records) => write!(f, "Batch({} records)", records.len()),
            Self::Topic {
                name, partitions, ..
            } => write!(f, "Topic({name}, {partitions} partitions)"),
            Self::RemoveTopic { name } => write!(f, "RemoveTopic({name})"),
            Self::ConfigRecord { topic, configs } => {
                write!(f, "ConfigRecord({topic}, {} keys)", configs.len())
            }
            Self::ProducerIds { next } => write!(f, "ProducerIds(next={next})"),
        }
    }
}

/// What applying a committed record did. A record that breaks a rule of the state machine is
/// still committed (it is in the log) but leaves the state unchanged; every replica rejects it
/// the same way, because the checks depend only on the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The state changed (or the entry was one of openraft's own, which change nothing).
    Applied,
    Rejected(Rejection),
}

/// Why the state machine refused a committed record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("topic `{0}` does not exist")]
    UnknownTopic(String),
    #[error("topic `{name}` already exists with id {existing_id}, not {requested_id}")]
    TopicIdChanged {
        name: String,
        existing_id: String,
        requested_id: String,
    },
    #[error("topic `{name}` has {current} partitions; the count may not shrink to {requested}")]
    PartitionsDecreased {
        name: String,
        current: i32,
        requested: i32,
    },
    #[error("invalid partition count {0}: must be at least 1")]
    InvalidPartitions(i32),
    #[error("unknown partition {topic}-{partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("partition {topic}-{partition} is at partition epoch {current}, not {expected}")]
    StalePartitionEpoch {
        topic: String,
        partition: i32,
        current: i32,
        expected: i32,
    },
    #[error("partition {topic}-{partition} is at leader epoch {current}, not {expected}")]
    StaleLeaderEpoch {
        topic: String,
        partition: i32,
        current: i32,
        expected: i32,
    },
    #[error("partition {topic}-{partition}: {reason}")]
    InvalidPartitionChange {
        topic: String,
        partition: i32,
        reason: String,
    },
    #[error("broker {0} is not registered")]
    UnknownBroker(NodeId),
    #[error("the next producer id block must start after {current}, not at {requested}")]
    ProducerIdsNotIncreasing { current: i64, requested: i64 },
}
