//! Damage in a segment file: what is wrong at a position ([`DamageKind`]), the report of damaged
//! data ([`Damage`]), the search for the next valid batch after damaged bytes
//! ([`find_next_batch`]), and the rule that tells a torn tail, which recovery truncates, from
//! corruption of fsynced data, which it never does ([`is_torn_tail`]).
//!
//! A torn tail is what an unclean stop leaves: bytes written after the last fsync, at the end of
//! the newest segment, that may be incomplete or garbage. It lies at or after the recovery point
//! (everything below it was fsynced: see `checkpoint::RecoveryPointFile`), in the last segment
//! (every closed segment was fsynced before the next one was created), and nothing valid follows
//! it. Anything else that is not a valid batch is damage to data that was once complete.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::batch::{
    be_i32, compute_crc, BatchHeader, HEADER_LEN, LOG_OVERHEAD, OFF_ATTRIBUTES, OFF_LENGTH,
    OFF_MAGIC,
};
use crate::Offset;

/// Bytes read at a time when searching for the next batch.
const SEARCH_CHUNK: usize = 1 << 20;

/// What is wrong with the bytes at a position of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DamageKind {
    /// The file ends inside a batch or its header.
    Truncated,
    /// The length field is impossible: smaller than a header, or reaching past the valid batch
    /// that follows.
    Length,
    /// The magic byte is not 2.
    Magic,
    /// The record count or last offset delta is impossible.
    Header,
    /// The CRC-32C does not match the bytes.
    Crc,
    /// The base offset goes backwards (below where the previous batch ended) or cannot be
    /// addressed from the segment's base.
    Offsets,
    /// A closed segment's batches reach into the offsets of the segment after it (its base
    /// offset does not follow).
    BaseOffset,
    /// Offsets below the recovery point (fsynced) are missing: the file is shorter than it was.
    Missing,
}

impl DamageKind {
    /// A short lower-case name, for reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            DamageKind::Truncated => "truncated",
            DamageKind::Length => "length",
            DamageKind::Magic => "magic",
            DamageKind::Header => "header",
            DamageKind::Crc => "crc",
            DamageKind::Offsets => "offsets",
            DamageKind::BaseOffset => "base-offset",
            DamageKind::Missing => "missing",
        }
    }
}

impl fmt::Display for DamageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a scan stopped at a position: what is wrong there, in a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanProblem {
    pub kind: DamageKind,
    pub detail: String,
}

/// What is wrong with the header at `b[0]`, which `check_header` refused.
pub(crate) fn header_problem(b: &[u8], detail: String) -> ScanProblem {
    let kind = if b.len() < HEADER_LEN {
        DamageKind::Truncated
    } else if be_i32(b, OFF_LENGTH) < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        DamageKind::Length
    } else if b[OFF_MAGIC] != 2 {
        DamageKind::Magic
    } else {
        DamageKind::Header
    };
    ScanProblem { kind, detail }
}

/// Damaged data found in a partition's log: where, which offsets, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment file.
    pub file: PathBuf,
    /// Byte position of the first damaged byte (the end of the last valid batch before it).
    pub position: u64,
    /// Damaged bytes from `position`: up to the next valid batch, or the end of the file.
    pub length: u64,
    /// The first offset that cannot be read: where the last valid batch before the damage ended.
    pub first_offset: Offset,
    /// Where valid data resumes: the base offset of the first valid batch after the damage in
    /// the same file, else (a closed segment) the next segment's base. The damaged range is
    /// `first_offset..resume_offset`; None (the newest segment) when it runs to the log end.
    pub resume_offset: Option<Offset>,
    pub kind: DamageKind,
    /// What is wrong, in a sentence.
    pub detail: String,
    /// Segment files after the damaged one (intact or not, recovery left them alone).
    pub later_segments: usize,
}

impl Damage {
    /// The damaged offset range as text: `first..=last`, or `first..` when its end is unknown.
    pub fn offsets(&self) -> String {
        match self.resume_offset {
            Some(resume) if resume.0 > self.first_offset.0 => {
                format!("{}..={}", self.first_offset.0, resume.0 - 1)
            }
            _ => format!("{}..", self.first_offset.0),
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "damaged batch data ({}) in {} at byte {} ({} bytes), offsets {}: {}",
            self.kind,
            self.file.display(),
            self.position,
            self.length,
            self.offsets(),
            self.detail
        )?;
        if self.later_segments > 0 {
            write!(f, "; {} later segment files kept", self.later_segments)?;
        }
        Ok(())
    }
}

/// Fsynced offsets missing after a segment whose valid batches end at `next_offset` (file
/// `file` of `size` bytes): before the next segment's base when the log was never cleaned (only
/// the cleaner leaves offsets out between segments), or, for the newest segment
/// (`next_base` None), below the recovery point. `later`: segment files after this one.
pub(crate) fn missing_at_end(
    file: &std::path::Path,
    size: u64,
    next_offset: i64,
    next_base: Option<i64>,
    never_cleaned: bool,
    recovery_point: Option<i64>,
    later: usize,
) -> Option<Damage> {
    let (until, detail) = match next_base {
        Some(next) if never_cleaned && next_offset < next => (
            next,
            format!("the segment ends at offset {next_offset} but the next segment starts at {next}, and no log clean ever removed records: the file lost data"),
        ),
        None => {
            let rp = recovery_point.filter(|&rp| next_offset < rp)?;
            (
                rp,
                format!("the log ends at offset {next_offset} but the recovery point says offsets up to {} were fsynced: the file lost data", rp - 1),
            )
        }
        Some(_) => return None,
    };
    Some(Damage {
        file: file.to_path_buf(),
        position: size,
        length: 0,
        first_offset: Offset(next_offset),
        resume_offset: Some(Offset(until)),
        kind: DamageKind::Missing,
        detail,
        later_segments: later,
    })
}

