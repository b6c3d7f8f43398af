//! Damaged files: a torn tail after an unclean stop is truncated, but damage to data that was
//! fsynced (a closed segment, or below the recovery point) fails the open and changes nothing;
//! damaged checkpoints and indexes are rebuilt, never trusted into hiding records; quarantine
//! moves the damaged range aside for a replica that fetches it again.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use sluice_log::testing::split_batches;
use sluice_log::{DamageKind, LeaderEpoch, LogConfig, Offset, OpenError, PartitionLog, ReadError};

use super::{batch, files, open, read_all, small_segments, NOW};

/// A log of `segments` segments of two-record batches, closed cleanly or dropped (a kill).
pub(super) fn log_with_segments(
    dir: &Path,
    segments: usize,
    clean: bool,
) -> Vec<(i64, i64, bytes::Bytes)> {
    let mut log = open(dir, small_segments(), true);
    let mut i = 0;
    while files(dir, "log").len() < segments {
        log.validate_and_append(batch(2, i), LeaderEpoch(0), NOW)
            .unwrap();
        i += 1;
    }
    let all = read_all(&log);
    if clean {
        log.close().unwrap();
    } else {
        log.sync().unwrap();
        drop(log);
    }
    all
}

/// Every file of a directory (recursively) with its bytes.
pub(super) fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            for (inner, bytes) in snapshot(&path) {
                out.insert(format!("{name}/{inner}"), bytes);
            }
        } else {
            out.insert(name, fs::read(&path).unwrap());
        }
    }
    out
}

/// (position, base offset, size) of each batch of a segment file.
pub(super) fn batches_of(segment: &Path) -> Vec<(u64, i64, usize)> {
    let mut pos = 0u64;
    split_batches(&fs::read(segment).unwrap())
        .into_iter()
        .map(|(base, _, bytes)| {
            let at = pos;
            pos += bytes.len() as u64;
            (at, base, bytes.len())
        })
        .collect()
}

