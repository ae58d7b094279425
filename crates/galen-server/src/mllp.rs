//! The HL7 v2 listener: ORU^R01 (IHE PCD-01) over MLLP.
//!
//! `bytes -> mllp::Decoder -> frame -> Message::parse -> read_oru -> items -> Pipeline` with the
//! ACK built from the items' verdicts and stored as a receipt in the same commit, then sent. So:
//! - an ACK is sent only after the message's content (and every refused part of it, as dead
//!   letters) is durable; a store failure is answered AR/CE with ERR 207 and nothing is kept, so
//!   the sender resends;
//! - a repeated control id (same sending application, device and facility) is answered with the
//!   stored ACK, byte for byte, and stores nothing; the store decides this inside its commit, so
//!   two copies arriving at once on two connections are stored once and answered alike;
//! - anything not understood is kept: frames that are not HL7, refused messages and garbage
//!   between frames as the raw bytes, refused observations as their OBX segment, each with the
//!   reason.
//!
//! Attribution: values belong to the device named by OBX-18 (else MSH-3's EUI-64), registered
//! with that id as its serial, and to the patient the device is assigned to at each value's time.
//! When PID-3 names a registered patient other than the assigned one, the values are refused
//! (`patient_mismatch`): a wrong-patient value is worse than a missing one.
//!
//! Who may send: HL7 v2 has no credentials, so the sender is authenticated by the transport.
//! Over TLS ([`App::serve_mllp_tls`]) a client certificate from the device CA binds the
//! connection to the device its subject CN names (see `tls.rs`): a message whose MSH-3 or any
//! OBX-18 names another device is refused whole (AR, or CR in enhanced mode, ERR 207 naming the
//! field), counted (`galen_protocol_events_total{protocol="mllp",event="foreign_device"}`) and
//! kept as a `forbidden` dead letter; no receipt is stored for it, so it cannot occupy the real
//! device's control ids. Gateways relaying for other devices are not modelled in the registry
//! yet, so a certificate speaks for its own device only. A connection without a certificate
//! (plain TCP, or TLS without one) is anonymous: its messages are taken at their word only when
//! [`MllpSettings::anonymous`] allows it (demo mode, or `galen serve --allow-anonymous-mllp`);
//! otherwise each message is answered AR, nothing is stored, and the connection is closed.
//!
//! Connections are processed one message at a time, in order, as MLLP senders expect; many
//! connections share the store's group commit.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use galen_hl7v2::mllp::{Decoder, Frame, encode_frame};
use galen_hl7v2::{
    Diagnostic, ErrorCode, Header, Message, Observation, ObservationValue, Outcome, Severity,
    build_ack, format_time, read_header, read_oru,
};
use galen_model::{Rejection, RejectionReason, Timestamp};
use galen_store::Receipt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::App;
use crate::listener::{accept_loop, stopping};
use crate::pipeline::{Incoming, Unreadable};
use crate::tls::{DeviceTls, peer_serial};

/// The source name of this adapter in dead letters, metrics and receipts.
const SOURCE: &str = "mllp";
/// Bytes of a stray frame or garbage kept in a dead letter.
const KEEP_GARBAGE: usize = 64 * 1024;

/// Settings of the MLLP listener.
#[derive(Debug, Clone, Copy)]
pub struct MllpSettings {
    /// Largest message accepted; a longer frame is refused (AR) and its bytes discarded.
    pub max_message_bytes: usize,
    /// Open connections at most; more are closed at once (and counted).
    pub max_connections: usize,
    /// Connections without a verified client certificate may send for any registered device
    /// (their messages name the device). Off by default: such connections are refused.
    pub anonymous: bool,
}

impl Default for MllpSettings {
    fn default() -> MllpSettings {
        MllpSettings {
            max_message_bytes: 1024 * 1024,
            max_connections: 1024,
            anonymous: false,
        }
    }
}

/// Counter for the ACKs' own control ids: unique within the process, ordered.
static ACK_SEQUENCE: AtomicU64 = AtomicU64::new(1);

