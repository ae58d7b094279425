//! Early-warning scores as Observations, alarms as Flags.
//!
//! The server decodes the clinical store's records (scores, alarm transitions) into the plain
//! structs of this module ([`StoredScore`], [`AlarmTransition`]); [`score_observation`] and
//! [`alarm_flag`] turn them into resources. This crate does not know the clinical engine: the
//! structs carry its codes as they are stored, and every clinical decision (points, bands, alarm
//! transitions) has been made before a record reaches this module.
//!
//! # Scores: `Observation`, category `survey`
//!
//! A score is an assessment-tool result derived from vital signs, not a vital sign: category
//! `survey` (the R4 category for "assessment tool/survey instrument observations", which UK Core's
//! early-warning-score profiles also fix), never `vital-signs`, whose profiles require a vital
//! sign's LOINC code and unit. Mapping:
//!
//! - `code`: the score table in [`codes::SCORE_TABLE_SYSTEM`] (`news2`, `qsofa`, `mews`, or a
//!   hospital table's id). Galen found no LOINC code it could verify as the NEWS2 *total* (LOINC's
//!   88330-6 is named for the 2012 NEWS, not NEWS2), so no LOINC coding is emitted. NEWS2 adds
//!   the SNOMED CT UK extension concept 1104051000000101 "Royal College of Physicians National
//!   Early Warning Score 2 - total score", the code NHS England's UK Core value set
//!   `UKCore-EarlyWarningTotalScores` uses. qSOFA and MEWS have only the Galen code.
//! - `valueQuantity`: the total, UCUM annotation `{score}`.
//! - `status`: `final` when every parameter of the table had a fresh reading, else
//!   `preliminary`. An incomplete score's total and band are a lower bound (missing parameters
//!   score nothing; the patient may be worse, never better), so its value carries the comparator
//!   `>=` and each missing parameter is a component with a `dataAbsentReason`.
//! - `interpretation`: the band ([`codes::SCORE_BAND_SYSTEM`], the band name of the table, e.g.
//!   NEWS2's `low`, `low-medium`, `medium`, `high`: RCP NEWS2 2017, charts 2-4); `note` carries
//!   the band's minimum monitoring frequency and clinical response.
//! - `component`: one per parameter in chart order, the points scored as `valueQuantity`
//!   (`{score}`), coded in [`codes::SCORE_PARAMETER_SYSTEM`] and, for NEWS2, with the SNOMED CT
//!   UK sub-score concept (`UKCore-EarlyWarningSubScore`), except SpO2: the stored record does
//!   not say which SpO2 scale was applied, and scale 1 and 2 have different concepts. The value
//!   looked up in the chart (after Galen's rounding) is the [`codes::SCORED_VALUE_EXTENSION`].
//! - `derivedFrom`: the vital-sign Observations the points came from (ids as in
//!   [`crate::observation`]); staff entries (ACVPU, air or oxygen) have no FHIR resource yet and
//!   are not referenced.
//! - `effectiveDateTime`: when the score was computed (the time of the input that changed it).
//!
//! **Ids** are `score.{table}.{patient}.{micros}` ([`ScoreKey`]): the literal `score`, the table
//! id, the patient id and the score time in microseconds since the Unix epoch, so a read needs no
//! index and score ids never collide with vital-sign ids (`{device}.{token}.{micros}`, three
//! parts). Tables whose id is not 1-16 letters, digits or `-` cannot be named in a FHIR id and are
//! not served ([`is_servable_table_id`]). When the engine stored several records of one table at
//! one instant (one input per measurement of a batch, each changing the score), the id names the
//! last of them: the score after every input of that instant.
//!
//! # Alarms: `Flag`
//!
//! R4 offers Flag, DetectedIssue and Communication. An IEC 60601-1-8 alarm is a warning shown to
//! those caring for the patient while a hazard lasts, with a priority, a lifecycle (raised,
//! acknowledged, latched, ended) and escalation. Flag fits it: "a prospective warning of potential
//! issues when providing care", `status` `active`/`inactive` for "the alarm exists" / "it is
//! over", `period` from raise to end, `author`, and two core extensions made for alarms:
//! `flag-priority`, whose codes (PL, PM, PH) are the IHE PCD alert priorities, and
//! `flag-detail`, pointing at the Observations that raised it. DetectedIssue describes a
//! problem *with or between clinical actions* (a drug interaction, a duplicate therapy) found by a
//! check: its `status` is the status of that assessment (`preliminary`, `final`), with no place
//! for "acknowledged" or "ended", and its `implicated` and `mitigation` elements have nothing to
//! hold for a low-SpO2 alarm. Communication is a notification sent to someone (a webhook, a page),
//! not the alarm itself. So Galen serves alarms as Flags:
//!
//! - `status`: `active` while the alarm is active, acknowledged or latched; `inactive` once it is
//!   resolved (by itself or closed by a user).
//! - `category`: `clinical` ([`codes::FLAG_CATEGORY`]) for physiological alarms, and the alarm
//!   kind ([`codes::ALARM_KIND_SYSTEM`]: `physiological` or `technical`).
//! - `code`: the rule ([`codes::ALARM_RULE_SYSTEM`]), with the alarm's message as text.
//! - `period`: start when raised; end when resolved.
//! - `author`: the device, for technical alarms (they concern a device); Galen's clinical engine
//!   otherwise.
//! - extensions: `flag-priority` (PL, PM, PH); one `flag-detail` per measurement the alarm was
//!   raised or re-confirmed on; Galen's [`codes::ALARM_EXTENSION`] with what Flag has no element
//!   for: the state (`active`, `acknowledged`, `latched`, `resolved`), the last transition, the
//!   escalation level and the role notified last, the audio pause, the latest acknowledgement
//!   (when, by whom, why), the time it latched, who closed it and why, the value and threshold;
//!   and the clinical configuration version. `meta.lastUpdated` is the time of the last
//!   transition. The full transition log stays at `GET /api/v1/alarms/log`.
//!
//! **Ids** are the alarm ids of the native API, `{patient}-{number}` ([`FlagKey`]).

