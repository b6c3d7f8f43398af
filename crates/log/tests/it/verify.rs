//! `sluice_log::verify` reports every damaged batch and file without changing anything;
//! `sluice_log::repair` plans a truncation exactly, refuses to leave damage below it, keeps what
//! it removes, and leaves a log that opens cleanly.

use std::fs;

use sluice_log::repair::{execute, plan_truncation, RepairError};
use sluice_log::verify::{partition_dirs, verify_partition};
use sluice_log::{DamageKind, LeaderEpoch, LogConfig, Offset, PartitionLog};

use super::damage::{batches_of, cut, log_with_segments, patch, snapshot};
use super::{batch, files, open, read_all, small_segments, NOW};

#[test]
fn a_healthy_log_verifies_clean_after_clean_and_unclean_stops() {
    for clean in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let all = log_with_segments(dir.path(), 6, clean);
        let before = snapshot(dir.path());
        let report = verify_partition(dir.path()).unwrap();
        assert!(!report.is_damaged(), "{report:?}");
        assert!(report.torn_tail.is_none());
        assert_eq!(report.segments, 6);
        assert_eq!(report.batches as usize, all.len());
        assert_eq!(report.records, 2 * all.len() as u64);
        assert_eq!(report.end_offset.0, all.last().unwrap().1 + 1);
        assert_eq!(snapshot(dir.path()), before, "verify changes nothing");
    }
}

#[test]
fn every_damaged_batch_and_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    log_with_segments(dir.path(), 8, true);
    let segments = files(dir.path(), "log");
    // A CRC in segment 3, a length in segment 6 (both mid-segment), a damaged log start and a
    // damaged index of segment 2.
    let crc = batches_of(&segments[2])[3];
    let after_crc = batches_of(&segments[2])[4].1;
    patch(&segments[2], crc.0 + 70, &[0xEE]);
    let length = batches_of(&segments[5])[5];
    patch(&segments[5], length.0 + 8, &0x7000_0000i32.to_be_bytes());
    fs::write(dir.path().join("log-start-offset"), "nonsense").unwrap();
    let index = &files(dir.path(), "index")[1];
    let mut entries = fs::read(index).unwrap();
    entries[7] ^= 0x01;
    fs::write(index, entries).unwrap();

    let report = verify_partition(dir.path()).unwrap();
    assert!(report.is_damaged());
    let found: Vec<_> = report
        .damage
        .iter()
        .map(|d| (d.file.clone(), d.position, d.first_offset, d.kind))
        .collect();
    assert_eq!(
        found,
        vec![
            (segments[2].clone(), crc.0, Offset(crc.1), DamageKind::Crc),
            (
                segments[5].clone(),
                length.0,
                Offset(length.1),
                DamageKind::Length
            ),
        ]
    );
    // Damage ends where valid batches resume.
    assert_eq!(report.damage[0].resume_offset, Some(Offset(after_crc)));
    let problems: Vec<String> = report
        .files
        .iter()
        .map(|f| f.file.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        problems.contains(&"log-start-offset".to_string()),
        "{problems:?}"
    );
    assert!(
        problems.contains(&index.file_name().unwrap().to_string_lossy().into_owned()),
        "{problems:?}"
    );
    assert_eq!(report.first_damaged_offset(), Some(Offset(crc.1)));
    // A data directory holding the partition is searched for partitions.
    let parent = tempfile::tempdir().unwrap();
    let moved = parent.path().join("orders-0");
    fs::rename(dir.path(), &moved).unwrap();
    fs::create_dir(parent.path().join("__cluster_metadata")).unwrap();
    assert_eq!(partition_dirs(parent.path()).unwrap(), vec![moved.clone()]);
    assert_eq!(partition_dirs(&moved).unwrap(), vec![moved]);
}

#[test]
fn a_torn_tail_is_reported_apart_from_damage() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default(), true);
    for i in 0..10 {
        log.validate_and_append(batch(2, i), LeaderEpoch(0), NOW)
            .unwrap();
    }
    log.sync().unwrap();
    log.validate_and_append(batch(2, 11), LeaderEpoch(0), NOW)
        .unwrap();
    drop(log);
    let segment = files(dir.path(), "log").pop().unwrap();
    let len = fs::metadata(&segment).unwrap().len();
    cut(&segment, len - 10);
    let report = verify_partition(dir.path()).unwrap();
    assert!(!report.is_damaged(), "{report:?}");
    let torn = report.torn_tail.expect("a torn tail");
    assert_eq!(
        (torn.first_offset, torn.kind),
        (Offset(20), DamageKind::Truncated)
    );
}

#[test]
fn repair_plans_exactly_refuses_damage_below_and_keeps_what_it_removes() {
    let dir = tempfile::tempdir().unwrap();
    let all = log_with_segments(dir.path(), 11, true);
    let end = all.last().unwrap().1 + 1;
    let segments = files(dir.path(), "log");
    let (pos, base, _) = batches_of(&segments[2])[5];
    patch(&segments[2], pos + 70, &[0xEE]);
    let before = snapshot(dir.path());

    match plan_truncation(dir.path(), Offset(base + 4)) {
        Err(RepairError::DamageBelow { damage, .. }) => {
            assert_eq!(damage.first_offset, Offset(base))
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let plan = plan_truncation(dir.path(), Offset(base)).unwrap();
    assert_eq!(snapshot(dir.path()), before, "planning changes nothing");
    assert_eq!((plan.new_end, plan.old_end), (Offset(base), Offset(end)));
    assert_eq!(plan.cut_segment, segments[2]);
    assert_eq!(plan.cut_position, pos);
    let removed: Vec<_> = all.iter().filter(|b| b.0 > base).collect();
    assert_eq!(plan.batches as usize, removed.len());
    assert_eq!(plan.records, 2 * removed.len() as u64);
    assert!(plan.damaged_bytes > 0);
    for later in &segments[3..] {
        assert!(plan.moved_files.contains(later), "{later:?}");
    }
    let text = plan.describe();
    assert!(
        text.contains(&format!("{} records", plan.records)),
        "{text}"
    );

    let backup = tempfile::tempdir().unwrap();
    execute(&plan, backup.path()).unwrap();
    // Everything removed is in the backup: the cut segment whole (damaged, as found) and the
    // later segments unchanged.
    for later in &segments[2..] {
        let name = later.file_name().unwrap();
        assert_eq!(
            fs::read(backup.path().join(name)).unwrap(),
            before[&name.to_string_lossy().into_owned()],
            "{name:?}"
        );
    }
    assert!(backup.path().join("REPAIR.txt").exists());
    let report = verify_partition(dir.path()).unwrap();
    assert!(!report.is_damaged(), "{report:?}");
    for clean in [true, false] {
        let log = PartitionLog::open(dir.path(), small_segments(), clean).unwrap();
        assert_eq!(log.log_end_offset(), Offset(base));
        let kept: Vec<_> = all.iter().filter(|b| b.0 < base).cloned().collect();
        assert_eq!(read_all(&log), kept);
        log.close().unwrap();
    }
    match plan_truncation(dir.path(), Offset(base + 100)) {
        Err(RepairError::NothingToRemove { .. }) => {}
        other => panic!("{other:?}"),
    }
}
