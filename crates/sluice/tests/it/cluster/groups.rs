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

mod raw {
    //! Group requests over raw Kafka protocol against the cluster, for orderings and error codes
    //! a client library hides: pipelined commits on one connection, and what the coordinator a
    //! fresh cluster names answers while it takes over its partition.

    use std::io::Write;
    use std::net::TcpStream;

    use bytes::Bytes;
    use std::time::{Duration, Instant};

    use sluice_protocol::error::ResponseError;
    use sluice_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use sluice_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use sluice_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use sluice_protocol::messages::{
        ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, InitProducerIdRequest,
        InitProducerIdResponse, JoinGroupRequest, JoinGroupResponse, OffsetCommitRequest,
        OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, ProducerId, TopicName,
        TransactionalId,
    };
    use sluice_protocol::{Decodable, StrBytes};

    use super::{CALL_TIMEOUT, REACT_TIMEOUT, TEST_LIMIT, TOPIC};
    use crate::cluster_harness::Cluster;
    use crate::wire::{call, frame, read_response};

    const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    const KEY_TYPE_GROUP: i8 = 0;
    const KEY_TYPE_TRANSACTION: i8 = 1;
    const MEMBER_ID_REQUIRED: i16 = 79;
    const COMMIT_VERSION: i16 = 7;
    const JOIN_VERSION: i16 = 5;
    const FETCH_VERSION: i16 = 5;

    fn name(s: &str) -> StrBytes {
        StrBytes::from_string(s.to_owned())
    }

