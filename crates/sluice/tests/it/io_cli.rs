//! `sluice produce` and `sluice consume` as a user runs them: the real binary reading stdin and
//! writing stdout against a real broker, with librdkafka as the reference for key partitioning.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use rdkafka::producer::FutureRecord;

use crate::harness::{cli_fails, cli_ok, now_ms, spawn_sluice, wait_watched, Broker};
use crate::produce_consume::producer;

/// Runs `sluice produce ARGS` with `input` on stdin; asserts success, returns stderr.
fn produce(broker: &Broker, args: &[&str], input: &str) -> String {
    let args = [&["produce"][..], args].concat();
    let mut child = spawn_sluice(&args, &broker.bootstrap(), Stdio::piped());
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = wait_watched(child);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "sluice produce {args:?} failed:\n{stderr}"
    );
    stderr
}

fn consume(broker: &Broker, args: &[&str]) -> String {
    cli_ok("consume", broker, args)
}

fn create_topic(broker: &Broker, topic: &str, partitions: &str) {
    cli_ok(
        "topic",
        broker,
        &["create", topic, "--partitions", partitions],
    );
}

#[test]
fn keyed_lines_with_headers_round_trip_through_lz4() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    create_topic(&broker, "lines", "1");
    let summary = produce(
        &broker,
        &[
            "lines",
            "--key-separator",
            "::",
            "--header",
            "source=shell",
            "--header",
            "trace=a=b",
            "--compression",
            "lz4",
        ],
        "alice::first\nbob::second::part\nno separator\n::empty key\n",
    );
    assert!(summary.contains("produced 4 records to lines"), "{summary}");
    let text = consume(
        &broker,
        &[
            "lines",
            "--from",
            "beginning",
            "--exit-at-end",
            "--format",
            "%k|%s|%p|%o|%h\\n",
        ],
    );
    assert_eq!(
        text,
        "alice|first|0|0|source=shell,trace=a=b\n\
         bob|second::part|0|1|source=shell,trace=a=b\n\
         |no separator|0|2|source=shell,trace=a=b\n\
         |empty key|0|3|source=shell,trace=a=b\n"
    );
    // Every codec, and acks 0 and 1, append after them.
    for (i, codec) in ["none", "gzip", "snappy", "zstd"].iter().enumerate() {
        let acks = ["0", "1", "all", "all"][i];
        produce(
            &broker,
            &["lines", "--compression", codec, "--acks", acks],
            &format!("{codec}\n"),
        );
    }
    let text = consume(
        &broker,
        &[
            "lines",
            "--from",
            "4",
            "--exit-at-end",
            "--format",
            "%o %s %S\\n",
        ],
    );
    assert_eq!(text, "4 none 4\n5 gzip 4\n6 snappy 6\n7 zstd 4\n");
}

