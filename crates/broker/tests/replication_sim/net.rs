//! The simulated network: messages between the brokers, the controller and the client,
//! delivered after a random delay (so they reorder), dropped at random, and cut by network
//! partitions (a link or every link of one node) for a while. Time is virtual milliseconds.

use std::collections::BTreeMap;

use bytes::Bytes;
use sluice_meta::MetadataRecord;

use crate::rng::Rng;
use crate::STEP_MS;

/// Who sends and receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Addr {
    Node(i32),
    /// The active controller (the metadata quorum's leader).
    Controller,
    Client,
}

/// Why a broker refused a request (the Kafka error codes the simulated paths can meet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    NotLeaderOrFollower,
    FencedLeaderEpoch,
    UnknownLeaderEpoch,
    OffsetOutOfRange,
    NotEnoughReplicas,
    NotEnoughReplicasAfterAppend,
}

/// The messages of the model.
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    /// Broker → controller: I am alive.
    Heartbeat,
    /// Controller → broker or client: the metadata log is committed up to `upto`.
    Metadata { upto: usize },
    /// Leader → controller: AlterPartition (an ISR change computed from the leader's view).
    AlterIsr { record: MetadataRecord },
    /// Controller → leader: the change was committed (applied or refused).
    /// The proposal was answered; like the real `propose`, this node has applied the metadata
    /// up to `upto` (the index the answer was given at) when it returns.
    AlterIsrDone { upto: usize },
    /// Follower → leader: OffsetForLeaderEpoch.
    EpochQuery {
        id: u64,
        current_leader_epoch: i32,
        leader_epoch: i32,
    },
    EpochAnswer {
        id: u64,
        result: Result<(i32, i64), Refusal>,
    },
    /// Follower → leader: a replica fetch from `offset`.
    Fetch {
        id: u64,
        current_leader_epoch: i32,
        offset: i64,
    },
    FetchAnswer {
        id: u64,
        error: Option<Refusal>,
        high_watermark: i64,
        log_start_offset: i64,
        records: Bytes,
    },
    /// Client → broker: produce one record (acks=all).
    Produce { id: u64, value: u64 },
    /// Broker → client: the offset and leader epoch of an acknowledged record, or why not.
    ProduceAnswer {
        id: u64,
        result: Result<(i64, i32), Refusal>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    pub(crate) from: Addr,
    pub(crate) to: Addr,
    pub(crate) msg: Msg,
}

/// A cut link (`peer` None: every link of `node`) until a time.
#[derive(Debug, Clone, Copy)]
struct Cut {
    node: Addr,
    peer: Option<Addr>,
    until: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NetStats {
    pub(crate) sent: u64,
    pub(crate) dropped: u64,
    pub(crate) delayed: u64,
    pub(crate) cut: u64,
}

#[derive(Debug)]
pub(crate) struct Network {
    queue: BTreeMap<(u64, u64), Envelope>,
    seq: u64,
    cuts: Vec<Cut>,
    /// Probability that a message is lost.
    pub(crate) drop_p: f64,
    /// Probability that a message takes a long extra delay (and so overtakes or is overtaken).
    pub(crate) delay_p: f64,
    pub(crate) stats: NetStats,
}

impl Network {
    pub(crate) fn new(drop_p: f64, delay_p: f64) -> Self {
        Network {
            queue: BTreeMap::new(),
            seq: 0,
            cuts: Vec::new(),
            drop_p,
            delay_p,
            stats: NetStats::default(),
        }
    }

    /// Whether `a` and `b` cannot talk at `now`.
    pub(crate) fn is_cut(&self, a: Addr, b: Addr, now: u64) -> bool {
        self.cuts.iter().any(|c| {
            c.until > now
                && match c.peer {
                    None => c.node == a || c.node == b,
                    Some(peer) => (c.node == a && peer == b) || (c.node == b && peer == a),
                }
        })
    }

    pub(crate) fn isolate(&mut self, node: Addr, until: u64) {
        self.cuts.push(Cut {
            node,
            peer: None,
            until,
        });
    }

    pub(crate) fn cut_link(&mut self, a: Addr, b: Addr, until: u64) {
        self.cuts.push(Cut {
            node: a,
            peer: Some(b),
            until,
        });
    }

    /// Ends every partition and every random loss and delay.
    pub(crate) fn heal(&mut self) {
        self.cuts.clear();
        self.drop_p = 0.0;
        self.delay_p = 0.0;
    }

    pub(crate) fn send(&mut self, rng: &mut Rng, now: u64, from: Addr, to: Addr, msg: Msg) {
        self.stats.sent += 1;
        if self.is_cut(from, to, now) {
            self.stats.cut += 1;
            return;
        }
        if rng.chance(self.drop_p) {
            self.stats.dropped += 1;
            return;
        }
        let mut delay = rng.between(1, 2) * STEP_MS;
        if rng.chance(self.delay_p) {
            self.stats.delayed += 1;
            delay += rng.between(1, 30) * STEP_MS;
        }
        self.enqueue(now + delay, Envelope { from, to, msg });
    }

    /// Puts a message back to be delivered at `at` (its receiver is paused).
    pub(crate) fn enqueue(&mut self, at: u64, envelope: Envelope) {
        self.seq += 1;
        self.queue.insert((at, self.seq), envelope);
    }

    /// The next message due at `now`, unless a partition that began in flight cuts it.
    pub(crate) fn next_due(&mut self, now: u64) -> Option<Envelope> {
        loop {
            let (&key, _) = self.queue.first_key_value()?;
            if key.0 > now {
                return None;
            }
            let envelope = self.queue.remove(&key).expect("first key");
            if self.is_cut(envelope.from, envelope.to, now) {
                self.stats.cut += 1;
                continue;
            }
            return Some(envelope);
        }
    }
}
