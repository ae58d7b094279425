//! Galen's MQTT listener against MQTT clients it shares no code with: Eclipse Paho's MQTT 5 and
//! 3.1.1 clients (`tests/interop/mqtt_devices.py`, Python) and Mosquitto's `mosquitto_pub`. The
//! real `galen serve` runs with a data directory of its own; what the clients were told (CONNACK,
//! PUBACK, SUBACK, DISCONNECT) is checked on their side, and what Galen kept — measurements, dead
//! letters, metrics — is read back over HTTP here, so an acknowledgement is held to what is stored.
//!
//! Needs `python3` with `pip install -r tests/interop/requirements.txt` (`GALEN_PYTHON` names
//! another interpreter) and `mosquitto_pub` (Debian: mosquitto-clients). A missing one fails the
//! test, saying what to install: a silently skipped interoperability test proves nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Server, micros_to_rfc3339, post, request, start_with_args};
use serde_json::{Value, json};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/interop/mqtt_devices.py"
);
const TEMPLATES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../templates");
const HOUR_MICROS: i64 = 3600 * 1_000_000;

/// The Python that runs the script, after checking that it has paho-mqtt.
fn python() -> String {
    let python = std::env::var("GALEN_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let probe = Command::new(&python)
        .args(["-c", "import paho.mqtt; print(paho.mqtt.__version__)"])
        .output();
    match probe {
        Ok(output) if output.status.success() => python,
        Ok(output) => panic!(
            "{python} has no paho-mqtt ({}); run: pip install -r tests/interop/requirements.txt",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ),
        Err(error) => panic!(
            "cannot run {python} ({error}); install Python 3, then: pip install -r tests/interop/requirements.txt"
        ),
    }
}

/// `galen serve` with MQTT on a free port (and no MLLP); returns the server and `HOST:PORT`.
fn start_mqtt(data_dir: &Path, extra: &[&str]) -> (Server, String) {
    let mut args = vec!["--mqtt-addr", "127.0.0.1:0", "--mllp-addr", "off"];
    args.extend_from_slice(extra);
    let server = start_with_args(data_dir, &args);
    let mqtt = server
        .mqtt
        .clone()
        .expect("galen serve printed no `MQTT at mqtt://` line");
    (server, mqtt)
}

struct Device {
    id: i64,
    serial: String,
    secret: String,
    credential: i64,
}

/// Registers an active device and issues it a credential.
fn register(server: &Server, serial: &str) -> Device {
    let device = post(
        &server.address,
        "/api/v1/devices",
        &json!({
            "serial": serial,
            "manufacturer": "Interop",
            "model": "MQTT test device",
            "kind": "monitor",
            "status": "active",
        }),
    );
    let id = device["id"].as_i64().expect("device id");
    let credential = post(
        &server.address,
        &format!("/api/v1/devices/{id}/credentials"),
        &json!({}),
    );
    Device {
        id,
        serial: serial.to_owned(),
        secret: credential["secret"]
            .as_str()
            .expect("secret shown once")
            .to_owned(),
        credential: credential["id"].as_i64().expect("credential id"),
    }
}

/// Runs the script; panics with its output unless it exits 0.
fn script(python: &str, args: &[&str]) -> String {
    let output = Command::new(python)
        .arg(SCRIPT)
        .args(args)
        .output()
        .expect("run mqtt_devices.py");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "mqtt_devices.py {} exited with {}\n--- stdout\n{stdout}\n--- stderr\n{}",
        args.first().copied().unwrap_or_default(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn now_micros() -> i64 {
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
    i64::try_from(now).expect("a time in range")
}

fn parse_micros(text: &str) -> i64 {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|error| panic!("stored time {text:?}: {error}"));
    i64::try_from(time.unix_timestamp_nanos() / 1000).expect("a time in range")
}

/// A device's stored points of `code` in `[from, to)`: `(time in µs, value)`, by time.
fn stored(server: &Server, device: i64, code: &str, from: i64, to: i64) -> Vec<(i64, f64)> {
    let path = format!(
        "/api/v1/devices/{device}/vitals?code={code}&from={}&to={}",
        micros_to_rfc3339(from),
        micros_to_rfc3339(to)
    );
    let (status, body) = request(&server.address, "GET", &path, None).expect("GET vitals");
    assert_eq!(status, 200, "{path}: {body}");
    let answer: Value = serde_json::from_str(&body).expect("vitals JSON");
    assert_eq!(answer["truncated"], json!(false), "{path}");
    answer["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|point| {
            (
                parse_micros(point["time"].as_str().expect("time")),
                point["value"].as_f64().expect("value"),
            )
        })
        .collect()
}

/// Every dead letter, oldest first.
fn dead_letters(server: &Server) -> Vec<Value> {
    let mut letters = Vec::new();
    let mut after = 0;
    loop {
        let path = format!("/api/v1/dead-letters?after={after}&limit=1000");
        let (status, body) = request(&server.address, "GET", &path, None).expect("dead letters");
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).expect("dead letters JSON");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            return letters;
        }
        after = page["next_after"].as_i64().expect("next_after");
        letters.extend(items);
    }
}

