//! Early-warning scores (`Observation`, category `survey`) and alarms (`Flag`) over FHIR, read
//! from the clinical store: the same records `GET /api/v1/patients/{id}/scores` and
//! `GET /api/v1/alarms/log` serve. Mapping and its reasons: `galen_fhir::clinical`.
//!
//! **Observation routing.** Scores share `/fhir/Observation` with vital signs. A search goes to the
//! score store when its `code` names a score table, its `category` is `survey` or its `_id` is a
//! score id (`galen_fhir::search::observation_search_target`); everything else, including a
//! search with neither code nor category, goes to the vital-sign search unchanged. A read goes by
//! the id's shape: `score.{table}.{patient}.{micros}` is a score, anything else a vital sign.
//!
//! **Score search** reads, per patient and table in scope (and per interval of the `date`
//! window), the records after the cursor, collapsed to one per instant (the last the engine stored
//! there: the score after every input of that instant), at most one page plus one. Pages are
//! ordered by (time, patient, table), `_sort=-date` reverses; a scope that has more records than it
//! returned bounds the page, so nothing another scope has before that bound is skipped. The
//! cursor is the last Observation's id.
//!
//! **Flag search** takes the open alarms from `ClinicalStore::open_alarms` and, when resolved ones
//! can match, the alarm log from the earliest instant a matching period can reach; it filters on
//! each alarm's newest transition, orders by raise time, and builds the page's Flags from their
//! full transition histories. A Flag read scans its patient's alarm log from the alarm's raise
//! when it is open, from the start otherwise: the store has no index by alarm id.
//!
//! A systolic pressure the engine scored is served inside a blood pressure panel when a diastolic
//! value exists at the same instant; references to it (`derivedFrom`, `flag-detail`) name the
//! panel, so that every reference resolves.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use galen_fhir::bundle::SearchsetBuilder;
use galen_fhir::clinical::{
    AlarmKind, AlarmPriority, AlarmState, AlarmTransition, FlagKey, MissingParameter,
    ParameterScore, ScoreKey, ScoreParameter, ScoreSource, ScoredValue, StoredScore, alarm_flag,
    alarm_period, is_score_id, is_servable_table_id, parse_flag_id, parse_score_id,
    score_observation,
};
use galen_fhir::observation::{ObservationCode, ObservationKey};
use galen_fhir::search::{
    FlagQuery, ObservationSearchTarget, ScoreQuery, observation_search_target,
};
use galen_fhir::{Flag, Observation};
use galen_model::{DeviceId, PatientId, Timestamp, VitalSign};
use galen_store::{AlarmQuery, AlarmRecord, ScoreRecord};
use serde_json::Value;

use super::{
    FhirError, FhirResult, base_url, check_accept, fhir_response, resource_headers, stamp,
};
use crate::App;

/// Records read per query when walking a score series from its oldest end.
const SCORE_CHUNK: usize = 1000;
/// Records read per query of the alarm log.
const LOG_CHUNK: usize = 10_000;

/// The ids of the configured score tables that FHIR ids can name.
pub(crate) fn servable_tables(app: &App) -> Vec<String> {
    app.0
        .clinical
        .config()
        .tables
        .iter()
        .map(|table| table.id().to_owned())
        .filter(|table| is_servable_table_id(table))
        .collect()
}

/// `GET /fhir/Observation`: vital signs or scores, by the routing rule.
pub(crate) async fn search_observations(
    State(app): State<App>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let tables = servable_tables(&app);
    let names: Vec<&str> = tables.iter().map(String::as_str).collect();
    match observation_search_target(&params, &names)? {
        ObservationSearchTarget::VitalSigns => {
            super::observation::search(State(app), Query(params), headers).await
        }
        ObservationSearchTarget::Scores => search_scores(&app, &params, &names, &headers).await,
    }
}

/// The score Observation `key` names, if stored (for subscription notifications).
pub(crate) async fn stored_score(app: &App, key: &ScoreKey) -> FhirResult<Option<Observation>> {
    let records = app
        .0
        .store
        .scores(
            key.patient,
            &key.table,
            key.time,
            key.time.add_micros(1),
            SCORE_CHUNK,
        )
        .await?;
    match records.last() {
        Some(record) => score_resource(app, record).await,
        None => Ok(None),
    }
}

/// The Flag of alarm `id` raised at `raised`, from the alarm log (for subscription
/// notifications).
pub(crate) async fn flag_of(app: &App, id: &str, raised: Timestamp) -> FhirResult<Option<Flag>> {
    let key = parse_flag_id(id)?;
    Ok(flags_of(app, key.patient, &[(key, raised)])
        .await?
        .remove(&key))
}

