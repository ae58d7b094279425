//! Galen's audit trail as read-only FHIR R4 `AuditEvent`s.
//!
//! The server hands over one stored audit record as an [`AuditEntry`] (plain values, so this
//! crate does not depend on the store) and gets an [`AuditEvent`] back. The id is the record's
//! position in the audit chain (`seq`, `1`, `2`, ...). Nothing is lost: the record's Galen action
//! code is always in `subtype` ([`AUDIT_ACTION_SYSTEM`]).
//!
//! **Type, subtype and action.** REST interactions on Galen's resources use the HL7 audit event
//! type `rest` with the FHIR restful interaction as subtype; the other events use DICOM audit
//! event ids (the R4 value set of `AuditEvent.type`), with DICOM subtypes where DICOM has them:
//!
//! | Galen action       | type                                  | subtype                         | action |
//! |--------------------|---------------------------------------|---------------------------------|--------|
//! | `read`             | audit-event-type `rest`               | restful-interaction `read`      | R      |
//! | `search`           | audit-event-type `rest`               | restful-interaction `search-type` | E    |
//! | `create`           | audit-event-type `rest`               | restful-interaction `create`    | C      |
//! | `update`           | audit-event-type `rest`               | restful-interaction `update`    | U      |
//! | `delete`           | audit-event-type `rest`               | restful-interaction `delete`    | D      |
//! | `export`           | DICOM 110106 Export                   |                                 | R      |
//! | `disclose`         | DICOM 110106 Export                   |                                 | R      |
//! | `ingest`           | DICOM 110107 Import                   |                                 | C      |
//! | `login`            | DICOM 110114 User Authentication      | DICOM 110122 Login              | E      |
//! | `login-failed`     | DICOM 110114 User Authentication      | DICOM 110122 Login              | E      |
//! | `logout`           | DICOM 110114 User Authentication      | DICOM 110123 Logout             | E      |
//! | `session-expired`  | DICOM 110114 User Authentication      | DICOM 110123 Logout             | E      |
//! | `alarm-action`     | DICOM 110110 Patient Record           |                                 | U      |
//! | `config-change`    | DICOM 110100 Application Activity     |                                 | U      |
//! | `break-glass`      | DICOM 110113 Security Alert           | DICOM 110127 Emergency Override Started | E |
//! | `consent-decision` | Galen audit-action `consent-decision` |                                 | E      |
//!
//! (Search is `E`, execute, as R4's AuditEvent guidance says for a search; a login that failed is a
//! login with outcome `4`.) Every event's `subtype` also carries the Galen code.
//!
//! **Outcome.** `success` → `0`, `denied` → `4` (minor failure: the action was refused), `failed`
//! → `8` (serious failure: the action was attempted and did not complete). The record's `detail`
//! (never PHI) is `outcomeDesc`.
//!
//! **Agent.** One agent, the requestor: `who` is the actor as an identifier in
//! [`AUDIT_ACTOR_SYSTEM`] (a user name, `device:<serial>`, `token:<id>` or `system`, Galen has no
//! Practitioner resources to reference) with the same text as `display`; `role` is the role's
//! name as text; when the record's source is a network address, it is `network.address` (type 2,
//! IP address).
//!
//! **Source.** The observer is Galen (an application server, security-source-type 4); a source
//! that is not an address (the adapter, `mqtt`, `engine`) is `source.site`.
//!
//! **Entity.** The record's resource: a relative reference (`Patient/12`) becomes `what` (a
//! system object, role domain resource), anything else (a path such as `/api/v1/alarms`) becomes
//! `name`. The patient, when the record names one, is an entity of its own (a person, role
//! patient), unless the resource is that patient.

use std::net::{IpAddr, SocketAddr};

