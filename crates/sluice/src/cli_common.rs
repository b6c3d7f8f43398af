//! What the admin subcommands (`sluice group`, `sluice topic`) share: the connection and output
//! flags, running one command on a fresh connection, output helpers (tables, JSON, `-` for
//! unknown), Kafka error text, and the ListOffsets request.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Serialize;
use sluice_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use sluice_protocol::messages::metadata_request::MetadataRequestTopic;
use sluice_protocol::messages::{BrokerId, ListOffsetsRequest, MetadataRequest, TopicName};
use sluice_protocol::StrBytes;

use crate::client::{error_name, Client};

/// ListOffsets timestamp asking for the log end offset.
pub(crate) const LATEST_TIMESTAMP: i64 = -1;
/// ListOffsets timestamp asking for the log start offset.
pub(crate) const EARLIEST_TIMESTAMP: i64 = -2;

/// Flags shared by every admin subcommand; `global` so they may follow the subcommand's own.
#[derive(Debug, Args)]
pub(crate) struct CommonArgs {
    /// The broker to ask (`--bootstrap` works too; else `SLUICE_BOOTSTRAP` or
    /// `SLUICE_BOOTSTRAP_SERVER`; default 127.0.0.1:9092).
    #[arg(
        long = "bootstrap-server",
        visible_alias = "bootstrap",
        global = true,
        value_name = "HOST:PORT"
    )]
    bootstrap_flag: Option<String>,
    /// Output format: aligned columns, or JSON for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
    /// Bound on connecting and on each request's answer (`sluice perf produce`: also on each
    /// record's delivery, librdkafka's `message.timeout.ms`).
    #[arg(long, global = true, default_value_t = 10_000, value_name = "MS")]
    pub(crate) timeout_ms: u64,
}

/// Where a client connects when no flag says: the first of these variables that is set.
const BOOTSTRAP_VARIABLES: [&str; 2] = ["SLUICE_BOOTSTRAP", "SLUICE_BOOTSTRAP_SERVER"];
const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

impl CommonArgs {
    /// The broker to ask: the flag, else `SLUICE_BOOTSTRAP`, else `SLUICE_BOOTSTRAP_SERVER`, else
    /// 127.0.0.1:9092.
    pub(crate) fn bootstrap_server(&self) -> String {
        self.bootstrap_flag
            .clone()
            .or_else(|| {
                BOOTSTRAP_VARIABLES
                    .iter()
                    .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
            })
            .unwrap_or_else(|| DEFAULT_BOOTSTRAP.to_owned())
    }

    /// The timeout as a request field (CreateTopics, DeleteTopics, ...): how long the broker may
    /// wait for the change to complete.
    pub(crate) fn request_timeout_ms(&self) -> i32 {
        i32::try_from(self.timeout_ms).unwrap_or(i32::MAX)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

/// One partition of one topic; orders by topic, then partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TopicPartition {
    pub(crate) topic: String,
    pub(crate) partition: i32,
}

impl TopicPartition {
    pub(crate) fn new(topic: impl Into<String>, partition: i32) -> TopicPartition {
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

/// Connects to the bootstrap broker, runs `command` on the connection and prints what it returns.
pub(crate) fn run<F, Fut>(args: &CommonArgs, command: F) -> anyhow::Result<()>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let timeout = Duration::from_millis(args.timeout_ms);
        let client = Client::connect(&args.bootstrap_server(), timeout).await?;
        let text = command(client).await?;
        write_stdout(&text)
    })
}

