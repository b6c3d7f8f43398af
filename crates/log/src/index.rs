//! Sparse offset and time indexes of one segment, kept in memory and written as Kafka's
//! `.index` (relative offset u32, position u32) and `.timeindex` (timestamp i64, relative offset u32)
//! files when the segment is rolled or the log is closed.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use crate::batch::{be_i64, be_u32};

/// Bytes per `.index` entry.
pub(crate) const OFFSET_ENTRY: usize = 8;
/// Bytes per `.timeindex` entry.
pub(crate) const TIME_ENTRY: usize = 12;

/// Entries of one segment's indexes; offsets are relative to the segment's base offset.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Indexes {
    /// (relative offset of a batch's base, file position of that batch), increasing in both.
    pub offsets: Vec<(u32, u32)>,
    /// (max timestamp so far, relative offset of the batch that reached it), increasing in both.
    pub times: Vec<(i64, u32)>,
}

impl Indexes {
    /// Position of the last indexed batch starting at or before `relative`, or 0.
    pub(crate) fn position_for(&self, relative: u32) -> u32 {
        let i = self.offsets.partition_point(|&(o, _)| o <= relative);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].1
        }
    }

    /// Relative offset from which to scan for the first batch with max timestamp >= `ts`.
    pub(crate) fn scan_start_for_time(&self, ts: i64) -> u32 {
        // Entries strictly below ts prove every earlier batch is below ts too; start at the batch
        // right after the last such entry's batch, conservatively at that batch itself.
        let i = self.times.partition_point(|&(t, _)| t < ts);
        if i == 0 {
            0
        } else {
            self.times[i - 1].1
        }
    }

    pub(crate) fn push_offset(&mut self, relative: u32, position: u32) {
        if let Some(&(o, p)) = self.offsets.last() {
            debug_assert!(relative > o && position > p, "offset index must grow");
        }
        self.offsets.push((relative, position));
    }

    /// Adds a time entry when `ts` is larger than every earlier entry.
    pub(crate) fn maybe_push_time(&mut self, ts: i64, relative: u32) {
        match self.times.last() {
            Some(&(t, o)) if ts <= t || relative <= o => {}
            _ => self.times.push((ts, relative)),
        }
    }

    /// Drops entries for batches at or after `relative` / `position`.
    pub(crate) fn truncate(&mut self, relative: u32, position: u32) {
        self.offsets.retain(|&(o, p)| o < relative && p < position);
        self.times.retain(|&(_, o)| o < relative);
    }

    /// Writes both files (replacing them) and syncs them.
    pub(crate) fn write(&self, offset_path: &Path, time_path: &Path) -> io::Result<()> {
        let mut buf = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY);
        for &(o, p) in &self.offsets {
            buf.extend_from_slice(&o.to_be_bytes());
            buf.extend_from_slice(&p.to_be_bytes());
        }
        write_synced(offset_path, &buf)?;
        buf.clear();
        for &(t, o) in &self.times {
            buf.extend_from_slice(&t.to_be_bytes());
            buf.extend_from_slice(&o.to_be_bytes());
        }
        write_synced(time_path, &buf)
    }

    /// Loads both files; `None` when missing or inconsistent with a log of `log_size` bytes (the
    /// caller then rebuilds from the log).
    pub(crate) fn load(offset_path: &Path, time_path: &Path, log_size: u64) -> Option<Indexes> {
        let offsets = fs::read(offset_path).ok()?;
        let times = fs::read(time_path).ok()?;
        if offsets.len() % OFFSET_ENTRY != 0 || times.len() % TIME_ENTRY != 0 {
            return None;
        }
        let mut idx = Indexes::default();
        for e in offsets.chunks_exact(OFFSET_ENTRY) {
            let (o, p) = (be_u32(e, 0), be_u32(e, 4));
            if u64::from(p) >= log_size {
                return None;
            }
            if let Some(&(lo, lp)) = idx.offsets.last() {
                if o <= lo || p <= lp {
                    return None;
                }
            }
            idx.offsets.push((o, p));
        }
        for e in times.chunks_exact(TIME_ENTRY) {
            let (t, o) = (be_i64(e, 0), be_u32(e, 8));
            if let Some(&(lt, lo)) = idx.times.last() {
                if t <= lt || o <= lo {
                    return None;
                }
            }
            idx.times.push((t, o));
        }
        Some(idx)
    }
}

/// Replaces `path` with `bytes` atomically (temp file, fsync, rename).
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_pick_the_last_entry_at_or_before() {
        let mut idx = Indexes::default();
        idx.push_offset(10, 4096);
        idx.push_offset(20, 8192);
        assert_eq!(idx.position_for(5), 0);
        assert_eq!(idx.position_for(10), 4096);
        assert_eq!(idx.position_for(19), 4096);
        assert_eq!(idx.position_for(25), 8192);
        idx.maybe_push_time(100, 10);
        idx.maybe_push_time(90, 15);
        idx.maybe_push_time(200, 20);
        assert_eq!(idx.times.len(), 2);
        assert_eq!(idx.scan_start_for_time(50), 0);
        assert_eq!(idx.scan_start_for_time(150), 10);
        assert_eq!(idx.scan_start_for_time(250), 20);
    }

    #[test]
    fn files_round_trip_and_bad_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let (o, t) = (dir.path().join("a.index"), dir.path().join("a.timeindex"));
        let mut idx = Indexes::default();
        idx.push_offset(3, 100);
        idx.maybe_push_time(7, 3);
        idx.write(&o, &t).unwrap();
        assert_eq!(Indexes::load(&o, &t, 1000), Some(idx.clone()));
        // An entry pointing past the log means the index is stale.
        assert_eq!(Indexes::load(&o, &t, 50), None);
        fs::write(&o, [1, 2, 3]).unwrap();
        assert_eq!(Indexes::load(&o, &t, 1000), None);
    }
}