impl App {
    /// Accepts MLLP connections on `listener` until shutdown begins; each connection then
    /// finishes the message in hand and closes. Graceful shutdown waits for them before the store
    /// closes.
    pub async fn serve_mllp(self, listener: TcpListener) {
        self.serve_mllp_on(listener, None).await;
    }

    /// Like [`App::serve_mllp`], over TLS: each accepted connection completes the handshake
    /// within `tls`'s timeout first. A verified client certificate binds the connection to the
    /// device it names: messages for any other device are refused (see the module docs).
    pub async fn serve_mllp_tls(self, listener: TcpListener, tls: DeviceTls) {
        self.serve_mllp_on(listener, Some(tls)).await;
    }

    async fn serve_mllp_on(self, listener: TcpListener, tls: Option<DeviceTls>) {
        let max = self.0.config.mllp.max_connections;
        accept_loop(
            self,
            listener,
            SOURCE,
            max,
            tls,
            |app, stream| async move { app.mllp_connection_logged(stream, None).await },
            |app, stream| async move {
                let certified = peer_serial(&stream);
                app.mllp_connection_logged(stream, certified).await;
            },
        )
        .await;
    }

    async fn mllp_connection_logged<S>(&self, stream: S, certified: Option<String>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        if let Err(error) = self.mllp_connection(stream, certified.as_deref()).await {
            tracing::debug!(%error, "MLLP connection ended with an error");
        }
    }

