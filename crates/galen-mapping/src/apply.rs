//! Applying a template to one payload: device first (one per payload), then every
//! `[[measurement]]` block in order, each once or once per for_each element. A problem with one
//! item is that item's error; only a payload that cannot be read at all (no device, a for_each
//! over something that is not an array, too many items) fails as a whole.

use std::borrow::Cow;
use std::fmt;

use galen_model::Timestamp;
use serde_json::Value;

use crate::excerpt;
use crate::path::{ExpandError, Miss, Path, Step};
use crate::template::{
    MeasurementSpec, Part, Template, TextSource, TextSpec, TimeFormat, WhenMissing,
};

/// Most items (measurements, errors and skips together) one payload may produce. A hostile or
/// broken gateway sending a million-element array gets its payload refused, not a million rows.
pub const MAX_ITEMS: usize = 10_000;
/// Longest device serial, code, unit or id taken from a payload, in characters.
pub const MAX_TEXT_CHARS: usize = 256;

/// What the receiver knows about a payload besides its body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Context<'a> {
    /// The device id the transport vouches for (the MQTT topic's device level), if any. Used when
    /// the template has no `[device]`; when it has one, the two must agree.
    pub topic_device: Option<&'a str>,
}

/// One measurement read from a payload: still the device's own words (code and unit as strings,
/// value before unit conversion). The server's normaliser validates it later.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The device serial.
    pub device: String,
    /// The code (alias, LOINC or MDC), after the template's `map`.
    pub code: String,
    /// The value after `scale` and `offset`; NaN when the payload said "no value" (a NaN string or
    /// an `absent` sentinel), which the normaliser records as `data_absent`.
    pub value: f64,
    /// The unit, after the template's `map`.
    pub unit: String,
    /// When it was measured.
    pub time: Timestamp,
    /// The sender's id of this measurement, used to recognise retries.
    pub id: Option<String>,
}

/// A problem mapping a payload or one of its items. `Display` is one sentence such as
/// `measurement[0].value at $.readings[2].v: not a number: "abc"`; it quotes at most about 60
/// characters of payload text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct MappingError {
    /// The template field, e.g. `measurement[0].value` or `device`.
    pub field: String,
    /// The concrete payload path looked at, e.g. `$.readings[2].v`, when there is one.
    pub path: Option<String>,
    /// What was wrong: `missing`, `not a number: "abc"`, `value "bp" has no entry in map`, …
    pub problem: String,
}

impl fmt::Display for MappingError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(formatter, "{} at {}: {}", self.field, path, self.problem),
            None => write!(formatter, "{}: {}", self.field, self.problem),
        }
    }
}

/// An item left out because its value was absent or null and the template says
/// `when_missing = "skip"`. Skips are reported, never silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// The template field, e.g. `measurement[1].value`.
    pub field: String,
    /// The concrete payload path, e.g. `$.readings[3].v`.
    pub path: Option<String>,
    /// `missing` or `null` (with detail when a container on the way had the wrong type).
    pub problem: String,
}

impl fmt::Display for Skip {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(
                formatter,
                "{} at {} skipped: {}",
                self.field, path, self.problem
            ),
            None => write!(formatter, "{} skipped: {}", self.field, self.problem),
        }
    }
}

/// What one payload produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping {
    /// One entry per item, in template then document order: the measurement, or why that item
    /// could not be read.
    pub items: Vec<Result<Mapped, MappingError>>,
    /// Items skipped under `when_missing = "skip"`.
    pub skipped: Vec<Skip>,
}

impl Mapping {
    /// The measurements that were read.
    pub fn mapped(&self) -> impl Iterator<Item = &Mapped> {
        self.items.iter().filter_map(|item| item.as_ref().ok())
    }

    /// The items that failed.
    pub fn errors(&self) -> impl Iterator<Item = &MappingError> {
        self.items.iter().filter_map(|item| item.as_ref().err())
    }
}

/// A problem found while reading one field: the concrete path (if any) and what was wrong.
#[derive(Debug)]
struct Failure {
    path: Option<String>,
    problem: String,
}

/// Where `@` stands: the element and its steps from the root.
#[derive(Debug, Clone, Copy)]
struct Current<'v, 's, 't> {
    value: &'v Value,
    steps: &'s [Step<'t>],
}

/// The payload being read and the for_each element, if any.
#[derive(Debug, Clone, Copy)]
struct Scope<'v, 's, 't> {
    root: &'v Value,
    current: Option<Current<'v, 's, 't>>,
}

