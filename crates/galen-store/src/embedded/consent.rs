//! Consents in the embedded store: table `consents`, written on the registry connection in
//! `BEGIN IMMEDIATE` transactions that also append the write's audit records (see
//! [`super::audit::append_in`]).

use async_trait::async_trait;
use galen_model::{
    Consent, ConsentId, ConsentProvision, ConsentPurpose, ConsentStatus, NewConsent, PatientId,
    Recipient, Timestamp,
};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::SqliteStore;
use crate::consent::{ConsentAudit, ConsentStore, StoredConsent};
use crate::error::{Error, Result};

const CONSENT_COLUMNS: &str = "id, patient_id, status, purpose, provision, recipients, period_start, period_end, dated, recorded, recorded_by, document";

/// Recipients are stored joined by the ASCII unit separator, which a recipient cannot contain
/// ([`Recipient::parse`] refuses control characters).
const RECIPIENT_SEPARATOR: char = '\u{1f}';

fn unreadable(column: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, column.to_owned(), rusqlite::types::Type::Text)
}

fn join_recipients(recipients: &[Recipient]) -> String {
    recipients
        .iter()
        .map(Recipient::to_string)
        .collect::<Vec<_>>()
        .join(&RECIPIENT_SEPARATOR.to_string())
}

fn consent_from_row(row: &Row<'_>) -> rusqlite::Result<StoredConsent> {
    let status: String = row.get(2)?;
    let purpose: String = row.get(3)?;
    let provision: String = row.get(4)?;
    let recipients: String = row.get(5)?;
    let recipients = if recipients.is_empty() {
        Vec::new()
    } else {
        recipients
            .split(RECIPIENT_SEPARATOR)
            .map(|text| Recipient::parse(text).map_err(|_| unreadable("recipients")))
            .collect::<rusqlite::Result<Vec<_>>>()?
    };
    Ok(StoredConsent {
        consent: Consent {
            id: ConsentId(row.get(0)?),
            details: NewConsent {
                patient: PatientId(row.get(1)?),
                status: ConsentStatus::parse(&status).map_err(|_| unreadable("status"))?,
                purpose: ConsentPurpose::parse(&purpose).map_err(|_| unreadable("purpose"))?,
                provision: ConsentProvision::parse(&provision)
                    .map_err(|_| unreadable("provision"))?,
                recipients,
                start: row.get::<_, Option<i64>>(6)?.map(Timestamp::from_micros),
                end: row.get::<_, Option<i64>>(7)?.map(Timestamp::from_micros),
                dated: Timestamp::from_micros(row.get(8)?),
                recorded: Timestamp::from_micros(row.get(9)?),
                recorded_by: row.get(10)?,
            },
        },
        document: row.get(11)?,
    })
}

fn load(connection: &Connection, id: ConsentId) -> Result<Option<StoredConsent>> {
    Ok(connection
        .prepare_cached(&format!(
            "SELECT {CONSENT_COLUMNS} FROM consents WHERE id = ?1"
        ))?
        .query_row([id.0], consent_from_row)
        .optional()?)
}

fn check(connection: &Connection, consent: &NewConsent) -> Result<()> {
    consent
        .validate()
        .map_err(|error| Error::Invalid(error.to_string()))?;
    let registered: Option<i64> = connection
        .prepare_cached("SELECT id FROM patients WHERE id = ?1")?
        .query_row([consent.patient.0], |row| row.get(0))
        .optional()?;
    registered.map(|_| ()).ok_or(Error::NotFound("patient"))
}

/// Writes one consent (insert when `id` is `None`) with its audit records, in one immediate
/// transaction.
fn write(
    connection: &mut Connection,
    id: Option<ConsentId>,
    consent: NewConsent,
    document: String,
    audit: ConsentAudit,
) -> Result<StoredConsent> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    check(&transaction, &consent)?;
    let recipients = join_recipients(&consent.recipients);
    let (start, end) = (
        consent.start.map(Timestamp::micros),
        consent.end.map(Timestamp::micros),
    );
    let columns = params![
        consent.patient.0,
        consent.status.code(),
        consent.purpose.code(),
        consent.provision.code(),
        recipients,
        start,
        end,
        consent.dated.micros(),
        consent.recorded.micros(),
        consent.recorded_by,
        document,
        id.map(|id| id.0),
    ];
    let id = match id {
        None => {
            transaction
                .prepare_cached(
                    "INSERT INTO consents (patient_id, status, purpose, provision, recipients, period_start, period_end, dated, recorded, recorded_by, document)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?
                .execute(&columns[..11])?;
            ConsentId(transaction.last_insert_rowid())
        }
        Some(id) => {
            let changed = transaction
                .prepare_cached(
                    "UPDATE consents SET patient_id = ?1, status = ?2, purpose = ?3, provision = ?4, recipients = ?5,
                     period_start = ?6, period_end = ?7, dated = ?8, recorded = ?9, recorded_by = ?10, document = ?11
                     WHERE id = ?12",
                )?
                .execute(columns)?;
            if changed == 0 {
                return Err(Error::NotFound("consent"));
            }
            id
        }
    };
    let stored = load(&transaction, id)?.ok_or(Error::NotFound("consent"))?;
    super::audit::append_in(&transaction, audit.build(&stored.consent))?;
    transaction.commit()?;
    Ok(stored)
}

#[async_trait]
impl ConsentStore for SqliteStore {
    async fn create_consent(
        &self,
        consent: NewConsent,
        document: String,
        audit: ConsentAudit,
    ) -> Result<StoredConsent> {
        self.registry(move |connection| write(connection, None, consent, document, audit))
            .await
    }

    async fn update_consent(
        &self,
        id: ConsentId,
        consent: NewConsent,
        document: String,
        audit: ConsentAudit,
    ) -> Result<StoredConsent> {
        self.registry(move |connection| write(connection, Some(id), consent, document, audit))
            .await
    }

    async fn consent(&self, id: ConsentId) -> Result<Option<StoredConsent>> {
        self.read(move |shared| shared.readers.with(|connection| load(connection, id)))
            .await
    }

    async fn consents(&self, patient: Option<PatientId>) -> Result<Vec<StoredConsent>> {
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection.prepare_cached(&format!(
                    "SELECT {CONSENT_COLUMNS} FROM consents WHERE ?1 IS NULL OR patient_id = ?1 ORDER BY id"
                ))?;
                let rows = statement.query_map([patient.map(|patient| patient.0)], consent_from_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }
}
