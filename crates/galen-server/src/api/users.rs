//! Accounts and personal API tokens (`/api/v1/users`, `/api/v1/tokens`; administrators), and
//! `GET /api/v1/session` (who the caller is).
//!
//! Passwords are hashed with Argon2id before they reach the store and are never echoed; a new API
//! token's secret is in the creation answer only.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use galen_model::{PatientId, Recipient, Timestamp};
use galen_store::{ApiToken, NewUser, User, UserChange};
use serde::Deserialize;
use serde_json::{Value, json};

use super::parse_json;
use crate::App;
use crate::access::accounts::{Accounts, hash_password};
use crate::access::{Principal, Role, Scope};
use crate::audit::WriteRecord;
use crate::auth::Audited;
use crate::error::{ApiError, ApiResult};

fn user_json(user: &User) -> Value {
    json!({
        "id": user.id,
        "name": user.details.name,
        "role": user.details.role,
        "wards": user.details.wards,
        "patient": user.details.patient.map(|patient| patient.0),
        "organization": user.details.organization.as_ref().map(ToString::to_string),
        "created": user.details.created.to_rfc3339(),
        "disabled": user.disabled,
        "locked_until": user.locked_until.map(Timestamp::to_rfc3339),
        "second_factor": user.totp.as_ref().is_some_and(|totp| totp.active),
    })
}

fn token_json(token: &ApiToken) -> Value {
    json!({
        "id": token.id,
        "user": token.user,
        "label": token.label,
        "created": token.created.to_rfc3339(),
        "expires": token.expires.map(Timestamp::to_rfc3339),
        "revoked": token.revoked.map(Timestamp::to_rfc3339),
    })
}

pub(super) fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
}

/// Refuses empty or over-long text and control characters (ward names are stored separated by
/// one).
pub(super) fn check_text(what: &str, text: &str) -> ApiResult<()> {
    if text.trim().is_empty() || text.len() > 200 || text.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{what} must be 1-200 characters without control characters"
        )));
    }
    Ok(())
}

/// Checks a role and its scope: ward-bound roles need wards, a patient account its patient.
fn check_scope(app: &App, role: &str, wards: &[String], patient: Option<i64>) -> ApiResult<()> {
    let Some(role) = Role::parse(role) else {
        let codes: Vec<&str> = Role::ACCOUNT_ROLES.iter().map(|role| role.code()).collect();
        return Err(invalid(format!("role must be one of {}", codes.join(", "))));
    };
    for ward in wards {
        check_text("a ward", ward)?;
    }
    if role.ward_bound() && wards.is_empty() {
        return Err(invalid(format!(
            "a {} account needs the wards it works on (wards)",
            role.code()
        )));
    }
    match (role, patient) {
        (Role::Patient, None) => Err(invalid("a patient account needs its patient (patient)")),
        (Role::Patient, Some(id)) if app.0.directory.read().patient(PatientId(id)).is_none() => {
            Err(ApiError::not_found("patient"))
        }
        (Role::Patient, Some(_)) => Ok(()),
        (_, Some(_)) => Err(invalid("only a patient account names a patient")),
        (_, None) => Ok(()),
    }
}

/// Reads an account's organisation: `Organization/{id}`, `RelatedPerson/{id}` (a caregiver) or an
/// identifier `system|value`, for accounts that export or subscribe (not patients or devices).
fn organization(role: &str, text: Option<&str>) -> ApiResult<Option<Recipient>> {
    let Some(text) = text else {
        return Ok(None);
    };
    if matches!(Role::parse(role), Some(Role::Patient | Role::Device)) {
        return Err(invalid(
            "patient and device accounts act for no organisation (organization)",
        ));
    }
    Recipient::parse(text).map(Some).map_err(|_| {
        invalid(
            "organization must be Organization/{id}, RelatedPerson/{id} or an identifier system|value",
        )
    })
}

fn hashed(password: &str) -> ApiResult<String> {
    hash_password(password).map_err(|error| invalid(error.to_string()))
}

