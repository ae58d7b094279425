//! Scores, alarms and staff entries: the clinical API.
//!
//! Every action (acknowledge, silence, close, observation, setting) is stored as a clinical entry
//! *before* the engine applies it, with the name of the person acting (`by`) and their reason, so
//! the alarm log says who, when and why, and a replay sees the same inputs.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use galen_clinical::{
    AlarmId, AlarmView, Consciousness, EntryError, EntryKind, Oxygen, Parameter, PatientView,
    RuleKind, Spo2Scale,
};
use galen_model::{PatientId, Timestamp};
use galen_store::AlarmQuery;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{parse_json, parse_time};
use crate::audit::WriteRecord;
use crate::auth::Audited;
use crate::clinical::encode::{
    describe, override_json, parameter_unit, rule_parameter, score_json, source_json, tiers_json,
    value_json,
};
use crate::clinical::entries::{StoredEntry, parse_tiers};
use crate::error::{ApiError, ApiResult};
use crate::{App, EntryRefused};

fn stopped() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the clinical engine is shutting down",
    )
}

/// An open alarm as the API shows it (with the patient's ward and bed, never the name).
pub(crate) fn alarm_view_json(app: &App, alarm: &AlarmView) -> Value {
    let config = app.0.clinical.config();
    let rule = config.rules.get(alarm.rule);
    let (ward, bed) = app
        .0
        .directory
        .read()
        .patient(alarm.id.patient)
        .map(|patient| (patient.details.ward.clone(), patient.details.bed.clone()))
        .unwrap_or_default();
    json!({
        "alarm": alarm.id.to_string(),
        "patient": alarm.id.patient.0,
        "ward": ward,
        "bed": bed,
        "rule": rule.map(|rule| rule.id.as_str()),
        "kind": if rule.is_some_and(|rule| rule.is_technical()) { "technical" } else { "physiological" },
        "parameter": rule.and_then(|rule| rule_parameter(&rule.kind)).map(Parameter::code),
        "device": alarm.device.map(|device| device.0),
        "priority": alarm.priority.code(),
        "state": alarm.state.code(),
        "raised_at": alarm.raised_at.to_rfc3339(),
        "escalation_level": alarm.escalation_level,
        "role": config.escalation.role(alarm.escalation_level),
        "silenced_until": alarm.silenced_until.map(Timestamp::to_rfc3339),
        "value": alarm.value,
        "threshold": alarm.threshold,
        "message": describe(config, alarm.rule, alarm.value, alarm.threshold),
    })
}

#[derive(Deserialize)]
pub(crate) struct AlarmFilter {
    ward: Option<String>,
    patient: Option<i64>,
}

/// `GET /api/v1/alarms`: open alarms, highest priority first, optionally of one ward or patient.
pub(crate) async fn active_alarms(
    State(app): State<App>,
    principal: crate::access::Principal,
    Query(filter): Query<AlarmFilter>,
) -> ApiResult<Json<Value>> {
    let mut alarms = app.0.clinical.open_alarms().await.map_err(|_| stopped())?;
    {
        let directory = app.0.directory.read();
        alarms.retain(|alarm| {
            directory
                .patient(alarm.id.patient)
                .is_some_and(|patient| principal.may_see(patient))
                && filter
                    .patient
                    .is_none_or(|patient| alarm.id.patient.0 == patient)
                && filter.ward.as_ref().is_none_or(|ward| {
                    directory
                        .patient(alarm.id.patient)
                        .is_some_and(|patient| &patient.details.ward == ward)
                })
        });
    }
    alarms.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.raised_at.cmp(&b.raised_at))
    });
    let items: Vec<Value> = alarms
        .iter()
        .map(|alarm| alarm_view_json(&app, alarm))
        .collect();
    Ok(Json(json!({ "alarms": items })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireAction {
    by: Option<String>,
    reason: Option<String>,
    seconds: Option<u32>,
}

/// Who acts: an account acts as itself (a `by` in the body cannot change that); the service
/// token and demo mode act for the person the body names.
fn actor(principal: &crate::access::Principal, by: Option<&str>) -> ApiResult<String> {
    if principal.user.is_some() {
        return Ok(principal.actor.clone());
    }
    let by = by.map(str::trim).unwrap_or_default();
    if by.is_empty() || by.len() > 200 {
        return Err(ApiError::bad_request(
            "`by` must name the person acting (1-200 characters)",
        ));
    }
    Ok(by.to_owned())
}

/// Stores an entry, then applies it; answers the engine's verdict.
async fn record_and_apply(
    app: &App,
    patient: PatientId,
    by: String,
    entry: StoredEntry,
    audit: Vec<galen_store::AuditRecord>,
) -> ApiResult<i64> {
    match app
        .record_entry(patient, &by, entry.kind, entry.reason, audit)
        .await
    {
        Ok(id) => Ok(id),
        Err(EntryRefused::Store(error)) => Err(error.into()),
        Err(EntryRefused::Stopped) => Err(stopped()),
        Err(EntryRefused::Engine(EntryError::NoSuchAlarm(id))) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("alarm {id} is not open"),
        )),
        Err(EntryRefused::Engine(EntryError::Conflict(message))) => {
            Err(ApiError::new(StatusCode::CONFLICT, "conflict", message))
        }
        Err(EntryRefused::Engine(EntryError::Invalid(message))) => {
            Err(ApiError::bad_request(message))
        }
    }
}

