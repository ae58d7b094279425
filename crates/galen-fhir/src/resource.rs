//! The FHIR R4 resources Galen serves, as serde types.
//!
//! Every resource carries a [`ResourceType`] marker that serialises as its `resourceType` and
//! refuses, on deserialisation, any other value: a `Device` body can never be read as a `Patient`.
//! [`parse_resource`] checks `resourceType` before anything else so that the client gets one clear
//! error instead of a list of mismatched elements. Elements a client must send are `Option`s here
//! so that their absence is reported by the conversions with the element's FHIRPath rather than
//! by serde with a line number.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit_event::AuditEvent;
use crate::capability::CapabilityStatement;
use crate::consent::Consent;
use crate::datatypes::{
    CodeableConcept, Extension, Extra, HumanName, Identifier, Meta, Period, Quantity, Reference,
};
use crate::device_metric::DeviceMetric;
use crate::error::{Error, Result};
use crate::location::Location;
use crate::outcome::{IssueSeverity, IssueType};

/// A FHIR resource type.
pub trait FhirResource {
    /// The `resourceType` value.
    const TYPE: &'static str;

    /// The logical id, if the resource has one.
    fn id(&self) -> Option<&str>;
}

/// The `resourceType` member of resource `R`: always `R::TYPE` on output, checked on input.
pub struct ResourceType<R>(PhantomData<fn() -> R>);

impl<R> ResourceType<R> {
    /// The marker.
    pub const fn new() -> ResourceType<R> {
        ResourceType(PhantomData)
    }
}

impl<R> Default for ResourceType<R> {
    fn default() -> Self {
        ResourceType::new()
    }
}

impl<R> Clone for ResourceType<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for ResourceType<R> {}

impl<R> PartialEq for ResourceType<R> {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl<R> Eq for ResourceType<R> {}

impl<R: FhirResource> fmt::Debug for ResourceType<R> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(R::TYPE)
    }
}

impl<R: FhirResource> Serialize for ResourceType<R> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(R::TYPE)
    }
}

impl<'de, R: FhirResource> Deserialize<'de> for ResourceType<R> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let found = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        if found == R::TYPE {
            Ok(ResourceType::new())
        } else {
            Err(de::Error::custom(format!(
                "resourceType must be {:?}, found {found:?}",
                R::TYPE
            )))
        }
    }
}

/// Parses a request body as resource `R`, checking `resourceType` first.
///
/// Errors: [`Error::Syntax`] when the body is not a JSON object or an element has the wrong JSON
/// type; [`Error::ResourceType`] when `resourceType` is absent or another type.
pub fn parse_resource<R: FhirResource + DeserializeOwned>(body: &[u8]) -> Result<R> {
    let value: Value = serde_json::from_slice(body).map_err(|error| Error::Syntax {
        message: crate::redact::json_error(&error),
    })?;
    resource_from_value(value)
}

/// [`parse_resource`] for an already parsed JSON value.
pub fn resource_from_value<R: FhirResource + DeserializeOwned>(value: Value) -> Result<R> {
    let Value::Object(object) = &value else {
        return Err(Error::Syntax {
            message: "a resource must be a JSON object".to_owned(),
        });
    };
    match object.get("resourceType") {
        Some(Value::String(found)) if found == R::TYPE => {}
        Some(Value::String(found)) => {
            return Err(Error::ResourceType {
                expected: R::TYPE,
                found: Some(found.clone()),
            });
        }
        Some(other) => {
            return Err(Error::ResourceType {
                expected: R::TYPE,
                found: Some(other.to_string()),
            });
        }
        None => {
            return Err(Error::ResourceType {
                expected: R::TYPE,
                found: None,
            });
        }
    }
    serde_json::from_value(value).map_err(|error| Error::Syntax {
        message: crate::redact::json_error(&error),
    })
}

