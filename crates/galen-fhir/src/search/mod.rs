//! FHIR search parameters, parsed into typed queries with precise errors.
//!
//! The server passes the decoded query pairs of `GET [base]/Patient?...` (in order, repeated names
//! repeated) to [`PatientQuery::parse`], [`DeviceQuery::parse`], [`ObservationQuery::parse`]
//! (vital signs), [`ScoreQuery::parse`] (early-warning scores; [`observation_search_target`]
//! says which of the two an Observation search is), [`FlagQuery::parse`] (alarms),
//! [`LocationQuery::parse`] (wards and beds), [`DeviceMetricQuery::parse`] or
//! [`AuditEventQuery::parse`] (the audit trail) or [`ConsentQuery::parse`] (patients' consents).
//! Semantics follow the R4 search specification:
//! - A parameter repeated is AND; a comma-separated value is OR. `\,`, `\|`, `\$` and `\\` escape.
//! - Parameters with an empty value are ignored.
//! - `_count` is the page size: 0 (only the total) to [`MAX_COUNT`]; larger values are clamped to
//!   [`MAX_COUNT`] (the specification lets a server return fewer), default [`DEFAULT_COUNT`].
//! - `_sort` is a comma-separated list of the keys each type allows, `-` for descending.
//! - `_cursor` is Galen's paging parameter: the opaque value the server put into the previous
//!   page's `next` link (see [`crate::bundle`]).
//! - Unknown parameters, chained parameters and unsupported modifiers are errors (the server
//!   answers 400 with an OperationOutcome), except [`IGNORED_PARAMETERS`]: `_format` (the server
//!   negotiates the format from the Accept header; Galen serves only JSON) and `_pretty`
//!   (whitespace only). Silently ignoring a filter a client thinks it applied would return
//!   records it did not ask for; for a clinical system that is worse than an error.
//! - Ids: a value that is a valid FHIR id but not one Galen issues matches nothing (like a read of
//!   an unknown id); a value that is not a valid FHIR id is an error.
//! - Strings match case-insensitively at the start of the element (`:exact` for exact equality,
//!   `:contains` for a substring); accents are not folded.

mod audit;
mod clinical;
mod consent;
mod date;
mod location;

use std::collections::BTreeSet;

use galen_model::{
    Device, DeviceId, DeviceKind, DeviceStatus, NewPatient, Patient, PatientId, Sex, Timestamp,
    VitalSign,
};

pub use audit::{AUDIT_EVENT_PARAMETERS, AuditEventQuery};
pub use clinical::{
    FLAG_PARAMETERS, FlagQuery, FlagSortKey, ObservationSearchTarget, ScoreQuery,
    observation_search_target,
};
pub use consent::{CONSENT_PARAMETERS, ConsentQuery};
pub use date::{DateParam, DatePrefix, TimeWindow};
pub use location::{
    DEVICE_METRIC_PARAMETERS, DeviceMetricQuery, LOCATION_PARAMETERS, LocationQuery,
};

use crate::codes::{self, LOINC, MDC};
use crate::error::{Error, Result};
use crate::observation::{
    ObservationCode, ObservationKey, parse_canonical_i64, parse_observation_id,
};

/// Page size when the client sends no `_count`.
pub const DEFAULT_COUNT: usize = 50;
/// Largest page size; larger `_count` values are clamped to it.
pub const MAX_COUNT: usize = 1000;
/// Galen's paging parameter, carrying the server's opaque cursor.
pub const CURSOR_PARAMETER: &str = "_cursor";
/// Common parameters accepted and deliberately ignored.
pub const IGNORED_PARAMETERS: &[&str] = &["_format", "_pretty"];

/// The R4 `SearchParamType` of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SearchParamType {
    /// `number`.
    Number,
    /// `date`.
    Date,
    /// `string`.
    String,
    /// `token`.
    Token,
    /// `reference`.
    Reference,
    /// `quantity`.
    Quantity,
    /// `uri`.
    Uri,
}

impl SearchParamType {
    /// The code.
    pub const fn code(self) -> &'static str {
        match self {
            SearchParamType::Number => "number",
            SearchParamType::Date => "date",
            SearchParamType::String => "string",
            SearchParamType::Token => "token",
            SearchParamType::Reference => "reference",
            SearchParamType::Quantity => "quantity",
            SearchParamType::Uri => "uri",
        }
    }
}

/// A search parameter Galen supports on a resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchParameterSpec {
    /// The name.
    pub name: &'static str,
    /// Its type.
    pub kind: SearchParamType,
    /// How Galen interprets it.
    pub documentation: &'static str,
    /// The definition's canonical URL, for parameters not in the base specification.
    pub definition: Option<&'static str>,
}

