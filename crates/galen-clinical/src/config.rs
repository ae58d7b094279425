//! The clinical configuration: which score tables run continuously, the alarm rules, escalation
//! and silence policy. Loaded from TOML (the built-in default is `config/default.toml`) and
//! compiled into a flat list of [`Rule`]s the engine indexes by position.
//!
//! The configuration carries a `version`; every score and alarm transition records it, so a
//! stored history can always be tied to the settings that produced it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::inputs::{Freshness, Parameter};
use crate::score::ScoreTable;

/// Alarm priority (IEC 60601-1-8): high needs an immediate response, medium a prompt one, low
/// awareness. Ordered low < medium < high.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Awareness.
    Low,
    /// Prompt response.
    Medium,
    /// Immediate response.
    High,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 3] = [Priority::Low, Priority::Medium, Priority::High];

    /// `low`, `medium` or `high`.
    pub fn code(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
        }
    }

    /// Inverse of [`Priority::code`].
    pub fn parse(text: &str) -> Option<Priority> {
        Priority::ALL
            .into_iter()
            .find(|priority| priority.code() == text)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Which side of a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The condition is a value below the threshold.
    Below,
    /// The condition is a value above the threshold.
    Above,
}

impl Side {
    /// `low` or `high`, as used in rule ids.
    pub fn code(self) -> &'static str {
        match self {
            Side::Below => "low",
            Side::Above => "high",
        }
    }

    /// Whether `value` is past `threshold` on this side (strictly: a value equal to the limit is
    /// inside it).
    pub fn violates(self, value: f64, threshold: f64) -> bool {
        match self {
            Side::Below => value < threshold,
            Side::Above => value > threshold,
        }
    }

    /// `threshold` moved inwards by `hysteresis`: the limit a value must get back inside before a
    /// present condition ends.
    pub fn relaxed(self, threshold: f64, hysteresis: f64) -> f64 {
        match self {
            Side::Below => threshold + hysteresis,
            Side::Above => threshold - hysteresis,
        }
    }
}

/// One tier of a limit: past `threshold`, the condition has `priority`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// The limit.
    pub threshold: f64,
    /// Priority of a value past it.
    pub priority: Priority,
}

/// How a trend compares the recent mean with the earlier one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// Recent mean at least this many percent above the earlier one.
    RisePercent(f64),
    /// Recent mean at least this many percent below the earlier one.
    FallPercent(f64),
    /// Recent mean at least this much above (canonical unit).
    RiseBy(f64),
    /// Recent mean at least this much below.
    FallBy(f64),
}

impl Change {
    /// The size of the change from `earlier` to `recent` in this rule's terms (positive in the
    /// rule's direction), and the threshold.
    pub(crate) fn measure(self, earlier: f64, recent: f64) -> (f64, f64) {
        let percent = |difference: f64| {
            if earlier.abs() < f64::EPSILON {
                0.0
            } else {
                difference / earlier * 100.0
            }
        };
        match self {
            Change::RisePercent(threshold) => (percent(recent - earlier), threshold),
            Change::FallPercent(threshold) => (percent(earlier - recent), threshold),
            Change::RiseBy(threshold) => (recent - earlier, threshold),
            Change::FallBy(threshold) => (earlier - recent, threshold),
        }
    }
}

