//! In-process tests of Galen's HTTP API.
//!
//! Every test builds its own [`App`] over an embedded store in a temporary directory and a
//! [`ManualClock`] standing at [`NOW`], then drives `app.router()` with
//! `tower::ServiceExt::oneshot`, one request per router clone: no sockets, no wall clock. Fixtures
//! (patients, devices, assignments) are registered through the API itself.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use galen_model::{ManualClock, Timestamp};
use galen_server::{App, ServerConfig};
use galen_store::embedded::{SqliteOptions, SqliteStore};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

/// The fixed "now" of every test.
const NOW: &str = "2026-11-23T08:00:00Z";
const TOKEN: &str = "a-very-secret-token-123";
const JSON: Option<&str> = Some("application/json");

fn now() -> Timestamp {
    Timestamp::parse_rfc3339(NOW).expect("NOW is RFC 3339")
}

/// `NOW` moved by `seconds`, formatted the way the API formats times.
fn at(seconds: i64) -> String {
    now().add_seconds(seconds).to_rfc3339()
}

/// One measurement item as a device sends it.
fn item(device: &str, code: &str, value: f64, unit: &str, time: &str) -> Value {
    json!({ "device": device, "code": code, "value": value, "unit": unit, "time": time })
}

/// The same, with the sender's id.
fn item_with_id(device: &str, code: &str, value: f64, unit: &str, time: &str, id: Value) -> Value {
    let mut item = item(device, code, value, unit, time);
    item["id"] = id;
    item
}

fn assert_close(actual: &Value, expected: f64, tolerance: f64) {
    let actual = actual
        .as_f64()
        .unwrap_or_else(|| panic!("expected a number near {expected}, got {actual}"));
    assert!(
        (actual - expected).abs() <= tolerance,
        "expected {expected} (+/- {tolerance}), got {actual}"
    );
}

/// The value of one sample line (`name{labels}`) of a Prometheus text exposition.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("metric {series} missing from:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|error| panic!("metric {series} is not a number: {error}"))
}

/// A whole response, for tests that look at headers.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| Value::String(self.text.clone()))
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("header is text"))
    }
}

struct TestApp {
    app: App,
    clock: Arc<ManualClock>,
    _dir: TempDir,
}

async fn spawn_app() -> TestApp {
    spawn_app_with(ServerConfig {
        api_token: None,
        max_body_bytes: 1024 * 1024,
        stale_after_seconds: 60,
        ..ServerConfig::default()
    })
    .await
}

async fn spawn_app_with(config: ServerConfig) -> TestApp {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open store");
    let clock = Arc::new(ManualClock::new(now()));
    let app = App::new(Arc::new(store), clock.clone(), config)
        .await
        .expect("app starts");
    TestApp {
        app,
        clock,
        _dir: dir,
    }
}

impl TestApp {
    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .app
            .router()
            .oneshot(request)
            .await
            .expect("the router never fails");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("read response body")
            .to_bytes();
        Reply {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// One request; the body parsed as JSON when it is JSON, else as a JSON string.
    async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        let reply = self
            .send(builder.body(body.into()).expect("valid request"))
            .await;
        let json = reply.json();
        (reply.status, json)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, None, Body::empty()).await
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, JSON, body.to_string())
            .await
    }

    async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.request(Method::PUT, path, JSON, body.to_string())
            .await
    }

    async fn ingest(&self, items: &Value) -> (StatusCode, Value) {
        self.post("/api/v1/measurements", items).await
    }

    async fn create_patient(&self, mrn: &str, family: &str, ward: &str, bed: &str) -> i64 {
        let (status, body) = self
            .post("/api/v1/patients", &patient_body(mrn, family, ward, bed))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().expect("patient id")
    }

    async fn create_device(&self, body: &Value) -> i64 {
        let (status, answer) = self.post("/api/v1/devices", body).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        answer["id"].as_i64().expect("device id")
    }

    async fn assign(&self, device: i64, patient: i64, start: &str, end: Option<&str>) -> i64 {
        let (status, body) = self
            .post(
                "/api/v1/assignments",
                &json!({ "device": device, "patient": patient, "start": start, "end": end }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().expect("assignment id")
    }

    /// `(time, value)` of a series answer, checking its shape.
    async fn points(&self, path: &str) -> Vec<(String, f64)> {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["truncated"], json!(false), "{body}");
        body["points"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: no points in {body}"))
            .iter()
            .map(|point| {
                (
                    point["time"].as_str().expect("time").to_owned(),
                    point["value"].as_f64().expect("value"),
                )
            })
            .collect()
    }

    async fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        body.as_str().expect("metrics are text").to_owned()
    }

    async fn dead_letters(&self) -> Vec<Value> {
        let (status, body) = self.get("/api/v1/dead-letters").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["items"].as_array().expect("items").clone()
    }
}

fn patient_body(mrn: &str, family: &str, ward: &str, bed: &str) -> Value {
    json!({
        "identifier": { "system": "urn:oid:1.2.3.4", "value": mrn },
        "name": { "family": family, "given": "Ada" },
        "birth_date": "1950-02-28",
        "sex": "female",
        "ward": ward,
        "bed": bed,
    })
}

/// Reads Server-Sent Events from a streaming response body.
struct SseReader {
    body: Body,
    buffer: String,
    /// Event names to pass over (measurement tests ignore score and alarm events).
    skip: &'static [&'static str],
}

impl SseReader {
    /// The next `(event, data)`, skipping keep-alive comments; `None` when nothing arrives within
    /// `wait` or the stream ends.
    async fn next_event(&mut self, wait: Duration) -> Option<(String, String)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        event = name.trim().to_owned();
                    } else if let Some(text) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(text.strip_prefix(' ').unwrap_or(text));
                    }
                }
                if self.skip.contains(&event.as_str()) {
                    continue;
                }
                if !event.is_empty() || !data.is_empty() {
                    return Some((event, data));
                }
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??
                .expect("stream frame");
            if let Ok(data) = frame.into_data() {
                self.buffer
                    .push_str(std::str::from_utf8(&data).expect("SSE is UTF-8"));
            }
        }
    }

    /// The data of the next `measurements` event, parsed.
    async fn next_measurements(&mut self) -> Vec<Value> {
        let (event, data) = self
            .next_event(Duration::from_secs(5))
            .await
            .expect("an event within 5 s");
        assert_eq!(event, "measurements", "{data}");
        serde_json::from_str::<Value>(&data)
            .expect("event data is JSON")
            .as_array()
            .expect("event data is an array")
            .clone()
    }
}