const fn spec(
    name: &'static str,
    kind: SearchParamType,
    documentation: &'static str,
) -> SearchParameterSpec {
    SearchParameterSpec {
        name,
        kind,
        documentation,
        definition: None,
    }
}

/// Search parameters of Patient.
pub const PATIENT_PARAMETERS: &[SearchParameterSpec] = &[
    spec("_id", SearchParamType::Token, "Galen's numeric patient id"),
    spec(
        "identifier",
        SearchParamType::Token,
        "the medical record number, system|value",
    ),
    spec(
        "name",
        SearchParamType::String,
        "start of the family name or of a given name",
    ),
    spec(
        "family",
        SearchParamType::String,
        "start of the family name",
    ),
    spec("given", SearchParamType::String, "start of a given name"),
    spec(
        "birthdate",
        SearchParamType::Date,
        "date of birth, with prefixes eq ne gt lt ge le sa eb",
    ),
    spec(
        "gender",
        SearchParamType::Token,
        "male, female, other or unknown",
    ),
    SearchParameterSpec {
        name: "ward",
        kind: SearchParamType::String,
        documentation: "start of the ward name (Galen extension bed-location)",
        definition: Some(codes::WARD_SEARCH_PARAMETER),
    },
];

/// Search parameters of Device.
pub const DEVICE_PARAMETERS: &[SearchParameterSpec] = &[
    spec("_id", SearchParamType::Token, "Galen's numeric device id"),
    spec("identifier", SearchParamType::Token, "the serial number"),
    spec(
        "status",
        SearchParamType::Token,
        "active, inactive, entered-in-error or unknown",
    ),
    spec("type", SearchParamType::Token, "Galen device kind"),
    spec(
        "patient",
        SearchParamType::Reference,
        "the patient the device is currently assigned to",
    ),
    spec(
        "manufacturer",
        SearchParamType::String,
        "start of the manufacturer",
    ),
    spec(
        "model",
        SearchParamType::String,
        "start of the model number",
    ),
];

/// Search parameters of Observation.
pub const OBSERVATION_PARAMETERS: &[SearchParameterSpec] = &[
    spec(
        "_id",
        SearchParamType::Token,
        "an Observation id {device}.{code}.{microseconds}",
    ),
    spec(
        "patient",
        SearchParamType::Reference,
        "the patient (subject)",
    ),
    spec(
        "subject",
        SearchParamType::Reference,
        "the patient; only Patient subjects exist",
    ),
    spec(
        "device",
        SearchParamType::Reference,
        "the measuring device (early-warning scores have none)",
    ),
    spec(
        "code",
        SearchParamType::Token,
        "LOINC or MDC code of a vital sign (blood pressure values are in 85354-9 panels), or an early-warning score: https://galen.invalid/fhir/CodeSystem/score-table|{table} (news2, qsofa, mews) or SNOMED CT 1104051000000101 (NEWS2 total); vital signs and scores are searched separately",
    ),
    spec(
        "category",
        SearchParamType::Token,
        "vital-signs, or survey for early-warning scores; without code or category a search returns vital signs",
    ),
    spec(
        "date",
        SearchParamType::Date,
        "effective time, with prefixes eq ne gt lt ge le sa eb",
    ),
];

/// Which records of a resource type to sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SortKey<K> {
    /// The key.
    pub key: K,
    /// Largest first.
    pub descending: bool,
}

/// Paging of a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    /// Page size, 0 to [`MAX_COUNT`].
    pub count: usize,
    /// The cursor the previous page's `next` link carried.
    pub cursor: Option<String>,
}

impl Default for Paging {
    fn default() -> Self {
        Paging {
            count: DEFAULT_COUNT,
            cursor: None,
        }
    }
}

/// The system part of a token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenSystem {
    /// `code`: any system.
    Any,
    /// `|code`: the code without a system.
    None,
    /// `system|code` or `system|`.
    Exact(String),
}

impl TokenSystem {
    /// Whether a token with this system may stand for a code of `expected`: no system given, or
    /// exactly that one (`|code`, a code without a system, is never one of Galen's coded values).
    pub fn allows(&self, expected: &str) -> bool {
        match self {
            TokenSystem::Any => true,
            TokenSystem::Exact(exact) => exact == expected,
            TokenSystem::None => false,
        }
    }
}

/// A token value: `system|code`, `|code`, `code` or `system|`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenParam {
    /// The system.
    pub system: TokenSystem,
    /// The code; `None` for `system|` (any code of the system).
    pub code: Option<String>,
}

