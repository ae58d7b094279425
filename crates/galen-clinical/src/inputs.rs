//! What scores and alarms are computed from: clinical parameters, their values and where each
//! value came from.

use galen_model::{DeviceId, Timestamp, VitalSign};

/// A parameter a score table can score. Device vitals map onto some of them; consciousness and
/// supplemental oxygen are entered by staff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Parameter {
    /// Respiration rate, breaths/min.
    RespiratoryRate,
    /// Peripheral oxygen saturation, %.
    Spo2,
    /// Whether the patient breathes air or receives supplemental oxygen.
    SupplementalOxygen,
    /// Systolic blood pressure, mmHg.
    SystolicBp,
    /// Pulse or heart rate, /min.
    HeartRate,
    /// Level of consciousness on the ACVPU scale.
    Consciousness,
    /// Body temperature, Cel.
    Temperature,
}

impl Parameter {
    /// Number of parameters (length of per-parameter arrays).
    pub const COUNT: usize = 7;

    /// Every parameter, in NEWS2 chart order.
    pub const ALL: [Parameter; Parameter::COUNT] = [
        Parameter::RespiratoryRate,
        Parameter::Spo2,
        Parameter::SupplementalOxygen,
        Parameter::SystolicBp,
        Parameter::HeartRate,
        Parameter::Consciousness,
        Parameter::Temperature,
    ];

    /// Stable name used in tables, the API and stored records.
    pub fn code(self) -> &'static str {
        match self {
            Parameter::RespiratoryRate => "respiratory_rate",
            Parameter::Spo2 => "spo2",
            Parameter::SupplementalOxygen => "oxygen",
            Parameter::SystolicBp => "systolic_bp",
            Parameter::HeartRate => "heart_rate",
            Parameter::Consciousness => "consciousness",
            Parameter::Temperature => "temperature",
        }
    }

    /// Inverse of [`Parameter::code`].
    pub fn parse(code: &str) -> Option<Parameter> {
        Parameter::ALL
            .into_iter()
            .find(|parameter| parameter.code() == code)
    }

    /// Position in per-parameter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The parameter a device vital sign feeds, if any.
    pub fn from_vital(vital: VitalSign) -> Option<Parameter> {
        match vital {
            VitalSign::HeartRate => Some(Parameter::HeartRate),
            VitalSign::Spo2 => Some(Parameter::Spo2),
            VitalSign::RespiratoryRate => Some(Parameter::RespiratoryRate),
            VitalSign::BodyTemperature => Some(Parameter::Temperature),
            VitalSign::SystolicBp => Some(Parameter::SystolicBp),
            _ => None,
        }
    }

    /// Whether values of this parameter are numbers (as opposed to a coded state).
    pub fn is_numeric(self) -> bool {
        !matches!(
            self,
            Parameter::SupplementalOxygen | Parameter::Consciousness
        )
    }
}

/// Level of consciousness, ACVPU (NEWS2 chart 1: Alert, new Confusion, Voice, Pain,
/// Unresponsive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Consciousness {
    /// Alert.
    Alert,
    /// New confusion (or new disorientation or agitation).
    NewConfusion,
    /// Responds to voice only.
    Voice,
    /// Responds to pain only.
    Pain,
    /// Unresponsive.
    Unresponsive,
}

impl Consciousness {
    /// Every level, best first.
    pub const ALL: [Consciousness; 5] = [
        Consciousness::Alert,
        Consciousness::NewConfusion,
        Consciousness::Voice,
        Consciousness::Pain,
        Consciousness::Unresponsive,
    ];

    /// One-letter ACVPU code.
    pub fn code(self) -> &'static str {
        match self {
            Consciousness::Alert => "A",
            Consciousness::NewConfusion => "C",
            Consciousness::Voice => "V",
            Consciousness::Pain => "P",
            Consciousness::Unresponsive => "U",
        }
    }

    /// Parses an ACVPU letter or the level's English name (any case).
    pub fn parse(text: &str) -> Option<Consciousness> {
        let text = text.trim();
        Consciousness::ALL.into_iter().find(|level| {
            level.code().eq_ignore_ascii_case(text) || level.name().eq_ignore_ascii_case(text)
        })
    }

    /// English name (`alert`, `confusion`, `voice`, `pain`, `unresponsive`).
    pub fn name(self) -> &'static str {
        match self {
            Consciousness::Alert => "alert",
            Consciousness::NewConfusion => "confusion",
            Consciousness::Voice => "voice",
            Consciousness::Pain => "pain",
            Consciousness::Unresponsive => "unresponsive",
        }
    }
}

