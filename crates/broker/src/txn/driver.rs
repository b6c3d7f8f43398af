//! Carries out the transaction coordinator's decisions: persists transaction records to
//! `__transaction_state`, writes commit/abort markers to every partition of a transaction (in
//! process where this broker leads the partition, with WriteTxnMarkers to the leader elsewhere),
//! completes transactional offset commits, and aborts timed-out transactions.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_log::{AppendError, MarkerKind, ProducerEpoch, ProducerId};
use sluice_meta::NodeId;
use sluice_protocol::error::ResponseError;
use sluice_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use sluice_protocol::messages::{ProducerId as KafkaProducerId, TopicName, WriteTxnMarkersRequest};
use sluice_protocol::StrBytes;
use tracing::{info, warn};

use super::marker_channel::MarkerSendError;
use super::state_topic::{self, TxnRecord, TxnState, TXN_STATE_TOPIC};
use super::TxnCoordinator;
use crate::broker::{now, Broker, CreateTopicError};
use crate::client::error_name;
use crate::group::offsets_topic::{self, OFFSETS_TOPIC};
use crate::metadata::node_id;

/// Creates `__transaction_state` on first use, as Kafka does.
pub async fn ensure_state_topic(broker: &Broker) -> Result<(), CreateTopicError> {
    let configs = BTreeMap::from([
        ("cleanup.policy".to_owned(), "compact".to_owned()),
        ("segment.bytes".to_owned(), (100 * 1024 * 1024).to_string()),
    ]);
    broker
        .ensure_internal_topic(
            TXN_STATE_TOPIC,
            broker.config.txn_state_num_partitions,
            broker.config.txn_state_replication_factor,
            configs,
        )
        .await
}

/// Appends a transactional id's record to its `__transaction_state` partition and waits until
/// it is durable.
pub async fn persist(broker: &Broker, id: &str, record: &TxnRecord) -> Result<(), String> {
    let (partition, last) = append_record(broker, id, record)?;
    broker.wait_committed(&partition, last).await
}

/// Where a record was appended: the partition and the offset to wait on for durability.
type Appended = (
    std::sync::Arc<crate::partition::Partition>,
    sluice_log::Offset,
);

/// Appends the record of `id`.
fn append_record(broker: &Broker, id: &str, record: &TxnRecord) -> Result<Appended, String> {
    append_value(broker, id, Some(state_topic::value(record)))
}

/// Appends a tombstone for an expired transactional id (not waited for: losing it in a crash
/// brings the idle id back until the next expiry check).
fn append_tombstone(broker: &Broker, id: &str) -> Result<(), String> {
    append_value(broker, id, None).map(|_| ())
}

fn append_value(
    broker: &Broker,
    id: &str,
    value: Option<bytes::Bytes>,
) -> Result<Appended, String> {
    // Created by the FindCoordinator that led the producer here.
    let count = broker
        .metadata
        .topic(TXN_STATE_TOPIC)
        .map(|t| t.partitions)
        .ok_or_else(|| format!("{TXN_STATE_TOPIC} does not exist"))?;
    let index = offsets_topic::partition_for(id, count);
    let partition = broker
        .replicas
        .partition(TXN_STATE_TOPIC, index)
        .filter(|p| p.is_leader())
        .ok_or_else(|| format!("this broker does not lead {TXN_STATE_TOPIC}-{index}"))?;
    let now = now();
    let batch = offsets_topic::batch(vec![(state_topic::key(id), value)], now.0);
    let info = partition.append(batch, now).map_err(|e| e.to_string())?;
    Ok((partition, info.last_offset))
}

/// Finishes a prepared transaction: persists the prepared record, writes a marker to each of
/// its partitions (completing pending offset commits on `__consumer_offsets`), waits until the
/// markers are durable, then installs and persists the completed record. On failure the
/// transaction stays prepared and the next [`tick`] retries.
pub async fn complete(broker: &Broker, id: &str, prepared: TxnRecord) -> Result<(), String> {
    let result = write_markers(broker, id, &prepared).await;
    if let Err(e) = &result {
        warn!(transactional_id = %id, error = %e, "completing the transaction failed; will retry");
        broker.txns.completion_failed(id);
        return result;
    }
    let completed = TxnCoordinator::completed(&prepared, now().0);
    broker.txns.install(id, completed.clone());
    // Not waited for: a crash before this record is durable completes the transaction again at
    // start (markers are idempotent for the partitions), so the answer need not wait for it and
    // a failure is only logged.
    if let Err(e) = append_record(broker, id, &completed) {
        warn!(transactional_id = %id, error = %e, "persisting the completed transaction failed");
    }
    Ok(())
}

