//! Break-glass: a clinician's or nurse's emergency access to a patient outside their wards.
//!
//! HIPAA 45 CFR 164.312(a)(2)(i) asks for an emergency access procedure. Galen's:
//! - **Asked for, never assumed.** `POST /api/v1/break-glass {patient, reason, minutes?}` by a
//!   clinician or nurse account (`Permission::BreakGlass`) opens one patient for at most
//!   [`MAX_MINUTES`] (default [`DEFAULT_MINUTES`]). The reason is mandatory, at least
//!   [`MIN_REASON`] characters.
//! - **Time-limited.** The grant lapses on its own; `DELETE /api/v1/break-glass/{id}` ends it
//!   early. While it lasts, the patient is in the account's scope (reads and care), and every
//!   request naming the patient is audited as made under break-glass.
//! - **Alerted.** Each grant is logged at WARN on the `galen::security` target (ids only) and
//!   counted (`galen_break_glass_grants_total`, `galen_break_glass_active`), so monitoring can
//!   page the privacy officer; auditors review every grant with its reason at
//!   `GET /api/v1/break-glass`.
//! - **Audited in the same transaction.** The grant and its audit record (action `break-glass`,
//!   naming the patient) commit together.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use galen_model::{AuditAction, PatientId};
use galen_store::BreakGlassGrant;
use serde::Deserialize;
use serde_json::{Value, json};

use super::parse_json;
use crate::App;
use crate::access::Principal;
use crate::audit::WriteRecord;
use crate::auth::Audited;
use crate::error::{ApiError, ApiResult};

/// Minutes a grant lasts when the request does not say.
pub(crate) const DEFAULT_MINUTES: u32 = 30;
/// The longest grant, in minutes: long enough for an emergency, short enough to be re-asked.
pub(crate) const MAX_MINUTES: u32 = 60;
/// The shortest reason, in characters: a word is not a reason.
pub(crate) const MIN_REASON: usize = 10;
/// The longest reason, in characters.
const MAX_REASON: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireGrant {
    patient: i64,
    reason: Option<String>,
    minutes: Option<u32>,
}

fn grant_json(app: &App, grant: &BreakGlassGrant, with_reason: bool) -> Value {
    let now = app.0.clock.now();
    let user = app
        .0
        .accounts
        .users()
        .into_iter()
        .find(|user| user.id == grant.user)
        .map(|user| user.details.name);
    let mut value = json!({
        "id": grant.id,
        "user": grant.user,
        "actor": user,
        "patient": grant.patient.0,
        "started": grant.started.to_rfc3339(),
        "expires": grant.expires.to_rfc3339(),
        "ended": grant.ended.map(|ended| ended.to_rfc3339()),
        "active": grant.active(now),
    });
    if with_reason {
        value["reason"] = json!(grant.reason);
    }
    value
}

/// `POST /api/v1/break-glass`: opens one patient outside the account's scope for a while.
pub(crate) async fn create(
    State(app): State<App>,
    record: WriteRecord,
    principal: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Extension<Audited>, Json<Value>)> {
    let wire: WireGrant = parse_json(&headers, &body)?;
    let Some(user) = principal.user else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "break-glass is for personal accounts: sign in as yourself",
        ));
    };
    let reason = wire.reason.as_deref().map(str::trim).unwrap_or_default();
    let length = reason.chars().count();
    if !(MIN_REASON..=MAX_REASON).contains(&length) || reason.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "break-glass needs a reason of {MIN_REASON} to {MAX_REASON} characters, without control characters"
        )));
    }
    let minutes = wire.minutes.unwrap_or(DEFAULT_MINUTES);
    if !(1..=MAX_MINUTES).contains(&minutes) {
        return Err(ApiError::bad_request(format!(
            "minutes must be 1 to {MAX_MINUTES}"
        )));
    }
    let patient = PatientId(wire.patient);
    let in_scope = {
        let directory = app.0.directory.read();
        let found = directory
            .patient(patient)
            .ok_or_else(|| ApiError::not_found("patient"))?;
        principal.in_scope(found)
    };
    if in_scope {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this patient is already in your scope: no break-glass needed",
        ));
    }
    let now = app.0.clock.now();
    let grant = BreakGlassGrant {
        id: 0,
        user,
        patient,
        reason: reason.to_owned(),
        started: now,
        expires: now.add_seconds(i64::from(minutes) * 60),
        ended: None,
    };
    let mut audit = record.records();
    for entry in &mut audit {
        entry.action = AuditAction::BreakGlass;
        entry.patient = Some(patient);
        entry.detail = format!("break-glass for {minutes} min, stored with the grant");
    }
    let grant = app.0.store.create_break_glass(grant, audit).await?;
    app.0.accounts.reload(app.0.store.as_ref()).await?;
    tracing::warn!(
        target: "galen::security",
        grant = grant.id,
        actor = %principal.actor,
        patient = %patient,
        minutes,
        "break-glass access granted"
    );
    Ok((
        StatusCode::CREATED,
        record.stored(),
        Json(grant_json(&app, &grant, true)),
    ))
}

/// `DELETE /api/v1/break-glass/{id}`: ends one's own grant early.
pub(crate) async fn end(
    State(app): State<App>,
    record: WriteRecord,
    principal: Principal,
    Path(id): Path<i64>,
) -> ApiResult<(Extension<Audited>, Json<Value>)> {
    let grant = app
        .0
        .accounts
        .grants()
        .into_iter()
        .find(|grant| grant.id == id)
        .ok_or_else(|| ApiError::not_found("break-glass grant"))?;
    if Some(grant.user) != principal.user {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the account that broke the glass ends its grant",
        ));
    }
    let mut audit = record.records();
    for entry in &mut audit {
        entry.patient = Some(grant.patient);
    }
    let ended = app
        .0
        .store
        .end_break_glass(id, app.0.clock.now(), audit)
        .await?;
    app.0.accounts.reload(app.0.store.as_ref()).await?;
    tracing::info!(target: "galen::security", grant = id, "break-glass access ended");
    Ok((record.stored(), Json(grant_json(&app, &ended, true))))
}

/// `GET /api/v1/break-glass`: every grant with its reason, newest first, for auditors.
pub(crate) async fn list(State(app): State<App>) -> Json<Value> {
    let mut grants = app.0.accounts.grants();
    grants.reverse();
    let items: Vec<Value> = grants
        .iter()
        .map(|grant| grant_json(&app, grant, true))
        .collect();
    Json(json!({ "items": items }))
}

/// Appends the break-glass counters in Prometheus text format: alert on any increase of the
/// total (e.g. `increase(galen_break_glass_grants_total[5m]) > 0`).
pub(crate) fn render_metrics(app: &App, out: &mut String) {
    use std::fmt::Write;
    let now = app.0.clock.now();
    let grants = app.0.accounts.grants();
    let active = grants.iter().filter(|grant| grant.active(now)).count();
    let _ = write!(
        out,
        "# HELP galen_break_glass_grants_total Break-glass grants ever made (emergency access outside an account's wards).
# TYPE galen_break_glass_grants_total counter
galen_break_glass_grants_total {}
# HELP galen_break_glass_active Break-glass grants in force now.
# TYPE galen_break_glass_active gauge
galen_break_glass_active {active}
",
        grants.len()
    );
}
