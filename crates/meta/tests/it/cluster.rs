//! Three-voter `MetaNode` quorums over TCP on 127.0.0.1: election, forwarding, failover,
//! catch-up by log and by snapshot, broker heartbeats, and garbage on the listener.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sluice_meta::membership::{ClientHandshake, ClusterSecret};
use sluice_meta::{
    LogIndex, MetaNode, MetaOptions, MetadataRecord, NodeId, OpenError, Outcome, ProposeError,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every test finishes within this or fails.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
const LEADER_TIMEOUT: Duration = Duration::from_secs(10);

fn options() -> MetaOptions {
    MetaOptions {
        snapshot_every_entries: 10_000,
        ..MetaOptions::default()
    }
}

fn topic(name: &str, partitions: i32) -> MetadataRecord {
    MetadataRecord::Topic {
        name: name.to_string(),
        id: format!("id-{name}"),
        partitions,
        configs: BTreeMap::new(),
    }
}

fn config(topic: &str, value: &str) -> MetadataRecord {
    MetadataRecord::ConfigRecord {
        topic: topic.to_string(),
        configs: BTreeMap::from([("retention.ms".to_string(), value.to_string())]),
    }
}

/// Runs a test body with an overall deadline, so a hang fails instead of blocking CI.
async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test did not finish in time");
}

/// Polls `condition` until it holds, failing after a deadline (no fixed sleeps).
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 20s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three voters on 127.0.0.1, each with its own directory; a node is `None` while it is down.
struct Cluster {
    dirs: BTreeMap<NodeId, TempDir>,
    addrs: BTreeMap<NodeId, SocketAddr>,
    nodes: BTreeMap<NodeId, Option<MetaNode>>,
    options: MetaOptions,
    /// The cluster secret every voter holds.
    secret: ClusterSecret,
}

impl Cluster {
    /// Starts three voters one by one; each returns without waiting for the others.
    async fn start(options: MetaOptions) -> Self {
        let ids = [NodeId(1), NodeId(2), NodeId(3)];
        // Bound now and handed over: nobody can take the ports in between.
        let mut listeners: BTreeMap<NodeId, std::net::TcpListener> = ids
            .iter()
            .map(|&id| (id, std::net::TcpListener::bind("127.0.0.1:0").unwrap()))
            .collect();
        let addrs: BTreeMap<NodeId, SocketAddr> = listeners
            .iter()
            .map(|(&id, l)| (id, l.local_addr().unwrap()))
            .collect();
        let mut cluster = Self {
            dirs: ids
                .iter()
                .map(|&id| (id, tempfile::tempdir().unwrap()))
                .collect(),
            addrs,
            nodes: BTreeMap::new(),
            options,
            secret: ClusterSecret::generate().unwrap(),
        };
        for id in ids {
            let node = MetaNode::open_cluster_on(
                cluster.dirs[&id].path(),
                id,
                cluster.voters(),
                listeners.remove(&id).unwrap(),
                cluster.secret.clone(),
                cluster.options.clone(),
            )
            .await
            .unwrap();
            assert_eq!(node.listen_addr(), Some(cluster.addrs[&id]));
            cluster.nodes.insert(id, Some(node));
        }
        cluster
    }

    fn voters(&self) -> BTreeMap<NodeId, String> {
        self.addrs
            .iter()
            .map(|(&id, addr)| (id, addr.to_string()))
            .collect()
    }

    fn node(&self, id: NodeId) -> &MetaNode {
        self.nodes[&id].as_ref().expect("node is up")
    }

    fn up(&self) -> impl Iterator<Item = &MetaNode> {
        self.nodes.values().flatten()
    }

    /// Waits until every running node knows the same leader and has caught up with it.
    async fn leader(&self) -> NodeId {
        let mut leaders = Vec::new();
        for node in self.up() {
            leaders.push(node.wait_leader(LEADER_TIMEOUT).await.unwrap());
        }
        leaders.dedup();
        assert_eq!(
            leaders.len(),
            1,
            "nodes disagree on the leader: {leaders:?}"
        );
        let leader = leaders[0];
        assert!(self.node(leader).is_leader());
        leader
    }

