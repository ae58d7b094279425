//! Patients, devices and the assignment of a device to a patient over a time interval.
//!
//! A measurement belongs to a device; it is attributed to the patient whose assignment of that
//! device covers the measurement's time. Assignments of one device never overlap, so attribution
//! is unambiguous; a measurement no assignment covers is kept and reported as unassigned.

use std::fmt;

use time::Date;

use crate::ids::{AssignmentId, DeviceId, PatientId};
use crate::time_point::Timestamp;

/// Why a registry record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// A required text field is empty.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A field has a value outside its code set.
    #[error("{field} must be one of {allowed}")]
    NotInCodeSet {
        /// The field.
        field: &'static str,
        /// The allowed values, comma separated.
        allowed: &'static str,
    },
    /// A bed is given without the ward it belongs to.
    #[error("a bed needs its ward")]
    BedWithoutWard,
    /// The birth date is not YYYY-MM-DD or lies in the future.
    #[error("birth_date must be a past date written YYYY-MM-DD")]
    BirthDate,
    /// The assignment ends before it starts.
    #[error("an assignment must end after it starts")]
    EmptyInterval,
}

/// A business identifier such as a medical record number, qualified by its issuing system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identifier {
    /// The namespace (a URI), e.g. `urn:oid:1.2.3.4` for the hospital's MRN.
    pub system: String,
    /// The identifier within that system.
    pub value: String,
}

/// A person's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HumanName {
    /// Family name.
    pub family: String,
    /// Given name(s).
    pub given: String,
}

/// Administrative sex, as FHIR's `AdministrativeGender` code set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sex {
    /// male
    Male,
    /// female
    Female,
    /// other
    Other,
    /// unknown
    Unknown,
}

impl Sex {
    /// The code.
    pub const fn code(self) -> &'static str {
        match self {
            Sex::Male => "male",
            Sex::Female => "female",
            Sex::Other => "other",
            Sex::Unknown => "unknown",
        }
    }

    /// Parses a code.
    pub fn parse(code: &str) -> Result<Sex, RegistryError> {
        match code {
            "male" => Ok(Sex::Male),
            "female" => Ok(Sex::Female),
            "other" => Ok(Sex::Other),
            "unknown" => Ok(Sex::Unknown),
            _ => Err(RegistryError::NotInCodeSet {
                field: "sex",
                allowed: "male, female, other, unknown",
            }),
        }
    }
}

/// A patient to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPatient {
    /// Medical record number.
    pub identifier: Identifier,
    /// Name.
    pub name: HumanName,
    /// Date of birth.
    pub birth_date: Date,
    /// Administrative sex.
    pub sex: Sex,
    /// Ward (care unit) the patient is on; empty when the patient is not placed on a ward (a
    /// home-monitoring patient, or one registered by an EHR before admission).
    pub ward: String,
    /// Bed label within the ward; empty when the patient has no bed.
    pub bed: String,
}

impl NewPatient {
    /// Checks required fields; `today` bounds the birth date.
    pub fn validate(&self, today: Date) -> Result<(), RegistryError> {
        require(&self.identifier.system, "identifier.system")?;
        require(&self.identifier.value, "identifier.value")?;
        require(&self.name.family, "name.family")?;
        if self.ward.trim().is_empty() && !self.bed.trim().is_empty() {
            return Err(RegistryError::BedWithoutWard);
        }
        if self.birth_date > today {
            return Err(RegistryError::BirthDate);
        }
        Ok(())
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse_birth_date(text: &str) -> Result<Date, RegistryError> {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        Date::parse(text, &format).map_err(|_| RegistryError::BirthDate)
    }
}

/// A registered patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patient {
    /// Internal id.
    pub id: PatientId,
    /// Everything else.
    pub details: NewPatient,
}

/// What kind of device it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// Multi-parameter bedside or transport monitor.
    Monitor,
    /// Pulse oximeter.
    PulseOximeter,
    /// Non-invasive blood pressure cuff.
    BloodPressureCuff,
    /// Thermometer.
    Thermometer,
    /// Weighing scale.
    Scale,
    /// Wearable patch or band.
    Wearable,
    /// Gateway relaying other devices.
    Gateway,
    /// Anything else.
    Other,
}

