use galen_model::{DeviceId, Patient as ModelPatient};
use serde_json::{Value, json};

use super::*;
use crate::resource::parse_resource;

fn today() -> Date {
    NewPatient::parse_birth_date("2026-11-23").expect("today")
}

fn model_patient() -> ModelPatient {
    ModelPatient {
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

fn patient_json() -> Value {
    json!({
        "resourceType": "Patient",
        "extension": [{
            "url": codes::BED_LOCATION_EXTENSION,
            "extension": [
                { "url": "ward", "valueString": "Cardiology" },
                { "url": "bed", "valueString": "4B" }
            ]
        }],
        "identifier": [{ "system": "urn:oid:1.2.3.4", "value": "MRN-1" }],
        "name": [{ "family": "Smith", "given": ["Mary", "Ann"] }],
        "gender": "female",
        "birthDate": "1950-02-28"
    })
}

fn read_patient_json(body: &Value) -> Result<NewPatient> {
    let resource: Patient = parse_resource(body.to_string().as_bytes())?;
    patient_from_fhir(&resource, today())
}

fn patient_error(change: impl FnOnce(&mut Value)) -> (String, Problem) {
    let mut body = patient_json();
    change(&mut body);
    match read_patient_json(&body) {
        Err(Error::Element { path, problem, .. }) => (path, problem),
        other => panic!("{body}: expected an element error, got {other:?}"),
    }
}

#[test]
fn patient_is_served_with_mrn_name_and_bed_location() {
    let json = serde_json::to_value(patient_to_fhir(&model_patient())).expect("serialises");
    assert_eq!(
        json,
        json!({
            "resourceType": "Patient",
            "id": "12",
            "extension": [{
                "url": "https://galen.invalid/fhir/StructureDefinition/bed-location",
                "extension": [
                    { "url": "ward", "valueString": "Cardiology" },
                    { "url": "bed", "valueString": "4B" }
                ]
            }],
            "identifier": [{
                "use": "usual",
                "type": {
                    "coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                        "code": "MR",
                        "display": "Medical record number"
                    }],
                    "text": "Medical record number"
                },
                "system": "urn:oid:1.2.3.4",
                "value": "MRN-1"
            }],
            "name": [{ "use": "official", "family": "Smith", "given": ["Mary", "Ann"] }],
            "gender": "female",
            "birthDate": "1950-02-28"
        })
    );
}

#[test]
fn patients_round_trip_through_fhir() {
    let mut patient = model_patient();
    for sex in [Sex::Male, Sex::Female, Sex::Other, Sex::Unknown] {
        patient.details.sex = sex;
        for given in ["Mary Ann", "", "Jo"] {
            patient.details.name.given = given.to_owned();
            let resource = patient_to_fhir(&patient);
            let body = serde_json::to_vec(&resource).expect("serialises");
            let parsed: Patient = parse_resource(&body).expect("parses");
            assert_eq!(
                patient_from_fhir(&parsed, today()),
                Ok(patient.details.clone()),
                "{sex:?} {given:?}"
            );
        }
    }
    assert_eq!(
        read_patient_json(&patient_json()),
        Ok(model_patient().details)
    );
}

#[test]
fn patient_input_choices() {
    // Absent gender is unknown.
    let mut body = patient_json();
    body.as_object_mut().expect("object").remove("gender");
    assert_eq!(
        read_patient_json(&body).map(|patient| patient.sex),
        Ok(Sex::Unknown)
    );
    // The MR-typed identifier wins over an earlier one; the official name over an earlier one.
    let mut body = patient_json();
    body["identifier"] = json!([
        { "system": "urn:national", "value": "N-9" },
        { "type": { "coding": [{ "system": codes::IDENTIFIER_TYPE, "code": "MR" }] }, "system": "urn:oid:1.2.3.4", "value": "MRN-7" }
    ]);
    body["name"] = json!([
        { "use": "nickname", "given": ["Annie"] },
        { "use": "official", "family": "Smith", "given": ["Ann"] }
    ]);
    let patient = read_patient_json(&body).expect("valid");
    assert_eq!(patient.identifier.value, "MRN-7");
    assert_eq!(patient.name.given, "Ann");
}

/// An edit of a valid Patient body.
type Change = Box<dyn FnOnce(&mut Value)>;

