//! `sluice log repair --truncate-at`: the deliberate cut of a partition's log that a person
//! makes knowingly, on a stopped broker. [`plan_truncation`] works out exactly what goes (files,
//! offsets, records) and changes nothing; [`execute`] moves it into a backup directory (nothing
//! is deleted) and leaves a log that opens cleanly below the cut.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::damage::find_next_batch;
use crate::segment::{check_offsets, file_name, scan};
use crate::verify::verify_partition;
use crate::{Damage, Offset};

/// Why a repair cannot be planned or carried out.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error(
        "{0} holds no segment files: name a partition directory (<data-dir>/<topic>-<partition>)"
    )]
    NotAPartition(PathBuf),
    #[error(
        "offset {requested} is below the log's first offset {first}: nothing below it can be kept"
    )]
    BelowLog { requested: i64, first: i64 },
    #[error("offset {requested} is at or past the log end {end}: there is nothing to remove")]
    NothingToRemove { requested: i64, end: i64 },
    #[error("damaged data remains below offset {requested}: {damage}; truncate at {} or lower", damage.first_offset.0)]
    DamageBelow { requested: i64, damage: Box<Damage> },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What a truncation would remove.
#[derive(Debug, Clone)]
pub struct RepairPlan {
    pub dir: PathBuf,
    /// The offset asked for.
    pub requested: Offset,
    /// The log end afterwards: `requested`, or lower when a batch holding it starts below it
    /// (a batch goes whole).
    pub new_end: Offset,
    /// The log end now (after the last valid batch).
    pub old_end: Offset,
    /// The segment cut, and the byte position it is cut at.
    pub cut_segment: PathBuf,
    pub cut_position: u64,
    /// Bytes of the cut segment after the cut.
    pub cut_bytes: u64,
    /// Files moved whole into the backup: later segments with their indexes, and producer-state
    /// snapshots past the cut.
    pub moved_files: Vec<PathBuf>,
    /// Valid batches and records removed, and bytes removed that are not valid batches.
    pub batches: u64,
    pub records: u64,
    pub damaged_bytes: u64,
}

impl RepairPlan {
    /// The plan in sentences, for a person to read before running it.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Truncate {} at offset {} (requested {}): the log ends at {} afterwards instead of {}.",
            self.dir.display(),
            self.new_end.0,
            self.requested.0,
            self.new_end.0,
            self.old_end.0
        );
        let _ = writeln!(
            out,
            "Removes offsets {}..{}: {} records in {} batches, plus {} bytes of damaged data.",
            self.new_end.0, self.old_end.0, self.records, self.batches, self.damaged_bytes
        );
        let _ = writeln!(
            out,
            "Cuts {} at byte {} ({} bytes after it; the whole file is kept in the backup).",
            self.cut_segment.display(),
            self.cut_position,
            self.cut_bytes
        );
        for file in &self.moved_files {
            let _ = writeln!(out, "Moves {} to the backup.", file.display());
        }
        out
    }
}

