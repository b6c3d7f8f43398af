//! The active controller's decisions, as pure functions of the metadata state: where new
//! partitions' replicas go, who leads when a broker is fenced or returns, and which preferred
//! leaders to restore, and how partition reassignments (KIP-455) start, are cancelled and
//! complete. They return the records to propose; the caller proposes them, and the state
//! machine's epoch checks refuse any computed from stale state.
//!
//! Kept free of I/O and clocks so the deterministic simulation drives exactly this code.

use std::collections::{BTreeMap, BTreeSet};

use crate::record::{LeaderChange, MetadataRecord, PartitionState};
use crate::state::MetadataState;
use crate::NodeId;

/// Why replicas could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("replication factor {requested} is larger than the {available} live brokers")]
    NotEnoughBrokers { requested: usize, available: usize },
    #[error("replication factor must be at least 1, not {0}")]
    InvalidReplicationFactor(i32),
}

/// Replica lists for partitions `first..first + count` over the live brokers: round-robin, each
/// partition's leader (first replica) on the next broker, followers on the brokers after it, so
/// leaders and replicas spread evenly. With racks declared, brokers are interleaved rack by rack
/// first, so consecutive replicas land on different racks (Kafka's rack-aware assignment).
pub fn place_replicas(
    state: &MetadataState,
    first: i32,
    count: i32,
    replication_factor: i32,
) -> Result<Vec<Vec<NodeId>>, PlacementError> {
    if replication_factor < 1 {
        return Err(PlacementError::InvalidReplicationFactor(replication_factor));
    }
    let brokers = rack_interleaved(state);
    let rf = replication_factor as usize;
    if rf > brokers.len() {
        return Err(PlacementError::NotEnoughBrokers {
            requested: rf,
            available: brokers.len(),
        });
    }
    // Start where earlier topics left off, so many small topics do not all lead on one broker.
    let offset = leader_counts_min_index(state, &brokers);
    let rack_of: BTreeMap<NodeId, Option<&str>> = state
        .live_brokers()
        .map(|b| (b.id, b.rack.as_deref()))
        .collect();
    let rack_count = rack_of.values().collect::<BTreeSet<_>>().len();
    let n = brokers.len();
    Ok((first..first + count)
        .map(|p| {
            let start = (offset + p as usize) % n;
            // Followers begin a growing shift after the leader each time around the ring (Kafka's
            // replica shift), so follower load spreads too.
            let shift = 1 + (p as usize / n) % (n - 1).max(1);
            let mut replicas = vec![brokers[start]];
            let mut racks: BTreeSet<Option<&str>> = BTreeSet::from([rack_of[&brokers[start]]]);
            let mut j = start + shift;
            while replicas.len() < rf {
                // Take the next broker not chosen yet on a rack not used yet; once every rack
                // has a replica, any unchosen broker.
                let candidate = (0..n)
                    .map(|k| brokers[(j + k) % n])
                    .find(|b| {
                        !replicas.contains(b)
                            && (racks.len() == rack_count || !racks.contains(&rack_of[b]))
                    })
                    .expect("rf <= live brokers leaves an unchosen broker");
                racks.insert(rack_of[&candidate]);
                replicas.push(candidate);
                j = brokers
                    .iter()
                    .position(|b| *b == candidate)
                    .expect("on the ring")
                    + 1;
            }
            replicas
        })
        .collect())
}

/// Live brokers ordered so racks alternate (brokers without a rack form one group).
fn rack_interleaved(state: &MetadataState) -> Vec<NodeId> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<NodeId>> = BTreeMap::new();
    for broker in state.live_brokers() {
        by_rack
            .entry(broker.rack.as_deref())
            .or_default()
            .push(broker.id);
    }
    let mut out = Vec::new();
    let longest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for brokers in by_rack.values() {
            if let Some(id) = brokers.get(i) {
                out.push(*id);
            }
        }
    }
    out
}

