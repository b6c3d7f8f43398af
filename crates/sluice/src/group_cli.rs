//! `sluice group list|describe|reset-offsets`: consumer-group administration over the Kafka wire
//! protocol, shaped after Kafka's `kafka-consumer-groups.sh`. This module holds the subcommands'
//! dispatch and the group requests they share (flags and output helpers are `cli_common`'s, shared
//! with `sluice topic`); each subcommand has its own file.
//!
//! Every request goes to the bootstrap broker: Sluice runs one node, which is every group's
//! coordinator and every partition's leader. (A multi-broker version would route with
//! FindCoordinator and Metadata leaders.)

mod describe;
mod list;
mod reset_offsets;
mod timestamp;

use std::collections::BTreeMap;

use anyhow::bail;
use clap::{Args, Subcommand};
use sluice_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use sluice_protocol::messages::{GroupId, OffsetFetchRequest};
use sluice_protocol::StrBytes;

// Shared with `sluice topic`; the subcommands import them from here.
use crate::cli_common::{
    by_topic, json, list_offsets, or_dash, table, topic_name, CommonArgs, Output, TopicPartition,
    EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};
use crate::client::{error_name, Client};
use describe::DescribeArgs;
use list::ListArgs;
use reset_offsets::ResetArgs;

/// Flags shared by every `sluice group` subcommand.
#[derive(Debug, Args)]
pub(crate) struct GroupArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: GroupCommand,
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

/// Runs a `sluice group` subcommand to completion.
pub(crate) fn run(args: GroupArgs) -> anyhow::Result<()> {
    let output = args.common.output;
    let command = &args.command;
    crate::cli_common::run(&args.common, move |mut client| async move {
        match command {
            GroupCommand::List(list) => list::run(&mut client, list, output).await,
            GroupCommand::Describe(describe) => describe::run(&mut client, describe, output).await,
            GroupCommand::ResetOffsets(reset) => {
                reset_offsets::run(&mut client, reset, output).await
            }
        }
    })
}

/// The group's committed offsets: of `partitions`, or of everything when None. Partitions without
/// a committed offset are left out.
pub(crate) async fn committed_offsets(
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

pub(crate) fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_owned()))
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
