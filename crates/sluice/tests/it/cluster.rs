//! A replicated cluster of three `sluice serve` processes under failures: an idempotent acks=all
//! producer writes sequential values to a topic with rf=3 and `min.insync.replicas=2` while nodes
//! are killed -9, SIGSTOPped, resumed and restarted; afterwards every acknowledged value must be
//! read back exactly once, at the offset it was acknowledged at, in the order it was sent. Plus
//! metadata (brokers, replica placement), the cluster flags on a single node, and a partition
//! reassignment that replaces a node; transactions across partition leaders are in
//! [`transactions`], consumer groups across a coordinator kill in [`groups`]. What each test
//! checks is summarised in docs/design/cluster.md, "Cluster tests".

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Semaphore;

use crate::closing::Closing;
use crate::cluster_harness::{admin_status, metadata_from, Cluster};
use crate::harness::sluice_cli;

mod damage;
mod groups;
mod membership;
mod transactions;

/// Upper bound of every test here.
const TEST_LIMIT: Duration = Duration::from_secs(120);
/// Bound of one wait for the cluster to react (election, ISR change, restart).
const REACT_TIMEOUT: Duration = Duration::from_secs(30);
/// Produce requests in flight at once (the producer is paced well below this).
const MAX_IN_FLIGHT: usize = 1_000;

const TOPIC: &str = "t";

/// One acknowledged record of the workload.
#[derive(Debug, Clone, Copy)]
struct Ack {
    value: u64,
    offset: i64,
    sent_at: Instant,
    acked_at: Instant,
}

#[derive(Debug, Default)]
struct WorkloadLog {
    sent: u64,
    acked: Vec<Ack>,
    /// (value, error) of records that were not acknowledged.
    failed: Vec<(u64, String)>,
}

/// An idempotent acks=all producer writing `0, 1, 2, ...` to partition 0 of a topic in a
/// background task, recording what was acknowledged.
struct Workload {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<WorkloadLog>>,
    task: tokio::task::JoinHandle<()>,
}

