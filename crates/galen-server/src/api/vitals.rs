//! Reading vital signs: per-patient and per-device series, the ward dashboard and the live stream.
//!
//! A patient's series is assembled on read: the patient's assignments that overlap the window say
//! which device covered which interval, and each interval is read from that device's series.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::fmt::Write;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use galen_model::{DeviceId, PatientId, Timestamp, VitalSign};
use galen_store::{Bucket, Point};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::parse_time;
use crate::error::{ApiError, ApiResult};
use crate::{App, LiveMeasurement};

/// At most this many raw points in one answer; ask for buckets beyond it.
const MAX_POINTS: usize = 100_000;
const DAY_MICROS: i64 = 24 * 3600 * 1_000_000;

#[derive(Deserialize)]
pub(crate) struct VitalsQuery {
    code: Option<String>,
    from: Option<String>,
    to: Option<String>,
    bucket: Option<String>,
}

/// Parses a bucket width such as `60`, `30s`, `5m`, `1h` or `1d` into microseconds.
fn parse_bucket(text: &str) -> ApiResult<i64> {
    let text = text.trim();
    let (number, unit) = match text.find(|character: char| !character.is_ascii_digit()) {
        Some(split) => text.split_at(split),
        None => (text, "s"),
    };
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    let count: i64 = number.parse().unwrap_or(0);
    if seconds_per_unit == 0 || count <= 0 || count > 366 * 86_400 {
        return Err(ApiError::bad_request(
            "bucket must be a positive width such as 60, 30s, 5m, 1h or 1d",
        ));
    }
    Ok(count * seconds_per_unit * 1_000_000)
}

struct Window {
    vital: VitalSign,
    from: Timestamp,
    to: Timestamp,
    bucket: Option<i64>,
}

fn window(app: &App, query: &VitalsQuery) -> ApiResult<Window> {
    let code = query
        .code
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("code is required, e.g. code=heart_rate"))?;
    let vital = VitalSign::parse(code).ok_or_else(|| {
        ApiError::bad_request("code is not a known LOINC code, MDC code or alias")
    })?;
    let to =
        parse_time("to", query.to.as_deref())?.unwrap_or_else(|| app.0.clock.now().add_micros(1));
    let from = parse_time("from", query.from.as_deref())?.unwrap_or(to.add_micros(-DAY_MICROS));
    if from >= to {
        return Err(ApiError::bad_request("from must be before to"));
    }
    let bucket = query.bucket.as_deref().map(parse_bucket).transpose()?;
    Ok(Window {
        vital,
        from,
        to,
        bucket,
    })
}

/// Reads `(device, from, to)` intervals and merges them into one answer.
async fn read_series(
    app: &App,
    window: &Window,
    intervals: Vec<(DeviceId, Timestamp, Timestamp)>,
) -> ApiResult<(Value, Vec<Point>)> {
    let store = &app.0.store;
    let mut answer = json!({
        "code": window.vital.alias(),
        "loinc": window.vital.loinc(),
        "unit": window.vital.canonical_unit().ucum(),
        "from": window.from.to_rfc3339(),
        "to": window.to.to_rfc3339(),
    });
    if let Some(bucket) = window.bucket {
        let mut buckets: Vec<Bucket> = Vec::new();
        for (device, from, to) in intervals {
            buckets.extend(
                store
                    .aggregate(device, window.vital, from, to, bucket)
                    .await?,
            );
        }
        buckets.sort_by_key(|bucket| bucket.start);
        let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
        for bucket in buckets {
            match merged.last_mut() {
                Some(last) if last.start == bucket.start => {
                    let count = last.count + bucket.count;
                    last.mean = (last.mean * last.count as f64 + bucket.mean * bucket.count as f64)
                        / count as f64;
                    last.count = count;
                    last.min = last.min.min(bucket.min);
                    last.max = last.max.max(bucket.max);
                }
                _ => merged.push(bucket),
            }
        }
        answer["bucket_seconds"] = json!(bucket / 1_000_000);
        answer["buckets"] = merged
            .iter()
            .map(|bucket| {
                json!({ "start": bucket.start.to_rfc3339(), "count": bucket.count, "min": bucket.min, "max": bucket.max, "mean": bucket.mean })
            })
            .collect();
    } else {
        let mut points: Vec<Point> = Vec::new();
        for (device, from, to) in intervals {
            points.extend(store.range(device, window.vital, from, to).await?);
        }
        points.sort_by_key(|point| point.time);
        let truncated = points.len() > MAX_POINTS;
        points.truncate(MAX_POINTS);
        answer["truncated"] = json!(truncated);
        return Ok((answer, points));
    }
    Ok((answer, Vec::new()))
}