    /// Serves one connection. `certified` is the device serial of a verified client
    /// certificate: every message must come from that device.
    async fn mllp_connection<S>(
        &self,
        mut stream: S,
        certified: Option<&str>,
    ) -> std::io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        // Fail closed: without a certificate, and unless anonymous senders are allowed, nothing
        // from this connection is stored; each message read is answered AR, then it closes.
        let unauthenticated = certified.is_none() && !self.0.config.mllp.anonymous;
        let mut decoder = Decoder::new(self.0.config.mllp.max_message_bytes);
        let mut buffer = vec![0u8; 16 * 1024];
        let mut shutdown = self.0.shutdown.subscribe();
        let mut replies = Vec::new();
        loop {
            while let Some(frame) = decoder.next_frame() {
                let ack = if unauthenticated {
                    self.unauthenticated(&frame)
                } else {
                    self.mllp_frame(frame, certified).await
                };
                if let Some(ack) = ack {
                    replies.extend_from_slice(&encode_frame(&ack));
                    if unauthenticated {
                        // One refusal, then the connection closes.
                        break;
                    }
                }
            }
            if !replies.is_empty() {
                stream.write_all(&replies).await?;
                // A TLS stream may hold written bytes until flushed (plain TCP: no-op).
                stream.flush().await?;
                replies.clear();
                if unauthenticated {
                    return Ok(());
                }
            }
            if *shutdown.borrow() {
                return Ok(());
            }
            let read = tokio::select! {
                read = stream.read(&mut buffer) => read?,
                () = stopping(&mut shutdown) => return Ok(()),
            };
            if read == 0 {
                if unauthenticated {
                    return Ok(());
                }
                if let Some(Frame::Oversize { discarded, head }) = decoder.finish() {
                    // Kept as a dead letter; there is no one left to answer.
                    self.oversize(discarded, &head, certified).await;
                } else if decoder.pending() > 0 {
                    self.keep_unframed(
                        "the connection closed inside an unfinished MLLP frame",
                        &[],
                        decoder.pending(),
                    )
                    .await;
                }
                return Ok(());
            }
            decoder.push(&buffer[..read]);
        }
    }

    /// Handles one decoded frame; returns the ACK to send, if one is due.
    async fn mllp_frame(&self, frame: Frame, certified: Option<&str>) -> Option<Vec<u8>> {
        match frame {
            Frame::Message(bytes) => self.hl7_message(&bytes, certified).await,
            Frame::Garbage(bytes) => {
                self.keep_unframed("bytes outside an MLLP frame", &bytes, bytes.len())
                    .await;
                None
            }
            Frame::Oversize { discarded, head } => self.oversize(discarded, &head, certified).await,
        }
    }

    /// The answer to a frame from a connection that may not send: AR (or CR) naming the reason
    /// for a message, nothing for garbage. Nothing is stored: an unauthenticated peer must not
    /// be able to fill the dead-letter store.
    fn unauthenticated(&self, frame: &Frame) -> Option<Vec<u8>> {
        self.0.metrics.protocol_event(SOURCE, "unauthenticated");
        tracing::warn!("HL7 message on an MLLP connection without a client certificate refused");
        let header = match frame {
            Frame::Message(bytes) => msh_of(bytes),
            Frame::Oversize { head, .. } => msh_of(head),
            Frame::Garbage(_) => return None,
        };
        let diagnostic = diagnostic(
            "MSH",
            Some(3),
            ErrorCode::ApplicationError,
            Severity::Error,
            "this listener accepts only devices presenting a client certificate from the device CA; nothing was stored".into(),
        );
        Some(self.ack(&header, Outcome::Rejected, &[diagnostic]))
    }

    /// Refuses an oversize frame: AR (or CR) addressed by its MSH when the head holds one, and
    /// its head kept as the dead letter (of the certified device, on a certified connection).
    async fn oversize(
        &self,
        discarded: usize,
        head: &[u8],
        certified: Option<&str>,
    ) -> Option<Vec<u8>> {
        self.0.metrics.protocol_event(SOURCE, "oversize");
        let message = format!(
            "the message is larger than {} bytes and was discarded; split it",
            self.0.config.mllp.max_message_bytes
        );
        let rejection = Rejection::new(RejectionReason::TooLarge, message.clone());
        let header = msh_of(head);
        let device = certified.map_or_else(|| header.sending_device_id.clone(), str::to_owned);
        self.keep(vec![Err(Unreadable {
            rejection,
            device: (!device.is_empty()).then_some(device.as_str()),
            raw: head,
        })])
        .await;
        tracing::warn!(bytes = discarded, "oversize HL7 message refused");
        let diagnostic = diagnostic(
            "MSH",
            None,
            ErrorCode::ApplicationError,
            Severity::Error,
            message,
        );
        let ack = self.ack(&header, Outcome::Rejected, &[diagnostic]);
        wanted(&header, &ack).then_some(ack)
    }

    /// Keeps bytes that were not a frame as a dead letter.
    async fn keep_unframed(&self, what: &str, bytes: &[u8], length: usize) {
        self.0.metrics.protocol_event(SOURCE, "garbage");
        let message = format!("{length} {what}; they were skipped");
        let rejection = Rejection::new(RejectionReason::Malformed, message);
        let raw = &bytes[..bytes.len().min(KEEP_GARBAGE)];
        self.keep(vec![Err(Unreadable {
            rejection,
            device: None,
            raw,
        })])
        .await;
    }

    /// Stores dead letters that have no sender to answer.
    async fn keep(&self, items: Vec<Result<Incoming<'_>, Unreadable<'_>>>) {
        if let Err(error) = self.0.pipeline.ingest(SOURCE, items).await {
            tracing::error!(%error, "could not keep an unreadable MLLP frame");
        }
    }

    /// Builds an ACK for `header` with a fresh control id and the current time.
    fn ack(&self, header: &Header, outcome: Outcome, diagnostics: &[Diagnostic]) -> Vec<u8> {
        let sequence = ACK_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let now = self.0.clock.now();
        build_ack(
            header,
            outcome,
            diagnostics,
            &format!("GALEN{sequence}"),
            &format_time(now.micros()),
        )
        .into_bytes()
    }

    /// Reads, stores and acknowledges one HL7 message; `certified` is the device the connection
    /// is bound to, if any.
    async fn hl7_message(&self, bytes: &[u8], certified: Option<&str>) -> Option<Vec<u8>> {
        // HL7 v2 text is ASCII in practice; vendors that send Latin-1 get each byte as its
        // character rather than a refusal.
        let text: Cow<'_, str> = match std::str::from_utf8(bytes) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => Cow::Owned(bytes.iter().map(|byte| char::from(*byte)).collect()),
        };
        let message = match Message::parse(&text) {
            Ok(message) => message,
            Err(error) => {
                self.0.metrics.protocol_event(SOURCE, "AR");
                let text = format!("not an HL7 v2 message: {error}");
                let rejection = Rejection::new(RejectionReason::Malformed, text.clone());
                self.keep(vec![Err(Unreadable {
                    rejection,
                    device: None,
                    raw: bytes,
                })])
                .await;
                let diagnostic = diagnostic(
                    "MSH",
                    Some(1),
                    ErrorCode::SegmentSequence,
                    Severity::Error,
                    text,
                );
                return Some(self.ack(&Header::default(), Outcome::Rejected, &[diagnostic]));
            }
        };
        let header = read_header(&message);
        if let Some(serial) = certified
            && let Some(problem) = foreign_sender(serial, &header, None)
        {
            return self.refuse_foreign(bytes, &header, serial, problem).await;
        }
        // A repeated control id is recognised in the store's commit (see `commit`), atomically
        // and without a lookup per message.
        let key = receipt_key(&header, certified);
        let report = match read_oru(&message) {
            Ok(report) => report,
            Err(refusal) => {
                let problem = refusal.diagnostic.message.clone();
                let rejection = Rejection::new(RejectionReason::Malformed, problem);
                let device = header.sending_device_id.clone();
                let item = Err(Unreadable {
                    rejection,
                    device: (!device.is_empty()).then_some(device.as_str()),
                    raw: bytes,
                });
                let ack = self.ack(&header, Outcome::Rejected, &[refusal.diagnostic]);
                return self.commit(&header, key, vec![item], |_| ack).await;
            }
        };
        if let Some(serial) = certified
            && let Some(problem) = foreign_sender(serial, &header, Some(&report))
        {
            return self.refuse_foreign(bytes, &header, serial, problem).await;
        }
        let obx_lines = segment_lines(&message, "OBX", message.delimiters.field);
        let mut specs = Vec::with_capacity(report.observations.len());
        for observation in &report.observations {
            specs.push(ItemSpec::from_observation(observation));
        }
        // Observations the reader had to skip are refused items too (kept as their OBX).
        let mut notes = report.diagnostics.clone();
        for note in &report.diagnostics {
            if note.severity == Severity::Error && note.segment == "OBX" {
                specs.push(ItemSpec {
                    occurrence: note.occurrence,
                    device: String::new(),
                    code: String::new(),
                    unit: String::new(),
                    value: f64::NAN,
                    time: Timestamp::from_micros(0),
                    refused: Some((
                        Rejection::new(RejectionReason::Malformed, note.message.clone()),
                        true,
                    )),
                });
            }
        }
        self.check_patient(&report, &mut specs, &mut notes);
        let items: Vec<Result<Incoming<'_>, Unreadable<'_>>> = specs
            .iter()
            .map(|spec| {
                let raw = obx_lines
                    .get(spec.occurrence.wrapping_sub(1))
                    .map_or(&b""[..], |line| line.as_bytes());
                match &spec.refused {
                    Some((rejection, _)) => Err(Unreadable {
                        rejection: rejection.clone(),
                        device: (!spec.device.is_empty()).then_some(spec.device.as_str()),
                        raw,
                    }),
                    None => Ok(Incoming {
                        device: &spec.device,
                        code: &spec.code,
                        value: spec.value,
                        unit: &spec.unit,
                        time: spec.time,
                        id: None,
                        raw,
                    }),
                }
            })
            .collect();
        let build = |verdicts: &[Option<&Rejection>]| {
            let mut diagnostics = notes;
            for (spec, verdict) in specs.iter().zip(verdicts) {
                let already_noted = spec.refused.as_ref().is_some_and(|(_, noted)| *noted);
                if let (Some(rejection), false) = (verdict, already_noted) {
                    diagnostics.push(item_diagnostic(spec.occurrence, rejection));
                }
            }
            let outcome = if diagnostics
                .iter()
                .any(|diagnostic| diagnostic.severity == Severity::Error)
            {
                Outcome::Error
            } else {
                Outcome::Accepted
            };
            self.ack(&report.header, outcome, &diagnostics)
        };
        self.commit(&header, key, items, build).await
    }

    /// Refuses a whole message from a certified connection that names another device: kept as a
    /// `forbidden` dead letter of the certified device, counted, answered AR (or CR). No receipt
    /// is stored, so the message cannot claim the named device's control id.
    async fn refuse_foreign(
        &self,
        bytes: &[u8],
        header: &Header,
        serial: &str,
        problem: Diagnostic,
    ) -> Option<Vec<u8>> {
        self.0.metrics.protocol_event(SOURCE, "foreign_device");
        tracing::warn!(
            certified = serial,
            "HL7 message naming another device than the client certificate refused"
        );
        let rejection = Rejection::new(RejectionReason::Forbidden, problem.message.clone());
        self.keep(vec![Err(Unreadable {
            rejection,
            device: Some(serial),
            raw: bytes,
        })])
        .await;
        let ack = self.ack(header, Outcome::Rejected, &[problem]);
        self.0.metrics.protocol_event(SOURCE, ack_result(&ack));
        wanted(header, &ack).then_some(ack)
    }

    /// Stores `items` with the ACK `build` makes from their verdicts, then returns the ACK if the
    /// sender wants it.
    async fn commit(
        &self,
        header: &Header,
        key: Option<String>,
        items: Vec<Result<Incoming<'_>, Unreadable<'_>>>,
        build: impl FnOnce(&[Option<&Rejection>]) -> Vec<u8> + Send,
    ) -> Option<Vec<u8>> {
        let mut built = None;
        let received = self.0.clock.now();
        let receipt = |verdicts: &[Option<&Rejection>]| {
            let ack = build(verdicts);
            built = Some(ack.clone());
            // A message without a control id cannot be asked about again: no receipt.
            key.map(|key| Receipt {
                source: SOURCE.to_owned(),
                key,
                received,
                response: ack,
            })
        };
        match self
            .0
            .pipeline
            .ingest_with_receipt(SOURCE, items, Some(receipt))
            .await
        {
            Ok(_) => {
                let ack = built?;
                self.0.metrics.protocol_event(SOURCE, ack_result(&ack));
                wanted(header, &ack).then_some(ack)
            }
            Err(galen_store::Error::AlreadyAnswered(earlier)) => {
                self.0.metrics.protocol_event(SOURCE, "repeated");
                wanted(header, &earlier.response).then_some(earlier.response)
            }
            Err(error) => {
                tracing::error!(%error, "an HL7 message could not be stored");
                Some(self.store_failed(header))
            }
        }
    }

    /// The answer when nothing could be stored: AR (original mode) or CE (enhanced), ERR 207.
    fn store_failed(&self, header: &Header) -> Vec<u8> {
        self.0.metrics.protocol_event(SOURCE, "store_failed");
        let outcome = if enhanced(header) {
            Outcome::Error
        } else {
            Outcome::Rejected
        };
        let diagnostic = diagnostic(
            "MSH",
            Some(10),
            ErrorCode::ApplicationError,
            Severity::Error,
            "the message could not be stored; nothing was kept, resend it".into(),
        );
        self.ack(header, outcome, &[diagnostic])
    }

    /// Refuses values whose device is assigned to another patient than PID-3 names.
    fn check_patient(
        &self,
        report: &galen_hl7v2::OruReport,
        specs: &mut [ItemSpec],
        notes: &mut Vec<Diagnostic>,
    ) {
        let Some(named) = &report.patient else {
            return;
        };
        let directory = self.0.directory.read();
        let Some(patient) = directory.patient_by_identifier(&named.id, &named.authority) else {
            notes.push(diagnostic(
                "PID",
                Some(3),
                ErrorCode::TableValueNotFound,
                Severity::Warning,
                "PID-3 is not a registered patient; values are attributed by the device's assignment"
                    .into(),
            ));
            return;
        };
        for spec in specs.iter_mut().filter(|spec| spec.refused.is_none()) {
            let assigned = directory
                .device_by_serial(&spec.device)
                .and_then(|device| directory.patient_at(device.id, spec.time));
            if assigned.is_some_and(|assigned| assigned != patient.id) {
                spec.refused = Some((
                    Rejection::new(
                        RejectionReason::PatientMismatch,
                        format!(
                            "PID-3 names another patient than device {:?} is assigned to at this time; correct the assignment or the sender's patient context",
                            spec.device
                        ),
                    ),
                    false,
                ));
            }
        }
    }
}

