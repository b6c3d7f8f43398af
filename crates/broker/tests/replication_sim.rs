//! Deterministic simulation of replication and the controller, with injected faults.
//!
//! The model: one topic with one partition, replication factor 3, `min.insync.replicas` 2,
//! on 3 (and on 5) brokers. Each broker is a real `sluice_broker::partition::Partition` over a
//! real `sluice_log::PartitionLog` in its own directory, driven by a transcription of the
//! broker's glue (`apply_metadata`, the replica fetcher, the Fetch / OffsetForLeaderEpoch /
//! Produce handlers, the ISR shrinker, `request_isr_change`); the decisions are the real ones
//! (`LeaderState` through `Partition`, `truncation_offset`, the `sluice_meta::controller`
//! functions and `MetadataState::apply` with its epoch checks). The metadata quorum is a
//! linearizable log (Raft is tested elsewhere); each broker and the client see it only up to
//! the index the controller's pushes reached them with, so a cut-off broker keeps a stale view
//! and may believe it still leads. The active controller is an actor that takes heartbeats,
//! fences and unfences brokers, elects leaders and applies AlterPartition proposals.
//!
//! Everything talks through a simulated network in virtual time: messages are dropped,
//! delayed (and so reordered), and cut by partitions of one node or one link. Brokers crash
//! (the log is dropped without closing and recovered with `clean = false`; role, fetchers and
//! waiters are lost) and pause (a stopped process: it resumes later with a stale view and
//! stale queued requests); the controller fails over (liveness restarts). A client produces
//! the values 0, 1, 2, ... one at a time with acks=all and never retries.
//!
//! Checked during the run: at most one broker ever leads a given leader epoch; a leader's high
//! watermark never decreases during one leadership; whatever any leader committed (below a
//! high watermark it published) is held unchanged by every later leader. Checked after healing
//! and settling: every acknowledged value is in the final leader's log exactly once, at the
//! acknowledged offset and epoch, in the order acknowledged; in-sync replicas hold exactly the
//! leader's log below the high watermark.
//!
//! Every run is a function of its seed: `SIM_SEED=n` replays one seed (`SIM_TRACE=1` prints
//! its events), `SIM_SEEDS=n` runs more seeds than the default.

#[path = "replication_sim/checker.rs"]
mod checker;
#[path = "replication_sim/controller.rs"]
mod controller;
#[path = "replication_sim/net.rs"]
mod net;
#[path = "replication_sim/node.rs"]
mod node;
#[path = "replication_sim/records.rs"]
mod records;
#[path = "replication_sim/rng.rs"]
mod rng;
#[path = "replication_sim/world.rs"]
mod world;

use world::{RunStats, SimConfig, World};

/// Virtual milliseconds per simulation step.
pub(crate) const STEP_MS: u64 = 10;

fn seeds(default: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        return vec![seed.parse().expect("SIM_SEED is a number")];
    }
    let count = std::env::var("SIM_SEEDS")
        .ok()
        .map_or(default, |n| n.parse().expect("SIM_SEEDS is a number"));
    (0..count).collect()
}

thread_local! {
    /// Set while this thread runs a seed whose panic is caught and reported in the summary.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A panic hook that stays silent for caught seed failures and prints everything else.
fn install_quiet_hook() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                default(info);
            }
        }));
    });
}

