//! What ISR replication needs from the log: the leader-epoch cache and its checkpoint, Kafka's
//! OffsetForLeaderEpoch answers, follower appends that reproduce the leader's log and state
//! byte for byte, truncation after divergence, and restarting a log at a later offset.

use std::fs;
use std::path::Path;

use bytes::Bytes;
use sluice_log::testing::BatchBuilder;
use sluice_log::{
    AppendError, EpochEntry, LeaderEpoch, LogConfig, MarkerKind, Offset, PartitionLog,
    ProducerEpoch, ProducerId, Timestamp,
};

use crate::{files, open, small_segments};

const NOW: Timestamp = Timestamp(1_700_000_000_000);
const TRANSACTIONAL: i16 = 0x10;
const CHECKPOINT: &str = "leader-epoch-checkpoint";
/// Byte offset of partitionLeaderEpoch in a batch (outside the CRC).
const OFF_LEADER_EPOCH: usize = 12;

fn plain(n: usize) -> Bytes {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        b = b.record(Some(format!("k{i}").as_bytes()), &[b'v'; 40], NOW.0);
    }
    b.build()
}

fn idempotent(pid: i64, seq: i32, n: usize) -> Bytes {
    let mut b = BatchBuilder::new().producer(pid, 0, seq);
    for i in 0..n {
        b = b.record(Some(format!("i{i}").as_bytes()), b"idem", NOW.0);
    }
    b.build()
}

fn transactional(pid: i64, seq: i32, n: usize) -> Bytes {
    let mut b = BatchBuilder::new()
        .producer(pid, 0, seq)
        .attributes(TRANSACTIONAL);
    for i in 0..n {
        b = b.record(Some(format!("t{i}").as_bytes()), b"txn", NOW.0);
    }
    b.build()
}

