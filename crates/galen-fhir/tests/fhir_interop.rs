//! Independent validation: every kind of resource galen-fhir writes is checked by
//! `tests/interop/fhir_validate.py`, which parses it with the `fhir.resources` models of FHIR R4
//! 4.0.1 and checks the vital-signs and Bundle invariants those models leave out.
//!
//! The Python packages are required, not optional: when Python or `fhir.resources` is missing the
//! test fails with the command that installs them (`GALEN_PYTHON` names another interpreter).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use galen_fhir::audit_event::{AuditEntry, audit_event};
use galen_fhir::bundle::SearchsetBuilder;
use galen_fhir::clinical::{
    AlarmKind, AlarmPriority, AlarmState, AlarmTransition, FlagKey, MissingParameter,
    ParameterScore, ScoreParameter, ScoreSource, ScoredValue, StoredScore, alarm_flag,
    score_observation,
};
use galen_fhir::device_metric::device_metric;
use galen_fhir::location::{LocationKey, location_to_fhir, locations_of};
use galen_fhir::observation::{
    AbsentReason, BloodPressureReading, ObservationCode, ObservationKey, Reading, VitalReading,
    blood_pressure_observation, group_readings, vital_observation,
};
use galen_fhir::outcome::{OutcomeBuilder, from_error};
use galen_fhir::registry::{device_to_fhir, patient_to_fhir, restore_unmapped_patient};
use galen_fhir::{
    CapabilityStatementBuilder, Error, Flag, Interaction, IssueType, Observation, Patient, Problem,
    Resource, parse_resource,
};
use galen_model::{
    AuditAction, AuditOutcome, Device, DeviceId, DeviceKind, DeviceStatus, HumanName, Identifier,
    NewDevice, NewPatient, PatientId, Sex, Timestamp, VitalSign,
};
use serde_json::{Value, json};