/// Cuts a file to `len` bytes.
pub(super) fn cut(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

pub(super) fn patch(path: &Path, at: u64, bytes: &[u8]) {
    let mut data = fs::read(path).unwrap();
    data[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    fs::write(path, data).unwrap();
}

fn damaged(result: Result<PartitionLog, OpenError>) -> sluice_log::Damage {
    match result {
        Err(OpenError::Damaged { damage, .. }) => *damage,
        Err(e) => panic!("expected damage, got {e}"),
        Ok(log) => panic!(
            "expected damage, the log opened with end {:?}",
            log.log_end_offset()
        ),
    }
}

#[test]
fn damage_in_a_closed_segment_fails_the_open_and_changes_nothing() {
    // Segment 3 of 11, damaged three ways in its last batch (which a clean open checks too),
    // plus a file cut in half.
    for (name, clean) in [
        ("length", true),
        ("length", false),
        ("base offset", true),
        ("base offset", false),
        ("crc", false),
        ("half", true),
        ("half", false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        log_with_segments(dir.path(), 11, clean);
        let segments = files(dir.path(), "log");
        assert_eq!(segments.len(), 11);
        let victim = &segments[2];
        let batches = batches_of(victim);
        let (pos, base, _) = *batches.last().unwrap();
        let mut expected_kind = match name {
            "length" => DamageKind::Truncated,
            "base offset" => DamageKind::Offsets,
            "crc" => DamageKind::Crc,
            _ => DamageKind::Truncated,
        };
        let expected_position = match name {
            "length" => {
                patch(victim, pos + 8, &0x7000_0000i32.to_be_bytes());
                pos
            }
            "base offset" => {
                patch(victim, pos, &(base - 3).to_be_bytes());
                pos
            }
            "crc" => {
                patch(victim, pos + 70, &[0xEE]);
                pos
            }
            _ => {
                let len = fs::metadata(victim).unwrap().len();
                cut(victim, len / 2);
                if batches.iter().any(|b| b.0 == len / 2) {
                    // Cut between two batches: what is gone is missing, not torn.
                    expected_kind = DamageKind::Missing;
                }
                batches
                    .iter()
                    .map(|b| b.0)
                    .filter(|&p| p <= len / 2)
                    .max()
                    .unwrap()
            }
        };
        let before = snapshot(dir.path());
        let damage = damaged(PartitionLog::open(dir.path(), small_segments(), clean));
        assert_eq!(&damage.file, victim, "{name} clean={clean}");
        assert_eq!(damage.position, expected_position, "{name} clean={clean}");
        assert_eq!(damage.later_segments, 8, "{name}");
        assert_eq!(damage.kind, expected_kind, "{name} clean={clean}: {damage}");
        assert!(damage.first_offset.0 > 0, "{damage}");
        // Nothing was truncated, deleted or rewritten: not a segment, index or checkpoint.
        assert_eq!(snapshot(dir.path()), before, "{name} clean={clean}");
        assert_eq!(files(dir.path(), "log").len(), 11);
    }
}

#[test]
fn damage_in_the_middle_of_a_segment_is_found_and_the_range_after_it_named() {
    let dir = tempfile::tempdir().unwrap();
    log_with_segments(dir.path(), 5, false);
    let victim = &files(dir.path(), "log")[1];
    let batches = batches_of(victim);
    let (pos, base, _) = batches[3];
    let next_base = batches[4].1;
    patch(victim, pos + 8, &5i32.to_be_bytes());
    // Recovery point 0: every segment is scanned whole after an unclean stop (and their
    // indexes rebuilt, but not written: the open fails).
    fs::write(dir.path().join("recovery-point"), "0").unwrap();
    let before = snapshot(dir.path());
    let damage = damaged(PartitionLog::open(dir.path(), small_segments(), false));
    assert_eq!(snapshot(dir.path()), before);
    assert_eq!(
        (damage.position, damage.first_offset, damage.resume_offset),
        (pos, Offset(base), Some(Offset(next_base)))
    );
    assert_eq!(damage.kind, DamageKind::Length);
    assert_eq!(damage.later_segments, 3);
    assert_eq!(damage.offsets(), format!("{base}..={}", next_base - 1));
}

#[test]
fn only_an_unflushed_end_is_a_torn_tail() {
    // Synced batches, then batches written after the last fsync.
    let setup = |dir: &Path| {
        let mut log = open(dir, LogConfig::default(), true);
        for i in 0..10 {
            log.validate_and_append(batch(2, i), LeaderEpoch(0), NOW)
                .unwrap();
        }
        log.sync().unwrap();
        for i in 10..20 {
            log.validate_and_append(batch(2, i), LeaderEpoch(0), NOW)
                .unwrap();
        }
        drop(log);
        files(dir, "log").pop().unwrap()
    };
    // A cut in the last unflushed batch: torn, truncated, every other batch kept.
    let dir = tempfile::tempdir().unwrap();
    let segment = setup(dir.path());
    let len = fs::metadata(&segment).unwrap().len();
    cut(&segment, len - 30);
    let log = open(dir.path(), LogConfig::default(), false);
    assert_eq!(log.log_end_offset(), Offset(38));

    // A flipped byte in a synced batch: damage, though it is the active segment.
    let dir = tempfile::tempdir().unwrap();
    let segment = setup(dir.path());
    let (pos, _, _) = batches_of(&segment)[4];
    patch(&segment, pos + 70, &[0xEE]);
    let damage = damaged(PartitionLog::open(dir.path(), LogConfig::default(), false));
    assert_eq!(
        (damage.kind, damage.first_offset),
        (DamageKind::Crc, Offset(8))
    );

    // A flipped byte in an unflushed batch with valid batches after it: not a tail either.
    let dir = tempfile::tempdir().unwrap();
    let segment = setup(dir.path());
    let (pos, _, _) = batches_of(&segment)[14];
    patch(&segment, pos + 70, &[0xEE]);
    let damage = damaged(PartitionLog::open(dir.path(), LogConfig::default(), false));
    assert_eq!(
        (damage.first_offset, damage.resume_offset),
        (Offset(28), Some(Offset(30)))
    );
}

#[test]
fn a_group_commit_records_the_recovery_point_without_a_close() {
    for mark in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), LogConfig::default(), true);
        for i in 0..10 {
            log.validate_and_append(batch(2, i), LeaderEpoch(0), NOW)
                .unwrap();
        }
        // What `Partition::wait_durable` does: sync the handle's files outside the log's lock,
        // then mark them synced.
        let handle = log.sync_handle();
        for file in &handle.files {
            file.sync_data().unwrap();
        }
        if mark {
            log.mark_synced(&handle);
        }
        drop(log); // killed
        let segment = files(dir.path(), "log").pop().unwrap();
        let (pos, _, _) = *batches_of(&segment).last().unwrap();
        patch(&segment, pos + 70, &[0xEE]);
        let result = PartitionLog::open(dir.path(), LogConfig::default(), false);
        if mark {
            // Acknowledged as fsynced: the damaged last batch is not cut off as a torn tail.
            let damage = damaged(result);
            assert_eq!(damage.first_offset, Offset(18));
        } else {
            // Never known to be fsynced: a torn tail, as before.
            assert_eq!(result.unwrap().log_end_offset(), Offset(18));
        }
    }
}