/// `GET /fhir/Observation/{id}`: a score id is read here, any other id as a vital sign.
pub(crate) async fn read_observation(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    if !is_score_id(&id) {
        return super::observation::read(State(app), Path(id), headers).await;
    }
    check_accept(&headers)?;
    let key = parse_score_id(&id)?;
    let records = app
        .0
        .store
        .scores(
            key.patient,
            &key.table,
            key.time,
            key.time.add_micros(1),
            SCORE_CHUNK,
        )
        .await?;
    let record = records
        .last()
        .ok_or_else(|| FhirError::not_found("Observation"))?;
    let mut observation = score_resource(&app, record)
        .await?
        .ok_or_else(|| FhirError::not_found("Observation"))?;
    let etag = stamp(&mut observation, |observation| &mut observation.meta);
    Ok(fhir_response(
        StatusCode::OK,
        &observation,
        resource_headers(&etag, None),
    ))
}

fn text(body: &Value, name: &str) -> Option<String> {
    body.get(name).and_then(Value::as_str).map(str::to_owned)
}

fn time(body: &Value, name: &str) -> Option<Timestamp> {
    body.get(name)
        .and_then(Value::as_str)
        .and_then(|text| Timestamp::parse_rfc3339(text).ok())
}

/// A stored `source` (`{device, code, time}` or `{entry}`), as written by `clinical::encode`.
fn decode_source(source: &Value) -> Option<ScoreSource> {
    if let Some(entry) = source.get("entry").and_then(Value::as_i64) {
        return Some(ScoreSource::Entry(entry));
    }
    measurement_key(source).map(ScoreSource::Measurement)
}

/// The vital-sign Observation a stored measurement reference names.
fn measurement_key(source: &Value) -> Option<ObservationKey> {
    let device = source.get("device").and_then(Value::as_i64)?;
    let alias = source.get("code").and_then(Value::as_str)?;
    let vital = VitalSign::ALL
        .into_iter()
        .find(|vital| vital.alias() == alias)?;
    Some(ObservationKey {
        device: DeviceId(device),
        code: ObservationCode::Vital(vital),
        time: time(source, "time")?,
    })
}

/// A stored score: the record's typed header, and what the body (`clinical::encode::score_json`,
/// version 1) adds. A body that cannot be read leaves a score without parameters (and is logged),
/// rather than a hole in the patient's history.
fn decode_score(record: &ScoreRecord) -> StoredScore {
    let mut score = StoredScore {
        patient: record.patient,
        table: record.table.clone(),
        table_name: None,
        table_version: None,
        config_version: None,
        time: record.time,
        total: record.total,
        complete: record.complete,
        band: record.band.clone(),
        monitoring: None,
        response: None,
        points: Vec::new(),
        missing: Vec::new(),
    };
    let body: Value = match serde_json::from_str(&record.body) {
        Ok(body) => body,
        Err(error) => {
            tracing::warn!(%error, table = %record.table, "a stored score body is not JSON");
            return score;
        }
    };
    score.table_name = text(&body, "table_name");
    score.table_version = text(&body, "table_version");
    score.config_version = text(&body, "config_version");
    score.monitoring = text(&body, "monitoring");
    score.response = text(&body, "response");
    for points in body["points"].as_array().into_iter().flatten() {
        let parameter = points["parameter"].as_str().and_then(ScoreParameter::parse);
        let value = match &points["value"] {
            Value::Number(number) => number.as_f64().map(|value| ScoredValue::Number {
                value,
                rounded: points["rounded"].as_f64(),
                unit: text(points, "unit"),
            }),
            Value::String(code) => Some(ScoredValue::Code(code.clone())),
            _ => None,
        };
        let source = decode_source(&points["source"]);
        match (parameter, points["points"].as_i64(), value, source) {
            (Some(parameter), Some(points), Some(value), Some(source)) => {
                score.points.push(ParameterScore {
                    parameter,
                    points,
                    value,
                    source,
                });
            }
            _ => {
                tracing::warn!(table = %record.table, "a stored score has an unreadable parameter")
            }
        }
    }
    for missing in body["missing"].as_array().into_iter().flatten() {
        if let Some(parameter) = missing["parameter"]
            .as_str()
            .and_then(ScoreParameter::parse)
        {
            score.missing.push(MissingParameter {
                parameter,
                last_seen: time(missing, "last_seen"),
            });
        }
    }
    score
}

/// Points systolic-pressure keys at the blood pressure panel they are served in, when a
/// diastolic value exists at the same instant of the same device (as `group_readings` does).
async fn resolve_pressures(app: &App, keys: &mut [&mut ObservationKey]) -> FhirResult<()> {
    let mut panels: HashMap<(DeviceId, Timestamp), bool> = HashMap::new();
    for key in keys.iter_mut() {
        if key.code != ObservationCode::Vital(VitalSign::SystolicBp) {
            continue;
        }
        let at = (key.device, key.time);
        let panel = match panels.get(&at) {
            Some(panel) => *panel,
            None => {
                let diastolic = app
                    .0
                    .store
                    .range(
                        key.device,
                        VitalSign::DiastolicBp,
                        key.time,
                        key.time.add_micros(1),
                    )
                    .await?;
                let panel = !diastolic.is_empty();
                panels.insert(at, panel);
                panel
            }
        };
        if panel {
            key.code = ObservationCode::BloodPressurePanel;
        }
    }
    Ok(())
}

