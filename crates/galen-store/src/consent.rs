//! Patients' consents ([`galen_model::Consent`]) and the resource each was recorded from.
//!
//! Consents are never removed: a withdrawn one is updated to `inactive` and stays, because it
//! governed the disclosures made while it was in force. A write and its audit records commit in one
//! transaction ([`ConsentAudit`]), so a consent never changes without the trail saying who changed
//! it.

use std::fmt;

use async_trait::async_trait;
use galen_model::{Consent, ConsentId, NewConsent, PatientId};

use crate::audit::AuditRecord;
use crate::error::Result;

/// A recorded consent with the document (FHIR `Consent` JSON) it was recorded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredConsent {
    /// The consent.
    pub consent: Consent,
    /// The resource as the client sent it (the server's to interpret), kept so that reads give
    /// back what Galen does not model (categories, the policy, who gave it, ...).
    pub document: String,
}

/// The audit records of a consent write, built inside the write's transaction from the consent
/// as written, so that a create can name the id it was given (`Consent/7`).
pub struct ConsentAudit(Box<BuildRecords>);

/// What builds a consent write's audit records.
type BuildRecords = dyn FnOnce(&Consent) -> Vec<AuditRecord> + Send;

impl ConsentAudit {
    /// Records built by `build` from the consent written.
    pub fn new(build: impl FnOnce(&Consent) -> Vec<AuditRecord> + Send + 'static) -> ConsentAudit {
        ConsentAudit(Box::new(build))
    }

    /// No records.
    pub fn none() -> ConsentAudit {
        ConsentAudit::new(|_| Vec::new())
    }

    /// The records for what was written.
    pub fn build(self, written: &Consent) -> Vec<AuditRecord> {
        (self.0)(written)
    }
}

impl fmt::Debug for ConsentAudit {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("ConsentAudit(..)")
    }
}

/// Patients' consents.
#[async_trait]
pub trait ConsentStore: Send + Sync + fmt::Debug {
    /// Records a new consent and its document, and appends the audit records `audit` builds from
    /// it, in one transaction: when it returns `Ok`, the consent (with its new id), the document
    /// and the records are durable together (the records serialised with every other audit
    /// append, as [`crate::AuditStore::append_audit`]); on `Err` none of them is stored.
    /// [`crate::Error::NotFound`] if the patient is not registered; [`crate::Error::Invalid`]
    /// if [`NewConsent::validate`] refuses it or an audit record is invalid.
    async fn create_consent(
        &self,
        consent: NewConsent,
        document: String,
        audit: ConsentAudit,
    ) -> Result<StoredConsent>;

    /// Replaces consent `id` and its document, with the audit records as for
    /// [`ConsentStore::create_consent`] (durable together when it returns `Ok`).
    /// [`crate::Error::NotFound`] if there is no such consent or patient.
    async fn update_consent(
        &self,
        id: ConsentId,
        consent: NewConsent,
        document: String,
        audit: ConsentAudit,
    ) -> Result<StoredConsent>;

    /// One consent.
    async fn consent(&self, id: ConsentId) -> Result<Option<StoredConsent>>;

    /// Every consent, or those of one patient, by id.
    async fn consents(&self, patient: Option<PatientId>) -> Result<Vec<StoredConsent>>;
}
