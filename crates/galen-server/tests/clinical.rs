//! The clinical engine inside the runtime: simulated patients end to end (scores, alarms, live
//! events, operator actions), replay equality, the API for overrides and settings, webhooks and
//! restart. Each test has its own store and a manual clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use galen_clinical::{Consciousness, EntryKind, Oxygen, Priority};
use galen_model::{
    DeviceKind, DeviceStatus, HumanName, Identifier, ManualClock, NewAssignment, NewDevice,
    NewPatient, PatientId, Sex, Timestamp,
};
use galen_server::clinical::{TIMER_GRACE_MICROS, records, replay, sign_webhook};
use galen_server::{App, ClinicalSettings, Incoming, ServerConfig, WebhookEndpoint};
use galen_sim::{Scenario, SimConfig, Simulator};
use galen_store::AlarmQuery;
use galen_store::embedded::{SqliteOptions, SqliteStore};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

/// 2026-11-23T08:00:00Z.
const T0: i64 = 1_795_420_800_000_000;
const SECOND: i64 = 1_000_000;

struct Harness {
    app: App,
    clock: Arc<ManualClock>,
    dir: TempDir,
}

async fn open(dir: TempDir, settings: ClinicalSettings, start: i64) -> Harness {
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open store");
    let clock = Arc::new(ManualClock::new(Timestamp::from_micros(start)));
    let config = ServerConfig {
        clinical: settings,
        ..ServerConfig::default()
    };
    let app = App::new(Arc::new(store), clock.clone(), config)
        .await
        .expect("app starts");
    Harness { app, clock, dir }
}

async fn harness() -> Harness {
    open(
        tempfile::tempdir().expect("temporary directory"),
        ClinicalSettings::default(),
        T0,
    )
    .await
}

impl Harness {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map_or_else(Body::empty, |body| Body::from(body.to_string()));
        let response = self
            .app
            .router()
            .oneshot(request.body(body).expect("valid request"))
            .await
            .expect("the router never fails");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    /// Registers a patient with a monitor assigned from an hour before `T0`.
    async fn admit(&self, index: usize, serial: &str) -> PatientId {
        let store = self.app.store();
        let patient = store
            .create_patient(
                NewPatient {
                    identifier: Identifier {
                        system: "urn:oid:1.2.3.4".into(),
                        value: format!("MRN-{index}"),
                    },
                    name: HumanName {
                        family: format!("Family{index}"),
                        given: "Test".into(),
                    },
                    birth_date: NewPatient::parse_birth_date("1950-01-01").expect("date"),
                    sex: Sex::Female,
                    ward: "A".into(),
                    bed: format!("A-{index:02}"),
                },
                Vec::new(),
            )
            .await
            .expect("patient");
        let device = store
            .create_device(
                NewDevice {
                    serial: serial.into(),
                    manufacturer: "Test".into(),
                    model: "MON".into(),
                    kind: DeviceKind::Monitor,
                    status: DeviceStatus::Active,
                },
                Vec::new(),
            )
            .await
            .expect("device");
        store
            .create_assignment(
                NewAssignment {
                    device: device.id,
                    patient: patient.id,
                    start: Timestamp::from_micros(T0 - 3600 * SECOND),
                    end: None,
                },
                Vec::new(),
            )
            .await
            .expect("assignment");
        self.app
            .directory()
            .reload(store.as_ref())
            .await
            .expect("reload");
        patient.id
    }

    /// Ingests one reading through the pipeline, as a device would.
    async fn reading(&self, serial: &str, code: &str, value: f64, unit: &str, time: i64) {
        let items = vec![Ok(Incoming {
            device: serial,
            code,
            value,
            unit,
            time: Timestamp::from_micros(time),
            id: None,
            raw: b"",
        })];
        self.app
            .pipeline()
            .ingest("test", items)
            .await
            .expect("ingest");
    }