/// The Observation of a stored score; `None` for a table FHIR ids cannot name.
async fn score_resource(app: &App, record: &ScoreRecord) -> FhirResult<Option<Observation>> {
    let mut score = decode_score(record);
    let mut keys: Vec<&mut ObservationKey> = score
        .points
        .iter_mut()
        .filter_map(|points| match &mut points.source {
            ScoreSource::Measurement(key) => Some(key),
            ScoreSource::Entry(_) => None,
        })
        .collect();
    resolve_pressures(app, &mut keys).await?;
    Ok(score_observation(&score).ok())
}

/// Keeps the last record of every instant of records in `(time, id)` order.
fn collapse(records: Vec<ScoreRecord>) -> Vec<ScoreRecord> {
    let mut collapsed: Vec<ScoreRecord> = Vec::with_capacity(records.len());
    for record in records {
        if collapsed
            .last()
            .is_some_and(|last| last.time == record.time)
        {
            collapsed.pop();
        }
        collapsed.push(record);
    }
    collapsed
}

/// A patient's scores of one table in `[from, to)`, one per instant, in time order (newest first
/// when `descending`): at most `want`, and whether there are more beyond them.
async fn collapsed_scores(
    app: &App,
    patient: PatientId,
    table: &str,
    (from, to): (Timestamp, Timestamp),
    want: usize,
    descending: bool,
) -> FhirResult<(Vec<ScoreRecord>, bool)> {
    let store = &app.0.store;
    if descending {
        // The store gives the newest `limit`: exactly what a descending page needs, except that
        // the oldest instant may be cut, and collapsing may leave fewer than wanted.
        let mut limit = want.saturating_add(1).max(16);
        loop {
            let records = store.scores(patient, table, from, to, limit).await?;
            let full = records.len() >= limit;
            let mut groups = collapse(records);
            if full && !groups.is_empty() {
                groups.remove(0);
            }
            if !full || groups.len() > want {
                groups.reverse();
                let more = full || groups.len() > want;
                groups.truncate(want);
                return Ok((groups, more));
            }
            limit = limit.saturating_mul(2);
        }
    }
    // Ascending: step back from `to` a chunk at a time until the rest of the range fits in one
    // read; `newer` holds every record of `[upper, covered_to)` from the previous chunk.
    let mut limit = want.saturating_add(1).max(SCORE_CHUNK);
    let mut upper = to;
    let mut covered_to = to;
    let mut newer: Vec<ScoreRecord> = Vec::new();
    loop {
        let mut records = store.scores(patient, table, from, upper, limit).await?;
        if records.len() < limit {
            records.append(&mut newer);
            let mut groups = collapse(records);
            let more = covered_to < to || groups.len() > want;
            groups.truncate(want);
            return Ok((groups, more));
        }
        let oldest = records[0].time;
        let next_upper = oldest.add_micros(1);
        if next_upper >= upper {
            // A whole chunk at one instant: read more at once.
            limit = limit.saturating_mul(2);
            continue;
        }
        covered_to = upper;
        newer = records
            .into_iter()
            .filter(|record| record.time > oldest)
            .collect();
        upper = next_upper;
    }
}

/// The order of score results: effective time, then patient, then table.
fn score_order(key: &ScoreKey) -> (Timestamp, PatientId, &str) {
    (key.time, key.patient, key.table.as_str())
}

