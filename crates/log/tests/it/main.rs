//! Storage engine tests through the public API: appends, reads, recovery, retention, idempotence.

mod close;
mod compaction;
mod damage;
mod model;
mod replication;
mod txn;
mod verify;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sluice_log::testing::{split_batches, BatchBuilder};
use sluice_log::{
    AppendError, LeaderEpoch, LogConfig, LogDir, Offset, OpenError, PartitionLog, ReadError,
    Timestamp, TimestampMatch, TimestampType,
};

const NOW: Timestamp = Timestamp(1_700_000_000_000);

fn batch(n: usize, ts: i64) -> Bytes {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        b = b.record(
            Some(format!("k{i}").as_bytes()),
            &[b'v'; 100],
            ts + i as i64,
        );
    }
    b.build()
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, config: LogConfig, clean: bool) -> PartitionLog {
    PartitionLog::open(dir, config, clean).expect("open")
}

fn at(offset: i64, ts: i64) -> Option<TimestampMatch> {
    Some(TimestampMatch {
        offset: Offset(offset),
        timestamp: Timestamp(ts),
        compressed_batch: None,
    })
}

fn read_all(log: &PartitionLog) -> Vec<(i64, i64, Bytes)> {
    let r = log
        .read(
            log.log_start_offset(),
            usize::MAX / 2,
            log.log_end_offset(),
            true,
        )
        .unwrap();
    split_batches(&r.records)
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn appends_assign_offsets_and_reads_return_the_same_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default(), true);
    let a = log
        .validate_and_append(batch(3, 10), LeaderEpoch(4), NOW)
        .unwrap();
    assert_eq!(
        (a.first_offset, a.last_offset, a.duplicate),
        (Offset(0), Offset(2), false)
    );
    let b = log
        .validate_and_append(batch(2, 20), LeaderEpoch(4), NOW)
        .unwrap();
    assert_eq!((b.first_offset, b.last_offset), (Offset(3), Offset(4)));
    assert_eq!(log.log_end_offset(), Offset(5));
    let batches = read_all(&log);
    assert_eq!(
        batches.iter().map(|b| (b.0, b.1)).collect::<Vec<_>>(),
        vec![(0, 2), (3, 4)]
    );
    // Stored bytes equal the produced ones except the offset and leader epoch fields.
    let produced = batch(2, 20);
    assert_eq!(&batches[1].2[16..], &produced[16..]);
    assert_eq!(&batches[1].2[12..16], &4i32.to_be_bytes());
    // Reading from inside a batch returns the whole batch; at the end, nothing.
    let r = log.read(Offset(4), 1 << 20, Offset(5), true).unwrap();
    assert_eq!(split_batches(&r.records)[0].0, 3);
    assert!(log
        .read(Offset(5), 1 << 20, Offset(5), true)
        .unwrap()
        .records
        .is_empty());
    // The high watermark bounds reads.
    let r = log.read(Offset(0), 1 << 20, Offset(3), true).unwrap();
    assert_eq!(split_batches(&r.records).len(), 1);
    assert!(matches!(
        log.read(Offset(6), 100, Offset(5), true),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn max_bytes_and_the_first_batch_rule() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default(), true);
    for _ in 0..4 {
        log.validate_and_append(batch(5, 1), LeaderEpoch(0), NOW)
            .unwrap();
    }
    let size = batch(5, 1).len();
    let end = log.log_end_offset();
    let r = log.read(Offset(0), size * 2 + 10, end, true).unwrap();
    assert_eq!(r.records.len(), size * 2);
    let r = log.read(Offset(0), 10, end, true).unwrap();
    assert_eq!(
        r.records.len(),
        size,
        "KIP-74: one whole batch even past max_bytes"
    );
    let r = log.read(Offset(0), 10, end, false).unwrap();
    assert!(r.records.is_empty());
}

