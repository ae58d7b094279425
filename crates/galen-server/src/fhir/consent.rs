//! Consent: read, search, create and update of patients' consents (`galen_fhir::consent` maps
//! them; `crate::consent` keeps them in memory and enforces them).
//!
//! **Who.** Reading needs `ReadPatientData`, writing `RecordConsent` (clinicians and nurses for
//! the patients of their wards, a patient account for its own patient, integration engineers);
//! both are limited to the principal's scope: the gate checks the patient of an existing consent
//! (`auth.rs`), this module the patient a posted Consent names, and searches by scoped principals
//! must name their patients.
//!
//! **Terms never change.** An update may change a consent's status (withdraw it: `inactive`;
//! `entered-in-error`; or reinstate it) and the elements Galen does not interpret, never its
//! terms (patient, scope, permit or deny, recipients, period, date): a new choice is a new
//! Consent. So every decision the audit trail attributes to `Consent/{id}` was made under the
//! terms that consent carries now.
//!
//! **Audit.** A create or update stores its audit record in the consent write's own transaction
//! ([`galen_store::ConsentStore`]); the gate writes no second one.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use galen_fhir::bundle::SearchsetBuilder;
use galen_fhir::consent::{consent_from_fhir, same_terms, served_consent};
use galen_fhir::search::ConsentQuery;
use galen_fhir::{Consent, IssueType, parse_resource};
use galen_model::ConsentId;
use galen_store::{AuditAction, ConsentAudit, StoredConsent};

use super::registry::Auditor;
use super::{
    FhirError, FhirResult, base_url, check_accept, check_content_type, check_if_match,
    fhir_response, resource_headers, stamp,
};
use crate::App;
use crate::access::Principal;

fn consent_meta(consent: &mut Consent) -> &mut Option<galen_fhir::Meta> {
    &mut consent.meta
}

/// The Consent served for a stored consent, with its version stamped; and its ETag.
fn served(stored: &StoredConsent) -> (Consent, String) {
    let posted = parse_resource::<Consent>(stored.document.as_bytes()).ok();
    let mut consent = served_consent(&stored.consent, posted.as_ref());
    let etag = stamp(&mut consent, consent_meta);
    (consent, etag)
}

/// A consent id: a positive integer as Galen writes it.
fn consent_id(id: &str) -> FhirResult<ConsentId> {
    id.parse::<i64>()
        .ok()
        .filter(|number| *number > 0 && number.to_string() == id)
        .map(ConsentId)
        .ok_or_else(|| FhirError::not_found("Consent"))
}

/// The posted resource as kept beside the record: without the client's `id` and `meta`.
fn document_of(resource: &Consent) -> FhirResult<String> {
    let mut kept = resource.clone();
    kept.id = None;
    kept.meta = None;
    serde_json::to_string(&kept).map_err(|_| {
        FhirError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueType::Exception,
            "the resource could not be serialised",
        )
    })
}

/// Refuses a consent of a patient Galen does not know or the principal may not see.
fn check_patient(
    app: &App,
    principal: &Principal,
    patient: galen_model::PatientId,
) -> FhirResult<()> {
    let directory = app.0.directory.read();
    let Some(registered) = directory.patient(patient) else {
        return Err(FhirError::from(galen_fhir::Error::element(
            "Consent.patient",
            galen_fhir::Problem::Invalid,
            format!("Patient/{} is not registered", patient.0),
        )));
    };
    if principal.may_see(registered) {
        Ok(())
    } else {
        Err(super::forbidden("this patient is outside your wards"))
    }
}

/// The answer to a write, with its audit record already stored.
fn written(headers: &HeaderMap, stored: &StoredConsent, status: StatusCode) -> Response {
    let (consent, etag) = served(stored);
    let location = (status == StatusCode::CREATED)
        .then(|| format!("{}/Consent/{}", base_url(headers), stored.consent.id.0));
    let mut response = fhir_response(status, &consent, resource_headers(&etag, location));
    response.extensions_mut().insert(crate::auth::Audited);
    response
}

/// The audit record of a consent write, built from what was written (a create names its new id).
fn audit(auditor: &Auditor, now: galen_model::Timestamp, action: AuditAction) -> ConsentAudit {
    let auditor = auditor.clone();
    ConsentAudit::new(move |consent| {
        vec![auditor.record(
            now,
            action,
            &format!("Consent/{}", consent.id.0),
            Some(consent.details.patient),
            &format!(
                "FHIR Consent write, recorded in its transaction: {} {} {}",
                consent.details.purpose.code(),
                consent.details.provision.code(),
                consent.details.status.code()
            ),
        )]
    })
}