async fn subscribe(app: &TestApp, path: &str) -> SseReader {
    let response = app
        .app
        .router()
        .oneshot(
            Request::get(path)
                .body(Body::empty())
                .expect("valid request"),
        )
        .await
        .expect("the router never fails");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    SseReader {
        body: response.into_body(),
        buffer: String::new(),
        skip: &["score", "alarm"],
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Registry
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_patients_devices_and_assignments() {
    let app = spawn_app().await;

    // Create: 201 and every field echoed.
    let (status, created) = app
        .post(
            "/api/v1/patients",
            &patient_body("MRN-1", "Lovelace", "ICU", "3"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let first = created["id"].as_i64().expect("id");
    assert_eq!(
        created,
        json!({
            "id": first,
            "identifier": { "system": "urn:oid:1.2.3.4", "value": "MRN-1" },
            "name": { "family": "Lovelace", "given": "Ada" },
            "birth_date": "1950-02-28",
            "sex": "female",
            "ward": "ICU",
            "bed": "3",
        })
    );
    let (status, fetched) = app.get(&format!("/api/v1/patients/{first}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, created);

    // Duplicate identifier: 409, and nothing new stored.
    let (status, body) = app
        .post(
            "/api/v1/patients",
            &patient_body("MRN-1", "Other", "ICU", "4"),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "conflict");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("identifier")
    );

    // Invalid bodies: status, error code and a message naming the problem.
    let valid = patient_body("MRN-9", "Hopper", "ICU", "9");
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    let invalid = [
        (
            with("sex", json!("f")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "sex must be one of",
        ),
        (
            with("birth_date", json!("2026-11-24")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "birth_date",
        ),
        (
            with("birth_date", json!("1950-02-30")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "birth_date",
        ),
        (
            with("ward", json!(" ")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "a bed needs its ward",
        ),
        (
            with("nickname", json!("Amazing Grace")),
            StatusCode::BAD_REQUEST,
            "bad_request",
            // Named by position and the expected fields; what was sent is not repeated.
            "unknown field (not shown), expected one of `identifier`",
        ),
        (
            json!([1, 2]),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "invalid JSON body",
        ),
    ];
    for (body, expect_status, expect_code, expect_message) in invalid {
        let (status, answer) = app.post("/api/v1/patients", &body).await;
        assert_eq!(status, expect_status, "{body} -> {answer}");
        assert_eq!(answer["error"], expect_code, "{body} -> {answer}");
        let message = answer["message"].as_str().expect("message");
        assert!(message.contains(expect_message), "{body} -> {message}");
    }
    // A patient not placed on a ward (home monitoring) has neither ward nor bed.
    let mut at_home = patient_body("MRN-10", "Nightingale", "", "");
    let object = at_home.as_object_mut().expect("object");
    object.remove("ward");
    object.remove("bed");
    let (status, body) = app.post("/api/v1/patients", &at_home).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((&body["ward"], &body["bed"]), (&json!(""), &json!("")));
    // A birth date of today is fine: only future dates are refused.
    let (status, body) = app
        .post("/api/v1/patients", &with("birth_date", json!("2026-11-23")))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let hopper = body["id"].as_i64().expect("id");

    // Wrong content type: 415, nothing stored.
    let (status, body) = app
        .request(
            Method::POST,
            "/api/v1/patients",
            Some("text/plain"),
            patient_body("MRN-415", "Plain", "ICU", "7").to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert_eq!(body["error"], "unsupported_media_type");

    // 404 for a missing patient.
    let (status, body) = app.get("/api/v1/patients/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");

    // List by ward, sorted by bed.
    app.create_patient("MRN-2", "Babbage", "ICU", "1").await;
    app.create_patient("MRN-3", "Turing", "ICU", "2").await;
    app.create_patient("MRN-4", "Noether", "CARDIO", "1").await;
    let beds = |body: &Value| -> Vec<(String, String)> {
        body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|patient| {
                (
                    patient["ward"].as_str().expect("ward").to_owned(),
                    patient["bed"].as_str().expect("bed").to_owned(),
                )
            })
            .collect()
    };
    let (status, body) = app.get("/api/v1/patients?ward=ICU").await;
    assert_eq!(status, StatusCode::OK);
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(ward, bed)| ((*ward).to_owned(), (*bed).to_owned()))
            .collect()
    };
    assert_eq!(
        beds(&body),
        pairs(&[("ICU", "1"), ("ICU", "2"), ("ICU", "3"), ("ICU", "9")])
    );
    let (_, body) = app.get("/api/v1/patients").await;
    assert_eq!(
        beds(&body),
        pairs(&[
            ("", ""),
            ("CARDIO", "1"),
            ("ICU", "1"),
            ("ICU", "2"),
            ("ICU", "3"),
            ("ICU", "9")
        ]),
        "every patient exactly once (the one at home first): the refused ones were not stored"
    );

    // PUT replaces the details.
    let moved = json!({
        "identifier": { "system": "urn:oid:1.2.3.4", "value": "MRN-1" },
        "name": { "family": "King", "given": "Augusta Ada" },
        "birth_date": "1950-02-28",
        "sex": "female",
        "ward": "CARDIO",
        "bed": "2",
    });
    let (status, body) = app.put(&format!("/api/v1/patients/{first}"), &moved).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"]["family"], "King");
    let (_, fetched) = app.get(&format!("/api/v1/patients/{first}")).await;
    assert_eq!(fetched["ward"], "CARDIO");
    assert_eq!(fetched["bed"], "2");
    assert_eq!(fetched["name"]["given"], "Augusta Ada");
    let (_, body) = app.get("/api/v1/patients?ward=CARDIO").await;
    assert_eq!(beds(&body), pairs(&[("CARDIO", "1"), ("CARDIO", "2")]));
    // PUT onto another patient's identifier, or onto a missing patient.
    let (status, _) = app.put(&format!("/api/v1/patients/{hopper}"), &moved).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app.put("/api/v1/patients/999999", &valid).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app
        .put(
            &format!("/api/v1/patients/{first}"),
            &with("sex", json!("x")),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, fetched) = app.get(&format!("/api/v1/patients/{first}")).await;
    assert_eq!(
        fetched["name"]["family"], "King",
        "a refused update changes nothing"
    );

    // Devices: defaults, duplicate serial, bad codes.
    let (status, device) = app
        .post("/api/v1/devices", &json!({ "serial": "SN-1" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{device}");
    let device_id = device["id"].as_i64().expect("id");
    assert_eq!(
        device,
        json!({ "id": device_id, "serial": "SN-1", "manufacturer": "", "model": "", "kind": "other", "status": "active" })
    );
    let full = json!({ "serial": "SN-2", "manufacturer": "Acme", "model": "X1", "kind": "pulse_oximeter", "status": "inactive" });
    let (status, second) = app.post("/api/v1/devices", &full).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["kind"], "pulse_oximeter");
    assert_eq!(second["status"], "inactive");
    assert_eq!(second["manufacturer"], "Acme");
    let second_id = second["id"].as_i64().expect("id");
    let invalid_devices = [
        (
            json!({ "serial": "SN-1", "kind": "monitor" }),
            StatusCode::CONFLICT,
            "conflict",
            "serial",
        ),
        (
            json!({ "serial": "SN-3", "kind": "toaster" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "kind must be one of",
        ),
        (
            json!({ "serial": "SN-3", "status": "broken" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "status must be one of",
        ),
        (
            json!({ "serial": "" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "serial must not be empty",
        ),
        (
            json!({ "serial": "SN-3", "colour": "red" }),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "unknown field (not shown), expected one of `serial`",
        ),
    ];
    for (body, expect_status, expect_code, expect_message) in invalid_devices {
        let (status, answer) = app.post("/api/v1/devices", &body).await;
        assert_eq!(status, expect_status, "{body} -> {answer}");
        assert_eq!(answer["error"], expect_code, "{body} -> {answer}");
        let message = answer["message"].as_str().expect("message");
        assert!(message.contains(expect_message), "{body} -> {message}");
    }
    let (status, fetched) = app.get(&format!("/api/v1/devices/{device_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, device);
    let (status, _) = app.get("/api/v1/devices/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = app.get("/api/v1/devices").await;
    let serials: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|device| device["serial"].as_str().expect("serial"))
        .collect();
    assert_eq!(serials, ["SN-1", "SN-2"]);

    // Assignments.
    let (status, assignment) = app
        .post(
            "/api/v1/assignments",
            &json!({ "device": device_id, "patient": first, "start": at(-3600) }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{assignment}");
    let assignment_id = assignment["id"].as_i64().expect("id");
    assert_eq!(
        assignment,
        json!({ "id": assignment_id, "device": device_id, "patient": first, "start": at(-3600), "end": null })
    );
    let invalid_assignments = [
        // Overlaps the open assignment of the same device.
        (
            json!({ "device": device_id, "patient": hopper, "start": at(-60) }),
            StatusCode::CONFLICT,
        ),
        (
            json!({ "device": device_id, "patient": hopper, "start": at(-7200), "end": at(-3599) }),
            StatusCode::CONFLICT,
        ),
        (
            json!({ "device": 999_999, "patient": hopper }),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({ "device": second_id, "patient": 999_999 }),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({ "device": second_id, "patient": hopper, "start": at(0), "end": at(0) }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "device": second_id, "patient": hopper, "start": "yesterday" }),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (body, expect_status) in invalid_assignments {
        let (status, answer) = app.post("/api/v1/assignments", &body).await;
        assert_eq!(status, expect_status, "{body} -> {answer}");
        assert!(answer["message"].is_string(), "{answer}");
    }
    // Touching the open assignment's start is not an overlap (intervals are half-open).
    let earlier = app
        .assign(device_id, hopper, &at(-7200), Some(&at(-3600)))
        .await;
    // Without a start, an assignment starts now.
    let (status, now_assigned) = app
        .post(
            "/api/v1/assignments",
            &json!({ "device": second_id, "patient": hopper }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{now_assigned}");
    assert_eq!(now_assigned["start"], at(0));

    // End (no body: now), then end again.
    let path = format!("/api/v1/assignments/{assignment_id}/end");
    let (status, ended) = app.request(Method::POST, &path, None, Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert_eq!(ended["end"], at(0));
    assert_eq!(ended["start"], at(-3600));
    let (status, body) = app.request(Method::POST, &path, None, Body::empty()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "conflict");
    let (status, _) = app
        .request(
            Method::POST,
            "/api/v1/assignments/999999/end",
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // What is stored: the ended assignment, the earlier one, the one that started now.
    let (_, list) = app
        .get(&format!("/api/v1/assignments?device={device_id}"))
        .await;
    assert_eq!(
        list["items"],
        json!([
            { "id": assignment_id, "device": device_id, "patient": first, "start": at(-3600), "end": at(0) },
            { "id": earlier, "device": device_id, "patient": hopper, "start": at(-7200), "end": at(-3600) },
        ])
    );
    let (_, list) = app
        .get(&format!("/api/v1/assignments?patient={hopper}"))
        .await;
    assert_eq!(list["items"].as_array().expect("items").len(), 2);
    // After the end, the device is free again from now on.
    app.assign(device_id, hopper, &at(0), None).await;
}

// ---------------------------------------------------------------------------------------------
// 2. Ingest happy path, unit conversion and reads
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_converts_units_and_serves_series_and_buckets() {
    let app = spawn_app().await;
    let patient = app.create_patient("MRN-1", "Lovelace", "ICU", "1").await;
    let device = app
        .create_device(&json!({ "serial": "MON-1", "kind": "monitor" }))
        .await;
    app.assign(device, patient, &at(-3600), None).await;

    let batch = json!([
        item("MON-1", "heart_rate", 72.0, "/min", &at(-60)),
        item("MON-1", "59408-5", 97.0, "%", &at(-60)),
        item("MON-1", "temperature", 98.6, "[degF]", &at(-50)),
        item("MON-1", "8480-6", 16.0, "kPa", &at(-60)),
        item("MON-1", "weight", 150.0, "[lb_av]", &at(-60)),
    ]);
    let (status, body) = app.ingest(&batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 5);
    assert_eq!(body["duplicates"], 0);
    assert_eq!(body["rejected"], 0);
    assert_eq!(body["unassigned"], 0);
    assert_eq!(
        body["results"],
        json!(vec![json!({ "status": "accepted", "patient": patient }); 5])
    );

    let window = format!("from={}&to={}", at(-3600), at(0));
    let (status, series) = app
        .get(&format!(
            "/api/v1/patients/{patient}/vitals?code=temperature&{window}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{series}");
    assert_eq!(series["code"], "temperature");
    assert_eq!(series["loinc"], "8310-5");
    assert_eq!(series["unit"], "Cel");
    assert_eq!(series["patient"], patient);
    assert_eq!(series["from"], at(-3600));
    assert_eq!(series["to"], at(0));
    let points = series["points"].as_array().expect("points");
    assert_eq!(points.len(), 1, "{series}");
    assert_eq!(points[0]["time"], at(-50));
    assert_close(&points[0]["value"], 37.0, 1e-9);

    // Every vital in its canonical unit, whichever code it was sent under.
    let expectations = [
        ("heart_rate", "8867-4", "/min", 72.0, 1e-9),
        ("spo2", "2708-6", "%", 97.0, 1e-9),
        ("59408-5", "2708-6", "%", 97.0, 1e-9),
        ("systolic_bp", "8480-6", "mm[Hg]", 120.0099, 1e-3),
        ("weight", "29463-7", "kg", 68.0389, 1e-3),
    ];
    for (code, loinc, unit, value, tolerance) in expectations {
        let (status, series) = app
            .get(&format!(
                "/api/v1/patients/{patient}/vitals?code={code}&{window}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{code}: {series}");
        assert_eq!(series["loinc"], loinc, "{code}");
        assert_eq!(series["unit"], unit, "{code}");
        let points = series["points"].as_array().expect("points");
        assert_eq!(points.len(), 1, "{code}: {series}");
        assert_eq!(points[0]["time"], at(-60), "{code}");
        assert_close(&points[0]["value"], value, tolerance);
    }
    // The device's own series holds the same values.
    let from_device = app
        .points(&format!("/api/v1/devices/{device}/vitals?code=hr&{window}"))
        .await;
    assert_eq!(from_device, [(at(-60), 72.0)]);
    // Without from/to the window is the last day up to now.
    let default_window = app
        .points(&format!(
            "/api/v1/patients/{patient}/vitals?code=heart_rate"
        ))
        .await;
    assert_eq!(default_window, [(at(-60), 72.0)]);

    // More temperatures: two in the same minute as the first, one in the minute before.
    let (status, body) = app
        .ingest(&json!([
            item("MON-1", "temperature", 36.5, "Cel", &at(-40)),
            item("MON-1", "8310-5", 37.5, "Cel", &at(-30)),
            item("MON-1", "MDC_TEMP_BODY", 38.0, "Cel", &at(-90)),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 3);
    let raw = app
        .points(&format!(
            "/api/v1/patients/{patient}/vitals?code=temperature&{window}"
        ))
        .await;
    let times: Vec<&str> = raw.iter().map(|(time, _)| time.as_str()).collect();
    assert_eq!(times, [at(-90), at(-50), at(-40), at(-30)], "in time order");

    let (status, buckets) = app
        .get(&format!(
            "/api/v1/patients/{patient}/vitals?code=temperature&{window}&bucket=1m"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{buckets}");
    assert_eq!(buckets["bucket_seconds"], 60);
    assert!(buckets.get("points").is_none(), "{buckets}");
    let list = buckets["buckets"].as_array().expect("buckets");
    assert_eq!(list.len(), 2, "{buckets}");
    assert_eq!(list[0]["start"], "2026-11-23T07:58:00.000Z");
    assert_eq!(list[0]["count"], 1);
    assert_close(&list[0]["min"], 38.0, 1e-9);
    assert_close(&list[0]["max"], 38.0, 1e-9);
    assert_close(&list[0]["mean"], 38.0, 1e-9);
    assert_eq!(list[1]["start"], "2026-11-23T07:59:00.000Z");
    assert_eq!(list[1]["count"], 3);
    assert_close(&list[1]["min"], 36.5, 1e-9);
    assert_close(&list[1]["max"], 37.5, 1e-9);
    assert_close(&list[1]["mean"], 37.0, 1e-9);
    // The same statistics computed from the raw points.
    let minute: Vec<f64> = raw
        .iter()
        .filter(|(time, _)| time.starts_with("2026-11-23T07:59"))
        .map(|(_, value)| *value)
        .collect();
    assert_close(&list[1]["mean"], minute.iter().sum::<f64>() / 3.0, 1e-9);

    // Bad read parameters.
    let bad_reads = [
        format!("/api/v1/patients/{patient}/vitals"),
        format!("/api/v1/patients/{patient}/vitals?code=glucose"),
        format!("/api/v1/patients/{patient}/vitals?code=hr&bucket=5x"),
        format!(
            "/api/v1/patients/{patient}/vitals?code=hr&from={}&to={}",
            at(0),
            at(-60)
        ),
        format!("/api/v1/patients/{patient}/vitals?code=hr&from=yesterday"),
    ];
    for path in bad_reads {
        let (status, body) = app.get(&path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"], "bad_request", "{path}");
    }
    let (status, _) = app.get("/api/v1/patients/999999/vitals?code=hr").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "galen_measurements_accepted_total{source=\"http\"}"
        ),
        8.0
    );
    assert_eq!(metric(&metrics, "galen_ingest_requests_total"), 2.0);
}

// ---------------------------------------------------------------------------------------------
// 3. Per-item rejections
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_item_rejections_are_reported_dead_lettered_and_counted() {
    let app = spawn_app().await;
    let patient = app.create_patient("MRN-1", "Lovelace", "ICU", "1").await;
    let device = app.create_device(&json!({ "serial": "MON-1" })).await;
    app.create_device(&json!({ "serial": "ERR-1", "status": "entered-in-error" }))
        .await;
    app.assign(device, patient, &at(-3600), None).await;

    let mut missing_unit = item("MON-1", "heart_rate", 70.0, "/min", &at(-110));
    missing_unit.as_object_mut().expect("object").remove("unit");
    let mut string_value = item("MON-1", "heart_rate", 70.0, "/min", &at(-100));
    string_value["value"] = json!("72");
    // (item, expected reason or None for accepted)
    let cases: Vec<(Value, Option<&str>)> = vec![
        (item("MON-1", "heart_rate", 72.0, "/min", &at(-120)), None),
        (
            item("GHOST-9", "heart_rate", 72.0, "/min", &at(-120)),
            Some("unknown_device"),
        ),
        (
            item("MON-1", "glucose", 5.5, "mmol/L", &at(-120)),
            Some("unknown_code"),
        ),
        (
            item("MON-1", "heart_rate", 72.0, "beats", &at(-119)),
            Some("unknown_unit"),
        ),
        (
            item("MON-1", "heart_rate", 72.0, "kg", &at(-118)),
            Some("wrong_unit"),
        ),
        (item("MON-1", "spo2", 97.0, "%", &at(-120)), None),
        (
            item("MON-1", "spo2", 100.5, "%", &at(-117)),
            Some("implausible_value"),
        ),
        (
            item("MON-1", "respiratory_rate", -2.0, "/min", &at(-117)),
            Some("implausible_value"),
        ),
        (
            item("MON-1", "temperature", 46.0, "Cel", &at(-117)),
            Some("implausible_value"),
        ),
        (
            item("MON-1", "heart_rate", 72.0, "/min", &at(3600)),
            Some("future_time"),
        ),
        (
            item("MON-1", "heart_rate", 72.0, "/min", "2026-11-23T07:58:00"),
            Some("bad_time"),
        ),
        (missing_unit, Some("malformed")),
        (string_value, Some("malformed")),
        (
            item("MON-1", "heart_rate", 8_388_607.0, "/min", &at(-90)),
            Some("data_absent"),
        ),
        (
            item("ERR-1", "heart_rate", 72.0, "/min", &at(-120)),
            Some("device_not_accepting"),
        ),
        (
            item("MON-1", "respiratory_rate", 16.0, "/min", &at(-120)),
            None,
        ),
    ];
    let batch = Value::Array(cases.iter().map(|(item, _)| item.clone()).collect());
    let (status, body) = app.ingest(&batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 3);
    assert_eq!(body["rejected"], 13);
    assert_eq!(body["duplicates"], 0);
    assert_eq!(body["unassigned"], 0);
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), cases.len());
    for ((sent, expected), result) in cases.iter().zip(results) {
        match expected {
            None => assert_eq!(
                result,
                &json!({ "status": "accepted", "patient": patient }),
                "{sent}"
            ),
            Some(reason) => {
                assert_eq!(result["status"], "rejected", "{sent} -> {result}");
                assert_eq!(result["reason"], *reason, "{sent} -> {result}");
                let message = result["message"].as_str().expect("message");
                assert!(!message.is_empty(), "{sent}");
                assert!(result.get("patient").is_none(), "{result}");
            }
        }
    }

    // The valid items of the batch are stored and readable.
    for (code, value) in [
        ("heart_rate", 72.0),
        ("spo2", 97.0),
        ("respiratory_rate", 16.0),
    ] {
        let points = app
            .points(&format!("/api/v1/patients/{patient}/vitals?code={code}"))
            .await;
        assert_eq!(points, [(at(-120), value)], "{code}");
    }
    let temperatures = app
        .points(&format!("/api/v1/devices/{device}/vitals?code=temperature"))
        .await;
    assert!(temperatures.is_empty(), "rejected values are not stored");

    // Every refused item is a dead letter, in order, with its reason and its original text.
    let letters = app.dead_letters().await;
    let rejected: Vec<&(Value, Option<&str>)> = cases
        .iter()
        .filter(|(_, reason)| reason.is_some())
        .collect();
    assert_eq!(letters.len(), rejected.len(), "{letters:#?}");
    let mut previous_id = 0;
    for ((sent, reason), letter) in rejected.iter().zip(&letters) {
        let id = letter["id"].as_i64().expect("id");
        assert!(id > previous_id, "dead letters are listed oldest first");
        previous_id = id;
        assert_eq!(letter["reason"], reason.expect("rejected"), "{letter}");
        assert_eq!(letter["source"], "http");
        assert_eq!(letter["received"], at(0));
        assert_eq!(
            letter["device"], sent["device"],
            "the claimed serial is kept"
        );
        assert!(!letter["message"].as_str().expect("message").is_empty());
        let payload: Value = serde_json::from_str(letter["payload"].as_str().expect("payload"))
            .expect("JSON payload");
        assert_eq!(&payload, sent, "the payload is the item as sent");
    }
    let (_, page) = app
        .get(&format!("/api/v1/dead-letters?after={previous_id}"))
        .await;
    assert_eq!(page["items"], json!([]));
    let (_, page) = app.get("/api/v1/dead-letters?limit=2").await;
    assert_eq!(page["items"].as_array().expect("items").len(), 2);
    assert_eq!(page["next_after"], letters[1]["id"]);

    let metrics = app.metrics().await;
    let expected_counts = [
        ("malformed", 2.0),
        ("unknown_device", 1.0),
        ("device_not_accepting", 1.0),
        ("unknown_code", 1.0),
        ("unknown_unit", 1.0),
        ("wrong_unit", 1.0),
        ("data_absent", 1.0),
        ("implausible_value", 3.0),
        ("bad_time", 1.0),
        ("future_time", 1.0),
        ("too_old", 0.0),
        ("too_large", 0.0),
        ("unsupported_media_type", 0.0),
    ];
    for (reason, count) in expected_counts {
        let series = format!("galen_measurements_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&metrics, &series), count, "{series}");
    }
    assert_eq!(
        metric(
            &metrics,
            "galen_measurements_accepted_total{source=\"http\"}"
        ),
        3.0
    );
    assert_eq!(metric(&metrics, "galen_dead_letters_total"), 13.0);
}

// ---------------------------------------------------------------------------------------------
// 4. Duplicates
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_recognised_by_id_and_by_time() {
    let app = spawn_app().await;
    let patient = app.create_patient("MRN-1", "Lovelace", "ICU", "1").await;
    let device = app.create_device(&json!({ "serial": "MON-1" })).await;
    app.assign(device, patient, &at(-3600), None).await;

    let batch = json!([
        item_with_id("MON-1", "heart_rate", 70.0, "/min", &at(-300), json!("a-1")),
        item_with_id("MON-1", "heart_rate", 71.0, "/min", &at(-240), json!("a-2")),
        item_with_id("MON-1", "spo2", 96.0, "%", &at(-300), json!(3)),
    ]);
    let (status, body) = app.ingest(&batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 3);

    // The same batch again: every item a duplicate, still 200 (nothing was refused).
    let (status, body) = app.ingest(&batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 0);
    assert_eq!(body["duplicates"], 3);
    assert_eq!(body["rejected"], 0);
    assert_eq!(
        body["results"],
        json!(vec![
            json!({ "status": "duplicate", "patient": patient });
            3
        ])
    );

    let single_duplicates = [
        // Same id, different time and value.
        item_with_id("MON-1", "heart_rate", 75.0, "/min", &at(-180), json!("a-1")),
        // A numeric id and the same digits as a string are the same id (kept as text).
        item_with_id("MON-1", "spo2", 95.0, "%", &at(-100), json!("3")),
        // Same device, vital sign and time, different id (and another code for the same vital).
        item_with_id("MON-1", "8867-4", 99.0, "/min", &at(-300), json!("b-9")),
        // Same device, vital sign and time, no id.
        item("MON-1", "spo2", 90.0, "%", &at(-300)),
    ];
    for duplicate in single_duplicates {
        let (status, body) = app.ingest(&json!([duplicate])).await;
        assert_eq!(status, StatusCode::OK, "{duplicate} -> {body}");
        assert_eq!(body["accepted"], 0, "{duplicate} -> {body}");
        assert_eq!(body["duplicates"], 1, "{duplicate} -> {body}");
        assert_eq!(
            body["results"][0],
            json!({ "status": "duplicate", "patient": patient })
        );
    }

    // Within one batch: the second item at the same time is a duplicate of the first.
    let (status, body) = app
        .ingest(&json!([
            item("MON-1", "heart_rate", 80.0, "/min", &at(-60)),
            item("MON-1", "heart_rate", 81.0, "/min", &at(-60)),
            item_with_id("MON-1", "heart_rate", 82.0, "/min", &at(-50), json!("c-1")),
            item_with_id("MON-1", "heart_rate", 83.0, "/min", &at(-40), json!("c-1")),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let statuses: Vec<&str> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|result| result["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["accepted", "duplicate", "accepted", "duplicate"]);

    // What is stored: the first value of each time, nothing from the duplicates.
    let heart_rate = app
        .points(&format!(
            "/api/v1/patients/{patient}/vitals?code=heart_rate"
        ))
        .await;
    assert_eq!(
        heart_rate,
        [
            (at(-300), 70.0),
            (at(-240), 71.0),
            (at(-60), 80.0),
            (at(-50), 82.0)
        ]
    );
    let spo2 = app
        .points(&format!("/api/v1/patients/{patient}/vitals?code=spo2"))
        .await;
    assert_eq!(spo2, [(at(-300), 96.0)]);

    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "galen_measurements_duplicate_total"), 9.0);
    assert_eq!(
        metric(
            &metrics,
            "galen_measurements_accepted_total{source=\"http\"}"
        ),
        5.0
    );
    assert!(
        app.dead_letters().await.is_empty(),
        "duplicates are not dead letters"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Whole-request errors
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_request_errors_are_answered_and_dead_lettered() {
    let app = spawn_app_with(ServerConfig {
        api_token: None,
        max_body_bytes: 4096,
        stale_after_seconds: 60,
        ..ServerConfig::default()
    })
    .await;
    let patient = app.create_patient("MRN-1", "Lovelace", "ICU", "1").await;
    let device = app.create_device(&json!({ "serial": "MON-1" })).await;
    app.assign(device, patient, &at(-3600), None).await;
    let post_raw = |content_type: Option<&'static str>, body: String| {
        let app = &app;
        async move {
            app.request(Method::POST, "/api/v1/measurements", content_type, body)
                .await
        }
    };
    let valid = json!([item("MON-1", "heart_rate", 72.0, "/min", &at(-60))]).to_string();

    let oversize = format!(
        "[{}]",
        vec![item("MON-1", "heart_rate", 72.0, "/min", &at(-60)).to_string(); 60].join(",")
    );
    assert!(oversize.len() > 4096);
    // (content type, body, status, error code, whether the body is kept as the dead letter)
    let refused = [
        (
            JSON,
            r#"[{"device": "MON-1", "code""#.to_owned(),
            StatusCode::BAD_REQUEST,
            "malformed",
            true,
        ),
        (
            JSON,
            item("MON-1", "heart_rate", 72.0, "/min", &at(-60)).to_string(),
            StatusCode::BAD_REQUEST,
            "malformed",
            true,
        ),
        (
            Some("text/plain"),
            valid.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            true,
        ),
        (
            None,
            valid.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            true,
        ),
        // A body over the limit is not read to its end, so it is not kept.
        (
            JSON,
            oversize,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            false,
        ),
    ];
    let mut expected_letters: Vec<(String, String)> = Vec::new();
    for (content_type, body, expect_status, expect_code, kept) in refused {
        let (status, answer) = post_raw(content_type, body.clone()).await;
        assert_eq!(status, expect_status, "{body} -> {answer}");
        assert_eq!(answer["error"], expect_code, "{answer}");
        assert!(!answer["message"].as_str().expect("message").is_empty());
        let payload = if kept { body } else { String::new() };
        expected_letters.push((expect_code.to_owned(), payload));
    }
    let (_, answer) = post_raw(JSON, "x".repeat(5000)).await;
    assert!(
        answer["message"]
            .as_str()
            .expect("message")
            .contains("4096"),
        "the limit is named: {answer}"
    );
    expected_letters.push(("too_large".to_owned(), String::new()));

    // Every item refused: 422, with the per-item results.
    let all_bad = json!([
        item("GHOST-1", "heart_rate", 72.0, "/min", &at(-60)),
        item("MON-1", "glucose", 5.0, "mmol/L", &at(-60)),
        json!(42),
    ]);
    let (status, body) = app.ingest(&all_bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["accepted"], 0);
    assert_eq!(body["rejected"], 3);
    let reasons: Vec<&str> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|result| result["reason"].as_str().expect("reason"))
        .collect();
    assert_eq!(reasons, ["unknown_device", "unknown_code", "malformed"]);
    for (index, reason) in reasons.iter().enumerate() {
        expected_letters.push(((*reason).to_owned(), all_bad[index].to_string()));
    }

    // An empty array is a valid, empty batch.
    let (status, body) = app.ingest(&json!([])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({ "accepted": 0, "duplicates": 0, "rejected": 0, "unassigned": 0, "results": [] })
    );

    // An unknown report mode is refused before anything is read or stored.
    let (status, body) = app
        .request(
            Method::POST,
            "/api/v1/measurements?report=all",
            JSON,
            valid.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "bad_request");

    // The server keeps serving: a valid request succeeds and is readable.
    let (status, body) = post_raw(JSON, valid).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(
        body["results"][0],
        json!({ "status": "accepted", "patient": patient })
    );

    // report=problems: only what was not accepted, each with its index.
    let (status, body) = app
        .request(
            Method::POST,
            "/api/v1/measurements?report=problems",
            JSON,
            json!([
                item("MON-1", "spo2", 97.0, "%", &at(-60)),
                item("MON-1", "glucose", 5.0, "mmol/L", &at(-60)),
                item("MON-1", "respiratory_rate", 14.0, "/min", &at(-60)),
                item("MON-1", "heart_rate", 72.0, "/min", &at(-60)),
            ])
            .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["duplicates"], 1);
    assert_eq!(body["rejected"], 1);
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "{body}");
    assert_eq!(results[0]["index"], 1);
    assert_eq!(results[0]["status"], "rejected");
    assert_eq!(results[0]["reason"], "unknown_code");
    assert_eq!(
        results[1],
        json!({ "status": "duplicate", "patient": patient, "index": 3 })
    );
    expected_letters.push((
        "unknown_code".to_owned(),
        item("MON-1", "glucose", 5.0, "mmol/L", &at(-60)).to_string(),
    ));

    // What was stored.
    let stored = app
        .points(&format!(
            "/api/v1/patients/{patient}/vitals?code=heart_rate"
        ))
        .await;
    assert_eq!(stored, [(at(-60), 72.0)]);
    let letters = app.dead_letters().await;
    let found: Vec<(&str, &str)> = letters
        .iter()
        .map(|letter| {
            (
                letter["reason"].as_str().expect("reason"),
                letter["payload"].as_str().expect("payload"),
            )
        })
        .collect();
    let expected: Vec<(&str, &str)> = expected_letters
        .iter()
        .map(|(reason, payload)| (reason.as_str(), payload.as_str()))
        .collect();
    assert_eq!(found, expected);
    for letter in &letters[..6] {
        assert_eq!(
            letter["device"],
            Value::Null,
            "no device for a request refused whole"
        );
    }

    let metrics = app.metrics().await;
    for (reason, count) in [
        ("malformed", 3.0),
        ("unsupported_media_type", 2.0),
        ("too_large", 2.0),
        ("unknown_device", 1.0),
        ("unknown_code", 2.0),
    ] {
        let series = format!("galen_measurements_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&metrics, &series), count, "{series}");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Unassigned devices and attribution
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unassigned_measurements_are_kept_and_attributed_on_read() {
    let app = spawn_app().await;
    let patient = app.create_patient("MRN-1", "Lovelace", "WARD-1", "1").await;
    let device = app.create_device(&json!({ "serial": "SPOT-1" })).await;

    let (status, body) = app
        .ingest(&json!([item(
            "SPOT-1",
            "heart_rate",
            88.0,
            "/min",
            &at(-600)
        )]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["unassigned"], 1);
    assert_eq!(
        body["results"],
        json!([{ "status": "accepted", "patient": null }])
    );

    // Kept on the device's series, not (yet) on any patient's.
    let on_device = app
        .points(&format!("/api/v1/devices/{device}/vitals?code=heart_rate"))
        .await;
    assert_eq!(on_device, [(at(-600), 88.0)]);
    let (status, series) = app
        .get(&format!("/api/v1/devices/{device}/vitals?code=heart_rate"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(series["device"], device);
    let on_patient = app
        .points(&format!(
            "/api/v1/patients/{patient}/vitals?code=heart_rate"
        ))
        .await;
    assert!(on_patient.is_empty());
    let (status, _) = app
        .get("/api/v1/devices/999999/vitals?code=heart_rate")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "galen_measurements_unassigned_total"), 1.0);

    // An assignment covering the past attributes the stored value on read.
    app.assign(device, patient, &at(-900), None).await;
    let on_patient = app
        .points(&format!(
            "/api/v1/patients/{patient}/vitals?code=heart_rate"
        ))
        .await;
    assert_eq!(on_patient, [(at(-600), 88.0)]);

    // New measurements are attributed at ingest.
    let (status, body) = app
        .ingest(&json!([item(
            "SPOT-1",
            "heart_rate",
            90.0,
            "/min",
            &at(-60)
        )]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["unassigned"], 0);
    assert_eq!(
        body["results"],
        json!([{ "status": "accepted", "patient": patient }])
    );
    let on_patient = app
        .points(&format!(
            "/api/v1/patients/{patient}/vitals?code=heart_rate"
        ))
        .await;
    assert_eq!(on_patient, [(at(-600), 88.0), (at(-60), 90.0)]);
    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "galen_measurements_unassigned_total"), 1.0);
    assert_eq!(
        metric(
            &metrics,
            "galen_measurements_accepted_total{source=\"http\"}"
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measurements_go_to_the_patient_assigned_at_their_time() {
    let app = spawn_app().await;
    let first = app.create_patient("MRN-A", "Alpha", "ICU", "1").await;
    let second = app.create_patient("MRN-B", "Beta", "ICU", "2").await;
    let device = app.create_device(&json!({ "serial": "MON-7" })).await;
    let handover = at(-1800);

    // Patient A from an hour ago until the handover (ended through the API), then patient B.
    let to_first = app.assign(device, first, &at(-3600), None).await;
    let (status, ended) = app
        .post(
            &format!("/api/v1/assignments/{to_first}/end"),
            &json!({ "end": handover }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert_eq!(ended["end"], handover);
    app.assign(device, second, &handover, None).await;

    let cases = [
        (at(-2400), 60.0, first),
        (at(-600), 100.0, second),
        (at(-1801), 61.0, first),
        // The handover instant itself belongs to the new assignment (half-open intervals).
        (handover.clone(), 101.0, second),
    ];
    let batch = Value::Array(
        cases
            .iter()
            .map(|(time, value, _)| item("MON-7", "heart_rate", *value, "/min", time))
            .collect(),
    );
    let (status, body) = app.ingest(&batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 4);
    assert_eq!(body["unassigned"], 0);
    let attributed: Vec<Value> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|result| result["patient"].clone())
        .collect();
    let expected: Vec<Value> = cases.iter().map(|(_, _, patient)| json!(patient)).collect();
    assert_eq!(attributed, expected);

    let window = format!("from={}&to={}", at(-7200), at(0));
    let of_first = app
        .points(&format!(
            "/api/v1/patients/{first}/vitals?code=heart_rate&{window}"
        ))
        .await;
    assert_eq!(of_first, [(at(-2400), 60.0), (at(-1801), 61.0)]);
    let of_second = app
        .points(&format!(
            "/api/v1/patients/{second}/vitals?code=heart_rate&{window}"
        ))
        .await;
    assert_eq!(of_second, [(handover.clone(), 101.0), (at(-600), 100.0)]);
    let of_device = app
        .points(&format!(
            "/api/v1/devices/{device}/vitals?code=heart_rate&{window}"
        ))
        .await;
    assert_eq!(of_device.len(), 4);

    // Buckets respect the assignment bounds too: B's hour holds only B's two values.
    let (status, buckets) = app
        .get(&format!(
            "/api/v1/patients/{second}/vitals?code=heart_rate&{window}&bucket=1h"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{buckets}");
    let total: u64 = buckets["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|bucket| bucket["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(total, 2, "{buckets}");
}

// ---------------------------------------------------------------------------------------------
// 7. Dashboard
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_lists_patients_by_ward_and_bed_with_latest_values() {
    let app = spawn_app_with(ServerConfig {
        api_token: None,
        max_body_bytes: 1024 * 1024,
        stale_after_seconds: 90,
        ..ServerConfig::default()
    })
    .await;
    let zed = app.create_patient("MRN-1", "Zed", "A", "2").await;
    let yan = app.create_patient("MRN-2", "Yan", "B", "1").await;
    let xu = app.create_patient("MRN-3", "Xu", "A", "1").await;
    let wu = app.create_patient("MRN-4", "Wu", "B", "2").await;
    for (serial, patient) in [("MON-X", xu), ("MON-Z", zed), ("MON-Y", yan)] {
        let device = app.create_device(&json!({ "serial": serial })).await;
        app.assign(device, patient, &at(-3600), None).await;
    }
    let (status, body) = app
        .ingest(&json!([
            item("MON-X", "heart_rate", 70.0, "/min", &at(-120)),
            item("MON-X", "heart_rate", 72.0, "/min", &at(-60)),
            item("MON-X", "spo2", 98.0, "%", &at(-120)),
            item("MON-X", "temperature", 98.6, "[degF]", &at(-60)),
            item("MON-Z", "heart_rate", 90.0, "/min", &at(-30)),
            item("MON-Y", "spo2", 91.0, "%", &at(-300)),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 6);

    let (status, dashboard) = app.get("/api/v1/dashboard").await;
    assert_eq!(status, StatusCode::OK, "{dashboard}");
    assert_eq!(dashboard["generated_at"], at(0));
    assert_eq!(dashboard["stale_after_seconds"], 90);
    assert_eq!(dashboard["open_access"], true);
    assert_eq!(dashboard["wards"], json!(["A", "B"]));
    let tiles = dashboard["patients"].as_array().expect("patients");
    let order: Vec<(i64, &str, &str)> = tiles
        .iter()
        .map(|tile| {
            (
                tile["id"].as_i64().expect("id"),
                tile["ward"].as_str().expect("ward"),
                tile["bed"].as_str().expect("bed"),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            (xu, "A", "1"),
            (zed, "A", "2"),
            (yan, "B", "1"),
            (wu, "B", "2")
        ]
    );

    let xu_tile = &tiles[0];
    assert_eq!(xu_tile["name"], "Ada Xu");
    assert_eq!(xu_tile["devices"], json!(["MON-X"]));
    let latest = &xu_tile["latest"];
    assert_eq!(
        latest.as_object().expect("latest").len(),
        3,
        "one value per vital sign: {latest}"
    );
    assert_eq!(
        latest["heart_rate"],
        json!({ "value": 72.0, "unit": "/min", "time": at(-60) })
    );
    assert_eq!(
        latest["spo2"],
        json!({ "value": 98.0, "unit": "%", "time": at(-120) })
    );
    assert_eq!(latest["temperature"]["unit"], "Cel");
    assert_eq!(latest["temperature"]["time"], at(-60));
    assert_close(&latest["temperature"]["value"], 37.0, 1e-9);
    assert_eq!(
        tiles[1]["latest"],
        json!({ "heart_rate": { "value": 90.0, "unit": "/min", "time": at(-30) } })
    );
    assert_eq!(
        tiles[2]["latest"],
        json!({ "spo2": { "value": 91.0, "unit": "%", "time": at(-300) } })
    );
    assert_eq!(tiles[3]["devices"], json!([]));
    assert_eq!(tiles[3]["latest"], json!({}));

    // A newer reading replaces the latest value.
    app.clock.advance_micros(60_000_000);
    let (status, _) = app
        .ingest(&json!([item("MON-X", "heart_rate", 75.0, "/min", &at(30))]))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, dashboard) = app.get("/api/v1/dashboard?ward=B").await;
    assert_eq!(dashboard["generated_at"], at(60));
    assert_eq!(
        dashboard["wards"],
        json!(["A", "B"]),
        "every ward, for the ward picker"
    );
    let ids: Vec<i64> = dashboard["patients"]
        .as_array()
        .expect("patients")
        .iter()
        .map(|tile| tile["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, [yan, wu]);
    let (_, dashboard) = app.get("/api/v1/dashboard?ward=A").await;
    assert_eq!(
        dashboard["patients"][0]["latest"]["heart_rate"]["value"],
        75.0
    );
    let (_, dashboard) = app.get("/api/v1/dashboard?ward=NOWHERE").await;
    assert_eq!(dashboard["patients"], json!([]));
}

// ---------------------------------------------------------------------------------------------
// 8. Live stream
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stream_delivers_committed_measurements_filtered_by_ward() {
    let app = spawn_app().await;
    let icu = app.create_patient("MRN-1", "Lovelace", "ICU", "1").await;
    let cardio = app.create_patient("MRN-2", "Babbage", "CARDIO", "1").await;
    let icu_device = app.create_device(&json!({ "serial": "MON-1" })).await;
    let cardio_device = app.create_device(&json!({ "serial": "MON-2" })).await;
    app.create_device(&json!({ "serial": "SPOT-1" })).await;
    app.assign(icu_device, icu, &at(-3600), None).await;
    app.assign(cardio_device, cardio, &at(-3600), None).await;

    // Everything.
    let mut all = subscribe(&app, "/api/v1/stream").await;
    assert_eq!(metric(&app.metrics().await, "galen_live_subscribers"), 1.0);
    let heart_rate = item("MON-1", "heart_rate", 77.0, "/min", &at(-30));
    let (status, body) = app
        .ingest(&json!([
            heart_rate,
            item("MON-1", "temperature", 98.6, "[degF]", &at(-30))
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = all.next_measurements().await;
    assert_eq!(events.len(), 2, "one event per committed batch: {events:?}");
    assert_eq!(
        events[0],
        json!({ "patient": icu, "device": "MON-1", "code": "heart_rate", "value": 77.0, "unit": "/min", "time": at(-30) })
    );
    assert_eq!(events[1]["code"], "temperature");
    assert_eq!(events[1]["unit"], "Cel");
    assert_close(&events[1]["value"], 37.0, 1e-9);
    // A retry stores nothing and shows nothing; rejected items show nothing either.
    let (status, body) = app
        .ingest(&json!([
            heart_rate,
            item("MON-1", "spo2", 101.0, "%", &at(-30))
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["duplicates"], 1);
    assert!(all.next_event(Duration::from_millis(300)).await.is_none());
    // Unassigned values are on the unfiltered stream, without a patient.
    app.ingest(&json!([item("SPOT-1", "spo2", 93.0, "%", &at(-20))]))
        .await;
    let events = all.next_measurements().await;
    assert_eq!(events[0]["patient"], Value::Null);
    assert_eq!(events[0]["device"], "SPOT-1");
    drop(all);
    assert_eq!(metric(&app.metrics().await, "galen_live_subscribers"), 0.0);

    // One ward: other wards' and unassigned values are not delivered.
    let mut ward = subscribe(&app, "/api/v1/stream?ward=ICU").await;
    let (status, _) = app
        .ingest(&json!([
            item("MON-2", "heart_rate", 66.0, "/min", &at(-10)),
            item("SPOT-1", "heart_rate", 67.0, "/min", &at(-10)),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        ward.next_event(Duration::from_millis(500)).await.is_none(),
        "nothing for another ward"
    );
    let (status, _) = app
        .ingest(&json!([
            item("MON-2", "spo2", 95.0, "%", &at(-5)),
            item("MON-1", "spo2", 99.0, "%", &at(-5)),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK);
    let events = ward.next_measurements().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["patient"], icu);
    assert_eq!(events[0]["value"], 99.0);
}

// ---------------------------------------------------------------------------------------------
// 9. Auth
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_protects_api_pages_and_metrics() {
    let app = spawn_app_with(ServerConfig {
        api_token: Some(TOKEN.to_owned()),
        max_body_bytes: 1024 * 1024,
        stale_after_seconds: 60,
        ..ServerConfig::default()
    })
    .await;
    let mut bodies = Vec::new();
    let request = |method: Method, path: &str, headers: &[(header::HeaderName, String)]| {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        builder.body(Body::empty()).expect("valid request")
    };
    let bearer = |token: &str| vec![(header::AUTHORIZATION, format!("Bearer {token}"))];
    let cookie = |token: &str| vec![(header::COOKIE, format!("theme=dark; galen_session={token}"))];

    // API and metrics: 401 JSON without, or with a wrong, token.
    let refused: [(&str, Vec<(header::HeaderName, String)>); 6] = [
        ("/api/v1/patients", vec![]),
        ("/api/v1/patients", bearer("wrong-token")),
        ("/api/v1/patients", bearer(&TOKEN[..TOKEN.len() - 1])),
        ("/api/v1/patients", cookie("wrong-token")),
        (
            "/api/v1/dashboard",
            vec![(header::AUTHORIZATION, TOKEN.to_owned())],
        ),
        ("/metrics", vec![]),
    ];
    for (path, headers) in &refused {
        let reply = app.send(request(Method::GET, path, headers)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path} {headers:?}");
        assert_eq!(reply.json()["error"], "unauthorized", "{}", reply.text);
        assert_eq!(reply.header(header::WWW_AUTHENTICATE), Some("Bearer"));
        bodies.push(reply.text);
    }
    // Nothing is done for a refused write.
    let mut write = Request::post("/api/v1/devices")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "serial": "SN-1" }).to_string()))
        .expect("valid request");
    let reply = app.send(write).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    // The service token is a bearer token, never a cookie.
    let reply = app
        .send(request(Method::GET, "/api/v1/devices", &cookie(TOKEN)))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    for headers in [bearer(TOKEN)] {
        let reply = app
            .send(request(Method::GET, "/api/v1/devices", &headers))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{headers:?}");
        assert_eq!(
            reply.json(),
            json!({ "items": [] }),
            "the refused write stored nothing"
        );
        bodies.push(reply.text);
    }
    write = Request::post("/api/v1/devices")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(json!({ "serial": "SN-1" }).to_string()))
        .expect("valid request");
    let reply = app.send(write).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    bodies.push(reply.text);
    let reply = app
        .send(request(Method::GET, "/api/v1/dashboard", &bearer(TOKEN)))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["open_access"], false);
    bodies.push(reply.text);
    let reply = app
        .send(request(Method::GET, "/metrics", &bearer(TOKEN)))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    bodies.push(reply.text);

    // An account to sign in with (created with the service token).
    const PASSWORD: &str = "correct horse battery staple";
    let create = Request::post("/api/v1/users")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(
            json!({ "name": "ann", "password": PASSWORD, "role": "nurse", "wards": ["ICU"] })
                .to_string(),
        ))
        .expect("valid request");
    let reply = app.send(create).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert!(!reply.text.contains(PASSWORD) && !reply.text.contains("argon2"));

    // Pages redirect to the login page without a session.
    for path in ["/", "/patients/1"] {
        let reply = app.send(request(Method::GET, path, &[])).await;
        assert!(
            [
                StatusCode::SEE_OTHER,
                StatusCode::TEMPORARY_REDIRECT,
                StatusCode::PERMANENT_REDIRECT
            ]
            .contains(&reply.status),
            "{path}: {}",
            reply.status
        );
        assert_eq!(reply.header(header::LOCATION), Some("/login"), "{path}");
        bodies.push(reply.text);
    }

    // Open: health, readiness, the login page, assets.
    for path in ["/healthz", "/readyz", "/login", "/assets/style.css"] {
        let reply = app.send(request(Method::GET, path, &[])).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        bodies.push(reply.text);
    }
    let reply = app.send(request(Method::GET, "/assets/nope.js", &[])).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    // Login with the account's name and password sets an HttpOnly session cookie.
    let login = |name: &str, password: &str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!(
                "name={name}&password={}",
                password.replace(' ', "+")
            )))
            .expect("valid request")
    };
    let reply = app.send(login("ann", PASSWORD)).await;
    assert!(reply.status.is_redirection(), "{}", reply.status);
    assert_eq!(reply.header(header::LOCATION), Some("/"));
    let set_cookie = reply.header(header::SET_COOKIE).expect("a cookie is set");
    assert!(set_cookie.starts_with("galen_session="), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let session = set_cookie
        .split(';')
        .next()
        .expect("cookie pair")
        .to_owned();
    let with_session = [(header::COOKIE, session.clone())];
    let reply = app.send(request(Method::GET, "/", &with_session)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .header(header::CONTENT_TYPE)
            .is_some_and(|value| value.starts_with("text/html"))
    );
    let reply = app
        .send(request(Method::GET, "/api/v1/session", &with_session))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["actor"], "ann");
    assert_eq!(reply.json()["scope"], json!({ "wards": ["ICU"] }));
    // A nurse may not register devices, nor read the dead letters.
    for (method, path) in [
        (Method::POST, "/api/v1/devices"),
        (Method::GET, "/api/v1/dead-letters"),
        (Method::GET, "/api/v1/users"),
    ] {
        let reply = app.send(request(method, path, &with_session)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
    }
    // Wrong password: 401, no cookie, the same page whatever the cause.
    let wrong = app.send(login("ann", "guess-guess-guess")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.header(header::SET_COOKIE).is_none());
    let unknown = app.send(login("nobody", "guess-guess-guess")).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.text, unknown.text, "no hint which accounts exist");
    bodies.push(wrong.text);
    // Logout ends the session.
    let reply = app
        .send(
            Request::post("/logout")
                .header(header::COOKIE, session.clone())
                .header(header::HOST, "galen.example")
                .header(header::ORIGIN, "https://galen.example")
                .body(Body::empty())
                .expect("valid request"),
        )
        .await;
    assert!(
        reply.status.is_redirection(),
        "{} {}",
        reply.status,
        reply.text
    );
    let reply = app
        .send(request(Method::GET, "/api/v1/session", &with_session))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // Fifteen minutes without a request end a session (automatic logoff); a request before that
    // keeps it alive.
    let reply = app.send(login("ann", PASSWORD)).await;
    let session = reply
        .header(header::SET_COOKIE)
        .and_then(|cookie| cookie.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let with_session = [(header::COOKIE, session)];
    app.clock.advance_micros(14 * 60 * 1_000_000);
    let reply = app
        .send(request(Method::GET, "/api/v1/session", &with_session))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "14 minutes idle");
    app.clock.advance_micros(15 * 60 * 1_000_000 + 1);
    let reply = app
        .send(request(Method::GET, "/api/v1/session", &with_session))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "15 minutes idle");

    // Five failures in a row (the sign-in above cleared the count) lock the account, even
    // against the right password.
    for _ in 0..5 {
        let reply = app.send(login("ann", "guess-guess-guess")).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let reply = app.send(login("ann", PASSWORD)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "locked");
    assert!(reply.header(header::SET_COOKIE).is_none());

    for body in &bodies {
        assert!(
            !body.contains(TOKEN),
            "the token leaked into a body: {body}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Health and metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    let (status, body) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok\n");
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ready\n");

    let patient = app.create_patient("MRN-1", "Lovelace", "ICU", "1").await;
    let device = app.create_device(&json!({ "serial": "MON-1" })).await;
    app.assign(device, patient, &at(-3600), None).await;
    let (status, _) = app
        .ingest(&json!([
            item("MON-1", "heart_rate", 72.0, "/min", &at(-60)),
            item("MON-1", "spo2", 97.0, "%", &at(-60)),
            item("MON-1", "spo2", 197.0, "%", &at(-50)),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK);

    // Counters are recorded before the ingest call is answered: no waiting needed.
    let reply = app
        .send(
            Request::get("/metrics")
                .body(Body::empty())
                .expect("valid request"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let content_type = reply.header(header::CONTENT_TYPE).expect("content type");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = &reply.text;
    for family in [
        "# TYPE galen_store_commit_seconds histogram",
        "# TYPE galen_store_queue_depth gauge",
        "# TYPE galen_store_commit_batch_size summary",
        "# TYPE galen_measurements_rejected_total counter",
    ] {
        assert!(text.contains(family), "{family} missing from:\n{text}");
    }
    let commits = metric(text, "galen_store_commits_total");
    assert!(commits >= 1.0, "{text}");
    assert_eq!(metric(text, "galen_store_commit_seconds_count"), commits);
    assert_eq!(
        metric(text, "galen_store_commit_seconds_bucket{le=\"+Inf\"}"),
        commits
    );
    assert!(metric(text, "galen_store_commit_seconds_sum") >= 0.0);
    assert_eq!(metric(text, "galen_store_queue_depth"), 0.0);
    assert_eq!(metric(text, "galen_store_commit_batch_size_sum"), 2.0);
    assert_eq!(metric(text, "galen_store_commit_batch_size_count"), commits);
    assert_eq!(
        metric(text, "galen_measurements_accepted_total{source=\"http\"}"),
        2.0
    );
    assert_eq!(
        metric(
            text,
            "galen_measurements_rejected_total{reason=\"implausible_value\"}"
        ),
        1.0
    );
    assert_eq!(metric(text, "galen_ingest_requests_total"), 1.0);
    assert_eq!(metric(text, "galen_dead_letters_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_never_shows_the_previous_patients_readings() {
    let app = spawn_app().await;
    let first = app.create_patient("MRN-1", "First", "A", "1").await;
    let second = app.create_patient("MRN-2", "Second", "A", "2").await;
    let device = app.create_device(&json!({ "serial": "MON-1" })).await;
    let assignment = app.assign(device, first, &at(-3600), None).await;
    let (status, _) = app
        .ingest(&json!([item(
            "MON-1",
            "heart_rate",
            140.0,
            "/min",
            &at(-900)
        )]))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .post(
            &format!("/api/v1/assignments/{assignment}/end"),
            &json!({ "end": at(-600) }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.assign(device, second, &at(-600), None).await;

    let tile = |body: &Value, id: i64| {
        body["patients"]
            .as_array()
            .expect("patients")
            .iter()
            .find(|tile| tile["id"] == id)
            .cloned()
            .expect("tile")
    };
    let (_, body) = app.get("/api/v1/dashboard").await;
    assert_eq!(
        tile(&body, second)["latest"],
        json!({}),
        "the new patient has no readings yet"
    );
    assert_eq!(
        tile(&body, first)["latest"],
        json!({}),
        "the first patient has no device any more"
    );

    app.ingest(&json!([item(
        "MON-1",
        "heart_rate",
        75.0,
        "/min",
        &at(-60)
    )]))
    .await;
    let (_, body) = app.get("/api/v1/dashboard").await;
    assert_eq!(tile(&body, second)["latest"]["heart_rate"]["value"], 75.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_and_login_bodies_are_limited() {
    let app = spawn_app_with(ServerConfig {
        api_token: Some(TOKEN.into()),
        max_body_bytes: 1024,
        stale_after_seconds: 60,
        ..ServerConfig::default()
    })
    .await;
    let huge_form = format!("token={}", "x".repeat(4 * 1024 * 1024));
    let (status, _) = app
        .request(
            Method::POST,
            "/login",
            Some("application/x-www-form-urlencoded"),
            huge_form,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "an unauthenticated body is never read whole"
    );
    let mut patient = patient_body("MRN-1", &"F".repeat(2 * 1024 * 1024), "A", "1");
    patient["bed"] = json!("1");
    let request = Request::post("/api/v1/patients")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("bearer {TOKEN}"))
        .body(Body::from(patient.to_string()))
        .expect("valid request");
    assert_eq!(
        app.send(request).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}
