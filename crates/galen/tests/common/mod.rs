//! Helpers shared by the end-to-end tests: run the real `galen` binary, talk plain HTTP/1.1 over
//! `std::net` (no code shared with the server).
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;

pub const TOKEN: &str = "kill-test-token-0123456789";

/// The master key of encryption at rest every test server runs with (`GALEN_DATA_KEY`).
pub const DATA_KEY: &str =
    "test-key:0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";

pub struct Server {
    pub child: Child,
    /// `HOST:PORT` of the HTTP API and dashboard.
    pub address: String,
    /// `HOST:PORT` of the HL7 v2 (MLLP) listener, when it runs.
    pub mllp: Option<String>,
    /// `HOST:PORT` of the MQTT listener, when it runs.
    pub mqtt: Option<String>,
    /// Every device listener the server printed before the dashboard line, by URL scheme
    /// (`mllp`, `mqtt`, ...).
    pub listeners: BTreeMap<String, String>,
}

pub fn start(data_dir: &Path) -> Server {
    start_with_log(data_dir, "warn", None)
}

/// Starts `galen serve` with `extra` arguments after the usual ones (for example
/// `["--mllp-addr", "127.0.0.1:0"]`).
pub fn start_with_args(data_dir: &Path, extra: &[&str]) -> Server {
    spawn(data_dir, "warn", None, None, extra)
}

/// Starts `galen serve`; with `log` given, its stderr is collected there instead of inherited.
pub fn start_with_log(data_dir: &Path, level: &str, log: Option<Arc<Mutex<String>>>) -> Server {
    spawn(data_dir, level, log, None, &[])
}

/// Starts `galen serve` with `extra` arguments at log level `level`, collecting everything it
/// writes to stderr into `log` and to stdout into `out`.
pub fn start_capturing(
    data_dir: &Path,
    level: &str,
    extra: &[&str],
    log: Arc<Mutex<String>>,
    out: Arc<Mutex<String>>,
) -> Server {
    spawn(data_dir, level, Some(log), Some(out), extra)
}

