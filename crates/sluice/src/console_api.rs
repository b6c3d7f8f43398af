//! The web console's JSON API on the admin listener, under `/api/`: overview, topics, one topic
//! with its partitions and configs, a page of records, consumer groups with lag, and a POST that
//! produces one test record. See `docs/design/console.md` for the routes with examples.
//!
//! Data comes from the in-process broker (`sluice_broker::inspect`). Bad input (unknown names,
//! offsets outside the log, malformed JSON, bodies over [`BODY_BYTES_MAX`]) is answered with a 4xx
//! and `{"error": "<sentence>"}`; nothing a client sends can panic the listener.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sluice_broker::inspect::records::{self, NewRecord, RecordView, Start};
use sluice_broker::inspect::{self, groups, InspectError};
use sluice_broker::metrics::PurgatoryOperation;
use sluice_broker::Broker;
use sluice_log::{Offset, Timestamp};
use tracing::warn;

use crate::produce_cli::partition_for_key;

/// The largest request body accepted (the produce form's JSON).
pub(crate) const BODY_BYTES_MAX: usize = 1024 * 1024;
/// The most records one messages page returns.
pub(crate) const MESSAGES_MAX: usize = 500;
/// Records per page when `max` is not given.
const MESSAGES_DEFAULT: usize = 50;
/// Payload bytes shown per key, value or header; longer ones are cut and flagged `truncated`.
const PAYLOAD_SHOWN_BYTES_MAX: usize = 16 * 1024;
/// The most headers a test record may carry.
const HEADERS_MAX: usize = 64;

type HttpResponse = Response<Full<Bytes>>;

/// An API answer that is not a success: its status and sentence.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl From<InspectError> for ApiError {
    fn from(e: InspectError) -> ApiError {
        let status = if e.is_not_found() {
            StatusCode::NOT_FOUND
        } else if e.is_caller_error() {
            StatusCode::BAD_REQUEST
        } else {
            warn!(error = %e, "console API request failed");
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError {
            status,
            message: e.to_string(),
        }
    }
}

/// A JSON response with `status`.
pub(crate) fn json_response(status: StatusCode, value: &impl Serialize) -> HttpResponse {
    let body = serde_json::to_vec(value).unwrap_or_else(|e| {
        format!("{{\"error\":\"cannot write the answer as JSON: {e}\"}}").into_bytes()
    });
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn error_response(error: ApiError) -> HttpResponse {
    json_response(error.status, &json!({ "error": error.message }))
}

/// Answers one `/api/...` request; `path` is the request path without the `/api` prefix.
pub(crate) async fn respond(
    broker: Arc<Broker>,
    started: Instant,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: Incoming,
    headers: &hyper::HeaderMap,
) -> HttpResponse {
    let content_length = headers.get(hyper::header::CONTENT_LENGTH);
    let content_type = headers.get(CONTENT_TYPE);
    match route(
        broker,
        started,
        (method, path, query),
        body,
        content_length,
        content_type,
    )
    .await
    {
        Ok(response) => response,
        Err(error) => error_response(error),
    }
}

async fn route(
    broker: Arc<Broker>,
    started: Instant,
    (method, path, query): (&Method, &str, Option<&str>),
    body: Incoming,
    content_length: Option<&HeaderValue>,
    content_type: Option<&HeaderValue>,
) -> Result<HttpResponse, ApiError> {
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect::<Result<_, _>>()?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let params = Params::parse(query.unwrap_or(""))?;
    let get = method == Method::GET || method == Method::HEAD;
    match (segments.as_slice(), get, method == Method::POST) {
        (["overview"], true, _) => blocking(broker, move |b| Ok(overview(b, started))).await,
        (["topics"], true, _) => {
            blocking(broker, |b| Ok(serde_json::to_value(inspect::topics(b)))).await
        }
        (["topics", name], true, _) => {
            let name = name.to_string();
            blocking(broker, move |b| {
                Ok(serde_json::to_value(inspect::topic(b, &name)?))
            })
            .await
        }
        (["topics", name, "messages"], true, _) => {
            let name = name.to_string();
            let (partition, start, max) = messages_params(&params)?;
            blocking(broker, move |b| {
                let page = records::read_records(b, &name, partition, start, max)?;
                Ok(Ok(page_json(&name, page)))
            })
            .await
        }
        (["topics", name, "produce"], _, true) => {
            check_json_content_type(content_type)?;
            let record = read_json::<ProduceBody>(body, content_length).await?;
            produce(&broker, name, record).await
        }
        (["groups"], true, _) => {
            blocking(broker, |b| Ok(serde_json::to_value(groups::groups(b)))).await
        }
        (["groups", id], true, _) => {
            let id = id.to_string();
            blocking(broker, move |b| {
                Ok(serde_json::to_value(groups::group(b, &id)?))
            })
            .await
        }
        (
            ["overview"]
            | ["topics"]
            | ["topics", _]
            | ["topics", _, "messages"]
            | ["groups"]
            | ["groups", _],
            false,
            _,
        ) => Err(ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("{method} is not allowed here: use GET"),
        }),
        (["topics", _, "produce"], _, false) => Err(ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("{method} is not allowed here: use POST"),
        }),
        _ => Err(ApiError::not_found(format!(
            "no API route /api/{}: see docs/design/console.md",
            path.trim_matches('/')
        ))),
    }
}

