//! A [`MetaNode`] as one voter of a multi-voter quorum: opening it with a listener, finding the
//! leader, and routing proposals, broker heartbeats and read indexes to it from any node.
//!
//! Requests to the leader go over the same controller listener the voters use for Raft
//! ([`crate::wire`]). Routing follows openraft's view of the leader and retries, until the
//! caller's deadline, whatever cannot have taken effect (no leader yet, "not leader" answers, a
//! peer that cannot be reached). A proposal whose answer is lost after it was sent is not
//! retried: it may commit, and records are not all idempotent.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ReadPolicy};
use parking_lot::Mutex;
use tokio::time::Instant as Deadline;

use crate::liveness::Leadership;
use crate::membership::ClusterSecret;
use crate::network::{CallError, Connection, Credentials};
use crate::node::{Committed, Membership, MetaNode, MetaOptions, OpenError, ProposeError};
use crate::raft_types::{LogIndex, NodeId};
use crate::record::MetadataRecord;
use crate::server;
use crate::wire::{RequestBody, Response};

/// How long one heartbeat may take to reach the leader.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(1000);

/// Idle connections kept per peer for forwarded requests.
const IDLE_CONNECTIONS_PER_PEER_MAX: usize = 4;

/// Pause between attempts to reach a leader (the election or the leader change is under way).
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Pooled connections to other voters for forwarded requests: a call takes one (or dials a new
/// one), and puts it back only after a clean answer.
#[derive(Debug)]
pub(crate) struct Peers {
    credentials: Credentials,
    idle: Mutex<BTreeMap<NodeId, Vec<Connection>>>,
}

impl Peers {
    pub(crate) fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            idle: Mutex::default(),
        }
    }

    async fn call(
        &self,
        target: NodeId,
        addr: &str,
        body: RequestBody,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let pooled = {
            let mut idle = self.idle.lock();
            let connections = idle.entry(target).or_default();
            // A voter's address changed (membership change): forget the old connections.
            connections.retain(|c| c.addr() == addr);
            connections.pop()
        };
        let mut connection = pooled
            .unwrap_or_else(|| Connection::new(target, addr.to_string(), self.credentials.clone()));
        let response = connection.call(body, timeout).await?;
        let mut idle = self.idle.lock();
        let connections = idle.entry(target).or_default();
        if connections.len() < IDLE_CONNECTIONS_PER_PEER_MAX {
            connections.push(connection);
        }
        Ok(response)
    }
}

