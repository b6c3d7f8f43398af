//! Internal topics are protected (issue 13, finding 4): no client can delete
//! `__consumer_offsets` or `__transaction_state`, change their partition count, delete their
//! records, create them, or give them configs that would discard their data; each refusal has
//! Kafka's code and a message saying why, and a group's committed offsets and the transaction
//! state survive the attempts and a restart.

use std::net::TcpStream;
use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sluice_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use sluice_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use sluice_protocol::messages::create_topics_request::CreatableTopic;
use sluice_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use sluice_protocol::messages::incremental_alter_configs_request as incremental;
use sluice_protocol::messages::metadata_request::MetadataRequestTopic;
use sluice_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, ApiKey, CreatePartitionsRequest,
    CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteRecordsRequest,
    DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, MetadataRequest,
    MetadataResponse, TopicName,
};
use sluice_protocol::StrBytes;

use crate::harness::{cli_ok, Broker};
use crate::membership::connect_port;
use crate::wire::call;

const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;

const OFFSETS: &str = "__consumer_offsets";
const TXN_STATE: &str = "__transaction_state";

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

/// (error code, message) of a refused operation.
type Answer = (i16, String);

fn message(text: Option<&StrBytes>) -> String {
    text.map(|m| m.to_string()).unwrap_or_default()
}

fn delete_topic(stream: &mut TcpStream, topic: &str) -> Answer {
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![TopicName(s(topic))])
        .with_timeout_ms(5000);
    let response: DeleteTopicsResponse = call(stream, ApiKey::DeleteTopics, 5, &request);
    let result = &response.responses[0];
    (result.error_code, message(result.error_message.as_ref()))
}

fn add_partitions(stream: &mut TcpStream, topic: &str, count: i32) -> Answer {
    let request = CreatePartitionsRequest::default()
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(TopicName(s(topic)))
            .with_count(count)])
        .with_timeout_ms(5000);
    let response: CreatePartitionsResponse = call(stream, ApiKey::CreatePartitions, 2, &request);
    let result = &response.results[0];
    (result.error_code, message(result.error_message.as_ref()))
}

fn delete_records(stream: &mut TcpStream, topic: &str) -> i16 {
    let request = DeleteRecordsRequest::default()
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(-1)])])
        .with_timeout_ms(5000);
    let response: DeleteRecordsResponse = call(stream, ApiKey::DeleteRecords, 2, &request);
    response.topics[0].partitions[0].error_code
}

/// AlterConfigs: replaces the topic's overrides with `configs`.
fn alter_configs(stream: &mut TcpStream, topic: &str, configs: &[(&str, &str)]) -> Answer {
    let request =
        AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(topic))
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        AlterableConfig::default()
                            .with_name(s(k))
                            .with_value(Some(s(v)))
                    })
                    .collect(),
            )]);
    let response: AlterConfigsResponse = call(stream, ApiKey::AlterConfigs, 2, &request);
    let result = &response.responses[0];
    (result.error_code, message(result.error_message.as_ref()))
}

/// IncrementalAlterConfigs of one config: `op` 0 SET, 1 DELETE.
fn alter_one(stream: &mut TcpStream, topic: &str, name: &str, op: i8, value: &str) -> Answer {
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(topic))
            .with_configs(vec![incremental::AlterableConfig::default()
                .with_name(s(name))
                .with_config_operation(op)
                .with_value(Some(s(value)))]),
    ]);
    let response: IncrementalAlterConfigsResponse =
        call(stream, ApiKey::IncrementalAlterConfigs, 1, &request);
    let result = &response.responses[0];
    (result.error_code, message(result.error_message.as_ref()))
}

fn create_topic(stream: &mut TcpStream, topic: &str) -> Answer {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s(topic)))
            .with_num_partitions(1)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let response: CreateTopicsResponse = call(stream, ApiKey::CreateTopics, 7, &request);
    let result = &response.topics[0];
    (result.error_code, message(result.error_message.as_ref()))
}

/// Partition count of `topic` in Metadata (None: not there).
fn partitions_of(stream: &mut TcpStream, topic: &str) -> Option<usize> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(s(topic))))
        ]))
        .with_allow_auto_topic_creation(false);
    let response: MetadataResponse = call(stream, ApiKey::Metadata, 9, &request);
    let answer = &response.topics[0];
    (answer.error_code == 0).then_some(answer.partitions.len())
}

/// The offset group `keeper` committed on `data`/0, as `sluice group describe` shows it.
fn committed(broker: &Broker) -> Option<i64> {
    let out = cli_ok("group", broker, &["describe", "keeper", "--output", "json"]);
    let described: serde_json::Value = serde_json::from_str(&out).expect("json");
    described["partitions"][0]["current_offset"].as_i64()
}

