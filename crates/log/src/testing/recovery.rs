//! The segment-recovery property, shared by the `segment_recovery` fuzz target and a proptest:
//! whatever bytes a segment file holds, opening its log never panics, never cuts a batch that is
//! valid before the first damaged byte, and either opens with exactly those batches (a torn
//! tail was truncated) or refuses with the damage at exactly that byte, changing nothing.
//! Checked against a model written apart from the code under test.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::BatchBuilder;
use crate::{LeaderEpoch, LogConfig, Offset, OpenError, PartitionLog};

/// Bytes of a batch header, and of the fields before the length count.
const HEADER: usize = 61;
const OVERHEAD: usize = 12;

/// Where the model's valid batches end: (byte position, next offset, batches).
fn valid_prefix(bytes: &[u8]) -> (usize, i64, usize) {
    let be32 = |at: usize| i32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let (mut pos, mut next, mut batches) = (0usize, 0i64, 0usize);
    while bytes.len() - pos >= HEADER {
        let length = be32(pos + 8);
        if length < (HEADER - OVERHEAD) as i32 {
            break;
        }
        let size = length as usize + OVERHEAD;
        if size > bytes.len() - pos || bytes[pos + 16] != 2 {
            break;
        }
        let base = i64::from_be_bytes(bytes[pos..pos + 8].try_into().expect("8 bytes"));
        let delta = be32(pos + 23);
        let count = be32(pos + 57);
        let crc = u32::from_be_bytes(bytes[pos + 17..pos + 21].try_into().expect("4 bytes"));
        let last = base.saturating_add(i64::from(delta));
        if count <= 0
            || delta < 0
            || base < next
            || last > i64::from(i32::MAX)
            || crc32c::crc32c(&bytes[pos + 21..pos + size]) != crc
        {
            break;
        }
        pos += size;
        next = last + 1;
        batches += 1;
    }
    (pos, next, batches)
}

/// A directory under `/dev/shm` when there is one (fsyncs cost nothing there, which is what
/// lets a fuzzer try thousands of inputs a second), else the system temp dir; removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let shm = Path::new("/dev/shm");
        let root = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let path = root.join(format!(
            "sluice-recovery-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds a segment from `input` and checks the property (panics when it does not hold).
/// `input[0]`: how many valid batches come first (0-7); `input[1]`: bit 0 a clean start, bit 1
/// a recovery point at the end of those batches (else 0), bit 2 one byte of the segment changed
/// (where the rest's first three bytes say); then one record count per batch; the rest is
/// appended as it is.
pub fn check_segment_recovery(input: &[u8]) {
    let (head, rest) = input.split_at(input.len().min(2));
    let batches = usize::from(head.first().copied().unwrap_or(0) % 8);
    let flags = head.get(1).copied().unwrap_or(0);
    let (counts, tail) = rest.split_at(rest.len().min(batches));
    let mut segment = Vec::new();
    let mut next = 0i64;
    for &count in counts {
        let records = usize::from(count % 5) + 1;
        let mut batch = BatchBuilder::new().base_offset(next);
        for i in 0..records {
            batch = batch.record(None, &[count; 7], i as i64);
        }
        segment.extend_from_slice(&batch.build());
        next += records as i64;
    }
    let fsynced_to = next;
    segment.extend_from_slice(tail);
    if flags & 4 != 0 && tail.len() >= 3 {
        // Damage inside the file too: one byte changed where the tail's first bytes say.
        let at = usize::from(u16::from_be_bytes([tail[0], tail[1]])) % segment.len();
        segment[at] ^= tail[2] | 1;
    }
    let (valid_to, valid_next, valid_batches) = valid_prefix(&segment);

    let dir = TempDir::new();
    let path = dir.0.join("00000000000000000000.log");
    std::fs::write(&path, &segment).expect("write segment");
    let recovery_point = if flags & 2 != 0 { fsynced_to } else { 0 };
    std::fs::write(dir.0.join("recovery-point"), recovery_point.to_string())
        .expect("write recovery point");
    let clean = flags & 1 != 0;
    match PartitionLog::open(&dir.0, LogConfig::default(), clean) {
        Ok(mut log) => {
            assert_eq!(
                log.log_end_offset(),
                Offset(valid_next),
                "opened past or short of the valid batches"
            );
            let read = log
                .read(Offset(0), usize::MAX / 2, Offset(valid_next), true)
                .expect("read the valid batches");
            assert_eq!(
                &read.records[..],
                &segment[..valid_to],
                "valid batches changed"
            );
            // The log takes appends where the valid batches end.
            let appended = log
                .validate_and_append(
                    BatchBuilder::new().record(None, b"x", 1).build(),
                    LeaderEpoch(0),
                    crate::Timestamp(1),
                )
                .expect("append after recovery");
            assert_eq!(appended.first_offset, Offset(valid_next));
        }
        Err(OpenError::Damaged { damage, .. }) => {
            assert_eq!(damage.position, valid_to as u64, "{damage}");
            assert_eq!(damage.first_offset, Offset(valid_next), "{damage}");
            assert_eq!(
                std::fs::read(&path).expect("read segment"),
                segment,
                "a refused open changed the segment"
            );
        }
        Err(e) => panic!("open failed: {e}"),
    }
    check_verify(&segment, valid_to, valid_batches);
}

/// `verify_partition` on the same bytes: no panic, nothing reported before the valid batches'
/// end, and exactly those batches counted up to it.
fn check_verify(segment: &[u8], valid_to: usize, valid_batches: usize) {
    let dir = TempDir::new();
    write_segment(&dir.0, segment);
    let report = crate::verify::verify_partition(&dir.0).expect("verify");
    let first = report
        .damage
        .iter()
        .chain(report.torn_tail.as_ref())
        .map(|d| d.position)
        .min();
    match first {
        Some(position) => assert_eq!(position, valid_to as u64),
        None => assert_eq!(valid_to, segment.len()),
    }
    assert!(report.batches as usize >= valid_batches);
}

fn write_segment(dir: &Path, segment: &[u8]) {
    std::fs::write(dir.join("00000000000000000000.log"), segment).expect("write segment");
}
