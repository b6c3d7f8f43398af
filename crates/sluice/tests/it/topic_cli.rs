//! `sluice topic create|list|describe|alter|delete|reassign|reassignments` as a user runs them: the real binary against a
//! real broker, with records produced (and deleted) by librdkafka.

use std::collections::HashMap;
use std::process::Command;

use rdkafka::admin::AdminOptions;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::harness::{now_ms, Broker};
use crate::produce_consume::{produce_records, producer};

const TOPIC: &str = "orders";
const RECORDS: usize = 300;
/// Records removed from partition 1 with DeleteRecords, so its log start offset is not 0.
const DELETED_FROM_PARTITION_1: i64 = 5;

/// Runs the command, asserts it succeeded, returns its stdout.
fn ok(broker: &Broker, args: &[&str]) -> String {
    crate::harness::cli_ok("topic", broker, args)
}

/// Runs the command, asserts it failed with status 1 (not a panic, not a flag error), returns its
/// stderr.
fn fails(bootstrap: &str, args: &[&str]) -> String {
    crate::harness::cli_fails("topic", bootstrap, args, Some(1))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

fn describe_json(broker: &Broker, extra: &[&str]) -> Value {
    let mut args = vec!["describe", TOPIC, "--output", "json"];
    args.extend_from_slice(extra);
    json(&ok(broker, &args))
}

/// The whitespace-separated cells of each line of a table.
fn cells(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// name -> (value, source) from describe's JSON.
fn configs(description: &Value) -> HashMap<String, (Value, String)> {
    description["configs"]
        .as_array()
        .expect("configs array")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                (c["value"].clone(), c["source"].as_str().unwrap().to_owned()),
            )
        })
        .collect()
}

