//! The MQTT listener: devices publish measurements; Galen acknowledges them once durable.
//!
//! Galen speaks the server side of MQTT 3.1.1 and 5.0 for device ingest (packets encoded and
//! decoded by the `mqtt5-protocol` crate). It is not a general broker: devices publish under their
//! own prefix and may subscribe to their own prefix to hear about refused data.
//!
//! Topics (`{serial}` is the device's registered serial):
//! - `galen/v1/devices/{serial}/measurements`: Galen's measurement JSON, one object or an array
//!   (`device` may be left out: the topic names it);
//! - `galen/v1/devices/{serial}/{anything else}`: a payload for the mapping templates, matched on
//!   the topic and the payload;
//! - `galen/v1/devices/{serial}/rejections`: Galen publishes a report (QoS 0) for every refused
//!   item here, to a connection of that device subscribed to it.
//!
//! Security: every connection authenticates as one device (user name = serial, password = a
//! secret issued by `POST /api/v1/devices/{id}/credentials`, stored hashed), or, over TLS
//! ([`App::serve_mqtt_tls`]), by a client certificate from the device CA naming the serial (subject
//! CN, else first DNS name; see `tls.rs`). A device may publish and subscribe only under its own
//! prefix; anything else is refused (MQTT 5: reason 0x87; MQTT 3.1.1, which cannot refuse a
//! PUBLISH: the connection is closed). Anonymous connections exist only in demo mode.
//!
//! Durability: the PUBLISH packets read together from a connection are validated and stored in one
//! pipeline call (one group commit), and only then are their PUBACKs (QoS 1) or PUBRECs (QoS 2)
//! sent, in order. A refused message is kept as a dead letter and answered, in MQTT 5, with a reason
//! code (0x99 payload format invalid, 0x83 every item refused, 0x87 not authorised) and a reason
//! string; in 3.1.1 it is acknowledged (Galen has kept it) and reported on the rejections topic.
//! When the store fails nothing is acknowledged and the connection is closed, so the device sends
//! again; retries are recognised as duplicates.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use galen_model::{Rejection, RejectionReason};
use mqtt5_protocol::packet::connack::ConnAckPacket;
use mqtt5_protocol::packet::disconnect::DisconnectPacket;
use mqtt5_protocol::packet::puback::PubAckPacket;
use mqtt5_protocol::packet::pubcomp::PubCompPacket;
use mqtt5_protocol::packet::publish::PublishPacket;
use mqtt5_protocol::packet::pubrec::PubRecPacket;
use mqtt5_protocol::packet::suback::{SubAckPacket, SubAckReasonCode};
use mqtt5_protocol::packet::subscribe::SubscribePacket;
use mqtt5_protocol::packet::unsuback::{UnsubAckPacket, UnsubAckReasonCode};
use mqtt5_protocol::packet::{FixedHeader, MqttPacket, Packet, PacketType};
use mqtt5_protocol::types::QoS;
use mqtt5_protocol::{ReasonCode, encoding::decode_variable_int};
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::App;
use crate::listener::{accept_loop, stopping};
use crate::pipeline::{Incoming, ItemResult, Unreadable};
use crate::tls::{DeviceTls, peer_serial};
use crate::wire::{Parsed, parse_item};

const SOURCE: &str = "mqtt";
/// Every device topic starts with this, followed by the serial.
pub const TOPIC_PREFIX: &str = "galen/v1/devices/";
/// The topic suffix of Galen's own measurement JSON.
const MEASUREMENTS: &str = "measurements";
/// The topic suffix on which Galen reports refused items.
const REJECTIONS: &str = "rejections";
/// Room a busy connection reads into at once.
const READ_ROOM: usize = 16 * 1024;
/// Bytes of a refused payload kept in a dead letter.
const KEEP_PAYLOAD: usize = 256 * 1024;

/// Settings of the MQTT listener.
#[derive(Debug, Clone, Copy)]
pub struct MqttSettings {
    /// Connections without credentials may publish for any registered device. Demo mode only.
    pub anonymous: bool,
    /// Largest packet accepted (announced to MQTT 5 clients); a larger one closes the connection.
    pub max_packet_bytes: u32,
    /// Open connections at most.
    pub max_connections: usize,
    /// QoS 1 and 2 messages a client may have unacknowledged (announced to MQTT 5 clients).
    pub receive_maximum: u16,
    /// Time a new connection has to send CONNECT.
    pub connect_timeout: Duration,
}

