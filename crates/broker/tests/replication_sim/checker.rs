//! The invariants, checked as the run goes and at its end. A violation panics with the seed
//! and the last events of the run, so the failure replays with `SIM_SEED`.

use std::collections::{BTreeMap, VecDeque};

use sluice_broker::partition::Partition;

use crate::records::{self, Entry};

/// How many recent events a failure report shows.
const TRACE_LEN: usize = 400;

/// A record the client saw acknowledged (acks=all).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Acked {
    pub(crate) value: u64,
    pub(crate) offset: i64,
    pub(crate) epoch: i32,
}

#[derive(Debug)]
pub(crate) struct Checker {
    /// Names the run in failure messages (seed and cluster size).
    label: String,
    trace: VecDeque<String>,
    /// `SIM_TRACE=1`: print every event as it happens.
    verbose: bool,
    /// Who became leader at each leader epoch.
    leaders_by_epoch: BTreeMap<i32, i32>,
    /// The committed log: every offset below a high watermark some leader published, with what
    /// it held then.
    committed: Vec<Entry>,
    /// Per leader: the leadership (role generation) and the high watermark last seen.
    hw_seen: BTreeMap<i32, (u64, i64)>,
    pub(crate) leaderships: u64,
}

impl Checker {
    pub(crate) fn new(label: String) -> Self {
        Checker {
            label,
            trace: VecDeque::new(),
            verbose: std::env::var("SIM_TRACE").is_ok_and(|v| v == "1"),
            leaders_by_epoch: BTreeMap::new(),
            committed: Vec::new(),
            hw_seen: BTreeMap::new(),
            leaderships: 0,
        }
    }

