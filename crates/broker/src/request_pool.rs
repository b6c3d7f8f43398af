//! The broker-wide memory pool for requests in flight (`queued.max.request.bytes`, Kafka's
//! KIP-72): a connection reserves a request's bytes here before it reads the request's body, and
//! the reservation lives until the request's response has been written (or the request is
//! dropped). A connection whose client stops reading therefore stops being read once its
//! reservations run out, instead of growing the heap.
//!
//! Two rules keep clients that pipeline (or stop reading) from locking everyone else out:
//!
//! - A connection's *first* request in flight (nothing else of that connection is waiting for
//!   its response) may use the whole pool. Kafka reads one request per connection at a time, so
//!   this is the progress every Kafka client counts on.
//! - Requests read while the same connection has others in flight (*pipelined*) may only use
//!   half of the pool, and they share that half with the responses waiting to be written (their
//!   in-memory bytes; records sent from files with sendfile take no memory and are not counted).
//!   Clients that stop reading fill at most this half, and every other connection still gets a
//!   request through.
//!
//! First requests are served in arrival order (a large request is not starved by small ones) and
//! before pipelined ones. Among pipelined requests, the one whose connection holds the least of
//! the half goes next (ties in arrival order), so a few connections that pipeline greedily cannot
//! crowd out the pipelining of the others. A request larger than the pool (or than the pipelined
//! half) is let in alone once what it needs is empty, so one request of
//! `socket.request.max.bytes` can always proceed and nothing deadlocks.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::metrics::PoolGauges;

/// Whether a request is its connection's only one in flight (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    First,
    Pipelined,
}

/// What one connection holds of the pool's pipelined half; one per connection, shared by its
/// reservations.
#[derive(Debug, Default)]
pub(crate) struct ConnectionShare {
    /// Changed only under the pool's lock; atomic so the share can be shared.
    pipelined: AtomicU64,
}

impl ConnectionShare {
    fn held(&self) -> u64 {
        self.pipelined.load(Ordering::Relaxed)
    }
}

/// The pool; shared by every connection of the listener.
#[derive(Debug)]
pub(crate) struct RequestPool {
    /// `queued.max.request.bytes`; `None` is unbounded (-1, Kafka's default).
    capacity: Option<u64>,
    state: Mutex<State>,
    gauges: PoolGauges,
}

#[derive(Debug, Default)]
struct State {
    /// Request bytes reserved, of both tiers.
    requests: u64,
    /// Of which pipelined.
    pipelined: u64,
    /// In-memory bytes of responses not yet written.
    responses: u64,
    /// The most `requests` has been.
    peak: u64,
    /// Waiters by tier (indexed by `Tier as usize`), in arrival order.
    waiting: [VecDeque<Waiter>; 2],
    /// Bytes all waiters need.
    waiting_bytes: u64,
    next_id: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    bytes: u64,
    share: Arc<ConnectionShare>,
    granted: oneshot::Sender<Reservation>,
}

/// Bytes held in the pool; given back when dropped.
#[derive(Debug)]
#[must_use = "the bytes are released when the reservation drops"]
pub(crate) struct Reservation {
    pool: Arc<RequestPool>,
    bytes: u64,
    tier: Tier,
    share: Arc<ConnectionShare>,
    response_bytes: u64,
}

impl RequestPool {
    /// A pool of `capacity` bytes (`None`: unbounded) reporting to `gauges`.
    pub(crate) fn new(capacity: Option<u64>, gauges: PoolGauges) -> Arc<RequestPool> {
        gauges
            .capacity
            .set(capacity.map_or(-1, |c| i64::try_from(c).unwrap_or(i64::MAX)));
        Arc::new(RequestPool {
            capacity,
            state: Mutex::new(State::default()),
            gauges,
        })
    }

