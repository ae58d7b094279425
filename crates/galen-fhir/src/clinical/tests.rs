use galen_model::VitalSign;
use serde_json::{Value, json};

use super::*;
use crate::observation::ObservationCode;
use crate::resource::parse_resource;

/// 2026-11-23T08:15:00Z.
const T0: Timestamp = Timestamp::from_micros(1_795_421_700_000_000);
const PATIENT: PatientId = PatientId(12);
const DEVICE: DeviceId = DeviceId(7);

fn measurement(vital: VitalSign, seconds_before: i64) -> ScoreSource {
    ScoreSource::Measurement(ObservationKey {
        device: DEVICE,
        code: ObservationCode::Vital(vital),
        time: T0.add_seconds(-seconds_before),
    })
}

fn number(value: f64, unit: &str) -> ScoredValue {
    ScoredValue::Number {
        value,
        rounded: Some(value),
        unit: Some(unit.to_owned()),
    }
}

/// A complete NEWS2 record: RR 24 (2), SpO2 93 (2), air (0), SBP 105 (1), pulse 115 (2),
/// Alert (0), 38.4 C (1): total 8, high (RCP NEWS2 2017, chart 1).
fn news2() -> StoredScore {
    use ScoreParameter as P;
    let scored = |parameter, points, value, source| ParameterScore {
        parameter,
        points,
        value,
        source,
    };
    StoredScore {
        patient: PATIENT,
        table: "news2".to_owned(),
        table_name: Some("NEWS2".to_owned()),
        table_version: Some("rcp-2017.1".to_owned()),
        config_version: Some("galen-default-2026.2".to_owned()),
        time: T0,
        total: 8,
        complete: true,
        band: "high".to_owned(),
        monitoring: Some("continuous monitoring of vital signs".to_owned()),
        response: Some("emergency response".to_owned()),
        points: vec![
            scored(
                P::RespiratoryRate,
                2,
                number(24.0, "/min"),
                measurement(VitalSign::RespiratoryRate, 10),
            ),
            scored(
                P::Spo2,
                2,
                number(93.0, "%"),
                measurement(VitalSign::Spo2, 10),
            ),
            scored(
                P::SupplementalOxygen,
                0,
                ScoredValue::Code("air".to_owned()),
                ScoreSource::Entry(4),
            ),
            scored(
                P::SystolicBp,
                1,
                number(105.0, "mm[Hg]"),
                ScoreSource::Measurement(ObservationKey {
                    device: DEVICE,
                    code: ObservationCode::BloodPressurePanel,
                    time: T0.add_seconds(-60),
                }),
            ),
            scored(
                P::HeartRate,
                2,
                number(115.0, "/min"),
                measurement(VitalSign::HeartRate, 10),
            ),
            scored(
                P::Consciousness,
                0,
                ScoredValue::Code("A".to_owned()),
                ScoreSource::Entry(3),
            ),
            scored(
                P::Temperature,
                1,
                ScoredValue::Number {
                    value: 38.36,
                    rounded: Some(38.4),
                    unit: Some("Cel".to_owned()),
                },
                measurement(VitalSign::BodyTemperature, 10),
            ),
        ],
        missing: Vec::new(),
    }
}

fn to_json<T: serde::Serialize>(resource: &T) -> Value {
    serde_json::to_value(resource).expect("serialises")
}

fn observation(score: &StoredScore) -> Value {
    to_json(&score_observation(score).expect("servable"))
}

