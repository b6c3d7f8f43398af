//! SaslHandshake and SaslAuthenticate: the Kafka messages around the SASL state machine of
//! `crate::auth::sasl`. A refusal carries Kafka's error code and, on SaslAuthenticate, a message
//! saying why; a failed authentication closes the connection at its next request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_meta::membership::WarnLimiter;
use sluice_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use sluice_protocol::StrBytes;

use crate::auth::sasl::{self, SaslError, ENABLED_MECHANISMS};
use crate::auth::Session;
use crate::broker::Broker;
use crate::errors;
use crate::metadata::node_id;

/// At most one warning about failed authentications per this interval (a node with the wrong
/// secret retries several times a second).
const FAILURE_WARNING_EVERY: Duration = Duration::from_secs(10);
static FAILURES: WarnLimiter = WarnLimiter::new();

pub(crate) fn handshake(
    session: &mut Session,
    request: SaslHandshakeRequest,
) -> SaslHandshakeResponse {
    let mechanisms = ENABLED_MECHANISMS
        .iter()
        .map(|m| StrBytes::from_static_str(m))
        .collect();
    let response = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
    match sasl::handshake(session, &request.mechanism) {
        Ok(()) => response,
        Err(e) => {
            tracing::debug!(peer = %session.peer, error = %e, "SaslHandshake refused");
            response.with_error_code(errors::code(e.code()))
        }
    }
}

pub(crate) fn authenticate(
    broker: &Arc<Broker>,
    session: &mut Session,
    request: SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    let me = node_id(broker.config.node_id);
    match sasl::authenticate(session, &broker.cluster_secret, me, &request.auth_bytes) {
        Ok(token) => SaslAuthenticateResponse::default()
            .with_auth_bytes(Bytes::from(token))
            // No re-authentication (KIP-368): the session does not expire.
            .with_session_lifetime_ms(0),
        Err(e) => {
            if matches!(e, SaslError::Failed(_)) {
                if let Some(suppressed) = FAILURES.allow(FAILURE_WARNING_EVERY) {
                    tracing::warn!(peer = %session.peer, suppressed, error = %e, "SASL authentication failed");
                }
            }
            SaslAuthenticateResponse::default()
                .with_error_code(errors::code(e.code()))
                .with_error_message(Some(StrBytes::from_string(e.to_string())))
        }
    }
}
