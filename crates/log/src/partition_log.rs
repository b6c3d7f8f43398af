//! [`PartitionLog`]: one partition's ordered segments, offsets, producer state, checkpoints,
//! recovery and retention.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use crate::batch::{
    first_record_at_or_after, marker_batch, parse_marker, stamp_header, BatchHeader, BatchProblem,
    MarkerKind, ATTR_LOG_APPEND_TIME, HEADER_LEN,
};
use crate::cleaner::{CleanOutput, CleanPlan};
use crate::leader_epoch::LeaderEpochCache;
use crate::producer::{snapshot_path, Check, ProducerInfo, ProducerState};
use crate::segment::{remove_if_present, scan, Segment};
use crate::txn_index::{AbortedTxn, TxnIndex};
use crate::validate::{ValidatedBatches, ValidationPolicy};
use crate::{
    AppendError, AppendInfo, LeaderEpoch, LogConfig, Offset, OpenError, ProducerEpoch, ProducerId,
    ReadError, ReadResult, SyncHandle, Timestamp, TimestampMatch, TimestampType,
};

mod recovery;
mod replication;

pub(crate) use recovery::cut_log;

pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point";
pub(crate) const LOG_START_FILE: &str = "log-start-offset";
pub(crate) const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
/// Producer-state snapshots kept besides the newest (older ones are deleted).
const SNAPSHOTS_KEPT: usize = 2;

/// One partition's log: segments `<base offset>.log` with `.index` and `.timeindex`, plus producer
/// state for idempotence.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Segments by base offset; the last one is the active segment. Never empty.
    segments: BTreeMap<i64, Segment>,
    log_start: i64,
    /// The log start last written to its checkpoint file.
    log_start_written: i64,
    /// Everything below this offset is known to be on disk.
    recovery_point: i64,
    /// Where the recovery point is persisted (see [`crate::checkpoint::RecoveryPointFile`]);
    /// created by the first checkpoint write of [`Self::open`].
    recovery_point_file: Option<crate::checkpoint::RecoveryPointFile>,
    producers: ProducerState,
    /// Aborted transactions, for read_committed fetches and the cleaner.
    aborted: TxnIndex,
    /// Where each leader epoch starts, for OffsetForLeaderEpoch (checkpointed when it changes).
    epochs: LeaderEpochCache,
    /// Set by a failed write or sync; appends are refused afterwards.
    poisoned: bool,
    /// Bumped whenever closed segments are removed or replaced, so a clean planned before can
    /// tell its output is stale.
    generation: u64,
    /// Bumped when the log end moves down, so a group commit that started before cannot
    /// advance the recovery point over data written after ([`Self::mark_synced`]).
    truncations: u64,
    /// Offsets below this were compacted by an earlier clean.
    cleaned_to: i64,
    /// Records appended since the last sync, and when that sync was (flush.messages, flush.ms).
    unflushed: i64,
    last_flush_ms: i64,
    /// After a clean open, what [`Self::shape`] was then: while it still is, the files are as
    /// the open found them and [`Self::close`] has nothing to write.
    opened_clean: Option<LogShape>,
}

/// What every change of a log moves: its start and end, the segment being appended to, and the
/// generation (removed or replaced segments). Equal shapes at open and close mean no change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LogShape {
    log_start: i64,
    log_end: i64,
    active_base: i64,
    generation: u64,
}

fn open_err(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Names in a partition directory, split by kind.
struct Listing {
    segments: Vec<i64>,
    snapshots: Vec<i64>,
    /// Cleaned segments renamed for swapping in when the process stopped.
    swaps: Vec<i64>,
}

fn list(dir: &Path) -> io::Result<Listing> {
    let mut listing = Listing {
        segments: Vec::new(),
        snapshots: Vec::new(),
        swaps: Vec::new(),
    };
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            fs::remove_file(entry.path())?;
            continue;
        }
        let Some((stem, ext)) = name.split_once('.') else {
            continue;
        };
        let Ok(offset) = stem.parse::<i64>() else {
            continue;
        };
        match ext {
            "log" if crate::segment::is_segment_base(offset) => listing.segments.push(offset),
            "log" => {
                tracing::warn!(file = %entry.path().display(), "ignoring a .log file whose name is no segment base offset");
            }
            "snapshot" => listing.snapshots.push(offset),
            "swap" => listing.swaps.push(offset),
            // An unfinished clean: the old segments are still complete.
            "cleaned" => fs::remove_file(entry.path())?,
            _ => {}
        }
    }
    listing.segments.sort_unstable();
    listing.snapshots.sort_unstable();
    listing.swaps.sort_unstable();
    Ok(listing)
}

/// Finishes swaps a crash interrupted: each `<base>.swap` replaces the segments whose base lies
/// in the offsets it covers, then becomes `<base>.log` (its indexes are rebuilt on load).
fn complete_swaps(dir: &Path, swaps: &[i64], bases: &mut Vec<i64>) -> io::Result<()> {
    for &base in swaps {
        let swap = crate::cleaner::swap_path(dir, base);
        let file = fs::File::open(&swap)?;
        let size = file.metadata()?.len();
        let mut next = base;
        scan(&file, 0, size, false, |_, h, _| {
            next = h.last_offset() + 1;
            Ok(())
        })?;
        let covered: Vec<i64> = bases
            .iter()
            .copied()
            .filter(|&b| b >= base && (b < next || b == base))
            .collect();
        for old in &covered {
            for ext in ["log", "index", "timeindex"] {
                remove_if_present(&dir.join(crate::segment::file_name(*old, ext)))?;
            }
        }
        for ext in ["index", "timeindex"] {
            remove_if_present(&dir.join(crate::segment::file_name(base, ext)))?;
        }
        fs::rename(&swap, dir.join(crate::segment::file_name(base, "log")))?;
        sync_dir(dir)?;
        bases.retain(|b| !covered.contains(b));
        bases.push(base);
        bases.sort_unstable();
        tracing::warn!(dir = %dir.display(), base, replaced = covered.len(), "completed a log clean interrupted by a stop");
    }
    Ok(())
}

impl PartitionLog {
    fn shape(&self) -> LogShape {
        LogShape {
            log_start: self.log_start,
            log_end: self.log_end(),
            active_base: self.active().base,
            generation: self.generation,
        }
    }

