//! [`LogDir`]: a data directory of partition logs, its lock file and clean-shutdown marker.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use fs2::FileExt;

use crate::partition_log::sync_dir;
use crate::{LogConfig, OpenError, PartitionLog};

const LOCK_FILE: &str = ".lock";
const CLEAN_SHUTDOWN_FILE: &str = ".sluice_cleanshutdown";

/// A data directory holding many partition logs, `<dir>/<topic>-<partition>/`.
#[derive(Debug)]
pub struct LogDir {
    path: PathBuf,
    clean: bool,
    /// Held for the life of the process; the OS releases the lock when it exits.
    _lock: File,
}

impl LogDir {
    /// Takes the directory's lock file (refusing a second process with [`OpenError::Locked`]), reads and
    /// removes the clean-shutdown marker (`.sluice_cleanshutdown`), and remembers whether the last stop
    /// was clean.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let io_err = |source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(path).map_err(io_err)?;
        // A brand-new (empty) directory has nothing to recover.
        let fresh = fs::read_dir(path).map_err(io_err)?.next().is_none();
        let DirLock { file: lock } = DirLock::acquire(path)?;
        let marker = path.join(CLEAN_SHUTDOWN_FILE);
        let marked = marker.exists();
        let clean = marked || fresh;
        if marked {
            fs::remove_file(&marker).map_err(io_err)?;
            sync_dir(path).map_err(io_err)?;
        }
        Ok(LogDir {
            path: path.to_path_buf(),
            clean,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the previous process shut down cleanly (partitions then skip full recovery).
    pub fn was_clean(&self) -> bool {
        self.clean
    }

    /// The (topic, partition) directories present on disk.
    pub fn partitions(&self) -> io::Result<Vec<(String, i32)>> {
        partition_names(&self.path)
    }

    /// Opens or creates the log for one partition.
    pub fn open_partition(
        &self,
        topic: &str,
        partition: i32,
        config: LogConfig,
    ) -> Result<PartitionLog, OpenError> {
        let dir = self.path.join(format!("{topic}-{partition}"));
        PartitionLog::open(&dir, config, self.clean)
    }

    /// (total, usable) bytes of the file system holding the directory.
    pub fn space(&self) -> io::Result<(u64, u64)> {
        Ok((
            fs2::total_space(&self.path)?,
            fs2::available_space(&self.path)?,
        ))
    }

    /// Writes the clean-shutdown marker; call after every partition was closed.
    pub fn mark_clean_shutdown(&self) -> io::Result<()> {
        File::create(self.path.join(CLEAN_SHUTDOWN_FILE))?.sync_all()?;
        sync_dir(&self.path)
    }
}

/// A data directory's lock, held without opening the directory's logs: what offline tools
/// (`sluice log repair`) take so no broker runs on the files they change.
#[derive(Debug)]
pub struct DirLock {
    /// Held while this lives; the OS releases the lock when the process exits.
    file: File,
}

impl DirLock {
    /// Takes the lock file `<data_dir>/.lock` (creating it), or [`OpenError::Locked`] when a
    /// running broker (or another tool) holds it.
    pub fn acquire(data_dir: &Path) -> Result<DirLock, OpenError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(data_dir.join(LOCK_FILE))
            .map_err(|source| OpenError::Io {
                path: data_dir.to_path_buf(),
                source,
            })?;
        if file.try_lock_exclusive().is_err() {
            return Err(OpenError::Locked {
                path: data_dir.to_path_buf(),
            });
        }
        Ok(DirLock { file })
    }

    /// Whether a process holds `<data_dir>/.lock` now (a broker runs on the directory). Takes
    /// and drops a shared lock to find out; creates nothing.
    pub fn is_held(data_dir: &Path) -> bool {
        let Ok(file) = File::open(data_dir.join(LOCK_FILE)) else {
            return false;
        };
        match FileExt::try_lock_shared(&file) {
            Ok(()) => {
                let _ = FileExt::unlock(&file);
                false
            }
            Err(_) => true,
        }
    }
}

/// The (topic, partition) directories in a data directory, sorted.
pub(crate) fn partition_names(path: &Path) -> io::Result<Vec<(String, i32)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || name.starts_with("__sluice") {
            continue;
        }
        let Some((topic, partition)) = name.rsplit_once('-') else {
            continue;
        };
        let Ok(partition) = partition.parse::<i32>() else {
            continue;
        };
        if topic.is_empty() || partition < 0 {
            continue;
        }
        out.push((topic.to_owned(), partition));
    }
    out.sort();
    Ok(out)
}
