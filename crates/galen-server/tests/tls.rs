//! The device listeners over TLS, in-process with certificates made by rcgen: MQTT with a
//! password, MQTT with a device certificate (the certificate's CN is the serial), a certificate
//! from another CA refused at the handshake, HL7 v2 over MLLP/TLS bound to the device certificate
//! (messages for another device refused), and start-up errors that name the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use galen_hl7v2::mllp::{Decoder, Frame, encode_frame};
use galen_model::{
    DeviceKind, DeviceStatus, HumanName, Identifier, ManualClock, NewAssignment, NewDevice,
    NewPatient, Sex, Timestamp, VitalSign,
};
use galen_server::{App, DeviceTls, ServerConfig, TlsFiles};
use galen_store::Store;
use galen_store::embedded::{SqliteOptions, SqliteStore};
use mqtt5_protocol::packet::Packet;
use mqtt5_protocol::packet::connect::ConnectPacket;
use mqtt5_protocol::types::{ConnectOptions, QoS};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::Digest;
use tempfile::TempDir;

mod support;
use support::{MqttClient, NOW, bytes_of, measurement, stored};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const SECRET_A: &str = "secret-of-device-a-0123456789";
const MONITOR: &str = "0012345678ABCDEF";

/// A certificate and its key, in PEM.
struct Pem {
    certificate: String,
    key: String,
}

