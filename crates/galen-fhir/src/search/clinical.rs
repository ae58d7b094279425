//! Searches of early-warning scores (`Observation`, category `survey`) and alarms (`Flag`).
//!
//! **Which Observations a search is about.** Vital signs and scores share `/Observation` but come
//! from different stores, so the server first asks [`observation_search_target`]. The rule: a
//! search is about scores when its `code` names a score table ([`codes::SCORE_TABLE_SYSTEM`], the
//! NEWS2 SNOMED CT code, or, without a system, a configured table id), its `category` is `survey`,
//! or its `_id` is a score id (`score.…`); it is about vital signs otherwise, including when it
//! names neither (so `Observation?patient=1` returns vital signs, as it always did). A search that
//! names both is refused (400): results from the two stores are not merged into one page order.
//!
//! **Flag.** R4 defines `patient`, `subject` and `date` (the period) on Flag; Galen adds `status`
//! (`active`, `inactive`), `state` (the alarm state) and `priority`, with definitions under
//! [`codes::CANONICAL_BASE`], because clinicians filter alarms by exactly these. `date` compares
//! the period (raise to resolution, open while the alarm exists) by the R4 rules for ranges.

use std::collections::BTreeSet;

use galen_model::{PatientId, Timestamp};

use super::{
    Criteria, DateParam, OBSERVATION_PARAMETERS, ObservationSortKey, Occurrence, Paging,
    SearchParamType, SearchParameterSpec, SortKey, TimeWindow, TokenParam, TokenSystem,
    codes_of_token, paging, parse_sort, restrict, spec, split_unescaped, unescape, walk,
};
use crate::clinical::{
    AlarmPriority, AlarmState, FlagKey, NEWS2_TABLE, NEWS2_TOTAL_SNOMED, ScoreKey, is_score_id,
    parse_flag_id, parse_score_id,
};
use crate::codes;
use crate::error::{Error, Result};
use crate::observation::parse_observation_id;

/// The HL7 code system of `Flag.status`.
const FLAG_STATUS_SYSTEM: &str = "http://hl7.org/fhir/flag-status";

/// What an Observation search is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObservationSearchTarget {
    /// Vital signs (the time-series store): [`super::ObservationQuery`].
    VitalSigns,
    /// Early-warning scores (the clinical store): [`ScoreQuery`].
    Scores,
}

/// The score tables a `code` token names, among the configured (servable) `tables`; `None` when
/// the token is not about scores at all. A token in Galen's score-table system names its table
/// even when no such table is configured (it then matches nothing).
fn tables_of_token(token: &TokenParam, tables: &[&str]) -> Option<BTreeSet<String>> {
    let code = token.code.as_deref();
    match &token.system {
        TokenSystem::Exact(system) if system == codes::SCORE_TABLE_SYSTEM => Some(match code {
            Some(code) => BTreeSet::from([code.to_owned()]),
            None => tables.iter().map(|table| (*table).to_owned()).collect(),
        }),
        TokenSystem::Exact(system) if system == codes::SNOMED => {
            (code == Some(NEWS2_TOTAL_SNOMED)).then(|| BTreeSet::from([NEWS2_TABLE.to_owned()]))
        }
        TokenSystem::Any => match code {
            Some(NEWS2_TOTAL_SNOMED) => Some(BTreeSet::from([NEWS2_TABLE.to_owned()])),
            Some(code) if tables.contains(&code) => Some(BTreeSet::from([code.to_owned()])),
            _ => None,
        },
        _ => None,
    }
}

fn is_survey(token: &TokenParam) -> bool {
    token.matches(Some(codes::OBSERVATION_CATEGORY), codes::SURVEY_CATEGORY)
}

fn is_vital_signs(token: &TokenParam) -> bool {
    token.matches(
        Some(codes::OBSERVATION_CATEGORY),
        codes::VITAL_SIGNS_CATEGORY,
    )
}

