//! Vital-sign Observations: stored measurements out, posted Observations in.
//!
//! **Out.** A stored point is a [`VitalReading`] (device, vital sign, time, value, and the patient
//! the device was assigned to at that time). [`vital_observation`] renders one per the R4
//! vital-signs profile: category `vital-signs`; `code` with the LOINC code (SpO2 carries both
//! 2708-6 and 59408-5) and the IEEE 11073 MDC code; `valueQuantity` in the canonical UCUM unit, or
//! `dataAbsentReason` when there is no value (invariant vs-2); `effectiveDateTime`;
//! `subject` = `Patient/{id}`; `device` = `Device/{id}`; status `final`.
//! [`group_readings`] merges a systolic and a diastolic reading of the same device at the same
//! instant (plus the mean, if there is one) into one blood pressure panel, LOINC 85354-9, with a
//! component each ([`blood_pressure_observation`]); a lone systolic, diastolic or mean value stays
//! an Observation of its own.
//!
//! **Ids.** An Observation's logical id is its store key, so a read by id needs no index:
//! `{device}.{vital}.{time}` where `device` is the numeric device id, `vital` a short token of this
//! crate (`hr`, `spo2`, `rr`, `temp`, `sbp`, `dbp`, `map`, `weight`, `height`, `battery`, and `bp`
//! for the panel) and `time` the measurement time in microseconds since the Unix epoch, all in
//! canonical decimal (no `+`, no leading zeros), e.g. `7.hr.1795421700000000`. Only letters,
//! digits, `.` and `-` occur, at most 58 characters: a valid FHIR id and URL-safe. The tokens are
//! owned here, not borrowed from the model's aliases, so renaming an alias never breaks a client's
//! stored reference. [`parse_observation_id`] inverts [`ObservationKey::id`] exactly.
//!
//! **In.** [`read_posted_observation`] reads a client's Observation into what the ingest pipeline
//! takes: the device (id or serial), the time, an external id, and one value per measured quantity
//! (the Observation's own value or its components), each with code and unit text for
//! `galen_model::normalize`. Every refusal names the failing element's FHIRPath.

use std::collections::HashMap;
use std::fmt;

use galen_model::{DeviceId, PatientId, Timestamp, Unit, VitalSign};

use crate::codes::{self, LOINC, MDC, UCUM};
use crate::datatypes::{CodeableConcept, Coding, Extra, Meta, Quantity, Reference};
use crate::error::{Error, Problem, Result};
use crate::resource::{Observation, ObservationComponent, ResourceType};

/// IEEE 11073-20601 FLOAT "not a number" (0x7FFFFF), which a device sends when it has no value.
const MDC_NOT_A_NUMBER: f64 = 8_388_607.0;

/// Why a reading has no value, as the HL7 `data-absent-reason` code system says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AbsentReason {
    /// `unknown`: no value, reason not known.
    Unknown,
    /// `not-a-number`: the device reported NaN (or the MDC not-a-number sentinel: probe off).
    NotANumber,
    /// `positive-infinity`.
    PositiveInfinity,
    /// `negative-infinity`.
    NegativeInfinity,
    /// `error`: the device reported a measurement error.
    Error,
}

impl AbsentReason {
    /// The code in `http://terminology.hl7.org/CodeSystem/data-absent-reason`.
    pub const fn code(self) -> &'static str {
        match self {
            AbsentReason::Unknown => "unknown",
            AbsentReason::NotANumber => "not-a-number",
            AbsentReason::PositiveInfinity => "positive-infinity",
            AbsentReason::NegativeInfinity => "negative-infinity",
            AbsentReason::Error => "error",
        }
    }

    /// The code system's display.
    pub const fn display(self) -> &'static str {
        match self {
            AbsentReason::Unknown => "Unknown",
            AbsentReason::NotANumber => "Not a Number (NaN)",
            AbsentReason::PositiveInfinity => "Positive Infinity (PINF)",
            AbsentReason::NegativeInfinity => "Negative Infinity (NINF)",
            AbsentReason::Error => "Error",
        }
    }

    fn concept(self) -> CodeableConcept {
        CodeableConcept::single(codes::DATA_ABSENT_REASON, self.code(), Some(self.display()))
    }
}

/// A measured value, or why there is none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    /// A finite value in the vital sign's canonical unit.
    Value(f64),
    /// No value.
    Absent(AbsentReason),
}

