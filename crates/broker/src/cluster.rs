//! Following the cluster: opening the metadata quorum, registering this broker and
//! heartbeating, turning the applied metadata into local state (hosted replicas, leader or
//! follower roles, replica fetchers, topic configs, deleted topics, replicas reassigned away),
//! proposing the ISR changes partition leaders need, and — on the node that leads the quorum —
//! the active controller's duties (fencing silent brokers, electing leaders, restoring preferred
//! leaders, completing partition reassignments).
//!
//! A single `sluice serve` runs all of this too, as a one-voter quorum whose controller is itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sluice_meta::controller;
use sluice_meta::membership::ClusterSecret;
use sluice_meta::{Listener, MetaNode, MetadataRecord, MetadataState, NodeId};
use sluice_protocol::error::ResponseError;
use tracing::{debug, info, warn};

use crate::broker::{now, Broker, StartError};
use crate::config::BrokerConfig;
use crate::metadata::{node_id, MetadataError, TopicMeta};
use crate::partition::{Partition, RejoinState};
use crate::replica_manager::Rejoin;
use crate::replication::fetcher::{Assignment, Fetchers};
use crate::topic_config;

/// How often the active controller looks at heartbeats and leaderless partitions.
const CONTROLLER_TICK: Duration = Duration::from_millis(200);
/// How often preferred leaders are restored (`leader.imbalance.check.interval.seconds` is 300
/// in Kafka; a cluster this size can afford faster).
const REBALANCE_EVERY: Duration = Duration::from_secs(10);

/// Cluster-following state kept by the broker.
#[derive(Default)]
pub(crate) struct ClusterState {
    /// The broker itself, for tasks spawned from `&self` methods.
    broker: OnceLock<Weak<Broker>>,
    /// Topic configs last applied to the hosted logs.
    applied_configs: Mutex<HashMap<String, BTreeMap<String, String>>>,
    /// Partitions with an ISR change proposal in flight.
    isr_pending: Mutex<HashSet<(String, i32)>>,
    /// Topics whose replicas are being deleted here (not hosted again until done).
    pub(crate) deleting: Mutex<HashSet<String>>,
    pub(crate) fetchers: Fetchers,
    /// Connections to other partition leaders for the transaction coordinator's markers.
    pub(crate) marker_channels: crate::txn::marker_channel::MarkerChannels,
    /// Registered with the quorum.
    joined: AtomicBool,
    /// The coordinators have replayed the internal topics once; from then on a partition of
    /// them that this broker comes to lead is replayed again (its followers' copy is current).
    loaded: AtomicBool,
    /// Internal-topic partitions whose coordinator state is loaded here: the leader epoch it
    /// was loaded for. A partition led at another epoch is still being taken over.
    coordinator_epochs: Mutex<HashMap<(String, i32), i32>>,
    /// Internal topics this broker has asked the quorum to create, not answered yet.
    creating_internal: Mutex<HashSet<String>>,
}

impl ClusterState {
    /// Whether the coordinator state of `topic`-`index` is loaded for `leader_epoch`.
    fn coordinator_loaded(&self, topic: &str, index: i32, leader_epoch: i32) -> bool {
        self.coordinator_epochs
            .lock()
            .get(&(topic.to_owned(), index))
            .is_some_and(|&loaded| loaded == leader_epoch)
    }

    fn set_coordinator_loaded(&self, topic: &str, index: i32, leader_epoch: i32) {
        self.coordinator_epochs
            .lock()
            .insert((topic.to_owned(), index), leader_epoch);
    }
}

