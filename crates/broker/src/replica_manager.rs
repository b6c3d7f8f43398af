//! The partitions this broker hosts: opening their logs at start (many at once), creating and
//! deleting them with topics (and single replicas moved away by a reassignment), looking them up
//! for requests, background retention and flushing, and closing at shutdown (many at once, and
//! only the logs that changed write anything).
//!
//! A log that cannot be opened — damaged data that was fsynced, a file that cannot be read —
//! makes its partition *offline* here (every request for it answers KAFKA_STORAGE_ERROR, its
//! files are left as they are) unless another in-sync replica can give the damaged range back:
//! then the range is quarantined and the replica fetches it again (see [`Rejoin`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use sluice_log::{Damage, LogConfig, LogDir, OpenError, PartitionLog, Timestamp};
use tracing::{error, info, warn};

use crate::metadata::TopicMeta;
use crate::partition::Partition;

/// How long deletion waits for in-flight requests to drop their handle on a deleted partition.
const DELETE_WAIT: Duration = Duration::from_secs(5);

/// All hosted partitions, by topic name then partition index.
#[derive(Debug)]
pub struct ReplicaManager {
    log_dir: LogDir,
    topics: RwLock<HashMap<String, BTreeMap<i32, Arc<Partition>>>>,
    /// Held while logs are opened (before `topics`), so no partition's log is opened twice.
    opening: parking_lot::Mutex<()>,
    /// Partitions assigned here whose log could not be opened, by (topic, partition): they stay
    /// offline until the broker restarts (after a repair).
    offline: RwLock<BTreeMap<(String, i32), OfflinePartition>>,
    /// Handed to every partition for its group-commit fsyncs.
    fsync_duration: Histogram,
    /// Counts logs found damaged at open (`sluice_damaged_logs_total`).
    damaged_logs: Counter,
    /// This broker's id.
    me: i32,
}

/// A partition whose log could not be opened: what Kafka calls an offline replica.
#[derive(Debug, Clone)]
pub struct OfflinePartition {
    pub topic: String,
    pub topic_id: uuid::Uuid,
    pub index: i32,
    /// Why, in a sentence (the open error).
    pub reason: String,
    /// The damage found, when that was the reason (else a file could not be read).
    pub damage: Option<Box<Damage>>,
}

/// When a log is damaged, whether another replica can give the damaged range back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejoin {
    /// No other in-sync replica: a damaged log takes the partition offline here.
    Impossible,
    /// Another in-sync replica has every committed record: a damaged range is moved aside and
    /// fetched again, and this replica leaves the ISR until it has caught up.
    Refetch,
}

impl ReplicaManager {
    /// Hosts the partitions of `log_dir` for broker `me`; their fsyncs are timed into
    /// `fsync_duration`.
    pub fn new(log_dir: LogDir, fsync_duration: Histogram, damaged_logs: Counter, me: i32) -> Self {
        ReplicaManager {
            log_dir,
            topics: RwLock::new(HashMap::new()),
            opening: parking_lot::Mutex::new(()),
            offline: RwLock::new(BTreeMap::new()),
            fsync_duration,
            damaged_logs,
            me,
        }
    }

    pub fn log_dir(&self) -> &LogDir {
        &self.log_dir
    }

