//! Authentication and authorization of every HTTP request.
//!
//! **Who** ([`authenticate`]): a session cookie (`galen_session`, set by `/login` for an
//! account), a personal API token (`Authorization: Bearer glt_...`), the service token
//! (`Authorization: Bearer <the token of <data-dir>/api-token>`), or an OAuth2 access token of a
//! machine client (`Authorization: Bearer <JWT from /oauth/token>`, `access::oauth`), whose SMART
//! scopes then narrow every `/fhir` request (`access::smart`). Only `galen demo` runs without:
//! then every request is the `demo` principal, and the dashboard says so.
//!
//! **What** ([`route_permission`]): each route needs one [`Permission`]; the principal's role must
//! have it (`403` otherwise). A route missing from the table is open to the service role only
//! (fail closed). **Whose**: on routes naming a patient (`/patients/{id}`, `/fhir/Patient/{id}`,
//! `/fhir/Observation/{id}`, `/fhir/Consent/{id}`), the patient must be in the principal's scope;
//! FHIR searches of patient data by a ward-bound principal must name patients in scope; lists (dashboard, patients,
//! alarms, the live stream, FHIR Patient search) are filtered by the handlers with
//! [`Principal::may_see`].
//!
//! Secrets are compared in constant time; none is logged.

use std::borrow::Cow;

use axum::Form;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use galen_model::{DeviceId, PatientId, Timestamp};
use serde::Deserialize;

use crate::App;
use crate::access::accounts::LoginFailure;
use crate::access::{Permission, Principal};
use crate::audit::{PendingRecord, action_of, request_record};
use crate::error::ApiError;
use galen_store::{AuditAction, AuditOutcome};

/// The session cookie.
const SESSION_COOKIE: &str = "galen_session";

/// Compares in time independent of where the inputs differ.
pub(crate) fn same_secret(presented: &str, expected: &str) -> bool {
    let (presented, expected) = (presented.as_bytes(), expected.as_bytes());
    let mut difference = presented.len() ^ expected.len();
    for (index, byte) in expected.iter().enumerate() {
        difference |= usize::from(byte ^ presented.get(index).copied().unwrap_or(0));
    }
    difference == 0
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|cookie| {
            cookie
                .trim()
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
        })
}

/// The principal of a request's credentials, if any are valid.
pub(crate) fn principal_of(app: &App, headers: &HeaderMap) -> Option<Principal> {
    let Some(service_token) = app.0.config.api_token.as_deref() else {
        return Some(Principal::demo());
    };
    let now = app.0.clock.now();
    if let Some(token) = bearer(headers) {
        if same_secret(token, service_token) {
            return Some(Principal::service());
        }
        if token.starts_with(crate::access::accounts::TOKEN_PREFIX) {
            return app.0.accounts.api_token(token, now);
        }
        return app.0.oauth.principal(token, now);
    }
    cookie(headers, SESSION_COOKIE).and_then(|token| app.0.accounts.session(token, now))
}

