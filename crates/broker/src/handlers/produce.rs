//! Produce: appends each partition's batches as they arrive (in request order on the connection),
//! then for acks=all waits for the group-commit fsync and for the in-sync replicas to have the
//! batch (the high watermark passing it) before answering; acks=0 gets no answer. Only the
//! partition's leader takes writes (NOT_LEADER_OR_FOLLOWER otherwise), and acks=all needs
//! `min.insync.replicas` in the ISR (NOT_ENOUGH_REPLICAS).

use std::sync::Arc;

use bytes::Bytes;
use sluice_log::{AppendError, Offset};
use sluice_protocol::error::ResponseError;
use sluice_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use sluice_protocol::messages::{ProduceRequest, ProduceResponse};
use sluice_protocol::StrBytes;
use tracing::warn;

use crate::broker::{now, Broker};
use crate::errors;
use crate::metrics::PurgatoryOperation;
use crate::partition::{Partition, ReplicationError};
use crate::request::{Ctx, Reply};

/// One partition's outcome, the partition to sync for acks=all, and what it appended (for
/// metrics; zero when nothing new was written).
struct Outcome {
    response: PartitionProduceResponse,
    sync: Option<(Arc<Partition>, Offset)>,
    appended: Appended,
}

/// Bytes and records one partition appended.
#[derive(Debug, Default, Clone, Copy)]
struct Appended {
    bytes: u64,
    records: u64,
}

fn append_one(
    broker: &Broker,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
    txn_check: TxnCheck,
    acks: i16,
    version: i16,
) -> Outcome {
    let response = PartitionProduceResponse::default().with_index(index);
    let fail = |error: ResponseError, message: Option<String>| Outcome {
        response: response
            .clone()
            .with_error_code(error.code())
            .with_error_message(message.map(StrBytes::from_string)),
        sync: None,
        appended: Appended::default(),
    };
    let Some(partition) = broker.replicas.partition(topic, index) else {
        return fail(broker.not_hosted_error(topic, index), None);
    };
    if !partition.is_leader() {
        return fail(ResponseError::NotLeaderOrFollower, None);
    }
    // acks=all needs min.insync.replicas in sync.
    let min_insync = partition.min_insync_replicas();
    let in_sync = if acks == -1 {
        partition.in_sync_replica_count() as i32
    } else {
        i32::MAX
    };
    if in_sync < min_insync {
        return fail(
            ResponseError::NotEnoughReplicas,
            Some(format!(
                "min.insync.replicas is {min_insync} but this partition has {in_sync} in-sync replica(s)"
            )),
        );
    }
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return fail(
            ResponseError::InvalidRecord,
            Some("produce request carries no record batch".into()),
        );
    };
    // Kafka's ProduceRequest.validateRecords: zstd needs Produce v7 (KIP-110).
    let zstd = sluice_protocol::records::BatchHeader::parse(&records)
        .is_ok_and(|h| h.compression() == Ok(sluice_protocol::records::Compression::Zstd));
    if version < 7 && zstd {
        return fail(
            ResponseError::UnsupportedCompressionType,
            Some(format!(
                "Produce v{version} may not carry zstd-compressed batches (v7 or later may)"
            )),
        );
    }
    let appended = Appended {
        bytes: records.len() as u64,
        records: crate::metrics::batch_record_count(&records),
    };
    // KIP-890: the first write of a transaction to this partition must be part of the producer's
    // ongoing transaction, as the coordinator knows it.
    let txns = &broker.txns;
    let mut verify = |pid: sluice_log::ProducerId, epoch: sluice_log::ProducerEpoch| match txn_check
    {
        TxnCheck::NoTransactionalId => {
            Err("a transactional batch needs a transactional id in the request".to_owned())
        }
        TxnCheck::Coordinator => txns.verify(pid.0, epoch.0, topic, index),
        TxnCheck::Unverified => Ok(()),
    };
    match partition.append_verified(records, now(), &mut verify) {
        Ok(info) => Outcome {
            response: response
                .with_base_offset(info.first_offset.0)
                .with_log_append_time_ms(info.log_append_time.map_or(-1, |t| t.0))
                .with_log_start_offset(info.log_start_offset.0),
            sync: Some((partition, info.last_offset)),
            // A retried idempotent batch is answered but not written again.
            appended: if info.duplicate {
                Appended::default()
            } else {
                appended
            },
        },
        Err(e) => {
            if matches!(e, AppendError::Io(_) | AppendError::Poisoned) {
                warn!(%topic, partition = index, error = %e, "append failed");
            }
            let mut outcome = fail(errors::append_error(&e), Some(e.to_string()));
            // KIP-467: each refused record by its index in the batch (Produce v8+).
            if let (AppendError::RecordErrors { errors, .. }, 8..) = (&e, version) {
                outcome.response = outcome.response.with_record_errors(
                    errors
                        .iter()
                        .map(|r| {
                            BatchIndexAndErrorMessage::default()
                                .with_batch_index(r.batch_index as i32)
                                .with_batch_index_error_message(Some(StrBytes::from_string(
                                    r.message.clone(),
                                )))
                        })
                        .collect(),
                );
            }
            outcome
        }
    }
}