/// Checks that a bootstrap broker answers (one of them, when several are given), so a command
/// whose client would otherwise retry quietly (librdkafka, for `sluice perf`) fails at once with
/// the error every subcommand gives: `cannot reach broker at HOST:PORT: ...`.
pub(crate) fn check_reachable(args: &CommonArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let bootstrap = args.bootstrap_server();
    runtime.block_on(async move {
        let timeout = Duration::from_millis(args.timeout_ms);
        let mut first_error = None;
        for address in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Client::connect(address, timeout).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| anyhow::anyhow!("no bootstrap server given")))
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

/// An error code with the broker's message: `INVALID_CONFIG (40): invalid value ...`, or None for
/// 0. The message is left out when empty.
pub(crate) fn kafka_error(code: i16, message: Option<&StrBytes>) -> Option<String> {
    let name = error_name(code)?;
    Some(match message.map(|m| m.trim()).filter(|m| !m.is_empty()) {
        Some(message) => format!("{name}: {message}"),
        None => name,
    })
}

/// ListOffsets for `timestamp` (or [`LATEST_TIMESTAMP`], [`EARLIEST_TIMESTAMP`]); per partition the
/// offset, or the error's name.
pub(crate) async fn list_offsets(
    client: &mut Client,
    partitions: &[TopicPartition],
    timestamp: i64,
) -> anyhow::Result<BTreeMap<TopicPartition, Result<i64, String>>> {
    list_offsets_isolated(client, partitions, timestamp, 0).await
}

/// [`list_offsets`] at an isolation level: 1 (read_committed) answers the last stable offset as
/// the latest.
pub(crate) async fn list_offsets_isolated(
    client: &mut Client,
    partitions: &[TopicPartition],
    timestamp: i64,
    isolation_level: i8,
) -> anyhow::Result<BTreeMap<TopicPartition, Result<i64, String>>> {
    if partitions.is_empty() {
        return Ok(BTreeMap::new());
    }
    // Only a partition's leader answers ListOffsets: ask each leader for its partitions (the
    // connected broker when the cluster has one broker).
    let metadata = client
        .send(
            12,
            &MetadataRequest::default()
                .with_topics(Some(
                    by_topic(partitions)
                        .into_keys()
                        .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                        .collect(),
                ))
                .with_allow_auto_topic_creation(false),
        )
        .await?;
    let mut leader_of: BTreeMap<TopicPartition, i32> = BTreeMap::new();
    for topic in &metadata.topics {
        let Some(name) = &topic.name else { continue };
        for p in &topic.partitions {
            leader_of.insert(
                TopicPartition::new(name.0.as_str(), p.partition_index),
                p.leader_id.0,
            );
        }
    }
    let mut by_leader: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
    for tp in partitions {
        by_leader
            .entry(leader_of.get(tp).copied().unwrap_or(-1))
            .or_default()
            .push(tp.clone());
    }
    let mut out = BTreeMap::new();
    for (leader, partitions) in by_leader {
        let address = metadata
            .brokers
            .iter()
            .find(|b| b.node_id.0 == leader)
            .map(|b| format!("{}:{}", b.host.as_str(), b.port));
        let answers = match (metadata.brokers.len(), address) {
            (0 | 1, _) | (_, None) => {
                list_offsets_at(client, &partitions, timestamp, isolation_level).await?
            }
            (_, Some(address)) => {
                let mut leader_client = Client::connect(&address, client.timeout()).await?;
                list_offsets_at(&mut leader_client, &partitions, timestamp, isolation_level).await?
            }
        };
        out.extend(answers);
    }
    Ok(out)
}

/// One ListOffsets request to the broker `client` is connected to.
async fn list_offsets_at(
    client: &mut Client,
    partitions: &[TopicPartition],
    timestamp: i64,
    isolation_level: i8,
) -> anyhow::Result<BTreeMap<TopicPartition, Result<i64, String>>> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation_level)
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

pub(crate) fn by_topic(partitions: &[TopicPartition]) -> BTreeMap<&str, Vec<i32>> {
    let mut out: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        out.entry(tp.topic.as_str()).or_default().push(tp.partition);
    }
    out
}

pub(crate) fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// Pretty JSON with a final newline.
pub(crate) fn json(value: &impl Serialize) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(value).context("cannot write JSON")?;
    text.push('\n');
    Ok(text)
}

/// `-` for an empty cell.
pub(crate) fn or_dash(value: String) -> String {
    if value.is_empty() {
        "-".to_owned()
    } else {
        value
    }
}

/// A number, or `-` when unknown.
pub(crate) fn number_or_dash(value: Option<i64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Left-aligned columns two spaces apart, header first.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
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
    fn kafka_errors_carry_the_brokers_message() {
        assert_eq!(kafka_error(0, None), None);
        assert_eq!(
            kafka_error(40, Some(&StrBytes::from_static_str("bad `retention.ms`"))).as_deref(),
            Some("INVALID_CONFIG (40): bad `retention.ms`")
        );
        assert_eq!(
            kafka_error(3, Some(&StrBytes::from_static_str(" "))).as_deref(),
            Some("UNKNOWN_TOPIC_OR_PARTITION (3)")
        );
    }

    #[test]
    fn unknown_numbers_are_dashes() {
        assert_eq!(number_or_dash(None), "-");
        assert_eq!(number_or_dash(Some(-1)), "-1");
        assert_eq!(or_dash(String::new()), "-");
    }
}
