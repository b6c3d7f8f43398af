//! `sluice perf end-to-end`: the time from a producer's `send` to a consumer receiving the record,
//! in the spirit of Kafka's `EndToEndLatency` tool. One producer sends at a fixed `--throughput`;
//! one consumer, assigned to every partition from the end offsets read before the first send (no
//! group), receives the records in the same process. Each record carries its send time, so the
//! latency is exact on one clock: it includes librdkafka's batching, the broker's append (and,
//! with `--acks all`, its fsync), the high watermark reaching the fetch, and the consumer's
//! fetch wait.
//!
//! Every record's value starts with a 24-byte stamp: a run id (so records of anyone else writing
//! to the topic are recognised and skipped), a sequence number (so missing and duplicated records
//! are counted exactly) and the send time in nanoseconds since the run's start `Instant`. The
//! run stops when every sent record has arrived, or `--drain-timeout-ms` after the last send; a
//! record that never arrived makes the command fail after printing the report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{ArgGroup, Args};
use hdrhistogram::Histogram;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::{
    client_config, mb_per_sec, parse_key_value, per_sec, print_report, Latencies, Progress,
};
use crate::cli_common::CommonArgs;

/// Bytes of the stamp at the start of every value: run id, sequence number, send time.
const STAMP_BYTES: usize = 24;
/// How often the progress line is printed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How long one consumer poll waits before the stop conditions are checked again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long to let librdkafka drain its queue when the local queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(1);
/// librdkafka's `message.timeout.ms` unless overridden: a record not delivered by then fails, so
/// a dead broker cannot keep the send loop waiting on a full queue for librdkafka's 5 minutes.
const MESSAGE_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("amount").required(true).args(["num_records", "duration_secs"])))]
pub(super) struct EndToEndArgs {
    /// The topic to produce to and consume from (auto-created by the broker unless --partitions
    /// creates it).
    #[arg(long)]
    topic: String,
    /// Records per second to send (a fixed rate; latency at an unbounded rate measures queueing).
    #[arg(long, value_name = "R", value_parser = parse_rate)]
    throughput: f64,
    /// Stop after this many records.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    num_records: Option<u64>,
    /// Stop sending after this many seconds.
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
    duration_secs: Option<u64>,
    /// Bytes of each record's value (records have no key); at least 24, the stamp's size.
    #[arg(long, value_name = "B", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(STAMP_BYTES as u64..))]
    record_size: u64,
    /// Acknowledgements the producer waits for: 0, 1 or all (-1).
    #[arg(long, default_value = "1", value_parser = ["0", "1", "all", "-1"])]
    acks: String,
    /// Create the topic with this many partitions if it does not exist.
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(i32).range(1..))]
    partitions: Option<i32>,
    /// How long to wait for a batch to fill (librdkafka's `linger.ms`; its default when not given).
    #[arg(long, value_name = "MS")]
    linger_ms: Option<u64>,
    /// How long the consumer keeps waiting for missing records after the last send.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    drain_timeout_ms: u64,
    /// Any librdkafka producer setting (repeatable; wins over the flags above).
    #[arg(long = "producer-property", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    producer_properties: Vec<(String, String)>,
    /// Any librdkafka consumer setting (repeatable; wins over the tool's own settings).
    #[arg(long = "consumer-property", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    consumer_properties: Vec<(String, String)>,
}

/// A fixed rate: positive and finite.
fn parse_rate(text: &str) -> anyhow::Result<f64> {
    let rate: f64 = text.parse().context("not a number")?;
    if rate <= 0.0 || !rate.is_finite() {
        bail!("must be a positive number of records per second");
    }
    Ok(rate)
}

/// The final report; latencies in milliseconds, from `send` to the consumer receiving the record.
#[derive(Debug, Serialize)]
struct EndToEndReport {
    topic: String,
    /// Records handed to the producer.
    sent: u64,
    /// Distinct records of this run the consumer received; the latencies cover these.
    records: u64,
    /// Sent records the consumer never received (the command fails when this is not 0).
    missing: u64,
    /// Records of this run received more than once (counted once in `records`).
    duplicates: u64,
    /// Records whose delivery report was an error.
    failed: u64,
    /// Records in the topic that were not sent by this run (skipped).
    foreign: u64,
    record_size_bytes: u64,
    acks: String,
    target_records_per_sec: f64,
    /// From the first send to the last.
    send_secs: f64,
    /// From the first send to the last record received (or the drain timeout).
    elapsed_secs: f64,
    /// Records sent over `send_secs`: how close the producer came to the target.
    records_per_sec: f64,
    mb_per_sec: f64,
    #[serde(flatten)]
    latency: Latencies,
}

