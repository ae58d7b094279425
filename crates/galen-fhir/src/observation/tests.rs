use serde_json::{Value, json};

use super::*;
use crate::resource::parse_resource;

const T0: Timestamp = Timestamp::from_micros(1_795_421_700_000_000);
const DEVICE: DeviceId = DeviceId(7);
const PATIENT: PatientId = PatientId(12);

fn reading(vital: VitalSign, time: Timestamp, value: f64) -> VitalReading {
    VitalReading {
        device: DEVICE,
        patient: Some(PATIENT),
        vital,
        time,
        reading: Reading::Value(value),
    }
}

fn to_json(observation: &Observation) -> Value {
    serde_json::to_value(observation).expect("serialises")
}

#[test]
fn ids_round_trip_and_are_valid_fhir_ids() {
    let times = [
        0,
        1,
        -1,
        1_795_421_700_000_000,
        1_795_421_700_123_457,
        i64::MIN,
        i64::MAX,
    ];
    let devices = [0, 1, 7, -3, i64::MAX, i64::MIN];
    for code in ObservationCode::all() {
        for device in devices {
            for time in times {
                let key = ObservationKey {
                    device: DeviceId(device),
                    code,
                    time: Timestamp::from_micros(time),
                };
                let id = key.id();
                assert_eq!(parse_observation_id(&id), Ok(key), "{id}");
                assert!(id.len() <= 64, "{id} is longer than a FHIR id may be");
                assert!(
                    id.bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.'),
                    "{id} has characters a FHIR id may not"
                );
            }
        }
    }
    assert_eq!(
        ObservationKey {
            device: DEVICE,
            code: ObservationCode::Vital(VitalSign::HeartRate),
            time: T0
        }
        .id(),
        "7.hr.1795421700000000"
    );
}

#[test]
fn tokens_are_unique() {
    let tokens: std::collections::HashSet<&str> =
        ObservationCode::all().map(ObservationCode::token).collect();
    assert_eq!(tokens.len(), ObservationCode::all().count());
}

#[test]
fn non_canonical_ids_are_refused() {
    for id in [
        "",
        "7",
        "7.hr",
        "7.hr.1.2",
        "07.hr.1",
        "+7.hr.1",
        "7.hr.+1",
        "7.HR.1",
        "7.hr.-0",
        "7.hr.01",
        "7.xx.1",
        "7.hr.9223372036854775808",
        "x.hr.1",
        "7..1",
        "7.heart_rate.1",
    ] {
        assert_eq!(
            parse_observation_id(id),
            Err(Error::Id {
                resource_type: "Observation",
                id: id.to_owned()
            }),
            "{id:?}"
        );
    }
}

#[test]
fn heart_rate_follows_the_vital_signs_profile() {
    let observation = vital_observation(&reading(VitalSign::HeartRate, T0, 72.0));
    assert_eq!(
        to_json(&observation),
        json!({
            "resourceType": "Observation",
            "id": "7.hr.1795421700000000",
            "meta": { "profile": ["http://hl7.org/fhir/StructureDefinition/heartrate"] },
            "status": "final",
            "category": [{
                "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                    "display": "Vital Signs"
                }],
                "text": "Vital Signs"
            }],
            "code": {
                "coding": [
                    { "system": "http://loinc.org", "code": "8867-4", "display": "Heart rate" },
                    { "system": "urn:iso:std:iso:11073:10101", "code": "147842", "display": "MDC_ECG_HEART_RATE" }
                ],
                "text": "Heart rate"
            },
            "subject": { "reference": "Patient/12" },
            "effectiveDateTime": "2026-11-23T08:15:00.000Z",
            "valueQuantity": {
                "value": 72,
                "unit": "beats/minute",
                "system": "http://unitsofmeasure.org",
                "code": "/min"
            },
            "device": { "reference": "Device/7" }
        })
    );
}

