//! The broker's Prometheus metrics: counters and histograms updated on the request path, and
//! gauges (log sizes, log end offsets, consumer lag) collected from the broker's state when
//! scraped. [`render`] produces the text exposition format, version 0.0.4.
//!
//! The hot path never formats a label: per-API handles are looked up by API key in an array built
//! at start, and per-topic handles once per topic per request (not per record or per batch).

use std::time::Duration;

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sluice_protocol::messages::ApiKey;

use crate::broker::Broker;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: i32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabels {
    group: String,
    topic: String,
    partition: i32,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request latencies: 100 µs to ~26 s.
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

/// fsync latencies: 50 µs to ~13 s.
fn fsync_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00005, 4.0, 10))
}

/// One API's request count and latency handles.
#[derive(Debug, Clone)]
pub(crate) struct ApiMetrics {
    requests: Counter,
    duration: Histogram,
}

impl ApiMetrics {
    /// Counts one finished request that took `elapsed` (decode to reply ready).
    pub(crate) fn observe(&self, elapsed: Duration) {
        self.requests.inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

/// One topic's traffic counters.
#[derive(Debug, Clone)]
pub(crate) struct TopicMetrics {
    pub(crate) bytes_in: Counter,
    pub(crate) records_in: Counter,
    pub(crate) bytes_out: Counter,
}

/// Metrics updated while serving; owned by the [`Broker`].
pub struct Metrics {
    registry: Registry,
    /// Indexed by API key; `None` for APIs this broker does not implement.
    per_api: Vec<Option<ApiMetrics>>,
    bytes_in: Family<TopicLabels, Counter>,
    records_in: Family<TopicLabels, Counter>,
    bytes_out: Family<TopicLabels, Counter>,
    connections_active: Gauge,
    /// Connections closed at accept, by the limit they hit.
    connections_refused: Family<ReasonLabels, Counter>,
    /// Connections the broker closed, by why (idle, a request read too slowly).
    connections_closed: Family<ReasonLabels, Counter>,
    pool: PoolGauges,
    fsync_duration: Histogram,
    /// Logs found damaged when opened (taken offline or quarantined and fetched again).
    damaged_logs: Counter,
    /// Requests parked until they can be answered, by operation (see [`PurgatoryGuard`]).
    purgatory: Family<OperationLabels, Gauge>,
    /// Traffic summed over every topic, for the console's throughput (the per-topic families
    /// cannot be summed without a scrape). Not exported: the per-topic series sum to them.
    totals: TrafficTotals,
}

/// Bytes and records produced and fetched since start, over every topic.
#[derive(Debug, Clone, Default)]
pub struct TrafficTotals {
    pub bytes_in: Counter,
    pub records_in: Counter,
    /// Record bytes sent by fetches. Fetched records are not counted: they go from the segment
    /// files to the socket without being read (sendfile).
    pub bytes_out: Counter,
}

/// The gauges of the request memory pool (`queued.max.request.bytes`, see
/// [`crate::request_pool`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct PoolGauges {
    /// The pool's size; -1 when unbounded.
    pub(crate) capacity: Gauge,
    /// Request bytes reserved now.
    pub(crate) requests: Gauge,
    /// The most request bytes ever reserved at once since start.
    pub(crate) peak: Gauge,
    /// In-memory bytes of responses waiting to be written.
    pub(crate) responses: Gauge,
    /// Requests waiting for pool memory before their body is read, and their bytes.
    pub(crate) waiting_requests: Gauge,
    pub(crate) waiting_bytes: Gauge,
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max.connections` connections are open.
    MaxConnections,
    /// The client's address has `max.connections.per.ip` (or its override) open.
    MaxConnectionsPerIp,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerIp => "max_connections_per_ip",
        }
    }
}

/// Why the broker closed a connection it was serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closure {
    /// No request for `connections.max.idle.ms`.
    Idle,
    /// A request was not read whole within `socket.request.read.timeout.ms`.
    RequestReadTimeout,
}

impl Closure {
    fn label(self) -> &'static str {
        match self {
            Closure::Idle => "idle",
            Closure::RequestReadTimeout => "request_read_timeout",
        }
    }
}

/// A request waiting in purgatory: a fetch long-polling for `fetch.min.bytes`, a produce waiting
/// for acks=all durability. Counted in `sluice_purgatory_size` while the guard lives.
#[derive(Debug)]
#[must_use = "the request counts as waiting only while the guard lives"]
pub struct PurgatoryGuard {
    gauge: Gauge,
}

impl Drop for PurgatoryGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// What a request in purgatory waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgatoryOperation {
    Produce,
    Fetch,
}

impl PurgatoryOperation {
    fn label(self) -> &'static str {
        match self {
            PurgatoryOperation::Produce => "produce",
            PurgatoryOperation::Fetch => "fetch",
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric; each implemented API starts at zero so it shows up before use.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<ApiLabels, Counter>::default();
        let durations = HistogramFamily::<ApiLabels>::new_with_constructor(request_histogram);
        let max_key = crate::api::SUPPORTED
            .iter()
            .map(|&(key, _, _)| key as i16)
            .max()
            .unwrap_or(0);
        let mut per_api = vec![None; max_key as usize + 1];
        for &(key, _, _) in crate::api::SUPPORTED {
            let labels = ApiLabels {
                api: format!("{key:?}"),
            };
            per_api[key as i16 as usize] = Some(ApiMetrics {
                requests: requests.get_or_create(&labels).clone(),
                duration: durations.get_or_create(&labels).clone(),
            });
        }
        let metrics = Metrics {
            registry: Registry::default(),
            per_api,
            bytes_in: Family::default(),
            records_in: Family::default(),
            bytes_out: Family::default(),
            connections_active: Gauge::default(),
            connections_refused: Family::default(),
            connections_closed: Family::default(),
            pool: PoolGauges::default(),
            fsync_duration: fsync_histogram(),
            damaged_logs: Counter::default(),
            purgatory: Family::default(),
            totals: TrafficTotals::default(),
        };
        // Every reason shows from the start, at zero.
        for refusal in [Refusal::MaxConnections, Refusal::MaxConnectionsPerIp] {
            drop(metrics.connections_refused.get_or_create(&ReasonLabels {
                reason: refusal.label(),
            }));
        }
        for closure in [Closure::Idle, Closure::RequestReadTimeout] {
            drop(metrics.connections_closed.get_or_create(&ReasonLabels {
                reason: closure.label(),
            }));
        }
        // Both operations show from the start, at zero.
        for operation in [PurgatoryOperation::Produce, PurgatoryOperation::Fetch] {
            drop(metrics.purgatory.get_or_create(&OperationLabels {
                operation: operation.label(),
            }));
        }
        registry.register(
            "sluice_requests",
            "Requests answered, by Kafka API",
            requests,
        );
        registry.register(
            "sluice_request_duration_seconds",
            "Time from a request's arrival to its reply being ready, by Kafka API",
            durations,
        );
        registry.register(
            "sluice_bytes_in",
            "Record batch bytes appended by producers, by topic",
            metrics.bytes_in.clone(),
        );
        registry.register(
            "sluice_records_in",
            "Records appended by producers (from batch headers), by topic",
            metrics.records_in.clone(),
        );
        registry.register(
            "sluice_bytes_out",
            "Record batch bytes returned to fetchers, by topic",
            metrics.bytes_out.clone(),
        );
        registry.register(
            "sluice_connections_active",
            "Open Kafka client connections",
            metrics.connections_active.clone(),
        );
        registry.register(
            "sluice_connections_refused",
            "Connections closed at accept, by the limit they hit (max_connections, max_connections_per_ip)",
            metrics.connections_refused.clone(),
        );
        registry.register(
            "sluice_connections_closed",
            "Connections the broker closed, by reason (idle: no request for connections.max.idle.ms; request_read_timeout: a request not read within socket.request.read.timeout.ms)",
            metrics.connections_closed.clone(),
        );
        let pool = &metrics.pool;
        registry.register(
            "sluice_request_pool_capacity_bytes",
            "queued.max.request.bytes: the memory pool for requests in flight (-1: unbounded)",
            pool.capacity.clone(),
        );
        registry.register(
            "sluice_request_pool_used_bytes",
            "Request bytes reserved in the pool now (from before a request body is read until its response is written)",
            pool.requests.clone(),
        );
        registry.register(
            "sluice_request_pool_used_max_bytes",
            "The most request bytes reserved in the pool at once since start",
            pool.peak.clone(),
        );
        registry.register(
            "sluice_request_pool_response_bytes",
            "In-memory bytes of responses waiting to be written, counted against the pool's pipelined half",
            pool.responses.clone(),
        );
        registry.register(
            "sluice_request_pool_waiting_requests",
            "Requests waiting for pool memory before their body is read",
            pool.waiting_requests.clone(),
        );
        registry.register(
            "sluice_request_pool_waiting_bytes",
            "Bytes the requests waiting for pool memory need",
            pool.waiting_bytes.clone(),
        );
        registry.register(
            "sluice_fsync_duration_seconds",
            "Duration of the group-commit fsyncs that make acks=all writes durable",
            metrics.fsync_duration.clone(),
        );
        registry.register(
            "sluice_damaged_logs",
            "Partition logs found with damaged data that was fsynced when opened (each is offline, or quarantined and fetched again from another replica)",
            metrics.damaged_logs.clone(),
        );
        registry.register(
            "sluice_purgatory_size",
            "Requests waiting to be answered: fetches for fetch.min.bytes or max.wait.ms, acks=all produces for their fsync",
            metrics.purgatory.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The handles of one API; `None` for APIs this broker does not implement.
    pub(crate) fn api(&self, key: ApiKey) -> Option<&ApiMetrics> {
        usize::try_from(key as i16)
            .ok()
            .and_then(|i| self.per_api.get(i))
            .and_then(Option::as_ref)
    }

    /// The handles of one topic (one map lookup; call once per topic per request).
    pub(crate) fn topic(&self, topic: &str) -> TopicMetrics {
        let labels = TopicLabels {
            topic: topic.to_owned(),
        };
        TopicMetrics {
            bytes_in: self.bytes_in.get_or_create(&labels).clone(),
            records_in: self.records_in.get_or_create(&labels).clone(),
            bytes_out: self.bytes_out.get_or_create(&labels).clone(),
        }
    }

    /// Forgets a deleted topic's counters.
    pub(crate) fn remove_topic(&self, topic: &str) {
        let labels = TopicLabels {
            topic: topic.to_owned(),
        };
        self.bytes_in.remove(&labels);
        self.records_in.remove(&labels);
        self.bytes_out.remove(&labels);
    }

    /// The handle of `sluice_connections_active`, which the listener's connection quotas keep
    /// equal to the open count.
    pub(crate) fn connections_active(&self) -> Gauge {
        self.connections_active.clone()
    }

    /// Counts one connection closed at accept.
    pub(crate) fn connection_refused(&self, refusal: Refusal) {
        self.connections_refused
            .get_or_create(&ReasonLabels {
                reason: refusal.label(),
            })
            .inc();
    }

    /// Counts one connection the broker closed for `closure`.
    pub(crate) fn connection_closed_for(&self, closure: Closure) {
        self.connections_closed
            .get_or_create(&ReasonLabels {
                reason: closure.label(),
            })
            .inc();
    }

    /// The request memory pool's gauges (handles to the registered ones).
    pub(crate) fn pool_gauges(&self) -> PoolGauges {
        self.pool.clone()
    }

    /// Counts one request as waiting in purgatory until the guard drops.
    pub fn enter_purgatory(&self, operation: PurgatoryOperation) -> PurgatoryGuard {
        let gauge = self
            .purgatory
            .get_or_create(&OperationLabels {
                operation: operation.label(),
            })
            .clone();
        gauge.inc();
        PurgatoryGuard { gauge }
    }

    /// Requests waiting in purgatory now.
    pub fn purgatory_size(&self, operation: PurgatoryOperation) -> i64 {
        self.purgatory
            .get_or_create(&OperationLabels {
                operation: operation.label(),
            })
            .get()
    }

    /// Counts produced traffic in the all-topics totals (beside the per-topic counters).
    pub(crate) fn count_in(&self, bytes: u64, records: u64) {
        self.totals.bytes_in.inc_by(bytes);
        self.totals.records_in.inc_by(records);
    }

    /// Counts fetched traffic in the all-topics totals.
    pub(crate) fn count_out(&self, bytes: u64) {
        self.totals.bytes_out.inc_by(bytes);
    }

    /// Traffic over every topic since start.
    pub fn totals(&self) -> &TrafficTotals {
        &self.totals
    }

    /// The histogram partitions record their fsyncs in.
    pub(crate) fn fsync_duration(&self) -> Histogram {
        self.fsync_duration.clone()
    }

    /// The counter of logs found damaged at open.
    pub(crate) fn damaged_logs(&self) -> Counter {
        self.damaged_logs.clone()
    }
}

/// Sums the record counts in the headers of the v2 record batches in `batches`, without looking
/// at the records. Stops at the first incomplete header.
pub(crate) fn batch_record_count(batches: &[u8]) -> u64 {
    /// Offsets within Kafka's v2 `RecordBatch` header.
    const LENGTH_AT: usize = 8;
    const RECORDS_COUNT_AT: usize = 57;
    const HEADER_BYTES: usize = 61;
    let mut at = 0usize;
    let mut count = 0u64;
    while let Some(header) = batches.get(at..at + HEADER_BYTES) {
        let length = i32::from_be_bytes(header[LENGTH_AT..LENGTH_AT + 4].try_into().unwrap());
        let records = i32::from_be_bytes(
            header[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4]
                .try_into()
                .unwrap(),
        );
        count += records.max(0) as u64;
        let Ok(length) = usize::try_from(length) else {
            break;
        };
        at = at.saturating_add(12).saturating_add(length);
    }
    count
}

/// Encodes every metric in the Prometheus text format 0.0.4, collecting the log and consumer-lag
/// gauges from `broker` now.
pub fn render(broker: &Broker) -> String {
    let mut out = String::new();
    prometheus_text::encode(&mut out, &broker.metrics.registry)
        .expect("writing to a String cannot fail");

    let log_size = Family::<PartitionLabels, Gauge>::default();
    let log_end = Family::<PartitionLabels, Gauge>::default();
    let lag = Family::<LagLabels, Gauge>::default();
    for partition in broker.replicas.all_partitions() {
        if partition.is_deleted() {
            continue;
        }
        let labels = PartitionLabels {
            topic: partition.topic.clone(),
            partition: partition.index,
        };
        log_size
            .get_or_create(&labels)
            .set(i64::try_from(partition.size_bytes()).unwrap_or(i64::MAX));
        log_end
            .get_or_create(&labels)
            .set(partition.log_end_offset().0);
    }
    for group in broker.groups.list() {
        for ((topic, index), committed) in broker.groups.fetch_offsets(&group.group_id, None) {
            let (Some(committed), Some(partition)) =
                (committed, broker.replicas.partition(&topic, index))
            else {
                continue;
            };
            lag.get_or_create(&LagLabels {
                group: group.group_id.clone(),
                topic,
                partition: index,
            })
            .set((partition.log_end_offset().0 - committed.offset).max(0));
        }
    }
    let under_replicated = Gauge::<i64>::default();
    under_replicated.set(
        i64::try_from(crate::inspect::under_replicated_partitions(broker)).unwrap_or(i64::MAX),
    );
    let offline = Gauge::<i64>::default();
    offline.set(i64::try_from(crate::inspect::offline_partitions(broker)).unwrap_or(i64::MAX));
    let mut scraped = Registry::default();
    scraped.register(
        "sluice_under_replicated_partitions",
        "Partitions with fewer in-sync replicas than replicas",
        under_replicated,
    );
    scraped.register(
        "sluice_offline_partitions",
        "Partitions assigned to this broker whose log cannot be opened (damaged or unreadable files); every request for them answers KAFKA_STORAGE_ERROR",
        offline,
    );
    scraped.register(
        "sluice_log_size_bytes",
        "Bytes of a partition's log on disk",
        log_size,
    );
    scraped.register(
        "sluice_log_end_offset",
        "The offset the next appended record of a partition gets",
        log_end,
    );
    scraped.register(
        "sluice_consumer_group_lag",
        "Log end offset minus a group's committed offset, per partition",
        lag,
    );
    prometheus_text::encode(&mut out, &scraped).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(records: i32, body_bytes: usize) -> Vec<u8> {
        let mut batch = vec![0u8; 61 + body_bytes];
        let length = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&length.to_be_bytes());
        batch[57..61].copy_from_slice(&records.to_be_bytes());
        batch
    }

    #[test]
    fn record_counts_come_from_every_batch_header() {
        let mut batches = header(3, 10);
        batches.extend(header(5, 0));
        assert_eq!(batch_record_count(&batches), 8);
        assert_eq!(batch_record_count(&batches[..20]), 0);
    }

    #[test]
    fn purgatory_counts_live_guards() {
        let metrics = Metrics::new();
        assert_eq!(metrics.purgatory_size(PurgatoryOperation::Fetch), 0);
        let first = metrics.enter_purgatory(PurgatoryOperation::Fetch);
        let second = metrics.enter_purgatory(PurgatoryOperation::Fetch);
        let produce = metrics.enter_purgatory(PurgatoryOperation::Produce);
        assert_eq!(metrics.purgatory_size(PurgatoryOperation::Fetch), 2);
        assert_eq!(metrics.purgatory_size(PurgatoryOperation::Produce), 1);
        drop(first);
        drop(produce);
        assert_eq!(metrics.purgatory_size(PurgatoryOperation::Fetch), 1);
        assert_eq!(metrics.purgatory_size(PurgatoryOperation::Produce), 0);
        drop(second);
        let mut out = String::new();
        prometheus_text::encode(&mut out, &metrics.registry).unwrap();
        assert!(
            out.contains("sluice_purgatory_size{operation=\"fetch\"} 0"),
            "{out}"
        );
    }

    #[test]
    fn every_implemented_api_has_handles_and_renders() {
        let metrics = Metrics::new();
        metrics
            .api(ApiKey::Produce)
            .unwrap()
            .observe(Duration::from_millis(2));
        assert!(metrics.api(ApiKey::Produce).is_some());
        metrics.topic("t").records_in.inc_by(4);
        let mut out = String::new();
        prometheus_text::encode(&mut out, &metrics.registry).unwrap();
        assert!(
            out.contains("# TYPE sluice_requests_total counter"),
            "{out}"
        );
        assert!(
            out.contains("sluice_requests_total{api=\"Produce\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("sluice_records_in_total{topic=\"t\"} 4"),
            "{out}"
        );
        assert!(
            out.contains("# TYPE sluice_request_duration_seconds histogram"),
            "{out}"
        );
        metrics.remove_topic("t");
        let mut out = String::new();
        prometheus_text::encode(&mut out, &metrics.registry).unwrap();
        assert!(!out.contains("topic=\"t\""), "{out}");
    }
}
