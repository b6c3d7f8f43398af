//! `sluice perf produce|consume` as a user runs them: the real binary against a real broker, with
//! small numbers and no timing assertions (only that the reports are complete and consistent).

use serde_json::Value;

use crate::harness::{cli_fails, cli_ok, Broker};

const RECORDS: u64 = 20_000;
const RECORD_SIZE: u64 = 100;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

fn number(report: &Value, field: &str) -> f64 {
    report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no number `{field}` in {report}"))
}

/// Checks what every produce report must hold, whatever the machine's speed.
fn assert_consistent_produce_report(report: &Value, records: u64) {
    assert_eq!(report["records"], records, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["record_size_bytes"], RECORD_SIZE, "{report}");
    assert!(number(report, "records_per_sec") > 0.0, "{report}");
    assert!(number(report, "mb_per_sec") > 0.0, "{report}");
    assert!(number(report, "elapsed_secs") > 0.0, "{report}");
    let latencies: Vec<f64> = [
        "p50_latency_ms",
        "p95_latency_ms",
        "p99_latency_ms",
        "p999_latency_ms",
        "max_latency_ms",
    ]
    .iter()
    .map(|f| number(report, f))
    .collect();
    assert!(latencies.windows(2).all(|w| w[0] <= w[1]), "{report}");
    let avg = number(report, "avg_latency_ms");
    assert!(avg >= 0.0 && avg <= latencies[4], "{report}");
}

#[test]
fn produced_records_are_reported_and_consumed_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let records = RECORDS.to_string();
    let size = RECORD_SIZE.to_string();

    let report = json(&cli_ok(
        "perf",
        &broker,
        &[
            "produce",
            "--topic",
            "bench",
            "--num-records",
            &records,
            "--record-size",
            &size,
            "--acks",
            "1",
            "--partitions",
            "3",
            "--json",
        ],
    ));
    assert_consistent_produce_report(&report, RECORDS);
    assert_eq!(report["topic"], "bench");
    assert_eq!(report["discard"], false);

    // The topic was created with the partitions asked for.
    let description = json(&cli_ok(
        "topic",
        &broker,
        &["describe", "bench", "--output", "json"],
    ));
    assert_eq!(
        description["partitions"].as_array().map(Vec::len),
        Some(3),
        "{description}"
    );

    // A second run into the existing topic, throttled, with compression and acks=all; text output.
    let text = cli_ok(
        "perf",
        &broker,
        &[
            "produce",
            "--topic",
            "bench",
            "--num-records",
            "1000",
            "--record-size",
            &size,
            "--throughput",
            "20000",
            "--acks",
            "all",
            "--compression",
            "zstd",
            "--partitions",
            "3",
        ],
    );
    assert!(
        text.starts_with("1000 records sent, ") && text.trim_end().ends_with(" ms latency"),
        "{text}"
    );
    for field in [
        "records/sec",
        "MB/sec",
        "avg ",
        "p50 ",
        "p95 ",
        "p99 ",
        "p99.9 ",
        "max ",
    ] {
        assert!(text.contains(field), "no `{field}` in {text}");
    }

    // Everything comes back, from the beginning, without a group.
    let total = RECORDS + 1000;
    let report = json(&cli_ok(
        "perf",
        &broker,
        &[
            "consume",
            "--topic",
            "bench",
            "--messages",
            &total.to_string(),
            "--json",
        ],
    ));
    assert_eq!(report["records"], total, "{report}");
    assert_eq!(report["bytes"], total * RECORD_SIZE, "{report}");
    assert!(number(&report, "records_per_sec") > 0.0, "{report}");
    assert!(number(&report, "mb_per_sec") > 0.0, "{report}");
    assert!(
        number(&report, "elapsed_secs") * 1000.0 >= number(&report, "startup_ms"),
        "{report}"
    );

    // And through a consumer group.
    let text = cli_ok(
        "perf",
        &broker,
        &[
            "consume",
            "--topic",
            "bench",
            "--messages",
            "500",
            "--group",
            "perf-group",
        ],
    );
    assert!(
        text.starts_with("500 records consumed (50000 bytes) in "),
        "{text}"
    );

    // Asking for more records than the topic holds fails after the idle timeout, not hangs. A
    // read that takes over a second prints progress lines (stderr) before the error.
    let out = crate::harness::sluice_cli(
        "perf",
        &broker.bootstrap(),
        &[
            "consume",
            "--topic",
            "bench",
            "--messages",
            &(total + 1).to_string(),
            "--timeout-ms",
            "1000",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&format!("error: read {total} of {} records", total + 1))),
        "{stderr}"
    );
}

