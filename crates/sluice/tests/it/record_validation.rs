//! Record-level validation of produced batches (issue 13, findings 1 and 2), over a raw socket
//! against a real broker: batches whose header and CRC are right but whose records lie are refused
//! with Kafka's codes, refused records are listed one by one (KIP-467), nothing of a refused batch
//! is stored, and the partition keeps serving real clients. A lying batch already on disk is shown
//! as damaged by the console and reported by `sluice consume`, never decoded into a crash.

use std::time::Duration;

use rdkafka::Offset;
use sluice_protocol::records::testing::{batch_around, claim_count};
use sluice_protocol::records::{compress, BatchBuilder, Compression, NewRecord};

use crate::bad_input::{batch, produce_error, produce_response};
use crate::harness::{cli_fails, now_ms, Broker};
use crate::produce_consume::{produce_records, producer, read_back};

/// Kafka's error codes.
const CORRUPT_MESSAGE: i16 = 2;
const INVALID_TIMESTAMP: i16 = 32;
const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
const INVALID_RECORD: i16 = 87;

/// A valid one-record batch (keyed, so compacted topics take it) that claims 2^31-1 records,
/// with the last offset delta to match and a correct CRC: finding 1.
fn count_bomb(base_offset: i64) -> Vec<u8> {
    let mut bytes = keyed(&[Some(&b"k"[..])], now_ms());
    bytes[..8].copy_from_slice(&base_offset.to_be_bytes());
    claim_count(&mut bytes, i32::MAX);
    bytes
}

/// An uncompressed batch of records with these keys (None: no key) and value `v`.
fn keyed(keys: &[Option<&[u8]>], timestamp: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for key in keys {
        builder.append(NewRecord {
            timestamp,
            key: *key,
            value: Some(b"v"),
            headers: &[],
        });
    }
    builder.build().unwrap()
}

/// A batch whose records section is `payload` as given, labelled with codec `codec_id`, claiming
/// `count` records, under a correct CRC: finding 2's "garbage behind a valid header".
fn raw_batch(codec_id: u8, count: i32, payload: &[u8]) -> Vec<u8> {
    batch_around(i16::from(codec_id), count, payload)
}