/// Decides whether an Observation search (its decoded query pairs) is about vital signs or about
/// scores, given the ids of the configured score tables (see the module documentation). Values
/// that do not parse are left to the query parsers, which report them.
pub fn observation_search_target<K: AsRef<str>, V: AsRef<str>>(
    params: &[(K, V)],
    tables: &[&str],
) -> Result<ObservationSearchTarget> {
    let mut scores: Option<&str> = None;
    let mut vitals: Option<&str> = None;
    for (written, value) in params {
        let (written, value) = (written.as_ref(), value.as_ref());
        if value.is_empty() {
            continue;
        }
        let name = written.split_once(':').map_or(written, |(name, _)| name);
        for alternative in split_unescaped(value, ',') {
            let (about_scores, about_vitals) = match name {
                "code" => match TokenParam::parse(alternative) {
                    Ok(token) => (
                        tables_of_token(&token, tables).is_some(),
                        !codes_of_token(&token).is_empty(),
                    ),
                    Err(_) => (false, false),
                },
                "category" => match TokenParam::parse(alternative) {
                    Ok(token) => (is_survey(&token), is_vital_signs(&token)),
                    Err(_) => (false, false),
                },
                "_id" => {
                    let id = unescape(alternative);
                    (is_score_id(&id), parse_observation_id(&id).is_ok())
                }
                _ => (false, false),
            };
            if about_scores {
                scores.get_or_insert(written);
            }
            if about_vitals {
                vitals.get_or_insert(written);
            }
        }
    }
    match (scores, vitals) {
        (Some(score_parameter), Some(vital_parameter)) => Err(Error::search_unsupported(
            score_parameter,
            format!(
                "vital signs ({vital_parameter}) and early-warning scores ({score_parameter}) are searched separately: \
                 search category=vital-signs and category=survey one after the other"
            ),
        )),
        (Some(_), None) => Ok(ObservationSearchTarget::Scores),
        (None, _) => Ok(ObservationSearchTarget::VitalSigns),
    }
}

/// A parsed search of score Observations.
///
/// Sets are `None` when the parameter was not given (no restriction) and may be empty (nothing
/// can match).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreQuery {
    /// `_id`.
    pub ids: Option<BTreeSet<ScoreKey>>,
    /// `patient` / `subject`.
    pub patients: Option<BTreeSet<PatientId>>,
    /// `code` and `category`: the score tables wanted.
    pub tables: Option<BTreeSet<String>>,
    /// `device` was given: scores have no device, so nothing matches.
    pub device: bool,
    /// `date`: the effective instants wanted.
    pub window: TimeWindow,
    /// `_sort`.
    pub sort: Vec<SortKey<ObservationSortKey>>,
    /// `_count`, `_cursor`.
    pub paging: Paging,
}

