//! Loading templates: TOML or JSON text → serde's raw shape (unknown keys refused) → a compiled
//! [`Template`] whose paths, topic filter and formats are already parsed, so nothing about the
//! template itself can fail while a payload is being mapped.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::Value;

use crate::path::{Path, Start};
use crate::topic::TopicFilter;
use crate::{Result, excerpt};

/// Largest template text accepted, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;
/// Most `[[measurement]]` blocks in one template.
pub const MAX_MEASUREMENTS: usize = 64;
/// Most entries in one `map`.
pub const MAX_MAP_ENTRIES: usize = 1_000;
/// Longest template name, in characters.
const MAX_NAME_CHARS: usize = 64;
/// Most `{…}` placeholders plus literal runs in one `format`.
const MAX_FORMAT_PARTS: usize = 32;
/// Most `[*]` in one for_each.
const MAX_WILDCARDS: usize = 4;
/// Most sentinel values in one `absent` list.
const MAX_ABSENT: usize = 16;
/// Longest constant, map key or map value, in characters.
const MAX_CONSTANT_CHARS: usize = 256;

/// Why a template could not be loaded. Messages name the template field, as in
/// `measurement[1].value.path: unexpected ']' at 7`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Not valid TOML or JSON, a key that is not part of the format, or a value of the wrong type.
    #[error("not a valid {format} template: {message}")]
    Syntax {
        /// `"TOML"` or `"JSON"`.
        format: &'static str,
        /// The parser's explanation, with line and column.
        message: String,
    },
    /// Well-formed, but a field's value is not acceptable.
    #[error("{field}: {problem}")]
    Invalid {
        /// The template field, e.g. `measurement[0].time.format`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Two templates of one set share a name.
    #[error("template name {name:?} is used by both {first} and {second}")]
    DuplicateName {
        /// The name.
        name: String,
        /// Where the first one came from.
        first: String,
        /// Where the second one came from.
        second: String,
    },
    /// The text is larger than [`MAX_TEMPLATE_BYTES`].
    #[error("template is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> TemplateError {
    TemplateError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The raw shape, as written. Every field is optional here so that the compiler below, not serde,
// reports a missing one: its messages name the field's full place in the template.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    name: Option<String>,
    version: Option<u32>,
    description: Option<String>,
    #[serde(rename = "match")]
    matcher: Option<RawMatch>,
    device: Option<RawText>,
    #[serde(default)]
    measurement: Vec<RawMeasurement>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    topic: Option<String>,
    path: Option<String>,
    equals: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawText {
    path: Option<String>,
    #[serde(rename = "const")]
    constant: Option<String>,
    format: Option<String>,
    map: Option<BTreeMap<String, String>>,
    default: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValue {
    path: Option<String>,
    scale: Option<f64>,
    offset: Option<f64>,
    absent: Option<Vec<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTime {
    path: Option<String>,
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeasurement {
    for_each: Option<String>,
    code: Option<RawText>,
    value: Option<RawValue>,
    unit: Option<RawText>,
    time: Option<RawTime>,
    id: Option<RawText>,
    when_missing: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The compiled shape.

/// A JSON scalar that `match.equals` compares with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Text(String),
    Number(f64),
    Bool(bool),
}

impl Scalar {
    /// Strings and booleans compare exactly, numbers by value (`1` equals `1.0`).
    pub(crate) fn equals(&self, value: &Value) -> bool {
        match (self, value) {
            (Scalar::Text(expected), Value::String(found)) => expected == found,
            (Scalar::Bool(expected), Value::Bool(found)) => expected == found,
            (Scalar::Number(expected), Value::Number(found)) => {
                found.as_f64().is_some_and(|found| found == *expected)
            }
            _ => false,
        }
    }

    fn shown(&self) -> String {
        match self {
            Scalar::Text(text) => excerpt(text),
            Scalar::Number(number) => number.to_string(),
            Scalar::Bool(flag) => flag.to_string(),
        }
    }
}

/// `[match]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Matcher {
    pub(crate) topic: Option<TopicFilter>,
    pub(crate) path: Option<Path>,
    pub(crate) equals: Option<Scalar>,
}

/// One piece of a `format`.
#[derive(Debug, Clone)]
pub(crate) enum Part {
    Literal(String),
    Path(Path),
}

/// Where a text field's value comes from.
#[derive(Debug, Clone)]
pub(crate) enum TextSource {
    Path(Path),
    Constant(String),
    Format(Vec<Part>),
}

/// A text field (device, code, unit, id), with an optional translation.
#[derive(Debug, Clone)]
pub(crate) struct TextSpec {
    pub(crate) source: TextSource,
    pub(crate) map: Option<HashMap<String, String>>,
    pub(crate) default: Option<String>,
}

/// The numeric value: raw × scale + offset, or NaN for a sentinel in `absent`.
#[derive(Debug, Clone)]
pub(crate) struct ValueSpec {
    pub(crate) path: Path,
    pub(crate) scale: f64,
    /// `1 / scale` when that is a whole number (scale 0.1 → 10). Dividing by it is exact to the
    /// last bit (968 / 10 is the double nearest 96.8), where multiplying by 0.1, itself inexact,
    /// gives 96.80000000000001: noise that would show up in every display and export.
    pub(crate) divisor: Option<f64>,
    pub(crate) offset: f64,
    pub(crate) absent: Vec<f64>,
}

/// How a time is written in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeFormat {
    Rfc3339,
    EpochSeconds,
    EpochMillis,
}

impl TimeFormat {
    const NAMES: [(&'static str, TimeFormat); 3] = [
        ("rfc3339", TimeFormat::Rfc3339),
        ("epoch_s", TimeFormat::EpochSeconds),
        ("epoch_ms", TimeFormat::EpochMillis),
    ];
}

#[derive(Debug, Clone)]
pub(crate) struct TimeSpec {
    pub(crate) path: Path,
    pub(crate) format: TimeFormat,
}

/// What to do when the value is absent or null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenMissing {
    Error,
    Skip,
}

/// One `[[measurement]]`.
#[derive(Debug, Clone)]
pub(crate) struct MeasurementSpec {
    pub(crate) for_each: Option<Path>,
    pub(crate) code: TextSpec,
    pub(crate) value: ValueSpec,
    pub(crate) unit: TextSpec,
    pub(crate) time: TimeSpec,
    pub(crate) id: Option<TextSpec>,
    pub(crate) when_missing: WhenMissing,
}

/// A loaded mapping template: which payloads it handles (`[match]`), where the device serial is,
/// and how each measurement is found in the payload. Immutable once loaded.
#[derive(Debug, Clone)]
pub struct Template {
    pub(crate) name: String,
    pub(crate) version: u32,
    pub(crate) description: Option<String>,
    pub(crate) matcher: Matcher,
    pub(crate) device: Option<TextSpec>,
    pub(crate) measurements: Vec<MeasurementSpec>,
}

impl Template {
    /// Loads a template written in TOML.
    pub fn from_toml(text: &str) -> Result<Template> {
        check_size(text)?;
        let raw: RawTemplate = toml::from_str(text).map_err(|error| TemplateError::Syntax {
            format: "TOML",
            message: error.to_string().trim_end().to_owned(),
        })?;
        compile(raw)
    }

    /// Loads a template written in JSON (the same structure as the TOML form).
    pub fn from_json(text: &str) -> Result<Template> {
        check_size(text)?;
        let raw: RawTemplate =
            serde_json::from_str(text).map_err(|error| TemplateError::Syntax {
                format: "JSON",
                message: error.to_string(),
            })?;
        compile(raw)
    }

    /// The template's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The template's version (1 or more), bumped by its author on every change.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The free-text description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// How many `[[measurement]]` blocks the template has.
    pub fn measurement_count(&self) -> usize {
        self.measurements.len()
    }

    /// Whether this template handles `payload` received on `topic`: every condition of `[match]`
    /// holds. The topic filter is only checked when a topic is given (payloads that arrive over
    /// HTTP have none); a template without conditions matches everything.
    pub fn matches(&self, payload: &Value, topic: Option<&str>) -> bool {
        self.mismatch(payload, topic).is_none()
    }

    /// Why this template does not handle `payload` on `topic` (the first `[match]` condition that
    /// fails, as a sentence for the integration engineer), or `None` when it does.
    pub fn mismatch(&self, payload: &Value, topic: Option<&str>) -> Option<String> {
        if let (Some(filter), Some(topic)) = (&self.matcher.topic, topic)
            && !filter.matches(topic)
        {
            return Some(format!(
                "topic {} does not match match.topic {}",
                excerpt(topic),
                excerpt(&filter.to_string())
            ));
        }
        let path = self.matcher.path.as_ref()?;
        let shown = path.describe(None, None);
        let found = match path.lookup(payload, None) {
            Ok(Value::Null) => return Some(format!("match.path {shown} is null")),
            Ok(found) => found,
            Err(_) => return Some(format!("match.path {shown} is missing")),
        };
        match &self.matcher.equals {
            Some(expected) if !expected.equals(found) => Some(format!(
                "match.path {shown} is {}, not {}",
                excerpt(found),
                expected.shown()
            )),
            _ => None,
        }
    }
}

fn check_size(text: &str) -> Result<()> {
    if text.len() > MAX_TEMPLATE_BYTES {
        return Err(TemplateError::TooLarge {
            limit: MAX_TEMPLATE_BYTES,
        });
    }
    Ok(())
}

/// A set of templates with distinct names, kept in name order.
#[derive(Debug, Clone, Default)]
pub struct TemplateSet {
    /// `(source, template)` sorted by template name.
    entries: Vec<(String, Template)>,
}

impl TemplateSet {
    /// A set from `(source, template)` pairs; `source` (usually a file name) is only used in
    /// messages. Two templates with one name are refused, naming both sources.
    pub fn new(templates: Vec<(String, Template)>) -> Result<TemplateSet> {
        let mut entries = templates;
        entries.sort_by(|left, right| left.1.name.cmp(&right.1.name));
        for pair in entries.windows(2) {
            if let [(first, left), (second, right)] = pair
                && left.name == right.name
            {
                return Err(TemplateError::DuplicateName {
                    name: left.name.clone(),
                    first: first.clone(),
                    second: second.clone(),
                });
            }
        }
        Ok(TemplateSet { entries })
    }

    /// The template for `payload`: the first, in name order, whose [`Template::matches`] holds.
    /// Name order makes the choice independent of file or load order; give overlapping
    /// templates `[match]` conditions that tell their payloads apart (see [`TemplateSet::matching`]).
    pub fn select(&self, payload: &Value, topic: Option<&str>) -> Option<&Template> {
        self.matching(payload, topic).next()
    }

    /// Every template that matches, in name order; more than one means overlapping templates.
    pub fn matching<'s, 'p>(
        &'s self,
        payload: &'p Value,
        topic: Option<&'p str>,
    ) -> impl Iterator<Item = &'s Template> + use<'s, 'p> {
        self.entries
            .iter()
            .map(|(_, template)| template)
            .filter(move |template| template.matches(payload, topic))
    }

    /// The template named `name`.
    pub fn get(&self, name: &str) -> Option<&Template> {
        self.entries
            .binary_search_by(|(_, template)| template.name.as_str().cmp(name))
            .ok()
            .and_then(|index| self.entries.get(index))
            .map(|(_, template)| template)
    }

    /// `(source, template)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Template)> {
        self.entries
            .iter()
            .map(|(source, template)| (source.as_str(), template))
    }

    /// How many templates the set holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Compilation.

/// Which paths a field may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Only `$`: device, match, and measurements without for_each.
    Root,
    /// `$` and `@`: inside a for_each.
    Element,
}

