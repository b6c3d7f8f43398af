//! What closing a log writes: nothing for a log unchanged since a clean open (so a broker's
//! shutdown costs what changed, not what it hosts), everything for a changed log or after a
//! recovering open.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{batch, open, read_all, small_segments, NOW};
use sluice_log::LeaderEpoch;

/// Every file of the log directory with its inode: a file rewritten (written aside, then renamed
/// over the old one) gets a new inode.
fn inodes(dir: &Path) -> BTreeMap<String, u64> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().ino(),
            )
        })
        .collect()
}

/// Names whose inode differs (or that appeared) between two listings.
fn rewritten(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Vec<String> {
    after
        .iter()
        .filter(|(name, ino)| before.get(*name) != Some(ino))
        .map(|(name, _)| name.clone())
        .collect()
}

#[test]
fn a_log_unchanged_since_a_clean_open_closes_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let mut log = open(path, small_segments(), true);
    for i in 0..20 {
        log.validate_and_append(batch(5, i * 10), LeaderEpoch(1), NOW)
            .unwrap();
    }
    let written = read_all(&log);
    log.close().unwrap();

    // Opened clean and left alone: the close writes nothing.
    let log = open(path, small_segments(), true);
    let opened = inodes(path);
    log.close().unwrap();
    assert_eq!(rewritten(&opened, &inodes(path)), Vec::<String>::new());
    let log = open(path, small_segments(), true);
    assert_eq!(read_all(&log), written, "the log reads back the same");

    // Changed since the open: its active segment's indexes and its checkpoints are written.
    let mut log = log;
    log.validate_and_append(batch(1, 500), LeaderEpoch(1), NOW)
        .unwrap();
    let opened = inodes(path);
    let mut written = read_all(&log);
    log.close().unwrap();
    let changed = rewritten(&opened, &inodes(path));
    assert!(changed.iter().any(|f| f.ends_with(".index")), "{changed:?}");
    assert!(changed.iter().any(|f| f == "recovery-point"), "{changed:?}");
    let log = open(path, small_segments(), true);
    assert_eq!(read_all(&log), written);
    log.close().unwrap();

    // A recovering open rebuilt the active segment's indexes in memory: its close writes them,
    // changed or not.
    let log = open(path, small_segments(), false);
    let opened = inodes(path);
    written = read_all(&log);
    log.close().unwrap();
    let changed = rewritten(&opened, &inodes(path));
    assert!(changed.iter().any(|f| f.ends_with(".index")), "{changed:?}");
    let log = open(path, small_segments(), true);
    assert_eq!(read_all(&log), written);
}