#[test]
fn discard_measures_the_loop_alone() {
    // No broker: --discard sends nothing, so the address is never dialled.
    let out = crate::harness::sluice_cli(
        "perf",
        "127.0.0.1:1",
        &[
            "produce",
            "--topic",
            "nowhere",
            "--num-records",
            &RECORDS.to_string(),
            "--record-size",
            &RECORD_SIZE.to_string(),
            "--discard",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&String::from_utf8_lossy(&out.stdout));
    assert_consistent_produce_report(&report, RECORDS);
    assert_eq!(report["discard"], true);
}

#[test]
fn flag_errors_are_refused() {
    // Neither --num-records nor --duration-secs.
    cli_fails(
        "perf",
        "127.0.0.1:1",
        &["produce", "--topic", "t", "--record-size", "10"],
        Some(2),
    );
    cli_fails(
        "perf",
        "127.0.0.1:1",
        &[
            "produce",
            "--topic",
            "t",
            "--record-size",
            "10",
            "--num-records",
            "5",
            "--throughput",
            "0",
        ],
        Some(2),
    );
}

#[test]
fn transactional_produce_commits_every_transaction_size_records() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let report = json(&cli_ok(
        "perf",
        &broker,
        &[
            "produce",
            "--topic",
            "txn-bench",
            "--num-records",
            "2050",
            "--record-size",
            &RECORD_SIZE.to_string(),
            "--transaction-size",
            "100",
            "--partitions",
            "2",
            "--json",
        ],
    ));
    assert_consistent_produce_report(&report, 2050);
    // 20 full transactions and one of 50.
    assert_eq!(report["transactions"], 21, "{report}");
    // Everything was committed: the topic's end offsets hold the records and 21 markers per
    // partition that took part (read_committed readers see all 2050 records).
    let description = json(&cli_ok(
        "topic",
        &broker,
        &["describe", "txn-bench", "--output", "json"],
    ));
    let ends: i64 = description["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            p["log_end_offset"]
                .as_i64()
                .unwrap_or_else(|| panic!("{p}"))
        })
        .sum();
    assert!(ends > 2050 && ends <= 2050 + 2 * 21, "{description}");
}

#[test]
fn an_unreachable_broker_is_a_clear_error_at_once() {
    // librdkafka alone would retry quietly for the whole delivery timeout.
    let flags = [
        "--topic",
        "t",
        "--record-size",
        "100",
        "--num-records",
        "10",
    ];
    crate::harness::assert_unreachable_broker_is_a_clear_error_for(
        "perf",
        &[&["produce"][..], &flags].concat(),
    );
    crate::harness::assert_unreachable_broker_is_a_clear_error_for(
        "perf",
        &["consume", "--topic", "t", "--messages", "10"],
    );
    crate::harness::assert_unreachable_broker_is_a_clear_error_for(
        "perf",
        &[&["end-to-end", "--throughput", "10"][..], &flags].concat(),
    );
}

#[test]
fn produce_reports_progress_and_gives_up_within_the_timeout_when_the_broker_goes_away() {
    use std::io::BufRead as _;

    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    let mut child = crate::harness::spawn_sluice(
        &[
            "perf",
            "produce",
            "--topic",
            "doomed",
            "--partitions",
            "1",
            "--duration-secs",
            "5",
            "--throughput",
            "200",
            "--record-size",
            "10",
            "--timeout-ms",
            "2000",
        ],
        &broker.bootstrap(),
        std::process::Stdio::null(),
    );
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    // Records are delivered; then the broker dies.
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("records sent") && !l.starts_with("0 records"))
    {
        seen.push(
            lines
                .recv()
                .expect("a progress line before perf produce ends"),
        );
    }
    broker.kill9();
    seen.extend(lines.iter());
    let out = crate::harness::wait_watched(child);
    let stderr = seen.join("\n");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Progress lines go on while nothing is delivered...
    let idle = seen
        .iter()
        .filter(|l| l.starts_with("0 records sent"))
        .count();
    assert!(
        idle >= 2,
        "progress lines while nothing is delivered:\n{stderr}"
    );
    // ...and undelivered records fail after --timeout-ms rather than librdkafka's 5 minutes.
    let error = seen
        .iter()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    assert!(
        error.contains("records failed delivery (each had --timeout-ms, 2000 ms"),
        "{error}"
    );
    assert!(error.contains("Message timed out"), "{error}");
}
