//! One client connection: reads length-prefixed request frames, hands each to the request layer in
//! arrival order, and writes the replies back in the same order while later requests proceed
//! (pipelining), with at most `queued.max.requests` requests in flight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter, Interest};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::auth::Session;
use crate::broker::Broker;
use crate::frame::{Frame, FramePart};
use crate::metrics::ApiMetrics;
use crate::request::{handle_frame, Reply};

/// Why a connection stopped reading.
#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("request size {size} is outside 0..={max} (socket.request.max.bytes)")]
    BadSize { size: i32, max: usize },
    #[error("connection closed in the middle of a {0}-byte request")]
    Truncated(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serves one connection until the client closes it, it misbehaves, or the broker shuts down.
pub(crate) async fn serve(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (read_half, write_half) = stream.into_split();
    let max_in_flight = broker.config.max_in_flight_requests_per_connection;
    let (replies, reply_rx) = mpsc::channel::<Reply>(max_in_flight);
    let writer = tokio::spawn(write_replies(write_half, reply_rx, max_in_flight, peer));
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let mut shutdown = broker.shutdown_signal();
    let max_bytes = broker.config.socket_request_max_bytes;
    // Who the client is (anonymous until it authenticates); the requests below update it.
    let mut session = Session::new(peer);
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut reader, max_bytes) => frame,
            _ = crate::broker::stopped(&mut shutdown) => break,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                warn!(%peer, error = %e, "closing connection");
                break;
            }
        };
        let started = Instant::now();
        let api = frame
            .get(..2)
            .and_then(|key| ApiKey::try_from(i16::from_be_bytes([key[0], key[1]])).ok())
            .and_then(|key| broker.metrics.api(key))
            .cloned();
        match handle_frame(&broker, frame, &mut session) {
            Ok(reply) => {
                let reply = match api {
                    Some(api) => timed(reply, api, started),
                    None => reply,
                };
                if replies.send(reply).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                warn!(%peer, error = %e, "closing connection");
                break;
            }
        }
    }
    // Replies already accepted are still written before the socket closes.
    drop(replies);
    let _ = writer.await;
    debug!(%peer, "connection closed");
}

/// Counts `reply`'s request and records its latency once the reply is ready (for a deferred reply,
/// when its future completes: a long poll's wait or an acks=all fsync is part of the latency).
fn timed(reply: Reply, api: ApiMetrics, started: Instant) -> Reply {
    match reply {
        Reply::Later(fut) => Reply::Later(Box::pin(async move {
            let bytes = fut.await;
            api.observe(started.elapsed());
            bytes
        })),
        Reply::LaterFrame(fut) => Reply::LaterFrame(Box::pin(async move {
            let frame = fut.await;
            api.observe(started.elapsed());
            frame
        })),
        ready => {
            api.observe(started.elapsed());
            ready
        }
    }
}

/// Reads one frame; `None` at a clean end of stream.
async fn read_frame(
    reader: &mut BufReader<OwnedReadHalf>,
    max_bytes: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut prefix = [0u8; 4];
    match reader.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(prefix);
    if size < 0 || size as usize > max_bytes {
        return Err(FrameError::BadSize {
            size,
            max: max_bytes,
        });
    }
    let mut frame = BytesMut::zeroed(size as usize);
    match reader.read_exact(&mut frame).await {
        Ok(_) => Ok(Some(frame.freeze())),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(FrameError::Truncated(size as usize))
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes one frame: bytes through the buffer, file ranges with sendfile(2) straight from the
/// page cache (after flushing what the buffer holds, to keep the order).
async fn write_frame(out: &mut BufWriter<OwnedWriteHalf>, frame: Frame) -> std::io::Result<()> {
    for part in frame.parts {
        match part {
            FramePart::Bytes(bytes) => out.write_all(&bytes).await?,
            FramePart::File(range) => {
                out.flush().await?;
                send_file(out.get_ref().as_ref(), &range).await?;
            }
        }
    }
    Ok(())
}

/// Sends `range` of its file to the socket with sendfile(2), waiting for the socket to drain
/// when it is full. A file that ends early (a segment cut by recovery) is an error: the frame's
/// length already promised the bytes, so the connection must close.
async fn send_file(stream: &TcpStream, range: &sluice_log::FileRange) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    let mut offset = range.pos;
    let end = range.pos + range.len;
    while offset < end {
        stream.writable().await?;
        let count = usize::try_from(end - offset).unwrap_or(usize::MAX);
        let sent = stream.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(stream, &*range.file, Some(&mut offset), count)
                .map_err(Error::from)
        });
        match sent {
            Ok(0) => {
                return Err(Error::new(
                    ErrorKind::UnexpectedEof,
                    "segment file ended before the range being sent",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes replies in request order, polling the waiting ones concurrently.
async fn write_replies(
    write_half: OwnedWriteHalf,
    mut replies: mpsc::Receiver<Reply>,
    max_in_flight: usize,
    peer: SocketAddr,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, write_half);
    let mut pending = FuturesOrdered::new();
    let mut open = true;
    loop {
        tokio::select! {
            reply = replies.recv(), if open && pending.len() < max_in_flight => match reply {
                Some(Reply::Ready(bytes)) => pending.push_back(Box::pin(async move { Some(Some(Frame::from(bytes))) }) as futures::future::BoxFuture<'static, Option<Option<Frame>>>),
                Some(Reply::Later(fut)) => pending.push_back(Box::pin(async move { fut.await.map(|b| Some(Frame::from(b))) })),
                Some(Reply::LaterFrame(fut)) => pending.push_back(Box::pin(async move { fut.await.map(Some) })),
                Some(Reply::Nothing) => pending.push_back(Box::pin(async { Some(None) })),
                None => open = false,
            },
            Some(done) = pending.next(), if !pending.is_empty() => match done {
                Some(Some(frame)) => {
                    if let Err(e) = write_frame(&mut out, frame).await {
                        debug!(%peer, error = %e, "write failed");
                        return;
                    }
                    if pending.is_empty() {
                        if let Err(e) = out.flush().await {
                            debug!(%peer, error = %e, "write failed");
                            return;
                        }
                    }
                }
                Some(None) => {}
                None => return,
            },
            else => break,
        }
    }
    let _ = out.flush().await;
}