#[test]
fn a_complete_news2_score_is_a_final_survey_observation() {
    let json = observation(&news2());
    let rr_snomed =
        "Royal College of Physicians National Early Warning Score 2 - respiration rate score";
    assert_eq!(
        json,
        json!({
            "resourceType": "Observation",
            "id": "score.news2.12.1795421700000000",
            "extension": [
                { "url": "https://galen.invalid/fhir/StructureDefinition/score-table-version", "valueString": "rcp-2017.1" },
                { "url": "https://galen.invalid/fhir/StructureDefinition/clinical-config-version", "valueString": "galen-default-2026.2" }
            ],
            "status": "final",
            "category": [{
                "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey", "display": "Survey" }],
                "text": "Survey"
            }],
            "code": {
                "coding": [
                    { "system": "https://galen.invalid/fhir/CodeSystem/score-table", "code": "news2", "display": "NEWS2" },
                    { "system": "http://snomed.info/sct", "code": "1104051000000101", "display": "Royal College of Physicians National Early Warning Score 2 - total score" }
                ],
                "text": "NEWS2"
            },
            "subject": { "reference": "Patient/12" },
            "effectiveDateTime": "2026-11-23T08:15:00.000Z",
            "valueQuantity": { "value": 8, "unit": "score", "system": "http://unitsofmeasure.org", "code": "{score}" },
            "interpretation": [{
                "coding": [{ "system": "https://galen.invalid/fhir/CodeSystem/score-band", "code": "high", "display": "high" }],
                "text": "high"
            }],
            "note": [{ "text": "Band high: monitoring continuous monitoring of vital signs; response: emergency response." }],
            "derivedFrom": [
                { "reference": "Observation/7.rr.1795421690000000" },
                { "reference": "Observation/7.spo2.1795421690000000" },
                { "reference": "Observation/7.bp.1795421640000000" },
                { "reference": "Observation/7.hr.1795421690000000" },
                { "reference": "Observation/7.temp.1795421690000000" }
            ],
            "component": [
                {
                    "code": {
                        "coding": [
                            { "system": "https://galen.invalid/fhir/CodeSystem/score-parameter", "code": "respiratory_rate", "display": "Respiration rate score" },
                            { "system": "http://snomed.info/sct", "code": "1104301000000104", "display": rr_snomed }
                        ],
                        "text": "Respiration rate score"
                    },
                    "valueQuantity": { "value": 2, "unit": "score", "system": "http://unitsofmeasure.org", "code": "{score}" },
                    "extension": [{
                        "url": "https://galen.invalid/fhir/StructureDefinition/scored-value",
                        "valueQuantity": { "value": 24, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min" }
                    }]
                },
                {
                    "code": {
                        "coding": [
                            { "system": "https://galen.invalid/fhir/CodeSystem/score-parameter", "code": "spo2", "display": "Oxygen saturation score" }
                        ],
                        "text": "Oxygen saturation score"
                    },
                    "valueQuantity": { "value": 2, "unit": "score", "system": "http://unitsofmeasure.org", "code": "{score}" },
                    "extension": [{
                        "url": "https://galen.invalid/fhir/StructureDefinition/scored-value",
                        "valueQuantity": { "value": 93, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%" }
                    }]
                },
                {
                    "code": {
                        "coding": [
                            { "system": "https://galen.invalid/fhir/CodeSystem/score-parameter", "code": "oxygen", "display": "Air or oxygen score" },
                            { "system": "http://snomed.info/sct", "code": "1104331000000105", "display": "Royal College of Physicians National Early Warning Score 2 - air or oxygen score" }
                        ],
                        "text": "Air or oxygen score"
                    },
                    "valueQuantity": { "value": 0, "unit": "score", "system": "http://unitsofmeasure.org", "code": "{score}" },
                    "extension": [{ "url": "https://galen.invalid/fhir/StructureDefinition/scored-value", "valueCode": "air" }]
                },
                {
                    "code": {
                        "coding": [
                            { "system": "https://galen.invalid/fhir/CodeSystem/score-parameter", "code": "systolic_bp", "display": "Systolic blood pressure score" },
                            { "system": "http://snomed.info/sct", "code": "1104341000000101", "display": "Royal College of Physicians National Early Warning Score 2 - systolic blood pressure score" }
                        ],
                        "text": "Systolic blood pressure score"
                    },
                    "valueQuantity": { "value": 1, "unit": "score", "system": "http://unitsofmeasure.org", "code": "{score}" },
                    "extension": [{
                        "url": "https://galen.invalid/fhir/StructureDefinition/scored-value",
                        "valueQuantity": { "value": 105, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]" }
                    }]
                },
                {
                    "code": {
                        "coding": [
                            { "system": "https://galen.invalid/fhir/CodeSystem/score-parameter", "code": "heart_rate", "display": "Pulse score" },
                            { "system": "http://snomed.info/sct", "code": "1104351000000103", "display": "Royal College of Physicians National Early Warning Score 2 - pulse score" }
                        ],
                        "text": "Pulse score"
                    },
                    "valueQuantity": { "value": 2, "unit": "score", "system": "http://unitsofmeasure.org", "code": "{score}" },
                    "extension": [{
                        "url": "https://galen.invalid/fhir/StructureDefinition/scored-value",
                        "valueQuantity": { "value": 115, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min" }
                    }]
                },
                {
                    "code": {
                        "coding": [
                            { "system": "https://galen.invalid/fhir/CodeSystem/score-parameter", "code": "consciousness", "display": "Consciousness score" },
                            { "system": "http://snomed.info/sct", "code": "1104361000000100", "display": "Royal College of Physicians National Early Warning Score 2 - consciousness score" }
                        ],
                        "text": "Consciousness score"
                    },
                    "valueQuantity": { "value": 0, "unit": "score", "system": "http://unitsofmeasure.org", "code": "{score}" },
                    "extension": [{ "url": "https://galen.invalid/fhir/StructureDefinition/scored-value", "valueCode": "A" }]
                },
                {
                    "code": {
                        "coding": [
                            { "system": "https://galen.invalid/fhir/CodeSystem/score-parameter", "code": "temperature", "display": "Temperature score" },
                            { "system": "http://snomed.info/sct", "code": "1104371000000107", "display": "Royal College of Physicians National Early Warning Score 2 - temperature score" }
                        ],
                        "text": "Temperature score"
                    },
                    "valueQuantity": { "value": 1, "unit": "score", "system": "http://unitsofmeasure.org", "code": "{score}" },
                    "extension": [{
                        "url": "https://galen.invalid/fhir/StructureDefinition/scored-value",
                        "valueQuantity": { "value": 38.4, "unit": "Cel", "system": "http://unitsofmeasure.org", "code": "Cel" }
                    }]
                }
            ]
        })
    );
    // What Galen writes, Galen reads back unchanged.
    let parsed: Observation =
        parse_resource(json.to_string().as_bytes()).expect("a valid Observation");
    assert_eq!(to_json(&parsed), json);
}

/// Every NEWS2 band edge (RCP NEWS2 2017, charts 2-4): the band the engine chose is the
/// interpretation, the total is the value, whatever the band.
#[test]
fn every_news2_band_is_the_interpretation() {
    let cases = [
        (0, "low"),
        (1, "low"),
        (4, "low"),
        (3, "low-medium"),
        (4, "low-medium"),
        (5, "medium"),
        (6, "medium"),
        (7, "high"),
        (20, "high"),
    ];
    for (total, band) in cases {
        let score = StoredScore {
            total,
            band: band.to_owned(),
            monitoring: None,
            response: None,
            ..news2()
        };
        let json = observation(&score);
        assert_eq!(json["valueQuantity"]["value"], total, "{band}");
        assert_eq!(
            json["interpretation"][0]["coding"][0],
            json!({ "system": codes::SCORE_BAND_SYSTEM, "code": band, "display": band })
        );
        assert_eq!(json["interpretation"][0]["text"], band);
        assert_eq!(json["status"], "final");
        assert!(json.get("note").is_none(), "no band texts, nothing to note");
        assert!(json["valueQuantity"].get("comparator").is_none());
    }
}

#[test]
fn an_incomplete_score_is_preliminary_and_a_lower_bound() {
    let mut score = news2();
    // Temperature never recorded, respiratory rate stale: both score nothing.
    score.points.retain(|points| {
        !matches!(
            points.parameter,
            ScoreParameter::Temperature | ScoreParameter::RespiratoryRate
        )
    });
    score.missing = vec![
        MissingParameter {
            parameter: ScoreParameter::Temperature,
            last_seen: None,
        },
        MissingParameter {
            parameter: ScoreParameter::RespiratoryRate,
            last_seen: Some(T0.add_seconds(-600)),
        },
    ];
    score.complete = false;
    score.total = 5;
    score.band = "medium".to_owned();
    let json = observation(&score);
    assert_eq!(json["status"], "preliminary");
    assert_eq!(
        json["valueQuantity"],
        json!({ "value": 5, "comparator": ">=", "unit": "score", "system": "http://unitsofmeasure.org", "code": "{score}" })
    );
    let components = json["component"].as_array().expect("components");
    assert_eq!(components.len(), 7, "missing parameters are components too");
    let rr = &components[0];
    assert_eq!(rr["code"]["coding"][0]["code"], "respiratory_rate");
    assert!(rr.get("valueQuantity").is_none());
    assert_eq!(
        rr["dataAbsentReason"],
        json!({
            "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "unknown" }],
            "text": "stale: the newest reading, at 2026-11-23T08:05:00.000Z, is too old to count"
        })
    );
    let temperature = &components[6];
    assert_eq!(temperature["code"]["coding"][0]["code"], "temperature");
    assert_eq!(
        temperature["dataAbsentReason"]["coding"][0]["code"],
        "not-performed"
    );
    assert_eq!(
        json["note"][0]["text"],
        "Incomplete: no fresh temperature, respiratory_rate; the total and the band are a lower bound."
    );
    let derived: Vec<&str> = json["derivedFrom"]
        .as_array()
        .expect("derivedFrom")
        .iter()
        .filter_map(|reference| reference["reference"].as_str())
        .collect();
    assert_eq!(
        derived,
        [
            "Observation/7.spo2.1795421690000000",
            "Observation/7.bp.1795421640000000",
            "Observation/7.hr.1795421690000000"
        ]
    );
}

#[test]
fn scores_from_entries_only_have_no_derived_from_and_other_tables_no_snomed() {
    let score = StoredScore {
        table: "qsofa".to_owned(),
        table_name: Some("qSOFA".to_owned()),
        total: 1,
        band: "negative".to_owned(),
        points: vec![ParameterScore {
            parameter: ScoreParameter::Consciousness,
            points: 1,
            value: ScoredValue::Code("V".to_owned()),
            source: ScoreSource::Entry(9),
        }],
        ..news2()
    };
    let json = observation(&score);
    assert_eq!(json["id"], "score.qsofa.12.1795421700000000");
    assert!(json.get("derivedFrom").is_none());
    let text = json.to_string();
    assert!(!text.contains(codes::SNOMED), "{text}");
    assert_eq!(
        json["code"]["coding"],
        json!([{ "system": codes::SCORE_TABLE_SYSTEM, "code": "qsofa", "display": "qSOFA" }])
    );
    // Two parameters from one measurement are referenced once.
    let mut shared = news2();
    shared.points[1].source = shared.points[0].source.clone();
    let json = observation(&shared);
    assert_eq!(json["derivedFrom"].as_array().expect("refs").len(), 4);
}

#[test]
fn score_ids_round_trip_and_refuse_what_galen_never_issues() {
    let times = [0, -1, 1_795_421_700_123_457, i64::MIN, i64::MAX];
    let patients = [0, 12, -3, i64::MIN, i64::MAX];
    for table in ["news2", "qsofa", "mews", "pews-uk-2026", "ABCDEFGHIJKLMNOP"] {
        for patient in patients {
            for time in times {
                let key = ScoreKey {
                    patient: PatientId(patient),
                    table: table.to_owned(),
                    time: Timestamp::from_micros(time),
                };
                let id = key.id();
                assert!(id.len() <= 64, "{id}");
                assert!(
                    id.bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.')),
                    "{id}"
                );
                assert!(is_score_id(&id));
                assert_eq!(parse_score_id(&id), Ok(key));
            }
        }
    }
    for bad in [
        "",
        "score",
        "score.news2.1",
        "score.news2.1.2.3",
        "scores.news2.1.2",
        "score..1.2",
        "score.news_2.1.2",
        "score.ABCDEFGHIJKLMNOPQ.1.2",
        "score.news2.01.2",
        "score.news2.1.+2",
        "7.hr.1795421700000000",
    ] {
        assert!(parse_score_id(bad).is_err(), "{bad}");
    }
    assert!(!is_score_id("scorecard.x"));
    assert!(!is_score_id("7.hr.1"));
    let unservable = StoredScore {
        table: "news_2".to_owned(),
        ..news2()
    };
    assert!(matches!(
        score_observation(&unservable),
        Err(Error::Id { .. })
    ));
    for parameter in ScoreParameter::ALL {
        assert_eq!(ScoreParameter::parse(parameter.code()), Some(parameter));
    }
}

/// A transition of alarm 12-3 (a NEWS2 score alarm) at `seconds` after T0.
fn transition(
    seconds: i64,
    name: &str,
    state: AlarmState,
    priority: AlarmPriority,
) -> AlarmTransition {
    AlarmTransition {
        time: T0.add_seconds(seconds),
        transition: name.to_owned(),
        priority,
        state,
        raised_at: T0,
        rule: "score.news2".to_owned(),
        kind: AlarmKind::Physiological,
        device: None,
        actor: None,
        reason: None,
        escalation_level: 0,
        role: None,
        silenced_until: None,
        value: Some(8.0),
        threshold: None,
        message: "NEWS2 8".to_owned(),
        evidence: vec![
            ObservationKey {
                device: DEVICE,
                code: ObservationCode::Vital(VitalSign::RespiratoryRate),
                time: T0,
            },
            ObservationKey {
                device: DEVICE,
                code: ObservationCode::Vital(VitalSign::HeartRate),
                time: T0,
            },
        ],
        config_version: Some("galen-default-2026.2".to_owned()),
    }
}

const KEY: FlagKey = FlagKey {
    patient: PATIENT,
    number: 3,
};

fn flag(transitions: &[AlarmTransition]) -> Value {
    to_json(&alarm_flag(&KEY, transitions).expect("a flag"))
}

/// The sub-extensions of Galen's alarm extension, as `(url, value)`.
fn lifecycle(flag: &Value) -> Vec<(String, Value)> {
    flag["extension"]
        .as_array()
        .expect("extensions")
        .iter()
        .find(|extension| extension["url"] == codes::ALARM_EXTENSION)
        .and_then(|extension| extension["extension"].as_array())
        .expect("alarm extension")
        .iter()
        .map(|sub| {
            let url = sub["url"].as_str().expect("url").to_owned();
            let value = sub
                .as_object()
                .and_then(|object| {
                    object
                        .iter()
                        .find(|(name, _)| name.starts_with("value"))
                        .map(|(_, value)| value.clone())
                })
                .expect("a value");
            (url, value)
        })
        .collect()
}

fn lifecycle_value(flag: &Value, url: &str) -> Option<Value> {
    lifecycle(flag)
        .into_iter()
        .find(|(name, _)| name == url)
        .map(|(_, value)| value)
}

#[test]
fn a_raised_alarm_is_an_active_flag() {
    let raised = AlarmTransition {
        role: Some("bedside_nurse".to_owned()),
        ..transition(0, "raised", AlarmState::Active, AlarmPriority::High)
    };
    let json = flag(&[raised]);
    assert_eq!(
        json,
        json!({
            "resourceType": "Flag",
            "id": "12-3",
            "meta": { "lastUpdated": "2026-11-23T08:15:00.000Z" },
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/flag-priority",
                    "valueCodeableConcept": {
                        "coding": [{ "system": "http://hl7.org/fhir/flag-priority-code", "code": "PH", "display": "High priority" }],
                        "text": "high"
                    }
                },
                { "url": "http://hl7.org/fhir/StructureDefinition/flag-detail", "valueReference": { "reference": "Observation/7.rr.1795421700000000" } },
                { "url": "http://hl7.org/fhir/StructureDefinition/flag-detail", "valueReference": { "reference": "Observation/7.hr.1795421700000000" } },
                {
                    "url": "https://galen.invalid/fhir/StructureDefinition/alarm",
                    "extension": [
                        { "url": "state", "valueCode": "active" },
                        { "url": "lastTransition", "valueCode": "raised" },
                        { "url": "escalationLevel", "valueInteger": 0 },
                        { "url": "notifiedRole", "valueString": "bedside_nurse" },
                        { "url": "value", "valueDecimal": 8 }
                    ]
                },
                { "url": "https://galen.invalid/fhir/StructureDefinition/clinical-config-version", "valueString": "galen-default-2026.2" }
            ],
            "status": "active",
            "category": [
                { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/flag-category", "code": "clinical", "display": "Clinical" }], "text": "Clinical" },
                { "coding": [{ "system": "https://galen.invalid/fhir/CodeSystem/alarm-kind", "code": "physiological", "display": "Physiological alarm" }], "text": "Physiological alarm" }
            ],
            "code": {
                "coding": [{ "system": "https://galen.invalid/fhir/CodeSystem/alarm-rule", "code": "score.news2" }],
                "text": "NEWS2 8"
            },
            "subject": { "reference": "Patient/12" },
            "period": { "start": "2026-11-23T08:15:00.000Z" },
            "author": { "display": "Galen clinical engine" }
        })
    );
    let parsed: Flag = parse_resource(json.to_string().as_bytes()).expect("a valid Flag");
    assert_eq!(to_json(&parsed), json);
}

