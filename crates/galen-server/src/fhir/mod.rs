//! The FHIR R4 (4.0.1) REST API under `/fhir`: Patient, Device, Observation (vital signs and
//! early-warning scores), Flag (alarms), Location (wards and beds) and DeviceMetric (read-only,
//! derived), AuditEvent (the audit trail, read-only), Consent (patients' consents), Subscription
//! (R5 Backport IG), batch and transaction Bundles, and Bulk Data `$export`.
//!
//! Resources are built by `galen-fhir` from the registry and the time-series store; nothing is
//! copied into a document store (a posted Patient or Device is kept beside its registry record,
//! so that it can be given back as posted). An Observation is a view of one stored value (or of a blood
//! pressure panel: systolic, diastolic and mean at one instant of one device), and a posted
//! Observation enters the same ingest pipeline as device data (validation, duplicates, scores,
//! alarms), with `fhir` as its source in dead letters and metrics.
//!
//! HTTP conventions: JSON only (`application/fhir+json`; `application/json` is accepted too);
//! every error is an `OperationOutcome` whose `expression` names the failing element; ETags are
//! weak and carry `meta.versionId`, a hash of the resource's content (the registry keeps no
//! version counter), so `If-Match` detects a concurrent change; `If-None-Exist` makes a create
//! conditional on an identifier search.

mod audit;
mod batch;
mod clinical;
mod consent;
mod device_metric;
mod export;
mod location;
mod observation;
mod registry;
mod subscription;

pub(crate) use export::{Exports, TYPES as EXPORT_TYPES};

/// The resource types the FHIR API serves (SMART scopes may name these, or `*`).
pub(crate) const RESOURCE_TYPES: [&str; 8] = [
    "Patient",
    "Device",
    "Observation",
    "Flag",
    "Location",
    "DeviceMetric",
    "AuditEvent",
    "Subscription",
];
pub(crate) use subscription::{Subscriptions, start as start_subscriptions};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use galen_fhir::{CapabilityStatementBuilder, Interaction, IssueType, Meta, OperationOutcome};
use serde::Serialize;
use sha2::Digest;

use crate::App;

/// The media type of every answer.
const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

pub(crate) fn unauthorized() -> FhirError {
    FhirError::unauthorized()
}

/// The answer to a request the caller's role or scope does not allow.
pub(crate) fn forbidden(message: &str) -> FhirError {
    FhirError::new(StatusCode::FORBIDDEN, IssueType::Forbidden, message)
}

/// Routes that need an authenticated caller.
pub(crate) fn router() -> Router<App> {
    Router::new()
        .route(
            "/fhir/Patient",
            get(registry::search_patients).post(registry::create::<registry::PatientType>),
        )
        .route(
            "/fhir/Patient/{id}",
            get(registry::read_patient).put(registry::update::<registry::PatientType>),
        )
        .route(
            "/fhir/Device",
            get(registry::search_devices).post(registry::create::<registry::DeviceType>),
        )
        .route(
            "/fhir/Device/{id}",
            get(registry::read_device).put(registry::update::<registry::DeviceType>),
        )
        .route(
            "/fhir/Observation",
            get(clinical::search_observations).post(observation::create),
        )
        .route("/fhir/Observation/{id}", get(clinical::read_observation))
        .route("/fhir/Flag", get(clinical::search_flags))
        .route("/fhir/Flag/{id}", get(clinical::read_flag))
        .route("/fhir/Location", get(location::search_locations))
        .route("/fhir/Location/{id}", get(location::read_location))
        .route(
            "/fhir/DeviceMetric",
            get(device_metric::search_device_metrics),
        )
        .route(
            "/fhir/DeviceMetric/{id}",
            get(device_metric::read_device_metric),
        )
        .route("/fhir/Consent", get(consent::search).post(consent::create))
        .route(
            "/fhir/Consent/{id}",
            get(consent::read).put(consent::update),
        )
        // Auditors only: `auth::route_permission` maps both to `Permission::ReadAudit`.
        .route("/fhir/AuditEvent", get(audit::search_audit_events))
        .route("/fhir/AuditEvent/{id}", get(audit::read_audit_event))
        .route("/fhir/$export", get(export::system))
        .route("/fhir/Patient/$export", get(export::patients))
        .route("/fhir/Group/{id}/$export", get(export::group))
        .route(
            "/fhir/$export-status/{job}",
            get(export::status).delete(export::cancel),
        )
        .route("/fhir/$export-file/{job}/{file}", get(export::file))
        .route(
            "/fhir/Subscription",
            get(subscription::search).post(subscription::create),
        )
        .route(
            "/fhir/Subscription/{id}",
            get(subscription::read).delete(subscription::delete),
        )
        .route("/fhir/Subscription/{id}/$status", get(subscription::status))
        .route(
            "/fhir/Subscription/{id}/$get-ws-binding-token",
            get(subscription::binding_token).post(subscription::binding_token),
        )
        .route("/fhir", post(batch::process))
        .route("/fhir/{*rest}", any(unsupported))
}