impl<'v> Scope<'v, '_, '_> {
    fn lookup(&self, path: &Path) -> Result<&'v Value, Failure> {
        let current = self.current.map(|current| current.value);
        let steps = self.current.map(|current| current.steps);
        match path.lookup(self.root, current) {
            Ok(Value::Null) => Err(Failure {
                path: Some(path.describe(steps, None)),
                problem: "null".to_owned(),
            }),
            Ok(found) => Ok(found),
            Err(Miss::Absent) => Err(Failure {
                path: Some(path.describe(steps, None)),
                problem: "missing".to_owned(),
            }),
            Err(Miss::WrongType {
                depth,
                found,
                wanted,
            }) => Err(Failure {
                path: Some(path.describe(steps, None)),
                problem: format!(
                    "missing: {} is {found}, not {wanted}",
                    path.describe(steps, Some(depth))
                ),
            }),
        }
    }

    fn describe(&self, path: &Path) -> String {
        path.describe(self.current.map(|current| current.steps), None)
    }
}

enum Outcome {
    Mapped(Mapped),
    Failed(MappingError),
    Skipped(Skip),
}

impl Template {
    /// Reads every measurement of `payload`. Does not check [`Template::matches`]: the caller
    /// selected this template. `Err` means the whole payload is unusable (no device, the device
    /// disagrees with the topic, a for_each target is not an array, more than [`MAX_ITEMS`]
    /// items); otherwise each item succeeds or fails on its own.
    pub fn apply(&self, payload: &Value, context: &Context<'_>) -> Result<Mapping, MappingError> {
        let device = self.device(payload, context)?;
        let mut mapping = Mapping::default();
        for (index, spec) in self.measurements.iter().enumerate() {
            let budget = MAX_ITEMS.saturating_sub(mapping.items.len() + mapping.skipped.len());
            let too_many = |path: Option<String>| MappingError {
                field: format!("measurement[{index}]"),
                path,
                problem: format!("the payload has more than {MAX_ITEMS} items"),
            };
            let Some(for_each) = &spec.for_each else {
                if budget == 0 {
                    return Err(too_many(None));
                }
                let scope = Scope {
                    root: payload,
                    current: None,
                };
                record(&mut mapping, map_item(spec, index, scope, &device));
                continue;
            };
            let for_each_field = || format!("measurement[{index}].for_each");
            match for_each.expand(payload, budget) {
                Ok(elements) => {
                    for element in &elements {
                        let scope = Scope {
                            root: payload,
                            current: Some(Current {
                                value: element.value,
                                steps: &element.steps,
                            }),
                        };
                        record(&mut mapping, map_item(spec, index, scope, &device));
                    }
                }
                Err(ExpandError::Missing { concrete, null }) => {
                    let problem = if null { "null" } else { "missing" }.to_owned();
                    if spec.when_missing == WhenMissing::Skip && budget > 0 {
                        mapping.skipped.push(Skip {
                            field: for_each_field(),
                            path: Some(concrete),
                            problem,
                        });
                    } else {
                        return Err(MappingError {
                            field: for_each_field(),
                            path: Some(concrete),
                            problem,
                        });
                    }
                }
                Err(ExpandError::WrongType {
                    concrete,
                    found,
                    wanted,
                }) => {
                    return Err(MappingError {
                        field: for_each_field(),
                        path: Some(concrete),
                        problem: format!("{found}, not {wanted}"),
                    });
                }
                Err(ExpandError::TooMany) => return Err(too_many(Some(for_each.to_string()))),
            }
        }
        Ok(mapping)
    }

    /// The payload's device: from `[device]`, else from the context; both must agree.
    fn device(&self, payload: &Value, context: &Context<'_>) -> Result<String, MappingError> {
        let scope = Scope {
            root: payload,
            current: None,
        };
        let device_error = |path: Option<String>, problem: String| MappingError {
            field: "device".to_owned(),
            path,
            problem,
        };
        let named = match &self.device {
            Some(spec) => Some(
                text(spec, scope).map_err(|failure| device_error(failure.path, failure.problem))?,
            ),
            None => None,
        };
        let device_path = match self.device.as_ref().map(|spec| &spec.source) {
            Some(TextSource::Path(path)) => Some(scope.describe(path)),
            _ => None,
        };
        let device = match (named, context.topic_device) {
            (Some(named), Some(topic)) if named != topic => {
                return Err(device_error(
                    device_path,
                    format!(
                        "the payload names another device than the topic ({})",
                        excerpt(topic)
                    ),
                ));
            }
            (Some(named), _) => named,
            (None, Some(topic)) => {
                if topic.chars().nth(MAX_TEXT_CHARS).is_some() {
                    return Err(device_error(
                        None,
                        format!("the topic's device is longer than {MAX_TEXT_CHARS} characters"),
                    ));
                }
                topic.to_owned()
            }
            (None, None) => {
                return Err(device_error(
                    None,
                    "missing: the template has no [device] and the topic names none".to_owned(),
                ));
            }
        };
        if device.trim().is_empty() {
            return Err(device_error(device_path, "empty".to_owned()));
        }
        Ok(device)
    }
}