impl Reading {
    /// Classifies what a device sent: NaN, infinities and the MDC not-a-number sentinel are
    /// absent values, never numbers.
    pub fn from_device_value(value: f64) -> Reading {
        if value.is_nan() || value == MDC_NOT_A_NUMBER {
            Reading::Absent(AbsentReason::NotANumber)
        } else if value == f64::INFINITY {
            Reading::Absent(AbsentReason::PositiveInfinity)
        } else if value == f64::NEG_INFINITY {
            Reading::Absent(AbsentReason::NegativeInfinity)
        } else {
            Reading::Value(value)
        }
    }
}

/// One stored measurement, as the server reads it from the time-series store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VitalReading {
    /// The device that measured it.
    pub device: DeviceId,
    /// The patient the device was assigned to at `time`; `None` for unassigned data (the
    /// Observation then has no subject and claims no vital-signs profile, which requires one).
    pub patient: Option<PatientId>,
    /// What was measured.
    pub vital: VitalSign,
    /// When.
    pub time: Timestamp,
    /// The value in `vital.canonical_unit()`.
    pub reading: Reading,
}

/// A blood pressure measurement: systolic and diastolic (and possibly mean) of one device at one
/// instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BloodPressureReading {
    /// The device.
    pub device: DeviceId,
    /// The patient, as for [`VitalReading::patient`].
    pub patient: Option<PatientId>,
    /// When.
    pub time: Timestamp,
    /// Systolic pressure, mm\[Hg\].
    pub systolic: Reading,
    /// Diastolic pressure, mm\[Hg\].
    pub diastolic: Reading,
    /// Mean arterial pressure, mm\[Hg\], when the device reported one.
    pub mean: Option<Reading>,
}

/// What an Observation Galen serves is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObservationCode {
    /// One vital sign (or battery charge).
    Vital(VitalSign),
    /// A blood pressure panel (85354-9) with systolic, diastolic and mean components.
    BloodPressurePanel,
}

impl ObservationCode {
    /// The id token (see the module documentation). Never change one: clients keep ids.
    pub const fn token(self) -> &'static str {
        match self {
            ObservationCode::Vital(vital) => match vital {
                VitalSign::HeartRate => "hr",
                VitalSign::Spo2 => "spo2",
                VitalSign::RespiratoryRate => "rr",
                VitalSign::BodyTemperature => "temp",
                VitalSign::SystolicBp => "sbp",
                VitalSign::DiastolicBp => "dbp",
                VitalSign::MeanArterialPressure => "map",
                VitalSign::BodyWeight => "weight",
                VitalSign::BodyHeight => "height",
                VitalSign::BatteryCharge => "battery",
            },
            ObservationCode::BloodPressurePanel => "bp",
        }
    }

    /// Every code, vital signs first in [`VitalSign::ALL`] order.
    pub fn all() -> impl Iterator<Item = ObservationCode> {
        VitalSign::ALL
            .into_iter()
            .map(ObservationCode::Vital)
            .chain(std::iter::once(ObservationCode::BloodPressurePanel))
    }

    /// Inverse of [`ObservationCode::token`].
    pub fn from_token(token: &str) -> Option<ObservationCode> {
        ObservationCode::all().find(|code| code.token() == token)
    }

    /// The series to read from the store to build Observations of this code. Any blood pressure
    /// code needs all three pressures: whether a systolic value is served alone or inside a panel
    /// depends on whether a diastolic value exists at the same instant.
    pub fn vitals_to_read(self) -> &'static [VitalSign] {
        const PRESSURES: &[VitalSign] = &[
            VitalSign::SystolicBp,
            VitalSign::DiastolicBp,
            VitalSign::MeanArterialPressure,
        ];
        match self {
            ObservationCode::BloodPressurePanel
            | ObservationCode::Vital(
                VitalSign::SystolicBp | VitalSign::DiastolicBp | VitalSign::MeanArterialPressure,
            ) => PRESSURES,
            ObservationCode::Vital(vital) => vital_slice(vital),
        }
    }

    /// Whether Observations of this code carry category `vital-signs`.
    pub const fn is_vital_sign(self) -> bool {
        !matches!(self, ObservationCode::Vital(VitalSign::BatteryCharge))
    }
}

