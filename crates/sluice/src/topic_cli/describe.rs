//! `sluice topic describe`: a topic's partitions from Metadata (leader, replicas, ISR), their log
//! start and end offsets (ListOffsets), their sizes on disk (DescribeLogDirs, when the broker has
//! it) and the topic's configs with their sources (DescribeConfigs).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use sluice_protocol::messages::api_versions_response::ApiVersion;
use sluice_protocol::messages::describe_configs_request::DescribeConfigsResource;
use sluice_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use sluice_protocol::messages::{
    ApiKey, ApiVersionsRequest, DescribeConfigsRequest, DescribeLogDirsRequest,
};
use sluice_protocol::{Message, StrBytes, VersionRange};

use super::{config_source_name, partitions_phrase, topic_error, topic_metadata, RESOURCE_TOPIC};
use crate::cli_common::{
    json, list_offsets, number_or_dash, table, topic_name, CommonArgs, Output, TopicPartition,
    EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};
use crate::client::{error_name, Client};

/// DescribeConfigs' source of a config nobody set.
const SOURCE_DEFAULT: i8 = 5;

#[derive(Debug, Args)]
pub(super) struct DescribeArgs {
    /// The topic's name.
    topic: String,
    /// Show every config, defaults included (without it, only configs set somewhere).
    #[arg(long)]
    all_configs: bool,
}

#[derive(Debug, Serialize)]
struct TopicDescription {
    topic: String,
    topic_id: String,
    internal: bool,
    replication_factor: usize,
    /// Sum of the partitions' sizes; None when any of them is unknown.
    size_bytes: Option<i64>,
    partitions: Vec<PartitionDescription>,
    configs: Vec<ConfigDescription>,
}

#[derive(Debug, Serialize)]
struct PartitionDescription {
    partition: i32,
    /// None when the partition has no leader.
    leader: Option<i32>,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    log_start_offset: Option<i64>,
    log_end_offset: Option<i64>,
    /// Bytes on disk; None when the broker does not implement DescribeLogDirs or did not report
    /// the partition.
    size_bytes: Option<i64>,
    /// The broker's error for this partition, from Metadata or ListOffsets.
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct ConfigDescription {
    name: String,
    /// None for sensitive configs, whose value brokers do not reveal.
    value: Option<String>,
    source: String,
    read_only: bool,
    sensitive: bool,
}

/// Describes one topic.
pub(super) async fn run(
    client: &mut Client,
    args: &DescribeArgs,
    common: &CommonArgs,
) -> anyhow::Result<String> {
    let topic = args.topic.as_str();
    let metadata = topic_metadata(client, "describe", topic).await?;
    let mut partitions: Vec<PartitionDescription> = metadata
        .partitions
        .iter()
        .map(|p| PartitionDescription {
            partition: p.partition_index,
            leader: (p.leader_id.0 >= 0).then_some(p.leader_id.0),
            leader_epoch: p.leader_epoch,
            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
            log_start_offset: None,
            log_end_offset: None,
            size_bytes: None,
            error: error_name(p.error_code),
        })
        .collect();
    partitions.sort_by_key(|p| p.partition);
    let keys: Vec<TopicPartition> = partitions
        .iter()
        .map(|p| TopicPartition::new(topic, p.partition))
        .collect();
    let earliest = list_offsets(client, &keys, EARLIEST_TIMESTAMP).await?;
    let latest = list_offsets(client, &keys, LATEST_TIMESTAMP).await?;
    for (p, key) in partitions.iter_mut().zip(&keys) {
        for (offsets, field) in [
            (&earliest, &mut p.log_start_offset),
            (&latest, &mut p.log_end_offset),
        ] {
            match offsets.get(key) {
                Some(Ok(offset)) => *field = Some(*offset),
                Some(Err(error)) => {
                    p.error.get_or_insert_with(|| error.clone());
                }
                None => {}
            }
        }
    }
    let mut configs = topic_configs(client, topic).await?;
    if !args.all_configs {
        configs.retain(|c| c.source != config_source_name(SOURCE_DEFAULT));
    }
    match partition_sizes(client, topic, &keys).await {
        Ok(Some(sizes)) => {
            for (p, key) in partitions.iter_mut().zip(&keys) {
                p.size_bytes = sizes.get(key).copied();
            }
        }
        Ok(None) => {}
        // Sizes are a nicety: say why they are missing, but still describe the topic.
        Err(e) => eprintln!("warning: partition sizes unavailable: {e:#}"),
    }
    let size_bytes = partitions.iter().map(|p| p.size_bytes).sum::<Option<i64>>();
    let description = TopicDescription {
        topic: topic.to_owned(),
        topic_id: metadata.topic_id.to_string(),
        internal: metadata.is_internal,
        replication_factor: partitions.first().map_or(0, |p| p.replicas.len()),
        size_bytes,
        partitions,
        configs,
    };
    match common.output {
        Output::Json => json(&description),
        Output::Text => Ok(describe_text(&description, args.all_configs)),
    }
}

/// Every config of the topic as DescribeConfigs v4 reports it, sorted by name.
async fn topic_configs(client: &mut Client, topic: &str) -> anyhow::Result<Vec<ConfigDescription>> {
    let request = DescribeConfigsRequest::default()
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_owned()))
            .with_configuration_keys(None)])
        .with_include_synonyms(false)
        .with_include_documentation(false);
    let response = client.send(4, &request).await?;
    let result = response
        .results
        .into_iter()
        .find(|r| r.resource_type == RESOURCE_TOPIC && r.resource_name.as_str() == topic)
        .with_context(|| format!("the broker did not describe the configs of topic {topic}"))?;
    if let Some(error) = topic_error(
        "describe the configs of",
        topic,
        result.error_code,
        result.error_message.as_ref(),
    ) {
        bail!(error);
    }
    let mut configs: Vec<ConfigDescription> = result
        .configs
        .into_iter()
        .map(|c| ConfigDescription {
            name: c.name.to_string(),
            value: c.value.map(|v| v.to_string()),
            source: config_source_name(c.config_source),
            read_only: c.read_only,
            sensitive: c.is_sensitive,
        })
        .collect();
    configs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(configs)
}

