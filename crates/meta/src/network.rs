//! How voters reach each other (openraft's `RaftNetworkFactory` / `RaftNetworkV2`).
//!
//! Step 1 runs one voter, which never sends an RPC, so every connection here is a stub that
//! reports the peer unreachable (openraft then backs off instead of spinning). The seam for a
//! real transport: [`NetworkFactory::new_client`] gets the target's id and its `BasicNode`
//! (whose `addr` is the peer's controller listener), and returns a per-peer client; a TCP client
//! implements the same three calls by sending the request (serde) and awaiting the answer of
//! `Raft::append_entries` / `Raft::vote` / `Raft::install_full_snapshot` on the other side,
//! honouring `RPCOption::soft_ttl()` and checking it reached the node it addressed.

use std::future::Future;

use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend};

use crate::raft_types::{NodeId, TypeConfig, Vote};
use crate::state::MetadataState;

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, MetadataState>;

/// The reason every stub RPC fails.
#[derive(Debug, thiserror::Error)]
#[error("no transport to node {target} at `{addr}`: this build runs a one-voter metadata quorum")]
pub struct NoTransport {
    pub target: NodeId,
    pub addr: String,
}

/// Hands out one client per peer.
#[derive(Debug, Default, Clone)]
pub struct NetworkFactory {}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = UnreachableNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        UnreachableNetwork {
            target,
            addr: node.addr.clone(),
        }
    }
}

/// A client to one peer that cannot reach it (see the module docs).
#[derive(Debug)]
pub struct UnreachableNetwork {
    target: NodeId,
    addr: String,
}

impl UnreachableNetwork {
    fn unreachable(&self) -> Unreachable<TypeConfig> {
        Unreachable::new(&NoTransport {
            target: self.target,
            addr: self.addr.clone(),
        })
    }
}

impl RaftNetworkV2<TypeConfig> for UnreachableNetwork {
    type SnapshotData = MetadataState;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(self.unreachable()))
    }
}
