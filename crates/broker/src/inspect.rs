//! Read-only views of the broker's state for the admin console and its JSON API: topics with
//! their partitions' offsets and sizes, topic configs with their sources, records decoded for
//! display ([`records`]) and consumer groups with lag ([`groups`]).
//!
//! Everything here reads the in-process [`Broker`] the way the request handlers do (metadata,
//! cached partition offsets, the group coordinator) and never changes it, except
//! [`records::append_record`], which appends one test record as a producer would.

pub mod groups;
pub mod records;

use serde::Serialize;

use crate::broker::Broker;
use crate::handlers::configs::{self, SOURCE_DEFAULT, SOURCE_DYNAMIC_TOPIC, SOURCE_STATIC_BROKER};
use crate::metadata::TopicMeta;

/// Why an inspection or a test append could not be done. The first variants are the caller's
/// mistakes (unknown names, offsets out of range, bad records); the rest are the broker's.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("topic `{0}` does not exist")]
    UnknownTopic(String),
    #[error("topic `{topic}` has no partition {partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("group `{0}` does not exist")]
    UnknownGroup(String),
    #[error("offset {requested} is outside partition {partition}'s range: log start offset {log_start_offset}, high watermark {high_watermark}")]
    OffsetOutOfRange {
        partition: i32,
        requested: i64,
        log_start_offset: i64,
        high_watermark: i64,
    },
    #[error("topic `{0}` is internal: only the broker writes to it")]
    InternalTopic(String),
    #[error("the record cannot be encoded: {0}")]
    Encode(String),
    #[error("the record was refused: {0}")]
    Refused(#[source] sluice_log::AppendError),
    #[error("reading the log failed: {0}")]
    Read(#[source] sluice_log::ReadError),
    #[error("the record was appended but not made durable: {0}")]
    Sync(#[source] crate::partition::SyncError),
    #[error("the broker is shutting down")]
    ShuttingDown,
}

impl InspectError {
    /// Whether the caller asked for something that cannot be (an HTTP 4xx), rather than the
    /// broker failing to do something it should (a 5xx).
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self,
            InspectError::UnknownTopic(_)
                | InspectError::UnknownPartition { .. }
                | InspectError::UnknownGroup(_)
                | InspectError::OffsetOutOfRange { .. }
                | InspectError::InternalTopic(_)
                | InspectError::Encode(_)
                | InspectError::Refused(
                    sluice_log::AppendError::TooLarge { .. }
                        | sluice_log::AppendError::Invalid(_)
                        | sluice_log::AppendError::Corrupt(_)
                )
        )
    }

    /// Whether the caller named something that does not exist (an HTTP 404).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            InspectError::UnknownTopic(_)
                | InspectError::UnknownPartition { .. }
                | InspectError::UnknownGroup(_)
        )
    }
}

/// One partition as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionView {
    pub partition: i32,
    /// The node leading the partition (this broker).
    pub leader: i32,
    pub leader_epoch: i32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
    pub replicas: usize,
    pub in_sync_replicas: usize,
    /// Why the partition is offline here (its log cannot be opened: damaged or unreadable
    /// files), if it is; its offsets and size are then 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offline: Option<String>,
}

/// One topic with its partitions and their totals.
#[derive(Debug, Clone, Serialize)]
pub struct TopicView {
    pub name: String,
    pub id: String,
    /// Internal topics (`__consumer_offsets`) are written by the broker only.
    pub internal: bool,
    pub partition_count: usize,
    pub size_bytes: u64,
    /// Offsets held, summed over partitions: high watermark minus log start offset (compacted
    /// topics hold fewer records than that).
    pub records: i64,
    /// The sum of the partitions' high watermarks: every record ever appended.
    pub end_offsets_total: i64,
    pub partitions: Vec<PartitionView>,
}

