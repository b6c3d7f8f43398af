//! `sluice group list|describe|reset-offsets` as a user runs them: the real binary against a real
//! broker whose group was formed, consumed and committed by librdkafka.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

use crate::closing::Closing;
use crate::harness::{now_ms, Broker};
use crate::produce_consume::{produce_records, producer, Sent};

const TOPIC: &str = "orders";
const GROUP: &str = "billing";
const RECORDS: usize = 200;

/// A broker with a short initial rebalance delay (as in `groups.rs`).
fn start(dir: &std::path::Path) -> Broker {
    crate::harness::start_with_toml(dir, "\"group.initial.rebalance.delay.ms\" = 300\n")
}

fn member(broker: &Broker) -> Closing {
    crate::groups::member(broker, GROUP, TOPIC)
}

/// Runs the command, asserts it succeeded, returns its stdout.
fn ok(broker: &Broker, args: &[&str]) -> String {
    crate::harness::cli_ok("group", broker, args)
}

/// Runs the command, asserts it failed without panicking, returns its stderr.
fn fails(bootstrap: &str, args: &[&str]) -> String {
    crate::harness::cli_fails("group", bootstrap, args, None)
}

fn describe_json(broker: &Broker) -> Value {
    serde_json::from_str(&ok(broker, &["describe", GROUP, "--output", "json"])).expect("JSON")
}

/// (current offset, log end offset, lag, consumer id) per partition from describe's JSON.
fn rows(description: &Value) -> HashMap<i64, (Value, Value, Value, Value)> {
    description["partitions"]
        .as_array()
        .expect("partitions array")
        .iter()
        .map(|p| {
            assert_eq!(p["topic"], TOPIC);
            (
                p["partition"].as_i64().unwrap(),
                (
                    p["current_offset"].clone(),
                    p["log_end_offset"].clone(),
                    p["lag"].clone(),
                    p["consumer_id"].clone(),
                ),
            )
        })
        .collect()
}

