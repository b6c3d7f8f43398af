//! How voters reach each other: the client side of the controller RPC (openraft's
//! `RaftNetworkFactory` / `RaftNetworkV2`, plus the connections [`MetaNode`](crate::MetaNode)
//! uses to forward proposals, heartbeats and read-index requests).
//!
//! Each client keeps one persistent TCP connection to its peer, opened lazily and dropped on any
//! error or timeout (the next call reconnects). A new connection first proves this node's
//! membership to the peer and checks the peer's ([`crate::membership`]). Calls are lock-step
//! (one request in flight per connection, [`crate::wire`]), and every call is bounded:
//! openraft's RPCs by `RPCOption::soft_ttl()`, ours by the caller's deadline.

use std::future::Future;
use std::io;
use std::time::Duration;

use openraft::error::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend};
use tokio::net::TcpStream;

use crate::membership::{ClientHandshake, ClusterSecret, WarnLimiter};
use crate::raft_types::{NodeId, TypeConfig, Vote};
use crate::state::MetadataState;
use crate::wire::{self, FrameError, Hello, HelloAnswer, Request, RequestBody, Response};

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, MetadataState>;

/// How long establishing a connection may take (the whole call may still be shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// At most one error about a failed membership exchange per this interval (peers are retried
/// many times a second).
const HANDSHAKE_ERROR_EVERY: Duration = Duration::from_secs(10);
static HANDSHAKE_ERRORS: WarnLimiter = WarnLimiter::new();

/// Why a call to a peer failed. `sent` says whether the request may have reached it (a
/// non-idempotent request must not be blindly retried then).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("cannot connect to node {target} at `{addr}`: {source}")]
    Connect {
        target: NodeId,
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("node {target} at `{addr}` did not answer within {timeout:?}")]
    Timeout {
        target: NodeId,
        addr: String,
        timeout: Duration,
        sent: bool,
    },
    #[error("connection to node {target} at `{addr}` failed: {source}")]
    Connection {
        target: NodeId,
        addr: String,
        #[source]
        source: FrameError,
    },
    #[error("node {target} at `{addr}` answered a request meant for it as node {actual}")]
    WrongNode {
        target: NodeId,
        addr: String,
        actual: NodeId,
    },
    #[error("cannot prove cluster membership to node {target} at `{addr}`: {reason}")]
    Membership {
        target: NodeId,
        addr: String,
        reason: String,
    },
    #[error("node {target} answered with an unexpected message: {response}")]
    Unexpected { target: NodeId, response: String },
    #[error("node {target} failed the request: {reason}")]
    Remote { target: NodeId, reason: String },
}

impl CallError {
    /// Whether the request may have reached the peer (and taken effect there).
    pub(crate) fn maybe_delivered(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::WrongNode { .. } | Self::Membership { .. } => false,
            Self::Timeout { sent, .. } => *sent,
            Self::Connection { .. } | Self::Unexpected { .. } | Self::Remote { .. } => true,
        }
    }
}

/// Who this node is to its peers: its id and the secret it proves membership with.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub(crate) me: NodeId,
    pub(crate) secret: ClusterSecret,
}

/// One persistent connection to one peer (see the module docs).
#[derive(Debug)]
pub(crate) struct Connection {
    target: NodeId,
    addr: String,
    credentials: Credentials,
    stream: Option<TcpStream>,
}