/// The permission a route needs (`None`: the route is not in the table, service role only).
/// `route` is the matched route template (`/api/v1/patients/{id}`).
pub(crate) fn route_permission(method: &Method, route: &str) -> Option<Permission> {
    use Permission as P;
    let read = *method == Method::GET || *method == Method::HEAD;
    let permission = match route {
        "/" | "/patients/{id}" | "/api/v1/dashboard" | "/api/v1/stream" => P::ReadPatientData,
        "/api/v1/patients" | "/api/v1/patients/{id}" | "/fhir/Patient" | "/fhir/Patient/{id}" => {
            if read {
                P::ReadPatientData
            } else {
                P::ManageRegistry
            }
        }
        "/api/v1/patients/{id}/vitals"
        | "/api/v1/patients/{id}/clinical"
        | "/api/v1/patients/{id}/scores"
        | "/api/v1/devices/{id}/vitals"
        | "/api/v1/alarms"
        | "/api/v1/alarms/log"
        | "/api/v1/alarm-report"
        | "/api/v1/clinical/config"
        | "/fhir/Observation/{id}"
        | "/fhir/Flag"
        | "/fhir/Flag/{id}" => P::ReadPatientData,
        "/api/v1/patients/{id}/observations"
        | "/api/v1/patients/{id}/spo2-scale"
        | "/api/v1/patients/{id}/limits/{rule}"
        | "/api/v1/alarms/{id}/{action}" => P::RecordCare,
        "/api/v1/measurements" => P::Ingest,
        "/fhir/Observation" => {
            if read {
                P::ReadPatientData
            } else {
                P::Ingest
            }
        }
        "/api/v1/devices" | "/api/v1/devices/{id}" | "/fhir/Device" | "/fhir/Device/{id}" => {
            if read {
                P::ViewRegistry
            } else {
                P::ManageRegistry
            }
        }
        "/api/v1/assignments" => {
            if read {
                P::ViewRegistry
            } else {
                P::ManageRegistry
            }
        }
        "/fhir/Location"
        | "/fhir/Location/{id}"
        | "/fhir/DeviceMetric"
        | "/fhir/DeviceMetric/{id}" => P::ViewRegistry,
        "/api/v1/assignments/{id}/end"
        | "/api/v1/devices/{id}/credentials"
        | "/api/v1/devices/{id}/credentials/{credential}" => P::ManageRegistry,
        "/metrics"
        | "/api/v1/dead-letters"
        | "/api/v1/mapping/templates"
        | "/api/v1/mapping/reload"
        | "/api/v1/webhooks/deliveries" => P::Integrate,
        "/fhir/$export"
        | "/fhir/Patient/$export"
        | "/fhir/Group/{id}/$export"
        | "/fhir/$export-status/{job}"
        | "/fhir/$export-file/{job}/{file}" => P::Export,
        "/fhir/Subscription"
        | "/fhir/Subscription/{id}"
        | "/fhir/Subscription/{id}/$status"
        | "/fhir/Subscription/{id}/$get-ws-binding-token" => P::Subscribe,
        "/audit" | "/api/v1/audit" | "/fhir/AuditEvent" | "/fhir/AuditEvent/{id}" => P::ReadAudit,
        // Auditors review grants; clinicians and nurses break the glass and end their grants.
        "/api/v1/break-glass" => {
            if read {
                P::ReadAudit
            } else {
                P::BreakGlass
            }
        }
        "/api/v1/break-glass/{id}" => P::BreakGlass,
        "/fhir/Consent" | "/fhir/Consent/{id}" => {
            if read {
                P::ReadPatientData
            } else {
                P::RecordConsent
            }
        }
        "/api/v1/users"
        | "/api/v1/users/{id}"
        | "/api/v1/users/{id}/tokens"
        | "/api/v1/users/{id}/totp"
        | "/api/v1/tokens/{id}"
        | "/api/v1/oauth-clients"
        | "/api/v1/oauth-clients/{id}" => P::ManageUsers,
        _ => return None,
    };
    Some(permission)
}

/// Routes any authenticated principal may call: each checks what it does itself (a batch carries
/// out every entry as its own request) or concerns only the caller.
fn open_to_every_principal(route: &str) -> bool {
    matches!(route, "/fhir" | "/fhir/{*rest}") || own_session_route(route)
}

/// Routes about the caller's own session and second factor: the only ones open to an
/// administrator who must enrol a second factor first.
fn own_session_route(route: &str) -> bool {
    matches!(
        route,
        "/api/v1/session" | "/api/v1/session/totp" | "/api/v1/session/totp/confirm"
    )
}

/// With `--require-admin-totp`, an administrator account without an active second factor may
/// only enrol one (its API tokens included: they act as the account).
fn second_factor_missing(app: &App, principal: &Principal, route: &str) -> bool {
    app.0.config.access.require_admin_totp
        && principal.role == crate::access::Role::Administrator
        && principal
            .user
            .is_some_and(|user| !app.0.accounts.totp_active(user))
        && !own_session_route(route)
}

/// Answers a request without valid credentials: `401` for the API, a redirect for pages.
fn unauthenticated(path: &str) -> Response {
    if path.starts_with("/fhir/") || path == "/fhir" {
        let mut response = crate::fhir::unauthorized().into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        response
    } else if path.starts_with("/api/") || path == "/metrics" {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "sign in, or present an API token as 'Authorization: Bearer <token>'",
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        response
    } else {
        Redirect::to("/login").into_response()
    }
}

/// Answers a request its principal may not make.
pub(crate) fn forbidden(path: &str, message: &str) -> Response {
    if path.starts_with("/fhir") {
        crate::fhir::forbidden(message).into_response()
    } else {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response()
    }
}

