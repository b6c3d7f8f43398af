//! A one-voter `MetaNode`: proposals apply, and the state survives restarts and snapshots.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sluice_meta::{
    Listener, LogIndex, MetaNode, MetaOptions, MetadataRecord, MetadataState, NodeId, OpenError,
    Outcome, Rejection,
};

const NODE: NodeId = NodeId(1);

fn options() -> MetaOptions {
    MetaOptions {
        // Large enough that only the tests that want a snapshot get one.
        snapshot_every_entries: 10_000,
        entries_kept_after_snapshot: 0,
        ready_timeout: Duration::from_secs(10),
        address: "127.0.0.1:0".to_string(),
        ..MetaOptions::default()
    }
}

fn topic(name: &str, partitions: i32) -> MetadataRecord {
    MetadataRecord::Topic {
        name: name.to_string(),
        id: format!("00000000-0000-0000-0000-{:012}", name.len()),
        partitions,
        configs: BTreeMap::new(),
    }
}

/// Proposes a mix of every record kind; returns the state they should add up to.
async fn propose_mix(node: &MetaNode, first_topic: usize, topics: usize) -> MetadataState {
    for i in first_topic..first_topic + topics {
        let committed = node.propose(topic(&format!("t{i}"), 1)).await.unwrap();
        assert_eq!(committed.outcome, Outcome::Applied);
    }
    let configs = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
    let record = MetadataRecord::ConfigRecord {
        topic: format!("t{first_topic}"),
        configs,
    };
    assert_eq!(
        node.propose(record).await.unwrap().outcome,
        Outcome::Applied
    );
    let record = MetadataRecord::RegisterBroker {
        id: NODE,
        listeners: vec![Listener {
            name: "PLAINTEXT".to_string(),
            host: "localhost".to_string(),
            port: 9092,
        }],
        rack: None,
    };
    assert_eq!(
        node.propose(record).await.unwrap().outcome,
        Outcome::Applied
    );
    let next = node.state().producer_id_next + 1000;
    let record = MetadataRecord::ProducerIds { next };
    assert_eq!(
        node.propose(record).await.unwrap().outcome,
        Outcome::Applied
    );
    MetadataState::clone(&node.state())
}

async fn reopen(dir: &Path) -> MetaNode {
    MetaNode::open_with(dir, NODE, options()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_apply_in_order_and_are_visible_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = reopen(dir.path()).await;
    assert!(node.state().topics.is_empty());

    let first = node.propose(topic("a", 3)).await.unwrap();
    assert_eq!(first.outcome, Outcome::Applied);
    // Read-your-writes: the state is published before propose returns.
    assert_eq!(node.state().topics["a"].partitions, 3);

    let second = node.propose(topic("a", 1)).await.unwrap();
    assert!(second.index > first.index);
    assert!(matches!(
        second.outcome,
        Outcome::Rejected(Rejection::PartitionsDecreased { .. })
    ));
    assert_eq!(node.state().topics["a"].partitions, 3);

    let removed = node
        .propose(MetadataRecord::RemoveTopic {
            name: "a".to_string(),
        })
        .await
        .unwrap();
    assert_eq!(removed.outcome, Outcome::Applied);
    assert!(node.state().topics.is_empty());
    assert_eq!(node.applied_index(), Some(removed.index));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let node = reopen(dir.path()).await;
    let expected = propose_mix(&node, 0, 5).await;
    let applied = node.applied_index().unwrap();
    node.shutdown().await.unwrap();

    let node = reopen(dir.path()).await;
    assert_eq!(*node.state(), expected);
    assert!(node.applied_index().unwrap() >= applied);
    let expected = propose_mix(&node, 5, 3).await;
    node.shutdown().await.unwrap();

    let node = reopen(dir.path()).await;
    assert_eq!(*node.state(), expected);
    assert_eq!(node.state().topics.len(), 8);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_snapshot_and_purged_log() {
    let dir = tempfile::tempdir().unwrap();
    let node = reopen(dir.path()).await;
    let before = propose_mix(&node, 0, 4).await;
    let covered = node.snapshot().await.unwrap().unwrap();
    assert_eq!(Some(covered), node.applied_index());
    // With no entries kept behind the snapshot, the log is purged up to it.
    wait_for(|| node.purged_index() == Some(covered)).await;
    assert!(dir.path().join("snapshot.json").exists());
    assert!(!dir
        .path()
        .join("log")
        .join(format!("{:020}.json", covered.0))
        .exists());
    let after = propose_mix(&node, 4, 2).await;
    assert_ne!(before, after);
    node.shutdown().await.unwrap();

    // Restart = snapshot + the entries after it.
    let node = reopen(dir.path()).await;
    assert_eq!(*node.state(), after);
    assert_eq!(node.snapshot_index(), Some(covered));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_policy_triggers_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let options = MetaOptions {
        snapshot_every_entries: 5,
        ..options()
    };
    let node = MetaNode::open_with(dir.path(), NODE, options.clone())
        .await
        .unwrap();
    let expected = propose_mix(&node, 0, 10).await;
    wait_for(|| node.snapshot_index().is_some_and(|i| i >= LogIndex(5))).await;
    node.shutdown().await.unwrap();

    let node = MetaNode::open_with(dir.path(), NODE, options)
        .await
        .unwrap();
    assert_eq!(*node.state(), expected);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_belongs_to_one_node_and_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let node = reopen(dir.path()).await;
    assert!(matches!(
        MetaNode::open_with(dir.path(), NODE, options()).await,
        Err(OpenError::Locked { .. })
    ));
    node.shutdown().await.unwrap();
    assert!(matches!(
        MetaNode::open_with(dir.path(), NodeId(2), options()).await,
        Err(OpenError::WrongNode { .. })
    ));
}

/// Polls `condition` until it holds, failing after a deadline (no fixed sleeps).
async fn wait_for(condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 10s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_crash_are_cleaned_and_holes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = reopen(dir.path()).await;
    let expected = propose_mix(&node, 0, 3).await;
    node.shutdown().await.unwrap();

    // A write that crashed before its rename leaves a temp file; it was never part of the log.
    let log_dir = dir.path().join("log");
    let torn = log_dir.join(format!("{:020}.json.tmp", 1_000));
    std::fs::write(&torn, b"{\"torn").unwrap();
    let node = reopen(dir.path()).await;
    assert_eq!(*node.state(), expected);
    assert!(!torn.exists());
    node.shutdown().await.unwrap();

    // A missing entry in the middle is corruption, not something to paper over.
    let mut files: Vec<_> = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 3);
    std::fs::remove_file(&files[1]).unwrap();
    assert!(matches!(
        MetaNode::open_with(dir.path(), NODE, options()).await,
        Err(OpenError::Corrupt { .. })
    ));
}
