//! How many file descriptors an open log holds: one per segment and nothing else. A broker hosts
//! thousands of partitions under one open-file limit, so each descriptor per partition counts:
//! the recovery-point file once stayed open beside the segment, and 10,000 partitions then hit
//! a limit of 20,000 ("Too many open files", partitions offline, an unclean stop).
//!
//! Its own test binary (one test, one thread): it counts the whole process's descriptors.

use std::path::Path;

use sluice_log::testing::BatchBuilder;
use sluice_log::{LeaderEpoch, LogConfig, PartitionLog, Timestamp};

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd lists this process's descriptors")
        .count()
}

fn open(dir: &Path) -> PartitionLog {
    PartitionLog::open(dir, LogConfig::default(), true).expect("open")
}

#[test]
fn an_open_log_holds_one_descriptor_per_segment() {
    const LOGS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let before = open_descriptors();
    let mut logs: Vec<PartitionLog> = (0..LOGS)
        .map(|i| open(&dir.path().join(format!("t-{i}"))))
        .collect();
    for log in &mut logs {
        // A write, then a group commit marked synced and a sync: the recovery point is written
        // both ways.
        log.validate_and_append(
            BatchBuilder::new().record(None, b"v", 1).build(),
            LeaderEpoch(0),
            Timestamp(1),
        )
        .unwrap();
        let handle = log.sync_handle();
        log.mark_synced(&handle);
        log.sync().unwrap();
    }
    assert_eq!(open_descriptors() - before, LOGS, "one segment each");

    // Closed and opened again (the clean-restart path): still one each.
    for log in logs {
        log.close().unwrap();
    }
    assert_eq!(open_descriptors(), before);
    let logs: Vec<PartitionLog> = (0..LOGS)
        .map(|i| open(&dir.path().join(format!("t-{i}"))))
        .collect();
    assert_eq!(open_descriptors() - before, LOGS, "one segment each");
    drop(logs);
}
