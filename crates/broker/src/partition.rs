//! One partition replica's state on this broker: its log, its role (leader or follower, and as
//! leader its followers' progress and the high watermark), leader epoch, offsets, waiters for new
//! data and for replication, and the group commit that makes acks=all writes durable.
//!
//! The log sits behind a per-partition mutex that is held only for the in-memory and page-cache work
//! of an append or read; fsync happens outside it (see [`Partition::wait_durable`]), so concurrent
//! producers share one fsync and unrelated partitions never wait on each other.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use prometheus_client::metrics::histogram::Histogram;
use sluice_log::{
    AbortedTxn, AppendError, AppendInfo, LeaderEpoch, LogConfig, MarkerKind, Offset, PartitionLog,
    ProducerEpoch, ProducerId, ProducerInfo, ReadError, ReadResult, Timestamp, ValidationPolicy,
};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::replication::leader::LeaderState;

/// What this broker is for a partition, as the metadata says.
#[derive(Debug, Clone)]
pub enum Role {
    /// Just opened; the metadata has not been applied yet.
    Offline,
    Leader(LeaderState),
    Follower {
        leader: Option<i32>,
    },
}

/// Where a replica whose damaged log was quarantined stands on its way back into the ISR
/// (see [`crate::replica_manager::Rejoin`]). Until it is back, it never leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RejoinState {
    /// Its log is whole (the usual case).
    Whole = 0,
    /// Its log was cut below damaged data; it must leave the ISR (it has asked to).
    LeavingIsr = 1,
    /// Out of the ISR, fetching the quarantined range again; the leader adds it back once it
    /// has caught up.
    CatchingUp = 2,
}

/// Why an acks=all write was not replicated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplicationError {
    #[error("this broker stopped leading the partition before the write was replicated")]
    NotLeader,
    #[error(
        "the in-sync replicas fell below min.insync.replicas ({0}) before the write was replicated"
    )]
    NotEnoughReplicasAfterAppend(i32),
}

/// A topic-partition replica hosted by this broker.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    /// This broker's id.
    me: i32,
    /// The leader epoch stamped into appended batches (as leader) and sent with fetches (as
    /// follower); set from the metadata.
    leader_epoch: AtomicI32,
    /// Leader or follower, and as leader the followers' progress.
    role: Mutex<Role>,
    /// Offsets below this are committed (replicated to the ISR); reads stop here.
    high_watermark: AtomicI64,
    /// (high watermark, role generation): acks=all waiters watch it; a role change fails them.
    replicated: watch::Sender<(i64, u64)>,
    role_generation: AtomicU64,
    log: Mutex<PartitionLog>,
    /// Cached offsets, so Metadata/ListOffsets/Fetch answers need not take the log lock.
    log_start_offset: AtomicI64,
    log_end_offset: AtomicI64,
    /// First offset of the oldest open transaction, or the log end (read_committed bound).
    last_stable_offset: AtomicI64,
    /// Everything below this offset has been fsynced.
    durable_offset: AtomicI64,
    /// Set once the partition's topic is deleted; long polls stop waiting on it.
    deleted: AtomicBool,
    /// Woken on every append (long-poll fetches wait on it).
    appended: Notify,
    /// Serializes fsyncs; whoever holds it syncs everything appended so far (group commit).
    sync_lock: tokio::sync::Mutex<()>,
    min_insync_replicas: AtomicI32,
    /// What produce validation needs from the topic config, kept outside the log's lock so
    /// batches are validated (records walked, decompressed) before the lock is taken.
    validation: Mutex<ValidationPolicy>,
    /// Times the fsyncs of [`Partition::wait_durable`] (shared by every partition).
    fsync_duration: Histogram,
    /// A [`RejoinState`] as u8.
    rejoin: AtomicU8,
}

/// Why a durability wait failed.
#[derive(Debug, thiserror::Error)]
#[error("fsync of {topic}-{partition} failed: {source}")]
pub struct SyncError {
    topic: String,
    partition: i32,
    #[source]
    source: std::io::Error,
}

