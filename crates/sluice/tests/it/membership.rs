//! Broker-only requests and proof of cluster membership on one node (issue 13, finding 3): a
//! client that forges a follower's Fetch or OffsetForLeaderEpoch, or sends WriteTxnMarkers, is
//! refused with Kafka's codes and changes nothing; SASL answers as Kafka's does for mechanisms
//! it does not offer; the cluster secret is created owner-only and kept. The helpers here send
//! the forged requests for the cluster tests too (`cluster::membership`).

use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_meta::membership::ClusterSecret;
use sluice_protocol::error::ResponseError;
use sluice_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use sluice_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use sluice_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use sluice_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use sluice_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, ProducerId, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse, TopicName, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use sluice_protocol::StrBytes;

use crate::harness::Broker;
use crate::wire::{authenticate_member, call, data_dir_secret, frame, read_response};

pub(crate) const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
pub(crate) const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;

/// A raw connection to `127.0.0.1:port`.
pub(crate) fn connect_port(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// Fetch v12 as follower `replica_id` claiming to have everything up to `fetch_offset`; returns
/// each partition's error code.
pub(crate) fn follower_fetch(
    stream: &mut TcpStream,
    topic: &str,
    partition: i32,
    replica_id: i32,
    fetch_offset: i64,
) -> Vec<i16> {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(replica_id))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(fetch_offset)
                .with_partition_max_bytes(1 << 20)])]);
    let response: FetchResponse = call(stream, ApiKey::Fetch, 12, &request);
    response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

/// OffsetForLeaderEpoch v3 as follower `replica_id`; returns the partition's error code.
pub(crate) fn follower_epoch_request(
    stream: &mut TcpStream,
    topic: &str,
    partition: i32,
    replica_id: i32,
) -> i16 {
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(replica_id))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(-1)
                .with_leader_epoch(0)])]);
    let response: OffsetForLeaderEpochResponse =
        call(stream, ApiKey::OffsetForLeaderEpoch, 3, &request);
    response.topics[0].partitions[0].error_code
}

/// WriteTxnMarkers v1: a COMMIT marker of `producer_id` (epoch 0) on `topic`/`partition`;
/// returns the partition's error code.
pub(crate) fn write_marker(
    stream: &mut TcpStream,
    topic: &str,
    partition: i32,
    producer_id: i64,
) -> i16 {
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(0)
            .with_transaction_result(true)
            .with_coordinator_epoch(0)
            .with_topics(vec![WritableTxnMarkerTopic::default()
                .with_name(topic_name(topic))
                .with_partition_indexes(vec![partition])])]);
    let response: WriteTxnMarkersResponse = call(stream, ApiKey::WriteTxnMarkers, 1, &request);
    response.markers[0].topics[0].partitions[0].error_code
}

/// The log end offset of `topic`/`partition` as its leader on `stream` reports it (ListOffsets
/// latest; a consumer's view, so at most the high watermark in a cluster).
pub(crate) fn latest_offset(stream: &mut TcpStream, topic: &str, partition: i32) -> i64 {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(-1)])]);
    let response: ListOffsetsResponse = call(stream, ApiKey::ListOffsets, 5, &request);
    let answer = &response.topics[0].partitions[0];
    assert_eq!(answer.error_code, 0, "ListOffsets of {topic}/{partition}");
    answer.offset
}

async fn produce(broker: &Broker, topic: &str, count: usize) {
    let producer: FutureProducer = broker.client_config().create().expect("producer");
    for i in 0..count {
        let value = format!("v{i}");
        producer
            .send(
                FutureRecord::<(), _>::to(topic)
                    .partition(0)
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_only_requests_from_clients_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("guarded", 1, &[]).await;
    produce(&broker, "guarded", 3).await;
    let port = broker.port;
    let secret = data_dir_secret(dir.path());
    tokio::task::spawn_blocking(move || {
        let mut client = connect_port(port);
        assert_eq!(latest_offset(&mut client, "guarded", 0), 3);

        // An ordinary client: every broker-only request is refused, nothing is appended.
        assert_eq!(
            write_marker(&mut client, "guarded", 0, 777),
            CLUSTER_AUTHORIZATION_FAILED
        );
        assert_eq!(
            follower_fetch(&mut client, "guarded", 0, 2, 1_000_000_000),
            vec![TOPIC_AUTHORIZATION_FAILED]
        );
        assert_eq!(
            follower_epoch_request(&mut client, "guarded", 0, 2),
            TOPIC_AUTHORIZATION_FAILED
        );
        assert_eq!(
            latest_offset(&mut client, "guarded", 0),
            3,
            "no marker was appended"
        );
        // The same connection still serves consumers.
        assert_eq!(follower_fetch(&mut client, "guarded", 0, -1, 0), vec![0]);

        // A node speaks only for its own replica.
        let mut node = connect_port(port);
        authenticate_member(&mut node, &secret, 2, 1).unwrap();
        assert_eq!(
            follower_fetch(&mut node, "guarded", 0, 3, 0),
            vec![TOPIC_AUTHORIZATION_FAILED]
        );
        assert_eq!(
            follower_epoch_request(&mut node, "guarded", 0, 3),
            TOPIC_AUTHORIZATION_FAILED
        );
        assert_eq!(follower_epoch_request(&mut node, "guarded", 0, 2), 0);
        assert_eq!(follower_fetch(&mut node, "guarded", 0, 2, 0), vec![0]);

        // A node of another cluster is refused, and its connection closed.
        let mut stranger = connect_port(port);
        let refused = authenticate_member(&mut stranger, &ClusterSecret::generate().unwrap(), 2, 1)
            .unwrap_err();
        assert!(refused.contains("error 58"), "{refused}");
        assert!(refused.contains("different cluster secrets"), "{refused}");
        use std::io::Write;
        stranger
            .write_all(&frame(ApiKey::Metadata, 9, 7, &MetadataRequest::default()))
            .unwrap();
        assert!(
            read_response(&mut stranger).is_none(),
            "a failed authentication closes the connection"
        );
        assert_eq!(latest_offset(&mut client, "guarded", 0), 3);
    })
    .await
    .unwrap();
    assert!(
        broker.stderr().contains("refused WriteTxnMarkers"),
        "the refusal is logged"
    );
}

#[test]
fn sasl_answers_like_kafka_for_mechanisms_it_does_not_offer() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut s = connect_port(broker.port);
    let versions: ApiVersionsResponse = call(
        &mut s,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    );
    let range = |key: ApiKey| {
        versions
            .api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .map(|k| (k.min_version, k.max_version))
    };
    assert_eq!(range(ApiKey::SaslHandshake), Some((1, 1)));
    assert_eq!(range(ApiKey::SaslAuthenticate), Some((0, 2)));

    let early: SaslAuthenticateResponse = call(
        &mut s,
        ApiKey::SaslAuthenticate,
        2,
        &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from_static(b"\0user\0pw")),
    );
    assert_eq!(early.error_code, ResponseError::IllegalSaslState.code());

    for mechanism in ["PLAIN", "SCRAM-SHA-256", "OAUTHBEARER"] {
        let answer: SaslHandshakeResponse = call(
            &mut s,
            ApiKey::SaslHandshake,
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism)),
        );
        assert_eq!(
            answer.error_code,
            ResponseError::UnsupportedSaslMechanism.code(),
            "{mechanism}"
        );
        let enabled: Vec<&str> = answer.mechanisms.iter().map(|m| m.as_str()).collect();
        assert_eq!(enabled, vec!["SLUICE-CLUSTER"]);
    }
}