/// A batch as a leader stores it: offsets from `base`, stamped with `epoch`.
fn stored(base: i64, epoch: i32, n: usize) -> Bytes {
    let mut b = BatchBuilder::new().base_offset(base);
    for i in 0..n {
        b = b.record(None, format!("r{i}").as_bytes(), NOW.0);
    }
    let mut bytes = b.build().to_vec();
    bytes[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
    Bytes::from(bytes)
}

fn append(log: &mut PartitionLog, batch: Bytes, epoch: i32) -> (i64, i64) {
    let info = log
        .validate_and_append(batch, LeaderEpoch(epoch), NOW)
        .expect("append");
    (info.first_offset.0, info.last_offset.0)
}

fn marker(log: &mut PartitionLog, pid: i64, kind: MarkerKind, epoch: i32) -> i64 {
    log.append_marker(
        ProducerId(pid),
        ProducerEpoch(0),
        kind,
        5,
        LeaderEpoch(epoch),
        NOW,
    )
    .expect("marker")
    .first_offset
    .0
}

fn epochs(log: &PartitionLog) -> Vec<(i32, i64)> {
    log.leader_epochs()
        .iter()
        .map(
            |EpochEntry {
                 epoch,
                 start_offset,
             }| (epoch.0, start_offset.0),
        )
        .collect()
}

/// The checkpoint's entries in Kafka's text format, after checking Sluice's checksum line.
fn checkpoint(dir: &Path) -> String {
    let text = fs::read_to_string(dir.join(CHECKPOINT)).expect("checkpoint file");
    let (body, checksum) = text
        .trim_end()
        .rsplit_once('\n')
        .expect("a checksum line after the entries");
    let body = format!("{body}\n");
    assert_eq!(
        checksum,
        format!("crc32c {:08x}", crc32c_of(body.as_bytes())),
        "{text:?}"
    );
    body
}

/// CRC-32C (Castagnoli), bit by bit: the checksum of the checkpoint's text.
fn crc32c_of(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn answers(log: &PartitionLog) -> Vec<(i32, i64)> {
    (-1..=7)
        .map(|e| {
            let (epoch, offset) = log.end_offset_for_epoch(LeaderEpoch(e));
            (epoch.0, offset.0)
        })
        .collect()
}

fn all_bytes(log: &PartitionLog) -> Bytes {
    log.read(
        log.log_start_offset(),
        usize::MAX / 2,
        log.log_end_offset(),
        true,
    )
    .expect("read")
    .records
}

/// Every segment's `.log` bytes, in offset order.
fn log_file_bytes(dir: &Path) -> Vec<u8> {
    files(dir, "log")
        .iter()
        .flat_map(|p| fs::read(p).expect("segment"))
        .collect()
}

/// Copies the leader's log to the follower the way a fetcher would: reads from the follower's
/// end in `chunk` byte pieces, every other piece cut inside its last batch. Returns how many
/// pieces held no whole batch.
fn replicate(leader: &PartitionLog, follower: &mut PartitionLog, chunk: usize) -> usize {
    let mut empty = 0;
    let mut cut = false;
    let mut rounds = 0;
    while follower.log_end_offset() < leader.log_end_offset() {
        rounds += 1;
        assert!(rounds < 10_000, "replication makes no progress");
        let mut bytes = leader
            .read(
                follower.log_end_offset(),
                chunk,
                leader.log_end_offset(),
                true,
            )
            .expect("leader read")
            .records;
        cut = !cut;
        if cut {
            bytes.truncate(bytes.len() - 7);
        }
        let end = follower.log_end_offset();
        let info = follower
            .append_as_follower(bytes, NOW)
            .expect("follower append");
        if info.record_count == 0 {
            empty += 1;
            assert_eq!(info.first_offset, end);
            assert_eq!(info.last_offset, Offset(end.0 - 1));
        } else {
            assert_eq!(info.first_offset, end);
            assert_eq!(info.last_offset, Offset(follower.log_end_offset().0 - 1));
        }
    }
    empty
}

fn assert_same_state(leader: &PartitionLog, follower: &PartitionLog) {
    let end = leader.log_end_offset();
    assert_eq!(follower.log_end_offset(), end);
    assert_eq!(epochs(follower), epochs(leader));
    assert_eq!(answers(follower), answers(leader));
    assert_eq!(follower.producers(), leader.producers());
    assert_eq!(follower.last_stable_offset(), leader.last_stable_offset());
    assert_eq!(
        follower.aborted_txns(Offset(0), end),
        leader.aborted_txns(Offset(0), end)
    );
    assert_eq!(all_bytes(follower), all_bytes(leader));
}

/// Offsets 0-9 in five two-record batches with epochs 0, 0, 3, 3, 5.
fn epochs_0_0_3_3_5(log: &mut PartitionLog) {
    for epoch in [0, 0, 3, 3, 5] {
        append(log, plain(2), epoch);
    }
}

const ANSWERS_0_0_3_3_5: [(i32, i64); 9] = [
    (-1, -1), // undefined
    (0, 4),
    (0, 4), // no epoch 1 or 2: epoch 0 ends where 3 starts
    (0, 4),
    (3, 8),
    (3, 8),
    (5, 10), // latest: the log end
    (-1, -1),
    (-1, -1),
];

#[test]
fn leader_epochs_are_checkpointed_and_survive_restarts_and_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default(), true);
    assert_eq!(log.latest_epoch(), None);
    assert_eq!(answers(&log), vec![(-1, -1); 9]);
    epochs_0_0_3_3_5(&mut log);
    assert_eq!(log.latest_epoch(), Some(LeaderEpoch(5)));
    assert_eq!(epochs(&log), vec![(0, 0), (3, 4), (5, 8)]);
    assert_eq!(checkpoint(dir.path()), "0\n3\n0 0\n3 4\n5 8\n");
    assert_eq!(answers(&log), ANSWERS_0_0_3_3_5);

    // Clean restart.
    log.close().unwrap();
    let log = open(dir.path(), LogConfig::default(), true);
    assert_eq!(answers(&log), ANSWERS_0_0_3_3_5);
    // Unclean restart (dropped without close).
    drop(log);
    let log = open(dir.path(), LogConfig::default(), false);
    assert_eq!(answers(&log), ANSWERS_0_0_3_3_5);
    drop(log);

    // A missing or damaged checkpoint is rebuilt from the batch headers.
    fs::remove_file(dir.path().join(CHECKPOINT)).unwrap();
    let log = open(dir.path(), LogConfig::default(), false);
    assert_eq!(answers(&log), ANSWERS_0_0_3_3_5);
    assert_eq!(checkpoint(dir.path()), "0\n3\n0 0\n3 4\n5 8\n");
    drop(log);
    fs::write(dir.path().join(CHECKPOINT), "0\n3\n0 0\nnonsense").unwrap();
    let log = open(dir.path(), LogConfig::default(), true);
    assert_eq!(answers(&log), ANSWERS_0_0_3_3_5);
    assert_eq!(checkpoint(dir.path()), "0\n3\n0 0\n3 4\n5 8\n");
    drop(log);

    // A crash that tore the epoch-5 batch before it was fsynced (the recovery point is below
    // it): the checkpoint (written before the data) is ahead of the recovered log and is cut
    // to it.
    fs::write(dir.path().join("recovery-point"), "8").unwrap();
    let segment = &files(dir.path(), "log")[0];
    let len = fs::metadata(segment).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let mut log = open(dir.path(), LogConfig::default(), false);
    assert_eq!(log.log_end_offset(), Offset(8));
    assert_eq!(epochs(&log), vec![(0, 0), (3, 4)]);
    assert_eq!(checkpoint(dir.path()), "0\n2\n0 0\n3 4\n");
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(3)),
        (LeaderEpoch(3), Offset(8))
    );
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(5)),
        (LeaderEpoch(-1), Offset(-1))
    );
    // The next leader's epoch starts where the log now ends.
    append(&mut log, plain(1), 6);
    assert_eq!(epochs(&log), vec![(0, 0), (3, 4), (6, 8)]);
}