/// The patient a patient-level route names, when its path says which.
fn named_patient(app: &App, route: &str, path: &str) -> Option<Option<PatientId>> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match route {
        "/patients/{id}"
        | "/api/v1/patients/{id}"
        | "/api/v1/patients/{id}/vitals"
        | "/api/v1/patients/{id}/clinical"
        | "/api/v1/patients/{id}/scores"
        | "/api/v1/patients/{id}/observations"
        | "/api/v1/patients/{id}/spo2-scale"
        | "/api/v1/patients/{id}/limits/{rule}" => {
            let id = if route.starts_with("/patients") {
                segments.get(1)
            } else {
                segments.get(3)
            };
            Some(id.and_then(|id| id.parse().ok()).map(PatientId))
        }
        "/fhir/Patient/{id}" => Some(
            segments
                .get(2)
                .and_then(|id| id.parse().ok())
                .map(PatientId),
        ),
        // The patient of an existing consent (a read or an update of it).
        "/fhir/Consent/{id}" => Some(
            segments
                .get(2)
                .and_then(|id| id.parse().ok())
                .and_then(|id| app.0.consents.patient_of(galen_model::ConsentId(id))),
        ),
        "/fhir/Observation/{id}" => {
            // `{device}.{code}.{micros}`: the patient the device was assigned to then. Score ids
            // (`score.{table}.{patient}.{micros}`) name the patient directly.
            let id = segments.get(2)?;
            let parts: Vec<&str> = id.split('.').collect();
            match parts.as_slice() {
                ["score", _, patient, _] => Some(patient.parse().ok().map(PatientId)),
                [device, _, micros] => {
                    let device = DeviceId(device.parse().ok()?);
                    let time = Timestamp::from_micros(micros.parse().ok()?);
                    Some(app.0.directory.read().patient_at(device, time))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The patients a FHIR search names with `patient`/`subject` (references or ids).
fn searched_patients(query: &str) -> Vec<Option<PatientId>> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, _)| {
            let name = name.split(':').next().unwrap_or("");
            name == "patient" || name == "subject"
        })
        .flat_map(|(_, value)| {
            value
                .split(',')
                .map(|reference| {
                    reference
                        .trim()
                        .trim_start_matches("Patient/")
                        .parse()
                        .ok()
                        .map(PatientId)
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Where a request came from (the peer address, or `in-process`); in the request's extensions
/// for handlers that write their own audit records.
#[derive(Debug, Clone)]
pub(crate) struct RequestSource(pub(crate) String);

/// In a response's extensions: the handler stored the request's audit records itself, in the
/// transaction of its write, so the gate writes none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Audited;

/// Where a request came from, for the audit trail: the peer address when the server knows it.
pub(crate) fn source_of(request: &Request) -> String {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::hardening::Peer>>()
        .map(|info| info.0.addr.to_string())
        .or_else(|| {
            request
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.to_string())
        })
        .unwrap_or_else(|| "in-process".to_owned())
}

/// Why a principal may not make a request, or `None`.
/// `named` is what [`named_patient`] found for the request's path.
fn refusal(
    app: &App,
    principal: &Principal,
    method: &Method,
    route: &str,
    path: &str,
    query: &str,
    named: Option<Option<PatientId>>,
) -> Option<Cow<'static, str>> {
    // A machine client's scopes narrow every request, open routes included (its token is for
    // the FHIR API only).
    if let Some(grant) = &principal.smart
        && let Some(reason) = grant.scopes.refusal(method, route, path, query)
    {
        return Some(Cow::Owned(reason));
    }
    if !open_to_every_principal(route) {
        let allowed = match route_permission(method, route) {
            Some(permission) => principal.may(permission),
            None => principal.may(Permission::ManageUsers) && principal.sees_everyone(),
        };
        if !allowed {
            return Some("your role does not allow this".into());
        }
    }
    if principal.sees_everyone() {
        return None;
    }
    if let Some(patient) = named {
        let visible = patient.is_some_and(|id| {
            app.0
                .directory
                .read()
                .patient(id)
                .is_some_and(|patient| principal.may_see(patient))
        });
        if !visible {
            return Some("this patient is outside your wards".into());
        }
    }
    if matches!(route, "/api/v1/devices/{id}/vitals" | "/fhir/Flag/{id}") {
        return Some(
            "outside an all-ward scope, read patient data through the patient (patient=)".into(),
        );
    }
    let patient_search = matches!(route, "/fhir/Observation" | "/fhir/Flag" | "/fhir/Consent")
        && method == Method::GET;
    if patient_search {
        let named = searched_patients(query);
        let directory = app.0.directory.read();
        let in_scope = !named.is_empty()
            && named.iter().all(|patient| {
                patient
                    .and_then(|id| directory.patient(id))
                    .is_some_and(|patient| principal.may_see(patient))
            });
        if !in_scope {
            return Some("name the patients to search (patient=), each in your scope".into());
        }
    }
    None
}

/// Why `principal` may not make a write a FHIR transaction plans (it is not replayed through the
/// router, so the gate checks each entry here, as if it had been sent alone): role, SMART
/// scopes and ward scope. `route` is the route template the entry would match, `path` its path.
pub(crate) fn entry_refusal(
    app: &App,
    principal: &Principal,
    method: &Method,
    route: &str,
    path: &str,
) -> Option<Cow<'static, str>> {
    let named = named_patient(app, route, path);
    refusal(app, principal, method, route, path, "", named)
}

/// Authenticates, authorizes and scopes every protected request; puts the [`Principal`] in the
/// request's extensions; writes the request's audit record before the answer leaves.
pub(crate) async fn authenticate(
    State(app): State<App>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|matched| matched.as_str().to_owned())
        .unwrap_or_default();
    let method = request.method().clone();
    let source = source_of(&request);
    let now = app.0.clock.now();
    let action = action_of(&method, &route);
    let Some(mut principal) = principal_of(&app, request.headers()) else {
        // By its route: an unauthenticated path is whatever the client typed (see below).
        let record = request_record(
            now,
            "unauthenticated",
            "none",
            action,
            &route,
            None,
            AuditOutcome::Denied,
            &source,
            "no valid credentials".to_owned(),
        );
        app.0.audit.record(record).await;
        return unauthenticated(&path);
    };
    app.0.accounts.with_emergency(&mut principal, now);
    // The patient the record names: the one in the path, else the first one searched for.
    let named = named_patient(&app, &route, &path);
    let patient = named.flatten().or_else(|| {
        searched_patients(request.uri().query().unwrap_or(""))
            .into_iter()
            .flatten()
            .next()
    });
    // A request about a patient opened by a break-glass grant says so in its record.
    let emergency = patient.is_some_and(|id| principal.emergency.contains(&id));
    // This request's record, by its outcome and detail. A successful request is recorded by its
    // path (its ids named records that exist); a refused or failed one by its route template,
    // because its path holds whatever the client typed where an id belongs, which can be an MRN
    // or a name. The patient a refused request named is still recorded, as its id.
    let record = |outcome: AuditOutcome, detail: String| {
        request_record(
            now,
            &principal.actor,
            principal.role.code(),
            action,
            if outcome == AuditOutcome::Success {
                &path
            } else {
                &route
            },
            patient,
            outcome,
            &source,
            if emergency {
                format!("{detail} [break-glass]")
            } else {
                detail
            },
        )
    };
    let query = request.uri().query().unwrap_or("").to_owned();
    let reason = if second_factor_missing(&app, &principal, &route) {
        Some(Cow::Borrowed(
            "administrators must enrol a second factor first: POST /api/v1/session/totp",
        ))
    } else {
        refusal(&app, &principal, &method, &route, &path, &query, named)
    };
    if let Some(reason) = reason {
        tracing::info!(actor = %principal.actor, role = principal.role.code(), %route, %reason, "request refused");
        app.0
            .audit
            .record(record(AuditOutcome::Denied, reason.to_string()))
            .await;
        return forbidden(&path, &reason);
    }
    request.extensions_mut().insert(principal.clone());
    request
        .extensions_mut()
        .insert(RequestSource(source.clone()));
    // For a handler that stores the record in its write's own transaction (audit::WriteRecord).
    let in_transaction = format!(
        "{method} {route}, stored with the write{}",
        principal
            .token
            .map(|token| format!(" via API token {token}"))
            .unwrap_or_default()
    );
    request
        .extensions_mut()
        .insert(PendingRecord(record(AuditOutcome::Success, in_transaction)));
    let response = next.run(request).await;
    if response.extensions().get::<Audited>().is_some() {
        return response;
    }
    let status = response.status();
    let outcome = if status.is_success() || status.is_redirection() {
        AuditOutcome::Success
    } else if status == StatusCode::FORBIDDEN {
        AuditOutcome::Denied
    } else {
        AuditOutcome::Failed
    };
    let detail = format!(
        "{method} {route} {}{}{}",
        status.as_u16(),
        principal
            .token
            .map(|token| format!(" via API token {token}"))
            .unwrap_or_default(),
        principal
            .smart
            .as_ref()
            .map(|grant| format!(
                " via OAuth client {} (access token {})",
                grant.client_id, grant.token_id
            ))
            .unwrap_or_default()
    );
    let durable = app.0.audit.record(record(outcome, detail)).await;
    let reads = matches!(method, Method::GET | Method::HEAD);
    if !durable && reads && outcome == AuditOutcome::Success {
        // Nothing is disclosed without its audit record.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit trail could not be written; nothing was served, retry later",
        )
            .into_response();
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "not authenticated",
            )
            .into_response()
        })
    }
}