#[test]
fn fsynced_data_missing_from_the_end_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default(), true);
    for i in 0..10 {
        log.validate_and_append(batch(2, i), LeaderEpoch(0), NOW)
            .unwrap();
    }
    log.close().unwrap();
    let segment = files(dir.path(), "log").pop().unwrap();
    let (pos, _, _) = batches_of(&segment)[6];
    cut(&segment, pos);
    for clean in [true, false] {
        let damage = damaged(PartitionLog::open(dir.path(), LogConfig::default(), clean));
        assert_eq!(damage.kind, DamageKind::Missing);
        assert_eq!(damage.offsets(), "12..=19");
    }
}

#[test]
fn damaged_checkpoints_are_rebuilt_and_hide_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let all = log_with_segments(dir.path(), 3, true);
    let end = all.last().unwrap().1 + 1;
    let good_start = fs::read(dir.path().join("log-start-offset")).unwrap();
    for (file, text) in [
        ("log-start-offset", &b"999999999"[..]),
        ("log-start-offset", b"banana"),
        // The right format, one digit changed: the checksum tells.
        ("log-start-offset", b"00000000000000000017 00000000\n"),
        ("recovery-point", b"\xff\xfe"),
        ("cleaner-offset-checkpoint", b"99999999999"),
        ("leader-epoch-checkpoint", b"0\n1\n0 5\ncrc32c 00000000\n"),
        (
            "00000000000000000000.index",
            b"\x00\x00\x00\x01\x00\x00\x00\x07",
        ),
        (
            "00000000000000000000.timeindex",
            b"\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x02",
        ),
    ] {
        fs::write(dir.path().join(file), text).unwrap();
        for clean in [true, false] {
            let log = open(dir.path(), small_segments(), clean);
            assert_eq!(log.log_start_offset(), Offset(0), "{file} clean={clean}");
            assert_eq!(log.log_end_offset(), Offset(end), "{file}");
            assert_eq!(read_all(&log), all, "{file} clean={clean}");
            assert_eq!(
                log.leader_epochs().first().map(|e| e.start_offset),
                Some(Offset(0)),
                "{file}"
            );
            log.close().unwrap();
        }
    }
    assert_eq!(
        fs::read(dir.path().join("log-start-offset")).unwrap(),
        good_start
    );
}

#[test]
fn a_damaged_index_never_hides_records() {
    let dir = tempfile::tempdir().unwrap();
    let all = log_with_segments(dir.path(), 3, true);
    let index = &files(dir.path(), "index")[0];
    let entries = fs::read(index).unwrap();
    assert!(entries.len() >= 16, "two index entries at least");
    // The first entry points one byte into its batch: lookups from it must not skip data.
    let mut bad = entries.clone();
    let position = u32::from_be_bytes(bad[4..8].try_into().unwrap());
    bad[4..8].copy_from_slice(&(position + 1).to_be_bytes());
    fs::write(index, &bad).unwrap();
    let log = open(dir.path(), small_segments(), true);
    assert_eq!(read_all(&log), all);
    for (base, _, _) in &all {
        let got = log
            .read(Offset(*base), 1, log.log_end_offset(), true)
            .unwrap();
        assert_eq!(split_batches(&got.records)[0].0, *base);
    }
}

#[test]
fn reads_over_damage_a_clean_open_did_not_see_are_errors_not_gaps() {
    let dir = tempfile::tempdir().unwrap();
    log_with_segments(dir.path(), 3, true);
    let victim = &files(dir.path(), "log")[0];
    let batches = batches_of(victim);
    // The second batch (before the segment's last index entry, so a clean open does not
    // check it) gets an impossible length.
    let (pos, _, _) = batches[1];
    patch(victim, pos + 8, &5i32.to_be_bytes());
    let log = open(dir.path(), small_segments(), true);
    let wanted = batches[1].1;
    match log.read(Offset(wanted), 1 << 20, log.log_end_offset(), true) {
        Err(ReadError::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
            assert!(e.to_string().contains("damaged"), "{e}");
        }
        other => panic!("read over damage answered {other:?}"),
    }
}

