//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (dynamic, persisted,
//! applied to the partitions at once) and the broker (static: described, never altered).

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_protocol::error::ResponseError;
use sluice_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use sluice_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use sluice_protocol::StrBytes;

use crate::broker::{AlterConfigsError, Broker};
use crate::errors;
use crate::topic_config::{broker_default, topic_config_def, ConfigType, TOPIC_CONFIGS};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
pub(crate) const SOURCE_DYNAMIC_TOPIC: i8 = 1;
pub(crate) const SOURCE_STATIC_BROKER: i8 = 4;
pub(crate) const SOURCE_DEFAULT: i8 = 5;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn sb(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// One described config (also read by `crate::inspect` for the console).
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) source: i8,
    synonyms: Vec<(String, String, i8)>,
    config_type: ConfigType,
    pub(crate) read_only: bool,
}

pub(crate) fn topic_entries(broker: &Broker, overrides: &BTreeMap<String, String>) -> Vec<Entry> {
    let config = &broker.config;
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let broker_value = broker_default(&config.log_defaults, def.name)
                .unwrap_or_else(|| def.default.to_owned());
            let broker_set = config.is_explicit(def.broker_synonym);
            let mut synonyms = Vec::new();
            if let Some(v) = overrides.get(def.name) {
                synonyms.push((def.name.to_owned(), v.clone(), SOURCE_DYNAMIC_TOPIC));
            }
            if broker_set {
                synonyms.push((
                    def.broker_synonym.to_owned(),
                    broker_value.clone(),
                    SOURCE_STATIC_BROKER,
                ));
            }
            synonyms.push((
                def.broker_synonym.to_owned(),
                def.default.to_owned(),
                SOURCE_DEFAULT,
            ));
            let (value, source) = match overrides.get(def.name) {
                Some(v) => (v.clone(), SOURCE_DYNAMIC_TOPIC),
                None if broker_set => (broker_value, SOURCE_STATIC_BROKER),
                None => (broker_value, SOURCE_DEFAULT),
            };
            Entry {
                name: def.name.to_owned(),
                value,
                source,
                synonyms,
                config_type: def.config_type,
                read_only: false,
            }
        })
        .collect()
}

fn broker_entries(broker: &Broker) -> Vec<Entry> {
    broker
        .config
        .entries()
        .into_iter()
        .map(|(name, value)| {
            let source = if broker.config.is_explicit(name) {
                SOURCE_STATIC_BROKER
            } else {
                SOURCE_DEFAULT
            };
            Entry {
                name: name.to_owned(),
                synonyms: vec![(name.to_owned(), value.clone(), source)],
                value,
                source,
                config_type: ConfigType::String,
                read_only: true,
            }
        })
        .collect()
}

