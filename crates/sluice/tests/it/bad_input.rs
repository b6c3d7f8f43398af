//! Bad input over a raw socket: each case gets Kafka's error code or a closed connection, the broker
//! stays up, other connections keep working, and nothing bad reaches disk.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rdkafka::Offset;
use sluice_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use sluice_protocol::messages::produce_response::PartitionProduceResponse;
use sluice_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, ProduceRequest, ProduceResponse, TopicName,
};
use sluice_protocol::{Decodable, StrBytes};

use crate::harness::Broker;
use crate::produce_consume::{produce_records, producer, read_back};
use crate::wire::{call, connect, frame, read_response};

fn assert_closed(stream: &mut TcpStream, case: &str) {
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => {}
        other => panic!("{case}: expected the connection to close, got {other:?}"),
    }
}

/// A valid v2 batch of one uncompressed record, with a correct CRC32C.
pub(crate) fn batch(value: &[u8]) -> Vec<u8> {
    sluice_log::testing::BatchBuilder::new()
        .record(None, value, crate::harness::now_ms())
        .build()
        .to_vec()
}

fn produce(topic: &str, records: Vec<u8>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(records)))])])
}

pub(crate) fn produce_error(broker: &Broker, topic: &str, records: Vec<u8>) -> i16 {
    produce_response(broker, topic, 9, records).error_code
}

/// Sends one Produce request of `version` with `records` for partition 0 of `topic` (acks=all)
/// on a fresh connection and returns the partition's answer.
pub(crate) fn produce_response(
    broker: &Broker,
    topic: &str,
    version: i16,
    records: Vec<u8>,
) -> PartitionProduceResponse {
    let mut stream = connect(broker);
    let response: ProduceResponse = call(
        &mut stream,
        ApiKey::Produce,
        version,
        &produce(topic, records),
    );
    let topic = response.responses.into_iter().next().expect("one topic");
    topic
        .partition_responses
        .into_iter()
        .next()
        .expect("one partition")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("victim", 1, &[]).await;
    // A connection opened before the abuse must keep working after it.
    let mut bystander = connect(&broker);

    // Oversize length prefix (socket.request.max.bytes is 100 MiB).
    let mut s = connect(&broker);
    s.write_all(&i32::MAX.to_be_bytes()).unwrap();
    assert_closed(&mut s, "oversize frame");

    // Negative length prefix.
    let mut s = connect(&broker);
    s.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert_closed(&mut s, "negative frame");

    // Frame shorter than a request header.
    let mut s = connect(&broker);
    s.write_all(&[0, 0, 0, 3, 0, 18, 0]).unwrap();
    assert_closed(&mut s, "short frame");

    // Truncated request: the length promises more than is sent before the client half-closes.
    let mut s = connect(&broker);
    s.write_all(&[0, 0, 0, 100, 0, 18, 0, 3]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_closed(&mut s, "truncated frame");

    // Unknown API key.
    let mut s = connect(&broker);
    s.write_all(&[0, 0, 0, 10, 0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff])
        .unwrap();
    assert_closed(&mut s, "unknown api key");

    // Unsupported version of a known API (Produce v1).
    let mut s = connect(&broker);
    s.write_all(&frame(ApiKey::Produce, 3, 1, &produce("victim", batch(b"x")))[..4])
        .unwrap();
    let mut f = frame(ApiKey::Produce, 3, 1, &produce("victim", batch(b"x")));
    f[6..8].copy_from_slice(&1i16.to_be_bytes());
    s.write_all(&f[4..]).unwrap();
    assert_closed(&mut s, "unsupported produce version");

    // A 12-byte Produce body claiming 2^31-1 topics: must not allocate, must close.
    let mut s = connect(&broker);
    let mut body = BytesMut::new();
    body.put_i16(ApiKey::Produce as i16);
    body.put_i16(3);
    body.put_i32(9);
    body.put_i16(-1); // client id null
    body.put_i16(-1); // transactional id null
    body.put_i16(-1); // acks
    body.put_i32(1000); // timeout
    body.put_i32(i32::MAX); // topic count
    let mut f = (body.len() as i32).to_be_bytes().to_vec();
    f.extend_from_slice(&body);
    s.write_all(&f).unwrap();
    assert_closed(&mut s, "huge array length");

    // Garbage body for a valid header.
    let mut s = connect(&broker);
    let mut f = frame(
        ApiKey::Metadata,
        12,
        2,
        &sluice_protocol::messages::MetadataRequest::default(),
    );
    f.truncate(f.len() - 1);
    f.extend_from_slice(&[0xff; 9]);
    let len = (f.len() - 4) as i32;
    f[..4].copy_from_slice(&len.to_be_bytes());
    s.write_all(&f).unwrap();
    assert_closed(&mut s, "malformed metadata body");

    // ApiVersions at a version we do not know: v0 answer with UNSUPPORTED_VERSION and our ranges.
    let mut s = connect(&broker);
    let mut f = frame(ApiKey::ApiVersions, 3, 11, &ApiVersionsRequest::default());
    f[6..8].copy_from_slice(&99i16.to_be_bytes());
    s.write_all(&f).unwrap();
    let (correlation, mut body) = read_response(&mut s).expect("api versions fallback");
    assert_eq!(correlation, 11);
    let response = ApiVersionsResponse::decode(&mut body, 0).unwrap();
    assert_eq!(response.error_code, 35, "UNSUPPORTED_VERSION");
    assert!(response
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));

    // Record batches: bad CRC -> CORRUPT_MESSAGE (2); wrong magic -> INVALID_RECORD (87);
    // a truncated batch -> CORRUPT_MESSAGE; a good one is accepted.
    let mut bad_crc = batch(b"hello");
    let last = bad_crc.len() - 2;
    bad_crc[last] ^= 0xff;
    assert_eq!(produce_error(&broker, "victim", bad_crc), 2);
    let mut bad_magic = batch(b"hello");
    bad_magic[16] = 1;
    assert_eq!(produce_error(&broker, "victim", bad_magic), 87);
    let mut torn = batch(b"hello");
    torn.truncate(torn.len() - 3);
    assert_eq!(produce_error(&broker, "victim", torn), 2);
    assert_eq!(produce_error(&broker, "victim", batch(b"good")), 0);
    // Internal topics are not writable by clients: INVALID_TOPIC_EXCEPTION.
    assert_eq!(
        produce_error(&broker, "__consumer_offsets", batch(b"x")),
        17
    );

    // Nothing bad reached the log: exactly the one good record is there.
    let read = read_back(
        &broker,
        "victim",
        1,
        Offset::Beginning,
        2,
        Duration::from_secs(5),
    );
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].2.value, b"good");

    // The bystander connection still answers.
    bystander
        .write_all(&frame(
            ApiKey::ApiVersions,
            0,
            5,
            &ApiVersionsRequest::default(),
        ))
        .unwrap();
    let (correlation, _) = read_response(&mut bystander).expect("bystander answered");
    assert_eq!(correlation, 5);

    // And a normal client round trip still works.
    let producer = producer(&broker, &[("acks", "all")]);
    let produced = produce_records(&producer, "victim", 10, crate::harness::now_ms()).await;
    assert_eq!(produced[&0].len(), 10);
    assert!(broker.stderr().contains("closing connection"));
}
