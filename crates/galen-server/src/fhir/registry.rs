//! Patient and Device: read, search, create (also conditional, `If-None-Exist`) and update
//! (optionally guarded by `If-Match`), over the registry and its in-memory directory.
//!
//! A posted resource is mapped to the registry's model, and the resource itself is kept beside the
//! record in the same commit (the store's registry documents). A read serves the posted resource
//! as it was sent while it still maps to the record; after the record changed through another
//! path (the native API), the record wins and what it has no place for (other identifiers and
//! names, unknown elements) is added from the posted copy. `Device.patient` reflects the current
//! assignment and cannot be set here: assignments have start and end times and are made through
//! `/api/v1/assignments`.
//!
//! Create and update are planned first ([`plan_create`], [`plan_update`]: parsed, mapped,
//! conditions checked against the directory) and then written with
//! [`galen_store::RegistryStore::apply_registry`], so a transaction Bundle can plan every entry
//! and write them all in one commit.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use galen_fhir::bundle::SearchsetBuilder;
use galen_fhir::registry::{
    device_from_fhir, device_to_fhir, patient_from_fhir, patient_to_fhir, restore_unmapped_device,
    restore_unmapped_patient,
};
use galen_fhir::search::{DeviceQuery, PatientQuery};
use galen_fhir::{Device, IssueType, Patient, parse_resource};
use galen_model::{DeviceId, PatientId};
use galen_store::{DocumentOwner, Registered, RegistryChange, RegistryWrite};

use crate::directory::DirectorySnapshot;

use super::{
    FhirError, FhirResult, base_url, check_accept, check_content_type, check_if_match,
    fhir_response, resource_headers, stamp,
};
use crate::App;

fn patient_meta(patient: &mut Patient) -> &mut Option<galen_fhir::Meta> {
    &mut patient.meta
}

fn device_meta(device: &mut Device) -> &mut Option<galen_fhir::Meta> {
    &mut device.meta
}

/// A logical id of the registry: a positive integer.
fn registry_id(resource_type: &str, id: &str) -> FhirResult<i64> {
    id.parse::<i64>()
        .ok()
        .filter(|number| *number > 0 && number.to_string() == id)
        .ok_or_else(|| FhirError::not_found(resource_type))
}

/// Refuses a body whose `id` differs from the URL's.
fn check_body_id(resource_type: &str, body_id: Option<&str>, id: i64) -> FhirResult<()> {
    match body_id {
        Some(body_id) if body_id != id.to_string() => Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueType::Invalid,
            format!("{resource_type}.id differs from the id in the URL ({id})"),
        )),
        _ => Ok(()),
    }
}

/// The page `paging` asks for, from `items` already filtered and sorted; the cursor is the
/// offset of the next page.
fn page<T>(
    items: Vec<T>,
    count: usize,
    cursor: Option<&str>,
) -> FhirResult<(Vec<T>, Option<String>)> {
    let offset = super::read_cursor(cursor, |cursor| cursor.parse::<usize>().ok())?.unwrap_or(0);
    let total = items.len();
    let items: Vec<T> = items.into_iter().skip(offset).take(count).collect();
    let next = (offset + items.len() < total && count > 0).then(|| (offset + count).to_string());
    Ok((items, next))
}

// --- Patient ----------------------------------------------------------------------------------

/// The Patient to serve for a record: the posted copy if one is kept (see the module comment).
fn render_patient(directory: &DirectorySnapshot, patient: &galen_model::Patient) -> Patient {
    directory
        .document(DocumentOwner::Patient(patient.id))
        .and_then(|document| galen_fhir::parse_resource::<Patient>(document.as_bytes()).ok())
        .map_or_else(
            || patient_to_fhir(patient),
            |posted| restore_unmapped_patient(patient, &posted),
        )
}

/// The Device to serve for a record, as [`render_patient`].
fn render_device(
    directory: &DirectorySnapshot,
    device: &galen_model::Device,
    patient: Option<PatientId>,
) -> Device {
    directory
        .document(DocumentOwner::Device(device.id))
        .and_then(|document| galen_fhir::parse_resource::<Device>(document.as_bytes()).ok())
        .map_or_else(
            || device_to_fhir(device, patient),
            |posted| restore_unmapped_device(device, patient, &posted),
        )
}