impl std::fmt::Debug for ClusterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterState")
            .field("joined", &self.joined.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Opens this node's metadata quorum member under `<data dir>/__cluster_metadata`.
/// Other voters must prove they hold `secret` before the listener serves them.
pub(crate) async fn open_meta_node(
    config: &BrokerConfig,
    secret: &ClusterSecret,
) -> Result<MetaNode, StartError> {
    let dir = config.data_dir.join("__cluster_metadata");
    let me = node_id(config.node_id);
    if config.voters.len() <= 1 {
        return MetaNode::open(&dir, me)
            .await
            .map_err(|e| StartError::Metadata(e.into()));
    }
    let voters: BTreeMap<NodeId, String> = config
        .voters
        .iter()
        .map(|v| (node_id(v.id), v.address()))
        .collect();
    let listen = match config.controller_listen {
        Some(addr) => addr,
        None => {
            let own = config
                .voters
                .iter()
                .find(|v| v.id == config.node_id)
                .ok_or_else(|| {
                    StartError::Join(format!(
                        "node {} is not among controller.quorum.voters",
                        config.node_id
                    ))
                })?;
            tokio::net::lookup_host(own.address())
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| StartError::Join(format!("cannot resolve {}", own.address())))?
        }
    };
    MetaNode::open_cluster(
        &dir,
        me,
        voters,
        listen,
        secret.clone(),
        sluice_meta::MetaOptions::default(),
    )
    .await
    .map_err(|e| StartError::Metadata(e.into()))
}

impl Broker {
    /// No other voters: this node is the whole quorum.
    pub fn is_single_voter(&self) -> bool {
        self.config.voters.len() <= 1
    }

    /// Registered with the metadata quorum and serving its metadata (readiness).
    pub fn has_joined(&self) -> bool {
        self.cluster.joined.load(Ordering::Acquire)
    }

    fn me(&self) -> NodeId {
        node_id(self.config.node_id)
    }

    /// Registers this broker (listeners, rack) unless the metadata already has it so, names the
    /// cluster if nobody has, and applies the metadata.
    pub(crate) async fn join_cluster(self: &Arc<Self>) -> Result<(), StartError> {
        let _ = self.cluster.broker.set(Arc::downgrade(self));
        if !self.is_single_voter() {
            // Catch up with what the quorum has committed before acting on the local copy: a
            // restarted node must not serve (or lead) from metadata it missed while down.
            self.metadata
                .node()
                .wait_leader(Duration::from_secs(5))
                .await
                .map_err(|e| StartError::Join(e.to_string()))?;
        }
        let me = self.me();
        let listeners = vec![Listener {
            name: "PLAINTEXT".to_string(),
            host: self.config.advertised_host.clone(),
            port: self.config.advertised_port,
        }];
        let state = self.metadata.state();
        let current = state.brokers.get(&me);
        if current.map(|b| (&b.listeners, &b.rack)) != Some((&listeners, &self.config.rack)) {
            self.metadata
                .propose(MetadataRecord::RegisterBroker {
                    id: me,
                    listeners,
                    rack: self.config.rack.clone(),
                })
                .await
                .map_err(|e| StartError::Join(e.to_string()))?;
        }
        self.metadata
            .ensure_cluster_id()
            .await
            .map_err(|e| StartError::Join(e.to_string()))?;
        if self.is_single_voter() {
            // The sole voter is its own controller: whatever an earlier run left fenced or
            // leaderless is put right before the first client connects.
            controller_pass(self, &BTreeMap::from([(me, Instant::now())]), false).await;
        }
        self.cluster.joined.store(true, Ordering::Release);
        self.apply_metadata();
        Ok(())
    }

