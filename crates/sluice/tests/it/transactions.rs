//! Transactions end to end with librdkafka's transactional producer: read_committed versus
//! read_uncommitted, fencing of a zombie producer, consume-transform-produce through broker
//! kill -9s, timeouts, and the admin views (DescribeTransactions, ListTransactions,
//! DescribeProducers).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use sluice_protocol::messages::describe_producers_request::TopicRequest;
use sluice_protocol::messages::{
    ApiKey, DescribeProducersRequest, DescribeProducersResponse, DescribeTransactionsRequest,
    DescribeTransactionsResponse, ListTransactionsRequest, ListTransactionsResponse, TopicName,
    TransactionalId,
};
use sluice_protocol::StrBytes;

use crate::closing::Closing;
use crate::harness::Broker;

const T: Duration = Duration::from_secs(30);

fn create_topic(broker: &Broker, name: &str, partitions: i32) {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(broker.create_topic(name, partitions, &[]));
}

fn txn_producer(broker: &Broker, id: &str, extra: &[(&str, &str)]) -> BaseProducer {
    let mut config = broker.client_config();
    config
        .set("transactional.id", id)
        .set("linger.ms", "5")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "300");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let producer: BaseProducer = config.create().expect("producer");
    producer.init_transactions(T).expect("init_transactions");
    producer
}

fn send(producer: &BaseProducer, topic: &str, key: &str, value: &str) {
    let deadline = Instant::now() + T;
    loop {
        match producer.send(BaseRecord::to(topic).key(key).payload(value)) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                if Instant::now() < deadline =>
            {
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => panic!("send {value}: {e}"),
        }
    }
}

/// Every value in `topic` from the beginning up to its end (the last stable offset when
/// `committed`), read with a fresh consumer.
fn read_all(broker: &Broker, topic: &str, partitions: i32, committed: bool) -> Vec<String> {
    let consumer: Closing = Closing::new(
        broker
            .client_config()
            .set("group.id", "txn-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set(
                "isolation.level",
                if committed {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            )
            .create()
            .expect("consumer"),
    );
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + T;
    let mut at_end = std::collections::HashSet::new();
    let mut values = Vec::new();
    while at_end.len() < partitions as usize {
        assert!(
            Instant::now() < deadline,
            "{topic}: end not reached in time"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    values.sort();
    values
}

fn sorted(values: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = values.into_iter().collect();
    v.sort();
    v
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    sorted(range.map(|i| format!("{prefix}{i}")))
}

fn describe_txn(broker: &Broker, id: &str) -> (String, i64, i16, Vec<(String, Vec<i32>)>) {
    let mut stream = crate::wire::connect(broker);
    let response: DescribeTransactionsResponse = crate::wire::call(
        &mut stream,
        ApiKey::DescribeTransactions,
        0,
        &DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(StrBytes::from_string(id.to_owned()))]),
    );
    let state = &response.transaction_states[0];
    assert_eq!(state.error_code, 0, "describe {id}");
    (
        state.transaction_state.to_string(),
        state.producer_id.0,
        state.producer_epoch,
        state
            .topics
            .iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
            .collect(),
    )
}

fn list_txns(broker: &Broker, state: &str) -> Vec<String> {
    let mut stream = crate::wire::connect(broker);
    let response: ListTransactionsResponse = crate::wire::call(
        &mut stream,
        ApiKey::ListTransactions,
        1,
        &ListTransactionsRequest::default()
            .with_state_filters(vec![StrBytes::from_string(state.to_owned())])
            .with_duration_filter(-1),
    );
    assert_eq!(response.error_code, 0);
    response
        .transaction_states
        .iter()
        .map(|t| t.transactional_id.0.to_string())
        .collect()
}

/// (producer id, open transaction's first offset) of each producer of a partition.
fn producers_of(broker: &Broker, topic: &str, partition: i32) -> Vec<(i64, i64)> {
    let mut stream = crate::wire::connect(broker);
    let response: DescribeProducersResponse = crate::wire::call(
        &mut stream,
        ApiKey::DescribeProducers,
        0,
        &DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partition_indexes(vec![partition])]),
    );
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.active_producers
        .iter()
        .map(|s| (s.producer_id.0, s.current_txn_start_offset))
        .collect()
}

