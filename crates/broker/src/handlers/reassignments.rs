//! AlterPartitionReassignments (start or cancel moving partitions to other brokers) and
//! ListPartitionReassignments (the moves under way), KIP-455.
//!
//! A reassignment is started here by proposing the controller's record for it; the active
//! controller finishes it once the new replicas are in sync (`cluster::controller_pass`). Any
//! broker takes these requests: proposals reach the quorum leader from every node.

use std::sync::Arc;

use sluice_meta::controller::{self, ReassignError};
use sluice_meta::{NodeId, PartitionState, Rejection};
use sluice_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use sluice_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use sluice_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};
use sluice_protocol::StrBytes;

use crate::broker::Broker;
use crate::errors;
use crate::metadata::MetadataError;

/// How often a change is recomputed when another change of the same partition (an ISR change,
/// a leader election) committed first.
const STALE_RETRIES: usize = 5;

/// Why one partition's reassignment could not be started or cancelled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AlterError {
    #[error(transparent)]
    Reassign(#[from] ReassignError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

pub(crate) async fn alter_partition_reassignments(
    broker: Arc<Broker>,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let mut responses = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let target = p.replicas.map(|rs| {
                rs.iter()
                    .map(|r| NodeId(u64::try_from(r.0).unwrap_or(u64::MAX)))
                    .collect::<Vec<_>>()
            });
            let result =
                ReassignablePartitionResponse::default().with_partition_index(p.partition_index);
            partitions.push(
                match alter_one(&broker, &topic.name.0, p.partition_index, target).await {
                    Ok(()) => result,
                    Err(e) => result
                        .with_error_code(errors::code(errors::alter_reassignment_error(&e)))
                        .with_error_message(Some(StrBytes::from_string(e.to_string()))),
                },
            );
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    AlterPartitionReassignmentsResponse::default().with_responses(responses)
}

/// Starts (`target` given) or cancels (`None`) one partition's reassignment, recomputing the
/// change when a concurrent change of the partition made it stale.
async fn alter_one(
    broker: &Broker,
    topic: &str,
    partition: i32,
    target: Option<Vec<NodeId>>,
) -> Result<(), AlterError> {
    let mut attempt = 0;
    loop {
        let state = broker.metadata.state();
        let records = match &target {
            Some(target) => controller::start_reassignment(&state, topic, partition, target)?,
            None => controller::cancel_reassignment(&state, topic, partition)?,
        };
        let mut stale = false;
        for record in records {
            match broker.metadata.propose(record).await {
                Ok(()) => {}
                Err(MetadataError::Refused(Rejection::StalePartitionEpoch { .. }))
                    if attempt < STALE_RETRIES =>
                {
                    stale = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !stale {
            return Ok(());
        }
        attempt += 1;
    }
}

pub(crate) fn list_partition_reassignments(
    broker: &Arc<Broker>,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let state = broker.metadata.state();
    let ongoing = |p: &PartitionState, index: i32| {
        controller::is_reassigning(p).then(|| {
            let ids = |v: &[NodeId]| v.iter().map(|n| BrokerId(n.0 as i32)).collect::<Vec<_>>();
            OngoingPartitionReassignment::default()
                .with_partition_index(index)
                .with_replicas(ids(&p.replicas))
                .with_adding_replicas(ids(&p.adding))
                .with_removing_replicas(ids(&p.removing))
        })
    };
    let mut topics = Vec::new();
    match request.topics {
        // Null: every partition being reassigned.
        None => {
            for (name, meta) in &state.topics {
                let partitions: Vec<_> = meta
                    .partition_states
                    .iter()
                    .filter_map(|(&i, p)| ongoing(p, i))
                    .collect();
                if !partitions.is_empty() {
                    topics.push(
                        OngoingTopicReassignment::default()
                            .with_name(StrBytes::from_string(name.clone()).into())
                            .with_partitions(partitions),
                    );
                }
            }
        }
        // Named partitions; unknown ones are left out, as Kafka does.
        Some(requested) => {
            for topic in requested {
                let partitions: Vec<_> = topic
                    .partition_indexes
                    .iter()
                    .filter_map(|&i| ongoing(state.partition(&topic.name.0, i)?, i))
                    .collect();
                if !partitions.is_empty() {
                    topics.push(
                        OngoingTopicReassignment::default()
                            .with_name(topic.name)
                            .with_partitions(partitions),
                    );
                }
            }
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::error::ResponseError;

    #[test]
    fn errors_map_to_kafka_codes() {
        let unknown = AlterError::Reassign(ReassignError::UnknownPartition {
            topic: "t".into(),
            partition: 3,
        });
        assert_eq!(
            errors::alter_reassignment_error(&unknown),
            ResponseError::UnknownTopicOrPartition
        );
        let none = AlterError::Reassign(ReassignError::NoReassignmentInProgress {
            topic: "t".into(),
            partition: 0,
        });
        assert_eq!(
            errors::alter_reassignment_error(&none),
            ResponseError::NoReassignmentInProgress
        );
        let invalid = AlterError::Reassign(ReassignError::InvalidTarget {
            topic: "t".into(),
            partition: 0,
            reason: "empty".into(),
        });
        assert_eq!(
            errors::alter_reassignment_error(&invalid),
            ResponseError::InvalidReplicaAssignment
        );
    }
}
