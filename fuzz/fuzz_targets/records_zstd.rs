//! Fuzz target: records of a zstd batch. The first byte picks the payload: the rest of the input
//! as it is (a hostile compressed stream), or the rest compressed with zstd (hostile records
//! inside a valid stream). Streaming and materializing reads must end in records or a typed
//! error, with at most the limit decompressed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_fuzz::read_compressed(sluice_protocol::records::Compression::Zstd, data);
});
