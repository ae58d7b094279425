//! A real FHIR client searches and reads through Galen's FHIR API: SMART on FHIR's Python
//! `fhirclient` (4.4.0), run as `tests/interop/fhir_client.py` against the real binary. The test
//! registers a patient, a device and an assignment, posts a known set of Observations, lets the
//! client read the CapabilityStatement, the Patient and the Device, search by identifier, page
//! through a heart rate search and a newest-first search with its own `next`-link paging, read an
//! Observation by the id the search gave and meet a 404 as its own exception; then it compares
//! the ids and order the client found with what it posted, computed here independently. Without
//! the package the test fails and says how to install it.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Answer, TOKEN, exchange, micros_to_rfc3339, post, start};
use serde_json::{Value, json};

const FHIR_JSON: &str = "application/fhir+json";
const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
const INSTALL: &str = "scripts/test (or pip install -r tests/interop/requirements.txt)";
const MRN_SYSTEM: &str = "urn:oid:1.2.36.146.595.217.0.1";
const MRN: &str = "CLIENT-42";
const SERIAL: &str = "FHIR-CLIENT-MON-1";
const MINUTE: i64 = 60_000_000;
/// `_count` of the client's heart rate search and of its newest-first search.
const RANGE_COUNT: usize = 2;
const NEWEST_COUNT: usize = 4;

fn fhir(address: &str, method: &str, path: &str, body: &Value) -> Answer {
    exchange(
        address,
        method,
        path,
        &[("Accept", FHIR_JSON), ("Content-Type", FHIR_JSON)],
        Some(&body.to_string()),
        Some(TOKEN),
    )
}

/// POSTs a resource and returns its id.
fn create(address: &str, path: &str, body: &Value) -> String {
    let answer = fhir(address, "POST", path, body);
    assert_eq!(answer.status, 201, "{path}: {}", answer.body);
    answer.json()["id"].as_str().expect("an id").to_owned()
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

fn patient_resource(mrn: &str, family: &str, bed: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{ "system": MRN_SYSTEM, "value": mrn }],
        "name": [{ "family": family, "given": ["Grace"] }],
        "gender": "female",
        "birthDate": "1956-12-09",
        "extension": [{
            "url": "https://galen.invalid/fhir/StructureDefinition/bed-location",
            "extension": [
                { "url": "ward", "valueString": "CCU" },
                { "url": "bed", "valueString": bed }
            ]
        }]
    })
}

fn device_resource(serial: &str) -> Value {
    json!({
        "resourceType": "Device",
        "serialNumber": serial,
        "manufacturer": "Acme",
        "modelNumber": "M2",
        "status": "active"
    })
}

/// Assigns `device` to `patient` from `start` on, through Galen's own API.
fn assign(address: &str, device: &str, patient: &str, start: i64) {
    post(
        address,
        "/api/v1/assignments",
        &json!({
            "device": device.parse::<i64>().expect("numeric device id"),
            "patient": patient.parse::<i64>().expect("numeric patient id"),
            "start": micros_to_rfc3339(start)
        }),
    );
}

/// A vital-signs Observation of `device` for `patient` with one LOINC-coded value.
fn vital(patient: &str, device: &str, time: i64, loinc: &str, value: Value) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs" }] }],
        "code": { "coding": [{ "system": LOINC, "code": loinc }] },
        "subject": { "reference": format!("Patient/{patient}") },
        "device": { "reference": format!("Device/{device}") },
        "effectiveDateTime": micros_to_rfc3339(time),
        "valueQuantity": value
    })
}

fn blood_pressure(patient: &str, device: &str, time: i64) -> Value {
    let component = |loinc: &str, value: i64| {
        json!({
            "code": { "coding": [{ "system": LOINC, "code": loinc }] },
            "valueQuantity": { "value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]" }
        })
    };
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": { "coding": [{ "system": LOINC, "code": "85354-9" }] },
        "subject": { "reference": format!("Patient/{patient}") },
        "device": { "reference": format!("Device/{device}") },
        "effectiveDateTime": micros_to_rfc3339(time),
        "component": [component("8480-6", 118), component("8462-4", 76)]
    })
}