#[test]
fn bad_batches_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            max_message_bytes: 2000,
            ..LogConfig::default()
        },
        true,
    );
    log.validate_and_append(batch(1, 1), LeaderEpoch(0), NOW)
        .unwrap();
    let size = log.size_bytes();
    let good = batch(2, 1);
    let mut crc = good.to_vec();
    *crc.last_mut().unwrap() ^= 0xff;
    let mut magic = good.to_vec();
    magic[16] = 1;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (crc, "corrupt"),
        (magic, "invalid"),
        (good[..good.len() - 3].to_vec(), "corrupt"),
        (good[..20].to_vec(), "corrupt"),
        (Vec::new(), "invalid"),
        (batch(30, 1).to_vec(), "too large"),
        ([good.to_vec(), vec![0, 1, 2]].concat(), "corrupt"),
    ];
    for (bytes, kind) in cases {
        let err = log
            .validate_and_append(Bytes::from(bytes), LeaderEpoch(0), NOW)
            .unwrap_err();
        let ok = match kind {
            "corrupt" => matches!(err, AppendError::Corrupt(_)),
            "invalid" => matches!(err, AppendError::Invalid(_)),
            _ => matches!(err, AppendError::TooLarge { .. }),
        };
        assert!(ok, "{kind}: {err}");
        assert_eq!(log.size_bytes(), size);
        assert_eq!(log.log_end_offset(), Offset(1));
    }
    // Two good batches in one append are both stored.
    let two = [batch(1, 1).to_vec(), batch(2, 1).to_vec()].concat();
    let info = log
        .validate_and_append(Bytes::from(two), LeaderEpoch(0), NOW)
        .unwrap();
    assert_eq!(
        (info.first_offset, info.last_offset),
        (Offset(1), Offset(3))
    );
}

#[test]
fn compressed_batches_are_returned_for_exact_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default(), true);
    // The log returns compressed batches whole; the caller decompresses.
    let gzip = BatchBuilder::new()
        .attributes(1)
        .record(None, b"a", 10)
        .record(None, b"b", 20)
        .build();
    log.validate_and_append(gzip, LeaderEpoch(0), NOW).unwrap();
    let found = log.offset_for_timestamp(Timestamp(15)).unwrap().unwrap();
    assert_eq!((found.offset, found.timestamp), (Offset(0), Timestamp(20)));
    assert_eq!(
        found.compressed_batch.unwrap().len(),
        read_all(&log)[0].2.len()
    );
}

#[test]
fn log_append_time_stamps_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            message_timestamp_type: TimestampType::LogAppendTime,
            ..LogConfig::default()
        },
        true,
    );
    let info = log
        .validate_and_append(batch(2, 5), LeaderEpoch(0), NOW)
        .unwrap();
    assert_eq!(info.log_append_time, Some(NOW));
    let stored = &read_all(&log)[0].2;
    assert_eq!(&stored[35..43], &NOW.0.to_be_bytes());
    assert_ne!(stored[22] & 0x08, 0);
    assert_eq!(
        log.offset_for_timestamp(Timestamp(6)).unwrap(),
        at(0, NOW.0)
    );
}

#[test]
fn segments_roll_by_size_and_time_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments(), true);
    for i in 0..40 {
        log.validate_and_append(batch(3, 1000 + i * 10), LeaderEpoch(0), NOW)
            .unwrap();
    }
    let segments = files(dir.path(), "log");
    assert!(segments.len() >= 3, "{segments:?}");
    assert!(fs::metadata(&segments[0]).unwrap().len() <= 4096);
    let before = read_all(&log);
    assert_eq!(before.len(), 40);
    for ts in [0, 1000, 1011, 1200, 1392] {
        let expect = before
            .iter()
            .flat_map(|(base, _, _)| (0..3).map(move |i| (base + i, 1000 + (base / 3) * 10 + i)))
            .find(|&(_, t)| t >= ts)
            .and_then(|(o, t)| at(o, t));
        assert_eq!(
            log.offset_for_timestamp(Timestamp(ts)).unwrap(),
            expect,
            "ts {ts}"
        );
    }
    assert_eq!(log.offset_for_timestamp(Timestamp(5000)).unwrap(), None);
    log.close().unwrap();
    let mut log = open(dir.path(), small_segments(), true);
    assert_eq!(read_all(&log), before);
    assert_eq!(
        log.offset_for_timestamp(Timestamp(1200)).unwrap(),
        at(60, 1200)
    );
    // Time-based roll.
    let n = files(dir.path(), "log").len();
    // segment.ms counts wall-clock time since the segment was created.
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    log.roll_if_due(Timestamp(wall + 3_600_000)).unwrap();
    assert_eq!(files(dir.path(), "log").len(), n, "not due yet");
    log.roll_if_due(Timestamp(wall + 8 * 24 * 3600 * 1000))
        .unwrap();
    assert_eq!(files(dir.path(), "log").len(), n + 1);
    log.roll_if_due(Timestamp(wall + 9 * 24 * 3600 * 1000))
        .unwrap();
    assert_eq!(
        files(dir.path(), "log").len(),
        n + 1,
        "an empty segment does not roll"
    );
}

