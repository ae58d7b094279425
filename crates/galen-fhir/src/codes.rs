//! Code systems, canonical URLs and the display texts Galen writes into FHIR resources.
//!
//! Standard systems (LOINC, UCUM, IEEE 11073 MDC, HL7 terminology) are as in the R4 specification.
//! Galen's own canonical URLs live under [`CANONICAL_BASE`], a `.invalid` host (RFC 2606): Galen
//! has no registered domain, so its URLs are deliberately unresolvable rather than squatting on a
//! name someone else may own. They are identifiers, not links; changing the base is a breaking
//! change for stored client data and must be versioned.

use galen_model::VitalSign;

/// LOINC.
pub const LOINC: &str = "http://loinc.org";
/// UCUM.
pub const UCUM: &str = "http://unitsofmeasure.org";
/// IEEE 11073-10101 nomenclature (MDC); codes are `partition * 65536 + term`.
pub const MDC: &str = "urn:iso:std:iso:11073:10101";
/// HL7 observation category code system.
pub const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
/// The observation category of every vital sign.
pub const VITAL_SIGNS_CATEGORY: &str = "vital-signs";
/// HL7 data-absent-reason code system.
pub const DATA_ABSENT_REASON: &str = "http://terminology.hl7.org/CodeSystem/data-absent-reason";
/// HL7 v2 table 0203, identifier types (`MR` medical record number, `SNO` serial number).
pub const IDENTIFIER_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

/// The base of every canonical URL Galen defines.
pub const CANONICAL_BASE: &str = "https://galen.invalid/fhir";
/// Patient extension holding the patient's current ward and bed (see [`crate::registry`]).
pub const BED_LOCATION_EXTENSION: &str =
    "https://galen.invalid/fhir/StructureDefinition/bed-location";
/// Identifier system of device serial numbers (`Device.identifier`).
pub const DEVICE_SERIAL_SYSTEM: &str = "https://galen.invalid/fhir/sid/device-serial";
/// Code system of Galen's device kinds (`Device.type`), codes as [`galen_model::DeviceKind::code`].
pub const DEVICE_KIND_SYSTEM: &str = "https://galen.invalid/fhir/CodeSystem/device-kind";
/// Code system of Galen's measurement aliases, for measurements without a LOINC code (battery).
pub const MEASUREMENT_SYSTEM: &str = "https://galen.invalid/fhir/CodeSystem/measurement";
/// Definition of the custom `ward` search parameter on Patient.
pub const WARD_SEARCH_PARAMETER: &str = "https://galen.invalid/fhir/SearchParameter/Patient-ward";

/// SNOMED CT (international and national editions share the system URI).
pub const SNOMED: &str = "http://snomed.info/sct";
/// HL7 flag category code system (`Flag.category`).
pub const FLAG_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/flag-category";
/// The observation category of assessment tools and scores (`survey`), which early-warning scores
/// carry instead of `vital-signs`.
pub const SURVEY_CATEGORY: &str = "survey";
/// The R4 core extension carrying a Flag's alert priority.
pub const FLAG_PRIORITY_EXTENSION: &str = "http://hl7.org/fhir/StructureDefinition/flag-priority";
/// The code system of [`FLAG_PRIORITY_EXTENSION`] (`PN`, `PL`, `PM`, `PH`), driven by the alert
/// priorities of IHE PCD TF-2 (the IEC 60601-1-8 low, medium and high priorities).
pub const FLAG_PRIORITY_CODES: &str = "http://hl7.org/fhir/flag-priority-code";
/// The R4 core extension pointing from a Flag to the records that support it.
pub const FLAG_DETAIL_EXTENSION: &str = "http://hl7.org/fhir/StructureDefinition/flag-detail";
/// Code system of Galen's score tables (`Observation.code` of a score), codes as the table ids
/// (`news2`, `qsofa`, `mews`, or a hospital table's id).
pub const SCORE_TABLE_SYSTEM: &str = "https://galen.invalid/fhir/CodeSystem/score-table";
/// Code system of the parameters a score table scores (`respiratory_rate`, `spo2`, `oxygen`,
/// `systolic_bp`, `heart_rate`, `consciousness`, `temperature`).
pub const SCORE_PARAMETER_SYSTEM: &str = "https://galen.invalid/fhir/CodeSystem/score-parameter";
/// Code system of score bands (`Observation.interpretation` of a score), codes as the band names
/// of the table named in `Observation.code` (`low`, `low-medium`, `medium`, `high`, ...).
pub const SCORE_BAND_SYSTEM: &str = "https://galen.invalid/fhir/CodeSystem/score-band";
/// Code system of alarm rules (`Flag.code`), codes as the rule ids (`limit.spo2.low`,
/// `score.news2`, `technical.device_silent`, ...).
pub const ALARM_RULE_SYSTEM: &str = "https://galen.invalid/fhir/CodeSystem/alarm-rule";
/// Code system of alarm kinds (`Flag.category`): `physiological` or `technical`
/// (IEC 60601-1-8).
pub const ALARM_KIND_SYSTEM: &str = "https://galen.invalid/fhir/CodeSystem/alarm-kind";
/// Complex extension on a Flag with the alarm's lifecycle (state, escalation, acknowledgement).
pub const ALARM_EXTENSION: &str = "https://galen.invalid/fhir/StructureDefinition/alarm";
/// Extension on a score Observation: the version of the score table that computed it.
pub const SCORE_TABLE_VERSION_EXTENSION: &str =
    "https://galen.invalid/fhir/StructureDefinition/score-table-version";
