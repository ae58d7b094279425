//! Searches of patients' consents (`Consent`).
//!
//! - `patient` is `Patient/{id}` or `{id}`.
//! - `status` is a ConsentState code (`active`, `inactive`, `entered-in-error`; the other codes
//!   are valid and match nothing, since Galen records no drafts).
//! - `scope` is a [`crate::consent::CONSENT_SCOPE`] code: `research` or `patient-privacy` (other
//!   scopes match nothing).
//!
//! Results come in the order recorded (by id); `_sort` is refused rather than ignored.

use std::collections::BTreeSet;

use galen_model::{Consent, ConsentId, ConsentPurpose, ConsentStatus, PatientId};

use super::{Paging, SearchParamType, SearchParameterSpec, paging, restrict, spec, walk};
use crate::consent::CONSENT_SCOPE;
use crate::error::{Error, Result};
use crate::observation::parse_canonical_i64;

/// The code system of `Consent.status`.
const CONSENT_STATE: &str = "http://hl7.org/fhir/consent-state-codes";

/// Search parameters of Consent.
pub const CONSENT_PARAMETERS: &[SearchParameterSpec] = &[
    spec("_id", SearchParamType::Token, "Galen's numeric consent id"),
    spec(
        "patient",
        SearchParamType::Reference,
        "the patient whose consent it is",
    ),
    spec(
        "status",
        SearchParamType::Token,
        "active, inactive or entered-in-error",
    ),
    spec(
        "scope",
        SearchParamType::Token,
        "research or patient-privacy (http://terminology.hl7.org/CodeSystem/consentscope)",
    ),
];

/// A parsed Consent search. Sets are `None` when the parameter was not given and may be empty
/// (nothing can match).
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentQuery {
    /// `_id`.
    pub ids: Option<BTreeSet<ConsentId>>,
    /// `patient`.
    pub patients: Option<BTreeSet<PatientId>>,
    /// `status`.
    pub statuses: Option<BTreeSet<&'static str>>,
    /// `scope`, as purposes.
    pub purposes: Option<BTreeSet<&'static str>>,
    /// `_count`, `_cursor`.
    pub paging: Paging,
}

impl ConsentQuery {
    /// Parses the query pairs of a Consent search.
    pub fn parse<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> Result<ConsentQuery> {
        let mut query = ConsentQuery {
            ids: None,
            patients: None,
            statuses: None,
            purposes: None,
            paging: Paging::default(),
        };
        let common = walk(params, CONSENT_PARAMETERS, |occurrence| {
            match occurrence.name {
                "_id" => {
                    let group = occurrence.ids(|id| parse_canonical_i64(id).map(ConsentId))?;
                    restrict(&mut query.ids, group);
                }
                "patient" => {
                    let group = occurrence
                        .references("Patient")?
                        .into_iter()
                        .map(PatientId)
                        .collect();
                    restrict(&mut query.patients, group);
                }
                "status" => {
                    let mut group = BTreeSet::new();
                    for token in occurrence.tokens()? {
                        let code = token.code.as_deref().unwrap_or("");
                        let known = [
                            "draft",
                            "proposed",
                            "active",
                            "rejected",
                            "inactive",
                            "entered-in-error",
                        ];
                        if !known.contains(&code) || !token.system.allows(CONSENT_STATE) {
                            return Err(occurrence.value_error(format!(
                                "status must be one of {} (of {CONSENT_STATE})",
                                known.join(", ")
                            )));
                        }
                        group.extend(
                            ConsentStatus::ALL
                                .into_iter()
                                .map(ConsentStatus::code)
                                .filter(|status| *status == code),
                        );
                    }
                    restrict(&mut query.statuses, group);
                }
                "scope" => {
                    let mut group = BTreeSet::new();
                    for token in occurrence.tokens()? {
                        if !token.system.allows(CONSENT_SCOPE) {
                            continue;
                        }
                        match token.code.as_deref() {
                            Some("research") => {
                                group.insert(ConsentPurpose::Research.code());
                            }
                            Some("patient-privacy") => {
                                group.insert(ConsentPurpose::Sharing.code());
                            }
                            // `system|`: any scope of the system.
                            None => {
                                group.extend(ConsentPurpose::ALL.map(ConsentPurpose::code));
                            }
                            Some(_) => {}
                        }
                    }
                    restrict(&mut query.purposes, group);
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        if common.sort.is_some() {
            return Err(Error::search_unsupported(
                "_sort",
                "_sort is not supported here: consents come in the order recorded",
            ));
        }
        query.paging = paging(&common);
        Ok(query)
    }

    /// Whether a consent matches every filter.
    pub fn matches(&self, consent: &Consent) -> bool {
        let details = &consent.details;
        self.ids
            .as_ref()
            .is_none_or(|ids| ids.contains(&consent.id))
            && self
                .patients
                .as_ref()
                .is_none_or(|patients| patients.contains(&details.patient))
            && self
                .statuses
                .as_ref()
                .is_none_or(|statuses| statuses.contains(details.status.code()))
            && self
                .purposes
                .as_ref()
                .is_none_or(|purposes| purposes.contains(details.purpose.code()))
    }
}

#[cfg(test)]
mod tests {
    use galen_model::{ConsentProvision, NewConsent, Timestamp};

    use super::*;

    fn consent(id: i64, patient: i64, status: ConsentStatus, purpose: ConsentPurpose) -> Consent {
        Consent {
            id: ConsentId(id),
            details: NewConsent {
                patient: PatientId(patient),
                status,
                purpose,
                provision: ConsentProvision::Deny,
                recipients: Vec::new(),
                start: None,
                end: None,
                dated: Timestamp::EPOCH,
                recorded: Timestamp::EPOCH,
                recorded_by: "x".into(),
            },
        }
    }

    fn parse(query: &str) -> Result<ConsentQuery> {
        let pairs: Vec<(&str, &str)> = query
            .split('&')
            .map(|pair| pair.split_once('=').expect("name=value"))
            .collect();
        ConsentQuery::parse(&pairs)
    }

    #[test]
    fn filters() {
        let active_sharing = consent(1, 3, ConsentStatus::Active, ConsentPurpose::Sharing);
        let withdrawn_research = consent(2, 4, ConsentStatus::Inactive, ConsentPurpose::Research);
        let query = parse("patient=Patient/3&status=active").expect("query");
        assert!(query.matches(&active_sharing));
        assert!(!query.matches(&withdrawn_research));
        let query = parse("scope=http://terminology.hl7.org/CodeSystem/consentscope|research")
            .expect("query");
        assert!(query.matches(&withdrawn_research) && !query.matches(&active_sharing));
        let query = parse("scope=treatment").expect("another scope matches nothing");
        assert!(!query.matches(&withdrawn_research) && !query.matches(&active_sharing));
        let query = parse("status=draft").expect("a valid state matches nothing");
        assert!(!query.matches(&active_sharing));
        assert!(parse("_id=2").expect("query").matches(&withdrawn_research));
        assert!(parse("status=gone").is_err());
        assert!(parse("_sort=date").is_err());
        assert!(parse("actor=Organization/x").is_err(), "unknown parameter");
    }
}