/// The ring position of the broker leading the fewest partitions now.
fn leader_counts_min_index(state: &MetadataState, ring: &[NodeId]) -> usize {
    let mut counts: BTreeMap<NodeId, usize> = ring.iter().map(|b| (*b, 0)).collect();
    for topic in state.topics.values() {
        for p in topic.partition_states.values() {
            if let Some(leader) = p.leader {
                if let Some(c) = counts.get_mut(&leader) {
                    *c += 1;
                }
            }
        }
    }
    ring.iter()
        .enumerate()
        .min_by_key(|(i, b)| (counts[*b], *i))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// The records that take a broker out of service: it is fenced, leaves every ISR it is in
/// (unless it is the last member: an ISR never becomes empty, so the last in-sync copy stays
/// known), and the partitions it led get the first live ISR member as leader, or none.
/// `unclean` allows a live replica outside the ISR to lead when no ISR member is alive (data
/// acknowledged by the ISR may be lost then; Kafka's `unclean.leader.election.enable`).
pub fn fence_broker(state: &MetadataState, broker: NodeId, unclean: bool) -> Vec<MetadataRecord> {
    let mut records = vec![MetadataRecord::FenceBroker { id: broker }];
    let live = live_except(state, broker);
    for (topic, meta) in &state.topics {
        for (&partition, p) in &meta.partition_states {
            records.extend(leave_partition(topic, partition, p, broker, &live, unclean));
        }
    }
    records
}

/// The record that takes `broker`'s replica of `topic`-`partition` out of service because its
/// log is damaged (it fetches the damaged range again from another replica): it leaves the ISR
/// (unless it is the last member) and, when it leads, the first live ISR member takes over, or
/// with `unclean` a live replica outside the ISR, or nobody. Kafka does the same for replicas
/// in an offline log directory. None when the partition does not exist, nothing changes, or
/// `broker` is the only ISR member: the last copy known complete stays known, and with nobody
/// to take over, a leaderless partition would only be given back to it.
pub fn remove_damaged_replica(
    state: &MetadataState,
    topic: &str,
    partition: i32,
    broker: NodeId,
    unclean: bool,
) -> Option<MetadataRecord> {
    let p = state.partition(topic, partition)?;
    if p.isr.iter().all(|r| *r == broker) {
        return None;
    }
    leave_partition(
        topic,
        partition,
        p,
        broker,
        &live_except(state, broker),
        unclean,
    )
}

/// Live brokers other than `broker`.
fn live_except(state: &MetadataState, broker: NodeId) -> BTreeSet<NodeId> {
    state
        .live_brokers()
        .map(|b| b.id)
        .filter(|id| *id != broker)
        .collect()
}

/// The change that takes `broker` out of partition `p`'s ISR (keeping a last member) and
/// elects another leader among `live` if it leads; None when it is neither in the ISR nor
/// leading.
fn leave_partition(
    topic: &str,
    partition: i32,
    p: &PartitionState,
    broker: NodeId,
    live: &BTreeSet<NodeId>,
    unclean: bool,
) -> Option<MetadataRecord> {
    let in_isr = p.isr.contains(&broker);
    let leads = p.leader == Some(broker);
    if !in_isr && !leads {
        return None;
    }
    let mut isr = p.isr.clone();
    if isr.len() > 1 {
        isr.retain(|r| *r != broker);
    }
    let leader = if leads {
        let next = elect(p, &isr, live, unclean);
        if let Some(LeaderChange::Node(n)) = next {
            if !isr.contains(&n) {
                isr = vec![n];
            }
        }
        next.or(Some(LeaderChange::None))
    } else {
        None
    };
    if isr == p.isr && leader.is_none() {
        return None;
    }
    Some(change(topic, partition, p, leader, Some(isr)))
}

/// The records that bring a fenced broker back: it is unfenced, and leaderless partitions
/// whose ISR holds it get it as leader.
pub fn unfence_broker(state: &MetadataState, broker: NodeId) -> Vec<MetadataRecord> {
    let mut records = vec![MetadataRecord::UnfenceBroker { id: broker }];
    for (topic, meta) in &state.topics {
        for (&partition, p) in &meta.partition_states {
            if p.leader.is_none() && p.isr.contains(&broker) {
                records.push(change(
                    topic,
                    partition,
                    p,
                    Some(LeaderChange::Node(broker)),
                    None,
                ));
            }
        }
    }
    records
}

/// Leaderless partitions that a live broker could lead now (after a broker returned or was
/// registered): their first live ISR member (or, with `unclean`, live replica) takes over.
pub fn elect_leaderless(state: &MetadataState, unclean: bool) -> Vec<MetadataRecord> {
    let live: BTreeSet<NodeId> = state.live_brokers().map(|b| b.id).collect();
    let mut records = Vec::new();
    for (topic, meta) in &state.topics {
        for (&partition, p) in &meta.partition_states {
            if p.leader.is_some() {
                continue;
            }
            if let Some(LeaderChange::Node(n)) = elect(p, &p.isr, &live, unclean) {
                let isr = (!p.isr.contains(&n)).then(|| vec![n]);
                records.push(change(
                    topic,
                    partition,
                    p,
                    Some(LeaderChange::Node(n)),
                    isr,
                ));
            }
        }
    }
    records
}

/// Partitions whose preferred replica (the first) is live and in sync but does not lead: move
/// leadership back to it (`auto.leader.rebalance.enable`).
pub fn preferred_leaders(state: &MetadataState) -> Vec<MetadataRecord> {
    let live: BTreeSet<NodeId> = state.live_brokers().map(|b| b.id).collect();
    let mut records = Vec::new();
    for (topic, meta) in &state.topics {
        for (&partition, p) in &meta.partition_states {
            let Some(&preferred) = p.replicas.first() else {
                continue;
            };
            if p.leader != Some(preferred)
                && live.contains(&preferred)
                && p.isr.contains(&preferred)
            {
                records.push(change(
                    topic,
                    partition,
                    p,
                    Some(LeaderChange::Node(preferred)),
                    None,
                ));
            }
        }
    }
    records
}

/// Why a reassignment could not be started or cancelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassignError {
    #[error("unknown partition {topic}-{partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("invalid target replicas for {topic}-{partition}: {reason}")]
    InvalidTarget {
        topic: String,
        partition: i32,
        reason: String,
    },
    #[error("no reassignment of {topic}-{partition} is in progress")]
    NoReassignmentInProgress { topic: String, partition: i32 },
    #[error("{topic}-{partition} would have no in-sync replica left")]
    NoInSyncReplica { topic: String, partition: i32 },
}

