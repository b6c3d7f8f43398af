//! Record batches as the simulated client writes them (one record whose value is a `u64`), and
//! reading a replica's log back into (offset, leader epoch, value) entries through the same
//! file ranges the broker's follower fetches send.

use std::os::unix::fs::FileExt;

use bytes::Bytes;
use sluice_broker::partition::Partition;
use sluice_log::testing::BatchBuilder;
use sluice_log::{FileRange, Offset};

/// One record of a replica's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) offset: i64,
    /// The leader epoch stamped into its batch by the leader that appended it.
    pub(crate) epoch: i32,
    pub(crate) value: u64,
}

/// A producer batch carrying `value`.
pub(crate) fn batch(value: u64, now_ms: i64) -> Bytes {
    BatchBuilder::new()
        .record(None, &value.to_be_bytes(), now_ms)
        .build()
}

/// The bytes of `ranges`, concatenated.
pub(crate) fn read_ranges(ranges: &[FileRange]) -> Bytes {
    let mut out = Vec::new();
    for range in ranges {
        let mut buf = vec![0u8; range.len as usize];
        range
            .file
            .read_exact_at(&mut buf, range.pos)
            .expect("read a planned file range");
        out.extend_from_slice(&buf);
    }
    Bytes::from(out)
}

/// The entries of `partition`'s log in `[from, to)` (bounded by its log end).
pub(crate) fn entries(partition: &Partition, from: i64, to: i64) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut next = from.max(partition.log_start_offset().0);
    let to = to.min(partition.log_end_offset().0);
    while next < to {
        let ranges = partition
            .read_ranges_for_follower(Offset(next), 1 << 16)
            .expect("read within the log");
        let decoded = decode(&read_ranges(&ranges));
        if decoded.is_empty() {
            break;
        }
        for entry in decoded {
            if entry.offset >= next && entry.offset < to {
                out.push(entry);
            }
            next = next.max(entry.offset + 1);
        }
    }
    out
}

/// Decodes v2 record batches (uncompressed) into entries.
pub(crate) fn decode(mut bytes: &[u8]) -> Vec<Entry> {
    const HEADER: usize = 61;
    let mut out = Vec::new();
    while bytes.len() >= HEADER {
        let base = i64::from_be_bytes(bytes[0..8].try_into().unwrap());
        let length = i32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
        let epoch = i32::from_be_bytes(bytes[12..16].try_into().unwrap());
        let count = i32::from_be_bytes(bytes[57..61].try_into().unwrap());
        let end = 12 + length;
        let mut records = &bytes[HEADER..end];
        for _ in 0..count {
            let _length = varint(&mut records);
            records = &records[1..]; // attributes
            let _timestamp_delta = varint(&mut records);
            let offset_delta = varint(&mut records);
            let key_length = varint(&mut records);
            if key_length > 0 {
                records = &records[key_length as usize..];
            }
            let value_length = varint(&mut records) as usize;
            let value = u64::from_be_bytes(records[..value_length].try_into().unwrap());
            records = &records[value_length..];
            let headers = varint(&mut records);
            assert_eq!(headers, 0, "the simulation writes no headers");
            out.push(Entry {
                offset: base + offset_delta,
                epoch,
                value,
            });
        }
        bytes = &bytes[end..];
    }
    out
}

/// A zigzag varint (Kafka's record fields).
fn varint(bytes: &mut &[u8]) -> i64 {
    let mut raw = 0u64;
    let mut shift = 0;
    loop {
        let b = bytes[0];
        *bytes = &bytes[1..];
        raw |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    (raw >> 1) as i64 ^ -((raw & 1) as i64)
}
