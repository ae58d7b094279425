//! Reading an ORU^R01 as profiled by IHE PCD-01 (Device Enterprise Communication): who sent it,
//! which patient, and one [`Observation`] per OBX that carries a metric, with its MDC (or other)
//! code, value, unit, status, time and equipment.
//!
//! Lenient by design: what can be read is read, and every oddity becomes a [`Diagnostic`] with
//! its place and an HL7 table 0357 code, so the adapter can store it with the message and answer
//! with ERR segments. Only a message that cannot be an ORU^R01 at all is refused as a whole.
//! A diagnostic names the segment and field, never the field's content: a misplaced value can
//! be a patient's name or birth date, and diagnostics travel into ACKs, dead letters and logs.

use crate::message::Message;
use crate::time::{Hl7Time, parse_time};

/// HL7 table 0357 (message error condition codes) used in ERR-3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    /// 100: segment sequence error.
    SegmentSequence,
    /// 101: required field missing.
    RequiredFieldMissing,
    /// 102: data type error.
    DataType,
    /// 103: table value not found.
    TableValueNotFound,
    /// 200: unsupported message type.
    UnsupportedMessageType,
    /// 201: unsupported event code.
    UnsupportedEvent,
    /// 203: unsupported version id.
    UnsupportedVersion,
    /// 207: application internal error.
    ApplicationError,
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::SegmentSequence => 100,
            ErrorCode::RequiredFieldMissing => 101,
            ErrorCode::DataType => 102,
            ErrorCode::TableValueNotFound => 103,
            ErrorCode::UnsupportedMessageType => 200,
            ErrorCode::UnsupportedEvent => 201,
            ErrorCode::UnsupportedVersion => 203,
            ErrorCode::ApplicationError => 207,
        }
    }

    /// The table's text for the code.
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::SegmentSequence => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataType => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEvent => "Unsupported event code",
            ErrorCode::UnsupportedVersion => "Unsupported version id",
            ErrorCode::ApplicationError => "Application internal error",
        }
    }
}

/// Something odd about one place in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The segment (`OBX`), its 1-based occurrence among segments of that name, and the field
    /// number, as ERR-2 wants them.
    pub segment: String,
    /// Occurrence of the segment (1-based).
    pub occurrence: usize,
    /// Field number, if the problem is in one field.
    pub field: Option<usize>,
    /// Table 0357 code.
    pub code: ErrorCode,
    /// What is wrong, for people.
    pub message: String,
    /// Whether the item it concerns was dropped (error) or read anyway (warning).
    pub severity: Severity,
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The item could not be used.
    Error,
    /// Read anyway, with an assumption.
    Warning,
}

/// MSH content the receiver needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// MSH-3 first component (device or gateway name).
    pub sending_application: String,
    /// MSH-3 second component: the sender's EUI-64 in IHE PCD.
    pub sending_device_id: String,
    /// MSH-4.
    pub sending_facility: String,
    /// MSH-5.
    pub receiving_application: String,
    /// MSH-6.
    pub receiving_facility: String,
    /// MSH-7 as written.
    pub time: String,
    /// MSH-9.1 (`ORU`).
    pub message_type: String,
    /// MSH-9.2 (`R01`).
    pub trigger_event: String,
    /// MSH-10: the control id ACKs refer to.
    pub control_id: String,
    /// MSH-11 (`P`, `T`, `D`).
    pub processing_id: String,
    /// MSH-12 (`2.6`).
    pub version: String,
    /// MSH-15: accept acknowledgement type; when present the sender asks for enhanced mode.
    pub accept_ack_type: String,
    /// MSH-16: application acknowledgement type.
    pub application_ack_type: String,
}

/// The value of an OBX.
#[derive(Debug, Clone, PartialEq)]
pub enum ObservationValue {
    /// A number.
    Number(f64),
    /// The device says there is no value (NaN sentinel 8388607, "NaN", or an empty value of a
    /// numeric observation).
    Absent,
    /// Text, coded or date values (kept as written).
    Text(String),
}

