//! FHIR Consent against the real binary: an account acting for an organisation created with
//! `galen users add --organization`, then a Consent recorded, read, searched and withdrawn over
//! HTTP, every answer (and the CapabilityStatement declaring Consent) checked by the independent
//! R4 validator.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{TOKEN, exchange, post, start};
use serde_json::{Value, json};

const PASSWORD: &str = "a long enough password";

fn fhir(address: &str, method: &str, path: &str, body: Option<&Value>) -> common::Answer {
    let text = body.map(Value::to_string);
    exchange(
        address,
        method,
        path,
        &[
            ("Accept", "application/fhir+json"),
            ("Content-Type", "application/fhir+json"),
        ],
        text.as_deref(),
        Some(TOKEN),
    )
}

/// `galen users add` with the password on standard input.
fn users_add(data_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_galen"))
        .args(["users", "add", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("galen runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .expect("password");
    child.wait_with_output().expect("galen finishes")
}

#[test]
fn an_organisations_account_and_a_consent_over_fhir() {
    let directory = tempfile::tempdir().expect("temp dir");
    let refused = users_add(
        directory.path(),
        &[
            "--name",
            "bad",
            "--role",
            "integration-engineer",
            "--organization",
            "Practitioner/1",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--organization must be"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let added = users_add(
        directory.path(),
        &[
            "--name",
            "acme.export",
            "--role",
            "integration-engineer",
            "--organization",
            "Organization/acme-lab",
        ],
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );

    let server = start(directory.path());
    let address = server.address.as_str();
    // The account acts for its organisation: the API and its session say so.
    let (status, users) = common::request(address, "GET", "/api/v1/users", None).expect("users");
    assert_eq!(status, 200, "{users}");
    let users: Value = serde_json::from_str(&users).expect("json");
    let account = users["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|user| user["name"] == "acme.export")
        .expect("the account")
        .clone();
    assert_eq!(account["organization"], "Organization/acme-lab");
    let token = post(
        address,
        &format!("/api/v1/users/{}/tokens", account["id"]),
        &json!({ "label": "export" }),
    )["token"]
        .as_str()
        .expect("secret")
        .to_owned();
    let session = exchange(address, "GET", "/api/v1/session", &[], None, Some(&token));
    assert_eq!(session.json()["organization"], "Organization/acme-lab");

    let patient = post(
        address,
        "/api/v1/patients",
        &json!({ "identifier": { "system": "urn:mrn", "value": "CON-1" }, "name": { "family": "Consent" },
                 "birth_date": "1950-01-01", "sex": "other", "ward": "ICU", "bed": "1" }),
    )["id"]
        .as_i64()
        .expect("patient id");
    let posted = json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy" }] },
        "category": [{ "coding": [{ "system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent" }] }],
        "patient": { "reference": format!("Patient/{patient}") },
        "dateTime": "2026-11-24T09:30:00Z",
        "performer": [{ "reference": format!("Patient/{patient}") }],
        "sourceAttachment": { "contentType": "application/pdf", "title": "signed form" },
        "provision": {
            "type": "deny",
            "period": { "start": "2026-11-24", "end": "2027-11-23" },
            "actor": [
                { "role": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP" }] },
                  "reference": { "reference": "Organization/acme-lab", "display": "Acme Lab" } },
                { "role": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP" }] },
                  "reference": { "identifier": { "system": "urn:oid:2.16.840.1.113883.3.1", "value": "BETA" } } }
            ],
            "action": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "disclose" }] }]
        }
    });
    let mut served = Vec::new();
    let created = fhir(address, "POST", "/fhir/Consent", Some(&posted));
    assert_eq!(created.status, 201, "{}", created.body);
    let consent = created.json();
    let id = consent["id"].as_str().expect("id").to_owned();
    assert_eq!(consent["sourceAttachment"]["title"], "signed form", "kept");
    served.push(created.body.clone());
    let read = fhir(address, "GET", &format!("/fhir/Consent/{id}"), None);
    assert_eq!(read.status, 200, "{}", read.body);
    assert!(read.header("etag").is_some());
    served.push(read.body.clone());
    let search = fhir(
        address,
        "GET",
        &format!("/fhir/Consent?patient=Patient/{patient}&status=active"),
        None,
    );
    assert_eq!(search.status, 200, "{}", search.body);
    assert_eq!(search.json()["total"], 1);
    served.push(search.body.clone());
    let mut withdrawn = read.json();
    withdrawn["status"] = json!("inactive");
    let updated = fhir(
        address,
        "PUT",
        &format!("/fhir/Consent/{id}"),
        Some(&withdrawn),
    );
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.json()["status"], "inactive");
    served.push(updated.body.clone());
    let mut cannot = posted.clone();
    cannot["provision"]["data"] =
        json!([{ "meaning": "instance", "reference": { "reference": "Observation/1" } }]);
    let refused = fhir(address, "POST", "/fhir/Consent", Some(&cannot));
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(
        refused.json()["issue"][0]["expression"][0],
        "Consent.provision.data"
    );
    served.push(refused.body.clone());
    let metadata = fhir(address, "GET", "/fhir/metadata", None);
    let statement = metadata.json();
    let declared = statement["rest"][0]["resource"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|resource| resource["type"] == "Consent")
        .expect("Consent is declared")
        .clone();
    let interactions: Vec<&str> = declared["interaction"]
        .as_array()
        .expect("interactions")
        .iter()
        .filter_map(|interaction| interaction["code"].as_str())
        .collect();
    assert_eq!(interactions, ["read", "search-type", "create", "update"]);
    served.push(metadata.body.clone());
    common::validate_fhir(&served);
}
