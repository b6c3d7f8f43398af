//! Topic-level configs: which Kafka names are accepted, how they are validated, and how they turn
//! into a partition's [`LogConfig`].

use std::collections::BTreeMap;

use sluice_log::{CompressionType, LogConfig};

use crate::config::parse_timestamp_type;

/// The type Kafka reports for a config (DescribeConfigs v3+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// One topic config Sluice accepts: its name, the broker config that supplies its default (Kafka's
/// synonym), Kafka's default, and its type.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub broker_synonym: &'static str,
    pub default: &'static str,
    pub config_type: ConfigType,
}

const fn def(
    name: &'static str,
    broker_synonym: &'static str,
    default: &'static str,
    config_type: ConfigType,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        broker_synonym,
        default,
        config_type,
    }
}

const LONG_MAX: &str = "9223372036854775807";

/// Topic configs Sluice accepts, in name order. Those the log honors today change [`LogConfig`];
/// the others are stored and reported (they take effect as the features that use them land).
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def(
        "cleanup.policy",
        "log.cleanup.policy",
        "delete",
        ConfigType::List,
    ),
    def(
        "compression.type",
        "compression.type",
        "producer",
        ConfigType::String,
    ),
    def(
        "delete.retention.ms",
        "log.cleaner.delete.retention.ms",
        "86400000",
        ConfigType::Long,
    ),
    def(
        "file.delete.delay.ms",
        "log.segment.delete.delay.ms",
        "60000",
        ConfigType::Long,
    ),
    def(
        "flush.messages",
        "log.flush.interval.messages",
        LONG_MAX,
        ConfigType::Long,
    ),
    def(
        "flush.ms",
        "log.flush.interval.ms",
        LONG_MAX,
        ConfigType::Long,
    ),
    def(
        "index.interval.bytes",
        "log.index.interval.bytes",
        "4096",
        ConfigType::Int,
    ),
    def(
        "max.compaction.lag.ms",
        "log.cleaner.max.compaction.lag.ms",
        LONG_MAX,
        ConfigType::Long,
    ),
    def(
        "max.message.bytes",
        "message.max.bytes",
        "1048588",
        ConfigType::Int,
    ),
    // Kafka 4's default (KIP-1030): one hour into the future.
    def(
        "message.timestamp.after.max.ms",
        "log.message.timestamp.after.max.ms",
        "3600000",
        ConfigType::Long,
    ),
    def(
        "message.timestamp.before.max.ms",
        "log.message.timestamp.before.max.ms",
        LONG_MAX,
        ConfigType::Long,
    ),
    def(
        "message.timestamp.difference.max.ms",
        "log.message.timestamp.difference.max.ms",
        LONG_MAX,
        ConfigType::Long,
    ),
    def(
        "message.timestamp.type",
        "log.message.timestamp.type",
        "CreateTime",
        ConfigType::String,
    ),
    def(
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
        "0.5",
        ConfigType::Double,
    ),
    def(
        "min.compaction.lag.ms",
        "log.cleaner.min.compaction.lag.ms",
        "0",
        ConfigType::Long,
    ),
    def(
        "min.insync.replicas",
        "min.insync.replicas",
        "1",
        ConfigType::Int,
    ),
    def(
        "preallocate",
        "log.preallocate",
        "false",
        ConfigType::Boolean,
    ),
    def(
        "retention.bytes",
        "log.retention.bytes",
        "-1",
        ConfigType::Long,
    ),
    def(
        "retention.ms",
        "log.retention.ms",
        "604800000",
        ConfigType::Long,
    ),
    def(
        "segment.bytes",
        "log.segment.bytes",
        "1073741824",
        ConfigType::Int,
    ),
    def(
        "segment.index.bytes",
        "log.index.size.max.bytes",
        "10485760",
        ConfigType::Int,
    ),
    def(
        "segment.jitter.ms",
        "log.roll.jitter.ms",
        "0",
        ConfigType::Long,
    ),
    def("segment.ms", "log.roll.ms", "604800000", ConfigType::Long),
    def(
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
        "false",
        ConfigType::Boolean,
    ),
];

/// The definition of a topic config name.
pub fn topic_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// The value a broker-level setting gives a topic config when the topic does not override it:
/// the broker's effective log defaults for what the log honors, Kafka's default otherwise.
pub fn broker_default(defaults: &LogConfig, name: &str) -> Option<String> {
    let def = topic_config_def(name)?;
    Some(match name {
        "segment.bytes" => defaults.segment_bytes.to_string(),
        "segment.ms" => defaults.segment_ms.to_string(),
        "segment.index.bytes" => defaults.segment_index_bytes.to_string(),
        "index.interval.bytes" => defaults.index_interval_bytes.to_string(),
        "retention.ms" => defaults.retention_ms.to_string(),
        "retention.bytes" => defaults.retention_bytes.to_string(),
        "max.message.bytes" => defaults.max_message_bytes.to_string(),
        "message.timestamp.before.max.ms" => defaults.message_timestamp_before_max_ms.to_string(),
        "message.timestamp.after.max.ms" => defaults.message_timestamp_after_max_ms.to_string(),
        "message.timestamp.type" => match defaults.message_timestamp_type {
            sluice_log::TimestampType::CreateTime => "CreateTime".to_owned(),
            sluice_log::TimestampType::LogAppendTime => "LogAppendTime".to_owned(),
        },
        _ => def.default.to_owned(),
    })
}