fn compile_path(field: &str, text: &str, scope: Scope) -> Result<Path> {
    let path = Path::parse(text).map_err(|error| invalid(field, error.to_string()))?;
    check_path(field, &path, scope)?;
    Ok(path)
}

fn check_path(field: &str, path: &Path, scope: Scope) -> Result<()> {
    if path.start() == Start::Current && scope == Scope::Root {
        return Err(invalid(
            field,
            "'@' is only available inside a measurement with for_each",
        ));
    }
    if path.wildcards() > 0 {
        return Err(invalid(field, "[*] is only allowed in for_each"));
    }
    Ok(())
}

fn compile(raw: RawTemplate) -> Result<Template> {
    let name = raw.name.ok_or_else(|| invalid("name", "missing"))?;
    let name_ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name
            .chars()
            .all(|character| matches!(character, 'a'..='z' | '0'..='9' | '-'));
    if !name_ok {
        return Err(invalid(
            "name",
            format!(
                "{} must be 1 to {MAX_NAME_CHARS} characters of a-z, 0-9 and '-'",
                excerpt(&name)
            ),
        ));
    }
    let version = raw.version.ok_or_else(|| invalid("version", "missing"))?;
    if version == 0 {
        return Err(invalid("version", "must be 1 or more"));
    }
    let matcher = match raw.matcher {
        Some(matcher) => compile_match(matcher)?,
        None => Matcher::default(),
    };
    let device = raw
        .device
        .map(|device| compile_text("device", device, Scope::Root))
        .transpose()?;
    if raw.measurement.is_empty() {
        return Err(invalid(
            "measurement",
            "a template needs at least one [[measurement]]",
        ));
    }
    if raw.measurement.len() > MAX_MEASUREMENTS {
        return Err(invalid(
            "measurement",
            format!("more than {MAX_MEASUREMENTS} [[measurement]] blocks"),
        ));
    }
    let measurements = raw
        .measurement
        .into_iter()
        .enumerate()
        .map(|(index, measurement)| compile_measurement(index, measurement))
        .collect::<Result<Vec<_>>>()?;
    Ok(Template {
        name,
        version,
        description: raw.description,
        matcher,
        device,
        measurements,
    })
}