    /// The header of the batch holding `offset` (or the first batch after it), if any.
    fn batch_holding(&self, offset: i64) -> io::Result<Option<BatchHeader>> {
        let Some((_, segment)) = self.segments.range(..=offset).next_back() else {
            return Ok(None);
        };
        Ok(segment.find(offset)?.map(|(_, h)| h))
    }

    /// Cuts the epoch cache to `[log start, log end)` and checkpoints it when that changed it.
    fn trim_epochs(&mut self) -> io::Result<()> {
        let mut changed = self.epochs.truncate_from_start(Offset(self.log_start));
        changed |= self.epochs.truncate_from_end(Offset(self.log_end()));
        if changed {
            self.epochs.persist()?;
        }
        Ok(())
    }

    /// Loads the aborted-transaction index files and the newest usable snapshot at or below the
    /// log end, then replays later batches (which also re-adds aborts a crash left out of the
    /// active segment's index).
    fn load_producer_state(&mut self, snapshots: &[i64]) -> io::Result<()> {
        let end = self.log_end();
        let mut from = self.first_segment().base;
        self.producers = ProducerState::default();
        self.aborted = TxnIndex::default();
        for segment in self.segments.values() {
            self.aborted
                .load(&self.dir, segment.base, segment.next_offset);
        }
        self.aborted.truncate_from(end);
        self.aborted.remove_below(self.log_start);
        for &offset in snapshots.iter().rev() {
            if offset > end {
                remove_if_present(&snapshot_path(&self.dir, offset))?;
                continue;
            }
            let path = snapshot_path(&self.dir, offset);
            if let Some(state) = ProducerState::read_snapshot(&path) {
                self.producers = state;
                from = offset;
                break;
            }
            // Damaged (or of an older version): an older snapshot, or the log itself, is
            // replayed instead.
            tracing::warn!(snapshot = %path.display(), "unusable producer-state snapshot; rebuilding producer state from the log");
        }
        self.replay_producers(from)
    }

    fn replay_producers(&mut self, from: i64) -> io::Result<()> {
        let mut headers = Vec::new();
        for segment in self.segments.values() {
            if segment.next_offset <= from {
                continue;
            }
            let start = match segment.find(from)? {
                Some((pos, _)) => pos,
                None => continue,
            };
            let mut markers = Vec::new();
            scan(&segment.file, start, segment.size, false, |pos, h, _| {
                if h.base_offset >= from && h.has_producer_id() {
                    if h.is_control() {
                        markers.push((headers.len(), pos, h.size));
                    }
                    headers.push((*h, None));
                }
                Ok(())
            })?;
            // Marker batches are tiny; read each whole to learn commit or abort.
            for (at, pos, size) in markers {
                let mut bytes = vec![0u8; size.min(4096)];
                std::os::unix::fs::FileExt::read_exact_at(&*segment.file, &mut bytes, pos)?;
                headers[at].1 = parse_marker(&bytes);
            }
        }
        for (h, marker) in &headers {
            match marker {
                Some((kind, coordinator_epoch)) => self.record_marker(h, *kind, *coordinator_epoch),
                None => self.producers.update(h, h.base_offset),
            }
        }
        Ok(())
    }

    /// Applies a stored marker batch to producer state and the aborted-transaction index.
    fn record_marker(&mut self, h: &BatchHeader, kind: MarkerKind, coordinator_epoch: i32) {
        if let Some(aborted) = self.producers.complete_txn(
            h.producer_id,
            h.producer_epoch,
            kind,
            coordinator_epoch,
            h.base_offset,
            h.base_offset + 1,
        ) {
            self.aborted.insert(aborted);
        }
    }

