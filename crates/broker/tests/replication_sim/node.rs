//! One simulated broker: a real [`Partition`] over a real `PartitionLog` in its own directory,
//! and the glue the broker puts around it, mirrored step for step from `cluster.rs`
//! (`apply_metadata`, `request_isr_change`, the heartbeat and ISR-shrink loops),
//! `replication/fetcher.rs` (truncate first, then fetch from the log end) and the leader-side
//! handlers (Fetch with `replica_id`, OffsetForLeaderEpoch, Produce with acks=all and
//! `wait_replicated`). Only the transport differs: simulated messages instead of TCP.

use std::path::PathBuf;

use prometheus_client::metrics::histogram::Histogram;
use sluice_broker::partition::Partition;
use sluice_broker::replication::follower::{truncation_offset, LeaderAnswer};
use sluice_log::{AppendError, LeaderEpoch, LogConfig, Offset, PartitionLog, ReadError, Timestamp};
use sluice_meta::{MetadataRecord, NodeId};
use uuid::Uuid;

use crate::checker::Checker;
use crate::controller::MetaLog;
use crate::net::{Addr, Msg, Network, Refusal};
use crate::records;
use crate::rng::Rng;

pub(crate) const TOPIC: &str = "sim";
pub(crate) const HEARTBEAT_MS: u64 = 50;
pub(crate) const LAG_MAX_MS: u64 = 400;
/// The replica fetcher's pause after a refused or failed request (fetcher.rs `BACKOFF`).
const BACKOFF_MS: u64 = 100;
/// Stands in for the long poll: a fetch that brought nothing waits this long before the next.
const FETCH_WAIT_MS: u64 = 20;
/// A request without an answer by then is given up (the connection is dropped and redone).
const REQUEST_TIMEOUT_MS: u64 = 300;
/// The produce request timeout: acks=all waiters give up then.
pub(crate) const PRODUCE_TIMEOUT_MS: u64 = 600;

/// What a node's handlers may touch besides the node itself.
pub(crate) struct Env<'a> {
    pub(crate) now: u64,
    pub(crate) rng: &'a mut Rng,
    pub(crate) net: &'a mut Network,
    pub(crate) meta: &'a MetaLog,
    pub(crate) checker: &'a mut Checker,
}

impl Env<'_> {
    fn send(&mut self, from: i32, to: Addr, msg: Msg) {
        self.net.send(self.rng, self.now, Addr::Node(from), to, msg);
    }
}

/// The request a follower's fetcher waits on (one at a time, as the real fetcher task).
#[derive(Debug, Clone, Copy)]
enum Inflight {
    /// OffsetForLeaderEpoch, sent while following at `epoch`.
    Truncate {
        id: u64,
        epoch: i32,
        sent: u64,
    },
    Fetch {
        id: u64,
        sent: u64,
    },
}

/// The replica fetcher for one leader (`Followed` in fetcher.rs, for the one partition).
#[derive(Debug, Clone)]
struct Fetcher {
    leader: i32,
    epoch: i32,
    truncated: bool,
    inflight: Option<Inflight>,
    next_at: u64,
}

/// An acks=all produce waiting for the high watermark (`wait_replicated`).
#[derive(Debug, Clone, Copy)]
struct Waiter {
    id: u64,
    offset: i64,
    generation: u64,
    deadline: u64,
}

pub(crate) struct Node {
    pub(crate) id: i32,
    dir: PathBuf,
    config: LogConfig,
    /// None while crashed.
    pub(crate) partition: Option<Partition>,
    /// How much of the metadata log this node has applied (its possibly stale view).
    pub(crate) applied: usize,
    pub(crate) paused_until: Option<u64>,
    pub(crate) down_until: Option<u64>,
    fetcher: Option<Fetcher>,
    /// Mirrors the partition's role generation: bumped when a leadership starts or the follower
    /// role changes; acks=all waiters fail when it moves.
    generation: u64,
    waiters: Vec<Waiter>,
    /// `isr_pending`: one AlterPartition in flight at a time (since when).
    isr_pending_since: Option<u64>,
    /// The AlterPartition in flight, re-sent until answered (its answer may be lost while it
    /// still commits, so giving up would let the leader forget a change that may land).
    isr_pending_record: Option<MetadataRecord>,
    next_heartbeat: u64,
    next_shrink: u64,
    next_request_id: u64,
    /// `partition_max_bytes` of this run's fetches (small, so catching up takes several).
    fetch_bytes_max: usize,
}

