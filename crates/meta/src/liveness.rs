//! Broker liveness as the metadata leader sees it: when each node last sent a heartbeat.
//!
//! In memory only, and only meaningful on the leader. A new leader knows nothing about the past,
//! so when this node's leadership starts (a new term) every voter counts as seen at that moment:
//! fencing waits a full session timeout after a failover before declaring anyone dead.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use parking_lot::Mutex;

use crate::raft_types::NodeId;

/// Last heartbeats of the leadership term they were received in.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The term this node led when the map was last reset; `None` while not leading.
    term: Option<u64>,
    last_heartbeat: BTreeMap<NodeId, Instant>,
}

/// What the caller knows about this node's leadership right now.
#[derive(Debug)]
pub(crate) struct Leadership<'a> {
    pub(crate) term: u64,
    pub(crate) voters: &'a BTreeSet<NodeId>,
}

impl Liveness {
    /// Notes this node's leadership state: on the start of a new leadership term the map is reset
    /// to "every voter seen now"; when not leading it is emptied.
    pub(crate) fn observe(&self, leadership: Option<Leadership<'_>>) {
        let mut inner = self.inner.lock();
        match leadership {
            Some(leadership) if inner.term == Some(leadership.term) => {}
            Some(leadership) => {
                let now = Instant::now();
                inner.term = Some(leadership.term);
                inner.last_heartbeat = leadership.voters.iter().map(|&id| (id, now)).collect();
            }
            None => {
                inner.term = None;
                inner.last_heartbeat.clear();
            }
        }
    }

    /// Records a heartbeat from `from` (the caller has checked that this node leads in `term`).
    pub(crate) fn record(&self, from: NodeId, leadership: Leadership<'_>) {
        self.observe(Some(leadership));
        self.inner
            .lock()
            .last_heartbeat
            .insert(from, Instant::now());
    }

    /// The map, if it belongs to the leadership term `term`.
    pub(crate) fn snapshot(&self, leadership: Leadership<'_>) -> BTreeMap<NodeId, Instant> {
        self.observe(Some(leadership));
        self.inner.lock().last_heartbeat.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_term_resets_every_voter_to_now() {
        let liveness = Liveness::default();
        let voters = BTreeSet::from([NodeId(1), NodeId(2), NodeId(3)]);
        let lead = |term| Leadership {
            term,
            voters: &voters,
        };
        let start = liveness.snapshot(lead(5));
        assert_eq!(start.len(), 3);
        liveness.record(NodeId(2), lead(5));
        let later = liveness.snapshot(lead(5));
        assert!(later[&NodeId(2)] >= start[&NodeId(2)]);
        assert_eq!(later[&NodeId(1)], start[&NodeId(1)]);

        liveness.observe(None);
        let next = liveness.snapshot(lead(7));
        assert!(next.values().all(|&seen| seen >= later[&NodeId(2)]));
    }
}