/// Extension on a score Observation or a Flag: the clinical configuration version in force.
pub const CLINICAL_CONFIG_VERSION_EXTENSION: &str =
    "https://galen.invalid/fhir/StructureDefinition/clinical-config-version";
/// Extension on a score component: the value that was looked up in the table's bands.
pub const SCORED_VALUE_EXTENSION: &str =
    "https://galen.invalid/fhir/StructureDefinition/scored-value";
/// Definition of the custom `status` search parameter on Flag.
pub const FLAG_STATUS_SEARCH_PARAMETER: &str =
    "https://galen.invalid/fhir/SearchParameter/Flag-status";
/// Definition of the custom `state` search parameter on Flag (the alarm state).
pub const FLAG_STATE_SEARCH_PARAMETER: &str =
    "https://galen.invalid/fhir/SearchParameter/Flag-state";
/// Definition of the custom `priority` search parameter on Flag.
pub const FLAG_PRIORITY_SEARCH_PARAMETER: &str =
    "https://galen.invalid/fhir/SearchParameter/Flag-priority";

/// HL7 location physical type code system (`Location.physicalType`: `wa` ward, `bd` bed).
pub const LOCATION_PHYSICAL_TYPE: &str =
    "http://terminology.hl7.org/CodeSystem/location-physical-type";
/// The code system of `Location.status` (`active`, `suspended`, `inactive`).
pub const LOCATION_STATUS: &str = "http://hl7.org/fhir/location-status";
/// The code system of `DeviceMetric.operationalStatus` (`on`, `off`, `standby`,
/// `entered-in-error`).
pub const METRIC_OPERATIONAL_STATUS: &str = "http://hl7.org/fhir/metric-operational-status";
/// The code system of `DeviceMetric.category` (`measurement`, `setting`, `calculation`,
/// `unspecified`).
pub const METRIC_CATEGORY: &str = "http://hl7.org/fhir/metric-category";

/// LOINC of the blood pressure panel (one Observation with systolic, diastolic, mean components).
pub const BLOOD_PRESSURE_PANEL_LOINC: &str = "85354-9";
/// MDC code of non-invasive blood pressure (the panel).
pub const BLOOD_PRESSURE_PANEL_MDC: u32 = 150_020;
/// LOINC of SpO2 by pulse oximetry, emitted beside the profile's 2708-6.
pub const SPO2_PULSE_OXIMETRY_LOINC: &str = "59408-5";
/// The base R4 vital-signs profile.
pub const VITAL_SIGNS_PROFILE: &str = "http://hl7.org/fhir/StructureDefinition/vitalsigns";
/// The R4 blood pressure profile.
pub const BLOOD_PRESSURE_PROFILE: &str = "http://hl7.org/fhir/StructureDefinition/bp";

/// The LOINC display of a code Galen emits.
pub fn loinc_display(code: &str) -> Option<&'static str> {
    Some(match code {
        "8867-4" => "Heart rate",
        "2708-6" => "Oxygen saturation in Arterial blood",
        "59408-5" => "Oxygen saturation in Arterial blood by Pulse oximetry",
        "9279-1" => "Respiratory rate",
        "8310-5" => "Body temperature",
        "8480-6" => "Systolic blood pressure",
        "8462-4" => "Diastolic blood pressure",
        "8478-0" => "Mean blood pressure",
        "29463-7" => "Body weight",
        "8302-2" => "Body height",
        "85354-9" => "Blood pressure panel with all children optional",
        _ => return None,
    })
}

/// The MDC reference id (the code's symbolic name), used as the MDC coding's display.
pub fn mdc_reference_id(code: u32) -> Option<&'static str> {
    Some(match code {
        147_842 => "MDC_ECG_HEART_RATE",
        150_456 => "MDC_PULS_OXIM_SAT_O2",
        151_562 => "MDC_RESP_RATE",
        150_364 => "MDC_TEMP_BODY",
        150_020 => "MDC_PRESS_BLD_NONINV",
        150_021 => "MDC_PRESS_BLD_NONINV_SYS",
        150_022 => "MDC_PRESS_BLD_NONINV_DIA",
        150_023 => "MDC_PRESS_BLD_NONINV_MEAN",
        188_736 => "MDC_MASS_BODY_ACTUAL",
        188_740 => "MDC_LEN_BODY_ACTUAL",
        _ => return None,
    })
}