impl Default for MqttSettings {
    fn default() -> MqttSettings {
        MqttSettings {
            anonymous: false,
            max_packet_bytes: 1024 * 1024,
            max_connections: 50_000,
            receive_maximum: 1024,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Open MQTT sessions by client id, so that a reconnecting client takes over from its old
/// connection (MQTT requires one connection per client id).
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    open: Mutex<HashMap<String, (u64, Arc<Notify>)>>,
    next: AtomicU64,
}

impl Sessions {
    /// Registers `client_id`, telling an older connection with the same id to go.
    fn take(&self, client_id: &str) -> (u64, Arc<Notify>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some((_, old)) = open.insert(client_id.to_owned(), (id, notify.clone())) {
            old.notify_one();
        }
        (id, notify)
    }

    fn release(&self, client_id: &str, id: u64) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if open
            .get(client_id)
            .is_some_and(|(current, _)| *current == id)
        {
            open.remove(client_id);
        }
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Who is connected.
#[derive(Debug, Clone)]
enum Identity {
    /// An authenticated device: its serial.
    Device(String),
    /// Demo mode without credentials: may act for any registered device.
    Anonymous,
}

impl App {
    /// Accepts MQTT connections on `listener` until shutdown begins; open connections then finish
    /// the messages in hand, say goodbye (MQTT 5: DISCONNECT 0x8B) and close. Graceful shutdown
    /// waits for them before the store closes.
    pub async fn serve_mqtt(self, listener: TcpListener) {
        self.serve_mqtt_on(listener, None).await;
    }

    /// Like [`App::serve_mqtt`], over TLS (MQTT's port 8883): each accepted connection completes
    /// the handshake within `tls`'s timeout first. A device that presents a client certificate
    /// signed by the device CA is authenticated as the device whose serial the certificate names
    /// (subject CN, else the first DNS name): no password is needed, and a user name, if sent,
    /// must be that serial.
    pub async fn serve_mqtt_tls(self, listener: TcpListener, tls: DeviceTls) {
        self.serve_mqtt_on(listener, Some(tls)).await;
    }

    async fn serve_mqtt_on(self, listener: TcpListener, tls: Option<DeviceTls>) {
        let max = self.0.config.mqtt.max_connections;
        accept_loop(
            self,
            listener,
            SOURCE,
            max,
            tls,
            |app, stream| async move { app.mqtt_connection_logged(stream, None).await },
            |app, stream| async move {
                let certified = peer_serial(&stream);
                app.mqtt_connection_logged(stream, certified).await;
            },
        )
        .await;
    }

    async fn mqtt_connection_logged<S>(&self, stream: S, certified: Option<String>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        if let Err(error) = self.mqtt_connection(stream, certified).await {
            tracing::debug!(%error, "MQTT connection ended");
        }
    }

    /// Serves one connection. `certified` is the device serial of a verified client certificate.
    async fn mqtt_connection<S>(
        &self,
        mut stream: S,
        certified: Option<String>,
    ) -> Result<(), Ended>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let settings = self.0.config.mqtt;
        let mut buffer = BytesMut::with_capacity(512);
        // CONNECT first, within the connect timeout.
        let connect = tokio::time::timeout(settings.connect_timeout, async {
            loop {
                if let Some(frame) = next_frame(&mut buffer, settings.max_packet_bytes)? {
                    return Ok::<_, Ended>(frame);
                }
                if stream.read_buf(&mut buffer).await? == 0 {
                    return Err(Ended::Protocol("closed before CONNECT".into()));
                }
            }
        })
        .await
        .map_err(|_| Ended::Protocol("no CONNECT in time".into()))??;
        let (fixed, mut body) = connect;
        if fixed.packet_type != PacketType::Connect {
            return Err(Ended::Protocol("the first packet was not CONNECT".into()));
        }
        let level = protocol_level(&body);
        if !matches!(level, Some(4 | 5)) {
            // MQTT 3.1 and unknown levels: "unacceptable protocol version", in 3.1.1 form.
            let mut reply = BytesMut::new();
            encode(
                &ConnAckPacket::new_v311(false, ReasonCode::UnsupportedProtocolVersion),
                &mut reply,
            );
            send(&mut stream, &reply).await?;
            return Err(Ended::Protocol("unsupported protocol level".into()));
        }
        let connect = match Packet::decode_from_body(PacketType::Connect, &fixed, &mut body) {
            Ok(Packet::Connect(connect)) => connect,
            _ => return Err(Ended::Protocol("malformed CONNECT".into())),
        };
        let mut session = match self.accept_connect(&connect, certified.as_deref()) {
            Ok(session) => session,
            Err((code, why)) => {
                self.0.metrics.protocol_event(SOURCE, "connect_refused");
                tracing::warn!(why, "MQTT connection refused");
                let mut reply = BytesMut::new();
                encode(&connack(connect.protocol_version, code), &mut reply);
                send(&mut stream, &reply).await?;
                return Ok(());
            }
        };
        let (session_id, taken_over) = self.0.mqtt_sessions.take(&session.client_id);
        let result = self
            .mqtt_session(&mut stream, &mut buffer, &mut session, &connect, taken_over)
            .await;
        self.0.mqtt_sessions.release(&session.client_id, session_id);
        result
    }

    /// Checks a CONNECT: protocol rules and the device's credential, or the device serial
    /// `certified` by a verified client certificate.
    fn accept_connect(
        &self,
        connect: &mqtt5_protocol::packet::connect::ConnectPacket,
        certified: Option<&str>,
    ) -> Result<Session, (ReasonCode, &'static str)> {
        let version = connect.protocol_version;
        let mut client_id = connect.client_id.clone();
        let mut assigned = false;
        if client_id.is_empty() {
            if version == 4 && !connect.clean_start {
                return Err((
                    ReasonCode::ClientIdentifierNotValid,
                    "empty client id with a persistent session",
                ));
            }
            client_id = format!("galen-{}", ASSIGNED_IDS.fetch_add(1, Ordering::Relaxed));
            assigned = version == 5;
        }
        let identity = match (certified, &connect.username, &connect.password) {
            // The certificate is the credential (the CA vouches for the serial); a password sent
            // as well is not needed and not checked.
            (Some(serial), user, _) => {
                if user.as_deref().is_some_and(|user| user != serial) {
                    return Err((
                        ReasonCode::BadUsernameOrPassword,
                        "the user name differs from the client certificate's serial",
                    ));
                }
                let directory = self.0.directory.read();
                match directory.device_by_serial(serial) {
                    Some(device) if device.details.status.accepts_data() => {
                        Identity::Device(serial.to_owned())
                    }
                    Some(_) => {
                        return Err((ReasonCode::NotAuthorized, "device not accepting data"));
                    }
                    None => {
                        return Err((
                            ReasonCode::NotAuthorized,
                            "the client certificate names no registered device",
                        ));
                    }
                }
            }
            (None, Some(serial), Some(secret)) => {
                let directory = self.0.directory.read();
                let device = directory.device_by_serial(serial);
                match device {
                    Some(device) if directory.device_secret_valid(device.id, secret) => {
                        if !device.details.status.accepts_data() {
                            return Err((ReasonCode::NotAuthorized, "device not accepting data"));
                        }
                        Identity::Device(serial.clone())
                    }
                    _ => return Err((ReasonCode::BadUsernameOrPassword, "wrong credentials")),
                }
            }
            (None, None, None) if self.0.config.mqtt.anonymous => Identity::Anonymous,
            (None, None, _) => {
                return Err((
                    ReasonCode::NotAuthorized,
                    "no credentials (user name = device serial, password = device secret)",
                ));
            }
            (None, Some(_), None) => {
                return Err((ReasonCode::BadUsernameOrPassword, "no password"));
            }
        };
        let problem_information = connect
            .properties
            .get_request_problem_information()
            .unwrap_or(true);
        Ok(Session {
            version,
            client_id,
            assigned_client_id: assigned,
            identity,
            problem_information,
            max_packet: connect.properties.get_maximum_packet_size(),
            subscriptions: Vec::new(),
            awaiting_release: HashSet::new(),
        })
    }

    async fn mqtt_session<S>(
        &self,
        stream: &mut S,
        buffer: &mut BytesMut,
        session: &mut Session,
        connect: &mqtt5_protocol::packet::connect::ConnectPacket,
        taken_over: Arc<Notify>,
    ) -> Result<(), Ended>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let settings = self.0.config.mqtt;
        let mut out = BytesMut::with_capacity(256);
        let mut reply = connack(session.version, ReasonCode::Success);
        if session.version == 5 {
            // No session state is kept beyond the connection; no retained messages; no aliases.
            reply = reply
                .with_session_expiry_interval(0)
                .with_receive_maximum(settings.receive_maximum)
                .with_maximum_packet_size(settings.max_packet_bytes)
                .with_retain_available(false)
                .with_shared_subscription_available(false)
                .with_subscription_identifier_available(false);
            if session.assigned_client_id {
                reply = reply.with_assigned_client_id(session.client_id.clone());
            }
        }
        encode(&reply, &mut out);
        send(stream, &out).await?;
        out.clear();
        self.0.metrics.protocol_event(SOURCE, "connected");
        let keep_alive = (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
        let mut shutdown = self.0.shutdown.subscribe();
        // Whether the last read filled all the room it had: more is probably waiting.
        let mut busy = false;
        loop {
            let mut publishes = Vec::new();
            let mut close = None;
            loop {
                let frame = match next_frame(buffer, settings.max_packet_bytes) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(error) => {
                        close = Some((ReasonCode::PacketTooLarge, error));
                        break;
                    }
                };
                let (fixed, mut body) = frame;
                let packet = match Packet::decode_from_body_with_version(
                    fixed.packet_type,
                    &fixed,
                    &mut body,
                    session.version,
                ) {
                    Ok(packet) => packet,
                    Err(error) => {
                        close = Some((
                            ReasonCode::MalformedPacket,
                            Ended::Protocol(format!("malformed packet: {error}")),
                        ));
                        break;
                    }
                };
                if let Packet::Publish(publish) = packet {
                    if publish.topic_name.contains(['+', '#']) {
                        close = Some((
                            ReasonCode::TopicNameInvalid,
                            Ended::Protocol("wildcard in a PUBLISH topic".into()),
                        ));
                        break;
                    }
                    if publish.properties.get_topic_alias().is_some() {
                        close = Some((
                            ReasonCode::TopicAliasInvalid,
                            Ended::Protocol("topic alias without a maximum".into()),
                        ));
                        break;
                    }
                    publishes.push(publish);
                    continue;
                }
                // Acknowledge earlier publishes before answering anything after them.
                if !self
                    .publish_batch(session, &mut publishes, &mut out)
                    .await?
                {
                    return self.close(stream, session, &mut out, None).await;
                }
                match packet {
                    Packet::PingReq => out.extend_from_slice(&[0xD0, 0x00]),
                    Packet::PubRel(release) => {
                        let mut complete = PubCompPacket::new(release.packet_id);
                        if !session.awaiting_release.remove(&release.packet_id)
                            && session.version == 5
                        {
                            complete.reason_code = ReasonCode::PacketIdentifierNotFound;
                        }
                        encode(&complete, &mut out);
                    }
                    Packet::Subscribe(subscribe) => self.subscribe(session, &subscribe, &mut out),
                    Packet::Unsubscribe(unsubscribe) => {
                        let mut ack = if session.version == 5 {
                            UnsubAckPacket::new(unsubscribe.packet_id)
                        } else {
                            UnsubAckPacket::new_v311(unsubscribe.packet_id)
                        };
                        for filter in &unsubscribe.filters {
                            let had = session.subscriptions.contains(filter);
                            session.subscriptions.retain(|existing| existing != filter);
                            ack.reason_codes.push(if had {
                                UnsubAckReasonCode::Success
                            } else {
                                UnsubAckReasonCode::NoSubscriptionExisted
                            });
                        }
                        encode(&ack, &mut out);
                    }
                    Packet::Disconnect(_) => {
                        send(stream, &out).await?;
                        return Ok(());
                    }
                    // Galen sends nothing that needs these; a client sending them is confused.
                    Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => {}
                    _ => {
                        close = Some((
                            ReasonCode::ProtocolError,
                            Ended::Protocol("unexpected packet".into()),
                        ));
                        break;
                    }
                }
            }
            if !self
                .publish_batch(session, &mut publishes, &mut out)
                .await?
            {
                return self.close(stream, session, &mut out, None).await;
            }
            if let Some((code, why)) = close {
                send(stream, &out).await?;
                out.clear();
                if session.version == 5 {
                    encode(&DisconnectPacket::new(code), &mut out);
                    send(stream, &out).await?;
                }
                return Err(why);
            }
            if !out.is_empty() {
                send(stream, &out).await?;
                out.clear();
            }
            if *shutdown.borrow() {
                return self
                    .close(
                        stream,
                        session,
                        &mut out,
                        Some(ReasonCode::ServerShuttingDown),
                    )
                    .await;
            }
            // `read_buf` reads only into spare room, and after a partial frame `next_frame` reserved
            // just the rest of that frame: without more room every read would complete one PUBLISH
            // and nothing would be stored or acknowledged in batches. A busy connection reads up to
            // 16 KiB at once; an idle one gives the memory back and keeps 512 bytes.
            if busy {
                buffer.reserve(READ_ROOM);
            } else if buffer.is_empty() && buffer.capacity() > 4 * 1024 {
                *buffer = BytesMut::with_capacity(512);
            }
            let room = buffer.capacity() - buffer.len();
            let read = async {
                match keep_alive {
                    Some(limit) => tokio::time::timeout(limit, stream.read_buf(buffer))
                        .await
                        .map_err(|_| Ended::Protocol("keep-alive expired".into()))?
                        .map_err(Ended::Io),
                    None => stream.read_buf(buffer).await.map_err(Ended::Io),
                }
            };
            tokio::select! {
                read = read => {
                    let read = read?;
                    if read == 0 {
                        return Ok(());
                    }
                    busy = read >= room;
                }
                () = stopping(&mut shutdown) => {}
                () = taken_over.notified() => {
                    self.0.metrics.protocol_event(SOURCE, "session_taken_over");
                    return self
                        .close(stream, session, &mut out, Some(ReasonCode::SessionTakenOver))
                        .await;
                }
            }
        }
    }

    /// Sends what is queued, then DISCONNECT with `code` (MQTT 5), and ends the connection.
    async fn close<S>(
        &self,
        stream: &mut S,
        session: &Session,
        out: &mut BytesMut,
        code: Option<ReasonCode>,
    ) -> Result<(), Ended>
    where
        S: AsyncWrite + Unpin + Send,
    {
        if session.version == 5 {
            encode(
                &DisconnectPacket::new(code.unwrap_or(ReasonCode::ServerBusy)),
                out,
            );
        }
        send(stream, out).await?;
        out.clear();
        let _ = stream.shutdown().await;
        Ok(())
    }

    /// Devices may subscribe under their own prefix (to hear about refused items).
    fn subscribe(&self, session: &mut Session, subscribe: &SubscribePacket, out: &mut BytesMut) {
        let mut ack = if session.version == 5 {
            SubAckPacket::new(subscribe.packet_id)
        } else {
            SubAckPacket::new_v311(subscribe.packet_id)
        };
        for filter in &subscribe.filters {
            let allowed = match &session.identity {
                Identity::Device(serial) => filter
                    .filter
                    .strip_prefix(TOPIC_PREFIX)
                    .and_then(|rest| rest.strip_prefix(serial.as_str()))
                    .is_some_and(|rest| rest.starts_with('/')),
                Identity::Anonymous => filter.filter.starts_with(TOPIC_PREFIX),
            };
            if allowed {
                if !session.subscriptions.contains(&filter.filter) {
                    session.subscriptions.push(filter.filter.clone());
                }
                // Reports are sent at QoS 0.
                ack.reason_codes.push(SubAckReasonCode::GrantedQoS0);
            } else {
                self.0.metrics.protocol_event(SOURCE, "subscribe_refused");
                ack.reason_codes.push(if session.version == 5 {
                    SubAckReasonCode::NotAuthorized
                } else {
                    SubAckReasonCode::UnspecifiedError
                });
            }
        }
        encode(&ack, out);
    }

    /// Validates and stores a run of PUBLISH packets in one pipeline call, then queues their
    /// acknowledgements (and rejection reports) in order. Returns `false` when the connection must
    /// close without acknowledging (store failure, or a forbidden topic under MQTT 3.1.1).
    async fn publish_batch(
        &self,
        session: &mut Session,
        publishes: &mut Vec<PublishPacket>,
        out: &mut BytesMut,
    ) -> Result<bool, Ended> {
        if publishes.is_empty() {
            return Ok(true);
        }
        let publishes = std::mem::take(publishes);
        let verdicts = match self.store_publishes(session, &publishes).await {
            Ok(verdicts) => verdicts,
            Err(error) => {
                tracing::error!(%error, "MQTT messages could not be stored; closing without acknowledging");
                self.0.metrics.protocol_event(SOURCE, "store_failed");
                return Ok(false);
            }
        };
        let mut keep_open = true;
        for (publish, verdict) in publishes.iter().zip(&verdicts) {
            let outcomes = &verdict.results;
            let refused: Vec<(usize, &Rejection)> = outcomes
                .iter()
                .enumerate()
                .filter_map(|(index, result)| match result {
                    ItemResult::Rejected(rejection) => Some((index, rejection)),
                    _ => None,
                })
                .collect();
            self.report(session, publish, &refused, out);
            let forbidden = verdict.refused_whole == Some(RejectionReason::Forbidden);
            if forbidden && session.version == 4 {
                self.0.metrics.protocol_event(SOURCE, "forbidden_topic");
                keep_open = false;
                continue;
            }
            // Stored wholly or in part: success (a reason string lists what was refused).
            let code = if refused.len() < outcomes.len() || outcomes.is_empty() {
                ReasonCode::Success
            } else {
                match verdict.refused_whole {
                    Some(RejectionReason::Forbidden) => ReasonCode::NotAuthorized,
                    Some(_) => ReasonCode::PayloadFormatInvalid,
                    None => ReasonCode::ImplementationSpecificError,
                }
            };
            self.0.metrics.protocol_event(
                SOURCE,
                match code {
                    ReasonCode::Success if refused.is_empty() => "published",
                    ReasonCode::Success => "published_in_part",
                    ReasonCode::NotAuthorized => "forbidden_topic",
                    ReasonCode::PayloadFormatInvalid => "payload_invalid",
                    _ => "all_items_refused",
                },
            );
            let reason =
                (session.version == 5 && session.problem_information && !refused.is_empty())
                    .then(|| {
                        let (_, first) = refused[0];
                        format!(
                            "{} of {} items refused; first: {}: {}",
                            refused.len(),
                            outcomes.len(),
                            first.reason.code(),
                            first.message
                        )
                    })
                    // Only if the acknowledgement still fits the client's Maximum Packet Size.
                    .filter(|reason| session.fits(16 + reason.len()));
            let Some(packet_id) = publish.packet_id else {
                continue;
            };
            match publish.qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => {
                    let mut ack = PubAckPacket::new(packet_id);
                    if session.version == 5 {
                        ack.reason_code = code;
                        if let Some(reason) = reason {
                            ack.properties.set_reason_string(reason);
                        }
                    }
                    encode(&ack, out);
                }
                QoS::ExactlyOnce => {
                    let mut ack = PubRecPacket::new(packet_id);
                    if session.version == 5 {
                        ack.reason_code = code;
                        if let Some(reason) = reason {
                            ack.properties.set_reason_string(reason);
                        }
                    }
                    // A refused QoS 2 message ends at PUBREC (MQTT 5: reason >= 0x80).
                    if code == ReasonCode::Success || session.version == 4 {
                        session.awaiting_release.insert(packet_id);
                    }
                    encode(&ack, out);
                }
            }
        }
        Ok(keep_open)
    }