#[test]
fn count_timestamp_and_group_choose_what_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    create_topic(&broker, "events", "1");
    produce(&broker, &["events"], "a0\na1\na2\n");
    let before_b = now_ms();
    // Records of the second batch must carry a later millisecond than `before_b`.
    while now_ms() <= before_b {
        std::hint::spin_loop();
    }
    produce(&broker, &["events"], "b0\nb1\n");

    // --count stops early; the default format is the value and a newline.
    assert_eq!(
        consume(&broker, &["events", "--from", "beginning", "--count", "2"]),
        "a0\na1\n"
    );
    // --from @TIMESTAMP starts at the first record at or after it.
    let at = format!("@{}", before_b + 1);
    assert_eq!(
        consume(&broker, &["events", "--from", &at, "--exit-at-end"]),
        "b0\nb1\n"
    );
    // --from end with --exit-at-end prints nothing and exits.
    assert_eq!(consume(&broker, &["events", "--exit-at-end"]), "");

    // A group resumes after what it committed at exit.
    let group = ["--group", "readers"];
    let first = [
        &["events", "--from", "beginning", "--count", "3"][..],
        &group,
    ]
    .concat();
    assert_eq!(consume(&broker, &first), "a0\na1\na2\n");
    let described = cli_ok("group", &broker, &["describe", "readers"]);
    assert!(
        described.lines().any(|l| l
            .split_whitespace()
            .collect::<Vec<_>>()
            .starts_with(&["events", "0", "3", "5"])),
        "{described}"
    );
    let second = [
        &["events", "--from", "beginning", "--exit-at-end"][..],
        &group,
    ]
    .concat();
    assert_eq!(consume(&broker, &second), "b0\nb1\n");
    // Everything is committed now: nothing is left.
    assert_eq!(consume(&broker, &second), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_land_where_kafkas_default_partitioner_puts_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    create_topic(&broker, "keyed", "5");
    let keys: Vec<String> = (0..40).map(|i| format!("key-{i}")).collect();
    let input: String = keys.iter().map(|k| format!("{k}\tsluice\n")).collect();
    produce(&broker, &["keyed", "--key-separator", "\t"], &input);

    // murmur2_random is librdkafka's name for the Java client's default partitioner.
    let reference = producer(&broker, &[("partitioner", "murmur2_random")]);
    for key in &keys {
        reference
            .send(
                FutureRecord::to("keyed").key(key).payload("rdkafka"),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("rdkafka produce: {e}"));
    }

    let text = consume(
        &broker,
        &[
            "keyed",
            "--from",
            "beginning",
            "--exit-at-end",
            "--format",
            "%k %s %p\\n",
        ],
    );
    let mut placed: BTreeMap<(String, String), String> = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split(' ').collect();
        placed.insert((cells[0].into(), cells[1].into()), cells[2].into());
    }
    assert_eq!(placed.len(), 2 * keys.len(), "{text}");
    for key in &keys {
        assert_eq!(
            placed[&(key.clone(), "sluice".to_owned())],
            placed[&(key.clone(), "rdkafka".to_owned())],
            "{key}"
        );
    }
    let partitions: std::collections::BTreeSet<&String> = placed.values().collect();
    assert!(partitions.len() > 1, "every key on one partition: {text}");

    // Keyless records go round-robin, one batch (here: one run) at a time; --partition pins them.
    produce(&broker, &["keyed", "--partition", "3"], "pinned\n");
    let text = consume(
        &broker,
        &[
            "keyed",
            "--partition",
            "3",
            "--from",
            "beginning",
            "--exit-at-end",
        ],
    );
    assert!(text.ends_with("pinned\n"), "{text}");
}

#[test]
fn errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let bootstrap = broker.bootstrap();
    create_topic(&broker, "small", "2");
    produce(&broker, &["small", "--partition", "1"], "x\ny\n");

    let error = cli_fails(
        "consume",
        &bootstrap,
        &["missing", "--exit-at-end"],
        Some(1),
    );
    assert!(error.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{error}");
    let error = cli_fails("produce", &bootstrap, &["missing"], Some(1));
    assert!(error.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{error}");
    // The unknown topic was not auto-created.
    assert!(!cli_ok("topic", &broker, &["list"]).contains("missing"));

    for bad in ["yesterday", "-3", "@soon"] {
        let flag = format!("--from={bad}");
        let error = cli_fails("consume", &bootstrap, &["small", &flag], Some(2));
        assert!(error.contains("--from"), "{error}");
    }
    let error = cli_fails("consume", &bootstrap, &["small", "--format", "%x"], Some(2));
    assert!(error.contains("%x"), "{error}");

    let error = cli_fails(
        "consume",
        &bootstrap,
        &["small", "--partition", "1", "--from", "7", "--exit-at-end"],
        Some(1),
    );
    assert!(
        error.contains("OFFSET_OUT_OF_RANGE") && error.contains("small-1"),
        "{error}"
    );
    let error = cli_fails(
        "consume",
        &bootstrap,
        &["small", "--partition", "2"],
        Some(1),
    );
    assert!(error.contains("partition 2"), "{error}");
    let error = cli_fails("produce", &bootstrap, &["small", "--acks", "2"], Some(2));
    assert!(error.contains("--acks"), "{error}");
}
