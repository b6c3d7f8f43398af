//! The partitions this broker hosts: opening their logs at start, creating and deleting them with
//! topics, looking them up for requests, background retention and flushing, and closing at shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use prometheus_client::metrics::histogram::Histogram;
use sluice_log::{LogConfig, LogDir, OpenError, Timestamp};
use tracing::{info, warn};

use crate::metadata::TopicMeta;
use crate::partition::Partition;

/// How long deletion waits for in-flight requests to drop their handle on a deleted partition.
const DELETE_WAIT: Duration = Duration::from_secs(5);

/// All hosted partitions, by topic name then partition index.
#[derive(Debug)]
pub struct ReplicaManager {
    log_dir: LogDir,
    topics: RwLock<HashMap<String, Arc<[Arc<Partition>]>>>,
    /// Handed to every partition for its group-commit fsyncs.
    fsync_duration: Histogram,
}

impl ReplicaManager {
    /// Hosts the partitions of `log_dir`; their fsyncs are timed into `fsync_duration`.
    pub fn new(log_dir: LogDir, fsync_duration: Histogram) -> Self {
        ReplicaManager {
            log_dir,
            topics: RwLock::new(HashMap::new()),
            fsync_duration,
        }
    }

    pub fn log_dir(&self) -> &LogDir {
        &self.log_dir
    }

    /// Opens (creating if needed) the logs of every partition of `topic`.
    pub fn open_topic(&self, topic: &TopicMeta, config: &LogConfig) -> Result<(), OpenError> {
        self.topics.write().remove(&topic.name);
        self.add_partitions(topic, config)
    }

    /// Opens the partitions `topic` does not have open yet (all of a new topic, or those a
    /// CreatePartitions added) and publishes the longer list.
    pub fn add_partitions(&self, topic: &TopicMeta, config: &LogConfig) -> Result<(), OpenError> {
        let current = self
            .topic(&topic.name)
            .map(|p| p.to_vec())
            .unwrap_or_default();
        let mut partitions = current;
        for index in partitions.len() as i32..topic.partitions {
            let log = self
                .log_dir
                .open_partition(&topic.name, index, config.clone())?;
            partitions.push(Arc::new(Partition::new(
                topic.name.clone(),
                topic.id,
                index,
                log,
                self.fsync_duration.clone(),
            )));
        }
        self.topics
            .write()
            .insert(topic.name.clone(), partitions.into());
        Ok(())
    }

    /// The partitions of a topic, if hosted here.
    pub fn topic(&self, name: &str) -> Option<Arc<[Arc<Partition>]>> {
        self.topics.read().get(name).cloned()
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let topics = self.topics.read();
        let partitions = topics.get(topic)?;
        usize::try_from(index)
            .ok()
            .and_then(|i| partitions.get(i))
            .cloned()
    }

    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.topics
            .read()
            .values()
            .flat_map(|ps| ps.iter().cloned())
            .collect()
    }

    /// Stops serving a topic and removes its partitions' directories.
    pub async fn delete_topic(&self, name: &str) {
        let Some(partitions) = self.topics.write().remove(name) else {
            return;
        };
        for partition in partitions.iter() {
            partition.mark_deleted();
        }
        let mut remaining: Vec<Arc<Partition>> = partitions.iter().cloned().collect();
        drop(partitions);
        let deadline = tokio::time::Instant::now() + DELETE_WAIT;
        while !remaining.is_empty() {
            let mut still_held = Vec::new();
            for partition in remaining {
                let dir = self
                    .log_dir
                    .path()
                    .join(format!("{}-{}", partition.topic, partition.index));
                if Arc::strong_count(&partition) > 1 && tokio::time::Instant::now() < deadline {
                    still_held.push(partition);
                    continue;
                }
                match partition.into_log() {
                    Some(log) => {
                        if let Err(e) = log.delete() {
                            warn!(dir = %dir.display(), error = %e, "cannot remove deleted partition's directory");
                        }
                    }
                    None => {
                        // Still referenced past the deadline; its file handles close when the last
                        // request drops it. Unix keeps them valid after the unlink.
                        if let Err(e) = std::fs::remove_dir_all(&dir) {
                            warn!(dir = %dir.display(), error = %e, "cannot remove deleted partition's directory");
                        }
                    }
                }
            }
            remaining = still_held;
            if !remaining.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        info!(topic = name, "deleted topic");
    }

    /// Runs retention and time-based rolls on every partition.
    pub fn housekeeping(&self, now: Timestamp) {
        for partition in self.all_partitions() {
            match partition.housekeeping(now) {
                Ok(0) => {}
                Ok(deleted) => info!(
                    topic = %partition.topic,
                    partition = partition.index,
                    segments = deleted,
                    "retention deleted segments"
                ),
                Err(e) => warn!(
                    topic = %partition.topic,
                    partition = partition.index,
                    error = %e,
                    "retention failed"
                ),
            }
        }
    }

    /// Syncs every partition (periodic background flush).
    pub fn sync_all(&self) {
        for partition in self.all_partitions() {
            if let Err(e) = partition.sync() {
                warn!(topic = %partition.topic, partition = partition.index, error = %e, "background sync failed");
            }
        }
    }

    /// Closes every log (syncing and writing snapshots) and marks the data dir cleanly shut down.
    /// Returns false when some log could not be closed cleanly (the next start then recovers).
    pub fn shutdown(&self) -> bool {
        let topics: Vec<_> = self.topics.write().drain().collect();
        let mut clean = true;
        for (_, partitions) in topics {
            for partition in partitions.iter() {
                if let Err(e) = partition.sync() {
                    warn!(topic = %partition.topic, partition = partition.index, error = %e, "sync at shutdown failed");
                    clean = false;
                }
            }
            let owned: Vec<Arc<Partition>> = partitions.iter().cloned().collect();
            // The shared slice holds a reference too; let go of it so each log can be taken out.
            drop(partitions);
            for partition in owned {
                let (topic, index) = (partition.topic.clone(), partition.index);
                match partition.into_log() {
                    Some(log) => {
                        if let Err(e) = log.close() {
                            warn!(%topic, partition = index, error = %e, "close at shutdown failed");
                            clean = false;
                        }
                    }
                    None => {
                        warn!(%topic, partition = index, "partition still in use at shutdown");
                        clean = false;
                    }
                }
            }
        }
        if clean {
            if let Err(e) = self.log_dir.mark_clean_shutdown() {
                warn!(error = %e, "cannot write the clean-shutdown marker");
                clean = false;
            }
        }
        clean
    }
}
