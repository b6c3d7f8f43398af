//! `sluice perf consume`: one consumer reading `--messages` records from the beginning of a topic
//! (all partitions assigned, no group, unless `--group` subscribes through one), reporting
//! records/s and MB/s.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::{client_config, mb_per_sec, parse_key_value, per_sec, print_report, Progress};
use crate::cli_common::CommonArgs;

/// How often the progress line is printed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How long one poll waits for a record before the idle timeout is checked.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
pub(super) struct ConsumeArgs {
    /// The topic to read.
    #[arg(long)]
    topic: String,
    /// Stop after this many records (fails if the topic runs dry for --timeout-ms first).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    messages: u64,
    /// Join this consumer group (subscribe, offsets committed) instead of assigning every
    /// partition; its start-up includes the group join and rebalance.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Any librdkafka consumer setting, e.g. `fetch.max.bytes=104857600` (repeatable; wins over
    /// the tool's own settings).
    #[arg(long = "consumer-property", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    properties: Vec<(String, String)>,
}

/// The final report.
#[derive(Debug, Serialize)]
struct ConsumeReport {
    topic: String,
    records: u64,
    /// Key and value bytes of the records read.
    bytes: u64,
    /// From assign (or subscribe) to the last record.
    elapsed_secs: f64,
    /// From assign (or subscribe) to the first record: connection, metadata, group join.
    startup_ms: f64,
    /// Records over the fetch time, from the first record to the last (start-up left out, as
    /// Kafka's tool does); over `elapsed_secs` if that interval is empty.
    records_per_sec: f64,
    mb_per_sec: f64,
}

/// Runs the benchmark and prints the report.
pub(super) fn run(args: &ConsumeArgs, common: &CommonArgs, json: bool) -> anyhow::Result<()> {
    crate::cli_common::check_reachable(common)?;
    let timeout = Duration::from_millis(common.timeout_ms);
    let mut defaults = vec![
        ("auto.offset.reset", "earliest".to_owned()),
        ("enable.partition.eof", "false".to_owned()),
        ("enable.auto.commit", args.group.is_some().to_string()),
    ];
    // librdkafka's consumer wants a group id even to assign partitions; without --group, one of
    // its own that never joins (nothing is subscribed or committed), as Kafka's tool does.
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| format!("sluice-perf-{}", std::process::id()));
    defaults.push(("group.id", group));
    let consumer: BaseConsumer = client_config(common, &defaults, &args.properties)
        .create()
        .context("cannot create the consumer")?;
    let start = Instant::now();
    match &args.group {
        Some(_) => consumer
            .subscribe(&[&args.topic])
            .with_context(|| format!("cannot subscribe to {}", args.topic))?,
        None => assign_all(&consumer, &args.topic, timeout)?,
    }
    let mut progress = Progress::new();
    let mut records: u64 = 0;
    let mut bytes: u64 = 0;
    let mut first_record: Option<Instant> = None;
    let mut last_record = start;
    let mut window_start = start;
    let mut window_records: u64 = 0;
    let mut window_bytes: u64 = 0;
    while records < args.messages {
        let now = match consumer.poll(POLL_INTERVAL) {
            Some(Ok(message)) => {
                let now = Instant::now();
                let size = message.payload_len() + message.key().map_or(0, <[u8]>::len);
                records += 1;
                bytes += size as u64;
                window_records += 1;
                window_bytes += size as u64;
                first_record.get_or_insert(now);
                last_record = now;
                now
            }
            Some(Err(error)) => return Err(error).context("cannot consume"),
            None => {
                let now = Instant::now();
                if now.duration_since(last_record) > timeout {
                    progress.finish();
                    bail!(
                        "read {records} of {} records; none arrived for {} ms",
                        args.messages,
                        common.timeout_ms
                    );
                }
                now
            }
        };
        let window_secs = now.duration_since(window_start).as_secs_f64();
        if window_secs >= PROGRESS_INTERVAL.as_secs_f64() {
            progress.line(&format!(
                "{window_records} records read, {:.1} records/sec ({:.2} MB/sec)",
                per_sec(window_records, window_secs),
                mb_per_sec(window_bytes, window_secs),
            ));
            window_start = now;
            window_records = 0;
            window_bytes = 0;
        }
    }
    progress.finish();
    let elapsed_secs = last_record.duration_since(start).as_secs_f64();
    let first_record = first_record.expect("at least one record was read");
    let fetch_secs = match last_record.duration_since(first_record).as_secs_f64() {
        secs if secs > 0.0 => secs,
        _ => elapsed_secs,
    };
    let report = ConsumeReport {
        topic: args.topic.clone(),
        records,
        bytes,
        elapsed_secs,
        startup_ms: first_record.duration_since(start).as_secs_f64() * 1000.0,
        records_per_sec: per_sec(records, fetch_secs),
        mb_per_sec: mb_per_sec(bytes, fetch_secs),
    };
    let text = format!(
        "{} records consumed ({} bytes) in {:.2} s, {:.1} records/sec ({:.2} MB/sec), \
         {:.1} ms to the first record",
        report.records,
        report.bytes,
        report.elapsed_secs,
        report.records_per_sec,
        report.mb_per_sec,
        report.startup_ms,
    );
    if args.group.is_some() {
        leave_group(&consumer, timeout);
    }
    print_report(&report, &text, json)
}

/// Gives the group's partitions back on ordinary polls before the consumer drops: the revoke
/// callback then runs here, bounded by `timeout`, not inside librdkafka's close, where it can
/// block forever (librdkafka issue 4884).
fn leave_group(consumer: &BaseConsumer, timeout: Duration) {
    consumer.unsubscribe();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline
        && consumer
            .assignment()
            .is_ok_and(|assigned| assigned.count() > 0)
    {
        let _ = consumer.poll(POLL_INTERVAL);
    }
}

/// Assigns every partition of `topic` from its log start offset.
fn assign_all(consumer: &BaseConsumer, topic: &str, timeout: Duration) -> anyhow::Result<()> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("cannot fetch metadata of {topic}"))?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        bail!("the broker did not answer for topic {topic}");
    };
    if let Some(error) = found.error() {
        bail!(
            "cannot read topic {topic}: {}",
            rdkafka::types::RDKafkaErrorCode::from(error)
        );
    }
    if found.partitions().is_empty() {
        bail!("topic {topic} does not exist");
    }
    let mut assignment = TopicPartitionList::new();
    for partition in found.partitions() {
        assignment
            .add_partition_offset(topic, partition.id(), Offset::Beginning)
            .context("cannot build the assignment")?;
    }
    consumer
        .assign(&assignment)
        .with_context(|| format!("cannot assign the partitions of {topic}"))
}