/// Renders a series answer. Raw points are written straight into the body: building a JSON
/// value per point made a 24 h series (86 400 points) take tens of milliseconds.
fn render(answer: Value, points: &[Point]) -> Response {
    let mut body = answer.to_string();
    if answer.get("truncated").is_some() {
        body.pop();
        body.reserve(points.len() * 48 + 16);
        body.push_str(",\"points\":[");
        for (index, point) in points.iter().enumerate() {
            if index > 0 {
                body.push(',');
            }
            body.push_str("{\"time\":\"");
            point.time.write_rfc3339(&mut body);
            body.push_str("\",\"value\":");
            // Stored values are finite (NaN and infinities are refused on ingest).
            let _ = write!(body, "{}", point.value);
            body.push('}');
        }
        body.push_str("]}");
    }
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(crate) async fn patient_vitals(
    State(app): State<App>,
    Path(id): Path<i64>,
    Query(query): Query<VitalsQuery>,
) -> ApiResult<Response> {
    let window = window(&app, &query)?;
    let patient = PatientId(id);
    let intervals: Vec<(DeviceId, Timestamp, Timestamp)> = {
        let directory = app.0.directory.read();
        if directory.patient(patient).is_none() {
            return Err(ApiError::not_found("patient"));
        }
        directory
            .assignments_of(patient, window.from, window.to)
            .iter()
            .map(|assignment| {
                let end = assignment.details.end.unwrap_or(Timestamp::MAX);
                (
                    assignment.details.device,
                    assignment.details.start.max(window.from),
                    end.min(window.to),
                )
            })
            .collect()
    };
    let (mut answer, points) = read_series(&app, &window, intervals).await?;
    answer["patient"] = json!(id);
    Ok(render(answer, &points))
}

/// A device's own series, attributed or not: this is where unassigned data is found.
pub(crate) async fn device_vitals(
    State(app): State<App>,
    Path(id): Path<i64>,
    Query(query): Query<VitalsQuery>,
) -> ApiResult<Response> {
    let window = window(&app, &query)?;
    if app.0.directory.read().device(DeviceId(id)).is_none() {
        return Err(ApiError::not_found("device"));
    }
    let (mut answer, points) =
        read_series(&app, &window, vec![(DeviceId(id), window.from, window.to)]).await?;
    answer["device"] = json!(id);
    Ok(render(answer, &points))
}

#[derive(Deserialize)]
pub(crate) struct WardQuery {
    ward: Option<String>,
}

fn display_name(given: &str, family: &str) -> String {
    if given.is_empty() {
        family.to_owned()
    } else {
        format!("{given} {family}")
    }
}

/// Everything the ward view needs in one call: patients with their newest value per vital sign.
pub(crate) async fn dashboard(
    State(app): State<App>,
    principal: crate::access::Principal,
    Query(query): Query<WardQuery>,
) -> ApiResult<Json<Value>> {
    let now = app.0.clock.now();
    let (wards, patients) = {
        let directory = app.0.directory.read();
        let mut all: Vec<_> = directory
            .patients()
            .into_iter()
            .filter(|patient| principal.may_see(patient))
            .cloned()
            .map(|patient| {
                // (device, serial, start of its assignment to this patient)
                let devices: Vec<(DeviceId, String, Timestamp)> = directory
                    .assignments_of(patient.id, now, now.add_micros(1))
                    .iter()
                    .filter_map(|assignment| {
                        let device = directory.device(assignment.details.device)?;
                        Some((
                            device.id,
                            device.details.serial.clone(),
                            assignment.details.start,
                        ))
                    })
                    .collect();
                (patient, devices)
            })
            .collect();
        // Patients not placed on a ward (empty ward) are listed, but are no ward to choose.
        let wards: BTreeSet<String> = all
            .iter()
            .map(|(patient, _)| patient.details.ward.clone())
            .filter(|ward| !ward.is_empty())
            .collect();
        if let Some(ward) = &query.ward {
            all.retain(|(patient, _)| &patient.details.ward == ward);
        }
        (wards, all)
    };
    let mut views = std::collections::HashMap::new();
    for (patient, _) in &patients {
        let view = app.0.clinical.view(patient.id).await.map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the clinical engine is shutting down",
            )
        })?;
        views.insert(patient.id, view);
    }
    let mut tiles = Vec::with_capacity(patients.len());
    for (patient, devices) in patients {
        let mut newest: Vec<(VitalSign, Point)> = Vec::new();
        for (device, _, since) in &devices {
            // A device's newest value from before this patient's assignment belongs to someone
            // else; and if the newest is older than the assignment, nothing newer exists.
            for (vital, point) in app
                .0
                .store
                .latest(*device)
                .await?
                .into_iter()
                .filter(|(_, point)| point.time >= *since)
            {
                match newest.iter_mut().find(|(known, _)| *known == vital) {
                    Some(existing) if existing.1.time < point.time => existing.1 = point,
                    Some(_) => {}
                    None => newest.push((vital, point)),
                }
            }
        }
        let latest: serde_json::Map<String, Value> = newest
            .iter()
            .map(|(vital, point)| {
                let value = json!({ "value": point.value, "unit": vital.canonical_unit().ucum(), "time": point.time.to_rfc3339() });
                (vital.alias().to_owned(), value)
            })
            .collect();
        let details = &patient.details;
        let clinical = views.get(&patient.id).and_then(Option::as_ref);
        let news2 = clinical.and_then(|view| {
            let config = app.0.clinical.config();
            let table = config
                .tables
                .iter()
                .position(|table| table.id() == "news2")?;
            let score = view.scores.get(table)?;
            Some(crate::clinical::encode::score_json(
                config, table, score, patient.id,
            ))
        });
        let mut alarms: Vec<Value> = clinical
            .map(|view| {
                view.alarms
                    .iter()
                    .map(|alarm| super::clinical::alarm_view_json(&app, alarm))
                    .collect()
            })
            .unwrap_or_default();
        alarms.sort_by_key(|alarm| std::cmp::Reverse(priority_rank(alarm)));
        tiles.push(json!({
            "id": patient.id.0,
            "name": display_name(&details.name.given, &details.name.family),
            "ward": details.ward,
            "bed": details.bed,
            "devices": devices.iter().map(|(_, serial, _)| serial.clone()).collect::<Vec<_>>(),
            "latest": latest,
            "news2": news2,
            "alarms": alarms,
        }));
    }
    Ok(Json(json!({
        "generated_at": now.to_rfc3339(),
        "stale_after_seconds": app.0.config.stale_after_seconds,
        "open_access": app.0.config.api_token.is_none(),
        "wards": wards,
        "patients": tiles,
    })))
}

