//! Progress metrics of a running application: throughput, consumer lag, commit latency,
//! restoration progress, skipped records.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

/// Counters the threads update.
pub(crate) struct Metrics {
    pub(crate) processed: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) commit_micros_total: AtomicU64,
    pub(crate) commit_micros_max: AtomicU64,
    pub(crate) restored: AtomicU64,
    pub(crate) restore_remaining: AtomicI64,
    pub(crate) aborted: AtomicU64,
    pub(crate) skipped_deserialization: AtomicU64,
    pub(crate) dropped_late: AtomicU64,
    pub(crate) standby_tasks: AtomicI64,
    pub(crate) standby_behind: AtomicI64,
    /// Consumer lag per thread and partition, from librdkafka's statistics.
    pub(crate) lag: Mutex<HashMap<(usize, String, i32), i64>>,
    rate: Mutex<(Instant, u64, f64)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            processed: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            commit_micros_total: AtomicU64::new(0),
            commit_micros_max: AtomicU64::new(0),
            restored: AtomicU64::new(0),
            restore_remaining: AtomicI64::new(0),
            aborted: AtomicU64::new(0),
            skipped_deserialization: AtomicU64::new(0),
            dropped_late: AtomicU64::new(0),
            standby_tasks: AtomicI64::new(0),
            standby_behind: AtomicI64::new(0),
            lag: Mutex::new(HashMap::new()),
            rate: Mutex::new((Instant::now(), 0, 0.0)),
        }
    }
}

impl Metrics {
    pub(crate) fn commit_took(&self, micros: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.commit_micros_total
            .fetch_add(micros, Ordering::Relaxed);
        self.commit_micros_max.fetch_max(micros, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let processed = self.processed.load(Ordering::Relaxed);
        let rate = {
            let mut r = self.rate.lock();
            let elapsed = r.0.elapsed().as_secs_f64();
            if elapsed >= 1.0 {
                r.2 = (processed - r.1) as f64 / elapsed;
                *r = (Instant::now(), processed, r.2);
            }
            r.2
        };
        let commits = self.commits.load(Ordering::Relaxed);
        let total = self.commit_micros_total.load(Ordering::Relaxed);
        MetricsSnapshot {
            records_processed: processed,
            process_rate_per_sec: rate,
            consumer_lag: self.lag.lock().values().filter(|l| **l > 0).sum(),
            commits,
            commit_latency_avg_ms: if commits == 0 {
                0.0
            } else {
                total as f64 / commits as f64 / 1000.0
            },
            commit_latency_max_ms: self.commit_micros_max.load(Ordering::Relaxed) as f64 / 1000.0,
            records_restored: self.restored.load(Ordering::Relaxed),
            restore_remaining: self.restore_remaining.load(Ordering::Relaxed).max(0),
            transactions_aborted: self.aborted.load(Ordering::Relaxed),
            skipped_records: self.skipped_deserialization.load(Ordering::Relaxed),
            dropped_late_records: self.dropped_late.load(Ordering::Relaxed),
            standby_tasks: self.standby_tasks.load(Ordering::Relaxed),
            standby_records_behind: self.standby_behind.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time view of an application's metrics.
#[derive(Clone, Debug, Default)]
pub struct MetricsSnapshot {
    /// Records processed since start.
    pub records_processed: u64,
    /// Records processed per second over the interval since the previous snapshot (at least 1 s).
    pub process_rate_per_sec: f64,
    /// Records in the input partitions not yet consumed (librdkafka's consumer lag, summed).
    pub consumer_lag: i64,
    /// Commits done.
    pub commits: u64,
    /// Average commit latency.
    pub commit_latency_avg_ms: f64,
    /// Largest commit latency.
    pub commit_latency_max_ms: f64,
    /// Changelog records applied to stores while restoring.
    pub records_restored: u64,
    /// Changelog records still to restore.
    pub restore_remaining: i64,
    /// Transactions aborted (exactly-once) or commits failed and rewound (at-least-once).
    pub transactions_aborted: u64,
    /// Records skipped because they did not deserialize.
    pub skipped_records: u64,
    /// Records dropped because they were too late for their window.
    pub dropped_late_records: u64,
    /// Tasks this instance keeps standby copies of.
    pub standby_tasks: i64,
    /// Changelog records the standby copies have yet to apply (as of the last second).
    pub standby_records_behind: i64,
}