    /// Reads and stores `publishes` in one pipeline call; one verdict per message.
    async fn store_publishes(
        &self,
        session: &Session,
        publishes: &[PublishPacket],
    ) -> Result<Vec<Verdict>, galen_store::Error> {
        let templates = self.templates();
        let messages: Vec<Message<'_>> = publishes
            .iter()
            .map(|publish| read_message(session, publish, &templates))
            .collect();
        let mut items = Vec::new();
        let mut ranges = Vec::with_capacity(messages.len());
        for message in &messages {
            self.0
                .metrics
                .protocol_events(SOURCE, "mapped_item_skipped", message.skipped as u64);
            let start = items.len();
            message.items(&mut items);
            ranges.push(start..items.len());
        }
        let mut results = if items.is_empty() {
            Vec::new()
        } else {
            self.0.pipeline.ingest(SOURCE, items).await?.0
        };
        // Split the results per message, last message first.
        let mut verdicts = Vec::with_capacity(messages.len());
        for (message, range) in messages.iter().zip(ranges).rev() {
            let tail = results.split_off(range.start.min(results.len()));
            verdicts.push(Verdict {
                results: tail,
                refused_whole: match &message.body {
                    Body::Refused(reason, _) => Some(*reason),
                    _ => None,
                },
            });
        }
        verdicts.reverse();
        Ok(verdicts)
    }

