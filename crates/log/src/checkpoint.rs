//! Single-offset checkpoint files (`recovery-point`, `log-start-offset`,
//! `cleaner-offset-checkpoint`) with a checksum, so damage is detected instead of trusted, and the
//! recovery point's in-place updates that let recovery tell fsynced data from a torn tail.
//!
//! Format: one line, `<offset, 20 decimal digits> <CRC-32C of those 20 digits, 8 hex digits>\n`
//! (30 bytes, fixed width so the recovery point can be overwritten in place). A file of earlier
//! versions holds the bare decimal offset; it is accepted (there is nothing to check it against
//! but the log) and rewritten in the new format by the next checkpoint write.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::index::write_synced;

/// Bytes of a checkpoint written by this version.
const LINE_LEN: usize = 30;
/// Larger files are damaged whatever they hold (and are not read whole).
const FILE_BYTES_MAX: u64 = 4096;

/// What a checkpoint file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Checkpoint {
    /// No file: nothing was checkpointed yet.
    Missing,
    /// A readable offset whose checksum matched.
    Value(i64),
    /// An offset in the format of earlier versions (no checksum to check).
    Legacy(i64),
    /// The file exists but cannot be trusted; the text says why.
    Damaged(String),
}

/// Encodes `value` as a checkpoint line.
pub(crate) fn encode(value: i64) -> [u8; LINE_LEN] {
    let digits = format!("{:020}", value.max(0));
    let line = format!("{digits} {:08x}\n", crc32c::crc32c(digits.as_bytes()));
    let mut out = [0u8; LINE_LEN];
    out.copy_from_slice(line.as_bytes());
    out
}

/// Decodes a checkpoint's bytes.
pub(crate) fn decode(bytes: &[u8]) -> Checkpoint {
    let damaged = |why: &str| Checkpoint::Damaged(why.to_owned());
    let Ok(text) = std::str::from_utf8(bytes) else {
        return damaged("it is not text");
    };
    let mut fields = text.split_whitespace();
    let (Some(digits), checksum, None) = (fields.next(), fields.next(), fields.next()) else {
        return damaged("it is not `offset checksum`");
    };
    let Ok(value) = digits.parse::<i64>() else {
        return Checkpoint::Damaged(format!("{digits:?} is not an offset"));
    };
    if value < 0 {
        return Checkpoint::Damaged(format!("offset {value} is negative"));
    }
    match checksum {
        None => Checkpoint::Legacy(value),
        Some(checksum) => {
            let expected = format!("{:08x}", crc32c::crc32c(digits.as_bytes()));
            if checksum != expected {
                return Checkpoint::Damaged(format!(
                    "checksum {checksum} does not match offset {digits} (expected {expected})"
                ));
            }
            Checkpoint::Value(value)
        }
    }
}

/// Reads a checkpoint. An error is a storage error (the file exists but cannot be read).
pub(crate) fn read(path: &Path) -> io::Result<Checkpoint> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Checkpoint::Missing),
        Err(e) => return Err(e),
    };
    let size = file.metadata()?.len();
    if size > FILE_BYTES_MAX {
        return Ok(Checkpoint::Damaged(format!(
            "it is {size} bytes long, a checkpoint is {LINE_LEN}"
        )));
    }
    let mut bytes = vec![0u8; size as usize];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(decode(&bytes))
}

/// Replaces a checkpoint with `value` (temp file, fsync, rename).
pub(crate) fn write(path: &Path, value: i64) -> io::Result<()> {
    write_synced(path, &encode(value))
}

