//! One client connection: reads length-prefixed request frames, hands each to the request layer in
//! arrival order, and writes the replies back in the same order while later requests proceed
//! (pipelining).
//!
//! What a connection can make the broker hold is bounded: at most `queued.max.requests` requests
//! in flight; each request's bytes reserved in the broker-wide pool (`queued.max.request.bytes`,
//! see [`crate::request_pool`]) before its body is read and until its response is written, with
//! the response's in-memory bytes added when it is ready; a request must arrive whole within
//! `socket.request.read.timeout.ms` of its first byte; and a connection with no request for
//! `connections.max.idle.ms` (none being answered, no response bytes taken by the client) is
//! closed. A client that stops reading its responses therefore stops being read, and is
//! disconnected once idle.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use sluice_protocol::messages::ApiKey;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter, Interest};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::auth::Session;
use crate::broker::Broker;
use crate::frame::{Frame, FramePart};
use crate::metrics::{ApiMetrics, Closure};
use crate::request::{handle_frame, Reply};
use crate::request_pool::{ConnectionShare, RequestPool, Reservation, Tier};

/// Bytes of the socket read and write buffers of each connection. Small, because every open
/// connection holds them (`max.connections` of them); large requests bypass the read buffer and
/// fetched records bypass the write buffer (sendfile).
const SOCKET_BUFFER_BYTES: usize = 16 * 1024;

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

/// Why the reader stopped.
#[derive(Debug)]
enum End {
    /// The client closed its side.
    Closed,
    /// The broker is shutting down.
    Shutdown,
    /// No request for `connections.max.idle.ms`.
    Idle,
    /// A request did not arrive whole within `socket.request.read.timeout.ms`.
    ReadTimeout,
    /// The writer stopped (the client reset the connection, or a reply failed).
    WriterGone,
    /// A bad frame or request (logged).
    Misbehaved,
}

/// The connection limits, from the broker's config.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_in_flight: usize,
    max_request_bytes: usize,
    read_timeout: Duration,
    idle: Option<Duration>,
}

/// What the reader and the writer of one connection share.
#[derive(Debug)]
struct Shared {
    opened: Instant,
    /// When the connection last showed life, in ms after `opened`: a request read whole, a
    /// reply completed, response bytes taken by the socket.
    last_active_ms: AtomicU64,
    /// Requests handed to the writer whose reply is not complete yet (a long poll, an acks=all
    /// wait): the connection is not idle while one is.
    computing: AtomicUsize,
    /// Requests handed to the writer and not yet written (or dropped).
    in_flight: watch::Sender<usize>,
    /// Set when the writer has stopped: nothing more will be written.
    writer_done: watch::Sender<bool>,
}

impl Shared {
    fn touch(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.fetch_max(now, Ordering::Relaxed);
    }

    fn last_active(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed))
    }

    /// How long the connection has been idle; `None` while a reply is being worked on.
    fn idle_for(&self) -> Option<Duration> {
        (self.computing.load(Ordering::Acquire) == 0).then(|| self.last_active().elapsed())
    }

    /// When the connection will have been idle for `idle` if nothing happens meanwhile (checked
    /// again then).
    fn idle_at(&self, idle: Duration) -> Instant {
        match self.idle_for() {
            Some(_) => self.last_active() + idle,
            None => Instant::now() + idle,
        }
    }
}

/// Marks the writer stopped when it returns or is aborted, so the reader never waits on it.
struct WriterExit(Arc<Shared>);

impl Drop for WriterExit {
    fn drop(&mut self) {
        self.0.in_flight.send_replace(0);
        self.0.computing.store(0, Ordering::Release);
        self.0.writer_done.send_replace(true);
    }
}

