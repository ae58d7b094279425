//! Observation: read and search over the time-series store, create through the ingest pipeline.
//!
//! **Read** parses the id (`{device}.{code}.{micros}`), reads the series that code needs at that
//! instant and builds the Observation. **Search** turns `patient`/`subject` into the devices and
//! intervals of the patient's assignments, `device` into whole device series (unassigned data
//! included), and `date` into time intervals; it then scans the store in time slices (six hours,
//! doubling each time one comes back short) in the requested order until the page is full, so a
//! page costs about what it returns however long the range. The `next` link carries the last
//! Observation's id as the cursor: the next page starts strictly after it. Results are ordered by
//! effective time, then device, then code; `_sort=-date` reverses that. `total` is given only when the first page
//! holds everything (counting a long range would cost a full scan).
//!
//! **Create** reads the posted Observation into the pipeline's items (each value, or each blood
//! pressure component, one item; the sender's identifier, suffixed per component, as the item id),
//! with `fhir` as the source. A value that cannot be read becomes a dead letter like any other.
//! `201` with `Location` when something was stored, `200` with the stored Observation when all of
//! it was already there (a retry), `422` with an OperationOutcome naming each refused element.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use galen_fhir::bundle::SearchsetBuilder;
use galen_fhir::observation::{
    DeviceHandle, ObservationCode, ObservationKey, PostedObservation, Reading, VitalReading,
    group_readings, observation_for_key, parse_observation_id, read_posted_observation,
};
use galen_fhir::outcome::OutcomeBuilder;
use galen_fhir::search::ObservationQuery;
use galen_fhir::{IssueSeverity, IssueType, Observation, parse_resource};
use galen_model::{DeviceId, PatientId, Rejection, RejectionReason, Timestamp, VitalSign};

use super::{
    FhirError, FhirResult, base_url, check_accept, check_content_type, fhir_response,
    resource_headers,
};
use crate::App;
use crate::pipeline::{Incoming, ItemResult, Unreadable};

/// The source name of this adapter in dead letters and metrics.
pub(crate) const SOURCE: &str = "fhir";
/// The first time slice of a search scan.
const FIRST_SLICE_MICROS: i64 = 6 * 3600 * 1_000_000;

/// A device series to read, over `[from, to)`.
#[derive(Debug, Clone, Copy)]
struct Scope {
    device: DeviceId,
    from: Timestamp,
    to: Timestamp,
}

/// Sets the Observation's version and returns its weak ETag. The Observation is built from the
/// readings under its key alone, so a hash of those readings (values and attribution) changes
/// exactly when it does, and costs far less than hashing the JSON.
fn stamp_observation(
    observation: &mut Observation,
    key: &ObservationKey,
    readings: &[VitalReading],
) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for reading in readings
        .iter()
        .filter(|reading| reading.device == key.device && reading.time == key.time)
        .filter(|reading| key.code.vitals_to_read().contains(&reading.vital))
    {
        hash.update(reading.vital.storage_code().to_le_bytes());
        let value = match reading.reading {
            Reading::Value(value) => value.to_bits(),
            Reading::Absent(_) => u64::MAX,
        };
        hash.update(value.to_le_bytes());
        hash.update(reading.patient.map_or(0, |patient| patient.0).to_le_bytes());
    }
    let digest = hash.finalize();
    let version: String = digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut meta = observation.meta.take().unwrap_or_default();
    meta.version_id = Some(version.clone());
    observation.meta = Some(meta);
    format!("W/\"{version}\"")
}

/// Readings of `vitals` of `device` in `[from, to)`, attributed by the assignments.
async fn readings(
    app: &App,
    device: DeviceId,
    vitals: &[VitalSign],
    from: Timestamp,
    to: Timestamp,
) -> FhirResult<Vec<VitalReading>> {
    let mut found = Vec::new();
    for vital in vitals {
        let points = app.0.store.range(device, *vital, from, to).await?;
        if points.is_empty() {
            continue;
        }
        let directory = app.0.directory.read();
        found.extend(points.into_iter().map(|point| VitalReading {
            device,
            patient: directory.patient_at(device, point.time),
            vital: *vital,
            time: point.time,
            reading: Reading::from_device_value(point.value),
        }));
    }
    Ok(found)
}

