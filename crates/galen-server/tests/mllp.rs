//! The HL7 v2 (MLLP) listener over a real socket: ACK codes and ERR segments, receipts for
//! repeated control ids, framing oddities, dead letters, patient checks and what gets stored.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use galen_hl7v2::mllp::{Decoder, Frame, encode_frame};
use galen_model::{
    DeviceKind, DeviceStatus, HumanName, Identifier, ManualClock, NewAssignment, NewDevice,
    NewPatient, Sex, Timestamp, VitalSign,
};
use galen_server::{App, MllpSettings, ServerConfig};
use galen_store::Store;
use galen_store::embedded::{SqliteOptions, SqliteStore};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod support;
use support::NOW;

const MONITOR: &str = "0012345678ABCDEF";
const OTHER_MONITOR: &str = "00AABBCCDDEEFF00";

struct Harness {
    app: App,
    store: Arc<dyn Store>,
    address: SocketAddr,
    _dir: TempDir,
}

fn patient(mrn: &str, bed: &str) -> NewPatient {
    NewPatient {
        identifier: Identifier {
            system: "HOSP".into(),
            value: mrn.into(),
        },
        name: HumanName {
            family: "Test".into(),
            given: "Pat".into(),
        },
        birth_date: NewPatient::parse_birth_date("1950-01-01").expect("date"),
        sex: Sex::Female,
        ward: "ICU".into(),
        bed: bed.into(),
    }
}

fn monitor(serial: &str) -> NewDevice {
    NewDevice {
        serial: serial.into(),
        manufacturer: "Acme".into(),
        model: "PCD".into(),
        kind: DeviceKind::Monitor,
        status: DeviceStatus::Active,
    }
}

/// A server with MRN-1 (assigned MONITOR) and MRN-2 (assigned OTHER_MONITOR), whose plain MLLP
/// listener takes anonymous senders (allowed explicitly: these tests are about HL7 itself; the
/// certified sender is tested in `tls.rs`).
async fn harness(settings: MllpSettings) -> Harness {
    harness_exactly(MllpSettings {
        anonymous: true,
        ..settings
    })
    .await
}

/// Like [`harness`], with `settings` as given.
async fn harness_exactly(settings: MllpSettings) -> Harness {
    let dir = TempDir::new().expect("temp dir");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).expect("store"));
    let now = Timestamp::parse_rfc3339(NOW).expect("now");
    for (mrn, bed, serial) in [("MRN-1", "1", MONITOR), ("MRN-2", "2", OTHER_MONITOR)] {
        let patient = store
            .create_patient(patient(mrn, bed), Vec::new())
            .await
            .expect("patient");
        let device = store
            .create_device(monitor(serial), Vec::new())
            .await
            .expect("device");
        store
            .create_assignment(
                NewAssignment {
                    device: device.id,
                    patient: patient.id,
                    start: now.add_seconds(-3600),
                    end: None,
                },
                Vec::new(),
            )
            .await
            .expect("assignment");
    }
    let config = ServerConfig {
        mllp: settings,
        ..ServerConfig::default()
    };
    let app = App::new(store.clone(), Arc::new(ManualClock::new(now)), config)
        .await
        .expect("app");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(app.clone().serve_mllp(listener));
    Harness {
        app,
        store,
        address,
        _dir: dir,
    }
}

/// A PCD-01 ORU^R01 with control id `control`, MSH-15 `accept`, PID-3 `mrn` and `obx` lines
/// after the standard three metrics (SpO2 97 %, pulse 72/min, systolic 118 mmHg).
fn oru(control: &str, accept: &str, mrn: &str, obx: &[&str]) -> String {
    let mut lines = vec![
        format!(
            "MSH|^~\\&|MONITOR^{MONITOR}^EUI-64|ICU|GALEN|HOSP|20261123080005+0000||ORU^R01^ORU_R01|{control}|P|2.6|||{accept}|NE||UNICODE UTF-8|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
        ),
        format!("PID|||{mrn}^^^HOSP^MR||Lovelace^Ada"),
        "PV1||I|ICU^^BED-1".into(),
        "OBR|1|||182777000^monitoring of patient^SCT|||20261123080000+0000".into(),
        "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X".into(),
        "OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|97|262688^MDC_DIM_PERCENT^MDC|||||F|||20261123080001+0000".into(),
        "OBX|3|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC|1.1.1.2|72|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||F".into(),
        "OBX|4|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.1.2.1|118|266016^MDC_DIM_MMHG^MDC|||||F|||20261123075930+0000".into(),
    ];
    lines.extend(obx.iter().map(|line| (*line).to_owned()));
    lines.join("\r")
}