#[test]
fn unclean_open_truncates_a_torn_tail_and_garbage() {
    for garbage in [
        &[0xABu8; 777][..],
        &[0u8; 40][..],
        &[0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 1, 0][..],
    ] {
        for clean in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = open(dir.path(), small_segments(), true);
            for i in 0..30 {
                log.validate_and_append(batch(2, i), LeaderEpoch(0), NOW)
                    .unwrap();
            }
            let before = read_all(&log);
            if clean {
                log.close().unwrap();
            } else {
                drop(log);
            }
            let newest = files(dir.path(), "log").pop().unwrap();
            fs::OpenOptions::new()
                .append(true)
                .open(&newest)
                .unwrap()
                .write_all(garbage)
                .unwrap();
            let mut log = open(dir.path(), small_segments(), clean);
            assert_eq!(
                read_all(&log),
                before,
                "clean={clean} garbage={}",
                garbage.len()
            );
            let info = log
                .validate_and_append(batch(1, 99), LeaderEpoch(0), NOW)
                .unwrap();
            assert_eq!(info.first_offset, Offset(60));
        }
    }
}

#[test]
fn idempotent_producers_dedupe_and_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let b = |seq: i32, n: usize| {
        let mut builder = BatchBuilder::new().producer(7, 0, seq);
        for _ in 0..n {
            builder = builder.record(None, b"x", 1);
        }
        builder.build()
    };
    let mut log = open(dir.path(), small_segments(), true);
    let first = log
        .validate_and_append(b(0, 2), LeaderEpoch(0), NOW)
        .unwrap();
    let again = log
        .validate_and_append(b(0, 2), LeaderEpoch(0), NOW)
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (again.first_offset, again.last_offset),
        (first.first_offset, first.last_offset)
    );
    assert_eq!(log.log_end_offset(), Offset(2));
    assert!(matches!(
        log.validate_and_append(b(5, 1), LeaderEpoch(0), NOW),
        Err(AppendError::OutOfOrderSequence {
            expected: 2,
            got: 5,
            ..
        })
    ));
    log.validate_and_append(b(2, 1), LeaderEpoch(0), NOW)
        .unwrap();
    // Killed: state is rebuilt by replaying the log.
    drop(log);
    let mut log = open(dir.path(), small_segments(), false);
    assert!(
        log.validate_and_append(b(2, 1), LeaderEpoch(0), NOW)
            .unwrap()
            .duplicate
    );
    for seq in 3..40 {
        log.validate_and_append(b(seq, 1), LeaderEpoch(0), NOW)
            .unwrap();
    }
    // Closed: state comes from the snapshot.
    log.close().unwrap();
    assert!(!files(dir.path(), "snapshot").is_empty());
    let mut log = open(dir.path(), small_segments(), true);
    assert!(
        log.validate_and_append(b(39, 1), LeaderEpoch(0), NOW)
            .unwrap()
            .duplicate
    );
    assert!(matches!(
        log.validate_and_append(b(41, 1), LeaderEpoch(0), NOW),
        Err(AppendError::OutOfOrderSequence { .. })
    ));
    // A new epoch restarts at zero; the old epoch is fenced.
    let new_epoch = BatchBuilder::new()
        .producer(7, 1, 0)
        .record(None, b"y", 1)
        .build();
    log.validate_and_append(new_epoch, LeaderEpoch(0), NOW)
        .unwrap();
    assert!(matches!(
        log.validate_and_append(b(40, 1), LeaderEpoch(0), NOW),
        Err(AppendError::InvalidProducerEpoch { .. })
    ));
}

#[test]
fn retention_deletes_old_closed_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 60_000,
        ..small_segments()
    };
    let mut log = open(dir.path(), config.clone(), true);
    for i in 0..20 {
        log.validate_and_append(batch(2, NOW.0 - 600_000 + i), LeaderEpoch(0), NOW)
            .unwrap();
    }
    for i in 0..20 {
        log.validate_and_append(batch(2, NOW.0 + i), LeaderEpoch(0), NOW)
            .unwrap();
    }
    let deleted = log.enforce_retention(NOW).unwrap();
    assert!(deleted > 0);
    let start = log.log_start_offset().0;
    assert!(start > 0 && start <= 40, "start {start}");
    assert_eq!(read_all(&log).first().unwrap().0, start);
    assert!(matches!(
        log.read(Offset(0), 100, Offset(80), true),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    // Size retention; the active segment always stays.
    log.set_config(LogConfig {
        retention_bytes: 0,
        ..config.clone()
    });
    log.enforce_retention(NOW).unwrap();
    assert_eq!(files(dir.path(), "log").len(), 1);
    let start = log.log_start_offset();
    log.close().unwrap();
    let log = open(dir.path(), config, true);
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.log_end_offset(), Offset(80));
}