/// The Observation `key` names, versioned, with its ETag, if the store has it.
async fn stored_observation(
    app: &App,
    key: &ObservationKey,
) -> FhirResult<Option<(Observation, String)>> {
    if app.0.directory.read().device(key.device).is_none() {
        return Ok(None);
    }
    let found = readings(
        app,
        key.device,
        key.code.vitals_to_read(),
        key.time,
        key.time.add_micros(1),
    )
    .await?;
    Ok(observation_for_key(key, &found).map(|mut observation| {
        let etag = stamp_observation(&mut observation, key, &found);
        (observation, etag)
    }))
}

pub(crate) async fn read(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let key = parse_observation_id(&id)?;
    let (observation, etag) = stored_observation(&app, &key)
        .await?
        .ok_or_else(|| FhirError::not_found("Observation"))?;
    Ok(fhir_response(
        StatusCode::OK,
        &observation,
        resource_headers(&etag, None),
    ))
}

/// The device series a search has to read, before its time window is applied.
fn scopes(app: &App, query: &ObservationQuery) -> Vec<Scope> {
    let directory = app.0.directory.read();
    let device_allowed = |device: DeviceId| {
        query
            .devices
            .as_ref()
            .is_none_or(|devices| devices.contains(&device))
            && query
                .ids
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|key| key.device == device))
    };
    let mut scopes = Vec::new();
    match &query.patients {
        Some(patients) => {
            for patient in patients {
                for assignment in directory.assignments_of(*patient, Timestamp::MIN, Timestamp::MAX)
                {
                    let details = assignment.details;
                    if device_allowed(details.device) {
                        scopes.push(Scope {
                            device: details.device,
                            from: details.start,
                            to: details.end.unwrap_or(Timestamp::MAX),
                        });
                    }
                }
            }
        }
        None => {
            for device in directory.devices() {
                if device_allowed(device.id) {
                    scopes.push(Scope {
                        device: device.id,
                        from: Timestamp::MIN,
                        to: Timestamp::MAX,
                    });
                }
            }
        }
    }
    scopes
}

/// The order of search results: effective time, then device, then code.
fn order(key: &ObservationKey) -> (Timestamp, DeviceId, ObservationCode) {
    (key.time, key.device, key.code)
}

/// Intersection of `[a, b)` and `[c, d)`, if not empty.
fn overlap(
    a: Timestamp,
    b: Timestamp,
    c: Timestamp,
    d: Timestamp,
) -> Option<(Timestamp, Timestamp)> {
    let from = a.max(c);
    let to = b.min(d);
    (from < to).then_some((from, to))
}

/// Observations of `scopes` in `[from, to)` that match `query`, sorted by (time, id).
async fn observations_in(
    app: &App,
    query: &ObservationQuery,
    scopes: &[Scope],
    vitals: &[VitalSign],
    from: Timestamp,
    to: Timestamp,
) -> FhirResult<Vec<(ObservationKey, Observation)>> {
    let mut found = Vec::new();
    for scope in scopes {
        for &(window_from, window_to) in query.window.intervals() {
            let Some((slice_from, slice_to)) = overlap(scope.from, scope.to, from, to) else {
                continue;
            };
            let Some((read_from, read_to)) = overlap(slice_from, slice_to, window_from, window_to)
            else {
                continue;
            };
            let readings = readings(app, scope.device, vitals, read_from, read_to).await?;
            for observation in group_readings(&readings) {
                let Some(key) = observation
                    .id
                    .as_deref()
                    .and_then(|id| parse_observation_id(id).ok())
                else {
                    continue;
                };
                let patient = readings
                    .iter()
                    .find(|reading| reading.device == key.device && reading.time == key.time)
                    .and_then(|reading| reading.patient);
                if query.matches_key(&key, patient) {
                    let mut observation = observation;
                    stamp_observation(&mut observation, &key, &readings);
                    found.push((key, observation));
                }
            }
        }
    }
    found.sort_by_key(|(key, _)| order(key));
    found.dedup_by(|(left, _), (right, _)| left == right);
    Ok(found)
}

