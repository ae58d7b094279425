//! Early-warning scores and alarms over FHIR, end to end against the real binary: a monitor's
//! measurements drive the clinical engine to a known NEWS2 score (8, high: RCP NEWS2 2017, chart 1)
//! and a high-priority NEWS2 alarm; the scores are then read and searched as `survey`
//! Observations and the alarm as a Flag through its lifecycle (raised, acknowledged, closed), and
//! every value is compared with what Galen's native API answers for the same records. Every
//! resource served is checked by the independent R4 validator (`tests/interop/fhir_validate.py`).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Answer, TOKEN, exchange, micros_to_rfc3339, post, request, start_with_args};
use serde_json::{Value, json};

const FHIR_JSON: &str = "application/fhir+json";
const SCORE_TABLE: &str = "https://galen.invalid/fhir/CodeSystem/score-table";
const ALARM_EXTENSION: &str = "https://galen.invalid/fhir/StructureDefinition/alarm";
const SECOND: i64 = 1_000_000;

/// Every resource Galen answered with, for the independent validator.
#[derive(Default)]
struct Served(Vec<String>);

impl Served {
    fn keep(&mut self, answer: &Answer) -> Value {
        let value = answer.json();
        if value.get("resourceType").is_some() {
            self.0.push(value.to_string());
        }
        value
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

fn fhir_get(address: &str, path: &str) -> Answer {
    exchange(
        address,
        "GET",
        path,
        &[("Accept", FHIR_JSON)],
        None,
        Some(TOKEN),
    )
}

/// A FHIR GET that must succeed; its resource is kept for the validator.
fn get_ok(address: &str, path: &str, served: &mut Served) -> Value {
    let answer = fhir_get(address, path);
    assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    served.keep(&answer)
}

fn native(address: &str, path: &str) -> Value {
    let (status, body) = request(address, "GET", path, None).expect("request");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("json")
}

fn entries(bundle: &Value) -> Vec<Value> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| entry["resource"].clone())
        .collect()
}