impl DeviceKind {
    /// Every kind.
    pub const ALL: [DeviceKind; 8] = [
        DeviceKind::Monitor,
        DeviceKind::PulseOximeter,
        DeviceKind::BloodPressureCuff,
        DeviceKind::Thermometer,
        DeviceKind::Scale,
        DeviceKind::Wearable,
        DeviceKind::Gateway,
        DeviceKind::Other,
    ];

    /// The code.
    pub const fn code(self) -> &'static str {
        match self {
            DeviceKind::Monitor => "monitor",
            DeviceKind::PulseOximeter => "pulse_oximeter",
            DeviceKind::BloodPressureCuff => "bp_cuff",
            DeviceKind::Thermometer => "thermometer",
            DeviceKind::Scale => "scale",
            DeviceKind::Wearable => "wearable",
            DeviceKind::Gateway => "gateway",
            DeviceKind::Other => "other",
        }
    }

    /// Parses a code.
    pub fn parse(code: &str) -> Result<DeviceKind, RegistryError> {
        DeviceKind::ALL.into_iter().find(|kind| kind.code() == code).ok_or(RegistryError::NotInCodeSet {
            field: "kind",
            allowed: "monitor, pulse_oximeter, bp_cuff, thermometer, scale, wearable, gateway, other",
        })
    }
}

/// Device status, as FHIR's `FHIRDeviceStatus` code set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceStatus {
    /// In use.
    Active,
    /// Not in use (stored, under maintenance). Its data is still accepted: a device in a
    /// cupboard that sends data is news, not noise.
    Inactive,
    /// Registered by mistake: its data is refused.
    EnteredInError,
    /// Unknown.
    Unknown,
}

impl DeviceStatus {
    /// The code.
    pub const fn code(self) -> &'static str {
        match self {
            DeviceStatus::Active => "active",
            DeviceStatus::Inactive => "inactive",
            DeviceStatus::EnteredInError => "entered-in-error",
            DeviceStatus::Unknown => "unknown",
        }
    }

    /// Parses a code.
    pub fn parse(code: &str) -> Result<DeviceStatus, RegistryError> {
        match code {
            "active" => Ok(DeviceStatus::Active),
            "inactive" => Ok(DeviceStatus::Inactive),
            "entered-in-error" => Ok(DeviceStatus::EnteredInError),
            "unknown" => Ok(DeviceStatus::Unknown),
            _ => Err(RegistryError::NotInCodeSet {
                field: "status",
                allowed: "active, inactive, entered-in-error, unknown",
            }),
        }
    }

    /// Whether measurements from a device in this status are accepted.
    pub const fn accepts_data(self) -> bool {
        !matches!(self, DeviceStatus::EnteredInError)
    }
}

/// A device to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    /// Manufacturer serial number; unique within Galen, and what devices identify themselves by.
    pub serial: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model name.
    pub model: String,
    /// Kind.
    pub kind: DeviceKind,
    /// Status.
    pub status: DeviceStatus,
}

impl NewDevice {
    /// Checks required fields.
    pub fn validate(&self) -> Result<(), RegistryError> {
        require(&self.serial, "serial")
    }
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Internal id.
    pub id: DeviceId,
    /// Everything else.
    pub details: NewDevice,
}

/// An assignment to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewAssignment {
    /// The device.
    pub device: DeviceId,
    /// The patient.
    pub patient: PatientId,
    /// First instant covered.
    pub start: Timestamp,
    /// First instant no longer covered; `None` while the assignment is open.
    pub end: Option<Timestamp>,
}

impl NewAssignment {
    /// Checks the interval.
    pub fn validate(&self) -> Result<(), RegistryError> {
        match self.end {
            Some(end) if end <= self.start => Err(RegistryError::EmptyInterval),
            _ => Ok(()),
        }
    }
}

/// A device assigned to a patient over `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// Internal id.
    pub id: AssignmentId,
    /// The interval and parties.
    pub details: NewAssignment,
}