impl Partition {
    pub fn new(
        topic: String,
        topic_id: Uuid,
        index: i32,
        me: i32,
        log: PartitionLog,
        fsync_duration: Histogram,
    ) -> Self {
        let start = log.log_start_offset().0;
        let end = log.log_end_offset().0;
        let min_insync = log.config().min_insync_replicas;
        let validation = ValidationPolicy::from(log.config());
        let stable = log.last_stable_offset().0;
        let epoch = log.latest_epoch().map_or(0, |e| e.0);
        Partition {
            topic,
            topic_id,
            index,
            me,
            leader_epoch: AtomicI32::new(epoch),
            role: Mutex::new(Role::Offline),
            // What was committed is not known until the ISR reports (as leader) or the leader
            // tells (as follower); start low so nothing uncommitted is ever served as committed.
            // A sole in-sync replica raises it to its log end as soon as it leads.
            high_watermark: AtomicI64::new(start),
            replicated: watch::channel((start, 0)).0,
            role_generation: AtomicU64::new(0),
            log: Mutex::new(log),
            log_start_offset: AtomicI64::new(start),
            log_end_offset: AtomicI64::new(end),
            last_stable_offset: AtomicI64::new(stable),
            // Whatever a previous process left on disk was synced at its clean shutdown or has been
            // re-validated by recovery; treat it as durable.
            durable_offset: AtomicI64::new(end),
            deleted: AtomicBool::new(false),
            appended: Notify::new(),
            sync_lock: tokio::sync::Mutex::new(()),
            min_insync_replicas: AtomicI32::new(min_insync),
            validation: Mutex::new(validation),
            fsync_duration,
            rejoin: AtomicU8::new(RejoinState::Whole as u8),
        }
    }

    /// Where this replica stands after a quarantine (see [`RejoinState`]).
    pub fn rejoin_state(&self) -> RejoinState {
        match self.rejoin.load(Ordering::Acquire) {
            1 => RejoinState::LeavingIsr,
            2 => RejoinState::CatchingUp,
            _ => RejoinState::Whole,
        }
    }

    /// Moves to `state` on the way back into the ISR.
    pub fn set_rejoin_state(&self, state: RejoinState) {
        self.rejoin.store(state as u8, Ordering::Release);
    }

    /// Marks a replica whose damaged log was just quarantined: it must not lead and leaves the
    /// ISR until it has fetched the range again.
    pub(crate) fn start_rejoin(&self) {
        self.set_rejoin_state(RejoinState::LeavingIsr);
    }

    /// `min.insync.replicas` of the topic (read on every acks=all produce, so kept outside the
    /// log's lock).
    pub fn min_insync_replicas(&self) -> i32 {
        self.min_insync_replicas.load(Ordering::Relaxed)
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch(self.leader_epoch.load(Ordering::Acquire))
    }

    /// Whether this broker leads the partition now.
    pub fn is_leader(&self) -> bool {
        matches!(*self.role.lock(), Role::Leader(_))
    }

    /// The role now (a copy).
    pub fn role(&self) -> Role {
        self.role.lock().clone()
    }

