//! External-broker mode: devices publish to an MQTT broker the hospital already runs (Mosquitto,
//! EMQX, HiveMQ, ...), and Galen takes their messages from it as a subscriber.
//!
//! Flow: broker → shared subscription `$share/{group}/galen/v1/devices/+/+` at QoS 1 → the PUBLISH
//! packets read together → [`App::ingest_broker_messages`] (one pipeline call, one durable group
//! commit) → a PUBACK for each, in the order received. The topics and payloads are the ones Galen's
//! own listener takes (see `galen-server/src/mqtt.rs`); the broker has authenticated the devices
//! and enforced their topic permissions, so the serial in the topic is trusted.
//!
//! Scale-out: every Galen node started with the same `--mqtt-broker-group` joins one shared
//! subscription, and the broker hands each message to one member of the group. Nodes must share
//! the store for that to be one system; with separate stores each node holds part of the data.
//!
//! Delivery is at least once. A message is acknowledged only after the call that stored it
//! returned `Ok`; refused items are dead letters by then, so they are acknowledged too (a repeat
//! could only be refused again). When storing fails nothing is acknowledged: the connection is
//! dropped and opened again after a pause, and the broker sends the unacknowledged messages again,
//! which Galen recognises as duplicates if they had been stored after all. That needs the broker to
//! keep the session across the reconnection: clean start 0, session expiry [`SESSION_EXPIRY`], and
//! a fixed client id `galen-bridge-{group}-{node}`, where `{node}` is a random id created once and
//! kept in `<data-dir>/mqtt-bridge-node` (so a restarted node resumes its own session; two nodes
//! must not share a data directory). A node that stays away longer than the expiry loses its
//! queued messages, and with them any the group's other members did not take over.
//!
//! The client is Galen's own, on the `mqtt5-protocol` codec already used by the listener: MQTT 5
//! over plain TCP (put a TLS tunnel in front for a remote broker), a dozen packet kinds, and the
//! acknowledgement timing entirely in our hands. A general client library would bring its own TLS
//! stack, URL and random crates for what is a read-store-acknowledge loop.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{Buf, Bytes, BytesMut};
use galen_server::{App, ItemResult, TOPIC_PREFIX};
use mqtt5_protocol::packet::connect::ConnectPacket;
use mqtt5_protocol::packet::subscribe::SubscribePacket;
use mqtt5_protocol::packet::{FixedHeader, MqttPacket, Packet};
use mqtt5_protocol::types::{ConnectOptions, QoS, ReasonCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How long the broker keeps this node's session (and its queued messages) while it is away.
pub(crate) const SESSION_EXPIRY: Duration = Duration::from_secs(3600);
/// Unacknowledged messages the broker may send us at once (MQTT 5 receive maximum); also the
/// largest batch stored in one call.
const RECEIVE_MAXIMUM: u16 = 1024;
/// Largest packet we take (announced; the broker discards larger messages for this subscriber, so
/// keep the broker's own `message_size_limit` below it).
const MAX_PACKET_BYTES: u32 = 16 * 1024 * 1024;
/// Keep-alive announced to the broker; a PINGREQ goes out every half of it.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Bytes one read may take from the broker.
const READ_ROOM: usize = 64 * 1024;
/// Time allowed to connect and to get CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The file in the data directory that keeps this node's id.
const NODE_FILE: &str = "mqtt-bridge-node";
/// Galen's own report topic suffix (`galen/v1/devices/{serial}/rejections`): never device data.
const REJECTIONS_SUFFIX: &str = "/rejections";

/// Where and how to reach the external broker.
#[derive(Clone)]
pub(crate) struct BrokerSettings {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) username: Option<String>,
    password: Option<String>,
    /// Shared-subscription group: nodes with the same group split the messages.
    pub(crate) group: String,
}

impl std::fmt::Debug for BrokerSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BrokerSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("group", &self.group)
            .finish()
    }
}

