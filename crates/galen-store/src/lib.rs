//! Galen's storage ports and their embedded adapter.
//!
//! Two ports: [`MeasurementStore`] (the time series and the dead-letter store) and [`RegistryStore`]
//! (patients, devices, assignments); beside them [`ClinicalStore`], [`AccessStore`] (accounts),
//! [`ConsentStore`] (patients' consents) and [`AuditStore`]. Callers hold an `Arc<dyn Store>` and
//! never know which backend is behind it. The embedded backend ([`embedded::SqliteStore`]) is the default; a PostgreSQL
//! backend plugs in behind the same traits and must pass the same [`conformance`] suite.
//!
//! Every port method documents what is durable or visible when it returns.
//!
//! The audit trail ([`AuditStore`], [`audit`]) is append-only and hash-chained: its records can be
//! written in the same transaction as a registry change
//! ([`RegistryStore::apply_registry_audited`]), and [`verify_chain`] detects any edit, removal or
//! reordering.

mod access;
pub mod audit;
mod clinical;
mod codec;
mod consent;
pub mod crypto;
pub mod embedded;
mod error;
mod types;

pub mod conformance;

use std::fmt::Debug;

use async_trait::async_trait;
use galen_model::{
    Assignment, AssignmentId, Device, DeviceId, NewAssignment, NewDevice, NewPatient, Patient,
    PatientId, Timestamp, VitalSign,
};

pub use access::{
    AccessStore, ApiToken, BreakGlassGrant, ClientCredential, NewOAuthClient, NewUser, OAuthClient,
    Totp, User, UserChange,
};
pub use audit::{
    AUDIT_FORMAT, AuditAction, AuditOutcome, AuditQuery, AuditRecord, AuditStore, BreakKind,
    ChainBreak, ChainVerifier, GENESIS_HASH, MAX_AUDIT_FIELD_BYTES, RegistryAudit,
    StoredAuditRecord, VerifiedChain, chain_hash, hash_from_hex, hash_to_hex, verify_chain,
};
pub use clinical::{
    AlarmQuery, AlarmRecord, ClinicalEntry, ClinicalStore, DeliveryRecord, FilteredRecord,
    ScoreRecord,
};
pub use consent::{ConsentAudit, ConsentStore, StoredConsent};
pub use error::{Error, Result};
pub use types::{
    AppendOutcome, Bucket, DeadLetter, DeviceCredential, DocumentOwner, IngestBatch, Point,
    Receipt, Registered, RegistryChange, RegistryDocument, RegistryWrite, StoreStats,
    StoredDeadLetter, StoredSubscription,
};

/// The time series of measurements and the dead letters of refused input.
#[async_trait]
pub trait MeasurementStore: Send + Sync + Debug {
    /// Appends measurements and dead letters in one durable group commit.
    ///
    /// Returns one outcome per measurement, in order. When it returns `Ok`, every measurement
    /// reported [`AppendOutcome::Accepted`] and every dead letter is durable (it survives a crash
    /// of the process or the machine) and visible to [`MeasurementStore::range`] and
    /// [`MeasurementStore::latest`]. A measurement is a [`AppendOutcome::Duplicate`] when the same
    /// device already has a value of the same vital sign at the same time, or (within the recent-id
    /// window) a measurement with the same external id. On `Err` nothing in the batch may be
    /// assumed stored; retrying the whole batch is safe because duplicates are recognised.
    async fn ingest(&self, batch: IngestBatch) -> Result<Vec<AppendOutcome>>;

    /// The points of one device's vital sign with `from <= time < to`, in time order.
    async fn range(
        &self,
        device: DeviceId,
        vital: VitalSign,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Point>>;

    /// Per-bucket statistics of one device's vital sign over `from <= time < to`. Buckets are
    /// `bucket_micros` wide and aligned to multiples of it since the epoch; empty buckets are
    /// omitted.
    async fn aggregate(
        &self,
        device: DeviceId,
        vital: VitalSign,
        from: Timestamp,
        to: Timestamp,
        bucket_micros: i64,
    ) -> Result<Vec<Bucket>>;

    /// The time of the oldest point of one device's vital sign, if it has any: where a full
    /// scan of the series (an export) starts.
    async fn earliest(&self, device: DeviceId, vital: VitalSign) -> Result<Option<Timestamp>>;

    /// The newest point of every vital sign the device has reported, in [`VitalSign::ALL`] order.
    async fn latest(&self, device: DeviceId) -> Result<Vec<(VitalSign, Point)>>;

    /// Dead letters with an id greater than `after`, oldest first, at most `limit`.
    async fn dead_letters(&self, after: i64, limit: usize) -> Result<Vec<StoredDeadLetter>>;

    /// The receipt stored with an earlier [`IngestBatch::receipt`] of `source` and `key`, if it is
    /// still kept (receipts are kept for at least the store's receipt retention, a day by
    /// default).
    async fn receipt(&self, source: &str, key: &str) -> Result<Option<Receipt>>;

    /// Counters describing the write path, for `/metrics`.
    fn stats(&self) -> StoreStats;

    /// Flushes everything buffered and stops background work. Later calls fail with
    /// [`Error::Closed`]. Dropping the store without closing loses nothing acknowledged.
    async fn close(&self) -> Result<()>;
}

/// Patients, devices and assignments. Every mutating method is durable when it returns `Ok`.
///
/// The `audit` argument of a write: audit records (see [`AuditStore`]) appended to the chain in
/// the write's own transaction, so that the change and its records are durable together or not at
/// all (also when a record is invalid). Pass an empty vector for a write no one asked for.
#[async_trait]
pub trait RegistryStore: Send + Sync + Debug {
    /// Registers a patient. [`Error::Conflict`] if the identifier is already registered.
    async fn create_patient(&self, patient: NewPatient, audit: Vec<AuditRecord>)
    -> Result<Patient>;
    /// Replaces a patient's details. [`Error::NotFound`] or [`Error::Conflict`] as for create.
    async fn update_patient(
        &self,
        id: PatientId,
        patient: NewPatient,
        audit: Vec<AuditRecord>,
    ) -> Result<Patient>;
    /// One patient.
    async fn patient(&self, id: PatientId) -> Result<Option<Patient>>;
    /// All patients, or those of one ward, sorted by ward then bed.
    async fn patients(&self, ward: Option<String>) -> Result<Vec<Patient>>;

