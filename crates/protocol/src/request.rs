//! One request frame (without its length prefix) to its header and body: the API key and version
//! are read first, checked against the API table, and pick the header and body layouts.
//!
//! This is the codec's part of request handling; which APIs and versions a broker serves is the
//! broker's choice, made before or after calling [`decode_request`].

use bytes::Bytes;

use crate::codec::{Decodable, DecodeError};
use crate::messages::{ApiKey, RequestHeader, RequestKind};

/// Why a request frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request of {0} bytes is shorter than a request header")]
    Truncated(usize),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{key:?} has no version {version}")]
    UnknownVersion { key: ApiKey, version: i16 },
    #[error("malformed {key:?} v{version} request header: {error}")]
    Header {
        key: ApiKey,
        version: i16,
        error: DecodeError,
    },
    #[error("malformed {key:?} v{version} request: {error}")]
    Body {
        key: ApiKey,
        version: i16,
        error: DecodeError,
    },
}

/// The API key and version at the front of a request frame, before anything else is decoded.
pub fn peek_api(frame: &[u8]) -> Result<(ApiKey, i16), RequestError> {
    let [k0, k1, v0, v1, ..] = *frame else {
        return Err(RequestError::Truncated(frame.len()));
    };
    let raw = i16::from_be_bytes([k0, k1]);
    let key = ApiKey::try_from(raw).map_err(|_| RequestError::UnknownApi(raw))?;
    Ok((key, i16::from_be_bytes([v0, v1])))
}

/// Decodes a request frame: header, then body. The body's strings and byte fields share
/// `frame`'s memory. Returns the bytes left after the body too (Kafka ignores them).
pub fn decode_request(frame: Bytes) -> Result<(RequestHeader, RequestKind, Bytes), RequestError> {
    let (key, version) = peek_api(&frame)?;
    if !key.valid_versions().contains(version) {
        return Err(RequestError::UnknownVersion { key, version });
    }
    let mut rest = frame;
    let header =
        RequestHeader::decode(&mut rest, key.request_header_version(version)).map_err(|error| {
            RequestError::Header {
                key,
                version,
                error,
            }
        })?;
    let body =
        RequestKind::decode(key, &mut rest, version).map_err(|error| RequestError::Body {
            key,
            version,
            error,
        })?;
    Ok((header, body, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{DecodeErrorKind, Encodable};
    use crate::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use crate::messages::{ApiKey, ProduceRequest, TopicName, APIS};
    use crate::str_bytes::StrBytes;
    use bytes::{BufMut, BytesMut};
    use proptest::prelude::*;

    fn frame(key: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("c")))
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    fn produce(version: i16) -> Bytes {
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_records(Some(Bytes::from_static(&[1, 2, 3])))])]);
        frame(ApiKey::Produce, version, &request)
    }

    #[test]
    fn a_produce_request_decodes_and_borrows_its_records() {
        let bytes = produce(9);
        let (header, body, rest) = decode_request(bytes.clone()).unwrap();
        assert_eq!(header.correlation_id, 7);
        assert_eq!(header.client_id.as_deref(), Some("c"));
        assert!(rest.is_empty());
        let RequestKind::Produce(p) = body else {
            panic!("not a produce request")
        };
        let records = p.topic_data[0].partition_data[0].records.as_ref().unwrap();
        assert_eq!(&records[..], &[1, 2, 3]);
        // A slice of the frame, not a copy.
        let start = bytes.windows(3).position(|w| w == [1, 2, 3]).unwrap();
        assert_eq!(records.as_ptr(), bytes[start..].as_ptr());
    }

    #[test]
    fn a_huge_topic_count_is_refused_without_allocating() {
        let mut buf = BytesMut::new();
        buf.put_i16(ApiKey::Produce as i16);
        buf.put_i16(3);
        buf.put_i32(1);
        buf.put_i16(-1); // client id
        buf.put_i16(-1); // transactional id
        buf.put_i16(1); // acks
        buf.put_i32(0); // timeout
        buf.put_i32(i32::MAX); // topics
        let err = decode_request(buf.freeze()).unwrap_err();
        let RequestError::Body { error, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(error.field(), "ProduceRequest.topic_data");
        assert!(matches!(error.kind(), DecodeErrorKind::TooLong { .. }));
    }

    #[test]
    fn unknown_apis_and_versions_are_named() {
        assert_eq!(
            decode_request(Bytes::from_static(&[0x7f, 0, 0, 0])),
            Err(RequestError::UnknownApi(0x7f00))
        );
        assert_eq!(
            decode_request(Bytes::from_static(&[0, 0, 0, 2, 0, 0, 0, 0])),
            Err(RequestError::UnknownVersion {
                key: ApiKey::Produce,
                version: 2
            })
        );
        assert_eq!(
            decode_request(Bytes::from_static(&[0])),
            Err(RequestError::Truncated(1))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_request(Bytes::from(bytes));
        }

        #[test]
        fn arbitrary_bodies_of_every_api_and_version_never_panic_and_reencode(
            api in 0..APIS.len(),
            version_pick in any::<u16>(),
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let info = &APIS[api];
            let span = (info.versions.max - info.versions.min + 1) as u16;
            let version = info.versions.min + (version_pick % span) as i16;
            let mut frame = BytesMut::new();
            frame.put_i16(info.key as i16);
            frame.put_i16(version);
            frame.put_i32(1);
            frame.put_i16(-1);
            if key_is_flexible(info.key, version) {
                frame.put_u8(0);
            }
            frame.extend_from_slice(&body);
            // What decodes must encode again, stably.
            if let Ok((_, request, _)) = decode_request(frame.freeze()) {
                let mut once = BytesMut::new();
                request.encode(&mut once, version).unwrap();
                let again = RequestKind::decode(info.key, &mut once.clone().freeze(), version).unwrap();
                let mut twice = BytesMut::new();
                again.encode(&mut twice, version).unwrap();
                prop_assert_eq!(once, twice);
            }
        }

        #[test]
        fn mutated_valid_requests_never_panic(
            version in 3i16..=13,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut frame = produce(version).to_vec();
            for (at, byte) in flips {
                let i = at % frame.len();
                frame[i] = byte;
            }
            frame.truncate(cut % (frame.len() + 1));
            let _ = decode_request(Bytes::from(frame));
        }
    }

    fn key_is_flexible(key: ApiKey, version: i16) -> bool {
        key.request_header_version(version) >= 2
    }
}
