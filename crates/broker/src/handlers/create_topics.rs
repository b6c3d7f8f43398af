//! CreateTopics: partitions, replication factor (one node: 1), configs and validate_only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sluice_protocol::error::ResponseError;
use sluice_protocol::messages::create_topics_request::CreatableTopic;
use sluice_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use sluice_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use sluice_protocol::StrBytes;

use crate::broker::Broker;
use crate::errors;
use crate::topic_config;

/// Kafka's `ConfigSource.DYNAMIC_TOPIC_CONFIG` as reported in CreateTopics v5+.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;

fn failed(
    result: CreatableTopicResult,
    error: ResponseError,
    message: String,
) -> CreatableTopicResult {
    result
        .with_error_code(error.code())
        .with_error_message(Some(StrBytes::from_string(message)))
}

async fn create_one(
    broker: &Broker,
    topic: CreatableTopic,
    validate_only: bool,
    version: i16,
) -> CreatableTopicResult {
    let name = topic.name.0.to_string();
    let result = CreatableTopicResult::default().with_name(topic.name.clone());
    if let Err((code, message)) = crate::internal_topics::check_create(&name) {
        return failed(result, code, message);
    }
    let assignments: Option<Vec<Vec<sluice_meta::NodeId>>> = if !topic.assignments.is_empty() {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return failed(
                result,
                ResponseError::InvalidRequest,
                "give either replica assignments or num_partitions/replication_factor, not both"
                    .into(),
            );
        }
        let mut sorted: Vec<_> = topic.assignments.iter().collect();
        sorted.sort_by_key(|a| a.partition_index);
        if sorted
            .iter()
            .enumerate()
            .any(|(i, a)| a.partition_index != i as i32)
        {
            return failed(
                result,
                ResponseError::InvalidReplicaAssignment,
                "assignments must cover partitions 0..n exactly once".into(),
            );
        }
        Some(
            sorted
                .iter()
                .map(|a| {
                    a.broker_ids
                        .iter()
                        .map(|b| crate::metadata::node_id(b.0))
                        .collect()
                })
                .collect(),
        )
    } else {
        None
    };
    let partitions = match &assignments {
        Some(a) => a.len() as i32,
        None if topic.num_partitions == -1 => broker.config.num_partitions,
        None => topic.num_partitions,
    };
    let replication_factor = match &assignments {
        Some(a) => a.first().map_or(1, |r| r.len() as i16),
        None if topic.replication_factor == -1 => broker.config.default_replication_factor,
        None => topic.replication_factor,
    };
    let mut configs = BTreeMap::new();
    for entry in &topic.configs {
        let Some(value) = &entry.value else {
            return failed(
                result,
                ResponseError::InvalidConfig,
                format!("topic config `{}` has a null value", entry.name.as_str()),
            );
        };
        configs.insert(entry.name.to_string(), value.to_string());
    }
    if let Err(e) = topic_config::log_config(&broker.config.log_defaults, &configs) {
        return failed(result, ResponseError::InvalidConfig, e.to_string());
    }
    let rf = i32::from(replication_factor);
    let outcome = match (validate_only, assignments) {
        (true, None) => broker
            .metadata
            .check_new_topic(&name, partitions, rf)
            .map(|()| None)
            .map_err(|e| (errors::metadata_error(&e), e.to_string())),
        (true, Some(assignments)) => broker
            .metadata
            .check_assignments(&name, &assignments)
            .map(|()| None)
            .map_err(|e| (errors::metadata_error(&e), e.to_string())),
        (false, None) => broker
            .create_topic(&name, partitions, rf, configs.clone())
            .await
            .map(|topic| Some(topic.id))
            .map_err(|e| (errors::create_topic_error(&e), e.to_string())),
        (false, Some(assignments)) => broker
            .create_topic_assigned(&name, assignments, configs.clone())
            .await
            .map(|topic| Some(topic.id))
            .map_err(|e| (errors::create_topic_error(&e), e.to_string())),
    };
    match outcome {
        Ok(id) => {
            let mut result = result
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor);
            if let Some(id) = id {
                result = result.with_topic_id(id);
            }
            if version >= 5 {
                result = result.with_configs(Some(
                    configs
                        .into_iter()
                        .map(|(name, value)| {
                            CreatableTopicConfigs::default()
                                .with_name(StrBytes::from_string(name))
                                .with_value(Some(StrBytes::from_string(value)))
                                .with_config_source(SOURCE_DYNAMIC_TOPIC)
                        })
                        .collect(),
                ));
            }
            result
        }
        Err((code, message)) => failed(result, code, message),
    }
}

pub(crate) async fn handle(
    broker: Arc<Broker>,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    // Kafka answers INVALID_REQUEST for every topic named more than once in one request.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for topic in &request.topics {
        *seen.entry(topic.name.0.to_string()).or_default() += 1;
    }
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        if seen[topic.name.0.as_str()] > 1 {
            let result = CreatableTopicResult::default().with_name(topic.name.clone());
            topics.push(failed(
                result,
                ResponseError::InvalidRequest,
                "topic named more than once in the request".into(),
            ));
            continue;
        }
        topics.push(create_one(&broker, topic, request.validate_only, version).await);
    }
    CreateTopicsResponse::default().with_topics(topics)
}
