//! The batch header view ([`BatchHeader`]), one whole batch ([`Batch`]) and the batches of a
//! buffer ([`Batches`]).

use super::record::{Base, Records, MIN_RECORD_LEN};
use super::{Compression, Record, RecordsError};

/// Bytes of the fixed batch header.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before what `batchLength` counts: the base offset and the length itself.
pub const LOG_OVERHEAD: usize = 12;
/// The smallest valid `batchLength`: the header after the length field.
pub const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32;

const OFF_BASE_OFFSET: usize = 0;
const OFF_LENGTH: usize = 8;
const OFF_LEADER_EPOCH: usize = 12;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
/// The CRC covers everything from the attributes on.
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_OFFSET_DELTA: usize = 23;
const OFF_BASE_TIMESTAMP: usize = 27;
const OFF_MAX_TIMESTAMP: usize = 35;
const OFF_PRODUCER_ID: usize = 43;
const OFF_PRODUCER_EPOCH: usize = 51;
const OFF_BASE_SEQUENCE: usize = 53;
const OFF_RECORD_COUNT: usize = 57;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Which timestamp a batch's records carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's: base timestamp plus each record's delta.
    CreateTime,
    /// The broker's append time, the batch's max timestamp, for every record.
    LogAppendTime,
}

/// The fixed header of a v2 batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// What follows the length field: the batch is `LOG_OVERHEAD + batch_length` bytes. At
    /// least [`MIN_BATCH_LENGTH`] in a parsed header.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// As claimed: nothing is trusted about it until the records are walked.
    pub record_count: i32,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

impl BatchHeader {
    /// Decodes the header at the front of `bytes`, which need not hold the whole batch. Checks
    /// only what the header alone can show: enough bytes, a length that covers the header, and
    /// magic 2.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, RecordsError> {
        if bytes.len() < BATCH_HEADER_LEN {
            return Err(RecordsError::ShortHeader {
                available: bytes.len(),
            });
        }
        let batch_length = be_i32(bytes, OFF_LENGTH);
        if batch_length < MIN_BATCH_LENGTH {
            return Err(RecordsError::LengthTooSmall {
                length: batch_length,
            });
        }
        let magic = bytes[OFF_MAGIC] as i8;
        if magic != 2 {
            return Err(RecordsError::UnsupportedMagic { magic });
        }
        Ok(BatchHeader {
            base_offset: be_i64(bytes, OFF_BASE_OFFSET),
            batch_length,
            partition_leader_epoch: be_i32(bytes, OFF_LEADER_EPOCH),
            magic,
            crc: u32::from_be_bytes([
                bytes[OFF_CRC],
                bytes[OFF_CRC + 1],
                bytes[OFF_CRC + 2],
                bytes[OFF_CRC + 3],
            ]),
            attributes: be_i16(bytes, OFF_ATTRIBUTES),
            last_offset_delta: be_i32(bytes, OFF_LAST_OFFSET_DELTA),
            base_timestamp: be_i64(bytes, OFF_BASE_TIMESTAMP),
            max_timestamp: be_i64(bytes, OFF_MAX_TIMESTAMP),
            producer_id: be_i64(bytes, OFF_PRODUCER_ID),
            producer_epoch: be_i16(bytes, OFF_PRODUCER_EPOCH),
            base_sequence: be_i32(bytes, OFF_BASE_SEQUENCE),
            record_count: be_i32(bytes, OFF_RECORD_COUNT),
        })
    }

    /// The header's 61 bytes, CRC as stored in `self.crc`.
    pub fn to_bytes(&self) -> [u8; BATCH_HEADER_LEN] {
        let mut b = [0u8; BATCH_HEADER_LEN];
        b[OFF_BASE_OFFSET..OFF_LENGTH].copy_from_slice(&self.base_offset.to_be_bytes());
        b[OFF_LENGTH..OFF_LEADER_EPOCH].copy_from_slice(&self.batch_length.to_be_bytes());
        b[OFF_LEADER_EPOCH..OFF_MAGIC].copy_from_slice(&self.partition_leader_epoch.to_be_bytes());
        b[OFF_MAGIC] = self.magic as u8;
        b[OFF_CRC..OFF_ATTRIBUTES].copy_from_slice(&self.crc.to_be_bytes());
        b[OFF_ATTRIBUTES..OFF_LAST_OFFSET_DELTA].copy_from_slice(&self.attributes.to_be_bytes());
        b[OFF_LAST_OFFSET_DELTA..OFF_BASE_TIMESTAMP]
            .copy_from_slice(&self.last_offset_delta.to_be_bytes());
        b[OFF_BASE_TIMESTAMP..OFF_MAX_TIMESTAMP]
            .copy_from_slice(&self.base_timestamp.to_be_bytes());
        b[OFF_MAX_TIMESTAMP..OFF_PRODUCER_ID].copy_from_slice(&self.max_timestamp.to_be_bytes());
        b[OFF_PRODUCER_ID..OFF_PRODUCER_EPOCH].copy_from_slice(&self.producer_id.to_be_bytes());
        b[OFF_PRODUCER_EPOCH..OFF_BASE_SEQUENCE]
            .copy_from_slice(&self.producer_epoch.to_be_bytes());
        b[OFF_BASE_SEQUENCE..OFF_RECORD_COUNT].copy_from_slice(&self.base_sequence.to_be_bytes());
        b[OFF_RECORD_COUNT..].copy_from_slice(&self.record_count.to_be_bytes());
        b
    }

    /// Total bytes of the batch, header included.
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Offset of the batch's last record (saturating: a hostile base offset cannot overflow).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// The codec named by the attributes; ids 5 to 7 are an error.
    pub fn compression(&self) -> Result<Compression, RecordsError> {
        Compression::from_id((self.attributes & ATTR_COMPRESSION_MASK) as u8)
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & ATTR_LOG_APPEND_TIME != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Data of a transactional producer, or a commit/abort marker.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// A control batch (a transaction marker), written by the broker only.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// From an idempotent or transactional producer.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// The attribute bits for a codec, with the other bits of `attributes` kept.
    pub fn attributes_with(attributes: i16, compression: Compression) -> i16 {
        (attributes & !ATTR_COMPRESSION_MASK) | i16::from(compression.id())
    }

    /// What records need to turn deltas into offsets and timestamps.
    pub(crate) fn base(&self) -> Base {
        Base {
            offset: self.base_offset,
            timestamp: self.base_timestamp,
            log_append_time: (self.timestamp_type() == TimestampType::LogAppendTime)
                .then_some(self.max_timestamp),
        }
    }

    /// The claimed count if it is possible for `record_bytes` bytes of (uncompressed) records:
    /// not negative and at most one record per [`MIN_RECORD_LEN`] bytes.
    pub(crate) fn count_within(&self, record_bytes: usize) -> Result<u32, RecordsError> {
        let impossible = RecordsError::ImpossibleCount {
            claimed: self.record_count,
            bytes: record_bytes,
        };
        let count = u32::try_from(self.record_count).map_err(|_| impossible.clone())?;
        if count as usize > record_bytes / MIN_RECORD_LEN {
            return Err(impossible);
        }
        Ok(count)
    }
}

