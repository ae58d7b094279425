//! Writing the audit trail: every authenticated HTTP request (reads and searches of patient data
//! included), every refused one, and every sign-in and sign-out.
//!
//! `request -> authenticate (auth.rs) -> handler -> AuditLog::record (group-committed append to
//! the store's hash chain) -> response`. The record is durable before the response leaves: a
//! read whose record cannot be written is answered `503` and discloses nothing.
//!
//! **Writes store their record in their own transaction.** The gate hands every handler the
//! request's success record ([`WriteRecord`]); a handler that writes passes it to the store call
//! (the `audit` argument of the store's write methods, or [`galen_store::IngestBatch::audit`]), so
//! the change and its record commit together or not at all, and marks its answer
//! [`crate::auth::Audited`]. A write that fails stores no record of its own; the gate then records
//! the failure.
//!
//! Records name ids, never content: the resource is the request path (never its query, which can
//! carry names or identifiers), the patient is an id.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::Method;
use galen_model::{PatientId, Timestamp};
use galen_store::{AuditAction, AuditOutcome, AuditRecord, Store};
use tokio::sync::{mpsc, oneshot};

/// Records appended in one store call at most.
const MAX_BATCH: usize = 1024;

type Pending = (AuditRecord, oneshot::Sender<bool>);

/// The audit writer; cheap to clone.
#[derive(Clone)]
pub(crate) struct AuditLog {
    sender: mpsc::Sender<Pending>,
    pub(crate) failures: Arc<AtomicU64>,
    pub(crate) written: Arc<AtomicU64>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the writer task. Records sent while an append is in flight go together into the
    /// next one (group commit), so auditing costs one store transaction per batch, not per request.
    pub(crate) fn start(store: Arc<dyn Store>) -> AuditLog {
        let (sender, mut receiver) = mpsc::channel::<Pending>(8192);
        let failures = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let (failed, counted) = (failures.clone(), written.clone());
        tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (records, replies): (Vec<AuditRecord>, Vec<oneshot::Sender<bool>>) =
                    batch.into_iter().unzip();
                let count = records.len() as u64;
                let stored = store.append_audit(records).await;
                let ok = match stored {
                    Ok(_) => {
                        counted.fetch_add(count, Ordering::Relaxed);
                        true
                    }
                    Err(error) => {
                        failed.fetch_add(count, Ordering::Relaxed);
                        tracing::error!(%error, records = count, "audit records could not be written");
                        false
                    }
                };
                for reply in replies {
                    let _ = reply.send(ok);
                }
            }
        });
        AuditLog {
            sender,
            failures,
            written,
        }
    }

    /// Appends the audit counters in Prometheus text format.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(
            out,
            "# HELP galen_audit_records_total Audit records written.