impl MetaNode {
    /// Opens the metadata under `dir` as voter `node_id` of the quorum `voters` (id to
    /// `HOST:PORT` of each voter's controller listener, this node included), serving RPCs on
    /// `listen`.
    ///
    /// Every connection between voters first proves that both ends hold `secret`, the cluster
    /// secret ([`crate::membership`]); the listener serves nothing to a connection that has not.
    ///
    /// On first start (empty log) the membership is initialized with all `voters`; every voter
    /// does the same with the same set. Later starts reuse the membership in the log, and
    /// `voters` is not consulted. Returns at once, without waiting for a quorum (the first of
    /// three voters starts alone): use [`MetaNode::wait_leader`] for that.
    pub async fn open_cluster(
        dir: &Path,
        node_id: NodeId,
        voters: BTreeMap<NodeId, String>,
        listen: SocketAddr,
        secret: ClusterSecret,
        options: MetaOptions,
    ) -> Result<Self, OpenError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| OpenError::Bind {
                addr: listen.to_string(),
                source,
            })?;
        Self::open_cluster_with(dir, node_id, voters, listener, secret, options).await
    }

    /// [`MetaNode::open_cluster`] on a listener the caller already bound (tests bind port 0 and
    /// hand the listener over, so no other process can take the port in between).
    pub async fn open_cluster_on(
        dir: &Path,
        node_id: NodeId,
        voters: BTreeMap<NodeId, String>,
        listener: std::net::TcpListener,
        secret: ClusterSecret,
        options: MetaOptions,
    ) -> Result<Self, OpenError> {
        let addr = listener
            .local_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        let bind_error = |source| OpenError::Bind {
            addr: addr.clone(),
            source,
        };
        listener.set_nonblocking(true).map_err(bind_error)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(bind_error)?;
        Self::open_cluster_with(dir, node_id, voters, listener, secret, options).await
    }

    async fn open_cluster_with(
        dir: &Path,
        node_id: NodeId,
        voters: BTreeMap<NodeId, String>,
        listener: tokio::net::TcpListener,
        secret: ClusterSecret,
        options: MetaOptions,
    ) -> Result<Self, OpenError> {
        if !voters.contains_key(&node_id) {
            return Err(OpenError::NotAVoter {
                node: node_id,
                voters: voters.into_keys().collect(),
            });
        }
        Self::open_as(
            dir,
            node_id,
            options,
            Membership::Cluster {
                voters,
                listener,
                secret,
            },
        )
        .await
    }

    /// The leader this node knows of, if any (possibly stale by an election).
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Whether this node leads the quorum now (as far as it knows).
    pub fn is_leader(&self) -> bool {
        server::leadership(&self.raft, self.id).is_some()
    }

    /// The voters of the current membership: id to controller address.
    pub fn voters(&self) -> BTreeMap<NodeId, String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        membership
            .voter_ids()
            .map(|id| {
                let addr = membership
                    .get_node(&id)
                    .map(|node| node.addr.clone())
                    .unwrap_or_default();
                (id, addr)
            })
            .collect()
    }

    /// The controller address of `id` in the current membership.
    fn address_of(&self, id: NodeId) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|node: &BasicNode| node.addr.clone())
    }

    /// Waits (until `deadline`) for some leader to be known.
    async fn known_leader(
        &self,
        deadline: Deadline,
        timeout: Duration,
        last_problem: &str,
    ) -> Result<NodeId, ProposeError> {
        let mut metrics = self.raft.metrics();
        loop {
            if let Some(leader) = metrics.borrow_watched().current_leader {
                return Ok(leader);
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ProposeError::Stopped("openraft stopped".to_string())),
                Err(_elapsed) => {
                    return Err(ProposeError::NoLeader {
                        timeout,
                        last_problem: if last_problem.is_empty() {
                            "no leader elected".to_string()
                        } else {
                            last_problem.to_string()
                        },
                    })
                }
            }
        }
    }

    /// Sends `body` to `leader`, bounded by `deadline`.
    async fn call_leader(
        &self,
        leader: NodeId,
        body: RequestBody,
        deadline: Deadline,
    ) -> Result<Response, CallError> {
        let addr = self.address_of(leader).unwrap_or_default();
        let timeout = deadline.saturating_duration_since(Deadline::now());
        self.peers.call(leader, &addr, body, timeout).await
    }

    /// Sleeps a little before the next attempt, unless the deadline comes first.
    async fn pause(deadline: Deadline) {
        tokio::time::sleep_until(deadline.min(Deadline::now() + RETRY_PAUSE)).await;
    }

    /// Ends a round that did not succeed: past `deadline` the call fails with what went wrong
    /// last, otherwise a short pause before the next round.
    async fn next_round(
        deadline: Deadline,
        timeout: Duration,
        last_problem: &str,
    ) -> Result<(), ProposeError> {
        if Deadline::now() >= deadline {
            return Err(ProposeError::NoLeader {
                timeout,
                last_problem: last_problem.to_string(),
            });
        }
        Self::pause(deadline).await;
        Ok(())
    }

    /// Waits (until `deadline`) for this node's state machine to apply `index`.
    async fn wait_applied(
        &self,
        index: LogIndex,
        deadline: Deadline,
        timeout: Duration,
    ) -> Result<(), ProposeError> {
        let mut applied = self.applied.clone();
        let wait = applied.wait_for(|applied| applied.index >= Some(index));
        let waited = tokio::time::timeout_at(deadline, wait)
            .await
            .map(|result| result.map(|_| ()));
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_closed)) => Err(ProposeError::Stopped("openraft stopped".to_string())),
            Err(_elapsed) => Err(ProposeError::NotApplied { index, timeout }),
        }
    }

    /// Commits `record` through the quorum, from any node: on the leader directly, elsewhere by
    /// forwarding it to the leader (retrying leader changes for up to
    /// [`MetaOptions::propose_timeout`]). Returns once this node's own state machine has applied
    /// it, so [`MetaNode::state`] already reflects it.
    pub async fn propose(&self, record: MetadataRecord) -> Result<Committed, ProposeError> {
        let timeout = self.propose_timeout;
        let deadline = Deadline::now() + timeout;
        let mut last_problem = String::new();
        loop {
            let leader = self.known_leader(deadline, timeout, &last_problem).await?;
            if leader == self.id {
                let write = self.raft.client_write(record.clone());
                // A leader that lost its quorum would wait forever.
                let Ok(written) = tokio::time::timeout_at(deadline, write).await else {
                    return Err(ProposeError::Indeterminate {
                        leader,
                        reason: format!("not committed within {timeout:?}"),
                    });
                };
                match written {
                    // Applied here before openraft answered (the state machine publishes first).
                    Ok(response) => {
                        return Ok(Committed {
                            index: LogIndex(response.log_id.index),
                            outcome: response.data,
                        })
                    }
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                        last_problem = format!(
                            "this node stopped leading (leader now {:?})",
                            forward.leader_id
                        );
                    }
                    Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(forward))) => {
                        return Err(ProposeError::Discarded {
                            leader: forward.leader_id,
                        })
                    }
                    Err(RaftError::APIError(other)) => {
                        return Err(ProposeError::Refused(other.to_string()))
                    }
                    Err(RaftError::Fatal(fatal)) => {
                        return Err(ProposeError::Stopped(fatal.to_string()))
                    }
                }
            } else {
                let body = RequestBody::Propose(record.clone());
                match self.call_leader(leader, body, deadline).await {
                    Ok(Response::Proposed { index, outcome }) => {
                        // Our own apply gets its own bound: the commit already happened.
                        let apply_deadline = Deadline::now() + timeout;
                        self.wait_applied(index, apply_deadline, timeout).await?;
                        return Ok(Committed { index, outcome });
                    }
                    answer @ Ok(Response::NotLeader { .. }) => {
                        last_problem = unexpected(leader, answer);
                    }
                    Ok(Response::Discarded { leader }) => {
                        return Err(ProposeError::Discarded { leader })
                    }
                    Ok(other) => {
                        return Err(ProposeError::Refused(format!(
                            "leader {leader} answered {other:?}"
                        )))
                    }
                    Err(e) if e.maybe_delivered() => {
                        return Err(ProposeError::Indeterminate {
                            leader,
                            reason: e.to_string(),
                        })
                    }
                    Err(e) => last_problem = e.to_string(),
                }
            }
            Self::next_round(deadline, timeout, last_problem.as_str()).await?;
        }
    }

    /// Tells the leader this node is alive (broker liveness for fencing): recorded directly on
    /// the leader, forwarded elsewhere; retried through leader changes for up to
    /// [`MetaOptions::propose_timeout`]. Safe to repeat.
    pub async fn heartbeat(&self) -> Result<(), ProposeError> {
        // Short: a heartbeat stuck on a leader that stopped answering (paused, partitioned)
        // would starve the new leader of heartbeats for the whole proposal timeout, and it
        // would fence everyone. The caller sends the next one soon anyway.
        let timeout = self.propose_timeout.min(HEARTBEAT_TIMEOUT);
        let deadline = Deadline::now() + timeout;
        let mut last_problem = String::new();
        loop {
            let leader = self.known_leader(deadline, timeout, &last_problem).await?;
            if leader == self.id {
                match server::leadership(&self.raft, self.id) {
                    Some((term, voters)) => {
                        let voters = &voters;
                        self.liveness.record(self.id, Leadership { term, voters });
                        return Ok(());
                    }
                    None => last_problem = "this node stopped leading".to_string(),
                }
            } else {
                let body = RequestBody::Heartbeat { from: self.id };
                match self.call_leader(leader, body, deadline).await {
                    Ok(Response::HeartbeatRecorded) => return Ok(()),
                    answer => last_problem = unexpected(leader, answer),
                }
            }
            Self::next_round(deadline, timeout, last_problem.as_str()).await?;
        }
    }

    /// When each node last sent a heartbeat, as this node saw it while leading; `None` unless
    /// this node leads. A new leader counts every voter as seen when its leadership began.
    pub fn heartbeats(&self) -> Option<BTreeMap<NodeId, Instant>> {
        let (term, voters) = server::leadership(&self.raft, self.id)?;
        let voters = &voters;
        Some(self.liveness.snapshot(Leadership { term, voters }))
    }

    /// Waits until a leader is known and this node has applied everything that leader had
    /// committed when asked; returns the leader.
    ///
    /// How: the leader runs openraft's read-index protocol (`ensure_linearizable(ReadIndex)`:
    /// it confirms with a quorum that it still leads and returns its commit index, or the first
    /// index of its term if that is larger), and this node waits until its own applied index
    /// reaches that. So a later `state()` here shows every write acknowledged before the call.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<NodeId, ProposeError> {
        let deadline = Deadline::now() + timeout;
        let mut last_problem = String::new();
        loop {
            let leader = self.known_leader(deadline, timeout, &last_problem).await?;
            if leader == self.id {
                // ensure_linearizable also waits for the local state machine.
                let read = self.raft.ensure_linearizable(ReadPolicy::ReadIndex);
                match tokio::time::timeout_at(deadline, read).await {
                    Ok(Ok(_)) => return Ok(leader),
                    Ok(Err(e)) => last_problem = e.to_string(),
                    Err(_elapsed) => last_problem = "read index not confirmed".to_string(),
                }
            } else {
                match self
                    .call_leader(leader, RequestBody::ReadIndex, deadline)
                    .await
                {
                    Ok(Response::ReadIndex { index }) => {
                        if let Some(index) = index {
                            self.wait_applied(index, deadline, timeout).await?;
                        }
                        return Ok(leader);
                    }
                    answer => last_problem = unexpected(leader, answer),
                }
            }
            Self::next_round(deadline, timeout, last_problem.as_str()).await?;
        }
    }
}

/// Why `leader`'s answer was not the one wanted, for the error after the last retry.
fn unexpected(leader: NodeId, answer: Result<Response, CallError>) -> String {
    match answer {
        Ok(Response::NotLeader { leader: next }) => {
            format!("node {leader} is no longer the leader (it names {next:?})")
        }
        Ok(other) => format!("leader {leader} answered {other:?}"),
        Err(e) => e.to_string(),
    }
}