/// The logical id Galen gives the Observation of `device`'s `token` series at `micros`
/// (`{device}.{token}.{micros}`, see `galen_fhir::observation`).
fn observation_id(device: &str, token: &str, micros: i64) -> String {
    format!("{device}.{token}.{micros}")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|item| item.as_str().expect("a string").to_owned())
        .collect()
}

/// Page sizes of `total` results in pages of `count`.
fn page_sizes(total: usize, count: usize) -> Vec<usize> {
    (0..total)
        .step_by(count)
        .map(|start| count.min(total - start))
        .collect()
}

/// Runs the client; its JSON report.
fn run_client(args: &[String]) -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var("GALEN_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = Command::new(&python)
        .arg(root.join("tests/interop/fhir_client.py"))
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {python} ({error}); run {INSTALL}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_ne!(
        output.status.code(),
        Some(3),
        "the FHIR client test needs the Python package fhirclient 4.4.0 in {python}: run {INSTALL}\n{stderr}"
    );
    assert!(
        !stdout.contains(TOKEN) && !stderr.contains(TOKEN),
        "the client printed the API token"
    );
    let report: Value = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "no JSON report from the client ({}):\n{stdout}\n{stderr}",
                output.status
            )
        });
    assert!(
        output.status.success() && report["failures"].as_array().is_some_and(Vec::is_empty),
        "the FHIR client found problems ({}):\n{report:#}\n{stderr}",
        output.status
    );
    report
}

