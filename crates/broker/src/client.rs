//! A minimal async Kafka client for the CLI and for replica fetchers: one TCP connection, one
//! request at a time, every message encoded and decoded by `sluice-protocol`.
//!
//! It learns the broker's version ranges with ApiVersions v0 on connect, so a request the broker
//! cannot serve fails with a sentence instead of a closed connection. Brokers talking to each
//! other ([`Client::connect_member`]) then prove cluster membership with the SASL mechanism
//! `SLUICE-CLUSTER`, which the broker-only requests need.

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use sluice_meta::membership::{ClientHandshake, ClusterSecret};
use sluice_meta::NodeId;
use sluice_protocol::messages::{
    ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};
use sluice_protocol::{Decodable, Encodable, Request, StrBytes};

use crate::auth::sasl::CLUSTER_MECHANISM;

/// SaslHandshake and SaslAuthenticate versions a node sends.
const SASL_HANDSHAKE_VERSION: i16 = 1;
const SASL_AUTHENTICATE_VERSION: i16 = 2;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client id every request carries (brokers log it; DescribeGroups shows it for members).
pub const CLIENT_ID: &str = "sluice-cli";

/// The largest response frame accepted; a longer length prefix means a confused peer.
const RESPONSE_BYTES_MAX: usize = 100 * 1024 * 1024;

/// The context of an error of [`Client::connect_member`] that came from proving membership
/// (the broker was reached), as opposed to not reaching it.
#[derive(Debug)]
pub struct MembershipRefused {
    peer: NodeId,
    address: String,
    fingerprint: String,
}

impl std::fmt::Display for MembershipRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot prove cluster membership to node {} at {}; every node of a cluster must \
             hold the same cluster secret (this node's has fingerprint {})",
            self.peer, self.address, self.fingerprint
        )
    }
}

/// Whether `error` (from [`Client::connect_member`]) is a failed membership proof.
pub fn is_membership_error(error: &anyhow::Error) -> bool {
    error.downcast_ref::<MembershipRefused>().is_some()
}

/// A connection to one broker.
pub struct Client {
    stream: TcpStream,
    /// `HOST:PORT` as the user gave it, for messages.
    address: String,
    /// Bounds connecting and each request's round trip.
    timeout: Duration,
    correlation_id: i32,
    /// Sent in every request header.
    client_id: String,
    /// (API key, min, max) as the broker advertised them.
    versions: Vec<(i16, i16, i16)>,
}

impl Client {
    /// Connects to `address` (`HOST:PORT`) and asks which API versions the broker serves.
    pub async fn connect(address: &str, timeout: Duration) -> anyhow::Result<Client> {
        Self::connect_as(address, timeout, CLIENT_ID).await
    }