use galen_model::{AuditAction, AuditOutcome, PatientId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::datatypes::{CodeableConcept, Coding, Extra, Identifier, Meta, Reference};
use crate::error::{Error, Result};
use crate::observation::parse_canonical_i64;
use crate::resource::{FhirResource, ResourceType};

/// HL7 audit event types (`rest`).
pub const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
/// DICOM controlled terminology (audit event ids and their subtypes).
pub const DICOM: &str = "http://dicom.nema.org/resources/ontology/DCM";
/// FHIR restful interactions (`read`, `search-type`, ...).
pub const RESTFUL_INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
/// HL7 security source types (`4` application server).
pub const SECURITY_SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
/// HL7 audit entity types (`1` person, `2` system object).
pub const AUDIT_ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
/// HL7 object roles (`1` patient, `4` domain resource).
pub const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
/// Code system of Galen's audit actions, codes as [`AuditAction::code`] (under
/// [`crate::codes::CANONICAL_BASE`], like every Galen URL).
pub const AUDIT_ACTION_SYSTEM: &str = "https://galen.invalid/fhir/CodeSystem/audit-action";
/// Identifier system of audit actors: user names, `device:<serial>`, `token:<id>`, `system`.
pub const AUDIT_ACTOR_SYSTEM: &str = "https://galen.invalid/fhir/sid/audit-actor";

/// `AuditEvent`: one audited event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Always `AuditEvent`.
    pub resource_type: ResourceType<AuditEvent>,
    /// Logical id: the record's seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// The kind of event (required).
    #[serde(rename = "type")]
    pub event_type: Coding,
    /// More specific kinds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subtype: Vec<Coding>,
    /// `C`, `R`, `U`, `D` or `E`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// When it was recorded (FHIR instant, required).
    pub recorded: String,
    /// `0`, `4`, `8` or `12`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Why it ended so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_desc: Option<String>,
    /// Who took part (required, one or more).
    pub agent: Vec<AuditEventAgent>,
    /// Who observed and recorded it (required).
    pub source: AuditEventSource,
    /// What it concerned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entity: Vec<AuditEventEntity>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl FhirResource for AuditEvent {
    const TYPE: &'static str = "AuditEvent";

    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// `AuditEvent.agent`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventAgent {
    /// Roles the agent acted in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub role: Vec<CodeableConcept>,
    /// Who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who: Option<Reference>,
    /// Whether this agent started the event (required).
    pub requestor: bool,
    /// Where the request came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<AuditEventNetwork>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `AuditEvent.agent.network`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventNetwork {
    /// The address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `1` machine name, `2` IP address, ...
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub network_type: Option<String>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `AuditEvent.source`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventSource {
    /// Where within the observer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Who recorded it (required).
    pub observer: Reference,
    /// What kind of source.
    #[serde(rename = "type", default, skip_serializing_if = "Vec::is_empty")]
    pub source_type: Vec<Coding>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `AuditEvent.entity`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventEntity {
    /// The resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub what: Option<Reference>,
    /// What kind of entity.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub entity_type: Option<Coding>,
    /// What role it played.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Coding>,
    /// A name for an entity that is not a resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Other members, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One stored audit record, as the server reads it from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditEntry<'a> {
    /// Position in the audit chain: the AuditEvent's id.
    pub seq: i64,
    /// When it happened.
    pub time: Timestamp,
    /// Who (user name, `device:<serial>`, `token:<id>`, `system`).
    pub actor: &'a str,
    /// The role they acted in.
    pub role: &'a str,
    /// What was done.
    pub action: AuditAction,
    /// What to (`Patient/12`, or a path).
    pub resource: &'a str,
    /// The patient concerned.
    pub patient: Option<PatientId>,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// The client's address or the adapter.
    pub source: &'a str,
    /// The machine-made explanation (no PHI).
    pub detail: &'a str,
}

/// `AuditEvent.type` of an action.
pub fn event_type(action: AuditAction) -> Coding {
    use AuditAction as A;
    match action {
        A::Read | A::Search | A::Create | A::Update | A::Delete => {
            Coding::new(AUDIT_EVENT_TYPE, "rest", Some("RESTful Operation"))
        }
        A::Export | A::Disclose => Coding::new(DICOM, "110106", Some("Export")),
        A::Ingest => Coding::new(DICOM, "110107", Some("Import")),
        A::Login | A::LoginFailed | A::Logout | A::SessionExpired => {
            Coding::new(DICOM, "110114", Some("User Authentication"))
        }
        A::AlarmAction => Coding::new(DICOM, "110110", Some("Patient Record")),
        A::ConfigChange => Coding::new(DICOM, "110100", Some("Application Activity")),
        A::BreakGlass => Coding::new(DICOM, "110113", Some("Security Alert")),
        A::ConsentDecision => galen_action(action),
    }
}

/// The Galen coding of an action.
fn galen_action(action: AuditAction) -> Coding {
    Coding::new(AUDIT_ACTION_SYSTEM, action.code(), None)
}

/// `AuditEvent.subtype` of an action: the restful interaction or DICOM subtype where there is
/// one, then always the Galen code.
pub fn subtypes(action: AuditAction) -> Vec<Coding> {
    use AuditAction as A;
    let standard = match action {
        A::Read => Some((RESTFUL_INTERACTION, "read", "read")),
        A::Search => Some((RESTFUL_INTERACTION, "search-type", "search type")),
        A::Create => Some((RESTFUL_INTERACTION, "create", "create")),
        A::Update => Some((RESTFUL_INTERACTION, "update", "update")),
        A::Delete => Some((RESTFUL_INTERACTION, "delete", "delete")),
        A::Login | A::LoginFailed => Some((DICOM, "110122", "Login")),
        A::Logout | A::SessionExpired => Some((DICOM, "110123", "Logout")),
        A::BreakGlass => Some((DICOM, "110127", "Emergency Override Started")),
        A::Export
        | A::Disclose
        | A::Ingest
        | A::AlarmAction
        | A::ConfigChange
        | A::ConsentDecision => None,
    };
    standard
        .map(|(system, code, display)| Coding::new(system, code, Some(display)))
        .into_iter()
        .chain([galen_action(action)])
        .collect()
}

/// `AuditEvent.action` (`C`, `R`, `U`, `D`, `E`) of an action.
pub const fn action_code(action: AuditAction) -> &'static str {
    use AuditAction as A;
    match action {
        A::Create | A::Ingest => "C",
        A::Read | A::Export | A::Disclose => "R",
        A::Update | A::AlarmAction | A::ConfigChange => "U",
        A::Delete => "D",
        A::Search
        | A::Login
        | A::LoginFailed
        | A::Logout
        | A::SessionExpired
        | A::BreakGlass
        | A::ConsentDecision => "E",
    }
}

/// `AuditEvent.outcome` of an outcome.
pub const fn outcome_code(outcome: AuditOutcome) -> &'static str {
    match outcome {
        AuditOutcome::Success => "0",
        AuditOutcome::Denied => "4",
        AuditOutcome::Failed => "8",
    }
}