/// What a rule watches.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// A value past a limit.
    Limit {
        /// The parameter.
        parameter: Parameter,
        /// Which side.
        side: Side,
        /// Tiers, worst first (default; a patient override replaces them).
        tiers: Vec<Tier>,
        /// How far back inside the limit a value must come for the condition to end.
        hysteresis: f64,
    },
    /// A score's band.
    Score {
        /// Index of the table in [`ClinicalConfig::tables`].
        table: usize,
        /// Priority per band name; bands not listed are no condition.
        bands: BTreeMap<String, Priority>,
    },
    /// A trend or rate of change of a parameter's per-minute means.
    Trend {
        /// The parameter.
        parameter: Parameter,
        /// The change that is a condition.
        change: Change,
        /// Minutes between the two means compared.
        window_minutes: u32,
        /// Minutes each mean covers.
        average_minutes: u32,
        /// How far below the threshold the change must fall for the condition to end.
        hysteresis: f64,
        /// Priority of the condition.
        priority: Priority,
    },
    /// A device that sent data for the patient went silent (technical alarm).
    DeviceSilent {
        /// Seconds without data, at least (continuous monitors).
        after_seconds: u32,
        /// Expected intervals without data: a device that reports every 5 minutes (a home BP
        /// cuff) is silent after this many of its own intervals, not after `after_seconds`.
        /// The interval is learned per device from its arrivals. 0 uses `after_seconds` only.
        intervals: u32,
        /// Priority.
        priority: Priority,
    },
    /// A device flagged its values as absent: sensor off, lead off, NaN sentinel (technical).
    DataAbsent {
        /// Priority.
        priority: Priority,
    },
    /// A device reported a low battery charge (technical), per device.
    LowBattery {
        /// Tiers below which the charge (%) is a condition, worst first.
        tiers: Vec<Tier>,
        /// Percentage points the charge must rise back above a tier to end the condition.
        hysteresis: f64,
    },
}

/// A compiled alarm rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Stable id (`limit.spo2.low`, `score.news2`, `trend.heart_rate.rise`,
    /// `technical.device_silent`, `technical.data_absent`).
    pub id: String,
    /// What it watches.
    pub kind: RuleKind,
    /// Alarm condition delay: the condition must persist this long, re-confirmed by a reading,
    /// before an alarm is raised.
    pub delay_seconds: u32,
    /// The condition must be absent this long before it ends.
    pub clear_delay_seconds: u32,
    /// Whether the alarm stays signalled after its condition ends until acknowledged. Default:
    /// high-priority alarms latch, the others do not.
    pub latching: Option<bool>,
}

impl Rule {
    /// Whether an alarm of this rule at `priority` latches.
    pub fn latches(&self, priority: Priority) -> bool {
        self.latching.unwrap_or(priority == Priority::High)
    }

    /// Whether the rule is about equipment rather than the patient.
    pub fn is_technical(&self) -> bool {
        matches!(
            self.kind,
            RuleKind::DeviceSilent { .. }
                | RuleKind::DataAbsent { .. }
                | RuleKind::LowBattery { .. }
        )
    }
}

/// Who is notified, and when an unacknowledged alarm escalates.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    /// Roles notified at each escalation level; level 0 on raise.
    pub roles: Vec<String>,
    /// Seconds without acknowledgement before the next level, per priority (index by
    /// [`Priority`] order); `None` never escalates.
    pub after_seconds: [Option<u32>; 3],
}

impl Escalation {
    /// The role notified at `level` (the last role for every level past the end).
    pub fn role(&self, level: u8) -> &str {
        let index = usize::from(level).min(self.roles.len().saturating_sub(1));
        self.roles.get(index).map_or("", String::as_str)
    }

    /// Seconds before an unacknowledged alarm at `priority` escalates.
    pub fn after(&self, priority: Priority) -> Option<u32> {
        self.after_seconds[priority.index()]
    }
}

/// The whole clinical configuration.
#[derive(Debug, Clone)]
pub struct ClinicalConfig {
    /// Version recorded with every output.
    pub version: Arc<str>,
    /// How long readings count.
    pub freshness: Freshness,
    /// Tables scored after every input.
    pub tables: Vec<ScoreTable>,
    /// Alarm rules; engine state refers to them by index.
    pub rules: Vec<Rule>,
    /// Escalation policy.
    pub escalation: Escalation,
    /// Longest audio pause, seconds.
    pub silence_max_seconds: u32,
    /// Where the technical rules are in `rules` (looked up once, not per measurement).
    pub(crate) technical: TechnicalRules,
}

