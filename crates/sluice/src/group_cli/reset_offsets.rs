//! `sluice group reset-offsets`: computes new committed offsets for a group's partitions, prints
//! the plan, and with `--execute` commits it (OffsetCommit without a member, which a broker accepts
//! only while the group has no active members).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::bail;
use clap::Args;
use serde::Serialize;
use sluice_protocol::messages::metadata_request::MetadataRequestTopic;
use sluice_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use sluice_protocol::messages::{MetadataRequest, OffsetCommitRequest};
use sluice_protocol::StrBytes;

use super::timestamp::parse_timestamp_ms;
use super::{
    committed_offsets, group_id, json, list_offsets, table, topic_name, Output, TopicPartition,
    EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};
use crate::client::{error_name, Client};

/// UNKNOWN_TOPIC_OR_PARTITION.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// UNKNOWN_MEMBER_ID: a "simple" commit (no member, generation -1) to a group with members.
const UNKNOWN_MEMBER_ID: i16 = 25;

#[derive(Debug, Args)]
pub(super) struct ResetArgs {
    /// The group id.
    group: String,
    /// A topic's partitions to reset: `TOPIC` for all of them or `TOPIC:0,2` (repeatable).
    #[arg(
        long = "topic",
        value_name = "TOPIC[:P,P]",
        value_parser = parse_topic_spec,
        required_unless_present = "all_topics"
    )]
    topics: Vec<TopicSpec>,
    /// Every partition the group has a committed offset for.
    #[arg(long, conflicts_with = "topics")]
    all_topics: bool,
    #[command(flatten)]
    target: TargetArgs,
    /// Commit the new offsets; without it the plan is only printed.
    #[arg(long)]
    execute: bool,
}

/// Exactly one way of choosing the new offsets.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct TargetArgs {
    /// The log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// The log end offset.
    #[arg(long)]
    to_latest: bool,
    /// This offset (clamped to the partition's offsets).
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// The committed offset plus N (N may be negative).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    shift_by: Option<i64>,
    /// The first offset at or after a time: RFC 3339 (`2024-05-01T12:00:00Z`) or epoch ms.
    #[arg(long, value_name = "TIME", value_parser = parse_timestamp_ms)]
    to_datetime: Option<i64>,
}

/// The chosen way of computing new offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Earliest,
    Latest,
    Offset(i64),
    ShiftBy(i64),
    Timestamp(i64),
}

impl TargetArgs {
    fn target(&self) -> Target {
        match (self.to_offset, self.shift_by, self.to_datetime) {
            (Some(offset), _, _) => Target::Offset(offset),
            (_, Some(shift), _) => Target::ShiftBy(shift),
            (_, _, Some(ms)) => Target::Timestamp(ms),
            _ if self.to_latest => Target::Latest,
            // clap's group guarantees one is set; --to-earliest is the remaining one.
            _ => Target::Earliest,
        }
    }
}

/// `--topic TOPIC` or `--topic TOPIC:0,1`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TopicSpec {
    topic: String,
    /// None means every partition of the topic.
    partitions: Option<Vec<i32>>,
}

/// The offsets a partition holds: [log start, log end].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OffsetRange {
    earliest: i64,
    latest: i64,
}

impl OffsetRange {
    fn clamp(self, offset: i64) -> i64 {
        offset.clamp(self.earliest, self.latest.max(self.earliest))
    }
}

#[derive(Debug, Serialize)]
struct ResetPlan {
    group: String,
    executed: bool,
    partitions: Vec<PlannedOffset>,
}

#[derive(Debug, Serialize)]
struct PlannedOffset {
    topic: String,
    partition: i32,
    new_offset: i64,
}