/// A one-element slice of a vital sign, with a static lifetime.
const fn vital_slice(vital: VitalSign) -> &'static [VitalSign] {
    match vital {
        VitalSign::HeartRate => &[VitalSign::HeartRate],
        VitalSign::Spo2 => &[VitalSign::Spo2],
        VitalSign::RespiratoryRate => &[VitalSign::RespiratoryRate],
        VitalSign::BodyTemperature => &[VitalSign::BodyTemperature],
        VitalSign::SystolicBp => &[VitalSign::SystolicBp],
        VitalSign::DiastolicBp => &[VitalSign::DiastolicBp],
        VitalSign::MeanArterialPressure => &[VitalSign::MeanArterialPressure],
        VitalSign::BodyWeight => &[VitalSign::BodyWeight],
        VitalSign::BodyHeight => &[VitalSign::BodyHeight],
        VitalSign::BatteryCharge => &[VitalSign::BatteryCharge],
    }
}

/// The store key of a served Observation, and its logical id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObservationKey {
    /// The device whose series holds the values.
    pub device: DeviceId,
    /// What the Observation is about.
    pub code: ObservationCode,
    /// The measurement time.
    pub time: Timestamp,
}

impl ObservationKey {
    /// The logical id `{device}.{token}.{micros}`.
    pub fn id(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ObservationKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}.{}.{}",
            self.device.0,
            self.code.token(),
            self.time.micros()
        )
    }
}

