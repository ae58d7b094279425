//! The FHIR R4 API end to end against the real binary: registry resources created and updated
//! over FHIR (conditional create, `If-Match`), Observations posted through the ingest pipeline and
//! read back by id and by search (patient, code, date prefixes, paging by `next` links, `_sort`),
//! errors as OperationOutcomes with the failing element's path. Every resource Galen returns here
//! is then validated by an independent R4 validator (`tests/interop/fhir_validate.py`, Python
//! `fhir.resources` 6.4.0); without it the test fails and says how to install it.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Answer, TOKEN, exchange, micros_to_rfc3339, post, start};
use serde_json::{Value, json};

const FHIR_JSON: &str = "application/fhir+json";
const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";

/// Every resource Galen answered with, for the independent validator.
#[derive(Default)]
struct Served(Vec<String>);

impl Served {
    fn keep(&mut self, answer: &Answer) -> Value {
        let value = answer.json();
        if value.get("resourceType").is_some() {
            self.0.push(value.to_string());
        }
        value
    }
}

fn fhir(address: &str, method: &str, path: &str, body: Option<&Value>) -> Answer {
    let body = body.map(Value::to_string);
    exchange(
        address,
        method,
        path,
        &[("Accept", FHIR_JSON), ("Content-Type", FHIR_JSON)],
        body.as_deref(),
        Some(TOKEN),
    )
}

fn fhir_with(
    address: &str,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &Value,
) -> Answer {
    let mut headers = vec![("Accept", FHIR_JSON), ("Content-Type", FHIR_JSON)];
    headers.extend_from_slice(extra);
    exchange(
        address,
        method,
        path,
        &headers,
        Some(&body.to_string()),
        Some(TOKEN),
    )
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

fn patient_resource(mrn: &str, family: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{
            "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR" }] },
            "system": "urn:oid:1.2.36.146.595.217.0.1",
            "value": mrn
        }],
        "name": [{ "family": family, "given": ["Ada"] }],
        "gender": "female",
        "birthDate": "1961-04-12",
        "extension": [{
            "url": "https://galen.invalid/fhir/StructureDefinition/bed-location",
            "extension": [
                { "url": "ward", "valueString": "ICU" },
                { "url": "bed", "valueString": "4" }
            ]
        }]
    })
}

fn heart_rate(device: i64, patient: i64, value: f64, time: i64) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs" }] }],
        "code": { "coding": [{ "system": LOINC, "code": "8867-4" }] },
        "subject": { "reference": format!("Patient/{patient}") },
        "device": { "reference": format!("Device/{device}") },
        "effectiveDateTime": micros_to_rfc3339(time),
        "valueQuantity": { "value": value, "unit": "beats/minute", "system": UCUM, "code": "/min" }
    })
}

fn issue_expressions(outcome: &Value) -> Vec<String> {
    outcome["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|issue| issue["expression"].as_array().cloned().unwrap_or_default())
        .filter_map(|expression| expression.as_str().map(str::to_owned))
        .collect()
}

fn entries(bundle: &Value) -> Vec<Value> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| entry["resource"].clone())
        .collect()
}

/// The path and query of a Bundle's `next` link.
fn next_link(bundle: &Value) -> Option<String> {
    let link = bundle["link"]
        .as_array()?
        .iter()
        .find(|link| link["relation"] == "next")?["url"]
        .as_str()?
        .to_owned();
    let start = link.find("/fhir/")?;
    Some(link[start..].to_owned())
}

fn validate(served: &Served) {
    common::validate_fhir(&served.0);
}