#[test]
fn a_new_epoch_is_the_only_append_that_rewrites_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default(), true);
    append(&mut log, plain(1), 2);
    let path = dir.path().join(CHECKPOINT);
    let written = fs::metadata(&path).unwrap().modified().unwrap();
    // Remove it: if an append of the same epoch rewrote it, it would come back.
    fs::remove_file(&path).unwrap();
    append(&mut log, plain(1), 2);
    assert!(!path.exists(), "same-epoch append rewrote the checkpoint");
    append(&mut log, plain(1), 3);
    assert!(fs::metadata(&path).unwrap().modified().unwrap() >= written);
    assert_eq!(checkpoint(dir.path()), "0\n2\n2 0\n3 2\n");
}

#[test]
fn log_start_moves_clamp_the_first_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments(), true);
    epochs_0_0_3_3_5(&mut log);
    assert_eq!(log.delete_records_before(Offset(5)).unwrap(), Offset(5));
    assert_eq!(epochs(&log), vec![(3, 5), (5, 8)]);
    assert_eq!(checkpoint(dir.path()), "0\n2\n3 5\n5 8\n");
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(3)),
        (LeaderEpoch(3), Offset(8))
    );
    // Below the oldest known epoch: Kafka answers with the oldest start offset.
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(0)),
        (LeaderEpoch(0), Offset(5))
    );
    drop(log);
    let log = open(dir.path(), small_segments(), false);
    assert_eq!(epochs(&log), vec![(3, 5), (5, 8)]);
    drop(log);
    // Rebuilt from the headers, the clamp is applied again.
    fs::remove_file(dir.path().join(CHECKPOINT)).unwrap();
    let log = open(dir.path(), small_segments(), false);
    assert_eq!(epochs(&log), vec![(3, 5), (5, 8)]);
}

/// A leader log with epochs 0, 2 and 4, idempotent and transactional producers, a committed and
/// an aborted transaction, and one still open (so the LSO is below the end).
fn busy_leader(log: &mut PartitionLog) {
    append(log, plain(3), 0);
    append(log, idempotent(7, 0, 2), 0);
    append(log, transactional(1, 0, 2), 0);
    append(log, transactional(2, 0, 1), 2);
    append(log, idempotent(7, 2, 3), 2);
    marker(log, 1, MarkerKind::Commit, 2);
    append(log, transactional(2, 1, 2), 2);
    append(log, plain(5), 2);
    marker(log, 2, MarkerKind::Abort, 4);
    append(log, transactional(3, 0, 2), 4);
    append(log, idempotent(7, 5, 1), 4);
    append(log, plain(2), 4);
}

