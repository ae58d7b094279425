//! The audit trail in the embedded store: table `audit_log`, one row per record, `seq` as the
//! row id.
//!
//! **Serialisation.** Every append runs [`append_in`] inside a `BEGIN IMMEDIATE` transaction on
//! the registry connection: the registry mutex orders the appenders of this process, and the
//! immediate transaction holds SQLite's write lock from the moment the head is read until the
//! commit, so even a writer on another connection cannot slip a record in between. The chain
//! therefore never forks. Appends are fsynced (`synchronous = FULL`) like every registry write.
//!
//! **Append-only.** Triggers (see `schema.rs`) refuse `UPDATE`, `DELETE`, and an `INSERT` that
//! does not extend the chain at its head. They guard against mistakes and casual edits, not
//! against someone who can write the file: such a person can drop the triggers. The hash chain,
//! checked by `galen audit verify` through an [`AuditLogReader`], is what detects that.

use std::path::Path;

use async_trait::async_trait;
use galen_model::{PatientId, Timestamp};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};

use super::{DATABASE_FILE, SqliteStore};
use crate::audit::{
    AuditAction, AuditOutcome, AuditQuery, AuditRecord, AuditStore, GENESIS_HASH, StoredAuditRecord,
};
use crate::error::{Error, Result};

/// The schema version that introduced `audit_log`.
const AUDIT_SCHEMA_VERSION: i64 = 6;

const AUDIT_COLUMNS: &str = "seq, format, ts, actor, role, action, resource, patient_id, outcome, source, detail, previous_hash, hash";

/// Rows of a page read by [`AuditLogReader`].
const READER_PAGE: usize = 1000;

/// A stored row that cannot be read as a record, named by its seq (never its content).
fn unreadable(seq: i64, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("audit record {seq}: {what}").into(),
    )
}

fn hash_column(row: &Row<'_>, index: usize, seq: i64, name: &str) -> rusqlite::Result<[u8; 32]> {
    let bytes: Vec<u8> = row.get(index)?;
    bytes
        .try_into()
        .map_err(|_| unreadable(seq, &format!("{name} is not 32 bytes")))
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<StoredAuditRecord> {
    let seq: i64 = row.get(0)?;
    let format: i64 = row.get(1)?;
    let action: String = row.get(5)?;
    let outcome: String = row.get(8)?;
    Ok(StoredAuditRecord {
        seq,
        // A format beyond a byte is as unknown as any other: 255 is never written.
        format: u8::try_from(format).unwrap_or(u8::MAX),
        record: AuditRecord {
            time: Timestamp::from_micros(row.get(2)?),
            actor: row.get(3)?,
            role: row.get(4)?,
            action: AuditAction::parse(&action)
                .ok_or_else(|| unreadable(seq, "unknown action code"))?,
            resource: row.get(6)?,
            patient: row.get::<_, Option<i64>>(7)?.map(PatientId),
            outcome: AuditOutcome::parse(&outcome)
                .ok_or_else(|| unreadable(seq, "unknown outcome code"))?,
            source: row.get(9)?,
            detail: row.get(10)?,
        },
        previous_hash: hash_column(row, 11, seq, "previous_hash")?,
        hash: hash_column(row, 12, seq, "hash")?,
    })
}

/// Read errors of audit rows are corruption, not backend failures.
fn read_error(error: rusqlite::Error) -> Error {
    match error {
        rusqlite::Error::FromSqlConversionFailure(_, _, cause) => Error::Corrupt(cause.to_string()),
        other => Error::from(other),
    }
}

/// The newest record's seq and hash.
fn head(connection: &Connection) -> Result<Option<(i64, [u8; 32])>> {
    connection
        .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| {
            let seq: i64 = row.get(0)?;
            Ok((seq, hash_column(row, 1, seq, "hash")?))
        })
        .optional()
        .map_err(read_error)
}

/// Appends `records` to the chain on `transaction`, which must be a `BEGIN IMMEDIATE` transaction
/// (so that the head read here is still the head at commit). Nothing is committed here: the
/// records become durable with the caller's commit, together with whatever else it wrote.
pub(super) fn append_in(
    transaction: &Connection,
    records: Vec<AuditRecord>,
) -> Result<Vec<StoredAuditRecord>> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    for record in &records {
        record.validate()?;
    }
    let (mut seq, mut previous_hash) = head(transaction)?.unwrap_or((0, GENESIS_HASH));
    let mut insert = transaction.prepare_cached(
        "INSERT INTO audit_log (seq, format, ts, actor, role, action, resource, patient_id, outcome, source, detail, previous_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    let mut stored = Vec::with_capacity(records.len());
    for record in records {
        seq += 1;
        let chained = StoredAuditRecord::chain(seq, previous_hash, record);
        let record = &chained.record;
        insert.execute(params![
            chained.seq,
            chained.format,
            record.time.micros(),
            record.actor,
            record.role,
            record.action.code(),
            record.resource,
            record.patient.map(|patient| patient.0),
            record.outcome.code(),
            record.source,
            record.detail,
            chained.previous_hash.as_slice(),
            chained.hash.as_slice(),
        ])?;
        previous_hash = chained.hash;
        stored.push(chained);
    }
    Ok(stored)
}

/// Runs `work` and appends `records` to the chain in one `BEGIN IMMEDIATE` transaction on
/// `connection`: the write and its audit records commit together, or neither does. Records are
/// validated before anything is written.
pub(super) fn with_records<T>(
    connection: &mut Connection,
    records: Vec<AuditRecord>,
    work: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    for record in &records {
        record.validate()?;
    }
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let value = work(&transaction)?;
    append_in(&transaction, records)?;
    transaction.commit()?;
    Ok(value)
}

