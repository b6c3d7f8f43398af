//! Broker settings, named and defaulted as Kafka's broker configs are.
//!
//! The binary fills a [`BrokerConfig`] from flags, `SLUICE_*` environment variables and a TOML file of
//! Kafka config names (see [`BrokerConfig::apply`]); everything below reads it and nothing else.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use sluice_log::{LogConfig, TimestampType};

/// Settings of one broker process.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `node.id`: this broker's id in Metadata answers.
    pub node_id: i32,
    /// Address the Kafka listener binds.
    pub listen: SocketAddr,
    /// Host and port clients are told to connect to (defaults to `listen`).
    pub advertised_host: String,
    pub advertised_port: u16,
    /// Where partition logs and metadata live.
    pub data_dir: PathBuf,
    /// `num.partitions`: partitions of an auto-created topic, and of a CreateTopics that asks for -1.
    pub num_partitions: i32,
    /// `default.replication.factor`: replicas of a topic that asks for -1 (one node: must be 1).
    pub default_replication_factor: i16,
    /// `auto.create.topics.enable`.
    pub auto_create_topics_enable: bool,
    /// `socket.request.max.bytes`: a request frame larger than this closes the connection.
    pub socket_request_max_bytes: usize,
    /// `max.connections`: connections beyond this are closed on accept.
    pub max_connections: usize,
    /// `max.connections.per.ip`: connections one client address may have open; more are closed
    /// on accept. Kafka's default is unlimited; Sluice's is 1000 (see README.md, "Limits").
    pub max_connections_per_ip: usize,
    /// `max.connections.per.ip.overrides`: per-address limits replacing `max.connections.per.ip`
    /// (`HOST_OR_IP:COUNT,...`; host names are resolved when the config is read, as Kafka does).
    pub max_connections_per_ip_overrides: BTreeMap<IpAddr, usize>,
    /// `queued.max.requests` per connection: requests read ahead of their responses.
    pub max_in_flight_requests_per_connection: usize,
    /// `queued.max.request.bytes`: the memory pool for requests in flight, over every
    /// connection (see `request_pool.rs`). `None` is unbounded (-1, Kafka's default); Sluice's
    /// default is 128 MiB.
    pub queued_max_request_bytes: Option<u64>,
    /// `connections.max.idle.ms`: a connection with no request for this long (and none being
    /// answered) is closed. `None` (-1): never.
    pub connections_max_idle_ms: Option<u64>,
    /// `socket.request.read.timeout.ms` (Sluice; Kafka has no equivalent): once a request's
    /// first byte has arrived, the whole request must arrive within this long or the
    /// connection is closed (time spent waiting for the request memory pool does not count).
    pub socket_request_read_timeout_ms: u64,
    /// `log.flush.on.ack` (Sluice): acks=all produce answers only after the batch is fsynced.
    pub flush_on_ack: bool,
    /// `log.retention.check.interval.ms`.
    pub retention_check_interval_ms: u64,
    /// `log.flush.interval.ms`: how often dirty logs are synced in the background.
    pub flush_interval_ms: u64,
    /// Topic config defaults (`log.segment.bytes`, `log.retention.ms`, `message.max.bytes`, ...).
    pub log_defaults: LogConfig,
    /// The cluster id reported to clients.
    pub cluster_id: String,
    /// `group.initial.rebalance.delay.ms`: how long a new group waits for more members to join.
    pub group_initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms` / `group.max.session.timeout.ms`: the session timeouts members may ask for.
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets` when it is created.
    pub offsets_topic_num_partitions: i32,
    /// `offset.metadata.max.bytes`: the longest metadata string a commit may carry.
    pub offset_metadata_max_bytes: usize,
    /// `offsets.retention.minutes`, in ms: committed offsets of an empty group expire this long
    /// after they were committed.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: u64,
    /// `transaction.state.log.num.partitions`: partitions of `__transaction_state`.
    pub txn_state_num_partitions: i32,
    /// `transaction.max.timeout.ms`: the longest transaction timeout a producer may ask for.
    pub txn_max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: a transactional id idle this long (no transaction open)
    /// is forgotten (7 days).
    pub txn_id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how often transactions
    /// past their timeout are looked for (and aborted).
    pub txn_abort_check_interval_ms: u64,
    /// `log.cleaner.enable`: run the log cleaner for `compact` topics.
    pub cleaner_enable: bool,
    /// `log.cleaner.backoff.ms`: pause between cleaner passes over the partitions.
    pub cleaner_backoff_ms: u64,
    /// `offsets.topic.replication.factor`: replicas of `__consumer_offsets` (fewer when fewer
    /// brokers are live at its creation).
    pub offsets_topic_replication_factor: i16,
    /// `transaction.state.log.replication.factor`: replicas of `__transaction_state` (likewise).
    pub txn_state_replication_factor: i16,
    /// `controller.listener` (Sluice's `--controller-listen`): where this node answers the
    /// metadata quorum's RPCs. None: a one-voter quorum that never listens.
    pub controller_listen: Option<SocketAddr>,
    /// `controller.quorum.voters`: every voter's id and controller address. Empty: this node is
    /// the only voter.
    pub voters: Vec<Voter>,
    /// `broker.heartbeat.interval.ms`: how often a broker tells the controller it is alive.
    pub broker_heartbeat_interval_ms: u64,
    /// `broker.session.timeout.ms`: a broker silent this long is fenced.
    pub broker_session_timeout_ms: u64,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch waits for new data.
    pub replica_fetch_wait_max_ms: i32,
    /// `unclean.leader.election.enable`: elect a replica outside the ISR when none is left.
    pub unclean_leader_election_enable: bool,
    /// `auto.leader.rebalance.enable`: move leadership back to preferred replicas.
    pub auto_leader_rebalance_enable: bool,
    /// `broker.rack`: the rack this broker declares for replica placement.
    pub rack: Option<String>,
    /// `cluster.secret.file` (Sluice's `--cluster-secret-file`): the file holding the secret
    /// every node of the cluster proves it has. None: `<data dir>/cluster-secret`, created on
    /// the first start of a one-voter cluster.
    pub cluster_secret_file: Option<PathBuf>,
    /// The settings given explicitly (flags, environment, file), as DescribeConfigs reports them
    /// with source STATIC_BROKER_CONFIG.
    pub explicit: BTreeMap<String, String>,
}