impl Assignment {
    /// Whether this assignment covers `time`.
    pub fn covers(&self, time: Timestamp) -> bool {
        self.details.start <= time && self.details.end.is_none_or(|end| time < end)
    }

    /// Whether this assignment's interval overlaps `[start, end)`.
    pub fn overlaps(&self, start: Timestamp, end: Option<Timestamp>) -> bool {
        let self_end = self.details.end.unwrap_or(Timestamp::MAX);
        let other_end = end.unwrap_or(Timestamp::MAX);
        self.details.start < other_end && start < self_end
    }
}

impl fmt::Display for Assignment {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} ({} -> {})",
            self.id, self.details.device, self.details.patient
        )
    }
}

fn require(value: &str, field: &'static str) -> Result<(), RegistryError> {
    if value.trim().is_empty() {
        Err(RegistryError::Empty(field))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(start: i64, end: Option<i64>) -> Assignment {
        Assignment {
            id: AssignmentId(1),
            details: NewAssignment {
                device: DeviceId(1),
                patient: PatientId(1),
                start: Timestamp::from_seconds(start),
                end: end.map(Timestamp::from_seconds),
            },
        }
    }

    #[test]
    fn covers_is_half_open() {
        let closed = assignment(10, Some(20));
        assert!(!closed.covers(Timestamp::from_seconds(9)));
        assert!(closed.covers(Timestamp::from_seconds(10)));
        assert!(closed.covers(Timestamp::from_seconds(19)));
        assert!(!closed.covers(Timestamp::from_seconds(20)));
        assert!(assignment(10, None).covers(Timestamp::from_seconds(1_000_000)));
    }

    #[test]
    fn overlap_detection() {
        let closed = assignment(10, Some(20));
        let at = Timestamp::from_seconds;
        assert!(
            !closed.overlaps(at(20), None),
            "touching intervals do not overlap"
        );
        assert!(!closed.overlaps(at(0), Some(at(10))));
        assert!(closed.overlaps(at(19), Some(at(30))));
        assert!(closed.overlaps(at(0), None));
        assert!(assignment(10, None).overlaps(at(500), Some(at(600))));
    }

    #[test]
    fn validation() {
        assert_eq!(
            NewAssignment {
                device: DeviceId(1),
                patient: PatientId(1),
                start: Timestamp::from_seconds(5),
                end: Some(Timestamp::from_seconds(5))
            }
            .validate(),
            Err(RegistryError::EmptyInterval)
        );
        assert!(NewPatient::parse_birth_date("1950-02-30").is_err());
        let today = time::macros::date!(2026 - 01 - 01);
        let mut patient = NewPatient {
            identifier: Identifier {
                system: "urn:oid:1.2.3".to_owned(),
                value: "MRN1".to_owned(),
            },
            name: HumanName {
                family: "Doe".to_owned(),
                given: String::new(),
            },
            birth_date: time::macros::date!(1950 - 02 - 28),
            sex: Sex::Unknown,
            ward: String::new(),
            bed: String::new(),
        };
        assert_eq!(patient.validate(today), Ok(()), "not placed on a ward");
        patient.bed = "4".to_owned();
        assert_eq!(patient.validate(today), Err(RegistryError::BedWithoutWard));
        patient.ward = "Ward 7".to_owned();
        assert_eq!(patient.validate(today), Ok(()));
        patient.bed = String::new();
        assert_eq!(patient.validate(today), Ok(()), "on a ward, no bed yet");
        assert!(NewPatient::parse_birth_date("1950-02-28").is_ok());
        assert_eq!(
            Sex::parse("f"),
            Err(RegistryError::NotInCodeSet {
                field: "sex",
                allowed: "male, female, other, unknown"
            })
        );
        assert_eq!(
            DeviceStatus::parse("entered-in-error").map(DeviceStatus::accepts_data),
            Ok(false)
        );
        for kind in DeviceKind::ALL {
            assert_eq!(DeviceKind::parse(kind.code()), Ok(kind));
        }
    }
}