/// Plans new offsets and, with `--execute`, commits them.
pub(super) async fn run(
    client: &mut Client,
    args: &ResetArgs,
    output: Output,
) -> anyhow::Result<String> {
    let group = args.group.as_str();
    let target = args.target.target();
    let partitions: Vec<TopicPartition> = if args.all_topics {
        let committed = committed_offsets(client, group, None).await?;
        if committed.is_empty() {
            bail!("group {group} has no committed offsets; name partitions with --topic");
        }
        committed.into_keys().collect()
    } else {
        expand_topics(client, &args.topics).await?
    };
    let ranges = offset_ranges(client, &partitions).await?;
    let new_offsets: BTreeMap<TopicPartition, i64> = match target {
        Target::Earliest => ranges
            .iter()
            .map(|(tp, r)| (tp.clone(), r.earliest))
            .collect(),
        Target::Latest => ranges
            .iter()
            .map(|(tp, r)| (tp.clone(), r.latest))
            .collect(),
        Target::Offset(offset) => ranges
            .iter()
            .map(|(tp, r)| (tp.clone(), r.clamp(offset)))
            .collect(),
        Target::ShiftBy(shift) => {
            let committed = committed_offsets(client, group, Some(&partitions)).await?;
            let mut out = BTreeMap::new();
            for (tp, range) in &ranges {
                let Some(current) = committed.get(tp) else {
                    bail!("cannot shift {tp}: group {group} has no committed offset for it");
                };
                out.insert(tp.clone(), range.clamp(current.saturating_add(shift)));
            }
            out
        }
        Target::Timestamp(ms) => {
            let found = list_offsets(client, &partitions, ms).await?;
            let mut out = BTreeMap::new();
            for (tp, range) in &ranges {
                let offset = ok_offset(tp, found.get(tp))?;
                // -1: nothing at or after the time, so the consumer starts at the end.
                let offset = if offset < 0 { range.latest } else { offset };
                out.insert(tp.clone(), range.clamp(offset));
            }
            out
        }
    };
    if args.execute {
        commit_offsets(client, group, &new_offsets).await?;
    } else {
        eprintln!("Dry run: nothing committed. Add --execute to commit these offsets.");
    }
    let plan = ResetPlan {
        group: group.to_owned(),
        executed: args.execute,
        partitions: new_offsets
            .into_iter()
            .map(|(tp, new_offset)| PlannedOffset {
                topic: tp.topic,
                partition: tp.partition,
                new_offset,
            })
            .collect(),
    };
    if output == Output::Json {
        return json(&plan);
    }
    let rows: Vec<Vec<String>> = plan
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                p.new_offset.to_string(),
            ]
        })
        .collect();
    Ok(table(&["TOPIC", "PARTITION", "NEW-OFFSET"], &rows))
}

/// Commits `offsets` as a "simple" (memberless) commit, which a broker accepts only while the
/// group has no members.
async fn commit_offsets(
    client: &mut Client,
    group: &str,
    offsets: &BTreeMap<TopicPartition, i64>,
) -> anyhow::Result<()> {
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for (tp, &offset) in offsets {
        topics.entry(&tp.topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(tp.partition)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(StrBytes::from_static_str(""))),
        );
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::from_static_str(""))
        .with_group_instance_id(None)
        .with_retention_time_ms(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response = client.send(8, &request).await?;
    let mut failures = Vec::new();
    for topic in &response.topics {
        for p in &topic.partitions {
            match p.error_code {
                0 => {}
                UNKNOWN_MEMBER_ID => bail!("group {group} is active; stop its consumers first"),
                code => failures.push(format!(
                    "{}: {}",
                    TopicPartition::new(topic.name.0.as_str(), p.partition_index),
                    error_name(code).unwrap_or_default()
                )),
            }
        }
    }
    if !failures.is_empty() {
        bail!(
            "cannot commit offsets for group {group}: {}",
            failures.join(", ")
        );
    }
    Ok(())
}

