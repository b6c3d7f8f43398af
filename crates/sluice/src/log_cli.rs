//! `sluice log verify` and `sluice log repair`: tools for a partition's files on disk, not a
//! broker's API. `verify` checks every batch, index and checkpoint of a partition directory or a
//! whole data directory (read-only, without the data directory's lock, so also beside a running
//! broker) and exits non-zero when anything is damaged. `repair --truncate-at` is the deliberate
//! cut a person makes knowingly: it refuses to run while a broker holds the data directory,
//! prints exactly what it would remove, does nothing without `--execute`, and moves what it
//! removes into a backup directory instead of deleting it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::Serialize;
use sluice_log::repair::{execute, plan_truncation, RepairPlan};
use sluice_log::verify::{partition_dirs, verify_partition, FileProblem, PartitionReport};
use sluice_log::{Damage, DirLock, Offset, OpenError};

use crate::cli_common::{json, Output};

#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    #[command(subcommand)]
    command: LogCommand,
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Check every batch, index and checkpoint of a partition directory or a data directory;
    /// exits non-zero when anything is damaged. Read-only; also runs beside a live broker.
    Verify(VerifyArgs),
    /// Cut a stopped broker's partition log at an offset, keeping what goes in a backup
    /// directory (a dry run without --execute).
    Repair(RepairArgs),
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// A partition directory (`<data-dir>/<topic>-<partition>`) or a data directory.
    path: PathBuf,
    /// Output format: text, or JSON for scripts.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Args)]
struct RepairArgs {
    /// The partition directory (`<data-dir>/<topic>-<partition>`) of a stopped broker.
    path: PathBuf,
    /// Remove every record at and above this offset (a batch holding it goes whole).
    #[arg(long, value_name = "OFFSET")]
    truncate_at: i64,
    /// Where to move what is removed (default `<data-dir>/.repair-backup/<topic>-<partition>-<unix ms>`).
    #[arg(long, value_name = "DIR")]
    backup_dir: Option<PathBuf>,
    /// Carry the plan out; without it, only print it.
    #[arg(long)]
    execute: bool,
    /// Output format: text, or JSON for scripts.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub(crate) fn run(args: LogArgs) -> anyhow::Result<()> {
    match args.command {
        LogCommand::Verify(args) => verify(args),
        LogCommand::Repair(args) => repair(args),
    }
}

/// The data directory holding `path`: `path` itself, or its parent for a partition directory.
fn data_dir_of(path: &Path, partitions: &[PathBuf]) -> PathBuf {
    if partitions.len() == 1 && partitions[0] == path {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        path.to_path_buf()
    }
}

#[derive(Debug, Serialize)]
struct VerifyOutput {
    data_dir: PathBuf,
    /// A broker held the data directory's lock: the newest segments may have changed while
    /// they were read.
    broker_running: bool,
    damaged_partitions: usize,
    partitions: Vec<PartitionOutput>,
}

#[derive(Debug, Serialize)]
struct PartitionOutput {
    dir: PathBuf,
    damaged: bool,
    segments: usize,
    batches: u64,
    records: u64,
    first_offset: i64,
    end_offset: i64,
    damage: Vec<DamageOutput>,
    /// Unflushed bytes an unclean stop left at the end, truncated by the next start.
    torn_tail: Option<DamageOutput>,
    files: Vec<FileOutput>,
    notes: Vec<String>,
    /// The command that cuts the log below its first damage.
    repair: Option<String>,
}

#[derive(Debug, Serialize)]
struct DamageOutput {
    file: PathBuf,
    position: u64,
    length: u64,
    kind: &'static str,
    first_offset: i64,
    /// First offset of the valid data after the damage, when some was found in the file.
    resume_offset: Option<i64>,
    detail: String,
}

#[derive(Debug, Serialize)]
struct FileOutput {
    file: PathBuf,
    problem: String,
}

impl From<&Damage> for DamageOutput {
    fn from(d: &Damage) -> Self {
        DamageOutput {
            file: d.file.clone(),
            position: d.position,
            length: d.length,
            kind: d.kind.name(),
            first_offset: d.first_offset.0,
            resume_offset: d.resume_offset.map(|o| o.0),
            detail: d.detail.clone(),
        }
    }
}

impl From<&FileProblem> for FileOutput {
    fn from(f: &FileProblem) -> Self {
        FileOutput {
            file: f.file.clone(),
            problem: f.problem.clone(),
        }
    }
}

impl From<PartitionReport> for PartitionOutput {
    fn from(r: PartitionReport) -> Self {
        let repair = r.first_damaged_offset().map(|offset| {
            format!(
                "sluice log repair {} --truncate-at {}",
                r.dir.display(),
                offset.0
            )
        });
        PartitionOutput {
            damaged: r.is_damaged(),
            segments: r.segments,
            batches: r.batches,
            records: r.records,
            first_offset: r.first_offset.0,
            end_offset: r.end_offset.0,
            damage: r.damage.iter().map(DamageOutput::from).collect(),
            torn_tail: r.torn_tail.as_ref().map(DamageOutput::from),
            files: r.files.iter().map(FileOutput::from).collect(),
            notes: r.notes,
            repair,
            dir: r.dir,
        }
    }
}

fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let partitions = partition_dirs(&args.path)
        .with_context(|| format!("cannot read {}", args.path.display()))?;
    if partitions.is_empty() {
        bail!(
            "{} holds no partition: name a data directory or a partition directory (<data-dir>/<topic>-<partition>)",
            args.path.display()
        );
    }
    let data_dir = data_dir_of(&args.path, &partitions);
    let broker_running = DirLock::is_held(&data_dir);
    let mut reports = Vec::with_capacity(partitions.len());
    for dir in &partitions {
        let report =
            verify_partition(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        reports.push(PartitionOutput::from(report));
    }
    let damaged = reports.iter().filter(|r| r.damaged).count();
    let out = VerifyOutput {
        data_dir,
        broker_running,
        damaged_partitions: damaged,
        partitions: reports,
    };
    match args.output {
        Output::Json => emit(&json(&out)?)?,
        Output::Text => emit(&verify_text(&out))?,
    }
    if damaged > 0 {
        bail!(
            "{damaged} of {} partitions have damaged data or files",
            out.partitions.len()
        );
    }
    Ok(())
}

fn verify_text(out: &VerifyOutput) -> String {
    let mut text = String::new();
    if out.broker_running {
        let _ = writeln!(
            text,
            "note: a broker is running on {}; its newest segments may change while they are read",
            out.data_dir.display()
        );
    }
    for p in &out.partitions {
        let name = p.dir.file_name().map_or_else(
            || p.dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let _ = writeln!(
            text,
            "{name}: {} segments, {} batches, {} records, offsets {}..{}: {}",
            p.segments,
            p.batches,
            p.records,
            p.first_offset,
            p.end_offset,
            if p.damaged { "DAMAGED" } else { "ok" }
        );
        let line = |d: &DamageOutput| {
            let range = match d.resume_offset {
                Some(resume) if resume > d.first_offset => {
                    format!("{}..={}", d.first_offset, resume - 1)
                }
                _ => format!("{}..", d.first_offset),
            };
            format!(
                "{} at byte {} ({} bytes, {}), offsets {range}: {}",
                d.file.display(),
                d.position,
                d.length,
                d.kind,
                d.detail
            )
        };
        for d in &p.damage {
            let _ = writeln!(text, "  damaged batch: {}", line(d));
        }
        for f in &p.files {
            let _ = writeln!(text, "  damaged file:  {}: {}", f.file.display(), f.problem);
        }
        if let Some(d) = &p.torn_tail {
            let _ = writeln!(
                text,
                "  torn tail (not damage; truncated at the next start): {}",
                line(d)
            );
        }
        for note in &p.notes {
            let _ = writeln!(text, "  note: {note}");
        }
        if let Some(repair) = &p.repair {
            let _ = writeln!(
                text,
                "  to cut the log below its damage (on a stopped broker): {repair}"
            );
        }
    }
    text
}

#[derive(Debug, Serialize)]
struct RepairOutput {
    dir: PathBuf,
    requested: i64,
    new_end: i64,
    old_end: i64,
    cut_segment: PathBuf,
    cut_position: u64,
    moved_files: Vec<PathBuf>,
    batches: u64,
    records: u64,
    damaged_bytes: u64,
    backup_dir: PathBuf,
    executed: bool,
}

fn repair(args: RepairArgs) -> anyhow::Result<()> {
    let is_partition = partition_dirs(&args.path)
        .with_context(|| format!("cannot read {}", args.path.display()))?
        == [args.path.clone()];
    if !is_partition {
        bail!(
            "{} is not a partition directory: name one (<data-dir>/<topic>-<partition>); repair changes one partition at a time",
            args.path.display()
        );
    }
    let data_dir = args.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    // Held until the repair is done: no broker may start on the files meanwhile.
    let _lock = match DirLock::acquire(&data_dir) {
        Ok(lock) => lock,
        Err(OpenError::Locked { path }) => bail!(
            "a broker is running on {} (it holds {}/.lock): stop it first; sluice log repair changes only a stopped broker's files",
            path.display(),
            path.display()
        ),
        Err(e) => return Err(e.into()),
    };
    let plan = plan_truncation(&args.path, Offset(args.truncate_at))?;
    let backup_dir = args.backup_dir.clone().unwrap_or_else(|| {
        let name = args
            .path
            .file_name()
            .map_or_else(|| "partition".into(), |n| n.to_string_lossy().into_owned());
        data_dir
            .join(".repair-backup")
            .join(format!("{name}-{}", sluice_broker::broker::now().0))
    });
    if args.execute {
        execute(&plan, &backup_dir).with_context(|| {
            format!(
                "the repair of {} failed part-way; what it moved is in {}",
                args.path.display(),
                backup_dir.display()
            )
        })?;
    }
    let out = repair_output(&plan, backup_dir, args.execute);
    match args.output {
        Output::Json => emit(&json(&out)?)?,
        Output::Text => {
            let outcome = if args.execute {
                format!(
                    "Done: the removed data is in {}. The log now ends at offset {}; start the broker (in a cluster the replica fetches the rest from its leader).\n",
                    out.backup_dir.display(),
                    out.new_end
                )
            } else {
                format!(
                    "Dry run: nothing changed. Add --execute to move these into {}.\n",
                    out.backup_dir.display()
                )
            };
            emit(&(plan.describe() + &outcome))?;
        }
    }
    Ok(())
}

/// Writes `text` to stdout; a reader that went away (`| head`) ends the output quietly instead
/// of a panic.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

fn repair_output(plan: &RepairPlan, backup_dir: PathBuf, executed: bool) -> RepairOutput {
    RepairOutput {
        dir: plan.dir.clone(),
        requested: plan.requested.0,
        new_end: plan.new_end.0,
        old_end: plan.old_end.0,
        cut_segment: plan.cut_segment.clone(),
        cut_position: plan.cut_position,
        moved_files: plan.moved_files.clone(),
        batches: plan.batches,
        records: plan.records,
        damaged_bytes: plan.damaged_bytes,
        backup_dir,
        executed,
    }
}
