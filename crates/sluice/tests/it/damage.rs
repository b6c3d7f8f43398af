//! Damaged files on a single node (issue 13, finding 5): a damaged batch in a closed segment
//! takes its partition offline — KAFKA_STORAGE_ERROR for every request, one ERROR line naming
//! the file, byte position and offsets, a metric, DescribeLogDirs and the console showing it,
//! and every file kept — while the rest of the broker keeps working; a damaged log-start
//! checkpoint hides nothing; an unreadable segment is a storage error. Then `sluice log verify`
//! and `sluice log repair` on those files.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use sluice_log::testing::{split_batches, BatchBuilder};
use sluice_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use sluice_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use sluice_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use sluice_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use sluice_protocol::messages::{
    ApiKey, BrokerId, DescribeLogDirsRequest, DescribeLogDirsResponse, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, ProduceRequest, ProduceResponse, TopicName,
};
use sluice_protocol::StrBytes;

use crate::harness::{now_ms, Broker};
use crate::wire::{call, connect};

/// Kafka's KAFKA_STORAGE_ERROR.
const KAFKA_STORAGE_ERROR: i16 = 56;
const TOPIC: &str = "orders";
/// Small segments, so the topic has many.
const SEGMENT_BYTES: &str = "16384";

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// Produces one batch of `records` records (acks=1); returns (error code, base offset).
fn produce(stream: &mut TcpStream, topic: &str, records: usize) -> (i16, i64) {
    let mut batch = BatchBuilder::new();
    for i in 0..records {
        batch = batch.record(Some(b"k"), format!("value {i:0>90}").as_bytes(), now_ms());
    }
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch.build()))])]);
    let response: ProduceResponse = call(stream, ApiKey::Produce, 9, &request);
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// Fetches from `offset`: (error code, records).
fn fetch(stream: &mut TcpStream, topic: &str, offset: i64) -> (i16, Bytes) {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let response: FetchResponse = call(stream, ApiKey::Fetch, 12, &request);
    let p = &response.responses[0].partitions[0];
    (p.error_code, p.records.clone().unwrap_or_default())
}

/// ListOffsets earliest (-2) or latest (-1): (error code, offset).
fn list_offset(stream: &mut TcpStream, topic: &str, timestamp: i64) -> (i16, i64) {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
    let response: ListOffsetsResponse = call(stream, ApiKey::ListOffsets, 7, &request);
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.offset)
}

/// Every batch from `offset` to the log end: (base offset, last offset).
fn fetch_all(stream: &mut TcpStream, topic: &str, mut offset: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    loop {
        let (error, records) = fetch(stream, topic, offset);
        assert_eq!(error, 0, "fetch at {offset}");
        let batches = split_batches(&records);
        let Some(last) = batches.last() else {
            return out;
        };
        offset = last.1 + 1;
        out.extend(batches.iter().map(|b| (b.0, b.1)));
    }
}

/// The `.log` files of a partition directory, oldest first.
pub(crate) fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// Every file of a directory with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// A stopped broker's data dir holding `orders` with at least 11 segments (and an intact
/// `other`), whose third segment's last batch has a damaged length field: the damaged segment,
/// the damaged batch's byte position and base offset, and the batches produced.
pub(crate) struct Damaged {
    pub(crate) segment: PathBuf,
    pub(crate) position: u64,
    pub(crate) first_offset: i64,
    pub(crate) batches: Vec<(i64, i64)>,
}