/// Dead letters from MQTT by reason.
fn mqtt_dead_letters(server: &Server) -> BTreeMap<String, Vec<Value>> {
    let mut by_reason: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for letter in dead_letters(server) {
        if letter["source"] == "mqtt" {
            let reason = letter["reason"].as_str().unwrap_or_default().to_owned();
            by_reason.entry(reason).or_default().push(letter);
        }
    }
    by_reason
}

/// `galen_protocol_events_total{protocol="mqtt",event="..."}`, 0 when absent.
fn mqtt_event(server: &Server, event: &str) -> u64 {
    let (status, body) = request(&server.address, "GET", "/metrics", None).expect("metrics");
    assert_eq!(status, 200);
    let series = format!("galen_protocol_events_total{{protocol=\"mqtt\",event=\"{event}\"}} ");
    body.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |count| count.trim().parse().expect("a counter"))
}

#[test]
fn paho_devices_over_mqtt_5_and_3_1_1() {
    let python = python();
    let directory = tempfile::tempdir().expect("temp dir");
    let (server, mqtt) = start_mqtt(directory.path(), &[]);
    let a = register(&server, "PAHO-A-0001");
    let b = register(&server, "PAHO-B-0002");
    let started = now_micros();

    let stdout = script(
        &python,
        &[
            "checks",
            "--mqtt",
            &mqtt,
            "--serial-a",
            &a.serial,
            "--secret-a",
            &a.secret,
            "--serial-b",
            &b.serial,
            "--secret-b",
            &b.secret,
        ],
    );
    eprintln!("{stdout}");
    let expected: Value = stdout
        .lines()
        .find_map(|line| line.strip_prefix("EXPECTED "))
        .map(|json| serde_json::from_str(json).expect("EXPECTED json"))
        .unwrap_or_else(|| panic!("no EXPECTED line:\n{stdout}"));

    // Exactly what the script says Galen accepted is stored: nothing lost, nothing doubled (QoS 2,
    // the batch), nothing of A's under B or of B's under A, nothing refused kept as data.
    // A: per protocol one QoS 1, one good item beside a refused one, one QoS 2, a batch of 50,
    // one after a session takeover; under MQTT 5 one more after the refused cross-device publish.
    for (device, count) in [(&a, 2 * 54 + 1), (&b, 2)] {
        let want: BTreeSet<(i64, u64)> = expected[&device.serial]
            .as_array()
            .unwrap_or_else(|| panic!("nothing expected for {}:\n{stdout}", device.serial))
            .iter()
            .map(|item| {
                assert_eq!(item["code"], "heart_rate");
                let millis = item["time_ms"].as_i64().expect("time_ms");
                let value = item["value"].as_f64().expect("value");
                (millis * 1000, value.to_bits())
            })
            .collect();
        assert_eq!(want.len(), count, "the script's plan for {}", device.serial);
        let points = stored(
            &server,
            device.id,
            "heart_rate",
            started - HOUR_MICROS,
            now_micros() + HOUR_MICROS,
        );
        let got: BTreeSet<(i64, u64)> = points
            .iter()
            .map(|(time, value)| (*time, value.to_bits()))
            .collect();
        assert_eq!(got.len(), points.len(), "duplicate times stored");
        let missing: Vec<_> = want.difference(&got).collect();
        let extra: Vec<_> = got.difference(&want).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{}: {} stored, {} expected; missing {missing:?}; unexpected {extra:?}",
            device.serial,
            got.len(),
            want.len()
        );
    }

    // Refused data is kept, with the reason.
    let letters = mqtt_dead_letters(&server);
    let count = |reason: &str| letters.get(reason).map_or(0, Vec::len);
    // One cross-device publish per protocol.
    assert_eq!(count("forbidden"), 2, "{letters:#?}");
    for letter in &letters["forbidden"] {
        assert_eq!(letter["device"], json!(b.serial), "{letter}");
    }
    // Per protocol: a truncated object and plain text.
    assert_eq!(count("malformed"), 4, "{letters:#?}");
    // Per protocol: one beside a good item, one alone.
    assert_eq!(count("unknown_code"), 4, "{letters:#?}");
    assert_eq!(letters.len(), 3, "unexpected reasons: {letters:#?}");

    // The listener counted what it refused.
    for (event, at_least) in [
        ("connect_refused", 4),
        ("forbidden_topic", 2),
        ("subscribe_refused", 4),
        ("session_taken_over", 2),
        ("payload_invalid", 2),
        ("all_items_refused", 1),
        ("published_in_part", 1),
    ] {
        let seen = mqtt_event(&server, event);
        assert!(seen >= at_least, "mqtt event {event}: {seen} < {at_least}");
    }
}