#[test]
fn a_real_fhir_client_searches_and_reads() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = start(directory.path());
    let address = server.address.as_str();

    // The registry over FHIR, the assignments over Galen's API: the patient under test and another
    // one, each with a monitor (registered so that no patient shares its id with its device).
    let patient = create(
        address,
        "/fhir/Patient",
        &patient_resource(MRN, "Hopper", "7"),
    );
    let other_patient = create(
        address,
        "/fhir/Patient",
        &patient_resource("OTHER-7", "Noether", "8"),
    );
    let other_device = create(
        address,
        "/fhir/Device",
        &device_resource("FHIR-CLIENT-MON-0"),
    );
    let device = create(address, "/fhir/Device", &device_resource(SERIAL));
    assert_ne!(patient, device, "distinct ids keep the checks unambiguous");
    let assigned = now_micros() - 3_600 * 1_000_000;
    assign(address, &device, &patient, assigned);
    assign(address, &other_device, &other_patient, assigned);

    // Seven heart rates a minute apart, a blood pressure panel and an SpO2 in between.
    let base = (assigned / MINUTE + 5) * MINUTE;
    let heart_rates: Vec<(i64, f64)> = (0..7)
        .map(|minute| (base + minute * MINUTE, 60.0 + minute as f64))
        .collect();
    let mut held: Vec<(i64, String)> = Vec::new();
    for (time, value) in &heart_rates {
        let body = vital(
            &patient,
            &device,
            *time,
            "8867-4",
            json!({ "value": value, "unit": "beats/minute", "system": UCUM, "code": "/min" }),
        );
        let id = create(address, "/fhir/Observation", &body);
        let expected = observation_id(&device, "hr", *time);
        assert_eq!(id, expected);
        held.push((*time, expected));
    }
    // The other patient's heart rate at the same instant as one in the range: never found.
    let body = vital(
        &other_patient,
        &other_device,
        base + 2 * MINUTE,
        "8867-4",
        json!({ "value": 99, "unit": "beats/minute", "system": UCUM, "code": "/min" }),
    );
    create(address, "/fhir/Observation", &body);
    let panel_time = base + MINUTE / 2;
    let id = create(
        address,
        "/fhir/Observation",
        &blood_pressure(&patient, &device, panel_time),
    );
    assert_eq!(id, observation_id(&device, "bp", panel_time));
    held.push((panel_time, id));
    let spo2_time = base + MINUTE + MINUTE / 2;
    let body = vital(
        &patient,
        &device,
        spo2_time,
        "2708-6",
        json!({ "value": 97, "unit": "%", "system": UCUM, "code": "%" }),
    );
    let id = create(address, "/fhir/Observation", &body);
    assert_eq!(id, observation_id(&device, "spo2", spo2_time));
    held.push((spo2_time, id));

    // What the client must find: the heart rates of minutes 1 to 5 (the range is [1, 6) minutes
    // after the first), oldest first; and everything of the patient, newest first.
    let range_from = base + MINUTE;
    let range_to = base + 6 * MINUTE;
    let in_range: Vec<(i64, f64)> = heart_rates
        .iter()
        .copied()
        .filter(|(time, _)| (range_from..range_to).contains(time))
        .collect();
    let range_ids: Vec<String> = in_range
        .iter()
        .map(|(time, _)| observation_id(&device, "hr", *time))
        .collect();
    let range_values: Vec<f64> = in_range.iter().map(|(_, value)| *value).collect();
    held.sort();
    let newest_ids: Vec<String> = held.iter().rev().map(|(_, id)| id.clone()).collect();
    let missing_observation = observation_id(&device, "hr", base + 1);
    let missing_patient = (patient.parse::<i64>().expect("id") + 1000).to_string();

    let report = run_client(&[
        "--base".to_owned(),
        format!("http://{address}/fhir"),
        "--token".to_owned(),
        TOKEN.to_owned(),
        "--patient".to_owned(),
        patient.clone(),
        "--device".to_owned(),
        device.clone(),
        "--serial".to_owned(),
        SERIAL.to_owned(),
        "--identifier".to_owned(),
        format!("{MRN_SYSTEM}|{MRN}"),
        "--date-from".to_owned(),
        micros_to_rfc3339(range_from),
        "--date-to".to_owned(),
        micros_to_rfc3339(range_to),
        "--count".to_owned(),
        RANGE_COUNT.to_string(),
        "--count-newest".to_owned(),
        NEWEST_COUNT.to_string(),
        "--missing-observation".to_owned(),
        missing_observation.clone(),
        "--missing-patient".to_owned(),
        missing_patient.clone(),
    ]);

    assert_eq!(report["passed"], 8, "{report:#}");
    assert_eq!(report["capability"]["fhirVersion"], "4.0.1");
    assert_eq!(
        strings(&report["capability"]["resources"]),
        [
            "AuditEvent",
            "Consent",
            "Device",
            "DeviceMetric",
            "Flag",
            "Group",
            "Location",
            "Observation",
            "Patient",
            "Subscription"
        ],
        "Group carries only the bulk export operation"
    );
    assert_eq!(
        report["unauthorized"]["exception"],
        "FHIRUnauthorizedException"
    );
    assert_eq!(report["patient"]["id"], patient.as_str());
    assert_eq!(report["patient"]["family"], "Hopper");
    assert_eq!(
        strings(&report["patient"]["identifiers"]),
        [format!("{MRN_SYSTEM}|{MRN}")]
    );
    assert_eq!(report["device"]["id"], device.as_str());
    assert_eq!(report["device"]["serial"], SERIAL);
    assert_eq!(report["device"]["patient"], patient.as_str());
    assert_eq!(strings(&report["identifier_search"]), [patient.as_str()]);

    // The heart rate search, through every page the client followed.
    assert_eq!(strings(&report["range"]["ids"]), range_ids, "{report:#}");
    let values: Vec<f64> = report["range"]["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|value| value.as_f64().expect("a number"))
        .collect();
    assert_eq!(values, range_values);
    assert_eq!(
        report["range"]["page_sizes"],
        json!(page_sizes(range_ids.len(), RANGE_COUNT))
    );
    // Newest first, everything of the patient: seven heart rates, the panel and the SpO2.
    assert_eq!(newest_ids.len(), 9);
    assert_eq!(
        strings(&report["newest_first"]["ids"]),
        newest_ids,
        "{report:#}"
    );
    assert_eq!(
        report["newest_first"]["page_sizes"],
        json!(page_sizes(newest_ids.len(), NEWEST_COUNT))
    );
    // The Observation read by the id the search gave.
    assert_eq!(report["read"]["id"], range_ids[1].as_str());
    assert_eq!(report["read"]["value"].as_f64(), Some(range_values[1]));
    assert_eq!(report["read"]["unit"], "/min");
    // 404s as the client's own exception.
    assert_eq!(
        report["not_found"],
        json!({
            format!("Observation/{missing_observation}"): "FHIRNotFoundException",
            format!("Patient/{missing_patient}"): "FHIRNotFoundException",
        })
    );
}