/// Reads `count` ACK frames from `stream`.
async fn read_acks(stream: &mut TcpStream, count: usize) -> Vec<String> {
    let mut decoder = Decoder::new(1 << 20);
    let mut acks = Vec::new();
    let mut buffer = [0u8; 4096];
    while acks.len() < count {
        while let Some(frame) = decoder.next_frame() {
            match frame {
                Frame::Message(bytes) => acks.push(String::from_utf8(bytes).expect("utf-8 ACK")),
                other => panic!("unexpected frame from Galen: {other:?}"),
            }
        }
        if acks.len() >= count {
            break;
        }
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("an ACK within 10 s")
            .expect("read");
        assert!(read > 0, "connection closed after {} ACKs", acks.len());
        decoder.push(&buffer[..read]);
    }
    acks
}

async fn send(harness: &Harness, message: &str) -> String {
    let mut stream = TcpStream::connect(harness.address).await.expect("connect");
    stream
        .write_all(&encode_frame(message.as_bytes()))
        .await
        .expect("write");
    read_acks(&mut stream, 1).await.remove(0)
}

fn segment<'a>(ack: &'a str, name: &str) -> Vec<Vec<&'a str>> {
    ack.split('\r')
        .filter(|line| line.starts_with(name))
        .map(|line| line.split('|').collect())
        .collect()
}

fn msa(ack: &str) -> (String, String) {
    let msa = segment(ack, "MSA");
    assert_eq!(msa.len(), 1, "one MSA in {ack:?}");
    (msa[0][1].to_owned(), msa[0][2].to_owned())
}

async fn stored(harness: &Harness, serial: &str, vital: VitalSign) -> Vec<f64> {
    support::stored(&harness.app, harness.store.as_ref(), serial, vital).await
}

async fn dead_letters(harness: &Harness) -> Vec<galen_store::StoredDeadLetter> {
    harness.store.dead_letters(0, 1000).await.expect("letters")
}

#[tokio::test]
async fn pcd01_report_is_stored_then_acknowledged_aa() {
    let harness = harness(MllpSettings::default()).await;
    let ack = send(&harness, &oru("MSG-1", "", "MRN-1", &[])).await;
    assert_eq!(msa(&ack), ("AA".into(), "MSG-1".into()), "{ack}");
    let msh = &segment(&ack, "MSH")[0];
    assert_eq!(msh[8], "ACK^R01^ACK", "MSH-9 of the ACK");
    assert_eq!(msh[4], "MONITOR", "MSH-5 returns to the sender");
    assert!(
        segment(&ack, "ERR").is_empty(),
        "no ERR on a clean report: {ack}"
    );
    assert_eq!(stored(&harness, MONITOR, VitalSign::Spo2).await, vec![97.0]);
    assert_eq!(
        stored(&harness, MONITOR, VitalSign::HeartRate).await,
        vec![72.0]
    );
    assert_eq!(
        stored(&harness, MONITOR, VitalSign::SystolicBp).await,
        vec![118.0]
    );
    assert!(dead_letters(&harness).await.is_empty());
}

#[tokio::test]
async fn repeated_control_id_gets_the_same_ack_and_stores_nothing() {
    let harness = harness(MllpSettings::default()).await;
    let message = oru(
        "MSG-7",
        "",
        "MRN-1",
        &[
            "OBX|5|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|250|262688^MDC_DIM_PERCENT^MDC|||||F|||20261123080002+0000",
        ],
    );
    let first = send(&harness, &message).await;
    assert_eq!(
        msa(&first).0,
        "AE",
        "an implausible value is an error: {first}"
    );
    let letters = dead_letters(&harness).await.len();
    let stats = harness.store.stats();
    // Resent (a sender that missed the ACK), on a new connection: identical bytes.
    let second = send(&harness, &message).await;
    assert_eq!(first, second);
    assert_eq!(
        dead_letters(&harness).await.len(),
        letters,
        "no second dead letter"
    );
    assert_eq!(harness.store.stats().accepted, stats.accepted);
    assert_eq!(
        harness.store.stats().duplicates,
        stats.duplicates,
        "not even a duplicate"
    );
    // The same content under a new control id is a new message whose values are duplicates.
    let third = send(&harness, &message.replace("MSG-7", "MSG-8")).await;
    assert_eq!(msa(&third), ("AE".into(), "MSG-8".into()));
    assert_eq!(stored(&harness, MONITOR, VitalSign::Spo2).await, vec![97.0]);
}

