//! [`BatchBuilder`]: writes one v2 batch with any codec, from new records or from records of
//! another batch copied as they are (the cleaner's filtering).

use super::batch::write_crc;
use super::{
    compress, BatchHeader, Compression, Header, Record, RecordsError, TimestampType,
    BATCH_HEADER_LEN, MIN_BATCH_LENGTH,
};
use crate::varint::{varint_len, varlong_len, write_varint, write_varlong};

/// A record to write: its payloads borrowed from the caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewRecord<'a> {
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [Header<'a>],
}

/// Builds one batch. Records get offset deltas 0, 1, 2, … (or the deltas of records copied with
/// [`Self::append_raw`]); the base timestamp is the first record's unless set; the max timestamp
/// is the largest record timestamp. [`Self::build`] compresses and computes the CRC.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    compression: Compression,
    header: BatchHeader,
    /// True once the base timestamp is fixed (first record, or set).
    base_timestamp_set: bool,
    log_append_time: Option<i64>,
    last_offset_delta_override: Option<i32>,
    records: Vec<u8>,
    count: i32,
    next_offset_delta: i32,
    max_timestamp: i64,
    /// A record too large for the format was appended.
    oversized: bool,
}

impl BatchBuilder {
    /// A batch at base offset 0 with no producer id, as a plain producer sends it.
    pub fn new(compression: Compression) -> Self {
        BatchBuilder {
            compression,
            header: BatchHeader {
                base_offset: 0,
                batch_length: MIN_BATCH_LENGTH,
                partition_leader_epoch: -1,
                magic: 2,
                crc: 0,
                attributes: BatchHeader::attributes_with(0, compression),
                last_offset_delta: -1,
                base_timestamp: -1,
                max_timestamp: -1,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
                record_count: 0,
            },
            base_timestamp_set: false,
            log_append_time: None,
            last_offset_delta_override: None,
            records: Vec::new(),
            count: 0,
            next_offset_delta: 0,
            max_timestamp: -1,
            oversized: false,
        }
    }

    /// A builder that keeps `original`'s base offset, base timestamp, producer fields, leader
    /// epoch, attributes (but `compression`) and last offset delta, for records of `original`
    /// copied with [`Self::append_raw`]: their deltas stay valid. Kafka's cleaner keeps the last
    /// offset this way so a producer's last sequence survives compaction.
    pub fn retaining(original: &BatchHeader, compression: Compression) -> Self {
        let mut builder = BatchBuilder::new(compression);
        builder.header = BatchHeader {
            attributes: BatchHeader::attributes_with(original.attributes, compression),
            ..*original
        };
        builder.base_timestamp_set = true;
        builder.last_offset_delta_override = Some(original.last_offset_delta);
        if original.timestamp_type() == TimestampType::LogAppendTime {
            builder.log_append_time = Some(original.max_timestamp);
        }
        builder
    }

    pub fn base_offset(mut self, offset: i64) -> Self {
        self.header.base_offset = offset;
        self
    }

    pub fn partition_leader_epoch(mut self, epoch: i32) -> Self {
        self.header.partition_leader_epoch = epoch;
        self
    }

