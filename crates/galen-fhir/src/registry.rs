//! Patient and Device resources to and from Galen's registry records.
//!
//! **Patient.** The medical record number is `Patient.identifier` (typed v2-0203 `MR` on output;
//! on input the identifier typed `MR` is taken, else the first one with a system and a value). The
//! name is the `official` name (else the first), given names joined with spaces. `birthDate` must
//! be a full date (Galen's record requires one). `gender` is the model's sex; absent means
//! `unknown`.
//!
//! **Ward and bed.** FHIR models a bed as a `Location` (physical type `bd`, part of the ward's
//! `Location`) referenced from the patient's current `Encounter.location`; Galen has no
//! encounters (its Locations are derived from these very fields, see [`crate::location`]), and
//! `Patient.generalPractitioner` or `Patient.contact` would be misuse. So the patient's current ward and bed travel in one complex extension,
//! [`codes::BED_LOCATION_EXTENSION`], with `valueString` sub-extensions `ward` and `bed`. Without
//! the extension the patient is not placed on a ward (a home-monitoring patient, or one an EHR
//! registers before admission); with it, `ward` is required and `bed` optional. When Galen gains
//! Encounter resources, they take over and the extension stays as a convenience copy.
//!
//! **Device.** The serial number is both `Device.serialNumber` and an identifier in
//! [`codes::DEVICE_SERIAL_SYSTEM`] (typed v2-0203 `SNO`), because clients search by identifier.
//! It is Galen's key of the device (devices log in and are resolved by it). On input it is
//! `serialNumber`, else the identifier in Galen's serial system, else the first identifier with a
//! value (a hospital's asset number or an EUI-64): a device needs some unique name.
//! `status` maps one to one (the model uses FHIR's `FHIRDeviceStatus` codes: active, inactive,
//! entered-in-error, unknown). The kind is `Device.type` in [`codes::DEVICE_KIND_SYSTEM`];
//! `manufacturer` and `modelNumber` are copied. `Device.patient` is the patient of the device's
//! current assignment, which the server looks up and passes in.
//!
//! **Fidelity.** The model keeps one identifier and one name; the rest of a posted resource has no
//! place in it. A server that keeps the posted JSON can give it back with
//! [`restore_unmapped_patient`] and [`restore_unmapped_device`].

use galen_model::{
    DeviceKind, DeviceStatus, HumanName, Identifier, NewDevice, NewPatient, PatientId,
    RegistryError, Sex,
};
use time::Date;

use crate::codes;
use crate::datatypes::{self, CodeableConcept, Extension, Extra};
use crate::error::{Error, Problem, Result};
use crate::observation::read_patient_reference;
use crate::resource::{Device, Patient, ResourceType};

const WARD: &str = "ward";
const BED: &str = "bed";

/// A registered patient as a FHIR Patient.
pub fn patient_to_fhir(patient: &galen_model::Patient) -> Patient {
    let details = &patient.details;
    let mut identifier_type =
        CodeableConcept::single(codes::IDENTIFIER_TYPE, "MR", Some("Medical record number"));
    identifier_type.text = Some("Medical record number".to_owned());
    let mut place = Vec::new();
    if !details.ward.is_empty() {
        place.push(Extension::string(WARD, details.ward.clone()));
        if !details.bed.is_empty() {
            place.push(Extension::string(BED, details.bed.clone()));
        }
    }
    let location = (!place.is_empty()).then(|| Extension {
        url: codes::BED_LOCATION_EXTENSION.to_owned(),
        extension: place,
        ..Extension::default()
    });
    let date = details.birth_date;
    Patient {
        resource_type: ResourceType::new(),
        id: Some(patient.id.0.to_string()),
        meta: None,
        extension: location.into_iter().collect(),
        identifier: vec![datatypes::Identifier {
            usage: Some("usual".to_owned()),
            kind: Some(identifier_type),
            system: Some(details.identifier.system.clone()),
            value: Some(details.identifier.value.clone()),
            extra: Extra::new(),
        }],
        active: None,
        name: vec![datatypes::HumanName {
            usage: Some("official".to_owned()),
            text: None,
            family: Some(details.name.family.clone()),
            given: details
                .name
                .given
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            extra: Extra::new(),
        }],
        gender: Some(details.sex.code().to_owned()),
        birth_date: Some(format!(
            "{:04}-{:02}-{:02}",
            date.year(),
            u8::from(date.month()),
            date.day()
        )),
        extra: Extra::new(),
    }
}

/// Reads a posted Patient into a patient to register or update. `today` bounds the birth date.
pub fn patient_from_fhir(resource: &Patient, today: Date) -> Result<NewPatient> {
    let (patient, _, _) = read_patient(resource)?;
    patient.validate(today).map_err(|error| match error {
        RegistryError::BirthDate => Error::element(
            "Patient.birthDate",
            Problem::Invalid,
            "the birth date lies in the future",
        ),
        other => Error::element("Patient", Problem::Invalid, other.to_string()),
    })?;
    Ok(patient)
}