/// Runs `mosquitto_pub` with `args`.
fn mosquitto_pub(args: &[&str]) -> Output {
    Command::new("mosquitto_pub")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run mosquitto_pub ({error}); install it (Debian: apt-get install mosquitto-clients)")
        })
}

#[test]
fn mosquitto_pub_is_acknowledged_and_a_wrong_password_refused() {
    let directory = tempfile::tempdir().expect("temp dir");
    let (server, mqtt) = start_mqtt(directory.path(), &[]);
    let (host, port) = mqtt.rsplit_once(':').expect("HOST:PORT");
    let device = register(&server, "MOSQ-0001");
    let topic = format!("galen/v1/devices/{}/measurements", device.serial);
    let start = now_micros() - 60 * 1_000_000;
    let publish = |version: &str, secret: &str, time: i64, value: u32| {
        let payload = json!({
            "code": "heart_rate",
            "value": value,
            "unit": "/min",
            "time": micros_to_rfc3339(time),
        })
        .to_string();
        mosquitto_pub(&[
            "-h",
            host,
            "-p",
            port,
            "-V",
            version,
            "-q",
            "1",
            "-i",
            &format!("mosquitto-{version}-{value}"),
            "-u",
            &device.serial,
            "-P",
            secret,
            "-t",
            &topic,
            "-m",
            &payload,
        ])
    };

    let mut want = Vec::new();
    for (index, version) in ["mqttv311", "mqttv5"].into_iter().enumerate() {
        let time = start + i64::try_from(index).expect("small") * 1_000_000;
        let value = 61 + u32::try_from(index).expect("small");
        let output = publish(version, &device.secret, time, value);
        assert!(
            output.status.success(),
            "mosquitto_pub -V {version}: {output:?}"
        );
        want.push((time, f64::from(value)));
        let wrong = publish(version, "gds1_not-the-secret", time + 1, 99);
        assert!(
            !wrong.status.success(),
            "mosquitto_pub -V {version} with a wrong password exited 0"
        );
    }
    let points = stored(
        &server,
        device.id,
        "heart_rate",
        start - 1,
        now_micros() + 1,
    );
    assert_eq!(points, want, "stored from mosquitto_pub");

    // A revoked credential no longer connects.
    let (status, body) = request(
        &server.address,
        "DELETE",
        &format!(
            "/api/v1/devices/{}/credentials/{}",
            device.id, device.credential
        ),
        None,
    )
    .expect("revoke");
    assert_eq!(status, 200, "{body}");
    for version in ["mqttv311", "mqttv5"] {
        let output = publish(version, &device.secret, start + 10_000_000, 70);
        assert!(
            !output.status.success(),
            "mosquitto_pub -V {version} with a revoked secret exited 0"
        );
    }
    assert_eq!(
        stored(
            &server,
            device.id,
            "heart_rate",
            start - 1,
            now_micros() + 1
        )
        .len(),
        2
    );
    assert!(mqtt_event(&server, "connect_refused") >= 4);
}

