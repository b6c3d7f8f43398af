//! Log compaction, as Kafka's log cleaner does it: keep only the latest record per key in the
//! closed segments of a `compact` topic, with offsets and order unchanged.
//!
//! A clean has three steps so that producers are never blocked by it:
//! 1. [`crate::PartitionLog::clean_plan`] (under the log's lock) picks the closed segments and the
//!    dirty range (offsets not cleaned before, from the `cleaner-offset-checkpoint`);
//! 2. [`CleanPlan::run`] (no lock) builds a map key → latest offset from the dirty range, then
//!    rewrites the segments, in groups merged up to `segment.bytes`, into `<base>.cleaned` files;
//!    batches whose records all survive are copied byte for byte, others are rebuilt with their
//!    codec from the surviving records' bytes (base and last offset kept, as Kafka keeps them for
//!    producer sequences); tombstones are dropped once `delete.retention.ms` has passed
//!    since a clean first wrote them; records of aborted transactions are dropped and never
//!    enter the key map (only segments below the last stable offset are cleaned, so every
//!    transaction with records there has ended); a batch whose records do not read is kept byte
//!    for byte and logged as an error (compaction never drops what it cannot read), and a segment
//!    whose scan stops at a bad CRC or length is not cleaned at all;
//! 3. [`crate::PartitionLog::finish_clean`] (under the lock) swaps each group in: rename
//!    `.cleaned` → `.swap`, delete the replaced segments, rename `.swap` → `.log`. A crash leaves
//!    either the old segments (a `.cleaned` file is deleted at start) or a `.swap` that start-up
//!    completes, never a mix. If retention or truncation changed the closed segments meanwhile,
//!    the output is discarded.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use sluice_protocol::records::{Batch, BatchBuilder, Record, RecordsError};

use crate::batch::{check_batch, BatchHeader};
use crate::segment::{file_name, scan, ScanEnd, Segment};

/// One closed segment a clean reads.
#[derive(Debug, Clone)]
pub(crate) struct SourceSegment {
    pub base: i64,
    pub next_offset: i64,
    pub file: Arc<File>,
    pub size: u64,
    /// Last modification of the segment file (a cleaned segment: when it was cleaned).
    pub modified_ms: i64,
}

/// What to clean, taken from the log under its lock; run it with [`CleanPlan::run`].
#[derive(Debug)]
pub struct CleanPlan {
    pub(crate) dir: PathBuf,
    pub(crate) segments: Vec<SourceSegment>,
    /// Records at or after this offset were never cleaned: the key map is built from them.
    pub(crate) first_dirty: i64,
    /// Everything below this offset is clean once the output is swapped in.
    pub(crate) end: i64,
    /// The log's closed-segment generation when planned.
    pub(crate) generation: u64,
    pub(crate) now: i64,
    pub(crate) delete_retention_ms: i64,
    pub(crate) segment_bytes: u64,
    pub(crate) index_interval: u64,
    /// Aborted transactions that may have records in the segments: producer → [(first, last)].
    pub(crate) aborted: HashMap<i64, Vec<(i64, i64)>>,
}

/// Figures of one clean.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_kept: u64,
    pub segments_read: usize,
    pub segments_written: usize,
    /// Batches whose records did not read: kept as they were, uncompacted (logged).
    pub damaged_batches: u64,
}

/// Cleaned segments waiting to be swapped in by [`crate::PartitionLog::finish_clean`].
#[derive(Debug)]
pub struct CleanOutput {
    pub(crate) groups: Vec<(Vec<i64>, Segment)>,
    pub(crate) end: i64,
    pub(crate) generation: u64,
    pub stats: CleanStats,
}

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

impl CleanPlan {
    /// True for a data batch of an aborted transaction.
    fn is_aborted(&self, header: &BatchHeader) -> bool {
        header.is_transactional()
            && !header.is_control()
            && self.aborted.get(&header.producer_id).is_some_and(|ranges| {
                ranges
                    .iter()
                    .any(|&(first, last)| (first..=last).contains(&header.base_offset))
            })
    }