/// Parses an id written by [`ObservationKey::id`]. Only the canonical spelling is accepted, so
/// one Observation has exactly one id.
pub fn parse_observation_id(id: &str) -> Result<ObservationKey> {
    let invalid = || Error::Id {
        resource_type: "Observation",
        id: id.to_owned(),
    };
    let mut parts = id.split('.');
    let (Some(device), Some(token), Some(time), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let device = parse_canonical_i64(device).ok_or_else(invalid)?;
    let code = ObservationCode::from_token(token).ok_or_else(invalid)?;
    let time = parse_canonical_i64(time).ok_or_else(invalid)?;
    Ok(ObservationKey {
        device: DeviceId(device),
        code,
        time: Timestamp::from_micros(time),
    })
}

/// Parses an i64 written by `Display` (optional `-`, no `+`, no leading zeros, no `-0`).
pub(crate) fn parse_canonical_i64(text: &str) -> Option<i64> {
    let number: i64 = text.parse().ok()?;
    (number.to_string() == text).then_some(number)
}

fn vital_signs_category() -> CodeableConcept {
    let mut category = CodeableConcept::single(
        codes::OBSERVATION_CATEGORY,
        codes::VITAL_SIGNS_CATEGORY,
        Some("Vital Signs"),
    );
    category.text = Some("Vital Signs".to_owned());
    category
}

/// The `code` of a single-vital Observation or component: LOINC (both for SpO2), then MDC; a
/// measurement without LOINC (battery) is coded in Galen's measurement system.
fn vital_code(vital: VitalSign) -> CodeableConcept {
    let mut coding = Vec::with_capacity(3);
    if let Some(loinc) = vital.loinc() {
        coding.push(Coding::new(LOINC, loinc, codes::loinc_display(loinc)));
        if vital == VitalSign::Spo2 {
            let pulse_oximetry = codes::SPO2_PULSE_OXIMETRY_LOINC;
            coding.push(Coding::new(
                LOINC,
                pulse_oximetry,
                codes::loinc_display(pulse_oximetry),
            ));
        }
    } else {
        coding.push(Coding::new(
            codes::MEASUREMENT_SYSTEM,
            vital.alias(),
            Some(codes::vital_text(vital)),
        ));
    }
    if let Some(mdc) = vital.mdc() {
        coding.push(Coding::new(
            MDC,
            mdc.to_string(),
            codes::mdc_reference_id(mdc),
        ));
    }
    CodeableConcept {
        coding,
        text: Some(codes::vital_text(vital).to_owned()),
        extra: Extra::new(),
    }
}

fn blood_pressure_code() -> CodeableConcept {
    let loinc = codes::BLOOD_PRESSURE_PANEL_LOINC;
    let mdc = codes::BLOOD_PRESSURE_PANEL_MDC;
    CodeableConcept {
        coding: vec![
            Coding::new(LOINC, loinc, codes::loinc_display(loinc)),
            Coding::new(MDC, mdc.to_string(), codes::mdc_reference_id(mdc)),
        ],
        text: Some("Blood pressure".to_owned()),
        extra: Extra::new(),
    }
}

/// `valueQuantity` or `dataAbsentReason` for a reading.
fn value_elements(
    vital: VitalSign,
    reading: Reading,
) -> (Option<Quantity>, Option<CodeableConcept>) {
    let value = match reading {
        Reading::Value(value) => Quantity::decimal(value),
        Reading::Absent(_) => None,
    };
    match (value, reading) {
        (Some(value), _) => {
            let unit = vital.canonical_unit().ucum();
            let quantity = Quantity {
                value: Some(value),
                comparator: None,
                unit: Some(codes::unit_display(vital).to_owned()),
                system: Some(UCUM.to_owned()),
                code: Some(unit.to_owned()),
                extra: Extra::new(),
            };
            (Some(quantity), None)
        }
        (None, Reading::Absent(reason)) => (None, Some(reason.concept())),
        // A `Value` JSON cannot carry (NaN or infinite) is absent data, never a number.
        (None, Reading::Value(value)) => match Reading::from_device_value(value) {
            Reading::Absent(reason) => (None, Some(reason.concept())),
            Reading::Value(_) => (None, Some(AbsentReason::Unknown.concept())),
        },
    }
}

fn base_observation(
    key: ObservationKey,
    patient: Option<PatientId>,
    code: CodeableConcept,
    profile: Option<&str>,
) -> Observation {
    let vital_sign = key.code.is_vital_sign();
    // The profiles require a subject: claim one only when the Observation has it.
    let meta = profile.filter(|_| patient.is_some()).map(|profile| Meta {
        profile: vec![profile.to_owned()],
        ..Meta::default()
    });
    Observation {
        resource_type: ResourceType::new(),
        id: Some(key.id()),
        meta,
        status: Some("final".to_owned()),
        category: if vital_sign {
            vec![vital_signs_category()]
        } else {
            Vec::new()
        },
        code: Some(code),
        subject: patient.map(|patient| Reference::to("Patient", patient.0)),
        effective_date_time: Some(key.time.to_rfc3339()),
        device: Some(Reference::to("Device", key.device.0)),
        ..Observation::default()
    }
}

/// One Observation of one reading (for blood pressure values that are not part of a panel, too).
pub fn vital_observation(reading: &VitalReading) -> Observation {
    let key = ObservationKey {
        device: reading.device,
        code: ObservationCode::Vital(reading.vital),
        time: reading.time,
    };
    let mut observation = base_observation(
        key,
        reading.patient,
        vital_code(reading.vital),
        codes::vital_profile(reading.vital),
    );
    let (value, absent) = value_elements(reading.vital, reading.reading);
    observation.value_quantity = value;
    observation.data_absent_reason = absent;
    observation
}

/// One blood pressure panel Observation (85354-9) with systolic and diastolic components, and a
/// mean component when the reading has one. A component without a value carries
/// `dataAbsentReason` (invariant vs-3).
pub fn blood_pressure_observation(reading: &BloodPressureReading) -> Observation {
    let key = ObservationKey {
        device: reading.device,
        code: ObservationCode::BloodPressurePanel,
        time: reading.time,
    };
    let mut observation = base_observation(
        key,
        reading.patient,
        blood_pressure_code(),
        Some(codes::BLOOD_PRESSURE_PROFILE),
    );
    let parts = [
        (VitalSign::SystolicBp, Some(reading.systolic)),
        (VitalSign::DiastolicBp, Some(reading.diastolic)),
        (VitalSign::MeanArterialPressure, reading.mean),
    ];
    observation.component = parts
        .into_iter()
        .filter_map(|(vital, value)| {
            let (value_quantity, data_absent_reason) = value_elements(vital, value?);
            Some(ObservationComponent {
                code: Some(vital_code(vital)),
                value_quantity,
                data_absent_reason,
                extra: Extra::new(),
            })
        })
        .collect();
    observation
}

/// Turns readings (of any devices, vital signs and times, in any order) into Observations:
/// a systolic and a diastolic reading of the same device at the same instant become one blood
/// pressure panel (with the mean reading of that instant, if any); every other reading becomes
/// an Observation of its own. Output follows the input order, a panel taking the place of its
/// first component. Exact duplicates (same device, vital and time) are served once.
pub fn group_readings(readings: &[VitalReading]) -> Vec<Observation> {
    // (device, time) -> index of the systolic, diastolic and mean reading.
    let mut pressures: HashMap<(DeviceId, Timestamp), [Option<usize>; 3]> = HashMap::new();
    for (index, reading) in readings.iter().enumerate() {
        let slot = match reading.vital {
            VitalSign::SystolicBp => 0,
            VitalSign::DiastolicBp => 1,
            VitalSign::MeanArterialPressure => 2,
            _ => continue,
        };
        let entry = pressures.entry((reading.device, reading.time)).or_default();
        entry[slot].get_or_insert(index);
    }
    let mut seen = std::collections::HashSet::new();
    let mut observations = Vec::with_capacity(readings.len());
    for reading in readings {
        let panel = pressures
            .get(&(reading.device, reading.time))
            .and_then(|slots| Some((slots[0]?, slots[1]?, slots[2])));
        let is_pressure = matches!(
            reading.vital,
            VitalSign::SystolicBp | VitalSign::DiastolicBp | VitalSign::MeanArterialPressure
        );
        match panel {
            Some((systolic, diastolic, mean)) if is_pressure => {
                let key = (
                    reading.device,
                    ObservationCode::BloodPressurePanel,
                    reading.time,
                );
                if !seen.insert(key) {
                    continue;
                }
                let systolic = &readings[systolic];
                observations.push(blood_pressure_observation(&BloodPressureReading {
                    device: systolic.device,
                    patient: systolic.patient,
                    time: systolic.time,
                    systolic: systolic.reading,
                    diastolic: readings[diastolic].reading,
                    mean: mean.map(|mean| readings[mean].reading),
                }));
            }
            _ => {
                let key = (
                    reading.device,
                    ObservationCode::Vital(reading.vital),
                    reading.time,
                );
                if seen.insert(key) {
                    observations.push(vital_observation(reading));
                }
            }
        }
    }
    observations
}

/// The Observation with id `key` among what [`group_readings`] makes of `readings`, if any.
///
/// A read by id loads, for `key.device` at exactly `key.time`, the series of
/// [`ObservationCode::vitals_to_read`] and calls this: a systolic id whose value is part of a
/// panel therefore finds nothing (the panel's id is the one Galen serves), consistently with search.
pub fn observation_for_key(key: &ObservationKey, readings: &[VitalReading]) -> Option<Observation> {
    let id = key.id();
    group_readings(readings)
        .into_iter()
        .find(|observation| observation.id.as_deref() == Some(id.as_str()))
}

/// How a posted Observation names its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceHandle {
    /// `device.reference` = `Device/{id}`.
    Id(DeviceId),
    /// `device.identifier` in Galen's serial system (or without a system): the serial number.
    Serial(String),
}

