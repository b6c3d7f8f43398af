//! The metadata state machine: what the committed records add up to.
//!
//! Pure and deterministic (no I/O, no clock), so every replica that applies the same records in
//! the same order holds the same state. Serialized whole as the snapshot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::raft_types::NodeId;
use crate::record::{LeaderChange, Listener, MetadataRecord, Outcome, PartitionState, Rejection};

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub id: NodeId,
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub rack: Option<String>,
    /// Fenced brokers lead nothing and are not offered to clients.
    #[serde(default)]
    pub fenced: bool,
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
    /// Replicas and leadership per partition index.
    #[serde(default)]
    pub partition_states: BTreeMap<i32, PartitionState>,
}

/// The cluster metadata after applying a prefix of the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataState {
    pub brokers: BTreeMap<NodeId, BrokerRegistration>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
    /// The first producer id not reserved yet; the next block starts here.
    pub producer_id_next: i64,
    /// Kafka's cluster id; empty until the first controller names the cluster.
    #[serde(default)]
    pub cluster_id: String,
}

/// The rules every partition state keeps: distinct replicas, the ISR and the leader among them,
/// a leader in the ISR.
fn check_partition_state(
    topic: &str,
    partition: i32,
    state: &PartitionState,
) -> Result<(), Rejection> {
    let invalid = |reason: &str| Rejection::InvalidPartitionChange {
        topic: topic.to_string(),
        partition,
        reason: reason.to_string(),
    };
    let mut seen = std::collections::BTreeSet::new();
    if state.replicas.is_empty() || !state.replicas.iter().all(|r| seen.insert(*r)) {
        return Err(invalid("replicas must be distinct and not empty"));
    }
    if !state.isr.iter().all(|r| state.replicas.contains(r)) {
        return Err(invalid("every ISR member must be a replica"));
    }
    if let Some(leader) = state.leader {
        if !state.isr.contains(&leader) {
            return Err(invalid("the leader must be in the ISR"));
        }
    }
    Ok(())
}

impl MetadataState {
    /// Brokers not fenced.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// One partition's state.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        self.topics.get(topic)?.partition_states.get(&partition)
    }

    /// Applies one record. A record that breaks a rule changes nothing and says why.
    pub fn apply(&mut self, record: &MetadataRecord) -> Outcome {
        match self.try_apply(record) {
            Ok(()) => Outcome::Applied,
            Err(rejection) => Outcome::Rejected(rejection),
        }
    }

    fn try_apply(&mut self, record: &MetadataRecord) -> Result<(), Rejection> {
        match record {
            MetadataRecord::RegisterBroker {
                id,
                listeners,
                rack,
            } => {
                let fenced = self.brokers.get(id).is_some_and(|b| b.fenced);
                self.brokers.insert(
                    *id,
                    BrokerRegistration {
                        id: *id,
                        listeners: listeners.clone(),
                        rack: rack.clone(),
                        fenced,
                    },
                );
            }
            MetadataRecord::FenceBroker { id } | MetadataRecord::UnfenceBroker { id } => {
                let fence = matches!(record, MetadataRecord::FenceBroker { .. });
                let broker = self
                    .brokers
                    .get_mut(id)
                    .ok_or(Rejection::UnknownBroker(*id))?;
                broker.fenced = fence;
            }
            MetadataRecord::Partition {
                topic,
                partition,
                state,
            } => {
                let unknown = || Rejection::UnknownPartition {
                    topic: topic.clone(),
                    partition: *partition,
                };
                let meta = self.topics.get_mut(topic).ok_or_else(unknown)?;
                if !(0..meta.partitions).contains(partition) {
                    return Err(unknown());
                }
                check_partition_state(topic, *partition, state)?;
                meta.partition_states.insert(*partition, state.clone());
            }
            MetadataRecord::PartitionChange {
                topic,
                partition,
                partition_epoch,
                leader_epoch,
                leader,
                isr,
                replicas,
                adding,
                removing,
            } => {
                let unknown = || Rejection::UnknownPartition {
                    topic: topic.clone(),
                    partition: *partition,
                };
                let current = self
                    .topics
                    .get_mut(topic)
                    .and_then(|t| t.partition_states.get_mut(partition))
                    .ok_or_else(unknown)?;
                if current.partition_epoch != *partition_epoch {
                    return Err(Rejection::StalePartitionEpoch {
                        topic: topic.clone(),
                        partition: *partition,
                        current: current.partition_epoch,
                        expected: *partition_epoch,
                    });
                }
                if let Some(expected) = leader_epoch {
                    if current.leader_epoch != *expected {
                        return Err(Rejection::StaleLeaderEpoch {
                            topic: topic.clone(),
                            partition: *partition,
                            current: current.leader_epoch,
                            expected: *expected,
                        });
                    }
                }
                let mut next = current.clone();
                if let Some(replicas) = replicas {
                    next.replicas = replicas.clone();
                }
                if let Some(isr) = isr {
                    next.isr = isr.clone();
                }
                if let Some(adding) = adding {
                    next.adding = adding.clone();
                }
                if let Some(removing) = removing {
                    next.removing = removing.clone();
                }
                if let Some(change) = leader {
                    let new_leader = match change {
                        LeaderChange::None => None,
                        LeaderChange::Node(id) => Some(*id),
                    };
                    if new_leader != next.leader {
                        next.leader = new_leader;
                        next.leader_epoch += 1;
                    }
                }
                next.partition_epoch += 1;
                check_partition_state(topic, *partition, &next)?;
                *current = next;
            }
            MetadataRecord::ClusterId { id } => {
                if self.cluster_id.is_empty() {
                    self.cluster_id = id.clone();
                }
            }
            MetadataRecord::Batch(records) => {
                let mut next = self.clone();
                for record in records {
                    next.try_apply(record)?;
                }
                *self = next;
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
                let partition_states = self
                    .topics
                    .remove(name)
                    .map(|t| t.partition_states)
                    .unwrap_or_default();
                self.topics.insert(
                    name.clone(),
                    TopicMeta {
                        name: name.clone(),
                        id: id.clone(),
                        partitions: *partitions,
                        configs: configs.clone(),
                        partition_states,
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
            rack: None,
        });
        let json = serde_json::to_vec(&state).unwrap();
        assert_eq!(
            serde_json::from_slice::<MetadataState>(&json).unwrap(),
            state
        );
    }
}