#[test]
fn truncate_to_removes_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments(), true);
    for i in 0..30 {
        log.validate_and_append(batch(2, i), LeaderEpoch(0), NOW)
            .unwrap();
    }
    log.truncate_to(Offset(21)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(20));
    assert_eq!(read_all(&log).last().unwrap().1, 19);
    assert_eq!(
        log.validate_and_append(batch(1, 1), LeaderEpoch(1), NOW)
            .unwrap()
            .first_offset,
        Offset(20)
    );
}

#[test]
fn a_data_dir_is_locked_and_remembers_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let d = LogDir::open(dir.path()).unwrap();
    assert!(d.was_clean(), "a new directory has nothing to recover");
    drop(d);
    let d = LogDir::open(dir.path()).unwrap();
    assert!(!d.was_clean(), "no marker: recover");
    assert!(matches!(
        LogDir::open(dir.path()),
        Err(OpenError::Locked { .. })
    ));
    let mut log = d
        .open_partition("my-topic", 3, LogConfig::default())
        .unwrap();
    log.validate_and_append(batch(1, 1), LeaderEpoch(0), NOW)
        .unwrap();
    log.close().unwrap();
    fs::create_dir(dir.path().join("__sluice_metadata")).unwrap();
    assert_eq!(d.partitions().unwrap(), vec![("my-topic".to_owned(), 3)]);
    d.mark_clean_shutdown().unwrap();
    drop(d);
    let d = LogDir::open(dir.path()).unwrap();
    assert!(d.was_clean());
    let log = d
        .open_partition("my-topic", 3, LogConfig::default())
        .unwrap();
    assert_eq!(log.log_end_offset(), Offset(1));
    log.delete().unwrap();
    assert!(d.partitions().unwrap().is_empty());
}

#[test]
fn delete_records_moves_the_log_start_and_drops_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments(), true);
    for i in 0..30 {
        log.validate_and_append(batch(2, i), LeaderEpoch(0), NOW)
            .unwrap();
    }
    let segments = files(dir.path(), "log").len();
    assert_eq!(log.delete_records_before(Offset(31)).unwrap(), Offset(31));
    assert_eq!(log.log_start_offset(), Offset(31));
    assert!(files(dir.path(), "log").len() < segments);
    assert!(matches!(
        log.read(Offset(30), 100, Offset(60), true),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    // Reading at the new start returns the batch holding it.
    let r = log.read(Offset(31), 1 << 20, Offset(60), true).unwrap();
    assert_eq!(split_batches(&r.records)[0].0, 30);
    // Never backwards, never past the end.
    assert_eq!(log.delete_records_before(Offset(5)).unwrap(), Offset(31));
    assert!(log.delete_records_before(Offset(61)).is_err());
    log.close().unwrap();
    let log = open(dir.path(), small_segments(), true);
    assert_eq!(log.log_start_offset(), Offset(31));
}

#[test]
fn compression_type_recompresses_batches_with_another_codec() {
    use sluice_protocol::records::{Batch, Compression};
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            compression: sluice_log::CompressionType::Lz4,
            ..LogConfig::default()
        },
        true,
    );
    let sent = BatchBuilder::new()
        .producer(4, 0, 0)
        .record_with_headers(Some(b"k1"), &[b'a'; 300], 10, &[("h", b"v")])
        .record(None, &[b'b'; 300], 11)
        .build();
    log.validate_and_append(sent.clone(), LeaderEpoch(0), NOW)
        .unwrap();
    let stored = read_all(&log).remove(0).2;
    assert_eq!(stored[22] & 0x07, 3, "stored with lz4");
    assert!(stored.len() < sent.len(), "compressed");
    let (sent_batch, _) = Batch::parse(&sent).unwrap();
    let (stored_batch, _) = Batch::parse(&stored).unwrap();
    stored_batch.check_crc().unwrap();
    assert_eq!(stored_batch.header().compression(), Ok(Compression::Lz4));
    assert_eq!(
        (
            stored_batch.header().producer_id,
            stored_batch.header().base_sequence
        ),
        (4, sent_batch.header().base_sequence)
    );
    let mut plain = Vec::new();
    stored_batch.decompress_into(1 << 20, &mut plain).unwrap();
    assert_eq!(plain, sent_batch.records_bytes(), "the same records");
    // A retry of the same producer batch is still recognised as a duplicate.
    assert!(
        log.validate_and_append(sent, LeaderEpoch(0), NOW)
            .unwrap()
            .duplicate
    );
}

