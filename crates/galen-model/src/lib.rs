//! Galen's domain vocabulary.
//!
//! Everything else in Galen speaks in these types: ids of patients and devices, the vital signs we
//! understand (with their LOINC, IEEE 11073 MDC and UCUM identities), units and their conversion to
//! the canonical unit of each vital sign, physiological plausibility, and the registry records
//! (patients, devices, assignments of a device to a patient over a time interval), patients'
//! consents and the policy that enforces them ([`decide`]), and the audit trail's vocabulary
//! ([`AuditAction`], [`AuditOutcome`]).
//!
//! This crate does no I/O, never reads the wall clock except through [`SystemClock`], never logs and
//! knows nothing about JSON, SQL or HTTP: wire and row formats live in the crates that own them.

mod audit;
mod consent;
mod ids;
mod measurement;
mod registry;
mod time_point;
mod unit;
mod vital;

pub use audit::{AuditAction, AuditOutcome};
pub use consent::{
    Consent, ConsentDecision, ConsentError, ConsentProvision, ConsentPurpose, ConsentStatus,
    DecisionBasis, NewConsent, Recipient, decide,
};
pub use ids::{AssignmentId, ConsentId, DeviceId, PatientId};
pub use measurement::{
    FUTURE_TOLERANCE_MICROS, MAX_AGE_MICROS, Measurement, Rejection, RejectionReason, normalize,
};
pub use registry::{
    Assignment, Device, DeviceKind, DeviceStatus, HumanName, Identifier, NewAssignment, NewDevice,
    NewPatient, Patient, RegistryError, Sex,
};
pub use time_point::{Clock, ManualClock, SystemClock, Timestamp, TimestampError};
pub use unit::{Dimension, Unit};
pub use vital::VitalSign;
