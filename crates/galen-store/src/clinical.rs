//! Records of the clinical engine: staff entries that feed it, and the scores and alarm
//! transitions it produced.
//!
//! The store keeps these as rows with a small typed header (patient, time, kind) and a body the
//! server encodes (JSON, with its own version field): galen-store does not depend on the clinical
//! crate, so it never interprets a body.

use async_trait::async_trait;
use galen_model::{PatientId, Timestamp};

use crate::audit::AuditRecord;
use crate::error::Result;

/// A clinical entry: an observation made by staff (ACVPU, air or oxygen), a per-patient setting
/// (SpO2 scale, alarm limit override) or an operator action on an alarm. Entries are inputs of
/// the engine: replaying them with the stored measurements reproduces its outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClinicalEntry {
    /// Assigned by the store (0 in a new entry).
    pub id: i64,
    /// The patient it concerns.
    pub patient: PatientId,
    /// When it was made or observed.
    pub time: Timestamp,
    /// What it is (`consciousness`, `oxygen`, `spo2_scale`, `limit_override`, `acknowledge`, ...).
    pub kind: String,
    /// Who made it (a user name, or `system`).
    pub author: String,
    /// The entry's content, encoded by the server.
    pub body: String,
}

/// One computed score, stored when it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreRecord {
    /// The patient.
    pub patient: PatientId,
    /// When it was computed (the time of the input that changed it).
    pub time: Timestamp,
    /// Score table id (`news2`).
    pub table: String,
    /// Aggregate (a lower bound when incomplete).
    pub total: i64,
    /// Risk band name.
    pub band: String,
    /// Whether every input was present and fresh.
    pub complete: bool,
    /// Full record (per-parameter points, measurement ids, table and config versions).
    pub body: String,
}

/// One alarm transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmRecord {
    /// Position in the alarm log, assigned by the store (0 in a new record); increases with every
    /// append, so readers can resume after it.
    pub seq: i64,
    /// The alarm's id (stable across its transitions).
    pub alarm: String,
    /// The patient.
    pub patient: PatientId,
    /// When the transition happened.
    pub time: Timestamp,
    /// The rule that raised the alarm.
    pub rule: String,
    /// The transition (`raised`, `escalated`, `acknowledged`, `resolved`, ...).
    pub transition: String,
    /// Priority after the transition.
    pub priority: String,
    /// State after the transition (`active`, `acknowledged`, `latched`, `resolved`).
    pub state: String,
    /// Full record (who, why, evidence, config version).
    pub body: String,
}

/// A condition that ended before its delay ran out (no alarm): what the delay filtered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilteredRecord {
    /// The patient.
    pub patient: PatientId,
    /// The rule id.
    pub rule: String,
    /// When the condition began.
    pub onset: Timestamp,
    /// When it ended.
    pub ended: Timestamp,
}

/// Which alarm records to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmQuery {
    /// Only this patient's.
    pub patient: Option<PatientId>,
    /// Only records with `seq` greater than this.
    pub after: i64,
    /// Time range, half-open.
    pub from: Timestamp,
    /// End of the time range (exclusive).
    pub to: Timestamp,
    /// At most this many, in `seq` order.
    pub limit: usize,
}

/// One attempt to deliver a notification to a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// Assigned by the store (0 in a new record).
    pub id: i64,
    /// The endpoint's configured name (never its secret; the URL may carry credentials, so it is
    /// not stored either).
    pub endpoint: String,
    /// The delivered event's id.
    pub event: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When the attempt finished.
    pub time: Timestamp,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Whether the endpoint accepted it (2xx).
    pub delivered: bool,
}

/// Storage of the clinical engine's inputs and outputs. Every append is durable when it returns
/// `Ok`.
#[async_trait]
pub trait ClinicalStore: Send + Sync + std::fmt::Debug {
    /// Stores a clinical entry and returns it with its id; `audit` is appended to the audit chain
    /// in the same transaction (both durable, or neither).
    async fn add_entry(
        &self,
        entry: ClinicalEntry,
        audit: Vec<AuditRecord>,
    ) -> Result<ClinicalEntry>;
    /// Entries in `[from, to)`, all patients or one, ordered by time then id.
    async fn entries(
        &self,
        patient: Option<PatientId>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<ClinicalEntry>>;
    /// Entries of the given kinds in `[from, to)`, all patients, ordered by time then id (for
    /// warming up the engine without reading every alarm action ever made).
    async fn entries_of_kinds(
        &self,
        kinds: &[&str],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<ClinicalEntry>>;
    /// Appends scores and alarm transitions in one transaction; returns the alarm records with
    /// their `seq`.
    async fn append_outputs(
        &self,
        scores: Vec<ScoreRecord>,
        alarms: Vec<AlarmRecord>,
    ) -> Result<Vec<AlarmRecord>>;
    /// Stores conditions the delays filtered.
    async fn append_filtered(&self, filtered: Vec<FilteredRecord>) -> Result<()>;
    /// Counts of filtered conditions that ended in `[from, to)`, per patient and rule.
    async fn filtered_counts(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(PatientId, String, u64)>>;
    /// A patient's stored scores of one table in `[from, to)`, by time, at most `limit` (the
    /// newest ones when there are more).
    async fn scores(
        &self,
        patient: PatientId,
        table: &str,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<ScoreRecord>>;
    /// Alarm records matching `query`, in `seq` order.
    async fn alarm_records(&self, query: AlarmQuery) -> Result<Vec<AlarmRecord>>;
    /// The newest record of every alarm that is not resolved, in `seq` order.
    async fn open_alarms(&self) -> Result<Vec<AlarmRecord>>;
    /// Records a webhook delivery attempt.
    async fn record_delivery(&self, delivery: DeliveryRecord) -> Result<DeliveryRecord>;
    /// Delivery attempts with id greater than `after`, at most `limit`, oldest first.
    async fn deliveries(&self, after: i64, limit: usize) -> Result<Vec<DeliveryRecord>>;
}
