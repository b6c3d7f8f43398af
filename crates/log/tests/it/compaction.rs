//! Log compaction: the cleaner keeps the latest record per key (offsets and order unchanged),
//! drops expired tombstones, and a crash at any step of its swap leaves a readable log.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bytes::Bytes;
use proptest::prelude::*;
use sluice_log::testing::BatchBuilder;
use sluice_log::{LeaderEpoch, LogConfig, Offset, PartitionLog, Timestamp};
use sluice_protocol::records::Batches;

const NOW: i64 = 1_700_000_000_000;
const OLD: i64 = NOW - 10 * 24 * 3600 * 1000;

fn config(delete_retention_ms: i64) -> LogConfig {
    LogConfig {
        segment_bytes: 700,
        index_interval_bytes: 128,
        compact: true,
        delete: false,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms,
        ..LogConfig::default()
    }
}

/// Every stored batch of the log, from its start to its end.
fn stored(log: &PartitionLog) -> Bytes {
    log.read(
        log.log_start_offset(),
        usize::MAX / 2,
        log.log_end_offset(),
        true,
    )
    .unwrap()
    .records
}

/// (offset, key, value) of every record in the log, in order.
pub(crate) fn records(log: &PartitionLog) -> Vec<(i64, Option<Bytes>, Option<Bytes>)> {
    let mut out = Vec::new();
    for batch in Batches::new(&stored(log)) {
        batch
            .unwrap()
            .for_each_record(1 << 24, |r| {
                out.push((
                    r.offset,
                    r.key.map(Bytes::copy_from_slice),
                    r.value.map(Bytes::copy_from_slice),
                ));
                Ok::<_, sluice_protocol::records::RecordsError>(())
            })
            .unwrap();
    }
    out
}

fn latest_values(records: &[(i64, Option<Bytes>, Option<Bytes>)]) -> BTreeMap<Bytes, Bytes> {
    let mut map = BTreeMap::new();
    for (_, key, value) in records {
        if let Some(key) = key {
            match value {
                Some(v) => map.insert(key.clone(), v.clone()),
                None => map.remove(key),
            };
        }
    }
    map
}

/// Writes `writes` as batches of `batch` records; returns everything written.
fn write(
    log: &mut PartitionLog,
    writes: &[(u8, Option<u8>)],
    batch: usize,
) -> Vec<(i64, Option<Bytes>, Option<Bytes>)> {
    let mut all = Vec::new();
    for chunk in writes.chunks(batch.max(1)) {
        let mut b = BatchBuilder::new();
        for (key, value) in chunk {
            let k = [b'k', *key];
            b = match value {
                Some(v) => b.record(Some(&k), &[*v; 40], OLD),
                None => b.tombstone(&k, OLD),
            };
        }
        let info = log
            .validate_and_append(b.build(), LeaderEpoch(0), Timestamp(NOW))
            .unwrap();
        for (i, (key, value)) in chunk.iter().enumerate() {
            all.push((
                info.first_offset.0 + i as i64,
                Some(Bytes::copy_from_slice(&[b'k', *key])),
                value.map(|v| Bytes::from(vec![v; 40])),
            ));
        }
    }
    all
}

fn active_base(dir: &Path) -> i64 {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| p.file_stem().unwrap().to_str().unwrap().parse().unwrap())
        .collect();
    bases.sort();
    *bases.last().unwrap()
}