#[test]
fn read_committed_sees_committed_transactions_only() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    create_topic(&broker, "txn", 2);
    let producer = txn_producer(&broker, "t1", &[]);

    producer.begin_transaction().unwrap();
    for i in 0..10 {
        send(&producer, "txn", &i.to_string(), &format!("c{i}"));
    }
    producer.commit_transaction(T).unwrap();

    producer.begin_transaction().unwrap();
    for i in 0..10 {
        send(&producer, "txn", &i.to_string(), &format!("a{i}"));
    }
    producer.flush(T).unwrap();
    producer.abort_transaction(T).unwrap();

    producer.begin_transaction().unwrap();
    for i in 10..15 {
        send(&producer, "txn", &i.to_string(), &format!("c{i}"));
    }
    producer.commit_transaction(T).unwrap();

    // One transaction left open: written, not ended.
    producer.begin_transaction().unwrap();
    for i in 0..5 {
        send(&producer, "txn", &i.to_string(), &format!("o{i}"));
    }
    producer.flush(T).unwrap();

    assert_eq!(read_all(&broker, "txn", 2, true), names("c", 0..15));
    let mut everything = names("c", 0..15);
    everything.extend(names("a", 0..10));
    everything.extend(names("o", 0..5));
    assert_eq!(read_all(&broker, "txn", 2, false), sorted(everything));

    // The admin views show the open transaction.
    let (state, pid, _, topics) = describe_txn(&broker, "t1");
    assert_eq!(state, "Ongoing");
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].0, "txn");
    assert_eq!(list_txns(&broker, "Ongoing"), vec!["t1".to_owned()]);
    let open: Vec<(i64, i64)> = (0..2)
        .flat_map(|p| producers_of(&broker, "txn", p))
        .filter(|(id, first)| *id == pid && *first >= 0)
        .collect();
    assert!(
        !open.is_empty(),
        "DescribeProducers shows the open transaction"
    );

    producer.abort_transaction(T).unwrap();
    assert_eq!(read_all(&broker, "txn", 2, true), names("c", 0..15));
    assert_eq!(describe_txn(&broker, "t1").0, "CompleteAbort");
    assert!(list_txns(&broker, "Ongoing").is_empty());
    for p in 0..2 {
        assert!(producers_of(&broker, "txn", p)
            .iter()
            .all(|(_, first)| *first == -1));
    }
}

#[test]
fn a_new_instance_fences_the_zombie() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    create_topic(&broker, "fence", 1);
    let zombie = txn_producer(&broker, "app", &[]);
    zombie.begin_transaction().unwrap();
    send(&zombie, "fence", "k", "zombie-1");
    zombie.flush(T).unwrap();

    let fresh = txn_producer(&broker, "app", &[]);
    let (_, _, epoch, _) = describe_txn(&broker, "app");
    assert!(epoch >= 1, "the epoch was bumped");

    // The zombie can neither write nor commit any more.
    send(&zombie, "fence", "k", "zombie-2");
    let committed = zombie.commit_transaction(T);
    assert!(committed.is_err(), "zombie commit must fail: {committed:?}");

    fresh.begin_transaction().unwrap();
    send(&fresh, "fence", "k", "fresh");
    fresh.commit_transaction(T).unwrap();
    assert_eq!(
        read_all(&broker, "fence", 1, true),
        vec!["fresh".to_owned()]
    );
}