/// Runs `read` on a blocking thread (it takes partition locks and reads log files) and answers
/// its value as JSON.
async fn blocking<F>(broker: Arc<Broker>, read: F) -> Result<HttpResponse, ApiError>
where
    F: FnOnce(&Broker) -> Result<serde_json::Result<Value>, InspectError> + Send + 'static,
{
    let answer = tokio::task::spawn_blocking(move || read(&broker))
        .await
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("the request's task failed: {e}"),
        })??;
    let value = answer.map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("cannot write the answer as JSON: {e}"),
    })?;
    Ok(json_response(StatusCode::OK, &value))
}

fn overview(broker: &Broker, started: Instant) -> serde_json::Result<Value> {
    let topics = inspect::topics(broker);
    let (internal, user): (Vec<_>, Vec<_>) = topics.iter().partition(|t| t.internal);
    let totals = broker.metrics.totals();
    let config = &broker.config;
    Ok(json!({
        "cluster_id": broker.metadata.cluster_id(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "now_ms": sluice_broker::broker::now().0,
        "controller_id": config.node_id,
        "brokers": [{
            "node_id": config.node_id,
            "listener": config.listen.to_string(),
            "advertised": format!("{}:{}", config.advertised_host, config.advertised_port),
            "data_dir": config.data_dir.display().to_string(),
        }],
        // Counted as the topic list shows them by default: the user's topics, with the
        // internal ones (`__consumer_offsets`, `__transaction_state`) apart.
        "topic_count": user.len(),
        "partition_count": user.iter().map(|t| t.partition_count).sum::<usize>(),
        "internal_topic_count": internal.len(),
        "internal_partition_count": internal.iter().map(|t| t.partition_count).sum::<usize>(),
        "size_bytes": topics.iter().map(|t| t.size_bytes).sum::<u64>(),
        "under_replicated_partitions": inspect::under_replicated_partitions(broker),
        "offline_partitions": inspect::offline_partitions(broker),
        "group_count": groups::group_count(broker),
        "bytes_in_total": totals.bytes_in.get(),
        "records_in_total": totals.records_in.get(),
        "bytes_out_total": totals.bytes_out.get(),
        "purgatory": {
            "produce": broker.metrics.purgatory_size(PurgatoryOperation::Produce),
            "fetch": broker.metrics.purgatory_size(PurgatoryOperation::Fetch),
        },
    }))
}

/// `partition` (default 0), where to start (`offset`, `timestamp`, or the last records), `max`.
fn messages_params(params: &Params) -> Result<(i32, Start, usize), ApiError> {
    let partition = match params.get("partition") {
        None => 0,
        Some(p) => p.parse::<i32>().ok().filter(|p| *p >= 0).ok_or_else(|| {
            ApiError::bad_request(format!("partition `{p}` is not a partition number"))
        })?,
    };
    let start = match (params.get("offset"), params.get("timestamp")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either offset or timestamp, not both",
            ))
        }
        (Some(o), None) => Start::Offset(Offset(
            o.parse::<i64>().ok().filter(|o| *o >= 0).ok_or_else(|| {
                ApiError::bad_request(format!("offset `{o}` is not a non-negative integer"))
            })?,
        )),
        (None, Some(t)) => Start::Timestamp(Timestamp(
            t.parse::<i64>().ok().filter(|t| *t >= 0).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "timestamp `{t}` is not milliseconds since the epoch"
                ))
            })?,
        )),
        (None, None) => Start::Latest,
    };
    let max = match params.get("max") {
        None => MESSAGES_DEFAULT,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|m| (1..=MESSAGES_MAX).contains(m))
            .ok_or_else(|| {
                ApiError::bad_request(format!("max `{m}` is not a count from 1 to {MESSAGES_MAX}"))
            })?,
    };
    Ok((partition, start, max))
}

