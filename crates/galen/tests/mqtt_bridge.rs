//! External-broker mode end to end: `galen serve --mqtt-broker` takes device messages from a real
//! Mosquitto (127.0.0.1:1883) through a shared subscription. A measurement published with
//! `mosquitto_pub -q 1` is stored; a malformed payload becomes a dead letter. Every run uses its
//! own subscription group and device serial, so runs in parallel (or other users of the broker)
//! do not collide. A second test kills the node with SIGKILL in the middle of a stream: after the
//! restart, the broker delivers what the node had not acknowledged (queued in the node's session,
//! or taken but not yet stored), and every message the broker accepted is stored once. Needs
//! Mosquitto listening on 127.0.0.1:1883 with anonymous access and
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

/// Fails unless a broker listens at [`BROKER`].
fn require_broker() {
    assert!(
        std::net::TcpStream::connect_timeout(
            &BROKER.parse().expect("address"),
            Duration::from_secs(2)
        )
        .is_ok(),
        "no MQTT broker at {BROKER}; start Mosquitto (Debian: apt-get install mosquitto)"
    );
}

/// A random id that keeps this run's group, serial and topic apart from any other.
fn run_id() -> String {
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).expect("randomness");
    random.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Starts `galen serve` in external-broker mode on `data_dir`, subscribing as `group`.
fn start_bridge(data_dir: &std::path::Path, group: &str) -> common::Server {
    start_with_args(
        data_dir,
        &[
            "--mqtt-addr",
            "off",
            "--mllp-addr",
            "off",
            "--mqtt-broker",
            &format!("mqtt://{BROKER}"),
            "--mqtt-broker-group",
            group,
        ],
    )
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

/// A heart-rate measurement at `time` as the JSON a device publishes.
fn heart_rate(value: i64, time: i64) -> String {
    json!({
        "code": "heart_rate",
        "value": value,
        "unit": "/min",
        "time": micros_to_rfc3339(time),
    })
    .to_string()
}

/// Publishes `measurement` until the bridge has stored it (the subscription is made in the
/// background; a message published before that reaches no one); returns the stored points.
fn publish_until_stored(address: &str, topic: &str, vitals: &str, measurement: &str) -> Value {
    within_10_seconds("the published measurement stored", || {
        publish(topic, measurement);
        std::thread::sleep(Duration::from_millis(300));
        let points = get(address, vitals)["points"].clone();
        (points.as_array().is_some_and(|points| !points.is_empty())).then_some(points)
    })
}

/// Ends the bridge's persistent session at the broker, so that a run leaves nothing queued.
fn end_session(data_dir: &std::path::Path, group: &str) {
    let node = std::fs::read_to_string(data_dir.join("mqtt-bridge-node"))
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

#[test]
fn broker_messages_are_stored_and_malformed_ones_dead_lettered() {
    require_broker();
    let run = run_id();
    let group = format!("test-{run}");
    let serial = format!("BRIDGE-{run}");
    let topic = format!("galen/v1/devices/{serial}/measurements");

    let directory = tempfile::tempdir().expect("temp dir");
    let server = start_bridge(directory.path(), &group);
    let device = post(
        &server.address,
        "/api/v1/devices",
        &json!({ "serial": serial, "kind": "monitor" }),
    );
    let id = device["id"].as_i64().expect("device id");

    // Every copy carries the same time: repeats are duplicates.
    let measurement = heart_rate(77, now_micros() - 10_000_000);
    let vitals = format!("/api/v1/devices/{id}/vitals?code=heart_rate");
    let points = publish_until_stored(&server.address, &topic, &vitals, &measurement);
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

    drop(server);
    end_session(directory.path(), &group);
}

#[test]
fn a_sigkilled_bridge_node_loses_nothing_the_broker_accepted() {
    const COUNT: i64 = 300;
    require_broker();
    let run = run_id();
    let group = format!("test-{run}");
    let serial = format!("BRIDGE-{run}");
    let topic = format!("galen/v1/devices/{serial}/measurements");
    let directory = tempfile::tempdir().expect("temp dir");
    let mut server = start_bridge(directory.path(), &group);
    let device = post(
        &server.address,
        "/api/v1/devices",
        &json!({ "serial": serial, "kind": "monitor" }),
    );
    let id = device["id"].as_i64().expect("device id");
    let vitals = format!("/api/v1/devices/{id}/vitals?code=heart_rate&limit=10000");
    let start = now_micros() - 3_600_000_000;
    publish_until_stored(&server.address, &topic, &vitals, &heart_rate(60, start));

    // A stream of distinct measurements, one a second apart in measurement time.
    let lines: Vec<String> = (1..=COUNT)
        .map(|index| heart_rate(60 + index % 40, start + index * 1_000_000) + "\n")
        .collect();
    let mut publisher = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "1883",
            "-q",
            "1",
            "-t",
            &topic,
            "-l",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run mosquitto_pub");
    // About three seconds of stream, so that the kill lands in the middle of it.
    let writer = {
        let mut stdin = publisher.stdin.take().expect("stdin");
        std::thread::spawn(move || {
            use std::io::Write as _;
            for line in lines {
                stdin
                    .write_all(line.as_bytes())
                    .expect("write to mosquitto_pub");
                stdin.flush().expect("flush");
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // Kill the node once part of the stream is stored.
    let stored_before = within_10_seconds("part of the stream stored", || {
        let count = get(&server.address, &vitals)["points"]
            .as_array()
            .map_or(0, Vec::len);
        (count > 20).then_some(count)
    });
    server.child.kill().expect("kill -9 galen");
    let _ = server.child.wait();
    writer.join().expect("the publisher's input was written");
    let status = publisher.wait().expect("mosquitto_pub ends");
    assert!(status.success(), "the broker accepted every message");

    // The restarted node resumes its session: queued and unacknowledged messages arrive.
    let server = start_bridge(directory.path(), &group);
    let points = within_10_seconds("every published measurement stored", || {
        let points = get(&server.address, &vitals)["points"].clone();
        let count = points.as_array().map_or(0, Vec::len);
        (count as i64 == COUNT + 1).then_some(points)
    });
    let times: std::collections::BTreeSet<String> = points
        .as_array()
        .expect("points")
        .iter()
        .filter_map(|point| point["time"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(times.len() as i64, COUNT + 1, "each stored once");
    assert!(
        (stored_before as i64) < COUNT + 1,
        "the node was killed mid-stream ({stored_before} stored)"
    );
    drop(server);
    end_session(directory.path(), &group);
}
