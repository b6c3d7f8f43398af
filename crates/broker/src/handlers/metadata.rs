//! Metadata: the live (unfenced) brokers, the controller, and topics with each partition's
//! leader, leader epoch, replicas, ISR and offline replicas, as the metadata quorum has them;
//! auto-creates requested topics when `auto.create.topics.enable` allows.

use std::sync::Arc;

use sluice_protocol::error::ResponseError;
use sluice_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use sluice_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use sluice_protocol::StrBytes;
use tracing::warn;
use uuid::Uuid;

use sluice_meta::{MetadataState, NodeId};

use crate::broker::Broker;
use crate::errors;
use crate::internal_topics::is_internal;
use crate::metadata::TopicMeta;

fn topic_entry(state: &MetadataState, topic: &TopicMeta) -> MetadataResponseTopic {
    let ids = |v: &[NodeId]| v.iter().map(|n| BrokerId(n.0 as i32)).collect::<Vec<_>>();
    let fenced = |n: &&NodeId| state.brokers.get(n).is_none_or(|b| b.fenced);
    let partitions = (0..topic.partitions)
        .map(|index| {
            let entry = MetadataResponsePartition::default().with_partition_index(index);
            let Some(p) = state.partition(&topic.name, index) else {
                return entry
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(-1));
            };
            let offline: Vec<NodeId> = p.replicas.iter().filter(fenced).copied().collect();
            let entry = entry
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_offline_replicas(ids(&offline));
            match p.leader {
                Some(leader) => entry.with_leader_id(BrokerId(leader.0 as i32)),
                None => entry
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(-1)),
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(is_internal(&topic.name))
        .with_partitions(partitions)
}

/// A broker as clients are told about it.
pub(crate) struct LiveBroker {
    pub(crate) id: i32,
    pub(crate) host: String,
    pub(crate) port: i32,
    pub(crate) rack: Option<String>,
}

/// The unfenced registered brokers; before this broker has registered (a quorum is still
/// forming), just this broker, so clients retry here.
pub(crate) fn live_brokers(broker: &Broker) -> Vec<LiveBroker> {
    let state = broker.metadata.state();
    let mut brokers: Vec<LiveBroker> = state
        .live_brokers()
        .filter_map(|b| {
            let listener = b.listeners.first()?;
            Some(LiveBroker {
                id: b.id.0 as i32,
                host: listener.host.clone(),
                port: i32::from(listener.port),
                rack: b.rack.clone(),
            })
        })
        .collect();
    if brokers.is_empty() {
        let config = &broker.config;
        brokers.push(LiveBroker {
            id: config.node_id,
            host: config.advertised_host.clone(),
            port: i32::from(config.advertised_port),
            rack: config.rack.clone(),
        });
    }
    brokers
}

/// The controller clients are told about. Clients send admin requests to it; any broker takes
/// them (they are proposed to the quorum from wherever they arrive), so this is the quorum
/// leader when it is a live broker and this broker otherwise, never -1 (clients would wait for
/// a controller).
pub(crate) fn controller_id(broker: &Broker) -> i32 {
    let state = broker.metadata.state();
    broker
        .metadata
        .node()
        .leader()
        .filter(|id| state.brokers.get(id).is_some_and(|b| !b.fenced))
        .map_or(broker.config.node_id, |n| n.0 as i32)
}

fn error_entry(name: Option<&str>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n.to_string()))))
        .with_topic_id(id)
}

pub(crate) async fn handle(
    broker: Arc<Broker>,
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
    let mut topics = Vec::new();
    if all {
        let state = broker.metadata.state();
        topics.extend(
            broker
                .metadata
                .topics()
                .iter()
                .map(|t| topic_entry(&state, t)),
        );
    } else {
        for wanted in request.topics.unwrap_or_default() {
            let entry = match wanted.name {
                Some(name) => {
                    let name = name.0.as_str();
                    match broker.topic_or_create(name, allow_auto_create).await {
                        Ok(Some(topic)) => topic_entry(&broker.metadata.state(), &topic),
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
                    Some(topic) => topic_entry(&broker.metadata.state(), &topic),
                    None => error_entry(None, wanted.topic_id, ResponseError::UnknownTopicId),
                },
            };
            topics.push(entry);
        }
    }
    let brokers = live_brokers(&broker)
        .into_iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(StrBytes::from_string))
        })
        .collect();
    let controller = controller_id(&broker);
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(broker.metadata.cluster_id())))
        .with_controller_id(BrokerId(controller))
        .with_topics(topics)
}
