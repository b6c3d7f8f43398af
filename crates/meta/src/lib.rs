//! Cluster metadata for Sluice: the metadata records, the state machine that applies them, and
//! Raft (openraft, pinned to `=0.10.0-alpha.37`) to order and persist them, behind this crate's
//! own API ([`MetaNode`]).
//!
//! Step 1 of `docs/design/cluster.md`: a one-voter cluster on one node. The network is a stub
//! ([`network::UnreachableNetwork`]) because a single voter never sends an RPC; a TCP transport
//! replaces it in step 2 without touching the storage or the state machine.
//!
//! Architecture Invariant: openraft types stay inside this crate's modules; callers see
//! [`MetaNode`], [`MetadataRecord`], [`MetadataState`] and the error types, so the alpha API
//! can change under us without rippling into the broker.

mod cluster;
#[cfg(test)]
mod conformance;
mod fsutil;
mod liveness;
mod log_store;
mod network;
mod node;
mod raft_types;
mod record;
mod server;
mod state;
mod state_machine;
mod wire;

pub use node::{Committed, MetaNode, MetaOptions, OpenError, ProposeError};
pub use raft_types::{LogIndex, NodeId};
pub use record::{Listener, MetadataRecord, Outcome, Rejection};
pub use state::{BrokerRegistration, MetadataState, TopicMeta};
