//! The Kafka listener: accepts connections within `max.connections` and
//! `max.connections.per.ip`, gives them the broker-wide request memory pool, runs housekeeping in
//! the background, and on shutdown drains connections and closes every log cleanly.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::broker::{now, Broker};
use crate::connection;
use crate::connection_quotas::ConnectionQuotas;
use crate::request_pool::RequestPool;

/// How long shutdown waits for connections to answer their in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves Kafka clients on `listener` until [`Broker::begin_shutdown`] is called, then closes the
/// logs. Returns whether the shutdown was clean.
pub async fn run(broker: Arc<Broker>, listener: TcpListener) -> bool {
    let mut shutdown = broker.shutdown_signal();
    let background = tokio::spawn(housekeeping(broker.clone()));
    let group_timers = tokio::spawn(group_ticker(broker.clone()));
    let cleaner = tokio::spawn(log_cleaner(broker.clone()));
    let cluster_tasks = crate::cluster::spawn(&broker);
    let quotas = ConnectionQuotas::new(&broker.config, broker.metrics.connections_active());
    let pool = RequestPool::new(
        broker.config.queued_max_request_bytes,
        broker.metrics.pool_gauges(),
    );
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = crate::broker::stopped(&mut shutdown) => break,
        };
        // Reap finished connection tasks so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let slot = match quotas.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                // Counted, and logged only at debug: a client retrying in a loop must not be able
                // to flood the log.
                debug!(%peer, ?refusal, "refusing connection");
                broker.metrics.connection_refused(refusal);
                drop(stream);
                continue;
            }
        };
        let broker = broker.clone();
        let pool = pool.clone();
        connections.spawn(async move {
            // The slot (and the active-connections gauge) is given back when the task ends,
            // however it ends.
            let _slot = slot;
            connection::serve(broker, pool, stream, peer).await;
        });
    }
    drop(listener);
    // Joins and syncs waiting on a rebalance are answered now so their connections can drain.
    broker.groups.shutdown();
    let _ = group_timers.await;
    // Memberships that changed in the last tick reach the log before it closes.
    broker.persist_group_snapshots().await;
    // The open count, not the task set's length: finished tasks stay in the set until reaped.
    info!(
        connections = quotas.open(),
        "shutting down: draining connections"
    );
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("connections did not drain in time; aborting them");
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    // Housekeeping and the cleaner stop at their next select (a clean in progress finishes
    // first); wait so no log is in use when the logs close.
    let _ = background.await;
    let _ = cleaner.await;
    for task in cluster_tasks {
        let _ = task.await;
    }
    // Fetchers stop writing before the logs close; the quorum member stops last.
    broker.leave_cluster().await;
    let broker_for_close = broker.clone();
    let clean = tokio::task::spawn_blocking(move || broker_for_close.replicas.shutdown())
        .await
        .unwrap_or(false);
    info!(clean, "logs closed");
    clean
}

/// Expires group members' sessions, ends overdue rebalances and persists changed memberships
/// ten times a second; expires committed offsets of empty groups every
/// `offsets.retention.check.interval.ms`; aborts timed-out transactions every
/// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
async fn group_ticker(broker: Arc<Broker>) {
    let mut shutdown = broker.shutdown_signal();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut expiry = tokio::time::interval(Duration::from_millis(
        broker.config.offsets_retention_check_interval_ms.max(10),
    ));
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: transactions a crash left prepared are completed at start.
    let mut txn_check = tokio::time::interval(Duration::from_millis(
        broker.config.txn_abort_check_interval_ms.max(10),
    ));
    txn_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                broker.groups.tick(std::time::Instant::now());
                broker.persist_group_snapshots().await;
            }
            _ = expiry.tick() => broker.expire_offsets().await,
            _ = txn_check.tick() => crate::txn::driver::tick(&broker).await,
            _ = crate::broker::stopped(&mut shutdown) => return,
        }
    }
}

/// Compacts `compact` topics: a pass over every partition each `log.cleaner.backoff.ms`, each
/// clean on a blocking thread.
async fn log_cleaner(broker: Arc<Broker>) {
    if !broker.config.cleaner_enable {
        return;
    }
    let mut shutdown = broker.shutdown_signal();
    let mut pass = tokio::time::interval(Duration::from_millis(
        broker.config.cleaner_backoff_ms.max(10),
    ));
    pass.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = crate::broker::stopped(&mut shutdown) => return,
            _ = pass.tick() => {
                for partition in broker.replicas.all_partitions() {
                    if broker.is_shutting_down() {
                        return;
                    }
                    let started = std::time::Instant::now();
                    let p = partition.clone();
                    match tokio::task::spawn_blocking(move || p.clean(now())).await {
                        Ok(Ok(Some(stats))) => {
                            let secs = started.elapsed().as_secs_f64().max(1e-6);
                            info!(
                                topic = %partition.topic,
                                partition = partition.index,
                                read_bytes = stats.bytes_read,
                                written_bytes = stats.bytes_written,
                                records_read = stats.records_read,
                                records_kept = stats.records_kept,
                                mb_per_s = format!("{:.1}", stats.bytes_read as f64 / secs / 1e6),
                                "cleaned"
                            );
                        }
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) => warn!(topic = %partition.topic, partition = partition.index, error = %e, "log clean failed"),
                        Err(e) => warn!(error = %e, "log cleaner task failed"),
                    }
                }
            }
        }
    }
}

/// Periodic retention, time-based rolls and background syncs.
async fn housekeeping(broker: Arc<Broker>) {
    let retention_every = Duration::from_millis(broker.config.retention_check_interval_ms.max(10));
    let flush_every = Duration::from_millis(broker.config.flush_interval_ms.max(10));
    let mut retention = tokio::time::interval(retention_every);
    // Not at once: every log was synced when it was opened, and a first pass over thousands of
    // them would only hold up a shutdown that comes soon after the start.
    let mut flush =
        tokio::time::interval_at(tokio::time::Instant::now() + flush_every, flush_every);
    let mut shutdown = broker.shutdown_signal();
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = crate::broker::stopped(&mut shutdown) => return,
            _ = retention.tick() => {
                let broker = broker.clone();
                let _ = tokio::task::spawn_blocking(move || broker.replicas.housekeeping(now())).await;
            }
            _ = flush.tick() => {
                let broker = broker.clone();
                let _ = tokio::task::spawn_blocking(move || broker.replicas.sync_all()).await;
            }
        }
    }
}
