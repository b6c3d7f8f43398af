//! Durability under kill -9: an idempotent acks=all producer keeps writing while the broker is killed
//! and restarted three times; every acknowledged record is read back exactly once, in order per
//! partition. And a damaged segment tail is truncated at start.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::producer::FutureRecord;
use rdkafka::Offset;

use crate::harness::Broker;
use crate::produce_consume::{producer, read_back};

const TOTAL: usize = 20_000;
const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_records_survive_kill_9_restarts_exactly_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    let port = broker.port;
    broker.create_topic("crash", PARTITIONS, &[]).await;
    let producer = producer(
        &broker,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "2"),
            ("message.timeout.ms", "120000"),
            ("reconnect.backoff.ms", "50"),
            ("reconnect.backoff.max.ms", "200"),
        ],
    );
    let acked: Arc<Mutex<Vec<(i32, i64, usize)>>> = Arc::default();
    let failed: Arc<Mutex<usize>> = Arc::default();
    let writer = {
        let acked = acked.clone();
        let failed = failed.clone();
        tokio::spawn(async move {
            let mut in_flight = Vec::new();
            for i in 0..TOTAL {
                let key = format!("k{}", i % 31);
                let value = i.to_string();
                let delivery = producer
                    .send_result(FutureRecord::to("crash").key(&key).payload(&value))
                    .map_err(|(e, _)| e)
                    .expect("queue");
                in_flight.push((i, delivery));
                // Pace the producer so the kills land mid-stream.
                if i % 200 == 199 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            for (i, delivery) in in_flight {
                match delivery.await {
                    Ok(Ok(d)) => acked.lock().unwrap().push((d.partition, d.offset, i)),
                    _ => *failed.lock().unwrap() += 1,
                }
            }
        })
    };
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        broker.kill9();
        tokio::time::sleep(Duration::from_millis(100 * (round + 1))).await;
        broker = Broker::start_on(dir.path(), port, &[]);
    }
    tokio::time::timeout(Duration::from_secs(240), writer)
        .await
        .expect("producer finished in time")
        .unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > TOTAL / 2,
        "most records acknowledged, got {}",
        acked.len()
    );

    let read = read_back(
        &broker,
        "crash",
        PARTITIONS,
        Offset::Beginning,
        TOTAL,
        Duration::from_secs(60),
    );
    let mut seen = HashSet::new();
    let mut last_in_partition: HashMap<i32, usize> = HashMap::new();
    let mut at: HashMap<(i32, i64), usize> = HashMap::new();
    for (partition, offset, record) in &read {
        let i: usize = String::from_utf8_lossy(&record.value)
            .parse()
            .expect("numeric value");
        assert!(seen.insert(i), "record {i} read twice");
        if let Some(prev) = last_in_partition.insert(*partition, i) {
            assert!(prev < i, "partition {partition}: {i} after {prev}");
        }
        at.insert((*partition, *offset), i);
    }
    for (partition, offset, i) in &acked {
        assert_eq!(
            at.get(&(*partition, *offset)),
            Some(i),
            "acked record {i} at {partition}/{offset} not read back there"
        );
    }
    eprintln!(
        "crash test: {} acked, {} failed, {} read back",
        acked.len(),
        failed.lock().unwrap(),
        read.len()
    );
}

fn newest_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a segment file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_last_batch_is_truncated_on_start() {
    for clean_stop in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut broker = Broker::start(dir.path());
        broker.create_topic("torn", 1, &[]).await;
        let first = producer(&broker, &[("acks", "all")]);
        crate::produce_consume::produce_records(&first, "torn", 100, crate::harness::now_ms())
            .await;
        drop(first);
        if clean_stop {
            assert!(broker.stop(), "clean stop");
        } else {
            broker.kill9();
        }
        let segment = newest_segment(&dir.path().join("torn-0"));
        let good_len = std::fs::metadata(&segment).unwrap().len();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&segment)
            .unwrap();
        file.write_all(&[0xAB; 777]).unwrap();
        drop(file);

        let broker = Broker::start(dir.path());
        let read = read_back(
            &broker,
            "torn",
            1,
            Offset::Beginning,
            100,
            Duration::from_secs(30),
        );
        assert_eq!(
            read.len(),
            100,
            "clean_stop={clean_stop}; broker log:\n{}",
            broker.stderr()
        );
        // New appends land after the good data.
        let producer = producer(&broker, &[("acks", "all")]);
        let more =
            crate::produce_consume::produce_records(&producer, "torn", 1, crate::harness::now_ms())
                .await;
        assert_eq!(more[&0][0].0, 100);
        let log = broker.stderr();
        assert!(
            log.contains("truncat"),
            "clean_stop={clean_stop}: no truncation line in the log:\n{log}"
        );
        assert!(std::fs::metadata(&segment).unwrap().len() > good_len);
    }
}
