//! Points in time and the clock that supplies "now".
//!
//! Galen keeps time as microseconds since the Unix epoch in UTC. Device timestamps with an offset are
//! converted to UTC on parse; timestamps without an offset are refused, because guessing a device's
//! time zone silently shifts a patient's record.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time, microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Why a timestamp could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// Not an RFC 3339 date-time with an offset.
    #[error("time must be an RFC 3339 date-time with an offset, e.g. 2026-11-23T08:15:00Z")]
    Syntax,
    /// Representable in RFC 3339 but outside the range Galen stores.
    #[error("time is out of range")]
    OutOfRange,
}

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);
    /// The latest representable instant; used as an open interval end.
    pub const MAX: Timestamp = Timestamp(i64::MAX);
    /// The earliest representable instant.
    pub const MIN: Timestamp = Timestamp(i64::MIN);

    /// From microseconds since the epoch.
    pub const fn from_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    /// From whole seconds since the epoch.
    pub const fn from_seconds(seconds: i64) -> Timestamp {
        Timestamp(seconds.saturating_mul(1_000_000))
    }

    /// Microseconds since the epoch.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// This instant moved by `micros` (saturating).
    pub const fn add_micros(self, micros: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(micros))
    }

    /// This instant moved by whole seconds (saturating).
    pub const fn add_seconds(self, seconds: i64) -> Timestamp {
        self.add_micros(seconds.saturating_mul(1_000_000))
    }

    /// Parses an RFC 3339 date-time such as `2026-11-23T08:15:00.250+01:00`.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, TimestampError> {
        let parsed =
            OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|_| TimestampError::Syntax)?;
        let nanos = parsed.unix_timestamp_nanos();
        i64::try_from(nanos / 1_000)
            .map(Timestamp)
            .map_err(|_| TimestampError::OutOfRange)
    }

    /// RFC 3339 in UTC with millisecond precision, or microseconds when the instant needs them.
    pub fn to_rfc3339(self) -> String {
        let mut out = String::with_capacity(27);
        self.write_rfc3339(&mut out);
        out
    }

    /// Appends [`Timestamp::to_rfc3339`]'s text to `out` (no allocation when `out` has room):
    /// serialising long series is dominated by this.
    pub fn write_rfc3339(self, out: &mut String) {
        use std::fmt::Write;
        let seconds = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let Ok(date_time) = OffsetDateTime::from_unix_timestamp(seconds) else {
            out.push_str(if self.0 < 0 {
                "0000-01-01T00:00:00Z"
            } else {
                "9999-12-31T23:59:59Z"
            });
            return;
        };
        let (year, month, day) = (
            date_time.year(),
            u8::from(date_time.month()),
            date_time.day(),
        );
        let (hour, minute, second) = (date_time.hour(), date_time.minute(), date_time.second());
        let _ = write!(
            out,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}."
        );
        let _ = if micros % 1_000 == 0 {
            write!(out, "{:03}Z", micros / 1_000)
        } else {
            write!(out, "{micros:06}Z")
        };
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.to_rfc3339())
    }
}

/// The source of "now". Code that decides anything from time takes a clock (or a `now`
/// parameter) so that tests and replays control it.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The operating system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(micros)
    }
}

/// A clock that only moves when told to; for tests and replays.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock(AtomicI64::new(start.0))
    }

    /// Moves the clock to `to`.
    pub fn set(&self, to: Timestamp) {
        self.0.store(to.0, Ordering::SeqCst);
    }

    /// Moves the clock forward by `micros`.
    pub fn advance_micros(&self, micros: i64) {
        self.0.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_into_utc() {
        let utc = Timestamp::parse_rfc3339("2026-11-23T08:15:00Z").expect("utc");
        let plus_one = Timestamp::parse_rfc3339("2026-11-23T09:15:00+01:00").expect("offset");
        assert_eq!(utc, plus_one);
        assert_eq!(utc.micros(), 1_795_421_700_000_000);
    }

    #[test]
    fn refuses_local_times_without_offset() {
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-23T08:15:00"),
            Err(TimestampError::Syntax)
        );
        assert_eq!(
            Timestamp::parse_rfc3339("yesterday"),
            Err(TimestampError::Syntax)
        );
    }

    #[test]
    fn formats_millis_and_micros() {
        let millis = Timestamp::parse_rfc3339("2026-11-23T08:15:00.250Z").expect("millis");
        assert_eq!(millis.to_rfc3339(), "2026-11-23T08:15:00.250Z");
        let micros = millis.add_micros(7);
        assert_eq!(micros.to_rfc3339(), "2026-11-23T08:15:00.250007Z");
        assert_eq!(Timestamp::parse_rfc3339(&micros.to_rfc3339()), Ok(micros));
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_seconds(10));
        assert_eq!(clock.now(), Timestamp::from_seconds(10));
        clock.advance_micros(1_500_000);
        assert_eq!(clock.now().micros(), 11_500_000);
        clock.set(Timestamp::EPOCH);
        assert_eq!(clock.now(), Timestamp::EPOCH);
    }
}
