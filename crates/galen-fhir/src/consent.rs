//! `Consent` (FHIR R4 4.0.1) to and from Galen's consent records ([`galen_model::NewConsent`]).
//!
//! **What Galen reads** from a posted Consent:
//!
//! | element | Galen |
//! |---|---|
//! | `status` | `active`, `inactive` or `entered-in-error`; `draft`, `proposed` and `rejected` are not recorded (a consent not in force decides nothing) |
//! | `scope` | [`CONSENT_SCOPE`] `research` (purpose research) or `patient-privacy` (purpose sharing); `treatment` and `adr` are refused |
//! | `category` | required (1..*), kept as sent |
//! | `patient` | `Patient/{id}`, required |
//! | `dateTime` | when the patient gave it (recency, see [`galen_model::decide`]); absent: when Galen recorded it |
//! | `provision.type` | `permit` or `deny`, required |
//! | `provision.period` | the validity period; a date or a time stands for its whole extent, so an end of `2026-12-31` covers that day |
//! | `provision.actor` | the recipients, each with role [`PARTICIPATION_TYPE`] `IRCP` (information recipient) and a reference `Organization/{id}`, `RelatedPerson/{id}` or an `identifier` (system and value); none: every recipient of the purpose |
//! | `provision.action` | optional; [`CONSENT_ACTION`] `access`, `use` or `disclose` (what Galen enforces: data leaving direct care) |
//! | `provision.purpose` | optional; only [`ACT_REASON`] `HRESCH` (healthcare research) on a research consent |
//!
//! **What Galen refuses**, because it could not enforce it and a consent that is recorded but not
//! enforced misleads the patient: nested `provision.provision`, `provision.data`,
//! `provision.dataPeriod`, `provision.class`, `provision.code`, `provision.securityLabel` (Galen
//! does not filter by data item or class), the actions `collect` and `correct`, purposes other than
//! research, actor roles other than information recipient, and `modifierExtension` anywhere.
//! Each refusal names the element.
//!
//! **What Galen keeps**: every other element (categories, `policy`, `policyRule`, `performer`,
//! `organization`, `source[x]`, `verification`, extensions) travels in the posted document the
//! store keeps beside the record and is served back ([`served_consent`]). When the posted resource
//! has neither `policy` nor `policyRule` (invariant ppc-1 asks for one), Galen serves
//! `policyRule` [`ACT_CODE`] `OPTIN` for research and `OPTOUT` for sharing: the default each
//! purpose follows when no consent applies.

