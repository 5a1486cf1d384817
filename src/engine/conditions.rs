//! Status conditions, following the Kubernetes conventions: CamelCase
//! reasons, `observedGeneration` on each, and a `lastTransitionTime` that
//! moves only when the condition's status does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub(crate) const VALID: &str = "Valid";
pub(crate) const PROGRESSING: &str = "Progressing";
pub(crate) const HEALTHY: &str = "Healthy";
pub(crate) const READY: &str = "Ready";
pub(crate) const ROLLED_BACK: &str = "RolledBack";

/// The order conditions are listed in, so equal states give equal statuses.
const ORDER: [&str; 5] = [VALID, PROGRESSING, HEALTHY, READY, ROLLED_BACK];

/// A condition's three-valued status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Truth {
    True,
    False,
    Unknown,
}

impl Truth {
    fn as_str(self) -> &'static str {
        match self {
            Truth::True => "True",
            Truth::False => "False",
            Truth::Unknown => "Unknown",
        }
    }
}

/// What one condition should say now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Desired {
    pub type_: &'static str,
    pub status: Truth,
    pub reason: &'static str,
    pub message: String,
}

/// Sets a condition, keeping its `lastTransitionTime` unless the status changes.
pub(crate) fn set(conditions: &mut Vec<Condition>, desired: Desired, generation: i64, now: &Time) {
    let status = desired.status.as_str();
    match conditions.iter_mut().find(|c| c.type_ == desired.type_) {
        Some(existing) => {
            if existing.status != status {
                existing.status = status.to_string();
                existing.last_transition_time = now.clone();
            }
            existing.reason = desired.reason.to_string();
            existing.message = desired.message;
            existing.observed_generation = Some(generation);
        }
        None => conditions.push(Condition {
            type_: desired.type_.to_string(),
            status: status.to_string(),
            reason: desired.reason.to_string(),
            message: desired.message,
            observed_generation: Some(generation),
            last_transition_time: now.clone(),
        }),
    }
    conditions.sort_by_key(|c| {
        ORDER
            .iter()
            .position(|t| *t == c.type_)
            .unwrap_or(ORDER.len())
    });
}

/// The condition of this type, if set.
pub(crate) fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(s: &str) -> Time {
        Time(s.parse::<Timestamp>().unwrap())
    }

    fn desired(status: Truth, reason: &'static str) -> Desired {
        Desired {
            type_: READY,
            status,
            reason,
            message: reason.to_string(),
        }
    }

    #[test]
    fn last_transition_time_changes_only_with_status() {
        let mut conditions = Vec::new();
        set(
            &mut conditions,
            desired(Truth::False, "RolloutInProgress"),
            1,
            &at("2025-01-01T00:00:00Z"),
        );
        set(
            &mut conditions,
            desired(Truth::False, "Drifted"),
            2,
            &at("2025-01-01T00:01:00Z"),
        );
        assert_eq!(
            conditions[0].last_transition_time,
            at("2025-01-01T00:00:00Z")
        );
        assert_eq!(conditions[0].reason, "Drifted");
        assert_eq!(conditions[0].observed_generation, Some(2));
        set(
            &mut conditions,
            desired(Truth::True, "RolloutComplete"),
            2,
            &at("2025-01-01T00:02:00Z"),
        );
        assert_eq!(
            conditions[0].last_transition_time,
            at("2025-01-01T00:02:00Z")
        );
    }

    #[test]
    fn conditions_keep_a_canonical_order() {
        let mut conditions = Vec::new();
        let now = at("2025-01-01T00:00:00Z");
        for type_ in [ROLLED_BACK, READY, VALID, HEALTHY, PROGRESSING] {
            set(
                &mut conditions,
                Desired {
                    type_,
                    status: Truth::True,
                    reason: "R",
                    message: String::new(),
                },
                1,
                &now,
            );
        }
        let types: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ORDER);
    }
}