    /// The hosted replica of `topic`'s partition `index`, opening (creating if needed) its log
    /// first when it is not hosted yet. The bool is true when it was opened now. None when the
    /// partition is offline here (its log could not be opened: logged once, at ERROR, and
    /// counted); with [`Rejoin::Refetch`] a damaged log is quarantined and opened below the
    /// damage instead, and the partition returned is marked to rejoin
    /// ([`Partition::rejoin_state`]).
    pub fn ensure_partition(
        &self,
        topic: &TopicMeta,
        index: i32,
        config: &LogConfig,
        rejoin: Rejoin,
    ) -> Option<(Arc<Partition>, bool)> {
        if let Some(p) = self.partition(&topic.name, index) {
            if p.topic_id == topic.id {
                return Some((p, false));
            }
        }
        let key = (topic.name.clone(), index);
        if self
            .offline
            .read()
            .get(&key)
            .is_some_and(|o| o.topic_id == topic.id)
        {
            return None;
        }
        let _opening = self.opening.lock();
        let mut topics = self.topics.write();
        let hosted = topics.entry(topic.name.clone()).or_default();
        if let Some(p) = hosted.get(&index) {
            if p.topic_id == topic.id {
                return Some((p.clone(), false));
            }
        }
        let (log, rejoining) = match self.open_log(topic, index, config, rejoin) {
            Ok(opened) => opened,
            Err(offline) => {
                if hosted.is_empty() {
                    topics.remove(&topic.name);
                }
                self.offline.write().insert(key, offline);
                return None;
            }
        };
        let partition = self.host(topic, index, log);
        if rejoining {
            partition.start_rejoin();
        }
        hosted.insert(index, partition.clone());
        Some((partition, true))
    }

    /// A hosted replica of `topic`'s partition `index` around its opened log.
    fn host(&self, topic: &TopicMeta, index: i32, log: PartitionLog) -> Arc<Partition> {
        Arc::new(Partition::new(
            topic.name.clone(),
            topic.id,
            index,
            self.me,
            log,
            self.fsync_duration.clone(),
        ))
    }

    /// Opens the logs of the partitions in `wanted` that are not hosted (nor offline) yet,
    /// [`IO_THREADS`] at a time, and hosts them: a start with thousands of partitions opens them
    /// together instead of one after another (each open syncs and writes its checkpoints). A log
    /// that fails to open — damaged or unreadable — is left to [`Self::ensure_partition`], which
    /// quarantines it or takes the partition offline and reports it.
    pub fn open_missing(&self, wanted: Vec<(TopicMeta, i32, LogConfig)>) {
        let _opening = self.opening.lock();
        let missing: Vec<_> = {
            let topics = self.topics.read();
            let offline = self.offline.read();
            wanted
                .into_iter()
                .filter(|(meta, index, _)| {
                    topics
                        .get(&meta.name)
                        .and_then(|hosted| hosted.get(index))
                        .is_none()
                        && !offline.contains_key(&(meta.name.clone(), *index))
                })
                .collect()
        };
        if missing.len() < 2 {
            return;
        }
        let opened = in_parallel(missing, |(meta, index, config)| {
            let log = self.log_dir.open_partition(&meta.name, index, config);
            (meta, index, log)
        });
        let mut topics = self.topics.write();
        for (meta, index, log) in opened {
            let Ok(log) = log else { continue };
            let partition = self.host(&meta, index, log);
            topics
                .entry(meta.name)
                .or_default()
                .insert(index, partition);
        }
    }

    /// Opens one partition's log; a damaged one is quarantined and opened again below the
    /// damage when `rejoin` allows (the bool: it was), else the partition is offline.
    fn open_log(
        &self,
        topic: &TopicMeta,
        index: i32,
        config: &LogConfig,
        rejoin: Rejoin,
    ) -> Result<(PartitionLog, bool), OfflinePartition> {
        let offline = |e: OpenError| {
            let damage = match &e {
                OpenError::Damaged { damage, .. } => Some(damage.clone()),
                _ => None,
            };
            error!(topic = %topic.name, partition = index, error = %e, "partition offline: its log cannot be opened; every request for it answers KAFKA_STORAGE_ERROR and its files are left as they are (see `sluice log verify` and `sluice log repair`)");
            OfflinePartition {
                topic: topic.name.clone(),
                topic_id: topic.id,
                index,
                reason: e.to_string(),
                damage,
            }
        };
        let damage = match self
            .log_dir
            .open_partition(&topic.name, index, config.clone())
        {
            Ok(log) => return Ok((log, false)),
            Err(OpenError::Damaged { damage, .. }) => damage,
            Err(e) => return Err(offline(e)),
        };
        self.damaged_logs.inc();
        let dir = self.partition_dir(&topic.name, index);
        if rejoin == Rejoin::Impossible {
            return Err(offline(OpenError::Damaged { path: dir, damage }));
        }
        let aside = PartitionLog::quarantine(&dir, &damage).map_err(|source| {
            offline(OpenError::Io {
                path: dir.clone(),
                source,
            })
        })?;
        error!(topic = %topic.name, partition = index, quarantine = %aside.display(), "{damage}; the damaged range and everything after it were moved aside, and the replica fetches them again from the leader (it leaves the ISR until it has caught up)");
        let log = PartitionLog::open(&dir, config.clone(), false).map_err(offline)?;
        Ok((log, true))
    }

