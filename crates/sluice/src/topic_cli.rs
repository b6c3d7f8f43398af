//! `sluice topic create|list|describe|alter|delete|reassign|reassignments`: topic administration over the Kafka wire
//! protocol, shaped after Kafka's `kafka-topics.sh` and `kafka-configs.sh`. This module holds the
//! subcommands' dispatch and what they share (`KEY=VALUE` flags, Metadata for one topic, config
//! source names, error sentences); each subcommand has its own file.
//!
//! Every request goes to the bootstrap broker: Sluice runs one node, which is the controller and
//! every partition's leader. (A multi-broker version would send ListOffsets to partition leaders.)

mod alter;
mod create;
mod delete;
mod describe;
mod list;
mod reassign;

use std::collections::BTreeSet;

use anyhow::bail;
use clap::{Args, Subcommand};
use sluice_protocol::messages::metadata_request::MetadataRequestTopic;
use sluice_protocol::messages::metadata_response::MetadataResponseTopic;
use sluice_protocol::messages::MetadataRequest;
use sluice_protocol::StrBytes;

use crate::cli_common::{kafka_error, topic_name, CommonArgs};
use crate::client::Client;
use alter::AlterArgs;
use create::CreateArgs;
use delete::DeleteArgs;
use describe::DescribeArgs;
use list::ListArgs;
use reassign::{ReassignArgs, ReassignmentsArgs};

/// UNKNOWN_TOPIC_OR_PARTITION.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// DescribeConfigs / AlterConfigs resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;

/// Flags shared by every `sluice topic` subcommand.
#[derive(Debug, Args)]
pub(crate) struct TopicArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic (with --validate-only, only check that it could be created).
    Create(CreateArgs),
    /// List topics with their partition counts.
    List(ListArgs),
    /// Show a topic's partitions (leader, offsets, size) and its configs.
    Describe(DescribeArgs),
    /// Add partitions, set configs or delete config overrides.
    Alter(AlterArgs),
    /// Delete a topic and its data.
    Delete(DeleteArgs),
    /// Move a partition to other brokers (or cancel the move); the controller finishes it once
    /// the new replicas are in sync.
    Reassign(ReassignArgs),
    /// List the partition reassignments in progress.
    Reassignments(ReassignmentsArgs),
}

/// Runs a `sluice topic` subcommand to completion.
pub(crate) fn run(args: TopicArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let command = &args.command;
    crate::cli_common::run(common, move |mut client| async move {
        match command {
            TopicCommand::Create(create) => create::run(&mut client, create, common).await,
            TopicCommand::List(list) => list::run(&mut client, list, common).await,
            TopicCommand::Describe(describe) => describe::run(&mut client, describe, common).await,
            TopicCommand::Alter(alter) => alter::run(&mut client, alter, common).await,
            TopicCommand::Delete(delete) => delete::run(&mut client, delete, common).await,
            TopicCommand::Reassign(reassign) => {
                reassign::run_reassign(&mut client, reassign, common).await
            }
            TopicCommand::Reassignments(list) => {
                reassign::run_list(&mut client, list, common).await
            }
        }
    })
}

/// Parses `KEY=VALUE` (the value may hold `=` and may be empty; the key may not be empty).
fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err("expected KEY=VALUE, e.g. retention.ms=86400000".to_owned()),
    }
}

/// Fails when a config name is given twice (in `--config`/`--set` and `--delete-config`): which one
/// wins would otherwise depend on the broker.
fn check_unique<'a>(names: impl IntoIterator<Item = &'a str>) -> anyhow::Result<()> {
    let mut seen = BTreeSet::new();
    for name in names {
        if !seen.insert(name) {
            bail!("config {name} is given more than once");
        }
    }
    Ok(())
}

/// The sentence for a failed `action` on `topic`: `cannot create topic t: TOPIC_ALREADY_EXISTS
/// (36): ...`, or None when `code` is 0. An unknown topic without a broker message says so.
fn topic_error(action: &str, topic: &str, code: i16, message: Option<&StrBytes>) -> Option<String> {
    let mut error = kafka_error(code, message)?;
    if code == UNKNOWN_TOPIC_OR_PARTITION && message.is_none_or(|m| m.trim().is_empty()) {
        error.push_str(": the topic does not exist");
    }
    Some(format!("cannot {action} topic {topic}: {error}"))
}

/// Metadata v12 for one topic, without auto-creating it; fails when the broker reports an error
/// for the topic.
pub(crate) async fn topic_metadata(
    client: &mut Client,
    action: &str,
    topic: &str,
) -> anyhow::Result<MetadataResponseTopic> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
        ]))
        .with_allow_auto_topic_creation(false);
    let response = client.send(12, &request).await?;
    let Some(found) = response
        .topics
        .into_iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
    else {
        bail!("cannot {action} topic {topic}: the broker did not describe it");
    };
    if let Some(error) = topic_error(action, topic, found.error_code, None) {
        bail!(error);
    }
    Ok(found)
}

/// Kafka's name for a config source (`ConfigEntry.ConfigSource`), as DescribeConfigs numbers them.
fn config_source_name(source: i8) -> String {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG".to_owned(),
        2 => "DYNAMIC_BROKER_CONFIG".to_owned(),
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG".to_owned(),
        4 => "STATIC_BROKER_CONFIG".to_owned(),
        5 => "DEFAULT_CONFIG".to_owned(),
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG".to_owned(),
        7 => "CLIENT_METRICS_CONFIG".to_owned(),
        8 => "GROUP_CONFIG".to_owned(),
        -1 | 0 => "UNKNOWN".to_owned(),
        other => format!("UNKNOWN({other})"),
    }
}

/// "1 partition", "3 partitions".
fn partitions_phrase(count: i32) -> String {
    if count == 1 {
        "1 partition".to_owned()
    } else {
        format!("{count} partitions")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_key_value("retention.ms=60000").unwrap(),
            ("retention.ms".to_owned(), "60000".to_owned())
        );
        assert_eq!(
            parse_key_value("a=b=c").unwrap(),
            ("a".to_owned(), "b=c".to_owned())
        );
        assert_eq!(
            parse_key_value("empty=").unwrap(),
            ("empty".to_owned(), String::new())
        );
        assert!(parse_key_value("=1").is_err());
        assert!(parse_key_value("retention.ms").is_err());
    }

    #[test]
    fn repeated_config_names_are_refused() {
        assert!(check_unique(["a", "b"]).is_ok());
        let error = check_unique(["a", "b", "a"]).unwrap_err().to_string();
        assert_eq!(error, "config a is given more than once");
    }

    #[test]
    fn errors_name_the_action_and_the_topic() {
        assert_eq!(topic_error("create", "t", 0, None), None);
        assert_eq!(
            topic_error(
                "create",
                "t",
                36,
                Some(&StrBytes::from_static_str("topic `t` already exists"))
            )
            .as_deref(),
            Some("cannot create topic t: TOPIC_ALREADY_EXISTS (36): topic `t` already exists")
        );
        assert_eq!(
            topic_error("delete", "t", 3, None).as_deref(),
            Some("cannot delete topic t: UNKNOWN_TOPIC_OR_PARTITION (3): the topic does not exist")
        );
    }

    #[test]
    fn config_sources_use_kafkas_names() {
        assert_eq!(config_source_name(1), "DYNAMIC_TOPIC_CONFIG");
        assert_eq!(config_source_name(5), "DEFAULT_CONFIG");
        assert_eq!(config_source_name(42), "UNKNOWN(42)");
        assert_eq!(partitions_phrase(1), "1 partition");
        assert_eq!(partitions_phrase(4), "4 partitions");
    }
}