fn record(mapping: &mut Mapping, outcome: Outcome) {
    match outcome {
        Outcome::Mapped(mapped) => mapping.items.push(Ok(mapped)),
        Outcome::Failed(error) => mapping.items.push(Err(error)),
        Outcome::Skipped(skip) => mapping.skipped.push(skip),
    }
}

/// One item. The value is read first, so that a missing value is skipped (when the template says
/// so) whatever else is wrong; then the fields in template order, the first problem reported.
fn map_item(
    spec: &MeasurementSpec,
    index: usize,
    scope: Scope<'_, '_, '_>,
    device: &str,
) -> Outcome {
    let fail = |field: &str, failure: Failure| {
        Outcome::Failed(MappingError {
            field: format!("measurement[{index}].{field}"),
            path: failure.path,
            problem: failure.problem,
        })
    };
    let raw = match scope.lookup(&spec.value.path) {
        Ok(raw) => raw,
        Err(failure) => {
            if spec.when_missing == WhenMissing::Skip {
                return Outcome::Skipped(Skip {
                    field: format!("measurement[{index}].value"),
                    path: failure.path,
                    problem: failure.problem,
                });
            }
            return fail("value", failure);
        }
    };
    let code = match text(&spec.code, scope) {
        Ok(code) => code,
        Err(failure) => return fail("code", failure),
    };
    let value = match number(raw).and_then(|raw| {
        if spec.value.absent.contains(&raw) {
            return Ok(f64::NAN);
        }
        let scaled = match spec.value.divisor {
            Some(divisor) => raw / divisor,
            None => raw * spec.value.scale,
        };
        let value = scaled + spec.value.offset;
        if raw.is_finite() && !value.is_finite() {
            return Err("out of range after scale and offset".to_owned());
        }
        Ok(value)
    }) {
        Ok(value) => value,
        Err(problem) => {
            let path = Some(scope.describe(&spec.value.path));
            return fail("value", Failure { path, problem });
        }
    };
    let unit = match text(&spec.unit, scope) {
        Ok(unit) => unit,
        Err(failure) => return fail("unit", failure),
    };
    let time = match scope.lookup(&spec.time.path).and_then(|raw| {
        time(raw, spec.time.format).map_err(|problem| Failure {
            path: Some(scope.describe(&spec.time.path)),
            problem,
        })
    }) {
        Ok(time) => time,
        Err(failure) => return fail("time", failure),
    };
    let id = match spec.id.as_ref().map(|id| text(id, scope)).transpose() {
        Ok(id) => id,
        Err(failure) => return fail("id", failure),
    };
    Outcome::Mapped(Mapped {
        device: device.to_owned(),
        code,
        value,
        unit,
        time,
        id,
    })
}

/// What kind of JSON `value` is, for a message that must not repeat the value itself (a payload
/// may carry a patient's name in the wrong place, and messages reach answers and dead letters).
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A scalar as text: strings as they are, numbers and booleans as JSON writes them.
fn scalar_text(value: &Value) -> Result<Cow<'_, str>, String> {
    let text = match value {
        Value::String(text) => Cow::Borrowed(text.as_str()),
        Value::Number(number) => Cow::Owned(number.to_string()),
        Value::Bool(flag) => Cow::Owned(flag.to_string()),
        Value::Null => return Err("null".to_owned()),
        Value::Array(_) | Value::Object(_) => {
            return Err(format!("not a string or number but {}", kind_of(value)));
        }
    };
    if text.chars().nth(MAX_TEXT_CHARS).is_some() {
        return Err(format!("longer than {MAX_TEXT_CHARS} characters"));
    }
    Ok(text)
}

