//! Patients' consents to the use and disclosure of their data outside direct care, and the policy
//! that turns them into a decision ([`decide`]).
//!
//! A consent ([`NewConsent`]) is one patient's permit or deny ([`ConsentProvision`]) for one
//! purpose ([`ConsentPurpose`]: research, or sharing with parties outside the care team), possibly
//! limited to named recipients ([`Recipient`]: an organisation, a caregiver, or a party named by an
//! identifier) and to a validity period. Consents are never deleted: a withdrawn consent is set
//! `inactive` (or `entered-in-error`) and stays on record, because it governed the disclosures
//! made while it was active.
//!
//! # The policy
//!
//! [`decide`] answers one question: may data of patient P be disclosed for purpose X to recipient
//! R at time T? It looks only at the patient's consents that are **in force** at T (status
//! `active`, T inside the period) and **applicable** (same purpose; naming no recipient, which
//! means "anyone for this purpose", or naming R). Among those, the one that decides is
//!
//! 1. the **more specific**: a consent naming R beats one naming no recipient, so "deny all
//!    sharing, except to my daughter" works, and so does "permit research, but not by Acme";
//! 2. then the **more recent**: the later `dated` (when the patient gave it), then the later
//!    recorded (the larger id), so a new choice replaces an old one without anyone having to
//!    withdraw the old one first.
//!
//! When no consent applies, the purpose's default decides:
//!
//! - **Research is opt-in**: no disclosure without a permit. HIPAA requires the individual's
//!   authorisation for uses and disclosures of PHI for research (45 CFR 164.508(a), 164.508(b)(3)),
//!   short of an IRB or privacy board waiver (164.512(i)), which Galen does not model; GDPR art.
//!   9(2)(a) asks for explicit consent to process health data unless a member-state research
//!   exemption (art. 9(2)(j), art. 89) applies, which again Galen cannot know.
//! - **Sharing with a named organisation or caregiver is opt-out**: permitted unless the patient
//!   objected. HIPAA lets a covered entity disclose to family members and others involved in the
//!   patient's care unless the patient objects (45 CFR 164.510(b)) and lets the patient request
//!   restrictions (164.522(a)); under GDPR the patient may object and withdraw consent at any time
//!   (art. 7(3), art. 21), which an `inactive` status or a newer deny records.
//!
//! Direct care (the dashboard, clinicians' reads, alarms) is not a disclosure and never asks: HIPAA
//! permits uses and disclosures for treatment, payment and health care operations without
//! authorisation (164.506), and GDPR art. 9(2)(h) covers the provision of health care.
//!
//! The policy is a pure function of its inputs; it fails closed only where the law's default is
//! closed (research). Its decision names the consent that decided ([`ConsentDecision::consent`])
//! and why ([`DecisionBasis`]), so that every enforcement can be audited.

use std::fmt;

use crate::ids::{ConsentId, PatientId};
use crate::time_point::Timestamp;

/// Why a consent record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentError {
    /// A field has a value outside its code set.
    #[error("{field} must be one of {allowed}")]
    NotInCodeSet {
        /// The field.
        field: &'static str,
        /// The allowed values, comma separated.
        allowed: &'static str,
    },
    /// A recipient is not `Organization/{id}`, `RelatedPerson/{id}` or `system|value`.
    #[error(
        "a recipient is Organization/{{id}}, RelatedPerson/{{id}} or an identifier system|value"
    )]
    Recipient,
    /// The period ends before it starts, or at its start.
    #[error("a consent's period must end after it starts")]
    EmptyPeriod,
    /// The same recipient is named twice.
    #[error("a recipient is named twice")]
    RepeatedRecipient,
    /// Who recorded it is empty.
    #[error("recorded_by must not be empty")]
    NoRecorder,
}

/// Whether a consent is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsentStatus {
    /// In force (within its period).
    Active,
    /// Withdrawn or ended; kept on record.
    Inactive,
    /// Recorded by mistake; kept on record, never in force.
    EnteredInError,
}

