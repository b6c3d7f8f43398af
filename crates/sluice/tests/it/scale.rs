//! Scale: one broker with a 1,000-partition topic (also across clean and kill -9 restarts),
//! with 1,000 client connections open at once,
//! and with ~500 MB produced through it while its resident memory is watched. Each test is bounded
//! by deadlines and asserts correctness and memory, never speed.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use sluice_protocol::messages::metadata_request::MetadataRequestTopic;
use sluice_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use sluice_protocol::{Decodable, StrBytes};

use crate::harness::{cli_ok, now_ms, Broker};
use crate::produce_consume::{
    assert_read_back_matches, consumer, produce_records, producer, read_back,
};
use crate::wire::{connect, frame, read_response};

/// Partitions of the wide topic.
const WIDE_PARTITIONS: i32 = 1_000;
/// Client connections held open at once.
const CONNECTIONS: usize = 1_000;
/// Metadata version the raw connections ask with (flexible, topics by name).
const METADATA_VERSION: i16 = 12;
/// ApiVersions version the raw connections ask with (flexible body, v0 response header).
const API_VERSIONS_VERSION: i16 = 3;
/// Bytes produced through the broker in the memory test: 32,000 records of 16 KiB (500 MiB).
const MEMORY_RECORDS: u64 = 32_000;
const MEMORY_RECORD_SIZE: u64 = 16 * 1024;
/// How much the broker's resident set may grow while 500 MiB pass through it. Generous: the
/// point is that memory does not grow with the bytes written (a leak, or records held in memory
/// instead of the log would show hundreds of MB more).
const RSS_GROWTH_MAX_BYTES: u64 = 300 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_with_a_thousand_partitions_serves_every_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    broker.create_topic("wide", WIDE_PARTITIONS, &[]).await;

    // Metadata (through librdkafka) lists every partition, each led by this broker.
    let metadata = consumer(&broker)
        .fetch_metadata(Some("wide"), Duration::from_secs(20))
        .expect("metadata");
    let topic = &metadata.topics()[0];
    assert_eq!(topic.name(), "wide");
    assert!(topic.error().is_none());
    let mut ids: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..WIDE_PARTITIONS).collect::<Vec<_>>());
    assert!(topic.partitions().iter().all(|p| p.error().is_none()));

    // One record to every partition, its value naming the partition; read every one back.
    let mut expected: HashMap<i32, Vec<String>> = HashMap::new();
    produce_wide(&broker, 0..WIDE_PARTITIONS, "first", &mut expected).await;
    assert_wide_reads(&broker, &expected);

    // A second record to every tenth partition, then restarts: a clean stop closes 1,000 logs
    // (writing only the hundred that changed since they were opened), the start opens them all,
    // and after a kill -9 every log is recovered. Every record is there each time.
    produce_wide(
        &broker,
        (0..WIDE_PARTITIONS).step_by(10),
        "second",
        &mut expected,
    )
    .await;
    for restart in ["clean", "kill -9"] {
        if restart == "kill -9" {
            broker.kill9();
        } else {
            assert!(broker.stop(), "{restart} stop");
        }
        broker = Broker::start(dir.path());
        assert_wide_reads(&broker, &expected);
    }
}