/// One metadata quorum voter (an entry of `controller.quorum.voters`: `ID@HOST:PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

impl Voter {
    /// `HOST:PORT`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Parses `controller.quorum.voters` (`1@host:9093,2@host:9094`).
pub fn parse_voters(key: &str, value: &str) -> Result<Vec<Voter>, ConfigError> {
    let mut voters: Vec<Voter> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((id, addr)) = entry.split_once('@') else {
            return Err(invalid(key, value, "each voter is ID@HOST:PORT"));
        };
        let id: i32 = parse(key, id)?;
        if id < 0 {
            return Err(invalid(key, value, "voter ids are not negative"));
        }
        let (host, port) = split_host_port(key, addr)?;
        if voters.iter().any(|v| v.id == id) {
            return Err(invalid(key, value, "a voter id appears twice"));
        }
        voters.push(Voter { id, host, port });
    }
    Ok(voters)
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let listen: SocketAddr = "127.0.0.1:9092".parse().expect("static address parses");
        BrokerConfig {
            node_id: 1,
            listen,
            advertised_host: listen.ip().to_string(),
            advertised_port: listen.port(),
            data_dir: PathBuf::from("./sluice-data"),
            num_partitions: 1,
            default_replication_factor: 1,
            auto_create_topics_enable: true,
            socket_request_max_bytes: 104_857_600,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            max_connections_per_ip_overrides: BTreeMap::new(),
            max_in_flight_requests_per_connection: 64,
            queued_max_request_bytes: Some(128 * 1024 * 1024),
            connections_max_idle_ms: Some(600_000),
            socket_request_read_timeout_ms: 120_000,
            flush_on_ack: true,
            retention_check_interval_ms: 300_000,
            flush_interval_ms: 60_000,
            log_defaults: LogConfig::default(),
            cluster_id: String::new(),
            group_initial_rebalance_delay_ms: 3_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            offsets_topic_num_partitions: 50,
            offset_metadata_max_bytes: 4096,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            txn_state_num_partitions: 50,
            txn_max_timeout_ms: 900_000,
            txn_abort_check_interval_ms: 10_000,
            txn_id_expiration_ms: 7 * 24 * 60 * 60 * 1000,
            cleaner_enable: true,
            cleaner_backoff_ms: 15_000,
            offsets_topic_replication_factor: 3,
            txn_state_replication_factor: 3,
            controller_listen: None,
            voters: Vec::new(),
            broker_heartbeat_interval_ms: 2_000,
            broker_session_timeout_ms: 9_000,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            unclean_leader_election_enable: false,
            auto_leader_rebalance_enable: true,
            rack: None,
            cluster_secret_file: None,
            explicit: BTreeMap::new(),
        }
    }
}