/// Whether a reassignment of `p` is under way.
pub fn is_reassigning(p: &PartitionState) -> bool {
    !p.adding.is_empty() || !p.removing.is_empty()
}

/// The replica list a partition is being reassigned to (its replicas when none is under way).
///
/// While a reassignment runs, `replicas` holds the target in the target's order followed by the
/// `removing` replicas (Kafka's `target ++ (original - target)`), so the target is `replicas`
/// without `removing`, in order, and the preferred leader during the move is the target's first.
pub fn reassignment_target(p: &PartitionState) -> Vec<NodeId> {
    p.replicas
        .iter()
        .filter(|r| !p.removing.contains(r))
        .copied()
        .collect()
}

/// The replicas a partition had before its reassignment started: `replicas` without `adding`.
/// (The original order is not kept: the target's members come first, as in Kafka.)
pub fn reassignment_original(p: &PartitionState) -> Vec<NodeId> {
    p.replicas
        .iter()
        .filter(|r| !p.adding.contains(r))
        .copied()
        .collect()
}

/// The record that starts moving `topic`-`partition` to the replicas `target` (in order, the
/// first preferred): `replicas` becomes `target ++ (current - target)`, `adding` the target's
/// new members, `removing` the current members not in the target. The ISR and leader stay until
/// [`complete_reassignments`] finishes the move. A reassignment already under way is replaced:
/// its replicas not in the new target are dropped right away (Kafka does the same). No record
/// when the target is the current assignment and nothing is under way.
pub fn start_reassignment(
    state: &MetadataState,
    topic: &str,
    partition: i32,
    target: &[NodeId],
) -> Result<Vec<MetadataRecord>, ReassignError> {
    let p = partition_of(state, topic, partition)?;
    let invalid = |reason: String| ReassignError::InvalidTarget {
        topic: topic.to_string(),
        partition,
        reason,
    };
    if target.is_empty() {
        return Err(invalid("the target replica list is empty".to_string()));
    }
    let distinct: BTreeSet<&NodeId> = target.iter().collect();
    if distinct.len() != target.len() {
        return Err(invalid("the target replicas are not distinct".to_string()));
    }
    if let Some(unknown) = target.iter().find(|r| !state.brokers.contains_key(r)) {
        return Err(invalid(format!("broker {unknown} is not registered")));
    }
    if !is_reassigning(p) && p.replicas == target {
        return Ok(Vec::new());
    }
    let original = reassignment_original(p);
    let adding: Vec<NodeId> = target
        .iter()
        .filter(|r| !original.contains(r))
        .copied()
        .collect();
    let removing: Vec<NodeId> = original
        .iter()
        .filter(|r| !target.contains(r))
        .copied()
        .collect();
    let mut replicas = target.to_vec();
    replicas.extend(removing.iter().copied());
    reshape(state, topic, partition, p, replicas, adding, removing).map(|r| vec![r])
}

