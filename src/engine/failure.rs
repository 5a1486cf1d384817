//! Actions that could not be carried out: what the status says about them.
//!
//! The controller carries out a decision's actions and writes the decided
//! status only when all succeeded. When some fail, the decided status must not
//! be written (it may assume their effects), so [`report_failure`] marks the
//! persisted status instead: `Progressing=False` with a reason from the fixed
//! set of [`FailureReason`]s, a bounded message naming the first targets and
//! the API's own reason, and a Warning event the first time it says so.

use k8s_openapi::jiff::Timestamp;

use super::clock::stamp;
use super::conditions::{self, Desired, Truth};
use super::message::bounded_list;
use super::model::{ActionFailure, EventNote, EventType};
use crate::api::ConfigRolloutStatus;

/// The persisted status with the failure reported, and the events to publish.
pub fn report_failure(
    status: &ConfigRolloutStatus,
    failure: &ActionFailure,
    generation: i64,
    now: Timestamp,
) -> (ConfigRolloutStatus, Vec<EventNote>) {
    let message = failure_message(failure);
    let mut reported = status.clone();
    let before = conditions::get(&status.conditions, conditions::PROGRESSING).cloned();
    conditions::set(
        &mut reported.conditions,
        Desired {
            type_: conditions::PROGRESSING,
            status: Truth::False,
            reason: failure.reason.as_str(),
            message: message.clone(),
        },
        generation,
        &stamp(now),
    );
    reported.message = Some(format!("blocked: {message}; retrying with backoff"));
    let new = before.is_none_or(|c| {
        c.status != "False" || c.reason != failure.reason.as_str() || c.message != message
    });
    let events = if new {
        vec![EventNote {
            type_: EventType::Warning,
            reason: failure.reason.as_str(),
            note: message,
        }]
    } else {
        Vec::new()
    };
    (reported, events)
}

/// `write revision abc: 3 of 40 targets failed (cell-1, cell-2, cell-3): forbidden: ...`.
fn failure_message(failure: &ActionFailure) -> String {
    if failure.targets.is_empty() {
        return format!("{} failed: {}", failure.what, failure.detail);
    }
    format!(
        "{}: {} of {} targets failed ({}): {}",
        failure.what,
        failure.targets.len(),
        failure.of.max(failure.targets.len()),
        bounded_list(&failure.targets),
        failure.detail
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::FailureReason;

    fn failure(targets: usize) -> ActionFailure {
        ActionFailure {
            reason: FailureReason::WriteForbidden,
            what: "write revision abc".into(),
            targets: (0..targets).map(|i| format!("cell-{i}")).collect(),
            of: 10_000,
            detail: "configmaps is forbidden".into(),
        }
    }

    #[test]
    fn a_failure_is_a_condition_a_message_and_one_event() {
        let (status, events) = report_failure(
            &ConfigRolloutStatus::default(),
            &failure(3),
            4,
            Timestamp::UNIX_EPOCH,
        );
        let c = conditions::get(&status.conditions, conditions::PROGRESSING).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "WriteForbidden")
        );
        assert_eq!(
            c.message,
            "write revision abc: 3 of 10000 targets failed (cell-0, cell-1, cell-2): configmaps is forbidden"
        );
        assert!(
            status
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with("blocked: write revision abc"))
        );
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "WriteForbidden");
        let (again, events) = report_failure(&status, &failure(3), 4, Timestamp::UNIX_EPOCH);
        assert!(events.is_empty(), "the same failure is not announced twice");
        assert_eq!(again, status);
    }

    #[test]
    fn the_message_stays_short_for_any_number_of_targets() {
        let (status, events) = report_failure(
            &ConfigRolloutStatus::default(),
            &failure(10_000),
            1,
            Timestamp::UNIX_EPOCH,
        );
        let message = status.message.unwrap();
        assert!(message.len() < 300, "{message}");
        assert!(message.contains("cell-4 and 9995 more"), "{message}");
        assert!(events[0].note.len() < 300);
    }
}