# TYPE galen_audit_records_total counter
galen_audit_records_total {}
# HELP galen_audit_failures_total Audit records that could not be written.
# TYPE galen_audit_failures_total counter
galen_audit_failures_total {}
",
            self.written.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed)
        );
    }

    /// Appends `record`; `true` once it is durable.
    pub(crate) async fn record(&self, record: AuditRecord) -> bool {
        let (reply, answer) = oneshot::channel();
        if self.sender.send((record, reply)).await.is_err() {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        answer.await.unwrap_or(false)
    }

    /// Appends `records` (they join the writer's group commits like any others); `true` once
    /// every one of them is durable.
    pub(crate) async fn record_all(&self, records: Vec<AuditRecord>) -> bool {
        let mut answers = Vec::with_capacity(records.len());
        for record in records {
            let (reply, answer) = oneshot::channel();
            if self.sender.send((record, reply)).await.is_err() {
                self.failures.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            answers.push(answer);
        }
        let mut durable = true;
        for answer in answers {
            durable &= answer.await.unwrap_or(false);
        }
        durable
    }
}

/// The success record of the request in hand, put in the request's extensions by the gate.
#[derive(Debug, Clone)]
pub(crate) struct PendingRecord(pub(crate) AuditRecord);

/// Extractor: the request's audit record, for a handler to store in its write's transaction.
/// Empty outside the gate (in-process calls of the router without authentication).
#[derive(Debug, Clone)]
pub(crate) struct WriteRecord(Option<AuditRecord>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for WriteRecord {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(WriteRecord(
            parts
                .extensions
                .get::<PendingRecord>()
                .map(|pending| pending.0.clone()),
        ))
    }
}

impl WriteRecord {
    /// The records to store with the write.
    pub(crate) fn records(&self) -> Vec<AuditRecord> {
        self.0.iter().cloned().collect()
    }

    /// Part of the answer of a write that stored [`WriteRecord::records`]: the gate writes no
    /// second record.
    pub(crate) fn stored(&self) -> axum::Extension<crate::auth::Audited> {
        axum::Extension(crate::auth::Audited)
    }
}

/// What a request did, for its record: the route template and method decide.
pub(crate) fn action_of(method: &Method, route: &str) -> AuditAction {
    let collection = !route.ends_with('}') && !route.ends_with("$status");
    match *method {
        Method::GET | Method::HEAD if route.contains("$export") => AuditAction::Export,
        Method::GET | Method::HEAD if collection && route != "/" => AuditAction::Search,
        Method::GET | Method::HEAD => AuditAction::Read,
        Method::POST if route.starts_with("/api/v1/alarms/") => AuditAction::AlarmAction,
        Method::POST if route == "/api/v1/break-glass" => AuditAction::BreakGlass,
        Method::POST if route == "/api/v1/measurements" || route == "/fhir/Observation" => {
            AuditAction::Ingest
        }
        Method::POST
            if route.starts_with("/api/v1/users")
                || route.starts_with("/api/v1/oauth-clients")
                || route == "/api/v1/mapping/reload" =>
        {
            AuditAction::ConfigChange
        }
        Method::PUT if route.starts_with("/api/v1/users") || route.contains("/limits/") => {
            AuditAction::ConfigChange
        }
        Method::DELETE
            if route.starts_with("/api/v1/tokens")
                || route.starts_with("/api/v1/oauth-clients") =>
        {
            AuditAction::ConfigChange
        }
        // Enrolling, confirming and removing a second factor.
        Method::POST | Method::DELETE
            if route.starts_with("/api/v1/session/totp") || route.ends_with("/totp") =>
        {
            AuditAction::ConfigChange
        }
        Method::POST => AuditAction::Create,
        Method::PUT | Method::PATCH => AuditAction::Update,
        Method::DELETE => AuditAction::Delete,
        _ => AuditAction::Read,
    }
}

/// A record of one request.
#[allow(clippy::too_many_arguments)]
pub(crate) fn request_record(
    time: Timestamp,
    actor: &str,
    role: &str,
    action: AuditAction,
    path: &str,
    patient: Option<PatientId>,
    outcome: AuditOutcome,
    source: &str,
    detail: String,
) -> AuditRecord {
    AuditRecord {
        time,
        actor: actor.to_owned(),
        role: role.to_owned(),
        action,
        resource: path.chars().take(1024).collect(),
        patient,
        outcome,
        source: source.to_owned(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_follow_method_and_route() {
        assert_eq!(
            action_of(&Method::GET, "/fhir/Patient/{id}"),
            AuditAction::Read
        );
        assert_eq!(
            action_of(&Method::GET, "/fhir/Patient"),
            AuditAction::Search
        );
        assert_eq!(action_of(&Method::GET, "/"), AuditAction::Read);
        assert_eq!(
            action_of(&Method::GET, "/fhir/$export"),
            AuditAction::Export
        );
        assert_eq!(
            action_of(&Method::POST, "/api/v1/alarms/{id}/{action}"),
            AuditAction::AlarmAction
        );
        assert_eq!(
            action_of(&Method::POST, "/api/v1/measurements"),
            AuditAction::Ingest
        );
        assert_eq!(
            action_of(&Method::POST, "/api/v1/patients"),
            AuditAction::Create
        );
        assert_eq!(
            action_of(&Method::PUT, "/api/v1/patients/{id}"),
            AuditAction::Update
        );
        assert_eq!(
            action_of(&Method::POST, "/api/v1/users"),
            AuditAction::ConfigChange
        );
        assert_eq!(
            action_of(&Method::DELETE, "/fhir/Subscription/{id}"),
            AuditAction::Delete
        );
        for (method, route) in [
            (Method::POST, "/api/v1/session/totp"),
            (Method::POST, "/api/v1/session/totp/confirm"),
            (Method::DELETE, "/api/v1/session/totp"),
            (Method::DELETE, "/api/v1/users/{id}/totp"),
        ] {
            assert_eq!(
                action_of(&method, route),
                AuditAction::ConfigChange,
                "{method} {route}"
            );
        }
    }
}
