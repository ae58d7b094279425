//! FHIR Subscriptions (R5 Backport IG on R4, rest-hook) end to end against the real binary and a
//! plain HTTP receiver in the test: handshake, filtered event notifications numbered without gaps,
//! full resources, retries after a failed delivery, `$status`, hidden channel headers, survival
//! across a restart, deletion; notification latency measured from the measurement's
//! acknowledgement (target: p99 within 1 s); every Subscription and notification validated by the
//! independent R4 validator. The websocket channel is driven by an independent client, Python
//! `websockets` 13.1 (`tests/interop/fhir_websocket.py`): binding token, handshake, event
//! notification, heartbeat, refused tokens, and events counted while nobody is bound.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{TOKEN, exchange, micros_to_rfc3339, post, start};
use serde_json::{Value, json};

/// What the receiver saw: arrival, headers (lower-cased names) and body.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    headers: Vec<(String, String)>,
    body: Value,
}

/// A minimal HTTP endpoint: answers 200, or 500 while `failures` is above zero.
struct Receiver {
    address: String,
    received: Arc<Mutex<Vec<Received>>>,
    failures: Arc<AtomicU32>,
}

/// Reads one request from `stream`, logs it and answers 200 (or 500 while `failing` is above
/// zero).
fn answer(stream: impl Read + Write, log: &Mutex<Vec<Received>>, failing: &AtomicU32) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if name == "content-length" {
                length = value.trim().parse().unwrap_or(0);
            }
            headers.push((name, value.trim().to_owned()));
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let fail = failing
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(1)
        })
        .is_ok();
    let status = if fail {
        "500 Internal Server Error"
    } else {
        "200 OK"
    };
    if !fail {
        log.lock().expect("log").push(Received {
            at: Instant::now(),
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
    }
    let stream = reader.get_mut();
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let _ = stream.flush();
}

impl Receiver {
    fn start() -> Receiver {
        Receiver::listen(None)
    }

    /// A receiver speaking HTTPS with `tls` (the server's certificate and key).
    fn start_tls(tls: Arc<rustls::ServerConfig>) -> Receiver {
        Receiver::listen(Some(tls))
    }

    fn listen(tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(AtomicU32::new(0));
        let (log, failing) = (received.clone(), failures.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                match &tls {
                    None => answer(stream, &log, &failing),
                    Some(config) => {
                        let Ok(connection) = rustls::ServerConnection::new(config.clone()) else {
                            continue;
                        };
                        answer(rustls::StreamOwned::new(connection, stream), &log, &failing);
                    }
                }
            }
        });
        Receiver {
            address,
            received,
            failures,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("log").clone()
    }

    /// Waits until `check` holds for what was received (at most 15 s).
    fn wait_for(&self, what: &str, check: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let received = self.received();
            if check(&received) {
                return received;
            }
            assert!(Instant::now() < deadline, "{what}: {received:#?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn fhir(address: &str, method: &str, path: &str, body: Option<&Value>) -> common::Answer {
    let body = body.map(Value::to_string);
    exchange(
        address,
        method,
        path,
        &[
            ("Accept", "application/fhir+json"),
            ("Content-Type", "application/fhir+json"),
        ],
        body.as_deref(),
        Some(TOKEN),
    )
}

/// The notification's `Parameters` (first entry) value of `name`.
fn parameter<'a>(bundle: &'a Value, name: &str) -> Option<&'a Value> {
    bundle["entry"][0]["resource"]["parameter"]
        .as_array()?
        .iter()
        .find(|parameter| parameter["name"] == name)
}

fn kind(bundle: &Value) -> String {
    parameter(bundle, "type")
        .and_then(|parameter| parameter["valueCode"].as_str())
        .unwrap_or("")
        .to_owned()
}