    /// Builds the key map and writes the cleaned segments. Reads only closed segments, so it runs
    /// without the log's lock.
    pub fn run(self) -> io::Result<CleanOutput> {
        let mut stats = CleanStats {
            segments_read: self.segments.len(),
            ..CleanStats::default()
        };
        let map = self.key_map()?;
        let mut groups: Vec<Vec<&SourceSegment>> = Vec::new();
        let mut group_size = 0u64;
        for segment in &self.segments {
            // A group must fit one segment: bytes, and offsets the 32-bit index can address.
            let offsets_fit = groups
                .last()
                .is_none_or(|g| segment.next_offset - g[0].base <= i64::from(i32::MAX));
            let fits = offsets_fit
                && group_size + segment.size <= self.segment_bytes.min(u64::from(u32::MAX));
            match groups.last_mut() {
                Some(group) if fits => group.push(segment),
                _ => {
                    groups.push(vec![segment]);
                    group_size = 0;
                }
            }
            group_size += segment.size;
        }
        let mut outputs = Vec::with_capacity(groups.len());
        for group in groups {
            let mut out = Segment::create_cleaned(&self.dir, group[0].base)?;
            for source in &group {
                stats.bytes_read += source.size;
                self.clean_segment(source, &map, &mut out, &mut stats)?;
            }
            out.seal_time_index();
            out.file.sync_data()?;
            stats.bytes_written += out.size;
            outputs.push((group.iter().map(|s| s.base).collect(), out));
        }
        stats.segments_written = outputs.len();
        Ok(CleanOutput {
            groups: outputs,
            end: self.end,
            generation: self.generation,
            stats,
        })
    }

    /// Key → offset of its latest record in the dirty range. A batch whose records do not read
    /// adds no key (it is kept whole by [`Self::clean_segment`]).
    fn key_map(&self) -> io::Result<HashMap<Bytes, i64>> {
        let mut map = HashMap::new();
        for segment in self
            .segments
            .iter()
            .filter(|s| s.next_offset > self.first_dirty)
        {
            let end = scan(&segment.file, 0, segment.size, true, |_, header, bytes| {
                if header.is_control()
                    || header.last_offset() < self.first_dirty
                    || self.is_aborted(header)
                {
                    return Ok(());
                }
                let mut keys = Vec::new();
                let read = read_records(bytes, |record| {
                    if let (Some(key), true) = (record.key, record.offset >= self.first_dirty) {
                        keys.push((Bytes::copy_from_slice(key), record.offset));
                    }
                    Ok(())
                });
                // Damaged batches are reported once, when they are copied.
                if read.is_ok() {
                    map.extend(keys);
                }
                Ok(())
            })?;
            refuse_damaged(segment, &end)?;
        }
        Ok(map)
    }