/// The partitions of a transaction grouped by where their markers are written.
#[derive(Default)]
struct MarkerTargets {
    /// Led by this broker: written in-process.
    local: Vec<(String, i32)>,
    /// Led by other brokers: one WriteTxnMarkers request per leader.
    remote: BTreeMap<NodeId, Vec<(String, i32)>>,
}

/// Groups `partitions` by their current leader; partitions of deleted topics are left out (there
/// is nothing to mark). Fails when a partition has no leader now.
fn marker_targets(
    broker: &Broker,
    partitions: &std::collections::BTreeSet<(String, i32)>,
) -> Result<MarkerTargets, String> {
    let state = broker.metadata.state();
    let me = node_id(broker.config.node_id);
    let mut targets = MarkerTargets::default();
    for (topic, index) in partitions {
        let Some(meta) = state.topics.get(topic) else {
            // The topic was deleted while the transaction was open: nothing to mark.
            continue;
        };
        let Some(partition) = meta.partition_states.get(index) else {
            return Err(format!("marker for {topic}-{index}: no such partition"));
        };
        match partition.leader {
            None => {
                return Err(format!(
                    "marker for {topic}-{index}: the partition has no leader"
                ))
            }
            Some(leader) if leader == me => targets.local.push((topic.clone(), *index)),
            Some(leader) => targets
                .remote
                .entry(leader)
                .or_default()
                .push((topic.clone(), *index)),
        }
    }
    Ok(targets)
}

/// The coordinator epoch written into markers: the leader epoch of the `__transaction_state`
/// partition this broker coordinates `id` from (Kafka's rule).
fn coordinator_epoch(broker: &Broker, id: &str) -> i32 {
    broker
        .metadata
        .topic(TXN_STATE_TOPIC)
        .and_then(|t| {
            let index = offsets_topic::partition_for(id, t.partitions);
            broker.replicas.partition(TXN_STATE_TOPIC, index)
        })
        .map_or(0, |p| p.leader_epoch().0)
}

/// Persists the prepared record, then writes its marker to every partition of the transaction:
/// in-process where this broker leads, with one WriteTxnMarkers request per other leader, all
/// waited for concurrently until committed. Obsolete markers (a newer producer epoch wrote
/// there) are skipped; any other failure fails the whole completion, to be retried.
async fn write_markers(broker: &Broker, id: &str, prepared: &TxnRecord) -> Result<(), String> {
    persist(broker, id, prepared).await?;
    let marker = Marker {
        producer_id: ProducerId(prepared.producer_id),
        epoch: ProducerEpoch(prepared.producer_epoch),
        kind: if prepared.state == TxnState::PrepareCommit {
            MarkerKind::Commit
        } else {
            MarkerKind::Abort
        },
        coordinator_epoch: coordinator_epoch(broker, id),
    };
    let targets = marker_targets(broker, &prepared.partitions)?;
    let written = write_local_markers(broker, id, marker, &targets.local)?;
    let local = async {
        for (partition, last) in written {
            broker.wait_committed(&partition, last).await?;
        }
        Ok::<(), String>(())
    };
    let remote =
        futures::future::join_all(targets.remote.iter().map(|(leader, partitions)| {
            write_remote_markers(broker, id, marker, *leader, partitions)
        }));
    let (local, remote) = futures::join!(local, remote);
    local?;
    remote.into_iter().collect()
}

/// What a transaction's markers write.
#[derive(Debug, Clone, Copy)]
struct Marker {
    producer_id: ProducerId,
    epoch: ProducerEpoch,
    kind: MarkerKind,
    coordinator_epoch: i32,
}