impl TokenParam {
    /// Parses one (already OR-split, still escaped) token value.
    pub fn parse(text: &str) -> Result<TokenParam, String> {
        let parts = split_unescaped(text, '|');
        let token = match parts.as_slice() {
            [code] => TokenParam {
                system: TokenSystem::Any,
                code: Some(unescape(code)),
            },
            [system, code] => {
                let system = unescape(system);
                let code = unescape(code);
                match (system.is_empty(), code.is_empty()) {
                    (true, true) => return Err("a token needs a code or a system".to_owned()),
                    (true, false) => TokenParam {
                        system: TokenSystem::None,
                        code: Some(code),
                    },
                    (false, true) => TokenParam {
                        system: TokenSystem::Exact(system),
                        code: None,
                    },
                    (false, false) => TokenParam {
                        system: TokenSystem::Exact(system),
                        code: Some(code),
                    },
                }
            }
            _ => {
                return Err(
                    "the value has more than one '|'; a token is system|code (escape a literal | as \\|)"
                        .to_owned(),
                );
            }
        };
        Ok(token)
    }

    /// Whether a coded value `system`/`code` matches.
    pub fn matches(&self, system: Option<&str>, code: &str) -> bool {
        let system_matches = match &self.system {
            TokenSystem::Any => true,
            TokenSystem::None => system.is_none(),
            TokenSystem::Exact(expected) => system == Some(expected.as_str()),
        };
        system_matches && self.code.as_deref().is_none_or(|expected| expected == code)
    }
}

/// How a string parameter compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StringMatch {
    /// Case-insensitive prefix (no modifier).
    StartsWith,
    /// Exact, case-sensitive (`:exact`).
    Exact,
    /// Case-insensitive substring (`:contains`).
    Contains,
}

/// A string parameter value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StringParam {
    /// The text (unescaped).
    pub value: String,
    /// The comparison.
    pub mode: StringMatch,
}

impl StringParam {
    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        match self.mode {
            StringMatch::Exact => text == self.value,
            StringMatch::StartsWith => text.to_lowercase().starts_with(&self.value.to_lowercase()),
            StringMatch::Contains => text.to_lowercase().contains(&self.value.to_lowercase()),
        }
    }
}

/// Conditions of one parameter: every group (one per occurrence, AND) must have a matching
/// alternative (comma-separated, OR).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Criteria<T> {
    groups: Vec<Vec<T>>,
}

impl<T> Default for Criteria<T> {
    fn default() -> Self {
        Criteria { groups: Vec::new() }
    }
}

impl<T> Criteria<T> {
    /// The groups (AND) of alternatives (OR).
    pub fn groups(&self) -> &[Vec<T>] {
        &self.groups
    }

    /// Whether the parameter was not given.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Whether every group has an alternative for which `test` holds (true when not given).
    pub fn matches(&self, mut test: impl FnMut(&T) -> bool) -> bool {
        self.groups.iter().all(|group| group.iter().any(&mut test))
    }

    fn push(&mut self, group: Vec<T>) {
        self.groups.push(group);
    }
}

