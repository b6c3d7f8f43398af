//! Produce validation, as Kafka's `LogValidator` does it: every batch and every record is
//! checked before anything is written, and outside the partition's lock.
//!
//! [`validate`] turns a producer's bytes into [`ValidatedBatches`], the only input
//! [`crate::PartitionLog::append`] takes, so nothing reaches the log unchecked. Per batch, in
//! Kafka's order: header and length (CORRUPT_MESSAGE), magic 2 (INVALID_RECORD),
//! `max.message.bytes` (MESSAGE_TOO_LARGE), CRC (CORRUPT_MESSAGE), no control batches, a count
//! that matches the last offset delta (INVALID_RECORD), a known codec
//! (UNSUPPORTED_COMPRESSION_TYPE). Then the records are walked — an uncompressed batch in place,
//! a compressed one streamed through its decoder with at most [`DECOMPRESSED_LIMIT`] bytes
//! decompressed: exactly the claimed count, offset deltas 0, 1, 2, …, lengths that fit, no
//! trailing bytes (INVALID_RECORD; a payload the codec refuses is CORRUPT_MESSAGE, one that
//! decompresses past the limit MESSAGE_TOO_LARGE). Per record, as Kafka: a key on compacted
//! topics (INVALID_RECORD) and, for CreateTime topics, a timestamp within
//! `message.timestamp.before.max.ms` / `message.timestamp.after.max.ms` of now
//! (INVALID_TIMESTAMP); these are collected for the whole batch and reported per record (KIP-467).
//! The batch's max timestamp is set to its records' largest, as Kafka does. When
//! `compression.type` names another codec the records are recompressed here too.
//!
//! Nothing here allocates per record: an uncompressed batch is walked where it lies, a
//! compressed one through one buffer per batch.

use bytes::Bytes;
use sluice_protocol::records::{
    self, Batch, BatchHeader as WireHeader, Compression, Record, RecordsError,
};

use crate::batch::BatchHeader;
use crate::{AppendError, CompressionType, LogConfig, RecordError, Timestamp, TimestampType};

/// The most bytes one batch's records may decompress to. Real producers stay far below it (a
/// Java producer's batch is `batch.size` compressed, 16 KiB by default); a decompression bomb
/// stops here. Validation streams, so memory holds one record, never the whole batch.
pub const DECOMPRESSED_LIMIT: usize = records::DEFAULT_DECOMPRESSED_LIMIT;

/// What validation depends on in a partition's config. An append under a different policy
/// (the config changed since) validates again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationPolicy {
    compact: bool,
    compression: CompressionType,
    max_message_bytes: u32,
    timestamp_type: TimestampType,
    timestamp_before_max_ms: i64,
    timestamp_after_max_ms: i64,
}

impl From<&LogConfig> for ValidationPolicy {
    fn from(config: &LogConfig) -> Self {
        ValidationPolicy {
            compact: config.compact,
            compression: config.compression,
            max_message_bytes: config.max_message_bytes,
            timestamp_type: config.message_timestamp_type,
            timestamp_before_max_ms: config.message_timestamp_before_max_ms,
            timestamp_after_max_ms: config.message_timestamp_after_max_ms,
        }
    }
}

/// Producer batches that passed [`validate`]. Only [`validate`] makes one.
#[derive(Debug, Clone)]
pub struct ValidatedBatches {
    /// Each batch as it will be stored (recompressed, or its max timestamp corrected, when
    /// validation had to) with its header.
    pub(crate) batches: Vec<(Bytes, BatchHeader)>,
    pub(crate) policy: ValidationPolicy,
    /// The bytes as received, to validate again if the policy changed before the append.
    pub(crate) received: Bytes,
}

impl ValidatedBatches {
    /// Records in the batches.
    pub fn record_count(&self) -> i64 {
        self.batches
            .iter()
            .map(|(_, h)| i64::from(h.record_count))
            .sum()
    }
}

fn corrupt(e: RecordsError) -> AppendError {
    AppendError::Corrupt(e.to_string())
}

