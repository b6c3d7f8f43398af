//! Consumer groups through librdkafka: members split partitions, rebalance when one leaves, commit
//! offsets that survive restarts, and independent groups on one topic.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::harness::{now_ms, Broker};
use crate::produce_consume::{produce_records, producer};

/// A config with a short initial rebalance delay, so tests do not wait Kafka's 3 s.
fn start(dir: &std::path::Path) -> Broker {
    let config = dir.join("sluice.toml");
    std::fs::write(&config, "\"group.initial.rebalance.delay.ms\" = 300\n").unwrap();
    Broker::start_with(&dir.join("data"), &["--config", config.to_str().unwrap()])
}

fn member(broker: &Broker, group: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

fn assigned(consumer: &BaseConsumer) -> BTreeSet<i32> {
    consumer
        .assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls every consumer (collecting messages) until `done` holds or `timeout` passes.
fn poll_until(
    consumers: &[&BaseConsumer],
    seen: &mut Vec<(usize, i32, i64)>,
    timeout: Duration,
    done: impl Fn(&[&BaseConsumer], &[(usize, i32, i64)]) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for (i, c) in consumers.iter().enumerate() {
            if let Some(m) = c.poll(Duration::from_millis(20)) {
                let m = m.expect("consume");
                seen.push((i, m.partition(), m.offset()));
            }
        }
        if done(consumers, seen) {
            return true;
        }
    }
    false
}

fn split_exactly(consumers: &[&BaseConsumer], partitions: i32) -> bool {
    let sets: Vec<_> = consumers.iter().map(|c| assigned(c)).collect();
    let total: usize = sets.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
    total == partitions as usize
        && union == (0..partitions).collect()
        && sets.iter().all(|s| !s.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_split_partitions_and_take_over_when_one_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    broker.create_topic("six", 6, &[]).await;
    let produced = produce_records(&producer(&broker, &[]), "six", 600, now_ms()).await;
    assert_eq!(produced.len(), 6);

    let a = member(&broker, "splitters", "six");
    let b = member(&broker, "splitters", "six");
    let c = member(&broker, "splitters", "six");
    let mut seen = Vec::new();
    let started = Instant::now();
    let ok = poll_until(
        &[&a, &b, &c],
        &mut seen,
        Duration::from_secs(60),
        |cs, seen| split_exactly(cs, 6) && seen.len() >= 600,
    );
    let sets: Vec<_> = [&a, &b, &c].iter().map(|c| assigned(c)).collect();
    assert!(ok, "assignments {sets:?}, {} records", seen.len());
    eprintln!(
        "3 members joined and consumed 600 records in {:?}",
        started.elapsed()
    );
    // Each record exactly once across the group.
    let mut by_offset: HashMap<(i32, i64), usize> = HashMap::new();
    for (_, p, o) in &seen {
        *by_offset.entry((*p, *o)).or_default() += 1;
    }
    assert_eq!(by_offset.len(), 600);
    assert!(by_offset.values().all(|&n| n == 1), "duplicates");

    // Commit where each member is, then one member leaves: the others take its partitions.
    for consumer in [&a, &b, &c] {
        consumer
            .commit_consumer_state(CommitMode::Sync)
            .expect("commit");
    }
    let left = assigned(&c);
    drop(c);
    let started = Instant::now();
    let ok = poll_until(&[&a, &b], &mut seen, Duration::from_secs(30), |cs, _| {
        split_exactly(cs, 6)
    });
    assert!(ok, "after leave: {:?} {:?}", assigned(&a), assigned(&b));
    eprintln!("rebalance after a member left took {:?}", started.elapsed());
    assert!(left
        .iter()
        .all(|p| assigned(&a).contains(p) || assigned(&b).contains(p)));

    // The committed offsets are the log ends (everything was consumed).
    let mut wanted = TopicPartitionList::new();
    for p in 0..6 {
        wanted.add_partition("six", p);
    }
    let committed = a
        .committed_offsets(wanted, Duration::from_secs(10))
        .expect("offset fetch");
    for e in committed.elements() {
        let end = produced[&e.partition()].len() as i64;
        assert_eq!(
            e.offset(),
            Offset::Offset(end),
            "partition {}",
            e.partition()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_restarts_and_groups_are_independent() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start(dir.path());
    broker.create_topic("resume", 1, &[]).await;
    let p = producer(&broker, &[]);
    produce_records(&p, "resume", 100, now_ms()).await;
    drop(p);

    // Group one reads 40 records and commits offset 40.
    let reader = member(&broker, "one", "resume");
    let mut seen = Vec::new();
    assert!(poll_until(
        &[&reader],
        &mut seen,
        Duration::from_secs(30),
        |_, s| s.len() >= 40
    ));
    let mut at = TopicPartitionList::new();
    at.add_partition_offset("resume", 0, Offset::Offset(40))
        .unwrap();
    reader.commit(&at, CommitMode::Sync).expect("commit 40");
    drop(reader);

    for restart in ["clean", "kill -9"] {
        if restart == "clean" {
            assert!(broker.stop(), "clean stop");
        } else {
            broker.kill9();
        }
        broker = start(dir.path());
        let reader = member(&broker, "one", "resume");
        let mut seen = Vec::new();
        assert!(
            poll_until(&[&reader], &mut seen, Duration::from_secs(30), |_, s| !s
                .is_empty()),
            "after {restart}: nothing consumed"
        );
        assert_eq!(
            seen[0].2, 40,
            "after {restart}: resumes at the committed offset"
        );
        drop(reader);
    }

    // A second group on the same topic starts from the beginning, unaffected.
    let other = member(&broker, "two", "resume");
    let mut seen = Vec::new();
    assert!(poll_until(
        &[&other],
        &mut seen,
        Duration::from_secs(30),
        |_, s| s.len() >= 100
    ));
    assert_eq!(seen[0].2, 0);
    assert_eq!(seen.len(), 100);
}