    fn first_segment(&self) -> &Segment {
        self.segments
            .values()
            .next()
            .expect("a log always has a segment")
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    fn log_end(&self) -> i64 {
        self.active().next_offset
    }

    /// Appends validated producer batches (see [`crate::validate`]), assigning offsets and
    /// stamping `leader_epoch` (and the append time for LogAppendTime topics). Idempotent
    /// producer batches are checked against producer state: a duplicate of one of the last five
    /// batches returns Ok with `duplicate: true` and writes nothing. Batches validated under
    /// another config than the log's now (it changed in between) are validated again here.
    pub fn append(
        &mut self,
        batches: ValidatedBatches,
        leader_epoch: LeaderEpoch,
        now: Timestamp,
    ) -> Result<AppendInfo, AppendError> {
        self.append_verified(batches, leader_epoch, now, &mut |_, _| Ok(()))
    }

    /// Validates `batches` (as a producer sent them) and appends them, both in the caller's
    /// thread while it holds the log. A broker validates first, without the partition's lock,
    /// and calls [`Self::append`]; this is for callers that own the log (tests, tools).
    pub fn validate_and_append(
        &mut self,
        batches: Bytes,
        leader_epoch: LeaderEpoch,
        now: Timestamp,
    ) -> Result<AppendInfo, AppendError> {
        let validated = crate::validate(batches, &ValidationPolicy::from(&self.config), now)?;
        self.append(validated, leader_epoch, now)
    }

    /// [`Self::append`] for a broker with transactions: a transactional batch of a producer with
    /// no open transaction in this partition is appended only if `verify(producer, epoch)` says
    /// the partition belongs to that producer's ongoing transaction (KIP-890). `verify` runs
    /// while the caller holds the log, so a marker cannot slip in between check and write.
    pub fn append_verified(
        &mut self,
        batches: ValidatedBatches,
        leader_epoch: LeaderEpoch,
        now: Timestamp,
        verify: &mut dyn FnMut(ProducerId, ProducerEpoch) -> Result<(), String>,
    ) -> Result<AppendInfo, AppendError> {
        if self.poisoned {
            return Err(AppendError::Poisoned);
        }
        let policy = ValidationPolicy::from(&self.config);
        let batches = if batches.policy == policy {
            batches
        } else {
            // The topic's config changed since validation (rare): check again under it.
            crate::validate(batches.received, &policy, now)?
        };
        let headers = batches.batches;
        if let Some((_, h)) = headers.iter().find(|(_, h)| h.has_producer_id()) {
            if headers.len() > 1 {
                return Err(AppendError::Invalid(
                    "an idempotent producer sends exactly one record batch per partition".into(),
                ));
            }
            let check = self.producers.check(h)?;
            if h.is_transactional()
                && check == Check::Append
                && self
                    .producers
                    .open_txn(h.producer_id, h.producer_epoch)
                    .is_none()
            {
                verify(ProducerId(h.producer_id), ProducerEpoch(h.producer_epoch))
                    .map_err(AppendError::TxnNotVerified)?;
            }
            if let Check::Duplicate(meta) = check {
                return Ok(AppendInfo {
                    first_offset: Offset(meta.first_offset),
                    last_offset: Offset(meta.last_offset),
                    log_append_time: None,
                    log_start_offset: Offset(self.log_start),
                    duplicate: true,
                    record_count: 0,
                });
            }
        }
        self.write_batches(&headers, leader_epoch, now)
    }

    /// Appends a transaction marker for `producer_id`: commit or abort of its open transaction
    /// in this partition (a marker where none is open is still written, as Kafka does). The
    /// marker's epoch becomes the producer's, fencing older epochs.
    pub fn append_marker(
        &mut self,
        producer_id: ProducerId,
        epoch: ProducerEpoch,
        kind: MarkerKind,
        coordinator_epoch: i32,
        leader_epoch: LeaderEpoch,
        now: Timestamp,
    ) -> Result<AppendInfo, AppendError> {
        if self.poisoned {
            return Err(AppendError::Poisoned);
        }
        self.producers.check_marker(producer_id.0, epoch.0)?;
        let batch = Bytes::from(marker_batch(
            producer_id.0,
            epoch.0,
            kind,
            coordinator_epoch,
            now.0,
        ));
        let header = BatchHeader::parse(&batch);
        // The marker's effect on producer state and the aborted-transaction index is applied by
        // the write itself, from the stored bytes, exactly as a follower applies it.
        self.write_batches(&[(batch, header)], leader_epoch, now)
    }

    /// Writes validated leader batches at the log end with offsets, `leader_epoch` and (for
    /// LogAppendTime topics) the append time stamped.
    fn write_batches(
        &mut self,
        headers: &[(Bytes, BatchHeader)],
        leader_epoch: LeaderEpoch,
        now: Timestamp,
    ) -> Result<AppendInfo, AppendError> {
        let append_time =
            (self.config.message_timestamp_type == TimestampType::LogAppendTime).then_some(now.0);
        let mut stamped = Vec::with_capacity(headers.len());
        let mut offset = self.log_end();
        for (batch, h) in headers {
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(&batch[..HEADER_LEN]);
            let records = &batch[HEADER_LEN..h.size];
            stamp_header(
                &mut header,
                offset,
                leader_epoch.0,
                append_time.map(|t| (t, records)),
            );
            offset += i64::from(h.last_offset_delta) + 1;
            stamped.push((header, records));
        }
        self.write_stored(&stamped, now, append_time.map(Timestamp))
    }

    /// Writes batches whose headers are final (offsets from the log end, epochs stamped) and
    /// maintains everything derived from them: segment rolling, indexes, the epoch cache, producer
    /// state, open transactions and aborted transactions. Leader and follower appends share it, so
    /// a follower's state is the leader's. A failed write is rolled back.
    fn write_stored(
        &mut self,
        stored: &[([u8; HEADER_LEN], &[u8])],
        now: Timestamp,
        log_append_time: Option<Timestamp>,
    ) -> Result<AppendInfo, AppendError> {
        let parsed: Vec<BatchHeader> = stored.iter().map(|(h, _)| BatchHeader::parse(h)).collect();
        let (Some(first), Some(last)) = (parsed.first(), parsed.last()) else {
            return Err(AppendError::Invalid(
                "the request holds no record batch".into(),
            ));
        };
        let first_offset = self.log_end();
        let last_offset = last.last_offset();
        assert_eq!(
            first.base_offset, first_offset,
            "batches are written at the log end"
        );
        let total: u64 = parsed.iter().map(|h| h.size as u64).sum();
        let records: i64 = parsed.iter().map(|h| i64::from(h.record_count)).sum();
        self.maybe_roll(total, last_offset, now.0)
            .map_err(|e| self.poison(e))?;

        // The epoch checkpoint is written before the data: after a crash it may be ahead of the
        // log (cut at open), never behind.
        let mut epochs_changed = false;
        for h in &parsed {
            epochs_changed |= self
                .epochs
                .assign(LeaderEpoch(h.leader_epoch), Offset(h.base_offset));
        }
        if epochs_changed {
            if let Err(e) = self.epochs.persist() {
                self.epochs.truncate_from_end(Offset(first_offset));
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the leader-epoch checkpoint; nothing was appended");
                return Err(AppendError::Io(e));
            }
        }

        let segment = self.active_mut();
        let start = segment.size;
        let mut positions = Vec::with_capacity(stored.len());
        for (header, records) in stored {
            match segment.write_batch(header, records) {
                Ok(pos) => positions.push(pos),
                Err(e) => {
                    // Leave no partial request behind: cut back to where this append began. When
                    // that works (a full disk, say) the log is intact and stays writable.
                    let rolled_back = segment.file.set_len(start).is_ok();
                    segment.size = start;
                    self.epochs.truncate_from_end(Offset(first_offset));
                    if rolled_back {
                        tracing::warn!(dir = %self.dir.display(), error = %e, "append failed; nothing was written");
                        return Err(AppendError::Io(e));
                    }
                    return Err(self.poison(e));
                }
            }
        }
        let interval = self.config.index_interval_bytes;
        let segment = self.active_mut();
        if segment.first_append_ms.is_none() {
            segment.first_append_ms = Some(now.0);
        }
        for (h, pos) in parsed.iter().zip(positions) {
            segment.track(pos, h, interval);
        }
        for (h, (header, records)) in parsed.iter().zip(stored) {
            if h.is_control() {
                if h.has_producer_id() {
                    let mut batch = header.to_vec();
                    batch.extend_from_slice(records);
                    if let Some((kind, coordinator_epoch)) = parse_marker(&batch) {
                        self.record_marker(h, kind, coordinator_epoch);
                    }
                }
            } else {
                self.producers.update(h, h.base_offset);
            }
        }
        debug_assert_eq!(self.log_end(), last_offset + 1);
        // flush.messages / flush.ms: Kafka's per-topic fsync policy, checked on append.
        self.unflushed += records;
        if self.unflushed >= self.config.flush_messages
            || now.0.saturating_sub(self.last_flush_ms) >= self.config.flush_ms
        {
            self.flush_data().map_err(|e| self.poison(e))?;
        }
        Ok(AppendInfo {
            first_offset: Offset(first_offset),
            last_offset: Offset(last_offset),
            log_append_time,
            log_start_offset: Offset(self.log_start),
            duplicate: false,
            record_count: records,
        })
    }

    fn poison(&mut self, e: io::Error) -> AppendError {
        tracing::error!(dir = %self.dir.display(), error = %e, "storage error; the log refuses further writes");
        self.poisoned = true;
        AppendError::Io(e)
    }

    /// Rolls before an append of `bytes` whose last offset will be `last_offset`, when the active
    /// segment is full, old, has a full index, or cannot address the offsets.
    fn maybe_roll(&mut self, bytes: u64, last_offset: i64, now: i64) -> io::Result<()> {
        let config = &self.config;
        let segment = self.active();
        if segment.size == 0 {
            return Ok(());
        }
        let full = segment.size + bytes > config.segment_bytes;
        let old = segment
            .first_append_ms
            .is_some_and(|t| now.saturating_sub(t) >= config.segment_ms);
        let index_full = (segment.indexes.offsets.len() as u64 + 1)
            * crate::index::OFFSET_ENTRY as u64
            > config.segment_index_bytes
            || (segment.indexes.times.len() as u64 + 1) * crate::index::TIME_ENTRY as u64
                > config.segment_index_bytes;
        let offsets_overflow = last_offset - segment.base > i64::from(i32::MAX);
        let position_overflow = segment.size + bytes > u64::from(u32::MAX);
        if full || old || index_full || offsets_overflow || position_overflow {
            self.roll()?;
        }
        Ok(())
    }

    /// Closes the active segment (final time index entry, index files, fsync) and starts a new one
    /// at the log end, with a producer-state snapshot there.
    fn roll(&mut self) -> io::Result<()> {
        let end = self.log_end();
        let segment = self.active_mut();
        segment.seal_time_index();
        segment.write_indexes()?;
        segment.file.sync_data()?;
        let base = segment.base;
        self.aborted.persist(&self.dir, base, end)?;
        self.producers.write_snapshot(&self.dir, end)?;
        let fresh = Segment::create(&self.dir, end)?;
        sync_dir(&self.dir)?;
        tracing::debug!(dir = %self.dir.display(), base = end, "rolled segment");
        self.segments.insert(end, fresh);
        self.recovery_point = self.recovery_point.max(end);
        self.prune_snapshots()?;
        self.write_checkpoints()
    }

    /// Deletes snapshots older than the newest [`SNAPSHOTS_KEPT`] ones.
    fn prune_snapshots(&self) -> io::Result<()> {
        let snapshots = list(&self.dir)?.snapshots;
        let keep_from = snapshots.len().saturating_sub(SNAPSHOTS_KEPT);
        for &offset in &snapshots[..keep_from] {
            remove_if_present(&snapshot_path(&self.dir, offset))?;
        }
        Ok(())
    }

    /// Writes the log start offset (when it changed) and the recovery point, both durably.
    fn write_checkpoints(&mut self) -> io::Result<()> {
        if self.log_start != self.log_start_written {
            crate::checkpoint::write(&self.dir.join(LOG_START_FILE), self.log_start)?;
            self.log_start_written = self.log_start;
        }
        self.persist_recovery_point(true)
    }

    /// Whether the recovery point moved since it was last written.
    fn recovery_point_unwritten(&self) -> bool {
        self.recovery_point_file
            .as_ref()
            .is_none_or(|f| f.durable() != self.recovery_point)
    }

    /// Reads whole batches starting at the batch containing `start`, up to `max_bytes`, never past
    /// `max_offset` (exclusive; the high watermark). When `min_one_batch` is true, the first batch is
    /// returned whole even if larger than `max_bytes` (Kafka's KIP-74 rule). Reading at exactly
    /// `max_offset` (or the log end) returns empty records.
    pub fn read(
        &self,
        start: Offset,
        max_bytes: usize,
        max_offset: Offset,
        min_one_batch: bool,
    ) -> Result<ReadResult, ReadError> {
        self.read_plan(start, max_bytes, max_offset, min_one_batch)?
            .execute()
            .map_err(ReadError::Io)
    }

    /// The first half of [`Self::read`]: finds where the bytes are (index lookups and a short
    /// header scan) without reading them, so a caller can drop its lock on the log before the
    /// large read in [`ReadPlan::execute`]. Segment files are append-only and kept open by the
    /// plan, so bytes below the sizes captured here stay valid.
    pub fn read_plan(
        &self,
        start: Offset,
        max_bytes: usize,
        max_offset: Offset,
        min_one_batch: bool,
    ) -> Result<ReadPlan, ReadError> {
        let end = self.log_end();
        if start.0 < self.log_start || start.0 > end {
            return Err(ReadError::OffsetOutOfRange {
                requested: start,
                log_start_offset: Offset(self.log_start),
                log_end_offset: Offset(end),
            });
        }
        let limit = max_offset.0.min(end);
        let mut plan = ReadPlan {
            parts: Vec::new(),
            limit,
            max_bytes,
            min_one_batch,
        };
        if start.0 >= limit {
            return Ok(plan);
        }
        let first_base = self
            .segments
            .range(..=start.0)
            .next_back()
            .map_or(self.first_segment().base, |(b, _)| *b);
        let mut planned = 0u64;
        for segment in self.segments.range(first_base..).map(|(_, s)| s) {
            let pos = if plan.parts.is_empty() {
                match segment.find(start.0)? {
                    Some((pos, _)) => pos,
                    None => continue,
                }
            } else {
                0
            };
            // The segment holding the limit ends the read at the batch that holds it (the limit
            // is a batch's first offset: the high watermark or a transaction's first record).
            let holds_limit = segment.next_offset > limit;
            let end = if holds_limit {
                segment.find(limit)?.map_or(segment.size, |(at, _)| at)
            } else {
                segment.size
            };
            if end > pos {
                plan.parts.push(ReadPart {
                    file: Arc::clone(&segment.file),
                    pos,
                    end,
                });
                planned += end - pos;
            }
            if holds_limit || planned >= max_bytes as u64 {
                break;
            }
        }
        Ok(plan)
    }

    /// Where the bytes of a read are, for sending them straight from the files (sendfile):
    /// [`Self::read_plan`]'s ranges, cut to `max_bytes` as Kafka does — the last range may end
    /// inside a batch, which clients discard and fetch again — except that with `min_one_batch`
    /// the first batch is whole even when larger (KIP-74). Only the first batch's length is read
    /// (12 bytes), so call it without holding the log's lock: `plan` comes from `read_plan`.
    pub fn file_ranges(plan: ReadPlan) -> io::Result<Vec<FileRange>> {
        use std::os::unix::fs::FileExt;
        let mut budget = plan.max_bytes as u64;
        let mut ranges = Vec::with_capacity(plan.parts.len());
        for (i, part) in plan.parts.into_iter().enumerate() {
            let avail = part.end - part.pos;
            let mut len = avail.min(budget);
            if i == 0 && plan.min_one_batch && avail >= LOG_OVERHEAD_BYTES {
                let mut prefix = [0u8; LOG_OVERHEAD_BYTES as usize];
                part.file.read_exact_at(&mut prefix, part.pos)?;
                let length = i32::from_be_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
                let first = length.max(0) as u64 + LOG_OVERHEAD_BYTES;
                len = len.max(first.min(avail));
            }
            if len == 0 {
                break;
            }
            budget = budget.saturating_sub(len);
            ranges.push(FileRange {
                file: part.file,
                pos: part.pos,
                len,
            });
        }
        Ok(ranges)
    }

    pub fn log_start_offset(&self) -> Offset {
        Offset(self.log_start)
    }

    pub fn log_end_offset(&self) -> Offset {
        Offset(self.log_end())
    }

    /// The last stable offset: the first offset of the oldest open transaction, or the log end.
    /// read_committed consumers read below it.
    pub fn last_stable_offset(&self) -> Offset {
        Offset(
            self.producers
                .first_unstable_offset()
                .unwrap_or_else(|| self.log_end()),
        )
    }

    /// Aborted transactions with records in `[start, upper)`, for a read_committed fetch.
    pub fn aborted_txns(&self, start: Offset, upper: Offset) -> Vec<AbortedTxn> {
        self.aborted.collect(start.0, upper.0)
    }

    /// An offset at or after the end of the bytes in `ranges` (from [`Self::file_ranges`]): the
    /// first indexed batch starting at or after where the last range ends, or its segment's
    /// next offset. Bounds the aborted transactions a read_committed fetch must list.
    pub fn offset_after(&self, ranges: &[FileRange]) -> Offset {
        let Some(last) = ranges.last() else {
            return Offset(self.log_end());
        };
        let end = last.pos + last.len;
        let Some(segment) = self
            .segments
            .values()
            .find(|s| Arc::ptr_eq(&s.file, &last.file))
        else {
            // The segment was replaced meanwhile (a clean): fall back to the log end.
            return Offset(self.log_end());
        };
        let entries = &segment.indexes.offsets;
        let i = entries.partition_point(|&(_, position)| u64::from(position) < end);
        match entries.get(i) {
            Some(&(relative, _)) if end < segment.size => {
                Offset(segment.base + i64::from(relative))
            }
            _ => Offset(segment.next_offset),
        }
    }

    /// The producers this partition knows (DescribeProducers).
    pub fn producers(&self) -> Vec<ProducerInfo> {
        self.producers.describe()
    }

    /// The first record whose timestamp is >= `ts`; None if none. For uncompressed batches the
    /// match is exact; for a compressed CreateTime batch it is the batch (base offset, max
    /// timestamp) with the batch's bytes in [`TimestampMatch::compressed_batch`], for a caller that
    /// can decompress to find the exact record.
    pub fn offset_for_timestamp(&self, ts: Timestamp) -> Result<Option<TimestampMatch>, ReadError> {
        for segment in self.segments.values() {
            if segment.max_timestamp < ts.0 || segment.next_offset <= self.log_start {
                continue;
            }
            let rel = segment.indexes.scan_start_for_time(ts.0);
            let pos = u64::from(segment.indexes.position_for(rel));
            let log_start = self.log_start;
            let mut found = None;
            scan(&segment.file, pos, segment.size, true, |_, h, bytes| {
                if h.max_timestamp < ts.0 || h.last_offset() < log_start {
                    return Ok(());
                }
                let log_append_time = h.attributes & ATTR_LOG_APPEND_TIME != 0;
                let exact = if h.is_compressed() || log_append_time {
                    None
                } else {
                    first_record_at_or_after(bytes, ts.0)
                };
                let (offset, at) = exact.unwrap_or((h.base_offset, h.max_timestamp));
                found = Some(TimestampMatch {
                    offset: Offset(offset.max(log_start)),
                    timestamp: Timestamp(at),
                    compressed_batch: (h.is_compressed() && !log_append_time)
                        .then(|| Bytes::copy_from_slice(bytes)),
                });
                Err(String::new())
            })?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// The largest record timestamp in the log (batch max timestamps), if any batch carries one.
    pub fn max_timestamp(&self) -> Option<Timestamp> {
        self.segments
            .values()
            .filter(|s| s.next_offset > self.log_start)
            .map(|s| s.max_timestamp)
            .max()
            .filter(|&t| t >= 0)
            .map(Timestamp)
    }

    /// Files to sync for everything appended so far (see [`SyncHandle`]).
    pub fn sync_handle(&self) -> SyncHandle {
        SyncHandle {
            files: vec![Arc::clone(&self.active().file)],
            up_to: Offset(self.log_end()),
            truncations: self.truncations,
        }
    }

    /// Records that the files of `synced` (from [`Self::sync_handle`]) were fsynced: the
    /// recovery point advances to its offset and is written to its file (without an fsync of
    /// its own, see [`crate::checkpoint::RecoveryPointFile`]), unless the log was truncated
    /// since the handle was taken (the offsets then name other data).
    pub fn mark_synced(&mut self, synced: &SyncHandle) {
        if synced.truncations != self.truncations {
            return;
        }
        let rp = self.recovery_point.max(synced.up_to.0.min(self.log_end()));
        if rp != self.recovery_point {
            self.recovery_point = rp;
            if let Err(e) = self.persist_recovery_point(false) {
                // The file lags behind: recovery then treats more of the tail as unflushed.
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the recovery point");
            }
        }
    }

    /// Fsyncs the active segment from the append path (flush.messages / flush.ms) and writes
    /// the recovery point to its file (not fsynced: see [`Self::mark_synced`]).
    fn flush_data(&mut self) -> io::Result<()> {
        self.active().file.sync_data()?;
        self.unflushed = 0;
        self.last_flush_ms = wall_clock_ms();
        self.recovery_point = self.log_end();
        self.persist_recovery_point(false)
    }

    /// Everything below this offset is known to be on disk.
    pub fn recovery_point(&self) -> Offset {
        Offset(self.recovery_point)
    }

    /// Refuses further appends after a failed fsync of this log's files (the kernel may have
    /// dropped the dirty pages, so a later fsync proving nothing must not be trusted).
    /// Whether a failed write or fsync stopped this log taking writes (until restart).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    pub fn mark_failed(&mut self) {
        tracing::error!(dir = %self.dir.display(), "fsync failed; the log refuses further writes");
        self.poisoned = true;
    }

    /// Syncs everything appended so far, in the caller's thread, and checkpoints the recovery point.
    pub fn sync(&mut self) -> io::Result<()> {
        if let Err(e) = self.active().file.sync_data() {
            self.poisoned = true;
            return Err(e);
        }
        self.unflushed = 0;
        self.last_flush_ms = wall_clock_ms();
        self.recovery_point = self.log_end();
        if self.recovery_point_unwritten() {
            self.write_checkpoints()?;
        }
        Ok(())
    }

    /// Deletes whole closed segments past retention.ms / retention.bytes; returns how many.
    pub fn enforce_retention(&mut self, now: Timestamp) -> io::Result<usize> {
        let mut deleted = 0;
        if self.config.delete && self.config.retention_ms >= 0 {
            while self.segments.len() > 1 {
                let oldest = self.first_segment();
                let newest_ts = if oldest.max_timestamp >= 0 {
                    oldest.max_timestamp
                } else {
                    modified_ms(&oldest.log_path).unwrap_or(now.0)
                };
                if now.0.saturating_sub(newest_ts) <= self.config.retention_ms {
                    break;
                }
                // The timestamp comes from the time index; a damaged index must not get a
                // segment deleted early, so the batch it names is checked first.
                if oldest.max_timestamp >= 0 && !self.max_timestamp_confirmed()? {
                    continue;
                }
                self.delete_oldest_segment("retention.ms")?;
                deleted += 1;
            }
        }
        if self.config.delete && self.config.retention_bytes >= 0 {
            let mut excess = self.size_bytes() as i64 - self.config.retention_bytes;
            while self.segments.len() > 1 && excess >= self.first_segment().size as i64 {
                excess -= self.first_segment().size as i64;
                self.delete_oldest_segment("retention.bytes")?;
                deleted += 1;
            }
        }
        if deleted > 0 || self.recovery_point_unwritten() {
            self.write_checkpoints()?;
        }
        Ok(deleted)
    }

    /// Whether the oldest segment's time index is right about the batch its last entry names
    /// (that entry gives the segment's largest timestamp). If not, the segment's indexes are
    /// rebuilt from the segment (and false returned so the caller looks again); if the segment
    /// itself is damaged, an error.
    fn max_timestamp_confirmed(&mut self) -> io::Result<bool> {
        let interval = self.config.index_interval_bytes;
        let oldest = self.first_segment();
        let Some(&(timestamp, relative)) = oldest.indexes.times.last() else {
            return Ok(true);
        };
        let named = oldest.find(oldest.base + i64::from(relative))?;
        if named.is_some_and(|(_, h)| h.max_timestamp == timestamp) {
            return Ok(true);
        }
        let segment = self
            .segments
            .values_mut()
            .next()
            .expect("a log always has a segment");
        tracing::warn!(segment = %segment.log_path.display(), max_timestamp = segment.max_timestamp, "the time index disagrees with the segment; rebuilding the segment's indexes before retention");
        let end = segment.rebuild(interval)?;
        if let Some(problem) = end.problem {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "damaged batch data ({}) in {} at byte {}: {}",
                    problem.kind,
                    segment.log_path.display(),
                    end.valid_to,
                    problem.detail
                ),
            ));
        }
        segment.seal_time_index();
        segment.write_indexes()?;
        Ok(false)
    }

    fn delete_oldest_segment(&mut self, reason: &str) -> io::Result<()> {
        assert!(
            self.segments.len() > 1,
            "the active segment is never deleted"
        );
        let (_, segment) = self.segments.pop_first().expect("checked above");
        self.generation += 1;
        segment.remove_files()?;
        self.log_start = self.log_start.max(self.first_segment().base);
        self.aborted.remove_below(self.log_start);
        self.trim_epochs()?;
        tracing::info!(dir = %self.dir.display(), base = segment.base, bytes = segment.size, reason, log_start = self.log_start, "deleted segment");
        Ok(())
    }

    /// Moves the log start offset up to `offset` (Kafka's DeleteRecords): records below it are no
    /// longer readable, and segments entirely below it are deleted. Returns the new log start.
    /// An offset beyond the log end is refused with [`ReadError::OffsetOutOfRange`].
    pub fn delete_records_before(&mut self, offset: Offset) -> Result<Offset, ReadError> {
        let end = self.log_end();
        if offset.0 < 0 || offset.0 > end {
            return Err(ReadError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: Offset(self.log_start),
                log_end_offset: Offset(end),
            });
        }
        if offset.0 <= self.log_start {
            return Ok(Offset(self.log_start));
        }
        self.log_start = offset.0;
        while self.segments.len() > 1 && self.first_segment().next_offset <= self.log_start {
            let (_, segment) = self.segments.pop_first().expect("more than one segment");
            self.generation += 1;
            segment.remove_files()?;
            tracing::info!(dir = %self.dir.display(), base = segment.base, "deleted segment below the log start offset");
        }
        self.aborted.remove_below(self.log_start);
        // The log start is checkpointed first: a crash in between leaves epoch entries below it,
        // which the next open cuts.
        self.write_checkpoints()?;
        self.trim_epochs()?;
        Ok(Offset(self.log_start))
    }

    /// Rolls the active segment if segment.ms has passed (appends roll by size on their own).
    pub fn roll_if_due(&mut self, now: Timestamp) -> io::Result<()> {
        let segment = self.active();
        let due = segment.size > 0
            && segment
                .first_append_ms
                .is_some_and(|t| now.0.saturating_sub(t) >= self.config.segment_ms);
        if due {
            self.roll()?;
        }
        Ok(())
    }

    /// Removes everything at and above `offset` (a batch holding `offset` goes whole): a follower
    /// cutting where it diverged from the leader (see [`Self::end_offset_for_epoch`]). Epoch
    /// entries and aborted transactions past the new end are dropped (the active segment's
    /// `.txnindex` is rewritten) and producer state is rebuilt from a snapshot at or below it.
    pub fn truncate_to(&mut self, offset: Offset) -> io::Result<()> {
        if offset.0 >= self.log_end() {
            return Ok(());
        }
        self.generation += 1;
        self.truncations += 1;
        self.cleaned_to = self.cleaned_to.min(offset.0);
        // The recovery point goes below everything that may be cut before anything is.
        let floor = self
            .segments
            .range(..=offset.0)
            .next_back()
            .map_or(offset.0, |(&base, _)| base.min(offset.0));
        self.lower_recovery_point(floor)?;
        while self.segments.len() > 1 && self.active().base >= offset.0 {
            let (_, segment) = self.segments.pop_last().expect("more than one segment");
            segment.remove_files()?;
        }
        let interval = self.config.index_interval_bytes;
        if self.active().base >= offset.0 {
            let (_, segment) = self.segments.pop_last().expect("one segment");
            segment.remove_files()?;
            let fresh = Segment::create(&self.dir, offset.0)?;
            self.segments.insert(offset.0, fresh);
            self.log_start = offset.0;
        } else {
            let dir = self.dir.clone();
            let segment = self.active_mut();
            if let Some((pos, _)) = segment.find(offset.0)? {
                segment.file.set_len(pos)?;
                segment.size = pos;
            }
            let end = segment.rebuild(interval)?;
            if let Some(problem) = end.problem {
                // Damage that appeared below the truncation point since the log was opened:
                // the follower fetches that range again; the damaged file is kept aside.
                let damage = crate::damage::Damage {
                    file: segment.log_path.clone(),
                    position: end.valid_to,
                    length: segment.size - end.valid_to,
                    first_offset: Offset(segment.next_offset),
                    resume_offset: None,
                    kind: problem.kind,
                    detail: problem.detail,
                    later_segments: 0,
                };
                let aside = recovery::quarantine_dir(&dir, &damage)?;
                fs::copy(
                    &segment.log_path,
                    aside.join(segment.log_path.file_name().unwrap_or_default()),
                )?;
                tracing::error!(dir = %dir.display(), quarantine = %aside.display(), "{damage}; the damaged file is kept aside and the range is fetched again");
                let next = segment.next_offset;
                segment.truncate(end.valid_to, next)?;
            }
        }
        self.active().file.sync_data()?;
        sync_dir(&self.dir)?;
        let end = self.log_end();
        // Everything left is synced now.
        self.recovery_point = end;
        // Data first, then what is derived from it: epoch entries and .txnindex entries past the
        // new end that survive a crash here are cut at the next open.
        self.trim_epochs()?;
        let snapshots = list(&self.dir)?.snapshots;
        self.load_producer_state(&snapshots)?;
        let base = self.active().base;
        self.aborted.persist(&self.dir, base, end)?;
        self.write_checkpoints()?;
        self.write_cleaner_checkpoint()
    }

    fn write_cleaner_checkpoint(&self) -> io::Result<()> {
        crate::checkpoint::write(&self.dir.join(CLEANER_CHECKPOINT_FILE), self.cleaned_to)
    }

    /// What a clean of this `compact` log would do now, or None when there is nothing worth
    /// cleaning (not compacted, no closed segment, dirty share below `min.cleanable.dirty.ratio`).
    pub fn clean_plan(&self, now: Timestamp) -> Option<CleanPlan> {
        if !self.config.compact || self.segments.len() < 2 {
            return None;
        }
        let lag = self.config.min_compaction_lag_ms;
        let closed: Vec<&Segment> = self
            .segments
            .values()
            .take(self.segments.len() - 1)
            .collect();
        let mut sources = Vec::new();
        // Only segments below the last stable offset: every transaction there has ended.
        let stable = self.last_stable_offset().0;
        for segment in &closed {
            if segment.next_offset > stable {
                break;
            }
            // Records younger than min.compaction.lag.ms are not compacted yet.
            if lag > 0 && segment.max_timestamp > now.0.saturating_sub(lag) {
                break;
            }
            sources.push(crate::cleaner::SourceSegment {
                base: segment.base,
                next_offset: segment.next_offset,
                file: Arc::clone(&segment.file),
                size: segment.size,
                modified_ms: modified_ms(&segment.log_path).unwrap_or(now.0),
            });
        }
        let end = self
            .segments
            .keys()
            .nth(sources.len())
            .copied()
            .unwrap_or_else(|| self.log_end());
        let first_dirty = self.cleaned_to.max(self.log_start);
        let total: u64 = sources.iter().map(|s| s.size).sum();
        let dirty: u64 = sources
            .iter()
            .filter(|s| s.next_offset > first_dirty)
            .map(|s| s.size)
            .sum();
        // max.compaction.lag.ms: the oldest dirty record may not wait longer than this.
        let overdue = sources
            .iter()
            .find(|s| s.next_offset > first_dirty)
            .and_then(|s| first_batch_timestamp(&s.file))
            .is_some_and(|ts| now.0.saturating_sub(ts) > self.config.max_compaction_lag_ms);
        let ratio_reached = (dirty as f64) >= self.config.min_cleanable_dirty_ratio * total as f64;
        if dirty == 0 || !(ratio_reached || overdue) {
            return None;
        }
        let mut aborted: std::collections::HashMap<i64, Vec<(i64, i64)>> =
            std::collections::HashMap::new();
        let first_base = sources.first().map_or(end, |s| s.base);
        for txn in self.aborted.range(first_base, i64::MAX) {
            aborted
                .entry(txn.producer_id)
                .or_default()
                .push((txn.first_offset, txn.last_offset));
        }
        Some(CleanPlan {
            aborted,
            dir: self.dir.clone(),
            segments: sources,
            first_dirty,
            end,
            generation: self.generation,
            now: now.0,
            delete_retention_ms: self.config.delete_retention_ms,
            segment_bytes: self.config.segment_bytes,
            index_interval: self.config.index_interval_bytes,
        })
    }

    /// Swaps a finished clean's segments in (see [`crate::cleaner`]). Returns false, and deletes
    /// the output, when the closed segments changed since the plan.
    pub fn finish_clean(&mut self, output: CleanOutput) -> io::Result<bool> {
        self.finish_clean_steps(output, usize::MAX)
    }

    /// [`Self::finish_clean`] that stops after `steps` file operations, leaving the directory as
    /// a crash at that point would (for crash-safety tests).
    #[doc(hidden)]
    pub fn finish_clean_steps(&mut self, output: CleanOutput, steps: usize) -> io::Result<bool> {
        if output.generation != self.generation {
            for (_, segment) in &output.groups {
                remove_if_present(&crate::cleaner::cleaned_path(&self.dir, segment.base))?;
            }
            tracing::info!(dir = %self.dir.display(), "log changed during a clean; its output is discarded");
            return Ok(false);
        }
        let mut budget = steps;
        let mut step = || {
            if budget == 0 {
                return false;
            }
            budget -= 1;
            true
        };
        for (replaced, segment) in output.groups {
            let base = segment.base;
            let swap = crate::cleaner::swap_path(&self.dir, base);
            if !step() {
                return Ok(false);
            }
            fs::rename(crate::cleaner::cleaned_path(&self.dir, base), &swap)?;
            sync_dir(&self.dir)?;
            for old in replaced {
                if !step() {
                    return Ok(false);
                }
                if let Some(old_segment) = self.segments.remove(&old) {
                    old_segment.remove_files()?;
                }
            }
            if !step() {
                return Ok(false);
            }
            fs::rename(&swap, &segment.log_path)?;
            segment.write_indexes()?;
            self.aborted
                .persist(&self.dir, segment.base, segment.next_offset)?;
            sync_dir(&self.dir)?;
            self.segments.insert(base, segment);
        }
        self.generation += 1;
        self.cleaned_to = output.end;
        self.write_cleaner_checkpoint()?;
        tracing::info!(dir = %self.dir.display(), cleaned_to = self.cleaned_to, read = output.stats.bytes_read, written = output.stats.bytes_written, records_kept = output.stats.records_kept, records_read = output.stats.records_read, "log cleaned");
        Ok(true)
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }

    /// The settings in effect.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the config (takes effect for following appends and retention runs).
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// Syncs, writes the producer-state snapshot and index files, and closes. A log unchanged
    /// since a clean open is closed without writing anything: its files are still those the
    /// open read (and synced), so shutdown work is proportional to the logs that changed.
    pub fn close(mut self) -> io::Result<()> {
        if !self.poisoned && self.opened_clean == Some(self.shape()) {
            return Ok(());
        }
        let end = self.log_end();
        let segment = self.active_mut();
        segment.file.sync_data()?;
        segment.write_indexes()?;
        let base = segment.base;
        self.aborted.persist(&self.dir, base, end)?;
        if self.producers.len() > 0 {
            self.producers.write_snapshot(&self.dir, end)?;
        }
        self.recovery_point = end;
        self.write_checkpoints()?;
        self.prune_snapshots()
    }

    /// Closes and removes the partition's directory.
    pub fn delete(self) -> io::Result<()> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(&dir)
    }
}