/// One observation turned into what the pipeline needs, owning its text.
struct ItemSpec {
    /// OBX occurrence (1-based).
    occurrence: usize,
    device: String,
    code: String,
    unit: String,
    value: f64,
    time: Timestamp,
    /// Refused before the pipeline, and whether the reader's diagnostics already say why.
    refused: Option<(Rejection, bool)>,
}

impl ItemSpec {
    fn from_observation(observation: &Observation) -> ItemSpec {
        // MDC numbers first; the reference id (MDC_PULS_OXIM_SAT_O2) when the number is unknown.
        let code = if galen_model::VitalSign::parse(&observation.code).is_none()
            && galen_model::VitalSign::parse(&observation.code_text).is_some()
        {
            observation.code_text.clone()
        } else {
            observation.code.clone()
        };
        let unit = if galen_model::Unit::parse(&observation.unit_code).is_none()
            && galen_model::Unit::parse(&observation.unit_text).is_some()
        {
            observation.unit_text.clone()
        } else {
            observation.unit_code.clone()
        };
        let time = Timestamp::from_micros(observation.time.map_or(0, |time| time.micros));
        let mut refused = None;
        let value = match (&observation.value, observation.status.as_str()) {
            // Status X: "results cannot be obtained": the device has no value.
            (_, "X") | (ObservationValue::Absent, _) => f64::NAN,
            (ObservationValue::Number(number), _) => *number,
            (ObservationValue::Text(_), _) => {
                let reason = if galen_model::VitalSign::parse(&code).is_some() {
                    RejectionReason::Malformed
                } else {
                    RejectionReason::UnknownCode
                };
                refused = Some((
                    Rejection::new(reason, "OBX-5 is text; Galen stores numeric vital signs"),
                    false,
                ));
                f64::NAN
            }
        };
        if observation.demo && refused.is_none() {
            refused = Some((
                Rejection::new(
                    RejectionReason::DemoData,
                    "OBX-8 marks the value as demonstration data; it is kept out of the record",
                ),
                false,
            ));
        }
        ItemSpec {
            occurrence: observation.occurrence,
            device: observation.equipment.clone(),
            code,
            unit,
            value,
            time,
            refused,
        }
    }
}