    /// Stores messages an external broker delivered (topic and payload, e.g. from a shared
    /// subscription to `galen/v1/devices/+/+`). The broker authenticated the devices and enforced
    /// their topic permissions, so the topic's serial is trusted. Returns what became of each
    /// message's items, in order; `Err` means nothing may be assumed stored (do not acknowledge).
    pub async fn ingest_broker_messages(
        &self,
        messages: &[(String, Bytes)],
    ) -> Result<Vec<Vec<ItemResult>>, galen_store::Error> {
        let session = Session {
            version: 5,
            client_id: String::new(),
            assigned_client_id: false,
            identity: Identity::Anonymous,
            problem_information: false,
            max_packet: None,
            subscriptions: Vec::new(),
            awaiting_release: HashSet::new(),
        };
        let publishes: Vec<PublishPacket> = messages
            .iter()
            .map(|(topic, payload)| {
                PublishPacket::new(topic.clone(), payload.clone(), QoS::AtLeastOnce)
            })
            .collect();
        Ok(self
            .store_publishes(&session, &publishes)
            .await?
            .into_iter()
            .map(|verdict| verdict.results)
            .collect())
    }

    /// Publishes a report of each refused item to the device's rejections topic, if the
    /// connection subscribed to it.
    fn report(
        &self,
        session: &Session,
        publish: &PublishPacket,
        refused: &[(usize, &Rejection)],
        out: &mut BytesMut,
    ) {
        if refused.is_empty() {
            return;
        }
        let Some(serial) = topic_serial(&publish.topic_name) else {
            return;
        };
        let topic = format!("{TOPIC_PREFIX}{serial}/{REJECTIONS}");
        if !session
            .subscriptions
            .iter()
            .any(|filter| topic_matches(filter, &topic))
        {
            return;
        }
        let items: Vec<serde_json::Value> = refused
            .iter()
            .map(|(index, rejection)| {
                serde_json::json!({
                    "index": index,
                    "reason": rejection.reason.code(),
                    "message": rejection.message,
                })
            })
            .collect();
        let body = serde_json::json!({
            "topic": publish.topic_name,
            "packet_id": publish.packet_id,
            "refused": items,
        });
        let body = body.to_string();
        if !session.fits(16 + topic.len() + body.len()) {
            // A packet the client cannot take is not sent (MQTT 5: as if it had been delivered).
            return;
        }
        let report = if session.version == 5 {
            PublishPacket::new(topic, body.into_bytes(), QoS::AtMostOnce)
        } else {
            PublishPacket::new_v311(topic, body.into_bytes(), QoS::AtMostOnce)
        };
        encode(&report, out);
    }

