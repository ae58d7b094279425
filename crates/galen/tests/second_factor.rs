//! The TOTP second factor of the real binary against an independent generator: `galen users
//! add` makes an administrator, `galen serve --require-admin-totp` lets it do nothing but enrol,
//! and PyOTP (`tests/interop/totp_codes.py`, from `GALEN_PYTHON`) reads the enrolment's
//! `otpauth://` URI and computes the codes that confirm the factor and sign in, each once.
//!
//! PyOTP is required, not optional: a missing package fails the test with the command that
//! installs it.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Answer, exchange, start_with_args};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const INSTALL: &str = "pip install -r tests/interop/requirements.txt";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The codes PyOTP computes from `uri`: its parsed parameters and the current and next codes.
fn pyotp(uri: &str) -> Value {
    let python = std::env::var("GALEN_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = Command::new(&python)
        .arg(workspace_root().join("tests/interop/totp_codes.py"))
        .args(["--uri", uri])
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run {python} ({error}); install Python 3, then `{INSTALL}`")
        });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(
        output.status.code(),
        Some(3),
        "PyOTP is missing: run `{INSTALL}`\n{stderr}"
    );
    assert!(output.status.success(), "totp_codes.py failed: {stderr}");
    serde_json::from_slice(&output.stdout).expect("one JSON line")
}

fn login(address: &str, code: Option<&str>) -> Answer {
    let mut form = format!("name=ada&password={}", PASSWORD.replace(' ', "+"));
    if let Some(code) = code {
        form.push_str(&format!("&code={code}"));
    }
    exchange(
        address,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(&form),
        None,
    )
}

fn session_of(answer: &Answer) -> String {
    assert_eq!(answer.status, 303, "signed in: {}", answer.body);
    answer
        .header("set-cookie")
        .and_then(|cookie| cookie.split(';').next())
        .expect("a session cookie")
        .to_owned()
}

/// A request with the session cookie (and the Host/Origin pair the cross-site check wants).
fn with_session(
    address: &str,
    session: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Answer {
    let origin = format!("http://{address}");
    let body = body.map(Value::to_string);
    exchange(
        address,
        method,
        path,
        &[
            ("Cookie", session),
            ("Origin", &origin),
            ("Content-Type", "application/json"),
        ],
        body.as_deref(),
        None,
    )
}

#[test]
fn an_administrator_enrols_with_an_independent_authenticator_and_signs_in_with_it() {
    let directory = tempfile::tempdir().expect("temp dir");
    let mut add = Command::new(env!("CARGO_BIN_EXE_galen"))
        .args([
            "users",
            "add",
            "--name",
            "ada",
            "--role",
            "administrator",
            "--data-dir",
        ])
        .arg(directory.path())
        .env("GALEN_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("galen users add");
    writeln!(add.stdin.take().expect("stdin"), "{PASSWORD}").expect("password");
    assert!(add.wait().expect("wait").success());

    let server = start_with_args(directory.path(), &["--require-admin-totp"]);
    let address = server.address.clone();
    let session = session_of(&login(&address, None));
    // Nothing but enrolment until the second factor is active.
    let refused = with_session(&address, &session, "GET", "/api/v1/users", None);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("second factor"), "{}", refused.body);

    let enrolment = with_session(&address, &session, "POST", "/api/v1/session/totp", None);
    assert_eq!(enrolment.status, 201, "{}", enrolment.body);
    let uri = enrolment.json()["uri"].as_str().expect("uri").to_owned();
    let codes = pyotp(&uri);
    assert_eq!(
        (
            &codes["issuer"],
            &codes["name"],
            &codes["digits"],
            &codes["interval"],
            &codes["algorithm"]
        ),
        (
            &json!("Galen"),
            &json!("ada"),
            &json!(6),
            &json!(30),
            &json!("sha1")
        ),
        "PyOTP reads the URI's parameters: {codes}"
    );
    let confirm = with_session(
        &address,
        &session,
        "POST",
        "/api/v1/session/totp/confirm",
        Some(&json!({ "code": codes["now"] })),
    );
    assert_eq!(
        confirm.status, 200,
        "PyOTP's code confirms: {}",
        confirm.body
    );
    let allowed = with_session(&address, &session, "GET", "/api/v1/users", None);
    assert_eq!(allowed.status, 200, "{}", allowed.body);

    // Sign-in now needs a code: none and a used one fail alike; PyOTP's next code works once.
    let without = login(&address, None);
    assert_eq!(without.status, 401);
    let used = login(&address, codes["now"].as_str());
    assert_eq!(used.status, 401, "the confirming code is used up");
    assert_eq!(used.body, without.body);
    let fresh = session_of(&login(&address, codes["next"].as_str()));
    let me = with_session(&address, &fresh, "GET", "/api/v1/session", None);
    assert_eq!(me.json()["second_factor"], true);
    let replayed = login(&address, codes["next"].as_str());
    assert_eq!(replayed.status, 401, "a code works once");
    assert_eq!(replayed.body, without.body);
}