fn parse_alarm(text: &str) -> ApiResult<AlarmId> {
    AlarmId::parse(text).ok_or_else(|| ApiError::not_found("alarm"))
}

/// `POST /api/v1/alarms/{id}/{action}` with `acknowledge`, `silence` or `resolve`.
pub(crate) async fn alarm_action(
    State(app): State<App>,
    record: WriteRecord,
    principal: crate::access::Principal,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(Extension<Audited>, Json<Value>)> {
    let alarm = parse_alarm(&id)?;
    let in_scope = app
        .0
        .directory
        .read()
        .patient(alarm.patient)
        .is_some_and(|patient| principal.may_see(patient));
    if !in_scope {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this patient is outside your wards",
        ));
    }
    let wire: WireAction = parse_json(&headers, &body)?;
    let by = actor(&principal, wire.by.as_deref())?;
    let kind = match action.as_str() {
        "acknowledge" => EntryKind::Acknowledge(alarm),
        "silence" => EntryKind::Silence {
            alarm,
            seconds: wire.seconds.unwrap_or(120),
        },
        "resolve" => EntryKind::Resolve(alarm),
        _ => return Err(ApiError::not_found("action")),
    };
    let entry_id = record_and_apply(
        &app,
        alarm.patient,
        by,
        StoredEntry {
            kind,
            reason: wire.reason,
        },
        record.records(),
    )
    .await?;
    tracing::info!(alarm = %alarm, action = %action, entry = entry_id, "alarm action");
    let open = app.0.clinical.open_alarms().await.map_err(|_| stopped())?;
    let current = open.iter().find(|open| open.id == alarm);
    Ok((
        record.stored(),
        Json(json!({
            "alarm": alarm.to_string(),
            "entry": entry_id,
            "open": current.map(|alarm| alarm_view_json(&app, alarm)),
        })),
    ))
}

fn check_patient(app: &App, id: i64) -> ApiResult<PatientId> {
    let patient = PatientId(id);
    if app.0.directory.read().patient(patient).is_none() {
        return Err(ApiError::not_found("patient"));
    }
    Ok(patient)
}

fn view_json(app: &App, patient: PatientId, view: Option<&PatientView>) -> Value {
    let config = app.0.clinical.config();
    let Some(view) = view else {
        return json!({ "patient": patient.0, "readings": {}, "spo2_scale": 1, "scores": [], "alarms": [], "overrides": [] });
    };
    let readings: serde_json::Map<String, Value> = Parameter::ALL
        .into_iter()
        .filter_map(|parameter| {
            let reading = view.readings.reading(parameter)?;
            Some((
                parameter.code().to_owned(),
                json!({
                    "value": value_json(&reading.value),
                    "unit": parameter_unit(parameter),
                    "time": reading.time.to_rfc3339(),
                    "source": source_json(&reading.source),
                }),
            ))
        })
        .collect();
    json!({
        "patient": patient.0,
        "config_version": &*config.version,
        "readings": readings,
        "spo2_scale": view.readings.spo2_scale.number(),
        "scores": view.scores.iter().enumerate().map(|(table, score)| score_json(config, table, score, patient)).collect::<Vec<_>>(),
        "alarms": view.alarms.iter().map(|alarm| alarm_view_json(app, alarm)).collect::<Vec<_>>(),
        "overrides": view.overrides.iter().map(|(rule, item)| override_json(config, *rule, item)).collect::<Vec<_>>(),
    })
}