use galen_model::{
    ConsentProvision, ConsentPurpose, ConsentStatus, NewConsent, PatientId, Recipient, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::codes;
use crate::datatypes::{CodeableConcept, Coding, Extra, Identifier, Meta, Period, Reference};
use crate::error::{Error, Problem, Result};
use crate::observation::read_patient_reference;
use crate::resource::{FhirResource, ResourceType};
use crate::search::DateParam;

/// HL7 consent scopes (`research`, `patient-privacy`, `treatment`, `adr`).
pub const CONSENT_SCOPE: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
/// HL7 consent actions (`collect`, `access`, `use`, `disclose`, `correct`).
pub const CONSENT_ACTION: &str = "http://terminology.hl7.org/CodeSystem/consentaction";
/// HL7 v3 participation types (`IRCP` information recipient).
pub const PARTICIPATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
/// HL7 v3 act reasons (purposes of use; `HRESCH` healthcare research).
pub const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
/// HL7 v3 act codes (`OPTIN`, `OPTOUT` consent directives).
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
/// LOINC 59284-0 "Patient Consent": the category of the Consents Galen generates.
pub const PATIENT_CONSENT_CATEGORY: &str = "59284-0";

/// Elements of `Consent.provision` Galen cannot enforce (see the module documentation).
const UNENFORCEABLE_PROVISION: [&str; 7] = [
    "provision",
    "data",
    "dataPeriod",
    "class",
    "code",
    "securityLabel",
    "modifierExtension",
];

/// `Consent`: a patient's choice about the use and disclosure of their data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Consent {
    /// Always `Consent`.
    pub resource_type: ResourceType<Consent>,
    /// Logical id (Galen's numeric consent id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// `draft`, `proposed`, `active`, `rejected`, `inactive` or `entered-in-error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// What it is about (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<CodeableConcept>,
    /// The kind of consent document (required, 1..*).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<CodeableConcept>,
    /// Whose choice it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<Reference>,
    /// When it was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_time: Option<String>,
    /// The rule it is recorded under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_rule: Option<CodeableConcept>,
    /// The choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision: Option<Provision>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl FhirResource for Consent {
    const TYPE: &'static str = "Consent";

    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// `Consent.provision`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provision {
    /// `permit` or `deny`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// When it applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    /// Whom it names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actor: Vec<ProvisionActor>,
    /// What it covers (`access`, `use`, `disclose`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub action: Vec<CodeableConcept>,
    /// Purposes of use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purpose: Vec<Coding>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Consent.provision.actor`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionActor {
    /// How the actor is involved (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<CodeableConcept>,
    /// Who (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

fn element(path: impl Into<String>, problem: Problem, message: impl Into<String>) -> Error {
    Error::element(path, problem, message)
}

/// Refuses a `modifierExtension` among `extra`: it would change the meaning of what Galen reads.
fn no_modifier_extension(extra: &Extra, path: &str) -> Result<()> {
    if extra.contains_key("modifierExtension") {
        return Err(element(
            format!("{path}.modifierExtension"),
            Problem::NotSupported,
            "modifier extensions change what a consent means and Galen cannot enforce them",
        ));
    }
    Ok(())
}

/// The half-open interval `[start, end)` a FHIR dateTime covers at its precision.
fn date_time_interval(text: &str, path: &str) -> Result<(Timestamp, Timestamp)> {
    let bad = || {
        element(
            path,
            Problem::BadTime,
            format!(
                "{text:?} is not a FHIR dateTime such as 2026-11-24 or 2026-11-24T08:00:00Z (times need an offset)"
            ),
        )
    };
    if !text.starts_with(|character: char| character.is_ascii_digit()) {
        return Err(bad());
    }
    let parsed = DateParam::parse(text).map_err(|_| bad())?;
    Ok((parsed.start, parsed.end))
}

/// The purpose a `scope` stands for.
fn read_scope(scope: Option<&CodeableConcept>) -> Result<ConsentPurpose> {
    let path = "Consent.scope";
    let scope = scope.ok_or_else(|| {
        element(
            path,
            Problem::Required,
            format!("the scope is required: {CONSENT_SCOPE} research or patient-privacy"),
        )
    })?;
    let code = scope
        .coding
        .iter()
        .filter(|coding| coding.system.as_deref() == Some(CONSENT_SCOPE))
        .find_map(|coding| coding.code.as_deref());
    match code {
        Some("research") => Ok(ConsentPurpose::Research),
        Some("patient-privacy") => Ok(ConsentPurpose::Sharing),
        Some(other @ ("treatment" | "adr")) => Err(element(
            path,
            Problem::NotSupported,
            format!(
                "scope {other:?}: Galen enforces research and patient-privacy consents, not treatment consents or advance directives"
            ),
        )),
        _ => Err(element(
            path,
            Problem::Invalid,
            format!("the scope must be {CONSENT_SCOPE} research or patient-privacy"),
        )),
    }
}

/// One recipient of `provision.actor[index]`.
fn read_actor(actor: &ProvisionActor, index: usize) -> Result<Recipient> {
    let path = format!("Consent.provision.actor[{index}]");
    no_modifier_extension(&actor.extra, &path)?;
    let role = actor.role.as_ref().ok_or_else(|| {
        element(
            format!("{path}.role"),
            Problem::Required,
            format!("the role is required: {PARTICIPATION_TYPE} IRCP (information recipient)"),
        )
    })?;
    if !role.has(PARTICIPATION_TYPE, "IRCP") {
        return Err(element(
            format!("{path}.role"),
            Problem::NotSupported,
            format!(
                "Galen enforces consents about who receives data: the role must be {PARTICIPATION_TYPE} IRCP (information recipient)"
            ),
        ));
    }
    let reference = actor.reference.as_ref().ok_or_else(|| {
        element(
            format!("{path}.reference"),
            Problem::Required,
            "the recipient is required: Organization/{id}, RelatedPerson/{id} or an identifier",
        )
    })?;
    if let Some(text) = &reference.reference {
        let recipient = Recipient::parse(text).ok().filter(|recipient| {
            matches!(
                recipient,
                Recipient::Organization(_) | Recipient::RelatedPerson(_)
            )
        });
        return recipient.ok_or_else(|| {
            element(
                format!("{path}.reference.reference"),
                Problem::NotSupported,
                format!(
                    "{text:?}: Galen discloses to organisations and caregivers; name one as Organization/{{id}} or RelatedPerson/{{id}}, or by identifier"
                ),
            )
        });
    }
    match &reference.identifier {
        Some(Identifier {
            system: Some(system),
            value: Some(value),
            ..
        }) => Recipient::parse(&format!("{system}|{value}"))
            .ok()
            .filter(|recipient| {
                *recipient
                    == Recipient::Identifier {
                        system: system.clone(),
                        value: value.clone(),
                    }
            })
            .ok_or_else(|| {
                element(
                    format!("{path}.reference.identifier"),
                    Problem::Invalid,
                    "the identifier needs a system (without '|') and a value, without control characters",
                )
            }),
        _ => Err(element(
            format!("{path}.reference"),
            Problem::Required,
            "name the recipient with reference (Organization/{id}, RelatedPerson/{id}) or identifier (system and value)",
        )),
    }
}

/// Reads a posted Consent into a consent record; `recorded` and `recorded_by` are when and by
/// whom Galen records it (also the consent's date when `dateTime` is absent).
pub fn consent_from_fhir(
    resource: &Consent,
    recorded: Timestamp,
    recorded_by: &str,
) -> Result<NewConsent> {
    no_modifier_extension(&resource.extra, "Consent")?;
    let status = match resource.status.as_deref() {
        None => {
            return Err(element(
                "Consent.status",
                Problem::Required,
                "the status is required: active, inactive or entered-in-error",
            ));
        }
        Some(code @ ("draft" | "proposed" | "rejected")) => {
            return Err(element(
                "Consent.status",
                Problem::NotSupported,
                format!(
                    "status {code:?}: Galen records consents in force (active) or no longer in force (inactive, entered-in-error)"
                ),
            ));
        }
        Some(code) => ConsentStatus::parse(code).map_err(|_| {
            element(
                "Consent.status",
                Problem::Invalid,
                format!("status {code:?} must be active, inactive or entered-in-error"),
            )
        })?,
    };
    let purpose = read_scope(resource.scope.as_ref())?;
    if resource.category.is_empty() {
        return Err(element(
            "Consent.category",
            Problem::Required,
            format!(
                "at least one category is required, e.g. {} {PATIENT_CONSENT_CATEGORY} (Patient Consent)",
                codes::LOINC
            ),
        ));
    }
    let patient: PatientId = match &resource.patient {
        Some(reference) => read_patient_reference(reference, "Consent.patient")?,
        None => {
            return Err(element(
                "Consent.patient",
                Problem::Required,
                "the patient is required (Patient/{id})",
            ));
        }
    };
    let dated = match &resource.date_time {
        Some(text) => date_time_interval(text, "Consent.dateTime")?.0,
        None => recorded,
    };
    let provision = resource.provision.as_ref().ok_or_else(|| {
        element(
            "Consent.provision",
            Problem::Required,
            "the provision is required: provision.type permit or deny",
        )
    })?;
    for name in UNENFORCEABLE_PROVISION {
        if provision.extra.contains_key(name) {
            return Err(element(
                format!("Consent.provision.{name}"),
                Problem::NotSupported,
                format!(
                    "Galen enforces a consent for all of a patient's data and cannot enforce provision.{name}; record a consent without it"
                ),
            ));
        }
    }
    let choice = match provision.kind.as_deref() {
        Some(code) => ConsentProvision::parse(code).map_err(|_| {
            element(
                "Consent.provision.type",
                Problem::Invalid,
                format!("type {code:?} must be permit or deny"),
            )
        })?,
        None => {
            return Err(element(
                "Consent.provision.type",
                Problem::Required,
                "the type is required: permit or deny",
            ));
        }
    };
    let (mut start, mut end) = (None, None);
    if let Some(period) = &provision.period {
        if let Some(text) = &period.start {
            start = Some(date_time_interval(text, "Consent.provision.period.start")?.0);
        }
        if let Some(text) = &period.end {
            end = Some(date_time_interval(text, "Consent.provision.period.end")?.1);
        }
        if let (Some(start), Some(end)) = (start, end)
            && end <= start
        {
            return Err(element(
                "Consent.provision.period",
                Problem::Invalid,
                "the period ends before it starts",
            ));
        }
    }
    let recipients = provision
        .actor
        .iter()
        .enumerate()
        .map(|(index, actor)| read_actor(actor, index))
        .collect::<Result<Vec<_>>>()?;
    for (index, action) in provision.action.iter().enumerate() {
        let path = format!("Consent.provision.action[{index}]");
        let code = action
            .coding
            .iter()
            .filter(|coding| coding.system.as_deref() == Some(CONSENT_ACTION))
            .find_map(|coding| coding.code.as_deref());
        match code {
            Some("access" | "use" | "disclose") => {}
            Some(other @ ("collect" | "correct")) => {
                return Err(element(
                    path,
                    Problem::NotSupported,
                    format!(
                        "action {other:?}: Galen enforces consents about data leaving direct care (access, use, disclose), not about collecting or correcting it"
                    ),
                ));
            }
            _ => {
                return Err(element(
                    path,
                    Problem::Invalid,
                    format!("an action is {CONSENT_ACTION} access, use or disclose"),
                ));
            }
        }
    }
    for (index, coding) in provision.purpose.iter().enumerate() {
        if !(coding.is(ACT_REASON, "HRESCH") && purpose == ConsentPurpose::Research) {
            return Err(element(
                format!("Consent.provision.purpose[{index}]"),
                Problem::NotSupported,
                format!(
                    "Galen enforces a consent's purpose through its scope; the only purpose it takes is {ACT_REASON} HRESCH on a research consent"
                ),
            ));
        }
    }
    let consent = NewConsent {
        patient,
        status,
        purpose,
        provision: choice,
        recipients,
        start,
        end,
        dated,
        recorded,
        recorded_by: recorded_by.to_owned(),
    };
    consent.validate().map_err(|error| {
        element(
            "Consent.provision.actor",
            Problem::Invalid,
            error.to_string(),
        )
    })?;
    Ok(consent)
}

/// Whether two records carry the same terms: everything but the status and when and by whom
/// Galen recorded them. A consent's terms never change once recorded (a new choice is a new
/// consent); only its status does.
pub fn same_terms(left: &NewConsent, right: &NewConsent) -> bool {
    left.patient == right.patient
        && left.purpose == right.purpose
        && left.provision == right.provision
        && left.recipients == right.recipients
        && left.start == right.start
        && left.end == right.end
        && left.dated == right.dated
}

fn scope_of(purpose: ConsentPurpose) -> CodeableConcept {
    match purpose {
        ConsentPurpose::Research => {
            CodeableConcept::single(CONSENT_SCOPE, "research", Some("Research"))
        }
        ConsentPurpose::Sharing => {
            CodeableConcept::single(CONSENT_SCOPE, "patient-privacy", Some("Privacy Consent"))
        }
    }
}

/// The policy rule a purpose follows when no consent applies.
fn default_policy_rule(purpose: ConsentPurpose) -> CodeableConcept {
    match purpose {
        ConsentPurpose::Research => CodeableConcept::single(ACT_CODE, "OPTIN", Some("opt-in")),
        ConsentPurpose::Sharing => CodeableConcept::single(ACT_CODE, "OPTOUT", Some("opt-out")),
    }
}

fn recipient_reference(recipient: &Recipient) -> Reference {
    match recipient {
        Recipient::Organization(id) => Reference::to("Organization", id),
        Recipient::RelatedPerson(id) => Reference::to("RelatedPerson", id),
        Recipient::Identifier { system, value } => Reference {
            identifier: Some(Identifier {
                system: Some(system.clone()),
                value: Some(value.clone()),
                ..Identifier::default()
            }),
            ..Reference::default()
        },
    }
}

/// A recorded consent as a FHIR Consent generated from the record alone (no posted document).
/// The period's end, exclusive in the record, is written as the last microsecond it covers.
pub fn consent_to_fhir(consent: &galen_model::Consent) -> Consent {
    let details = &consent.details;
    let period = (details.start.is_some() || details.end.is_some()).then(|| Period {
        start: details.start.map(Timestamp::to_rfc3339),
        end: details.end.map(|end| end.add_micros(-1).to_rfc3339()),
        extra: Extra::new(),
    });
    Consent {
        resource_type: ResourceType::new(),
        id: Some(consent.id.0.to_string()),
        meta: None,
        status: Some(details.status.code().to_owned()),
        scope: Some(scope_of(details.purpose)),
        category: vec![CodeableConcept::single(
            codes::LOINC,
            PATIENT_CONSENT_CATEGORY,
            Some("Patient Consent"),
        )],
        patient: Some(Reference::to("Patient", details.patient.0)),
        date_time: Some(details.dated.to_rfc3339()),
        policy_rule: Some(default_policy_rule(details.purpose)),
        provision: Some(Provision {
            kind: Some(details.provision.code().to_owned()),
            period,
            actor: details
                .recipients
                .iter()
                .map(|recipient| ProvisionActor {
                    role: Some(CodeableConcept::single(
                        PARTICIPATION_TYPE,
                        "IRCP",
                        Some("information recipient"),
                    )),
                    reference: Some(recipient_reference(recipient)),
                    extra: Extra::new(),
                })
                .collect(),
            action: Vec::new(),
            purpose: match details.purpose {
                ConsentPurpose::Research => vec![Coding::new(
                    ACT_REASON,
                    "HRESCH",
                    Some("healthcare research"),
                )],
                ConsentPurpose::Sharing => Vec::new(),
            },
            extra: Extra::new(),
        }),
        extra: Extra::new(),
    }
}

/// The Consent to serve for a recorded consent, given the resource it was recorded from: the
/// posted resource with Galen's id and the record's status, `dateTime` filled in when the client
/// left it out, and a default `policyRule` when it has neither `policy` nor `policyRule`. Should
/// the posted resource no longer carry the record's terms, the record wins
/// ([`consent_to_fhir`]).
pub fn served_consent(consent: &galen_model::Consent, posted: Option<&Consent>) -> Consent {
    let details = &consent.details;
    let matches = posted.is_some_and(|posted| {
        consent_from_fhir(posted, details.recorded, &details.recorded_by)
            .is_ok_and(|read| same_terms(&read, details))
    });
    let Some(posted) = posted.filter(|_| matches) else {
        return consent_to_fhir(consent);
    };
    let mut served = posted.clone();
    served.id = Some(consent.id.0.to_string());
    served.meta = None;
    served.status = Some(details.status.code().to_owned());
    if served.date_time.is_none() {
        served.date_time = Some(details.dated.to_rfc3339());
    }
    if served.policy_rule.is_none() && !served.extra.contains_key("policy") {
        served.policy_rule = Some(default_policy_rule(details.purpose));
    }
    served
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::resource::parse_resource;

    const T0: Timestamp = Timestamp::from_micros(1_795_421_700_000_000);

    fn posted(value: Value) -> Consent {
        parse_resource(value.to_string().as_bytes()).expect("a Consent")
    }

    fn deny_acme() -> Value {
        json!({
            "resourceType": "Consent",
            "status": "active",
            "scope": { "coding": [{ "system": CONSENT_SCOPE, "code": "patient-privacy" }] },
            "category": [{ "coding": [{ "system": "http://loinc.org", "code": "59284-0" }] }],
            "patient": { "reference": "Patient/12" },
            "dateTime": "2026-11-24",
            "performer": [{ "reference": "Patient/12" }],
            "provision": {
                "type": "deny",
                "period": { "start": "2026-11-24T08:00:00Z", "end": "2026-12-31" },
                "actor": [
                    { "role": { "coding": [{ "system": PARTICIPATION_TYPE, "code": "IRCP" }] },
                      "reference": { "reference": "Organization/acme-lab" } },
                    { "role": { "coding": [{ "system": PARTICIPATION_TYPE, "code": "IRCP" }] },
                      "reference": { "identifier": { "system": "urn:oid:1.2.3", "value": "LAB-9" } } }
                ],
                "action": [{ "coding": [{ "system": CONSENT_ACTION, "code": "disclose" }] }]
            }
        })
    }

    /// The element path of the error reading `value`.
    fn refused(value: Value) -> String {
        match consent_from_fhir(&posted(value), T0, "nurse.ann") {
            Err(error) => error.expression().unwrap_or("").to_owned(),
            Ok(consent) => panic!("accepted: {consent:?}"),
        }
    }

    #[test]
    fn a_sharing_deny_maps_to_the_record() {
        let consent = consent_from_fhir(&posted(deny_acme()), T0, "nurse.ann").expect("maps");
        assert_eq!(consent.patient, PatientId(12));
        assert_eq!(consent.status, ConsentStatus::Active);
        assert_eq!(consent.purpose, ConsentPurpose::Sharing);
        assert_eq!(consent.provision, ConsentProvision::Deny);
        assert_eq!(
            consent.recipients,
            vec![
                Recipient::Organization("acme-lab".into()),
                Recipient::Identifier {
                    system: "urn:oid:1.2.3".into(),
                    value: "LAB-9".into()
                }
            ]
        );
        let at = |text: &str| Timestamp::parse_rfc3339(text).expect("time");
        assert_eq!(consent.start, Some(at("2026-11-24T08:00:00Z")));
        assert_eq!(
            consent.end,
            Some(at("2027-01-01T00:00:00Z")),
            "a date end covers its whole day"
        );
        assert_eq!(consent.dated, at("2026-11-24T00:00:00Z"));
        assert_eq!(
            (consent.recorded, consent.recorded_by.as_str()),
            (T0, "nurse.ann")
        );
    }

    #[test]
    fn a_research_permit_without_date_is_dated_when_recorded() {
        let mut value = deny_acme();
        value["scope"]["coding"][0]["code"] = json!("research");
        value["provision"] = json!({
            "type": "permit",
            "purpose": [{ "system": ACT_REASON, "code": "HRESCH" }]
        });
        value.as_object_mut().expect("object").remove("dateTime");
        let consent = consent_from_fhir(&posted(value), T0, "pat").expect("maps");
        assert_eq!(consent.purpose, ConsentPurpose::Research);
        assert_eq!(consent.provision, ConsentProvision::Permit);
        assert!(consent.recipients.is_empty(), "every researcher");
        assert_eq!(consent.dated, T0);
    }

    #[test]
    fn what_galen_cannot_enforce_is_refused_by_element() {
        type Change = fn(&mut Value);
        let cases: Vec<(Change, &str)> = vec![
            (|value| value["status"] = json!("draft"), "Consent.status"),
            (|value| value["status"] = json!("maybe"), "Consent.status"),
            (
                |value| value["scope"]["coding"][0]["code"] = json!("treatment"),
                "Consent.scope",
            ),
            (|value| value["category"] = json!([]), "Consent.category"),
            (
                |value| value["patient"] = json!({ "reference": "Group/1" }),
                "Consent.patient.reference",
            ),
            (
                |value| value["dateTime"] = json!("yesterday"),
                "Consent.dateTime",
            ),
            (
                |value| value["provision"]["type"] = json!("maybe"),
                "Consent.provision.type",
            ),
            (
                |value| value["provision"]["provision"] = json!([{ "type": "permit" }]),
                "Consent.provision.provision",
            ),
            (
                |value| {
                    value["provision"]["data"] = json!([{ "meaning": "instance",
                        "reference": { "reference": "Observation/1" } }]);
                },
                "Consent.provision.data",
            ),
            (
                |value| value["provision"]["class"] = json!([{ "code": "Observation" }]),
                "Consent.provision.class",
            ),
            (
                |value| {
                    value["provision"]["period"] =
                        json!({ "start": "2026-12-01", "end": "2026-11-01" });
                },
                "Consent.provision.period",
            ),
            (
                |value| value["provision"]["actor"][0]["role"]["coding"][0]["code"] = json!("AUT"),
                "Consent.provision.actor[0].role",
            ),
            (
                |value| {
                    value["provision"]["actor"][1]["reference"] =
                        json!({ "reference": "Practitioner/5" });
                },
                "Consent.provision.actor[1].reference.reference",
            ),
            (
                |value| value["provision"]["action"][0]["coding"][0]["code"] = json!("collect"),
                "Consent.provision.action[0]",
            ),
            (
                |value| {
                    value["provision"]["purpose"] =
                        json!([{ "system": ACT_REASON, "code": "HRESCH" }]);
                },
                "Consent.provision.purpose[0]",
            ),
            (
                |value| {
                    value["modifierExtension"] = json!([{ "url": "urn:x", "valueBoolean": true }]);
                },
                "Consent.modifierExtension",
            ),
            (
                |value| {
                    let first = value["provision"]["actor"][0].clone();
                    value["provision"]["actor"][1] = first;
                },
                "Consent.provision.actor",
            ),
            (
                |value| {
                    value
                        .as_object_mut()
                        .map(|object| object.remove("provision"));
                },
                "Consent.provision",
            ),
        ];
        for (change, path) in cases {
            let mut value = deny_acme();
            change(&mut value);
            assert_eq!(refused(value), path);
        }
    }

    #[test]
    fn served_back_as_posted_with_galen_s_id_status_and_defaults() {
        let resource = posted(deny_acme());
        let mut record = consent_from_fhir(&resource, T0, "nurse.ann").expect("maps");
        record.status = ConsentStatus::Inactive;
        let consent = galen_model::Consent {
            id: galen_model::ConsentId(7),
            details: record,
        };
        let served = served_consent(&consent, Some(&resource));
        assert_eq!(served.id.as_deref(), Some("7"));
        assert_eq!(served.status.as_deref(), Some("inactive"));
        assert_eq!(
            served.extra["performer"],
            json!([{ "reference": "Patient/12" }])
        );
        assert_eq!(
            served.policy_rule,
            Some(default_policy_rule(ConsentPurpose::Sharing)),
            "ppc-1: a policy rule when the client gave neither policy nor policyRule"
        );
        assert_eq!(served.date_time.as_deref(), Some("2026-11-24"), "as posted");
        // Without a document, the record alone: its terms read back the same.
        let generated = served_consent(&consent, None);
        let read = consent_from_fhir(&generated, T0, "nurse.ann").expect("generated reads back");
        assert!(same_terms(&read, &consent.details), "{generated:?}");
        assert_eq!(generated.status.as_deref(), Some("inactive"));
    }
}