use std::fmt;

use galen_model::{DeviceId, PatientId, Timestamp};
use serde_json::{Value, json};

use crate::codes::{self, UCUM};
use crate::datatypes::{
    CodeableConcept, Coding, Extension, Extra, Meta, Period, Quantity, Reference,
};
use crate::error::{Error, Result};
use crate::observation::{ObservationKey, parse_canonical_i64};
use crate::resource::{Flag, Observation, ObservationComponent, ResourceType};

/// The first part of every score Observation id.
pub const SCORE_ID_PREFIX: &str = "score";
/// Longest table id that can be part of a score id (so that the id stays within FHIR's 64
/// characters whatever the patient id and time).
pub const MAX_TABLE_ID_LENGTH: usize = 16;
/// The table id of NEWS2 (RCP 2017), the one table with standard SNOMED CT codes.
pub const NEWS2_TABLE: &str = "news2";
/// SNOMED CT UK extension: "Royal College of Physicians National Early Warning Score 2 - total
/// score" (UK Core value set `UKCore-EarlyWarningTotalScores`).
pub const NEWS2_TOTAL_SNOMED: &str = "1104051000000101";
const NEWS2_TOTAL_DISPLAY: &str =
    "Royal College of Physicians National Early Warning Score 2 - total score";
/// UCUM annotation of a score (a dimensionless count of points).
const SCORE_UNIT: &str = "{score}";

/// A parameter a score table scores, in NEWS2 chart order (RCP NEWS2 2017, chart 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScoreParameter {
    /// Respiration rate.
    RespiratoryRate,
    /// SpO2.
    Spo2,
    /// Air or supplemental oxygen.
    SupplementalOxygen,
    /// Systolic blood pressure.
    SystolicBp,
    /// Pulse (heart rate).
    HeartRate,
    /// Level of consciousness (ACVPU).
    Consciousness,
    /// Body temperature.
    Temperature,
}

impl ScoreParameter {
    /// Every parameter, in chart order.
    pub const ALL: [ScoreParameter; 7] = [
        ScoreParameter::RespiratoryRate,
        ScoreParameter::Spo2,
        ScoreParameter::SupplementalOxygen,
        ScoreParameter::SystolicBp,
        ScoreParameter::HeartRate,
        ScoreParameter::Consciousness,
        ScoreParameter::Temperature,
    ];