fn bed_location_path() -> String {
    format!("Patient.extension('{}')", codes::BED_LOCATION_EXTENSION)
}

/// Maps a posted Patient without checking it against "today"; also returns which identifier and
/// which name were used.
fn read_patient(resource: &Patient) -> Result<(NewPatient, usize, usize)> {
    let identifier_index = resource
        .identifier
        .iter()
        .position(|identifier| {
            identifier
                .kind
                .as_ref()
                .is_some_and(|kind| kind.has(codes::IDENTIFIER_TYPE, "MR"))
        })
        .or_else(|| {
            resource
                .identifier
                .iter()
                .position(|identifier| identifier.system.is_some() && identifier.value.is_some())
        })
        .or_else(|| (!resource.identifier.is_empty()).then_some(0))
        .ok_or_else(|| {
            Error::element(
                "Patient.identifier",
                Problem::Required,
                "the medical record number is required as an identifier with system and value",
            )
        })?;
    let identifier = &resource.identifier[identifier_index];
    let path = format!("Patient.identifier[{identifier_index}]");
    let system = non_empty(identifier.system.as_deref(), &format!("{path}.system"))?;
    let value = non_empty(identifier.value.as_deref(), &format!("{path}.value"))?;

    let name_index = resource
        .name
        .iter()
        .position(|name| name.usage.as_deref() == Some("official"))
        .or_else(|| (!resource.name.is_empty()).then_some(0))
        .ok_or_else(|| {
            Error::element(
                "Patient.name",
                Problem::Required,
                "a name with a family name is required",
            )
        })?;
    let name = &resource.name[name_index];
    let family = non_empty(
        name.family.as_deref(),
        &format!("Patient.name[{name_index}].family"),
    )?;
    let given = name
        .given
        .iter()
        .map(|given| given.trim())
        .filter(|given| !given.is_empty())
        .collect::<Vec<_>>()
        .join(" ");

    let birth_text = resource.birth_date.as_deref().ok_or_else(|| {
        Error::element(
            "Patient.birthDate",
            Problem::Required,
            "birthDate is required (YYYY-MM-DD)",
        )
    })?;
    let birth_date = NewPatient::parse_birth_date(birth_text).map_err(|_| {
        Error::element(
            "Patient.birthDate",
            Problem::Invalid,
            "birthDate is not a full past date YYYY-MM-DD (Galen needs the day)",
        )
    })?;
    let sex = match resource.gender.as_deref() {
        None => Sex::Unknown,
        Some(code) => Sex::parse(code).map_err(|_| {
            Error::element(
                "Patient.gender",
                Problem::Invalid,
                "gender must be male, female, other or unknown",
            )
        })?,
    };
    // Without the extension the patient is not placed on a ward (home monitoring, or registered
    // by an EHR before admission). With it, the ward is required and the bed optional.
    let (ward, bed) = match resource
        .extension
        .iter()
        .find(|extension| extension.url == codes::BED_LOCATION_EXTENSION)
    {
        None => (String::new(), String::new()),
        Some(location) => {
            let part = |url: &str| {
                location
                    .nested(url)
                    .and_then(|nested| nested.value_string.as_deref())
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_owned()
            };
            let ward = part(WARD);
            if ward.is_empty() {
                return Err(Error::element(
                    format!("{}.extension('{WARD}').value", bed_location_path()),
                    Problem::Required,
                    "the location extension needs the ward (sub-extension ward, valueString)",
                ));
            }
            (ward, part(BED))
        }
    };
    let patient = NewPatient {
        identifier: Identifier {
            system: system.to_owned(),
            value: value.to_owned(),
        },
        name: HumanName {
            family: family.to_owned(),
            given,
        },
        birth_date,
        sex,
        ward,
        bed,
    };
    Ok((patient, identifier_index, name_index))
}

fn non_empty<'a>(value: Option<&'a str>, path: &str) -> Result<&'a str> {
    match value.map(str::trim) {
        Some(text) if !text.is_empty() => Ok(text),
        _ => Err(Error::element(
            path,
            Problem::Required,
            "a value is required",
        )),
    }
}