    /// The mapping templates in force.
    pub(crate) fn templates(&self) -> Arc<galen_mapping::TemplateSet> {
        self.0
            .templates
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }
}

static ASSIGNED_IDS: AtomicU64 = AtomicU64::new(1);

/// State of one connection.
#[derive(Debug)]
struct Session {
    version: u8,
    client_id: String,
    assigned_client_id: bool,
    identity: Identity,
    problem_information: bool,
    /// The largest packet the client accepts (MQTT 5 Maximum Packet Size), if it said.
    max_packet: Option<u32>,
    /// Topic filters subscribed to (own prefix only).
    subscriptions: Vec<String>,
    /// QoS 2 packet ids received and answered with PUBREC, awaiting PUBREL.
    awaiting_release: HashSet<u16>,
}

impl Session {
    /// Whether a packet of about `bytes` fits the client's Maximum Packet Size.
    fn fits(&self, bytes: usize) -> bool {
        self.max_packet
            .is_none_or(|max| usize::try_from(max).is_ok_and(|max| bytes <= max))
    }
}

/// What became of one PUBLISH.
struct Verdict {
    /// One result per item (a message refused whole has one item).
    results: Vec<ItemResult>,
    /// Why the message was refused as a whole, if it was.
    refused_whole: Option<RejectionReason>,
}

