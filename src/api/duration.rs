//! Durations as written in a ConfigRollout: `30s`, `5m`, `1h30m`, `500ms`, `1.5s`.
//!
//! The grammar is exactly the CRD's [`super::DURATION_PATTERN`] (a subset of Go's
//! `time.ParseDuration`, so the API server's CEL `duration()` reads the same value),
//! with Go's limit of about 292 years.

use std::time::Duration;

/// The longest duration, as in Go (`math.MaxInt64` nanoseconds) and CEL.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration (use e.g. 30s, 5m, 1h30m)")]
    Empty,
    #[error(
        "{input:?} is not a duration: expected a number at byte {offset} (use e.g. 30s, 5m, 1h30m)"
    )]
    ExpectedNumber { input: String, offset: usize },
    #[error(
        "{input:?} is not a duration: missing unit after {number:?} (use ms, s, m or h, e.g. 30s, 5m, 1h30m)"
    )]
    MissingUnit { input: String, number: String },
    #[error("{input:?} is not a duration: unknown unit {unit:?} (use ms, s, m or h)")]
    UnknownUnit { input: String, unit: String },
    #[error("{input:?} is too long a duration (at most about 292 years)")]
    Overflow { input: String },
}

/// Parses a duration such as `1h30m`, `500ms` or `1.5s` (units `ms`, `s`, `m`, `h`;
/// each number may have a fraction). Fractions finer than a nanosecond are truncated.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    let bytes = input.as_bytes();
    let mut pos = 0;
    let mut total: u128 = 0;
    let overflow = || DurationError::Overflow {
        input: input.to_string(),
    };
    while pos < bytes.len() {
        let start = pos;
        let whole = digits(bytes, &mut pos);
        if whole.is_empty() {
            return Err(DurationError::ExpectedNumber {
                input: input.to_string(),
                offset: start,
            });
        }
        let mut fraction = "";
        if bytes.get(pos) == Some(&b'.') {
            pos += 1;
            fraction = digits(bytes, &mut pos);
            if fraction.is_empty() {
                return Err(DurationError::ExpectedNumber {
                    input: input.to_string(),
                    offset: pos,
                });
            }
        }
        let unit_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_alphabetic() {
            pos += 1;
        }
        let unit_ns: u128 = match &input[unit_start..pos] {
            "" => {
                return Err(DurationError::MissingUnit {
                    input: input.to_string(),
                    number: input[start..unit_start].to_string(),
                });
            }
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            unit => {
                return Err(DurationError::UnknownUnit {
                    input: input.to_string(),
                    unit: unit.to_string(),
                });
            }
        };
        // More digits than u128 holds are an overflow long before they are parsed.
        let whole: u128 = whole.parse().map_err(|_| overflow())?;
        let mut nanos = whole.checked_mul(unit_ns).ok_or_else(overflow)?;
        // Nanosecond precision needs at most 13 fraction digits (unit up to 3.6e12 ns).
        let fraction = &fraction[..fraction.len().min(13)];
        if !fraction.is_empty() {
            let scale = 10u128.pow(fraction.len() as u32);
            let frac: u128 = fraction.parse().map_err(|_| overflow())?;
            nanos += frac * unit_ns / scale;
        }
        total = total
            .checked_add(nanos)
            .filter(|t| *t <= MAX_NANOS)
            .ok_or_else(overflow)?;
    }
    // MAX_NANOS fits in u64, so this conversion cannot fail.
    Ok(Duration::from_nanos(
        u64::try_from(total).map_err(|_| overflow())?,
    ))
}

fn digits<'a>(bytes: &'a [u8], pos: &mut usize) -> &'a str {
    let start = *pos;
    while *pos < bytes.len() && bytes[*pos].is_ascii_digit() {
        *pos += 1;
    }
    // Only ASCII digits were consumed, so this is valid UTF-8.
    std::str::from_utf8(&bytes[start..*pos]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DURATION_PATTERN;
    use proptest::prelude::*;

    fn ok(s: &str) -> Duration {
        parse_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("1h1m1s1ms"), Duration::from_millis(3_661_001));
        assert_eq!(ok("0.001ms"), Duration::from_nanos(1000));
        assert_eq!(ok("1.0000000001s"), Duration::from_nanos(1_000_000_000));
        assert_eq!(ok("2562047h"), Duration::from_secs(2_562_047 * 3600));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(
            matches!(parse_duration("15"), Err(DurationError::MissingUnit { number, .. }) if number == "15")
        );
        assert!(
            matches!(parse_duration("5d"), Err(DurationError::UnknownUnit { unit, .. }) if unit == "d")
        );
        assert!(matches!(
            parse_duration("5 m"),
            Err(DurationError::UnknownUnit { .. }) | Err(DurationError::MissingUnit { .. })
        ));
        assert!(matches!(
            parse_duration("-5m"),
            Err(DurationError::ExpectedNumber { offset: 0, .. })
        ));
        assert!(matches!(
            parse_duration("1.s"),
            Err(DurationError::ExpectedNumber { .. })
        ));
        assert!(matches!(
            parse_duration(".5s"),
            Err(DurationError::ExpectedNumber { .. })
        ));
        assert!(matches!(
            parse_duration("5mm"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("2562048h"),
            Err(DurationError::Overflow { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999999999999999999999h"),
            Err(DurationError::Overflow { .. })
        ));
        assert!(
            parse_duration("15")
                .unwrap_err()
                .to_string()
                .contains("\"15\" is not a duration")
        );
    }

    proptest! {
        /// The parser and the CRD's pattern accept the same language (short of overflow).
        #[test]
        fn agrees_with_the_crd_pattern(s in "([0-9]{1,4}(\\.[0-9]{1,3})?(ms|s|m|h|d|us)?){0,3}[.a-z0-9 ]{0,2}") {
            let pattern = regex::Regex::new(DURATION_PATTERN).unwrap();
            let parsed = parse_duration(&s);
            prop_assume!(!matches!(parsed, Err(DurationError::Overflow { .. })));
            prop_assert_eq!(parsed.is_ok(), pattern.is_match(&s), "{:?}", s);
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_duration(&s);
        }
    }
}
