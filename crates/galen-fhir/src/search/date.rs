//! FHIR date search values: a prefix and a value of some precision, read as a half-open interval
//! of microseconds since the Unix epoch.
//!
//! The value's precision makes its interval: `2026` is `[2026-01-01T00:00Z, 2027-01-01T00:00Z)`,
//! `2026-11` the month, `2026-11-23` the day, `2026-11-23T08:15Z` the minute, `...T08:15:00Z` the
//! second, `...T08:15:00.25Z` the hundredth of a second (down to microseconds). Values with a time
//! need an offset (`Z` or `+01:00`): Galen never guesses a time zone. Dates without a time are UTC
//! days, since Galen has no server time zone to read them in. A space where the offset's `+`
//! should be is read as `+`, because a `+` left unencoded in a query string decodes to a space.
//!
//! Prefixes compare the search interval `[s, e)` with the target's interval per the R4 search
//! specification (section 3.1.1.4.2), see [`DateParam::matches_range`]. For a target that is an
//! instant `t` (an Observation's `effectiveDateTime`) they reduce to: `eq` s <= t < e; `ne` the
//! complement; `gt` and `sa` t >= e; `lt` and `eb` t < s; `ge` t >= s; `le` t < e.
//! [`DateParam::instants`] gives that set as a [`TimeWindow`] to query the store with.

use galen_model::Timestamp;
use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// A date search prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatePrefix {
    /// `eq` (the default): the target lies within the value's interval.
    Eq,
    /// `ne`: the target does not lie within it.
    Ne,
    /// `gt`: the target extends after it.
    Gt,
    /// `lt`: the target extends before it.
    Lt,
    /// `ge`: `gt` or `eq`.
    Ge,
    /// `le`: `lt` or `eq`.
    Le,
    /// `sa` (starts after): the target lies entirely after it.
    Sa,
    /// `eb` (ends before): the target lies entirely before it.
    Eb,
}

impl DatePrefix {
    /// The two-letter code.
    pub const fn code(self) -> &'static str {
        match self {
            DatePrefix::Eq => "eq",
            DatePrefix::Ne => "ne",
            DatePrefix::Gt => "gt",
            DatePrefix::Lt => "lt",
            DatePrefix::Ge => "ge",
            DatePrefix::Le => "le",
            DatePrefix::Sa => "sa",
            DatePrefix::Eb => "eb",
        }
    }
}

/// One date search value: a prefix and the half-open interval `[start, end)` its text covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateParam {
    /// How to compare.
    pub prefix: DatePrefix,
    /// First instant of the value's interval.
    pub start: Timestamp,
    /// First instant after it.
    pub end: Timestamp,
}

impl DateParam {
    /// Parses `[prefix]value`. The error is a sentence for the client.
    pub fn parse(text: &str) -> Result<DateParam, String> {
        let (prefix, value) = split_prefix(text)?;
        let (start, end) = parse_interval(value)?;
        Ok(DateParam {
            prefix,
            start: Timestamp::from_micros(start),
            end: Timestamp::from_micros(end),
        })
    }

    /// Whether a target covering `[target_start, target_end)` matches (R4 search semantics).
    pub fn matches_range(&self, target_start: Timestamp, target_end: Timestamp) -> bool {
        let (start, end) = (self.start, self.end);
        let contained = start <= target_start && target_end <= end;
        match self.prefix {
            DatePrefix::Eq => contained,
            DatePrefix::Ne => !contained,
            DatePrefix::Gt => target_end > end,
            DatePrefix::Lt => target_start < start,
            DatePrefix::Ge => target_end > end || contained,
            DatePrefix::Le => target_start < start || contained,
            DatePrefix::Sa => target_start >= end,
            DatePrefix::Eb => target_end <= start,
        }
    }

    /// Whether the instant `time` matches (a target of one microsecond).
    pub fn matches_instant(&self, time: Timestamp) -> bool {
        self.instants().contains(time)
    }

