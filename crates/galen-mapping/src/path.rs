//! The expression language: a small, documented subset of JSONPath.
//!
//! ```text
//! path     := start segment*
//! start    := '$'                      the payload's root
//!           | '@'                      the current element of a for_each
//! segment  := '.' name                 object member; name is letters, digits, '_' or '-'
//!           | '[' quoted ']'           object member with any name: ['heart rate'] or ["x"]
//!           | '[' integer ']'          array element; negative counts from the end ([-1] = last)
//!           | '[*]'                    every array element (only in for_each)
//! ```
//!
//! Paths are parsed once, when a template loads, so a typo is reported against the template field
//! before any payload arrives. Evaluation follows the segments one by one without recursion into
//! the payload, so its cost is bounded by the path's length, never by the payload's depth.

use std::fmt;

use serde_json::Value;

/// Longest path text accepted, in characters.
pub(crate) const MAX_PATH_CHARS: usize = 512;
/// Most segments in one path.
pub(crate) const MAX_SEGMENTS: usize = 32;

/// Where a path starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// `$`: the payload's root.
    Root,
    /// `@`: the element a for_each is at.
    Current,
}

/// One step of a path as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// An object member.
    Field(String),
    /// An array element, negative from the end.
    Index(i64),
    /// Every array element.
    Wildcard,
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Path {
    start: Start,
    segments: Vec<Segment>,
    text: String,
}

/// Why a path's text is not a path; `position` counts characters from 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathError {
    pub(crate) position: usize,
    pub(crate) message: String,
}

impl fmt::Display for PathError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} at {}", self.message, self.position)
    }
}

/// A concrete step from the root to a for_each element: the member names come from the template,
/// the indexes from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step<'t> {
    Key(&'t str),
    Index(usize),
}

/// Why a lookup found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// The member or element does not exist.
    Absent,
    /// After `depth` segments the value is of this JSON type, which has no members or elements
    /// of the kind the next segment asks for.
    WrongType {
        depth: usize,
        found: &'static str,
        wanted: &'static str,
    },
}

/// Why a for_each expansion failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExpandError {
    /// Something on the way is absent or null; `concrete` is the path that was looked for.
    Missing { concrete: String, null: bool },
    /// A `[*]` (or a step before it) met a value of the wrong type.
    WrongType {
        concrete: String,
        found: &'static str,
        wanted: &'static str,
    },
    /// More elements than the budget.
    TooMany,
}

/// A for_each element: the value and where it is.
#[derive(Debug, Clone)]
pub(crate) struct Element<'v, 't> {
    pub(crate) value: &'v Value,
    pub(crate) steps: Vec<Step<'t>>,
}

/// The name of a JSON value's type, for messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_name_char(character: char) -> bool {
    character.is_alphanumeric() || character == '_' || character == '-'
}

fn unexpected(character: Option<char>, position: usize) -> PathError {
    PathError {
        position,
        message: match character {
            Some(character) => format!("unexpected {character:?}"),
            None => "unexpected end of path".to_owned(),
        },
    }
}

impl Path {
    /// Parses a path's text.
    pub(crate) fn parse(text: &str) -> Result<Path, PathError> {
        let characters: Vec<char> = text.chars().take(MAX_PATH_CHARS + 1).collect();
        if characters.len() > MAX_PATH_CHARS {
            return Err(PathError {
                position: MAX_PATH_CHARS,
                message: format!("path longer than {MAX_PATH_CHARS} characters"),
            });
        }
        let start = match characters.first() {
            Some('$') => Start::Root,
            Some('@') => Start::Current,
            Some(&other) => {
                return Err(PathError {
                    position: 0,
                    message: format!("unexpected {other:?}, a path starts with '$' or '@'"),
                });
            }
            None => {
                return Err(PathError {
                    position: 0,
                    message: "empty path, a path starts with '$' or '@'".to_owned(),
                });
            }
        };
        let mut segments = Vec::new();
        let mut position = 1;
        while position < characters.len() {
            if segments.len() == MAX_SEGMENTS {
                return Err(PathError {
                    position,
                    message: format!("more than {MAX_SEGMENTS} segments"),
                });
            }
            let (segment, next) = match characters[position] {
                '.' => parse_name(&characters, position + 1)?,
                '[' => parse_bracket(&characters, position + 1)?,
                other => return Err(unexpected(Some(other), position)),
            };
            segments.push(segment);
            position = next;
        }
        Ok(Path {
            start,
            segments,
            text: text.to_owned(),
        })
    }

    /// Where the path starts.
    pub(crate) fn start(&self) -> Start {
        self.start
    }