    /// Makes local state match the applied metadata (see the module docs). Idempotent; called
    /// after every metadata change and after this node's own topic changes.
    pub fn apply_metadata(&self) {
        let state = self.metadata.state();
        let me = self.me();
        let now_ms = now().0;
        // Topics deleted (or re-created under a new id) elsewhere: their replicas here go first,
        // and a re-created topic is hosted only once the old one's directories are gone.
        self.drop_deleted_topics(&state);
        let deleting = self.cluster.deleting.lock().clone();
        // Logs this broker should host and does not yet (all of them at start) are opened
        // together first; the pass below then finds them open.
        let mut wanted = Vec::new();
        for (name, topic) in state.topics.iter().filter(|(n, _)| !deleting.contains(*n)) {
            let missing: Vec<i32> = topic
                .partition_states
                .iter()
                .filter(|(&index, p)| {
                    p.replicas.contains(&me) && self.replicas.partition(name, index).is_none()
                })
                .map(|(&index, _)| index)
                .collect();
            if missing.is_empty() {
                continue;
            }
            let Ok(config) = topic_config::log_config(&self.config.log_defaults, &topic.configs)
            else {
                continue;
            };
            let meta = TopicMeta::from_meta(topic);
            wanted.extend(
                missing
                    .into_iter()
                    .map(|index| (meta.clone(), index, config.clone())),
            );
        }
        self.replicas.open_missing(wanted);
        let mut configs = self.cluster.applied_configs.lock();
        let mut follow: BTreeMap<i32, Vec<Arc<Partition>>> = BTreeMap::new();
        // Internal topic → (partitions taken over, records loaded): one log line per topic.
        let mut taken_over: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for (name, topic) in &state.topics {
            if deleting.contains(name) {
                continue;
            }
            let meta = TopicMeta::from_meta(topic);
            let log_config = match topic_config::log_config(
                &self.config.log_defaults,
                &topic.configs,
            ) {
                Ok(c) => c,
                Err(e) => {
                    warn!(topic = %name, error = %e, "topic config unusable; not hosting the topic");
                    continue;
                }
            };
            let configs_changed = configs.get(name) != Some(&topic.configs);
            for (&index, p) in &topic.partition_states {
                if !p.replicas.contains(&me) {
                    continue;
                }
                // A damaged log is fetched again when another in-sync replica has it all.
                let rejoin = if p.isr.iter().any(|r| *r != me) {
                    Rejoin::Refetch
                } else {
                    Rejoin::Impossible
                };
                // None: offline here (logged when it went offline).
                let Some((partition, opened)) =
                    self.replicas
                        .ensure_partition(&meta, index, &log_config, rejoin)
                else {
                    continue;
                };
                if configs_changed && !opened {
                    partition.set_config(log_config.clone());
                }
                let ids = |v: &[NodeId]| v.iter().map(|n| n.0 as i32).collect::<Vec<i32>>();
                let may_lead = self.rejoin_step(&partition, p.isr.contains(&me));
                if p.leader == Some(me) && may_lead {
                    let new = partition.become_leader(
                        p.leader_epoch,
                        ids(&p.replicas),
                        ids(&p.isr),
                        now_ms,
                    );
                    if new && self.cluster.loaded.load(Ordering::Acquire) {
                        if let Some(records) =
                            self.take_over_coordination(name, index, p.leader_epoch)
                        {
                            let taken = taken_over.entry(name.as_str()).or_insert((0, 0));
                            taken.0 += 1;
                            taken.1 += records;
                        }
                    }
                } else {
                    // A replica refetching a quarantined range follows even when the
                    // metadata still names it leader (its removal is on its way).
                    let leader = p.leader.filter(|l| *l != me).map(|n| n.0 as i32);
                    partition.become_follower(leader, p.leader_epoch);
                    if let Some(leader) = leader {
                        follow.entry(leader).or_default().push(partition);
                    }
                }
            }
            configs.insert(name.clone(), topic.configs.clone());
        }
        configs.retain(|name, _| state.topics.contains_key(name));
        drop(configs);
        for (topic, (partitions, records)) in taken_over {
            info!(%topic, partitions, records, "took over coordination");
        }
        let weak = self.cluster.broker.get().cloned().unwrap_or_default();
        // Replicas reassigned away from this broker: detached now (no longer served, and no
        // fetcher is assigned to them below), their logs deleted in the background.
        let mut removed = Vec::new();
        for partition in self.replicas.all_partitions() {
            let unassigned = state.topics.get(&partition.topic).is_some_and(|t| {
                t.id == partition.topic_id.to_string()
                    && t.partition_states
                        .get(&partition.index)
                        .is_some_and(|p| !p.replicas.contains(&me))
            });
            if unassigned {
                if let Some(p) = self
                    .replicas
                    .detach_partition(&partition.topic, partition.index)
                {
                    info!(topic = %p.topic, partition = p.index, "no longer a replica; removing it");
                    removed.push(p);
                }
            }
        }
        if !removed.is_empty() {
            if let Some(broker) = weak.upgrade() {
                tokio::spawn(async move { broker.replicas.delete_detached(removed).await });
            }
        }
        let wanted = follow
            .into_iter()
            .filter_map(|(leader, partitions)| {
                let address = broker_address(&state, NodeId(leader as u64))?;
                Some((
                    leader,
                    Assignment {
                        address,
                        partitions,
                    },
                ))
            })
            .collect();
        self.cluster.fetchers.assign(&weak, wanted);
    }