/// How the first transactional write of a producer to a partition is checked (KIP-890 part 1).
#[derive(Debug, Clone, Copy)]
enum TxnCheck {
    /// The request names no transactional id: a transactional batch is refused.
    NoTransactionalId,
    /// This broker coordinates the transactional id: its coordinator is asked, under the log
    /// lock.
    Coordinator,
    /// Another broker coordinates it. Asking it means AddPartitionsToTxn v4 (verify only) before
    /// the append, which is not implemented: the write is accepted as in Kafka's classic
    /// protocol, so the late-write hole stays open for these partitions.
    Unverified,
}

/// acks=all: waits until `last` is fsynced here (when `sync`) and on every in-sync replica.
pub(crate) async fn wait_all(
    partition: &Partition,
    last: Offset,
    sync: bool,
    timeout: std::time::Duration,
) -> Result<(), ResponseError> {
    if sync {
        if let Err(e) = partition.wait_durable(last).await {
            warn!(error = %e, "acks=all write not durable");
            return Err(ResponseError::KafkaStorageError);
        }
    }
    match tokio::time::timeout(timeout, partition.wait_replicated(last)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(ReplicationError::NotLeader)) => Err(ResponseError::NotLeaderOrFollower),
        Ok(Err(ReplicationError::NotEnoughReplicasAfterAppend(_))) => {
            Err(ResponseError::NotEnoughReplicasAfterAppend)
        }
        Err(_) => Err(ResponseError::RequestTimedOut),
    }
}

pub(crate) fn handle(broker: &Arc<Broker>, ctx: Ctx, request: ProduceRequest) -> Reply {
    let acks = request.acks;
    let version = ctx.version;
    let timeout = std::time::Duration::from_millis(request.timeout_ms.max(0) as u64);
    let invalid_acks = !(-1..=1).contains(&acks);
    let txn_check = match &request.transactional_id {
        None => TxnCheck::NoTransactionalId,
        Some(id) if broker.coordinates(crate::txn::TXN_STATE_TOPIC, &id.0) => TxnCheck::Coordinator,
        Some(_) => TxnCheck::Unverified,
    };
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let outcomes: Vec<Outcome> = topic
            .partition_data
            .into_iter()
            .map(|data| {
                // Clients may not write the broker's internal topics (Kafka's rule).
                let refused = if invalid_acks {
                    Some(ResponseError::InvalidRequiredAcks)
                } else if crate::internal_topics::is_internal(&name) {
                    Some(ResponseError::InvalidTopicException)
                } else {
                    None
                };
                if let Some(error) = refused {
                    Outcome {
                        response: PartitionProduceResponse::default()
                            .with_index(data.index)
                            .with_error_code(error.code()),
                        sync: None,
                        appended: Appended::default(),
                    }
                } else {
                    append_one(
                        broker,
                        &name,
                        data.index,
                        data.records,
                        txn_check,
                        acks,
                        version,
                    )
                }
            })
            .collect();
        // One label lookup per topic, and none for topics nothing was written to.
        let (bytes, records) = outcomes.iter().fold((0, 0), |(b, r), o| {
            (b + o.appended.bytes, r + o.appended.records)
        });
        if bytes > 0 {
            let counters = broker.metrics.topic(&name);
            counters.bytes_in.inc_by(bytes);
            counters.records_in.inc_by(records);
            broker.metrics.count_in(bytes, records);
        }
        topics.push((topic.name, outcomes));
    }
    if acks == 0 {
        return Reply::Nothing;
    }
    let wait_for_sync = acks == -1 && broker.config.flush_on_ack;
    // Counted in purgatory only when there is a sync or replication to wait for.
    let waiting = (acks == -1
        && topics
            .iter()
            .any(|(_, outcomes)| outcomes.iter().any(|o| o.sync.is_some())))
    .then(|| broker.metrics.enter_purgatory(PurgatoryOperation::Produce));
    ctx.reply_later(async move {
        let _waiting = waiting;
        let mut responses = Vec::with_capacity(topics.len());
        for (name, outcomes) in topics {
            let mut partition_responses = Vec::with_capacity(outcomes.len());
            for outcome in outcomes {
                let mut response = outcome.response;
                if let (-1, Some((partition, last))) = (acks, outcome.sync) {
                    if let Err(error) = wait_all(&partition, last, wait_for_sync, timeout).await {
                        response = response.with_error_code(error.code()).with_base_offset(-1);
                    }
                }
                partition_responses.push(response);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partition_responses),
            );
        }
        ProduceResponse::default().with_responses(responses)
    })
}