#[test]
fn patient_refusals_name_the_element() {
    let bed_location = format!("Patient.extension('{}')", codes::BED_LOCATION_EXTENSION);
    let cases: Vec<(Change, String, Problem)> = vec![
        (
            Box::new(|body| {
                body.as_object_mut().expect("object").remove("identifier");
            }),
            "Patient.identifier".to_owned(),
            Problem::Required,
        ),
        (
            Box::new(|body| body["identifier"] = json!([{ "value": "MRN-1" }])),
            "Patient.identifier[0].system".to_owned(),
            Problem::Required,
        ),
        (
            Box::new(|body| body["identifier"] = json!([{ "system": "urn:x", "value": " " }])),
            "Patient.identifier[0].value".to_owned(),
            Problem::Required,
        ),
        (
            Box::new(|body| {
                body.as_object_mut().expect("object").remove("name");
            }),
            "Patient.name".to_owned(),
            Problem::Required,
        ),
        (
            Box::new(|body| body["name"] = json!([{ "given": ["Ann"] }])),
            "Patient.name[0].family".to_owned(),
            Problem::Required,
        ),
        (
            Box::new(|body| {
                body.as_object_mut().expect("object").remove("birthDate");
            }),
            "Patient.birthDate".to_owned(),
            Problem::Required,
        ),
        (
            Box::new(|body| body["birthDate"] = json!("1950")),
            "Patient.birthDate".to_owned(),
            Problem::Invalid,
        ),
        (
            Box::new(|body| body["birthDate"] = json!("2026-11-24")),
            "Patient.birthDate".to_owned(),
            Problem::Invalid,
        ),
        (
            Box::new(|body| body["gender"] = json!("f")),
            "Patient.gender".to_owned(),
            Problem::Invalid,
        ),
        (
            Box::new(|body| {
                body["extension"][0]["extension"] = json!([{ "url": "bed", "valueString": "4B" }]);
            }),
            format!("{bed_location}.extension('ward').value"),
            Problem::Required,
        ),
    ];
    for (change, path, problem) in cases {
        assert_eq!(patient_error(change), (path.clone(), problem), "{path}");
    }
    // Without the location extension the patient is not placed; with a ward and no bed, on the
    // ward without a bed.
    let mut body = patient_json();
    body.as_object_mut().expect("object").remove("extension");
    let unplaced = read_patient_json(&body).expect("not placed");
    assert_eq!((unplaced.ward.as_str(), unplaced.bed.as_str()), ("", ""));
    let served = serde_json::to_value(patient_to_fhir(&galen_model::Patient {
        id: PatientId(3),
        details: unplaced,
    }))
    .expect("serialises");
    assert!(served.get("extension").is_none(), "{served}");
    let mut body = patient_json();
    body["extension"][0]["extension"] = json!([{ "url": "ward", "valueString": "Home" }]);
    let on_ward = read_patient_json(&body).expect("no bed");
    assert_eq!((on_ward.ward.as_str(), on_ward.bed.as_str()), ("Home", ""));
    let served = serde_json::to_value(patient_to_fhir(&galen_model::Patient {
        id: PatientId(3),
        details: on_ward,
    }))
    .expect("serialises");
    assert_eq!(
        served["extension"][0]["extension"],
        json!([{ "url": "ward", "valueString": "Home" }])
    );
    // Today is a valid birth date; tomorrow is not (checked above).
    let mut body = patient_json();
    body["birthDate"] = json!("2026-11-23");
    assert!(read_patient_json(&body).is_ok());
}