    /// Records an event for the failure report.
    pub(crate) fn note(&mut self, now: u64, event: String) {
        let line = format!("t={now:>5} {event}");
        if self.verbose {
            println!("{line}");
        }
        if self.trace.len() == TRACE_LEN {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    pub(crate) fn fail(&self, violation: String) -> ! {
        let trace: Vec<&str> = self.trace.iter().map(String::as_str).collect();
        panic!(
            "{}: {violation}\n--- last events ---\n{}\n--- end ---",
            self.label,
            trace.join("\n")
        );
    }

    /// A node starts leading at `epoch`: nobody else ever led that epoch, and, when `epoch` is
    /// the current leader epoch of the metadata, its log holds every committed record unchanged.
    /// A node acting on a stale view (a zombie of an older epoch) is not held to the second
    /// rule; whatever it commits must still agree with what was committed ([`Self::observe_leader`]).
    pub(crate) fn became_leader(
        &mut self,
        now: u64,
        node: i32,
        epoch: i32,
        current: bool,
        partition: &Partition,
    ) {
        self.leaderships += 1;
        self.note(
            now,
            format!(
                "node {node} becomes leader at epoch {epoch}{} (log end {}, hw {}, isr {:?})",
                if current { "" } else { " (stale view)" },
                partition.log_end_offset().0,
                partition.high_watermark().0,
                partition.isr()
            ),
        );
        match self.leaders_by_epoch.get(&epoch) {
            Some(&other) if other != node => self.fail(format!(
                "two leaders for leader epoch {epoch}: node {other} and node {node}"
            )),
            _ => {
                self.leaders_by_epoch.insert(epoch, node);
            }
        }
        if !current {
            return;
        }
        let end = partition.log_end_offset().0;
        if end < self.committed.len() as i64 {
            self.fail(format!(
                "node {node} leads epoch {epoch} with log end {end}, but offsets up to {} were committed",
                self.committed.len()
            ));
        }
        let held = records::entries(partition, 0, self.committed.len() as i64);
        self.compare_committed(node, &held);
    }

    fn compare_committed(&self, node: i32, held: &[Entry]) {
        for entry in held {
            let Some(want) = self.committed.get(entry.offset as usize) else {
                continue;
            };
            if want != entry {
                self.fail(format!(
                    "node {node} (leading) holds {entry:?} where {want:?} was committed"
                ));
            }
        }
    }

    /// After every event on a leader: its high watermark never decreases within one leadership,
    /// and what it commits agrees with everything committed before.
    pub(crate) fn observe_leader(
        &mut self,
        now: u64,
        node: i32,
        generation: u64,
        partition: &Partition,
    ) {
        let hw = partition.high_watermark().0;
        let from = match self.hw_seen.get(&node) {
            Some(&(g, seen)) if g == generation => {
                if hw < seen {
                    self.fail(format!(
                        "node {node}'s high watermark went back from {seen} to {hw} while it led"
                    ));
                }
                seen
            }
            _ => 0,
        };
        self.hw_seen.insert(node, (generation, hw));
        if hw <= from {
            return;
        }
        let held = records::entries(partition, from, hw);
        if held.len() as i64 != hw - from {
            self.fail(format!(
                "node {node} publishes high watermark {hw} but holds only {} records from {from}",
                held.len()
            ));
        }
        self.compare_committed(node, &held);
        for entry in held {
            if entry.offset as usize == self.committed.len() {
                self.committed.push(entry);
            }
        }
        if self.verbose {
            self.note(now, format!("node {node} high watermark {hw}"));
        }
    }

    /// The end of the run, after healing: the final leader holds every acknowledged value once,
    /// in the order acknowledged, at the offset acknowledged; every in-sync replica's log is
    /// identical to the leader's below the high watermark; everything committed is there.
    pub(crate) fn check_final(
        &self,
        leader: i32,
        leader_log: &[Entry],
        high_watermark: i64,
        in_sync: &[(i32, Vec<Entry>)],
        acked: &[Acked],
    ) {
        let mut positions: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (i, entry) in leader_log.iter().enumerate() {
            positions.entry(entry.value).or_default().push(i);
        }
        let mut last: Option<(u64, usize)> = None;
        for ack in acked {
            let found = positions.get(&ack.value).map_or(&[][..], Vec::as_slice);
            if found.len() != 1 {
                self.fail(format!(
                    "acknowledged value {} ({ack:?}) appears {} times in final leader {leader}'s log",
                    ack.value,
                    found.len()
                ));
            }
            let entry = leader_log[found[0]];
            if entry.offset != ack.offset || entry.epoch != ack.epoch {
                self.fail(format!(
                    "acknowledged {ack:?} is at {entry:?} in final leader {leader}'s log"
                ));
            }
            if let Some((value, at)) = last {
                if found[0] <= at {
                    self.fail(format!(
                        "acknowledged value {} comes before acknowledged value {value} in the log",
                        ack.value
                    ));
                }
            }
            last = Some((ack.value, found[0]));
            if ack.offset >= high_watermark {
                self.fail(format!(
                    "acknowledged {ack:?} is not below the final high watermark {high_watermark}"
                ));
            }
        }
        let below_hw = &leader_log[..(high_watermark as usize).min(leader_log.len())];
        if (below_hw.len() as i64) < high_watermark {
            self.fail(format!(
                "final leader {leader} has {} records below its high watermark {high_watermark}",
                below_hw.len()
            ));
        }
        for (node, log) in in_sync {
            let mine = &log[..(high_watermark as usize).min(log.len())];
            if mine != below_hw {
                let diverge = mine
                    .iter()
                    .zip(below_hw)
                    .position(|(a, b)| a != b)
                    .unwrap_or(mine.len().min(below_hw.len()));
                self.fail(format!(
                    "in-sync replica {node} differs from leader {leader} below the high watermark {high_watermark}: \
                     {} vs {} records, first difference at {diverge}",
                    mine.len(),
                    below_hw.len()
                ));
            }
        }
        self.compare_committed(leader, leader_log);
        if (leader_log.len()) < self.committed.len() {
            self.fail(format!(
                "final leader {leader} has {} records but {} were committed",
                leader_log.len(),
                self.committed.len()
            ));
        }
    }
}
