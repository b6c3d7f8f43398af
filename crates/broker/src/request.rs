//! From one request frame to its reply: header parsing, the version check, decoding with the
//! `sluice-protocol` codecs, dispatch to the API's handler, and response encoding.
//!
//! A handler does its state-changing work synchronously, in the order requests arrive on the
//! connection, and may return a future for the part that waits (a long-poll fetch, an fsync before
//! an acks=all answer). Replies are written in request order by the connection.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use sluice_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, AlterConfigsRequest,
    AlterPartitionReassignmentsRequest, ApiKey, ApiVersionsRequest, CreatePartitionsRequest,
    CreateTopicsRequest, DeleteGroupsRequest, DeleteRecordsRequest, DeleteTopicsRequest,
    DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest, DescribeLogDirsRequest,
    DescribeProducersRequest, DescribeTransactionsRequest, EndTxnRequest, FetchRequest,
    FindCoordinatorRequest, HeartbeatRequest, IncrementalAlterConfigsRequest,
    InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
    ListOffsetsRequest, ListPartitionReassignmentsRequest, ListTransactionsRequest,
    MetadataRequest, OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest,
    OffsetForLeaderEpochRequest, ProduceRequest, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslHandshakeRequest, SyncGroupRequest, TxnOffsetCommitRequest,
    WriteTxnMarkersRequest,
};
use sluice_protocol::{Decodable, Encodable};

use crate::auth::sasl::SaslState;
use crate::auth::{Principal, Session};
use crate::broker::Broker;
use crate::handlers;

/// What the connection sends back for one request.
pub(crate) enum Reply {
    /// A complete response frame (length prefix included).
    Ready(Bytes),
    /// A response that completes later; `None` closes the connection (encoding failed).
    Later(BoxFuture<'static, Option<Bytes>>),
    /// A response frame in pieces (records sent from files), completing later; `None` closes the
    /// connection.
    LaterFrame(BoxFuture<'static, Option<crate::frame::Frame>>),
    /// No response at all (acks=0 produce).
    Nothing,
}

/// Why a request closed its connection (Kafka closes on all of these too).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("request of {0} bytes is shorter than a request header")]
    Truncated(usize),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{key:?} version {version} is not supported (supported: {min}..={max})")]
    UnsupportedVersion {
        key: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("{key:?} is not implemented by this broker")]
    NotImplemented { key: ApiKey },
    #[error("malformed {key:?} v{version} request: {reason}")]
    Malformed {
        key: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("cannot encode {key:?} v{version} response: {reason}")]
    Encode {
        key: ApiKey,
        version: i16,
        reason: String,
    },
    #[error(
        "{key:?} after a failed SASL authentication (the connection is closed, as Kafka does)"
    )]
    AuthenticationFailed { key: ApiKey },
}

/// Identifies the request a response answers.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    /// The client id from the request header ("" when absent).
    pub client_id: String,
    /// The client's address, when the request came from a connection.
    pub client_host: Option<std::net::IpAddr>,
    /// Who sent the request (anonymous unless the connection authenticated).
    pub principal: Principal,
}

impl Ctx {
    /// Encodes `body` as this request's response frame.
    pub(crate) fn encode<R: Encodable>(&self, body: &R) -> Result<Bytes, RequestError> {
        let header_version = self.key.response_header_version(self.version);
        let mut buf = BytesMut::with_capacity(64);
        buf.put_i32(0);
        let fail = |e: sluice_protocol::EncodeError| RequestError::Encode {
            key: self.key,
            version: self.version,
            reason: e.to_string(),
        };
        ResponseHeader::default()
            .with_correlation_id(self.correlation_id)
            .encode(&mut buf, header_version)
            .map_err(fail)?;
        body.encode(&mut buf, self.version).map_err(fail)?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok(buf.freeze())
    }

    /// A ready reply holding `body`.
    pub(crate) fn reply<R: Encodable>(&self, body: &R) -> Result<Reply, RequestError> {
        self.encode(body).map(Reply::Ready)
    }