#[tokio::test]
async fn framing_split_reads_several_frames_garbage_and_lf() {
    let harness = harness(MllpSettings::default()).await;
    let mut stream = TcpStream::connect(harness.address).await.expect("connect");
    let first = encode_frame(oru("F-1", "", "MRN-1", &[]).as_bytes());
    // LF instead of CR between segments, preceded by garbage.
    let second = encode_frame(oru("F-2", "", "MRN-1", &[]).replace('\r', "\n").as_bytes());
    let mut bytes = b"HELLO?".to_vec();
    bytes.extend_from_slice(&first);
    bytes.extend_from_slice(&second);
    // One byte at a time for the first half, the rest in one write.
    let half = bytes.len() / 2;
    for byte in &bytes[..half] {
        stream
            .write_all(std::slice::from_ref(byte))
            .await
            .expect("write");
        stream.flush().await.expect("flush");
    }
    stream.write_all(&bytes[half..]).await.expect("write");
    let acks = read_acks(&mut stream, 2).await;
    assert_eq!(msa(&acks[0]), ("AA".into(), "F-1".into()));
    assert_eq!(msa(&acks[1]), ("AA".into(), "F-2".into()));
    let letters = dead_letters(&harness).await;
    assert_eq!(letters.len(), 1, "the garbage is kept: {letters:?}");
    assert_eq!(letters[0].letter.payload, b"HELLO?");
    assert_eq!(letters[0].letter.source, "mllp");
}

#[tokio::test]
async fn refused_observations_are_named_in_err_and_kept() {
    let harness = harness(MllpSettings::default()).await;
    let obx = [
        // Wrong unit for SpO2: error, field 6.
        "OBX|5|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|96|266016^MDC_DIM_MMHG^MDC|||||F|||20261123080003+0000",
        // NaN sentinel: data absent, a warning.
        "OBX|6|NM|151562^MDC_RESP_RATE^MDC|1.1.3.1|8388607|264928^MDC_DIM_RESP_PER_MIN^MDC|||||F",
        // A code Galen does not catalogue: a warning.
        "OBX|7|NM|184326^MDC_ECG_CARD_BEAT_RATE_BTB^MDC|1.1.4.1|71|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||F",
        // Not a number although NM: the reader's error.
        "OBX|8|NM|150364^MDC_TEMP_BODY^MDC|1.1.5.1|warm|268192^MDC_DIM_DEGC^MDC|||||F",
        // Demonstration data.
        "OBX|9|NM|150364^MDC_TEMP_BODY^MDC|1.1.5.1|37.2|268192^MDC_DIM_DEGC^MDC||DEMO|||F",
    ];
    let ack = send(&harness, &oru("MSG-E", "", "MRN-1", &obx)).await;
    assert_eq!(msa(&ack).0, "AE", "{ack}");
    let errs = segment(&ack, "ERR");
    let find = |location: &str| {
        errs.iter()
            .find(|err| err[2] == location)
            .unwrap_or_else(|| panic!("no ERR at {location} in {ack}"))
    };
    let wrong_unit = find("OBX^5^6");
    assert!(wrong_unit[3].starts_with("103^"), "{wrong_unit:?}");
    assert_eq!(wrong_unit[4], "E");
    assert_eq!(find("OBX^6^5")[4], "W", "data absent is a warning");
    assert_eq!(find("OBX^7^3")[4], "W", "an unknown code is a warning");
    let not_numeric = find("OBX^8^5");
    assert!(not_numeric[3].starts_with("102^"), "{not_numeric:?}");
    assert_eq!(
        find("OBX^9^8")[4],
        "W",
        "demo data is kept out, with a warning"
    );
    // The good ones are stored; each refused OBX is a dead letter with its segment and reason.
    assert_eq!(stored(&harness, MONITOR, VitalSign::Spo2).await, vec![97.0]);
    assert!(
        stored(&harness, MONITOR, VitalSign::BodyTemperature)
            .await
            .is_empty()
    );
    let letters = dead_letters(&harness).await;
    let reasons: Vec<&str> = letters
        .iter()
        .map(|letter| letter.letter.reason.code())
        .collect();
    assert_eq!(
        reasons,
        [
            "wrong_unit",
            "data_absent",
            "unknown_code",
            "demo_data",
            "malformed"
        ],
        "{letters:?}"
    );
    assert!(
        String::from_utf8_lossy(&letters[0].letter.payload).starts_with("OBX|5|NM|150456"),
        "the dead letter holds the OBX: {:?}",
        letters[0]
    );
    assert_eq!(letters[0].letter.device.as_deref(), Some(MONITOR));
}

