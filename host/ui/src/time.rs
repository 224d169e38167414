//! Times as the UI shows and reads them: UTC, `2026-05-01 12:30:05.123`, no time zone data.

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
pub fn format_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        ms % 1000
    )
}

/// The value of an `<input type="datetime-local" step="0.001">` for a time.
pub fn input_value(ms: u64) -> String {
    format_ms(ms).replacen(' ', "T", 1)
}

/// Reads a time: milliseconds since the epoch, or `YYYY-MM-DD[( |T)HH:MM[:SS[.mmm]]]` in UTC.
pub fn parse(text: &str) -> Option<u64> {
    let text = text.trim().trim_end_matches('Z').trim_end_matches(" UTC");
    if let Ok(ms) = text.parse::<u64>() {
        return Some(ms);
    }
    let (date, clock) = match text.split_once(['T', ' ']) {
        Some((date, clock)) => (date, clock),
        None => (text, "00:00"),
    };
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || !(1970..=9999).contains(&year) {
        return None;
    }
    let (clock, millis) = match clock.split_once('.') {
        Some((clock, fraction)) => {
            let digits: String = fraction.chars().take(3).collect();
            let value: u64 = format!("{digits:0<3}").parse().ok()?;
            (clock, value)
        }
        None => (clock, 0),
    };
    let mut clock_parts = clock.split(':');
    let hour: u64 = clock_parts.next()?.parse().ok()?;
    let minute: u64 = clock_parts.next().unwrap_or("0").parse().ok()?;
    let second: u64 = clock_parts.next().unwrap_or("0").parse().ok()?;
    if hour > 23 || minute > 59 || second > 60 || clock_parts.next().is_some() {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(((days * 86_400 + hour * 3600 + minute * 60 + second) * 1000) + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_and_parse_back() {
        assert_eq!(format_ms(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_ms(951_782_400_123), "2000-02-29 00:00:00.123");
        for ms in [0, 951_782_400_123, 1_767_225_599_999, 4_102_444_800_000] {
            assert_eq!(parse(&format_ms(ms)), Some(ms), "{}", format_ms(ms));
            assert_eq!(parse(&input_value(ms)), Some(ms));
        }
        assert_eq!(parse("2000-02-29T00:01"), Some(951_782_460_000));
        assert_eq!(parse("2000-02-29"), Some(951_782_400_000));
        assert_eq!(parse("1234"), Some(1234));
        assert_eq!(parse("2000-13-01"), None);
        assert_eq!(parse("yesterday"), None);
    }
}
