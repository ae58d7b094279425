//! Authorization end to end, in process: every role against every route family (the role x
//! endpoint matrix), ward scoping (a nurse of one ward cannot see or act on another ward's
//! patients, over the native API or FHIR), and personal API tokens (revoked and expired ones
//! refused, a token acting with its account's role and scope).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use galen_model::{ManualClock, Timestamp};
use galen_server::{App, ServerConfig};
use galen_store::embedded::{SqliteOptions, SqliteStore};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const SERVICE: &str = "service-token-for-the-authz-test";
const PASSWORD: &str = "correct horse battery staple";

struct Fixture {
    app: App,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open store");
        let clock = Arc::new(ManualClock::new(
            Timestamp::parse_rfc3339("2026-11-24T08:00:00Z").expect("time"),
        ));
        let app = App::new(
            Arc::new(store),
            clock.clone(),
            ServerConfig {
                api_token: Some(SERVICE.to_owned()),
                ..ServerConfig::default()
            },
        )
        .await
        .expect("app starts");
        Fixture {
            app,
            clock,
            _dir: dir,
        }
    }

    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(body.map_or_else(Body::empty, |body| Body::from(body.to_string())))
            .expect("request");
        let response = self.app.router().oneshot(request).await.expect("router");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    async fn service(&self, method: Method, path: &str, body: Value) -> Value {
        let (status, value) = self.call(SERVICE, method, path, Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {value}");
        value
    }

    /// An account of `role` and a personal API token for it.
    async fn account(&self, name: &str, role: &str, extra: Value) -> String {
        let mut body = json!({ "name": name, "password": PASSWORD, "role": role });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let user = self.service(Method::POST, "/api/v1/users", body).await;
        let token = self
            .service(
                Method::POST,
                &format!("/api/v1/users/{}/tokens", user["id"]),
                json!({ "label": "test" }),
            )
            .await;
        token["token"].as_str().expect("secret").to_owned()
    }
}

/// Two wards with one monitored patient each; returns the patients' and devices' ids.
async fn two_wards(fixture: &Fixture) -> (i64, i64, i64, i64) {
    let mut ids = Vec::new();
    for (mrn, ward, serial) in [("ICU-1", "ICU", "MON-ICU"), ("CAR-1", "CARDIO", "MON-CAR")] {
        let patient = fixture
            .service(
                Method::POST,
                "/api/v1/patients",
                json!({ "identifier": { "system": "urn:mrn", "value": mrn }, "name": { "family": "Test" },
                        "birth_date": "1950-01-01", "sex": "other", "ward": ward, "bed": "1" }),
            )
            .await["id"]
            .as_i64()
            .expect("id");
        let device = fixture
            .service(Method::POST, "/api/v1/devices", json!({ "serial": serial }))
            .await["id"]
            .as_i64()
            .expect("id");
        fixture
            .service(
                Method::POST,
                "/api/v1/assignments",
                json!({ "device": device, "patient": patient, "start": "2026-11-24T07:00:00Z" }),
            )
            .await;
        fixture
            .service(
                Method::POST,
                "/api/v1/measurements",
                json!([{ "device": serial, "code": "hr", "value": 80, "unit": "/min", "time": "2026-11-24T07:59:00Z" }]),
            )
            .await;
        ids.push((patient, device));
    }
    (ids[0].0, ids[0].1, ids[1].0, ids[1].1)
}

fn allowed(status: StatusCode) -> bool {
    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED
}

