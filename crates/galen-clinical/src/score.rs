//! Early-warning scores (NEWS2, qSOFA, MEWS and hospital-defined charts) computed from versioned
//! score tables.
//!
//! A [`ScoreTable`] is configuration, not code: a hospital can add a chart (for example one of
//! the regional paediatric charts, of which there is no single international standard) by writing
//! a TOML file. Three tables are built in:
//!
//! - `news2`: National Early Warning Score 2, Royal College of Physicians, London, 2017. Chart 1
//!   gives the parameter bands and points; charts 2-4 the thresholds, triggers and clinical
//!   response. Used with acknowledgement of the RCP, which places no copyright restriction on
//!   NEWS2 use.
//! - `qsofa`: quick SOFA, Seymour et al., JAMA 2016;315(8):762-774 (Sepsis-3).
//! - `mews`: Modified Early Warning Score, Subbe et al., QJM 2001;94(10):521-526. Its band edges
//!   are a configurable local variant; many exist.
//!
//! Evaluation is pure: no I/O, no clock, no logging, no allocation. "Now" and the freshness
//! limits are parameters, and every [`Score`] carries the table version it came from.
//!
//! # Table format
//!
//! ```toml
//! id = "pews-example"              # stable identifier
//! version = "ward7-2026.1"         # recorded with every score; change it on every edit
//! name = "Example paediatric chart (made up)"
//! source = "Ward 7 local chart, approved 2026-01-12"
//!
//! [[parameter]]                    # a numeric parameter
//! code = "respiratory_rate"        # a Parameter code (respiratory_rate, spo2, oxygen,
//! decimals = 0                     #   systolic_bp, heart_rate, consciousness, temperature)
//! bands = [                        # inclusive min/max at the resolution, ascending
//!     { max = 19, points = 2 },    # first band: no min (open below)
//!     { min = 20, max = 40, points = 0 },
//!     { min = 41, points = 3 },    # last band: no max (open above)
//! ]
//!
//! [[parameter]]                    # SpO2 may appear twice, as `scale = 1` and `scale = 2`;
//! code = "spo2"                    # the patient's Spo2Scale picks one
//! scale = 2
//! decimals = 0
//! bands = [
//!     { max = 87, points = 3 },
//!     { min = 88, max = 92, points = 0 },
//!     { min = 93, oxygen = "air", points = 0 },     # bands may be conditioned on
//!     { min = 93, oxygen = "oxygen", points = 2 },  # the air/oxygen reading
//! ]
//!
//! [[parameter]]                    # coded parameters give points per value
//! code = "consciousness"           # all five ACVPU levels, by letter or name
//! points = { A = 0, C = 3, V = 3, P = 3, U = 3 }
//!
//! [[parameter]]
//! code = "oxygen"
//! points = { air = 0, oxygen = 2 }
//!
//! [[band]]                         # score bands, worst first; the first match applies
//! name = "high"
//! rank = 1                         # 0 = best
//! min_total = 5                    # optional: min_total, max_total, min_single
//! monitoring = "hourly"
//! response = "call the paediatric team"
//!
//! [[band]]                         # the last band must have no conditions (catch-all)
//! name = "low"
//! rank = 0
//! monitoring = "4-hourly"
//! response = "routine"
//! ```
//!
//! Header: `id`, `version`, `name` and `source` are required and must not be empty. Unknown keys
//! are refused, so a misspelt key is an error rather than a silently ignored setting.
//!
//! Numeric parameters (`respiratory_rate`, `spo2`, `systolic_bp`, `heart_rate`, `temperature`)
//! have a `decimals` resolution (0 to 6) and `bands`, each with optional inclusive `min` and
//! `max` (which must be exact at the resolution) and `points`. A band may also carry
//! `oxygen = "air"` or `oxygen = "oxygen"`, so that it applies only in that state; NEWS2 SpO2
//! Scale 2 needs this. For each oxygen state, the bands that apply must be in ascending order and
//! cover every value exactly once at the resolution: the first is open below, the last open above,
//! and each band starts one resolution step after the previous one ends. Only `spo2` may have
//! `scale` (1 or 2); a table with a single SpO2 entry uses it for both scales.
//!
//! Coded parameters: `consciousness` lists points for all five ACVPU levels (keys `A`, `C`, `V`,
//! `P`, `U` or `alert`, `confusion`, `voice`, `pain`, `unresponsive`); `oxygen` lists `air` and
//! `oxygen`.
//!
//! Score bands (`[[band]]`) are tried in order and the first whose conditions all hold applies:
//! `min_total` (total at least), `max_total` (total at most) and `min_single` (some single
//! parameter scores at least this). The last band must have no conditions, so every total has a
//! band. Two bands may share a name (NEWS2 has two "low" bands with different monitoring).
//!
//! # Rounding
//!
//! Band edges are integers or tenths, device values are not. Before band lookup a numeric
//! reading is rounded half away from zero to its parameter's `decimals`, taking the reading as the
//! decimal number a device or a person would write for it (the shortest decimal that converts to
//! the same `f64`). So the result does not depend on binary floating-point error: 36.05 rounds to
//! 36.1 and 36.04 to 36.0 (one decimal), 95.5 to 96 and 95.4 to 95 (no decimals). The RCP does not
//! make this decision; Galen does, and [`ParameterPoints::rounded`] records the value looked up.
//! Non-finite numbers are not readings: such a parameter counts as missing.
//!
//! # Missing and stale inputs
//!
//! A reading counts only if [`Freshness::is_fresh`] says so at `now`. A parameter the table uses
//! with no usable fresh reading is listed in [`Score::missing`] (with the time of the stale reading,
//! if there is one) and contributes no points. Such a score is incomplete
//! ([`Score::complete`] is false) and its total and band are a LOWER BOUND: the patient may be
//! worse, never better. Missing is never silently treated as normal. When the air/oxygen reading
//! is missing or stale, bands conditioned on oxygen are looked up as on air (again a lower bound
//! for NEWS2 Scale 2) and oxygen is listed as missing.

