//! Judging a measured value against a gate's thresholds: pure, no IO.

use crate::api::{OnNoData, PrometheusGate, Verdict};

/// A verdict with the threshold that applied and why, e.g.
/// `0.041 > 0.007 (baseline 0.002 + maxIncrease 0.005)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub threshold: Option<f64>,
    pub message: String,
}

/// The binding threshold and how it was derived.
struct Limit {
    value: f64,
    how: String,
}

/// Judges `value` (None = empty result) against the lowest threshold among
/// `max`, `baseline + maxIncrease` and `baseline * maxRatio` that can be
/// computed. A value above it fails; equal passes.
///
/// - No data and NaN (usually 0/0: no traffic) follow `onNoData`.
/// - +Inf exceeds every threshold (e.g. `histogram_quantile` landing in the
///   `+Inf` bucket really is "too slow").
/// - -Inf is Inconclusive: no health signal produces it, so it points at the query.
/// - Without a finite baseline only `max` applies, and the message says so;
///   with no `max` either nothing can be judged: Inconclusive.
pub fn judge(gate: &PrometheusGate, value: Option<f64>, baseline: Option<f64>) -> Judgement {
    let limit = limit(gate, baseline);
    let threshold = limit.as_ref().map(|l| l.value);
    let verdict = |verdict, message: String| Judgement {
        verdict,
        threshold,
        message,
    };

    let value = match value {
        Some(v) if !v.is_nan() => v,
        _ => {
            let what = if value.is_none() {
                "no data"
            } else {
                "NaN, usually 0/0: no traffic in the window"
            };
            return match gate.on_no_data {
                OnNoData::Wait => verdict(
                    Verdict::Inconclusive,
                    format!("{what}; waiting (onNoData: wait)"),
                ),
                OnNoData::Pass => {
                    verdict(Verdict::Pass, format!("{what}; passes (onNoData: pass)"))
                }
                OnNoData::Fail => verdict(Verdict::Fail, format!("{what}; fails (onNoData: fail)")),
            };
        }
    };
    if value == f64::NEG_INFINITY {
        return verdict(
            Verdict::Inconclusive,
            "-Inf, which no threshold can judge; check the query".into(),
        );
    }
    let Some(limit) = limit else {
        return verdict(
            Verdict::Inconclusive,
            format!(
                "{} cannot be judged: there is no baseline and max is not set",
                fmt_value(value)
            ),
        );
    };
    let note = unapplied_note(gate, baseline);
    if value > limit.value {
        verdict(
            Verdict::Fail,
            format!(
                "{} > {} ({}){note}",
                fmt_value(value),
                fmt_value(limit.value),
                limit.how
            ),
        )
    } else {
        verdict(
            Verdict::Pass,
            format!(
                "{} <= {} ({}){note}",
                fmt_value(value),
                fmt_value(limit.value),
                limit.how
            ),
        )
    }
}

fn limit(gate: &PrometheusGate, baseline: Option<f64>) -> Option<Limit> {
    let mut limits = Vec::with_capacity(3);
    if let Some(max) = gate.max {
        limits.push(Limit {
            value: max,
            how: "max".into(),
        });
    }
    if let Some(b) = baseline.filter(|b| b.is_finite()) {
        if let Some(inc) = gate.max_increase {
            limits.push(Limit {
                value: b + inc,
                how: format!("baseline {} + maxIncrease {}", fmt_value(b), fmt_value(inc)),
            });
        }
        if let Some(ratio) = gate.max_ratio {
            limits.push(Limit {
                value: b * ratio,
                how: format!("baseline {} x maxRatio {}", fmt_value(b), fmt_value(ratio)),
            });
        }
    }
    // The first of equal limits wins, so `max` is named when it ties.
    limits
        .into_iter()
        .filter(|l| !l.value.is_nan())
        .reduce(|best, l| if l.value < best.value { l } else { best })
}

