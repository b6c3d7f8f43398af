//! The controller RPC listener: accepts voters' and proposers' connections and answers their
//! requests ([`crate::wire`]) from this node's `Raft`.
//!
//! One task accepts; each connection gets its own task that serves its requests one at a time.
//! A frame that is too large, malformed or too slow closes that connection only. [`Server::stop`]
//! ends the accept task and every connection task before returning, so the port and the node's
//! `Raft` are free again.
//!
//! Trust: the listener is for the cluster's own nodes (like Kafka's controller listener). A
//! connection proves membership first ([`crate::membership`], the exchange in `crate::wire`):
//! until it has, nothing it sends reaches openraft or the liveness table, so no vote, append,
//! snapshot, proposal or heartbeat is taken from a client without the cluster secret. Garbage
//! cannot hurt a node either way; a node that does hold the secret is trusted like any voter.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::{ReadPolicy, ServerState};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::liveness::{Leadership, Liveness};
use crate::membership::{ClusterSecret, ServerHandshake, WarnLimiter};
use crate::raft_types::{LogIndex, NodeId, Raft, TypeConfig};
use crate::state::MetadataState;
use crate::wire::{self, FrameError, Hello, HelloAnswer, Request, RequestBody, Response};

/// Most connections served at once; more are closed on accept.
pub(crate) const CONNECTIONS_MAX: usize = 256;

/// A connection with no request for this long is closed (clients reconnect on demand).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long serving one request may take (a proposal on a leader that lost its quorum could
/// otherwise wait forever); the client then hears `Failed` and treats the outcome as unknown.
const SERVE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long writing one answer may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// At most one warning about refused connections per this interval.
const REFUSAL_WARNING_EVERY: Duration = Duration::from_secs(10);

/// This node's leadership as the metrics show it now: the term and the voters, if it leads.
pub(crate) fn leadership(raft: &Raft, id: NodeId) -> Option<(u64, BTreeSet<NodeId>)> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow_watched();
    if metrics.state != ServerState::Leader || metrics.current_leader != Some(id) {
        return None;
    }
    let voters = metrics.membership_config.membership().voter_ids().collect();
    Some((metrics.current_term, voters))
}

/// Answers requests for one node.
pub(crate) struct Handler {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft,
    pub(crate) liveness: Arc<Liveness>,
    /// What connecting nodes must prove they hold.
    pub(crate) secret: ClusterSecret,
    /// Keeps a peer that retries with the wrong secret from flooding the log.
    pub(crate) refusals: WarnLimiter,
}

impl Handler {
    fn current_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Answers `request` from `client`, the node the connection proved to be.
    async fn handle(&self, client: NodeId, request: Request) -> Response {
        if request.target != self.id {
            return Response::WrongNode {
                target: request.target,
                actual: self.id,
            };
        }
        let failed = |e: &dyn std::fmt::Display| Response::Failed(e.to_string());
        match request.body {
            RequestBody::AppendEntries(rpc) => match self.raft.append_entries(rpc).await {
                Ok(response) => Response::AppendEntries(response),
                Err(e) => failed(&e),
            },
            RequestBody::Vote(rpc) => match self.raft.vote(rpc).await {
                Ok(response) => Response::Vote(response),
                Err(e) => failed(&e),
            },
            RequestBody::PreVote(rpc) => match self.raft.pre_vote(rpc).await {
                Ok(response) => Response::Vote(response),
                Err(e) => failed(&e),
            },
            RequestBody::FullSnapshot { vote, meta, state } => {
                let snapshot = openraft::alias::SnapshotOf::<TypeConfig, MetadataState> {
                    meta,
                    snapshot: state,
                };
                match self.raft.install_full_snapshot(vote, snapshot).await {
                    Ok(response) => Response::Snapshot(response),
                    Err(e) => failed(&e),
                }
            }
            RequestBody::Propose(record) => match self.raft.client_write(record).await {
                Ok(response) => Response::Proposed {
                    index: LogIndex(response.log_id.index),
                    outcome: response.data,
                },
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                    Response::NotLeader {
                        leader: forward.leader_id,
                    }
                }
                Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(forward))) => {
                    Response::Discarded {
                        leader: forward.leader_id,
                    }
                }
                Err(e) => failed(&e),
            },
            // A member may only vouch for its own liveness.
            RequestBody::Heartbeat { from } if from != client => Response::Failed(format!(
                "a heartbeat for node {from} on a connection authenticated as node {client}"
            )),
            RequestBody::Heartbeat { from } => match leadership(&self.raft, self.id) {
                Some((term, voters)) => {
                    let voters = &voters;
                    self.liveness.record(from, Leadership { term, voters });
                    Response::HeartbeatRecorded
                }
                None => Response::NotLeader {
                    leader: self.current_leader().filter(|&leader| leader != self.id),
                },
            },
            RequestBody::ReadIndex => {
                match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
                    Ok(read) => Response::ReadIndex {
                        index: Some(LogIndex(read.log_id().index)),
                    },
                    Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward))) => {
                        Response::NotLeader {
                            leader: forward.leader_id,
                        }
                    }
                    Err(e) => failed(&e),
                }
            }
        }
    }
}

