//! Every write over HTTP stores its audit record in its own transaction: a write and its record
//! are durable together, or neither is.
//!
//! The proof of "neither": a trigger added to the database file refuses every new audit record,
//! as a full disk or a broken chain would. Then each kind of write (registry, assignment, device
//! credential, ingest over the native API and FHIR, staff entry, account, API token, FHIR
//! subscription) must fail and leave nothing behind. Once the trigger is gone, the same writes
//! succeed, each with exactly one record, marked as stored with the write.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use galen_model::{DeviceId, ManualClock, Timestamp};
use galen_server::{App, ServerConfig};
use galen_store::embedded::{DATABASE_FILE, SqliteOptions, SqliteStore};
use galen_store::{
    AccessStore, AuditQuery, AuditStore, ClinicalStore, MeasurementStore, RegistryStore,
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const SERVICE: &str = "service-token-for-the-atomic-audit-test";

struct Fixture {
    app: App,
    store: Arc<SqliteStore>,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store =
            Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open store"));
        let clock = Arc::new(ManualClock::new(
            Timestamp::parse_rfc3339("2026-11-24T08:00:00Z").expect("time"),
        ));
        let app = App::new(
            store.clone(),
            clock,
            ServerConfig {
                api_token: Some(SERVICE.to_owned()),
                ..ServerConfig::default()
            },
        )
        .await
        .expect("app starts");
        Fixture { app, store, dir }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {SERVICE}"));
        if body.is_some() {
            let fhir = path.starts_with("/fhir");
            request = request.header(
                header::CONTENT_TYPE,
                if fhir {
                    "application/fhir+json"
                } else {
                    "application/json"
                },
            );
            if fhir {
                request = request.header(header::ACCEPT, "application/fhir+json");
            }
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
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

/// Refuses (or again allows) every new audit record, behind the server's back.
fn refuse_audit_records(dir: &Path, refuse: bool) {
    let connection = rusqlite::Connection::open(dir.join(DATABASE_FILE)).expect("open database");
    connection
        .busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    let sql = if refuse {
        "CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit refused by the test'); END;"
    } else {
        "DROP TRIGGER test_refuse_audit;"
    };
    connection.execute_batch(sql).expect("trigger");
}

/// What the writes build on, made before the trigger: a patient, a device and an account.
struct Base {
    patient: i64,
    device: i64,
    user: i64,
}

async fn base(fixture: &Fixture) -> Base {
    let (_, patient) = fixture
        .call(
            Method::POST,
            "/api/v1/patients",
            Some(
                json!({ "identifier": { "system": "urn:mrn", "value": "MRN-BASE" },
                    "name": { "family": "Atomic" }, "birth_date": "1950-01-01", "sex": "other",
                    "ward": "ICU", "bed": "1" }),
            ),
        )
        .await;
    let (_, device) = fixture
        .call(
            Method::POST,
            "/api/v1/devices",
            Some(json!({ "serial": "MON-BASE" })),
        )
        .await;
    let (_, user) = fixture
        .call(
            Method::POST,
            "/api/v1/users",
            Some(json!({ "name": "auditor.base",
                    "password": "correct horse battery staple", "role": "auditor" })),
        )
        .await;
    Base {
        patient: patient["id"].as_i64().expect("patient"),
        device: device["id"].as_i64().expect("device"),
        user: user["id"].as_i64().expect("user"),
    }
}

/// Every kind of write; the statuses.
async fn writes(fixture: &Fixture, base: &Base, suffix: &str) -> Vec<(&'static str, StatusCode)> {
    let mut statuses = Vec::new();
    let mut push = |write: &'static str, status: StatusCode| statuses.push((write, status));
    let (status, _) = fixture
        .call(
            Method::POST,
            "/api/v1/patients",
            Some(
                json!({ "identifier": { "system": "urn:mrn", "value": format!("MRN-{suffix}") },
                    "name": { "family": "Atomic" }, "birth_date": "1950-01-01", "sex": "other",
                    "ward": "ICU", "bed": suffix }),
            ),
        )
        .await;
    push("patient", status);
    let (status, _) = fixture
        .call(
            Method::POST,
            "/api/v1/devices",
            Some(json!({ "serial": format!("MON-{suffix}") })),
        )
        .await;
    push("device", status);
    let (status, _) = fixture
        .call(
            Method::POST,
            "/api/v1/assignments",
            Some(json!({ "device": base.device, "patient": base.patient,
                    "start": "2026-11-24T07:00:00Z" })),
        )
        .await;
    push("assignment", status);
    let (status, _) = fixture
        .call(
            Method::POST,
            &format!("/api/v1/devices/{}/credentials", base.device),
            None,
        )
        .await;
    push("credential", status);
    let (status, _) = fixture
        .call(
            Method::POST,
            "/api/v1/measurements",
            Some(json!([{ "device": "MON-BASE", "code": "hr", "value": 80,
                    "unit": "/min", "time": "2026-11-24T07:59:00Z" }])),
        )
        .await;
    push("measurement", status);
    let (status, _) = fixture
        .call(
            Method::POST,
            "/fhir/Observation",
            Some(json!({ "resourceType": "Observation", "status": "final",
                "code": { "coding": [{ "system": "http://loinc.org", "code": "9279-1" }] },
                "device": { "reference": format!("Device/{}", base.device) },
                "effectiveDateTime": "2026-11-24T07:58:00Z",
                "valueQuantity": { "value": 18, "unit": "breaths/minute",
                                   "system": "http://unitsofmeasure.org", "code": "/min" } })),
        )
        .await;
    push("fhir observation", status);
    let (status, _) = fixture
        .call(
            Method::POST,
            &format!("/api/v1/patients/{}/observations", base.patient),
            Some(json!({ "by": "nurse.jones", "consciousness": "A" })),
        )
        .await;
    push("staff entry", status);
    let (status, _) = fixture
        .call(
            Method::POST,
            "/api/v1/users",
            Some(json!({ "name": format!("auditor.{suffix}"),
                    "password": "correct horse battery staple", "role": "auditor" })),
        )
        .await;
    push("account", status);
    let (status, _) = fixture
        .call(
            Method::POST,
            &format!("/api/v1/users/{}/tokens", base.user),
            Some(json!({ "label": "evidence" })),
        )
        .await;
    push("token", status);
    let (status, _) = fixture
        .call(
            Method::POST,
            "/fhir/Subscription",
            Some(
                json!({ "resourceType": "Subscription", "status": "requested",
                "reason": "test", "criteria": "https://galen.invalid/fhir/SubscriptionTopic/vital-sign-observation",
                "channel": { "type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook",
                             "payload": "application/fhir+json" } }),
            ),
        )
        .await;
    push("subscription", status);
    statuses
}

#[tokio::test]
async fn a_write_whose_audit_record_cannot_be_stored_does_not_happen() {
    let fixture = Fixture::new().await;
    let base = base(&fixture).await;
    let before = fixture.store.audit_head().await.expect("head");
    refuse_audit_records(fixture.dir.path(), true);
    for (write, status) in writes(&fixture, &base, "1").await {
        assert!(
            status.is_server_error(),
            "{write}: answered {status} although its audit record could not be stored"
        );
    }
    let store = fixture.store.as_ref();
    assert_eq!(store.patients(None).await.expect("patients").len(), 1);
    assert_eq!(store.devices().await.expect("devices").len(), 1);
    assert!(store.assignments().await.expect("assignments").is_empty());
    assert!(
        store
            .device_credentials()
            .await
            .expect("credentials")
            .is_empty()
    );
    assert!(
        store
            .latest(DeviceId(base.device))
            .await
            .expect("latest")
            .is_empty()
    );
    assert!(
        store
            .entries(
                None,
                Timestamp::from_micros(0),
                Timestamp::from_micros(i64::MAX)
            )
            .await
            .expect("entries")
            .is_empty()
    );
    assert_eq!(store.users().await.expect("users").len(), 1);
    assert!(store.api_tokens().await.expect("tokens").is_empty());
    assert!(
        store
            .subscriptions()
            .await
            .expect("subscriptions")
            .is_empty()
    );
    assert_eq!(store.audit_head().await.expect("head"), before);

    // Once records can be stored again, the same writes succeed, each with one record that
    // committed with it.
    refuse_audit_records(fixture.dir.path(), false);
    for (write, status) in writes(&fixture, &base, "2").await {
        assert!(status.is_success(), "{write}: {status}");
    }
    let after = before.map_or(0, |(seq, _)| seq);
    let all: Vec<_> = fixture
        .store
        .audit(AuditQuery {
            after,
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
        .into_iter()
        .map(|stored| stored.record)
        .collect();
    let details: Vec<&str> = all.iter().map(|record| record.detail.as_str()).collect();
    assert_eq!(
        details,
        [
            "POST /api/v1/patients, stored with the write",
            "POST /api/v1/devices, stored with the write",
            "POST /api/v1/assignments, stored with the write",
            "POST /api/v1/devices/{id}/credentials, stored with the write",
            "POST /api/v1/measurements, stored with the write",
            "POST /fhir/Observation, stored with the write",
            "POST /api/v1/patients/{id}/observations, stored with the write",
            "POST /api/v1/users, stored with the write",
            "POST /api/v1/users/{id}/tokens, stored with the write",
            "POST /fhir/Subscription, stored with the write",
        ],
        "one record per write, stored with it, and no second one from the gate"
    );
}