const INSTALL: &str = "pip install -r tests/interop/requirements.txt";
const T0: Timestamp = Timestamp::from_micros(1_795_421_700_000_000);

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> String {
    std::env::var("GALEN_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Runs the validator on `lines` (NDJSON). Fails, never skips, when Python or its packages are
/// missing.
fn validate(lines: &[String]) -> Output {
    let python = python();
    let script = workspace_root().join("tests/interop/fhir_validate.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .arg("-")
        .current_dir(workspace_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot run {python} ({error}); install Python 3, then `{INSTALL}`")
        });
    let mut input = lines.join("\n");
    input.push('\n');
    // A validator that exits early (missing packages) closes its stdin: the write error is not
    // the news, the exit status below is.
    let _ = child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes());
    let output = child.wait_with_output().expect("the validator finishes");
    if output.status.code() == Some(3) {
        panic!(
            "the FHIR validator needs the Python package fhir.resources 6.4.0 (FHIR R4): run \
             `{INSTALL}` from the workspace root\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

fn line(resource: &impl serde::Serialize) -> String {
    serde_json::to_string(resource).expect("serialises")
}

fn patient() -> galen_model::Patient {
    galen_model::Patient {
        id: PatientId(12),
        details: NewPatient {
            identifier: Identifier {
                system: "urn:oid:1.2.3.4".to_owned(),
                value: "MRN-1".to_owned(),
            },
            name: HumanName {
                family: "Smith".to_owned(),
                given: "Mary Ann".to_owned(),
            },
            birth_date: NewPatient::parse_birth_date("1950-02-28").expect("date"),
            sex: Sex::Female,
            ward: "Cardiology".to_owned(),
            bed: "4B".to_owned(),
        },
    }
}

fn device() -> Device {
    Device {
        id: DeviceId(7),
        details: NewDevice {
            serial: "0012345678ABCDEF".to_owned(),
            manufacturer: "Acme Medical".to_owned(),
            model: "M-100".to_owned(),
            kind: DeviceKind::Monitor,
            status: DeviceStatus::Active,
        },
    }
}

fn reading(vital: VitalSign, seconds: i64, value: f64) -> VitalReading {
    VitalReading {
        device: DeviceId(7),
        patient: Some(PatientId(12)),
        vital,
        time: T0.add_seconds(seconds),
        reading: Reading::from_device_value(value),
    }
}

/// Every Observation shape galen-fhir produces.
fn observations() -> Vec<Observation> {
    let mut unassigned = reading(VitalSign::HeartRate, 9, 64.0);
    unassigned.patient = None;
    let mut readings = vec![
        reading(VitalSign::HeartRate, 0, 72.0),
        reading(VitalSign::Spo2, 0, 97.5),
        reading(VitalSign::Spo2, 1, 8_388_607.0),
        reading(VitalSign::RespiratoryRate, 0, 16.0),
        reading(VitalSign::BodyTemperature, 0, 37.25),
        reading(VitalSign::SystolicBp, 0, 120.0),
        reading(VitalSign::DiastolicBp, 0, 80.0),
        reading(VitalSign::MeanArterialPressure, 0, 93.333),
        reading(VitalSign::SystolicBp, 2, 131.0),
        reading(VitalSign::DiastolicBp, 2, 85.0),
        reading(VitalSign::SystolicBp, 3, 140.0),
        reading(VitalSign::BodyWeight, 0, 68.0388555),
        reading(VitalSign::BodyHeight, 0, 172.5),
        reading(VitalSign::BatteryCharge, 0, 81.0),
        unassigned,
    ];
    readings.reverse();
    let mut observations = group_readings(&readings);
    observations.push(blood_pressure_observation(&BloodPressureReading {
        device: DeviceId(7),
        patient: Some(PatientId(12)),
        time: T0.add_seconds(4),
        systolic: Reading::Value(118.0),
        diastolic: Reading::Absent(AbsentReason::Error),
        mean: Some(Reading::Absent(AbsentReason::Unknown)),
    }));
    let mut absent = reading(VitalSign::RespiratoryRate, 5, 0.0);
    absent.reading = Reading::Absent(AbsentReason::Unknown);
    observations.push(vital_observation(&absent));
    observations
}

/// Early-warning score Observations: a complete NEWS2, an incomplete one, a qSOFA from a staff
/// entry only.
fn scores() -> Vec<Observation> {
    let measured = |vital: VitalSign| {
        ScoreSource::Measurement(ObservationKey {
            device: DeviceId(7),
            code: ObservationCode::Vital(vital),
            time: T0,
        })
    };
    let scored =
        |parameter: ScoreParameter, points: i64, value: ScoredValue, source| ParameterScore {
            parameter,
            points,
            value,
            source,
        };
    let number = |value: f64, unit: &str| ScoredValue::Number {
        value,
        rounded: Some(value),
        unit: Some(unit.to_owned()),
    };
    let complete = StoredScore {
        patient: PatientId(12),
        table: "news2".to_owned(),
        table_name: Some("NEWS2".to_owned()),
        table_version: Some("rcp-2017.1".to_owned()),
        config_version: Some("galen-default-2026.2".to_owned()),
        time: T0,
        total: 7,
        complete: true,
        band: "high".to_owned(),
        monitoring: Some("continuous".to_owned()),
        response: Some("emergency response".to_owned()),
        points: vec![
            scored(
                ScoreParameter::RespiratoryRate,
                2,
                number(24.0, "/min"),
                measured(VitalSign::RespiratoryRate),
            ),
            scored(
                ScoreParameter::Spo2,
                2,
                number(93.0, "%"),
                measured(VitalSign::Spo2),
            ),
            scored(
                ScoreParameter::SupplementalOxygen,
                0,
                ScoredValue::Code("air".to_owned()),
                ScoreSource::Entry(1),
            ),
            scored(
                ScoreParameter::SystolicBp,
                1,
                number(105.0, "mm[Hg]"),
                ScoreSource::Measurement(ObservationKey {
                    device: DeviceId(7),
                    code: ObservationCode::BloodPressurePanel,
                    time: T0,
                }),
            ),
            scored(
                ScoreParameter::HeartRate,
                2,
                number(115.0, "/min"),
                measured(VitalSign::HeartRate),
            ),
            scored(
                ScoreParameter::Consciousness,
                0,
                ScoredValue::Code("A".to_owned()),
                ScoreSource::Entry(2),
            ),
            scored(
                ScoreParameter::Temperature,
                0,
                number(37.2, "Cel"),
                measured(VitalSign::BodyTemperature),
            ),
        ],
        missing: Vec::new(),
    };
    let mut incomplete = complete.clone();
    incomplete.time = T0.add_seconds(600);
    incomplete.complete = false;
    incomplete.total = 4;
    incomplete.band = "low".to_owned();
    incomplete.points.truncate(3);
    incomplete.missing = vec![
        MissingParameter {
            parameter: ScoreParameter::SystolicBp,
            last_seen: None,
        },
        MissingParameter {
            parameter: ScoreParameter::HeartRate,
            last_seen: Some(T0),
        },
    ];
    let qsofa = StoredScore {
        table: "qsofa".to_owned(),
        table_name: Some("qSOFA".to_owned()),
        table_version: None,
        config_version: None,
        total: 1,
        complete: false,
        band: "negative".to_owned(),
        monitoring: None,
        response: None,
        points: vec![scored(
            ScoreParameter::Consciousness,
            1,
            ScoredValue::Code("V".to_owned()),
            ScoreSource::Entry(3),
        )],
        missing: vec![MissingParameter {
            parameter: ScoreParameter::RespiratoryRate,
            last_seen: None,
        }],
        ..complete.clone()
    };
    [complete, incomplete, qsofa]
        .iter()
        .map(|score| score_observation(score).expect("servable"))
        .collect()
}

/// Flags: one per alarm state, and a technical alarm.
fn flags() -> Vec<Flag> {
    let transition = |seconds: i64, name: &str, state: AlarmState| AlarmTransition {
        time: T0.add_seconds(seconds),
        transition: name.to_owned(),
        priority: AlarmPriority::High,
        state,
        raised_at: T0,
        rule: "score.news2".to_owned(),
        kind: AlarmKind::Physiological,
        device: None,
        actor: (name == "acknowledged").then(|| "nurse.jones".to_owned()),
        reason: None,
        escalation_level: 1,
        role: Some("charge_nurse".to_owned()),
        silenced_until: None,
        value: Some(7.0),
        threshold: Some(7.0),
        message: "NEWS2 7".to_owned(),
        evidence: vec![ObservationKey {
            device: DeviceId(7),
            code: ObservationCode::Vital(VitalSign::HeartRate),
            time: T0,
        }],
        config_version: Some("galen-default-2026.2".to_owned()),
    };
    let raised = transition(0, "raised", AlarmState::Active);
    let acknowledged = transition(60, "acknowledged", AlarmState::Acknowledged);
    let latched = transition(90, "latched", AlarmState::Latched);
    let resolved = transition(120, "resolved", AlarmState::Resolved);
    let silent = AlarmTransition {
        rule: "technical.device_silent".to_owned(),
        kind: AlarmKind::Technical,
        device: Some(DeviceId(7)),
        evidence: Vec::new(),
        value: None,
        threshold: None,
        silenced_until: Some(T0.add_seconds(120)),
        ..transition(0, "silenced", AlarmState::Active)
    };
    // Raised; acknowledged; latched; resolved: each prefix of one lifecycle.
    let lifecycle = [raised, acknowledged, latched, resolved];
    let histories: [&[AlarmTransition]; 5] = [
        &lifecycle[..1],
        &lifecycle[..2],
        &lifecycle[..3],
        &lifecycle[..],
        std::slice::from_ref(&silent),
    ];
    histories
        .iter()
        .enumerate()
        .filter_map(|(index, history)| {
            let key = FlagKey {
                patient: PatientId(12),
                number: u32::try_from(index + 1).ok()?,
            };
            alarm_flag(&key, history)
        })
        .collect()
}

fn every_resource() -> Vec<String> {
    let mut lines = Vec::new();
    let patient_resource = patient_to_fhir(&patient());
    lines.push(line(&patient_resource));
    // A client's Patient with content Galen does not model, served back.
    let mut posted = serde_json::to_value(&patient_resource).expect("serialises");
    posted["telecom"] = json!([{ "system": "phone", "value": "+44 113 496 0000", "use": "home" }]);
    posted["address"] = json!([{ "city": "Leeds", "country": "GB" }]);
    posted["maritalStatus"] = json!({ "text": "Married" });
    let posted: Patient = parse_resource(posted.to_string().as_bytes()).expect("parses");
    lines.push(line(&restore_unmapped_patient(&patient(), &posted)));
    for status in [
        DeviceStatus::Active,
        DeviceStatus::Inactive,
        DeviceStatus::EnteredInError,
        DeviceStatus::Unknown,
    ] {
        let mut device = device();
        device.details.status = status;
        lines.push(line(&device_to_fhir(&device, Some(PatientId(12)))));
    }
    let mut bare = device();
    bare.details.manufacturer.clear();
    bare.details.model.clear();
    lines.push(line(&device_to_fhir(&bare, None)));

    let observations = observations();
    assert_eq!(
        observations.len(),
        14,
        "two panels absorb five pressure readings"
    );
    lines.extend(observations.iter().map(line));

    lines.extend(scores().iter().map(line));
    let flags = flags();
    assert_eq!(flags.len(), 5);
    lines.extend(flags.iter().map(line));
    let flag_params = [("patient", "12"), ("status", "active")];
    let mut flag_bundle =
        SearchsetBuilder::new("https://galen.example/fhir", "Flag", &flag_params).total(3);
    for flag in flags.iter().take(3).cloned() {
        flag_bundle = flag_bundle.entry(flag);
    }
    lines.push(line(&flag_bundle.build()));

    let params = [
        ("patient", "Patient/12"),
        ("date", "ge2026-11-23T08:00:00+01:00"),
        ("_count", "5"),
    ];
    let mut bundle = SearchsetBuilder::new("https://galen.example/fhir", "Observation", &params)
        .total(observations.len() as u64)
        .next_cursor(Some("c2VxPTU"));
    for observation in observations.iter().take(5).cloned() {
        bundle = bundle.entry(observation);
    }
    bundle = bundle
        .include(patient_to_fhir(&patient()))
        .include(device_to_fhir(&device(), Some(PatientId(12))));
    lines.push(line(&bundle.build()));
    // Wards and beds, alone and in a searchset.
    let mut unplaced = patient();
    unplaced.details.ward.clear();
    unplaced.details.bed.clear();
    let places = locations_of([&patient(), &unplaced]);
    assert_eq!(places.len(), 2, "a ward and its bed");
    let no_params: [(&str, &str); 0] = [];
    let mut location_bundle =
        SearchsetBuilder::new("https://galen.example/fhir", "Location", &no_params).total(3);
    for key in places.iter().chain([&LocationKey::ward("病棟 2")]) {
        lines.push(line(&location_to_fhir(key)));
        location_bundle = location_bundle.entry(location_to_fhir(key));
    }
    lines.push(line(&location_bundle.build()));
    // What a device measures, for each device status and each vital sign.
    for status in [
        DeviceStatus::Active,
        DeviceStatus::Inactive,
        DeviceStatus::EnteredInError,
        DeviceStatus::Unknown,
    ] {
        let mut device = device();
        device.details.status = status;
        lines.push(line(&device_metric(&device, VitalSign::HeartRate)));
    }
    let metric_params = [("source", "Device/7"), ("_count", "2")];
    let mut metric_bundle =
        SearchsetBuilder::new("https://galen.example/fhir", "DeviceMetric", &metric_params)
            .next_cursor(Some("7.spo2"));
    for vital in VitalSign::ALL {
        lines.push(line(&device_metric(&device(), vital)));
        metric_bundle = metric_bundle.entry(device_metric(&device(), vital));
    }
    lines.push(line(&metric_bundle.build()));
    // The audit trail: every action, every outcome, each kind of resource and source.
    let audit_params = [("patient", "Patient/12"), ("_count", "2")];
    let mut audit_bundle =
        SearchsetBuilder::new("https://galen.example/fhir", "AuditEvent", &audit_params)
            .next_cursor(Some("2"));
    for (index, action) in AuditAction::ALL.into_iter().enumerate() {
        let outcome = AuditOutcome::ALL[index % AuditOutcome::ALL.len()];
        let (resource, source, patient) = match index % 4 {
            0 => ("Patient/12", "10.0.0.7:51234", Some(PatientId(12))),
            1 => (
                "Observation/7.hr.1795421700000000",
                "mqtt",
                Some(PatientId(12)),
            ),
            2 => ("/api/v1/alarms", "[::1]:8080", None),
            _ => ("", "", None),
        };
        let event = audit_event(&AuditEntry {
            seq: index as i64 + 1,
            time: T0,
            actor: if index % 2 == 0 {
                "nurse.ann"
            } else {
                "device:SN-7"
            },
            role: if index % 3 == 0 { "" } else { "nurse" },
            action,
            resource,
            patient,
            outcome,
            source,
            detail: if outcome == AuditOutcome::Success {
                ""
            } else {
                "role nurse may not"
            },
        });
        lines.push(line(&event));
        audit_bundle = audit_bundle.entry(event);
    }
    lines.push(line(&audit_bundle.build()));
    // Consents: generated from records of each purpose, status and recipient kind, served back
    // from a posted one with what Galen does not model, and in a searchset.
    let consent_params = [("patient", "Patient/12"), ("status", "active")];
    let mut consent_bundle =
        SearchsetBuilder::new("https://galen.example/fhir", "Consent", &consent_params).total(4);
    for consent in consents() {
        lines.push(line(&consent));
        consent_bundle = consent_bundle.entry(consent);
    }
    lines.push(line(&consent_bundle.build()));

    let empty: [(&str, &str); 0] = [];
    lines.push(line(
        &SearchsetBuilder::new("https://galen.example/fhir", "Patient", &empty)
            .total(0)
            .build(),
    ));

    let error = Error::element(
        "Observation.valueQuantity.unit",
        Problem::Required,
        "the value needs a unit",
    );
    lines.push(line(&from_error(&error)));
    lines.push(line(
        &OutcomeBuilder::new()
            .error(
                IssueType::NotSupported,
                "search parameter foo: unknown parameter",
            )
            .warning(IssueType::Incomplete, "results were truncated")
            .build(),
    ));
    lines.push(line(&OutcomeBuilder::new().build()));
    let search_error =
        galen_fhir::search::ObservationQuery::parse(&[("date", "2026-13")]).expect_err("month 13");
    lines.push(line(&from_error(&search_error)));

    lines.push(line(
        &CapabilityStatementBuilder::new("galen", env!("CARGO_PKG_VERSION"), T0)
            .base_url("https://galen.example/fhir")
            .patient(&[
                Interaction::Read,
                Interaction::SearchType,
                Interaction::Create,
                Interaction::Update,
            ])
            .device(&[Interaction::Read, Interaction::SearchType])
            .observation(&[
                Interaction::Read,
                Interaction::SearchType,
                Interaction::Create,
            ])
            .flag(&[Interaction::Read, Interaction::SearchType])
            .location(&[Interaction::Read, Interaction::SearchType])
            .device_metric(&[Interaction::Read, Interaction::SearchType])
            .audit_event(&[Interaction::Read, Interaction::SearchType])
            .consent(&[
                Interaction::Read,
                Interaction::SearchType,
                Interaction::Create,
                Interaction::Update,
            ])
            .build(),
    ));
    lines
}

/// Every Consent shape Galen serves: generated from records (each purpose, provision, status and
/// kind of recipient, with and without a period) and a posted one served back.
fn consents() -> Vec<galen_fhir::Consent> {
    use galen_fhir::consent::{consent_from_fhir, consent_to_fhir, served_consent};
    use galen_model::{
        Consent, ConsentId, ConsentProvision, ConsentPurpose, ConsentStatus, NewConsent, Recipient,
    };
    let record =
        |id: i64, purpose, provision, status, recipients: Vec<Recipient>, period: bool| Consent {
            id: ConsentId(id),
            details: NewConsent {
                patient: PatientId(12),
                status,
                purpose,
                provision,
                recipients,
                start: period.then_some(T0),
                end: period.then(|| T0.add_seconds(86_400)),
                dated: T0,
                recorded: T0,
                recorded_by: "nurse.ann".to_owned(),
            },
        };
    let mut served = vec![
        consent_to_fhir(&record(
            1,
            ConsentPurpose::Research,
            ConsentProvision::Permit,
            ConsentStatus::Active,
            Vec::new(),
            false,
        )),
        consent_to_fhir(&record(
            2,
            ConsentPurpose::Sharing,
            ConsentProvision::Deny,
            ConsentStatus::Inactive,
            vec![
                Recipient::Organization("acme-lab".to_owned()),
                Recipient::RelatedPerson("rp-7".to_owned()),
                Recipient::Identifier {
                    system: "urn:oid:1.2.3".to_owned(),
                    value: "LAB-9".to_owned(),
                },
            ],
            true,
        )),
        consent_to_fhir(&record(
            3,
            ConsentPurpose::Research,
            ConsentProvision::Deny,
            ConsentStatus::EnteredInError,
            vec![Recipient::Organization("acme-lab".to_owned())],
            true,
        )),
    ];
    let posted: galen_fhir::Consent = parse_resource(
        json!({
            "resourceType": "Consent",
            "status": "active",
            "scope": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy" }] },
            "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentcategorycodes", "code": "npp" }] }],
            "patient": { "reference": "Patient/12" },
            "dateTime": "2026-11-24",
            "performer": [{ "reference": "Patient/12" }],
            "sourceAttachment": { "contentType": "application/pdf", "url": "https://docs.example/consent/1.pdf" },
            "provision": {
                "type": "deny",
                "period": { "start": "2026-11-24", "end": "2026-12-31" },
                "actor": [{
                    "role": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP" }] },
                    "reference": { "reference": "Organization/acme-lab" }
                }],
                "action": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "disclose" }] }]
            }
        })
        .to_string()
        .as_bytes(),
    )
    .expect("a Consent");
    let details = consent_from_fhir(&posted, T0, "nurse.ann").expect("maps");
    served.push(served_consent(
        &Consent {
            id: ConsentId(4),
            details,
        },
        Some(&posted),
    ));
    served
}

