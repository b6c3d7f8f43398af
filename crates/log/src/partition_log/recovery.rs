//! Opening a [`PartitionLog`]: reading and checking its checkpoints, loading (and after an unclean
//! stop, re-validating) its segments, telling a torn tail (truncated) from damage to fsynced data
//! (reported as [`OpenError::Damaged`], nothing changed), and moving damaged data aside
//! ([`PartitionLog::quarantine`]) when another replica can give it back.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::{
    complete_swaps, list, open_err, sync_dir, wall_clock_ms, PartitionLog, CLEANER_CHECKPOINT_FILE,
    LOG_START_FILE, RECOVERY_POINT_FILE,
};
use crate::checkpoint::{self, Checkpoint, RecoveryPointFile};
use crate::damage::{find_next_batch, is_torn_tail, missing_at_end, Damage, DamageKind};
use crate::leader_epoch::LeaderEpochCache;
use crate::producer::ProducerState;
use crate::segment::{scan, Segment};
use crate::txn_index::TxnIndex;
use crate::{LogConfig, Offset, OpenError};

/// Why loading the segments stopped.
enum LoadError {
    Io(io::Error),
    Damaged(Box<Damage>),
}

impl From<io::Error> for LoadError {
    fn from(e: io::Error) -> Self {
        LoadError::Io(e)
    }
}

/// What loading the segments found besides the segments themselves.
struct Loaded {
    /// An unflushed tail was cut off the last segment.
    torn_tail: bool,
}

/// A checkpoint's value, or None after a warning naming what is wrong with the file.
fn checkpoint_value(dir: &Path, name: &str, read: Checkpoint) -> Option<i64> {
    match read {
        Checkpoint::Value(v) | Checkpoint::Legacy(v) => Some(v),
        Checkpoint::Missing => None,
        Checkpoint::Damaged(why) => {
            tracing::warn!(dir = %dir.display(), file = name, "damaged checkpoint ({why}); rebuilding it from the log");
            None
        }
    }
}