/// A config key or value the broker cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown broker config `{0}`; see README.md for the keys Sluice honors")]
    UnknownKey(String),
    #[error("invalid value `{value}` for `{key}`: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e: T::Err| ConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason: e.to_string(),
        })
}

impl BrokerConfig {
    /// Applies Kafka-named broker settings (from a TOML file or `SLUICE_*` variables) on top of self.
    pub fn apply(&mut self, settings: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        for (key, value) in settings {
            self.apply_one(key, value)?;
            self.explicit.insert(key.clone(), value.clone());
        }
        Ok(())
    }

    /// Checks rules that involve more than one key; run once every source has been applied.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Kafka's rule: 0 refuses every address without an override, which only makes sense
        // with overrides.
        if self.max_connections_per_ip == 0 && self.max_connections_per_ip_overrides.is_empty() {
            return Err(invalid(
                "max.connections.per.ip",
                "0",
                "can be 0 only when max.connections.per.ip.overrides lets some addresses in",
            ));
        }
        Ok(())
    }

    /// Every broker config Sluice honors with its effective value, for DescribeConfigs.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let log = &self.log_defaults;
        let timestamp_type = match log.message_timestamp_type {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        };
        let mut entries = vec![
            (
                "advertised.listeners",
                format!(
                    "PLAINTEXT://{}:{}",
                    self.advertised_host, self.advertised_port
                ),
            ),
            (
                "auto.create.topics.enable",
                self.auto_create_topics_enable.to_string(),
            ),
            (
                "default.replication.factor",
                self.default_replication_factor.to_string(),
            ),
            (
                "group.initial.rebalance.delay.ms",
                self.group_initial_rebalance_delay_ms.to_string(),
            ),
            (
                "group.max.session.timeout.ms",
                self.group_max_session_timeout_ms.to_string(),
            ),
            (
                "group.min.session.timeout.ms",
                self.group_min_session_timeout_ms.to_string(),
            ),
            ("listeners", format!("PLAINTEXT://{}", self.listen)),
            (
                "log.cleaner.backoff.ms",
                self.cleaner_backoff_ms.to_string(),
            ),
            ("log.cleaner.enable", self.cleaner_enable.to_string()),
            (
                "broker.heartbeat.interval.ms",
                self.broker_heartbeat_interval_ms.to_string(),
            ),
            (
                "broker.session.timeout.ms",
                self.broker_session_timeout_ms.to_string(),
            ),
            (
                "controller.quorum.voters",
                self.voters
                    .iter()
                    .map(|v| format!("{}@{}", v.id, v.address()))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "offsets.topic.replication.factor",
                self.offsets_topic_replication_factor.to_string(),
            ),
            (
                "transaction.state.log.replication.factor",
                self.txn_state_replication_factor.to_string(),
            ),
            (
                "replica.lag.time.max.ms",
                self.replica_lag_time_max_ms.to_string(),
            ),
            (
                "replica.fetch.wait.max.ms",
                self.replica_fetch_wait_max_ms.to_string(),
            ),
            (
                "unclean.leader.election.enable",
                self.unclean_leader_election_enable.to_string(),
            ),
            (
                "auto.leader.rebalance.enable",
                self.auto_leader_rebalance_enable.to_string(),
            ),
            ("log.dirs", self.data_dir.display().to_string()),
            ("log.flush.interval.ms", self.flush_interval_ms.to_string()),
            ("log.flush.on.ack", self.flush_on_ack.to_string()),
            (
                "log.index.interval.bytes",
                log.index_interval_bytes.to_string(),
            ),
            (
                "log.index.size.max.bytes",
                log.segment_index_bytes.to_string(),
            ),
            (
                "log.message.timestamp.before.max.ms",
                log.message_timestamp_before_max_ms.to_string(),
            ),
            (
                "log.message.timestamp.after.max.ms",
                log.message_timestamp_after_max_ms.to_string(),
            ),
            ("log.message.timestamp.type", timestamp_type.to_owned()),
            ("log.retention.bytes", log.retention_bytes.to_string()),
            (
                "log.retention.check.interval.ms",
                self.retention_check_interval_ms.to_string(),
            ),
            ("log.retention.ms", log.retention_ms.to_string()),
            ("log.roll.ms", log.segment_ms.to_string()),
            ("log.segment.bytes", log.segment_bytes.to_string()),
            ("max.connections", self.max_connections.to_string()),
            (
                "max.connections.per.ip",
                self.max_connections_per_ip.to_string(),
            ),
            (
                "max.connections.per.ip.overrides",
                self.max_connections_per_ip_overrides
                    .iter()
                    .map(|(ip, max)| match ip {
                        IpAddr::V4(ip) => format!("{ip}:{max}"),
                        IpAddr::V6(ip) => format!("[{ip}]:{max}"),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "connections.max.idle.ms",
                self.connections_max_idle_ms
                    .map_or("-1".to_owned(), |ms| ms.to_string()),
            ),
            (
                "queued.max.request.bytes",
                self.queued_max_request_bytes
                    .map_or("-1".to_owned(), |bytes| bytes.to_string()),
            ),
            (
                "socket.request.read.timeout.ms",
                self.socket_request_read_timeout_ms.to_string(),
            ),
            ("message.max.bytes", log.max_message_bytes.to_string()),
            ("node.id", self.node_id.to_string()),
            ("num.partitions", self.num_partitions.to_string()),
            (
                "offset.metadata.max.bytes",
                self.offset_metadata_max_bytes.to_string(),
            ),
            (
                "offsets.retention.check.interval.ms",
                self.offsets_retention_check_interval_ms.to_string(),
            ),
            (
                "offsets.retention.minutes",
                (self.offsets_retention_ms / 60_000).to_string(),
            ),
            (
                "offsets.topic.num.partitions",
                self.offsets_topic_num_partitions.to_string(),
            ),
            (
                "queued.max.requests",
                self.max_in_flight_requests_per_connection.to_string(),
            ),
            (
                "socket.request.max.bytes",
                self.socket_request_max_bytes.to_string(),
            ),
            (
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                self.txn_abort_check_interval_ms.to_string(),
            ),
            (
                "transaction.max.timeout.ms",
                self.txn_max_timeout_ms.to_string(),
            ),
            (
                "transaction.state.log.num.partitions",
                self.txn_state_num_partitions.to_string(),
            ),
            (
                "transactional.id.expiration.ms",
                self.txn_id_expiration_ms.to_string(),
            ),
        ];
        entries.sort_by_key(|(key, _)| *key);
        entries
    }

    /// Whether `key` (or a spelling that sets the same value, like `log.retention.hours` for
    /// `log.retention.ms`) was set explicitly.
    pub fn is_explicit(&self, key: &str) -> bool {
        let spellings: &[&str] = match key {
            "log.retention.ms" => &[
                "log.retention.ms",
                "log.retention.minutes",
                "log.retention.hours",
            ],
            "log.roll.ms" => &["log.roll.ms", "log.roll.hours"],
            "listeners" => &["listeners", "listen"],
            "advertised.listeners" => &["advertised.listeners", "advertised.listener"],
            "log.dirs" => &["log.dirs", "log.dir", "data.dir"],
            "node.id" => &["node.id", "broker.id"],
            other => return self.explicit.contains_key(other),
        };
        spellings.iter().any(|k| self.explicit.contains_key(*k))
    }

    fn apply_one(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            "node.id" | "broker.id" => self.node_id = parse(key, value)?,
            "listeners" | "listen" => {
                let addr = value.trim().trim_start_matches("PLAINTEXT://");
                self.listen = parse(key, addr)?;
            }
            "advertised.listeners" | "advertised.listener" => {
                let addr = value.trim().trim_start_matches("PLAINTEXT://");
                let (host, port) = split_host_port(key, addr)?;
                self.advertised_host = host;
                self.advertised_port = port;
            }
            "log.dirs" | "log.dir" | "data.dir" => self.data_dir = PathBuf::from(value.trim()),
            "num.partitions" => {
                self.num_partitions = parse(key, value)?;
                if self.num_partitions < 1 {
                    return Err(invalid(key, value, "must be at least 1"));
                }
            }
            "default.replication.factor" => self.default_replication_factor = parse(key, value)?,
            "auto.create.topics.enable" => self.auto_create_topics_enable = parse(key, value)?,
            "socket.request.max.bytes" => self.socket_request_max_bytes = parse(key, value)?,
            "max.connections" => self.max_connections = parse(key, value)?,
            "max.connections.per.ip" => self.max_connections_per_ip = parse(key, value)?,
            "max.connections.per.ip.overrides" => {
                self.max_connections_per_ip_overrides = parse_per_ip_overrides(key, value)?
            }
            "queued.max.request.bytes" => {
                self.queued_max_request_bytes = parse_positive_or_unbounded(key, value)?
            }
            "connections.max.idle.ms" => {
                self.connections_max_idle_ms = parse_positive_or_unbounded(key, value)?
            }
            "socket.request.read.timeout.ms" => {
                self.socket_request_read_timeout_ms = parse(key, value)?;
                if self.socket_request_read_timeout_ms == 0 {
                    return Err(invalid(key, value, "must be at least 1"));
                }
            }
            "queued.max.requests" => {
                self.max_in_flight_requests_per_connection = parse(key, value)?;
                if self.max_in_flight_requests_per_connection == 0 {
                    return Err(invalid(key, value, "must be at least 1"));
                }
            }
            "log.flush.on.ack" => self.flush_on_ack = parse(key, value)?,
            "log.retention.check.interval.ms" => {
                self.retention_check_interval_ms = parse(key, value)?
            }
            "log.flush.interval.ms" => self.flush_interval_ms = parse(key, value)?,
            "log.segment.bytes" => self.log_defaults.segment_bytes = parse(key, value)?,
            "log.roll.ms" => self.log_defaults.segment_ms = parse(key, value)?,
            "log.roll.hours" => {
                self.log_defaults.segment_ms = parse::<i64>(key, value)? * 3_600_000
            }
            "log.index.size.max.bytes" => {
                self.log_defaults.segment_index_bytes = parse(key, value)?
            }
            "log.index.interval.bytes" => {
                self.log_defaults.index_interval_bytes = parse(key, value)?
            }
            "log.retention.ms" => self.log_defaults.retention_ms = parse(key, value)?,
            "log.retention.minutes" => {
                self.log_defaults.retention_ms = parse::<i64>(key, value)? * 60_000
            }
            "log.retention.hours" => {
                self.log_defaults.retention_ms = parse::<i64>(key, value)? * 3_600_000
            }
            "log.retention.bytes" => self.log_defaults.retention_bytes = parse(key, value)?,
            "message.max.bytes" => self.log_defaults.max_message_bytes = parse(key, value)?,
            "log.message.timestamp.type" => {
                self.log_defaults.message_timestamp_type = parse_timestamp_type(key, value)?
            }
            "log.message.timestamp.before.max.ms" => {
                self.log_defaults.message_timestamp_before_max_ms = non_negative(key, value)?
            }
            "log.message.timestamp.after.max.ms" => {
                self.log_defaults.message_timestamp_after_max_ms = non_negative(key, value)?
            }
            "cluster.id" => self.cluster_id = value.trim().to_string(),
            "group.initial.rebalance.delay.ms" => {
                self.group_initial_rebalance_delay_ms = parse(key, value)?
            }
            "group.min.session.timeout.ms" => {
                self.group_min_session_timeout_ms = parse(key, value)?
            }
            "group.max.session.timeout.ms" => {
                self.group_max_session_timeout_ms = parse(key, value)?
            }
            "offsets.topic.num.partitions" => {
                self.offsets_topic_num_partitions = parse(key, value)?;
                if self.offsets_topic_num_partitions < 1 {
                    return Err(invalid(key, value, "must be at least 1"));
                }
            }
            "offset.metadata.max.bytes" => self.offset_metadata_max_bytes = parse(key, value)?,
            "transaction.state.log.num.partitions" => {
                self.txn_state_num_partitions = parse(key, value)?;
                if self.txn_state_num_partitions < 1 {
                    return Err(invalid(key, value, "must be at least 1"));
                }
            }
            "transaction.max.timeout.ms" => {
                self.txn_max_timeout_ms = parse(key, value)?;
                if self.txn_max_timeout_ms < 1 {
                    return Err(invalid(key, value, "must be at least 1"));
                }
            }
            "transactional.id.expiration.ms" => {
                self.txn_id_expiration_ms = parse(key, value)?;
                if self.txn_id_expiration_ms < 1 {
                    return Err(invalid(key, value, "must be at least 1"));
                }
            }
            "transaction.abort.timed.out.transaction.cleanup.interval.ms" => {
                self.txn_abort_check_interval_ms = parse(key, value)?
            }
            "log.cleaner.enable" => self.cleaner_enable = parse(key, value)?,
            "log.cleaner.backoff.ms" => self.cleaner_backoff_ms = parse(key, value)?,
            "offsets.retention.minutes" => {
                self.offsets_retention_ms = parse::<i64>(key, value)?.saturating_mul(60_000)
            }
            "offsets.retention.check.interval.ms" => {
                self.offsets_retention_check_interval_ms = parse(key, value)?
            }
            "controller.listener" | "controller.listen" => {
                self.controller_listen = Some(parse(key, value.trim())?)
            }
            "controller.quorum.voters" => self.voters = parse_voters(key, value)?,
            "offsets.topic.replication.factor" => {
                self.offsets_topic_replication_factor = parse(key, value)?;
                if self.offsets_topic_replication_factor < 1 {
                    return Err(invalid(key, value, "must be at least 1"));
                }
            }
            "transaction.state.log.replication.factor" => {
                self.txn_state_replication_factor = parse(key, value)?;
                if self.txn_state_replication_factor < 1 {
                    return Err(invalid(key, value, "must be at least 1"));
                }
            }
            "broker.heartbeat.interval.ms" => {
                self.broker_heartbeat_interval_ms = parse(key, value)?
            }
            "broker.session.timeout.ms" => self.broker_session_timeout_ms = parse(key, value)?,
            "replica.lag.time.max.ms" => self.replica_lag_time_max_ms = parse(key, value)?,
            "replica.fetch.wait.max.ms" => self.replica_fetch_wait_max_ms = parse(key, value)?,
            "unclean.leader.election.enable" => {
                self.unclean_leader_election_enable = parse(key, value)?
            }
            "auto.leader.rebalance.enable" => {
                self.auto_leader_rebalance_enable = parse(key, value)?
            }
            "broker.rack" => self.rack = Some(value.trim().to_string()),
            "cluster.secret.file" => {
                self.cluster_secret_file = Some(PathBuf::from(value.trim()));
            }
            _ => return Err(ConfigError::UnknownKey(key.to_string())),
        }
        Ok(())
    }
}