macro_rules! impl_resource {
    ($name:ident, $text:literal) => {
        impl FhirResource for $name {
            const TYPE: &'static str = $text;

            fn id(&self) -> Option<&str> {
                self.id.as_deref()
            }
        }
    };
}

/// `Patient`: demographics of a person receiving care.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Patient {
    /// Always `Patient`.
    pub resource_type: ResourceType<Patient>,
    /// Logical id (Galen's numeric patient id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Extensions (Galen's ward and bed among them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extension: Vec<Extension>,
    /// Business identifiers (the medical record number).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    /// Whether the record is in active use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name: Vec<HumanName>,
    /// Administrative gender: `male`, `female`, `other` or `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    /// Date of birth (FHIR date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<String>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}
impl_resource!(Patient, "Patient");

/// `Device`: a medical device that reports measurements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// Always `Device`.
    pub resource_type: ResourceType<Device>,
    /// Logical id (Galen's numeric device id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Extensions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extension: Vec<Extension>,
    /// Business identifiers (the serial number in Galen's serial system).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    /// `active`, `inactive`, `entered-in-error` or `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Manufacturer name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// Manufacturer serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Model number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_number: Option<String>,
    /// Kind of device.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<CodeableConcept>,
    /// The patient the device is currently assigned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<Reference>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}
impl_resource!(Device, "Device");

/// `Observation`: one measurement (or a panel of components such as blood pressure).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// Always `Observation`.
    pub resource_type: ResourceType<Observation>,
    /// Logical id (see [`crate::observation::ObservationKey`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata (claimed vital-signs profiles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Business identifiers (a sender's own id of the measurement).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    /// `registered`, `preliminary`, `final`, `amended`, ... (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Classification (`vital-signs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<CodeableConcept>,
    /// What was measured (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeableConcept>,
    /// Whom it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Reference>,
    /// When it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_date_time: Option<String>,
    /// When it was measured, as an instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_instant: Option<String>,
    /// When it was measured, as an interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_period: Option<Period>,
    /// When the result was made available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued: Option<String>,
    /// The value (Galen serves and reads only `valueQuantity`; other `value[x]` stay in `extra`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_quantity: Option<Quantity>,
    /// Why there is no value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_absent_reason: Option<CodeableConcept>,
    /// The device that measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Reference>,
    /// Components (systolic, diastolic, mean of a blood pressure panel).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub component: Vec<ObservationComponent>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}
impl_resource!(Observation, "Observation");

/// `Observation.component`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservationComponent {
    /// What the component measures (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeableConcept>,
    /// The value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_quantity: Option<Quantity>,
    /// Why there is no value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_absent_reason: Option<CodeableConcept>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Flag`: a prospective warning about a patient for those providing care. Galen serves its
/// alarms as Flags (see [`crate::clinical`] for why a Flag and not a DetectedIssue).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flag {
    /// Always `Flag`.
    pub resource_type: ResourceType<Flag>,
    /// Logical id (the alarm id, see [`crate::clinical::FlagKey`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Extensions (priority, supporting records, the alarm's lifecycle).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extension: Vec<Extension>,
    /// `active`, `inactive` or `entered-in-error` (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Classification.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<CodeableConcept>,
    /// What the flag is about (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeableConcept>,
    /// Whom it is about (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Reference>,
    /// When it applies; no end while it is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    /// Who or what raised it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<Reference>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}
impl_resource!(Flag, "Flag");

/// `OperationOutcome`: the errors and warnings of an interaction.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationOutcome {
    /// Always `OperationOutcome`.
    pub resource_type: ResourceType<OperationOutcome>,
    /// Logical id (outcomes in responses usually have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The issues (at least one).
    pub issue: Vec<OperationOutcomeIssue>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}
impl_resource!(OperationOutcome, "OperationOutcome");