    /// The code, as the clinical engine stores it and [`codes::SCORE_PARAMETER_SYSTEM`] uses it.
    pub const fn code(self) -> &'static str {
        match self {
            ScoreParameter::RespiratoryRate => "respiratory_rate",
            ScoreParameter::Spo2 => "spo2",
            ScoreParameter::SupplementalOxygen => "oxygen",
            ScoreParameter::SystolicBp => "systolic_bp",
            ScoreParameter::HeartRate => "heart_rate",
            ScoreParameter::Consciousness => "consciousness",
            ScoreParameter::Temperature => "temperature",
        }
    }

    /// Inverse of [`ScoreParameter::code`].
    pub fn parse(code: &str) -> Option<ScoreParameter> {
        ScoreParameter::ALL
            .into_iter()
            .find(|parameter| parameter.code() == code)
    }

    /// A plain-language name.
    pub const fn text(self) -> &'static str {
        match self {
            ScoreParameter::RespiratoryRate => "Respiration rate score",
            ScoreParameter::Spo2 => "Oxygen saturation score",
            ScoreParameter::SupplementalOxygen => "Air or oxygen score",
            ScoreParameter::SystolicBp => "Systolic blood pressure score",
            ScoreParameter::HeartRate => "Pulse score",
            ScoreParameter::Consciousness => "Consciousness score",
            ScoreParameter::Temperature => "Temperature score",
        }
    }

    /// The SNOMED CT UK concept of this parameter's NEWS2 sub-score (UK Core value set
    /// `UKCore-EarlyWarningSubScore`), and its display. `None` for SpO2: scale 1 and scale 2 have
    /// different concepts and a stored score does not say which scale was applied.
    pub const fn news2_snomed(self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            ScoreParameter::RespiratoryRate => (
                "1104301000000104",
                "Royal College of Physicians National Early Warning Score 2 - respiration rate score",
            ),
            ScoreParameter::SupplementalOxygen => (
                "1104331000000105",
                "Royal College of Physicians National Early Warning Score 2 - air or oxygen score",
            ),
            ScoreParameter::SystolicBp => (
                "1104341000000101",
                "Royal College of Physicians National Early Warning Score 2 - systolic blood pressure score",
            ),
            ScoreParameter::HeartRate => (
                "1104351000000103",
                "Royal College of Physicians National Early Warning Score 2 - pulse score",
            ),
            ScoreParameter::Consciousness => (
                "1104361000000100",
                "Royal College of Physicians National Early Warning Score 2 - consciousness score",
            ),
            ScoreParameter::Temperature => (
                "1104371000000107",
                "Royal College of Physicians National Early Warning Score 2 - temperature score",
            ),
            ScoreParameter::Spo2 => return None,
        })
    }
}

/// Whether a score table id can be part of a FHIR id: 1 to [`MAX_TABLE_ID_LENGTH`] ASCII letters,
/// digits or `-`. Scores of other tables are not served over FHIR.
pub fn is_servable_table_id(table: &str) -> bool {
    (1..=MAX_TABLE_ID_LENGTH).contains(&table.len())
        && table
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
}

/// The logical id of a score Observation: which patient, which table, which instant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScoreKey {
    /// The patient.
    pub patient: PatientId,
    /// The score table id.
    pub table: String,
    /// When the score was computed.
    pub time: Timestamp,
}

impl ScoreKey {
    /// `score.{table}.{patient}.{micros}`.
    pub fn id(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ScoreKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{SCORE_ID_PREFIX}.{}.{}.{}",
            self.table,
            self.patient.0,
            self.time.micros()
        )
    }
}

/// Whether `id` has the shape of a score id (it starts with `score.`), valid or not: such ids are
/// never vital-sign Observation ids.
pub fn is_score_id(id: &str) -> bool {
    id.strip_prefix(SCORE_ID_PREFIX)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// Parses an id written by [`ScoreKey::id`]; only the canonical spelling is accepted.
pub fn parse_score_id(id: &str) -> Result<ScoreKey> {
    let invalid = || Error::Id {
        resource_type: "Observation",
        id: id.to_owned(),
    };
    let mut parts = id.split('.');
    let (Some(SCORE_ID_PREFIX), Some(table), Some(patient), Some(time), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(invalid());
    };
    if !is_servable_table_id(table) {
        return Err(invalid());
    }
    let patient = parse_canonical_i64(patient).ok_or_else(invalid)?;
    let time = parse_canonical_i64(time).ok_or_else(invalid)?;
    Ok(ScoreKey {
        patient: PatientId(patient),
        table: table.to_owned(),
        time: Timestamp::from_micros(time),
    })
}

/// The value one parameter was scored on.
#[derive(Debug, Clone, PartialEq)]
pub enum ScoredValue {
    /// A number in `unit` (UCUM); `rounded` is the value after the table's rounding, the one
    /// looked up in its bands.
    Number {
        /// The reading as received.
        value: f64,
        /// The value looked up, when the record has it.
        rounded: Option<f64>,
        /// UCUM unit code.
        unit: Option<String>,
    },
    /// A coded state: an ACVPU letter, or `air`/`oxygen`.
    Code(String),
}

/// Where a scored reading came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScoreSource {
    /// A stored measurement, served as the vital-sign Observation with this key. (The server
    /// resolves a systolic pressure to the blood pressure panel it is part of, if any.)
    Measurement(ObservationKey),
    /// A clinical entry made by staff (its id in the clinical store).
    Entry(i64),
}