#[test]
fn flush_messages_syncs_every_n_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            flush_messages: 3,
            ..LogConfig::default()
        },
        true,
    );
    let start = log.recovery_point();
    log.validate_and_append(batch(1, 1), LeaderEpoch(0), NOW)
        .unwrap();
    log.validate_and_append(batch(1, 1), LeaderEpoch(0), NOW)
        .unwrap();
    assert_eq!(log.recovery_point(), start, "not yet");
    log.validate_and_append(batch(1, 1), LeaderEpoch(0), NOW)
        .unwrap();
    assert_eq!(log.recovery_point(), Offset(3), "synced after 3 records");
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    log.set_config(LogConfig {
        flush_ms: 0,
        ..LogConfig::default()
    });
    log.validate_and_append(batch(2, 1), LeaderEpoch(0), Timestamp(wall))
        .unwrap();
    assert_eq!(
        log.recovery_point(),
        Offset(5),
        "flush.ms=0 syncs every append"
    );
}

#[test]
fn compacted_logs_refuse_records_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            compact: true,
            ..LogConfig::default()
        },
        true,
    );
    let keyless = BatchBuilder::new()
        .record(Some(b"k"), b"v", 1)
        .record(None, b"v", 1)
        .build();
    match log.validate_and_append(keyless, LeaderEpoch(0), NOW) {
        Err(AppendError::RecordErrors { errors, timestamps }) => {
            assert!(!timestamps);
            let indexes: Vec<u32> = errors.iter().map(|e| e.batch_index).collect();
            assert_eq!(indexes, [1], "only the keyless record is listed");
        }
        other => panic!("expected record errors, got {other:?}"),
    }
    assert_eq!(log.log_end_offset(), Offset(0));
    log.validate_and_append(batch(2, 1), LeaderEpoch(0), NOW)
        .unwrap();
}

/// The bytes of file ranges, concatenated.
fn range_bytes(ranges: &[sluice_log::FileRange]) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut out = Vec::new();
    for r in ranges {
        let mut buf = vec![0u8; r.len as usize];
        r.file.read_exact_at(&mut buf, r.pos).unwrap();
        out.extend_from_slice(&buf);
    }
    out
}

#[test]
fn file_ranges_hold_the_same_bytes_as_reads_and_respect_limits() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments(), true);
    for i in 0..40 {
        log.validate_and_append(batch(3, i * 10), LeaderEpoch(0), NOW)
            .unwrap();
    }
    assert!(files(dir.path(), "log").len() > 3, "several segments");
    let end = log.log_end_offset();
    for (start, limit) in [(0, end.0), (7, end.0), (0, 60), (31, 61)] {
        let whole = log
            .read(Offset(start), usize::MAX / 2, Offset(limit), true)
            .unwrap();
        let plan = log
            .read_plan(Offset(start), usize::MAX / 2, Offset(limit), true)
            .unwrap();
        let ranges = PartitionLog::file_ranges(plan).unwrap();
        assert_eq!(
            range_bytes(&ranges),
            whole.records.to_vec(),
            "{start}..{limit}"
        );
    }
    // A small budget: cut inside a batch, except that the first batch is whole.
    let plan = log.read_plan(Offset(0), 10, end, true).unwrap();
    let first = split_batches(&range_bytes(&PartitionLog::file_ranges(plan).unwrap()));
    assert_eq!(first.len(), 1, "one whole batch");
    let plan = log.read_plan(Offset(0), 500, end, false).unwrap();
    assert_eq!(
        range_bytes(&PartitionLog::file_ranges(plan).unwrap()).len(),
        500
    );
    let plan = log.read_plan(Offset(0), 0, end, false).unwrap();
    assert!(PartitionLog::file_ranges(plan).unwrap().is_empty());
    // An offset at or after the end of the bytes sent, for every cut of the log.
    for budget in [1usize, 100, 500, 1000, 3000, 100_000] {
        let plan = log.read_plan(Offset(0), budget, end, true).unwrap();
        let ranges = PartitionLog::file_ranges(plan).unwrap();
        // The offset after the last whole batch sent (a cut batch is dropped by clients).
        let bytes = range_bytes(&ranges);
        let mut at = 0;
        let mut after_sent = 0;
        while bytes.len() - at >= 61 {
            let b = &bytes[at..];
            let size = 12 + i32::from_be_bytes(b[8..12].try_into().unwrap()) as usize;
            if size > b.len() {
                break;
            }
            let base = i64::from_be_bytes(b[..8].try_into().unwrap());
            let delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
            after_sent = base + i64::from(delta) + 1;
            at += size;
        }
        let upper = log.offset_after(&ranges);
        assert!(
            upper.0 >= after_sent && upper <= end,
            "budget {budget}: {upper:?} vs {after_sent}"
        );
    }
}