fn compile_match(raw: RawMatch) -> Result<Matcher> {
    let topic = raw
        .topic
        .map(|topic| TopicFilter::parse(&topic).map_err(|problem| invalid("match.topic", problem)))
        .transpose()?;
    let path = raw
        .path
        .map(|path| compile_path("match.path", &path, Scope::Root))
        .transpose()?;
    let equals = match raw.equals {
        None => None,
        Some(_) if path.is_none() => {
            return Err(invalid("match.equals", "needs match.path"));
        }
        Some(Value::String(text)) => Some(Scalar::Text(text)),
        Some(Value::Bool(flag)) => Some(Scalar::Bool(flag)),
        Some(Value::Number(number)) => match number.as_f64() {
            Some(number) => Some(Scalar::Number(number)),
            None => return Err(invalid("match.equals", "number out of range")),
        },
        Some(other) => {
            return Err(invalid(
                "match.equals",
                format!(
                    "must be a string, number or boolean, not {}",
                    excerpt(&other)
                ),
            ));
        }
    };
    Ok(Matcher {
        topic,
        path,
        equals,
    })
}

fn check_constant(field: &str, text: &str) -> Result<()> {
    if text.chars().count() > MAX_CONSTANT_CHARS {
        return Err(invalid(
            field,
            format!("longer than {MAX_CONSTANT_CHARS} characters"),
        ));
    }
    Ok(())
}