pub(crate) async fn search(
    State(app): State<App>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let query = ObservationQuery::parse(&params)?;
    let count = query.paging.count;
    let cursor = super::read_cursor(query.paging.cursor.as_deref(), |cursor| {
        parse_observation_id(cursor).ok()
    })?;
    let descending = query.newest_first();
    let mut page: Vec<(ObservationKey, Observation)> = Vec::new();
    let mut complete = true;
    let scopes = if query.matches_nothing() || count == 0 {
        Vec::new()
    } else {
        scopes(&app, &query)
    };
    if !scopes.is_empty() {
        let vitals = query.vitals_to_read();
        // The overall span the scopes and the date window allow.
        let window_from = query
            .window
            .intervals()
            .first()
            .map_or(Timestamp::MAX, |interval| interval.0);
        let window_to = query
            .window
            .intervals()
            .last()
            .map_or(Timestamp::MIN, |interval| interval.1);
        let scope_from = scopes
            .iter()
            .map(|scope| scope.from)
            .min()
            .unwrap_or(Timestamp::MAX);
        let scope_to = scopes
            .iter()
            .map(|scope| scope.to)
            .max()
            .unwrap_or(Timestamp::MIN);
        let mut low = window_from.max(scope_from);
        let mut high = window_to.min(scope_to);
        // Resume strictly after the cursor.
        if let Some(cursor) = &cursor {
            if descending {
                high = high.min(cursor.time.add_micros(1));
            } else {
                low = low.max(cursor.time);
            }
        }
        // Unbounded ends are narrowed to the data the directory can have: nothing is measured
        // before the first assignment or device, nor after now (plus clock skew allowance).
        let now = app.0.clock.now();
        high = high.min(now.add_seconds(24 * 3600));
        let mut slice = FIRST_SLICE_MICROS;
        while low < high && page.len() <= count {
            let (from, to) = if descending {
                (high.add_micros(-slice).max(low), high)
            } else {
                (low, low.add_micros(slice).min(high))
            };
            let mut found = observations_in(&app, &query, &scopes, &vitals, from, to).await?;
            if descending {
                found.reverse();
            }
            let after_cursor = |key: &ObservationKey| match &cursor {
                None => true,
                Some(cursor) if descending => order(key) < order(cursor),
                Some(cursor) => order(key) > order(cursor),
            };
            let before = page.len();
            page.extend(found.into_iter().filter(|(key, _)| after_cursor(key)));
            if descending {
                high = from;
            } else {
                low = to;
            }
            if page.len() == before {
                slice = slice.saturating_mul(2);
            }
            // A time slice before the earliest possible datum ends the scan.
            if !descending && low >= high {
                break;
            }
            if descending && from <= low {
                break;
            }
        }
        if page.len() > count {
            page.truncate(count);
            complete = false;
        }
    }
    let next = (!complete)
        .then(|| page.last().map(|(key, _)| key.id()))
        .flatten();
    let mut bundle = SearchsetBuilder::new(&base_url(&headers), "Observation", &params)
        .next_cursor(next.as_deref());
    if complete && cursor.is_none() {
        bundle = bundle.total(page.len() as u64);
    }
    for (_, observation) in page {
        bundle = bundle.entry(observation);
    }
    Ok(fhir_response(
        StatusCode::OK,
        &bundle.build(),
        HeaderMap::new(),
    ))
}

/// Keeps a refused body as a dead letter and answers with its problem.
async fn refuse_body(app: &App, error: galen_fhir::Error, body: &[u8]) -> FhirError {
    let rejection = Rejection::new(error.rejection_reason(), error.to_string());
    let item = Err(Unreadable {
        rejection,
        device: None,
        raw: body,
    });
    if let Err(store) = app.0.pipeline.ingest(SOURCE, vec![item]).await {
        return FhirError::from(store);
    }
    FhirError::from(error)
}

