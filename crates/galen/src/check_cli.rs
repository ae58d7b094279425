//! `galen check`: the integrity of a data directory. SQLite's structure, every measurement chunk's
//! and write-ahead-log record's CRC-32, read-only (`galen_store::embedded::check_data_dir`).
//! Prints `ok: ...` or each damaged record by id, and exits non-zero on damage. The audit trail's
//! hash chain has its own command, `galen audit verify`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

/// Flags of `galen check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Data directory to check (read-only; a copy or the live one).
    #[arg(long, env = "GALEN_DATA_DIR", default_value = crate::config::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

pub(crate) fn run(args: CheckArgs) -> Result<()> {
    let report = galen_store::embedded::check_data_dir(&args.data_dir)
        .with_context(|| format!("checking {}", args.data_dir.display()))?;
    if report.is_sound() {
        println!(
            "ok: database structure sound, {} measurement chunks and {} log records pass their checksums",
            report.chunks, report.log_records
        );
        return Ok(());
    }
    for problem in &report.sqlite {
        println!("damaged: database structure: {problem}");
    }
    for (id, series, problem) in &report.damaged_chunks {
        println!("damaged: chunk {id} (series {series}): {problem}");
    }
    for (seq, problem) in &report.damaged_log_records {
        println!("damaged: log record {seq}: {problem}");
    }
    bail!(
        "{} of {} chunks, {} of {} log records and {} structure problems found; restore the damaged data from a backup",
        report.damaged_chunks.len(),
        report.chunks,
        report.damaged_log_records.len(),
        report.log_records,
        report.sqlite.len()
    )
}
