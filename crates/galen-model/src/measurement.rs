//! Validation and normalisation of one device measurement.
//!
//! [`normalize`] turns what a device said (code, value, unit, time) into a [`Measurement`] in the
//! canonical unit, or into a [`Rejection`] that names the reason in a stable machine code plus a
//! sentence for the integration engineer. Rejections are data: the caller keeps them (dead letter)
//! and reports them to the sender; nothing is dropped here. The sentence never repeats a value the
//! device sent that Galen does not know (a code, a unit, a time): a misplaced field may carry a
//! patient's name or birth date, and rejections travel into answers, dead letters and logs.

use std::fmt;

use crate::ids::DeviceId;
use crate::time_point::Timestamp;
use crate::unit::Unit;
use crate::vital::VitalSign;

/// A validated measurement in its vital sign's canonical unit, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// The registered device that measured it.
    pub device: DeviceId,
    /// What was measured.
    pub vital: VitalSign,
    /// When it was measured (device time, UTC).
    pub time: Timestamp,
    /// The value in `vital.canonical_unit()`.
    pub value: f64,
    /// The sender's own id of this measurement, used to recognise retries.
    pub external_id: Option<String>,
}

/// Why an item was refused. The `code()` strings are part of the API and of metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectionReason {
    /// The request was not valid JSON, or the item lacked a field or had one of the wrong type.
    Malformed,
    /// The device serial is not registered.
    UnknownDevice,
    /// The device is registered but marked entered-in-error.
    DeviceNotAccepting,
    /// The code is not a known LOINC, MDC code or alias.
    UnknownCode,
    /// The unit is not one Galen knows.
    UnknownUnit,
    /// The unit is known but measures something else than the code (kg for a heart rate).
    WrongUnit,
    /// The value is NaN, infinite, or the IEEE 11073 "not a number" sentinel.
    DataAbsent,
    /// The value is outside what a living patient can show.
    Implausible,
    /// The time is not RFC 3339 with an offset.
    BadTime,
    /// The time lies further in the future than clock skew explains.
    FutureTime,
    /// The time is older than Galen accepts.
    TooOld,
    /// The whole request body was larger than the configured limit.
    TooLarge,
    /// The request's content type was not JSON.
    UnsupportedMediaType,
    /// The message names a patient other than the one the device is assigned to.
    PatientMismatch,
    /// The device marked the value as produced in demonstration or simulation mode.
    DemoData,
    /// No mapping template matched the payload.
    Unmapped,
    /// The sender may not send for this device.
    Forbidden,
}

impl RejectionReason {
    /// Every reason, for metrics that must show zero counts too.
    pub const ALL: [RejectionReason; 17] = [
        RejectionReason::Malformed,
        RejectionReason::UnknownDevice,
        RejectionReason::DeviceNotAccepting,
        RejectionReason::UnknownCode,
        RejectionReason::UnknownUnit,
        RejectionReason::WrongUnit,
        RejectionReason::DataAbsent,
        RejectionReason::Implausible,
        RejectionReason::BadTime,
        RejectionReason::FutureTime,
        RejectionReason::TooOld,
        RejectionReason::TooLarge,
        RejectionReason::UnsupportedMediaType,
        RejectionReason::PatientMismatch,
        RejectionReason::DemoData,
        RejectionReason::Unmapped,
        RejectionReason::Forbidden,
    ];

    /// Stable snake_case code.
    pub const fn code(self) -> &'static str {
        match self {
            RejectionReason::Malformed => "malformed",
            RejectionReason::UnknownDevice => "unknown_device",
            RejectionReason::DeviceNotAccepting => "device_not_accepting",
            RejectionReason::UnknownCode => "unknown_code",
            RejectionReason::UnknownUnit => "unknown_unit",
            RejectionReason::WrongUnit => "wrong_unit",
            RejectionReason::DataAbsent => "data_absent",
            RejectionReason::Implausible => "implausible_value",
            RejectionReason::BadTime => "bad_time",
            RejectionReason::FutureTime => "future_time",
            RejectionReason::TooOld => "too_old",
            RejectionReason::TooLarge => "too_large",
            RejectionReason::UnsupportedMediaType => "unsupported_media_type",
            RejectionReason::PatientMismatch => "patient_mismatch",
            RejectionReason::DemoData => "demo_data",
            RejectionReason::Unmapped => "unmapped",
            RejectionReason::Forbidden => "forbidden",
        }
    }

    /// Inverse of [`RejectionReason::code`].
    pub fn parse(code: &str) -> Option<RejectionReason> {
        RejectionReason::ALL
            .into_iter()
            .find(|reason| reason.code() == code)
    }
}