impl ScoreQuery {
    /// Parses the query pairs of a score search, with the ids of the configured score tables
    /// (`category=survey` means all of them). Takes the same parameters as a vital-sign search.
    pub fn parse<K: AsRef<str>, V: AsRef<str>>(
        params: &[(K, V)],
        tables: &[&str],
    ) -> Result<ScoreQuery> {
        let mut query = ScoreQuery {
            ids: None,
            patients: None,
            tables: None,
            device: false,
            window: TimeWindow::all(),
            sort: Vec::new(),
            paging: Paging::default(),
        };
        let common = walk(params, OBSERVATION_PARAMETERS, |occurrence| {
            match occurrence.name {
                "_id" => {
                    let group = occurrence.ids(|id| parse_score_id(id).ok())?;
                    restrict(&mut query.ids, group);
                }
                "patient" | "subject" => {
                    let ids = occurrence.references("Patient")?;
                    restrict(
                        &mut query.patients,
                        ids.into_iter().map(PatientId).collect(),
                    );
                }
                "device" => {
                    occurrence.references("Device")?;
                    query.device = true;
                }
                "code" => {
                    let group = occurrence
                        .tokens()?
                        .iter()
                        .filter_map(|token| tables_of_token(token, tables))
                        .flatten()
                        .collect();
                    restrict(&mut query.tables, group);
                }
                "category" => {
                    let survey = occurrence.tokens()?.iter().any(is_survey);
                    let group = tables
                        .iter()
                        .filter(|_| survey)
                        .map(|table| (*table).to_owned())
                        .collect();
                    restrict(&mut query.tables, group);
                }
                "date" => {
                    let window = occurrence.date_window()?;
                    query.window = query.window.intersect(&window);
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        query.sort = parse_sort(common.sort.as_deref(), "date", |name| {
            (name == "date").then_some(ObservationSortKey::Date)
        })?;
        query.paging = paging(&common);
        Ok(query)
    }

    /// Whether nothing can match (the server may skip the store).
    pub fn matches_nothing(&self) -> bool {
        self.device
            || self.window.is_empty()
            || self.ids.as_ref().is_some_and(BTreeSet::is_empty)
            || self.patients.as_ref().is_some_and(BTreeSet::is_empty)
            || self.tables.as_ref().is_some_and(BTreeSet::is_empty)
    }

    /// Whether a score with this key matches every filter.
    pub fn matches(&self, key: &ScoreKey) -> bool {
        !self.device
            && self.ids.as_ref().is_none_or(|ids| ids.contains(key))
            && self
                .patients
                .as_ref()
                .is_none_or(|patients| patients.contains(&key.patient))
            && self
                .tables
                .as_ref()
                .is_none_or(|tables| tables.contains(&key.table))
            && self.window.contains(key.time)
    }

    /// Whether results should come newest first (`_sort=-date`).
    pub fn newest_first(&self) -> bool {
        self.sort
            .first()
            .is_some_and(|sort| sort.key == ObservationSortKey::Date && sort.descending)
    }
}

/// Search parameters of Flag.
pub const FLAG_PARAMETERS: &[SearchParameterSpec] = &[
    spec(
        "_id",
        SearchParamType::Token,
        "an alarm id {patient}-{number}, as in the native API",
    ),
    spec("patient", SearchParamType::Reference, "the patient"),
    spec(
        "subject",
        SearchParamType::Reference,
        "the patient; only Patient subjects exist",
    ),
    spec(
        "date",
        SearchParamType::Date,
        "Flag.period (raised to resolved, open while the alarm exists), compared as an R4 range with prefixes eq ne gt lt ge le sa eb",
    ),
    SearchParameterSpec {
        name: "status",
        kind: SearchParamType::Token,
        documentation: "active (the alarm is active, acknowledged or latched) or inactive (resolved)",
        definition: Some(codes::FLAG_STATUS_SEARCH_PARAMETER),
    },
    SearchParameterSpec {
        name: "state",
        kind: SearchParamType::Token,
        documentation: "the alarm state: active, acknowledged, latched or resolved",
        definition: Some(codes::FLAG_STATE_SEARCH_PARAMETER),
    },
    SearchParameterSpec {
        name: "priority",
        kind: SearchParamType::Token,
        documentation: "the alarm priority: low, medium or high (or the flag-priority codes PL, PM, PH)",
        definition: Some(codes::FLAG_PRIORITY_SEARCH_PARAMETER),
    },
];

/// Sort keys of Flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlagSortKey {
    /// `date`: when the alarm was raised (the period's start).
    Date,
}

/// A parsed Flag search.
#[derive(Debug, Clone, PartialEq)]
pub struct FlagQuery {
    /// `_id`.
    pub ids: Option<BTreeSet<FlagKey>>,
    /// `patient` / `subject`.
    pub patients: Option<BTreeSet<PatientId>>,
    /// `status` and `state`: the alarm states wanted.
    pub states: Option<BTreeSet<AlarmState>>,
    /// `priority`.
    pub priorities: Option<BTreeSet<AlarmPriority>>,
    /// `date`, against the period.
    pub dates: Criteria<DateParam>,
    /// `_sort`.
    pub sort: Vec<SortKey<FlagSortKey>>,
    /// `_count`, `_cursor`.
    pub paging: Paging,
}

fn states_of(occurrence: &Occurrence<'_>) -> Result<BTreeSet<AlarmState>> {
    let mut group = BTreeSet::new();
    for token in occurrence.tokens()? {
        let states: &[AlarmState] = match token.code.as_deref() {
            Some(code) if occurrence.name == "status" => {
                if !token.system.allows(FLAG_STATUS_SYSTEM) {
                    return Err(occurrence.value_error(format!(
                        "status is a code of {FLAG_STATUS_SYSTEM}: active or inactive"
                    )));
                }
                match code {
                    "active" => &[
                        AlarmState::Active,
                        AlarmState::Acknowledged,
                        AlarmState::Latched,
                    ],
                    "inactive" => &[AlarmState::Resolved],
                    // Galen never marks an alarm entered-in-error.
                    "entered-in-error" => &[],
                    _ => {
                        return Err(occurrence
                            .value_error("status must be active, inactive or entered-in-error"));
                    }
                }
            }
            Some(code) => {
                let state = AlarmState::parse(code)
                    .filter(|_| matches!(token.system, TokenSystem::Any))
                    .ok_or_else(|| {
                        occurrence
                            .value_error("state must be active, acknowledged, latched or resolved")
                    })?;
                group.insert(state);
                &[]
            }
            None => {
                return Err(occurrence.value_error(format!("{} needs a code", occurrence.name)));
            }
        };
        group.extend(states.iter().copied());
    }
    Ok(group)
}

impl FlagQuery {
    /// Parses the query pairs of a Flag search.
    pub fn parse<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> Result<FlagQuery> {
        let mut query = FlagQuery {
            ids: None,
            patients: None,
            states: None,
            priorities: None,
            dates: Criteria::default(),
            sort: Vec::new(),
            paging: Paging::default(),
        };
        let common = walk(params, FLAG_PARAMETERS, |occurrence| {
            match occurrence.name {
                "_id" => {
                    let group = occurrence.ids(|id| parse_flag_id(id).ok())?;
                    restrict(&mut query.ids, group);
                }
                "patient" | "subject" => {
                    let ids = occurrence.references("Patient")?;
                    restrict(
                        &mut query.patients,
                        ids.into_iter().map(PatientId).collect(),
                    );
                }
                "date" => query.dates.push(occurrence.dates()?),
                "status" | "state" => {
                    let group = states_of(occurrence)?;
                    restrict(&mut query.states, group);
                }
                "priority" => {
                    let mut group = BTreeSet::new();
                    for token in occurrence.tokens()? {
                        let priority = token
                            .code
                            .as_deref()
                            .and_then(|code| {
                                AlarmPriority::ALL.into_iter().find(|priority| {
                                    (priority.code() == code
                                        && matches!(token.system, TokenSystem::Any))
                                        || (priority.flag_priority_code() == code
                                            && token.system.allows(codes::FLAG_PRIORITY_CODES))
                                })
                            })
                            .ok_or_else(|| {
                                occurrence.value_error(
                                    "priority must be low, medium or high (or PL, PM, PH)",
                                )
                            })?;
                        group.insert(priority);
                    }
                    restrict(&mut query.priorities, group);
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        query.sort = parse_sort(common.sort.as_deref(), "date", |name| {
            (name == "date").then_some(FlagSortKey::Date)
        })?;
        query.paging = paging(&common);
        Ok(query)
    }

    /// Whether nothing can match (the server may skip the store).
    pub fn matches_nothing(&self) -> bool {
        self.ids.as_ref().is_some_and(BTreeSet::is_empty)
            || self.patients.as_ref().is_some_and(BTreeSet::is_empty)
            || self.states.as_ref().is_some_and(BTreeSet::is_empty)
            || self.priorities.as_ref().is_some_and(BTreeSet::is_empty)
            || self.earliest_end() == Timestamp::MAX
    }

    /// Whether open alarms (active, acknowledged, latched) can match.
    pub fn wants_open(&self) -> bool {
        self.states
            .as_ref()
            .is_none_or(|states| states.iter().any(|state| *state != AlarmState::Resolved))
    }

    /// Whether resolved alarms can match.
    pub fn wants_resolved(&self) -> bool {
        self.states
            .as_ref()
            .is_none_or(|states| states.contains(&AlarmState::Resolved))
    }

    /// No period that ends before this instant can match `date`: a period matching a date value
    /// always overlaps the instants that value covers (for every prefix, by the R4 range rules).
    /// A resolved alarm whose last transition is older cannot match, so the server need not read
    /// the alarm log before it. [`Timestamp::MAX`] when no period can match.
    pub fn earliest_end(&self) -> Timestamp {
        self.dates
            .groups()
            .iter()
            .map(|group| {
                group
                    .iter()
                    .filter_map(|date| date.instants().bounds().map(|(from, _)| from))
                    .min()
                    .unwrap_or(Timestamp::MAX)
            })
            .max()
            .unwrap_or(Timestamp::MIN)
    }

    /// Whether an alarm matches every filter: its key, state, priority and period `[start, end)`
    /// (`end` [`Timestamp::MAX`] while open).
    pub fn matches(
        &self,
        key: &FlagKey,
        state: AlarmState,
        priority: AlarmPriority,
        period: (Timestamp, Timestamp),
    ) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(key))
            && self
                .patients
                .as_ref()
                .is_none_or(|patients| patients.contains(&key.patient))
            && self
                .states
                .as_ref()
                .is_none_or(|states| states.contains(&state))
            && self
                .priorities
                .as_ref()
                .is_none_or(|priorities| priorities.contains(&priority))
            && self
                .dates
                .matches(|date| date.matches_range(period.0, period.1))
    }

    /// Whether results should come newest first (`_sort=-date`).
    pub fn newest_first(&self) -> bool {
        self.sort
            .first()
            .is_some_and(|sort| sort.key == FlagSortKey::Date && sort.descending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLES: &[&str] = &["news2", "qsofa", "mews"];

    fn target(params: &[(&str, &str)]) -> Result<ObservationSearchTarget> {
        observation_search_target(params, TABLES)
    }

    #[test]
    fn observation_searches_are_routed_by_code_category_and_id() {
        use ObservationSearchTarget::{Scores, VitalSigns};
        let cases: &[(&[(&str, &str)], ObservationSearchTarget)] = &[
            (&[("patient", "1")], VitalSigns),
            (&[("code", "http://loinc.org|8867-4")], VitalSigns),
            (&[("category", "vital-signs")], VitalSigns),
            (&[("code", "http://example.org|x")], VitalSigns),
            (
                &[(
                    "code",
                    "https://galen.invalid/fhir/CodeSystem/score-table|news2",
                )],
                Scores,
            ),
            (
                &[("code", "https://galen.invalid/fhir/CodeSystem/score-table|")],
                Scores,
            ),
            (
                &[(
                    "code",
                    "https://galen.invalid/fhir/CodeSystem/score-table|pews",
                )],
                Scores,
            ),
            (&[("code", "qsofa")], Scores),
            (&[("code", "pews")], VitalSigns),
            (
                &[("code", "http://snomed.info/sct|1104051000000101")],
                Scores,
            ),
            (&[("code", "1104051000000101")], Scores),
            (
                &[(
                    "category",
                    "http://terminology.hl7.org/CodeSystem/observation-category|survey",
                )],
                Scores,
            ),
            (&[("_id", "score.news2.1.1795421700000000")], Scores),
            (&[("_id", "7.hr.1795421700000000")], VitalSigns),
            (&[("code", "news2"), ("code", "")], Scores),
        ];
        for (params, expected) in cases {
            assert_eq!(target(params), Ok(*expected), "{params:?}");
        }
        for mixed in [
            &[("code", "news2,8867-4")][..],
            &[("category", "survey,vital-signs")][..],
            &[("category", "survey"), ("code", "8867-4")][..],
            &[("_id", "score.news2.1.5,7.hr.5")][..],
        ] {
            let error = target(mixed).expect_err("mixed searches are refused");
            assert!(
                matches!(&error, Error::Search { message, .. } if message.contains("searched separately")),
                "{error}"
            );
        }
    }

    fn score_query(params: &[(&str, &str)]) -> ScoreQuery {
        ScoreQuery::parse(params, TABLES).unwrap_or_else(|error| panic!("{params:?}: {error}"))
    }

    #[test]
    fn score_queries_restrict_tables_patients_and_time() {
        let query = score_query(&[
            ("patient", "Patient/3"),
            ("code", "news2,http://snomed.info/sct|1104051000000101"),
            ("date", "ge2026-11-23T08:00:00Z"),
            ("_sort", "-date"),
            ("_count", "2"),
        ]);
        assert_eq!(query.patients, Some(BTreeSet::from([PatientId(3)])));
        assert_eq!(query.tables, Some(BTreeSet::from(["news2".to_owned()])));
        assert!(query.newest_first());
        assert_eq!(query.paging.count, 2);
        let at = |micros: i64| ScoreKey {
            patient: PatientId(3),
            table: "news2".to_owned(),
            time: Timestamp::from_micros(micros),
        };
        assert!(query.matches(&at(1_795_420_800_000_000)), "ge is inclusive");
        assert!(!query.matches(&at(1_795_420_799_999_999)));
        let other_table = ScoreKey {
            table: "mews".to_owned(),
            ..at(1_795_420_800_000_000)
        };
        assert!(!query.matches(&other_table));

        let survey = score_query(&[("category", "survey")]);
        assert_eq!(
            survey.tables,
            Some(TABLES.iter().map(|table| (*table).to_owned()).collect())
        );
        let both = score_query(&[("category", "survey"), ("code", "mews")]);
        assert_eq!(both.tables, Some(BTreeSet::from(["mews".to_owned()])));
        assert!(score_query(&[("code", "news2"), ("device", "4")]).matches_nothing());
        assert!(score_query(&[("code", "news2"), ("code", "mews")]).matches_nothing());
        assert!(score_query(&[("_id", "score.news2.1.x")]).matches_nothing());
        let by_id = score_query(&[("_id", "score.news2.1.5")]);
        assert!(by_id.matches(&ScoreKey {
            patient: PatientId(1),
            table: "news2".to_owned(),
            time: Timestamp::from_micros(5),
        }));
        for bad in [
            &[("code", "news2"), ("_id", "not valid!")][..],
            &[("code", "news2"), ("value-quantity", "5")][..],
            &[("code", "news2"), ("date", "yesterday")][..],
            &[("code", "news2"), ("_sort", "code")][..],
        ] {
            assert!(ScoreQuery::parse(bad, TABLES).is_err(), "{bad:?}");
        }
    }

    fn flag_query(params: &[(&str, &str)]) -> FlagQuery {
        FlagQuery::parse(params).unwrap_or_else(|error| panic!("{params:?}: {error}"))
    }

    #[test]
    fn flag_status_state_and_priority_narrow_the_states() {
        use AlarmState::{Acknowledged, Active, Latched, Resolved};
        let open = flag_query(&[("status", "active")]);
        assert_eq!(
            open.states,
            Some(BTreeSet::from([Active, Acknowledged, Latched]))
        );
        assert!(open.wants_open() && !open.wants_resolved());
        let closed = flag_query(&[("status", "http://hl7.org/fhir/flag-status|inactive")]);
        assert_eq!(closed.states, Some(BTreeSet::from([Resolved])));
        assert!(!closed.wants_open() && closed.wants_resolved());
        let acknowledged = flag_query(&[("status", "active"), ("state", "acknowledged,resolved")]);
        assert_eq!(acknowledged.states, Some(BTreeSet::from([Acknowledged])));
        assert!(flag_query(&[("status", "entered-in-error")]).matches_nothing());
        let priorities =
            flag_query(&[("priority", "high,http://hl7.org/fhir/flag-priority-code|PM")]);
        assert_eq!(
            priorities.priorities,
            Some(BTreeSet::from([AlarmPriority::High, AlarmPriority::Medium]))
        );
        for bad in [
            ("status", "open"),
            ("status", "http://example.org|active"),
            ("state", "silenced"),
            ("priority", "urgent"),
            ("priority", "http://example.org|PH"),
            ("_id", "a b"),
            ("code", "x"),
        ] {
            assert!(FlagQuery::parse(&[bad]).is_err(), "{bad:?}");
        }
        let by_id = flag_query(&[("_id", "3-17,-2-1,03-17")]);
        assert_eq!(
            by_id.ids,
            Some(BTreeSet::from([
                FlagKey {
                    patient: PatientId(3),
                    number: 17
                },
                FlagKey {
                    patient: PatientId(-2),
                    number: 1
                }
            ]))
        );
    }

    #[test]
    fn flag_dates_compare_the_period_as_a_range() {
        let hour = 3_600_000_000;
        let t8 = Timestamp::from_micros(1_795_420_800_000_000); // 2026-11-23T08:00:00Z
        let key = FlagKey {
            patient: PatientId(1),
            number: 1,
        };
        let matches = |query: &FlagQuery, start: Timestamp, end: Timestamp| {
            query.matches(&key, AlarmState::Active, AlarmPriority::High, (start, end))
        };
        let day = flag_query(&[("date", "2026-11-23")]);
        assert!(matches(&day, t8, t8.add_micros(hour)), "within the day");
        assert!(
            !matches(&day, t8, Timestamp::MAX),
            "an open alarm is not contained in a day"
        );
        let since = flag_query(&[("date", "ge2026-11-23T09:00:00Z")]);
        assert!(matches(&since, t8, Timestamp::MAX), "still open at 09:00");
        assert!(
            !matches(&since, t8, t8.add_micros(hour / 2)),
            "resolved at 08:30"
        );
        assert_eq!(since.earliest_end(), t8.add_micros(hour));
        let before = flag_query(&[("date", "lt2026-11-23T08:00:00Z")]);
        assert!(!matches(&before, t8, Timestamp::MAX), "raised at 08:00");
        assert_eq!(flag_query(&[]).earliest_end(), Timestamp::MIN);
        let two = flag_query(&[
            ("date", "ge2026-11-23T09:00:00Z"),
            ("date", "ge2026-11-23T10:00:00Z,ge2026-11-23T07:00:00Z"),
        ]);
        assert_eq!(two.earliest_end(), t8.add_micros(hour));
        let sorted = flag_query(&[("_sort", "-date")]);
        assert!(sorted.newest_first());
    }
}