/// Indices of the technical rules in [`ClinicalConfig::rules`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TechnicalRules {
    pub(crate) device_silent: Option<usize>,
    pub(crate) data_absent: Option<usize>,
    pub(crate) low_battery: Option<usize>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not valid TOML or not the expected shape.
    #[error("invalid clinical configuration: {0}")]
    Syntax(String),
    /// Valid TOML whose content makes no sense.
    #[error("invalid clinical configuration: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    version: String,
    scores: Vec<String>,
    #[serde(default)]
    freshness: BTreeMap<String, u32>,
    #[serde(default)]
    limit: Vec<FileLimit>,
    #[serde(default)]
    score_trigger: Vec<FileScoreTrigger>,
    #[serde(default)]
    trend: Vec<FileTrend>,
    technical: FileTechnical,
    escalation: FileEscalation,
    silence: FileSilence,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimit {
    parameter: String,
    #[serde(default)]
    below: Vec<Tier>,
    #[serde(default)]
    above: Vec<Tier>,
    hysteresis: f64,
    #[serde(default)]
    delay_seconds: u32,
    #[serde(default)]
    clear_delay_seconds: u32,
    latching: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileScoreTrigger {
    table: String,
    bands: BTreeMap<String, Priority>,
    #[serde(default)]
    delay_seconds: u32,
    #[serde(default)]
    clear_delay_seconds: u32,
    latching: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTrend {
    id: String,
    parameter: String,
    rise_percent: Option<f64>,
    fall_percent: Option<f64>,
    rise_by: Option<f64>,
    fall_by: Option<f64>,
    window_minutes: u32,
    average_minutes: u32,
    #[serde(default)]
    hysteresis: f64,
    priority: Priority,
    #[serde(default)]
    delay_seconds: u32,
    #[serde(default)]
    clear_delay_seconds: u32,
    latching: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTechnical {
    silent_after_seconds: u32,
    #[serde(default)]
    silent_after_intervals: u32,
    silent_priority: Priority,
    data_absent_delay_seconds: u32,
    data_absent_priority: Priority,
    #[serde(default)]
    low_battery: Vec<Tier>,
    #[serde(default)]
    low_battery_hysteresis: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEscalation {
    roles: Vec<String>,
    #[serde(default)]
    after_seconds: BTreeMap<Priority, u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSilence {
    max_seconds: u32,
}

/// Largest trend window (minutes of history kept per trended parameter).
pub const MAX_TREND_MINUTES: u32 = 120;

fn parameter(code: &str, context: &str) -> Result<Parameter, ConfigError> {
    Parameter::parse(code)
        .ok_or_else(|| ConfigError::Invalid(format!("{context}: unknown parameter {code:?}")))
}

fn check_tiers(tiers: &mut [Tier], side: Side, context: &str) -> Result<(), ConfigError> {
    // Worst first: for "below" the lowest threshold, for "above" the highest.
    tiers.sort_by(|a, b| match side {
        Side::Below => a.threshold.total_cmp(&b.threshold),
        Side::Above => b.threshold.total_cmp(&a.threshold),
    });
    for pair in tiers.windows(2) {
        if pair[0].priority < pair[1].priority {
            return Err(ConfigError::Invalid(format!(
                "{context}: a tier further from normal must not have a lower priority"
            )));
        }
    }
    if tiers.iter().any(|tier| !tier.threshold.is_finite()) {
        return Err(ConfigError::Invalid(format!(
            "{context}: thresholds must be finite"
        )));
    }
    Ok(())
}

impl ClinicalConfig {
    /// The built-in configuration (`config/default.toml`) with the built-in score tables.
    pub fn builtin() -> ClinicalConfig {
        ClinicalConfig::from_toml(include_str!("../config/default.toml"), Vec::new())
            .expect("the built-in clinical configuration is valid")
    }

    /// Parses a configuration. `extra_tables` are hospital tables (see [`ScoreTable::from_toml`])
    /// that `scores` and score triggers may name besides the built-in ones.
    pub fn from_toml(
        text: &str,
        extra_tables: Vec<ScoreTable>,
    ) -> Result<ClinicalConfig, ConfigError> {
        let file: FileConfig = toml::from_str(text)
            .map_err(|error| ConfigError::Syntax(error.message().to_owned()))?;
        if file.version.trim().is_empty() {
            return Err(ConfigError::Invalid("version must not be empty".into()));
        }
        let mut available = ScoreTable::builtin();
        for table in extra_tables {
            available.retain(|known| known.id() != table.id());
            available.push(table);
        }
        let mut tables = Vec::new();
        for id in &file.scores {
            let table = available
                .iter()
                .find(|table| table.id() == id)
                .ok_or_else(|| {
                    ConfigError::Invalid(format!("scores: unknown score table {id:?}"))
                })?;
            if tables.iter().any(|known: &ScoreTable| known.id() == id) {
                return Err(ConfigError::Invalid(format!("scores: {id:?} listed twice")));
            }
            tables.push(table.clone());
        }

        let mut freshness = Freshness::default();
        for (code, seconds) in &file.freshness {
            let parameter = parameter(code, "freshness")?;
            freshness.max_age_seconds[parameter.index()] = *seconds;
        }

        let mut rules = Vec::new();
        for limit in file.limit {
            let parameter = parameter(&limit.parameter, "limit")?;
            if !parameter.is_numeric() {
                return Err(ConfigError::Invalid(format!(
                    "limit: {} is not numeric",
                    parameter.code()
                )));
            }
            if limit.hysteresis.is_nan() || limit.hysteresis < 0.0 {
                return Err(ConfigError::Invalid(format!(
                    "limit {}: hysteresis must be zero or more",
                    parameter.code()
                )));
            }
            for (side, mut tiers) in [(Side::Below, limit.below), (Side::Above, limit.above)] {
                if tiers.is_empty() {
                    continue;
                }
                let id = format!("limit.{}.{}", parameter.code(), side.code());
                check_tiers(&mut tiers, side, &id)?;
                rules.push(Rule {
                    id,
                    kind: RuleKind::Limit {
                        parameter,
                        side,
                        tiers,
                        hysteresis: limit.hysteresis,
                    },
                    delay_seconds: limit.delay_seconds,
                    clear_delay_seconds: limit.clear_delay_seconds,
                    latching: limit.latching,
                });
            }
        }
        for trigger in file.score_trigger {
            let table = tables
                .iter()
                .position(|table| table.id() == trigger.table)
                .ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "score_trigger: table {:?} is not in `scores`",
                        trigger.table
                    ))
                })?;
            for band in trigger.bands.keys() {
                if !tables[table]
                    .bands()
                    .iter()
                    .any(|known| &known.name == band)
                {
                    return Err(ConfigError::Invalid(format!(
                        "score_trigger {}: the table has no band {band:?}",
                        trigger.table
                    )));
                }
            }
            rules.push(Rule {
                id: format!("score.{}", trigger.table),
                kind: RuleKind::Score {
                    table,
                    bands: trigger.bands,
                },
                delay_seconds: trigger.delay_seconds,
                clear_delay_seconds: trigger.clear_delay_seconds,
                latching: trigger.latching,
            });
        }
        for trend in file.trend {
            let parameter = parameter(&trend.parameter, &trend.id)?;
            let changes: Vec<Change> = [
                trend.rise_percent.map(Change::RisePercent),
                trend.fall_percent.map(Change::FallPercent),
                trend.rise_by.map(Change::RiseBy),
                trend.fall_by.map(Change::FallBy),
            ]
            .into_iter()
            .flatten()
            .collect();
            let [change] = changes[..] else {
                return Err(ConfigError::Invalid(format!(
                    "{}: give exactly one of rise_percent, fall_percent, rise_by, fall_by",
                    trend.id
                )));
            };
            if trend.average_minutes == 0
                || trend.window_minutes == 0
                || trend.window_minutes + trend.average_minutes > MAX_TREND_MINUTES
            {
                return Err(ConfigError::Invalid(format!(
                    "{}: window and average must be at least 1 minute and together at most {MAX_TREND_MINUTES}",
                    trend.id
                )));
            }
            rules.push(Rule {
                id: trend.id,
                kind: RuleKind::Trend {
                    parameter,
                    change,
                    window_minutes: trend.window_minutes,
                    average_minutes: trend.average_minutes,
                    hysteresis: trend.hysteresis,
                    priority: trend.priority,
                },
                delay_seconds: trend.delay_seconds,
                clear_delay_seconds: trend.clear_delay_seconds,
                latching: trend.latching,
            });
        }
        if file.technical.silent_after_seconds == 0 {
            return Err(ConfigError::Invalid(
                "technical.silent_after_seconds must be positive".into(),
            ));
        }
        rules.push(Rule {
            id: "technical.device_silent".into(),
            kind: RuleKind::DeviceSilent {
                after_seconds: file.technical.silent_after_seconds,
                intervals: file.technical.silent_after_intervals,
                priority: file.technical.silent_priority,
            },
            delay_seconds: 0,
            clear_delay_seconds: 0,
            latching: Some(false),
        });
        rules.push(Rule {
            id: "technical.data_absent".into(),
            kind: RuleKind::DataAbsent {
                priority: file.technical.data_absent_priority,
            },
            delay_seconds: file.technical.data_absent_delay_seconds,
            clear_delay_seconds: 0,
            latching: Some(false),
        });
        if !file.technical.low_battery.is_empty() {
            let mut tiers = file.technical.low_battery;
            check_tiers(&mut tiers, Side::Below, "technical.low_battery")?;
            let hysteresis = file.technical.low_battery_hysteresis;
            if hysteresis.is_nan() || hysteresis < 0.0 {
                return Err(ConfigError::Invalid(
                    "technical.low_battery_hysteresis must be zero or more".into(),
                ));
            }
            rules.push(Rule {
                id: "technical.low_battery".into(),
                kind: RuleKind::LowBattery { tiers, hysteresis },
                delay_seconds: 0,
                clear_delay_seconds: 0,
                latching: Some(false),
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for rule in &rules {
            if !seen.insert(rule.id.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "rule {:?} is defined twice",
                    rule.id
                )));
            }
        }
        if rules.len() > usize::from(u16::MAX) {
            return Err(ConfigError::Invalid("too many rules".into()));
        }
        if file.escalation.roles.is_empty() {
            return Err(ConfigError::Invalid(
                "escalation.roles must name at least one role".into(),
            ));
        }
        let mut after_seconds = [None; 3];
        for (priority, seconds) in file.escalation.after_seconds {
            if seconds == 0 {
                return Err(ConfigError::Invalid(
                    "escalation.after_seconds must be positive".into(),
                ));
            }
            after_seconds[priority.index()] = Some(seconds);
        }
        let position =
            |wanted: fn(&RuleKind) -> bool| rules.iter().position(|rule| wanted(&rule.kind));
        let technical = TechnicalRules {
            device_silent: position(|kind| matches!(kind, RuleKind::DeviceSilent { .. })),
            data_absent: position(|kind| matches!(kind, RuleKind::DataAbsent { .. })),
            low_battery: position(|kind| matches!(kind, RuleKind::LowBattery { .. })),
        };
        Ok(ClinicalConfig {
            version: Arc::from(file.version.as_str()),
            freshness,
            tables,
            rules,
            escalation: Escalation {
                roles: file.escalation.roles,
                after_seconds,
            },
            silence_max_seconds: file.silence.max_seconds,
            technical,
        })
    }

    /// The index of the rule with `id`.
    pub fn rule_index(&self, id: &str) -> Option<usize> {
        self.rules.iter().position(|rule| rule.id == id)
    }

    /// Parameters that need per-minute history (those with trend rules).
    pub(crate) fn trended_parameters(&self) -> Vec<Parameter> {
        let mut parameters: Vec<Parameter> = self
            .rules
            .iter()
            .filter_map(|rule| match rule.kind {
                RuleKind::Trend { parameter, .. } => Some(parameter),
                _ => None,
            })
            .collect();
        parameters.sort();
        parameters.dedup();
        parameters
    }
}
