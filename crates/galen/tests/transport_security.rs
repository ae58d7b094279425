//! Transport security of the real binary: `galen serve` refuses plaintext listeners on
//! addresses other than loopback unless `--allow-plaintext` is given; `galen certs` makes a CA, a
//! server certificate and device certificates that work with independent clients (HTTPS with
//! curl, MQTT over TLS with `mosquitto_pub`, both OpenSSL); the rate limit and the security
//! headers as configured by flags, over the wire. Needs curl and mosquitto-clients (Debian).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::json;

use common::{TOKEN, exchange, https, micros_to_rfc3339, start_with_args};

const SERIAL: &str = "CERTS-DEV-0001";

fn galen(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_galen"));
    command
        .args(args)
        .env("GALEN_API_TOKEN", TOKEN)
        .env("GALEN_DATA_KEY", common::DATA_KEY)
        .env("GALEN_LOG", "warn")
        .env_remove("GALEN_ALLOW_PLAINTEXT")
        .stdin(Stdio::null());
    command
}

#[test]
fn plaintext_on_a_public_address_is_refused_unless_allowed() {
    let directory = tempfile::tempdir().expect("temp dir");
    let data = directory.path().display().to_string();
    for (flags, named) in [
        (
            ["0.0.0.0:0", "off", "off"],
            "HTTP on 0.0.0.0:0 (--http-addr)",
        ),
        (
            ["127.0.0.1:0", "0.0.0.0:0", "off"],
            "MQTT on 0.0.0.0:0 (--mqtt-addr)",
        ),
        (
            ["127.0.0.1:0", "off", "[::]:0"],
            "HL7 v2 (MLLP) on [::]:0 (--mllp-addr)",
        ),
    ] {
        let output = galen(&[
            "serve",
            "--data-dir",
            &data,
            "--http-addr",
            flags[0],
            "--mqtt-addr",
            flags[1],
            "--mllp-addr",
            flags[2],
        ])
        .output()
        .expect("run galen serve");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{named}: {stderr}");
        assert!(
            stderr.contains("refusing to start")
                && stderr.contains(named)
                && stderr.contains("--allow-plaintext")
                && stderr.contains("--tls-cert"),
            "{stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&output.stdout).contains("galen:"),
            "nothing was served"
        );
    }

    // Allowed explicitly (here through the environment), it starts.
    let mut child = galen(&[
        "serve",
        "--data-dir",
        &data,
        "--http-addr",
        "127.0.0.1:0",
        "--mqtt-addr",
        "0.0.0.0:0",
        "--mllp-addr",
        "off",
    ])
    .env("GALEN_ALLOW_PLAINTEXT", "true")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start galen serve");
    let stdout = child.stdout.take().expect("stdout");
    let started = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("dashboard at http://"));
    let _ = child.kill();
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        started,
        "did not start with GALEN_ALLOW_PLAINTEXT: {stderr}"
    );
    assert!(
        stderr.contains("plaintext listeners") && stderr.contains("MQTT on 0.0.0.0:0"),
        "the exception is logged: {stderr}"
    );
}

#[test]
fn anonymous_mllp_is_refused_unless_allowed() {
    let directory = tempfile::tempdir().expect("temp dir");
    let data = directory.path().join("data").display().to_string();
    let pki = directory.path().join("pki");
    run_certs(&pki, "SN-A");
    let path = |name: &str| pki.join(name).display().to_string();
    let (certificate, key) = (path("server.pem"), path("server-key.pem"));
    for (extra, named) in [
        (
            vec!["--mllp-addr", "127.0.0.1:0"],
            "HL7 v2 (MLLP) on 127.0.0.1:0 (--mllp-addr)",
        ),
        (
            vec![
                "--mllp-tls-addr",
                "127.0.0.1:0",
                "--tls-cert",
                &certificate,
                "--tls-key",
                &key,
            ],
            "HL7 v2 over MLLP/TLS without --device-ca on 127.0.0.1:0 (--mllp-tls-addr)",
        ),
    ] {
        let mut args = vec![
            "serve",
            "--data-dir",
            &data,
            "--http-addr",
            "127.0.0.1:0",
            "--mqtt-addr",
            "off",
        ];
        args.extend(extra);
        let output = galen(&args)
            .env_remove("GALEN_ALLOW_ANONYMOUS_MLLP")
            .output()
            .expect("run galen serve");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{named}: {stderr}");
        assert!(
            stderr.contains("refusing to start")
                && stderr.contains(named)
                && stderr.contains("--allow-anonymous-mllp")
                && stderr.contains("--device-ca"),
            "{stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&output.stdout).contains("galen:"),
            "nothing was served"
        );
    }

    // Allowed explicitly (here through the environment), it starts and says so in its log.
    let mut child = galen(&[
        "serve",
        "--data-dir",
        &data,
        "--http-addr",
        "127.0.0.1:0",
        "--mqtt-addr",
        "off",
        "--mllp-addr",
        "127.0.0.1:0",
    ])
    .env("GALEN_ALLOW_ANONYMOUS_MLLP", "true")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start galen serve");
    let stdout = child.stdout.take().expect("stdout");
    let started = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("dashboard at http://"));
    let _ = child.kill();
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        started,
        "did not start with GALEN_ALLOW_ANONYMOUS_MLLP: {stderr}"
    );
    assert!(
        stderr.contains("--allow-anonymous-mllp") && stderr.contains("HL7 v2 (MLLP) on"),
        "the exception is logged: {stderr}"
    );
}