impl PartitionLog {
    /// Opens (creating if needed) the log in `dir`.
    ///
    /// When `clean` is false (no clean-shutdown marker), every batch after the recovery point is
    /// checked (length, magic, counts, CRC, ascending offsets) and indexes are rebuilt; a clean
    /// open checks each segment past its last index entry. A torn tail — bytes after the
    /// recovery point at the end of the newest segment, with nothing valid after them — is
    /// truncated with a warning. Anything else that is not a valid batch is damage to data that
    /// was fsynced: the open fails with [`OpenError::Damaged`] and changes no segment, index or
    /// checkpoint (only leftovers of interrupted writes are tidied first), and the
    /// caller decides (take the partition offline, or [`Self::quarantine`] the damaged range and
    /// fetch it again from another replica). Damaged checkpoints are rebuilt from the segments
    /// with a warning; a file that cannot be read is [`OpenError::Io`].
    pub fn open(dir: &Path, config: LogConfig, clean: bool) -> Result<Self, OpenError> {
        fs::create_dir_all(dir).map_err(open_err(dir))?;
        let listing = list(dir).map_err(open_err(dir))?;
        let read = |name: &str| -> Result<Option<i64>, OpenError> {
            let path = dir.join(name);
            let value = checkpoint::read(&path).map_err(open_err(&path))?;
            Ok(checkpoint_value(dir, name, value))
        };
        let log_start_path = dir.join(LOG_START_FILE);
        let log_start_checkpoint =
            checkpoint::read(&log_start_path).map_err(open_err(&log_start_path))?;
        // Rewritten at the end of the open unless it already holds the value in this format.
        let log_start_current = match log_start_checkpoint {
            Checkpoint::Value(v) => v,
            _ => -1,
        };
        let log_start_read = checkpoint_value(dir, LOG_START_FILE, log_start_checkpoint);
        let recovery_point = read(RECOVERY_POINT_FILE)?;
        let cleaned_read = read(CLEANER_CHECKPOINT_FILE)?;
        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments: BTreeMap::new(),
            log_start: log_start_read.unwrap_or(0),
            log_start_written: log_start_current,
            recovery_point: recovery_point.unwrap_or(0),
            recovery_point_file: None,
            producers: ProducerState::default(),
            aborted: TxnIndex::default(),
            epochs: LeaderEpochCache::empty(dir),
            poisoned: false,
            generation: 0,
            truncations: 0,
            cleaned_to: cleaned_read.unwrap_or(0),
            unflushed: 0,
            last_flush_ms: wall_clock_ms(),
            opened_clean: None,
        };
        let mut bases = listing.segments;
        complete_swaps(dir, &listing.swaps, &mut bases).map_err(open_err(dir))?;
        // Only the cleaner leaves offsets out between a closed segment and the next (it drops
        // whole batches); a log it never touched has none.
        let never_cleaned = !log.config.compact && cleaned_read.is_none_or(|c| c == 0);
        let loaded = match log.load_segments(&bases, clean, recovery_point, never_cleaned) {
            Ok(loaded) => loaded,
            Err(LoadError::Io(e)) => return Err(open_err(dir)(e)),
            Err(LoadError::Damaged(damage)) => {
                return Err(OpenError::Damaged {
                    path: dir.to_path_buf(),
                    damage,
                })
            }
        };
        let first_base = log.first_segment().base;
        let end = log.log_end();
        if log.log_start > end && !loaded.torn_tail {
            // Past the end of data that was all fsynced: no log-start-offset ever written could
            // say that, so the file is damaged; trusting it would hide every record.
            tracing::warn!(dir = %dir.display(), file = LOG_START_FILE, log_start = log.log_start, log_end = end, "damaged checkpoint (the log start is past the log end); rebuilding it from the log");
            log.log_start = first_base;
        }
        log.log_start = log.log_start.clamp(first_base, end);
        if log.cleaned_to > end {
            tracing::warn!(dir = %dir.display(), file = CLEANER_CHECKPOINT_FILE, cleaned_to = log.cleaned_to, log_end = end, "damaged checkpoint (cleaned past the log end); the cleaner starts over");
            log.cleaned_to = 0;
        }
        log.load_epochs().map_err(open_err(dir))?;
        log.load_producer_state(&listing.snapshots)
            .map_err(open_err(dir))?;
        // Everything recovered is synced now, so the recovery point is the log end.
        log.active().file.sync_data().map_err(open_err(dir))?;
        log.recovery_point = end;
        log.write_checkpoints().map_err(open_err(dir))?;
        if cleaned_read != Some(log.cleaned_to) && log.cleaned_to > 0 {
            log.write_cleaner_checkpoint().map_err(open_err(dir))?;
        }
        tracing::debug!(dir = %dir.display(), log_start = log.log_start, log_end = end, segments = log.segments.len(), "opened log");
        // A recovering open rebuilt indexes it did not write: its close must write them.
        log.opened_clean = clean.then(|| log.shape());
        Ok(log)
    }

    /// Loads the segments in `bases` (see [`Self::open`]). `recovery_point` is what the
    /// checkpoint says was fsynced (None when unknown: then only closed segments count as
    /// fsynced). With `never_cleaned`, a closed segment must end right where the next begins.
    fn load_segments(
        &mut self,
        bases: &[i64],
        clean: bool,
        recovery_point: Option<i64>,
        never_cleaned: bool,
    ) -> Result<Loaded, LoadError> {
        let interval = self.config.index_interval_bytes;
        let now = wall_clock_ms();
        let mut loaded = Loaded { torn_tail: false };
        let mut rebuilt_indexes = Vec::new();
        for (i, &base) in bases.iter().enumerate() {
            let mut segment = Segment::open(&self.dir, base)?;
            let last = i + 1 == bases.len();
            let next_base = bases.get(i + 1).copied();
            // Indexes of segments wholly below the recovery point were written and fsynced
            // at their roll; the others are rebuilt after an unclean stop.
            let trust_indexes =
                clean || next_base.is_some_and(|n| n <= recovery_point.unwrap_or(0));
            let indexes = if trust_indexes {
                crate::index::Indexes::load(
                    &segment.index_path(),
                    &segment.time_index_path(),
                    segment.size,
                )
            } else {
                None
            };
            let (end, rebuilt) = match indexes {
                Some(indexes) => {
                    segment.indexes = indexes;
                    // A closed segment's time index was sealed with its largest timestamp.
                    let sealed = segment.indexes.times.last().map_or(-1, |&(t, _)| t);
                    let tail = segment.load_tail()?;
                    if tail.problem.is_none() && (last || segment.max_timestamp <= sealed) {
                        (tail, false)
                    } else {
                        // The indexes may be what is wrong (an entry pointing into a batch, a
                        // timestamp below the segment's): only a scan of the whole file can
                        // tell.
                        let full = segment.rebuild(interval)?;
                        if full.problem.is_none() {
                            tracing::warn!(segment = %segment.log_path.display(), "the segment's indexes disagreed with it; rebuilt them from the segment");
                        }
                        (full, true)
                    }
                }
                None => (segment.rebuild(interval)?, true),
            };
            if let Some(problem) = end.problem {
                let first_offset = segment.next_offset;
                let resume =
                    find_next_batch(&segment.file, end.valid_to + 1, segment.size, first_offset)?;
                if is_torn_tail(last, first_offset, recovery_point, resume.is_some()) {
                    tracing::warn!(
                        segment = %segment.log_path.display(),
                        position = end.valid_to,
                        dropped_bytes = segment.size - end.valid_to,
                        first_offset,
                        "truncating the unflushed tail of the log at position {} (written after the last fsync, torn by an unclean stop): {}",
                        end.valid_to,
                        problem.detail
                    );
                    segment.truncate(end.valid_to, first_offset)?;
                    segment.file.sync_data()?;
                    loaded.torn_tail = true;
                } else {
                    // A length reaching past a valid batch is a damaged length, not a cut file.
                    let kind = match (problem.kind, &resume) {
                        (DamageKind::Truncated, Some(_)) => DamageKind::Length,
                        (kind, _) => kind,
                    };
                    return Err(LoadError::Damaged(Box::new(Damage {
                        file: segment.log_path.clone(),
                        position: end.valid_to,
                        length: resume.map_or(segment.size, |(pos, _)| pos) - end.valid_to,
                        first_offset: Offset(first_offset),
                        resume_offset: resume
                            .map(|(_, h)| Offset(h.base_offset))
                            .or(next_base.map(Offset)),
                        kind,
                        detail: problem.detail,
                        later_segments: bases.len() - i - 1,
                    })));
                }
            }
            if let Some(next_base) = next_base.filter(|&n| segment.next_offset > n) {
                return Err(LoadError::Damaged(Box::new(overlap_damage(
                    &segment,
                    next_base,
                    bases.len() - i - 1,
                )?)));
            }
            if let Some(damage) = missing_at_end(
                &segment.log_path,
                segment.size,
                segment.next_offset,
                next_base,
                never_cleaned,
                recovery_point,
                bases.len() - i - 1,
            ) {
                return Err(LoadError::Damaged(Box::new(damage)));
            }
            if !last {
                segment.seal_time_index();
                if rebuilt {
                    // Written once the whole log loaded: a damaged log changes no file.
                    rebuilt_indexes.push(base);
                }
            }
            self.insert_loaded(segment, now);
        }
        for base in rebuilt_indexes {
            self.segments[&base].write_indexes()?;
        }
        if self.segments.is_empty() {
            let segment = Segment::create(&self.dir, self.log_start)?;
            sync_dir(&self.dir)?;
            self.segments.insert(segment.base, segment);
        }
        Ok(loaded)
    }

    fn insert_loaded(&mut self, mut segment: Segment, now: i64) {
        if segment.size > 0 {
            // segment.ms counts wall-clock time from the segment's creation (not from record
            // timestamps, which producers may set far in the past).
            let created = fs::metadata(&segment.log_path)
                .and_then(|m| m.created())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64);
            segment.first_append_ms = Some(created.map_or(now, |t| t.min(now)));
        }
        self.segments.insert(segment.base, segment);
    }

    /// Loads the leader-epoch checkpoint, or rebuilds it from the batch headers when it is missing
    /// or damaged, and cuts it to the recovered log.
    fn load_epochs(&mut self) -> io::Result<()> {
        let (cache, rebuild) = match LeaderEpochCache::load(&self.dir) {
            Ok(Some(cache)) => (cache, false),
            Ok(None) => (LeaderEpochCache::empty(&self.dir), true),
            Err(crate::leader_epoch::CheckpointError::Io(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "damaged {}; rebuilding it from the log", crate::leader_epoch::CHECKPOINT_FILE);
                (LeaderEpochCache::empty(&self.dir), true)
            }
        };
        self.epochs = cache;
        if !rebuild {
            self.trim_epochs()?;
            if self.epochs_match_log()? {
                return Ok(());
            }
            tracing::warn!(dir = %self.dir.display(), "{} disagrees with the epochs of the log's batches; rebuilding it from the log", crate::leader_epoch::CHECKPOINT_FILE);
            self.epochs = LeaderEpochCache::empty(&self.dir);
        }
        // A full header scan (16 KiB reads, no CRC checks). Only the start of each epoch is
        // needed, so this could stop early per segment; it runs only without a usable checkpoint.
        for segment in self.segments.values() {
            let epochs = &mut self.epochs;
            scan(&segment.file, 0, segment.size, false, |_, h, _| {
                epochs.observe(h.leader_epoch, h.base_offset);
                Ok(())
            })?;
        }
        self.trim_epochs()?;
        if !self.epochs.entries().is_empty() {
            self.epochs.persist()?;
        }
        Ok(())
    }

    /// Whether the loaded epoch entries agree with the batches they point at (one header lookup
    /// per entry, plus the last batch): a checkpoint that parses can still be damaged or stale.
    fn epochs_match_log(&self) -> io::Result<bool> {
        for entry in self.epochs.entries() {
            let start = entry.start_offset.0;
            let matches = self.batch_holding(start)?.is_some_and(|h| {
                h.leader_epoch == entry.epoch.0
                    && (h.base_offset == start
                        || (start == self.log_start && h.base_offset < start))
            });
            if !matches {
                return Ok(false);
            }
        }
        let end = self.log_end();
        if end <= self.log_start {
            return Ok(true);
        }
        Ok(match self.batch_holding(end - 1)? {
            Some(last) if last.leader_epoch >= 0 => {
                self.epochs.latest().map(|e| e.epoch.0) == Some(last.leader_epoch)
            }
            _ => true,
        })
    }

    /// Moves the damaged part of the log in `dir` aside so it opens below the damage, for a
    /// replica that will fetch the rest again from the partition's leader: the damaged segment
    /// is copied whole into `dir/quarantine-<unix ms>/` and cut at the damage, later segments
    /// and producer-state snapshots past the damage are moved there, and the checkpoints are
    /// lowered to the damage. Nothing is deleted. Returns the quarantine directory.
    pub fn quarantine(dir: &Path, damage: &Damage) -> io::Result<PathBuf> {
        let segment_base = crate::segment::base_of(&damage.file).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a segment file", damage.file.display()),
            )
        })?;
        let aside = quarantine_dir(dir, damage)?;
        cut_log(
            dir,
            &aside,
            segment_base,
            damage.position,
            damage.first_offset.0,
        )?;
        tracing::warn!(dir = %dir.display(), quarantine = %aside.display(), offsets = %damage.offsets(), "moved damaged log data aside; the log continues below offset {}", damage.first_offset.0);
        Ok(aside)
    }
}