/// A topic config the broker refuses (answered with INVALID_CONFIG and this message).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TopicConfigError(pub String);

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, TopicConfigError> {
    value.trim().parse().map_err(|_| {
        TopicConfigError(format!(
            "invalid value `{value}` for topic config `{key}`: expected a number"
        ))
    })
}

fn at_least<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    value: T,
    min: T,
) -> Result<T, TopicConfigError> {
    if value < min {
        return Err(TopicConfigError(format!(
            "invalid value {value} for topic config `{key}`: must be at least {min}"
        )));
    }
    Ok(value)
}

/// Checks every entry and returns the log settings that result from `defaults` plus `overrides`.
pub fn log_config(
    defaults: &LogConfig,
    overrides: &BTreeMap<String, String>,
) -> Result<LogConfig, TopicConfigError> {
    let mut config = defaults.clone();
    for (key, value) in overrides {
        let key = key.as_str();
        if topic_config_def(key).is_none() {
            let names: Vec<&str> = TOPIC_CONFIGS.iter().map(|d| d.name).collect();
            return Err(TopicConfigError(format!(
                "unknown topic config `{key}`; Sluice accepts: {}",
                names.join(", ")
            )));
        }
        match key {
            "segment.bytes" => config.segment_bytes = at_least(key, number(key, value)?, 14)?,
            "segment.ms" => config.segment_ms = at_least(key, number(key, value)?, 1)?,
            "segment.index.bytes" => {
                config.segment_index_bytes = at_least(key, number(key, value)?, 8)?
            }
            "index.interval.bytes" => config.index_interval_bytes = number(key, value)?,
            "retention.ms" => config.retention_ms = at_least(key, number(key, value)?, -1)?,
            "retention.bytes" => config.retention_bytes = number(key, value)?,
            "max.message.bytes" => config.max_message_bytes = number(key, value)?,
            "message.timestamp.type" => {
                config.message_timestamp_type =
                    parse_timestamp_type(key, value).map_err(|e| TopicConfigError(e.to_string()))?
            }
            "message.timestamp.before.max.ms" => {
                config.message_timestamp_before_max_ms = at_least(key, number(key, value)?, 0)?
            }
            "message.timestamp.after.max.ms" => {
                config.message_timestamp_after_max_ms = at_least(key, number(key, value)?, 0)?
            }
            "cleanup.policy" => {
                config.delete = false;
                config.compact = false;
                for policy in value.split(',') {
                    match policy.trim() {
                        "delete" => config.delete = true,
                        "compact" => config.compact = true,
                        _ => {
                            return Err(TopicConfigError(format!(
                                "invalid value `{value}` for topic config `cleanup.policy`: expected delete, compact or compact,delete"
                            )))
                        }
                    }
                }
            }
            "delete.retention.ms" => {
                config.delete_retention_ms = at_least(key, number(key, value)?, 0)?
            }
            "min.compaction.lag.ms" => {
                config.min_compaction_lag_ms = at_least(key, number(key, value)?, 0)?
            }
            "max.compaction.lag.ms" => {
                config.max_compaction_lag_ms = at_least(key, number(key, value)?, 1)?
            }
            "flush.messages" => config.flush_messages = at_least(key, number(key, value)?, 1)?,
            "flush.ms" => config.flush_ms = at_least(key, number(key, value)?, 0)?,
            "compression.type" => {
                config.compression = match value.trim() {
                    "producer" => CompressionType::Producer,
                    "uncompressed" | "none" => CompressionType::Uncompressed,
                    "gzip" => CompressionType::Gzip,
                    "snappy" => CompressionType::Snappy,
                    "lz4" => CompressionType::Lz4,
                    "zstd" => CompressionType::Zstd,
                    _ => {
                        return Err(TopicConfigError(format!(
                            "invalid value `{value}` for topic config `compression.type`: expected producer, uncompressed, gzip, snappy, lz4 or zstd"
                        )))
                    }
                };
            }
            "min.insync.replicas" => {
                config.min_insync_replicas = at_least(key, number::<i32>(key, value)?, 1)?;
            }
            "min.cleanable.dirty.ratio" => {
                let ratio: f64 = number(key, value)?;
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(TopicConfigError(format!(
                        "invalid value `{value}` for topic config `{key}`: must be between 0 and 1"
                    )));
                }
                config.min_cleanable_dirty_ratio = ratio;
            }
            "preallocate" | "unclean.leader.election.enable" => {
                number::<bool>(key, value)?;
            }
            _ => {
                number::<i64>(key, value)?;
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_apply() {
        let config = log_config(
            &LogConfig::default(),
            &map(&[("retention.ms", "1000"), ("segment.bytes", "1048576")]),
        )
        .unwrap();
        assert_eq!(config.retention_ms, 1000);
        assert_eq!(config.segment_bytes, 1_048_576);
    }

    #[test]
    fn bad_entries_are_refused_with_a_reason() {
        let defaults = LogConfig::default();
        let err = log_config(&defaults, &map(&[("retention.msx", "1")])).unwrap_err();
        assert!(err.0.contains("unknown topic config"));
        let err = log_config(&defaults, &map(&[("retention.ms", "soon")])).unwrap_err();
        assert!(err.0.contains("expected a number"));
        assert!(log_config(&defaults, &map(&[("cleanup.policy", "shred")])).is_err());
        assert!(log_config(&defaults, &map(&[("min.insync.replicas", "0")])).is_err());
    }
}