/// An MLLP/TLS client: OpenSSL's `s_client` (independent of Galen's rustls), trusting `ca`,
/// presenting `identity` (certificate and key files) if given. Sends `message` in an MLLP frame
/// and returns the ACK, or `None` when the connection ended without one (a refused handshake).
fn mllp_over_openssl(
    address: &str,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    message: &str,
) -> Option<String> {
    let mut command = Command::new("openssl");
    command
        .args(["s_client", "-connect", address, "-quiet", "-ign_eof"])
        .args(["-verify_return_error", "-CAfile"])
        .arg(ca);
    if let Some((certificate, key)) = identity {
        command.arg("-cert").arg(certificate).arg("-key").arg(key);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot run openssl ({error}); install it (Debian: apt-get install openssl)")
        });
    let mut frame = vec![0x0B];
    frame.extend_from_slice(message.as_bytes());
    frame.extend_from_slice(&[0x1C, 0x0D]);
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(&frame);
    let _ = stdin.flush();
    let mut stdout = child.stdout.take().expect("stdout");
    // The server keeps a good connection open, so s_client never ends by itself: it is ended
    // once the ACK is read, or after 20 s (which ends the read below).
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let reaper = std::thread::spawn(move || {
        let _ = finished.recv_timeout(Duration::from_secs(20));
        let _ = child.kill();
        let _ = child.wait();
    });
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !received.ends_with(&[0x1C, 0x0D]) {
        match stdout.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
        }
    }
    drop(stdin);
    let _ = done.send(());
    reaper.join().expect("s_client ended");
    let start = received.iter().position(|byte| *byte == 0x0B)?;
    let end = received.iter().rposition(|byte| *byte == 0x1C)?;
    (start < end).then(|| String::from_utf8_lossy(&received[start + 1..end]).into_owned())
}

fn oru(control: &str, sender: &str, time: i64) -> String {
    let time = time::OffsetDateTime::from_unix_timestamp(time / 1_000_000).expect("time");
    let stamp = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}+0000",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    );
    [
        format!(
            "MSH|^~\\&|MON^{sender}^EUI-64|ICU|GALEN|HOSP|{stamp}||ORU^R01^ORU_R01|{control}|P|2.6"
        ),
        format!("OBR|1|||182777000^monitoring of patient^SCT|||{stamp}"),
        format!(
            "OBX|1|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC|1.1.1.2|72|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||F|||{stamp}"
        ),
    ]
    .join("\r")
}

