//! Storage behaviour seen from outside: Fetch long polls, min/max bytes and out-of-range answers,
//! acks=0, and retention of whole segments by size and by time through topic configs.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::consumer::Consumer;
use rdkafka::Offset;
use sluice_log::testing::{split_batches, BatchBuilder};
use sluice_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use sluice_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use sluice_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, FetchRequest, FetchResponse, ProduceRequest, TopicName,
};
use sluice_protocol::{Decodable, StrBytes};

use crate::harness::{now_ms, Broker};
use crate::produce_consume::{consumer, produce_records, producer, read_back};
use crate::wire::{connect, frame, read_response};

const FETCH_VERSION: i16 = 12;
const OFFSET_OUT_OF_RANGE: i16 = 1;

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// Produces one batch of `records` records; with acks=0 no response is read.
fn produce_batch(stream: &mut TcpStream, topic: &str, records: usize, acks: i16, correlation: i32) {
    let mut batch = BatchBuilder::new();
    for i in 0..records {
        batch = batch.record(Some(b"k"), format!("value {i}").as_bytes(), now_ms());
    }
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch.build()))])]);
    stream
        .write_all(&frame(ApiKey::Produce, 9, correlation, &request))
        .unwrap();
    if acks != 0 {
        let (got, _) = read_response(stream).expect("produce response");
        assert_eq!(got, correlation);
    }
}

struct Fetched {
    error: i16,
    high_watermark: i64,
    records: Bytes,
}

fn fetch(
    stream: &mut TcpStream,
    topic: &str,
    offset: i64,
    max_wait_ms: i32,
    max_bytes: i32,
    partition_max_bytes: i32,
) -> Fetched {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(partition_max_bytes)])]);
    stream
        .write_all(&frame(ApiKey::Fetch, FETCH_VERSION, 99, &request))
        .unwrap();
    let (correlation, mut body) = read_response(stream).expect("fetch response");
    assert_eq!(correlation, 99);
    let _tags = body.split_to(1); // flexible response header
    let response = FetchResponse::decode(&mut body, FETCH_VERSION).unwrap();
    let partition = &response.responses[0].partitions[0];
    Fetched {
        error: partition.error_code,
        high_watermark: partition.high_watermark,
        records: partition.records.clone().unwrap_or_default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_long_polls_and_honors_byte_limits() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("poll", 1, &[]).await;

    // A long poll on an empty partition is answered by the append that arrives meanwhile, long
    // before its 20 s max_wait (the socket gives up after 10 s).
    let port = broker.port;
    let waiter = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        fetch(&mut stream, "poll", 0, 20_000, 1 << 20, 1 << 20)
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut stream = connect(&broker);
    produce_batch(&mut stream, "poll", 5, -1, 1);
    let woken = waiter.join().expect("long poll answered");
    assert_eq!(woken.error, 0);
    assert_eq!(split_batches(&woken.records).len(), 1);
    assert_eq!(woken.high_watermark, 5);

    // acks=0: no response at all; the next response on the connection is for the next request.
    produce_batch(&mut stream, "poll", 3, 0, 2);
    stream
        .write_all(&frame(
            ApiKey::ApiVersions,
            3,
            3,
            &ApiVersionsRequest::default(),
        ))
        .unwrap();
    let (correlation, _) = read_response(&mut stream).expect("api versions");
    assert_eq!(correlation, 3);
    produce_batch(&mut stream, "poll", 2, 1, 4);

    // Three batches now: [0,4], [5,7], [8,9].
    let all = fetch(&mut stream, "poll", 0, 0, 1 << 20, 1 << 20);
    let batches = split_batches(&all.records);
    assert_eq!(
        batches.iter().map(|b| (b.0, b.1)).collect::<Vec<_>>(),
        vec![(0, 4), (5, 7), (8, 9)]
    );
    // Byte limits below one batch still return the first whole batch (KIP-74), and only it.
    for (max, partition_max) in [(1 << 20, 1), (1, 1 << 20)] {
        let one = fetch(&mut stream, "poll", 5, 0, max, partition_max);
        let got = split_batches(&one.records);
        assert_eq!(
            got.len(),
            1,
            "max_bytes {max}, partition_max_bytes {partition_max}"
        );
        assert_eq!((got[0].0, got[0].1), (5, 7));
    }
    // A limit of two batches' size returns exactly two.
    let two = (batches[0].2.len() + batches[1].2.len()) as i32;
    let got = fetch(&mut stream, "poll", 0, 0, 1 << 20, two);
    assert_eq!(split_batches(&got.records).len(), 2);
    // At the log end: an empty answer after max_wait; past it: OFFSET_OUT_OF_RANGE.
    let started = Instant::now();
    let at_end = fetch(&mut stream, "poll", 10, 200, 1 << 20, 1 << 20);
    assert_eq!(at_end.error, 0);
    assert!(at_end.records.is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        fetch(&mut stream, "poll", 11, 0, 1 << 20, 1 << 20).error,
        OFFSET_OUT_OF_RANGE
    );
    assert_eq!(
        fetch(&mut stream, "poll", -5, 0, 1 << 20, 1 << 20).error,
        OFFSET_OUT_OF_RANGE
    );
}

