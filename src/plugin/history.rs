//! `kubectl ringfence history NAME`: the revisions, how and when each ended, and why.
//!
//! From `status.history` (the controller keeps the last ten, newest first), with the
//! revision in flight on top and the rollback reason from `status.rollback` where it
//! belongs to a listed revision.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use super::columns;
use crate::api::{ConfigRollout, Phase};

/// One revision as history shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub revision: String,
    /// The phase it ended in, or is in while in flight.
    pub outcome: String,
    pub in_flight: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The rollback's CamelCase reason (GateFailed, ProgressDeadlineExceeded, Aborted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub why: String,
}

fn time(t: &Option<Time>) -> Option<String> {
    t.as_ref()
        .map(|t| t.0.strftime("%Y-%m-%d %H:%M:%S").to_string())
}

/// Newest first.
pub fn rows(rollout: &ConfigRollout) -> Vec<Row> {
    let status = rollout.status.clone().unwrap_or_default();
    let reason_of = |revision: &str, outcome: Phase| {
        status
            .rollback
            .as_ref()
            .filter(|r| r.revision == revision)
            .filter(|_| {
                matches!(
                    outcome,
                    Phase::RolledBack | Phase::Failed | Phase::RollingBack
                )
            })
            .map(|r| r.reason.clone())
    };
    let mut out = Vec::new();
    if let (Some(revision), Some(phase)) = (&status.revision, status.phase) {
        let finished = status
            .history
            .first()
            .is_some_and(|h| &h.revision == revision && h.outcome == phase);
        if !finished {
            out.push(Row {
                revision: revision.clone(),
                outcome: format!("{phase:?}"),
                in_flight: true,
                started_at: time(&status.rings.first().and_then(|r| r.started_at.clone())),
                finished_at: None,
                reason: reason_of(revision, phase),
                why: status.message.clone().unwrap_or_default(),
            });
        }
    }
    for (i, entry) in status.history.iter().enumerate() {
        // Only the newest rollback is kept in status: older ones keep their message only.
        let newest_of_revision = status.history[..i]
            .iter()
            .all(|h| h.revision != entry.revision);
        out.push(Row {
            revision: entry.revision.clone(),
            outcome: format!("{:?}", entry.outcome),
            in_flight: false,
            started_at: time(&entry.started_at),
            finished_at: time(&entry.finished_at),
            reason: reason_of(&entry.revision, entry.outcome).filter(|_| newest_of_revision),
            why: entry.message.clone().unwrap_or_default(),
        });
    }
    out
}

pub fn table(rows: &[Row]) -> String {
    if rows.is_empty() {
        return "no revisions yet\n".to_string();
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    let mut table = vec![
        [
            "REVISION",
            "OUTCOME",
            "STARTED (UTC)",
            "FINISHED (UTC)",
            "WHY",
        ]
        .map(str::to_string)
        .to_vec(),
    ];
    for row in rows {
        let why = match &row.reason {
            Some(reason) => format!("{reason}: {}", row.why),
            None => row.why.clone(),
        };
        let outcome = if row.in_flight {
            format!("{} (now)", row.outcome)
        } else {
            row.outcome.clone()
        };
        table.push(vec![
            row.revision.clone(),
            outcome,
            dash(&row.started_at),
            dash(&row.finished_at),
            why,
        ]);
    }
    columns(&table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rollout(status: serde_json::Value) -> ConfigRollout {
        serde_json::from_value(json!({
            "apiVersion": "ringfence.dev/v1alpha1",
            "kind": "ConfigRollout",
            "metadata": {"name": "flags", "namespace": "platform"},
            "spec": {"config": {"name": "flags", "data": {"a": "1"}}, "rings": [{"name": "one", "namespaces": ["c1"]}]},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn the_revision_in_flight_leads_and_rollbacks_say_why() {
        let r = rollout(json!({
            "revision": "cccc", "phase": "Progressing", "message": "Ring one is verifying.",
            "rings": [{"name": "one", "phase": "Verifying", "startedAt": "2025-06-01T10:20:00Z"}],
            "rollback": {"revision": "bbbb", "reason": "GateFailed", "message": "gate error-rate failed"},
            "history": [
                {"revision": "bbbb", "outcome": "RolledBack", "startedAt": "2025-06-01T10:00:00Z",
                 "finishedAt": "2025-06-01T10:05:00Z", "message": "gate error-rate failed"},
                {"revision": "aaaa", "outcome": "Succeeded", "startedAt": "2025-06-01T09:00:00Z",
                 "finishedAt": "2025-06-01T09:30:00Z", "message": "rolled out to 9 targets"},
            ],
        }));
        assert_eq!(
            table(&rows(&r)),
            "\
REVISION  OUTCOME            STARTED (UTC)        FINISHED (UTC)       WHY
cccc      Progressing (now)  2025-06-01 10:20:00  -                    Ring one is verifying.
bbbb      RolledBack         2025-06-01 10:00:00  2025-06-01 10:05:00  GateFailed: gate error-rate failed
aaaa      Succeeded          2025-06-01 09:00:00  2025-06-01 09:30:00  rolled out to 9 targets
"
        );
    }

    #[test]
    fn a_finished_revision_is_listed_once() {
        let r = rollout(json!({
            "revision": "bbbb", "phase": "RolledBack", "message": "Revision bbbb was rolled back.",
            "rollback": {"revision": "bbbb", "reason": "Aborted", "message": "abort requested (x)"},
            "history": [
                {"revision": "bbbb", "outcome": "RolledBack", "message": "abort requested (x)"},
                {"revision": "bbbb", "outcome": "RolledBack", "message": "gate failed"},
            ],
        }));
        let rows = rows(&r);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].reason.as_deref(), Some("Aborted"));
        assert_eq!(
            rows[1].reason, None,
            "the older rollback's reason is not known"
        );
        assert_eq!(table(&[]), "no revisions yet\n");
    }
}
