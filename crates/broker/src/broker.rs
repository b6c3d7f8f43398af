//! The broker's shared state: config, metadata, hosted partitions, and the shutdown signal; plus the
//! topic operations that touch both metadata and logs (create, auto-create, delete).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sluice_log::{LogDir, OpenError, Timestamp};
use sluice_meta::membership::ClusterSecret;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::BrokerConfig;
use crate::group::offsets_topic::{self, OffsetsRecord, OFFSETS_TOPIC};
use crate::group::{CommittedOffset, GroupConfig, GroupCoordinator};
use crate::metadata::{MetadataError, MetadataStore, TopicMeta};
use crate::metrics::Metrics;
use crate::replica_manager::ReplicaManager;
use crate::topic_config::{self, TopicConfigError};
use crate::txn::{TxnConfig, TxnCoordinator, TXN_STATE_TOPIC};

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("cannot load committed offsets from __consumer_offsets: {0}")]
    OffsetsLoad(String),
    #[error("cannot load transactions from __transaction_state: {0}")]
    TxnStateLoad(String),
    #[error("cannot join the cluster: {0}")]
    Join(String),
    #[error(transparent)]
    ClusterSecret(#[from] crate::auth::secret::ClusterSecretError),
    #[error("topic `{topic}` has a config Sluice cannot use: {source}")]
    TopicConfig {
        topic: String,
        #[source]
        source: TopicConfigError,
    },
}

/// Why a topic's configs could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum AlterConfigsError {
    #[error("topic `{0}` does not exist")]
    UnknownTopic(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

impl AlterConfigsError {
    /// The Kafka error code answering this failure.
    pub fn code(&self) -> sluice_protocol::error::ResponseError {
        use sluice_protocol::error::ResponseError;
        match self {
            AlterConfigsError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
            AlterConfigsError::Invalid(_) => ResponseError::InvalidConfig,
            AlterConfigsError::Metadata(_) => ResponseError::KafkaStorageError,
        }
    }
}

/// Why a topic could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateTopicError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Config(#[from] TopicConfigError),
    #[error("cannot create the topic's logs: {0}")]
    Storage(#[from] OpenError),
}

/// Everything a request handler can reach.
#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub metadata: MetadataStore,
    pub replicas: ReplicaManager,
    /// Consumer groups and their committed offsets.
    pub groups: GroupCoordinator,
    /// Transactional ids and their transactions.
    pub txns: TxnCoordinator,
    /// Replica fetchers, pending ISR changes and other state of following the metadata.
    pub(crate) cluster: crate::cluster::ClusterState,
    /// Request, traffic and fsync metrics (see [`crate::metrics::render`]).
    pub metrics: Metrics,
    /// What this node proves cluster membership with, and other nodes must prove they hold
    /// (see [`crate::auth`]).
    pub(crate) cluster_secret: ClusterSecret,
    shutdown: watch::Sender<bool>,
    /// Held while records for `__consumer_offsets` are made and appended (never across an
    /// await): the log's order is then the order the records were made in, so a snapshot of a
    /// group's older state never lands after a newer one (the last record of a key wins).
    group_record_order: parking_lot::Mutex<()>,
}

/// A rebalance whose stored assignment has not been reported yet: dropped before
/// [`Broker::store_group_assignment`] reports it, it ends the rebalance with
/// COORDINATOR_NOT_AVAILABLE, so the members rejoin instead of waiting for ever.
struct UnfinishedSync<'a> {
    broker: &'a Broker,
    group: &'a str,
    /// [`NO_GENERATION`] once reported.
    generation: i32,
}

/// No generation: nothing left to report.
const NO_GENERATION: i32 = -1;

impl Drop for UnfinishedSync<'_> {
    fn drop(&mut self) {
        if self.generation != NO_GENERATION {
            self.broker.groups.complete_sync(
                self.group,
                self.generation,
                Some(sluice_protocol::error::ResponseError::CoordinatorNotAvailable),
                std::time::Instant::now(),
            );
        }
    }
}

/// Wall-clock now in Kafka's timestamp unit.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Timestamp(ms)
}

/// Completes once `signal` (from [`Broker::shutdown_signal`]) turns true.
pub async fn stopped(signal: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, so callers' futures stay Send.
    let _ = signal.wait_for(|stop| *stop).await;
}