/// A CA that signs server and device certificates.
struct Authority {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        Authority {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for localhost and 127.0.0.1.
    fn server(&self) -> Pem {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let mut params = CertificateParams::new(names).expect("server params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "galen");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A device (client) certificate whose subject CN is `serial`.
    fn device(&self, serial: &str) -> Pem {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("device params");
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Acme");
        params.distinguished_name.push(DnType::CommonName, serial);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Pem {
        let key = KeyPair::generate().expect("key");
        let certificate = params.signed_by(&key, &self.issuer).expect("signed");
        Pem {
            certificate: certificate.pem(),
            key: key.serialize_pem(),
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write PEM");
    path
}

struct Harness {
    app: App,
    store: Arc<dyn Store>,
    mqtt: SocketAddr,
    mllp: SocketAddr,
    ca: Authority,
    _dir: TempDir,
}

fn device(serial: &str) -> NewDevice {
    NewDevice {
        serial: serial.into(),
        manufacturer: "Acme".into(),
        model: "Hub".into(),
        kind: DeviceKind::Monitor,
        status: DeviceStatus::Active,
    }
}

/// DEV-A (with a password), DEV-B, and MONITOR assigned to patient MRN-1; MQTT and MLLP over TLS
/// with DEV-A's CA as the device CA.
async fn harness() -> Harness {
    let dir = TempDir::new().expect("temp dir");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).expect("store"));
    let now = Timestamp::parse_rfc3339(NOW).expect("now");
    let device_a = store
        .create_device(device("DEV-A"), Vec::new())
        .await
        .expect("device");
    let hash: [u8; 32] = sha2::Sha256::digest(SECRET_A.as_bytes()).into();
    store
        .add_device_credential(device_a.id, hash, now, Vec::new())
        .await
        .expect("credential");
    store
        .create_device(device("DEV-B"), Vec::new())
        .await
        .expect("device");
    let monitor = store
        .create_device(device(MONITOR), Vec::new())
        .await
        .expect("monitor");
    let patient = store
        .create_patient(
            NewPatient {
                identifier: Identifier {
                    system: "HOSP".into(),
                    value: "MRN-1".into(),
                },
                name: HumanName {
                    family: "Test".into(),
                    given: "Pat".into(),
                },
                birth_date: NewPatient::parse_birth_date("1950-01-01").expect("date"),
                sex: Sex::Female,
                ward: "ICU".into(),
                bed: "1".into(),
            },
            Vec::new(),
        )
        .await
        .expect("patient");
    store
        .create_assignment(
            NewAssignment {
                device: monitor.id,
                patient: patient.id,
                start: now.add_seconds(-3600),
                end: None,
            },
            Vec::new(),
        )
        .await
        .expect("assignment");

    let ca = Authority::new("Galen test device CA");
    let server = ca.server();
    let files = TlsFiles {
        certificate: write(dir.path(), "server.pem", &server.certificate),
        private_key: write(dir.path(), "server.key", &server.key),
        device_ca: Some(write(dir.path(), "ca.pem", &ca.pem)),
    };
    let tls = DeviceTls::from_files(&files)
        .expect("TLS from the PEM files")
        .with_handshake_timeout(Duration::from_secs(5));

    let app = App::new(
        store.clone(),
        Arc::new(ManualClock::new(now)),
        ServerConfig::default(),
    )
    .await
    .expect("app");
    let mqtt_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mqtt = mqtt_listener.local_addr().expect("address");
    tokio::spawn(app.clone().serve_mqtt_tls(mqtt_listener, tls.clone()));
    let mllp_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mllp = mllp_listener.local_addr().expect("address");
    // MLLP has no credentials of its own: its TLS listener requires the device certificate.
    let mllp_tls = DeviceTls::requiring_client_certificates(&files)
        .expect("MLLP TLS from the PEM files")
        .with_handshake_timeout(Duration::from_secs(5));
    tokio::spawn(app.clone().serve_mllp_tls(mllp_listener, mllp_tls));
    Harness {
        app,
        store,
        mqtt,
        mllp,
        ca,
        _dir: dir,
    }
}

/// A TLS client that trusts `ca_pem`, presenting `identity` if given.
fn connector(ca_pem: &str, identity: Option<&Pem>) -> TlsConnector {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(certificate.expect("CA PEM")).expect("CA");
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(identity.certificate.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("device chain"),
                PrivateKeyDer::from_pem_slice(identity.key.as_bytes()).expect("device key"),
            )
            .expect("client auth"),
    };
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    address: SocketAddr,
    ca_pem: &str,
    identity: Option<&Pem>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(address).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    connector(ca_pem, identity).connect(name, tcp).await
}

fn connack_code(packet: Option<&Packet>) -> u8 {
    match packet {
        Some(Packet::ConnAck(connack)) => u8::from(connack.reason_code),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn puback_code(packet: Option<Packet>, id: u16) -> u8 {
    match packet {
        Some(Packet::PubAck(ack)) => {
            assert_eq!(ack.packet_id, id);
            u8::from(ack.reason_code)
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn mqtt_over_tls_with_a_password() {
    let harness = harness().await;
    let stream = tls_connect(harness.mqtt, &harness.ca.pem, None)
        .await
        .expect("handshake without a client certificate");
    let (mut client, answer) =
        MqttClient::handshake(stream, 5, "a", Some("DEV-A"), Some(SECRET_A)).await;
    assert_eq!(connack_code(answer.as_ref()), 0x00);
    client
        .publish(
            "galen/v1/devices/DEV-A/measurements",
            &measurement(71.0, 0),
            QoS::AtLeastOnce,
            1,
        )
        .await;
    assert_eq!(puback_code(client.next().await, 1), 0x00);
    assert_eq!(heart_rates(&harness, "DEV-A").await, vec![71.0]);

    // Without a certificate the password is still required.
    let stream = tls_connect(harness.mqtt, &harness.ca.pem, None)
        .await
        .expect("handshake");
    let (_, answer) = MqttClient::handshake(stream, 5, "b", Some("DEV-B"), None).await;
    assert_eq!(connack_code(answer.as_ref()), 0x86, "no password");
    let stream = tls_connect(harness.mqtt, &harness.ca.pem, None)
        .await
        .expect("handshake");
    let (_, answer) = MqttClient::handshake(stream, 4, "n", None, None).await;
    assert_eq!(
        connack_code(answer.as_ref()),
        0x87,
        "not authorised (3.1.1)"
    );
}

#[tokio::test]
async fn a_device_certificate_authenticates_its_serial() {
    let harness = harness().await;
    let identity = harness.ca.device("DEV-B");
    let stream = tls_connect(harness.mqtt, &harness.ca.pem, Some(&identity))
        .await
        .expect("handshake with the device certificate");
    let (mut client, answer) = MqttClient::handshake(stream, 5, "b", None, None).await;
    assert_eq!(
        connack_code(answer.as_ref()),
        0x00,
        "no password needed with a certificate"
    );
    client
        .publish(
            "galen/v1/devices/DEV-B/measurements",
            &measurement(64.0, 0),
            QoS::AtLeastOnce,
            1,
        )
        .await;
    assert_eq!(puback_code(client.next().await, 1), 0x00);
    client
        .publish(
            "galen/v1/devices/DEV-A/measurements",
            &measurement(65.0, 1),
            QoS::AtLeastOnce,
            2,
        )
        .await;
    assert_eq!(
        puback_code(client.next().await, 2),
        0x87,
        "only under its own serial"
    );
    assert_eq!(heart_rates(&harness, "DEV-B").await, vec![64.0]);
    assert_eq!(heart_rates(&harness, "DEV-A").await, Vec::<f64>::new());

    // A user name, if sent, must be the certificate's serial (3.1.1 here).
    let stream = tls_connect(harness.mqtt, &harness.ca.pem, Some(&identity))
        .await
        .expect("handshake");
    let (mut client, answer) = MqttClient::handshake(stream, 4, "b2", Some("DEV-B"), None).await;
    assert_eq!(connack_code(answer.as_ref()), 0x00, "matching user name");
    client
        .publish(
            "galen/v1/devices/DEV-B/measurements",
            &measurement(66.0, 2),
            QoS::AtLeastOnce,
            3,
        )
        .await;
    assert_eq!(puback_code(client.next().await, 3), 0x00);
    let stream = tls_connect(harness.mqtt, &harness.ca.pem, Some(&identity))
        .await
        .expect("handshake");
    let (_, answer) = MqttClient::handshake(stream, 5, "b3", Some("DEV-A"), Some(SECRET_A)).await;
    assert_eq!(
        connack_code(answer.as_ref()),
        0x86,
        "a certificate for DEV-B cannot log in as DEV-A, even with A's password"
    );

    // A certificate for a serial that is not registered opens nothing.
    let stranger = harness.ca.device("DEV-UNKNOWN");
    let stream = tls_connect(harness.mqtt, &harness.ca.pem, Some(&stranger))
        .await
        .expect("handshake");
    let (_, answer) = MqttClient::handshake(stream, 5, "u", None, None).await;
    assert_eq!(connack_code(answer.as_ref()), 0x87);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_at_the_handshake() {
    let harness = harness().await;
    let other = Authority::new("Someone else's CA");
    let forged = other.device("DEV-A");
    // In TLS 1.3 the client finishes its side before the server has checked its certificate,
    // so the refusal may arrive as an alert on the first read instead.
    match tls_connect(harness.mqtt, &harness.ca.pem, Some(&forged)).await {
        Err(_) => {}
        Ok(stream) => {
            let (_, answer) = MqttClient::handshake(stream, 5, "x", None, None).await;
            assert!(answer.is_none(), "no CONNACK after a refused handshake");
        }
    }
    // Plain MQTT to the TLS port gets no CONNACK (at most a TLS alert).
    let mut tcp = TcpStream::connect(harness.mqtt).await.expect("connect");
    let mut options = ConnectOptions::new("plain");
    options.username = Some("DEV-A".into());
    options.password = Some(SECRET_A.as_bytes().to_vec());
    tcp.write_all(&bytes_of(&ConnectPacket::new(options)))
        .await
        .expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("closed within 10 s");
    assert_ne!(answer.first(), Some(&0x20), "no CONNACK in clear text");
    assert_eq!(heart_rates(&harness, "DEV-A").await, Vec::<f64>::new());
}

/// An ORU^R01 with control id `control` whose MSH-3.2 is `sender` and whose one OBX (heart rate
/// `rate`, measured at second `rate % 60`) names `equipment` in OBX-18 (empty: the MSH-3 device).
fn oru_from(control: &str, sender: &str, equipment: &str, rate: u32) -> String {
    [
        format!(
            "MSH|^~\\&|MONITOR^{sender}^EUI-64|ICU|GALEN|HOSP|20261123080005+0000||ORU^R01^ORU_R01|{control}|P|2.6"
        ),
        "OBR|1|||182777000^monitoring of patient^SCT|||20261123080000+0000".to_owned(),
        format!(
            "OBX|1|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC|1.1.1.2|{rate}|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||F|||202611230800{second:02}+0000||||{equipment}",
            second = rate % 60
        ),
    ]
    .join("\r")
}

/// Sends `message` over `stream` and reads its ACK.
async fn exchange_hl7(stream: &mut TlsStream<TcpStream>, message: &str) -> String {
    stream
        .write_all(&encode_frame(message.as_bytes()))
        .await
        .expect("send");
    stream.flush().await.expect("flush");
    let mut decoder = Decoder::new(1 << 20);
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(frame) = decoder.next_frame() {
            match frame {
                Frame::Message(bytes) => return String::from_utf8(bytes).expect("utf-8 ACK"),
                other => panic!("unexpected frame {other:?}"),
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("an ACK within 10 s")
            .expect("read");
        assert!(read > 0, "closed before the ACK");
        decoder.push(&buffer[..read]);
    }
}

#[tokio::test]
async fn hl7_over_mllp_tls_is_acknowledged() {
    let harness = harness().await;
    let identity = harness.ca.device(MONITOR);
    let mut stream = tls_connect(harness.mllp, &harness.ca.pem, Some(&identity))
        .await
        .expect("handshake");
    let message = [
        format!(
            "MSH|^~\\&|MONITOR^{MONITOR}^EUI-64|ICU|GALEN|HOSP|20261123080005+0000||ORU^R01^ORU_R01|TLS-1|P|2.6"
        ),
        "PID|||MRN-1^^^HOSP^MR||Lovelace^Ada".to_owned(),
        "OBR|1|||182777000^monitoring of patient^SCT|||20261123080000+0000".to_owned(),
        "OBX|1|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC|1.1.1.2|72|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||F".to_owned(),
    ]
    .join("\r");
    let ack = exchange_hl7(&mut stream, &message).await;
    assert!(ack.contains("MSA|AA|TLS-1"), "{ack}");
    assert_eq!(heart_rates(&harness, MONITOR).await, vec![72.0]);
}

#[tokio::test]
async fn a_device_certificate_on_mllp_sends_only_for_its_own_device() {
    let harness = harness().await;
    let identity = harness.ca.device("DEV-A");
    let mut stream = tls_connect(harness.mllp, &harness.ca.pem, Some(&identity))
        .await
        .expect("handshake with DEV-A's certificate");

    // DEV-A for itself: by MSH-3, and by OBX-18.
    let ack = exchange_hl7(&mut stream, &oru_from("OWN-1", "DEV-A", "", 61)).await;
    assert!(ack.contains("MSA|AA|OWN-1"), "{ack}");
    let ack = exchange_hl7(&mut stream, &oru_from("OWN-2", "", "DEV-A", 62)).await;
    assert!(ack.contains("MSA|AA|OWN-2"), "{ack}");
    assert_eq!(heart_rates(&harness, "DEV-A").await, vec![61.0, 62.0]);

    // DEV-A claiming to be MONITOR (MSH-3), or slipping MONITOR's values in (OBX-18): refused
    // whole, on the same connection, naming the field and the certified device.
    let ack = exchange_hl7(&mut stream, &oru_from("FORGED-1", MONITOR, "", 91)).await;
    assert!(ack.contains("MSA|AR|FORGED-1"), "{ack}");
    assert!(
        ack.contains("MSH^1^3") && ack.contains("DEV-A") && !ack.contains(MONITOR),
        "names the field and the certified device, not what the sender wrote: {ack}"
    );
    let ack = exchange_hl7(&mut stream, &oru_from("FORGED-2", "DEV-A", MONITOR, 92)).await;
    assert!(ack.contains("MSA|AR|FORGED-2"), "{ack}");
    assert!(ack.contains("OBX^1^18"), "{ack}");
    // Enhanced mode (MSH-15 set): CR.
    let enhanced = oru_from("FORGED-3", MONITOR, "", 93).replace("|P|2.6", "|P|2.6|||AL|NE");
    let ack = exchange_hl7(&mut stream, &enhanced).await;
    assert!(ack.contains("MSA|CR|FORGED-3"), "{ack}");
    assert_eq!(
        heart_rates(&harness, MONITOR).await,
        Vec::<f64>::new(),
        "nothing stored for the impersonated device"
    );

    // Kept as forbidden dead letters of the certified device, and counted.
    let letters = harness.store.dead_letters(0, 100).await.expect("letters");
    assert_eq!(letters.len(), 3, "one per refused message");
    for letter in &letters {
        assert_eq!(letter.letter.reason.code(), "forbidden");
        assert_eq!(letter.letter.device.as_deref(), Some("DEV-A"));
        assert!(letter.letter.payload.starts_with(b"MSH|"));
    }
    let metrics = harness.app.metrics().render(&harness.store.stats());
    assert!(
        metrics
            .contains(r#"galen_protocol_events_total{protocol="mllp",event="foreign_device"} 3"#),
        "{metrics}"
    );

    // A refused message claims no control id: MONITOR's own FORGED-1 is taken afterwards.
    let monitor = harness.ca.device(MONITOR);
    let mut stream = tls_connect(harness.mllp, &harness.ca.pem, Some(&monitor))
        .await
        .expect("handshake with MONITOR's certificate");
    let ack = exchange_hl7(&mut stream, &oru_from("FORGED-1", MONITOR, "", 74)).await;
    assert!(ack.contains("MSA|AA|FORGED-1"), "{ack}");
    assert_eq!(heart_rates(&harness, MONITOR).await, vec![74.0]);
}

#[tokio::test]
async fn mllp_tls_without_a_device_certificate_is_refused_at_the_handshake() {
    let harness = harness().await;
    let message = oru_from("ANON-1", MONITOR, "", 80);
    // In TLS 1.3 the refusal may arrive as an alert on the first read instead.
    match tls_connect(harness.mllp, &harness.ca.pem, None).await {
        Err(_) => {}
        Ok(mut stream) => {
            let _ = stream.write_all(&encode_frame(message.as_bytes())).await;
            let _ = stream.flush().await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
                .await
                .expect("closed within 10 s");
            assert!(
                answer.is_empty(),
                "no ACK without a certificate: {answer:?}"
            );
        }
    }
    let forged = Authority::new("Someone else's CA").device(MONITOR);
    if let Ok(mut stream) = tls_connect(harness.mllp, &harness.ca.pem, Some(&forged)).await {
        let _ = stream.write_all(&encode_frame(message.as_bytes())).await;
        let _ = stream.flush().await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("closed within 10 s");
        assert!(answer.is_empty(), "no ACK for another CA's certificate");
    }
    assert_eq!(heart_rates(&harness, MONITOR).await, Vec::<f64>::new());
}

#[test]
fn start_up_errors_name_the_file() {
    let dir = TempDir::new().expect("temp dir");
    let ca = Authority::new("CA");
    let server = ca.server();
    let certificate = write(dir.path(), "server.pem", &server.certificate);
    let key = write(dir.path(), "server.key", &server.key);
    let error = |files: TlsFiles| {
        DeviceTls::from_files(&files)
            .expect_err("refused")
            .to_string()
    };
    let missing = dir.path().join("missing.key");
    let message = error(TlsFiles {
        certificate: certificate.clone(),
        private_key: missing.clone(),
        device_ca: None,
    });
    assert!(
        message.contains("private key") && message.contains(&missing.display().to_string()),
        "{message}"
    );
    let garbage = write(dir.path(), "garbage.pem", "not a certificate\n");
    let message = error(TlsFiles {
        certificate: garbage.clone(),
        private_key: key.clone(),
        device_ca: None,
    });
    assert!(
        message.contains(&garbage.display().to_string()),
        "{message}"
    );
    let message = error(TlsFiles {
        certificate: certificate.clone(),
        private_key: key.clone(),
        device_ca: Some(garbage.clone()),
    });
    assert!(
        message.contains("device CA") && message.contains(&garbage.display().to_string()),
        "{message}"
    );
    let other_key = write(dir.path(), "other.key", &ca.device("X").key);
    let message = error(TlsFiles {
        certificate: certificate.clone(),
        private_key: other_key,
        device_ca: None,
    });
    assert!(
        message.contains(&certificate.display().to_string()),
        "a key that does not match: {message}"
    );
    assert!(
        DeviceTls::from_files(&TlsFiles {
            certificate: certificate.clone(),
            private_key: key.clone(),
            device_ca: None,
        })
        .is_ok()
    );
    let message = DeviceTls::requiring_client_certificates(&TlsFiles {
        certificate,
        private_key: key,
        device_ca: None,
    })
    .expect_err("no device CA to require certificates from")
    .to_string();
    assert!(message.contains("--device-ca"), "{message}");
}

async fn heart_rates(harness: &Harness, serial: &str) -> Vec<f64> {
    stored(
        &harness.app,
        harness.store.as_ref(),
        serial,
        VitalSign::HeartRate,
    )
    .await
}
