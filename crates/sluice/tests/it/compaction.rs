//! A compacted topic through librdkafka: keyed updates and deletes, compressed, are compacted by
//! the background cleaner, and a new consumer reading from the beginning rebuilds the latest
//! value of every key.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::closing::Closing;
use crate::harness::{now_ms, Broker};
use crate::produce_consume::producer;

/// Reads the whole partition from the beginning: (offset, key, value) in order.
fn read_all(broker: &Broker, topic: &str) -> Vec<(i64, Vec<u8>, Option<Vec<u8>>)> {
    let consumer: Closing = Closing::new(
        broker
            .client_config()
            .set("group.id", "compaction-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap(),
    );
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.last().is_none_or(|r: &(i64, _, _)| r.0 < high - 1) && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            out.push((
                m.offset(),
                m.key().unwrap_or_default().to_vec(),
                m.payload().map(<[u8]>::to_vec),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_keeps_the_latest_value_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let broker = crate::harness::start_with_toml(dir.path(), "\"log.cleaner.backoff.ms\" = 200\n");
    broker
        .create_topic(
            "latest",
            1,
            &[
                ("cleanup.policy", "compact"),
                ("segment.bytes", "4096"),
                ("min.cleanable.dirty.ratio", "0.01"),
                ("delete.retention.ms", "0"),
            ],
        )
        .await;
    let producer = producer(&broker, &[("compression.codec", "lz4"), ("acks", "all")]);
    let mut latest: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut produced = 0;
    for round in 0..40 {
        for key in 0..25 {
            let k = format!("key-{key}").into_bytes();
            let delete = key % 7 == 0 && round == 39;
            let v = format!("value-{key}-{round}-{}", "x".repeat(30)).into_bytes();
            let record = if delete {
                FutureRecord::<[u8], [u8]>::to("latest")
                    .key(&k[..])
                    .timestamp(now_ms())
            } else {
                FutureRecord::to("latest")
                    .key(&k[..])
                    .payload(&v[..])
                    .timestamp(now_ms())
            };
            producer
                .send(record, Duration::from_secs(10))
                .await
                .expect("delivered");
            produced += 1;
            if delete {
                latest.remove(&k);
            } else {
                latest.insert(k, v);
            }
        }
    }
    // The cleaner runs in the background: wait until it has removed superseded records.
    let deadline = Instant::now() + Duration::from_secs(60);
    let records = loop {
        let records = read_all(&broker, "latest");
        if records.len() < produced / 2 || Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        records.len() < produced / 2,
        "{} of {produced} records left: nothing was compacted",
        records.len()
    );
    assert!(
        records.windows(2).all(|w| w[0].0 < w[1].0),
        "offsets in order"
    );
    let mut rebuilt = BTreeMap::new();
    for (_, key, value) in &records {
        match value {
            Some(v) => rebuilt.insert(key.clone(), v.clone()),
            None => rebuilt.remove(key),
        };
    }
    assert_eq!(rebuilt, latest);
    assert!(broker.stderr().contains("log cleaned"));
}
