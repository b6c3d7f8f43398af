//! The runtime's configuration, with Kafka Streams' names and defaults where they exist.

use std::path::PathBuf;
use std::time::Duration;

use crate::task::DeserializationPolicy;

/// `processing.guarantee`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessingGuarantee {
    /// Output and state are written before input offsets are committed: after a crash, records
    /// since the last commit are processed again (duplicates, never losses).
    AtLeastOnce,
    /// Output, changelog writes and input offsets are committed in one Kafka transaction per
    /// thread (KIP-447's `exactly_once_v2`), and input is read with `read_committed`.
    ExactlyOnceV2,
}

impl std::str::FromStr for ProcessingGuarantee {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "at_least_once" => Ok(ProcessingGuarantee::AtLeastOnce),
            "exactly_once_v2" => Ok(ProcessingGuarantee::ExactlyOnceV2),
            other => Err(format!(
                "unknown processing guarantee {other:?}: use at_least_once or exactly_once_v2"
            )),
        }
    }
}

/// How a [`crate::KafkaStreams`] application runs.
#[derive(Clone, Debug)]
pub struct StreamsConfig {
    /// `application.id`: the consumer group, the prefix of internal topics and of transactional ids.
    pub application_id: String,
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// `processing.guarantee` (default `at_least_once`).
    pub processing_guarantee: ProcessingGuarantee,
    /// `num.stream.threads` (default 1).
    pub num_stream_threads: usize,
    /// `state.dir`: persistent stores live in `<state.dir>/<application.id>/<task>/`.
    pub state_dir: PathBuf,
    /// `commit.interval.ms` (default 30 s, or 100 ms with exactly-once, as in Kafka Streams).
    pub commit_interval: Duration,
    /// `replication.factor` of the internal topics the application creates (default 1).
    pub replication_factor: i32,
    /// `num.standby.replicas`: with 1 or more, every instance keeps a warm copy of the stores of
    /// tasks it does not own, so a task moving to it restores only the tail.
    pub num_standby_replicas: u32,
    /// `default.deserialization.exception.handler`.
    pub deserialization_policy: DeserializationPolicy,
    /// The consumer's `session.timeout.ms` (default 45 s as in Kafka; tests use less).
    pub session_timeout: Duration,
    /// The producer's `transaction.timeout.ms` under exactly-once (10 s, as Kafka Streams sets).
    pub transaction_timeout: Duration,
    /// Extra librdkafka properties for every client (e.g. security settings).
    pub client_properties: Vec<(String, String)>,
    /// How long a blocking client call (commit, metadata, transaction step) may take.
    pub request_timeout: Duration,
}

impl StreamsConfig {
    /// The defaults for an application id and a broker address.
    pub fn new(application_id: &str, bootstrap_servers: &str) -> StreamsConfig {
        StreamsConfig {
            application_id: application_id.to_string(),
            bootstrap_servers: bootstrap_servers.to_string(),
            processing_guarantee: ProcessingGuarantee::AtLeastOnce,
            num_stream_threads: 1,
            state_dir: std::env::temp_dir().join("sluice-streams"),
            commit_interval: Duration::from_secs(30),
            replication_factor: 1,
            num_standby_replicas: 0,
            deserialization_policy: DeserializationPolicy::Fail,
            session_timeout: Duration::from_secs(45),
            transaction_timeout: Duration::from_secs(10),
            client_properties: Vec::new(),
            request_timeout: Duration::from_secs(30),
        }
    }

    /// Sets the processing guarantee; the commit interval becomes its default (30 s or 100 ms)
    /// unless set later.
    pub fn processing_guarantee(mut self, guarantee: ProcessingGuarantee) -> Self {
        self.processing_guarantee = guarantee;
        self.commit_interval = match guarantee {
            ProcessingGuarantee::AtLeastOnce => Duration::from_secs(30),
            ProcessingGuarantee::ExactlyOnceV2 => Duration::from_millis(100),
        };
        self
    }

    /// Sets the number of stream threads.
    pub fn num_stream_threads(mut self, threads: usize) -> Self {
        self.num_stream_threads = threads.max(1);
        self
    }

    /// Sets the state directory.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = dir.into();
        self
    }

    /// Sets the commit interval.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// Sets the deserialization policy.
    pub fn deserialization_policy(mut self, policy: DeserializationPolicy) -> Self {
        self.deserialization_policy = policy;
        self
    }

    /// Sets the number of standby replicas.
    pub fn num_standby_replicas(mut self, replicas: u32) -> Self {
        self.num_standby_replicas = replicas;
        self
    }

    /// Sets the consumer session timeout.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Adds a librdkafka property for every client.
    pub fn client_property(mut self, key: &str, value: &str) -> Self {
        self.client_properties
            .push((key.to_string(), value.to_string()));
        self
    }

    pub(crate) fn exactly_once(&self) -> bool {
        self.processing_guarantee == ProcessingGuarantee::ExactlyOnceV2
    }

    /// `read_committed` under exactly-once, else `read_uncommitted`.
    pub(crate) fn isolation_level(&self) -> &'static str {
        if self.exactly_once() {
            "read_committed"
        } else {
            "read_uncommitted"
        }
    }

    /// A consumer that is assigned partitions by hand (restoration, global stores, standbys):
    /// its own group id (never joined; librdkafka wants one), no commits, read from the start.
    pub(crate) fn assigned_consumer(&self, purpose: &str) -> rdkafka::ClientConfig {
        let mut c = self.base_client();
        c.set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("group.id", format!("{}-{purpose}", self.application_id))
            .set("isolation.level", self.isolation_level());
        c
    }

    pub(crate) fn base_client(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.application_id)
            .set("log_level", "3");
        for (k, v) in &self.client_properties {
            c.set(k, v);
        }
        c
    }
}