/// Awaits `fut` unless, first, the broker shuts down (when `shutdown` is given), the writer
/// stops, or the connection has been idle for `idle`.
async fn unless_stopped<F: Future>(
    fut: F,
    shared: &Shared,
    idle: Option<Duration>,
    shutdown: Option<&mut watch::Receiver<bool>>,
) -> Result<F::Output, End> {
    let stop = async {
        match shutdown {
            Some(signal) => crate::broker::stopped(signal).await,
            None => std::future::pending().await,
        }
    };
    let mut writer_done = shared.writer_done.subscribe();
    tokio::pin!(fut, stop);
    loop {
        let idle_at = idle.map(|idle| shared.idle_at(idle));
        tokio::select! {
            out = &mut fut => return Ok(out),
            _ = &mut stop => return Err(End::Shutdown),
            _ = writer_done.wait_for(|done| *done) => return Err(End::WriterGone),
            _ = sleep_until(idle_at) => {
                if idle.is_some_and(|idle| shared.idle_for().is_some_and(|quiet| quiet >= idle)) {
                    return Err(End::Idle);
                }
            }
        }
    }
}

/// Sleeps until `at`; forever when `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// A request handed to the writer: its reply and its pool reservation.
struct InFlight {
    reply: Reply,
    reservation: Reservation,
}

/// Serves one connection until the client closes it, it misbehaves or goes idle, or the broker
/// shuts down.
pub(crate) async fn serve(
    broker: Arc<Broker>,
    pool: Arc<RequestPool>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let config = &broker.config;
    let limits = Limits {
        max_in_flight: config.max_in_flight_requests_per_connection,
        max_request_bytes: config.socket_request_max_bytes,
        read_timeout: Duration::from_millis(config.socket_request_read_timeout_ms),
        idle: config.connections_max_idle_ms.map(Duration::from_millis),
    };
    let (read_half, write_half) = stream.into_split();
    let (in_flight, mut in_flight_rx) = watch::channel(0usize);
    let shared = Arc::new(Shared {
        opened: Instant::now(),
        last_active_ms: AtomicU64::new(0),
        computing: AtomicUsize::new(0),
        in_flight,
        writer_done: watch::channel(false).0,
    });
    // In-flight requests are bounded by `max_in_flight` before they are sent, so the channel
    // never fills.
    let (replies, reply_rx) = mpsc::channel::<InFlight>(limits.max_in_flight);
    let mut writer = tokio::spawn(write_replies(write_half, reply_rx, shared.clone(), peer));
    let mut reader = BufReader::with_capacity(SOCKET_BUFFER_BYTES, read_half);
    let mut shutdown = broker.shutdown_signal();
    let share = Arc::new(ConnectionShare::default());
    // Who the client is (anonymous until it authenticates); the requests below update it.
    let mut session = Session::new(peer);
    let end = loop {
        let read = read_request(
            &mut reader,
            &pool,
            &share,
            &shared,
            limits,
            &mut in_flight_rx,
            &mut shutdown,
        )
        .await;
        let (frame, reservation) = match read {
            Ok(Some(request)) => request,
            Ok(None) => break End::Closed,
            Err(RequestEnd::End(end)) => break end,
            Err(RequestEnd::Frame(e)) => {
                warn!(%peer, error = %e, "closing connection");
                break End::Misbehaved;
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
                shared.computing.fetch_add(1, Ordering::AcqRel);
                shared.in_flight.send_modify(|n| *n += 1);
                if replies.send(InFlight { reply, reservation }).await.is_err() {
                    break End::WriterGone;
                }
            }
            Err(e) => {
                warn!(%peer, error = %e, "closing connection");
                break End::Misbehaved;
            }
        }
    };
    drop(replies);
    let writer_finished = match end {
        End::Idle | End::ReadTimeout => {
            // Nothing more is sent to a client that went quiet or trickles its request.
            let closure = if matches!(end, End::Idle) {
                debug!(%peer, "closing idle connection (connections.max.idle.ms)");
                Closure::Idle
            } else {
                warn!(%peer, timeout_ms = limits.read_timeout.as_millis() as u64,
                    "closing connection: a request did not arrive whole within socket.request.read.timeout.ms");
                Closure::RequestReadTimeout
            };
            broker.metrics.connection_closed_for(closure);
            writer.abort();
            false
        }
        // Replies already accepted are still written before the socket closes, unless the
        // client stops taking them for connections.max.idle.ms.
        _ => match unless_stopped(&mut writer, &shared, limits.idle, None).await {
            Ok(_) => true,
            Err(End::Idle) => {
                debug!(%peer, "closing idle connection (connections.max.idle.ms) with replies unread");
                broker.metrics.connection_closed_for(Closure::Idle);
                writer.abort();
                false
            }
            Err(_) => false,
        },
    };
    if !writer_finished {
        let _ = writer.await;
    }
    debug!(%peer, "connection closed");
}

