//! Resource limits against hostile clients on raw sockets: clients that never read their
//! responses are back-pressured by the request memory pool (`queued.max.request.bytes`) while an
//! rdkafka client keeps producing and consuming; idle connections are closed
//! (`connections.max.idle.ms`); a request trickled a byte at a time is cut off
//! (`socket.request.read.timeout.ms`); `max.connections.per.ip` refuses the extra connection; the
//! shutdown log counts only open connections.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rdkafka::Offset;
use sluice_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use sluice_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use sluice_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, ProduceRequest,
    TopicName,
};
use sluice_protocol::StrBytes;

use crate::harness::{now_ms, start_with_toml, Broker};
use crate::metrics::sample;
use crate::produce_consume::{produce_records, producer, read_back};
use crate::wire::{call, connect, frame, read_response};

/// Generous bound for anything a loaded 2-core machine has to do.
const PATIENCE: Duration = Duration::from_secs(90);

/// Polls `check` until it returns `Some`, panicking with `what` after [`PATIENCE`].
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metric(broker: &Broker, series: &str) -> f64 {
    let (status, body) = broker.admin_get("/metrics");
    assert_eq!(status, 200);
    sample(&body, series)
}

fn produce_request(topic: &str, acks: i16, value: &[u8]) -> ProduceRequest {
    let batch = sluice_log::testing::BatchBuilder::new()
        .record(None, value, now_ms())
        .build();
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])])
}

/// A Fetch v4 of partition 0 of `topic` from offset 0 that waits up to `max_wait_ms` for a byte
/// and answers up to `max_bytes`.
fn fetch(topic: &str, max_wait_ms: i32, max_bytes: i32) -> Vec<u8> {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(max_bytes)])]);
    frame(ApiKey::Fetch, 4, 1, &request)
}

/// A fetch of everything in partition 0 of `topic`, as large as the broker will answer.
fn fetch_everything(topic: &str) -> Vec<u8> {
    fetch(topic, 0, i32::MAX)
}

fn api_versions(stream: &mut TcpStream) -> ApiVersionsResponse {
    call(
        stream,
        ApiKey::ApiVersions,
        0,
        &ApiVersionsRequest::default(),
    )
}

/// Whether the broker has closed `stream` (a read sees the end, or a reset); waits up to the
/// stream's read timeout.
fn closed_by_broker(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ),
    }
}

/// Appends `batches` batches of one 512 KiB record to partition 0 of `topic`, reading each answer.
fn fill(broker: &Broker, topic: &str, batches: i32) {
    let mut loader = connect(broker);
    let value = vec![7u8; 512 * 1024];
    for i in 0..batches {
        loader
            .write_all(&frame(
                ApiKey::Produce,
                3,
                i,
                &produce_request(topic, 1, &value),
            ))
            .unwrap();
        read_response(&mut loader).expect("produce answered");
    }
}

