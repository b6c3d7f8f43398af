//! The server side of SASL on the Kafka listener (KIP-43 and KIP-152: SaslHandshake picks a
//! mechanism, SaslAuthenticate carries its tokens), as a state machine per connection.
//!
//! One mechanism is enabled: `SLUICE-CLUSTER`, the cluster-membership exchange of
//! [`sluice_meta::membership`] (client-first, then the client's proof; the server answers
//! server-first, then its own proof). A client asking for any other mechanism gets
//! UNSUPPORTED_SASL_MECHANISM with the enabled list, as Kafka answers, so a client configured
//! for PLAIN or SCRAM learns at once that this listener does not offer it.
//!
//! The listener does not require authentication: a connection that never sends SaslHandshake
//! stays anonymous and may use every API that is not broker-only.

use sluice_meta::membership::{ClusterSecret, HandshakeError, ServerHandshake};
use sluice_meta::NodeId;

use super::{Principal, Session};

/// The mechanism by which a node proves it holds the cluster secret.
pub(crate) const CLUSTER_MECHANISM: &str = "SLUICE-CLUSTER";

/// Mechanisms SaslHandshake accepts (and lists in every answer).
pub(crate) const ENABLED_MECHANISMS: &[&str] = &[CLUSTER_MECHANISM];

/// Where a connection is in its SASL exchange.
#[derive(Debug)]
pub(crate) enum SaslState {
    /// No mechanism chosen (no SaslHandshake yet, or one for an unsupported mechanism).
    Idle,
    /// SaslHandshake chose `SLUICE-CLUSTER`; the next SaslAuthenticate carries client-first.
    Chosen,
    /// server-first was sent; the next SaslAuthenticate carries the client's proof.
    Challenged(ServerHandshake),
    /// Authenticated; the session's principal says as whom.
    Done,
    /// Authentication failed. As in Kafka, the connection is not used further: its next request
    /// closes it.
    Failed,
}

/// Why a SASL request was refused, with Kafka's error for it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SaslError {
    #[error(
        "SASL mechanism {asked} is not enabled on this listener; enabled: {}",
        ENABLED_MECHANISMS.join(", ")
    )]
    UnsupportedMechanism { asked: String },
    #[error("{0}")]
    IllegalState(&'static str),
    #[error("authentication as a cluster node failed: {0}")]
    Failed(#[from] HandshakeError),
}

impl SaslError {
    pub(crate) fn code(&self) -> sluice_protocol::error::ResponseError {
        use sluice_protocol::error::ResponseError;
        match self {
            SaslError::UnsupportedMechanism { .. } => ResponseError::UnsupportedSaslMechanism,
            SaslError::IllegalState(_) => ResponseError::IllegalSaslState,
            SaslError::Failed(_) => ResponseError::SaslAuthenticationFailed,
        }
    }
}

/// SaslHandshake: choose `mechanism` for this connection.
pub(crate) fn handshake(session: &mut Session, mechanism: &str) -> Result<(), SaslError> {
    if !matches!(session.sasl, SaslState::Idle) {
        return Err(SaslError::IllegalState(
            "SaslHandshake after a mechanism was already chosen on this connection \
             (re-authentication is not supported)",
        ));
    }
    if mechanism != CLUSTER_MECHANISM {
        return Err(SaslError::UnsupportedMechanism {
            asked: mechanism.to_owned(),
        });
    }
    session.sasl = SaslState::Chosen;
    Ok(())
}

/// SaslAuthenticate: one token of the chosen mechanism in, the answer token out. `me` is this
/// broker's node id (the client checks it reached the node it meant). A failure leaves the
/// session failed.
pub(crate) fn authenticate(
    session: &mut Session,
    secret: &ClusterSecret,
    me: NodeId,
    token: &[u8],
) -> Result<Vec<u8>, SaslError> {
    let step = match std::mem::replace(&mut session.sasl, SaslState::Failed) {
        SaslState::Chosen => ServerHandshake::start(secret, me, token).map(|(state, first)| {
            session.sasl = SaslState::Challenged(state);
            first
        }),
        SaslState::Challenged(state) => state.finish(token).map(|(node, proof)| {
            session.principal = Principal::ClusterNode(node);
            session.sasl = SaslState::Done;
            proof
        }),
        other => {
            session.sasl = other;
            return Err(SaslError::IllegalState(
                "SaslAuthenticate without a SaslHandshake choosing a mechanism, or after \
                 authentication completed",
            ));
        }
    };
    step.map_err(SaslError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_meta::membership::ClientHandshake;

    fn session() -> Session {
        Session::new("127.0.0.1:5000".parse().unwrap())
    }

    #[test]
    fn a_member_authenticates_as_its_node() {
        let secret = ClusterSecret::generate().unwrap();
        let mut s = session();
        handshake(&mut s, CLUSTER_MECHANISM).unwrap();
        let (client, first) = ClientHandshake::start(&secret, NodeId(3), NodeId(1)).unwrap();
        let server_first = authenticate(&mut s, &secret, NodeId(1), &first).unwrap();
        let (client, proof) = client.respond(&server_first).unwrap();
        let server_proof = authenticate(&mut s, &secret, NodeId(1), &proof).unwrap();
        client.finish(&server_proof).unwrap();
        assert_eq!(s.principal, Principal::ClusterNode(NodeId(3)));
        assert!(matches!(s.sasl, SaslState::Done));
        // No second exchange on the same connection.
        assert!(matches!(
            handshake(&mut s, CLUSTER_MECHANISM),
            Err(SaslError::IllegalState(_))
        ));
    }

    #[test]
    fn a_wrong_secret_fails_and_leaves_the_session_anonymous() {
        let ours = ClusterSecret::generate().unwrap();
        let theirs = ClusterSecret::generate().unwrap();
        let mut s = session();
        handshake(&mut s, CLUSTER_MECHANISM).unwrap();
        let (client, first) = ClientHandshake::start(&theirs, NodeId(3), NodeId(1)).unwrap();
        let server_first = authenticate(&mut s, &ours, NodeId(1), &first).unwrap();
        let (_, proof) = client.respond(&server_first).unwrap();
        let failed = authenticate(&mut s, &ours, NodeId(1), &proof).unwrap_err();
        assert_eq!(
            failed.code(),
            sluice_protocol::error::ResponseError::SaslAuthenticationFailed
        );
        assert_eq!(s.principal, Principal::Anonymous);
        assert!(matches!(s.sasl, SaslState::Failed));
    }

    #[test]
    fn other_mechanisms_and_out_of_order_tokens_are_refused() {
        let secret = ClusterSecret::generate().unwrap();
        let mut s = session();
        let plain = handshake(&mut s, "PLAIN").unwrap_err();
        assert_eq!(
            plain.code(),
            sluice_protocol::error::ResponseError::UnsupportedSaslMechanism
        );
        assert!(
            plain.to_string().contains("enabled: SLUICE-CLUSTER"),
            "{plain}"
        );
        assert!(matches!(s.sasl, SaslState::Idle));
        let early = authenticate(&mut s, &secret, NodeId(1), b"token").unwrap_err();
        assert_eq!(
            early.code(),
            sluice_protocol::error::ResponseError::IllegalSaslState
        );
        assert!(matches!(s.sasl, SaslState::Idle));
        handshake(&mut s, CLUSTER_MECHANISM).unwrap();
        let garbage = authenticate(&mut s, &secret, NodeId(1), b"garbage").unwrap_err();
        assert_eq!(
            garbage.code(),
            sluice_protocol::error::ResponseError::SaslAuthenticationFailed
        );
        assert_eq!(s.principal, Principal::Anonymous);
    }
}
