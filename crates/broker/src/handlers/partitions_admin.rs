//! CreatePartitions (grow a topic) and DeleteRecords (move partitions' log start offsets);
//! neither is allowed on internal topics (`crate::internal_topics`).

use std::sync::Arc;

use sluice_log::Offset;
use sluice_protocol::error::ResponseError;
use sluice_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use sluice_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use sluice_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, DeleteRecordsRequest, DeleteRecordsResponse,
};
use sluice_protocol::StrBytes;

use crate::broker::Broker;
use crate::errors;
use crate::internal_topics;

pub(crate) async fn create_partitions(
    broker: Arc<Broker>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        // New partitions are placed like a new topic's; explicit placement is not taken.
        let outcome = if let Err(refused) = internal_topics::check_partition_change(&topic.name.0) {
            Err(refused)
        } else if topic.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
            Err((
                ResponseError::InvalidReplicaAssignment,
                "explicit assignments for new partitions are not supported: omit them and the \
                 new partitions are spread over the live brokers"
                    .to_owned(),
            ))
        } else {
            broker
                .add_partitions(&topic.name.0, topic.count, request.validate_only)
                .await
        };
        results.push(match outcome {
            Ok(()) => result,
            Err((code, message)) => result
                .with_error_code(errors::code(code))
                .with_error_message(Some(StrBytes::from_string(message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

pub(crate) fn delete_records(
    broker: &Arc<Broker>,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let result = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index);
                    if let Err(error) = internal_topics::check_delete_records(&topic.name.0) {
                        return result
                            .with_low_watermark(-1)
                            .with_error_code(errors::code(error));
                    }
                    let partition = match broker.hosted_partition(&topic.name.0, p.partition_index)
                    {
                        Ok(partition) => partition,
                        Err(e) => {
                            return result
                                .with_low_watermark(-1)
                                .with_error_code(errors::code(e))
                        }
                    };
                    if !partition.is_leader() {
                        return result
                            .with_low_watermark(-1)
                            .with_error_code(errors::code(ResponseError::NotLeaderOrFollower));
                    }
                    match partition.delete_records(Offset(p.offset)) {
                        Ok(start) => result.with_low_watermark(start.0),
                        Err(e) => result
                            .with_low_watermark(-1)
                            .with_error_code(errors::code(errors::read_error(&e))),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