#[test]
fn spo2_carries_both_loinc_codes_and_mdc() {
    let observation = vital_observation(&reading(VitalSign::Spo2, T0, 97.5));
    let code = observation.code.as_ref().expect("code");
    let codings: Vec<(&str, &str)> = code
        .coding
        .iter()
        .filter_map(|coding| Some((coding.system.as_deref()?, coding.code.as_deref()?)))
        .collect();
    assert_eq!(
        codings,
        [(LOINC, "2708-6"), (LOINC, "59408-5"), (MDC, "150456"),]
    );
    let quantity = observation.value_quantity.as_ref().expect("value");
    assert_eq!(quantity.value_f64(), Some(97.5));
    assert_eq!(quantity.code.as_deref(), Some("%"));
    assert_eq!(
        observation.meta.as_ref().map(|meta| meta.profile.clone()),
        Some(vec![
            "http://hl7.org/fhir/StructureDefinition/oxygensat".to_owned()
        ])
    );
}

#[test]
fn every_vital_uses_its_canonical_ucum_unit() {
    for vital in VitalSign::ALL {
        let observation = vital_observation(&reading(vital, T0, 1.5));
        let quantity = observation.value_quantity.as_ref().expect("value");
        assert_eq!(quantity.system.as_deref(), Some(UCUM), "{vital:?}");
        assert_eq!(
            quantity.code.as_deref(),
            Some(vital.canonical_unit().ucum()),
            "{vital:?}"
        );
        assert_eq!(
            observation.category.is_empty(),
            vital == VitalSign::BatteryCharge,
            "{vital:?}: only vital signs carry category vital-signs"
        );
    }
}

#[test]
fn missing_values_carry_a_data_absent_reason() {
    let mut absent = reading(VitalSign::Spo2, T0, 0.0);
    absent.reading = Reading::from_device_value(8_388_607.0);
    let json = to_json(&vital_observation(&absent));
    assert!(json.get("valueQuantity").is_none());
    assert_eq!(
        json["dataAbsentReason"]["coding"][0],
        json!({
            "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
            "code": "not-a-number",
            "display": "Not a Number (NaN)"
        })
    );
    assert_eq!(
        Reading::from_device_value(f64::NAN),
        Reading::Absent(AbsentReason::NotANumber)
    );
    assert_eq!(
        Reading::from_device_value(f64::NEG_INFINITY),
        Reading::Absent(AbsentReason::NegativeInfinity)
    );
    assert_eq!(Reading::from_device_value(97.0), Reading::Value(97.0));
    // A Value that JSON cannot carry is never written as a number.
    let mut infinite = reading(VitalSign::HeartRate, T0, 0.0);
    infinite.reading = Reading::Value(f64::INFINITY);
    let json = to_json(&vital_observation(&infinite));
    assert!(json.get("valueQuantity").is_none());
    assert_eq!(
        json["dataAbsentReason"]["coding"][0]["code"],
        "positive-infinity"
    );
}

#[test]
fn unassigned_data_has_no_subject_and_claims_no_profile() {
    let mut unassigned = reading(VitalSign::HeartRate, T0, 60.0);
    unassigned.patient = None;
    let observation = vital_observation(&unassigned);
    assert!(observation.subject.is_none());
    assert!(observation.meta.is_none());
    assert_eq!(
        observation.device.and_then(|device| device.reference),
        Some("Device/7".to_owned())
    );
}

#[test]
fn battery_is_coded_in_galens_system() {
    let observation = vital_observation(&reading(VitalSign::BatteryCharge, T0, 80.0));
    let code = observation.code.expect("code");
    assert!(code.has(codes::MEASUREMENT_SYSTEM, "battery"));
    assert!(observation.meta.is_none());
    assert_eq!(
        observation.id.as_deref(),
        Some("7.battery.1795421700000000")
    );
}

#[test]
fn blood_pressure_at_one_instant_is_one_panel() {
    let readings = [
        reading(VitalSign::HeartRate, T0, 70.0),
        reading(VitalSign::DiastolicBp, T0, 80.0),
        reading(VitalSign::SystolicBp, T0, 120.0),
        reading(VitalSign::MeanArterialPressure, T0, 93.0),
    ];
    let observations = group_readings(&readings);
    assert_eq!(observations.len(), 2);
    let panel = &observations[1];
    assert_eq!(panel.id.as_deref(), Some("7.bp.1795421700000000"));
    let json = to_json(panel);
    assert_eq!(json["code"]["coding"][0]["code"], "85354-9");
    assert_eq!(json["code"]["coding"][1]["code"], "150020");
    assert_eq!(
        json["meta"]["profile"],
        json!(["http://hl7.org/fhir/StructureDefinition/bp"])
    );
    assert!(json.get("valueQuantity").is_none());
    let components: Vec<(&str, f64, &str)> = panel
        .component
        .iter()
        .map(|component| {
            let code = component.code.as_ref().expect("code");
            let quantity = component.value_quantity.as_ref().expect("value");
            (
                code.coding[0].code.as_deref().expect("loinc"),
                quantity.value_f64().expect("number"),
                quantity.code.as_deref().expect("unit"),
            )
        })
        .collect();
    assert_eq!(
        components,
        [
            ("8480-6", 120.0, "mm[Hg]"),
            ("8462-4", 80.0, "mm[Hg]"),
            ("8478-0", 93.0, "mm[Hg]"),
        ]
    );
}

