//! The runtime in-process against a real broker: interactive queries, metrics, standby replicas
//! taking over a task without replaying its changelog, and the start-up checks (co-partitioning,
//! missing topics).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sluice_streams::{
    JoinWindows, KafkaStreams, Materialized, ProcessingGuarantee, Serdes, StreamsBuilder,
    StreamsConfig, TaskId, Topology,
};

use crate::harness::{wait_for, with_watchdog, Broker};

fn word_count() -> Topology {
    let b = StreamsBuilder::new();
    b.stream(
        "text-lines",
        Serdes::optional(Serdes::bytes()),
        Serdes::string(),
    )
    .flat_map_values(|l: String| {
        l.split_whitespace()
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
    })
    .group_by(|_, w| w.clone(), Serdes::string(), Serdes::string())
    .count(Materialized::named("counts"))
    .to_stream()
    .to_with("word-counts", Serdes::string(), Serdes::i64_decimal());
    b.build().unwrap()
}

fn config(broker: &Broker, dir: &std::path::Path, standbys: u32) -> StreamsConfig {
    StreamsConfig::new("iq", &broker.bootstrap())
        .processing_guarantee(ProcessingGuarantee::AtLeastOnce)
        .commit_interval(Duration::from_millis(200))
        .session_timeout(Duration::from_secs(10))
        .num_standby_replicas(standbys)
        .state_dir(dir)
        .client_property("broker.address.family", "v4")
}

fn lines(range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!("w{} w{} w{}", i % 7, i % 11, i % 5))
        .collect()
}

fn truth(lines: &[String]) -> HashMap<String, i64> {
    let mut t = HashMap::new();
    for l in lines {
        for w in l.split_whitespace() {
            *t.entry(w.to_string()).or_insert(0) += 1;
        }
    }
    t
}

fn produce(broker: &Broker, lines: &[String]) {
    let records: Vec<_> = lines.iter().map(|l| (None, l.clone(), None)).collect();
    broker.produce("text-lines", &records);
}

/// Every word's count as the instances' interactive queries see it.
fn queried(apps: &[&KafkaStreams], words: &HashMap<String, i64>) -> HashMap<String, i64> {
    let mut out = HashMap::new();
    for w in words.keys() {
        for app in apps {
            if let Ok(store) = app.key_value_store::<String, i64>("counts") {
                if let Ok(Some(c)) = store.get(w) {
                    out.insert(w.clone(), c);
                }
            }
        }
    }
    out
}

fn stateful(tasks: &[TaskId]) -> bool {
    tasks.iter().any(|t| t.subtopology == 1)
}

#[test]
fn interactive_queries_metrics_and_a_standby_taking_over_without_replay() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    with_watchdog(Duration::from_secs(300), || {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(&dir.path().join("broker"));
        broker.create_topic("text-lines", 2, &[]);
        broker.create_topic("word-counts", 2, &[]);
        let mut a = KafkaStreams::new(word_count(), config(&broker, &dir.path().join("a"), 1));
        let mut b = KafkaStreams::new(word_count(), config(&broker, &dir.path().join("b"), 1));
        a.start().unwrap();
        b.start().unwrap();
        let mut all = lines(0..100);
        produce(&broker, &all);
        let want = truth(&all);
        wait_for(
            "interactive queries to show every count",
            Duration::from_secs(120),
            || queried(&[&a, &b], &want) == want,
        );
        // Cooperative rebalancing moves tasks in two steps: wait until they all have an owner.
        wait_for(
            "every task to run on one of the instances",
            Duration::from_secs(60),
            || {
                a.local_tasks().len() + b.local_tasks().len() == 4
                    && !a.local_tasks().is_empty()
                    && !b.local_tasks().is_empty()
            },
        );
        // The instance that will stay keeps standby copies of the other's stateful tasks.
        let (leaving, staying) = if stateful(&a.local_tasks()) && !stateful(&b.local_tasks())
            || (stateful(&a.local_tasks()) && stateful(&b.local_tasks()))
        {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        assert!(
            stateful(&leaving.local_tasks()),
            "a {:?} b {:?}",
            leaving.local_tasks(),
            staying.local_tasks()
        );
        wait_for(
            "the standby copies to catch up",
            Duration::from_secs(60),
            || {
                let m = staying.metrics();
                m.standby_tasks > 0 && m.standby_records_behind == 0
            },
        );
        let restored_before = staying.metrics().records_restored;
        leaving.close(Duration::from_secs(60)).unwrap();
        wait_for(
            "the staying instance to run every task",
            Duration::from_secs(60),
            || staying.local_tasks().len() == 4,
        );
        assert_eq!(
            staying.metrics().records_restored,
            restored_before,
            "the task moved without replaying its changelog: its standby copy was current"
        );
        all.extend(lines(100..150));
        produce(&broker, &all[100..]);
        let want = truth(&all);
        wait_for(
            "counts after the takeover",
            Duration::from_secs(120),
            || queried(&[staying], &want) == want,
        );
        let m = staying.metrics();
        assert!(m.records_processed > 0 && m.commits > 0, "{m:?}");
        wait_for("lag to drain", Duration::from_secs(30), || {
            staying.metrics().consumer_lag == 0
        });
        staying.close(Duration::from_secs(60)).unwrap();
    });
}

#[test]
fn start_refuses_joins_of_topics_that_are_not_co_partitioned() {
    with_watchdog(Duration::from_secs(120), || {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(&dir.path().join("broker"));
        broker.create_topic("left", 2, &[]);
        broker.create_topic("right", 3, &[]);
        let b = StreamsBuilder::new();
        let l = b.stream("left", Serdes::string(), Serdes::string());
        let r = b.stream("right", Serdes::string(), Serdes::string());
        l.join(
            &r,
            |a, b| format!("{a}{b}"),
            JoinWindows::of(Duration::from_secs(1)),
        )
        .to_with("joined", Serdes::string(), Serdes::string());
        let mut app = KafkaStreams::new(b.build().unwrap(), config(&broker, dir.path(), 0));
        let err = app.start().unwrap_err().to_string();
        assert!(
            err.contains("not co-partitioned") && err.contains("repartition"),
            "{err}"
        );

        let b = StreamsBuilder::new();
        b.stream("missing", Serdes::string(), Serdes::string())
            .to("out");
        let mut app = KafkaStreams::new(b.build().unwrap(), config(&broker, dir.path(), 0));
        let started = Instant::now();
        let err = app.start().unwrap_err().to_string();
        assert!(err.contains("source topic missing does not exist"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(60));
    });
}