    /// An idempotent producer's id, epoch and first sequence.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.header.producer_id = producer_id;
        self.header.producer_epoch = producer_epoch;
        self.header.base_sequence = base_sequence;
        self
    }

    pub fn transactional(mut self, transactional: bool) -> Self {
        self.set_attribute(0x10, transactional);
        self
    }

    pub fn control(mut self, control: bool) -> Self {
        self.set_attribute(0x20, control);
        self
    }

    /// Marks the batch LogAppendTime with this append time (its max timestamp, which is every
    /// record's timestamp).
    pub fn log_append_time(mut self, time: i64) -> Self {
        self.set_attribute(0x08, true);
        self.log_append_time = Some(time);
        self
    }

    /// Fixes the base timestamp instead of taking the first record's.
    pub fn base_timestamp(mut self, timestamp: i64) -> Self {
        self.header.base_timestamp = timestamp;
        self.base_timestamp_set = true;
        self
    }

    fn set_attribute(&mut self, bit: i16, on: bool) {
        if on {
            self.header.attributes |= bit;
        } else {
            self.header.attributes &= !bit;
        }
    }

    /// Records appended so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the uncompressed records so far.
    pub fn records_len(&self) -> usize {
        self.records.len()
    }

    fn note_timestamp(&mut self, timestamp: i64) {
        if !self.base_timestamp_set {
            self.header.base_timestamp = timestamp;
            self.base_timestamp_set = true;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }

    /// Appends a record at the next offset delta.
    pub fn append(&mut self, record: NewRecord<'_>) {
        self.note_timestamp(record.timestamp);
        let delta = self.next_offset_delta;
        let timestamp_delta = record.timestamp.wrapping_sub(self.header.base_timestamp);
        let body = body_len(delta, timestamp_delta, &record);
        let Some(body) = body.filter(|&b| b <= i32::MAX as usize) else {
            self.oversized = true;
            return;
        };
        self.records.reserve(body + 5);
        write_varint(&mut self.records, body as i32);
        self.records.push(0);
        write_varlong(&mut self.records, timestamp_delta);
        write_varint(&mut self.records, delta);
        write_nullable(&mut self.records, record.key);
        write_nullable(&mut self.records, record.value);
        write_varint(&mut self.records, record.headers.len() as i32);
        for header in record.headers {
            write_varint(&mut self.records, header.key.len() as i32);
            self.records.extend_from_slice(header.key);
            write_nullable(&mut self.records, header.value);
        }
        self.count += 1;
        self.next_offset_delta = delta.saturating_add(1);
    }

    /// Appends a record read from a batch whose header this builder was made from
    /// ([`Self::retaining`]), copying its bytes: offset and timestamp deltas stay as they were.
    /// Records must come in their original order.
    pub fn append_raw(&mut self, record: &Record<'_>) {
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        self.records.extend_from_slice(record.raw());
        self.count += 1;
        self.next_offset_delta = record.offset_delta.saturating_add(1);
    }

    /// Compresses the records and writes header and CRC. An empty builder is an error.
    pub fn build(self) -> Result<Vec<u8>, RecordsError> {
        if self.count == 0 {
            return Err(RecordsError::Build("a batch needs at least one record"));
        }
        if self.oversized {
            return Err(RecordsError::Build("a record is larger than 2 GiB"));
        }
        let payload = compress(self.compression, &self.records)?;
        let batch_length = i32::try_from(BATCH_HEADER_LEN - super::LOG_OVERHEAD + payload.len())
            .map_err(|_| RecordsError::Build("the batch is larger than 2 GiB"))?;
        let header = BatchHeader {
            batch_length,
            last_offset_delta: self
                .last_offset_delta_override
                .unwrap_or(self.next_offset_delta - 1),
            max_timestamp: self.log_append_time.unwrap_or(self.max_timestamp),
            record_count: self.count,
            ..self.header
        };
        let mut out = Vec::with_capacity(BATCH_HEADER_LEN + payload.len());
        out.extend_from_slice(&header.to_bytes());
        out.extend_from_slice(&payload);
        write_crc(&mut out);
        Ok(out)
    }
}

fn nullable_len(bytes: Option<&[u8]>) -> Option<usize> {
    match bytes {
        None => Some(1),
        Some(b) => {
            let len = i32::try_from(b.len()).ok()?;
            Some(varint_len(len) + b.len())
        }
    }
}

/// The record body's length (everything after the length prefix), None past i32 lengths.
fn body_len(offset_delta: i32, timestamp_delta: i64, record: &NewRecord<'_>) -> Option<usize> {
    let mut len = 1 + varlong_len(timestamp_delta) + varint_len(offset_delta);
    len += nullable_len(record.key)? + nullable_len(record.value)?;
    len += varint_len(i32::try_from(record.headers.len()).ok()?);
    for header in record.headers {
        len += nullable_len(Some(header.key))? + nullable_len(header.value)?;
    }
    Some(len)
}

fn write_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => write_varint(out, -1),
        Some(b) => {
            write_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}