#[test]
fn pressures_that_do_not_pair_stay_single() {
    let later = T0.add_seconds(1);
    let mut other_device = reading(VitalSign::DiastolicBp, later, 81.0);
    other_device.device = DeviceId(8);
    let readings = [
        reading(VitalSign::SystolicBp, T0, 120.0),
        reading(VitalSign::DiastolicBp, later, 80.0),
        reading(VitalSign::SystolicBp, later, 121.0),
        other_device,
        reading(VitalSign::MeanArterialPressure, T0, 90.0),
    ];
    let ids: Vec<String> = group_readings(&readings)
        .into_iter()
        .filter_map(|observation| observation.id)
        .collect();
    assert_eq!(
        ids,
        [
            "7.sbp.1795421700000000",
            "7.bp.1795421701000000",
            "8.dbp.1795421701000000",
            "7.map.1795421700000000",
        ]
    );
}

#[test]
fn panel_without_mean_and_with_an_absent_component() {
    let mut diastolic = reading(VitalSign::DiastolicBp, T0, 0.0);
    diastolic.reading = Reading::Absent(AbsentReason::Error);
    let observations = group_readings(&[reading(VitalSign::SystolicBp, T0, 118.0), diastolic]);
    assert_eq!(observations.len(), 1);
    let panel = &observations[0];
    assert_eq!(panel.component.len(), 2, "no mean component without a mean");
    assert!(panel.component[1].value_quantity.is_none());
    assert_eq!(
        panel.component[1]
            .data_absent_reason
            .as_ref()
            .and_then(|reason| reason.coding[0].code.as_deref()),
        Some("error")
    );
}

#[test]
fn duplicates_are_served_once() {
    let readings = [
        reading(VitalSign::HeartRate, T0, 70.0),
        reading(VitalSign::HeartRate, T0, 70.0),
        reading(VitalSign::SystolicBp, T0, 120.0),
        reading(VitalSign::DiastolicBp, T0, 80.0),
        reading(VitalSign::SystolicBp, T0, 120.0),
    ];
    assert_eq!(group_readings(&readings).len(), 2);
}

#[test]
fn reads_by_key_agree_with_grouping() {
    let readings = [
        reading(VitalSign::SystolicBp, T0, 120.0),
        reading(VitalSign::DiastolicBp, T0, 80.0),
    ];
    let panel_key = ObservationKey {
        device: DEVICE,
        code: ObservationCode::BloodPressurePanel,
        time: T0,
    };
    let systolic_key = ObservationKey {
        code: ObservationCode::Vital(VitalSign::SystolicBp),
        ..panel_key
    };
    assert!(observation_for_key(&panel_key, &readings).is_some());
    assert!(
        observation_for_key(&systolic_key, &readings).is_none(),
        "a paired systolic value is served only inside its panel"
    );
    assert!(observation_for_key(&systolic_key, &readings[..1]).is_some());
    assert_eq!(
        ObservationCode::Vital(VitalSign::SystolicBp).vitals_to_read(),
        [
            VitalSign::SystolicBp,
            VitalSign::DiastolicBp,
            VitalSign::MeanArterialPressure
        ]
    );
    assert_eq!(
        ObservationCode::Vital(VitalSign::Spo2).vitals_to_read(),
        [VitalSign::Spo2]
    );
}

/// Serialises `observation`, parses it back as a client's post and reads it for ingest.
fn post(observation: &Observation) -> PostedObservation {
    let body = serde_json::to_vec(observation).expect("serialises");
    let parsed: Observation = parse_resource(&body).expect("parses");
    read_posted_observation(&parsed).expect("reads")
}

