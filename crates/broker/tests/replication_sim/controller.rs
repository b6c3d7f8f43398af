//! The metadata side: a linearizable log of committed records (the Raft quorum itself is
//! tested elsewhere) with the state after each, and the active controller as a simulated
//! actor running `controller_pass` over the real `sluice_meta::controller` decisions.

use std::collections::BTreeMap;

use sluice_meta::controller::{elect_leaderless, fence_broker, preferred_leaders, unfence_broker};
use sluice_meta::{MetadataRecord, MetadataState, NodeId, Outcome};

use crate::checker::Checker;

/// `broker.session.timeout.ms`.
pub(crate) const SESSION_MS: u64 = 400;
/// `CONTROLLER_TICK`.
pub(crate) const CONTROLLER_TICK_MS: u64 = 50;
/// `REBALANCE_EVERY` (preferred leader election).
const REBALANCE_MS: u64 = 1500;

/// The committed metadata log; `states[i]` is the state after the first `i` records past the
/// setup (`states[0]` holds the brokers and the topic).
#[derive(Debug)]
pub(crate) struct MetaLog {
    pub(crate) records: Vec<MetadataRecord>,
    pub(crate) states: Vec<MetadataState>,
}

impl MetaLog {
    pub(crate) fn new(setup: MetadataState) -> Self {
        MetaLog {
            records: Vec::new(),
            states: vec![setup],
        }
    }

    pub(crate) fn latest(&self) -> &MetadataState {
        self.states.last().expect("the setup state")
    }

    pub(crate) fn last_index(&self) -> usize {
        self.states.len() - 1
    }

    /// Commits `record`: applied to the latest state, or refused by its checks (a refused
    /// record is committed too and changes nothing, as in the real state machine).
    pub(crate) fn commit(&mut self, record: MetadataRecord) -> Outcome {
        let mut next = self.latest().clone();
        let outcome = next.apply(&record);
        self.records.push(record);
        self.states.push(next);
        outcome
    }
}

/// The active controller's memory: when each broker last heartbeated (`Liveness`).
#[derive(Debug)]
pub(crate) struct Controller {
    last_heartbeat: BTreeMap<NodeId, u64>,
    next_tick: u64,
    last_rebalance: u64,
    rebalance: bool,
}

impl Controller {
    pub(crate) fn new(brokers: &[i32], rebalance: bool) -> Self {
        Controller {
            last_heartbeat: brokers.iter().map(|b| (NodeId(*b as u64), 0)).collect(),
            next_tick: 0,
            last_rebalance: 0,
            rebalance,
        }
    }

    pub(crate) fn heartbeat(&mut self, from: i32, now: u64) {
        self.last_heartbeat.insert(NodeId(from as u64), now);
    }

    /// A new controller takes over: it counts every voter as seen now.
    pub(crate) fn fail_over(&mut self, now: u64) {
        for seen in self.last_heartbeat.values_mut() {
            *seen = now;
        }
    }

    /// `controller_loop` + `controller_pass`: fence the silent, unfence the returning, elect
    /// leaders for leaderless partitions, move leadership back to preferred replicas.
    pub(crate) fn tick(&mut self, now: u64, meta: &mut MetaLog, checker: &mut Checker) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + CONTROLLER_TICK_MS;
        let rebalance = self.rebalance && now >= self.last_rebalance + REBALANCE_MS;
        if rebalance {
            self.last_rebalance = now;
        }
        let state = meta.latest().clone();
        let alive = |id: &NodeId| {
            self.last_heartbeat
                .get(id)
                .is_some_and(|t| now < t + SESSION_MS)
        };
        let mut batches: Vec<Vec<MetadataRecord>> = Vec::new();
        for registration in state.brokers.values() {
            let id = registration.id;
            if registration.fenced && alive(&id) {
                checker.note(now, format!("controller unfences {id}"));
                batches.push(unfence_broker(&state, id));
            } else if !registration.fenced && !alive(&id) {
                checker.note(now, format!("controller fences {id}"));
                batches.push(fence_broker(&state, id, false));
            }
        }
        if batches.is_empty() {
            let leaderless = elect_leaderless(&state, false);
            if !leaderless.is_empty() {
                batches.push(leaderless);
            } else if rebalance {
                let preferred = preferred_leaders(&state);
                if !preferred.is_empty() {
                    checker.note(now, "controller restores the preferred leader".to_string());
                    batches.push(preferred);
                }
            }
        }
        for records in batches {
            for record in records {
                let text = record.to_string();
                let outcome = meta.commit(record);
                checker.note(
                    now,
                    format!("metadata {}: {text} -> {outcome:?}", meta.last_index()),
                );
            }
        }
    }
}
