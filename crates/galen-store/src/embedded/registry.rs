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

use super::audit::with_records;
use super::{Shared, SqliteStore};
use crate::crypto::{self, FieldCipher};
use crate::error::{Error, Result};
use crate::types::{
    DeviceCredential, DocumentOwner, Registered, RegistryChange, RegistryDocument, RegistryWrite,
    StoredSubscription,
};
use crate::{AuditRecord, RegistryAudit, RegistryStore};

const PATIENT_COLUMNS: &str = "id, identifier_system, identifier_value, family, given, birth_date, sex, ward, bed, identifier_sealed";
const DEVICE_COLUMNS: &str = "id, serial, manufacturer, model, kind, status";
const ASSIGNMENT_COLUMNS: &str = "id, device_id, patient_id, start_ts, end_ts";
const CREDENTIAL_COLUMNS: &str = "id, device_id, secret_sha256, created, revoked";

fn corrupt(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, what.to_owned(), rusqlite::types::Type::Text)
}

/// A patient row as stored: the identifying columns possibly sealed (see [`crate::crypto`]).
struct RawPatient {
    id: i64,
    system: String,
    value: String,
    family: String,
    given: String,
    birth_date: String,
    sex: String,
    ward: String,
    bed: String,
    sealed_identifier: Option<String>,
}

fn patient_from_row(row: &Row<'_>) -> rusqlite::Result<RawPatient> {
    Ok(RawPatient {
        id: row.get(0)?,
        system: row.get(1)?,
        value: row.get(2)?,
        family: row.get(3)?,
        given: row.get(4)?,
        birth_date: row.get(5)?,
        sex: row.get(6)?,
        ward: row.get(7)?,
        bed: row.get(8)?,
        sealed_identifier: row.get(9)?,
    })
}

/// Opens a stored patient's sealed columns.
fn decode_patient(cipher: Option<&FieldCipher>, raw: RawPatient) -> Result<Patient> {
    let open = |column: &str, stored: &str| crypto::open_text(cipher, column, stored);
    let value = match &raw.sealed_identifier {
        Some(sealed) => open(SEALED_IDENTIFIER, sealed)?,
        None => raw.value,
    };
    let birth_date = open(BIRTH_DATE, &raw.birth_date)?;
    Ok(Patient {
        id: PatientId(raw.id),
        details: NewPatient {
            identifier: Identifier {
                system: raw.system,
                value,
            },
            name: HumanName {
                family: open(FAMILY, &raw.family)?,
                given: open(GIVEN, &raw.given)?,
            },
            birth_date: NewPatient::parse_birth_date(&birth_date)
                .map_err(|_| Error::Corrupt(format!("patient {}: birth date", raw.id)))?,
            sex: Sex::parse(&raw.sex)
                .map_err(|_| Error::Corrupt(format!("patient {}: sex", raw.id)))?,
            ward: raw.ward,
            bed: raw.bed,
        },
    })
}

/// The sealed columns of `patients` and `registry_documents` (each the additional authenticated
/// data of its values).
const SEALED_IDENTIFIER: &str = "patients.identifier_sealed";
const FAMILY: &str = "patients.family";
const GIVEN: &str = "patients.given";
const BIRTH_DATE: &str = "patients.birth_date";
pub(super) const DOCUMENT: &str = "registry_documents.body";

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

