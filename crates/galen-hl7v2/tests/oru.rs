//! ORU^R01 (IHE PCD-01) reading and ACKs, with the vendor oddities the profile meets in practice,
//! and property tests that no input makes the decoder, parser or reader panic.

use galen_hl7v2::mllp::{Decoder, Frame, encode_frame};
use galen_hl7v2::{
    ErrorCode, Message, ObservationValue, Outcome, Severity, build_ack, format_time, read_oru,
};
use proptest::prelude::*;

/// 2026-11-23T08:00:00Z.
const T: i64 = 1_795_420_800_000_000;

/// A bedside monitor's report as PCD-01 profiles it: containment rows (MDS, VMD) without
/// values, then metrics with MDC codes, units, status, per-OBX times and equipment.
fn pcd01(extra_obx: &str) -> String {
    [
        "MSH|^~\\&|MONITOR^0012345678ABCDEF^EUI-64|ICU|GALEN|HOSP|20261123080005+0000||ORU^R01^ORU_R01|MSG-0001|P|2.6|||AL|NE||UNICODE UTF-8|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO",
        "PID|||MRN-1^^^HOSP^MR||Lovelace^Ada",
        "PV1||I|ICU^^BED-1",
        "OBR|1|||182777000^monitoring of patient^SCT|||20261123080000+0000",
        "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X",
        "OBX|2||69966^MDC_DEV_MON_PHYSIO_MULTI_PARAM_VMD^MDC|1.1.0.0|||||||X",
        "OBX|3|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|97|262688^MDC_DIM_PERCENT^MDC|||||F|||20261123080001+0000||||0012345678ABCDEF^^0012345678ABCDEF^EUI-64",
        "OBX|4|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC|1.1.1.2|72|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||F",
        "OBX|5|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.1.2.1|118|266016^MDC_DIM_MMHG^MDC|||||F|||20261123075930+0000",
        extra_obx,
    ]
    .iter()
    .filter(|line| !line.is_empty())
    .copied()
    .collect::<Vec<_>>()
    .join("\r")
}

#[test]
fn reads_a_pcd01_report() {
    let text = pcd01("");
    let message = Message::parse(&text).expect("parses");
    let report = read_oru(&message).expect("an ORU^R01");
    assert_eq!(report.header.control_id, "MSG-0001");
    assert_eq!(report.header.sending_application, "MONITOR");
    assert_eq!(report.header.sending_device_id, "0012345678ABCDEF");
    assert_eq!(report.header.accept_ack_type, "AL");
    let patient = report.patient.as_ref().expect("PID-3");
    assert_eq!(
        (patient.id.as_str(), patient.authority.as_str()),
        ("MRN-1", "HOSP")
    );
    assert_eq!(report.location, "ICU^^BED-1");
    let codes: Vec<&str> = report
        .observations
        .iter()
        .map(|obx| obx.code.as_str())
        .collect();
    assert_eq!(
        codes,
        ["150456", "149530", "150021"],
        "containment rows are skipped"
    );
    let spo2 = &report.observations[0];
    assert_eq!(spo2.value, ObservationValue::Number(97.0));
    assert_eq!(
        (spo2.unit_code.as_str(), spo2.unit_text.as_str()),
        ("262688", "MDC_DIM_PERCENT")
    );
    assert_eq!(
        spo2.time.map(|time| time.micros),
        Some(T + 1_000_000),
        "OBX-14"
    );
    assert_eq!(spo2.occurrence, 3);
    assert_eq!(spo2.containment, "1.1.1.1");
    let pulse = &report.observations[1];
    assert_eq!(
        pulse.time.map(|time| time.micros),
        Some(T),
        "OBR-7 when OBX-14 is empty"
    );
    assert_eq!(
        pulse.equipment, "0012345678ABCDEF",
        "MSH-3 id when OBX-18 is empty"
    );
    assert_eq!(
        report.observations[2].time.map(|time| time.micros),
        Some(T - 30_000_000)
    );
    assert!(report.diagnostics.is_empty(), "{:?}", report.diagnostics);
}