async fn search_scores(
    app: &App,
    params: &[(String, String)],
    tables: &[&str],
    headers: &HeaderMap,
) -> FhirResult<Response> {
    let query = ScoreQuery::parse(params, tables)?;
    let count = query.paging.count;
    let cursor = super::read_cursor(query.paging.cursor.as_deref(), |cursor| {
        parse_score_id(cursor).ok()
    })?;
    let descending = query.newest_first();
    let mut found: Vec<(ScoreKey, ScoreRecord)> = Vec::new();
    // The page may hold only results up to this key (in page order): a scope with more results
    // than it returned has nothing before its last one that the page lacks, and nothing is known
    // about what it has after.
    let mut bound: Option<ScoreKey> = None;
    if !query.matches_nothing() {
        let patients: BTreeSet<PatientId> = match (&query.patients, &query.ids) {
            (Some(patients), _) => patients.clone(),
            (None, Some(ids)) => ids.iter().map(|key| key.patient).collect(),
            (None, None) => app
                .0
                .directory
                .read()
                .patients()
                .iter()
                .map(|patient| patient.id)
                .collect(),
        };
        let scope_tables: Vec<&str> = tables
            .iter()
            .copied()
            .filter(|table| {
                query
                    .tables
                    .as_ref()
                    .is_none_or(|wanted| wanted.contains(*table))
                    && query
                        .ids
                        .as_ref()
                        .is_none_or(|ids| ids.iter().any(|key| key.table == *table))
            })
            .collect();
        // `_count=0` asks for the total only: read everything that matches.
        let want = if count == 0 {
            usize::MAX - 1
        } else {
            count + 1
        };
        for patient in &patients {
            for table in &scope_tables {
                for &(window_from, window_to) in query.window.intervals() {
                    let (mut from, mut to) = (window_from, window_to);
                    if let Some(cursor) = &cursor {
                        if descending {
                            to = to.min(cursor.time.add_micros(1));
                        } else {
                            from = from.max(cursor.time);
                        }
                    }
                    if from >= to {
                        continue;
                    }
                    let (records, more) =
                        collapsed_scores(app, *patient, table, (from, to), want, descending)
                            .await?;
                    if more && let Some(last) = records.last() {
                        let key = ScoreKey {
                            patient: last.patient,
                            table: last.table.clone(),
                            time: last.time,
                        };
                        let tighter = bound.as_ref().is_none_or(|bound| {
                            if descending {
                                score_order(&key) > score_order(bound)
                            } else {
                                score_order(&key) < score_order(bound)
                            }
                        });
                        if tighter {
                            bound = Some(key);
                        }
                    }
                    for record in records {
                        let key = ScoreKey {
                            patient: record.patient,
                            table: record.table.clone(),
                            time: record.time,
                        };
                        if query.matches(&key) {
                            found.push((key, record));
                        }
                    }
                }
            }
        }
    }
    let in_order = |left: &ScoreKey, right: &ScoreKey| {
        if descending {
            score_order(left) > score_order(right)
        } else {
            score_order(left) < score_order(right)
        }
    };
    found.retain(|(key, _)| {
        cursor.as_ref().is_none_or(|cursor| in_order(cursor, key))
            && bound
                .as_ref()
                .is_none_or(|bound| key == bound || in_order(key, bound))
    });
    found.sort_by(|(left, _), (right, _)| {
        let order = score_order(left).cmp(&score_order(right));
        if descending { order.reverse() } else { order }
    });
    let complete = bound.is_none() && found.len() <= count;
    let mut bundle = SearchsetBuilder::new(&base_url(headers), "Observation", params);
    if count == 0 {
        // Everything that matches was read: the total is exact.
        bundle = bundle.total(found.len() as u64);
    } else {
        found.truncate(count);
        let next = (!complete)
            .then(|| found.last().map(|(key, _)| key.id()))
            .flatten();
        bundle = bundle.next_cursor(next.as_deref());
        if complete && cursor.is_none() {
            bundle = bundle.total(found.len() as u64);
        }
        for (_, record) in &found {
            if let Some(mut observation) = score_resource(app, record).await? {
                stamp(&mut observation, |observation| &mut observation.meta);
                bundle = bundle.entry(observation);
            }
        }
    }
    Ok(fhir_response(
        StatusCode::OK,
        &bundle.build(),
        HeaderMap::new(),
    ))
}