/// One metric of the message.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Occurrence of this OBX among the message's OBX segments (1-based).
    pub occurrence: usize,
    /// OBX-2 value type (`NM`, `ST`, `CWE`, ...).
    pub value_type: String,
    /// OBX-3.1: the code (an MDC number in PCD-01).
    pub code: String,
    /// OBX-3.2: its text (`MDC_PULS_OXIM_SAT_O2`).
    pub code_text: String,
    /// OBX-3.3: the coding system (`MDC`).
    pub code_system: String,
    /// OBX-4: containment path (`1.1.1.1`).
    pub containment: String,
    /// OBX-5.
    pub value: ObservationValue,
    /// OBX-6.1: unit code (MDC number or UCUM).
    pub unit_code: String,
    /// OBX-6.2: unit text (`MDC_DIM_PERCENT`).
    pub unit_text: String,
    /// OBX-11: result status (`F`, `R`, `P`, `C`, `X`).
    pub status: String,
    /// OBX-14, else OBR-7, else MSH-7.
    pub time: Option<Hl7Time>,
    /// OBX-18.1: equipment instance id, else the sender's MSH-3 id.
    pub equipment: String,
    /// OBX-8 marks the value as from a demonstration or simulation mode.
    pub demo: bool,
}

/// A patient identifier (PID-3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientRef {
    /// PID-3.1.
    pub id: String,
    /// PID-3.4: the assigning authority.
    pub authority: String,
}

/// What an ORU^R01 says.
#[derive(Debug, Clone, PartialEq)]
pub struct OruReport {
    /// MSH.
    pub header: Header,
    /// PID-3, when the patient was known to the sender.
    pub patient: Option<PatientRef>,
    /// PV1-3 (point of care, as written).
    pub location: String,
    /// Metric observations (containment rows without a value are skipped).
    pub observations: Vec<Observation>,
    /// Everything odd, in message order.
    pub diagnostics: Vec<Diagnostic>,
}

/// A message that cannot be taken at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The header as far as it could be read (for the ACK).
    pub header: Header,
    /// Why.
    pub diagnostic: Diagnostic,
}

/// Reads the MSH.
pub fn read_header(message: &Message<'_>) -> Header {
    let msh = message.header();
    let component =
        |field: usize, number: usize| message.component(msh.raw(field), number).into_owned();
    Header {
        sending_application: component(3, 1),
        sending_device_id: component(3, 2),
        sending_facility: component(4, 1),
        receiving_application: component(5, 1),
        receiving_facility: component(6, 1),
        time: message.value(msh.raw(7)).into_owned(),
        message_type: component(9, 1),
        trigger_event: component(9, 2),
        control_id: message.value(msh.raw(10)).into_owned(),
        processing_id: component(11, 1),
        version: component(12, 1),
        accept_ack_type: message.value(msh.raw(15)).into_owned(),
        application_ack_type: message.value(msh.raw(16)).into_owned(),
    }
}

fn header_problem(header: &Header, field: usize, code: ErrorCode, text: String) -> Box<Refusal> {
    Box::new(Refusal {
        header: header.clone(),
        diagnostic: Diagnostic {
            segment: "MSH".into(),
            occurrence: 1,
            field: Some(field),
            code,
            message: text,
            severity: Severity::Error,
        },
    })
}

/// IEEE 11073 "not a number" as devices send it in OBX-5 (0x7FFFFF).
const NAN_SENTINEL: f64 = 8_388_607.0;
const STATUSES: [&str; 5] = ["F", "R", "P", "C", "X"];

