use galen_model::{HumanName, Identifier, NewDevice};

use super::*;
use crate::outcome::IssueType;

fn observation_query(params: &[(&str, &str)]) -> ObservationQuery {
    ObservationQuery::parse(params).unwrap_or_else(|error| panic!("{params:?}: {error}"))
}

/// The parameter and issue type of a refused search.
fn refusal(result: Result<impl std::fmt::Debug>) -> (String, IssueType, String) {
    match result {
        Err(Error::Search {
            parameter,
            issue,
            message,
        }) => (parameter, issue, message),
        other => panic!("expected a search error, got {other:?}"),
    }
}

fn check_refused(params: &[(&str, &str)], parameter: &str, issue: IssueType, words: &str) {
    let (found, found_issue, message) = refusal(ObservationQuery::parse(params));
    assert_eq!(found, parameter, "{params:?}: {message}");
    assert_eq!(found_issue, issue, "{params:?}: {message}");
    assert!(message.contains(words), "{params:?}: {message}");
}

fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap_or_else(|error| panic!("{text}: {error}"))
}

#[test]
fn unknown_and_unsupported_parameters_are_errors() {
    check_refused(
        &[("foo", "1")],
        "foo",
        IssueType::NotSupported,
        "unknown parameter",
    );
    check_refused(
        &[("subject.name", "Smith")],
        "subject.name",
        IssueType::NotSupported,
        "chained",
    );
    check_refused(
        &[("_include", "Observation:subject")],
        "_include",
        IssueType::NotSupported,
        "_include is not supported",
    );
    check_refused(
        &[("code:text", "heart")],
        "code:text",
        IssueType::NotSupported,
        "modifier :text",
    );
    check_refused(
        &[("date:missing", "true")],
        "date:missing",
        IssueType::NotSupported,
        "modifier :missing",
    );
    check_refused(
        &[("_count:x", "1")],
        "_count:x",
        IssueType::NotSupported,
        "takes no modifier",
    );
    // The message lists what is supported.
    let (_, _, message) = refusal(ObservationQuery::parse(&[("value-quantity", "72")]));
    assert!(
        message.contains("patient, subject, device, code, category, date"),
        "{message}"
    );
}

#[test]
fn ignored_and_empty_parameters_change_nothing() {
    let query = observation_query(&[("_format", "json"), ("_pretty", "true"), ("code", "")]);
    assert_eq!(query, ObservationQuery::default());
    assert!(!query.matches_nothing());
}

#[test]
fn count_is_bounded() {
    assert_eq!(observation_query(&[]).paging.count, DEFAULT_COUNT);
    assert_eq!(observation_query(&[("_count", "0")]).paging.count, 0);
    assert_eq!(observation_query(&[("_count", "1000")]).paging.count, 1000);
    assert_eq!(
        observation_query(&[("_count", "1001")]).paging.count,
        MAX_COUNT
    );
    assert_eq!(
        observation_query(&[("_count", "99999999999999999999999")])
            .paging
            .count,
        MAX_COUNT,
        "a whole number too large for usize is still just too large"
    );
}

#[test]
fn malformed_counts_are_refused() {
    for value in ["-1", "1.5", "ten", "+5"] {
        check_refused(
            &[("_count", value)],
            "_count",
            IssueType::Value,
            "page size",
        );
    }
    check_refused(
        &[("_count", "5"), ("_count", "6")],
        "_count",
        IssueType::Value,
        "only once",
    );
}

#[test]
fn sort_keys_are_checked_per_type() {
    let query = observation_query(&[("_sort", "-date")]);
    assert_eq!(
        query.sort,
        [SortKey {
            key: ObservationSortKey::Date,
            descending: true
        }]
    );
    assert!(query.newest_first());
    assert!(!observation_query(&[("_sort", "date")]).newest_first());
    check_refused(
        &[("_sort", "family")],
        "_sort",
        IssueType::Value,
        "sort keys here: date",
    );
    check_refused(
        &[("_sort", "date,-date")],
        "_sort",
        IssueType::Value,
        "twice",
    );
    check_refused(
        &[("_sort", "date,")],
        "_sort",
        IssueType::Value,
        "cannot sort by \"\"",
    );
    let patients = PatientQuery::parse(&[("_sort", "-birthdate,family")]).expect("patient sort");
    assert_eq!(
        patients.sort,
        [
            SortKey {
                key: PatientSortKey::Birthdate,
                descending: true
            },
            SortKey {
                key: PatientSortKey::Family,
                descending: false
            },
        ]
    );
    assert!(DeviceQuery::parse(&[("_sort", "date")]).is_err());
}

