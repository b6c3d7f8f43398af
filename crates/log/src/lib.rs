//! Sluice's storage engine: one segmented, append-only log per partition, in Kafka's on-disk format.
//!
//! The crate knows nothing about networking or wire messages. Its inputs are record batches as raw
//! bytes (Kafka's batch format v2, exactly as a producer sends them) and domain types; its outputs are
//! the same bytes, ready to be served to a consumer.
//!
//! Entry points: [`LogDir`] owns a data directory (lock file, clean-shutdown marker, checkpoints) and
//! opens every [`PartitionLog`] in it.
//!
//! Damaged files: opening a log truncates only a *torn tail* — bytes after the recovery point at
//! the end of the newest segment that an unclean stop left, with nothing valid after them.
//! Anything else that is not a valid batch is damage to data that was fsynced: the open fails
//! with [`OpenError::Damaged`] (a [`Damage`]: file, byte position, offsets, [`DamageKind`]) and
//! leaves every segment, index and checkpoint as it is, and the caller takes the partition offline or
//! [`PartitionLog::quarantine`]s the damaged range to fetch it again. Damaged checkpoints are
//! rebuilt from the segments, never trusted. [`verify`] checks a partition's files without
//! opening them and [`repair`] cuts a log knowingly (`sluice log verify`, `sluice log repair`).
//!
//! The on-disk format is described in `docs/on-disk-format.md`.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

mod batch;
mod checkpoint;
mod cleaner;
mod damage;
mod dir;
mod index;
mod leader_epoch;
mod partition_log;
mod producer;
pub mod repair;
mod segment;
pub mod testing;
mod txn_index;
mod validate;
pub mod verify;

pub use batch::MarkerKind;
pub use cleaner::{CleanOutput, CleanPlan, CleanStats};
pub use damage::{Damage, DamageKind};
pub use dir::{DirLock, LogDir};
pub use leader_epoch::{EpochEntry, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};
pub use partition_log::{FileRange, PartitionLog, ReadPlan};
pub use producer::ProducerInfo;
pub use txn_index::AbortedTxn;
pub use validate::{validate, ValidatedBatches, ValidationPolicy, DECOMPRESSED_LIMIT};

/// An offset in a partition's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub i64);

/// A partition leader epoch, stamped into every batch appended while that leader serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeaderEpoch(pub i32);

/// An idempotent or transactional producer's id (-1 means none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProducerId(pub i64);

