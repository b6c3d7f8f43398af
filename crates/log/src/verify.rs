//! Checking a partition's files without opening its log (`sluice log verify`): every batch of
//! every segment (length, magic, counts, CRC, ascending offsets, segments that follow each
//! other), every index entry of closed segments, the checkpoints, producer-state snapshots and
//! aborted-transaction indexes. Nothing is written and no lock is taken, so it also runs beside
//! a live broker. Damage is classified as recovery classifies it: a torn tail (which the next
//! start truncates) is reported apart from damage to fsynced data (which it never truncates).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::checkpoint::{self, Checkpoint};
use crate::damage::{find_next_batch, is_torn_tail, missing_at_end, Damage, DamageKind};
use crate::leader_epoch::{LeaderEpochCache, CHECKPOINT_FILE};
use crate::partition_log::{CLEANER_CHECKPOINT_FILE, LOG_START_FILE, RECOVERY_POINT_FILE};
use crate::segment::{check_offsets, file_name, scan};
use crate::Offset;

/// A damaged file that is not a segment: a checkpoint, an index, a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    pub file: PathBuf,
    /// What is wrong, in a sentence.
    pub problem: String,
}

/// What [`verify_partition`] found in one partition directory.
#[derive(Debug, Clone, Default)]
pub struct PartitionReport {
    pub dir: PathBuf,
    pub segments: usize,
    /// Valid batches and the records they hold.
    pub batches: u64,
    pub records: u64,
    /// The first segment's base offset, and the offset after the last valid batch.
    pub first_offset: Offset,
    pub end_offset: Offset,
    /// Every damaged range of data that was fsynced, in file order.
    pub damage: Vec<Damage>,
    /// Bytes after the recovery point at the end of the newest segment that are not a whole
    /// batch: what an unclean stop leaves, truncated by the next start (not damage).
    pub torn_tail: Option<Damage>,
    /// Damaged checkpoints, indexes, snapshots and aborted-transaction indexes.
    pub files: Vec<FileProblem>,
    /// Things worth knowing that are not damage.
    pub notes: Vec<String>,
}

impl PartitionReport {
    /// Whether anything is damaged (a torn tail is not).
    pub fn is_damaged(&self) -> bool {
        !self.damage.is_empty() || !self.files.is_empty()
    }

    /// The first offset of the first damaged range: truncating there leaves only intact data.
    pub fn first_damaged_offset(&self) -> Option<Offset> {
        self.damage.iter().map(|d| d.first_offset).min()
    }
}

/// The partition directories under `path`: `path` itself when it holds a partition's files,
/// else its `<topic>-<partition>` subdirectories (a data directory).
pub fn partition_dirs(path: &Path) -> io::Result<Vec<PathBuf>> {
    let is_partition = fs::read_dir(path)?.any(|entry| {
        entry.is_ok_and(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".log") || name == RECOVERY_POINT_FILE || name == LOG_START_FILE
        })
    });
    if is_partition {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut dirs: Vec<PathBuf> = crate::dir::partition_names(path)?
        .into_iter()
        .map(|(topic, partition)| path.join(format!("{topic}-{partition}")))
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Segment base offsets and snapshot offsets of a directory, read-only.
fn listing(dir: &Path) -> io::Result<(Vec<i64>, Vec<i64>)> {
    let mut segments = Vec::new();
    let mut snapshots = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((stem, ext)) = name.split_once('.') else {
            continue;
        };
        let Ok(offset) = stem.parse::<i64>() else {
            continue;
        };
        match ext {
            "log" if crate::segment::is_segment_base(offset) => segments.push(offset),
            "snapshot" => snapshots.push(offset),
            _ => {}
        }
    }
    segments.sort_unstable();
    snapshots.sort_unstable();
    Ok((segments, snapshots))
}

