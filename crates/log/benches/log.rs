//! Criterion benchmarks of the log's hot paths: appending producer batches of about 16 KiB
//! (100 B and 1 KiB records, uncompressed and with each codec, produce validation included),
//! validating them alone, reading 1 MiB fetches, compacting 32 MiB, and the group-commit cycle
//! of an acks=all write (append, then mark it synced, which writes the recovery point in place),
//! with and without the fsync. `cargo bench -p sluice-log`; appends and validation report records
//! per second, the rest bytes per second.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_log::testing::BatchBuilder;
use sluice_log::{LeaderEpoch, LogConfig, Offset, PartitionLog, Timestamp};
use sluice_protocol::records::{self, Compression, NewRecord};

/// The clock the appends run at: the records' timestamps are around it.
const NOW: Timestamp = Timestamp(1_700_000_000_000);
const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];
/// Uncompressed record bytes per producer batch (librdkafka-like batches).
const BATCH_BYTES: usize = 16 * 1024;

/// `len` bytes of pseudo-random lowercase words: compresses like text, not like a repeated byte.
fn value(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let word = 2 + (x % 7) as usize;
        for i in 0..word {
            out.push(b'a' + ((x >> (8 + i * 4)) % 16) as u8);
        }
        out.push(b' ');
    }
    out.truncate(len);
    out
}

/// A producer batch of about [`BATCH_BYTES`] of `record_bytes`-byte values with `codec`, and its
/// record count.
fn producer_batch(record_bytes: usize, codec: Compression) -> (Bytes, u64) {
    let count = (BATCH_BYTES / record_bytes).max(1);
    let values: Vec<Vec<u8>> = (0..count).map(|i| value(i as u64, record_bytes)).collect();
    let keys: Vec<String> = (0..count).map(|i| format!("key-{i}")).collect();
    let mut builder = records::BatchBuilder::new(codec);
    for i in 0..count {
        builder.append(NewRecord {
            timestamp: NOW.0 + i as i64,
            key: Some(keys[i].as_bytes()),
            value: Some(&values[i]),
            headers: &[],
        });
    }
    (Bytes::from(builder.build().unwrap()), count as u64)
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
            log.validate_and_append(batch.clone(), LeaderEpoch(0), NOW)
                .unwrap(),
        );
        after(&mut log);
    }
    start.elapsed()
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    for size in [100, 1024] {
        for codec in CODECS {
            let (batch, count) = producer_batch(size, codec);
            group.throughput(Throughput::Elements(count));
            group.bench_function(format!("{size}B_{codec}"), |b| {
                b.iter_custom(|iters| time_appends(iters, &batch, |_| {}));
            });
        }
    }
    group.finish();
}

/// Produce validation alone (what the broker does before taking the partition's lock).
fn validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    let policy = sluice_log::ValidationPolicy::from(&config());
    for size in [100, 1024] {
        for codec in CODECS {
            let (batch, count) = producer_batch(size, codec);
            group.throughput(Throughput::Elements(count));
            group.bench_function(format!("{size}B_{codec}"), |b| {
                b.iter(|| black_box(sluice_log::validate(batch.clone(), &policy, NOW).unwrap()));
            });
        }
    }
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
    let (batch, _) = producer_batch(100, Compression::None);
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config(), true).unwrap();
    for _ in 0..(128 << 20) / batch.len() {
        log.validate_and_append(batch.clone(), LeaderEpoch(0), NOW)
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
                builder = builder.record(Some(key.as_bytes()), &[b'x'; 100], NOW.0);
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
                    log.validate_and_append(batch.clone(), LeaderEpoch(0), NOW)
                        .unwrap();
                    i += 1;
                }
                let start = Instant::now();
                let plan = log.clean_plan(NOW).expect("dirty");
                let output = plan.run().unwrap();
                assert!(log.finish_clean(output).unwrap());
                spent += start.elapsed();
            }
            spent
        });
    });
    group.finish();
}

criterion_group!(benches, append, validate, group_commit, read, clean);
criterion_main!(benches);
