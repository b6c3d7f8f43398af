//! The coordinator's connections to other partition leaders for WriteTxnMarkers (Kafka's
//! `TransactionMarkerChannelManager`, without its queueing): one idle connection kept per
//! leader, taken out while a request uses it, so concurrent completions to one leader open
//! extra connections that are closed afterwards. At most one idle connection per broker of the
//! cluster is kept; a connection that failed is dropped. Each connection proves cluster
//! membership before its first request (WriteTxnMarkers is broker-only).

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use sluice_meta::membership::ClusterSecret;
use sluice_meta::NodeId;
use sluice_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use crate::client::Client;

/// The WriteTxnMarkers version sent (the only one the codec and Kafka 4 brokers know).
pub(crate) const WRITE_TXN_MARKERS_VERSION: i16 = 1;
/// The client id other brokers see on marker requests.
const CLIENT_ID: &str = "sluice-txn-coordinator";

/// Why markers could not be sent to a leader.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MarkerSendError {
    #[error("broker {0} has no listener in the metadata")]
    NoListener(NodeId),
    #[error("WriteTxnMarkers to broker {leader} at {address} failed: {source:#}")]
    Request {
        leader: NodeId,
        address: String,
        #[source]
        source: anyhow::Error,
    },
}

/// Idle connections by leader, with the address each was opened to.
#[derive(Default)]
pub(crate) struct MarkerChannels {
    idle: Mutex<HashMap<NodeId, (String, Client)>>,
}

impl MarkerChannels {
    /// Sends `request` to `leader` at `address` and returns its answer. `timeout` bounds
    /// connecting and the round trip (which includes the leader's wait for its ISR). A new
    /// connection authenticates as node `me` with the cluster `secret`.
    pub(crate) async fn send(
        &self,
        leader: NodeId,
        address: &str,
        timeout: Duration,
        (secret, me): (&ClusterSecret, NodeId),
        request: &WriteTxnMarkersRequest,
    ) -> Result<WriteTxnMarkersResponse, MarkerSendError> {
        let fail = |source| MarkerSendError::Request {
            leader,
            address: address.to_owned(),
            source,
        };
        let cached = self
            .idle
            .lock()
            .remove(&leader)
            .filter(|(a, _)| a == address)
            .map(|(_, client)| client);
        if let Some(mut client) = cached {
            // An idle connection may have been closed by a restart of the leader: on failure,
            // fall through to a fresh one (markers are idempotent, so a resend is harmless).
            if let Ok(response) = client.send(WRITE_TXN_MARKERS_VERSION, request).await {
                self.put_back(leader, address, client);
                return Ok(response);
            }
        }
        let mut client = Client::connect_member(address, timeout, CLIENT_ID, secret, me, leader)
            .await
            .map_err(fail)?;
        let response = client
            .send(WRITE_TXN_MARKERS_VERSION, request)
            .await
            .map_err(fail)?;
        self.put_back(leader, address, client);
        Ok(response)
    }

    fn put_back(&self, leader: NodeId, address: &str, client: Client) {
        self.idle
            .lock()
            .entry(leader)
            .or_insert_with(|| (address.to_owned(), client));
    }
}

impl std::fmt::Debug for MarkerChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarkerChannels")
            .field("idle", &self.idle.lock().len())
            .finish()
    }
}