pub(crate) async fn login_page() -> Html<&'static str> {
    Html(crate::assets::LOGIN_HTML)
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    name: String,
    password: String,
    /// The TOTP code of an account with a second factor; empty otherwise.
    #[serde(default)]
    code: String,
}

/// `POST /login`: an account's name and password, and its TOTP code when it has a second factor;
/// a session cookie on success. Every failure gets the same answer.
pub(crate) async fn login(State(app): State<App>, Form(form): Form<LoginForm>) -> Response {
    let now = app.0.clock.now();
    let attempt = app
        .0
        .accounts
        .login(
            app.0.store.as_ref(),
            now,
            &form.name,
            &form.password,
            &form.code,
        )
        .await;
    // The name is recorded when it is an account's (a security officer needs to see guessing
    // against one account); a name that is no account's is not repeated: it may be a mistyped
    // password, or anything else someone typed into the field.
    let (action, outcome, detail) = match &attempt {
        Ok(_) => (AuditAction::Login, AuditOutcome::Success, String::new()),
        Err(LoginFailure::Locked(_)) => (
            AuditAction::LoginFailed,
            AuditOutcome::Denied,
            "account locked".to_owned(),
        ),
        Err(LoginFailure::SecondFactor) => (
            AuditAction::LoginFailed,
            AuditOutcome::Failed,
            "right password, missing, wrong or reused second-factor code".to_owned(),
        ),
        Err(_) => (
            AuditAction::LoginFailed,
            AuditOutcome::Failed,
            "wrong name or password".to_owned(),
        ),
    };
    let actor: String = if app.0.accounts.exists(&form.name) {
        form.name.chars().take(200).collect()
    } else {
        "unknown-account".to_owned()
    };
    let record = request_record(
        now, &actor, "none", action, "/login", None, outcome, "http", detail,
    );
    if !app.0.audit.record(record).await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Html(crate::assets::LOGIN_FAILED_HTML.as_str()),
        )
            .into_response();
    }
    match attempt {
        Ok((token, principal)) => {
            tracing::info!(actor = %principal.actor, "signed in");
            let secure = if app.0.config.secure_cookies {
                "; Secure"
            } else {
                ""
            };
            let cookie =
                format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/{secure}");
            // Each role lands on the page it may see: auditors see no patient data.
            let landing = if principal.may(Permission::ReadAudit)
                && !principal.may(Permission::ReadPatientData)
            {
                "/audit"
            } else {
                "/"
            };
            ([(header::SET_COOKIE, cookie)], Redirect::to(landing)).into_response()
        }
        Err(failure) => {
            match failure {
                LoginFailure::Locked(_) => tracing::warn!("sign-in refused: account locked"),
                LoginFailure::Invalid | LoginFailure::SecondFactor => {
                    tracing::warn!("sign-in failed");
                }
                LoginFailure::Unavailable => tracing::error!("sign-in could not be recorded"),
            }
            let status = if failure == LoginFailure::Unavailable {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::UNAUTHORIZED
            };
            (status, Html(crate::assets::LOGIN_FAILED_HTML.as_str())).into_response()
        }
    }
}

