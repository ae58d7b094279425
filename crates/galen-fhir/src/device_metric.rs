//! What a device measures, as read-only FHIR `DeviceMetric`s.
//!
//! Galen registers devices but not their channels; a device's metrics are the vital signs it
//! has stored values of (the server asks the store for the device's newest value per vital sign).
//! So a metric appears with the device's first stored value of that vital sign and then stays.
//! A mapping template that could produce a vital sign is not a metric until a value arrives:
//! only stored data shows what a device actually measures.
//!
//! **One metric per vital sign.** Blood pressure is three metrics (`sbp`, `dbp`, `map`), as it is
//! stored, even though Observations serve systolic and diastolic of one instant as one panel: a
//! DeviceMetric describes a channel with one type and one unit, and IEEE 11073 gives the three
//! pressures their own codes. The battery charge is a metric too.
//!
//! **Id.** `{device}.{token}`, with the Observation id tokens ([`ObservationCode::token`]:
//! `hr`, `spo2`, `rr`, `temp`, `sbp`, `dbp`, `map`, `weight`, `height`, `battery`), e.g. `7.hr`.
//! The Observations of a metric are the ids that start with its id and a dot.
//!
//! **Content.**
//! - `type`: the IEEE 11073-10101 (MDC) code first (R4's preferred binding for
//!   `DeviceMetric.type`), then the LOINC codes the Observations carry (both 2708-6 and 59408-5
//!   for SpO2); the battery charge, which has neither, is coded in Galen's measurement system.
//! - `unit`: the UCUM code of the unit Galen stores and serves the vital sign in.
//! - `source`: `Device/{id}`; `category`: `measurement`.
//! - `operationalStatus` follows the device's registry status: `active` → `on`, `inactive` →
//!   `off`, `entered-in-error` → `entered-in-error`, `unknown` → absent. The age of the last value
//!   is not used: Galen has no per-device or per-vital staleness window (the dashboard's one
//!   `stale_after_seconds` is per patient, for all vitals together), and a single window would
//!   call a blood pressure cuff that measures every 15 minutes, or a daily scale, `off` between
//!   readings.
//! - `measurementPeriod`, `calibration` and `color` are not known and are left out.

use std::fmt;

use galen_model::{DeviceId, DeviceStatus, VitalSign};
use serde::{Deserialize, Serialize};

use crate::codes::{self, LOINC, MDC, UCUM};
use crate::datatypes::{CodeableConcept, Coding, Extra, Meta, Reference};
use crate::error::{Error, Result};
use crate::observation::{ObservationCode, parse_canonical_i64};
use crate::resource::{FhirResource, ResourceType};

/// `DeviceMetric`: one kind of measurement a device makes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceMetric {
    /// Always `DeviceMetric`.
    pub resource_type: ResourceType<DeviceMetric>,
    /// Logical id (see [`DeviceMetricKey`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// What is measured (required).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<CodeableConcept>,
    /// The unit of the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<CodeableConcept>,
    /// The device that measures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Reference>,
    /// `on`, `off`, `standby` or `entered-in-error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operational_status: Option<String>,
    /// `measurement`, `setting`, `calculation` or `unspecified` (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl FhirResource for DeviceMetric {
    const TYPE: &'static str = "DeviceMetric";

    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// A device and one vital sign it measures: a DeviceMetric's identity. Ordered by device, then
/// in [`VitalSign::ALL`] order, the order of search results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceMetricKey {
    /// The device.
    pub device: DeviceId,
    /// What it measures.
    pub vital: VitalSign,
}

impl DeviceMetricKey {
    /// The logical id `{device}.{token}`.
    pub fn id(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for DeviceMetricKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}.{}",
            self.device.0,
            ObservationCode::Vital(self.vital).token()
        )
    }
}

/// Parses an id written by [`DeviceMetricKey::id`] (canonical spelling only, so a metric has one
/// id). `bp` names Observations, never a metric.
pub fn parse_device_metric_id(id: &str) -> Result<DeviceMetricKey> {
    let invalid = || Error::Id {
        resource_type: DeviceMetric::TYPE,
        id: id.to_owned(),
    };
    let (device, token) = id.split_once('.').ok_or_else(invalid)?;
    let device = parse_canonical_i64(device).ok_or_else(invalid)?;
    match ObservationCode::from_token(token) {
        Some(ObservationCode::Vital(vital)) => Ok(DeviceMetricKey {
            device: DeviceId(device),
            vital,
        }),
        _ => Err(invalid()),
    }
}

/// `DeviceMetric.type` of a vital sign: MDC, then LOINC (both SpO2 codes); Galen's measurement
/// code when there is neither.
pub fn metric_type(vital: VitalSign) -> CodeableConcept {
    let mut coding = Vec::with_capacity(3);
    if let Some(mdc) = vital.mdc() {
        coding.push(Coding::new(
            MDC,
            mdc.to_string(),
            codes::mdc_reference_id(mdc),
        ));
    }
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
    }
    if coding.is_empty() {
        coding.push(Coding::new(
            codes::MEASUREMENT_SYSTEM,
            vital.alias(),
            Some(codes::vital_text(vital)),
        ));
    }
    CodeableConcept {
        coding,
        text: Some(codes::vital_text(vital).to_owned()),
        extra: Extra::new(),
    }
}

/// `DeviceMetric.operationalStatus` of a metric of a device in `status` (see the module
/// documentation); `None` when the device's status is unknown.
pub const fn operational_status(status: DeviceStatus) -> Option<&'static str> {
    match status {
        DeviceStatus::Active => Some("on"),
        DeviceStatus::Inactive => Some("off"),
        DeviceStatus::EnteredInError => Some("entered-in-error"),
        DeviceStatus::Unknown => None,
    }
}