#[test]
fn every_resource_galen_writes_is_valid_fhir_r4() {
    let lines = every_resource();
    let output = validate(&lines);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "FHIR validation failed:\n{stderr}\n{stdout}\ninput:\n{}",
        lines.join("\n")
    );
    assert!(
        stdout.contains(&format!("validated {} resources, 0 failed", lines.len())),
        "{stdout}"
    );
}

#[test]
fn every_kind_is_covered() {
    let lines = every_resource();
    let kinds: std::collections::BTreeSet<String> = lines
        .iter()
        .map(|text| {
            let resource: Resource = serde_json::from_str(text).expect("a resource");
            resource.resource_type().to_owned()
        })
        .collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "AuditEvent",
            "Bundle",
            "CapabilityStatement",
            "Consent",
            "Device",
            "DeviceMetric",
            "Flag",
            "Location",
            "Observation",
            "OperationOutcome",
            "Patient"
        ]
    );
    let observations: Vec<Value> = observations()
        .iter()
        .map(|observation| serde_json::to_value(observation).expect("serialises"))
        .collect();
    let has = |test: &dyn Fn(&Value) -> bool| observations.iter().any(test);
    assert!(has(&|o| o["code"]["coding"][0]["code"] == "85354-9"
        && o["component"].as_array().map(Vec::len) == Some(3)));
    assert!(has(&|o| o["code"]["coding"][1]["code"] == "59408-5"));
    assert!(has(&|o| o.get("dataAbsentReason").is_some()));
    assert!(has(&|o| o["component"][1]
        .get("dataAbsentReason")
        .is_some()));
    assert!(has(&|o| o.get("subject").is_none()));
}

