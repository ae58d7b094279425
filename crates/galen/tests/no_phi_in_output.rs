//! No PHI in logs, metrics or error messages, end to end: `galen serve` runs with every log
//! level on (`GALEN_LOG=trace`, dependencies included: with the features Galen builds them with,
//! hyper, axum and rustls emit no events, so the debug lines are Galen's own); recognisable PHI (a name, an MRN, a
//! birth date) goes in over the HTTP API, FHIR, MQTT and HL7 v2 (MLLP), in valid and above all in
//! invalid inputs (malformed JSON and HL7, bad fields, a duplicate MRN, ids and device payloads
//! that carry it); then stdout, stderr, `/metrics`, every error answer (non-2xx bodies, refused
//! items in ingest answers, MQTT acknowledgements and rejection reports, the MSA and ERR segments
//! of HL7 ACKs) and the dead letters' explanations are searched for it. Any hit fails the test,
//! naming where. Protocol echoes the standards require, sent back to the same sender only (an
//! ACK's MSH, a rejection report's topic), are not explanations and are left out.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{Answer, TOKEN, exchange, micros_to_rfc3339, start_capturing};
use mqtt5_protocol::packet::MqttPacket;
use mqtt5_protocol::packet::connect::ConnectPacket;
use mqtt5_protocol::packet::publish::PublishPacket;
use mqtt5_protocol::packet::subscribe::{SubscribePacket, TopicFilter};
use mqtt5_protocol::types::{ConnectOptions, QoS};
use serde_json::{Value, json};

const GIVEN: &str = "Zebulon";
const FAMILY: &str = "Quaxley-PHI";
const FULL_NAME: &str = "Zebulon Quaxley-PHI";
const MRN: &str = "MRN-PHI-7731";
const BIRTH_DATE: &str = "1937-05-13";
const BIRTH_DATE_HL7: &str = "19370513";
/// What must appear nowhere. "Quaxley" and "Zebulon" alone catch a name split or re-cased.
const PHI: [&str; 5] = ["Quaxley", GIVEN, MRN, BIRTH_DATE, BIRTH_DATE_HL7];
const MONITOR: &str = "PHI-MON-1";

/// Everything Galen said that must be free of PHI, by where it was said.
#[derive(Default)]
struct Outputs(Vec<(String, String)>);

impl Outputs {
    fn add(&mut self, place: impl Into<String>, text: impl Into<String>) {
        self.0.push((place.into(), text.into()));
    }

    /// Keeps the body of `answer` when it is an error (non-2xx).
    fn answer(&mut self, place: &str, answer: &Answer) {
        if !(200..300).contains(&answer.status) {
            self.add(format!("{place} ({})", answer.status), answer.body.clone());
        }
    }

    fn leaks(&self) -> Vec<String> {
        let mut leaks = Vec::new();
        for (place, text) in &self.0 {
            for phi in PHI {
                if let Some(at) = text.find(phi) {
                    let start = text[..at]
                        .char_indices()
                        .rev()
                        .nth(120)
                        .map_or(0, |(index, _)| index);
                    let end = (at + phi.len() + 120).min(text.len());
                    let end = (end..=text.len())
                        .find(|index| text.is_char_boundary(*index))
                        .unwrap_or(text.len());
                    leaks.push(format!("{phi:?} in {place}: …{}…", &text[start..end]));
                }
            }
        }
        leaks
    }
}

fn call(address: &str, method: &str, path: &str, body: Option<&str>) -> Answer {
    exchange(
        address,
        method,
        path,
        &[("Content-Type", "application/json")],
        body,
        Some(TOKEN),
    )
}

fn fhir(address: &str, method: &str, path: &str, body: Option<&str>) -> Answer {
    exchange(
        address,
        method,
        path,
        &[("Content-Type", "application/fhir+json")],
        body,
        Some(TOKEN),
    )
}

fn created(answer: &Answer, what: &str) -> Value {
    assert!(
        (200..300).contains(&answer.status),
        "{what}: {} {}",
        answer.status,
        answer.body
    );
    answer.json()
}

