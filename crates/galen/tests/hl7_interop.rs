//! End to end with an independent HL7 v2 peer: `tests/interop/hl7_mllp.py` (python-hl7 builds,
//! sends and reads; hl7apy validates every ACK strictly) talks MLLP to a real `galen serve`,
//! and this test checks over the HTTP API what was stored and what was kept as dead letters.
//!
//! The Python packages are required, not optional: a missing one fails the test with the command
//! that installs them.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Server, micros_to_rfc3339, post, request, start_with_args};
use serde_json::{Value, json};

/// The monitor's EUI-64: MSH-3.2 and OBX-18 of its reports, and its serial in Galen.
const MONITOR: &str = "0012345678ABCDEF";
const MRN: &str = "MRN-IOP-1";
const SECOND: i64 = 1_000_000;
const INSTALL: &str = "pip install -r tests/interop/requirements.txt";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> String {
    std::env::var("GALEN_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Fails (never skips) when Python or its HL7 packages are missing.
fn require_python_packages() {
    let python = python();
    let output = Command::new(&python)
        .args(["-c", "import hl7, hl7.client, hl7apy, hl7apy.parser"])
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run {python} ({error}); install Python 3, then `{INSTALL}`")
        });
    assert!(
        output.status.success(),
        "the HL7 interop test needs the Python packages hl7 and hl7apy: run `{INSTALL}` \
         (from the workspace root)\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn now_micros() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(elapsed.as_micros()).expect("time fits")
}

/// A time `seconds_ago` before now, on a whole second (HL7 times here carry seconds).
fn whole_seconds_ago(seconds_ago: i64) -> i64 {
    (now_micros() / SECOND - seconds_ago) * SECOND
}

fn start_server(data_dir: &Path) -> Server {
    let server = start_with_args(
        data_dir,
        &[
            "--mllp-addr",
            "127.0.0.1:0",
            // The Python peer speaks plain MLLP, which cannot authenticate it: allowed explicitly.
            "--allow-anonymous-mllp",
        ],
    );
    assert!(
        server.mllp.is_some(),
        "galen serve printed no mllp:// listener: {:?}",
        server.listeners
    );
    server
}

/// Registers the monitor and its patient and assigns one to the other; returns their ids.
fn register(address: &str) -> (i64, i64) {
    let device = post(
        address,
        "/api/v1/devices",
        &json!({ "serial": MONITOR, "manufacturer": "Interop", "model": "PCD-01 peer", "kind": "monitor" }),
    );
    let patient = post(
        address,
        "/api/v1/patients",
        &json!({
            "identifier": { "system": "HOSP", "value": MRN },
            "name": { "family": "Interop", "given": "Peer" },
            "birth_date": "1960-05-04",
            "sex": "female",
            "ward": "ICU",
            "bed": "7",
        }),
    );
    let (device, patient) = (
        device["id"].as_i64().expect("device id"),
        patient["id"].as_i64().expect("patient id"),
    );
    post(
        address,
        "/api/v1/assignments",
        &json!({ "device": device, "patient": patient, "start": micros_to_rfc3339(whole_seconds_ago(4 * 3600)) }),
    );
    (device, patient)
}

fn peer_command(server: &Server, start_micros: i64, mode: &[&str]) -> Command {
    let mut command = Command::new(python());
    command
        .arg(workspace_root().join("tests/interop/hl7_mllp.py"))
        .args(["--mllp", server.mllp.as_deref().expect("an MLLP listener")])
        .args(["--device", MONITOR, "--mrn", MRN, "--authority", "HOSP"])
        .args(["--start-micros", &start_micros.to_string()])
        .args(mode)
        .env("PYTHONUNBUFFERED", "1");
    command
}

/// The `RESULT {json}` line of the peer's output, after requiring that it succeeded.
fn peer_result(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the HL7 peer failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    let line = stdout
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line from the peer:\n{stdout}\n{stderr}"));
    serde_json::from_str(line).expect("RESULT is JSON")
}

fn get(address: &str, path: &str) -> Value {
    let (status, body) = request(address, "GET", path, None).expect("request");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("json")
}

fn rfc3339_to_micros(text: &str) -> i64 {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|error| panic!("{text:?} is not RFC 3339: {error}"));
    i64::try_from(time.unix_timestamp_nanos() / 1000).expect("time fits")
}