/// Turns `--topic` specs into partitions, checking each against the broker's metadata.
async fn expand_topics(
    client: &mut Client,
    specs: &[TopicSpec],
) -> anyhow::Result<Vec<TopicPartition>> {
    let names: BTreeSet<&str> = specs.iter().map(|s| s.topic.as_str()).collect();
    let request = MetadataRequest::default()
        .with_topics(Some(
            names
                .iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                .collect(),
        ))
        .with_allow_auto_topic_creation(false);
    let response = client.send(12, &request).await?;
    let mut known: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for topic in response.topics {
        let name = topic.name.map(|n| n.0.to_string()).unwrap_or_default();
        match topic.error_code {
            0 => {}
            UNKNOWN_TOPIC_OR_PARTITION => bail!("topic {name} does not exist"),
            code => bail!(
                "cannot read metadata of topic {name}: {}",
                error_name(code).unwrap_or_default()
            ),
        }
        known.insert(
            name,
            topic.partitions.iter().map(|p| p.partition_index).collect(),
        );
    }
    let mut out = BTreeSet::new();
    for spec in specs {
        let Some(all) = known.get(&spec.topic) else {
            bail!("topic {} does not exist", spec.topic);
        };
        match &spec.partitions {
            None => out.extend(all.iter().map(|&p| TopicPartition::new(&spec.topic, p))),
            Some(wanted) => {
                for &p in wanted {
                    if !all.contains(&p) {
                        bail!(
                            "topic {} has no partition {p} (it has {} partitions)",
                            spec.topic,
                            all.len()
                        );
                    }
                    out.insert(TopicPartition::new(&spec.topic, p));
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

fn parse_topic_spec(value: &str) -> Result<TopicSpec, String> {
    let (topic, partitions) = match value.split_once(':') {
        None => (value, None),
        Some((topic, list)) => {
            let partitions = list
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<i32>()
                        .ok()
                        .filter(|p| *p >= 0)
                        .ok_or_else(|| format!("`{p}` is not a partition number"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            (topic, Some(partitions))
        }
    };
    if topic.is_empty() {
        return Err("the topic name is empty".to_owned());
    }
    Ok(TopicSpec {
        topic: topic.to_owned(),
        partitions,
    })
}

/// [log start, log end] of every partition; any partition the broker cannot answer for fails.
async fn offset_ranges(
    client: &mut Client,
    partitions: &[TopicPartition],
) -> anyhow::Result<BTreeMap<TopicPartition, OffsetRange>> {
    let earliest = list_offsets(client, partitions, EARLIEST_TIMESTAMP).await?;
    let latest = list_offsets(client, partitions, LATEST_TIMESTAMP).await?;
    partitions
        .iter()
        .map(|tp| {
            let range = OffsetRange {
                earliest: ok_offset(tp, earliest.get(tp))?,
                latest: ok_offset(tp, latest.get(tp))?,
            };
            Ok((tp.clone(), range))
        })
        .collect()
}

fn ok_offset(tp: &TopicPartition, answer: Option<&Result<i64, String>>) -> anyhow::Result<i64> {
    match answer {
        Some(Ok(offset)) => Ok(*offset),
        Some(Err(error)) => bail!("cannot list offsets of {tp}: {error}"),
        None => bail!("the broker did not answer for {tp}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_specs() {
        assert_eq!(
            parse_topic_spec("orders").unwrap(),
            TopicSpec {
                topic: "orders".into(),
                partitions: None
            }
        );
        assert_eq!(
            parse_topic_spec("orders:0,2").unwrap().partitions,
            Some(vec![0, 2])
        );
        assert!(parse_topic_spec("orders:").is_err());
        assert!(parse_topic_spec("orders:x").is_err());
        assert!(parse_topic_spec("orders:-1").is_err());
        assert!(parse_topic_spec(":1").is_err());
    }

    #[test]
    fn offsets_clamp_to_the_log() {
        let range = OffsetRange {
            earliest: 10,
            latest: 20,
        };
        assert_eq!(range.clamp(5), 10);
        assert_eq!(range.clamp(15), 15);
        assert_eq!(range.clamp(25), 20);
        let empty = OffsetRange {
            earliest: 7,
            latest: 7,
        };
        assert_eq!(empty.clamp(-3), 7);
    }
}