/// Runs `default_seeds` seeds (or those `SIM_SEED` / `SIM_SEEDS` ask for), prints a summary
/// line, and fails listing every seed that broke an invariant, except those in `known`
/// (which must still fail: see `KNOWN_BUG_SEEDS`). A single seed asked for with `SIM_SEED` runs
/// unguarded, so its failure prints the whole event trace.
fn run_many(config: SimConfig, default_seeds: u64, known: &[u64]) {
    let started = std::time::Instant::now();
    let single = std::env::var("SIM_SEED").is_ok();
    let seeds = seeds(default_seeds);
    let mut total = RunStats::default();
    let mut failures: Vec<(u64, String)> = Vec::new();
    install_quiet_hook();
    for &seed in &seeds {
        let outcome = if single {
            Ok(World::new(seed, config).run(config))
        } else {
            // The failures are reported together below, one line each.
            QUIET.with(|q| q.set(true));
            let outcome = std::panic::catch_unwind(|| World::new(seed, config).run(config));
            QUIET.with(|q| q.set(false));
            outcome
        };
        let stats = match outcome {
            Ok(stats) => stats,
            Err(panic) => {
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let first = text.lines().next().unwrap_or_default().to_string();
                failures.push((seed, first));
                continue;
            }
        };
        total.acked += stats.acked;
        total.produced += stats.produced;
        total.leaderships += stats.leaderships;
        total.metadata_records += stats.metadata_records;
        total.faults.crashes += stats.faults.crashes;
        total.faults.pauses += stats.faults.pauses;
        total.faults.isolations += stats.faults.isolations;
        total.faults.link_cuts += stats.faults.link_cuts;
        total.faults.failovers += stats.faults.failovers;
        total.net.sent += stats.net.sent;
        total.net.dropped += stats.net.dropped;
        total.net.delayed += stats.net.delayed;
        total.net.cut += stats.net.cut;
    }
    let f = total.faults;
    println!(
        "replication_sim: {} brokers, {} seeds ({} failed), {} of {} values acknowledged, \
         {} leaderships, {} metadata records; faults: {} crashes, {} pauses, {} isolations, \
         {} link cuts, {} controller failovers, {} of {} messages dropped, {} delayed, {} cut; \
         {:.1?}",
        config.brokers,
        seeds.len(),
        failures.len(),
        total.acked,
        total.produced,
        total.leaderships,
        total.metadata_records,
        f.crashes,
        f.pauses,
        f.isolations,
        f.link_cuts,
        f.failovers,
        total.net.dropped,
        total.net.sent,
        total.net.delayed,
        total.net.cut,
        started.elapsed()
    );
    for (seed, failure) in &failures {
        println!(
            "  {}seed {seed}: {failure}",
            if known.contains(seed) { "known: " } else { "" }
        );
    }
    let unexpected: Vec<&(u64, String)> = failures
        .iter()
        .filter(|(s, text)| !(known.contains(s) && text.contains(" committed")))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} seeds broke an invariant (replay one with SIM_SEED=n SIM_TRACE=1): {:?}",
        unexpected.len(),
        unexpected.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
    let fixed: Vec<u64> = known
        .iter()
        .copied()
        .filter(|k| seeds.contains(k) && !failures.iter().any(|(s, _)| s == k))
        .collect();
    assert!(
        fixed.is_empty(),
        "known-bug seeds {fixed:?} pass now: if the bug is fixed, remove them from the list"
    );
}

/// Seeds that fail because of a known broker bug (reported, not hidden: a known seed must fail
/// with the committed-record violation and keep failing until the bug is fixed). None now.
/// The first entries were seeds 69, 331, ... (three brokers) and 6, 70, 86, ... (five): a
/// follower being added back to the ISR did not hold back the high watermark until the change
/// was committed, so it could join the ISR behind acknowledged records and, once elected, lose
/// them. Fixed by counting pending additions (Kafka's "maximal ISR", KIP-497/841) in
/// `LeaderState::pending_additions`.
const KNOWN_BUG_SEEDS_3: &[u64] = &[];
const KNOWN_BUG_SEEDS_5: &[u64] = &[];

#[test]
fn three_brokers_survive_faults() {
    run_many(
        SimConfig {
            brokers: 3,
            fault_steps: 1500,
            heal_steps: 500,
        },
        400,
        KNOWN_BUG_SEEDS_3,
    );
}

#[test]
fn five_brokers_survive_faults() {
    run_many(
        SimConfig {
            brokers: 5,
            fault_steps: 1500,
            heal_steps: 500,
        },
        200,
        KNOWN_BUG_SEEDS_5,
    );
}

/// The same seed gives the same run: the simulation depends on nothing but its seed.
#[test]
fn a_seed_replays_identically() {
    let config = SimConfig {
        brokers: 3,
        fault_steps: 600,
        heal_steps: 300,
    };
    for seed in [3, 1_000_003] {
        let first = World::new(seed, config).run(config);
        let second = World::new(seed, config).run(config);
        assert_eq!(first, second, "seed {seed} ran differently twice");
        assert!(
            first.acked > 0,
            "seed {seed} acknowledged nothing: {first:?}"
        );
    }
}
