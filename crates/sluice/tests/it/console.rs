//! The web console and its JSON API on the admin listener: after librdkafka produces known
//! records and a group commits, `/api/topics`, `/api/topics/<t>`, `/api/topics/<t>/messages` and
//! `/api/groups` answer what was written; a test record produced through the API is read back;
//! bad input gets a 4xx with a JSON error, never a crash.

use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::closing::Closing;
use crate::harness::{http_request, Broker};
use crate::produce_consume::producer;

const TOPIC: &str = "inspected";
const GROUP: &str = "inspecting-group";
const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

fn get(broker: &Broker, path: &str) -> (u16, Value) {
    request(broker, "GET", path, None)
}

fn request(broker: &Broker, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
    let (status, text) = http_request(broker.admin_port, method, path, body);
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: {status} answer is not JSON ({e}): {text}"));
    (status, value)
}

fn get_ok(broker: &Broker, path: &str) -> Value {
    let (status, value) = get(broker, path);
    assert_eq!(status, 200, "GET {path}: {value}");
    value
}

/// Asserts a 4xx `status` with an `error` sentence containing `needle`.
fn assert_error(answer: (u16, Value), status: u16, needle: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    let error = answer.1["error"].as_str().unwrap_or_default();
    assert!(error.contains(needle), "{error:?} lacks {needle:?}");
}