impl Node {
    pub(crate) fn open(id: i32, dir: PathBuf, config: LogConfig, fetch_bytes_max: usize) -> Self {
        let mut node = Node {
            id,
            dir,
            config,
            partition: None,
            applied: 0,
            paused_until: None,
            down_until: None,
            fetcher: None,
            generation: 0,
            waiters: Vec::new(),
            isr_pending_since: None,
            isr_pending_record: None,
            next_heartbeat: 0,
            next_shrink: 0,
            next_request_id: 0,
            fetch_bytes_max,
        };
        node.open_log(true);
        node
    }

    fn open_log(&mut self, clean: bool) {
        let log = PartitionLog::open(&self.dir, self.config.clone(), clean)
            .unwrap_or_else(|e| panic!("node {} cannot open its log: {e}", self.id));
        self.partition = Some(Partition::new(
            TOPIC.to_string(),
            Uuid::nil(),
            0,
            self.id,
            log,
            Histogram::new([1.0]),
        ));
    }

    /// Whether the node processes messages and timers now.
    pub(crate) fn running(&self) -> bool {
        self.partition.is_some() && self.paused_until.is_none()
    }

    /// The process dies: the log is dropped without a clean close; role, fetcher, waiters and
    /// pending proposals are gone. The metadata applied so far is on disk (the Raft log).
    pub(crate) fn crash(&mut self, until: u64) {
        self.partition = None;
        self.fetcher = None;
        self.waiters.clear();
        self.isr_pending_since = None;
        self.isr_pending_record = None;
        self.paused_until = None;
        self.down_until = Some(until);
    }

    /// The process starts again: the log is recovered after an unclean stop and the metadata
    /// it has is applied.
    pub(crate) fn restart(&mut self, env: &mut Env<'_>) {
        self.down_until = None;
        self.open_log(false);
        self.generation += 1;
        self.next_heartbeat = env.now;
        self.next_shrink = env.now;
        env.checker.note(
            env.now,
            format!("node {} restarted (log end {})", self.id, self.log_end()),
        );
        self.apply_metadata(env);
        self.settle(env);
    }

    fn log_end(&self) -> i64 {
        self.partition.as_ref().map_or(-1, |p| p.log_end_offset().0)
    }

    fn request_id(&mut self) -> u64 {
        self.next_request_id += 1;
        self.next_request_id
    }

    /// `apply_metadata`: make the replica's role match this node's view of the metadata.
    pub(crate) fn apply_metadata(&mut self, env: &mut Env<'_>) {
        let Some(partition) = &self.partition else {
            return;
        };
        let state = &env.meta.states[self.applied];
        let Some(p) = state.partition(TOPIC, 0) else {
            return;
        };
        let me = NodeId(self.id as u64);
        if !p.replicas.contains(&me) {
            return;
        }
        let ids = |v: &[NodeId]| v.iter().map(|n| n.0 as i32).collect::<Vec<i32>>();
        if p.leader == Some(me) {
            let new = partition.become_leader(
                p.leader_epoch,
                ids(&p.replicas),
                ids(&p.isr),
                env.now as i64,
            );
            if new {
                self.generation += 1;
                let current = env
                    .meta
                    .latest()
                    .partition(TOPIC, 0)
                    .is_some_and(|latest| latest.leader_epoch == p.leader_epoch);
                env.checker
                    .became_leader(env.now, self.id, p.leader_epoch, current, partition);
            }
            // The fetcher of the old leader no longer has this partition: it stops.
            self.fetcher = None;
        } else {
            let leader = p.leader.map(|n| n.0 as i32);
            if partition.become_follower(leader, p.leader_epoch) {
                self.generation += 1;
                env.checker.note(
                    env.now,
                    format!(
                        "node {} follows {leader:?} at epoch {} (log end {}, hw {})",
                        self.id,
                        p.leader_epoch,
                        partition.log_end_offset().0,
                        partition.high_watermark().0
                    ),
                );
            }
            match leader {
                // `Fetchers::assign`: a fetcher per leader; a new leader is a new task (and
                // connection), a new epoch for the same leader means truncating again.
                Some(leader) => {
                    let epoch = partition.leader_epoch().0;
                    match &mut self.fetcher {
                        Some(f) if f.leader == leader => {
                            if f.epoch != epoch {
                                f.epoch = epoch;
                                f.truncated = false;
                            }
                        }
                        _ => {
                            self.fetcher = Some(Fetcher {
                                leader,
                                epoch,
                                truncated: false,
                                inflight: None,
                                next_at: env.now,
                            })
                        }
                    }
                }
                None => self.fetcher = None,
            }
        }
    }