/// The points one parameter contributed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterScore {
    /// The parameter.
    pub parameter: ScoreParameter,
    /// Points.
    pub points: i64,
    /// The value scored.
    pub value: ScoredValue,
    /// Where the value came from.
    pub source: ScoreSource,
}

/// A parameter the table uses that had no usable fresh reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingParameter {
    /// The parameter.
    pub parameter: ScoreParameter,
    /// The newest (stale) reading's time; `None` when there never was a usable one.
    pub last_seen: Option<Timestamp>,
}

/// One stored score, as the server decodes it from the clinical store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredScore {
    /// The patient.
    pub patient: PatientId,
    /// Score table id.
    pub table: String,
    /// Score table name, for `code.text`.
    pub table_name: Option<String>,
    /// Score table version.
    pub table_version: Option<String>,
    /// Clinical configuration version.
    pub config_version: Option<String>,
    /// When it was computed.
    pub time: Timestamp,
    /// The total (a lower bound when incomplete).
    pub total: i64,
    /// Whether every parameter had a fresh reading.
    pub complete: bool,
    /// The band's name.
    pub band: String,
    /// The band's minimum monitoring frequency.
    pub monitoring: Option<String>,
    /// The band's clinical response.
    pub response: Option<String>,
    /// Points per scored parameter.
    pub points: Vec<ParameterScore>,
    /// Parameters without a usable reading.
    pub missing: Vec<MissingParameter>,
}

impl StoredScore {
    /// The key (and id) of its Observation.
    pub fn key(&self) -> ScoreKey {
        ScoreKey {
            patient: self.patient,
            table: self.table.clone(),
            time: self.time,
        }
    }
}

/// A `{score}` quantity.
fn score_quantity(points: i64, comparator: Option<&str>) -> Quantity {
    Quantity {
        value: Some(points.into()),
        comparator: comparator.map(str::to_owned),
        unit: Some("score".to_owned()),
        system: Some(UCUM.to_owned()),
        code: Some(SCORE_UNIT.to_owned()),
        extra: Extra::new(),
    }
}

/// The `code` of a score Observation of `table`.
pub fn score_code(table: &str, table_name: Option<&str>) -> CodeableConcept {
    let mut coding = vec![Coding::new(codes::SCORE_TABLE_SYSTEM, table, table_name)];
    if table == NEWS2_TABLE {
        coding.push(Coding::new(
            codes::SNOMED,
            NEWS2_TOTAL_SNOMED,
            Some(NEWS2_TOTAL_DISPLAY),
        ));
    }
    CodeableConcept {
        coding,
        text: Some(table_name.unwrap_or(table).to_owned()),
        extra: Extra::new(),
    }
}

fn parameter_code(table: &str, parameter: ScoreParameter) -> CodeableConcept {
    let mut coding = vec![Coding::new(
        codes::SCORE_PARAMETER_SYSTEM,
        parameter.code(),
        Some(parameter.text()),
    )];
    if table == NEWS2_TABLE
        && let Some((code, display)) = parameter.news2_snomed()
    {
        coding.push(Coding::new(codes::SNOMED, code, Some(display)));
    }
    CodeableConcept {
        coding,
        text: Some(parameter.text().to_owned()),
        extra: Extra::new(),
    }
}

fn scored_value_extension(value: &ScoredValue) -> Option<Value> {
    let value = match value {
        ScoredValue::Number {
            value,
            rounded,
            unit,
        } => {
            let number = Quantity::decimal(rounded.unwrap_or(*value))?;
            let mut quantity = json!({ "value": number });
            if let Some(unit) = unit {
                quantity["unit"] = json!(unit);
                quantity["system"] = json!(UCUM);
                quantity["code"] = json!(unit);
            }
            json!({ "url": codes::SCORED_VALUE_EXTENSION, "valueQuantity": quantity })
        }
        ScoredValue::Code(code) => {
            json!({ "url": codes::SCORED_VALUE_EXTENSION, "valueCode": code })
        }
    };
    Some(value)
}

fn string_extension(url: &str, value: Option<&str>) -> Option<Value> {
    value.map(|value| json!({ "url": url, "valueString": value }))
}

