//! What replication needs from a [`PartitionLog`]: appending a leader's batches as they are, the
//! leader-epoch history that answers OffsetForLeaderEpoch, and restarting the log at a later
//! offset. Cutting a diverged tail is [`PartitionLog::truncate_to`].

use std::collections::BTreeMap;
use std::io;

use bytes::Bytes;

use super::{append_problem, list, sync_dir, PartitionLog};
use crate::batch::{check_crc, check_header, BatchHeader, HEADER_LEN};
use crate::leader_epoch::EpochEntry;
use crate::producer::{snapshot_path, ProducerState};
use crate::segment::{remove_if_present, Segment};
use crate::txn_index::TxnIndex;
use crate::{AppendError, AppendInfo, LeaderEpoch, Offset, Timestamp};

impl PartitionLog {
    /// Appends batches replicated from the leader: one or more v2 record batches exactly as the
    /// leader stored them, offsets and leader epochs assigned. Structure and CRCs are checked, but
    /// records are not walked again, nothing is restamped and producer sequences are not checked:
    /// the leader validated every record before storing the batch, and the CRC proves these are
    /// its bytes (Kafka's followers do the same). Producer state, open transactions, markers,
    /// indexes and the epoch cache are updated as on the leader. The first batch must start at
    /// the log end ([`AppendError::OffsetMismatch`]), offsets must increase, and no batch's epoch
    /// may be below the latest epoch of this log ([`AppendError::StaleLeaderEpoch`]). A partial batch at the end of `batches` (a fetch
    /// response cut by its byte limit) is ignored; with no whole batch, nothing is written and
    /// the returned `record_count` is 0. `max.message.bytes` is not applied: the leader accepted
    /// the batch, and refusing it here would stop replication.
    pub fn append_as_follower(
        &mut self,
        batches: Bytes,
        now: Timestamp,
    ) -> Result<AppendInfo, AppendError> {
        if self.poisoned {
            return Err(AppendError::Poisoned);
        }
        let headers = self.validate_replicated(&batches)?;
        if headers.is_empty() {
            let end = self.log_end();
            return Ok(AppendInfo {
                first_offset: Offset(end),
                last_offset: Offset(end - 1),
                log_append_time: None,
                log_start_offset: Offset(self.log_start),
                duplicate: false,
                record_count: 0,
            });
        }
        let stored: Vec<([u8; HEADER_LEN], &[u8])> = headers
            .iter()
            .map(|(batch, h)| {
                let mut header = [0u8; HEADER_LEN];
                header.copy_from_slice(&batch[..HEADER_LEN]);
                (header, &batch[HEADER_LEN..h.size])
            })
            .collect();
        self.write_stored(&stored, now, None)
    }

    /// Checks replicated batches before anything is written: the whole batches at the front of
    /// `batches`, which must continue this log.
    fn validate_replicated(
        &self,
        batches: &Bytes,
    ) -> Result<Vec<(Bytes, BatchHeader)>, AppendError> {
        let mut headers = Vec::new();
        let end = self.log_end();
        let mut expected = end;
        let mut latest = self.epochs.latest().map(|e| e.epoch);
        let mut pos = 0;
        while batches.len() - pos >= HEADER_LEN {
            let rest = &batches[pos..];
            let h = check_header(rest).map_err(append_problem)?;
            if rest.len() < h.size {
                // A fetch response cut inside its last batch: that batch comes whole next time.
                break;
            }
            check_crc(&rest[..h.size], &h).map_err(append_problem)?;
            if headers.is_empty() && h.base_offset != end {
                return Err(AppendError::OffsetMismatch {
                    expected: Offset(end),
                    got: Offset(h.base_offset),
                });
            }
            if h.base_offset < expected {
                return Err(AppendError::Invalid(format!(
                    "replicated batch at offset {} overlaps the one before, which ends at {}",
                    h.base_offset,
                    expected - 1
                )));
            }
            // Offsets of one append must be addressable from one segment base (32-bit index
            // entries); only a leader log with huge compaction gaps could exceed that.
            if h.base_offset > i64::MAX - i64::from(i32::MAX)
                || h.last_offset() - end > i64::from(i32::MAX)
            {
                return Err(AppendError::Invalid(format!(
                    "replicated batch offsets up to {} are too far past the log end {end}",
                    h.base_offset
                )));
            }
            let epoch = LeaderEpoch(h.leader_epoch);
            if epoch.0 >= 0 {
                if let Some(latest) = latest.filter(|&l| epoch < l) {
                    return Err(AppendError::StaleLeaderEpoch { latest, got: epoch });
                }
                latest = Some(epoch);
            }
            expected = h.last_offset() + 1;
            headers.push((batches.slice(pos..pos + h.size), h));
            pos += h.size;
        }
        Ok(headers)
    }