/// The times (ms) in the durability script's record, complete lines only.
fn acknowledged(record: &Path) -> Vec<i64> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|line| line.trim().parse().expect("a time in ms"))
        .collect()
}

#[test]
fn mqtt_acknowledged_messages_survive_kill_9() {
    const COUNT: usize = 300;
    let python = python();
    let directory = tempfile::tempdir().expect("temp dir");
    let scratch = tempfile::tempdir().expect("temp dir");
    let record = scratch.path().join("acked.txt");
    let (mut server, mqtt) = start_mqtt(directory.path(), &[]);
    let device = register(&server, "DURABLE-0001");
    let started = now_micros();

    let mut publisher = Command::new(&python)
        .arg(SCRIPT)
        .args(["durability", "--mqtt", &mqtt, "--serial", &device.serial])
        .args(["--secret", &device.secret, "--count", &COUNT.to_string()])
        .arg("--acked")
        .arg(&record)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mqtt_devices.py durability");
    // Kill the server while messages are in flight: once a third are acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged(&record).len() < COUNT / 3
        && publisher.try_wait().expect("poll the script").is_none()
    {
        assert!(Instant::now() < deadline, "no progress in 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.child.kill().expect("kill -9 galen");
    server.child.wait().expect("reap galen");
    let output = publisher.wait_with_output().expect("the script ends");
    let report = format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "durability script: {}\n{report}",
        output.status
    );
    let acked = acknowledged(&record);
    assert!(!acked.is_empty(), "nothing acknowledged\n{report}");
    drop(server);

    let (server, _) = start_mqtt(directory.path(), &[]);
    let points = stored(
        &server,
        device.id,
        "heart_rate",
        started - HOUR_MICROS,
        now_micros() + HOUR_MICROS,
    );
    let times: BTreeSet<i64> = points.iter().map(|(time, _)| *time).collect();
    let lost: Vec<&i64> = acked
        .iter()
        .filter(|millis| !times.contains(&(**millis * 1000)))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost after kill -9: {lost:?}",
        lost.len(),
        acked.len()
    );
    assert!(points.len() >= acked.len() && points.len() <= COUNT);
    assert_eq!(times.len(), points.len(), "duplicate times stored");
    eprintln!(
        "kill -9 after {} of {COUNT} acknowledged; {} stored after restart",
        acked.len(),
        points.len()
    );
}

