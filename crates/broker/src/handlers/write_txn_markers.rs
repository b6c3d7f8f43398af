//! WriteTxnMarkers (API key 27): a transaction coordinator asks this broker, the leader of some
//! of a transaction's partitions, to append the commit or abort marker to each of them. The
//! answer comes once every marker is committed (fsynced when `log.flush.on.ack`, and on the ISR),
//! so the coordinator can complete the transaction. Transactional offset commits held on a
//! `__consumer_offsets` partition led here are applied or dropped with its marker.
//!
//! Only another node of the cluster may send it (Kafka's CLUSTER_ACTION): from any other
//! connection every partition is answered CLUSTER_AUTHORIZATION_FAILED, as Kafka's error
//! response has it, and no marker is appended.
//!
//! The coordinator's side is `txn::driver::write_markers`; a coordinator that leads a partition
//! itself writes that marker in-process instead of sending itself this request.

use std::sync::Arc;

use sluice_log::{AppendError, MarkerKind, Offset, ProducerEpoch, ProducerId};
use sluice_protocol::error::ResponseError;
use sluice_protocol::messages::write_txn_markers_request::WritableTxnMarker;
use sluice_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use sluice_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use tracing::{debug, warn};

use crate::broker::{now, Broker};
use crate::errors;
use crate::group::offsets_topic::OFFSETS_TOPIC;
use crate::handlers::produce::wait_all;
use crate::partition::Partition;
use crate::request::{Ctx, Reply};

/// A marker appended here whose commit the answer waits for, with where its result goes
/// (marker, topic and partition positions in the response).
struct Pending {
    at: (usize, usize, usize),
    partition: Arc<Partition>,
    last: Offset,
}

pub(crate) fn handle(broker: &Arc<Broker>, ctx: Ctx, request: WriteTxnMarkersRequest) -> Reply {
    if !ctx.principal.may_cluster_action() {
        crate::auth::warn_refused("WriteTxnMarkers", &ctx.principal, ctx.client_host);
        let refused = errors::code(ResponseError::ClusterAuthorizationFailed);
        let markers = answer_each(request.markers, |_, _, _, _| refused);
        return ctx.reply_later(std::future::ready(
            WriteTxnMarkersResponse::default().with_markers(markers),
        ));
    }
    let mut pending = Vec::new();
    let markers = answer_each(
        request.markers,
        |marker, at, topic, index| match mark_partition(broker, topic, index, marker) {
            Ok((partition, last)) => {
                pending.push(Pending {
                    at,
                    partition,
                    last,
                });
                errors::NONE
            }
            Err(e) => e.code(),
        },
    );
    let broker = broker.clone();
    ctx.reply_later(async move {
        let mut response = WriteTxnMarkersResponse::default().with_markers(markers);
        let timeout = std::time::Duration::from_millis(broker.config.replica_lag_time_max_ms);
        let waits = pending.iter().map(|p| {
            wait_all(&p.partition, p.last, broker.config.flush_on_ack, timeout)
        });
        let outcomes = futures::future::join_all(waits).await;
        for (p, outcome) in pending.iter().zip(outcomes) {
            if let Err(error) = outcome {
                let (m, t, i) = p.at;
                warn!(topic = %p.partition.topic, partition = p.partition.index, error = ?error, "transaction marker not committed");
                response.markers[m].topics[t].partitions[i].error_code = error.code();
            }
        }
        response
    })
}

/// What a marker writes, the same for each of its partitions.
#[derive(Clone, Copy)]
struct Marker {
    producer_id: ProducerId,
    epoch: ProducerEpoch,
    kind: MarkerKind,
    coordinator_epoch: i32,
}

impl From<&WritableTxnMarker> for Marker {
    fn from(request: &WritableTxnMarker) -> Self {
        Marker {
            producer_id: ProducerId(request.producer_id.0),
            epoch: ProducerEpoch(request.producer_epoch),
            kind: if request.transaction_result {
                MarkerKind::Commit
            } else {
                MarkerKind::Abort
            },
            coordinator_epoch: request.coordinator_epoch,
        }
    }
}

/// The answer to `markers`: for each partition of each marker, in request order, the error
/// code `answer(marker, (marker, topic, partition) position, topic, partition index)` gives.
fn answer_each(
    markers: Vec<WritableTxnMarker>,
    mut answer: impl FnMut(Marker, (usize, usize, usize), &str, i32) -> i16,
) -> Vec<WritableTxnMarkerResult> {
    markers
        .into_iter()
        .enumerate()
        .map(|(m, request)| {
            let marker = Marker::from(&request);
            let topics = request
                .topics
                .into_iter()
                .enumerate()
                .map(|(t, topic)| {
                    let name = topic.name.0.to_string();
                    let partitions = topic
                        .partition_indexes
                        .into_iter()
                        .enumerate()
                        .map(|(i, index)| {
                            WritableTxnMarkerPartitionResult::default()
                                .with_partition_index(index)
                                .with_error_code(answer(marker, (m, t, i), &name, index))
                        })
                        .collect();
                    WritableTxnMarkerTopicResult::default()
                        .with_name(topic.name)
                        .with_partitions(partitions)
                })
                .collect();
            WritableTxnMarkerResult::default()
                .with_producer_id(request.producer_id)
                .with_topics(topics)
        })
        .collect()
}

/// Appends `marker` to `topic`-`index` if this broker leads it, completing the transactional
/// offsets of an offsets partition; returns the partition and the marker's offset.
fn mark_partition(
    broker: &Broker,
    topic: &str,
    index: i32,
    marker: Marker,
) -> Result<(Arc<Partition>, Offset), ResponseError> {
    if broker.metadata.topic(topic).is_none() {
        return Err(ResponseError::UnknownTopicOrPartition);
    }
    let partition = broker.hosted_partition(topic, index)?;
    if !partition.is_leader() {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    let appended = partition.append_marker(
        marker.producer_id,
        marker.epoch,
        marker.kind,
        marker.coordinator_epoch,
        now(),
    );
    match appended {
        Ok(info) => {
            if topic == OFFSETS_TOPIC {
                broker.groups.complete_txn_offsets(
                    marker.producer_id.0,
                    index,
                    marker.kind == MarkerKind::Commit,
                );
            }
            Ok((partition, info.last_offset))
        }
        // A newer epoch of the producer already wrote here: the coordinator drops this marker.
        Err(e @ AppendError::InvalidProducerEpoch { .. }) => {
            debug!(%topic, partition = index, error = %e, "obsolete transaction marker");
            Err(errors::append_error(&e))
        }
        Err(e) => {
            warn!(%topic, partition = index, error = %e, "appending a transaction marker failed");
            Err(errors::append_error(&e))
        }
    }
}