/// `GET /api/v1/patients/{id}/clinical`: current readings, scores (per parameter), open alarms
/// and limit overrides.
pub(crate) async fn patient_clinical(
    State(app): State<App>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    let patient = check_patient(&app, id)?;
    let view = app.0.clinical.view(patient).await.map_err(|_| stopped())?;
    Ok(Json(view_json(&app, patient, view.as_ref())))
}

#[derive(Deserialize)]
pub(crate) struct ScoreQuery {
    table: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/patients/{id}/scores?table=news2&from=&to=&limit=`: stored score changes.
pub(crate) async fn patient_scores(
    State(app): State<App>,
    Path(id): Path<i64>,
    Query(query): Query<ScoreQuery>,
) -> ApiResult<Json<Value>> {
    let patient = check_patient(&app, id)?;
    let now = app.0.clock.now();
    let to = parse_time("to", query.to.as_deref())?.unwrap_or(now.add_micros(1));
    let from = parse_time("from", query.from.as_deref())?.unwrap_or(to.add_seconds(-24 * 3600));
    let table = query.table.unwrap_or_else(|| "news2".to_owned());
    if !app
        .0
        .clinical
        .config()
        .tables
        .iter()
        .any(|known| known.id() == table)
    {
        return Err(ApiError::bad_request(format!(
            "unknown score table {table:?}"
        )));
    }
    let limit = query.limit.unwrap_or(5000).clamp(1, 50_000);
    let records = app.0.store.scores(patient, &table, from, to, limit).await?;
    let items: Vec<Value> = records
        .iter()
        .map(|record| serde_json::from_str(&record.body).unwrap_or(Value::Null))
        .collect();
    Ok(Json(
        json!({ "patient": patient.0, "table": table, "scores": items }),
    ))
}

#[derive(Deserialize)]
pub(crate) struct LogQuery {
    patient: Option<i64>,
    after: Option<i64>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/alarms/log`: alarm transitions in order (resume with `after` = last `seq`).
pub(crate) async fn alarm_log(
    State(app): State<App>,
    principal: crate::access::Principal,
    Query(query): Query<LogQuery>,
) -> ApiResult<Json<Value>> {
    let to = parse_time("to", query.to.as_deref())?.unwrap_or(Timestamp::from_micros(i64::MAX));
    let from = parse_time("from", query.from.as_deref())?.unwrap_or(Timestamp::from_micros(0));
    let records = app
        .0
        .store
        .alarm_records(AlarmQuery {
            patient: query.patient.map(PatientId),
            after: query.after.unwrap_or(0),
            from,
            to,
            limit: query.limit.unwrap_or(1000).clamp(1, 10_000),
        })
        .await?;
    let items: Vec<Value> = records
        .iter()
        .filter(|record| {
            principal.sees_everyone()
                || app
                    .0
                    .directory
                    .read()
                    .patient(record.patient)
                    .is_some_and(|patient| principal.may_see(patient))
        })
        .map(|record| {
            let mut body: Value = serde_json::from_str(&record.body).unwrap_or(Value::Null);
            body["seq"] = json!(record.seq);
            body
        })
        .collect();
    Ok(Json(json!({ "events": items })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireObservation {
    by: Option<String>,
    consciousness: Option<String>,
    oxygen: Option<String>,
    reason: Option<String>,
}

/// `POST /api/v1/patients/{id}/observations`: ACVPU and/or air-or-oxygen, observed now.
pub(crate) async fn post_observation(
    State(app): State<App>,
    record: WriteRecord,
    principal: crate::access::Principal,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(Extension<Audited>, Json<Value>)> {
    let patient = check_patient(&app, id)?;
    let wire: WireObservation = parse_json(&headers, &body)?;
    let by = actor(&principal, wire.by.as_deref())?;
    let mut kinds = Vec::new();
    if let Some(level) = &wire.consciousness {
        kinds.push(EntryKind::Consciousness(
            Consciousness::parse(level).ok_or_else(|| {
                ApiError::bad_request("consciousness must be one of A, C, V, P, U (ACVPU)")
            })?,
        ));
    }
    if let Some(oxygen) = &wire.oxygen {
        kinds.push(EntryKind::Oxygen(Oxygen::parse(oxygen).ok_or_else(
            || ApiError::bad_request("oxygen must be \"air\" or \"oxygen\""),
        )?));
    }
    if kinds.is_empty() {
        return Err(ApiError::bad_request("give consciousness and/or oxygen"));
    }
    let mut entries = Vec::new();
    for kind in kinds {
        let entry = StoredEntry {
            kind,
            reason: wire.reason.clone(),
        };
        entries.push(
            record_and_apply(
                &app,
                patient,
                by.clone(),
                entry,
                if entries.is_empty() {
                    record.records()
                } else {
                    Vec::new()
                },
            )
            .await?,
        );
    }
    let view = app.0.clinical.view(patient).await.map_err(|_| stopped())?;
    Ok((
        record.stored(),
        Json(json!({ "entries": entries, "clinical": view_json(&app, patient, view.as_ref()) })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireScale {
    by: Option<String>,
    reason: Option<String>,
    scale: u8,
}

/// `PUT /api/v1/patients/{id}/spo2-scale`: NEWS2 SpO2 scale 1 or 2, a clinical decision with a
/// reason.
pub(crate) async fn put_spo2_scale(
    State(app): State<App>,
    record: WriteRecord,
    principal: crate::access::Principal,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(Extension<Audited>, Json<Value>)> {
    let patient = check_patient(&app, id)?;
    let wire: WireScale = parse_json(&headers, &body)?;
    let by = actor(&principal, wire.by.as_deref())?;
    let scale = match wire.scale {
        1 => Spo2Scale::Scale1,
        2 => Spo2Scale::Scale2,
        _ => return Err(ApiError::bad_request("scale must be 1 or 2")),
    };
    let reason = wire
        .reason
        .filter(|reason| !reason.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("changing the SpO2 scale needs a reason"))?;
    let entry = StoredEntry {
        kind: EntryKind::Spo2Scale(scale),
        reason: Some(reason),
    };
    let entry_id = record_and_apply(&app, patient, by, entry, record.records()).await?;
    tracing::info!(patient = %patient, entry = entry_id, scale = wire.scale, "SpO2 scale set");
    let view = app.0.clinical.view(patient).await.map_err(|_| stopped())?;
    Ok((
        record.stored(),
        Json(view_json(&app, patient, view.as_ref())),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireOverride {
    by: Option<String>,
    reason: Option<String>,
    tiers: Option<Value>,
    expires: Option<String>,
}

/// `PUT /api/v1/patients/{id}/limits/{rule}` sets a per-patient limit override (`tiers: []`
/// turns the limit off); `DELETE` returns to the default. Both need `by` and `reason`.
pub(crate) async fn put_limit(
    State(app): State<App>,
    record: WriteRecord,
    principal: crate::access::Principal,
    Path((id, rule)): Path<(i64, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(Extension<Audited>, Json<Value>)> {
    let patient = check_patient(&app, id)?;
    let wire: WireOverride = parse_json(&headers, &body)?;
    let by = actor(&principal, wire.by.as_deref())?;
    let tiers =
        parse_tiers(wire.tiers.as_ref().unwrap_or(&Value::Null)).map_err(ApiError::bad_request)?;
    let expires = parse_time("expires", wire.expires.as_deref())?;
    let entry = StoredEntry {
        kind: EntryKind::LimitOverride {
            rule: rule.clone(),
            tiers,
            expires,
        },
        reason: wire.reason,
    };
    let entry_id = record_and_apply(&app, patient, by, entry, record.records()).await?;
    tracing::info!(patient = %patient, entry = entry_id, rule = %rule, "limit override set");
    let view = app.0.clinical.view(patient).await.map_err(|_| stopped())?;
    Ok((
        record.stored(),
        Json(view_json(&app, patient, view.as_ref())),
    ))
}

/// `DELETE /api/v1/patients/{id}/limits/{rule}`.
pub(crate) async fn delete_limit(
    State(app): State<App>,
    record: WriteRecord,
    principal: crate::access::Principal,
    Path((id, rule)): Path<(i64, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(Extension<Audited>, Json<Value>)> {
    let patient = check_patient(&app, id)?;
    let wire: WireAction = parse_json(&headers, &body)?;
    let by = actor(&principal, wire.by.as_deref())?;
    let entry = StoredEntry {
        kind: EntryKind::ClearOverride { rule },
        reason: wire.reason,
    };
    record_and_apply(&app, patient, by, entry, record.records()).await?;
    let view = app.0.clinical.view(patient).await.map_err(|_| stopped())?;
    Ok((
        record.stored(),
        Json(view_json(&app, patient, view.as_ref())),
    ))
}

/// `GET /api/v1/clinical/config`: the rules and tables in force.
pub(crate) async fn clinical_config(State(app): State<App>) -> Json<Value> {
    let config = app.0.clinical.config();
    let rules: Vec<Value> = config
        .rules
        .iter()
        .map(|rule| {
            let mut item = json!({
                "id": rule.id,
                "technical": rule.is_technical(),
                "delay_seconds": rule.delay_seconds,
                "clear_delay_seconds": rule.clear_delay_seconds,
                "latching": rule.latching,
            });
            match &rule.kind {
                RuleKind::Limit {
                    parameter,
                    side,
                    tiers,
                    hysteresis,
                } => {
                    item["parameter"] = json!(parameter.code());
                    item["side"] = json!(side.code());
                    item["tiers"] = tiers_json(tiers);
                    item["hysteresis"] = json!(hysteresis);
                }
                RuleKind::Score { table, bands } => {
                    item["table"] = json!(config.tables.get(*table).map(|table| table.id()));
                    item["bands"] = json!(
                        bands
                            .iter()
                            .map(|(band, priority)| (band.clone(), priority.code()))
                            .collect::<BTreeMap<_, _>>()
                    );
                }
                RuleKind::Trend {
                    parameter,
                    window_minutes,
                    average_minutes,
                    priority,
                    ..
                } => {
                    item["parameter"] = json!(parameter.code());
                    item["window_minutes"] = json!(window_minutes);
                    item["average_minutes"] = json!(average_minutes);
                    item["priority"] = json!(priority.code());
                }
                RuleKind::DeviceSilent {
                    after_seconds,
                    intervals,
                    priority,
                } => {
                    item["after_seconds"] = json!(after_seconds);
                    item["after_intervals"] = json!(intervals);
                    item["priority"] = json!(priority.code());
                }
                RuleKind::DataAbsent { priority } => {
                    item["priority"] = json!(priority.code());
                }
                RuleKind::LowBattery { tiers, hysteresis } => {
                    item["tiers"] = tiers_json(tiers);
                    item["hysteresis"] = json!(hysteresis);
                }
            }
            item
        })
        .collect();
    let tables: Vec<Value> = config
        .tables
        .iter()
        .map(|table| {
            json!({
                "id": table.id(),
                "version": table.version(),
                "name": table.name(),
                "source": table.source(),
                "parameters": table.parameters().iter().map(|parameter| parameter.code()).collect::<Vec<_>>(),
                "bands": table.bands().iter().map(|band| json!({"name": band.name, "rank": band.rank, "monitoring": band.monitoring, "response": band.response})).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({
        "version": &*config.version,
        "tables": tables,
        "rules": rules,
        "escalation": { "roles": config.escalation.roles },
        "silence_max_seconds": config.silence_max_seconds,
        "freshness_seconds": Parameter::ALL.iter().map(|parameter| (parameter.code(), config.freshness.max_age_seconds[parameter.index()])).collect::<BTreeMap<_, _>>(),
    }))
}

#[derive(Deserialize)]
pub(crate) struct DeliveryQuery {
    after: Option<i64>,
    limit: Option<usize>,
}

/// `GET /api/v1/webhooks/deliveries`: every delivery attempt, oldest first.
pub(crate) async fn deliveries(
    State(app): State<App>,
    Query(query): Query<DeliveryQuery>,
) -> ApiResult<Json<Value>> {
    let records = app
        .0
        .store
        .deliveries(
            query.after.unwrap_or(0),
            query.limit.unwrap_or(500).clamp(1, 10_000),
        )
        .await?;
    let items: Vec<Value> = records
        .iter()
        .map(|record| {
            json!({
                "id": record.id,
                "endpoint": record.endpoint,
                "event": record.event,
                "attempt": record.attempt,
                "time": record.time.to_rfc3339(),
                "status": record.status,
                "error": record.error,
                "delivered": record.delivered,
            })
        })
        .collect();
    Ok(Json(json!({ "deliveries": items })))
}

#[derive(Deserialize)]
pub(crate) struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    ward: Option<String>,
}

#[derive(Default)]
struct RuleStats {
    raised: u64,
    acknowledged: u64,
    self_resolved: u64,
    self_resolved_quickly: u64,
    escalated: u64,
    ack_seconds: Vec<f64>,
    duration_seconds: Vec<f64>,
}

fn percentile(values: &mut [f64], fraction: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let index = ((values.len() - 1) as f64 * fraction).round() as usize;
    Some(values[index])
}

/// `GET /api/v1/alarm-report?from=&to=&ward=`: the alarm fatigue report. Per rule and priority:
/// alarms per patient-day, share acknowledged, time to acknowledge (median, 90th percentile),
/// share that resolved by themselves without anyone acknowledging, and of those the share gone
/// within the rule's condition delay after being raised (candidates for a longer delay), plus
/// escalations; and per rule the conditions its delay filtered (ended before becoming an alarm)
/// against those it raised. Patient-days are the monitored time: the assignments overlapping the
/// period.
pub(crate) async fn alarm_report(
    State(app): State<App>,
    principal: crate::access::Principal,
    Query(query): Query<ReportQuery>,
) -> ApiResult<Json<Value>> {
    let now = app.0.clock.now();
    let to = parse_time("to", query.to.as_deref())?.unwrap_or(now);
    let from = parse_time("from", query.from.as_deref())?.unwrap_or(to.add_seconds(-7 * 24 * 3600));
    if from >= to {
        return Err(ApiError::bad_request("from must be before to"));
    }
    let (patients, patient_days) = {
        let directory = app.0.directory.read();
        let mut patients = BTreeSet::new();
        let mut micros: i64 = 0;
        for patient in directory.patients() {
            // A ward-bound account's report covers its own patients only.
            if !principal.may_see(patient)
                || query
                    .ward
                    .as_ref()
                    .is_some_and(|ward| &patient.details.ward != ward)
            {
                continue;
            }
            patients.insert(patient.id);
            // Union of this patient's assignment intervals, clipped to the period.
            let mut intervals: Vec<(i64, i64)> = directory
                .assignments_of(patient.id, from, to)
                .iter()
                .map(|assignment| {
                    let start = assignment.details.start.max(from).micros();
                    let end = assignment.details.end.unwrap_or(to).min(to).micros();
                    (start, end)
                })
                .filter(|(start, end)| end > start)
                .collect();
            intervals.sort_unstable();
            let mut covered_until = i64::MIN;
            for (start, end) in intervals {
                let start = start.max(covered_until);
                if end > start {
                    micros += end - start;
                }
                covered_until = covered_until.max(end);
            }
        }
        (patients, micros as f64 / 86_400e6)
    };
    let config = app.0.clinical.config();
    let delays: BTreeMap<&str, u32> = config
        .rules
        .iter()
        .map(|rule| (rule.id.as_str(), rule.delay_seconds))
        .collect();
    // Every transition of alarms raised in the period (their later transitions may fall after
    // `to`; they still describe those alarms).
    let mut stats: BTreeMap<(String, String), RuleStats> = BTreeMap::new();
    let mut raised: BTreeMap<String, (String, String, Timestamp)> = BTreeMap::new();
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut filtered: BTreeMap<String, u64> = BTreeMap::new();
    let mut after = 0;
    loop {
        let records = app
            .0
            .store
            .alarm_records(AlarmQuery {
                patient: None,
                after,
                from,
                to: Timestamp::from_micros(i64::MAX),
                limit: 10_000,
            })
            .await?;
        let Some(last) = records.last() else { break };
        after = last.seq;
        for record in &records {
            if !patients.contains(&record.patient) {
                continue;
            }
            if record.transition == "raised" {
                if record.time >= to {
                    continue;
                }
                raised.insert(
                    record.alarm.clone(),
                    (record.rule.clone(), record.priority.clone(), record.time),
                );
                stats
                    .entry((record.rule.clone(), record.priority.clone()))
                    .or_default()
                    .raised += 1;
                continue;
            }
            let Some((rule, priority, raised_at)) = raised.get(&record.alarm) else {
                continue;
            };
            let entry = stats.entry((rule.clone(), priority.clone())).or_default();
            let elapsed = (record.time.micros() - raised_at.micros()) as f64 / 1e6;
            match record.transition.as_str() {
                "acknowledged" => {
                    acknowledged.insert(record.alarm.clone());
                    entry.acknowledged += 1;
                    entry.ack_seconds.push(elapsed);
                }
                "escalated" => entry.escalated += 1,
                "resolved" | "resolved_by_user" => {
                    entry.duration_seconds.push(elapsed);
                    // Over without anyone acting on it: probably not actionable.
                    let by_itself =
                        record.transition == "resolved" && !acknowledged.contains(&record.alarm);
                    if by_itself {
                        entry.self_resolved += 1;
                        let delay = f64::from(delays.get(rule.as_str()).copied().unwrap_or(0));
                        if elapsed <= delay.max(1.0) {
                            entry.self_resolved_quickly += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        if records.len() < 10_000 {
            break;
        }
    }
    // Conditions the delays filtered (ended before becoming alarms), for the delays' effect.
    for (patient, rule, count) in app.0.store.filtered_counts(from, to).await? {
        if patients.contains(&patient) {
            *filtered.entry(rule).or_insert(0) += count;
        }
    }
    let share = |part: u64, whole: u64| {
        if whole == 0 {
            Value::Null
        } else {
            json!(part as f64 / whole as f64)
        }
    };
    let raised_per_rule: BTreeMap<String, u64> =
        stats
            .iter()
            .fold(BTreeMap::new(), |mut totals, ((rule, _), row)| {
                *totals.entry(rule.clone()).or_insert(0) += row.raised;
                totals
            });
    let delay_effect: Vec<Value> = filtered
        .iter()
        .map(|(rule, count)| {
            let raised = raised_per_rule.get(rule).copied().unwrap_or(0);
            json!({
                "rule": rule,
                "filtered_by_delay": count,
                "raised": raised,
                "filtered_share": share(*count, count + raised),
            })
        })
        .collect();
    let rows: Vec<Value> = stats
        .into_iter()
        .map(|((rule, priority), mut row)| {
            json!({
                "rule": rule,
                "priority": priority,
                "raised": row.raised,
                "per_patient_day": if patient_days > 0.0 { json!(row.raised as f64 / patient_days) } else { Value::Null },
                "acknowledged_share": share(row.acknowledged, row.raised),
                "time_to_acknowledge_seconds": {
                    "median": percentile(&mut row.ack_seconds, 0.5),
                    "p90": percentile(&mut row.ack_seconds, 0.9),
                },
                "self_resolved_share": share(row.self_resolved, row.raised),
                "self_resolved_within_delay_share": share(row.self_resolved_quickly, row.raised),
                "escalations": row.escalated,
                "median_duration_seconds": percentile(&mut row.duration_seconds, 0.5),
            })
        })
        .collect();
    let total: u64 = rows.iter().filter_map(|row| row["raised"].as_u64()).sum();
    Ok(Json(json!({
        "from": from.to_rfc3339(),
        "to": to.to_rfc3339(),
        "ward": query.ward,
        "patients": patients.len(),
        "patient_days": patient_days,
        "alarms": total,
        "alarms_per_patient_day": if patient_days > 0.0 { json!(total as f64 / patient_days) } else { Value::Null },
        "config_version": &*config.version,
        "rules": rows,
        "conditions_filtered_by_delay": delay_effect,
    })))
}
