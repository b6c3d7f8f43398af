//! The broker's internal topics — `__consumer_offsets` (committed offsets and group metadata)
//! and `__transaction_state` (transactional ids and their transactions) — and what clients may
//! not do to them. Only the broker creates them (on first use, with their partition counts and
//! configs) and writes them; their data is the only copy of that state.
//!
//! Refused, each with a message saying why:
//! - DeleteTopics and DeleteRecords: the state would be gone (INVALID_TOPIC_EXCEPTION, Kafka's
//!   code for what clients may not do to an internal topic, e.g. its "Cannot delete records of
//!   internal topic").
//! - CreatePartitions: a group's or transactional id's partition is its key's hash modulo the
//!   partition count, so a new count sends every key to a partition without its state
//!   (INVALID_TOPIC_EXCEPTION).
//! - CreateTopics of one of these names: the broker creates them itself (INVALID_REQUEST, as
//!   Kafka refuses creating `__cluster_metadata`).
//! - Configs that discard data (INVALID_CONFIG, on AlterConfigs and IncrementalAlterConfigs
//!   alike, judged on the resulting configs, so a DELETE that falls back to a broker default
//!   counts too): `cleanup.policy` other than `compact` (retention would delete the latest
//!   commit of an idle group), a finite `retention.ms` or `retention.bytes`, and
//!   `unclean.leader.election.enable=true` (a failover could truncate acknowledged state).
//!
//! Kafka itself lets an authorized client delete `__consumer_offsets`, add partitions to it or
//! set `cleanup.policy=delete` on it; Sluice refuses these for everyone, as no client has a
//! reason to do them that outweighs losing every group's offsets.

use std::collections::BTreeMap;

use sluice_log::LogConfig;
use sluice_protocol::error::ResponseError;

use crate::group::offsets_topic::OFFSETS_TOPIC;
use crate::txn::TXN_STATE_TOPIC;

/// Every internal topic.
pub const INTERNAL_TOPICS: &[&str] = &[OFFSETS_TOPIC, TXN_STATE_TOPIC];

/// Whether `topic` is one of the broker's internal topics.
pub fn is_internal(topic: &str) -> bool {
    INTERNAL_TOPICS.contains(&topic)
}

/// What `topic` holds, for messages.
fn holds(topic: &str) -> &'static str {
    if topic == OFFSETS_TOPIC {
        "every consumer group's committed offsets"
    } else {
        "every transactional producer's state"
    }
}

/// A refused operation: Kafka's error code and the message for the client.
pub(crate) type Refusal = (ResponseError, String);

/// DeleteTopics of `topic`.
pub(crate) fn check_delete(topic: &str) -> Result<(), Refusal> {
    if !is_internal(topic) {
        return Ok(());
    }
    Err((
        ResponseError::InvalidTopicException,
        format!(
            "cannot delete internal topic {topic}: it holds {}, which would be lost",
            holds(topic)
        ),
    ))
}

/// DeleteRecords on `topic`.
pub(crate) fn check_delete_records(topic: &str) -> Result<(), ResponseError> {
    if is_internal(topic) {
        return Err(ResponseError::InvalidTopicException);
    }
    Ok(())
}

/// CreatePartitions of `topic`.
pub(crate) fn check_partition_change(topic: &str) -> Result<(), Refusal> {
    if !is_internal(topic) {
        return Ok(());
    }
    Err((
        ResponseError::InvalidTopicException,
        format!(
            "cannot change the partition count of internal topic {topic}: each key's partition \
             is its hash modulo the count, so a new count would move keys away from {}",
            holds(topic)
        ),
    ))
}

/// CreateTopics of `topic` by a client.
pub(crate) fn check_create(topic: &str) -> Result<(), Refusal> {
    if !is_internal(topic) {
        return Ok(());
    }
    Err((
        ResponseError::InvalidRequest,
        format!(
            "creation of internal topic {topic} is prohibited: the broker creates it on first use \
             with the partition count and configs it needs"
        ),
    ))
}

/// New configs of `topic`: `overrides` as they would be stored, `effective` what they amount
/// to with the broker's defaults. The message names the config and why.
pub(crate) fn check_configs(
    topic: &str,
    overrides: &BTreeMap<String, String>,
    effective: &LogConfig,
) -> Result<(), String> {
    if !is_internal(topic) {
        return Ok(());
    }
    let lost = holds(topic);
    if effective.delete || !effective.compact {
        let policy = overrides
            .get("cleanup.policy")
            .map_or("the broker default (log.cleanup.policy)", String::as_str);
        return Err(format!(
            "internal topic {topic} must keep cleanup.policy=compact (it would become {policy}): \
             retention would delete {lost}"
        ));
    }
    for name in ["retention.ms", "retention.bytes"] {
        if let Some(value) = overrides.get(name).filter(|v| v.trim() != "-1") {
            return Err(format!(
                "internal topic {topic} keeps {name}=-1 (asked: {value}): a limit would delete \
                 {lost}"
            ));
        }
    }
    if overrides
        .get("unclean.leader.election.enable")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Err(format!(
            "internal topic {topic} cannot enable unclean.leader.election.enable: a replica \
             outside the ISR could lead and lose acknowledged parts of {lost}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effective(overrides: &BTreeMap<String, String>) -> LogConfig {
        crate::topic_config::log_config(&LogConfig::default(), overrides).unwrap()
    }

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn internal_topics_keep_their_data() {
        let offsets = configs(&[("cleanup.policy", "compact"), ("retention.ms", "-1")]);
        assert!(check_configs(OFFSETS_TOPIC, &offsets, &effective(&offsets)).is_ok());
        let txn = configs(&[("cleanup.policy", "compact"), ("segment.ms", "1000")]);
        assert!(check_configs(TXN_STATE_TOPIC, &txn, &effective(&txn)).is_ok());

        for bad in [
            configs(&[("cleanup.policy", "delete")]),
            configs(&[("cleanup.policy", "compact,delete")]),
            // A DELETE of the override falls back to the default policy, delete.
            configs(&[("retention.ms", "-1")]),
            configs(&[("cleanup.policy", "compact"), ("retention.ms", "1")]),
            configs(&[("cleanup.policy", "compact"), ("retention.bytes", "1024")]),
            configs(&[
                ("cleanup.policy", "compact"),
                ("unclean.leader.election.enable", "true"),
            ]),
        ] {
            let refused = check_configs(OFFSETS_TOPIC, &bad, &effective(&bad));
            assert!(refused.is_err(), "{bad:?} must be refused");
        }
        let delete = configs(&[("cleanup.policy", "delete"), ("retention.ms", "1")]);
        assert!(check_configs("orders", &delete, &effective(&delete)).is_ok());
    }

    #[test]
    fn structural_changes_are_refused_only_for_internal_topics() {
        for topic in INTERNAL_TOPICS {
            assert!(check_delete(topic).is_err());
            assert!(check_partition_change(topic).is_err());
            assert!(check_create(topic).is_err());
            assert!(check_delete_records(topic).is_err());
        }
        assert!(check_delete("orders").is_ok());
        assert!(check_partition_change("orders").is_ok());
        assert!(check_create("orders").is_ok());
        assert!(check_delete_records("orders").is_ok());
        let (code, message) = check_delete(OFFSETS_TOPIC).unwrap_err();
        assert_eq!(code, ResponseError::InvalidTopicException);
        assert!(message.contains("committed offsets"), "{message}");
    }
}