/// Whether a problem found by a scan is a torn tail (truncated by recovery) rather than damage:
/// it is in the `last` segment, at or after the `recovery_point` (offsets below it were fsynced;
/// None when unknown, which makes the whole last segment count as unflushed), and no valid batch
/// follows it (`batch_after`). An unclean stop tears only what was written after the last fsync,
/// and only at the end.
pub(crate) fn is_torn_tail(
    last: bool,
    first_offset: i64,
    recovery_point: Option<i64>,
    batch_after: bool,
) -> bool {
    last && recovery_point.is_none_or(|rp| first_offset >= rp) && !batch_after
}

/// The first position in `from..end` of `file` where a whole, valid batch starts (length, magic,
/// counts and CRC check out) whose base offset is at least `min_offset`: where valid data
/// resumes after damaged bytes. Reads the range once in chunks; a candidate larger than a chunk
/// has its CRC computed streaming, so memory stays bounded whatever the bytes claim.
pub(crate) fn find_next_batch(
    file: &File,
    from: u64,
    end: u64,
    min_offset: i64,
) -> io::Result<Option<(u64, BatchHeader)>> {
    let mut chunk_start = from;
    while chunk_start + HEADER_LEN as u64 <= end {
        let len = (end - chunk_start).min(SEARCH_CHUNK as u64) as usize;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, chunk_start)?;
        // Candidates start where a whole header fits in this chunk; the next chunk overlaps by
        // a header so none is skipped.
        let last_start = len - HEADER_LEN;
        for at in 0..=last_start {
            let b = &buf[at..];
            if b[OFF_MAGIC] != 2 {
                continue;
            }
            let pos = chunk_start + at as u64;
            let length = be_i32(b, OFF_LENGTH);
            if length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
                continue;
            }
            let header = BatchHeader::parse(b);
            if header.base_offset < min_offset
                || header.record_count <= 0
                || header.last_offset_delta < 0
                || header.size as u64 > end - pos
            {
                continue;
            }
            let crc = if header.size <= b.len() {
                compute_crc(&b[..header.size])
            } else {
                crc_of_range(
                    file,
                    pos + OFF_ATTRIBUTES as u64,
                    header.size - OFF_ATTRIBUTES,
                )?
            };
            if crc == header.crc {
                return Ok(Some((pos, header)));
            }
        }
        if chunk_start + len as u64 >= end {
            break;
        }
        chunk_start += (last_start + 1) as u64;
    }
    Ok(None)
}

/// CRC-32C of `len` bytes of `file` from `pos`, read a chunk at a time.
fn crc_of_range(file: &File, pos: u64, len: usize) -> io::Result<u32> {
    let mut crc = 0u32;
    let mut buf = vec![0u8; len.min(SEARCH_CHUNK)];
    let mut done = 0usize;
    while done < len {
        let n = (len - done).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos + done as u64)?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        done += n;
    }
    Ok(crc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::BatchBuilder;
    use std::io::Write;

    fn stamped(base: i64, records: usize) -> Vec<u8> {
        let mut b = BatchBuilder::new();
        for i in 0..records {
            b = b.record(None, format!("v{i}").as_bytes(), 1);
        }
        let mut bytes = b.build().to_vec();
        bytes[..8].copy_from_slice(&base.to_be_bytes());
        bytes
    }

    #[test]
    fn the_next_valid_batch_is_found_after_garbage() {
        let mut file = tempfile::tempfile().unwrap();
        let garbage = vec![0x02u8; 300];
        let second = stamped(7, 3);
        file.write_all(&garbage).unwrap();
        file.write_all(&second).unwrap();
        let end = (garbage.len() + second.len()) as u64;
        let found = find_next_batch(&file, 1, end, 5).unwrap();
        assert_eq!(found.map(|(pos, h)| (pos, h.base_offset)), Some((300, 7)));
        // Batches below the offset wanted do not count, nor do those cut by the end.
        assert_eq!(find_next_batch(&file, 1, end, 8).unwrap(), None);
        assert_eq!(find_next_batch(&file, 1, end - 1, 0).unwrap(), None);
    }

    #[test]
    fn torn_tails_are_only_unflushed_ends() {
        assert!(is_torn_tail(true, 10, Some(10), false));
        assert!(is_torn_tail(true, 10, None, false));
        assert!(
            !is_torn_tail(true, 9, Some(10), false),
            "below the recovery point"
        );
        assert!(!is_torn_tail(false, 10, Some(5), false), "a closed segment");
        assert!(!is_torn_tail(true, 10, Some(5), true), "valid data follows");
    }
}
