//! Wire and row shapes of the clinical engine's values: JSON for the API, the live stream and
//! webhooks, and the bodies the store keeps. Each body carries `"v": 1`.

use galen_clinical::{
    AlarmEvent, ClinicalConfig, LimitOverride, Parameter, RuleKind, Score, ScoreChange, Source,
    Tier, Value as ClinicalValue,
};
use galen_model::{PatientId, Timestamp, VitalSign};
use galen_store::{AlarmRecord, ScoreRecord};
use serde_json::{Value, json};

/// Version of the stored bodies.
pub(crate) const BODY_VERSION: u32 = 1;

pub(crate) fn source_json(source: &Source) -> Value {
    match source {
        Source::Measurement(reference) => json!({
            "device": reference.device.0,
            "code": reference.vital.alias(),
            "time": reference.time.to_rfc3339(),
        }),
        Source::Entry(id) => json!({ "entry": id }),
    }
}

pub(crate) fn value_json(value: &ClinicalValue) -> Value {
    match value {
        ClinicalValue::Number(number) => json!(number),
        ClinicalValue::Consciousness(level) => json!(level.code()),
        ClinicalValue::Oxygen(oxygen) => json!(oxygen.code()),
    }
}

/// Display unit of a parameter (UCUM), if numeric.
pub(crate) fn parameter_unit(parameter: Parameter) -> Option<&'static str> {
    let vital = match parameter {
        Parameter::RespiratoryRate => VitalSign::RespiratoryRate,
        Parameter::Spo2 => VitalSign::Spo2,
        Parameter::SystolicBp => VitalSign::SystolicBp,
        Parameter::HeartRate => VitalSign::HeartRate,
        Parameter::Temperature => VitalSign::BodyTemperature,
        Parameter::SupplementalOxygen | Parameter::Consciousness => return None,
    };
    Some(vital.canonical_unit().ucum())
}

/// The unit as people write it in messages (`mmHg`, `°C`), not the UCUM code the data carries.
fn display_unit(parameter: Parameter) -> &'static str {
    match parameter_unit(parameter) {
        Some("mm[Hg]") => "mmHg",
        Some("Cel") => "°C",
        Some(unit) => unit,
        None => "",
    }
}

fn parameter_label(parameter: Parameter) -> &'static str {
    match parameter {
        Parameter::RespiratoryRate => "respiratory rate",
        Parameter::Spo2 => "SpO2",
        Parameter::SupplementalOxygen => "oxygen",
        Parameter::SystolicBp => "systolic BP",
        Parameter::HeartRate => "heart rate",
        Parameter::Consciousness => "consciousness",
        Parameter::Temperature => "temperature",
    }
}

