//! The audit trail end to end: `galen serve` writes a data directory, `galen audit verify` accepts
//! it untouched and names the broken record of every tampered copy (the triggers dropped first,
//! as someone with file access would), the head the server logs catches a cut-off tail, and the
//! FHIR AuditEvents pass the independent R4 validator.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use galen_model::{AuditAction, AuditOutcome, PatientId, Timestamp};
use galen_store::embedded::{DATABASE_FILE, SqliteOptions, SqliteStore};
use galen_store::{AuditRecord, AuditStore, MeasurementStore};
use rusqlite::Connection;
use serde_json::{Value, json};

/// `galen audit verify` on `data_dir`: success, stdout, stderr.
fn verify(data_dir: &Path, extra: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_galen"))
        .args(["audit", "verify", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .output()
        .expect("run galen audit verify");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Stops the server with SIGTERM (a clean shutdown: the store is closed and checkpointed).
fn stop(mut server: common::Server) {
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = server.child.wait().expect("wait");
    assert!(exit.success(), "{exit:?}");
}

/// A copy of the data directory's database, tampered with by `sql` (run after dropping the
/// append-only triggers, as an attacker with file access would).
fn tampered_copy(data: &Path, root: &Path, name: &str, sql: &str) -> PathBuf {
    let copy = root.join(name);
    std::fs::create_dir_all(&copy).expect("copy directory");
    for suffix in ["", "-wal", "-shm"] {
        let file = data.join(format!("{DATABASE_FILE}{suffix}"));
        if file.exists() {
            std::fs::copy(&file, copy.join(format!("{DATABASE_FILE}{suffix}"))).expect("copy");
        }
    }
    let connection = Connection::open(copy.join(DATABASE_FILE)).expect("open the copy");
    connection
        .execute_batch(
            "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete; DROP TRIGGER audit_log_extend_only;",
        )
        .expect("drop the triggers");
    connection.execute_batch(sql).expect("tamper");
    drop(connection);
    copy
}

/// Appends audit records through the store, as the access-control hooks do, so the test does
/// not depend on which requests they audit.
fn append_directly(data: &Path, patient: i64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let options = SqliteOptions {
            data_key: Some(
                galen_store::crypto::MasterKey::parse(common::DATA_KEY).expect("the test key"),
            ),
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open(data, options).expect("open the store");
        let record = |action: AuditAction, outcome: AuditOutcome, detail: &str| AuditRecord {
            time: Timestamp::from_micros(1_795_392_000_000_000),
            actor: "nurse.ann".into(),
            role: "nurse".into(),
            action,
            resource: format!("Patient/{patient}"),
            patient: Some(PatientId(patient)),
            outcome,
            source: "127.0.0.1:40000".into(),
            detail: detail.into(),
        };
        store
            .append_audit(vec![
                record(AuditAction::Login, AuditOutcome::Success, ""),
                record(AuditAction::Read, AuditOutcome::Success, ""),
                record(
                    AuditAction::Update,
                    AuditOutcome::Denied,
                    "role nurse may not",
                ),
                record(AuditAction::AlarmAction, AuditOutcome::Success, ""),
                record(AuditAction::Export, AuditOutcome::Failed, "disk full"),
                record(AuditAction::Logout, AuditOutcome::Success, ""),
            ])
            .await
            .expect("append");
        store.close().await.expect("close");
    });
}

/// `(seq, hash)` of `ok: N records, head seq S hash H`.
fn head_of(stdout: &str) -> (i64, String) {
    let rest = stdout
        .split("head seq ")
        .nth(1)
        .unwrap_or_else(|| panic!("no head in {stdout:?}"));
    let mut words = rest.split_whitespace();
    let seq = words.next().and_then(|seq| seq.parse().ok()).expect("seq");
    assert_eq!(words.next(), Some("hash"));
    (seq, words.next().expect("hash").to_owned())
}

/// Removes ANSI colour sequences from a log.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(character) = chars.next() {
        if character == '\u{1b}' {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(character);
        }
    }
    out
}

fn fhir_get(address: &str, path: &str) -> Value {
    let answer = common::exchange(
        address,
        "GET",
        path,
        &[("Accept", "application/fhir+json")],
        None,
        Some(common::TOKEN),
    );
    assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    answer.json()
}

