//! `sluice perf produce|consume|end-to-end`: throughput and latency of a broker as a client sees it, in the
//! spirit of Kafka's `kafka-producer-perf-test.sh` and `kafka-consumer-perf-test.sh`.
//!
//! The client is librdkafka (through `rdkafka`), not this crate's own protocol client: it is
//! the reference high-performance Kafka client and what users compare brokers with, so numbers
//! from `sluice perf` can be set beside numbers from other tools built on it. The tool's own
//! ceiling (record generation, throttling, latency bookkeeping, no network) is measured by
//! `sluice perf produce --discard`; see the README's "Benchmarking" section.

mod consume;
mod end_to_end;
mod produce;

use std::io::IsTerminal as _;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rdkafka::config::ClientConfig;

use crate::cli_common::{CommonArgs, Output};
use consume::ConsumeArgs;
use end_to_end::EndToEndArgs;
use produce::ProduceArgs;

/// Bytes in the MB of "MB/sec": 2^20, as Kafka's perf tools count, so the numbers compare.
const BYTES_PER_MB: f64 = 1024.0 * 1024.0;

/// Flags shared by every `sluice perf` subcommand.
#[derive(Debug, Args)]
pub(crate) struct PerfArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Print the final report as JSON (same as `--output json`).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: PerfCommand,
}

#[derive(Debug, Subcommand)]
enum PerfCommand {
    /// Produce records as fast as allowed; report records/s, MB/s and delivery latency.
    Produce(ProduceArgs),
    /// Read records from the beginning of a topic; report records/s and MB/s.
    Consume(ConsumeArgs),
    /// Produce at a fixed rate and consume in the same process; report the latency from send to
    /// receipt.
    EndToEnd(EndToEndArgs),
}

/// Runs a `sluice perf` subcommand to completion and prints its report on stdout.
pub(crate) fn run(args: PerfArgs) -> anyhow::Result<()> {
    let json = args.json || args.common.output == Output::Json;
    match &args.command {
        PerfCommand::Produce(produce) => produce::run(produce, &args.common, json),
        PerfCommand::Consume(consume) => consume::run(consume, &args.common, json),
        PerfCommand::EndToEnd(end_to_end) => end_to_end::run(end_to_end, &args.common, json),
    }
}

/// librdkafka settings for the bootstrap broker, then the user's `KEY=VALUE` properties (which
/// win over everything set before them).
fn client_config(
    common: &CommonArgs,
    defaults: &[(&str, String)],
    properties: &[(String, String)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", common.bootstrap_server());
    for (key, value) in defaults {
        config.set(*key, value);
    }
    for (key, value) in properties {
        config.set(key, value);
    }
    config
}

/// `KEY=VALUE` for `--producer-property` / `--consumer-property`.
fn parse_key_value(text: &str) -> anyhow::Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => bail!("expected KEY=VALUE, got `{text}`"),
    }
}

/// `bytes` over `secs` in MB/s (MB = 2^20 bytes); 0 for an empty interval.
fn mb_per_sec(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / BYTES_PER_MB / secs
    } else {
        0.0
    }
}

/// `count` over `secs`; 0 for an empty interval.
fn per_sec(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// The once-a-second progress line on stderr: rewritten in place with `\r` on a terminal, one line
/// per report otherwise (so logs and CI output stay readable).
struct Progress {
    terminal: bool,
    printed: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            printed: false,
        }
    }

    fn line(&mut self, text: &str) {
        if self.terminal {
            // `\x1b[K` clears what a longer previous line left behind.
            eprint!("\r{text}\x1b[K");
        } else {
            eprintln!("{text}");
        }
        self.printed = true;
    }

    /// Ends the in-place line so the final report starts on a fresh one.
    fn finish(&mut self) {
        if self.terminal && self.printed {
            eprintln!();
        }
        self.printed = false;
    }
}

/// Prints the final report on stdout: `json` pretty-printed, or `text`.
fn print_report(report: &impl serde::Serialize, text: &str, json: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let out = if json {
        crate::cli_common::json(report)?
    } else {
        format!("{text}\n")
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")
}

/// Largest latency the histograms track exactly (one hour, in microseconds); longer ones are
/// clamped to it.
const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Significant decimal digits of each histogram value (0.1% resolution).
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// A histogram of latencies in microseconds.
fn latency_histogram() -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    use anyhow::Context as _;
    hdrhistogram::Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .context("cannot create the latency histogram")
}

/// Records one latency, clamped to what the histogram tracks.
fn record_latency(histogram: &mut hdrhistogram::Histogram<u64>, latency_us: u64) {
    histogram.saturating_record(latency_us.clamp(1, LATENCY_US_MAX));
}

/// The latency part of a report, in milliseconds (zeros when nothing was measured).
#[derive(Debug, Default, serde::Serialize)]
struct Latencies {
    avg_latency_ms: f64,
    p50_latency_ms: f64,
    p95_latency_ms: f64,
    p99_latency_ms: f64,
    p999_latency_ms: f64,
    max_latency_ms: f64,
}

impl Latencies {
    fn of(histogram: &hdrhistogram::Histogram<u64>) -> Latencies {
        if histogram.is_empty() {
            return Latencies::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let quantile = |q: f64| ms(histogram.value_at_quantile(q));
        Latencies {
            avg_latency_ms: histogram.mean() / 1000.0,
            p50_latency_ms: quantile(0.50),
            p95_latency_ms: quantile(0.95),
            p99_latency_ms: quantile(0.99),
            p999_latency_ms: quantile(0.999),
            max_latency_ms: ms(histogram.max()),
        }
    }

    /// `avg A ms, p50 .., p95 .., p99 .., p99.9 .., max .. ms`.
    fn text(&self) -> String {
        format!(
            "avg {:.2} ms, p50 {:.2}, p95 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2} ms",
            self.avg_latency_ms,
            self.p50_latency_ms,
            self.p95_latency_ms,
            self.p99_latency_ms,
            self.p999_latency_ms,
            self.max_latency_ms
        )
    }
}

/// CreateTopics for `--partitions`; an existing topic is used as it is.
fn create_topic_if_missing(
    common: &CommonArgs,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        client_config(common, &[], &[])
            .create()
            .context("cannot create the admin client")?;
    let timeout = std::time::Duration::from_millis(common.timeout_ms);
    let new_topic = rdkafka::admin::NewTopic::new(
        topic,
        partitions,
        rdkafka::admin::TopicReplication::Fixed(1),
    );
    let options = rdkafka::admin::AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let results = runtime
        .block_on(admin.create_topics([&new_topic], &options))
        .with_context(|| format!("cannot create topic {topic}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, rdkafka::error::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_key_value_pairs() {
        assert_eq!(
            parse_key_value("enable.idempotence=true").unwrap(),
            ("enable.idempotence".to_owned(), "true".to_owned())
        );
        assert_eq!(parse_key_value("a=b=c").unwrap().1, "b=c");
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn rates_of_empty_intervals_are_zero() {
        assert_eq!(per_sec(10, 0.0), 0.0);
        assert_eq!(mb_per_sec(10, 0.0), 0.0);
        assert_eq!(mb_per_sec(2 * 1024 * 1024, 2.0), 1.0);
    }
}