#[test]
fn every_alarm_state_and_priority_maps() {
    use AlarmPriority::{High, Low, Medium};
    use AlarmState::{Acknowledged, Active, Latched, Resolved};
    let cases = [
        (Active, Low, "active", "PL"),
        (Active, Medium, "active", "PM"),
        (Acknowledged, High, "active", "PH"),
        (Latched, High, "active", "PH"),
        (Resolved, Medium, "inactive", "PM"),
    ];
    for (state, priority, status, code) in cases {
        let json = flag(&[transition(30, "x", state, priority)]);
        assert_eq!(json["status"], status, "{state:?}");
        assert_eq!(
            json["extension"][0]["valueCodeableConcept"]["coding"][0]["code"],
            code
        );
        assert_eq!(
            lifecycle_value(&json, "state"),
            Some(json!(state.code())),
            "{state:?}"
        );
        assert_eq!(
            json["period"].get("end").cloned(),
            (state == Resolved).then(|| json!("2026-11-23T08:15:30.000Z")),
            "{state:?}: only a resolved alarm's period ends"
        );
        assert_eq!(AlarmState::parse(state.code()), Some(state));
        assert_eq!(AlarmPriority::parse(priority.code()), Some(priority));
    }
}

#[test]
fn the_lifecycle_keeps_acknowledgement_escalation_latching_and_closing() {
    use AlarmPriority::{High, Medium};
    use AlarmState::{Acknowledged, Active, Latched, Resolved};
    let raised = AlarmTransition {
        role: Some("bedside_nurse".to_owned()),
        ..transition(0, "raised", Active, Medium)
    };
    let escalated = AlarmTransition {
        escalation_level: 1,
        role: Some("charge_nurse".to_owned()),
        ..transition(300, "escalated", Active, Medium)
    };
    let worse = AlarmTransition {
        escalation_level: 1,
        value: Some(9.0),
        evidence: vec![ObservationKey {
            device: DEVICE,
            code: ObservationCode::Vital(VitalSign::Spo2),
            time: T0.add_seconds(310),
        }],
        role: Some("charge_nurse".to_owned()),
        ..transition(310, "priority_escalated", Active, High)
    };
    let silenced = AlarmTransition {
        escalation_level: 1,
        actor: Some("nurse.jones".to_owned()),
        silenced_until: Some(T0.add_seconds(440)),
        value: None,
        ..transition(320, "silenced", Active, High)
    };
    let acknowledged = AlarmTransition {
        escalation_level: 1,
        actor: Some("nurse.jones".to_owned()),
        reason: Some("at the bedside".to_owned()),
        value: None,
        ..transition(330, "acknowledged", Acknowledged, High)
    };
    let mut history = vec![raised, escalated, worse, silenced.clone()];
    let json = flag(&history);
    assert_eq!(
        lifecycle_value(&json, "silencedUntil"),
        Some(json!("2026-11-23T08:22:20.000Z"))
    );
    assert_eq!(lifecycle_value(&json, "acknowledged"), None);
    history.push(acknowledged);
    let json = flag(&history);
    assert_eq!(json["status"], "active");
    assert_eq!(json["meta"]["lastUpdated"], "2026-11-23T08:20:30.000Z");
    assert_eq!(
        lifecycle(&json),
        [
            ("state".to_owned(), json!("acknowledged")),
            ("lastTransition".to_owned(), json!("acknowledged")),
            ("escalationLevel".to_owned(), json!(1)),
            ("notifiedRole".to_owned(), json!("charge_nurse")),
            ("escalated".to_owned(), json!("2026-11-23T08:20:00.000Z")),
            (
                "priorityEscalated".to_owned(),
                json!("2026-11-23T08:20:10.000Z")
            ),
            ("acknowledged".to_owned(), json!("2026-11-23T08:20:30.000Z")),
            ("acknowledgedBy".to_owned(), json!("nurse.jones")),
            ("acknowledgedReason".to_owned(), json!("at the bedside")),
            ("value".to_owned(), json!(9)),
        ]
    );
    assert_eq!(
        json["extension"][0]["valueCodeableConcept"]["coding"][0]["code"], "PH",
        "the priority after escalation"
    );
    let details: Vec<&str> = json["extension"]
        .as_array()
        .expect("extensions")
        .iter()
        .filter(|extension| extension["url"] == codes::FLAG_DETAIL_EXTENSION)
        .filter_map(|extension| extension["valueReference"]["reference"].as_str())
        .collect();
    assert_eq!(
        details,
        [
            "Observation/7.rr.1795421700000000",
            "Observation/7.hr.1795421700000000",
            "Observation/7.spo2.1795422010000000"
        ],
        "every measurement behind the alarm, once"
    );

    // The condition ends while acknowledged: a latching alarm latches, then ends.
    let mut latched = history.clone();
    latched.push(transition(400, "latched", Latched, High));
    let json = flag(&latched);
    assert_eq!(json["status"], "active", "a latched alarm still signals");
    assert_eq!(
        lifecycle_value(&json, "latched"),
        Some(json!("2026-11-23T08:21:40.000Z"))
    );
    assert_eq!(
        lifecycle_value(&json, "silencedUntil"),
        None,
        "the last transition has no pause running"
    );
    latched.push(transition(410, "resolved", Resolved, High));
    let json = flag(&latched);
    assert_eq!(json["status"], "inactive");
    assert_eq!(json["period"]["end"], "2026-11-23T08:21:50.000Z");
    assert_eq!(lifecycle_value(&json, "resolvedBy"), None);

    // Closed by someone while the condition was present (a false alarm).
    let mut closed = history;
    closed.push(AlarmTransition {
        actor: Some("dr.house".to_owned()),
        reason: Some("artefact".to_owned()),
        ..transition(500, "resolved_by_user", Resolved, High)
    });
    let json = flag(&closed);
    assert_eq!(json["status"], "inactive");
    assert_eq!(
        lifecycle_value(&json, "resolvedBy"),
        Some(json!("dr.house"))
    );
    assert_eq!(
        lifecycle_value(&json, "resolvedReason"),
        Some(json!("artefact"))
    );
    assert_eq!(
        alarm_period(&closed),
        Some((T0, T0.add_seconds(500).add_micros(1)))
    );
    assert_eq!(alarm_period(&closed[..2]), Some((T0, Timestamp::MAX)));
    assert!(alarm_flag(&KEY, &[]).is_none());
}