/// One value of a posted Observation, ready for `galen_model::normalize`.
#[derive(Debug, Clone, PartialEq)]
pub struct PostedValue {
    /// The vital sign the code stands for.
    pub vital: VitalSign,
    /// The code that identified it (a LOINC or numeric MDC code, or a Galen alias).
    pub code: String,
    /// The value, in `unit`.
    pub value: f64,
    /// The unit as sent (a UCUM code, or an MDC unit code).
    pub unit: String,
    /// FHIRPath of the element the value came from (`Observation` or `Observation.component[1]`).
    pub path: String,
}

/// A posted Observation read into the ingest pipeline's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct PostedObservation {
    /// The measuring device.
    pub device: DeviceHandle,
    /// The patient the sender says it is about (`subject`), for the pipeline's mismatch check.
    pub patient: Option<PatientId>,
    /// When it was measured.
    pub time: Timestamp,
    /// The sender's id of the measurement (first `identifier`, as `system|value` or `value`),
    /// for recognising retries.
    pub external_id: Option<String>,
    /// One result per measured quantity: the Observation's own value, then each component in
    /// order. A refused value does not take the others down; its error names its element.
    pub values: Vec<Result<PostedValue>>,
}

/// Statuses of a measurement worth storing.
const ACCEPTED_STATUSES: [&str; 4] = ["final", "amended", "corrected", "preliminary"];