fn append_problem(p: BatchProblem) -> AppendError {
    match p {
        BatchProblem::Truncated(s) | BatchProblem::Corrupt(s) => AppendError::Corrupt(s),
        BatchProblem::Invalid(s) => AppendError::Invalid(s),
    }
}

/// The base timestamp of a segment's first batch.
fn first_batch_timestamp(file: &fs::File) -> Option<i64> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; HEADER_LEN];
    file.read_exact_at(&mut header, 0).ok()?;
    Some(BatchHeader::parse(&header).base_timestamp)
}

fn modified_ms(path: &Path) -> Option<i64> {
    let modified = fs::metadata(path).ok()?.modified().ok()?;
    Some(modified.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64)
}

/// Makes file creations and renames in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// A stretch of one segment file a read may take bytes from.
#[derive(Debug)]
struct ReadPart {
    file: Arc<fs::File>,
    pos: u64,
    end: u64,
}

/// A byte range of a segment file, to be sent as it is.
#[derive(Debug, Clone)]
pub struct FileRange {
    pub file: Arc<fs::File>,
    pub pos: u64,
    pub len: u64,
}

/// Where a read's bytes are, found under the log's lock by [`PartitionLog::read_plan`]; reading
/// them ([`ReadPlan::execute`]) needs no lock.
#[derive(Debug)]
pub struct ReadPlan {
    parts: Vec<ReadPart>,
    limit: i64,
    max_bytes: usize,
    min_one_batch: bool,
}