/// `(time, value)` of every stored point of `code` in `[from, to)`, from `/api/v1/{owner}/vitals`.
fn stored(address: &str, owner: &str, code: &str, from: i64, to: i64) -> Vec<(i64, f64)> {
    let answer = get(
        address,
        &format!(
            "/api/v1/{owner}/vitals?code={code}&from={}&to={}",
            micros_to_rfc3339(from),
            micros_to_rfc3339(to)
        ),
    );
    answer["points"]
        .as_array()
        .unwrap_or_else(|| panic!("no points in {answer}"))
        .iter()
        .map(|point| {
            (
                rfc3339_to_micros(point["time"].as_str().expect("time")),
                point["value"].as_f64().expect("value"),
            )
        })
        .collect()
}

#[test]
fn independent_peer_gets_standard_acks_and_values_are_stored_once() {
    require_python_packages();
    let directory = tempfile::tempdir().expect("temp dir");
    let server = start_server(directory.path());
    let (device, patient) = register(&server.address);
    let start = whole_seconds_ago(600);

    let output = peer_command(&server, start, &["checks"])
        .output()
        .expect("run the HL7 peer");
    let result = peer_result(&output);
    assert!(
        result["passed"].as_u64().unwrap_or(0) > 40,
        "the peer ran its checks: {result}"
    );

    // Every value the peer had acknowledged AA/CA is stored exactly once, for the device and,
    // through the assignment, for the patient; nothing else is (the wrong unit, the ADT, the
    // oversize report and the three repeats added no point).
    let expected = result["stored"].as_array().expect("stored list");
    assert_eq!(expected.len(), 7, "{result}");
    let (from, to) = (start - 60 * SECOND, start + 60 * SECOND);
    let mut by_code: std::collections::BTreeMap<&str, Vec<(i64, f64)>> = Default::default();
    for item in expected {
        let code = item["code"].as_str().expect("code");
        let time = item["time_micros"].as_i64().expect("time");
        let value = item["value"].as_f64().expect("value");
        by_code.entry(code).or_default().push((time, value));
    }
    for (code, mut acknowledged) in by_code {
        acknowledged.sort_by_key(|(time, _)| *time);
        for owner in [format!("devices/{device}"), format!("patients/{patient}")] {
            let points = stored(&server.address, &owner, code, from, to);
            assert_eq!(
                points, acknowledged,
                "{owner} {code}: exactly the points acknowledged"
            );
        }
    }

    // The refused parts are dead letters, once each, in order: the wrong-unit OBX (with the
    // device), the whole ADT message and the head of the oversize report.
    let letters = get(&server.address, "/api/v1/dead-letters");
    let letters = letters["items"].as_array().expect("items");
    let reasons: Vec<&str> = letters
        .iter()
        .map(|letter| letter["reason"].as_str().unwrap_or_default())
        .collect();
    let wanted: Vec<&str> = result["dead_letters"]
        .as_array()
        .expect("dead letters")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(reasons, wanted, "{letters:?}");
    assert!(letters.iter().all(|letter| letter["source"] == "mllp"));
    assert_eq!(letters[0]["device"], MONITOR);
    let obx = letters[0]["payload"].as_str().unwrap_or_default();
    assert!(
        obx.starts_with("OBX|2|NM|150456") && obx.contains("MDC_DIM_MMHG"),
        "the wrong-unit OBX is kept as sent: {obx}"
    );
    let adt = letters[1]["payload"].as_str().unwrap_or_default();
    assert!(
        adt.starts_with("MSH|") && adt.contains("ADT^A01") && adt.contains("\rPV1|"),
        "the ADT is kept whole: {adt:?}"
    );
}