#[tokio::test]
async fn pid_naming_another_patient_refuses_the_values() {
    let harness = harness(MllpSettings::default()).await;
    let ack = send(&harness, &oru("MSG-P", "", "MRN-2", &[])).await;
    assert_eq!(msa(&ack).0, "AE", "{ack}");
    let errs = segment(&ack, "ERR");
    assert!(errs.iter().all(|err| err[2] == "PID^1^3"), "{ack}");
    assert_eq!(errs.len(), 3, "one per refused value: {ack}");
    assert!(
        !ack.contains("MRN-"),
        "no patient identifier in the ACK text"
    );
    assert!(stored(&harness, MONITOR, VitalSign::Spo2).await.is_empty());
    let letters = dead_letters(&harness).await;
    assert!(
        letters
            .iter()
            .all(|letter| letter.letter.reason.code() == "patient_mismatch")
    );
    // An unknown MRN only warns: the assignment decides.
    let ack = send(&harness, &oru("MSG-Q", "", "MRN-404", &[])).await;
    assert_eq!(msa(&ack).0, "AA", "{ack}");
    assert_eq!(segment(&ack, "ERR")[0][2], "PID^1^3");
    assert_eq!(segment(&ack, "ERR")[0][4], "W");
    assert_eq!(stored(&harness, MONITOR, VitalSign::Spo2).await, vec![97.0]);
}

#[tokio::test]
async fn other_messages_are_rejected_and_kept_whole() {
    let harness = harness(MllpSettings::default()).await;
    let adt = "MSH|^~\\&|ADT|HOSP|GALEN|HOSP|20261123080000||ADT^A01|ADT-1|P|2.6\rPID|||MRN-1";
    let ack = send(&harness, adt).await;
    assert_eq!(msa(&ack), ("AR".into(), "ADT-1".into()));
    assert!(segment(&ack, "ERR")[0][3].starts_with("200^"), "{ack}");
    let not_hl7 = send(&harness, "GET / HTTP/1.1").await;
    assert_eq!(msa(&not_hl7).0, "AR", "{not_hl7}");
    let letters = dead_letters(&harness).await;
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].letter.payload, adt.as_bytes());
    assert_eq!(letters[1].letter.payload, b"GET / HTTP/1.1");
}

#[tokio::test]
async fn enhanced_mode_and_ack_wishes_are_honoured() {
    let harness = harness(MllpSettings::default()).await;
    let ack = send(&harness, &oru("MSG-C", "AL", "MRN-1", &[])).await;
    assert_eq!(msa(&ack).0, "CA", "{ack}");
    // NE: no ACK at all; the next message's ACK is the first thing read.
    let mut stream = TcpStream::connect(harness.address).await.expect("connect");
    let mut bytes = encode_frame(oru("MSG-N", "NE", "MRN-1", &[]).as_bytes());
    bytes.extend(encode_frame(oru("MSG-S", "ER", "MRN-1", &[]).as_bytes()));
    bytes.extend(encode_frame(oru("MSG-T", "AL", "MRN-2", &[]).as_bytes()));
    stream.write_all(&bytes).await.expect("write");
    let acks = read_acks(&mut stream, 1).await;
    assert_eq!(
        msa(&acks[0]),
        ("CE".into(), "MSG-T".into()),
        "ER on success and NE send nothing"
    );
}

