//! A broker whose log nobody reads any more (`sluice serve 2>fifo` and the fifo's reader
//! stopped, a pipe to a log shipper that died) keeps serving and still stops on SIGTERM: a log
//! line that cannot be written is dropped, and never takes down the task that logged it.

use std::io::Read as _;

use crate::harness::{now_ms, Broker};
use crate::produce_consume::{produce_records, producer};

/// Creates a topic (the broker logs it), produces to it and stops the broker with SIGTERM.
async fn serves_and_stops(mut broker: Broker, topic: &str) {
    broker.create_topic(topic, 2, &[]).await;
    let produced = produce_records(&producer(&broker, &[]), topic, 100, now_ms()).await;
    assert_eq!(produced.values().map(Vec::len).sum::<usize>(), 100);
    assert!(
        broker.stop(),
        "SIGTERM must stop the broker cleanly (exit 0) although its stderr is broken"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_reader_going_away_neither_stops_serving_nor_blocks_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, mut stderr) = Broker::start_with_stderr_pipe(dir.path(), 0, &[]);
    broker.await_started();
    // Read the log for a while, as `cat fifo` would, then go away.
    let mut first = [0u8; 64];
    let read = stderr.read(&mut first).expect("read the broker's stderr");
    assert!(read > 0, "the broker logs at start-up");
    drop(stderr);
    serves_and_stops(broker, "after-the-reader-left").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_broken_before_start_up_does_not_stop_the_broker_starting() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, stderr) = Broker::start_with_stderr_pipe(dir.path(), 0, &[]);
    drop(stderr);
    broker.await_started();
    serves_and_stops(broker, "never-read").await;
}
