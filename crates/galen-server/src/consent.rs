//! Patients' consents in memory, kept in step with the store, and the disclosures they govern.
//!
//! **Which paths ask.** Every path by which patient data leaves direct care asks
//! [`Consents::decide`] (the policy is [`galen_model::decide`]) for each patient it would disclose,
//! and writes the decision to the audit trail ([`decision_record`], action `consent-decision`,
//! outcome `success` for a permit and `denied` for a withhold) before anything leaves:
//!
//! - FHIR bulk `$export` (`fhir/export.rs`): one decision per patient per export job; withheld
//!   patients are left out (their Patient, Observations, scores and Flags; Devices lose the
//!   reference to them) and the manifest says how many, and why, without saying who;
//! - FHIR Subscription notifications (`fhir/subscription.rs`, rest-hook and websocket): one
//!   decision per event of a patient, at delivery; a withheld event is not delivered (nor
//!   numbered).
//!
//! **Who receives** is decided by who asks ([`Disclosure::of`]): an account with an organisation
//! discloses to that organisation (purpose sharing); a researcher account discloses for research
//! (to its organisation, if it has one); any other principal (an account without an organisation,
//! the service token) acts for the hospital's own operations, which HIPAA's treatment, payment and
//! operations rule (45 CFR 164.506) allows without consent: no decision is made and none is
//! recorded beyond the request's own audit record.
//!
//! Direct care (the dashboard, clinicians' reads and searches, alarms, webhooks to the hospital's
//! own pagers) is not a disclosure outside care and is never filtered.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use galen_model::{
    Consent, ConsentDecision, ConsentId, ConsentPurpose, PatientId, Recipient, Timestamp,
};
use galen_store::{AuditAction, AuditOutcome, AuditRecord, Store, StoredConsent};

use crate::access::{Principal, Role};

/// What a disclosure is: its purpose and who receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Disclosure {
    /// Research or sharing.
    pub(crate) purpose: ConsentPurpose,
    /// The receiving organisation or caregiver; `None` for research inside the hospital.
    pub(crate) recipient: Option<Recipient>,
}

impl Disclosure {
    /// The disclosure an export or subscription of `principal` makes, or `None` when it acts for
    /// the hospital's own operations (see the module documentation).
    pub(crate) fn of(principal: &Principal) -> Option<Disclosure> {
        if principal.role == Role::Researcher {
            return Some(Disclosure {
                purpose: ConsentPurpose::Research,
                recipient: principal.organization.clone(),
            });
        }
        principal
            .organization
            .clone()
            .map(|organization| Disclosure {
                purpose: ConsentPurpose::Sharing,
                recipient: Some(organization),
            })
    }

    /// `purpose=sharing recipient=Organization/acme-lab` (ids only: no PHI).
    pub(crate) fn describe(&self) -> String {
        format!(
            "purpose={} recipient={}",
            self.purpose.code(),
            self.recipient
                .as_ref()
                .map_or_else(|| "none".to_owned(), ToString::to_string)
        )
    }
}

/// The audit record of one consent decision: who asked (`actor`, `role`), for which disclosure
/// (`resource`: the export job or the subscription), about which patient, and what decided.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decision_record(
    time: Timestamp,
    actor: &str,
    role: &str,
    resource: &str,
    source: &str,
    patient: PatientId,
    disclosure: &Disclosure,
    decision: &ConsentDecision,
) -> AuditRecord {
    let decided_by = decision
        .consent
        .map_or_else(|| "no-consent".to_owned(), |id| format!("Consent/{}", id.0));
    AuditRecord {
        time,
        actor: actor.to_owned(),
        role: role.to_owned(),
        action: AuditAction::ConsentDecision,
        resource: resource.chars().take(1024).collect(),
        patient: Some(patient),
        outcome: if decision.permitted {
            AuditOutcome::Success
        } else {
            AuditOutcome::Denied
        },
        source: source.to_owned(),
        detail: format!(
            "{} decided-by={decided_by} basis={} {}",
            disclosure.describe(),
            decision.basis.code(),
            if decision.permitted {
                "disclosed"
            } else {
                "withheld"
            }
        ),
    }
}

#[derive(Debug, Default)]
struct Cached {
    /// Every consent with its document, by id.
    stored: BTreeMap<ConsentId, StoredConsent>,
    /// The consents of each patient (copies of `stored`'s), for decisions.
    by_patient: HashMap<PatientId, Vec<Consent>>,
}

impl Cached {
    fn put(&mut self, stored: StoredConsent) {
        let consent = stored.consent.clone();
        let of_patient = self.by_patient.entry(consent.details.patient).or_default();
        match of_patient.iter_mut().find(|known| known.id == consent.id) {
            Some(known) => *known = consent,
            None => of_patient.push(consent),
        }
        self.stored.insert(stored.consent.id, stored);
    }
}

/// The consents of every patient, in memory; writes go to the store first, one at a time.
#[derive(Debug, Default)]
pub(crate) struct Consents {
    cached: RwLock<Cached>,
    /// Held across a write's checks (`If-Match`, the consent it changes), its store commit and
    /// the cache update, so that concurrent writes neither overtake each other in the cache nor
    /// check against a version about to change.
    writing: tokio::sync::Mutex<()>,
}

impl Consents {
    /// Loads every consent of `store`.
    pub(crate) async fn load(store: &dyn Store) -> galen_store::Result<Consents> {
        let consents = Consents::default();
        {
            let stored = store.consents(None).await?;
            let mut cached = consents
                .cached
                .write()
                .unwrap_or_else(|poison| poison.into_inner());
            for consent in stored {
                cached.put(consent);
            }
        }
        Ok(consents)
    }