    /// One step of a quarantined replica's way back into the ISR ([`RejoinState`]), given
    /// whether the metadata has it in the ISR now; returns whether it may lead. While leaving,
    /// it asks the controller's way to be taken out of the ISR (and out of leadership); once
    /// out, it catches up as a follower, and the leader adds it back.
    fn rejoin_step(&self, partition: &Arc<Partition>, in_isr: bool) -> bool {
        match (partition.rejoin_state(), in_isr) {
            (RejoinState::Whole, _) => true,
            (RejoinState::LeavingIsr, true) => {
                self.report_damaged_replica(partition);
                false
            }
            (RejoinState::LeavingIsr, false) => {
                info!(topic = %partition.topic, partition = partition.index, "out of the ISR; fetching the quarantined range again");
                partition.set_rejoin_state(RejoinState::CatchingUp);
                false
            }
            (RejoinState::CatchingUp, true) => {
                info!(topic = %partition.topic, partition = partition.index, "caught up after the quarantine; back in the ISR");
                partition.set_rejoin_state(RejoinState::Whole);
                true
            }
            (RejoinState::CatchingUp, false) => false,
        }
    }

    /// Proposes taking this broker's damaged replica of `partition` out of the ISR (and out of
    /// leadership, to another in-sync replica) — what the controller does in Kafka when a
    /// broker reports an offline log directory. One proposal at a time per partition; a stale
    /// one is proposed again at the next metadata pass.
    fn report_damaged_replica(&self, partition: &Arc<Partition>) {
        let Some((broker, key)) = self.claim_partition_change(partition) else {
            return;
        };
        tokio::spawn(async move {
            let (topic, index) = key.clone();
            let record = controller::remove_damaged_replica(
                &broker.metadata.state(),
                &topic,
                index,
                broker.me(),
                broker.config.unclean_leader_election_enable,
            );
            match record {
                Some(record) => match broker.metadata.propose(record).await {
                    Ok(()) => {
                        info!(%topic, partition = index, "left the ISR: the replica's log was damaged and is being fetched again")
                    }
                    Err(e) => {
                        debug!(%topic, partition = index, error = %e, "leaving the ISR not applied yet");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                None => {
                    warn!(%topic, partition = index, "cannot leave the ISR: this replica is its last member; it stays out of leadership until another replica is in sync, or an operator restores the quarantined data");
                    // Asked again only after a while: the ISR changes slowly.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
            broker.cluster.isr_pending.lock().remove(&key);
            broker.apply_metadata();
        });
    }

    /// Claims the one partition-change proposal in flight for `partition` (ISR changes and a
    /// damaged replica's removal share it); None when one is in flight already or the broker is
    /// going away. The caller's task removes the key when its proposal is answered.
    fn claim_partition_change(
        &self,
        partition: &Partition,
    ) -> Option<(Arc<Broker>, (String, i32))> {
        let key = (partition.topic.clone(), partition.index);
        if !self.cluster.isr_pending.lock().insert(key.clone()) {
            return None;
        }
        let Some(broker) = self.cluster.broker.get().and_then(Weak::upgrade) else {
            self.cluster.isr_pending.lock().remove(&key);
            return None;
        };
        Some((broker, key))
    }

    /// Deletes (in the background) the hosted replicas of topics the metadata no longer has, or
    /// has under another id; applies the metadata again when done.
    fn drop_deleted_topics(&self, state: &MetadataState) {
        for name in self.replicas.topic_names() {
            let Some(hosted_id) = self.replicas.topic_id(&name) else {
                continue;
            };
            let gone = state
                .topics
                .get(&name)
                .is_none_or(|t| t.id != hosted_id.to_string());
            if !gone || !self.cluster.deleting.lock().insert(name.clone()) {
                continue;
            }
            let Some(broker) = self.cluster.broker.get().and_then(Weak::upgrade) else {
                self.cluster.deleting.lock().remove(&name);
                continue;
            };
            tokio::spawn(async move {
                broker.replicas.delete_topic(&name, Some(hosted_id)).await;
                broker.metrics.remove_topic(&name);
                broker.cluster.deleting.lock().remove(&name);
                broker.apply_metadata();
            });
        }
    }

    /// This broker now leads `topic`-`index`: when it is a partition of an internal topic, the
    /// groups or transactions it holds are loaded from the replica (which has everything the
    /// previous leader committed).
    /// Returns the number of records loaded, or None when there was nothing to take over (or
    /// loading failed, which is logged). Until it returns, requests for the partition's keys
    /// are answered COORDINATOR_LOAD_IN_PROGRESS ([`Self::coordinator_error`]).
    fn take_over_coordination(&self, topic: &str, index: i32, leader_epoch: i32) -> Option<usize> {
        use crate::group::offsets_topic::OFFSETS_TOPIC;
        use crate::txn::TXN_STATE_TOPIC;
        let loaded = match topic {
            OFFSETS_TOPIC => self.load_offsets(Some(index)),
            TXN_STATE_TOPIC => self.load_txn_state(Some(index)),
            _ => return None,
        };
        match loaded {
            Ok(records) => {
                self.cluster
                    .set_coordinator_loaded(topic, index, leader_epoch);
                debug!(%topic, partition = index, records, "took over coordination");
                Some(records)
            }
            Err(e) => {
                warn!(%topic, partition = index, error = %e, "loading coordinator state failed");
                None
            }
        }
    }

    /// The coordinators have replayed every hosted partition of the internal topics (or
    /// failed to, which is logged): from now on a partition this broker comes to lead is
    /// replayed when it does, and the ones it leads already are ready. Taken under the lock
    /// that [`Self::apply_metadata`] holds while it changes leadership, so each led partition
    /// is marked either here or by its own take-over.
    pub(crate) fn coordinators_loaded(&self) {
        use crate::group::offsets_topic::OFFSETS_TOPIC;
        use crate::txn::TXN_STATE_TOPIC;
        let _leadership = self.cluster.applied_configs.lock();
        self.cluster.loaded.store(true, Ordering::Release);
        for partition in self.replicas.all_partitions() {
            let internal = partition.topic == OFFSETS_TOPIC || partition.topic == TXN_STATE_TOPIC;
            if internal && partition.is_leader() {
                self.cluster.set_coordinator_loaded(
                    &partition.topic,
                    partition.index,
                    partition.leader_epoch().0,
                );
            }
        }
    }

    /// Whether this broker coordinates `key` (a group id or transactional id) of an internal
    /// topic: it leads the partition the key hashes to and has loaded it.
    pub(crate) fn coordinates(&self, topic: &str, key: &str) -> bool {
        self.metadata.topic(topic).is_some() && self.coordinator_error(topic, key).is_none()
    }

    /// Why this broker cannot act as the coordinator of `key` (a group id or transactional id)
    /// of internal topic `topic` now, or None when it can. NOT_COORDINATOR: the metadata names
    /// another leader of the key's partition (the client finds the coordinator again).
    /// COORDINATOR_LOAD_IN_PROGRESS (retried at this broker): the metadata names this broker,
    /// which has not taken the partition over yet; or, in a cluster, this broker does not know
    /// the topic yet — another broker has just created it and named this one, and the metadata
    /// has not reached here (the creation is asked for again, in case nobody has). On a single
    /// node a missing topic is created by the first write, and the node serves until then.
    pub(crate) fn coordinator_error(&self, topic: &str, key: &str) -> Option<ResponseError> {
        let state = self.metadata.state();
        let Some(meta) = state.topics.get(topic) else {
            if self.is_single_voter() {
                return None;
            }
            self.create_internal_topic_soon(topic);
            return Some(ResponseError::CoordinatorLoadInProgress);
        };
        let index = crate::group::offsets_topic::partition_for(key, meta.partitions);
        let leader = meta.partition_states.get(&index).and_then(|p| p.leader);
        if leader != Some(self.me()) {
            return Some(ResponseError::NotCoordinator);
        }
        let loaded = self.cluster.loaded.load(Ordering::Acquire)
            && self.replicas.partition(topic, index).is_some_and(|p| {
                p.is_leader()
                    && self
                        .cluster
                        .coordinator_loaded(topic, index, p.leader_epoch().0)
            });
        (!loaded).then_some(ResponseError::CoordinatorLoadInProgress)
    }

    /// Asks the quorum to create internal topic `topic` (in the background, one request at a
    /// time), for a group or transaction request that came before any FindCoordinator did.
    fn create_internal_topic_soon(&self, topic: &str) {
        let Some(broker) = self.cluster.broker.get().and_then(Weak::upgrade) else {
            return;
        };
        if !self
            .cluster
            .creating_internal
            .lock()
            .insert(topic.to_owned())
        {
            return;
        }
        let topic = topic.to_owned();
        tokio::spawn(async move {
            let created = match topic.as_str() {
                crate::txn::TXN_STATE_TOPIC => {
                    crate::txn::driver::ensure_state_topic(&broker).await
                }
                _ => broker.ensure_offsets_topic().await,
            };
            if let Err(e) = created {
                debug!(%topic, error = %e, "creating the internal topic failed; asked again by the next request");
            }
            broker.cluster.creating_internal.lock().remove(&topic);
        });
    }

    /// The hosted replica of `topic`-`index`, or the error for a request naming it
    /// ([`Self::not_hosted_error`]).
    pub(crate) fn hosted_partition(
        &self,
        topic: &str,
        index: i32,
    ) -> Result<Arc<Partition>, ResponseError> {
        self.replicas
            .partition(topic, index)
            .ok_or_else(|| self.not_hosted_error(topic, index))
    }

    /// The error for a request naming a partition this broker does not host: KAFKA_STORAGE_ERROR
    /// when its log could not be opened here (offline); NOT_LEADER_OR_FOLLOWER
    /// when the partition exists elsewhere (the client's metadata is stale, e.g. after a
    /// reassignment moved it away; the client refreshes and retries), else
    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub(crate) fn not_hosted_error(&self, topic: &str, index: i32) -> ResponseError {
        if self.replicas.is_offline(topic, index) {
            // Kafka's answer for a replica in an offline log directory.
            return ResponseError::KafkaStorageError;
        }
        if self.metadata.state().partition(topic, index).is_some() {
            ResponseError::NotLeaderOrFollower
        } else {
            ResponseError::UnknownTopicOrPartition
        }
    }

    /// A partition leader asks the controller to change the ISR to `isr` (AlterPartition), at
    /// leader epoch `leader_epoch`. One proposal per partition at a time; the metadata's
    /// partition-epoch check refuses a stale one.
    pub(crate) fn request_isr_change(
        &self,
        partition: &Partition,
        isr: Vec<i32>,
        leader_epoch: i32,
    ) {
        let Some((broker, key)) = self.claim_partition_change(partition) else {
            return;
        };
        tokio::spawn(async move {
            let (topic, index) = key.clone();
            let Some(current) = broker.metadata.partition_state(&topic, index) else {
                broker.cluster.isr_pending.lock().remove(&key);
                return;
            };
            let record = MetadataRecord::PartitionChange {
                topic: topic.clone(),
                partition: index,
                partition_epoch: current.partition_epoch,
                leader_epoch: Some(leader_epoch),
                leader: None,
                isr: Some(isr.iter().map(|r| NodeId(*r as u64)).collect()),
                replicas: None,
                adding: None,
                removing: None,
            };
            // Until a definite answer: a proposal whose answer was lost may still commit, so
            // the leader must not forget it (its follower keeps counting for the HW). A retry of
            // one that did commit is refused as stale, which is an answer too.
            loop {
                match broker.metadata.propose(record.clone()).await {
                    Ok(()) => info!(%topic, partition = index, ?isr, "ISR changed"),
                    Err(MetadataError::Propose(e)) => {
                        let still_leading = broker
                            .replicas
                            .partition(&topic, index)
                            .is_some_and(|p| p.is_leader() && p.leader_epoch().0 == leader_epoch);
                        if still_leading && !broker.is_shutting_down() {
                            debug!(%topic, partition = index, error = %e, "ISR change unanswered; proposing it again");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    }
                    Err(e) => {
                        debug!(%topic, partition = index, error = %e, "ISR change not applied")
                    }
                }
                break;
            }
            // The ISR as committed first, then pending additions stop counting (in this order,
            // so a follower being added holds the high watermark until it is a member).
            broker.apply_metadata();
            if let Some(partition) = broker.replicas.partition(&topic, index) {
                partition.isr_change_settled();
            }
            broker.cluster.isr_pending.lock().remove(&key);
        });
    }

    /// Stops following the cluster (shutdown): replica fetchers end, the quorum member stops.
    pub(crate) async fn leave_cluster(&self) {
        self.cluster.fetchers.stop_all();
        self.metadata.shutdown().await;
    }
}

/// `HOST:PORT` of a broker's first listener.
fn broker_address(state: &MetadataState, id: NodeId) -> Option<String> {
    let broker = state.brokers.get(&id)?;
    let listener = broker.listeners.first()?;
    Some(format!("{}:{}", listener.host, listener.port))
}

/// The background tasks of cluster membership; each stops at shutdown.
pub(crate) fn spawn(broker: &Arc<Broker>) -> Vec<tokio::task::JoinHandle<()>> {
    let _ = broker.cluster.broker.set(Arc::downgrade(broker));
    vec![
        tokio::spawn(follow_metadata(broker.clone())),
        tokio::spawn(heartbeats(broker.clone())),
        tokio::spawn(controller_loop(broker.clone())),
        tokio::spawn(isr_shrinker(broker.clone())),
    ]
}

/// Joins (in a cluster: once a quorum has formed), then applies every metadata change.
async fn follow_metadata(broker: Arc<Broker>) {
    let mut shutdown = broker.shutdown_signal();
    let started = Instant::now();
    while !broker.cluster.joined.load(Ordering::Acquire) {
        match broker.join_cluster().await {
            Ok(()) => {
                info!("joined the cluster");
                if let Err(e) = broker.load_coordinators(started) {
                    warn!(error = %e, "loading the group and transaction coordinators failed");
                    broker.coordinators_loaded();
                }
            }
            Err(e) => {
                debug!(error = %e, "not joined yet");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = crate::broker::stopped(&mut shutdown) => return,
                }
            }
        }
    }
    let mut watch = broker.metadata.node().subscribe();
    loop {
        broker.apply_metadata();
        tokio::select! {
            more = watch.changed() => if !more { return },
            _ = crate::broker::stopped(&mut shutdown) => return,
        }
        // Let a burst of records land before the next pass.
        let _ = watch.state();
    }
}

/// Tells the active controller this broker is alive, every `broker.heartbeat.interval.ms`.
async fn heartbeats(broker: Arc<Broker>) {
    let mut shutdown = broker.shutdown_signal();
    let mut tick = tokio::time::interval(Duration::from_millis(
        broker.config.broker_heartbeat_interval_ms.max(10),
    ));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::broker::stopped(&mut shutdown) => return,
        }
        if let Err(e) = broker.metadata.node().heartbeat().await {
            debug!(error = %e, "heartbeat not delivered");
        }
    }
}

/// On the quorum leader: fences brokers silent for `broker.session.timeout.ms`, unfences those
/// heartbeating again, completes reassignments whose new replicas are in sync, elects leaders
/// for leaderless partitions, restores preferred leaders.
async fn controller_loop(broker: Arc<Broker>) {
    let mut shutdown = broker.shutdown_signal();
    let mut tick = tokio::time::interval(CONTROLLER_TICK);
    let mut last_rebalance = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::broker::stopped(&mut shutdown) => return,
        }
        if !broker.cluster.joined.load(Ordering::Acquire) {
            continue;
        }
        let Some(heartbeats) = broker.metadata.node().heartbeats() else {
            continue;
        };
        let rebalance = broker.config.auto_leader_rebalance_enable
            && last_rebalance.elapsed() >= REBALANCE_EVERY;
        if rebalance {
            last_rebalance = Instant::now();
        }
        controller_pass(&broker, &heartbeats, rebalance).await;
    }
}

