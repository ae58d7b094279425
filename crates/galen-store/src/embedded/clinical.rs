//! Clinical entries, scores, alarm transitions and webhook deliveries in the embedded store.
//!
//! Writes go through the registry connection (`BEGIN IMMEDIATE`, fsynced): they are small and far
//! rarer than measurements, because the engine stores a score only when it changed.

use async_trait::async_trait;
use galen_model::{PatientId, Timestamp};
use rusqlite::{Row, TransactionBehavior, params};

use super::SqliteStore;
use super::audit::with_records;
use crate::audit::AuditRecord;
use crate::clinical::{
    AlarmQuery, AlarmRecord, ClinicalEntry, ClinicalStore, DeliveryRecord, FilteredRecord,
    ScoreRecord,
};
use crate::error::Result;

const ALARM_COLUMNS: &str = "seq, alarm, patient_id, ts, rule, transition, priority, state, body";

fn entry_from_row(row: &Row<'_>) -> rusqlite::Result<ClinicalEntry> {
    Ok(ClinicalEntry {
        id: row.get(0)?,
        patient: PatientId(row.get(1)?),
        time: Timestamp::from_micros(row.get(2)?),
        kind: row.get(3)?,
        author: row.get(4)?,
        body: row.get(5)?,
    })
}

fn alarm_from_row(row: &Row<'_>) -> rusqlite::Result<AlarmRecord> {
    Ok(AlarmRecord {
        seq: row.get(0)?,
        alarm: row.get(1)?,
        patient: PatientId(row.get(2)?),
        time: Timestamp::from_micros(row.get(3)?),
        rule: row.get(4)?,
        transition: row.get(5)?,
        priority: row.get(6)?,
        state: row.get(7)?,
        body: row.get(8)?,
    })
}

fn delivery_from_row(row: &Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: row.get(0)?,
        endpoint: row.get(1)?,
        event: row.get(2)?,
        attempt: row.get(3)?,
        time: Timestamp::from_micros(row.get(4)?),
        status: row.get(5)?,
        error: row.get(6)?,
        delivered: row.get(7)?,
    })
}

/// SQLite takes a signed 64-bit limit.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait]
impl ClinicalStore for SqliteStore {
    async fn add_entry(
        &self,
        mut entry: ClinicalEntry,
        audit: Vec<AuditRecord>,
    ) -> Result<ClinicalEntry> {
        self.registry(move |connection| {
            with_records(connection, audit, |transaction| {
                transaction.execute(
                    "INSERT INTO clinical_entries (patient_id, ts, kind, author, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![entry.patient.0, entry.time.micros(), entry.kind, entry.author, entry.body],
                )?;
                entry.id = transaction.last_insert_rowid();
                Ok(entry)
            })
        })
        .await
    }

