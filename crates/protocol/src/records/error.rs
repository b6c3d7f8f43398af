//! [`RecordsError`]: what is wrong with bytes that should be a record batch or its records.

use super::Compression;

/// Why bytes are not a valid batch, or a batch's records are not what its header says. Every
/// variant names what is wrong; none is ever a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    /// Fewer bytes than a batch header.
    #[error("{available} bytes left, a record batch header needs 61")]
    ShortHeader { available: usize },
    /// The length field cannot even cover the header.
    #[error("batch length {length} is smaller than the 49 header bytes it must count")]
    LengthTooSmall { length: i32 },
    /// The length field claims more bytes than are present.
    #[error("batch claims {claimed} bytes but only {available} are present")]
    Truncated { claimed: usize, available: usize },
    /// A batch format other than magic 2.
    #[error("record batch magic {magic} is not supported (only magic 2, Kafka 0.11+ clients)")]
    UnsupportedMagic { magic: i8 },
    /// The bytes do not match the batch's checksum.
    #[error("CRC mismatch: batch says {stored:#010x}, bytes give {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    /// Compression bits that name no codec (5, 6 or 7).
    #[error(
        "unknown compression codec id {id} (Kafka knows 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)"
    )]
    UnknownCompression { id: u8 },
    /// A negative record count, or more records than the bytes could hold.
    #[error("batch claims {claimed} records, which its {bytes} bytes of records cannot hold")]
    ImpossibleCount { claimed: i32, bytes: usize },
    /// The records end before the claimed count.
    #[error("batch claims {claimed} records but holds {found}")]
    CountMismatch { claimed: u32, found: u32 },
    /// Bytes left after the claimed count of records.
    #[error("{bytes} bytes follow the batch's {count} records")]
    TrailingBytes { bytes: usize, count: u32 },
    /// A record whose fields do not parse or disagree with its length.
    #[error("record {index} is malformed: {what}")]
    MalformedRecord { index: u32, what: &'static str },
    /// Offset deltas must rise from record to record.
    #[error("record {index} has offset delta {delta}, not above the previous record's {previous}")]
    OffsetDeltaOrder {
        index: u32,
        delta: i32,
        previous: i32,
    },
    /// An offset delta past the header's last offset delta.
    #[error("record {index} has offset delta {delta}, past the batch's last offset delta {last}")]
    OffsetDeltaPastLast { index: u32, delta: i32, last: i32 },
    /// Records of a compressed batch asked for without decompressing.
    #[error("the records are {codec}-compressed: decompress them first")]
    Compressed { codec: Compression },
    /// The codec refused the compressed bytes.
    #[error("cannot decompress the {codec} records: {reason}")]
    Decompress { codec: Compression, reason: String },
    /// The records decompress to more than the reader allows (a decompression bomb, or a batch
    /// far larger than any producer sends).
    #[error("the records decompress to more than {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    /// A batch builder with nothing in it, or a record too large for the format.
    #[error("cannot build the batch: {0}")]
    Build(&'static str),
    /// The codec failed while compressing.
    #[error("cannot compress the records with {codec}: {reason}")]
    Compress { codec: Compression, reason: String },
}
