//! Raw Kafka protocol over a blocking socket, for tests that need exact requests: framing with
//! sluice-protocol's encoders and reading response frames.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use sluice_protocol::messages::{ApiKey, RequestHeader};
use sluice_protocol::{Encodable, StrBytes};

use crate::harness::Broker;

pub(crate) fn connect(broker: &Broker) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", broker.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

pub(crate) fn frame(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &impl Encodable,
) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("sluice-wire-test")))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.to_vec()
}

/// Reads one response frame; returns (correlation id, rest after the v0 header) or None if closed.
pub(crate) fn read_response(stream: &mut TcpStream) -> Option<(i32, Bytes)> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).ok()?;
    let correlation = i32::from_be_bytes(body[..4].try_into().unwrap());
    Some((correlation, Bytes::from(body).slice(4..)))
}

/// Sends one request and decodes its response (skipping the flexible header's tagged fields).
pub(crate) fn call<Resp: sluice_protocol::Decodable>(
    stream: &mut TcpStream,
    key: ApiKey,
    version: i16,
    body: &impl Encodable,
) -> Resp {
    use std::io::Write;
    stream
        .write_all(&frame(key, version, 1, body))
        .expect("send request");
    let (_, mut response) = read_response(stream).expect("response");
    if key.response_header_version(version) >= 1 {
        let _tags = response.split_to(1);
    }
    Resp::decode(&mut response, version).expect("decode response")
}

/// Proves on `stream` that the client is cluster node `me` holding `secret`, to broker `peer`
/// (SaslHandshake `SLUICE-CLUSTER`, then two SaslAuthenticate v2 round trips), as brokers do
/// before broker-only requests. `Err` carries the broker's refusal.
pub(crate) fn authenticate_member(
    stream: &mut TcpStream,
    secret: &sluice_meta::membership::ClusterSecret,
    me: u64,
    peer: u64,
) -> Result<(), String> {
    use sluice_meta::membership::ClientHandshake;
    use sluice_meta::NodeId;
    use sluice_protocol::messages::{
        SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
        SaslHandshakeResponse,
    };
    let handshake: SaslHandshakeResponse = call(
        stream,
        ApiKey::SaslHandshake,
        1,
        &SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str("SLUICE-CLUSTER")),
    );
    if handshake.error_code != 0 {
        return Err(format!("SaslHandshake: error {}", handshake.error_code));
    }
    let mut token = |bytes: Vec<u8>| -> Result<Bytes, String> {
        let answer: SaslAuthenticateResponse = call(
            stream,
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes)),
        );
        match answer.error_code {
            0 => Ok(answer.auth_bytes),
            code => Err(format!(
                "SaslAuthenticate: error {code}: {}",
                answer.error_message.as_deref().unwrap_or("")
            )),
        }
    };
    let (state, first) = ClientHandshake::start(secret, NodeId(me), NodeId(peer)).unwrap();
    let server_first = token(first)?;
    let (state, proof) = state.respond(&server_first).map_err(|e| e.to_string())?;
    let server_proof = token(proof)?;
    state.finish(&server_proof).map_err(|e| e.to_string())
}

/// The cluster secret a single node created in its data dir.
pub(crate) fn data_dir_secret(
    data_dir: &std::path::Path,
) -> sluice_meta::membership::ClusterSecret {
    sluice_meta::membership::ClusterSecret::load(&data_dir.join("cluster-secret"))
        .expect("the node's cluster secret")
}
