//! State stores: byte-level key-value stores (in memory or persistent on redb), each optionally
//! backed by a compacted changelog topic. Window and session stores are layouts over the same
//! key-value stores (see [`window`]), so one changelog and restore path serves every kind.

pub(crate) mod memory;
pub(crate) mod persistent;
pub(crate) mod window;

use std::collections::HashMap;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::StoreError;

/// Changelog writes: keys and new values (`None`: deleted).
pub(crate) type ChangelogWrites = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// The entries of a range scan, keys ascending.
pub(crate) type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A sorted byte map: the one interface every physical store implements.
pub(crate) trait KvBytes: Send {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StoreError>;
    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError>;
    /// Entries with keys in the range, ascending.
    fn range(&self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Result<Entries, StoreError>;
    /// How many entries (exact for memory, exact for redb after merging pending writes).
    fn approximate_len(&self) -> u64;
    /// Makes the writes so far part of the store's committed state, recording that it reflects
    /// its changelog up to (not including) `changelog_next`. `durable` asks for an fsync.
    fn commit(&mut self, changelog_next: Option<i64>, durable: bool) -> Result<(), StoreError>;
    /// The changelog offset to restore from: the store holds everything before it. `None` when
    /// the store has no committed state (restore from the beginning).
    fn checkpoint(&self) -> Option<i64>;
    /// Removes every entry and the checkpoint.
    fn wipe(&mut self) -> Result<(), StoreError>;
}

/// What a store holds, which decides its key layout and changelog topic configs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// Plain keys and values.
    KeyValue,
    /// Keys with a window start (and a sequence number when duplicates are kept), kept for
    /// `retention_ms` of stream time.
    Window {
        /// How long windows are kept, in ms of stream time.
        retention_ms: i64,
        /// Whether several values may share a key and timestamp (stream-stream joins).
        retain_duplicates: bool,
    },
    /// Session windows: keys with a start and an end.
    Session {
        /// How long sessions are kept, in ms of stream time after their end.
        retention_ms: i64,
    },
}

/// Where a store keeps its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreBackend {
    /// A sorted map in memory, rebuilt from the changelog on every start.
    InMemory,
    /// A redb file in the state directory, restored from its checkpoint onwards.
    Persistent,
}

/// How a store is declared in a topology.
#[derive(Clone, Debug)]
pub(crate) struct StoreSpec {
    pub(crate) name: Arc<str>,
    pub(crate) kind: StoreKind,
    pub(crate) backend: StoreBackend,
    pub(crate) logged: bool,
}

impl StoreSpec {
    /// The changelog topic's configs: compacted, and for windowed stores also deleted by time
    /// (retention plus a day, as Kafka Streams does), since expired windows leave no tombstones.
    pub(crate) fn changelog_configs(&self) -> Vec<(String, String)> {
        let day = 86_400_000i64;
        match self.kind {
            StoreKind::KeyValue => vec![("cleanup.policy".into(), "compact".into())],
            StoreKind::Window { retention_ms, .. } | StoreKind::Session { retention_ms } => vec![
                ("cleanup.policy".into(), "compact,delete".into()),
                (
                    "retention.ms".into(),
                    (retention_ms.saturating_add(day)).to_string(),
                ),
            ],
        }
    }
}

/// The changelog side of a store: where its writes go, and the writes not yet sent (latest per
/// key, so a key updated many times between commits costs one changelog record).
pub(crate) struct Changelog {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pending: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

/// Pending changelog writes past this many keys are sent before the commit.
pub(crate) const CHANGELOG_PENDING_MAX: usize = 10_000;

/// A store as a task holds it: the physical store, its changelog, and the stream time it has
/// observed (for window expiry).
pub(crate) struct StateStore {
    pub(crate) name: Arc<str>,
    pub(crate) kind: StoreKind,
    pub(crate) inner: Box<dyn KvBytes>,
    pub(crate) changelog: Option<Changelog>,
    /// The largest timestamp written to a window or session store: retention counts from it.
    pub(crate) observed_ms: i64,
}

impl StateStore {
    pub(crate) fn new(
        spec: &StoreSpec,
        inner: Box<dyn KvBytes>,
        changelog: Option<(Arc<str>, i32)>,
    ) -> Self {
        StateStore {
            name: spec.name.clone(),
            kind: spec.kind,
            inner,
            changelog: changelog.map(|(topic, partition)| Changelog {
                topic,
                partition,
                pending: HashMap::new(),
            }),
            observed_ms: i64::MIN,
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }

    pub(crate) fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StoreError> {
        if let Some(log) = &mut self.changelog {
            log.pending.insert(key.clone(), Some(value.clone()));
        }
        self.inner.put(key, value)
    }

    pub(crate) fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        if let Some(log) = &mut self.changelog {
            log.pending.insert(key.to_vec(), None);
        }
        self.inner.delete(key)
    }

    pub(crate) fn range(
        &self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> Result<Entries, StoreError> {
        self.inner.range(from, to)
    }

    /// Deletes a key range without logging it (expired windows: the changelog's time retention
    /// drops them there).
    pub(crate) fn expire_range(
        &mut self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> Result<(), StoreError> {
        for (key, _) in self.inner.range(from, to)? {
            self.inner.delete(&key)?;
        }
        Ok(())
    }

    /// Applies one changelog record during restore (not logged again).
    pub(crate) fn restore(
        &mut self,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        if let Some(time) = window::entry_time(self.kind, &key) {
            self.observed_ms = self.observed_ms.max(time);
        }
        match value {
            Some(value) => self.inner.put(key, value),
            None => self.inner.delete(&key),
        }
    }

    /// Whether pending changelog writes should be sent before the commit.
    pub(crate) fn changelog_full(&self) -> bool {
        self.changelog
            .as_ref()
            .is_some_and(|c| c.pending.len() >= CHANGELOG_PENDING_MAX)
    }

    /// Takes the pending changelog writes: (topic, partition, writes).
    pub(crate) fn take_changelog(&mut self) -> Option<(Arc<str>, i32, ChangelogWrites)> {
        let log = self.changelog.as_mut()?;
        if log.pending.is_empty() {
            return None;
        }
        Some((
            log.topic.clone(),
            log.partition,
            log.pending.drain().collect(),
        ))
    }

    /// How many entries the store holds.
    pub(crate) fn approximate_len(&self) -> u64 {
        self.inner.approximate_len()
    }
}

/// Opens the physical store for `spec` of task `task_dir` (a directory per task in the state
/// directory; `None` forces memory, as the test driver may).
pub(crate) fn open_physical(
    spec: &StoreSpec,
    task_dir: Option<&PathBuf>,
) -> Result<Box<dyn KvBytes>, StoreError> {
    match (spec.backend, task_dir) {
        (StoreBackend::Persistent, Some(dir)) => Ok(Box::new(persistent::RedbStore::open(
            &spec.name,
            &dir.join(format!("{}.redb", spec.name)),
        )?)),
        _ => Ok(Box::new(memory::MemoryStore::default())),
    }
}