    /// Reserves `bytes` for one request of the connection holding `share`, waiting (in turn,
    /// see the module doc) until they fit. Cancel-safe: a dropped wait leaves the queue.
    pub(crate) async fn reserve(
        self: &Arc<Self>,
        bytes: u64,
        tier: Tier,
        share: Arc<ConnectionShare>,
    ) -> Reservation {
        let (granted, wait) = {
            let mut state = self.lock();
            if state.waiting.iter().all(VecDeque::is_empty) && self.fits(&state, bytes, tier) {
                return self.grant(&mut state, bytes, tier, share);
            }
            let id = state.next_id;
            state.next_id += 1;
            let (tx, rx) = oneshot::channel();
            state.waiting[tier as usize].push_back(Waiter {
                id,
                bytes,
                share,
                granted: tx,
            });
            state.waiting_bytes += bytes;
            // Its turn may be now (a first request while only pipelined ones wait, a pipelined
            // one from a connection holding less than the others).
            self.wake_and_hand_over(state);
            (rx, Waiting { pool: self, id })
        };
        let reservation = granted
            .await
            .expect("a waiter leaves the queue only when granted or dropped");
        std::mem::forget(wait);
        reservation
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (no code that can panic runs under the
        // lock), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fits(&self, state: &State, bytes: u64, tier: Tier) -> bool {
        let Some(capacity) = self.capacity else {
            return true;
        };
        let total = state.requests == 0 || state.requests + bytes <= capacity;
        let half = match tier {
            Tier::First => true,
            Tier::Pipelined => {
                let used = state.pipelined + state.responses;
                used == 0 || used + bytes <= capacity / 2
            }
        };
        total && half
    }

    fn grant(
        self: &Arc<Self>,
        state: &mut State,
        bytes: u64,
        tier: Tier,
        share: Arc<ConnectionShare>,
    ) -> Reservation {
        state.requests += bytes;
        if tier == Tier::Pipelined {
            state.pipelined += bytes;
            share.pipelined.fetch_add(bytes, Ordering::Relaxed);
        }
        state.peak = state.peak.max(state.requests);
        self.publish(state);
        Reservation {
            pool: self.clone(),
            bytes,
            tier,
            share,
            response_bytes: 0,
        }
    }

    /// Grants waiters that fit now, in turn: first requests in arrival order, then (when no
    /// first request waits) pipelined ones, least held share first. Returns the grants to hand
    /// over once the lock is released.
    fn wake(
        self: &Arc<Self>,
        state: &mut State,
    ) -> Vec<(oneshot::Sender<Reservation>, Reservation)> {
        let mut granted = Vec::new();
        for tier in [Tier::First, Tier::Pipelined] {
            if tier == Tier::Pipelined && !state.waiting[Tier::First as usize].is_empty() {
                break;
            }
            loop {
                let queue = &state.waiting[tier as usize];
                let next = match tier {
                    Tier::First => (!queue.is_empty()).then_some(0),
                    // At most one waiter per connection: a scan over the waiting connections.
                    Tier::Pipelined => queue
                        .iter()
                        .enumerate()
                        .min_by_key(|(at, w)| (w.share.held(), *at))
                        .map(|(at, _)| at),
                };
                let Some(at) = next else { break };
                if !self.fits(state, queue[at].bytes, tier) {
                    break;
                }
                let waiter = state.waiting[tier as usize]
                    .remove(at)
                    .expect("the waiter was just seen");
                state.waiting_bytes -= waiter.bytes;
                let reservation = self.grant(state, waiter.bytes, tier, waiter.share);
                granted.push((waiter.granted, reservation));
            }
        }
        self.publish(state);
        granted
    }

    /// Runs [`Self::wake`] and hands the grants over outside the lock. A grant whose waiter is
    /// gone comes back and is dropped, which releases it (and wakes again).
    fn wake_and_hand_over(self: &Arc<Self>, mut state: MutexGuard<'_, State>) {
        let granted = self.wake(&mut state);
        drop(state);
        for (tx, reservation) in granted {
            drop(tx.send(reservation));
        }
    }

    fn publish(&self, state: &State) {
        let gauges = &self.gauges;
        let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        gauges.requests.set(to_i64(state.requests));
        gauges.peak.set(to_i64(state.peak));
        gauges.responses.set(to_i64(state.responses));
        let waiters = state.waiting.iter().map(VecDeque::len).sum::<usize>();
        gauges.waiting_requests.set(to_i64(waiters as u64));
        gauges.waiting_bytes.set(to_i64(state.waiting_bytes));
    }
}

impl Reservation {
    /// Adds the in-memory bytes of the request's response, which count against the pipelined
    /// half until the reservation drops. Never waits: the response exists already.
    pub(crate) fn charge_response(&mut self, bytes: u64) {
        let mut state = self.pool.lock();
        state.responses += bytes;
        self.response_bytes += bytes;
        self.pool.publish(&state);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        state.requests -= self.bytes;
        if self.tier == Tier::Pipelined {
            state.pipelined -= self.bytes;
            self.share
                .pipelined
                .fetch_sub(self.bytes, Ordering::Relaxed);
        }
        state.responses -= self.response_bytes;
        self.pool.wake_and_hand_over(state);
    }
}

/// A wait in the queue; dropping it (the wait was cancelled) takes it out of the queue.
struct Waiting<'a> {
    pool: &'a Arc<RequestPool>,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        let state_ref = &mut *state;
        for queue in &mut state_ref.waiting {
            if let Some(at) = queue.iter().position(|w| w.id == self.id) {
                let waiter = queue.remove(at).expect("the position was just found");
                state_ref.waiting_bytes -= waiter.bytes;
            }
        }
        // The waiter may have blocked those behind it.
        self.pool.wake_and_hand_over(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn pool(capacity: u64) -> (Arc<RequestPool>, crate::metrics::Metrics) {
        let metrics = crate::metrics::Metrics::new();
        (
            RequestPool::new(Some(capacity), metrics.pool_gauges()),
            metrics,
        )
    }

    /// Polls `fut` once: its output if it is ready.
    fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Option<F::Output> {
        match fut.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(out) => Some(out),
            Poll::Pending => None,
        }
    }

    /// A connection of its own.
    fn conn() -> Arc<ConnectionShare> {
        Arc::new(ConnectionShare::default())
    }