/// The Patient with its version stamped; `None` when there is no such patient.
pub(crate) fn served_patient(app: &App, id: PatientId) -> Option<(Patient, String)> {
    let directory = app.0.directory.read();
    let mut patient = render_patient(&directory, directory.patient(id)?);
    let etag = stamp(&mut patient, patient_meta);
    Some((patient, etag))
}

pub(crate) async fn read_patient(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let id = registry_id("Patient", &id)?;
    let (patient, etag) =
        served_patient(&app, PatientId(id)).ok_or_else(|| FhirError::not_found("Patient"))?;
    Ok(answer(StatusCode::OK, &patient, &etag, None))
}

pub(crate) async fn search_patients(
    State(app): State<App>,
    principal: crate::access::Principal,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let query = PatientQuery::parse(&params)?;
    // Only the page's patients are rendered (a kept document is parsed per rendering).
    let (items, next, total) = {
        let directory = app.0.directory.read();
        let mut matches: Vec<&galen_model::Patient> = directory
            .patients()
            .into_iter()
            .filter(|patient| query.matches(patient) && principal.may_see(patient))
            .collect();
        query.sort_patients(&mut matches);
        let total = matches.len() as u64;
        let (items, next) = page(matches, query.paging.count, query.paging.cursor.as_deref())?;
        let items: Vec<Patient> = items
            .into_iter()
            .map(|patient| render_patient(&directory, patient))
            .collect();
        (items, next, total)
    };
    let mut bundle = SearchsetBuilder::new(&base_url(&headers), "Patient", &params)
        .total(total)
        .next_cursor(next.as_deref());
    for mut patient in items {
        stamp(&mut patient, patient_meta);
        bundle = bundle.entry(patient);
    }
    Ok(fhir_response(
        StatusCode::OK,
        &bundle.build(),
        HeaderMap::new(),
    ))
}

/// The query of an `If-None-Exist` header, if the request has one.
fn if_none_exist(headers: &HeaderMap) -> FhirResult<Option<Vec<(String, String)>>> {
    let Some(condition) = headers
        .get("if-none-exist")
        .and_then(|value| value.to_str().ok())
    else {
        return Ok(None);
    };
    serde_urlencoded::from_str(condition)
        .map(Some)
        .map_err(|_| {
            FhirError::new(
                StatusCode::BAD_REQUEST,
                IssueType::Invalid,
                "If-None-Exist must be a search query such as identifier=system|value",
            )
        })
}

/// What an `If-None-Exist` search found: nothing (create), one (answer it), several (`412`).
fn single_match<T: Copy>(found: &[T], what: &str) -> FhirResult<Option<T>> {
    match found {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        several => Err(FhirError::new(
            StatusCode::PRECONDITION_FAILED,
            IssueType::MultipleMatches,
            format!("If-None-Exist matches {} {what}", several.len()),
        )),
    }
}

/// The answer carrying one versioned resource.
fn answer(
    status: StatusCode,
    resource: &impl serde::Serialize,
    etag: &str,
    location: Option<String>,
) -> Response {
    fhir_response(status, resource, resource_headers(etag, location))
}

/// The error of an update of a resource that does not exist (ids are Galen's to assign).
fn update_of_missing(resource_type: &str, create: &str) -> FhirError {
    FhirError::new(
        StatusCode::NOT_FOUND,
        IssueType::NotFound,
        format!(
            "{resource_type} not found; {create} with POST /fhir/{resource_type} (Galen assigns ids)"
        ),
    )
}

/// A registry resource type, for the create and update handlers both types share.
pub(crate) trait RegistryType {
    /// `Patient` or `Device`.
    const NAME: &'static str;
}

/// Patient, as a [`RegistryType`].
#[derive(Debug)]
pub(crate) struct PatientType;

impl RegistryType for PatientType {
    const NAME: &'static str = "Patient";
}

/// Device, as a [`RegistryType`].
#[derive(Debug)]
pub(crate) struct DeviceType;

impl RegistryType for DeviceType {
    const NAME: &'static str = "Device";
}

/// `POST /fhir/Patient` and `POST /fhir/Device`.
pub(crate) async fn create<T: RegistryType>(
    State(app): State<App>,
    auditor: Auditor,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    check_content_type(&headers)?;
    let planned = plan_create(&app, T::NAME, &headers, &body)?;
    carry_out(&app, &headers, &auditor, planned).await
}

