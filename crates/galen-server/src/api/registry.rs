//! Patients, devices and assignments over JSON. After every change the registry cache is
//! reloaded so that ingest attributes the next measurement with the new facts.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use galen_model::{
    Assignment, AssignmentId, Device, DeviceId, DeviceKind, DeviceStatus, HumanName, Identifier,
    NewAssignment, NewDevice, NewPatient, Patient, PatientId, Sex, Timestamp,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::parse_json;
use crate::App;
use crate::audit::WriteRecord;
use crate::auth::Audited;
use crate::error::{ApiError, ApiResult};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireIdentifier {
    system: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireName {
    family: String,
    #[serde(default)]
    given: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WirePatient {
    identifier: WireIdentifier,
    name: WireName,
    birth_date: String,
    sex: String,
    /// Absent or empty: not placed on a ward.
    #[serde(default)]
    ward: String,
    #[serde(default)]
    bed: String,
}

impl WirePatient {
    fn into_model(self, today: time::Date) -> ApiResult<NewPatient> {
        let patient = NewPatient {
            identifier: Identifier {
                system: self.identifier.system,
                value: self.identifier.value,
            },
            name: HumanName {
                family: self.name.family,
                given: self.name.given,
            },
            birth_date: NewPatient::parse_birth_date(&self.birth_date)?,
            sex: Sex::parse(&self.sex)?,
            ward: self.ward,
            bed: self.bed,
        };
        patient.validate(today)?;
        Ok(patient)
    }
}

pub(crate) fn patient_json(patient: &Patient) -> Value {
    let details = &patient.details;
    let date = details.birth_date;
    json!({
        "id": patient.id.0,
        "identifier": { "system": details.identifier.system, "value": details.identifier.value },
        "name": { "family": details.name.family, "given": details.name.given },
        "birth_date": format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day()),
        "sex": details.sex.code(),
        "ward": details.ward,
        "bed": details.bed,
    })
}

fn today(app: &App) -> time::Date {
    let seconds = app.0.clock.now().micros().div_euclid(1_000_000);
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .map(|now| now.date())
        .unwrap_or(time::Date::MAX)
}

async fn reload(app: &App) -> ApiResult<()> {
    app.0.directory.reload(app.0.store.as_ref()).await?;
    Ok(())
}

pub(crate) async fn create_patient(
    State(app): State<App>,
    record: WriteRecord,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Extension<Audited>, Json<Value>)> {
    let wire: WirePatient = parse_json(&headers, &body)?;
    let patient = app
        .0
        .store
        .create_patient(wire.into_model(today(&app))?, record.records())
        .await?;
    reload(&app).await?;
    tracing::info!(patient = %patient.id, "patient registered");
    Ok((
        StatusCode::CREATED,
        record.stored(),
        Json(patient_json(&patient)),
    ))
}

pub(crate) async fn update_patient(
    State(app): State<App>,
    record: WriteRecord,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(Extension<Audited>, Json<Value>)> {
    let wire: WirePatient = parse_json(&headers, &body)?;
    let patient = app
        .0
        .store
        .update_patient(
            PatientId(id),
            wire.into_model(today(&app))?,
            record.records(),
        )
        .await?;
    reload(&app).await?;
    tracing::info!(patient = %patient.id, "patient updated");
    Ok((record.stored(), Json(patient_json(&patient))))
}

pub(crate) async fn patient(State(app): State<App>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    let patient = app
        .0
        .store
        .patient(PatientId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("patient"))?;
    Ok(Json(patient_json(&patient)))
}

#[derive(Deserialize)]
pub(crate) struct WardFilter {
    ward: Option<String>,
}

pub(crate) async fn list_patients(
    State(app): State<App>,
    principal: crate::access::Principal,
    Query(filter): Query<WardFilter>,
) -> ApiResult<Json<Value>> {
    let mut patients = app.0.store.patients(filter.ward).await?;
    patients.retain(|patient| principal.may_see(patient));
    Ok(Json(
        json!({ "items": patients.iter().map(patient_json).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireDevice {
    serial: String,
    #[serde(default)]
    manufacturer: String,
    #[serde(default)]
    model: String,
    #[serde(default = "default_kind")]
    kind: String,
    #[serde(default = "default_status")]
    status: String,
}

fn default_kind() -> String {
    DeviceKind::Other.code().to_owned()
}

fn default_status() -> String {
    DeviceStatus::Active.code().to_owned()
}

impl WireDevice {
    fn into_model(self) -> ApiResult<NewDevice> {
        let device = NewDevice {
            serial: self.serial,
            manufacturer: self.manufacturer,
            model: self.model,
            kind: DeviceKind::parse(&self.kind)?,
            status: DeviceStatus::parse(&self.status)?,
        };
        device.validate()?;
        Ok(device)
    }
}

fn device_json(device: &Device) -> Value {
    let details = &device.details;
    json!({
        "id": device.id.0,
        "serial": details.serial,
        "manufacturer": details.manufacturer,
        "model": details.model,
        "kind": details.kind.code(),
        "status": details.status.code(),
    })
}

pub(crate) async fn create_device(
    State(app): State<App>,
    record: WriteRecord,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Extension<Audited>, Json<Value>)> {
    let wire: WireDevice = parse_json(&headers, &body)?;
    let device = app
        .0
        .store
        .create_device(wire.into_model()?, record.records())
        .await?;
    reload(&app).await?;
    tracing::info!(device = %device.id, "device registered");
    Ok((
        StatusCode::CREATED,
        record.stored(),
        Json(device_json(&device)),
    ))
}

pub(crate) async fn update_device(
    State(app): State<App>,
    record: WriteRecord,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(Extension<Audited>, Json<Value>)> {
    let wire: WireDevice = parse_json(&headers, &body)?;
    let device = app
        .0
        .store
        .update_device(DeviceId(id), wire.into_model()?, record.records())
        .await?;
    reload(&app).await?;
    tracing::info!(device = %device.id, status = device.details.status.code(), "device updated");
    Ok((record.stored(), Json(device_json(&device))))
}

pub(crate) async fn device(State(app): State<App>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    let device = app
        .0
        .store
        .device(DeviceId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("device"))?;
    Ok(Json(device_json(&device)))
}

pub(crate) async fn list_devices(State(app): State<App>) -> ApiResult<Json<Value>> {
    let devices = app.0.store.devices().await?;
    Ok(Json(
        json!({ "items": devices.iter().map(device_json).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireAssignment {
    device: i64,
    patient: i64,
    start: Option<String>,
    end: Option<String>,
}

fn assignment_json(assignment: &Assignment) -> Value {
    json!({
        "id": assignment.id.0,
        "device": assignment.details.device.0,
        "patient": assignment.details.patient.0,
        "start": assignment.details.start.to_rfc3339(),
        "end": assignment.details.end.map(Timestamp::to_rfc3339),
    })
}

pub(crate) async fn create_assignment(
    State(app): State<App>,
    record: WriteRecord,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Extension<Audited>, Json<Value>)> {
    let wire: WireAssignment = parse_json(&headers, &body)?;
    let start =
        super::parse_time("start", wire.start.as_deref())?.unwrap_or_else(|| app.0.clock.now());
    let end = super::parse_time("end", wire.end.as_deref())?;
    let assignment = NewAssignment {
        device: DeviceId(wire.device),
        patient: PatientId(wire.patient),
        start,
        end,
    };
    assignment.validate()?;
    let assignment = app
        .0
        .store
        .create_assignment(assignment, record.records())
        .await?;
    reload(&app).await?;
    tracing::info!(assignment = %assignment, "device assigned");
    Ok((
        StatusCode::CREATED,
        record.stored(),
        Json(assignment_json(&assignment)),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireEnd {
    end: Option<String>,
}

pub(crate) async fn end_assignment(
    State(app): State<App>,
    record: WriteRecord,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(Extension<Audited>, Json<Value>)> {
    let wire: WireEnd = if body.is_empty() {
        WireEnd::default()
    } else {
        parse_json(&headers, &body)?
    };
    let end = super::parse_time("end", wire.end.as_deref())?.unwrap_or_else(|| app.0.clock.now());
    let assignment = app
        .0
        .store
        .end_assignment(AssignmentId(id), end, record.records())
        .await?;
    reload(&app).await?;
    // The device no longer belongs to this patient: its technical alarms end, silence is expected.
    let released = galen_clinical::Input::DeviceReleased {
        patient: assignment.details.patient,
        device: assignment.details.device,
        time: end,
    };
    if app.0.clinical.submit(vec![released]).await.is_err() {
        tracing::warn!("clinical engine stopped; device release not applied");
    }
    tracing::info!(assignment = %assignment, "assignment ended");
    Ok((record.stored(), Json(assignment_json(&assignment))))
}

#[derive(Deserialize)]
pub(crate) struct AssignmentFilter {
    device: Option<i64>,
    patient: Option<i64>,
}

pub(crate) async fn list_assignments(
    State(app): State<App>,
    Query(filter): Query<AssignmentFilter>,
) -> ApiResult<Json<Value>> {
    let assignments = app.0.store.assignments().await?;
    let items: Vec<Value> = assignments
        .iter()
        .filter(|assignment| {
            filter
                .device
                .is_none_or(|device| assignment.details.device.0 == device)
        })
        .filter(|assignment| {
            filter
                .patient
                .is_none_or(|patient| assignment.details.patient.0 == patient)
        })
        .map(assignment_json)
        .collect();
    Ok(Json(json!({ "items": items })))
}

fn credential_json(credential: &galen_store::DeviceCredential) -> Value {
    json!({
        "id": credential.id,
        "device": credential.device.0,
        "created": credential.created.to_rfc3339(),
        "revoked": credential.revoked.map(Timestamp::to_rfc3339),
    })
}

/// Issues a new secret for a device (MQTT password). The secret is shown in this answer only;
/// Galen keeps its SHA-256. Older credentials stay valid until revoked, so a device can be moved
/// to a new secret without a gap.
pub(crate) async fn create_credential(
    State(app): State<App>,
    record: WriteRecord,
    Path(id): Path<i64>,
) -> ApiResult<(StatusCode, Extension<Audited>, Json<Value>)> {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random)
        .map_err(|_| ApiError::internal("the system random generator failed"))?;
    let secret: String = std::iter::once("gds1_".to_owned())
        .chain(random.iter().map(|byte| format!("{byte:02x}")))
        .collect();
    let hash: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(secret.as_bytes()).into()
    };
    let now = app.0.clock.now();
    let credential = app
        .0
        .store
        .add_device_credential(DeviceId(id), hash, now, record.records())
        .await?;
    reload(&app).await?;
    tracing::info!(
        device = id,
        credential = credential.id,
        "device credential issued"
    );
    let mut body = credential_json(&credential);
    body["secret"] = json!(secret);
    Ok((StatusCode::CREATED, record.stored(), Json(body)))
}

/// The device's credentials, without secrets.
pub(crate) async fn list_credentials(
    State(app): State<App>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    app.0
        .store
        .device(DeviceId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("device"))?;
    let credentials = app.0.store.device_credentials().await?;
    let items: Vec<Value> = credentials
        .iter()
        .filter(|credential| credential.device == DeviceId(id))
        .map(credential_json)
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// Revokes one credential: connections can no longer be opened with it.
pub(crate) async fn revoke_credential(
    State(app): State<App>,
    record: WriteRecord,
    Path((id, credential)): Path<(i64, i64)>,
) -> ApiResult<(Extension<Audited>, Json<Value>)> {
    let now = app.0.clock.now();
    let revoked = app
        .0
        .store
        .revoke_device_credential(DeviceId(id), credential, now, record.records())
        .await?;
    reload(&app).await?;
    tracing::info!(device = id, credential, "device credential revoked");
    Ok((record.stored(), Json(credential_json(&revoked))))
}
