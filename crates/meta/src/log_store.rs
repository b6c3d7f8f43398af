//! The Raft log and vote on disk, under `<dir>/log/` (openraft's `RaftLogStorage`).
//!
//! Layout, one JSON document per file, each written with [`fsutil`]'s temp + fsync + rename:
//!
//! - `log/<index, 20 digits>.json`: one entry per file. The metadata log is small and slow (topic
//!   creations, registrations), so a file per entry keeps truncation and purging trivially
//!   hole-free: truncation deletes from the end backwards, purging from the start forwards.
//! - `vote.json`: the last vote; `committed.json`: the last committed log id (so a restart
//!   re-applies up to it at once); `purged.json`: the last purged log id, written before the
//!   files it covers are deleted.
//!
//! All entries are also kept in memory (the log is purged behind snapshots). File I/O is
//! synchronous inside the async trait methods; it is a handful of small fsyncs per metadata
//! change, and a dedicated I/O thread can come later if that ever shows up.
//!
//! After any failed write the store is poisoned and refuses further writes: after a failed
//! fsync the kernel's page cache no longer tells us what is on disk.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;

use crate::fsutil::{self, TEMP_SUFFIX};
use crate::node::OpenError;
use crate::raft_types::{Entry, LogId, TypeConfig, Vote};

/// The log store; clones share one log (openraft reads through clones while it writes).
#[derive(Clone)]
pub(crate) struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    dir: PathBuf,
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// Set by the first failed write; every later write fails with it.
    poisoned: Option<String>,
}

impl LogStore {
    /// Loads the log under `dir` (creating it if absent), checking it has no holes.
    pub(crate) fn open(dir: &Path) -> Result<Self, OpenError> {
        let log_dir = dir.join("log");
        fs::create_dir_all(&log_dir).map_err(|source| OpenError::Io {
            path: log_dir.clone(),
            source,
        })?;
        let vote = read_json::<Vote>(&dir.join("vote.json"))?;
        let committed = read_json::<LogId>(&dir.join("committed.json"))?;
        let last_purged = read_json::<LogId>(&dir.join("purged.json"))?;
        let io_err = |source| OpenError::Io {
            path: log_dir.clone(),
            source,
        };
        let mut entries = BTreeMap::new();
        for dirent in fs::read_dir(&log_dir).map_err(io_err)? {
            let path = dirent.map_err(io_err)?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.ends_with(TEMP_SUFFIX) {
                // A write that crashed before its rename: never part of the log.
                fs::remove_file(&path).map_err(|source| OpenError::Io {
                    path: path.clone(),
                    source,
                })?;
                continue;
            }
            let Some(index) = name
                .strip_suffix(".json")
                .and_then(|stem| stem.parse::<u64>().ok())
            else {
                return Err(corrupt(&path, "not a log entry file name".to_string()));
            };
            if last_purged.is_some_and(|purged| index <= purged.index) {
                // A purge that crashed after writing purged.json but before deleting this.
                fs::remove_file(&path).map_err(|source| OpenError::Io {
                    path: path.clone(),
                    source,
                })?;
                continue;
            }
            let entry = read_json::<Entry>(&path)?.expect("listed file exists");
            if entry.log_id.index != index {
                return Err(corrupt(
                    &path,
                    format!("holds the entry at index {}", entry.log_id.index),
                ));
            }
            entries.insert(index, entry);
        }
        let mut expected = entries.keys().next().copied();
        for &index in entries.keys() {
            if Some(index) != expected {
                return Err(corrupt(
                    &log_dir,
                    format!(
                        "hole in the log: entry {} is missing",
                        expected.unwrap_or(0)
                    ),
                ));
            }
            expected = Some(index + 1);
        }
        if let (Some(purged), Some(&first)) = (last_purged, entries.keys().next()) {
            if first != purged.index + 1 {
                return Err(corrupt(
                    &log_dir,
                    format!(
                        "the log starts at {first} but was purged only up to {}",
                        purged.index
                    ),
                ));
            }
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_path_buf(),
                entries,
                last_purged,
                vote,
                committed,
                poisoned: None,
            })),
        })
    }
}