/// Every attempt on one internal topic is refused with the right code and a reason.
fn assert_protected(stream: &mut TcpStream, topic: &str) {
    let (code, why) = delete_topic(stream, topic);
    assert_eq!(code, INVALID_TOPIC_EXCEPTION, "delete {topic}: {why}");
    assert!(why.contains("cannot delete internal topic"), "{why}");

    let (code, why) = add_partitions(stream, topic, 100);
    assert_eq!(code, INVALID_TOPIC_EXCEPTION, "grow {topic}: {why}");
    assert!(why.contains("partition count"), "{why}");

    assert_eq!(
        delete_records(stream, topic),
        INVALID_TOPIC_EXCEPTION,
        "{topic}"
    );

    let (code, why) = create_topic(stream, topic);
    assert_eq!(code, INVALID_REQUEST, "create {topic}: {why}");
    assert!(why.contains("prohibited"), "{why}");

    for configs in [
        &[("cleanup.policy", "delete")][..],
        &[("cleanup.policy", "delete"), ("retention.ms", "1")][..],
        &[("cleanup.policy", "compact,delete")][..],
        // Replacing the overrides without cleanup.policy falls back to the default, delete.
        &[("segment.ms", "60000")][..],
    ] {
        let (code, why) = alter_configs(stream, topic, configs);
        assert_eq!(code, INVALID_CONFIG, "{topic} {configs:?}: {why}");
        assert!(why.contains(topic), "{why}");
    }
    for (name, op, value) in [
        ("cleanup.policy", 0, "delete"),
        ("retention.ms", 0, "1"),
        ("retention.bytes", 0, "1024"),
        ("unclean.leader.election.enable", 0, "true"),
        ("cleanup.policy", 1, ""),
    ] {
        let (code, why) = alter_one(stream, topic, name, op, value);
        assert_eq!(
            code, INVALID_CONFIG,
            "{topic} {name} op {op} {value}: {why}"
        );
        assert!(
            why.contains(name) || why.contains("cleanup.policy"),
            "{why}"
        );
    }
    // What keeps the data stays configurable.
    assert_eq!(
        alter_one(stream, topic, "min.compaction.lag.ms", 0, "1000").0,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_topics_cannot_be_deleted_resized_or_made_to_discard_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    broker.create_topic("data", 1, &[]).await;
    tokio::task::block_in_place(|| {
        // A transactional producer creates __transaction_state and commits a transaction.
        let producer: BaseProducer = broker
            .client_config()
            .set("transactional.id", "keeper-txn")
            .create()
            .expect("producer");
        producer.init_transactions(Duration::from_secs(30)).unwrap();
        producer.begin_transaction().unwrap();
        for i in 0..5 {
            let value = format!("v{i}");
            producer
                .send(BaseRecord::<(), _>::to("data").partition(0).payload(&value))
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer
            .commit_transaction(Duration::from_secs(30))
            .unwrap();
    });
    // A group commits offset 3 (creating __consumer_offsets).
    cli_ok(
        "group",
        &broker,
        &[
            "reset-offsets",
            "keeper",
            "--topic",
            "data",
            "--to-offset",
            "3",
            "--execute",
        ],
    );
    assert_eq!(committed(&broker), Some(3));

    let port = broker.port;
    let counts = tokio::task::spawn_blocking(move || {
        let mut stream = connect_port(port);
        let counts = (
            partitions_of(&mut stream, OFFSETS),
            partitions_of(&mut stream, TXN_STATE),
        );
        for topic in [OFFSETS, TXN_STATE] {
            assert_protected(&mut stream, topic);
        }
        // Ordinary topics keep Kafka's freedom.
        assert_eq!(
            alter_one(&mut stream, "data", "retention.ms", 0, "60000").0,
            0
        );
        counts
    })
    .await
    .unwrap();
    assert_eq!(counts.0, Some(50), "offsets.topic.num.partitions");
    assert_eq!(counts.1, Some(50), "transaction.state.log.num.partitions");
    assert_eq!(committed(&broker), Some(3));

    // After a crash and restart everything is where it was.
    broker.kill9();
    let broker = Broker::start(dir.path());
    assert_eq!(committed(&broker), Some(3), "the committed offset survived");
    let port = broker.port;
    let after = tokio::task::spawn_blocking(move || {
        let mut stream = connect_port(port);
        (
            partitions_of(&mut stream, OFFSETS),
            partitions_of(&mut stream, TXN_STATE),
        )
    })
    .await
    .unwrap();
    assert_eq!(after, counts);
    // The transaction state survived: the transactional id's producer resumes.
    tokio::task::block_in_place(|| {
        let producer: BaseProducer = broker
            .client_config()
            .set("transactional.id", "keeper-txn")
            .create()
            .expect("producer");
        producer.init_transactions(Duration::from_secs(30)).unwrap();
    });
}

/// A Metadata request that auto-creates an internal topic's name gets the broker's internal
/// topic (its partition count and compaction), not a user topic with delete retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_creating_an_internal_name_creates_the_internal_topic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let port = broker.port;
    let partitions = tokio::task::spawn_blocking(move || {
        let mut stream = connect_port(port);
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(TopicName(s(OFFSETS))))
            ]))
            .with_allow_auto_topic_creation(true);
        let _: MetadataResponse = call(&mut stream, ApiKey::Metadata, 9, &request);
        partitions_of(&mut stream, OFFSETS)
    })
    .await
    .unwrap();
    assert_eq!(partitions, Some(50));
    let out = cli_ok("topic", &broker, &["describe", OFFSETS, "--output", "json"]);
    assert!(out.contains("\"compact\""), "{out}");
}