/// Why reading a request stopped short of one.
enum RequestEnd {
    End(End),
    Frame(FrameError),
}

impl From<End> for RequestEnd {
    fn from(end: End) -> Self {
        RequestEnd::End(end)
    }
}

/// Reads the next request: waits for a place among `queued.max.requests`, then for its first
/// byte (the connection may go idle meanwhile), reads its size, reserves that many bytes from
/// the pool, and reads its body, all within the read timeout (less the time waiting for the
/// pool). `None` at a clean end of stream.
async fn read_request(
    reader: &mut BufReader<OwnedReadHalf>,
    pool: &Arc<RequestPool>,
    share: &Arc<ConnectionShare>,
    shared: &Shared,
    limits: Limits,
    in_flight: &mut watch::Receiver<usize>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<(Bytes, Reservation)>, RequestEnd> {
    let has_place = async {
        drop(in_flight.wait_for(|n| *n < limits.max_in_flight).await);
    };
    unless_stopped(has_place, shared, limits.idle, Some(&mut *shutdown)).await?;
    let first_byte = async { reader.fill_buf().await.map(|buf| buf.is_empty()) };
    let at_end = unless_stopped(first_byte, shared, limits.idle, Some(&mut *shutdown))
        .await?
        .map_err(|e| RequestEnd::Frame(e.into()))?;
    if at_end {
        return Ok(None);
    }
    let mut deadline = tokio::time::Instant::now() + limits.read_timeout;
    let mut prefix = [0u8; 4];
    read_within(deadline, reader, &mut prefix).await?;
    let size = i32::from_be_bytes(prefix);
    if size < 0 || size as usize > limits.max_request_bytes {
        return Err(RequestEnd::Frame(FrameError::BadSize {
            size,
            max: limits.max_request_bytes,
        }));
    }
    let size = size as usize;
    let waiting = tokio::time::Instant::now();
    let reservation = unless_stopped(
        reserve(pool, size as u64, share, in_flight),
        shared,
        limits.idle,
        Some(shutdown),
    )
    .await?;
    // The client is not to blame for the time its request waited for memory.
    deadline += waiting.elapsed();
    let mut frame = BytesMut::zeroed(size);
    read_within(deadline, reader, &mut frame).await?;
    shared.touch();
    Ok(Some((frame.freeze(), reservation)))
}

/// Fills `buf` from `reader` by `deadline`.
async fn read_within(
    deadline: tokio::time::Instant,
    reader: &mut BufReader<OwnedReadHalf>,
    buf: &mut [u8],
) -> Result<(), RequestEnd> {
    match tokio::time::timeout_at(deadline, reader.read_exact(buf)).await {
        Err(_) => Err(End::ReadTimeout.into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(RequestEnd::Frame(FrameError::Truncated(buf.len())))
        }
        Ok(Err(e)) => Err(RequestEnd::Frame(e.into())),
    }
}

/// Reserves a request's bytes: as its connection's first request in flight when nothing else
/// of the connection is, else as a pipelined one, which becomes a first request if the
/// connection's other requests are all answered while it waits.
async fn reserve(
    pool: &Arc<RequestPool>,
    bytes: u64,
    share: &Arc<ConnectionShare>,
    in_flight: &mut watch::Receiver<usize>,
) -> Reservation {
    if *in_flight.borrow_and_update() == 0 {
        return pool.reserve(bytes, Tier::First, share.clone()).await;
    }
    // The guard `wait_for` returns is dropped inside, so this future stays Send.
    let answered = async {
        drop(in_flight.wait_for(|n| *n == 0).await);
    };
    tokio::select! {
        reservation = pool.reserve(bytes, Tier::Pipelined, share.clone()) => return reservation,
        () = answered => {}
    }
    pool.reserve(bytes, Tier::First, share.clone()).await
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

/// Writes one frame: bytes through the buffer, file ranges with sendfile(2) straight from the
/// page cache (after flushing what the buffer holds, to keep the order). Progress counts as
/// activity of the connection.
async fn write_frame(
    out: &mut BufWriter<OwnedWriteHalf>,
    frame: Frame,
    shared: &Shared,
) -> std::io::Result<()> {
    for part in frame.parts {
        match part {
            FramePart::Bytes(bytes) => out.write_all(&bytes).await?,
            FramePart::File(range) => {
                out.flush().await?;
                send_file(out.get_ref().as_ref(), &range, shared).await?;
            }
        }
        shared.touch();
    }
    Ok(())
}

/// Sends `range` of its file to the socket with sendfile(2), waiting for the socket to drain
/// when it is full. A file that ends early (a segment cut by recovery) is an error: the frame's
/// length already promised the bytes, so the connection must close.
async fn send_file(
    stream: &TcpStream,
    range: &sluice_log::FileRange,
    shared: &Shared,
) -> std::io::Result<()> {
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
            Ok(_) => shared.touch(),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What a request's reply came to.
enum Completed {
    Frame(Frame),
    /// No response (acks=0).
    Nothing,
    /// The reply could not be encoded: the connection closes.
    Failed,
}

/// Waits for one request's reply and charges its in-memory bytes to the request's reservation.
async fn complete(request: InFlight, shared: Arc<Shared>) -> (Completed, Reservation) {
    let InFlight {
        reply,
        mut reservation,
    } = request;
    let completed = match reply {
        Reply::Ready(bytes) => Completed::Frame(Frame::from(bytes)),
        Reply::Later(fut) => fut.await.map_or(Completed::Failed, |bytes| {
            Completed::Frame(Frame::from(bytes))
        }),
        Reply::LaterFrame(fut) => fut.await.map_or(Completed::Failed, Completed::Frame),
        Reply::Nothing => Completed::Nothing,
    };
    if let Completed::Frame(frame) = &completed {
        reservation.charge_response(frame.memory_len());
    }
    shared.computing.fetch_sub(1, Ordering::AcqRel);
    shared.touch();
    (completed, reservation)
}

/// Writes replies in request order while the waiting ones are polled concurrently (also while
/// a write waits for the client to read), so a reply completes, and is counted in the pool,
/// when it is ready rather than when its turn to be written comes. A request's reservation is
/// released once its reply is written.
async fn write_replies(
    write_half: OwnedWriteHalf,
    mut replies: mpsc::Receiver<InFlight>,
    shared: Arc<Shared>,
    peer: SocketAddr,
) {
    let _exit = WriterExit(shared.clone());
    // Completed replies in request order; no more than the requests in flight.
    let (ready_tx, mut ready) = mpsc::unbounded_channel::<(Completed, Reservation)>();
    // Owns the sending half, so the sender sees the end once every reply is through.
    let completer = {
        let shared = shared.clone();
        async move {
            let mut pending = FuturesOrdered::new();
            let mut open = true;
            loop {
                tokio::select! {
                    request = replies.recv(), if open => match request {
                        Some(request) => pending.push_back(complete(request, shared.clone())),
                        None => open = false,
                    },
                    Some(done) = pending.next(), if !pending.is_empty() => {
                        if ready_tx.send(done).is_err() {
                            return;
                        }
                    },
                    else => return,
                }
            }
        }
    };
    let sender = async {
        let mut out = BufWriter::with_capacity(SOCKET_BUFFER_BYTES, write_half);
        while let Some((completed, reservation)) = ready.recv().await {
            let written = match completed {
                Completed::Frame(frame) => {
                    let mut written = write_frame(&mut out, frame, &shared).await;
                    // Flush when no further reply is ready to join this one in the buffer.
                    if written.is_ok() && ready.is_empty() {
                        written = out.flush().await;
                        shared.touch();
                    }
                    written
                }
                Completed::Nothing => Ok(()),
                Completed::Failed => return,
            };
            drop(reservation);
            shared.in_flight.send_modify(|n| *n = n.saturating_sub(1));
            if let Err(e) = written {
                debug!(%peer, error = %e, "write failed");
                return;
            }
        }
        let _ = out.flush().await;
    };
    tokio::pin!(completer, sender);
    tokio::select! {
        // The sender stops first only when a write failed: what is pending is dropped.
        () = &mut sender => {}
        // Every reply is complete: the sender writes what is left, then stops.
        () = &mut completer => sender.await,
    }
}
