//! The metadata state machine: what the committed records add up to.
//!
//! Pure and deterministic (no I/O, no clock), so every replica that applies the same records in
//! the same order holds the same state. Serialized whole as the snapshot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::raft_types::NodeId;
use crate::record::{Listener, MetadataRecord, Outcome, Rejection};

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub id: NodeId,
    pub listeners: Vec<Listener>,
}

/// One topic as the metadata knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    /// The topic id, a UUID in its hyphenated string form.
    pub id: String,
    pub partitions: i32,
    /// Topic-level config overrides (Kafka names).
    pub configs: BTreeMap<String, String>,
}

/// The cluster metadata after applying a prefix of the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataState {
    pub brokers: BTreeMap<NodeId, BrokerRegistration>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
    /// The first producer id not reserved yet; the next block starts here.
    pub producer_id_next: i64,
}

impl MetadataState {
    /// Applies one record. A record that breaks a rule changes nothing and says why.
    pub fn apply(&mut self, record: &MetadataRecord) -> Outcome {
        match self.try_apply(record) {
            Ok(()) => Outcome::Applied,
            Err(rejection) => Outcome::Rejected(rejection),
        }
    }

    fn try_apply(&mut self, record: &MetadataRecord) -> Result<(), Rejection> {
        match record {
            MetadataRecord::RegisterBroker { id, listeners } => {
                self.brokers.insert(
                    *id,
                    BrokerRegistration {
                        id: *id,
                        listeners: listeners.clone(),
                    },
                );
            }
            MetadataRecord::Topic {
                name,
                id,
                partitions,
                configs,
            } => {
                if *partitions < 1 {
                    return Err(Rejection::InvalidPartitions(*partitions));
                }
                if let Some(existing) = self.topics.get(name) {
                    if existing.id != *id {
                        return Err(Rejection::TopicIdChanged {
                            name: name.clone(),
                            existing_id: existing.id.clone(),
                            requested_id: id.clone(),
                        });
                    }
                    if *partitions < existing.partitions {
                        return Err(Rejection::PartitionsDecreased {
                            name: name.clone(),
                            current: existing.partitions,
                            requested: *partitions,
                        });
                    }
                }
                self.topics.insert(
                    name.clone(),
                    TopicMeta {
                        name: name.clone(),
                        id: id.clone(),
                        partitions: *partitions,
                        configs: configs.clone(),
                    },
                );
            }
            MetadataRecord::RemoveTopic { name } => {
                if self.topics.remove(name).is_none() {
                    return Err(Rejection::UnknownTopic(name.clone()));
                }
            }
            MetadataRecord::ConfigRecord { topic, configs } => {
                let Some(existing) = self.topics.get_mut(topic) else {
                    return Err(Rejection::UnknownTopic(topic.clone()));
                };
                existing.configs = configs.clone();
            }
            MetadataRecord::ProducerIds { next } => {
                if *next <= self.producer_id_next {
                    return Err(Rejection::ProducerIdsNotIncreasing {
                        current: self.producer_id_next,
                        requested: *next,
                    });
                }
                self.producer_id_next = *next;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, id: &str, partitions: i32) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.to_string(),
            id: id.to_string(),
            partitions,
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn topics_grow_keep_their_id_and_can_be_removed() {
        let mut state = MetadataState::default();
        assert_eq!(state.apply(&topic("a", "id-a", 2)), Outcome::Applied);
        assert_eq!(state.apply(&topic("a", "id-a", 3)), Outcome::Applied);
        assert!(matches!(
            state.apply(&topic("a", "id-a", 1)),
            Outcome::Rejected(Rejection::PartitionsDecreased { .. })
        ));
        assert!(matches!(
            state.apply(&topic("a", "other", 3)),
            Outcome::Rejected(Rejection::TopicIdChanged { .. })
        ));
        assert_eq!(state.topics["a"].partitions, 3);
        let configs = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        let config = MetadataRecord::ConfigRecord {
            topic: "a".to_string(),
            configs: configs.clone(),
        };
        assert_eq!(state.apply(&config), Outcome::Applied);
        assert_eq!(state.topics["a"].configs, configs);
        let remove = MetadataRecord::RemoveTopic {
            name: "a".to_string(),
        };
        assert_eq!(state.apply(&remove), Outcome::Applied);
        assert_eq!(
            state.apply(&remove),
            Outcome::Rejected(Rejection::UnknownTopic("a".to_string()))
        );
        assert!(matches!(
            state.apply(&config),
            Outcome::Rejected(Rejection::UnknownTopic(_))
        ));
    }

    #[test]
    fn producer_id_blocks_only_move_forward() {
        let mut state = MetadataState::default();
        assert_eq!(
            state.apply(&MetadataRecord::ProducerIds { next: 1000 }),
            Outcome::Applied
        );
        assert!(matches!(
            state.apply(&MetadataRecord::ProducerIds { next: 1000 }),
            Outcome::Rejected(Rejection::ProducerIdsNotIncreasing { .. })
        ));
        assert_eq!(state.producer_id_next, 1000);
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut state = MetadataState::default();
        state.apply(&topic("a", "id-a", 2));
        state.apply(&MetadataRecord::RegisterBroker {
            id: NodeId(1),
            listeners: vec![Listener {
                name: "PLAINTEXT".to_string(),
                host: "localhost".to_string(),
                port: 9092,
            }],
        });
        let json = serde_json::to_vec(&state).unwrap();
        assert_eq!(
            serde_json::from_slice::<MetadataState>(&json).unwrap(),
            state
        );
    }
}