/// One topic config and where its value comes from (DescribeConfigs' sources).
#[derive(Debug, Clone, Serialize)]
pub struct ConfigView {
    pub name: String,
    pub value: String,
    /// Kafka's name of the source: `DYNAMIC_TOPIC_CONFIG`, `STATIC_BROKER_CONFIG`,
    /// `DEFAULT_CONFIG`.
    pub source: &'static str,
    pub read_only: bool,
}

/// A topic with its configs.
#[derive(Debug, Clone, Serialize)]
pub struct TopicDetail {
    #[serde(flatten)]
    pub topic: TopicView,
    pub configs: Vec<ConfigView>,
}

pub use crate::internal_topics::is_internal;

fn topic_view(broker: &Broker, meta: &TopicMeta) -> TopicView {
    let mut partitions: Vec<PartitionView> = broker
        .replicas
        .topic(&meta.name)
        .map(|partitions| {
            partitions
                .iter()
                .map(|p| PartitionView {
                    partition: p.index,
                    leader: broker.config.node_id,
                    leader_epoch: p.leader_epoch().0,
                    log_start_offset: p.log_start_offset().0,
                    high_watermark: p.high_watermark().0,
                    size_bytes: p.size_bytes(),
                    replicas: p.replica_count(),
                    in_sync_replicas: p.in_sync_replica_count(),
                    offline: None,
                })
                .collect()
        })
        .unwrap_or_default();
    for offline in broker.replicas.offline_partitions() {
        if offline.topic == meta.name && offline.topic_id == meta.id {
            partitions.push(PartitionView {
                partition: offline.index,
                leader: broker.config.node_id,
                leader_epoch: -1,
                log_start_offset: 0,
                high_watermark: 0,
                size_bytes: 0,
                replicas: 1,
                in_sync_replicas: 0,
                offline: Some(offline.reason),
            });
        }
    }
    partitions.sort_by_key(|p| p.partition);
    TopicView {
        name: meta.name.clone(),
        id: meta.id.to_string(),
        internal: is_internal(&meta.name),
        partition_count: partitions.len(),
        size_bytes: partitions.iter().map(|p| p.size_bytes).sum(),
        records: partitions
            .iter()
            .map(|p| (p.high_watermark - p.log_start_offset).max(0))
            .sum(),
        end_offsets_total: partitions.iter().map(|p| p.high_watermark).sum(),
        partitions,
    }
}

/// Every topic, by name. Takes each partition's log lock briefly (for its size).
pub fn topics(broker: &Broker) -> Vec<TopicView> {
    let mut topics: Vec<TopicView> = broker
        .metadata
        .topics()
        .iter()
        .map(|meta| topic_view(broker, meta))
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    topics
}

/// One topic with its partitions and configs.
pub fn topic(broker: &Broker, name: &str) -> Result<TopicDetail, InspectError> {
    let meta = broker
        .metadata
        .topic(name)
        .ok_or_else(|| InspectError::UnknownTopic(name.to_owned()))?;
    let configs = configs::topic_entries(broker, &meta.configs)
        .into_iter()
        .map(|entry| ConfigView {
            source: source_name(entry.source),
            name: entry.name,
            value: entry.value,
            read_only: entry.read_only,
        })
        .collect();
    Ok(TopicDetail {
        topic: topic_view(broker, &meta),
        configs,
    })
}

fn source_name(source: i8) -> &'static str {
    match source {
        SOURCE_DYNAMIC_TOPIC => "DYNAMIC_TOPIC_CONFIG",
        SOURCE_STATIC_BROKER => "STATIC_BROKER_CONFIG",
        SOURCE_DEFAULT => "DEFAULT_CONFIG",
        _ => "UNKNOWN",
    }
}

/// Partitions assigned here whose log cannot be opened.
pub fn offline_partitions(broker: &Broker) -> usize {
    broker.replicas.offline_partitions().len()
}

/// Partitions with fewer in-sync replicas than replicas (0 on a healthy single node).
pub fn under_replicated_partitions(broker: &Broker) -> usize {
    broker
        .replicas
        .all_partitions()
        .iter()
        .filter(|p| !p.is_deleted() && p.is_under_replicated())
        .count()
}
