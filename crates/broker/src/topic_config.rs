//! Topic-level configs: which Kafka names are accepted, how they are validated, and how they turn
//! into a partition's [`LogConfig`].

use std::collections::BTreeMap;

use sluice_log::LogConfig;

use crate::config::parse_timestamp_type;

/// Topic config names Sluice accepts. Those the log honors today change [`LogConfig`]; the others are
/// stored and reported (they take effect as the features that use them land).
const KNOWN: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "index.interval.bytes",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.difference.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "preallocate",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.index.bytes",
    "segment.jitter.ms",
    "segment.ms",
    "unclean.leader.election.enable",
];

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
        if !KNOWN.contains(&key) {
            return Err(TopicConfigError(format!(
                "unknown topic config `{key}`; Sluice accepts: {}",
                KNOWN.join(", ")
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
            "cleanup.policy" => {
                for policy in value.split(',') {
                    if !matches!(policy.trim(), "delete" | "compact") {
                        return Err(TopicConfigError(format!(
                            "invalid value `{value}` for topic config `cleanup.policy`: expected delete, compact or compact,delete"
                        )));
                    }
                }
            }
            "compression.type" => {
                if !matches!(
                    value.trim(),
                    "producer" | "uncompressed" | "none" | "gzip" | "snappy" | "lz4" | "zstd"
                ) {
                    return Err(TopicConfigError(format!(
                        "invalid value `{value}` for topic config `compression.type`: expected producer, uncompressed, gzip, snappy, lz4 or zstd"
                    )));
                }
            }
            "min.insync.replicas" => {
                at_least(key, number::<i32>(key, value)?, 1)?;
            }
            "min.cleanable.dirty.ratio" => {
                let ratio: f64 = number(key, value)?;
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(TopicConfigError(format!(
                        "invalid value `{value}` for topic config `{key}`: must be between 0 and 1"
                    )));
                }
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