/// Produces one record to each of `partitions` of `wide` (acks=all), its value naming the
/// partition and `what`, and adds it to `expected`.
async fn produce_wide(
    broker: &Broker,
    partitions: impl Iterator<Item = i32>,
    what: &str,
    expected: &mut HashMap<i32, Vec<String>>,
) {
    let producer = producer(broker, &[("acks", "all")]);
    let mut pending = Vec::new();
    for partition in partitions {
        let value = format!("{what} record for partition {partition}");
        let delivery = producer
            .send_result(
                FutureRecord::<(), _>::to("wide")
                    .partition(partition)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .expect("queue record");
        pending.push((partition, value, delivery));
    }
    for (partition, value, delivery) in pending {
        let delivered = tokio::time::timeout(Duration::from_secs(30), delivery)
            .await
            .expect("delivered within 30 s")
            .expect("delivery future")
            .expect("record delivered");
        let offset = expected.get(&partition).map_or(0, Vec::len) as i64;
        assert_eq!((delivered.partition, delivered.offset), (partition, offset));
        expected.entry(partition).or_default().push(value);
    }
}

/// Reads every partition of `wide` from its beginning and checks it holds what `expected` says.
fn assert_wide_reads(broker: &Broker, expected: &HashMap<i32, Vec<String>>) {
    let consumer = consumer(broker);
    let mut assignment = TopicPartitionList::new();
    for partition in 0..WIDE_PARTITIONS {
        assignment
            .add_partition_offset("wide", partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).expect("assign");
    let total: usize = expected.values().map(Vec::len).sum();
    let mut read: HashMap<i32, Vec<String>> = HashMap::new();
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count < total && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let value = String::from_utf8(message.payload().unwrap_or_default().to_vec())
                    .expect("utf-8 value");
                read.entry(message.partition()).or_default().push(value);
                count += 1;
            }
            Some(Err(error)) => panic!("consume: {error}"),
            None => {}
        }
    }
    assert_eq!(read.len(), expected.len(), "partitions read back");
    for (partition, values) in expected {
        assert_eq!(&read[partition], values, "partition {partition}");
    }
}

/// Pipelines ApiVersions and Metadata on every connection before reading any answer (correlation
/// ids from `first_id`), then checks every answer.
fn ask_everyone(streams: &mut [TcpStream], first_id: i32, port: u16) {
    for (i, stream) in streams.iter_mut().enumerate() {
        let id = first_id + i as i32 * 2;
        let mut requests = frame(
            ApiKey::ApiVersions,
            API_VERSIONS_VERSION,
            id,
            &api_versions_request(),
        );
        requests.extend(frame(
            ApiKey::Metadata,
            METADATA_VERSION,
            id + 1,
            &metadata_request("crowd"),
        ));
        stream.write_all(&requests).expect("send requests");
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        assert_answers(stream, first_id + i as i32 * 2, port);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_are_served_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // All of them come from 127.0.0.1, and so do the rdkafka clients below: one address above
    // the default max.connections.per.ip (1000).
    let broker = crate::harness::start_with_toml(dir.path(), "\"max.connections.per.ip\" = 1100\n");
    broker.create_topic("crowd", 3, &[]).await;

    // Open every connection first, then pipeline ApiVersions and Metadata on each before reading
    // any answer: the broker holds all of them, each with two requests outstanding.
    let mut streams: Vec<TcpStream> = (0..CONNECTIONS).map(|_| connect(&broker)).collect();
    ask_everyone(&mut streams, 0, broker.port);

    // With all of them open, a normal client still produces and consumes.
    let producer = producer(&broker, &[("acks", "all")]);
    let produced = produce_records(&producer, "crowd", 300, now_ms()).await;
    let read = read_back(
        &broker,
        "crowd",
        3,
        Offset::Beginning,
        300,
        Duration::from_secs(30),
    );
    assert_read_back_matches(&produced, read);

    // And every connection is still open and served.
    ask_everyone(&mut streams, 1_000_000, broker.port);
}

#[test]
fn memory_stays_bounded_while_500_mib_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let broker = Broker::start(&data_dir);
    let pid = broker_pid(&data_dir);
    // Warm up first (topic, partitions, connection buffers, the allocator's arenas), so the
    // baseline is a broker that has served this workload, not an idle one.
    let records = MEMORY_RECORDS.to_string();
    let size = MEMORY_RECORD_SIZE.to_string();
    let produce = |num_records: &str| {
        cli_ok(
            "perf",
            &broker,
            &[
                "produce",
                "--topic",
                "heavy",
                "--num-records",
                num_records,
                "--record-size",
                &size,
                "--acks",
                "1",
                "--partitions",
                "4",
            ],
        )
    };
    produce("1000");
    let before = rss_bytes(pid);

    produce(&records);
    let after_produce = rss_bytes(pid);
    let total = (MEMORY_RECORDS + 1000).to_string();
    cli_ok(
        "perf",
        &broker,
        &["consume", "--topic", "heavy", "--messages", &total],
    );
    let after_consume = rss_bytes(pid);

    let written: u64 = walk_bytes(&data_dir.join("heavy-0"))
        + (1..4)
            .map(|p| walk_bytes(&data_dir.join(format!("heavy-{p}"))))
            .sum::<u64>();
    assert!(
        written >= MEMORY_RECORDS * MEMORY_RECORD_SIZE,
        "only {written} bytes on disk"
    );
    let mib = |bytes: u64| bytes / (1024 * 1024);
    eprintln!(
        "broker RSS: {} MiB before, {} MiB after producing {} MiB, {} MiB after consuming it",
        mib(before),
        mib(after_produce),
        mib(written),
        mib(after_consume)
    );
    for (when, rss) in [("producing", after_produce), ("consuming", after_consume)] {
        assert!(
            rss.saturating_sub(before) < RSS_GROWTH_MAX_BYTES,
            "RSS grew from {} MiB to {} MiB after {when} {} MiB",
            mib(before),
            mib(rss),
            mib(written)
        );
    }
}