/// A stored score as an Observation (see the module documentation). Fails only for a table id
/// that cannot be part of a FHIR id.
pub fn score_observation(score: &StoredScore) -> Result<Observation> {
    let key = score.key();
    if !is_servable_table_id(&key.table) {
        return Err(Error::Id {
            resource_type: "Observation",
            id: key.id(),
        });
    }
    let mut components: Vec<(ScoreParameter, ObservationComponent)> = Vec::new();
    let mut derived_from: Vec<String> = Vec::new();
    for scored in &score.points {
        let mut component = ObservationComponent {
            code: Some(parameter_code(&score.table, scored.parameter)),
            value_quantity: Some(score_quantity(scored.points, None)),
            data_absent_reason: None,
            extra: Extra::new(),
        };
        if let Some(extension) = scored_value_extension(&scored.value) {
            component
                .extra
                .insert("extension".to_owned(), Value::Array(vec![extension]));
        }
        components.push((scored.parameter, component));
        if let ScoreSource::Measurement(source) = &scored.source {
            let reference = format!("Observation/{}", source.id());
            if !derived_from.contains(&reference) {
                derived_from.push(reference);
            }
        }
    }
    for missing in &score.missing {
        let (code, text) = match missing.last_seen {
            // Never recorded (or never usable): nothing was measured.
            None => ("not-performed", "no reading".to_owned()),
            Some(last) => (
                "unknown",
                format!(
                    "stale: the newest reading, at {}, is too old to count",
                    last.to_rfc3339()
                ),
            ),
        };
        let mut reason = CodeableConcept::single(codes::DATA_ABSENT_REASON, code, None);
        reason.text = Some(text);
        components.push((
            missing.parameter,
            ObservationComponent {
                code: Some(parameter_code(&score.table, missing.parameter)),
                value_quantity: None,
                data_absent_reason: Some(reason),
                extra: Extra::new(),
            },
        ));
    }
    // Chart order, whatever order the record listed them in.
    components.sort_by_key(|(parameter, _)| *parameter);

    let mut extra = Extra::new();
    let extensions: Vec<Value> = [
        string_extension(
            codes::SCORE_TABLE_VERSION_EXTENSION,
            score.table_version.as_deref(),
        ),
        string_extension(
            codes::CLINICAL_CONFIG_VERSION_EXTENSION,
            score.config_version.as_deref(),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !extensions.is_empty() {
        extra.insert("extension".to_owned(), Value::Array(extensions));
    }
    let band = CodeableConcept {
        coding: vec![Coding::new(
            codes::SCORE_BAND_SYSTEM,
            score.band.clone(),
            Some(&score.band),
        )],
        text: Some(score.band.clone()),
        extra: Extra::new(),
    };
    extra.insert("interpretation".to_owned(), json!([band]));
    let mut notes = Vec::new();
    if !score.complete {
        let missing: Vec<&str> = score
            .missing
            .iter()
            .map(|missing| missing.parameter.code())
            .collect();
        notes.push(format!(
            "Incomplete: no fresh {}; the total and the band are a lower bound.",
            missing.join(", ")
        ));
    }
    match (&score.monitoring, &score.response) {
        (Some(monitoring), Some(response)) => notes.push(format!(
            "Band {}: monitoring {monitoring}; response: {response}.",
            score.band
        )),
        (Some(monitoring), None) => {
            notes.push(format!("Band {}: monitoring {monitoring}.", score.band));
        }
        (None, Some(response)) => {
            notes.push(format!("Band {}: response: {response}.", score.band));
        }
        (None, None) => {}
    }
    if !notes.is_empty() {
        let notes: Vec<Value> = notes
            .into_iter()
            .map(|text| json!({ "text": text }))
            .collect();
        extra.insert("note".to_owned(), Value::Array(notes));
    }
    if !derived_from.is_empty() {
        let references: Vec<Value> = derived_from
            .into_iter()
            .map(|reference| json!({ "reference": reference }))
            .collect();
        extra.insert("derivedFrom".to_owned(), Value::Array(references));
    }
    let mut category = CodeableConcept::single(
        codes::OBSERVATION_CATEGORY,
        codes::SURVEY_CATEGORY,
        Some("Survey"),
    );
    category.text = Some("Survey".to_owned());
    Ok(Observation {
        resource_type: ResourceType::new(),
        id: Some(key.id()),
        meta: None,
        identifier: Vec::new(),
        status: Some(
            if score.complete {
                "final"
            } else {
                "preliminary"
            }
            .to_owned(),
        ),
        category: vec![category],
        code: Some(score_code(&score.table, score.table_name.as_deref())),
        subject: Some(Reference::to("Patient", score.patient.0)),
        effective_date_time: Some(score.time.to_rfc3339()),
        effective_instant: None,
        effective_period: None,
        issued: None,
        value_quantity: Some(score_quantity(
            score.total,
            (!score.complete).then_some(">="),
        )),
        data_absent_reason: None,
        device: None,
        component: components
            .into_iter()
            .map(|(_, component)| component)
            .collect(),
        extra,
    })
}

/// The logical id of a Flag: the native alarm id `{patient}-{number}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlagKey {
    /// The patient.
    pub patient: PatientId,
    /// The patient's alarm number (from 1).
    pub number: u32,
}

impl FlagKey {
    /// `{patient}-{number}`, the same text as the native API's alarm id.
    pub fn id(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for FlagKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}-{}", self.patient.0, self.number)
    }
}

