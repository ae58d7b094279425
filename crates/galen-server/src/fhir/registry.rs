//! Patient and Device: read, search, create (also conditional, `If-None-Exist`) and update
//! (optionally guarded by `If-Match`), over the registry and its in-memory directory.
//!
//! A posted resource is mapped to the registry's model; what the model does not hold (a second
//! name, other identifiers, unknown elements) is not kept, so a read returns Galen's view of the
//! record. `Device.patient` reflects the current assignment and cannot be set here: assignments
//! have start and end times and are made through `/api/v1/assignments`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use galen_fhir::bundle::SearchsetBuilder;
use galen_fhir::registry::{device_from_fhir, device_to_fhir, patient_from_fhir, patient_to_fhir};
use galen_fhir::search::{DeviceQuery, PatientQuery};
use galen_fhir::{Device, IssueType, Patient, parse_resource};
use galen_model::{DeviceId, PatientId};

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
            format!("{resource_type}.id {body_id:?} differs from the id in the URL ({id})"),
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

/// The Patient with its version stamped; `None` when there is no such patient.
fn served_patient(app: &App, id: PatientId) -> Option<(Patient, String)> {
    let directory = app.0.directory.read();
    let mut patient = patient_to_fhir(directory.patient(id)?);
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
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let query = PatientQuery::parse(&params)?;
    let mut matches: Vec<galen_model::Patient> = {
        let directory = app.0.directory.read();
        directory
            .patients()
            .into_iter()
            .filter(|patient| query.matches(patient))
            .cloned()
            .collect()
    };
    query.sort_patients(&mut matches);
    let matches: Vec<Patient> = matches.iter().map(patient_to_fhir).collect();
    let total = matches.len() as u64;
    let (items, next) = page(matches, query.paging.count, query.paging.cursor.as_deref())?;
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

pub(crate) async fn create_patient(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    check_content_type(&headers)?;
    let posted: Patient = parse_resource(&body)?;
    let new = patient_from_fhir(&posted, super::today(&app))?;
    if let Some(pairs) = if_none_exist(&headers)? {
        let query = PatientQuery::parse(&pairs)?;
        let found: Vec<PatientId> = {
            let directory = app.0.directory.read();
            directory
                .patients()
                .into_iter()
                .filter(|patient| query.matches(patient))
                .map(|patient| patient.id)
                .collect()
        };
        if let Some(existing) = single_match(&found, "patients")? {
            let (patient, etag) =
                served_patient(&app, existing).ok_or_else(|| FhirError::not_found("Patient"))?;
            return Ok(answer(StatusCode::OK, &patient, &etag, None));
        }
    }
    let created = app.0.store.create_patient(new).await?;
    super::reload(&app).await?;
    tracing::info!(patient = %created.id, "patient registered over FHIR");
    let (patient, etag) =
        served_patient(&app, created.id).ok_or_else(|| FhirError::not_found("Patient"))?;
    let location = format!("{}/Patient/{}", base_url(&headers), created.id.0);
    Ok(answer(StatusCode::CREATED, &patient, &etag, Some(location)))
}

pub(crate) async fn update_patient(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    check_content_type(&headers)?;
    let id = registry_id("Patient", &id)?;
    let posted: Patient = parse_resource(&body)?;
    check_body_id("Patient", posted.id.as_deref(), id)?;
    let (_, current) = served_patient(&app, PatientId(id))
        .ok_or_else(|| update_of_missing("Patient", "create patients"))?;
    check_if_match(&headers, &current)?;
    let new = patient_from_fhir(&posted, super::today(&app))?;
    app.0.store.update_patient(PatientId(id), new).await?;
    super::reload(&app).await?;
    tracing::info!(patient = id, "patient updated over FHIR");
    let (patient, etag) =
        served_patient(&app, PatientId(id)).ok_or_else(|| FhirError::not_found("Patient"))?;
    Ok(answer(StatusCode::OK, &patient, &etag, None))
}

// --- Device -----------------------------------------------------------------------------------

/// The Device (with its current patient) with its version stamped.
fn served_device(app: &App, id: DeviceId) -> Option<(Device, String)> {
    let now = app.0.clock.now();
    let directory = app.0.directory.read();
    let device = directory.device(id)?;
    let mut resource = device_to_fhir(device, directory.patient_at(id, now));
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
    let (mut matches, patients): (Vec<galen_model::Device>, Vec<(DeviceId, Option<PatientId>)>) = {
        let directory = app.0.directory.read();
        directory
            .devices()
            .into_iter()
            .filter_map(|device| {
                let patient = directory.patient_at(device.id, now);
                query
                    .matches(device, patient)
                    .then(|| (device.clone(), (device.id, patient)))
            })
            .unzip()
    };
    query.sort_devices(&mut matches);
    let patient_of = |id: DeviceId| {
        patients
            .iter()
            .find(|(device, _)| *device == id)
            .and_then(|(_, patient)| *patient)
    };
    let matches: Vec<Device> = matches
        .iter()
        .map(|device| device_to_fhir(device, patient_of(device.id)))
        .collect();
    let total = matches.len() as u64;
    let (items, next) = page(matches, query.paging.count, query.paging.cursor.as_deref())?;
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

pub(crate) async fn create_device(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    check_content_type(&headers)?;
    let posted: Device = parse_resource(&body)?;
    let input = device_from_fhir(&posted)?;
    check_device_patient(&app, None, input.patient)?;
    if let Some(pairs) = if_none_exist(&headers)? {
        let query = DeviceQuery::parse(&pairs)?;
        let now = app.0.clock.now();
        let found: Vec<DeviceId> = {
            let directory = app.0.directory.read();
            directory
                .devices()
                .into_iter()
                .filter(|device| query.matches(device, directory.patient_at(device.id, now)))
                .map(|device| device.id)
                .collect()
        };
        if let Some(existing) = single_match(&found, "devices")? {
            let (device, etag) =
                served_device(&app, existing).ok_or_else(|| FhirError::not_found("Device"))?;
            return Ok(answer(StatusCode::OK, &device, &etag, None));
        }
    }
    let created = app.0.store.create_device(input.device).await?;
    super::reload(&app).await?;
    tracing::info!(device = %created.id, "device registered over FHIR");
    let (device, etag) =
        served_device(&app, created.id).ok_or_else(|| FhirError::not_found("Device"))?;
    let location = format!("{}/Device/{}", base_url(&headers), created.id.0);
    Ok(answer(StatusCode::CREATED, &device, &etag, Some(location)))
}

pub(crate) async fn update_device(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    check_content_type(&headers)?;
    let id = registry_id("Device", &id)?;
    let posted: Device = parse_resource(&body)?;
    check_body_id("Device", posted.id.as_deref(), id)?;
    let (_, current) = served_device(&app, DeviceId(id))
        .ok_or_else(|| update_of_missing("Device", "register devices"))?;
    check_if_match(&headers, &current)?;
    let input = device_from_fhir(&posted)?;
    check_device_patient(&app, Some(DeviceId(id)), input.patient)?;
    app.0
        .store
        .update_device(DeviceId(id), input.device)
        .await?;
    super::reload(&app).await?;
    tracing::info!(device = id, "device updated over FHIR");
    let (device, etag) =
        served_device(&app, DeviceId(id)).ok_or_else(|| FhirError::not_found("Device"))?;
    Ok(answer(StatusCode::OK, &device, &etag, None))
}
