//! From one request frame to its reply: header parsing, the version check, decoding with the
//! `kafka-protocol` codecs, dispatch to the API's handler, and response encoding.
//!
//! A handler does its state-changing work synchronously, in the order requests arrive on the
//! connection, and may return a future for the part that waits (a long-poll fetch, an fsync before
//! an acks=all answer). Replies are written in request order by the connection.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::broker::Broker;
use crate::handlers;

/// What the connection sends back for one request.
pub(crate) enum Reply {
    /// A complete response frame (length prefix included).
    Ready(Bytes),
    /// A response that completes later; `None` closes the connection (encoding failed).
    Later(BoxFuture<'static, Option<Bytes>>),
    /// No response at all (acks=0 produce).
    Nothing,
}

/// Why a request closed its connection (Kafka closes on all of these too).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
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
}

/// Identifies the request a response answers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    pub(crate) key: ApiKey,
    pub(crate) version: i16,
    pub(crate) correlation_id: i32,
}

impl Ctx {
    /// Encodes `body` as this request's response frame.
    pub(crate) fn encode<R: Encodable>(&self, body: &R) -> Result<Bytes, RequestError> {
        let header_version = self.key.response_header_version(self.version);
        let mut buf = BytesMut::with_capacity(64);
        buf.put_i32(0);
        let fail = |e: anyhow::Error| RequestError::Encode {
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

/// Handles one request frame (without its length prefix).
pub(crate) fn handle_frame(broker: &Arc<Broker>, frame: Bytes) -> Result<Reply, RequestError> {
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
            };
            return ctx.reply(&handlers::api_versions::unsupported());
        }
        return Err(RequestError::UnsupportedVersion {
            key,
            version,
            min,
            max,
        });
    }
    let ctx = Ctx {
        key,
        version,
        correlation_id,
    };
    let mut body = frame;
    RequestHeader::decode(&mut body, key.request_header_version(version)).map_err(|e| {
        RequestError::Malformed {
            key,
            version,
            reason: format!("header: {e}"),
        }
    })?;
    match key {
        ApiKey::ApiVersions => ctx.reply(&handlers::api_versions::handle(&decode(&ctx, body)?)),
        ApiKey::Metadata => ctx.reply(&handlers::metadata::handle(broker, decode(&ctx, body)?, version)),
        ApiKey::Produce => Ok(handlers::produce::handle(broker, ctx, decode(&ctx, body)?)),
        ApiKey::Fetch => Ok(handlers::fetch::handle(broker, ctx, decode(&ctx, body)?)),
        ApiKey::ListOffsets => ctx.reply(&handlers::list_offsets::handle(broker, decode(&ctx, body)?)),
        ApiKey::CreateTopics => ctx.reply(&handlers::create_topics::handle(broker, decode(&ctx, body)?, version)),
        ApiKey::DeleteTopics => Ok(handlers::delete_topics::handle(broker, ctx, decode(&ctx, body)?)),
        ApiKey::InitProducerId => ctx.reply(&handlers::init_producer_id::handle(broker, decode(&ctx, body)?)),
        ApiKey::DescribeCluster => ctx.reply(&handlers::describe_cluster::handle(broker, decode(&ctx, body)?)),
        _ => Err(RequestError::NotImplemented { key }),
    }
}