    /// Registers a device. [`Error::Conflict`] if the serial is already registered.
    async fn create_device(&self, device: NewDevice, audit: Vec<AuditRecord>) -> Result<Device>;
    /// Replaces a device's details.
    async fn update_device(
        &self,
        id: DeviceId,
        device: NewDevice,
        audit: Vec<AuditRecord>,
    ) -> Result<Device>;
    /// One device.
    async fn device(&self, id: DeviceId) -> Result<Option<Device>>;
    /// All devices, by id.
    async fn devices(&self) -> Result<Vec<Device>>;

    /// Assigns a device to a patient. [`Error::NotFound`] if either does not exist;
    /// [`Error::Conflict`] if the device already has an assignment overlapping the interval.
    async fn create_assignment(
        &self,
        assignment: NewAssignment,
        audit: Vec<AuditRecord>,
    ) -> Result<Assignment>;
    /// Closes an open assignment at `end`. [`Error::Conflict`] if it is already closed or `end`
    /// is not after its start.
    async fn end_assignment(
        &self,
        id: AssignmentId,
        end: Timestamp,
        audit: Vec<AuditRecord>,
    ) -> Result<Assignment>;
    /// Every assignment, by id.
    async fn assignments(&self) -> Result<Vec<Assignment>>;

    /// Applies `writes` in order as one atomic unit: when it returns `Ok` every change and its
    /// document is durable, with one [`Registered`] per write in order; on `Err` (a conflict as
    /// for the single-record methods, [`Error::NotFound`] for an update of a missing record)
    /// nothing of them is stored. The same as [`RegistryStore::apply_registry_audited`] without
    /// audit records.
    async fn apply_registry(&self, writes: Vec<RegistryWrite>) -> Result<Vec<Registered>> {
        self.apply_registry_audited(writes, RegistryAudit::none())
            .await
    }
    /// [`RegistryStore::apply_registry`] and the audit records `audit` builds from the written
    /// records, appended to the audit chain in the same transaction: when it returns `Ok` the
    /// changes, their documents and the audit records are durable together (serialised with
    /// every other audit append, as [`AuditStore::append_audit`]); on `Err` none of them is
    /// stored (also when an audit record is invalid).
    async fn apply_registry_audited(
        &self,
        writes: Vec<RegistryWrite>,
        audit: RegistryAudit,
    ) -> Result<Vec<Registered>>;
    /// Every document kept by [`RegistryStore::apply_registry`].
    async fn registry_documents(&self) -> Result<Vec<RegistryDocument>>;

    /// Stores a new credential of `device` (only the hash of its secret).
    /// [`Error::NotFound`] if the device does not exist.
    async fn add_device_credential(
        &self,
        device: DeviceId,
        secret_sha256: [u8; 32],
        created: Timestamp,
        audit: Vec<AuditRecord>,
    ) -> Result<DeviceCredential>;
    /// Revokes credential `id` of `device` at `at`. [`Error::NotFound`] if the device has no such
    /// credential; [`Error::Conflict`] if it is already revoked.
    async fn revoke_device_credential(
        &self,
        device: DeviceId,
        id: i64,
        at: Timestamp,
        audit: Vec<AuditRecord>,
    ) -> Result<DeviceCredential>;
    /// Every credential of every device, revoked ones included, by id.
    async fn device_credentials(&self) -> Result<Vec<DeviceCredential>>;

    /// Stores a new FHIR subscription with status `status` and no events yet; returns its id.
    async fn create_subscription(
        &self,
        body: String,
        status: String,
        audit: Vec<AuditRecord>,
    ) -> Result<i64>;
    /// Replaces a subscription's resource, status and event count. [`Error::NotFound`] if it
    /// does not exist.
    async fn update_subscription(
        &self,
        id: i64,
        body: String,
        status: String,
        events: u64,
        audit: Vec<AuditRecord>,
    ) -> Result<()>;
    /// Deletes a subscription; `false` if there was none.
    async fn delete_subscription(&self, id: i64, audit: Vec<AuditRecord>) -> Result<bool>;
    /// Every subscription, by id.
    async fn subscriptions(&self) -> Result<Vec<StoredSubscription>>;
}

/// A complete backend.
pub trait Store:
    MeasurementStore + RegistryStore + ClinicalStore + AccessStore + AuditStore + ConsentStore
{
}

impl<T: MeasurementStore + RegistryStore + ClinicalStore + AccessStore + AuditStore + ConsentStore>
    Store for T
{
}