#[test]
fn a_follower_reproduces_the_leaders_log_and_state() {
    let tiny_segments = LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 128,
        ..LogConfig::default()
    };
    for (config, chunk) in [(LogConfig::default(), 150), (tiny_segments, 700)] {
        let leader_dir = tempfile::tempdir().unwrap();
        let follower_dir = tempfile::tempdir().unwrap();
        let mut leader = open(leader_dir.path(), config.clone(), true);
        busy_leader(&mut leader);
        assert!(leader.last_stable_offset() < leader.log_end_offset());
        assert_eq!(
            leader
                .aborted_txns(Offset(0), leader.log_end_offset())
                .len(),
            1
        );

        let mut follower = open(follower_dir.path(), config.clone(), true);
        let empty = replicate(&leader, &mut follower, chunk);
        if chunk < 200 {
            assert!(empty > 0, "some pieces should hold only a partial batch");
        } else {
            assert!(
                files(leader_dir.path(), "log").len() > 1,
                "the leader should roll"
            );
        }
        assert_same_state(&leader, &follower);
        assert_eq!(
            log_file_bytes(follower_dir.path()),
            log_file_bytes(leader_dir.path())
        );
        assert_eq!(
            checkpoint(follower_dir.path()),
            checkpoint(leader_dir.path())
        );
        assert_eq!(checkpoint(follower_dir.path()), "0\n3\n0 0\n2 7\n4 19\n");
        if config.segment_bytes == LogConfig::default().segment_bytes {
            assert_eq!(files(follower_dir.path(), "log").len(), 1);
        }

        // Restarts keep the follower's derived state equal to the leader's.
        follower.close().unwrap();
        let follower = open(follower_dir.path(), config.clone(), true);
        assert_same_state(&leader, &follower);
        drop(follower);
        let mut follower = open(follower_dir.path(), config.clone(), false);
        assert_same_state(&leader, &follower);

        // Promoted, the follower keeps the producers' idempotence: a retry is a duplicate and
        // a gap is refused, exactly as on the leader.
        let retry = follower
            .validate_and_append(idempotent(7, 5, 1), LeaderEpoch(6), NOW)
            .unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.record_count, 0);
        let gap = follower.validate_and_append(idempotent(7, 9, 1), LeaderEpoch(6), NOW);
        assert!(matches!(
            gap,
            Err(AppendError::OutOfOrderSequence { expected: 6, .. })
        ));
        marker(&mut follower, 3, MarkerKind::Commit, 6);
        assert_eq!(follower.last_stable_offset(), follower.log_end_offset());
    }
}

#[test]
fn a_fetch_holding_no_whole_batch_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default(), true);
    let batch = stored(0, 1, 3);
    for len in [0, 10, 61, batch.len() - 1] {
        let info = log.append_as_follower(batch.slice(..len), NOW).unwrap();
        assert_eq!(info.record_count, 0);
        assert_eq!(
            (info.first_offset, info.last_offset),
            (Offset(0), Offset(-1))
        );
    }
    assert_eq!(log.log_end_offset(), Offset(0));
    assert!(!dir.path().join(CHECKPOINT).exists());
    let info = log.append_as_follower(batch, NOW).unwrap();
    assert_eq!(
        (info.first_offset, info.last_offset, info.record_count),
        (Offset(0), Offset(2), 3)
    );
    assert_eq!(epochs(&log), vec![(1, 0)]);
}

