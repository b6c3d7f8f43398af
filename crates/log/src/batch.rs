//! Kafka record batch (magic v2) header: parsing, validation and the in-place edits the log makes.
//!
//! Layout (all big endian), byte offsets from the start of the batch:
//! `0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8 | 17 crc u32 |
//! 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64 | 35 maxTimestamp i64 |
//! 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32 | 57 recordCount i32 | 61 records`.
//! The CRC-32C covers bytes 21 to the end; baseOffset, batchLength and the leader epoch are outside
//! it, which is what lets the log assign offsets without touching the checksum.

/// Size of the fixed batch header.
pub(crate) const HEADER_LEN: usize = 61;
/// Bytes of the header before `batchLength` counts (baseOffset + batchLength).
pub(crate) const LOG_OVERHEAD: usize = 12;

pub(crate) const OFF_BASE_OFFSET: usize = 0;
pub(crate) const OFF_LENGTH: usize = 8;
pub(crate) const OFF_LEADER_EPOCH: usize = 12;
pub(crate) const OFF_MAGIC: usize = 16;
pub(crate) const OFF_CRC: usize = 17;
pub(crate) const OFF_ATTRIBUTES: usize = 21;
pub(crate) const OFF_LAST_OFFSET_DELTA: usize = 23;
pub(crate) const OFF_BASE_TIMESTAMP: usize = 27;
pub(crate) const OFF_MAX_TIMESTAMP: usize = 35;
pub(crate) const OFF_PRODUCER_ID: usize = 43;
pub(crate) const OFF_PRODUCER_EPOCH: usize = 51;
pub(crate) const OFF_BASE_SEQUENCE: usize = 53;
pub(crate) const OFF_RECORD_COUNT: usize = 57;

pub(crate) const ATTR_COMPRESSION_MASK: i16 = 0x07;
pub(crate) const ATTR_LOG_APPEND_TIME: i16 = 0x08;
pub(crate) const ATTR_TRANSACTIONAL: i16 = 0x10;
pub(crate) const ATTR_CONTROL: i16 = 0x20;

pub(crate) fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// The decoded fixed header of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub base_offset: i64,
    /// Total bytes of the batch, including baseOffset and batchLength.
    pub size: usize,
    pub leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Decodes the fixed header from `b`, which must hold at least [`HEADER_LEN`] bytes.
    pub(crate) fn parse(b: &[u8]) -> Self {
        assert!(
            b.len() >= HEADER_LEN,
            "batch header needs {HEADER_LEN} bytes"
        );
        let length = be_i32(b, OFF_LENGTH);
        BatchHeader {
            base_offset: be_i64(b, OFF_BASE_OFFSET),
            size: (length.max(0) as usize).saturating_add(LOG_OVERHEAD),
            leader_epoch: be_i32(b, OFF_LEADER_EPOCH),
            magic: b[OFF_MAGIC] as i8,
            crc: be_u32(b, OFF_CRC),
            attributes: be_i16(b, OFF_ATTRIBUTES),
            last_offset_delta: be_i32(b, OFF_LAST_OFFSET_DELTA),
            base_timestamp: be_i64(b, OFF_BASE_TIMESTAMP),
            max_timestamp: be_i64(b, OFF_MAX_TIMESTAMP),
            producer_id: be_i64(b, OFF_PRODUCER_ID),
            producer_epoch: be_i16(b, OFF_PRODUCER_EPOCH),
            base_sequence: be_i32(b, OFF_BASE_SEQUENCE),
            record_count: be_i32(b, OFF_RECORD_COUNT),
        }
    }

    /// The batch's last offset (saturating: a damaged or crafted base offset near `i64::MAX`
    /// is refused by the offset checks, never an overflow).
    pub(crate) fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    pub(crate) fn last_sequence(&self) -> i32 {
        // Sequence numbers wrap from i32::MAX to 0 (Kafka's DefaultRecordBatch.incrementSequence).
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        if last > i64::from(i32::MAX) {
            (last - i64::from(i32::MAX) - 1) as i32
        } else {
            last as i32
        }
    }

    pub(crate) fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Part of a transaction: data of a transactional producer, or a commit/abort marker.
    pub(crate) fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub(crate) fn is_compressed(&self) -> bool {
        self.attributes & ATTR_COMPRESSION_MASK != 0
    }

    pub(crate) fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Why the bytes at some position are not a whole, valid batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BatchProblem {
    /// Fewer bytes than the header or the length field claims.
    Truncated(String),
    /// Checksum or length field disagree with the bytes.
    Corrupt(String),
    /// Not a batch this log stores (wrong magic, bad counts).
    Invalid(String),
}

/// The checksum a batch should carry: CRC-32C of everything from the attributes on.
pub(crate) fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[OFF_ATTRIBUTES..])
}

