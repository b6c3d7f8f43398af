//! Log compaction, as Kafka's log cleaner does it: keep only the latest record per key in the
//! closed segments of a `compact` topic, with offsets and order unchanged.
//!
//! A clean has three steps so that producers are never blocked by it:
//! 1. [`crate::PartitionLog::clean_plan`] (under the log's lock) picks the closed segments and the
//!    dirty range (offsets not cleaned before, from the `cleaner-offset-checkpoint`);
//! 2. [`CleanPlan::run`] (no lock) builds a map key → latest offset from the dirty range, then
//!    rewrites the segments, in groups merged up to `segment.bytes`, into `<base>.cleaned` files;
//!    batches whose records all survive are copied byte for byte, others are decoded and
//!    re-encoded with their codec; tombstones are dropped once `delete.retention.ms` has passed
//!    since a clean first wrote them; records of aborted transactions are dropped and never
//!    enter the key map (only segments below the last stable offset are cleaned, so every
//!    transaction with records there has ended);
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

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};

use crate::batch::{check_batch, BatchHeader};
use crate::segment::{file_name, scan, Segment};

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

    /// Key → offset of its latest record in the dirty range.
    fn key_map(&self) -> io::Result<HashMap<Bytes, i64>> {
        let mut map = HashMap::new();
        for segment in self
            .segments
            .iter()
            .filter(|s| s.next_offset > self.first_dirty)
        {
            let mut failure = None;
            scan(&segment.file, 0, segment.size, true, |_, header, bytes| {
                if header.is_control()
                    || header.last_offset() < self.first_dirty
                    || self.is_aborted(header)
                {
                    return Ok(());
                }
                let mut batch = Bytes::copy_from_slice(bytes);
                match RecordBatchDecoder::decode(&mut batch) {
                    Ok(set) => {
                        for record in set.records {
                            if let (Some(key), true) =
                                (record.key, record.offset >= self.first_dirty)
                            {
                                map.insert(key, record.offset);
                            }
                        }
                        Ok(())
                    }
                    Err(e) => {
                        failure = Some(format!("batch at offset {}: {e}", header.base_offset));
                        Err(String::new())
                    }
                }
            })?;
            if let Some(reason) = failure {
                return Err(invalid(format!("cannot decode for cleaning: {reason}")));
            }
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
        scan(&source.file, 0, source.size, true, |_, header, bytes| {
            if header.is_control() {
                kept_batches.push(Bytes::copy_from_slice(bytes));
                return Ok(());
            }
            if self.is_aborted(header) {
                let records = u64::try_from(header.record_count).unwrap_or(0);
                stats.records_read += records;
                return Ok(());
            }
            let mut batch = Bytes::copy_from_slice(bytes);
            let set = match RecordBatchDecoder::decode(&mut batch) {
                Ok(set) => set,
                Err(e) => {
                    failure = Some(format!("batch at offset {}: {e}", header.base_offset));
                    return Err(String::new());
                }
            };
            // Tombstones go only from segments an earlier clean already wrote, and only once
            // delete.retention.ms has passed since then: a consumer that started reading before
            // the first clean still sees every delete (Kafka's delete horizon).
            let expired_tombstones = source.next_offset <= self.first_dirty
                && self.now.saturating_sub(source.modified_ms) >= self.delete_retention_ms;
            let total = set.records.len();
            let kept: Vec<_> = set
                .records
                .into_iter()
                .filter(|r| match &r.key {
                    None => true,
                    Some(key) => {
                        let latest = map.get(key).is_none_or(|&l| r.offset >= l);
                        latest && !(r.value.is_none() && expired_tombstones)
                    }
                })
                .collect();
            stats.records_read += total as u64;
            stats.records_kept += kept.len() as u64;
            if kept.len() == total {
                kept_batches.push(Bytes::copy_from_slice(bytes));
            } else if !kept.is_empty() {
                let mut encoded = BytesMut::new();
                let options = RecordEncodeOptions {
                    version: 2,
                    compression: set.compression,
                };
                if let Err(e) = RecordBatchEncoder::encode(&mut encoded, kept.iter(), &options) {
                    failure = Some(format!("re-encoding offset {}: {e}", header.base_offset));
                    return Err(String::new());
                }
                kept_batches.push(encoded.freeze());
            }
            Ok(())
        })?;
        if let Some(reason) = failure {
            return Err(invalid(format!("cannot clean: {reason}")));
        }
        for bytes in kept_batches {
            // Re-encoding may yield several batches; index each.
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let header = check_batch(rest).map_err(|p| invalid(format!("{p:?}")))?;
                let pos = out.write_batch(&rest[..header.size], &[])?;
                out.track(
                    pos,
                    &BatchHeader::parse(&rest[..header.size]),
                    self.index_interval,
                );
                rest = &rest[header.size..];
            }
        }
        Ok(())
    }
}

/// Where a group's files live during the swap.
pub(crate) fn cleaned_path(dir: &std::path::Path, base: i64) -> PathBuf {
    dir.join(file_name(base, "cleaned"))
}

pub(crate) fn swap_path(dir: &std::path::Path, base: i64) -> PathBuf {
    dir.join(file_name(base, "swap"))
}

/// Re-encodes one whole, CRC-checked batch with `codec` (attribute bits: 0 none, 1 gzip,
/// 2 snappy, 3 lz4, 4 zstd), keeping its records, producer fields and timestamps.
pub(crate) fn recompress(batch: &Bytes, codec: i16) -> Result<Bytes, String> {
    use kafka_protocol::records::Compression;
    let compression = match codec {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        other => return Err(format!("unknown compression codec {other}")),
    };
    let mut input = batch.clone();
    let set = RecordBatchDecoder::decode(&mut input)
        .map_err(|e| format!("cannot decompress the batch to recompress it: {e}"))?;
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        set.records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| format!("cannot recompress the batch: {e}"))?;
    let out = out.freeze();
    let header = check_batch(&out).map_err(|p| format!("recompressed batch is invalid: {p:?}"))?;
    if header.size != out.len() {
        return Err("records of one batch must stay one batch when recompressed".into());
    }
    Ok(out)
}

/// A compacted topic keeps records by key, so every record must have one (Kafka's rule).
pub(crate) fn require_keys(batch: &Bytes) -> Result<(), String> {
    let mut input = batch.clone();
    let set = RecordBatchDecoder::decode(&mut input)
        .map_err(|e| format!("cannot decode the batch: {e}"))?;
    match set.records.iter().find(|r| r.key.is_none()) {
        Some(r) => Err(format!(
            "compacted topic cannot accept a record without a key (record {} of the batch)",
            r.offset
        )),
        None => Ok(()),
    }
}