/// Column values of a patient, in `PATIENT_COLUMNS` order without the id: with a cipher, the
/// identifier's blind index in `identifier_value` and its sealed value in `identifier_sealed`,
/// and the name and birth date sealed.
fn patient_values(cipher: Option<&FieldCipher>, patient: &NewPatient) -> Result<Vec<SqlValue>> {
    let seal = |column: &str, plain: &str| crypto::seal_text(cipher, column, plain);
    let identifier = &patient.identifier;
    let (value, sealed) = match cipher {
        Some(cipher) => (
            cipher.blind_index(&identifier.system, &identifier.value),
            Some(cipher.seal_text(SEALED_IDENTIFIER, &identifier.value)?),
        ),
        None => (identifier.value.clone(), None),
    };
    Ok(vec![
        identifier.system.clone().into(),
        value.into(),
        seal(FAMILY, &patient.name.family)?.into(),
        seal(GIVEN, &patient.name.given)?.into(),
        seal(BIRTH_DATE, &format_date(patient))?.into(),
        patient.sex.code().to_owned().into(),
        patient.ward.clone().into(),
        patient.bed.clone().into(),
        sealed.into(),
    ])
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

/// Runs one insert or update on `connection` (inside the caller's transaction). A uniqueness
/// violation becomes [`Error::Conflict`] with `conflict`. Returns the rows changed and the last
/// inserted row id.
fn write_row(
    connection: &Connection,
    sql: &str,
    values: Vec<SqlValue>,
    conflict: &str,
) -> Result<(usize, i64)> {
    let changed = connection
        .prepare_cached(sql)?
        .execute(rusqlite::params_from_iter(values))
        .map_err(|error| unique(error, conflict))?;
    Ok((changed, connection.last_insert_rowid()))
}

const INSERT_PATIENT: &str = "INSERT INTO patients (identifier_system, identifier_value, family, given, birth_date, sex, ward, bed, identifier_sealed)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
const UPDATE_PATIENT: &str =
    "UPDATE patients SET identifier_system = ?1, identifier_value = ?2, family = ?3, given = ?4,
    birth_date = ?5, sex = ?6, ward = ?7, bed = ?8, identifier_sealed = ?9 WHERE id = ?10";
const INSERT_DEVICE: &str =
    "INSERT INTO devices (serial, manufacturer, model, kind, status) VALUES (?1, ?2, ?3, ?4, ?5)";
const UPDATE_DEVICE: &str = "UPDATE devices SET serial = ?1, manufacturer = ?2, model = ?3, kind = ?4, status = ?5 WHERE id = ?6";

/// Applies one registry change on `connection` (inside the caller's transaction).
fn apply_change(
    connection: &Connection,
    cipher: Option<&FieldCipher>,
    change: RegistryChange,
) -> Result<Registered> {
    match change {
        RegistryChange::CreatePatient(patient) => {
            let (_, id) = write_row(
                connection,
                INSERT_PATIENT,
                patient_values(cipher, &patient)?,
                PATIENT_CONFLICT,
            )?;
            Ok(Registered::Patient(Patient {
                id: PatientId(id),
                details: patient,
            }))
        }
        RegistryChange::UpdatePatient(id, patient) => {
            let mut values = patient_values(cipher, &patient)?;
            values.push(id.0.into());
            match write_row(connection, UPDATE_PATIENT, values, PATIENT_CONFLICT)? {
                (0, _) => Err(Error::NotFound("patient")),
                _ => Ok(Registered::Patient(Patient {
                    id,
                    details: patient,
                })),
            }
        }
        RegistryChange::CreateDevice(device) => {
            let (_, id) = write_row(
                connection,
                INSERT_DEVICE,
                device_values(&device),
                DEVICE_CONFLICT,
            )?;
            Ok(Registered::Device(Device {
                id: DeviceId(id),
                details: device,
            }))
        }
        RegistryChange::UpdateDevice(id, device) => {
            let mut values = device_values(&device);
            values.push(id.0.into());
            match write_row(connection, UPDATE_DEVICE, values, DEVICE_CONFLICT)? {
                (0, _) => Err(Error::NotFound("device")),
                _ => Ok(Registered::Device(Device {
                    id,
                    details: device,
                })),
            }
        }
    }
}

/// The `registry_documents` key of a record.
fn owner_key(owner: DocumentOwner) -> (&'static str, i64) {
    match owner {
        DocumentOwner::Patient(id) => ("patient", id.0),
        DocumentOwner::Device(id) => ("device", id.0),
    }
}

/// Replaces (or, for `None`, removes) the document kept for `owner`.
fn put_document(
    connection: &Connection,
    cipher: Option<&FieldCipher>,
    owner: DocumentOwner,
    body: Option<&str>,
) -> Result<()> {
    let (kind, id) = owner_key(owner);
    match body {
        Some(body) => connection
            .prepare_cached(
                "INSERT INTO registry_documents (owner_kind, owner_id, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (owner_kind, owner_id) DO UPDATE SET body = excluded.body",
            )?
            .execute(params![
                kind,
                id,
                crypto::seal_text(cipher, DOCUMENT, body)?
            ])?,
        None => connection
            .prepare_cached(
                "DELETE FROM registry_documents WHERE owner_kind = ?1 AND owner_id = ?2",
            )?
            .execute(params![kind, id])?,
    };
    Ok(())
}

const PATIENT_CONFLICT: &str = "a patient with this identifier is already registered";
const DEVICE_CONFLICT: &str = "a device with this serial is already registered";

fn load_patient(
    connection: &Connection,
    cipher: Option<&FieldCipher>,
    id: i64,
) -> Result<Option<Patient>> {
    connection
        .prepare_cached(&format!(
            "SELECT {PATIENT_COLUMNS} FROM patients WHERE id = ?1"
        ))?
        .query_row([id], patient_from_row)
        .optional()?
        .map(|raw| decode_patient(cipher, raw))
        .transpose()
}

fn patient_exists(connection: &Connection, id: i64) -> Result<bool> {
    Ok(connection
        .prepare_cached("SELECT 1 FROM patients WHERE id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some())
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
    /// Applies one patient change alone, with its audit records.
    async fn write_patient(
        &self,
        change: RegistryChange,
        audit: Vec<AuditRecord>,
    ) -> Result<Patient> {
        match self
            .registry_sealed(move |connection, cipher| {
                with_records(connection, audit, |transaction| {
                    apply_change(transaction, cipher, change)
                })
            })
            .await?
        {
            Registered::Patient(patient) => Ok(patient),
            Registered::Device(_) => Err(Error::Invalid("a patient change wrote a device".into())),
        }
    }

    /// Applies one device change alone, with its audit records.
    async fn write_device(
        &self,
        change: RegistryChange,
        audit: Vec<AuditRecord>,
    ) -> Result<Device> {
        match self
            .registry_sealed(move |connection, cipher| {
                with_records(connection, audit, |transaction| {
                    apply_change(transaction, cipher, change)
                })
            })
            .await?
        {
            Registered::Device(device) => Ok(device),
            Registered::Patient(_) => Err(Error::Invalid("a device change wrote a patient".into())),
        }
    }

    /// Runs registry work on the registry connection with the store's cipher.
    pub(super) async fn registry_sealed<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection, Option<&FieldCipher>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.read(move |shared: &Shared| {
            let mut connection = shared
                .registry
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            work(&mut connection, shared.cipher.as_ref())
        })
        .await
    }

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
    async fn create_patient(
        &self,
        patient: NewPatient,
        audit: Vec<AuditRecord>,
    ) -> Result<Patient> {
        self.write_patient(RegistryChange::CreatePatient(patient), audit)
            .await
    }

    async fn update_patient(
        &self,
        id: PatientId,
        patient: NewPatient,
        audit: Vec<AuditRecord>,
    ) -> Result<Patient> {
        self.write_patient(RegistryChange::UpdatePatient(id, patient), audit)
            .await
    }

    async fn patient(&self, id: PatientId) -> Result<Option<Patient>> {
        self.read(move |shared| {
            shared
                .readers
                .with(|connection| load_patient(connection, shared.cipher.as_ref(), id.0))
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
                rows.map(|raw| decode_patient(shared.cipher.as_ref(), raw?))
                    .collect()
            })
        })
        .await
    }

    async fn create_device(&self, device: NewDevice, audit: Vec<AuditRecord>) -> Result<Device> {
        self.write_device(RegistryChange::CreateDevice(device), audit)
            .await
    }

    async fn update_device(
        &self,
        id: DeviceId,
        device: NewDevice,
        audit: Vec<AuditRecord>,
    ) -> Result<Device> {
        self.write_device(RegistryChange::UpdateDevice(id, device), audit)
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

    async fn create_assignment(
        &self,
        assignment: NewAssignment,
        audit: Vec<AuditRecord>,
    ) -> Result<Assignment> {
        assignment
            .validate()
            .map_err(|error| Error::Invalid(error.to_string()))?;
        self.registry(move |connection| {
            with_records(connection, audit, |transaction| {
                if load_device(transaction, assignment.device.0)?.is_none() {
                    return Err(Error::NotFound("device"));
                }
                if !patient_exists(transaction, assignment.patient.0)? {
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
                Ok(Assignment { id: AssignmentId(id), details: assignment })
            })
        })
        .await
    }

    async fn end_assignment(
        &self,
        id: AssignmentId,
        end: Timestamp,
        audit: Vec<AuditRecord>,
    ) -> Result<Assignment> {
        self.registry(move |connection| {
            with_records(connection, audit, |transaction| {
                let mut assignment =
                    load_assignment(transaction, id.0)?.ok_or(Error::NotFound("assignment"))?;
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
                assignment.details.end = Some(end);
                Ok(assignment)
            })
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

    async fn apply_registry_audited(
        &self,
        writes: Vec<RegistryWrite>,
        audit: RegistryAudit,
    ) -> Result<Vec<Registered>> {
        self.registry_sealed(move |connection, cipher| {
            // One immediate transaction for the changes and their audit records: the audit chain's
            // head is read under the same write lock, so this append is serialised with every
            // other one (see `audit::append_in`).
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut written = Vec::with_capacity(writes.len());
            for write in writes {
                let registered = apply_change(&transaction, cipher, write.change)?;
                let owner = match &registered {
                    Registered::Patient(patient) => DocumentOwner::Patient(patient.id),
                    Registered::Device(device) => DocumentOwner::Device(device.id),
                };
                put_document(&transaction, cipher, owner, write.document.as_deref())?;
                written.push(registered);
            }
            super::audit::append_in(&transaction, audit.build(&written))?;
            transaction.commit()?;
            Ok(written)
        })
        .await
    }

    async fn registry_documents(&self) -> Result<Vec<RegistryDocument>> {
        self.read(move |shared| {
            shared.readers.with(|connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT owner_kind, owner_id, body FROM registry_documents ORDER BY owner_kind, owner_id",
                )?;
                let rows = statement.query_map([], |row| {
                    let kind: String = row.get(0)?;
                    let id: i64 = row.get(1)?;
                    let owner = match kind.as_str() {
                        "patient" => DocumentOwner::Patient(PatientId(id)),
                        "device" => DocumentOwner::Device(DeviceId(id)),
                        _ => return Err(corrupt("owner_kind")),
                    };
                    Ok((owner, row.get::<_, String>(2)?))
                })?;
                rows.map(|row| {
                    let (owner, body) = row?;
                    Ok(RegistryDocument {
                        owner,
                        body: crypto::open_text(shared.cipher.as_ref(), DOCUMENT, &body)?,
                    })
                })
                .collect()
            })
        })
        .await
    }

    async fn add_device_credential(
        &self,
        device: DeviceId,
        secret_sha256: [u8; 32],
        created: Timestamp,
        audit: Vec<AuditRecord>,
    ) -> Result<DeviceCredential> {
        self.registry(move |connection| {
            with_records(connection, audit, |transaction| {
                if load_device(transaction, device.0)?.is_none() {
                    return Err(Error::NotFound("device"));
                }
                transaction.execute(
                    "INSERT INTO device_credentials (device_id, secret_sha256, created) VALUES (?1, ?2, ?3)",
                    params![device.0, secret_sha256.as_slice(), created.micros()],
                )?;
                let id = transaction.last_insert_rowid();
                Ok(DeviceCredential { id, device, secret_sha256, created, revoked: None })
            })
        })
        .await
    }

    async fn revoke_device_credential(
        &self,
        device: DeviceId,
        id: i64,
        at: Timestamp,
        audit: Vec<AuditRecord>,
    ) -> Result<DeviceCredential> {
        self.registry(move |connection| {
            with_records(connection, audit, |transaction| {
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
                credential.revoked = Some(at);
                Ok(credential)
            })
        })
        .await
    }

    async fn create_subscription(
        &self,
        body: String,
        status: String,
        audit: Vec<AuditRecord>,
    ) -> Result<i64> {
        self.registry(move |connection| {
            with_records(connection, audit, |transaction| {
                transaction
                    .prepare_cached(
                        "INSERT INTO fhir_subscriptions (body, status, events) VALUES (?1, ?2, 0)",
                    )?
                    .execute(params![body, status])?;
                Ok(transaction.last_insert_rowid())
            })
        })
        .await
    }

    async fn update_subscription(
        &self,
        id: i64,
        body: String,
        status: String,
        events: u64,
        audit: Vec<AuditRecord>,
    ) -> Result<()> {
        let events = i64::try_from(events).map_err(|_| Error::Invalid("event count".into()))?;
        self.registry(move |connection| {
            with_records(connection, audit, |transaction| {
                let changed = transaction
                    .prepare_cached(
                        "UPDATE fhir_subscriptions SET body = ?2, status = ?3, events = ?4 WHERE id = ?1",
                    )?
                    .execute(params![id, body, status, events])?;
                if changed == 0 {
                    return Err(Error::NotFound("subscription"));
                }
                Ok(())
            })
        })
        .await
    }

    async fn delete_subscription(&self, id: i64, audit: Vec<AuditRecord>) -> Result<bool> {
        self.registry(move |connection| {
            with_records(connection, audit, |transaction| {
                Ok(transaction
                    .prepare_cached("DELETE FROM fhir_subscriptions WHERE id = ?1")?
                    .execute([id])?
                    > 0)
            })
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

/// Re-seals every patient's identifying columns under `next` (and its blind index), opening them
/// with `current`. Returns how many patients.
pub(super) fn reseal_patients(
    connection: &Connection,
    current: Option<&FieldCipher>,
    next: &FieldCipher,
) -> Result<u64> {
    let raws: Vec<RawPatient> = connection
        .prepare(&format!("SELECT {PATIENT_COLUMNS} FROM patients"))?
        .query_map([], patient_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    let mut count = 0;
    for raw in raws {
        let patient = decode_patient(current, raw)?;
        let mut values = patient_values(Some(next), &patient.details)?;
        values.push(patient.id.0.into());
        write_row(connection, UPDATE_PATIENT, values, PATIENT_CONFLICT)?;
        count += 1;
    }
    Ok(count)
}
