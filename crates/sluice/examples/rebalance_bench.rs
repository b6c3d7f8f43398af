//! Consumer-group rebalance times with librdkafka against a running broker:
//!
//! ```sh
//! cargo run --release --example rebalance_bench -- 127.0.0.1:9092
//! ```
//! Creates a 6-partition topic `rebalance-<millis>`, starts three members of a new group (eager
//! `range` assignment, 6 s session, 500 ms heartbeat) and prints how long until all six partitions
//! are assigned; then closes one member and prints how long until the other two own all six.
//! The broker's `group.initial.rebalance.delay.ms` (3 s by default, as Kafka) is part of the first
//! figure.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn assigned(consumer: &BaseConsumer) -> BTreeSet<i32> {
    consumer
        .assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls until the members' assignments are disjoint, non-empty and cover all six partitions.
fn until_covered(members: &[&BaseConsumer], limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        for m in members {
            let _ = m.poll(Duration::from_millis(5));
        }
        let sets: Vec<_> = members.iter().map(|m| assigned(m)).collect();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        if total == 6 && union.len() == 6 && sets.iter().all(|s| !s.is_empty()) {
            return Some(started.elapsed());
        }
    }
    None
}

#[tokio::main]
async fn main() {
    let bootstrap = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9092".into());
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let topic = format!("rebalance-{millis}");
    let group = format!("rebalance-group-{millis}");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("admin client");
    admin
        .create_topics(
            [&NewTopic::new(&topic, 6, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create topic");
    let member = || -> BaseConsumer {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &group)
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        consumer.subscribe(&[&topic]).expect("subscribe");
        consumer
    };
    let (a, b, c) = (member(), member(), member());
    match until_covered(&[&a, &b, &c], Duration::from_secs(60)) {
        Some(t) => println!("join of 3 members: {:.0} ms", t.as_secs_f64() * 1000.0),
        None => println!("join of 3 members: not complete after 60 s"),
    }
    drop(c);
    match until_covered(&[&a, &b], Duration::from_secs(60)) {
        Some(t) => println!("one member leaving: {:.0} ms", t.as_secs_f64() * 1000.0),
        None => println!("one member leaving: not complete after 60 s"),
    }
}
