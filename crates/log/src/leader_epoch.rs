//! The leader-epoch cache (Kafka's `LeaderEpochFileCache`, KIP-101/279): for every leader epoch
//! whose first batch is in the log, the offset of that batch. It answers OffsetForLeaderEpoch, so a
//! replica coming back can cut its log where it diverged from the leader's. Persisted as the text
//! file `leader-epoch-checkpoint` in the partition directory, rewritten only when it changes.
//!
//! Invariants: epochs and start offsets both strictly increase, and every start offset lies in
//! `[log start, log end)`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::index::write_synced;
use crate::{LeaderEpoch, Offset};

/// File name of the checkpoint in a partition directory (Kafka's name).
pub(crate) const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
/// The only checkpoint format version (Kafka's `LeaderEpochCheckpointFile` version 0).
const CHECKPOINT_VERSION: u32 = 0;
/// A checkpoint claiming more entries than this is treated as damaged (an epoch per leader change;
/// a real partition has far fewer).
const CHECKPOINT_ENTRIES_MAX: usize = 1 << 20;

/// The epoch and offset Kafka answers with when it knows nothing (`UNDEFINED_EPOCH`,
/// `UNDEFINED_EPOCH_OFFSET`).
pub const UNDEFINED_EPOCH: LeaderEpoch = LeaderEpoch(-1);
/// See [`UNDEFINED_EPOCH`].
pub const UNDEFINED_EPOCH_OFFSET: Offset = Offset(-1);

/// One leader epoch and the offset of its first batch in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch stamped into the batches.
    pub epoch: LeaderEpoch,
    /// The base offset of the epoch's first batch (for the oldest entry, at least the log start).
    pub start_offset: Offset,
}

/// The ordered epoch entries of one partition and where they are checkpointed.
#[derive(Debug)]
pub(crate) struct LeaderEpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

/// Why a checkpoint file could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckpointError {
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Malformed(String),
}

/// The prefix of the checksum line Sluice appends to Kafka's format.
const CHECKSUM_PREFIX: &str = "crc32c ";

/// Parses Kafka's checkpoint text: version line, count line, then `epoch offset` lines, then
/// Sluice's `crc32c <8 hex digits>` line: the CRC-32C of all the text before it. A file without
/// the checksum line (written by an earlier version) is accepted on its structure alone.
pub(crate) fn parse_checkpoint(text: &str) -> Result<Vec<EpochEntry>, CheckpointError> {
    let bad = |s: String| CheckpointError::Malformed(s);
    let text = match text.rfind(CHECKSUM_PREFIX) {
        Some(at) if at == 0 || text.as_bytes()[at - 1] == b'\n' => {
            let (body, line) = text.split_at(at);
            let stored = line[CHECKSUM_PREFIX.len()..].trim();
            let computed = format!("{:08x}", crc32c::crc32c(body.as_bytes()));
            if stored != computed {
                return Err(bad(format!(
                    "checksum {stored} does not match the entries (expected {computed})"
                )));
            }
            body
        }
        _ => text,
    };
    let mut lines = text.lines();
    let version: u32 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| bad("no version line".into()))?;
    if version != CHECKPOINT_VERSION {
        return Err(bad(format!(
            "version {version} is not {CHECKPOINT_VERSION}"
        )));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| bad("no entry count line".into()))?;
    if count > CHECKPOINT_ENTRIES_MAX {
        return Err(bad(format!(
            "{count} entries is more than the {CHECKPOINT_ENTRIES_MAX} allowed"
        )));
    }
    let mut entries: Vec<EpochEntry> = Vec::with_capacity(count);
    for line in lines.by_ref().take(count) {
        let mut fields = line.split_whitespace();
        let (Some(epoch), Some(offset), None) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(bad(format!("line {line:?} is not `epoch offset`")));
        };
        let (Ok(epoch), Ok(offset)) = (epoch.parse::<i32>(), offset.parse::<i64>()) else {
            return Err(bad(format!("line {line:?} is not `epoch offset`")));
        };
        let entry = EpochEntry {
            epoch: LeaderEpoch(epoch),
            start_offset: Offset(offset),
        };
        if epoch < 0 || offset < 0 {
            return Err(bad(format!("line {line:?} holds a negative value")));
        }
        if let Some(last) = entries.last() {
            if entry.epoch <= last.epoch || entry.start_offset <= last.start_offset {
                return Err(bad(format!(
                    "entry {line:?} does not follow epoch {} at offset {}",
                    last.epoch.0, last.start_offset.0
                )));
            }
        }
        entries.push(entry);
    }
    if entries.len() != count {
        return Err(bad(format!(
            "the file announces {count} entries but holds {}",
            entries.len()
        )));
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return Err(bad("lines after the announced entries".into()));
    }
    Ok(entries)
}