    fn partition_dir(&self, topic: &str, index: i32) -> std::path::PathBuf {
        self.log_dir.path().join(format!("{topic}-{index}"))
    }

    /// The partitions assigned here that are offline.
    pub fn offline_partitions(&self) -> Vec<OfflinePartition> {
        self.offline.read().values().cloned().collect()
    }

    /// Whether `topic`'s partition `index` is offline here.
    pub fn is_offline(&self, topic: &str, index: i32) -> bool {
        self.offline.read().contains_key(&(topic.to_owned(), index))
    }

    /// The id of the topic `name` as hosted here (online or offline partitions).
    pub fn topic_id(&self, name: &str) -> Option<uuid::Uuid> {
        if let Some(p) = self.topic(name).and_then(|ps| ps.first().cloned()) {
            return Some(p.topic_id);
        }
        self.offline
            .read()
            .values()
            .find(|o| o.topic == name)
            .map(|o| o.topic_id)
    }

    /// The hosted partitions of a topic in index order, if any are hosted here.
    pub fn topic(&self, name: &str) -> Option<Vec<Arc<Partition>>> {
        let topics = self.topics.read();
        let hosted = topics.get(name)?;
        (!hosted.is_empty()).then(|| hosted.values().cloned().collect())
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.topics.read().get(topic)?.get(&index).cloned()
    }

    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.topics
            .read()
            .values()
            .flat_map(|ps| ps.values().cloned())
            .collect()
    }

    /// Names of the topics with hosted (or offline) partitions.
    pub fn topic_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.topics.read().keys().cloned().collect();
        for (topic, _) in self.offline.read().keys() {
            if !names.contains(topic) {
                names.push(topic.clone());
            }
        }
        names
    }

    /// Stops serving a topic and removes its partitions' directories.
    /// When `id` is given, only a hosted topic with that id is deleted (a topic re-created
    /// under the same name since is left alone).
    pub async fn delete_topic(&self, name: &str, id: Option<uuid::Uuid>) {
        // Offline partitions of the topic go with it: the operator deleted the topic, and a
        // topic created under the same name must not find their damaged files.
        let gone: Vec<OfflinePartition> = {
            let mut offline = self.offline.write();
            let keys: Vec<(String, i32)> = offline
                .iter()
                .filter(|(_, o)| o.topic == name && id.is_none_or(|id| o.topic_id == id))
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| offline.remove(k)).collect()
        };
        for partition in gone {
            let dir = self.partition_dir(&partition.topic, partition.index);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                warn!(dir = %dir.display(), error = %e, "cannot remove deleted partition's directory");
            }
        }
        let removed = {
            let mut topics = self.topics.write();
            let matches = topics.get(name).is_some_and(|hosted| {
                id.is_none_or(|id| hosted.values().all(|p| p.topic_id == id))
            });
            if matches {
                topics.remove(name)
            } else {
                None
            }
        };
        let Some(partitions) = removed else {
            return;
        };
        self.delete_detached(partitions.into_values().collect())
            .await;
        info!(topic = name, "deleted topic");
    }

    /// Stops serving one partition (this broker is no longer among its replicas after a
    /// reassignment) and removes its directory.
    pub async fn remove_partition(&self, topic: &str, index: i32) {
        if let Some(partition) = self.detach_partition(topic, index) {
            self.delete_detached(vec![partition]).await;
            info!(topic, partition = index, "removed replica");
        }
    }

    /// Takes one partition out of the hosted set, so lookups no longer find it and a later
    /// metadata pass does not remove it twice; [`Self::delete_detached`] then deletes it.
    pub fn detach_partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let mut topics = self.topics.write();
        let hosted = topics.get_mut(topic)?;
        let partition = hosted.remove(&index)?;
        if hosted.is_empty() {
            topics.remove(topic);
        }
        partition.mark_deleted();
        Some(partition)
    }

    /// Deletes partitions no longer hosted: waits (up to [`DELETE_WAIT`]) for in-flight requests
    /// to drop them, then removes their directories.
    pub async fn delete_detached(&self, partitions: Vec<Arc<Partition>>) {
        for partition in &partitions {
            partition.mark_deleted();
        }
        let mut remaining = partitions;
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

    /// Closes every log and marks the data dir cleanly shut down. Returns false when some log
    /// could not be closed cleanly (the next start then recovers).
    ///
    /// A log unchanged since a clean open closes without writing (see `PartitionLog::close`); the
    /// others sync and write their indexes and checkpoints, each several fsyncs. Those are spread
    /// over [`IO_THREADS`] threads: one disk serves concurrent fsyncs together (the file system
    /// commits them in one journal transaction), where one after another each pays the whole
    /// latency.
    pub fn shutdown(&self) -> bool {
        let partitions: Vec<Arc<Partition>> = self
            .topics
            .write()
            .drain()
            .flat_map(|(_, partitions)| partitions.into_values())
            .collect();
        let clean = in_parallel(partitions, |partition| {
            let (topic, index) = (partition.topic.clone(), partition.index);
            match partition.into_log() {
                Some(log) => match log.close() {
                    Ok(()) => true,
                    Err(e) => {
                        warn!(%topic, partition = index, error = %e, "close at shutdown failed");
                        false
                    }
                },
                None => {
                    warn!(%topic, partition = index, "partition still in use at shutdown");
                    false
                }
            }
        })
        .into_iter()
        .all(|closed| closed);
        if clean {
            if let Err(e) = self.log_dir.mark_clean_shutdown() {
                warn!(error = %e, "cannot write the clean-shutdown marker");
                return false;
            }
        }
        clean
    }
}