/// One alarm transition from the log: the record's typed header and its body
/// (`clinical::encode::alarm_json`, version 1). `None` when the header's codes are unknown.
fn decode_transition(record: &AlarmRecord) -> Option<AlarmTransition> {
    let (Some(priority), Some(state)) = (
        AlarmPriority::parse(&record.priority),
        AlarmState::parse(&record.state),
    ) else {
        tracing::warn!(alarm = %record.alarm, "an alarm record has an unknown priority or state");
        return None;
    };
    let body: Value = serde_json::from_str(&record.body).unwrap_or_else(|error| {
        tracing::warn!(%error, alarm = %record.alarm, "a stored alarm body is not JSON");
        Value::Null
    });
    Some(AlarmTransition {
        time: record.time,
        transition: record.transition.clone(),
        priority,
        state,
        raised_at: time(&body, "raised_at").unwrap_or(record.time),
        rule: record.rule.clone(),
        kind: body["kind"]
            .as_str()
            .and_then(AlarmKind::parse)
            .unwrap_or(AlarmKind::Physiological),
        device: body["device"].as_i64().map(DeviceId),
        actor: text(&body, "actor"),
        reason: text(&body, "reason"),
        escalation_level: body["escalation_level"]
            .as_u64()
            .and_then(|level| u8::try_from(level).ok())
            .unwrap_or(0),
        role: text(&body, "role"),
        silenced_until: time(&body, "silenced_until"),
        value: body["value"].as_f64(),
        threshold: body["threshold"].as_f64(),
        message: text(&body, "message").unwrap_or_else(|| record.rule.clone()),
        evidence: body["evidence"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(measurement_key)
            .collect(),
        config_version: text(&body, "config_version"),
    })
}

/// Every alarm log record of `patient` (or of all patients) from `from` on, in `seq` order.
async fn alarm_log(
    app: &App,
    patient: Option<PatientId>,
    from: Timestamp,
) -> FhirResult<Vec<AlarmRecord>> {
    let mut records = Vec::new();
    let mut after = 0;
    loop {
        let chunk = app
            .0
            .store
            .alarm_records(AlarmQuery {
                patient,
                after,
                from,
                to: Timestamp::MAX,
                limit: LOG_CHUNK,
            })
            .await?;
        let Some(last) = chunk.last() else { break };
        after = last.seq;
        let done = chunk.len() < LOG_CHUNK;
        records.extend(chunk);
        if done {
            break;
        }
    }
    Ok(records)
}

/// The Flags of `alarms` (all of one patient), from that patient's log since the earliest raise.
async fn flags_of(
    app: &App,
    patient: PatientId,
    alarms: &[(FlagKey, Timestamp)],
) -> FhirResult<BTreeMap<FlagKey, Flag>> {
    let Some(from) = alarms.iter().map(|(_, raised)| *raised).min() else {
        return Ok(BTreeMap::new());
    };
    let wanted: BTreeMap<String, FlagKey> =
        alarms.iter().map(|(key, _)| (key.id(), *key)).collect();
    let mut histories: BTreeMap<FlagKey, Vec<AlarmTransition>> = BTreeMap::new();
    for record in alarm_log(app, Some(patient), from).await? {
        if let Some(key) = wanted.get(&record.alarm)
            && let Some(transition) = decode_transition(&record)
        {
            histories.entry(*key).or_default().push(transition);
        }
    }
    let mut flags = BTreeMap::new();
    for (key, mut history) in histories {
        if let Some(flag) = flag_from_history(app, &key, &mut history).await? {
            flags.insert(key, flag);
        }
    }
    Ok(flags)
}

/// The Flag of one alarm from its transitions (oldest first), with evidence pointing at the
/// Observations Galen serves.
async fn flag_from_history(
    app: &App,
    key: &FlagKey,
    history: &mut [AlarmTransition],
) -> FhirResult<Option<Flag>> {
    let mut keys: Vec<&mut ObservationKey> = history
        .iter_mut()
        .flat_map(|transition| transition.evidence.iter_mut())
        .collect();
    resolve_pressures(app, &mut keys).await?;
    Ok(alarm_flag(key, history))
}

/// `GET /fhir/Flag/{id}`.
pub(crate) async fn read_flag(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let key = parse_flag_id(&id)?;
    // An open alarm's raise time bounds the read; a closed one may be anywhere in the log.
    let from = app
        .0
        .store
        .open_alarms()
        .await?
        .iter()
        .find(|record| record.alarm == id)
        .and_then(decode_transition)
        .map_or(Timestamp::MIN, |transition| transition.raised_at);
    let mut flag = flags_of(&app, key.patient, &[(key, from)])
        .await?
        .remove(&key)
        .ok_or_else(|| FhirError::not_found("Flag"))?;
    let etag = stamp(&mut flag, |flag| &mut flag.meta);
    Ok(fhir_response(
        StatusCode::OK,
        &flag,
        resource_headers(&etag, None),
    ))
}

/// Parses a Flag search cursor `{raised micros}.{id}`.
fn parse_flag_cursor(cursor: &str) -> Option<(Timestamp, FlagKey)> {
    let (micros, id) = cursor.split_once('.')?;
    Some((
        Timestamp::from_micros(micros.parse().ok()?),
        parse_flag_id(id).ok()?,
    ))
}

/// `GET /fhir/Flag`.
pub(crate) async fn search_flags(
    State(app): State<App>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> FhirResult<Response> {
    check_accept(&headers)?;
    let query = FlagQuery::parse(&params)?;
    let count = query.paging.count;
    let cursor = super::read_cursor(query.paging.cursor.as_deref(), parse_flag_cursor)?;
    let patients: Option<BTreeSet<PatientId>> = match (&query.patients, &query.ids) {
        (Some(patients), _) => Some(patients.clone()),
        (None, Some(ids)) => Some(ids.iter().map(|key| key.patient).collect()),
        (None, None) => None,
    };
    // The newest record of every candidate alarm.
    let mut newest: BTreeMap<String, AlarmRecord> = BTreeMap::new();
    let mut keep = |record: AlarmRecord| {
        if patients
            .as_ref()
            .is_some_and(|patients| !patients.contains(&record.patient))
        {
            return;
        }
        match newest.get(&record.alarm) {
            Some(known) if known.seq >= record.seq => {}
            _ => {
                newest.insert(record.alarm.clone(), record);
            }
        }
    };
    if !query.matches_nothing() {
        if query.wants_open() {
            for record in app.0.store.open_alarms().await? {
                keep(record);
            }
        }
        if query.wants_resolved() {
            let from = query.earliest_end();
            match &patients {
                Some(patients) => {
                    for patient in patients {
                        for record in alarm_log(&app, Some(*patient), from).await? {
                            keep(record);
                        }
                    }
                }
                None => {
                    for record in alarm_log(&app, None, from).await? {
                        keep(record);
                    }
                }
            }
        }
    }
    let descending = query.newest_first();
    let in_order = |left: &(Timestamp, FlagKey), right: &(Timestamp, FlagKey)| {
        if descending {
            left > right
        } else {
            left < right
        }
    };
    let mut matches: Vec<(Timestamp, FlagKey)> = newest
        .values()
        .filter_map(|record| {
            let key = parse_flag_id(&record.alarm).ok()?;
            let transition = decode_transition(record)?;
            let period = alarm_period(std::slice::from_ref(&transition))?;
            query
                .matches(&key, transition.state, transition.priority, period)
                .then_some((transition.raised_at, key))
        })
        .filter(|position| {
            cursor
                .as_ref()
                .is_none_or(|cursor| in_order(cursor, position))
        })
        .collect();
    matches.sort();
    if descending {
        matches.reverse();
    }
    let complete = matches.len() <= count;
    // Every match is known here, so the total is exact on the first page (and for `_count=0`).
    let total = (cursor.is_none() && (complete || count == 0)).then_some(matches.len() as u64);
    matches.truncate(count);
    let next = (!complete)
        .then(|| {
            matches
                .last()
                .map(|(raised, key)| format!("{}.{}", raised.micros(), key.id()))
        })
        .flatten();
    let mut by_patient: BTreeMap<PatientId, Vec<(FlagKey, Timestamp)>> = BTreeMap::new();
    for (raised, key) in &matches {
        by_patient
            .entry(key.patient)
            .or_default()
            .push((*key, *raised));
    }
    let mut flags: BTreeMap<FlagKey, Flag> = BTreeMap::new();
    for (patient, alarms) in &by_patient {
        flags.extend(flags_of(&app, *patient, alarms).await?);
    }
    let mut bundle =
        SearchsetBuilder::new(&base_url(&headers), "Flag", &params).next_cursor(next.as_deref());
    if let Some(total) = total {
        bundle = bundle.total(total);
    }
    for (_, key) in &matches {
        if let Some(mut flag) = flags.remove(key) {
            stamp(&mut flag, |flag| &mut flag.meta);
            bundle = bundle.entry(flag);
        }
    }
    Ok(fhir_response(
        StatusCode::OK,
        &bundle.build(),
        HeaderMap::new(),
    ))
}

/// One page of a patient's scores of one table for `$export`: the Observations of the newest
/// stored records in `[from, upper)` (at most [`SCORE_CHUNK`] records, one Observation per
/// instant: the last record stored there), and the `upper` bound of the next page, `None` when
/// the range is done. Pages walk from the newest score back, so each read is one bounded query.
pub(crate) async fn export_scores_page(
    app: &App,
    patient: PatientId,
    table: &str,
    from: Timestamp,
    upper: Timestamp,
) -> FhirResult<(Vec<Observation>, Option<Timestamp>)> {
    let records = app
        .0
        .store
        .scores(patient, table, from, upper, SCORE_CHUNK)
        .await?;
    // A full read may have left older records out, at the oldest instant read too; that instant's
    // last record is in this page (records come newest first by (time, id)), so the next page
    // ends before it.
    let next = (records.len() >= SCORE_CHUNK)
        .then(|| records.first().map(|record| record.time))
        .flatten();
    let mut observations = Vec::new();
    for record in collapse(records) {
        if let Some(observation) = score_resource(app, &record).await? {
            observations.push(observation);
        }
    }
    Ok((observations, next))
}

/// One patient's alarms as Flags for `$export`, read from the alarm log a page at a time.
///
/// The log is read in `seq` order up to the export's `until` (transitions from then on are left
/// out, so each Flag is the alarm as it stood at the export's transaction time). An alarm's
/// history is kept only while the alarm is open at the point read: its Flag is built at the
/// resolving transition (resolution is final: the engine never changes a resolved alarm), and the
/// alarms still open come with the last page. Memory is one page of the log plus the histories
/// of the alarms open at one time.
///
/// With `since`, only alarms whose last transition before `until` is at or after `since` are
/// exported (their Flag's `meta.lastUpdated`); a first pass over the log from `since` finds them
/// and the earliest raise among them, where the second pass starts.
#[derive(Debug)]
pub(crate) struct ExportFlags {
    patient: PatientId,
    since: Option<Timestamp>,
    until: Timestamp,
    /// With `since`: the alarms with a transition in `[since, until)`.
    wanted: Option<BTreeSet<String>>,
    /// Where the log is read from.
    from: Timestamp,
    /// The last `seq` read.
    after: i64,
    /// The histories of the alarms open at the point read, by alarm id.
    open: BTreeMap<String, (FlagKey, Vec<AlarmTransition>)>,
    done: bool,
}

impl ExportFlags {
    /// Prepares the export of `patient`'s alarms as they stood before `until`.
    pub(crate) async fn new(
        app: &App,
        patient: PatientId,
        since: Option<Timestamp>,
        until: Timestamp,
    ) -> FhirResult<ExportFlags> {
        let mut wanted = None;
        let mut from = Timestamp::MIN;
        if let Some(since) = since {
            let mut alarms = BTreeSet::new();
            let mut earliest = until;
            let mut after = 0;
            loop {
                let chunk = app
                    .0
                    .store
                    .alarm_records(AlarmQuery {
                        patient: Some(patient),
                        after,
                        from: since,
                        to: until,
                        limit: LOG_CHUNK,
                    })
                    .await?;
                let Some(last) = chunk.last() else { break };
                after = last.seq;
                let done = chunk.len() < LOG_CHUNK;
                for record in &chunk {
                    if !alarms.contains(&record.alarm) {
                        let raised = decode_transition(record)
                            .map_or(record.time, |transition| transition.raised_at);
                        earliest = earliest.min(raised);
                        alarms.insert(record.alarm.clone());
                    }
                }
                if done {
                    break;
                }
            }
            from = earliest;
            wanted = Some(alarms);
        }
        Ok(ExportFlags {
            patient,
            since,
            until,
            wanted,
            from,
            after: 0,
            open: BTreeMap::new(),
            done: from >= until,
        })
    }

    /// The Flags completed by the next page of the log; `None` once the log is read.
    pub(crate) async fn next_page(&mut self, app: &App) -> FhirResult<Option<Vec<Flag>>> {
        if self.done {
            return Ok(None);
        }
        let chunk = app
            .0
            .store
            .alarm_records(AlarmQuery {
                patient: Some(self.patient),
                after: self.after,
                from: self.from,
                to: self.until,
                limit: LOG_CHUNK,
            })
            .await?;
        if let Some(last) = chunk.last() {
            self.after = last.seq;
        }
        let last_page = chunk.len() < LOG_CHUNK;
        let mut finished = Vec::new();
        for record in chunk {
            if self
                .wanted
                .as_ref()
                .is_some_and(|wanted| !wanted.contains(&record.alarm))
            {
                continue;
            }
            let (Ok(key), Some(transition)) =
                (parse_flag_id(&record.alarm), decode_transition(&record))
            else {
                continue;
            };
            let resolved = transition.state == AlarmState::Resolved;
            self.open
                .entry(record.alarm.clone())
                .or_insert_with(|| (key, Vec::new()))
                .1
                .push(transition);
            if resolved && let Some(history) = self.open.remove(&record.alarm) {
                finished.push(history);
            }
        }
        if last_page {
            self.done = true;
            finished.extend(std::mem::take(&mut self.open).into_values());
        }
        let mut flags = Vec::with_capacity(finished.len());
        for (key, mut history) in finished {
            let changed = history.last().map(|transition| transition.time);
            if self
                .since
                .is_some_and(|since| changed.is_none_or(|changed| changed < since))
            {
                continue;
            }
            if let Some(flag) = flag_from_history(app, &key, &mut history).await? {
                flags.push(flag);
            }
        }
        Ok(Some(flags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(time: i64, total: i64) -> ScoreRecord {
        ScoreRecord {
            patient: PatientId(1),
            time: Timestamp::from_micros(time),
            table: "news2".to_owned(),
            total,
            band: "low".to_owned(),
            complete: false,
            body: String::new(),
        }
    }

    #[test]
    fn one_score_per_instant_the_last_stored() {
        let collapsed = collapse(vec![
            record(1, 1),
            record(2, 2),
            record(2, 3),
            record(2, 4),
            record(3, 5),
        ]);
        let totals: Vec<i64> = collapsed.iter().map(|record| record.total).collect();
        assert_eq!(totals, [1, 4, 5]);
    }

    /// What `clinical::encode` stores is what this module reads: a NEWS2 score evaluated by the
    /// engine's table, encoded as the runtime stores it, decoded here.
    #[test]
    fn stored_bodies_decode_into_the_mapping_input() {
        use galen_clinical::{
            ClinicalConfig, Consciousness, Freshness, MeasurementRef, Parameter, Reading,
            ScoreInputs, Source, Value as ClinicalValue,
        };
        let config = ClinicalConfig::builtin();
        let table = config
            .tables
            .iter()
            .position(|table| table.id() == "news2")
            .expect("news2 is built in");
        let now = Timestamp::from_micros(1_795_420_800_000_000);
        let spo2 = MeasurementRef {
            device: DeviceId(4),
            vital: VitalSign::Spo2,
            time: now.add_seconds(-30),
        };
        let mut inputs = ScoreInputs::default();
        inputs.readings[Parameter::Spo2.index()] = Some(Reading {
            value: ClinicalValue::Number(88.4),
            time: spo2.time,
            source: Source::Measurement(spo2),
        });
        inputs.readings[Parameter::Consciousness.index()] = Some(Reading {
            value: ClinicalValue::Consciousness(Consciousness::Alert),
            time: now.add_seconds(-60),
            source: Source::Entry(9),
        });
        // A heart rate too old to count: stale, not never recorded.
        inputs.readings[Parameter::HeartRate.index()] = Some(Reading {
            value: ClinicalValue::Number(80.0),
            time: now.add_seconds(-3600),
            source: Source::Entry(10),
        });
        let score = config.tables[table].evaluate(&inputs, now, &Freshness::default());
        let body = crate::clinical::encode::score_json(&config, table, &score, PatientId(1));
        let stored = ScoreRecord {
            body: body.to_string(),
            total: i64::from(score.total),
            ..record(now.micros(), 0)
        };
        let decoded = decode_score(&stored);
        assert_eq!(
            decoded.table_name.as_deref(),
            Some(config.tables[table].name())
        );
        assert_eq!(
            decoded.table_version.as_deref(),
            Some(config.tables[table].version())
        );
        assert_eq!(decoded.config_version.as_deref(), Some(&*config.version));
        assert!(decoded.response.is_some() && decoded.monitoring.is_some());
        assert_eq!(
            decoded.points,
            [
                ParameterScore {
                    parameter: ScoreParameter::Spo2,
                    points: 3,
                    value: ScoredValue::Number {
                        value: 88.4,
                        rounded: Some(88.0),
                        unit: Some("%".to_owned())
                    },
                    source: ScoreSource::Measurement(ObservationKey {
                        device: DeviceId(4),
                        code: ObservationCode::Vital(VitalSign::Spo2),
                        time: spo2.time,
                    }),
                },
                ParameterScore {
                    parameter: ScoreParameter::Consciousness,
                    points: 0,
                    value: ScoredValue::Code("A".to_owned()),
                    source: ScoreSource::Entry(9),
                }
            ],
            "SpO2 88 scores 3 on scale 1 (RCP NEWS2 2017, chart 1)"
        );
        let missing: Vec<(ScoreParameter, Option<Timestamp>)> = decoded
            .missing
            .iter()
            .map(|missing| (missing.parameter, missing.last_seen))
            .collect();
        assert_eq!(
            missing,
            [
                (ScoreParameter::RespiratoryRate, None),
                (ScoreParameter::SupplementalOxygen, None),
                (ScoreParameter::SystolicBp, None),
                (ScoreParameter::HeartRate, Some(now.add_seconds(-3600))),
                (ScoreParameter::Temperature, None),
            ]
        );
        // An unreadable body still gives the header's score.
        let broken = ScoreRecord {
            body: "{".to_owned(),
            ..record(5, 7)
        };
        let score = decode_score(&broken);
        assert_eq!((score.total, score.points.len()), (7, 0));
    }

    #[test]
    fn stored_alarm_transitions_decode() {
        use std::sync::Arc;

        use galen_clinical::{
            AlarmEvent, AlarmId, ClinicalConfig, MeasurementRef, Priority, Source, Transition,
        };
        let config = ClinicalConfig::builtin();
        let rule = config
            .rules
            .iter()
            .position(|rule| rule.id == "technical.device_silent")
            .expect("a built-in technical rule");
        let raised_at = Timestamp::from_micros(1_795_420_800_000_000);
        let event = AlarmEvent {
            alarm: AlarmId {
                patient: PatientId(1),
                number: 2,
            },
            rule,
            device: Some(DeviceId(4)),
            transition: Transition::Acknowledged,
            time: raised_at.add_seconds(60),
            raised_at,
            priority: Priority::Medium,
            state: galen_clinical::AlarmState::Acknowledged,
            actor: Some("nurse.jones".to_owned()),
            reason: Some("checking".to_owned()),
            escalation_level: 1,
            role: None,
            silenced_until: None,
            value: None,
            threshold: None,
            evidence: vec![
                Source::Measurement(MeasurementRef {
                    device: DeviceId(4),
                    vital: VitalSign::HeartRate,
                    time: raised_at.add_seconds(-60),
                }),
                Source::Entry(3),
            ],
            config_version: Arc::from("c1"),
        };
        let body = crate::clinical::encode::alarm_json(&config, &event).to_string();
        let record = crate::clinical::encode::alarm_record(&config, &event, body);
        let transition = decode_transition(&record).expect("decodes");
        assert_eq!(transition.rule, "technical.device_silent");
        assert_eq!(transition.transition, "acknowledged");
        assert_eq!(transition.priority, AlarmPriority::Medium);
        assert_eq!(transition.config_version.as_deref(), Some("c1"));
        assert_eq!(
            transition.message,
            crate::clinical::encode::alarm_message(&config, &event)
        );
        assert_eq!(transition.kind, AlarmKind::Technical);
        assert_eq!(transition.device, Some(DeviceId(4)));
        assert_eq!(transition.state, AlarmState::Acknowledged);
        assert_eq!(transition.actor.as_deref(), Some("nurse.jones"));
        assert_eq!(transition.escalation_level, 1);
        assert_eq!(transition.raised_at, raised_at);
        assert_eq!(
            transition.evidence,
            [ObservationKey {
                device: DeviceId(4),
                code: ObservationCode::Vital(VitalSign::HeartRate),
                time: raised_at.add_seconds(-60),
            }],
            "measurements only: entries have no FHIR resource"
        );
        let unknown = AlarmRecord {
            state: "snoozed".to_owned(),
            ..record
        };
        assert!(decode_transition(&unknown).is_none());
        assert_eq!(
            parse_flag_cursor("-5.3-1"),
            Some((
                Timestamp::from_micros(-5),
                FlagKey {
                    patient: PatientId(3),
                    number: 1
                }
            ))
        );
        assert_eq!(parse_flag_cursor("x.3-1"), None);
    }
}