/// The `recovery-point` file, overwritten in place: after every fsync of the log's data the new
/// recovery point is written without an fsync of its own (a page-cache write of 30 bytes, cheap
/// enough for every group commit), so it survives a process kill; it is fsynced whenever other
/// checkpoints are (rolls, clean close, background flushes, truncation). Written only after the
/// data it covers was fsynced, it never claims more than the disk holds, even when the OS writes
/// it back early.
///
/// The file is opened for each write rather than kept open: a broker hosts thousands of
/// partitions, and one descriptor per partition for a 30-byte file would take the place of
/// segment files under the process's open-file limit (10,000 partitions hit a 20,000 limit).
/// An open and a close cost microseconds; the fsync of the data before it costs milliseconds.
#[derive(Debug)]
pub(crate) struct RecoveryPointFile {
    path: PathBuf,
    /// The value last written (synced or not).
    written: i64,
    /// The value last fsynced.
    durable: i64,
}

impl RecoveryPointFile {
    /// Opens (creating if needed) the file and writes `value` to it, synced: whatever it held is
    /// replaced, including a longer damaged file. A file that already holds exactly `value` (a
    /// clean restart) is left alone: no write, no fsync.
    pub(crate) fn create(path: &Path, value: i64) -> io::Result<Self> {
        let file = open_for_write(path)?;
        let mut current = [0u8; LINE_LEN + 1];
        let held = read_up_to(&file, &mut current)?;
        let rp = RecoveryPointFile {
            path: path.to_path_buf(),
            written: value,
            durable: value,
        };
        if current[..held] == encode(value) {
            return Ok(rp);
        }
        write_at_start(&file, value, true)?;
        if file.metadata()?.len() != LINE_LEN as u64 {
            file.set_len(LINE_LEN as u64)?;
            file.sync_all()?;
        }
        drop(file);
        if let Some(dir) = path.parent() {
            crate::partition_log::sync_dir(dir)?;
        }
        Ok(rp)
    }

    /// Writes `value`; with `durable`, fsyncs it too.
    pub(crate) fn write(&mut self, value: i64, durable: bool) -> io::Result<()> {
        let write = value != self.written;
        let sync = durable && self.durable != value;
        if !write && !sync {
            return Ok(());
        }
        let file = open_for_write(&self.path)?;
        if write {
            write_at_start(&file, value, false)?;
            self.written = value;
        }
        if sync {
            file.sync_data()?;
            self.durable = value;
        }
        Ok(())
    }

    /// The value last fsynced.
    pub(crate) fn durable(&self) -> i64 {
        self.durable
    }
}

fn open_for_write(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Writes `value`'s line over the file's first bytes; with `sync`, fsyncs it.
fn write_at_start(file: &File, value: i64, sync: bool) -> io::Result<()> {
    file.write_all_at(&encode(value), 0)?;
    if sync {
        file.sync_data()?;
    }
    Ok(())
}

/// Reads up to `buf.len()` bytes from the file's start; returns how many.
fn read_up_to(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut held = 0;
    while held < buf.len() {
        match file.read_at(&mut buf[held..], held as u64)? {
            0 => break,
            n => held += n,
        }
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_damage_is_detected() {
        let line = encode(4242);
        assert_eq!(line.len(), LINE_LEN);
        assert_eq!(decode(&line), Checkpoint::Value(4242));
        // Earlier versions wrote the bare offset.
        assert_eq!(decode(b"17\n"), Checkpoint::Legacy(17));
        // One digit changed: the checksum no longer matches.
        let mut flipped = line;
        flipped[17] = b'9';
        assert!(matches!(decode(&flipped), Checkpoint::Damaged(_)));
        for bad in [&b""[..], b"abc", b"-5", b"1 2 3", &[0xff, 0xfe]] {
            assert!(
                matches!(decode(bad), Checkpoint::Damaged(_)),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn the_recovery_point_is_overwritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recovery-point");
        std::fs::write(&path, vec![b'x'; 100]).unwrap();
        let mut rp = RecoveryPointFile::create(&path, 5).unwrap();
        assert_eq!(read(&path).unwrap(), Checkpoint::Value(5));
        rp.write(123_456, false).unwrap();
        assert_eq!(read(&path).unwrap(), Checkpoint::Value(123_456));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), LINE_LEN as u64);
        assert_eq!(read(&dir.path().join("none")).unwrap(), Checkpoint::Missing);
    }
}