impl BrokerSettings {
    /// Reads `mqtt://HOST[:PORT]`, the optional credentials (the password from a file, trimmed)
    /// and the group [default: `galen`].
    pub(crate) fn resolve(
        url: &str,
        username: Option<String>,
        password_file: Option<&Path>,
        group: Option<String>,
    ) -> Result<BrokerSettings> {
        let Some(address) = url.strip_prefix("mqtt://") else {
            if url.starts_with("mqtts://") {
                bail!(
                    "--mqtt-broker {url:?}: TLS to the broker is not supported yet; reach it through a local TLS tunnel and give mqtt://"
                );
            }
            bail!("--mqtt-broker {url:?} is not mqtt://HOST:PORT");
        };
        let address = address.trim_end_matches('/');
        let (host, port) = match address.strip_prefix('[') {
            Some(bracketed) => match bracketed.split_once(']') {
                Some((host, after)) => (host, after.strip_prefix(':')),
                None => bail!("--mqtt-broker {url:?}: unclosed [ in the host"),
            },
            None => match address.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (address, None),
            },
        };
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .with_context(|| format!("--mqtt-broker {url:?}: bad port"))?,
            None => 1883,
        };
        if host.is_empty() || host.contains('/') {
            bail!("--mqtt-broker {url:?} is not mqtt://HOST:PORT");
        }
        let password = match password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| {
                        format!("reading the MQTT broker password file {}", path.display())
                    })?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        if password.is_some() && username.is_none() {
            bail!("a broker password needs --mqtt-broker-username");
        }
        let group = group.unwrap_or_else(|| "galen".to_owned());
        if group.is_empty() || group.contains(['/', '+', '#']) {
            bail!("--mqtt-broker-group {group:?}: one topic level without / + or #");
        }
        Ok(BrokerSettings {
            host: host.to_owned(),
            port,
            username,
            password,
            group,
        })
    }

    /// The shared subscription this node joins.
    pub(crate) fn filter(&self) -> String {
        format!("$share/{}/{TOPIC_PREFIX}+/+", self.group)
    }
}

