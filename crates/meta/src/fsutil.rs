//! Durable file writes: write-temp, fsync, rename, fsync the directory (the data dir's rule).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Suffix of files being written; any left at start-up are from a crash and are deleted.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

/// Replaces `path` with `bytes` so that after a crash it holds either the old or the new
/// contents, and the new contents are durable when this returns.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_file_synced(path, bytes)?;
    fsync_dir(parent(path))
}

/// Like [`write_atomic`] but leaves the directory fsync to the caller, who may batch several.
pub(crate) fn write_file_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(TEMP_SUFFIX);
    let temp = Path::new(&temp);
    let mut file = File::create(temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(temp, path)
}

/// Makes creations, renames and removals in `dir` durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads `path`, or `None` if it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}