    async fn stop(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap().take().expect("node is up");
        node.shutdown().await.unwrap();
    }

    /// Restarts a stopped node on its directory and address.
    async fn restart(&mut self, id: NodeId) {
        let node = MetaNode::open_cluster(
            self.dirs[&id].path(),
            id,
            self.voters(),
            self.addrs[&id],
            self.secret.clone(),
            self.options.clone(),
        )
        .await
        .unwrap();
        self.nodes.insert(id, Some(node));
    }

    /// Waits until every running node applied `index`, then checks they hold the same state.
    async fn converged(&self, index: LogIndex) {
        for node in self.up() {
            wait_for("node applies the last index", || {
                node.applied_index() >= Some(index)
            })
            .await;
        }
        let states: Vec<_> = self.up().map(|n| n.state()).collect();
        for state in &states[1..] {
            assert_eq!(**state, *states[0]);
        }
    }

    async fn shutdown(mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.nodes[&id].is_some() {
                self.stop(id).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_one_leader_and_apply_proposals_in_one_order() {
    bounded(async {
        let cluster = Cluster::start(options()).await;
        let leader = cluster.leader().await;
        assert_eq!(
            cluster.up().filter(|n| n.is_leader()).count(),
            1,
            "exactly one leader"
        );
        for node in cluster.up() {
            assert_eq!(node.leader(), Some(leader));
            assert_eq!(node.voters(), cluster.voters());
        }

        let created = cluster
            .node(leader)
            .propose(topic("shared", 1))
            .await
            .unwrap();
        assert_eq!(created.outcome, Outcome::Applied);
        // One proposal from each node, leader and followers; each reads its own write at once.
        let mut last = (created.index, String::new());
        for node in cluster.up() {
            let value = format!("from-{}", node.id());
            let committed = node.propose(config("shared", &value)).await.unwrap();
            assert_eq!(committed.outcome, Outcome::Applied);
            assert!(node.applied_index() >= Some(committed.index));
            assert_eq!(
                node.state().topics["shared"].configs["retention.ms"],
                value,
                "node {} reads its own write",
                node.id()
            );
            let own = node
                .propose(topic(&format!("t{}", node.id()), 2))
                .await
                .unwrap();
            assert!(node.state().topics.contains_key(&format!("t{}", node.id())));
            assert!(committed.index > last.0 && own.index > committed.index);
            last = (own.index, value);
        }
        // The same order everywhere: the last config write wins on every node.
        cluster.converged(last.0).await;
        for node in cluster.up() {
            assert_eq!(
                node.state().topics["shared"].configs["retention.ms"],
                last.1
            );
            assert_eq!(node.state().topics.len(), 4);
        }
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_and_the_old_one_catches_up() {
    bounded(async {
        let mut cluster = Cluster::start(options()).await;
        let old = cluster.leader().await;
        cluster.node(old).propose(topic("before", 1)).await.unwrap();

        cluster.stop(old).await;
        let failover = Instant::now();
        let new = cluster.leader().await;
        let took = failover.elapsed();
        assert_ne!(new, old);
        eprintln!("failover took {took:?}");
        assert!(took < Duration::from_secs(5), "failover took {took:?}");

        let mut last = LogIndex(0);
        for node in cluster.up() {
            let committed = node
                .propose(topic(&format!("after-{}", node.id()), 1))
                .await
                .unwrap();
            last = last.max(committed.index);
        }
        cluster.restart(old).await;
        cluster.node(old).wait_leader(LEADER_TIMEOUT).await.unwrap();
        cluster.converged(last).await;
        let state = cluster.node(old).state();
        assert!(state.topics.contains_key("before"));
        assert_eq!(state.topics.len(), 3);
        // The restarted node proposes too (it is a follower now, or leads again).
        let committed = cluster
            .node(old)
            .propose(topic("from-restarted", 1))
            .await
            .unwrap();
        cluster.converged(committed.index).await;
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_missed_purged_entries_catches_up_by_snapshot() {
    bounded(async {
        let options = MetaOptions {
            snapshot_every_entries: 5,
            entries_kept_after_snapshot: 0,
            ..options()
        };
        let mut cluster = Cluster::start(options).await;
        let leader = cluster.leader().await;
        let follower = cluster
            .up()
            .map(|n| n.id())
            .find(|&id| id != leader)
            .unwrap();
        let first = cluster.node(leader).propose(topic("t0", 1)).await.unwrap();
        cluster.converged(first.index).await;
        let follower_had = cluster.node(follower).applied_index().unwrap();
        cluster.stop(follower).await;

        let mut last = first.index;
        for i in 1..=20 {
            last = cluster
                .node(leader)
                .propose(topic(&format!("t{i}"), 1))
                .await
                .unwrap()
                .index;
        }
        // The entries the follower lacks are gone from the leader's log: only a snapshot helps.
        wait_for("leader purges past what the follower has", || {
            cluster
                .node(leader)
                .purged_index()
                .is_some_and(|p| p > follower_had)
        })
        .await;

        cluster.restart(follower).await;
        cluster
            .node(follower)
            .wait_leader(LEADER_TIMEOUT)
            .await
            .unwrap();
        cluster.converged(last).await;
        assert_eq!(cluster.node(follower).state().topics.len(), 21);
        assert!(cluster.node(follower).snapshot_index() > Some(follower_had));
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_tracks_heartbeats_and_a_new_leader_starts_with_a_grace_period() {
    bounded(async {
        let mut cluster = Cluster::start(options()).await;
        let leader = cluster.leader().await;
        let started = Instant::now();
        for node in cluster.up() {
            node.heartbeat().await.unwrap();
            if node.id() != leader {
                assert!(
                    node.heartbeats().is_none(),
                    "only the leader tracks heartbeats"
                );
            }
        }
        let seen = cluster.node(leader).heartbeats().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(seen.values().all(|&at| at >= started));

        // A follower goes down: its entry stops moving while the others' advance.
        let down = cluster
            .up()
            .map(|n| n.id())
            .find(|&id| id != leader)
            .unwrap();
        cluster.stop(down).await;
        let frozen = cluster.node(leader).heartbeats().unwrap()[&down];
        let resumed = Instant::now();
        for _ in 0..3 {
            for node in cluster.up() {
                node.heartbeat().await.unwrap();
            }
        }
        let seen = cluster.node(leader).heartbeats().unwrap();
        assert_eq!(seen[&down], frozen);
        for node in cluster.up() {
            assert!(seen[&node.id()] >= resumed);
        }

        // Bring it back, then fail the leader over: the new leader counts everyone as seen
        // when it took over, even the old leader that is now down.
        cluster.restart(down).await;
        cluster.stop(leader).await;
        let failover = Instant::now();
        let new = cluster.leader().await;
        let seen = cluster.node(new).heartbeats().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(
            seen.values().all(|&at| at >= failover),
            "every voter seen at the takeover"
        );
        for node in cluster.up() {
            node.heartbeat().await.unwrap();
        }
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_listener_closes_only_that_connection() {
    bounded(async {
        let cluster = Cluster::start(options()).await;
        let leader = cluster.leader().await;
        let target = cluster.addrs[&leader];

        // Not JSON, a length over the limit, and a frame that ends early: each closes its own
        // connection.
        let mut not_json = 5u32.to_be_bytes().to_vec();
        not_json.extend_from_slice(b"hello");
        let too_large = u32::MAX.to_be_bytes().to_vec();
        for garbage in [not_json, too_large, b"GET / HTTP/1.1\r\n\r\n".to_vec()] {
            let mut stream = TcpStream::connect(target).await.unwrap();
            stream.write_all(&garbage).await.unwrap();
            assert_closed(&mut stream).await;
        }
        let mut truncated = TcpStream::connect(target).await.unwrap();
        truncated.write_all(&[0, 0, 0, 100, b'{']).await.unwrap();
        truncated.shutdown().await.unwrap();
        assert_closed(&mut truncated).await;

        // A well-formed request without the membership exchange is not served: the connection
        // closes without an answer.
        let heartbeat = br#"{"target":1,"body":{"Heartbeat":{"from":1}}}"#;
        let mut stream = TcpStream::connect(target).await.unwrap();
        write_json(&mut stream, heartbeat).await;
        assert_closed(&mut stream).await;

        // Nor after an exchange with another cluster's secret: refused, with the reason.
        let stranger = ClusterSecret::generate().unwrap();
        let mut stream = TcpStream::connect(target).await.unwrap();
        let refused = prove_membership(&mut stream, &stranger, NodeId(1), leader).await;
        let reason = refused.unwrap_err();
        assert!(reason.contains("different cluster secrets"), "{reason}");
        assert_closed(&mut stream).await;

        // A member's well-formed request addressed to another node is refused, not served.
        let mut stream = TcpStream::connect(target).await.unwrap();
        prove_membership(&mut stream, &cluster.secret, NodeId(1), leader)
            .await
            .unwrap();
        let request = br#"{"target":99,"body":{"Heartbeat":{"from":1}}}"#;
        write_json(&mut stream, request).await;
        let body = read_json(&mut stream).await;
        assert!(body.contains("WrongNode"), "answer: {body}");
        // And a member vouches only for itself.
        let forged = format!(
            r#"{{"target":{},"body":{{"Heartbeat":{{"from":3}}}}}}"#,
            leader.0
        );
        write_json(&mut stream, forged.as_bytes()).await;
        let body = read_json(&mut stream).await;
        assert!(
            body.contains("connection authenticated as node 1"),
            "answer: {body}"
        );

        // The quorum did not notice.
        let mut last = LogIndex(0);
        for node in cluster.up() {
            last = node
                .propose(topic(&format!("t{}", node.id()), 1))
                .await
                .unwrap()
                .index;
        }
        cluster.converged(last).await;

        // Opening a node on a port in use says so.
        let dir = tempfile::tempdir().unwrap();
        let taken = MetaNode::open_cluster(
            dir.path(),
            NodeId(1),
            cluster.voters(),
            target,
            cluster.secret.clone(),
            options(),
        )
        .await;
        assert!(matches!(taken, Err(OpenError::Bind { .. })), "{taken:?}");
        let stranger = MetaNode::open_cluster(
            dir.path(),
            NodeId(7),
            cluster.voters(),
            "127.0.0.1:0".parse().unwrap(),
            cluster.secret.clone(),
            options(),
        )
        .await;
        assert!(
            matches!(stranger, Err(OpenError::NotAVoter { .. })),
            "{stranger:?}"
        );
        cluster.shutdown().await;
    })
    .await;
}

/// Writes one frame holding `json`.
async fn write_json(stream: &mut TcpStream, json: &[u8]) {
    let mut frame = (json.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(json);
    stream.write_all(&frame).await.unwrap();
}

/// Reads one frame as text.
async fn read_json(stream: &mut TcpStream) -> String {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut body).await.unwrap();
    String::from_utf8(body).unwrap()
}

/// The client's side of the listener's membership exchange, as node `me` holding `secret`;
/// `Err` is the server's reason for refusing.
async fn prove_membership(
    stream: &mut TcpStream,
    secret: &ClusterSecret,
    me: NodeId,
    peer: NodeId,
) -> Result<(), String> {
    let (state, first) = ClientHandshake::start(secret, me, peer).unwrap();
    let frame = serde_json::json!({ "ClientFirst": first }).to_string();
    write_json(stream, frame.as_bytes()).await;
    let answer: serde_json::Value = serde_json::from_str(&read_json(stream).await).unwrap();
    let server_first: Vec<u8> = serde_json::from_value(answer["ServerFirst"].clone()).unwrap();
    let (state, proof) = state.respond(&server_first).unwrap();
    let frame = serde_json::json!({ "ClientProof": proof }).to_string();
    write_json(stream, frame.as_bytes()).await;
    let answer: serde_json::Value = serde_json::from_str(&read_json(stream).await).unwrap();
    if let Some(reason) = answer.get("Refused") {
        return Err(reason.to_string());
    }
    let server_proof: Vec<u8> = serde_json::from_value(answer["ServerProof"].clone()).unwrap();
    state.finish(&server_proof).map_err(|e| e.to_string())
}

/// The server closed the connection: a read sees EOF (or a reset) soon.
async fn assert_closed(stream: &mut TcpStream) {
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buffer))
        .await
        .expect("server did not close the connection");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "unexpected answer: {read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_without_a_quorum_fail_within_the_deadline() {
    bounded(async {
        let options = MetaOptions {
            propose_timeout: Duration::from_secs(1),
            ..options()
        };
        let mut cluster = Cluster::start(options).await;
        let leader = cluster.leader().await;
        let followers: Vec<NodeId> = cluster
            .up()
            .map(|n| n.id())
            .filter(|&id| id != leader)
            .collect();

        // A leader alone: the entry cannot commit; whether it will later is unknown.
        cluster.stop(followers[0]).await;
        cluster.stop(followers[1]).await;
        let started = Instant::now();
        let alone = cluster.node(leader).propose(topic("lost", 1)).await;
        assert!(
            matches!(alone, Err(ProposeError::Indeterminate { .. })),
            "{alone:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));

        // A follower alone: no leader answers.
        cluster.restart(followers[0]).await;
        cluster.stop(leader).await;
        let started = Instant::now();
        let orphan = cluster.node(followers[0]).propose(topic("lost", 1)).await;
        assert!(
            matches!(orphan, Err(ProposeError::NoLeader { .. })),
            "{orphan:?}"
        );
        let heartbeat = cluster.node(followers[0]).heartbeat().await;
        assert!(
            matches!(heartbeat, Err(ProposeError::NoLeader { .. })),
            "{heartbeat:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_with_another_secret_cannot_join() {
    bounded(async {
        let options = MetaOptions {
            propose_timeout: Duration::from_secs(2),
            ..options()
        };
        let mut cluster = Cluster::start(options.clone()).await;
        let leader = cluster.leader().await;
        let outsider = cluster
            .up()
            .map(|n| n.id())
            .find(|&id| id != leader)
            .unwrap();
        cluster.stop(outsider).await;

        // The same id, directory and address, but another cluster's secret.
        let impostor = MetaNode::open_cluster(
            cluster.dirs[&outsider].path(),
            outsider,
            cluster.voters(),
            cluster.addrs[&outsider],
            ClusterSecret::generate().unwrap(),
            options.clone(),
        )
        .await
        .unwrap();
        // Its pre-votes are refused and it refuses the leader's appends: it finds no leader.
        let joined = impostor.wait_leader(Duration::from_secs(2)).await;
        assert!(
            matches!(joined, Err(ProposeError::NoLeader { .. })),
            "{joined:?}"
        );

        // The two members carry on without it, and it learns nothing of what they commit.
        let committed = cluster
            .node(leader)
            .propose(topic("members-only", 1))
            .await
            .unwrap();
        cluster.converged(committed.index).await;
        assert!(!impostor.state().topics.contains_key("members-only"));
        assert_ne!(impostor.leader(), Some(outsider), "it never led");
        impostor.shutdown().await.unwrap();

        // With the cluster's secret it catches up.
        cluster.restart(outsider).await;
        cluster.converged(committed.index).await;
        cluster.shutdown().await;
    })
    .await;
}