/// Parses an id written by [`FlagKey::id`]; only the canonical spelling is accepted.
pub fn parse_flag_id(id: &str) -> Result<FlagKey> {
    let invalid = || Error::Id {
        resource_type: "Flag",
        id: id.to_owned(),
    };
    // The last `-` separates: a negative patient id keeps its sign.
    let (patient, number) = id.rsplit_once('-').ok_or_else(invalid)?;
    let patient = parse_canonical_i64(patient).ok_or_else(invalid)?;
    let number = parse_canonical_i64(number)
        .and_then(|number| u32::try_from(number).ok())
        .ok_or_else(invalid)?;
    Ok(FlagKey {
        patient: PatientId(patient),
        number,
    })
}

/// Alarm priority (IEC 60601-1-8: low = awareness, medium = prompt, high = immediate response).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlarmPriority {
    /// Awareness.
    Low,
    /// Prompt response.
    Medium,
    /// Immediate response.
    High,
}

impl AlarmPriority {
    /// Every priority, lowest first.
    pub const ALL: [AlarmPriority; 3] = [
        AlarmPriority::Low,
        AlarmPriority::Medium,
        AlarmPriority::High,
    ];

    /// `low`, `medium` or `high`, as stored.
    pub const fn code(self) -> &'static str {
        match self {
            AlarmPriority::Low => "low",
            AlarmPriority::Medium => "medium",
            AlarmPriority::High => "high",
        }
    }

    /// Inverse of [`AlarmPriority::code`].
    pub fn parse(code: &str) -> Option<AlarmPriority> {
        AlarmPriority::ALL
            .into_iter()
            .find(|priority| priority.code() == code)
    }

    /// The code in [`codes::FLAG_PRIORITY_CODES`] (`PL`, `PM`, `PH`).
    pub const fn flag_priority_code(self) -> &'static str {
        match self {
            AlarmPriority::Low => "PL",
            AlarmPriority::Medium => "PM",
            AlarmPriority::High => "PH",
        }
    }

    /// The display of [`AlarmPriority::flag_priority_code`].
    pub const fn flag_priority_display(self) -> &'static str {
        match self {
            AlarmPriority::Low => "Low priority",
            AlarmPriority::Medium => "Medium priority",
            AlarmPriority::High => "High priority",
        }
    }
}

/// Where an alarm is in its lifecycle (IEC 60601-1-8 concepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlarmState {
    /// Condition present, not acknowledged.
    Active,
    /// Condition present, acknowledged: signalling stops until it ends or worsens.
    Acknowledged,
    /// Condition ended, but a latching alarm keeps signalling until acknowledged.
    Latched,
    /// Over.
    Resolved,
}

impl AlarmState {
    /// Every state.
    pub const ALL: [AlarmState; 4] = [
        AlarmState::Active,
        AlarmState::Acknowledged,
        AlarmState::Latched,
        AlarmState::Resolved,
    ];

    /// `active`, `acknowledged`, `latched` or `resolved`, as stored.
    pub const fn code(self) -> &'static str {
        match self {
            AlarmState::Active => "active",
            AlarmState::Acknowledged => "acknowledged",
            AlarmState::Latched => "latched",
            AlarmState::Resolved => "resolved",
        }
    }

    /// Inverse of [`AlarmState::code`].
    pub fn parse(code: &str) -> Option<AlarmState> {
        AlarmState::ALL
            .into_iter()
            .find(|state| state.code() == code)
    }

    /// `Flag.status`: `active` while the alarm exists (a latched alarm still signals, an
    /// acknowledged one still has its condition), `inactive` once it is resolved.
    pub const fn flag_status(self) -> &'static str {
        match self {
            AlarmState::Active | AlarmState::Acknowledged | AlarmState::Latched => "active",
            AlarmState::Resolved => "inactive",
        }
    }
}

/// Physiological (from patient variables) or technical (from equipment) alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlarmKind {
    /// Raised by a patient variable.
    Physiological,
    /// Raised by equipment: sensor off, device silent, low battery.
    Technical,
}