pub(crate) async fn damaged_data_dir(data: &Path) -> Damaged {
    let mut broker = Broker::start(data);
    broker
        .create_topic(TOPIC, 1, &[("segment.bytes", SEGMENT_BYTES)])
        .await;
    broker.create_topic("other", 1, &[]).await;
    let mut stream = connect(&broker);
    let mut batches = Vec::new();
    while segments(&data.join("orders-0")).len() < 11 {
        let (error, base) = produce(&mut stream, TOPIC, 10);
        assert_eq!(error, 0);
        batches.push((base, base + 9));
    }
    // The newest segment holds a few batches too.
    for _ in 0..5 {
        let (error, base) = produce(&mut stream, TOPIC, 10);
        assert_eq!(error, 0);
        batches.push((base, base + 9));
    }
    assert_eq!(produce(&mut stream, "other", 3).0, 0);
    drop(stream);
    assert!(broker.stop(), "clean stop");
    let segment = segments(&data.join("orders-0"))[2].clone();
    let bytes = std::fs::read(&segment).unwrap();
    let mut position = 0u64;
    let mut last = (0u64, 0i64);
    for (base, _, batch) in split_batches(&bytes) {
        last = (position, base);
        position += batch.len() as u64;
    }
    // The length field of the segment's last batch claims far more than the file holds.
    let mut damaged = bytes.clone();
    let at = last.0 as usize + 8;
    damaged[at..at + 4].copy_from_slice(&0x0100_0000i32.to_be_bytes());
    std::fs::write(&segment, damaged).unwrap();
    Damaged {
        segment,
        position: last.0,
        first_offset: last.1,
        batches,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_closed_segment_takes_its_partition_offline_and_keeps_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let damaged = damaged_data_dir(&data).await;
    let partition_dir = data.join("orders-0");
    let before = files(&partition_dir);
    assert!(segments(&partition_dir).len() >= 11);

    let broker = Broker::start(&data);
    let mut stream = connect(&broker);
    // Every request for the partition answers KAFKA_STORAGE_ERROR; nothing is served short.
    assert_eq!(produce(&mut stream, TOPIC, 1).0, KAFKA_STORAGE_ERROR);
    assert_eq!(fetch(&mut stream, TOPIC, 0).0, KAFKA_STORAGE_ERROR);
    assert_eq!(list_offset(&mut stream, TOPIC, -1).0, KAFKA_STORAGE_ERROR);
    assert_eq!(list_offset(&mut stream, TOPIC, -2).0, KAFKA_STORAGE_ERROR);
    // The rest of the broker works.
    assert_eq!(produce(&mut stream, "other", 2).0, 0);
    assert_eq!(fetch_all(&mut stream, "other", 0), vec![(0, 2), (3, 4)]);

    // One ERROR line names the file, the byte position and the offsets.
    let stderr = broker.stderr();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("orders"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let file_name = damaged.segment.file_name().unwrap().to_str().unwrap();
    for needle in [
        file_name.to_string(),
        format!("at byte {}", damaged.position),
        format!("offsets {}", damaged.first_offset),
        "KAFKA_STORAGE_ERROR".to_string(),
    ] {
        assert!(
            errors[0].contains(&needle),
            "{needle:?} not in {}",
            errors[0]
        );
    }
    assert!(!stderr.contains("truncating"), "{stderr}");

    // A metric counts it.
    let (status, metrics) = broker.admin_get("/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("sluice_offline_partitions 1"), "{metrics}");
    assert!(metrics.contains("sluice_damaged_logs_total 1"), "{metrics}");

    // DescribeLogDirs reports the partition's directory with the storage error.
    let request =
        DescribeLogDirsRequest::default()
            .with_topics(Some(vec![DescribableLogDirTopic::default()
                .with_topic(name(TOPIC))
                .with_partitions(vec![0])]));
    let dirs: DescribeLogDirsResponse = call(&mut stream, ApiKey::DescribeLogDirs, 4, &request);
    let offline: Vec<_> = dirs
        .results
        .iter()
        .filter(|r| r.error_code == KAFKA_STORAGE_ERROR)
        .collect();
    assert_eq!(offline.len(), 1);
    assert!(
        offline[0].log_dir.ends_with("orders-0"),
        "{:?}",
        offline[0].log_dir
    );
    assert_eq!(offline[0].topics[0].partitions[0].partition_index, 0);
    assert!(offline[0].topics[0].partitions[0].partition_size > 0);

    // The console shows it.
    let (status, body) = broker.admin_get("/api/topics/orders");
    assert_eq!(status, 200, "{body}");
    let topic: serde_json::Value = serde_json::from_str(&body).unwrap();
    let reason = topic["partitions"][0]["offline"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains(file_name), "{body}");
    let (_, body) = broker.admin_get("/api/overview");
    let overview: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(overview["offline_partitions"], 1, "{body}");

    // No file was truncated, deleted or rewritten.
    assert_eq!(files(&partition_dir), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_log_start_checkpoint_hides_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data);
    broker.create_topic(TOPIC, 1, &[]).await;
    let mut stream = connect(&broker);
    for _ in 0..5 {
        assert_eq!(produce(&mut stream, TOPIC, 4).0, 0);
    }
    drop(stream);
    assert!(broker.stop());
    for garbage in ["999999999", "\u{1}\u{2}garbage", "7"] {
        std::fs::write(data.join("orders-0/log-start-offset"), garbage).unwrap();
        let mut broker = Broker::start(&data);
        let mut stream = connect(&broker);
        let expected_start = if garbage == "7" { 7 } else { 0 };
        assert_eq!(
            list_offset(&mut stream, TOPIC, -2),
            (0, expected_start),
            "{garbage:?}"
        );
        assert_eq!(list_offset(&mut stream, TOPIC, -1), (0, 20));
        let fetched = fetch_all(&mut stream, TOPIC, expected_start);
        assert_eq!(fetched.last().map(|b| b.1), Some(19), "{garbage:?}");
        drop(stream);
        assert!(broker.stop());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_segment_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data);
    broker
        .create_topic(TOPIC, 1, &[("segment.bytes", SEGMENT_BYTES)])
        .await;
    let mut stream = connect(&broker);
    while segments(&data.join("orders-0")).len() < 3 {
        assert_eq!(produce(&mut stream, TOPIC, 10).0, 0);
    }
    drop(stream);
    assert!(broker.stop());
    // A segment that cannot be read (here a directory in its place: the tests run as root,
    // which file permissions do not stop).
    let victim = &segments(&data.join("orders-0"))[1];
    std::fs::remove_file(victim).unwrap();
    std::fs::create_dir(victim).unwrap();
    let broker = Broker::start(&data);
    let mut stream = connect(&broker);
    assert_eq!(produce(&mut stream, TOPIC, 1).0, KAFKA_STORAGE_ERROR);
    assert_eq!(fetch(&mut stream, TOPIC, 0).0, KAFKA_STORAGE_ERROR);
    assert_eq!(list_offset(&mut stream, TOPIC, -1).0, KAFKA_STORAGE_ERROR);
}

/// Runs `sluice log ARGS`.
fn sluice_log(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("log")
        .args(args)
        .output()
        .expect("run sluice log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_verify_finds_the_damage_and_log_repair_cuts_below_it_knowingly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let damaged = damaged_data_dir(&data).await;
    let partition_dir = data.join("orders-0");
    let data_arg = data.to_str().unwrap();
    let partition_arg = partition_dir.to_str().unwrap();
    let first = damaged.first_offset;
    let first_arg = first.to_string();
    let file_name = damaged.segment.file_name().unwrap().to_str().unwrap();

    // Beside a running broker (the partition is offline there), verify reads without the lock.
    let mut broker = Broker::start(&data);
    let out = sluice_log(&["verify", data_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.starts_with("error: 1 of 2 partitions"), "{stderr}");
    assert!(stdout.contains("a broker is running"), "{stdout}");
    assert!(
        stdout.contains("orders-0: ") && stdout.contains("DAMAGED"),
        "{stdout}"
    );
    assert!(
        stdout.contains("other-0: ") && stdout.contains(": ok"),
        "{stdout}"
    );
    let damage_lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("damaged batch:"))
        .collect();
    assert_eq!(damage_lines.len(), 1, "one damaged range: {stdout}");
    let damage_line = damage_lines[0];
    for needle in [
        file_name.to_string(),
        format!("at byte {}", damaged.position),
        format!("offsets {first}.."),
        // The length claims more than the file holds: a cut file and a damaged length look
        // the same when nothing valid follows in the file.
        "truncated".to_string(),
    ] {
        assert!(
            damage_line.contains(&needle),
            "{needle:?} not in {damage_line}"
        );
    }
    assert!(
        stdout.contains(&format!(
            "sluice log repair {partition_arg} --truncate-at {first}"
        )),
        "{stdout}"
    );
    let out = sluice_log(&["verify", partition_arg, "--output", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["damaged_partitions"], 1);
    let partition = &report["partitions"][0];
    assert_eq!(partition["damage"][0]["position"], damaged.position);
    assert_eq!(partition["damage"][0]["first_offset"], first);
    assert_eq!(partition["damage"][0]["kind"], "truncated");
    assert!(partition["segments"].as_u64().unwrap() >= 11);

    // Repair refuses to touch a running broker's files, even for a dry run.
    let out = sluice_log(&["repair", partition_arg, "--truncate-at", &first_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("a broker is running"), "{stderr}");
    assert!(broker.stop());

    // A dry run says what would go and changes nothing.
    let before = files(&partition_dir);
    let out = sluice_log(&[
        "repair",
        partition_arg,
        "--truncate-at",
        &first_arg,
        "--output",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let removed_batches = damaged.batches.iter().filter(|b| b.0 > first).count() as u64;
    assert_eq!(plan["executed"], false);
    assert_eq!(plan["new_end"], first);
    assert_eq!(plan["batches"], removed_batches);
    assert_eq!(plan["records"], removed_batches * 10);
    assert!(plan["damaged_bytes"].as_u64().unwrap() > 0);
    assert_eq!(files(&partition_dir), before);
    let out = sluice_log(&["repair", partition_arg, "--truncate-at", &first_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Dry run: nothing changed"), "{stdout}");
    assert!(
        stdout.contains(&format!("{} records", removed_batches * 10)),
        "{stdout}"
    );

    // Below the damage's start, the damage would remain: refused.
    let inside = (first + 5).to_string();
    let out = sluice_log(&["repair", partition_arg, "--truncate-at", &inside]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("truncate at {first} or lower")),
        "{stderr}"
    );

    // Executed: the removed data is kept in the backup, and the log verifies and opens cleanly.
    let backup = dir.path().join("backup");
    let out = sluice_log(&[
        "repair",
        partition_arg,
        "--truncate-at",
        &first_arg,
        "--backup-dir",
        backup.to_str().unwrap(),
        "--execute",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Done"));
    assert_eq!(
        std::fs::read(backup.join(file_name)).unwrap(),
        before[&damaged.segment],
        "the damaged segment is kept whole"
    );
    assert!(backup.join("REPAIR.txt").exists());
    let out = sluice_log(&["verify", data_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let broker = Broker::start(&data);
    let mut stream = connect(&broker);
    assert_eq!(list_offset(&mut stream, TOPIC, -1), (0, first));
    let kept: Vec<(i64, i64)> = damaged
        .batches
        .iter()
        .copied()
        .filter(|b| b.0 < first)
        .collect();
    assert_eq!(fetch_all(&mut stream, TOPIC, 0), kept);
    assert_eq!(produce(&mut stream, TOPIC, 1), (0, first));
    assert!(!broker.stderr().contains("ERROR"), "{}", broker.stderr());
}
