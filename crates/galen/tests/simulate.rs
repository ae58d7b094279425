//! End to end: `galen simulate` registers its monitors and patients on a real `galen serve` over
//! the public API and streams vitals that the dashboard then shows; a rerun reuses the registry,
//! and a wrong token fails loudly.

mod common;

use std::process::Command;

use common::{TOKEN, request, start};
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