/// The 24 bytes at the start of every value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    /// Tells this run's records from anyone else's.
    run_id: u64,
    /// 0, 1, 2, ... in send order.
    sequence: u64,
    /// The send time, nanoseconds since the run's start `Instant`.
    sent_at_ns: u64,
}

impl Stamp {
    fn write(&self, value: &mut [u8]) {
        value[0..8].copy_from_slice(&self.run_id.to_be_bytes());
        value[8..16].copy_from_slice(&self.sequence.to_be_bytes());
        value[16..24].copy_from_slice(&self.sent_at_ns.to_be_bytes());
    }

    /// The stamp of a value, or `None` if it is too short to hold one.
    fn read(value: &[u8]) -> Option<Stamp> {
        let field = |at: usize| -> Option<u64> {
            Some(u64::from_be_bytes(value.get(at..at + 8)?.try_into().ok()?))
        };
        Some(Stamp {
            run_id: field(0)?,
            sequence: field(8)?,
            sent_at_ns: field(16)?,
        })
    }
}

/// Which sequence numbers arrived: one bit each, grown as records arrive.
#[derive(Debug, Default)]
struct Arrivals {
    words: Vec<u64>,
    distinct: u64,
    duplicates: u64,
}

impl Arrivals {
    /// Marks `sequence` as arrived; returns whether it is the first time.
    fn insert(&mut self, sequence: u64) -> bool {
        let word = usize::try_from(sequence / 64).expect("sequence numbers fit in memory");
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << (sequence % 64);
        if self.words[word] & bit != 0 {
            self.duplicates += 1;
            return false;
        }
        self.words[word] |= bit;
        self.distinct += 1;
        true
    }
}

/// Delivery failures, counted from librdkafka's poll thread.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.first_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert_with(|| error.to_string());
        }
    }
}

/// What the consumer thread saw.
struct Received {
    histogram: Histogram<u64>,
    arrivals: Arrivals,
    foreign: u64,
    /// When the last record of this run arrived (or the consumer gave up).
    finished_at: Instant,
}