/// `OperationOutcome.issue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationOutcomeIssue {
    /// How bad.
    pub severity: IssueSeverity,
    /// What kind of issue.
    pub code: IssueType,
    /// A coded detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<CodeableConcept>,
    /// What happened and what to do, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<String>,
    /// FHIRPath of the elements at fault.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expression: Vec<String>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Bundle`: a collection of resources (Galen serves `searchset` bundles).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    /// Always `Bundle`.
    pub resource_type: ResourceType<Bundle>,
    /// Logical id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// `searchset`, `collection`, `transaction`, ...
    #[serde(rename = "type")]
    pub bundle_type: String,
    /// Number of matches of a search (all pages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// `self`, `next`, ... links.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link: Vec<BundleLink>,
    /// The entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry: Vec<BundleEntry>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}
impl_resource!(Bundle, "Bundle");

/// `Bundle.link`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleLink {
    /// `self`, `next`, `previous`, ...
    pub relation: String,
    /// The URL.
    pub url: String,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Bundle.entry`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleEntry {
    /// Absolute URL of the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_url: Option<String>,
    /// The resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    /// Why the entry is in a searchset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<BundleEntrySearch>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Bundle.entry.search`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleEntrySearch {
    /// `match`, `include` or `outcome`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Any resource, as found in a Bundle entry. Types Galen does not model are kept as JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// A Patient.
    Patient(Box<Patient>),
    /// A Device.
    Device(Box<Device>),
    /// An Observation.
    Observation(Box<Observation>),
    /// A Flag.
    Flag(Box<Flag>),
    /// A Location (a ward or a bed).
    Location(Box<Location>),
    /// A DeviceMetric.
    DeviceMetric(Box<DeviceMetric>),
    /// An AuditEvent (a record of the audit trail).
    AuditEvent(Box<AuditEvent>),
    /// A Consent (a patient's consent).
    Consent(Box<Consent>),
    /// An OperationOutcome.
    OperationOutcome(Box<OperationOutcome>),
    /// A Bundle.
    Bundle(Box<Bundle>),
    /// A CapabilityStatement.
    CapabilityStatement(Box<CapabilityStatement>),
    /// Any other resource, verbatim (it has a string `resourceType`).
    Other(serde_json::Map<String, Value>),
}

impl Resource {
    /// The `resourceType`.
    pub fn resource_type(&self) -> &str {
        match self {
            Resource::Patient(_) => Patient::TYPE,
            Resource::Device(_) => Device::TYPE,
            Resource::Observation(_) => Observation::TYPE,
            Resource::Flag(_) => Flag::TYPE,
            Resource::Location(_) => Location::TYPE,
            Resource::DeviceMetric(_) => DeviceMetric::TYPE,
            Resource::AuditEvent(_) => AuditEvent::TYPE,
            Resource::Consent(_) => Consent::TYPE,
            Resource::OperationOutcome(_) => OperationOutcome::TYPE,
            Resource::Bundle(_) => Bundle::TYPE,
            Resource::CapabilityStatement(_) => CapabilityStatement::TYPE,
            Resource::Other(object) => object
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        }
    }

    /// The logical id.
    pub fn id(&self) -> Option<&str> {
        match self {
            Resource::Patient(resource) => resource.id(),
            Resource::Device(resource) => resource.id(),
            Resource::Observation(resource) => resource.id(),
            Resource::Flag(resource) => resource.id(),
            Resource::Location(resource) => resource.id(),
            Resource::DeviceMetric(resource) => resource.id(),
            Resource::AuditEvent(resource) => resource.id(),
            Resource::Consent(resource) => resource.id(),
            Resource::OperationOutcome(resource) => resource.id(),
            Resource::Bundle(resource) => resource.id(),
            Resource::CapabilityStatement(resource) => resource.id(),
            Resource::Other(object) => object.get("id").and_then(Value::as_str),
        }
    }
}

/// `From<T> for Resource` for each resource type with a variant of its own.
macro_rules! into_resource {
    ($($kind:ident),* $(,)?) => {
        $(
            impl From<$kind> for Resource {
                fn from(resource: $kind) -> Resource {
                    Resource::$kind(Box::new(resource))
                }
            }
        )*
    };
}