impl ConsentStatus {
    /// Every status.
    pub const ALL: [ConsentStatus; 3] = [
        ConsentStatus::Active,
        ConsentStatus::Inactive,
        ConsentStatus::EnteredInError,
    ];

    /// The code (FHIR `ConsentState`).
    pub const fn code(self) -> &'static str {
        match self {
            ConsentStatus::Active => "active",
            ConsentStatus::Inactive => "inactive",
            ConsentStatus::EnteredInError => "entered-in-error",
        }
    }

    /// Parses a code.
    pub fn parse(code: &str) -> Result<ConsentStatus, ConsentError> {
        ConsentStatus::ALL
            .into_iter()
            .find(|status| status.code() == code)
            .ok_or(ConsentError::NotInCodeSet {
                field: "status",
                allowed: "active, inactive, entered-in-error",
            })
    }
}

/// What a consent is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsentPurpose {
    /// Use of the patient's data for research (opt-in).
    Research,
    /// Disclosure to parties outside the care team: organisations, caregivers (opt-out).
    Sharing,
}

impl ConsentPurpose {
    /// Every purpose.
    pub const ALL: [ConsentPurpose; 2] = [ConsentPurpose::Research, ConsentPurpose::Sharing];

    /// The code (`research`, `sharing`).
    pub const fn code(self) -> &'static str {
        match self {
            ConsentPurpose::Research => "research",
            ConsentPurpose::Sharing => "sharing",
        }
    }

    /// Parses a code.
    pub fn parse(code: &str) -> Result<ConsentPurpose, ConsentError> {
        ConsentPurpose::ALL
            .into_iter()
            .find(|purpose| purpose.code() == code)
            .ok_or(ConsentError::NotInCodeSet {
                field: "purpose",
                allowed: "research, sharing",
            })
    }
}

/// The patient's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsentProvision {
    /// Allowed.
    Permit,
    /// Refused.
    Deny,
}

impl ConsentProvision {
    /// The code (FHIR `ConsentProvisionType`).
    pub const fn code(self) -> &'static str {
        match self {
            ConsentProvision::Permit => "permit",
            ConsentProvision::Deny => "deny",
        }
    }

    /// Parses a code.
    pub fn parse(code: &str) -> Result<ConsentProvision, ConsentError> {
        match code {
            "permit" => Ok(ConsentProvision::Permit),
            "deny" => Ok(ConsentProvision::Deny),
            _ => Err(ConsentError::NotInCodeSet {
                field: "provision",
                allowed: "permit, deny",
            }),
        }
    }
}

/// Who receives a disclosure: what a consent names and what an account discloses to. Two
/// recipients are the same when they are written the same way (an organisation named by its
/// reference in one place and by an identifier in the other are different recipients).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Recipient {
    /// `Organization/{id}`.
    Organization(String),
    /// `RelatedPerson/{id}`: a caregiver, relative or friend.
    RelatedPerson(String),
    /// A party named by a business identifier, `system|value`.
    Identifier {
        /// The identifier's namespace (a URI).
        system: String,
        /// The identifier.
        value: String,
    },
}