/// Reads a posted Observation.
///
/// Whole-resource errors (no usable status, device, time or code; nothing measured) fail the call;
/// errors of one value (unknown code or unit, absent value) are in
/// [`PostedObservation::values`]. Units are checked here only for being known and of the right
/// dimension; range and time checks are `galen_model::normalize`'s.
pub fn read_posted_observation(observation: &Observation) -> Result<PostedObservation> {
    match observation.status.as_deref() {
        None => {
            return Err(Error::element(
                "Observation.status",
                Problem::Required,
                "status is required (final for a measurement)",
            ));
        }
        Some(status) if !ACCEPTED_STATUSES.contains(&status) => {
            return Err(Error::element(
                "Observation.status",
                Problem::Invalid,
                "the status is not one of a measurement to store; use final, amended, corrected or preliminary",
            ));
        }
        Some(_) => {}
    }
    let device = read_device(observation.device.as_ref())?;
    let patient = match &observation.subject {
        None => None,
        Some(subject) => Some(read_patient_reference(subject, "Observation.subject")?),
    };
    let time = read_effective(observation)?;
    let code = observation.code.as_ref().ok_or_else(|| {
        Error::element(
            "Observation.code",
            Problem::Required,
            "code is required (a LOINC or MDC coding of the vital sign)",
        )
    })?;
    let meaning = read_code(code, "Observation.code");

    let other_value = observation
        .extra
        .keys()
        .find(|key| key.starts_with("value") && key.len() > 5);
    let mut values = Vec::new();
    let has_own_value = observation.value_quantity.is_some()
        || observation.data_absent_reason.is_some()
        || other_value.is_some();
    if has_own_value {
        let own = match (&meaning, other_value) {
            (_, Some(other)) => Err(Error::element(
                format!("Observation.{other}"),
                Problem::NotSupported,
                format!("{other} is not supported: send the measurement as valueQuantity"),
            )),
            (Ok(CodeMeaning::Vital(vital, code)), None) => read_value(
                *vital,
                code,
                observation.value_quantity.as_ref(),
                observation.data_absent_reason.as_ref(),
                "Observation",
            ),
            (Ok(CodeMeaning::BloodPressurePanel), None) => Err(Error::element(
                "Observation.valueQuantity",
                Problem::Invalid,
                "a blood pressure panel carries its values in components, not in valueQuantity",
            )),
            (Err(error), None) => Err(error.clone()),
        };
        values.push(own);
    } else if observation.component.is_empty() {
        // Nothing measured at all: the whole Observation is unusable.
        meaning?;
        return Err(Error::element(
            "Observation.value",
            Problem::Required,
            "a measurement needs valueQuantity (or components for a blood pressure panel)",
        ));
    }
    for (index, component) in observation.component.iter().enumerate() {
        let path = format!("Observation.component[{index}]");
        let value = match &component.code {
            None => Err(Error::element(
                format!("{path}.code"),
                Problem::Required,
                "a component needs a code",
            )),
            Some(code) => match read_code(code, &format!("{path}.code")) {
                Ok(CodeMeaning::Vital(vital, code)) => read_value(
                    vital,
                    &code,
                    component.value_quantity.as_ref(),
                    component.data_absent_reason.as_ref(),
                    &path,
                ),
                Ok(CodeMeaning::BloodPressurePanel) => Err(Error::element(
                    format!("{path}.code"),
                    Problem::Invalid,
                    "a component cannot itself be a blood pressure panel",
                )),
                Err(error) => Err(error),
            },
        };
        values.push(value);
    }
    let external_id = observation.identifier.iter().find_map(|identifier| {
        match (&identifier.system, &identifier.value) {
            (Some(system), Some(value)) => Some(format!("{system}|{value}")),
            (None, Some(value)) => Some(value.clone()),
            _ => None,
        }
    });
    Ok(PostedObservation {
        device,
        patient,
        time,
        external_id,
        values,
    })
}

