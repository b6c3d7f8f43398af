//! Metadata: brokers, the controller, and topics with their partitions and leaders; auto-creates
//! requested topics when `auto.create.topics.enable` allows.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use tracing::warn;
use uuid::Uuid;

use crate::broker::Broker;
use crate::errors;
use crate::metadata::TopicMeta;

/// Internal topics are flagged as such in Metadata answers.
fn is_internal(name: &str) -> bool {
    name == "__consumer_offsets" || name == "__transaction_state"
}

fn topic_entry(broker: &Broker, topic: &TopicMeta) -> MetadataResponseTopic {
    let node = BrokerId(broker.config.node_id);
    let partitions = (0..topic.partitions)
        .map(|index| {
            let epoch = broker
                .replicas
                .partition(&topic.name, index)
                .map_or(0, |p| p.leader_epoch().0);
            MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(node)
                .with_leader_epoch(epoch)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(is_internal(&topic.name))
        .with_partitions(partitions)
}

fn error_entry(name: Option<&str>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n.to_string()))))
        .with_topic_id(id)
}

pub(crate) fn handle(
    broker: &Arc<Broker>,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    // v0 asks for all topics with an empty list; later versions with null.
    let all = match &request.topics {
        None => true,
        Some(list) => version == 0 && list.is_empty(),
    };
    // Before v4 requests could not opt out of auto-creation.
    let allow_auto_create = version < 4 || request.allow_auto_topic_creation;
    let topics = if all {
        broker
            .metadata
            .topics()
            .iter()
            .map(|t| topic_entry(broker, t))
            .collect()
    } else {
        request
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|wanted| match wanted.name {
                Some(name) => {
                    let name = name.0.as_str();
                    match broker.topic_or_create(name, allow_auto_create) {
                        Ok(Some(topic)) => topic_entry(broker, &topic),
                        Ok(None) => error_entry(
                            Some(name),
                            Uuid::nil(),
                            ResponseError::UnknownTopicOrPartition,
                        ),
                        Err(e) => {
                            let code = errors::create_topic_error(&e);
                            if code == ResponseError::KafkaStorageError {
                                warn!(topic = name, error = %e, "auto-creating topic failed");
                            }
                            let code = if code == ResponseError::InvalidTopicException {
                                code
                            } else {
                                ResponseError::UnknownTopicOrPartition
                            };
                            error_entry(Some(name), Uuid::nil(), code)
                        }
                    }
                }
                None => match broker.metadata.topic_by_id(wanted.topic_id) {
                    Some(topic) => topic_entry(broker, &topic),
                    None => error_entry(None, wanted.topic_id, ResponseError::UnknownTopicId),
                },
            })
            .collect()
    };
    let config = &broker.config;
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(config.node_id))
            .with_host(StrBytes::from_string(config.advertised_host.clone()))
            .with_port(i32::from(config.advertised_port))])
        .with_cluster_id(Some(StrBytes::from_string(broker.metadata.cluster_id())))
        .with_controller_id(BrokerId(config.node_id))
        .with_topics(topics)
}
