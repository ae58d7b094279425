//! Values that cross the storage ports.

use galen_model::{
    Device, DeviceId, Measurement, NewDevice, NewPatient, Patient, PatientId, RejectionReason,
    Timestamp,
};

/// One value of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// When it was measured.
    pub time: Timestamp,
    /// The value in the vital sign's canonical unit.
    pub value: f64,
}

/// Statistics of the points in one time bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Start of the bucket.
    pub start: Timestamp,
    /// Number of points.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

/// What became of one appended measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored.
    Accepted,
    /// Already stored earlier (a retry); nothing changed.
    Duplicate,
}

/// A refused item kept for inspection and replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// When Galen received it.
    pub received: Timestamp,
    /// Which adapter received it (`http`, `mqtt`, ...).
    pub source: String,
    /// Why it was refused.
    pub reason: RejectionReason,
    /// The explanation sent to the sender.
    pub message: String,
    /// The device serial the sender claimed, when one could be read.
    pub device: Option<String>,
    /// The item as received; for a refused request, its body (empty when the body was refused
    /// for its size, which the message states).
    pub payload: Vec<u8>,
}

/// A dead letter with its store-assigned id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeadLetter {
    /// Increasing id.
    pub id: i64,
    /// The letter.
    pub letter: DeadLetter,
}

/// Input of one [`crate::MeasurementStore::ingest`] call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestBatch {
    /// Validated measurements.
    pub measurements: Vec<Measurement>,
    /// Refused items to keep.
    pub dead_letters: Vec<DeadLetter>,
    /// The answer given to the sender of a protocol message (an HL7 ACK), keyed by the sender's
    /// message id, stored in the same commit as the message's content. When a receipt of the same
    /// source and key is already stored (or earlier in the same group commit), nothing of the batch
    /// is stored and ingest fails with [`crate::Error::AlreadyAnswered`] carrying the first
    /// answer: a repeated message gets the same answer and stores nothing twice, even when the
    /// copies arrive at once on two connections.
    pub receipt: Option<Receipt>,
    /// Audit records of the request that sent the batch (see [`crate::AuditStore`]), appended to
    /// the audit chain in the same commit as the batch's content: both are durable together, or
    /// neither. A batch refused as [`crate::Error::AlreadyAnswered`] stores none of them.
    pub audit: Vec<crate::AuditRecord>,
}

/// A stored answer to a protocol message. See [`crate::MeasurementStore::receipt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The protocol (`mllp`).
    pub source: String,
    /// The sender and its message id (for HL7: sending application, device and facility plus
    /// MSH-10).
    pub key: String,
    /// When it was stored.
    pub received: Timestamp,
    /// The answer as sent.
    pub response: Vec<u8>,
}

/// A device's secret credential, as stored: only a SHA-256 hash of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCredential {
    /// Id of the credential.
    pub id: i64,
    /// The device it authenticates.
    pub device: DeviceId,
    /// SHA-256 of the secret.
    pub secret_sha256: [u8; 32],
    /// When it was issued.
    pub created: Timestamp,
    /// When it was revoked; a revoked credential authenticates nothing.
    pub revoked: Option<Timestamp>,
}

/// A FHIR subscription as stored: its resource (JSON the server owns), status and the number of
/// events notified since it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// Id of the subscription.
    pub id: i64,
    /// The Subscription resource, as JSON.
    pub body: String,
    /// `requested`, `active`, `error` or `off`.
    pub status: String,
    /// Events notified since the subscription started (the next event is `events + 1`).
    pub events: u64,
}

/// Write-path counters, cumulative since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StoreStats {
    /// Durable group commits.
    pub commits: u64,
    /// Measurements accepted.
    pub accepted: u64,
    /// Measurements recognised as duplicates.
    pub duplicates: u64,
    /// Dead letters stored.
    pub dead_letters: u64,
    /// Sum of commit durations, seconds.
    pub commit_seconds_sum: f64,
    /// Commit durations histogram: counts of commits at or below each bound of
    /// [`StoreStats::COMMIT_BUCKETS`] (cumulative, Prometheus style).
    pub commit_seconds_buckets: [u64; 8],
    /// Sum of measurements per commit (with `commits`, gives the mean batch size).
    pub batch_size_sum: u64,
    /// Largest group commit so far.
    pub batch_size_max: u64,
    /// Ingest calls waiting for the writer.
    pub queue_depth: u64,
    /// Checkpoints (open chunks persisted, write-ahead log truncated).
    pub checkpoints: u64,
}

impl StoreStats {
    /// Upper bounds, in seconds, of the commit latency histogram.
    pub const COMMIT_BUCKETS: [f64; 8] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];
}

/// One change of a registry transaction ([`crate::RegistryStore::apply_registry`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryChange {
    /// Registers a patient.
    CreatePatient(NewPatient),
    /// Replaces a patient's details.
    UpdatePatient(PatientId, NewPatient),
    /// Registers a device.
    CreateDevice(NewDevice),
    /// Replaces a device's details.
    UpdateDevice(DeviceId, NewDevice),
}

/// A registry change with the document it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryWrite {
    /// The change.
    pub change: RegistryChange,
    /// The resource as the client posted it (FHIR JSON), kept beside the record so that what the
    /// record has no place for can be given back; `None` removes a kept document.
    pub document: Option<String>,
}

/// A record written by [`crate::RegistryStore::apply_registry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// A patient created or updated.
    Patient(Patient),
    /// A device created or updated.
    Device(Device),
}

/// Whose document a [`RegistryDocument`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocumentOwner {
    /// A patient's.
    Patient(PatientId),
    /// A device's.
    Device(DeviceId),
}

/// The resource a client last posted for a registry record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryDocument {
    /// The record.
    pub owner: DocumentOwner,
    /// The resource, as JSON.
    pub body: String,
}