#[test]
fn a_diverged_follower_truncates_by_offset_for_leader_epoch() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut leader = open(leader_dir.path(), LogConfig::default(), true);
    let mut follower = open(follower_dir.path(), LogConfig::default(), true);
    append(&mut leader, plain(4), 0);
    append(&mut leader, idempotent(7, 0, 2), 3);
    append(&mut leader, plain(2), 3);
    replicate(&leader, &mut follower, 1 << 20);
    assert_same_state(&leader, &follower);

    // The follower led epoch 3 for a moment and wrote records nobody else has: plain data, an
    // idempotent batch, an aborted transaction.
    append(&mut follower, plain(2), 3);
    append(&mut follower, idempotent(7, 2, 1), 3);
    append(&mut follower, transactional(9, 0, 1), 3);
    marker(&mut follower, 9, MarkerKind::Abort, 3);
    append(&mut follower, transactional(10, 0, 1), 3);
    assert_eq!(
        follower
            .aborted_txns(Offset(0), follower.log_end_offset())
            .len(),
        1
    );
    // Meanwhile the leader of epoch 5 wrote other records.
    append(&mut leader, plain(3), 5);
    append(&mut leader, idempotent(7, 2, 4), 5);

    let asked = follower.latest_epoch().unwrap();
    let (epoch, end) = leader.end_offset_for_epoch(asked);
    assert_eq!((epoch, end), (LeaderEpoch(3), Offset(8)));
    // The offset mismatch is what tells the follower it must truncate before fetching.
    let rest = leader
        .read(end, 1 << 20, leader.log_end_offset(), true)
        .unwrap()
        .records;
    assert!(matches!(
        follower.append_as_follower(rest, NOW),
        Err(AppendError::OffsetMismatch {
            expected: Offset(14),
            got: Offset(8)
        })
    ));
    follower.truncate_to(end).unwrap();
    assert_eq!(follower.log_end_offset(), Offset(8));
    assert_eq!(epochs(&follower), vec![(0, 0), (3, 4)]);
    assert!(follower.aborted_txns(Offset(0), Offset(100)).is_empty());
    assert_eq!(follower.last_stable_offset(), Offset(8));
    replicate(&leader, &mut follower, 1 << 20);
    assert_same_state(&leader, &follower);
    assert_eq!(
        log_file_bytes(follower_dir.path()),
        log_file_bytes(leader_dir.path())
    );
    assert_eq!(
        checkpoint(follower_dir.path()),
        checkpoint(leader_dir.path())
    );

    // The truncation is durable: a restart does not bring the diverged records' state back.
    follower.close().unwrap();
    let follower = open(follower_dir.path(), LogConfig::default(), true);
    assert_same_state(&leader, &follower);
    drop(follower);
    let follower = open(follower_dir.path(), LogConfig::default(), false);
    assert_same_state(&leader, &follower);
}

#[test]
fn refused_follower_appends_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default(), true);
    log.append_as_follower(stored(0, 2, 5), NOW).unwrap();
    log.append_as_follower(stored(5, 4, 5), NOW).unwrap();
    let before = (
        log_file_bytes(dir.path()),
        checkpoint(dir.path()),
        epochs(&log),
    );

    let two = |a: Bytes, b: Bytes| Bytes::from([a, b].concat());
    let mut corrupt = stored(10, 4, 1).to_vec();
    *corrupt.last_mut().unwrap() ^= 1;
    type Expected = fn(&AppendError) -> bool;
    let cases: Vec<(Bytes, Expected)> = vec![
        (stored(12, 4, 1), |e| {
            matches!(
                e,
                AppendError::OffsetMismatch {
                    expected: Offset(10),
                    got: Offset(12)
                }
            )
        }),
        (stored(8, 4, 1), |e| {
            matches!(
                e,
                AppendError::OffsetMismatch {
                    expected: Offset(10),
                    got: Offset(8)
                }
            )
        }),
        (stored(10, 3, 1), |e| {
            matches!(
                e,
                AppendError::StaleLeaderEpoch {
                    latest: LeaderEpoch(4),
                    got: LeaderEpoch(3)
                }
            )
        }),
        // The second batch's epoch is below the first's: nothing of the input is written.
        (two(stored(10, 6, 1), stored(11, 5, 1)), |e| {
            matches!(
                e,
                AppendError::StaleLeaderEpoch {
                    latest: LeaderEpoch(6),
                    got: LeaderEpoch(5)
                }
            )
        }),
        // Offsets must increase within the input.
        (two(stored(10, 4, 2), stored(11, 4, 1)), |e| {
            matches!(e, AppendError::Invalid(_))
        }),
        (two(stored(10, 4, 1), Bytes::from(corrupt.clone())), |e| {
            matches!(e, AppendError::Corrupt(_))
        }),
    ];
    for (i, (input, expected)) in cases.into_iter().enumerate() {
        let err = log.append_as_follower(input, NOW).unwrap_err();
        assert!(expected(&err), "case {i}: {err:?}");
        assert_eq!(log.log_end_offset(), Offset(10), "case {i}");
        let after = (
            log_file_bytes(dir.path()),
            checkpoint(dir.path()),
            epochs(&log),
        );
        assert_eq!(after, before, "case {i}");
    }
    // A gap after the first batch is allowed (a compacted leader's log has them).
    let info = log
        .append_as_follower(two(stored(10, 4, 1), stored(15, 6, 1)), NOW)
        .unwrap();
    assert_eq!(
        (info.first_offset, info.last_offset, info.record_count),
        (Offset(10), Offset(15), 2)
    );
    assert_eq!(epochs(&log), vec![(2, 0), (4, 5), (6, 15)]);
    assert!(!log.is_poisoned());
}