    async fn entries(
        &self,
        patient: Option<PatientId>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<ClinicalEntry>> {
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT id, patient_id, ts, kind, author, body FROM clinical_entries
                     WHERE ts >= ?1 AND ts < ?2 AND (?3 IS NULL OR patient_id = ?3) ORDER BY ts, id",
                )?;
                let rows = statement.query_map(
                    params![from.micros(), to.micros(), patient.map(|patient| patient.0)],
                    entry_from_row,
                )?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn entries_of_kinds(
        &self,
        kinds: &[&str],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<ClinicalEntry>> {
        let kinds: Vec<String> = kinds.iter().map(|kind| (*kind).to_owned()).collect();
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT id, patient_id, ts, kind, author, body FROM clinical_entries
                     WHERE kind = ?1 AND ts >= ?2 AND ts < ?3",
                )?;
                let mut entries = Vec::new();
                for kind in &kinds {
                    let rows = statement
                        .query_map(params![kind, from.micros(), to.micros()], entry_from_row)?;
                    for row in rows {
                        entries.push(row?);
                    }
                }
                entries.sort_by_key(|entry| (entry.time, entry.id));
                Ok(entries)
            })
        })
        .await
    }

    async fn append_outputs(
        &self,
        scores: Vec<ScoreRecord>,
        mut alarms: Vec<AlarmRecord>,
    ) -> Result<Vec<AlarmRecord>> {
        if scores.is_empty() && alarms.is_empty() {
            return Ok(alarms);
        }
        self.registry(move |connection| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut insert_score = transaction.prepare_cached(
                    "INSERT INTO scores (patient_id, ts, score_table, total, band, complete, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for score in &scores {
                    insert_score.execute(params![
                        score.patient.0,
                        score.time.micros(),
                        score.table,
                        score.total,
                        score.band,
                        score.complete,
                        score.body
                    ])?;
                }
                let mut insert_alarm = transaction.prepare_cached(
                    "INSERT INTO alarm_log (alarm, patient_id, ts, rule, transition, priority, state, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for alarm in &mut alarms {
                    insert_alarm.execute(params![
                        alarm.alarm,
                        alarm.patient.0,
                        alarm.time.micros(),
                        alarm.rule,
                        alarm.transition,
                        alarm.priority,
                        alarm.state,
                        alarm.body
                    ])?;
                    alarm.seq = transaction.last_insert_rowid();
                }
            }
            transaction.commit()?;
            Ok(alarms)
        })
        .await
    }

    async fn append_filtered(&self, filtered: Vec<FilteredRecord>) -> Result<()> {
        if filtered.is_empty() {
            return Ok(());
        }
        self.registry(move |connection| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut insert = transaction.prepare_cached(
                    "INSERT INTO filtered_conditions (patient_id, rule, onset, ended) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for record in &filtered {
                    insert.execute(params![
                        record.patient.0,
                        record.rule,
                        record.onset.micros(),
                        record.ended.micros()
                    ])?;
                }
            }
            transaction.commit()?;
            Ok(())
        })
        .await
    }

    async fn filtered_counts(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(PatientId, String, u64)>> {
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT patient_id, rule, COUNT(*) FROM filtered_conditions
                     WHERE ended >= ?1 AND ended < ?2 GROUP BY patient_id, rule ORDER BY patient_id, rule",
                )?;
                let rows = statement.query_map(params![from.micros(), to.micros()], |row| {
                    Ok((
                        PatientId(row.get(0)?),
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?.max(0) as u64,
                    ))
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn scores(
        &self,
        patient: PatientId,
        table: &str,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<ScoreRecord>> {
        let table = table.to_owned();
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT patient_id, ts, score_table, total, band, complete, body FROM scores
                     WHERE patient_id = ?1 AND score_table = ?2 AND ts >= ?3 AND ts < ?4
                     ORDER BY ts DESC, id DESC LIMIT ?5",
                )?;
                let rows = statement.query_map(
                    params![
                        patient.0,
                        table,
                        from.micros(),
                        to.micros(),
                        sql_limit(limit)
                    ],
                    |row| {
                        Ok(ScoreRecord {
                            patient: PatientId(row.get(0)?),
                            time: Timestamp::from_micros(row.get(1)?),
                            table: row.get(2)?,
                            total: row.get(3)?,
                            band: row.get(4)?,
                            complete: row.get(5)?,
                            body: row.get(6)?,
                        })
                    },
                )?;
                let mut scores = rows.collect::<rusqlite::Result<Vec<_>>>()?;
                scores.reverse();
                Ok(scores)
            })
        })
        .await
    }

    async fn alarm_records(&self, query: AlarmQuery) -> Result<Vec<AlarmRecord>> {
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection.prepare_cached(&format!(
                    "SELECT {ALARM_COLUMNS} FROM alarm_log
                     WHERE seq > ?1 AND ts >= ?2 AND ts < ?3 AND (?4 IS NULL OR patient_id = ?4)
                     ORDER BY seq LIMIT ?5"
                ))?;
                let rows = statement.query_map(
                    params![
                        query.after,
                        query.from.micros(),
                        query.to.micros(),
                        query.patient.map(|patient| patient.0),
                        sql_limit(query.limit)
                    ],
                    alarm_from_row,
                )?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn open_alarms(&self) -> Result<Vec<AlarmRecord>> {
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection.prepare_cached(&format!(
                    "SELECT {ALARM_COLUMNS} FROM alarm_log
                     WHERE seq IN (SELECT MAX(seq) FROM alarm_log GROUP BY alarm) AND state != 'resolved'
                     ORDER BY seq"
                ))?;
                let rows = statement.query_map([], alarm_from_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn record_delivery(&self, mut delivery: DeliveryRecord) -> Result<DeliveryRecord> {
        self.registry(move |connection| {
            connection.execute(
                "INSERT INTO webhook_deliveries (endpoint, event, attempt, ts, status, error, delivered)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    delivery.endpoint,
                    delivery.event,
                    delivery.attempt,
                    delivery.time.micros(),
                    delivery.status,
                    delivery.error,
                    delivery.delivered
                ],
            )?;
            delivery.id = connection.last_insert_rowid();
            Ok(delivery)
        })
        .await
    }

    async fn deliveries(&self, after: i64, limit: usize) -> Result<Vec<DeliveryRecord>> {
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT id, endpoint, event, attempt, ts, status, error, delivered
                     FROM webhook_deliveries WHERE id > ?1 ORDER BY id LIMIT ?2",
                )?;
                let rows =
                    statement.query_map(params![after, sql_limit(limit)], delivery_from_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }
}