/// Air or supplemental oxygen (NEWS2 chart 1, "Air or oxygen?").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Oxygen {
    /// Breathing room air.
    Air,
    /// Receiving supplemental oxygen by any device.
    Supplemental,
}

impl Oxygen {
    /// Stable code (`air`, `oxygen`).
    pub fn code(self) -> &'static str {
        match self {
            Oxygen::Air => "air",
            Oxygen::Supplemental => "oxygen",
        }
    }

    /// Inverse of [`Oxygen::code`] (also accepts `supplemental`).
    pub fn parse(text: &str) -> Option<Oxygen> {
        match text.trim().to_ascii_lowercase().as_str() {
            "air" => Some(Oxygen::Air),
            "oxygen" | "supplemental" | "o2" => Some(Oxygen::Supplemental),
            _ => None,
        }
    }
}

/// Which NEWS2 SpO2 scale applies to a patient. Scale 2 is a clinical decision for patients with
/// a prescribed target of 88-92 % (for example hypercapnic respiratory failure): per-patient
/// state, set by a named clinician at a time (RCP NEWS2 2017, chart 1 note).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Spo2Scale {
    /// The default scale.
    #[default]
    Scale1,
    /// The hypercapnic scale.
    Scale2,
}

impl Spo2Scale {
    /// `1` or `2`.
    pub fn number(self) -> u8 {
        match self {
            Spo2Scale::Scale1 => 1,
            Spo2Scale::Scale2 => 2,
        }
    }
}

/// A value of one parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A numeric parameter in its canonical unit.
    Number(f64),
    /// A consciousness level.
    Consciousness(Consciousness),
    /// Air or oxygen.
    Oxygen(Oxygen),
}

/// The identity of a stored measurement: the store deduplicates on device + vital + time, so
/// this triple names exactly one stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MeasurementRef {
    /// The device that measured it.
    pub device: DeviceId,
    /// What it measured.
    pub vital: VitalSign,
    /// When.
    pub time: Timestamp,
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// A device measurement.
    Measurement(MeasurementRef),
    /// A clinical entry made by staff (its stored entry id).
    Entry(i64),
}

/// The newest value of one parameter and its provenance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The value.
    pub value: Value,
    /// When it was measured or observed.
    pub time: Timestamp,
    /// Where it came from.
    pub source: Source,
}

/// Everything a score table may need about one patient at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreInputs {
    /// Newest reading per parameter, indexed by [`Parameter::index`]; `None` if never seen.
    pub readings: [Option<Reading>; Parameter::COUNT],
    /// The patient's SpO2 scale.
    pub spo2_scale: Spo2Scale,
}

impl ScoreInputs {
    /// The newest reading of `parameter`.
    pub fn reading(&self, parameter: Parameter) -> Option<&Reading> {
        self.readings[parameter.index()].as_ref()
    }
}

/// How old a reading may be and still count, per parameter (seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Freshness {
    /// Maximum age in seconds, indexed by [`Parameter::index`].
    pub max_age_seconds: [u32; Parameter::COUNT],
}

impl Default for Freshness {
    /// Continuous monitor values count for 5 minutes, non-invasive blood pressure (typically
    /// cycled every 15-60 minutes) for 60, temperature for 4 hours, and staff-entered
    /// consciousness and oxygen for 12 hours (the NEWS2 minimum monitoring frequency for a score
    /// of 0). Configurable per hospital.
    fn default() -> Freshness {
        let mut max_age_seconds = [0; Parameter::COUNT];
        for parameter in Parameter::ALL {
            max_age_seconds[parameter.index()] = match parameter {
                Parameter::RespiratoryRate | Parameter::Spo2 | Parameter::HeartRate => 5 * 60,
                Parameter::SystolicBp => 60 * 60,
                Parameter::Temperature => 4 * 60 * 60,
                Parameter::Consciousness | Parameter::SupplementalOxygen => 12 * 60 * 60,
            };
        }
        Freshness { max_age_seconds }
    }
}

impl Freshness {
    /// Whether `reading` still counts at `now`.
    pub fn is_fresh(&self, parameter: Parameter, reading_time: Timestamp, now: Timestamp) -> bool {
        let max_age_micros = i64::from(self.max_age_seconds[parameter.index()]) * 1_000_000;
        now.micros().saturating_sub(reading_time.micros()) <= max_age_micros
    }
}
