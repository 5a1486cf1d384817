//! Go-style durations (`30s`, `5m`, `1h30m`, `500ms`, `1.5s`).
//!
//! Admission already checks the pattern, but a manifest can predate the CRD's
//! rules, so the engine parses defensively and reports errors as `Valid=False`.

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("invalid duration {0:?}: expected e.g. 30s, 5m, 1h30m or 500ms")]
    Invalid(String),
    #[error("duration {0:?} is too long")]
    Overflow(String),
}

/// Parses a Go-style duration: one or more `<number><unit>` parts, with units
/// `ns`, `us`, `µs`, `ms`, `s`, `m`, `h` and an optional fraction (`1.5s`).
/// A bare `0` is accepted, as in Go; signs are not (no duration here is negative).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = || DurationError::Invalid(s.to_string());
    let overflow = || DurationError::Overflow(s.to_string());
    let mut rest = s;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_part, after_int) = rest.split_at(int_len);
        let (frac_part, after_num) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after_dot.len());
                after_dot.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = after_num
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after_num.len());
        let (unit, after_unit) = after_num.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(invalid()),
        };
        let int_value: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| overflow())?
        };
        let mut part = int_value.checked_mul(unit_nanos).ok_or_else(overflow)?;
        // Digits beyond nanosecond precision cannot matter: keep at most 19.
        let mut scale = unit_nanos;
        for digit in frac_part.bytes().take(19) {
            scale /= 10;
            part = part
                .checked_add(u128::from(digit - b'0') * scale)
                .ok_or_else(overflow)?;
        }
        total_nanos = total_nanos.checked_add(part).ok_or_else(overflow)?;
        rest = after_unit;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| overflow())?;
    let nanos = u32::try_from(total_nanos % 1_000_000_000).map_err(|_| overflow())?;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        let cases = [
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h30m", Duration::from_secs(5400)),
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1500)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("2h0m3s", Duration::from_secs(7203)),
            (".5m", Duration::from_secs(30)),
            ("10us", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_duration(input), Ok(expected), "{input}");
        }
    }

    #[test]
    fn rejects_malformed_durations() {
        for input in [
            "", "5", "s", "1.s.", "-5s", "5 m", "1d", "1.5", "m5", "1..5s", "+1s",
        ] {
            assert!(parse_duration(input).is_err(), "{input} should be rejected");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_round_trips_whole_seconds(s in "\\PC{0,24}", secs in 0u64..10_000_000) {
            let _ = parse_duration(&s);
            proptest::prop_assert_eq!(parse_duration(&format!("{secs}s")), Ok(Duration::from_secs(secs)));
        }
    }

    #[test]
    fn rejects_overflow_without_panicking() {
        assert!(parse_duration("99999999999999999999999999999999999999999h").is_err());
        assert!(parse_duration("9999999999999999999h").is_err());
    }
}