fn compile_text(field: &str, raw: RawText, scope: Scope) -> Result<TextSpec> {
    let source = match (raw.path, raw.constant, raw.format) {
        (Some(path), None, None) => {
            TextSource::Path(compile_path(&format!("{field}.path"), &path, scope)?)
        }
        (None, Some(constant), None) => {
            check_constant(&format!("{field}.const"), &constant)?;
            TextSource::Constant(constant)
        }
        (None, None, Some(format)) => {
            TextSource::Format(compile_format(&format!("{field}.format"), &format, scope)?)
        }
        _ => {
            return Err(invalid(field, "give exactly one of path, const or format"));
        }
    };
    if matches!(source, TextSource::Constant(_)) && (raw.map.is_some() || raw.default.is_some()) {
        return Err(invalid(
            field,
            "map and default need path or format, not const",
        ));
    }
    if raw.default.is_some() && raw.map.is_none() {
        return Err(invalid(
            format!("{field}.default"),
            "only meaningful with map",
        ));
    }
    let map = match raw.map {
        Some(map) => {
            if map.len() > MAX_MAP_ENTRIES {
                return Err(invalid(
                    format!("{field}.map"),
                    format!("more than {MAX_MAP_ENTRIES} entries"),
                ));
            }
            for (key, value) in &map {
                check_constant(&format!("{field}.map"), key)?;
                check_constant(&format!("{field}.map.{key}"), value)?;
            }
            Some(map.into_iter().collect())
        }
        None => None,
    };
    if let Some(default) = &raw.default {
        check_constant(&format!("{field}.default"), default)?;
    }
    Ok(TextSpec {
        source,
        map,
        default: raw.default,
    })
}