impl ReadPlan {
    /// Reads the planned bytes: whole batches, below the limit offset, within the byte budget.
    pub fn execute(self) -> io::Result<ReadResult> {
        use std::os::unix::fs::FileExt;
        let mut out = BytesMut::new();
        for part in &self.parts {
            let avail = part.end - part.pos;
            if avail < LOG_OVERHEAD_BYTES {
                break;
            }
            let mut prefix = [0u8; LOG_OVERHEAD_BYTES as usize];
            part.file.read_exact_at(&mut prefix, part.pos)?;
            let length = i32::from_be_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
            let first_size = length.max(0) as usize + LOG_OVERHEAD_BYTES as usize;
            let budget = self.max_bytes.saturating_sub(out.len());
            let floor = if out.is_empty() && self.min_one_batch {
                first_size
            } else {
                0
            };
            let want = (budget.max(floor) as u64).min(avail) as usize;
            if want < first_size {
                break;
            }
            let mut buf = BytesMut::zeroed(want);
            part.file.read_exact_at(&mut buf, part.pos)?;
            let mut taken = 0;
            let mut reached_limit = false;
            while buf.len() - taken >= HEADER_LEN {
                let h = BatchHeader::parse(&buf[taken..]);
                if h.last_offset() >= self.limit {
                    reached_limit = true;
                    break;
                }
                if h.size > buf.len() - taken {
                    break;
                }
                taken += h.size;
            }
            if taken == 0 {
                break;
            }
            buf.truncate(taken);
            if out.is_empty() {
                out = buf;
            } else {
                out.extend_from_slice(&buf);
            }
            if reached_limit || (taken as u64) < avail || out.len() >= self.max_bytes {
                break;
            }
        }
        Ok(ReadResult {
            records: out.freeze(),
        })
    }
}

const LOG_OVERHEAD_BYTES: u64 = 12;