/// Threads that open or close partition logs at once (start-up, shutdown): the work is waiting
/// on fsyncs, not computing, so more threads than cores pay off.
const IO_THREADS: usize = 16;

/// Runs `work` on every item over at most [`IO_THREADS`] threads; the results in no particular
/// order.
fn in_parallel<T: Send, R: Send>(items: Vec<T>, work: impl Fn(T) -> R + Sync) -> Vec<R> {
    let queue = parking_lot::Mutex::new(items);
    let threads = IO_THREADS.min(queue.lock().len());
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut results = Vec::new();
                    loop {
                        // Its own statement: a guard in a `while let` scrutinee would be held
                        // through the loop body, and the threads would take turns.
                        let next = queue.lock().pop();
                        let Some(item) = next else { break };
                        results.push(work(item));
                    }
                    results
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a log worker panicked"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn in_parallel_runs_the_work_at_the_same_time_and_returns_every_result() {
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let mut results = in_parallel((0..8).collect(), |i: u32| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            // Long enough for the other threads to start theirs: this is I/O-like waiting.
            std::thread::sleep(Duration::from_millis(200));
            running.fetch_sub(1, Ordering::SeqCst);
            i * 2
        });
        results.sort_unstable();
        assert_eq!(results, (0..8).map(|i| i * 2).collect::<Vec<_>>());
        assert!(
            most.load(Ordering::SeqCst) > 1,
            "the work ran one item at a time"
        );
    }
}