#[test]
fn vendor_oddities_are_read_with_diagnostics() {
    let text = pcd01(
        "OBX|6|NM|150364^MDC_TEMP_BODY^MDC|1.1.3.1|8388607|268192^MDC_DIM_DEGC^MDC|||||F\r\
         OBX|7|NM|151562^MDC_RESP_RATE^MDC|1.1.4.1|16|264928^MDC_DIM_RESP_PER_MIN^MDC||||F\r\
         OBX|8|NM|150022^MDC_PRESS_BLD_NONINV_DIA^MDC|1.1.2.2|7O|266016^MDC_DIM_MMHG^MDC|||||F\r\
         OBX|9|NM|149546^MDC_PULS_RATE_NON_INV^MDC|1.1.2.3|70|264864^MDC_DIM_BEAT_PER_MIN^MDC||DEMO|||F|||20261123\r\
         OBX|10|NM|^^MDC|1.1.5.1|5",
    )
    .replace('\r', "\n");
    let message = Message::parse(&text).expect("LF-separated parses");
    let report = read_oru(&message).expect("an ORU^R01");
    let by_code = |code: &str| report.observations.iter().find(|obx| obx.code == code);
    assert_eq!(
        by_code("150364").expect("temperature").value,
        ObservationValue::Absent,
        "NaN sentinel"
    );
    let respiration = by_code("151562").expect("status in OBX-10 still read");
    assert_eq!(respiration.status, "F");
    assert!(by_code("150022").is_none(), "a non-number is not a value");
    let demo = by_code("149546").expect("demo value read");
    assert!(demo.demo, "OBX-8 DEMO is flagged");
    let found: Vec<(usize, Option<usize>, ErrorCode, Severity)> = report
        .diagnostics
        .iter()
        .map(|diagnostic| {
            (
                diagnostic.occurrence,
                diagnostic.field,
                diagnostic.code,
                diagnostic.severity,
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                7,
                Some(11),
                ErrorCode::RequiredFieldMissing,
                Severity::Warning
            ),
            (8, Some(5), ErrorCode::DataType, Severity::Error),
            (9, Some(14), ErrorCode::DataType, Severity::Warning),
            (
                10,
                Some(3),
                ErrorCode::RequiredFieldMissing,
                Severity::Error
            ),
        ],
        "{:#?}",
        report.diagnostics
    );
}

#[test]
fn refuses_what_is_not_an_oru_r01() {
    let cases = [
        (
            "ADT^A01",
            "MSG-1",
            "2.6",
            ErrorCode::UnsupportedMessageType,
            9,
        ),
        ("ORU^R30", "MSG-1", "2.6", ErrorCode::UnsupportedEvent, 9),
        ("ORU^R01", "MSG-1", "3.0", ErrorCode::UnsupportedVersion, 12),
        ("ORU^R01", "", "2.6", ErrorCode::RequiredFieldMissing, 10),
    ];
    for (kind, control, version, code, field) in cases {
        let text = format!("MSH|^~\\&|A|B|C|D|20261123080000||{kind}|{control}|P|{version}\rOBR|1");
        let message = Message::parse(&text).expect("parses");
        let refusal = read_oru(&message).expect_err(kind);
        assert_eq!(
            (refusal.diagnostic.code, refusal.diagnostic.field),
            (code, Some(field)),
            "{text}"
        );
    }
}

#[test]
fn acks_in_original_and_enhanced_mode_with_err_segments() {
    let text = pcd01(
        "OBX|6|NM|150022^MDC_PRESS_BLD_NONINV_DIA^MDC|1.1.2.2|x|266016^MDC_DIM_MMHG^MDC|||||F",
    );
    let message = Message::parse(&text).expect("parses");
    let report = read_oru(&message).expect("ORU");
    let ack = build_ack(
        &report.header,
        Outcome::Error,
        &report.diagnostics,
        "ACK-1",
        &format_time(T),
    );
    let ack_message = Message::parse(&ack).expect("the ACK is HL7 itself");
    let msh = ack_message.header();
    assert_eq!(ack_message.component(msh.raw(9), 1), "ACK");
    assert_eq!(ack_message.component(msh.raw(9), 2), "R01");
    assert_eq!(
        ack_message.value(msh.raw(3)),
        "GALEN",
        "sender and receiver swapped"
    );
    assert_eq!(ack_message.value(msh.raw(5)), "MONITOR");
    assert_eq!(ack_message.value(msh.raw(10)), "ACK-1");
    assert_eq!(ack_message.value(msh.raw(12)), "2.6");
    let msa = ack_message.segment("MSA").expect("MSA");
    assert_eq!(msa.raw(1), "CE", "MSH-15 was set: enhanced mode");
    assert_eq!(msa.raw(2), "MSG-0001");
    let err = ack_message.segment("ERR").expect("ERR");
    assert_eq!(err.raw(2), "OBX^6^5");
    assert_eq!(ack_message.component(err.raw(3), 1), "102");
    assert_eq!(ack_message.component(err.raw(3), 3), "HL70357");
    assert_eq!(err.raw(4), "E");
    assert!(ack_message.value(err.raw(8)).contains("not a number"));

    let original = text.replace("|||AL|NE|", "|||||");
    let report = read_oru(&Message::parse(&original).expect("parses")).expect("ORU");
    let ack = build_ack(
        &report.header,
        Outcome::Accepted,
        &[],
        "ACK-2",
        &format_time(T),
    );
    assert!(ack.contains("\rMSA|AA|MSG-0001\r"), "{ack:?}");
    assert!(!ack.contains("ERR"));
    let rejected = build_ack(
        &report.header,
        Outcome::Rejected,
        &[],
        "ACK-3",
        &format_time(T),
    );
    assert!(rejected.contains("MSA|AR|"));
}

