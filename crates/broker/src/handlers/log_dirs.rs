//! DescribeLogDirs (the data directory, its partitions' sizes and free space) and
//! OffsetForLeaderEpoch (where a leader epoch ends in a partition's log).

use std::sync::Arc;

use sluice_protocol::error::ResponseError;
use sluice_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use sluice_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use sluice_protocol::messages::{
    DescribeLogDirsRequest, DescribeLogDirsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, TopicName,
};
use sluice_protocol::StrBytes;

use crate::broker::Broker;
use crate::errors;
use crate::request::Ctx;

pub(crate) fn describe_log_dirs(
    broker: &Arc<Broker>,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    // (topic, partitions) wanted; None = everything hosted.
    let wanted: Vec<(String, Option<Vec<i32>>)> = match request.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), Some(t.partitions)))
            .collect(),
        None => broker
            .metadata
            .topics()
            .into_iter()
            .map(|t| (t.name, None))
            .collect(),
    };
    let topics = wanted
        .iter()
        .filter_map(|(name, partitions)| {
            let hosted = broker.replicas.topic(name)?;
            let partitions = hosted
                .iter()
                .filter(|p| partitions.as_ref().is_none_or(|w| w.contains(&p.index)))
                .map(|p| {
                    DescribeLogDirsPartition::default()
                        .with_partition_index(p.index)
                        .with_partition_size(p.size_bytes() as i64)
                        .with_offset_lag(0)
                        .with_is_future_key(false)
                })
                .collect();
            Some(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name.clone())))
                    .with_partitions(partitions),
            )
        })
        .collect();
    let dir = broker.replicas.log_dir();
    let (total, usable) = dir.space().map_or((-1, -1), |(t, u)| (t as i64, u as i64));
    let path = std::fs::canonicalize(dir.path()).unwrap_or_else(|_| dir.path().to_path_buf());
    let mut results = vec![DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(path.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total)
        .with_usable_bytes(usable)];
    // An offline partition is reported as its own directory with Kafka's error for an offline
    // log directory: Sluice takes single partitions offline, where Kafka takes a whole
    // directory.
    for offline in broker.replicas.offline_partitions() {
        let asked = wanted.iter().any(|(name, partitions)| {
            *name == offline.topic
                && partitions
                    .as_ref()
                    .is_none_or(|w| w.contains(&offline.index))
        });
        if !asked {
            continue;
        }
        let partition_dir = path.join(format!("{}-{}", offline.topic, offline.index));
        results.push(
            DescribeLogDirsResult::default()
                .with_error_code(errors::code(ResponseError::KafkaStorageError))
                .with_log_dir(StrBytes::from_string(partition_dir.display().to_string()))
                .with_topics(vec![DescribeLogDirsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(offline.topic.clone())))
                    .with_partitions(vec![DescribeLogDirsPartition::default()
                        .with_partition_index(offline.index)
                        .with_partition_size(dir_size(&partition_dir))
                        .with_offset_lag(0)
                        .with_is_future_key(false)])])
                .with_total_bytes(total)
                .with_usable_bytes(usable),
        );
    }
    DescribeLogDirsResponse::default().with_results(results)
}

/// Bytes of the files directly in `dir` (an offline partition's, read without opening its log).
fn dir_size(dir: &std::path::Path) -> i64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len() as i64)
                .sum()
        })
        .unwrap_or(0)
}

/// OffsetForLeaderEpoch: where each asked epoch ends in the leader's log. Consumers ask with
/// `replica_id` -1 (KIP-320); a follower asks with its own id before truncating, which only
/// that node may do (`crate::auth`): any other caller claiming a replica gets
/// TOPIC_AUTHORIZATION_FAILED for every partition, as Kafka answers a principal without
/// CLUSTER_ACTION.
pub(crate) fn offset_for_leader_epoch(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let replica_id = request.replica_id.0;
    let forged = replica_id >= 0 && !ctx.principal.may_act_as_replica(replica_id);
    if forged {
        crate::auth::warn_refused(
            &format!("OffsetForLeaderEpoch as replica {replica_id}"),
            &ctx.principal,
            ctx.client_host,
        );
    }
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .into_iter()
                .map(|wanted| {
                    let answer = EpochEndOffset::default().with_partition(wanted.partition);
                    let undefined = answer.clone().with_leader_epoch(-1).with_end_offset(-1);
                    if forged {
                        return undefined.with_error_code(errors::code(
                            ResponseError::TopicAuthorizationFailed,
                        ));
                    }
                    let partition = match broker.hosted_partition(&topic.topic.0, wanted.partition)
                    {
                        Ok(partition) => partition,
                        Err(e) => return undefined.with_error_code(errors::code(e)),
                    };
                    if let Err(e) = crate::handlers::fetch::check_leader(
                        &partition,
                        wanted.current_leader_epoch,
                    ) {
                        return undefined.with_error_code(errors::code(e));
                    }
                    // Kafka's semantics: the largest epoch at or below the one asked for, and
                    // where it ends (the log end for the current epoch); -1/-1 when the log has
                    // no epoch that early.
                    let (epoch, end) = partition
                        .end_offset_for_epoch(sluice_log::LeaderEpoch(wanted.leader_epoch));
                    answer.with_leader_epoch(epoch.0).with_end_offset(end.0)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
