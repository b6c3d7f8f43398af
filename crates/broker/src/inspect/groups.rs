//! Consumer groups for the console: each group's state and members (client id, host, assigned
//! partitions decoded from the consumer protocol), and per partition the committed offset, the
//! log end offset and the lag between them.

use bytes::{Buf, Bytes};
use serde::Serialize;
use sluice_protocol::messages::ConsumerProtocolAssignment;
use sluice_protocol::{Decodable, Message};

use super::InspectError;
use crate::broker::Broker;
use crate::group::GroupSummary;

/// A group in the list.
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    pub group_id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: usize,
    /// Lag summed over the partitions with a committed offset.
    pub total_lag: i64,
}

/// A member and what it was assigned.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// `(topic, partition)` pairs; None when the assignment is not the consumer protocol's.
    pub assignment: Option<Vec<AssignedPartition>>,
}

/// One partition in a member's assignment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AssignedPartition {
    pub topic: String,
    pub partition: i32,
}

/// A group's committed position in one partition.
#[derive(Debug, Clone, Serialize)]
pub struct OffsetView {
    pub topic: String,
    pub partition: i32,
    pub committed_offset: i64,
    /// None when the partition no longer exists.
    pub log_end_offset: Option<i64>,
    pub lag: Option<i64>,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// One group in full.
#[derive(Debug, Clone, Serialize)]
pub struct GroupDetail {
    #[serde(flatten)]
    pub group: GroupView,
    pub member_list: Vec<MemberView>,
    pub offsets: Vec<OffsetView>,
}

fn offsets(broker: &Broker, group_id: &str) -> Vec<OffsetView> {
    broker
        .groups
        .fetch_offsets(group_id, None)
        .into_iter()
        .filter_map(|((topic, partition), committed)| {
            let committed = committed?;
            let log_end_offset = broker
                .replicas
                .partition(&topic, partition)
                .filter(|p| !p.is_deleted())
                .map(|p| p.high_watermark().0);
            Some(OffsetView {
                lag: log_end_offset.map(|end| (end - committed.offset).max(0)),
                topic,
                partition,
                committed_offset: committed.offset,
                log_end_offset,
                metadata: committed.metadata,
                commit_timestamp: committed.commit_timestamp,
            })
        })
        .collect()
}

fn group_view(summary: &GroupSummary, offsets: &[OffsetView]) -> GroupView {
    GroupView {
        group_id: summary.group_id.clone(),
        state: summary.state.name(),
        protocol_type: summary.protocol_type.clone(),
        protocol: summary.protocol.clone(),
        members: summary.members.len(),
        total_lag: offsets.iter().filter_map(|o| o.lag).sum(),
    }
}

/// Every group this broker coordinates, by id.
pub fn groups(broker: &Broker) -> Vec<GroupView> {
    broker
        .groups
        .list()
        .iter()
        .map(|summary| group_view(summary, &offsets(broker, &summary.group_id)))
        .collect()
}

/// How many groups this broker coordinates.
pub fn group_count(broker: &Broker) -> usize {
    broker.groups.list().len()
}

/// One group with its members and committed offsets.
pub fn group(broker: &Broker, group_id: &str) -> Result<GroupDetail, InspectError> {
    let summary = broker
        .groups
        .describe(group_id)
        .ok_or_else(|| InspectError::UnknownGroup(group_id.to_owned()))?;
    let offsets = offsets(broker, group_id);
    let consumer = summary.protocol_type == "consumer" || summary.protocol_type.is_empty();
    Ok(GroupDetail {
        group: group_view(&summary, &offsets),
        member_list: summary
            .members
            .iter()
            .map(|m| MemberView {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                assignment: consumer.then(|| decode_assignment(&m.assignment)).flatten(),
            })
            .collect(),
        offsets,
    })
}

/// Decodes a member's assignment as the consumer protocol's: an i16 version, then the body.
/// Versions newer than the codec knows are read as its newest (their fields only append, as in
/// Kafka's `ConsumerProtocol`). None when the bytes are not a consumer assignment; empty bytes are
/// an empty assignment. Shared with the `sluice group` CLI.
pub fn decode_consumer_assignment(bytes: &Bytes) -> Option<ConsumerProtocolAssignment> {
    if bytes.is_empty() {
        return Some(ConsumerProtocolAssignment::default());
    }
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return None;
    }
    let version = buf.get_i16();
    if version < 0 {
        return None;
    }
    let version = version.min(ConsumerProtocolAssignment::VERSIONS.max);
    ConsumerProtocolAssignment::decode(&mut buf, version).ok()
}

/// A member's assigned partitions, flattened.
fn decode_assignment(bytes: &Bytes) -> Option<Vec<AssignedPartition>> {
    let assignment = decode_consumer_assignment(bytes)?;
    Some(
        assignment
            .assigned_partitions
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|&p| AssignedPartition {
                    topic: t.topic.0.to_string(),
                    partition: p,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use sluice_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use sluice_protocol::messages::TopicName;
    use sluice_protocol::{Encodable, StrBytes};

    #[test]
    fn assignments_decode_from_the_consumer_protocol() {
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![0, 2]),
        ]);
        let mut buf = bytes::BytesMut::new();
        buf.put_i16(1);
        assignment.encode(&mut buf, 1).unwrap();
        let decoded = decode_assignment(&buf.freeze()).unwrap();
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[1].partition, 2);
        assert_eq!(decode_assignment(&Bytes::new()), Some(Vec::new()));
        assert_eq!(decode_assignment(&Bytes::from_static(&[0xff])), None);
        for version in [0i16, 3] {
            let mut buf = bytes::BytesMut::new();
            buf.put_i16(version);
            assignment.encode(&mut buf, version).unwrap();
            assert!(decode_consumer_assignment(&buf.freeze()).is_some());
        }
        // A newer version is read as the newest known one.
        let mut buf = bytes::BytesMut::new();
        buf.put_i16(9);
        assignment.encode(&mut buf, 3).unwrap();
        assert!(decode_consumer_assignment(&buf.freeze()).is_some());
        assert!(decode_consumer_assignment(&Bytes::from_static(&[0])).is_none());
        assert!(decode_consumer_assignment(&Bytes::from_static(&[0xff, 0xff, 1])).is_none());
        assert!(decode_consumer_assignment(&Bytes::from_static(&[0, 0, 0, 0, 0, 9])).is_none());
    }
}