    /// A reply whose body comes from `fut`.
    pub(crate) fn reply_later<R, F>(self, fut: F) -> Reply
    where
        R: Encodable + Send + 'static,
        F: std::future::Future<Output = R> + Send + 'static,
    {
        Reply::Later(Box::pin(async move {
            let body = fut.await;
            match self.encode(&body) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    tracing::error!(error = %e, "dropping connection");
                    None
                }
            }
        }))
    }
}

fn decode<T: Decodable>(ctx: &Ctx, mut body: Bytes) -> Result<T, RequestError> {
    T::decode(&mut body, ctx.version).map_err(|e| RequestError::Malformed {
        key: ctx.key,
        version: ctx.version,
        reason: e.to_string(),
    })
}

/// A decoded request of an implemented API.
#[derive(Debug)]
pub enum Request {
    ApiVersions(ApiVersionsRequest),
    Metadata(MetadataRequest),
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    InitProducerId(InitProducerIdRequest),
    DescribeCluster(DescribeClusterRequest),
    FindCoordinator(FindCoordinatorRequest),
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    OffsetDelete(OffsetDeleteRequest),
    ListGroups(ListGroupsRequest),
    DescribeGroups(DescribeGroupsRequest),
    DeleteGroups(DeleteGroupsRequest),
    DescribeConfigs(DescribeConfigsRequest),
    DescribeLogDirs(DescribeLogDirsRequest),
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
    CreatePartitions(CreatePartitionsRequest),
    DeleteRecords(DeleteRecordsRequest),
    AlterConfigs(AlterConfigsRequest),
    IncrementalAlterConfigs(IncrementalAlterConfigsRequest),
    AddPartitionsToTxn(AddPartitionsToTxnRequest),
    AddOffsetsToTxn(AddOffsetsToTxnRequest),
    TxnOffsetCommit(TxnOffsetCommitRequest),
    EndTxn(EndTxnRequest),
    DescribeTransactions(DescribeTransactionsRequest),
    ListTransactions(ListTransactionsRequest),
    DescribeProducers(DescribeProducersRequest),
    WriteTxnMarkers(WriteTxnMarkersRequest),
    AlterPartitionReassignments(AlterPartitionReassignmentsRequest),
    ListPartitionReassignments(ListPartitionReassignmentsRequest),
    SaslHandshake(SaslHandshakeRequest),
    SaslAuthenticate(SaslAuthenticateRequest),
    /// An ApiVersions request of a version we do not know (answered per KIP-511).
    UnsupportedApiVersions,
}