impl AlarmKind {
    /// `physiological` or `technical`, as stored.
    pub const fn code(self) -> &'static str {
        match self {
            AlarmKind::Physiological => "physiological",
            AlarmKind::Technical => "technical",
        }
    }

    /// Inverse of [`AlarmKind::code`].
    pub fn parse(code: &str) -> Option<AlarmKind> {
        [AlarmKind::Physiological, AlarmKind::Technical]
            .into_iter()
            .find(|kind| kind.code() == code)
    }
}

/// Transition codes the Flag mapping looks for (the engine's `Transition::code`).
const ACKNOWLEDGED: &str = "acknowledged";
const LATCHED: &str = "latched";
const ESCALATED: &str = "escalated";
const PRIORITY_ESCALATED: &str = "priority_escalated";
const RESOLVED_BY_USER: &str = "resolved_by_user";

/// One stored alarm transition, as the server decodes it from the alarm log.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmTransition {
    /// When it happened.
    pub time: Timestamp,
    /// What happened (`raised`, `escalated`, `acknowledged`, `latched`, `resolved`, ...).
    pub transition: String,
    /// Priority after it.
    pub priority: AlarmPriority,
    /// State after it.
    pub state: AlarmState,
    /// When the alarm was raised.
    pub raised_at: Timestamp,
    /// The rule id.
    pub rule: String,
    /// Physiological or technical.
    pub kind: AlarmKind,
    /// The device, for technical alarms.
    pub device: Option<DeviceId>,
    /// Who acted, for operator transitions.
    pub actor: Option<String>,
    /// Why, for operator transitions.
    pub reason: Option<String>,
    /// Escalation level after it (0: the first role).
    pub escalation_level: u8,
    /// The role notified, for notifying transitions.
    pub role: Option<String>,
    /// End of a running audio pause.
    pub silenced_until: Option<Timestamp>,
    /// The value that raised or last confirmed the condition.
    pub value: Option<f64>,
    /// The limit it was compared with.
    pub threshold: Option<f64>,
    /// The alarm message for people.
    pub message: String,
    /// The measurements behind the value, as vital-sign Observation keys.
    pub evidence: Vec<ObservationKey>,
    /// Clinical configuration version.
    pub config_version: Option<String>,
}

/// An extension with one `value[x]` member (`valueCode`, `valueInteger`, ...).
fn sub_extension(url: &str, member: &str, value: Value) -> Extension {
    Extension {
        url: url.to_owned(),
        extra: [(member.to_owned(), value)].into_iter().collect(),
        ..Extension::default()
    }
}