/// What a clean of [first_dirty, end) must keep of `current`: everything at or after `end`;
/// below it, for keyed records, only the latest offset of the key within the dirty range (or any
/// offset when the dirty range lacks the key); tombstones in segments cleaned before go when
/// `expire_cleaned_tombstones`. Keyless records stay.
fn model_clean(
    current: &[(i64, Option<Bytes>, Option<Bytes>)],
    first_dirty: i64,
    end: i64,
    expire_cleaned_tombstones: bool,
) -> Vec<(i64, Option<Bytes>, Option<Bytes>)> {
    let mut latest: HashMap<Bytes, i64> = HashMap::new();
    for (offset, key, _) in current.iter().filter(|r| r.0 >= first_dirty && r.0 < end) {
        if let Some(k) = key {
            latest.insert(k.clone(), *offset);
        }
    }
    current
        .iter()
        .filter(|(offset, key, value)| {
            *offset >= end
                || key.as_ref().is_none_or(|k| {
                    let newest = latest.get(k).is_none_or(|&l| *offset >= l);
                    let expired =
                        value.is_none() && expire_cleaned_tombstones && *offset < first_dirty;
                    newest && !expired
                })
        })
        .cloned()
        .collect()
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn clean(log: &mut PartitionLog, now: i64) -> bool {
    match log.clean_plan(Timestamp(now)) {
        Some(plan) => {
            let output = plan.run().unwrap();
            log.finish_clean(output).unwrap()
        }
        None => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    #[test]
    fn compaction_keeps_the_latest_value_per_key(
        first in proptest::collection::vec((0u8..8, proptest::option::weighted(0.8, any::<u8>())), 1..120),
        second in proptest::collection::vec((0u8..8, proptest::option::weighted(0.8, any::<u8>())), 1..120),
        batch in 1usize..5,
        expire in any::<bool>(),
        reopen_clean in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let retention = if expire { 0 } else { i64::MAX / 4 };
        let mut log = PartitionLog::open(dir.path(), config(retention), true).unwrap();
        let mut written = write(&mut log, &first, batch);
        let end = active_base(dir.path());
        clean(&mut log, wall_ms());
        // A first clean keeps tombstones: nobody could have read past them yet.
        let after = records(&log);
        prop_assert_eq!(&after, &model_clean(&written, 0, end, false));
        prop_assert_eq!(latest_values(&after), latest_values(&written));
        prop_assert!(after.windows(2).all(|w| w[0].0 < w[1].0));
        prop_assert_eq!(log.log_end_offset().0, written.len() as i64);

        // More writes, then a later clean: tombstones in cleaned segments go once
        // delete.retention.ms has passed since they were cleaned.
        written.extend(write(&mut log, &second, batch));
        let current = records(&log);
        let end2 = active_base(dir.path());
        let cleaned = clean(&mut log, wall_ms() + 10_000);
        let after = records(&log);
        if cleaned {
            prop_assert_eq!(&after, &model_clean(&current, end, end2, expire));
        } else {
            prop_assert_eq!(&after, &current);
        }
        prop_assert_eq!(latest_values(&after), latest_values(&written));
        if reopen_clean { log.close().unwrap(); } else { drop(log); }
        let mut log = PartitionLog::open(dir.path(), config(retention), reopen_clean).unwrap();
        prop_assert_eq!(&records(&log), &after);
        // The log keeps taking appends after its segments were replaced.
        let more = write(&mut log, &[(1, Some(7))], 1);
        prop_assert_eq!(more[0].0, written.len() as i64);
    }
}

#[test]
fn a_crash_at_any_step_of_the_swap_leaves_a_readable_log() {
    let writes: Vec<(u8, Option<u8>)> = (0..120u32)
        .map(|i| {
            (
                (i % 5) as u8,
                if i % 17 == 0 { None } else { Some(i as u8) },
            )
        })
        .collect();
    for steps in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), config(i64::MAX / 4), true).unwrap();
        let written = write(&mut log, &writes, 3);
        let plan = log
            .clean_plan(Timestamp(wall_ms()))
            .expect("something to clean");
        let output = plan.run().unwrap();
        let finished = log.finish_clean_steps(output, steps).unwrap();
        drop(log); // crash: no close
        let mut log = PartitionLog::open(dir.path(), config(i64::MAX / 4), false).unwrap();
        let after = records(&log);
        assert_eq!(
            latest_values(&after),
            latest_values(&written),
            "steps {steps}"
        );
        assert!(after.windows(2).all(|w| w[0].0 < w[1].0), "steps {steps}");
        assert_eq!(log.log_end_offset(), Offset(written.len() as i64));
        // No leftovers of the clean remain, and a new clean completes the work.
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_str().unwrap();
                name.ends_with(".swap") || name.ends_with(".cleaned")
            })
            .count();
        assert_eq!(leftovers, 0, "steps {steps}");
        let end = active_base(dir.path());
        clean(&mut log, wall_ms());
        assert_eq!(
            records(&log),
            model_clean(&written, 0, end, false),
            "steps {steps}"
        );
        if finished {
            break;
        }
    }
}

