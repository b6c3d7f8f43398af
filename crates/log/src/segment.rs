//! One segment of a partition log: the `<base>.log` file of whole batches with its sparse indexes,
//! and the sequential scan that recovery, index rebuilding and producer-state replay share.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{check_crc, check_header, BatchHeader, BatchProblem, HEADER_LEN};
use crate::damage::{header_problem, DamageKind, ScanProblem};
use crate::index::Indexes;

/// Bytes read at a time by scans that check every batch.
const SCAN_CHUNK: usize = 1 << 20;
/// Bytes read at a time by scans that only look at headers (a lookup from an index entry).
const HEADER_SCAN_CHUNK: usize = 16 << 10;

pub(crate) fn file_name(base: i64, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

/// The largest base offset a segment file may name: far beyond any real log, and far enough
/// from `i64::MAX` that offset arithmetic within a segment cannot overflow.
const SEGMENT_BASE_MAX: i64 = i64::MAX / 2;

/// Whether `base` can be a segment's base offset (see [`SEGMENT_BASE_MAX`]).
pub(crate) fn is_segment_base(base: i64) -> bool {
    (0..=SEGMENT_BASE_MAX).contains(&base)
}

/// The base offset a segment file's name gives (`00000000000000004242.log` → 4242).
pub(crate) fn base_of(path: &Path) -> Option<i64> {
    path.file_stem()?.to_str()?.parse().ok()
}

/// Where a scan stopped.
#[derive(Debug)]
pub(crate) struct ScanEnd {
    /// File position after the last good batch.
    pub valid_to: u64,
    /// Why the scan stopped before the end, if it did.
    pub problem: Option<ScanProblem>,
}

/// The sentence of a batch problem.
pub(crate) fn problem_text(p: BatchProblem) -> String {
    match p {
        BatchProblem::Truncated(s) | BatchProblem::Corrupt(s) | BatchProblem::Invalid(s) => s,
    }
}

/// Reads the batches of `file` from `pos` to `end` in order, calling `visit(position, header, bytes)`
/// for each (`bytes` is the whole batch when `verify` is set, else at least its header). With
/// `verify`, the CRC of every batch is checked. `visit` may reject a batch with a reason (for
/// example an offset going backwards: [`DamageKind::Offsets`]), which stops the scan like
/// corruption does.
pub(crate) fn scan(
    file: &File,
    mut pos: u64,
    end: u64,
    verify: bool,
    mut visit: impl FnMut(u64, &BatchHeader, &[u8]) -> Result<(), String>,
) -> io::Result<ScanEnd> {
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = pos;
    let stop = |valid_to, kind, detail| {
        Ok(ScanEnd {
            valid_to,
            problem: Some(ScanProblem { kind, detail }),
        })
    };
    while pos < end {
        let left = end - pos;
        let want_header = left.min(HEADER_LEN as u64);
        if pos < buf_start || pos + want_header > buf_start + buf.len() as u64 {
            buf_start = pos;
            // Header-only scans (lookups) step through a few KiB; full scans read big chunks.
            let chunk = if verify {
                SCAN_CHUNK
            } else {
                HEADER_SCAN_CHUNK
            };
            buf = read_exact_vec(file, pos, left.min(chunk as u64) as usize)?;
        }
        let at = (pos - buf_start) as usize;
        let header = match check_header(&buf[at..]) {
            Ok(h) => h,
            Err(p) => {
                let ScanProblem { kind, detail } = header_problem(&buf[at..], problem_text(p));
                return stop(pos, kind, detail);
            }
        };
        if header.size as u64 > left {
            return stop(
                pos,
                DamageKind::Truncated,
                format!(
                    "batch at position {pos} claims {} bytes, only {left} remain",
                    header.size
                ),
            );
        }
        if verify && pos + header.size as u64 > buf_start + buf.len() as u64 {
            buf_start = pos;
            buf = read_exact_vec(
                file,
                pos,
                (header.size.max(SCAN_CHUNK) as u64).min(left) as usize,
            )?;
        }
        let at = (pos - buf_start) as usize;
        let bytes = if verify {
            let batch = &buf[at..at + header.size];
            if let Err(p) = check_crc(batch, &header) {
                return stop(pos, DamageKind::Crc, problem_text(p));
            }
            batch
        } else {
            &buf[at..(at + header.size).min(buf.len())]
        };
        if let Err(reason) = visit(pos, &header, bytes) {
            return stop(pos, DamageKind::Offsets, reason);
        }
        pos += header.size as u64;
    }
    Ok(ScanEnd {
        valid_to: pos,
        problem: None,
    })
}

fn read_exact_vec(file: &File, pos: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; len];
    file.read_exact_at(&mut v, pos)?;
    Ok(v)
}

