//! Transactions in the log: the last stable offset, markers, the aborted-transaction index, the
//! KIP-890 verification hook, fencing by marker epochs, restarts, and the cleaner dropping aborted
//! records.

use std::cell::Cell;
use std::path::Path;

use bytes::Bytes;
use sluice_log::testing::BatchBuilder;
use sluice_log::{
    AbortedTxn, AppendError, LeaderEpoch, LogConfig, MarkerKind, Offset, PartitionLog,
    ProducerEpoch, ProducerId, Timestamp,
};

const NOW: Timestamp = Timestamp(1_700_000_000_000);
const TRANSACTIONAL: i16 = 0x10;

fn txn_batch(pid: i64, epoch: i16, seq: i32, keys: &[&str], value: &str) -> Bytes {
    let mut b = BatchBuilder::new()
        .producer(pid, epoch, seq)
        .attributes(TRANSACTIONAL);
    for key in keys {
        b = b.record(Some(key.as_bytes()), value.as_bytes(), NOW.0);
    }
    b.build()
}

fn plain(keys: &[&str], value: &str) -> Bytes {
    let mut b = BatchBuilder::new();
    for key in keys {
        b = b.record(Some(key.as_bytes()), value.as_bytes(), NOW.0);
    }
    b.build()
}

fn marker(log: &mut PartitionLog, pid: i64, epoch: i16, kind: MarkerKind) -> i64 {
    log.append_marker(
        ProducerId(pid),
        ProducerEpoch(epoch),
        kind,
        0,
        LeaderEpoch(0),
        NOW,
    )
    .expect("marker")
    .first_offset
    .0
}

fn append(log: &mut PartitionLog, batch: Bytes) -> i64 {
    log.validate_and_append(batch, LeaderEpoch(0), NOW)
        .expect("append")
        .first_offset
        .0
}

/// `batch` validated for `log`, as a broker does before taking the log's lock.
fn validated(log: &PartitionLog, batch: Bytes) -> sluice_log::ValidatedBatches {
    sluice_log::validate(batch, &log.config().into(), NOW).expect("valid")
}

fn open(dir: &Path, config: LogConfig, clean: bool) -> PartitionLog {
    PartitionLog::open(dir, config, clean).expect("open")
}

#[test]
fn last_stable_offset_follows_open_transactions_and_aborts_are_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default(), true);
    assert_eq!(
        append(&mut log, txn_batch(1, 0, 0, &["a", "b", "c"], "x")),
        0
    );
    assert_eq!(log.last_stable_offset(), Offset(0));
    assert_eq!(append(&mut log, plain(&["p"], "y")), 3);
    assert_eq!(append(&mut log, txn_batch(3, 0, 0, &["d"], "z")), 4);
    assert_eq!(log.last_stable_offset(), Offset(0));
    assert_eq!(marker(&mut log, 1, 0, MarkerKind::Abort), 5);
    assert_eq!(
        log.last_stable_offset(),
        Offset(4),
        "producer 3 is still open"
    );
    let aborted = AbortedTxn {
        producer_id: 1,
        first_offset: 0,
        last_offset: 5,
        last_stable_offset: 4,
    };
    assert_eq!(log.aborted_txns(Offset(0), Offset(6)), vec![aborted]);
    assert_eq!(log.aborted_txns(Offset(2), Offset(3)), vec![aborted]);
    assert_eq!(marker(&mut log, 3, 0, MarkerKind::Commit), 6);
    assert_eq!(log.last_stable_offset(), Offset(7));
    assert_eq!(log.aborted_txns(Offset(6), Offset(7)), vec![]);
    // A second transaction of producer 1 continues its sequence in the same epoch.
    assert_eq!(append(&mut log, txn_batch(1, 0, 3, &["e"], "w")), 7);
    assert_eq!(log.last_stable_offset(), Offset(7));
    let described = log.producers();
    assert_eq!(described.len(), 2);
    assert_eq!(described[0].producer_id, 1);
    assert_eq!(described[0].last_sequence, 3);
    assert_eq!(described[0].current_txn_start_offset, 7);
    assert_eq!(described[1].current_txn_start_offset, -1);
}