#[test]
fn audit_verify_detects_tampering_and_audit_events_are_valid_fhir() {
    let directory = tempfile::tempdir().expect("temp dir");
    let root = directory.path();
    let data = root.join("data");

    // A server run with FHIR traffic (audited or not, depending on the access-control hooks).
    let server = common::start(&data);
    let created = common::exchange(
        &server.address,
        "POST",
        "/fhir/Patient",
        &[("Content-Type", "application/fhir+json")],
        Some(
            &json!({
                "resourceType": "Patient",
                "identifier": [{ "system": "urn:oid:1.2.36.146.595.217.0.1", "value": "MRN-A1" }],
                "name": [{ "family": "Hopper", "given": ["Grace"] }],
                "gender": "female",
                "birthDate": "1956-12-09"
            })
            .to_string(),
        ),
        Some(common::TOKEN),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let patient: i64 = created.json()["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("numeric id");
    fhir_get(&server.address, &format!("/fhir/Patient/{patient}"));
    fhir_get(&server.address, "/fhir/Patient?_count=5");
    stop(server);
    append_directly(&data, patient);

    // Untouched: ok, with the head.
    let (ok, stdout, stderr) = verify(&data, &[]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.starts_with("ok: "), "{stdout}");
    let (head_seq, head_hash) = head_of(&stdout);
    assert!(head_seq >= 6, "{stdout}");
    assert!(
        stdout.contains(&format!("ok: {head_seq} records")),
        "{stdout}"
    );

    // The head the server logs at start is the one verify reports.
    let log = Arc::new(Mutex::new(String::new()));
    let server = common::start_with_log(&data, "info", Some(log.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let logged = loop {
        let text = plain(&log.lock().expect("log lock"));
        if let Some(line) = text.lines().find(|line| line.contains("audit chain head")) {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no head in the log:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        logged.contains(&format!("seq={head_seq}")) && logged.contains(&head_hash),
        "{logged}"
    );

    // AuditEvents, read and searched, are valid R4.
    let event = fhir_get(&server.address, "/fhir/AuditEvent/1");
    assert_eq!(event["resourceType"], "AuditEvent");
    let bundle = fhir_get(&server.address, "/fhir/AuditEvent?_count=100");
    let entries = bundle["entry"].as_array().expect("entries").clone();
    assert!(entries.len() >= 6, "{bundle}");
    let by_patient = fhir_get(
        &server.address,
        &format!("/fhir/AuditEvent?patient=Patient/{patient}&action=U&outcome=4"),
    );
    assert_eq!(
        by_patient["entry"].as_array().map(Vec::len),
        Some(1),
        "{by_patient}"
    );
    let mut resources = vec![event.to_string(), bundle.to_string()];
    resources.extend(entries.iter().map(|entry| entry["resource"].to_string()));
    common::validate_fhir(&resources);
    stop(server);

    // The directory grew (the server audits its requests, perhaps), and still verifies, also
    // against the head noted earlier.
    let anchor = format!("{head_seq}:{head_hash}");
    let (ok, stdout, stderr) = verify(&data, &["--expect-head", &anchor]);
    assert!(ok, "{stdout}{stderr}");
    let (final_seq, final_hash) = head_of(&stdout);
    assert!(final_seq >= head_seq);

    // (a) an edited record, (b) a removed one, (c) two records' seqs swapped: each copy fails,
    // naming the broken seq.
    let cases = [
        (
            "edited",
            "UPDATE audit_log SET detail = 'nothing happened' WHERE seq = 3;".to_owned(),
            "broken: record 3: its content does not match its hash",
        ),
        (
            "removed",
            "DELETE FROM audit_log WHERE seq = 3;".to_owned(),
            "broken: record 4: records 3 to 3 are missing",
        ),
        (
            "swapped",
            "UPDATE audit_log SET seq = -1 WHERE seq = 3; UPDATE audit_log SET seq = 3 WHERE seq = 4; UPDATE audit_log SET seq = 4 WHERE seq = -1;".to_owned(),
            "broken: record 3: does not link to the record before it",
        ),
        (
            "relinked",
            // A link changed: record 2 no longer points at record 1.
            "UPDATE audit_log SET previous_hash = zeroblob(32) WHERE seq = 2;".to_owned(),
            "broken: record 2: does not link to the record before it",
        ),
    ];
    for (name, sql, expected) in cases {
        let copy = tampered_copy(&data, root, name, &sql);
        let (ok, stdout, stderr) = verify(&copy, &[]);
        assert!(!ok, "{name}: verify accepted a tampered chain: {stdout}");
        assert!(stdout.contains(expected), "{name}: {stdout}");
        assert!(stderr.contains("broken at record"), "{name}: {stderr}");
    }

    // A cut-off tail is a valid shorter chain, found only against the noted head.
    let cut = tampered_copy(
        &data,
        root,
        "cut",
        &format!("DELETE FROM audit_log WHERE seq = {final_seq};"),
    );
    let (ok, stdout, _) = verify(&cut, &[]);
    assert!(ok, "{stdout}");
    let (ok, stdout, _) = verify(
        &cut,
        &["--expect-head", &format!("{final_seq}:{final_hash}")],
    );
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "broken: record {final_seq}: the chain ends at seq {}",
            final_seq - 1
        )),
        "{stdout}"
    );

    // A dropped table is no trail at all.
    let dropped = tampered_copy(&data, root, "dropped", "DROP TABLE audit_log;");
    let (ok, stdout, _) = verify(&dropped, &[]);
    assert!(
        !ok && stdout.contains("audit_log table is missing"),
        "{stdout}"
    );

    // The tampering touched copies only: the original still verifies.
    let (ok, stdout, stderr) = verify(&data, &[]);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(head_of(&stdout), (final_seq, final_hash));
    let (ok, _, stderr) = verify(&root.join("nowhere"), &[]);
    assert!(!ok && stderr.contains("no Galen database"), "{stderr}");
}