    /// Drops the whole log and restarts it empty at `offset` (a follower whose leader's log start
    /// is past this log's end). Producer state, aborted transactions and the epoch cache are
    /// cleared. A failure part-way poisons the log (the files no longer match its state).
    pub fn truncate_fully_and_start_at(&mut self, offset: Offset) -> io::Result<()> {
        if offset.0 < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a log cannot start at negative offset {}", offset.0),
            ));
        }
        let result = self.replace_with_empty(offset.0);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn replace_with_empty(&mut self, offset: i64) -> io::Result<()> {
        self.generation += 1;
        self.truncations += 1;
        // The recovery point claims nothing while the old records go.
        self.lower_recovery_point(0)?;
        // Forget what describes the old records first, so a crash part-way leaves nothing that
        // points into them; the old segments go oldest first, leaving a valid suffix.
        if self.epochs.clear() {
            self.epochs.persist()?;
        }
        for snapshot in list(&self.dir)?.snapshots {
            remove_if_present(&snapshot_path(&self.dir, snapshot))?;
        }
        for segment in self.segments.values() {
            segment.remove_files()?;
        }
        let fresh = Segment::create(&self.dir, offset)?;
        sync_dir(&self.dir)?;
        self.segments = BTreeMap::from([(offset, fresh)]);
        self.log_start = offset;
        self.recovery_point = offset;
        self.cleaned_to = offset;
        self.producers = ProducerState::default();
        self.aborted = TxnIndex::default();
        self.unflushed = 0;
        self.write_checkpoints()?;
        self.write_cleaner_checkpoint()?;
        tracing::info!(dir = %self.dir.display(), log_start = offset, "truncated the whole log and restarted it");
        Ok(())
    }

    /// A leader starts `epoch` at the log end (Kafka assigns the epoch when leadership begins,
    /// before any write): OffsetForLeaderEpoch for an epoch between the previous one and this
    /// then ends at this offset instead of being unknown, so a follower with a stale epoch
    /// truncates to where the logs diverge, not to its high watermark. Checkpointed when new;
    /// an entry without a batch after it is dropped again at the next open.
    pub fn assign_epoch(&mut self, epoch: LeaderEpoch) -> io::Result<()> {
        if self.epochs.assign(epoch, Offset(self.log_end())) {
            self.epochs.persist()?;
        }
        Ok(())
    }

    /// The newest leader epoch with a batch in the log (or assigned by [`Self::assign_epoch`]).
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.epochs.latest().map(|e| e.epoch)
    }

    /// The epoch history: each epoch with a batch in the log and its first offset, oldest first
    /// (the first entry's offset is clamped to the log start).
    pub fn leader_epochs(&self) -> Vec<EpochEntry> {
        self.epochs.entries().to_vec()
    }

    /// OffsetForLeaderEpoch (KIP-101/279), Kafka's semantics: for the latest epoch, (it, log
    /// end); otherwise the largest epoch at or below `requested` and the start offset of the next
    /// larger epoch, where a follower that had `requested` must truncate. For `requested` below
    /// every known epoch (deleted history): (`requested`, first known start offset). When the
    /// cache is empty, `requested` is undefined (-1) or above every epoch:
    /// ([`crate::UNDEFINED_EPOCH`], [`crate::UNDEFINED_EPOCH_OFFSET`]).
    pub fn end_offset_for_epoch(&self, requested: LeaderEpoch) -> (LeaderEpoch, Offset) {
        self.epochs
            .end_offset_for(requested, Offset(self.log_end()))
    }
}