#[test]
fn posted_patient_is_served_back_with_everything_it_carried() {
    let mut posted_json = patient_json();
    posted_json["telecom"] = json!([{ "system": "phone", "value": "555-0100" }]);
    posted_json["address"] = json!([{ "city": "Leeds" }]);
    posted_json["meta"] = json!({ "tag": [{ "code": "vip" }] });
    posted_json["extension"]
        .as_array_mut()
        .expect("extensions")
        .push(json!({ "url": "http://example.org/religion", "valueString": "none" }));
    posted_json["identifier"]
        .as_array_mut()
        .expect("identifiers")
        .push(json!({ "system": "urn:national", "value": "N-9" }));
    let posted: Patient = parse_resource(posted_json.to_string().as_bytes()).expect("parses");
    let mut registered = model_patient();
    registered.details = patient_from_fhir(&posted, today()).expect("maps");

    let served = restore_unmapped_patient(&registered, &posted);
    let mut expected = posted_json.clone();
    expected["id"] = json!("12");
    assert_eq!(serde_json::to_value(&served).expect("serialises"), expected);

    // After the record changed elsewhere (a bed move), the record wins and the rest is kept.
    registered.details.bed = "7".to_owned();
    let served = restore_unmapped_patient(&registered, &posted);
    let json = serde_json::to_value(&served).expect("serialises");
    assert_eq!(json["extension"][0]["extension"][1]["valueString"], "7");
    assert_eq!(json["extension"][1]["url"], "http://example.org/religion");
    assert_eq!(json["identifier"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["identifier"][1]["value"], "N-9");
    assert_eq!(json["telecom"][0]["value"], "555-0100");
    assert_eq!(json["meta"]["tag"][0]["code"], "vip");
    assert_eq!(
        patient_from_fhir(&served, today()),
        Ok(registered.details.clone()),
        "what is served maps to the record"
    );
}

fn model_device() -> galen_model::Device {
    galen_model::Device {
        id: DeviceId(7),
        details: NewDevice {
            serial: "SN-1".to_owned(),
            manufacturer: "Acme".to_owned(),
            model: "Ox-2".to_owned(),
            kind: DeviceKind::PulseOximeter,
            status: DeviceStatus::Active,
        },
    }
}

#[test]
fn device_is_served_with_serial_status_kind_and_patient() {
    let json = serde_json::to_value(device_to_fhir(&model_device(), Some(PatientId(12))))
        .expect("serialises");
    assert_eq!(
        json,
        json!({
            "resourceType": "Device",
            "id": "7",
            "identifier": [{
                "type": {
                    "coding": [{ "system": codes::IDENTIFIER_TYPE, "code": "SNO", "display": "Serial Number" }],
                    "text": "Serial number"
                },
                "system": codes::DEVICE_SERIAL_SYSTEM,
                "value": "SN-1"
            }],
            "status": "active",
            "manufacturer": "Acme",
            "serialNumber": "SN-1",
            "modelNumber": "Ox-2",
            "type": {
                "coding": [{ "system": codes::DEVICE_KIND_SYSTEM, "code": "pulse_oximeter", "display": "Pulse oximeter" }],
                "text": "Pulse oximeter"
            },
            "patient": { "reference": "Patient/12" }
        })
    );
    let unassigned = device_to_fhir(&model_device(), None);
    assert!(unassigned.patient.is_none());
}

#[test]
fn devices_round_trip_for_every_status_and_kind() {
    let mut device = model_device();
    for status in [
        DeviceStatus::Active,
        DeviceStatus::Inactive,
        DeviceStatus::EnteredInError,
        DeviceStatus::Unknown,
    ] {
        for kind in DeviceKind::ALL {
            device.details.status = status;
            device.details.kind = kind;
            let resource = device_to_fhir(&device, Some(PatientId(3)));
            assert_eq!(resource.status.as_deref(), Some(status.code()));
            let body = serde_json::to_vec(&resource).expect("serialises");
            let parsed: Device = parse_resource(&body).expect("parses");
            assert_eq!(
                device_from_fhir(&parsed),
                Ok(DeviceInput {
                    device: device.details.clone(),
                    patient: Some(PatientId(3))
                })
            );
        }
    }
    device.details.manufacturer.clear();
    device.details.model.clear();
    let resource = device_to_fhir(&device, None);
    assert!(resource.manufacturer.is_none() && resource.model_number.is_none());
    assert_eq!(
        device_from_fhir(&resource).map(|input| input.device),
        Ok(device.details)
    );
}

fn device_input(body: Value) -> Result<DeviceInput> {
    let resource: Device = parse_resource(body.to_string().as_bytes())?;
    device_from_fhir(&resource)
}

#[test]
fn device_input_defaults_and_refusals() {
    let minimal =
        device_input(json!({ "resourceType": "Device", "serialNumber": "SN-9" })).expect("minimal");
    assert_eq!(
        minimal.device,
        NewDevice {
            serial: "SN-9".to_owned(),
            manufacturer: String::new(),
            model: String::new(),
            kind: DeviceKind::Other,
            status: DeviceStatus::Active,
        }
    );
    let by_identifier = device_input(json!({
        "resourceType": "Device",
        "identifier": [{ "system": codes::DEVICE_SERIAL_SYSTEM, "value": "SN-8" }],
        "type": { "coding": [
            { "system": "http://snomed.info/sct", "code": "448703006" },
            { "system": codes::DEVICE_KIND_SYSTEM, "code": "thermometer" }
        ] }
    }))
    .expect("identifier");
    assert_eq!(by_identifier.device.serial, "SN-8");
    assert_eq!(by_identifier.device.kind, DeviceKind::Thermometer);

    let path_of = |body: Value| match device_input(body) {
        Err(Error::Element { path, problem, .. }) => (path, problem),
        other => panic!("expected an element error, got {other:?}"),
    };
    assert_eq!(
        path_of(json!({ "resourceType": "Device", "status": "active" })),
        ("Device.serialNumber".to_owned(), Problem::Required)
    );
    assert_eq!(
        path_of(json!({ "resourceType": "Device", "identifier": [{ "system": "urn:x" }] })),
        ("Device.serialNumber".to_owned(), Problem::Required)
    );
    // Without a serial, the first identifier with a value is the device's key, and a device
    // posted that way is served as posted.
    let posted = json!({
        "resourceType": "Device",
        "identifier": [
            { "system": "urn:x" },
            { "system": "http://goodcare.org/devices/id", "value": "345675" }
        ]
    });
    let by_asset = device_input(posted.clone()).expect("asset number");
    assert_eq!(by_asset.device.serial, "345675");
    let parsed: Device = parse_resource(posted.to_string().as_bytes()).expect("parses");
    let registered = galen_model::Device {
        id: DeviceId(4),
        details: by_asset.device,
    };
    let mut expected = posted;
    expected["id"] = json!("4");
    assert_eq!(
        serde_json::to_value(restore_unmapped_device(&registered, None, &parsed))
            .expect("serialises"),
        expected
    );
    assert_eq!(
        path_of(json!({
            "resourceType": "Device",
            "serialNumber": "SN-1",
            "identifier": [{ "system": "urn:x", "value": "A" }, { "system": codes::DEVICE_SERIAL_SYSTEM, "value": "SN-2" }]
        })),
        ("Device.identifier[1].value".to_owned(), Problem::Invalid)
    );
    assert_eq!(
        path_of(json!({ "resourceType": "Device", "serialNumber": "SN-1", "status": "broken" })),
        ("Device.status".to_owned(), Problem::Invalid)
    );
    assert_eq!(
        path_of(json!({
            "resourceType": "Device",
            "serialNumber": "SN-1",
            "type": { "coding": [{ "system": codes::DEVICE_KIND_SYSTEM, "code": "toaster" }] }
        })),
        ("Device.type.coding[0].code".to_owned(), Problem::Invalid)
    );
    assert_eq!(
        path_of(
            json!({ "resourceType": "Device", "serialNumber": "SN-1", "patient": { "reference": "Patient/x" } })
        ),
        ("Device.patient.reference".to_owned(), Problem::Invalid)
    );
    assert_eq!(
        path_of(
            json!({ "resourceType": "Device", "serialNumber": "SN-1", "patient": { "display": "Ann" } })
        ),
        ("Device.patient".to_owned(), Problem::NotSupported)
    );
}

#[test]
fn posted_device_is_served_back_with_its_content() {
    let posted_json = json!({
        "resourceType": "Device",
        "identifier": [
            { "system": codes::DEVICE_SERIAL_SYSTEM, "value": "SN-1" },
            { "system": "urn:asset", "value": "A-17" }
        ],
        "status": "active",
        "manufacturer": "Acme",
        "serialNumber": "SN-1",
        "modelNumber": "Ox-2",
        "type": { "coding": [{ "system": codes::DEVICE_KIND_SYSTEM, "code": "pulse_oximeter" }] },
        "note": [{ "text": "spare probe in drawer" }]
    });
    let posted: Device = parse_resource(posted_json.to_string().as_bytes()).expect("parses");
    let device = model_device();
    assert_eq!(
        device_from_fhir(&posted).map(|input| input.device),
        Ok(device.details.clone())
    );
    let served = restore_unmapped_device(&device, Some(PatientId(12)), &posted);
    let mut expected = posted_json.clone();
    expected["id"] = json!("7");
    expected["patient"] = json!({ "reference": "Patient/12" });
    assert_eq!(serde_json::to_value(&served).expect("serialises"), expected);

    let mut retired = device.clone();
    retired.details.status = DeviceStatus::Inactive;
    let served = restore_unmapped_device(&retired, None, &posted);
    let json = serde_json::to_value(&served).expect("serialises");
    assert_eq!(json["status"], "inactive");
    assert_eq!(json["note"][0]["text"], "spare probe in drawer");
    assert_eq!(json["identifier"][1]["value"], "A-17");
    assert_eq!(json["identifier"].as_array().map(Vec::len), Some(2));
    assert!(json.get("patient").is_none());
}