    fn connect(port: u16) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(CALL_TIMEOUT)).unwrap();
        stream
    }

    /// The coordinators `port`'s broker names for `keys` (FindCoordinator v4, which creates
    /// the internal topic on first use): (key, node id, port), asked again while any is not
    /// available yet.
    fn find_coordinators(port: u16, key_type: i8, keys: &[String]) -> Vec<(String, i32, u16)> {
        let deadline = Instant::now() + REACT_TIMEOUT;
        let mut stream = connect(port);
        loop {
            let found: FindCoordinatorResponse = call(
                &mut stream,
                ApiKey::FindCoordinator,
                4,
                &FindCoordinatorRequest::default()
                    .with_key_type(key_type)
                    .with_coordinator_keys(keys.iter().map(|k| name(k)).collect()),
            );
            let pending = found
                .coordinators
                .iter()
                .find(|c| c.error_code != 0)
                .map(|c| c.error_code);
            match pending {
                None => {
                    return found
                        .coordinators
                        .into_iter()
                        .map(|c| (c.key.to_string(), c.node_id.0, c.port as u16))
                        .collect()
                }
                Some(COORDINATOR_NOT_AVAILABLE) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Some(code) => panic!("FindCoordinator answered error {code}"),
            }
        }
    }

    fn fetch_request(group: &str) -> OffsetFetchRequest {
        OffsetFetchRequest::default()
            .with_group_id(GroupId(name(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(name(TOPIC)))
                .with_partition_indexes(vec![0])]))
    }

    /// `group`'s committed offset of partition 0 of [`TOPIC`] (group-level error as `Err`).
    fn fetch_offset(stream: &mut TcpStream, group: &str) -> Result<i64, i16> {
        let fetched: OffsetFetchResponse = call(
            stream,
            ApiKey::OffsetFetch,
            FETCH_VERSION,
            &fetch_request(group),
        );
        if fetched.error_code != 0 {
            return Err(fetched.error_code);
        }
        let partition = &fetched.topics[0].partitions[0];
        assert_eq!(partition.error_code, 0, "OffsetFetch partition error");
        Ok(partition.committed_offset)
    }

    fn commit_request(group: &str, partition: i32, offset: i64) -> OffsetCommitRequest {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(name(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(name(TOPIC)))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(partition)
                    .with_committed_offset(offset)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(Some(name("")))])])
    }

    /// Sends the commits of `partition` for `offsets` on `stream`, one every `pace`, without
    /// waiting for answers, while reading the answers; asserts that each succeeded.
    fn pipeline_commits(
        stream: &mut TcpStream,
        group: &str,
        partition: i32,
        offsets: std::ops::RangeInclusive<i64>,
        pace: Duration,
    ) {
        let mut sender = stream.try_clone().expect("clone stream");
        let count = offsets.clone().count();
        let first = *offsets.start();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for (i, offset) in offsets.enumerate() {
                    let request = frame(
                        ApiKey::OffsetCommit,
                        COMMIT_VERSION,
                        i as i32,
                        &commit_request(group, partition, offset),
                    );
                    sender.write_all(&request).expect("send commit");
                    if !pace.is_zero() {
                        std::thread::sleep(pace);
                    }
                }
            });
            for i in 0..count {
                let (correlation, mut body) = read_response(stream).expect("answer");
                assert_eq!(correlation, i as i32, "answers come in request order");
                let answer = OffsetCommitResponse::decode(&mut body, COMMIT_VERSION)
                    .expect("decode OffsetCommit response");
                let code = answer.topics[0].partitions[0].error_code;
                assert_eq!(
                    code,
                    0,
                    "commit of offset {} of partition {partition} failed: {:?}",
                    first + i as i64,
                    ResponseError::try_from_code(code)
                );
            }
        });
    }

    /// Many OffsetCommits of increasing offsets sent on one connection without waiting for
    /// their answers (as librdkafka's async commits are, test 0030): every one succeeds, and
    /// the coordinator then answers the last, as a restart replaying the log would. Each write
    /// to `__consumer_offsets` completes once the followers have it, in no fixed order among
    /// the writes that one move of the high watermark completes together; the cache must
    /// still take them in the order they were written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn pipelined_commits_are_applied_in_log_order() {
        const GROUP: &str = "pipelined";
        const ROUNDS: i64 = 10;
        const COMMITS: i64 = 100;
        let mut cluster = Cluster::new_alone(3).await;
        // Without an fsync per write, commits wait together for the followers, and one move of
        // the high watermark completes several at once (as a slow machine does with fsyncs).
        cluster.set_config("log.flush.on.ack", "false");
        cluster.start_all();
        Cluster::bounded(TEST_LIMIT, async {
            cluster.wait_ready(REACT_TIMEOUT).await;
            cluster.create_topic(TOPIC, 1, 3, &[]).await;
            let any = cluster.port(cluster.ids()[0]);
            tokio::task::block_in_place(|| {
                let (_, node, port) = find_coordinators(any, KEY_TYPE_GROUP, &[GROUP.to_owned()])
                    .pop()
                    .expect("one coordinator");
                eprintln!("group {GROUP} is coordinated by node {node}");
                let mut stream = connect(port);
                // The coordinator may still be taking over its partition.
                let deadline = Instant::now() + REACT_TIMEOUT;
                while let Err(code) = fetch_offset(&mut stream, GROUP) {
                    assert!(
                        code == COORDINATOR_LOAD_IN_PROGRESS && Instant::now() < deadline,
                        "OffsetFetch before committing answered error {code}"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                for round in 0..ROUNDS {
                    let first = round * COMMITS + 1;
                    let last = first + COMMITS - 1;
                    // Sent at a varying pace, so the writes overlap the followers' fetches in
                    // changing ways.
                    let pace = Duration::from_micros(100 * round as u64);
                    pipeline_commits(&mut stream, GROUP, 0, first..=last, pace);
                    assert_eq!(
                        fetch_offset(&mut stream, GROUP),
                        Ok(last),
                        "round {round} (one commit every {pace:?}): the last of the \
                         pipelined commits is the committed offset"
                    );
                }
            });
        })
        .await;
    }

    /// On a fresh cluster the first FindCoordinator creates `__consumer_offsets` (and the first
    /// transactional one `__transaction_state`) and names partition leaders that may not even
    /// have the new topic's metadata yet, let alone have taken their partitions over. Asked at
    /// once (JoinGroup and OffsetFetch; InitProducerId), those coordinators answer
    /// COORDINATOR_LOAD_IN_PROGRESS (retriable, retried by clients silently) until they are
    /// ready — never NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE, which send a client back to
    /// FindCoordinator and surface as a consumer error in librdkafka (test 0113).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_named_coordinator_answers_load_in_progress_until_it_has_loaded() {
        let mut cluster = Cluster::new_alone(3).await;
        // Kafka's default partition counts: a node takes longer to open its share of them.
        cluster.set_config("offsets.topic.num.partitions", "50");
        cluster.set_config("transaction.state.log.num.partitions", "50");
        cluster.start_all();
        Cluster::bounded(TEST_LIMIT, async {
            cluster.wait_ready(REACT_TIMEOUT).await;
            let any = cluster.port(cluster.ids()[0]);
            // Enough keys that every partition (so every node leading one) is named.
            let keys = |prefix: &str| (0..12).map(|i| format!("{prefix}-{i}")).collect::<Vec<_>>();
            tokio::task::block_in_place(|| {
                let groups = find_coordinators(any, KEY_TYPE_GROUP, &keys("group"));
                let seen = ask_each_coordinator(&groups, |stream, group| {
                    let joined: JoinGroupResponse = call(
                        stream,
                        ApiKey::JoinGroup,
                        JOIN_VERSION,
                        &JoinGroupRequest::default()
                            .with_group_id(GroupId(name(group)))
                            .with_session_timeout_ms(10_000)
                            .with_rebalance_timeout_ms(10_000)
                            .with_protocol_type(name("consumer"))
                            .with_protocols(vec![JoinGroupRequestProtocol::default()
                                .with_name(name("range"))
                                .with_metadata(Bytes::new())]),
                    );
                    // The first answer to a new member (v4+): it joins again with the id.
                    if joined.error_code != 0 && joined.error_code != MEMBER_ID_REQUIRED {
                        return joined.error_code;
                    }
                    fetch_offset(stream, group).err().unwrap_or(0)
                });
                eprintln!("group coordinators answered (node, codes): {seen:?}");

                let txns = find_coordinators(any, KEY_TYPE_TRANSACTION, &keys("txn"));
                let seen = ask_each_coordinator(&txns, |stream, id| {
                    let init: InitProducerIdResponse = call(
                        stream,
                        ApiKey::InitProducerId,
                        1,
                        &InitProducerIdRequest::default()
                            .with_transactional_id(Some(TransactionalId(name(id))))
                            .with_transaction_timeout_ms(60_000)
                            .with_producer_id(ProducerId(-1))
                            .with_producer_epoch(-1),
                    );
                    init.error_code
                });
                eprintln!("transaction coordinators answered (node, codes): {seen:?}");
            });
        })
        .await;
    }

    /// Sends `ask` for one key per named coordinator at once (a thread each), again while it
    /// answers COORDINATOR_LOAD_IN_PROGRESS; fails on any other error. Returns the distinct
    /// answers of each node.
    fn ask_each_coordinator(
        named: &[(String, i32, u16)],
        ask: impl Fn(&mut TcpStream, &str) -> i16 + Sync,
    ) -> Vec<(i32, Vec<i16>)> {
        let mut per_node: Vec<(String, i32, u16)> = Vec::new();
        for (key, node, port) in named {
            if !per_node.iter().any(|(_, n, _)| n == node) {
                per_node.push((key.clone(), *node, *port));
            }
        }
        std::thread::scope(|scope| {
            let asking: Vec<_> = per_node
                .iter()
                .map(|(key, node, port)| {
                    let ask = &ask;
                    scope.spawn(move || {
                        let mut stream = connect(*port);
                        let deadline = Instant::now() + REACT_TIMEOUT;
                        let mut codes = Vec::new();
                        loop {
                            let code = ask(&mut stream, key);
                            if !codes.contains(&code) {
                                codes.push(code);
                            }
                            assert!(
                                code == 0 || code == COORDINATOR_LOAD_IN_PROGRESS,
                                "node {node}, named coordinator of {key}, answered {:?} ({code})",
                                ResponseError::try_from_code(code)
                            );
                            if code == 0 {
                                return (*node, codes);
                            }
                            assert!(
                                Instant::now() < deadline,
                                "node {node} still loading after {REACT_TIMEOUT:?}"
                            );
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    })
                })
                .collect();
            asking
                .into_iter()
                .map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }
}
