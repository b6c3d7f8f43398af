//! Cluster metadata as the broker reads and changes it: topics, their ids, partition counts,
//! configs and replica assignments, the registered brokers, the cluster id, and producer-id
//! allocation.
//!
//! This is the one place metadata comes from. It is a view over the `sluice-meta` quorum
//! ([`MetaNode`]): reads take the applied state (an `Arc`, no lock), changes are proposed as
//! metadata records and return once this node has applied them. A single node with no cluster
//! flags is a one-voter quorum on the same path. A data directory written before the quorum
//! existed (`__sluice_metadata/metadata.json`) is migrated into it on first open.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Deserialize;
use sluice_meta::controller::{self, PlacementError};
use sluice_meta::{
    MetaNode, MetadataRecord, MetadataState, NodeId, Outcome, PartitionState, ProposeError,
    Rejection,
};
use uuid::Uuid;

/// Producer ids are handed out from blocks of this size; the end of the block is committed
/// before any id in it is used, so no id is ever given twice, even after a crash or by two nodes.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Longest legal topic name (Kafka's limit).
pub const TOPIC_NAME_MAX_LEN: usize = 249;

/// Most partitions one topic may have on this broker.
pub const PARTITIONS_MAX: i32 = 10_000;

/// One topic as the metadata knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// Topic-level config overrides (Kafka names).
    pub configs: BTreeMap<String, String>,
}

impl TopicMeta {
    pub(crate) fn from_meta(topic: &sluice_meta::TopicMeta) -> Self {
        TopicMeta {
            name: topic.name.clone(),
            id: Uuid::parse_str(&topic.id).unwrap_or(Uuid::nil()),
            partitions: topic.partitions,
            configs: topic.configs.clone(),
        }
    }
}

/// Why a metadata change was refused.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    #[error("topic `{0}` does not exist")]
    UnknownTopic(String),
    #[error("topic `{topic}` has {current} partitions; the new count {requested} must be larger")]
    PartitionsNotIncreased {
        topic: String,
        current: i32,
        requested: i32,
    },
    #[error("invalid topic name `{name}`: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },
    #[error("invalid partition count {0}: must be between 1 and {PARTITIONS_MAX}")]
    InvalidPartitions(i32),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("cannot persist metadata to {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata file {path} is unreadable: {reason}; restore it from a backup or move it away to start empty")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot open the metadata quorum: {0}")]
    Open(#[from] sluice_meta::OpenError),
    #[error("the metadata change did not commit: {0}")]
    Propose(#[from] ProposeError),
    #[error("the metadata change was refused: {0}")]
    Refused(Rejection),
}

/// The metadata store (see the module docs).
pub struct MetadataStore {
    node: MetaNode,
    /// Producer ids handed out in the current block: (next, end).
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
    /// Serializes topic creation and deletion proposals from this node, so a check-then-propose
    /// does not race another request on the same node.
    topic_changes: tokio::sync::Mutex<()>,
    /// The cluster id this node asked for when none is committed yet.
    wanted_cluster_id: Mutex<String>,
}

impl std::fmt::Debug for MetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataStore")
            .field("node", &self.node.id())
            .finish_non_exhaustive()
    }
}

