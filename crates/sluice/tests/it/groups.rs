//! Consumer groups through librdkafka: members split partitions, rebalance when one leaves, commit
//! offsets that survive restarts, and independent groups on one topic.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::closing::Closing;
use crate::harness::{now_ms, Broker};
use crate::produce_consume::{produce_records, producer};

/// A config with a short initial rebalance delay, so tests do not wait Kafka's 3 s.
fn start(dir: &std::path::Path) -> Broker {
    crate::harness::start_with_toml(dir, "\"group.initial.rebalance.delay.ms\" = 300\n")
}

/// A group member subscribed to `topic`, with short sessions and heartbeats.
pub(crate) fn member(broker: &Broker, group: &str, topic: &str) -> Closing {
    let consumer: Closing = Closing::new(
        broker
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "300")
            .set("fetch.wait.max.ms", "100")
            .create()
            .expect("consumer"),
    );
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

    for restart in ["kill -9", "clean"] {
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

/// Counts rebalances and remembers what each one revoked.
#[derive(Default)]
struct Counts {
    rebalances: std::sync::atomic::AtomicUsize,
    revoked: std::sync::Mutex<Vec<i32>>,
}

#[derive(Clone, Default)]
struct Watch(std::sync::Arc<Counts>);

impl std::ops::Deref for Watch {
    type Target = Counts;
    fn deref(&self) -> &Counts {
        &self.0
    }
}

impl rdkafka::ClientContext for Watch {}

impl rdkafka::consumer::ConsumerContext for Watch {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        if let rdkafka::consumer::Rebalance::Revoke(tpl) = rebalance {
            let mut revoked = self.revoked.lock().unwrap();
            revoked.extend(tpl.elements().iter().map(|e| e.partition()));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, _: &rdkafka::consumer::Rebalance<'_>) {
        self.rebalances
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn watched_member(
    broker: &Broker,
    group: &str,
    topic: &str,
    extra: &[(&str, &str)],
) -> (Closing<Watch>, Watch) {
    let watch = Watch::default();
    let mut config = broker.client_config();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let consumer = config.create_with_context(watch.clone()).expect("consumer");
    let consumer = if extra.iter().any(|(k, _)| *k == "group.instance.id") {
        Closing::static_member(consumer)
    } else {
        Closing::new(consumer)
    };
    consumer.subscribe(&[topic]).expect("subscribe");
    (consumer, watch)
}

fn poll_watched(
    consumers: &[&BaseConsumer<Watch>],
    timeout: Duration,
    done: impl Fn() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for c in consumers {
            let _ = c.poll(Duration::from_millis(20));
        }
        if done() {
            return true;
        }
    }
    false
}

fn assigned_to<C: rdkafka::consumer::ConsumerContext>(consumer: &BaseConsumer<C>) -> BTreeSet<i32> {
    consumer
        .assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_keeps_unaffected_partitions_and_static_members_skip_rebalances() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    broker.create_topic("coop", 6, &[]).await;
    let coop = [("partition.assignment.strategy", "cooperative-sticky")];
    let (a, wa) = watched_member(&broker, "coop-group", "coop", &coop);
    let (b, wb) = watched_member(&broker, "coop-group", "coop", &coop);
    assert!(
        poll_watched(&[&a, &b], Duration::from_secs(60), || {
            let (x, y) = (assigned_to(&a), assigned_to(&b));
            x.len() + y.len() == 6 && !x.is_empty() && !y.is_empty() && x.is_disjoint(&y)
        }),
        "two members: {:?} {:?}",
        assigned_to(&a),
        assigned_to(&b)
    );
    let (before_a, before_b) = (assigned_to(&a), assigned_to(&b));
    wa.revoked.lock().unwrap().clear();
    wb.revoked.lock().unwrap().clear();
    // A third member joins: only the partitions it takes are revoked from the others.
    let (c, _wc) = watched_member(&broker, "coop-group", "coop", &coop);
    assert!(
        poll_watched(&[&a, &b, &c], Duration::from_secs(60), || {
            let sets = [assigned_to(&a), assigned_to(&b), assigned_to(&c)];
            sets.iter().map(BTreeSet::len).sum::<usize>() == 6 && sets.iter().all(|s| s.len() == 2)
        }),
        "three members: {:?} {:?} {:?}",
        assigned_to(&a),
        assigned_to(&b),
        assigned_to(&c)
    );
    let moved = assigned_to(&c);
    for (kept_before, now, watch) in [
        (&before_a, assigned_to(&a), &wa),
        (&before_b, assigned_to(&b), &wb),
    ] {
        let revoked: BTreeSet<i32> = watch.revoked.lock().unwrap().iter().copied().collect();
        assert!(
            revoked.is_subset(&moved),
            "revoked {revoked:?}, moved {moved:?}"
        );
        assert!(
            now.is_subset(kept_before),
            "kept partitions stay: {now:?} within {kept_before:?}"
        );
    }
    drop((a, b, c));

    // Static members: one restarts within its session and takes its partitions back without a
    // rebalance of the other.
    broker.create_topic("static", 4, &[]).await;
    let (s1, w1) = watched_member(
        &broker,
        "static-group",
        "static",
        &[("group.instance.id", "one")],
    );
    let (s2, _w2) = watched_member(
        &broker,
        "static-group",
        "static",
        &[("group.instance.id", "two")],
    );
    assert!(poll_watched(&[&s1, &s2], Duration::from_secs(60), || {
        assigned_to(&s1).len() == 2 && assigned_to(&s2).len() == 2
    }));
    let rebalances = w1.rebalances.load(std::sync::atomic::Ordering::SeqCst);
    let s2_partitions = assigned_to(&s2);
    drop(s2);
    let (s2, _w2) = watched_member(
        &broker,
        "static-group",
        "static",
        &[("group.instance.id", "two")],
    );
    assert!(poll_watched(&[&s1, &s2], Duration::from_secs(30), || {
        assigned_to(&s2) == s2_partitions
    }));
    // Keep polling a little: no rebalance reaches the other member.
    poll_watched(&[&s1, &s2], Duration::from_secs(2), || false);
    assert_eq!(
        w1.rebalances.load(std::sync::atomic::Ordering::SeqCst),
        rebalances
    );
    assert_eq!(assigned_to(&s1).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_member_is_dropped_after_its_session_and_admin_apis_see_groups() {
    use sluice_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use sluice_protocol::messages::{
        ApiKey, ConsumerProtocolSubscription, GroupId, JoinGroupRequest, JoinGroupResponse,
    };
    use sluice_protocol::{Decodable, Encodable, StrBytes};
    use std::io::Write;

    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    broker.create_topic("silent", 4, &[]).await;
    let (a, _wa) = watched_member(&broker, "quiet", "silent", &[]);
    assert!(poll_watched(
        &[&a],
        Duration::from_secs(30),
        || assigned_to(&a).len() == 4
    ));

    // A raw member joins (6 s session) and then never heartbeats.
    let mut subscription = bytes::BytesMut::new();
    subscription.extend_from_slice(&0i16.to_be_bytes());
    ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_static_str("silent")])
        .encode(&mut subscription, 0)
        .unwrap();
    let join = |member: &str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("quiet")))
            .with_session_timeout_ms(6000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(StrBytes::from_string(member.to_owned()))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(subscription.clone().freeze())])
    };
    let mut raw = crate::wire::connect(&broker);
    raw.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut send_join = |member: &str, correlation: i32| -> JoinGroupResponse {
        raw.write_all(&crate::wire::frame(
            ApiKey::JoinGroup,
            5,
            correlation,
            &join(member),
        ))
        .unwrap();
        let (_, mut body) = crate::wire::read_response(&mut raw).expect("join response");
        JoinGroupResponse::decode(&mut body, 5).unwrap()
    };
    let first = send_join("", 1);
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
    let member_id = first.member_id.to_string();
    // The second join waits for the rebalance, which needs the rdkafka member to rejoin: poll it
    // from another thread meanwhile.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = a.poll(Duration::from_millis(20));
            }
            a
        })
    };
    let joined = send_join(&member_id, 2);
    assert_eq!(joined.error_code, 0);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let a = poller.join().unwrap();
    // The leader gave the raw member half the partitions...
    assert!(
        poll_watched(&[&a], Duration::from_secs(30), || assigned_to(&a).len()
            == 2),
        "a owns {:?}",
        assigned_to(&a)
    );
    // ...but it never syncs nor heartbeats: after its 6 s session the group rebalances and the
    // rdkafka member owns all four partitions again.
    let started = Instant::now();
    assert!(
        poll_watched(&[&a], Duration::from_secs(30), || assigned_to(&a).len()
            == 4),
        "a owns {:?}",
        assigned_to(&a)
    );
    eprintln!(
        "silent member dropped; survivor owns everything after {:?}",
        started.elapsed()
    );

    // ListGroups / DescribeGroups through librdkafka.
    let groups = a
        .fetch_group_list(Some("quiet"), Duration::from_secs(10))
        .unwrap();
    let group = &groups.groups()[0];
    assert_eq!(group.name(), "quiet");
    assert_eq!(group.state(), "Stable");
    assert_eq!(group.members().len(), 1);
    assert_eq!(group.members()[0].client_host(), "/127.0.0.1");

    // DeleteGroups refuses a group with members, then deletes it once empty; its offsets go.
    let mut at = TopicPartitionList::new();
    at.add_partition_offset("silent", 0, Offset::Offset(0))
        .unwrap();
    a.commit(&at, CommitMode::Sync).unwrap();
    let admin = broker.admin();
    let options = rdkafka::admin::AdminOptions::new();
    let result = admin.delete_groups(&["quiet"], &options).await.unwrap();
    assert_eq!(
        result[0],
        Err((
            "quiet".to_string(),
            rdkafka::types::RDKafkaErrorCode::NonEmptyGroup
        ))
    );
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let result = admin.delete_groups(&["quiet"], &options).await.unwrap();
        if result[0].is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "group never became deletable: {result:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let checker = member(&broker, "quiet", "other-topic");
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition("silent", 0);
    let committed = checker
        .committed_offsets(wanted, Duration::from_secs(10))
        .unwrap();
    assert_eq!(committed.elements()[0].offset(), Offset::Invalid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_carry_on_without_a_rebalance_across_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, "\"group.initial.rebalance.delay.ms\" = 300\n").unwrap();
    let data = dir.path().join("data");
    let args = ["--config", config.to_str().unwrap()];
    let mut broker = Broker::start_on(&data, 0, &args);
    let port = broker.port;
    broker.create_topic("steady", 4, &[]).await;
    // Sessions long enough that a member never gives up on a coordinator that is restarting,
    // however slow the machine: a rebalance below can only come from the broker.
    let session = [("session.timeout.ms", "60000")];
    let (a, wa) = watched_member(&broker, "steady-group", "steady", &session);
    let (b, wb) = watched_member(&broker, "steady-group", "steady", &session);
    assert!(poll_watched(&[&a, &b], Duration::from_secs(60), || {
        assigned_to(&a).len() == 2 && assigned_to(&b).len() == 2
    }));
    // Killed at once, with nothing waited for: a member has its assignment only once the
    // coordinator has stored it.
    let before = (
        wa.rebalances.load(std::sync::atomic::Ordering::SeqCst),
        wb.rebalances.load(std::sync::atomic::Ordering::SeqCst),
    );
    let (own_a, own_b) = (assigned_to(&a), assigned_to(&b));
    for restart in ["kill -9", "clean"] {
        if restart == "clean" {
            assert!(broker.stop(), "clean stop");
        } else {
            broker.kill9();
        }
        broker = Broker::start_on(&data, port, &args);
        // Both members heartbeat into the restarted coordinator, which knows them: a member it
        // did not know would be told to rejoin and would stop heartbeating until it had.
        let heartbeats = 10;
        assert!(
            poll_watched(&[&a, &b], Duration::from_secs(60), || {
                broker.requests_answered("Heartbeat") >= heartbeats
            }),
            "after {restart}: fewer than {heartbeats} heartbeats answered\n{}",
            broker.stderr()
        );
        assert_eq!(
            broker.requests_answered("JoinGroup"),
            0,
            "after {restart}: no member rejoined\n{}",
            broker.stderr()
        );
        let after = (
            wa.rebalances.load(std::sync::atomic::Ordering::SeqCst),
            wb.rebalances.load(std::sync::atomic::Ordering::SeqCst),
        );
        assert_eq!(
            after,
            before,
            "after {restart}: no rebalance\n{}",
            broker.stderr()
        );
        assert_eq!(
            (assigned_to(&a), assigned_to(&b)),
            (own_a.clone(), own_b.clone())
        );
        let groups = a
            .fetch_group_list(Some("steady-group"), Duration::from_secs(10))
            .unwrap();
        assert_eq!(groups.groups()[0].state(), "Stable", "after {restart}");
        assert_eq!(groups.groups()[0].members().len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_group_offset_fetch_offset_delete_and_state_filter_over_the_wire() {
    use sluice_protocol::messages::list_groups_request::ListGroupsRequest;
    use sluice_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    use sluice_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopics,
    };
    use sluice_protocol::messages::{
        ApiKey, GroupId, ListGroupsResponse, OffsetDeleteRequest, OffsetDeleteResponse,
        OffsetFetchRequest, OffsetFetchResponse, TopicName,
    };
    use sluice_protocol::{Decodable, StrBytes};
    use std::io::Write;

    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    broker.create_topic("wire", 2, &[]).await;
    // Two groups commit different offsets (standalone commits, no membership).
    for (group, offset) in [("first", 3), ("second", 7)] {
        let c: Closing = Closing::new(
            broker
                .client_config()
                .set("group.id", group)
                .create()
                .unwrap(),
        );
        let mut at = TopicPartitionList::new();
        at.add_partition_offset("wire", 0, Offset::Offset(offset))
            .unwrap();
        at.add_partition_offset("wire", 1, Offset::Offset(offset + 1))
            .unwrap();
        c.commit(&at, CommitMode::Sync).unwrap();
    }
    // A third group is active (Stable).
    let (active, _w) = watched_member(&broker, "third", "wire", &[]);
    assert!(poll_watched(
        &[&active],
        Duration::from_secs(30),
        || assigned_to(&active).len() == 2
    ));

    let mut stream = crate::wire::connect(&broker);
    let name = |s: &str| StrBytes::from_string(s.to_owned());
    let mut call = |key: ApiKey, version: i16, frame: Vec<u8>| {
        stream.write_all(&frame).unwrap();
        let (_, mut response) = crate::wire::read_response(&mut stream).expect("response");
        if key.response_header_version(version) >= 1 {
            let _tags = response.split_to(1);
        }
        response
    };

    // OffsetFetch v8: both groups in one request.
    let request = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(name("first")))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(TopicName(name("wire")))
                .with_partition_indexes(vec![0, 1])])),
        OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(name("second")))
            .with_topics(None),
    ]);
    let mut body = call(
        ApiKey::OffsetFetch,
        8,
        crate::wire::frame(ApiKey::OffsetFetch, 8, 1, &request),
    );
    let response = OffsetFetchResponse::decode(&mut body, 8).unwrap();
    let offsets: Vec<(String, Vec<i64>)> = response
        .groups
        .iter()
        .map(|g| {
            (
                g.group_id.0.to_string(),
                g.topics[0]
                    .partitions
                    .iter()
                    .map(|p| p.committed_offset)
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        offsets,
        vec![("first".into(), vec![3, 4]), ("second".into(), vec![7, 8])]
    );

    // OffsetDelete: allowed for an empty group, refused for a group consuming the topic.
    let delete = |group: &str| {
        OffsetDeleteRequest::default()
            .with_group_id(GroupId(name(group)))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(name("wire")))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0)
                ])])
    };
    let first = delete("first");
    let mut body = call(
        ApiKey::OffsetDelete,
        0,
        crate::wire::frame(ApiKey::OffsetDelete, 0, 2, &first),
    );
    let response = OffsetDeleteResponse::decode(&mut body, 0).unwrap();
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
    let third = delete("third");
    let mut body = call(
        ApiKey::OffsetDelete,
        0,
        crate::wire::frame(ApiKey::OffsetDelete, 0, 3, &third),
    );
    let response = OffsetDeleteResponse::decode(&mut body, 0).unwrap();
    assert_eq!(
        response.topics[0].partitions[0].error_code, 86,
        "GROUP_SUBSCRIBED_TO_TOPIC"
    );
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition("wire", 0);
    wanted.add_partition("wire", 1);
    let checker: Closing = Closing::new(
        broker
            .client_config()
            .set("group.id", "first")
            .create()
            .unwrap(),
    );
    let committed = checker
        .committed_offsets(wanted, Duration::from_secs(10))
        .unwrap();
    let values: Vec<Offset> = committed.elements().iter().map(|e| e.offset()).collect();
    assert_eq!(values, vec![Offset::Invalid, Offset::Offset(4)]);

    // ListGroups with a state filter.
    let list = ListGroupsRequest::default().with_states_filter(vec![name("Stable")]);
    let mut body = call(
        ApiKey::ListGroups,
        4,
        crate::wire::frame(ApiKey::ListGroups, 4, 4, &list),
    );
    let response = ListGroupsResponse::decode(&mut body, 4).unwrap();
    let stable: Vec<String> = response
        .groups
        .iter()
        .map(|g| g.group_id.0.to_string())
        .collect();
    assert_eq!(stable, vec!["third".to_string()]);
    drop(active);
}
