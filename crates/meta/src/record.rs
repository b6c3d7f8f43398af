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

/// A change to the cluster metadata, replicated through Raft and applied in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// A broker announces itself and where clients reach it; a later registration of the same
    /// id replaces the earlier one.
    RegisterBroker {
        id: NodeId,
        listeners: Vec<Listener>,
    },
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
    #[error("the next producer id block must start after {current}, not at {requested}")]
    ProducerIdsNotIncreasing { current: i64, requested: i64 },
}