/// Parses a limit that is either at least 1 or -1 (no limit, `None`), as Kafka spells it.
fn parse_positive_or_unbounded(key: &str, value: &str) -> Result<Option<u64>, ConfigError> {
    match parse::<i64>(key, value)? {
        -1 => Ok(None),
        n if n >= 1 => Ok(Some(n as u64)),
        _ => Err(invalid(
            key,
            value,
            "must be at least 1, or -1 for no limit",
        )),
    }
}

/// Parses `max.connections.per.ip.overrides`: `HOST_OR_IP:COUNT` entries separated by commas
/// (IPv6 addresses in brackets). A host name is resolved now and its limit applies to each of
/// its addresses.
pub fn parse_per_ip_overrides(
    key: &str,
    value: &str,
) -> Result<BTreeMap<IpAddr, usize>, ConfigError> {
    let mut overrides = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((host, count)) = entry.rsplit_once(':') else {
            return Err(invalid(key, value, "each entry is HOST_OR_IP:COUNT"));
        };
        let count: usize = parse(key, count)?;
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        // A set: a resolver may list one address more than once.
        let addresses: std::collections::BTreeSet<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => [ip].into(),
            Err(_) => (host, 0)
                .to_socket_addrs()
                .map_err(|e| invalid(key, value, &format!("cannot resolve `{host}`: {e}")))?
                .map(|addr| addr.ip())
                .collect(),
        };
        if addresses.is_empty() {
            return Err(invalid(key, value, &format!("`{host}` has no address")));
        }
        // As in Kafka's map, an address given twice takes the later count.
        for ip in addresses {
            overrides.insert(ip.to_canonical(), count);
        }
    }
    Ok(overrides)
}