/// SQLite takes a signed 64-bit limit.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Runs `query` on `connection`.
fn select(connection: &Connection, query: &AuditQuery) -> Result<Vec<StoredAuditRecord>> {
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    let mut sql = format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > ? AND seq < ? AND ts >= ? AND ts < ?"
    );
    let mut values: Vec<SqlValue> = vec![
        query.after.into(),
        query.before.into(),
        query.from.micros().into(),
        query.to.micros().into(),
    ];
    if let Some(actor) = &query.actor {
        sql.push_str(" AND actor = ?");
        values.push(actor.clone().into());
    }
    if let Some(patient) = query.patient {
        sql.push_str(" AND patient_id = ?");
        values.push(patient.0.into());
    }
    let mut any_of = |column: &str, codes: Vec<&'static str>| {
        if !codes.is_empty() {
            let marks = vec!["?"; codes.len()].join(", ");
            sql.push_str(&format!(" AND {column} IN ({marks})"));
            values.extend(
                codes
                    .into_iter()
                    .map(|code| SqlValue::from(code.to_owned())),
            );
        }
    };
    any_of(
        "action",
        query.actions.iter().map(|action| action.code()).collect(),
    );
    any_of(
        "outcome",
        query
            .outcomes
            .iter()
            .map(|outcome| outcome.code())
            .collect(),
    );
    sql.push_str(if query.newest_first {
        " ORDER BY seq DESC LIMIT ?"
    } else {
        " ORDER BY seq LIMIT ?"
    });
    values.push(sql_limit(query.limit).into());
    let mut statement = connection.prepare_cached(&sql)?;
    let rows = statement.query_map(rusqlite::params_from_iter(values), record_from_row)?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(read_error)
}

#[async_trait]
impl AuditStore for SqliteStore {
    /// Goes through the ingest writer: the records join its next group commit (with whatever
    /// measurements are waiting), so auditing adds no transaction and no fsync of its own under
    /// load. Records are validated first, so one bad record cannot fail a group.
    async fn append_audit(&self, records: Vec<AuditRecord>) -> Result<Vec<StoredAuditRecord>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        for record in &records {
            record.validate()?;
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.commands
            .send(super::writer::Command::Audit { records, reply })
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    async fn audit(&self, query: AuditQuery) -> Result<Vec<StoredAuditRecord>> {
        self.read(move |shared| shared.readers.with(|connection| select(connection, &query)))
            .await
    }

    async fn audit_head(&self) -> Result<Option<(i64, [u8; 32])>> {
        self.read(move |shared| shared.readers.with(head)).await
    }
}

/// Read-only access to the audit trail of a data directory, for `galen audit verify`.
///
/// It opens the database read-only (it never creates, migrates or writes anything, so it can
/// examine a copy as evidence) and can run beside a server using the same directory: records are
/// only ever appended, so reading page after page in `seq` order sees a consistent prefix of the
/// chain.
#[derive(Debug)]
pub struct AuditLogReader {
    connection: Connection,
}

/// What a data directory holds, before reading its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditLogState {
    /// The audit log is there.
    Present,
    /// The database predates the audit log (schema version given): there is no trail to check.
    NotYetCreated(i64),
    /// The schema has an audit log but the table is gone: the trail was removed.
    Missing(i64),
}

impl AuditLogReader {
    /// Opens the database in `data_dir` read-only. [`Error::NotFound`] when there is none.
    pub fn open(data_dir: &Path) -> Result<AuditLogReader> {
        let path = data_dir.join(DATABASE_FILE);
        if !path.is_file() {
            return Err(Error::NotFound("database"));
        }
        let connection = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(AuditLogReader { connection })
    }

    /// Whether the audit log exists, and if not, why.
    pub fn state(&self) -> Result<AuditLogState> {
        let version: i64 = self
            .connection
            .pragma_query_value(None, "user_version", |row| row.get(0))?;
        let tables: i64 = self.connection.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_log'",
            [],
            |row| row.get(0),
        )?;
        Ok(match (tables, version) {
            (1.., _) => AuditLogState::Present,
            (_, version) if version < AUDIT_SCHEMA_VERSION => AuditLogState::NotYetCreated(version),
            (_, version) => AuditLogState::Missing(version),
        })
    }

    /// Up to `limit` records with `seq > after`, in `seq` order, exactly as stored (a
    /// verifier judges them). [`Error::Corrupt`] names the seq of a row that cannot be read as a
    /// record at all.
    ///
    /// No other filter applies (not even on time): a tampered row must not hide from the
    /// verifier behind an odd value. `after: None` starts before the smallest seq.
    pub fn page(&self, after: Option<i64>, limit: usize) -> Result<Vec<StoredAuditRecord>> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE ?1 IS NULL OR seq > ?1 ORDER BY seq LIMIT ?2"
        ))?;
        let rows = statement.query_map(params![after, sql_limit(limit)], record_from_row)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(read_error)
    }

    /// Every record in `seq` order, read a page (1000 rows) at a time and handed to
    /// `visit`, which may stop the walk by returning `false`. Memory stays bounded by one page.
    pub fn for_each(&self, mut visit: impl FnMut(StoredAuditRecord) -> bool) -> Result<()> {
        let mut after = None;
        loop {
            let page = self.page(after, READER_PAGE)?;
            let Some(last) = page.last().map(|stored| stored.seq) else {
                return Ok(());
            };
            for stored in page {
                if !visit(stored) {
                    return Ok(());
                }
            }
            after = Some(last);
        }
    }
}