#[test]
fn an_abandoned_transaction_times_out_and_is_never_exposed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = crate::harness::start_with_toml(
        dir.path(),
        "\"transaction.abort.timed.out.transaction.cleanup.interval.ms\" = \"200\"\n",
    );
    create_topic(&broker, "slow", 1);
    let slow = txn_producer(
        &broker,
        "slow",
        &[
            ("transaction.timeout.ms", "2000"),
            ("message.timeout.ms", "2000"),
        ],
    );
    slow.begin_transaction().unwrap();
    for i in 0..3 {
        send(&slow, "slow", "k", &format!("s{i}"));
    }
    slow.flush(T).unwrap();
    let deadline = Instant::now() + T;
    while describe_txn(&broker, "slow").0 != "CompleteAbort" {
        assert!(Instant::now() < deadline, "transaction not aborted in time");
        std::thread::sleep(Duration::from_millis(100));
    }
    let plain: BaseProducer = broker.client_config().create().unwrap();
    plain
        .send(BaseRecord::to("slow").key("k").payload("after"))
        .unwrap();
    plain.flush(T).unwrap();
    // The aborted records never reach read_committed readers, and the stable offset moved on.
    assert_eq!(read_all(&broker, "slow", 1, true), vec!["after".to_owned()]);
    assert!(
        slow.commit_transaction(T).is_err(),
        "the timed-out producer is fenced"
    );
}

const PIPELINE_INPUT: usize = 600;

/// One instance of a consume-transform-produce app: reads `ctp-in` in group `ctp`, writes
/// `out-<value>` to `ctp-out`, and commits its input offsets in the same transaction. Stops
/// after `transactions` commits or when the input is exhausted. With `leave_open`, it then
/// starts one more transaction, writes it and returns its clients without ending it (the caller
/// kills the broker before dropping them).
fn run_pipeline(
    broker: &Broker,
    transactions: usize,
    leave_open: bool,
) -> Option<(BaseProducer, Closing)> {
    let consumer: Closing = Closing::new(
        broker
            .client_config()
            .set("group.id", "ctp")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", "6000")
            .create()
            .expect("consumer"),
    );
    consumer.subscribe(&["ctp-in"]).unwrap();
    let producer = txn_producer(broker, "ctp-app", &[]);
    let mut done = 0;
    let mut idle_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(90);
    while done < transactions && Instant::now() < deadline {
        let mut batch = Vec::new();
        while batch.len() < 40 {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    batch.push(String::from_utf8_lossy(m.payload().unwrap()).into_owned())
                }
                Some(Err(e)) => panic!("consume: {e}"),
                None => break,
            }
        }
        if batch.is_empty() {
            // The input is exhausted once nothing arrived for a while after the first batch.
            if idle_since.elapsed() > Duration::from_secs(8) {
                break;
            }
            continue;
        }
        idle_since = Instant::now();
        producer.begin_transaction().unwrap();
        for value in &batch {
            send(&producer, "ctp-out", value, &format!("out-{value}"));
        }
        let positions = consumer.position().unwrap();
        producer
            .send_offsets_to_transaction(&positions, &consumer.group_metadata().unwrap(), T)
            .unwrap_or_else(|e| panic!("send offsets: {e}\nbroker log:\n{}", broker.stderr()));
        producer.commit_transaction(T).expect("commit");
        done += 1;
    }
    if leave_open {
        let mut batch = Vec::new();
        let until = Instant::now() + Duration::from_secs(10);
        while batch.is_empty() && Instant::now() < until {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                batch.push(String::from_utf8_lossy(m.payload().unwrap()).into_owned());
            }
        }
        producer.begin_transaction().unwrap();
        for value in &batch {
            send(&producer, "ctp-out", value, &format!("out-{value}"));
        }
        producer.flush(T).unwrap();
        return Some((producer, consumer));
    }
    None
}