    /// Serialises consent writes (see the field's documentation); hold the guard from the checks
    /// to [`Consents::put`].
    pub(crate) async fn lock_writes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writing.lock().await
    }

    /// Puts a consent the store has just written.
    pub(crate) fn put(&self, stored: StoredConsent) {
        self.cached
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .put(stored);
    }

    /// One consent with its document.
    pub(crate) fn get(&self, id: ConsentId) -> Option<StoredConsent> {
        self.cached
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .stored
            .get(&id)
            .cloned()
    }

    /// The patient of a consent.
    pub(crate) fn patient_of(&self, id: ConsentId) -> Option<PatientId> {
        self.cached
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .stored
            .get(&id)
            .map(|stored| stored.consent.details.patient)
    }

    /// Every consent passing `filter`, by id.
    pub(crate) fn matching(&self, filter: impl Fn(&Consent) -> bool) -> Vec<StoredConsent> {
        self.cached
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .stored
            .values()
            .filter(|stored| filter(&stored.consent))
            .cloned()
            .collect()
    }

    /// Whether data of `patient` may be disclosed as `disclosure` at `at` ([`galen_model::decide`]
    /// over the patient's consents).
    pub(crate) fn decide(
        &self,
        patient: PatientId,
        disclosure: &Disclosure,
        at: Timestamp,
    ) -> ConsentDecision {
        let cached = self
            .cached
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        let consents = cached
            .by_patient
            .get(&patient)
            .map_or(&[][..], Vec::as_slice);
        galen_model::decide(
            consents,
            patient,
            disclosure.purpose,
            disclosure.recipient.as_ref(),
            at,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Scope;
    use galen_model::{ConsentProvision, ConsentStatus, DecisionBasis, NewConsent};

    fn principal(role: Role, organization: Option<&str>) -> Principal {
        Principal {
            actor: "someone".into(),
            user: Some(1),
            token: None,
            role,
            scope: Scope::All,
            organization: organization.map(|text| Recipient::parse(text).expect("recipient")),
            emergency: std::collections::BTreeSet::new(),
            smart: None,
        }
    }

    #[test]
    fn who_asks_decides_the_disclosure() {
        assert_eq!(
            Disclosure::of(&principal(Role::IntegrationEngineer, None)),
            None,
            "the hospital's own operations"
        );
        assert_eq!(Disclosure::of(&Principal::service()), None);
        assert_eq!(
            Disclosure::of(&principal(
                Role::IntegrationEngineer,
                Some("Organization/acme-lab")
            )),
            Some(Disclosure {
                purpose: ConsentPurpose::Sharing,
                recipient: Some(Recipient::Organization("acme-lab".into()))
            })
        );
        assert_eq!(
            Disclosure::of(&principal(Role::Researcher, None)),
            Some(Disclosure {
                purpose: ConsentPurpose::Research,
                recipient: None
            }),
            "a researcher always discloses for research"
        );
        assert_eq!(
            Disclosure::of(&principal(Role::Researcher, Some("Organization/uni")))
                .map(|disclosure| disclosure.describe()),
            Some("purpose=research recipient=Organization/uni".to_owned())
        );
    }

    #[test]
    fn decisions_use_the_cached_consents_and_are_recorded_without_phi() {
        let consents = Consents::default();
        let at = Timestamp::from_seconds(1_795_392_000);
        let sharing = Disclosure {
            purpose: ConsentPurpose::Sharing,
            recipient: Some(Recipient::Organization("acme-lab".into())),
        };
        assert!(consents.decide(PatientId(3), &sharing, at).permitted);
        let deny = NewConsent {
            patient: PatientId(3),
            status: ConsentStatus::Active,
            purpose: ConsentPurpose::Sharing,
            provision: ConsentProvision::Deny,
            recipients: vec![Recipient::Organization("acme-lab".into())],
            start: None,
            end: None,
            dated: at,
            recorded: at,
            recorded_by: "nurse".into(),
        };
        consents.put(StoredConsent {
            consent: Consent {
                id: ConsentId(9),
                details: deny.clone(),
            },
            document: "{}".into(),
        });
        let decision = consents.decide(PatientId(3), &sharing, at);
        assert_eq!(
            (decision.permitted, decision.basis, decision.consent),
            (false, DecisionBasis::ConsentDenies, Some(ConsentId(9)))
        );
        // Withdrawn: the cached copy is replaced, not added to.
        let mut withdrawn = deny;
        withdrawn.status = ConsentStatus::Inactive;
        consents.put(StoredConsent {
            consent: Consent {
                id: ConsentId(9),
                details: withdrawn,
            },
            document: "{}".into(),
        });
        assert!(consents.decide(PatientId(3), &sharing, at).permitted);
        assert_eq!(consents.patient_of(ConsentId(9)), Some(PatientId(3)));
        let record = decision_record(
            at,
            "acme.export",
            "integration-engineer",
            "/fhir/$export-status/abc",
            "export",
            PatientId(3),
            &sharing,
            &decision,
        );
        assert_eq!(record.action, AuditAction::ConsentDecision);
        assert_eq!(record.outcome, AuditOutcome::Denied);
        assert_eq!(record.patient, Some(PatientId(3)));
        assert_eq!(
            record.detail,
            "purpose=sharing recipient=Organization/acme-lab decided-by=Consent/9 basis=consent-denies withheld"
        );
    }
}
