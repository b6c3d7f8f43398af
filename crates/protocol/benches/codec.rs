//! Decode and encode throughput of Produce and Fetch requests and responses, ours against the
//! crates.io `kafka-protocol` codecs on the same bytes in the same run.
//! `cargo bench -p sluice-protocol`; throughput is reported in bytes per second of encoded message.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::protocol::{Decodable as KpDecodable, Encodable as KpEncodable};
use sluice_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use sluice_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use sluice_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use sluice_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ProduceRequest, TopicName, TransactionalId,
};
use sluice_protocol::{Decodable, Encodable, StrBytes};

fn records(len: usize) -> Option<Bytes> {
    Some(Bytes::from(vec![0x5a; len]))
}

fn topic(i: usize) -> TopicName {
    TopicName(StrBytes::from_string(format!("events.orders-{i}")))
}

/// `topics` × `partitions` of `record_bytes` each, transactional (as idempotent producers are).
fn produce(topics: usize, partitions: usize, record_bytes: usize) -> ProduceRequest {
    ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx-1"))))
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(
            (0..topics)
                .map(|t| {
                    TopicProduceData::default()
                        .with_name(topic(t))
                        .with_partition_data(
                            (0..partitions)
                                .map(|p| {
                                    PartitionProduceData::default()
                                        .with_index(p as i32)
                                        .with_records(records(record_bytes))
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}

/// A consumer's (or a follower's) fetch of `topics` × `partitions`.
fn fetch_request(topics: usize, partitions: usize) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(52_428_800)
        .with_session_epoch(-1)
        .with_topics(
            (0..topics)
                .map(|t| {
                    FetchTopic::default().with_topic(topic(t)).with_partitions(
                        (0..partitions)
                            .map(|p| {
                                FetchPartition::default()
                                    .with_partition(p as i32)
                                    .with_current_leader_epoch(3)
                                    .with_fetch_offset(1_000_000 + p as i64)
                                    .with_last_fetched_epoch(3)
                                    .with_partition_max_bytes(1_048_576)
                            })
                            .collect(),
                    )
                })
                .collect(),
        )
}

fn fetch_response(topics: usize, partitions: usize, record_bytes: usize) -> FetchResponse {
    FetchResponse::default().with_responses(
        (0..topics)
            .map(|t| {
                FetchableTopicResponse::default()
                    .with_topic(topic(t))
                    .with_partitions(
                        (0..partitions)
                            .map(|p| {
                                PartitionData::default()
                                    .with_partition_index(p as i32)
                                    .with_high_watermark(2_000_000)
                                    .with_last_stable_offset(2_000_000)
                                    .with_log_start_offset(0)
                                    .with_aborted_transactions(None)
                                    .with_records(records(record_bytes))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// Benchmarks decoding and encoding `ours` (and kafka-protocol's `K` decoded from the same
/// bytes) at `version`.
fn compare<T, K>(c: &mut Criterion, name: &str, ours: T, version: i16)
where
    T: Encodable + Decodable,
    K: KpEncodable + KpDecodable,
{
    let mut buf = BytesMut::new();
    ours.encode(&mut buf, version).unwrap();
    let bytes = buf.freeze();
    let theirs = K::decode(&mut bytes.clone(), version).unwrap();
    let mut check = BytesMut::new();
    theirs.encode(&mut check, version).unwrap();
    assert_eq!(
        check, bytes,
        "{name}: both codecs must produce the same bytes"
    );

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("decode/sluice-protocol", |b| {
        b.iter(|| T::decode(&mut bytes.clone(), version).unwrap())
    });
    group.bench_function("decode/kafka-protocol", |b| {
        b.iter(|| K::decode(&mut bytes.clone(), version).unwrap())
    });
    group.bench_function("encode/sluice-protocol", |b| {
        let mut out = BytesMut::with_capacity(bytes.len());
        b.iter(|| {
            out.clear();
            black_box(&ours).encode(&mut out, version).unwrap();
        })
    });
    group.bench_function("encode/kafka-protocol", |b| {
        let mut out = BytesMut::with_capacity(bytes.len());
        b.iter(|| {
            out.clear();
            black_box(&theirs).encode(&mut out, version).unwrap();
        })
    });
    group.finish();
}

fn produce_requests(c: &mut Criterion) {
    type K = kafka_protocol::messages::ProduceRequest;
    compare::<_, K>(
        c,
        "produce_request_v9_1x1x16KiB",
        produce(1, 1, 16 << 10),
        9,
    );
    compare::<_, K>(
        c,
        "produce_request_v9_10x10x1KiB",
        produce(10, 10, 1 << 10),
        9,
    );
    compare::<_, K>(
        c,
        "produce_request_v7_10x10x1KiB",
        produce(10, 10, 1 << 10),
        7,
    );
}

fn fetch_requests(c: &mut Criterion) {
    type K = kafka_protocol::messages::FetchRequest;
    compare::<_, K>(c, "fetch_request_v12_1x16", fetch_request(1, 16), 12);
    compare::<_, K>(c, "fetch_request_v12_20x50", fetch_request(20, 50), 12);
}

fn fetch_responses(c: &mut Criterion) {
    type K = kafka_protocol::messages::FetchResponse;
    compare::<_, K>(
        c,
        "fetch_response_v12_1x1x1MiB",
        fetch_response(1, 1, 1 << 20),
        12,
    );
    compare::<_, K>(
        c,
        "fetch_response_v12_10x10x1KiB",
        fetch_response(10, 10, 1 << 10),
        12,
    );
    compare::<_, K>(
        c,
        "fetch_response_v12_20x50x0",
        fetch_response(20, 50, 0),
        12,
    );
}

criterion_group!(benches, produce_requests, fetch_requests, fetch_responses);
criterion_main!(benches);