#[test]
fn consume_transform_produce_is_exactly_once_through_broker_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "\"group.initial.rebalance.delay.ms\" = \"0\"\n";
    let mut broker = crate::harness::start_with_toml(dir.path(), toml);
    let port = broker.port;
    create_topic(&broker, "ctp-in", 3);
    create_topic(&broker, "ctp-out", 3);
    let plain: BaseProducer = broker.client_config().create().unwrap();
    for i in 0..PIPELINE_INPUT {
        let value = i.to_string();
        let key = (i % 7).to_string();
        loop {
            match plain.send(BaseRecord::to("ctp-in").key(&key).payload(&value)) {
                Ok(()) => break,
                Err(_) => {
                    plain.poll(Duration::from_millis(20));
                }
            }
        }
    }
    plain.flush(T).unwrap();
    drop(plain);

    let config = dir.path().join("sluice.toml");
    let restart = |broker: &mut Broker| {
        broker.kill9();
        *broker = Broker::start_on(
            &dir.path().join("data"),
            port,
            &["--config", config.to_str().unwrap()],
        );
    };
    // A crash between transactions.
    assert!(run_pipeline(&broker, 4, false).is_none());
    restart(&mut broker);
    // A crash with a transaction open (written, not committed); that app instance dies after
    // the broker is back.
    let zombie = run_pipeline(&broker, 3, true);
    restart(&mut broker);
    drop(zombie);
    // The rest of the input.
    run_pipeline(&broker, usize::MAX, false);

    let output = read_all(&broker, "ctp-out", 3, true);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for value in &output {
        *counts.entry(value.as_str()).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "duplicates on the output: {duplicated:?}"
    );
    assert_eq!(
        output,
        sorted((0..PIPELINE_INPUT).map(|i| format!("out-{i}"))),
        "every input record exactly once"
    );
}

mod late_writes {
    //! The KIP-890 guard over the raw protocol: transactional writes a partition must refuse;
    //! and WriteTxnMarkers as another broker's coordinator sends it.

    use bytes::Bytes;
    use sluice_protocol::error::ResponseError;
    use sluice_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use sluice_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use sluice_protocol::messages::write_txn_markers_request::{
        WritableTxnMarker, WritableTxnMarkerTopic,
    };
    use sluice_protocol::messages::{
        AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, EndTxnRequest,
        EndTxnResponse, FindCoordinatorRequest, FindCoordinatorResponse, InitProducerIdRequest,
        InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId, TopicName,
        TransactionalId, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
    };
    use sluice_protocol::StrBytes;

    use super::{create_topic, read_all};
    use crate::harness::Broker;
    use crate::wire::{authenticate_member, call, connect, data_dir_secret};

    const INVALID_TXN_STATE: i16 = 48;

    fn name(s: &str) -> StrBytes {
        StrBytes::from_string(s.to_owned())
    }

    fn txn_batch(pid: i64, epoch: i16, seq: i32, value: &str) -> Bytes {
        sluice_log::testing::BatchBuilder::new()
            .producer(pid, epoch, seq)
            .attributes(0x10)
            .record(Some(b"k"), value.as_bytes(), crate::harness::now_ms())
            .build()
    }

