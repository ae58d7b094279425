//! Searches of the audit trail (`AuditEvent`).
//!
//! Every filter is a test on one record ([`AuditEventQuery::matches`]); the server narrows its
//! store query with what can be narrowed (one patient, one agent, the time bounds, the seq bounds
//! of `_id`) and applies `matches` to what comes back. Results come in the order recorded (seq,
//! oldest first); `_sort` is refused rather than ignored.
//!
//! - `date` compares `recorded`, an instant, with the R4 prefixes.
//! - `patient` is `Patient/{id}` or `{id}`.
//! - `agent` is R4's reference parameter, but Galen has no Practitioner resources: it takes the
//!   actor as Galen records it (`AuditEvent.agent.who.identifier.value`: a user name,
//!   `device:{serial}`, `token:{id}`, `system`), compared exactly.
//! - `action` is `C`, `R`, `U`, `D` or `E` (system `http://hl7.org/fhir/audit-event-action`).
//! - `outcome` is `0`, `4`, `8` or `12` (system `http://hl7.org/fhir/audit-event-outcome`);
//!   Galen never records `12`.
//! - `subtype` is a token compared with the event's subtype codings (a restful interaction, a
//!   DICOM subtype, or Galen's action code in
//!   [`crate::audit_event::AUDIT_ACTION_SYSTEM`]); one that no event carries matches nothing.

use std::collections::BTreeSet;

use galen_model::{AuditAction, AuditOutcome, PatientId};

use super::{
    Paging, SearchParamType, SearchParameterSpec, TimeWindow, paging, restrict, spec,
    split_unescaped, unescape, walk,
};
use crate::audit_event::{
    AuditEntry, action_code, outcome_of_code, parse_audit_event_id, subtype_matches,
};
use crate::error::{Error, Result};

/// The code system of `AuditEvent.action`.
const AUDIT_EVENT_ACTION: &str = "http://hl7.org/fhir/audit-event-action";
/// The code system of `AuditEvent.outcome`.
const AUDIT_EVENT_OUTCOME: &str = "http://hl7.org/fhir/audit-event-outcome";

/// Search parameters of AuditEvent.
pub const AUDIT_EVENT_PARAMETERS: &[SearchParameterSpec] = &[
    spec(
        "_id",
        SearchParamType::Token,
        "the record's position in the audit chain (seq)",
    ),
    spec(
        "date",
        SearchParamType::Date,
        "when it was recorded, with prefixes eq ne gt lt ge le sa eb",
    ),
    spec(
        "patient",
        SearchParamType::Reference,
        "the patient whose data the event concerns",
    ),
    spec(
        "agent",
        SearchParamType::Reference,
        "who acted, as Galen records the actor (agent.who.identifier.value: a user name, device:{serial}, token:{id} or system), compared exactly",
    ),
    spec("action", SearchParamType::Token, "C, R, U, D or E"),
    spec(
        "outcome",
        SearchParamType::Token,
        "0 (success), 4 (denied) or 8 (failed)",
    ),
    spec(
        "subtype",
        SearchParamType::Token,
        "a restful-interaction code (read, search-type, create, update, delete), a DICOM subtype (110122 Login, 110123 Logout, 110127 Emergency Override Started) or Galen's action code (https://galen.invalid/fhir/CodeSystem/audit-action: read, login-failed, alarm-action, ...)",
    ),
];

/// A parsed AuditEvent search.
///
/// Sets are `None` when the parameter was not given and may be empty (nothing can match).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEventQuery {
    /// `_id`: seqs.
    pub ids: Option<BTreeSet<i64>>,
    /// `date`: the instants `recorded` may be in.
    pub dates: TimeWindow,
    /// `patient`.
    pub patients: Option<BTreeSet<PatientId>>,
    /// `agent`: actors.
    pub agents: Option<BTreeSet<String>>,
    /// `action` and `subtype`: the Galen actions wanted.
    pub actions: Option<BTreeSet<AuditAction>>,
    /// `outcome`.
    pub outcomes: Option<BTreeSet<AuditOutcome>>,
    /// `_count`, `_cursor`.
    pub paging: Paging,
}

