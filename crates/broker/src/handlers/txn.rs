//! The transaction APIs: InitProducerId with a transactional id, AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit and EndTxn (the coordinator side, see [`crate::txn`]), and the
//! admin views DescribeTransactions, ListTransactions and DescribeProducers.

use std::sync::Arc;

use sluice_log::{ProducerEpoch, ProducerId as LogProducerId};
use sluice_protocol::error::ResponseError;
use sluice_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use sluice_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use sluice_protocol::messages::describe_transactions_response::{self, TopicData};
use sluice_protocol::messages::list_transactions_response;
use sluice_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use sluice_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
};
use sluice_protocol::StrBytes;
use tracing::warn;

use crate::broker::{now, Broker};
use crate::group::offsets_topic::{self, CommittedOffset, OFFSETS_TOPIC};
use crate::group::CommitAuth;
use crate::handlers::groups::{
    commit_request_topics, commit_response_topics, validate_commits, CommitResults,
};
use crate::request::{Ctx, Reply};
use crate::txn::{driver, EndStep, InitStep, TxnRecord, TXN_STATE_TOPIC};

/// The producer-facing answer to an epoch that is no longer current: clients before
/// InitProducerId v4 / EndTxn v2 know only INVALID_PRODUCER_EPOCH (Kafka's mapping).
fn fenced_for(version: i16, fenced_from: i16, error: ResponseError) -> ResponseError {
    if error == ResponseError::ProducerFenced && version < fenced_from {
        ResponseError::InvalidProducerEpoch
    } else {
        error
    }
}

fn init_response(
    error: Option<ResponseError>,
    record: Option<&TxnRecord>,
) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_error_code(error.map_or(0, |e| e.code()))
        .with_producer_id(ProducerId(record.map_or(-1, |r| r.producer_id)))
        .with_producer_epoch(record.map_or(-1, |r| r.producer_epoch))
}

/// InitProducerId with a transactional id (the idempotent case is answered by
/// `handlers::init_producer_id`).
pub(crate) fn init_producer_id(
    broker: &Arc<Broker>,
    ctx: Ctx,
    request: InitProducerIdRequest,
    id: String,
) -> Reply {
    let version = ctx.version;
    if id.is_empty() {
        return ctx
            .reply(&init_response(Some(ResponseError::InvalidRequest), None))
            .unwrap_or(Reply::Nothing);
    }
    let expected =
        (request.producer_id.0 >= 0).then_some((request.producer_id.0, request.producer_epoch));
    if let Some(error) = not_coordinating(broker, &id) {
        return ctx
            .reply(&init_response(Some(error), None))
            .unwrap_or(Reply::Nothing);
    }
    let broker = broker.clone();
    ctx.reply_later(async move {
        // Taken before knowing whether it is needed (an id the transactional id already has is
        // kept): ids are plentiful, and the coordinator's step must not wait on the quorum.
        let fresh = broker.metadata.allocate_producer_id().await.map_err(|e| {
            warn!(error = %e, "cannot allocate a producer id");
            crate::errors::metadata_error(&e)
        });
        let step = broker.txns.init_producer(
            &id,
            request.transaction_timeout_ms,
            expected,
            || fresh,
            now().0,
        );
        let record = match step {
            Err(e) => return init_response(Some(fenced_for(version, 4, e)), None),
            Ok(InitStep::Ready(record)) => {
                if let Err(e) = driver::persist(&broker, &id, &record).await {
                    warn!(transactional_id = %id, error = %e, "persisting the producer id failed");
                    return init_response(Some(ResponseError::CoordinatorNotAvailable), None);
                }
                broker.txns.install(&id, record.clone());
                record
            }
            Ok(InitStep::Fence(prepared)) => {
                // The old instance's transaction is aborted with the new epoch; the client
                // retries on CONCURRENT_TRANSACTIONS if that cannot finish now.
                if driver::complete(&broker, &id, prepared.clone())
                    .await
                    .is_err()
                {
                    return init_response(Some(ResponseError::ConcurrentTransactions), None);
                }
                prepared
            }
        };
        init_response(None, Some(&record))
    })
}