/// One round of the controller's duties (see [`controller_loop`]).
async fn controller_pass(broker: &Broker, heartbeats: &BTreeMap<NodeId, Instant>, rebalance: bool) {
    let session = Duration::from_millis(broker.config.broker_session_timeout_ms);
    let unclean = broker.config.unclean_leader_election_enable;
    let state = broker.metadata.state();
    let me = broker.me();
    // The controller is alive by definition: it is running this.
    let alive =
        |id: &NodeId| *id == me || heartbeats.get(id).is_some_and(|t| t.elapsed() < session);
    let mut batches: Vec<Vec<MetadataRecord>> = Vec::new();
    for registration in state.brokers.values() {
        let id = registration.id;
        if registration.fenced && alive(&id) {
            info!(broker = %id, "unfencing broker: heartbeats resumed");
            batches.push(controller::unfence_broker(&state, id));
        } else if !registration.fenced && !alive(&id) {
            warn!(broker = %id, "fencing broker: no heartbeat within broker.session.timeout.ms");
            batches.push(controller::fence_broker(&state, id, unclean));
        }
    }
    if batches.is_empty() {
        let reassigned = controller::complete_reassignments(&state);
        if !reassigned.is_empty() {
            info!(
                partitions = reassigned.len(),
                "completing partition reassignments: new replicas are in sync"
            );
            batches.push(reassigned);
        }
        let leaderless = controller::elect_leaderless(&state, unclean);
        if !leaderless.is_empty() {
            batches.push(leaderless);
        } else if rebalance {
            let preferred = controller::preferred_leaders(&state);
            if !preferred.is_empty() {
                info!(
                    partitions = preferred.len(),
                    "moving leadership back to preferred replicas"
                );
                batches.push(preferred);
            }
        }
    }
    for records in batches {
        // One record at a time: each carries the partition epoch it was computed from, so a
        // change that raced another is refused alone instead of taking the batch with it.
        for record in records {
            if let Err(e) = broker.metadata.propose(record).await {
                debug!(error = %e, "controller change not applied");
            }
        }
    }
}

/// On partition leaders: followers that stopped keeping up leave the ISR
/// (`replica.lag.time.max.ms`).
async fn isr_shrinker(broker: Arc<Broker>) {
    let mut shutdown = broker.shutdown_signal();
    let lag_max = broker.config.replica_lag_time_max_ms.max(10);
    let mut tick = tokio::time::interval(Duration::from_millis((lag_max / 2).max(10)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::broker::stopped(&mut shutdown) => return,
        }
        let now_ms = now().0;
        for partition in broker.replicas.all_partitions() {
            if let Some((isr, epoch)) = partition.isr_to_shrink(now_ms, lag_max as i64) {
                info!(topic = %partition.topic, partition = partition.index, ?isr, "shrinking ISR: followers lagging");
                broker.request_isr_change(&partition, isr, epoch);
            }
        }
    }
}