fn api_versions_request() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("sluice-scale-test"))
        .with_client_software_version(StrBytes::from_static_str("1"))
}

fn metadata_request(topic: &'static str) -> MetadataRequest {
    MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
        .with_name(Some(TopicName(StrBytes::from_static_str(topic))))]))
}

/// Reads the ApiVersions answer (correlation `id`) and the Metadata one (`id + 1`) and checks
/// both: no error, the APIs listed, the topic's three partitions and this broker in the metadata.
fn assert_answers(stream: &mut TcpStream, id: i32, port: u16) {
    let (correlation, mut body) = read_response(stream).expect("api versions answer");
    assert_eq!(correlation, id);
    let versions = ApiVersionsResponse::decode(&mut body, API_VERSIONS_VERSION).unwrap();
    assert_eq!(versions.error_code, 0);
    assert!(versions
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Metadata as i16 && k.max_version >= METADATA_VERSION));

    let (correlation, mut body) = read_response(stream).expect("metadata answer");
    assert_eq!(correlation, id + 1);
    // The flexible response header's (empty) tagged fields.
    let _tags = body.split_to(1);
    let metadata = MetadataResponse::decode(&mut body, METADATA_VERSION).unwrap();
    assert!(metadata.brokers.iter().any(|b| b.port == i32::from(port)));
    assert_eq!(metadata.topics.len(), 1);
    let topic = &metadata.topics[0];
    assert_eq!(topic.error_code, 0);
    assert_eq!(topic.name.as_ref().map(|n| n.0.as_str()), Some("crowd"));
    assert_eq!(topic.partitions.len(), 3);
}

/// The broker's process id: the harness keeps its `Child` private, so find the process whose
/// command line names this test's (unique) data directory.
fn broker_pid(data_dir: &Path) -> u32 {
    let wanted = data_dir.as_os_str().as_encoded_bytes();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc") {
        let entry = entry.expect("/proc entry");
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue; // exited meanwhile
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.contains(&&b"serve"[..]) && args.contains(&wanted) {
            found.push(pid);
        }
    }
    assert_eq!(
        found.len(),
        1,
        "one broker process on {data_dir:?}: {found:?}"
    );
    found[0]
}

/// The process's resident set size, from `VmRSS` in `/proc/<pid>/status`.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("broker status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"));
    kib * 1024
}

/// Bytes of the segment (`.log`) files under `dir`; indexes may be preallocated, so they are left
/// out.
fn walk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|entry| {
            let entry = entry.expect("dir entry");
            let meta = entry.metadata().expect("metadata");
            let is_log = entry.path().extension().is_some_and(|e| e == "log");
            match (meta.is_dir(), is_log) {
                (true, _) => walk_bytes(&entry.path()),
                (false, true) => meta.len(),
                (false, false) => 0,
            }
        })
        .sum()
}