/// Reads an ORU^R01. Refuses only messages that are not one (wrong type, event or version, no
/// control id).
pub fn read_oru(message: &Message<'_>) -> Result<OruReport, Box<Refusal>> {
    let header = read_header(message);
    if header.control_id.trim().is_empty() {
        return Err(header_problem(
            &header,
            10,
            ErrorCode::RequiredFieldMissing,
            "MSH-10 (message control id) is empty".into(),
        ));
    }
    if header.message_type != "ORU" {
        return Err(header_problem(
            &header,
            9,
            ErrorCode::UnsupportedMessageType,
            "the message type (MSH-9.1) is not supported; send ORU^R01".into(),
        ));
    }
    if header.trigger_event != "R01" {
        return Err(header_problem(
            &header,
            9,
            ErrorCode::UnsupportedEvent,
            "the trigger event (MSH-9.2) is not supported; send ORU^R01".into(),
        ));
    }
    if !header.version.starts_with("2.") {
        return Err(header_problem(
            &header,
            12,
            ErrorCode::UnsupportedVersion,
            "the HL7 version (MSH-12) is not supported; send 2.x".into(),
        ));
    }
    let mut diagnostics = Vec::new();
    let mut note = |segment: &str,
                    occurrence: usize,
                    field: Option<usize>,
                    code: ErrorCode,
                    severity: Severity,
                    text: String| {
        diagnostics.push(Diagnostic {
            segment: segment.into(),
            occurrence,
            field,
            code,
            message: text,
            severity,
        });
    };
    let patient = message.segment("PID").and_then(|pid| {
        let id = message.component(pid.raw(3), 1).into_owned();
        (!id.trim().is_empty()).then(|| PatientRef {
            id,
            authority: message.component(pid.raw(3), 4).into_owned(),
        })
    });
    let location = message
        .segment("PV1")
        .map(|pv1| message.value(pv1.raw(3)).into_owned())
        .unwrap_or_default();
    let message_time = parse_time(&header.time);
    let mut observation_time = message_time;
    let mut observations = Vec::new();
    let mut obx_occurrence = 0;
    let mut obr_seen = false;
    for segment in &message.segments {
        match segment.name {
            "OBR" => {
                obr_seen = true;
                let text = message.value(segment.raw(7));
                if !text.is_empty() {
                    match parse_time(&text) {
                        Some(time) => observation_time = Some(time),
                        None => note(
                            "OBR",
                            1,
                            Some(7),
                            ErrorCode::DataType,
                            Severity::Warning,
                            "OBR-7 is not a date/time; using MSH-7".into(),
                        ),
                    }
                }
            }
            "OBX" => {
                obx_occurrence += 1;
                if !obr_seen {
                    note(
                        "OBX",
                        obx_occurrence,
                        None,
                        ErrorCode::SegmentSequence,
                        Severity::Warning,
                        "OBX before any OBR".into(),
                    );
                }
                let value_type = message.value(segment.raw(2)).into_owned();
                let raw_value = message.value(segment.raw(5)).into_owned();
                if value_type.is_empty() && raw_value.is_empty() {
                    // A containment row (MDS, VMD, channel): structure, not a metric.
                    continue;
                }
                let code = message.component(segment.raw(3), 1).into_owned();
                if code.is_empty() {
                    note(
                        "OBX",
                        obx_occurrence,
                        Some(3),
                        ErrorCode::RequiredFieldMissing,
                        Severity::Error,
                        "OBX-3 (observation identifier) is empty".into(),
                    );
                    continue;
                }
                let value = match value_type.as_str() {
                    "NM" => {
                        let trimmed = raw_value.trim();
                        if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("nan") {
                            ObservationValue::Absent
                        } else {
                            match trimmed.parse::<f64>() {
                                Ok(number) if number == NAN_SENTINEL => ObservationValue::Absent,
                                Ok(number) if number.is_finite() => {
                                    ObservationValue::Number(number)
                                }
                                _ => {
                                    note(
                                        "OBX",
                                        obx_occurrence,
                                        Some(5),
                                        ErrorCode::DataType,
                                        Severity::Error,
                                        "OBX-5 is not a number (OBX-2 is NM)".into(),
                                    );
                                    continue;
                                }
                            }
                        }
                    }
                    "NA" => {
                        note("OBX", obx_occurrence, Some(2), ErrorCode::TableValueNotFound, Severity::Warning, "numeric arrays (waveforms) are not read yet; the OBX is kept with the message".into());
                        continue;
                    }
                    _ => ObservationValue::Text(raw_value.clone()),
                };
                let mut status = message.value(segment.raw(11)).trim().to_owned();
                if status.is_empty() {
                    // Vendor reality: the status one field early or late.
                    for (field, text) in [(10, segment.raw(10)), (12, segment.raw(12))] {
                        let text = message.value(text).trim().to_owned();
                        if STATUSES.contains(&text.as_str()) {
                            note(
                                "OBX",
                                obx_occurrence,
                                Some(11),
                                ErrorCode::RequiredFieldMissing,
                                Severity::Warning,
                                format!("result status found in OBX-{field} instead of OBX-11"),
                            );
                            status = text;
                            break;
                        }
                    }
                }
                if status.is_empty() {
                    note(
                        "OBX",
                        obx_occurrence,
                        Some(11),
                        ErrorCode::RequiredFieldMissing,
                        Severity::Warning,
                        "OBX-11 (result status) is empty; read as final".into(),
                    );
                    status = "F".into();
                } else if !STATUSES.contains(&status.as_str()) {
                    note(
                        "OBX",
                        obx_occurrence,
                        Some(11),
                        ErrorCode::TableValueNotFound,
                        Severity::Warning,
                        "OBX-11 is not a result status (F, R, P, C, X)".into(),
                    );
                }
                let time_text = message.value(segment.raw(14));
                let time = if time_text.is_empty() {
                    observation_time
                } else {
                    match parse_time(&time_text) {
                        Some(time) => Some(time),
                        None => {
                            note(
                                "OBX",
                                obx_occurrence,
                                Some(14),
                                ErrorCode::DataType,
                                Severity::Warning,
                                "OBX-14 is not a date/time; using the report time".into(),
                            );
                            observation_time
                        }
                    }
                };
                if time.is_none() {
                    note(
                        "OBX",
                        obx_occurrence,
                        Some(14),
                        ErrorCode::RequiredFieldMissing,
                        Severity::Error,
                        "no observation time in OBX-14, OBR-7 or MSH-7".into(),
                    );
                    continue;
                }
                if time.is_some_and(|time| time.assumed_utc) {
                    note(
                        "OBX",
                        obx_occurrence,
                        Some(14),
                        ErrorCode::DataType,
                        Severity::Warning,
                        "time without UTC offset; read as UTC".into(),
                    );
                }
                let equipment = match message.component(segment.raw(18), 1) {
                    equipment if !equipment.is_empty() => equipment.into_owned(),
                    _ => header.sending_device_id.clone(),
                };
                let demo = message
                    .value(segment.raw(8))
                    .to_ascii_uppercase()
                    .contains("DEMO");
                observations.push(Observation {
                    occurrence: obx_occurrence,
                    value_type,
                    code,
                    code_text: message.component(segment.raw(3), 2).into_owned(),
                    code_system: message.component(segment.raw(3), 3).into_owned(),
                    containment: message.value(segment.raw(4)).into_owned(),
                    value,
                    unit_code: message.component(segment.raw(6), 1).into_owned(),
                    unit_text: message.component(segment.raw(6), 2).into_owned(),
                    status,
                    time,
                    equipment,
                    demo,
                });
            }
            _ => {}
        }
    }
    if obx_occurrence == 0 {
        note(
            "OBX",
            1,
            None,
            ErrorCode::RequiredFieldMissing,
            Severity::Warning,
            "the message has no OBX segment".into(),
        );
    }
    Ok(OruReport {
        header,
        patient,
        location,
        observations,
        diagnostics,
    })
}
