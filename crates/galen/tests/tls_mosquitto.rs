//! MQTT over TLS against the real binary with an independent client: Mosquitto's `mosquitto_pub`
//! (OpenSSL) authenticates with a device certificate and no password; a certificate from another
//! CA is refused. Certificates are made here with rcgen. Needs `mosquitto_pub` (Debian:
//! mosquitto-clients); a missing one fails the test with that hint.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};

use common::{TOKEN, https, micros_to_rfc3339, start_with_args};

const SERIAL: &str = "TLS-MOSQ-0001";

/// A CA: its certificate in PEM, and the issuer that signs with it.
fn authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let pem = params.self_signed(&key).expect("CA certificate").pem();
    (pem, Issuer::new(params, key))
}

/// A certificate signed by `issuer`: `(certificate PEM, key PEM)`.
fn issue(
    issuer: &Issuer<'static, KeyPair>,
    common_name: &str,
    names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(names).expect("params");
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![usage];
    let certificate = params.signed_by(&key, issuer).expect("signed");
    (certificate.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write PEM");
    path
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

#[test]
fn mosquitto_pub_with_a_device_certificate_over_tls() {
    let directory = tempfile::tempdir().expect("temp dir");
    let pki = directory.path();
    let (ca_pem, ca) = authority("Galen test device CA");
    let (server_pem, server_key) = issue(
        &ca,
        "galen",
        vec!["localhost".into(), "127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (device_pem, device_key) =
        issue(&ca, SERIAL, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth);
    let (_, stranger) = authority("Someone else's CA");
    let (forged_pem, forged_key) = issue(
        &stranger,
        SERIAL,
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let ca_file = write(pki, "ca.pem", &ca_pem);
    let server_cert = write(pki, "server.pem", &server_pem);
    let server_key = write(pki, "server.key", &server_key);
    let device_cert = write(pki, "dev.pem", &device_pem);
    let device_key = write(pki, "dev.key", &device_key);
    let forged_cert = write(pki, "forged.pem", &forged_pem);
    let forged_key = write(pki, "forged.key", &forged_key);
    let path = |path: &PathBuf| path.display().to_string();

    let data = directory.path().join("data");
    let server = start_with_args(
        &data,
        &[
            "--mqtt-tls-addr",
            "127.0.0.1:0",
            "--tls-cert",
            &path(&server_cert),
            "--tls-key",
            &path(&server_key),
            "--device-ca",
            &path(&ca_file),
            "--mqtt-addr",
            "off",
            "--mllp-addr",
            "off",
        ],
    );
    let mqtts = server
        .listeners
        .get("mqtts")
        .cloned()
        .unwrap_or_else(|| panic!("no mqtts:// line; listeners: {:?}", server.listeners));
    assert!(!server.listeners.contains_key("mqtt"), "plain MQTT is off");
    let (host, port) = mqtts.rsplit_once(':').expect("HOST:PORT");

    // A device registered without any password: its certificate is its credential. With a
    // server certificate the HTTP API is HTTPS too.
    let body = json!({
        "serial": SERIAL,
        "manufacturer": "Interop",
        "model": "TLS test device",
        "kind": "monitor",
        "status": "active",
    })
    .to_string();
    let device = https(
        &server.address,
        &ca_file,
        "POST",
        "/api/v1/devices",
        Some(&body),
        Some(TOKEN),
    );
    assert_eq!(device.status, 201, "{}", device.body);
    let id = device.json()["id"].as_i64().expect("device id");

    let time = now_micros() - 10 * 1_000_000;
    let topic = format!("galen/v1/devices/{SERIAL}/measurements");
    let publish = |certificate: &PathBuf, key: &PathBuf, value: u32| {
        let payload = json!({
            "code": "heart_rate",
            "value": value,
            "unit": "/min",
            "time": micros_to_rfc3339(time + i64::from(value)),
        })
        .to_string();
        mosquitto_pub(&[
            "-h",
            host,
            "-p",
            port,
            "--cafile",
            &path(&ca_file),
            "--cert",
            &path(certificate),
            "--key",
            &path(key),
            "-q",
            "1",
            "-i",
            &format!("tls-{value}"),
            "-t",
            &topic,
            "-m",
            &payload,
        ])
    };
    let output = publish(&device_cert, &device_key, 61);
    assert!(
        output.status.success(),
        "mosquitto_pub with the device certificate: {output:?}"
    );
    let forged = publish(&forged_cert, &forged_key, 99);
    assert!(
        !forged.status.success(),
        "a certificate from another CA was accepted: {forged:?}"
    );

    let vitals = format!(
        "/api/v1/devices/{id}/vitals?code=heart_rate&from={}&to={}",
        micros_to_rfc3339(time - 1_000_000),
        micros_to_rfc3339(now_micros() + 1_000_000)
    );
    let reply = https(&server.address, &ca_file, "GET", &vitals, None, Some(TOKEN));
    assert_eq!(reply.status, 200, "{vitals}: {}", reply.body);
    let answer: Value = reply.json();
    let values: Vec<f64> = answer["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|point| point["value"].as_f64().expect("value"))
        .collect();
    assert_eq!(values, vec![61.0], "stored from mosquitto_pub over TLS");
}
