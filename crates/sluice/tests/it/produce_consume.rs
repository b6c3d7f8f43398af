//! Round trips through librdkafka (the `rdkafka` crate): keys, headers, timestamps, every codec,
//! seeks by offset and timestamp, watermarks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::closing::Closing;
use crate::harness::Broker;

/// A record as produced, for comparison with what is read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sent {
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
    pub(crate) header: Vec<u8>,
    pub(crate) timestamp: i64,
}

pub(crate) fn producer(broker: &Broker, extra: &[(&str, &str)]) -> FutureProducer {
    let mut config = broker.client_config();
    config
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().expect("producer")
}

pub(crate) fn consumer(broker: &Broker) -> Closing {
    Closing::new(
        broker
            .client_config()
            .set("group.id", "unused-assign-only")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .expect("consumer"),
    )
}

/// Reads `expected` records from the given partitions starting at `from`, bounded by `timeout`.
/// Returns (partition, offset, record) in arrival order.
pub(crate) fn read_back(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    from: Offset,
    expected: usize,
    timeout: Duration,
) -> Vec<(i32, i64, Sent)> {
    let consumer = consumer(broker);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, from).unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(expected);
    while out.len() < expected && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let header = m
                    .headers()
                    .and_then(|h| {
                        h.iter()
                            .find(|h| h.key == "h")
                            .and_then(|h| h.value.map(|v| v.to_vec()))
                    })
                    .unwrap_or_default();
                out.push((
                    m.partition(),
                    m.offset(),
                    Sent {
                        key: m.key().unwrap_or_default().to_vec(),
                        value: m.payload().unwrap_or_default().to_vec(),
                        header,
                        timestamp: m.timestamp().to_millis().unwrap_or(-1),
                    },
                ));
            }
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    out
}

/// Produces `count` records with keys, a header and explicit timestamps; returns them by partition
/// with their offsets.
pub(crate) async fn produce_records(
    producer: &FutureProducer,
    topic: &str,
    count: usize,
    base_timestamp: i64,
) -> HashMap<i32, Vec<(i64, Sent)>> {
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        let sent = Sent {
            key: format!("key-{}", i % 97).into_bytes(),
            value: format!("value-{i}-{}", "x".repeat(i % 50)).into_bytes(),
            header: format!("h{i}").into_bytes(),
            timestamp: base_timestamp + i as i64,
        };
        let record = FutureRecord::to(topic)
            .key(&sent.key)
            .payload(&sent.value)
            .timestamp(sent.timestamp)
            .headers(OwnedHeaders::new().insert(Header {
                key: "h",
                value: Some(&sent.header),
            }));
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .expect("queue record");
        pending.push((delivery, sent));
    }
    let mut by_partition: HashMap<i32, Vec<(i64, Sent)>> = HashMap::new();
    for (delivery, sent) in pending {
        let delivered = delivery
            .await
            .expect("delivery future")
            .expect("record delivered");
        by_partition
            .entry(delivered.partition)
            .or_default()
            .push((delivered.offset, sent));
    }
    for records in by_partition.values_mut() {
        records.sort_by_key(|(offset, _)| *offset);
    }
    by_partition
}

