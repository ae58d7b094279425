//! The `galen` process as an operator meets it: a taken port names the flag to change, SIGTERM
//! stops the server promptly even with live streams open, and logs never carry patient identity
//! or the API token.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TOKEN, post, request, start, start_with_log};
use serde_json::json;

#[test]
fn a_taken_port_names_the_flag_to_change() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let address = taken.local_addr().expect("address").to_string();
    let directory = tempfile::tempdir().expect("temp dir");
    for command in ["serve", "demo"] {
        let output = Command::new(env!("CARGO_BIN_EXE_galen"))
            .args([command, "--http-addr", &address, "--data-dir"])
            .arg(directory.path())
            .env("GALEN_API_TOKEN", TOKEN)
            .env("GALEN_DATA_KEY", common::DATA_KEY)
            .output()
            .expect("run galen");
        assert!(
            !output.status.success(),
            "{command} must fail on a taken port"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("already in use") && stderr.contains("--http-addr"),
            "{command}: {stderr}"
        );
    }
}

#[test]
fn sigterm_stops_promptly_with_a_live_stream_open() {
    let directory = tempfile::tempdir().expect("temp dir");
    let mut server = start(directory.path());
    let mut stream = TcpStream::connect(&server.address).expect("connect");
    write!(
        stream,
        "GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("subscribe");
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).expect("stream answers");
    assert_eq!(&head, b"HTTP/1.1 200");

    let stopped = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = server.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
    // The stream was ended by the server, not left hanging.
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
}

#[test]
fn logs_carry_no_patient_identity_and_no_token() {
    let directory = tempfile::tempdir().expect("temp dir");
    let log = Arc::new(Mutex::new(String::new()));
    let server = start_with_log(directory.path(), "debug", Some(log.clone()));
    let address = &server.address;
    let patient = post(
        address,
        "/api/v1/patients",
        &json!({ "identifier": { "system": "urn:test:mrn", "value": "MRN-SECRET-4711" },
                 "name": { "family": "Zebedee", "given": "Quixotica" },
                 "birth_date": "1948-02-29", "sex": "female", "ward": "W", "bed": "W-1" }),
    );
    let device = post(address, "/api/v1/devices", &json!({ "serial": "LOG-1" }));
    post(
        address,
        "/api/v1/assignments",
        &json!({ "device": device["id"], "patient": patient["id"], "start": "2020-01-01T00:00:00Z" }),
    );
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time");
    post(
        address,
        "/api/v1/measurements",
        &json!([{ "device": "LOG-1", "code": "heart_rate", "value": 80, "unit": "/min", "time": now }]),
    );
    // Errors are logged too: an unknown patient, a bad request, a wrong token.
    let _ = request(address, "GET", "/api/v1/patients/999", None);
    let _ = request(address, "POST", "/api/v1/measurements", Some("{not json"));
    let _ = request(
        address,
        "GET",
        &format!("/api/v1/patients/{}", patient["id"]),
        None,
    );
    drop(server);
    std::thread::sleep(Duration::from_millis(200));
    let log = log.lock().expect("log").clone();
    assert!(
        log.contains("patient registered"),
        "debug logging was captured: {log}"
    );
    for secret in [
        "Zebedee",
        "Quixotica",
        "MRN-SECRET-4711",
        "1948-02-29",
        TOKEN,
    ] {
        assert!(
            !log.contains(secret),
            "{secret:?} leaked into the log:\n{log}"
        );
    }
}