/// A running listener (see the module docs).
pub(crate) struct Server {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `listener` with `handler` until [`Server::stop`].
    pub(crate) fn spawn(listener: TcpListener, handler: Arc<Handler>) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, handler, stopped));
        Ok(Self {
            local_addr,
            stop,
            task,
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Closes the listener and every connection; returns once all their tasks have ended.
    pub(crate) async fn stop(self) {
        self.stop.send_replace(true);
        if let Err(e) = self.task.await {
            tracing::warn!("metadata RPC listener task failed: {e}");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    handler: Arc<Handler>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // A stop request, or the node dropped without stopping us.
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    while connections.try_join_next().is_some() {}
                    if connections.len() >= CONNECTIONS_MAX {
                        tracing::warn!(%peer, "metadata RPC listener: {CONNECTIONS_MAX} connections already open; closing a new one");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, peer, Arc::clone(&handler)));
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!("metadata RPC listener cannot accept: {e}");
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Runs the server's side of the membership exchange; returns the node the client proved to be,
/// or `None` (after telling it why, when it got that far) when the connection must close.
async fn authenticate(
    stream: &mut TcpStream,
    peer: SocketAddr,
    handler: &Handler,
) -> Option<NodeId> {
    let refuse = |reason: &dyn std::fmt::Display| {
        if let Some(suppressed) = handler.refusals.allow(REFUSAL_WARNING_EVERY) {
            tracing::warn!(%peer, suppressed, "refused a metadata RPC connection: {reason}");
        }
    };
    let exchange = async {
        let hello = |frame| match frame {
            Ok(hello) => Ok(hello),
            Err(FrameError::Closed) => Err(None),
            Err(e) => Err(Some(format!(
                "no cluster-membership handshake ({e}); is it a node of another Sluice \
                 version, or not a Sluice node?"
            ))),
        };
        let client_first = match hello(wire::read_frame(stream).await)? {
            Hello::ClientFirst(bytes) => bytes,
            other => return Err(Some(format!("expected client-first, got {other:?}"))),
        };
        let (state, server_first) =
            match ServerHandshake::start(&handler.secret, handler.id, &client_first) {
                Ok(started) => started,
                Err(e) => {
                    let reason = e.to_string();
                    let _ = wire::write_frame(stream, &HelloAnswer::Refused(reason.clone())).await;
                    return Err(Some(reason));
                }
            };
        let claimed = state.claimed_node();
        wire::write_frame(stream, &HelloAnswer::ServerFirst(server_first))
            .await
            .map_err(|_| None)?;
        let proof = match hello(wire::read_frame(stream).await)? {
            Hello::ClientProof(bytes) => bytes,
            other => {
                return Err(Some(format!(
                    "node {claimed}: expected its proof, got {other:?}"
                )))
            }
        };
        match state.finish(&proof) {
            Ok((node, server_proof)) => {
                wire::write_frame(stream, &HelloAnswer::ServerProof(server_proof))
                    .await
                    .map_err(|_| None)?;
                Ok(node)
            }
            Err(e) => {
                let reason = e.to_string();
                let _ = wire::write_frame(stream, &HelloAnswer::Refused(reason.clone())).await;
                Err(Some(reason))
            }
        }
    };
    match tokio::time::timeout(wire::HANDSHAKE_TIMEOUT, exchange).await {
        Ok(Ok(node)) => Some(node),
        Ok(Err(Some(reason))) => {
            refuse(&reason);
            None
        }
        Ok(Err(None)) => None,
        Err(_elapsed) => {
            refuse(&format!(
                "no cluster-membership handshake within {:?}",
                wire::HANDSHAKE_TIMEOUT
            ));
            None
        }
    }
}

async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, handler: Arc<Handler>) {
    let Some(client) = authenticate(&mut stream, peer, &handler).await else {
        return;
    };
    loop {
        let request: Request =
            match tokio::time::timeout(IDLE_TIMEOUT, wire::read_frame(&mut stream)).await {
                Ok(Ok(request)) => request,
                Ok(Err(FrameError::Closed)) | Err(_) => return,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, "closing metadata RPC connection: {e}");
                    return;
                }
            };
        let response =
            match tokio::time::timeout(SERVE_TIMEOUT, handler.handle(client, request)).await {
                Ok(response) => response,
                Err(_elapsed) => Response::Failed(format!("not served within {SERVE_TIMEOUT:?}")),
            };
        match tokio::time::timeout(WRITE_TIMEOUT, wire::write_frame(&mut stream, &response)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(%peer, "metadata RPC connection failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "metadata RPC answer not taken within {WRITE_TIMEOUT:?}");
                return;
            }
        }
    }
}