use std::collections::BTreeMap;

use galen_model::Timestamp;
use serde::Deserialize;

use crate::inputs::{
    Consciousness, Freshness, Oxygen, Parameter, ScoreInputs, Source, Spo2Scale, Value,
};

/// Largest supported `decimals` resolution.
const MAX_DECIMALS: u8 = 6;

/// Largest magnitude of a band bound in resolution steps (2^52, where `f64` stops having
/// fractions).
const MAX_UNITS: f64 = 4_503_599_627_370_496.0;

/// A score table: parameter bands, points and score bands, loaded from TOML.
///
/// The TOML format, the rounding rule (half away from zero at each parameter's resolution, on the
/// value's shortest decimal form) and the handling of missing inputs (no points, incomplete score,
/// total and band a lower bound) are documented at the top of `src/score.rs`.
///
/// Built-in tables: [`ScoreTable::news2`] (RCP NEWS2 2017, chart 1 and charts 2-4),
/// [`ScoreTable::qsofa`] (Seymour et al., JAMA 2016) and [`ScoreTable::mews`] (Subbe et al.,
/// QJM 2001, local variant).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreTable {
    id: String,
    version: String,
    name: String,
    source: String,
    /// Rule per parameter; for SpO2, the Scale 1 rule (or the only one).
    rules: [Option<Rule>; Parameter::COUNT],
    /// The SpO2 Scale 2 rule when the table has two SpO2 entries.
    spo2_scale2: Option<Rule>,
    /// Parameters the table reads (those with a rule, plus oxygen when a band is conditioned on
    /// it).
    used: [bool; Parameter::COUNT],
    bands: Vec<Band>,
    max_total: u16,
}

/// A score band (clinical risk level) and the response it calls for (for NEWS2: RCP 2017,
/// charts 2-4).
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// Band name, e.g. "medium". Several bands may share a name.
    pub name: String,
    /// Order of the band by the response it calls for; 0 is the best.
    pub rank: u8,
    /// Minimum monitoring frequency, e.g. "at least 1-hourly".
    pub monitoring: String,
    /// Clinical response, e.g. "urgent response: ...".
    pub response: String,
    /// Applies only if the total is at least this.
    pub min_total: Option<u16>,
    /// Applies only if the total is at most this.
    pub max_total: Option<u16>,
    /// Applies only if some single parameter scores at least this.
    pub min_single: Option<u8>,
}

impl Band {
    /// Whether the band's conditions hold for a `total` whose highest single-parameter score is
    /// `max_single`.
    pub fn matches(&self, total: u16, max_single: u8) -> bool {
        self.min_total.is_none_or(|min| total >= min)
            && self.max_total.is_none_or(|max| total <= max)
            && self.min_single.is_none_or(|min| max_single >= min)
    }

    /// Whether the band has no conditions (matches every score).
    pub fn is_catch_all(&self) -> bool {
        self.min_total.is_none() && self.max_total.is_none() && self.min_single.is_none()
    }
}

/// The points one parameter contributed to a score, and the reading they came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParameterPoints {
    /// The parameter.
    pub parameter: Parameter,
    /// Points scored.
    pub points: u8,
    /// The reading's value, as received.
    pub value: Value,
    /// For a numeric parameter, the value after rounding to the table's resolution: the value
    /// actually looked up in the bands.
    pub rounded: Option<f64>,
    /// When the reading was measured or observed.
    pub time: Timestamp,
    /// Where the reading came from.
    pub source: Source,
}