impl LogStore {
    /// How many handles to this log exist (openraft's store and readers, the node).
    pub(crate) fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }
}

impl Inner {
    fn entry_path(&self, index: u64) -> PathBuf {
        self.dir.join("log").join(format!("{index:020}.json"))
    }

    fn check_writable(&self) -> io::Result<()> {
        match &self.poisoned {
            None => Ok(()),
            Some(reason) => Err(io::Error::other(format!(
                "metadata log under {} is poisoned by an earlier failed write: {reason}",
                self.dir.display()
            ))),
        }
    }

    /// Runs one write, poisoning the store if it fails.
    fn write<T>(&mut self, op: impl FnOnce(&mut Self) -> io::Result<T>) -> io::Result<T> {
        self.check_writable()?;
        let result = op(self);
        if let Err(e) = &result {
            self.poisoned = Some(e.to_string());
        }
        result
    }
}

fn corrupt(path: &Path, reason: String) -> OpenError {
    OpenError::Corrupt {
        path: path.to_path_buf(),
        reason,
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, OpenError> {
    let bytes = fsutil::read_if_exists(path).map_err(|source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    bytes
        .map(|bytes| serde_json::from_slice(&bytes).map_err(|e| corrupt(path, e.to_string())))
        .transpose()
}

fn to_json<T: serde::Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let inner = self.inner.lock();
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.inner.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = self.inner.lock();
        let last = inner.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let mut inner = self.inner.lock();
        inner.write(|inner| {
            fsutil::write_atomic(&inner.dir.join("vote.json"), &to_json(vote)?)?;
            inner.vote = Some(*vote);
            Ok(())
        })
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let mut inner = self.inner.lock();
        if inner.committed == committed {
            return Ok(());
        }
        inner.write(|inner| {
            fsutil::write_atomic(&inner.dir.join("committed.json"), &to_json(&committed)?)?;
            inner.committed = committed;
            Ok(())
        })
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.inner.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock();
        let result = inner.write(|inner| {
            let mut appended = Vec::new();
            for entry in entries {
                let index = entry.log_id.index;
                let previous = appended
                    .last()
                    .map(|e: &Entry| e.log_id.index)
                    .or_else(|| inner.entries.keys().next_back().copied());
                // openraft truncates before it overwrites, so appends always extend the log.
                assert!(
                    previous.is_none_or(|previous| index == previous + 1),
                    "append of entry {index} after entry {previous:?} would leave a hole"
                );
                fsutil::write_file_synced(&inner.entry_path(index), &to_json(&entry)?)?;
                appended.push(entry);
            }
            fsutil::fsync_dir(&inner.dir.join("log"))?;
            for entry in appended {
                inner.entries.insert(entry.log_id.index, entry);
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let keep_up_to = last_log_id.map(|id| id.index);
        let mut inner = self.inner.lock();
        inner.write(|inner| {
            let doomed: Vec<u64> = match keep_up_to {
                Some(index) => inner.entries.range(index + 1..).map(|(&i, _)| i).collect(),
                None => inner.entries.keys().copied().collect(),
            };
            // From the end backwards, so a crash part-way leaves a shorter log, never a hole.
            for &index in doomed.iter().rev() {
                fs::remove_file(inner.entry_path(index))?;
                inner.entries.remove(&index);
            }
            fsutil::fsync_dir(&inner.dir.join("log"))
        })
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut inner = self.inner.lock();
        inner.write(|inner| {
            assert!(
                inner.last_purged.is_none_or(|purged| purged <= log_id),
                "purge to {log_id} goes back behind the earlier purge"
            );
            // Record the purge first: start-up deletes any file it covers, so a crash part-way
            // leaves no hole at the front.
            fsutil::write_atomic(&inner.dir.join("purged.json"), &to_json(&log_id)?)?;
            inner.last_purged = Some(log_id);
            let doomed: Vec<u64> = inner
                .entries
                .range(..=log_id.index)
                .map(|(&i, _)| i)
                .collect();
            for index in doomed {
                fs::remove_file(inner.entry_path(index))?;
                inner.entries.remove(&index);
            }
            fsutil::fsync_dir(&inner.dir.join("log"))
        })
    }
}
