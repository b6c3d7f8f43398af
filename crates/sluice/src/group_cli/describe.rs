//! `sluice group describe`: a group's state and members (DescribeGroups), its committed offsets
//! (OffsetFetch) and the log end offsets (ListOffsets), joined into lag per partition.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use sluice_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use sluice_protocol::messages::DescribeGroupsRequest;

use super::{
    committed_offsets, group_id, json, list_offsets, or_dash, table, Output, TopicPartition,
    LATEST_TIMESTAMP,
};
use crate::client::{error_name, Client};
use sluice_broker::inspect::groups::decode_consumer_assignment as decode_assignment;

/// GROUP_ID_NOT_FOUND.
const GROUP_ID_NOT_FOUND: i16 = 69;

#[derive(Debug, Args)]
pub(super) struct DescribeArgs {
    /// The group id.
    group: String,
}

#[derive(Debug, Serialize)]
struct GroupDescription {
    group: String,
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<MemberDescription>,
    partitions: Vec<PartitionLag>,
}

#[derive(Debug, Clone, Serialize)]
struct MemberDescription {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    host: String,
    /// None when the assignment bytes could not be decoded as a consumer assignment.
    assignment: Option<Vec<AssignedPartition>>,
}

#[derive(Debug, Clone, Serialize)]
struct AssignedPartition {
    topic: String,
    partition: i32,
}

#[derive(Debug, Serialize)]
struct PartitionLag {
    topic: String,
    partition: i32,
    current_offset: Option<i64>,
    log_end_offset: Option<i64>,
    lag: Option<i64>,
    consumer_id: Option<String>,
    host: Option<String>,
    client_id: Option<String>,
}

/// Describes one group, with lag per partition.
pub(super) async fn run(
    client: &mut Client,
    args: &DescribeArgs,
    output: Output,
) -> anyhow::Result<String> {
    let group = args.group.as_str();
    let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
    let response = client.send(5, &request).await?;
    let described = response
        .groups
        .into_iter()
        .find(|g| g.group_id.0.as_str() == group)
        .with_context(|| format!("the broker did not describe group {group}"))?;
    match described.error_code {
        0 => {}
        GROUP_ID_NOT_FOUND => bail!("group {group} does not exist"),
        code => bail!(
            "cannot describe group {group}: {}",
            error_name(code).unwrap_or_default()
        ),
    }
    let committed = committed_offsets(client, group, None).await?;
    if described.group_state.as_str() == "Dead" && committed.is_empty() {
        bail!("group {group} does not exist");
    }
    let members: Vec<MemberDescription> = described.members.iter().map(member).collect();
    let mut partitions: BTreeSet<TopicPartition> = committed.keys().cloned().collect();
    for m in &members {
        for a in m.assignment.iter().flatten() {
            partitions.insert(TopicPartition::new(&a.topic, a.partition));
        }
    }
    let ends = list_offsets(
        client,
        &partitions.iter().cloned().collect::<Vec<_>>(),
        LATEST_TIMESTAMP,
    )
    .await?;
    let description = describe(&described, members, &committed, &ends);
    match output {
        Output::Json => json(&description),
        Output::Text => Ok(describe_text(&description)),
    }
}

/// Joins a group's members, committed offsets and log end offsets into one row per partition.
fn describe(
    described: &DescribedGroup,
    members: Vec<MemberDescription>,
    committed: &BTreeMap<TopicPartition, i64>,
    ends: &BTreeMap<TopicPartition, Result<i64, String>>,
) -> GroupDescription {
    let mut owner: BTreeMap<TopicPartition, &MemberDescription> = BTreeMap::new();
    for m in &members {
        for a in m.assignment.iter().flatten() {
            owner.insert(TopicPartition::new(&a.topic, a.partition), m);
        }
    }
    let keys: BTreeSet<&TopicPartition> = committed.keys().chain(owner.keys()).collect();
    let partitions = keys
        .into_iter()
        .map(|tp| {
            let current_offset = committed.get(tp).copied();
            let log_end_offset = ends.get(tp).and_then(|r| r.as_ref().ok()).copied();
            let member = owner.get(tp);
            PartitionLag {
                topic: tp.topic.clone(),
                partition: tp.partition,
                current_offset,
                log_end_offset,
                lag: current_offset.zip(log_end_offset).map(|(c, e)| e - c),
                consumer_id: member.map(|m| m.member_id.clone()),
                host: member.map(|m| m.host.clone()),
                client_id: member.map(|m| m.client_id.clone()),
            }
        })
        .collect();
    GroupDescription {
        group: described.group_id.0.to_string(),
        state: described.group_state.to_string(),
        protocol_type: described.protocol_type.to_string(),
        protocol: described.protocol_data.to_string(),
        members,
        partitions,
    }
}