/// `PUT /fhir/Patient/{id}` and `PUT /fhir/Device/{id}`.
pub(crate) async fn update<T: RegistryType>(
    State(app): State<App>,
    auditor: Auditor,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    check_content_type(&headers)?;
    let planned = plan_update(&app, T::NAME, &id, &headers, &body)?;
    carry_out(&app, &headers, &auditor, planned).await
}

// --- Planned writes ---------------------------------------------------------------------------

/// What a create or update of a registry resource comes to, before anything is written.
#[derive(Debug)]
pub(crate) enum Planned {
    /// A conditional create found this record: nothing to write, the answer is `200`.
    Existing(DocumentOwner),
    /// A write to make; `created` tells `201` from `200`.
    Write {
        /// The change and the posted resource.
        write: RegistryWrite,
        /// Whether it creates a record.
        created: bool,
    },
}

/// The resource as kept beside its record: the parsed body, re-serialised (so it parses again),
/// without the client's `id` (Galen assigns ids).
fn document_of<R: serde::Serialize>(resource: &R) -> Option<String> {
    let mut value = serde_json::to_value(resource).ok()?;
    if let Some(object) = value.as_object_mut() {
        object.remove("id");
    }
    serde_json::to_string(&value).ok()
}

/// Plans `POST /fhir/{resource_type}` (conditional with `If-None-Exist`).
pub(crate) fn plan_create(
    app: &App,
    resource_type: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> FhirResult<Planned> {
    let condition = if_none_exist(headers)?;
    match resource_type {
        "Patient" => {
            let posted: Patient = parse_resource(body)?;
            let new = patient_from_fhir(&posted, super::today(app))?;
            if let Some(pairs) = condition {
                let query = PatientQuery::parse(&pairs)?;
                let found: Vec<PatientId> = app
                    .0
                    .directory
                    .read()
                    .patients()
                    .into_iter()
                    .filter(|patient| query.matches(patient))
                    .map(|patient| patient.id)
                    .collect();
                if let Some(existing) = single_match(&found, "patients")? {
                    return Ok(Planned::Existing(DocumentOwner::Patient(existing)));
                }
            }
            Ok(Planned::Write {
                write: RegistryWrite {
                    change: RegistryChange::CreatePatient(new),
                    document: document_of(&posted),
                },
                created: true,
            })
        }
        "Device" => {
            let posted: Device = parse_resource(body)?;
            let input = device_from_fhir(&posted)?;
            check_device_patient(app, None, input.patient)?;
            if let Some(pairs) = condition {
                let query = DeviceQuery::parse(&pairs)?;
                let now = app.0.clock.now();
                let found: Vec<DeviceId> = {
                    let directory = app.0.directory.read();
                    directory
                        .devices()
                        .into_iter()
                        .filter(|device| {
                            query.matches(device, directory.patient_at(device.id, now))
                        })
                        .map(|device| device.id)
                        .collect()
                };
                if let Some(existing) = single_match(&found, "devices")? {
                    return Ok(Planned::Existing(DocumentOwner::Device(existing)));
                }
            }
            Ok(Planned::Write {
                write: RegistryWrite {
                    change: RegistryChange::CreateDevice(input.device),
                    document: document_of(&posted),
                },
                created: true,
            })
        }
        other => Err(not_registry(other)),
    }
}

/// Plans `PUT /fhir/{resource_type}/{id}` (guarded by `If-Match` when present).
pub(crate) fn plan_update(
    app: &App,
    resource_type: &str,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> FhirResult<Planned> {
    let id = registry_id(resource_type, id)?;
    match resource_type {
        "Patient" => {
            let posted: Patient = parse_resource(body)?;
            check_body_id("Patient", posted.id.as_deref(), id)?;
            let (_, current) = served_patient(app, PatientId(id))
                .ok_or_else(|| update_of_missing("Patient", "create patients"))?;
            check_if_match(headers, &current)?;
            let new = patient_from_fhir(&posted, super::today(app))?;
            Ok(Planned::Write {
                write: RegistryWrite {
                    change: RegistryChange::UpdatePatient(PatientId(id), new),
                    document: document_of(&posted),
                },
                created: false,
            })
        }
        "Device" => {
            let posted: Device = parse_resource(body)?;
            check_body_id("Device", posted.id.as_deref(), id)?;
            let (_, current) = served_device(app, DeviceId(id))
                .ok_or_else(|| update_of_missing("Device", "register devices"))?;
            check_if_match(headers, &current)?;
            let input = device_from_fhir(&posted)?;
            check_device_patient(app, Some(DeviceId(id)), input.patient)?;
            Ok(Planned::Write {
                write: RegistryWrite {
                    change: RegistryChange::UpdateDevice(DeviceId(id), input.device),
                    document: document_of(&posted),
                },
                created: false,
            })
        }
        other => Err(not_registry(other)),
    }
}

fn not_registry(resource_type: &str) -> FhirError {
    FhirError::new(
        StatusCode::NOT_FOUND,
        IssueType::NotSupported,
        format!("{resource_type} is not a registry resource"),
    )
}

/// The record a write or a conditional create names.
pub(crate) fn owner_of(registered: &Registered) -> DocumentOwner {
    match registered {
        Registered::Patient(patient) => DocumentOwner::Patient(patient.id),
        Registered::Device(device) => DocumentOwner::Device(device.id),
    }
}

/// The served resource of a record (as JSON), its ETag and its location.
pub(crate) fn served(
    app: &App,
    headers: &HeaderMap,
    owner: DocumentOwner,
) -> FhirResult<(serde_json::Value, String, String)> {
    let base = base_url(headers);
    let (json, etag, location) = match owner {
        DocumentOwner::Patient(id) => {
            let (patient, etag) =
                served_patient(app, id).ok_or_else(|| FhirError::not_found("Patient"))?;
            (
                serde_json::to_value(patient),
                etag,
                format!("{base}/Patient/{}", id.0),
            )
        }
        DocumentOwner::Device(id) => {
            let (device, etag) =
                served_device(app, id).ok_or_else(|| FhirError::not_found("Device"))?;
            (
                serde_json::to_value(device),
                etag,
                format!("{base}/Device/{}", id.0),
            )
        }
    };
    let json = json.map_err(|_| {
        FhirError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueType::Exception,
            "the resource could not be serialised",
        )
    })?;
    Ok((json, etag, location))
}

/// Who writes, for the audit records stored in the transaction of the write.
#[derive(Debug, Clone)]
pub(crate) struct Auditor {
    pub(crate) principal: crate::access::Principal,
    source: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Auditor {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let principal = crate::access::Principal::from_request_parts(parts, state).await?;
        let source = parts
            .extensions
            .get::<crate::auth::RequestSource>()
            .map_or_else(|| "in-process".to_owned(), |source| source.0.clone());
        Ok(Auditor { principal, source })
    }
}

impl Auditor {
    /// A record of an action of this writer, stored by the caller in its write's transaction.
    pub(crate) fn record(
        &self,
        time: galen_model::Timestamp,
        action: galen_store::AuditAction,
        resource: &str,
        patient: Option<PatientId>,
        detail: &str,
    ) -> galen_store::AuditRecord {
        crate::audit::request_record(
            time,
            &self.principal.actor,
            self.principal.role.code(),
            action,
            resource,
            patient,
            galen_store::AuditOutcome::Success,
            &self.source,
            detail.to_owned(),
        )
    }

    /// The audit records of registry writes (`created[i]`: whether write `i` creates), built from
    /// what the transaction wrote so that a create names its new id.
    pub(crate) fn records(
        &self,
        now: galen_model::Timestamp,
        created: Vec<bool>,
    ) -> galen_store::RegistryAudit {
        let auditor = self.clone();
        galen_store::RegistryAudit::new(move |written| {
            written
                .iter()
                .zip(created)
                .map(|(registered, created)| {
                    let (resource, patient) = match registered {
                        Registered::Patient(patient) => {
                            (format!("Patient/{}", patient.id.0), Some(patient.id))
                        }
                        Registered::Device(device) => (format!("Device/{}", device.id.0), None),
                    };
                    let action = if created {
                        galen_store::AuditAction::Create
                    } else {
                        galen_store::AuditAction::Update
                    };
                    auditor.record(
                        now,
                        action,
                        &resource,
                        patient,
                        "FHIR registry write, recorded in its transaction",
                    )
                })
                .collect()
        })
    }
}

/// Writes a planned create or update alone, with its audit record in the same transaction, and
/// answers it.
async fn carry_out(
    app: &App,
    headers: &HeaderMap,
    auditor: &Auditor,
    planned: Planned,
) -> FhirResult<Response> {
    let mut audited = false;
    let (owner, status) = match planned {
        Planned::Existing(owner) => (owner, StatusCode::OK),
        Planned::Write { write, created } => {
            let audit = auditor.records(app.0.clock.now(), vec![created]);
            let written = app
                .0
                .store
                .apply_registry_audited(vec![write], audit)
                .await?;
            audited = true;
            super::reload(app).await?;
            let owner = written.first().map(owner_of).ok_or_else(|| {
                FhirError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    IssueType::Exception,
                    "the store wrote nothing",
                )
            })?;
            match owner {
                DocumentOwner::Patient(id) if created => {
                    tracing::info!(patient = %id, "patient registered over FHIR");
                }
                DocumentOwner::Patient(id) => {
                    tracing::info!(patient = %id, "patient updated over FHIR");
                }
                DocumentOwner::Device(id) if created => {
                    tracing::info!(device = %id, "device registered over FHIR");
                }
                DocumentOwner::Device(id) => {
                    tracing::info!(device = %id, "device updated over FHIR");
                }
            }
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (owner, status)
        }
    };
    let (resource, etag, location) = served(app, headers, owner)?;
    let location = (status == StatusCode::CREATED).then_some(location);
    let mut response = answer(status, &resource, &etag, location);
    if audited {
        response.extensions_mut().insert(crate::auth::Audited);
    }
    Ok(response)
}