/// This node's id: read from `<data_dir>/mqtt-bridge-node`, created (random) the first time.
fn node_id(data_dir: &Path) -> Result<String> {
    let path = data_dir.join(NODE_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if !id.is_empty()
            && id
                .chars()
                .all(|character| character.is_ascii_alphanumeric())
        {
            return Ok(id.to_owned());
        }
    }
    let mut random = [0u8; 6];
    getrandom::fill(&mut random)
        .map_err(|error| anyhow::anyhow!("no randomness for the bridge node id: {error}"))?;
    let id: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// Starts the bridge on `app` in the background: it connects (and reconnects) until Ctrl-C or
/// SIGTERM, then finishes the batch in hand and disconnects, leaving its session to the broker.
pub(crate) fn start(app: &App, settings: BrokerSettings, data_dir: &Path) -> Result<()> {
    let client_id = format!("galen-bridge-{}-{}", settings.group, node_id(data_dir)?);
    println!(
        "galen: MQTT bridge {client_id}: shared subscription {} on broker {}:{}",
        settings.filter(),
        settings.host,
        settings.port
    );
    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        signalled().await;
        let _ = stop.send(true);
    });
    tokio::spawn(run(app.clone(), settings, client_id, stopping));
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (as the HTTP server's shutdown does).
async fn signalled() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Connects, serves, and after a failure waits (0.5 s, doubling up to 30 s; back to 0.5 s after a
/// session that got as far as its SUBACK) and connects again, until stopped.
async fn run(
    app: App,
    settings: BrokerSettings,
    client_id: String,
    stopping: watch::Receiver<bool>,
) {
    let mut pause = Duration::from_millis(500);
    loop {
        let mut stop = stopping.clone();
        if *stop.borrow() {
            return;
        }
        let mut subscribed = false;
        match session(&app, &settings, &client_id, &mut stop, &mut subscribed).await {
            Ok(()) => {
                tracing::info!("MQTT bridge disconnected from the broker");
                return;
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "MQTT bridge: connection to the broker lost; reconnecting"
                );
            }
        }
        if subscribed {
            pause = Duration::from_millis(500);
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stopped(&mut stop) => return,
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// One connection to the broker: CONNECT, SUBSCRIBE, then read, store, acknowledge. Returns `Ok`
/// when stopped (after a DISCONNECT that keeps the session), `Err` when the connection must be
/// opened again (`subscribed` tells whether it got that far).
async fn session(
    app: &App,
    settings: &BrokerSettings,
    client_id: &str,
    stop: &mut watch::Receiver<bool>,
    subscribed: &mut bool,
) -> Result<()> {
    let mut stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((settings.host.as_str(), settings.port)),
    )
    .await
    .context("connecting to the broker timed out")?
    .with_context(|| format!("connecting to {}:{}", settings.host, settings.port))?;
    let _ = stream.set_nodelay(true);
    let mut options = ConnectOptions::new(client_id)
        .with_clean_start(false)
        .with_keep_alive(KEEP_ALIVE)
        .with_session_expiry_interval(SESSION_EXPIRY.as_secs() as u32)
        .with_receive_maximum(RECEIVE_MAXIMUM);
    options.properties.maximum_packet_size = Some(MAX_PACKET_BYTES);
    if let Some(username) = &settings.username {
        options.username = Some(username.clone());
        options.password = settings
            .password
            .as_ref()
            .map(|secret| secret.as_bytes().to_vec());
    }
    let mut out = BytesMut::with_capacity(4096);
    ConnectPacket::new(options)
        .encode(&mut out)
        .context("encoding CONNECT")?;
    stream.write_all(&out).await?;
    out.clear();

    let mut buffer = BytesMut::with_capacity(READ_ROOM);
    let connack = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            if let Some(packet) = next_packet(&mut buffer, MAX_PACKET_BYTES, 5)? {
                return Ok::<_, anyhow::Error>(packet);
            }
            if stream.read_buf(&mut buffer).await? == 0 {
                bail!("the broker closed the connection before CONNACK");
            }
        }
    })
    .await
    .context("no CONNACK from the broker in time")??;
    let Packet::ConnAck(connack) = connack else {
        bail!(
            "the broker answered CONNECT with {}",
            connack.packet_type_name()
        );
    };
    if connack.reason_code != ReasonCode::Success {
        bail!(
            "the broker refused the connection: {:?}",
            connack.reason_code
        );
    }
    tracing::info!(
        client_id,
        session_present = connack.session_present,
        "MQTT bridge connected to the broker"
    );

    // Subscribe every time: harmless when the session already has it, and the group may change.
    const SUBSCRIBE_ID: u16 = 1;
    SubscribePacket::new(SUBSCRIBE_ID)
        .add_filter(settings.filter(), QoS::AtLeastOnce)
        .encode(&mut out)
        .context("encoding SUBSCRIBE")?;
    stream.write_all(&out).await?;
    out.clear();

    let mut ping = tokio::time::interval(KEEP_ALIVE / 2);
    ping.tick().await;
    // Nothing heard for this long (PINGRESP comes every half keep-alive) means the broker is gone.
    let silence = KEEP_ALIVE + KEEP_ALIVE / 2;
    let mut last_heard = tokio::time::Instant::now();
    let mut batch: Vec<(String, Bytes)> = Vec::new();
    let mut acknowledge: Vec<u16> = Vec::new();
    loop {
        // Room for everything the socket holds, so that one read (and one store call) takes many
        // messages: `read_buf` reads only into spare capacity, and after a partial packet that is
        // just the rest of that packet.
        if buffer.capacity() - buffer.len() < READ_ROOM / 4 {
            buffer.reserve(READ_ROOM);
        }
        tokio::select! {
            read = stream.read_buf(&mut buffer) => {
                if read? == 0 {
                    bail!("the broker closed the connection");
                }
                last_heard = tokio::time::Instant::now();
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > silence {
                    bail!("nothing heard from the broker for {} s", silence.as_secs());
                }
                stream.write_all(&[0xC0, 0x00]).await?;
                continue;
            }
            () = stopped(stop) => {
                // Normal disconnection: the broker keeps the session (and sends the messages we
                // have not acknowledged again when this node comes back).
                stream.write_all(&[0xE0, 0x00]).await?;
                let _ = stream.shutdown().await;
                return Ok(());
            }
        }
        while let Some(packet) = next_packet(&mut buffer, MAX_PACKET_BYTES, 5)? {
            match packet {
                Packet::Publish(publish) => {
                    if publish.qos != QoS::AtMostOnce
                        && let Some(packet_id) = publish.packet_id
                    {
                        acknowledge.push(packet_id);
                    }
                    if publish.topic_name.ends_with(REJECTIONS_SUFFIX) {
                        continue;
                    }
                    batch.push((publish.topic_name, publish.payload));
                }
                Packet::SubAck(suback) => {
                    let granted = suback
                        .reason_codes
                        .first()
                        .and_then(|code| code.granted_qos());
                    if granted.is_none() {
                        bail!(
                            "the broker refused the subscription {}: {:?}",
                            settings.filter(),
                            suback.reason_codes
                        );
                    }
                    *subscribed = true;
                    if granted == Some(QoS::AtMostOnce) {
                        tracing::warn!(
                            "the broker granted the bridge only QoS 0: messages lost in transit will not be sent again"
                        );
                    }
                    tracing::info!(
                        filter = settings.filter(),
                        ?granted,
                        "MQTT bridge subscribed"
                    );
                }
                Packet::Disconnect(disconnect) => {
                    bail!("the broker disconnected us: {:?}", disconnect.reason_code);
                }
                // PINGRESP; PUBREL and the like cannot come for QoS 1 and are ignored.
                _ => {}
            }
        }
        if !batch.is_empty() {
            let results = app
                .ingest_broker_messages(&batch)
                .await
                .context("storing messages from the broker failed; none acknowledged")?;
            log_batch(&results);
            batch.clear();
        }
        if !acknowledge.is_empty() {
            // PUBACK, success, no properties: the same four bytes in MQTT 3.1.1 and 5.
            for packet_id in acknowledge.drain(..) {
                let [high, low] = packet_id.to_be_bytes();
                out.extend_from_slice(&[0x40, 0x02, high, low]);
            }
            stream.write_all(&out).await?;
            out.clear();
        }
        // A large message leaves a large buffer behind; give the memory back.
        if buffer.is_empty() && buffer.capacity() > 1024 * 1024 {
            buffer = BytesMut::with_capacity(READ_ROOM);
        }
    }
}