fn diagnostic(
    segment: &str,
    field: Option<usize>,
    code: ErrorCode,
    severity: Severity,
    message: String,
) -> Diagnostic {
    Diagnostic {
        segment: segment.to_owned(),
        occurrence: 1,
        field,
        code,
        message,
        severity,
    }
}

/// The ERR entry for a refused observation: where, which table 0357 code, how bad.
fn item_diagnostic(occurrence: usize, rejection: &Rejection) -> Diagnostic {
    use RejectionReason as R;
    let (field, code, severity) = match rejection.reason {
        R::UnknownDevice => (Some(18), ErrorCode::TableValueNotFound, Severity::Error),
        R::DeviceNotAccepting | R::Forbidden => {
            (Some(18), ErrorCode::ApplicationError, Severity::Error)
        }
        // Codes Galen does not catalogue are common in PCD-01 (settings, alerts): kept, warned.
        R::UnknownCode => (Some(3), ErrorCode::TableValueNotFound, Severity::Warning),
        R::UnknownUnit | R::WrongUnit => (Some(6), ErrorCode::TableValueNotFound, Severity::Error),
        R::DataAbsent => (Some(5), ErrorCode::ApplicationError, Severity::Warning),
        R::DemoData => (Some(8), ErrorCode::ApplicationError, Severity::Warning),
        R::Implausible => (Some(5), ErrorCode::ApplicationError, Severity::Error),
        R::Malformed => (Some(5), ErrorCode::DataType, Severity::Error),
        R::BadTime | R::FutureTime | R::TooOld => (Some(14), ErrorCode::DataType, Severity::Error),
        R::PatientMismatch => {
            return Diagnostic {
                segment: "PID".into(),
                occurrence: 1,
                field: Some(3),
                code: ErrorCode::ApplicationError,
                message: format!("OBX {occurrence}: {}", rejection.message),
                severity: Severity::Error,
            };
        }
        R::TooLarge | R::UnsupportedMediaType | R::Unmapped => {
            (None, ErrorCode::ApplicationError, Severity::Error)
        }
    };
    Diagnostic {
        segment: "OBX".into(),
        occurrence,
        field,
        code,
        message: rejection.message.clone(),
        severity,
    }
}

