//! Fuzz target: any bytes as a request frame must decode or fail cleanly, never panic or abort.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sluice_broker::request::decode_request(bytes::Bytes::copy_from_slice(data));
});