    /// `request_isr_change`: propose `isr` at `leader_epoch`, with the partition epoch of this
    /// node's view; one proposal at a time.
    fn request_isr_change(&mut self, env: &mut Env<'_>, isr: Vec<i32>, leader_epoch: i32) {
        if self.isr_pending_since.is_some() {
            return;
        }
        let Some(current) = env.meta.states[self.applied].partition(TOPIC, 0) else {
            return;
        };
        self.isr_pending_since = Some(env.now);
        let record = MetadataRecord::PartitionChange {
            topic: TOPIC.to_string(),
            partition: 0,
            partition_epoch: current.partition_epoch,
            leader_epoch: Some(leader_epoch),
            leader: None,
            isr: Some(isr.iter().map(|r| NodeId(*r as u64)).collect()),
            replicas: None,
            adding: None,
            removing: None,
        };
        self.isr_pending_record = Some(record.clone());
        env.send(self.id, Addr::Controller, Msg::AlterIsr { record });
    }

    /// Handles one delivered message.
    pub(crate) fn receive(&mut self, env: &mut Env<'_>, from: Addr, msg: Msg) {
        if self.partition.is_none() {
            return;
        }
        match msg {
            Msg::Metadata { upto } => {
                if upto > self.applied {
                    self.applied = upto;
                    self.apply_metadata(env);
                }
            }
            Msg::AlterIsrDone { upto } => {
                // `request_isr_change`: the ISR as committed first, then pending additions stop
                // counting for the high watermark.
                self.isr_pending_since = None;
                self.isr_pending_record = None;
                if upto > self.applied {
                    self.applied = upto;
                }
                self.apply_metadata(env);
                if let Some(partition) = &self.partition {
                    partition.isr_change_settled();
                }
            }
            Msg::EpochQuery {
                id,
                current_leader_epoch,
                leader_epoch,
            } => {
                let partition = self.partition.as_ref().expect("running");
                let result = check_leader(partition, current_leader_epoch).map(|()| {
                    let (epoch, end) = partition.end_offset_for_epoch(LeaderEpoch(leader_epoch));
                    (epoch.0, end.0)
                });
                env.send(self.id, from, Msg::EpochAnswer { id, result });
            }
            Msg::EpochAnswer { id, result } => self.on_epoch_answer(env, from, id, result),
            Msg::Fetch {
                id,
                current_leader_epoch,
                offset,
            } => self.on_fetch(env, from, id, current_leader_epoch, offset),
            Msg::FetchAnswer {
                id,
                error,
                high_watermark,
                log_start_offset,
                records,
            } => self.on_fetch_answer(
                env,
                from,
                id,
                error,
                high_watermark,
                log_start_offset,
                records,
            ),
            Msg::Produce { id, value } => self.on_produce(env, from, id, value),
            Msg::Heartbeat | Msg::AlterIsr { .. } | Msg::ProduceAnswer { .. } => {
                unreachable!("not sent to brokers")
            }
        }
        self.settle(env);
    }

    /// The leader side of a replica fetch (`handlers/fetch.rs` with `replica_id` set).
    fn on_fetch(&mut self, env: &mut Env<'_>, from: Addr, id: u64, epoch: i32, offset: i64) {
        let Addr::Node(replica) = from else {
            unreachable!("fetches come from brokers")
        };
        let partition = self.partition.as_ref().expect("running");
        let mut expand = None;
        if check_leader(partition, epoch).is_ok() {
            expand = partition.on_follower_fetch(replica, offset, env.now as i64);
        }
        let answer = match check_leader(partition, epoch) {
            Err(e) => Msg::FetchAnswer {
                id,
                error: Some(e),
                high_watermark: 0,
                log_start_offset: 0,
                records: Default::default(),
            },
            Ok(()) => {
                let high_watermark = partition.high_watermark().0;
                let log_start_offset = partition.log_start_offset().0;
                match partition.read_ranges_for_follower(Offset(offset), self.fetch_bytes_max) {
                    Ok(ranges) => Msg::FetchAnswer {
                        id,
                        error: None,
                        high_watermark,
                        log_start_offset,
                        records: records::read_ranges(&ranges),
                    },
                    Err(ReadError::OffsetOutOfRange { .. }) => Msg::FetchAnswer {
                        id,
                        error: Some(Refusal::OffsetOutOfRange),
                        high_watermark,
                        log_start_offset,
                        records: Default::default(),
                    },
                    Err(e) => panic!("node {} fetch read failed: {e}", self.id),
                }
            }
        };
        if let Some((isr, leader_epoch)) = expand {
            self.request_isr_change(env, isr, leader_epoch);
        }
        env.send(self.id, from, answer);
    }

