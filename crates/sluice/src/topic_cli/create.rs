//! `sluice topic create`: CreateTopics v7 for one topic, with configs and `--validate-only`.

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use sluice_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use sluice_protocol::messages::CreateTopicsRequest;
use sluice_protocol::StrBytes;

use super::{check_unique, config_source_name, parse_key_value, partitions_phrase, topic_error};
use crate::cli_common::{json, table, topic_name, CommonArgs, Output};
use crate::client::Client;

#[derive(Debug, Args)]
pub(super) struct CreateArgs {
    /// The topic's name.
    topic: String,
    /// Number of partitions (default: the broker's `num.partitions`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    partitions: Option<i32>,
    /// Replicas per partition (default: the broker's `default.replication.factor`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i16).range(1..))]
    replication_factor: Option<i16>,
    /// A topic config override, e.g. `retention.ms=86400000` (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    configs: Vec<(String, String)>,
    /// Only check that the topic could be created; create nothing.
    #[arg(long)]
    validate_only: bool,
}

#[derive(Debug, Serialize)]
struct Created {
    topic: String,
    /// None for `--validate-only` (nothing was created, so there is no id).
    topic_id: Option<String>,
    partitions: i32,
    replication_factor: i16,
    validate_only: bool,
    configs: Vec<CreatedConfig>,
}

#[derive(Debug, Serialize)]
struct CreatedConfig {
    name: String,
    value: Option<String>,
    source: String,
}

/// Creates (or validates) one topic.
pub(super) async fn run(
    client: &mut Client,
    args: &CreateArgs,
    common: &CommonArgs,
) -> anyhow::Result<String> {
    let topic = args.topic.as_str();
    check_unique(args.configs.iter().map(|(k, _)| k.as_str()))?;
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(topic))
            .with_num_partitions(args.partitions.unwrap_or(-1))
            .with_replication_factor(args.replication_factor.unwrap_or(-1))
            .with_configs(
                args.configs
                    .iter()
                    .map(|(name, value)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(name.clone()))
                            .with_value(Some(StrBytes::from_string(value.clone())))
                    })
                    .collect(),
            )])
        .with_timeout_ms(common.request_timeout_ms())
        .with_validate_only(args.validate_only);
    let response = client.send(7, &request).await?;
    let result = response
        .topics
        .into_iter()
        .find(|t| t.name.0.as_str() == topic)
        .with_context(|| format!("the broker did not answer for topic {topic}"))?;
    let action = if args.validate_only {
        "validate"
    } else {
        "create"
    };
    if let Some(error) = topic_error(
        action,
        topic,
        result.error_code,
        result.error_message.as_ref(),
    ) {
        bail!(error);
    }
    let mut configs: Vec<CreatedConfig> = result
        .configs
        .unwrap_or_default()
        .into_iter()
        .map(|c| CreatedConfig {
            name: c.name.to_string(),
            value: c.value.map(|v| v.to_string()),
            source: config_source_name(c.config_source),
        })
        .collect();
    configs.sort_by(|a, b| a.name.cmp(&b.name));
    let created = Created {
        topic: topic.to_owned(),
        topic_id: (!args.validate_only && !result.topic_id.is_nil())
            .then(|| result.topic_id.to_string()),
        partitions: result.num_partitions,
        replication_factor: result.replication_factor,
        validate_only: args.validate_only,
        configs,
    };
    match common.output {
        Output::Json => json(&created),
        Output::Text => Ok(created_text(&created)),
    }
}

fn created_text(c: &Created) -> String {
    let shape = format!(
        "{}, replication factor {}",
        partitions_phrase(c.partitions),
        c.replication_factor
    );
    let mut out = if c.validate_only {
        format!(
            "Topic '{}' can be created with {shape} (validate only: nothing was created).\n",
            c.topic
        )
    } else {
        let id = c
            .topic_id
            .as_ref()
            .map(|id| format!(" (id {id})"))
            .unwrap_or_default();
        format!("Created topic '{}'{id} with {shape}.\n", c.topic)
    };
    // Only overrides are worth repeating; a broker may list every config here (Kafka does).
    let rows: Vec<Vec<String>> = c
        .configs
        .iter()
        .filter(|c| c.source == config_source_name(1))
        .map(|c| {
            vec![
                c.name.clone(),
                c.value.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push('\n');
        out.push_str(&table(&["CONFIG", "VALUE"], &rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_the_shape_and_the_overrides() {
        let mut created = Created {
            topic: "orders".into(),
            topic_id: Some("id-1".into()),
            partitions: 3,
            replication_factor: 1,
            validate_only: false,
            configs: vec![
                CreatedConfig {
                    name: "retention.ms".into(),
                    value: Some("60000".into()),
                    source: "DYNAMIC_TOPIC_CONFIG".into(),
                },
                CreatedConfig {
                    name: "segment.bytes".into(),
                    value: Some("1073741824".into()),
                    source: "DEFAULT_CONFIG".into(),
                },
            ],
        };
        assert_eq!(
            created_text(&created),
            "Created topic 'orders' (id id-1) with 3 partitions, replication factor 1.\n\n\
             CONFIG        VALUE\nretention.ms  60000\n"
        );
        created.validate_only = true;
        created.topic_id = None;
        created.configs.clear();
        assert_eq!(
            created_text(&created),
            "Topic 'orders' can be created with 3 partitions, replication factor 1 (validate \
             only: nothing was created).\n"
        );
    }
}
