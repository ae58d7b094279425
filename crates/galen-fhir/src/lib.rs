//! FHIR R4 (4.0.1) JSON for the resources Galen serves, and explicit conversions between those
//! resources and Galen's domain types.
//!
//! What flows through here: the server hands this crate registry records ([`galen_model::Patient`],
//! [`galen_model::Device`]), stored measurements ([`observation::VitalReading`]) and the clinical
//! engine's stored scores and alarm transitions ([`clinical::StoredScore`],
//! [`clinical::AlarmTransition`]) and gets back typed FHIR resources ([`Patient`], [`Device`],
//! [`Observation`], [`Flag`], and the read-only [`Location`]s of wards and beds and
//! [`DeviceMetric`]s of what devices measure, and the audit trail's [`AuditEvent`]s from
//! [`audit_event::AuditEntry`]s, and patients' [`Consent`]s from [`galen_model::Consent`]s) that
//! serialise with serde; a client's JSON goes the other way,
//! through [`parse_resource`] into the same types and then into [`galen_model::NewPatient`],
//! [`galen_model::NewDevice`] or the values the ingest pipeline takes
//! ([`observation::PostedObservation`]). Search query strings become typed queries in [`search`];
//! results become a searchset [`Bundle`] ([`bundle::SearchsetBuilder`]); every error becomes an
//! [`OperationOutcome`] ([`outcome::from_error`]) whose `expression` is the FHIRPath of the element
//! at fault.
//!
//! Invariants:
//! - Nothing a client sent is dropped by the types: every resource and datatype keeps the JSON
//!   members it does not model in an `extra` map and writes them back out, so a resource read and
//!   written again is the same JSON. Mapping to the domain model is lossy by nature (the model has
//!   one identifier, one name); [`registry::restore_unmapped_patient`] and
//!   [`registry::restore_unmapped_device`] put the rest back for a server that keeps the posted copy.
//! - `resourceType` is checked on every deserialisation: a Device body never becomes a Patient.
//! - This crate does no I/O, reads no clock ("now" and "today" are parameters), never logs and knows
//!   nothing about HTTP or storage.

pub mod audit_event;
pub mod bundle;
pub mod capability;
pub mod clinical;
pub mod codes;
pub mod consent;
mod datatypes;
pub mod device_metric;
mod error;
pub mod location;
pub mod observation;
pub mod outcome;
pub mod redact;
pub mod registry;
mod resource;
pub mod search;

pub use audit_event::AuditEvent;
pub use capability::{CapabilityStatement, CapabilityStatementBuilder, Interaction};
pub use consent::Consent;
pub use datatypes::{
    CodeableConcept, Coding, Extension, HumanName, Identifier, Meta, Period, Quantity, Reference,
};
pub use device_metric::DeviceMetric;
pub use error::{Error, Problem, Result};
pub use location::Location;
pub use outcome::{IssueSeverity, IssueType};
pub use resource::{
    Bundle, BundleEntry, BundleEntrySearch, BundleLink, Device, FhirResource, Flag, Observation,
    ObservationComponent, OperationOutcome, OperationOutcomeIssue, Patient, Resource, ResourceType,
    parse_resource, resource_from_value,
};
