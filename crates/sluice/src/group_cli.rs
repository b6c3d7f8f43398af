//! `sluice group list|describe|reset-offsets`: consumer-group administration over the Kafka wire
//! protocol, shaped after Kafka's `kafka-consumer-groups.sh`. This module holds the flags, the
//! requests the subcommands share and the output helpers; each subcommand has its own file.
//!
//! Every request goes to the bootstrap broker: Sluice runs one node, which is every group's
//! coordinator and every partition's leader. (A multi-broker version would route with
//! FindCoordinator and Metadata leaders.)

mod describe;
mod list;
mod reset_offsets;
mod timestamp;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    BrokerId, GroupId, ListOffsetsRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use crate::client::{error_name, Client};
use describe::DescribeArgs;
use list::ListArgs;
use reset_offsets::ResetArgs;

/// ListOffsets timestamp asking for the log end offset.
const LATEST_TIMESTAMP: i64 = -1;
/// ListOffsets timestamp asking for the log start offset.
const EARLIEST_TIMESTAMP: i64 = -2;

/// Flags shared by every `sluice group` subcommand.
#[derive(Debug, Args)]
pub(crate) struct GroupArgs {
    /// The broker to ask.
    #[arg(
        long,
        global = true,
        env = "SLUICE_BOOTSTRAP_SERVER",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    bootstrap_server: String,
    /// Output format: aligned columns, or JSON for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Bound on connecting and on each request's answer.
    #[arg(long, global = true, default_value_t = 10_000, value_name = "MS")]
    timeout_ms: u64,
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// List groups with their state and protocol type.
    List(ListArgs),
    /// Show a group's members and, per partition, committed offset, log end offset and lag.
    Describe(DescribeArgs),
    /// Plan (and with --execute, commit) new offsets for a group without active members.
    ResetOffsets(ResetArgs),
}

/// One partition of one topic; orders by topic, then partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct TopicPartition {
    topic: String,
    partition: i32,
}

impl TopicPartition {
    fn new(topic: impl Into<String>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Runs a `sluice group` subcommand to completion.
pub(crate) fn run(args: GroupArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let timeout = Duration::from_millis(args.timeout_ms);
        let mut client = Client::connect(&args.bootstrap_server, timeout).await?;
        let text = match &args.command {
            GroupCommand::List(list) => list::run(&mut client, list, args.output).await?,
            GroupCommand::Describe(describe) => {
                describe::run(&mut client, describe, args.output).await?
            }
            GroupCommand::ResetOffsets(reset) => {
                reset_offsets::run(&mut client, reset, args.output).await?
            }
        };
        write_stdout(&text)
    })
}

/// Prints the result; a closed pipe (`| head`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// The group's committed offsets: of `partitions`, or of everything when None. Partitions without
/// a committed offset are left out.
async fn committed_offsets(
    client: &mut Client,
    group: &str,
    partitions: Option<&[TopicPartition]>,
) -> anyhow::Result<BTreeMap<TopicPartition, i64>> {
    let topics = partitions.map(|partitions| {
        by_topic(partitions)
            .into_iter()
            .map(|(topic, indexes)| {
                OffsetFetchRequestTopic::default()
                    .with_name(topic_name(topic))
                    .with_partition_indexes(indexes)
            })
            .collect()
    });
    let request = OffsetFetchRequest::default()
        .with_group_id(group_id(group))
        .with_topics(topics)
        .with_require_stable(false);
    let response = client.send(7, &request).await?;
    if let Some(error) = error_name(response.error_code) {
        bail!("cannot fetch committed offsets of group {group}: {error}");
    }
    let mut out = BTreeMap::new();
    for topic in response.topics {
        for p in topic.partitions {
            let tp = TopicPartition::new(topic.name.0.as_str(), p.partition_index);
            if let Some(error) = error_name(p.error_code) {
                bail!("cannot fetch the committed offset of {tp} for group {group}: {error}");
            }
            if p.committed_offset >= 0 {
                out.insert(tp, p.committed_offset);
            }
        }
    }
    Ok(out)
}

/// ListOffsets for `timestamp` (or [`LATEST_TIMESTAMP`], [`EARLIEST_TIMESTAMP`]); per partition the
/// offset, or the error's name.
async fn list_offsets(
    client: &mut Client,
    partitions: &[TopicPartition],
    timestamp: i64,
) -> anyhow::Result<BTreeMap<TopicPartition, Result<i64, String>>> {
    if partitions.is_empty() {
        return Ok(BTreeMap::new());
    }
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(0)
        .with_topics(
            by_topic(partitions)
                .into_iter()
                .map(|(topic, indexes)| {
                    ListOffsetsTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(
                            indexes
                                .into_iter()
                                .map(|p| {
                                    ListOffsetsPartition::default()
                                        .with_partition_index(p)
                                        .with_current_leader_epoch(-1)
                                        .with_timestamp(timestamp)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let response = client.send(6, &request).await?;
    let mut out = BTreeMap::new();
    for topic in response.topics {
        for p in topic.partitions {
            let tp = TopicPartition::new(topic.name.0.as_str(), p.partition_index);
            let result = match error_name(p.error_code) {
                Some(error) => Err(error),
                None => Ok(p.offset),
            };
            out.insert(tp, result);
        }
    }
    Ok(out)
}

fn by_topic(partitions: &[TopicPartition]) -> BTreeMap<&str, Vec<i32>> {
    let mut out: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        out.entry(tp.topic.as_str()).or_default().push(tp.partition);
    }
    out
}

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_owned()))
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

fn json(value: &impl Serialize) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(value).context("cannot write JSON")?;
    text.push('\n');
    Ok(text)
}

fn or_dash(value: String) -> String {
    if value.is_empty() {
        "-".to_owned()
    } else {
        value
    }
}

/// Left-aligned columns two spaces apart, header first.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let text = table(&["A", "LONGER"], &[vec!["wide-cell".into(), "x".into()]]);
        assert_eq!(text, "A          LONGER\nwide-cell  x\n");
    }
}
