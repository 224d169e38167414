//! Times on the wire: milliseconds since the Unix epoch, or RFC 3339 text.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time given by a client: milliseconds since the Unix epoch (`1795860000000`) or
/// RFC 3339 text (`2026-11-28T10:00:00Z`, `2026-11-28T11:00:00.250+01:00`, or a bare date
/// `2026-11-28`, meaning its midnight UTC). Sent as milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> u64 {
        self.0
    }

    /// As RFC 3339 in UTC with milliseconds: `2026-11-28T10:00:00.000Z`.
    pub fn rfc3339(self) -> String {
        let millis = i64::try_from(self.0).unwrap_or(i64::MAX);
        let (days, in_day) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
        let (year, month, day) = civil_from_days(days);
        let seconds = in_day / 1000;
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60,
            in_day % 1000
        )
    }
}

impl From<u64> for Timestamp {
    fn from(millis: u64) -> Self {
        Timestamp(millis)
    }
}

/// Text that is neither milliseconds nor RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampError(String);

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid time {:?}: expected milliseconds since the Unix epoch or RFC 3339 \
             such as 2026-11-28T10:00:00Z",
            self.0
        )
    }
}

impl std::error::Error for TimestampError {}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse()
                .map(Timestamp)
                .map_err(|_| TimestampError(text.to_owned()));
        }
        rfc3339_millis(text)
            .map(Timestamp)
            .ok_or_else(|| TimestampError(text.to_owned()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimestampVisitor;
        impl Visitor<'_> for TimestampVisitor {
            type Value = Timestamp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("milliseconds since the Unix epoch or an RFC 3339 time")
            }

            fn visit_u64<E: de::Error>(self, millis: u64) -> Result<Timestamp, E> {
                Ok(Timestamp(millis))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Timestamp, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(TimestampVisitor)
    }
}

/// `YYYY-MM-DD[(T|t| )HH:MM:SS[.fraction](Z|z|±HH:MM)]` as ms since the epoch; `None` for
/// anything else, an impossible date, or a time before the epoch.
fn rfc3339_millis(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = bytes.get(range)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    if bytes.len() < 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if bytes.len() == 10 {
        return u64::try_from(days * 86_400_000).ok();
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') || bytes.len() < 20 {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    // A leap second (60) counts as the last millisecond of its minute.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let ms: String = fraction[..digits]
            .chars()
            .chain("00".chars())
            .take(3)
            .collect();
        millis = ms.parse().ok()?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let hours: i64 = rest[1..3].parse().ok()?;
            let minutes: i64 = rest[4..6].parse().ok()?;
            if !rest[1..3].bytes().all(|b| b.is_ascii_digit())
                || !rest[4..6].bytes().all(|b| b.is_ascii_digit())
                || hours > 23
                || minutes > 59
            {
                return None;
            }
            let offset = hours * 60 + minutes;
            if *sign == b'+' { offset } else { -offset }
        }
        _ => return None,
    };
    let (second, millis) = if second == 60 {
        (59, 999)
    } else {
        (second, millis)
    };
    let total = ((days * 24 + hour) * 60 + minute - offset_minutes) * 60 + second;
    u64::try_from(total * 1000 + millis).ok()
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (negative before it).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Option<u64> {
        text.parse::<Timestamp>().ok().map(Timestamp::millis)
    }

    #[test]
    fn milliseconds_pass_through() {
        assert_eq!(parse("0"), Some(0));
        assert_eq!(parse("1795860000000"), Some(1_795_860_000_000));
    }

    #[test]
    fn rfc3339_in_utc_and_with_offsets() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(0));
        // 2026-11-28 is day 20,785 of the epoch.
        assert_eq!(parse("2026-11-28T00:00:00Z"), Some(20_785 * 86_400_000));
        assert_eq!(parse("2026-11-28"), Some(20_785 * 86_400_000));
        assert_eq!(
            parse("2026-11-28T10:30:15.25Z"),
            Some(20_785 * 86_400_000 + ((10 * 60 + 30) * 60 + 15) * 1000 + 250)
        );
        assert_eq!(
            parse("2026-11-28T11:30:15+01:00"),
            parse("2026-11-28T10:30:15Z")
        );
        assert_eq!(
            parse("2026-11-28t05:00:00-05:30"),
            parse("2026-11-28T10:30:00Z")
        );
        assert_eq!(parse("2024-02-29T00:00:00Z"), Some(19_782 * 86_400_000));
        assert_eq!(
            parse("2026-11-28T23:59:60Z"),
            parse("2026-11-28T23:59:59.999Z")
        );
    }

    #[test]
    fn formatting_and_parsing_agree() {
        for millis in [0, 951_782_400_000, 1_795_860_000_250, 4_102_444_799_999] {
            let text = Timestamp(millis).rfc3339();
            assert_eq!(parse(&text), Some(millis), "{text}");
        }
        assert_eq!(
            Timestamp(1_795_860_000_250).rfc3339(),
            "2026-11-28T10:00:00.250Z"
        );
    }

    #[test]
    fn impossible_or_malformed_times_are_refused() {
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28T10:00:00",
            "2026-11-28T10:00:00+1:00",
            "2026-11-28T10:00:00.Z",
            "1969-12-31T23:59:59Z",
            "-5",
        ] {
            let error = bad.parse::<Timestamp>().unwrap_err();
            assert!(error.to_string().contains("RFC 3339"), "{bad}: {error}");
        }
    }

    #[test]
    fn deserializes_from_a_number_or_text() {
        let from_number: Timestamp = serde_json::from_str("42").unwrap();
        let from_text: Timestamp = serde_json::from_str("\"1970-01-01T00:00:01Z\"").unwrap();
        assert_eq!((from_number.0, from_text.0), (42, 1000));
        assert!(serde_json::from_str::<Timestamp>("\"soon\"").is_err());
    }
}