fn native_patient(mrn: &str, birth_date: &str, sex: &str) -> String {
    json!({
        "identifier": { "system": "urn:oid:1.2.3.4", "value": mrn },
        "name": { "family": FAMILY, "given": GIVEN },
        "birth_date": birth_date, "sex": sex, "ward": "ICU", "bed": "7",
    })
    .to_string()
}

fn fhir_patient(mrn: &str, birth_date: &str, gender: &str) -> String {
    json!({
        "resourceType": "Patient",
        "identifier": [{ "system": "urn:oid:1.2.3.4", "value": mrn }],
        "name": [{ "family": FAMILY, "given": [GIVEN], "text": FULL_NAME }],
        "birthDate": birth_date,
        "gender": gender,
    })
    .to_string()
}

fn now_rfc3339(seconds_ago: i64) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp() - seconds_ago;
    micros_to_rfc3339(now * 1_000_000)
}

fn hl7_time(seconds_ago: i64) -> String {
    let now = time::OffsetDateTime::now_utc() - time::Duration::seconds(seconds_ago);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}+0000",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// HTTP API and FHIR: valid PHI, then invalid inputs that carry it.
fn http_and_fhir(address: &str, outputs: &mut Outputs) -> (i64, String) {
    let patient = created(
        &call(
            address,
            "POST",
            "/api/v1/patients",
            Some(&native_patient(MRN, BIRTH_DATE, "male")),
        ),
        "patient",
    );
    let patient_id = patient["id"].as_i64().expect("patient id");
    let device = created(
        &call(
            address,
            "POST",
            "/api/v1/devices",
            Some(&json!({ "serial": MONITOR }).to_string()),
        ),
        "device",
    );
    let device_id = device["id"].as_i64().expect("device id");
    created(
        &call(
            address,
            "POST",
            "/api/v1/assignments",
            Some(
                &json!({ "device": device_id, "patient": patient_id, "start": now_rfc3339(3600) })
                    .to_string(),
            ),
        ),
        "assignment",
    );
    let credential = created(
        &call(
            address,
            "POST",
            &format!("/api/v1/devices/{device_id}/credentials"),
            Some("{}"),
        ),
        "credential",
    );
    let secret = credential["secret"].as_str().expect("secret").to_owned();

    // The native API, refused.
    let mut refused = |place: &str, method: &str, path: &str, body: Option<&str>| {
        let answer = call(address, method, path, body);
        assert!(
            !(200..300).contains(&answer.status),
            "{place} was accepted: {}",
            answer.body
        );
        outputs.answer(place, &answer);
    };
    refused(
        "duplicate MRN",
        "POST",
        "/api/v1/patients",
        Some(&native_patient(MRN, BIRTH_DATE, "male")),
    );
    refused(
        "a name as birth date",
        "POST",
        "/api/v1/patients",
        Some(&native_patient("MRN-OTHER-1", FULL_NAME, "male")),
    );
    refused(
        "an MRN as sex",
        "POST",
        "/api/v1/patients",
        Some(&native_patient("MRN-OTHER-2", BIRTH_DATE, MRN)),
    );
    refused(
        "a future birth date",
        "POST",
        "/api/v1/patients",
        Some(&native_patient("MRN-OTHER-3", "2937-05-13", "male")),
    );
    refused(
        "malformed JSON with PHI",
        "POST",
        "/api/v1/patients",
        Some(&format!(
            r#"{{"identifier": {{"system": "x", "value": "{MRN}"}}, "name": {{"family": "{FAMILY}" "given": "{GIVEN}"}}}}"#
        )),
    );
    refused(
        "a PHI key",
        "POST",
        "/api/v1/patients",
        Some(&format!(r#"{{"{FULL_NAME}": "{BIRTH_DATE}"}}"#)),
    );
    refused(
        "PHI as a value of the wrong type",
        "POST",
        "/api/v1/patients",
        Some(&json!({ "identifier": MRN, "name": FULL_NAME }).to_string()),
    );
    refused(
        "an update with a bad birth date",
        "PUT",
        &format!("/api/v1/patients/{patient_id}"),
        Some(&native_patient(MRN, "13/05/1937", "male")),
    );
    refused(
        "an MRN as patient id",
        "GET",
        &format!("/api/v1/patients/{MRN}"),
        None,
    );
    refused(
        "a name as patient id",
        "GET",
        &format!("/api/v1/patients/{GIVEN}/vitals"),
        None,
    );
    refused(
        "PHI in a query",
        "GET",
        &format!("/api/v1/patients/{patient_id}/vitals?code={MRN}&from={BIRTH_DATE}"),
        None,
    );
    refused(
        "PHI as an assignment's patient",
        "POST",
        "/api/v1/assignments",
        Some(&json!({ "device": device_id, "patient": MRN, "start": BIRTH_DATE }).to_string()),
    );
    // Ingest: the answer is 2xx with refused items; their explanations must not echo PHI.
    let ingest = call(
        address,
        "POST",
        "/api/v1/measurements",
        Some(
            &json!([
                { "device": FULL_NAME, "code": "heart_rate", "value": 72, "unit": "/min", "time": now_rfc3339(5) },
                { "device": MONITOR, "code": MRN, "value": 72, "unit": "/min", "time": now_rfc3339(5) },
                { "device": MONITOR, "code": "heart_rate", "value": FULL_NAME, "unit": "/min", "time": now_rfc3339(5) },
                { "device": MONITOR, "code": "heart_rate", "value": 72, "unit": GIVEN, "time": now_rfc3339(5) },
                { "device": MONITOR, "code": "heart_rate", "value": 72, "unit": "/min", "time": BIRTH_DATE },
                { "device": MONITOR, "code": "heart_rate", "value": 72, "unit": "/min", "time": now_rfc3339(5), "id": MRN, "patient": FULL_NAME },
            ])
            .to_string(),
        ),
    );
    outputs.add(
        format!("ingest answer ({})", ingest.status),
        ingest.body.clone(),
    );
    let malformed = call(
        address,
        "POST",
        "/api/v1/measurements",
        Some(&format!(r#"[{{"device": "{FULL_NAME}", "code": {MRN}}}]"#)),
    );
    outputs.add(
        format!("malformed ingest answer ({})", malformed.status),
        malformed.body.clone(),
    );
    let login = exchange(
        address,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(&format!("name={GIVEN}+{FAMILY}&password={MRN}")),
        None,
    );
    outputs.answer("a login as the patient", &login);

    // FHIR: a valid Patient, then refusals.
    created(
        &fhir(
            address,
            "POST",
            "/fhir/Patient",
            Some(&fhir_patient("MRN-PHI-7731-B", BIRTH_DATE, "male")),
        ),
        "FHIR patient",
    );
    let mut refused = |place: &str, method: &str, path: &str, body: Option<&str>| {
        let answer = fhir(address, method, path, body);
        assert!(
            !(200..300).contains(&answer.status),
            "{place} was accepted: {}",
            answer.body
        );
        outputs.answer(place, &answer);
    };
    refused(
        "FHIR duplicate identifier",
        "POST",
        "/fhir/Patient",
        Some(&fhir_patient(MRN, BIRTH_DATE, "male")),
    );
    refused(
        "FHIR name as birthDate",
        "POST",
        "/fhir/Patient",
        Some(&fhir_patient("MRN-OTHER-4", FULL_NAME, "male")),
    );
    refused(
        "FHIR MRN as gender",
        "POST",
        "/fhir/Patient",
        Some(&fhir_patient("MRN-OTHER-5", BIRTH_DATE, MRN)),
    );
    refused(
        "FHIR name of the wrong type",
        "POST",
        "/fhir/Patient",
        Some(
            &json!({ "resourceType": "Patient", "name": FULL_NAME, "birthDate": BIRTH_DATE,
                     "identifier": [{ "system": "urn:oid:1.2.3.4", "value": MRN }] })
            .to_string(),
        ),
    );
    refused(
        "FHIR malformed JSON",
        "POST",
        "/fhir/Patient",
        Some(&format!(
            r#"{{"resourceType": "Patient", "name": [{{"family": "{FAMILY}"}}], "birthDate": {BIRTH_DATE}}}"#
        )),
    );
    refused(
        "FHIR update with a bad field",
        "PUT",
        &format!("/fhir/Patient/{patient_id}"),
        Some(
            &fhir_patient(MRN, "1937-02-30", "male")
                .replace("\"Patient\"", "\"Patient\", \"id\": \"x\""),
        ),
    );
    refused(
        "FHIR MRN as id",
        "GET",
        &format!("/fhir/Patient/{MRN}"),
        None,
    );
    refused(
        "FHIR search by a bad birth date",
        "GET",
        &format!("/fhir/Patient?birthdate={GIVEN}"),
        None,
    );
    // Parameter names are protocol (they come from client code, and errors name them); values
    // are data and never repeated.
    refused(
        "FHIR search with an unknown parameter",
        "GET",
        &format!("/fhir/Patient?mrn={MRN}"),
        None,
    );
    refused(
        "FHIR search by an MRN as id",
        "GET",
        &format!("/fhir/Patient?_id={MRN}|{FAMILY}"),
        None,
    );
    refused(
        "FHIR search by a token with too many bars",
        "GET",
        &format!("/fhir/Patient?identifier=a|{MRN}|{GIVEN}"),
        None,
    );
    refused(
        "FHIR search by an impossible birth date",
        "GET",
        "/fhir/Patient?birthdate=1937-02-30",
        None,
    );
    refused(
        "FHIR Observation for a name",
        "POST",
        "/fhir/Observation",
        Some(
            &json!({
                "resourceType": "Observation", "status": "final",
                "code": { "coding": [{ "system": "http://loinc.org", "code": "8867-4" }] },
                "subject": { "reference": format!("Patient/{MRN}"), "display": FULL_NAME },
                "device": { "identifier": { "value": FULL_NAME } },
                "effectiveDateTime": BIRTH_DATE,
                "valueQuantity": { "value": FULL_NAME, "unit": "/min" },
            })
            .to_string(),
        ),
    );
    // A transaction whose Patient is invalid: refused whole.
    let bundle = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [{
            "resource": serde_json::from_str::<Value>(&fhir_patient("MRN-OTHER-6", MRN, "male")).expect("json"),
            "request": { "method": "POST", "url": "Patient" },
        }],
    });
    let answer = fhir(address, "POST", "/fhir", Some(&bundle.to_string()));
    outputs.add(
        format!("FHIR transaction ({})", answer.status),
        answer.body.clone(),
    );
    let batch = bundle.to_string().replace("\"transaction\"", "\"batch\"");
    let answer = fhir(address, "POST", "/fhir", Some(&batch));
    outputs.add(
        format!("FHIR batch ({})", answer.status),
        answer.body.clone(),
    );
    (device_id, secret)
}

fn mqtt_bytes(packet: &impl MqttPacket) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet.encode(&mut out).expect("encode");
    out.to_vec()
}

/// Reads whatever arrives until the connection has been quiet for `quiet`.
fn read_until_quiet(stream: &mut TcpStream, quiet: Duration) -> Vec<u8> {
    stream.set_read_timeout(Some(quiet)).expect("timeout");
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
        }
    }
    received
}