/// Creates `dir/quarantine-<unix ms>/` with a `DAMAGE.txt` describing `damage`.
pub(super) fn quarantine_dir(dir: &Path, damage: &Damage) -> io::Result<PathBuf> {
    let aside = dir.join(format!("quarantine-{}", wall_clock_ms()));
    fs::create_dir_all(&aside)?;
    fs::write(aside.join("DAMAGE.txt"), format!("{damage}\n"))?;
    Ok(aside)
}

/// The damage of a closed segment whose batches reach `next_base`, the next segment's base.
fn overlap_damage(segment: &Segment, next_base: i64, later: usize) -> io::Result<Damage> {
    let (position, first_offset) = match segment.find(next_base)? {
        Some((pos, h)) => (pos, h.base_offset),
        None => (segment.size, segment.next_offset),
    };
    Ok(Damage {
        file: segment.log_path.clone(),
        position,
        length: segment.size - position,
        first_offset: Offset(first_offset),
        resume_offset: Some(Offset(next_base)),
        kind: DamageKind::BaseOffset,
        detail: format!(
            "the segment holds offsets up to {} but the next segment starts at {next_base}",
            segment.next_offset - 1
        ),
        later_segments: later,
    })
}

/// Cuts the log in `dir` at byte `position` of segment `segment_base` (a batch boundary whose
/// first offset is `first_offset`), keeping everything removed in `aside`: the cut segment is
/// copied whole (its indexes, rebuilt at the next open, are moved), later segments with their
/// indexes and producer-state snapshots past the cut are moved, and the recovery point (first,
/// so a crash part-way never claims data that is gone), log start and cleaner checkpoints are
/// lowered to the cut. Shared by quarantine and `sluice log repair`.
pub(crate) fn cut_log(
    dir: &Path,
    aside: &Path,
    segment_base: i64,
    position: u64,
    first_offset: i64,
) -> io::Result<()> {
    use crate::segment::file_name;
    let rp_path = dir.join(RECOVERY_POINT_FILE);
    let lowered = match checkpoint::read(&rp_path)? {
        Checkpoint::Value(v) | Checkpoint::Legacy(v) => v.min(first_offset),
        _ => 0,
    };
    checkpoint::write(&rp_path, lowered)?;
    let listing = list(dir)?;
    let move_aside = |name: &str| -> io::Result<()> {
        let from = dir.join(name);
        match fs::rename(&from, aside.join(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    };
    let cut = dir.join(file_name(segment_base, "log"));
    fs::copy(&cut, aside.join(file_name(segment_base, "log")))?;
    fs::File::open(aside.join(file_name(segment_base, "log")))?.sync_all()?;
    for ext in ["index", "timeindex"] {
        move_aside(&file_name(segment_base, ext))?;
    }
    // The cut segment's aborted transactions below the cut are still needed; a copy is kept.
    let txn = file_name(segment_base, "txnindex");
    if dir.join(&txn).exists() {
        fs::copy(dir.join(&txn), aside.join(&txn))?;
    }
    for &base in listing.segments.iter().filter(|&&b| b > segment_base) {
        for ext in ["log", "index", "timeindex", "txnindex"] {
            move_aside(&file_name(base, ext))?;
        }
    }
    for &offset in listing.snapshots.iter().filter(|&&o| o > first_offset) {
        move_aside(&file_name(offset, "snapshot"))?;
    }
    let file = fs::OpenOptions::new().write(true).open(&cut)?;
    file.set_len(position)?;
    file.sync_all()?;
    for name in [LOG_START_FILE, CLEANER_CHECKPOINT_FILE] {
        let path = dir.join(name);
        if let Checkpoint::Value(v) | Checkpoint::Legacy(v) = checkpoint::read(&path)? {
            if v > first_offset {
                checkpoint::write(&path, first_offset)?;
            }
        }
    }
    sync_dir(aside)?;
    sync_dir(dir)
}

impl PartitionLog {
    /// Persists the recovery point: always to the page cache (so it survives a process kill),
    /// and with `durable` also to disk.
    pub(super) fn persist_recovery_point(&mut self, durable: bool) -> io::Result<()> {
        match &mut self.recovery_point_file {
            Some(file) => file.write(self.recovery_point, durable),
            None => {
                let path = self.dir.join(RECOVERY_POINT_FILE);
                self.recovery_point_file =
                    Some(RecoveryPointFile::create(&path, self.recovery_point)?);
                Ok(())
            }
        }
    }

    /// Lowers the recovery point to at most `offset` and makes that durable: called before the
    /// log end moves down, so no crash part-way leaves a recovery point past the data.
    pub(super) fn lower_recovery_point(&mut self, offset: i64) -> io::Result<()> {
        self.recovery_point = self.recovery_point.min(offset);
        self.persist_recovery_point(true)
    }
}