#[test]
fn served_observations_read_back_into_the_same_values() {
    for vital in VitalSign::ALL {
        if matches!(
            vital,
            VitalSign::SystolicBp | VitalSign::DiastolicBp | VitalSign::MeanArterialPressure
        ) {
            continue;
        }
        let value = 36.6;
        let posted = post(&vital_observation(&reading(vital, T0, value)));
        assert_eq!(posted.device, DeviceHandle::Id(DEVICE));
        assert_eq!(posted.patient, Some(PATIENT));
        assert_eq!(posted.time, T0);
        let values: Vec<PostedValue> = posted
            .values
            .into_iter()
            .map(|value| value.expect("value"))
            .collect();
        assert_eq!(values.len(), 1, "{vital:?}");
        assert_eq!(values[0].vital, vital);
        assert_eq!(values[0].value, value);
        assert_eq!(values[0].unit, vital.canonical_unit().ucum());
        assert_eq!(VitalSign::parse(&values[0].code), Some(vital));
        assert_eq!(values[0].path, "Observation");
    }
    let panel = blood_pressure_observation(&BloodPressureReading {
        device: DEVICE,
        patient: Some(PATIENT),
        time: T0.add_micros(250),
        systolic: Reading::Value(121.0),
        diastolic: Reading::Value(79.0),
        mean: Some(Reading::Value(93.0)),
    });
    let posted = post(&panel);
    assert_eq!(posted.time, T0.add_micros(250));
    let values: Vec<(VitalSign, f64, String)> = posted
        .values
        .into_iter()
        .map(|value| value.expect("component"))
        .map(|value| (value.vital, value.value, value.path))
        .collect();
    assert_eq!(
        values,
        [
            (
                VitalSign::SystolicBp,
                121.0,
                "Observation.component[0]".to_owned()
            ),
            (
                VitalSign::DiastolicBp,
                79.0,
                "Observation.component[1]".to_owned()
            ),
            (
                VitalSign::MeanArterialPressure,
                93.0,
                "Observation.component[2]".to_owned()
            ),
        ]
    );
}

fn posted_heart_rate() -> Value {
    json!({
        "resourceType": "Observation",
        "identifier": [{ "system": "urn:gateway:42", "value": "msg-1" }],
        "status": "final",
        "code": { "coding": [{ "system": "http://loinc.org", "code": "8867-4" }] },
        "effectiveDateTime": "2026-11-23T09:15:00+01:00",
        "valueQuantity": { "value": 72, "system": "http://unitsofmeasure.org", "code": "/min" },
        "device": { "identifier": { "system": codes::DEVICE_SERIAL_SYSTEM, "value": "SN-1" } }
    })
}

fn read(body: &Value) -> Result<PostedObservation> {
    let observation: Observation = parse_resource(body.to_string().as_bytes())?;
    read_posted_observation(&observation)
}

/// Applies `change` to a valid post and returns the error of the whole Observation or of its
/// first value.
fn error_of(change: impl FnOnce(&mut Value)) -> Error {
    let mut body = posted_heart_rate();
    change(&mut body);
    match read(&body) {
        Err(error) => error,
        Ok(posted) => match posted.values.into_iter().find_map(Result::err) {
            Some(error) => error,
            None => panic!("{body} was accepted"),
        },
    }
}

fn check_error(change: impl FnOnce(&mut Value), path: &str, problem: Problem) {
    match error_of(change) {
        Error::Element {
            path: found,
            problem: found_problem,
            message,
        } => {
            assert_eq!(found, path, "{message}");
            assert_eq!(found_problem, problem, "{path}: {message}");
        }
        other => panic!("expected an error at {path}, got {other:?}"),
    }
}