/// Checks the fixed header at `b[0]` (length field, magic, counts) without the CRC. `b` may be
/// shorter than the batch; it must hold the header.
pub(crate) fn check_header(b: &[u8]) -> Result<BatchHeader, BatchProblem> {
    if b.len() < HEADER_LEN {
        return Err(BatchProblem::Truncated(format!(
            "{} bytes left, a batch header needs {HEADER_LEN}",
            b.len()
        )));
    }
    let length = be_i32(b, OFF_LENGTH);
    if length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchProblem::Corrupt(format!(
            "batch length {length} is smaller than the {} byte header",
            HEADER_LEN - LOG_OVERHEAD
        )));
    }
    let header = BatchHeader::parse(b);
    if header.magic != 2 {
        return Err(BatchProblem::Invalid(format!(
            "record batch magic {} is not supported (only magic 2, Kafka 0.11+ clients)",
            header.magic
        )));
    }
    if header.record_count <= 0 {
        return Err(BatchProblem::Invalid(format!(
            "batch has record count {}",
            header.record_count
        )));
    }
    if header.last_offset_delta < 0 {
        return Err(BatchProblem::Invalid(format!(
            "batch has negative last offset delta {}",
            header.last_offset_delta
        )));
    }
    Ok(header)
}

/// Checks the batch starting at `b[0]`: length, magic, counts and CRC. Returns the header; the
/// batch occupies `b[..header.size]`.
pub(crate) fn check_batch(b: &[u8]) -> Result<BatchHeader, BatchProblem> {
    let header = check_header(b)?;
    if b.len() < header.size {
        return Err(BatchProblem::Truncated(format!(
            "batch claims {} bytes but only {} are present",
            header.size,
            b.len()
        )));
    }
    check_crc(&b[..header.size], &header)?;
    Ok(header)
}

/// Compares the stored CRC with the bytes of a whole batch.
pub(crate) fn check_crc(batch: &[u8], header: &BatchHeader) -> Result<(), BatchProblem> {
    let actual = compute_crc(batch);
    if actual != header.crc {
        return Err(BatchProblem::Corrupt(format!(
            "CRC mismatch: batch says {:#010x}, bytes give {actual:#010x}",
            header.crc
        )));
    }
    Ok(())
}

