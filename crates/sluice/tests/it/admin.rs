//! Topic administration through librdkafka's admin client: create (with configs, validate_only,
//! errors), delete, metadata, and auto-creation.

use std::time::Duration;

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaErrorCode;

use crate::harness::Broker;
use crate::produce_consume::{consumer, produce_records, producer};

fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_validate_delete_and_auto_create() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let admin = broker.admin();

    // validate_only checks without creating.
    let topic =
        NewTopic::new("checked", 4, TopicReplication::Fixed(1)).set("retention.ms", "60000");
    let result = admin
        .create_topics([&topic], &options().validate_only(true))
        .await
        .unwrap();
    assert!(result[0].is_ok(), "{result:?}");
    let metadata = consumer(&broker)
        .fetch_metadata(Some("checked"), Duration::from_secs(10))
        .unwrap();
    // Nothing was created (librdkafka consumers ask Metadata not to auto-create).
    assert_eq!(
        metadata.topics()[0].error(),
        Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART),
        "{:?}",
        metadata.topics()[0].partitions().len()
    );

    // Real creation with configs.
    let topic = NewTopic::new("configured", 4, TopicReplication::Fixed(1))
        .set("retention.ms", "60000")
        .set("cleanup.policy", "delete");
    let result = admin.create_topics([&topic], &options()).await.unwrap();
    assert!(result[0].is_ok(), "{result:?}");
    let again = admin.create_topics([&topic], &options()).await.unwrap();
    assert_eq!(
        again[0],
        Err(("configured".into(), RDKafkaErrorCode::TopicAlreadyExists))
    );

    // Errors: bad config, bad replication factor, bad name, bad partition count.
    let bad =
        NewTopic::new("bad-config", 1, TopicReplication::Fixed(1)).set("retention.ms", "soon");
    let result = admin.create_topics([&bad], &options()).await.unwrap();
    assert_eq!(
        result[0],
        Err(("bad-config".into(), RDKafkaErrorCode::InvalidConfig))
    );
    let bad = NewTopic::new("bad-config", 1, TopicReplication::Fixed(1)).set("no.such.config", "1");
    let result = admin.create_topics([&bad], &options()).await.unwrap();
    assert_eq!(
        result[0],
        Err(("bad-config".into(), RDKafkaErrorCode::InvalidConfig))
    );
    let bad = NewTopic::new("bad-rf", 1, TopicReplication::Fixed(3));
    let result = admin.create_topics([&bad], &options()).await.unwrap();
    assert_eq!(
        result[0],
        Err(("bad-rf".into(), RDKafkaErrorCode::InvalidReplicationFactor))
    );
    let bad = NewTopic::new("bad/name", 1, TopicReplication::Fixed(1));
    let result = admin.create_topics([&bad], &options()).await.unwrap();
    assert_eq!(
        result[0],
        Err(("bad/name".into(), RDKafkaErrorCode::InvalidTopic))
    );

    // Metadata lists it with 4 partitions led by our node.
    let metadata = consumer(&broker)
        .fetch_metadata(Some("configured"), Duration::from_secs(10))
        .unwrap();
    let t = &metadata.topics()[0];
    assert_eq!(t.partitions().len(), 4);
    assert!(t
        .partitions()
        .iter()
        .all(|p| p.leader() == 1 && p.isr() == [1]));
    assert_eq!(metadata.brokers()[0].port() as u16, broker.port);

    // Produce auto-creates a topic it has never seen.
    let producer = producer(&broker, &[]);
    let produced = produce_records(&producer, "auto-made", 5, crate::harness::now_ms()).await;
    assert_eq!(produced.values().map(Vec::len).sum::<usize>(), 5);

    // Delete: gone from metadata, directory removed, name reusable.
    let result = admin
        .delete_topics(&["configured"], &options())
        .await
        .unwrap();
    assert!(result[0].is_ok(), "{result:?}");
    let result = admin
        .delete_topics(&["configured"], &options())
        .await
        .unwrap();
    assert_eq!(
        result[0],
        Err((
            "configured".into(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))
    );
    assert!(!dir.path().join("configured-0").exists());
    let topic = NewTopic::new("configured", 2, TopicReplication::Fixed(1));
    let result = admin.create_topics([&topic], &options()).await.unwrap();
    assert!(result[0].is_ok(), "{result:?}");

    // Topics and their configs survive a restart.
    drop(admin);
    drop(producer);
    let mut broker = broker;
    assert!(broker.stop(), "clean shutdown");
    let broker = Broker::start(dir.path());
    let metadata = consumer(&broker)
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let mut names: Vec<_> = metadata
        .topics()
        .iter()
        .map(|t| (t.name().to_string(), t.partitions().len()))
        // __consumer_offsets appears once a client looked for a group coordinator, as in Kafka.
        .filter(|(name, _)| !name.starts_with("__"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![("auto-made".to_string(), 1), ("configured".to_string(), 2)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_broker_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _broker = Broker::start(dir.path());
    let output = crate::harness::run_watched(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path()),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");
}
