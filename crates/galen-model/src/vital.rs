//! The vital signs Galen understands, with their standard identities and plausible ranges.
//!
//! Codes and units follow the HL7 FHIR R4 vital-signs profile (LOINC), IEEE 11073-10101 (MDC
//! nomenclature, code = partition * 65536 + term) and UCUM, as tabulated in Galen's interoperability
//! reference. Several MDC codes map to one vital sign (the heart rate of an ECG, an oximeter and a
//! NIBP cuff are all LOINC 8867-4).

use std::ops::RangeInclusive;

use crate::unit::{Dimension, Unit};

/// A vital sign. The discriminant is persisted (see [`VitalSign::storage_code`]): never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VitalSign {
    /// Heart or pulse rate, LOINC 8867-4.
    HeartRate,
    /// Peripheral oxygen saturation, LOINC 2708-6 / 59408-5.
    Spo2,
    /// Respiratory rate, LOINC 9279-1.
    RespiratoryRate,
    /// Body temperature, LOINC 8310-5.
    BodyTemperature,
    /// Systolic blood pressure, LOINC 8480-6.
    SystolicBp,
    /// Diastolic blood pressure, LOINC 8462-4.
    DiastolicBp,
    /// Mean arterial pressure, LOINC 8478-0.
    MeanArterialPressure,
    /// Body weight, LOINC 29463-7.
    BodyWeight,
    /// Body height, LOINC 8302-2.
    BodyHeight,
    /// Charge of the measuring device's battery, %. Not a vital sign but a technical
    /// measurement: it feeds low-battery alarms and is kept like any other series. It has no
    /// LOINC code; devices send it as `battery` or `MDC_ATTR_VAL_BATT_CHARGE`.
    BatteryCharge,
}

impl VitalSign {
    /// Every vital sign, in display order.
    pub const ALL: [VitalSign; 10] = [
        VitalSign::HeartRate,
        VitalSign::Spo2,
        VitalSign::RespiratoryRate,
        VitalSign::BodyTemperature,
        VitalSign::SystolicBp,
        VitalSign::DiastolicBp,
        VitalSign::MeanArterialPressure,
        VitalSign::BodyWeight,
        VitalSign::BodyHeight,
        VitalSign::BatteryCharge,
    ];

