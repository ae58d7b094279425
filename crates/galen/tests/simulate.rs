//! End to end: `galen simulate` registers its monitors and patients on a real `galen serve` over
//! the public API and streams vitals that the dashboard then shows, over HTTP or as HL7 v2 over
//! MLLP, or over MQTT with a credential per device; a rerun reuses the registry, and a wrong token
//! fails loudly.

mod common;

use std::process::Command;

use common::{TOKEN, request, start, start_with_args};
use serde_json::Value;

fn simulate(address: &str, token: &str, seconds: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_galen"))
        .args([
            "simulate",
            "--target",
            &format!("http://{address}"),
            "--patients",
            "3",
            "--rate",
            "2",
        ])
        .args(["--scenario", "sepsis", "--seed", "7", "--duration", seconds])
        .env("GALEN_API_TOKEN", token)
        .env("GALEN_LOG", "warn")
        .output()
        .expect("run galen simulate")
}

fn get(address: &str, path: &str) -> Value {
    let (status, body) = request(address, "GET", path, None).expect("request");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("json")
}

#[test]
fn simulate_feeds_a_server_over_http() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = start(directory.path());

    let output = simulate(&server.address, TOKEN, "3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "simulate failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = stdout.lines().last().expect("a summary line");
    assert!(summary.contains("rejected 0"), "{summary}");
    let sent: u64 = summary
        .split("sent ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|count| count.parse().ok())
        .expect("sent count");
    assert!(
        sent >= 3 * 3 * 4,
        "3 patients x 3 vitals x ~6 sets in 3 s, got {sent}"
    );

    let dashboard = get(&server.address, "/api/v1/dashboard");
    let tiles = dashboard["patients"].as_array().expect("patients");
    assert_eq!(tiles.len(), 3);
    for tile in tiles {
        for vital in [
            "heart_rate",
            "spo2",
            "respiratory_rate",
            "temperature",
            "systolic_bp",
            "diastolic_bp",
        ] {
            assert!(
                tile["latest"][vital]["value"].is_number(),
                "{vital} missing in {tile}"
            );
        }
    }

    // A second run reuses the registered monitors and patients.
    let again = simulate(&server.address, TOKEN, "1");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        get(&server.address, "/api/v1/devices")["items"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    assert_eq!(
        get(&server.address, "/api/v1/patients")["items"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    let refused = simulate(&server.address, "not-the-right-token-at-all", "1");
    assert!(!refused.status.success(), "a wrong token must fail");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(
        !stderr.contains("not-the-right-token-at-all"),
        "the token is never printed"
    );
}

/// The number after `label ` in `line` (e.g. `AA 12,` gives 12).
fn count_after(line: &str, label: &str) -> u64 {
    line.split(&format!("{label} "))
        .nth(1)
        .and_then(|rest| {
            rest.split(|character: char| !character.is_ascii_digit())
                .next()
        })
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no count after {label:?} in {line:?}"))
}

/// Runs `galen simulate` against `server` with `protocol_args`; returns its last line.
fn simulate_over(server: &common::Server, protocol_args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_galen"))
        .args([
            "simulate",
            "--target",
            &format!("http://{}", server.address),
        ])
        .args(protocol_args)
        .args(["--patients", "3", "--rate", "2", "--scenario", "stable"])
        .args(["--seed", "7", "--duration", "3"])
        .env("GALEN_API_TOKEN", TOKEN)
        .env("GALEN_LOG", "warn")
        .output()
        .expect("run galen simulate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "simulate failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().last().expect("a summary line").to_owned()
}

/// Checks that every monitor's vitals reached the dashboard, that `sets` heart rates (one per
/// set) were stored, and that nothing became a dead letter.
fn assert_stored(address: &str, sets: u64) {
    // Every monitor's first set carries all six vitals; the dashboard shows them per patient.
    let dashboard = get(address, "/api/v1/dashboard");
    let tiles = dashboard["patients"].as_array().expect("patients");
    assert_eq!(tiles.len(), 3);
    for tile in tiles {
        for vital in [
            "heart_rate",
            "spo2",
            "respiratory_rate",
            "temperature",
            "systolic_bp",
            "diastolic_bp",
        ] {
            assert!(
                tile["latest"][vital]["value"].is_number(),
                "{vital} missing in {tile}"
            );
        }
    }
    // Each set carried one heart rate, stored once.
    let mut heart_rates = 0;
    for device in get(address, "/api/v1/devices")["items"]
        .as_array()
        .expect("devices")
    {
        let id = device["id"].as_i64().expect("id");
        let series = get(
            address,
            &format!("/api/v1/devices/{id}/vitals?code=heart_rate"),
        );
        heart_rates += series["points"].as_array().map_or(0, Vec::len);
    }
    assert_eq!(heart_rates as u64, sets);
    let letters = get(address, "/api/v1/dead-letters");
    assert_eq!(letters["items"], serde_json::json!([]), "no dead letters");
}

#[test]
fn simulate_feeds_a_server_over_hl7() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = start_with_args(
        directory.path(),
        &[
            "--mllp-addr",
            "127.0.0.1:0",
            // The simulator speaks plain MLLP, which cannot authenticate it: allowed explicitly.
            "--allow-anonymous-mllp",
        ],
    );
    let mllp = server.mllp.clone().expect("an MLLP listener");

    let summary = simulate_over(&server, &["--protocol", "hl7", "--mllp", &mllp]);
    let messages = count_after(&summary, "sent");
    assert!(
        messages >= 3 * 4,
        "3 patients x ~6 sets in 3 s, one message each: {summary}"
    );
    assert_eq!(count_after(&summary, "AA"), messages, "all AA: {summary}");
    for label in ["AE", "AR", "other", "resent"] {
        assert_eq!(count_after(&summary, label), 0, "{label}: {summary}");
    }
    assert_stored(&server.address, messages);
}

#[test]
fn simulate_feeds_a_server_over_mqtt_with_a_credential_per_device() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = start_with_args(directory.path(), &["--mqtt-addr", "127.0.0.1:0"]);
    let mqtt = server.mqtt.clone().expect("an MQTT listener");

    let summary = simulate_over(&server, &["--protocol", "mqtt", "--mqtt", &mqtt]);
    let sets = count_after(&summary, "published");
    assert!(
        sets >= 3 * 4,
        "3 patients x ~6 sets in 3 s, one publish each: {summary}"
    );
    assert_eq!(
        count_after(&summary, "stored"),
        sets,
        "all stored: {summary}"
    );
    for label in ["refused", "resent"] {
        assert_eq!(count_after(&summary, label), 0, "{label}: {summary}");
    }
    assert_stored(&server.address, sets);
    // Each monitor logged in with a credential of its own, revoked when the run ended.
    for device in get(&server.address, "/api/v1/devices")["items"]
        .as_array()
        .expect("devices")
    {
        let id = device["id"].as_i64().expect("id");
        let credentials = get(
            &server.address,
            &format!("/api/v1/devices/{id}/credentials"),
        );
        let items = credentials["items"].as_array().expect("credentials");
        assert_eq!(items.len(), 1, "{credentials}");
        assert!(items[0]["revoked"].is_string(), "revoked: {credentials}");
    }
}
