//! The in-memory key-value store: a sorted map, empty on every start and refilled from the
//! changelog.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::{Entries, KvBytes};
use crate::error::StoreError;

/// A `BTreeMap` of bytes.
#[derive(Default)]
pub(crate) struct MemoryStore {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl KvBytes for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.get(key).cloned())
    }
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StoreError> {
        self.map.insert(key, value);
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.map.remove(key);
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
        Ok(self
            .map
            .range::<[u8], _>((from, to))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn approximate_len(&self) -> u64 {
        self.map.len() as u64
    }
    fn commit(&mut self, _: Option<i64>, _: bool) -> Result<(), StoreError> {
        Ok(())
    }
    fn checkpoint(&self) -> Option<i64> {
        // Nothing survives a restart: always restore from the beginning.
        None
    }
    fn wipe(&mut self) -> Result<(), StoreError> {
        self.map.clear();
        Ok(())
    }
}