/// Routes open to anyone: the CapabilityStatement (clients read it before they authenticate)
/// and the Subscription websocket, where a binding token from `$get-ws-binding-token` (which
/// needs the API token) authenticates instead.
pub(crate) fn public_router() -> Router<App> {
    Router::new()
        .route("/fhir/metadata", get(metadata))
        .route(subscription::WEBSOCKET_PATH, get(subscription::websocket))
}

/// An error answered as an OperationOutcome.
#[derive(Debug)]
pub(crate) struct FhirError {
    status: StatusCode,
    outcome: OperationOutcome,
}

pub(crate) type FhirResult<T> = Result<T, FhirError>;

impl FhirError {
    pub(crate) fn new(
        status: StatusCode,
        issue: IssueType,
        diagnostics: impl Into<String>,
    ) -> Self {
        FhirError {
            status,
            outcome: galen_fhir::outcome::OutcomeBuilder::new()
                .error(issue, diagnostics)
                .build(),
        }
    }

    /// The answer to a request without a valid token.
    pub(crate) fn unauthorized() -> Self {
        FhirError::new(
            StatusCode::UNAUTHORIZED,
            IssueType::Login,
            "present the API token as 'Authorization: Bearer <token>'",
        )
    }

    pub(crate) fn not_found(what: &str) -> Self {
        FhirError::new(
            StatusCode::NOT_FOUND,
            IssueType::NotFound,
            format!("{what} not found"),
        )
    }
}

impl From<galen_fhir::Error> for FhirError {
    fn from(error: galen_fhir::Error) -> Self {
        use galen_fhir::Error as E;
        let status = match &error {
            E::Syntax { .. } | E::ResourceType { .. } | E::Search { .. } => StatusCode::BAD_REQUEST,
            E::Element { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            E::Id { .. } => StatusCode::NOT_FOUND,
        };
        FhirError {
            status,
            outcome: galen_fhir::outcome::from_error(&error),
        }
    }
}

impl From<galen_store::Error> for FhirError {
    fn from(error: galen_store::Error) -> Self {
        use galen_store::Error as E;
        match error {
            E::Conflict(message) => {
                FhirError::new(StatusCode::CONFLICT, IssueType::Duplicate, message)
            }
            E::NotFound(what) => FhirError::not_found(what),
            E::Invalid(message) => {
                FhirError::new(StatusCode::BAD_REQUEST, IssueType::Invalid, message)
            }
            E::Closed => FhirError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                IssueType::Transient,
                "the server is shutting down; retry",
            ),
            E::Corrupt(what) => {
                tracing::error!(target: "galen::integrity", %what, "stored data failed its integrity check; not served");
                FhirError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    IssueType::Exception,
                    crate::error::CORRUPT_MESSAGE,
                )
            }
            other => {
                tracing::error!(error = %other, "storage failure in the FHIR API");
                FhirError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    IssueType::Exception,
                    "internal error; nothing was stored, retry later",
                )
            }
        }
    }
}

impl From<galen_model::RegistryError> for FhirError {
    fn from(error: galen_model::RegistryError) -> Self {
        FhirError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            IssueType::Invalid,
            error.to_string(),
        )
    }
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        fhir_response(self.status, &self.outcome, HeaderMap::new())
    }
}

/// A FHIR JSON answer.
pub(crate) fn fhir_response(
    status: StatusCode,
    body: &impl Serialize,
    mut headers: HeaderMap,
) -> Response {
    let bytes = match serde_json::to_vec(body) {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::error!(%error, "a FHIR resource could not be serialised");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    (status, headers, bytes).into_response()
}

/// The version of a resource as served: a hash of its JSON without `meta`. Registry records
/// carry no version counter; the content hash changes exactly when the content does.
pub(crate) fn version_of(resource: &impl Serialize) -> String {
    let digest = sha2::Sha256::digest(serde_json::to_vec(resource).unwrap_or_default());
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Sets `meta.versionId` (computed with `meta` absent) and returns the weak ETag.
pub(crate) fn stamp<R: Serialize>(
    resource: &mut R,
    meta: fn(&mut R) -> &mut Option<Meta>,
) -> String {
    let kept = meta(resource).take();
    let version = version_of(resource);
    let mut stamped = kept.unwrap_or_default();
    stamped.version_id = Some(version.clone());
    *meta(resource) = Some(stamped);
    format!("W/\"{version}\"")
}

/// Headers of an answer that carries one versioned resource.
pub(crate) fn resource_headers(etag: &str, location: Option<String>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    if let Some(location) = location.and_then(|location| HeaderValue::from_str(&location).ok()) {
        headers.insert(header::LOCATION, location);
    }
    headers
}

/// Refuses a request whose `Accept` header rules out JSON.
pub(crate) fn check_accept(headers: &HeaderMap) -> FhirResult<()> {
    let Some(accept) = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
    else {
        return Ok(());
    };
    let acceptable = accept.split(',').any(|range| {
        let media = range.split(';').next().unwrap_or("").trim();
        matches!(
            media,
            "" | "*/*"
                | "application/*"
                | "application/fhir+json"
                | "application/json"
                | "application/json+fhir"
        )
    });
    if acceptable {
        Ok(())
    } else {
        Err(FhirError::new(
            StatusCode::NOT_ACCEPTABLE,
            IssueType::NotSupported,
            "Galen serves FHIR as JSON only: accept application/fhir+json",
        ))
    }
}

/// Refuses a request body that is not FHIR JSON.
pub(crate) fn check_content_type(headers: &HeaderMap) -> FhirResult<()> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if matches!(
        media,
        "application/fhir+json" | "application/json" | "application/json+fhir"
    ) {
        Ok(())
    } else {
        Err(FhirError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IssueType::NotSupported,
            "send the resource as application/fhir+json",
        ))
    }
}