into_resource!(
    Patient,
    Device,
    Observation,
    Flag,
    Location,
    DeviceMetric,
    AuditEvent,
    Consent,
    OperationOutcome,
    Bundle,
    CapabilityStatement,
);

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Resource::Patient(resource) => resource.serialize(serializer),
            Resource::Device(resource) => resource.serialize(serializer),
            Resource::Observation(resource) => resource.serialize(serializer),
            Resource::Flag(resource) => resource.serialize(serializer),
            Resource::Location(resource) => resource.serialize(serializer),
            Resource::DeviceMetric(resource) => resource.serialize(serializer),
            Resource::AuditEvent(resource) => resource.serialize(serializer),
            Resource::Consent(resource) => resource.serialize(serializer),
            Resource::OperationOutcome(resource) => resource.serialize(serializer),
            Resource::Bundle(resource) => resource.serialize(serializer),
            Resource::CapabilityStatement(resource) => resource.serialize(serializer),
            Resource::Other(object) => object.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        fn typed<'de, R: DeserializeOwned, D: Deserializer<'de>>(
            value: Value,
        ) -> std::result::Result<Box<R>, D::Error> {
            serde_json::from_value(value)
                .map(Box::new)
                .map_err(de::Error::custom)
        }
        let value = Value::deserialize(deserializer)?;
        let Value::Object(object) = value else {
            return Err(de::Error::custom("a resource must be a JSON object"));
        };
        let Some(resource_type) = object.get("resourceType").and_then(Value::as_str) else {
            return Err(de::Error::custom("a resource needs a string resourceType"));
        };
        let resource = match resource_type {
            Patient::TYPE => Resource::Patient(typed::<_, D>(Value::Object(object))?),
            Device::TYPE => Resource::Device(typed::<_, D>(Value::Object(object))?),
            Observation::TYPE => Resource::Observation(typed::<_, D>(Value::Object(object))?),
            Flag::TYPE => Resource::Flag(typed::<_, D>(Value::Object(object))?),
            Location::TYPE => Resource::Location(typed::<_, D>(Value::Object(object))?),
            DeviceMetric::TYPE => Resource::DeviceMetric(typed::<_, D>(Value::Object(object))?),
            AuditEvent::TYPE => Resource::AuditEvent(typed::<_, D>(Value::Object(object))?),
            Consent::TYPE => Resource::Consent(typed::<_, D>(Value::Object(object))?),
            OperationOutcome::TYPE => {
                Resource::OperationOutcome(typed::<_, D>(Value::Object(object))?)
            }
            Bundle::TYPE => Resource::Bundle(typed::<_, D>(Value::Object(object))?),
            CapabilityStatement::TYPE => {
                Resource::CapabilityStatement(typed::<_, D>(Value::Object(object))?)
            }
            _ => Resource::Other(object),
        };
        Ok(resource)
    }
}