impl Recipient {
    /// Parses `Organization/{id}`, `RelatedPerson/{id}` (ids as FHIR ids: 1-64 letters, digits,
    /// `-` and `.`) or `system|value` (both non-empty, no control characters).
    pub fn parse(text: &str) -> Result<Recipient, ConsentError> {
        let text = text.trim();
        if text.chars().any(char::is_control) || text.len() > 1024 {
            return Err(ConsentError::Recipient);
        }
        let fhir_id = |id: &str| {
            (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.')
        };
        if let Some(id) = text.strip_prefix("Organization/") {
            return fhir_id(id)
                .then(|| Recipient::Organization(id.to_owned()))
                .ok_or(ConsentError::Recipient);
        }
        if let Some(id) = text.strip_prefix("RelatedPerson/") {
            return fhir_id(id)
                .then(|| Recipient::RelatedPerson(id.to_owned()))
                .ok_or(ConsentError::Recipient);
        }
        match text.split_once('|') {
            Some((system, value)) if !system.trim().is_empty() && !value.trim().is_empty() => {
                Ok(Recipient::Identifier {
                    system: system.to_owned(),
                    value: value.to_owned(),
                })
            }
            _ => Err(ConsentError::Recipient),
        }
    }
}

impl fmt::Display for Recipient {
    /// The form [`Recipient::parse`] reads.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recipient::Organization(id) => write!(formatter, "Organization/{id}"),
            Recipient::RelatedPerson(id) => write!(formatter, "RelatedPerson/{id}"),
            Recipient::Identifier { system, value } => write!(formatter, "{system}|{value}"),
        }
    }
}

/// A consent to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConsent {
    /// Whose data it governs.
    pub patient: PatientId,
    /// Whether it is in force.
    pub status: ConsentStatus,
    /// What it is about.
    pub purpose: ConsentPurpose,
    /// Permit or deny.
    pub provision: ConsentProvision,
    /// The recipients it names; empty means every recipient of the purpose.
    pub recipients: Vec<Recipient>,
    /// First instant it applies to; `None`: since ever.
    pub start: Option<Timestamp>,
    /// First instant it no longer applies to (half-open `[start, end)`); `None`: no end.
    pub end: Option<Timestamp>,
    /// When the patient gave it (FHIR `Consent.dateTime`); orders consents by recency.
    pub dated: Timestamp,
    /// When Galen recorded it.
    pub recorded: Timestamp,
    /// Who recorded it (the account or service, as the audit trail names it).
    pub recorded_by: String,
}

impl NewConsent {
    /// Checks the period, the recipients and the recorder.
    pub fn validate(&self) -> Result<(), ConsentError> {
        if let (Some(start), Some(end)) = (self.start, self.end)
            && end <= start
        {
            return Err(ConsentError::EmptyPeriod);
        }
        for (index, recipient) in self.recipients.iter().enumerate() {
            if self.recipients[..index].contains(recipient) {
                return Err(ConsentError::RepeatedRecipient);
            }
            // A recipient must survive its written form (what the store keeps).
            if Recipient::parse(&recipient.to_string()).as_ref() != Ok(recipient) {
                return Err(ConsentError::Recipient);
            }
        }
        if self.recorded_by.trim().is_empty() {
            return Err(ConsentError::NoRecorder);
        }
        Ok(())
    }

    /// Whether it is in force at `at`: active and `at` within `[start, end)`.
    pub fn in_force(&self, at: Timestamp) -> bool {
        self.status == ConsentStatus::Active
            && self.start.is_none_or(|start| start <= at)
            && self.end.is_none_or(|end| at < end)
    }

    /// Whether it names `recipient` (a consent naming nobody names no one in particular).
    pub fn names(&self, recipient: &Recipient) -> bool {
        self.recipients.contains(recipient)
    }
}

/// A recorded consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    /// Internal id.
    pub id: ConsentId,
    /// Everything else.
    pub details: NewConsent,
}

/// Why [`decide`] decided as it did. The codes are stable: they are written into audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionBasis {
    /// An applicable consent permits it.
    ConsentPermits,
    /// An applicable consent denies it.
    ConsentDenies,
    /// No consent applies and research needs one (opt-in): denied.
    NoConsentResearchIsOptIn,
    /// No consent applies and sharing is permitted unless the patient objected (opt-out).
    NoConsentSharingIsOptOut,
}

