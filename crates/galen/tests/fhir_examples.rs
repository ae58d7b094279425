//! The official FHIR R4 examples (npm `hl7.fhir.r4.examples` 4.0.1, installed by `scripts/test`
//! into `tests/interop/node_modules`) posted to Galen and read back.
//!
//! - **Patient and Device:** every example is posted. Those Galen accepts must read back (by id
//!   and by search) with their content intact: the same JSON, except what the server owns (the
//!   `id` Galen assigns, `meta.versionId`, and `meta.lastUpdated`, which a server sets and
//!   Galen drops). Those it refuses are listed in [`REFUSED`] with the element Galen needs and
//!   the example lacks; the answer must be `422` naming that element. One example is the same
//!   person as another (the same identifier) and gets `409`.
//! - **Observation:** Galen's Observations are measurements of a registered device, and no R4
//!   example names a device, so each is refused with `422` naming an element (and kept as a dead
//!   letter).
//! - **Subscription:** the two examples are R4 core subscriptions (criteria, no Backport topic),
//!   which Galen refuses.
//!
//! Every resource Galen answers with is validated by the independent R4 validator, except the
//! copies of the examples listed in [`VALIDATOR_REFUSES`].

mod common;

use std::path::PathBuf;

use common::{Answer, TOKEN, exchange, start};
use serde_json::Value;

const FHIR_JSON: &str = "application/fhir+json";

/// Examples Galen refuses, with the element its answer must name (FHIRPath prefix) and why.
const REFUSED: &[(&str, &str, &str)] = &[
    (
        "Patient-animal.json",
        "Patient.name[0].family",
        "no family name (an animal)",
    ),
    (
        "Patient-ch-example.json",
        "Patient.name[0].family",
        "the name is given only as text",
    ),
    ("Patient-dicom.json", "Patient.birthDate", "no birth date"),
    (
        "Patient-ihe-pcd.json",
        "Patient.identifier[0].system",
        "the identifier has no system (and there is no birth date)",
    ),
    (
        "Patient-infant-fetal.json",
        "Patient.name",
        "a fetus: no name, no birth date",
    ),
    (
        "Patient-infant-mom.json",
        "Patient.identifier",
        "no identifier (medical record number)",
    ),
    (
        "Patient-newborn.json",
        "Patient.identifier",
        "no identifier, no name",
    ),
    ("Patient-pat1.json", "Patient.birthDate", "no birth date"),
    ("Patient-pat2.json", "Patient.birthDate", "no birth date"),
    ("Patient-proband.json", "Patient.name", "no name"),
];

/// Examples of a person another example already registered (same identifier): `409`.
const SAME_PERSON: &[(&str, &str)] = &[("Patient-mom.json", "Patient-genetics-example1.json")];

/// Examples the independent validator refuses although they are official R4 examples, and why:
/// Galen's answers for them are compared with the example but not given to the validator.
const VALIDATOR_REFUSES: &[(&str, &str)] = &[(
    "Patient-f201.json",
    "fhir.resources 6.4.0 requires a URL scheme in Attachment.url; the example's photo is the relative `Binary/f006`",
)];

fn examples_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::var_os("GALEN_R4_EXAMPLES").map_or_else(
        || root.join("tests/interop/node_modules/hl7.fhir.r4.examples"),
        PathBuf::from,
    );
    assert!(
        dir.join("Patient-example.json").is_file(),
        "the FHIR R4 examples are missing from {}: run scripts/test, or `npm ci` in tests/interop",
        dir.display()
    );
    dir
}

/// The examples of one resource type, by file name.
fn examples(dir: &PathBuf, resource_type: &str) -> Vec<(String, Value)> {
    let mut found: Vec<(String, Value)> = std::fs::read_dir(dir)
        .expect("read the examples")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            (name.starts_with(&format!("{resource_type}-")) && name.ends_with(".json"))
                .then_some(name)
        })
        .map(|name| {
            let text = std::fs::read_to_string(dir.join(&name)).expect("read an example");
            let json: Value = serde_json::from_str(&text).expect("an example is JSON");
            (name, json)
        })
        .filter(|(_, json)| json["resourceType"] == resource_type)
        .collect();
    found.sort_by(|left, right| left.0.cmp(&right.0));
    found
}

fn fhir(address: &str, method: &str, path: &str, body: Option<&Value>) -> Answer {
    let body = body.map(Value::to_string);
    exchange(
        address,
        method,
        path,
        &[("Accept", FHIR_JSON), ("Content-Type", FHIR_JSON)],
        body.as_deref(),
        Some(TOKEN),
    )
}

