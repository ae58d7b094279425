use galen_model::{HumanName, Identifier, NewPatient, Patient, PatientId, Sex};
use serde_json::json;

use super::*;

fn patient(id: i64, ward: &str, bed: &str) -> Patient {
    Patient {
        id: PatientId(id),
        details: NewPatient {
            identifier: Identifier {
                system: "urn:oid:1.2.3.4".to_owned(),
                value: format!("MRN-{id}"),
            },
            name: HumanName {
                family: "Smith".to_owned(),
                given: String::new(),
            },
            birth_date: NewPatient::parse_birth_date("1950-02-28").expect("date"),
            sex: Sex::Unknown,
            ward: ward.to_owned(),
            bed: bed.to_owned(),
        },
    }
}

/// FHIR's id rule, `[A-Za-z0-9\-\.]{1,64}`.
fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.'))
}

#[test]
fn fnv1a_is_the_standard_64_bit_hash() {
    // Published FNV-1a 64-bit test vectors.
    assert_eq!(fnv1a_update(FNV_OFFSET_BASIS, b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a_update(FNV_OFFSET_BASIS, b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(
        fnv1a_update(FNV_OFFSET_BASIS, b"foobar"),
        0x8594_4171_f739_67e8
    );
    assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]), "lengths separate");
}

#[test]
fn ids_are_readable_and_pinned() {
    // Pinned: a change here breaks every Location reference a client has stored.
    assert_eq!(
        LocationKey::ward("ICU North").id(),
        "ward.icu-north.4b26fa5e8d6253a6"
    );
    assert_eq!(
        LocationKey::bed("ICU North", "4").id(),
        "bed.icu-north.4.3b9b9aae2ba7958f"
    );
}

#[test]
fn ids_are_valid_and_unambiguous_for_any_names() {
    let long = "Ward ".repeat(200);
    let names = [
        "ICU",
        "icu",
        "I.C.U.",
        "I-C-U",
        "Bay 1",
        "Bay-1",
        "bay 1",
        " Bay 1 ",
        "病棟",
        "病棟 2",
        "Intensivstation Süd",
        "---",
        "a/b?c#d",
        long.as_str(),
        "ward.icu.0000000000000000",
    ];
    let mut ids = BTreeSet::new();
    for ward in names {
        let ward_key = LocationKey::ward(ward);
        let id = ward_key.id();
        assert!(is_fhir_id(&id), "{ward:?}: {id}");
        assert!(id.starts_with("ward."), "{id}");
        assert_eq!(id, ward_key.clone().id(), "stable");
        assert!(ids.insert(id), "{ward:?} shares an id");
        for bed in names {
            let id = LocationKey::bed(ward, bed).id();
            assert!(is_fhir_id(&id), "{ward:?}/{bed:?}: {id}");
            assert!(id.starts_with("bed."), "{id}");
            assert!(ids.insert(id), "{ward:?}/{bed:?} shares an id");
        }
    }
    assert_eq!(LocationKey::ward("ICU").id()[..9], *"ward.icu.");
    assert_eq!(
        LocationKey::ward("病棟").id().len(),
        "ward.".len() + 16,
        "no slug, no empty segment"
    );
    let long_id = LocationKey::bed(&long, &long).id();
    assert!(long_id.starts_with("bed.ward-ward-ward-ward.ward-ward-ward-ward."));
}

#[test]
fn slugs_fold_case_and_punctuation_within_their_limit() {
    assert_eq!(slug("ICU North", 40), "icu-north");
    assert_eq!(slug("  --Bay  7b!! ", 40), "bay-7b");
    assert_eq!(slug("Süd", 40), "s-d");
    assert_eq!(slug("病棟", 40), "");
    assert_eq!(slug("abcdef", 3), "abc");
    assert_eq!(slug("ab cd", 3), "ab", "no trailing dash at the cut");
    assert_eq!(slug("ab cd", 4), "ab-c");
}

#[test]
fn locations_come_from_placed_patients_in_ward_order() {
    let patients = [
        patient(1, "Ward 7", "2"),
        patient(2, "ICU", "4"),
        patient(3, "ICU", "10"),
        patient(4, "ICU", "4"),
        patient(5, "", ""),
        patient(6, "   ", ""),
        patient(7, "Ward 7", ""),
        patient(8, "Day unit", " "),
        patient(9, "", "orphan bed"),
    ];
    let locations: Vec<LocationKey> = locations_of(&patients).into_iter().collect();
    assert_eq!(
        locations,
        [
            LocationKey::ward("Day unit"),
            LocationKey::ward("ICU"),
            LocationKey::bed("ICU", "10"),
            LocationKey::bed("ICU", "4"),
            LocationKey::ward("Ward 7"),
            LocationKey::bed("Ward 7", "2"),
        ]
    );
}

#[test]
fn wards_and_beds_as_fhir() {
    let ward = serde_json::to_value(location_to_fhir(&LocationKey::ward("ICU North")))
        .expect("serialises");
    assert_eq!(
        ward,
        json!({
            "resourceType": "Location",
            "id": "ward.icu-north.4b26fa5e8d6253a6",
            "status": "active",
            "name": "ICU North",
            "mode": "instance",
            "physicalType": {
                "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/location-physical-type",
                    "code": "wa",
                    "display": "Ward"
                }],
                "text": "Ward"
            }
        })
    );
    let bed = location_to_fhir(&LocationKey::bed("ICU North", "4"));
    let bed_json = serde_json::to_value(&bed).expect("serialises");
    assert_eq!(bed_json["name"], "4");
    assert_eq!(bed_json["physicalType"]["coding"][0]["code"], "bd");
    assert_eq!(
        bed_json["partOf"],
        json!({ "reference": "Location/ward.icu-north.4b26fa5e8d6253a6", "display": "ICU North" })
    );
    assert_eq!(bed.id(), Some("bed.icu-north.4.3b9b9aae2ba7958f"));
}

#[test]
fn cursors_round_trip_and_refuse_anything_else() {
    for key in [
        LocationKey::ward("ICU"),
        LocationKey::ward("病棟.2"),
        LocationKey::bed("ICU", "4"),
        LocationKey::bed("a.b", "c.d"),
    ] {
        let cursor = key.cursor();
        assert!(
            cursor
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'.'),
            "{cursor}"
        );
        assert_eq!(LocationKey::from_cursor(&cursor), Some(key));
    }
    for bad in ["", "x", "w4", "wZZ", "w4A", "b49", "b49.4", "bff.41", "w"] {
        let parsed = LocationKey::from_cursor(bad);
        // `w` alone is the (never issued) empty ward name; everything else is refused.
        assert!(
            parsed.is_none() || bad == "w",
            "{bad:?} parsed as {parsed:?}"
        );
    }
}

#[test]
fn a_cursor_resumes_strictly_after_its_key_even_when_it_is_gone() {
    let keys = [
        LocationKey::ward("ICU"),
        LocationKey::bed("ICU", "1"),
        LocationKey::bed("ICU", "2"),
        LocationKey::ward("Ward 7"),
    ];
    let after = |cursor: &LocationKey| -> Vec<LocationKey> {
        let cursor = LocationKey::from_cursor(&cursor.cursor()).expect("cursor");
        keys.iter().filter(|key| **key > cursor).cloned().collect()
    };
    assert_eq!(after(&keys[1]), keys[2..]);
    assert_eq!(after(&keys[0]), keys[1..], "a ward comes before its beds");
    // A bed discharged between pages still has its place in the order.
    assert_eq!(after(&LocationKey::bed("ICU", "15")), keys[2..]);
    assert_eq!(after(&LocationKey::ward("Annex")), keys[..]);
}