#[test]
fn truncate_fully_and_start_at_restarts_an_empty_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments(), true);
    for _ in 0..30 {
        append(&mut log, plain(5), 1);
    }
    append(&mut log, idempotent(7, 0, 2), 2);
    append(&mut log, transactional(3, 0, 2), 2);
    assert!(files(dir.path(), "log").len() > 1);
    assert!(!files(dir.path(), "snapshot").is_empty());

    log.truncate_fully_and_start_at(Offset(100)).unwrap();
    let check = |log: &PartitionLog| {
        assert_eq!(log.log_start_offset(), Offset(100));
        assert_eq!(log.log_end_offset(), Offset(100));
        assert_eq!(log.last_stable_offset(), Offset(100));
        assert_eq!(log.latest_epoch(), None);
        assert!(log.producers().is_empty());
        assert!(log.aborted_txns(Offset(0), Offset(1000)).is_empty());
        assert!(all_bytes(log).is_empty());
    };
    check(&log);
    assert_eq!(checkpoint(dir.path()), "0\n0\n");
    assert!(files(dir.path(), "snapshot").is_empty());
    assert_eq!(files(dir.path(), "log").len(), 1);
    drop(log);
    let mut log = open(dir.path(), small_segments(), false);
    check(&log);

    let info = log.append_as_follower(stored(100, 4, 3), NOW).unwrap();
    assert_eq!(info.first_offset, Offset(100));
    assert_eq!(epochs(&log), vec![(4, 100)]);
    log.close().unwrap();
    let log = open(dir.path(), small_segments(), true);
    assert_eq!(log.log_start_offset(), Offset(100));
    assert_eq!(log.log_end_offset(), Offset(103));
    assert_eq!(epochs(&log), vec![(4, 100)]);
    assert!(log.producers().is_empty());

    let mut log = log;
    assert!(log.truncate_fully_and_start_at(Offset(-1)).is_err());
    assert!(!log.is_poisoned());
}

#[test]
fn retention_clamps_the_first_epoch_to_the_new_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: 4096,
        ..small_segments()
    };
    let mut log = open(dir.path(), config.clone(), true);
    for epoch in [1, 2] {
        for _ in 0..20 {
            append(&mut log, plain(5), epoch);
        }
    }
    assert_eq!(epochs(&log), vec![(1, 0), (2, 100)]);
    assert!(log.enforce_retention(NOW).unwrap() > 0);
    let start = log.log_start_offset().0;
    assert!(start > 0);
    let expected = if start < 100 {
        vec![(1, start), (2, 100)]
    } else {
        vec![(2, start)]
    };
    assert_eq!(epochs(&log), expected);
    drop(log);
    let log = open(dir.path(), config, false);
    assert_eq!(epochs(&log), expected);
}

#[test]
fn a_leader_append_with_an_older_epoch_replaces_the_newer_entries() {
    // Kafka's behaviour: the caller's epoch wins (the epoch field is outside the CRC, so a damaged
    // batch can carry a huge epoch that would otherwise block every later leader append).
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default(), true);
    epochs_0_0_3_3_5(&mut log);
    assert_eq!(append(&mut log, plain(1), 4), (10, 10));
    assert_eq!(epochs(&log), vec![(0, 0), (3, 4), (4, 10)]);
    assert_eq!(checkpoint(dir.path()), "0\n3\n0 0\n3 4\n4 10\n");
    // A follower is stricter: its leader never sends an older epoch.
    let err = log.append_as_follower(stored(11, 3, 1), NOW).unwrap_err();
    assert!(
        matches!(err, AppendError::StaleLeaderEpoch { .. }),
        "{err:?}"
    );
}

#[test]
fn a_checkpoint_that_disagrees_with_the_batches_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default(), true);
    epochs_0_0_3_3_5(&mut log);
    log.close().unwrap();
    // Parses, but names epochs the batches do not carry; then one that misses the latest epoch.
    for text in ["0\n2\n0 0\n113 4\n", "0\n2\n0 0\n3 4\n"] {
        fs::write(dir.path().join(CHECKPOINT), text).unwrap();
        let log = open(dir.path(), LogConfig::default(), true);
        assert_eq!(answers(&log), ANSWERS_0_0_3_3_5, "{text:?}");
        assert_eq!(checkpoint(dir.path()), "0\n3\n0 0\n3 4\n5 8\n");
    }
}