    /// The instants this value matches.
    pub fn instants(&self) -> TimeWindow {
        let (start, end) = (self.start, self.end);
        match self.prefix {
            DatePrefix::Eq => TimeWindow::between(start, end),
            DatePrefix::Ne => TimeWindow::between(start, end).complement(),
            DatePrefix::Gt | DatePrefix::Sa => TimeWindow::between(end, Timestamp::MAX),
            DatePrefix::Lt | DatePrefix::Eb => TimeWindow::between(Timestamp::MIN, start),
            DatePrefix::Ge => TimeWindow::between(start, Timestamp::MAX),
            DatePrefix::Le => TimeWindow::between(Timestamp::MIN, end),
        }
    }
}

fn split_prefix(text: &str) -> Result<(DatePrefix, &str), String> {
    let prefix = match text.get(..2) {
        Some("eq") => DatePrefix::Eq,
        Some("ne") => DatePrefix::Ne,
        Some("gt") => DatePrefix::Gt,
        Some("lt") => DatePrefix::Lt,
        Some("ge") => DatePrefix::Ge,
        Some("le") => DatePrefix::Le,
        Some("sa") => DatePrefix::Sa,
        Some("eb") => DatePrefix::Eb,
        Some("ap") => {
            return Err("prefix ap (approximately) is not supported; use ge and le".to_owned());
        }
        Some(other) if other.bytes().all(|byte| byte.is_ascii_alphabetic()) => {
            return Err("unknown prefix; use eq, ne, gt, lt, ge, le, sa or eb".to_owned());
        }
        _ => return Ok((DatePrefix::Eq, text)),
    };
    Ok((prefix, &text[2..]))
}

/// A cursor over the ASCII bytes of a date value.
struct Reader<'a> {
    text: &'a str,
    position: usize,
}

impl Reader<'_> {
    fn digits(&mut self, count: usize, what: &str) -> Result<i32, String> {
        let part = self
            .text
            .get(self.position..self.position + count)
            .filter(|part| part.bytes().all(|byte| byte.is_ascii_digit()))
            .ok_or_else(|| {
                format!(
                    "expected {count} digits of {what} at position {}",
                    self.position + 1
                )
            })?;
        self.position += count;
        part.parse()
            .map_err(|_| format!("the {what} is not a number"))
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.position).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.peek() == Some(byte) {
            self.position += 1;
            Ok(())
        } else {
            Err(format!(
                "expected {:?} at position {}",
                char::from(byte),
                self.position + 1
            ))
        }
    }

    fn at_end(&self) -> bool {
        self.position == self.text.len()
    }
}

const FORMAT_HINT: &str =
    "dates are YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.ffffff]] with Z or +hh:mm";