/// The key the created Observation is served under.
fn created_key(device: DeviceId, posted: &PostedObservation) -> Option<ObservationKey> {
    let vitals: BTreeSet<VitalSign> = posted
        .values
        .iter()
        .filter_map(|value| value.as_ref().ok().map(|value| value.vital))
        .collect();
    let code =
        if vitals.contains(&VitalSign::SystolicBp) && vitals.contains(&VitalSign::DiastolicBp) {
            ObservationCode::BloodPressurePanel
        } else {
            ObservationCode::Vital(*vitals.iter().next()?)
        };
    Some(ObservationKey {
        device,
        code,
        time: posted.time,
    })
}

/// A posted Observation read and checked against the directory, ready for the pipeline.
pub(crate) struct Prepared {
    posted: PostedObservation,
    device: DeviceId,
    serial: String,
    /// The pipeline item id of each value.
    ids: Vec<Option<String>>,
    body: Bytes,
}

impl Prepared {
    /// The pipeline's items: one per value, in order.
    pub(crate) fn items(&self) -> Vec<Result<Incoming<'_>, Unreadable<'_>>> {
        self.posted
            .values
            .iter()
            .zip(&self.ids)
            .map(|(value, id)| match value {
                Ok(value) => Ok(Incoming {
                    device: &self.serial,
                    code: &value.code,
                    value: value.value,
                    unit: &value.unit,
                    time: self.posted.time,
                    id: id.as_deref(),
                    raw: &self.body,
                }),
                Err(error) => Err(Unreadable {
                    rejection: Rejection::new(error.rejection_reason(), error.to_string()),
                    device: Some(&self.serial),
                    raw: &self.body,
                }),
            })
            .collect()
    }

    /// The FHIRPath of value `index` (as the pipeline numbered [`Prepared::items`]).
    pub(crate) fn path(&self, index: usize) -> String {
        match self.posted.values.get(index) {
            Some(Ok(value)) => value.path.clone(),
            Some(Err(error)) => error.expression().unwrap_or("Observation").to_owned(),
            None => "Observation".to_owned(),
        }
    }

    /// The key the stored Observation is served under.
    pub(crate) fn key(&self) -> FhirResult<ObservationKey> {
        created_key(self.device, &self.posted).ok_or_else(|| {
            FhirError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                IssueType::Required,
                "the Observation has no value",
            )
        })
    }
}

