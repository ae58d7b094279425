//! External-broker mode end to end: `galen serve --mqtt-broker` takes device messages from a real
//! Mosquitto (127.0.0.1:1883) through a shared subscription. A measurement published with
//! `mosquitto_pub -q 1` is stored; a malformed payload becomes a dead letter. Every run uses its
//! own subscription group and device serial, so runs in parallel (or other users of the broker)
//! do not collide. Needs Mosquitto listening on 127.0.0.1:1883 with anonymous access and
//! `mosquitto_pub`/`mosquitto_sub` (Debian: mosquitto, mosquitto-clients); without them the test
//! fails and says so: a silently skipped broker test proves nothing.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use common::{micros_to_rfc3339, post, request, start_with_args};

const BROKER: &str = "127.0.0.1:1883";

fn get(address: &str, path: &str) -> Value {
    let (status, body) = request(address, "GET", path, None).expect("request");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("json")
}

fn mosquitto(tool: &str, args: &[&str]) -> Output {
    Command::new(tool)
        .args(["-h", "127.0.0.1", "-p", "1883"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run {tool} ({error}); install it (Debian: apt-get install mosquitto-clients)")
        })
}

fn publish(topic: &str, payload: &str) {
    let output = mosquitto("mosquitto_pub", &["-q", "1", "-t", topic, "-m", payload]);
    assert!(output.status.success(), "mosquitto_pub: {output:?}");
}

/// Polls `check` every 200 ms until it returns a value, for at most 10 s.
fn within_10_seconds<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} within 10 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn broker_messages_are_stored_and_malformed_ones_dead_lettered() {
    assert!(
        std::net::TcpStream::connect_timeout(
            &BROKER.parse().expect("address"),
            Duration::from_secs(2)
        )
        .is_ok(),
        "no MQTT broker at {BROKER}; start Mosquitto (Debian: apt-get install mosquitto)"
    );
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).expect("randomness");
    let run: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    let group = format!("test-{run}");
    let serial = format!("BRIDGE-{run}");
    let topic = format!("galen/v1/devices/{serial}/measurements");

    let directory = tempfile::tempdir().expect("temp dir");
    let server = start_with_args(
        directory.path(),
        &[
            "--mqtt-addr",
            "off",
            "--mllp-addr",
            "off",
            "--mqtt-broker",
            &format!("mqtt://{BROKER}"),
            "--mqtt-broker-group",
            &group,
        ],
    );
    let device = post(
        &server.address,
        "/api/v1/devices",
        &json!({ "serial": serial, "kind": "monitor" }),
    );
    let id = device["id"].as_i64().expect("device id");

    // The bridge subscribes in the background; a message published before that reaches no one,
    // so publish until it is stored. Every copy carries the same time: repeats are duplicates.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let measurement = json!({
        "code": "heart_rate",
        "value": 77,
        "unit": "/min",
        "time": micros_to_rfc3339(now - 10_000_000),
    })
    .to_string();
    let vitals = format!("/api/v1/devices/{id}/vitals?code=heart_rate");
    let points = within_10_seconds("the published measurement stored", || {
        publish(&topic, &measurement);
        std::thread::sleep(Duration::from_millis(300));
        let points = get(&server.address, &vitals)["points"].clone();
        (points.as_array().is_some_and(|points| !points.is_empty())).then_some(points)
    });
    assert_eq!(
        points.as_array().map(Vec::len),
        Some(1),
        "stored once: {points}"
    );
    assert_eq!(points[0]["value"], 77.0, "{points}");

    // The bridge is subscribed now: one malformed message is enough.
    publish(&topic, "this is not JSON");
    let letter = within_10_seconds("the malformed message dead-lettered", || {
        get(&server.address, "/api/v1/dead-letters?limit=1000")["items"]
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .find(|letter| letter["device"] == serial.as_str())
                    .cloned()
            })
    });
    assert_eq!(letter["reason"], "malformed", "{letter}");
    assert_eq!(letter["source"], "mqtt", "{letter}");
    assert_eq!(letter["payload"], "this is not JSON", "{letter}");

    // The bridge keeps a persistent session at the broker (so that unacknowledged messages come
    // again after a restart); end it so that this run leaves nothing queued behind.
    drop(server);
    let node = std::fs::read_to_string(directory.path().join("mqtt-bridge-node"))
        .expect("the bridge's node id is kept in the data directory");
    let client_id = format!("galen-bridge-{group}-{}", node.trim());
    let output = mosquitto(
        "mosquitto_sub",
        &[
            "-V",
            "mqttv5",
            "-i",
            &client_id,
            "-t",
            "galen/v1/cleanup",
            "-E",
        ],
    );
    assert!(output.status.success(), "ending the session: {output:?}");
}