/// One measurement expected from a mapped payload: code, time (µs), value.
type Expected = (&'static str, i64, f64);

#[test]
fn mapping_templates_over_mqtt() {
    let shipped = ["ble-health-gateway", "pulse-oximeter-hub", "smart-scale"];
    let templates = Path::new(TEMPLATES);
    for name in shipped {
        assert!(
            templates.join(format!("{name}.toml")).exists(),
            "the shipped template {name} is not in {TEMPLATES}"
        );
    }
    let python = python();
    // The server reads a copy, so that a broken template can be added for the reload check.
    let template_dir = tempfile::tempdir().expect("temp dir");
    for name in shipped {
        let file = format!("{name}.toml");
        std::fs::copy(templates.join(&file), template_dir.path().join(&file)).expect("copy");
    }
    let directory = tempfile::tempdir().expect("temp dir");
    let template_arg = template_dir.path().to_str().expect("UTF-8 path");
    let (server, mqtt) = start_mqtt(directory.path(), &["--templates", template_arg]);
    let publish = |device: &Device, suffix: &str, payload: &Path, expect: u8| -> String {
        let topic = format!("galen/v1/devices/{}/{suffix}", device.serial);
        script(
            &python,
            &[
                "publish",
                "--mqtt",
                &mqtt,
                "--serial",
                &device.serial,
                "--secret",
                &device.secret,
                "--topic",
                &topic,
                "--payload-file",
                payload.to_str().expect("UTF-8 path"),
                "--expect-reason",
                &expect.to_string(),
            ],
        )
    };
    let sample = |name: &str| -> PathBuf { templates.join("samples").join(format!("{name}.json")) };
    let ms = |millis: i64| millis * 1000;
    let s = |seconds: i64| seconds * 1_000_000;
    // From templates/samples; the topic suffixes are the templates' `[match] topic` (the scale's
    // template matches on the payload only).
    let cases: [(&str, &str, &str, Vec<Expected>); 3] = [
        (
            "ble-health-gateway",
            "BLEGW-00417",
            "ble",
            vec![
                ("heart_rate", ms(1_795_421_698_000), 72.0),
                ("respiratory_rate", ms(1_795_421_698_000), 16.0),
                ("temperature", ms(1_795_421_699_500), 37.2),
                ("systolic_bp", ms(1_795_421_690_250), 128.0),
                ("diastolic_bp", ms(1_795_421_690_250), 84.0),
            ],
        ),
        (
            "pulse-oximeter-hub",
            "OXH-7731",
            "oximetry",
            vec![
                ("spo2", s(1_795_421_700), 96.8),
                ("spo2", s(1_795_421_760), 97.1),
                // pulse_rate is stored as heart_rate.
                ("heart_rate", s(1_795_421_700), 72.4),
                ("heart_rate", s(1_795_421_760), 71.8),
            ],
        ),
        (
            "smart-scale",
            "SCL-2291-0042",
            "scale",
            // 154.2 lb, stored in kg; 07:42:10+01:00.
            vec![("weight", s(1_795_416_130), 154.2 * 0.453_592_37)],
        ),
    ];
    let mut devices = BTreeMap::new();
    for (template, serial, suffix, expected) in &cases {
        let device = register(&server, serial);
        let answer = publish(&device, suffix, &sample(template), 0);
        eprintln!("{template}: {}", answer.trim());
        let codes: BTreeSet<&str> = expected.iter().map(|(code, _, _)| *code).collect();
        for code in codes {
            let want: Vec<(i64, f64)> = expected
                .iter()
                .filter(|(wanted, _, _)| *wanted == code)
                .map(|(_, time, value)| (*time, *value))
                .collect();
            let got = stored(
                &server,
                device.id,
                code,
                want[0].0 - HOUR_MICROS,
                want[0].0 + HOUR_MICROS,
            );
            assert_eq!(got.len(), want.len(), "{template} {code}: {got:?}");
            for ((got_time, got_value), (want_time, want_value)) in got.iter().zip(&want) {
                assert_eq!(got_time, want_time, "{template} {code}");
                assert!(
                    (got_value - want_value).abs() < 1e-9,
                    "{template} {code}: {got_value} stored, {want_value} expected"
                );
            }
        }
        devices.insert(*template, device);
    }
    // The oximeter's probe-off sample (127 and "NaN") is kept as data absent, not stored.
    let letters = mqtt_dead_letters(&server);
    let absent = letters.get("data_absent").map_or(0, Vec::len);
    assert_eq!(absent, 2, "{letters:#?}");

    // A payload no template matches: MQTT 5 "payload format invalid", kept as unmapped.
    let scratch = tempfile::tempdir().expect("temp dir");
    let unknown = scratch.path().join("unknown.json");
    std::fs::write(&unknown, r#"{"event": "steps", "count": 4210}"#).expect("write");
    let scale = &devices["smart-scale"];
    let answer = publish(scale, "scale", &unknown, 0x99);
    assert!(answer.contains("template"), "reason string: {answer}");
    let letters = mqtt_dead_letters(&server);
    let unmapped = letters.get("unmapped").cloned().unwrap_or_default();
    assert_eq!(unmapped.len(), 1, "{letters:#?}");
    assert_eq!(unmapped[0]["device"], json!(scale.serial));
    assert!(
        unmapped[0]["payload"]
            .as_str()
            .is_some_and(|payload| payload.contains("steps")),
        "{}",
        unmapped[0]
    );

    // A broken template is refused on reload, naming the file; the templates in force stay.
    std::fs::write(
        template_dir.path().join("broken.toml"),
        "name = \"broken\"\nversion = 1\n\n[[measurement]]\ncode = { const = \"spo2\" }\nvalue = { path = \"$.v\", scael = 0.1 }\nunit = { const = \"%\" }\ntime = { path = \"$.t\" }\n",
    )
    .expect("write broken template");
    let (status, body) =
        request(&server.address, "POST", "/api/v1/mapping/reload", Some("")).expect("reload");
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("broken.toml"),
        "the answer names the file: {body}"
    );
    let (status, body) =
        request(&server.address, "GET", "/api/v1/mapping/templates", None).expect("templates");
    assert_eq!(status, 200);
    let names: BTreeSet<String> = serde_json::from_str::<Value>(&body).expect("JSON")["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        names,
        shipped.iter().map(|name| (*name).to_owned()).collect(),
        "templates in force after a failed reload"
    );
    let again = scratch.path().join("scale-again.json");
    let mut weighing: Value =
        serde_json::from_str(&std::fs::read_to_string(sample("smart-scale")).expect("sample"))
            .expect("sample JSON");
    weighing["record_id"] = json!(88124);
    weighing["measured_at"] = json!("2026-11-23T08:12:10+01:00");
    weighing["weight"] = json!({ "value": 70.5, "unit": "kg" });
    std::fs::write(&again, weighing.to_string()).expect("write");
    publish(scale, "scale", &again, 0);
    let weights = stored(
        &server,
        scale.id,
        "weight",
        s(1_795_416_130) - HOUR_MICROS,
        s(1_795_416_130) + HOUR_MICROS,
    );
    assert_eq!(
        weights.iter().map(|(time, _)| *time).collect::<Vec<_>>(),
        vec![s(1_795_416_130), s(1_795_417_930)],
        "{weights:?}"
    );
    assert!((weights[1].1 - 70.5).abs() < 1e-9, "{weights:?}");

    // SIGHUP reloads the directory as it now is: the broken file and one template removed.
    std::fs::remove_file(template_dir.path().join("broken.toml")).expect("remove broken");
    std::fs::remove_file(template_dir.path().join("pulse-oximeter-hub.toml")).expect("remove");
    let hangup = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(hangup.success());
    let expected: BTreeSet<String> = ["ble-health-gateway", "smart-scale"]
        .iter()
        .map(|name| (*name).to_owned())
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) =
            request(&server.address, "GET", "/api/v1/mapping/templates", None).expect("templates");
        assert_eq!(status, 200);
        let names: BTreeSet<String> = serde_json::from_str::<Value>(&body).expect("JSON")["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|item| item["name"].as_str().map(str::to_owned))
            .collect();
        if names == expected {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload the templates: {names:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
