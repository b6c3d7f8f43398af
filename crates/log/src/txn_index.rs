//! The aborted-transaction index: for every aborted transaction of a partition, its producer and
//! offset range, so `read_committed` fetches can tell consumers which records to drop.
//!
//! Held in memory, ordered by the offset of the abort marker, and persisted per segment as
//! `<base>.txnindex` in Kafka's entry format (34 bytes: version i16 = 0, producer id i64, first
//! offset i64, last offset i64, last stable offset i64). A closed segment's file is written when
//! it is rolled and the active segment's at a clean close; entries of the active segment lost in a
//! crash are rebuilt from the markers replayed after the producer-state snapshot.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::batch::{be_i16, be_i64};
use crate::index::write_synced;
use crate::segment::{file_name, remove_if_present};

const ENTRY_LEN: usize = 34;

/// One aborted transaction of one producer in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    /// The transaction's first record in this partition.
    pub first_offset: i64,
    /// The abort marker's offset.
    pub last_offset: i64,
    /// The partition's last stable offset once the marker was written: every transaction
    /// aborted later started at or after it.
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.first_offset.to_be_bytes());
        out.extend_from_slice(&self.last_offset.to_be_bytes());
        out.extend_from_slice(&self.last_stable_offset.to_be_bytes());
    }

    fn decode(b: &[u8]) -> Option<AbortedTxn> {
        if b.len() != ENTRY_LEN || be_i16(b, 0) != 0 {
            return None;
        }
        let entry = AbortedTxn {
            producer_id: be_i64(b, 2),
            first_offset: be_i64(b, 10),
            last_offset: be_i64(b, 18),
            last_stable_offset: be_i64(b, 26),
        };
        (entry.producer_id >= 0 && entry.first_offset <= entry.last_offset).then_some(entry)
    }
}

/// A partition's aborted transactions, keyed by marker offset.
#[derive(Debug, Default, Clone)]
pub(crate) struct TxnIndex {
    entries: BTreeMap<i64, AbortedTxn>,
}

pub(crate) fn txn_index_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(file_name(base, "txnindex"))
}

impl TxnIndex {
    pub(crate) fn insert(&mut self, entry: AbortedTxn) {
        self.entries.insert(entry.last_offset, entry);
    }

    /// Forgets transactions whose marker is at or above `offset` (truncation).
    pub(crate) fn truncate_from(&mut self, offset: i64) {
        self.entries.split_off(&offset);
    }

    /// Forgets transactions whose marker is below `offset` (deleted segments).
    pub(crate) fn remove_below(&mut self, offset: i64) {
        self.entries = self.entries.split_off(&offset);
    }

    /// Aborted transactions with records in `[start, upper)`: marker at or after `start` and first
    /// record below `upper`. Stops at the first entry whose last stable offset reaches `upper`, as
    /// no transaction aborted after it can have started below `upper`.
    pub(crate) fn collect(&self, start: i64, upper: i64) -> Vec<AbortedTxn> {
        let mut found = Vec::new();
        for entry in self.entries.range(start..).map(|(_, e)| e) {
            if entry.first_offset < upper {
                found.push(*entry);
            }
            if entry.last_stable_offset >= upper {
                break;
            }
        }
        found
    }

    /// Entries whose marker lies in `[from, to)`.
    pub(crate) fn range(&self, from: i64, to: i64) -> impl Iterator<Item = &AbortedTxn> {
        self.entries.range(from..to.max(from)).map(|(_, e)| e)
    }

    /// Writes the entries of the segment `[base, next)` to its `.txnindex` (removed when none).
    pub(crate) fn persist(&self, dir: &Path, base: i64, next: i64) -> io::Result<()> {
        let path = txn_index_path(dir, base);
        let mut bytes = Vec::new();
        for entry in self.range(base, next) {
            entry.encode(&mut bytes);
        }
        if bytes.is_empty() {
            remove_if_present(&path)
        } else {
            write_synced(&path, &bytes)
        }
    }

    /// Adds the entries of `<base>.txnindex`, if present. Entries outside `[base, next)` or
    /// damaged are skipped (they are rebuilt by replay when they matter).
    pub(crate) fn load(&mut self, dir: &Path, base: i64, next: i64) {
        let Ok(bytes) = std::fs::read(txn_index_path(dir, base)) else {
            return;
        };
        for chunk in bytes.chunks(ENTRY_LEN) {
            match AbortedTxn::decode(chunk) {
                Some(e) if (base..next).contains(&e.last_offset) => self.insert(e),
                _ => {
                    tracing::warn!(dir = %dir.display(), base, "skipping a damaged .txnindex entry")
                }
            }
        }
    }

    /// What is wrong with `<base>.txnindex` of the segment `[base, next)`, if anything (for
    /// `sluice log verify`; the broker skips damaged entries with a warning).
    pub(crate) fn check_file(dir: &Path, base: i64, next: i64) -> io::Result<Option<String>> {
        let bytes = match std::fs::read(txn_index_path(dir, base)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if bytes.len() % ENTRY_LEN != 0 {
            return Ok(Some(format!(
                "{} bytes is not a whole number of {ENTRY_LEN}-byte entries",
                bytes.len()
            )));
        }
        let bad = bytes
            .chunks(ENTRY_LEN)
            .filter(|chunk| {
                AbortedTxn::decode(chunk).is_none_or(|e| !(base..next).contains(&e.last_offset))
            })
            .count();
        Ok((bad > 0).then(|| format!("{bad} damaged entries (aborted transactions their records would no longer be hidden from read_committed consumers)")))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        }
    }

    #[test]
    fn collect_finds_overlapping_transactions_and_stops_early() {
        let mut index = TxnIndex::default();
        // Producer 2's transaction was open when producer 1's was aborted: stable offset 3.
        index.insert(entry(1, 0, 5, 3));
        index.insert(entry(2, 3, 9, 10));
        index.insert(entry(3, 20, 25, 26));
        assert_eq!(index.collect(0, 4).len(), 2);
        assert_eq!(index.collect(6, 8), vec![entry(2, 3, 9, 10)]);
        assert_eq!(index.collect(6, 30).len(), 2);
        assert!(index.collect(26, 40).is_empty());
        index.truncate_from(9);
        assert_eq!(index.len(), 1);
        index.remove_below(6);
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn files_round_trip_and_damage_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = TxnIndex::default();
        index.insert(entry(1, 0, 5, 6));
        index.insert(entry(2, 7, 12, 13));
        index.persist(dir.path(), 0, 10).unwrap();
        let mut loaded = TxnIndex::default();
        loaded.load(dir.path(), 0, 10);
        assert_eq!(loaded.collect(0, 100), vec![entry(1, 0, 5, 6)]);
        std::fs::write(txn_index_path(dir.path(), 0), [7u8; 40]).unwrap();
        let mut damaged = TxnIndex::default();
        damaged.load(dir.path(), 0, 10);
        assert_eq!(damaged.len(), 0);
        TxnIndex::default().persist(dir.path(), 0, 10).unwrap();
        assert!(!txn_index_path(dir.path(), 0).exists());
    }
}