/// The partition a reassignment is about, or why there is none.
fn partition_of<'a>(
    state: &'a MetadataState,
    topic: &str,
    partition: i32,
) -> Result<&'a PartitionState, ReassignError> {
    state
        .partition(topic, partition)
        .ok_or_else(|| ReassignError::UnknownPartition {
            topic: topic.to_string(),
            partition,
        })
}

/// The record that cancels `topic`-`partition`'s reassignment: the replicas go back to the
/// original ones (without `adding`), and a leader among the dropped replicas is replaced.
pub fn cancel_reassignment(
    state: &MetadataState,
    topic: &str,
    partition: i32,
) -> Result<Vec<MetadataRecord>, ReassignError> {
    let p = partition_of(state, topic, partition)?;
    if !is_reassigning(p) {
        return Err(ReassignError::NoReassignmentInProgress {
            topic: topic.to_string(),
            partition,
        });
    }
    let original = reassignment_original(p);
    reshape(state, topic, partition, p, original, Vec::new(), Vec::new()).map(|r| vec![r])
}

/// The records that finish reassignments whose new replicas have all joined the ISR: the
/// replicas become the target, the ISR keeps only target members, `adding` and `removing` are
/// cleared, and a leader being removed hands over to the first live in-sync target replica.
/// A partition whose ISR holds no target replica yet waits.
pub fn complete_reassignments(state: &MetadataState) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for (topic, meta) in &state.topics {
        for (&partition, p) in &meta.partition_states {
            if !is_reassigning(p) || !p.adding.iter().all(|r| p.isr.contains(r)) {
                continue;
            }
            let target = reassignment_target(p);
            if let Ok(record) = reshape(state, topic, partition, p, target, Vec::new(), Vec::new())
            {
                records.push(record);
            }
        }
    }
    records
}

/// A change of `p` to `replicas` with the given `adding` and `removing`: the ISR is cut down to
/// the new replicas (it may not become empty), and a leader that is no longer in it is replaced
/// by the first live in-sync replica in the new order, or none.
fn reshape(
    state: &MetadataState,
    topic: &str,
    partition: i32,
    p: &PartitionState,
    replicas: Vec<NodeId>,
    adding: Vec<NodeId>,
    removing: Vec<NodeId>,
) -> Result<MetadataRecord, ReassignError> {
    let isr: Vec<NodeId> = p
        .isr
        .iter()
        .filter(|r| replicas.contains(r))
        .copied()
        .collect();
    if isr.is_empty() {
        return Err(ReassignError::NoInSyncReplica {
            topic: topic.to_string(),
            partition,
        });
    }
    let leader = match p.leader {
        Some(l) if isr.contains(&l) => None,
        _ => {
            let live: BTreeSet<NodeId> = state.live_brokers().map(|b| b.id).collect();
            let next = replicas
                .iter()
                .find(|r| isr.contains(r) && live.contains(r))
                .map(|n| LeaderChange::Node(*n));
            match (next, p.leader) {
                (Some(n), _) => Some(n),
                (None, Some(_)) => Some(LeaderChange::None),
                (None, None) => None,
            }
        }
    };
    Ok(MetadataRecord::PartitionChange {
        topic: topic.to_string(),
        partition,
        partition_epoch: p.partition_epoch,
        leader_epoch: None,
        leader,
        isr: (isr != p.isr).then_some(isr),
        replicas: Some(replicas),
        adding: Some(adding),
        removing: Some(removing),
    })
}