/// `If-Match: W/"v"` against the current version: `412` when they differ.
pub(crate) fn check_if_match(headers: &HeaderMap, current_etag: &str) -> FhirResult<()> {
    let Some(wanted) = headers
        .get(header::IF_MATCH)
        .and_then(|value| value.to_str().ok())
    else {
        return Ok(());
    };
    let normalise = |tag: &str| {
        tag.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_owned()
    };
    if normalise(wanted) == normalise(current_etag) {
        Ok(())
    } else {
        Err(FhirError::new(
            StatusCode::PRECONDITION_FAILED,
            IssueType::Conflict,
            format!(
                "the resource changed: If-Match {wanted} but the current version is {current_etag}"
            ),
        ))
    }
}

/// Reads a search's `_cursor` with `parse` (`None` when it is not one Galen issued: `400`).
pub(crate) fn read_cursor<T>(
    cursor: Option<&str>,
    parse: impl FnOnce(&str) -> Option<T>,
) -> FhirResult<Option<T>> {
    cursor
        .map(|cursor| {
            parse(cursor).ok_or_else(|| {
                FhirError::new(
                    StatusCode::BAD_REQUEST,
                    IssueType::Invalid,
                    "_cursor is not one Galen issued; start the search again",
                )
            })
        })
        .transpose()
}

/// The base URL of links in Bundles, from the request's `Host`.
pub(crate) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .filter(|scheme| matches!(*scheme, "http" | "https"))
        .unwrap_or("http");
    format!("{scheme}://{host}/fhir")
}

/// Today's date by the server's clock (UTC), for birth-date checks.
pub(crate) fn today(app: &App) -> time::Date {
    let seconds = app.0.clock.now().micros().div_euclid(1_000_000);
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .map(|now| now.date())
        .unwrap_or(time::Date::MAX)
}

/// Refreshes the in-memory directory after a registry change.
pub(crate) async fn reload(app: &App) -> FhirResult<()> {
    app.0.directory.reload(app.0.store.as_ref()).await?;
    Ok(())
}

async fn metadata(State(app): State<App>, headers: HeaderMap) -> FhirResult<Response> {
    check_accept(&headers)?;
    let read_write = [
        Interaction::Read,
        Interaction::SearchType,
        Interaction::Create,
        Interaction::Update,
    ];
    let mut builder =
        CapabilityStatementBuilder::new("Galen", env!("CARGO_PKG_VERSION"), app.0.started);
    if let Some(oauth) = app.0.oauth.config() {
        builder = builder.smart_security(&format!(
            "{}/.well-known/smart-configuration",
            oauth.fhir_base()
        ));
    }
    let statement = builder
        .base_url(&base_url(&headers))
        .patient(&read_write)
        .device(&read_write)
        .observation(&[
            Interaction::Read,
            Interaction::SearchType,
            Interaction::Create,
        ])
        .flag(&[Interaction::Read, Interaction::SearchType])
        .location(&[Interaction::Read, Interaction::SearchType])
        .device_metric(&[Interaction::Read, Interaction::SearchType])
        .audit_event(&[Interaction::Read, Interaction::SearchType])
        .consent(&read_write)
        .subscription(&[
            Interaction::Read,
            Interaction::SearchType,
            Interaction::Create,
            Interaction::Delete,
        ])
        .bulk_export(&export::TYPES)
        .batch_and_transaction()
        .build();
    Ok(fhir_response(StatusCode::OK, &statement, HeaderMap::new()))
}

async fn unsupported(body: Bytes) -> FhirError {
    drop(body);
    FhirError::new(
        StatusCode::NOT_FOUND,
        IssueType::NotSupported,
        "Galen's FHIR API does not serve this; see /fhir/metadata for what it does",
    )
}