    /// Galen's short alias, used in the native API and on the dashboard.
    pub const fn alias(self) -> &'static str {
        match self {
            VitalSign::HeartRate => "heart_rate",
            VitalSign::Spo2 => "spo2",
            VitalSign::RespiratoryRate => "respiratory_rate",
            VitalSign::BodyTemperature => "temperature",
            VitalSign::SystolicBp => "systolic_bp",
            VitalSign::DiastolicBp => "diastolic_bp",
            VitalSign::MeanArterialPressure => "mean_bp",
            VitalSign::BodyWeight => "weight",
            VitalSign::BodyHeight => "height",
            VitalSign::BatteryCharge => "battery",
        }
    }

    /// The primary LOINC code (the one FHIR's vital-signs profile requires).
    pub const fn loinc(self) -> Option<&'static str> {
        match self {
            VitalSign::HeartRate => Some("8867-4"),
            VitalSign::Spo2 => Some("2708-6"),
            VitalSign::RespiratoryRate => Some("9279-1"),
            VitalSign::BodyTemperature => Some("8310-5"),
            VitalSign::SystolicBp => Some("8480-6"),
            VitalSign::DiastolicBp => Some("8462-4"),
            VitalSign::MeanArterialPressure => Some("8478-0"),
            VitalSign::BodyWeight => Some("29463-7"),
            VitalSign::BodyHeight => Some("8302-2"),
            VitalSign::BatteryCharge => None,
        }
    }

    /// Every code that identifies this vital sign on input: aliases, LOINC codes, MDC codes
    /// (numeric) and MDC reference ids.
    pub const fn input_codes(self) -> &'static [&'static str] {
        match self {
            VitalSign::HeartRate => &[
                "heart_rate",
                "hr",
                "pulse",
                "pulse_rate",
                "8867-4",
                "147842",
                "149530",
                "149546",
                "MDC_ECG_HEART_RATE",
                "MDC_PULS_OXIM_PULS_RATE",
                "MDC_PULS_RATE_NON_INV",
            ],
            VitalSign::Spo2 => &[
                "spo2",
                "oxygen_saturation",
                "2708-6",
                "59408-5",
                "150456",
                "MDC_PULS_OXIM_SAT_O2",
            ],
            VitalSign::RespiratoryRate => &[
                "respiratory_rate",
                "rr",
                "resp_rate",
                "9279-1",
                "151562",
                "MDC_RESP_RATE",
            ],
            VitalSign::BodyTemperature => &[
                "temperature",
                "temp",
                "body_temperature",
                "8310-5",
                "150364",
                "150344",
                "MDC_TEMP_BODY",
                "MDC_TEMP",
            ],
            VitalSign::SystolicBp => &[
                "systolic_bp",
                "sbp",
                "bp_systolic",
                "8480-6",
                "150021",
                "150301",
                "MDC_PRESS_BLD_NONINV_SYS",
                "MDC_PRESS_CUFF_SYS",
            ],
            VitalSign::DiastolicBp => &[
                "diastolic_bp",
                "dbp",
                "bp_diastolic",
                "8462-4",
                "150022",
                "150302",
                "MDC_PRESS_BLD_NONINV_DIA",
                "MDC_PRESS_CUFF_DIA",
            ],
            VitalSign::MeanArterialPressure => &[
                "mean_bp",
                "map",
                "mean_arterial_pressure",
                "8478-0",
                "150023",
                "150303",
                "MDC_PRESS_BLD_NONINV_MEAN",
                "MDC_PRESS_CUFF_MEAN",
            ],
            VitalSign::BodyWeight => &[
                "weight",
                "body_weight",
                "29463-7",
                "188736",
                "MDC_MASS_BODY_ACTUAL",
            ],
            VitalSign::BodyHeight => &[
                "height",
                "body_height",
                "8302-2",
                "188740",
                "MDC_LEN_BODY_ACTUAL",
            ],
            VitalSign::BatteryCharge => &[
                "battery",
                "battery_level",
                "battery_charge",
                "MDC_ATTR_VAL_BATT_CHARGE",
            ],
        }
    }

    /// Resolves an alias, LOINC or MDC code. Aliases and MDC names match case-insensitively.
    pub fn parse(code: &str) -> Option<VitalSign> {
        // Fast path for the spellings devices send most (this runs once per measurement).
        let exact = match code {
            "heart_rate" | "8867-4" => Some(VitalSign::HeartRate),
            "spo2" | "2708-6" | "59408-5" => Some(VitalSign::Spo2),
            "respiratory_rate" | "9279-1" => Some(VitalSign::RespiratoryRate),
            "temperature" | "8310-5" => Some(VitalSign::BodyTemperature),
            "systolic_bp" | "8480-6" => Some(VitalSign::SystolicBp),
            "diastolic_bp" | "8462-4" => Some(VitalSign::DiastolicBp),
            _ => None,
        };
        if exact.is_some() {
            return exact;
        }
        let code = code.trim();
        VitalSign::ALL.into_iter().find(|vital| {
            vital
                .input_codes()
                .iter()
                .any(|candidate| candidate.eq_ignore_ascii_case(code))
        })
    }

    /// The preferred IEEE 11073 MDC code.
    pub const fn mdc(self) -> Option<u32> {
        match self {
            VitalSign::HeartRate => Some(147_842),
            VitalSign::Spo2 => Some(150_456),
            VitalSign::RespiratoryRate => Some(151_562),
            VitalSign::BodyTemperature => Some(150_364),
            VitalSign::SystolicBp => Some(150_021),
            VitalSign::DiastolicBp => Some(150_022),
            VitalSign::MeanArterialPressure => Some(150_023),
            VitalSign::BodyWeight => Some(188_736),
            VitalSign::BodyHeight => Some(188_740),
            VitalSign::BatteryCharge => None,
        }
    }

    /// What this vital sign measures; a unit of any other dimension is refused.
    pub const fn dimension(self) -> Dimension {
        match self {
            VitalSign::HeartRate | VitalSign::RespiratoryRate => Dimension::Rate,
            VitalSign::Spo2 | VitalSign::BatteryCharge => Dimension::Percent,
            VitalSign::BodyTemperature => Dimension::Temperature,
            VitalSign::SystolicBp | VitalSign::DiastolicBp | VitalSign::MeanArterialPressure => {
                Dimension::Pressure
            }
            VitalSign::BodyWeight => Dimension::Mass,
            VitalSign::BodyHeight => Dimension::Length,
        }
    }

    /// The unit values are stored and served in.
    pub const fn canonical_unit(self) -> Unit {
        self.dimension().canonical()
    }

    /// The range of physiologically possible values, in the canonical unit, inclusive.
    ///
    /// These bound what a living patient can show (plus margin), not what is normal: a value outside
    /// is a device or transcription fault and is refused rather than stored. Sources: SpO2 cannot
    /// exceed 100 %; rates cannot be negative; the 25-45 C core temperature window is Galen's
    /// product requirement (survived extremes lie just inside it); pressures, weights and heights
    /// bound the published human extremes with margin.
    pub fn plausible_range(self) -> RangeInclusive<f64> {
        match self {
            VitalSign::HeartRate => 0.0..=350.0,
            VitalSign::Spo2 => 0.0..=100.0,
            VitalSign::RespiratoryRate => 0.0..=150.0,
            VitalSign::BodyTemperature => 25.0..=45.0,
            VitalSign::SystolicBp => 20.0..=300.0,
            VitalSign::DiastolicBp => 5.0..=250.0,
            VitalSign::MeanArterialPressure => 10.0..=270.0,
            VitalSign::BodyWeight => 0.2..=650.0,
            VitalSign::BodyHeight => 20.0..=280.0,
            VitalSign::BatteryCharge => 0.0..=100.0,
        }
    }

    /// The stable number this vital sign is persisted as.
    pub const fn storage_code(self) -> u16 {
        match self {
            VitalSign::HeartRate => 1,
            VitalSign::Spo2 => 2,
            VitalSign::RespiratoryRate => 3,
            VitalSign::BodyTemperature => 4,
            VitalSign::SystolicBp => 5,
            VitalSign::DiastolicBp => 6,
            VitalSign::MeanArterialPressure => 7,
            VitalSign::BodyWeight => 8,
            VitalSign::BodyHeight => 9,
            VitalSign::BatteryCharge => 10,
        }
    }

    /// Inverse of [`VitalSign::storage_code`].
    pub fn from_storage_code(code: u16) -> Option<VitalSign> {
        VitalSign::ALL
            .into_iter()
            .find(|vital| vital.storage_code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_aliases_loinc_and_mdc() {
        let cases = [
            ("heart_rate", VitalSign::HeartRate),
            ("HR", VitalSign::HeartRate),
            ("8867-4", VitalSign::HeartRate),
            ("149530", VitalSign::HeartRate),
            ("spo2", VitalSign::Spo2),
            ("59408-5", VitalSign::Spo2),
            ("2708-6", VitalSign::Spo2),
            ("mdc_puls_oxim_sat_o2", VitalSign::Spo2),
            ("9279-1", VitalSign::RespiratoryRate),
            ("151562", VitalSign::RespiratoryRate),
            ("8310-5", VitalSign::BodyTemperature),
            ("150344", VitalSign::BodyTemperature),
            ("8480-6", VitalSign::SystolicBp),
            ("150301", VitalSign::SystolicBp),
            ("8462-4", VitalSign::DiastolicBp),
            ("8478-0", VitalSign::MeanArterialPressure),
            ("29463-7", VitalSign::BodyWeight),
            ("8302-2", VitalSign::BodyHeight),
        ];
        for (code, expect) in cases {
            assert_eq!(VitalSign::parse(code), Some(expect), "{code}");
        }
        for unknown in ["", "85354-9", "glucose", "1234"] {
            assert_eq!(VitalSign::parse(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn codes_are_unique_across_vital_signs() {
        let mut seen = std::collections::HashMap::new();
        for vital in VitalSign::ALL {
            for code in vital.input_codes() {
                let previous = seen.insert(code.to_ascii_lowercase(), vital);
                assert!(previous.is_none(), "{code} maps to two vital signs");
            }
            assert_eq!(VitalSign::parse(vital.alias()), Some(vital));
            if let Some(loinc) = vital.loinc() {
                assert_eq!(VitalSign::parse(loinc), Some(vital));
            }
            if let Some(mdc) = vital.mdc() {
                assert_eq!(VitalSign::parse(&mdc.to_string()), Some(vital));
            }
            assert_eq!(
                VitalSign::from_storage_code(vital.storage_code()),
                Some(vital)
            );
        }
    }
}