/// CRC-32C of a whole batch's bytes from the attributes on (what the CRC field must hold).
pub(crate) fn crc_of(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[OFF_ATTRIBUTES..])
}

/// Sets the CRC field of a whole batch to what its bytes give.
pub(crate) fn write_crc(batch: &mut [u8]) {
    let crc = crc_of(batch);
    batch[OFF_CRC..OFF_ATTRIBUTES].copy_from_slice(&crc.to_be_bytes());
}

/// One whole batch: its parsed header and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    header: BatchHeader,
    bytes: &'a [u8],
}

impl<'a> Batch<'a> {
    /// Splits the batch at the front of `input` from what follows. The whole batch must be
    /// present ([`RecordsError::Truncated`] otherwise). The CRC is not checked here
    /// ([`Self::check_crc`]), nor the records.
    pub fn parse(input: &'a [u8]) -> Result<(Batch<'a>, &'a [u8]), RecordsError> {
        let header = BatchHeader::parse(input)?;
        let size = header.size();
        if input.len() < size {
            return Err(RecordsError::Truncated {
                claimed: size,
                available: input.len(),
            });
        }
        let (bytes, rest) = input.split_at(size);
        Ok((Batch { header, bytes }, rest))
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch, header included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The (possibly compressed) records after the header.
    pub fn records_bytes(&self) -> &'a [u8] {
        &self.bytes[BATCH_HEADER_LEN..]
    }

    /// The checksum the bytes give.
    pub fn computed_crc(&self) -> u32 {
        crc_of(self.bytes)
    }

    /// Compares the stored CRC with the bytes.
    pub fn check_crc(&self) -> Result<(), RecordsError> {
        let computed = self.computed_crc();
        if computed != self.header.crc {
            return Err(RecordsError::CrcMismatch {
                stored: self.header.crc,
                computed,
            });
        }
        Ok(())
    }

    /// The records of an uncompressed batch, borrowed from its bytes. A claimed count the bytes
    /// cannot hold is refused here, before any record is read.
    pub fn records(&self) -> Result<Records<'a>, RecordsError> {
        match self.header.compression()? {
            Compression::None => Records::new(self.records_bytes(), &self.header),
            codec => Err(RecordsError::Compressed { codec }),
        }
    }

    /// Calls `f` with every record in order, whatever the codec: borrowed from the batch when
    /// it is uncompressed, otherwise streamed through a buffer that lives only during the call
    /// (so a record borrowed by `f` cannot outlive it). Decompression stops with
    /// [`RecordsError::DecompressedTooLarge`] once more than `limit` bytes come out. Every
    /// check of [`Records`] applies; an error from `f` stops the walk and is returned.
    pub fn for_each_record<E: From<RecordsError>>(
        &self,
        limit: usize,
        mut f: impl FnMut(Record<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        match self.header.compression()? {
            Compression::None => self.records()?.for_each(&mut f),
            codec => super::stream::walk(codec, self.records_bytes(), &self.header, limit, &mut f),
        }
    }

    /// The records section, decompressed into `out` (cleared first), to read with
    /// [`Records::new`]. At most `limit` bytes are produced.
    pub fn decompress_into(&self, limit: usize, out: &mut Vec<u8>) -> Result<(), RecordsError> {
        out.clear();
        super::decompress(self.header.compression()?, self.records_bytes(), limit, out)
    }
}

/// The whole batches at the front of a buffer (a log read or a fetch response), in order.
/// Iteration ends at the end of the buffer or at a cut-off last batch (a fetch response may end
/// inside one; see [`Self::remainder`]); a header that cannot be a batch is an error, after
/// which the iterator is done.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Batches<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Batches {
            rest: bytes,
            failed: false,
        }
    }

    /// What was not returned as a batch: empty after a buffer of whole batches, otherwise the
    /// cut-off or unreadable tail.
    pub fn remainder(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<Batch<'a>, RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match Batch::parse(self.rest) {
            Ok((batch, rest)) => {
                self.rest = rest;
                Some(Ok(batch))
            }
            Err(RecordsError::ShortHeader { .. } | RecordsError::Truncated { .. }) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