impl DecisionBasis {
    /// The stable code.
    pub const fn code(self) -> &'static str {
        match self {
            DecisionBasis::ConsentPermits => "consent-permits",
            DecisionBasis::ConsentDenies => "consent-denies",
            DecisionBasis::NoConsentResearchIsOptIn => "no-consent-research-is-opt-in",
            DecisionBasis::NoConsentSharingIsOptOut => "no-consent-sharing-is-opt-out",
        }
    }
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsentDecision {
    /// Whether the disclosure may happen.
    pub permitted: bool,
    /// Why.
    pub basis: DecisionBasis,
    /// The consent that decided; `None` when the purpose's default did.
    pub consent: Option<ConsentId>,
}

/// Decides whether data of `patient` may be disclosed for `purpose` to `recipient` at `at`, from
/// the consents given (see the module documentation for the rules and their basis). Consents of
/// other patients are ignored, so a caller may pass more than the patient's own.
/// `recipient: None` is a recipient nobody can name: only consents naming no recipient apply
/// (research inside the hospital's own organisation).
pub fn decide(
    consents: &[Consent],
    patient: PatientId,
    purpose: ConsentPurpose,
    recipient: Option<&Recipient>,
    at: Timestamp,
) -> ConsentDecision {
    let deciding = consents
        .iter()
        .filter(|consent| {
            let details = &consent.details;
            details.patient == patient
                && details.purpose == purpose
                && details.in_force(at)
                && (details.recipients.is_empty()
                    || recipient.is_some_and(|recipient| details.names(recipient)))
        })
        // Most specific (names the recipient), then most recently dated, then recorded last.
        .max_by_key(|consent| {
            (
                !consent.details.recipients.is_empty(),
                consent.details.dated,
                consent.id,
            )
        });
    match deciding {
        Some(consent) => {
            let permitted = consent.details.provision == ConsentProvision::Permit;
            ConsentDecision {
                permitted,
                basis: if permitted {
                    DecisionBasis::ConsentPermits
                } else {
                    DecisionBasis::ConsentDenies
                },
                consent: Some(consent.id),
            }
        }
        None => match purpose {
            ConsentPurpose::Research => ConsentDecision {
                permitted: false,
                basis: DecisionBasis::NoConsentResearchIsOptIn,
                consent: None,
            },
            ConsentPurpose::Sharing => ConsentDecision {
                permitted: true,
                basis: DecisionBasis::NoConsentSharingIsOptOut,
                consent: None,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PatientId = PatientId(1);
    const HOUR: i64 = 3_600;

    fn at(hours: i64) -> Timestamp {
        Timestamp::from_seconds(1_795_392_000 + hours * HOUR)
    }

    fn acme() -> Recipient {
        Recipient::Organization("acme-lab".to_owned())
    }

    fn daughter() -> Recipient {
        Recipient::RelatedPerson("rp-7".to_owned())
    }

    /// A consent `id` of patient 1, active, dated at hour `dated`, with no period.
    fn consent(
        id: i64,
        purpose: ConsentPurpose,
        provision: ConsentProvision,
        recipients: Vec<Recipient>,
        dated: i64,
    ) -> Consent {
        Consent {
            id: ConsentId(id),
            details: NewConsent {
                patient: P,
                status: ConsentStatus::Active,
                purpose,
                provision,
                recipients,
                start: None,
                end: None,
                dated: at(dated),
                recorded: at(dated),
                recorded_by: "nurse.ann".to_owned(),
            },
        }
    }

    use ConsentProvision::{Deny, Permit};
    use ConsentPurpose::{Research, Sharing};

    /// `(permitted, basis, deciding consent)` of a decision at hour 100.
    fn check(
        consents: &[Consent],
        purpose: ConsentPurpose,
        recipient: Option<&Recipient>,
    ) -> (bool, DecisionBasis, Option<i64>) {
        let decision = decide(consents, P, purpose, recipient, at(100));
        (
            decision.permitted,
            decision.basis,
            decision.consent.map(|id| id.0),
        )
    }

    #[test]
    fn research_is_opt_in() {
        assert_eq!(
            check(&[], Research, None),
            (false, DecisionBasis::NoConsentResearchIsOptIn, None),
            "no consent: no research"
        );
        assert_eq!(
            check(&[consent(1, Research, Permit, vec![], 0)], Research, None),
            (true, DecisionBasis::ConsentPermits, Some(1))
        );
        assert_eq!(
            check(&[consent(1, Research, Deny, vec![], 0)], Research, None),
            (false, DecisionBasis::ConsentDenies, Some(1))
        );
        assert_eq!(
            check(
                &[consent(1, Sharing, Permit, vec![], 0)],
                Research,
                Some(&acme())
            ),
            (false, DecisionBasis::NoConsentResearchIsOptIn, None),
            "a sharing permit is no research permit"
        );
    }

    #[test]
    fn sharing_is_opt_out() {
        assert_eq!(
            check(&[], Sharing, Some(&acme())),
            (true, DecisionBasis::NoConsentSharingIsOptOut, None)
        );
        assert_eq!(
            check(
                &[consent(1, Sharing, Deny, vec![acme()], 0)],
                Sharing,
                Some(&acme())
            ),
            (false, DecisionBasis::ConsentDenies, Some(1)),
            "a deny naming the recipient"
        );
        assert_eq!(
            check(
                &[consent(1, Sharing, Deny, vec![], 0)],
                Sharing,
                Some(&acme())
            ),
            (false, DecisionBasis::ConsentDenies, Some(1)),
            "a deny of all sharing"
        );
        assert_eq!(
            check(
                &[consent(1, Sharing, Deny, vec![daughter()], 0)],
                Sharing,
                Some(&acme())
            ),
            (true, DecisionBasis::NoConsentSharingIsOptOut, None),
            "a deny naming someone else does not apply"
        );
        assert_eq!(
            check(
                &[consent(1, Research, Deny, vec![], 0)],
                Sharing,
                Some(&acme())
            ),
            (true, DecisionBasis::NoConsentSharingIsOptOut, None),
            "a research deny is no sharing deny"
        );
    }

    #[test]
    fn the_more_specific_consent_wins_even_when_older() {
        let consents = [
            consent(1, Sharing, Permit, vec![daughter()], 0),
            consent(2, Sharing, Deny, vec![], 50),
        ];
        assert_eq!(
            check(&consents, Sharing, Some(&daughter())),
            (true, DecisionBasis::ConsentPermits, Some(1)),
            "deny all sharing, except to my daughter"
        );
        assert_eq!(
            check(&consents, Sharing, Some(&acme())),
            (false, DecisionBasis::ConsentDenies, Some(2))
        );
        let research = [
            consent(3, Research, Permit, vec![], 60),
            consent(4, Research, Deny, vec![acme()], 10),
        ];
        assert_eq!(
            check(&research, Research, Some(&acme())),
            (false, DecisionBasis::ConsentDenies, Some(4)),
            "research yes, but not by Acme"
        );
        assert_eq!(
            check(&research, Research, None),
            (true, DecisionBasis::ConsentPermits, Some(3)),
            "research inside the hospital: only general consents apply"
        );
    }

    #[test]
    fn among_equally_specific_consents_the_more_recent_wins() {
        let consents = [
            consent(1, Sharing, Deny, vec![acme()], 10),
            consent(2, Sharing, Permit, vec![acme(), daughter()], 20),
        ];
        assert_eq!(
            check(&consents, Sharing, Some(&acme())),
            (true, DecisionBasis::ConsentPermits, Some(2))
        );
        // Recency is when the patient gave it, not when it was typed in: a permit dated earlier
        // but recorded later does not override the later deny.
        let late_entry = [
            consent(3, Research, Deny, vec![], 30),
            consent(4, Research, Permit, vec![], 5),
        ];
        assert_eq!(
            check(&late_entry, Research, None),
            (false, DecisionBasis::ConsentDenies, Some(3))
        );
        // Same date: the one recorded last (larger id).
        let same_date = [
            consent(5, Research, Permit, vec![], 7),
            consent(6, Research, Deny, vec![], 7),
        ];
        assert_eq!(
            check(&same_date, Research, None),
            (false, DecisionBasis::ConsentDenies, Some(6))
        );
    }

    #[test]
    fn only_consents_in_force_count() {
        let mut withdrawn = consent(1, Sharing, Deny, vec![acme()], 0);
        withdrawn.details.status = ConsentStatus::Inactive;
        let mut mistaken = consent(2, Research, Permit, vec![], 0);
        mistaken.details.status = ConsentStatus::EnteredInError;
        let mut expired = consent(3, Research, Permit, vec![], 0);
        expired.details.end = Some(at(100));
        let mut future = consent(4, Sharing, Deny, vec![], 0);
        future.details.start = Some(at(101));
        let mut current = consent(5, Research, Permit, vec![], 0);
        current.details.start = Some(at(100));
        current.details.end = Some(at(101));
        assert_eq!(
            check(&[withdrawn, future], Sharing, Some(&acme())),
            (true, DecisionBasis::NoConsentSharingIsOptOut, None),
            "withdrawn and not yet started consents do not apply"
        );
        assert_eq!(
            check(&[mistaken, expired.clone()], Research, None),
            (false, DecisionBasis::NoConsentResearchIsOptIn, None),
            "an entered-in-error consent and one whose period ended (half-open) do not apply"
        );
        assert_eq!(
            check(&[expired, current], Research, None),
            (true, DecisionBasis::ConsentPermits, Some(5)),
            "the start is inclusive"
        );
    }

    #[test]
    fn other_patients_consents_are_ignored() {
        let mut other = consent(1, Research, Permit, vec![], 0);
        other.details.patient = PatientId(2);
        assert_eq!(
            check(&[other], Research, None),
            (false, DecisionBasis::NoConsentResearchIsOptIn, None)
        );
    }

    #[test]
    fn recipients_parse_and_print_back() {
        for text in [
            "Organization/acme-lab",
            "RelatedPerson/rp.7",
            "urn:oid:1.2.3|LAB-9",
            "https://registry.example/orgs|a|b",
        ] {
            let recipient = Recipient::parse(text).expect(text);
            assert_eq!(recipient.to_string(), text);
        }
        assert_eq!(
            Recipient::parse("https://registry.example/orgs|a|b"),
            Ok(Recipient::Identifier {
                system: "https://registry.example/orgs".to_owned(),
                value: "a|b".to_owned()
            })
        );
        for bad in [
            "",
            "Organization/",
            "Organization/a/b",
            "Practitioner/1",
            "acme",
            "|x",
            "sys|",
            "sys|a\u{1f}b",
        ] {
            assert_eq!(
                Recipient::parse(bad),
                Err(ConsentError::Recipient),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn validation() {
        let mut record = consent(1, Sharing, Deny, vec![acme()], 0).details;
        assert_eq!(record.validate(), Ok(()));
        record.start = Some(at(5));
        record.end = Some(at(5));
        assert_eq!(record.validate(), Err(ConsentError::EmptyPeriod));
        record.end = None;
        record.recipients.push(acme());
        assert_eq!(record.validate(), Err(ConsentError::RepeatedRecipient));
        record.recipients.pop();
        record.recorded_by = " ".to_owned();
        assert_eq!(record.validate(), Err(ConsentError::NoRecorder));
        for status in ConsentStatus::ALL {
            assert_eq!(ConsentStatus::parse(status.code()), Ok(status));
        }
        for purpose in ConsentPurpose::ALL {
            assert_eq!(ConsentPurpose::parse(purpose.code()), Ok(purpose));
        }
        assert_eq!(ConsentProvision::parse("deny"), Ok(Deny));
        assert!(ConsentStatus::parse("draft").is_err());
    }
}