/// A segment: its file, size, offsets, timestamps and indexes.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: i64,
    pub file: Arc<File>,
    pub log_path: PathBuf,
    /// Bytes of whole batches in the file.
    pub size: u64,
    /// One past the last offset stored (the base offset when empty).
    pub next_offset: i64,
    pub indexes: Indexes,
    /// Largest batch max timestamp seen (-1 when empty or unknown).
    pub max_timestamp: i64,
    /// Base offset of the batch holding `max_timestamp`.
    pub offset_of_max_timestamp: i64,
    pub bytes_since_index: u64,
    /// Wall-clock time of the first append, for `segment.ms`.
    pub first_append_ms: Option<i64>,
}

impl Segment {
    /// Creates an empty segment file (replacing any leftover of the same name).
    pub(crate) fn create(dir: &Path, base: i64) -> io::Result<Segment> {
        let log_path = dir.join(file_name(base, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)?;
        for ext in ["index", "timeindex"] {
            remove_if_present(&dir.join(file_name(base, ext)))?;
        }
        Ok(Segment::with_file(base, file, log_path, 0))
    }

    /// Creates the output of a clean: data goes to `<base>.cleaned`, but the segment already
    /// carries its final `<base>.log` name for after the swap.
    pub(crate) fn create_cleaned(dir: &Path, base: i64) -> io::Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join(file_name(base, "cleaned")))?;
        Ok(Segment::with_file(
            base,
            file,
            dir.join(file_name(base, "log")),
            0,
        ))
    }

    /// Opens an existing segment file; indexes and offsets are filled in by the caller.
    pub(crate) fn open(dir: &Path, base: i64) -> io::Result<Segment> {
        let log_path = dir.join(file_name(base, "log"));
        let file = OpenOptions::new().read(true).write(true).open(&log_path)?;
        let size = file.metadata()?.len();
        Ok(Segment::with_file(base, file, log_path, size))
    }

    fn with_file(base: i64, file: File, log_path: PathBuf, size: u64) -> Segment {
        Segment {
            base,
            file: Arc::new(file),
            log_path,
            size,
            next_offset: base,
            indexes: Indexes::default(),
            max_timestamp: -1,
            offset_of_max_timestamp: base,
            bytes_since_index: 0,
            first_append_ms: None,
        }
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.log_path.with_extension("index")
    }

    pub(crate) fn time_index_path(&self) -> PathBuf {
        self.log_path.with_extension("timeindex")
    }

    /// Offset relative to the base, as stored in the indexes.
    pub(crate) fn relative(&self, offset: i64) -> u32 {
        let r = offset - self.base;
        debug_assert!(
            (0..=i64::from(u32::MAX)).contains(&r),
            "offset {offset} outside segment {}",
            self.base
        );
        r.clamp(0, i64::from(u32::MAX)) as u32
    }

    /// Writes one stamped batch (`header` + `records`) at the end of the file. On failure the file
    /// is cut back to its previous size (best effort) and the error returned.
    pub(crate) fn write_batch(&mut self, header: &[u8], records: &[u8]) -> io::Result<u64> {
        let pos = self.size;
        let result = self
            .file
            .write_all_at(header, pos)
            .and_then(|()| self.file.write_all_at(records, pos + header.len() as u64));
        if let Err(e) = result {
            let _ = self.file.set_len(pos);
            return Err(e);
        }
        self.size += (header.len() + records.len()) as u64;
        Ok(pos)
    }

    /// Updates offsets, timestamps and the sparse indexes for a batch just stored at `pos`.
    pub(crate) fn track(&mut self, pos: u64, header: &BatchHeader, index_interval: u64) {
        debug_assert!(
            header.base_offset >= self.next_offset,
            "offsets only grow in a segment"
        );
        if self.bytes_since_index > index_interval {
            let rel = self.relative(header.base_offset);
            self.indexes.push_offset(rel, pos as u32);
            if self.max_timestamp >= 0 {
                let rel_max = self.relative(self.offset_of_max_timestamp);
                self.indexes.maybe_push_time(self.max_timestamp, rel_max);
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += header.size as u64;
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        self.next_offset = header.last_offset() + 1;
    }

    /// Adds the final time index entry, as Kafka does when a segment stops being active.
    pub(crate) fn seal_time_index(&mut self) {
        if self.max_timestamp >= 0 {
            let rel = self.relative(self.offset_of_max_timestamp);
            self.indexes.maybe_push_time(self.max_timestamp, rel);
        }
    }

    pub(crate) fn write_indexes(&self) -> io::Result<()> {
        self.indexes
            .write(&self.index_path(), &self.time_index_path())
    }

    /// Rebuilds indexes and offsets by scanning (and verifying) the whole file. Returns the scan's
    /// end: the caller truncates at `valid_to` when a problem was found.
    pub(crate) fn rebuild(&mut self, index_interval: u64) -> io::Result<ScanEnd> {
        self.indexes = Indexes::default();
        self.bytes_since_index = 0;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = self.base;
        self.next_offset = self.base;
        let file = Arc::clone(&self.file);
        let mut expected = self.base;
        let mut visited = Vec::new();
        let end = scan(&file, 0, self.size, true, |pos, h, _| {
            expected = check_offsets(self.base, expected, pos, h)?;
            visited.push((pos, *h));
            Ok(())
        })?;
        for (pos, h) in visited {
            self.track(pos, &h, index_interval);
        }
        Ok(end)
    }

    /// Scans from the last indexed batch to the end (clean open): finds the next offset and the
    /// newest timestamps and stops at anything that is not a valid batch.
    pub(crate) fn load_tail(&mut self) -> io::Result<ScanEnd> {
        let (start_rel, start_pos) = self.indexes.offsets.last().copied().unwrap_or((0, 0));
        self.max_timestamp = self.indexes.times.last().map_or(-1, |&(t, _)| t);
        self.offset_of_max_timestamp =
            self.base + i64::from(self.indexes.times.last().map_or(0, |&(_, o)| o));
        self.next_offset = self.base + i64::from(start_rel);
        self.bytes_since_index = 0;
        let file = Arc::clone(&self.file);
        let mut expected = self.next_offset;
        let mut visited = Vec::new();
        let end = scan(&file, u64::from(start_pos), self.size, true, |pos, h, _| {
            expected = check_offsets(self.base, expected, pos, h)?;
            visited.push(*h);
            Ok(())
        })?;
        for h in visited {
            self.bytes_since_index += h.size as u64;
            if h.max_timestamp > self.max_timestamp {
                self.max_timestamp = h.max_timestamp;
                self.offset_of_max_timestamp = h.base_offset;
            }
            self.next_offset = h.last_offset() + 1;
        }
        Ok(end)
    }

    /// Position and header of the first batch whose last offset is at least `offset`, or None when
    /// every batch is below it. Damaged bytes met before that batch are an error
    /// ([`io::ErrorKind::InvalidData`]): a lookup never skips data silently. The scan starts at
    /// the sparse index's entry; when that fails it is repeated from the file's start, so a
    /// damaged index entry costs a longer scan, not a wrong answer.
    pub(crate) fn find(&self, offset: i64) -> io::Result<Option<(u64, BatchHeader)>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let start = u64::from(
            self.indexes
                .position_for(self.relative(offset.max(self.base))),
        );
        let (found, problem) = self.find_from(start, offset)?;
        if found.is_some() || problem.is_none() {
            return Ok(found);
        }
        let (found, problem) = if start > 0 {
            self.find_from(0, offset)?
        } else {
            (found, problem)
        };
        match (found, problem) {
            (Some(found), _) => {
                tracing::warn!(segment = %self.log_path.display(), position = start, "the offset index points at no batch; the segment was read from its start (the index is rebuilt at the next unclean start)");
                Ok(Some(found))
            }
            (None, Some((pos, problem))) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "damaged batch data ({}) in {} at byte {pos} before offset {offset}: {}",
                    problem.kind,
                    self.log_path.display(),
                    problem.detail
                ),
            )),
            (None, None) => Ok(None),
        }
    }

    /// One header scan of [`Self::find`] from `start`: the batch found, or where and why the
    /// scan stopped short.
    #[allow(clippy::type_complexity)] // a private helper's pair of outcomes
    fn find_from(
        &self,
        start: u64,
        offset: i64,
    ) -> io::Result<(Option<(u64, BatchHeader)>, Option<(u64, ScanProblem)>)> {
        let mut found = None;
        let end = scan(&self.file, start, self.size, false, |pos, h, _| {
            if h.last_offset() >= offset {
                found = Some((pos, *h));
                return Err(String::new());
            }
            Ok(())
        })?;
        if found.is_some() {
            return Ok((found, None));
        }
        Ok((None, end.problem.map(|p| (end.valid_to, p))))
    }

    /// Cuts the file at `pos` (a batch boundary); `next_offset` becomes `next`.
    pub(crate) fn truncate(&mut self, pos: u64, next: i64) -> io::Result<()> {
        self.file.set_len(pos)?;
        self.size = pos;
        let rel = self.relative(next.max(self.base));
        self.indexes.truncate(rel, pos as u32);
        self.next_offset = next;
        Ok(())
    }

    /// Removes the segment's files.
    pub(crate) fn remove_files(&self) -> io::Result<()> {
        remove_if_present(&self.log_path)?;
        remove_if_present(&self.index_path())?;
        remove_if_present(&self.time_index_path())?;
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        remove_if_present(&crate::txn_index::txn_index_path(dir, self.base))
    }
}

/// Checks a batch read back from a segment: offsets ascend from `expected` and stay within what
/// the 32-bit index can address from `base`. Returns the offset expected next.
pub(crate) fn check_offsets(
    base: i64,
    expected: i64,
    pos: u64,
    h: &BatchHeader,
) -> Result<i64, String> {
    if h.base_offset < expected {
        return Err(format!(
            "batch at position {pos} has offset {} below the expected {expected}",
            h.base_offset
        ));
    }
    if h.last_offset() - base > i64::from(i32::MAX) {
        return Err(format!(
            "batch at position {pos} has offset {} too far past the segment base",
            h.last_offset()
        ));
    }
    Ok(h.last_offset() + 1)
}

pub(crate) fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