/// A millisecond span that may not be negative.
fn non_negative(key: &str, value: &str) -> Result<i64, ConfigError> {
    let ms: i64 = parse(key, value)?;
    if ms < 0 {
        return Err(invalid(key, value, "must be at least 0"));
    }
    Ok(ms)
}

fn invalid(key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Parses `CreateTime` / `LogAppendTime` as Kafka spells them.
pub fn parse_timestamp_type(key: &str, value: &str) -> Result<TimestampType, ConfigError> {
    match value.trim() {
        "CreateTime" => Ok(TimestampType::CreateTime),
        "LogAppendTime" => Ok(TimestampType::LogAppendTime),
        _ => Err(invalid(key, value, "expected CreateTime or LogAppendTime")),
    }
}

/// Splits `host:port` (IPv6 hosts in brackets).
pub fn split_host_port(key: &str, addr: &str) -> Result<(String, u16), ConfigError> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| invalid(key, addr, "expected HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid(key, addr, "host is empty"));
    }
    Ok((host.to_string(), parse(key, port)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_kafka_names() {
        let mut config = BrokerConfig::default();
        let settings: BTreeMap<String, String> = [
            ("num.partitions", "3"),
            ("auto.create.topics.enable", "false"),
            ("log.retention.hours", "2"),
            ("advertised.listeners", "PLAINTEXT://example.test:19092"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        config.apply(&settings).unwrap();
        assert_eq!(config.num_partitions, 3);
        assert!(!config.auto_create_topics_enable);
        assert_eq!(config.log_defaults.retention_ms, 7_200_000);
        assert_eq!(config.advertised_host, "example.test");
        assert_eq!(config.advertised_port, 19092);
    }

    #[test]
    fn rejects_unknown_and_bad_values() {
        let mut config = BrokerConfig::default();
        let bad = |k: &str, v: &str| {
            let mut s = BTreeMap::new();
            s.insert(k.to_string(), v.to_string());
            s
        };
        assert!(matches!(
            config.apply(&bad("no.such.key", "1")),
            Err(ConfigError::UnknownKey(_))
        ));
        assert!(matches!(
            config.apply(&bad("num.partitions", "zero")),
            Err(ConfigError::InvalidValue { .. })
        ));
        assert!(config.apply(&bad("num.partitions", "0")).is_err());
        assert!(config.apply(&bad("queued.max.request.bytes", "0")).is_err());
        assert!(config.apply(&bad("connections.max.idle.ms", "-2")).is_err());
        assert!(config
            .apply(&bad("socket.request.read.timeout.ms", "0"))
            .is_err());
        assert!(config
            .apply(&bad("max.connections.per.ip.overrides", "10.0.0.1"))
            .is_err());
        assert!(config
            .apply(&bad("max.connections.per.ip.overrides", "10.0.0.1:x"))
            .is_err());
    }

    #[test]
    fn resource_limits_take_kafka_spellings() {
        let mut config = BrokerConfig::default();
        let settings: BTreeMap<String, String> = [
            ("queued.max.request.bytes", "-1"),
            ("connections.max.idle.ms", "5000"),
            ("max.connections.per.ip", "0"),
            (
                "max.connections.per.ip.overrides",
                "10.0.0.1:5, [::2]:7,localhost:9",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        config.apply(&settings).unwrap();
        config.validate().unwrap();
        assert_eq!(config.queued_max_request_bytes, None);
        assert_eq!(config.connections_max_idle_ms, Some(5000));
        let overrides = &config.max_connections_per_ip_overrides;
        assert_eq!(overrides[&"10.0.0.1".parse::<IpAddr>().unwrap()], 5);
        assert_eq!(overrides[&"::2".parse::<IpAddr>().unwrap()], 7);
        assert_eq!(overrides[&"127.0.0.1".parse::<IpAddr>().unwrap()], 9);
        let described: BTreeMap<_, _> = config.entries().into_iter().collect();
        assert_eq!(described["queued.max.request.bytes"], "-1");
        assert!(described["max.connections.per.ip.overrides"].contains("10.0.0.1:5"));
        config.max_connections_per_ip_overrides.clear();
        assert!(config.validate().is_err(), "0 per ip needs overrides");
    }
}
