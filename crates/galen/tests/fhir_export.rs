//! FHIR Bulk Data `$export` end to end against the real binary: asynchronous kick-off, status
//! polling, the manifest, NDJSON files fetched with the token and validated by the independent
//! R4 validator, the system / Patient / Group levels, `_type`, `_since`, cancellation and errors.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Answer, TOKEN, exchange, micros_to_rfc3339, post, start};
use serde_json::{Value, json};

const MINUTE: i64 = 60_000_000;

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
    let observations = ids(of_type(&all, "Observation"));
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
    assert_eq!(observations.len(), 9);
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
        ids(of_type(&ward, "Observation")),
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
