//! Who is at the other end of a Kafka connection, and what that lets it do.
//!
//! Every connection has a [`Session`] holding its [`Principal`]: anonymous until it
//! authenticates. Today the only way to authenticate is the SASL mechanism `SLUICE-CLUSTER`
//! ([`sasl`]), by which a node proves it holds the cluster secret ([`secret`]) and becomes
//! `ClusterNode:<id>`. The broker-only operations — a follower's Fetch and OffsetForLeaderEpoch
//! (`replica_id` >= 0) and WriteTxnMarkers — ask the principal here, as Kafka's handlers ask its
//! authorizer for CLUSTER_ACTION; everything else stays open to anonymous clients, as on a
//! Kafka PLAINTEXT listener without an authorizer.
//!
//! The seam for the security work (TLS, SASL PLAIN/SCRAM/OAUTHBEARER, ACLs): more principals
//! (users), more mechanisms in [`sasl`], and an authorizer behind the same two questions
//! ([`Principal::may_cluster_action`], [`Principal::may_act_as_replica`]).

pub(crate) mod sasl;
pub mod secret;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use sluice_meta::membership::WarnLimiter;
use sluice_meta::NodeId;

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Not authenticated: any client of the Kafka listener.
    Anonymous,
    /// A node of this cluster, proven with the cluster secret.
    ClusterNode(NodeId),
}

impl fmt::Display for Principal {
    /// Kafka's `Type:name` form, as logs and (later) ACLs show principals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Anonymous => f.write_str("User:ANONYMOUS"),
            Principal::ClusterNode(id) => write!(f, "ClusterNode:{id}"),
        }
    }
}

impl Principal {
    /// Kafka's CLUSTER_ACTION on the cluster resource: requests only brokers send to each
    /// other (WriteTxnMarkers).
    pub fn may_cluster_action(&self) -> bool {
        matches!(self, Principal::ClusterNode(_))
    }

    /// Whether this principal may speak for follower replica `replica_id` (a Fetch or
    /// OffsetForLeaderEpoch with that `replica_id`): only the node itself may, so no one can
    /// report progress a follower has not made.
    pub fn may_act_as_replica(&self, replica_id: i32) -> bool {
        match self {
            Principal::ClusterNode(id) => u64::try_from(replica_id).is_ok_and(|r| r == id.0),
            Principal::Anonymous => false,
        }
    }
}

/// What one connection knows about its client: its address, who it proved to be, and where it
/// is in an authentication exchange. Owned by the connection's reader, which handles requests
/// in order, so a SaslAuthenticate always sees the state its predecessors left.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) peer: SocketAddr,
    pub(crate) principal: Principal,
    pub(crate) sasl: sasl::SaslState,
}

impl Session {
    pub(crate) fn new(peer: SocketAddr) -> Self {
        Self {
            peer,
            principal: Principal::Anonymous,
            sasl: sasl::SaslState::Idle,
        }
    }
}

/// At most one warning about refused broker-only requests per this interval: a forger may send
/// them many times a second.
const REFUSAL_WARNING_EVERY: Duration = Duration::from_secs(10);
static REFUSALS: WarnLimiter = WarnLimiter::new();

/// Logs (rate-limited) that `what` was refused to `principal` from `client`.
pub(crate) fn warn_refused(what: &str, principal: &Principal, client: Option<std::net::IpAddr>) {
    if let Some(suppressed) = REFUSALS.allow(REFUSAL_WARNING_EVERY) {
        tracing::warn!(
            client = ?client,
            %principal,
            suppressed,
            "refused {what}: only a node of this cluster, authenticated with the cluster secret \
             (SASL mechanism {}), may send it",
            sasl::CLUSTER_MECHANISM
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_node_speaks_for_its_own_replica() {
        let node = Principal::ClusterNode(NodeId(2));
        assert!(node.may_act_as_replica(2));
        assert!(!node.may_act_as_replica(3));
        assert!(!node.may_act_as_replica(-1));
        assert!(node.may_cluster_action());
        assert!(!Principal::Anonymous.may_act_as_replica(2));
        assert!(!Principal::Anonymous.may_cluster_action());
        assert_eq!(Principal::Anonymous.to_string(), "User:ANONYMOUS");
        assert_eq!(node.to_string(), "ClusterNode:2");
    }
}
