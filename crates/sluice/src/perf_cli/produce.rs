//! `sluice perf produce`: one producer sending fixed-size records as fast as allowed (or at
//! `--throughput` records/s), timing each record from `send` to its delivery report into an HDR
//! histogram. `--discard` runs the same loop without a producer, to measure the tool's ceiling.
//! `--transaction-size N` sends through a transactional producer, committing every N records.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{ArgGroup, Args, ValueEnum};
use hdrhistogram::Histogram;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use serde::Serialize;

use super::{
    client_config, mb_per_sec, parse_key_value, per_sec, print_report, Latencies, Progress,
};
use crate::cli_common::CommonArgs;

/// How often the progress line is printed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How long to let librdkafka drain its queue when the local queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(1);
/// librdkafka's default `transaction.timeout.ms`.
const TRANSACTION_TIMEOUT_MS: u64 = 60_000;
/// How often the sending and flushing loops let a progress line out.
const PROGRESS_CHECK_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("amount").required(true).args(["num_records", "duration_secs"])))]
pub(super) struct ProduceArgs {
    /// The topic to produce to (auto-created by the broker unless --partitions creates it).
    #[arg(long)]
    topic: String,
    /// Stop after this many records.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    num_records: Option<u64>,
    /// Stop sending after this many seconds.
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
    duration_secs: Option<u64>,
    /// Bytes of each record's value (records have no key).
    #[arg(long, value_name = "B")]
    record_size: usize,
    /// Records per second to aim for; -1 (any negative number) for no limit.
    #[arg(long, value_name = "R", default_value_t = -1.0, allow_negative_numbers = true,
          value_parser = parse_throughput)]
    throughput: f64,
    /// Acknowledgements to wait for: 0, 1 or all (-1).
    #[arg(long, default_value = "all", value_parser = ["0", "1", "all", "-1"])]
    acks: String,
    /// Batch compression.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    compression: Compression,
    /// Largest batch in bytes (librdkafka's `batch.size`; its default when not given).
    #[arg(long, value_name = "BYTES")]
    batch_size: Option<u64>,
    /// How long to wait for a batch to fill (librdkafka's `linger.ms`; its default when not given).
    #[arg(long, value_name = "MS")]
    linger_ms: Option<u64>,
    /// Create the topic with this many partitions if it does not exist.
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(i32).range(1..))]
    partitions: Option<i32>,
    /// Any librdkafka producer setting, e.g. `enable.idempotence=true` (repeatable; wins over the
    /// flags above).
    #[arg(long = "producer-property", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    properties: Vec<(String, String)>,
    /// Send in transactions of this many records (a transactional producer, acks=all), each
    /// committed before the next begins; `linger.ms` defaults to 0 then.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          conflicts_with = "discard")]
    transaction_size: Option<u64>,
    /// The producer's `transactional.id` with --transaction-size (default `sluice-perf-<pid>`).
    #[arg(long, value_name = "ID", requires = "transaction_size")]
    transactional_id: Option<String>,
    /// Run the loop (record generation, throttling, latency bookkeeping) without sending
    /// anything: the records/s of the tool itself, its ceiling.
    #[arg(long)]
    discard: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn codec(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// A target rate: any negative number means unlimited; 0 would never send, so it is refused.
fn parse_throughput(text: &str) -> anyhow::Result<f64> {
    let rate: f64 = text.parse().context("not a number")?;
    if rate == 0.0 || !rate.is_finite() {
        bail!("must be positive, or -1 for no limit");
    }
    Ok(rate)
}

/// The final report; latencies in milliseconds.
#[derive(Debug, Serialize)]
struct ProduceReport {
    topic: String,
    /// Records delivered (or, with `discard`, passed through the loop).
    records: u64,
    /// Records whose delivery failed.
    failed: u64,
    record_size_bytes: usize,
    discard: bool,
    /// Transactions committed (0 without --transaction-size).
    transactions: u64,
    elapsed_secs: f64,
    records_per_sec: f64,
    mb_per_sec: f64,
    #[serde(flatten)]
    latency: Latencies,
}

/// Everything the delivery reports add up, behind one lock: reports come from librdkafka's poll
/// thread (or, with `--discard`, from the sending loop), and the lock is uncontended in practice.
struct Stats {
    /// The clock every record's send time is measured from (passed as the delivery opaque).
    start: Instant,
    record_bytes: u64,
    histogram: Histogram<u64>,
    delivered: u64,
    failed: u64,
    first_error: Option<String>,
    /// The current progress interval.
    window_start: Instant,
    window_records: u64,
    window_failed: u64,
    window_latency_us: u64,
    progress: Progress,
}

impl Stats {
    fn new(start: Instant, record_bytes: u64) -> anyhow::Result<Stats> {
        Ok(Stats {
            start,
            record_bytes,
            histogram: super::latency_histogram()?,
            delivered: 0,
            failed: 0,
            first_error: None,
            window_start: start,
            window_records: 0,
            window_failed: 0,
            window_latency_us: 0,
            progress: Progress::new(),
        })
    }

    /// One record delivered; `sent_at_ns` is its send time in nanoseconds since `start`.
    fn delivered(&mut self, sent_at_ns: usize) {
        let now = Instant::now();
        let sent_at = self.start + Duration::from_nanos(sent_at_ns as u64);
        let latency_us = now.saturating_duration_since(sent_at).as_micros() as u64;
        super::record_latency(&mut self.histogram, latency_us);
        self.delivered += 1;
        self.window_records += 1;
        self.window_latency_us += latency_us;
        self.maybe_report(now);
    }

    fn failed(&mut self, error: &KafkaError) {
        self.failed += 1;
        self.window_failed += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
        self.maybe_report(Instant::now());
    }

    /// Prints the progress line when a second has passed since the last one. Called on every
    /// delivery report and, so that a line appears while nothing is delivered (a broker that
    /// went away), from the sending and flushing loops.
    fn maybe_report(&mut self, now: Instant) {
        let secs = now.duration_since(self.window_start).as_secs_f64();
        if secs < PROGRESS_INTERVAL.as_secs_f64() {
            return;
        }
        let avg_ms = if self.window_records > 0 {
            self.window_latency_us as f64 / self.window_records as f64 / 1000.0
        } else {
            0.0
        };
        let mut line = format!(
            "{} records sent, {:.1} records/sec ({:.2} MB/sec), {avg_ms:.2} ms avg latency",
            self.window_records,
            per_sec(self.window_records, secs),
            mb_per_sec(self.window_records * self.record_bytes, secs),
        );
        if self.window_failed > 0 {
            line.push_str(&format!(", {} failed delivery", self.window_failed));
        }
        self.progress.line(&line);
        self.window_start = now;
        self.window_records = 0;
        self.window_failed = 0;
        self.window_latency_us = 0;
    }
}

/// The producer's context: delivery reports go into the shared [`Stats`].
struct Reporting {
    stats: Mutex<Stats>,
}

impl Reporting {
    fn stats(&self) -> MutexGuard<'_, Stats> {
        // A panic while holding the lock leaves counters that are still meaningful.
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ClientContext for Reporting {}

impl ProducerContext for Reporting {
    /// The send time, nanoseconds since [`Stats::start`] (no allocation per record).
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at_ns: usize) {
        match result {
            Ok(_) => self.stats().delivered(sent_at_ns),
            Err((error, _)) => self.stats().failed(error),
        }
    }
}

/// Runs the benchmark and prints the report.
pub(super) fn run(args: &ProduceArgs, common: &CommonArgs, json: bool) -> anyhow::Result<()> {
    if !args.discard {
        // librdkafka would retry a broker that is down for the whole delivery timeout, quietly.
        crate::cli_common::check_reachable(common)?;
    }
    if let (Some(partitions), false) = (args.partitions, args.discard) {
        super::create_topic_if_missing(common, &args.topic, partitions)?;
    }
    let start = Instant::now();
    let context = Reporting {
        stats: Mutex::new(Stats::new(start, args.record_size as u64)?),
    };
    // With --discard there is no producer and the loop reports each "delivery" itself.
    let (producer, discard_context) = if args.discard {
        (None, Some(context))
    } else {
        let acks = if args.transaction_size.is_some() {
            // Transactions need the idempotent producer, which needs acks=all.
            "all".to_owned()
        } else {
            args.acks.clone()
        };
        let mut defaults = vec![
            ("acks", acks),
            // --timeout-ms bounds each record's delivery (librdkafka's default is 5 minutes).
            ("message.timeout.ms", common.timeout_ms.to_string()),
            ("compression.codec", args.compression.codec().to_owned()),
            // Room for a few seconds of small records, so the loop rarely waits for space.
            ("queue.buffering.max.messages", "2000000".to_owned()),
            ("queue.buffering.max.kbytes", "1048576".to_owned()),
        ];
        if let Some(bytes) = args.batch_size {
            defaults.push(("batch.size", bytes.to_string()));
        }
        if let Some(ms) = args.linger_ms {
            defaults.push(("linger.ms", ms.to_string()));
        } else if args.transaction_size.is_some() {
            // Every transaction ends with a flush, so lingering only delays the commit (Java's
            // commitTransaction flushes; librdkafka's flush from here cannot skip the linger).
            defaults.push(("linger.ms", "0".to_owned()));
        }
        if args.transaction_size.is_some() {
            let id = args
                .transactional_id
                .clone()
                .unwrap_or_else(|| format!("sluice-perf-{}", std::process::id()));
            defaults.push(("transactional.id", id));
            // librdkafka refuses a delivery timeout longer than the transaction timeout (60 s).
            if common.timeout_ms > TRANSACTION_TIMEOUT_MS {
                defaults.push(("transaction.timeout.ms", common.timeout_ms.to_string()));
            }
        }
        let producer: ThreadedProducer<Reporting> =
            client_config(common, &defaults, &args.properties)
                .create_with_context(context)
                .context("cannot create the producer")?;
        (Some(producer), None)
    };
    let payload = payload(args.record_size);
    let deadline = args
        .duration_secs
        .map(|secs| start + Duration::from_secs(secs));
    let rate = (args.throughput > 0.0).then_some(args.throughput);
    let txn_timeout = Duration::from_millis(common.timeout_ms.max(30_000));
    let transactional = match (&producer, args.transaction_size) {
        (Some(producer), Some(size)) => {
            producer
                .init_transactions(txn_timeout)
                .context("cannot initialise the transactional producer")?;
            Some((producer, size))
        }
        _ => None,
    };
    // Where delivery reports (or, with --discard, the loop's own) add up.
    let reporting: &Reporting = match (&producer, &discard_context) {
        (Some(producer), _) => producer.context(),
        (None, Some(discard)) => discard,
        (None, None) => unreachable!("either a producer or a discard context"),
    };
    let mut transactions: u64 = 0;
    let mut sent: u64 = 0;
    let mut next_progress_check = start;
    loop {
        if args.num_records.is_some_and(|n| sent >= n) {
            break;
        }
        let mut now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        if now >= next_progress_check {
            reporting.stats().maybe_report(now);
            next_progress_check = now + PROGRESS_CHECK_INTERVAL;
        }
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(sent as f64 / rate);
            if due > now {
                std::thread::sleep(due - now);
                now = Instant::now();
            }
        }
        if let Some((producer, size)) = transactional {
            if sent.is_multiple_of(size) {
                if sent > 0 {
                    commit(producer, txn_timeout)?;
                    transactions += 1;
                }
                producer
                    .begin_transaction()
                    .context("cannot begin a transaction")?;
            }
        }
        let sent_at_ns = now.duration_since(start).as_nanos() as usize;
        match &producer {
            Some(producer) => send(producer, &args.topic, &payload, sent_at_ns)?,
            None => reporting.stats().delivered(sent_at_ns),
        }
        sent += 1;
    }
    if let (Some((producer, _)), true) = (transactional, sent > 0) {
        commit(producer, txn_timeout)?;
        transactions += 1;
    }
    if let Some(producer) = &producer {
        // Every record gets a delivery report within `message.timeout.ms`, so this ends;
        // progress lines go on meanwhile, also while nothing is delivered.
        while producer.in_flight_count() > 0 {
            let _ = producer.flush(PROGRESS_CHECK_INTERVAL);
            reporting.stats().maybe_report(Instant::now());
        }
    }
    let elapsed_secs = start.elapsed().as_secs_f64();
    let mut stats = reporting.stats();
    stats.progress.finish();
    let mut report = report(args, &stats, elapsed_secs);
    report.transactions = transactions;
    let verb = if args.discard { "discarded" } else { "sent" };
    let text = format!(
        "{} records {verb}, {:.1} records/sec ({:.2} MB/sec), {} latency",
        report.records,
        report.records_per_sec,
        report.mb_per_sec,
        report.latency.text(),
    );
    let text = if report.transactions > 0 {
        format!("{text}, {} transactions", report.transactions)
    } else {
        text
    };
    print_report(&report, &text, json)?;
    if stats.failed > 0 {
        bail!(
            "{} of {sent} records failed delivery (each had --timeout-ms, {} ms, to be \
             delivered); the first: {}",
            stats.failed,
            common.timeout_ms,
            stats.first_error.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(())
}

/// Commits the open transaction once its records are delivered. The records are drained here
/// in 1 ms flushes: rdkafka's own `flush` (and the one inside `commit_transaction`) waits in
/// 100 ms polls, which would cap this tool at one transaction per 100 ms.
fn commit(producer: &ThreadedProducer<Reporting>, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if Instant::now() >= deadline {
            bail!("the transaction's records were not delivered within {timeout:?}");
        }
        // Each short flush asks librdkafka to send what lingers now; its timeout is expected.
        let _ = producer.flush(Duration::from_millis(1));
    }
    producer
        .commit_transaction(timeout)
        .context("cannot commit a transaction")
}

/// Enqueues one record, waiting (and serving delivery reports) while librdkafka's queue is full.
fn send(
    producer: &ThreadedProducer<Reporting>,
    topic: &str,
    payload: &[u8],
    sent_at_ns: usize,
) -> anyhow::Result<()> {
    let mut record =
        BaseRecord::<(), [u8], usize>::with_opaque_to(topic, sent_at_ns).payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(QUEUE_FULL_BACKOFF);
                // The queue stays full while nothing is delivered: keep the progress lines.
                producer.context().stats().maybe_report(Instant::now());
            }
            Err((error, _)) => return Err(error).context("cannot enqueue a record"),
        }
    }
}