#[test]
fn verification_guards_the_first_write_of_each_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default(), true);
    let calls = Cell::new(0);
    let mut refuse = |_: ProducerId, _: ProducerEpoch| {
        calls.set(calls.get() + 1);
        Err("not in the transaction".to_owned())
    };
    let refused = log.append_verified(
        validated(&log, txn_batch(1, 0, 0, &["a"], "x")),
        LeaderEpoch(0),
        NOW,
        &mut refuse,
    );
    assert!(matches!(refused, Err(AppendError::TxnNotVerified(_))));
    assert_eq!(log.log_end_offset(), Offset(0), "nothing is written");
    let mut accept = |_: ProducerId, _: ProducerEpoch| {
        calls.set(calls.get() + 1);
        Ok(())
    };
    for seq in 0..3 {
        let batch = validated(&log, txn_batch(1, 0, seq, &["a"], "x"));
        log.append_verified(batch, LeaderEpoch(0), NOW, &mut accept)
            .unwrap();
    }
    assert_eq!(
        calls.get(),
        2,
        "only the first write of the transaction is verified"
    );
    marker(&mut log, 1, 0, MarkerKind::Commit);
    // After the marker, a late write of the finished transaction must be verified again.
    let late = log.append_verified(
        validated(&log, txn_batch(1, 0, 3, &["a"], "x")),
        LeaderEpoch(0),
        NOW,
        &mut refuse,
    );
    assert!(matches!(late, Err(AppendError::TxnNotVerified(_))));
    assert_eq!(calls.get(), 3);
}

#[test]
fn a_marker_with_a_bumped_epoch_fences_the_older_producer() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default(), true);
    append(&mut log, txn_batch(1, 0, 0, &["a"], "x"));
    marker(&mut log, 1, 1, MarkerKind::Abort);
    assert!(matches!(
        log.validate_and_append(txn_batch(1, 0, 1, &["a"], "late"), LeaderEpoch(0), NOW),
        Err(AppendError::InvalidProducerEpoch { .. })
    ));
    assert!(matches!(
        log.append_marker(
            ProducerId(1),
            ProducerEpoch(0),
            MarkerKind::Commit,
            0,
            LeaderEpoch(0),
            NOW
        ),
        Err(AppendError::InvalidProducerEpoch { .. })
    ));
    // The new instance starts its sequence at 0 with the new epoch.
    append(&mut log, txn_batch(1, 1, 0, &["a"], "y"));
    assert_eq!(log.aborted_txns(Offset(0), Offset(10)).len(), 1);
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 400,
        index_interval_bytes: 64,
        ..LogConfig::default()
    }
}

/// Writes aborted and committed transactions over several segments and leaves one open.
fn write_history(log: &mut PartitionLog) -> (Vec<AbortedTxn>, Offset) {
    for round in 0..6i32 {
        append(log, txn_batch(1, 0, round * 2, &["a", "b"], "one"));
        append(log, plain(&["p"], "plain"));
        let kind = if round % 2 == 0 {
            MarkerKind::Abort
        } else {
            MarkerKind::Commit
        };
        marker(log, 1, 0, kind);
    }
    let open_at = append(log, txn_batch(2, 0, 0, &["c"], "open"));
    append(log, plain(&["q"], "after"));
    (
        log.aborted_txns(Offset(0), log.log_end_offset()),
        Offset(open_at),
    )
}

#[test]
fn transactions_survive_a_clean_restart_and_a_crash() {
    for clean in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), small_segments(), true);
        let (aborted, open_at) = write_history(&mut log);
        assert_eq!(aborted.len(), 3);
        assert_eq!(log.last_stable_offset(), open_at);
        if clean {
            log.close().unwrap();
        } else {
            drop(log);
        }
        let mut log = open(dir.path(), small_segments(), clean);
        assert_eq!(
            log.aborted_txns(Offset(0), log.log_end_offset()),
            aborted,
            "clean={clean}"
        );
        assert_eq!(log.last_stable_offset(), open_at, "clean={clean}");
        marker(&mut log, 2, 0, MarkerKind::Abort);
        assert_eq!(log.last_stable_offset(), log.log_end_offset());
        assert_eq!(log.aborted_txns(Offset(0), log.log_end_offset()).len(), 4);
    }
}

#[test]
fn truncation_forgets_aborts_above_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments(), true);
    let (aborted, _) = write_history(&mut log);
    let cut = Offset(aborted[2].last_offset);
    log.truncate_to(cut).unwrap();
    assert_eq!(log.aborted_txns(Offset(0), Offset(i64::MAX)), aborted[..2]);
    assert!(log.last_stable_offset() <= cut);
}

/// Small segments, compacted, cleaned whatever the dirty ratio.
fn compacted() -> LogConfig {
    LogConfig {
        compact: true,
        delete: false,
        min_cleanable_dirty_ratio: 0.0,
        ..small_segments()
    }
}

/// (key, value) of every data record in the log (markers' keys start with their zero version
/// byte; the tests' keys are text).
fn key_values(log: &PartitionLog) -> Vec<(String, String)> {
    let text = |b: Option<Bytes>| String::from_utf8(b.unwrap_or_default().to_vec()).unwrap();
    crate::compaction::records(log)
        .into_iter()
        .filter(|(_, key, _)| key.as_ref().is_some_and(|k| k.first() != Some(&0)))
        .map(|(_, key, value)| (text(key), text(value)))
        .collect()
}

