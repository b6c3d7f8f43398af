//! Cluster metadata: topics, their ids, partition counts and configs, the cluster id, and producer-id
//! allocation.
//!
//! This is the one place metadata comes from. On a single node it is a JSON document persisted
//! atomically under `<data dir>/__sluice_metadata/`; the cluster layer replaces it with a state
//! machine replicated by Raft, keeping these methods.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Producer ids are handed out from blocks of this size; the end of the block is persisted before any
/// id in it is used, so no id is ever given twice, even after a crash.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Longest legal topic name (Kafka's limit).
pub const TOPIC_NAME_MAX_LEN: usize = 249;

/// Most partitions one topic may have on this broker.
pub const PARTITIONS_MAX: i32 = 10_000;

/// One topic as the metadata knows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// Topic-level config overrides (Kafka names).
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct State {
    cluster_id: String,
    topics: BTreeMap<String, TopicMeta>,
    /// The first producer id not yet reserved by a persisted block.
    producer_id_block_end: i64,
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
    #[error("cannot persist metadata to {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata file {path} is unreadable: {reason}; restore it from a backup or move it away to start empty")]
    Corrupt { path: PathBuf, reason: String },
}

/// The metadata store (see the module docs).
#[derive(Debug)]
pub struct MetadataStore {
    path: PathBuf,
    state: Mutex<State>,
    /// Producer ids handed out in the current block: (next, end).
    producer_ids: Mutex<(i64, i64)>,
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

impl MetadataStore {
    /// Loads the metadata under `data_dir`, or starts empty with a fresh cluster id.
    pub fn open(data_dir: &Path, cluster_id: &str) -> Result<Self, MetadataError> {
        let dir = data_dir.join("__sluice_metadata");
        fs::create_dir_all(&dir).map_err(|source| MetadataError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join("metadata.json");
        let state = match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<State>(&bytes).map_err(|e| MetadataError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                cluster_id: if cluster_id.is_empty() {
                    new_cluster_id()
                } else {
                    cluster_id.to_string()
                },
                topics: BTreeMap::new(),
                producer_id_block_end: 0,
            },
            Err(source) => return Err(MetadataError::Io { path, source }),
        };
        let block_end = state.producer_id_block_end;
        let store = MetadataStore {
            path,
            state: Mutex::new(state),
            producer_ids: Mutex::new((block_end, block_end)),
        };
        store.persist(&store.state.lock())?;
        Ok(store)
    }

    pub fn cluster_id(&self) -> String {
        self.state.lock().cluster_id.clone()
    }

    pub fn topics(&self) -> Vec<TopicMeta> {
        self.state.lock().topics.values().cloned().collect()
    }

    pub fn topic(&self, name: &str) -> Option<TopicMeta> {
        self.state.lock().topics.get(name).cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<TopicMeta> {
        self.state
            .lock()
            .topics
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    /// Checks that a topic could be created, without creating it (CreateTopics validate_only).
    pub fn check_new_topic(&self, name: &str, partitions: i32) -> Result<(), MetadataError> {
        validate_topic_name(name)?;
        if !(1..=PARTITIONS_MAX).contains(&partitions) {
            return Err(MetadataError::InvalidPartitions(partitions));
        }
        if self.state.lock().topics.contains_key(name) {
            return Err(MetadataError::TopicExists(name.to_string()));
        }
        Ok(())
    }

    /// Creates a topic and persists the change before returning it.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, MetadataError> {
        validate_topic_name(name)?;
        if !(1..=PARTITIONS_MAX).contains(&partitions) {
            return Err(MetadataError::InvalidPartitions(partitions));
        }
        let mut state = self.state.lock();
        if state.topics.contains_key(name) {
            return Err(MetadataError::TopicExists(name.to_string()));
        }
        let topic = TopicMeta {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            configs,
        };
        let mut next = state.clone();
        next.topics.insert(name.to_string(), topic.clone());
        self.persist(&next)?;
        *state = next;
        Ok(topic)
    }

    /// Replaces a topic's config overrides; returns the updated topic, None when it does not exist.
    pub fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<Option<TopicMeta>, MetadataError> {
        let mut state = self.state.lock();
        if !state.topics.contains_key(name) {
            return Ok(None);
        }
        let mut next = state.clone();
        let topic = next.topics.get_mut(name).expect("checked");
        topic.configs = configs;
        let updated = topic.clone();
        self.persist(&next)?;
        *state = next;
        Ok(Some(updated))
    }

    /// Raises a topic's partition count; returns the updated topic.
    pub fn add_partitions(&self, name: &str, count: i32) -> Result<TopicMeta, MetadataError> {
        if !(1..=PARTITIONS_MAX).contains(&count) {
            return Err(MetadataError::InvalidPartitions(count));
        }
        let mut state = self.state.lock();
        let mut next = state.clone();
        let topic = next
            .topics
            .get_mut(name)
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_owned()))?;
        if count <= topic.partitions {
            return Err(MetadataError::PartitionsNotIncreased {
                topic: name.to_owned(),
                current: topic.partitions,
                requested: count,
            });
        }
        topic.partitions = count;
        let updated = topic.clone();
        self.persist(&next)?;
        *state = next;
        Ok(updated)
    }

    /// Removes a topic from the metadata; returns it if it existed.
    pub fn delete_topic(&self, name: &str) -> Result<Option<TopicMeta>, MetadataError> {
        let mut state = self.state.lock();
        if !state.topics.contains_key(name) {
            return Ok(None);
        }
        let mut next = state.clone();
        let removed = next.topics.remove(name);
        self.persist(&next)?;
        *state = next;
        Ok(removed)
    }

    /// A producer id never handed out before, on this data directory.
    pub fn allocate_producer_id(&self) -> Result<i64, MetadataError> {
        let mut ids = self.producer_ids.lock();
        if ids.0 >= ids.1 {
            let mut state = self.state.lock();
            let mut next = state.clone();
            next.producer_id_block_end = ids.1 + PRODUCER_ID_BLOCK;
            self.persist(&next)?;
            *state = next;
            ids.1 += PRODUCER_ID_BLOCK;
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// Writes `state` to a temporary file, syncs it, and renames it over the metadata file.
    fn persist(&self, state: &State) -> Result<(), MetadataError> {
        let io = |source| MetadataError::Io {
            path: self.path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(state).expect("metadata serializes");
        let tmp = self.path.with_extension("json.tmp");
        let mut file = fs::File::create(&tmp).map_err(io)?;
        file.write_all(&json).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }
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

    #[test]
    fn topics_and_producer_ids_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(dir.path(), "").unwrap();
        let cluster = store.cluster_id();
        let topic = store.create_topic("orders", 3, BTreeMap::new()).unwrap();
        let first = store.allocate_producer_id().unwrap();
        assert!(matches!(
            store.create_topic("orders", 1, BTreeMap::new()),
            Err(MetadataError::TopicExists(_))
        ));
        drop(store);
        let store = MetadataStore::open(dir.path(), "").unwrap();
        assert_eq!(store.cluster_id(), cluster);
        assert_eq!(store.topic("orders"), Some(topic.clone()));
        assert_eq!(store.topic_by_id(topic.id), Some(topic));
        assert!(store.allocate_producer_id().unwrap() > first);
    }

    #[test]
    fn names_follow_kafka_rules() {
        assert!(validate_topic_name("a.b_c-1").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