fn page_json(topic: &str, page: records::RecordsPage) -> Value {
    json!({
        "topic": topic,
        "partition": page.partition,
        "log_start_offset": page.log_start_offset,
        "high_watermark": page.high_watermark,
        "start_offset": page.start_offset,
        "next_offset": page.next_offset,
        "records": page.records.iter().map(record_json).collect::<Vec<_>>(),
        "damaged": page.damaged.iter().map(|d| json!({
            "base_offset": d.base_offset,
            "last_offset": d.last_offset,
            "reason": d.reason,
        })).collect::<Vec<_>>(),
    })
}

fn record_json(record: &RecordView) -> Value {
    json!({
        "offset": record.offset,
        "timestamp": record.timestamp,
        "timestamp_type": if record.log_append_time { "LogAppendTime" } else { "CreateTime" },
        "key": payload_json(record.key.as_deref()),
        "value": payload_json(record.value.as_deref()),
        "headers": record.headers.iter().map(|(name, value)| json!({
            "key": name,
            "value": payload_json(value.as_deref()),
        })).collect::<Vec<_>>(),
    })
}

/// How the page shows a payload: `null`; `json` (an object or array, for pretty-printing);
/// `text` (valid UTF-8); or `hex`. Long payloads are cut to [`PAYLOAD_SHOWN_BYTES_MAX`].
pub(crate) fn payload_json(bytes: Option<&[u8]>) -> Value {
    let Some(bytes) = bytes else {
        return json!({ "encoding": "null", "size": -1 });
    };
    let truncated = bytes.len() > PAYLOAD_SHOWN_BYTES_MAX;
    let shown = &bytes[..bytes.len().min(PAYLOAD_SHOWN_BYTES_MAX)];
    let (encoding, data) = match std::str::from_utf8(bytes) {
        Ok(text) => {
            // Only objects and arrays are worth pretty-printing; `42` or `"x"` stay text.
            let structured = text.trim_start().starts_with(['{', '['])
                && serde_json::from_str::<Value>(text).is_ok();
            let text = match std::str::from_utf8(shown) {
                Ok(t) => t.to_owned(),
                // Cut inside a character: show the whole characters before it.
                Err(e) => String::from_utf8_lossy(&shown[..e.valid_up_to()]).into_owned(),
            };
            (if structured { "json" } else { "text" }, text)
        }
        Err(_) => ("hex", hex(shown)),
    };
    json!({ "encoding": encoding, "data": data, "size": bytes.len(), "truncated": truncated })
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The produce form's body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProduceBody {
    /// Default: the key's partition (Kafka's murmur2), else round-robin.
    partition: Option<i32>,
    key: Option<String>,
    value: Option<String>,
    #[serde(default)]
    headers: Vec<HeaderBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderBody {
    key: String,
    value: String,
}

/// Keyless test records go round-robin over the partitions.
static NEXT_PARTITION: AtomicU32 = AtomicU32::new(0);

async fn produce(
    broker: &Broker,
    topic: &str,
    body: ProduceBody,
) -> Result<HttpResponse, ApiError> {
    if body.headers.len() > HEADERS_MAX {
        return Err(ApiError::bad_request(format!(
            "{} headers: at most {HEADERS_MAX} are accepted",
            body.headers.len()
        )));
    }
    if body.headers.iter().any(|h| h.key.is_empty()) {
        return Err(ApiError::bad_request("a header key may not be empty"));
    }
    let meta = broker
        .metadata
        .topic(topic)
        .ok_or_else(|| ApiError::from(InspectError::UnknownTopic(topic.to_owned())))?;
    let partition = match (body.partition, &body.key) {
        (Some(p), _) if (0..meta.partitions).contains(&p) => p,
        (Some(p), _) => {
            return Err(ApiError::bad_request(format!(
                "topic `{topic}` has no partition {p} (it has {})",
                meta.partitions
            )))
        }
        (None, Some(key)) => partition_for_key(key.as_bytes(), meta.partitions.max(1)),
        (None, None) => {
            let next = NEXT_PARTITION.fetch_add(1, Ordering::Relaxed);
            i32::try_from(next % meta.partitions.max(1) as u32).unwrap_or(0)
        }
    };
    let record = NewRecord {
        key: body.key.map(Bytes::from),
        value: body.value.map(Bytes::from),
        headers: body
            .headers
            .into_iter()
            .map(|h| (h.key, Bytes::from(h.value)))
            .collect(),
    };
    let offset = records::append_record(broker, topic, partition, record).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "topic": topic, "partition": partition, "offset": offset.0 }),
    ))
}

