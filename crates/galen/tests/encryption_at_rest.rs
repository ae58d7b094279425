//! Encryption at rest through the binary: `galen serve` refuses to run without a master key
//! unless told the volume is encrypted; `galen keys generate` writes a key file only its owner
//! can read; a served patient's name never reaches the database file in the clear; after
//! `galen keys rotate` only the new key opens the directory.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;

fn galen(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_galen"));
    command
        .args(args)
        .env("GALEN_API_TOKEN", common::TOKEN)
        .env("GALEN_LOG", "warn")
        .env_remove("GALEN_DATA_KEY")
        .env_remove("GALEN_DATA_KEY_FILE")
        .env_remove("GALEN_ALLOW_UNENCRYPTED_DATA")
        .stdin(Stdio::null());
    command
}

fn on_disk(dir: &Path, text: &str) -> bool {
    ["galen.db", "galen.db-wal"].iter().any(|file| {
        std::fs::read(dir.join(file)).is_ok_and(|bytes| {
            bytes
                .windows(text.len())
                .any(|window| window == text.as_bytes())
        })
    })
}

#[test]
fn serve_needs_a_master_key_and_keeps_names_sealed() {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let data_arg = data.to_str().expect("utf-8 path");

    let refused = galen(&[
        "serve",
        "--data-dir",
        data_arg,
        "--http-addr",
        "127.0.0.1:0",
        "--mqtt-addr",
        "off",
        "--mllp-addr",
        "off",
    ])
    .output()
    .expect("run galen serve");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing to start")
            && stderr.contains("--data-key-file")
            && stderr.contains("--allow-unencrypted-data"),
        "{stderr}"
    );

    let key_file = root.path().join("galen.key");
    let key_arg = key_file.to_str().expect("utf-8 path");
    let made = galen(&["keys", "generate", "--out", key_arg, "--id", "2026-11"])
        .output()
        .expect("run galen keys generate");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let key = std::fs::read_to_string(&key_file).expect("key file");
    assert!(key.starts_with("2026-11:") && key.trim().len() == "2026-11:".len() + 64);
    assert!(
        !String::from_utf8_lossy(&made.stdout).contains(&key.trim()[8..]),
        "the key is never printed"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = galen(&["keys", "generate", "--out", key_arg, "--id", "x"])
        .output()
        .expect("run galen keys generate");
    assert!(!again.status.success(), "a key file is never overwritten");

    // A served patient: sealed on disk.
    let server = common::start_with_args(&data, &["--data-key-file", key_arg]);
    let created = common::post(
        &server.address,
        "/api/v1/patients",
        &json!({ "identifier": { "system": "urn:mrn", "value": "MRN-PHI-7731" },
                 "name": { "family": "Quaxley", "given": "Zebulon" },
                 "birth_date": "1932-02-29", "sex": "male", "ward": "ICU", "bed": "7" }),
    );
    assert_eq!(created["name"]["family"], "Quaxley", "{created}");
    drop(server);
    for phi in ["Quaxley", "Zebulon", "MRN-PHI-7731", "1932-02-29"] {
        assert!(!on_disk(&data, phi), "{phi} is on disk in the clear");
    }

    // Rotation: the new key opens the directory, the old one no longer does.
    let new_key = root.path().join("galen-2.key");
    let new_arg = new_key.to_str().expect("utf-8 path");
    assert!(
        galen(&["keys", "generate", "--out", new_arg, "--id", "2027-05"])
            .status()
            .expect("generate")
            .success()
    );
    let rotated = galen(&[
        "keys",
        "rotate",
        "--data-dir",
        data_arg,
        "--old-key-file",
        key_arg,
        "--new-key-file",
        new_arg,
    ])
    .output()
    .expect("run galen keys rotate");
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert!(String::from_utf8_lossy(&rotated.stdout).contains("1 patients"));
    let old = galen(&[
        "serve",
        "--data-dir",
        data_arg,
        "--data-key-file",
        key_arg,
        "--http-addr",
        "127.0.0.1:0",
        "--mqtt-addr",
        "off",
        "--mllp-addr",
        "off",
    ])
    .output()
    .expect("run galen serve");
    let stderr = String::from_utf8_lossy(&old.stderr);
    assert!(
        !old.status.success() && stderr.contains("'2027-05'"),
        "{stderr}"
    );
    let listed = galen(&[
        "users",
        "--data-key-file",
        new_arg,
        "list",
        "--data-dir",
        data_arg,
    ])
    .output()
    .expect("run galen users list");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
}