impl Workload {
    fn start(cluster: &mut Cluster, topic: &str) -> Workload {
        let producer: FutureProducer = Cluster::client_config_for(&cluster.bootstrap())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "60000")
            .set("request.timeout.ms", "5000")
            // A SIGSTOPped broker keeps its connections open: without this, a metadata
            // request that librdkafka happens to send to it waits the default 60 s.
            .set("socket.timeout.ms", "5000")
            .set("metadata.max.age.ms", "5000")
            .set("topic.metadata.refresh.interval.ms", "1000")
            .create()
            .expect("producer");
        let stop = Arc::new(AtomicBool::new(false));
        let log: Arc<Mutex<WorkloadLog>> = Arc::default();
        let topic = topic.to_string();
        let task = {
            let stop = stop.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
                let mut deliveries = Vec::new();
                let mut value: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let permit = in_flight.clone().acquire_owned().await.expect("semaphore");
                    let payload = value.to_string();
                    let sent_at = Instant::now();
                    let record = FutureRecord::<(), _>::to(&topic)
                        .partition(0)
                        .payload(&payload);
                    match producer.send_result(record) {
                        Ok(delivery) => {
                            let log = log.clone();
                            deliveries.push(tokio::spawn(async move {
                                let result = delivery.await;
                                let acked_at = Instant::now();
                                drop(permit);
                                let mut log = log.lock().unwrap();
                                match result {
                                    Ok(Ok(d)) => log.acked.push(Ack {
                                        value,
                                        offset: d.offset,
                                        sent_at,
                                        acked_at,
                                    }),
                                    Ok(Err((e, _))) => log.failed.push((value, e.to_string())),
                                    Err(_) => log.failed.push((value, "canceled".into())),
                                }
                            }));
                        }
                        Err((e, _)) => {
                            log.lock().unwrap().failed.push((value, e.to_string()));
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    log.lock().unwrap().sent += 1;
                    value += 1;
                    // About 2,000 records a second: enough to land every failure mid-stream,
                    // little enough to read back quickly.
                    if value.is_multiple_of(10) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                for delivery in deliveries {
                    let _ = delivery.await;
                }
            })
        };
        Workload { stop, log, task }
    }

    /// Acknowledged records sent after `since`.
    fn acked_sent_after(&self, since: Instant) -> usize {
        self.log
            .lock()
            .unwrap()
            .acked
            .iter()
            .filter(|a| a.sent_at > since)
            .count()
    }

    /// Waits until `count` records sent after `since` are acknowledged; returns the time from
    /// `since` to the first such acknowledgement.
    async fn wait_acked_after(&self, since: Instant, count: usize, timeout: Duration) -> Duration {
        let deadline = Instant::now() + timeout;
        while self.acked_sent_after(since) < count {
            if Instant::now() >= deadline {
                let log = self.log.lock().unwrap();
                panic!(
                    "timed out after {timeout:?} waiting for {count} acknowledgements of records \
                     sent after the event; {} sent, {} acked, {} failed (first failures: {:?})",
                    log.sent,
                    log.acked.len(),
                    log.failed.len(),
                    &log.failed[..log.failed.len().min(3)]
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let log = self.log.lock().unwrap();
        log.acked
            .iter()
            .filter(|a| a.sent_at > since)
            .map(|a| a.acked_at.duration_since(since))
            .min()
            .expect("at least one ack")
    }

    /// Stops sending and waits (bounded) for every outstanding delivery.
    async fn finish(self, timeout: Duration) -> WorkloadLog {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(timeout, self.task)
            .await
            .expect("outstanding deliveries settled in time")
            .expect("producer task");
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// Reads partition `partition` of `topic` from the beginning up to its high watermark: (offset,
/// value) in offset order. Blocking, bounded by `timeout`.
fn read_partition(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Vec<(i64, String)> {
    let deadline = Instant::now() + timeout;
    let consumer: Closing = Closing::new(
        Cluster::client_config_for(bootstrap)
            // librdkafka's assign() needs a group.id, though it never joins or commits here.
            .set("group.id", "cluster-test-read-back")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .expect("consumer"),
    );
    let high_watermark = loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(3)) {
            Ok((_, high)) => break high,
            Err(e) if Instant::now() >= deadline => panic!("no watermarks for {topic}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).expect("assign");
    let mut out: Vec<(i64, String)> = Vec::new();
    while out.last().map_or(0, |(o, _)| o + 1) < high_watermark {
        assert!(
            Instant::now() < deadline,
            "read {} records of {topic}/{partition} up to offset {:?}, high watermark \
             {high_watermark}, in {timeout:?}",
            out.len(),
            out.last().map(|(o, _)| *o)
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push((
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(e)) => eprintln!("read back: consume error (retrying): {e}"),
            None => {}
        }
    }
    out
}

/// Checks a read-back partition against what was acknowledged: every acknowledged record is at
/// the offset it was acknowledged at; numeric values (the workload's) are strictly increasing, so
/// none is read twice or out of order. `extra` are other acknowledged (offset, value) pairs that
/// must be there too.
fn check_read_back(test: &str, read: &[(i64, String)], log: &WorkloadLog, extra: &[(i64, String)]) {
    let at: HashMap<i64, &str> = read.iter().map(|(o, v)| (*o, v.as_str())).collect();
    assert_eq!(at.len(), read.len(), "{test}: an offset was read twice");
    let mut previous: Option<u64> = None;
    let mut workload_values = 0usize;
    for (offset, value) in read {
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        workload_values += 1;
        if let Some(previous) = previous {
            assert!(
                value > previous,
                "{test}: value {value} at offset {offset} after value {previous} \
                 (duplicated or reordered)"
            );
        }
        previous = Some(value);
    }
    let mut missing = Vec::new();
    for ack in &log.acked {
        let expected = ack.value.to_string();
        if at.get(&ack.offset) != Some(&expected.as_str()) {
            missing.push((ack.value, ack.offset, at.get(&ack.offset).copied()));
        }
    }
    assert!(
        missing.is_empty(),
        "{test}: {} acknowledged records not read back at their offsets, first: {:?} \
         (value, acked offset, found there)",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    for (offset, value) in extra {
        assert_eq!(
            at.get(offset).copied(),
            Some(value.as_str()),
            "{test}: acknowledged record {value:?} not read back at offset {offset}"
        );
    }
    eprintln!(
        "{test}: {} sent, {} acked, {} failed, {} read back ({} workload values, {} extra acked)",
        log.sent,
        log.acked.len(),
        log.failed.len(),
        read.len(),
        workload_values,
        extra.len()
    );
}

/// [`three_nodes_with_topic`], then the workload, once 500 records are acknowledged.
async fn three_nodes_under_load(cluster: &mut Cluster) -> Workload {
    three_nodes_with_topic(cluster).await;
    let workload = Workload::start(cluster, TOPIC);
    workload
        .wait_acked_after(Instant::now(), 500, REACT_TIMEOUT)
        .await;
    workload
}

/// Starts three nodes and creates the one-partition rf=3 `min.insync.replicas=2` topic, waiting
/// until all three replicas are in sync.
async fn three_nodes_with_topic(cluster: &mut Cluster) {
    cluster.wait_ready(REACT_TIMEOUT).await;
    cluster
        .create_topic(TOPIC, 1, 3, &[("min.insync.replicas", "2")])
        .await;
    cluster.wait_for_isr_size(TOPIC, 0, 3, REACT_TIMEOUT).await;
}

async fn read_back_and_check(
    cluster: &mut Cluster,
    test: &str,
    log: &WorkloadLog,
    extra: &[(i64, String)],
) {
    let bootstrap = cluster.live_bootstrap();
    let read = tokio::task::spawn_blocking(move || {
        read_partition(&bootstrap, TOPIC, 0, Duration::from_secs(60))
    })
    .await
    .expect("read back");
    check_read_back(test, &read, log, extra);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill_restart_then_another_kill() {
    let mut cluster = Cluster::start_alone(3).await;
    Cluster::bounded(TEST_LIMIT, async {
        let workload = three_nodes_under_load(&mut cluster).await;

        let first = cluster.leader_of(TOPIC, 0).expect("a leader");
        let killed_at = Instant::now();
        cluster.kill9(first);
        let failover = workload.wait_acked_after(killed_at, 1, REACT_TIMEOUT).await;
        eprintln!(
            "failover: {} ms (kill -9 of leader {first})",
            failover.as_millis()
        );
        let second = cluster
            .wait_for_leader(TOPIC, 0, REACT_TIMEOUT, |l| l != first)
            .await;
        // `sluice cluster status` shows the dead node fenced and the partition under-replicated.
        let status = cluster_status_json(&cluster.listener(second));
        let fenced: Vec<i64> = status["brokers"]
            .as_array()
            .expect("brokers")
            .iter()
            .filter(|b| b["fenced"] == true)
            .filter_map(|b| b["node_id"].as_i64())
            .collect();
        assert_eq!(fenced, vec![i64::from(first)], "{status}");
        assert_eq!(
            status["under_replicated_partitions"],
            serde_json::json!([format!("{TOPIC}-0")]),
            "{status}"
        );
        workload
            .wait_acked_after(Instant::now(), 500, REACT_TIMEOUT)
            .await;

        cluster.restart(first);
        cluster.wait_in_isr(TOPIC, 0, first, REACT_TIMEOUT).await;
        workload
            .wait_acked_after(Instant::now(), 500, REACT_TIMEOUT)
            .await;

        // The second victim is the current leader unless that is the node just restarted (then
        // any other): either way acks=all now needs the restarted node's copy.
        let leader = cluster.leader_of(TOPIC, 0).unwrap_or(second);
        let victim = if leader != first {
            leader
        } else {
            *cluster
                .ids()
                .iter()
                .find(|id| **id != first)
                .expect("a third node")
        };
        let killed_at = Instant::now();
        cluster.kill9(victim);
        let failover = workload.wait_acked_after(killed_at, 1, REACT_TIMEOUT).await;
        eprintln!(
            "failover: {} ms (kill -9 of node {victim}, leader was {leader}; ISR now {:?})",
            failover.as_millis(),
            cluster.isr_of(TOPIC, 0)
        );
        workload
            .wait_acked_after(Instant::now(), 500, REACT_TIMEOUT)
            .await;

        let log = workload.finish(Duration::from_secs(70)).await;
        read_back_and_check(
            &mut cluster,
            "leader_kill_restart_then_another_kill",
            &log,
            &[],
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_leader_is_fenced() {
    let mut cluster = Cluster::start_alone(3).await;
    Cluster::bounded(TEST_LIMIT, async {
        let workload = three_nodes_under_load(&mut cluster).await;

        let old = cluster.leader_of(TOPIC, 0).expect("a leader");
        let paused_at = Instant::now();
        cluster.sigstop(old);
        // Metadata comes from the live nodes only, so this is the rest of the cluster's view.
        let new = cluster
            .wait_for_leader(TOPIC, 0, REACT_TIMEOUT, |l| l != old)
            .await;
        let failover = workload.wait_acked_after(paused_at, 1, REACT_TIMEOUT).await;
        eprintln!(
            "failover: {} ms (SIGSTOP of leader {old}, new leader {new})",
            failover.as_millis()
        );
        workload
            .wait_acked_after(Instant::now(), 300, REACT_TIMEOUT)
            .await;

        // Straight after SIGCONT the old leader may still believe it leads: a producer that
        // knows only its listener must never get an acknowledgement for a record that then
        // is not in the log.
        cluster.sigcont(old);
        let stale: FutureProducer = Cluster::client_config_for(&cluster.listener(old))
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.timeout.ms", "20000")
            .create()
            .expect("producer of the old leader");
        let mut pending = Vec::new();
        for i in 0..50 {
            let value = format!("stale-{i}");
            let delivery = stale
                .send_result(
                    FutureRecord::<(), _>::to(TOPIC)
                        .partition(0)
                        .payload(&value),
                )
                .map_err(|(e, _)| e)
                .expect("queue");
            pending.push((value, delivery));
        }
        let mut stale_acked = Vec::new();
        let mut stale_failed = 0;
        for (value, delivery) in pending {
            match delivery.await {
                Ok(Ok(d)) => stale_acked.push((d.offset, value)),
                _ => stale_failed += 1,
            }
        }
        eprintln!(
            "producer of the old leader: {} acked, {stale_failed} failed",
            stale_acked.len()
        );

        // Every node, the resumed one included, must see it back in the ISR as a follower of
        // the new leader (auto.leader.rebalance.enable=false: leadership stays where it is).
        let what = format!("node {old} in the ISR as a follower of {new}");
        cluster
            .wait_for_partition(TOPIC, 0, &what, REACT_TIMEOUT, |s| {
                s.leader == new && s.isr.contains(&old)
            })
            .await;
        workload
            .wait_acked_after(Instant::now(), 300, REACT_TIMEOUT)
            .await;
        let log = workload.finish(Duration::from_secs(70)).await;
        read_back_and_check(&mut cluster, "paused_leader_is_fenced", &log, &stale_acked).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_under_load() {
    let mut cluster = Cluster::start_alone(3).await;
    Cluster::bounded(TEST_LIMIT, async {
        let workload = three_nodes_under_load(&mut cluster).await;
        for id in cluster.ids() {
            let stopped_at = Instant::now();
            assert!(cluster.stop(id), "node {id} stops cleanly on SIGTERM");
            eprintln!(
                "node {id} stopped in {} ms",
                stopped_at.elapsed().as_millis()
            );
            workload
                .wait_acked_after(Instant::now(), 200, REACT_TIMEOUT)
                .await;
            cluster.restart(id);
            cluster.wait_ready(REACT_TIMEOUT).await;
            cluster.wait_in_isr(TOPIC, 0, id, REACT_TIMEOUT).await;
            workload
                .wait_acked_after(Instant::now(), 300, REACT_TIMEOUT)
                .await;
        }
        let log = workload.finish(Duration::from_secs(70)).await;
        read_back_and_check(&mut cluster, "rolling_restart_under_load", &log, &[]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metadata_lists_all_brokers() {
    let mut cluster = Cluster::start_alone(3).await;
    Cluster::bounded(TEST_LIMIT, async {
        cluster.wait_ready(REACT_TIMEOUT).await;
        let expected: BTreeMap<i32, (String, u16)> = cluster
            .ids()
            .into_iter()
            .map(|id| (id, ("127.0.0.1".to_string(), cluster.port(id))))
            .collect();
        // Every node, asked alone, lists all three with their listeners.
        for id in cluster.ids() {
            let listener = cluster.listener(id);
            let brokers = cluster
                .wait_until(
                    &format!("node {id}'s metadata to list all brokers"),
                    REACT_TIMEOUT,
                    |_| {
                        let metadata = metadata_from(&listener, None)
                            .ok_or_else(|| "no metadata answer".to_string())?;
                        let brokers: BTreeMap<i32, (String, u16)> = metadata
                            .brokers()
                            .iter()
                            .map(|b| (b.id(), (b.host().to_string(), b.port() as u16)))
                            .collect();
                        if brokers == expected {
                            Ok(brokers)
                        } else {
                            Err(format!("{brokers:?}, expected {expected:?}"))
                        }
                    },
                )
                .await;
            assert_eq!(brokers.len(), 3);
        }

        cluster.create_topic("spread", 6, 3, &[]).await;
        let states = cluster
            .wait_until(
                "all 6 partitions of spread with a leader",
                REACT_TIMEOUT,
                |c| {
                    let states: Vec<_> = (0..6).map(|p| c.partition_state("spread", p)).collect();
                    if states
                        .iter()
                        .all(|s| s.as_ref().is_some_and(|s| s.leader >= 0))
                    {
                        Ok(states.into_iter().flatten().collect::<Vec<_>>())
                    } else {
                        Err(format!("{states:?}"))
                    }
                },
            )
            .await;
        let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
        for (partition, state) in states.iter().enumerate() {
            let mut replicas = state.replicas.clone();
            replicas.sort_unstable();
            replicas.dedup();
            assert_eq!(
                replicas,
                cluster.ids(),
                "spread/{partition}: three distinct replicas, one per broker: {state:?}"
            );
            assert!(
                state.replicas.contains(&state.leader),
                "spread/{partition}: the leader is a replica: {state:?}"
            );
            *leaders.entry(state.leader).or_default() += 1;
        }
        assert_eq!(
            leaders,
            BTreeMap::from([(1, 2), (2, 2), (3, 2)]),
            "each broker leads two of the six partitions: {states:?}"
        );
    })
    .await;
}

/// `sluice cluster status --output json` against `bootstrap`, asserting success; the parsed
/// output.
fn cluster_status_json(bootstrap: &str) -> serde_json::Value {
    let out = sluice_cli("cluster", bootstrap, &["status", "--output", "json"]);
    assert!(
        out.status.success(),
        "sluice cluster status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// Runs `sluice topic ARGS --output json` against `bootstrap`, asserting success; the parsed
/// output.
fn topic_cli_json(bootstrap: &str, args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.extend(["--output", "json"]);
    let out = sluice_cli("topic", bootstrap, &args);
    assert!(
        out.status.success(),
        "sluice topic {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// "Replace node 1": a partition on nodes {1, 2} with acknowledged records is reassigned to
/// {2, 3}. Node 3 catches up and joins the ISR, the controller completes the move (node 1 led,
/// so leadership moves to 2), node 1 deletes its copy, no reassignment is listed any more, and
/// every record is read back from the new replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reassignment_replaces_a_node() {
    const MOVED: &str = "moved";
    const RECORDS: usize = 200;
    let mut cluster = Cluster::start_alone(3).await;
    Cluster::bounded(Duration::from_secs(60), async {
        cluster.wait_ready(REACT_TIMEOUT).await;
        cluster.create_topic_assigned(MOVED, &[&[1, 2]]).await;
        cluster
            .wait_for_partition(
                MOVED,
                0,
                "led by 1, replicas 1 and 2 in sync",
                REACT_TIMEOUT,
                |s| s.leader == 1 && s.replicas == [1, 2] && s.isr == [1, 2],
            )
            .await;
        let producer: FutureProducer = Cluster::client_config_for(&cluster.bootstrap())
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        // Sent together (pipelined), acknowledged by both replicas.
        let sends: Vec<_> = (0..RECORDS)
            .map(|i| {
                let producer = producer.clone();
                tokio::spawn(async move {
                    let value = i.to_string();
                    producer
                        .send(
                            FutureRecord::<(), _>::to(MOVED)
                                .partition(0)
                                .payload(&value),
                            Duration::from_secs(10),
                        )
                        .await
                        .map(|delivery| (delivery.offset, value.clone()))
                        .map_err(|(e, _)| e.to_string())
                })
            })
            .collect();
        let mut acked: Vec<(i64, String)> = Vec::with_capacity(RECORDS);
        for send in sends {
            acked.push(send.await.expect("send task").expect("acks=all produce"));
        }
        acked.sort_unstable();
        assert_eq!(
            acked.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            (0..RECORDS as i64).collect::<Vec<_>>()
        );
        let node1_copy = cluster.data_dir(1).join(format!("{MOVED}-0"));
        assert!(
            node1_copy.is_dir(),
            "{} before the move",
            node1_copy.display()
        );

        // The CLI takes one broker; any broker takes reassignments (node 3 is not a replica yet).
        let bootstrap = cluster.listener(3);
        let started = tokio::task::block_in_place(|| {
            topic_cli_json(
                &bootstrap,
                &["reassign", MOVED, "--partition", "0", "--replicas", "2,3"],
            )
        });
        assert_eq!(started["replicas"], serde_json::json!([2, 3]), "{started}");
        let done = cluster
            .wait_for_partition(
                MOVED,
                0,
                "replicas 2 and 3, both in sync",
                REACT_TIMEOUT,
                |s| s.replicas == [2, 3] && s.isr == [2, 3] && s.leader >= 0,
            )
            .await;
        assert_eq!(done.leader, 2, "the first target replica leads: {done:?}");
        cluster
            .wait_until("node 1 to delete its copy", REACT_TIMEOUT, |_| {
                if node1_copy.exists() {
                    Err(format!("{} still exists", node1_copy.display()))
                } else {
                    Ok(())
                }
            })
            .await;
        let listed = tokio::task::block_in_place(|| topic_cli_json(&bootstrap, &["reassignments"]));
        assert_eq!(
            listed,
            serde_json::json!([]),
            "nothing in progress after the move"
        );

        let new_replicas = cluster.bootstrap_of(&[2, 3]);
        let read = tokio::task::spawn_blocking(move || {
            read_partition(&new_replicas, MOVED, 0, Duration::from_secs(20))
        })
        .await
        .expect("read back");
        assert_eq!(
            read, acked,
            "every acknowledged record, at its offset, from the new replicas"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_node_flags() {
    let mut cluster = Cluster::start(1);
    Cluster::bounded(TEST_LIMIT, async {
        let args = cluster.serve_args(1).join(" ");
        assert!(
            args.contains(&format!("--voters {}", cluster.voters())),
            "{args}"
        );
        assert!(cluster.voters().starts_with("1@127.0.0.1:"), "{args}");
        cluster.wait_ready(REACT_TIMEOUT).await;
        cluster
            .create_topic("single", 1, 1, &[("min.insync.replicas", "1")])
            .await;
        let producer: FutureProducer = cluster
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "20000")
            .create()
            .expect("producer");
        let mut acked = Vec::new();
        for i in 0..100u64 {
            let value = i.to_string();
            let delivery = producer
                .send(
                    FutureRecord::<(), _>::to("single")
                        .partition(0)
                        .payload(&value),
                    Duration::from_secs(5),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("delivered");
            acked.push((delivery.offset, value));
        }
        let bootstrap = cluster.bootstrap();
        let read = tokio::task::spawn_blocking(move || {
            read_partition(&bootstrap, "single", 0, Duration::from_secs(30))
        })
        .await
        .expect("read back");
        assert_eq!(read, acked);
        let metadata = cluster.metadata(None).expect("metadata");
        assert_eq!(
            metadata
                .brokers()
                .iter()
                .map(|b| (b.id(), b.port() as u16))
                .collect::<Vec<_>>(),
            [(1, cluster.port(1))]
        );
    })
    .await;
}

/// The harness's own process control, on one node (works without the cluster features): a
/// paused node stops answering and resumes, a killed node is gone and restarts on the same port
/// and data, SIGTERM stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn harness_controls_processes() {
    let mut cluster = Cluster::start(1);
    Cluster::bounded(TEST_LIMIT, async {
        cluster.wait_ready(REACT_TIMEOUT).await;
        let admin = cluster.admin_port(1);
        cluster.create_topic("h", 1, 1, &[]).await;
        let producer: FutureProducer = cluster.client_config().create().expect("producer");
        producer
            .send(
                FutureRecord::<(), _>::to("h").partition(0).payload("kept"),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
        drop(producer);

        cluster.sigstop(1);
        assert!(cluster.is_running(1));
        assert_eq!(cluster.live_ids(), Vec::<i32>::new());
        assert_eq!(
            admin_status(admin, "/ready"),
            None,
            "a paused node does not answer"
        );
        cluster.sigcont(1);
        cluster.wait_ready(REACT_TIMEOUT).await;

        cluster.kill9(1);
        assert!(!cluster.is_running(1));
        assert_eq!(
            admin_status(admin, "/health"),
            None,
            "a killed node is gone"
        );
        cluster.restart(1);
        cluster.wait_ready(REACT_TIMEOUT).await;
        let bootstrap = cluster.bootstrap();
        let read = tokio::task::spawn_blocking(move || {
            read_partition(&bootstrap, "h", 0, Duration::from_secs(30))
        })
        .await
        .expect("read back");
        assert_eq!(
            read,
            [(0, "kept".to_string())],
            "restarted on the same data"
        );

        assert!(cluster.stop(1), "clean exit on SIGTERM");
        assert!(!cluster.is_running(1));
        cluster.restart(1);
        cluster.wait_ready(REACT_TIMEOUT).await;
        assert!(cluster.log_tail(1, 1000).contains("start #3"));
    })
    .await;
}

/// The workload and its checker on one node (works without the cluster features): records
/// acknowledged before a kill -9 and after the restart are all read back in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workload_survives_single_node_kill_and_restart() {
    let mut cluster = Cluster::start(1);
    Cluster::bounded(TEST_LIMIT, async {
        cluster.wait_ready(REACT_TIMEOUT).await;
        cluster.create_topic(TOPIC, 1, 1, &[]).await;
        let workload = Workload::start(&mut cluster, TOPIC);
        workload
            .wait_acked_after(Instant::now(), 500, REACT_TIMEOUT)
            .await;
        let killed_at = Instant::now();
        cluster.kill9(1);
        cluster.restart(1);
        let back = workload.wait_acked_after(killed_at, 1, REACT_TIMEOUT).await;
        eprintln!(
            "single node: kill -9 to the next ack: {} ms",
            back.as_millis()
        );
        workload
            .wait_acked_after(Instant::now(), 300, REACT_TIMEOUT)
            .await;
        let log = workload.finish(Duration::from_secs(70)).await;
        assert!(log.acked.len() >= 800, "{} acked", log.acked.len());
        read_back_and_check(
            &mut cluster,
            "workload_survives_single_node_kill_and_restart",
            &log,
            &[],
        )
        .await;
    })
    .await;
}

/// The read-back checker refuses a lost, a moved, a duplicated and a reordered record.
#[test]
fn check_read_back_catches_loss_duplicates_and_reordering() {
    let now = Instant::now();
    let acked = |values: &[(u64, i64)]| WorkloadLog {
        sent: values.len() as u64,
        acked: values
            .iter()
            .map(|(value, offset)| Ack {
                value: *value,
                offset: *offset,
                sent_at: now,
                acked_at: now,
            })
            .collect(),
        failed: Vec::new(),
    };
    let read = |values: &[(i64, &str)]| -> Vec<(i64, String)> {
        values.iter().map(|(o, v)| (*o, v.to_string())).collect()
    };
    let good = read(&[(0, "0"), (1, "1"), (2, "stale-0"), (3, "3")]);
    check_read_back(
        "good",
        &good,
        &acked(&[(0, 0), (1, 1), (3, 3)]),
        &[(2, "stale-0".into())],
    );
    let refused = |read: Vec<(i64, String)>, log: WorkloadLog, extra: Vec<(i64, String)>| {
        std::panic::catch_unwind(move || check_read_back("bad", &read, &log, &extra)).is_err()
    };
    // Lost.
    assert!(refused(read(&[(0, "0")]), acked(&[(0, 0), (1, 1)]), vec![]));
    // Acknowledged at another offset.
    assert!(refused(read(&[(1, "0")]), acked(&[(0, 0)]), vec![]));
    // Duplicated.
    assert!(refused(
        read(&[(0, "0"), (1, "0")]),
        acked(&[(0, 0)]),
        vec![]
    ));
    // Reordered.
    assert!(refused(read(&[(0, "1"), (1, "0")]), acked(&[]), vec![]));
    // A lost record of the old leader's producer.
    assert!(refused(
        read(&[(0, "0")]),
        acked(&[(0, 0)]),
        vec![(1, "stale-0".into())]
    ));
}

/// `sluice serve` refuses a voter list without this node, before binding anything.
#[test]
fn voters_without_this_node_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = crate::harness::run_watched(
            std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
                .arg("serve")
                .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
                .arg("--data-dir")
                .arg(dir.path())
                .args(args)
                .env_remove("SLUICE_NODE_ID")
                .env_remove("SLUICE_VOTERS")
                .env_remove("SLUICE_CONTROLLER_LISTEN"),
        );
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let voters = "1@127.0.0.1:19092,2@127.0.0.1:19093";
    let stderr = run(&["--node-id", "3", "--voters", voters]);
    assert!(
        stderr.starts_with("error: --node-id 3 is not one of the voters (1, 2)"),
        "{stderr}"
    );
    let stderr = run(&["--voters", voters]);
    assert!(stderr.contains("--node-id (node.id) is not"), "{stderr}");
}
