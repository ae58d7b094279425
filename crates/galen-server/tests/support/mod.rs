//! What the listener tests share: a minimal MQTT client over any stream (plain or TLS), a
//! measurement as a device sends it, and the values a device has stored.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use galen_model::{Timestamp, VitalSign};
use galen_server::App;
use galen_store::Store;
use mqtt5_protocol::packet::connect::ConnectPacket;
use mqtt5_protocol::packet::publish::PublishPacket;
use mqtt5_protocol::packet::{FixedHeader, MqttPacket, Packet};
use mqtt5_protocol::types::{ConnectOptions, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The fixed "now" of the listener tests.
pub const NOW: &str = "2026-11-23T08:00:30Z";

/// A packet as bytes on the wire.
pub fn bytes_of(packet: &impl MqttPacket) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet.encode(&mut out).expect("encode");
    out.to_vec()
}

/// A heart rate in Galen's JSON, `seconds` after [`NOW`].
pub fn measurement(value: f64, seconds: i64) -> String {
    let time = Timestamp::parse_rfc3339(NOW)
        .expect("now")
        .add_seconds(seconds)
        .to_rfc3339();
    format!(r#"{{"code":"heart_rate","value":{value},"unit":"/min","time":"{time}"}}"#)
}

/// The stored values of one device's vital sign, in time order.
pub async fn stored(app: &App, store: &dyn Store, serial: &str, vital: VitalSign) -> Vec<f64> {
    let device = app
        .directory()
        .read()
        .device_by_serial(serial)
        .expect("device")
        .id;
    store
        .range(device, vital, Timestamp::MIN, Timestamp::MAX)
        .await
        .expect("range")
        .into_iter()
        .map(|point| point.value)
        .collect()
}

/// A minimal MQTT client: packets encoded and decoded with the same codec crate, sent one by one.
pub struct MqttClient<S> {
    pub stream: S,
    buffer: BytesMut,
    version: u8,
}

impl<S: AsyncRead + AsyncWrite + Unpin> MqttClient<S> {
    /// Sends CONNECT on `stream`; returns the client and the server's first answer (CONNACK, or
    /// `None` if it closed).
    pub async fn handshake(
        stream: S,
        version: u8,
        client_id: &str,
        user: Option<&str>,
        password: Option<&str>,
    ) -> (MqttClient<S>, Option<Packet>) {
        let mut options = ConnectOptions::new(client_id);
        options.keep_alive = Duration::from_secs(30);
        options.username = user.map(str::to_owned);
        options.password = password.map(|password| password.as_bytes().to_vec());
        let connect = if version == 5 {
            ConnectPacket::new(options)
        } else {
            ConnectPacket::new_v311(options)
        };
        let mut client = MqttClient {
            stream,
            buffer: BytesMut::new(),
            version,
        };
        client.send(&bytes_of(&connect)).await;
        let answer = client.next().await;
        (client, answer)
    }

    /// Writes `bytes`. A refused peer may already have closed; the answer (or its absence) tells.
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
        let _ = self.stream.flush().await;
    }

    pub async fn publish(&mut self, topic: &str, payload: &str, qos: QoS, id: u16) {
        let mut publish = if self.version == 5 {
            PublishPacket::new(topic, payload.as_bytes().to_vec(), qos)
        } else {
            PublishPacket::new_v311(topic, payload.as_bytes().to_vec(), qos)
        };
        if qos != QoS::AtMostOnce {
            publish.packet_id = Some(id);
        }
        self.send(&bytes_of(&publish)).await;
    }

    /// The next packet, or `None` when the server closed the connection (or the TLS session
    /// failed).
    pub async fn next(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) = self.parse() {
                return Some(packet);
            }
            let read = tokio::time::timeout(
                Duration::from_secs(10),
                self.stream.read_buf(&mut self.buffer),
            )
            .await
            .expect("an answer within 10 s");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    fn parse(&mut self) -> Option<Packet> {
        let mut view = Bytes::copy_from_slice(&self.buffer);
        let total_before = view.len();
        let fixed = FixedHeader::decode(&mut view).ok()?;
        let header_len = total_before - view.len();
        let length = fixed.remaining_length as usize;
        if view.len() < length {
            return None;
        }
        let mut body = view.slice(..length);
        let packet = Packet::decode_from_body_with_version(
            fixed.packet_type,
            &fixed,
            &mut body,
            self.version,
        )
        .expect("Galen sends well-formed packets");
        let _ = self.buffer.split_to(header_len + length);
        Some(packet)
    }
}