fn read_device(reference: Option<&Reference>) -> Result<DeviceHandle> {
    let reference = reference.ok_or_else(|| {
        Error::element(
            "Observation.device",
            Problem::Required,
            "device is required: Device/{id} or an identifier with the device serial",
        )
    })?;
    if let Some(text) = &reference.reference {
        let id = read_relative_reference(text, "Device", "Observation.device.reference")?;
        return Ok(DeviceHandle::Id(DeviceId(id)));
    }
    let Some(identifier) = &reference.identifier else {
        return Err(Error::element(
            "Observation.device",
            Problem::Required,
            "device needs a reference (Device/{id}) or an identifier (the device serial)",
        ));
    };
    match identifier.system.as_deref() {
        None | Some(codes::DEVICE_SERIAL_SYSTEM) => {}
        Some(_) => {
            return Err(Error::element(
                "Observation.device.identifier.system",
                Problem::NotSupported,
                format!(
                    "the device identifier system is not Galen's; use {} (the serial)",
                    codes::DEVICE_SERIAL_SYSTEM
                ),
            ));
        }
    }
    match identifier.value.as_deref().map(str::trim) {
        Some(serial) if !serial.is_empty() => Ok(DeviceHandle::Serial(serial.to_owned())),
        _ => Err(Error::element(
            "Observation.device.identifier.value",
            Problem::Required,
            "the device serial is empty",
        )),
    }
}

/// Reads a `Patient/{id}` reference.
pub(crate) fn read_patient_reference(reference: &Reference, path: &str) -> Result<PatientId> {
    let Some(text) = &reference.reference else {
        return Err(Error::element(
            path,
            Problem::NotSupported,
            "only literal references Patient/{id} are supported",
        ));
    };
    read_relative_reference(text, "Patient", &format!("{path}.reference")).map(PatientId)
}

/// Reads `{resource_type}/{numeric id}`.
fn read_relative_reference(text: &str, resource_type: &str, path: &str) -> Result<i64> {
    let wrong = || {
        Error::element(
            path,
            Problem::Invalid,
            format!("the reference must be {resource_type}/{{id}} with a Galen id"),
        )
    };
    let (target_type, id) = text.split_once('/').ok_or_else(wrong)?;
    if target_type != resource_type {
        return Err(Error::element(
            path,
            Problem::NotSupported,
            format!("the reference must point to a {resource_type}"),
        ));
    }
    parse_canonical_i64(id).ok_or_else(wrong)
}

fn read_effective(observation: &Observation) -> Result<Timestamp> {
    let (text, path) = match (
        &observation.effective_date_time,
        &observation.effective_instant,
    ) {
        (Some(text), _) => (text, "Observation.effectiveDateTime"),
        (None, Some(text)) => (text, "Observation.effectiveInstant"),
        (None, None) if observation.effective_period.is_some() => {
            return Err(Error::element(
                "Observation.effectivePeriod",
                Problem::NotSupported,
                "a measurement needs one instant: send effectiveDateTime",
            ));
        }
        (None, None) => {
            return Err(Error::element(
                "Observation.effective",
                Problem::Required,
                "effectiveDateTime is required",
            ));
        }
    };
    Timestamp::parse_rfc3339(text).map_err(|_| {
        Error::element(
            path,
            Problem::BadTime,
            "the time is not a full date-time with seconds and an offset, e.g. 2026-11-23T08:15:00Z",
        )
    })
}

/// What a posted `code` means to Galen.
#[derive(Debug, Clone, PartialEq)]
enum CodeMeaning {
    /// A vital sign, with the code that identified it.
    Vital(VitalSign, String),
    /// The blood pressure panel.
    BloodPressurePanel,
}

fn read_code(concept: &CodeableConcept, path: &str) -> Result<CodeMeaning> {
    let mut found: Option<(usize, CodeMeaning)> = None;
    let mut first_unknown: Option<(usize, String)> = None;
    for (index, coding) in concept.coding.iter().enumerate() {
        let (Some(system), Some(code)) = (coding.system.as_deref(), coding.code.as_deref()) else {
            continue;
        };
        let meaning = if coding.is(LOINC, codes::BLOOD_PRESSURE_PANEL_LOINC)
            || coding.is(MDC, &codes::BLOOD_PRESSURE_PANEL_MDC.to_string())
        {
            Some(CodeMeaning::BloodPressurePanel)
        } else {
            codes::vital_from_coding(system, code)
                .map(|vital| CodeMeaning::Vital(vital, code.trim().to_owned()))
        };
        match (meaning, &found) {
            (Some(meaning), None) => found = Some((index, meaning)),
            (Some(meaning), Some((first, earlier))) => {
                if !same_meaning(&meaning, earlier) {
                    return Err(Error::element(
                        format!("{path}.coding[{index}]"),
                        Problem::Invalid,
                        format!(
                            "coding {system}|{code} means something else than coding [{first}]"
                        ),
                    ));
                }
            }
            (None, _) => {
                if first_unknown.is_none() {
                    first_unknown = Some((index, format!("{system}|{code}")));
                }
            }
        }
    }
    match (found, first_unknown) {
        (Some((_, meaning)), _) => Ok(meaning),
        (None, Some((index, coding))) => Err(Error::element(
            format!("{path}.coding[{index}]"),
            Problem::UnknownCode,
            format!("{coding} is not a vital sign Galen knows; use a LOINC or MDC code"),
        )),
        (None, None) => Err(Error::element(
            format!("{path}.coding"),
            Problem::Required,
            format!("a coding with system and code is required ({LOINC} or {MDC})"),
        )),
    }
}