/// `POST /logout`: ends the session and clears the cookie.
pub(crate) async fn logout(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        if let Some(principal) = app.0.accounts.session(token, app.0.clock.now()) {
            let record = request_record(
                app.0.clock.now(),
                &principal.actor,
                principal.role.code(),
                AuditAction::Logout,
                "/logout",
                None,
                AuditOutcome::Success,
                "http",
                String::new(),
            );
            app.0.audit.record(record).await;
        }
        app.0.accounts.logout(token);
    }
    let cookie = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("ab", "abc"));
        assert!(!same_secret("abcd", "abc"));
        assert!(!same_secret("", "abc"));
    }

    #[test]
    fn credentials_from_header_or_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "theme=dark; galen_session=s3cret".parse().expect("header"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("s3cret"));
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            "Bearer other".parse().expect("header"),
        );
        assert_eq!(bearer(&headers), Some("other"));
    }

    #[test]
    fn searches_name_their_patients() {
        assert_eq!(
            searched_patients("patient=Patient/3,4&code=8867-4&subject:Patient=5"),
            vec![Some(PatientId(3)), Some(PatientId(4)), Some(PatientId(5))]
        );
        assert_eq!(searched_patients("code=x"), Vec::new());
        assert_eq!(searched_patients("patient=abc"), vec![None]);
    }
}
