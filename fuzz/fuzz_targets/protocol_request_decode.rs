//! Fuzz target: any bytes as a request frame through sluice-protocol's generated codecs (header,
//! then the body of whichever API and version the frame names) must decode or fail with a typed
//! error, never panic, abort or allocate beyond what the frame holds. What decodes must encode
//! again, and stably: encoding the re-decoded request gives the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_protocol::messages::RequestKind;
use sluice_protocol::request::{decode_request, peek_api};

fuzz_target!(|data: &[u8]| {
    let Ok((_, body, _)) = decode_request(bytes::Bytes::copy_from_slice(data)) else {
        return;
    };
    let (key, version) = peek_api(data).expect("it decoded");
    let mut once = bytes::BytesMut::new();
    body.encode(&mut once, version).expect("a decoded request encodes");
    let again = RequestKind::decode(key, &mut once.clone().freeze(), version).expect("re-decodes");
    let mut twice = bytes::BytesMut::new();
    again.encode(&mut twice, version).expect("encodes again");
    assert_eq!(once, twice);
});