/// A PUBLISH after reading its topic and payload.
struct Message<'p> {
    serial: &'p str,
    payload: &'p [u8],
    /// Items a template skipped on purpose (`when_missing = "skip"`): counted, not stored.
    skipped: usize,
    body: Body<'p>,
}

enum Body<'p> {
    /// Galen's measurement JSON.
    Items(Vec<(Parsed<'p>, &'p [u8])>),
    /// Measurements produced by a mapping template.
    Mapped(Vec<Result<galen_mapping::Mapped, galen_mapping::MappingError>>),
    /// A QoS 2 message already received (awaiting PUBREL): nothing to store again.
    Repeated,
    /// Refused as a whole, with the reason.
    Refused(RejectionReason, String),
}

impl<'p> Message<'p> {
    fn items(&'p self, items: &mut Vec<Result<Incoming<'p>, Unreadable<'p>>>) {
        let device = Some(self.serial).filter(|serial| !serial.is_empty());
        let raw = &self.payload[..self.payload.len().min(KEEP_PAYLOAD)];
        match &self.body {
            Body::Repeated => {}
            Body::Refused(reason, message) => items.push(Err(Unreadable {
                rejection: Rejection::new(*reason, message.clone()),
                device,
                raw,
            })),
            Body::Items(parsed) => {
                for (parsed, raw) in parsed {
                    items.push(match parsed {
                        Parsed::Item { wire, time, id } => match wire.device.as_deref() {
                            Some(named) if named != self.serial => Err(Unreadable {
                                rejection: Rejection::new(
                                    RejectionReason::Forbidden,
                                    format!(
                                        "the item names another device than its topic's ({})",
                                        self.serial
                                    ),
                                ),
                                device,
                                raw,
                            }),
                            _ => Ok(Incoming {
                                device: self.serial,
                                code: &wire.code,
                                value: wire.value,
                                unit: &wire.unit,
                                time: *time,
                                id: id.as_deref(),
                                raw,
                            }),
                        },
                        Parsed::Unreadable { rejection, .. } => Err(Unreadable {
                            rejection: rejection.clone(),
                            device,
                            raw,
                        }),
                    });
                }
            }
            Body::Mapped(mapped) => {
                for item in mapped {
                    items.push(match item {
                        Ok(mapped) if mapped.device != self.serial => Err(Unreadable {
                            rejection: Rejection::new(
                                RejectionReason::Forbidden,
                                format!(
                                    "the payload names another device than its topic's ({})",
                                    self.serial
                                ),
                            ),
                            device,
                            raw,
                        }),
                        Ok(mapped) => Ok(Incoming {
                            device: &mapped.device,
                            code: &mapped.code,
                            value: mapped.value,
                            unit: &mapped.unit,
                            time: mapped.time,
                            id: mapped.id.as_deref(),
                            raw,
                        }),
                        Err(error) => Err(Unreadable {
                            rejection: Rejection::new(
                                RejectionReason::Malformed,
                                error.to_string(),
                            ),
                            device,
                            raw,
                        }),
                    });
                }
            }
        }
    }
}