/// A plain-language name of the vital sign, for `CodeableConcept.text`.
pub const fn vital_text(vital: VitalSign) -> &'static str {
    match vital {
        VitalSign::HeartRate => "Heart rate",
        VitalSign::Spo2 => "Oxygen saturation",
        VitalSign::RespiratoryRate => "Respiratory rate",
        VitalSign::BodyTemperature => "Body temperature",
        VitalSign::SystolicBp => "Systolic blood pressure",
        VitalSign::DiastolicBp => "Diastolic blood pressure",
        VitalSign::MeanArterialPressure => "Mean arterial pressure",
        VitalSign::BodyWeight => "Body weight",
        VitalSign::BodyHeight => "Body height",
        VitalSign::BatteryCharge => "Device battery charge",
    }
}

/// The human-readable unit written into `Quantity.unit` (the UCUM code goes into `Quantity.code`).
pub const fn unit_display(vital: VitalSign) -> &'static str {
    match vital {
        VitalSign::HeartRate => "beats/minute",
        VitalSign::RespiratoryRate => "breaths/minute",
        VitalSign::Spo2 | VitalSign::BatteryCharge => "%",
        VitalSign::BodyTemperature => "C",
        VitalSign::SystolicBp | VitalSign::DiastolicBp | VitalSign::MeanArterialPressure => "mmHg",
        VitalSign::BodyWeight => "kg",
        VitalSign::BodyHeight => "cm",
    }
}

/// The R4 vital-signs profile a single-value Observation of this vital conforms to; `None` for
/// measurements that are not vital signs (battery charge).
pub const fn vital_profile(vital: VitalSign) -> Option<&'static str> {
    match vital {
        VitalSign::HeartRate => Some("http://hl7.org/fhir/StructureDefinition/heartrate"),
        VitalSign::Spo2 => Some("http://hl7.org/fhir/StructureDefinition/oxygensat"),
        VitalSign::RespiratoryRate => Some("http://hl7.org/fhir/StructureDefinition/resprate"),
        VitalSign::BodyTemperature => Some("http://hl7.org/fhir/StructureDefinition/bodytemp"),
        VitalSign::BodyWeight => Some("http://hl7.org/fhir/StructureDefinition/bodyweight"),
        VitalSign::BodyHeight => Some("http://hl7.org/fhir/StructureDefinition/bodyheight"),
        VitalSign::SystolicBp | VitalSign::DiastolicBp | VitalSign::MeanArterialPressure => {
            Some(VITAL_SIGNS_PROFILE)
        }
        VitalSign::BatteryCharge => None,
    }
}

/// Whether a LOINC code identifies `vital` on input (2708-6 and 59408-5 both mean SpO2).
pub fn is_loinc_of(vital: VitalSign, code: &str) -> bool {
    vital.loinc() == Some(code) || (vital == VitalSign::Spo2 && code == SPO2_PULSE_OXIMETRY_LOINC)
}

/// Resolves a coding of a known system to a vital sign. `None` when the system is not one Galen
/// reads or the code is not a vital sign of that system.
pub fn vital_from_coding(system: &str, code: &str) -> Option<VitalSign> {
    let code = code.trim();
    match system {
        LOINC => VitalSign::ALL
            .into_iter()
            .find(|vital| is_loinc_of(*vital, code)),
        // Numeric MDC codes only: the reference ids (MDC_...) belong in `display`.
        MDC if !code.is_empty() && code.bytes().all(|byte| byte.is_ascii_digit()) => {
            VitalSign::parse(code)
        }
        MEASUREMENT_SYSTEM => VitalSign::ALL
            .into_iter()
            .find(|vital| vital.alias() == code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_emitted_code_has_a_display() {
        for vital in VitalSign::ALL {
            if let Some(loinc) = vital.loinc() {
                assert!(loinc_display(loinc).is_some(), "{loinc}");
                assert_eq!(vital_from_coding(LOINC, loinc), Some(vital));
            }
            if let Some(mdc) = vital.mdc() {
                assert!(mdc_reference_id(mdc).is_some(), "{mdc}");
                assert_eq!(vital_from_coding(MDC, &mdc.to_string()), Some(vital));
            }
            assert_eq!(
                vital_from_coding(MEASUREMENT_SYSTEM, vital.alias()),
                Some(vital)
            );
        }
        assert!(loinc_display(BLOOD_PRESSURE_PANEL_LOINC).is_some());
        assert!(loinc_display(SPO2_PULSE_OXIMETRY_LOINC).is_some());
        assert!(mdc_reference_id(BLOOD_PRESSURE_PANEL_MDC).is_some());
    }

    #[test]
    fn codings_resolve_only_in_their_own_system() {
        assert_eq!(
            vital_from_coding(LOINC, "59408-5"),
            Some(VitalSign::Spo2),
            "both SpO2 LOINC codes are read"
        );
        assert_eq!(vital_from_coding(LOINC, "150456"), None);
        assert_eq!(vital_from_coding(MDC, "8867-4"), None);
        assert_eq!(vital_from_coding(MDC, "MDC_PULS_OXIM_SAT_O2"), None);
        assert_eq!(vital_from_coding(MDC, "149530"), Some(VitalSign::HeartRate));
        assert_eq!(vital_from_coding("http://snomed.info/sct", "8867-4"), None);
        assert_eq!(vital_from_coding(LOINC, BLOOD_PRESSURE_PANEL_LOINC), None);
    }
}