/// Partition 0 gets a text, a JSON and a binary value (with a header); partition 1 one record.
async fn produce_known_records(broker: &Broker) {
    let p = producer(broker, &[]);
    let records: [(i32, &[u8], &[u8]); 4] = [
        (0, b"k-text", b"hello console"),
        (0, b"k-json", br#"{"order": 7, "items": ["a", "b"]}"#),
        (0, b"k-bin", &[0x00, 0xff, 0x10, 0x80]),
        (1, b"k-other", b"on partition one"),
    ];
    for (i, (partition, key, value)) in records.iter().enumerate() {
        let record = FutureRecord::to(TOPIC)
            .partition(*partition)
            .key(*key)
            .payload(*value)
            .timestamp(BASE_TIMESTAMP + i as i64 * 1000)
            .headers(OwnedHeaders::new().insert(Header {
                key: "trace",
                value: Some(format!("t{i}").as_bytes()),
            }));
        p.send(record, Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce record {i}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_api_reports_topics_messages_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker
        .create_topic(TOPIC, 2, &[("retention.ms", "86400000")])
        .await;
    produce_known_records(&broker).await;

    // The page itself and its files are served.
    let (status, page) = crate::harness::http_get(broker.admin_port, "/");
    assert_eq!(status, 200);
    assert!(page.contains("/console/console.js"), "{page}");
    assert_eq!(
        crate::harness::http_get(broker.admin_port, "/console/console.js").0,
        200
    );

    let overview = get_ok(&broker, "/api/overview");
    assert_eq!(overview["topic_count"], 1, "{overview}");
    assert_eq!(overview["partition_count"], 2);
    assert_eq!(overview["internal_topic_count"], 0);
    assert_eq!(overview["records_in_total"], 4);
    assert!(
        overview.get("records_out_total").is_none(),
        "fetched records are not counted"
    );
    assert_eq!(overview["under_replicated_partitions"], 0);
    assert_eq!(overview["brokers"][0]["listener"], broker.bootstrap());

    let topics = get_ok(&broker, "/api/topics");
    let topic = &topics[0];
    assert_eq!(topic["name"], TOPIC, "{topics}");
    assert_eq!(topic["partition_count"], 2);
    assert_eq!(topic["records"], 4);
    assert_eq!(topic["end_offsets_total"], 4);
    assert!(topic["size_bytes"].as_u64().unwrap() > 0);

    let detail = get_ok(&broker, &format!("/api/topics/{TOPIC}"));
    assert_eq!(detail["partitions"][0]["high_watermark"], 3, "{detail}");
    assert_eq!(detail["partitions"][0]["log_start_offset"], 0);
    assert_eq!(detail["partitions"][1]["high_watermark"], 1);
    let config = |name: &str| {
        detail["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no config {name} in {detail}"))
            .clone()
    };
    assert_eq!(config("retention.ms")["value"], "86400000");
    assert_eq!(config("retention.ms")["source"], "DYNAMIC_TOPIC_CONFIG");
    assert_eq!(config("cleanup.policy")["source"], "DEFAULT_CONFIG");

    // Messages: text as text, JSON flagged, binary as hex; headers decoded.
    let page = get_ok(
        &broker,
        &format!("/api/topics/{TOPIC}/messages?partition=0&offset=0&max=10"),
    );
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 3, "{page}");
    assert_eq!(records[0]["offset"], 0);
    assert_eq!(records[0]["timestamp"], BASE_TIMESTAMP);
    assert_eq!(records[0]["key"]["data"], "k-text");
    assert_eq!(records[0]["value"]["encoding"], "text");
    assert_eq!(records[0]["value"]["data"], "hello console");
    assert_eq!(records[0]["headers"][0]["key"], "trace");
    assert_eq!(records[0]["headers"][0]["value"]["data"], "t0");
    assert_eq!(records[1]["value"]["encoding"], "json");
    assert_eq!(records[2]["value"]["encoding"], "hex");
    assert_eq!(records[2]["value"]["data"], "00ff1080");
    assert_eq!(page["next_offset"], 3);

    // A start offset and a count; a timestamp; the latest records by default.
    let page = get_ok(
        &broker,
        &format!("/api/topics/{TOPIC}/messages?partition=0&offset=1&max=1"),
    );
    assert_eq!(page["records"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["records"][0]["offset"], 1);
    assert_eq!(page["next_offset"], 2);
    let page = get_ok(
        &broker,
        &format!(
            "/api/topics/{TOPIC}/messages?partition=0&timestamp={}",
            BASE_TIMESTAMP + 1500
        ),
    );
    assert_eq!(page["start_offset"], 2, "{page}");
    assert_eq!(page["records"][0]["key"]["data"], "k-bin");
    let page = get_ok(&broker, &format!("/api/topics/{TOPIC}/messages?max=2"));
    let offsets: Vec<i64> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, [1, 2], "{page}");

    // A group that committed offset 1 on partition 0 and 1 on partition 1: lag 2 + 0.
    let committer: Closing = Closing::new(
        broker
            .client_config()
            .set("group.id", GROUP)
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer"),
    );
    let mut at = TopicPartitionList::new();
    at.add_partition_offset(TOPIC, 0, Offset::Offset(1))
        .unwrap();
    at.add_partition_offset(TOPIC, 1, Offset::Offset(1))
        .unwrap();
    committer.commit(&at, CommitMode::Sync).expect("commit");
    let groups = get_ok(&broker, "/api/groups");
    let listed = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group_id"] == GROUP)
        .unwrap_or_else(|| panic!("{GROUP} not in {groups}"));
    assert_eq!(listed["total_lag"], 2, "{groups}");
    assert_eq!(listed["state"], "Empty");
    // The commit created __consumer_offsets: the overview counts it apart from the user's topics,
    // as the topic list (and its "Largest topics") shows them.
    let overview = get_ok(&broker, "/api/overview");
    assert_eq!(overview["topic_count"], 1, "{overview}");
    assert_eq!(overview["partition_count"], 2, "{overview}");
    assert_eq!(overview["internal_topic_count"], 1, "{overview}");
    assert_eq!(overview["internal_partition_count"], 50, "{overview}");
    let group = get_ok(&broker, &format!("/api/groups/{GROUP}"));
    assert_eq!(group["offsets"][0]["partition"], 0, "{group}");
    assert_eq!(group["offsets"][0]["committed_offset"], 1);
    assert_eq!(group["offsets"][0]["log_end_offset"], 3);
    assert_eq!(group["offsets"][0]["lag"], 2);
    assert_eq!(group["offsets"][1]["lag"], 0);

    // A test record through the API lands where asked and reads back; the lag grows by one.
    let body = br#"{"partition": 0, "key": "from-api", "value": "{\"made\": \"here\"}",
        "headers": [{"key": "origin", "value": "console"}]}"#;
    let (status, produced) = request(
        &broker,
        "POST",
        &format!("/api/topics/{TOPIC}/produce"),
        Some(body),
    );
    assert_eq!(status, 200, "{produced}");
    assert_eq!(produced["partition"], 0);
    assert_eq!(produced["offset"], 3);
    let page = get_ok(
        &broker,
        &format!("/api/topics/{TOPIC}/messages?partition=0&offset=3"),
    );
    assert_eq!(page["records"][0]["key"]["data"], "from-api", "{page}");
    assert_eq!(page["records"][0]["value"]["encoding"], "json");
    assert_eq!(page["records"][0]["headers"][0]["value"]["data"], "console");
    assert_eq!(
        get_ok(&broker, &format!("/api/groups/{GROUP}"))["total_lag"],
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_api_shows_members_and_their_assignments() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("assigned", 2, &[]).await;
    let member: Closing = Closing::new(
        broker
            .client_config()
            .set("group.id", "live-group")
            .set("client.id", "console-test-client")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer"),
    );
    member.subscribe(&["assigned"]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = member.poll(Duration::from_millis(100));
        let (status, group) = get(&broker, "/api/groups/live-group");
        if status == 200
            && group["state"] == "Stable"
            && group["member_list"][0]["assignment"]
                .as_array()
                .is_some_and(|a| a.len() == 2)
        {
            let m = &group["member_list"][0];
            assert_eq!(m["client_id"], "console-test-client", "{group}");
            assert!(m["client_host"].as_str().unwrap().contains("127.0.0.1"));
            assert_eq!(m["assignment"][0]["topic"], "assigned");
            assert_eq!(group["members"], 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no stable assignment within 30 s: {status} {group}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_api_answers_bad_input_with_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("small", 1, &[]).await;
    let messages = "/api/topics/small/messages";

    assert_error(get(&broker, "/api/topics/missing"), 404, "does not exist");
    assert_error(
        get(&broker, "/api/topics/missing/messages"),
        404,
        "does not exist",
    );
    assert_error(
        get(&broker, &format!("{messages}?partition=9")),
        404,
        "no partition 9",
    );
    assert_error(
        get(&broker, &format!("{messages}?offset=5")),
        400,
        "outside",
    );
    assert_error(
        get(&broker, &format!("{messages}?offset=-3")),
        400,
        "offset",
    );
    assert_error(
        get(&broker, &format!("{messages}?offset=abc")),
        400,
        "offset",
    );
    assert_error(
        get(&broker, &format!("{messages}?offset=0&timestamp=1")),
        400,
        "not both",
    );
    assert_error(get(&broker, &format!("{messages}?max=100000")), 400, "max");
    assert_error(
        get(&broker, &format!("{messages}?partition=%zz")),
        400,
        "percent",
    );
    assert_error(get(&broker, "/api/groups/nobody"), 404, "does not exist");
    assert_error(get(&broker, "/api/nothing-here"), 404, "no API route");
    assert_error(
        request(&broker, "DELETE", "/api/topics", None),
        405,
        "use GET",
    );
    assert_error(get(&broker, "/api/topics/small/produce"), 405, "use POST");

    let produce = "/api/topics/small/produce";
    assert_error(
        request(&broker, "POST", produce, Some(b"{not json")),
        400,
        "not valid JSON",
    );
    assert_error(
        request(&broker, "POST", produce, Some(br#"{"value": 5}"#)),
        400,
        "not valid JSON",
    );
    assert_error(
        request(
            &broker,
            "POST",
            produce,
            Some(br#"{"value": "v", "extra": 1}"#),
        ),
        400,
        "unknown field",
    );
    assert_error(
        request(
            &broker,
            "POST",
            produce,
            Some(br#"{"partition": 4, "value": "v"}"#),
        ),
        400,
        "no partition 4",
    );
    assert_error(
        request(
            &broker,
            "POST",
            "/api/topics/missing/produce",
            Some(br#"{"value": "v"}"#),
        ),
        404,
        "does not exist",
    );
    assert_error(
        request(
            &broker,
            "POST",
            "/api/topics/__consumer_offsets/produce",
            Some(br#"{"value": "v"}"#),
        ),
        404,
        "does not exist",
    );
    // A form or text/plain POST (what another site's page could send without a preflight).
    let (status, text) = crate::harness::http_request_typed(
        broker.admin_port,
        "POST",
        produce,
        "text/plain",
        Some(br#"{"value": "v"}"#),
    );
    assert_eq!(status, 415, "{text}");
    assert!(text.contains("application/json"), "{text}");
    let oversize = vec![b' '; 2 * 1024 * 1024];
    assert_error(
        request(&broker, "POST", produce, Some(&oversize)),
        413,
        "over",
    );

    // Still serving, nothing was written, no panic logged.
    assert_eq!(get_ok(&broker, "/api/topics/small")["records"], 0);
    assert!(!broker.stderr().contains("panicked"), "{}", broker.stderr());
}
