//! Fuzz target: produce validation. Fuzzer bytes become a producer's batches (see
//! `sluice_fuzz::producer_batches`: whole batches, or records behind a valid header and CRC with
//! any codec) that must validate or be refused with a typed error under every policy
//! (compacted, recompressing, timestamp bounds), never panic or abort. The first byte picks the
//! policy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_log::{CompressionType, LogConfig, Timestamp, TimestampType, ValidationPolicy};

const COMPRESSION: [CompressionType; 6] = [
    CompressionType::Producer,
    CompressionType::Uncompressed,
    CompressionType::Gzip,
    CompressionType::Snappy,
    CompressionType::Lz4,
    CompressionType::Zstd,
];

fuzz_target!(|data: &[u8]| {
    let Some((&choice, batches)) = data.split_first() else {
        return;
    };
    let config = LogConfig {
        compact: choice & 1 != 0,
        compression: COMPRESSION[usize::from(choice >> 1) % COMPRESSION.len()],
        message_timestamp_type: if choice & 0x80 != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        },
        message_timestamp_before_max_ms: if choice & 0x40 != 0 { 60_000 } else { i64::MAX },
        ..LogConfig::default()
    };
    let policy = ValidationPolicy::from(&config);
    let _ = sluice_log::validate(
        bytes::Bytes::from(sluice_fuzz::producer_batches(batches)),
        &policy,
        Timestamp(1_700_000_000_000),
    );
});
