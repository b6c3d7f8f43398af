//! Carries out the transaction coordinator's decisions: persists transaction records to
//! `__transaction_state`, writes commit/abort markers to every partition of a transaction (the
//! single-node form of WriteTxnMarkers), completes transactional offset commits, and aborts
//! timed-out transactions.

use std::collections::BTreeMap;

use sluice_log::{AppendError, MarkerKind, ProducerEpoch, ProducerId};
use tracing::{info, warn};

use super::state_topic::{self, TxnRecord, TxnState, TXN_STATE_TOPIC};
use super::TxnCoordinator;
use crate::broker::{now, Broker, CreateTopicError};
use crate::group::offsets_topic::{self, OFFSETS_TOPIC};

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

async fn write_markers(broker: &Broker, id: &str, prepared: &TxnRecord) -> Result<(), String> {
    persist(broker, id, prepared).await?;
    let kind = if prepared.state == TxnState::PrepareCommit {
        MarkerKind::Commit
    } else {
        MarkerKind::Abort
    };
    let now = now();
    let mut written = Vec::with_capacity(prepared.partitions.len());
    for (topic, index) in &prepared.partitions {
        if broker.metadata.topic(topic).is_none() {
            // The topic was deleted while the transaction was open: nothing to mark.
            continue;
        }
        let Some(partition) = broker
            .replicas
            .partition(topic, *index)
            .filter(|p| p.is_leader())
        else {
            return Err(format!(
                "marker for {topic}-{index}: this broker does not lead the partition"
            ));
        };
        match partition.append_marker(
            ProducerId(prepared.producer_id),
            ProducerEpoch(prepared.producer_epoch),
            kind,
            0,
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
                prepared.producer_id,
                *index,
                kind == MarkerKind::Commit,
            );
        }
    }
    for (partition, last) in written {
        broker.wait_committed(&partition, last).await?;
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
