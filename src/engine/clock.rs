//! Time arithmetic that cannot panic, at the precision status keeps.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// `now` as status stores it: `metav1.Time` serializes whole seconds, so
/// anything finer would not survive a round trip through the API and a
/// restarted controller would see a different status than was decided.
pub(crate) fn stamp(now: Timestamp) -> Time {
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// `t + d`, or None when it leaves the representable range.
pub(crate) fn after(t: Timestamp, d: Duration) -> Option<Timestamp> {
    t.checked_add(d).ok()
}

/// Time from `from` to `to`; zero when `to` is earlier (clocks can skew).
pub(crate) fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_truncates_to_seconds() {
        let t: Timestamp = "2025-01-01T10:00:00.750Z".parse().unwrap();
        assert_eq!(
            stamp(t).0,
            "2025-01-01T10:00:00Z".parse::<Timestamp>().unwrap()
        );
    }

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        assert_eq!(after(Timestamp::MAX, Duration::from_secs(1)), None);
        assert_eq!(elapsed(Timestamp::MAX, Timestamp::MIN), Duration::ZERO);
        assert!(elapsed(Timestamp::MIN, Timestamp::MAX) > Duration::ZERO);
    }
}
