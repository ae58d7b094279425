//! `galen replay` on a data directory written by `galen serve`: the stored alarm history is
//! reproduced exactly, and a proposed configuration shows what it would have raised.

mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as i64
}

fn replay(data_dir: &std::path::Path, extra: &[&str], from: &str, to: &str) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_galen"))
        .args(["replay", "--json", "--from", from, "--to", to, "--data-dir"])
        .arg(data_dir)
        .env("GALEN_DATA_KEY", common::DATA_KEY)
        .args(extra)
        .output()
        .expect("run galen replay");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

fn raised(answer: &Value, rule: &str) -> (u64, u64) {
    answer["raised"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|row| row["rule"] == rule)
        .map_or((0, 0), |row| {
            (
                row["stored"].as_u64().expect("stored"),
                row["replayed"].as_u64().expect("replayed"),
            )
        })
}

#[test]
fn replay_reproduces_the_stored_alarms_and_evaluates_a_proposal() {
    let directory = tempfile::tempdir().expect("temp dir");
    let data = directory.path().join("data");
    let mut server = common::start(&data);
    let address = server.address.clone();
    let patient = common::post(
        &address,
        "/api/v1/patients",
        &json!({
            "identifier": { "system": "urn:oid:1.2.3", "value": "MRN-1" },
            "name": { "family": "Lovelace", "given": "Ada" },
            "birth_date": "1950-02-28", "sex": "female", "ward": "A", "bed": "A-1"
        }),
    );
    let device = common::post(&address, "/api/v1/devices", &json!({ "serial": "OXI-1" }));
    let start = now_micros() - 600_000_000;
    common::post(
        &address,
        "/api/v1/assignments",
        &json!({ "device": device["id"], "patient": patient["id"], "start": common::micros_to_rfc3339(start) }),
    );
    // SpO2 88 % for 60 s: a medium limit alarm after the 15 s delay.
    let first = now_micros() - 120_000_000;
    let items: Vec<Value> = (0..=6)
        .map(|step| {
            json!({ "device": "OXI-1", "code": "spo2", "value": 88, "unit": "%",
                    "time": common::micros_to_rfc3339(first + step * 10_000_000) })
        })
        .collect();
    let answer = common::post(&address, "/api/v1/measurements", &Value::Array(items));
    assert_eq!(answer["accepted"], 7, "{answer}");
    // The alarm is open; then the server stops gracefully (storing what it evaluated).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = common::request(&address, "GET", "/api/v1/alarms", None).expect("request");
        if body.contains("limit.spo2.low") {
            break;
        }
        assert!(Instant::now() < deadline, "no alarm: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = server.child.wait().expect("wait");
    assert!(exit.success(), "{exit:?}");

    let from = common::micros_to_rfc3339(start - 60_000_000);
    let to = common::micros_to_rfc3339(first + 70_000_000);
    let same = replay(&data, &[], &from, &to);
    assert_eq!(same["identical"], true, "{same:#}");
    assert_eq!(raised(&same, "limit.spo2.low"), (1, 1), "{same:#}");

    // A proposal: SpO2 low limit at 86 instead of 90 would have raised nothing.
    let proposal = include_str!("../../galen-clinical/config/default.toml")
        .replace("version = \"galen-default-2026.2\"", "version = \"proposal-1\"")
        .replace(
            "below = [{ threshold = 85, priority = \"high\" }, { threshold = 90, priority = \"medium\" }]",
            "below = [{ threshold = 80, priority = \"high\" }, { threshold = 86, priority = \"medium\" }]",
        );
    assert!(
        proposal.contains("threshold = 86"),
        "the default SpO2 limits changed"
    );
    let path = directory.path().join("proposal.toml");
    std::fs::write(&path, proposal).expect("write proposal");
    let path = path.display().to_string();
    let tuned = replay(&data, &["--clinical-config", &path], &from, &to);
    assert_eq!(tuned["config_version"], "proposal-1");
    assert_eq!(tuned["identical"], false);
    assert_eq!(raised(&tuned, "limit.spo2.low"), (1, 0), "{tuned:#}");
}
