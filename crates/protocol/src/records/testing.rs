//! Hostile batches for tests and fuzz targets: a header with any claims around any payload, under
//! a CRC that matches, so the records are what gets tested rather than the checksum.

use super::batch::write_crc;
use super::{BatchHeader, MIN_BATCH_LENGTH};

/// A batch whose records section is `payload` as given, with `attributes` (codec id in the low
/// three bits, 0 to 7) and claiming `record_count` records (the last offset delta to match), at
/// base offset 0, under a correct CRC.
pub fn batch_around(attributes: i16, record_count: i32, payload: &[u8]) -> Vec<u8> {
    let header = BatchHeader {
        base_offset: 0,
        batch_length: MIN_BATCH_LENGTH
            .saturating_add(i32::try_from(payload.len()).unwrap_or(i32::MAX)),
        partition_leader_epoch: 0,
        magic: 2,
        crc: 0,
        attributes,
        last_offset_delta: record_count.saturating_sub(1),
        base_timestamp: 0,
        max_timestamp: 0,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        record_count,
    };
    let mut bytes = header.to_bytes().to_vec();
    bytes.extend_from_slice(payload);
    write_crc(&mut bytes);
    bytes
}

/// Sets the CRC field of a whole batch (at least a header long) to what its bytes give, as a
/// client that means harm would after changing a claim.
pub fn fix_crc(batch: &mut [u8]) {
    write_crc(batch);
}

/// Makes `batch` claim `record_count` records (the last offset delta to match) and fixes its CRC.
pub fn claim_count(batch: &mut [u8], record_count: i32) {
    batch[57..61].copy_from_slice(&record_count.to_be_bytes());
    batch[23..27].copy_from_slice(&record_count.saturating_sub(1).to_be_bytes());
    write_crc(batch);
}