#[test]
fn every_acknowledged_hl7_message_survives_kill_9() {
    require_python_packages();
    const MESSAGES: usize = 400;
    const KILL_AFTER: usize = 100;
    let directory = tempfile::tempdir().expect("temp dir");
    let record = directory.path().join("acknowledged.json");
    let mut server = start_server(directory.path());
    let (device, _) = register(&server.address);
    let start = whole_seconds_ago(2 * MESSAGES as i64);

    // The peer sends one report after another (two OBX at one OBX-14 time each), printing each
    // AA as it arrives; after KILL_AFTER of them the server gets SIGKILL mid-stream.
    let mut peer = peer_command(&server, start, &["load"])
        .args(["--count", &MESSAGES.to_string()])
        .arg("--record")
        .arg(&record)
        .args(["--run", "kill"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the HL7 peer");
    let stdout = peer.stdout.take().expect("peer stdout");
    let (lines_sender, lines) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = lines_sender.send(line);
        }
        all
    });
    let mut acknowledged_before_kill = 0;
    while acknowledged_before_kill < KILL_AFTER {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.starts_with("AA ") => acknowledged_before_kill += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    server.child.kill().expect("SIGKILL galen");
    server.child.wait().expect("reap galen");
    let peer_stdout = reader.join().expect("reader thread");
    let peer_status = peer.wait_with_output().expect("peer finished");
    let result = peer_result(&Output {
        status: peer_status.status,
        stdout: peer_stdout.into_bytes(),
        stderr: peer_status.stderr,
    });
    let acknowledged: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&record).expect("record file"))
            .expect("record is JSON");
    assert_eq!(
        result["acknowledged"].as_u64(),
        Some(acknowledged.len() as u64)
    );
    assert!(
        acknowledged.len() >= KILL_AFTER && acknowledged.len() < MESSAGES,
        "the kill must land mid-stream: {} of {MESSAGES} acknowledged",
        acknowledged.len()
    );

    eprintln!(
        "kill -9 after {} of {MESSAGES} reports were acknowledged",
        acknowledged.len()
    );

    // Restart on the same data directory: every acknowledged report is there, once.
    server = start_server(directory.path());
    let times: Vec<i64> = acknowledged
        .iter()
        .map(|entry| entry["time_micros"].as_i64().expect("time"))
        .collect();
    let (from, to) = (start - SECOND, start + (MESSAGES as i64 + 1) * SECOND);
    let owner = format!("devices/{device}");
    let count_stored = |server: &Server, code: &str| -> Vec<(i64, f64)> {
        stored(&server.address, &owner, code, from, to)
    };
    for (code, value_of) in [
        (
            "heart_rate",
            (|index: i64| 60 + index % 50) as fn(i64) -> i64,
        ),
        ("spo2", |index: i64| 90 + index % 10),
    ] {
        let points = count_stored(&server, code);
        eprintln!("{code}: {} points stored after the restart", points.len());
        // At most one report was committed but not acknowledged: the one in flight at the kill.
        assert!(
            points.len() == times.len() || points.len() == times.len() + 1,
            "{code}: {} stored points for {} acknowledged reports",
            points.len(),
            times.len()
        );
        for time in &times {
            let index = (time - start) / SECOND;
            assert!(
                points.contains(&(*time, value_of(index) as f64)),
                "{code}: acknowledged report {index} is missing after kill -9"
            );
        }
    }

    // The receipts survived too: the last acknowledged reports sent again get the same bytes and
    // store nothing.
    let before = count_stored(&server, "heart_rate").len();
    let output = peer_command(&server, start, &["resend"])
        .arg("--record")
        .arg(&record)
        .args(["--last", "5"])
        .output()
        .expect("run the HL7 peer");
    let result = peer_result(&output);
    assert_eq!(result["resent"], 5, "{result}");
    assert_eq!(count_stored(&server, "heart_rate").len(), before);
}