fn same_meaning(left: &CodeMeaning, right: &CodeMeaning) -> bool {
    match (left, right) {
        (CodeMeaning::Vital(left, _), CodeMeaning::Vital(right, _)) => left == right,
        (CodeMeaning::BloodPressurePanel, CodeMeaning::BloodPressurePanel) => true,
        _ => false,
    }
}

fn read_value(
    vital: VitalSign,
    code: &str,
    quantity: Option<&Quantity>,
    absent: Option<&CodeableConcept>,
    path: &str,
) -> Result<PostedValue> {
    let Some(quantity) = quantity else {
        let reason = absent
            .and_then(|concept| concept.coding.first())
            .and_then(|coding| coding.code.as_deref())
            .unwrap_or("unknown");
        return Err(if absent.is_some() {
            Error::element(
                format!("{path}.dataAbsentReason"),
                Problem::DataAbsent,
                format!("the value is absent ({reason}); there is nothing to store"),
            )
        } else {
            Error::element(
                format!("{path}.valueQuantity"),
                Problem::Required,
                "valueQuantity is required",
            )
        });
    };
    let value = quantity.value_f64().ok_or_else(|| {
        Error::element(
            format!("{path}.valueQuantity.value"),
            Problem::Required,
            "valueQuantity.value is required",
        )
    })?;
    if let Some(comparator) = &quantity.comparator {
        return Err(Error::element(
            format!("{path}.valueQuantity.comparator"),
            Problem::NotSupported,
            format!("a value {comparator} a limit is not a measurement Galen can store"),
        ));
    }
    let (unit, unit_path) = match (quantity.system.as_deref(), &quantity.code, &quantity.unit) {
        (Some(UCUM | MDC) | None, Some(code), _) => (code.as_str(), "code"),
        (None, None, Some(unit)) => (unit.as_str(), "unit"),
        (Some(UCUM | MDC), None, _) => {
            return Err(Error::element(
                format!("{path}.valueQuantity.code"),
                Problem::Required,
                "valueQuantity.code is required when valueQuantity.system is given",
            ));
        }
        (None, None, None) => {
            return Err(Error::element(
                format!("{path}.valueQuantity.unit"),
                Problem::Required,
                format!(
                    "the value needs a unit: valueQuantity.system {UCUM} and valueQuantity.code (e.g. {})",
                    vital.canonical_unit()
                ),
            ));
        }
        (Some(_), _, _) => {
            return Err(Error::element(
                format!("{path}.valueQuantity.system"),
                Problem::UnknownUnit,
                format!("the unit system is not supported; use {UCUM}"),
            ));
        }
    };
    let unit_path = format!("{path}.valueQuantity.{unit_path}");
    let parsed = Unit::parse(unit).ok_or_else(|| {
        Error::element(
            &unit_path,
            Problem::UnknownUnit,
            format!(
                "the unit is not a known UCUM unit; {} is expected for {}",
                vital.canonical_unit(),
                vital.alias()
            ),
        )
    })?;
    if parsed.dimension() != vital.dimension() {
        return Err(Error::element(
            &unit_path,
            Problem::WrongUnit,
            format!(
                "unit {parsed} cannot measure {}; use {}",
                vital.alias(),
                vital.canonical_unit()
            ),
        ));
    }
    Ok(PostedValue {
        vital,
        code: code.to_owned(),
        value,
        unit: unit.to_owned(),
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests;