pub(crate) fn assert_read_back_matches(
    produced: &HashMap<i32, Vec<(i64, Sent)>>,
    read: Vec<(i32, i64, Sent)>,
) {
    let mut got: HashMap<i32, Vec<(i64, Sent)>> = HashMap::new();
    for (p, o, s) in read {
        got.entry(p).or_default().push((o, s));
    }
    for (partition, records) in produced {
        let mine = got.remove(partition).unwrap_or_default();
        assert_eq!(mine.len(), records.len(), "partition {partition} count");
        for (a, b) in records.iter().zip(mine.iter()) {
            assert_eq!(a, b, "partition {partition}");
        }
    }
    assert!(
        got.values().all(|v| v.is_empty()),
        "records from unexpected partitions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_records_acks_all_read_back_identical() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("big", 3, &[]).await;
    let producer = producer(&broker, &[("acks", "all"), ("batch.num.messages", "10000")]);
    let count = 100_000;
    let produced = produce_records(&producer, "big", count, crate::harness::now_ms()).await;
    assert_eq!(produced.len(), 3, "keys spread over all partitions");
    for records in produced.values() {
        // Offsets are dense from 0 within each partition.
        for (i, (offset, _)) in records.iter().enumerate() {
            assert_eq!(*offset, i as i64);
        }
    }
    let read = read_back(
        &broker,
        "big",
        3,
        Offset::Beginning,
        count,
        Duration::from_secs(120),
    );
    assert_eq!(read.len(), count);
    assert_read_back_matches(&produced, read);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    for codec in ["gzip", "snappy", "lz4", "zstd", "none"] {
        let topic = format!("codec-{codec}");
        broker.create_topic(&topic, 2, &[]).await;
        let producer = producer(&broker, &[("compression.codec", codec), ("acks", "1")]);
        let produced = produce_records(&producer, &topic, 2000, crate::harness::now_ms()).await;
        let read = read_back(
            &broker,
            &topic,
            2,
            Offset::Beginning,
            2000,
            Duration::from_secs(60),
        );
        assert_eq!(read.len(), 2000, "{codec}");
        assert_read_back_matches(&produced, read);
        // offsets_for_times lands on the exact record, also inside compressed batches.
        let consumer = consumer(&broker);
        for (partition, records) in &produced {
            for (offset, sent) in [&records[records.len() / 2 + 1], &records[records.len() - 1]] {
                let mut wanted = TopicPartitionList::new();
                wanted
                    .add_partition_offset(&topic, *partition, Offset::Offset(sent.timestamp))
                    .unwrap();
                let found = consumer
                    .offsets_for_times(wanted, Duration::from_secs(10))
                    .expect("offsets_for_times");
                let found = found.find_partition(&topic, *partition).unwrap().offset();
                assert_eq!(
                    found,
                    Offset::Offset(*offset),
                    "{codec} partition {partition}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_by_offset_and_timestamp_and_watermarks() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("seek", 1, &[]).await;
    // One record per batch, so timestamps map to exact offsets.
    let producer = producer(
        &broker,
        &[
            ("linger.ms", "0"),
            ("batch.num.messages", "1"),
            ("max.in.flight", "1"),
        ],
    );
    let base = 1_650_000_000_000;
    let mut produced = Vec::new();
    for i in 0..50 {
        let records = produce_records(&producer, "seek", 1, base + i * 1000).await;
        produced.push(records[&0][0].clone());
    }
    let consumer = consumer(&broker);
    let (low, high) = consumer
        .fetch_watermarks("seek", 0, Duration::from_secs(10))
        .expect("watermarks");
    assert_eq!((low, high), (0, 50));

    // By offset.
    let read = read_back(
        &broker,
        "seek",
        1,
        Offset::Offset(30),
        20,
        Duration::from_secs(30),
    );
    assert_eq!(read.len(), 20);
    assert_eq!(read[0].1, 30);
    assert_eq!(read[0].2, produced[30].1);

    // By timestamp: the first record at or after base + 12.5 s is offset 13.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("seek", 0, Offset::Offset(base + 12_500))
        .unwrap();
    let found = consumer
        .offsets_for_times(tpl, Duration::from_secs(10))
        .expect("offsets_for_times");
    let elem = found.find_partition("seek", 0).unwrap();
    assert_eq!(elem.offset(), Offset::Offset(13));
    // A timestamp after the last record: end of log.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("seek", 0, Offset::Offset(base + 10_000_000))
        .unwrap();
    let found = consumer
        .offsets_for_times(tpl, Duration::from_secs(10))
        .expect("offsets_for_times");
    assert_eq!(
        found.find_partition("seek", 0).unwrap().offset(),
        Offset::End
    );

    // Out of range: a fetch past the end answers OFFSET_OUT_OF_RANGE and auto.offset.reset applies.
    let consumer: Closing = Closing::new(
        broker
            .client_config()
            .set("group.id", "unused")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap(),
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("seek", 0, Offset::Offset(500))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        assert!(Instant::now() < deadline, "no record after offset reset");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            break m.offset();
        }
    };
    assert_eq!(first, 0, "reset to earliest after OFFSET_OUT_OF_RANGE");
}
