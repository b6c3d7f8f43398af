//! End-to-end tests: a real `sluice serve` process driven by real clients over TCP. Every test
//! that starts a process runs under a [`watchdog`]: none can hang CI.

mod admin;
mod bad_input;
mod broken_stderr;
mod cli;
mod closing;
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
mod internal_topics;
mod io_cli;
mod limits;
mod membership;
mod metrics;
mod perf_cli;
mod perf_e2e;
mod produce_consume;
mod record_validation;
mod scale;
mod storage;
mod topic_cli;
mod transactions;
mod watchdog;
mod wire;