/// Clients that never read their responses (each first asks for 16 MiB of records, more than
/// the sockets' buffers hold, then pipelines 512 KiB acks=all produce requests) stop being read
/// once they have filled their share of the pool; the pool never holds more than its bound; and
/// meanwhile an rdkafka producer and consumer on the same broker do their work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_are_back_pressured_and_others_keep_working() {
    const POOL_BYTES: u64 = 8 * 1024 * 1024;
    const ATTACKERS: usize = 4;
    const VALUE_BYTES: usize = 512 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let broker = start_with_toml(
        dir.path(),
        &format!("\"queued.max.request.bytes\" = {POOL_BYTES}\n"),
    );
    for topic in ["bulk", "attack", "good"] {
        broker.create_topic(topic, 1, &[]).await;
    }
    // 16 MiB to fetch, more than the sockets' buffers take in.
    fill(&broker, "bulk", 32);
    let value = vec![7u8; VALUE_BYTES];
    let attack_frame = frame(
        ApiKey::Produce,
        3,
        2,
        &produce_request("attack", -1, &value),
    );
    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|_| {
            let mut stream = connect(&broker);
            let attack_frame = attack_frame.clone();
            let fetch = fetch_everything("bulk");
            std::thread::spawn(move || {
                stream
                    .set_write_timeout(Some(Duration::from_secs(3)))
                    .unwrap();
                stream.write_all(&fetch).unwrap();
                // Write until the broker stops reading (a write times out), within the patience.
                let deadline = Instant::now() + PATIENCE;
                let mut sent = 0usize;
                while Instant::now() < deadline {
                    match stream.write_all(&attack_frame) {
                        Ok(()) => sent += 1,
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            return (stream, sent, true)
                        }
                        Err(e) => panic!("attacker write failed: {e}"),
                    }
                }
                (stream, sent, false)
            })
        })
        .collect();

    // Another client produces and reads back while the attackers hold their share.
    let p = producer(&broker, &[("acks", "all")]);
    produce_records(&p, "good", 200, now_ms()).await;
    drop(p);
    let read = read_back(&broker, "good", 1, Offset::Beginning, 200, PATIENCE);
    assert_eq!(read.len(), 200, "the well-behaved client was starved");

    let attackers: Vec<_> = attackers
        .into_iter()
        .map(|a| a.join().expect("attacker thread"))
        .collect();
    for (_, sent, blocked) in &attackers {
        assert!(
            blocked,
            "an attacker wrote {sent} requests of {VALUE_BYTES} bytes without being back-pressured"
        );
    }
    // Pipelined requests whose answers cannot be written fill half the pool at most: at most
    // that many attack batches were taken in, however much the attackers sent.
    let appended = metric(
        &broker,
        "sluice_log_end_offset{topic=\"attack\",partition=\"0\"}",
    );
    let share = (POOL_BYTES / 2) as f64 / (VALUE_BYTES as f64);
    assert!(
        appended <= share,
        "{appended} attack batches of {VALUE_BYTES} bytes were read, more than half a pool of {POOL_BYTES}"
    );
    // Every attacker connection now waits for pool memory with a request's size read.
    wait_for("the attackers to wait for the pool", || {
        (metric(&broker, "sluice_request_pool_waiting_requests") >= ATTACKERS as f64).then_some(())
    });
    let peak = metric(&broker, "sluice_request_pool_used_max_bytes");
    assert!(
        peak > 0.0 && peak <= POOL_BYTES as f64,
        "pool peak {peak} outside 0..={POOL_BYTES}"
    );
    assert_eq!(
        metric(&broker, "sluice_request_pool_capacity_bytes"),
        POOL_BYTES as f64
    );
    drop(attackers);
    // Closing the attackers releases everything they held.
    wait_for("the pool to empty", || {
        (metric(&broker, "sluice_request_pool_used_bytes") == 0.0).then_some(())
    });
}

/// A connection with no request for `connections.max.idle.ms` is closed, also one whose client
/// stopped reading (releasing its pool memory); one waiting on a long poll longer than that is
/// not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_connections_max_idle_ms() {
    const IDLE_MS: u64 = 1500;
    let dir = tempfile::tempdir().unwrap();
    let broker = start_with_toml(
        dir.path(),
        &format!("\"connections.max.idle.ms\" = {IDLE_MS}\n"),
    );
    broker.create_topic("quiet", 1, &[]).await;
    broker.create_topic("bulk", 1, &[]).await;

    // A long poll of twice the idle time keeps its connection open, and the connection serves
    // the next request.
    let mut polling = connect(&broker);
    let poll_ms = 2 * IDLE_MS as i32;
    let started = Instant::now();
    polling.write_all(&fetch("quiet", poll_ms, 1024)).unwrap();
    let (correlation, _) = read_response(&mut polling).expect("long poll answered, not closed");
    assert_eq!(correlation, 1);
    assert!(started.elapsed() >= Duration::from_millis(poll_ms as u64));
    assert_eq!(api_versions(&mut polling).error_code, 0);

    // A quiet connection is closed, no earlier than the idle time.
    let mut quiet = connect(&broker);
    assert_eq!(api_versions(&mut quiet).error_code, 0);
    let answered = Instant::now();
    quiet.set_read_timeout(Some(PATIENCE)).unwrap();
    assert!(closed_by_broker(&mut quiet), "idle connection kept open");
    assert!(answered.elapsed() >= Duration::from_millis(IDLE_MS - 100));

    // A client that stopped reading: a 16 MiB fetch answer it does not take, and a produce
    // request behind it holding pool memory until the connection closes.
    fill(&broker, "bulk", 32);
    let mut stuck = connect(&broker);
    stuck.write_all(&fetch_everything("bulk")).unwrap();
    stuck
        .write_all(&frame(
            ApiKey::Produce,
            3,
            2,
            &produce_request("quiet", -1, b"held"),
        ))
        .unwrap();
    wait_for("the held produce request to be appended", || {
        (metric(
            &broker,
            "sluice_log_end_offset{topic=\"quiet\",partition=\"0\"}",
        ) == 1.0)
            .then_some(())
    });
    // Its pool memory comes back once it is closed as idle, with most of the answer unsent.
    wait_for("its pool memory to be released", || {
        (metric(&broker, "sluice_request_pool_used_bytes") == 0.0).then_some(())
    });
    stuck.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut rest = Vec::new();
    let read = stuck.read_to_end(&mut rest);
    assert!(
        read.is_ok() || matches!(read, Err(ref e) if e.kind() == ErrorKind::ConnectionReset),
        "the connection that stopped reading was not closed: {read:?}"
    );
    assert!(
        (rest.len() as u64) < 16 * 512 * 1024,
        "the whole fetch answer was sent ({} bytes): the client never looked stuck",
        rest.len()
    );
    assert!(metric(&broker, "sluice_connections_closed_total{reason=\"idle\"}") >= 2.0);
    // The long-polling connection did not count as idle while it waited, and has gone quiet
    // since.
    polling.set_read_timeout(Some(PATIENCE)).unwrap();
    assert!(closed_by_broker(&mut polling));
}

