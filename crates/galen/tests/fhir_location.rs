//! Location (wards and beds) and DeviceMetric (what each device measures) end to end against the
//! real binary: patients, devices and an assignment registered through the native API, vital
//! signs ingested, then both resources read by id and searched (filters, paging by `next` links
//! with the cursor surviving an admission between pages, `400` for what Galen does not support,
//! `404` for unknown ids). Every resource Galen returns here is validated by the independent R4
//! validator (`tests/interop/fhir_validate.py`, Python `fhir.resources` 6.4.0).

mod common;

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Answer, TOKEN, exchange, micros_to_rfc3339, post, request, start};
use serde_json::{Value, json};

const FHIR_JSON: &str = "application/fhir+json";
const MDC: &str = "urn:iso:std:iso:11073:10101";
const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
const PHYSICAL_TYPE: &str = "http://terminology.hl7.org/CodeSystem/location-physical-type";

/// Every resource Galen answered with, for the independent validator.
#[derive(Default)]
struct Served(Vec<String>);

impl Served {
    /// The answer as JSON, kept for validation.
    fn keep(&mut self, answer: &Answer) -> Value {
        let value = answer.json();
        assert!(value.get("resourceType").is_some(), "{value}");
        self.0.push(value.to_string());
        value
    }
}

fn get(address: &str, path: &str) -> Answer {
    exchange(
        address,
        "GET",
        path,
        &[("Accept", FHIR_JSON)],
        None,
        Some(TOKEN),
    )
}

/// A `200` answer's JSON, kept for validation.
fn get_ok(address: &str, path: &str, served: &mut Served) -> Value {
    let answer = get(address, path);
    assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    assert!(
        answer
            .header("content-type")
            .is_some_and(|value| value.starts_with(FHIR_JSON)),
        "{path}"
    );
    served.keep(&answer)
}

/// Asserts an error status answered with an OperationOutcome, kept for validation.
fn refused(address: &str, path: &str, status: u16, served: &mut Served) -> Value {
    let answer = get(address, path);
    assert_eq!(answer.status, status, "{path}: {}", answer.body);
    let outcome = served.keep(&answer);
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{path}");
    assert_eq!(outcome["issue"][0]["severity"], "error", "{path}");
    outcome
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
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

/// Every page of a search, following `next` links; returns the pages.
fn all_pages(address: &str, first: &str, served: &mut Served) -> Vec<Value> {
    let mut pages = vec![get_ok(address, first, served)];
    while let Some(next) = next_link(pages.last().expect("a page")) {
        assert!(pages.len() < 20, "paging does not end");
        pages.push(get_ok(address, &next, served));
    }
    pages
}

/// FHIR's id rule, `[A-Za-z0-9\-\.]{1,64}`.
fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.'))
}

fn register_patient(address: &str, mrn: &str, ward: &str, bed: &str) -> i64 {
    let patient = post(
        address,
        "/api/v1/patients",
        &json!({
            "identifier": { "system": "urn:oid:1.2.3", "value": mrn },
            "name": { "family": "Okafor", "given": "Ada" },
            "birth_date": "1958-03-14", "sex": "female", "ward": ward, "bed": bed
        }),
    );
    patient["id"].as_i64().expect("patient id")
}

fn register_device(address: &str, serial: &str, kind: &str) -> i64 {
    let device = post(
        address,
        "/api/v1/devices",
        &json!({ "serial": serial, "manufacturer": "Acme", "model": "M1", "kind": kind }),
    );
    device["id"].as_i64().expect("device id")
}

fn set_device_status(address: &str, id: i64, serial: &str, kind: &str, status: &str) {
    let body = json!({ "serial": serial, "manufacturer": "Acme", "model": "M1", "kind": kind, "status": status });
    let (code, answer) = request(
        address,
        "PUT",
        &format!("/api/v1/devices/{id}"),
        Some(&body.to_string()),
    )
    .expect("request");
    assert_eq!(code, 200, "{answer}");
}