/// Encodes entries in Kafka's checkpoint text format plus the checksum line.
pub(crate) fn format_checkpoint(entries: &[EpochEntry]) -> String {
    let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", entries.len());
    for e in entries {
        text.push_str(&format!("{} {}\n", e.epoch.0, e.start_offset.0));
    }
    let checksum = crc32c::crc32c(text.as_bytes());
    text.push_str(&format!("{CHECKSUM_PREFIX}{checksum:08x}\n"));
    text
}

impl LeaderEpochCache {
    /// An empty cache checkpointed in `dir` (nothing is written until it changes).
    pub(crate) fn empty(dir: &Path) -> Self {
        LeaderEpochCache {
            path: dir.join(CHECKPOINT_FILE),
            entries: Vec::new(),
        }
    }

    /// Reads the checkpoint in `dir`: Ok(None) when there is none.
    pub(crate) fn load(dir: &Path) -> Result<Option<Self>, CheckpointError> {
        let path = dir.join(CHECKPOINT_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let entries = parse_checkpoint(&text)?;
        Ok(Some(LeaderEpochCache { path, entries }))
    }

    /// Builds the cache from the `(epoch, base offset)` of a log's batches, in offset order.
    #[cfg(test)]
    pub(crate) fn from_batches(dir: &Path, batches: impl IntoIterator<Item = (i32, i64)>) -> Self {
        let mut cache = LeaderEpochCache::empty(dir);
        for (epoch, offset) in batches {
            cache.observe(epoch, offset);
        }
        cache
    }

    /// Rebuilding from stored batches: notes a batch stamped `epoch` at `offset`, leniently (bytes
    /// from disk): batches without an epoch (negative) or out of order are passed over.
    pub(crate) fn observe(&mut self, epoch: i32, offset: i64) {
        let newer = self.latest().is_none_or(|l| epoch > l.epoch.0);
        let later = self.latest().is_none_or(|l| offset > l.start_offset.0);
        if epoch >= 0 && newer && later {
            self.entries.push(EpochEntry {
                epoch: LeaderEpoch(epoch),
                start_offset: Offset(offset),
            });
        }
    }

    pub(crate) fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub(crate) fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that a batch of `epoch` starts at `offset` (the log end). Returns whether the cache
    /// changed (a new epoch). Negative epochs (batches without one) are not recorded. As in
    /// Kafka's `assign`, entries that would break the order (an epoch at or above `epoch`, or a
    /// start at or after `offset`) are dropped with a warning: follower appends refuse older
    /// epochs before this, so only a leader append with an older epoch gets here, after a
    /// confused caller or a damaged batch (the epoch field is outside the CRC) left a newer one.
    pub(crate) fn assign(&mut self, epoch: LeaderEpoch, offset: Offset) -> bool {
        if epoch.0 < 0 || self.latest().is_some_and(|l| l.epoch == epoch) {
            return false;
        }
        let keep = self
            .entries
            .iter()
            .take_while(|e| e.epoch < epoch && e.start_offset < offset)
            .count();
        if keep < self.entries.len() {
            tracing::warn!(
                file = %self.path.display(),
                epoch = epoch.0,
                offset = offset.0,
                dropped = ?&self.entries[keep..],
                "leader epoch goes back; dropping the newer epoch entries"
            );
            self.entries.truncate(keep);
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset: offset,
        });
        true
    }

    /// Drops entries starting at or after `end` (the log was cut there). Returns whether any was.
    pub(crate) fn truncate_from_end(&mut self, end: Offset) -> bool {
        let keep = self.entries.partition_point(|e| e.start_offset < end);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log start moved to `start`: entries starting at or below it are replaced by the latest
    /// of them, starting at `start` (Kafka's `truncateFromStart`). Returns whether anything changed.
    pub(crate) fn truncate_from_start(&mut self, start: Offset) -> bool {
        let at_or_below = self.entries.partition_point(|e| e.start_offset <= start);
        if at_or_below == 0 {
            return false;
        }
        let mut kept = self.entries[at_or_below - 1];
        let changed = at_or_below > 1 || kept.start_offset != start;
        kept.start_offset = start;
        self.entries.drain(..at_or_below - 1);
        self.entries[0] = kept;
        changed
    }

    pub(crate) fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }

    /// Kafka's `endOffsetFor`: the largest epoch at or below `requested` and the offset where the
    /// next larger epoch starts (the log end for the latest epoch). Undefined (-1, -1) when
    /// `requested` is undefined or above every epoch the cache knows. A `requested` below the
    /// first cached epoch (its history was deleted) gets `(requested, first start offset)`, as
    /// Kafka answers, so the follower truncates no further than the leader's oldest data.
    pub(crate) fn end_offset_for(
        &self,
        requested: LeaderEpoch,
        log_end: Offset,
    ) -> (LeaderEpoch, Offset) {
        let undefined = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested.0 < 0 {
            return undefined;
        }
        match self.latest() {
            None => return undefined,
            Some(latest) if latest.epoch == requested => return (requested, log_end),
            Some(_) => {}
        }
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        let Some(next) = self.entries.get(higher) else {
            return undefined;
        };
        match higher.checked_sub(1).map(|i| self.entries[i]) {
            Some(floor) => (floor.epoch, next.start_offset),
            None => (requested, next.start_offset),
        }
    }