/// Runs the benchmark and prints the report.
pub(super) fn run(args: &EndToEndArgs, common: &CommonArgs, json: bool) -> anyhow::Result<()> {
    crate::cli_common::check_reachable(common)?;
    let timeout = Duration::from_millis(common.timeout_ms);
    if let Some(partitions) = args.partitions {
        super::create_topic_if_missing(common, &args.topic, partitions)?;
    }
    let consumer = assigned_consumer(args, common, timeout)?;

    let mut defaults = vec![
        ("acks", args.acks.clone()),
        ("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string()),
    ];
    if let Some(ms) = args.linger_ms {
        defaults.push(("linger.ms", ms.to_string()));
    }
    let producer: ThreadedProducer<Deliveries> =
        client_config(common, &defaults, &args.producer_properties)
            .create_with_context(Deliveries::default())
            .context("cannot create the producer")?;
    // Connect and learn the leaders before the clock starts, so the first records' latency is
    // not the connection set-up.
    producer
        .client()
        .fetch_metadata(Some(&args.topic), timeout)
        .with_context(|| format!("cannot fetch metadata of {}", args.topic))?;

    let run_id = run_id();
    let start = Instant::now();
    // The number of records handed to the producer, raised before each send so the consumer never
    // sees a sequence number at or above it.
    let sent = Arc::new(AtomicU64::new(0));
    // The final count once sending is over; the consumer drains until it has them all.
    let (done_tx, done_rx) = mpsc::channel::<u64>();
    let drain_timeout = Duration::from_millis(args.drain_timeout_ms);
    let consumer_thread = {
        let sent = sent.clone();
        std::thread::Builder::new()
            .name("perf-e2e-consumer".to_owned())
            .spawn(move || consume(&consumer, start, run_id, &sent, &done_rx, drain_timeout))
            .context("cannot start the consumer thread")?
    };

    let send_result = send_all(args, &producer, start, run_id, &sent);
    let send_secs = start.elapsed().as_secs_f64();
    let sent_total = sent.load(Ordering::Acquire);
    // Whatever happened, tell the consumer how many to wait for so its thread ends.
    let _ = done_tx.send(sent_total);
    // Delivery reports end within `message.timeout.ms`; the flush is bounded by that too.
    let flush_result = producer.flush(Timeout::After(Duration::from_millis(
        MESSAGE_TIMEOUT_MS + args.drain_timeout_ms,
    )));
    let received = consumer_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the consumer thread panicked"))??;
    send_result?;
    flush_result.context("cannot flush the producer")?;

    let deliveries = producer.context();
    let failed = deliveries.failed.load(Ordering::Relaxed);
    let report = report(args, &received, sent_total, failed, start, send_secs);
    let text = format!(
        "{} records, {:.1} records/sec ({:.2} MB/sec), end-to-end latency {}",
        report.records,
        report.records_per_sec,
        report.mb_per_sec,
        report.latency.text(),
    );
    print_report(&report, &text, json)?;
    if report.missing > 0 {
        let first_error = deliveries
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        bail!(
            "{} of {sent_total} records did not arrive within {} ms of the last send \
             ({failed} failed delivery{})",
            report.missing,
            args.drain_timeout_ms,
            first_error.map_or(String::new(), |e| format!("; the first: {e}")),
        );
    }
    if failed > 0 {
        bail!("{failed} records failed delivery but were consumed anyway (delivery timed out?)");
    }
    Ok(())
}

/// A consumer assigned to every partition of the topic at its current end: only records sent
/// from now on are read, and no group is joined.
fn assigned_consumer(
    args: &EndToEndArgs,
    common: &CommonArgs,
    timeout: Duration,
) -> anyhow::Result<BaseConsumer> {
    let defaults = vec![
        // librdkafka wants a group id even to assign; this one never joins or commits.
        (
            "group.id",
            format!("sluice-perf-e2e-{}", std::process::id()),
        ),
        ("enable.auto.commit", "false".to_owned()),
        ("enable.partition.eof", "false".to_owned()),
        // The broker answers a waiting fetch as soon as data arrives; this only bounds the wait
        // when nothing does.
        ("fetch.wait.max.ms", "100".to_owned()),
    ];
    let consumer: BaseConsumer = client_config(common, &defaults, &args.consumer_properties)
        .create()
        .context("cannot create the consumer")?;
    let topic = &args.topic;
    // The first metadata request may auto-create the topic; ask until its partitions are known.
    let deadline = Instant::now() + timeout;
    let partitions = loop {
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .with_context(|| format!("cannot fetch metadata of {topic}"))?;
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>());
        match found {
            Some(ids) => break ids,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            None => bail!("topic {topic} does not exist and was not created"),
        }
    };
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .with_context(|| format!("cannot read the end offset of {topic}-{partition}"))?;
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(high))
            .context("cannot build the assignment")?;
    }
    consumer
        .assign(&assignment)
        .with_context(|| format!("cannot assign the partitions of {topic}"))?;
    Ok(consumer)
}

/// Sends the records at the target rate, each value stamped with its sequence number and send
/// time.
fn send_all(
    args: &EndToEndArgs,
    producer: &ThreadedProducer<Deliveries>,
    start: Instant,
    run_id: u64,
    sent: &AtomicU64,
) -> anyhow::Result<()> {
    let mut value = padding(args.record_size as usize);
    let deadline = args
        .duration_secs
        .map(|secs| start + Duration::from_secs(secs));
    let mut sequence: u64 = 0;
    loop {
        if args.num_records.is_some_and(|n| sequence >= n) {
            return Ok(());
        }
        let mut now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(());
        }
        let due = start + Duration::from_secs_f64(sequence as f64 / args.throughput);
        if due > now {
            std::thread::sleep(due - now);
            now = Instant::now();
        }
        let stamp = Stamp {
            run_id,
            sequence,
            sent_at_ns: now.duration_since(start).as_nanos() as u64,
        };
        stamp.write(&mut value);
        sent.store(sequence + 1, Ordering::Release);
        send(producer, &args.topic, &value)?;
        sequence += 1;
    }
}

/// Enqueues one record, waiting while librdkafka's queue is full.
fn send(producer: &ThreadedProducer<Deliveries>, topic: &str, value: &[u8]) -> anyhow::Result<()> {
    let mut record = BaseRecord::<(), [u8], ()>::to(topic).payload(value);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(QUEUE_FULL_BACKOFF);
            }
            Err((error, _)) => return Err(error).context("cannot enqueue a record"),
        }
    }
}