    fn produce(
        stream: &mut std::net::TcpStream,
        txn_id: Option<&str>,
        topic: &str,
        partition: i32,
        batch: Bytes,
    ) -> i16 {
        let request = ProduceRequest::default()
            .with_transactional_id(txn_id.map(|id| TransactionalId(name(id))))
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(name(topic)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch))])]);
        let response: ProduceResponse = call(stream, ApiKey::Produce, 9, &request);
        response.responses[0].partition_responses[0].error_code
    }

    #[test]
    fn writes_outside_the_ongoing_transaction_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(dir.path());
        create_topic(&broker, "late", 2);
        let mut s = connect(&broker);
        let found: FindCoordinatorResponse = call(
            &mut s,
            ApiKey::FindCoordinator,
            3,
            &FindCoordinatorRequest::default()
                .with_key(name("raw"))
                .with_key_type(1),
        );
        assert_eq!(found.error_code, 0);
        let init: InitProducerIdResponse = call(
            &mut s,
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(name("raw"))))
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        );
        assert_eq!(init.error_code, 0);
        let (pid, epoch) = (init.producer_id.0, init.producer_epoch);

        // Before AddPartitionsToTxn nothing may be written.
        assert_eq!(
            produce(
                &mut s,
                Some("raw"),
                "late",
                0,
                txn_batch(pid, epoch, 0, "early")
            ),
            INVALID_TXN_STATE
        );
        let added: AddPartitionsToTxnResponse = call(
            &mut s,
            ApiKey::AddPartitionsToTxn,
            3,
            &AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(name("raw")))
                .with_v3_and_below_producer_id(ProducerId(pid))
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(name("late")))
                    .with_partitions(vec![0])]),
        );
        let code =
            added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code;
        assert_eq!(code, 0);
        assert_eq!(
            produce(
                &mut s,
                Some("raw"),
                "late",
                0,
                txn_batch(pid, epoch, 0, "in-txn")
            ),
            0
        );
        // A partition that was not added, and a transactional batch without a transactional id.
        assert_eq!(
            produce(
                &mut s,
                Some("raw"),
                "late",
                1,
                txn_batch(pid, epoch, 0, "other")
            ),
            INVALID_TXN_STATE
        );
        let end: EndTxnResponse = call(
            &mut s,
            ApiKey::EndTxn,
            3,
            &EndTxnRequest::default()
                .with_transactional_id(TransactionalId(name("raw")))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_committed(true),
        );
        assert_eq!(end.error_code, 0);
        // The late write of the committed transaction: next in sequence, same epoch, refused.
        assert_eq!(
            produce(
                &mut s,
                Some("raw"),
                "late",
                0,
                txn_batch(pid, epoch, 1, "late")
            ),
            INVALID_TXN_STATE
        );
        assert_eq!(
            produce(&mut s, None, "late", 0, txn_batch(pid, epoch, 1, "no-id")),
            INVALID_TXN_STATE
        );
        // An older epoch is fenced by the coordinator.
        let stale: EndTxnResponse = call(
            &mut s,
            ApiKey::EndTxn,
            3,
            &EndTxnRequest::default()
                .with_transactional_id(TransactionalId(name("raw")))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch - 1)
                .with_committed(true),
        );
        assert_eq!(stale.error_code, ResponseError::ProducerFenced.code());
        assert_eq!(
            read_all(&broker, "late", 2, true),
            vec!["in-txn".to_owned()]
        );
        assert_eq!(
            read_all(&broker, "late", 2, false),
            vec!["in-txn".to_owned()]
        );
    }

    /// WriteTxnMarkers v1 as a coordinator on another broker would send it (authenticated as a
    /// node of the cluster): one error code per partition, the marker of an older producer
    /// epoch refused as obsolete.
    #[test]
    fn write_txn_markers_answers_per_partition() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(dir.path());
        create_topic(&broker, "marked", 1);
        let mut s = connect(&broker);
        authenticate_member(&mut s, &data_dir_secret(dir.path()), 2, 1).unwrap();
        // The log learns producer 4242 at epoch 3 from an idempotent write.
        let batch = sluice_log::testing::BatchBuilder::new()
            .producer(4242, 3, 0)
            .record(Some(b"k"), b"plain", crate::harness::now_ms())
            .build();
        assert_eq!(produce(&mut s, None, "marked", 0, batch), 0);
        let markers = |epoch: i16, topics: Vec<(&str, Vec<i32>)>| {
            WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
                .with_producer_id(ProducerId(4242))
                .with_producer_epoch(epoch)
                .with_transaction_result(true)
                .with_coordinator_epoch(1)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, p)| {
                            WritableTxnMarkerTopic::default()
                                .with_name(TopicName(name(t)))
                                .with_partition_indexes(p)
                        })
                        .collect(),
                )])
        };
        let codes = |response: WriteTxnMarkersResponse| -> Vec<(String, i32, i16)> {
            response
                .markers
                .iter()
                .flat_map(|m| &m.topics)
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| (t.name.0.to_string(), p.partition_index, p.error_code))
                })
                .collect()
        };
        let answer: WriteTxnMarkersResponse = call(
            &mut s,
            ApiKey::WriteTxnMarkers,
            1,
            &markers(3, vec![("marked", vec![0, 7]), ("missing", vec![0])]),
        );
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(
            codes(answer),
            vec![
                ("marked".to_owned(), 0, 0),
                ("marked".to_owned(), 7, unknown),
                ("missing".to_owned(), 0, unknown),
            ]
        );
        let stale: WriteTxnMarkersResponse = call(
            &mut s,
            ApiKey::WriteTxnMarkers,
            1,
            &markers(2, vec![("marked", vec![0])]),
        );
        assert_eq!(
            codes(stale),
            vec![(
                "marked".to_owned(),
                0,
                ResponseError::InvalidProducerEpoch.code()
            )]
        );
        // The marker is a control batch: readers see only the record.
        assert_eq!(
            read_all(&broker, "marked", 1, true),
            vec!["plain".to_owned()]
        );
    }
}

