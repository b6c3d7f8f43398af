//! Criterion benchmarks of the log's hot paths: appending 16 KiB producer batches and reading
//! 1 MiB fetches. `cargo bench -p sluice-log`; throughput is reported in bytes per second.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_log::testing::BatchBuilder;
use sluice_log::{LeaderEpoch, LogConfig, Offset, PartitionLog, Timestamp};

/// A batch of 100-byte records close to 16 KiB, librdkafka's default `batch.size`-like unit.
fn batch_16k() -> Bytes {
    let mut b = BatchBuilder::new();
    for i in 0..140 {
        b = b.record(
            Some(format!("key-{i}").as_bytes()),
            &[b'x'; 100],
            1_700_000_000_000 + i,
        );
    }
    b.build()
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 20,
        ..LogConfig::default()
    }
}

fn append(c: &mut Criterion) {
    let batch = batch_16k();
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("16KiB_batch", |b| {
        b.iter_custom(|iters| {
            // A fresh log per sample keeps the disk footprint bounded.
            let dir = tempfile::tempdir().unwrap();
            let mut log = PartitionLog::open(dir.path(), config(), true).unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                black_box(
                    log.append(batch.clone(), LeaderEpoch(0), Timestamp(0))
                        .unwrap(),
                );
            }
            start.elapsed()
        });
    });
    group.finish();
}

fn read(c: &mut Criterion) {
    let batch = batch_16k();
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config(), true).unwrap();
    for _ in 0..(128 << 20) / batch.len() {
        log.append(batch.clone(), LeaderEpoch(0), Timestamp(0))
            .unwrap();
    }
    let end = log.log_end_offset();
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Bytes(1 << 20));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("1MiB_fetch", |b| {
        let mut at = 0i64;
        b.iter(|| {
            let r = log.read(Offset(at), 1 << 20, end, true).unwrap();
            at += 7919;
            if at >= end.0 - 10_000 {
                at = 0;
            }
            black_box(r.records.len())
        });
    });
    group.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