/// The content of a resource without what the server owns: `id`, `meta.versionId` and
/// `meta.lastUpdated` (a server sets it; Galen keeps no change time and drops the client's).
fn content(mut resource: Value) -> Value {
    let object = resource.as_object_mut().expect("a resource is an object");
    object.remove("id");
    if let Some(meta) = object.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        if meta.is_empty() {
            object.remove("meta");
        }
    }
    resource
}

/// The FHIRPath expressions of an OperationOutcome.
fn expressions(outcome: &Value) -> Vec<String> {
    outcome["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|issue| issue["expression"].as_array().cloned().unwrap_or_default())
        .filter_map(|expression| expression.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn official_r4_examples_round_trip_or_are_refused_by_name() {
    let dir = examples_dir();
    let data = tempfile::tempdir().expect("tempdir");
    let server = start(data.path());
    let address = server.address.clone();
    let mut served = Vec::new();
    let mut round_trips = Vec::new();

    for resource_type in ["Patient", "Device"] {
        let found = examples(&dir, resource_type);
        assert!(
            !found.is_empty(),
            "no {resource_type} examples in {}",
            dir.display()
        );
        for (name, example) in found {
            let created = fhir(
                &address,
                "POST",
                &format!("/fhir/{resource_type}"),
                Some(&example),
            );
            let body = created.json();
            let validate = !VALIDATOR_REFUSES.iter().any(|(file, _)| *file == name);
            if validate {
                served.push(body.to_string());
            }
            if let Some((_, path, why)) = REFUSED.iter().find(|(file, _, _)| *file == name) {
                assert_eq!(created.status, 422, "{name} ({why}): {}", created.body);
                assert!(
                    expressions(&body)
                        .iter()
                        .any(|expression| expression.starts_with(path)),
                    "{name}: the refusal names {path} ({why}): {body}"
                );
                continue;
            }
            if let Some((_, first)) = SAME_PERSON.iter().find(|(file, _)| *file == name) {
                assert_eq!(
                    created.status, 409,
                    "{name} has {first}'s identifier: {}",
                    created.body
                );
                continue;
            }
            assert_eq!(created.status, 201, "{name} is accepted: {}", created.body);
            let id = body["id"].as_str().expect("an id").to_owned();
            let read = fhir(
                &address,
                "GET",
                &format!("/fhir/{resource_type}/{id}"),
                None,
            );
            assert_eq!(read.status, 200, "{name}: {}", read.body);
            let read_back = read.json();
            if validate {
                served.push(read_back.to_string());
            }
            assert_eq!(
                content(read_back),
                content(example.clone()),
                "{name} reads back as posted"
            );
            // A search finds it with the same content.
            let bundle = fhir(
                &address,
                "GET",
                &format!("/fhir/{resource_type}?_id={id}"),
                None,
            )
            .json();
            assert_eq!(
                content(bundle["entry"][0]["resource"].clone()),
                content(example),
                "{name} is found as posted"
            );
            round_trips.push(name);
        }
    }
    // Listed refusals are all Patient examples that exist; everything else round-tripped.
    assert_eq!(
        round_trips.len() + REFUSED.len() + SAME_PERSON.len(),
        examples(&dir, "Patient").len() + examples(&dir, "Device").len(),
        "round trips: {round_trips:?}"
    );
    assert!(
        round_trips
            .iter()
            .any(|name| name == "Patient-example.json")
    );
    assert!(round_trips.iter().any(|name| name.starts_with("Device-")));

    // No Observation example names a device: each is refused with Observation.device.
    let observations = examples(&dir, "Observation");
    assert!(
        observations.len() > 50,
        "{} Observation examples",
        observations.len()
    );
    for (name, example) in &observations {
        let created = fhir(&address, "POST", "/fhir/Observation", Some(example));
        assert_eq!(created.status, 422, "{name}: {}", created.body);
        let body = created.json();
        assert!(
            !expressions(&body).is_empty(),
            "{name}: the refusal names an element: {body}"
        );
        served.push(body.to_string());
    }
    // R4 core subscriptions (criteria, no topic) are refused, naming what Galen needs.
    for (name, example) in examples(&dir, "Subscription") {
        let created = fhir(&address, "POST", "/fhir/Subscription", Some(&example));
        assert!(
            matches!(created.status, 400 | 422),
            "{name}: {}",
            created.body
        );
        served.push(created.json().to_string());
    }
    drop(server);
    common::validate_fhir(&served);
}