#[test]
fn a_valid_post_reads_into_ingest_values() {
    let posted = read(&posted_heart_rate()).expect("valid");
    assert_eq!(posted.device, DeviceHandle::Serial("SN-1".to_owned()));
    assert_eq!(posted.time, T0);
    assert_eq!(posted.external_id.as_deref(), Some("urn:gateway:42|msg-1"));
    assert_eq!(posted.patient, None);
    let value = posted.values[0].clone().expect("value");
    assert_eq!(
        value,
        PostedValue {
            vital: VitalSign::HeartRate,
            code: "8867-4".to_owned(),
            value: 72.0,
            unit: "/min".to_owned(),
            path: "Observation".to_owned(),
        }
    );
    // An MDC coding alone, and an MDC unit code, are read too.
    let mut mdc = posted_heart_rate();
    mdc["code"] = json!({ "coding": [{ "system": MDC, "code": "149530" }] });
    mdc["valueQuantity"] = json!({ "value": 71.0, "system": MDC, "code": "264864" });
    let value = read(&mdc).expect("mdc").values[0].clone().expect("value");
    assert_eq!(
        (value.vital, value.unit.as_str()),
        (VitalSign::HeartRate, "264864")
    );
    // A unit given only as text is used when there is no code.
    let mut text_unit = posted_heart_rate();
    text_unit["valueQuantity"] = json!({ "value": 37.2, "unit": "Cel" });
    text_unit["code"] = json!({ "coding": [{ "system": LOINC, "code": "8310-5" }] });
    let value = read(&text_unit).expect("text unit").values[0]
        .clone()
        .expect("value");
    assert_eq!(
        (value.vital, value.unit.as_str()),
        (VitalSign::BodyTemperature, "Cel")
    );
}

#[test]
fn refusals_name_the_failing_element() {
    check_error(
        |body| {
            body["valueQuantity"] = json!({ "value": 72 });
        },
        "Observation.valueQuantity.unit",
        Problem::Required,
    );
    check_error(
        |body| body["valueQuantity"]["code"] = json!("beats"),
        "Observation.valueQuantity.code",
        Problem::UnknownUnit,
    );
    check_error(
        |body| body["valueQuantity"]["code"] = json!("kg"),
        "Observation.valueQuantity.code",
        Problem::WrongUnit,
    );
    check_error(
        |body| body["valueQuantity"]["system"] = json!("http://snomed.info/sct"),
        "Observation.valueQuantity.system",
        Problem::UnknownUnit,
    );
    check_error(
        |body| {
            body["valueQuantity"]
                .as_object_mut()
                .expect("quantity")
                .remove("code");
        },
        "Observation.valueQuantity.code",
        Problem::Required,
    );
    check_error(
        |body| {
            body["valueQuantity"]
                .as_object_mut()
                .expect("quantity")
                .remove("value");
        },
        "Observation.valueQuantity.value",
        Problem::Required,
    );
    check_error(
        |body| body["valueQuantity"]["comparator"] = json!("<"),
        "Observation.valueQuantity.comparator",
        Problem::NotSupported,
    );
    check_error(
        |body| {
            let object = body.as_object_mut().expect("object");
            object.remove("valueQuantity");
            object.insert(
                "dataAbsentReason".to_owned(),
                json!({ "coding": [{ "system": codes::DATA_ABSENT_REASON, "code": "not-a-number" }] }),
            );
        },
        "Observation.dataAbsentReason",
        Problem::DataAbsent,
    );
    check_error(
        |body| {
            let object = body.as_object_mut().expect("object");
            object.remove("valueQuantity");
            object.insert("valueString".to_owned(), json!("72"));
        },
        "Observation.valueString",
        Problem::NotSupported,
    );
    check_error(
        |body| {
            body.as_object_mut()
                .expect("object")
                .remove("valueQuantity");
        },
        "Observation.value",
        Problem::Required,
    );
    check_error(
        |body| {
            body.as_object_mut().expect("object").remove("status");
        },
        "Observation.status",
        Problem::Required,
    );
    check_error(
        |body| body["status"] = json!("entered-in-error"),
        "Observation.status",
        Problem::Invalid,
    );
    check_error(
        |body| {
            body.as_object_mut().expect("object").remove("device");
        },
        "Observation.device",
        Problem::Required,
    );
    check_error(
        |body| body["device"] = json!({ "reference": "Device/abc" }),
        "Observation.device.reference",
        Problem::Invalid,
    );
    check_error(
        |body| body["device"] = json!({ "reference": "https://other/fhir/Device/1" }),
        "Observation.device.reference",
        Problem::NotSupported,
    );
    check_error(
        |body| body["device"] = json!({ "identifier": { "system": "urn:other", "value": "SN-1" } }),
        "Observation.device.identifier.system",
        Problem::NotSupported,
    );
    check_error(
        |body| body["subject"] = json!({ "reference": "Group/1" }),
        "Observation.subject.reference",
        Problem::NotSupported,
    );
    check_error(
        |body| {
            body.as_object_mut()
                .expect("object")
                .remove("effectiveDateTime");
        },
        "Observation.effective",
        Problem::Required,
    );
    check_error(
        |body| body["effectiveDateTime"] = json!("2026-11-23"),
        "Observation.effectiveDateTime",
        Problem::BadTime,
    );
    check_error(
        |body| body["effectiveDateTime"] = json!("2026-11-23T08:15:00"),
        "Observation.effectiveDateTime",
        Problem::BadTime,
    );
    check_error(
        |body| {
            let object = body.as_object_mut().expect("object");
            object.remove("effectiveDateTime");
            object.insert(
                "effectivePeriod".to_owned(),
                json!({ "start": "2026-11-23T08:15:00Z" }),
            );
        },
        "Observation.effectivePeriod",
        Problem::NotSupported,
    );
    check_error(
        |body| body["code"] = json!({ "coding": [{ "system": LOINC, "code": "2345-7" }] }),
        "Observation.code.coding[0]",
        Problem::UnknownCode,
    );
    check_error(
        |body| body["code"] = json!({ "coding": [{ "code": "8867-4" }], "text": "HR" }),
        "Observation.code.coding",
        Problem::Required,
    );
    check_error(
        |body| {
            body["code"] = json!({ "coding": [
                { "system": LOINC, "code": "8867-4" },
                { "system": MDC, "code": "150456" }
            ] })
        },
        "Observation.code.coding[1]",
        Problem::Invalid,
    );
    check_error(
        |body| {
            body.as_object_mut().expect("object").remove("code");
        },
        "Observation.code",
        Problem::Required,
    );
}

