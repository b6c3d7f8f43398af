//! The admin HTTP listener of `sluice serve` (`--admin-listen`): `GET /health` (the process
//! serves), `GET /ready` (logs open and the Kafka listener up; 503 before that and while shutting
//! down) and `GET /metrics` (Prometheus text format 0.0.4, see `sluice_broker::metrics`); plus the
//! web console at `/` (`console`) and its JSON API under `/api/` (`console_api`).
//!
//! It starts before the logs are opened, so a long recovery shows as healthy but not ready.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sluice_broker::{metrics, Broker};

use crate::{console, console_api};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// Admin connections served at once; more are closed on accept (scrapers and probes need few).
const MAX_ADMIN_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoints report on: the broker, once its logs are open.
#[derive(Debug)]
pub(crate) struct AdminState {
    broker: OnceLock<Arc<Broker>>,
    /// When the process started serving (the console's uptime).
    started: Instant,
}

impl Default for AdminState {
    fn default() -> Self {
        AdminState {
            broker: OnceLock::new(),
            started: Instant::now(),
        }
    }
}

impl AdminState {
    /// Marks the broker up: its logs are open and its Kafka listener is bound.
    pub(crate) fn set_broker(&self, broker: Arc<Broker>) {
        let _ = self.broker.set(broker);
    }

    fn ready(&self) -> bool {
        self.broker
            .get()
            .is_some_and(|b| b.has_joined() && !b.is_shutting_down())
    }
}

/// Serves admin requests on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    let permits = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!(%peer, max = MAX_ADMIN_CONNECTIONS, "refusing admin connection: too many open");
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, request).await) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(%peer, error = %e, "admin connection failed");
            }
            drop(permit);
        });
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn respond(state: &AdminState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let api_path = request
        .uri()
        .path()
        .strip_prefix("/api")
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .map(str::to_owned);
    if let Some(path) = api_path {
        let Some(broker) = state.broker.get().cloned() else {
            return console_api::json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "error": "the broker is starting" }),
            );
        };
        let (parts, body) = request.into_parts();
        return console_api::respond(
            broker,
            state.started,
            &parts.method,
            &path,
            parts.uri.query(),
            body,
            &parts.headers,
        )
        .await;
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
    }
    if let Some(page) = console::asset(request.uri().path()) {
        return page;
    }
    match request.uri().path() {
        "/health" => text(StatusCode::OK, "ok"),
        "/ready" if state.ready() => text(StatusCode::OK, "ready"),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
        "/metrics" => {
            let Some(broker) = state.broker.get().cloned() else {
                return text(StatusCode::SERVICE_UNAVAILABLE, "starting");
            };
            // Collecting log sizes takes each partition's lock: keep it off the async workers.
            match tokio::task::spawn_blocking(move || metrics::render(&broker)).await {
                Ok(body) => {
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    response.headers_mut().insert(
                        CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(metrics::CONTENT_TYPE),
                    );
                    response
                }
                Err(e) => {
                    warn!(error = %e, "rendering metrics failed");
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "rendering metrics failed",
                    )
                }
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try / (the console), /api/overview, /health, /ready or /metrics\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_only_between_open_and_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let config = sluice_broker::BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let state = AdminState::default();
        assert!(!state.ready(), "not ready before the logs are open");
        let broker = Broker::open(config).await.unwrap();
        state.set_broker(broker.clone());
        assert!(state.ready());
        broker.begin_shutdown();
        assert!(!state.ready(), "not ready while shutting down");
        assert!(broker.replicas.shutdown());
        broker.metadata.shutdown().await;
    }
}