fn priority_rank(alarm: &Value) -> u8 {
    match alarm["priority"].as_str() {
        Some("high") => 3,
        Some("medium") => 2,
        _ => 1,
    }
}

fn live_json(measurement: &LiveMeasurement) -> Value {
    json!({
        "patient": measurement.patient.map(|id| id.0),
        "device": measurement.device,
        "code": measurement.vital.alias(),
        "value": measurement.value,
        "unit": measurement.vital.canonical_unit().ucum(),
        "time": measurement.time.to_rfc3339(),
    })
}

/// Decrements the subscriber gauge when a stream ends.
struct SubscriberGuard(App);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.0.metrics.subscriber(-1);
    }
}

/// `GET /api/v1/stream`: Server-Sent Events `measurements` (a JSON array per committed batch),
/// `alarm` (one alarm transition), `score` (one score change) and `resync` (this subscriber fell
/// behind and should reload the dashboard). Alarm events go first when several are ready.
pub(crate) async fn stream(
    State(app): State<App>,
    principal: crate::access::Principal,
    Query(query): Query<WardQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = app.0.live.subscribe();
    let clinical = app.0.clinical.subscribe();
    let shutdown = app.0.shutdown.subscribe();
    app.0.metrics.subscriber(1);
    let guard = SubscriberGuard(app);
    // The ward filter and the principal's scope, as one test of a patient.
    let visible = move |directory: &crate::directory::DirectorySnapshot,
                        patient: Option<PatientId>|
          -> bool {
        let Some(patient) = patient.and_then(|id| directory.patient(id)) else {
            // Unassigned values: only for an all-ward view without a ward filter.
            return principal.sees_everyone() && query.ward.is_none();
        };
        principal.may_see(patient)
            && query
                .ward
                .as_ref()
                .is_none_or(|ward| &patient.details.ward == ward)
    };
    let state = (receiver, clinical, shutdown, guard, visible);
    let events = futures_util::stream::unfold(
        state,
        |(mut receiver, mut clinical, mut shutdown, guard, visible)| async move {
            loop {
                if *shutdown.borrow() {
                    return None;
                }
                let received = tokio::select! {
                    biased;
                    _ = shutdown.changed() => return None,
                    event = clinical.recv() => {
                        let event = match event {
                            Ok(event) => {
                                let wanted = visible(&guard.0.0.directory.read(), Some(event.patient));
                                if !wanted {
                                    continue;
                                }
                                if event.kind == "alarm" {
                                    guard.0.0.clinical.metrics.alarm_delivered(event.received.elapsed());
                                }
                                Event::default().event(event.kind).data(event.json.clone())
                            }
                            Err(RecvError::Lagged(missed)) => {
                                guard.0.0.metrics.lagged(missed);
                                Event::default().event("resync").data("{}")
                            }
                            Err(RecvError::Closed) => return None,
                        };
                        return Some((Ok(event), (receiver, clinical, shutdown, guard, visible)));
                    }
                    received = receiver.recv() => received,
                };
                let event = match received {
                    Ok(batch) => {
                        let items: Vec<Value> = {
                            let directory = guard.0.0.directory.read();
                            batch
                                .iter()
                                .filter(|measurement| visible(&directory, measurement.patient))
                                .map(live_json)
                                .collect()
                        };
                        if items.is_empty() {
                            continue;
                        }
                        Event::default()
                            .event("measurements")
                            .data(Value::Array(items).to_string())
                    }
                    Err(RecvError::Lagged(missed)) => {
                        guard.0.0.metrics.lagged(missed);
                        Event::default().event("resync").data("{}")
                    }
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(event), (receiver, clinical, shutdown, guard, visible)));
            }
        },
    );
    Sse::new(events).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_widths() {
        assert_eq!(parse_bucket("60").ok(), Some(60_000_000));
        assert_eq!(parse_bucket("30s").ok(), Some(30_000_000));
        assert_eq!(parse_bucket("5m").ok(), Some(300_000_000));
        assert_eq!(parse_bucket("1h").ok(), Some(3_600_000_000));
        assert_eq!(parse_bucket("1d").ok(), Some(86_400_000_000));
        for bad in ["0", "-5", "5x", "", "m", "1.5h"] {
            assert!(parse_bucket(bad).is_err(), "{bad:?}");
        }
    }
}