/// Where a message from a connection certified as `serial` names another device, as the ERR
/// entry of its refusal: MSH-3.2 (the sender's id), else the first OBX-18 (the equipment each
/// value belongs to, `report` once read). Empty ids are not claims and pass; the pipeline refuses
/// values without a device. The reason names the certified serial (authenticated, registered),
/// never the other id: that is whatever the sender wrote there.
fn foreign_sender(
    serial: &str,
    header: &Header,
    report: Option<&galen_hl7v2::OruReport>,
) -> Option<Diagnostic> {
    let refusal = |segment: &str, occurrence: usize, field: usize| Diagnostic {
        segment: segment.to_owned(),
        occurrence,
        field: Some(field),
        code: ErrorCode::ApplicationError,
        message: format!(
            "{segment}-{field} names another device than the client certificate's ({serial}); \
             a device certificate sends only its own measurements"
        ),
        severity: Severity::Error,
    };
    let named = header.sending_device_id.as_str();
    if !named.is_empty() && named != serial {
        return Some(refusal("MSH", 1, 3));
    }
    report?
        .observations
        .iter()
        .find(|observation| !observation.equipment.is_empty() && observation.equipment != serial)
        .map(|observation| refusal("OBX", observation.occurrence, 18))
}

/// The receipt key of a message: its sender and control id. `None` without a control id. On a
/// certified connection the sender's id is the certificate's serial (MSH-3.2 may only repeat
/// it), so devices sharing an application name and facility never share control ids.
fn receipt_key(header: &Header, certified: Option<&str>) -> Option<String> {
    (!header.control_id.trim().is_empty()).then(|| {
        format!(
            "{}|{}|{}|{}",
            header.sending_application,
            certified.unwrap_or(&header.sending_device_id),
            header.sending_facility,
            header.control_id
        )
    })
}