#[test]
fn acks_to_versions_before_2_5_use_err_1() {
    let text = pcd01(
        "OBX|6|NM|150022^MDC_PRESS_BLD_NONINV_DIA^MDC|1.1.2.2|x|266016^MDC_DIM_MMHG^MDC|||||F",
    )
    .replace("|P|2.6|", "|P|2.4|");
    let report = read_oru(&Message::parse(&text).expect("parses")).expect("ORU");
    let ack = build_ack(
        &report.header,
        Outcome::Error,
        &report.diagnostics,
        "ACK-4",
        &format_time(T),
    );
    let ack_message = Message::parse(&ack).expect("the ACK is HL7 itself");
    assert_eq!(ack_message.value(ack_message.header().raw(12)), "2.4");
    let msa = ack_message.segment("MSA").expect("MSA");
    assert!(
        msa.raw(3).contains("not a number"),
        "MSA-3 says why: {ack:?}"
    );
    let err = ack_message.segment("ERR").expect("ERR");
    assert_eq!(err.len(), 1, "only ERR-1 exists before 2.5: {ack:?}");
    assert_eq!(err.raw(1), "OBX^6^5^102&Data type error&HL70357");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever arrives on the socket, nothing panics, and an ACK always parses back.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), split in 0usize..600) {
        let mut decoder = Decoder::new(256);
        let split = split.min(bytes.len());
        decoder.push(&bytes[..split]);
        let mut frames: Vec<Frame> = std::iter::from_fn(|| decoder.next_frame()).collect();
        decoder.push(&bytes[split..]);
        frames.extend(std::iter::from_fn(|| decoder.next_frame()));
        for frame in frames {
            if let Frame::Message(message) = frame {
                let text = String::from_utf8_lossy(&message);
                if let Ok(message) = Message::parse(&text)
                    && let Ok(report) = read_oru(&message)
                {
                    let ack = build_ack(&report.header, Outcome::Accepted, &report.diagnostics, "X", "20261123");
                    prop_assert!(Message::parse(&ack).is_ok());
                }
            }
        }
    }

    /// Mutated real reports: still no panic, and an ACK always parses back.
    #[test]
    fn mutated_reports_never_panic(position in 0usize..1200, replacement in "[|^~\\\\&\r\nA-Z0-9.+-]{0,8}") {
        let text = pcd01("");
        let position = position.min(text.len());
        let position = (0..=position).rev().find(|index| text.is_char_boundary(*index)).unwrap_or(0);
        let mutated = format!("{}{}{}", &text[..position], replacement, &text[position..]);
        if let Ok(message) = Message::parse(&mutated) {
            match read_oru(&message) {
                Ok(report) => {
                    let ack = build_ack(&report.header, Outcome::Error, &report.diagnostics, "X", "20261123");
                    prop_assert!(Message::parse(&ack).is_ok());
                }
                Err(refusal) => {
                    let ack = build_ack(&refusal.header, Outcome::Rejected, std::slice::from_ref(&refusal.diagnostic), "X", "20261123");
                    prop_assert!(Message::parse(&ack).is_ok());
                }
            }
        }
        let framed = encode_frame(mutated.as_bytes());
        let mut decoder = Decoder::new(4096);
        decoder.push(&framed);
        prop_assert!(decoder.next_frame().is_some());
    }
}
