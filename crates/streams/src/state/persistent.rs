//! The persistent key-value store on redb: committed state in a redb file with the changelog
//! offset it reflects (its checkpoint) in the same transaction, and writes since the last commit
//! in memory on top.
//!
//! Writes are applied to redb only when the task commits, after the Kafka commit succeeded, so
//! the file never holds state the changelog does not: a crash (or an aborted transaction) leaves
//! the last committed state and its checkpoint, and restore replays the changelog from there.
//! Commits between checkpoints use redb's non-durable commits (no fsync): after a crash redb
//! reverts to the last durable commit, which is still consistent with its own checkpoint.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

use redb::{
    Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};

use super::{Entries, KvBytes};
use crate::error::StoreError;

const DATA: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("data");
const META: TableDefinition<'_, &str, i64> = TableDefinition::new("meta");
const CHECKPOINT: &str = "changelog_next_offset";

/// The committed data, through a read transaction.
type Committed = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// A redb file with pending writes over it.
pub(crate) struct RedbStore {
    name: String,
    db: Database,
    /// Committed data, read through one read transaction renewed at each commit.
    committed: Committed,
    committed_len: u64,
    /// Writes since the last commit; `None` deletes.
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    checkpoint: Option<i64>,
}

fn err<E: std::error::Error + Send + Sync + 'static>(
    name: &str,
) -> impl FnOnce(E) -> StoreError + '_ {
    move |e| StoreError::Persistent {
        store: name.to_string(),
        source: Box::new(e),
    }
}

impl RedbStore {
    pub(crate) fn open(name: &str, path: &Path) -> Result<RedbStore, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                store: name.to_string(),
                source,
            })?;
        }
        let db = Database::create(path).map_err(err(name))?;
        // Create both tables so reads never meet a missing table.
        let txn = db.begin_write().map_err(err(name))?;
        let checkpoint;
        {
            txn.open_table(DATA).map_err(err(name))?;
            let meta = txn.open_table(META).map_err(err(name))?;
            checkpoint = meta.get(CHECKPOINT).map_err(err(name))?.map(|v| v.value());
        }
        txn.commit().map_err(err(name))?;
        let (committed, committed_len) = Self::read_view(name, &db)?;
        Ok(RedbStore {
            name: name.to_string(),
            db,
            committed,
            committed_len,
            pending: BTreeMap::new(),
            checkpoint,
        })
    }

    fn read_view(name: &str, db: &Database) -> Result<(Committed, u64), StoreError> {
        let read = db.begin_read().map_err(err(name))?;
        let table = read.open_table(DATA).map_err(err(name))?;
        let len = table.len().map_err(err(name))?;
        Ok((table, len))
    }
}

impl KvBytes for RedbStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        Ok(self
            .committed
            .get(key)
            .map_err(err(&self.name))?
            .map(|v| v.value().to_vec()))
    }
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StoreError> {
        self.pending.insert(key, Some(value));
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.pending.insert(key.to_vec(), None);
        Ok(())
    }
    fn range(&self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Result<Entries, StoreError> {
        if let (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) =
            (from, to)
        {
            if a > b {
                return Ok(Vec::new());
            }
        }
        // Merge the committed range with pending writes (pending wins).
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for entry in self
            .committed
            .range::<&[u8]>((from, to))
            .map_err(err(&self.name))?
        {
            let (k, v) = entry.map_err(err(&self.name))?;
            merged.insert(k.value().to_vec(), Some(v.value().to_vec()));
        }
        for (k, v) in self.pending.range::<[u8], _>((from, to)) {
            merged.insert(k.clone(), v.clone());
        }
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }
    fn approximate_len(&self) -> u64 {
        let mut len = self.committed_len as i64;
        for (k, v) in &self.pending {
            let present = matches!(self.committed.get(k.as_slice()), Ok(Some(_)));
            len += match (present, v.is_some()) {
                (false, true) => 1,
                (true, false) => -1,
                _ => 0,
            };
        }
        len.max(0) as u64
    }
    fn commit(&mut self, changelog_next: Option<i64>, durable: bool) -> Result<(), StoreError> {
        if self.pending.is_empty() && changelog_next == self.checkpoint && !durable {
            return Ok(());
        }
        let name = self.name.clone();
        let mut txn = self.db.begin_write().map_err(err(&name))?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(err(&name))?;
        {
            let mut data = txn.open_table(DATA).map_err(err(&name))?;
            for (k, v) in std::mem::take(&mut self.pending) {
                match v {
                    Some(v) => {
                        data.insert(k.as_slice(), v.as_slice())
                            .map_err(err(&name))?;
                    }
                    None => {
                        data.remove(k.as_slice()).map_err(err(&name))?;
                    }
                }
            }
            let mut meta = txn.open_table(META).map_err(err(&name))?;
            match changelog_next {
                Some(offset) => {
                    meta.insert(CHECKPOINT, offset).map_err(err(&name))?;
                }
                None => {
                    meta.remove(CHECKPOINT).map_err(err(&name))?;
                }
            }
        }
        txn.commit().map_err(err(&name))?;
        self.checkpoint = changelog_next;
        (self.committed, self.committed_len) = Self::read_view(&name, &self.db)?;
        Ok(())
    }
    fn checkpoint(&self) -> Option<i64> {
        self.checkpoint
    }
    fn wipe(&mut self) -> Result<(), StoreError> {
        self.pending.clear();
        let name = self.name.clone();
        let txn = self.db.begin_write().map_err(err(&name))?;
        txn.delete_table(DATA).map_err(err(&name))?;
        txn.open_table(DATA).map_err(err(&name))?;
        txn.open_table(META)
            .map_err(err(&name))?
            .remove(CHECKPOINT)
            .map_err(err(&name))?;
        txn.commit().map_err(err(&name))?;
        self.checkpoint = None;
        (self.committed, self.committed_len) = Self::read_view(&name, &self.db)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_writes_reach_the_file_only_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let mut s = RedbStore::open("s", &path).unwrap();
            s.put(b"a".to_vec(), b"1".to_vec()).unwrap();
            s.put(b"b".to_vec(), b"2".to_vec()).unwrap();
            s.commit(Some(7), true).unwrap();
            s.put(b"c".to_vec(), b"3".to_vec()).unwrap();
            s.delete(b"a").unwrap();
            assert_eq!(s.get(b"a").unwrap(), None);
            assert_eq!(
                s.range(Bound::Unbounded, Bound::Unbounded).unwrap().len(),
                2
            );
            assert_eq!(s.approximate_len(), 2);
            // Dropped without a commit: as after a crash or an aborted transaction.
        }
        let s = RedbStore::open("s", &path).unwrap();
        assert_eq!(s.checkpoint(), Some(7));
        assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get(b"c").unwrap(), None);
    }

    #[test]
    fn wipe_forgets_data_and_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = RedbStore::open("s", &dir.path().join("s.redb")).unwrap();
        s.put(b"a".to_vec(), b"1".to_vec()).unwrap();
        s.commit(Some(3), false).unwrap();
        s.wipe().unwrap();
        assert_eq!(s.checkpoint(), None);
        assert_eq!(s.approximate_len(), 0);
    }
}