#[test]
fn galen_certs_device_certificates_bind_mllp_over_tls() {
    let directory = tempfile::tempdir().expect("temp dir");
    let pki = directory.path().join("pki");
    run_certs(&pki, "SN-A,SN-B");
    let path = |name: &str| pki.join(name).display().to_string();
    let server = start_with_args(
        &directory.path().join("data"),
        &[
            "--tls-cert",
            &path("server.pem"),
            "--tls-key",
            &path("server-key.pem"),
            "--device-ca",
            &path("ca.pem"),
            "--mllp-tls-addr",
            "127.0.0.1:0",
            "--mqtt-addr",
            "off",
        ],
    );
    let ca = pki.join("ca.pem");
    let mut ids = Vec::new();
    for serial in ["SN-A", "SN-B"] {
        let body = json!({
            "serial": serial, "manufacturer": "Interop", "model": "galen certs device",
            "kind": "monitor", "status": "active",
        })
        .to_string();
        let device = https(
            &server.address,
            &ca,
            "POST",
            "/api/v1/devices",
            Some(&body),
            Some(TOKEN),
        );
        assert_eq!(device.status, 201, "{}", device.body);
        ids.push(device.json()["id"].as_i64().expect("device id"));
    }
    let mllps = server
        .listeners
        .get("mllps")
        .cloned()
        .unwrap_or_else(|| panic!("no mllps:// line: {:?}", server.listeners));
    let identity_a = (
        pki.join("devices/SN-A.pem"),
        pki.join("devices/SN-A-key.pem"),
    );
    let identity_a = Some((identity_a.0.as_path(), identity_a.1.as_path()));
    let time = now_micros() - 10 * 1_000_000;

    // SN-A for itself: accepted.
    let ack = mllp_over_openssl(&mllps, &ca, identity_a, &oru("OWN-1", "SN-A", time))
        .expect("an ACK for SN-A's own message");
    assert!(ack.contains("MSA|AA|OWN-1"), "{ack}");
    // SN-A's certificate sending for SN-B: refused, naming the certified device.
    let ack = mllp_over_openssl(&mllps, &ca, identity_a, &oru("FORGED-1", "SN-B", time))
        .expect("an ACK for the forged message");
    assert!(
        ack.contains("MSA|AR|FORGED-1") && ack.contains("SN-A") && ack.contains("MSH-3"),
        "{ack}"
    );
    // No certificate: no ACK (the handshake fails).
    assert_eq!(
        mllp_over_openssl(&mllps, &ca, None, &oru("ANON-1", "SN-B", time)),
        None,
        "an anonymous client got an answer"
    );

    let letters = https(
        &server.address,
        &ca,
        "GET",
        "/api/v1/dead-letters",
        None,
        Some(TOKEN),
    );
    assert_eq!(letters.status, 200, "{}", letters.body);
    let items = letters.json()["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 1, "the forged message only: {items:?}");
    assert_eq!(items[0]["reason"], "forbidden");
    let vitals = |id: i64| {
        let reply = https(
            &server.address,
            &ca,
            "GET",
            &format!(
                "/api/v1/devices/{id}/vitals?code=heart_rate&from={}&to={}",
                micros_to_rfc3339(time - 2_000_000),
                micros_to_rfc3339(now_micros() + 1_000_000)
            ),
            None,
            Some(TOKEN),
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["points"].as_array().expect("points").len()
    };
    assert_eq!(
        (vitals(ids[0]), vitals(ids[1])),
        (1, 0),
        "SN-A stored, SN-B untouched"
    );
}

fn mosquitto_pub(args: &[&str]) -> Output {
    Command::new("mosquitto_pub")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run mosquitto_pub ({error}); install it (Debian: apt-get install mosquitto-clients)")
        })
}

fn now_micros() -> i64 {
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
    i64::try_from(now).expect("a time in range")
}

fn run_certs(out: &Path, devices: &str) -> String {
    let output = galen(&["certs", "--out"])
        .arg(out)
        .args(["--devices", devices])
        .output()
        .expect("run galen certs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "galen certs: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !stdout.contains("PRIVATE KEY") && !stdout.contains("BEGIN"),
        "no key or certificate is printed: {stdout}"
    );
    stdout
}

