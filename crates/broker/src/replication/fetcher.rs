//! Replica fetchers: for each leader broker, one task that keeps this broker's follower replicas
//! of its partitions in step. A replica that just became a follower first truncates to where
//! its log diverges from the leader's (OffsetForLeaderEpoch, KIP-101/279), then fetches from its
//! log end with Fetch v12 and `replica_id` set, appending the leader's batches as they are and
//! taking the leader's high watermark.
//!
//! Fetchers only read the assignment the metadata reconciler gives them ([`Fetchers::assign`]);
//! they never decide roles themselves, and stop when their leader changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use sluice_log::{AppendError, LeaderEpoch, Offset};
use sluice_meta::membership::WarnLimiter;
use sluice_protocol::error::ResponseError;
use sluice_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use sluice_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use sluice_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use sluice_protocol::StrBytes;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::broker::{now, Broker};
use crate::client::{is_membership_error, Client};
use crate::metadata::node_id;
use crate::partition::Partition;
use crate::replication::follower::{truncation_offset, LeaderAnswer};

/// Fetch version followers send (replica_id in the body, last_fetched_epoch known).
const FETCH_VERSION: i16 = 12;
/// OffsetForLeaderEpoch version followers send (replica_id in the body).
const EPOCH_VERSION: i16 = 3;
/// Bytes asked per partition and per fetch.
const PARTITION_MAX_BYTES: i32 = 1 << 20;
const FETCH_MAX_BYTES: i32 = 16 << 20;
/// Pause after a failed connection or request before trying again.
const BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning about failed membership proofs per this interval.
const MEMBERSHIP_ERROR_EVERY: Duration = Duration::from_secs(10);
static MEMBERSHIP_ERRORS: WarnLimiter = WarnLimiter::new();

/// One followed partition.
struct Followed {
    partition: Arc<Partition>,
    /// The leader epoch it follows at; a new one means truncating again.
    epoch: i32,
    truncated: bool,
}

/// What one fetcher task works from.
struct Shared {
    leader: i32,
    address: Mutex<String>,
    partitions: Mutex<BTreeMap<(String, i32), Followed>>,
    changed: Notify,
    stop: AtomicBool,
}

