//! Patients, devices and assignments in the embedded store.
//!
//! Registry writes use their own connection and `BEGIN IMMEDIATE` transactions; they take turns
//! with the ingest writer through SQLite's busy timeout. They are rare and small.

use async_trait::async_trait;
use galen_model::{
    Assignment, AssignmentId, Device, DeviceId, DeviceKind, DeviceStatus, HumanName, Identifier,
    NewAssignment, NewDevice, NewPatient, Patient, PatientId, Sex, Timestamp,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};

use super::{Shared, SqliteStore};
use crate::RegistryStore;
use crate::error::{Error, Result};
use crate::types::{DeviceCredential, StoredSubscription};

const PATIENT_COLUMNS: &str =
    "id, identifier_system, identifier_value, family, given, birth_date, sex, ward, bed";
const DEVICE_COLUMNS: &str = "id, serial, manufacturer, model, kind, status";
const ASSIGNMENT_COLUMNS: &str = "id, device_id, patient_id, start_ts, end_ts";
const CREDENTIAL_COLUMNS: &str = "id, device_id, secret_sha256, created, revoked";

fn corrupt(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, what.to_owned(), rusqlite::types::Type::Text)
}

fn patient_from_row(row: &Row<'_>) -> rusqlite::Result<Patient> {
    let birth_date: String = row.get(5)?;
    let sex: String = row.get(6)?;
    Ok(Patient {
        id: PatientId(row.get(0)?),
        details: NewPatient {
            identifier: Identifier {
                system: row.get(1)?,
                value: row.get(2)?,
            },
            name: HumanName {
                family: row.get(3)?,
                given: row.get(4)?,
            },
            birth_date: NewPatient::parse_birth_date(&birth_date)
                .map_err(|_| corrupt("birth_date"))?,
            sex: Sex::parse(&sex).map_err(|_| corrupt("sex"))?,
            ward: row.get(7)?,
            bed: row.get(8)?,
        },
    })
}

fn device_from_row(row: &Row<'_>) -> rusqlite::Result<Device> {
    let kind: String = row.get(4)?;
    let status: String = row.get(5)?;
    Ok(Device {
        id: DeviceId(row.get(0)?),
        details: NewDevice {
            serial: row.get(1)?,
            manufacturer: row.get(2)?,
            model: row.get(3)?,
            kind: DeviceKind::parse(&kind).map_err(|_| corrupt("kind"))?,
            status: DeviceStatus::parse(&status).map_err(|_| corrupt("status"))?,
        },
    })
}

fn assignment_from_row(row: &Row<'_>) -> rusqlite::Result<Assignment> {
    Ok(Assignment {
        id: AssignmentId(row.get(0)?),
        details: NewAssignment {
            device: DeviceId(row.get(1)?),
            patient: PatientId(row.get(2)?),
            start: Timestamp::from_micros(row.get(3)?),
            end: row.get::<_, Option<i64>>(4)?.map(Timestamp::from_micros),
        },
    })
}

/// Maps a uniqueness violation to [`Error::Conflict`] with `message`.
fn unique(error: rusqlite::Error, message: &str) -> Error {
    match &error {
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.code == ErrorCode::ConstraintViolation =>
        {
            Error::Conflict(message.to_owned())
        }
        _ => Error::from(error),
    }
}