/// A producer's epoch (-1 means none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProducerEpoch(pub i16);

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// Which timestamp a topic keeps for its records (`message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// `compression.type`: keep the producer's codec, or store every batch with this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionType {
    Producer,
    Uncompressed,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// Per-partition settings, named after Kafka's topic configs.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment once it would grow past this (default 1 GiB).
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment once its first batch is this old (default 7 days).
    pub segment_ms: i64,
    /// `segment.index.bytes`: maximum size of an offset or time index file (default 10 MiB).
    pub segment_index_bytes: u64,
    /// `index.interval.bytes`: bytes of log between two sparse index entries (default 4096).
    pub index_interval_bytes: u64,
    /// `retention.ms`: delete closed segments whose newest record is older (-1 = forever; default 7 days).
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest closed segments while the log is larger (-1 = no limit).
    pub retention_bytes: i64,
    /// `max.message.bytes`: the largest record batch accepted (default 1048588).
    pub max_message_bytes: u32,
    /// `message.timestamp.type`.
    pub message_timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`: how far in the past a CreateTime record's timestamp
    /// may be (default: no limit).
    pub message_timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far in the future a CreateTime record's timestamp
    /// may be (Kafka 4's default: one hour).
    pub message_timestamp_after_max_ms: i64,
    /// `cleanup.policy` contains `delete`: retention removes old segments (default true).
    pub delete: bool,
    /// `cleanup.policy` contains `compact`: the cleaner keeps the latest record per key.
    pub compact: bool,
    /// `delete.retention.ms`: how long tombstones survive compaction (default 1 day).
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: clean once this share of the closed log is uncleaned (0.5).
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this are not compacted yet (0).
    pub min_compaction_lag_ms: i64,
    /// `compression.type` (default `producer`).
    pub compression: CompressionType,
    /// `max.compaction.lag.ms`: a dirty segment older than this is compacted whatever the
    /// dirty ratio (default never).
    pub max_compaction_lag_ms: i64,
    /// `flush.messages`: fsync after this many appended records (default never by count).
    pub flush_messages: i64,
    /// `flush.ms`: fsync on append once this long passed since the last sync (default never).
    pub flush_ms: i64,
    /// `min.insync.replicas`: kept with the log's settings for the broker, which refuses acks=all
    /// produces when fewer replicas are in sync (default 1).
    pub min_insync_replicas: i32,
}

impl Default for LogConfig {
    /// Kafka's defaults.
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            message_timestamp_type: TimestampType::CreateTime,
            message_timestamp_before_max_ms: i64::MAX,
            message_timestamp_after_max_ms: 60 * 60 * 1000,
            delete: true,
            compact: false,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            compression: CompressionType::Producer,
            max_compaction_lag_ms: i64::MAX,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            min_insync_replicas: 1,
        }
    }
}

/// What happened to an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset given to the first record of the appended batches.
    pub first_offset: Offset,
    /// Offset of the last record.
    pub last_offset: Offset,
    /// The append time stamped into the batches when the topic uses LogAppendTime.
    pub log_append_time: Option<Timestamp>,
    /// The log start offset after the append.
    pub log_start_offset: Offset,
    /// True when the batch was a retry of one already in the log (idempotent producer): nothing was
    /// written, and the offsets are those of the original append.
    pub duplicate: bool,
    /// Records written by this append: 0 for a duplicate, and for a follower append that held no
    /// whole batch (then `last_offset` is `first_offset - 1`, both at the log end).
    pub record_count: i64,
}

/// Why an append was refused. Nothing reaches disk when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// CRC mismatch, truncated batch, or a length field that disagrees with the bytes (CORRUPT_MESSAGE).
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    /// Structurally wrong: magic other than 2, empty batch, bad offset delta (INVALID_RECORD).
    #[error("invalid record batch: {0}")]
    Invalid(String),
    /// A batch larger than max.message.bytes (MESSAGE_TOO_LARGE).
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge { size: usize, max: u32 },
    /// Records that decompress to more than the broker allows (MESSAGE_TOO_LARGE; a Java
    /// producer splits the batch and retries).
    #[error("the batch's records decompress to more than {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    /// A compression codec id Kafka does not define (UNSUPPORTED_COMPRESSION_TYPE).
    #[error("{0}")]
    UnsupportedCompression(String),
    /// Records refused one by one, as Kafka's log validator does (INVALID_RECORD, or
    /// INVALID_TIMESTAMP when a timestamp is among the reasons); Produce v8+ lists them
    /// (KIP-467). Nothing of the batch is written.
    #[error("{} record(s) refused{}: {}", errors.len(), if *timestamps { " (timestamps out of range)" } else { "" }, RecordError::summary(errors))]
    RecordErrors {
        errors: Vec<RecordError>,
        /// A timestamp is among the reasons.
        timestamps: bool,
    },
    /// Sequence gap for an idempotent producer (OUT_OF_ORDER_SEQUENCE_NUMBER).
    #[error("out of order sequence for producer {producer_id:?}: expected {expected}, got {got}")]
    OutOfOrderSequence {
        producer_id: ProducerId,
        expected: i32,
        got: i32,
    },
    /// Producer epoch older than the one the log knows (INVALID_PRODUCER_EPOCH).
    #[error("producer {producer_id:?} epoch {got:?} is older than {current:?}")]
    InvalidProducerEpoch {
        producer_id: ProducerId,
        current: ProducerEpoch,
        got: ProducerEpoch,
    },
    /// A transactional batch for a partition that is not part of the producer's ongoing
    /// transaction (INVALID_TXN_STATE): a late write of a finished transaction, or one that never
    /// called AddPartitionsToTxn.
    #[error("transactional write refused: {0}")]
    TxnNotVerified(String),
    /// A replicated append that does not start at this log's end (the follower must truncate or
    /// fetch from its log end).
    #[error("replicated batches start at offset {got:?} but the log ends at {expected:?}")]
    OffsetMismatch { expected: Offset, got: Offset },
    /// A replicated batch whose leader epoch is older than the latest epoch already in the log
    /// (FENCED_LEADER_EPOCH): epochs never go back within a follower's log.
    #[error("leader epoch {got:?} is older than the log's latest epoch {latest:?}")]
    StaleLeaderEpoch {
        latest: LeaderEpoch,
        got: LeaderEpoch,
    },
    /// Disk error; the log is poisoned afterwards (KAFKA_STORAGE_ERROR).
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
    /// An earlier I/O failure (for example a failed fsync) made the log refuse further writes.
    #[error("log is poisoned by an earlier storage error and refuses writes")]
    Poisoned,
}

/// One record a produce refused: its index in its batch and why (a Produce response's
/// `record_errors` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub batch_index: u32,
    pub message: String,
}

impl RecordError {
    /// The first three, as Kafka's message shows them.
    fn summary(errors: &[RecordError]) -> String {
        let shown: Vec<String> = errors
            .iter()
            .take(3)
            .map(|e| format!("record {}: {}", e.batch_index, e.message))
            .collect();
        let more = if errors.len() > 3 { "; …" } else { "" };
        format!("{}{more}", shown.join("; "))
    }
}

/// Why a read was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset {requested:?} is outside the log [{log_start_offset:?}, {log_end_offset:?}]")]
    OffsetOutOfRange {
        requested: Offset,
        log_start_offset: Offset,
        log_end_offset: Offset,
    },
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
}

/// Errors opening a log or a data directory.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data directory {path} is in use by another process (lock file {path}/.lock is held); stop the other `sluice serve` or choose another --data-dir")]
    Locked { path: PathBuf },
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Data that was fsynced is damaged (see [`Damage`]); no segment, index or checkpoint was
    /// changed.
    #[error("the log in {path} is damaged: {damage}")]
    Damaged { path: PathBuf, damage: Box<Damage> },
}

/// The answer to a timestamp lookup ([`PartitionLog::offset_for_timestamp`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampMatch {
    /// The first record at or after the timestamp (the batch's base offset when compressed).
    pub offset: Offset,
    /// That record's timestamp (the batch's max timestamp when compressed).
    pub timestamp: Timestamp,
    /// The whole stored batch when it is compressed with CreateTime timestamps: the log does not
    /// decompress, so the caller finds the exact record in it.
    pub compressed_batch: Option<Bytes>,
}

/// Bytes read from a log: whole batches, in offset order, as they are stored.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub records: Bytes,
}

/// A handle for syncing a log's written bytes to disk outside the log's lock (group commit).
#[derive(Debug, Clone)]
pub struct SyncHandle {
    /// The active segment file (and any rolled segment files not yet synced).
    pub files: Vec<Arc<std::fs::File>>,
    /// Everything below this offset is covered once `files` are synced.
    pub up_to: Offset,
    /// The log's truncation count when the handle was taken.
    truncations: u64,
}
