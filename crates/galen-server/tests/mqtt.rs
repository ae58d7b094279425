//! The MQTT listener over a real socket, packet by packet: authentication, topic permissions,
//! acknowledgement only after durable storage, reason codes, QoS 2, reports, session takeover,
//! limits. (Independent clients — paho, mosquitto_pub — are driven in the binary's tests.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use galen_model::{DeviceKind, DeviceStatus, ManualClock, NewDevice, Timestamp, VitalSign};
use galen_server::{App, MqttSettings, ServerConfig};
use galen_store::Store;
use galen_store::embedded::{SqliteOptions, SqliteStore};
use mqtt5_protocol::packet::Packet;
use mqtt5_protocol::packet::publish::PublishPacket;
use mqtt5_protocol::packet::subscribe::{SubscribePacket, TopicFilter};
use mqtt5_protocol::types::QoS;
use sha2::Digest;
use tempfile::TempDir;

mod support;
use support::{MqttClient, NOW, bytes_of, measurement, stored};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

const SECRET_A: &str = "secret-of-device-a-0123456789";

struct Harness {
    app: App,
    store: Arc<dyn Store>,
    address: SocketAddr,
    _dir: TempDir,
}

async fn harness(settings: MqttSettings) -> Harness {
    let dir = TempDir::new().expect("temp dir");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).expect("store"));
    let now = Timestamp::parse_rfc3339(NOW).expect("now");
    for serial in ["DEV-A", "DEV-B"] {
        let device = store
            .create_device(
                NewDevice {
                    serial: serial.into(),
                    manufacturer: "Acme".into(),
                    model: "Hub".into(),
                    kind: DeviceKind::Monitor,
                    status: DeviceStatus::Active,
                },
                Vec::new(),
            )
            .await
            .expect("device");
        if serial == "DEV-A" {
            let hash: [u8; 32] = sha2::Sha256::digest(SECRET_A.as_bytes()).into();
            store
                .add_device_credential(device.id, hash, now, Vec::new())
                .await
                .expect("credential");
        }
    }
    let config = ServerConfig {
        mqtt: settings,
        ..ServerConfig::default()
    };
    let app = App::new(store.clone(), Arc::new(ManualClock::new(now)), config)
        .await
        .expect("app");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(app.clone().serve_mqtt(listener));
    Harness {
        app,
        store,
        address,
        _dir: dir,
    }
}

type Client = MqttClient<TcpStream>;