impl Broker {
    /// Locks the data directory, opens the metadata quorum (one voter unless
    /// `controller.quorum.voters` names others), registers this broker, and opens the logs of
    /// the partitions it hosts (recovering them when the previous process did not shut down
    /// cleanly). With one voter everything is in place when this returns; in a cluster the
    /// registration and first metadata follow in the background once a quorum forms.
    pub async fn open(config: BrokerConfig) -> Result<Arc<Broker>, StartError> {
        let started = std::time::Instant::now();
        let log_dir = LogDir::open(&config.data_dir)?;
        let clean = log_dir.was_clean();
        let cluster_secret = crate::auth::secret::load(&config)?;
        let node = crate::cluster::open_meta_node(&config, &cluster_secret).await?;
        let metadata = MetadataStore::open(node, &config.data_dir, &config.cluster_id).await?;
        let metrics = Metrics::new();
        let replicas = ReplicaManager::new(
            log_dir,
            metrics.fsync_duration(),
            metrics.damaged_logs(),
            config.node_id,
        );
        if !clean {
            info!("previous shutdown was not clean; recovering partition logs");
        }
        let (shutdown, _) = watch::channel(false);
        let groups = GroupCoordinator::new(GroupConfig {
            initial_rebalance_delay: std::time::Duration::from_millis(
                config.group_initial_rebalance_delay_ms,
            ),
            min_session_timeout_ms: config.group_min_session_timeout_ms,
            max_session_timeout_ms: config.group_max_session_timeout_ms,
        });
        let txns = TxnCoordinator::new(TxnConfig {
            max_timeout_ms: config.txn_max_timeout_ms,
            id_expiration_ms: config.txn_id_expiration_ms,
        });
        let broker = Arc::new(Broker {
            config,
            metadata,
            replicas,
            groups,
            txns,
            metrics,
            cluster_secret,
            shutdown,
            cluster: crate::cluster::ClusterState::default(),
            group_record_order: parking_lot::Mutex::new(()),
        });
        if broker.is_single_voter() {
            broker.join_cluster().await?;
            if let Ok(on_disk) = broker.replicas.log_dir().partitions() {
                for (topic, partition) in on_disk {
                    if broker.metadata.topic(&topic).is_none() {
                        warn!(%topic, partition, "partition directory has no topic in the metadata; ignoring it");
                    }
                }
            }
            broker.load_coordinators(started)?;
        }
        Ok(broker)
    }