/// Reads the topic and payload of `publish` as `session` may send it.
fn read_message<'p>(
    session: &Session,
    publish: &'p PublishPacket,
    templates: &galen_mapping::TemplateSet,
) -> Message<'p> {
    let payload: &'p [u8] = &publish.payload;
    let topic = publish.topic_name.as_str();
    let refused = |serial: &'p str, reason, message: String| Message {
        serial,
        payload,
        skipped: 0,
        body: Body::Refused(reason, message),
    };
    let Some(serial) = topic_serial(topic) else {
        return refused(
            "",
            RejectionReason::Forbidden,
            format!("devices publish under {TOPIC_PREFIX}{{serial}}/..."),
        );
    };
    if let Identity::Device(own) = &session.identity
        && own != serial
    {
        return refused(
            serial,
            RejectionReason::Forbidden,
            format!("a device may publish only under {TOPIC_PREFIX}{own}/"),
        );
    }
    if publish.qos == QoS::ExactlyOnce
        && publish
            .packet_id
            .is_some_and(|id| session.awaiting_release.contains(&id))
    {
        return Message {
            serial,
            payload,
            skipped: 0,
            body: Body::Repeated,
        };
    }
    let suffix = &topic[TOPIC_PREFIX.len() + serial.len() + 1..];
    if suffix == MEASUREMENTS {
        return match parse_measurements(payload) {
            Ok(parsed) => Message {
                serial,
                payload,
                skipped: 0,
                body: Body::Items(parsed),
            },
            Err(message) => refused(serial, RejectionReason::Malformed, message),
        };
    }
    let value: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(value) => value,
        Err(error) => {
            return refused(
                serial,
                RejectionReason::Malformed,
                format!(
                    "the payload is not JSON: {}",
                    galen_fhir::redact::json_error(&error)
                ),
            );
        }
    };
    let Some(template) = templates.select(&value, Some(topic)) else {
        return refused(
            serial,
            RejectionReason::Unmapped,
            format!(
                "no mapping template matches this payload on this topic; publish Galen JSON to {TOPIC_PREFIX}{serial}/{MEASUREMENTS} or add a template"
            ),
        );
    };
    let context = galen_mapping::Context {
        topic_device: Some(serial),
    };
    match template.apply(&value, &context) {
        Ok(mapping) => Message {
            serial,
            payload,
            skipped: mapping.skipped.len(),
            body: Body::Mapped(mapping.items),
        },
        Err(error) => refused(
            serial,
            RejectionReason::Malformed,
            format!("template {:?}: {error}", template.name()),
        ),
    }
}

/// Galen measurement JSON: one object or an array of them.
#[allow(clippy::type_complexity)]
fn parse_measurements(payload: &[u8]) -> Result<Vec<(Parsed<'_>, &[u8])>, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "the payload is not UTF-8".to_owned())?;
    let trimmed = text.trim_start();
    let raw_items: Vec<&RawValue> = if trimmed.starts_with('[') {
        serde_json::from_str(text).map_err(|error| {
            format!(
                "the payload is not a JSON array of measurements: {}",
                galen_fhir::redact::json_error(&error)
            )
        })?
    } else {
        vec![serde_json::from_str(text).map_err(|error| {
            format!(
                "the payload is not a JSON measurement: {}",
                galen_fhir::redact::json_error(&error)
            )
        })?]
    };
    Ok(raw_items
        .into_iter()
        .map(|raw| (parse_item(raw), raw.get().as_bytes()))
        .collect())
}

