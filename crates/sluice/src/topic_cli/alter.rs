//! `sluice topic alter`: more partitions (CreatePartitions v3) and config changes
//! (IncrementalAlterConfigs v1, SET and DELETE). When both are asked for, both are validated by
//! the broker before either is applied, so a mistake in one changes nothing.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use clap::{ArgGroup, Args};
use serde::Serialize;
use sluice_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use sluice_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use sluice_protocol::messages::{CreatePartitionsRequest, IncrementalAlterConfigsRequest};
use sluice_protocol::StrBytes;

use super::{check_unique, parse_key_value, partitions_phrase, topic_error, RESOURCE_TOPIC};
use crate::cli_common::{json, topic_name, CommonArgs, Output};
use crate::client::Client;

/// IncrementalAlterConfigs operation: set a value.
const OP_SET: i8 = 0;
/// IncrementalAlterConfigs operation: remove the override (back to the default).
const OP_DELETE: i8 = 1;

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["partitions", "set", "delete_config"])
))]
pub(super) struct AlterArgs {
    /// The topic's name.
    topic: String,
    /// The new total number of partitions (partitions can only be added).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    partitions: Option<i32>,
    /// Set a topic config, e.g. `retention.ms=86400000` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    set: Vec<(String, String)>,
    /// Remove a topic config override, back to the broker's default (repeatable).
    #[arg(long = "delete-config", value_name = "KEY")]
    delete_config: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Altered {
    topic: String,
    /// The new partition count, when it was changed.
    partitions: Option<i32>,
    set: BTreeMap<String, String>,
    deleted: Vec<String>,
}

/// Applies the requested changes to one topic.
pub(super) async fn run(
    client: &mut Client,
    args: &AlterArgs,
    common: &CommonArgs,
) -> anyhow::Result<String> {
    let topic = args.topic.as_str();
    check_unique(
        args.set
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(args.delete_config.iter().map(String::as_str)),
    )?;
    let changes_configs = !args.set.is_empty() || !args.delete_config.is_empty();
    let both = changes_configs && args.partitions.is_some();
    if both {
        alter_configs(client, args, true).await?;
        add_partitions(client, args, common, true).await?;
    }
    if changes_configs {
        alter_configs(client, args, false).await?;
    }
    add_partitions(client, args, common, false).await?;
    let altered = Altered {
        topic: topic.to_owned(),
        partitions: args.partitions,
        set: args.set.iter().cloned().collect(),
        deleted: args.delete_config.clone(),
    };
    match common.output {
        Output::Json => json(&altered),
        Output::Text => Ok(altered_text(&altered)),
    }
}

/// IncrementalAlterConfigs with the `--set` and `--delete-config` operations.
async fn alter_configs(
    client: &mut Client,
    args: &AlterArgs,
    validate_only: bool,
) -> anyhow::Result<()> {
    let topic = args.topic.as_str();
    let sets = args.set.iter().map(|(name, value)| {
        AlterableConfig::default()
            .with_name(StrBytes::from_string(name.clone()))
            .with_config_operation(OP_SET)
            .with_value(Some(StrBytes::from_string(value.clone())))
    });
    let deletes = args.delete_config.iter().map(|name| {
        AlterableConfig::default()
            .with_name(StrBytes::from_string(name.clone()))
            .with_config_operation(OP_DELETE)
            .with_value(None)
    });
    let request = IncrementalAlterConfigsRequest::default()
        .with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_owned()))
            .with_configs(sets.chain(deletes).collect())])
        .with_validate_only(validate_only);
    let response = client.send(1, &request).await?;
    let result = response
        .responses
        .into_iter()
        .find(|r| r.resource_type == RESOURCE_TOPIC && r.resource_name.as_str() == topic)
        .with_context(|| format!("the broker did not answer for the configs of topic {topic}"))?;
    if let Some(error) = topic_error(
        "alter the configs of",
        topic,
        result.error_code,
        result.error_message.as_ref(),
    ) {
        bail!(error);
    }
    Ok(())
}

/// CreatePartitions up to `--partitions`; nothing when it was not given.
async fn add_partitions(
    client: &mut Client,
    args: &AlterArgs,
    common: &CommonArgs,
    validate_only: bool,
) -> anyhow::Result<()> {
    let Some(count) = args.partitions else {
        return Ok(());
    };
    let topic = args.topic.as_str();
    let request = CreatePartitionsRequest::default()
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(topic_name(topic))
            .with_count(count)
            .with_assignments(None)])
        .with_timeout_ms(common.request_timeout_ms())
        .with_validate_only(validate_only);
    let response = client.send(3, &request).await?;
    let result = response
        .results
        .into_iter()
        .find(|r| r.name.0.as_str() == topic)
        .with_context(|| format!("the broker did not answer for topic {topic}"))?;
    if let Some(error) = topic_error(
        "add partitions to",
        topic,
        result.error_code,
        result.error_message.as_ref(),
    ) {
        bail!(error);
    }
    Ok(())
}

fn altered_text(a: &Altered) -> String {
    let mut out = String::new();
    if let Some(count) = a.partitions {
        out.push_str(&format!(
            "Topic '{}' now has {}.\n",
            a.topic,
            partitions_phrase(count)
        ));
    }
    for (name, value) in &a.set {
        out.push_str(&format!("Set {name}={value} on topic '{}'.\n", a.topic));
    }
    for name in &a.deleted {
        out.push_str(&format!(
            "Deleted the override of {name} on topic '{}' (back to its default).\n",
            a.topic
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lists_every_change() {
        let altered = Altered {
            topic: "orders".into(),
            partitions: Some(4),
            set: BTreeMap::from([("retention.ms".into(), "1000".into())]),
            deleted: vec!["segment.bytes".into()],
        };
        assert_eq!(
            altered_text(&altered),
            "Topic 'orders' now has 4 partitions.\n\
             Set retention.ms=1000 on topic 'orders'.\n\
             Deleted the override of segment.bytes on topic 'orders' (back to its default).\n"
        );
    }
}
