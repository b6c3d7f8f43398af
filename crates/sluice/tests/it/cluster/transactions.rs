//! Transactions across a three-node cluster: the coordinator writes markers to partitions led by
//! other brokers (WriteTxnMarkers), a read_committed consumer sees exactly the committed
//! transactions, and after the coordinator is killed -9 a new producer instance with the same
//! transactional id fences the old one (aborting its open transaction) and commits more.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::{REACT_TIMEOUT, TEST_LIMIT};
use crate::closing::Closing;
use crate::cluster_harness::{coordinator_partition, Cluster};

const TOPIC: &str = "txn";
const PARTITIONS: i32 = 3;
const TXN_ID: &str = "cluster-txn";
const TXN_STATE_TOPIC: &str = "__transaction_state";
/// The harness creates internal topics with this many partitions.
const TXN_STATE_PARTITIONS: i32 = 3;
/// Bounds each transactional call of the producer (init, commit, abort, flush).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A transactional producer of `bootstrap`, initialised (which fences older instances).
fn txn_producer(bootstrap: &str) -> BaseProducer {
    let producer: BaseProducer = Cluster::client_config_for(bootstrap)
        .set("transactional.id", TXN_ID)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("transactional producer");
    producer
        .init_transactions(CALL_TIMEOUT)
        .expect("init_transactions");
    producer
}

/// Begins a transaction and writes three records named `{name}-{partition}-{i}` to each
/// partition, flushed (acknowledged by every in-sync replica); returns the values.
fn write_open_txn(producer: &BaseProducer, name: &str) -> Vec<String> {
    producer.begin_transaction().expect("begin_transaction");
    let mut values = Vec::new();
    for partition in 0..PARTITIONS {
        for i in 0..3 {
            let value = format!("{name}-{partition}-{i}");
            producer
                .send(
                    BaseRecord::to(TOPIC)
                        .partition(partition)
                        .key(&value)
                        .payload(&value),
                )
                .map_err(|(e, _)| e)
                .expect("send");
            values.push(value);
        }
    }
    producer.flush(CALL_TIMEOUT).expect("flush");
    values
}

/// Every value of the topic from the beginning to its end (the last stable offset when
/// `committed`), sorted, read by a fresh consumer of `bootstrap`.
fn read_all(bootstrap: &str, committed: bool) -> Vec<String> {
    let isolation = if committed {
        "read_committed"
    } else {
        "read_uncommitted"
    };
    let consumer: Closing = Closing::new(
        Cluster::client_config_for(bootstrap)
            .set("group.id", "cluster-txn-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", isolation)
            .create()
            .expect("consumer"),
    );
    let mut tpl = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, partition, Offset::Beginning)
            .expect("partition offset");
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + CALL_TIMEOUT;
    let mut at_end = HashSet::new();
    let mut values = Vec::new();
    while at_end.len() < PARTITIONS as usize {
        assert!(
            Instant::now() < deadline,
            "{isolation}: the end of every partition not reached in {CALL_TIMEOUT:?}; at end: \
             {at_end:?}, read: {values:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => eprintln!("{isolation} read: consume error (retrying): {e}"),
            None => {}
        }
    }
    values.sort();
    values
}

fn sorted(groups: &[&[String]]) -> Vec<String> {
    let mut all: Vec<String> = groups.iter().flat_map(|g| g.iter().cloned()).collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_span_partition_leaders_and_survive_coordinator_kill() {
    let mut cluster = Cluster::start_alone(3).await;
    Cluster::bounded(TEST_LIMIT, async {
        cluster.wait_ready(REACT_TIMEOUT).await;
        cluster
            .create_topic(TOPIC, PARTITIONS, 3, &[("min.insync.replicas", "2")])
            .await;
        let mut leaders = BTreeSet::new();
        for partition in 0..PARTITIONS {
            let state = cluster
                .wait_for_isr_size(TOPIC, partition, 3, REACT_TIMEOUT)
                .await;
            leaders.insert(state.leader);
        }
        assert!(
            leaders.len() >= 2,
            "the partitions of {TOPIC} are led by different brokers: {leaders:?}"
        );

        // Committed and aborted transactions whose markers go to every leader.
        let bootstrap = cluster.live_bootstrap();
        let (producer, committed_1, aborted, committed_2) = tokio::task::block_in_place(|| {
            let producer = txn_producer(&bootstrap);
            let committed_1 = write_open_txn(&producer, "c1");
            producer
                .commit_transaction(CALL_TIMEOUT)
                .expect("commit c1");
            let aborted = write_open_txn(&producer, "a2");
            producer.abort_transaction(CALL_TIMEOUT).expect("abort a2");
            let committed_2 = write_open_txn(&producer, "c3");
            producer
                .commit_transaction(CALL_TIMEOUT)
                .expect("commit c3");
            (producer, committed_1, aborted, committed_2)
        });
        let read = tokio::task::block_in_place(|| read_all(&bootstrap, true));
        assert_eq!(
            read,
            sorted(&[&committed_1, &committed_2]),
            "read_committed"
        );
        let read = tokio::task::block_in_place(|| read_all(&bootstrap, false));
        assert_eq!(
            read,
            sorted(&[&committed_1, &aborted, &committed_2]),
            "read_uncommitted"
        );

        // The old instance leaves a transaction open; its coordinator dies.
        let open = tokio::task::block_in_place(|| write_open_txn(&producer, "z4"));
        let coordinator_partition = coordinator_partition(TXN_ID, TXN_STATE_PARTITIONS);
        let coordinator = cluster
            .wait_for_leader(
                TXN_STATE_TOPIC,
                coordinator_partition,
                REACT_TIMEOUT,
                |_| true,
            )
            .await;
        cluster.kill9(coordinator);
        let new_coordinator = cluster
            .wait_for_leader(
                TXN_STATE_TOPIC,
                coordinator_partition,
                REACT_TIMEOUT,
                |leader| leader != coordinator,
            )
            .await;
        eprintln!("coordinator {coordinator} killed; {new_coordinator} took over");

        // A new instance fences the old one (aborting its open transaction) and commits.
        let bootstrap = cluster.live_bootstrap();
        let committed_3 = tokio::task::block_in_place(|| {
            let fresh = txn_producer(&bootstrap);
            let fenced = producer.commit_transaction(Duration::from_secs(10));
            assert!(
                fenced.is_err(),
                "the old instance's commit must fail after the new one initialised"
            );
            let committed_3 = write_open_txn(&fresh, "c5");
            fresh.commit_transaction(CALL_TIMEOUT).expect("commit c5");
            committed_3
        });
        let read = tokio::task::block_in_place(|| read_all(&bootstrap, true));
        assert_eq!(
            read,
            sorted(&[&committed_1, &committed_2, &committed_3]),
            "read_committed after the coordinator's death"
        );
        let read = tokio::task::block_in_place(|| read_all(&bootstrap, false));
        assert_eq!(
            read,
            sorted(&[&committed_1, &aborted, &committed_2, &open, &committed_3]),
            "read_uncommitted after the coordinator's death"
        );
    })
    .await;
}
