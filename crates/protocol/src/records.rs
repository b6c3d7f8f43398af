//! Kafka record batches, magic v2 (Kafka 0.11+): the one format Sluice stores and serves.
//!
//! A batch is a 61-byte header followed by its records, which may be compressed as a whole:
//!
//! ```text
//! baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 (2) | crc u32 |
//! attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//! producerId i64 | producerEpoch i16 | baseSequence i32 | recordCount i32 | records
//! ```
//!
//! and each record is `length varint | attributes i8 | timestampDelta varlong | offsetDelta
//! varint | key (varint length, -1 = null) | value (same) | header count varint | headers (key:
//! varint length and bytes; value: varint length, -1 = null, and bytes)`.
//!
//! Reading is bounded by construction. [`Batch::parse`] checks the length and magic against the
//! bytes present; [`Records`] walks an uncompressed records section without allocating, each
//! record's lengths checked against the bytes left before anything is sliced, the claimed count
//! held against what the bytes can hold, offset deltas required to rise, and trailing bytes
//! refused. [`Batch::for_each_record`] does the same for every codec, streaming compressed
//! records through a fixed buffer (growing only to the largest record) and stopping as soon as
//! the decompressed bytes pass the caller's limit, so a decompression bomb costs at most that
//! limit in CPU and never in memory. [`BatchBuilder`] writes batches with any codec.
//!
//! Module map: `batch` (header view, [`Batch`], [`Batches`]), `record` ([`Record`],
//! [`Records`], [`Headers`]), `compression` ([`Compression`], bounded decompression),
//! `stream` (records of compressed batches), `builder` ([`BatchBuilder`]), `error`, and
//! [`testing`] (hostile batches with valid CRCs, for tests and fuzz targets).

mod batch;
mod builder;
mod compression;
mod error;
mod record;
mod stream;
pub mod testing;

pub use batch::{
    Batch, BatchHeader, Batches, TimestampType, BATCH_HEADER_LEN, LOG_OVERHEAD, MIN_BATCH_LENGTH,
};
pub use builder::{BatchBuilder, NewRecord};
pub use compression::{compress, decompress, Compression};
pub use error::RecordsError;
pub use record::{Header, Headers, Record, Records, MIN_RECORD_LEN};

/// The decompressed size Sluice allows one batch's records by default: far above what a real
/// producer sends (a 1 MiB batch of typical data decompresses to a few MiB) and low enough that
/// materializing one is harmless. Streaming readers ([`Batch::for_each_record`]) never hold this
/// much; it bounds their work.
pub const DEFAULT_DECOMPRESSED_LIMIT: usize = 64 * 1024 * 1024;

#[cfg(test)]
mod tests;