/// The DeviceMetric of `device` measuring `vital`.
pub fn device_metric(device: &galen_model::Device, vital: VitalSign) -> DeviceMetric {
    let key = DeviceMetricKey {
        device: device.id,
        vital,
    };
    let unit = vital.canonical_unit().ucum();
    DeviceMetric {
        resource_type: ResourceType::new(),
        id: Some(key.id()),
        meta: None,
        metric_type: Some(metric_type(vital)),
        unit: Some(CodeableConcept::single(
            UCUM,
            unit,
            Some(codes::unit_display(vital)),
        )),
        source: Some(Reference::to("Device", device.id.0)),
        operational_status: operational_status(device.details.status).map(str::to_owned),
        category: Some("measurement".to_owned()),
        extra: Extra::new(),
    }
}

#[cfg(test)]
mod tests {
    use galen_model::{DeviceKind, NewDevice};
    use serde_json::json;

    use super::*;

    fn device(status: DeviceStatus) -> galen_model::Device {
        galen_model::Device {
            id: DeviceId(7),
            details: NewDevice {
                serial: "SN-7".to_owned(),
                manufacturer: "Acme".to_owned(),
                model: "M1".to_owned(),
                kind: DeviceKind::Monitor,
                status,
            },
        }
    }

    #[test]
    fn ids_use_the_observation_tokens_and_parse_back_exactly() {
        for vital in VitalSign::ALL {
            let key = DeviceMetricKey {
                device: DeviceId(7),
                vital,
            };
            let id = key.id();
            assert_eq!(parse_device_metric_id(&id), Ok(key), "{id}");
            assert!(id.starts_with("7."), "{id}");
        }
        let heart_rate = DeviceMetricKey {
            device: DeviceId(7),
            vital: VitalSign::HeartRate,
        };
        assert_eq!(heart_rate.id(), "7.hr");
        let negative = DeviceMetricKey {
            device: DeviceId(-3),
            vital: VitalSign::SystolicBp,
        };
        assert_eq!(parse_device_metric_id("-3.sbp"), Ok(negative));
        for bad in [
            "7", "7.", ".hr", "07.hr", "+7.hr", "7.bp", "7.HR", "7.hr.1", "7.pulse", "x.hr",
        ] {
            assert_eq!(
                parse_device_metric_id(bad),
                Err(Error::Id {
                    resource_type: "DeviceMetric",
                    id: bad.to_owned()
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn keys_order_by_device_then_vital_sign_order() {
        let key = |device, vital| DeviceMetricKey {
            device: DeviceId(device),
            vital,
        };
        let mut keys = vec![
            key(2, VitalSign::HeartRate),
            key(1, VitalSign::BatteryCharge),
            key(1, VitalSign::HeartRate),
            key(1, VitalSign::Spo2),
        ];
        keys.sort();
        assert_eq!(
            keys,
            [
                key(1, VitalSign::HeartRate),
                key(1, VitalSign::Spo2),
                key(1, VitalSign::BatteryCharge),
                key(2, VitalSign::HeartRate),
            ]
        );
    }

    #[test]
    fn a_metric_carries_mdc_loinc_ucum_and_its_device() {
        let metric = serde_json::to_value(device_metric(
            &device(DeviceStatus::Active),
            VitalSign::Spo2,
        ))
        .expect("serialises");
        assert_eq!(
            metric,
            json!({
                "resourceType": "DeviceMetric",
                "id": "7.spo2",
                "type": {
                    "coding": [
                        { "system": MDC, "code": "150456", "display": "MDC_PULS_OXIM_SAT_O2" },
                        { "system": LOINC, "code": "2708-6", "display": "Oxygen saturation in Arterial blood" },
                        { "system": LOINC, "code": "59408-5", "display": "Oxygen saturation in Arterial blood by Pulse oximetry" }
                    ],
                    "text": "Oxygen saturation"
                },
                "unit": {
                    "coding": [{ "system": UCUM, "code": "%", "display": "%" }],
                    "text": "%"
                },
                "source": { "reference": "Device/7" },
                "operationalStatus": "on",
                "category": "measurement"
            })
        );
        let battery = device_metric(&device(DeviceStatus::Active), VitalSign::BatteryCharge);
        let battery_type = battery.metric_type.expect("type");
        assert_eq!(battery_type.coding.len(), 1);
        assert!(battery_type.has(codes::MEASUREMENT_SYSTEM, "battery"));
        let pressure = device_metric(&device(DeviceStatus::Active), VitalSign::DiastolicBp);
        let pressure_type = pressure.metric_type.expect("type");
        assert!(pressure_type.has(MDC, "150022") && pressure_type.has(LOINC, "8462-4"));
        assert!(
            pressure
                .unit
                .as_ref()
                .is_some_and(|unit| unit.has(UCUM, "mm[Hg]"))
        );
        let temperature = device_metric(&device(DeviceStatus::Active), VitalSign::BodyTemperature);
        assert!(
            temperature
                .unit
                .as_ref()
                .is_some_and(|unit| unit.has(UCUM, "Cel"))
        );
    }

    #[test]
    fn operational_status_follows_the_device_status() {
        let status = |device_status| {
            device_metric(&device(device_status), VitalSign::HeartRate).operational_status
        };
        assert_eq!(status(DeviceStatus::Active).as_deref(), Some("on"));
        assert_eq!(status(DeviceStatus::Inactive).as_deref(), Some("off"));
        assert_eq!(
            status(DeviceStatus::EnteredInError).as_deref(),
            Some("entered-in-error")
        );
        assert_eq!(status(DeviceStatus::Unknown), None);
    }
}