    /// Replays every record of an internal topic, partition by partition in offset order, into
    /// `visit(partition index, record)`. A batch whose records do not read (its count disagrees
    /// with its bytes, a codec refuses it, …) is skipped whole with a warning: none of its
    /// records is applied.
    fn replay(
        &self,
        topic: &str,
        only: Option<i32>,
        mut visit: impl FnMut(i32, ReplayRecord),
    ) -> Result<(), String> {
        use sluice_protocol::records::{Batches, RecordsError};
        let Some(partitions) = self.replicas.topic(topic) else {
            return Ok(());
        };
        for partition in partitions.iter() {
            if only.is_some_and(|i| i != partition.index) {
                continue;
            }
            let mut next = partition.log_start_offset();
            let end = partition.log_end_offset();
            while next < end {
                let read = partition
                    .read(next, 1 << 20, true)
                    .map_err(|e| e.to_string())?;
                let mut batches = Batches::new(&read.records);
                let before = next;
                for batch in batches.by_ref() {
                    let batch = match batch {
                        Ok(batch) => batch,
                        Err(e) => {
                            warn!(%topic, partition = partition.index, offset = next.0, error = %e, "stopping the replay at an unreadable batch header");
                            break;
                        }
                    };
                    let header = *batch.header();
                    next = sluice_log::Offset(header.last_offset().saturating_add(1));
                    let mut records = Vec::new();
                    let walked = batch.for_each_record(sluice_log::DECOMPRESSED_LIMIT, |r| {
                        records.push(ReplayRecord {
                            control: header.is_control(),
                            transactional: header.is_transactional(),
                            producer_id: header.producer_id,
                            key: r.key.map(Bytes::copy_from_slice),
                            value: r.value.map(Bytes::copy_from_slice),
                        });
                        Ok::<_, RecordsError>(())
                    });
                    match walked {
                        Ok(()) => records
                            .into_iter()
                            .for_each(|record| visit(partition.index, record)),
                        Err(e) => warn!(
                            %topic,
                            partition = partition.index,
                            offset = header.base_offset,
                            error = %e,
                            "skipping a batch whose records do not read"
                        ),
                    }
                }
                if next == before {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Replays `__consumer_offsets` into the group coordinator. Offsets committed in a
    /// transaction apply at its commit marker; those of a still open transaction stay pending.
    /// Returns the number of records replayed.
    pub(crate) fn load_offsets(&self, only: Option<i32>) -> Result<usize, StartError> {
        let mut loaded = 0usize;
        // (partition, producer id) → records of its open transaction.
        let mut open: HashMap<(i32, i64), Vec<OffsetsRecord>> = HashMap::new();
        let mut apply = |record: OffsetsRecord| match record {
            OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => self.groups.load_offset(&group, (topic, partition), value),
            OffsetsRecord::Group { group, value } => {
                self.groups
                    .load_group(&group, value, std::time::Instant::now())
            }
        };
        self.replay(OFFSETS_TOPIC, only, |index, record| {
            if record.control {
                let commit = marker_is_commit(record.key.as_deref());
                let records = open.remove(&(index, record.producer_id));
                if commit {
                    records.into_iter().flatten().for_each(&mut apply);
                }
                return;
            }
            let Some(decoded) = offsets_topic::decode(record.key, record.value) else {
                return;
            };
            loaded += 1;
            if record.transactional {
                open.entry((index, record.producer_id))
                    .or_default()
                    .push(decoded);
            } else {
                apply(decoded);
            }
        })
        .map_err(StartError::OffsetsLoad)?;
        for ((index, producer_id), records) in open {
            for record in records {
                if let OffsetsRecord::Offset {
                    group,
                    topic,
                    partition,
                    value: Some(value),
                } = record
                {
                    self.groups.add_txn_offsets(
                        producer_id,
                        index,
                        &group,
                        vec![((topic, partition), value)],
                    );
                }
            }
        }
        debug!(records = loaded, partition = ?only, "loaded committed offsets");
        Ok(loaded)
    }

    /// Replays `__transaction_state` into the transaction coordinator. Transactions found
    /// prepared are completed by the coordinator's first tick; ongoing ones stay open until their
    /// producer ends them or their timeout aborts them (Kafka's recovery).
    /// Returns the number of records replayed.
    pub(crate) fn load_txn_state(&self, only: Option<i32>) -> Result<usize, StartError> {
        let mut loaded = 0usize;
        self.replay(TXN_STATE_TOPIC, only, |_, record| {
            if let Some((id, value)) = crate::txn::state_topic::decode(record.key, record.value) {
                self.txns.load(&id, value);
                loaded += 1;
            }
        })
        .map_err(StartError::TxnStateLoad)?;
        debug!(records = loaded, partition = ?only, "loaded transaction state");
        Ok(loaded)
    }

    /// Loads the group and transaction coordinators from every hosted partition of
    /// `__consumer_offsets` and `__transaction_state`, once this broker knows its partitions;
    /// then logs, in one line, what this broker serves.
    pub(crate) fn load_coordinators(&self, started: std::time::Instant) -> Result<(), StartError> {
        let offset_records = self.load_offsets(None)?;
        let transaction_records = self.load_txn_state(None)?;
        self.coordinators_loaded();
        info!(
            topics = self.replicas.topic_names().len(),
            partitions = self.replicas.all_partitions().len(),
            offset_records,
            transaction_records,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partition logs open"
        );
        Ok(())
    }

    /// Creates `__consumer_offsets` on first use, as Kafka does.
    pub async fn ensure_offsets_topic(&self) -> Result<(), CreateTopicError> {
        let configs = BTreeMap::from([
            ("cleanup.policy".to_owned(), "compact".to_owned()),
            ("retention.ms".to_owned(), "-1".to_owned()),
            ("segment.bytes".to_owned(), (100 * 1024 * 1024).to_string()),
        ]);
        self.ensure_internal_topic(
            OFFSETS_TOPIC,
            self.config.offsets_topic_num_partitions,
            self.config.offsets_topic_replication_factor,
            configs,
        )
        .await
    }

    /// Creates an internal topic unless it exists (another connection may create it first),
    /// with `replication_factor` replicas or as many as there are live brokers if fewer.
    pub async fn ensure_internal_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    ) -> Result<(), CreateTopicError> {
        if self.metadata.topic(name).is_some() {
            return Ok(());
        }
        let live = self.metadata.state().live_brokers().count().max(1) as i32;
        let rf = i32::from(replication_factor).clamp(1, live);
        match self.create_topic(name, partitions, rf, configs).await {
            Ok(_) | Err(CreateTopicError::Metadata(MetadataError::TopicExists(_))) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Appends committed offsets of `group` to its `__consumer_offsets` partition and waits until
    /// they are durable (fsynced when `log.flush.on.ack` is on). Returns where the write ended
    /// in the log: the order in which the cache takes them ([`GroupCoordinator::store_offsets`]).
    pub async fn persist_offsets(
        &self,
        group: &str,
        offsets: &[((String, i32), CommittedOffset)],
    ) -> Result<sluice_log::Offset, String> {
        let records = offsets_topic::offset_records(group, offsets);
        self.persist_records_with(group, || Some(records))
            .await?
            .ok_or_else(|| "no offsets to write".to_owned())
    }

    /// Expires committed offsets of empty groups past `offsets.retention.minutes`.
    pub async fn expire_offsets(&self) {
        let expired = self
            .groups
            .expire_offsets(now().0, self.config.offsets_retention_ms);
        for (group, keys) in expired {
            info!(%group, offsets = keys.len(), "committed offsets expired");
            if let Err(e) = self.persist_offset_deletions(&group, &keys).await {
                warn!(%group, error = %e, "writing tombstones for expired offsets failed");
            }
        }
    }

    /// Persists memberships that changed (emptied groups, a static member's new id), so a
    /// restarted broker knows its groups' members. (A new generation is stored before its
    /// SyncGroup is answered: [`Broker::store_group_assignment`].)
    pub async fn persist_group_snapshots(&self) {
        for group in self.groups.changed_memberships() {
            let written = self
                .persist_records_with(&group, || {
                    let snapshot = self.groups.take_snapshot(&group, now().0)?;
                    Some(vec![(
                        offsets_topic::group_key(&group),
                        Some(offsets_topic::group_value(&snapshot)),
                    )])
                })
                .await;
            if let Err(e) = written {
                warn!(%group, error = %e, "persisting group membership failed");
            }
        }
    }

    /// Stores the membership and assignment a leader's SyncGroup completed, then completes the
    /// rebalance ([`GroupCoordinator::complete_sync`]). Kafka writes the group before it answers
    /// SyncGroup: once a member has its assignment, a broker restarted even by kill -9 knows the
    /// group, and its members carry on without a rebalance.
    pub async fn store_group_assignment(&self, group: &str, generation: i32) {
        // The write runs in the leader's SyncGroup reply: if that is dropped (its connection
        // closed) before the write ends, the rebalance still ends, with an error.
        let mut unfinished = UnfinishedSync {
            broker: self,
            group,
            generation,
        };
        let stored = self
            .persist_records_with(group, || {
                let snapshot = self
                    .groups
                    .assignment_to_store(group, generation, now().0)?;
                Some(vec![(
                    offsets_topic::group_key(group),
                    Some(offsets_topic::group_value(&snapshot)),
                )])
            })
            .await;
        let error = match stored {
            Ok(_) => None,
            Err(e) => {
                warn!(%group, generation, error = %e, "storing the group's assignment failed");
                Some(sluice_protocol::error::ResponseError::CoordinatorNotAvailable)
            }
        };
        self.groups
            .complete_sync(group, generation, error, std::time::Instant::now());
        unfinished.generation = NO_GENERATION;
    }

    /// Writes the tombstones of a deleted group: its membership and its committed offsets.
    pub async fn persist_group_deletion(
        &self,
        group: &str,
        keys: &[(String, i32)],
    ) -> Result<(), String> {
        let mut records: Vec<(bytes::Bytes, Option<bytes::Bytes>)> =
            vec![(offsets_topic::group_key(group), None)];
        records.extend(
            keys.iter()
                .map(|(topic, p)| (offsets_topic::offset_key(group, topic, *p), None)),
        );
        self.persist_records(group, records).await
    }

    /// Writes tombstones for deleted or expired committed offsets of `group`.
    pub async fn persist_offset_deletions(
        &self,
        group: &str,
        keys: &[(String, i32)],
    ) -> Result<(), String> {
        if keys.is_empty() {
            return Ok(());
        }
        let records = keys
            .iter()
            .map(|(topic, p)| (offsets_topic::offset_key(group, topic, *p), None))
            .collect();
        self.persist_records(group, records).await
    }

    async fn persist_records(
        &self,
        group: &str,
        records: Vec<(bytes::Bytes, Option<bytes::Bytes>)>,
    ) -> Result<(), String> {
        self.persist_records_with(group, || Some(records))
            .await
            .map(|_| ())
    }

    /// Appends the records `make` returns (None: nothing to write) to `group`'s partition of
    /// `__consumer_offsets`, making and appending them under `group_record_order`, and waits
    /// until they are committed. Returns the offset of the last record written, None when
    /// nothing was.
    async fn persist_records_with(
        &self,
        group: &str,
        make: impl FnOnce() -> Option<Vec<(bytes::Bytes, Option<bytes::Bytes>)>>,
    ) -> Result<Option<sluice_log::Offset>, String> {
        self.ensure_offsets_topic()
            .await
            .map_err(|e| e.to_string())?;
        let count = self
            .metadata
            .topic(OFFSETS_TOPIC)
            .map_or(0, |t| t.partitions);
        let index = offsets_topic::partition_for(group, count.max(1));
        let partition = self
            .replicas
            .partition(OFFSETS_TOPIC, index)
            .filter(|p| p.is_leader())
            .ok_or_else(|| format!("this broker does not lead {OFFSETS_TOPIC}-{index}"))?;
        let last_offset = {
            let _order = self.group_record_order.lock();
            let Some(records) = make() else {
                return Ok(None);
            };
            let now = now();
            partition
                .append(offsets_topic::batch(records, now.0), now)
                .map_err(|e| e.to_string())?
                .last_offset
        };
        self.wait_committed(&partition, last_offset).await?;
        Ok(Some(last_offset))
    }

    /// Waits until a write of an internal topic is durable here (when `log.flush.on.ack`) and
    /// on every in-sync replica, as an acks=all produce would.
    pub(crate) async fn wait_committed(
        &self,
        partition: &crate::partition::Partition,
        last: sluice_log::Offset,
    ) -> Result<(), String> {
        if self.config.flush_on_ack {
            partition
                .wait_durable(last)
                .await
                .map_err(|e| e.to_string())?;
        }
        let timeout = std::time::Duration::from_millis(self.config.replica_lag_time_max_ms);
        match tokio::time::timeout(timeout, partition.wait_replicated(last)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the in-sync replicas did not acknowledge in time".to_owned()),
        }
    }

    /// Creates a topic: commits it to the metadata (replicas placed over the live brokers),
    /// then opens this broker's replicas of it at once, so the caller can use them.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, CreateTopicError> {
        topic_config::log_config(&self.config.log_defaults, &configs)?;
        let topic = self
            .metadata
            .create_topic(name, partitions, replication_factor, configs)
            .await?;
        self.apply_metadata();
        info!(
            topic = name,
            partitions, replication_factor, "created topic"
        );
        Ok(topic)
    }

    /// Creates a topic with explicit replica assignments (CreateTopics `assignments`).
    pub async fn create_topic_assigned(
        &self,
        name: &str,
        assignments: Vec<Vec<sluice_meta::NodeId>>,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, CreateTopicError> {
        topic_config::log_config(&self.config.log_defaults, &configs)?;
        let partitions = assignments.len();
        let topic = self
            .metadata
            .create_topic_assigned(name, assignments, configs)
            .await?;
        self.apply_metadata();
        info!(
            topic = name,
            partitions, "created topic with explicit assignments"
        );
        Ok(topic)
    }

    /// The replication factor of a CreateTopics that asks for -1.
    pub fn default_replication_factor(&self) -> i32 {
        i32::from(self.config.default_replication_factor)
    }

    /// Changes a topic's config overrides to what `change` makes of the current ones: validated,
    /// persisted, then applied to every partition at once. `validate_only` stops after checking.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        change: impl FnOnce(
            &BTreeMap<String, String>,
        ) -> Result<BTreeMap<String, String>, AlterConfigsError>,
        validate_only: bool,
    ) -> Result<(), AlterConfigsError> {
        let topic = self
            .metadata
            .topic(name)
            .ok_or_else(|| AlterConfigsError::UnknownTopic(name.to_owned()))?;
        let configs = change(&topic.configs)?;
        let log_config = topic_config::log_config(&self.config.log_defaults, &configs)
            .map_err(|e| AlterConfigsError::Invalid(e.to_string()))?;
        crate::internal_topics::check_configs(name, &configs, &log_config)
            .map_err(AlterConfigsError::Invalid)?;
        if validate_only {
            return Ok(());
        }
        self.metadata
            .set_topic_configs(name, configs.clone())
            .await?
            .ok_or_else(|| AlterConfigsError::UnknownTopic(name.to_owned()))?;
        if let Some(partitions) = self.replicas.topic(name) {
            for partition in partitions.iter() {
                partition.set_config(log_config.clone());
            }
        }
        info!(topic = name, ?configs, "topic configs changed");
        Ok(())
    }

    /// CreatePartitions: grows `name` to `count` partitions (metadata first, then the new logs).
    /// Errors carry Kafka's code and a message.
    pub async fn add_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), (sluice_protocol::error::ResponseError, String)> {
        use sluice_protocol::error::ResponseError;
        let topic = self.metadata.topic(name).ok_or_else(|| {
            (
                ResponseError::UnknownTopicOrPartition,
                format!("topic `{name}` does not exist"),
            )
        })?;
        if count <= topic.partitions || count > crate::metadata::PARTITIONS_MAX {
            return Err((
                ResponseError::InvalidPartitions,
                format!(
                    "topic `{name}` has {} partitions; the new count {count} must be larger and at most {}",
                    topic.partitions,
                    crate::metadata::PARTITIONS_MAX
                ),
            ));
        }
        if validate_only {
            return Ok(());
        }
        self.metadata
            .add_partitions(name, count)
            .await
            .map_err(|e| (crate::errors::metadata_error(&e), e.to_string()))?;
        self.apply_metadata();
        info!(topic = name, partitions = count, "added partitions");
        Ok(())
    }

    /// The named topic, created with `num.partitions` when auto-creation is allowed and it is missing.
    pub async fn topic_or_create(
        &self,
        name: &str,
        allow_auto_create: bool,
    ) -> Result<Option<TopicMeta>, CreateTopicError> {
        if let Some(topic) = self.metadata.topic(name) {
            return Ok(Some(topic));
        }
        if !(allow_auto_create && self.config.auto_create_topics_enable) {
            return Ok(None);
        }
        // As Kafka's auto-creation does: an internal topic gets its own partition count and
        // configs, never a user topic's defaults (delete retention would lose its state).
        if name == OFFSETS_TOPIC {
            self.ensure_offsets_topic().await?;
            return Ok(self.metadata.topic(name));
        }
        if name == TXN_STATE_TOPIC {
            crate::txn::driver::ensure_state_topic(self).await?;
            return Ok(self.metadata.topic(name));
        }
        let rf = self
            .default_replication_factor()
            .min(self.metadata.state().live_brokers().count().max(1) as i32);
        match self
            .create_topic(name, self.config.num_partitions, rf, BTreeMap::new())
            .await
        {
            Ok(topic) => Ok(Some(topic)),
            // Another connection created it first.
            Err(CreateTopicError::Metadata(MetadataError::TopicExists(_))) => {
                Ok(self.metadata.topic(name))
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes a topic's metadata and then its logs.
    pub async fn delete_topic(&self, name: &str) -> Result<Option<TopicMeta>, MetadataError> {
        // Deleted here, before answering; the metadata follower must not race it (it would
        // answer before the directories are gone).
        self.cluster.deleting.lock().insert(name.to_owned());
        let removed = self.metadata.delete_topic(name).await;
        if matches!(removed, Ok(Some(_))) {
            self.replicas.delete_topic(name, None).await;
            self.metrics.remove_topic(name);
        }
        self.cluster.deleting.lock().remove(name);
        self.apply_metadata();
        removed
    }

    /// Asks every connection and background task to finish.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// A receiver that turns true when shutdown begins.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Whether a control record's key (version i16, type i16) is a commit marker.
/// One record of an internal topic being replayed, with what its batch says about it.
#[derive(Debug)]
struct ReplayRecord {
    control: bool,
    transactional: bool,
    producer_id: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

fn marker_is_commit(key: Option<&[u8]>) -> bool {
    matches!(key, Some([_, _, 0, 1, ..]))
}