/// Readable number: integers without decimals, others with one.
fn number(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// The parameter a rule watches, if any.
pub(crate) fn rule_parameter(kind: &RuleKind) -> Option<Parameter> {
    match kind {
        RuleKind::Limit { parameter, .. } | RuleKind::Trend { parameter, .. } => Some(*parameter),
        _ => None,
    }
}

/// A one-line description of an alarm for people (no patient identifiers).
pub(crate) fn alarm_message(config: &ClinicalConfig, event: &AlarmEvent) -> String {
    describe(config, event.rule, event.value, event.threshold)
}

/// A one-line description of rule `rule`'s condition at `value` against `threshold`.
pub(crate) fn describe(
    config: &ClinicalConfig,
    rule: usize,
    value: Option<f64>,
    threshold: Option<f64>,
) -> String {
    let Some(rule) = config.rules.get(rule) else {
        return String::from("alarm");
    };
    match &rule.kind {
        RuleKind::Limit {
            parameter, side, ..
        } => {
            let unit = display_unit(*parameter);
            let direction = match side {
                galen_clinical::Side::Below => "low",
                galen_clinical::Side::Above => "high",
            };
            // "SpO2 low: 84 % (limit 85)". The value is the newest reading, which with
            // hysteresis may already be back at the limit while the condition persists.
            match (value, threshold) {
                (Some(value), Some(threshold)) => format!(
                    "{} {direction}: {} {unit} (limit {})",
                    parameter_label(*parameter),
                    number(value),
                    number(threshold)
                ),
                _ => format!("{} {direction}", parameter_label(*parameter)),
            }
        }
        RuleKind::Score { table, .. } => {
            let name = config
                .tables
                .get(*table)
                .map_or("score", |table| table.name());
            match value {
                Some(total) => format!("{name} {}", number(total)),
                None => name.to_owned(),
            }
        }
        RuleKind::Trend {
            parameter,
            change,
            window_minutes,
            ..
        } => {
            let what = match change {
                galen_clinical::Change::RisePercent(_) | galen_clinical::Change::RiseBy(_) => {
                    "rise"
                }
                _ => "fall",
            };
            let amount = match (change, value) {
                (
                    galen_clinical::Change::RisePercent(_) | galen_clinical::Change::FallPercent(_),
                    Some(size),
                ) => format!(" of {}%", number(size)),
                (_, Some(size)) => format!(" of {} {}", number(size), display_unit(*parameter)),
                _ => String::new(),
            };
            format!(
                "{} {what}{amount} over {window_minutes} min",
                parameter_label(*parameter)
            )
        }
        RuleKind::DeviceSilent { after_seconds, .. } => {
            format!("no data from the device for {after_seconds} s or more")
        }
        RuleKind::DataAbsent { .. } => {
            String::from("the device reports no valid value (sensor off or disconnected?)")
        }
        RuleKind::LowBattery { .. } => match (value, threshold) {
            (Some(value), Some(threshold)) => format!(
                "device battery low: {} % (limit {})",
                number(value),
                number(threshold)
            ),
            _ => String::from("device battery low"),
        },
    }
}

pub(crate) fn alarm_json(config: &ClinicalConfig, event: &AlarmEvent) -> Value {
    let rule = config.rules.get(event.rule);
    json!({
        "v": BODY_VERSION,
        "alarm": event.alarm.to_string(),
        "patient": event.alarm.patient.0,
        "rule": rule.map(|rule| rule.id.as_str()),
        "kind": if rule.is_some_and(|rule| rule.is_technical()) { "technical" } else { "physiological" },
        "parameter": rule.and_then(|rule| rule_parameter(&rule.kind)).map(Parameter::code),
        "device": event.device.map(|device| device.0),
        "transition": event.transition.code(),
        "time": event.time.to_rfc3339(),
        "raised_at": event.raised_at.to_rfc3339(),
        "priority": event.priority.code(),
        "state": event.state.code(),
        "actor": event.actor,
        "reason": event.reason,
        "escalation_level": event.escalation_level,
        "role": event.role,
        "silenced_until": event.silenced_until.map(Timestamp::to_rfc3339),
        "value": event.value,
        "threshold": event.threshold,
        "message": alarm_message(config, event),
        "evidence": event.evidence.iter().map(source_json).collect::<Vec<_>>(),
        "config_version": &*event.config_version,
    })
}

pub(crate) fn alarm_record(
    config: &ClinicalConfig,
    event: &AlarmEvent,
    body: String,
) -> AlarmRecord {
    AlarmRecord {
        seq: 0,
        alarm: event.alarm.to_string(),
        patient: event.alarm.patient,
        time: event.time,
        rule: config
            .rules
            .get(event.rule)
            .map_or_else(String::new, |rule| rule.id.clone()),
        transition: event.transition.code().to_owned(),
        priority: event.priority.code().to_owned(),
        state: event.state.code().to_owned(),
        body,
    }
}

pub(crate) fn score_json(
    config: &ClinicalConfig,
    table_index: usize,
    score: &Score,
    patient: PatientId,
) -> Value {
    let Some(table) = config.tables.get(table_index) else {
        return Value::Null;
    };
    let band = &table.bands()[score.band.min(table.bands().len().saturating_sub(1))];
    let points: Vec<Value> = score
        .points
        .iter()
        .flatten()
        .map(|points| {
            json!({
                "parameter": points.parameter.code(),
                "points": points.points,
                "value": value_json(&points.value),
                "rounded": points.rounded,
                "unit": parameter_unit(points.parameter),
                "time": points.time.to_rfc3339(),
                "source": source_json(&points.source),
            })
        })
        .collect();
    let missing: Vec<Value> = score
        .missing
        .iter()
        .flatten()
        .map(|missing| {
            json!({
                "parameter": missing.parameter.code(),
                "last_seen": missing.last_seen.map(Timestamp::to_rfc3339),
                "reason": if missing.last_seen.is_some() { "stale" } else { "never_recorded" },
            })
        })
        .collect();
    json!({
        "v": BODY_VERSION,
        "patient": patient.0,
        "table": table.id(),
        "table_name": table.name(),
        "table_version": table.version(),
        "config_version": &*config.version,
        "time": score.time.to_rfc3339(),
        "total": score.total,
        "max_total": table.max_total(),
        "complete": score.complete(),
        "band": band.name,
        "band_rank": band.rank,
        "monitoring": band.monitoring,
        "response": band.response,
        "points": points,
        "missing": missing,
    })
}

pub(crate) fn score_record(
    config: &ClinicalConfig,
    change: &ScoreChange,
    body: String,
) -> ScoreRecord {
    let table = &config.tables[change.table];
    let band = &table.bands()[change.score.band.min(table.bands().len().saturating_sub(1))];
    ScoreRecord {
        patient: change.patient,
        time: change.score.time,
        table: table.id().to_owned(),
        total: i64::from(change.score.total),
        band: band.name.clone(),
        complete: change.score.complete(),
        body,
    }
}

pub(crate) fn tiers_json(tiers: &[Tier]) -> Value {
    Value::Array(
        tiers
            .iter()
            .map(|tier| json!({ "threshold": tier.threshold, "priority": tier.priority.code() }))
            .collect(),
    )
}

pub(crate) fn override_json(config: &ClinicalConfig, rule: usize, item: &LimitOverride) -> Value {
    json!({
        "rule": config.rules.get(rule).map(|rule| rule.id.as_str()),
        "tiers": tiers_json(&item.tiers),
        "off": item.tiers.is_empty(),
        "expires": item.expires.map(Timestamp::to_rfc3339),
        "author": item.author,
        "reason": item.reason,
        "set_at": item.set_at.to_rfc3339(),
    })
}
