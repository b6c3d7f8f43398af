//! What the record-decoder fuzz targets share: a batch built around the fuzzer's bytes, read
//! every way the broker reads batches.

use std::hint::black_box;

use sluice_protocol::records::testing::{batch_around, fix_crc};
use sluice_protocol::records::{compress, Batch, BatchHeader, Compression, RecordsError};

/// Decompressed bytes allowed per batch while fuzzing: small, so bombs stop fast.
pub const LIMIT: usize = 1 << 20;

/// Reads a `codec` batch made from `data`: its first byte picks raw (even) or compressed (odd)
/// payload and the claimed count (its upper bits), the rest is the payload or the records.
pub fn read_compressed(codec: Compression, data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let payload = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        match compress(codec, rest) {
            Ok(payload) => payload,
            Err(_) => return,
        }
    };
    let bytes = batch_around(i16::from(codec.id()), i32::from(mode >> 1), &payload);
    let (batch, _) = Batch::parse(&bytes).expect("a well-formed batch");
    let _ = batch.for_each_record(LIMIT, |record| {
        black_box(record.headers().count());
        Ok::<_, RecordsError>(())
    });
    let mut out = Vec::new();
    let _ = batch.decompress_into(LIMIT, &mut out);
    assert!(out.len() <= LIMIT + 1, "decompressed {} bytes", out.len());
}

/// Sets the CRC of every batch whose header reads in `bytes` (walking by their length fields).
pub fn fix_crcs(bytes: &mut [u8]) {
    let mut at = 0;
    while let Ok(header) = BatchHeader::parse(&bytes[at..]) {
        let end = at.saturating_add(header.size());
        let Some(batch) = bytes.get_mut(at..end) else {
            return;
        };
        fix_crc(batch);
        at = end;
    }
}

/// Producer batches made from fuzzer bytes `[mode, count, rest..]`. Mode bit 4 takes `rest` as
/// whole batches (bit 5 then fixes their CRCs, so the records are reached); otherwise one batch
/// claiming `count` records is built around `rest`, with codec id `mode & 7` (5 to 7 are unknown)
/// and `rest` compressed with it first when bit 3 is set.
pub fn producer_batches(data: &[u8]) -> Vec<u8> {
    let [mode, count, rest @ ..] = data else {
        return Vec::new();
    };
    if mode & 0x10 != 0 {
        let mut bytes = rest.to_vec();
        if mode & 0x20 != 0 {
            fix_crcs(&mut bytes);
        }
        return bytes;
    }
    let codec_id = mode & 7;
    let payload = match Compression::from_id(codec_id) {
        Ok(codec) if mode & 8 != 0 => match compress(codec, rest) {
            Ok(payload) => payload,
            Err(_) => return Vec::new(),
        },
        _ => rest.to_vec(),
    };
    batch_around(i16::from(codec_id), i32::from(*count), &payload)
}