fn format_date(patient: &NewPatient) -> String {
    let date = patient.birth_date;
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// Column values of a patient, in `PATIENT_COLUMNS` order without the id.
fn patient_values(patient: &NewPatient) -> Vec<SqlValue> {
    vec![
        patient.identifier.system.clone().into(),
        patient.identifier.value.clone().into(),
        patient.name.family.clone().into(),
        patient.name.given.clone().into(),
        format_date(patient).into(),
        patient.sex.code().to_owned().into(),
        patient.ward.clone().into(),
        patient.bed.clone().into(),
    ]
}

/// Column values of a device, in `DEVICE_COLUMNS` order without the id.
fn device_values(device: &NewDevice) -> Vec<SqlValue> {
    vec![
        device.serial.clone().into(),
        device.manufacturer.clone().into(),
        device.model.clone().into(),
        device.kind.code().to_owned().into(),
        device.status.code().to_owned().into(),
    ]
}

/// Runs one insert or update in its own immediate transaction. A uniqueness violation becomes
/// [`Error::Conflict`] with `conflict`. Returns the rows changed and the last inserted row id.
fn write_row(
    connection: &mut Connection,
    sql: &str,
    values: Vec<SqlValue>,
    conflict: &str,
) -> Result<(usize, i64)> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let changed = transaction
        .execute(sql, rusqlite::params_from_iter(values))
        .map_err(|error| unique(error, conflict))?;
    let id = transaction.last_insert_rowid();
    transaction.commit()?;
    Ok((changed, id))
}

const PATIENT_CONFLICT: &str = "a patient with this identifier is already registered";
const DEVICE_CONFLICT: &str = "a device with this serial is already registered";

fn load_patient(connection: &Connection, id: i64) -> Result<Option<Patient>> {
    Ok(connection
        .prepare_cached(&format!(
            "SELECT {PATIENT_COLUMNS} FROM patients WHERE id = ?1"
        ))?
        .query_row([id], patient_from_row)
        .optional()?)
}

fn load_device(connection: &Connection, id: i64) -> Result<Option<Device>> {
    Ok(connection
        .prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"
        ))?
        .query_row([id], device_from_row)
        .optional()?)
}

fn load_assignment(connection: &Connection, id: i64) -> Result<Option<Assignment>> {
    Ok(connection
        .prepare_cached(&format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE id = ?1"
        ))?
        .query_row([id], assignment_from_row)
        .optional()?)
}

impl SqliteStore {
    /// Runs registry work on the registry connection, on the blocking pool.
    pub(super) async fn registry<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.read(move |shared: &Shared| {
            let mut connection = shared
                .registry
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            work(&mut connection)
        })
        .await
    }
}

#[async_trait]
impl RegistryStore for SqliteStore {
    async fn create_patient(&self, patient: NewPatient) -> Result<Patient> {
        self.registry(move |connection| {
            let sql = "INSERT INTO patients (identifier_system, identifier_value, family, given, birth_date, sex, ward, bed)
                       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
            let (_, id) = write_row(connection, sql, patient_values(&patient), PATIENT_CONFLICT)?;
            Ok(Patient { id: PatientId(id), details: patient })
        })
        .await
    }

    async fn update_patient(&self, id: PatientId, patient: NewPatient) -> Result<Patient> {
        self.registry(move |connection| {
            let sql = "UPDATE patients SET identifier_system = ?1, identifier_value = ?2, family = ?3, given = ?4,
                       birth_date = ?5, sex = ?6, ward = ?7, bed = ?8 WHERE id = ?9";
            let mut values = patient_values(&patient);
            values.push(id.0.into());
            match write_row(connection, sql, values, PATIENT_CONFLICT)? {
                (0, _) => Err(Error::NotFound("patient")),
                _ => Ok(Patient { id, details: patient }),
            }
        })
        .await
    }

    async fn patient(&self, id: PatientId) -> Result<Option<Patient>> {
        self.read(move |shared| {
            shared
                .readers
                .with(|connection| load_patient(connection, id.0))
        })
        .await
    }