/// Appends the markers of the partitions this broker leads (completing pending offset commits
/// on `__consumer_offsets`); returns what to wait on for their commit.
fn write_local_markers(
    broker: &Broker,
    id: &str,
    marker: Marker,
    partitions: &[(String, i32)],
) -> Result<Vec<Appended>, String> {
    let now = now();
    let mut written = Vec::with_capacity(partitions.len());
    for (topic, index) in partitions {
        let Some(partition) = broker
            .replicas
            .partition(topic, *index)
            .filter(|p| p.is_leader())
        else {
            // The metadata names this broker, but it has not taken the leadership yet.
            return Err(format!(
                "marker for {topic}-{index}: this broker does not lead the partition yet"
            ));
        };
        match partition.append_marker(
            marker.producer_id,
            marker.epoch,
            marker.kind,
            marker.coordinator_epoch,
            now,
        ) {
            Ok(info) => written.push((partition, info.last_offset)),
            // A newer epoch already wrote there: this marker is obsolete.
            Err(e @ AppendError::InvalidProducerEpoch { .. }) => {
                warn!(transactional_id = %id, %topic, partition = index, error = %e, "skipping an obsolete marker");
                continue;
            }
            Err(e) => return Err(format!("marker for {topic}-{index}: {e}")),
        }
        if topic == OFFSETS_TOPIC {
            broker.groups.complete_txn_offsets(
                marker.producer_id.0,
                *index,
                marker.kind == MarkerKind::Commit,
            );
        }
    }
    Ok(written)
}

/// Bounds a WriteTxnMarkers round trip beyond the leader's own wait for its ISR
/// (`replica.lag.time.max.ms`).
const REMOTE_MARKER_SLACK: Duration = Duration::from_secs(5);

/// Sends the markers of `partitions` to their leader `leader` and checks every partition's
/// answer: committed, or obsolete (a newer producer epoch wrote there, skipped as locally).
async fn write_remote_markers(
    broker: &Broker,
    id: &str,
    marker: Marker,
    leader: NodeId,
    partitions: &[(String, i32)],
) -> Result<(), String> {
    let address = broker
        .metadata
        .state()
        .brokers
        .get(&leader)
        .and_then(|b| b.listeners.first())
        .map(|l| format!("{}:{}", l.host, l.port))
        .ok_or_else(|| MarkerSendError::NoListener(leader).to_string())?;
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, index) in partitions {
        by_topic.entry(topic).or_default().push(*index);
    }
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(KafkaProducerId(marker.producer_id.0))
            .with_producer_epoch(marker.epoch.0)
            .with_transaction_result(marker.kind == MarkerKind::Commit)
            .with_coordinator_epoch(marker.coordinator_epoch)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(topic, indexes)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                            .with_partition_indexes(indexes)
                    })
                    .collect(),
            )]);
    let timeout =
        Duration::from_millis(broker.config.replica_lag_time_max_ms) + REMOTE_MARKER_SLACK;
    let response = broker
        .cluster
        .marker_channels
        .send(
            leader,
            &address,
            timeout,
            (&broker.cluster_secret, node_id(broker.config.node_id)),
            &request,
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut answered: BTreeMap<(String, i32), i16> = BTreeMap::new();
    for result in response
        .markers
        .iter()
        .filter(|m| m.producer_id.0 == marker.producer_id.0)
    {
        for topic in &result.topics {
            for p in &topic.partitions {
                answered.insert((topic.name.0.to_string(), p.partition_index), p.error_code);
            }
        }
    }
    for (topic, index) in partitions {
        match answered.get(&(topic.clone(), *index)).copied() {
            Some(0) => {}
            Some(code) if code == ResponseError::InvalidProducerEpoch.code() => {
                warn!(transactional_id = %id, %topic, partition = index, %leader, "skipping an obsolete marker");
            }
            Some(code) => {
                return Err(format!(
                    "marker for {topic}-{index}: broker {leader} answered {}",
                    error_name(code).unwrap_or_default()
                ))
            }
            None => {
                return Err(format!(
                    "marker for {topic}-{index}: broker {leader} did not answer for the partition"
                ))
            }
        }
    }
    Ok(())
}

/// Aborts transactions past their timeout, retries prepared ones nobody is completing, and
/// forgets idle transactional ids (writing their tombstones).
pub async fn tick(broker: &Broker) {
    for id in broker.txns.expire(now().0) {
        info!(transactional_id = %id, "transactional id expired");
        if let Err(e) = append_tombstone(broker, &id) {
            warn!(transactional_id = %id, error = %e, "writing the expired id's tombstone failed");
        }
    }
    for (id, prepared) in broker.txns.due(now().0) {
        if prepared.state == TxnState::PrepareAbort || prepared.state == TxnState::PrepareCommit {
            info!(transactional_id = %id, state = prepared.state.name(), "completing transaction");
        }
        let _ = complete(broker, &id, prepared).await;
    }
}