/// Deterministic noise.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_claiming_2_pow_31_records_is_refused_and_shown_as_damaged_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    broker.create_topic("plain", 1, &[]).await;
    broker
        .create_topic("compacted", 1, &[("cleanup.policy", "compact")])
        .await;
    broker
        .create_topic("recompressed", 1, &[("compression.type", "lz4")])
        .await;
    // Before record validation, the compacted topic's key check and the recompression decoded
    // the batch with a decoder that reserved memory for the claimed count: the broker aborted.
    for topic in ["plain", "compacted", "recompressed"] {
        assert_eq!(
            produce_error(&broker, topic, count_bomb(0)),
            INVALID_RECORD,
            "{topic}"
        );
        // Nothing of it was stored, and the partition takes a good batch at offset 0.
        let good = produce_response(&broker, topic, 9, keyed(&[Some(b"k")], now_ms()));
        assert_eq!((good.error_code, good.base_offset), (0, 0), "{topic}");
    }

    // A lying batch written before validation existed: appended to the stopped broker's segment
    // right after the good record.
    assert!(broker.stop(), "clean stop");
    let segment = dir.path().join("plain-0").join(format!("{:020}.log", 0));
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    std::io::Write::write_all(&mut file, &count_bomb(1)).unwrap();
    drop(file);
    let broker = Broker::start(dir.path());

    // The console browses the partition: the good record, and the bomb listed as damaged.
    let (status, body) = broker.admin_get("/api/topics/plain/messages?partition=0&offset=0");
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 1, "{page}");
    let damaged = &page["damaged"][0];
    assert_eq!(damaged["base_offset"], 1, "{page}");
    assert_eq!(damaged["last_offset"], i64::from(i32::MAX), "{page}");
    assert!(
        damaged["reason"].as_str().unwrap().contains("2147483647"),
        "{page}"
    );

    // `sluice consume` prints the good record, then stops at the bomb with its offsets.
    let stderr = cli_fails(
        "consume",
        &broker.bootstrap(),
        &["plain", "--from", "beginning", "--exit-at-end"],
        Some(1),
    );
    assert!(
        stderr.contains("offsets 1..=2147483647 of plain-0 is damaged"),
        "{stderr}"
    );

    // The broker is still up and serving.
    assert_eq!(broker.admin_get("/health").0, 200);
    assert_eq!(
        produce_error(&broker, "compacted", keyed(&[Some(b"k")], now_ms())),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_inside_a_valid_batch_is_refused_and_the_partition_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("victim", 1, &[]).await;
    let records = batch(b"a record")[61..].to_vec();
    let garbage = noise(300);
    let cases: [(&str, Vec<u8>, i16); 6] = [
        (
            "random record bytes",
            raw_batch(0, 3, &garbage),
            INVALID_RECORD,
        ),
        ("garbage gzip", raw_batch(1, 1, &garbage), CORRUPT_MESSAGE),
        ("garbage zstd", raw_batch(4, 1, &garbage), CORRUPT_MESSAGE),
        (
            "codec id 7",
            raw_batch(7, 1, &records),
            UNSUPPORTED_COMPRESSION_TYPE,
        ),
        (
            "valid gzip of garbage records",
            raw_batch(1, 1, &compress(Compression::Gzip, &garbage).unwrap()),
            INVALID_RECORD,
        ),
        (
            "a record and trailing bytes",
            raw_batch(0, 1, &[&records[..], &[0, 0, 0]].concat()),
            INVALID_RECORD,
        ),
    ];
    for (case, bytes, code) in cases {
        let answer = produce_response(&broker, "victim", 9, bytes);
        assert_eq!(
            answer.error_code, code,
            "{case}: {:?}",
            answer.error_message
        );
        assert!(answer.error_message.is_some(), "{case}");
    }
    // zstd needs Produce v7 (Kafka's rule): v3 gets UNSUPPORTED_COMPRESSION_TYPE.
    let mut builder = BatchBuilder::new(Compression::Zstd);
    builder.append(NewRecord {
        timestamp: now_ms(),
        value: Some(b"z"),
        ..NewRecord::default()
    });
    let zstd = builder.build().unwrap();
    assert_eq!(
        produce_response(&broker, "victim", 3, zstd.clone()).error_code,
        UNSUPPORTED_COMPRESSION_TYPE
    );
    assert_eq!(produce_response(&broker, "victim", 7, zstd).error_code, 0);

    // Nothing refused was stored: a real producer's records follow the zstd one, and a real
    // consumer reads all of them from the beginning without stalling.
    let producer = producer(&broker, &[("acks", "all"), ("compression.type", "gzip")]);
    let produced = produce_records(&producer, "victim", 10, now_ms()).await;
    assert_eq!(produced[&0].len(), 10);
    let read = read_back(
        &broker,
        "victim",
        1,
        Offset::Beginning,
        11,
        Duration::from_secs(30),
    );
    let offsets: Vec<i64> = read.iter().map(|(_, offset, _)| *offset).collect();
    assert_eq!(offsets, (0..11).collect::<Vec<_>>());
    assert_eq!(read[0].2.value, b"z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_records_are_listed_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker
        .create_topic("compacted", 1, &[("cleanup.policy", "compact")])
        .await;
    broker
        .create_topic("recent", 1, &[("message.timestamp.before.max.ms", "60000")])
        .await;
    broker.create_topic("default", 1, &[]).await;

    // Keyless records on a compacted topic: INVALID_RECORD, each listed by its batch index.
    let keyless = keyed(&[Some(b"a"), None, Some(b"b"), None], now_ms());
    let answer = produce_response(&broker, "compacted", 9, keyless.clone());
    assert_eq!(answer.error_code, INVALID_RECORD);
    let indexes: Vec<i32> = answer.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(indexes, [1, 3]);
    for error in &answer.record_errors {
        let message = error.batch_index_error_message.as_ref().unwrap();
        assert!(message.contains("without a key"), "{message:?}");
    }
    assert!(answer.error_message.is_some());
    // Produce v7 has no record_errors field: the code alone.
    let old = produce_response(&broker, "compacted", 7, keyless);
    assert_eq!(old.error_code, INVALID_RECORD);
    assert!(old.record_errors.is_empty());

    // Timestamps outside message.timestamp.before.max.ms (an hour old where a minute is allowed)
    // and Kafka 4's default message.timestamp.after.max.ms (two hours ahead, one allowed).
    let hour = 3_600_000;
    let mut builder = BatchBuilder::new(Compression::Lz4);
    for ts in [now_ms(), now_ms() - hour] {
        builder.append(NewRecord {
            timestamp: ts,
            value: Some(b"v"),
            ..NewRecord::default()
        });
    }
    let answer = produce_response(&broker, "recent", 9, builder.build().unwrap());
    assert_eq!(answer.error_code, INVALID_TIMESTAMP);
    let indexes: Vec<i32> = answer.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(indexes, [1]);
    let future = keyed(&[None, None, None], now_ms() + 2 * hour);
    let answer = produce_response(&broker, "default", 9, future);
    assert_eq!(answer.error_code, INVALID_TIMESTAMP);
    assert_eq!(answer.record_errors.len(), 3);

    // Nothing of the refused batches was written: the next good batch of each topic is at 0.
    for topic in ["compacted", "recent", "default"] {
        let good = produce_response(&broker, topic, 9, keyed(&[Some(b"k")], now_ms()));
        assert_eq!((good.error_code, good.base_offset), (0, 0), "{topic}");
    }
}