/// A parameter the table uses that had no usable fresh reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missing {
    /// The parameter.
    pub parameter: Parameter,
    /// `None`: never seen (or the value was not usable, e.g. not a finite number); `Some(time)`:
    /// the newest reading, at `time`, is stale.
    pub last_seen: Option<Timestamp>,
}

/// One evaluation of a [`ScoreTable`] at one moment.
///
/// When [`Score::complete`] is false, `total` and `band` are a lower bound: the missing
/// parameters contributed no points.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// When the score was computed (the `now` passed to [`ScoreTable::evaluate`]).
    pub time: Timestamp,
    /// Sum of the points of present, fresh parameters.
    pub total: u16,
    /// Points per parameter, indexed by [`Parameter::index`]; `None` for parameters the table
    /// does not use and for missing ones.
    pub points: [Option<ParameterPoints>; Parameter::COUNT],
    /// Parameters the table uses that are missing or stale, indexed by [`Parameter::index`].
    pub missing: [Option<Missing>; Parameter::COUNT],
    /// Index of the applicable band in [`ScoreTable::bands`].
    pub band: usize,
}

impl Score {
    /// Whether every parameter the table uses had a fresh reading. If not, the total and band are
    /// a lower bound.
    pub fn complete(&self) -> bool {
        self.missing.iter().all(Option::is_none)
    }

    /// The highest points scored by any single parameter (0 if none).
    pub fn max_single(&self) -> u8 {
        self.points
            .iter()
            .flatten()
            .map(|points| points.points)
            .max()
            .unwrap_or(0)
    }

    /// Where the scored readings came from, in [`Parameter::ALL`] order.
    pub fn sources(&self) -> impl Iterator<Item = Source> + '_ {
        self.points.iter().flatten().map(|points| points.source)
    }

    /// The missing or stale parameters, in [`Parameter::ALL`] order.
    pub fn missing_parameters(&self) -> impl Iterator<Item = Parameter> + '_ {
        self.missing
            .iter()
            .flatten()
            .map(|missing| missing.parameter)
    }
}