    /// Becomes (or stays) leader at `epoch` with this assignment. A new epoch starts a fresh
    /// view of the followers; the same epoch only updates the ISR and replicas. True when this
    /// starts a new leadership.
    pub fn become_leader(
        &self,
        epoch: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        now_ms: i64,
    ) -> bool {
        let mut role = self.role.lock();
        let new = match &mut *role {
            Role::Leader(state) if state.leader_epoch == epoch => {
                state.update_assignment(replicas, isr, now_ms);
                false
            }
            _ => {
                if let Err(e) = self.log.lock().assign_epoch(LeaderEpoch(epoch)) {
                    tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "cannot record the new leader epoch");
                }
                let leo = self.log_end_offset().0;
                *role = Role::Leader(LeaderState::new(
                    self.me,
                    epoch,
                    replicas,
                    isr,
                    self.high_watermark().0,
                    leo,
                    now_ms,
                ));
                self.leader_epoch.store(epoch, Ordering::Release);
                self.role_generation.fetch_add(1, Ordering::AcqRel);
                true
            }
        };
        let leo = self.log_end_offset().0;
        if let Role::Leader(state) = &mut *role {
            let hw = state.advance_high_watermark(leo);
            self.publish_high_watermark(hw);
        }
        drop(role);
        self.notify_replicated();
        new
    }

    /// Becomes (or stays) a follower of `leader` at `epoch`; returns true when that is a change
    /// (the caller then truncates and fetches from the new leader).
    pub fn become_follower(&self, leader: Option<i32>, epoch: i32) -> bool {
        let mut role = self.role.lock();
        let same = matches!(&*role, Role::Follower { leader: l } if *l == leader)
            && self.leader_epoch.load(Ordering::Acquire) == epoch;
        if same {
            return false;
        }
        *role = Role::Follower { leader };
        self.leader_epoch.store(epoch, Ordering::Release);
        self.role_generation.fetch_add(1, Ordering::AcqRel);
        drop(role);
        self.notify_replicated();
        // Long polls of consumers end: they must go to the new leader.
        self.appended.notify_waiters();
        true
    }

    /// The ISR as the leader knows it (empty when not leading).
    pub fn isr(&self) -> Vec<i32> {
        match &*self.role.lock() {
            Role::Leader(state) => state.isr.clone(),
            _ => Vec::new(),
        }
    }

    /// A follower fetched from `fetch_offset` (leader side). Returns the ISR to propose when the
    /// follower should rejoin it; advances the high watermark.
    pub fn on_follower_fetch(
        &self,
        replica: i32,
        fetch_offset: i64,
        now_ms: i64,
    ) -> Option<(Vec<i32>, i32)> {
        let leo = self.log_end_offset().0;
        let mut role = self.role.lock();
        let Role::Leader(state) = &mut *role else {
            return None;
        };
        let expand = state.on_fetch(replica, fetch_offset, leo, now_ms);
        let hw = state.advance_high_watermark(leo);
        let epoch = state.leader_epoch;
        drop(role);
        if self.publish_high_watermark(hw) {
            self.notify_replicated();
            self.appended.notify_waiters();
        }
        expand.map(|isr| (isr, epoch))
    }

    /// The ISR change proposed for this partition has been answered and the metadata applied
    /// (see [`LeaderState::isr_change_settled`]).
    pub fn isr_change_settled(&self) {
        let leo = self.log_end_offset().0;
        let hw = match &mut *self.role.lock() {
            Role::Leader(state) => {
                state.isr_change_settled();
                state.advance_high_watermark(leo)
            }
            _ => return,
        };
        if self.publish_high_watermark(hw) {
            self.notify_replicated();
            self.appended.notify_waiters();
        }
    }

    /// The ISR without lagging followers, when some must leave (leader side).
    pub fn isr_to_shrink(&self, now_ms: i64, lag_max_ms: i64) -> Option<(Vec<i32>, i32)> {
        match &mut *self.role.lock() {
            Role::Leader(state) => {
                let epoch = state.leader_epoch;
                state.shrink(now_ms, lag_max_ms).map(|isr| (isr, epoch))
            }
            _ => None,
        }
    }

    /// Follower side: the leader's high watermark arrived with a fetch.
    pub fn set_follower_high_watermark(&self, leader_hw: i64) {
        let hw = leader_hw.min(self.log_end_offset().0);
        if self.high_watermark.swap(hw, Ordering::AcqRel) != hw {
            self.appended.notify_waiters();
        }
    }

    /// Raises the published high watermark; true when it moved.
    fn publish_high_watermark(&self, hw: i64) -> bool {
        let old = self.high_watermark.fetch_max(hw, Ordering::AcqRel);
        old < hw
    }

    fn notify_replicated(&self) {
        let hw = self.high_watermark.load(Ordering::Acquire);
        let generation = self.role_generation.load(Ordering::Acquire);
        self.replicated.send_replace((hw, generation));
    }

    /// Recomputes the high watermark after the leader's own log grew.
    fn after_leader_append(&self) {
        let leo = self.log_end_offset().0;
        let hw = match &mut *self.role.lock() {
            Role::Leader(state) => state.advance_high_watermark(leo),
            _ => return,
        };
        if self.publish_high_watermark(hw) {
            self.notify_replicated();
        }
    }

    /// Waits until the ISR has every offset up to and including `offset` (acks=all). Fails when
    /// this broker stops leading, or the ISR is smaller than `min.insync.replicas` once the
    /// write is replicated (NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    pub async fn wait_replicated(&self, offset: Offset) -> Result<(), ReplicationError> {
        let mut rx = self.replicated.subscribe();
        let generation = rx.borrow().1;
        let waited = rx
            .wait_for(|(hw, g)| *g != generation || *hw > offset.0)
            .await
            .map(|v| *v);
        match waited {
            Ok((hw, g)) if g == generation && hw > offset.0 => {
                let min = self.min_insync_replicas();
                if (self.isr().len() as i32) < min {
                    return Err(ReplicationError::NotEnoughReplicasAfterAppend(min));
                }
                Ok(())
            }
            _ => Err(ReplicationError::NotLeader),
        }
    }

    pub fn log_start_offset(&self) -> Offset {
        Offset(self.log_start_offset.load(Ordering::Acquire))
    }

    pub fn log_end_offset(&self) -> Offset {
        Offset(self.log_end_offset.load(Ordering::Acquire))
    }

    /// The high watermark: offsets below it are on every in-sync replica.
    pub fn high_watermark(&self) -> Offset {
        Offset(self.high_watermark.load(Ordering::Acquire))
    }

    /// The last stable offset: read_committed consumers read below it.
    pub fn last_stable_offset(&self) -> Offset {
        Offset(self.last_stable_offset.load(Ordering::Acquire))
    }

    /// Replicas assigned to this partition (as its leader knows them; 1 when not leading).
    pub fn replica_count(&self) -> usize {
        match &*self.role.lock() {
            Role::Leader(state) => state.replicas.len(),
            _ => 1,
        }
    }

    /// Replicas caught up with the leader. The leader counts while its log takes writes; a
    /// poisoned log (failed write or fsync) has fallen out of sync until restart.
    pub fn in_sync_replica_count(&self) -> usize {
        if self.is_deleted() || self.log.lock().is_poisoned() {
            return 0;
        }
        match &*self.role.lock() {
            Role::Leader(state) => state.isr.len(),
            _ => 1,
        }
    }

    /// Fewer replicas in sync than assigned (Kafka's UnderReplicatedPartitions).
    pub fn is_under_replicated(&self) -> bool {
        self.in_sync_replica_count() < self.replica_count()
    }

    /// Validates and appends producer batches; wakes long-poll fetches.
    pub fn append(&self, batches: Bytes, now: Timestamp) -> Result<AppendInfo, AppendError> {
        self.append_verified(batches, now, &mut |_, _| Ok(()))
    }

    /// [`Self::append`] where the first transactional write of a producer's transaction must pass
    /// `verify` (the transaction coordinator's "is this partition in the ongoing transaction?"),
    /// asked under the log's lock so no marker lands between the answer and the write. The
    /// batches are validated first, record by record, without the log's lock.
    pub fn append_verified(
        &self,
        batches: Bytes,
        now: Timestamp,
        verify: &mut dyn FnMut(ProducerId, ProducerEpoch) -> Result<(), String>,
    ) -> Result<AppendInfo, AppendError> {
        let policy = *self.validation.lock();
        let batches = sluice_log::validate(batches, &policy, now)?;
        let info = {
            let mut log = self.log.lock();
            let info = log.append_verified(batches, self.leader_epoch(), now, verify)?;
            self.publish_offsets(&log);
            info
        };
        if !info.duplicate {
            self.after_leader_append();
            self.appended.notify_waiters();
        }
        Ok(info)
    }

    /// Writes a commit or abort marker for `producer_id`'s transaction.
    pub fn append_marker(
        &self,
        producer_id: ProducerId,
        epoch: ProducerEpoch,
        kind: MarkerKind,
        coordinator_epoch: i32,
        now: Timestamp,
    ) -> Result<AppendInfo, AppendError> {
        let info = {
            let mut log = self.log.lock();
            let info = log.append_marker(
                producer_id,
                epoch,
                kind,
                coordinator_epoch,
                self.leader_epoch(),
                now,
            )?;
            self.publish_offsets(&log);
            info
        };
        self.after_leader_append();
        self.appended.notify_waiters();
        Ok(info)
    }

    /// Follower side: appends the leader's batches as they are (offsets and epochs kept).
    pub fn append_as_follower(
        &self,
        batches: Bytes,
        now: Timestamp,
    ) -> Result<AppendInfo, AppendError> {
        let info = {
            let mut log = self.log.lock();
            let info = log.append_as_follower(batches, now)?;
            self.publish_offsets(&log);
            info
        };
        self.appended.notify_waiters();
        Ok(info)
    }

    /// The latest leader epoch in the log's history.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.log.lock().latest_epoch()
    }

    /// Where `epoch` ends in this log (OffsetForLeaderEpoch): the epoch found and its end.
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> (LeaderEpoch, Offset) {
        self.log.lock().end_offset_for_epoch(epoch)
    }

    /// Follower side: drops everything at and above `offset` (divergence from the leader).
    pub fn truncate_to(&self, offset: Offset) -> std::io::Result<()> {
        let mut log = self.log.lock();
        log.truncate_to(offset)?;
        self.publish_offsets(&log);
        let leo = log.log_end_offset().0;
        self.high_watermark.fetch_min(leo, Ordering::AcqRel);
        self.durable_offset.fetch_min(leo, Ordering::AcqRel);
        Ok(())
    }

    /// Follower side: the leader's log starts past ours; start over at `offset`.
    pub fn truncate_fully_and_start_at(&self, offset: Offset) -> std::io::Result<()> {
        let mut log = self.log.lock();
        log.truncate_fully_and_start_at(offset)?;
        self.publish_offsets(&log);
        self.high_watermark.store(offset.0, Ordering::Release);
        self.durable_offset.store(offset.0, Ordering::Release);
        Ok(())
    }

    /// Refreshes the cached offsets from the log (called with its lock held).
    fn publish_offsets(&self, log: &PartitionLog) {
        self.log_end_offset
            .store(log.log_end_offset().0, Ordering::Release);
        self.log_start_offset
            .store(log.log_start_offset().0, Ordering::Release);
        self.last_stable_offset
            .store(log.last_stable_offset().0, Ordering::Release);
    }

    /// The producers the log knows (DescribeProducers).
    pub fn producers(&self) -> Vec<ProducerInfo> {
        self.log.lock().producers()
    }

    /// Where the bytes of a fetch are: segment file ranges from `start`, below the high watermark
    /// (read_committed: the last stable offset), cut to `max_bytes` (see
    /// [`PartitionLog::file_ranges`]); for read_committed also the aborted transactions with
    /// records among them. Nothing is read but the first batch's length.
    pub fn read_ranges(
        &self,
        start: Offset,
        max_bytes: usize,
        min_one_batch: bool,
        read_committed: bool,
    ) -> Result<(Vec<sluice_log::FileRange>, Option<Vec<AbortedTxn>>), ReadError> {
        let limit = if read_committed {
            self.last_stable_offset().min(self.high_watermark())
        } else {
            self.high_watermark()
        };
        let plan = self
            .log
            .lock()
            .read_plan(start, max_bytes, limit, min_one_batch)?;
        let ranges = PartitionLog::file_ranges(plan).map_err(ReadError::Io)?;
        let aborted = match (read_committed, ranges.is_empty()) {
            (false, _) => None,
            (true, true) => Some(Vec::new()),
            // Bounded by an offset at or after the last batch sent (from the sparse index, no
            // read): at most a few aborts more than needed, which clients filter.
            (true, false) => {
                let log = self.log.lock();
                let upper = log.offset_after(&ranges).min(limit);
                Some(log.aborted_txns(start, upper))
            }
        };
        Ok((ranges, aborted))
    }

    /// Follower fetches: segment file ranges from `start` up to the log end (not the high
    /// watermark: followers replicate what is not committed yet).
    pub fn read_ranges_for_follower(
        &self,
        start: Offset,
        max_bytes: usize,
    ) -> Result<Vec<sluice_log::FileRange>, ReadError> {
        let plan = self
            .log
            .lock()
            .read_plan(start, max_bytes, self.log_end_offset(), true)?;
        PartitionLog::file_ranges(plan).map_err(ReadError::Io)
    }

    /// Reads whole batches from `start`, never past the high watermark (into memory: replays of
    /// internal topics and the console; fetches use [`Self::read_ranges`]).
    pub fn read(
        &self,
        start: Offset,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadResult, ReadError> {
        // Plan under the lock, read without it: a large read does not hold up appends.
        let plan =
            self.log
                .lock()
                .read_plan(start, max_bytes, self.high_watermark(), min_one_batch)?;
        plan.execute().map_err(ReadError::Io)
    }

    /// The first record at or after `ts` (Kafka's ListOffsets by timestamp). Compressed batches are
    /// decompressed here, off the log's lock, to find the exact record as Kafka does.
    pub fn offset_for_timestamp(
        &self,
        ts: Timestamp,
    ) -> Result<Option<(Offset, Timestamp)>, ReadError> {
        let found = self.log.lock().offset_for_timestamp(ts)?;
        Ok(found.map(|m| {
            m.compressed_batch
                .and_then(|batch| exact_record_at(batch, ts, m.offset))
                .unwrap_or((m.offset, m.timestamp))
        }))
    }

    /// The first record holding the largest timestamp (ListOffsets' max-timestamp spec, KIP-734).
    pub fn max_timestamp(&self) -> Result<Option<(Offset, Timestamp)>, ReadError> {
        let max = self.log.lock().max_timestamp();
        match max {
            Some(ts) => self.offset_for_timestamp(ts),
            None => Ok(None),
        }
    }

    /// A future that completes on the next append (or when the topic is deleted). Call
    /// `enable()` on it before checking for data, so an append in between is not missed.
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Waits until every offset up to and including `offset` is fsynced. Callers arriving while a
    /// sync runs wait for it and then usually find their data already covered by the next one.
    pub async fn wait_durable(&self, offset: Offset) -> Result<(), SyncError> {
        if self.durable_offset.load(Ordering::Acquire) > offset.0 {
            return Ok(());
        }
        let _guard = self.sync_lock.lock().await;
        if self.durable_offset.load(Ordering::Acquire) > offset.0 {
            return Ok(());
        }
        let handle = self.log.lock().sync_handle();
        let up_to = handle.up_to;
        let files = handle.files.clone();
        let fsync_duration = self.fsync_duration.clone();
        let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let started = std::time::Instant::now();
            for file in &files {
                file.sync_data()?;
            }
            fsync_duration.observe(started.elapsed().as_secs_f64());
            Ok(())
        })
        .await
        .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())));
        if let Err(source) = result {
            self.log.lock().mark_failed();
            return Err(SyncError {
                topic: self.topic.clone(),
                partition: self.index,
                source,
            });
        }
        self.log.lock().mark_synced(&handle);
        self.durable_offset.fetch_max(up_to.0, Ordering::AcqRel);
        assert!(
            self.durable_offset.load(Ordering::Acquire) > offset.0,
            "a sync covers every offset appended before it started"
        );
        Ok(())
    }

    /// Syncs in the caller's thread (background flush, shutdown).
    pub fn sync(&self) -> std::io::Result<()> {
        let mut log = self.log.lock();
        log.sync()?;
        self.durable_offset
            .fetch_max(log.log_end_offset().0, Ordering::AcqRel);
        Ok(())
    }

    /// DeleteRecords: moves the log start offset to `offset` (-1: the high watermark). Offsets
    /// above the high watermark are refused.
    pub fn delete_records(&self, offset: Offset) -> Result<Offset, ReadError> {
        let high_watermark = self.high_watermark();
        let target = if offset.0 == -1 {
            high_watermark
        } else {
            offset
        };
        if target > high_watermark {
            return Err(ReadError::OffsetOutOfRange {
                requested: target,
                log_start_offset: self.log_start_offset(),
                log_end_offset: high_watermark,
            });
        }
        let start = self.log.lock().delete_records_before(target)?;
        self.log_start_offset.store(start.0, Ordering::Release);
        Ok(start)
    }

    /// Follower side: the leader's log starts at `offset` (retention or DeleteRecords there);
    /// records below it go here too, as far as this replica has them.
    pub fn follow_log_start(&self, offset: Offset) -> Result<(), ReadError> {
        if offset <= self.log_start_offset() {
            return Ok(());
        }
        let target = offset.min(self.log_end_offset());
        let start = self.log.lock().delete_records_before(target)?;
        self.log_start_offset.store(start.0, Ordering::Release);
        Ok(())
    }

    /// One cleaner pass (compaction) if the log wants one: planned and swapped in under the
    /// log's lock, the work itself done without it so producers keep appending.
    pub fn clean(&self, now: Timestamp) -> std::io::Result<Option<sluice_log::CleanStats>> {
        let plan = self.log.lock().clean_plan(now);
        let Some(plan) = plan else {
            return Ok(None);
        };
        let output = plan.run()?;
        let stats = output.stats.clone();
        let applied = self.log.lock().finish_clean(output)?;
        Ok(applied.then_some(stats))
    }

    /// Applies retention and time-based rolling.
    pub fn housekeeping(&self, now: Timestamp) -> std::io::Result<usize> {
        let mut log = self.log.lock();
        log.roll_if_due(now)?;
        let deleted = log.enforce_retention(now)?;
        self.log_start_offset
            .store(log.log_start_offset().0, Ordering::Release);
        Ok(deleted)
    }

    pub fn set_config(&self, config: LogConfig) {
        self.min_insync_replicas
            .store(config.min_insync_replicas, Ordering::Relaxed);
        *self.validation.lock() = ValidationPolicy::from(&config);
        self.log.lock().set_config(config);
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.lock().size_bytes()
    }

    /// Marks the partition deleted and wakes its waiters.
    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        self.appended.notify_waiters();
    }

    /// Takes the log out for closing or deletion; the partition must not be used afterwards.
    pub(crate) fn into_log(self: Arc<Self>) -> Option<PartitionLog> {
        Arc::into_inner(self).map(|p| p.log.into_inner())
    }
}

/// Decompresses one stored batch (bounded, streaming) and finds its first record at or after
/// `ts` and not below `floor` (the log start offset). None when the batch's records do not read.
fn exact_record_at(batch: Bytes, ts: Timestamp, floor: Offset) -> Option<(Offset, Timestamp)> {
    use sluice_protocol::records::{Batch, RecordsError};
    let (batch, _) = Batch::parse(&batch).ok()?;
    let mut found = None;
    let walked = batch.for_each_record(sluice_log::DECOMPRESSED_LIMIT, |r| {
        if found.is_none() && r.timestamp >= ts.0 && r.offset >= floor.0 {
            found = Some((Offset(r.offset), Timestamp(r.timestamp)));
        }
        Ok::<_, RecordsError>(())
    });
    walked.ok().and(found)
}