/// `"{$.msg_id}-{@.kind}"`: literal text with paths in braces; `{{` and `}}` are literal braces.
/// Positions in messages count characters of the whole format from 0.
fn compile_format(field: &str, text: &str, scope: Scope) -> Result<Vec<Part>> {
    let characters: Vec<char> = text.chars().collect();
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut position = 0;
    while position < characters.len() {
        match characters[position] {
            '{' if characters.get(position + 1) == Some(&'{') => {
                literal.push('{');
                position += 2;
            }
            '}' if characters.get(position + 1) == Some(&'}') => {
                literal.push('}');
                position += 2;
            }
            '}' => {
                return Err(invalid(
                    field,
                    format!("unexpected '}}' at {position} (write '}}}}' for a brace)"),
                ));
            }
            '{' => {
                let start = position + 1;
                let Some(length) = characters[start..].iter().position(|&c| c == '}') else {
                    return Err(invalid(field, format!("unclosed '{{' at {position}")));
                };
                let inner: String = characters[start..start + length].iter().collect();
                let path = Path::parse(&inner).map_err(|mut error| {
                    error.position += start;
                    invalid(field, error.to_string())
                })?;
                check_path(field, &path, scope)?;
                if !literal.is_empty() {
                    check_constant(field, &literal)?;
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Path(path));
                position = start + length + 1;
            }
            other => {
                literal.push(other);
                position += 1;
            }
        }
        if parts.len() > MAX_FORMAT_PARTS {
            return Err(invalid(
                field,
                format!("more than {MAX_FORMAT_PARTS} parts"),
            ));
        }
    }
    if !literal.is_empty() {
        check_constant(field, &literal)?;
        parts.push(Part::Literal(literal));
    }
    if parts.is_empty() {
        return Err(invalid(field, "empty format"));
    }
    Ok(parts)
}

