//! Data replication between brokers (Kafka's ISR protocol): the leader's view of its followers
//! ([`leader`]) and the followers' fetchers ([`fetcher`]).

pub mod fetcher;
pub mod follower;
pub mod leader;
