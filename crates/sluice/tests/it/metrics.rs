//! The admin HTTP listener: `/health`, `/ready`, and `/metrics` counting what librdkafka
//! produced, fetched and committed.

use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::closing::Closing;
use crate::harness::{now_ms, Broker};
use crate::produce_consume::{produce_records, producer, read_back};

/// The value of the sample named exactly `series` (name and labels as exposed).
pub(crate) fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|value| value.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no sample {series} in:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_report_health_readiness_and_traffic() {
    const RECORDS: usize = 100;
    const COMMITTED: i64 = 60;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    assert_eq!(broker.admin_get("/health"), (200, "ok".to_string()));
    assert_eq!(broker.admin_get("/ready").0, 200);
    assert_eq!(broker.admin_get("/nope").0, 404);

    broker.create_topic("metered", 1, &[]).await;
    let p = producer(&broker, &[]);
    produce_records(&p, "metered", RECORDS, now_ms()).await;
    drop(p);
    let read = read_back(
        &broker,
        "metered",
        1,
        Offset::Beginning,
        RECORDS,
        Duration::from_secs(30),
    );
    assert_eq!(read.len(), RECORDS);

    // A group commits without joining (assign-only), leaving RECORDS - COMMITTED to read.
    let committer: Closing = Closing::new(
        broker
            .client_config()
            .set("group.id", "metered-group")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer"),
    );
    let mut at = TopicPartitionList::new();
    at.add_partition_offset("metered", 0, Offset::Offset(COMMITTED))
        .unwrap();
    committer.commit(&at, CommitMode::Sync).expect("commit");

    let (status, metrics) = broker.admin_get("/metrics");
    assert_eq!(status, 200, "{metrics}");
    for line in [
        "# TYPE sluice_requests_total counter",
        "# TYPE sluice_request_duration_seconds histogram",
        "# TYPE sluice_connections_active gauge",
        "# TYPE sluice_fsync_duration_seconds histogram",
        "# TYPE sluice_log_size_bytes gauge",
        "# HELP sluice_consumer_group_lag ",
        "# TYPE sluice_under_replicated_partitions gauge",
        "# TYPE sluice_purgatory_size gauge",
    ] {
        assert!(metrics.contains(line), "no {line:?} in:\n{metrics}");
    }
    assert_eq!(
        sample(&metrics, r#"sluice_records_in_total{topic="metered"}"#),
        RECORDS as f64
    );
    assert!(sample(&metrics, r#"sluice_bytes_in_total{topic="metered"}"#) > 0.0);
    assert!(sample(&metrics, r#"sluice_bytes_out_total{topic="metered"}"#) > 0.0);
    let log_end = sample(
        &metrics,
        r#"sluice_log_end_offset{topic="metered",partition="0"}"#,
    );
    assert_eq!(log_end, RECORDS as f64);
    assert!(
        sample(
            &metrics,
            r#"sluice_log_size_bytes{topic="metered",partition="0"}"#
        ) > 0.0
    );
    assert!(sample(&metrics, r#"sluice_requests_total{api="Produce"}"#) > 0.0);
    assert!(sample(&metrics, r#"sluice_requests_total{api="Fetch"}"#) > 0.0);
    assert!(
        sample(
            &metrics,
            r#"sluice_request_duration_seconds_count{api="Produce"}"#
        ) > 0.0
    );
    assert!(sample(&metrics, "sluice_connections_active") >= 1.0);
    // One healthy node: nothing under-replicated; nothing waiting once the clients are done.
    assert_eq!(sample(&metrics, "sluice_under_replicated_partitions"), 0.0);
    assert_eq!(
        sample(&metrics, r#"sluice_purgatory_size{operation="produce"}"#),
        0.0
    );
    assert!(sample(&metrics, r#"sluice_purgatory_size{operation="fetch"}"#) >= 0.0);
    assert_eq!(
        sample(
            &metrics,
            r#"sluice_consumer_group_lag{group="metered-group",topic="metered",partition="0"}"#
        ),
        log_end - COMMITTED as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_fetches_count_in_purgatory() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("quiet", 1, &[]).await;
    // A consumer on an empty partition whose fetches wait up to 3 s for data.
    let waiting: Closing = Closing::new(
        broker
            .client_config()
            .set("group.id", "unused-assign-only")
            .set("fetch.wait.max.ms", "3000")
            .create()
            .expect("consumer"),
    );
    let mut at = TopicPartitionList::new();
    at.add_partition_offset("quiet", 0, Offset::Beginning)
        .unwrap();
    waiting.assign(&at).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let _ = waiting.poll(Duration::from_millis(50));
        let (_, metrics) = broker.admin_get("/metrics");
        if sample(&metrics, r#"sluice_purgatory_size{operation="fetch"}"#) >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no fetch in purgatory within 30 s:\n{metrics}"
        );
    }
    // Once the client is gone its fetch is answered (or dropped) and leaves purgatory.
    drop(waiting);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = broker.admin_get("/metrics");
        if sample(&metrics, r#"sluice_purgatory_size{operation="fetch"}"#) == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fetch stayed in purgatory:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