#[tokio::test]
async fn oversize_frames_are_refused_once_and_answered_by_their_msh() {
    let harness = harness(MllpSettings {
        max_message_bytes: 1000,
        ..MllpSettings::default()
    })
    .await;
    let big = oru("BIG", "", "MRN-1", &["NTE|1||".repeat(100).as_str()]);
    let ack = send(&harness, &big).await;
    assert_eq!(msa(&ack), ("AR".into(), "BIG".into()), "{ack}");
    assert_eq!(segment(&ack, "MSH")[0][8], "ACK^R01^ACK", "{ack}");
    let letters = dead_letters(&harness).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].letter.reason.code(), "too_large");
    assert!(
        letters[0].letter.payload.starts_with(b"MSH|"),
        "the head of the message is kept"
    );

    // In pieces, on one connection, followed by a normal message: one answer per message.
    let mut stream = TcpStream::connect(harness.address).await.expect("connect");
    let framed =
        encode_frame(oru("BIG-2", "", "MRN-1", &["NTE|1||".repeat(200).as_str()]).as_bytes());
    for piece in framed.chunks(300) {
        stream.write_all(piece).await.expect("write");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stream
        .write_all(&encode_frame(oru("SMALL", "", "MRN-1", &[]).as_bytes()))
        .await
        .expect("write");
    let acks = read_acks(&mut stream, 2).await;
    assert_eq!(msa(&acks[0]), ("AR".into(), "BIG-2".into()), "{}", acks[0]);
    assert_eq!(msa(&acks[1]), ("AA".into(), "SMALL".into()), "{}", acks[1]);
    // Nothing more: a third ACK would be taken as the answer to the sender's next message.
    let mut extra = [0u8; 64];
    let more = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut extra)).await;
    assert!(more.is_err(), "no further bytes from Galen: {more:?}");
    assert_eq!(
        dead_letters(&harness).await.len(),
        2,
        "one dead letter each"
    );
}

#[tokio::test]
async fn copies_arriving_at_once_on_two_connections_are_stored_once_and_answered_alike() {
    let harness = harness(MllpSettings::default()).await;
    for round in 0..10 {
        let message = oru(
            &format!("RACE-{round}"),
            "",
            "MRN-1",
            &[&format!(
                "OBX|5|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|96|266016^MDC_DIM_MMHG^MDC|||||F|||202611230801{round:02}+0000"
            )],
        );
        let (left, right) = tokio::join!(send(&harness, &message), send(&harness, &message));
        assert_eq!(left, right, "round {round}: both copies get the stored ACK");
        assert_eq!(msa(&left).0, "AE");
    }
    let letters = dead_letters(&harness).await;
    assert_eq!(
        letters.len(),
        10,
        "one dead letter per message, not per copy"
    );
}

#[tokio::test]
async fn anonymous_senders_are_refused_unless_allowed() {
    // The default: a connection without a client certificate may not send.
    let harness = harness_exactly(MllpSettings::default()).await;
    let mut stream = TcpStream::connect(harness.address).await.expect("connect");
    let mut bytes = encode_frame(oru("ANON-1", "", "MRN-1", &[]).as_bytes());
    bytes.extend(encode_frame(oru("ANON-2", "", "MRN-1", &[]).as_bytes()));
    stream.write_all(&bytes).await.expect("write");
    let ack = read_acks(&mut stream, 1).await.remove(0);
    assert_eq!(msa(&ack), ("AR".into(), "ANON-1".into()), "{ack}");
    assert!(ack.contains("client certificate"), "the reason: {ack}");
    // Then the connection is closed: no answer (and nothing stored) for the second message.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("closed within 10 s")
        .expect("read");
    assert!(rest.is_empty(), "nothing after the refusal: {rest:?}");
    assert!(
        stored(&harness, MONITOR, VitalSign::Spo2).await.is_empty(),
        "nothing stored"
    );
    assert!(
        dead_letters(&harness).await.is_empty(),
        "an unauthenticated peer cannot fill the dead-letter store"
    );
    let metrics = harness.app.metrics().render(&harness.store.stats());
    assert!(
        metrics
            .contains(r#"galen_protocol_events_total{protocol="mllp",event="unauthenticated"} 1"#),
        "{metrics}"
    );
}