/// A librdkafka client configured for SASL/PLAIN gets the broker's mechanism list in its error,
/// not a hang or a closed connection without a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_configured_for_sasl_plain_gets_a_clear_error() {
    use rdkafka::client::ClientContext;
    use rdkafka::config::RDKafkaLogLevel;
    use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Logged(Arc<Mutex<Vec<String>>>);
    impl ClientContext for Logged {
        fn log(&self, _level: RDKafkaLogLevel, facility: &str, message: &str) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{facility}: {message}"));
        }
        fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
            self.0
                .lock()
                .unwrap()
                .push(format!("error {error}: {reason}"));
        }
    }
    impl ConsumerContext for Logged {}

    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let logged = Logged::default();
    let mut config = broker.client_config();
    config.remove("log_level");
    let consumer: BaseConsumer<Logged> = config
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "PLAIN")
        .set("sasl.username", "alice")
        .set("sasl.password", "secret")
        .set_log_level(RDKafkaLogLevel::Info)
        .create_with_context(logged.clone())
        .expect("consumer");
    let answer =
        tokio::task::block_in_place(|| consumer.fetch_metadata(None, Duration::from_secs(3)));
    assert!(answer.is_err(), "no metadata without SASL: {answer:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        // Error events are delivered by polling.
        let _ = tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(100)));
        let lines = logged.0.lock().unwrap().join("\n");
        if lines.contains("SLUICE-CLUSTER") {
            assert!(
                lines.to_lowercase().contains("unsupported sasl mechanism"),
                "{lines}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "librdkafka never reported the broker's mechanisms:\n{lines}"
        );
    }
}

#[test]
fn a_single_node_creates_its_secret_owner_only_and_keeps_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster-secret");
    let mut broker = Broker::start(dir.path());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first = std::fs::read_to_string(&path).unwrap();
    assert_eq!(first.trim().len(), 64);
    assert!(
        !broker.stderr().contains(first.trim()),
        "the secret is never logged"
    );
    assert!(broker.stop());
    let broker = Broker::start(dir.path());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
    assert!(!broker.stderr().contains(first.trim()));
}

#[test]
fn sluice_cluster_secret_writes_a_private_file_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.secret");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["cluster", "secret"])
            .args(args)
            .output()
            .expect("run sluice cluster secret")
    };
    let printed = run(&[]);
    assert!(printed.status.success(), "{printed:?}");
    let hex = String::from_utf8(printed.stdout).unwrap();
    assert_eq!(hex.trim().len(), 64, "{hex}");
    assert!(hex.trim().chars().all(|c| c.is_ascii_hexdigit()));

    let written = run(&["--file", path.to_str().unwrap()]);
    assert!(written.status.success(), "{written:?}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let content = std::fs::read_to_string(&path).unwrap();
    let again = run(&["--file", path.to_str().unwrap()]);
    assert!(!again.status.success(), "{again:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
}

/// A node of a multi-voter cluster without a secret refuses to start
/// and says how to make one; so does one given a file that does not hold a secret.
#[test]
fn a_cluster_node_without_a_secret_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path())
            .args([
                "--node-id",
                "1",
                "--voters",
                "1@127.0.0.1:19200,2@127.0.0.1:19201,3@127.0.0.1:19202",
                "--controller-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env_remove("SLUICE_CLUSTER_SECRET_FILE")
            .output()
            .expect("run sluice serve");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = run(&[]);
    assert!(missing.contains("one of 3 metadata voters"), "{missing}");
    assert!(
        missing.contains("sluice cluster secret --file"),
        "{missing}"
    );
    let bad = dir.path().join("bad.secret");
    std::fs::write(&bad, "not a secret\n").unwrap();
    let malformed = run(&["--cluster-secret-file", bad.to_str().unwrap()]);
    assert!(
        malformed.contains("64 hexadecimal characters"),
        "{malformed}"
    );
}
