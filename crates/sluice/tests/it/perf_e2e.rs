//! `sluice perf end-to-end` as a user runs it: the real binary against a real broker, with small
//! numbers and no timing assertions (only that the report is complete and consistent).

use serde_json::Value;

use crate::harness::{cli_fails, cli_ok, Broker};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

fn number(report: &Value, field: &str) -> f64 {
    report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no number `{field}` in {report}"))
}

#[test]
fn every_record_sent_is_received_once_with_its_latency() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    // Records already in the topic are before the consumer's start offsets and are not read.
    cli_ok(
        "perf",
        &broker,
        &[
            "produce",
            "--topic",
            "e2e",
            "--num-records",
            "500",
            "--record-size",
            "100",
            "--partitions",
            "3",
        ],
    );

    let report = json(&cli_ok(
        "perf",
        &broker,
        &[
            "end-to-end",
            "--topic",
            "e2e",
            "--throughput",
            "2000",
            "--num-records",
            "3000",
            "--record-size",
            "100",
            "--json",
        ],
    ));
    assert_eq!(report["topic"], "e2e", "{report}");
    assert_eq!(report["sent"], 3000, "{report}");
    assert_eq!(report["records"], 3000, "{report}");
    assert_eq!(report["missing"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["foreign"], 0, "{report}");
    assert_eq!(report["record_size_bytes"], 100, "{report}");
    assert_eq!(report["acks"], "1", "{report}");
    assert_eq!(number(&report, "target_records_per_sec"), 2000.0);
    for field in ["send_secs", "records_per_sec", "mb_per_sec"] {
        assert!(number(&report, field) > 0.0, "{field}: {report}");
    }
    assert!(number(&report, "elapsed_secs") >= number(&report, "send_secs"));
    let latencies: Vec<f64> = [
        "p50_latency_ms",
        "p95_latency_ms",
        "p99_latency_ms",
        "p999_latency_ms",
        "max_latency_ms",
    ]
    .iter()
    .map(|field| number(&report, field))
    .collect();
    assert!(latencies[0] > 0.0, "{report}");
    assert!(latencies.windows(2).all(|w| w[0] <= w[1]), "{report}");
    let avg = number(&report, "avg_latency_ms");
    assert!(avg > 0.0 && avg <= latencies[4], "{report}");
}

#[test]
fn text_report_and_acks_all_over_a_duration() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let text = cli_ok(
        "perf",
        &broker,
        &[
            "end-to-end",
            "--topic",
            "e2e-all",
            "--partitions",
            "2",
            "--throughput",
            "500",
            "--duration-secs",
            "1",
            "--record-size",
            "24",
            "--acks",
            "all",
        ],
    );
    let line = text.trim();
    assert!(line.contains(" records, "), "{line}");
    assert!(line.contains("end-to-end latency avg "), "{line}");
    assert!(line.contains("p99.9 "), "{line}");
    let records: u64 = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no record count in {line}"));
    assert!(records > 0, "{line}");
}

#[test]
fn bad_flags_are_refused() {
    // A record too small for the 24-byte stamp, and a rate that is not a fixed positive one.
    let address = "127.0.0.1:9";
    for args in [
        &[
            "end-to-end",
            "--topic",
            "t",
            "--throughput",
            "10",
            "--num-records",
            "1",
            "--record-size",
            "23",
        ][..],
        &[
            "end-to-end",
            "--topic",
            "t",
            "--throughput",
            "-1",
            "--num-records",
            "1",
        ],
        &["end-to-end", "--topic", "t", "--throughput", "10"],
    ] {
        cli_fails("perf", address, args, Some(2));
    }
}
