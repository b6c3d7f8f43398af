//! Fuzz target: the uncompressed record decoder. The input is a whole batch (header, then
//! records); whatever its header claims, reading it must end in records or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_protocol::records::Batches;

fuzz_target!(|data: &[u8]| {
    for batch in Batches::new(data) {
        let Ok(batch) = batch else { break };
        let _ = batch.check_crc();
        if let Ok(records) = batch.records() {
            for record in records {
                let Ok(record) = record else { break };
                for header in record.headers() {
                    std::hint::black_box(header);
                }
            }
        }
    }
});