/// How a codec-level error of the records is answered.
fn records_error(e: RecordsError) -> AppendError {
    match e {
        RecordsError::ShortHeader { .. }
        | RecordsError::LengthTooSmall { .. }
        | RecordsError::Truncated { .. }
        | RecordsError::CrcMismatch { .. }
        | RecordsError::Decompress { .. } => corrupt(e),
        RecordsError::UnknownCompression { .. } => {
            AppendError::UnsupportedCompression(e.to_string())
        }
        RecordsError::DecompressedTooLarge { limit } => AppendError::DecompressedTooLarge { limit },
        _ => AppendError::Invalid(e.to_string()),
    }
}

/// Validates a producer's `batches` (one or more v2 batches) for a partition under `policy` at
/// `now`. See the module documentation for what is checked.
pub fn validate(
    batches: Bytes,
    policy: &ValidationPolicy,
    now: Timestamp,
) -> Result<ValidatedBatches, AppendError> {
    let mut valid = Vec::with_capacity(1);
    let mut rest: &[u8] = &batches;
    while !rest.is_empty() {
        let at = batches.len() - rest.len();
        let wire = WireHeader::parse(rest).map_err(|e| match e {
            RecordsError::UnsupportedMagic { .. } => AppendError::Invalid(e.to_string()),
            e => corrupt(e),
        })?;
        if wire.size() > policy.max_message_bytes as usize {
            return Err(AppendError::TooLarge {
                size: wire.size(),
                max: policy.max_message_bytes,
            });
        }
        let (batch, after) = Batch::parse(rest).map_err(corrupt)?;
        batch.check_crc().map_err(corrupt)?;
        let bytes = batches.slice(at..at + wire.size());
        valid.push(validate_batch(&batch, bytes, policy, now)?);
        rest = after;
    }
    if valid.is_empty() {
        return Err(AppendError::Invalid(
            "the request holds no record batch".into(),
        ));
    }
    Ok(ValidatedBatches {
        batches: valid,
        policy: *policy,
        received: batches,
    })
}

fn validate_batch(
    batch: &Batch<'_>,
    bytes: Bytes,
    policy: &ValidationPolicy,
    now: Timestamp,
) -> Result<(Bytes, BatchHeader), AppendError> {
    let h = batch.header();
    if h.is_control() {
        return Err(AppendError::Invalid(
            "control batches are written by the broker, not by producers".into(),
        ));
    }
    if h.record_count <= 0 {
        return Err(AppendError::Invalid(format!(
            "batch has record count {}",
            h.record_count
        )));
    }
    if i64::from(h.last_offset_delta) + 1 != i64::from(h.record_count) {
        return Err(AppendError::Invalid(format!(
            "batch holds {} records but its last offset delta is {}",
            h.record_count, h.last_offset_delta
        )));
    }
    let codec = h.compression().map_err(records_error)?;
    let mut checker = RecordChecker::new(policy, now, h);
    batch
        .for_each_record(DECOMPRESSED_LIMIT, |record| {
            checker.check(&record);
            Ok::<_, RecordsError>(())
        })
        .map_err(records_error)?;
    checker.finish()?;
    let stored = match target_codec(policy.compression) {
        Some(target) if target != codec => recompress(batch, target, policy)?,
        _ if policy.timestamp_type == TimestampType::CreateTime
            && checker.max_timestamp != h.max_timestamp =>
        {
            // Kafka sets the max timestamp from the records; a producer's header is not trusted
            // (retention and the time index rely on it).
            let mut fixed = bytes.to_vec();
            let at = crate::batch::OFF_MAX_TIMESTAMP;
            fixed[at..at + 8].copy_from_slice(&checker.max_timestamp.to_be_bytes());
            crate::batch::set_crc(&mut fixed);
            Bytes::from(fixed)
        }
        _ => bytes,
    };
    let header = BatchHeader::parse(&stored);
    Ok((stored, header))
}