/// Parses a request frame (without its length prefix): header, version check, body. Never panics
/// and never allocates more than the frame's size suggests, whatever the bytes (a fuzz target).
pub fn decode_request(frame: Bytes) -> Result<(Ctx, Request), RequestError> {
    if frame.len() < 8 {
        return Err(RequestError::Truncated(frame.len()));
    }
    let mut fixed = &frame[..8];
    let api_key = fixed.get_i16();
    let version = fixed.get_i16();
    let correlation_id = fixed.get_i32();
    let key = ApiKey::try_from(api_key).map_err(|_| RequestError::UnknownApi(api_key))?;
    let Some((min, max)) = crate::api::supported_range(key) else {
        return Err(RequestError::NotImplemented { key });
    };
    if !(min..=max).contains(&version) {
        if key == ApiKey::ApiVersions {
            // KIP-511: answer an ApiVersions version we do not know with a v0 response carrying
            // UNSUPPORTED_VERSION and our ranges, so the client can retry with a version we have.
            let ctx = Ctx {
                key,
                version: 0,
                correlation_id,
                client_id: String::new(),
                client_host: None,
                principal: Principal::Anonymous,
            };
            return Ok((ctx, Request::UnsupportedApiVersions));
        }
        return Err(RequestError::UnsupportedVersion {
            key,
            version,
            min,
            max,
        });
    }
    let mut body = frame;
    let header =
        RequestHeader::decode(&mut body, key.request_header_version(version)).map_err(|e| {
            RequestError::Malformed {
                key,
                version,
                reason: format!("header: {e}"),
            }
        })?;
    let ctx = Ctx {
        key,
        version,
        correlation_id,
        client_id: header.client_id.map(|c| c.to_string()).unwrap_or_default(),
        client_host: None,
        principal: Principal::Anonymous,
    };
    let request = match key {
        ApiKey::ApiVersions => Request::ApiVersions(decode(&ctx, body)?),
        ApiKey::Metadata => Request::Metadata(decode(&ctx, body)?),
        ApiKey::Produce => Request::Produce(decode(&ctx, body)?),
        ApiKey::Fetch => Request::Fetch(decode(&ctx, body)?),
        ApiKey::ListOffsets => Request::ListOffsets(decode(&ctx, body)?),
        ApiKey::CreateTopics => Request::CreateTopics(decode(&ctx, body)?),
        ApiKey::DeleteTopics => Request::DeleteTopics(decode(&ctx, body)?),
        ApiKey::InitProducerId => Request::InitProducerId(decode(&ctx, body)?),
        ApiKey::DescribeCluster => Request::DescribeCluster(decode(&ctx, body)?),
        ApiKey::FindCoordinator => Request::FindCoordinator(decode(&ctx, body)?),
        ApiKey::JoinGroup => Request::JoinGroup(decode(&ctx, body)?),
        ApiKey::SyncGroup => Request::SyncGroup(decode(&ctx, body)?),
        ApiKey::Heartbeat => Request::Heartbeat(decode(&ctx, body)?),
        ApiKey::LeaveGroup => Request::LeaveGroup(decode(&ctx, body)?),
        ApiKey::OffsetCommit => Request::OffsetCommit(decode(&ctx, body)?),
        ApiKey::OffsetFetch => Request::OffsetFetch(decode(&ctx, body)?),
        ApiKey::OffsetDelete => Request::OffsetDelete(decode(&ctx, body)?),
        ApiKey::ListGroups => Request::ListGroups(decode(&ctx, body)?),
        ApiKey::DescribeGroups => Request::DescribeGroups(decode(&ctx, body)?),
        ApiKey::DeleteGroups => Request::DeleteGroups(decode(&ctx, body)?),
        ApiKey::DescribeConfigs => Request::DescribeConfigs(decode(&ctx, body)?),
        ApiKey::DescribeLogDirs => Request::DescribeLogDirs(decode(&ctx, body)?),
        ApiKey::OffsetForLeaderEpoch => Request::OffsetForLeaderEpoch(decode(&ctx, body)?),
        ApiKey::CreatePartitions => Request::CreatePartitions(decode(&ctx, body)?),
        ApiKey::DeleteRecords => Request::DeleteRecords(decode(&ctx, body)?),
        ApiKey::AlterConfigs => Request::AlterConfigs(decode(&ctx, body)?),
        ApiKey::IncrementalAlterConfigs => Request::IncrementalAlterConfigs(decode(&ctx, body)?),
        ApiKey::AddPartitionsToTxn => Request::AddPartitionsToTxn(decode(&ctx, body)?),
        ApiKey::AddOffsetsToTxn => Request::AddOffsetsToTxn(decode(&ctx, body)?),
        ApiKey::TxnOffsetCommit => Request::TxnOffsetCommit(decode(&ctx, body)?),
        ApiKey::EndTxn => Request::EndTxn(decode(&ctx, body)?),
        ApiKey::DescribeTransactions => Request::DescribeTransactions(decode(&ctx, body)?),
        ApiKey::ListTransactions => Request::ListTransactions(decode(&ctx, body)?),
        ApiKey::DescribeProducers => Request::DescribeProducers(decode(&ctx, body)?),
        ApiKey::WriteTxnMarkers => Request::WriteTxnMarkers(decode(&ctx, body)?),
        ApiKey::AlterPartitionReassignments => {
            Request::AlterPartitionReassignments(decode(&ctx, body)?)
        }
        ApiKey::ListPartitionReassignments => {
            Request::ListPartitionReassignments(decode(&ctx, body)?)
        }
        ApiKey::SaslHandshake => Request::SaslHandshake(decode(&ctx, body)?),
        ApiKey::SaslAuthenticate => Request::SaslAuthenticate(decode(&ctx, body)?),
        _ => return Err(RequestError::NotImplemented { key }),
    };
    Ok((ctx, request))
}

