//! librdkafka consumers that close without being able to hang a test.
//!
//! Dropping an rdkafka `BaseConsumer` that has a `group.id` closes it: librdkafka leaves the
//! group, runs the revoke rebalance callback, and rdkafka polls until the close is done, with no
//! bound. That loop has hung a test for minutes (the revoke callback of a consumer closing at the
//! end of `groups::members_carry_on_without_a_rebalance_across_a_broker_restart`). A [`Closing`]
//! consumer unsubscribes and drains the revocation on ordinary bounded polls first, so the close
//! has nothing left to revoke (librdkafka issue 4884: `rd_kafka_assign` in the rebalance
//! callback of a closing consumer can block forever), and does all of it on a thread of its
//! own that the test waits for a bounded time: if librdkafka still does not finish, the test
//! goes on and says so on stderr.

use std::io::Write as _;
use std::ops::Deref;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, DefaultConsumerContext};

/// How long the revocation may take to drain before the consumer is dropped anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dropping the consumer may take (after the drain) before the test stops waiting.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// One poll while draining.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A consumer closed by [`close`] when it drops (also when its test panics).
pub(crate) struct Closing<C: ConsumerContext + 'static = DefaultConsumerContext> {
    consumer: Option<BaseConsumer<C>>,
    /// Unsubscribe before the close; false for a static member (`group.instance.id`), which
    /// keeps its place in the group when its process stops, as Kafka intends.
    leave: bool,
}

impl<C: ConsumerContext + 'static> Closing<C> {
    pub(crate) fn new(consumer: BaseConsumer<C>) -> Closing<C> {
        Closing {
            consumer: Some(consumer),
            leave: true,
        }
    }

    /// A static member: closed without unsubscribing, so the group does not rebalance; the
    /// close still cannot hang the test.
    pub(crate) fn static_member(consumer: BaseConsumer<C>) -> Closing<C> {
        Closing {
            consumer: Some(consumer),
            leave: false,
        }
    }
}

impl<C: ConsumerContext + 'static> Deref for Closing<C> {
    type Target = BaseConsumer<C>;

    fn deref(&self) -> &BaseConsumer<C> {
        self.consumer.as_ref().expect("a consumer until it drops")
    }
}

impl<C: ConsumerContext + 'static> Drop for Closing<C> {
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            close(consumer, self.leave);
        }
    }
}

/// Closes `consumer` in a way that cannot hang the caller: on a thread of its own, unsubscribe
/// (or unassign) and poll until nothing is assigned (unless `leave` is false), then drop it;
/// the caller waits for that at most [`DRAIN_TIMEOUT`] + [`CLOSE_TIMEOUT`].
pub(crate) fn close<C: ConsumerContext + 'static>(consumer: BaseConsumer<C>, leave: bool) {
    let (done, closed) = std::sync::mpsc::channel();
    let closer = std::thread::Builder::new()
        .name("consumer close".into())
        .spawn(move || {
            if leave {
                revoke(&consumer);
            }
            drop(consumer);
            let _ = done.send(());
        });
    if closer.is_ok() && closed.recv_timeout(DRAIN_TIMEOUT + CLOSE_TIMEOUT).is_err() {
        let test = std::thread::current()
            .name()
            .unwrap_or("<an unnamed thread>")
            .to_owned();
        // Straight to stderr: libtest would show a captured line only if the test fails.
        let _ = writeln!(
            std::io::stderr().lock(),
            "{test}: a librdkafka consumer did not close within {:?}; left closing in the \
             background",
            DRAIN_TIMEOUT + CLOSE_TIMEOUT
        );
    }
}

/// Gives up the consumer's partitions on ordinary polls: the revoke callback runs here, where
/// it works, rather than inside librdkafka's close, where it has been seen to block forever.
fn revoke<C: ConsumerContext>(consumer: &BaseConsumer<C>) {
    let subscribed = consumer
        .subscription()
        .is_ok_and(|topics| topics.count() > 0);
    if subscribed {
        consumer.unsubscribe();
    } else {
        let _ = consumer.unassign();
    }
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while Instant::now() < deadline
        && consumer
            .assignment()
            .is_ok_and(|assigned| assigned.count() > 0)
    {
        let _ = consumer.poll(POLL_INTERVAL);
    }
}