/// Parses a date value into its half-open interval of microseconds. Errors name the position and
/// the part at fault, never the value (a searched birth date is patient data).
fn parse_interval(text: &str) -> Result<(i64, i64), String> {
    let fail = |message: String| format!("{message}; {FORMAT_HINT}");
    let mut reader = Reader { text, position: 0 };
    let year = reader.digits(4, "year").map_err(fail)?;
    if year == 0 {
        return Err(fail("year 0000 does not exist".to_owned()));
    }
    if reader.at_end() {
        let start = date_micros(year, Month::January, 1).map_err(fail)?;
        let length = i64::from(time::util::days_in_year(year)) * MICROS_PER_DAY;
        return Ok((start, start + length));
    }
    reader.expect(b'-').map_err(fail)?;
    let month = reader.digits(2, "month").map_err(fail)?;
    let month = u8::try_from(month)
        .ok()
        .and_then(|month| Month::try_from(month).ok())
        .ok_or_else(|| fail("the month does not exist (01 to 12)".to_owned()))?;
    if reader.at_end() {
        let start = date_micros(year, month, 1).map_err(fail)?;
        let length = i64::from(month.length(year)) * MICROS_PER_DAY;
        return Ok((start, start + length));
    }
    reader.expect(b'-').map_err(fail)?;
    let day = reader.digits(2, "day").map_err(fail)?;
    let day = u8::try_from(day).map_err(|_| fail("the day does not exist".to_owned()))?;
    let date = Date::from_calendar_date(year, month, day)
        .map_err(|_| fail("the day does not exist in that month".to_owned()))?;
    if reader.at_end() {
        let start = date_micros(year, month, day).map_err(fail)?;
        return Ok((start, start + MICROS_PER_DAY));
    }
    reader.expect(b'T').map_err(fail)?;
    let hour = reader.digits(2, "hour").map_err(fail)?;
    reader.expect(b':').map_err(fail)?;
    let minute = reader.digits(2, "minute").map_err(fail)?;
    let mut second = 0;
    let mut micro = 0;
    let mut width = 60 * MICROS_PER_SECOND;
    if reader.peek() == Some(b':') {
        reader.position += 1;
        second = reader.digits(2, "second").map_err(fail)?;
        width = MICROS_PER_SECOND;
        if reader.peek() == Some(b'.') {
            reader.position += 1;
            let digits = text[reader.position..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            if digits == 0 || digits > 6 {
                return Err(fail(
                    "fractional seconds need 1 to 6 digits (Galen keeps microseconds)".to_owned(),
                ));
            }
            let fraction = reader.digits(digits, "fraction").map_err(fail)?;
            let scale = 10_i32.pow(u32::try_from(6 - digits).unwrap_or(0));
            micro = fraction * scale;
            width = i64::from(scale);
        }
    }
    let offset = match reader.peek() {
        Some(b'Z') => {
            reader.position += 1;
            UtcOffset::UTC
        }
        Some(sign @ (b'+' | b'-' | b' ')) => {
            reader.position += 1;
            let hours = reader.digits(2, "offset hours").map_err(fail)?;
            reader.expect(b':').map_err(fail)?;
            let minutes = reader.digits(2, "offset minutes").map_err(fail)?;
            // FHIR's dateTime allows offsets from -14:00 to +14:00.
            if minutes > 59 || hours > 14 || (hours == 14 && minutes > 0) {
                return Err(fail("offset out of range (-14:00 to +14:00)".to_owned()));
            }
            let (hours, minutes) = if sign == b'-' {
                (-hours, -minutes)
            } else {
                (hours, minutes)
            };
            let hours = i8::try_from(hours).map_err(|_| fail("offset out of range".to_owned()))?;
            let minutes =
                i8::try_from(minutes).map_err(|_| fail("offset out of range".to_owned()))?;
            UtcOffset::from_hms(hours, minutes, 0)
                .map_err(|_| fail("offset out of range".to_owned()))?
        }
        None => {
            return Err(fail(
                "a time needs an offset (Z or +hh:mm): Galen does not guess time zones".to_owned(),
            ));
        }
        Some(_) => {
            return Err(fail(format!(
                "unexpected text at position {}",
                reader.position + 1
            )));
        }
    };
    if !reader.at_end() {
        return Err(fail(format!(
            "unexpected text at position {}",
            reader.position + 1
        )));
    }
    let to_u8 = |value: i32, what: &str| {
        u8::try_from(value).map_err(|_| fail(format!("the {what} is out of range")))
    };
    let time = Time::from_hms_micro(
        to_u8(hour, "hour")?,
        to_u8(minute, "minute")?,
        to_u8(second, "second")?,
        u32::try_from(micro).unwrap_or(u32::MAX),
    )
    .map_err(|_| fail("the time is not a time of day".to_owned()))?;
    let nanos = PrimitiveDateTime::new(date, time)
        .assume_offset(offset)
        .unix_timestamp_nanos();
    let start = i64::try_from(nanos / 1_000).map_err(|_| fail("out of range".to_owned()))?;
    Ok((start, start + width))
}

fn date_micros(year: i32, month: Month, day: u8) -> Result<i64, String> {
    let date = Date::from_calendar_date(year, month, day)
        .map_err(|_| "the day does not exist in that month".to_owned())?;
    Ok(date.midnight().assume_utc().unix_timestamp() * MICROS_PER_SECOND)
}

/// A set of instants: sorted, disjoint, non-empty half-open intervals `[from, to)`.
///
/// The whole time line is `[Timestamp::MIN, Timestamp::MAX)` (so `Timestamp::MAX` itself, some
/// 290,000 years from now, is never in a window).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TimeWindow {
    intervals: Vec<(Timestamp, Timestamp)>,
}