fn log_batch(results: &[Vec<ItemResult>]) {
    let (mut accepted, mut duplicates, mut refused) = (0usize, 0usize, 0usize);
    for result in results.iter().flatten() {
        match result {
            ItemResult::Accepted { .. } => accepted += 1,
            ItemResult::Duplicate { .. } => duplicates += 1,
            ItemResult::Rejected(_) => refused += 1,
        }
    }
    tracing::debug!(
        messages = results.len(),
        accepted,
        duplicates,
        refused,
        "MQTT bridge stored a batch"
    );
}

/// Sizes of the fixed header and of the body of the packet at the front of `buffer`, once its
/// remaining-length field is complete; an error for a malformed length or a body over `max`.
pub(crate) fn packet_extent(buffer: &[u8], max: u32) -> Result<Option<(usize, usize)>> {
    let mut length: usize = 0;
    for (index, byte) in buffer.iter().skip(1).take(4).enumerate() {
        length |= usize::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            if length > max as usize {
                bail!("a packet of {length} bytes is over the {max}-byte limit");
            }
            return Ok(Some((2 + index, length)));
        }
        if index == 3 {
            bail!("malformed remaining length");
        }
    }
    Ok(None)
}

/// Takes the next complete packet off `buffer` and decodes it as protocol level `version` (4 =
/// MQTT 3.1.1, 5 = MQTT 5).
pub(crate) fn next_packet(buffer: &mut BytesMut, max: u32, version: u8) -> Result<Option<Packet>> {
    let Some((header, body)) = packet_extent(buffer, max)? else {
        return Ok(None);
    };
    if buffer.len() < header + body {
        buffer.reserve(header + body - buffer.len());
        return Ok(None);
    }
    let mut frame = buffer.split_to(header + body).freeze();
    let fixed = FixedHeader::decode(&mut frame.clone())
        .map_err(|error| anyhow::anyhow!("malformed fixed header: {error}"))?;
    frame.advance(header);
    Packet::decode_from_body_with_version(fixed.packet_type, &fixed, &mut frame, version)
        .map_err(|error| anyhow::anyhow!("malformed {:?} packet: {error}", fixed.packet_type))
        .map(Some)
}

