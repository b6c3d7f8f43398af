//! Proof of cluster membership across three processes (issue 13, finding 3): a client forging a
//! follower's fetches cannot make the leader acknowledge writes no follower has, nothing on the
//! controller port is served to a connection without the cluster secret, and a node with
//! another secret cannot join and says why in its log.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{read_partition, three_nodes_with_topic, REACT_TIMEOUT, TEST_LIMIT, TOPIC};
use crate::cluster_harness::{admin_status, metadata_from, Cluster};
use crate::membership::{connect_port, follower_fetch, latest_offset, TOPIC_AUTHORIZATION_FAILED};

/// Sends `count` records with acks=all, each bounded by `timeout`; returns (offset, value) of
/// those acknowledged and how many were not.
async fn send_all(
    producer: &FutureProducer,
    prefix: &str,
    count: usize,
    timeout: Duration,
) -> (Vec<(i64, String)>, usize) {
    let mut sends = Vec::new();
    for i in 0..count {
        let value = format!("{prefix}-{i}");
        let record = FutureRecord::<(), _>::to(TOPIC)
            .partition(0)
            .payload(&value);
        let delivery = producer.send_result(record).expect("queued");
        sends.push((value, delivery));
    }
    let mut acked = Vec::new();
    let mut failed = 0;
    for (value, delivery) in sends {
        match tokio::time::timeout(timeout, delivery).await {
            Ok(Ok(Ok(d))) => acked.push((d.offset, value)),
            _ => failed += 1,
        }
    }
    (acked, failed)
}