/// The validator is not a rubber stamp: broken resources fail, named by line.
#[test]
fn the_validator_refuses_broken_resources() {
    let valid = line(&patient_to_fhir(&patient()));
    let mut no_value =
        serde_json::to_value(vital_observation(&reading(VitalSign::HeartRate, 0, 72.0)))
            .expect("serialises");
    no_value
        .as_object_mut()
        .expect("object")
        .remove("valueQuantity");
    let mut wrong_unit =
        serde_json::to_value(vital_observation(&reading(VitalSign::Spo2, 0, 97.0)))
            .expect("serialises");
    wrong_unit["valueQuantity"]["code"] = json!("/min");
    let mut no_status = serde_json::to_value(vital_observation(&reading(VitalSign::Spo2, 0, 97.0)))
        .expect("serialises");
    no_status.as_object_mut().expect("object").remove("status");
    let lines = vec![
        valid.clone(),
        no_value.to_string(),
        valid,
        wrong_unit.to_string(),
        no_status.to_string(),
        json!({ "resourceType": "Patient", "birthDate": "1950-02-30" }).to_string(),
        {
            let mut consent = serde_json::to_value(&consents()[0]).expect("serialises");
            consent
                .as_object_mut()
                .expect("object")
                .remove("policyRule");
            consent.to_string()
        },
    ];
    let output = validate(&lines);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 2: Observation: vs-2"), "{stderr}");
    assert!(
        stderr.contains("line 4: Observation:") && stderr.contains("'/min'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 5: Observation:") && stderr.contains("status"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 6: Patient:") && stderr.contains("birthDate"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("line 1:") && !stderr.contains("line 3:"),
        "{stderr}"
    );
    assert!(stderr.contains("line 7: Consent: ppc-1"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("validated 7 resources, 5 failed"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