/// Writes must say `Content-Type: application/json`. Browsers send that cross-origin only after a
/// CORS preflight, which this listener never approves, so another site's page cannot make a
/// visitor's browser produce records (a form or `text/plain` POST is refused here).
fn check_json_content_type(content_type: Option<&HeaderValue>) -> Result<(), ApiError> {
    let is_json = content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: "send the body as Content-Type: application/json".to_owned(),
        })
    }
}

/// Reads a JSON body of at most [`BODY_BYTES_MAX`] bytes.
async fn read_json<T: serde::de::DeserializeOwned>(
    body: Incoming,
    content_length: Option<&HeaderValue>,
) -> Result<T, ApiError> {
    let too_large = || ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!("the request body is over {BODY_BYTES_MAX} bytes"),
    };
    let declared = content_length
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_BYTES_MAX as u64) {
        return Err(too_large());
    }
    let bytes = match Limited::new(body, BODY_BYTES_MAX).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "cannot read the request body: {e}"
            )))
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the request body is not valid JSON for this route: {e}"
        ))
    })
}

/// A query string's parameters, percent-decoded. Later values of a repeated name win.
#[derive(Debug, Default)]
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: &str) -> Result<Params, ApiError> {
        let mut params = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            params.push((
                percent_decode(&name.replace('+', " "))?,
                percent_decode(&value.replace('+', " "))?,
            ));
        }
        Ok(Params(params))
    }

    /// The value of `name`; an empty value counts as absent.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes `%XX` escapes; the result must be UTF-8.
fn percent_decode(text: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request(format!("`{text}` has a bad percent-escape"));
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let digits = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let digits = std::str::from_utf8(digits).map_err(|_| bad())?;
            out.push(u8::from_str_radix(digits, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::bad_request(format!("`{text}` is not UTF-8 once decoded")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_text_json_or_hex() {
        assert_eq!(payload_json(None)["encoding"], "null");
        assert_eq!(payload_json(Some(b"hello"))["encoding"], "text");
        assert_eq!(payload_json(Some(b"42"))["encoding"], "text");
        let json = payload_json(Some(br#"{"a": [1, 2]}"#));
        assert_eq!(json["encoding"], "json");
        assert_eq!(json["data"], r#"{"a": [1, 2]}"#);
        let binary = payload_json(Some(&[0xff, 0x00, 0x10]));
        assert_eq!(binary["encoding"], "hex");
        assert_eq!(binary["data"], "ff0010");
        let long = vec![b'x'; PAYLOAD_SHOWN_BYTES_MAX + 1];
        let cut = payload_json(Some(&long));
        assert_eq!(cut["truncated"], true);
        assert_eq!(cut["size"], PAYLOAD_SHOWN_BYTES_MAX + 1);
    }

    #[test]
    fn queries_decode_and_bad_escapes_are_refused() {
        let params = Params::parse("partition=1&offset=&max=5&group=a%2Fb+c").unwrap();
        assert_eq!(params.get("partition"), Some("1"));
        assert_eq!(params.get("offset"), None);
        assert_eq!(params.get("group"), Some("a/b c"));
        assert!(Params::parse("x=%zz").is_err());
        assert!(Params::parse("x=%f").is_err());
        assert!(percent_decode("%ff").is_err());
    }

    #[test]
    fn message_parameters_are_checked() {
        let p = |q: &str| messages_params(&Params::parse(q).unwrap());
        assert_eq!(p("").unwrap(), (0, Start::Latest, MESSAGES_DEFAULT));
        assert_eq!(
            p("partition=2&offset=7&max=10").unwrap(),
            (2, Start::Offset(Offset(7)), 10)
        );
        assert!(p("offset=-1").is_err());
        assert!(p("offset=1&timestamp=2").is_err());
        assert!(p("max=0").is_err());
        assert!(p(&format!("max={}", MESSAGES_MAX + 1)).is_err());
        assert!(p("partition=x").is_err());
    }
}
