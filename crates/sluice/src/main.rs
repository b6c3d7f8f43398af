//! The `sluice` command: `sluice serve` runs a broker, `sluice group` administers consumer groups,
//! `sluice topic` administers topics, `sluice cluster status` summarises the cluster, `sluice perf` measures throughput and latency,
//! `sluice log` verifies and repairs partition files on disk; more
//! subcommands join as they are built.

mod admin_http;
mod cli_common;
pub(crate) use sluice_broker::client;
mod cluster_cli;
mod console;
mod console_api;
mod consume_cli;
mod group_cli;
mod log_cli;
mod perf_cli;
mod produce_cli;
mod serve;
mod topic_cli;

use clap::{Parser, Subcommand};

/// Sluice: a Kafka-compatible commit log in one binary.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker (zero configuration: 127.0.0.1:9092, data in ./sluice-data).
    Serve(serve::ServeArgs),
    /// Consumer groups: list, describe with lag, reset offsets.
    Group(group_cli::GroupArgs),
    /// Topics: create, list, describe with offsets, sizes and configs, alter, delete.
    Topic(topic_cli::TopicArgs),
    /// The cluster: id, controller, brokers, and partition health.
    Cluster(cluster_cli::ClusterArgs),
    /// Produce stdin lines as records (kcat -P style).
    Produce(produce_cli::ProduceArgs),
    /// Print records through a format string (kcat -C style).
    Consume(consume_cli::ConsumeArgs),
    /// Benchmarks: producer and consumer throughput and latency against a broker.
    Perf(perf_cli::PerfArgs),
    /// A partition's files on disk: verify every batch and checkpoint, repair by truncation.
    Log(log_cli::LogArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Group(args) => group_cli::run(args),
        Command::Topic(args) => topic_cli::run(args),
        Command::Cluster(args) => cluster_cli::run(args),
        Command::Produce(args) => produce_cli::run(args),
        Command::Consume(args) => consume_cli::run(args),
        Command::Perf(args) => perf_cli::run(args),
        Command::Log(args) => log_cli::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            use std::io::Write as _;
            // `eprintln!` would panic (exit 101) when stderr is a broken pipe.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