/// Checks one partition directory (see the module docs).
pub fn verify_partition(dir: &Path) -> io::Result<PartitionReport> {
    let (bases, snapshots) = listing(dir)?;
    let mut report = PartitionReport {
        dir: dir.to_path_buf(),
        segments: bases.len(),
        first_offset: Offset(bases.first().copied().unwrap_or(0)),
        ..PartitionReport::default()
    };
    let read = |name: &str, report: &mut PartitionReport| -> io::Result<Option<i64>> {
        let path = dir.join(name);
        Ok(match checkpoint::read(&path)? {
            Checkpoint::Value(v) | Checkpoint::Legacy(v) => Some(v),
            Checkpoint::Missing => None,
            Checkpoint::Damaged(problem) => {
                report.files.push(FileProblem {
                    file: path,
                    problem: format!("damaged checkpoint: {problem}"),
                });
                None
            }
        })
    };
    let recovery_point = read(RECOVERY_POINT_FILE, &mut report)?;
    let log_start = read(LOG_START_FILE, &mut report)?;
    let cleaned_to = read(CLEANER_CHECKPOINT_FILE, &mut report)?;
    let never_cleaned = cleaned_to.is_none_or(|c| c == 0);
    let mut epochs = EpochCheck::load(dir, &mut report);
    let mut end = report.first_offset.0;
    for (i, &base) in bases.iter().enumerate() {
        let segment = SegmentCheck {
            dir,
            base,
            next_base: bases.get(i + 1).copied(),
            later: bases.len() - i - 1,
            recovery_point,
            never_cleaned,
        };
        match segment.run(&mut report, &mut epochs) {
            Ok(next) => end = next,
            Err(e) if e.kind() == io::ErrorKind::NotFound => report.notes.push(format!(
                "{} disappeared while it was read (a running broker removed it)",
                file_name(base, "log")
            )),
            Err(e) => return Err(e),
        }
    }
    report.end_offset = Offset(end);
    for (name, value) in [
        (LOG_START_FILE, log_start),
        (CLEANER_CHECKPOINT_FILE, cleaned_to),
    ] {
        if let Some(v) = value.filter(|&v| v > end) {
            report.files.push(FileProblem {
                file: dir.join(name),
                problem: format!("offset {v} is past the log end {end}"),
            });
        }
    }
    epochs.finish(
        dir,
        log_start.unwrap_or(0).max(report.first_offset.0),
        end,
        &mut report,
    );
    for &offset in &snapshots {
        let path = dir.join(file_name(offset, "snapshot"));
        if crate::producer::ProducerState::read_snapshot(&path).is_some() {
            continue;
        }
        let bytes = fs::read(&path)?;
        if bytes.len() >= 2 && u16::from_be_bytes([bytes[0], bytes[1]]) == 1 {
            report.notes.push(format!(
                "{} is a version 1 snapshot, which is not read (producer state is replayed instead)",
                path.display()
            ));
        } else {
            report.files.push(FileProblem {
                file: path,
                problem: "damaged producer-state snapshot (its checksum or structure is wrong); an older one or the log is replayed instead".into(),
            });
        }
    }
    Ok(report)
}

/// One segment's check.
struct SegmentCheck<'a> {
    dir: &'a Path,
    base: i64,
    next_base: Option<i64>,
    /// Segment files after this one.
    later: usize,
    recovery_point: Option<i64>,
    never_cleaned: bool,
}

impl SegmentCheck<'_> {
    /// Scans the segment, continuing after damage at the next valid batch; returns the offset
    /// after its last valid batch.
    fn run(&self, report: &mut PartitionReport, epochs: &mut EpochCheck) -> io::Result<i64> {
        let path = self.dir.join(file_name(self.base, "log"));
        let file = File::open(&path)?;
        let size = file.metadata()?.len();
        let last = self.next_base.is_none();
        let mut indexes = IndexCheck::load(self.dir, self.base, last);
        let damage_before = report.damage.len();
        let mut expected = self.base;
        let mut pos = 0;
        let mut overlap: Option<(u64, i64)> = None;
        loop {
            let end = scan(&file, pos, size, true, |at, h, _| {
                expected = check_offsets(self.base, expected, at, h)?;
                report.batches += 1;
                report.records += h.record_count.max(0) as u64;
                epochs.observe(h.base_offset, h.last_offset(), h.leader_epoch);
                indexes.observe(at, h.base_offset - self.base, h.max_timestamp);
                if let Some(next) = self.next_base {
                    if h.last_offset() >= next && overlap.is_none() {
                        overlap = Some((at, h.base_offset));
                    }
                }
                Ok(())
            })?;
            let Some(problem) = end.problem else { break };
            let resume = find_next_batch(&file, end.valid_to + 1, size, expected)?;
            let kind = match (problem.kind, &resume) {
                (DamageKind::Truncated, Some(_)) => DamageKind::Length,
                (kind, _) => kind,
            };
            let damage = Damage {
                file: path.clone(),
                position: end.valid_to,
                length: resume.map_or(size, |(p, _)| p) - end.valid_to,
                first_offset: Offset(expected),
                resume_offset: resume
                    .map(|(_, h)| Offset(h.base_offset))
                    .or(self.next_base.map(Offset)),
                kind,
                detail: problem.detail,
                later_segments: self.later,
            };
            match resume {
                Some((at, _)) => {
                    report.damage.push(damage);
                    pos = at;
                }
                None => {
                    if is_torn_tail(last, expected, self.recovery_point, false) {
                        report.torn_tail = Some(damage);
                    } else {
                        report.damage.push(damage);
                    }
                    break;
                }
            }
        }
        // A segment already found damaged has its range reported: what follows would repeat it.
        let damaged = report.damage.len() > damage_before || report.torn_tail.is_some();
        if damaged {
            // Nothing more to say about this segment.
        } else if let Some((at, first)) = overlap {
            let next = self.next_base.expect("an overlap needs a next segment");
            report.damage.push(Damage {
                file: path.clone(),
                position: at,
                length: size - at,
                first_offset: Offset(first),
                resume_offset: Some(Offset(next)),
                kind: DamageKind::BaseOffset,
                detail: format!(
                    "the segment holds offsets up to {} but the next segment starts at {next}",
                    expected - 1
                ),
                later_segments: self.later,
            });
        } else if let Some(damage) = missing_at_end(
            &path,
            size,
            expected,
            self.next_base,
            self.never_cleaned,
            self.recovery_point,
            self.later,
        ) {
            report.damage.push(damage);
        }
        if report.damage.len() == damage_before {
            indexes.finish(self.dir, self.base, report);
            if let Some(problem) =
                crate::txn_index::TxnIndex::check_file(self.dir, self.base, expected)?
            {
                report.files.push(FileProblem {
                    file: crate::txn_index::txn_index_path(self.dir, self.base),
                    problem,
                });
            }
        }
        Ok(expected)
    }
}