async fn reload(app: &App) -> ApiResult<()> {
    app.0.accounts.reload(app.0.store.as_ref()).await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireNewUser {
    name: String,
    password: String,
    role: String,
    #[serde(default)]
    wards: Vec<String>,
    patient: Option<i64>,
    organization: Option<String>,
}

/// `GET /api/v1/users`.
pub(crate) async fn list(State(app): State<App>) -> Json<Value> {
    let users: Vec<Value> = app.0.accounts.users().iter().map(user_json).collect();
    Json(json!({ "items": users }))
}

/// `POST /api/v1/users`.
pub(crate) async fn create(
    State(app): State<App>,
    record: WriteRecord,
    principal: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Extension<Audited>, Json<Value>)> {
    let wire: WireNewUser = parse_json(&headers, &body)?;
    check_text("name", &wire.name)?;
    check_scope(&app, &wire.role, &wire.wards, wire.patient)?;
    let organization = organization(&wire.role, wire.organization.as_deref())?;
    let password_hash = hashed(&wire.password)?;
    let user = app
        .0
        .store
        .create_user(
            NewUser {
                name: wire.name.trim().to_owned(),
                password_hash,
                role: wire.role,
                wards: wire.wards,
                patient: wire.patient.map(PatientId),
                organization,
                created: app.0.clock.now(),
            },
            record.records(),
        )
        .await?;
    reload(&app).await?;
    tracing::info!(actor = %principal.actor, account = user.id, role = %user.details.role, "account created");
    Ok((StatusCode::CREATED, record.stored(), Json(user_json(&user))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireUserChange {
    password: Option<String>,
    role: String,
    #[serde(default)]
    wards: Vec<String>,
    patient: Option<i64>,
    organization: Option<String>,
    #[serde(default)]
    disabled: bool,
}

/// `PUT /api/v1/users/{id}`: role, scope, password, disabled. Disabling or a new password ends
/// the account's sessions.
pub(crate) async fn update(
    State(app): State<App>,
    record: WriteRecord,
    principal: Principal,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(Extension<Audited>, Json<Value>)> {
    let wire: WireUserChange = parse_json(&headers, &body)?;
    check_scope(&app, &wire.role, &wire.wards, wire.patient)?;
    let organization = organization(&wire.role, wire.organization.as_deref())?;
    if principal.user == Some(id) && (wire.disabled || wire.role != Role::Administrator.code()) {
        return Err(invalid(
            "administrators cannot disable or demote themselves; another administrator can",
        ));
    }
    let password_hash = wire.password.as_deref().map(hashed).transpose()?;
    let new_password = password_hash.is_some();
    let user = app
        .0
        .store
        .update_user(
            id,
            UserChange {
                password_hash,
                role: wire.role,
                wards: wire.wards,
                patient: wire.patient.map(PatientId),
                organization,
                disabled: wire.disabled,
            },
            record.records(),
        )
        .await?;
    if user.disabled || new_password {
        app.0.accounts.end_sessions_of(id);
    }
    reload(&app).await?;
    tracing::info!(actor = %principal.actor, account = id, "account changed");
    Ok((record.stored(), Json(user_json(&user))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireToken {
    label: String,
    /// Days until the token stops working on its own (default 90, at most 366).
    expires_in_days: Option<u32>,
}

/// `POST /api/v1/users/{id}/tokens`: a personal API token acting as that account. The secret is
/// in this answer only.
pub(crate) async fn create_token(
    State(app): State<App>,
    record: WriteRecord,
    principal: Principal,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Extension<Audited>, Json<Value>)> {
    let wire: WireToken = parse_json(&headers, &body)?;
    check_text("label", &wire.label)?;
    let days = wire.expires_in_days.unwrap_or(90);
    if !(1..=366).contains(&days) {
        return Err(invalid("expires_in_days must be 1-366"));
    }
    let (secret, hash) = Accounts::new_token_secret()
        .ok_or_else(|| ApiError::internal("no randomness for the token"))?;
    let now = app.0.clock.now();
    let expires = now.add_seconds(i64::from(days) * 24 * 3600);
    let token = app
        .0
        .store
        .create_api_token(id, wire.label, hash, now, Some(expires), record.records())
        .await?;
    reload(&app).await?;
    tracing::info!(actor = %principal.actor, account = id, token = token.id, "API token issued");
    let mut answer = token_json(&token);
    answer["token"] = json!(secret);
    Ok((StatusCode::CREATED, record.stored(), Json(answer)))
}

/// `GET /api/v1/users/{id}/tokens`.
pub(crate) async fn list_tokens(
    State(app): State<App>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    let tokens: Vec<Value> = app
        .0
        .store
        .api_tokens()
        .await?
        .iter()
        .filter(|token| token.user == id)
        .map(token_json)
        .collect();
    Ok(Json(json!({ "items": tokens })))
}

/// `DELETE /api/v1/tokens/{id}`: revokes a token at once.
pub(crate) async fn revoke_token(
    State(app): State<App>,
    record: WriteRecord,
    principal: Principal,
    Path(id): Path<i64>,
) -> ApiResult<(Extension<Audited>, Json<Value>)> {
    let token = app
        .0
        .store
        .revoke_api_token(id, app.0.clock.now(), record.records())
        .await?;
    reload(&app).await?;
    tracing::info!(actor = %principal.actor, token = id, "API token revoked");
    Ok((record.stored(), Json(token_json(&token))))
}

/// `GET /api/v1/session`: the caller's identity, role, permissions, scope and whether its
/// account has an active second factor.
pub(crate) async fn session(State(app): State<App>, principal: Principal) -> Json<Value> {
    let scope = match &principal.scope {
        Scope::All => json!({ "all": true }),
        Scope::Wards(wards) => json!({ "wards": wards }),
        Scope::Patient(patient) => json!({ "patient": patient.0 }),
        Scope::Nobody => json!({ "nobody": true }),
    };
    let permissions: Vec<String> = principal
        .role
        .permissions()
        .iter()
        .map(|permission| format!("{permission:?}"))
        .collect();
    Json(json!({
        "actor": principal.actor,
        "role": principal.role.code(),
        "permissions": permissions,
        "scope": scope,
        "break_glass_patients": principal.emergency.iter().map(|patient| patient.0).collect::<Vec<_>>(),
        "organization": principal.organization.as_ref().map(ToString::to_string),
        "second_factor": principal.user.is_some_and(|user| app.0.accounts.totp_active(user)),
    }))
}