impl Connection {
    pub(crate) fn new(target: NodeId, addr: String, credentials: Credentials) -> Self {
        Self {
            target,
            addr,
            credentials,
            stream: None,
        }
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `body` to the peer and returns its answer, within `timeout`. A
    /// [`Response::WrongNode`] or [`Response::Failed`] answer is an error. Cancel-safe: the
    /// stream is taken out for the call, so a dropped call drops the connection with it.
    pub(crate) async fn call(
        &mut self,
        body: RequestBody,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let request = Request {
            target: self.target,
            body,
        };
        let mut sent = false;
        let result = tokio::time::timeout(timeout, self.exchange(&request, &mut sent)).await;
        let response = match result {
            Ok(result) => result?,
            Err(_elapsed) => {
                return Err(CallError::Timeout {
                    target: self.target,
                    addr: self.addr.clone(),
                    timeout,
                    sent,
                })
            }
        };
        match response {
            Response::WrongNode { actual, .. } => Err(CallError::WrongNode {
                target: self.target,
                addr: self.addr.clone(),
                actual,
            }),
            Response::Failed(reason) => Err(CallError::Remote {
                target: self.target,
                reason,
            }),
            other => Ok(other),
        }
    }

    async fn exchange(
        &mut self,
        request: &Request,
        sent: &mut bool,
    ) -> Result<Response, CallError> {
        let mut stream = match self.stream.take().filter(still_open) {
            Some(stream) => stream,
            None => {
                let connect_error = |source| CallError::Connect {
                    target: self.target,
                    addr: self.addr.clone(),
                    source,
                };
                // Bounded on its own, so a black-holed peer fails as "not sent" (retryable)
                // rather than using up the whole call's time.
                let connect = TcpStream::connect(&self.addr);
                let mut stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                    Ok(connected) => connected.map_err(connect_error)?,
                    Err(_elapsed) => {
                        return Err(connect_error(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no connection within {CONNECT_TIMEOUT:?}"),
                        )))
                    }
                };
                // Lock-step RPCs are latency-bound; don't let Nagle hold back a heartbeat.
                let _ = stream.set_nodelay(true);
                self.prove_membership(&mut stream).await?;
                stream
            }
        };
        let connection_error = |source| CallError::Connection {
            target: self.target,
            addr: self.addr.clone(),
            source,
        };
        *sent = true;
        wire::write_frame(&mut stream, request)
            .await
            .map_err(|e| connection_error(FrameError::Io(e)))?;
        let response = wire::read_frame(&mut stream)
            .await
            .map_err(connection_error)?;
        self.stream = Some(stream);
        Ok(response)
    }
}

impl Connection {
    /// The client's side of the membership exchange on a new connection (nothing of the
    /// request is sent before it succeeds). A failure is logged here, rate-limited: it is how
    /// a node with the wrong secret learns why it cannot join.
    async fn prove_membership(&self, stream: &mut TcpStream) -> Result<(), CallError> {
        let failed = |reason: String| {
            if let Some(suppressed) = HANDSHAKE_ERRORS.allow(HANDSHAKE_ERROR_EVERY) {
                tracing::error!(
                    peer = %self.target,
                    addr = %self.addr,
                    suppressed,
                    "cannot prove cluster membership to node {}: {reason}; every node of a \
                     cluster must hold the same cluster secret (this node's has fingerprint {})",
                    self.target,
                    self.credentials.secret.fingerprint()
                );
            }
            CallError::Membership {
                target: self.target,
                addr: self.addr.clone(),
                reason,
            }
        };
        // Nothing of the request was sent yet: a connection lost here is "not delivered".
        let broken = |e: FrameError| CallError::Connect {
            target: self.target,
            addr: self.addr.clone(),
            source: io::Error::other(format!("during the membership exchange: {e}")),
        };
        let Credentials { me, secret } = &self.credentials;
        let (state, client_first) =
            ClientHandshake::start(secret, *me, self.target).map_err(|e| failed(e.to_string()))?;
        wire::write_frame(stream, &Hello::ClientFirst(client_first))
            .await
            .map_err(|e| broken(FrameError::Io(e)))?;
        let server_first = match wire::read_frame(stream).await.map_err(broken)? {
            HelloAnswer::ServerFirst(bytes) => bytes,
            HelloAnswer::Refused(reason) => return Err(failed(format!("it refused: {reason}"))),
            other => return Err(failed(format!("unexpected answer {other:?}"))),
        };
        let (state, proof) = state
            .respond(&server_first)
            .map_err(|e| failed(e.to_string()))?;
        wire::write_frame(stream, &Hello::ClientProof(proof))
            .await
            .map_err(|e| broken(FrameError::Io(e)))?;
        match wire::read_frame(stream).await.map_err(broken)? {
            HelloAnswer::ServerProof(proof) => {
                state.finish(&proof).map_err(|e| failed(e.to_string()))
            }
            HelloAnswer::Refused(reason) => Err(failed(format!("it refused: {reason}"))),
            other => Err(failed(format!("unexpected answer {other:?}"))),
        }
    }
}

