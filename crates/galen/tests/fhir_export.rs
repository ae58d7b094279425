//! FHIR Bulk Data `$export` end to end against the real binary: asynchronous kick-off, status
//! polling, the manifest, NDJSON files fetched with the token and validated by the independent
//! R4 validator, the system / Patient / Group levels, `_type`, `_since`, cancellation and errors;
//! the clinical engine's early-warning scores (survey Observations) and alarms (Flags), produced
//! by ingesting vital signs that score NEWS2 8 and raise an alarm, with `_since` on their times.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Answer, TOKEN, exchange, micros_to_rfc3339, post, request, start, start_with_args};
use serde_json::{Value, json};

const MINUTE: i64 = 60_000_000;
const SECOND: i64 = 1_000_000;

fn get(address: &str, path: &str) -> Answer {
    exchange(
        address,
        "GET",
        path,
        &[("Accept", "application/fhir+json")],
        None,
        Some(TOKEN),
    )
}

/// The path part of an absolute URL Galen wrote.
fn path_of(url: &str) -> String {
    let start = url.find("/fhir/").expect("a /fhir/ URL");
    url[start..].to_owned()
}

/// Kicks off an export at `path` and waits for its manifest.
fn export(address: &str, path: &str) -> (String, Value) {
    let kick_off = exchange(
        address,
        "GET",
        path,
        &[
            ("Accept", "application/fhir+json"),
            ("Prefer", "respond-async"),
        ],
        None,
        Some(TOKEN),
    );
    assert_eq!(kick_off.status, 202, "{path}: {}", kick_off.body);
    let status = path_of(
        kick_off
            .header("content-location")
            .expect("Content-Location"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = get(address, &status);
        match answer.status {
            202 => {
                assert!(
                    answer.header("x-progress").is_some(),
                    "progress while running"
                );
            }
            200 => return (status, answer.json()),
            other => panic!("{status} answered {other}: {}", answer.body),
        }
        assert!(Instant::now() < deadline, "the export finishes within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The resources of each file of a manifest, by type; checks counts and validates every line.
fn files(address: &str, manifest: &Value) -> Vec<(String, Vec<Value>)> {
    let mut found = Vec::new();
    let mut lines = Vec::new();
    for output in manifest["output"].as_array().expect("output") {
        let kind = output["type"].as_str().expect("type").to_owned();
        let path = path_of(output["url"].as_str().expect("url"));
        let anonymous = exchange(address, "GET", &path, &[], None, None);
        assert_eq!(anonymous.status, 401, "files need the token");
        let answer = get(address, &path);
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert_eq!(
            answer.header("content-type"),
            Some("application/fhir+ndjson")
        );
        let resources: Vec<Value> = answer
            .body
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON resource per line"))
            .collect();
        assert_eq!(
            output["count"].as_u64(),
            Some(resources.len() as u64),
            "{kind}: the manifest counts what the file holds"
        );
        assert!(
            resources
                .iter()
                .all(|resource| resource["resourceType"] == kind.as_str())
        );
        lines.extend(answer.body.lines().map(str::to_owned));
        found.push((kind, resources));
    }
    if !lines.is_empty() {
        common::validate_fhir(&lines);
    }
    found
}

fn ids(resources: &[Value]) -> BTreeSet<String> {
    resources
        .iter()
        .filter_map(|resource| resource["id"].as_str().map(str::to_owned))
        .collect()
}

/// The ids of the vital-sign Observations of a file (early-warning scores, `score.*`, left out).
fn vital_ids(resources: &[Value]) -> BTreeSet<String> {
    ids(resources)
        .into_iter()
        .filter(|id| !id.starts_with("score."))
        .collect()
}

fn of_type<'a>(files: &'a [(String, Vec<Value>)], kind: &str) -> &'a [Value] {
    files
        .iter()
        .find(|(name, _)| name == kind)
        .map_or(&[][..], |(_, resources)| resources.as_slice())
}

#[test]
fn bulk_export_levels_filters_and_files() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = start(directory.path());
    let address = server.address.as_str();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let base = (now / MINUTE - 120) * MINUTE;

    // Two patients on two wards, a monitor each, and a third monitor nobody is assigned to.
    let patient = |mrn: &str, ward: &str| {
        post(
            address,
            "/api/v1/patients",
            &json!({
                "identifier": { "system": "urn:mrn", "value": mrn },
                "name": { "family": "Export", "given": mrn },
                "birth_date": "1950-01-01", "sex": "other", "ward": ward, "bed": "1"
            }),
        )["id"]
            .as_i64()
            .expect("patient id")
    };
    let (icu, ccu) = (patient("E-1", "ICU"), patient("E-2", "CCU"));
    let device = |serial: &str| {
        post(
            address,
            "/api/v1/devices",
            &json!({ "serial": serial, "kind": "monitor" }),
        )["id"]
            .as_i64()
            .expect("device id")
    };
    let (d1, d2, d3) = (device("EXP-1"), device("EXP-2"), device("EXP-3"));
    for (device, patient) in [(d1, icu), (d2, ccu)] {
        post(
            address,
            "/api/v1/assignments",
            &json!({ "device": device, "patient": patient, "start": micros_to_rfc3339(base - MINUTE) }),
        );
    }
    let item = |serial: &str, code: &str, value: f64, unit: &str, minute: i64| json!({ "device": serial, "code": code, "value": value, "unit": unit, "time": micros_to_rfc3339(base + minute * MINUTE) });
    let mut items = Vec::new();
    for minute in 0..5 {
        items.push(item(
            "EXP-1",
            "heart_rate",
            70.0 + minute as f64,
            "/min",
            minute,
        ));
    }
    items.push(item("EXP-1", "systolic_bp", 120.0, "mm[Hg]", 2));
    items.push(item("EXP-1", "diastolic_bp", 80.0, "mm[Hg]", 2));
    for minute in 0..3 {
        items.push(item("EXP-2", "spo2", 95.0 + minute as f64, "%", minute));
    }
    for minute in 0..2 {
        items.push(item("EXP-3", "heart_rate", 90.0, "/min", minute));
    }
    post(address, "/api/v1/measurements", &Value::Array(items));

    // Asynchronous only.
    let sync = get(address, "/fhir/$export");
    assert_eq!(sync.status, 400, "{}", sync.body);
    assert_eq!(sync.json()["resourceType"], "OperationOutcome");

    // System level: everything, unassigned data included; the panel is one Observation.
    let (status, manifest) = export(address, "/fhir/$export");
    assert_eq!(manifest["requiresAccessToken"], true);
    assert!(manifest["transactionTime"].is_string());
    let all = files(address, &manifest);
    assert_eq!(ids(of_type(&all, "Patient")).len(), 2);
    assert_eq!(ids(of_type(&all, "Device")).len(), 3);
    // Vital signs; the engine's scores of these values come too (their own test is below).
    let observations = vital_ids(of_type(&all, "Observation"));
    assert_eq!(observations.len(), 5 + 1 + 3 + 2, "{observations:?}");
    assert!(observations.contains(&format!("{d1}.bp.{}", base + 2 * MINUTE)));
    assert!(observations.contains(&format!("{d3}.hr.{base}")));
    assert!(observations.contains(&format!("{d2}.spo2.{base}")));
    // Cancelling (deleting) a job removes it.
    let deleted = exchange(address, "DELETE", &status, &[], None, Some(TOKEN));
    assert_eq!(deleted.status, 202);
    assert_eq!(get(address, &status).status, 404);

    // Patient level, Observations only: no unassigned data.
    let (_, manifest) = export(address, "/fhir/Patient/$export?_type=Observation");
    let patients = files(address, &manifest);
    assert_eq!(patients.len(), 1, "only the Observation file");
    let observations = of_type(&patients, "Observation");
    assert_eq!(vital_ids(observations).len(), 9);
    assert!(
        observations
            .iter()
            .all(|observation| observation["subject"]["reference"].is_string())
    );

    // A ward's group, since minute 3.
    let since = micros_to_rfc3339(base + 3 * MINUTE).replace('+', "%2B");
    let (_, manifest) = export(address, &format!("/fhir/Group/ICU/$export?_since={since}"));
    let ward = files(address, &manifest);
    assert_eq!(
        ids(of_type(&ward, "Patient")),
        BTreeSet::from([icu.to_string()])
    );
    assert_eq!(
        ids(of_type(&ward, "Device")),
        BTreeSet::from([d1.to_string()])
    );
    assert_eq!(
        vital_ids(of_type(&ward, "Observation")),
        BTreeSet::from([
            format!("{d1}.hr.{}", base + 3 * MINUTE),
            format!("{d1}.hr.{}", base + 4 * MINUTE)
        ])
    );

    // Errors: an unknown ward, an unknown type, a bad _since.
    for (path, status) in [
        ("/fhir/Group/NOWHERE/$export", 404),
        ("/fhir/$export?_type=Encounter", 400),
        ("/fhir/$export?_since=yesterday", 400),
    ] {
        let answer = exchange(
            address,
            "GET",
            path,
            &[("Prefer", "respond-async")],
            None,
            Some(TOKEN),
        );
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert_eq!(answer.json()["resourceType"], "OperationOutcome");
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

/// A native API GET that must succeed.
fn native(address: &str, path: &str) -> Value {
    let (status, body) = request(address, "GET", path, None).expect("request");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("json")
}

/// Microseconds since the epoch of an RFC 3339 time Galen wrote.
fn micros(text: &Value) -> i64 {
    let time = time::OffsetDateTime::parse(
        text.as_str().expect("a time"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    (time.unix_timestamp_nanos() / 1000) as i64
}

/// `_since` as a query value.
fn since(micros: i64) -> String {
    micros_to_rfc3339(micros).replace('+', "%2B")
}

/// The FHIR ids of a patient's stored NEWS2 scores (one per instant) at or after `from`, from the
/// native API.
fn native_news2_ids(address: &str, patient: i64, from: i64) -> BTreeSet<String> {
    let answer = native(
        address,
        &format!("/api/v1/patients/{patient}/scores?table=news2"),
    );
    answer["scores"]
        .as_array()
        .expect("scores")
        .iter()
        .map(|score| micros(&score["time"]))
        .filter(|time| *time >= from)
        .map(|time| format!("score.news2.{patient}.{time}"))
        .collect()
}

/// The transitions of a patient's alarms in the native alarm log, in order.
fn native_log(address: &str, patient: i64) -> Vec<Value> {
    native(
        address,
        &format!("/api/v1/alarms/log?patient={patient}&limit=10000"),
    )["events"]
        .as_array()
        .expect("events")
        .clone()
}

/// Waits until the alarm log has a transition satisfying `test`.
fn wait_for_log(address: &str, patient: i64, test: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(event) = native_log(address, patient).into_iter().find(|e| test(e)) {
            return event;
        }
        assert!(Instant::now() < deadline, "the alarm log never had it");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The score Observations (ids `score.`) of an export's Observation files.
fn scores(files: &[(String, Vec<Value>)]) -> Vec<Value> {
    of_type(files, "Observation")
        .iter()
        .filter(|observation| {
            observation["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("score."))
        })
        .cloned()
        .collect()
}

#[test]
fn bulk_export_includes_scores_and_alarms() {
    let directory = tempfile::tempdir().expect("temp dir");
    let config = common::quiet_clinical_config(directory.path());
    let server = start_with_args(
        &directory.path().join("data"),
        &["--clinical-config", &config],
    );
    let address = server.address.as_str();

    // One patient on ICU with a monitor, one on CCU with nothing.
    let patient = |mrn: &str, ward: &str| {
        post(
            address,
            "/api/v1/patients",
            &json!({
                "identifier": { "system": "urn:mrn", "value": mrn },
                "name": { "family": "Clinical", "given": mrn },
                "birth_date": "1950-01-01", "sex": "other", "ward": ward, "bed": "1"
            }),
        )["id"]
            .as_i64()
            .expect("patient id")
    };
    let sick = patient("C-1", "ICU");
    patient("C-2", "CCU");
    let device = post(
        address,
        "/api/v1/devices",
        &json!({ "serial": "EXP-NEWS2", "kind": "monitor" }),
    )["id"]
        .as_i64()
        .expect("device id");
    let start_time = now_micros() - 600 * SECOND;
    post(
        address,
        "/api/v1/assignments",
        &json!({ "device": device, "patient": sick, "start": micros_to_rfc3339(start_time) }),
    );

    // Ten rounds 10 s apart that score NEWS2 8 (RCP NEWS2 2017, chart 1: RR 24, SpO2 93, SBP 105,
    // pulse 115, temperature 38.4), old enough for the NEWS2 trigger's delay: an alarm.
    let base = now_micros() - 100 * SECOND;
    let mut items = Vec::new();
    for round in 0..10 {
        let time = micros_to_rfc3339(base + round * 10 * SECOND);
        for (code, value, unit) in [
            ("respiratory_rate", 24.0, "/min"),
            ("spo2", 93.0, "%"),
            ("systolic_bp", 105.0, "mmHg"),
            ("diastolic_bp", 70.0, "mmHg"),
            ("heart_rate", 115.0, "/min"),
            ("temperature", 38.4, "Cel"),
        ] {
            items.push(json!({ "device": "EXP-NEWS2", "code": code, "value": value, "unit": unit, "time": time }));
        }
    }
    let answer = post(address, "/api/v1/measurements", &Value::Array(items));
    assert_eq!(answer["accepted"], 60, "{answer}");
    let raised = wait_for_log(address, sick, |event| {
        event["rule"] == "score.news2" && event["transition"] == "raised"
    });
    let alarm = raised["alarm"].as_str().expect("alarm id").to_owned();

    // Patient level: the vital signs, every stored NEWS2 (one per instant) and the alarm.
    let (_, manifest) = export(address, "/fhir/Patient/$export");
    let kinds: Vec<&str> = manifest["output"]
        .as_array()
        .expect("output")
        .iter()
        .filter_map(|output| output["type"].as_str())
        .collect();
    assert_eq!(kinds, ["Patient", "Device", "Observation", "Flag"]);
    let all = files(address, &manifest);
    let exported = scores(&all);
    assert!(!exported.is_empty(), "scores are exported");
    for score in &exported {
        assert_eq!(score["category"][0]["coding"][0]["code"], "survey");
        assert_eq!(score["subject"]["reference"], format!("Patient/{sick}"));
    }
    let news2: BTreeSet<String> = ids(&exported)
        .into_iter()
        .filter(|id| id.starts_with("score.news2."))
        .collect();
    assert_eq!(news2, native_news2_ids(address, sick, i64::MIN));
    assert_eq!(
        of_type(&all, "Observation").len() - exported.len(),
        10 * 5,
        "the vital signs too (SBP and DBP as one panel)"
    );
    let flags = of_type(&all, "Flag");
    assert_eq!(ids(flags), BTreeSet::from([alarm.clone()]));
    assert_eq!(flags[0]["status"], "active");
    assert_eq!(flags[0]["subject"]["reference"], format!("Patient/{sick}"));

    // A score read over the REST API is the exported one.
    let latest = news2
        .iter()
        .max_by_key(|id| id.rsplit('.').next().and_then(|t| t.parse::<i64>().ok()))
        .expect("a score");
    let read = get(address, &format!("/fhir/Observation/{latest}"));
    assert_eq!(read.status, 200, "{}", read.body);
    // The read carries meta.versionId (a hash of the content); the export line does not.
    let mut read = read.json();
    if let Some(meta) = read["meta"].as_object_mut() {
        meta.remove("versionId");
    }
    if read["meta"].as_object().is_some_and(|meta| meta.is_empty())
        && let Some(object) = read.as_object_mut()
    {
        object.remove("meta");
    }
    let exported_latest = exported
        .iter()
        .find(|score| score["id"] == latest.as_str())
        .expect("exported");
    assert_eq!(&read, exported_latest);

    // _type=Flag: the Flag file only.
    let (_, manifest) = export(address, "/fhir/$export?_type=Flag");
    let flagged = files(address, &manifest);
    assert_eq!(flagged.len(), 1, "only the Flag file");
    assert_eq!(
        ids(of_type(&flagged, "Flag")),
        BTreeSet::from([alarm.clone()])
    );

    // _since on scores: their effective time; older ones are left out.
    let middle = base + 45 * SECOND;
    let (_, manifest) = export(
        address,
        &format!(
            "/fhir/Group/ICU/$export?_type=Observation&_since={}",
            since(middle)
        ),
    );
    let recent = files(address, &manifest);
    let recent_scores = scores(&recent);
    assert!(
        recent_scores
            .iter()
            .all(|score| micros(&score["effectiveDateTime"]) >= middle)
    );
    let recent_news2: BTreeSet<String> = ids(&recent_scores)
        .into_iter()
        .filter(|id| id.starts_with("score.news2."))
        .collect();
    assert_eq!(recent_news2, native_news2_ids(address, sick, middle));
    assert!(
        recent_news2.len() < news2.len(),
        "older scores are left out"
    );

    // _since on Flags: the time of their last change (meta.lastUpdated).
    let changed = native_log(address, sick)
        .iter()
        .filter(|event| event["alarm"] == alarm.as_str())
        .map(|event| micros(&event["time"]))
        .max()
        .expect("transitions");
    let flag_ids = |since_micros: i64| {
        let (_, manifest) = export(
            address,
            &format!(
                "/fhir/Patient/$export?_type=Flag&_since={}",
                since(since_micros)
            ),
        );
        ids(of_type(&files(address, &manifest), "Flag"))
    };
    assert_eq!(flag_ids(changed), BTreeSet::from([alarm.clone()]));
    assert!(
        flag_ids(changed + 1).is_empty(),
        "unchanged since: left out"
    );
    // Acknowledging changes the alarm: exported again, acknowledged, its raise unchanged.
    post(
        address,
        &format!("/api/v1/alarms/{alarm}/acknowledge"),
        &json!({ "by": "nurse.jones", "reason": "at the bedside" }),
    );
    wait_for_log(address, sick, |event| {
        event["alarm"] == alarm.as_str() && event["transition"] == "acknowledged"
    });
    let (_, manifest) = export(
        address,
        &format!(
            "/fhir/Patient/$export?_type=Flag&_since={}",
            since(changed + 1)
        ),
    );
    let acknowledged = files(address, &manifest);
    let flags = of_type(&acknowledged, "Flag");
    assert_eq!(ids(flags), BTreeSet::from([alarm.clone()]));
    assert!(
        flags[0].to_string().contains("\"acknowledged\""),
        "{}",
        flags[0]
    );
    assert_eq!(flags[0]["period"]["start"], raised["raised_at"]);

    // Another ward's group has neither scores nor alarms of this patient.
    let (_, manifest) = export(address, "/fhir/Group/CCU/$export?_type=Observation,Flag");
    let elsewhere = files(address, &manifest);
    assert!(of_type(&elsewhere, "Observation").is_empty());
    assert!(of_type(&elsewhere, "Flag").is_empty());
}