/// The consumer thread: records each of this run's records' latency until all sent records have
/// arrived, or `drain_timeout` after the sender reports its final count.
fn consume(
    consumer: &BaseConsumer,
    start: Instant,
    run_id: u64,
    sent: &AtomicU64,
    done: &mpsc::Receiver<u64>,
    drain_timeout: Duration,
) -> anyhow::Result<Received> {
    let mut received = Received {
        histogram: super::latency_histogram()?,
        arrivals: Arrivals::default(),
        foreign: 0,
        finished_at: start,
    };
    let mut progress = Progress::new();
    let mut target: Option<(u64, Instant)> = None;
    let mut window_start = Instant::now();
    let mut window_records: u64 = 0;
    let mut window_latency_us: u64 = 0;
    loop {
        if target.is_none() {
            if let Ok(total) = done.try_recv() {
                target = Some((total, Instant::now() + drain_timeout));
            }
        }
        if let Some((total, deadline)) = target {
            if received.arrivals.distinct >= total || Instant::now() >= deadline {
                break;
            }
        }
        let now = match consumer.poll(POLL_INTERVAL) {
            Some(Ok(message)) => {
                let now = Instant::now();
                let stamp = message.payload().and_then(Stamp::read);
                match stamp {
                    Some(stamp)
                        if stamp.run_id == run_id
                            && stamp.sequence < sent.load(Ordering::Acquire) =>
                    {
                        if received.arrivals.insert(stamp.sequence) {
                            let sent_at = start + Duration::from_nanos(stamp.sent_at_ns);
                            let latency_us =
                                now.saturating_duration_since(sent_at).as_micros() as u64;
                            super::record_latency(&mut received.histogram, latency_us);
                            window_records += 1;
                            window_latency_us += latency_us;
                            received.finished_at = now;
                        }
                    }
                    _ => received.foreign += 1,
                }
                now
            }
            Some(Err(error)) => {
                progress.finish();
                return Err(error).context("cannot consume");
            }
            None => Instant::now(),
        };
        let window_secs = now.duration_since(window_start).as_secs_f64();
        if window_secs >= PROGRESS_INTERVAL.as_secs_f64() {
            let avg_ms = if window_records > 0 {
                window_latency_us as f64 / window_records as f64 / 1000.0
            } else {
                0.0
            };
            progress.line(&format!(
                "{window_records} records received, {:.1} records/sec, {avg_ms:.2} ms avg \
                 end-to-end latency",
                per_sec(window_records, window_secs),
            ));
            window_start = now;
            window_records = 0;
            window_latency_us = 0;
        }
    }
    progress.finish();
    if received.arrivals.distinct < target.map_or(0, |(total, _)| total) {
        received.finished_at = Instant::now();
    }
    Ok(received)
}

fn report(
    args: &EndToEndArgs,
    received: &Received,
    sent: u64,
    failed: u64,
    start: Instant,
    send_secs: f64,
) -> EndToEndReport {
    let histogram = &received.histogram;
    let records = received.arrivals.distinct;
    EndToEndReport {
        topic: args.topic.clone(),
        sent,
        records,
        missing: sent.saturating_sub(records),
        duplicates: received.arrivals.duplicates,
        failed,
        foreign: received.foreign,
        record_size_bytes: args.record_size,
        acks: args.acks.clone(),
        target_records_per_sec: args.throughput,
        send_secs,
        elapsed_secs: received
            .finished_at
            .saturating_duration_since(start)
            .as_secs_f64(),
        records_per_sec: per_sec(sent, send_secs),
        mb_per_sec: mb_per_sec(sent * args.record_size, send_secs),
        latency: Latencies::of(histogram),
    }
}

/// An id for this run's records: the wall clock's nanoseconds mixed with the process id, so two
/// runs against one topic (even at once) do not count each other's records.
fn run_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 40)
}

/// A value of `size` bytes whose stamp is overwritten per record; the rest is letters.
fn padding(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_short_values_have_none() {
        let stamp = Stamp {
            run_id: 7,
            sequence: u64::MAX - 1,
            sent_at_ns: 123_456_789,
        };
        let mut value = padding(100);
        stamp.write(&mut value);
        assert_eq!(Stamp::read(&value), Some(stamp));
        assert_eq!(&value[STAMP_BYTES..STAMP_BYTES + 2], b"yz");
        assert_eq!(Stamp::read(&value[..STAMP_BYTES - 1]), None);
    }

    #[test]
    fn arrivals_count_distinct_and_duplicate_sequences() {
        let mut arrivals = Arrivals::default();
        assert!(arrivals.insert(0));
        assert!(arrivals.insert(200));
        assert!(!arrivals.insert(200));
        assert!(arrivals.insert(63));
        assert!(arrivals.insert(64));
        assert_eq!((arrivals.distinct, arrivals.duplicates), (4, 1));
    }

    #[test]
    fn rate_must_be_positive() {
        assert_eq!(parse_rate("50000").unwrap(), 50_000.0);
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("inf").is_err());
    }
}