/// `POST /fhir/Consent`: records a patient's consent.
pub(crate) async fn create(
    State(app): State<App>,
    auditor: Auditor,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    check_content_type(&headers)?;
    let posted: Consent = parse_resource(&body)?;
    let now = app.0.clock.now();
    let consent = consent_from_fhir(&posted, now, &auditor.principal.actor)?;
    check_patient(&app, &auditor.principal, consent.patient)?;
    let document = document_of(&posted)?;
    let _one_at_a_time = app.0.consents.lock_writes().await;
    let stored = app
        .0
        .store
        .create_consent(consent, document, audit(&auditor, now, AuditAction::Create))
        .await?;
    app.0.consents.put(stored.clone());
    tracing::info!(consent = %stored.consent.id, patient = %stored.consent.details.patient, "consent recorded");
    Ok(written(&headers, &stored, StatusCode::CREATED))
}

/// `PUT /fhir/Consent/{id}`: changes a consent's status (see the module documentation).
pub(crate) async fn update(
    State(app): State<App>,
    auditor: Auditor,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    check_content_type(&headers)?;
    let id = consent_id(&id)?;
    let posted: Consent = parse_resource(&body)?;
    if let Some(body_id) = posted.id.as_deref()
        && body_id != id.0.to_string()
    {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueType::Invalid,
            format!(
                "Consent.id {body_id:?} differs from the id in the URL ({})",
                id.0
            ),
        ));
    }
    let _one_at_a_time = app.0.consents.lock_writes().await;
    let current = app.0.consents.get(id).ok_or_else(|| {
        FhirError::new(
            StatusCode::NOT_FOUND,
            IssueType::NotFound,
            "Consent not found; record consents with POST /fhir/Consent (Galen assigns ids)",
        )
    })?;
    check_if_match(&headers, &served(&current).1)?;
    let details = &current.consent.details;
    // When and by whom it was first recorded stay; the audit trail records this change.
    let consent = consent_from_fhir(&posted, details.recorded, &details.recorded_by)?;
    check_patient(&app, &auditor.principal, consent.patient)?;
    if !same_terms(&consent, details) {
        return Err(FhirError::from(galen_fhir::Error::element(
            "Consent.provision",
            galen_fhir::Problem::NotSupported,
            "the terms of a recorded consent (patient, scope, type, actors, period, dateTime) do not change: record a new Consent for a new choice, and set this one inactive if it no longer holds",
        )));
    }
    let document = document_of(&posted)?;
    let now = app.0.clock.now();
    let stored = app
        .0
        .store
        .update_consent(
            id,
            consent,
            document,
            audit(&auditor, now, AuditAction::Update),
        )
        .await?;
    app.0.consents.put(stored.clone());
    tracing::info!(consent = %id, status = stored.consent.details.status.code(), "consent updated");
    Ok(written(&headers, &stored, StatusCode::OK))
}

/// `GET /fhir/Consent/{id}` (the gate has checked the consent's patient against the scope).
pub(crate) async fn read(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let stored = app
        .0
        .consents
        .get(consent_id(&id)?)
        .ok_or_else(|| FhirError::not_found("Consent"))?;
    let (consent, etag) = served(&stored);
    Ok(fhir_response(
        StatusCode::OK,
        &consent,
        resource_headers(&etag, None),
    ))
}

/// `GET /fhir/Consent?patient=&status=&scope=`: in the order recorded, only patients in scope.
pub(crate) async fn search(
    State(app): State<App>,
    principal: Principal,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let query = ConsentQuery::parse(&params)?;
    let matches = {
        let directory = app.0.directory.read();
        app.0.consents.matching(|consent| {
            query.matches(consent)
                && directory
                    .patient(consent.details.patient)
                    .is_some_and(|patient| principal.may_see(patient))
        })
    };
    let offset = super::read_cursor(query.paging.cursor.as_deref(), |cursor| {
        cursor.parse::<usize>().ok()
    })?
    .unwrap_or(0);
    let total = matches.len();
    let count = query.paging.count;
    let page: Vec<&StoredConsent> = matches.iter().skip(offset).take(count).collect();
    let next = (offset + page.len() < total && count > 0).then(|| (offset + count).to_string());
    let mut bundle = SearchsetBuilder::new(&base_url(&headers), "Consent", &params)
        .total(total as u64)
        .next_cursor(next.as_deref());
    for stored in page {
        bundle = bundle.entry(served(stored).0);
    }
    Ok(fhir_response(
        StatusCode::OK,
        &bundle.build(),
        HeaderMap::new(),
    ))
}