    fn clean_segment(
        &self,
        source: &SourceSegment,
        map: &HashMap<Bytes, i64>,
        out: &mut Segment,
        stats: &mut CleanStats,
    ) -> io::Result<()> {
        let mut kept_batches: Vec<Bytes> = Vec::new();
        let mut failure = None;
        // Tombstones go only from segments an earlier clean already wrote, and only once
        // delete.retention.ms has passed since then: a consumer that started reading before
        // the first clean still sees every delete (Kafka's delete horizon).
        let expired_tombstones = source.next_offset <= self.first_dirty
            && self.now.saturating_sub(source.modified_ms) >= self.delete_retention_ms;
        let end = scan(&source.file, 0, source.size, true, |_, header, bytes| {
            if header.is_control() {
                kept_batches.push(Bytes::copy_from_slice(bytes));
                return Ok(());
            }
            if self.is_aborted(header) {
                let records = u64::try_from(header.record_count).unwrap_or(0);
                stats.records_read += records;
                return Ok(());
            }
            let (batch, _) = match Batch::parse(bytes) {
                Ok(parsed) => parsed,
                Err(e) => {
                    failure = Some(format!("batch at offset {}: {e}", header.base_offset));
                    return Err(String::new());
                }
            };
            let codec = match batch.header().compression() {
                Ok(codec) => codec,
                Err(e) => {
                    keep_damaged(source, header, &e, bytes, &mut kept_batches, stats);
                    return Ok(());
                }
            };
            let mut kept = BatchBuilder::retaining(batch.header(), codec);
            let (mut total, mut dropped) = (0u64, 0u64);
            let read = read_records(bytes, |r| {
                total += 1;
                let keep = match r.key {
                    None => true,
                    Some(key) => {
                        let latest = map.get(key).is_none_or(|&l| r.offset >= l);
                        latest && !(r.value.is_none() && expired_tombstones)
                    }
                };
                if keep {
                    kept.append_raw(&r);
                } else {
                    dropped += 1;
                }
                Ok(())
            });
            if let Err(e) = read {
                keep_damaged(source, header, &e, bytes, &mut kept_batches, stats);
                return Ok(());
            }
            stats.records_read += total;
            stats.records_kept += total - dropped;
            if dropped == 0 {
                kept_batches.push(Bytes::copy_from_slice(bytes));
            } else if !kept.is_empty() {
                match kept.build() {
                    Ok(batch) => kept_batches.push(Bytes::from(batch)),
                    Err(e) => {
                        failure = Some(format!("re-encoding offset {}: {e}", header.base_offset));
                        return Err(String::new());
                    }
                }
            }
            Ok(())
        })?;
        if let Some(reason) = failure {
            return Err(invalid(format!("cannot clean: {reason}")));
        }
        refuse_damaged(source, &end)?;
        for bytes in kept_batches {
            let header = check_batch(&bytes).map_err(|p| invalid(format!("{p:?}")))?;
            let pos = out.write_batch(&bytes, &[])?;
            out.track(pos, &header, self.index_interval);
        }
        Ok(())
    }
}

/// Walks the records of one stored batch (any codec, decompression bounded by
/// [`crate::DECOMPRESSED_LIMIT`]), with every check of the codec: a count that disagrees with
/// the bytes is an error before anything is decoded.
fn read_records(
    bytes: &[u8],
    f: impl FnMut(Record<'_>) -> Result<(), RecordsError>,
) -> Result<(), RecordsError> {
    let (batch, _) = Batch::parse(bytes)?;
    batch.for_each_record(crate::DECOMPRESSED_LIMIT, f)
}

/// A batch whose records do not read is kept byte for byte (compaction never drops what it
/// cannot read) and reported loudly: it was stored before produce validation existed, or the
/// disk changed it under a valid CRC.
fn keep_damaged(
    source: &SourceSegment,
    header: &BatchHeader,
    error: &RecordsError,
    bytes: &[u8],
    kept: &mut Vec<Bytes>,
    stats: &mut CleanStats,
) {
    tracing::error!(
        segment = source.base,
        offset = header.base_offset,
        last_offset = header.last_offset(),
        error = %error,
        "the cleaner cannot read this batch's records; it is kept as it is, uncompacted"
    );
    stats.damaged_batches += 1;
    kept.push(Bytes::copy_from_slice(bytes));
}

/// A source segment whose scan stopped early (a bad CRC or length) is not cleaned at all: its
/// output would lose what follows the damage.
fn refuse_damaged(segment: &SourceSegment, end: &ScanEnd) -> io::Result<()> {
    match &end.problem {
        None => Ok(()),
        Some(problem) => {
            tracing::error!(
                segment = segment.base,
                position = end.valid_to,
                problem = ?problem,
                "segment is damaged; the cleaner leaves this log as it is"
            );
            Err(invalid(format!(
                "segment {} is damaged at position {}: {problem:?}; not cleaned",
                segment.base, end.valid_to
            )))
        }
    }
}

/// Where a group's files live during the swap.
pub(crate) fn cleaned_path(dir: &std::path::Path, base: i64) -> PathBuf {
    dir.join(file_name(base, "cleaned"))
}

pub(crate) fn swap_path(dir: &std::path::Path, base: i64) -> PathBuf {
    dir.join(file_name(base, "swap"))
}