/// Reads a posted Observation and resolves its device; a body refused here is kept as a dead
/// letter and answered with its problem.
pub(crate) async fn prepare(
    app: &App,
    principal: &crate::access::Principal,
    body: Bytes,
) -> FhirResult<Prepared> {
    let posted: Observation = match parse_resource(&body) {
        Ok(posted) => posted,
        Err(error) => return Err(refuse_body(app, error, &body).await),
    };
    let posted = match read_posted_observation(&posted) {
        Ok(posted) => posted,
        Err(error) => return Err(refuse_body(app, error, &body).await),
    };
    // The device, by id or serial; the pipeline refuses unknown serials itself.
    let (device, serial) = {
        let directory = app.0.directory.read();
        match &posted.device {
            DeviceHandle::Id(id) => match directory.device(*id) {
                Some(device) => (Some(device.id), device.details.serial.clone()),
                None => (None, String::new()),
            },
            DeviceHandle::Serial(serial) => (
                directory.device_by_serial(serial).map(|device| device.id),
                serial.clone(),
            ),
        }
    };
    let Some(device) = device else {
        let error = galen_fhir::Error::element(
            "Observation.device",
            galen_fhir::Problem::Invalid,
            "the device is not registered; register it with POST /fhir/Device",
        );
        let rejection = Rejection::new(RejectionReason::UnknownDevice, error.to_string());
        let item = Err(Unreadable {
            rejection,
            device: (!serial.is_empty()).then_some(serial.as_str()),
            raw: &body,
        });
        app.0.pipeline.ingest(SOURCE, vec![item]).await?;
        return Err(FhirError::from(error));
    };
    // A device account sends for itself only: its name is its serial.
    if principal.role == crate::access::Role::Device && principal.device_name() != serial {
        let message = "Observation.device: a device account may send only its own measurements";
        let rejection = Rejection::new(RejectionReason::Forbidden, message);
        let item = Err(Unreadable {
            rejection,
            device: Some(serial.as_str()),
            raw: &body,
        });
        app.0.pipeline.ingest(SOURCE, vec![item]).await?;
        return Err(FhirError {
            status: StatusCode::FORBIDDEN,
            outcome: OutcomeBuilder::new()
                .issue(
                    IssueSeverity::Error,
                    IssueType::Forbidden,
                    message,
                    Some("Observation.device"),
                )
                .build(),
        });
    }
    // A subject other than the device's assigned patient is refused, as for HL7's PID-3.
    if let Some(subject) = posted.patient {
        let assigned = app.0.directory.read().patient_at(device, posted.time);
        if assigned != Some(subject) {
            let message = format!(
                "Observation.subject: the device is assigned to {} at this time, not to Patient/{}",
                assigned.map_or("no patient".to_owned(), |patient: PatientId| format!(
                    "Patient/{}",
                    patient.0
                )),
                subject.0
            );
            let rejection = Rejection::new(RejectionReason::PatientMismatch, message.clone());
            let item = Err(Unreadable {
                rejection,
                device: Some(serial.as_str()),
                raw: &body,
            });
            app.0.pipeline.ingest(SOURCE, vec![item]).await?;
            return Err(FhirError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                outcome: OutcomeBuilder::new()
                    .issue(
                        IssueSeverity::Error,
                        IssueType::Invalid,
                        message,
                        Some("Observation.subject"),
                    )
                    .build(),
            });
        }
    }
    let ids: Vec<Option<String>> = posted
        .values
        .iter()
        .map(|value| {
            let external = posted.external_id.as_deref()?;
            Some(match value {
                Ok(value) if posted.values.len() > 1 => {
                    format!("{external}#{}", value.vital.alias())
                }
                _ => external.to_owned(),
            })
        })
        .collect();
    Ok(Prepared {
        posted,
        device,
        serial,
        ids,
        body,
    })
}

/// The stored Observation of `key` with its ETag and location.
pub(crate) async fn created(
    app: &App,
    headers: &HeaderMap,
    key: &ObservationKey,
) -> FhirResult<(Observation, String, String)> {
    let (observation, etag) = stored_observation(app, key)
        .await?
        .ok_or_else(|| FhirError::not_found("Observation"))?;
    let location = format!("{}/Observation/{}", base_url(headers), key.id());
    Ok((observation, etag, location))
}

pub(crate) async fn create(
    State(app): State<App>,
    record: crate::audit::WriteRecord,
    principal: crate::access::Principal,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    check_content_type(&headers)?;
    let prepared = prepare(&app, &principal, body).await?;
    let posted = &prepared.posted;
    let items = prepared.items();
    let (results, summary) = app
        .0
        .pipeline
        .ingest_audited(SOURCE, items, record.records())
        .await?;
    if summary.rejected > 0 {
        let mut outcome = OutcomeBuilder::new();
        for (value, result) in posted.values.iter().zip(&results) {
            match (value, result) {
                (Err(error), _) => {
                    outcome = outcome.issue(
                        IssueSeverity::Error,
                        error.issue_type(),
                        error.to_string(),
                        error.expression(),
                    );
                }
                (Ok(value), ItemResult::Rejected(rejection)) => {
                    outcome = outcome.issue(
                        IssueSeverity::Error,
                        IssueType::Invalid,
                        format!("{}: {}", value.path, rejection.message),
                        Some(value.path.as_str()),
                    );
                }
                _ => {}
            }
        }
        if summary.accepted + summary.duplicates > 0 {
            outcome = outcome.warning(
                IssueType::Incomplete,
                "the other values of this Observation were stored",
            );
        }
        return Err(FhirError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            outcome: outcome.build(),
        });
    }
    let key = prepared.key()?;
    let (observation, etag, location) = created(&app, &headers, &key).await?;
    let status = if summary.accepted > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        record.stored(),
        fhir_response(
            status,
            &observation,
            resource_headers(&etag, Some(location)),
        ),
    )
        .into_response())
}
