//! The HTTP surface. Wire formats (JSON shapes) live here and only here; handlers convert them to
//! and from galen-model types explicitly.

mod audit;
mod break_glass;
mod clinical;
mod measurements;
mod oauth;
mod ops;
mod registry;
mod second_factor;
mod users;
mod vitals;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::routing::{get, post, put};
use galen_model::Timestamp;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};
use crate::{App, assets, auth};

/// Largest body of a registry or login request.
pub(crate) const REGISTRY_BODY_LIMIT: usize = 1024 * 1024;

pub(crate) fn router(app: App) -> Router {
    let protected = Router::new()
        .route("/", get(assets::index))
        .route("/patients/{id}", get(assets::patient_page))
        // Auditors only (`Permission::ReadAudit`), like the API it reads.
        .route("/audit", get(assets::audit_page))
        .route("/metrics", get(ops::metrics))
        .route(
            "/api/v1/measurements",
            post(measurements::post_measurements),
        )
        .route("/api/v1/dead-letters", get(ops::dead_letters))
        // Auditors only (`Permission::ReadAudit`).
        .route("/api/v1/audit", get(audit::audit_log))
        .route("/api/v1/mapping/templates", get(ops::mapping_templates))
        .route("/api/v1/mapping/reload", post(ops::reload_mapping))
        .route(
            "/api/v1/patients",
            get(registry::list_patients).post(registry::create_patient),
        )
        .route(
            "/api/v1/patients/{id}",
            get(registry::patient).put(registry::update_patient),
        )
        .route("/api/v1/patients/{id}/vitals", get(vitals::patient_vitals))
        .route(
            "/api/v1/devices",
            get(registry::list_devices).post(registry::create_device),
        )
        .route(
            "/api/v1/devices/{id}",
            get(registry::device).put(registry::update_device),
        )
        .route("/api/v1/devices/{id}/vitals", get(vitals::device_vitals))
        .route(
            "/api/v1/devices/{id}/credentials",
            get(registry::list_credentials).post(registry::create_credential),
        )
        .route(
            "/api/v1/devices/{id}/credentials/{credential}",
            axum::routing::delete(registry::revoke_credential),
        )
        .route(
            "/api/v1/assignments",
            get(registry::list_assignments).post(registry::create_assignment),
        )
        .route(
            "/api/v1/assignments/{id}/end",
            post(registry::end_assignment),
        )
        .route("/api/v1/alarms", get(clinical::active_alarms))
        .route("/api/v1/alarms/log", get(clinical::alarm_log))
        .route("/api/v1/alarms/{id}/{action}", post(clinical::alarm_action))
        .route("/api/v1/alarm-report", get(clinical::alarm_report))
        .route("/api/v1/clinical/config", get(clinical::clinical_config))
        .route("/api/v1/webhooks/deliveries", get(clinical::deliveries))
        .route(
            "/api/v1/patients/{id}/clinical",
            get(clinical::patient_clinical),
        )
        .route(
            "/api/v1/patients/{id}/scores",
            get(clinical::patient_scores),
        )
        .route(
            "/api/v1/patients/{id}/observations",
            post(clinical::post_observation),
        )
        .route(
            "/api/v1/patients/{id}/spo2-scale",
            put(clinical::put_spo2_scale),
        )
        .route(
            "/api/v1/patients/{id}/limits/{rule}",
            put(clinical::put_limit).delete(clinical::delete_limit),
        )
        .route("/api/v1/users", get(users::list).post(users::create))
        .route("/api/v1/users/{id}", put(users::update))
        .route(
            "/api/v1/users/{id}/tokens",
            get(users::list_tokens).post(users::create_token),
        )
        .route(
            "/api/v1/tokens/{id}",
            axum::routing::delete(users::revoke_token),
        )
        .route(
            "/api/v1/oauth-clients",
            get(oauth::list_clients).post(oauth::create_client),
        )
        .route(
            "/api/v1/oauth-clients/{id}",
            axum::routing::delete(oauth::revoke_client),
        )
        .route("/api/v1/session", get(users::session))
        .route(
            "/api/v1/break-glass",
            get(break_glass::list).post(break_glass::create),
        )
        .route(
            "/api/v1/break-glass/{id}",
            axum::routing::delete(break_glass::end),
        )
        .route(
            "/api/v1/session/totp",
            post(second_factor::enrol).delete(second_factor::remove_own),
        )
        .route("/api/v1/session/totp/confirm", post(second_factor::confirm))
        .route(
            "/api/v1/users/{id}/totp",
            axum::routing::delete(second_factor::remove_for),
        )
        .route("/api/v1/dashboard", get(vitals::dashboard))
        .route("/api/v1/stream", get(vitals::stream))
        .merge(crate::fhir::router())
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            auth::authenticate,
        ));
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        // Machine clients authenticate at the token endpoint itself (and it audits itself).
        .route("/oauth/token", post(oauth::token))
        .route(
            "/fhir/.well-known/smart-configuration",
            get(oauth::smart_configuration),
        )
        .route("/assets/{name}", get(assets::asset))
        .merge(crate::fhir::public_router())
        .merge(protected)
        .layer(middleware::map_response(redact_rejections))
        // Registry and login bodies are small: 1 MiB at most. The ingest handler reads its body
        // itself with the configured limit, so that an oversize batch is answered and recorded.
        .layer(axum::extract::DefaultBodyLimit::max(
            app.0.config.max_body_bytes.min(REGISTRY_BODY_LIMIT),
        ))
        .with_state(app)
}

/// Rewrites axum's own rejections of a request (a path segment that is not an id, a query
/// string or form that does not deserialize): their plain-text explanations quote the input, and
/// a client that put an MRN where an id belongs must not get it back in an error, nor have it in a
/// proxy's log. Galen's own errors are JSON and already say nothing of the input's values.
async fn redact_rejections(response: axum::response::Response) -> axum::response::Response {
    let plain_text = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/plain"));
    if !response.status().is_client_error() || !plain_text {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Rejection texts are short; anything longer is cut, never passed on unread.
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(bytes) => galen_fhir::redact::serde_message(&String::from_utf8_lossy(&bytes)),
        Err(_) => "the request was refused".to_owned(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    axum::response::Response::from_parts(parts, axum::body::Body::from(text))
}

/// Whether the request says its body is JSON.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// Parses a JSON request body with errors that say what to fix.
pub(crate) fn parse_json<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> ApiResult<T> {
    if !is_json(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with 'Content-Type: application/json'",
        ));
    }
    serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!(
            "invalid JSON body: {}",
            galen_fhir::redact::json_error(&error)
        ))
    })
}

/// Parses an optional RFC 3339 query parameter.
pub(crate) fn parse_time(name: &str, text: Option<&str>) -> ApiResult<Option<Timestamp>> {
    text.map(|text| {
        Timestamp::parse_rfc3339(text)
            .map_err(|error| ApiError::bad_request(format!("{name}: {error}")))
    })
    .transpose()
}