fn report(args: &ProduceArgs, stats: &Stats, elapsed_secs: f64) -> ProduceReport {
    let histogram = &stats.histogram;
    ProduceReport {
        topic: args.topic.clone(),
        records: stats.delivered,
        failed: stats.failed,
        record_size_bytes: args.record_size,
        discard: args.discard,
        transactions: 0,
        elapsed_secs,
        records_per_sec: per_sec(stats.delivered, elapsed_secs),
        mb_per_sec: mb_per_sec(stats.delivered * args.record_size as u64, elapsed_secs),
        latency: Latencies::of(histogram),
    }
}

/// One record value reused for every record: printable pseudo-random letters (as Kafka's tool
/// uses), so compression sees text, though every record is the same text.
fn payload(size: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..size)
        .map(|_| {
            // xorshift32: no dependency for a few bytes of noise.
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            b'A' + (state % 26) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_is_positive_or_unlimited() {
        assert_eq!(parse_throughput("-1").unwrap(), -1.0);
        assert_eq!(parse_throughput("2500.5").unwrap(), 2500.5);
        assert!(parse_throughput("0").is_err());
        assert!(parse_throughput("fast").is_err());
    }

    #[test]
    fn payload_is_letters_of_the_requested_size() {
        let value = payload(1000);
        assert_eq!(value.len(), 1000);
        assert!(value.iter().all(u8::is_ascii_uppercase));
        assert!(payload(0).is_empty());
    }
}
