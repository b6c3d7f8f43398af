//! Fuzz target: any segment bytes (valid batches first, then arbitrary bytes, maybe one byte
//! changed among them) through log recovery and `sluice log verify`: never a panic, never a
//! valid batch before the damage cut, and the damage reported at exactly the first bad byte
//! (`sluice_log::testing::recovery::check_segment_recovery`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_log::testing::recovery::check_segment_recovery(data);
});