impl OperationOutcomeIssue {
    /// An issue with a diagnostic and no expression.
    pub fn new(severity: IssueSeverity, code: IssueType, diagnostics: impl Into<String>) -> Self {
        OperationOutcomeIssue {
            severity,
            code,
            details: None,
            diagnostics: Some(diagnostics.into()),
            expression: Vec::new(),
            extra: Extra::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn round_trip<R: FhirResource + Serialize + DeserializeOwned>(input: Value) {
        let parsed: R = parse_resource(input.to_string().as_bytes())
            .unwrap_or_else(|error| panic!("{}: {error}", R::TYPE));
        let output = serde_json::to_value(&parsed).expect("serialises");
        assert_eq!(output, input, "{} changed in a round trip", R::TYPE);
    }

    #[test]
    fn posted_resources_keep_everything_they_carried() {
        round_trip::<Patient>(json!({
            "resourceType": "Patient",
            "id": "12",
            "meta": { "versionId": "3", "lastUpdated": "2026-01-01T00:00:00Z", "tag": [{ "code": "x" }] },
            "text": { "status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Ann</div>" },
            "extension": [
                { "url": "http://example.org/religion", "valueCodeableConcept": { "text": "none" } }
            ],
            "identifier": [{ "system": "urn:oid:1.2.3.4", "value": "MRN-1" }],
            "active": true,
            "name": [{ "family": "Smith", "given": ["Ann"], "prefix": ["Dr"] }],
            "telecom": [{ "system": "phone", "value": "555" }],
            "gender": "female",
            "birthDate": "1950-02-28",
            "_birthDate": { "extension": [{ "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1950-02-28T08:00:00Z" }] },
            "address": [{ "city": "Leeds" }]
        }));
        round_trip::<Device>(json!({
            "resourceType": "Device",
            "identifier": [{ "system": "urn:x", "value": "SN1" }],
            "status": "active",
            "serialNumber": "SN1",
            "type": { "text": "monitor" },
            "udiCarrier": [{ "deviceIdentifier": "0123" }],
            "note": [{ "text": "left ward" }]
        }));
        round_trip::<Observation>(json!({
            "resourceType": "Observation",
            "status": "final",
            "code": { "coding": [{ "system": "http://loinc.org", "code": "8867-4" }] },
            "effectiveDateTime": "2026-11-23T08:15:00Z",
            "valueQuantity": { "value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min" },
            "interpretation": [{ "text": "normal" }],
            "referenceRange": [{ "low": { "value": 60 } }],
            "bodySite": { "text": "finger" }
        }));
    }

    #[test]
    fn resource_type_is_checked() {
        let device = json!({ "resourceType": "Device", "status": "active" }).to_string();
        assert_eq!(
            parse_resource::<Patient>(device.as_bytes()),
            Err(Error::ResourceType {
                expected: "Patient",
                found: Some("Device".to_owned())
            })
        );
        assert_eq!(
            parse_resource::<Patient>(br#"{"gender":"female"}"#),
            Err(Error::ResourceType {
                expected: "Patient",
                found: None
            })
        );
        assert!(matches!(
            parse_resource::<Patient>(b"[1]"),
            Err(Error::Syntax { .. })
        ));
        assert!(matches!(
            parse_resource::<Patient>(b"{\"resourceType\":"),
            Err(Error::Syntax { .. })
        ));
        // Plain serde is checked too: the marker refuses another type.
        let error = serde_json::from_str::<Device>(r#"{"resourceType":"Patient"}"#)
            .expect_err("a Patient is not a Device");
        assert!(
            error
                .to_string()
                .contains("resourceType must be \"Device\", found \"Patient\""),
            "{error}"
        );
        assert!(serde_json::from_str::<Device>(r#"{"status":"active"}"#).is_err());
    }

    #[test]
    fn bundle_entries_are_typed_by_resource_type() {
        let input = json!({
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                { "resource": { "resourceType": "Patient", "id": "1" } },
                { "resource": { "resourceType": "Encounter", "id": "9", "status": "planned" } }
            ]
        });
        let bundle: Bundle = serde_json::from_value(input.clone()).expect("bundle");
        let resources: Vec<&Resource> = bundle
            .entry
            .iter()
            .filter_map(|entry| entry.resource.as_ref())
            .collect();
        assert!(matches!(resources[0], Resource::Patient(_)));
        assert_eq!(resources[1].resource_type(), "Encounter");
        assert_eq!(resources[1].id(), Some("9"));
        assert_eq!(serde_json::to_value(&bundle).expect("serialises"), input);
        let untyped = json!({ "resourceType": "Bundle", "type": "collection", "entry": [{ "resource": { "id": "1" } }] });
        assert!(serde_json::from_value::<Bundle>(untyped).is_err());
    }
}