/// The new leader among `isr` (in replica order, so the preferred replica wins ties), else with
/// `unclean` any live replica; None when nobody is eligible.
fn elect(
    p: &PartitionState,
    isr: &[NodeId],
    live: &BTreeSet<NodeId>,
    unclean: bool,
) -> Option<LeaderChange> {
    let clean = p
        .replicas
        .iter()
        .find(|r| isr.contains(r) && live.contains(r));
    let chosen = clean.or_else(|| {
        unclean
            .then(|| p.replicas.iter().find(|r| live.contains(r)))
            .flatten()
    });
    chosen.map(|n| LeaderChange::Node(*n))
}

fn change(
    topic: &str,
    partition: i32,
    p: &PartitionState,
    leader: Option<LeaderChange>,
    isr: Option<Vec<NodeId>>,
) -> MetadataRecord {
    MetadataRecord::PartitionChange {
        topic: topic.to_string(),
        partition,
        partition_epoch: p.partition_epoch,
        leader_epoch: None,
        leader,
        isr,
        replicas: None,
        adding: None,
        removing: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Listener;

    fn cluster(brokers: &[(u64, Option<&str>)]) -> MetadataState {
        let mut state = MetadataState::default();
        for (id, rack) in brokers {
            state.apply(&MetadataRecord::RegisterBroker {
                id: NodeId(*id),
                listeners: vec![Listener {
                    name: "PLAINTEXT".into(),
                    host: "h".into(),
                    port: 1,
                }],
                rack: rack.map(str::to_string),
            });
        }
        state
    }

    fn create(state: &mut MetadataState, name: &str, partitions: i32, rf: i32) {
        let placed = place_replicas(state, 0, partitions, rf).unwrap();
        let mut records = vec![MetadataRecord::Topic {
            name: name.into(),
            id: format!("id-{name}"),
            partitions,
            configs: BTreeMap::new(),
        }];
        for (i, replicas) in placed.into_iter().enumerate() {
            records.push(MetadataRecord::Partition {
                topic: name.into(),
                partition: i as i32,
                state: PartitionState::new(replicas),
            });
        }
        assert_eq!(
            state.apply(&MetadataRecord::Batch(records)),
            crate::Outcome::Applied
        );
    }

    fn apply_all(state: &mut MetadataState, records: Vec<MetadataRecord>) {
        for r in records {
            assert_eq!(state.apply(&r), crate::Outcome::Applied, "{r}");
        }
    }

    #[test]
    fn placement_spreads_leaders_and_replicas() {
        let mut state = cluster(&[(1, None), (2, None), (3, None)]);
        create(&mut state, "t", 6, 3);
        let mut leaders = BTreeMap::new();
        for p in state.topics["t"].partition_states.values() {
            assert_eq!(p.replicas.iter().collect::<BTreeSet<_>>().len(), 3);
            *leaders.entry(p.leader.unwrap()).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        // A second topic starts on the least-loaded broker, not broker 1 again.
        create(&mut state, "u", 1, 1);
        let placed = place_replicas(&state, 0, 4, 2).unwrap();
        for replicas in &placed {
            assert_eq!(replicas.len(), 2);
            assert_ne!(replicas[0], replicas[1]);
        }
        assert!(matches!(
            place_replicas(&state, 0, 1, 4),
            Err(PlacementError::NotEnoughBrokers { .. })
        ));
    }

    #[test]
    fn placement_alternates_racks() {
        let state = cluster(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
        ]);
        let racks = |id: NodeId| if id.0 <= 2 { "a" } else { "b" };
        for replicas in place_replicas(&state, 0, 8, 2).unwrap() {
            assert_ne!(racks(replicas[0]), racks(replicas[1]), "{replicas:?}");
        }
    }

    #[test]
    fn fencing_moves_leadership_within_the_isr_and_back() {
        let mut state = cluster(&[(1, None), (2, None), (3, None)]);
        create(&mut state, "t", 3, 3);
        let before = state.clone();
        let records = fence_broker(&state, NodeId(1), false);
        apply_all(&mut state, records);
        for (i, p) in &state.topics["t"].partition_states {
            let old = &before.topics["t"].partition_states[i];
            assert_ne!(p.leader, Some(NodeId(1)));
            assert!(!p.isr.contains(&NodeId(1)));
            if old.leader == Some(NodeId(1)) {
                assert_eq!(p.leader_epoch, old.leader_epoch + 1);
            } else {
                assert_eq!(p.leader_epoch, old.leader_epoch);
            }
        }
        // Two more fenced: the last ISR member stays in the ISR, with no leader.
        let records = fence_broker(&state, NodeId(2), false);
        apply_all(&mut state, records);
        let records = fence_broker(&state, NodeId(3), false);
        apply_all(&mut state, records);
        for p in state.topics["t"].partition_states.values() {
            assert_eq!(p.leader, None);
            assert_eq!(p.isr.len(), 1);
        }
        // Only the last ISR member may lead again (clean election).
        let records = unfence_broker(&state, NodeId(1));
        apply_all(&mut state, records);
        for p in state.topics["t"].partition_states.values() {
            assert_eq!(p.leader, None, "broker 1 was not in sync");
        }
        let records = unfence_broker(&state, NodeId(3));
        apply_all(&mut state, records);
        for p in state.topics["t"].partition_states.values() {
            assert_eq!(p.leader, Some(NodeId(3)));
        }
    }

    #[test]
    fn a_damaged_replica_leaves_the_isr_and_hands_leadership_over() {
        let mut state = cluster(&[(1, None), (2, None), (3, None)]);
        create_on(&mut state, "t", &[1, 2, 3]);
        let before = state.topics["t"].partition_states[&0].clone();
        assert_eq!(before.leader, Some(NodeId(1)));
        let record = remove_damaged_replica(&state, "t", 0, NodeId(1), false).unwrap();
        apply_all(&mut state, vec![record]);
        let p = &state.topics["t"].partition_states[&0];
        assert_eq!(p.leader, Some(NodeId(2)));
        assert_eq!(p.isr, node_ids(&[2, 3]));
        assert_eq!(p.leader_epoch, before.leader_epoch + 1);
        // A follower only leaves the ISR; once out, nothing changes.
        let record = remove_damaged_replica(&state, "t", 0, NodeId(3), false).unwrap();
        apply_all(&mut state, vec![record]);
        let p = &state.topics["t"].partition_states[&0];
        assert_eq!((p.leader, p.isr.clone()), (Some(NodeId(2)), node_ids(&[2])));
        assert!(remove_damaged_replica(&state, "t", 0, NodeId(3), false).is_none());
        // The last in-sync replica stays what it is: nobody else has every record.
        assert!(remove_damaged_replica(&state, "t", 0, NodeId(2), false).is_none());
        assert!(remove_damaged_replica(&state, "nope", 0, NodeId(2), false).is_none());
    }

    #[test]
    fn unclean_election_picks_a_live_replica() {
        let mut state = cluster(&[(1, None), (2, None)]);
        create(&mut state, "t", 1, 2);
        let records = fence_broker(&state, NodeId(1), false);
        apply_all(&mut state, records);
        let records = fence_broker(&state, NodeId(2), false);
        apply_all(&mut state, records);
        let last = state.topics["t"].partition_states[&0].isr.clone();
        let other = if last == vec![NodeId(1)] {
            NodeId(2)
        } else {
            NodeId(1)
        };
        state.apply(&MetadataRecord::UnfenceBroker { id: other });
        assert!(elect_leaderless(&state, false).is_empty());
        let records = elect_leaderless(&state, true);
        apply_all(&mut state, records);
        let p = &state.topics["t"].partition_states[&0];
        assert_eq!(p.leader, Some(other));
        assert_eq!(p.isr, vec![other]);
    }

    #[test]
    fn preferred_leader_returns() {
        let mut state = cluster(&[(1, None), (2, None), (3, None)]);
        create(&mut state, "t", 3, 3);
        let records = fence_broker(&state, NodeId(2), false);
        apply_all(&mut state, records);
        let records = unfence_broker(&state, NodeId(2));
        apply_all(&mut state, records);
        assert!(preferred_leaders(&state).is_empty(), "2 is not in sync yet");
        // 2 catches up: its leader adds it back to the ISR.
        for (i, p) in state.topics["t"].partition_states.clone() {
            let mut isr = p.isr.clone();
            isr.push(NodeId(2));
            state.apply(&change("t", i, &p, None, Some(isr)));
        }
        let records = preferred_leaders(&state);
        apply_all(&mut state, records);
        for p in state.topics["t"].partition_states.values() {
            assert_eq!(p.leader, p.replicas.first().copied());
        }
    }

    fn node_ids(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().map(|i| NodeId(*i)).collect()
    }

    /// A one-partition topic on exactly `replicas`.
    fn create_on(state: &mut MetadataState, name: &str, replicas: &[u64]) {
        let records = vec![
            MetadataRecord::Topic {
                name: name.into(),
                id: format!("id-{name}"),
                partitions: 1,
                configs: BTreeMap::new(),
            },
            MetadataRecord::Partition {
                topic: name.into(),
                partition: 0,
                state: PartitionState::new(node_ids(replicas)),
            },
        ];
        assert_eq!(
            state.apply(&MetadataRecord::Batch(records)),
            crate::Outcome::Applied
        );
    }

    /// The partition leader adds `replica` to the ISR (it caught up).
    fn join_isr(state: &mut MetadataState, replica: u64) {
        let p = state.topics["t"].partition_states[&0].clone();
        let mut isr = p.isr.clone();
        isr.push(NodeId(replica));
        assert_eq!(
            state.apply(&change("t", 0, &p, None, Some(isr))),
            crate::Outcome::Applied
        );
    }

    #[test]
    fn reassignment_replaces_a_node_and_moves_leadership() {
        let mut state = cluster(&[(1, None), (2, None), (3, None)]);
        create_on(&mut state, "t", &[1, 2]);
        let records = start_reassignment(&state, "t", 0, &node_ids(&[2, 3])).unwrap();
        apply_all(&mut state, records);
        let p = state.topics["t"].partition_states[&0].clone();
        assert_eq!(p.replicas, node_ids(&[2, 3, 1]));
        assert_eq!(p.adding, node_ids(&[3]));
        assert_eq!(p.removing, node_ids(&[1]));
        assert_eq!(p.isr, node_ids(&[1, 2]));
        assert_eq!(p.leader, Some(NodeId(1)));
        assert_eq!(reassignment_target(&p), node_ids(&[2, 3]));
        // 3 has not caught up: nothing completes.
        assert!(complete_reassignments(&state).is_empty());
        join_isr(&mut state, 3);
        let records = complete_reassignments(&state);
        assert_eq!(records.len(), 1);
        apply_all(&mut state, records);
        let done = &state.topics["t"].partition_states[&0];
        assert_eq!(done.replicas, node_ids(&[2, 3]));
        assert_eq!(done.isr, node_ids(&[2, 3]));
        assert_eq!(done.leader, Some(NodeId(2)));
        assert_eq!(done.leader_epoch, p.leader_epoch + 1);
        assert!(done.adding.is_empty() && done.removing.is_empty());
        assert!(complete_reassignments(&state).is_empty());
    }

    #[test]
    fn reassignment_keeps_a_leader_in_the_target() {
        let mut state = cluster(&[(1, None), (2, None), (3, None)]);
        create_on(&mut state, "t", &[1, 2]);
        let records = start_reassignment(&state, "t", 0, &node_ids(&[3, 1])).unwrap();
        apply_all(&mut state, records);
        join_isr(&mut state, 3);
        let epoch = state.topics["t"].partition_states[&0].leader_epoch;
        let records = complete_reassignments(&state);
        apply_all(&mut state, records);
        let done = &state.topics["t"].partition_states[&0];
        assert_eq!(done.replicas, node_ids(&[3, 1]));
        assert_eq!(done.isr, node_ids(&[1, 3]));
        assert_eq!(done.leader, Some(NodeId(1)));
        assert_eq!(done.leader_epoch, epoch);
    }

    #[test]
    fn pure_removal_completes_at_once_and_a_reorder_applies() {
        let mut state = cluster(&[(1, None), (2, None), (3, None)]);
        create_on(&mut state, "t", &[1, 2, 3]);
        let records = start_reassignment(&state, "t", 0, &node_ids(&[3, 2])).unwrap();
        apply_all(&mut state, records);
        let records = complete_reassignments(&state);
        apply_all(&mut state, records);
        let p = &state.topics["t"].partition_states[&0];
        assert_eq!(p.replicas, node_ids(&[3, 2]));
        assert_eq!(p.leader, Some(NodeId(3)));
        let same = start_reassignment(&state, "t", 0, &node_ids(&[3, 2])).unwrap();
        assert!(same.is_empty(), "the target is the current assignment");
        let records = start_reassignment(&state, "t", 0, &node_ids(&[2, 3])).unwrap();
        apply_all(&mut state, records);
        let p = &state.topics["t"].partition_states[&0];
        assert_eq!(p.replicas, node_ids(&[2, 3]));
        assert!(!is_reassigning(p));
    }

    #[test]
    fn reassignment_targets_are_validated() {
        let mut state = cluster(&[(1, None), (2, None), (3, None)]);
        create_on(&mut state, "t", &[1, 2]);
        for bad in [vec![], node_ids(&[2, 2]), node_ids(&[2, 9])] {
            assert!(matches!(
                start_reassignment(&state, "t", 0, &bad),
                Err(ReassignError::InvalidTarget { .. })
            ));
        }
        assert!(matches!(
            start_reassignment(&state, "t", 1, &node_ids(&[1])),
            Err(ReassignError::UnknownPartition { .. })
        ));
        assert!(matches!(
            start_reassignment(&state, "nope", 0, &node_ids(&[1])),
            Err(ReassignError::UnknownPartition { .. })
        ));
        assert!(matches!(
            cancel_reassignment(&state, "t", 0),
            Err(ReassignError::NoReassignmentInProgress { .. })
        ));
    }

    #[test]
    fn cancel_and_replace_go_back_to_the_original_replicas() {
        let mut state = cluster(&[(1, None), (2, None), (3, None), (4, None)]);
        create_on(&mut state, "t", &[1, 2]);
        let records = start_reassignment(&state, "t", 0, &node_ids(&[3, 4])).unwrap();
        apply_all(&mut state, records);
        join_isr(&mut state, 3);
        // A new target replaces the running one: 4 is no longer added, 3 stays (and in sync).
        let records = start_reassignment(&state, "t", 0, &node_ids(&[1, 3])).unwrap();
        apply_all(&mut state, records);
        let p = state.topics["t"].partition_states[&0].clone();
        assert_eq!(p.replicas, node_ids(&[1, 3, 2]));
        assert_eq!(p.adding, node_ids(&[3]));
        assert_eq!(p.removing, node_ids(&[2]));
        assert_eq!(p.isr, node_ids(&[1, 2, 3]));
        let records = cancel_reassignment(&state, "t", 0).unwrap();
        apply_all(&mut state, records);
        let p = &state.topics["t"].partition_states[&0];
        assert_eq!(p.replicas, node_ids(&[1, 2]));
        assert_eq!(p.isr, node_ids(&[1, 2]));
        assert_eq!(p.leader, Some(NodeId(1)));
        assert!(!is_reassigning(p));
    }

    #[test]
    fn stale_changes_are_refused() {
        let mut state = cluster(&[(1, None), (2, None)]);
        create(&mut state, "t", 1, 2);
        let p = state.topics["t"].partition_states[&0].clone();
        let shrink = change("t", 0, &p, None, Some(vec![p.leader.unwrap()]));
        assert_eq!(state.apply(&shrink), crate::Outcome::Applied);
        assert!(matches!(state.apply(&shrink), crate::Outcome::Rejected(_)));
        // A leader outside the ISR is refused.
        let p = state.topics["t"].partition_states[&0].clone();
        let outsider = p
            .replicas
            .iter()
            .find(|r| !p.isr.contains(r))
            .copied()
            .unwrap();
        let bad = change("t", 0, &p, Some(LeaderChange::Node(outsider)), None);
        assert!(matches!(state.apply(&bad), crate::Outcome::Rejected(_)));
    }
}