#[cfg(test)]
mod tests {
    use mqtt5_protocol::packet::publish::PublishPacket;

    use super::*;

    #[test]
    fn broker_urls() {
        let settings =
            BrokerSettings::resolve("mqtt://broker.example:1884", None, None, None).expect("url");
        assert_eq!(
            (
                settings.host.as_str(),
                settings.port,
                settings.group.as_str()
            ),
            ("broker.example", 1884, "galen")
        );
        assert_eq!(settings.filter(), "$share/galen/galen/v1/devices/+/+");
        let settings = BrokerSettings::resolve("mqtt://10.0.0.7", None, None, Some("ward".into()))
            .expect("default port");
        assert_eq!((settings.host.as_str(), settings.port), ("10.0.0.7", 1883));
        let settings = BrokerSettings::resolve("mqtt://[::1]:1885/", None, None, None).expect("v6");
        assert_eq!((settings.host.as_str(), settings.port), ("::1", 1885));
        for bad in [
            "tcp://x:1",
            "mqtts://x:8883",
            "mqtt://:1883",
            "mqtt://x:port",
        ] {
            assert!(
                BrokerSettings::resolve(bad, None, None, None).is_err(),
                "{bad}"
            );
        }
        assert!(BrokerSettings::resolve("mqtt://x", None, None, Some("a/b".into())).is_err());
        let directory = tempfile::tempdir().expect("temp dir");
        let file = directory.path().join("password");
        std::fs::write(&file, "s3cret\n").expect("write");
        assert!(
            BrokerSettings::resolve("mqtt://x", None, Some(&file), None).is_err(),
            "a password without a user name"
        );
        let settings = BrokerSettings::resolve("mqtt://x", Some("galen".into()), Some(&file), None)
            .expect("credentials");
        assert_eq!(settings.password.as_deref(), Some("s3cret"));
        assert!(!format!("{settings:?}").contains("s3cret"), "Debug redacts");
    }

    #[test]
    fn node_id_is_kept() {
        let directory = tempfile::tempdir().expect("temp dir");
        let first = node_id(directory.path()).expect("created");
        assert_eq!(first.len(), 12);
        assert_eq!(node_id(directory.path()).expect("read"), first);
    }

    #[test]
    fn packets_are_framed_across_reads() {
        let mut encoded = BytesMut::new();
        PublishPacket::new(
            "galen/v1/devices/A/measurements",
            &b"{}"[..],
            QoS::AtLeastOnce,
        )
        .with_packet_id(7)
        .encode(&mut encoded)
        .expect("encode");
        encoded.extend_from_slice(&[0xD0, 0x00]);
        let mut buffer = BytesMut::new();
        let mut packets = Vec::new();
        for byte in encoded.iter() {
            buffer.extend_from_slice(&[*byte]);
            while let Some(packet) = next_packet(&mut buffer, 1024, 5).expect("well formed") {
                packets.push(packet);
            }
        }
        assert_eq!(packets.len(), 2);
        let Packet::Publish(publish) = &packets[0] else {
            panic!("not a PUBLISH: {:?}", packets[0]);
        };
        assert_eq!(
            (publish.packet_id, &publish.payload[..]),
            (Some(7), &b"{}"[..])
        );
        assert!(matches!(packets[1], Packet::PingResp));
        assert!(packet_extent(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF], u32::MAX).is_err());
        assert!(
            packet_extent(&[0x30, 0xFF, 0x7F], 100).is_err(),
            "over the limit"
        );
    }
}