/// The `.index` and `.timeindex` entries of a closed segment, matched against its batches as
/// the scan meets them. (The newest segment's are rebuilt at every unclean start, so they are
/// not checked.)
struct IndexCheck {
    /// (relative offset, position), in file order; None when not checked.
    offsets: Option<Vec<(u32, u32)>>,
    /// (timestamp, relative offset).
    times: Option<Vec<(i64, u32)>>,
    next_offset_entry: usize,
    next_time_entry: usize,
    largest_timestamp: i64,
    problems: Vec<(&'static str, String)>,
}

impl IndexCheck {
    fn load(dir: &Path, base: i64, last: bool) -> IndexCheck {
        let mut check = IndexCheck {
            offsets: None,
            times: None,
            next_offset_entry: 0,
            next_time_entry: 0,
            largest_timestamp: -1,
            problems: Vec::new(),
        };
        if last {
            return check;
        }
        let read = |ext: &str, entry: usize| -> Option<Vec<u8>> {
            let bytes = fs::read(dir.join(file_name(base, ext))).ok()?;
            Some(bytes).filter(|b| b.len() % entry == 0)
        };
        match read("index", 8) {
            Some(bytes) => {
                check.offsets = Some(
                    bytes
                        .chunks_exact(8)
                        .map(|e| {
                            (
                                u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
                                u32::from_be_bytes([e[4], e[5], e[6], e[7]]),
                            )
                        })
                        .collect(),
                )
            }
            None => check
                .problems
                .push(("index", "missing, or not whole 8-byte entries".into())),
        }
        match read("timeindex", 12) {
            Some(bytes) => {
                check.times = Some(
                    bytes
                        .chunks_exact(12)
                        .map(|e| {
                            let mut ts = [0u8; 8];
                            ts.copy_from_slice(&e[..8]);
                            (
                                i64::from_be_bytes(ts),
                                u32::from_be_bytes([e[8], e[9], e[10], e[11]]),
                            )
                        })
                        .collect(),
                )
            }
            None => check
                .problems
                .push(("timeindex", "missing, or not whole 12-byte entries".into())),
        }
        check
    }