    /// How many `[*]` the path has.
    pub(crate) fn wildcards(&self) -> usize {
        self.segments
            .iter()
            .filter(|segment| matches!(segment, Segment::Wildcard))
            .count()
    }

    /// The value this path names. `current` is the for_each element, if any; a path starting at
    /// `@` without one, or a `[*]` (refused outside for_each at load), finds nothing.
    pub(crate) fn lookup<'v>(
        &self,
        root: &'v Value,
        current: Option<&'v Value>,
    ) -> Result<&'v Value, Miss> {
        let mut value = match self.start {
            Start::Root => root,
            Start::Current => current.ok_or(Miss::Absent)?,
        };
        for (depth, segment) in self.segments.iter().enumerate() {
            value = match segment {
                Segment::Field(name) => match value {
                    Value::Object(members) => members.get(name).ok_or(Miss::Absent)?,
                    other => {
                        return Err(Miss::WrongType {
                            depth,
                            found: type_name(other),
                            wanted: "an object",
                        });
                    }
                },
                Segment::Index(index) => match value {
                    Value::Array(elements) => resolve_index(*index, elements.len())
                        .and_then(|index| elements.get(index))
                        .ok_or(Miss::Absent)?,
                    other => {
                        return Err(Miss::WrongType {
                            depth,
                            found: type_name(other),
                            wanted: "an array",
                        });
                    }
                },
                Segment::Wildcard => return Err(Miss::Absent),
            };
        }
        Ok(value)
    }

    /// Every element a for_each path names, in document order, at most `budget` of them.
    /// A `[*]` over an empty array yields nothing; over anything but an array it is an error, as
    /// is a missing or null value on the way.
    pub(crate) fn expand<'v, 't>(
        &'t self,
        root: &'v Value,
        budget: usize,
    ) -> Result<Vec<Element<'v, 't>>, ExpandError> {
        let mut out = Vec::new();
        let mut steps = Vec::with_capacity(self.segments.len());
        self.expand_from(root, 0, &mut steps, budget, &mut out)?;
        Ok(out)
    }

    /// Recursion is bounded by the number of segments (at most [`MAX_SEGMENTS`]).
    fn expand_from<'v, 't>(
        &'t self,
        value: &'v Value,
        depth: usize,
        steps: &mut Vec<Step<'t>>,
        budget: usize,
        out: &mut Vec<Element<'v, 't>>,
    ) -> Result<(), ExpandError> {
        let Some(segment) = self.segments.get(depth) else {
            if out.len() >= budget {
                return Err(ExpandError::TooMany);
            }
            out.push(Element {
                value,
                steps: steps.clone(),
            });
            return Ok(());
        };
        if value.is_null() {
            return Err(ExpandError::Missing {
                concrete: self.describe_steps(steps, depth),
                null: true,
            });
        }
        let wrong_type = |found, wanted| ExpandError::WrongType {
            concrete: self.describe_steps(steps, depth),
            found,
            wanted,
        };
        match segment {
            Segment::Field(name) => {
                let Value::Object(members) = value else {
                    return Err(wrong_type(type_name(value), "an object"));
                };
                let Some(member) = members.get(name) else {
                    return Err(self.missing_at(steps, depth));
                };
                steps.push(Step::Key(name));
                self.expand_from(member, depth + 1, steps, budget, out)?;
                steps.pop();
            }
            Segment::Index(index) => {
                let Value::Array(elements) = value else {
                    return Err(wrong_type(type_name(value), "an array"));
                };
                let Some(resolved) = resolve_index(*index, elements.len()) else {
                    return Err(self.missing_at(steps, depth));
                };
                let Some(element) = elements.get(resolved) else {
                    return Err(self.missing_at(steps, depth));
                };
                steps.push(Step::Index(resolved));
                self.expand_from(element, depth + 1, steps, budget, out)?;
                steps.pop();
            }
            Segment::Wildcard => {
                let Value::Array(elements) = value else {
                    return Err(wrong_type(type_name(value), "an array"));
                };
                for (index, element) in elements.iter().enumerate() {
                    steps.push(Step::Index(index));
                    self.expand_from(element, depth + 1, steps, budget, out)?;
                    steps.pop();
                }
            }
        }
        Ok(())
    }

    fn missing_at(&self, steps: &[Step<'_>], depth: usize) -> ExpandError {
        ExpandError::Missing {
            concrete: self.describe_steps(steps, depth + 1),
            null: false,
        }
    }

    /// The concrete path after `upto` segments during an expansion: `steps` are the concrete
    /// steps for the first `steps.len()` segments, the segments after them are shown as written.
    fn describe_steps(&self, steps: &[Step<'_>], upto: usize) -> String {
        let mut out = String::from("$");
        write_steps(&mut out, steps);
        let taken = steps.len().min(self.segments.len());
        let upto = upto.min(self.segments.len()).max(taken);
        write_segments(&mut out, &self.segments[taken..upto]);
        out
    }

    /// The concrete path this path names when `@` stands at `current` (the for_each element's
    /// steps from the root), cut after `upto` segments (all when `None`).
    pub(crate) fn describe(&self, current: Option<&[Step<'_>]>, upto: Option<usize>) -> String {
        let mut out = String::new();
        match (self.start, current) {
            (Start::Root, _) => out.push('$'),
            (Start::Current, Some(steps)) => {
                out.push('$');
                write_steps(&mut out, steps);
            }
            (Start::Current, None) => out.push('@'),
        }
        let upto = upto.unwrap_or(self.segments.len()).min(self.segments.len());
        write_segments(&mut out, &self.segments[..upto]);
        out
    }
}

impl fmt::Display for Path {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

/// `index` (negative from the end) as a position in an array of `length`, if inside it.
fn resolve_index(index: i64, length: usize) -> Option<usize> {
    if index >= 0 {
        usize::try_from(index).ok().filter(|&index| index < length)
    } else {
        let back = usize::try_from(index.unsigned_abs()).ok()?;
        length.checked_sub(back)
    }
}

fn write_steps(out: &mut String, steps: &[Step<'_>]) {
    for step in steps {
        match step {
            Step::Key(name) => write_key(out, name),
            Step::Index(index) => {
                out.push('[');
                out.push_str(&index.to_string());
                out.push(']');
            }
        }
    }
}

fn write_segments(out: &mut String, segments: &[Segment]) {
    for segment in segments {
        match segment {
            Segment::Field(name) => write_key(out, name),
            Segment::Index(index) => {
                out.push('[');
                out.push_str(&index.to_string());
                out.push(']');
            }
            Segment::Wildcard => out.push_str("[*]"),
        }
    }
}

/// `.name` when the name needs no quoting, `['na\'me']` otherwise.
fn write_key(out: &mut String, name: &str) {
    if !name.is_empty() && name.chars().all(is_name_char) {
        out.push('.');
        out.push_str(name);
    } else {
        out.push_str("['");
        for character in name.chars() {
            if character == '\'' || character == '\\' {
                out.push('\\');
            }
            out.push(character);
        }
        out.push_str("']");
    }
}

/// `.name` starting at `position` (just after the dot).
fn parse_name(characters: &[char], position: usize) -> Result<(Segment, usize), PathError> {
    let mut end = position;
    while end < characters.len() && is_name_char(characters[end]) {
        end += 1;
    }
    if end == position {
        return Err(unexpected(characters.get(position).copied(), position));
    }
    let name: String = characters[position..end].iter().collect();
    Ok((Segment::Field(name), end))
}

/// `[...]` starting at `position` (just after the bracket).
fn parse_bracket(characters: &[char], position: usize) -> Result<(Segment, usize), PathError> {
    let (segment, end) = match characters.get(position) {
        Some('*') => (Segment::Wildcard, position + 1),
        Some(&quote @ ('\'' | '"')) => {
            let mut name = String::new();
            let mut at = position + 1;
            loop {
                match characters.get(at) {
                    None => {
                        return Err(PathError {
                            position: at,
                            message: format!("unterminated name, missing closing {quote:?}"),
                        });
                    }
                    Some('\\') => {
                        match characters.get(at + 1) {
                            Some(&escaped @ ('\\' | '\'' | '"')) => name.push(escaped),
                            other => {
                                return Err(PathError {
                                    position: at + 1,
                                    message: match other {
                                        Some(other) => format!(
                                            "unknown escape \\{other}, only \\\\, \\' and \\\" are allowed"
                                        ),
                                        None => "unexpected end of path".to_owned(),
                                    },
                                });
                            }
                        }
                        at += 2;
                    }
                    Some(&character) if character == quote => break,
                    Some(&character) => {
                        name.push(character);
                        at += 1;
                    }
                }
            }
            (Segment::Field(name), at + 1)
        }
        Some(&character) if character == '-' || character.is_ascii_digit() => {
            let mut end = position + 1;
            while end < characters.len() && characters[end].is_ascii_digit() {
                end += 1;
            }
            let digits: String = characters[position..end].iter().collect();
            let index = digits.parse::<i64>().map_err(|_| {
                if digits == "-" {
                    unexpected(characters.get(end).copied(), end)
                } else {
                    PathError {
                        position,
                        message: format!("index {digits} is out of range"),
                    }
                }
            })?;
            (Segment::Index(index), end)
        }
        other => return Err(unexpected(other.copied(), position)),
    };
    match characters.get(end) {
        Some(']') => Ok((segment, end + 1)),
        other => Err(unexpected(other.copied(), end)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Path {
        Path::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    fn error(text: &str) -> String {
        match Path::parse(text) {
            Ok(path) => panic!("{text} parsed as {path:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn parses_every_segment_kind() {
        let path = parse("$.a['b c'][\"d\"][3][-1][*].e_f-g");
        assert_eq!(path.start(), Start::Root);
        assert_eq!(
            path.segments,
            vec![
                Segment::Field("a".into()),
                Segment::Field("b c".into()),
                Segment::Field("d".into()),
                Segment::Index(3),
                Segment::Index(-1),
                Segment::Wildcard,
                Segment::Field("e_f-g".into()),
            ]
        );
        assert_eq!(parse("@").start(), Start::Current);
        assert_eq!(
            parse(r"$['it\'s \\ ok']").segments,
            vec![Segment::Field(r"it's \ ok".into())]
        );
    }

    #[test]
    fn errors_name_the_character_and_its_position() {
        assert_eq!(error("$.a.b]"), "unexpected ']' at 5");
        assert_eq!(error("$."), "unexpected end of path at 2");
        assert_eq!(error("$.a[x]"), "unexpected 'x' at 4");
        assert_eq!(error("$.a[1"), "unexpected end of path at 5");
        assert_eq!(
            error("$.a['b"),
            "unterminated name, missing closing '\\'' at 6"
        );
        assert_eq!(
            error("a.b"),
            "unexpected 'a', a path starts with '$' or '@' at 0"
        );
        assert_eq!(error(""), "empty path, a path starts with '$' or '@' at 0");
        assert_eq!(error("$[-]"), "unexpected ']' at 3");
        assert_eq!(
            error("$[99999999999999999999]"),
            "index 99999999999999999999 is out of range at 2"
        );
        assert!(error(&format!("${}", ".a".repeat(40))).starts_with("more than 32 segments"));
        assert!(error(&format!("$.{}", "a".repeat(600))).starts_with("path longer than 512"));
    }

    #[test]
    fn lookup_follows_members_and_indexes() {
        let payload = json!({"a": {"b c": [10, 20, 30]}, "n": 1});
        assert_eq!(
            parse("$.a['b c'][0]").lookup(&payload, None),
            Ok(&json!(10))
        );
        assert_eq!(
            parse("$.a['b c'][-1]").lookup(&payload, None),
            Ok(&json!(30))
        );
        assert_eq!(
            parse("$.a['b c'][-4]").lookup(&payload, None),
            Err(Miss::Absent)
        );
        assert_eq!(
            parse("$.a['b c'][3]").lookup(&payload, None),
            Err(Miss::Absent)
        );
        assert_eq!(
            parse("$.n.x").lookup(&payload, None),
            Err(Miss::WrongType {
                depth: 1,
                found: "a number",
                wanted: "an object"
            })
        );
        assert_eq!(parse("@").lookup(&payload, None), Err(Miss::Absent));
        assert_eq!(parse("@.n").lookup(&payload, Some(&payload)), Ok(&json!(1)));
        assert_eq!(resolve_index(i64::MIN, 3), None);
        assert_eq!(resolve_index(-3, 3), Some(0));
    }

    #[test]
    fn expand_yields_elements_with_concrete_steps() {
        let payload = json!({"s": [{"r": [1, 2]}, {"r": []}, {"r": [3]}]});
        let path = parse("$.s[*].r[*]");
        let elements = path.expand(&payload, 100).expect("expands");
        let described: Vec<String> = elements
            .iter()
            .map(|element| parse("@.v").describe(Some(&element.steps), None))
            .collect();
        assert_eq!(
            described,
            ["$.s[0].r[0].v", "$.s[0].r[1].v", "$.s[2].r[0].v"]
        );
        assert_eq!(path.expand(&payload, 2).err(), Some(ExpandError::TooMany));
        let broken = json!({"s": [{"r": [1]}, {"r": "x"}]});
        assert_eq!(
            path.expand(&broken, 100).err(),
            Some(ExpandError::WrongType {
                concrete: "$.s[1].r".into(),
                found: "a string",
                wanted: "an array"
            })
        );
        let missing = json!({"s": [{"q": 1}]});
        assert_eq!(
            path.expand(&missing, 100).err(),
            Some(ExpandError::Missing {
                concrete: "$.s[0].r".into(),
                null: false
            })
        );
    }

    #[test]
    fn describe_quotes_names_that_need_it() {
        assert_eq!(
            parse("$['a b']['it\\'s']").describe(None, None),
            "$['a b']['it\\'s']"
        );
        assert_eq!(parse("$.a.b.c").describe(None, Some(2)), "$.a.b");
    }
}