/// The Flag of one alarm from its transitions, oldest first (every transition from the raise on,
/// or at least the last one). `None` without transitions.
pub fn alarm_flag(key: &FlagKey, transitions: &[AlarmTransition]) -> Option<Flag> {
    let last = transitions.last()?;
    let latest = |name: &str| {
        transitions
            .iter()
            .rev()
            .find(|transition| transition.transition == name)
    };
    let raised_at = transitions
        .first()
        .map_or(last.raised_at, |first| first.raised_at);
    let resolved = last.state == AlarmState::Resolved;

    let mut lifecycle = vec![
        sub_extension("state", "valueCode", json!(last.state.code())),
        sub_extension("lastTransition", "valueCode", json!(last.transition)),
        sub_extension(
            "escalationLevel",
            "valueInteger",
            json!(last.escalation_level),
        ),
    ];
    if let Some(role) = transitions
        .iter()
        .rev()
        .find_map(|transition| transition.role.as_deref())
    {
        lifecycle.push(sub_extension("notifiedRole", "valueString", json!(role)));
    }
    if let Some(escalated) = latest(ESCALATED) {
        lifecycle.push(sub_extension(
            "escalated",
            "valueDateTime",
            json!(escalated.time.to_rfc3339()),
        ));
    }
    if let Some(escalated) = latest(PRIORITY_ESCALATED) {
        lifecycle.push(sub_extension(
            "priorityEscalated",
            "valueDateTime",
            json!(escalated.time.to_rfc3339()),
        ));
    }
    if let Some(until) = last.silenced_until.filter(|_| !resolved) {
        lifecycle.push(sub_extension(
            "silencedUntil",
            "valueDateTime",
            json!(until.to_rfc3339()),
        ));
    }
    if let Some(acknowledged) = latest(ACKNOWLEDGED) {
        lifecycle.push(sub_extension(
            "acknowledged",
            "valueDateTime",
            json!(acknowledged.time.to_rfc3339()),
        ));
        if let Some(actor) = &acknowledged.actor {
            lifecycle.push(sub_extension("acknowledgedBy", "valueString", json!(actor)));
        }
        if let Some(reason) = &acknowledged.reason {
            lifecycle.push(sub_extension(
                "acknowledgedReason",
                "valueString",
                json!(reason),
            ));
        }
    }
    if let Some(latched) = latest(LATCHED) {
        lifecycle.push(sub_extension(
            "latched",
            "valueDateTime",
            json!(latched.time.to_rfc3339()),
        ));
    }
    if resolved && last.transition == RESOLVED_BY_USER {
        if let Some(actor) = &last.actor {
            lifecycle.push(sub_extension("resolvedBy", "valueString", json!(actor)));
        }
        if let Some(reason) = &last.reason {
            lifecycle.push(sub_extension(
                "resolvedReason",
                "valueString",
                json!(reason),
            ));
        }
    }
    let value = transitions
        .iter()
        .rev()
        .find_map(|transition| transition.value);
    if let Some(value) = value.and_then(Quantity::decimal) {
        lifecycle.push(sub_extension("value", "valueDecimal", Value::Number(value)));
    }
    let threshold = transitions
        .iter()
        .rev()
        .find_map(|transition| transition.threshold);
    if let Some(threshold) = threshold.and_then(Quantity::decimal) {
        lifecycle.push(sub_extension(
            "threshold",
            "valueDecimal",
            Value::Number(threshold),
        ));
    }

    let mut extension = vec![sub_extension(
        codes::FLAG_PRIORITY_EXTENSION,
        "valueCodeableConcept",
        json!({
            "coding": [{
                "system": codes::FLAG_PRIORITY_CODES,
                "code": last.priority.flag_priority_code(),
                "display": last.priority.flag_priority_display(),
            }],
            "text": last.priority.code(),
        }),
    )];
    let mut evidence: Vec<ObservationKey> = Vec::new();
    for key in transitions
        .iter()
        .flat_map(|transition| &transition.evidence)
    {
        if !evidence.contains(key) {
            evidence.push(*key);
        }
    }
    extension.extend(evidence.iter().map(|key| {
        sub_extension(
            codes::FLAG_DETAIL_EXTENSION,
            "valueReference",
            json!({ "reference": format!("Observation/{}", key.id()) }),
        )
    }));
    extension.push(Extension {
        url: codes::ALARM_EXTENSION.to_owned(),
        extension: lifecycle,
        ..Extension::default()
    });
    if let Some(version) = transitions
        .iter()
        .rev()
        .find_map(|transition| transition.config_version.as_deref())
    {
        extension.push(Extension::string(
            codes::CLINICAL_CONFIG_VERSION_EXTENSION,
            version,
        ));
    }

    let mut category = Vec::new();
    if last.kind == AlarmKind::Physiological {
        category.push(CodeableConcept::single(
            codes::FLAG_CATEGORY,
            "clinical",
            Some("Clinical"),
        ));
    }
    category.push(CodeableConcept::single(
        codes::ALARM_KIND_SYSTEM,
        last.kind.code(),
        Some(match last.kind {
            AlarmKind::Physiological => "Physiological alarm",
            AlarmKind::Technical => "Technical alarm",
        }),
    ));
    let author = match (last.kind, last.device) {
        (AlarmKind::Technical, Some(device)) => Reference::to("Device", device.0),
        _ => Reference {
            display: Some("Galen clinical engine".to_owned()),
            ..Reference::default()
        },
    };
    Some(Flag {
        resource_type: ResourceType::new(),
        id: Some(key.id()),
        meta: Some(Meta {
            last_updated: Some(last.time.to_rfc3339()),
            ..Meta::default()
        }),
        extension,
        status: Some(last.state.flag_status().to_owned()),
        category,
        code: Some(CodeableConcept {
            coding: vec![Coding::new(
                codes::ALARM_RULE_SYSTEM,
                last.rule.clone(),
                None,
            )],
            text: Some(last.message.clone()),
            extra: Extra::new(),
        }),
        subject: Some(Reference::to("Patient", key.patient.0)),
        period: Some(Period {
            start: Some(raised_at.to_rfc3339()),
            end: resolved.then(|| last.time.to_rfc3339()),
            extra: Extra::new(),
        }),
        author: Some(author),
        extra: Extra::new(),
    })
}

/// The interval `[start, end)` a Flag's period covers, for date searches: from the raise to the
/// end of the last transition's microsecond when resolved, open while the alarm exists.
pub fn alarm_period(transitions: &[AlarmTransition]) -> Option<(Timestamp, Timestamp)> {
    let last = transitions.last()?;
    let start = transitions
        .first()
        .map_or(last.raised_at, |first| first.raised_at);
    let end = if last.state == AlarmState::Resolved {
        last.time.add_micros(1)
    } else {
        Timestamp::MAX
    };
    Some((start, end))
}

#[cfg(test)]
mod tests;