/// Bytes on disk per partition from DescribeLogDirs (summed over log dirs, leaving out future
/// replicas that are still being moved), or None when the broker does not implement the API.
async fn partition_sizes(
    client: &mut Client,
    topic: &str,
    partitions: &[TopicPartition],
) -> anyhow::Result<Option<BTreeMap<TopicPartition, i64>>> {
    let versions = client.send(0, &ApiVersionsRequest::default()).await?;
    let Some(version) = log_dirs_version(&versions.api_keys) else {
        return Ok(None);
    };
    let request =
        DescribeLogDirsRequest::default()
            .with_topics(Some(vec![DescribableLogDirTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(partitions.iter().map(|p| p.partition).collect())]));
    let response = client.send(version, &request).await?;
    if let Some(error) = error_name(response.error_code) {
        bail!("DescribeLogDirs failed: {error}");
    }
    let mut sizes: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    for dir in response.results {
        if let Some(error) = error_name(dir.error_code) {
            bail!("log dir {} reports {error}", dir.log_dir.as_str());
        }
        for t in dir.topics.iter().filter(|t| t.name.0.as_str() == topic) {
            for p in t.partitions.iter().filter(|p| !p.is_future_key) {
                *sizes
                    .entry(TopicPartition::new(topic, p.partition_index))
                    .or_default() += p.partition_size;
            }
        }
    }
    Ok(Some(sizes))
}

/// The newest DescribeLogDirs version both sides speak, or None when there is none.
fn log_dirs_version(broker: &[ApiVersion]) -> Option<i16> {
    // The versions this client can encode.
    let VersionRange {
        min: ours_min,
        max: ours_max,
    } = DescribeLogDirsRequest::VERSIONS;
    let k = broker
        .iter()
        .find(|k| k.api_key == ApiKey::DescribeLogDirs as i16)?;
    let version = k.max_version.min(ours_max);
    (version >= k.min_version.max(ours_min)).then_some(version)
}