/// Starts `galen serve` and waits for its dashboard line.
///
/// The MQTT listener, unless `extra` says otherwise, listens on a free port (through its
/// environment variable, which the flag overrides), so tests running in parallel never fight over
/// the default port. The plain MLLP listener is off unless asked for (it is anonymous and needs
/// `--allow-anonymous-mllp`).
fn spawn(
    data_dir: &Path,
    level: &str,
    log: Option<Arc<Mutex<String>>>,
    out: Option<Arc<Mutex<String>>>,
    extra: &[&str],
) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_galen"))
        .args(["serve", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("GALEN_API_TOKEN", TOKEN)
        .env("GALEN_DATA_KEY", DATA_KEY)
        .env("GALEN_LOG", level)
        .env("GALEN_MQTT_ADDR", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(if log.is_some() {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .spawn()
        .expect("start galen serve");
    if let (Some(log), Some(stderr)) = (log, child.stderr.take()) {
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = log.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
        });
    }
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut listeners = BTreeMap::new();
    let address = loop {
        let line = match lines.next() {
            Some(line) => line.expect("readable stdout"),
            None => {
                let status = child.wait().expect("wait for galen");
                panic!("galen serve exited ({status}) before printing its dashboard address");
            }
        };
        if let Some(out) = &out {
            let mut out = out.lock().expect("stdout lock");
            out.push_str(&line);
            out.push('\n');
        }
        // The dashboard line: `http://` or, with a server certificate, `https://`.
        if let Some(rest) = line
            .split("http://")
            .nth(1)
            .or_else(|| line.split("https://").nth(1))
        {
            break url_address(rest);
        }
        if let Some((scheme, address)) = listener_line(&line) {
            listeners.insert(scheme, address);
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(out) = &out {
                let mut out = out.lock().expect("stdout lock");
                out.push_str(&line);
                out.push('\n');
            }
        }
    });
    Server {
        child,
        address,
        mllp: listeners.get("mllp").cloned(),
        mqtt: listeners.get("mqtt").cloned(),
        listeners,
    }
}

/// `HOST:PORT` at the start of what follows `scheme://`.
fn url_address(rest: &str) -> String {
    rest.split(|character: char| character.is_whitespace() || character == '/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// `(scheme, HOST:PORT)` of a line such as `galen: HL7 v2 over MLLP at mllp://127.0.0.1:2575`.
fn listener_line(line: &str) -> Option<(String, String)> {
    let (before, rest) = line.split_once("://")?;
    let scheme: String = before
        .chars()
        .rev()
        .take_while(|character| {
            character.is_ascii_alphanumeric() || matches!(character, '+' | '-' | '.')
        })
        .collect::<Vec<char>>()
        .into_iter()
        .rev()
        .collect();
    let address = url_address(rest);
    (!scheme.is_empty() && !address.is_empty()).then(|| (scheme.to_ascii_lowercase(), address))
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
pub fn request(
    address: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let (head, rest) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok((status, body))
}

/// An HTTP answer: status, headers (names lower-cased) and body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }
}

/// One HTTP/1.1 request with the given headers (and the test token unless `token` is `None`).
pub fn exchange(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    token: Option<&str>,
) -> Answer {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let body = body.unwrap_or("");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body.as_bytes()).expect("write body");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let (head, rest) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// One HTTPS request with curl (OpenSSL: a TLS client independent of Galen's rustls), trusting
/// only the CA certificate `ca`, with the test token unless `token` is `None`. Fails the test,
/// saying how to install curl, when it is missing; a failed handshake is status 0 with curl's
/// message as the body.
pub fn https(
    address: &str,
    ca: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Answer {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(ca)
        .args([
            "-X",
            method,
            "-D",
            "-",
            "-H",
            "Content-Type: application/json",
        ]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    if let Some(body) = body {
        command.args(["--data-binary", body]);
    }
    let output = command
        .arg(format!("https://{address}{path}"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run curl ({error}); install it (Debian: apt-get install curl)")
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Answer {
            status: 0,
            headers: Vec::new(),
            body: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
    }
    let (head, body) = stdout.split_once("\r\n\r\n").unwrap_or((&stdout, ""));
    let status = head
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Validates FHIR JSON resources (one per entry) with the independent R4 validator
/// `tests/interop/fhir_validate.py` (Python `fhir.resources` 6.4.0, from `GALEN_PYTHON`, default
/// `python3`); fails the test, saying how to install it, when it is missing.
pub fn validate_fhir(resources: &[String]) {
    const INSTALL: &str = "scripts/test (or pip install -r tests/interop/requirements.txt)";
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var("GALEN_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let mut child = Command::new(&python)
        .arg(root.join("tests/interop/fhir_validate.py"))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {python} ({error}); run {INSTALL}"));
    let mut input = resources.join("\n");
    input.push('\n');
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes());
    let output = child.wait_with_output().expect("validator finishes");
    assert_ne!(
        output.status.code(),
        Some(3),
        "the FHIR validator needs fhir.resources 6.4.0: run {INSTALL}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "Galen served invalid FHIR:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        report.contains(&format!(
            "validated {} resources, 0 failed",
            resources.len()
        )),
        "{report}"
    );
}

/// A clinical configuration without timer-driven transitions during the test: no escalation, no
/// silent-device alarm (their mapping is unit-tested in galen-fhir).
pub fn quiet_clinical_config(directory: &std::path::Path) -> String {
    let config = include_str!("../../../galen-clinical/config/default.toml")
        .replace(
            "version = \"galen-default-2026.2\"",
            "version = \"fhir-test-1\"",
        )
        .replace(
            "after_seconds = { high = 120, medium = 300 }",
            "after_seconds = { high = 86400, medium = 86400 }",
        )
        .replace("silent_after_seconds = 60", "silent_after_seconds = 86400");
    assert!(
        config.contains("high = 86400") && config.contains("silent_after_seconds = 86400"),
        "the default clinical configuration changed"
    );
    let path = directory.join("clinical.toml");
    std::fs::write(&path, config).expect("write the configuration");
    path.display().to_string()
}

pub fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || tail.len() < size {
            break;
        }
        body.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    body
}

pub fn post(address: &str, path: &str, body: &Value) -> Value {
    let (status, answer) =
        request(address, "POST", path, Some(&body.to_string())).expect("request");
    assert!(
        (200..300).contains(&status),
        "{path} answered {status}: {answer}"
    );
    serde_json::from_str(&answer).expect("json")
}

pub fn micros_to_rfc3339(micros: i64) -> String {
    let time =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).expect("time");
    time.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