fn ids(resources: &[Value]) -> Vec<String> {
    resources
        .iter()
        .map(|resource| resource["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The path and query of a Bundle's `next` link.
fn next_link(bundle: &Value) -> Option<String> {
    let link = bundle["link"]
        .as_array()?
        .iter()
        .find(|link| link["relation"] == "next")?["url"]
        .as_str()?
        .to_owned();
    let start = link.find("/fhir/")?;
    Some(link[start..].to_owned())
}

/// Every resource of a search, following `next` links.
fn all_pages(address: &str, first: &str, served: &mut Served) -> (Vec<Value>, usize) {
    let mut path = first.to_owned();
    let mut resources = Vec::new();
    let mut pages = 0;
    loop {
        let bundle = get_ok(address, &path, served);
        assert_eq!(bundle["type"], "searchset");
        resources.extend(entries(&bundle));
        pages += 1;
        assert!(pages < 100, "paging does not end");
        match next_link(&bundle) {
            Some(next) => path = next,
            None => return (resources, pages),
        }
    }
}

fn micros(text: &Value) -> i64 {
    let time = time::OffsetDateTime::parse(
        text.as_str().expect("a time"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    (time.unix_timestamp_nanos() / 1000) as i64
}

/// The native API's stored scores of one table, one per instant (the last stored at each): what
/// the FHIR ids name.
fn native_scores(address: &str, patient: i64, table: &str) -> Vec<Value> {
    let answer = native(
        address,
        &format!("/api/v1/patients/{patient}/scores?table={table}"),
    );
    let mut scores: Vec<Value> = Vec::new();
    for score in answer["scores"].as_array().expect("scores") {
        if scores
            .last()
            .is_some_and(|last| last["time"] == score["time"])
        {
            scores.pop();
        }
        scores.push(score.clone());
    }
    scores
}

fn score_id(table: &str, patient: i64, score: &Value) -> String {
    format!("score.{table}.{patient}.{}", micros(&score["time"]))
}

/// Checks a score Observation against the native record it was made from.
fn assert_score_matches(observation: &Value, native: &Value, table: &str, patient: i64) {
    let id = score_id(table, patient, native);
    assert_eq!(observation["id"], id.as_str());
    assert_eq!(observation["resourceType"], "Observation");
    assert_eq!(observation["category"][0]["coding"][0]["code"], "survey");
    assert_eq!(observation["code"]["coding"][0]["system"], SCORE_TABLE);
    assert_eq!(observation["code"]["coding"][0]["code"], table);
    assert_eq!(
        observation["subject"]["reference"],
        format!("Patient/{patient}")
    );
    assert_eq!(observation["effectiveDateTime"], native["time"], "{id}");
    assert_eq!(
        observation["valueQuantity"]["value"], native["total"],
        "{id}"
    );
    assert_eq!(observation["valueQuantity"]["code"], "{score}");
    let complete = native["complete"].as_bool().expect("complete");
    assert_eq!(
        observation["status"],
        if complete { "final" } else { "preliminary" },
        "{id}"
    );
    assert_eq!(
        observation["valueQuantity"].get("comparator").cloned(),
        (!complete).then(|| json!(">=")),
        "{id}: an incomplete total is a lower bound"
    );
    assert_eq!(
        observation["interpretation"][0]["coding"][0]["code"], native["band"],
        "{id}"
    );
    // One component per parameter: points as scored, missing ones absent with a reason.
    let components: BTreeMap<String, Value> = observation["component"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|component| {
            (
                component["code"]["coding"][0]["code"]
                    .as_str()
                    .expect("parameter")
                    .to_owned(),
                component.clone(),
            )
        })
        .collect();
    let points = native["points"].as_array().expect("points");
    let missing = native["missing"].as_array().expect("missing");
    assert_eq!(components.len(), points.len() + missing.len(), "{id}");
    for scored in points {
        let parameter = scored["parameter"].as_str().expect("parameter");
        let component = &components[parameter];
        assert_eq!(
            component["valueQuantity"]["value"], scored["points"],
            "{id} {parameter}"
        );
    }
    for absent in missing {
        let parameter = absent["parameter"].as_str().expect("parameter");
        assert!(
            components[parameter].get("dataAbsentReason").is_some(),
            "{id} {parameter}"
        );
    }
}

/// The alarm log grouped by alarm: each alarm's transitions in order.
fn native_alarms(address: &str, patient: i64) -> BTreeMap<String, Vec<Value>> {
    let log = native(
        address,
        &format!("/api/v1/alarms/log?patient={patient}&limit=10000"),
    );
    let mut alarms: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for event in log["events"].as_array().expect("events") {
        alarms
            .entry(event["alarm"].as_str().expect("alarm").to_owned())
            .or_default()
            .push(event.clone());
    }
    alarms
}

/// Waits until the alarm log has a transition satisfying `test`.
fn wait_for_log(address: &str, patient: i64, test: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = native_alarms(address, patient)
            .into_values()
            .flatten()
            .find(|event| test(event));
        if let Some(event) = found {
            return event;
        }
        assert!(Instant::now() < deadline, "the alarm log never had it");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lifecycle(flag: &Value, name: &str) -> Option<Value> {
    let alarm = flag["extension"]
        .as_array()?
        .iter()
        .find(|extension| extension["url"] == ALARM_EXTENSION)?;
    let sub = alarm["extension"]
        .as_array()?
        .iter()
        .find(|sub| sub["url"] == name)?;
    sub.as_object()?
        .iter()
        .find(|(key, _)| key.starts_with("value"))
        .map(|(_, value)| value.clone())
}

fn priority_code(flag: &Value) -> Value {
    flag["extension"][0]["valueCodeableConcept"]["coding"][0]["code"].clone()
}

/// Checks a Flag against the alarm's transitions in the native log.
fn assert_flag_matches(flag: &Value, transitions: &[Value]) {
    let last = transitions.last().expect("transitions");
    let id = last["alarm"].as_str().expect("alarm");
    assert_eq!(flag["resourceType"], "Flag");
    assert_eq!(flag["id"], id);
    assert_eq!(
        flag["subject"]["reference"],
        format!("Patient/{}", last["patient"])
    );
    let resolved = last["state"] == "resolved";
    assert_eq!(
        flag["status"],
        if resolved { "inactive" } else { "active" },
        "{id}"
    );
    assert_eq!(
        lifecycle(flag, "state"),
        Some(last["state"].clone()),
        "{id}"
    );
    assert_eq!(
        lifecycle(flag, "lastTransition"),
        Some(last["transition"].clone()),
        "{id}"
    );
    assert_eq!(
        lifecycle(flag, "escalationLevel"),
        Some(last["escalation_level"].clone())
    );
    let priority = match last["priority"].as_str() {
        Some("low") => "PL",
        Some("medium") => "PM",
        Some("high") => "PH",
        other => panic!("priority {other:?}"),
    };
    assert_eq!(priority_code(flag), priority, "{id}");
    assert_eq!(flag["code"]["coding"][0]["code"], last["rule"]);
    assert_eq!(flag["code"]["text"], last["message"]);
    assert_eq!(flag["period"]["start"], last["raised_at"], "{id}");
    assert_eq!(
        flag["period"].get("end").cloned(),
        resolved.then(|| last["time"].clone()),
        "{id}"
    );
    assert_eq!(flag["meta"]["lastUpdated"], last["time"]);
    let kind = last["kind"].as_str().expect("kind");
    let kinds: Vec<&Value> = flag["category"]
        .as_array()
        .expect("category")
        .iter()
        .map(|category| &category["coding"][0]["code"])
        .collect();
    assert!(kinds.contains(&&json!(kind)), "{id}: {kinds:?}");
}

#[test]
fn scores_and_alarms_over_fhir_match_the_native_api() {
    let directory = tempfile::tempdir().expect("temp dir");
    let config = common::quiet_clinical_config(directory.path());
    let server = start_with_args(
        &directory.path().join("data"),
        &["--clinical-config", &config],
    );
    let address = server.address.as_str();
    let mut served = Served::default();

    let patient = post(
        address,
        "/api/v1/patients",
        &json!({
            "identifier": { "system": "urn:oid:1.2.3", "value": "MRN-NEWS2" },
            "name": { "family": "Nightingale", "given": "Florence" },
            "birth_date": "1950-05-12", "sex": "female", "ward": "A", "bed": "A-1"
        }),
    );
    let patient = patient["id"].as_i64().expect("patient id");
    let device = post(
        address,
        "/api/v1/devices",
        &json!({ "serial": "MON-NEWS2" }),
    );
    let device = device["id"].as_i64().expect("device id");
    let start = now_micros() - 600 * SECOND;
    post(
        address,
        "/api/v1/assignments",
        &json!({ "device": device, "patient": patient, "start": micros_to_rfc3339(start) }),
    );

    // Ten rounds of vital signs 10 s apart, the last 10 s ago. NEWS2 chart 1: RR 24 scores 2,
    // SpO2 93 (scale 1) 2, SBP 105 1, pulse 115 2, temperature 38.4 1: 8 before ACVPU and air
    // or oxygen are entered (a lower bound, already high), and no limit alarm is crossed.
    let base = now_micros() - 100 * SECOND;
    let mut items = Vec::new();
    for round in 0..10 {
        let time = micros_to_rfc3339(base + round * 10 * SECOND);
        for (code, value, unit) in [
            ("respiratory_rate", 24.0, "/min"),
            ("spo2", 93.0, "%"),
            ("systolic_bp", 105.0, "mmHg"),
            ("diastolic_bp", 70.0, "mmHg"),
            ("heart_rate", 115.0, "/min"),
            ("temperature", 38.4, "Cel"),
        ] {
            items.push(json!({ "device": "MON-NEWS2", "code": code, "value": value, "unit": unit, "time": time }));
        }
    }
    let answer = post(address, "/api/v1/measurements", &Value::Array(items));
    assert_eq!(answer["accepted"], 60, "{answer}");
    // A nurse enters Alert and air: the score is complete.
    post(
        address,
        &format!("/api/v1/patients/{patient}/observations"),
        &json!({ "by": "nurse.jones", "consciousness": "A", "oxygen": "air" }),
    );
    // The NEWS2 trigger (high band, 60 s delay, re-confirmed) raised a high-priority alarm.
    let raised = wait_for_log(address, patient, |event| {
        event["rule"] == "score.news2" && event["transition"] == "raised"
    });
    assert_eq!(raised["priority"], "high");
    let alarm_id = raised["alarm"].as_str().expect("alarm id").to_owned();
    // The stored scores have caught up once the complete score is there.
    let deadline = Instant::now() + Duration::from_secs(20);
    let news2 = loop {
        let scores = native_scores(address, patient, "news2");
        if scores.last().is_some_and(|last| last["complete"] == true) {
            break scores;
        }
        assert!(Instant::now() < deadline, "no complete score: {scores:?}");
        std::thread::sleep(Duration::from_millis(50));
    };

    // One batch of measurements at one instant changed the score once per measurement: the
    // store holds several NEWS2 records at that instant, FHIR serves the last.
    let stored = native(
        address,
        &format!("/api/v1/patients/{patient}/scores?table=news2"),
    );
    assert!(
        stored["scores"].as_array().expect("scores").len() > news2.len(),
        "{stored}"
    );

    // The latest NEWS2: exactly what chart 1 gives, final, with its sources.
    let latest = news2.last().expect("a score");
    assert_eq!(latest["total"], 8);
    assert_eq!(latest["band"], "high");
    let latest_id = score_id("news2", patient, latest);
    let read = get_ok(
        address,
        &format!("/fhir/Observation/{latest_id}"),
        &mut served,
    );
    assert_score_matches(&read, latest, "news2", patient);
    assert_eq!(read["status"], "final");
    assert_eq!(read["valueQuantity"]["value"], 8);
    assert_eq!(read["interpretation"][0]["coding"][0]["code"], "high");
    assert_eq!(
        read["code"]["coding"][1],
        json!({ "system": "http://snomed.info/sct", "code": "1104051000000101", "display": "Royal College of Physicians National Early Warning Score 2 - total score" })
    );
    let points: Vec<(String, Value)> = read["component"]
        .as_array()
        .expect("components")
        .iter()
        .map(|component| {
            (
                component["code"]["coding"][0]["code"]
                    .as_str()
                    .expect("code")
                    .to_owned(),
                component["valueQuantity"]["value"].clone(),
            )
        })
        .collect();
    let expected: Vec<(String, Value)> = [
        ("respiratory_rate", 2),
        ("spo2", 2),
        ("oxygen", 0),
        ("systolic_bp", 1),
        ("heart_rate", 2),
        ("consciousness", 0),
        ("temperature", 1),
    ]
    .into_iter()
    .map(|(code, points)| (code.to_owned(), json!(points)))
    .collect();
    assert_eq!(points, expected, "NEWS2 chart 1 points, in chart order");
    // derivedFrom names the measurements scored (the systolic value inside its panel), and each
    // reference resolves to the vital-sign Observation.
    let last_round = base + 90 * SECOND;
    let derived: Vec<String> = read["derivedFrom"]
        .as_array()
        .expect("derivedFrom")
        .iter()
        .map(|reference| {
            reference["reference"]
                .as_str()
                .expect("reference")
                .to_owned()
        })
        .collect();
    let expected: Vec<String> = ["rr", "spo2", "bp", "hr", "temp"]
        .iter()
        .map(|token| format!("Observation/{device}.{token}.{last_round}"))
        .collect();
    assert_eq!(derived, expected);
    for reference in &derived {
        let vital = get_ok(address, &format!("/fhir/{reference}"), &mut served);
        assert_eq!(vital["category"][0]["coding"][0]["code"], "vital-signs");
    }
    let etag = fhir_get(address, &format!("/fhir/Observation/{latest_id}"));
    assert!(
        etag.header("etag")
            .is_some_and(|tag| tag.starts_with("W/\""))
    );

    // Search: every stored NEWS2 score, one per instant, in time order, as the native API has them.
    let by_code = format!("/fhir/Observation?patient={patient}&code={SCORE_TABLE}|news2");
    let first = get_ok(address, &by_code, &mut served);
    assert_eq!(first["total"], news2.len());
    let found = entries(&first);
    assert_eq!(found.len(), news2.len());
    for (observation, native) in found.iter().zip(&news2) {
        assert_score_matches(observation, native, "news2", patient);
    }
    assert_eq!(found.last(), Some(&read), "the read and the search agree");
    assert!(
        found
            .iter()
            .any(|observation| observation["status"] == "preliminary"),
        "the scores before ACVPU and air were entered are incomplete"
    );
    let only_total = get_ok(address, &format!("{by_code}&_count=0"), &mut served);
    assert_eq!(only_total["total"], news2.len());
    assert!(only_total.get("entry").is_none());
    // Paging by two, forwards and newest first, gives the same scores.
    let (paged, pages) = all_pages(address, &format!("{by_code}&_count=2"), &mut served);
    assert_eq!(ids(&paged), ids(&found));
    assert_eq!(pages, news2.len().div_ceil(2));
    let (newest_first, _) = all_pages(
        address,
        &format!("{by_code}&_count=2&_sort=-date"),
        &mut served,
    );
    let mut reversed = ids(&found);
    reversed.reverse();
    assert_eq!(ids(&newest_first), reversed);
    // The NEWS2 SNOMED CT code and a date bound find the same records.
    let snomed = get_ok(
        address,
        &format!(
            "/fhir/Observation?subject=Patient/{patient}&code=http://snomed.info/sct|1104051000000101"
        ),
        &mut served,
    );
    assert_eq!(ids(&entries(&snomed)), ids(&found));
    let since = get_ok(
        address,
        &format!(
            "/fhir/Observation?patient={patient}&code=news2&date=ge{}",
            latest["time"].as_str().expect("time")
        ),
        &mut served,
    );
    assert_eq!(ids(&entries(&since)), std::slice::from_ref(&latest_id));
    let by_id = get_ok(
        address,
        &format!("/fhir/Observation?_id={latest_id}"),
        &mut served,
    );
    assert_eq!(entries(&by_id), std::slice::from_ref(&read));
    // category=survey: every table's scores (NEWS2, qSOFA, MEWS).
    let (survey, _) = all_pages(
        address,
        &format!("/fhir/Observation?patient={patient}&category=survey&_count=50"),
        &mut served,
    );
    let mut expected_ids: Vec<String> = Vec::new();
    for table in ["news2", "qsofa", "mews"] {
        let scores = native_scores(address, patient, table);
        assert!(!scores.is_empty(), "{table}");
        expected_ids.extend(scores.iter().map(|score| score_id(table, patient, score)));
        let table_found: Vec<&Value> = survey
            .iter()
            .filter(|observation| observation["code"]["coding"][0]["code"] == table)
            .collect();
        assert_eq!(table_found.len(), scores.len(), "{table}");
        for (observation, native) in table_found.into_iter().zip(&scores) {
            assert_score_matches(observation, native, table, patient);
        }
    }
    let mut survey_ids = ids(&survey);
    survey_ids.sort();
    expected_ids.sort();
    assert_eq!(survey_ids, expected_ids);
    // Vital-sign searches are unchanged; a search naming both kinds is refused.
    let heart = get_ok(
        address,
        &format!("/fhir/Observation?patient={patient}&code=http://loinc.org|8867-4"),
        &mut served,
    );
    assert_eq!(heart["total"], 10);
    let unfiltered = get_ok(
        address,
        &format!("/fhir/Observation?patient={patient}&_count=1000"),
        &mut served,
    );
    assert!(
        entries(&unfiltered)
            .iter()
            .all(|observation| observation["category"][0]["coding"][0]["code"] == "vital-signs"),
        "without code or category a search returns vital signs"
    );
    let mixed = fhir_get(
        address,
        &format!("/fhir/Observation?patient={patient}&code=news2,http://loinc.org|8867-4"),
    );
    assert_eq!(mixed.status, 400, "{}", mixed.body);
    let outcome = served.keep(&mixed);
    assert_eq!(outcome["issue"][0]["code"], "not-supported");
    for missing in [
        format!("score.news2.{patient}.1"),
        "score.news2.x.1".to_owned(),
        format!("score.pews.{patient}.1"),
    ] {
        let answer = fhir_get(address, &format!("/fhir/Observation/{missing}"));
        assert_eq!(answer.status, 404, "{missing}: {}", answer.body);
        assert_eq!(served.keep(&answer)["resourceType"], "OperationOutcome");
    }

    // The alarm as a Flag, as the native log has it.
    let alarms = native_alarms(address, patient);
    let flags = get_ok(
        address,
        &format!("/fhir/Flag?patient={patient}"),
        &mut served,
    );
    let found = entries(&flags);
    assert_eq!(found.len(), alarms.len(), "one Flag per alarm: {flags}");
    for flag in &found {
        let id = flag["id"].as_str().expect("id");
        assert_flag_matches(flag, &alarms[id]);
    }
    assert_eq!(flags["total"], found.len());
    let only_total = get_ok(
        address,
        &format!("/fhir/Flag?patient={patient}&_count=0"),
        &mut served,
    );
    assert_eq!(only_total["total"], found.len());
    let flag = get_ok(address, &format!("/fhir/Flag/{alarm_id}"), &mut served);
    assert!(found.contains(&flag), "the read and the search agree");
    assert_eq!(flag["status"], "active");
    assert_eq!(priority_code(&flag), "PH");
    assert_eq!(lifecycle(&flag, "state"), Some(json!("active")));
    assert_eq!(lifecycle(&flag, "value"), Some(json!(8)));
    assert_eq!(flag["code"]["coding"][0]["code"], "score.news2");
    assert_eq!(flag["author"]["display"], "Galen clinical engine");
    let details: Vec<String> = flag["extension"]
        .as_array()
        .expect("extensions")
        .iter()
        .filter(|extension| {
            extension["url"] == "http://hl7.org/fhir/StructureDefinition/flag-detail"
        })
        .map(|extension| {
            extension["valueReference"]["reference"]
                .as_str()
                .expect("reference")
                .to_owned()
        })
        .collect();
    assert!(
        details.len() >= 5,
        "the measurements behind the score: {details:?}"
    );
    for reference in &details {
        get_ok(address, &format!("/fhir/{reference}"), &mut served);
    }

    // Acknowledged by a named nurse, with a reason: still active, acknowledged.
    post(
        address,
        &format!("/api/v1/alarms/{alarm_id}/acknowledge"),
        &json!({ "by": "nurse.jones", "reason": "at the bedside" }),
    );
    let acknowledged = wait_for_log(address, patient, |event| {
        event["alarm"] == alarm_id.as_str() && event["transition"] == "acknowledged"
    });
    let flag = get_ok(address, &format!("/fhir/Flag/{alarm_id}"), &mut served);
    assert_flag_matches(&flag, &native_alarms(address, patient)[&alarm_id]);
    assert_eq!(flag["status"], "active");
    assert_eq!(lifecycle(&flag, "state"), Some(json!("acknowledged")));
    assert_eq!(
        lifecycle(&flag, "acknowledged"),
        Some(acknowledged["time"].clone())
    );
    assert_eq!(
        lifecycle(&flag, "acknowledgedBy"),
        Some(json!("nurse.jones"))
    );
    assert_eq!(
        lifecycle(&flag, "acknowledgedReason"),
        Some(json!("at the bedside"))
    );
    let raised_at = flag["period"]["start"].as_str().expect("start").to_owned();
    let search = |query: &str, served: &mut Served| {
        let bundle = get_ok(
            address,
            &format!("/fhir/Flag?patient={patient}&{query}"),
            served,
        );
        ids(&entries(&bundle))
    };
    let this = vec![alarm_id.clone()];
    assert_eq!(
        search("status=active&state=acknowledged", &mut served),
        this
    );
    assert_eq!(search("_id=", &mut served).len(), found.len());
    assert_eq!(
        search(&format!("_id={alarm_id}&priority=PH"), &mut served),
        this
    );
    assert!(search(&format!("_id={alarm_id}&state=active"), &mut served).is_empty());
    assert!(search(&format!("_id={alarm_id}&priority=low"), &mut served).is_empty());
    assert_eq!(
        search(&format!("_id={alarm_id}&date=ge{raised_at}"), &mut served),
        this,
        "an open alarm reaches every later instant"
    );
    assert!(
        search(&format!("_id={alarm_id}&date=lt{raised_at}"), &mut served).is_empty(),
        "it was raised at {raised_at}, not before"
    );

    // Closed by a doctor while the score is still high: inactive, with its end.
    post(
        address,
        &format!("/api/v1/alarms/{alarm_id}/resolve"),
        &json!({ "by": "dr.house", "reason": "reviewed, plan in place" }),
    );
    let closed = wait_for_log(address, patient, |event| {
        event["alarm"] == alarm_id.as_str() && event["state"] == "resolved"
    });
    let flag = get_ok(address, &format!("/fhir/Flag/{alarm_id}"), &mut served);
    assert_flag_matches(&flag, &native_alarms(address, patient)[&alarm_id]);
    assert_eq!(flag["status"], "inactive");
    assert_eq!(flag["period"]["end"], closed["time"]);
    assert_eq!(lifecycle(&flag, "resolvedBy"), Some(json!("dr.house")));
    assert_eq!(
        lifecycle(&flag, "acknowledgedBy"),
        Some(json!("nurse.jones")),
        "the acknowledgement stays on record"
    );
    assert_eq!(search("status=inactive", &mut served), this);
    assert!(!search("status=active", &mut served).contains(&alarm_id));
    assert_eq!(
        search(&format!("date=ge{raised_at}&state=resolved"), &mut served),
        this
    );
    let (paged, _) = all_pages(
        address,
        &format!("/fhir/Flag?patient={patient}&_count=1&_sort=-date"),
        &mut served,
    );
    assert_eq!(paged.len(), found.len());
    let unknown = fhir_get(address, &format!("/fhir/Flag/{patient}-999"));
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    served.keep(&unknown);
    let malformed = fhir_get(address, "/fhir/Flag/not-an-alarm");
    assert_eq!(malformed.status, 404, "{}", malformed.body);
    served.keep(&malformed);
    let bad = fhir_get(address, "/fhir/Flag?status=open");
    assert_eq!(bad.status, 400, "{}", bad.body);
    served.keep(&bad);

    // The CapabilityStatement says what is served.
    let metadata = exchange(address, "GET", "/fhir/metadata", &[], None, None);
    let statement = served.keep(&metadata);
    let resources = statement["rest"][0]["resource"]
        .as_array()
        .expect("resources");
    let flag_entry = resources
        .iter()
        .find(|resource| resource["type"] == "Flag")
        .expect("Flag is declared");
    assert_eq!(
        flag_entry["interaction"],
        json!([{ "code": "read" }, { "code": "search-type" }])
    );
    let names: Vec<&str> = flag_entry["searchParam"]
        .as_array()
        .expect("params")
        .iter()
        .filter_map(|param| param["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "_id", "patient", "subject", "date", "status", "state", "priority"
        ]
    );
    let observation = resources
        .iter()
        .find(|resource| resource["type"] == "Observation")
        .expect("Observation");
    let category = observation["searchParam"]
        .as_array()
        .expect("params")
        .iter()
        .find(|param| param["name"] == "category")
        .expect("category");
    assert!(
        category["documentation"]
            .as_str()
            .is_some_and(|text| text.contains("survey")),
        "{category}"
    );

    common::validate_fhir(&served.0);
}