/// Rewrites a header copy for storage: the assigned base offset, the leader epoch and, for
/// LogAppendTime topics, the timestamp type bit and max timestamp (which changes the CRC, so the
/// caller passes the CRC of the unchanged remainder of the batch, `body_crc_tail`).
pub(crate) fn stamp_header(
    header: &mut [u8; HEADER_LEN],
    base_offset: i64,
    leader_epoch: i32,
    log_append_time: Option<(i64, &[u8])>,
) {
    header[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    header[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_be_bytes());
    if let Some((now, records)) = log_append_time {
        let attributes = be_i16(header, OFF_ATTRIBUTES) | ATTR_LOG_APPEND_TIME;
        header[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        header[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&now.to_be_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header[OFF_ATTRIBUTES..]), records);
        header[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Sets the CRC field of a whole batch to what its bytes give.
pub(crate) fn set_crc(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The records of `batch` (uncompressed, or cut short: whatever whole records are there), read
/// with the bounded codec; None when the header cannot be read.
fn leading_records(batch: &[u8]) -> Option<sluice_protocol::records::Records<'_>> {
    use sluice_protocol::records::{BatchHeader as WireHeader, Records};
    let header = WireHeader::parse(batch).ok()?;
    let records = batch.get(HEADER_LEN..header.size().min(batch.len()))?;
    Records::new(records, &header).ok()
}

/// For an uncompressed CreateTime batch, the offset and timestamp of the first record whose
/// timestamp is at least `target` (None also when the records do not read).
pub(crate) fn first_record_at_or_after(batch: &[u8], target: i64) -> Option<(i64, i64)> {
    leading_records(batch)?
        .map_while(Result::ok)
        .find(|r| r.timestamp >= target)
        .map(|r| (r.offset, r.timestamp))
}

/// The two kinds of transaction marker (the `type` field of a control record's key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerKind {
    Abort,
    Commit,
}

/// Bytes of the one record of a marker batch: length 16, attributes, timestamp and offset deltas,
/// key (version 0, type), value (version 0, coordinator epoch), no headers.
const MARKER_RECORD_LEN: usize = 17;

/// A transaction marker batch (Kafka's control batch: transactional and control attributes, one
/// record whose key says commit or abort). Base offset and leader epoch are stamped on append.
pub(crate) fn marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    kind: MarkerKind,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN + MARKER_RECORD_LEN];
    let length = (b.len() - LOG_OVERHEAD) as i32;
    b[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    b[OFF_MAGIC] = 2;
    b[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2]
        .copy_from_slice(&(ATTR_TRANSACTIONAL | ATTR_CONTROL).to_be_bytes());
    b[OFF_BASE_TIMESTAMP..OFF_BASE_TIMESTAMP + 8].copy_from_slice(&timestamp.to_be_bytes());
    b[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&timestamp.to_be_bytes());
    b[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
    b[OFF_PRODUCER_EPOCH..OFF_PRODUCER_EPOCH + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    b[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4].copy_from_slice(&(-1i32).to_be_bytes());
    b[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&1i32.to_be_bytes());
    let kind = match kind {
        MarkerKind::Abort => 0u8,
        MarkerKind::Commit => 1u8,
    };
    let epoch = coordinator_epoch.to_be_bytes();
    // Zig-zag varints: 32 = 16 bytes follow, 8 = a 4 byte key, 12 = a 6 byte value.
    let record = [
        32, 0, 0, 0, 8, 0, 0, 0, kind, 12, 0, 0, epoch[0], epoch[1], epoch[2], epoch[3], 0,
    ];
    b[HEADER_LEN..].copy_from_slice(&record);
    let crc = compute_crc(&b);
    b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// What a control batch says: a transaction marker's kind and the coordinator epoch in its value
/// (-1 when the value cannot be read); None for any other control record or bytes that cannot be
/// read. `batch` starts at the batch header and may be cut short after the first record.
pub(crate) fn parse_marker(batch: &[u8]) -> Option<(MarkerKind, i32)> {
    let record = leading_records(batch)?.next()?.ok()?;
    let kind = match record.key? {
        [_, _, 0, 0, ..] => MarkerKind::Abort,
        [_, _, 0, 1, ..] => MarkerKind::Commit,
        _ => return None,
    };
    let coordinator_epoch = match record.value {
        Some([_, _, a, b, c, d, ..]) => i32::from_be_bytes([*a, *b, *c, *d]),
        _ => -1,
    };
    Some((kind, coordinator_epoch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::BatchBuilder;

    #[test]
    fn a_built_batch_checks_out() {
        let batch = BatchBuilder::new()
            .record(Some(b"k"), b"v", 5)
            .record(None, b"w", 9)
            .build();
        let header = check_batch(&batch).expect("valid");
        assert_eq!(header.record_count, 2);
        assert_eq!(header.last_offset_delta, 1);
        assert_eq!(header.max_timestamp, 9);
        assert_eq!(header.size, batch.len());
    }

    #[test]
    fn a_flipped_byte_is_corrupt_and_a_short_batch_truncated() {
        let batch = BatchBuilder::new().record(None, b"value", 1).build();
        let mut bad = batch.to_vec();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(check_batch(&bad), Err(BatchProblem::Corrupt(_))));
        assert!(matches!(
            check_batch(&batch[..batch.len() - 1]),
            Err(BatchProblem::Truncated(_))
        ));
        assert!(matches!(
            check_batch(&batch[..5]),
            Err(BatchProblem::Truncated(_))
        ));
        let mut magic = batch.to_vec();
        magic[OFF_MAGIC] = 1;
        assert!(matches!(check_batch(&magic), Err(BatchProblem::Invalid(_))));
    }

    #[test]
    fn stamping_log_append_time_keeps_the_crc_valid() {
        let batch = BatchBuilder::new()
            .record(None, b"a", 1)
            .record(None, b"b", 2)
            .build();
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&batch[..HEADER_LEN]);
        stamp_header(&mut header, 42, 7, Some((1000, &batch[HEADER_LEN..])));
        let mut stored = header.to_vec();
        stored.extend_from_slice(&batch[HEADER_LEN..]);
        let h = check_batch(&stored).expect("still valid");
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.leader_epoch, 7);
        assert_eq!(h.max_timestamp, 1000);
        assert_ne!(h.attributes & ATTR_LOG_APPEND_TIME, 0);
    }

    #[test]
    fn finds_the_first_record_at_a_timestamp() {
        let batch = BatchBuilder::new()
            .base_offset(10)
            .record(None, b"a", 100)
            .record(None, b"b", 200)
            .record(None, b"c", 300)
            .build();
        assert_eq!(first_record_at_or_after(&batch, 150), Some((11, 200)));
        assert_eq!(first_record_at_or_after(&batch, 50), Some((10, 100)));
        assert_eq!(first_record_at_or_after(&batch, 301), None);
    }

    #[test]
    fn markers_parse_back_with_their_coordinator_epoch() {
        for (kind, epoch) in [(MarkerKind::Commit, 7), (MarkerKind::Abort, 0)] {
            let batch = marker_batch(3, 1, kind, epoch, 100);
            assert_eq!(parse_marker(&batch), Some((kind, epoch)));
        }
        let data = BatchBuilder::new().record(None, b"v", 1).build();
        assert_eq!(parse_marker(&data), None);
    }

    #[test]
    fn sequences_wrap() {
        let batch = BatchBuilder::new()
            .producer(5, 0, i32::MAX)
            .record(None, b"a", 1)
            .record(None, b"b", 1)
            .build();
        assert_eq!(BatchHeader::parse(&batch).last_sequence(), 0);
    }
}