/// Says which relative thresholds were skipped for want of a baseline.
fn unapplied_note(gate: &PrometheusGate, baseline: Option<f64>) -> String {
    if baseline.is_some_and(f64::is_finite) {
        return String::new();
    }
    let skipped: Vec<&str> = [
        gate.max_increase.map(|_| "maxIncrease"),
        gate.max_ratio.map(|_| "maxRatio"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if skipped.is_empty() {
        String::new()
    } else {
        format!("; no baseline, so {} not applied", skipped.join(" and "))
    }
}

/// Plain notation with 4 significant digits but whole integer parts
/// (`0.04123`, `1235`, `123457`), and scientific notation outside 1e-4..1e6 so
/// tiny and huge values stay short.
/// Percent is not used: a gate does not know whether its query is a ratio.
pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let magnitude = v.abs().log10().floor() as i32;
    if !(-4..6).contains(&magnitude) {
        let text = format!("{v:.3e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        return format!("{}e{exponent}", trim_zeros(mantissa));
    }
    let decimals = (3 - magnitude).max(0) as usize;
    trim_zeros(&format!("{v:.decimals$}")).to_string()
}

fn trim_zeros(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CompareTo;

    fn gate(max: Option<f64>, max_increase: Option<f64>, max_ratio: Option<f64>) -> PrometheusGate {
        PrometheusGate {
            address: "http://prometheus:9090".into(),
            query: "up".into(),
            max,
            max_increase,
            max_ratio,
            compare_to: CompareTo::Before,
            baseline_window: "5m".into(),
            on_no_data: OnNoData::Wait,
            timeout: "10s".into(),
            auth_secret_ref: None,
        }
    }

    #[test]
    fn fails_above_baseline_plus_increase() {
        let j = judge(&gate(None, Some(0.005), None), Some(0.041), Some(0.002));
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(j.threshold, Some(0.007));
        assert_eq!(
            j.message,
            "0.041 > 0.007 (baseline 0.002 + maxIncrease 0.005)"
        );
    }

    #[test]
    fn passes_at_or_below_the_threshold() {
        let j = judge(&gate(Some(0.02), None, None), Some(0.02), None);
        assert_eq!(j.verdict, Verdict::Pass);
        assert_eq!(j.message, "0.02 <= 0.02 (max)");
    }

    #[test]
    fn the_lowest_computable_threshold_applies() {
        let g = gate(Some(0.02), Some(0.005), Some(1.5));
        // baseline 0.002: 0.02 vs 0.007 vs 0.003
        let j = judge(&g, Some(0.004), Some(0.002));
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(j.threshold, Some(0.003));
        assert_eq!(j.message, "0.004 > 0.003 (baseline 0.002 x maxRatio 1.5)");
        // baseline 0.1: max is lowest
        let j = judge(&g, Some(0.03), Some(0.1));
        assert_eq!(j.threshold, Some(0.02));
        assert_eq!(j.message, "0.03 > 0.02 (max)");
    }

    #[test]
    fn without_a_baseline_only_max_applies_and_the_message_says_so() {
        let j = judge(&gate(Some(0.02), Some(0.005), Some(1.5)), Some(0.01), None);
        assert_eq!(j.verdict, Verdict::Pass);
        assert_eq!(j.threshold, Some(0.02));
        assert_eq!(
            j.message,
            "0.01 <= 0.02 (max); no baseline, so maxIncrease and maxRatio not applied"
        );
        let j = judge(
            &gate(Some(0.02), Some(0.005), None),
            Some(0.01),
            Some(f64::NAN),
        );
        assert_eq!(j.threshold, Some(0.02));
    }

    #[test]
    fn without_baseline_or_max_it_is_inconclusive() {
        let j = judge(&gate(None, Some(0.005), None), Some(0.5), None);
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert_eq!(j.threshold, None);
        assert_eq!(
            j.message,
            "0.5 cannot be judged: there is no baseline and max is not set"
        );
    }

    #[test]
    fn no_data_follows_on_no_data() {
        let cases = [
            (
                OnNoData::Wait,
                Verdict::Inconclusive,
                "no data; waiting (onNoData: wait)",
            ),
            (
                OnNoData::Pass,
                Verdict::Pass,
                "no data; passes (onNoData: pass)",
            ),
            (
                OnNoData::Fail,
                Verdict::Fail,
                "no data; fails (onNoData: fail)",
            ),
        ];
        for (on_no_data, verdict, message) in cases {
            let g = PrometheusGate {
                on_no_data,
                ..gate(Some(0.02), None, None)
            };
            let j = judge(&g, None, None);
            assert_eq!((j.verdict, j.message.as_str()), (verdict, message));
            assert_eq!(j.threshold, Some(0.02));
        }
    }

    #[test]
    fn nan_is_no_data_and_says_why() {
        let j = judge(&gate(Some(0.02), None, None), Some(f64::NAN), None);
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert!(j.message.starts_with("NaN, usually 0/0"), "{}", j.message);
    }

    #[test]
    fn infinities() {
        let j = judge(&gate(Some(0.5), None, None), Some(f64::INFINITY), None);
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(j.message, "+Inf > 0.5 (max)");
        let j = judge(&gate(Some(0.5), None, None), Some(f64::NEG_INFINITY), None);
        assert_eq!(j.verdict, Verdict::Inconclusive);
        // An infinite baseline is no baseline.
        let j = judge(&gate(None, Some(0.1), None), Some(1.0), Some(f64::INFINITY));
        assert_eq!(j.verdict, Verdict::Inconclusive);
    }

    #[test]
    fn zero_baseline_with_ratio_allows_nothing() {
        let j = judge(&gate(None, None, Some(2.0)), Some(0.0001), Some(0.0));
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(j.threshold, Some(0.0));
    }

    #[test]
    fn formats_with_four_significant_digits() {
        let cases = [
            (0.0, "0"),
            (0.041, "0.041"),
            (0.041234567, "0.04123"),
            (1234.5678, "1235"),
            (9.99996, "10"),
            (-0.5, "-0.5"),
            (2.0, "2"),
            (123456.7, "123457"),
            (0.00001234, "1.234e-5"),
            (12345678.0, "1.235e7"),
            (f64::INFINITY, "+Inf"),
            (f64::NAN, "NaN"),
        ];
        for (v, text) in cases {
            assert_eq!(fmt_value(v), text, "{v}");
        }
    }
}