    /// The follower side of OffsetForLeaderEpoch (fetcher.rs `truncate`).
    fn on_epoch_answer(
        &mut self,
        env: &mut Env<'_>,
        from: Addr,
        id: u64,
        result: Result<(i32, i64), Refusal>,
    ) {
        let Some(f) = &mut self.fetcher else { return };
        let Some(Inflight::Truncate {
            id: want, epoch, ..
        }) = f.inflight
        else {
            return;
        };
        if want != id || Addr::Node(f.leader) != from {
            return;
        }
        f.inflight = None;
        let partition = self.partition.as_ref().expect("running");
        let (leader_epoch, end_offset) = match result {
            Ok(answer) => answer,
            Err(_) => {
                // The leader has not taken over yet, or we are behind the metadata.
                f.next_at = env.now + BACKOFF_MS;
                return;
            }
        };
        let own_end = partition.log_end_offset();
        let asked = partition.latest_epoch().map_or(-1, |e| e.0);
        let target = Offset(truncation_offset(
            asked,
            LeaderAnswer {
                epoch: leader_epoch,
                end_offset,
            },
            own_end.0,
            partition.high_watermark().0,
            |e| partition.end_offset_for_epoch(LeaderEpoch(e)).1 .0,
        ));
        if target < own_end {
            env.checker.note(
                env.now,
                format!(
                    "node {} truncates {} -> {} (asked epoch {asked}, leader {} answered epoch {leader_epoch} end {end_offset})",
                    self.id, own_end.0, target.0, f.leader
                ),
            );
            partition.truncate_to(target).expect("truncate");
        }
        if f.epoch == epoch {
            f.truncated = true;
        }
    }

    /// The follower side of a fetch answer (fetcher.rs `fetch`).
    #[allow(clippy::too_many_arguments)]
    fn on_fetch_answer(
        &mut self,
        env: &mut Env<'_>,
        from: Addr,
        id: u64,
        error: Option<Refusal>,
        high_watermark: i64,
        log_start_offset: i64,
        records: bytes::Bytes,
    ) {
        let Some(f) = &mut self.fetcher else { return };
        let Some(Inflight::Fetch { id: want, .. }) = f.inflight else {
            return;
        };
        if want != id || Addr::Node(f.leader) != from {
            return;
        }
        f.inflight = None;
        let partition = self.partition.as_ref().expect("running");
        match error {
            None => {}
            Some(Refusal::OffsetOutOfRange) => {
                if partition.log_end_offset().0 < log_start_offset {
                    partition
                        .truncate_fully_and_start_at(Offset(log_start_offset))
                        .expect("restart the log");
                } else {
                    f.truncated = false;
                }
                return;
            }
            Some(_) => {
                f.next_at = env.now + BACKOFF_MS;
                return;
            }
        }
        let empty = records.is_empty();
        if !empty {
            match partition.append_as_follower(records, Timestamp(env.now as i64)) {
                Ok(_) => {}
                Err(AppendError::OffsetMismatch { .. }) => {
                    f.truncated = false;
                    return;
                }
                Err(e) => {
                    env.checker.note(
                        env.now,
                        format!("node {} follower append failed: {e}", self.id),
                    );
                    f.next_at = env.now + BACKOFF_MS;
                    return;
                }
            }
        }
        partition.set_follower_high_watermark(high_watermark);
        let _ = partition.follow_log_start(Offset(log_start_offset));
        f.next_at = env.now + if empty { FETCH_WAIT_MS } else { 0 };
    }

    /// The produce handler with acks=all: leader and enough in-sync replicas, append, then
    /// wait for the high watermark.
    fn on_produce(&mut self, env: &mut Env<'_>, from: Addr, id: u64, value: u64) {
        let partition = self.partition.as_ref().expect("running");
        let refuse = if !partition.is_leader() {
            Some(Refusal::NotLeaderOrFollower)
        } else if (partition.in_sync_replica_count() as i32) < partition.min_insync_replicas() {
            Some(Refusal::NotEnoughReplicas)
        } else {
            None
        };
        if let Some(refusal) = refuse {
            env.send(
                self.id,
                from,
                Msg::ProduceAnswer {
                    id,
                    result: Err(refusal),
                },
            );
            return;
        }
        let info = partition
            .append(
                records::batch(value, env.now as i64),
                Timestamp(env.now as i64),
            )
            .unwrap_or_else(|e| panic!("node {} leader append failed: {e}", self.id));
        self.waiters.push(Waiter {
            id,
            offset: info.last_offset.0,
            generation: self.generation,
            deadline: env.now + PRODUCE_TIMEOUT_MS,
        });
    }