/// Why a score table was refused.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// Not valid TOML, or not the table format (wrong type, unknown or missing key).
    #[error("invalid score table: {0}")]
    Syntax(#[from] toml::de::Error),
    /// A header field is empty.
    #[error("table field `{0}` must not be empty")]
    EmptyField(&'static str),
    /// The table lists no parameters.
    #[error("table has no parameters")]
    NoParameters,
    /// `code` names no known parameter.
    #[error("unknown parameter `{0}`")]
    UnknownParameter(String),
    /// A parameter (or SpO2 scale) is listed twice.
    #[error("parameter {0} is listed twice")]
    DuplicateParameter(String),
    /// `scale` is not 1 or 2, or is given for a parameter other than SpO2.
    #[error("parameter {parameter} has scale {scale}: only spo2 has scales, 1 or 2")]
    InvalidScale {
        /// The parameter.
        parameter: String,
        /// The scale given.
        scale: u8,
    },
    /// A numeric parameter lacks `decimals` or `bands`, has `points`, or the reverse.
    #[error("parameter {parameter}: {reason}")]
    Shape {
        /// The parameter.
        parameter: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `decimals` is above the supported resolution.
    #[error("parameter {parameter} has decimals {decimals}, at most 6 are supported")]
    Decimals {
        /// The parameter.
        parameter: String,
        /// The resolution given.
        decimals: u8,
    },
    /// A band bound is not finite, too large, or finer than the resolution.
    #[error("bound {bound} of parameter {parameter} is not a value at its resolution")]
    Bound {
        /// The parameter.
        parameter: String,
        /// The bound as written.
        bound: f64,
    },
    /// A band's `min` is above its `max`.
    #[error("band {min} to {max} of parameter {parameter} is empty")]
    EmptyRange {
        /// The parameter.
        parameter: String,
        /// The band's min.
        min: String,
        /// The band's max.
        max: String,
    },
    /// A band's `oxygen` condition is neither `air` nor `oxygen`.
    #[error("unknown oxygen condition `{condition}` in bands of parameter {parameter}")]
    OxygenCondition {
        /// The parameter.
        parameter: String,
        /// The condition given.
        condition: String,
    },
    /// No band applies (for this oxygen state).
    #[error("parameter {0} has no bands")]
    NoRanges(String),
    /// The first band has a `min`, so low values are not covered.
    #[error("first band of parameter {0} must have no min (open below)")]
    OpenBelow(String),
    /// The last band has a `max`, so high values are not covered.
    #[error("last band of parameter {0} must have no max (open above)")]
    OpenAbove(String),
    /// A band other than the first has no `min`, or one other than the last has no `max`.
    #[error("band {index} of parameter {parameter} is open-ended but is not the first or last")]
    OpenMiddle {
        /// The parameter.
        parameter: String,
        /// Position of the band among those that apply (0-based).
        index: usize,
    },
    /// Values between two bands are not covered.
    #[error("bands of parameter {parameter} leave a gap between {after} and {before}")]
    Gap {
        /// The parameter.
        parameter: String,
        /// Last value covered before the gap.
        after: String,
        /// First value covered after the gap.
        before: String,
    },
    /// Two bands cover the same value.
    #[error("bands of parameter {parameter} overlap at {at}")]
    Overlap {
        /// The parameter.
        parameter: String,
        /// The first value covered twice.
        at: String,
    },
    /// Bands are not in ascending order.
    #[error("bands of parameter {parameter} are not in ascending order at {at}")]
    Unsorted {
        /// The parameter.
        parameter: String,
        /// The min of the band out of order.
        at: String,
    },
    /// A coded parameter lacks a level.
    #[error("parameter {parameter} has no points for level `{level}`")]
    MissingLevel {
        /// The parameter.
        parameter: String,
        /// The level without points.
        level: &'static str,
    },
    /// A coded parameter names an unknown level.
    #[error("parameter {parameter} has unknown level `{level}`")]
    UnknownLevel {
        /// The parameter.
        parameter: String,
        /// The key given.
        level: String,
    },
    /// A coded parameter gives a level twice (e.g. `A` and `alert`).
    #[error("parameter {parameter} gives level `{level}` twice")]
    DuplicateLevel {
        /// The parameter.
        parameter: String,
        /// The level.
        level: &'static str,
    },
    /// The table has no score bands.
    #[error("table has no bands")]
    NoBands,
    /// A score band has an empty name.
    #[error("band {0} has an empty name")]
    BandName(usize),
    /// A score band's `min_total` is above its `max_total`.
    #[error("band `{0}` has min_total above max_total")]
    BandRange(String),
    /// The last score band has conditions, so some scores would have no band.
    #[error("last band `{0}` has conditions: the last band must be a catch-all without any")]
    NoCatchAll(String),
}

impl ScoreTable {
    /// Loads and validates a table (format documented at the top of `src/score.rs`).
    pub fn from_toml(text: &str) -> Result<ScoreTable, TableError> {
        let raw: RawTable = toml::from_str(text)?;
        build(raw)
    }

    /// The built-in NEWS2 table (Royal College of Physicians, National Early Warning Score 2,
    /// 2017: chart 1 points, charts 2-4 bands), from `tables/news2.toml`.
    pub fn news2() -> ScoreTable {
        ScoreTable::from_toml(include_str!("../tables/news2.toml"))
            .expect("built-in NEWS2 table is valid (checked by tests)")
    }

    /// The built-in qSOFA table (Seymour et al., JAMA 2016;315(8):762-774), from
    /// `tables/qsofa.toml`.
    pub fn qsofa() -> ScoreTable {
        ScoreTable::from_toml(include_str!("../tables/qsofa.toml"))
            .expect("built-in qSOFA table is valid (checked by tests)")
    }

    /// The built-in MEWS table (Subbe et al., QJM 2001;94(10):521-526; band edges are a
    /// configurable local variant), from `tables/mews.toml`.
    pub fn mews() -> ScoreTable {
        ScoreTable::from_toml(include_str!("../tables/mews.toml"))
            .expect("built-in MEWS table is valid (checked by tests)")
    }

    /// All built-in tables: NEWS2, qSOFA, MEWS.
    pub fn builtin() -> Vec<ScoreTable> {
        vec![ScoreTable::news2(), ScoreTable::qsofa(), ScoreTable::mews()]
    }

    /// Stable identifier, e.g. `news2`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Table version, e.g. `rcp-2017.1`; record it with every computed score.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Human-readable name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Citation of the clinical source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The distinct parameters the table reads, in [`Parameter::ALL`] order.
    pub fn parameters(&self) -> Vec<Parameter> {
        Parameter::ALL
            .into_iter()
            .filter(|parameter| self.used[parameter.index()])
            .collect()
    }

    /// Score bands in evaluation order (worst first for the built-in tables).
    pub fn bands(&self) -> &[Band] {
        &self.bands
    }

    /// The highest total the table can give.
    pub fn max_total(&self) -> u16 {
        self.max_total
    }

    /// Scores `inputs` at `now`, counting only readings fresh under `freshness`.
    ///
    /// Missing, stale or unusable inputs score nothing and are listed in [`Score::missing`]; the
    /// total and band of such an incomplete score are a lower bound. Bands conditioned on oxygen
    /// are looked up as on air when the air/oxygen reading is missing or stale (NEWS2 Scale 2:
    /// again a lower bound). Does not allocate.
    pub fn evaluate(&self, inputs: &ScoreInputs, now: Timestamp, freshness: &Freshness) -> Score {
        let mut points = [None; Parameter::COUNT];
        let mut missing = [None; Parameter::COUNT];
        let oxygen = inputs
            .reading(Parameter::SupplementalOxygen)
            .filter(|reading| freshness.is_fresh(Parameter::SupplementalOxygen, reading.time, now))
            .and_then(|reading| match reading.value {
                Value::Oxygen(oxygen) => Some(oxygen),
                _ => None,
            })
            .unwrap_or(Oxygen::Air);
        let mut total: u16 = 0;
        let mut max_single: u8 = 0;
        for parameter in Parameter::ALL {
            let index = parameter.index();
            if !self.used[index] {
                continue;
            }
            let Some(reading) = inputs.reading(parameter) else {
                missing[index] = Some(Missing {
                    parameter,
                    last_seen: None,
                });
                continue;
            };
            if !freshness.is_fresh(parameter, reading.time, now) {
                missing[index] = Some(Missing {
                    parameter,
                    last_seen: Some(reading.time),
                });
                continue;
            }
            let rule = self.rule(parameter, inputs.spo2_scale);
            match score_value(rule, reading.value, oxygen) {
                Some((scored, rounded)) => {
                    total = total.saturating_add(u16::from(scored));
                    max_single = max_single.max(scored);
                    points[index] = Some(ParameterPoints {
                        parameter,
                        points: scored,
                        value: reading.value,
                        rounded,
                        time: reading.time,
                        source: reading.source,
                    });
                }
                None => {
                    missing[index] = Some(Missing {
                        parameter,
                        last_seen: None,
                    });
                }
            }
        }
        let band = self
            .bands
            .iter()
            .position(|band| band.matches(total, max_single))
            .unwrap_or(self.bands.len().saturating_sub(1));
        Score {
            time: now,
            total,
            points,
            missing,
            band,
        }
    }

    /// The rule scoring `parameter` for a patient on `scale`.
    fn rule(&self, parameter: Parameter, scale: Spo2Scale) -> Option<&Rule> {
        if parameter == Parameter::Spo2
            && scale == Spo2Scale::Scale2
            && let Some(rule) = &self.spo2_scale2
        {
            return Some(rule);
        }
        self.rules[parameter.index()].as_ref()
    }
}

/// Points for `value` under `rule` (and the rounded value for numbers); `None` if the value is
/// unusable. A parameter read only as a band condition (no rule) scores 0.
fn score_value(rule: Option<&Rule>, value: Value, oxygen: Oxygen) -> Option<(u8, Option<f64>)> {
    match (rule, value) {
        (Some(Rule::Numeric(rule)), Value::Number(number)) => {
            let units = round_units(number, rule.scale)?;
            let range = rule
                .ranges
                .iter()
                .find(|range| range.contains(units, oxygen))?;
            Some((range.points, Some(units as f64 / rule.scale)))
        }
        (Some(Rule::Consciousness(points)), Value::Consciousness(level)) => {
            Some((points[level as usize], None))
        }
        (Some(Rule::Oxygen(points)), Value::Oxygen(state)) => Some((points[state as usize], None)),
        (None, Value::Oxygen(_)) => Some((0, None)),
        _ => None,
    }
}

/// `value` rounded half away from zero to steps of `1 / scale`, as a count of steps; `None` if
/// not finite.
///
/// The tie is decided against the `f64` nearest to the exact decimal half-way point, `(2n + 1) /
/// (2 scale)`, which IEEE division gives correctly rounded. That is the same as rounding the
/// shortest decimal representation of `value`, so binary error in e.g. 36.05 or 4.35 does not
/// move the result.
fn round_units(value: f64, scale: f64) -> Option<i64> {
    if !value.is_finite() {
        return None;
    }
    let magnitude = value.abs();
    let scaled = magnitude * scale;
    let units = if scaled >= MAX_UNITS {
        scaled
    } else {
        let floor = scaled.floor();
        let half = (2.0 * floor + 1.0) / (2.0 * scale);
        if magnitude >= half {
            floor + 1.0
        } else {
            floor
        }
    };
    // `as` saturates, so absurd magnitudes land in the open-ended first or last band.
    let units = units as i64;
    Some(if value < 0.0 { -units } else { units })
}

/// How one parameter is scored.
#[derive(Debug, Clone, PartialEq)]
enum Rule {
    /// Numeric bands.
    Numeric(NumericRule),
    /// Points per ACVPU level, indexed like [`Consciousness::ALL`].
    Consciousness([u8; 5]),
    /// Points for air and for oxygen, indexed by [`Oxygen`] discriminant.
    Oxygen([u8; 2]),
}

impl Rule {
    fn max_points(&self) -> u8 {
        match self {
            Rule::Numeric(rule) => rule.ranges.iter().map(|range| range.points).max(),
            Rule::Consciousness(points) => points.iter().copied().max(),
            Rule::Oxygen(points) => points.iter().copied().max(),
        }
        .unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq)]
struct NumericRule {
    decimals: u8,
    /// 10^decimals.
    scale: f64,
    ranges: Vec<Range>,
}

/// One numeric band, bounds in resolution steps (`i64::MIN` / `i64::MAX` when open).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Range {
    min: i64,
    max: i64,
    oxygen: Option<Oxygen>,
    points: u8,
}

impl Range {
    fn contains(&self, units: i64, oxygen: Oxygen) -> bool {
        self.applies(Some(oxygen)) && self.min <= units && units <= self.max
    }

    fn applies(&self, oxygen: Option<Oxygen>) -> bool {
        match (self.oxygen, oxygen) {
            (None, _) => true,
            (Some(condition), Some(state)) => condition == state,
            (Some(_), None) => false,
        }
    }
}

// ---- Loading and validation ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    id: String,
    version: String,
    name: String,
    source: String,
    #[serde(default)]
    parameter: Vec<RawParameter>,
    #[serde(default)]
    band: Vec<RawBand>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParameter {
    code: String,
    scale: Option<u8>,
    decimals: Option<u8>,
    bands: Option<Vec<RawRange>>,
    points: Option<BTreeMap<String, u8>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    min: Option<f64>,
    max: Option<f64>,
    oxygen: Option<String>,
    points: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBand {
    name: String,
    rank: u8,
    monitoring: String,
    response: String,
    min_total: Option<u16>,
    max_total: Option<u16>,
    min_single: Option<u8>,
}

fn build(raw: RawTable) -> Result<ScoreTable, TableError> {
    for (field, value) in [
        ("id", &raw.id),
        ("version", &raw.version),
        ("name", &raw.name),
        ("source", &raw.source),
    ] {
        if value.trim().is_empty() {
            return Err(TableError::EmptyField(field));
        }
    }
    if raw.parameter.is_empty() {
        return Err(TableError::NoParameters);
    }

    let mut rules: [Option<Rule>; Parameter::COUNT] = Default::default();
    let mut spo2: Vec<(Option<u8>, Rule)> = Vec::new();
    let mut used = [false; Parameter::COUNT];
    for entry in raw.parameter {
        let parameter = Parameter::parse(entry.code.trim())
            .ok_or_else(|| TableError::UnknownParameter(entry.code.clone()))?;
        if let Some(scale) = entry.scale
            && (parameter != Parameter::Spo2 || !(1..=2).contains(&scale))
        {
            return Err(TableError::InvalidScale {
                parameter: parameter.code().to_owned(),
                scale,
            });
        }
        let scale = entry.scale;
        let label = match scale {
            Some(scale) => format!("{} scale {scale}", parameter.code()),
            None => parameter.code().to_owned(),
        };
        let rule = build_rule(parameter, &label, entry)?;
        if let Rule::Numeric(numeric) = &rule
            && numeric.ranges.iter().any(|range| range.oxygen.is_some())
        {
            used[Parameter::SupplementalOxygen.index()] = true;
        }
        used[parameter.index()] = true;
        if parameter == Parameter::Spo2 {
            spo2.push((scale, rule));
            continue;
        }
        if rules[parameter.index()].is_some() {
            return Err(TableError::DuplicateParameter(label));
        }
        rules[parameter.index()] = Some(rule);
    }

    // SpO2: one entry serves both scales; two must be scale 1 and scale 2.
    let mut spo2_scale2 = None;
    let mut spo2 = spo2.into_iter();
    match (spo2.next(), spo2.next(), spo2.next()) {
        (None, _, _) => {}
        (Some((_, only)), None, _) => rules[Parameter::Spo2.index()] = Some(only),
        (Some((first_scale, first)), Some((second_scale, second)), None) => {
            match (first_scale, second_scale) {
                (Some(1), Some(2)) => {
                    rules[Parameter::Spo2.index()] = Some(first);
                    spo2_scale2 = Some(second);
                }
                (Some(2), Some(1)) => {
                    rules[Parameter::Spo2.index()] = Some(second);
                    spo2_scale2 = Some(first);
                }
                (Some(scale), Some(_)) => {
                    return Err(TableError::DuplicateParameter(format!(
                        "spo2 scale {scale}"
                    )));
                }
                _ => {
                    return Err(TableError::DuplicateParameter(
                        "spo2 (two entries need scale = 1 and scale = 2)".to_owned(),
                    ));
                }
            }
        }
        (Some(_), Some(_), Some((scale, _))) => {
            let label = scale.map_or_else(|| "spo2".to_owned(), |s| format!("spo2 scale {s}"));
            return Err(TableError::DuplicateParameter(label));
        }
    }

    let mut max_total: u16 = 0;
    for parameter in Parameter::ALL {
        let mut max = rules[parameter.index()]
            .as_ref()
            .map_or(0, Rule::max_points);
        if parameter == Parameter::Spo2 {
            max = max.max(spo2_scale2.as_ref().map_or(0, Rule::max_points));
        }
        max_total = max_total.saturating_add(u16::from(max));
    }

    let bands = build_bands(raw.band)?;
    Ok(ScoreTable {
        id: raw.id,
        version: raw.version,
        name: raw.name,
        source: raw.source,
        rules,
        spo2_scale2,
        used,
        bands,
        max_total,
    })
}

fn build_rule(parameter: Parameter, label: &str, entry: RawParameter) -> Result<Rule, TableError> {
    let shape = |reason| TableError::Shape {
        parameter: label.to_owned(),
        reason,
    };
    if parameter.is_numeric() {
        if entry.points.is_some() {
            return Err(shape(
                "a numeric parameter has `decimals` and `bands`, not `points`",
            ));
        }
        let decimals = entry
            .decimals
            .ok_or_else(|| shape("a numeric parameter needs `decimals`"))?;
        let ranges = entry
            .bands
            .ok_or_else(|| shape("a numeric parameter needs `bands`"))?;
        build_numeric(label, decimals, ranges).map(Rule::Numeric)
    } else {
        if entry.decimals.is_some() || entry.bands.is_some() {
            return Err(shape(
                "a coded parameter has `points`, not `decimals` or `bands`",
            ));
        }
        let points = entry
            .points
            .ok_or_else(|| shape("a coded parameter needs `points`"))?;
        if parameter == Parameter::Consciousness {
            build_consciousness(label, &points).map(Rule::Consciousness)
        } else {
            build_oxygen(label, &points).map(Rule::Oxygen)
        }
    }
}

fn build_numeric(
    label: &str,
    decimals: u8,
    raw_ranges: Vec<RawRange>,
) -> Result<NumericRule, TableError> {
    if decimals > MAX_DECIMALS {
        return Err(TableError::Decimals {
            parameter: label.to_owned(),
            decimals,
        });
    }
    let scale = 10f64.powi(i32::from(decimals));
    let units = |bound: f64| -> Result<i64, TableError> {
        let error = || TableError::Bound {
            parameter: label.to_owned(),
            bound,
        };
        if !bound.is_finite() || bound.abs() * scale >= MAX_UNITS {
            return Err(error());
        }
        let units = round_units(bound, scale).ok_or_else(error)?;
        if units as f64 / scale != bound {
            return Err(error());
        }
        Ok(units)
    };
    let mut ranges = Vec::with_capacity(raw_ranges.len());
    for raw in raw_ranges {
        let min = raw.min.map(&units).transpose()?.unwrap_or(i64::MIN);
        let max = raw.max.map(&units).transpose()?.unwrap_or(i64::MAX);
        if min > max {
            return Err(TableError::EmptyRange {
                parameter: label.to_owned(),
                min: show(min, decimals),
                max: show(max, decimals),
            });
        }
        let oxygen = match raw.oxygen {
            None => None,
            Some(condition) => Some(match condition.trim() {
                "air" => Oxygen::Air,
                "oxygen" => Oxygen::Supplemental,
                _ => {
                    return Err(TableError::OxygenCondition {
                        parameter: label.to_owned(),
                        condition,
                    });
                }
            }),
        };
        ranges.push(Range {
            min,
            max,
            oxygen,
            points: raw.points,
        });
    }
    let rule = NumericRule {
        decimals,
        scale,
        ranges,
    };
    if rule.ranges.iter().any(|range| range.oxygen.is_some()) {
        for state in [Oxygen::Air, Oxygen::Supplemental] {
            let state_label = match state {
                Oxygen::Air => format!("{label} on air"),
                Oxygen::Supplemental => format!("{label} on oxygen"),
            };
            check_coverage(&state_label, &rule, Some(state))?;
        }
    } else {
        check_coverage(label, &rule, None)?;
    }
    Ok(rule)
}

/// Checks that the ranges applying in `oxygen` are ascending and cover every value exactly once.
fn check_coverage(
    label: &str,
    rule: &NumericRule,
    oxygen: Option<Oxygen>,
) -> Result<(), TableError> {
    let applying: Vec<&Range> = rule
        .ranges
        .iter()
        .filter(|range| range.applies(oxygen))
        .collect();
    let (Some(first), Some(last)) = (applying.first(), applying.last()) else {
        return Err(TableError::NoRanges(label.to_owned()));
    };
    if first.min != i64::MIN {
        return Err(TableError::OpenBelow(label.to_owned()));
    }
    for (index, pair) in applying.windows(2).enumerate() {
        let (previous, next) = (pair[0], pair[1]);
        if previous.max == i64::MAX {
            return Err(TableError::OpenMiddle {
                parameter: label.to_owned(),
                index,
            });
        }
        if next.min == i64::MIN {
            return Err(TableError::OpenMiddle {
                parameter: label.to_owned(),
                index: index + 1,
            });
        }
        let at = show(next.min, rule.decimals);
        if next.min < previous.min {
            return Err(TableError::Unsorted {
                parameter: label.to_owned(),
                at,
            });
        }
        if next.min <= previous.max {
            return Err(TableError::Overlap {
                parameter: label.to_owned(),
                at,
            });
        }
        if next.min > previous.max + 1 {
            return Err(TableError::Gap {
                parameter: label.to_owned(),
                after: show(previous.max, rule.decimals),
                before: at,
            });
        }
    }
    if last.max != i64::MAX {
        return Err(TableError::OpenAbove(label.to_owned()));
    }
    Ok(())
}

/// A bound in resolution steps as a decimal, for messages.
fn show(units: i64, decimals: u8) -> String {
    match units {
        i64::MIN => "-inf".to_owned(),
        i64::MAX => "inf".to_owned(),
        _ => {
            let value = units as f64 / 10f64.powi(i32::from(decimals));
            format!("{value:.prec$}", prec = usize::from(decimals))
        }
    }
}

fn build_consciousness(label: &str, raw: &BTreeMap<String, u8>) -> Result<[u8; 5], TableError> {
    let mut points: [Option<u8>; 5] = [None; 5];
    for (key, &value) in raw {
        let level = Consciousness::parse(key).ok_or_else(|| TableError::UnknownLevel {
            parameter: label.to_owned(),
            level: key.clone(),
        })?;
        if points[level as usize].replace(value).is_some() {
            return Err(TableError::DuplicateLevel {
                parameter: label.to_owned(),
                level: level.code(),
            });
        }
    }
    let mut table = [0; 5];
    for level in Consciousness::ALL {
        table[level as usize] = points[level as usize].ok_or(TableError::MissingLevel {
            parameter: label.to_owned(),
            level: level.code(),
        })?;
    }
    Ok(table)
}

fn build_oxygen(label: &str, raw: &BTreeMap<String, u8>) -> Result<[u8; 2], TableError> {
    let mut points: [Option<u8>; 2] = [None; 2];
    for (key, &value) in raw {
        let state = match key.trim() {
            "air" => Oxygen::Air,
            "oxygen" => Oxygen::Supplemental,
            _ => {
                return Err(TableError::UnknownLevel {
                    parameter: label.to_owned(),
                    level: key.clone(),
                });
            }
        };
        if points[state as usize].replace(value).is_some() {
            return Err(TableError::DuplicateLevel {
                parameter: label.to_owned(),
                level: state.code(),
            });
        }
    }
    let mut table = [0; 2];
    for state in [Oxygen::Air, Oxygen::Supplemental] {
        table[state as usize] = points[state as usize].ok_or(TableError::MissingLevel {
            parameter: label.to_owned(),
            level: state.code(),
        })?;
    }
    Ok(table)
}

fn build_bands(raw: Vec<RawBand>) -> Result<Vec<Band>, TableError> {
    let mut bands = Vec::with_capacity(raw.len());
    for (index, raw) in raw.into_iter().enumerate() {
        if raw.name.trim().is_empty() {
            return Err(TableError::BandName(index));
        }
        if let (Some(min), Some(max)) = (raw.min_total, raw.max_total)
            && min > max
        {
            return Err(TableError::BandRange(raw.name));
        }
        bands.push(Band {
            name: raw.name,
            rank: raw.rank,
            monitoring: raw.monitoring,
            response: raw.response,
            min_total: raw.min_total,
            max_total: raw.max_total,
            min_single: raw.min_single,
        });
    }
    match bands.last() {
        None => Err(TableError::NoBands),
        Some(last) if !last.is_catch_all() => Err(TableError::NoCatchAll(last.name.clone())),
        Some(_) => Ok(bands),
    }
}