    async fn patients(&self, ward: Option<String>) -> Result<Vec<Patient>> {
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection.prepare_cached(&format!(
                    "SELECT {PATIENT_COLUMNS} FROM patients WHERE ?1 IS NULL OR ward = ?1 ORDER BY ward, bed, id"
                ))?;
                let rows = statement.query_map([ward], patient_from_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn create_device(&self, device: NewDevice) -> Result<Device> {
        self.registry(move |connection| {
            let sql = "INSERT INTO devices (serial, manufacturer, model, kind, status) VALUES (?1, ?2, ?3, ?4, ?5)";
            let (_, id) = write_row(connection, sql, device_values(&device), DEVICE_CONFLICT)?;
            Ok(Device { id: DeviceId(id), details: device })
        })
        .await
    }

    async fn update_device(&self, id: DeviceId, device: NewDevice) -> Result<Device> {
        self.registry(move |connection| {
            let sql = "UPDATE devices SET serial = ?1, manufacturer = ?2, model = ?3, kind = ?4, status = ?5 WHERE id = ?6";
            let mut values = device_values(&device);
            values.push(id.0.into());
            match write_row(connection, sql, values, DEVICE_CONFLICT)? {
                (0, _) => Err(Error::NotFound("device")),
                _ => Ok(Device { id, details: device }),
            }
        })
        .await
    }

    async fn device(&self, id: DeviceId) -> Result<Option<Device>> {
        self.read(move |shared| {
            shared
                .readers
                .with(|connection| load_device(connection, id.0))
        })
        .await
    }

    async fn devices(&self) -> Result<Vec<Device>> {
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection
                    .prepare_cached(&format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY id"))?;
                let rows = statement.query_map([], device_from_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn create_assignment(&self, assignment: NewAssignment) -> Result<Assignment> {
        assignment
            .validate()
            .map_err(|error| Error::Invalid(error.to_string()))?;
        self.registry(move |connection| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if load_device(&transaction, assignment.device.0)?.is_none() {
                return Err(Error::NotFound("device"));
            }
            if load_patient(&transaction, assignment.patient.0)?.is_none() {
                return Err(Error::NotFound("patient"));
            }
            // Half-open intervals [start, end) overlap when each starts before the other ends.
            let overlapping: Option<i64> = transaction
                .query_row(
                    "SELECT id FROM assignments WHERE device_id = ?1 AND start_ts < ?3 AND (end_ts IS NULL OR end_ts > ?2) LIMIT 1",
                    params![assignment.device.0, assignment.start.micros(), assignment.end.unwrap_or(Timestamp::MAX).micros()],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(existing) = overlapping {
                return Err(Error::Conflict(format!(
                    "the device is already assigned during this interval (assignment {existing})"
                )));
            }
            transaction.execute(
                "INSERT INTO assignments (device_id, patient_id, start_ts, end_ts) VALUES (?1, ?2, ?3, ?4)",
                params![assignment.device.0, assignment.patient.0, assignment.start.micros(), assignment.end.map(Timestamp::micros)],
            )?;
            let id = transaction.last_insert_rowid();
            transaction.commit()?;
            Ok(Assignment { id: AssignmentId(id), details: assignment })
        })
        .await
    }

    async fn end_assignment(&self, id: AssignmentId, end: Timestamp) -> Result<Assignment> {
        self.registry(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut assignment =
                load_assignment(&transaction, id.0)?.ok_or(Error::NotFound("assignment"))?;
            if assignment.details.end.is_some() {
                return Err(Error::Conflict("the assignment has already ended".into()));
            }
            if end <= assignment.details.start {
                return Err(Error::Conflict(
                    "an assignment must end after it starts".into(),
                ));
            }
            transaction.execute(
                "UPDATE assignments SET end_ts = ?2 WHERE id = ?1",
                params![id.0, end.micros()],
            )?;
            transaction.commit()?;
            assignment.details.end = Some(end);
            Ok(assignment)
        })
        .await
    }

    async fn assignments(&self) -> Result<Vec<Assignment>> {
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection.prepare_cached(&format!(
                    "SELECT {ASSIGNMENT_COLUMNS} FROM assignments ORDER BY id"
                ))?;
                let rows = statement.query_map([], assignment_from_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn add_device_credential(
        &self,
        device: DeviceId,
        secret_sha256: [u8; 32],
        created: Timestamp,
    ) -> Result<DeviceCredential> {
        self.registry(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if load_device(&transaction, device.0)?.is_none() {
                return Err(Error::NotFound("device"));
            }
            transaction.execute(
                "INSERT INTO device_credentials (device_id, secret_sha256, created) VALUES (?1, ?2, ?3)",
                params![device.0, secret_sha256.as_slice(), created.micros()],
            )?;
            let id = transaction.last_insert_rowid();
            transaction.commit()?;
            Ok(DeviceCredential { id, device, secret_sha256, created, revoked: None })
        })
        .await
    }

    async fn revoke_device_credential(
        &self,
        device: DeviceId,
        id: i64,
        at: Timestamp,
    ) -> Result<DeviceCredential> {
        self.registry(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut credential = transaction
                .query_row(
                    &format!("SELECT {CREDENTIAL_COLUMNS} FROM device_credentials WHERE id = ?1 AND device_id = ?2"),
                    params![id, device.0],
                    credential_from_row,
                )
                .optional()?
                .ok_or(Error::NotFound("credential"))?;
            if credential.revoked.is_some() {
                return Err(Error::Conflict("the credential is already revoked".into()));
            }
            transaction.execute(
                "UPDATE device_credentials SET revoked = ?2 WHERE id = ?1",
                params![id, at.micros()],
            )?;
            transaction.commit()?;
            credential.revoked = Some(at);
            Ok(credential)
        })
        .await
    }

    async fn create_subscription(&self, body: String, status: String) -> Result<i64> {
        self.registry(move |connection| {
            connection
                .prepare_cached(
                    "INSERT INTO fhir_subscriptions (body, status, events) VALUES (?1, ?2, 0)",
                )?
                .execute(params![body, status])?;
            Ok(connection.last_insert_rowid())
        })
        .await
    }

    async fn update_subscription(
        &self,
        id: i64,
        body: String,
        status: String,
        events: u64,
    ) -> Result<()> {
        let events = i64::try_from(events).map_err(|_| Error::Invalid("event count".into()))?;
        self.registry(move |connection| {
            let changed = connection
                .prepare_cached(
                    "UPDATE fhir_subscriptions SET body = ?2, status = ?3, events = ?4 WHERE id = ?1",
                )?
                .execute(params![id, body, status, events])?;
            if changed == 0 {
                return Err(Error::NotFound("subscription"));
            }
            Ok(())
        })
        .await
    }

    async fn delete_subscription(&self, id: i64) -> Result<bool> {
        self.registry(move |connection| {
            Ok(connection
                .prepare_cached("DELETE FROM fhir_subscriptions WHERE id = ?1")?
                .execute([id])?
                > 0)
        })
        .await
    }

    async fn subscriptions(&self) -> Result<Vec<StoredSubscription>> {
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT id, body, status, events FROM fhir_subscriptions ORDER BY id",
                )?;
                let rows = statement.query_map([], subscription_from_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn device_credentials(&self) -> Result<Vec<DeviceCredential>> {
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection.prepare_cached(&format!(
                    "SELECT {CREDENTIAL_COLUMNS} FROM device_credentials ORDER BY id"
                ))?;
                let rows = statement.query_map([], credential_from_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }
}

fn subscription_from_row(row: &Row<'_>) -> rusqlite::Result<StoredSubscription> {
    Ok(StoredSubscription {
        id: row.get(0)?,
        body: row.get(1)?,
        status: row.get(2)?,
        events: u64::try_from(row.get::<_, i64>(3)?).map_err(|_| corrupt("events"))?,
    })
}

fn credential_from_row(row: &Row<'_>) -> rusqlite::Result<DeviceCredential> {
    let hash: Vec<u8> = row.get(2)?;
    Ok(DeviceCredential {
        id: row.get(0)?,
        device: DeviceId(row.get(1)?),
        secret_sha256: hash.try_into().map_err(|_| corrupt("secret_sha256"))?,
        created: Timestamp::from_micros(row.get(3)?),
        revoked: row.get::<_, Option<i64>>(4)?.map(Timestamp::from_micros),
    })
}