    /// After every event: acks=all waiters whose fate is known get their answer (the
    /// `wait_replicated` conditions), and the checker looks at the leader's high watermark.
    fn settle(&mut self, env: &mut Env<'_>) {
        let Some(partition) = &self.partition else {
            return;
        };
        let hw = partition.high_watermark().0;
        let generation = self.generation;
        let mut answers = Vec::new();
        self.waiters.retain(|w| {
            let result = if w.generation != generation {
                Err(Refusal::NotLeaderOrFollower)
            } else if hw > w.offset {
                if (partition.isr().len() as i32) < partition.min_insync_replicas() {
                    Err(Refusal::NotEnoughReplicasAfterAppend)
                } else {
                    Ok((w.offset, partition.leader_epoch().0))
                }
            } else if env.now >= w.deadline {
                // The request timed out; the client has given up on it.
                return false;
            } else {
                return true;
            };
            answers.push((w.id, result));
            false
        });
        for (id, result) in answers {
            env.send(self.id, Addr::Client, Msg::ProduceAnswer { id, result });
        }
        if partition.is_leader() {
            env.checker
                .observe_leader(env.now, self.id, self.generation, partition);
        }
    }

    /// Timers: heartbeats, the ISR shrinker, the replica fetcher.
    pub(crate) fn tick(&mut self, env: &mut Env<'_>) {
        if !self.running() {
            return;
        }
        if env.now >= self.next_heartbeat {
            self.next_heartbeat = env.now + HEARTBEAT_MS;
            env.send(self.id, Addr::Controller, Msg::Heartbeat);
        }
        if self
            .isr_pending_since
            .is_some_and(|since| env.now >= since + REQUEST_TIMEOUT_MS)
        {
            // No answer (lost, or the controller is unreachable): the real `request_isr_change`
            // proposes the same record again until it hears back; a retry of a change that did
            // commit is refused as stale, which settles it too.
            self.isr_pending_since = Some(env.now);
            if let Some(record) = self.isr_pending_record.clone() {
                env.send(self.id, Addr::Controller, Msg::AlterIsr { record });
            }
        }
        if env.now >= self.next_shrink {
            self.next_shrink = env.now + LAG_MAX_MS / 2;
            let shrink = self
                .partition
                .as_ref()
                .expect("running")
                .isr_to_shrink(env.now as i64, LAG_MAX_MS as i64);
            if let Some((isr, epoch)) = shrink {
                env.checker.note(
                    env.now,
                    format!("node {} proposes ISR shrink to {isr:?}", self.id),
                );
                self.request_isr_change(env, isr, epoch);
            }
        }
        self.fetch_tick(env);
        self.settle(env);
    }

    /// One turn of the fetcher task: truncate first, then fetch from the log end.
    fn fetch_tick(&mut self, env: &mut Env<'_>) {
        let id = self.request_id();
        let partition = self.partition.as_ref().expect("running");
        let Some(f) = &mut self.fetcher else { return };
        if let Some(inflight) = f.inflight {
            let sent = match inflight {
                Inflight::Truncate { sent, .. } | Inflight::Fetch { sent, .. } => sent,
            };
            if env.now < sent + REQUEST_TIMEOUT_MS {
                return;
            }
            // No answer: reconnect after the backoff.
            f.inflight = None;
            f.next_at = env.now + BACKOFF_MS;
        }
        if env.now < f.next_at {
            return;
        }
        let leader = Addr::Node(f.leader);
        if !f.truncated {
            match partition.latest_epoch() {
                // An empty log has nothing to truncate.
                None => f.truncated = true,
                Some(last) => {
                    f.inflight = Some(Inflight::Truncate {
                        id,
                        epoch: f.epoch,
                        sent: env.now,
                    });
                    let msg = Msg::EpochQuery {
                        id,
                        current_leader_epoch: f.epoch,
                        leader_epoch: last.0,
                    };
                    env.send(self.id, leader, msg);
                    return;
                }
            }
        }
        f.inflight = Some(Inflight::Fetch { id, sent: env.now });
        let msg = Msg::Fetch {
            id,
            current_leader_epoch: f.epoch,
            offset: partition.log_end_offset().0,
        };
        env.send(self.id, leader, msg);
    }
}

/// `handlers::fetch::check_leader`: whether this broker serves a fetcher at `current` epoch.
fn check_leader(partition: &Partition, current: i32) -> Result<(), Refusal> {
    if !partition.is_leader() {
        return Err(Refusal::NotLeaderOrFollower);
    }
    let mine = partition.leader_epoch().0;
    match current {
        e if e < 0 || e == mine => Ok(()),
        e if e < mine => Err(Refusal::FencedLeaderEpoch),
        _ => Err(Refusal::UnknownLeaderEpoch),
    }
}