#[test]
fn tokens_parse_every_form() {
    let parse = |text: &str| TokenParam::parse(text).expect(text);
    assert_eq!(
        parse("http://loinc.org|8867-4"),
        TokenParam {
            system: TokenSystem::Exact("http://loinc.org".to_owned()),
            code: Some("8867-4".to_owned())
        }
    );
    assert_eq!(
        parse("|8867-4"),
        TokenParam {
            system: TokenSystem::None,
            code: Some("8867-4".to_owned())
        }
    );
    assert_eq!(
        parse("8867-4"),
        TokenParam {
            system: TokenSystem::Any,
            code: Some("8867-4".to_owned())
        }
    );
    assert_eq!(
        parse("http://loinc.org|"),
        TokenParam {
            system: TokenSystem::Exact("http://loinc.org".to_owned()),
            code: None
        }
    );
    assert_eq!(
        parse(r"urn:x|a\|b\,c\\"),
        TokenParam {
            system: TokenSystem::Exact("urn:x".to_owned()),
            code: Some(r"a|b,c\".to_owned())
        }
    );
    assert!(TokenParam::parse("|").is_err());
    assert!(TokenParam::parse("a|b|c").is_err());
    let loinc_any = parse("http://loinc.org|");
    assert!(loinc_any.matches(Some("http://loinc.org"), "anything"));
    assert!(!loinc_any.matches(None, "anything"));
    assert!(parse("|x").matches(None, "x"));
    assert!(!parse("|x").matches(Some("urn:s"), "x"));
    assert!(parse("x").matches(Some("urn:s"), "x"));
    assert!(!parse("x").matches(Some("urn:s"), "X"));
}

#[test]
fn codes_resolve_to_what_galen_serves() {
    let codes = |value: &str| {
        observation_query(&[("code", value)])
            .codes
            .expect("restricted")
            .into_iter()
            .collect::<Vec<_>>()
    };
    let vital = ObservationCode::Vital;
    assert_eq!(codes("8867-4"), [vital(VitalSign::HeartRate)]);
    assert_eq!(codes("http://loinc.org|59408-5"), [vital(VitalSign::Spo2)]);
    assert_eq!(codes("http://loinc.org|2708-6"), [vital(VitalSign::Spo2)]);
    assert_eq!(
        codes("urn:iso:std:iso:11073:10101|150456"),
        [vital(VitalSign::Spo2)]
    );
    assert_eq!(codes("85354-9"), [ObservationCode::BloodPressurePanel]);
    assert_eq!(
        codes("8867-4,9279-1"),
        [
            vital(VitalSign::HeartRate),
            vital(VitalSign::RespiratoryRate)
        ]
    );
    assert_eq!(codes("http://snomed.info/sct|364075005"), []);
    assert_eq!(codes("|8867-4"), [], "Galen's codings always have a system");
    assert_eq!(
        codes("http://loinc.org|").len(),
        10,
        "every LOINC-coded Observation"
    );
    // AND of two different codes: nothing can match.
    let both = observation_query(&[("code", "8867-4"), ("code", "9279-1")]);
    assert!(both.matches_nothing());
    let vital_signs = observation_query(&[("category", "vital-signs")])
        .codes
        .expect("restricted");
    assert!(!vital_signs.contains(&vital(VitalSign::BatteryCharge)));
    assert!(vital_signs.contains(&ObservationCode::BloodPressurePanel));
    assert!(observation_query(&[("category", "laboratory")]).matches_nothing());
}

#[test]
fn references_accept_type_slash_id_and_bare_ids() {
    let patients = |params: &[(&str, &str)]| {
        observation_query(params)
            .patients
            .expect("restricted")
            .into_iter()
            .collect::<Vec<_>>()
    };
    assert_eq!(patients(&[("patient", "Patient/12")]), [PatientId(12)]);
    assert_eq!(patients(&[("patient", "12")]), [PatientId(12)]);
    assert_eq!(patients(&[("subject:Patient", "12")]), [PatientId(12)]);
    assert_eq!(
        patients(&[("subject", "Patient/12,Patient/13")]),
        [PatientId(12), PatientId(13)]
    );
    assert_eq!(
        patients(&[("subject", "12,13"), ("patient", "13")]),
        [PatientId(13)],
        "repeated parameters intersect"
    );
    assert_eq!(
        patients(&[("patient", "abc")]),
        [],
        "a valid id Galen never issues matches nothing"
    );
    let devices = observation_query(&[("device", "Device/7")]).devices;
    assert_eq!(devices, Some([DeviceId(7)].into_iter().collect()));
    check_refused(
        &[("subject", "Group/1")],
        "subject",
        IssueType::Value,
        "not a reference to a Patient",
    );
    check_refused(
        &[("subject:Group", "1")],
        "subject:Group",
        IssueType::Value,
        "Patient resources only",
    );
    check_refused(
        &[("patient", "Device/1")],
        "patient",
        IssueType::Value,
        "not a reference to a Patient",
    );
    check_refused(
        &[("patient", "https://other/fhir/Patient/1")],
        "patient",
        IssueType::Value,
        "absolute references",
    );
    check_refused(
        &[("patient", "Patient/1/_history/2")],
        "patient",
        IssueType::Value,
        "not a reference",
    );
    check_refused(
        &[("patient", "a b")],
        "patient",
        IssueType::Value,
        "not a valid FHIR id",
    );
    check_refused(
        &[("patient", "Patient/")],
        "patient",
        IssueType::Value,
        "not a valid FHIR id",
    );
    check_refused(
        &[("patient:missing", "true")],
        "patient:missing",
        IssueType::NotSupported,
        "modifier",
    );
}

#[test]
fn dates_make_a_window() {
    let query = observation_query(&[
        ("date", "ge2026-11-23T08:00:00+01:00"),
        ("date", "lt2026-11-24"),
    ]);
    assert_eq!(
        query.window.intervals(),
        [(at("2026-11-23T07:00:00Z"), at("2026-11-24T00:00:00Z"))]
    );
    let either = observation_query(&[("date", "2026-11-23,2026-11-25")]);
    assert_eq!(
        either.window.intervals(),
        [
            (at("2026-11-23T00:00:00Z"), at("2026-11-24T00:00:00Z")),
            (at("2026-11-25T00:00:00Z"), at("2026-11-26T00:00:00Z")),
        ]
    );
    let disjoint = observation_query(&[("date", "lt2026"), ("date", "gt2026")]);
    assert!(disjoint.matches_nothing());
    check_refused(
        &[("date", "2026-11-23T08:00")],
        "date",
        IssueType::Value,
        "needs an offset",
    );
    check_refused(
        &[("date", "ap2026")],
        "date",
        IssueType::Value,
        "not supported",
    );
}

#[test]
fn observation_ids_and_keys() {
    let key = ObservationKey {
        device: DeviceId(7),
        code: ObservationCode::Vital(VitalSign::HeartRate),
        time: at("2026-11-23T08:15:00Z"),
    };
    let query = observation_query(&[("_id", &key.id())]);
    assert_eq!(query.ids, Some([key].into_iter().collect()));
    assert_eq!(query.vitals_to_read(), [VitalSign::HeartRate]);
    assert!(query.matches_key(&key, Some(PatientId(1))));
    let other = ObservationKey {
        time: key.time.add_micros(1),
        ..key
    };
    assert!(!query.matches_key(&other, Some(PatientId(1))));
    assert!(observation_query(&[("_id", "unknown-id")]).matches_nothing());
    check_refused(
        &[("_id", "bad id!")],
        "_id",
        IssueType::Value,
        "not a valid FHIR id",
    );

    let filtered = observation_query(&[
        ("patient", "1"),
        ("device", "7"),
        ("code", "8867-4"),
        ("date", "2026-11-23"),
    ]);
    assert!(filtered.matches_key(&key, Some(PatientId(1))));
    assert!(!filtered.matches_key(&key, Some(PatientId(2))));
    assert!(
        !filtered.matches_key(&key, None),
        "unassigned data has no patient"
    );
    let tomorrow = ObservationKey {
        time: at("2026-11-24T00:00:00Z"),
        ..key
    };
    assert!(!filtered.matches_key(&tomorrow, Some(PatientId(1))));
}

#[test]
fn vitals_to_read_cover_blood_pressure_grouping() {
    let query = observation_query(&[("code", "8480-6")]);
    assert_eq!(
        query.vitals_to_read(),
        [
            VitalSign::SystolicBp,
            VitalSign::DiastolicBp,
            VitalSign::MeanArterialPressure
        ]
    );
    assert_eq!(observation_query(&[]).vitals_to_read(), VitalSign::ALL);
}

#[test]
fn cursor_is_kept_opaque() {
    let query = observation_query(&[("_cursor", "abc/def==")]);
    assert_eq!(query.paging.cursor.as_deref(), Some("abc/def=="));
    check_refused(
        &[("_cursor", "a"), ("_cursor", "b")],
        "_cursor",
        IssueType::Value,
        "only once",
    );
}

fn patient(id: i64, family: &str, given: &str, birth: &str, sex: Sex, ward: &str) -> Patient {
    Patient {
        id: PatientId(id),
        details: NewPatient {
            identifier: Identifier {
                system: "urn:oid:1.2.3.4".to_owned(),
                value: format!("MRN-{id}"),
            },
            name: HumanName {
                family: family.to_owned(),
                given: given.to_owned(),
            },
            birth_date: NewPatient::parse_birth_date(birth).expect("date"),
            sex,
            ward: ward.to_owned(),
            bed: format!("{id}"),
        },
    }
}

fn patients() -> Vec<Patient> {
    vec![
        patient(
            1,
            "Smith",
            "Mary Ann",
            "1950-02-28",
            Sex::Female,
            "Cardiology",
        ),
        patient(2, "Smithers", "John", "1980-07-01", Sex::Male, "ICU"),
        patient(3, "Jones", "Ann", "1950-03-01", Sex::Female, "ICU"),
    ]
}

fn matching(params: &[(&str, &str)]) -> Vec<i64> {
    let query = PatientQuery::parse(params).unwrap_or_else(|error| panic!("{params:?}: {error}"));
    patients()
        .iter()
        .filter(|patient| query.matches(patient))
        .map(|patient| patient.id.0)
        .collect()
}

#[test]
fn patient_filters() {
    assert_eq!(matching(&[]), [1, 2, 3]);
    assert_eq!(
        matching(&[("family", "smith")]),
        [1, 2],
        "case-insensitive prefix"
    );
    assert_eq!(matching(&[("family:exact", "Smith")]), [1]);
    assert_eq!(matching(&[("family:exact", "smith")]), Vec::<i64>::new());
    assert_eq!(matching(&[("family:contains", "THER")]), [2]);
    assert_eq!(
        matching(&[("given", "ann")]),
        [1, 3],
        "every given name counts"
    );
    assert_eq!(matching(&[("name", "jo")]), [2, 3], "family or given");
    assert_eq!(matching(&[("name", "smith"), ("given", "john")]), [2]);
    assert_eq!(matching(&[("birthdate", "1950")]), [1, 3]);
    assert_eq!(matching(&[("birthdate", "1950-02")]), [1]);
    assert_eq!(matching(&[("birthdate", "ge1950-03-01")]), [2, 3]);
    assert_eq!(matching(&[("birthdate", "lt1950-03-01")]), [1]);
    assert_eq!(matching(&[("birthdate", "sa1950-02-28")]), [2, 3]);
    assert_eq!(matching(&[("gender", "female")]), [1, 3]);
    assert_eq!(
        matching(&[("gender", "http://hl7.org/fhir/administrative-gender|male")]),
        [2]
    );
    assert_eq!(matching(&[("gender", "male,female")]), [1, 2, 3]);
    assert_eq!(matching(&[("identifier", "urn:oid:1.2.3.4|MRN-2")]), [2]);
    assert_eq!(matching(&[("identifier", "MRN-3")]), [3]);
    assert_eq!(
        matching(&[("identifier", "urn:other|MRN-3")]),
        Vec::<i64>::new()
    );
    assert_eq!(matching(&[("_id", "1,3")]), [1, 3]);
    assert_eq!(matching(&[("_id", "x")]), Vec::<i64>::new());
    assert_eq!(matching(&[("ward", "icu")]), [2, 3]);
    let (parameter, issue, _) = refusal(PatientQuery::parse(&[("gender", "f")]));
    assert_eq!((parameter.as_str(), issue), ("gender", IssueType::Value));
    let (parameter, issue, _) = refusal(PatientQuery::parse(&[("name:below", "x")]));
    assert_eq!(
        (parameter.as_str(), issue),
        ("name:below", IssueType::NotSupported)
    );
    let (parameter, _, _) = refusal(PatientQuery::parse(&[("birthdate", "1950-02-30")]));
    assert_eq!(parameter, "birthdate");
}

#[test]
fn patients_sort_stably() {
    let query = PatientQuery::parse(&[("_sort", "-birthdate")]).expect("sort");
    let mut sorted = patients();
    query.sort_patients(&mut sorted);
    let ids: Vec<i64> = sorted.iter().map(|patient| patient.id.0).collect();
    assert_eq!(ids, [2, 3, 1]);
    // Ward sorts by ward then bed, so the bed breaks the tie in ICU before -_id is consulted.
    let query = PatientQuery::parse(&[("_sort", "ward,-_id")]).expect("sort");
    query.sort_patients(&mut sorted);
    let ids: Vec<i64> = sorted.iter().map(|patient| patient.id.0).collect();
    assert_eq!(ids, [1, 2, 3]);
    let query = PatientQuery::parse(&[("_sort", "given,-family")]).expect("sort");
    query.sort_patients(&mut sorted);
    let ids: Vec<i64> = sorted.iter().map(|patient| patient.id.0).collect();
    assert_eq!(ids, [3, 2, 1]);
    let unsorted = PatientQuery::parse(&[("gender", "female")]).expect("no sort");
    let mut kept = patients();
    kept.reverse();
    unsorted.sort_patients(&mut kept);
    let ids: Vec<i64> = kept.iter().map(|patient| patient.id.0).collect();
    assert_eq!(ids, [3, 2, 1], "no _sort keeps the given order");
}

fn device(id: i64, serial: &str, kind: DeviceKind, status: DeviceStatus) -> Device {
    Device {
        id: DeviceId(id),
        details: NewDevice {
            serial: serial.to_owned(),
            manufacturer: "Acme Medical".to_owned(),
            model: format!("M{id}"),
            kind,
            status,
        },
    }
}

#[test]
fn device_filters() {
    let devices = [
        (
            device(1, "SN-1", DeviceKind::Monitor, DeviceStatus::Active),
            Some(PatientId(5)),
        ),
        (
            device(2, "SN-2", DeviceKind::PulseOximeter, DeviceStatus::Inactive),
            None,
        ),
        (
            device(3, "SN-3", DeviceKind::PulseOximeter, DeviceStatus::Active),
            Some(PatientId(6)),
        ),
    ];
    let matching = |params: &[(&str, &str)]| -> Vec<i64> {
        let query =
            DeviceQuery::parse(params).unwrap_or_else(|error| panic!("{params:?}: {error}"));
        devices
            .iter()
            .filter(|(device, patient)| query.matches(device, *patient))
            .map(|(device, _)| device.id.0)
            .collect()
    };
    assert_eq!(matching(&[("status", "active")]), [1, 3]);
    assert_eq!(matching(&[("type", "pulse_oximeter")]), [2, 3]);
    assert_eq!(
        matching(&[("type", &format!("{}|monitor", codes::DEVICE_KIND_SYSTEM))]),
        [1]
    );
    assert_eq!(
        matching(&[(
            "identifier",
            &format!("{}|SN-2", codes::DEVICE_SERIAL_SYSTEM)
        )]),
        [2]
    );
    assert_eq!(matching(&[("patient", "Patient/6")]), [3]);
    assert_eq!(matching(&[("manufacturer", "acme")]), [1, 2, 3]);
    assert_eq!(matching(&[("model", "M2")]), [2]);
    assert_eq!(matching(&[("_id", "2,3"), ("status", "active")]), [3]);
    assert!(DeviceQuery::parse(&[("status", "broken")]).is_err());
    assert!(DeviceQuery::parse(&[("type", "urn:other|monitor")]).is_err());
    assert!(DeviceQuery::parse(&[("subject", "Patient/1")]).is_err());
    let query = DeviceQuery::parse(&[("_sort", "-identifier")]).expect("sort");
    let mut sorted: Vec<Device> = devices.iter().map(|(device, _)| device.clone()).collect();
    query.sort_devices(&mut sorted);
    let ids: Vec<i64> = sorted.iter().map(|device| device.id.0).collect();
    assert_eq!(ids, [3, 2, 1]);
}