/// `(event number, focus reference)` of each event of a notification.
fn events(bundle: &Value) -> Vec<(u64, String)> {
    bundle["entry"][0]["resource"]["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|parameter| parameter["name"] == "notification-event")
        .map(|event| {
            let parts = event["part"].as_array().expect("parts");
            let part = |name: &str| parts.iter().find(|part| part["name"] == name).cloned();
            (
                part("event-number")
                    .and_then(|part| part["valueString"].as_str().and_then(|n| n.parse().ok()))
                    .expect("event number"),
                part("focus")
                    .and_then(|part| {
                        part["valueReference"]["reference"]
                            .as_str()
                            .map(str::to_owned)
                    })
                    .expect("focus"),
            )
        })
        .collect()
}

fn percentile(samples: &mut [f64], quantile: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let index = ((samples.len() as f64 - 1.0) * quantile).round() as usize;
    samples[index.min(samples.len() - 1)]
}

#[test]
fn rest_hook_subscription_end_to_end() {
    const EVENTS: usize = 60;
    let receiver = Receiver::start();
    let directory = tempfile::tempdir().expect("temp dir");
    let mut server = start(directory.path());
    let address = server.address.clone();
    let mut served = Vec::new();

    let patient = |mrn: &str| {
        post(
            &address,
            "/api/v1/patients",
            &json!({
                "identifier": { "system": "urn:mrn", "value": mrn },
                "name": { "family": "Sub", "given": mrn },
                "birth_date": "1950-01-01", "sex": "other", "ward": "ICU", "bed": mrn
            }),
        )["id"]
            .as_i64()
            .expect("patient id")
    };
    let (watched, other) = (patient("S-1"), patient("S-2"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let base = now - 3_600_000_000;
    for (serial, patient) in [("SUB-1", watched), ("SUB-2", other)] {
        let device = post(
            &address,
            "/api/v1/devices",
            &json!({ "serial": serial, "kind": "monitor" }),
        )["id"]
            .as_i64()
            .expect("device id");
        post(
            &address,
            "/api/v1/assignments",
            &json!({ "device": device, "patient": patient, "start": micros_to_rfc3339(base - 60_000_000) }),
        );
    }

    let subscription = json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "watch one patient's heart rate",
        "criteria": "https://galen.invalid/fhir/SubscriptionTopic/vital-sign-observation",
        "_criteria": { "extension": [{
            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria",
            "valueString": format!("Observation?patient=Patient/{watched}&code=http://loinc.org|8867-4")
        }] },
        "channel": {
            "type": "rest-hook",
            "endpoint": format!("http://{}/hook", receiver.address),
            "payload": "application/fhir+json",
            "_payload": { "extension": [{
                "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content",
                "valueCode": "full-resource"
            }] },
            "header": ["Authorization: Bearer hook-secret-42"]
        }
    });
    let created = fhir(&address, "POST", "/fhir/Subscription", Some(&subscription));
    assert_eq!(created.status, 201, "{}", created.body);
    let resource = created.json();
    served.push(resource.to_string());
    let id = resource["id"].as_str().expect("id").to_owned();
    assert_eq!(resource["status"], "requested");
    assert_eq!(
        resource["channel"]["header"],
        json!(["Authorization: (hidden)"])
    );
    assert!(
        !created.body.contains("hook-secret-42"),
        "secrets are never shown"
    );

    // Handshake first, with the channel's header; then the subscription is active.
    let received = receiver.wait_for("a handshake", |received| !received.is_empty());
    assert_eq!(kind(&received[0].body), "handshake");
    assert!(
        received[0]
            .headers
            .iter()
            .any(|(name, value)| name == "authorization" && value == "Bearer hook-secret-42")
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while fhir(&address, "GET", &format!("/fhir/Subscription/{id}"), None).json()["status"]
        != "active"
    {
        assert!(Instant::now() < deadline, "active after the handshake");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Events: the watched patient's heart rates, one per request; noise that must not match
    // (another patient, another code).
    let mut acknowledged = Vec::new();
    let mut expected = Vec::new();
    for index in 0..EVENTS as i64 {
        let time = base + index * 1_000_000;
        let noise = json!([
            { "device": "SUB-2", "code": "heart_rate", "value": 80, "unit": "/min", "time": micros_to_rfc3339(time) },
            { "device": "SUB-1", "code": "spo2", "value": 97, "unit": "%", "time": micros_to_rfc3339(time) }
        ]);
        post(&address, "/api/v1/measurements", &noise);
        let item = json!([{ "device": "SUB-1", "code": "heart_rate", "value": 60 + index % 30, "unit": "/min", "time": micros_to_rfc3339(time) }]);
        post(&address, "/api/v1/measurements", &item);
        acknowledged.push(Instant::now());
        expected.push(time);
    }
    let received = receiver.wait_for("every event", |received| {
        received
            .iter()
            .map(|notification| events(&notification.body).len())
            .sum::<usize>()
            >= EVENTS
    });
    let mut numbers = Vec::new();
    let mut times = Vec::new();
    let mut latencies = Vec::new();
    for notification in received.iter().skip(1) {
        served.push(notification.body.to_string());
        assert_eq!(kind(&notification.body), "event-notification");
        assert_eq!(notification.body["type"], "history");
        for (number, focus) in events(&notification.body) {
            numbers.push(number);
            let time: i64 = focus
                .rsplit('.')
                .next()
                .and_then(|t| t.parse().ok())
                .expect("time in id");
            let index = expected
                .iter()
                .position(|t| *t == time)
                .expect("an expected event");
            latencies.push(
                notification
                    .at
                    .duration_since(acknowledged[index])
                    .as_secs_f64()
                    * 1000.0,
            );
            times.push(time);
        }
        // Full resources follow the status entry, one per event.
        let resources: Vec<&Value> = notification.body["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .skip(1)
            .map(|entry| &entry["resource"])
            .collect();
        assert_eq!(resources.len(), events(&notification.body).len());
        assert!(
            resources
                .iter()
                .all(|resource| resource["resourceType"] == "Observation"
                    && resource["subject"]["reference"] == format!("Patient/{watched}"))
        );
    }
    assert_eq!(
        numbers,
        (1..=EVENTS as u64).collect::<Vec<_>>(),
        "numbered 1.. without gaps or repeats"
    );
    assert_eq!(
        times, expected,
        "only the watched patient's heart rates, in order"
    );
    let p99 = percentile(&mut latencies, 0.99);
    assert!(p99 <= 1000.0, "notification latency p99 {p99:.0} ms");
    eprintln!(
        "notification latency after the measurement's acknowledgement: p50 {:.1} ms, p99 {p99:.1} ms ({} events)",
        percentile(&mut latencies, 0.5),
        latencies.len()
    );

    // A failed delivery is retried (after a second) and the numbering goes on.
    receiver.failures.store(1, Ordering::SeqCst);
    let time = base + EVENTS as i64 * 1_000_000;
    post(
        &address,
        "/api/v1/measurements",
        &json!([{ "device": "SUB-1", "code": "heart_rate", "value": 77, "unit": "/min", "time": micros_to_rfc3339(time) }]),
    );
    let received = receiver.wait_for("the retried notification", |received| {
        received.iter().any(|notification| {
            events(&notification.body)
                .iter()
                .any(|(number, _)| *number == EVENTS as u64 + 1)
        })
    });
    assert_eq!(
        receiver.failures.load(Ordering::SeqCst),
        0,
        "the first attempt failed"
    );
    served.push(received.last().expect("notification").body.to_string());
    let events_now = EVENTS + 1;

    let status = fhir(
        &address,
        "GET",
        &format!("/fhir/Subscription/{id}/$status"),
        None,
    );
    assert_eq!(status.status, 200, "{}", status.body);
    let status = status.json();
    served.push(status.to_string());
    let parameters = &status["entry"][0]["resource"];
    let count = parameters["parameter"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|parameter| parameter["name"] == "events-since-subscription-start")
        .expect("event count")["valueString"]
        .clone();
    assert_eq!(count, json!(events_now.to_string()));

    // A restart keeps the subscription, its status and its numbering.
    server.child.kill().expect("kill");
    let _ = server.child.wait();
    drop(server);
    let server = start(directory.path());
    let address = server.address.clone();
    let read = fhir(&address, "GET", &format!("/fhir/Subscription/{id}"), None);
    assert_eq!(read.status, 200, "{}", read.body);
    served.push(read.body.clone());
    assert_eq!(read.json()["status"], "active");
    let time = base + events_now as i64 * 1_000_000;
    post(
        &address,
        "/api/v1/measurements",
        &json!([{ "device": "SUB-1", "code": "heart_rate", "value": 61, "unit": "/min", "time": micros_to_rfc3339(time) }]),
    );
    // Numbering goes on after the restart, never repeating a number it may have sent before
    // (it resumes after the block of numbers reserved in the store, so it may skip some).
    let received = receiver.wait_for("the event after the restart", |received| {
        received.iter().any(|notification| {
            events(&notification.body).iter().any(|(number, focus)| {
                *number > events_now as u64 && focus.ends_with(&format!(".{time}"))
            })
        })
    });
    served.push(received.last().expect("notification").body.to_string());

    let deleted = fhir(
        &address,
        "DELETE",
        &format!("/fhir/Subscription/{id}"),
        None,
    );
    assert_eq!(deleted.status, 204);
    assert_eq!(
        fhir(&address, "GET", &format!("/fhir/Subscription/{id}"), None).status,
        404
    );

    // Refusals name the element.
    let mut email = subscription.clone();
    email["channel"]["type"] = json!("email");
    let refused = fhir(&address, "POST", "/fhir/Subscription", Some(&email));
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(
        refused.json()["issue"][0]["expression"][0],
        "Subscription.channel.type"
    );
    let mut unknown = subscription.clone();
    unknown["criteria"] = json!("https://example.org/topic/anything");
    assert_eq!(
        fhir(&address, "POST", "/fhir/Subscription", Some(&unknown)).status,
        422
    );

    common::validate_fhir(&served);
}

/// A subscription to `topic` for `patient`'s events, full resources, to `receiver`.
fn clinical_subscription(topic: &str, patient: i64, receiver: &Receiver) -> Value {
    json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "clinical topic",
        "criteria": format!("https://galen.invalid/fhir/SubscriptionTopic/{topic}"),
        "_criteria": { "extension": [{
            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria",
            "valueString": format!("patient=Patient/{patient}")
        }] },
        "channel": {
            "type": "rest-hook",
            "endpoint": format!("http://{}/{topic}", receiver.address),
            "payload": "application/fhir+json",
            "_payload": { "extension": [{
                "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content",
                "valueCode": "full-resource"
            }] }
        }
    })
}

/// The focus resources of the event notifications of `topic` received so far.
fn focus_resources(received: &[Received], topic: &str) -> Vec<Value> {
    received
        .iter()
        .filter(|notification| {
            parameter(&notification.body, "topic")
                .and_then(|topic| topic["valueCanonical"].as_str())
                .is_some_and(|url| url.ends_with(topic))
                && kind(&notification.body) == "event-notification"
        })
        .flat_map(|notification| {
            notification.body["entry"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .skip(1)
                .map(|entry| entry["resource"].clone())
        })
        .collect()
}

#[test]
fn alarm_and_news2_band_topics() {
    let receiver = Receiver::start();
    let directory = tempfile::tempdir().expect("temp dir");
    let config = common::quiet_clinical_config(directory.path());
    let server = common::start_with_args(
        &directory.path().join("data"),
        &["--clinical-config", &config],
    );
    let address = server.address.clone();
    let mut served = Vec::new();
    let patient = post(
        &address,
        "/api/v1/patients",
        &json!({
            "identifier": { "system": "urn:mrn", "value": "TOPIC-1" },
            "name": { "family": "Topic", "given": "T" },
            "birth_date": "1950-01-01", "sex": "other", "ward": "ICU", "bed": "9"
        }),
    )["id"]
        .as_i64()
        .expect("patient id");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let device = post(
        &address,
        "/api/v1/devices",
        &json!({ "serial": "TOPIC-MON", "kind": "monitor" }),
    )["id"]
        .as_i64()
        .expect("device id");
    post(
        &address,
        "/api/v1/assignments",
        &json!({ "device": device, "patient": patient, "start": micros_to_rfc3339(now - 900_000_000) }),
    );
    for topic in ["alarm", "news2-band"] {
        let created = fhir(
            &address,
            "POST",
            "/fhir/Subscription",
            Some(&clinical_subscription(topic, patient, &receiver)),
        );
        assert_eq!(created.status, 201, "{}", created.body);
        served.push(created.body.clone());
    }
    receiver.wait_for("two handshakes", |received| received.len() >= 2);

    // Normal vital signs first (NEWS2 low), then ten rounds that score 8 (high: RCP NEWS2 2017,
    // chart 1), 10 s apart and old enough for the NEWS2 trigger's delay.
    let vitals = |time: i64, values: [f64; 6]| {
        let codes = [
            ("respiratory_rate", "/min"),
            ("spo2", "%"),
            ("systolic_bp", "mmHg"),
            ("diastolic_bp", "mmHg"),
            ("heart_rate", "/min"),
            ("temperature", "Cel"),
        ];
        codes
            .iter()
            .zip(values)
            .map(|((code, unit), value)| {
                json!({ "device": "TOPIC-MON", "code": code, "value": value, "unit": unit, "time": micros_to_rfc3339(time) })
            })
            .collect::<Vec<_>>()
    };
    let start = now - 140_000_000;
    post(
        &address,
        "/api/v1/measurements",
        &Value::Array(vitals(start, [16.0, 97.0, 125.0, 80.0, 70.0, 37.0])),
    );
    let mut items = Vec::new();
    for round in 0..10 {
        items.extend(vitals(
            start + 40_000_000 + round * 10_000_000,
            [24.0, 93.0, 105.0, 70.0, 115.0, 38.4],
        ));
    }
    post(&address, "/api/v1/measurements", &Value::Array(items));

    // The band changed: the last band event's score Observation is in the high band.
    let received = receiver.wait_for("a NEWS2 band event in the high band", |received| {
        focus_resources(received, "news2-band")
            .last()
            .is_some_and(|score| score["interpretation"][0]["coding"][0]["code"] == "high")
    });
    let scores = focus_resources(&received, "news2-band");
    assert!(scores.iter().all(|score| {
        score["resourceType"] == "Observation"
            && score["subject"]["reference"] == format!("Patient/{patient}")
            && score["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("score.news2."))
    }));
    let instants: Vec<&Value> = scores.iter().map(|score| &score["id"]).collect();
    assert!(
        instants.windows(2).all(|pair| pair[0] != pair[1]),
        "one event per instant: {instants:?}"
    );

    // The NEWS2 trigger raised an alarm: its Flag arrives; acknowledging it is another event.
    let received = receiver.wait_for("the raised alarm", |received| {
        !focus_resources(received, "alarm").is_empty()
    });
    let flag = focus_resources(&received, "alarm")[0].clone();
    assert_eq!(flag["resourceType"], "Flag");
    assert_eq!(flag["status"], "active");
    let alarm = flag["id"].as_str().expect("alarm id").to_owned();
    post(
        &address,
        &format!("/api/v1/alarms/{alarm}/acknowledge"),
        &json!({ "by": "nurse.jones", "reason": "at the bedside" }),
    );
    let received = receiver.wait_for("the acknowledgement", |received| {
        focus_resources(received, "alarm").iter().any(|flag| {
            flag["id"] == alarm.as_str()
                && flag["extension"].as_array().is_some_and(|extensions| {
                    extensions
                        .iter()
                        .any(|extension| extension.to_string().contains("\"acknowledged\""))
                })
        })
    });
    for notification in received.iter() {
        served.push(notification.body.to_string());
    }
    common::validate_fhir(&served);
}

/// The independent websocket client, `tests/interop/fhir_websocket.py`, run with `args`; its
/// stdout lines arrive on the returned channel.
fn websocket_client(args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var("GALEN_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let mut child = std::process::Command::new(&python)
        .arg(root.join("tests/interop/fhir_websocket.py"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot run {python} ({error}); run scripts/test (or pip install -r tests/interop/requirements.txt)")
        });
    let stdout = child.stdout.take().expect("stdout");
    let (lines, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    (child, receiver)
}

/// Waits for the client's exit status (at most 30 s).
fn client_exit(child: &mut std::process::Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the websocket client did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Binds with `token` and expects to be refused (OperationOutcome, then close 1008).
fn assert_refused(url: &str, token: &str) -> Value {
    let (mut child, lines) = websocket_client(&["refused", "--url", url, "--token", token]);
    let code = client_exit(&mut child);
    let report: Value = lines
        .recv_timeout(Duration::from_secs(5))
        .ok()
        .and_then(|line| serde_json::from_str(&line).ok())
        .unwrap_or(Value::Null);
    assert_ne!(
        code,
        Some(3),
        "the websockets package is missing: pip install -r tests/interop/requirements.txt"
    );
    assert_eq!(
        code,
        Some(0),
        "refused with an OperationOutcome and close 1008: {report}"
    );
    report
}

/// The next notification Bundle the listening client printed (at most 20 s).
fn next_message(lines: &std::sync::mpsc::Receiver<String>) -> Value {
    let line = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("a notification within 20 s");
    let parsed: Value = serde_json::from_str(&line).expect("one JSON object per line");
    parsed["message"].clone()
}

/// The `events-since-subscription-start` of a notification or `$status` Bundle.
fn events_since(bundle: &Value) -> String {
    parameter(bundle, "events-since-subscription-start")
        .and_then(|parameter| parameter["valueString"].as_str())
        .expect("events-since-subscription-start")
        .to_owned()
}

/// `$get-ws-binding-token`: the answer's `(token, websocket-url)`; the Parameters is kept.
fn binding_token(address: &str, id: &str, served: &mut Vec<String>) -> (String, String) {
    let answer = fhir(
        address,
        "POST",
        &format!("/fhir/Subscription/{id}/$get-ws-binding-token"),
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let parameters = answer.json();
    served.push(parameters.to_string());
    assert_eq!(parameters["resourceType"], "Parameters");
    let value = |name: &str, member: &str| {
        parameters["parameter"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|parameter| parameter["name"] == name)
            .and_then(|parameter| parameter[member].as_str())
            .unwrap_or_else(|| panic!("{name} in {parameters}"))
            .to_owned()
    };
    assert_eq!(
        value("subscription", "valueString"),
        format!("Subscription/{id}")
    );
    assert!(!value("expiration", "valueDateTime").is_empty());
    let token = value("token", "valueString");
    assert!(token.len() >= 32, "a long random token");
    (token, value("websocket-url", "valueUrl"))
}

#[test]
fn websocket_subscription_with_an_independent_client() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = start(directory.path());
    let address = server.address.clone();
    let mut served = Vec::new();
    let patient = post(
        &address,
        "/api/v1/patients",
        &json!({
            "identifier": { "system": "urn:mrn", "value": "WS-1" },
            "name": { "family": "Socket", "given": "W" },
            "birth_date": "1950-01-01", "sex": "other", "ward": "ICU", "bed": "3"
        }),
    )["id"]
        .as_i64()
        .expect("patient id");
    let device = post(
        &address,
        "/api/v1/devices",
        &json!({ "serial": "WS-MON", "kind": "monitor" }),
    )["id"]
        .as_i64()
        .expect("device id");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    post(
        &address,
        "/api/v1/assignments",
        &json!({ "device": device, "patient": patient, "start": micros_to_rfc3339(now - 3_600_000_000) }),
    );

    // A websocket subscription needs no endpoint; heartbeats every second.
    let subscription = json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "a bedside display over a websocket",
        "criteria": "https://galen.invalid/fhir/SubscriptionTopic/vital-sign-observation",
        "_criteria": { "extension": [{
            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria",
            "valueString": format!("Observation?patient=Patient/{patient}")
        }] },
        "channel": {
            "type": "websocket",
            "payload": "application/fhir+json",
            "_payload": { "extension": [{
                "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content",
                "valueCode": "full-resource"
            }] },
            "extension": [{
                "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period",
                "valueUnsignedInt": 1
            }]
        }
    });
    let created = fhir(&address, "POST", "/fhir/Subscription", Some(&subscription));
    assert_eq!(created.status, 201, "{}", created.body);
    served.push(created.body.clone());
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    while fhir(&address, "GET", &format!("/fhir/Subscription/{id}"), None).json()["status"]
        != "active"
    {
        assert!(
            Instant::now() < deadline,
            "active without an endpoint to check"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The token needs the API token; the endpoint needs a websocket client.
    let anonymous = exchange(
        &address,
        "POST",
        &format!("/fhir/Subscription/{id}/$get-ws-binding-token"),
        &[],
        None,
        None,
    );
    assert_eq!(anonymous.status, 401);
    let plain = exchange(&address, "GET", "/fhir/$subscription-ws", &[], None, None);
    assert_eq!(plain.status, 426, "{}", plain.body);
    assert_eq!(plain.json()["resourceType"], "OperationOutcome");
    served.push(plain.body.clone());

    let (token, url) = binding_token(&address, &id, &mut served);
    assert_eq!(url, format!("ws://{address}/fhir/$subscription-ws"));

    // A token Galen did not issue is refused.
    let report = assert_refused(&url, "0123456789abcdef0123456789abcdef");
    served.push(report["outcome"].to_string());

    // Bound: the handshake first, before any event.
    let (mut listener, lines) = websocket_client(&[
        "listen",
        "--url",
        &url,
        "--token",
        &token,
        "--events",
        "1",
        "--heartbeats",
        "1",
    ]);
    let handshake = next_message(&lines);
    assert_eq!(kind(&handshake), "handshake", "{handshake}");
    assert_eq!(handshake["type"], "history");
    assert_eq!(events_since(&handshake), "0");
    served.push(handshake.to_string());
    // A token binds once.
    assert_refused(&url, &token);

    // A heart rate of the patient: an event notification with the new Observation.
    let time = now - 1_000_000;
    post(
        &address,
        "/api/v1/measurements",
        &json!([{ "device": "WS-MON", "code": "heart_rate", "value": 72, "unit": "/min", "time": micros_to_rfc3339(time) }]),
    );
    let focus = format!("Observation/{device}.hr.{time}");
    let mut event = None;
    let mut heartbeat = None;
    while event.is_none() || heartbeat.is_none() {
        let message = next_message(&lines);
        served.push(message.to_string());
        match kind(&message).as_str() {
            "event-notification" => event = Some(message),
            "heartbeat" => heartbeat = Some(message),
            other => panic!("unexpected {other}: {message}"),
        }
    }
    let event = event.expect("an event notification");
    assert_eq!(events(&event), [(1, focus.clone())]);
    let observation = &event["entry"][1]["resource"];
    assert_eq!(observation["resourceType"], "Observation");
    assert_eq!(
        format!("Observation/{}", observation["id"].as_str().expect("id")),
        focus
    );
    assert_eq!(
        observation["subject"]["reference"],
        format!("Patient/{patient}")
    );
    assert_eq!(
        client_exit(&mut listener),
        Some(0),
        "the client saw all it expected"
    );

    // $status counts the event sent over the socket, as for rest-hook.
    let status = |address: &str| {
        let answer = fhir(
            address,
            "GET",
            &format!("/fhir/Subscription/{id}/$status"),
            None,
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()
    };
    let current = status(&address);
    assert_eq!(events_since(&current), "1");
    served.push(current.to_string());

    // Nobody bound: the next event is counted, not kept; binding again, the handshake says how
    // many events there were, so the client knows what to search for.
    post(
        &address,
        "/api/v1/measurements",
        &json!([{ "device": "WS-MON", "code": "heart_rate", "value": 73, "unit": "/min", "time": micros_to_rfc3339(time + 1_000_000) }]),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while events_since(&status(&address)) != "2" {
        assert!(Instant::now() < deadline, "the event is counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (token, url) = binding_token(&address, &id, &mut served);
    let (mut listener, lines) =
        websocket_client(&["listen", "--url", &url, "--token", &token, "--events", "0"]);
    let handshake = next_message(&lines);
    assert_eq!(kind(&handshake), "handshake");
    assert_eq!(events_since(&handshake), "2");
    served.push(handshake.to_string());
    assert_eq!(client_exit(&mut listener), Some(0));

    // A deleted subscription has no binding tokens.
    let deleted = fhir(
        &address,
        "DELETE",
        &format!("/fhir/Subscription/{id}"),
        None,
    );
    assert_eq!(deleted.status, 204);
    let gone = fhir(
        &address,
        "POST",
        &format!("/fhir/Subscription/{id}/$get-ws-binding-token"),
        None,
    );
    assert_eq!(gone.status, 404, "{}", gone.body);
    common::validate_fhir(&served);
}

/// A development CA and a certificate for 127.0.0.1 it signs: (CA PEM, server TLS config).
fn test_ca() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Galen test hospital CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("server key");
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server params");
    let certificate = params.signed_by(&key, &issuer).expect("server certificate");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![certificate.der().clone(), ca.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    (ca.pem(), Arc::new(config))
}

fn subscription_status(address: &str, id: &str) -> String {
    fhir(address, "GET", &format!("/fhir/Subscription/{id}"), None).json()["status"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Rest-hook over HTTPS: delivered when the receiver's CA is trusted (`--outbound-ca`), refused
/// (the subscription goes to `error`, nothing reaches the receiver) when it is not.
#[test]
fn rest_hook_over_https_trusts_the_configured_ca_only() {
    let (ca_pem, tls) = test_ca();
    let receiver = Receiver::start_tls(tls);
    let directory = tempfile::tempdir().expect("temp dir");
    let ca_file = directory.path().join("hospital-ca.pem");
    std::fs::write(&ca_file, &ca_pem).expect("write the CA");
    let endpoint = format!("https://{}/hook", receiver.address);
    let subscription = json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "HTTPS delivery",
        "criteria": "https://galen.invalid/fhir/SubscriptionTopic/vital-sign-observation",
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": { "extension": [{
                "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content",
                "valueCode": "id-only"
            }] }
        }
    });

    let trusting_dir = directory.path().join("trusting");
    let trusting = common::start_with_args(
        &trusting_dir,
        &["--outbound-ca", ca_file.to_str().expect("path")],
    );
    let created = fhir(
        &trusting.address,
        "POST",
        "/fhir/Subscription",
        Some(&subscription),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let received = receiver.wait_for("the handshake over HTTPS", |received| !received.is_empty());
    assert_eq!(
        kind(&received[0].body),
        "handshake",
        "{:?}",
        received[0].body
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while subscription_status(&trusting.address, &id) != "active" {
        assert!(Instant::now() < deadline, "the subscription became active");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(trusting);

    // Without the hospital CA the receiver's certificate is not trusted: no delivery at all.
    let doubting_dir = directory.path().join("doubting");
    let doubting = common::start(&doubting_dir);
    let created = fhir(
        &doubting.address,
        "POST",
        "/fhir/Subscription",
        Some(&subscription),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(40);
    while subscription_status(&doubting.address, &id) != "error" {
        assert!(
            Instant::now() < deadline,
            "the handshake failed and the subscription went to error"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        receiver.received().len(),
        1,
        "only the trusting server's handshake arrived"
    );
}