/// The whitespace-separated cells of each line of a table.
fn cells(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// The plan of a reset, partition -> new offset, from its JSON.
fn plan(text: &str) -> HashMap<i64, i64> {
    let value: Value = serde_json::from_str(text).expect("JSON");
    value["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap(),
                p["new_offset"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_list_describe_and_reset_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    broker.create_topic(TOPIC, 2, &[]).await;
    let base_timestamp = now_ms() - 60_000;
    let produced: HashMap<i32, Vec<(i64, Sent)>> =
        produce_records(&producer(&broker, &[]), TOPIC, RECORDS, base_timestamp).await;
    let end = |p: i32| produced[&p].len() as i64;
    assert!(end(0) > 4 && end(1) > 4, "both partitions got records");
    // What the group commits: half of each partition.
    let committed = |p: i32| end(p) / 2;

    // An rdkafka member joins, reads, and commits half of each partition.
    let consumer = member(&broker);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut read = 0;
    while read < RECORDS {
        assert!(Instant::now() < deadline, "read only {read} records");
        if let Some(m) = consumer.poll(Duration::from_millis(50)) {
            m.expect("consume");
            read += 1;
        }
    }
    let mut offsets = TopicPartitionList::new();
    for p in 0..2 {
        offsets
            .add_partition_offset(TOPIC, p, Offset::Offset(committed(p)))
            .unwrap();
    }
    consumer.commit(&offsets, CommitMode::Sync).expect("commit");

    // While the member is active: list and describe show it, and a reset is refused.
    let listed = cells(&ok(&broker, &["list"]));
    assert_eq!(listed[0], ["GROUP", "STATE", "PROTOCOL-TYPE"]);
    assert!(
        listed.contains(&vec![GROUP.into(), "Stable".into(), "consumer".into()]),
        "{listed:?}"
    );
    let empty_only = ok(&broker, &["list", "--state", "empty"]);
    assert!(!empty_only.contains(GROUP), "{empty_only}");
    let active = describe_json(&broker);
    assert_eq!(active["state"], "Stable");
    assert_eq!(active["members"].as_array().unwrap().len(), 1);
    let member_id = active["members"][0]["member_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (p, (current, log_end, lag, consumer_id)) in rows(&active) {
        let p = p as i32;
        assert_eq!(current, committed(p), "partition {p}");
        assert_eq!(log_end, end(p), "partition {p}");
        assert_eq!(lag, end(p) - committed(p), "partition {p}");
        assert_eq!(consumer_id, member_id.as_str(), "partition {p}");
    }
    let text = ok(&broker, &["describe", GROUP]);
    eprintln!("describe (active):\n{text}");
    assert!(text.contains("is Stable with 1 member"), "{text}");
    let stderr = fails(
        &broker.bootstrap(),
        &[
            "reset-offsets",
            GROUP,
            "--topic",
            TOPIC,
            "--to-earliest",
            "--execute",
        ],
    );
    assert!(
        stderr.contains(&format!(
            "group {GROUP} is active; stop its consumers first"
        )),
        "{stderr}"
    );

    // The member leaves; the group is Empty with its commits kept.
    drop(consumer);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut description = describe_json(&broker);
    while description["state"] != "Empty" {
        assert!(Instant::now() < deadline, "still {}", description["state"]);
        std::thread::sleep(Duration::from_millis(100));
        description = describe_json(&broker);
    }
    let listed = ok(&broker, &["list"]);
    eprintln!("list:\n{listed}");
    assert!(cells(&listed).contains(&vec![GROUP.into(), "Empty".into(), "consumer".into()]));
    assert_eq!(description["members"].as_array().unwrap().len(), 0);
    let by_partition = rows(&description);
    assert_eq!(by_partition.len(), 2);
    for (p, (current, log_end, lag, consumer_id)) in by_partition {
        let p = p as i32;
        assert_eq!(current, committed(p));
        assert_eq!(log_end, end(p));
        assert_eq!(lag, end(p) - committed(p));
        assert!(consumer_id.is_null());
    }
    let text = ok(&broker, &["describe", GROUP]);
    eprintln!("describe (empty):\n{text}");
    let table = cells(&text);
    assert!(table.iter().any(|row| row[..]
        == [
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID"
        ]));
    let row0 = [
        TOPIC.to_owned(),
        "0".into(),
        committed(0).to_string(),
        end(0).to_string(),
        (end(0) - committed(0)).to_string(),
        "-".into(),
        "-".into(),
        "-".into(),
    ];
    assert!(table.iter().any(|row| row[..] == row0), "{text}");

    // Without --execute a reset only prints its plan.
    let out = crate::harness::sluice_cli(
        "group",
        &broker.bootstrap(),
        &["reset-offsets", GROUP, "--topic", TOPIC, "--to-earliest"],
    );
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    eprintln!("reset-offsets --to-earliest (plan):\n{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Dry run"));
    assert_eq!(
        cells(&stdout),
        [
            vec!["TOPIC", "PARTITION", "NEW-OFFSET"],
            vec![TOPIC, "0", "0"],
            vec![TOPIC, "1", "0"]
        ]
    );
    for (p, (current, ..)) in rows(&describe_json(&broker)) {
        assert_eq!(current, committed(p as i32), "a plan changes nothing");
    }

    // Every way of choosing offsets, as plans: clamped to [earliest, latest].
    let json_plan = |extra: &[&str]| {
        let mut args = vec!["reset-offsets", GROUP, "--output", "json"];
        args.extend_from_slice(extra);
        plan(&ok(&broker, &args))
    };
    assert_eq!(
        json_plan(&["--topic", TOPIC, "--to-latest"]),
        HashMap::from([(0, end(0)), (1, end(1))])
    );
    assert_eq!(
        json_plan(&["--topic", &format!("{TOPIC}:1"), "--to-offset", "3"]),
        HashMap::from([(1, 3)])
    );
    assert_eq!(
        json_plan(&["--topic", TOPIC, "--to-offset", "1000000"]),
        HashMap::from([(0, end(0)), (1, end(1))])
    );
    assert_eq!(
        json_plan(&["--all-topics", "--shift-by", "-2"]),
        HashMap::from([(0, committed(0) - 2), (1, committed(1) - 2)])
    );
    assert_eq!(
        json_plan(&["--topic", TOPIC, "--shift-by", "1000000"]),
        HashMap::from([(0, end(0)), (1, end(1))])
    );
    // The record produced as number 100 has timestamp base + 100: the first offset at or after it.
    let at = base_timestamp + 100;
    let first_at = |p: i32| {
        produced[&p]
            .iter()
            .find(|(_, sent)| sent.timestamp >= at)
            .map_or(end(p), |(offset, _)| *offset)
    };
    assert_eq!(
        json_plan(&["--topic", TOPIC, "--to-datetime", &at.to_string()]),
        HashMap::from([(0, first_at(0)), (1, first_at(1))])
    );
    assert_eq!(
        json_plan(&["--topic", TOPIC, "--to-datetime", "2999-01-01T00:00:00Z"]),
        HashMap::from([(0, end(0)), (1, end(1))])
    );

    // --execute commits: describe (OffsetFetch) shows 0 and the whole log as lag.
    let stdout = ok(
        &broker,
        &[
            "reset-offsets",
            GROUP,
            "--topic",
            TOPIC,
            "--to-earliest",
            "--execute",
        ],
    );
    eprintln!("reset-offsets --to-earliest --execute:\n{stdout}");
    for (p, (current, log_end, lag, _)) in rows(&describe_json(&broker)) {
        let p = p as i32;
        assert_eq!(
            (current, log_end, lag),
            (0.into(), end(p).into(), end(p).into())
        );
    }
    // A new member resumes where the reset put it.
    let consumer = member(&broker);
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        assert!(
            Instant::now() < deadline,
            "nothing consumed after the reset"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(50)) {
            break m.expect("consume").offset();
        }
    };
    assert_eq!(first, 0);
    drop(consumer);

    // Mistakes are reported, not panics.
    let stderr = fails(
        &broker.bootstrap(),
        &[
            "reset-offsets",
            GROUP,
            "--topic",
            "missing",
            "--to-earliest",
        ],
    );
    assert!(stderr.contains("topic missing does not exist"), "{stderr}");
    let stderr = fails(
        &broker.bootstrap(),
        &[
            "reset-offsets",
            GROUP,
            "--topic",
            &format!("{TOPIC}:7"),
            "--to-earliest",
        ],
    );
    assert!(stderr.contains("has no partition 7"), "{stderr}");
    let stderr = fails(&broker.bootstrap(), &["describe", "no-such-group"]);
    assert!(
        stderr.contains("group no-such-group does not exist"),
        "{stderr}"
    );
    let stderr = fails(
        &broker.bootstrap(),
        &[
            "reset-offsets",
            GROUP,
            "--topic",
            TOPIC,
            "--to-datetime",
            "2024-01-01T00:00:00",
        ],
    );
    assert!(stderr.contains("time zone"), "{stderr}");
}

#[test]
fn an_unreachable_broker_is_a_clear_error() {
    crate::harness::assert_unreachable_broker_is_a_clear_error("group");
}