/// The Patient to serve for `patient`, given the resource the client last posted for it: when
/// the posted resource still maps to the registered record, it is served as posted (with the
/// server's id and metadata); otherwise the record wins and the posted content the model does
/// not carry (other identifiers, names and extensions, and every element Galen does not model)
/// is added back.
pub fn restore_unmapped_patient(patient: &galen_model::Patient, posted: &Patient) -> Patient {
    let mut generated = patient_to_fhir(patient);
    match read_patient(posted) {
        Ok((details, _, _)) if details == patient.details => {
            let mut served = posted.clone();
            served.id = generated.id;
            served.meta = merge_meta(generated.meta, posted.meta.as_ref());
            served
        }
        Ok((_, identifier_index, name_index)) => {
            add_unmapped(
                &mut generated,
                posted,
                Some(identifier_index),
                Some(name_index),
            );
            generated
        }
        Err(_) => {
            add_unmapped(&mut generated, posted, None, None);
            generated
        }
    }
}

fn add_unmapped(
    generated: &mut Patient,
    posted: &Patient,
    identifier_index: Option<usize>,
    name_index: Option<usize>,
) {
    generated.extension.extend(
        posted
            .extension
            .iter()
            .filter(|extension| extension.url != codes::BED_LOCATION_EXTENSION)
            .cloned(),
    );
    generated.identifier.extend(
        posted
            .identifier
            .iter()
            .enumerate()
            .filter(|(index, _)| Some(*index) != identifier_index)
            .map(|(_, identifier)| identifier.clone()),
    );
    generated.name.extend(
        posted
            .name
            .iter()
            .enumerate()
            .filter(|(index, _)| Some(*index) != name_index)
            .map(|(_, name)| name.clone()),
    );
    generated.active = posted.active;
    generated.meta = merge_meta(generated.meta.take(), posted.meta.as_ref());
    merge_extra(&mut generated.extra, &posted.extra);
}

/// The server's metadata, plus the profiles and other members (tags, security labels) a client
/// sent.
fn merge_meta(
    server: Option<datatypes::Meta>,
    posted: Option<&datatypes::Meta>,
) -> Option<datatypes::Meta> {
    let Some(posted) = posted else {
        return server;
    };
    let mut meta = server.unwrap_or_default();
    for profile in &posted.profile {
        if !meta.profile.contains(profile) {
            meta.profile.push(profile.clone());
        }
    }
    merge_extra(&mut meta.extra, &posted.extra);
    Some(meta)
}

fn merge_extra(target: &mut Extra, posted: &Extra) {
    for (key, value) in posted {
        target.entry(key.clone()).or_insert_with(|| value.clone());
    }
}

/// A plain-language name of a device kind.
const fn kind_display(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Monitor => "Multi-parameter patient monitor",
        DeviceKind::PulseOximeter => "Pulse oximeter",
        DeviceKind::BloodPressureCuff => "Blood pressure cuff",
        DeviceKind::Thermometer => "Thermometer",
        DeviceKind::Scale => "Weighing scale",
        DeviceKind::Wearable => "Wearable sensor",
        DeviceKind::Gateway => "Gateway",
        DeviceKind::Other => "Other device",
    }
}

/// A registered device as a FHIR Device. `patient` is the patient of its current assignment.
pub fn device_to_fhir(device: &galen_model::Device, patient: Option<PatientId>) -> Device {
    let details = &device.details;
    let non_empty = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    let mut serial_type =
        CodeableConcept::single(codes::IDENTIFIER_TYPE, "SNO", Some("Serial Number"));
    serial_type.text = Some("Serial number".to_owned());
    let kind = details.kind;
    Device {
        resource_type: ResourceType::new(),
        id: Some(device.id.0.to_string()),
        meta: None,
        extension: Vec::new(),
        identifier: vec![datatypes::Identifier {
            usage: None,
            kind: Some(serial_type),
            system: Some(codes::DEVICE_SERIAL_SYSTEM.to_owned()),
            value: Some(details.serial.clone()),
            extra: Extra::new(),
        }],
        status: Some(details.status.code().to_owned()),
        manufacturer: non_empty(&details.manufacturer),
        serial_number: Some(details.serial.clone()),
        model_number: non_empty(&details.model),
        device_type: Some(CodeableConcept::single(
            codes::DEVICE_KIND_SYSTEM,
            kind.code(),
            Some(kind_display(kind)),
        )),
        patient: patient.map(|patient| datatypes::Reference::to("Patient", patient.0)),
        extra: Extra::new(),
    }
}

/// A posted Device read into Galen's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInput {
    /// The device to register or update.
    pub device: NewDevice,
    /// The patient `Device.patient` names. Assignments are managed by the assignment API: the
    /// server decides whether to refuse a value that differs from the current assignment.
    pub patient: Option<PatientId>,
}

/// Reads a posted Device. Absent `status` means `active`; absent `type` (or one without a Galen
/// device-kind coding) means `other`.
pub fn device_from_fhir(resource: &Device) -> Result<DeviceInput> {
    let (device, patient, _) = read_device(resource)?;
    device.validate().map_err(|error| {
        Error::element("Device.serialNumber", Problem::Required, error.to_string())
    })?;
    Ok(DeviceInput { device, patient })
}

