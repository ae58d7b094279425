//! HL7 v2 date/time (DTM): `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`.

/// A parsed DTM as microseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hl7Time {
    /// Microseconds since 1970-01-01T00:00:00Z.
    pub micros: i64,
    /// The text had no UTC offset and was read as UTC (HL7 would make it the sender's local
    /// time, which a receiver cannot know).
    pub assumed_utc: bool,
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

fn number(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses a DTM. `None` if it is not one (the caller reports where).
pub fn parse_time(text: &str) -> Option<Hl7Time> {
    let text = text.trim();
    let (body, offset) = match text.find(['+', '-']) {
        Some(position) => (&text[..position], Some(&text[position..])),
        None => (text, None),
    };
    let (digits, fraction) = match body.split_once('.') {
        Some((digits, fraction)) => (digits, Some(fraction)),
        None => (body, None),
    };
    // Only ASCII digits, so the byte slicing below stays on character boundaries (the fuzzer
    // found a non-ASCII character inside a date).
    if !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14)
        || !digits.bytes().all(|byte| byte.is_ascii_digit())
    {
        return None;
    }
    let part = |from: usize, to: usize, default: i64| {
        if digits.len() >= to {
            number(&digits[from..to])
        } else {
            Some(default)
        }
    };
    let year = part(0, 4, 0)?;
    let month = part(4, 6, 1)?;
    let day = part(6, 8, 1)?;
    let hour = part(8, 10, 0)?;
    let minute = part(10, 12, 0)?;
    let second = part(12, 14, 0)?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut micros = ((days_from_civil(year, month, day) * 24 + hour) * 60 + minute) * 60 + second;
    micros *= 1_000_000;
    if let Some(fraction) = fraction {
        if digits.len() != 14 || fraction.is_empty() || fraction.len() > 4 {
            return None;
        }
        let value = number(fraction)?;
        micros += value * 10_i64.pow(6 - fraction.len() as u32);
    }
    let assumed_utc = offset.is_none();
    if let Some(offset) = offset {
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let digits = &offset[1..];
        if digits.len() != 4 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        let hours = number(&digits[..2])?;
        let minutes = number(&digits[2..])?;
        if hours > 14 || minutes > 59 {
            return None;
        }
        micros -= sign * (hours * 60 + minutes) * 60 * 1_000_000;
    }
    Some(Hl7Time {
        micros,
        assumed_utc,
    })
}

/// Formats microseconds since the epoch as `YYYYMMDDHHMMSS.SSSS+0000` (UTC).
pub fn format_time(micros: i64) -> String {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000) / 100;
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}.{fraction:04}+0000",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-23T08:00:00Z.
    const T: i64 = 1_795_420_800_000_000;

    #[test]
    fn precisions_offsets_and_fractions() {
        let check = |text: &str, micros: i64, assumed_utc: bool| {
            assert_eq!(
                parse_time(text),
                Some(Hl7Time {
                    micros,
                    assumed_utc
                }),
                "{text}"
            );
        };
        check("20261123080000+0000", T, false);
        check("20261123090000+0100", T, false);
        check("20261123033000-0430", T, false);
        check("20261123080000", T, true);
        check("202611230800", T, true);
        check("2026112308", T, true);
        check("20261123", T - 8 * 3_600_000_000, true);
        check("20261123080000.5+0000", T + 500_000, false);
        check("20261123080000.1234", T + 123_400, true);
        check("19700101000000+0000", 0, false);
        check("20240229120000+0000", 1_709_208_000_000_000, false);
        for bad in [
            "",
            "2026",
            "2026112",
            "20261323080000",
            "20261131080000",
            "20250229080000",
            "20261123250000",
            "20261123080000+01",
            "20261123080000.",
            "2026112308000x",
            "20261123080000.12345",
            "202611230800.5",
            // Found by the `oru` fuzz target: non-ASCII characters inside a date.
            "202\u{fffd}23080005",
            "20261123080000+0\u{e9}0",
        ] {
            if bad == "2026" {
                assert!(parse_time(bad).is_some(), "a year alone is a DTM");
                continue;
            }
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formatting_inverts_parsing() {
        for micros in [
            0,
            T,
            T + 123_400,
            951_782_400_000_000,
            4_102_444_799_999_900,
        ] {
            let text = format_time(micros);
            assert_eq!(
                parse_time(&text).map(|time| time.micros),
                Some(micros),
                "{text}"
            );
        }
        assert_eq!(format_time(T), "20261123080000.0000+0000");
    }
}
