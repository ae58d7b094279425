//! The TOTP second factor of the signed-in account (`/api/v1/session/totp`), and its removal by
//! another administrator (`DELETE /api/v1/users/{id}/totp`).
//!
//! Enrolment is two steps, so that a factor is active only once the account holder's app
//! produces its codes: `POST /api/v1/session/totp` makes a secret and answers it once (base32 and
//! an `otpauth://` URI); `POST /api/v1/session/totp/confirm {code}` activates it. Removing it
//! needs a current code (`DELETE /api/v1/session/totp {code}`), or another administrator, for an
//! account holder who lost the device. Only a password session may enrol or remove its own
//! factor: not an API token, which would let a stolen token lock the account holder out.
//! The secret is never logged and never answered again; every request is audited as a
//! configuration change by the authentication gate.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::parse_json;
use crate::App;
use crate::access::Principal;
use crate::access::totp::{self, DIGITS, STEP_SECONDS};
use crate::audit::WriteRecord;
use crate::auth::Audited;
use crate::error::{ApiError, ApiResult};

/// The account of a password session, or why the request is refused.
fn session_account(principal: &Principal) -> ApiResult<i64> {
    match (principal.user, principal.token) {
        (Some(user), None) => Ok(user),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only a signed-in account (a password session, not an API token) manages its own second factor",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireCode {
    code: String,
}

fn wrong_code() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "the code does not match: enter the current 6-digit code, and check the device's clock",
    )
}

/// `POST /api/v1/session/totp`: a new secret for the caller's account, answered once. Replaces
/// an unconfirmed one; `409` while a factor is active (remove it first).
pub(crate) async fn enrol(
    State(app): State<App>,
    record: WriteRecord,
    principal: Principal,
) -> ApiResult<(StatusCode, Extension<Audited>, Json<Value>)> {
    let id = session_account(&principal)?;
    let secret = totp::new_secret().ok_or_else(|| ApiError::internal("no randomness"))?;
    let user = app
        .0
        .store
        .begin_totp(id, secret.to_vec(), record.records())
        .await?;
    app.0.accounts.remember_user(user.clone());
    tracing::info!(actor = %principal.actor, account = id, "second-factor enrolment started");
    Ok((
        StatusCode::CREATED,
        record.stored(),
        Json(json!({
            "secret": totp::base32(&secret),
            "uri": totp::otpauth_uri(&user.details.name, &secret),
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": STEP_SECONDS,
            "active": false,
        })),
    ))
}

/// `POST /api/v1/session/totp/confirm {code}`: activates the enrolled secret with a current code
/// from the app (that code is then used up).
pub(crate) async fn confirm(
    State(app): State<App>,
    record: WriteRecord,
    principal: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(Extension<Audited>, Json<Value>)> {
    let id = session_account(&principal)?;
    let wire: WireCode = parse_json(&headers, &body)?;
    let pending = app
        .0
        .accounts
        .account(id)
        .and_then(|user| user.totp)
        .filter(|factor| !factor.active)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "no second factor is being enrolled: start with POST /api/v1/session/totp",
            )
        })?;
    let step = totp::matching_step(&pending.secret, &wire.code, app.0.clock.now())
        .ok_or_else(wrong_code)?;
    let user = app
        .0
        .store
        .activate_totp(id, step, record.records())
        .await?;
    app.0.accounts.remember_user(user);
    tracing::info!(actor = %principal.actor, account = id, "second factor activated");
    Ok((record.stored(), Json(json!({ "active": true }))))
}

/// `DELETE /api/v1/session/totp {code}`: removes the caller's second factor with a current code
/// (used up like a login's). An unconfirmed enrolment is cancelled without one.
pub(crate) async fn remove_own(
    State(app): State<App>,
    record: WriteRecord,
    principal: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(Extension<Audited>, Json<Value>)> {
    let id = session_account(&principal)?;
    let factor = app.0.accounts.account(id).and_then(|user| user.totp);
    if let Some(factor) = factor.filter(|factor| factor.active) {
        let wire: WireCode = parse_json(&headers, &body)?;
        let step = totp::matching_step(&factor.secret, &wire.code, app.0.clock.now())
            .ok_or_else(wrong_code)?;
        if !app.0.store.claim_totp_step(id, step).await? {
            return Err(wrong_code());
        }
    }
    let user = app.0.store.remove_totp(id, record.records()).await?;
    app.0.accounts.remember_user(user);
    tracing::info!(actor = %principal.actor, account = id, "second factor removed");
    Ok((record.stored(), Json(json!({ "active": false }))))
}

/// `DELETE /api/v1/users/{id}/totp` (administrators): removes another account's second factor,
/// for a holder who lost the device. Not one's own: that needs a code.
pub(crate) async fn remove_for(
    State(app): State<App>,
    record: WriteRecord,
    principal: Principal,
    Path(id): Path<i64>,
) -> ApiResult<(Extension<Audited>, Json<Value>)> {
    if principal.user == Some(id) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "remove your own second factor with a current code (DELETE /api/v1/session/totp), or ask another administrator",
        ));
    }
    let user = app.0.store.remove_totp(id, record.records()).await?;
    app.0.accounts.remember_user(user);
    tracing::info!(actor = %principal.actor, account = id, "second factor removed by an administrator");
    Ok((record.stored(), Json(json!({ "active": false }))))
}