/// Connects to the harness and sends CONNECT; panics if the server says nothing.
async fn connect(
    harness: &Harness,
    version: u8,
    client_id: &str,
    credentials: Option<(&str, &str)>,
) -> (Client, Packet) {
    let stream = TcpStream::connect(harness.address).await.expect("connect");
    let (user, password) = credentials.unzip();
    let (client, answer) = MqttClient::handshake(stream, version, client_id, user, password).await;
    (client, answer.expect("CONNACK"))
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

fn reason_string(properties: &mqtt5_protocol::Properties) -> Option<String> {
    match properties.get(mqtt5_protocol::PropertyId::ReasonString) {
        Some(mqtt5_protocol::PropertyValue::Utf8String(text)) => Some(text.clone()),
        _ => None,
    }
}

fn connack_code(packet: &Packet) -> u8 {
    match packet {
        Packet::ConnAck(connack) => u8::from(connack.reason_code),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn credentials_are_required_and_checked() {
    let harness = harness(MqttSettings::default()).await;
    let (_, answer) = connect(&harness, 5, "a", Some(("DEV-A", SECRET_A))).await;
    assert_eq!(connack_code(&answer), 0x00);
    let (_, answer) = connect(&harness, 5, "a2", Some(("DEV-A", "wrong"))).await;
    assert_eq!(connack_code(&answer), 0x86, "bad user name or password");
    let (_, answer) = connect(&harness, 5, "b", Some(("DEV-B", SECRET_A))).await;
    assert_eq!(connack_code(&answer), 0x86, "A's secret does not open B");
    let (_, answer) = connect(&harness, 5, "n", None).await;
    assert_eq!(
        connack_code(&answer),
        0x87,
        "no anonymous access outside the demo"
    );
    let (_, answer) = connect(&harness, 4, "n3", None).await;
    assert_eq!(connack_code(&answer), 0x87);
    let (_, answer) = connect(&harness, 4, "a3", Some(("DEV-A", "wrong"))).await;
    assert_eq!(connack_code(&answer), 0x86);
}

#[tokio::test]
async fn puback_follows_storage_and_reason_codes_name_the_problem() {
    let harness = harness(MqttSettings::default()).await;
    let (mut client, _) = connect(&harness, 5, "a", Some(("DEV-A", SECRET_A))).await;
    let topic = "galen/v1/devices/DEV-A/measurements";
    client
        .publish(topic, &measurement(71.0, 0), QoS::AtLeastOnce, 1)
        .await;
    match client.next().await {
        Some(Packet::PubAck(ack)) => {
            assert_eq!(ack.packet_id, 1);
            assert_eq!(u8::from(ack.reason_code), 0x00);
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // The PUBACK came after the commit: the value is there now.
    assert_eq!(heart_rates(&harness, "DEV-A").await, vec![71.0]);
    let cases = [
        (
            "galen/v1/devices/DEV-B/measurements",
            measurement(72.0, 1),
            0x87,
        ),
        (topic, "not json".to_owned(), 0x99),
        (
            topic,
            measurement(72.0, 2).replace("heart_rate", "pulse_of_the_moon"),
            0x83,
        ),
        (
            "galen/v1/devices/DEV-A/unknown-shape",
            r#"{"x":1}"#.to_owned(),
            0x99,
        ),
    ];
    for (index, (topic, payload, expected)) in cases.iter().enumerate() {
        let id = 10 + index as u16;
        client.publish(topic, payload, QoS::AtLeastOnce, id).await;
        match client.next().await {
            Some(Packet::PubAck(ack)) => {
                assert_eq!(ack.packet_id, id);
                assert_eq!(u8::from(ack.reason_code), *expected, "{topic} {payload}");
                assert!(
                    reason_string(&ack.properties).is_some(),
                    "a reason string says why"
                );
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    let letters = harness.store.dead_letters(0, 100).await.expect("letters");
    let reasons: Vec<&str> = letters
        .iter()
        .map(|letter| letter.letter.reason.code())
        .collect();
    assert_eq!(
        reasons,
        ["forbidden", "malformed", "unknown_code", "unmapped"]
    );
    assert_eq!(heart_rates(&harness, "DEV-B").await, Vec::<f64>::new());
    // A batch where one item is refused: stored in part, PUBACK success with a reason string.
    let batch = format!(
        "[{},{},{}]",
        measurement(73.0, 3),
        measurement(900.0, 4),
        measurement(74.0, 5)
    );
    client.publish(topic, &batch, QoS::AtLeastOnce, 20).await;
    match client.next().await {
        Some(Packet::PubAck(ack)) => {
            assert_eq!(u8::from(ack.reason_code), 0x00);
            let reason = reason_string(&ack.properties).expect("reason string");
            assert!(reason.contains("1 of 3"), "{reason}");
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert_eq!(heart_rates(&harness, "DEV-A").await, vec![71.0, 73.0, 74.0]);
}

#[tokio::test]
async fn mqtt_311_cross_device_publish_closes_the_connection() {
    let harness = harness(MqttSettings::default()).await;
    let (mut client, answer) = connect(&harness, 4, "a", Some(("DEV-A", SECRET_A))).await;
    assert_eq!(connack_code(&answer), 0x00);
    client
        .publish(
            "galen/v1/devices/DEV-A/measurements",
            &measurement(70.0, 0),
            QoS::AtLeastOnce,
            1,
        )
        .await;
    assert!(matches!(client.next().await, Some(Packet::PubAck(_))));
    client
        .publish(
            "galen/v1/devices/DEV-B/measurements",
            &measurement(70.0, 1),
            QoS::AtLeastOnce,
            2,
        )
        .await;
    assert!(
        client.next().await.is_none(),
        "3.1.1 cannot refuse a PUBLISH: the server closes"
    );
    assert_eq!(heart_rates(&harness, "DEV-B").await, Vec::<f64>::new());
}

#[tokio::test]
async fn rejection_reports_reach_a_subscribed_device_only_for_its_own_topics() {
    let harness = harness(MqttSettings::default()).await;
    let (mut client, _) = connect(&harness, 4, "a", Some(("DEV-A", SECRET_A))).await;
    let subscribe = |filter: &str, id: u16| {
        let mut packet = SubscribePacket::new(id);
        packet.protocol_version = 4;
        packet
            .filters
            .push(TopicFilter::new(filter, QoS::AtMostOnce));
        bytes_of(&packet)
    };
    client
        .send(&subscribe("galen/v1/devices/DEV-A/rejections", 1))
        .await;
    match client.next().await {
        Some(Packet::SubAck(ack)) => assert_eq!(ack.reason_codes[0] as u8, 0x00),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    client.send(&subscribe("galen/v1/devices/DEV-B/#", 2)).await;
    match client.next().await {
        Some(Packet::SubAck(ack)) => assert_eq!(ack.reason_codes[0] as u8, 0x80),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    client
        .publish(
            "galen/v1/devices/DEV-A/measurements",
            "{}",
            QoS::AtLeastOnce,
            3,
        )
        .await;
    let report = match client.next().await {
        Some(Packet::Publish(report)) => report,
        other => panic!("expected the report, got {other:?}"),
    };
    assert_eq!(report.topic_name, "galen/v1/devices/DEV-A/rejections");
    let body: serde_json::Value = serde_json::from_slice(&report.payload).expect("json");
    assert_eq!(body["refused"][0]["reason"], "malformed");
    assert!(matches!(client.next().await, Some(Packet::PubAck(_))));
}

#[tokio::test]
async fn qos2_is_stored_once_and_completed() {
    let harness = harness(MqttSettings::default()).await;
    let (mut client, _) = connect(&harness, 5, "a", Some(("DEV-A", SECRET_A))).await;
    let topic = "galen/v1/devices/DEV-A/measurements";
    client
        .publish(topic, &measurement(80.0, 0), QoS::ExactlyOnce, 7)
        .await;
    assert!(matches!(client.next().await, Some(Packet::PubRec(rec)) if rec.packet_id == 7));
    // A resend before PUBREL (DUP) is answered, not stored again.
    let letters_before = harness.store.stats();
    client
        .publish(topic, &measurement(80.0, 0), QoS::ExactlyOnce, 7)
        .await;
    assert!(matches!(client.next().await, Some(Packet::PubRec(rec)) if rec.packet_id == 7));
    assert_eq!(harness.store.stats().duplicates, letters_before.duplicates);
    let release = mqtt5_protocol::packet::pubrel::PubRelPacket::new(7);
    client.send(&bytes_of(&release)).await;
    assert!(matches!(client.next().await, Some(Packet::PubComp(comp)) if comp.packet_id == 7));
    assert_eq!(heart_rates(&harness, "DEV-A").await, vec![80.0]);
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let harness = harness(MqttSettings::default()).await;
    let (mut first, _) = connect(&harness, 5, "same", Some(("DEV-A", SECRET_A))).await;
    let (mut second, answer) = connect(&harness, 5, "same", Some(("DEV-A", SECRET_A))).await;
    assert_eq!(connack_code(&answer), 0x00);
    match first.next().await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(u8::from(disconnect.reason_code), 0x8E, "session taken over");
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    second.send(&[0xC0, 0x00]).await;
    assert!(matches!(second.next().await, Some(Packet::PingResp)));
}

#[tokio::test]
async fn nothing_is_acknowledged_when_the_store_fails() {
    let harness = harness(MqttSettings::default()).await;
    let (mut client, _) = connect(&harness, 5, "a", Some(("DEV-A", SECRET_A))).await;
    harness
        .store
        .close()
        .await
        .expect("close the store under the listener");
    client
        .publish(
            "galen/v1/devices/DEV-A/measurements",
            &measurement(70.0, 0),
            QoS::AtLeastOnce,
            1,
        )
        .await;
    match client.next().await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(
                u8::from(disconnect.reason_code),
                0x89,
                "server busy, no PUBACK"
            );
        }
        other => panic!("expected DISCONNECT without PUBACK, got {other:?}"),
    }
    assert!(client.next().await.is_none());
}

#[tokio::test]
async fn oversize_packets_and_silent_clients_are_cut_off() {
    let harness = harness(MqttSettings {
        max_packet_bytes: 1024,
        connect_timeout: Duration::from_millis(300),
        ..MqttSettings::default()
    })
    .await;
    let (mut client, answer) = connect(&harness, 5, "a", Some(("DEV-A", SECRET_A))).await;
    match &answer {
        Packet::ConnAck(connack) => assert_eq!(connack.maximum_packet_size(), Some(1024)),
        other => panic!("{other:?}"),
    }
    let big = "x".repeat(4096);
    client
        .publish(
            "galen/v1/devices/DEV-A/measurements",
            &big,
            QoS::AtLeastOnce,
            1,
        )
        .await;
    match client.next().await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(u8::from(disconnect.reason_code), 0x95, "packet too large");
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    // A connection that never sends CONNECT is closed after the connect timeout.
    let mut silent = TcpStream::connect(harness.address).await.expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)));
}

#[tokio::test]
async fn wildcard_topics_and_unknown_releases_are_protocol_errors() {
    let harness = harness(MqttSettings::default()).await;
    let (mut client, _) = connect(&harness, 5, "a", Some(("DEV-A", SECRET_A))).await;
    let release = mqtt5_protocol::packet::pubrel::PubRelPacket::new(99);
    client.send(&bytes_of(&release)).await;
    match client.next().await {
        Some(Packet::PubComp(complete)) => {
            assert_eq!(complete.packet_id, 99);
            assert_eq!(
                u8::from(complete.reason_code),
                0x92,
                "packet identifier not found"
            );
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    client
        .publish(
            "galen/v1/devices/DEV-A/+",
            &measurement(70.0, 0),
            QoS::AtLeastOnce,
            1,
        )
        .await;
    match client.next().await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(u8::from(disconnect.reason_code), 0x90, "topic name invalid");
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert!(
        harness
            .store
            .dead_letters(0, 10)
            .await
            .expect("letters")
            .is_empty()
    );
}

#[tokio::test]
async fn a_burst_of_publishes_is_stored_in_few_commits() {
    let harness = harness(MqttSettings::default()).await;
    let (mut client, _) = connect(&harness, 5, "a", Some(("DEV-A", SECRET_A))).await;
    let mut burst = Vec::new();
    for index in 0..200u16 {
        let mut publish = PublishPacket::new(
            "galen/v1/devices/DEV-A/measurements",
            measurement(60.0 + f64::from(index % 40), i64::from(index)).into_bytes(),
            QoS::AtLeastOnce,
        );
        publish.packet_id = Some(index + 1);
        burst.extend(bytes_of(&publish));
    }
    client.send(&burst).await;
    for expected in 1..=200u16 {
        match client.next().await {
            Some(Packet::PubAck(ack)) => assert_eq!(ack.packet_id, expected, "in order"),
            other => panic!("expected PUBACK {expected}, got {other:?}"),
        }
    }
    assert_eq!(heart_rates(&harness, "DEV-A").await.len(), 200);
    let metrics = harness.app.metrics().render(&harness.store.stats());
    let calls: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("galen_ingest_requests_total "))
        .expect("ingest request counter")
        .trim()
        .parse()
        .expect("a number");
    assert!(
        calls <= 50.0,
        "200 publishes written at once took {calls} pipeline calls: reads must take more than one packet"
    );
}