#[tokio::test]
async fn every_role_against_every_route_family() {
    let fixture = Fixture::new().await;
    let (icu_patient, icu_device, _, _) = two_wards(&fixture).await;
    let roles: Vec<(&str, String)> = vec![
        (
            "administrator",
            fixture.account("admin", "administrator", json!({})).await,
        ),
        (
            "clinician",
            fixture
                .account("doc", "clinician", json!({ "wards": ["ICU"] }))
                .await,
        ),
        (
            "nurse",
            fixture
                .account("nurse", "nurse", json!({ "wards": ["ICU"] }))
                .await,
        ),
        (
            "integration-engineer",
            fixture
                .account("int", "integration-engineer", json!({}))
                .await,
        ),
        (
            "auditor",
            fixture.account("aud", "auditor", json!({})).await,
        ),
        (
            "researcher",
            fixture.account("res", "researcher", json!({})).await,
        ),
        (
            "patient",
            fixture
                .account("pat", "patient", json!({ "patient": icu_patient }))
                .await,
        ),
        ("device", fixture.account("dev", "device", json!({})).await),
    ];
    let patient = format!("/api/v1/patients/{icu_patient}");
    let fhir_patient = format!("/fhir/Patient/{icu_patient}");
    let observations = format!("/fhir/Observation?patient={icu_patient}");
    let device_vitals = format!("/api/v1/devices/{icu_device}/vitals");
    // (method, path, body, the roles allowed)
    let matrix: Vec<(Method, String, Option<Value>, &[&str])> = vec![
        (
            Method::GET,
            "/api/v1/dashboard".into(),
            None,
            &[
                "administrator",
                "clinician",
                "nurse",
                "integration-engineer",
                "patient",
            ],
        ),
        (
            Method::GET,
            patient.clone(),
            None,
            &[
                "administrator",
                "clinician",
                "nurse",
                "integration-engineer",
                "patient",
            ],
        ),
        (
            Method::GET,
            fhir_patient.clone(),
            None,
            &[
                "administrator",
                "clinician",
                "nurse",
                "integration-engineer",
                "patient",
            ],
        ),
        (
            Method::GET,
            observations,
            None,
            &[
                "administrator",
                "clinician",
                "nurse",
                "integration-engineer",
                "patient",
            ],
        ),
        (
            Method::GET,
            device_vitals,
            None,
            &["administrator", "integration-engineer"],
        ),
        (
            Method::POST,
            format!("{patient}/observations"),
            Some(json!({ "consciousness": "A" })),
            &["clinician", "nurse"],
        ),
        (
            Method::POST,
            "/api/v1/devices".into(),
            Some(json!({ "serial": "NEW-1" })),
            &["administrator", "integration-engineer"],
        ),
        (
            Method::GET,
            "/api/v1/devices".into(),
            None,
            &[
                "administrator",
                "clinician",
                "nurse",
                "integration-engineer",
            ],
        ),
        (
            Method::POST,
            "/api/v1/measurements".into(),
            Some(json!([])),
            &["integration-engineer", "device"],
        ),
        (
            Method::GET,
            "/api/v1/dead-letters".into(),
            None,
            &["administrator", "integration-engineer"],
        ),
        (
            Method::GET,
            "/metrics".into(),
            None,
            &["administrator", "integration-engineer"],
        ),
        (
            Method::GET,
            "/fhir/$export".into(),
            None,
            &["integration-engineer", "researcher"],
        ),
        (
            Method::GET,
            format!("/fhir/Consent?patient={icu_patient}"),
            None,
            &[
                "administrator",
                "clinician",
                "nurse",
                "integration-engineer",
                "patient",
            ],
        ),
        (
            Method::POST,
            "/fhir/Consent".into(),
            Some(json!({ "resourceType": "Consent" })),
            &["clinician", "nurse", "integration-engineer", "patient"],
        ),
        (
            Method::GET,
            "/fhir/Subscription".into(),
            None,
            &["clinician", "integration-engineer"],
        ),
        (
            Method::GET,
            "/api/v1/users".into(),
            None,
            &["administrator"],
        ),
        (Method::GET, "/api/v1/audit".into(), None, &["auditor"]),
        (Method::GET, "/audit".into(), None, &["auditor"]),
        (Method::GET, "/fhir/AuditEvent".into(), None, &["auditor"]),
    ];
    let mut failures = Vec::new();
    for (method, path, body, allowed_roles) in &matrix {
        for (role, token) in &roles {
            let (status, answer) = fixture
                .call(token, method.clone(), path, body.clone())
                .await;
            let expected = allowed_roles.contains(role);
            if allowed(status) != expected {
                failures.push(format!("{role} {method} {path}: {status} {answer}"));
            }
            if !expected && status == StatusCode::FORBIDDEN && path.starts_with("/fhir") {
                assert_eq!(answer["resourceType"], "OperationOutcome", "{path}");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the role table was not enforced:\n{}",
        failures.join("\n")
    );
    // Every authenticated principal may ask who it is.
    for (role, token) in &roles {
        let (status, answer) = fixture
            .call(token, Method::GET, "/api/v1/session", None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["role"], *role);
    }
}

#[tokio::test]
async fn a_nurse_sees_and_acts_on_her_ward_only() {
    let fixture = Fixture::new().await;
    let (icu_patient, _, cardio_patient, cardio_device) = two_wards(&fixture).await;
    let nurse = fixture
        .account("ann", "nurse", json!({ "wards": ["ICU"] }))
        .await;
    let (status, dashboard) = fixture
        .call(&nurse, Method::GET, "/api/v1/dashboard", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let shown: Vec<i64> = dashboard["patients"]
        .as_array()
        .expect("patients")
        .iter()
        .filter_map(|patient| patient["id"].as_i64())
        .collect();
    assert_eq!(shown, vec![icu_patient], "{dashboard}");
    let (_, list) = fixture
        .call(&nurse, Method::GET, "/api/v1/patients", None)
        .await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    let (_, bundle) = fixture
        .call(&nurse, Method::GET, "/fhir/Patient", None)
        .await;
    assert_eq!(bundle["total"], 1, "{bundle}");
    let (_, report) = fixture
        .call(&nurse, Method::GET, "/api/v1/alarm-report", None)
        .await;
    assert_eq!(report["patients"], 1, "her ward's alarm report: {report}");
    for path in [
        format!("/api/v1/patients/{cardio_patient}"),
        format!("/api/v1/patients/{cardio_patient}/vitals"),
        format!("/patients/{cardio_patient}"),
        format!("/fhir/Patient/{cardio_patient}"),
        format!("/fhir/Observation?patient={cardio_patient}"),
        format!("/fhir/Observation?patient={icu_patient},{cardio_patient}"),
        "/fhir/Observation?code=8867-4".to_owned(),
        format!("/fhir/Observation/{cardio_device}.hr.1795593540000000"),
    ] {
        let (status, answer) = fixture.call(&nurse, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {answer}");
    }
    let (status, _) = fixture
        .call(
            &nurse,
            Method::POST,
            &format!("/api/v1/patients/{cardio_patient}/observations"),
            Some(json!({ "consciousness": "V" })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "no care recorded outside her ward"
    );
    let (status, answer) = fixture
        .call(
            &nurse,
            Method::GET,
            &format!("/fhir/Observation?patient={icu_patient}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["total"], 1, "{answer}");

    // Every one of those requests is in the audit trail: the reads with their patient, the
    // refusals as denied, and never a query string (it can carry names or identifiers).
    let auditor = fixture.account("aud", "auditor", json!({})).await;
    let (status, trail) = fixture
        .call(
            &auditor,
            Method::GET,
            "/api/v1/audit?actor=ann&limit=1000",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{trail}");
    let records = trail["items"].as_array().expect("records").clone();
    let denied: Vec<&Value> = records
        .iter()
        .filter(|record| record["outcome"] == "denied")
        .collect();
    assert_eq!(denied.len(), 9, "{trail}");
    assert!(
        denied
            .iter()
            .any(|record| record["patient"] == cardio_patient
                // A refused request is recorded by its route (its path may carry anything), with
                // the patient it named.
                && record["resource"] == "/fhir/Patient/{id}"),
        "{trail}"
    );
    let read = records
        .iter()
        .find(|record| {
            record["action"] == "search"
                && record["resource"] == "/fhir/Observation"
                && record["outcome"] == "success"
        })
        .expect("the successful search is recorded");
    assert_eq!(read["patient"], icu_patient);
    assert!(
        records
            .iter()
            .all(|record| { !record["resource"].as_str().unwrap_or("?").contains('?') })
    );
    assert!(records.iter().all(|record| record["role"] == "nurse"));
}

#[tokio::test]
async fn api_tokens_are_revocable_and_expire() {
    let fixture = Fixture::new().await;
    let user = fixture
        .service(
            Method::POST,
            "/api/v1/users",
            json!({ "name": "ehr", "password": PASSWORD, "role": "integration-engineer" }),
        )
        .await;
    let issued = fixture
        .service(
            Method::POST,
            &format!("/api/v1/users/{}/tokens", user["id"]),
            json!({ "label": "EHR interface", "expires_in_days": 1 }),
        )
        .await;
    let token = issued["token"].as_str().expect("secret").to_owned();
    assert!(token.starts_with("glt_"));
    let (status, me) = fixture
        .call(&token, Method::GET, "/api/v1/session", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["role"], "integration-engineer");
    // Listing tokens never shows a secret.
    let (_, listed) = fixture
        .call(
            SERVICE,
            Method::GET,
            &format!("/api/v1/users/{}/tokens", user["id"]),
            None,
        )
        .await;
    assert!(!listed.to_string().contains(&token));
    // A tampered token is refused.
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('0') { '1' } else { '0' });
    let (status, _) = fixture
        .call(&tampered, Method::GET, "/api/v1/session", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Expired after a day.
    fixture.clock.advance_micros(24 * 3600 * 1_000_000 + 1);
    let (status, _) = fixture
        .call(&token, Method::GET, "/api/v1/session", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "expired");
    // Revoked at once.
    let second = fixture
        .service(
            Method::POST,
            &format!("/api/v1/users/{}/tokens", user["id"]),
            json!({ "label": "second" }),
        )
        .await;
    let secret = second["token"].as_str().expect("secret").to_owned();
    assert_eq!(
        fixture
            .call(&secret, Method::GET, "/api/v1/session", None)
            .await
            .0,
        StatusCode::OK
    );
    fixture
        .service(
            Method::DELETE,
            &format!("/api/v1/tokens/{}", second["id"]),
            json!({}),
        )
        .await;
    assert_eq!(
        fixture
            .call(&secret, Method::GET, "/api/v1/session", None)
            .await
            .0,
        StatusCode::UNAUTHORIZED,
        "revoked"
    );
}

#[tokio::test]
async fn a_fhir_registry_write_and_its_audit_record_commit_together() {
    let fixture = Fixture::new().await;
    let engineer = fixture
        .account("eng", "integration-engineer", json!({}))
        .await;
    let patient = json!({
        "resourceType": "Patient",
        "identifier": [{ "system": "urn:mrn", "value": "FHIR-1" }],
        "name": [{ "family": "Audit" }],
        "birthDate": "1960-01-01"
    });
    let request = Request::post("/fhir/Patient")
        .header(header::AUTHORIZATION, format!("Bearer {engineer}"))
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .body(Body::from(patient.to_string()))
        .expect("request");
    let response = fixture.app.router().oneshot(request).await.expect("router");
    assert_eq!(response.status(), StatusCode::CREATED);
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let created: Value = serde_json::from_slice(&bytes).expect("json");
    let id: i64 = created["id"].as_str().expect("id").parse().expect("number");
    let auditor = fixture.account("aud", "auditor", json!({})).await;
    let (_, trail) = fixture
        .call(
            &auditor,
            Method::GET,
            "/api/v1/audit?actor=eng&limit=100",
            None,
        )
        .await;
    let records: Vec<&Value> = trail["items"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|record| record["action"] == "create")
        .collect();
    assert_eq!(
        records.len(),
        1,
        "one record, written with the patient: {trail}"
    );
    assert_eq!(records[0]["resource"], format!("Patient/{id}"));
    assert_eq!(records[0]["patient"], id);
    assert_eq!(records[0]["outcome"], "success");
}

#[tokio::test]
async fn a_device_account_sends_only_its_own_measurements() {
    let fixture = Fixture::new().await;
    two_wards(&fixture).await;
    // The device account's name is its serial.
    let monitor = fixture.account("MON-ICU", "device", json!({})).await;
    let own = json!([{ "device": "MON-ICU", "code": "hr", "value": 81, "unit": "/min", "time": "2026-11-24T07:59:30Z" }]);
    let (status, answer) = fixture
        .call(&monitor, Method::POST, "/api/v1/measurements", Some(own))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    let other = json!([{ "device": "MON-CAR", "code": "hr", "value": 150, "unit": "/min", "time": "2026-11-24T07:59:30Z" }]);
    let (status, answer) = fixture
        .call(&monitor, Method::POST, "/api/v1/measurements", Some(other))
        .await;
    assert_eq!(answer["accepted"], 0, "{status} {answer}");
    assert_eq!(answer["rejected"], 1, "{answer}");
    assert!(answer.to_string().contains("forbidden"), "{answer}");
    // Over FHIR too: naming another device's serial is refused.
    let observation = |serial: &str| {
        json!({
            "resourceType": "Observation",
            "status": "final",
            "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs" }] }],
            "code": { "coding": [{ "system": "http://loinc.org", "code": "8867-4" }] },
            "device": { "identifier": { "system": "https://galen.invalid/fhir/sid/device-serial", "value": serial } },
            "effectiveDateTime": "2026-11-24T07:59:45Z",
            "valueQuantity": { "value": 82, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min" }
        })
    };
    let post = |body: Value| {
        Request::post("/fhir/Observation")
            .header(header::AUTHORIZATION, format!("Bearer {monitor}"))
            .header(header::CONTENT_TYPE, "application/fhir+json")
            .body(Body::from(body.to_string()))
            .expect("request")
    };
    let response = fixture
        .app
        .router()
        .oneshot(post(observation("MON-CAR")))
        .await
        .expect("router");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = fixture
        .app
        .router()
        .oneshot(post(observation("MON-ICU")))
        .await
        .expect("router");
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn break_glass_opens_one_patient_for_a_while_with_a_reason_and_is_audited() {
    let fixture = Fixture::new().await;
    let (icu_patient, _, cardio_patient, _) = two_wards(&fixture).await;
    let nurse = fixture
        .account("ann", "nurse", json!({ "wards": ["ICU"] }))
        .await;
    let admin = fixture.account("root", "administrator", json!({})).await;
    let auditor = fixture.account("aud", "auditor", json!({})).await;
    let vitals = format!("/api/v1/patients/{cardio_patient}/clinical");
    let (status, _) = fixture.call(&nurse, Method::GET, &vitals, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "outside her ward");

    // Refused: no reason, a reason of one word, too long, her own ward, an unknown patient, a
    // role without the permission.
    for (body, expected) in [
        (
            json!({ "patient": cardio_patient }),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "patient": cardio_patient, "reason": "urgent" }),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "patient": cardio_patient, "reason": "cardiac arrest call", "minutes": 61 }),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "patient": icu_patient, "reason": "cardiac arrest call" }),
            StatusCode::CONFLICT,
        ),
        (
            json!({ "patient": 999, "reason": "cardiac arrest call" }),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (status, answer) = fixture
            .call(
                &nurse,
                Method::POST,
                "/api/v1/break-glass",
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, expected, "{body}: {answer}");
    }
    let (status, _) = fixture
        .call(
            &admin,
            Method::POST,
            "/api/v1/break-glass",
            Some(json!({ "patient": cardio_patient, "reason": "cardiac arrest call" })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "administrators record no care"
    );

    let (status, grant) = fixture
        .call(
            &nurse,
            Method::POST,
            "/api/v1/break-glass",
            Some(json!({ "patient": cardio_patient, "reason": "cardiac arrest call, covering CARDIO", "minutes": 20 })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{grant}");
    assert_eq!(grant["active"], true);
    let (status, _) = fixture.call(&nurse, Method::GET, &vitals, None).await;
    assert_eq!(status, StatusCode::OK, "opened by the grant");
    let (status, _) = fixture
        .call(
            &nurse,
            Method::POST,
            &format!("/api/v1/patients/{cardio_patient}/observations"),
            Some(json!({ "consciousness": "V" })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "care may be recorded under the grant"
    );
    let (_, dashboard) = fixture
        .call(&nurse, Method::GET, "/api/v1/dashboard", None)
        .await;
    assert_eq!(
        dashboard["patients"].as_array().map(Vec::len),
        Some(2),
        "the patient joins her lists while the grant lasts"
    );

    // Alerted: counted in the metrics; reviewed by auditors with the reason.
    let (status, list) = fixture
        .call(&auditor, Method::GET, "/api/v1/break-glass", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        list["items"][0]["reason"],
        "cardiac arrest call, covering CARDIO"
    );
    assert_eq!(list["items"][0]["actor"], "ann");
    let (status, _) = fixture
        .call(&nurse, Method::GET, "/api/v1/break-glass", None)
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "grants are reviewed by auditors"
    );
    let metrics = fixture
        .app
        .router()
        .oneshot(
            Request::builder()
                .uri("/metrics")
                .header(header::AUTHORIZATION, format!("Bearer {SERVICE}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("router")
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("galen_break_glass_grants_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("galen_break_glass_active 1\n"),
        "{metrics}"
    );

    // Time-limited: 20 minutes later the patient is out of scope again.
    fixture.clock.advance_micros(20 * 60 * 1_000_000);
    let (status, _) = fixture.call(&nurse, Method::GET, &vitals, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the grant lapsed");

    // Ended early: a second grant ends when she says so, by her only.
    let (_, second) = fixture
        .call(
            &nurse,
            Method::POST,
            "/api/v1/break-glass",
            Some(json!({ "patient": cardio_patient, "reason": "rapid response team call" })),
        )
        .await;
    let end = format!("/api/v1/break-glass/{}", second["id"]);
    let doctor = fixture
        .account("doc", "clinician", json!({ "wards": ["CARDIO"] }))
        .await;
    let (status, _) = fixture.call(&doctor, Method::DELETE, &end, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not hers to end");
    let (status, _) = fixture.call(&nurse, Method::DELETE, &end, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = fixture.call(&nurse, Method::GET, &vitals, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "ended");

    // Audited: the grants, and every request under one, named as such.
    let (_, trail) = fixture
        .call(
            &auditor,
            Method::GET,
            &format!("/api/v1/audit?actor=ann&patient={cardio_patient}&limit=1000"),
            None,
        )
        .await;
    let records = trail["items"].as_array().expect("records").clone();
    let grants: Vec<&Value> = records
        .iter()
        .filter(|record| record["action"] == "break-glass" && record["outcome"] == "success")
        .collect();
    assert_eq!(grants.len(), 2, "{trail}");
    let under: Vec<&str> = records
        .iter()
        .filter(|record| {
            record["detail"]
                .as_str()
                .unwrap_or("")
                .contains("[break-glass]")
        })
        .filter_map(|record| record["resource"].as_str())
        .collect();
    assert!(under.contains(&vitals.as_str()), "{trail}");
    assert!(
        under.contains(&format!("/api/v1/patients/{cardio_patient}/observations").as_str()),
        "{trail}"
    );
}

#[tokio::test]
async fn a_transaction_entry_is_authorized_as_if_sent_alone() {
    let fixture = Fixture::new().await;
    let (icu, _, _, _) = two_wards(&fixture).await;
    let nurse = fixture
        .account("nurse.tx", "nurse", json!({ "wards": ["ICU"] }))
        .await;
    let bundle = |method: &str, url: String| {
        json!({
            "resourceType": "Bundle", "type": "transaction",
            "entry": [{
                "request": { "method": method, "url": url },
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{ "system": "urn:mrn", "value": "TX-1" }],
                    "name": [{ "family": "Transaction" }],
                    "birthDate": "1960-01-01"
                }
            }]
        })
    };
    let post = |body: Value| {
        Request::post("/fhir")
            .header(header::AUTHORIZATION, format!("Bearer {nurse}"))
            .header(header::CONTENT_TYPE, "application/fhir+json")
            .body(Body::from(body.to_string()))
            .expect("request")
    };
    // A nurse may not register patients: not alone, and not inside a transaction either.
    for body in [
        bundle("POST", "Patient".to_owned()),
        bundle("PUT", format!("Patient/{icu}")),
    ] {
        let response = fixture
            .app
            .router()
            .oneshot(post(body))
            .await
            .expect("router");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    let (_, found) = fixture
        .call(
            SERVICE,
            Method::GET,
            "/fhir/Patient?identifier=urn:mrn|TX-1",
            None,
        )
        .await;
    assert_eq!(found["total"], 0, "nothing written: {found}");
}

#[tokio::test]
async fn an_auditor_signs_in_to_the_audit_view_and_others_to_the_ward_view() {
    let fixture = Fixture::new().await;
    fixture.account("aud", "auditor", json!({})).await;
    fixture
        .account("nina", "nurse", json!({ "wards": ["ICU"] }))
        .await;
    let send = |request: Request<Body>| async {
        let response = fixture.app.router().oneshot(request).await.expect("router");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    };
    let login = |name: &str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!(
                "name={name}&password={}",
                PASSWORD.replace(' ', "+")
            )))
            .expect("request")
    };
    let (status, headers, _) = send(login("aud")).await;
    assert!(status.is_redirection(), "{status}");
    assert_eq!(headers[header::LOCATION], "/audit");
    let cookie = headers[header::SET_COOKIE]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let (status, headers, page) = send(
        Request::get("/audit")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|value| value.starts_with("text/html"))
    );
    // The CSP allows no inline script or style: the page loads its script and styles.
    assert!(page.contains(r#"<script src="/assets/audit.js" defer></script>"#));
    assert_eq!(page.matches("<script").count(), 1, "no inline script");
    assert!(
        !page.contains("<style") && !page.contains("style="),
        "no inline style"
    );
    let (status, headers, script) = send(
        Request::get("/assets/audit.js")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|value| value.starts_with("text/javascript"))
    );
    assert!(script.contains("/api/v1/audit") && !script.contains("innerHTML"));
    // The ward view is not the auditor's; a nurse lands there and may not open the audit view.
    let (status, _, _) = send(
        Request::get("/")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, headers, _) = send(login("nina")).await;
    assert_eq!(headers[header::LOCATION], "/");
    let nurse = headers[header::SET_COOKIE]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let (status, _, _) = send(
        Request::get("/audit")
            .header(header::COOKIE, &nurse)
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