impl TimeWindow {
    /// Every instant.
    pub fn all() -> TimeWindow {
        TimeWindow::between(Timestamp::MIN, Timestamp::MAX)
    }

    /// No instant.
    pub fn empty() -> TimeWindow {
        TimeWindow {
            intervals: Vec::new(),
        }
    }

    /// `[from, to)`; empty when `to <= from`.
    pub fn between(from: Timestamp, to: Timestamp) -> TimeWindow {
        if from < to {
            TimeWindow {
                intervals: vec![(from, to)],
            }
        } else {
            TimeWindow::empty()
        }
    }

    /// The intervals, in time order: query the store once per interval.
    pub fn intervals(&self) -> &[(Timestamp, Timestamp)] {
        &self.intervals
    }

    /// Whether no instant is in the window.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// The smallest single interval covering the window.
    pub fn bounds(&self) -> Option<(Timestamp, Timestamp)> {
        let first = self.intervals.first()?;
        let last = self.intervals.last()?;
        Some((first.0, last.1))
    }

    /// Whether `time` is in the window.
    pub fn contains(&self, time: Timestamp) -> bool {
        self.intervals
            .iter()
            .any(|(from, to)| *from <= time && time < *to)
    }

    /// Instants in both windows.
    pub fn intersect(&self, other: &TimeWindow) -> TimeWindow {
        let mut intervals = Vec::new();
        let (mut left, mut right) = (0, 0);
        while let (Some(a), Some(b)) = (self.intervals.get(left), other.intervals.get(right)) {
            let from = a.0.max(b.0);
            let to = a.1.min(b.1);
            if from < to {
                intervals.push((from, to));
            }
            if a.1 <= b.1 {
                left += 1;
            } else {
                right += 1;
            }
        }
        TimeWindow { intervals }
    }

    /// Instants in either window.
    pub fn union(&self, other: &TimeWindow) -> TimeWindow {
        let mut all: Vec<(Timestamp, Timestamp)> = self
            .intervals
            .iter()
            .chain(&other.intervals)
            .copied()
            .collect();
        all.sort();
        let mut intervals: Vec<(Timestamp, Timestamp)> = Vec::with_capacity(all.len());
        for (from, to) in all {
            match intervals.last_mut() {
                Some(last) if from <= last.1 => last.1 = last.1.max(to),
                _ => intervals.push((from, to)),
            }
        }
        TimeWindow { intervals }
    }

