//! What every example shares: its command line (`--bootstrap-servers HOST:PORT
//! --application-id ID [--input TOPIC] [--output TOPIC] [--processing-guarantee G]
//! [--state-dir DIR] [--num-stream-threads N] [--commit-interval-ms MS]`), and running the
//! application until SIGTERM or Ctrl-C.

use std::time::Duration;

use sluice_streams::{KafkaStreams, ProcessingGuarantee, StreamsBuilder, StreamsConfig};

pub(crate) struct Args {
    pub(crate) bootstrap_servers: String,
    pub(crate) application_id: String,
    pub(crate) input: String,
    pub(crate) output: String,
    pub(crate) processing_guarantee: ProcessingGuarantee,
    pub(crate) state_dir: Option<String>,
    pub(crate) threads: usize,
    pub(crate) commit_interval_ms: Option<u64>,
    /// Flags the example itself reads (e.g. `--subscriptions` of `articles`).
    pub(crate) extra: Vec<(String, String)>,
}

fn usage(program: &str, message: &str) -> ! {
    eprintln!("error: {message}");
    eprintln!(
        "usage: {program} --bootstrap-servers HOST:PORT --application-id ID [--input TOPIC] [--output TOPIC] \
         [--processing-guarantee exactly_once_v2|at_least_once] [--state-dir DIR] [--num-stream-threads N] \
         [--commit-interval-ms MS]"
    );
    std::process::exit(2)
}

/// Parses the command line; `input` and `output` are the example's default topics and `extra`
/// the names of its own flags.
pub(crate) fn parse(input: &str, output: &str, extra: &[&str]) -> Args {
    let mut argv = std::env::args();
    let program = argv.next().unwrap_or_else(|| "example".into());
    let mut args = Args {
        bootstrap_servers: String::new(),
        application_id: String::new(),
        input: input.to_string(),
        output: output.to_string(),
        processing_guarantee: ProcessingGuarantee::AtLeastOnce,
        state_dir: None,
        threads: 1,
        commit_interval_ms: None,
        extra: Vec::new(),
    };
    while let Some(flag) = argv.next() {
        let Some(value) = argv.next() else {
            usage(&program, &format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--bootstrap-servers" => args.bootstrap_servers = value,
            "--application-id" => args.application_id = value,
            "--input" => args.input = value,
            "--output" => args.output = value,
            "--processing-guarantee" => {
                args.processing_guarantee = value
                    .parse()
                    .unwrap_or_else(|e: String| usage(&program, &e))
            }
            "--state-dir" => args.state_dir = Some(value),
            "--num-stream-threads" => {
                args.threads = value
                    .parse()
                    .unwrap_or_else(|_| usage(&program, "--num-stream-threads takes a number"))
            }
            "--commit-interval-ms" => {
                args.commit_interval_ms = Some(
                    value
                        .parse()
                        .unwrap_or_else(|_| usage(&program, "--commit-interval-ms takes a number")),
                )
            }
            other if extra.contains(&other.trim_start_matches("--")) => args
                .extra
                .push((other.trim_start_matches("--").to_string(), value)),
            other => usage(&program, &format!("unknown flag {other}")),
        }
    }
    if args.bootstrap_servers.is_empty() || args.application_id.is_empty() {
        usage(
            &program,
            "--bootstrap-servers and --application-id are required",
        );
    }
    args
}

impl Args {
    #[allow(dead_code)] // not every example has flags of its own
    pub(crate) fn extra(&self, name: &str, default: &str) -> String {
        self.extra
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| default.to_string())
    }

    pub(crate) fn config(&self) -> StreamsConfig {
        let mut config = StreamsConfig::new(&self.application_id, &self.bootstrap_servers)
            .processing_guarantee(self.processing_guarantee)
            .num_stream_threads(self.threads)
            // Short enough that a killed instance's partitions move on within seconds.
            .session_timeout(Duration::from_secs(10));
        if let Some(dir) = &self.state_dir {
            config = config.state_dir(dir);
        }
        if let Some(ms) = self.commit_interval_ms {
            config = config.commit_interval(Duration::from_millis(ms));
        }
        config
    }
}

/// Builds the topology (exit status 2 when it does not build), runs it until SIGTERM or Ctrl-C,
/// then closes cleanly. Prints `running` on stdout once the threads started, and metrics on
/// stderr every 10 seconds.
pub(crate) fn run(builder: StreamsBuilder, config: StreamsConfig) -> ! {
    let topology = builder.build().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let (application_id, guarantee) = (config.application_id.clone(), config.processing_guarantee);
    let mut app = KafkaStreams::new(topology, config);
    if let Err(e) = app.start() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    println!("running {application_id} ({guarantee:?})");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a signal runtime");
    let status = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = term.recv() => break 0,
                _ = tokio::signal::ctrl_c() => break 0,
                _ = tick.tick() => {
                    if let sluice_streams::State::Error(e) = app.state() {
                        eprintln!("error: {e}");
                        break 1;
                    }
                    let m = app.metrics();
                    eprintln!(
                        "state {:?}: {} records ({:.0}/s), lag {}, {} commits (avg {:.1} ms, max {:.1} ms), restored {} ({} left), {} aborted",
                        app.state(), m.records_processed, m.process_rate_per_sec, m.consumer_lag, m.commits,
                        m.commit_latency_avg_ms, m.commit_latency_max_ms, m.records_restored, m.restore_remaining,
                        m.transactions_aborted
                    );
                }
            }
        }
    });
    let closed = app.close(Duration::from_secs(30));
    if let Err(e) = closed {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    std::process::exit(status)
}
