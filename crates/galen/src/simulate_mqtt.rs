//! `galen simulate --protocol mqtt`: each simulated monitor as an MQTT 5 device with its own
//! credential.
//!
//! For every monitor the simulator asks the server for a credential
//! (`POST /api/v1/devices/{id}/credentials`), logs in with the monitor's serial and that secret,
//! and publishes each vital-sign set as one Galen JSON batch at QoS 1 to
//! `galen/v1/devices/{serial}/measurements`, waiting for the PUBACK before the next set. A set
//! whose PUBACK does not come is published again (DUP) on a new connection with the same item
//! ids, so the server stores it once. The credentials are revoked when the run ends: they live as
//! long as the simulation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use galen_model::{Clock, SystemClock, Timestamp};
use galen_server::TOPIC_PREFIX;
use galen_sim::Simulator;
use hyper::{Method, StatusCode};
use mqtt5_protocol::packet::connect::ConnectPacket;
use mqtt5_protocol::packet::pingreq::PingReqPacket;
use mqtt5_protocol::packet::publish::PublishPacket;
use mqtt5_protocol::packet::{MqttPacket, Packet};
use mqtt5_protocol::types::{ConnectOptions, QoS, ReasonCode};
use mqtt5_protocol::{Properties, PropertyId, PropertyValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::bridge::next_packet;
use crate::client::HttpClient;
use crate::simulate::{SimulateArgs, Stopping, batch_body};

/// Keep-alive the simulated devices announce; a PINGREQ goes out after half of it without a set.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long to wait for a CONNACK or a PUBACK before the connection is considered dead.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest packet accepted from the server.
const MAX_PACKET: u32 = 1 << 20;

/// What the devices of a run have seen.
#[derive(Debug, Default)]
struct MqttCounts {
    sets: AtomicU64,
    readings: AtomicU64,
    /// PUBACK with a success code.
    stored: AtomicU64,
    /// PUBACK with an error reason code: the server kept the set as a dead letter.
    refused: AtomicU64,
    /// Sets published again after a connection failed or a PUBACK did not come.
    resent: AtomicU64,
}

impl MqttCounts {
    fn summary(&self) -> String {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        format!(
            "published {} sets ({} readings): stored {}, refused {}, resent {}",
            load(&self.sets),
            load(&self.readings),
            load(&self.stored),
            load(&self.refused),
            load(&self.resent)
        )
    }
}

/// One vital-sign set, ready to publish.
struct MqttJob {
    payload: Bytes,
    readings: u64,
}

/// A device's login: its serial, the credential's id on the server, and the secret.
#[derive(Clone)]
struct Login {
    device: i64,
    serial: String,
    credential: i64,
    secret: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Login")
            .field("serial", &self.serial)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

/// Issues one credential per monitor.
async fn issue_credentials(client: &HttpClient, devices: &[(i64, String)]) -> Result<Vec<Login>> {
    let mut logins = Vec::with_capacity(devices.len());
    for (device, serial) in devices {
        let path = format!("/api/v1/devices/{device}/credentials");
        let (status, answer) = client.post_json(&path, &serde_json::json!({})).await?;
        if status != StatusCode::CREATED {
            bail!("issuing a credential for {serial} answered {status}: {answer}");
        }
        logins.push(Login {
            device: *device,
            serial: serial.clone(),
            credential: answer["id"].as_i64().context("credential id")?,
            secret: answer["secret"]
                .as_str()
                .context("the credential answer has no secret")?
                .to_owned(),
        });
    }
    Ok(logins)
}

/// Revokes the run's credentials; failures are reported, not fatal.
async fn revoke_credentials(client: &HttpClient, logins: &[Login]) {
    for login in logins {
        let path = format!(
            "/api/v1/devices/{}/credentials/{}",
            login.device, login.credential
        );
        match client.send(Method::DELETE, &path, None).await {
            Ok((status, _)) if status.is_success() => {}
            Ok((status, _)) => {
                tracing::warn!(serial = %login.serial, %status, "could not revoke the simulator's credential");
            }
            Err(error) => {
                tracing::warn!(serial = %login.serial, %error, "could not revoke the simulator's credential");
            }
        }
    }
}

/// An MQTT 5 connection of one simulated device.
struct MqttConnection {
    stream: TcpStream,
    buffer: BytesMut,
    next_id: u16,
}

impl MqttConnection {
    /// Connects and logs in as `login`; a refused login is an error naming the reason.
    async fn open(address: &str, login: &Login) -> Result<MqttConnection> {
        let stream = tokio::time::timeout(ANSWER_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| anyhow::anyhow!("connecting to {address} timed out"))?
            .with_context(|| format!("connecting to the MQTT listener at {address}"))?;
        stream.set_nodelay(true)?;
        let options = ConnectOptions::new(format!("galen-sim-{}", login.serial))
            .with_keep_alive(KEEP_ALIVE)
            .with_clean_start(true)
            .with_credentials(&login.serial, &login.secret);
        let mut connection = MqttConnection {
            stream,
            buffer: BytesMut::with_capacity(4096),
            next_id: 0,
        };
        connection.write(&ConnectPacket::new(options)).await?;
        match connection.next().await? {
            Packet::ConnAck(connack) if connack.reason_code == ReasonCode::Success => {
                Ok(connection)
            }
            Packet::ConnAck(connack) => bail!(
                "the server refused {}'s login: {:?}",
                login.serial,
                connack.reason_code
            ),
            other => bail!("answered CONNECT with {}", other.packet_type_name()),
        }
    }

    async fn write(&mut self, packet: &impl MqttPacket) -> Result<()> {
        let mut out = BytesMut::with_capacity(256);
        packet.encode(&mut out).context("encoding an MQTT packet")?;
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// The next packet from the server.
    async fn next(&mut self) -> Result<Packet> {
        loop {
            if let Some(packet) = next_packet(&mut self.buffer, MAX_PACKET, 5)? {
                return Ok(packet);
            }
            let read = tokio::time::timeout(ANSWER_TIMEOUT, self.stream.read_buf(&mut self.buffer))
                .await
                .map_err(|_| {
                    anyhow::anyhow!("no answer within {} s", ANSWER_TIMEOUT.as_secs())
                })??;
            if read == 0 {
                bail!("the server closed the connection");
            }
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK; returns its reason code and reason string.
    async fn publish(
        &mut self,
        topic: &str,
        payload: &Bytes,
        dup: bool,
    ) -> Result<(ReasonCode, Option<String>)> {
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        let packet_id = self.next_id;
        let packet = PublishPacket::new(topic, payload.clone(), QoS::AtLeastOnce)
            .with_packet_id(packet_id)
            .with_dup(dup);
        self.write(&packet).await?;
        loop {
            match self.next().await? {
                Packet::PubAck(ack) if ack.packet_id == packet_id => {
                    return Ok((ack.reason_code, reason_string(&ack.properties)));
                }
                Packet::Disconnect(disconnect) => {
                    bail!("the server disconnected: {:?}", disconnect.reason_code)
                }
                // PINGRESP, or an answer to an earlier connection's packet id.
                _ => {}
            }
        }
    }

    /// Keeps the connection alive between sets.
    async fn ping(&mut self) -> Result<()> {
        self.write(&PingReqPacket::default()).await?;
        loop {
            match self.next().await? {
                Packet::PingResp => return Ok(()),
                Packet::Disconnect(disconnect) => {
                    bail!("the server disconnected: {:?}", disconnect.reason_code)
                }
                _ => {}
            }
        }
    }
}

fn reason_string(properties: &Properties) -> Option<String> {
    match properties.get(PropertyId::ReasonString) {
        Some(PropertyValue::Utf8String(text)) => Some(text.clone()),
        _ => None,
    }
}

/// Publishes one device's sets in order over one connection, each after the previous one's
/// PUBACK; reconnects and publishes again (DUP, same ids) when the connection fails.
async fn mqtt_device(
    address: String,
    login: Login,
    mut jobs: mpsc::Receiver<MqttJob>,
    counts: Arc<MqttCounts>,
) {
    let topic = format!("{TOPIC_PREFIX}{}/measurements", login.serial);
    let mut connection: Option<MqttConnection> = None;
    loop {
        let job = match tokio::time::timeout(KEEP_ALIVE / 2, jobs.recv()).await {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(_) => {
                if let Some(open) = connection.as_mut()
                    && let Err(error) = open.ping().await
                {
                    tracing::warn!(serial = %login.serial, %error, "keep-alive failed; reconnecting at the next set");
                    connection = None;
                }
                continue;
            }
        };
        let mut backoff = Duration::from_millis(100);
        let mut dup = false;
        let (code, reason) = loop {
            let answer = match connection.as_mut() {
                Some(open) => open.publish(&topic, &job.payload, dup).await,
                None => match MqttConnection::open(&address, &login).await {
                    Ok(open) => {
                        connection
                            .insert(open)
                            .publish(&topic, &job.payload, dup)
                            .await
                    }
                    Err(error) => Err(error),
                },
            };
            match answer {
                Ok(answer) => break answer,
                Err(error) => {
                    tracing::warn!(serial = %login.serial, %error, "MQTT publish failed; publishing the same set again");
                }
            }
            connection = None;
            dup = true;
            counts.resent.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        };
        if u8::from(code) >= 0x80 {
            counts.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(serial = %login.serial, ?code, reason = reason.as_deref().unwrap_or(""), "the server refused a set");
        } else {
            counts.stored.fetch_add(1, Ordering::Relaxed);
        }
        counts.sets.fetch_add(1, Ordering::Relaxed);
        counts.readings.fetch_add(job.readings, Ordering::Relaxed);
    }
}

/// `--protocol mqtt`: each vital-sign set as one QoS 1 publish on its monitor's own connection.
pub(crate) async fn send_mqtt(
    args: &SimulateArgs,
    client: &HttpClient,
    devices: &[(i64, String)],
    mut simulator: Simulator,
    now: Timestamp,
) -> Result<()> {
    let logins = issue_credentials(client, devices)
        .await
        .context("issuing the simulated monitors' MQTT credentials")?;
    // Fail early, and clearly, when nothing listens there or the login is refused.
    let first = logins.first().context("no monitors to simulate")?;
    if let Err(error) = MqttConnection::open(&args.mqtt, first).await {
        revoke_credentials(client, &logins).await;
        return Err(error).with_context(|| {
            format!(
                "is the server listening for MQTT at {} (galen serve --mqtt-addr)?",
                args.mqtt
            )
        });
    }
    let run = now.micros() / 1_000_000;
    let counts = Arc::new(MqttCounts::default());
    let mut senders = Vec::with_capacity(logins.len());
    let mut tasks = Vec::with_capacity(logins.len());
    let revoke = logins.clone();
    for login in logins {
        // A few sets of slack; a slow server then slows the simulation instead of queueing.
        let (sender, jobs) = mpsc::channel(16);
        senders.push(sender);
        tasks.push(tokio::spawn(mqtt_device(
            args.mqtt.clone(),
            login,
            jobs,
            counts.clone(),
        )));
    }
    let started = Instant::now();
    let mut stopping = Stopping::new(started, args.duration);
    let mut report = Instant::now();
    println!(
        "galen simulate: {} patients, scenario {}, {} sets/s each -> mqtt://{}",
        args.patients, args.scenario, args.rate, args.mqtt
    );
    let mut failure = None;
    while stopping.tick().await {
        let readings = simulator.step(SystemClock.now().micros());
        // A set is the run of readings of one patient at one time, as for HL7.
        for set in readings.chunk_by(|left, right| {
            left.patient_index == right.patient_index && left.time_micros == right.time_micros
        }) {
            let index = set[0].patient_index;
            let Some(sender) = senders.get(index) else {
                continue;
            };
            let job = MqttJob {
                payload: batch_body(set, run, args.offset),
                readings: set.len() as u64,
            };
            if sender.send(job).await.is_err() {
                failure = Some(format!(
                    "the MQTT device {} stopped",
                    Simulator::device_serial(index + args.offset)
                ));
                break;
            }
        }
        if failure.is_some() {
            break;
        }
        if report.elapsed() >= Duration::from_secs(10) {
            println!("{}", counts.summary());
            report = Instant::now();
        }
    }
    // Let every device finish the sets it holds (each waits for its PUBACKs), but not forever.
    drop(senders);
    let waiting = async {
        for task in &mut tasks {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .is_err()
    {
        tasks.iter().for_each(tokio::task::JoinHandle::abort);
        tracing::warn!("some sets were still unacknowledged after 30 s; giving up");
    }
    revoke_credentials(client, &revoke).await;
    println!(
        "done after {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        counts.summary()
    );
    match failure {
        Some(failure) => bail!(failure),
        None => Ok(()),
    }
}