/// AddPartitionsToTxn v0–3 (one transaction per request, from a producer).
pub(crate) fn add_partitions_to_txn(
    broker: &Arc<Broker>,
    ctx: Ctx,
    request: AddPartitionsToTxnRequest,
) -> Reply {
    let version = ctx.version;
    let id = request.v3_and_below_transactional_id.0.to_string();
    let pid = request.v3_and_below_producer_id.0;
    let epoch = request.v3_and_below_producer_epoch;
    let requested: Vec<(TopicName, Vec<i32>)> = request
        .v3_and_below_topics
        .into_iter()
        .map(|t| (t.name, t.partitions))
        .collect();
    let unknown = |topic: &TopicName, p: i32| {
        broker
            .metadata
            .topic(&topic.0)
            .is_none_or(|t| !(0..t.partitions).contains(&p))
    };
    let any_unknown = requested
        .iter()
        .any(|(t, ps)| ps.iter().any(|&p| unknown(t, p)));
    let respond = |requested: &[(TopicName, Vec<i32>)], error: &dyn Fn(&TopicName, i32) -> i16| {
        AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(
            requested
                .iter()
                .map(|(name, partitions)| {
                    AddPartitionsToTxnTopicResult::default()
                        .with_name(name.clone())
                        .with_results_by_partition(
                            partitions
                                .iter()
                                .map(|&p| {
                                    AddPartitionsToTxnPartitionResult::default()
                                        .with_partition_index(p)
                                        .with_partition_error_code(error(name, p))
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    };
    if any_unknown {
        let response = respond(&requested, &|t, p| {
            if unknown(t, p) {
                ResponseError::UnknownTopicOrPartition.code()
            } else {
                ResponseError::OperationNotAttempted.code()
            }
        });
        return ctx.reply(&response).unwrap_or(Reply::Nothing);
    }
    let partitions: Vec<(String, i32)> = requested
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.0.to_string(), p)))
        .collect();
    let broker = broker.clone();
    ctx.reply_later(async move {
        let error = add_to_txn(&broker, &id, pid, epoch, &partitions)
            .await
            .err()
            .map(|e| fenced_for(version, 2, e));
        let code = error.map_or(0, |e| e.code());
        respond(&requested, &|_, _| code)
    })
}

/// Why this broker cannot coordinate transactional id `id` now: NOT_COORDINATOR when another
/// broker leads the id's `__transaction_state` partition (the producer finds the coordinator
/// again), COORDINATOR_LOAD_IN_PROGRESS while this one is taking it over (retried here).
fn not_coordinating(broker: &Broker, id: &str) -> Option<ResponseError> {
    broker.coordinator_error(TXN_STATE_TOPIC, id)
}

/// Adds partitions to a transaction: persisted before the coordinator lets writes to them in.
async fn add_to_txn(
    broker: &Broker,
    id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
) -> Result<(), ResponseError> {
    if let Some(error) = not_coordinating(broker, id) {
        return Err(error);
    }
    let Some(record) = broker
        .txns
        .add_partitions(id, producer_id, epoch, partitions, now().0)?
    else {
        return Ok(());
    };
    if let Err(e) = driver::persist(broker, id, &record).await {
        warn!(transactional_id = %id, error = %e, "persisting the transaction failed");
        broker.txns.add_failed(id, partitions);
        return Err(ResponseError::CoordinatorNotAvailable);
    }
    broker.txns.install_added(id, record);
    Ok(())
}

/// The `__consumer_offsets` partition of `group`, created on first use.
fn offsets_partition(broker: &Broker, group: &str) -> Result<i32, ResponseError> {
    let count = broker
        .metadata
        .topic(OFFSETS_TOPIC)
        .map_or(0, |t| t.partitions);
    if count == 0 {
        return Err(ResponseError::CoordinatorNotAvailable);
    }
    Ok(offsets_topic::partition_for(group, count))
}

/// AddOffsetsToTxn: adds the group's `__consumer_offsets` partition to the transaction.
pub(crate) fn add_offsets_to_txn(
    broker: &Arc<Broker>,
    ctx: Ctx,
    request: AddOffsetsToTxnRequest,
) -> Reply {
    let version = ctx.version;
    let id = request.transactional_id.0.to_string();
    let group = request.group_id.0.to_string();
    let broker = broker.clone();
    ctx.reply_later(async move {
        let result = match offsets_partition(&broker, &group) {
            Ok(index) => {
                add_to_txn(
                    &broker,
                    &id,
                    request.producer_id.0,
                    request.producer_epoch,
                    &[(OFFSETS_TOPIC.to_owned(), index)],
                )
                .await
            }
            Err(e) => Err(e),
        };
        let code = result.err().map_or(0, |e| fenced_for(version, 2, e).code());
        AddOffsetsToTxnResponse::default().with_error_code(code)
    })
}

/// TxnOffsetCommit: writes the offsets as transactional records of the producer to the group's
/// `__consumer_offsets` partition (verified like any transactional write) and holds them until
/// the transaction's marker.
pub(crate) fn txn_offset_commit(
    broker: &Arc<Broker>,
    ctx: Ctx,
    request: TxnOffsetCommitRequest,
) -> Reply {
    let version = ctx.version;
    let id = request.transactional_id.0.to_string();
    let group = request.group_id.0.to_string();
    let pid = request.producer_id.0;
    let epoch = request.producer_epoch;
    let mut group_error = broker
        .txns
        .check_offset_commit(&id, pid, epoch)
        .err()
        .map(|e| fenced_for(version, 3, e));
    // v3+: a member of a live group is checked like OffsetCommit (generation -1 skips it).
    if group_error.is_none() && request.generation_id >= 0 {
        group_error = broker.groups.authorize_commit(
            &group,
            &CommitAuth {
                generation_id: request.generation_id,
                member_id: request.member_id.to_string(),
                group_instance_id: request.group_instance_id.map(|s| s.to_string()),
            },
        );
    }
    let (results, to_store) =
        validate_commits(broker, group_error, commit_request_topics!(request.topics));
    let respond = |results: CommitResults, failed: Option<ResponseError>| {
        TxnOffsetCommitResponse::default().with_topics(commit_response_topics!(
            results,
            failed,
            TxnOffsetCommitResponseTopic,
            TxnOffsetCommitResponsePartition
        ))
    };
    if to_store.is_empty() {
        return ctx.reply(&respond(results, None)).unwrap_or(Reply::Nothing);
    }
    let broker = broker.clone();
    ctx.reply_later(async move {
        match write_txn_offsets(&broker, &group, pid, epoch, to_store).await {
            Ok(()) => respond(results, None),
            Err(e) => respond(results, Some(e)),
        }
    })
}

async fn write_txn_offsets(
    broker: &Broker,
    group: &str,
    producer_id: i64,
    epoch: i16,
    offsets: Vec<((String, i32), CommittedOffset)>,
) -> Result<(), ResponseError> {
    let index = offsets_partition(broker, group)?;
    let partition = broker
        .replicas
        .partition(OFFSETS_TOPIC, index)
        .filter(|p| p.is_leader())
        .ok_or(ResponseError::NotCoordinator)?;
    let records = offsets_topic::offset_records(group, &offsets);
    let keys: Vec<(String, i32)> = offsets.iter().map(|(key, _)| key.clone()).collect();
    let now = now();
    let batch = offsets_topic::producer_batch(records, now.0, Some((producer_id, epoch)));
    // Held before the write: a marker that lands right after the write (an abort by timeout or
    // fencing) must find them to drop them. Taken back if the write is refused.
    broker
        .groups
        .add_txn_offsets(producer_id, index, group, offsets);
    let txns = &broker.txns;
    let info = partition
        .append_verified(batch, now, &mut |pid: LogProducerId, e: ProducerEpoch| {
            txns.verify(pid.0, e.0, OFFSETS_TOPIC, index)
        })
        .map_err(|e| {
            warn!(%group, error = %e, "transactional offset commit refused");
            broker
                .groups
                .remove_txn_offsets(producer_id, index, group, &keys);
            crate::errors::append_error(&e)
        })?;
    broker
        .wait_committed(&partition, info.last_offset)
        .await
        .map_err(|_| ResponseError::KafkaStorageError)?;
    Ok(())
}

/// EndTxn: commits or aborts; answers once every marker is written and durable.
pub(crate) fn end_txn(broker: &Arc<Broker>, ctx: Ctx, request: EndTxnRequest) -> Reply {
    let version = ctx.version;
    let id = request.transactional_id.0.to_string();
    if let Some(error) = not_coordinating(broker, &id) {
        return ctx
            .reply(&EndTxnResponse::default().with_error_code(error.code()))
            .unwrap_or(Reply::Nothing);
    }
    let step = broker.txns.end(
        &id,
        request.producer_id.0,
        request.producer_epoch,
        request.committed,
        now().0,
    );
    let broker = broker.clone();
    ctx.reply_later(async move {
        let error = match step {
            Err(e) => Some(fenced_for(version, 2, e)),
            Ok(EndStep::AlreadyDone) => None,
            Ok(EndStep::Complete(prepared)) => driver::complete(&broker, &id, prepared)
                .await
                .err()
                .map(|_| ResponseError::ConcurrentTransactions),
        };
        EndTxnResponse::default().with_error_code(error.map_or(0, |e| e.code()))
    })
}

/// DescribeTransactions: each transactional id's state, producer and partitions.
pub(crate) fn describe_transactions(
    broker: &Broker,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let states = request
        .transactional_ids
        .into_iter()
        .map(|id| {
            let state = describe_transactions_response::TransactionState::default()
                .with_transactional_id(id.clone())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1);
            match broker.txns.describe(&id.0) {
                None => state.with_error_code(ResponseError::TransactionalIdNotFound.code()),
                Some(r) => {
                    let mut topics: Vec<TopicData> = Vec::new();
                    for (topic, p) in &r.partitions {
                        match topics.last_mut() {
                            Some(t) if t.topic.0.as_str() == topic.as_str() => {
                                t.partitions.push(*p)
                            }
                            _ => topics.push(
                                TopicData::default()
                                    .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                                    .with_partitions(vec![*p]),
                            ),
                        }
                    }
                    state
                        .with_transaction_state(StrBytes::from_static_str(r.state.name()))
                        .with_transaction_timeout_ms(r.timeout_ms)
                        .with_transaction_start_time_ms(r.start_ms)
                        .with_producer_id(ProducerId(r.producer_id))
                        .with_producer_epoch(r.producer_epoch)
                        .with_topics(topics)
                }
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

/// ListTransactions v0–1: transactional ids, filtered by state, producer id and (v1) how long
/// the transaction has been running.
pub(crate) fn list_transactions(
    broker: &Broker,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let mut unknown = Vec::new();
    let mut states = Vec::new();
    for name in &request.state_filters {
        match crate::txn::TxnState::from_name(name) {
            Some(s) => states.push(s),
            None => unknown.push(name.clone()),
        }
    }
    let now_ms = now().0;
    let listed = broker
        .txns
        .list()
        .into_iter()
        .filter(|(_, r)| states.is_empty() || states.contains(&r.state))
        .filter(|(_, r)| {
            request.producer_id_filters.is_empty()
                || request
                    .producer_id_filters
                    .iter()
                    .any(|p| p.0 == r.producer_id)
        })
        .filter(|(_, r)| {
            request.duration_filter < 0
                || (r.start_ms >= 0 && now_ms.saturating_sub(r.start_ms) >= request.duration_filter)
        })
        .map(|(id, r)| {
            list_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(id)))
                .with_producer_id(ProducerId(r.producer_id))
                .with_transaction_state(StrBytes::from_static_str(r.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(listed)
}

/// DescribeProducers: the producers each partition's log knows, with their open transaction.
pub(crate) fn describe_producers(
    broker: &Broker,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partition_indexes
                .iter()
                .map(|&index| {
                    let response = PartitionResponse::default().with_partition_index(index);
                    match broker.hosted_partition(&topic.name.0, index) {
                        Err(e) => response.with_error_code(e.code()),
                        Ok(partition) => response.with_active_producers(
                            partition
                                .producers()
                                .into_iter()
                                .map(|p| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(p.producer_id))
                                        .with_producer_epoch(i32::from(p.producer_epoch))
                                        .with_last_sequence(p.last_sequence)
                                        .with_last_timestamp(p.last_timestamp)
                                        .with_coordinator_epoch(p.coordinator_epoch)
                                        .with_current_txn_start_offset(p.current_txn_start_offset)
                                })
                                .collect(),
                        ),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