/// Both followers of an rf=3, `min.insync.replicas=2` partition are frozen while a plain client
/// sends Fetch as each of them with `fetch_offset` 10^9 every 50 ms. Before the fix that moved
/// the high watermark to the leader's log end and acknowledged acks=all writes only the leader
/// had, which a leader kill then lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_follower_fetches_cannot_acknowledge_writes() {
    let mut cluster = Cluster::start_alone(3).await;
    Cluster::bounded(TEST_LIMIT, async {
        three_nodes_with_topic(&mut cluster).await;
        let leader = cluster.leader_of(TOPIC, 0).expect("a leader");
        let followers: Vec<i32> = cluster
            .ids()
            .into_iter()
            .filter(|&id| id != leader)
            .collect();
        let producer: FutureProducer = cluster
            .client_config()
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("request.timeout.ms", "3000")
            .set("message.timeout.ms", "8000")
            .create()
            .expect("producer");
        let (before, lost) = send_all(&producer, "before", 100, Duration::from_secs(30)).await;
        assert_eq!(
            (before.len(), lost),
            (100, 0),
            "every record acked before the attack"
        );

        for &follower in &followers {
            cluster.sigstop(follower);
        }
        let leader_port = cluster.port(leader);
        let high_watermark = tokio::task::spawn_blocking(move || {
            latest_offset(&mut connect_port(leader_port), TOPIC, 0)
        })
        .await
        .unwrap();
        assert_eq!(high_watermark, 100);

        // The forger, until the producer below is done.
        let stop = Arc::new(AtomicBool::new(false));
        let forger = {
            let stop = stop.clone();
            let followers = followers.clone();
            std::thread::spawn(move || {
                let mut stream = connect_port(leader_port);
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for &follower in &followers {
                        answers.extend(follower_fetch(
                            &mut stream,
                            TOPIC,
                            0,
                            follower,
                            1_000_000_000,
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                answers
            })
        };
        let (during, refused) = send_all(&producer, "during", 50, Duration::from_secs(30)).await;
        stop.store(true, Ordering::Relaxed);
        let answers = tokio::task::spawn_blocking(move || forger.join().expect("forger"))
            .await
            .unwrap();
        assert!(
            during.is_empty(),
            "acks=all writes were acknowledged with both followers frozen: {during:?}"
        );
        assert_eq!(refused, 50);
        assert!(
            answers.len() >= 10,
            "the forger kept at it: {} answers",
            answers.len()
        );
        assert!(
            answers
                .iter()
                .all(|&code| code == TOPIC_AUTHORIZATION_FAILED),
            "every forged fetch refused: {answers:?}"
        );
        let high_watermark = tokio::task::spawn_blocking(move || {
            latest_offset(&mut connect_port(leader_port), TOPIC, 0)
        })
        .await
        .unwrap();
        assert_eq!(
            high_watermark, 100,
            "the forged fetches did not move the high watermark"
        );
        assert!(cluster.log_contains(leader, "refused a follower fetch"));

        // The leader dies; the followers come back and one of them leads: nothing that was
        // acknowledged is lost.
        cluster.kill9(leader);
        for &follower in &followers {
            cluster.sigcont(follower);
        }
        cluster
            .wait_for_leader(TOPIC, 0, REACT_TIMEOUT, |l| l != leader)
            .await;
        let bootstrap = cluster.live_bootstrap();
        let read = tokio::task::spawn_blocking(move || {
            read_partition(&bootstrap, TOPIC, 0, Duration::from_secs(60))
        })
        .await
        .expect("read back");
        for (offset, value) in &before {
            assert!(
                read.contains(&(*offset, value.clone())),
                "acknowledged {value} at offset {offset} is gone; read {} records",
                read.len()
            );
        }
    })
    .await;
}

/// One frame of the controller protocol: big-endian length, then JSON.
fn controller_frame(json: &str) -> Vec<u8> {
    let mut frame = (json.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(json.as_bytes());
    frame
}

/// Sends `json` as one frame to a node's controller port and reports what came back: `None`
/// when the node closed the connection without answering.
fn controller_answer(port: u16, json: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(&controller_frame(json)).expect("send");
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(String::from_utf8_lossy(&body).into_owned())
}

/// Well-formed metadata-quorum RPCs from a process without the cluster secret — a proposal to
/// delete the topic, a vote for a far higher term with a longer log, a heartbeat — reach no
/// node's Raft: each connection is closed unanswered and the metadata is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_controller_port_serves_only_members() {
    let mut cluster = Cluster::start_alone(3).await;
    Cluster::bounded(TEST_LIMIT, async {
        three_nodes_with_topic(&mut cluster).await;
        let producer: FutureProducer = cluster
            .client_config()
            .set("acks", "all")
            .create()
            .expect("producer");
        let (acked, lost) = send_all(&producer, "kept", 20, Duration::from_secs(30)).await;
        assert_eq!((acked.len(), lost), (20, 0));
        let before = cluster.partition_state(TOPIC, 0).expect("partition state");

        for id in cluster.ids() {
            let port = cluster.controller_port(id);
            let rpcs = [
                format!(r#"{{"target":{id},"body":{{"Propose":{{"RemoveTopic":{{"name":"{TOPIC}"}}}}}}}}"#),
                format!(
                    r#"{{"target":{id},"body":{{"Vote":{{"vote":{{"leader_id":{{"term":1000,"node_id":9}},"committed":false}},"last_log_id":{{"leader_id":{{"term":1000,"node_id":9}},"index":1000000}},"leadership_transfer":false}}}}}}"#
                ),
                format!(r#"{{"target":{id},"body":{{"Heartbeat":{{"from":{id}}}}}}}"#),
            ];
            for rpc in rpcs {
                let answer = tokio::task::spawn_blocking(move || controller_answer(port, &rpc))
                    .await
                    .unwrap();
                assert_eq!(answer, None, "node {id} answered an unauthenticated RPC");
            }
        }
        assert!(
            cluster
                .ids()
                .iter()
                .any(|&id| cluster.log_contains(id, "refused a metadata RPC connection")),
            "the refusals are logged"
        );

        let after = cluster.partition_state(TOPIC, 0).expect("the topic still exists");
        assert_eq!(after, before, "leader, replicas and ISR unchanged");
        let bootstrap = cluster.live_bootstrap();
        let read = tokio::task::spawn_blocking(move || {
            read_partition(&bootstrap, TOPIC, 0, Duration::from_secs(30))
        })
        .await
        .expect("read back");
        assert_eq!(read, acked, "the topic's records are intact");
    })
    .await;
}

/// Brokers listed in Metadata from node `id` (sorted); None when it does not answer.
fn brokers_seen_by(cluster: &Cluster, id: i32) -> Option<Vec<i32>> {
    let metadata = metadata_from(&cluster.listener(id), None)?;
    let mut brokers: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
    brokers.sort_unstable();
    Some(brokers)
}

/// Node 3 starts with another cluster's secret: nodes 1 and 2 form the cluster without it, it
/// never joins, and both sides say why in their logs. Given the cluster's secret it joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_another_secret_cannot_join() {
    let mut cluster = Cluster::new_alone(3).await;
    cluster.give_foreign_secret(3);
    cluster.start_all();
    Cluster::bounded(TEST_LIMIT, async {
        cluster
            .wait_until("nodes 1 and 2 ready", REACT_TIMEOUT, |c| {
                let ready: Vec<bool> = [1, 2]
                    .iter()
                    .map(|&id| admin_status(c.admin_port(id), "/ready") == Some(200))
                    .collect();
                if ready.iter().all(|&r| r) {
                    Ok(())
                } else {
                    Err(format!("ready: {ready:?}"))
                }
            })
            .await;
        cluster
            .wait_until("node 3 to log why it cannot join", REACT_TIMEOUT, |c| {
                let why = c.log_contains(3, "cannot prove cluster membership")
                    && c.log_contains(3, "different cluster secrets");
                if why {
                    Ok(())
                } else {
                    Err(c.log_tail(3, 5))
                }
            })
            .await;
        assert!(
            [1, 2]
                .iter()
                .any(|&id| cluster.log_contains(id, "refused a metadata RPC connection")),
            "the members log the refusal"
        );
        let started = Instant::now();
        cluster
            .wait_until("the members to list only themselves", REACT_TIMEOUT, |c| {
                match brokers_seen_by(c, 1) {
                    Some(brokers) if brokers == vec![1, 2] => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await;
        assert_ne!(
            admin_status(cluster.admin_port(3), "/ready"),
            Some(200),
            "node 3 is not ready {:?} after the others",
            started.elapsed()
        );

        // With the cluster's secret it joins.
        cluster.kill9(3);
        cluster.give_cluster_secret(3);
        cluster.restart(3);
        cluster.wait_ready(REACT_TIMEOUT).await;
        cluster
            .wait_until(
                "all three brokers listed",
                REACT_TIMEOUT,
                |c| match brokers_seen_by(c, 3) {
                    Some(brokers) if brokers == vec![1, 2, 3] => Ok(()),
                    other => Err(format!("{other:?}")),
                },
            )
            .await;
    })
    .await;
}
