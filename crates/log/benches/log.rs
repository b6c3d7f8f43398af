//! Criterion benchmarks of the log's hot paths: appending 16 KiB producer batches and reading
//! 1 MiB fetches, and compacting 32 MiB; and the group-commit cycle of an acks=all write (append,
//! then mark it synced, which writes the recovery point in place), with and without the fsync.
//! `cargo bench -p sluice-log`; throughput is reported in bytes per second.

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

/// Times `iters` appends of `batch`, each followed by `after`, to a fresh log (one per sample
/// keeps the disk footprint bounded).
fn time_appends(iters: u64, batch: &Bytes, mut after: impl FnMut(&mut PartitionLog)) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config(), true).unwrap();
    let start = Instant::now();
    for _ in 0..iters {
        black_box(
            log.append(batch.clone(), LeaderEpoch(0), Timestamp(0))
                .unwrap(),
        );
        after(&mut log);
    }
    start.elapsed()
}

fn append(c: &mut Criterion) {
    let batch = batch_16k();
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("16KiB_batch", |b| {
        b.iter_custom(|iters| time_appends(iters, &batch, |_| {}));
    });
    group.finish();
}

/// What marking a group commit synced costs beside the append itself (it writes the recovery
/// point in place, without an fsync of its own), and the whole cycle with the data's fsync.
fn group_commit(c: &mut Criterion) {
    let batch = BatchBuilder::new().record(None, &[b'x'; 1000], 1).build();
    let mut group = c.benchmark_group("group_commit");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.measurement_time(Duration::from_secs(5));
    for (name, mark, fsync) in [
        ("1KiB_append", false, false),
        ("1KiB_append_mark_synced", true, false),
        ("1KiB_append_fsync_mark_synced", true, true),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                time_appends(iters, &batch, |log| {
                    let handle = log.sync_handle();
                    if fsync {
                        for file in &handle.files {
                            file.sync_data().unwrap();
                        }
                    }
                    if mark {
                        log.mark_synced(&handle);
                    }
                })
            });
        });
    }
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

/// Compaction: 32 MiB of 100-byte records over 10 000 keys in 1 MiB segments, cleaned whole.
fn clean(c: &mut Criterion) {
    let batches: Vec<Bytes> = (0..140)
        .map(|b| {
            let mut builder = BatchBuilder::new();
            for i in 0..140 {
                let key = format!("key-{}", (b * 140 + i) % 10_000);
                builder = builder.record(Some(key.as_bytes()), &[b'x'; 100], 1_700_000_000_000);
            }
            builder.build()
        })
        .collect();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        compact: true,
        delete: false,
        min_cleanable_dirty_ratio: 0.0,
        ..LogConfig::default()
    };
    let total: usize = 32 << 20;
    let mut group = c.benchmark_group("clean");
    group.throughput(Throughput::Bytes(total as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("32MiB_10k_keys", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let mut log = PartitionLog::open(dir.path(), config.clone(), true).unwrap();
                let mut written = 0;
                let mut i = 0;
                while written < total {
                    let batch = &batches[i % batches.len()];
                    written += batch.len();
                    log.append(batch.clone(), LeaderEpoch(0), Timestamp(0))
                        .unwrap();
                    i += 1;
                }
                let start = Instant::now();
                let plan = log.clean_plan(Timestamp(0)).expect("dirty");
                let output = plan.run().unwrap();
                assert!(log.finish_clean(output).unwrap());
                spent += start.elapsed();
            }
            spent
        });
    });
    group.finish();
}

criterion_group!(benches, append, group_commit, read, clean);
criterion_main!(benches);