/// Maps a posted Device; also returns the index of the identifier that carried the serial.
fn read_device(resource: &Device) -> Result<(NewDevice, Option<PatientId>, Option<usize>)> {
    let serial_index = resource
        .identifier
        .iter()
        .position(|identifier| identifier.system.as_deref() == Some(codes::DEVICE_SERIAL_SYSTEM));
    let from_identifier = serial_index.map(|index| {
        (
            index,
            resource.identifier[index]
                .value
                .as_deref()
                .map(str::trim)
                .unwrap_or_default(),
        )
    });
    let from_field = resource.serial_number.as_deref().map(str::trim);
    // Neither names a serial: the first identifier with a value is the device's key.
    let (serial_index, from_identifier) = match (from_field, from_identifier) {
        (None, None) => {
            let first = resource
                .identifier
                .iter()
                .enumerate()
                .find_map(|(index, identifier)| {
                    let value = identifier.value.as_deref().map(str::trim)?;
                    (!value.is_empty()).then_some((index, value))
                });
            (first.map(|(index, _)| index), first)
        }
        (_, from_identifier) => (serial_index, from_identifier),
    };
    let serial = match (from_field, from_identifier) {
        (Some(field), Some((index, identifier))) if field != identifier => {
            return Err(Error::element(
                format!("Device.identifier[{index}].value"),
                Problem::Invalid,
                "the serial identifier differs from serialNumber",
            ));
        }
        (Some(field), _) => field,
        (None, Some((_, identifier))) => identifier,
        (None, None) => "",
    };
    if serial.is_empty() {
        return Err(Error::element(
            "Device.serialNumber",
            Problem::Required,
            format!(
                "the serial number is required (serialNumber, an identifier in {}, or another identifier with a value)",
                codes::DEVICE_SERIAL_SYSTEM
            ),
        ));
    }
    let status = match resource.status.as_deref() {
        None => DeviceStatus::Active,
        Some(code) => DeviceStatus::parse(code).map_err(|_| {
            Error::element(
                "Device.status",
                Problem::Invalid,
                "status must be active, inactive, entered-in-error or unknown",
            )
        })?,
    };
    let mut kind = DeviceKind::Other;
    if let Some(concept) = &resource.device_type {
        for (index, coding) in concept.coding.iter().enumerate() {
            if coding.system.as_deref() != Some(codes::DEVICE_KIND_SYSTEM) {
                continue;
            }
            let code = coding.code.as_deref().unwrap_or_default();
            kind = DeviceKind::parse(code).map_err(|_| {
                Error::element(
                    format!("Device.type.coding[{index}].code"),
                    Problem::Invalid,
                    format!(
                        "the code is not a device kind of {}: {}",
                        codes::DEVICE_KIND_SYSTEM,
                        DeviceKind::ALL.map(DeviceKind::code).join(", ")
                    ),
                )
            })?;
            break;
        }
    }
    let patient = resource
        .patient
        .as_ref()
        .map(|reference| read_patient_reference(reference, "Device.patient"))
        .transpose()?;
    let device = NewDevice {
        serial: serial.to_owned(),
        manufacturer: resource
            .manufacturer
            .as_deref()
            .map(str::trim)
            .unwrap_or_default()
            .to_owned(),
        model: resource
            .model_number
            .as_deref()
            .map(str::trim)
            .unwrap_or_default()
            .to_owned(),
        kind,
        status,
    };
    Ok((device, patient, serial_index))
}

/// The Device to serve for `device` (currently assigned to `patient`), given the resource the
/// client last posted for it; as [`restore_unmapped_patient`]. `Device.patient` always reflects
/// the current assignment.
pub fn restore_unmapped_device(
    device: &galen_model::Device,
    patient: Option<PatientId>,
    posted: &Device,
) -> Device {
    let mut generated = device_to_fhir(device, patient);
    match read_device(posted) {
        Ok((details, _, _)) if details == device.details => {
            let mut served = posted.clone();
            served.id = generated.id;
            served.meta = merge_meta(generated.meta, posted.meta.as_ref());
            served.patient = generated.patient;
            served
        }
        mapped => {
            let serial_index = mapped.ok().and_then(|(_, _, index)| index);
            generated.identifier.extend(
                posted
                    .identifier
                    .iter()
                    .enumerate()
                    .filter(|(index, _)| Some(*index) != serial_index)
                    .map(|(_, identifier)| identifier.clone()),
            );
            generated.extension.extend(posted.extension.iter().cloned());
            generated.meta = merge_meta(generated.meta.take(), posted.meta.as_ref());
            merge_extra(&mut generated.extra, &posted.extra);
            generated
        }
    }
}

#[cfg(test)]
mod tests;