    /// Moves the clock and fires timers as the runtime's ticker does.
    async fn tick(&self, now: i64) {
        self.clock.set(Timestamp::from_micros(now));
        self.app
            .clinical()
            .advance(Timestamp::from_micros(now - TIMER_GRACE_MICROS))
            .await
            .expect("advance");
    }

    async fn alarm_log(&self, patient: PatientId) -> Vec<Value> {
        self.app.clinical().sync().await.expect("sync");
        self.get(&format!(
            "/api/v1/alarms/log?patient={}&limit=10000",
            patient.0
        ))
        .await["events"]
            .as_array()
            .expect("events")
            .clone()
    }
}

/// Asserts equality, showing only the first difference (the lists are long).
fn first_difference<T: PartialEq + std::fmt::Debug>(replayed: &[T], stored: &[T], what: &str) {
    if let Some(index) = (0..replayed.len().max(stored.len()))
        .find(|index| replayed.get(*index) != stored.get(*index))
    {
        panic!(
            "replayed {what} differ from the stored ones at {index} of {}/{}:\nreplayed {:?}\nstored   {:?}",
            replayed.len(),
            stored.len(),
            replayed.get(index),
            stored.get(index)
        );
    }
}

fn rules_raised(log: &[Value]) -> Vec<String> {
    log.iter()
        .filter(|event| event["transition"] == "raised")
        .map(|event| event["rule"].as_str().expect("rule").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_ward_scores_alarms_actions_and_replay() {
    let h = harness().await;
    let scenarios = [
        Scenario::Sepsis,
        Scenario::Hypoxia,
        Scenario::Dropout,
        Scenario::Artefact,
        Scenario::Stable,
    ];
    let mut patients = Vec::new();
    for index in 0..scenarios.len() {
        patients.push(h.admit(index, &Simulator::device_serial(index)).await);
    }
    // Admission observations, as a nurse enters them.
    for patient in &patients {
        for kind in [
            EntryKind::Consciousness(Consciousness::Alert),
            EntryKind::Oxygen(Oxygen::Air),
        ] {
            h.app
                .record_entry(*patient, "nurse.admit", kind, None, Vec::new())
                .await
                .expect("entry");
        }
    }
    let mut live = h.app.clinical().subscribe();
    let mut simulator = Simulator::new(SimConfig {
        seed: 11,
        scenarios: scenarios.to_vec(),
        rate_hz: 1.0,
        start_micros: T0,
        scenario_minutes: 30.0,
    });
    let end = T0 + 45 * 60 * SECOND;
    let mut acknowledged = None;
    let mut live_alarms = 0;
    let mut now = T0;
    while now < end {
        now += 5 * SECOND;
        let readings = simulator.step(now);
        let items = readings
            .iter()
            .map(|reading| {
                Ok(Incoming {
                    device: &reading.device_serial,
                    code: reading.code,
                    value: reading.value,
                    unit: reading.unit,
                    time: Timestamp::from_micros(reading.time_micros),
                    id: None,
                    raw: b"",
                })
            })
            .collect();
        h.app.pipeline().ingest("sim", items).await.expect("ingest");
        h.tick(now).await;
        loop {
            match live.try_recv() {
                Ok(event) => live_alarms += usize::from(event.kind == "alarm"),
                Err(tokio::sync::broadcast::error::TryRecvError::Empty) => break,
                Err(other) => panic!("live subscriber: {other}"),
            }
        }
        // The nurse acknowledges the hypoxia alarm once it is there.
        if acknowledged.is_none() && (now - T0) % (60 * SECOND) == 0 {
            let open = h
                .get(&format!("/api/v1/alarms?patient={}", patients[1].0))
                .await;
            if let Some(alarm) = open["alarms"]
                .as_array()
                .expect("alarms")
                .iter()
                .find(|alarm| alarm["rule"] == "limit.spo2.low")
            {
                let id = alarm["alarm"].as_str().expect("id").to_owned();
                let (status, body) = h
                    .call(
                        Method::POST,
                        &format!("/api/v1/alarms/{id}/acknowledge"),
                        Some(
                            json!({ "by": "nurse.jones", "reason": "at the bedside, O2 started" }),
                        ),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                acknowledged = Some(id);
            }
        }
    }
    h.app.clinical().sync().await.expect("sync");

    // Sepsis: NEWS2 from low through medium to high, and the score alarm reaches high.
    let scores = h
        .get(&format!(
            "/api/v1/patients/{}/scores?table=news2&from=2026-11-23T07:00:00Z&to=2026-11-23T09:00:00Z",
            patients[0].0
        ))
        .await;
    let mut bands: Vec<String> = Vec::new();
    for score in scores["scores"].as_array().expect("scores") {
        assert_eq!(score["table_version"], "rcp-2017.1", "{score}");
        let band = score["band"].as_str().expect("band").to_owned();
        if bands.last() != Some(&band) {
            bands.push(band);
        }
    }
    let position = |band: &str| bands.iter().position(|known| known == band);
    let (low, medium, high) = (position("low"), position("medium"), position("high"));
    assert!(
        low.is_some() && low < medium && medium < high,
        "NEWS2 bands of the sepsis patient: {bands:?}"
    );
    let sepsis_log = h.alarm_log(patients[0]).await;
    assert!(
        sepsis_log.iter().any(|event| event["rule"] == "score.news2"
            && event["priority"] == "high"
            && (event["transition"] == "raised" || event["transition"] == "priority_escalated")),
        "NEWS2 alarm reached high: {sepsis_log:#?}"
    );
    assert!(
        rules_raised(&sepsis_log)
            .iter()
            .any(|rule| rule.starts_with("limit.")),
        "a vital-sign limit alarm as well: {:?}",
        rules_raised(&sepsis_log)
    );
    let news2_raise = sepsis_log
        .iter()
        .find(|event| event["rule"] == "score.news2" && event["transition"] == "raised")
        .expect("raised");
    assert!(
        news2_raise["evidence"].as_array().expect("evidence").len() >= 5,
        "a score alarm names the measurements it used: {news2_raise}"
    );
    assert_eq!(news2_raise["config_version"], "galen-default-2026.2");

    // Hypoxia: an SpO2 alarm, acknowledged by a named nurse with a reason.
    let hypoxia_log = h.alarm_log(patients[1]).await;
    assert!(rules_raised(&hypoxia_log).contains(&"limit.spo2.low".to_owned()));
    let id = acknowledged.expect("the hypoxia alarm was raised and acknowledged");
    let ack = hypoxia_log
        .iter()
        .find(|event| event["alarm"] == id.as_str() && event["transition"] == "acknowledged")
        .expect("acknowledgement recorded");
    assert_eq!(ack["actor"], "nurse.jones");
    assert_eq!(ack["reason"], "at the bedside, O2 started");

    // Dropout: loss of data is a technical alarm, which ends when data returns.
    let dropout_log = h.alarm_log(patients[2]).await;
    let silent: Vec<&Value> = dropout_log
        .iter()
        .filter(|event| event["rule"] == "technical.device_silent")
        .collect();
    assert!(
        silent.iter().any(|event| event["transition"] == "raised"),
        "{dropout_log:#?}"
    );
    assert!(silent.iter().any(|event| event["transition"] == "resolved"));
    assert_eq!(silent[0]["kind"], "technical");

    // Artefact spikes are shorter than every condition delay: no physiological alarm at all.
    let artefact_log = h.alarm_log(patients[3]).await;
    assert!(
        artefact_log
            .iter()
            .all(|event| event["kind"] == "technical"),
        "artefact raised: {:?}",
        rules_raised(&artefact_log)
    );
    let stable_log = h.alarm_log(patients[4]).await;
    assert!(
        stable_log.is_empty(),
        "stable raised: {:?}",
        rules_raised(&stable_log)
    );

    // Live subscribers saw the alarm transitions as they happened.
    while let Ok(event) = live.try_recv() {
        live_alarms += usize::from(event.kind == "alarm");
    }
    let stored = h
        .app
        .store()
        .alarm_records(AlarmQuery {
            patient: None,
            after: 0,
            from: Timestamp::from_micros(0),
            to: Timestamp::from_micros(i64::MAX),
            limit: 100_000,
        })
        .await
        .expect("alarm log");
    assert_eq!(
        live_alarms,
        stored.len(),
        "every stored transition was published live"
    );

    // Replaying the stored inputs reproduces every stored score and alarm transition.
    let config = h.app.clinical().config().clone();
    let outputs = replay(
        h.app.store().as_ref(),
        config.clone(),
        Timestamp::from_micros(T0 - 3600 * SECOND),
        Timestamp::from_micros(now - TIMER_GRACE_MICROS),
    )
    .await
    .expect("replay");
    let (replayed_scores, replayed_alarms, replayed_filtered) = records(&config, &outputs);
    let mut stored_alarms: Vec<_> = stored
        .into_iter()
        .map(|mut record| {
            record.seq = 0;
            record
        })
        .collect();
    // Patients are independent: each one's transitions are compared in order (the interleaving
    // of different patients depends on when timers were advanced).
    let mut replayed_alarms = replayed_alarms;
    replayed_alarms.sort_by_key(|record| record.patient);
    stored_alarms.sort_by_key(|record| record.patient);
    first_difference(&replayed_alarms, &stored_alarms, "alarm transitions");
    let mut stored_scores = Vec::new();
    for patient in &patients {
        for table in ["news2", "qsofa", "mews"] {
            stored_scores.extend(
                h.app
                    .store()
                    .scores(
                        *patient,
                        table,
                        Timestamp::from_micros(0),
                        Timestamp::from_micros(i64::MAX),
                        1_000_000,
                    )
                    .await
                    .expect("scores"),
            );
        }
    }
    let key = |record: &galen_store::ScoreRecord| {
        (
            record.patient,
            record.table.clone(),
            record.time,
            record.body.clone(),
        )
    };
    let mut replayed_scores = replayed_scores;
    replayed_scores.sort_by_key(key);
    stored_scores.sort_by_key(key);
    assert!(stored_scores.len() > 100, "{} scores", stored_scores.len());
    first_difference(&replayed_scores, &stored_scores, "scores");

    // Conditions the delays filtered are stored too, and replayed the same.
    let stored_filtered: u64 = h
        .app
        .store()
        .filtered_counts(Timestamp::from_micros(0), Timestamp::from_micros(i64::MAX))
        .await
        .expect("filtered")
        .iter()
        .map(|(_, _, count)| count)
        .sum();
    assert_eq!(stored_filtered, replayed_filtered.len() as u64);

    // The fatigue report counts what happened.
    let report = h
        .get("/api/v1/alarm-report?from=2026-11-23T07:00:00Z&to=2026-11-23T09:00:00Z")
        .await;
    assert_eq!(report["patients"], 5);
    assert!((report["patient_days"].as_f64().expect("days") - 5.0 * 2.0 / 24.0).abs() < 1e-6);
    let spo2 = report["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|row| row["rule"] == "limit.spo2.low" && row["raised"].as_u64() >= Some(1))
        .expect("spo2 row");
    assert!(
        spo2["acknowledged_share"].as_f64().expect("share") > 0.0,
        "{spo2}"
    );
    assert!(
        spo2["time_to_acknowledge_seconds"]["median"].is_number(),
        "{spo2}"
    );
    // The artefact patient's spikes were conditions the delays filtered.
    let effect = report["conditions_filtered_by_delay"]
        .as_array()
        .expect("effect");
    assert!(
        effect
            .iter()
            .any(|row| row["filtered_by_delay"].as_u64() >= Some(1)),
        "{report:#}"
    );
    let _ = h.dir.path();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_actions_overrides_and_settings_through_the_api() {
    let h = harness().await;
    let patient = h.admit(1, "MON-1").await;
    // SpO2 88 for 40 s: past the 15 s delay, re-confirmed by later readings.
    for offset in [0, 10, 20, 40] {
        h.reading("MON-1", "spo2", 88.0, "%", T0 + offset * SECOND)
            .await;
    }
    h.tick(T0 + 41 * SECOND).await;
    let open = h.get("/api/v1/alarms?ward=A").await;
    let alarms = open["alarms"].as_array().expect("alarms");
    assert_eq!(alarms.len(), 1, "{open}");
    let alarm = &alarms[0];
    assert_eq!(alarm["rule"], "limit.spo2.low");
    assert_eq!(alarm["priority"], "medium");
    assert_eq!(alarm["state"], "active");
    assert_eq!(alarm["message"], "SpO2 low: 88 % (limit 90)");
    assert_eq!(
        alarm["raised_at"], "2026-11-23T08:00:20.000Z",
        "raised at onset + delay, re-confirmed"
    );
    let id = alarm["alarm"].as_str().expect("id").to_owned();
    let ack = format!("/api/v1/alarms/{id}/acknowledge");
    let (status, _) = h.call(Method::POST, &ack, Some(json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an action names who acts");
    let (status, body) = h
        .call(Method::POST, &ack, Some(json!({ "by": "nurse.jones" })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["open"]["state"], "acknowledged");
    let (status, _) = h
        .call(Method::POST, &ack, Some(json!({ "by": "nurse.jones" })))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = h
        .call(
            Method::POST,
            "/api/v1/alarms/1-999/acknowledge",
            Some(json!({ "by": "x" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h
        .call(
            Method::POST,
            &format!("/api/v1/alarms/{id}/silence"),
            Some(json!({ "by": "x", "seconds": 3600 })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a pause longer than the maximum is refused"
    );

    // A COPD patient's limit: SpO2 88 is expected. Needs a reason; ends the alarm.
    let limit = format!("/api/v1/patients/{}/limits/limit.spo2.low", patient.0);
    let tiers =
        json!([{ "threshold": 86, "priority": "medium" }, { "threshold": 80, "priority": "high" }]);
    let (status, _) = h
        .call(
            Method::PUT,
            &limit,
            Some(json!({ "by": "dr.house", "tiers": tiers })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an override needs a reason"
    );
    let (status, _) = h
        .call(
            Method::PUT,
            &format!("/api/v1/patients/{}/limits/score.news2", patient.0),
            Some(json!({ "by": "dr.house", "reason": "x", "tiers": [] })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "only limit rules take overrides"
    );
    let (status, view) = h
        .call(
            Method::PUT,
            &limit,
            Some(json!({ "by": "dr.house", "reason": "COPD, target 88-92", "tiers": tiers, "expires": "2026-11-24T08:00:00Z" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["overrides"][0]["author"], "dr.house");
    assert_eq!(view["overrides"][0]["rule"], "limit.spo2.low");
    assert!(
        view["alarms"].as_array().expect("alarms").is_empty(),
        "{view}"
    );
    let log = h.alarm_log(patient).await;
    let transitions: Vec<&str> = log
        .iter()
        .map(|event| event["transition"].as_str().expect("transition"))
        .collect();
    assert_eq!(transitions, ["raised", "acknowledged", "resolved"]);

    // NEWS2 SpO2 scale 2 (a clinical decision with a reason), ACVPU entered by a nurse.
    let view = h
        .get(&format!("/api/v1/patients/{}/clinical", patient.0))
        .await;
    let news2 = &view["scores"][0];
    assert_eq!(news2["table"], "news2");
    assert_eq!(news2["points"][0]["parameter"], "spo2");
    assert_eq!(news2["points"][0]["points"], 3, "88 % on scale 1");
    assert_eq!(news2["complete"], false);
    let (status, _) = h
        .call(
            Method::PUT,
            &format!("/api/v1/patients/{}/spo2-scale", patient.0),
            Some(json!({ "by": "dr.house", "scale": 2 })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a scale change needs a reason"
    );
    let (status, view) = h
        .call(
            Method::PUT,
            &format!("/api/v1/patients/{}/spo2-scale", patient.0),
            Some(json!({ "by": "dr.house", "scale": 2, "reason": "hypercapnic respiratory failure" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["spo2_scale"], 2);
    assert_eq!(
        view["scores"][0]["points"][0]["points"], 0,
        "88 % on scale 2 scores 0"
    );
    let (status, body) = h
        .call(
            Method::POST,
            &format!("/api/v1/patients/{}/observations", patient.0),
            Some(json!({ "by": "nurse.jones", "consciousness": "V", "oxygen": "air" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let news2 = &body["clinical"]["scores"][0];
    let consciousness = news2["points"]
        .as_array()
        .expect("points")
        .iter()
        .find(|points| points["parameter"] == "consciousness")
        .expect("consciousness scored");
    assert_eq!(consciousness["points"], 3);
    let missing: Vec<&str> = news2["missing"]
        .as_array()
        .expect("missing")
        .iter()
        .map(|missing| missing["parameter"].as_str().expect("parameter"))
        .collect();
    assert_eq!(
        missing,
        [
            "respiratory_rate",
            "systolic_bp",
            "heart_rate",
            "temperature"
        ]
    );
    let (status, _) = h
        .call(
            Method::POST,
            &format!("/api/v1/patients/{}/observations", patient.0),
            Some(json!({ "by": "nurse.jones", "consciousness": "sleepy" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let config = h.get("/api/v1/clinical/config").await;
    assert_eq!(config["version"], "galen-default-2026.2");
    assert!(
        config["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .any(|rule| rule["id"] == "technical.device_silent")
    );
    let metrics = h.get("/metrics").await;
    let text = metrics.as_str().expect("text");
    assert!(
        text.contains("galen_alarms_raised_total{priority=\"medium\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_and_recorded() {
    // A receiver that fails the first attempt and accepts the second.
    let received: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>> = Arc::default();
    let captured = received.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let captured = captured.clone();
            async move {
                let mut calls = captured.lock().expect("lock");
                calls.push((headers, body));
                if calls.len() == 1 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    let secret = "a-shared-secret-of-some-length";
    let settings = ClinicalSettings {
        webhooks: vec![WebhookEndpoint {
            name: "pager".into(),
            url: format!("http://{address}/hook"),
            secret: secret.into(),
            min_priority: Priority::Medium,
            max_attempts: 3,
            first_retry: Duration::from_millis(50),
        }],
        ..ClinicalSettings::default()
    };
    let h = open(tempfile::tempdir().expect("dir"), settings, T0).await;
    h.admit(1, "MON-1").await;
    for offset in [0, 10, 20] {
        h.reading("MON-1", "spo2", 80.0, "%", T0 + offset * SECOND)
            .await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while received.lock().expect("lock").len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no retry arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = received.lock().expect("lock").clone();
    let (headers, body) = &calls[1];
    let timestamp: i64 = headers["galen-timestamp"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    assert_eq!(
        headers["galen-signature"].to_str().expect("ascii"),
        sign_webhook(secret.as_bytes(), timestamp, body.as_bytes()),
        "the signature verifies with the shared secret"
    );
    assert_ne!(
        headers["galen-signature"].to_str().expect("ascii"),
        sign_webhook(b"another secret entirely", timestamp, body.as_bytes())
    );
    let event: Value = serde_json::from_str(body).expect("JSON");
    assert_eq!(event["transition"], "raised");
    assert_eq!(event["priority"], "high");
    assert_eq!(event["rule"], "limit.spo2.low");
    assert_eq!(calls[0].1, *body, "the retry sends the same event");
    // The receiver answered before the attempt was recorded: wait for the record.
    let deliveries = loop {
        let answer = h.get("/api/v1/webhooks/deliveries").await;
        let deliveries = answer["deliveries"].as_array().expect("deliveries").clone();
        if deliveries.len() >= 2 {
            break deliveries;
        }
        assert!(tokio::time::Instant::now() < deadline, "{deliveries:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    assert_eq!(deliveries[0]["status"], 503);
    assert_eq!(deliveries[0]["delivered"], false);
    assert_eq!(deliveries[1]["attempt"], 2);
    assert_eq!(deliveries[1]["delivered"], true);
    assert!(
        !deliveries[1].to_string().contains(secret),
        "secrets are never recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_alarms_and_settings_survive_a_restart() {
    let h = harness().await;
    let patient = h.admit(1, "MON-1").await;
    for offset in [0, 10, 20] {
        h.reading("MON-1", "heart_rate", 150.0, "/min", T0 + offset * SECOND)
            .await;
    }
    h.app
        .record_entry(
            patient,
            "dr.house",
            EntryKind::Spo2Scale(galen_clinical::Spo2Scale::Scale2),
            Some("COPD".into()),
            Vec::new(),
        )
        .await
        .expect("scale");
    h.app.clinical().sync().await.expect("sync");
    let before = h.get("/api/v1/alarms").await;
    assert_eq!(before["alarms"][0]["rule"], "limit.heart_rate.high");
    assert_eq!(before["alarms"][0]["priority"], "high");
    let Harness { app, dir, .. } = h;
    app.store().close().await.expect("close");
    drop(app);

    let h = open(dir, ClinicalSettings::default(), T0 + 30 * SECOND).await;
    let after = h.get("/api/v1/alarms").await;
    assert_eq!(
        after["alarms"], before["alarms"],
        "open alarms are restored as they were"
    );
    let view = h
        .get(&format!("/api/v1/patients/{}/clinical", patient.0))
        .await;
    assert_eq!(view["spo2_scale"], 2, "settings are restored");
    assert_eq!(
        view["readings"]["heart_rate"]["value"], 150.0,
        "recent readings warm the engine"
    );
    // The restored alarm is still the same alarm: acknowledging works, and a still-present
    // condition does not raise a duplicate.
    h.reading("MON-1", "heart_rate", 151.0, "/min", T0 + 40 * SECOND)
        .await;
    let id = after["alarms"][0]["alarm"].as_str().expect("id").to_owned();
    let (status, body) = h
        .call(
            Method::POST,
            &format!("/api/v1/alarms/{id}/acknowledge"),
            Some(json!({ "by": "nurse.jones" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let open = h.get("/api/v1/alarms").await;
    assert_eq!(
        open["alarms"].as_array().expect("alarms").len(),
        1,
        "{open}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_runtime_ticker_fires_escalation_on_its_own_under_paused_time() {
    let h = harness().await;
    let patient = h.admit(1, "MON-1").await;
    for offset in [0, 10, 20] {
        h.reading("MON-1", "spo2", 80.0, "%", T0 + offset * SECOND)
            .await;
    }
    h.app.clinical().sync().await.expect("sync");
    let log = h.alarm_log(patient).await;
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0]["priority"], "high");
    // Two minutes later (plus the grace) nobody has acknowledged: the runtime's own tick, not the
    // test, fires the escalation timer, stamped with its due time.
    h.clock.set(Timestamp::from_micros(
        T0 + 20 * SECOND + 120 * SECOND + TIMER_GRACE_MICROS,
    ));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let log = h.alarm_log(patient).await;
    let escalated: Vec<&Value> = log
        .iter()
        .filter(|event| event["transition"] == "escalated")
        .collect();
    assert_eq!(escalated.len(), 1, "{log:#?}");
    assert_eq!(escalated[0]["role"], "charge_nurse");
    assert_eq!(
        log[0]["time"], "2026-11-23T08:00:20.000Z",
        "raised by the confirming reading"
    );
    assert_eq!(escalated[0]["time"], "2026-11-23T08:02:20.000Z");
}