#[test]
fn technical_alarms_are_authored_by_their_device() {
    let silent = AlarmTransition {
        rule: "technical.device_silent".to_owned(),
        kind: AlarmKind::Technical,
        device: Some(DEVICE),
        value: None,
        evidence: Vec::new(),
        message: "no data from the device for 60 s or more".to_owned(),
        ..transition(0, "raised", AlarmState::Active, AlarmPriority::Medium)
    };
    let json = flag(&[silent]);
    assert_eq!(json["author"], json!({ "reference": "Device/7" }));
    assert_eq!(
        json["category"],
        json!([{ "coding": [{ "system": codes::ALARM_KIND_SYSTEM, "code": "technical", "display": "Technical alarm" }], "text": "Technical alarm" }])
    );
    assert!(
        !json.to_string().contains(codes::FLAG_DETAIL_EXTENSION),
        "no evidence, no detail"
    );
    assert_eq!(AlarmKind::parse("technical"), Some(AlarmKind::Technical));
}

#[test]
fn flag_ids_are_the_native_alarm_ids() {
    for (patient, number) in [
        (12, 3),
        (0, 1),
        (-4, 2),
        (i64::MAX, u32::MAX),
        (i64::MIN, 0),
    ] {
        let key = FlagKey {
            patient: PatientId(patient),
            number,
        };
        let id = key.id();
        assert!(id.len() <= 64);
        assert_eq!(parse_flag_id(&id), Ok(key), "{id}");
    }
    assert_eq!(KEY.id(), "12-3");
    for bad in [
        "",
        "12",
        "12-",
        "-3",
        "12-03",
        "012-3",
        "12-+3",
        "12-4294967296",
        "a-1",
        "1-2-3",
    ] {
        assert!(parse_flag_id(bad).is_err(), "{bad}");
    }
}