fn compile_measurement(index: usize, raw: RawMeasurement) -> Result<MeasurementSpec> {
    let field = format!("measurement[{index}]");
    let for_each = match raw.for_each {
        Some(text) => {
            let name = format!("{field}.for_each");
            let path = Path::parse(&text).map_err(|error| invalid(&name, error.to_string()))?;
            if path.start() != Start::Root {
                return Err(invalid(&name, "for_each starts at '$'"));
            }
            match path.wildcards() {
                0 => return Err(invalid(&name, "for_each needs a [*]")),
                count if count > MAX_WILDCARDS => {
                    return Err(invalid(&name, format!("more than {MAX_WILDCARDS} [*]")));
                }
                _ => {}
            }
            Some(path)
        }
        None => None,
    };
    let scope = if for_each.is_some() {
        Scope::Element
    } else {
        Scope::Root
    };
    let code = raw
        .code
        .ok_or_else(|| invalid(format!("{field}.code"), "missing"))?;
    let code = compile_text(&format!("{field}.code"), code, scope)?;
    let unit = raw
        .unit
        .ok_or_else(|| invalid(format!("{field}.unit"), "missing"))?;
    let unit = compile_text(&format!("{field}.unit"), unit, scope)?;
    let id = raw
        .id
        .map(|id| compile_text(&format!("{field}.id"), id, scope))
        .transpose()?;

    let value = raw
        .value
        .ok_or_else(|| invalid(format!("{field}.value"), "missing"))?;
    let value_path = value
        .path
        .ok_or_else(|| invalid(format!("{field}.value.path"), "missing"))?;
    let value_path = compile_path(&format!("{field}.value.path"), &value_path, scope)?;
    let scale = value.scale.unwrap_or(1.0);
    if !scale.is_finite() || scale == 0.0 {
        return Err(invalid(
            format!("{field}.value.scale"),
            "must be a finite number other than 0",
        ));
    }
    let offset = value.offset.unwrap_or(0.0);
    if !offset.is_finite() {
        return Err(invalid(
            format!("{field}.value.offset"),
            "must be a finite number",
        ));
    }
    let absent = value.absent.unwrap_or_default();
    if absent.len() > MAX_ABSENT {
        return Err(invalid(
            format!("{field}.value.absent"),
            format!("more than {MAX_ABSENT} values"),
        ));
    }
    if absent.iter().any(|sentinel| !sentinel.is_finite()) {
        return Err(invalid(
            format!("{field}.value.absent"),
            "values must be finite numbers (NaN and infinities are absent anyway)",
        ));
    }

    let time = raw
        .time
        .ok_or_else(|| invalid(format!("{field}.time"), "missing"))?;
    let time_path = time
        .path
        .ok_or_else(|| invalid(format!("{field}.time.path"), "missing"))?;
    let time_path = compile_path(&format!("{field}.time.path"), &time_path, scope)?;
    let time_format = match time.format.as_deref() {
        None => TimeFormat::Rfc3339,
        Some(name) => TimeFormat::NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, format)| *format)
            .ok_or_else(|| {
                invalid(
                    format!("{field}.time.format"),
                    format!(
                        "unknown format {}, expected rfc3339, epoch_s or epoch_ms",
                        excerpt(name)
                    ),
                )
            })?,
    };
    let when_missing = match raw.when_missing.as_deref() {
        None | Some("error") => WhenMissing::Error,
        Some("skip") => WhenMissing::Skip,
        Some(other) => {
            return Err(invalid(
                format!("{field}.when_missing"),
                format!("unknown choice {}, expected error or skip", excerpt(other)),
            ));
        }
    };
    Ok(MeasurementSpec {
        for_each,
        code,
        value: ValueSpec {
            path: value_path,
            scale,
            divisor: whole_reciprocal(scale),
            offset,
            absent,
        },
        unit,
        time: TimeSpec {
            path: time_path,
            format: time_format,
        },
        id,
        when_missing,
    })
}

/// `1 / scale` if it is a whole number up to 10^15 (scales such as 0.1, 0.01, 0.5).
fn whole_reciprocal(scale: f64) -> Option<f64> {
    let reciprocal = 1.0 / scale;
    let whole = reciprocal.round();
    let close = (reciprocal - whole).abs() <= reciprocal.abs() * 1e-12;
    (scale.abs() < 1.0 && whole.abs() <= 1e15 && close).then_some(whole)
}