    /// [`Client::connect`] with the client id the broker sees.
    pub async fn connect_as(
        address: &str,
        timeout: Duration,
        client_id: &str,
    ) -> anyhow::Result<Client> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => bail!("cannot reach broker at {address}: {e}"),
            Err(_) => bail!(
                "cannot reach broker at {address}: no connection within {} ms",
                timeout.as_millis()
            ),
        };
        // Requests are small and answered one at a time: do not let Nagle delay them.
        stream
            .set_nodelay(true)
            .with_context(|| format!("cannot configure the connection to {address}"))?;
        let mut client = Client {
            stream,
            address: address.to_owned(),
            timeout,
            correlation_id: 0,
            client_id: client_id.to_owned(),
            versions: Vec::new(),
        };
        let answer = client.round_trip(0, &ApiVersionsRequest::default()).await?;
        if let Some(error) = error_name(answer.error_code) {
            bail!("broker at {address} refused ApiVersions: {error}");
        }
        client.versions = answer
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        Ok(client)
    }

    /// [`Client::connect_as`], then proves to broker `peer` that this node, `me`, holds the
    /// cluster `secret` (and checks that `peer` holds it too): the connection then carries
    /// broker-only requests (a follower's fetches, WriteTxnMarkers).
    pub async fn connect_member(
        address: &str,
        timeout: Duration,
        client_id: &str,
        secret: &ClusterSecret,
        me: NodeId,
        peer: NodeId,
    ) -> anyhow::Result<Client> {
        let mut client = Self::connect_as(address, timeout, client_id).await?;
        client
            .authenticate_member(secret, me, peer)
            .await
            .with_context(|| MembershipRefused {
                peer,
                address: address.to_owned(),
                fingerprint: secret.fingerprint(),
            })?;
        Ok(client)
    }

    /// The client's side of `SLUICE-CLUSTER`: SaslHandshake, then client-first and the
    /// client's proof in two SaslAuthenticate requests, checking the broker's proof last.
    async fn authenticate_member(
        &mut self,
        secret: &ClusterSecret,
        me: NodeId,
        peer: NodeId,
    ) -> anyhow::Result<()> {
        let handshake = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str(CLUSTER_MECHANISM));
        let answer = self.send(SASL_HANDSHAKE_VERSION, &handshake).await?;
        if let Some(error) = error_name(answer.error_code) {
            let offered: Vec<&str> = answer.mechanisms.iter().map(|m| m.as_str()).collect();
            bail!("SaslHandshake for {CLUSTER_MECHANISM} refused: {error} (offered: {offered:?})");
        }
        let (state, client_first) = ClientHandshake::start(secret, me, peer)?;
        let server_first = self.sasl_token(client_first).await?;
        let (state, proof) = state.respond(&server_first)?;
        let server_proof = self.sasl_token(proof).await?;
        state.finish(&server_proof)?;
        Ok(())
    }

    /// Sends one SaslAuthenticate token and returns the broker's answer token.
    async fn sasl_token(&mut self, token: Vec<u8>) -> anyhow::Result<Bytes> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        let answer = self.send(SASL_AUTHENTICATE_VERSION, &request).await?;
        if let Some(error) = error_name(answer.error_code) {
            let message = answer.error_message.as_deref().unwrap_or("no message");
            bail!("SaslAuthenticate refused: {error}: {message}");
        }
        Ok(answer.auth_bytes)
    }

    /// The timeout this client bounds connecting and each round trip with.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `request` as `version` of its API and returns the decoded response.
    pub async fn send<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> anyhow::Result<R::Response> {
        let key = api_key(R::KEY)?;
        match self.versions.iter().find(|(k, _, _)| *k == R::KEY) {
            Some(&(_, min, max)) if (min..=max).contains(&version) => {}
            Some(&(_, min, max)) => bail!(
                "the broker at {} does not support {key:?} v{version} (it serves v{min}–v{max})",
                self.address
            ),
            None => bail!(
                "the broker at {} does not implement {key:?} (needed: v{version})",
                self.address
            ),
        }
        self.round_trip(version, request).await
    }

    /// Sends `request` as `version` of its API without waiting for an answer: for requests the
    /// broker never answers (Produce with acks=0).
    pub async fn send_without_response<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> anyhow::Result<()> {
        let key = api_key(R::KEY)?;
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let frame = encode_frame(key, version, self.correlation_id, &self.client_id, request)?;
        match tokio::time::timeout(self.timeout, self.stream.write_all(&frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => bail!("{key:?} request to {} failed: {e}", self.address),
            Err(_) => bail!(
                "cannot send {key:?} to {} within {} ms",
                self.address,
                self.timeout.as_millis()
            ),
        }
    }

    /// Writes one request frame and reads its response frame, within the timeout.
    async fn round_trip<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> anyhow::Result<R::Response> {
        let key = api_key(R::KEY)?;
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let frame = encode_frame(key, version, correlation_id, &self.client_id, request)?;
        let address = self.address.clone();
        let io = async {
            self.stream.write_all(&frame).await?;
            let length = self.stream.read_i32().await?;
            let length = usize::try_from(length).unwrap_or(usize::MAX);
            if length > RESPONSE_BYTES_MAX {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("response frame of {length} bytes is over the {RESPONSE_BYTES_MAX}-byte limit"),
                ));
            }
            let mut body = vec![0u8; length];
            self.stream.read_exact(&mut body).await?;
            Ok(Bytes::from(body))
        };
        let body = match tokio::time::timeout(self.timeout, io).await {
            Ok(Ok(body)) => body,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => bail!(
                "the broker at {address} closed the connection instead of answering {key:?} v{version}"
            ),
            Ok(Err(e)) => bail!("{key:?} request to {address} failed: {e}"),
            Err(_) => bail!(
                "no answer to {key:?} from {address} within {} ms",
                self.timeout.as_millis()
            ),
        };
        decode_response::<R>(key, version, correlation_id, body)
            .with_context(|| format!("bad {key:?} v{version} response from {address}"))
    }
}