/// Polls the low watermark until it passes zero (retention ran) or 30 s pass.
fn wait_for_log_start(broker: &Broker, topic: &str) -> (i64, i64) {
    let consumer = consumer(broker);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (low, high) = consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .expect("watermarks");
        if low > 0 || Instant::now() > deadline {
            return (low, high);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_segments_by_size_and_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker =
        crate::harness::start_with_toml(dir.path(), "\"log.retention.check.interval.ms\" = 200\n");
    let small_segments = [("segment.bytes", "16384")];
    broker
        .create_topic(
            "by-size",
            1,
            &[small_segments[0], ("retention.bytes", "40000")],
        )
        .await;
    broker
        .create_topic(
            "by-time",
            1,
            &[small_segments[0], ("retention.ms", "60000")],
        )
        .await;
    let producer = producer(&broker, &[("acks", "all"), ("batch.num.messages", "50")]);

    produce_records(&producer, "by-size", 2000, now_ms()).await;
    let (low, high) = wait_for_log_start(&broker, "by-size");
    assert!(low > 0 && high == 2000, "by-size watermarks {low}..{high}");
    // A retention pass that ran while the records were still arriving moved the log start
    // already; the next pass (every 200 ms) brings the size within the limit.
    let log_bytes = || -> u64 {
        std::fs::read_dir(data.join("by-size-0"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .filter_map(|p| std::fs::metadata(p).ok().map(|m| m.len()))
            .sum()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut size = log_bytes();
    while size > 40_000 + 16_384 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        size = log_bytes();
    }
    assert!(size <= 40_000 + 16_384, "{size} bytes kept after 60 s");

    // An hour-old burst, then current records: the old segments go, the new data stays.
    produce_records(&producer, "by-time", 1000, now_ms() - 3_600_000).await;
    let fresh = produce_records(&producer, "by-time", 300, now_ms()).await;
    let (low, high) = wait_for_log_start(&broker, "by-time");
    assert!(
        low > 0 && low <= 1000 && high == 1300,
        "by-time watermarks {low}..{high}"
    );
    assert!(segment_files(&data.join("by-time-0")) >= 1);
    // Reading from the beginning starts at the (moving) log start, never below it or past the
    // fresh records; the fresh records are all there. (Retention keeps running meanwhile, so the
    // log start may still advance through the old records.)
    let first = read_back(
        &broker,
        "by-time",
        1,
        Offset::Beginning,
        1,
        Duration::from_secs(30),
    );
    assert!(
        first[0].1 >= low && first[0].1 <= 1000,
        "first offset {}",
        first[0].1
    );
    let read = read_back(
        &broker,
        "by-time",
        1,
        Offset::Offset(1000),
        300,
        Duration::from_secs(30),
    );
    let offsets: Vec<i64> = read.iter().map(|r| r.1).collect();
    assert_eq!(offsets, (1000..1300).collect::<Vec<i64>>());
    assert_eq!(fresh[&0].len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_timestamp_log_dirs_and_leader_epoch_ends() {
    use sluice_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use sluice_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use sluice_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use sluice_protocol::messages::{
        DescribeLogDirsRequest, DescribeLogDirsResponse, ListOffsetsRequest, ListOffsetsResponse,
        OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
    };

    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("times", 1, &[]).await;
    let mut stream = connect(&broker);
    // Three batches; the largest timestamp is the second record of the second batch.
    let base = now_ms();
    for (i, stamps) in [
        [base, base + 1],
        [base + 5, base + 50],
        [base + 7, base + 8],
    ]
    .iter()
    .enumerate()
    {
        let batch = BatchBuilder::new()
            .record(None, b"a", stamps[0])
            .record(None, b"b", stamps[1])
            .build();
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name("times"))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch))])]);
        stream
            .write_all(&frame(ApiKey::Produce, 9, i as i32, &request))
            .unwrap();
        read_response(&mut stream).expect("produce response");
    }

    let list = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name("times"))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-3)])]);
    stream
        .write_all(&frame(ApiKey::ListOffsets, 7, 10, &list))
        .unwrap();
    let (_, mut body) = read_response(&mut stream).unwrap();
    let _tags = body.split_to(1);
    let answer = ListOffsetsResponse::decode(&mut body, 7).unwrap();
    let p = &answer.topics[0].partitions[0];
    assert_eq!((p.error_code, p.offset, p.timestamp), (0, 3, base + 50));

    let dirs =
        DescribeLogDirsRequest::default()
            .with_topics(Some(vec![DescribableLogDirTopic::default()
                .with_topic(topic_name("times"))
                .with_partitions(vec![0])]));
    stream
        .write_all(&frame(ApiKey::DescribeLogDirs, 4, 11, &dirs))
        .unwrap();
    let (_, mut body) = read_response(&mut stream).unwrap();
    let _tags = body.split_to(1);
    let answer = DescribeLogDirsResponse::decode(&mut body, 4).unwrap();
    let result = &answer.results[0];
    assert_eq!(result.error_code, 0);
    let size = result.topics[0].partitions[0].partition_size;
    let on_disk: u64 = std::fs::read_dir(dir.path().join("times-0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(size as u64, on_disk);
    assert!(result.total_bytes > 0 && result.usable_bytes > 0);

    let epochs = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(topic_name("times"))
            .with_partitions(vec![
                OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(0)
                    .with_leader_epoch(0),
                OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(7)
                    .with_leader_epoch(0),
            ])]);
    stream
        .write_all(&frame(ApiKey::OffsetForLeaderEpoch, 4, 12, &epochs))
        .unwrap();
    let (_, mut body) = read_response(&mut stream).unwrap();
    let _tags = body.split_to(1);
    let answer = OffsetForLeaderEpochResponse::decode(&mut body, 4).unwrap();
    let ends = &answer.topics[0].partitions;
    assert_eq!(
        (ends[0].error_code, ends[0].leader_epoch, ends[0].end_offset),
        (0, 0, 6)
    );
    assert_eq!(
        ends[1].error_code, 75,
        "UNKNOWN_LEADER_EPOCH for a future epoch"
    );
}