/// Whether the sender asked for enhanced-mode (commit) acknowledgements.
fn enhanced(header: &Header) -> bool {
    !header.accept_ack_type.trim().is_empty()
}

/// The header of the MSH segment at the start of `head` (the first bytes of a message too large
/// to read whole), or an empty header when there is none.
fn msh_of(head: &[u8]) -> Header {
    let line_end = head
        .iter()
        .position(|byte| matches!(byte, b'\r' | b'\n'))
        .unwrap_or(head.len());
    let line: String = head[..line_end]
        .iter()
        .map(|byte| char::from(*byte))
        .collect();
    Message::parse(&line)
        .map(|message| read_header(&message))
        .unwrap_or_default()
}

/// Whether the sender wants this ACK (MSH-15: AL always, NE never, ER on errors, SU on success).
fn wanted(header: &Header, ack: &[u8]) -> bool {
    let accepted = matches!(ack_result(ack), "AA" | "CA");
    match header.accept_ack_type.trim() {
        "NE" => false,
        "ER" => !accepted,
        "SU" => accepted,
        _ => true,
    }
}

/// MSA-1 of an ACK built here.
fn ack_result(ack: &[u8]) -> &'static str {
    let position = ack.windows(4).position(|window| window == b"MSA|");
    let code = position.and_then(|start| ack.get(start + 4..start + 6));
    match code {
        Some(b"AA") => "AA",
        Some(b"AE") => "AE",
        Some(b"AR") => "AR",
        Some(b"CA") => "CA",
        Some(b"CE") => "CE",
        Some(b"CR") => "CR",
        _ => "unknown",
    }
}

/// The text of every segment called `name`, in order, as written.
fn segment_lines(message: &Message<'_>, name: &str, separator: char) -> Vec<String> {
    message
        .segments
        .iter()
        .filter(|segment| segment.name == name)
        .map(|segment| {
            let mut line = segment.name.to_owned();
            for number in 1..=segment.len() {
                line.push(separator);
                line.push_str(segment.raw(number));
            }
            line
        })
        .collect()
}
