//! Staff entries as stored rows: what a nurse or clinician entered (ACVPU, oxygen, SpO2 scale,
//! limit overrides) or did (acknowledge, silence, close an alarm). They are stored before the
//! engine applies them, so a replay sees exactly the same inputs.

use galen_clinical::{AlarmId, Consciousness, EntryKind, Oxygen, Priority, Spo2Scale, Tier};
use galen_model::{PatientId, Timestamp};
use galen_store::ClinicalEntry;
use serde_json::{Value, json};

use super::encode::{BODY_VERSION, tiers_json};

/// An entry's content, as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredEntry {
    pub(crate) kind: EntryKind,
    pub(crate) reason: Option<String>,
}

impl StoredEntry {
    pub(crate) fn into_engine(
        self,
        id: i64,
        patient: PatientId,
        time: Timestamp,
        author: String,
    ) -> galen_clinical::Entry {
        galen_clinical::Entry {
            id,
            patient,
            time,
            author,
            reason: self.reason,
            kind: self.kind,
        }
    }

    /// The stored kind code and body.
    pub(crate) fn encode(&self) -> (&'static str, String) {
        let (kind, mut body) = match &self.kind {
            EntryKind::Consciousness(level) => ("consciousness", json!({ "level": level.code() })),
            EntryKind::Oxygen(oxygen) => ("oxygen", json!({ "oxygen": oxygen.code() })),
            EntryKind::Spo2Scale(scale) => ("spo2_scale", json!({ "scale": scale.number() })),
            EntryKind::LimitOverride {
                rule,
                tiers,
                expires,
            } => (
                "limit_override",
                json!({ "rule": rule, "tiers": tiers_json(tiers), "expires": expires.map(Timestamp::to_rfc3339) }),
            ),
            EntryKind::ClearOverride { rule } => ("clear_override", json!({ "rule": rule })),
            EntryKind::Acknowledge(alarm) => ("acknowledge", json!({ "alarm": alarm.to_string() })),
            EntryKind::Silence { alarm, seconds } => (
                "silence",
                json!({ "alarm": alarm.to_string(), "seconds": seconds }),
            ),
            EntryKind::Resolve(alarm) => ("resolve", json!({ "alarm": alarm.to_string() })),
        };
        body["v"] = json!(BODY_VERSION);
        body["reason"] = json!(self.reason);
        (kind, body.to_string())
    }
}

fn text<'a>(body: &'a Value, name: &str) -> Result<&'a str, String> {
    body.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("entry body lacks {name}"))
}

fn alarm(body: &Value) -> Result<AlarmId, String> {
    AlarmId::parse(text(body, "alarm")?).ok_or_else(|| "bad alarm id".to_owned())
}

/// Parses tiers from `[{"threshold": 86, "priority": "medium"}]`.
pub(crate) fn parse_tiers(value: &Value) -> Result<Vec<Tier>, String> {
    let Some(items) = value.as_array() else {
        return Err("tiers must be an array".into());
    };
    items
        .iter()
        .map(|item| {
            let threshold = item
                .get("threshold")
                .and_then(Value::as_f64)
                .ok_or("each tier needs a numeric threshold")?;
            let priority = item
                .get("priority")
                .and_then(Value::as_str)
                .and_then(Priority::parse)
                .ok_or("each tier needs a priority: low, medium or high")?;
            Ok(Tier {
                threshold,
                priority,
            })
        })
        .collect()
}

/// Reads a stored entry.
pub(crate) fn decode(record: &ClinicalEntry) -> Result<StoredEntry, String> {
    let body: Value = serde_json::from_str(&record.body).map_err(|error| error.to_string())?;
    let reason = body
        .get("reason")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let kind = match record.kind.as_str() {
        "consciousness" => EntryKind::Consciousness(
            Consciousness::parse(text(&body, "level")?).ok_or("bad level")?,
        ),
        "oxygen" => EntryKind::Oxygen(Oxygen::parse(text(&body, "oxygen")?).ok_or("bad oxygen")?),
        "spo2_scale" => EntryKind::Spo2Scale(match body.get("scale").and_then(Value::as_u64) {
            Some(2) => Spo2Scale::Scale2,
            Some(1) => Spo2Scale::Scale1,
            _ => return Err("bad scale".into()),
        }),
        "limit_override" => EntryKind::LimitOverride {
            rule: text(&body, "rule")?.to_owned(),
            tiers: parse_tiers(body.get("tiers").unwrap_or(&Value::Null))?,
            expires: match body.get("expires").and_then(Value::as_str) {
                Some(text) => {
                    Some(Timestamp::parse_rfc3339(text).map_err(|error| error.to_string())?)
                }
                None => None,
            },
        },
        "clear_override" => EntryKind::ClearOverride {
            rule: text(&body, "rule")?.to_owned(),
        },
        "acknowledge" => EntryKind::Acknowledge(alarm(&body)?),
        "silence" => EntryKind::Silence {
            alarm: alarm(&body)?,
            seconds: body
                .get("seconds")
                .and_then(Value::as_u64)
                .and_then(|seconds| u32::try_from(seconds).ok())
                .ok_or("bad seconds")?,
        },
        "resolve" => EntryKind::Resolve(alarm(&body)?),
        other => return Err(format!("unknown entry kind {other:?}")),
    };
    Ok(StoredEntry { kind, reason })
}