/// The outcome an `AuditEvent.outcome` code stands for; `12` (major failure) is never written,
/// so it stands for none.
pub fn outcome_of_code(code: &str) -> Option<AuditOutcome> {
    AuditOutcome::ALL
        .into_iter()
        .find(|outcome| outcome_code(*outcome) == code)
}

/// Parses an AuditEvent id: a seq written canonically (positive, no sign or leading zeros).
pub fn parse_audit_event_id(id: &str) -> Result<i64> {
    parse_canonical_i64(id)
        .filter(|seq| *seq > 0)
        .ok_or_else(|| Error::Id {
            resource_type: AuditEvent::TYPE,
            id: id.to_owned(),
        })
}

/// `Type/id` with a resource type name and a FHIR id: a relative reference.
fn is_relative_reference(text: &str) -> bool {
    let Some((resource_type, id)) = text.split_once('/') else {
        return false;
    };
    resource_type.starts_with(|c: char| c.is_ascii_uppercase())
        && resource_type.bytes().all(|byte| byte.is_ascii_alphabetic())
        && (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.')
}

/// The IP address of a source, if it is one (`10.0.0.7`, `10.0.0.7:51234`, `[::1]:8080`).
fn source_address(source: &str) -> Option<IpAddr> {
    source
        .parse::<SocketAddr>()
        .map(|address| address.ip())
        .or_else(|_| source.parse::<IpAddr>())
        .ok()
}

fn patient_entity(patient: PatientId) -> AuditEventEntity {
    AuditEventEntity {
        what: Some(Reference::to("Patient", patient.0)),
        entity_type: Some(Coding::new(AUDIT_ENTITY_TYPE, "1", Some("Person"))),
        role: Some(Coding::new(OBJECT_ROLE, "1", Some("Patient"))),
        ..AuditEventEntity::default()
    }
}

/// The AuditEvent of one audit record (see the module documentation).
pub fn audit_event(entry: &AuditEntry<'_>) -> AuditEvent {
    let address = source_address(entry.source);
    let agent = AuditEventAgent {
        role: if entry.role.is_empty() {
            Vec::new()
        } else {
            vec![CodeableConcept {
                text: Some(entry.role.to_owned()),
                ..CodeableConcept::default()
            }]
        },
        who: Some(Reference {
            identifier: Some(Identifier {
                system: Some(AUDIT_ACTOR_SYSTEM.to_owned()),
                value: Some(entry.actor.to_owned()),
                ..Identifier::default()
            }),
            display: Some(entry.actor.to_owned()),
            ..Reference::default()
        }),
        requestor: true,
        network: address.map(|address| AuditEventNetwork {
            address: Some(address.to_string()),
            network_type: Some("2".to_owned()),
            extra: Extra::new(),
        }),
        extra: Extra::new(),
    };
    let source = AuditEventSource {
        site: (address.is_none() && !entry.source.is_empty()).then(|| entry.source.to_owned()),
        observer: Reference {
            display: Some("Galen".to_owned()),
            ..Reference::default()
        },
        source_type: vec![Coding::new(
            SECURITY_SOURCE_TYPE,
            "4",
            Some("Application Server"),
        )],
        extra: Extra::new(),
    };
    let patient_resource = entry
        .patient
        .map(|patient| format!("Patient/{}", patient.0));
    let mut entity = Vec::new();
    if patient_resource.as_deref() == Some(entry.resource) {
        // The resource is the patient: one entity, in the patient's role.
    } else if is_relative_reference(entry.resource) {
        entity.push(AuditEventEntity {
            what: Some(Reference {
                reference: Some(entry.resource.to_owned()),
                ..Reference::default()
            }),
            entity_type: Some(Coding::new(AUDIT_ENTITY_TYPE, "2", Some("System Object"))),
            role: Some(Coding::new(OBJECT_ROLE, "4", Some("Domain Resource"))),
            ..AuditEventEntity::default()
        });
    } else if !entry.resource.is_empty() {
        entity.push(AuditEventEntity {
            entity_type: Some(Coding::new(AUDIT_ENTITY_TYPE, "2", Some("System Object"))),
            name: Some(entry.resource.to_owned()),
            ..AuditEventEntity::default()
        });
    }
    if let Some(patient) = entry.patient {
        entity.push(patient_entity(patient));
    }
    AuditEvent {
        resource_type: ResourceType::new(),
        id: Some(entry.seq.to_string()),
        meta: None,
        event_type: event_type(entry.action),
        subtype: subtypes(entry.action),
        action: Some(action_code(entry.action).to_owned()),
        recorded: entry.time.to_rfc3339(),
        outcome: Some(outcome_code(entry.outcome).to_owned()),
        outcome_desc: (!entry.detail.is_empty()).then(|| entry.detail.to_owned()),
        agent: vec![agent],
        source,
        entity,
        extra: Extra::new(),
    }
}

/// Whether a `subtype` token matches one of the action's subtype codings.
pub(crate) fn subtype_matches(action: AuditAction, token: &crate::search::TokenParam) -> bool {
    subtypes(action).iter().any(|coding| {
        coding
            .code
            .as_deref()
            .is_some_and(|code| token.matches(coding.system.as_deref(), code))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry<'a>(action: AuditAction, resource: &'a str, source: &'a str) -> AuditEntry<'a> {
        AuditEntry {
            seq: 42,
            time: Timestamp::from_seconds(1_795_421_700),
            actor: "nurse.ann",
            role: "nurse",
            action,
            resource,
            patient: Some(PatientId(12)),
            outcome: AuditOutcome::Success,
            source,
            detail: "",
        }
    }

    #[test]
    fn a_read_of_a_patient_is_a_rest_read_with_the_patient_as_entity() {
        let event = serde_json::to_value(audit_event(&entry(
            AuditAction::Read,
            "Patient/12",
            "10.0.0.7:51234",
        )))
        .expect("serialises");
        assert_eq!(
            event,
            json!({
                "resourceType": "AuditEvent",
                "id": "42",
                "type": { "system": AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation" },
                "subtype": [
                    { "system": RESTFUL_INTERACTION, "code": "read", "display": "read" },
                    { "system": AUDIT_ACTION_SYSTEM, "code": "read" }
                ],
                "action": "R",
                "recorded": "2026-11-23T08:15:00.000Z",
                "outcome": "0",
                "agent": [{
                    "role": [{ "text": "nurse" }],
                    "who": {
                        "identifier": { "system": AUDIT_ACTOR_SYSTEM, "value": "nurse.ann" },
                        "display": "nurse.ann"
                    },
                    "requestor": true,
                    "network": { "address": "10.0.0.7", "type": "2" }
                }],
                "source": {
                    "observer": { "display": "Galen" },
                    "type": [{ "system": SECURITY_SOURCE_TYPE, "code": "4", "display": "Application Server" }]
                },
                "entity": [{
                    "what": { "reference": "Patient/12" },
                    "type": { "system": AUDIT_ENTITY_TYPE, "code": "1", "display": "Person" },
                    "role": { "system": OBJECT_ROLE, "code": "1", "display": "Patient" }
                }]
            })
        );
    }

    #[test]
    fn other_resources_paths_and_adapters() {
        let mut observation = entry(
            AuditAction::Create,
            "Observation/7.hr.1795421700000000",
            "mqtt",
        );
        observation.outcome = AuditOutcome::Denied;
        observation.detail = "role nurse has no access to ward B";
        let event = audit_event(&observation);
        assert_eq!(event.action.as_deref(), Some("C"));
        assert_eq!(event.outcome.as_deref(), Some("4"));
        assert_eq!(
            event.outcome_desc.as_deref(),
            Some("role nurse has no access to ward B")
        );
        assert_eq!(event.source.site.as_deref(), Some("mqtt"));
        assert!(event.agent[0].network.is_none());
        assert_eq!(event.entity.len(), 2, "the resource and the patient");
        assert_eq!(
            event.entity[0]
                .what
                .as_ref()
                .and_then(|what| what.reference.as_deref()),
            Some("Observation/7.hr.1795421700000000")
        );
        assert_eq!(
            event.entity[1]
                .what
                .as_ref()
                .and_then(|what| what.reference.as_deref()),
            Some("Patient/12")
        );

        let mut path = entry(AuditAction::Search, "/api/v1/alarms", "[::1]:8080");
        path.patient = None;
        path.role = "";
        let event = audit_event(&path);
        assert_eq!(event.entity.len(), 1);
        assert_eq!(event.entity[0].name.as_deref(), Some("/api/v1/alarms"));
        assert!(event.entity[0].what.is_none());
        assert!(event.agent[0].role.is_empty());
        assert_eq!(
            event.agent[0]
                .network
                .as_ref()
                .and_then(|network| network.address.as_deref()),
            Some("::1")
        );
        assert_eq!(event.action.as_deref(), Some("E"));
    }

    #[test]
    fn every_action_has_a_type_an_action_code_and_its_galen_subtype() {
        for action in AuditAction::ALL {
            let event = audit_event(&entry(action, "Patient/12", "10.0.0.1"));
            assert!(event.event_type.code.is_some(), "{action}");
            assert!(
                event
                    .subtype
                    .last()
                    .is_some_and(|coding| coding.is(AUDIT_ACTION_SYSTEM, action.code())),
                "{action}"
            );
            assert!(["C", "R", "U", "D", "E"].contains(&action_code(action)));
        }
        let login = audit_event(&entry(AuditAction::Login, "/login", "10.0.0.1"));
        assert!(login.event_type.is(DICOM, "110114"));
        assert!(login.subtype[0].is(DICOM, "110122"));
        let logout = audit_event(&entry(AuditAction::Logout, "/logout", "10.0.0.1"));
        assert!(logout.subtype[0].is(DICOM, "110123"));
        let search = audit_event(&entry(AuditAction::Search, "Patient", "10.0.0.1"));
        assert!(search.subtype[0].is(RESTFUL_INTERACTION, "search-type"));
        let glass = audit_event(&entry(AuditAction::BreakGlass, "Patient/12", "10.0.0.1"));
        assert!(glass.subtype[0].is(DICOM, "110127"));
    }

    #[test]
    fn outcomes_and_ids() {
        for outcome in AuditOutcome::ALL {
            assert_eq!(outcome_of_code(outcome_code(outcome)), Some(outcome));
        }
        assert_eq!(outcome_of_code("12"), None);
        assert_eq!(parse_audit_event_id("42"), Ok(42));
        for bad in ["0", "-1", "042", "+4", "x", ""] {
            assert!(parse_audit_event_id(bad).is_err(), "{bad}");
        }
        assert!(is_relative_reference("Patient/12"));
        assert!(!is_relative_reference("/api/v1/alarms"));
        assert!(!is_relative_reference("Patient"));
        assert!(!is_relative_reference("patient/12"));
    }
}