    fn now<F: Future>(fut: F) -> F::Output {
        poll_once(pin!(fut)).expect("ready at once")
    }

    #[test]
    fn requests_wait_until_their_bytes_fit_and_never_exceed_the_capacity() {
        let (pool, metrics) = pool(100);
        let a = now(pool.reserve(60, Tier::First, conn()));
        let b = now(pool.reserve(40, Tier::First, conn()));
        let mut c = pin!(pool.reserve(10, Tier::First, conn()));
        assert!(poll_once(c.as_mut()).is_none());
        assert_eq!(metrics.pool_gauges().waiting_bytes.get(), 10);
        drop(a);
        let c = poll_once(c.as_mut()).expect("granted after a release");
        assert_eq!(metrics.pool_gauges().requests.get(), 50);
        assert_eq!(metrics.pool_gauges().peak.get(), 100);
        assert_eq!(metrics.pool_gauges().waiting_requests.get(), 0);
        drop((b, c));
        assert_eq!(metrics.pool_gauges().requests.get(), 0);
    }

    #[test]
    fn a_request_larger_than_the_pool_goes_alone_when_it_is_empty() {
        let (pool, metrics) = pool(100);
        let small = now(pool.reserve(1, Tier::First, conn()));
        let mut big = pin!(pool.reserve(500, Tier::First, conn()));
        assert!(poll_once(big.as_mut()).is_none());
        // Order is kept: a small request behind the big one waits too.
        let mut later = pin!(pool.reserve(1, Tier::First, conn()));
        assert!(poll_once(later.as_mut()).is_none());
        drop(small);
        let big = poll_once(big.as_mut()).expect("alone in an empty pool");
        assert!(poll_once(later.as_mut()).is_none());
        drop(big);
        drop(poll_once(later.as_mut()).expect("after the big one"));
        assert_eq!(metrics.pool_gauges().peak.get(), 500);
    }

    #[test]
    fn pipelined_requests_and_unwritten_responses_share_half_the_pool() {
        let (pool, _metrics) = pool(100);
        let mut p1 = now(pool.reserve(30, Tier::Pipelined, conn()));
        p1.charge_response(15);
        let mut p2 = pin!(pool.reserve(10, Tier::Pipelined, conn()));
        assert!(poll_once(p2.as_mut()).is_none(), "30 + 15 + 10 > 50");
        // First requests still get the other half.
        let f = now(pool.reserve(50, Tier::First, conn()));
        drop(f);
        drop(p1);
        drop(poll_once(p2.as_mut()).expect("the half is free again"));
    }

    #[test]
    fn a_cancelled_wait_leaves_the_queue() {
        let (pool, metrics) = pool(100);
        let held = now(pool.reserve(100, Tier::First, conn()));
        {
            let mut gone = pin!(pool.reserve(80, Tier::First, conn()));
            assert!(poll_once(gone.as_mut()).is_none());
        }
        assert_eq!(metrics.pool_gauges().waiting_requests.get(), 0);
        let mut next = pin!(pool.reserve(50, Tier::First, conn()));
        assert!(poll_once(next.as_mut()).is_none());
        drop(held);
        drop(poll_once(next.as_mut()).expect("not blocked by the cancelled waiter"));
        assert_eq!(metrics.pool_gauges().requests.get(), 0);
    }

    #[test]
    fn first_requests_go_before_waiting_pipelined_ones() {
        let (pool, _metrics) = pool(100);
        let held = now(pool.reserve(90, Tier::First, conn()));
        let mut pipelined = pin!(pool.reserve(20, Tier::Pipelined, conn()));
        let mut first = pin!(pool.reserve(20, Tier::First, conn()));
        assert!(poll_once(pipelined.as_mut()).is_none());
        assert!(poll_once(first.as_mut()).is_none());
        drop(held);
        let first = poll_once(first.as_mut()).expect("first requests first");
        let pipelined = poll_once(pipelined.as_mut()).expect("room for both");
        drop((first, pipelined));
    }

    #[test]
    fn the_pipelined_connection_holding_least_goes_next() {
        let (pool, _metrics) = pool(100);
        let (greedy, modest) = (conn(), conn());
        let held = now(pool.reserve(40, Tier::Pipelined, greedy.clone()));
        let other = now(pool.reserve(10, Tier::Pipelined, conn()));
        // The greedy connection asks first, the modest one after; only one fits at a time.
        let mut more = pin!(pool.reserve(10, Tier::Pipelined, greedy.clone()));
        let mut fair = pin!(pool.reserve(10, Tier::Pipelined, modest.clone()));
        assert!(poll_once(more.as_mut()).is_none());
        assert!(poll_once(fair.as_mut()).is_none());
        drop(other);
        let fair = poll_once(fair.as_mut()).expect("the connection holding nothing goes first");
        assert!(poll_once(more.as_mut()).is_none());
        drop(fair);
        drop(poll_once(more.as_mut()).expect("then the greedy one"));
        drop(held);
    }
}