    /// Instants not in the window.
    pub fn complement(&self) -> TimeWindow {
        let mut intervals = Vec::with_capacity(self.intervals.len() + 1);
        let mut cursor = Timestamp::MIN;
        for (from, to) in &self.intervals {
            if cursor < *from {
                intervals.push((cursor, *from));
            }
            cursor = *to;
        }
        if cursor < Timestamp::MAX {
            intervals.push((cursor, Timestamp::MAX));
        }
        TimeWindow { intervals }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    fn check(text: &str, prefix: DatePrefix, start: &str, end: &str) {
        let parsed = DateParam::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"));
        assert_eq!(
            parsed,
            DateParam {
                prefix,
                start: at(start),
                end: at(end)
            },
            "{text}"
        );
    }

    #[test]
    fn precision_makes_the_interval() {
        use DatePrefix::*;
        check("2026", Eq, "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z");
        check(
            "2024-02",
            Eq,
            "2024-02-01T00:00:00Z",
            "2024-03-01T00:00:00Z",
        );
        check(
            "2023-02",
            Eq,
            "2023-02-01T00:00:00Z",
            "2023-03-01T00:00:00Z",
        );
        check(
            "2024-12",
            Eq,
            "2024-12-01T00:00:00Z",
            "2025-01-01T00:00:00Z",
        );
        check(
            "2024-02-29",
            Eq,
            "2024-02-29T00:00:00Z",
            "2024-03-01T00:00:00Z",
        );
        check(
            "ge2026-11-23T08:15Z",
            Ge,
            "2026-11-23T08:15:00Z",
            "2026-11-23T08:16:00Z",
        );
        check(
            "lt2026-11-23T08:15:00+01:00",
            Lt,
            "2026-11-23T07:15:00Z",
            "2026-11-23T07:15:01Z",
        );
        check(
            "sa2026-11-23T08:15:00.25-05:30",
            Sa,
            "2026-11-23T13:45:00.250Z",
            "2026-11-23T13:45:00.260Z",
        );
        check(
            "eb2026-11-23T08:15:00.123456Z",
            Eb,
            "2026-11-23T08:15:00.123456Z",
            "2026-11-23T08:15:00.123457Z",
        );
        check(
            "2026-11-23T08:15:00+14:00",
            Eq,
            "2026-11-22T18:15:00Z",
            "2026-11-22T18:15:01Z",
        );
        // A '+' that was not percent-encoded arrives as a space.
        check(
            "ne2026-11-23T08:15:00 01:00",
            Ne,
            "2026-11-23T07:15:00Z",
            "2026-11-23T07:15:01Z",
        );
    }

    #[test]
    fn year_9999_ends_a_microsecond_after_its_last_instant() {
        let parsed = DateParam::parse("9999").expect("9999");
        assert_eq!(parsed.end, at("9999-12-31T23:59:59.999999Z").add_micros(1));
    }

    #[test]
    fn malformed_values_are_refused_with_a_reason() {
        let cases = [
            ("", "expected 4 digits of year"),
            ("26", "expected 4 digits of year"),
            ("0000", "year 0000"),
            ("2026-13", "the month does not exist"),
            ("2026-02-30", "the day does not exist in that month"),
            ("2026-1-01", "expected 2 digits of month"),
            ("2026-11-23T08", "expected ':'"),
            ("2026-11-23T08:15", "needs an offset"),
            ("2026-11-23T08:15:00", "needs an offset"),
            ("2026-11-23T24:00:00Z", "not a time of day"),
            ("2026-11-23T08:60Z", "not a time of day"),
            ("2026-11-23T08:15:60Z", "not a time of day"),
            ("2026-11-23T08:15:00.1234567Z", "1 to 6 digits"),
            ("2026-11-23T08:15:00.Z", "1 to 6 digits"),
            ("2026-11-23T08:15:00+25:00", "offset out of range"),
            ("2026-11-23T08:15:00+14:30", "offset out of range"),
            ("2026-11-23T08:15:00-10:60", "offset out of range"),
            ("2026-11-23T08:15:00+0100", "expected ':'"),
            ("2026-11-23T08:15:00Zjunk", "unexpected text"),
            ("2026-11-23 08:15:00Z", "expected 'T'"),
            ("ap2026", "ap (approximately) is not supported"),
            ("xx2026", "unknown prefix"),
        ];
        for (text, expect) in cases {
            match DateParam::parse(text) {
                Ok(parsed) => panic!("{text:?} parsed as {parsed:?}"),
                Err(message) => {
                    assert!(message.contains(expect), "{text:?}: {message}");
                    // A searched date may be a birth date: the value is never repeated.
                    assert!(
                        text.len() < 5 || !message.contains(&text[..5]),
                        "{text:?} repeated: {message}"
                    );
                }
            }
        }
    }

    #[test]
    fn prefixes_on_instants_have_exact_boundaries() {
        // 2026-11-23 is [s, e). Check the instants just before s, at s, just before e and at e.
        let s = at("2026-11-23T00:00:00Z");
        let e = at("2026-11-24T00:00:00Z");
        let probes = [s.add_micros(-1), s, e.add_micros(-1), e];
        let cases = [
            ("eq", [false, true, true, false]),
            ("ne", [true, false, false, true]),
            ("gt", [false, false, false, true]),
            ("sa", [false, false, false, true]),
            ("lt", [true, false, false, false]),
            ("eb", [true, false, false, false]),
            ("ge", [false, true, true, true]),
            ("le", [true, true, true, false]),
        ];
        for (prefix, expect) in cases {
            let param = DateParam::parse(&format!("{prefix}2026-11-23")).expect(prefix);
            for (probe, expected) in probes.iter().zip(expect) {
                assert_eq!(
                    param.matches_instant(*probe),
                    expected,
                    "{prefix} at {probe}"
                );
                // The instant rule agrees with the general range rule for a 1 µs target.
                assert_eq!(
                    param.matches_range(*probe, probe.add_micros(1)),
                    expected,
                    "{prefix} range at {probe}"
                );
            }
        }
    }

    #[test]
    fn prefixes_on_ranges_follow_the_specification() {
        // Target: the day 1950-02-28 (a birth date). Search values of several precisions.
        let day = (at("1950-02-28T00:00:00Z"), at("1950-03-01T00:00:00Z"));
        let matches = |text: &str| {
            DateParam::parse(text)
                .expect(text)
                .matches_range(day.0, day.1)
        };
        assert!(matches("1950"));
        assert!(matches("1950-02"));
        assert!(matches("1950-02-28"));
        assert!(!matches("1950-03"));
        // A minute inside the day does not contain the day, and the day extends past it.
        assert!(!matches("eq1950-02-28T12:00Z"));
        assert!(matches("ne1950-02-28T12:00Z"));
        assert!(matches("gt1950-02-28T12:00Z"));
        assert!(matches("lt1950-02-28T12:00Z"));
        assert!(!matches("sa1950-02-28T12:00Z"));
        assert!(!matches("eb1950-02-28T12:00Z"));
        assert!(matches("ge1950-02-28"));
        assert!(matches("le1950-02-28"));
        assert!(!matches("gt1950-02-28"));
        assert!(!matches("lt1950-02-28"));
        assert!(matches("sa1950-02-27"));
        assert!(!matches("sa1950-02-28"));
        assert!(matches("eb1950-03-01"));
        assert!(!matches("eb1950-02-28"));
        assert!(matches("gt1949"));
        assert!(!matches("gt1950"));
        assert!(matches("ge1950"));
    }

    #[test]
    fn windows_combine_as_sets() {
        let t = Timestamp::from_micros;
        let a = TimeWindow::between(t(0), t(10));
        let b = TimeWindow::between(t(5), t(20));
        assert_eq!(a.intersect(&b).intervals(), [(t(5), t(10))]);
        assert_eq!(a.union(&b).intervals(), [(t(0), t(20))]);
        let gap = TimeWindow::between(t(30), t(40));
        assert_eq!(a.union(&gap).intervals(), [(t(0), t(10)), (t(30), t(40))]);
        assert_eq!(a.union(&gap).bounds(), Some((t(0), t(40))));
        let touching = TimeWindow::between(t(10), t(12));
        assert_eq!(a.union(&touching).intervals(), [(t(0), t(12))]);
        assert!(a.intersect(&touching).is_empty());
        assert_eq!(
            a.complement().intervals(),
            [(Timestamp::MIN, t(0)), (t(10), Timestamp::MAX)]
        );
        assert_eq!(a.complement().complement(), a);
        assert!(TimeWindow::all().complement().is_empty());
        assert_eq!(TimeWindow::empty().complement(), TimeWindow::all());
        assert!(TimeWindow::between(t(3), t(3)).is_empty());
        let ne = DateParam::parse("ne2026").expect("ne").instants();
        let ge = DateParam::parse("ge2025").expect("ge").instants();
        let lt = DateParam::parse("lt2028").expect("lt").instants();
        let window = ne.intersect(&ge).intersect(&lt);
        assert_eq!(
            window.intervals(),
            [
                (at("2025-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z")),
                (at("2027-01-01T00:00:00Z"), at("2028-01-01T00:00:00Z")),
            ]
        );
        assert!(!window.contains(at("2026-06-01T00:00:00Z")));
        assert!(window.contains(at("2027-06-01T00:00:00Z")));
    }
}