/// Plans truncating the partition log in `dir` at `offset` (everything at and above it goes; a
/// batch holding it goes whole). Refuses when damaged data would remain below the cut.
pub fn plan_truncation(dir: &Path, offset: Offset) -> Result<RepairPlan, RepairError> {
    let report = verify_partition(dir)?;
    let mut bases: Vec<i64> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(base) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|&b| crate::segment::is_segment_base(b))
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    let Some(&first) = bases.first() else {
        return Err(RepairError::NotAPartition(dir.to_path_buf()));
    };
    if offset.0 < first {
        return Err(RepairError::BelowLog {
            requested: offset.0,
            first,
        });
    }
    let old_end = report.end_offset;
    if let Some(damage) = report.damage.iter().find(|d| d.first_offset.0 < offset.0) {
        return Err(RepairError::DamageBelow {
            requested: offset.0,
            damage: Box::new(damage.clone()),
        });
    }
    let base = *bases
        .iter()
        .rev()
        .find(|&&b| b <= offset.0)
        .expect("offset is at or above the first base");
    let cut_segment = dir.join(file_name(base, "log"));
    let file = File::open(&cut_segment)?;
    let size = file.metadata()?.len();
    // The batch holding `offset` goes whole; without one, the cut is where the segment's
    // valid batches end (a torn tail, or the end of the file when later segments go).
    let mut expected = base;
    let mut cut = None;
    let end = scan(&file, 0, size, true, |pos, h, _| {
        let next = check_offsets(base, expected, pos, h)?;
        if h.last_offset() >= offset.0 {
            cut = Some(pos);
            return Err(String::new());
        }
        expected = next;
        Ok(())
    })?;
    let cut_position = cut.unwrap_or(end.valid_to);
    let new_end = expected;
    let later: Vec<i64> = bases.iter().copied().filter(|&b| b > base).collect();
    if cut.is_none() && end.problem.is_none() && later.is_empty() {
        return Err(RepairError::NothingToRemove {
            requested: offset.0,
            end: expected,
        });
    }
    let mut plan = RepairPlan {
        dir: dir.to_path_buf(),
        requested: offset,
        new_end: Offset(new_end),
        old_end: old_end.max(Offset(new_end)),
        cut_segment: cut_segment.clone(),
        cut_position,
        cut_bytes: size - cut_position,
        moved_files: Vec::new(),
        batches: 0,
        records: 0,
        damaged_bytes: 0,
    };
    count_removed(&mut plan, &file, cut_position, size, new_end)?;
    for &later_base in &later {
        let path = dir.join(file_name(later_base, "log"));
        let file = File::open(&path)?;
        let size = file.metadata()?.len();
        count_removed(&mut plan, &file, 0, size, later_base)?;
        for ext in ["log", "index", "timeindex", "txnindex"] {
            let path = dir.join(file_name(later_base, ext));
            if path.exists() {
                plan.moved_files.push(path);
            }
        }
    }
    for ext in ["index", "timeindex"] {
        let path = dir.join(file_name(base, ext));
        if path.exists() {
            plan.moved_files.push(path);
        }
    }
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let snapshot = name
            .to_str()
            .and_then(|n| n.strip_suffix(".snapshot"))
            .and_then(|s| s.parse::<i64>().ok());
        if snapshot.is_some_and(|s| s > new_end) {
            plan.moved_files.push(dir.join(name));
        }
    }
    plan.moved_files.sort();
    Ok(plan)
}

/// Adds the batches, records and damaged bytes of `file` from `pos` to `end` to the plan's
/// counts, continuing past damage at the next valid batch.
fn count_removed(
    plan: &mut RepairPlan,
    file: &File,
    mut pos: u64,
    end: u64,
    min_offset: i64,
) -> io::Result<()> {
    loop {
        let scanned = scan(file, pos, end, true, |_, h, _| {
            plan.batches += 1;
            plan.records += h.record_count.max(0) as u64;
            Ok(())
        })?;
        if scanned.problem.is_none() {
            return Ok(());
        }
        match find_next_batch(file, scanned.valid_to + 1, end, min_offset)? {
            Some((next, _)) => {
                plan.damaged_bytes += next - scanned.valid_to;
                pos = next;
            }
            None => {
                plan.damaged_bytes += end - scanned.valid_to;
                return Ok(());
            }
        }
    }
}

/// Carries out `plan`: everything it removes is moved (the cut segment copied whole) into
/// `backup`, with a `REPAIR.txt` saying what was done. The caller holds the data directory's
/// lock (no broker may run on it).
pub fn execute(plan: &RepairPlan, backup: &Path) -> Result<(), RepairError> {
    fs::create_dir_all(backup)?;
    fs::write(backup.join("REPAIR.txt"), plan.describe())?;
    let base = crate::segment::base_of(&plan.cut_segment)
        .ok_or_else(|| RepairError::NotAPartition(plan.dir.clone()))?;
    crate::partition_log::cut_log(&plan.dir, backup, base, plan.cut_position, plan.new_end.0)?;
    Ok(())
}