pub(crate) fn describe_configs(
    broker: &Arc<Broker>,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let entries = match resource.resource_type {
                RESOURCE_TOPIC => match broker.metadata.topic(&resource.resource_name) {
                    Some(topic) => topic_entries(broker, &topic.configs),
                    None => {
                        return result
                            .with_error_code(errors::code(ResponseError::UnknownTopicOrPartition))
                            .with_error_message(Some(sb(format!(
                                "topic `{}` does not exist",
                                resource.resource_name.as_str()
                            ))))
                    }
                },
                RESOURCE_BROKER
                    if resource.resource_name.is_empty()
                        || resource.resource_name.as_str() == broker.config.node_id.to_string() =>
                {
                    broker_entries(broker)
                }
                _ => {
                    return result
                        .with_error_code(errors::code(ResponseError::InvalidRequest))
                        .with_error_message(Some(sb(
                            "only topic (2) and this broker's (4) configs can be described",
                        )))
                }
            };
            let wanted: Option<Vec<String>> = resource
                .configuration_keys
                .map(|keys| keys.iter().map(|k| k.to_string()).collect());
            let configs = entries
                .into_iter()
                .filter(|e| wanted.as_ref().is_none_or(|w| w.contains(&e.name)))
                .map(|e| {
                    let mut out = DescribeConfigsResourceResult::default()
                        .with_name(sb(e.name))
                        .with_value(Some(sb(e.value)))
                        .with_read_only(e.read_only)
                        .with_config_source(e.source);
                    if request.include_synonyms {
                        out = out.with_synonyms(
                            e.synonyms
                                .into_iter()
                                .map(|(name, value, source)| {
                                    DescribeConfigsSynonym::default()
                                        .with_name(sb(name))
                                        .with_value(Some(sb(value)))
                                        .with_source(source)
                                })
                                .collect(),
                        );
                    }
                    if version >= 3 {
                        out = out.with_config_type(e.config_type as i8);
                    }
                    out
                })
                .collect();
            result.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// The outcome of one resource of an alter request: error code and message.
fn outcome(result: Result<(), AlterConfigsError>) -> (i16, Option<StrBytes>) {
    match result {
        Ok(()) => (0, None),
        Err(e) => (errors::code(e.code()), Some(sb(e.to_string()))),
    }
}

/// Runs `alter_topic` for a topic resource; broker resources are static, others unsupported.
async fn alter_outcome(
    resource_type: i8,
    alter_topic: impl std::future::Future<Output = Result<(), AlterConfigsError>>,
) -> (i16, Option<StrBytes>) {
    outcome(match resource_type {
        RESOURCE_TOPIC => alter_topic.await,
        RESOURCE_BROKER => Err(broker_is_static()),
        _ => Err(AlterConfigsError::Invalid(
            "unsupported resource type".into(),
        )),
    })
}

fn broker_is_static() -> AlterConfigsError {
    AlterConfigsError::Invalid(
        "broker configs are static in Sluice: set them in the --config file or SLUICE_* variables and restart"
            .into(),
    )
}

pub(crate) async fn alter_configs(
    broker: Arc<Broker>,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        responses.push({
            let (code, message) = alter_outcome(resource.resource_type, async {
                // AlterConfigs replaces the whole set of overrides.
                let mut configs = BTreeMap::new();
                let mut bad = None;
                for c in resource.configs {
                    match c.value {
                        Some(v) => {
                            configs.insert(c.name.to_string(), v.to_string());
                        }
                        None => {
                            bad = Some(AlterConfigsError::Invalid(format!(
                                "config `{}` has a null value; omit it to reset it to the default",
                                c.name.as_str()
                            )))
                        }
                    }
                }
                match bad {
                    Some(e) => Err(e),
                    None => {
                        broker
                            .alter_topic_configs(
                                &resource.resource_name,
                                |_| Ok(configs),
                                request.validate_only,
                            )
                            .await
                    }
                }
            })
            .await;
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name)
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// Applies one IncrementalAlterConfigs operation to a topic's overrides.
fn apply_op(
    configs: &mut BTreeMap<String, String>,
    defaults: &sluice_log::LogConfig,
    name: &str,
    op: i8,
    value: Option<&str>,
) -> Result<(), AlterConfigsError> {
    let Some(def) = topic_config_def(name) else {
        return Err(AlterConfigsError::Invalid(format!(
            "unknown topic config `{name}`"
        )));
    };
    let current = || {
        configs
            .get(name)
            .cloned()
            .or_else(|| broker_default(defaults, name))
            .unwrap_or_default()
    };
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    };
    match op {
        OP_SET => {
            let value = value.ok_or_else(|| {
                AlterConfigsError::Invalid(format!("SET of `{name}` needs a value"))
            })?;
            configs.insert(name.to_owned(), value.to_owned());
        }
        OP_DELETE => {
            configs.remove(name);
        }
        OP_APPEND | OP_SUBTRACT => {
            if def.config_type != ConfigType::List {
                return Err(AlterConfigsError::Invalid(format!(
                    "APPEND and SUBTRACT apply to list configs; `{name}` is not one"
                )));
            }
            let mut items = list(&current());
            for item in list(value.unwrap_or_default()) {
                if op == OP_APPEND {
                    if !items.contains(&item) {
                        items.push(item);
                    }
                } else {
                    items.retain(|i| *i != item);
                }
            }
            configs.insert(name.to_owned(), items.join(","));
        }
        other => {
            return Err(AlterConfigsError::Invalid(format!(
                "unknown config operation {other}"
            )))
        }
    }
    Ok(())
}

pub(crate) async fn incremental_alter_configs(
    broker: Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        responses.push({
            let (code, message) = alter_outcome(resource.resource_type, async {
                let ops: Vec<(String, i8, Option<String>)> = resource
                    .configs
                    .into_iter()
                    .map(|c| {
                        (
                            c.name.to_string(),
                            c.config_operation,
                            c.value.map(|v| v.to_string()),
                        )
                    })
                    .collect();
                let defaults = broker.config.log_defaults.clone();
                broker
                    .alter_topic_configs(
                        &resource.resource_name,
                        move |current| {
                            let mut configs = current.clone();
                            for (name, op, value) in &ops {
                                apply_op(&mut configs, &defaults, name, *op, value.as_deref())?;
                            }
                            Ok(configs)
                        },
                        request.validate_only,
                    )
                    .await
            })
            .await;
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name)
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_operations_edit_cleanup_policy() {
        let defaults = sluice_log::LogConfig::default();
        let mut configs = BTreeMap::new();
        apply_op(
            &mut configs,
            &defaults,
            "cleanup.policy",
            OP_APPEND,
            Some("compact"),
        )
        .unwrap();
        assert_eq!(configs["cleanup.policy"], "delete,compact");
        apply_op(
            &mut configs,
            &defaults,
            "cleanup.policy",
            OP_SUBTRACT,
            Some("delete"),
        )
        .unwrap();
        assert_eq!(configs["cleanup.policy"], "compact");
        apply_op(
            &mut configs,
            &defaults,
            "retention.ms",
            OP_SET,
            Some("1000"),
        )
        .unwrap();
        apply_op(&mut configs, &defaults, "retention.ms", OP_DELETE, None).unwrap();
        assert!(!configs.contains_key("retention.ms"));
        assert!(apply_op(
            &mut configs,
            &defaults,
            "retention.ms",
            OP_APPEND,
            Some("1")
        )
        .is_err());
        assert!(apply_op(&mut configs, &defaults, "nope", OP_SET, Some("1")).is_err());
    }
}