/// Topic names from `list --output json`.
fn listed(broker: &Broker) -> Vec<String> {
    json(&ok(broker, &["list", "--output", "json"]))
        .as_array()
        .expect("list is an array")
        .iter()
        .map(|t| t["topic"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_listed_described_altered_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());

    // Create with configs.
    let text = ok(
        &broker,
        &[
            "create",
            TOPIC,
            "--partitions",
            "2",
            "--replication-factor",
            "1",
            "--config",
            "retention.ms=600000",
            "--config",
            "max.message.bytes=2000000",
        ],
    );
    eprintln!("create:\n{text}");
    assert!(
        text.starts_with(&format!("Created topic '{TOPIC}' (id ")),
        "{text}"
    );
    assert!(
        text.contains("with 2 partitions, replication factor 1."),
        "{text}"
    );
    assert!(
        cells(&text).contains(&vec!["retention.ms".into(), "600000".into()]),
        "{text}"
    );

    // --validate-only answers like a create and creates nothing.
    let checked = json(&ok(
        &broker,
        &[
            "create",
            "checked",
            "--partitions",
            "4",
            "--config",
            "retention.ms=1000",
            "--validate-only",
            "--output",
            "json",
        ],
    ));
    assert_eq!(checked["validate_only"], true);
    assert_eq!(checked["partitions"], 4);
    assert!(checked["topic_id"].is_null(), "{checked}");
    let text = ok(&broker, &["create", "checked", "--validate-only"]);
    assert!(text.contains("nothing was created"), "{text}");
    assert_eq!(listed(&broker), [TOPIC]);
    fails(&broker.bootstrap(), &["describe", "checked"]);

    // List: text and JSON; the bootstrap server may come from the environment.
    let out = crate::harness::run_watched(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["topic", "list"])
            .env("SLUICE_BOOTSTRAP_SERVER", broker.bootstrap()),
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    eprintln!("list:\n{text}");
    assert_eq!(
        cells(&text),
        [
            vec!["TOPIC", "PARTITIONS", "REPLICATION-FACTOR"],
            vec![TOPIC, "2", "1"]
        ]
    );
    let list = json(&ok(&broker, &["list", "--output", "json"]));
    assert_eq!(list[0]["topic"], TOPIC);
    assert_eq!(list[0]["partitions"], 2);
    assert_eq!(list[0]["internal"], false);

    // Records, then DeleteRecords on partition 1: describe shows both ends of each log.
    let produced = produce_records(
        &producer(&broker, &[("acks", "all")]),
        TOPIC,
        RECORDS,
        now_ms(),
    )
    .await;
    let end = |p: i64| produced.get(&(p as i32)).map_or(0, Vec::len) as i64;
    assert!(
        end(0) > DELETED_FROM_PARTITION_1 && end(1) > DELETED_FROM_PARTITION_1,
        "both partitions got records"
    );
    let mut up_to = TopicPartitionList::new();
    up_to
        .add_partition_offset(TOPIC, 1, Offset::Offset(DELETED_FROM_PARTITION_1))
        .unwrap();
    broker
        .admin()
        .delete_records(&up_to, &AdminOptions::new())
        .await
        .expect("delete records");
    let start = |p: i64| if p == 1 { DELETED_FROM_PARTITION_1 } else { 0 };

    let description = describe_json(&broker, &[]);
    eprintln!("describe --output json:\n{description:#}");
    assert_eq!(description["topic"], TOPIC);
    assert_eq!(description["replication_factor"], 1);
    let partitions = description["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 2);
    let mut total = 0;
    for (index, p) in partitions.iter().enumerate() {
        let index = index as i64;
        assert_eq!(p["partition"], index);
        assert_eq!(p["leader"], 1, "{p}");
        assert_eq!(p["replicas"], serde_json::json!([1]));
        assert_eq!(p["isr"], serde_json::json!([1]));
        assert_eq!(p["log_start_offset"], start(index), "{p}");
        assert_eq!(p["log_end_offset"], end(index), "{p}");
        // The broker implements DescribeLogDirs: every partition with records has a size.
        let size = p["size_bytes"].as_i64().expect("size_bytes reported");
        assert!(size > 0, "{p}");
        total += size;
        assert!(p["error"].is_null(), "{p}");
    }
    assert_eq!(description["size_bytes"], total);
    // Only configs that are set show, with their source; --all-configs adds the defaults.
    assert_eq!(
        configs(&description),
        HashMap::from([
            (
                "retention.ms".to_owned(),
                ("600000".into(), "DYNAMIC_TOPIC_CONFIG".to_owned())
            ),
            (
                "max.message.bytes".to_owned(),
                ("2000000".into(), "DYNAMIC_TOPIC_CONFIG".to_owned())
            ),
        ])
    );
    let every = configs(&describe_json(&broker, &["--all-configs"]));
    assert_eq!(
        every["segment.bytes"],
        ("1073741824".into(), "DEFAULT_CONFIG".to_owned())
    );
    assert_eq!(every["retention.ms"].1, "DYNAMIC_TOPIC_CONFIG");
    let text = ok(&broker, &["describe", TOPIC]);
    eprintln!("describe:\n{text}");
    let table = cells(&text);
    assert!(table.contains(
        &[
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "ISR",
            "LOG-START-OFFSET",
            "LOG-END-OFFSET",
            "SIZE-BYTES"
        ]
        .map(String::from)
        .to_vec()
    ));
    let row1 = [
        "1".to_owned(),
        "1".into(),
        "1".into(),
        "1".into(),
        DELETED_FROM_PARTITION_1.to_string(),
        end(1).to_string(),
        partitions[1]["size_bytes"].to_string(),
    ];
    assert!(table.iter().any(|row| row[..] == row1), "{text}");
    assert!(
        table.contains(
            &["retention.ms", "600000", "DYNAMIC_TOPIC_CONFIG"]
                .map(String::from)
                .to_vec()
        ),
        "{text}"
    );

    // Alter: more partitions, one config set and one override removed.
    let text = ok(
        &broker,
        &[
            "alter",
            TOPIC,
            "--partitions",
            "4",
            "--set",
            "retention.ms=1000",
            "--delete-config",
            "max.message.bytes",
        ],
    );
    eprintln!("alter:\n{text}");
    assert!(
        text.contains(&format!("Topic '{TOPIC}' now has 4 partitions.")),
        "{text}"
    );
    let description = describe_json(&broker, &[]);
    let partitions = description["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 4);
    for p in &partitions[2..] {
        assert_eq!(p["log_start_offset"], 0, "{p}");
        assert_eq!(p["log_end_offset"], 0, "{p}");
    }
    assert_eq!(
        partitions[1]["log_end_offset"],
        end(1),
        "old partitions keep their records"
    );
    assert_eq!(
        configs(&description),
        HashMap::from([(
            "retention.ms".to_owned(),
            ("1000".into(), "DYNAMIC_TOPIC_CONFIG".to_owned())
        )])
    );
    let every = configs(&describe_json(&broker, &["--all-configs"]));
    assert_eq!(every["max.message.bytes"].1, "DEFAULT_CONFIG");
    let altered = json(&ok(
        &broker,
        &[
            "alter",
            TOPIC,
            "--set",
            "segment.bytes=1048576",
            "--output",
            "json",
        ],
    ));
    assert_eq!(altered["set"]["segment.bytes"], "1048576");
    assert!(altered["partitions"].is_null());
    assert_eq!(
        configs(&describe_json(&broker, &[]))["segment.bytes"],
        ("1048576".into(), "DYNAMIC_TOPIC_CONFIG".to_owned())
    );
    // A bad config in an alter that also adds partitions changes neither.
    let stderr = fails(
        &broker.bootstrap(),
        &[
            "alter",
            TOPIC,
            "--partitions",
            "6",
            "--set",
            "retention.ms=soon",
        ],
    );
    assert!(stderr.contains("INVALID_CONFIG (40)"), "{stderr}");
    assert!(stderr.contains("retention.ms"), "{stderr}");
    let description = describe_json(&broker, &[]);
    assert_eq!(description["partitions"].as_array().unwrap().len(), 4);
    assert_eq!(configs(&description)["retention.ms"].0, "1000");

    // Mistakes are Kafka errors with the broker's message, not panics.
    let stderr = fails(&broker.bootstrap(), &["create", TOPIC]);
    assert!(
        stderr.contains(&format!(
            "cannot create topic {TOPIC}: TOPIC_ALREADY_EXISTS (36)"
        )),
        "{stderr}"
    );
    let stderr = fails(
        &broker.bootstrap(),
        &["create", "bad-config", "--config", "retention.ms=soon"],
    );
    assert!(stderr.contains("INVALID_CONFIG (40)"), "{stderr}");
    assert!(stderr.contains("`retention.ms`"), "{stderr}");
    let stderr = fails(
        &broker.bootstrap(),
        &["create", "bad-config", "--config", "no.such.config=1"],
    );
    assert!(stderr.contains("no.such.config"), "{stderr}");
    let stderr = fails(
        &broker.bootstrap(),
        &["create", "bad-rf", "--replication-factor", "3"],
    );
    assert!(stderr.contains("INVALID_REPLICATION_FACTOR"), "{stderr}");
    let stderr = fails(&broker.bootstrap(), &["alter", TOPIC, "--partitions", "2"]);
    assert!(stderr.contains("INVALID_PARTITIONS"), "{stderr}");
    for args in [
        &["describe", "missing"][..],
        &["alter", "missing", "--set", "retention.ms=1"],
        &["alter", "missing", "--partitions", "3"],
        &["delete", "missing"],
    ] {
        let stderr = fails(&broker.bootstrap(), args);
        assert!(
            stderr.contains("topic missing: UNKNOWN_TOPIC_OR_PARTITION (3)"),
            "{args:?}: {stderr}"
        );
    }
    let stderr = fails(
        &broker.bootstrap(),
        &["create", "twice", "--config", "a=1", "--config", "a=2"],
    );
    assert!(
        stderr.contains("config a is given more than once"),
        "{stderr}"
    );
    // Flag mistakes are clap's (status 2), before anything is sent.
    let out = crate::harness::sluice_cli(
        "topic",
        &broker.bootstrap(),
        &["create", "x", "--config", "novalue"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = crate::harness::sluice_cli("topic", &broker.bootstrap(), &["alter", TOPIC]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        listed(&broker),
        [TOPIC],
        "no failed command created a topic"
    );

    // Delete.
    let text = ok(&broker, &["delete", TOPIC]);
    eprintln!("delete:\n{text}");
    assert_eq!(text, format!("Deleted topic '{TOPIC}'.\n"));
    assert!(listed(&broker).is_empty());
    let stderr = fails(&broker.bootstrap(), &["describe", TOPIC]);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn an_unreachable_broker_is_a_clear_error() {
    crate::harness::assert_unreachable_broker_is_a_clear_error("topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_flag_alias_and_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("aliased", 1, &[]).await;
    let out = crate::harness::run_watched(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["topic", "list", "--bootstrap", &broker.bootstrap()])
            .env_remove("SLUICE_BOOTSTRAP_SERVER"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("aliased"));
    // SLUICE_BOOTSTRAP is read when no flag is given, before SLUICE_BOOTSTRAP_SERVER.
    let out = crate::harness::run_watched(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["topic", "list"])
            .env("SLUICE_BOOTSTRAP", broker.bootstrap())
            .env("SLUICE_BOOTSTRAP_SERVER", "127.0.0.1:1"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("aliased"));
}

/// `sluice topic reassign` and `reassignments` on one node: the errors Kafka answers with, a
/// no-op target, and an empty listing. (Moving replicas between nodes is tested in
/// `cluster::reassignment_replaces_a_node`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reassignment_errors_and_an_empty_listing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("moving", 1, &[]).await;
    let bootstrap = broker.bootstrap();

    let error = fails(
        &bootstrap,
        &["reassign", "nope", "--partition", "0", "--replicas", "1"],
    );
    assert!(error.contains("UNKNOWN_TOPIC_OR_PARTITION (3)"), "{error}");
    let error = fails(
        &bootstrap,
        &[
            "reassign",
            "moving",
            "--partition",
            "0",
            "--replicas",
            "1,7",
        ],
    );
    assert!(error.contains("INVALID_REPLICA_ASSIGNMENT (39)"), "{error}");
    assert!(error.contains("broker 7 is not registered"), "{error}");
    let error = fails(
        &bootstrap,
        &["reassign", "moving", "--partition", "0", "--cancel"],
    );
    assert!(
        error.contains("NO_REASSIGNMENT_IN_PROGRESS (85)"),
        "{error}"
    );

    // The current assignment as target: nothing to move.
    let text = ok(
        &broker,
        &["reassign", "moving", "--partition", "0", "--replicas", "1"],
    );
    assert!(
        text.contains("Reassigning partition 0 of 'moving' to replicas 1"),
        "{text}"
    );
    assert_eq!(
        ok(&broker, &["reassignments"]),
        "No partition reassignments in progress.\n"
    );
    assert_eq!(
        json(&ok(&broker, &["reassignments", "--output", "json"])),
        serde_json::json!([])
    );
}