/// Whether an idle pooled connection is still usable: the peer has not closed it (a restarted
/// peer closes its end) and sent nothing unasked. Checked before reuse so a request is not
/// written into a dead connection, which would leave its fate unknown.
fn still_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    match stream.try_read(&mut probe) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
        // EOF, unexpected bytes, or an error: start over on a new connection.
        _ => false,
    }
}

/// Hands openraft one client per peer.
#[derive(Debug, Clone)]
pub(crate) struct NetworkFactory {
    credentials: Credentials,
}

impl NetworkFactory {
    pub(crate) fn new(credentials: Credentials) -> Self {
        Self { credentials }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient {
            id: self.credentials.me,
            connection: Connection::new(target, node.addr.clone(), self.credentials.clone()),
        }
    }
}

/// openraft's client to one peer: each RPC becomes one request on the persistent connection.
#[derive(Debug)]
pub(crate) struct PeerClient {
    id: NodeId,
    connection: Connection,
}

impl PeerClient {
    async fn rpc(
        &mut self,
        action: RPCTypes,
        body: RequestBody,
        option: &RPCOption,
    ) -> Result<Response, RPCError<TypeConfig>> {
        let timeout = option.soft_ttl();
        self.connection
            .call(body, timeout)
            .await
            .map_err(|e| self.rpc_error(action, timeout, e))
    }

    fn rpc_error(
        &self,
        action: RPCTypes,
        timeout: Duration,
        error: CallError,
    ) -> RPCError<TypeConfig> {
        match error {
            CallError::Timeout { .. } => RPCError::Timeout(Timeout {
                action,
                id: self.id,
                target: self.connection.target,
                timeout,
            }),
            // A broken connection is worth one quick retry on a fresh one.
            CallError::Connection { .. } => RPCError::Network(NetworkError::new(&error)),
            other => RPCError::Unreachable(Unreachable::new(&other)),
        }
    }

    fn unexpected(&self, response: Response) -> RPCError<TypeConfig> {
        let error = CallError::Unexpected {
            target: self.connection.target,
            response: format!("{response:?}"),
        };
        RPCError::Unreachable(Unreachable::new(&error))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = MetadataState;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .rpc(
                RPCTypes::AppendEntries,
                RequestBody::AppendEntries(rpc),
                &option,
            )
            .await?
        {
            Response::AppendEntries(response) => Ok(response),
            other => Err(self.unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .rpc(RPCTypes::Vote, RequestBody::Vote(rpc), &option)
            .await?
        {
            Response::Vote(response) => Ok(response),
            other => Err(self.unexpected(other)),
        }
    }

    /// Asks the peer's `Raft::pre_vote` (never the trait's default, which grants blindly).
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .rpc(RPCTypes::Vote, RequestBody::PreVote(rpc), &option)
            .await?
        {
            Response::Vote(response) => Ok(response),
            other => Err(self.unexpected(other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let body = RequestBody::FullSnapshot {
            vote,
            meta: snapshot.meta,
            state: snapshot.snapshot,
        };
        let call = self.rpc(RPCTypes::InstallSnapshot, body, &option);
        let response = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            response = call => response,
        };
        match response {
            Ok(Response::Snapshot(response)) => Ok(response),
            Ok(other) => Err(streaming_error(self.unexpected(other))),
            Err(e) => Err(streaming_error(e)),
        }
    }
}

fn streaming_error(error: RPCError<TypeConfig>) -> StreamingError<TypeConfig> {
    match error {
        RPCError::Timeout(e) => StreamingError::Timeout(e),
        RPCError::Unreachable(e) => StreamingError::Unreachable(e),
        RPCError::Network(e) => StreamingError::Network(e),
        RPCError::RemoteError(e) => match e.source {},
    }
}