#[test]
fn an_unreadable_segment_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    log_with_segments(dir.path(), 3, true);
    let victim = &files(dir.path(), "log")[1];
    fs::remove_file(victim).unwrap();
    fs::create_dir(victim).unwrap();
    match PartitionLog::open(dir.path(), small_segments(), true) {
        Err(OpenError::Io { .. }) => {}
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn quarantine_keeps_the_damaged_range_aside_and_the_log_continues_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let all = log_with_segments(dir.path(), 11, false);
    let segments = files(dir.path(), "log");
    let victim = &segments[2];
    let original: BTreeMap<String, Vec<u8>> = segments[2..]
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(p).unwrap(),
            )
        })
        .collect();
    let (pos, base, _) = *batches_of(victim).last().unwrap();
    patch(victim, pos + 70, &[0xEE]);
    let damage = damaged(PartitionLog::open(dir.path(), small_segments(), false));
    assert_eq!(damage.first_offset, Offset(base));
    let aside = PartitionLog::quarantine(dir.path(), &damage).unwrap();
    assert!(aside.starts_with(dir.path()));
    // The damaged segment whole, as it was found, and every later segment.
    for (name, bytes) in &original {
        let kept = fs::read(aside.join(name)).unwrap();
        if name == victim.file_name().unwrap().to_str().unwrap() {
            assert_eq!(kept.len(), bytes.len());
            assert_ne!(&kept, bytes, "the damaged copy is kept as found");
        } else {
            assert_eq!(&kept, bytes, "{name}");
        }
    }
    assert!(fs::read_to_string(aside.join("DAMAGE.txt"))
        .unwrap()
        .contains("crc"));
    let mut log = open(dir.path(), small_segments(), false);
    assert_eq!(log.log_end_offset(), Offset(base));
    let below: Vec<_> = all.iter().filter(|b| b.0 < base).cloned().collect();
    assert_eq!(read_all(&log), below);
    let info = log
        .validate_and_append(batch(1, 1), LeaderEpoch(0), NOW)
        .unwrap();
    assert_eq!(info.first_offset, Offset(base));
}

#[test]
fn a_damaged_time_index_does_not_get_a_segment_deleted_early() {
    // Each segment's newest records come first; later ones carry two-hour-old timestamps.
    let old = NOW.0 - 7_200_000;
    // The first segment's newest timestamp becomes 1970 (below the ones a clean open reads
    // past the last index entry), or that of its old records (found by retention's check).
    for damaged_ts in [1, old + 1] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            retention_ms: 3_600_000,
            ..small_segments()
        };
        let mut log = open(dir.path(), config.clone(), true);
        while files(dir.path(), "log").len() < 3 {
            let in_segment = log.log_end_offset().0 % 20;
            let ts = if in_segment < 4 { NOW.0 } else { old };
            log.validate_and_append(batch(2, ts), LeaderEpoch(0), NOW)
                .unwrap();
        }
        let all = read_all(&log);
        log.close().unwrap();
        let timeindex = &files(dir.path(), "timeindex")[0];
        let mut entry = damaged_ts.to_be_bytes().to_vec();
        entry.extend_from_slice(&0u32.to_be_bytes());
        fs::write(timeindex, entry).unwrap();
        let mut log = open(dir.path(), config, true);
        assert_eq!(log.enforce_retention(NOW).unwrap(), 0, "{damaged_ts}");
        assert_eq!(read_all(&log), all);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]
    /// The fuzz target's property (`fuzz/fuzz_targets/segment_recovery.rs`) on every test run:
    /// valid batches, then arbitrary bytes, maybe one byte changed among them.
    #[test]
    fn recovery_never_cuts_valid_batches(
        batches in 0u8..8,
        flags in 0u8..8,
        counts in proptest::collection::vec(proptest::prelude::any::<u8>(), 8),
        tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
    ) {
        let mut input = vec![batches, flags];
        input.extend_from_slice(&counts[..usize::from(batches)]);
        input.extend_from_slice(&tail);
        sluice_log::testing::recovery::check_segment_recovery(&input);
    }
}