impl AuditEventQuery {
    /// Parses the query pairs of an AuditEvent search.
    pub fn parse<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> Result<AuditEventQuery> {
        let mut query = AuditEventQuery {
            ids: None,
            dates: TimeWindow::all(),
            patients: None,
            agents: None,
            actions: None,
            outcomes: None,
            paging: Paging::default(),
        };
        let common = walk(params, AUDIT_EVENT_PARAMETERS, |occurrence| {
            match occurrence.name {
                "_id" => {
                    let group = occurrence.ids(|id| parse_audit_event_id(id).ok())?;
                    restrict(&mut query.ids, group);
                }
                "date" => {
                    let window = occurrence.date_window()?;
                    query.dates = query.dates.intersect(&window);
                }
                "patient" => {
                    let group = occurrence
                        .references("Patient")?
                        .into_iter()
                        .map(PatientId)
                        .collect();
                    restrict(&mut query.patients, group);
                }
                "agent" => {
                    occurrence.no_modifier()?;
                    let group = split_unescaped(occurrence.value, ',')
                        .into_iter()
                        .map(unescape)
                        .collect();
                    restrict(&mut query.agents, group);
                }
                "action" => {
                    let mut group = BTreeSet::new();
                    for token in occurrence.tokens()? {
                        let code = token
                            .code
                            .as_deref()
                            .filter(|code| ["C", "R", "U", "D", "E"].contains(code))
                            .filter(|_| token.system.allows(AUDIT_EVENT_ACTION))
                            .ok_or_else(|| {
                                occurrence.value_error(format!(
                                    "action must be C, R, U, D or E (of {AUDIT_EVENT_ACTION})"
                                ))
                            })?;
                        group.extend(
                            AuditAction::ALL
                                .into_iter()
                                .filter(|action| action_code(*action) == code),
                        );
                    }
                    restrict(&mut query.actions, group);
                }
                "subtype" => {
                    let mut group = BTreeSet::new();
                    for token in occurrence.tokens()? {
                        group.extend(
                            AuditAction::ALL
                                .into_iter()
                                .filter(|action| subtype_matches(*action, &token)),
                        );
                    }
                    restrict(&mut query.actions, group);
                }
                "outcome" => {
                    let mut group = BTreeSet::new();
                    for token in occurrence.tokens()? {
                        let code = token
                            .code
                            .as_deref()
                            .filter(|code| ["0", "4", "8", "12"].contains(code))
                            .filter(|_| token.system.allows(AUDIT_EVENT_OUTCOME))
                            .ok_or_else(|| {
                                occurrence.value_error(format!(
                                    "outcome must be 0, 4, 8 or 12 (of {AUDIT_EVENT_OUTCOME})"
                                ))
                            })?;
                        group.extend(outcome_of_code(code));
                    }
                    restrict(&mut query.outcomes, group);
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        if common.sort.is_some() {
            return Err(Error::search_unsupported(
                "_sort",
                "_sort is not supported here: audit events come in the order recorded, oldest first",
            ));
        }
        query.paging = paging(&common);
        Ok(query)
    }

    /// Whether nothing can match.
    pub fn matches_nothing(&self) -> bool {
        self.ids.as_ref().is_some_and(BTreeSet::is_empty)
            || self.dates.is_empty()
            || self.patients.as_ref().is_some_and(BTreeSet::is_empty)
            || self.agents.as_ref().is_some_and(BTreeSet::is_empty)
            || self.actions.as_ref().is_some_and(BTreeSet::is_empty)
            || self.outcomes.as_ref().is_some_and(BTreeSet::is_empty)
    }

    /// Whether a record matches every filter.
    pub fn matches(&self, entry: &AuditEntry<'_>) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(&entry.seq))
            && self.dates.contains(entry.time)
            && self.patients.as_ref().is_none_or(|patients| {
                entry
                    .patient
                    .is_some_and(|patient| patients.contains(&patient))
            })
            && self
                .agents
                .as_ref()
                .is_none_or(|agents| agents.contains(entry.actor))
            && self
                .actions
                .as_ref()
                .is_none_or(|actions| actions.contains(&entry.action))
            && self
                .outcomes
                .as_ref()
                .is_none_or(|outcomes| outcomes.contains(&entry.outcome))
    }

    /// The one value of a set, for narrowing a store query.
    fn single<T: Clone>(set: Option<&BTreeSet<T>>) -> Option<T> {
        set.filter(|set| set.len() == 1)
            .and_then(|set| set.iter().next().cloned())
    }

    /// The patient, when exactly one is asked for.
    pub fn single_patient(&self) -> Option<PatientId> {
        AuditEventQuery::single(self.patients.as_ref())
    }

    /// The agent, when exactly one is asked for.
    pub fn single_agent(&self) -> Option<String> {
        AuditEventQuery::single(self.agents.as_ref())
    }

    /// The seqs `[first, last]` the `_id`s span, when given.
    pub fn id_bounds(&self) -> Option<(i64, i64)> {
        let ids = self.ids.as_ref()?;
        Some((*ids.first()?, *ids.last()?))
    }
}

#[cfg(test)]
mod tests {
    use galen_model::Timestamp;

    use super::*;
    use crate::outcome::IssueType;

    fn query(params: &[(&str, &str)]) -> AuditEventQuery {
        AuditEventQuery::parse(params).unwrap_or_else(|error| panic!("{params:?}: {error}"))
    }

    fn refused(params: &[(&str, &str)]) -> Error {
        AuditEventQuery::parse(params).expect_err("refused")
    }

    fn entry(seq: i64, action: AuditAction, outcome: AuditOutcome) -> AuditEntry<'static> {
        AuditEntry {
            seq,
            time: Timestamp::parse_rfc3339("2026-11-23T08:15:00Z").expect("time"),
            actor: "device:SN-1",
            role: "device",
            action,
            resource: "Patient/3",
            patient: Some(PatientId(3)),
            outcome,
            source: "mqtt",
            detail: "",
        }
    }

    #[test]
    fn filters_match_records() {
        let read = entry(1, AuditAction::Read, AuditOutcome::Success);
        let denied = entry(2, AuditAction::Update, AuditOutcome::Denied);
        let everything = query(&[]);
        assert!(everything.matches(&read) && !everything.matches_nothing());
        assert_eq!(everything.paging.count, super::super::DEFAULT_COUNT);

        let by_action = query(&[("action", "R,E")]);
        assert!(by_action.matches(&read) && !by_action.matches(&denied));
        assert!(
            by_action
                .actions
                .as_ref()
                .is_some_and(|actions| actions.contains(&AuditAction::Login))
        );
        let by_outcome = query(&[("outcome", "http://hl7.org/fhir/audit-event-outcome|4")]);
        assert!(by_outcome.matches(&denied) && !by_outcome.matches(&read));
        assert!(query(&[("outcome", "12")]).matches_nothing());
        let by_agent = query(&[("agent", "device:SN-1")]);
        assert!(by_agent.matches(&read));
        assert_eq!(by_agent.single_agent().as_deref(), Some("device:SN-1"));
        assert!(!query(&[("agent", "nurse.ann")]).matches(&read));
        let by_patient = query(&[("patient", "Patient/3")]);
        assert_eq!(by_patient.single_patient(), Some(PatientId(3)));
        assert!(!query(&[("patient", "4")]).matches(&read));
        let by_id = query(&[("_id", "2,7")]);
        assert_eq!(by_id.id_bounds(), Some((2, 7)));
        assert!(by_id.matches(&denied) && !by_id.matches(&read));
        assert!(query(&[("_id", "abc")]).matches_nothing());

        let dated = query(&[("date", "ge2026-11-23T08:00:00Z"), ("date", "lt2026-11-24")]);
        assert!(dated.matches(&read));
        assert!(!query(&[("date", "2026-11-22")]).matches(&read));
        assert!(query(&[("date", "ne2026-11-22")]).matches(&read));
    }

    #[test]
    fn subtypes_narrow_actions() {
        let login = query(&[(
            "subtype",
            "http://dicom.nema.org/resources/ontology/DCM|110122",
        )]);
        assert_eq!(
            login.actions,
            Some([AuditAction::Login, AuditAction::LoginFailed].into())
        );
        let galen = query(&[(
            "subtype",
            "https://galen.invalid/fhir/CodeSystem/audit-action|alarm-action",
        )]);
        assert_eq!(galen.actions, Some([AuditAction::AlarmAction].into()));
        let both = query(&[("subtype", "read"), ("action", "C")]);
        assert!(both.matches_nothing(), "read is not a C action");
        assert!(query(&[("subtype", "nothing-like-it")]).matches_nothing());
    }

    #[test]
    fn bad_values_are_refused() {
        for params in [
            [("action", "X")],
            [("action", "http://example.org|R")],
            [("outcome", "1")],
            [("outcome", "success")],
            [("date", "yesterday")],
        ] {
            let error = refused(&params);
            assert!(
                matches!(
                    error,
                    Error::Search {
                        issue: IssueType::Value,
                        ..
                    }
                ),
                "{params:?}: {error:?}"
            );
        }
        assert!(matches!(
            refused(&[("_sort", "date")]),
            Error::Search {
                issue: IssueType::NotSupported,
                ..
            }
        ));
        assert!(matches!(
            refused(&[("entity", "Patient/3")]),
            Error::Search {
                issue: IssueType::NotSupported,
                ..
            }
        ));
        assert!(matches!(
            refused(&[("agent:identifier", "x")]),
            Error::Search {
                issue: IssueType::NotSupported,
                ..
            }
        ));
    }
}