#[test]
fn sluice_consume_reads_committed_or_everything() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    create_topic(&broker, "cli-txn", 2);
    let producer = txn_producer(&broker, "cli", &[]);
    for (round, commit) in [(0, true), (1, false), (2, true)] {
        producer.begin_transaction().unwrap();
        for i in 0..4 {
            send(
                &producer,
                "cli-txn",
                &i.to_string(),
                &format!("r{round}-{i}"),
            );
        }
        producer.flush(T).unwrap();
        if commit {
            producer.commit_transaction(T).unwrap();
        } else {
            producer.abort_transaction(T).unwrap();
        }
    }
    // One more, left open: read_committed stops before it.
    producer.begin_transaction().unwrap();
    send(&producer, "cli-txn", "0", "open");
    producer.flush(T).unwrap();

    let read = |extra: &[&str]| {
        let mut args = vec!["cli-txn", "--from", "beginning", "--exit-at-end"];
        args.extend_from_slice(extra);
        sorted(
            crate::harness::cli_ok("consume", &broker, &args)
                .lines()
                .map(str::to_owned),
        )
    };
    let committed = sorted((0..4).flat_map(|i| [format!("r0-{i}"), format!("r2-{i}")]));
    assert_eq!(read(&["--isolation-level", "read_committed"]), committed);
    let mut everything = committed.clone();
    everything.extend((0..4).map(|i| format!("r1-{i}")));
    everything.push("open".to_owned());
    assert_eq!(read(&[]), sorted(everything));
    producer.abort_transaction(T).unwrap();
}

#[test]
fn idle_transactional_ids_expire_and_stay_forgotten_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "\"transactional.id.expiration.ms\" = \"1000\"\n\
                \"transaction.abort.timed.out.transaction.cleanup.interval.ms\" = \"200\"\n";
    let mut broker = crate::harness::start_with_toml(dir.path(), toml);
    create_topic(&broker, "idle", 1);
    let producer = txn_producer(&broker, "idle-app", &[]);
    producer.begin_transaction().unwrap();
    send(&producer, "idle", "k", "v");
    producer.commit_transaction(T).unwrap();
    drop(producer);
    let not_found = |broker: &Broker| {
        let mut stream = crate::wire::connect(broker);
        let response: DescribeTransactionsResponse = crate::wire::call(
            &mut stream,
            ApiKey::DescribeTransactions,
            0,
            &DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(
                StrBytes::from_static_str("idle-app"),
            )]),
        );
        response.transaction_states[0].error_code == 105 // TRANSACTIONAL_ID_NOT_FOUND
    };
    let deadline = Instant::now() + T;
    while !not_found(&broker) {
        assert!(Instant::now() < deadline, "the idle id did not expire");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The tombstone keeps it forgotten across a restart.
    assert!(broker.stop(), "clean stop");
    let config = dir.path().join("sluice.toml");
    broker = Broker::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    assert!(not_found(&broker));
    // The id can be used again: a fresh producer id.
    let again = txn_producer(&broker, "idle-app", &[]);
    again.begin_transaction().unwrap();
    send(&again, "idle", "k", "again");
    again.commit_transaction(T).unwrap();
    assert_eq!(
        read_all(&broker, "idle", 1, true),
        vec!["again".to_owned(), "v".to_owned()]
    );
}