/// Checks a topic name against Kafka's rules.
pub fn validate_topic_name(name: &str) -> Result<(), MetadataError> {
    let invalid = |reason| MetadataError::InvalidTopicName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("`.` and `..` are not allowed"));
    }
    if name.len() > TOPIC_NAME_MAX_LEN {
        return Err(invalid("it is longer than 249 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(invalid(
            "only ASCII letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

/// The single-node metadata file of earlier versions.
#[derive(Deserialize)]
struct LegacyState {
    cluster_id: String,
    topics: BTreeMap<String, LegacyTopic>,
    producer_id_block_end: i64,
}

#[derive(Deserialize)]
struct LegacyTopic {
    name: String,
    id: Uuid,
    partitions: i32,
    configs: BTreeMap<String, String>,
}

/// What a committed record's rejection means to the broker.
fn rejection_error(rejection: Rejection) -> MetadataError {
    match rejection {
        Rejection::TopicIdChanged { name, .. } => MetadataError::TopicExists(name),
        Rejection::UnknownTopic(name) => MetadataError::UnknownTopic(name),
        Rejection::PartitionsDecreased {
            name,
            current,
            requested,
        } => MetadataError::PartitionsNotIncreased {
            topic: name,
            current,
            requested,
        },
        other => MetadataError::Refused(other),
    }
}

impl MetadataStore {
    /// Serves the metadata of `node`, migrating a pre-quorum `metadata.json` under `data_dir`
    /// into it when the quorum holds no topics yet. `cluster_id` (may be empty: a random one) is
    /// proposed as the cluster's id if none is committed.
    pub async fn open(
        node: MetaNode,
        data_dir: &Path,
        cluster_id: &str,
    ) -> Result<Self, MetadataError> {
        let wanted = if cluster_id.is_empty() {
            new_cluster_id()
        } else {
            cluster_id.to_string()
        };
        let store = MetadataStore {
            node,
            producer_ids: tokio::sync::Mutex::new((0, 0)),
            topic_changes: tokio::sync::Mutex::new(()),
            wanted_cluster_id: Mutex::new(wanted),
        };
        store.migrate_legacy(data_dir).await?;
        Ok(store)
    }

    /// Moves a single-node `metadata.json` into the quorum (one batch: all or nothing), then
    /// renames it so it is never read again.
    async fn migrate_legacy(&self, data_dir: &Path) -> Result<(), MetadataError> {
        let path = data_dir.join("__sluice_metadata").join("metadata.json");
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(MetadataError::Io { path, source }),
        };
        let legacy: LegacyState =
            serde_json::from_slice(&bytes).map_err(|e| MetadataError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let state = self.state();
        if state.topics.is_empty() {
            let me = self.node.id();
            let mut records = vec![MetadataRecord::ClusterId {
                id: legacy.cluster_id.clone(),
            }];
            for topic in legacy.topics.values() {
                records.push(MetadataRecord::Topic {
                    name: topic.name.clone(),
                    id: topic.id.to_string(),
                    partitions: topic.partitions,
                    configs: topic.configs.clone(),
                });
                for p in 0..topic.partitions {
                    records.push(MetadataRecord::Partition {
                        topic: topic.name.clone(),
                        partition: p,
                        state: PartitionState::new(vec![me]),
                    });
                }
            }
            if legacy.producer_id_block_end > state.producer_id_next {
                records.push(MetadataRecord::ProducerIds {
                    next: legacy.producer_id_block_end,
                });
            }
            self.propose(MetadataRecord::Batch(records)).await?;
            tracing::info!(
                topics = legacy.topics.len(),
                "migrated single-node metadata.json into the metadata quorum"
            );
        }
        let done = path.with_extension("json.migrated");
        fs::rename(&path, &done).map_err(|source| MetadataError::Io { path, source })?;
        Ok(())
    }

    /// The quorum node under this store.
    pub fn node(&self) -> &MetaNode {
        &self.node
    }

    /// The applied metadata state.
    pub fn state(&self) -> Arc<MetadataState> {
        self.node.state()
    }

    /// Commits `record`; a record the state machine refuses is an error.
    pub async fn propose(&self, record: MetadataRecord) -> Result<(), MetadataError> {
        match self.node.propose(record).await?.outcome {
            Outcome::Applied => Ok(()),
            Outcome::Rejected(rejection) => Err(rejection_error(rejection)),
        }
    }

    /// Names the cluster if nobody has yet.
    pub async fn ensure_cluster_id(&self) -> Result<(), MetadataError> {
        if self.state().cluster_id.is_empty() {
            let id = self.wanted_cluster_id.lock().clone();
            self.propose(MetadataRecord::ClusterId { id }).await?;
        }
        Ok(())
    }

    pub fn cluster_id(&self) -> String {
        let state = self.state();
        if state.cluster_id.is_empty() {
            self.wanted_cluster_id.lock().clone()
        } else {
            state.cluster_id.clone()
        }
    }

    pub fn topics(&self) -> Vec<TopicMeta> {
        self.state()
            .topics
            .values()
            .map(TopicMeta::from_meta)
            .collect()
    }

    pub fn topic(&self, name: &str) -> Option<TopicMeta> {
        self.state().topics.get(name).map(TopicMeta::from_meta)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<TopicMeta> {
        let id = id.to_string();
        self.state()
            .topics
            .values()
            .find(|t| t.id == id)
            .map(TopicMeta::from_meta)
    }

    /// One partition's replicas and leadership.
    pub fn partition_state(&self, topic: &str, partition: i32) -> Option<PartitionState> {
        self.state().partition(topic, partition).cloned()
    }

    /// Checks that a topic could be created, without creating it (CreateTopics validate_only).
    pub fn check_new_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
    ) -> Result<(), MetadataError> {
        validate_topic_name(name)?;
        if !(1..=PARTITIONS_MAX).contains(&partitions) {
            return Err(MetadataError::InvalidPartitions(partitions));
        }
        let state = self.state();
        if state.topics.contains_key(name) {
            return Err(MetadataError::TopicExists(name.to_string()));
        }
        controller::place_replicas(&state, 0, 1, replication_factor).map_err(placement_error)?;
        Ok(())
    }

    /// Creates a topic with its replicas placed over the live brokers; returns once this node
    /// has applied it.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, MetadataError> {
        let _serial = self.topic_changes.lock().await;
        self.check_new_topic(name, partitions, replication_factor)?;
        let state = self.state();
        let placed = controller::place_replicas(&state, 0, partitions, replication_factor)
            .map_err(placement_error)?;
        self.propose_topic(name, placed, configs).await
    }

    /// Creates a topic with the replicas given per partition (CreateTopics assignments): each
    /// list must name distinct registered brokers.
    pub async fn create_topic_assigned(
        &self,
        name: &str,
        assignments: Vec<Vec<NodeId>>,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, MetadataError> {
        let _serial = self.topic_changes.lock().await;
        self.check_assignments(name, &assignments)?;
        self.propose_topic(name, assignments, configs).await
    }

    /// Checks explicit replica assignments for a new topic.
    pub fn check_assignments(
        &self,
        name: &str,
        assignments: &[Vec<NodeId>],
    ) -> Result<(), MetadataError> {
        self.check_new_topic(name, assignments.len() as i32, 1)?;
        let state = self.state();
        for (i, replicas) in assignments.iter().enumerate() {
            let distinct: std::collections::BTreeSet<_> = replicas.iter().collect();
            if replicas.is_empty() || distinct.len() != replicas.len() {
                return Err(MetadataError::InvalidReplicaAssignment(format!(
                    "partition {i}: replicas must be distinct and not empty"
                )));
            }
            if let Some(unknown) = replicas.iter().find(|r| !state.brokers.contains_key(r)) {
                return Err(MetadataError::InvalidReplicaAssignment(format!(
                    "partition {i}: broker {unknown} is not registered"
                )));
            }
        }
        Ok(())
    }

    async fn propose_topic(
        &self,
        name: &str,
        placed: Vec<Vec<NodeId>>,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, MetadataError> {
        let partitions = placed.len() as i32;
        let id = Uuid::new_v4();
        let mut records = vec![MetadataRecord::Topic {
            name: name.to_string(),
            id: id.to_string(),
            partitions,
            configs: configs.clone(),
        }];
        records.extend(placed.into_iter().enumerate().map(|(i, replicas)| {
            MetadataRecord::Partition {
                topic: name.to_string(),
                partition: i as i32,
                state: PartitionState::new(replicas),
            }
        }));
        self.propose(MetadataRecord::Batch(records)).await?;
        Ok(TopicMeta {
            name: name.to_string(),
            id,
            partitions,
            configs,
        })
    }

    /// Replaces a topic's config overrides; returns the updated topic, None when it does not exist.
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<Option<TopicMeta>, MetadataError> {
        if !self.state().topics.contains_key(name) {
            return Ok(None);
        }
        match self
            .propose(MetadataRecord::ConfigRecord {
                topic: name.to_string(),
                configs,
            })
            .await
        {
            Ok(()) => Ok(self.topic(name)),
            Err(MetadataError::UnknownTopic(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Raises a topic's partition count, placing the new partitions' replicas like the first
    /// ones (same replication factor); returns the updated topic.
    pub async fn add_partitions(&self, name: &str, count: i32) -> Result<TopicMeta, MetadataError> {
        if !(1..=PARTITIONS_MAX).contains(&count) {
            return Err(MetadataError::InvalidPartitions(count));
        }
        let _serial = self.topic_changes.lock().await;
        let state = self.state();
        let topic = state
            .topics
            .get(name)
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_owned()))?;
        if count <= topic.partitions {
            return Err(MetadataError::PartitionsNotIncreased {
                topic: name.to_owned(),
                current: topic.partitions,
                requested: count,
            });
        }
        let rf = topic
            .partition_states
            .values()
            .next()
            .map_or(1, |p| p.replicas.len() as i32);
        let placed =
            controller::place_replicas(&state, topic.partitions, count - topic.partitions, rf)
                .map_err(placement_error)?;
        let mut records = vec![MetadataRecord::Topic {
            name: name.to_string(),
            id: topic.id.clone(),
            partitions: count,
            configs: topic.configs.clone(),
        }];
        records.extend(placed.into_iter().enumerate().map(|(i, replicas)| {
            MetadataRecord::Partition {
                topic: name.to_string(),
                partition: topic.partitions + i as i32,
                state: PartitionState::new(replicas),
            }
        }));
        self.propose(MetadataRecord::Batch(records)).await?;
        self.topic(name)
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_owned()))
    }

    /// Removes a topic from the metadata; returns it if it existed.
    pub async fn delete_topic(&self, name: &str) -> Result<Option<TopicMeta>, MetadataError> {
        let _serial = self.topic_changes.lock().await;
        let Some(topic) = self.topic(name) else {
            return Ok(None);
        };
        match self
            .propose(MetadataRecord::RemoveTopic {
                name: name.to_string(),
            })
            .await
        {
            Ok(()) => Ok(Some(topic)),
            Err(MetadataError::UnknownTopic(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A producer id never handed out before in this cluster.
    pub async fn allocate_producer_id(&self) -> Result<i64, MetadataError> {
        let mut ids = self.producer_ids.lock().await;
        if ids.0 >= ids.1 {
            // Reserve the next block; another node reserving the same one first makes ours
            // refused, and we take the one after.
            let mut attempts = 0;
            loop {
                let start = self.state().producer_id_next;
                let end = start + PRODUCER_ID_BLOCK;
                match self
                    .propose(MetadataRecord::ProducerIds { next: end })
                    .await
                {
                    Ok(()) => {
                        *ids = (start, end);
                        break;
                    }
                    Err(MetadataError::Refused(Rejection::ProducerIdsNotIncreasing { .. }))
                        if attempts < 10 =>
                    {
                        attempts += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// Stops the quorum node (at shutdown; reads keep answering from the last state).
    pub async fn shutdown(&self) {
        if let Err(e) = self.node.shutdown().await {
            tracing::warn!(error = %e, "metadata quorum did not stop cleanly");
        }
    }
}

fn placement_error(e: PlacementError) -> MetadataError {
    MetadataError::InvalidReplicationFactor(e.to_string())
}

/// This broker's id as a quorum node id.
pub fn node_id(id: i32) -> NodeId {
    NodeId(u64::try_from(id).unwrap_or(0))
}

/// A random cluster id in Kafka's style (22 characters of URL-safe base64 from a UUID).
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = Uuid::new_v4().as_u128();
    (0..22)
        .map(|i| ALPHABET[((bits >> (i * 6)) & 63) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(dir: &Path) -> MetadataStore {
        let node = MetaNode::open(&dir.join("__cluster_metadata"), NodeId(1))
            .await
            .unwrap();
        let store = MetadataStore::open(node, dir, "").await.unwrap();
        store
            .propose(MetadataRecord::RegisterBroker {
                id: NodeId(1),
                listeners: Vec::new(),
                rack: None,
            })
            .await
            .unwrap();
        store
    }

    #[tokio::test]
    async fn topics_and_producer_ids_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        store.ensure_cluster_id().await.unwrap();
        let cluster = store.cluster_id();
        let topic = store
            .create_topic("orders", 3, 1, BTreeMap::new())
            .await
            .unwrap();
        let first = store.allocate_producer_id().await.unwrap();
        assert!(matches!(
            store.create_topic("orders", 1, 1, BTreeMap::new()).await,
            Err(MetadataError::TopicExists(_))
        ));
        assert!(matches!(
            store.create_topic("wide", 1, 2, BTreeMap::new()).await,
            Err(MetadataError::InvalidReplicationFactor(_))
        ));
        store.shutdown().await;
        let store = open(dir.path()).await;
        assert_eq!(store.cluster_id(), cluster);
        assert_eq!(store.topic("orders"), Some(topic.clone()));
        assert_eq!(store.topic_by_id(topic.id), Some(topic));
        assert_eq!(
            store.partition_state("orders", 2).unwrap().leader,
            Some(NodeId(1))
        );
        assert!(store.allocate_producer_id().await.unwrap() > first);
        store.shutdown().await;
    }

    #[tokio::test]
    async fn legacy_metadata_is_migrated_once() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("__sluice_metadata");
        fs::create_dir_all(&legacy).unwrap();
        let id = Uuid::new_v4();
        fs::write(
            legacy.join("metadata.json"),
            serde_json::json!({
                "cluster_id": "legacy-cluster",
                "topics": {"old": {"name": "old", "id": id, "partitions": 2, "configs": {"retention.ms": "5"}}},
                "producer_id_block_end": 3000,
            })
            .to_string(),
        )
        .unwrap();
        let store = open(dir.path()).await;
        assert_eq!(store.cluster_id(), "legacy-cluster");
        let topic = store.topic("old").unwrap();
        assert_eq!((topic.id, topic.partitions), (id, 2));
        assert_eq!(topic.configs["retention.ms"], "5");
        assert!(store.allocate_producer_id().await.unwrap() >= 3000);
        assert!(!legacy.join("metadata.json").exists());
        store.shutdown().await;
    }

    #[test]
    fn names_follow_kafka_rules() {
        assert!(validate_topic_name("a.b_c-1").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