struct Handle {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// Every replica fetcher of this broker, one per leader.
#[derive(Default)]
pub struct Fetchers {
    by_leader: Mutex<HashMap<i32, Handle>>,
}

impl std::fmt::Debug for Fetchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetchers")
            .field("leaders", &self.by_leader.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The partitions to follow from one leader, at its address.
pub struct Assignment {
    pub address: String,
    pub partitions: Vec<Arc<Partition>>,
}

impl Fetchers {
    /// Makes the fetchers follow exactly `wanted` (leader id → its address and partitions):
    /// new partitions (or ones at a new leader epoch) truncate first; fetchers of leaders no
    /// longer wanted stop.
    pub fn assign(&self, broker: &Weak<Broker>, wanted: BTreeMap<i32, Assignment>) {
        let mut by_leader = self.by_leader.lock();
        by_leader.retain(|leader, handle| {
            let keep = wanted.contains_key(leader);
            if !keep {
                handle.shared.stop.store(true, Ordering::Release);
                handle.shared.changed.notify_one();
                handle.task.abort();
            }
            keep
        });
        for (leader, assignment) in wanted {
            let handle = by_leader.entry(leader).or_insert_with(|| {
                let shared = Arc::new(Shared {
                    leader,
                    address: Mutex::new(assignment.address.clone()),
                    partitions: Mutex::new(BTreeMap::new()),
                    changed: Notify::new(),
                    stop: AtomicBool::new(false),
                });
                let task = tokio::spawn(run(broker.clone(), shared.clone()));
                Handle { shared, task }
            });
            *handle.shared.address.lock() = assignment.address;
            let mut followed = handle.shared.partitions.lock();
            let keys: Vec<(String, i32)> = assignment
                .partitions
                .iter()
                .map(|p| (p.topic.clone(), p.index))
                .collect();
            followed.retain(|key, _| keys.contains(key));
            for partition in assignment.partitions {
                let epoch = partition.leader_epoch().0;
                let key = (partition.topic.clone(), partition.index);
                let fresh = followed
                    .get(&key)
                    .is_none_or(|f| f.epoch != epoch || !Arc::ptr_eq(&f.partition, &partition));
                if fresh {
                    followed.insert(
                        key,
                        Followed {
                            partition,
                            epoch,
                            truncated: false,
                        },
                    );
                }
            }
            drop(followed);
            handle.shared.changed.notify_one();
        }
    }

    /// Stops every fetcher (shutdown).
    pub fn stop_all(&self) {
        for (_, handle) in self.by_leader.lock().drain() {
            handle.shared.stop.store(true, Ordering::Release);
            handle.task.abort();
        }
    }
}

async fn run(broker: Weak<Broker>, shared: Arc<Shared>) {
    let mut client: Option<Client> = None;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let Some(b) = broker.upgrade() else { return };
        if b.is_shutting_down() {
            return;
        }
        let (me, wait_ms) = (b.config.node_id, b.config.replica_fetch_wait_max_ms);
        let secret = b.cluster_secret.clone();
        drop(b);
        let pending: Vec<(Arc<Partition>, i32)> = shared
            .partitions
            .lock()
            .values()
            .filter(|f| !f.truncated)
            .map(|f| (f.partition.clone(), f.epoch))
            .collect();
        let fetching: Vec<(Arc<Partition>, i32)> = shared
            .partitions
            .lock()
            .values()
            .filter(|f| f.truncated)
            .map(|f| (f.partition.clone(), f.epoch))
            .collect();
        if pending.is_empty() && fetching.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(1), shared.changed.notified()).await;
            continue;
        }
        if client.is_none() {
            let address = shared.address.lock().clone();
            let timeout = Duration::from_millis(wait_ms.max(0) as u64) + Duration::from_secs(10);
            let client_id = format!("sluice-replica-{me}");
            let connected = Client::connect_member(
                &address,
                timeout,
                &client_id,
                &secret,
                node_id(me),
                node_id(shared.leader),
            )
            .await;
            match connected {
                Ok(c) => client = Some(c),
                Err(e) => {
                    debug!(leader = shared.leader, error = %e, "replica fetcher cannot connect");
                    if is_membership_error(&e) {
                        if let Some(suppressed) = MEMBERSHIP_ERRORS.allow(MEMBERSHIP_ERROR_EVERY) {
                            warn!(
                                leader = shared.leader,
                                suppressed,
                                error = format!("{e:#}"),
                                "replica fetcher cannot authenticate to its leader"
                            );
                        }
                    }
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            }
        }
        let conn = client.as_mut().expect("connected above");
        let result = if !pending.is_empty() {
            truncate(conn, &shared, me, &pending).await
        } else {
            fetch(conn, &shared, me, wait_ms, &fetching).await
        };
        if let Err(e) = result {
            debug!(leader = shared.leader, error = %e, "replica fetch failed; reconnecting");
            client = None;
            tokio::time::sleep(BACKOFF).await;
        }
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// Asks the leader where each pending partition's last epoch ends and truncates there.
async fn truncate(
    client: &mut Client,
    shared: &Shared,
    me: i32,
    pending: &[(Arc<Partition>, i32)],
) -> anyhow::Result<()> {
    let mut by_topic: BTreeMap<String, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    let mut without_history = Vec::new();
    for (partition, epoch) in pending {
        match partition.latest_epoch() {
            Some(last) => by_topic.entry(partition.topic.clone()).or_default().push(
                OffsetForLeaderPartition::default()
                    .with_partition(partition.index)
                    .with_current_leader_epoch(*epoch)
                    .with_leader_epoch(last.0),
            ),
            None => without_history.push((partition.clone(), *epoch)),
        }
    }
    // An empty log has nothing to truncate.
    for (partition, epoch) in without_history {
        mark_truncated(shared, &partition, epoch);
    }
    if by_topic.is_empty() {
        return Ok(());
    }
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(me))
        .with_topics(
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(topic_name(&topic))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response = client.send(EPOCH_VERSION, &request).await?;
    let mut retry_later = false;
    for topic in response.topics {
        for answer in topic.partitions {
            let Some((partition, epoch)) = pending
                .iter()
                .find(|(p, _)| p.topic == topic.topic.0.as_str() && p.index == answer.partition)
            else {
                continue;
            };
            if answer.error_code != 0 {
                // The leader has not taken over yet, or we are behind the metadata: try again.
                retry_later = true;
                continue;
            }
            let own_end = partition.log_end_offset();
            let asked = partition.latest_epoch().map_or(-1, |e| e.0);
            let target = Offset(truncation_offset(
                asked,
                LeaderAnswer {
                    epoch: answer.leader_epoch,
                    end_offset: answer.end_offset,
                },
                own_end.0,
                partition.high_watermark().0,
                |epoch| partition.end_offset_for_epoch(LeaderEpoch(epoch)).1 .0,
            ));
            if target < own_end {
                info!(
                    topic = %partition.topic,
                    partition = partition.index,
                    from = own_end.0,
                    to = target.0,
                    "truncating diverged follower log"
                );
                partition.truncate_to(target)?;
            }
            mark_truncated(shared, partition, *epoch);
        }
    }
    if retry_later {
        tokio::time::sleep(BACKOFF).await;
    }
    Ok(())
}

fn mark_truncated(shared: &Shared, partition: &Arc<Partition>, epoch: i32) {
    if let Some(f) = shared
        .partitions
        .lock()
        .get_mut(&(partition.topic.clone(), partition.index))
    {
        if f.epoch == epoch && Arc::ptr_eq(&f.partition, partition) {
            f.truncated = true;
        }
    }
}

fn mark_untruncated(shared: &Shared, partition: &Arc<Partition>) {
    if let Some(f) = shared
        .partitions
        .lock()
        .get_mut(&(partition.topic.clone(), partition.index))
    {
        if Arc::ptr_eq(&f.partition, partition) {
            f.truncated = false;
        }
    }
}

/// One fetch of every truncated partition from its log end.
async fn fetch(
    client: &mut Client,
    shared: &Shared,
    me: i32,
    wait_ms: i32,
    partitions: &[(Arc<Partition>, i32)],
) -> anyhow::Result<()> {
    let mut by_topic: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
    for (partition, epoch) in partitions {
        by_topic.entry(partition.topic.clone()).or_default().push(
            FetchPartition::default()
                .with_partition(partition.index)
                .with_current_leader_epoch(*epoch)
                .with_fetch_offset(partition.log_end_offset().0)
                .with_last_fetched_epoch(partition.latest_epoch().map_or(-1, |e| e.0))
                .with_log_start_offset(partition.log_start_offset().0)
                .with_partition_max_bytes(PARTITION_MAX_BYTES),
        );
    }
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(me))
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    FetchTopic::default()
                        .with_topic(topic_name(&topic))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response = client.send(FETCH_VERSION, &request).await?;
    let mut back_off = false;
    for topic in response.responses {
        for data in topic.partitions {
            let Some((partition, _)) = partitions.iter().find(|(p, _)| {
                p.topic == topic.topic.0.as_str() && p.index == data.partition_index
            }) else {
                continue;
            };
            match ResponseError::try_from_code(data.error_code) {
                None => {}
                Some(ResponseError::OffsetOutOfRange) => {
                    let own_end = partition.log_end_offset().0;
                    if own_end < data.log_start_offset {
                        info!(
                            topic = %partition.topic,
                            partition = partition.index,
                            start = data.log_start_offset,
                            "follower is behind the leader's log start; starting over there"
                        );
                        partition.truncate_fully_and_start_at(Offset(data.log_start_offset))?;
                    } else {
                        mark_untruncated(shared, partition);
                    }
                    continue;
                }
                Some(error) => {
                    debug!(topic = %partition.topic, partition = partition.index, ?error, "follower fetch refused");
                    back_off = true;
                    continue;
                }
            }
            if let Some(records) = data.records.filter(|r| !r.is_empty()) {
                match partition.append_as_follower(records, now()) {
                    Ok(_) => {}
                    Err(AppendError::OffsetMismatch { .. }) => {
                        // Our end moved under us (a truncation); find the divergence again.
                        mark_untruncated(shared, partition);
                        continue;
                    }
                    Err(e) => {
                        warn!(topic = %partition.topic, partition = partition.index, error = %e, "follower append failed");
                        back_off = true;
                        continue;
                    }
                }
            }
            partition.set_follower_high_watermark(data.high_watermark);
            if let Err(e) = partition.follow_log_start(Offset(data.log_start_offset)) {
                debug!(topic = %partition.topic, partition = partition.index, error = %e, "cannot follow the leader's log start");
            }
        }
    }
    if back_off {
        tokio::time::sleep(BACKOFF).await;
    }
    Ok(())
}
