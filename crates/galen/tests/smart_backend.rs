//! A SMART Backend Services client Galen shares no code with gets a token from the real binary
//! and reads patients: `tests/interop/smart_backend.py` (PyJWT + cryptography) makes its own RSA
//! key, the administrator (here the service token) registers its public JWK set for a client
//! allowed `system/Patient.rs`, and the peer discovers the token endpoint in
//! `.well-known/smart-configuration`, signs an RS384 client assertion, reads `/fhir/Patient` with
//! the access token, and sees Observation refused, its assertion's replay refused and a scope
//! beyond its allowance refused. Without the packages the test fails and says how to install
//! them.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{TOKEN, exchange, post, start};
use serde_json::{Value, json};

const INSTALL: &str = "scripts/test (or pip install -r tests/interop/requirements.txt)";

/// Runs the peer with `args`; its stdout.
fn peer(args: &[&str]) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var("GALEN_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = Command::new(&python)
        .arg(root.join("tests/interop/smart_backend.py"))
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {python} ({error}); run {INSTALL}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_ne!(
        output.status.code(),
        Some(3),
        "the SMART backend test needs PyJWT and cryptography in {python}: run {INSTALL}\n{stderr}"
    );
    assert!(
        output.status.success(),
        "the SMART backend peer failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        !stdout.contains("PRIVATE KEY") && !stderr.contains("PRIVATE KEY"),
        "the peer printed its key"
    );
    stdout
}

#[test]
fn an_independent_smart_backend_service_gets_a_token_and_reads_patients() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = start(directory.path());
    let address = server.address.as_str();
    let mut patients = Vec::new();
    for mrn in ["SMART-1", "SMART-2"] {
        let patient = post(
            address,
            "/api/v1/patients",
            &json!({ "identifier": { "system": "urn:mrn", "value": mrn }, "name": { "family": "Backend" },
                     "birth_date": "1950-01-01", "sex": "other", "ward": "ICU", "bed": mrn }),
        );
        patients.push(patient["id"].as_i64().expect("id").to_string());
    }
    patients.sort();

    let key_file = directory.path().join("peer-key.pem");
    let jwks: Value =
        serde_json::from_str(peer(&["keygen", key_file.to_str().expect("utf-8 path")]).trim())
            .expect("the peer's JWK set");
    let registered = exchange(
        address,
        "POST",
        "/api/v1/oauth-clients",
        &[("Content-Type", "application/json")],
        Some(
            &json!({ "name": "python backend", "role": "integration-engineer",
                     "scopes": ["system/Patient.rs"], "jwks": jwks })
            .to_string(),
        ),
        Some(TOKEN),
    );
    assert_eq!(registered.status, 201, "{}", registered.body);
    let client_id = registered.json()["client_id"]
        .as_str()
        .expect("client id")
        .to_owned();

    let base = format!("http://{address}");
    let stdout = peer(&[
        "run",
        &base,
        &client_id,
        key_file.to_str().expect("utf-8 path"),
    ]);
    let report: Value = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no JSON report from the peer:\n{stdout}"));
    assert_eq!(report["failures"], json!([]), "{report:#}");
    assert_eq!(report["token_endpoint"], format!("{base}/oauth/token"));
    assert_eq!(report["scope"], "system/Patient.rs");
    assert_eq!(report["token_type"], "Bearer");
    assert_eq!(report["expires_in"], 300);
    assert_eq!(report["access_token_alg"], "ES384");
    assert_eq!(
        report["access_token_claims"],
        json!({ "iss": base, "aud": format!("{base}/fhir"), "sub": client_id,
                "client_id": client_id, "scope": "system/Patient.rs" })
    );
    assert_eq!(report["patients"], json!(patients), "{report:#}");
    assert_eq!(report["observation_status"], 403, "not granted");
    assert_eq!(report["replay"], json!([401, "invalid_client"]));
    assert_eq!(report["beyond_allowance"], json!([400, "invalid_scope"]));

    // Every step is in the audit trail, as the client.
    let trail = exchange(
        address,
        "GET",
        "/api/v1/audit?actor=client:python%20backend&limit=100",
        &[],
        None,
        Some(TOKEN),
    )
    .json();
    let actions: Vec<(String, String)> = trail["items"]
        .as_array()
        .expect("records")
        .iter()
        .map(|record| {
            (
                record["action"].as_str().unwrap_or("").to_owned(),
                record["outcome"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for expected in [
        ("login", "success"),
        ("search", "success"),
        ("search", "denied"),
        ("login-failed", "failed"),
        ("login-failed", "denied"),
    ] {
        assert!(
            actions
                .iter()
                .any(|(action, outcome)| (action.as_str(), outcome.as_str()) == expected),
            "{expected:?} in {actions:?}"
        );
    }
}