    /// A valid batch at `position`, `relative` to the segment's base, with `max_timestamp`.
    fn observe(&mut self, position: u64, relative: i64, max_timestamp: i64) {
        if let Some(offsets) = &self.offsets {
            while let Some(&(rel, pos)) = offsets.get(self.next_offset_entry) {
                if u64::from(pos) > position {
                    break;
                }
                self.next_offset_entry += 1;
                if u64::from(pos) < position {
                    self.problems.push((
                        "index",
                        format!(
                            "entry {} points at byte {pos}, inside a batch",
                            self.next_offset_entry - 1
                        ),
                    ));
                } else if i64::from(rel) != relative {
                    self.problems.push((
                        "index",
                        format!(
                            "entry {} names relative offset {rel} for the batch at byte {pos}, which starts at {relative}",
                            self.next_offset_entry - 1
                        ),
                    ));
                }
            }
        }
        self.largest_timestamp = self.largest_timestamp.max(max_timestamp);
        if let Some(times) = &self.times {
            while let Some(&(ts, rel)) = times.get(self.next_time_entry) {
                if i64::from(rel) > relative {
                    break;
                }
                self.next_time_entry += 1;
                if i64::from(rel) < relative {
                    self.problems.push((
                        "timeindex",
                        format!(
                            "entry {} names relative offset {rel}, where no batch starts",
                            self.next_time_entry - 1
                        ),
                    ));
                } else if ts != max_timestamp || ts != self.largest_timestamp {
                    self.problems.push((
                        "timeindex",
                        format!(
                            "entry {} says timestamp {ts} for relative offset {rel}, whose batch's largest timestamp is {max_timestamp} (largest so far {})",
                            self.next_time_entry - 1,
                            self.largest_timestamp
                        ),
                    ));
                }
            }
        }
    }

    fn finish(mut self, dir: &Path, base: i64, report: &mut PartitionReport) {
        if let Some(offsets) = &self.offsets {
            if self.next_offset_entry < offsets.len() {
                self.problems.push((
                    "index",
                    format!(
                        "{} entries point past the last batch",
                        offsets.len() - self.next_offset_entry
                    ),
                ));
            }
        }
        if let Some(times) = &self.times {
            if self.next_time_entry < times.len() {
                self.problems.push((
                    "timeindex",
                    format!(
                        "{} entries point past the last batch",
                        times.len() - self.next_time_entry
                    ),
                ));
            }
            let last = times.last().map_or(-1, |&(ts, _)| ts);
            if last != self.largest_timestamp {
                self.problems.push((
                    "timeindex",
                    format!(
                        "its last entry says {last}, but the segment's largest timestamp is {}",
                        self.largest_timestamp
                    ),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (ext, problem) in self.problems {
            // One line per file: the first problem says enough (rebuilt at the next start).
            if seen.insert(ext) {
                report.files.push(FileProblem {
                    file: dir.join(file_name(base, ext)),
                    problem: format!("damaged index: {problem}"),
                });
            }
        }
    }
}

/// The leader-epoch checkpoint's entries, matched against the batches they name (as the open
/// of a log checks them).
struct EpochCheck {
    /// Entry start offset → (epoch the entry says, epoch and base of the batch holding it).
    wanted: BTreeMap<i64, (i32, Option<(i32, i64)>)>,
    last_epoch: Option<i32>,
}

impl EpochCheck {
    fn load(dir: &Path, report: &mut PartitionReport) -> EpochCheck {
        let mut check = EpochCheck {
            wanted: BTreeMap::new(),
            last_epoch: None,
        };
        match LeaderEpochCache::load(dir) {
            Ok(Some(cache)) => {
                for e in cache.entries() {
                    check.wanted.insert(e.start_offset.0, (e.epoch.0, None));
                }
            }
            Ok(None) => {}
            Err(e) => report.files.push(FileProblem {
                file: dir.join(CHECKPOINT_FILE),
                problem: format!("damaged checkpoint: {e}"),
            }),
        }
        check
    }

    fn observe(&mut self, base: i64, last: i64, epoch: i32) {
        for (_, (_, holder)) in self.wanted.range_mut(base..=last) {
            *holder = Some((epoch, base));
        }
        self.last_epoch = Some(epoch);
    }

    fn finish(self, dir: &Path, log_start: i64, end: i64, report: &mut PartitionReport) {
        let mut latest = None;
        for (&start, &(epoch, holder)) in self.wanted.range(..end) {
            latest = Some(epoch);
            if start < log_start {
                continue;
            }
            let matches = holder.is_some_and(|(e, base)| {
                e == epoch && (base == start || (start == log_start && base < start))
            });
            if !matches {
                report.files.push(FileProblem {
                    file: dir.join(CHECKPOINT_FILE),
                    problem: format!(
                        "epoch {epoch} does not start at offset {start} in the log (the checkpoint is rebuilt from the batches at the next start)"
                    ),
                });
                return;
            }
        }
        if let (Some(last), Some(latest)) = (self.last_epoch.filter(|&e| e >= 0), latest) {
            if last != latest {
                report.files.push(FileProblem {
                    file: dir.join(CHECKPOINT_FILE),
                    problem: format!("the newest batch has epoch {last} but the checkpoint's latest epoch is {latest}"),
                });
            }
        }
    }
}