/// The serial in `galen/v1/devices/{serial}/...`, if the topic has that shape.
fn topic_serial(topic: &str) -> Option<&str> {
    let rest = topic.strip_prefix(TOPIC_PREFIX)?;
    let (serial, suffix) = rest.split_once('/')?;
    (!serial.is_empty() && !suffix.is_empty()).then_some(serial)
}

/// MQTT topic filter matching (`+` one level, `#` the rest).
fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut levels = topic.split('/');
    for part in filter.split('/') {
        match part {
            "#" => return true,
            "+" => {
                if levels.next().is_none() {
                    return false;
                }
            }
            exact => {
                if levels.next() != Some(exact) {
                    return false;
                }
            }
        }
    }
    levels.next().is_none()
}

/// The protocol level byte of a CONNECT body (after the protocol name), if readable.
fn protocol_level(body: &Bytes) -> Option<u8> {
    let length = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + length).copied()
}

fn connack(version: u8, code: ReasonCode) -> ConnAckPacket {
    if version == 5 {
        ConnAckPacket::new(false, code)
    } else {
        ConnAckPacket::new_v311(false, code)
    }
}

/// Writes `bytes` and flushes them: a TLS stream may hold written bytes until flushed (for plain
/// TCP the flush does nothing).
async fn send<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

fn encode(packet: &impl MqttPacket, out: &mut BytesMut) {
    // Encoding packets Galen built itself cannot fail short of a bug; such a packet is dropped
    // (and logged) rather than taking the connection down.
    if let Err(error) = packet.encode(out) {
        tracing::error!(%error, "could not encode an MQTT packet");
    }
}

/// Takes the next complete packet off `buffer`: its fixed header and body.
fn next_frame(buffer: &mut BytesMut, max: u32) -> Result<Option<(FixedHeader, Bytes)>, Ended> {
    if buffer.len() < 2 {
        return Ok(None);
    }
    // The remaining length: 1 to 4 bytes of 7 bits each.
    let mut length_bytes = 0;
    let mut complete = false;
    for byte in buffer.iter().skip(1).take(4) {
        length_bytes += 1;
        if byte & 0x80 == 0 {
            complete = true;
            break;
        }
    }
    if !complete {
        if length_bytes == 4 {
            return Err(Ended::Protocol("malformed remaining length".into()));
        }
        return Ok(None);
    }
    let mut length_field = &buffer[1..=length_bytes];
    let length = decode_variable_int(&mut length_field)
        .map_err(|error| Ended::Protocol(format!("malformed remaining length: {error}")))?;
    if length > max {
        return Err(Ended::Protocol(format!(
            "packet of {length} bytes is over the {max}-byte limit"
        )));
    }
    let total = 1 + length_bytes + length as usize;
    if buffer.len() < total {
        buffer.reserve(total - buffer.len());
        return Ok(None);
    }
    let mut frame = buffer.split_to(total).freeze();
    let mut header = frame.clone();
    let fixed = FixedHeader::decode(&mut header)
        .map_err(|error| Ended::Protocol(format!("malformed fixed header: {error}")))?;
    frame.advance(1 + length_bytes);
    Ok(Some((fixed, frame)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_filters() {
        assert!(topic_matches(
            "galen/v1/devices/A/#",
            "galen/v1/devices/A/rejections"
        ));
        assert!(topic_matches(
            "galen/v1/devices/+/rejections",
            "galen/v1/devices/A/rejections"
        ));
        assert!(!topic_matches(
            "galen/v1/devices/B/#",
            "galen/v1/devices/A/rejections"
        ));
        assert!(!topic_matches(
            "galen/v1/devices/A",
            "galen/v1/devices/A/rejections"
        ));
        assert_eq!(
            topic_serial("galen/v1/devices/SN-1/measurements"),
            Some("SN-1")
        );
        assert_eq!(topic_serial("galen/v1/devices/SN-1"), None);
        assert_eq!(topic_serial("galen/v1/devices//x"), None);
        assert_eq!(topic_serial("other/SN-1/x"), None);
    }

    #[test]
    fn frames_are_split_and_bounded() {
        let mut buffer = BytesMut::from(&[0xC0u8, 0x00, 0xC0][..]);
        let (fixed, body) = next_frame(&mut buffer, 100).expect("ok").expect("a frame");
        assert_eq!(fixed.packet_type, PacketType::PingReq);
        assert!(body.is_empty());
        assert_eq!(next_frame(&mut buffer, 100).expect("ok").map(|_| ()), None);
        let mut big = BytesMut::from(&[0x30u8, 0xFF, 0xFF, 0x7F][..]);
        assert!(next_frame(&mut big, 1000).is_err(), "over the limit");
        let mut endless = BytesMut::from(&[0x30u8, 0xFF, 0xFF, 0xFF, 0xFF][..]);
        assert!(
            next_frame(&mut endless, u32::MAX).is_err(),
            "five length bytes"
        );
    }
}
