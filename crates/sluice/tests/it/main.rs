//! End-to-end tests: a real `sluice serve` process driven by real clients over TCP.

mod admin;
mod bad_input;
mod cli;
mod cluster;
mod cluster_cli;
mod cluster_harness;
mod compaction;
mod configs;
mod console;
mod crash;
mod damage;
mod groups;
mod harness;
mod io_cli;
mod metrics;
mod perf_cli;
mod perf_e2e;
mod produce_consume;
mod scale;
mod storage;
mod topic_cli;
mod transactions;
mod wire;