/// A text field's value, after `map`.
fn text(spec: &TextSpec, scope: Scope<'_, '_, '_>) -> Result<String, Failure> {
    let (raw, path) = match &spec.source {
        TextSource::Constant(constant) => return Ok(constant.clone()),
        TextSource::Path(path) => {
            let found = scope.lookup(path)?;
            let text = scalar_text(found).map_err(|problem| Failure {
                path: Some(scope.describe(path)),
                problem,
            })?;
            (text.into_owned(), Some(scope.describe(path)))
        }
        TextSource::Format(parts) => (interpolate(parts, scope)?, None),
    };
    let Some(map) = &spec.map else {
        return Ok(raw);
    };
    match map.get(&raw).or(spec.default.as_ref()) {
        Some(mapped) => Ok(mapped.clone()),
        None => Err(Failure {
            path,
            problem: "the value has no entry in map".to_owned(),
        }),
    }
}

/// A `format`'s text with every `{path}` replaced.
fn interpolate(parts: &[Part], scope: Scope<'_, '_, '_>) -> Result<String, Failure> {
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Literal(literal) => out.push_str(literal),
            Part::Path(path) => {
                let found = scope.lookup(path)?;
                let text = scalar_text(found).map_err(|problem| Failure {
                    path: Some(scope.describe(path)),
                    problem,
                })?;
                out.push_str(&text);
            }
        }
        if out.chars().nth(MAX_TEXT_CHARS).is_some() {
            return Err(Failure {
                path: None,
                problem: format!("longer than {MAX_TEXT_CHARS} characters"),
            });
        }
    }
    Ok(out)
}

/// A JSON number or a numeric string (`"36.6"`, `"NaN"`).
fn number(value: &Value) -> Result<f64, String> {
    let parsed = match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| format!("not a number but {}", kind_of(value)))
}

/// A time in `format`.
fn time(value: &Value, format: TimeFormat) -> Result<Timestamp, String> {
    match format {
        TimeFormat::Rfc3339 => match value {
            Value::String(text) => Timestamp::parse_rfc3339(text)
                .map_err(|_| "not an RFC 3339 time with an offset".to_owned()),
            _ => Err(format!(
                "not an RFC 3339 time with an offset but {}",
                kind_of(value)
            )),
        },
        TimeFormat::EpochSeconds => epoch(value, 1_000_000, "seconds"),
        TimeFormat::EpochMillis => epoch(value, 1_000, "milliseconds"),
    }
}

/// Seconds or milliseconds since the epoch, whole (exact) or fractional (to the microsecond).
fn epoch(value: &Value, micros_per_unit: i64, unit: &str) -> Result<Timestamp, String> {
    let out_of_range = || "time out of range".to_owned();
    let whole = match value {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.trim().parse::<i64>().ok(),
        _ => None,
    };
    if let Some(whole) = whole {
        return whole
            .checked_mul(micros_per_unit)
            .map(Timestamp::from_micros)
            .ok_or_else(out_of_range);
    }
    let fractional = number(value).map_err(|_| format!("not a number of {unit} since 1970"))?;
    // 2^63 µs is about 292 000 years: anything near it is a broken clock, refused here.
    let micros = (fractional * micros_per_unit as f64).round();
    if !micros.is_finite() || micros.abs() >= 9.2e18 {
        return Err(out_of_range());
    }
    Ok(Timestamp::from_micros(micros as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn epoch_times_convert_exactly_and_refuse_overflow() {
        assert_eq!(
            epoch(&json!(1_795_421_700_123_i64), 1_000, "ms"),
            Ok(Timestamp::from_micros(1_795_421_700_123_000))
        );
        assert_eq!(
            epoch(&json!("1795421700"), 1_000_000, "s"),
            Ok(Timestamp::from_seconds(1_795_421_700))
        );
        assert_eq!(
            epoch(&json!(1.5), 1_000_000, "s"),
            Ok(Timestamp::from_micros(1_500_000))
        );
        assert!(epoch(&json!(i64::MAX), 1_000, "ms").is_err());
        assert!(epoch(&json!(1e300), 1_000, "ms").is_err());
        assert!(epoch(&json!("NaN"), 1_000, "ms").is_err());
        assert!(epoch(&json!(true), 1_000, "ms").is_err());
    }

    #[test]
    fn numbers_come_from_numbers_and_numeric_strings() {
        assert_eq!(number(&json!(36.6)), Ok(36.6));
        assert_eq!(number(&json!(" 72 ")), Ok(72.0));
        assert!(number(&json!("NaN")).is_ok_and(f64::is_nan));
        // The value is described, never repeated.
        assert_eq!(
            number(&json!("Ada Lovelace")),
            Err("not a number but a string".to_owned())
        );
        assert_eq!(
            number(&json!([1])),
            Err("not a number but an array".to_owned())
        );
    }
}
