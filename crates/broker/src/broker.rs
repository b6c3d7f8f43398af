//! The broker's shared state: config, metadata, hosted partitions, and the shutdown signal; plus the
//! topic operations that touch both metadata and logs (create, auto-create, delete).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_log::{LogDir, OpenError, Timestamp};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::BrokerConfig;
use crate::metadata::{MetadataError, MetadataStore, TopicMeta};
use crate::replica_manager::ReplicaManager;
use crate::topic_config::{self, TopicConfigError};

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("topic `{topic}` has a config Sluice cannot use: {source}")]
    TopicConfig {
        topic: String,
        #[source]
        source: TopicConfigError,
    },
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
    shutdown: watch::Sender<bool>,
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
    /// Locks the data directory, loads metadata and opens every partition's log (recovering them
    /// when the previous process did not shut down cleanly).
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, StartError> {
        let log_dir = LogDir::open(&config.data_dir)?;
        let clean = log_dir.was_clean();
        let metadata = MetadataStore::open(&config.data_dir, &config.cluster_id)?;
        let replicas = ReplicaManager::new(log_dir);
        if !clean {
            info!("previous shutdown was not clean; recovering partition logs");
        }
        for topic in metadata.topics() {
            let log_config = topic_config::log_config(&config.log_defaults, &topic.configs)
                .map_err(|source| StartError::TopicConfig {
                    topic: topic.name.clone(),
                    source,
                })?;
            replicas.open_topic(&topic, &log_config)?;
        }
        if let Ok(on_disk) = replicas.log_dir().partitions() {
            for (topic, partition) in on_disk {
                if metadata.topic(&topic).is_none() {
                    warn!(%topic, partition, "partition directory has no topic in the metadata; ignoring it");
                }
            }
        }
        let (shutdown, _) = watch::channel(false);
        Ok(Arc::new(Broker {
            config,
            metadata,
            replicas,
            shutdown,
        }))
    }

    /// Creates a topic: metadata first, then its logs.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, CreateTopicError> {
        let log_config = topic_config::log_config(&self.config.log_defaults, &configs)?;
        let topic = self.metadata.create_topic(name, partitions, configs)?;
        self.replicas.open_topic(&topic, &log_config)?;
        info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// The named topic, created with `num.partitions` when auto-creation is allowed and it is missing.
    pub fn topic_or_create(
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
        match self.create_topic(name, self.config.num_partitions, BTreeMap::new()) {
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
        let removed = self.metadata.delete_topic(name)?;
        if removed.is_some() {
            self.replicas.delete_topic(name).await;
        }
        Ok(removed)
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