#[test]
fn retention_leaves_compacted_topics_alone_and_stale_cleans_are_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(
        dir.path(),
        LogConfig {
            retention_ms: 1,
            retention_bytes: 1,
            ..config(0)
        },
        true,
    )
    .unwrap();
    let writes: Vec<(u8, Option<u8>)> = (0..60u8).map(|i| (i % 3, Some(i))).collect();
    let written = write(&mut log, &writes, 2);
    assert_eq!(
        log.enforce_retention(Timestamp(NOW)).unwrap(),
        0,
        "compact only: no deletion"
    );
    // compact,delete: retention runs too, and a clean planned before it is discarded.
    let plan = log.clean_plan(Timestamp(NOW)).unwrap();
    log.set_config(LogConfig {
        delete: true,
        retention_ms: 1,
        retention_bytes: 1,
        ..config(0)
    });
    assert!(log.enforce_retention(Timestamp(NOW)).unwrap() > 0);
    let output = plan.run().unwrap();
    assert!(!log.finish_clean(output).unwrap());
    let after = records(&log);
    assert_eq!(after.last().map(|r| r.0), written.last().map(|r| r.0));
    let cleaned = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "cleaned")
        })
        .count();
    assert_eq!(cleaned, 0);
}

#[test]
fn max_compaction_lag_forces_a_clean_below_the_dirty_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let never_by_ratio = LogConfig {
        min_cleanable_dirty_ratio: 1.0,
        ..config(i64::MAX / 4)
    };
    let mut log = PartitionLog::open(dir.path(), never_by_ratio.clone(), true).unwrap();
    let writes: Vec<(u8, Option<u8>)> = (0..60u8).map(|i| (i % 3, Some(i))).collect();
    write(&mut log, &writes, 2);
    // Only part of the closed log can be dirty after a first clean; write more and check.
    clean(&mut log, wall_ms());
    write(&mut log, &writes[..20], 2);
    assert!(
        log.clean_plan(Timestamp(wall_ms())).is_none(),
        "ratio not reached"
    );
    log.set_config(LogConfig {
        max_compaction_lag_ms: 1000,
        ..never_by_ratio
    });
    // The records carry old timestamps: overdue.
    assert!(log.clean_plan(Timestamp(wall_ms())).is_some());
}

/// A batch whose header claims 2^31-1 records while it holds one (finding 1 of issue 13), stored
/// the way only a follower append or an older Sluice could store it (followers check the CRC, not
/// the records): the cleaner must neither decode it into an allocation of the claimed size nor
/// drop it, and must still compact everything around it.
#[test]
fn a_stored_batch_whose_count_lies_is_kept_whole_by_the_cleaner() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config(0), true).unwrap();
    let before = write(&mut log, &[(1, Some(1)), (2, Some(2))], 2);
    let end = log.log_end_offset().0;
    let mut bomb = BatchBuilder::new()
        .base_offset(end)
        .record(Some(b"kx"), b"claims too much", OLD)
        .build()
        .to_vec();
    sluice_protocol::records::testing::claim_count(&mut bomb, i32::MAX);
    log.append_as_follower(Bytes::from(bomb.clone()), Timestamp(NOW))
        .expect("a follower checks the CRC only");
    // Newer values for both keys, then enough to close the segments holding all of it.
    write(&mut log, &[(1, Some(3)), (2, Some(4))], 2);
    write(&mut log, &[(9, Some(9)); 40], 4);
    let plan = log.clean_plan(Timestamp(NOW)).expect("dirty");
    let output = plan
        .run()
        .expect("the clean goes on around the damaged batch");
    assert_eq!(output.stats.damaged_batches, 1);
    assert!(log.finish_clean(output).unwrap());
    let batches = sluice_log::testing::split_batches(&stored(&log));
    assert!(
        batches.iter().any(|(_, _, b)| b[..] == bomb[..]),
        "the damaged batch is kept byte for byte"
    );
    assert!(
        batches.iter().all(|(base, _, _)| *base != before[0].0),
        "the shadowed first values were compacted away"
    );
}