    /// Rewrites the checkpoint (temp file, fsync, rename, directory fsync).
    pub(crate) fn persist(&self) -> io::Result<()> {
        write_synced(&self.path, format_checkpoint(&self.entries).as_bytes())?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        crate::partition_log::sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        LeaderEpochCache::from_batches(Path::new("/nonexistent"), entries.iter().copied())
    }

    fn pairs(c: &LeaderEpochCache) -> Vec<(i32, i64)> {
        c.entries()
            .iter()
            .map(|e| (e.epoch.0, e.start_offset.0))
            .collect()
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        let c = cache(&[(1, 0), (3, 10), (6, 25)]);
        let end = Offset(40);
        let table = [
            (-1, (-1, -1)), // undefined request
            (0, (0, 0)),    // below the first epoch: its start offset, as Kafka answers
            (1, (1, 10)),
            (2, (1, 10)), // no epoch 2: the floor epoch and the next epoch's start
            (3, (3, 25)),
            (4, (3, 25)),
            (5, (3, 25)),
            (6, (6, 40)),  // latest: the log end
            (7, (-1, -1)), // above everything known
        ];
        for (requested, (epoch, offset)) in table {
            assert_eq!(
                c.end_offset_for(LeaderEpoch(requested), end),
                (LeaderEpoch(epoch), Offset(offset)),
                "requested {requested}"
            );
        }
        let empty = cache(&[]);
        for requested in [-1, 0, 5] {
            assert_eq!(
                empty.end_offset_for(LeaderEpoch(requested), end),
                (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
            );
        }
    }

    #[test]
    fn from_batches_keeps_the_first_batch_of_each_newer_epoch() {
        let c = cache(&[(0, 0), (0, 3), (-1, 5), (2, 6), (1, 8), (2, 9), (4, 12)]);
        assert_eq!(pairs(&c), vec![(0, 0), (2, 6), (4, 12)]);
    }

    #[test]
    fn assign_adds_only_new_epochs() {
        let mut c = cache(&[]);
        assert!(c.assign(LeaderEpoch(0), Offset(0)));
        assert!(!c.assign(LeaderEpoch(0), Offset(5)));
        assert!(!c.assign(LeaderEpoch(-1), Offset(6)));
        assert!(c.assign(LeaderEpoch(3), Offset(7)));
        assert_eq!(pairs(&c), vec![(0, 0), (3, 7)]);
        // An older epoch replaces the entries at or above it (Kafka's assign).
        assert!(c.assign(LeaderEpoch(1), Offset(9)));
        assert_eq!(pairs(&c), vec![(0, 0), (1, 9)]);
    }

    #[test]
    fn truncation_from_either_end() {
        let mut c = cache(&[(1, 0), (3, 10), (6, 25)]);
        assert!(!c.truncate_from_end(Offset(26)));
        assert!(c.truncate_from_end(Offset(25)));
        assert_eq!(pairs(&c), vec![(1, 0), (3, 10)]);

        let mut c = cache(&[(1, 0), (3, 10), (6, 25)]);
        assert!(!c.truncate_from_start(Offset(0)));
        assert!(c.truncate_from_start(Offset(12)));
        assert_eq!(pairs(&c), vec![(3, 12), (6, 25)]);
        assert!(c.truncate_from_start(Offset(25)));
        assert_eq!(pairs(&c), vec![(6, 25)]);
        assert!(c.truncate_from_start(Offset(30)));
        assert_eq!(pairs(&c), vec![(6, 30)]);
        assert!(c.clear());
        assert!(!c.truncate_from_start(Offset(31)));
    }

    #[test]
    fn checkpoint_text_round_trips_and_damage_is_refused() {
        let entries = cache(&[(0, 0), (3, 7), (5, 9)]).entries;
        let text = format_checkpoint(&entries);
        let body = "0\n3\n0 0\n3 7\n5 9\n";
        assert_eq!(
            text,
            format!("{body}crc32c {:08x}\n", crc32c::crc32c(body.as_bytes()))
        );
        assert_eq!(parse_checkpoint(&text).unwrap(), entries);
        // A file of an earlier version has no checksum line.
        assert_eq!(parse_checkpoint(body).unwrap(), entries);
        assert_eq!(parse_checkpoint("0\n0\n").unwrap(), vec![]);
        // An entry moved to a later offset still parses, but the checksum tells.
        let moved = text.replacen("3 7", "3 8", 1);
        assert!(parse_checkpoint(&moved).is_err(), "{moved:?} was accepted");
        for bad in [
            "",
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n1\n0 0\n3 7\n",
            "0\n2\n3 0\n1 5\n",
            "0\n2\n1 5\n3 5\n",
            "0\n1\n0 x\n",
            "0\n1\n-1 0\n",
            "0\n1\n0 0 0\n",
            "0\n99999999999\n",
        ] {
            assert!(parse_checkpoint(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