/// Splits on `separator` where it is not escaped by a backslash; escapes are kept.
fn split_unescaped(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (index, character) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if character == '\\' {
            escaped = true;
        } else if character == separator {
            parts.push(&text[start..index]);
            start = index + character.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Removes search escapes: `\,` `\|` `\$` `\\` become the character; a lone `\` stays.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut characters = text.chars().peekable();
    while let Some(character) = characters.next() {
        if character == '\\'
            && let Some(next @ (',' | '|' | '$' | '\\')) = characters.peek().copied()
        {
            out.push(next);
            characters.next();
            continue;
        }
        out.push(character);
    }
    out
}

/// Whether `text` is a valid FHIR id (`[A-Za-z0-9\-\.]{1,64}`).
fn is_fhir_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.')
}

/// One parameter occurrence, split into name, modifier and OR alternatives.
struct Occurrence<'a> {
    /// As written, for errors (`name:exact`).
    written: &'a str,
    name: &'a str,
    modifier: Option<&'a str>,
    value: &'a str,
}

impl Occurrence<'_> {
    fn alternatives(&self) -> Vec<&str> {
        split_unescaped(self.value, ',')
    }

    fn no_modifier(&self) -> Result<()> {
        match self.modifier {
            None => Ok(()),
            Some(modifier) => Err(Error::search_unsupported(
                self.written,
                format!("modifier :{modifier} is not supported on {}", self.name),
            )),
        }
    }

    /// The `_id` values, each a valid FHIR id (an error otherwise), kept when `parse` reads it as
    /// one of Galen's ids of the type (others can match nothing).
    fn ids<T: Ord>(&self, parse: impl Fn(&str) -> Option<T>) -> Result<BTreeSet<T>> {
        self.no_modifier()?;
        let mut group = BTreeSet::new();
        for value in self.alternatives() {
            let value = unescape(value);
            if !is_fhir_id(&value) {
                return Err(self.value_error("a value is not a valid FHIR id"));
            }
            group.extend(parse(&value));
        }
        Ok(group)
    }

    fn value_error(&self, message: impl Into<String>) -> Error {
        Error::search_value(self.written, message)
    }

    fn strings(&self) -> Result<Vec<StringParam>> {
        let mode = match self.modifier {
            None => StringMatch::StartsWith,
            Some("exact") => StringMatch::Exact,
            Some("contains") => StringMatch::Contains,
            Some(modifier) => {
                return Err(Error::search_unsupported(
                    self.written,
                    format!(
                        "modifier :{modifier} is not supported on {}; use :exact or :contains",
                        self.name
                    ),
                ));
            }
        };
        Ok(self
            .alternatives()
            .into_iter()
            .map(|value| StringParam {
                value: unescape(value),
                mode,
            })
            .collect())
    }

    fn tokens(&self) -> Result<Vec<TokenParam>> {
        self.no_modifier()?;
        self.alternatives()
            .into_iter()
            .map(|value| TokenParam::parse(value).map_err(|message| self.value_error(message)))
            .collect()
    }

    fn dates(&self) -> Result<Vec<DateParam>> {
        self.no_modifier()?;
        self.alternatives()
            .into_iter()
            .map(|value| DateParam::parse(value).map_err(|message| self.value_error(message)))
            .collect()
    }

    /// The instants a `date` occurrence matches: the union of its comma-separated alternatives.
    fn date_window(&self) -> Result<TimeWindow> {
        Ok(self
            .dates()?
            .iter()
            .fold(TimeWindow::empty(), |window, date| {
                window.union(&date.instants())
            }))
    }

    /// Numeric ids of `_id` (a valid FHIR id that is not a number matches nothing).
    fn numeric_ids(&self) -> Result<Vec<i64>> {
        self.no_modifier()?;
        let mut ids = Vec::new();
        for value in self.alternatives() {
            let value = unescape(value);
            if !is_fhir_id(&value) {
                return Err(self.value_error("a value is not a valid FHIR id"));
            }
            ids.extend(parse_canonical_i64(&value));
        }
        Ok(ids)
    }

    /// References to `target` (`Type/id` or `id`; `:Type` modifier allowed) by numeric id (a
    /// valid FHIR id that is not a number matches nothing).
    fn references(&self, target: &str) -> Result<Vec<i64>> {
        Ok(self
            .reference_ids(target)?
            .iter()
            .filter_map(|id| parse_canonical_i64(id))
            .collect())
    }

    /// The ids of references to `target` (`Type/id` or `id`; `:Type` modifier allowed), each a
    /// valid FHIR id (an error otherwise).
    fn reference_ids(&self, target: &str) -> Result<Vec<String>> {
        match self.modifier {
            None => {}
            Some(modifier) if modifier == target => {}
            Some(modifier) if modifier.starts_with(|c: char| c.is_ascii_uppercase()) => {
                return Err(self.value_error(format!(
                    "{} refers to {target} resources only, not {modifier}",
                    self.name
                )));
            }
            Some(modifier) => {
                return Err(Error::search_unsupported(
                    self.written,
                    format!("modifier :{modifier} is not supported on {}", self.name),
                ));
            }
        }
        let mut ids = Vec::new();
        for value in self.alternatives() {
            let value = unescape(value);
            let id = match value.split_once('/') {
                None => value.as_str(),
                Some((resource_type, id)) if resource_type == target && !id.contains('/') => id,
                Some(_) if value.contains("://") => {
                    return Err(self.value_error(format!(
                        "absolute references are not supported; use {target}/{{id}}"
                    )));
                }
                Some(_) => {
                    return Err(self.value_error(format!(
                        "a value is not a reference to a {target}; use {target}/{{id}} or {{id}}"
                    )));
                }
            };
            if !is_fhir_id(id) {
                return Err(self.value_error("a value is not a valid FHIR id"));
            }
            ids.push(id.to_owned());
        }
        Ok(ids)
    }
}

/// What every search has besides its filters.
#[derive(Debug, Default)]
struct Common {
    count: Option<usize>,
    sort: Option<String>,
    cursor: Option<String>,
}

/// Walks the parameters: handles the common ones and hands each other occurrence to `handle`,
/// which returns `false` for names it does not know.
fn walk<K: AsRef<str>, V: AsRef<str>>(
    params: &[(K, V)],
    supported: &[SearchParameterSpec],
    mut handle: impl FnMut(&Occurrence<'_>) -> Result<bool>,
) -> Result<Common> {
    let mut common = Common::default();
    for (written, value) in params {
        let (written, value) = (written.as_ref(), value.as_ref());
        if IGNORED_PARAMETERS.contains(&written) || value.is_empty() {
            continue;
        }
        let (name, modifier) = match written.split_once(':') {
            Some((name, modifier)) => (name, Some(modifier)),
            None => (written, None),
        };
        let once = |already_given: bool| {
            if already_given {
                Err(Error::search_value(
                    written,
                    format!("{name} may be given only once"),
                ))
            } else if let Some(modifier) = modifier {
                Err(Error::search_unsupported(
                    written,
                    format!("{name} takes no modifier (:{modifier})"),
                ))
            } else {
                Ok(())
            }
        };
        match name {
            "_count" => {
                once(common.count.is_some())?;
                if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
                    return Err(Error::search_value(
                        written,
                        format!(
                            "the value is not a page size: use a whole number 0 to {MAX_COUNT}"
                        ),
                    ));
                }
                // Digits only: the parse fails only for numbers beyond usize, which clamp too.
                let count = value.parse::<usize>().unwrap_or(MAX_COUNT);
                common.count = Some(count.min(MAX_COUNT));
            }
            "_sort" => {
                once(common.sort.is_some())?;
                common.sort = Some(value.to_owned());
            }
            CURSOR_PARAMETER => {
                once(common.cursor.is_some())?;
                common.cursor = Some(value.to_owned());
            }
            _ => {
                let occurrence = Occurrence {
                    written,
                    name,
                    modifier,
                    value,
                };
                if !handle(&occurrence)? {
                    return Err(unknown_parameter(written, name, supported));
                }
            }
        }
    }
    Ok(common)
}

fn unknown_parameter(written: &str, name: &str, supported: &[SearchParameterSpec]) -> Error {
    let names: Vec<&str> = supported.iter().map(|spec| spec.name).collect();
    let known = format!(
        "supported: {}, _count, _sort, {CURSOR_PARAMETER}",
        names.join(", ")
    );
    let message = if name.contains('.') {
        format!("chained parameters are not supported; {known}")
    } else if name == "_has" || name == "_include" || name == "_revinclude" {
        format!("{name} is not supported; {known}")
    } else {
        format!("unknown parameter; {known}")
    };
    Error::search_unsupported(written, message)
}

/// Parses `_sort` with the keys `key` recognises.
fn parse_sort<K: PartialEq + Copy>(
    text: Option<&str>,
    allowed: &str,
    key: impl Fn(&str) -> Option<K>,
) -> Result<Vec<SortKey<K>>> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let mut keys: Vec<SortKey<K>> = Vec::new();
    for part in text.split(',') {
        let (descending, name) = match part.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, part),
        };
        let parsed = key(name).ok_or_else(|| {
            Error::search_value(
                "_sort",
                format!(
                    "cannot sort by {name:?}; sort keys here: {allowed} (prefix - for descending)"
                ),
            )
        })?;
        if keys.iter().any(|existing| existing.key == parsed) {
            return Err(Error::search_value(
                "_sort",
                format!("{name:?} is given twice"),
            ));
        }
        keys.push(SortKey {
            key: parsed,
            descending,
        });
    }
    Ok(keys)
}

fn paging(common: &Common) -> Paging {
    Paging {
        count: common.count.unwrap_or(DEFAULT_COUNT),
        cursor: common.cursor.clone(),
    }
}

/// Sort keys of Patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatientSortKey {
    /// `_id`.
    Id,
    /// `family`.
    Family,
    /// `given`.
    Given,
    /// `birthdate`.
    Birthdate,
    /// `identifier`.
    Identifier,
    /// `ward` (then bed).
    Ward,
}

/// A parsed Patient search.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatientQuery {
    /// `_id`.
    pub ids: Criteria<PatientId>,
    /// `identifier`.
    pub identifier: Criteria<TokenParam>,
    /// `name`.
    pub name: Criteria<StringParam>,
    /// `family`.
    pub family: Criteria<StringParam>,
    /// `given`.
    pub given: Criteria<StringParam>,
    /// `birthdate`.
    pub birthdate: Criteria<DateParam>,
    /// `gender`.
    pub gender: Criteria<Sex>,
    /// `ward` (Galen's custom parameter).
    pub ward: Criteria<StringParam>,
    /// `_sort`.
    pub sort: Vec<SortKey<PatientSortKey>>,
    /// `_count`, `_cursor`.
    pub paging: Paging,
}

impl PatientQuery {
    /// Parses the query pairs of a Patient search.
    pub fn parse<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> Result<PatientQuery> {
        let mut query = PatientQuery::default();
        let common = walk(params, PATIENT_PARAMETERS, |occurrence| {
            match occurrence.name {
                "_id" => query.ids.push(
                    occurrence
                        .numeric_ids()?
                        .into_iter()
                        .map(PatientId)
                        .collect(),
                ),
                "identifier" => query.identifier.push(occurrence.tokens()?),
                "name" => query.name.push(occurrence.strings()?),
                "family" => query.family.push(occurrence.strings()?),
                "given" => query.given.push(occurrence.strings()?),
                "ward" => query.ward.push(occurrence.strings()?),
                "birthdate" => query.birthdate.push(occurrence.dates()?),
                "gender" => {
                    let mut group = Vec::new();
                    for token in occurrence.tokens()? {
                        let system_ok = matches!(&token.system, TokenSystem::Any)
                            || token.system
                                == TokenSystem::Exact(
                                    "http://hl7.org/fhir/administrative-gender".to_owned(),
                                );
                        let sex = token
                            .code
                            .as_deref()
                            .filter(|_| system_ok)
                            .and_then(|code| Sex::parse(code).ok())
                            .ok_or_else(|| {
                                occurrence
                                    .value_error("gender must be male, female, other or unknown")
                            })?;
                        group.push(sex);
                    }
                    query.gender.push(group);
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        query.sort = parse_sort(
            common.sort.as_deref(),
            "_id, family, given, birthdate, identifier, ward",
            |name| {
                Some(match name {
                    "_id" => PatientSortKey::Id,
                    "family" => PatientSortKey::Family,
                    "given" => PatientSortKey::Given,
                    "birthdate" => PatientSortKey::Birthdate,
                    "identifier" => PatientSortKey::Identifier,
                    "ward" => PatientSortKey::Ward,
                    _ => return None,
                })
            },
        )?;
        query.paging = paging(&common);
        Ok(query)
    }

    /// Whether a registered patient matches every filter.
    pub fn matches(&self, patient: &Patient) -> bool {
        let details = &patient.details;
        let given_names: Vec<&str> = details.name.given.split_whitespace().collect();
        let (birth_start, birth_end) = day_range(details);
        self.ids.matches(|id| *id == patient.id)
            && self.identifier.matches(|token| {
                token.matches(
                    Some(details.identifier.system.as_str()),
                    &details.identifier.value,
                )
            })
            && self.name.matches(|name| {
                name.matches(&details.name.family)
                    || given_names.iter().any(|given| name.matches(given))
            })
            && self
                .family
                .matches(|family| family.matches(&details.name.family))
            && self
                .given
                .matches(|given| given_names.iter().any(|name| given.matches(name)))
            && self
                .birthdate
                .matches(|date| date.matches_range(birth_start, birth_end))
            && self.gender.matches(|sex| *sex == details.sex)
            && self.ward.matches(|ward| ward.matches(&details.ward))
    }

    /// Sorts patients by `_sort` (stable: equal keys keep their order).
    pub fn sort_patients<P: std::borrow::Borrow<Patient>>(&self, patients: &mut [P]) {
        patients.sort_by(|left, right| {
            let (left, right) = (left.borrow(), right.borrow());
            self.sort
                .iter()
                .map(|sort| {
                    let (a, b) = (&left.details, &right.details);
                    let order = match sort.key {
                        PatientSortKey::Id => left.id.cmp(&right.id),
                        PatientSortKey::Family => a.name.family.cmp(&b.name.family),
                        PatientSortKey::Given => a.name.given.cmp(&b.name.given),
                        PatientSortKey::Birthdate => a.birth_date.cmp(&b.birth_date),
                        PatientSortKey::Identifier => a.identifier.value.cmp(&b.identifier.value),
                        PatientSortKey::Ward => (&a.ward, &a.bed).cmp(&(&b.ward, &b.bed)),
                    };
                    if sort.descending {
                        order.reverse()
                    } else {
                        order
                    }
                })
                .find(|order| order.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    }
}

/// The UTC day of a patient's birth date as `[start, end)`.
fn day_range(patient: &NewPatient) -> (Timestamp, Timestamp) {
    let seconds = patient.birth_date.midnight().assume_utc().unix_timestamp();
    let start = Timestamp::from_seconds(seconds);
    (start, start.add_seconds(86_400))
}

/// Sort keys of Device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceSortKey {
    /// `_id`.
    Id,
    /// `identifier` (the serial).
    Identifier,
}

/// A parsed Device search.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceQuery {
    /// `_id`.
    pub ids: Criteria<DeviceId>,
    /// `identifier` (serial in Galen's serial system).
    pub identifier: Criteria<TokenParam>,
    /// `status`.
    pub status: Criteria<DeviceStatus>,
    /// `type`.
    pub kind: Criteria<DeviceKind>,
    /// `patient`.
    pub patient: Criteria<PatientId>,
    /// `manufacturer`.
    pub manufacturer: Criteria<StringParam>,
    /// `model`.
    pub model: Criteria<StringParam>,
    /// `_sort`.
    pub sort: Vec<SortKey<DeviceSortKey>>,
    /// `_count`, `_cursor`.
    pub paging: Paging,
}

impl DeviceQuery {
    /// Parses the query pairs of a Device search.
    pub fn parse<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> Result<DeviceQuery> {
        let mut query = DeviceQuery::default();
        let common = walk(params, DEVICE_PARAMETERS, |occurrence| {
            match occurrence.name {
                "_id" => query.ids.push(
                    occurrence
                        .numeric_ids()?
                        .into_iter()
                        .map(DeviceId)
                        .collect(),
                ),
                "identifier" => query.identifier.push(occurrence.tokens()?),
                "manufacturer" => query.manufacturer.push(occurrence.strings()?),
                "model" => query.model.push(occurrence.strings()?),
                "patient" => query.patient.push(
                    occurrence
                        .references("Patient")?
                        .into_iter()
                        .map(PatientId)
                        .collect(),
                ),
                "status" => {
                    let mut group = Vec::new();
                    for token in occurrence.tokens()? {
                        let status = token
                            .code
                            .as_deref()
                            .filter(|_| {
                                matches!(&token.system, TokenSystem::Any)
                                    || token.system
                                        == TokenSystem::Exact(
                                            "http://hl7.org/fhir/device-status".to_owned(),
                                        )
                            })
                            .and_then(|code| DeviceStatus::parse(code).ok())
                            .ok_or_else(|| {
                                occurrence.value_error(
                                    "status must be active, inactive, entered-in-error or unknown",
                                )
                            })?;
                        group.push(status);
                    }
                    query.status.push(group);
                }
                "type" => {
                    let mut group = Vec::new();
                    for token in occurrence.tokens()? {
                        let system_ok = matches!(&token.system, TokenSystem::Any)
                            || token.system
                                == TokenSystem::Exact(codes::DEVICE_KIND_SYSTEM.to_owned());
                        let kind = token
                            .code
                            .as_deref()
                            .filter(|_| system_ok)
                            .and_then(|code| DeviceKind::parse(code).ok())
                            .ok_or_else(|| {
                                occurrence.value_error(format!(
                                    "type must be a code of {}: {}",
                                    codes::DEVICE_KIND_SYSTEM,
                                    DeviceKind::ALL.map(DeviceKind::code).join(", ")
                                ))
                            })?;
                        group.push(kind);
                    }
                    query.kind.push(group);
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        query.sort = parse_sort(common.sort.as_deref(), "_id, identifier", |name| {
            Some(match name {
                "_id" => DeviceSortKey::Id,
                "identifier" => DeviceSortKey::Identifier,
                _ => return None,
            })
        })?;
        query.paging = paging(&common);
        Ok(query)
    }

    /// Whether a device, currently assigned to `patient`, matches every filter.
    pub fn matches(&self, device: &Device, patient: Option<PatientId>) -> bool {
        let details = &device.details;
        self.ids.matches(|id| *id == device.id)
            && self
                .identifier
                .matches(|token| token.matches(Some(codes::DEVICE_SERIAL_SYSTEM), &details.serial))
            && self.status.matches(|status| *status == details.status)
            && self.kind.matches(|kind| *kind == details.kind)
            && self.patient.matches(|wanted| Some(*wanted) == patient)
            && self
                .manufacturer
                .matches(|manufacturer| manufacturer.matches(&details.manufacturer))
            && self.model.matches(|model| model.matches(&details.model))
    }

    /// Sorts devices by `_sort` (stable).
    pub fn sort_devices<D: std::borrow::Borrow<Device>>(&self, devices: &mut [D]) {
        devices.sort_by(|left, right| {
            let (left, right) = (left.borrow(), right.borrow());
            self.sort
                .iter()
                .map(|sort| {
                    let order = match sort.key {
                        DeviceSortKey::Id => left.id.cmp(&right.id),
                        DeviceSortKey::Identifier => left.details.serial.cmp(&right.details.serial),
                    };
                    if sort.descending {
                        order.reverse()
                    } else {
                        order
                    }
                })
                .find(|order| order.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    }
}

/// Sort keys of Observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObservationSortKey {
    /// `date` (effective time).
    Date,
}

/// A parsed Observation search, in the terms the time-series store is read in.
///
/// Sets are `None` when the parameter was not given (no restriction) and may be empty (nothing
/// can match: the server can answer without reading the store).
#[derive(Debug, Clone, PartialEq)]
pub struct ObservationQuery {
    /// `_id`: the only Observations wanted.
    pub ids: Option<BTreeSet<ObservationKey>>,
    /// `patient` / `subject`.
    pub patients: Option<BTreeSet<PatientId>>,
    /// `device`.
    pub devices: Option<BTreeSet<DeviceId>>,
    /// `code` and `category`: the Observation codes wanted.
    pub codes: Option<BTreeSet<ObservationCode>>,
    /// `date`: the effective instants wanted.
    pub window: TimeWindow,
    /// `_sort`.
    pub sort: Vec<SortKey<ObservationSortKey>>,
    /// `_count`, `_cursor`.
    pub paging: Paging,
}

impl Default for ObservationQuery {
    fn default() -> Self {
        ObservationQuery {
            ids: None,
            patients: None,
            devices: None,
            codes: None,
            window: TimeWindow::all(),
            sort: Vec::new(),
            paging: Paging::default(),
        }
    }
}

/// Intersects `set` with `group` (a parameter occurrence narrows what earlier ones allowed).
fn restrict<T: Ord + Clone>(set: &mut Option<BTreeSet<T>>, group: BTreeSet<T>) {
    *set = Some(match set.take() {
        None => group,
        Some(existing) => existing.intersection(&group).cloned().collect(),
    });
}

/// Observation codes a token of the `code` parameter names (none when Galen serves no such code).
fn codes_of_token(token: &TokenParam) -> BTreeSet<ObservationCode> {
    ObservationCode::all()
        .filter(|code| match code {
            ObservationCode::BloodPressurePanel => {
                token.matches(Some(LOINC), codes::BLOOD_PRESSURE_PANEL_LOINC)
                    || token.matches(Some(MDC), &codes::BLOOD_PRESSURE_PANEL_MDC.to_string())
            }
            ObservationCode::Vital(vital) => {
                let loinc = vital
                    .loinc()
                    .into_iter()
                    .chain((*vital == VitalSign::Spo2).then_some(codes::SPO2_PULSE_OXIMETRY_LOINC));
                let mut loinc_codes = loinc;
                loinc_codes.any(|loinc| token.matches(Some(LOINC), loinc))
                    || vital
                        .mdc()
                        .is_some_and(|mdc| token.matches(Some(MDC), &mdc.to_string()))
                    || (vital.loinc().is_none()
                        && token.matches(Some(codes::MEASUREMENT_SYSTEM), vital.alias()))
            }
        })
        .collect()
}

impl ObservationQuery {
    /// Parses the query pairs of an Observation search.
    pub fn parse<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> Result<ObservationQuery> {
        let mut query = ObservationQuery::default();
        let common = walk(params, OBSERVATION_PARAMETERS, |occurrence| {
            match occurrence.name {
                "_id" => {
                    let group = occurrence.ids(|id| parse_observation_id(id).ok())?;
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
                    let ids = occurrence.references("Device")?;
                    restrict(&mut query.devices, ids.into_iter().map(DeviceId).collect());
                }
                "code" => {
                    let group = occurrence
                        .tokens()?
                        .iter()
                        .flat_map(codes_of_token)
                        .collect();
                    restrict(&mut query.codes, group);
                }
                "category" => {
                    let vital_signs = occurrence.tokens()?.iter().any(|token| {
                        token.matches(
                            Some(codes::OBSERVATION_CATEGORY),
                            codes::VITAL_SIGNS_CATEGORY,
                        )
                    });
                    let group = ObservationCode::all()
                        .filter(|code| vital_signs && code.is_vital_sign())
                        .collect();
                    restrict(&mut query.codes, group);
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
        self.window.is_empty()
            || [
                self.ids.as_ref().map(BTreeSet::is_empty),
                self.patients.as_ref().map(BTreeSet::is_empty),
                self.devices.as_ref().map(BTreeSet::is_empty),
                self.codes.as_ref().map(BTreeSet::is_empty),
            ]
            .into_iter()
            .flatten()
            .any(|empty| empty)
    }

    /// The series to read from the store (per device in scope, over [`ObservationQuery::window`]),
    /// in [`VitalSign::ALL`] order.
    pub fn vitals_to_read(&self) -> Vec<VitalSign> {
        let wanted: BTreeSet<VitalSign> = match (&self.codes, &self.ids) {
            (Some(codes), _) => codes
                .iter()
                .flat_map(|code| code.vitals_to_read().iter().copied())
                .collect(),
            (None, Some(ids)) => ids
                .iter()
                .flat_map(|key| key.code.vitals_to_read().iter().copied())
                .collect(),
            (None, None) => VitalSign::ALL.into_iter().collect(),
        };
        VitalSign::ALL
            .into_iter()
            .filter(|vital| wanted.contains(vital))
            .collect()
    }

    /// Whether an Observation built from the store (its key, and the patient it is attributed to)
    /// matches every filter.
    pub fn matches_key(&self, key: &ObservationKey, patient: Option<PatientId>) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(key))
            && self
                .patients
                .as_ref()
                .is_none_or(|patients| patient.is_some_and(|patient| patients.contains(&patient)))
            && self
                .devices
                .as_ref()
                .is_none_or(|devices| devices.contains(&key.device))
            && self
                .codes
                .as_ref()
                .is_none_or(|codes| codes.contains(&key.code))
            && self.window.contains(key.time)
    }

    /// Whether results should come newest first (`_sort=-date`).
    pub fn newest_first(&self) -> bool {
        self.sort
            .first()
            .is_some_and(|sort| sort.key == ObservationSortKey::Date && sort.descending)
    }
}

#[cfg(test)]
mod tests;
