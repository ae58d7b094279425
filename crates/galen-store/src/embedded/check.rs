//! `galen check`: reads a whole data directory and reports what fails its integrity checks.
//!
//! Three layers: SQLite's own structure (`PRAGMA quick_check`: pages, b-trees, indexes), every
//! measurement chunk and every write-ahead-log record (decoded, so each one's CRC-32 is verified;
//! see `codec`), and every audit record's hash link (`galen audit verify` checks the chain in
//! full). It opens the database read-only, so it can examine a copy, and can run beside a server.
//! Damage is named by row ids and series ids only, never by content.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::DATABASE_FILE;
use crate::codec::{decode_chunk, decode_wal};
use crate::error::{Error, Result};

/// What [`check_data_dir`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegrityReport {
    /// SQLite's complaints (empty when its structure is sound).
    pub sqlite: Vec<String>,
    /// Measurement chunks read.
    pub chunks: u64,
    /// Chunks that fail their checksum or cannot be decoded: (row id, series id, what).
    pub damaged_chunks: Vec<(i64, i64, String)>,
    /// Write-ahead-log records read.
    pub log_records: u64,
    /// Write-ahead-log records that fail: (row id, what).
    pub damaged_log_records: Vec<(i64, String)>,
}

impl IntegrityReport {
    /// Whether nothing was found wrong.
    pub fn is_sound(&self) -> bool {
        self.sqlite.is_empty()
            && self.damaged_chunks.is_empty()
            && self.damaged_log_records.is_empty()
    }
}

/// Checks the database in `data_dir`, read-only. [`Error::NotFound`] when there is none.
pub fn check_data_dir(data_dir: &Path) -> Result<IntegrityReport> {
    let path = data_dir.join(DATABASE_FILE);
    if !path.is_file() {
        return Err(Error::NotFound("database"));
    }
    let connection = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    let mut report = IntegrityReport::default();
    {
        let mut statement = connection.prepare("PRAGMA quick_check")?;
        let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
        for row in rows {
            let line = row?;
            if line != "ok" {
                report.sqlite.push(line);
            }
        }
    }
    {
        let mut statement =
            connection.prepare("SELECT id, series_id, data FROM chunks ORDER BY id")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            report.chunks += 1;
            let id: i64 = row.get(0)?;
            let series: i64 = row.get(1)?;
            let problem = match row.get_ref(2)?.as_blob() {
                Ok(data) => decode_chunk(data).err().map(|error| error.to_string()),
                Err(_) => Some("the chunk is not a blob".to_owned()),
            };
            if let Some(problem) = problem {
                report.damaged_chunks.push((id, series, problem));
            }
        }
    }
    {
        let mut statement = connection.prepare("SELECT seq, data FROM wal ORDER BY seq")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            report.log_records += 1;
            let seq: i64 = row.get(0)?;
            let problem = match row.get_ref(1)?.as_blob() {
                Ok(data) => decode_wal(data).err().map(|error| error.to_string()),
                Err(_) => Some("the record is not a blob".to_owned()),
            };
            if let Some(problem) = problem {
                report.damaged_log_records.push((seq, problem));
            }
        }
    }
    Ok(report)
}