fn describe_text(d: &TopicDescription, all_configs: bool) -> String {
    let mut out = String::new();
    let size = d
        .size_bytes
        .map(|bytes| format!(", {bytes} bytes"))
        .unwrap_or_default();
    let internal = if d.internal { " (internal)" } else { "" };
    let _ = writeln!(
        out,
        "Topic '{}'{internal} has {}, replication factor {}{size}; id {}.\n",
        d.topic,
        partitions_phrase(d.partitions.len() as i32),
        d.replication_factor,
        d.topic_id,
    );
    let nodes = |ids: &[i32]| {
        let text: Vec<String> = ids.iter().map(i32::to_string).collect();
        if text.is_empty() {
            "-".to_owned()
        } else {
            text.join(",")
        }
    };
    let rows: Vec<Vec<String>> = d
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                number_or_dash(p.leader.map(i64::from)),
                nodes(&p.replicas),
                nodes(&p.isr),
                number_or_dash(p.log_start_offset),
                number_or_dash(p.log_end_offset),
                number_or_dash(p.size_bytes),
                p.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "ISR",
            "LOG-START-OFFSET",
            "LOG-END-OFFSET",
            "SIZE-BYTES",
            "",
        ],
        &rows,
    ));
    out.push('\n');
    if d.configs.is_empty() {
        let which = if all_configs {
            "The broker reported no configs."
        } else {
            "Every config has its default value (--all-configs lists them)."
        };
        out.push_str(which);
        out.push('\n');
        return out;
    }
    let rows: Vec<Vec<String>> = d
        .configs
        .iter()
        .map(|c| {
            let value = match &c.value {
                Some(value) => value.clone(),
                None if c.sensitive => "(sensitive)".to_owned(),
                None => "-".to_owned(),
            };
            vec![c.name.clone(), value, c.source.clone()]
        })
        .collect();
    out.push_str(&table(&["CONFIG", "VALUE", "SOURCE"], &rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn description() -> TopicDescription {
        TopicDescription {
            topic: "orders".into(),
            topic_id: "id-1".into(),
            internal: false,
            replication_factor: 1,
            size_bytes: None,
            partitions: vec![
                PartitionDescription {
                    partition: 0,
                    leader: Some(1),
                    leader_epoch: 0,
                    replicas: vec![1],
                    isr: vec![1],
                    log_start_offset: Some(3),
                    log_end_offset: Some(10),
                    size_bytes: Some(420),
                    error: None,
                },
                PartitionDescription {
                    partition: 1,
                    leader: None,
                    leader_epoch: 0,
                    replicas: vec![1],
                    isr: vec![],
                    log_start_offset: None,
                    log_end_offset: None,
                    size_bytes: None,
                    error: Some("LEADER_NOT_AVAILABLE (5)".into()),
                },
            ],
            configs: vec![ConfigDescription {
                name: "retention.ms".into(),
                value: Some("60000".into()),
                source: "DYNAMIC_TOPIC_CONFIG".into(),
                read_only: false,
                sensitive: false,
            }],
        }
    }

    #[test]
    fn text_shows_partitions_and_configs() {
        let text = describe_text(&description(), false);
        let cells: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            text.lines().next(),
            Some("Topic 'orders' has 2 partitions, replication factor 1; id id-1.")
        );
        assert!(
            cells.contains(&vec!["0", "1", "1", "1", "3", "10", "420"]),
            "{text}"
        );
        assert!(
            cells.contains(&vec![
                "1",
                "-",
                "1",
                "-",
                "-",
                "-",
                "-",
                "LEADER_NOT_AVAILABLE",
                "(5)"
            ]),
            "{text}"
        );
        assert!(
            cells.contains(&vec!["retention.ms", "60000", "DYNAMIC_TOPIC_CONFIG"]),
            "{text}"
        );
    }

    #[test]
    fn log_dirs_version_is_the_newest_both_speak() {
        let api = |key: ApiKey, min: i16, max: i16| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        };
        let metadata = api(ApiKey::Metadata, 0, 12);
        assert_eq!(log_dirs_version(std::slice::from_ref(&metadata)), None);
        assert_eq!(
            log_dirs_version(&[metadata, api(ApiKey::DescribeLogDirs, 0, 4)]),
            Some(4)
        );
        assert_eq!(
            log_dirs_version(&[api(ApiKey::DescribeLogDirs, 1, 9)]),
            Some(4)
        );
        assert_eq!(
            log_dirs_version(&[api(ApiKey::DescribeLogDirs, 0, 2)]),
            Some(2)
        );
        assert_eq!(
            log_dirs_version(&[api(ApiKey::DescribeLogDirs, 0, 0)]),
            None
        );
        assert_eq!(
            log_dirs_version(&[api(ApiKey::DescribeLogDirs, 5, 6)]),
            None
        );
    }

    #[test]
    fn text_explains_an_empty_config_list() {
        let mut d = description();
        d.configs.clear();
        d.size_bytes = Some(420);
        let text = describe_text(&d, false);
        assert!(text.contains("replication factor 1, 420 bytes;"), "{text}");
        assert!(text.contains("--all-configs"), "{text}");
    }
}
