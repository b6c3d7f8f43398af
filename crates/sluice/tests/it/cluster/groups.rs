//! Consumer groups across a three-node cluster: the group coordinator is the leader of the
//! group's `__consumer_offsets` partition; when it is killed -9, the partition's new leader takes
//! over coordination (replaying its replica) and a consumer of the same group resumes from the
//! committed offset.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::{REACT_TIMEOUT, TEST_LIMIT};
use crate::closing::Closing;
use crate::cluster_harness::{coordinator_partition, Cluster};

const TOPIC: &str = "grp";
const GROUP: &str = "cluster-group";
const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// The harness creates internal topics with this many partitions.
const OFFSETS_PARTITIONS: i32 = 3;
const RECORDS: usize = 100;
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn consumer(bootstrap: &str) -> Closing {
    let consumer: Closing = Closing::new(
        Cluster::client_config_for(bootstrap)
            .set("group.id", GROUP)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .create()
            .expect("consumer"),
    );
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    consumer
}

/// Polls `consumer` until `count` records arrived; their offsets in order.
fn consume(consumer: &BaseConsumer, count: usize) -> Vec<i64> {
    let deadline = Instant::now() + CALL_TIMEOUT;
    let mut offsets = Vec::new();
    while offsets.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} records within {CALL_TIMEOUT:?}",
            offsets.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => offsets.push(m.offset()),
            Some(Err(e)) => eprintln!("consume error (retrying): {e}"),
            None => {}
        }
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_offsets_survive_a_coordinator_kill() {
    let mut cluster = Cluster::start_alone(3).await;
    Cluster::bounded(TEST_LIMIT, async {
        cluster.wait_ready(REACT_TIMEOUT).await;
        cluster
            .create_topic(TOPIC, 1, 3, &[("min.insync.replicas", "2")])
            .await;
        cluster.wait_for_isr_size(TOPIC, 0, 3, REACT_TIMEOUT).await;
        let bootstrap = cluster.live_bootstrap();
        tokio::task::block_in_place(|| {
            let producer: BaseProducer = Cluster::client_config_for(&bootstrap)
                .set("acks", "all")
                .create()
                .expect("producer");
            for i in 0..RECORDS {
                let value = i.to_string();
                producer
                    .send(BaseRecord::<str, str>::to(TOPIC).payload(&value))
                    .map_err(|(e, _)| e)
                    .expect("send");
            }
            producer.flush(CALL_TIMEOUT).expect("flush");
        });

        // The first member reads half and commits it.
        let half = RECORDS / 2;
        let first = tokio::task::block_in_place(|| {
            let first = consumer(&bootstrap);
            let offsets = consume(&first, half);
            assert_eq!(offsets, (0..half as i64).collect::<Vec<_>>());
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(TOPIC, 0, Offset::Offset(half as i64))
                .expect("offset");
            first.commit(&tpl, CommitMode::Sync).expect("commit");
            first
        });
        drop(first);

        // Its coordinator dies; the offsets partition's new leader takes over.
        let partition = coordinator_partition(GROUP, OFFSETS_PARTITIONS);
        let coordinator = cluster
            .wait_for_leader(OFFSETS_TOPIC, partition, REACT_TIMEOUT, |_| true)
            .await;
        cluster.kill9(coordinator);
        let successor = cluster
            .wait_for_leader(OFFSETS_TOPIC, partition, REACT_TIMEOUT, |l| {
                l != coordinator
            })
            .await;
        eprintln!("group coordinator {coordinator} killed; {successor} took over");

        // A new member of the group resumes where the first committed.
        let bootstrap = cluster.live_bootstrap();
        tokio::task::block_in_place(|| {
            let second = consumer(&bootstrap);
            let offsets = consume(&second, RECORDS - half);
            assert_eq!(
                offsets,
                (half as i64..RECORDS as i64).collect::<Vec<_>>(),
                "the new member resumes at the committed offset"
            );
        });
    })
    .await;
}
