//! Sluice's broker: a Kafka-protocol server over the `sluice-log` storage engine.
//!
//! Entry points: build a [`BrokerConfig`], open a [`Broker`] with [`Broker::open`] (locks the data
//! directory, loads metadata, recovers logs), then [`server::run`] it on a bound listener until
//! [`Broker::begin_shutdown`].

pub mod api;
pub mod auth;
pub mod broker;
pub mod client;
mod cluster;
pub mod config;
mod connection;
mod connection_quotas;
mod errors;
pub mod frame;
pub mod group;
mod handlers;
pub mod inspect;
pub mod internal_topics;
pub mod metadata;
pub mod metrics;
pub mod partition;
pub mod replica_manager;
pub mod replication;
pub mod request;
mod request_pool;
pub mod server;
pub mod topic_config;
pub mod txn;

pub use broker::Broker;
pub use config::BrokerConfig;