impl fmt::Display for RejectionReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.code())
    }
}

/// A refused item: the reason and a sentence saying what to fix. The message never contains
/// patient identifiers (it may repeat the sender's own code, unit or value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Machine-readable reason.
    pub reason: RejectionReason,
    /// Human-readable explanation.
    pub message: String,
}

impl Rejection {
    /// A rejection with a message.
    pub fn new(reason: RejectionReason, message: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            message: message.into(),
        }
    }
}

/// How far ahead of the server's clock a device timestamp may be (clock skew), in microseconds.
pub const FUTURE_TOLERANCE_MICROS: i64 = 5 * 60 * 1_000_000;
/// How old a measurement may be when it arrives (backfill from a home device after weeks offline
/// is legitimate; decades-old timestamps are a device clock fault), in microseconds.
pub const MAX_AGE_MICROS: i64 = 10 * 366 * 24 * 3600 * 1_000_000;
/// IEEE 11073-20601 FLOAT-Type "NaN" (0x7FFFFF): a device's way of saying "no value" (probe off).
const MDC_NOT_A_NUMBER: f64 = 8_388_607.0;

/// Validates one reading from `device` and converts it to the canonical unit.
///
/// Checks, in order: the code is known; the unit is known and of the code's dimension; the value
/// is a real number and not the MDC "not a number" sentinel; the canonical value lies in
/// [`VitalSign::plausible_range`]; the time is neither more than [`FUTURE_TOLERANCE_MICROS`] after
/// `now` nor more than [`MAX_AGE_MICROS`] before it.
pub fn normalize(
    device: DeviceId,
    code: &str,
    value: f64,
    unit: &str,
    time: Timestamp,
    now: Timestamp,
    external_id: Option<String>,
) -> Result<Measurement, Rejection> {
    let vital = VitalSign::parse(code).ok_or_else(|| {
        Rejection::new(
            RejectionReason::UnknownCode,
            "the code is not a known LOINC code, MDC code or Galen alias",
        )
    })?;
    let parsed_unit = Unit::parse(unit).ok_or_else(|| {
        Rejection::new(
            RejectionReason::UnknownUnit,
            format!(
                "the unit is not a known UCUM or MDC unit; {} is expected for {}",
                vital.canonical_unit(),
                vital.alias()
            ),
        )
    })?;
    if parsed_unit.dimension() != vital.dimension() {
        return Err(Rejection::new(
            RejectionReason::WrongUnit,
            format!(
                "unit {parsed_unit} cannot measure {}; use {}",
                vital.alias(),
                vital.canonical_unit()
            ),
        ));
    }
    if !value.is_finite() || value == MDC_NOT_A_NUMBER {
        return Err(Rejection::new(
            RejectionReason::DataAbsent,
            format!(
                "{} carries no value (NaN, infinity or the MDC not-a-number sentinel)",
                vital.alias()
            ),
        ));
    }
    let canonical = parsed_unit.to_canonical(value);
    let range = vital.plausible_range();
    if !range.contains(&canonical) {
        return Err(Rejection::new(
            RejectionReason::Implausible,
            format!(
                "{} of {canonical} {} is outside the possible range {} to {}",
                vital.alias(),
                vital.canonical_unit(),
                range.start(),
                range.end()
            ),
        ));
    }
    if time.micros() > now.micros().saturating_add(FUTURE_TOLERANCE_MICROS) {
        return Err(Rejection::new(
            RejectionReason::FutureTime,
            "the time is more than 5 minutes ahead of the server clock; check the device clock",
        ));
    }
    if time.micros() < now.micros().saturating_sub(MAX_AGE_MICROS) {
        return Err(Rejection::new(
            RejectionReason::TooOld,
            "the time is more than 10 years old; check the device clock",
        ));
    }
    Ok(Measurement {
        device,
        vital,
        time,
        value: canonical,
        external_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_seconds(1_795_421_700);
    const DEVICE: DeviceId = DeviceId(7);

    fn accept(code: &str, value: f64, unit: &str) -> Measurement {
        normalize(DEVICE, code, value, unit, NOW, NOW, None)
            .unwrap_or_else(|rejection| panic!("{code} {value} {unit}: {rejection:?}"))
    }

    fn reject(code: &str, value: f64, unit: &str, time: Timestamp) -> RejectionReason {
        match normalize(DEVICE, code, value, unit, time, NOW, None) {
            Ok(measurement) => panic!("{code} {value} {unit} accepted as {measurement:?}"),
            Err(rejection) => rejection.reason,
        }
    }

    #[test]
    fn converts_units_to_canonical() {
        let temperature = accept("temperature", 98.6, "[degF]");
        assert_eq!(temperature.vital, VitalSign::BodyTemperature);
        assert!((temperature.value - 37.0).abs() < 1e-9);
        assert!((accept("8480-6", 16.0, "kPa").value - 120.0099).abs() < 1e-3);
        assert!((accept("weight", 150.0, "[lb_av]").value - 68.0389).abs() < 1e-3);
    }

    #[test]
    fn plausibility_edges() {
        let at = NOW;
        assert_eq!(accept("spo2", 100.0, "%").value, 100.0);
        assert_eq!(reject("spo2", 100.1, "%", at), RejectionReason::Implausible);
        assert_eq!(accept("heart_rate", 0.0, "/min").value, 0.0);
        assert_eq!(
            reject("heart_rate", -1.0, "/min", at),
            RejectionReason::Implausible
        );
        assert_eq!(
            reject("respiratory_rate", -0.5, "/min", at),
            RejectionReason::Implausible
        );
        assert_eq!(accept("temperature", 25.0, "Cel").value, 25.0);
        assert_eq!(accept("temperature", 45.0, "Cel").value, 45.0);
        assert_eq!(
            reject("temperature", 24.9, "Cel", at),
            RejectionReason::Implausible
        );
        assert_eq!(
            reject("temperature", 45.1, "Cel", at),
            RejectionReason::Implausible
        );
        // 114 degF is 45.6 C: implausible after conversion, not before.
        assert_eq!(
            reject("temperature", 114.0, "[degF]", at),
            RejectionReason::Implausible
        );
    }

    #[test]
    fn refuses_unknown_and_mismatched_codes_and_units() {
        let at = NOW;
        assert_eq!(
            reject("glucose", 5.0, "mmol/L", at),
            RejectionReason::UnknownCode
        );
        assert_eq!(
            reject("heart_rate", 70.0, "beats", at),
            RejectionReason::UnknownUnit
        );
        assert_eq!(
            reject("heart_rate", 70.0, "kg", at),
            RejectionReason::WrongUnit
        );
        assert_eq!(reject("spo2", 97.0, "Cel", at), RejectionReason::WrongUnit);
    }

    #[test]
    fn refuses_absent_values() {
        let at = NOW;
        assert_eq!(
            reject("spo2", f64::NAN, "%", at),
            RejectionReason::DataAbsent
        );
        assert_eq!(
            reject("spo2", f64::INFINITY, "%", at),
            RejectionReason::DataAbsent
        );
        assert_eq!(
            reject("heart_rate", 8_388_607.0, "/min", at),
            RejectionReason::DataAbsent
        );
    }

    #[test]
    fn time_window_edges() {
        let edge_future = NOW.add_micros(FUTURE_TOLERANCE_MICROS);
        assert!(normalize(DEVICE, "hr", 70.0, "/min", edge_future, NOW, None).is_ok());
        assert_eq!(
            reject("hr", 70.0, "/min", edge_future.add_micros(1)),
            RejectionReason::FutureTime
        );
        let edge_past = NOW.add_micros(-MAX_AGE_MICROS);
        assert!(normalize(DEVICE, "hr", 70.0, "/min", edge_past, NOW, None).is_ok());
        assert_eq!(
            reject("hr", 70.0, "/min", edge_past.add_micros(-1)),
            RejectionReason::TooOld
        );
    }

    #[test]
    fn reason_codes_round_trip() {
        for reason in RejectionReason::ALL {
            assert_eq!(RejectionReason::parse(reason.code()), Some(reason));
        }
    }
}