/// The codec `compression.type` makes every stored batch use, if any.
fn target_codec(compression: CompressionType) -> Option<Compression> {
    match compression {
        CompressionType::Producer => None,
        CompressionType::Uncompressed => Some(Compression::None),
        CompressionType::Gzip => Some(Compression::Gzip),
        CompressionType::Snappy => Some(Compression::Snappy),
        CompressionType::Lz4 => Some(Compression::Lz4),
        CompressionType::Zstd => Some(Compression::Zstd),
    }
}

/// Re-encodes a validated batch's records with `target`: the record bytes are the same under
/// every codec, so this is a decompression and a compression, nothing per record.
fn recompress(
    batch: &Batch<'_>,
    target: Compression,
    policy: &ValidationPolicy,
) -> Result<Bytes, AppendError> {
    let mut plain = Vec::new();
    let plain_records: &[u8] = match batch.header().compression().map_err(records_error)? {
        Compression::None => batch.records_bytes(),
        _ => {
            batch
                .decompress_into(DECOMPRESSED_LIMIT, &mut plain)
                .map_err(records_error)?;
            &plain
        }
    };
    let payload = records::compress(target, plain_records)
        .map_err(|e| AppendError::Invalid(e.to_string()))?;
    let mut header = *batch.header();
    header.attributes = WireHeader::attributes_with(header.attributes, target);
    let size = records::BATCH_HEADER_LEN + payload.len();
    if size > policy.max_message_bytes as usize {
        return Err(AppendError::TooLarge {
            size,
            max: policy.max_message_bytes,
        });
    }
    header.batch_length = (size - records::LOG_OVERHEAD) as i32;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(&payload);
    crate::batch::set_crc(&mut out);
    Ok(Bytes::from(out))
}

/// Kafka's per-record checks, collected over a batch.
struct RecordChecker<'p> {
    policy: &'p ValidationPolicy,
    now: i64,
    /// The producer set LogAppendTime on the batch (which only the broker may).
    batch_log_append_time: bool,
    index: u32,
    max_timestamp: i64,
    errors: Vec<RecordError>,
    /// Some error was about a timestamp (the batch is then answered INVALID_TIMESTAMP).
    timestamp_error: bool,
}

impl<'p> RecordChecker<'p> {
    fn new(policy: &'p ValidationPolicy, now: Timestamp, header: &WireHeader) -> Self {
        RecordChecker {
            policy,
            now: now.0,
            batch_log_append_time: header.timestamp_type() == records::TimestampType::LogAppendTime,
            index: 0,
            max_timestamp: -1,
            errors: Vec::new(),
            timestamp_error: false,
        }
    }

    fn check(&mut self, record: &Record<'_>) {
        let index = self.index;
        self.index += 1;
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        if self.policy.compact && record.key.is_none() {
            self.errors.push(RecordError {
                batch_index: index,
                message: "a compacted topic cannot accept a record without a key".into(),
            });
            return;
        }
        let policy = self.policy;
        if policy.timestamp_type == TimestampType::CreateTime && record.timestamp != -1 {
            let behind = self.now.saturating_sub(record.timestamp);
            if behind > policy.timestamp_before_max_ms
                || behind.saturating_neg() > policy.timestamp_after_max_ms
            {
                self.timestamp_error = true;
                self.errors.push(RecordError {
                    batch_index: index,
                    message: format!(
                        "timestamp {} is out of range: it must be within [{}, {}] \
                         (message.timestamp.before.max.ms / message.timestamp.after.max.ms)",
                        record.timestamp,
                        self.now.saturating_sub(policy.timestamp_before_max_ms),
                        self.now.saturating_add(policy.timestamp_after_max_ms)
                    ),
                });
            }
        } else if self.batch_log_append_time {
            self.timestamp_error = true;
            self.errors.push(RecordError {
                batch_index: index,
                message: "producers may not set the LogAppendTime timestamp type".into(),
            });
        }
    }

    fn finish(&mut self) -> Result<(), AppendError> {
        if self.errors.is_empty() {
            return Ok(());
        }
        Err(AppendError::RecordErrors {
            errors: std::mem::take(&mut self.errors),
            timestamps: self.timestamp_error,
        })
    }
}