#[test]
fn wards_beds_and_device_metrics_over_fhir() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = start(directory.path());
    let address = server.address.as_str();
    let mut served = Served::default();

    // --- Registry and data --------------------------------------------------------------------
    let first = register_patient(address, "MRN-1", "ICU North", "4");
    register_patient(address, "MRN-2", "ICU North", "10");
    register_patient(address, "MRN-3", "Ward 7", "2");
    register_patient(address, "MRN-4", "Ward 7", "");
    register_patient(address, "MRN-5", "", "");
    register_patient(address, "MRN-6", "icu north", "4");
    // A second patient in bed 4 (a handover): still one bed.
    register_patient(address, "MRN-7", "ICU North", "4");

    let monitor = register_device(address, "MON-1", "monitor");
    let cuff = register_device(address, "CUFF-1", "bp_cuff");
    let idle = register_device(address, "IDLE-1", "thermometer");
    let mistaken = register_device(address, "ERR-1", "thermometer");
    let now = now_micros();
    post(
        address,
        "/api/v1/assignments",
        &json!({ "device": monitor, "patient": first, "start": micros_to_rfc3339(now - 600_000_000) }),
    );
    let mut items = Vec::new();
    for round in 0..3_i64 {
        let time = micros_to_rfc3339(now - 60_000_000 + round * 10_000_000);
        for (device, code, value, unit) in [
            ("MON-1", "heart_rate", 72.0, "/min"),
            ("MON-1", "spo2", 97.0, "%"),
            ("MON-1", "respiratory_rate", 16.0, "/min"),
            ("MON-1", "battery", 80.0, "%"),
            ("CUFF-1", "systolic_bp", 120.0, "mmHg"),
            ("CUFF-1", "diastolic_bp", 80.0, "mmHg"),
            ("CUFF-1", "mean_bp", 93.0, "mmHg"),
            ("ERR-1", "temperature", 37.0, "Cel"),
        ] {
            items.push(json!({ "device": device, "code": code, "value": value, "unit": unit, "time": time }));
        }
    }
    let answer = post(address, "/api/v1/measurements", &Value::Array(items));
    assert_eq!(answer["accepted"], 24, "{answer}");
    set_device_status(address, cuff, "CUFF-1", "bp_cuff", "inactive");
    set_device_status(
        address,
        mistaken,
        "ERR-1",
        "thermometer",
        "entered-in-error",
    );

    // --- CapabilityStatement ------------------------------------------------------------------
    let metadata = exchange(address, "GET", "/fhir/metadata", &[], None, None);
    assert_eq!(metadata.status, 200, "{}", metadata.body);
    let statement = served.keep(&metadata);
    let resources = statement["rest"][0]["resource"]
        .as_array()
        .expect("resources");
    for (kind, params) in [
        ("Location", &["_id", "name", "partof", "status"][..]),
        ("DeviceMetric", &["_id", "source", "type"][..]),
    ] {
        let declared = resources
            .iter()
            .find(|resource| resource["type"] == kind)
            .unwrap_or_else(|| panic!("{kind} is declared"));
        assert_eq!(
            declared["interaction"],
            json!([{ "code": "read" }, { "code": "search-type" }]),
            "{kind}"
        );
        let names: Vec<&str> = declared["searchParam"]
            .as_array()
            .expect("params")
            .iter()
            .filter_map(|param| param["name"].as_str())
            .collect();
        assert_eq!(names, params, "{kind}");
    }

    // --- Location -----------------------------------------------------------------------------
    let bundle = get_ok(address, "/fhir/Location", &mut served);
    assert_eq!(bundle["type"], "searchset");
    assert_eq!(bundle["total"], 7, "{bundle:#}");
    let locations = entries(&bundle);
    let summary: Vec<(String, String)> = locations
        .iter()
        .map(|location| {
            (
                location["physicalType"]["coding"][0]["code"]
                    .as_str()
                    .expect("physical type")
                    .to_owned(),
                location["name"].as_str().expect("name").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("wa", "ICU North"),
        ("bd", "10"),
        ("bd", "4"),
        ("wa", "Ward 7"),
        ("bd", "2"),
        ("wa", "icu north"),
        ("bd", "4"),
    ]
    .iter()
    .map(|(code, name)| ((*code).to_owned(), (*name).to_owned()))
    .collect();
    assert_eq!(
        summary, expected,
        "wards in name order, each followed by its beds; the unplaced patient adds nothing"
    );
    let location_ids = ids(&locations);
    assert_eq!(
        location_ids.iter().collect::<BTreeSet<_>>().len(),
        7,
        "ids are unique: {location_ids:?}"
    );
    for (location, id) in locations.iter().zip(&location_ids) {
        assert!(is_fhir_id(id), "{id}");
        assert_eq!(location["status"], "active");
        assert_eq!(location["mode"], "instance");
        assert_eq!(
            location["physicalType"]["coding"][0]["system"],
            PHYSICAL_TYPE
        );
        let ward = location["physicalType"]["coding"][0]["code"] == "wa";
        assert!(id.starts_with(if ward { "ward." } else { "bed." }), "{id}");
        assert_eq!(location.get("partOf").is_none(), ward, "{location}");
    }
    assert!(location_ids[0].starts_with("ward.icu-north."));
    assert!(location_ids[5].starts_with("ward.icu-north."));
    assert_ne!(
        location_ids[0], location_ids[5],
        "ICU North and icu north are different wards"
    );
    // Each bed is part of the ward before it.
    for (bed, ward) in [(1, 0), (2, 0), (4, 3), (6, 5)] {
        assert_eq!(
            locations[bed]["partOf"]["reference"],
            format!("Location/{}", location_ids[ward])
        );
        assert_eq!(locations[bed]["partOf"]["display"], locations[ward]["name"]);
    }
    assert_ne!(location_ids[2], location_ids[6], "bed 4 of two wards");

    // Reads give the same resources, with a weak ETag.
    for (location, id) in locations.iter().zip(&location_ids) {
        let answer = get(address, &format!("/fhir/Location/{id}"));
        assert_eq!(answer.status, 200, "{id}: {}", answer.body);
        let read = served.keep(&answer);
        assert_eq!(&read, location, "{id}");
        let etag = answer.header("etag").expect("etag");
        assert_eq!(
            etag,
            format!(
                "W/\"{}\"",
                read["meta"]["versionId"].as_str().expect("version")
            )
        );
    }

    // Paging: three pages of at most three, in the same order, total on each.
    let pages = all_pages(address, "/fhir/Location?_count=3", &mut served);
    assert_eq!(pages.len(), 3);
    let paged: Vec<Value> = pages.iter().flat_map(entries).collect();
    assert_eq!(ids(&paged), location_ids);
    assert!(pages.iter().all(|page| page["total"] == 7));

    // A cursor resumes after the last location returned, even after an admission sorts in front.
    let page = get_ok(address, "/fhir/Location?_count=2", &mut served);
    let next = next_link(&page).expect("a next link");
    register_patient(address, "MRN-8", "Annex", "1");
    let resumed = get_ok(address, &next, &mut served);
    assert_eq!(ids(&entries(&resumed))[0], location_ids[2]);
    assert_eq!(resumed["total"], 9, "the total counts the new ward and bed");

    // Filters.
    let search = |query: &str, served: &mut Served| -> Vec<String> {
        ids(&entries(&get_ok(
            address,
            &format!("/fhir/Location?{query}"),
            served,
        )))
    };
    assert_eq!(
        search("name=icu", &mut served),
        [location_ids[0].clone(), location_ids[5].clone()],
        "name is a case-insensitive prefix"
    );
    assert_eq!(
        search("name:exact=ICU%20North", &mut served),
        [location_ids[0].clone()]
    );
    assert_eq!(
        search("name:contains=ard", &mut served),
        [location_ids[3].clone()]
    );
    let icu_beds = [location_ids[1].clone(), location_ids[2].clone()];
    assert_eq!(
        search(&format!("partof=Location/{}", location_ids[0]), &mut served),
        icu_beds
    );
    assert_eq!(
        search(&format!("partof={}", location_ids[0]), &mut served),
        icu_beds
    );
    assert_eq!(
        search(&format!("partof={}&name=1", location_ids[0]), &mut served),
        [location_ids[1].clone()]
    );
    assert_eq!(
        search(
            &format!("_id={},{}", location_ids[6], location_ids[3]),
            &mut served
        ),
        [location_ids[3].clone(), location_ids[6].clone()]
    );
    assert_eq!(search("status=active", &mut served).len(), 9);
    let inactive = get_ok(address, "/fhir/Location?status=inactive", &mut served);
    assert_eq!(inactive["total"], 0);
    assert!(inactive.get("entry").is_none());
    let only_total = get_ok(address, "/fhir/Location?_count=0", &mut served);
    assert_eq!(only_total["total"], 9);
    assert!(only_total.get("entry").is_none() && next_link(&only_total).is_none());

    // Errors.
    for query in [
        "address=Leeds",
        "type=ICU",
        "_sort=name",
        "status=open",
        "partof=Patient/1",
        "_cursor=not-a-cursor",
        "_id=not%20an%20id",
    ] {
        refused(
            address,
            &format!("/fhir/Location?{query}"),
            400,
            &mut served,
        );
    }
    let outcome = refused(address, "/fhir/Location?foo=bar", 400, &mut served);
    assert_eq!(outcome["issue"][0]["code"], "not-supported");
    for id in ["ward.nowhere.0000000000000000", "1", "bed"] {
        let outcome = refused(address, &format!("/fhir/Location/{id}"), 404, &mut served);
        assert_eq!(outcome["issue"][0]["code"], "not-found");
    }

    // --- DeviceMetric -------------------------------------------------------------------------
    let bundle = get_ok(address, "/fhir/DeviceMetric", &mut served);
    assert_eq!(bundle["total"], 8, "{bundle:#}");
    let metrics = entries(&bundle);
    let metric_ids = ids(&metrics);
    let expected_ids: Vec<String> = [
        (monitor, "hr"),
        (monitor, "spo2"),
        (monitor, "rr"),
        (monitor, "battery"),
        (cuff, "sbp"),
        (cuff, "dbp"),
        (cuff, "map"),
        (mistaken, "temp"),
    ]
    .iter()
    .map(|(device, code)| format!("{device}.{code}"))
    .collect();
    assert_eq!(
        metric_ids, expected_ids,
        "by device, then vital sign; no metric for a device without data"
    );
    for metric in &metrics {
        let id = metric["id"].as_str().expect("id");
        let device = id.split('.').next().expect("device");
        assert_eq!(metric["source"]["reference"], format!("Device/{device}"));
        assert_eq!(metric["category"], "measurement");
        assert_eq!(metric["unit"]["coding"][0]["system"], UCUM);
        let status = if device == monitor.to_string() {
            "on"
        } else if device == cuff.to_string() {
            "off"
        } else {
            "entered-in-error"
        };
        assert_eq!(metric["operationalStatus"], status, "{id}");
    }
    let heart_rate = &metrics[0];
    assert_eq!(heart_rate["type"]["coding"][0]["system"], MDC);
    assert_eq!(heart_rate["type"]["coding"][0]["code"], "147842");
    assert_eq!(heart_rate["type"]["coding"][1]["system"], LOINC);
    assert_eq!(heart_rate["type"]["coding"][1]["code"], "8867-4");
    assert_eq!(heart_rate["unit"]["coding"][0]["code"], "/min");
    assert_eq!(metrics[4]["type"]["coding"][0]["code"], "150021");
    assert_eq!(metrics[4]["unit"]["coding"][0]["code"], "mm[Hg]");
    assert_eq!(
        metrics[3]["type"]["coding"][0]["system"],
        "https://galen.invalid/fhir/CodeSystem/measurement"
    );
    assert_eq!(metrics[7]["unit"]["coding"][0]["code"], "Cel");

    // Reads, with ETags; the metric's Observations are the ids that start with its id.
    for (metric, id) in metrics.iter().zip(&metric_ids) {
        let answer = get(address, &format!("/fhir/DeviceMetric/{id}"));
        assert_eq!(answer.status, 200, "{id}: {}", answer.body);
        assert!(
            answer
                .header("etag")
                .is_some_and(|etag| etag.starts_with("W/\""))
        );
        assert_eq!(&served.keep(&answer), metric, "{id}");
    }
    let observations = get_ok(
        address,
        &format!("/fhir/Observation?device={monitor}&code=8867-4"),
        &mut served,
    );
    let observation_ids = ids(&entries(&observations));
    assert_eq!(observation_ids.len(), 3);
    assert!(
        observation_ids
            .iter()
            .all(|id| id.starts_with(&format!("{}.", metric_ids[0]))),
        "{observation_ids:?}"
    );

    // Paging: the first page has no total (the search stops once the page is full).
    let pages = all_pages(address, "/fhir/DeviceMetric?_count=3", &mut served);
    assert_eq!(pages.len(), 3);
    assert!(pages[0].get("total").is_none(), "{:#}", pages[0]);
    let paged: Vec<Value> = pages.iter().flat_map(entries).collect();
    assert_eq!(ids(&paged), metric_ids);
    let only_total = get_ok(address, "/fhir/DeviceMetric?_count=0", &mut served);
    assert_eq!(only_total["total"], 8);

    // Filters.
    let search = |query: &str, served: &mut Served| -> Vec<String> {
        ids(&entries(&get_ok(
            address,
            &format!("/fhir/DeviceMetric?{query}"),
            served,
        )))
    };
    assert_eq!(
        search(&format!("source=Device/{cuff}"), &mut served),
        expected_ids[4..7]
    );
    assert_eq!(
        search(&format!("source={monitor}&type=150456"), &mut served),
        [expected_ids[1].clone()]
    );
    assert_eq!(
        search("type=http://loinc.org%7C8867-4", &mut served),
        [expected_ids[0].clone()]
    );
    assert_eq!(
        search(
            "type=urn:iso:std:iso:11073:10101%7C150022,59408-5",
            &mut served
        ),
        [expected_ids[1].clone(), expected_ids[5].clone()]
    );
    assert_eq!(
        search(
            "type=https://galen.invalid/fhir/CodeSystem/measurement%7Cbattery",
            &mut served
        ),
        [expected_ids[3].clone()]
    );
    assert_eq!(
        search(&format!("_id={cuff}.map,{monitor}.hr"), &mut served),
        [expected_ids[0].clone(), expected_ids[6].clone()]
    );
    assert!(search(&format!("source={idle}"), &mut served).is_empty());
    assert!(search("type=85354-9", &mut served).is_empty());

    // Errors.
    for query in [
        "category=measurement",
        "parent=Device/1",
        "_sort=type",
        "source=Patient/1",
        "type=a%7Cb%7Cc",
        "_cursor=garbage",
    ] {
        refused(
            address,
            &format!("/fhir/DeviceMetric?{query}"),
            400,
            &mut served,
        );
    }
    for id in [
        format!("{idle}.hr"),
        format!("{monitor}.temp"),
        format!("{monitor}.bp"),
        "999.hr".to_owned(),
        "nonsense".to_owned(),
    ] {
        refused(
            address,
            &format!("/fhir/DeviceMetric/{id}"),
            404,
            &mut served,
        );
    }

    common::validate_fhir(&served.0);
}