// --- Device -----------------------------------------------------------------------------------

/// The Device (with its current patient) with its version stamped.
pub(crate) fn served_device(app: &App, id: DeviceId) -> Option<(Device, String)> {
    let now = app.0.clock.now();
    let directory = app.0.directory.read();
    let device = directory.device(id)?;
    let mut resource = render_device(&directory, device, directory.patient_at(id, now));
    let etag = stamp(&mut resource, device_meta);
    Some((resource, etag))
}

pub(crate) async fn read_device(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let id = registry_id("Device", &id)?;
    let (device, etag) =
        served_device(&app, DeviceId(id)).ok_or_else(|| FhirError::not_found("Device"))?;
    Ok(answer(StatusCode::OK, &device, &etag, None))
}

pub(crate) async fn search_devices(
    State(app): State<App>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let query = DeviceQuery::parse(&params)?;
    let now = app.0.clock.now();
    let (items, next, total) = {
        let directory = app.0.directory.read();
        let mut matches: Vec<&galen_model::Device> = directory
            .devices()
            .into_iter()
            .filter(|device| query.matches(device, directory.patient_at(device.id, now)))
            .collect();
        query.sort_devices(&mut matches);
        let total = matches.len() as u64;
        let (items, next) = page(matches, query.paging.count, query.paging.cursor.as_deref())?;
        let items: Vec<Device> = items
            .into_iter()
            .map(|device| render_device(&directory, device, directory.patient_at(device.id, now)))
            .collect();
        (items, next, total)
    };
    let mut bundle = SearchsetBuilder::new(&base_url(&headers), "Device", &params)
        .total(total)
        .next_cursor(next.as_deref());
    for mut device in items {
        stamp(&mut device, device_meta);
        bundle = bundle.entry(device);
    }
    Ok(fhir_response(
        StatusCode::OK,
        &bundle.build(),
        HeaderMap::new(),
    ))
}

/// Refuses a `Device.patient` that is not the device's current assignment.
fn check_device_patient(
    app: &App,
    device: Option<DeviceId>,
    patient: Option<PatientId>,
) -> FhirResult<()> {
    let Some(patient) = patient else {
        return Ok(());
    };
    let current =
        device.and_then(|device| app.0.directory.read().patient_at(device, app.0.clock.now()));
    if current == Some(patient) {
        return Ok(());
    }
    Err(FhirError::from(galen_fhir::Error::element(
        "Device.patient",
        galen_fhir::Problem::Invalid,
        "Galen assigns devices to patients with start and end times through /api/v1/assignments; Device.patient shows the current assignment and cannot change it",
    )))
}
