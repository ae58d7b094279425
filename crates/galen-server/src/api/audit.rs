//! The audit trail for the auditor view: `GET /api/v1/audit`, read-only, with filters and paging
//! by seq. Records carry no PHI (ids, not names); each comes with its chain hashes, and the answer
//! with the chain's current head, so an auditor can note it outside Galen and later check the
//! data directory against it (`galen audit verify --expect-head`).

use axum::Json;
use axum::extract::{Query, State};
use galen_model::{AuditAction, AuditOutcome, PatientId};
use galen_store::{AuditQuery, StoredAuditRecord, hash_to_hex};
use serde::Deserialize;
use serde_json::{Value, json};

use super::parse_time;
use crate::App;
use crate::error::{ApiError, ApiResult};

/// Records per page when the caller gives no `limit`.
const DEFAULT_LIMIT: usize = 100;
/// Largest page.
const MAX_LIMIT: usize = 1000;

/// The filters of `GET /api/v1/audit`. An unknown parameter is refused: a misspelt filter that
/// silently matched everything would mislead an auditor.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditFilter {
    /// Records at or after this time (RFC 3339).
    from: Option<String>,
    /// Records before this time (RFC 3339).
    to: Option<String>,
    /// Only this actor (exact).
    actor: Option<String>,
    /// Only records concerning this patient id.
    patient: Option<i64>,
    /// Action codes, comma-separated (`read,search`).
    action: Option<String>,
    /// Outcome codes, comma-separated (`denied,failed`).
    outcome: Option<String>,
    /// Oldest first: records after this seq.
    after: Option<i64>,
    /// Newest first: records before this seq.
    before: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<usize>,
    /// `asc` (oldest first, the default) or `desc` (newest first).
    order: Option<String>,
}

/// Parses a comma-separated list of codes with `parse`, naming the valid ones on error.
fn codes<T: Copy>(
    name: &str,
    text: Option<&str>,
    parse: fn(&str) -> Option<T>,
    all: &[T],
    code: fn(T) -> &'static str,
) -> ApiResult<Vec<T>> {
    let Some(text) = text.filter(|text| !text.is_empty()) else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(|item| {
            parse(item.trim()).ok_or_else(|| {
                let known: Vec<&str> = all.iter().map(|value| code(*value)).collect();
                ApiError::bad_request(format!(
                    "{name}: {item:?} is not one of {}",
                    known.join(", ")
                ))
            })
        })
        .collect()
}

/// One record as the API shows it.
pub(crate) fn record_json(stored: &StoredAuditRecord) -> Value {
    let record = &stored.record;
    json!({
        "seq": stored.seq,
        "time": record.time.to_rfc3339(),
        "actor": record.actor,
        "role": record.role,
        "action": record.action.code(),
        "resource": record.resource,
        "patient": record.patient.map(|patient| patient.0),
        "outcome": record.outcome.code(),
        "source": record.source,
        "detail": record.detail,
        "previous_hash": hash_to_hex(&stored.previous_hash),
        "hash": hash_to_hex(&stored.hash),
    })
}

/// `GET /api/v1/audit?from=&to=&actor=&patient=&action=&outcome=&after=&before=&limit=&order=`:
/// audit records, oldest first (page on with `after=next_after`) or newest first with
/// `order=desc` (page on with `before=next_before`).
pub(crate) async fn audit_log(
    State(app): State<App>,
    Query(filter): Query<AuditFilter>,
) -> ApiResult<Json<Value>> {
    // Auditors only: `auth::authenticate` checked `Permission::ReadAudit` before this runs,
    // and records this search in the audit trail.
    let newest_first = match filter.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "order: {other:?} is not asc or desc"
            )));
        }
    };
    let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let defaults = AuditQuery::default();
    let query = AuditQuery {
        from: parse_time("from", filter.from.as_deref())?.unwrap_or(defaults.from),
        to: parse_time("to", filter.to.as_deref())?.unwrap_or(defaults.to),
        actor: filter.actor.filter(|actor| !actor.is_empty()),
        patient: filter.patient.map(PatientId),
        actions: codes(
            "action",
            filter.action.as_deref(),
            AuditAction::parse,
            &AuditAction::ALL,
            AuditAction::code,
        )?,
        outcomes: codes(
            "outcome",
            filter.outcome.as_deref(),
            AuditOutcome::parse,
            &AuditOutcome::ALL,
            AuditOutcome::code,
        )?,
        after: filter.after.unwrap_or(defaults.after),
        before: filter.before.unwrap_or(defaults.before),
        newest_first,
        limit,
    };
    let records = app.0.store.audit(query).await?;
    let head = app.0.store.audit_head().await?;
    // A full page may have a successor; a short one is the last.
    let next = (records.len() == limit)
        .then(|| records.last().map(|stored| stored.seq))
        .flatten();
    let items: Vec<Value> = records.iter().map(record_json).collect();
    Ok(Json(json!({
        "items": items,
        "next_after": if newest_first { None } else { next },
        "next_before": if newest_first { next } else { None },
        "head": head.map(|(seq, hash)| json!({ "seq": seq, "hash": hash_to_hex(&hash) })),
    })))
}