/// Handles one request frame (without its length prefix) of the connection whose state is
/// `session` (requests of one connection come here one at a time, in order).
pub(crate) fn handle_frame(
    broker: &Arc<Broker>,
    frame: Bytes,
    session: &mut Session,
) -> Result<Reply, RequestError> {
    let (mut ctx, request) = decode_request(frame)?;
    if matches!(session.sasl, SaslState::Failed) {
        return Err(RequestError::AuthenticationFailed { key: ctx.key });
    }
    ctx.client_host = Some(session.peer.ip());
    ctx.principal = session.principal.clone();
    let version = ctx.version;
    match request {
        Request::SaslHandshake(r) => ctx.reply(&handlers::sasl::handshake(session, r)),
        Request::SaslAuthenticate(r) => {
            ctx.reply(&handlers::sasl::authenticate(broker, session, r))
        }
        Request::UnsupportedApiVersions => ctx.reply(&handlers::api_versions::unsupported()),
        Request::ApiVersions(r) => ctx.reply(&handlers::api_versions::handle(&r)),
        Request::Metadata(r) => {
            Ok(ctx.reply_later(handlers::metadata::handle(broker.clone(), r, version)))
        }
        Request::Produce(r) => Ok(handlers::produce::handle(broker, ctx, r)),
        Request::Fetch(r) => Ok(handlers::fetch::handle(broker, ctx, r)),
        Request::ListOffsets(r) => ctx.reply(&handlers::list_offsets::handle(broker, r, version)),
        Request::CreateTopics(r) => {
            Ok(ctx.reply_later(handlers::create_topics::handle(broker.clone(), r, version)))
        }
        Request::DeleteTopics(r) => Ok(handlers::delete_topics::handle(broker, ctx, r)),
        Request::InitProducerId(r) => match r.transactional_id.clone() {
            Some(id) => Ok(handlers::txn::init_producer_id(
                broker,
                ctx,
                r,
                id.0.to_string(),
            )),
            None => Ok(ctx.reply_later(handlers::init_producer_id::handle(broker.clone(), r))),
        },
        Request::DescribeCluster(r) => ctx.reply(&handlers::describe_cluster::handle(broker, r)),
        Request::FindCoordinator(r) => {
            let broker = broker.clone();
            Ok(ctx.reply_later(async move {
                handlers::groups::ensure_coordinator_topic(&broker, &r).await;
                handlers::groups::find_coordinator(&broker, r, version)
            }))
        }
        Request::JoinGroup(r) => Ok(handlers::groups::join_group(broker, ctx, r)),
        Request::SyncGroup(r) => Ok(handlers::groups::sync_group(broker, ctx, r)),
        Request::Heartbeat(r) => ctx.reply(&handlers::groups::heartbeat(broker, r)),
        Request::LeaveGroup(r) => ctx.reply(&handlers::groups::leave_group(broker, r, version)),
        Request::OffsetCommit(r) => Ok(handlers::groups::offset_commit(broker, ctx, r)),
        Request::OffsetFetch(r) => ctx.reply(&handlers::groups::offset_fetch(broker, r, version)),
        Request::OffsetDelete(r) => Ok(handlers::groups::offset_delete(broker, ctx, r)),
        Request::ListGroups(r) => ctx.reply(&handlers::groups::list_groups(broker, r)),
        Request::DescribeGroups(r) => {
            ctx.reply(&handlers::groups::describe_groups(broker, r, version))
        }
        Request::DeleteGroups(r) => Ok(handlers::groups::delete_groups(broker, ctx, r)),
        Request::DescribeConfigs(r) => {
            ctx.reply(&handlers::configs::describe_configs(broker, r, version))
        }
        Request::CreatePartitions(r) => Ok(ctx.reply_later(
            handlers::partitions_admin::create_partitions(broker.clone(), r),
        )),
        Request::DeleteRecords(r) => {
            ctx.reply(&handlers::partitions_admin::delete_records(broker, r))
        }
        Request::DescribeLogDirs(r) => ctx.reply(&handlers::log_dirs::describe_log_dirs(broker, r)),
        Request::OffsetForLeaderEpoch(r) => ctx.reply(
            &handlers::log_dirs::offset_for_leader_epoch(broker, &ctx, r),
        ),
        Request::AlterConfigs(r) => {
            Ok(ctx.reply_later(handlers::configs::alter_configs(broker.clone(), r)))
        }
        Request::IncrementalAlterConfigs(r) => Ok(ctx.reply_later(
            handlers::configs::incremental_alter_configs(broker.clone(), r),
        )),
        Request::AddPartitionsToTxn(r) => Ok(handlers::txn::add_partitions_to_txn(broker, ctx, r)),
        Request::AddOffsetsToTxn(r) => Ok(handlers::txn::add_offsets_to_txn(broker, ctx, r)),
        Request::TxnOffsetCommit(r) => Ok(handlers::txn::txn_offset_commit(broker, ctx, r)),
        Request::EndTxn(r) => Ok(handlers::txn::end_txn(broker, ctx, r)),
        Request::DescribeTransactions(r) => {
            ctx.reply(&handlers::txn::describe_transactions(broker, r))
        }
        Request::ListTransactions(r) => ctx.reply(&handlers::txn::list_transactions(broker, r)),
        Request::DescribeProducers(r) => ctx.reply(&handlers::txn::describe_producers(broker, r)),
        Request::WriteTxnMarkers(r) => Ok(handlers::write_txn_markers::handle(broker, ctx, r)),
        Request::AlterPartitionReassignments(r) => Ok(ctx.reply_later(
            handlers::reassignments::alter_partition_reassignments(broker.clone(), r),
        )),
        Request::ListPartitionReassignments(r) => ctx.reply(
            &handlers::reassignments::list_partition_reassignments(broker, r),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sluice_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use sluice_protocol::messages::TopicName;
    use sluice_protocol::StrBytes;

    fn encoded_produce(version: i16) -> Vec<u8> {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(version)
            .with_correlation_id(3)
            .encode(&mut buf, ApiKey::Produce.request_header_version(version))
            .unwrap();
        ProduceRequest::default()
            .with_acks(1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_records(Some(Bytes::from_static(&[1, 2, 3])))])])
            .encode(&mut buf, version)
            .unwrap();
        buf.to_vec()
    }

    #[test]
    fn a_valid_request_decodes() {
        let (ctx, request) = decode_request(Bytes::from(encoded_produce(9))).unwrap();
        assert_eq!(ctx.correlation_id, 3);
        assert!(matches!(request, Request::Produce(_)));
    }

    #[test]
    fn huge_array_lengths_are_refused_without_allocating() {
        let mut frame = BytesMut::new();
        frame.put_i16(ApiKey::Produce as i16);
        frame.put_i16(3);
        frame.put_i32(1);
        frame.put_i16(-1);
        frame.put_i16(-1);
        frame.put_i16(1);
        frame.put_i32(0);
        frame.put_i32(i32::MAX);
        assert!(matches!(
            decode_request(frame.freeze()),
            Err(RequestError::Malformed { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_request(Bytes::from(bytes));
        }

        #[test]
        fn arbitrary_bodies_of_every_api_never_panic(
            api in 0..crate::api::SUPPORTED.len(),
            version_pick in any::<u16>(),
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let (key, min, max) = crate::api::SUPPORTED[api];
            let version = min + (version_pick % ((max - min + 1) as u16)) as i16;
            let mut frame = BytesMut::new();
            frame.put_i16(key as i16);
            frame.put_i16(version);
            frame.put_i32(1);
            frame.extend_from_slice(&body);
            let _ = decode_request(frame.freeze());
        }

        #[test]
        fn mutated_valid_requests_never_panic(
            version in 3i16..=12,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut frame = encoded_produce(version);
            for (at, byte) in flips {
                let i = at % frame.len();
                frame[i] = byte;
            }
            frame.truncate(cut % (frame.len() + 1));
            let _ = decode_request(Bytes::from(frame));
        }
    }
}