fn describe_text(d: &GroupDescription) -> String {
    let mut out = String::new();
    let members = match d.members.len() {
        0 => "no active members".to_owned(),
        1 => "1 member".to_owned(),
        n => format!("{n} members"),
    };
    let protocol = if d.protocol.is_empty() {
        String::new()
    } else {
        format!(", protocol {}", d.protocol)
    };
    let _ = writeln!(
        out,
        "Consumer group '{}' is {} with {members}{protocol}.\n",
        d.group, d.state
    );
    let number = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let text = |v: &Option<String>| v.clone().map_or_else(|| "-".to_owned(), or_dash);
    let mut rows: Vec<Vec<String>> = d
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                number(p.current_offset),
                number(p.log_end_offset),
                number(p.lag),
                text(&p.consumer_id),
                text(&p.host),
                text(&p.client_id),
            ]
        })
        .collect();
    // Members that own nothing still show up, as kafka-consumer-groups.sh does.
    for m in &d.members {
        if m.assignment.as_ref().is_some_and(|a| !a.is_empty()) {
            continue;
        }
        let mut row = vec!["-".to_owned(); 5];
        row.extend([
            m.member_id.clone(),
            or_dash(m.host.clone()),
            or_dash(m.client_id.clone()),
        ]);
        rows.push(row);
    }
    out.push_str(&table(
        &[
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
        ],
        &rows,
    ));
    out
}

fn member(m: &DescribedGroupMember) -> MemberDescription {
    MemberDescription {
        member_id: m.member_id.to_string(),
        group_instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: m.client_id.to_string(),
        host: m.client_host.to_string(),
        assignment: decode_assignment(&m.member_assignment).map(|assignment| {
            assignment
                .assigned_partitions
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(|&partition| AssignedPartition {
                        topic: t.topic.0.to_string(),
                        partition,
                    })
                })
                .collect()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::StrBytes;

    #[test]
    fn lag_is_end_minus_committed() {
        let described = DescribedGroup::default()
            .with_group_id(group_id("g"))
            .with_group_state(StrBytes::from_static_str("Stable"));
        let members = vec![MemberDescription {
            member_id: "m-1".into(),
            group_instance_id: None,
            client_id: "c".into(),
            host: "/127.0.0.1".into(),
            assignment: Some(vec![AssignedPartition {
                topic: "t".into(),
                partition: 1,
            }]),
        }];
        let committed = BTreeMap::from([(TopicPartition::new("t", 0), 4)]);
        let ends = BTreeMap::from([
            (TopicPartition::new("t", 0), Ok(10)),
            (TopicPartition::new("t", 1), Ok(3)),
        ]);
        let d = describe(&described, members, &committed, &ends);
        assert_eq!(d.partitions.len(), 2);
        assert_eq!(
            (d.partitions[0].lag, d.partitions[0].consumer_id.as_deref()),
            (Some(6), None)
        );
        assert_eq!(
            (
                d.partitions[1].current_offset,
                d.partitions[1].lag,
                d.partitions[1].consumer_id.as_deref()
            ),
            (None, None, Some("m-1"))
        );
        let text = describe_text(&d);
        assert!(text.contains("is Stable with 1 member"), "{text}");
        assert!(text
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["t", "0", "4", "10", "6", "-", "-", "-"]));
    }
}