#[test]
fn the_cleaner_drops_aborted_records_and_never_lets_them_shadow_committed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compacted(), true);
    append(&mut log, plain(&["k"], "committed"));
    append(&mut log, txn_batch(1, 0, 0, &["k", "m"], "aborted"));
    marker(&mut log, 1, 0, MarkerKind::Abort);
    // Fill segments so the history above is closed and below the last stable offset.
    for i in 0..20 {
        append(&mut log, plain(&[&format!("fill{i}")], "f"));
    }
    let plan = log.clean_plan(NOW).expect("something to clean");
    let output = plan.run().unwrap();
    assert!(log.finish_clean(output).unwrap());
    let kept = key_values(&log);
    assert!(kept.contains(&("k".into(), "committed".into())), "{kept:?}");
    assert!(!kept.iter().any(|(_, v)| v == "aborted"), "{kept:?}");
}

#[test]
fn the_cleaner_stops_at_the_last_stable_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compacted(), true);
    append(&mut log, txn_batch(1, 0, 0, &["k"], "open"));
    for i in 0..20 {
        append(&mut log, plain(&["k"], &format!("v{i}")));
    }
    assert!(
        log.clean_plan(NOW).is_none(),
        "an open transaction holds the cleaner back"
    );
    marker(&mut log, 1, 0, MarkerKind::Commit);
    for i in 0..10 {
        append(&mut log, plain(&[&format!("fill{i}")], "f"));
    }
    assert!(log.clean_plan(NOW).is_some());
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Step {
    /// Records of producer 1..=3 in its transaction, or (0) plain records.
    Data { producer: i64, records: usize },
    /// A commit or abort marker for producer 1..=3 (with or without an open transaction).
    Marker { producer: i64, commit: bool },
    /// Close and reopen (clean), or drop without closing and reopen (a crash).
    Reopen { clean: bool },
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (0i64..4, 1usize..4).prop_map(|(producer, records)| Step::Data { producer, records }),
        3 => (1i64..4, any::<bool>()).prop_map(|(producer, commit)| Step::Marker { producer, commit }),
        1 => any::<bool>().prop_map(|clean| Step::Reopen { clean }),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 40, ..Default::default() })]

    /// Whatever the interleaving of transactions, markers, rolls, clean restarts and crashes, the
    /// last stable offset and the aborted-transaction index are what a simple model says.
    #[test]
    fn transaction_state_matches_a_model_across_restarts(steps in proptest::collection::vec(step(), 1..60)) {
        use std::collections::BTreeMap;
        let dir = tempfile::tempdir().unwrap();
        let mut log = Some(open(dir.path(), small_segments(), true));
        let mut end = 0i64;
        let mut open_txns: BTreeMap<i64, i64> = BTreeMap::new(); // producer -> first offset
        let mut sequences: BTreeMap<i64, i32> = BTreeMap::new();
        let mut aborted: Vec<AbortedTxn> = Vec::new();
        for step in steps {
            let current = log.as_mut().expect("open");
            match step {
                Step::Data { producer: 0, records } => {
                    let keys: Vec<String> = (0..records).map(|i| format!("p{i}")).collect();
                    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                    append(current, plain(&keys, "v"));
                    end += records as i64;
                }
                Step::Data { producer, records } => {
                    let seq = sequences.entry(producer).or_insert(0);
                    let keys: Vec<String> = (0..records).map(|i| format!("t{i}")).collect();
                    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                    let at = append(current, txn_batch(producer, 0, *seq, &keys, "v"));
                    proptest::prop_assert_eq!(at, end);
                    *seq += records as i32;
                    open_txns.entry(producer).or_insert(end);
                    end += records as i64;
                }
                Step::Marker { producer, commit } => {
                    let kind = if commit { MarkerKind::Commit } else { MarkerKind::Abort };
                    let at = marker(current, producer, 0, kind);
                    proptest::prop_assert_eq!(at, end);
                    end += 1;
                    if let Some(first) = open_txns.remove(&producer) {
                        if !commit {
                            aborted.push(AbortedTxn {
                                producer_id: producer,
                                first_offset: first,
                                last_offset: at,
                                last_stable_offset: open_txns.values().min().copied().unwrap_or(end),
                            });
                        }
                    }
                }
                Step::Reopen { clean } => {
                    let taken = log.take().expect("open");
                    if clean {
                        taken.close().unwrap();
                    } else {
                        drop(taken);
                    }
                    log = Some(open(dir.path(), small_segments(), clean));
                }
            }
            let current = log.as_ref().expect("open");
            proptest::prop_assert_eq!(current.log_end_offset(), Offset(end));
            let stable = open_txns.values().min().copied().unwrap_or(end);
            proptest::prop_assert_eq!(current.last_stable_offset(), Offset(stable));
            proptest::prop_assert_eq!(current.aborted_txns(Offset(0), Offset(end)), aborted.clone());
        }
    }
}