/// A CONNECT of the monitor with its secret.
fn mqtt_connect(address: &str, secret: &str, client_id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).expect("connect to MQTT");
    let mut options = ConnectOptions::new(client_id);
    options.keep_alive = Duration::from_secs(30);
    options.username = Some(MONITOR.to_owned());
    options.password = Some(secret.as_bytes().to_vec());
    stream
        .write_all(&mqtt_bytes(&ConnectPacket::new(options)))
        .expect("CONNECT");
    stream
}

/// MQTT 5: a device publishes PHI in bad payloads, unknown payloads and topics; every byte Galen
/// sends back (acknowledgements with reason strings, rejection reports) is kept.
fn mqtt(address: &str, secret: &str, outputs: &mut Outputs) {
    // A connection that closes before CONNECT: logged at debug level.
    drop(TcpStream::connect(address).expect("connect to MQTT"));
    // Protocol errors carrying PHI end the connection (logged at debug level with the reason):
    // a wildcard in a PUBLISH topic, and a topic that is not UTF-8.
    for (index, topic) in [
        format!("galen/v1/devices/{MONITOR}/{FAMILY}/#").into_bytes(),
        [
            format!("galen/v1/devices/{MONITOR}/").as_bytes(),
            &[0xFF, 0xFE],
            FULL_NAME.as_bytes(),
        ]
        .concat(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut stream = mqtt_connect(address, secret, &format!("phi-bad-{index}"));
        let payload = format!(r#"{{"mrn": "{MRN}"}}"#);
        // PUBLISH QoS 1 by hand: topic length, topic, packet id, no properties, payload.
        let mut body = Vec::new();
        body.extend_from_slice(&u16::try_from(topic.len()).expect("short").to_be_bytes());
        body.extend_from_slice(&topic);
        body.extend_from_slice(&[0x00, 0x07, 0x00]);
        body.extend_from_slice(payload.as_bytes());
        let mut packet = vec![0x32, u8::try_from(body.len()).expect("short")];
        packet.extend_from_slice(&body);
        stream.write_all(&packet).expect("PUBLISH");
        let answer = read_until_quiet(&mut stream, Duration::from_secs(2));
        outputs.add(
            format!("MQTT answer to a malformed PUBLISH {index}"),
            String::from_utf8_lossy(&answer).into_owned(),
        );
    }
    let mut stream = TcpStream::connect(address).expect("connect to MQTT");
    let mut options = ConnectOptions::new("phi-test");
    options.keep_alive = Duration::from_secs(30);
    options.username = Some(MONITOR.to_owned());
    options.password = Some(secret.as_bytes().to_vec());
    stream
        .write_all(&mqtt_bytes(&ConnectPacket::new(options)))
        .expect("CONNECT");
    let mut subscribe = SubscribePacket::new(1);
    subscribe.filters.push(TopicFilter::new(
        format!("galen/v1/devices/{MONITOR}/rejections"),
        QoS::AtMostOnce,
    ));
    stream
        .write_all(&mqtt_bytes(&subscribe))
        .expect("SUBSCRIBE");
    let measurements = format!("galen/v1/devices/{MONITOR}/measurements");
    let publishes = [
        (
            measurements.clone(),
            json!({ "code": "heart_rate", "value": FULL_NAME, "unit": "/min", "time": BIRTH_DATE })
                .to_string(),
        ),
        (
            measurements.clone(),
            format!(r#"{{"code": "heart_rate", "value": {MRN}, "patient": "{FULL_NAME}"}}"#),
        ),
        (
            measurements.clone(),
            json!([{ "device": MRN, "code": GIVEN, "value": 1, "unit": FAMILY, "time": now_rfc3339(5) }])
                .to_string(),
        ),
        (
            format!("galen/v1/devices/{MONITOR}/patient"),
            json!({ "patient": { "name": FULL_NAME, "mrn": MRN, "dob": BIRTH_DATE }, "hr": 70 })
                .to_string(),
        ),
        (
            format!("galen/v1/devices/{MONITOR}/{FAMILY}"),
            json!({ "mrn": MRN }).to_string(),
        ),
        (
            format!("galen/v1/devices/{MRN}/measurements"),
            json!({ "code": "heart_rate", "value": 70, "unit": "/min", "time": now_rfc3339(5) })
                .to_string(),
        ),
    ];
    for (index, (topic, payload)) in publishes.iter().enumerate() {
        let mut publish = PublishPacket::new(
            topic.as_str(),
            payload.as_bytes().to_vec(),
            QoS::AtLeastOnce,
        );
        publish.packet_id = Some(u16::try_from(index).expect("few") + 10);
        stream.write_all(&mqtt_bytes(&publish)).expect("PUBLISH");
    }
    let answers = read_until_quiet(&mut stream, Duration::from_secs(2));
    assert!(
        answers.len() > 20,
        "Galen answered the MQTT publishes: {answers:?}"
    );
    outputs.add(
        "MQTT answers and rejection reports",
        without_report_topics(&String::from_utf8_lossy(&answers)),
    );
    // A wrong password under a name: refused, and the refusal carries no name.
    let mut stream = TcpStream::connect(address).expect("connect to MQTT");
    let mut options = ConnectOptions::new(MRN);
    options.username = Some(FULL_NAME.to_owned());
    options.password = Some(BIRTH_DATE.as_bytes().to_vec());
    stream
        .write_all(&mqtt_bytes(&ConnectPacket::new(options)))
        .expect("CONNECT");
    let answer = read_until_quiet(&mut stream, Duration::from_secs(2));
    outputs.add(
        "MQTT refused CONNECT",
        String::from_utf8_lossy(&answer).into_owned(),
    );
}

/// `text` without the `"topic": "…"` members of rejection reports: the topic a report is about
/// is the publishing device's own, sent back to that device only, to correlate (QoS 0 messages
/// have no packet id). It is protocol, not an explanation.
fn without_report_topics(text: &str) -> String {
    const MEMBER: &str = "\"topic\":\"";
    let mut kept = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(MEMBER) {
        kept.push_str(&rest[..start + MEMBER.len()]);
        rest = &rest[start + MEMBER.len()..];
        let end = rest.find('"').unwrap_or(rest.len());
        rest = &rest[end..];
    }
    kept.push_str(rest);
    kept
}

/// The MSA and ERR segments of ACKs (what Galen says about a message). The ACK's MSH is left
/// out: HL7 v2 (chapter 2, acknowledgement messages) has it return the sender's own MSH-3/4 as
/// MSH-5/6, its trigger event and version, to that sender on the same connection.
fn explanations(acks: &str) -> String {
    acks.split(['\r', '\u{0b}', '\u{1c}'])
        .filter(|segment| segment.starts_with("MSA|") || segment.starts_with("ERR|"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn frame(message: &str) -> Vec<u8> {
    let mut framed = vec![0x0B];
    framed.extend_from_slice(message.as_bytes());
    framed.extend_from_slice(&[0x1C, 0x0D]);
    framed
}

/// HL7 v2 over MLLP: a valid report with a PID, then malformed PIDs, PHI in values and fields
/// Galen reports on, and frames that are not HL7; every ACK is kept.
fn mllp(address: &str, outputs: &mut Outputs) {
    let msh = |control: &str, kind: &str| {
        format!(
            "MSH|^~\\&|MON^{MONITOR}^EUI-64|ICU|GALEN|HOSP|{}||{kind}|{control}|P|2.6",
            hl7_time(2)
        )
    };
    let pid = format!("PID|||{MRN}^^^urn:oid:1.2.3.4^MR||{FAMILY}^{GIVEN}||{BIRTH_DATE_HL7}|M");
    let obr = format!(
        "OBR|1|||182777000^monitoring of patient^SCT|||{}",
        hl7_time(3)
    );
    let obx = |set: usize, value: &str, time: &str| {
        format!(
            "OBX|{set}|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC|1.1.1.2|{value}|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||F|||{time}"
        )
    };
    let now = hl7_time(4);
    let messages = [
        // Valid: stored, AA.
        [msh("PHI-1", "ORU^R01^ORU_R01"), pid.clone(), obr.clone(), obx(1, "71", &now)].join("\r"),
        // A name in a numeric value, a birth date as a value's time and as a status.
        [
            msh("PHI-2", "ORU^R01^ORU_R01"),
            pid.clone(),
            obr.replace(&hl7_time(3), FULL_NAME),
            obx(1, FULL_NAME, &now),
            obx(2, "72", BIRTH_DATE_HL7),
            obx(3, "73", &now).replace("|F|", &format!("|{MRN}|")),
            format!(
                "OBX|4|ST|149530^MDC_PULS_OXIM_PULS_RATE^MDC|1.1.1.2|{FULL_NAME}|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||F|||{now}"
            ),
            format!(
                "OBX|5|NM|{MRN}^{FAMILY}^MDC|1.1.1.2|74|{GIVEN}^{FAMILY}^MDC|||||F|||{now}||{FULL_NAME}"
            ),
        ]
        .join("\r"),
        // Malformed PIDs: a PID naming another patient, broken components, escapes.
        [
            msh("PHI-3", "ORU^R01^ORU_R01"),
            format!("PID|||MRN-PHI-7731-X^^^urn:oid:1.2.3.4^MR~{MRN}\\X0D\\^^^^||{FAMILY}^{GIVEN}^^^^^^^^^^^^^^^^|{BIRTH_DATE}|{BIRTH_DATE_HL7}^{GIVEN}"),
            obr.clone(),
            obx(1, "75", &now),
        ]
        .join("\r"),
        // Not an ORU^R01, with a PID.
        [msh("PHI-4", "ADT^A01^ADT_A01"), pid.clone(), format!("PV1||I|ICU^^{FAMILY}")].join("\r"),
        // A version Galen does not speak, and a header made of PHI.
        [msh("PHI-5", "ORU^R01^ORU_R01").replace("|2.6", &format!("|{BIRTH_DATE_HL7}")), pid.clone()].join("\r"),
        format!("MSH|^~\\&|{FULL_NAME}^{MRN}|{FAMILY}|GALEN|HOSP|{BIRTH_DATE_HL7}||{GIVEN}^{MRN}|PHI-6|P|2.6\r{pid}"),
        // Not HL7 at all.
        format!("{FULL_NAME} {MRN} {BIRTH_DATE}"),
    ];
    let mut stream = TcpStream::connect(address).expect("connect to MLLP");
    // Garbage between frames, too.
    stream
        .write_all(format!("{FULL_NAME}\r").as_bytes())
        .expect("garbage");
    for message in &messages {
        stream.write_all(&frame(message)).expect("send");
    }
    let acks = read_until_quiet(&mut stream, Duration::from_secs(2));
    let text = String::from_utf8_lossy(&acks).into_owned();
    assert!(
        text.contains("MSA|AA|PHI-1"),
        "the valid report was accepted: {text:?}"
    );
    assert!(
        text.matches("MSA|").count() >= messages.len() - 1,
        "an ACK per message: {text:?}"
    );
    assert!(text.contains("ERR|"), "ACKs with ERR segments: {text:?}");
    outputs.add("HL7 ACKs (MSA and ERR)", explanations(&text));
}

#[test]
fn recognisable_phi_never_reaches_logs_metrics_or_error_messages() {
    let directory = tempfile::tempdir().expect("temp dir");
    let log = Arc::new(Mutex::new(String::new()));
    let out = Arc::new(Mutex::new(String::new()));
    let mut server = start_capturing(
        directory.path(),
        "trace",
        &[
            "--mqtt-addr",
            "127.0.0.1:0",
            "--mllp-addr",
            "127.0.0.1:0",
            "--allow-anonymous-mllp",
        ],
        log.clone(),
        out.clone(),
    );
    let address = server.address.clone();
    let mut outputs = Outputs::default();

    let (_device, secret) = http_and_fhir(&address, &mut outputs);
    mqtt(
        server.mqtt.as_deref().expect("MQTT listener"),
        &secret,
        &mut outputs,
    );
    mllp(server.mllp.as_deref().expect("MLLP listener"), &mut outputs);

    // Reads of what was kept: the metrics, and the dead letters' explanations (their payloads are
    // the data as received, shown to integrators on purpose).
    let metrics = call(&address, "GET", "/metrics", None);
    assert_eq!(metrics.status, 200);
    outputs.add("/metrics", metrics.body.clone());
    let letters = call(&address, "GET", "/api/v1/dead-letters?limit=1000", None);
    assert_eq!(letters.status, 200, "{}", letters.body);
    let letters = letters.json()["items"].as_array().expect("items").clone();
    assert!(letters.len() >= 10, "the refusals were kept: {letters:?}");
    for letter in &letters {
        outputs.add(
            format!("dead letter {} ({})", letter["id"], letter["reason"]),
            letter["message"].as_str().unwrap_or_default().to_owned(),
        );
    }

    // The audit trail (read by auditors, who see no patient data).
    let trail = call(&address, "GET", "/api/v1/audit?limit=1000", None);
    assert_eq!(trail.status, 200, "{}", trail.body);
    outputs.add("the audit trail", trail.body.clone());

    // Stop gracefully, so shutdown logging is included.
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let stopped = Instant::now();
    while server.child.try_wait().expect("wait").is_none() {
        assert!(stopped.elapsed() < Duration::from_secs(20), "still running");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = log.lock().expect("log").clone();
    let out = out.lock().expect("out").clone();
    assert!(
        log.contains("DEBUG") && log.contains("patient registered"),
        "trace logging was captured ({} bytes):\n{log}",
        log.len()
    );
    assert!(
        out.contains("galen: dashboard at"),
        "stdout was captured: {out}"
    );
    outputs.add("stderr (GALEN_LOG=trace)", log);
    outputs.add("stdout", out);

    let leaks = outputs.leaks();
    assert!(
        leaks.is_empty(),
        "{} PHI leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}
