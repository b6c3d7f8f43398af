//! ListOffsets: earliest (-2), latest (-1) or the first offset at or after a timestamp.

use std::sync::Arc;

use sluice_log::Timestamp;
use sluice_protocol::error::ResponseError;
use sluice_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use sluice_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::broker::Broker;
use crate::errors;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
/// ListOffsets v7+: the record with the largest timestamp.
const MAX_TIMESTAMP: i64 = -3;

pub(crate) fn handle(
    broker: &Arc<Broker>,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    // Leader epochs exist in the response from v4 on.
    let with_epoch = |epoch: i32| if version >= 4 { epoch } else { -1 };
    let read_committed = request.isolation_level == 1;
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .into_iter()
                .map(|wanted| {
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(wanted.partition_index);
                    let partition =
                        match broker.hosted_partition(&topic.name.0, wanted.partition_index) {
                            Ok(partition) => partition,
                            Err(e) => return response.with_error_code(errors::code(e)),
                        };
                    if let Err(e) = crate::handlers::fetch::check_leader(
                        &partition,
                        wanted.current_leader_epoch,
                    ) {
                        return response.with_error_code(errors::code(e));
                    }
                    let epoch = with_epoch(partition.leader_epoch().0);
                    match wanted.timestamp {
                        // read_committed consumers see the last stable offset as the end.
                        LATEST if read_committed => response
                            .with_offset(partition.last_stable_offset().0)
                            .with_leader_epoch(epoch),
                        LATEST => response
                            .with_offset(partition.high_watermark().0)
                            .with_leader_epoch(epoch),
                        EARLIEST => response
                            .with_offset(partition.log_start_offset().0)
                            .with_leader_epoch(epoch),
                        ts if ts >= 0 => match partition.offset_for_timestamp(Timestamp(ts)) {
                            Ok(Some((offset, found))) => response
                                .with_offset(offset.0)
                                .with_timestamp(found.0)
                                .with_leader_epoch(epoch),
                            Ok(None) => response.with_offset(-1).with_timestamp(-1),
                            Err(e) => {
                                response.with_error_code(errors::code(errors::read_error(&e)))
                            }
                        },
                        MAX_TIMESTAMP if version >= 7 => match partition.max_timestamp() {
                            Ok(Some((offset, found))) => response
                                .with_offset(offset.0)
                                .with_timestamp(found.0)
                                .with_leader_epoch(epoch),
                            Ok(None) => response.with_offset(-1).with_timestamp(-1),
                            Err(e) => {
                                response.with_error_code(errors::code(errors::read_error(&e)))
                            }
                        },
                        // The tiered-storage specs (-4, -5) are not offered by the versions we
                        // advertise.
                        _ => response
                            .with_error_code(errors::code(ResponseError::UnsupportedVersion)),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
