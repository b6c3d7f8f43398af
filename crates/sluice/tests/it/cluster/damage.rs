//! A killed leader whose closed segment was damaged on disk comes back: it quarantines the
//! damaged range (nothing deleted), leaves the ISR and leadership, fetches the range again from
//! the new leader, and rejoins the ISR; when it then leads alone, every acknowledged record is
//! served from its copy, once and in order.

use std::time::Instant;

use super::{read_back_and_check, Workload, REACT_TIMEOUT, TEST_LIMIT, TOPIC};
use crate::cluster_harness::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_leader_refetches_the_range_and_rejoins_the_isr() {
    let mut cluster = Cluster::start_alone(3).await;
    Cluster::bounded(TEST_LIMIT, async {
        cluster.wait_ready(REACT_TIMEOUT).await;
        let (victim, other) = (1, 2);
        // Two replicas, the victim preferred; small segments so it has closed ones; one
        // in-sync replica is enough for acks=all, so writes go on while the victim is away.
        cluster
            .create_topic_assigned_with(
                TOPIC,
                &[&[victim, other]],
                &[("segment.bytes", "8192"), ("min.insync.replicas", "1")],
            )
            .await;
        cluster.wait_for_isr_size(TOPIC, 0, 2, REACT_TIMEOUT).await;
        assert_eq!(cluster.leader_of(TOPIC, 0), Some(victim));
        let workload = Workload::start(&mut cluster, TOPIC);
        workload
            .wait_acked_after(Instant::now(), 3000, REACT_TIMEOUT)
            .await;

        // The leader is killed, a byte of the last batch of its second (closed) segment changes
        // on disk, and it comes straight back: usually before the controller has fenced it, so
        // the metadata still names it leader and in sync, and it must hand leadership over
        // itself (else it is fenced first and returns as a follower out of the ISR).
        cluster.kill9(victim);
        let partition_dir = cluster.data_dir(victim).join(format!("{TOPIC}-0"));
        let segments = crate::damage::segments(&partition_dir);
        assert!(segments.len() >= 4, "{segments:?}");
        let victim_segment = segments[1].clone();
        let mut bytes = std::fs::read(&victim_segment).unwrap();
        let last_batch = sluice_log::testing::split_batches(&bytes)
            .last()
            .map(|(_, _, b)| b.len())
            .unwrap();
        let last_at = bytes.len() - last_batch;
        bytes[last_at + 70] ^= 0xFF;
        std::fs::write(&victim_segment, &bytes).unwrap();

        cluster.restart(victim);
        let back = Instant::now();
        cluster.wait_in_isr(TOPIC, 0, victim, REACT_TIMEOUT).await;
        workload.wait_acked_after(back, 500, REACT_TIMEOUT).await;
        let log = cluster.log_tail(victim, 400);
        let path = if log.contains("left the ISR") {
            "it left the ISR and leadership itself"
        } else {
            "it was fenced first"
        };
        eprintln!("damaged leader {victim} came back: {path}");
        assert!(
            log.lines()
                .any(|l| l.contains("ERROR") && l.contains("moved aside")),
            "{log}"
        );
        // The damaged file is kept, whole, in the quarantine directory.
        let quarantine = std::fs::read_dir(&partition_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("quarantine-"))
            })
            .expect("a quarantine directory");
        let kept = std::fs::read(quarantine.join(victim_segment.file_name().unwrap())).unwrap();
        assert_eq!(kept, bytes);

        // The other replica stops: the victim leads alone and serves everything from its copy.
        assert!(cluster.stop(other));
        cluster
            .wait_for_leader(TOPIC, 0, REACT_TIMEOUT, |l| l == victim)
            .await;
        workload
            .wait_acked_after(Instant::now(), 200, REACT_TIMEOUT)
            .await;
        let log = workload.finish(std::time::Duration::from_secs(70)).await;
        read_back_and_check(
            &mut cluster,
            "a_damaged_leader_refetches_the_range_and_rejoins_the_isr",
            &log,
            &[],
        )
        .await;
        assert_eq!(cluster.leader_of(TOPIC, 0), Some(victim));
    })
    .await;
}