#[test]
fn galen_certs_make_certificates_for_https_and_mqtt_devices() {
    let directory = tempfile::tempdir().expect("temp dir");
    let pki = directory.path().join("pki");
    let printed = run_certs(&pki, SERIAL);
    assert!(printed.contains("server.pem"), "{printed}");
    #[cfg(unix)]
    for key in [
        "ca-key.pem",
        "server-key.pem",
        &format!("devices/{SERIAL}-key.pem"),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(pki.join(key))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let file = |name: &str| -> PathBuf { pki.join(name) };
    let path = |name: &str| file(name).display().to_string();

    let data = directory.path().join("data");
    let server = start_with_args(
        &data,
        &[
            "--tls-cert",
            &path("server.pem"),
            "--tls-key",
            &path("server-key.pem"),
            "--device-ca",
            &path("ca.pem"),
            "--mqtt-tls-addr",
            "127.0.0.1:0",
            "--mqtt-addr",
            "off",
            "--mllp-addr",
            "off",
        ],
    );
    let ca = file("ca.pem");

    // HTTPS, verified by curl against the generated CA; HSTS only over TLS.
    let health = https(&server.address, &ca, "GET", "/healthz", None, None);
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(
        health.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    assert!(health.header("content-security-policy").is_some());
    // A client that trusts another CA refuses the server.
    let other = directory.path().join("other");
    run_certs(&other, "X-1");
    let refused = https(
        &server.address,
        &other.join("ca.pem"),
        "GET",
        "/healthz",
        None,
        None,
    );
    assert_eq!(refused.status, 0, "an untrusted server was accepted");
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let mut plain = TcpStream::connect(&server.address).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(plain, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "plaintext served on the HTTPS listener"
    );

    // The device's certificate is its only credential over MQTT/TLS.
    let body = json!({
        "serial": SERIAL,
        "manufacturer": "Interop",
        "model": "galen certs device",
        "kind": "monitor",
        "status": "active",
    })
    .to_string();
    let device = https(
        &server.address,
        &ca,
        "POST",
        "/api/v1/devices",
        Some(&body),
        Some(TOKEN),
    );
    assert_eq!(device.status, 201, "{}", device.body);
    let id = device.json()["id"].as_i64().expect("device id");
    let mqtts = server
        .listeners
        .get("mqtts")
        .cloned()
        .unwrap_or_else(|| panic!("no mqtts:// line: {:?}", server.listeners));
    let (host, port) = mqtts.rsplit_once(':').expect("HOST:PORT");
    let time = now_micros() - 10 * 1_000_000;
    let payload = json!({
        "code": "heart_rate",
        "value": 72,
        "unit": "/min",
        "time": micros_to_rfc3339(time),
    })
    .to_string();
    let topic = format!("galen/v1/devices/{SERIAL}/measurements");
    let output = mosquitto_pub(&[
        "-h",
        host,
        "-p",
        port,
        "--cafile",
        &path("ca.pem"),
        "--cert",
        &path(&format!("devices/{SERIAL}.pem")),
        "--key",
        &path(&format!("devices/{SERIAL}-key.pem")),
        "-q",
        "1",
        "-i",
        "certs-test",
        "-t",
        &topic,
        "-m",
        &payload,
    ]);
    assert!(output.status.success(), "mosquitto_pub: {output:?}");
    let vitals = format!(
        "/api/v1/devices/{id}/vitals?code=heart_rate&from={}&to={}",
        micros_to_rfc3339(time - 1_000_000),
        micros_to_rfc3339(now_micros() + 1_000_000)
    );
    let reply = https(&server.address, &ca, "GET", &vitals, None, Some(TOKEN));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let values: Vec<f64> = reply.json()["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|point| point["value"].as_f64().expect("value"))
        .collect();
    assert_eq!(values, vec![72.0], "stored from mosquitto_pub over TLS");
}

#[test]
fn rate_limit_and_headers_as_configured_over_the_wire() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = start_with_args(
        directory.path(),
        &[
            "--rate-limit",
            "1",
            "--rate-limit-burst",
            "2",
            "--trusted-proxies",
            "127.0.0.1",
        ],
    );
    // The server believes the proxy on 127.0.0.1 about its client.
    let from = |client: &str| {
        exchange(
            &server.address,
            "GET",
            "/api/v1/patients",
            &[("X-Forwarded-For", client)],
            None,
            Some(TOKEN),
        )
    };
    assert_eq!(from("203.0.113.9").status, 200);
    assert_eq!(from("203.0.113.9").status, 200);
    let limited = from("203.0.113.9");
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.json()["error"], "rate_limited");
    assert_eq!(from("203.0.113.10").status, 200, "another client");
    // The proxy itself (loopback) is not limited.
    let metrics = exchange(&server.address, "GET", "/metrics", &[], None, Some(TOKEN));
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.header("cache-control"), Some("no-store"));
    assert_eq!(metrics.header("x-frame-options"), Some("DENY"));
    assert_eq!(
        metrics.header("strict-transport-security"),
        None,
        "plain HTTP"
    );
    assert!(
        metrics
            .body
            .contains("galen_http_refused_total{reason=\"rate_limited\"} 1"),
        "{}",
        metrics.body
    );
}