fn api_key(key: i16) -> anyhow::Result<ApiKey> {
    // UnknownApiKey displays as "unknown API key N", the message this always gave.
    ApiKey::try_from(key).map_err(anyhow::Error::from)
}

/// A length-prefixed request: header (version chosen by the API and its version), then body.
fn encode_frame<R: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &str,
    request: &R,
) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_owned())))
        .encode(&mut buf, key.request_header_version(version))
        .with_context(|| format!("cannot encode the {key:?} request header"))?;
    request
        .encode(&mut buf, version)
        .with_context(|| format!("cannot encode {key:?} v{version}"))?;
    let length = i32::try_from(buf.len() - 4).context("request too large")?;
    buf[..4].copy_from_slice(&length.to_be_bytes());
    Ok(buf.freeze())
}

/// Decodes a response frame (without its length prefix), checking the correlation id and that the
/// body was consumed exactly.
fn decode_response<R: Request>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    mut body: Bytes,
) -> anyhow::Result<R::Response> {
    let header = ResponseHeader::decode(&mut body, key.response_header_version(version))?;
    ensure!(
        header.correlation_id == correlation_id,
        "correlation id {} answers request {correlation_id}",
        header.correlation_id
    );
    let response = R::Response::decode(&mut body, version)?;
    ensure!(
        !body.has_remaining(),
        "{} unread bytes after the response",
        body.remaining()
    );
    Ok(response)
}

/// Kafka's name for an error code (`UNKNOWN_MEMBER_ID (25)`), or None for 0.
pub fn error_name(code: i16) -> Option<String> {
    sluice_protocol::error::ResponseError::try_from_code(code).map(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::messages::{ListGroupsRequest, ListGroupsResponse};

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(error_name(0), None);
        assert_eq!(error_name(25).as_deref(), Some("UNKNOWN_MEMBER_ID (25)"));
        assert_eq!(error_name(69).as_deref(), Some("GROUP_ID_NOT_FOUND (69)"));
        assert_eq!(error_name(-2).as_deref(), Some("error code -2"));
    }

    #[test]
    fn frames_carry_the_length_and_a_flexible_header() {
        let frame = encode_frame(
            ApiKey::ListGroups,
            4,
            7,
            CLIENT_ID,
            &ListGroupsRequest::default(),
        )
        .unwrap();
        let length = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(length, frame.len() - 4);
        let mut rest = frame.slice(4..);
        let header = RequestHeader::decode(&mut rest, 2).unwrap();
        assert_eq!(header.request_api_key, ApiKey::ListGroups as i16);
        assert_eq!(header.correlation_id, 7);
        assert_eq!(header.client_id.as_deref(), Some(CLIENT_ID));
        let body = ListGroupsRequest::decode(&mut rest, 4).unwrap();
        assert!(body.states_filter.is_empty());
    }

    #[test]
    fn responses_must_match_the_request() {
        let mut buf = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(3)
            .encode(&mut buf, 1)
            .unwrap();
        ListGroupsResponse::default().encode(&mut buf, 4).unwrap();
        let body = buf.freeze();
        assert!(
            decode_response::<ListGroupsRequest>(ApiKey::ListGroups, 4, 3, body.clone()).is_ok()
        );
        let wrong = decode_response::<ListGroupsRequest>(ApiKey::ListGroups, 4, 4, body.clone());
        assert!(wrong.unwrap_err().to_string().contains("correlation"));
        let mut longer = BytesMut::from(&body[..]);
        longer.put_u8(0);
        let trailing =
            decode_response::<ListGroupsRequest>(ApiKey::ListGroups, 4, 3, longer.freeze());
        assert!(trailing.unwrap_err().to_string().contains("unread"));
    }
}