#[test]
fn fhir_api_end_to_end_with_an_independent_validator() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = start(directory.path());
    let address = server.address.as_str();
    let mut served = Served::default();

    // The CapabilityStatement is public; everything else needs the token.
    let metadata = exchange(address, "GET", "/fhir/metadata", &[], None, None);
    assert_eq!(metadata.status, 200, "{}", metadata.body);
    assert!(
        metadata
            .header("content-type")
            .is_some_and(|value| value.starts_with(FHIR_JSON))
    );
    let statement = served.keep(&metadata);
    assert_eq!(statement["fhirVersion"], "4.0.1");
    let types: Vec<&str> = statement["rest"][0]["resource"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|resource| resource["type"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "Patient",
            "Device",
            "Observation",
            "Flag",
            "Location",
            "DeviceMetric",
            "AuditEvent",
            "Consent",
            "Subscription",
            "Group"
        ]
    );
    assert_eq!(
        statement["rest"][0]["operation"][0]["name"], "export",
        "bulk export is declared"
    );
    assert_eq!(
        statement["rest"][0]["interaction"],
        json!([{ "code": "batch" }, { "code": "transaction" }])
    );
    let anonymous = exchange(address, "GET", "/fhir/Patient", &[], None, None);
    assert_eq!(anonymous.status, 401);

    // Patient: create, conditional create, read with ETag, update guarded by If-Match.
    let created = fhir(
        address,
        "POST",
        "/fhir/Patient",
        Some(&patient_resource("MRN-77", "Lovelace")),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let patient = served.keep(&created);
    let patient_id: i64 = patient["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("numeric id");
    assert!(
        created
            .header("location")
            .is_some_and(|location| location.ends_with(&format!("/fhir/Patient/{patient_id}")))
    );
    let etag = created.header("etag").expect("ETag").to_owned();
    assert!(etag.starts_with("W/\""), "{etag}");
    let again = fhir_with(
        address,
        "POST",
        "/fhir/Patient",
        &[(
            "If-None-Exist",
            "identifier=urn:oid:1.2.36.146.595.217.0.1|MRN-77",
        )],
        &patient_resource("MRN-77", "Lovelace"),
    );
    assert_eq!(
        again.status, 200,
        "conditional create finds it: {}",
        again.body
    );
    assert_eq!(served.keep(&again)["id"], patient["id"]);
    let stale = fhir_with(
        address,
        "PUT",
        &format!("/fhir/Patient/{patient_id}"),
        &[("If-Match", "W/\"0000000000000000\"")],
        &patient_resource("MRN-77", "King"),
    );
    assert_eq!(stale.status, 412, "{}", stale.body);
    served.keep(&stale);
    let updated = fhir_with(
        address,
        "PUT",
        &format!("/fhir/Patient/{patient_id}"),
        &[("If-Match", &etag)],
        &patient_resource("MRN-77", "King"),
    );
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(served.keep(&updated)["name"][0]["family"], "King");
    assert_ne!(updated.header("etag"), Some(etag.as_str()), "a new version");
    let read = fhir(address, "GET", &format!("/fhir/Patient/{patient_id}"), None);
    assert_eq!(read.status, 200);
    assert_eq!(read.header("etag"), updated.header("etag"));
    served.keep(&read);
    let invalid = fhir(
        address,
        "POST",
        "/fhir/Patient",
        Some(&json!({ "resourceType": "Patient", "name": [{ "family": "X" }] })),
    );
    assert_eq!(invalid.status, 422, "{}", invalid.body);
    let outcome = served.keep(&invalid);
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(issue_expressions(&outcome), ["Patient.identifier"]);

    // Device, then an assignment through Galen's own API.
    let device = fhir(
        address,
        "POST",
        "/fhir/Device",
        Some(&json!({
            "resourceType": "Device",
            "serialNumber": "FHIR-MON-1",
            "manufacturer": "Acme",
            "modelNumber": "M1",
            "status": "active"
        })),
    );
    assert_eq!(device.status, 201, "{}", device.body);
    let device_id: i64 = served.keep(&device)["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("device id");
    let start_time = now_micros() - 3_600_000_000;
    post(
        address,
        "/api/v1/assignments",
        &json!({ "device": device_id, "patient": patient_id, "start": micros_to_rfc3339(start_time) }),
    );
    let device = fhir(address, "GET", &format!("/fhir/Device/{device_id}"), None);
    assert_eq!(
        served.keep(&device)["patient"]["reference"],
        format!("Patient/{patient_id}")
    );

    // Observations through the pipeline: five heart rates a minute apart and one BP panel.
    let base = (start_time / 60_000_000 + 5) * 60_000_000;
    let mut heart_rate_ids = Vec::new();
    for minute in 0..5 {
        let posted = fhir(
            address,
            "POST",
            "/fhir/Observation",
            Some(&heart_rate(
                device_id,
                patient_id,
                70.0 + minute as f64,
                base + minute * 60_000_000,
            )),
        );
        assert_eq!(posted.status, 201, "{}", posted.body);
        let observation = served.keep(&posted);
        heart_rate_ids.push(observation["id"].as_str().expect("id").to_owned());
    }
    // A retry of the same measurement is recognised: 200 with the stored Observation.
    let retry = fhir(
        address,
        "POST",
        "/fhir/Observation",
        Some(&heart_rate(device_id, patient_id, 70.0, base)),
    );
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(served.keep(&retry)["id"], heart_rate_ids[0].as_str());
    let panel = fhir(
        address,
        "POST",
        "/fhir/Observation",
        Some(&json!({
            "resourceType": "Observation",
            "status": "final",
            "code": { "coding": [{ "system": LOINC, "code": "85354-9" }] },
            "subject": { "reference": format!("Patient/{patient_id}") },
            "device": { "reference": format!("Device/{device_id}") },
            "effectiveDateTime": micros_to_rfc3339(base + 30_000_000),
            "component": [
                { "code": { "coding": [{ "system": LOINC, "code": "8480-6" }] },
                  "valueQuantity": { "value": 121, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]" } },
                { "code": { "coding": [{ "system": LOINC, "code": "8462-4" }] },
                  "valueQuantity": { "value": 79, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]" } }
            ]
        })),
    );
    assert_eq!(panel.status, 201, "{}", panel.body);
    let panel = served.keep(&panel);
    let panel_id = panel["id"].as_str().expect("panel id").to_owned();
    assert!(panel_id.contains(".bp."), "{panel_id}");
    assert_eq!(panel["component"].as_array().map(Vec::len), Some(2));

    // Refused: SpO2 in mmHg, with the element's path; kept as a dead letter from `fhir`.
    let mut wrong = heart_rate(device_id, patient_id, 97.0, base + 10_000_000);
    wrong["code"] = json!({ "coding": [{ "system": LOINC, "code": "2708-6" }] });
    wrong["valueQuantity"] =
        json!({ "value": 97, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]" });
    let refused = fhir(address, "POST", "/fhir/Observation", Some(&wrong));
    assert_eq!(refused.status, 422, "{}", refused.body);
    let outcome = served.keep(&refused);
    assert!(
        issue_expressions(&outcome)
            .iter()
            .any(|path| path.starts_with("Observation.valueQuantity")),
        "{outcome}"
    );
    let letters = fhir(address, "GET", "/api/v1/dead-letters", None).json();
    assert!(
        letters["items"]
            .as_array()
            .expect("dead letters")
            .iter()
            .any(|letter| letter["source"] == "fhir"),
        "{letters}"
    );

    // Read by id.
    let read = fhir(
        address,
        "GET",
        &format!("/fhir/Observation/{}", heart_rate_ids[2]),
        None,
    );
    assert_eq!(read.status, 200, "{}", read.body);
    let observation = served.keep(&read);
    assert_eq!(observation["valueQuantity"]["value"], 72.0);
    assert_eq!(
        observation["subject"]["reference"],
        format!("Patient/{patient_id}")
    );
    let missing = fhir(address, "GET", "/fhir/Observation/not-an-id", None);
    assert_eq!(missing.status, 404);
    served.keep(&missing);

    // Search: patient + code + date range, two a page, following next links.
    let from = micros_to_rfc3339(base + 60_000_000);
    let mut path = format!(
        "/fhir/Observation?patient={patient_id}&code={LOINC}|8867-4&date=ge{from}&_count=2"
    )
    .replace('+', "%2B");
    let mut found = Vec::new();
    let mut pages = 0;
    loop {
        let answer = fhir(address, "GET", &path, None);
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        let bundle = served.keep(&answer);
        assert_eq!(bundle["type"], "searchset");
        found.extend(
            entries(&bundle)
                .iter()
                .filter_map(|resource| resource["id"].as_str().map(str::to_owned)),
        );
        pages += 1;
        match next_link(&bundle) {
            Some(next) => path = next,
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(found, heart_rate_ids[1..].to_vec(), "in time order");
    assert_eq!(pages, 2);
    // Newest first, everything of the patient: the panel is among them, once.
    let answer = fhir(
        address,
        "GET",
        &format!("/fhir/Observation?subject=Patient/{patient_id}&_sort=-date"),
        None,
    );
    let bundle = served.keep(&answer);
    let ids: Vec<String> = entries(&bundle)
        .iter()
        .filter_map(|resource| resource["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(bundle["total"], 6, "{bundle}");
    assert_eq!(ids.first(), Some(&heart_rate_ids[4]));
    assert_eq!(ids.iter().filter(|id| **id == panel_id).count(), 1);
    // The panel by its code; a date before any data finds nothing.
    let answer = fhir(
        address,
        "GET",
        &format!("/fhir/Observation?patient={patient_id}&code=85354-9"),
        None,
    );
    let bundle = served.keep(&answer);
    assert_eq!(
        entries(&bundle)
            .iter()
            .map(|resource| resource["id"].clone())
            .collect::<Vec<_>>(),
        vec![json!(panel_id)]
    );
    let answer = fhir(
        address,
        "GET",
        &format!("/fhir/Observation?patient={patient_id}&date=lt2001-01-01"),
        None,
    );
    assert_eq!(served.keep(&answer)["total"], 0);

    // Search errors are OperationOutcomes naming the parameter.
    for (path, status) in [
        ("/fhir/Observation?colour=blue", 400),
        ("/fhir/Observation?date=yesterday", 400),
        ("/fhir/Patient?birthdate=gt1961-13-01", 400),
        ("/fhir/Encounter", 404),
    ] {
        let answer = fhir(address, "GET", path, None);
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert_eq!(served.keep(&answer)["resourceType"], "OperationOutcome");
    }
    let xml = exchange(
        address,
        "GET",
        "/fhir/Patient",
        &[("Accept", "application/fhir+xml")],
        None,
        Some(TOKEN),
    );
    assert_eq!(xml.status, 406);

    // Patient and Device search.
    let answer = fhir(
        address,
        "GET",
        "/fhir/Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|MRN-77",
        None,
    );
    let bundle = served.keep(&answer);
    assert_eq!(bundle["total"], 1);
    let answer = fhir(
        address,
        "GET",
        &format!("/fhir/Device?patient={patient_id}"),
        None,
    );
    let bundle = served.keep(&answer);
    assert_eq!(
        entries(&bundle)[0]["id"],
        json!(device_id.to_string()),
        "{bundle}"
    );

    // A batch: each entry carried out on its own, answered in order.
    let batch = json!({
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            { "request": { "method": "POST", "url": "Patient" }, "resource": patient_resource("MRN-88", "Hopper") },
            { "request": { "method": "GET", "url": format!("Patient/{patient_id}") } },
            { "request": { "method": "GET", "url": format!("Observation?patient={patient_id}&code=85354-9") } },
            { "request": { "method": "POST", "url": "Observation" }, "resource": wrong },
            { "request": { "method": "PATCH", "url": format!("Patient/{patient_id}") } },
            { "request": { "method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:oid:1.2.36.146.595.217.0.1|MRN-77" },
              "resource": patient_resource("MRN-77", "King") }
        ]
    });
    let answer = fhir(address, "POST", "/fhir", Some(&batch));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let response = served.keep(&answer);
    assert_eq!(response["type"], "batch-response");
    let statuses: Vec<&str> = response["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| entry["response"]["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        statuses,
        [
            "201 Created",
            "200 OK",
            "200 OK",
            "422 Unprocessable Entity",
            "422 Unprocessable Entity",
            "200 OK"
        ],
        "{response}"
    );
    let entries_out = response["entry"].as_array().expect("entries");
    assert!(
        entries_out[0]["response"]["location"]
            .as_str()
            .is_some_and(|location| location.contains("/fhir/Patient/"))
    );
    assert_eq!(entries_out[1]["resource"]["id"], patient_id.to_string());
    assert_eq!(entries_out[2]["resource"]["total"], 1);
    assert!(
        issue_expressions(&entries_out[3]["response"]["outcome"])
            .iter()
            .any(|path| path.starts_with("Observation.valueQuantity")),
        "{}",
        entries_out[3]
    );
    assert_eq!(
        entries_out[5]["resource"]["id"],
        patient_id.to_string(),
        "conditional create found it"
    );

    transactions(address, patient_id, device_id, base, &wrong, &mut served);
    validate(&served);
}

fn statuses(response: &Value) -> Vec<String> {
    response["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            entry["response"]["status"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

fn patient_count(address: &str, mrn: &str) -> u64 {
    let path = format!("/fhir/Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|{mrn}");
    fhir(address, "GET", &path, None).json()["total"]
        .as_u64()
        .expect("a total")
}

/// Transactions: all or nothing, registry writes in one commit, Observations in another.
fn transactions(
    address: &str,
    patient_id: i64,
    device_id: i64,
    base: i64,
    wrong: &Value,
    served: &mut Served,
) {
    let current = fhir(address, "GET", &format!("/fhir/Patient/{patient_id}"), None);
    let etag = current.header("etag").expect("an ETag").to_owned();
    let mut renamed = current.json();
    renamed["name"][0]["given"] = json!(["Ada", "Augusta"]);
    let transaction = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            { "fullUrl": "urn:uuid:5f1c8f0e-0d7a-4c39-9d55-1c1b1d1e0a01",
              "request": { "method": "POST", "url": "Patient" }, "resource": patient_resource("MRN-90", "Lovelace") },
            { "request": { "method": "GET", "url": "Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|MRN-90" } },
            { "request": { "method": "POST", "url": "Device" },
              "resource": { "resourceType": "Device", "serialNumber": "SN-TX-1", "manufacturer": "Acme" } },
            { "request": { "method": "PUT", "url": format!("Patient/{patient_id}"), "ifMatch": etag },
              "resource": renamed },
            { "request": { "method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:oid:1.2.36.146.595.217.0.1|MRN-77" },
              "resource": patient_resource("MRN-77", "King") }
        ]
    });
    let answer = fhir(address, "POST", "/fhir", Some(&transaction));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let response = served.keep(&answer);
    assert_eq!(response["type"], "transaction-response");
    assert_eq!(
        statuses(&response),
        ["201 Created", "200 OK", "201 Created", "200 OK", "200 OK"],
        "{response}"
    );
    assert_eq!(
        response["entry"][1]["resource"]["total"], 1,
        "reads come after the writes"
    );
    assert_eq!(
        response["entry"][3]["resource"]["name"][0]["given"],
        json!(["Ada", "Augusta"])
    );
    assert_eq!(
        response["entry"][4]["resource"]["id"],
        patient_id.to_string()
    );
    let location = response["entry"][0]["response"]["location"]
        .as_str()
        .expect("a location");
    let path = &location[location.find("/fhir/").expect("a FHIR URL")..];
    assert_eq!(fhir(address, "GET", path, None).status, 200);

    // Any failing entry fails the whole transaction, naming the entry; nothing is written.
    let stale = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            { "request": { "method": "POST", "url": "Patient" }, "resource": patient_resource("MRN-91", "Babbage") },
            { "request": { "method": "PUT", "url": format!("Patient/{patient_id}"), "ifMatch": etag },
              "resource": current.json() }
        ]
    });
    let answer = fhir(address, "POST", "/fhir", Some(&stale));
    assert_eq!(answer.status, 412, "{}", answer.body);
    let outcome = served.keep(&answer);
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .is_some_and(|text| text.starts_with("Bundle.entry[1]")),
        "{outcome}"
    );
    let mut unborn = patient_resource("MRN-92", "Somerville");
    unborn["birthDate"] = json!("2999-01-01");
    let invalid = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            { "request": { "method": "POST", "url": "Patient" }, "resource": patient_resource("MRN-91", "Babbage") },
            { "request": { "method": "POST", "url": "Patient" }, "resource": unborn }
        ]
    });
    let answer = fhir(address, "POST", "/fhir", Some(&invalid));
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert!(issue_expressions(&served.keep(&answer)).contains(&"Patient.birthDate".to_owned()));
    let twice = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            { "request": { "method": "POST", "url": "Patient" }, "resource": patient_resource("MRN-91", "Babbage") },
            { "request": { "method": "POST", "url": "Patient" }, "resource": patient_resource("MRN-91", "Babbage") }
        ]
    });
    let answer = fhir(address, "POST", "/fhir", Some(&twice));
    assert_eq!(answer.status, 409, "{}", answer.body);
    served.keep(&answer);
    assert_eq!(
        patient_count(address, "MRN-91"),
        0,
        "no trace of failed transactions"
    );
    assert_eq!(patient_count(address, "MRN-92"), 0);

    // Observations: stored together, or not at all.
    let at = |second: i64| base + 20 * 60_000_000 + second * 1_000_000;
    let observations = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            { "request": { "method": "POST", "url": "Observation" }, "resource": heart_rate(device_id, patient_id, 81.0, at(0)) },
            { "request": { "method": "POST", "url": "Observation" }, "resource": heart_rate(device_id, patient_id, 82.0, at(1)) }
        ]
    });
    let answer = fhir(address, "POST", "/fhir", Some(&observations));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let response = served.keep(&answer);
    assert_eq!(statuses(&response), ["201 Created", "201 Created"]);
    assert_eq!(
        response["entry"][1]["resource"]["valueQuantity"]["value"],
        82.0
    );
    let again = fhir(address, "POST", "/fhir", Some(&observations));
    assert_eq!(
        statuses(&served.keep(&again)),
        ["200 OK", "200 OK"],
        "a retried transaction stores nothing twice"
    );
    let window = |second: i64| {
        let path = format!(
            "/fhir/Observation?patient={patient_id}&code=8867-4&date=ge{}&date=lt{}",
            micros_to_rfc3339(at(second)),
            micros_to_rfc3339(at(second + 1))
        );
        fhir(address, "GET", &path, None).json()["total"].clone()
    };
    assert_eq!(window(0), 1);
    let half_wrong = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            { "request": { "method": "POST", "url": "Observation" }, "resource": heart_rate(device_id, patient_id, 83.0, at(5)) },
            { "request": { "method": "POST", "url": "Observation" }, "resource": wrong }
        ]
    });
    let answer = fhir(address, "POST", "/fhir", Some(&half_wrong));
    assert_eq!(answer.status, 422, "{}", answer.body);
    let outcome = served.keep(&answer);
    assert!(
        issue_expressions(&outcome)
            .iter()
            .any(|path| path.starts_with("Observation.valueQuantity")),
        "{outcome}"
    );
    assert_eq!(window(5), 0, "the valid Observation was not stored either");

    // Registry writes and Observations are committed separately: one transaction is one kind.
    let mixed = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            { "request": { "method": "POST", "url": "Patient" }, "resource": patient_resource("MRN-94", "Hamilton") },
            { "request": { "method": "POST", "url": "Observation" }, "resource": heart_rate(device_id, patient_id, 84.0, at(7)) }
        ]
    });
    let answer = fhir(address, "POST", "/fhir", Some(&mixed));
    assert_eq!(answer.status, 422, "{}", answer.body);
    served.keep(&answer);
    assert_eq!(patient_count(address, "MRN-94"), 0);
    assert_eq!(window(7), 0);
    let delete = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{ "request": { "method": "DELETE", "url": format!("Patient/{patient_id}") } }]
    });
    let answer = fhir(address, "POST", "/fhir", Some(&delete));
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert!(
        issue_expressions(&served.keep(&answer)).contains(&"Bundle.entry[0].request".to_owned())
    );
}
