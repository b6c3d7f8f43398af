//! Cluster metadata for Sluice: the metadata records, the state machine that applies them, and
//! Raft (openraft, pinned to `=0.10.0-alpha.37`) to order and persist them, behind this crate's
//! own API ([`MetaNode`]).
//!
//! Two ways to run a node:
//! - [`MetaNode::open`]: a one-voter quorum on one node, no listener (step 1 of
//!   `docs/design/cluster.md`).
//! - [`MetaNode::open_cluster`]: one voter of a multi-voter quorum. Voters talk over TCP through
//!   a controller RPC listener (`server`) and persistent per-peer clients (`network`), with
//!   length-prefixed JSON frames (`wire`). [`MetaNode::propose`], [`MetaNode::heartbeat`] and
//!   [`MetaNode::wait_leader`] work on any node: followers forward to the leader over the same
//!   listener (`cluster`). Broker liveness for fencing lives in memory on the leader
//!   ([`MetaNode::heartbeats`], `liveness`).
//!
//! Architecture Invariant: openraft types stay inside this crate's modules; callers see
//! [`MetaNode`], [`MetadataRecord`], [`MetadataState`] and the error types, so the alpha API
//! can change under us without rippling into the broker.
//!
//! Architecture Invariant: garbage on the listener never takes a node down: a frame that does
//! not parse, is too large or too slow closes that one connection. (The listener still trusts
//! well-formed Raft messages; it belongs on the voters' network, see `server`.)

mod cluster;
#[cfg(test)]
mod conformance;
mod fsutil;
mod liveness;
mod log_store;
pub mod membership;
mod network;
mod node;
mod raft_types;
mod record;
mod server;
mod state;
mod state_machine;
mod wire;

pub use node::{Committed, MetaNode, MetaOptions, OpenError, ProposeError, StateWatch};
pub use raft_types::{LogIndex, NodeId};
pub use record::{LeaderChange, Listener, MetadataRecord, Outcome, PartitionState, Rejection};
pub mod controller;
pub use state::{BrokerRegistration, MetadataState, TopicMeta};