/// A request sent a byte at a time is cut off `socket.request.read.timeout.ms` after its first
/// byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_trickled_byte_by_byte_is_cut_off() {
    const READ_TIMEOUT_MS: u64 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let broker = start_with_toml(
        dir.path(),
        &format!("\"socket.request.read.timeout.ms\" = {READ_TIMEOUT_MS}\n"),
    );
    // A frame claiming 200 bytes, sent a byte every 200 ms: 40 s for the whole of it.
    let mut request = 200i32.to_be_bytes().to_vec();
    request.extend_from_slice(&[0u8; 200]);
    let mut slow = connect(&broker);
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut sent = 0;
    let mut buf = [0u8; 64];
    loop {
        assert!(
            started.elapsed() < PATIENCE,
            "the trickle was never cut off"
        );
        if sent < request.len() {
            if slow.write_all(&request[sent..=sent]).is_err() {
                break;
            }
            sent += 1;
        }
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => panic!("the broker answered a trickled request with {n} bytes"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    assert!(
        sent < request.len(),
        "the broker read the whole {}-byte request",
        request.len()
    );
    assert!(started.elapsed() >= Duration::from_millis(READ_TIMEOUT_MS - 100));
    assert_eq!(
        metric(
            &broker,
            "sluice_connections_closed_total{reason=\"request_read_timeout\"}"
        ),
        1.0
    );
    // Others are served as usual.
    assert_eq!(api_versions(&mut connect(&broker)).error_code, 0);
}

/// `max.connections.per.ip` (0 here) with an override for 127.0.0.1 (2): the third connection
/// from 127.0.0.1 is closed at accept and counted, and one is admitted again once another closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_ip_limit_refuses_the_extra_connection_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_with_toml(
        dir.path(),
        "\"max.connections.per.ip\" = 0\n\"max.connections.per.ip.overrides\" = \"127.0.0.1:2\"\n",
    );
    let mut first = connect(&broker);
    let mut second = connect(&broker);
    assert_eq!(api_versions(&mut first).error_code, 0);
    assert_eq!(api_versions(&mut second).error_code, 0);
    let mut third = connect(&broker);
    assert!(
        closed_by_broker(&mut third),
        "a third connection from one address was admitted"
    );
    assert_eq!(
        metric(
            &broker,
            "sluice_connections_refused_total{reason=\"max_connections_per_ip\"}"
        ),
        1.0
    );
    drop(first);
    wait_for("the closed connection to be counted out", || {
        (metric(&broker, "sluice_connections_active") == 1.0).then_some(())
    });
    let mut again = connect(&broker);
    assert_eq!(api_versions(&mut again).error_code, 0);
    assert_eq!(api_versions(&mut second).error_code, 0);
}

/// The shutdown line counts the connections open at that moment: none, after a client came and
/// went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_log_counts_only_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    {
        let mut gone = connect(&broker);
        assert_eq!(api_versions(&mut gone).error_code, 0);
    }
    wait_for("the closed connection to finish", || {
        (metric(&broker, "sluice_connections_active") == 0.0).then_some(())
    });
    assert!(broker.stop(), "clean stop");
    let log = broker.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("draining connections"))
        .unwrap_or_else(|| panic!("no draining line in:\n{log}"));
    assert!(without_colors(line).contains("connections=0"), "{line}");
}

/// `line` without its ANSI color sequences (ESC [ ... m).
fn without_colors(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