#[test]
fn one_bad_component_does_not_take_the_others_down() {
    let body = json!({
        "resourceType": "Observation",
        "status": "final",
        "code": { "coding": [{ "system": LOINC, "code": "85354-9" }] },
        "effectiveDateTime": "2026-11-23T08:15:00Z",
        "device": { "reference": "Device/7" },
        "subject": { "reference": "Patient/12" },
        "component": [
            {
                "code": { "coding": [{ "system": LOINC, "code": "8480-6" }] },
                "valueQuantity": { "value": 120, "system": UCUM, "code": "mm[Hg]" }
            },
            {
                "code": { "coding": [{ "system": LOINC, "code": "8462-4" }] },
                "valueQuantity": { "value": 10.6, "system": UCUM, "code": "kPa" }
            },
            {
                "code": { "coding": [{ "system": LOINC, "code": "8478-0" }] },
                "valueQuantity": { "value": 93, "system": UCUM, "code": "mm" }
            },
            { "valueQuantity": { "value": 1, "system": UCUM, "code": "mm[Hg]" } }
        ]
    });
    let posted = read(&body).expect("structure is fine");
    assert_eq!(posted.patient, Some(PATIENT));
    assert_eq!(posted.device, DeviceHandle::Id(DEVICE));
    assert_eq!(posted.values.len(), 4);
    assert_eq!(
        posted.values[0].as_ref().map(|value| value.vital),
        Ok(VitalSign::SystolicBp)
    );
    assert_eq!(
        posted.values[1]
            .as_ref()
            .map(|value| (value.vital, value.unit.as_str())),
        Ok((VitalSign::DiastolicBp, "kPa"))
    );
    assert_eq!(
        posted.values[2].as_ref().map_err(Error::expression),
        Err(Some("Observation.component[2].valueQuantity.code"))
    );
    assert_eq!(
        posted.values[3].as_ref().map_err(Error::expression),
        Err(Some("Observation.component[3].code"))
    );
    // A panel code with a top-level value instead of components is refused with its path.
    let mut wrong = body.clone();
    wrong["valueQuantity"] = json!({ "value": 120, "system": UCUM, "code": "mm[Hg]" });
    let posted = read(&wrong).expect("structure");
    assert_eq!(
        posted.values[0].as_ref().map_err(Error::expression),
        Err(Some("Observation.valueQuantity"))
    );
}

#[test]
fn errors_map_to_pipeline_reasons() {
    let error = error_of(|body| body["valueQuantity"]["code"] = json!("kg"));
    assert_eq!(
        error.rejection_reason(),
        galen_model::RejectionReason::WrongUnit
    );
    let error = error_of(|body| body["effectiveDateTime"] = json!("yesterday"));
    assert_eq!(
        error.rejection_reason(),
        galen_model::RejectionReason::BadTime
    );
}
