//! The words SREs read: `ringProgress`, `health` and the one-sentence `message`.
//!
//! Everything here is a function of the decided status and the observed
//! world, never of the clock alone, so an unchanged rollout keeps an
//! unchanged status and the controller does not write it again.

use std::time::Duration;

use super::clock::elapsed;
use super::gates::{all_passing, currently_failing, gate_status, not_passing};
use super::validate::Plan;
use crate::api::{ConfigRolloutStatus, Phase, RingPhase, RingStatus};

/// What `finish` learned from the world that the sentences mention.
#[derive(Clone, Debug, Default)]
pub(crate) struct Observed {
    /// Drifted targets and the field manager that last changed them.
    pub drifted: Vec<(String, Option<String>)>,
    /// The active ring's workloads are rolled out (and stamped, with restart).
    pub workloads_ready: bool,
    /// Targets the rollback still has to restore.
    pub left_to_restore: usize,
    /// Revision in the spec, when it differs from the one in status.
    pub waiting_revision: Option<String>,
    pub paused: bool,
    /// Targets this revision overwrote whose prior content is unknown: their record is
    /// lost or unreadable.
    pub priors_missing: Vec<String>,
    /// Records the store lost for targets that cannot be named.
    pub priors_lost_unnamed: u32,
    /// The spec is invalid and the revision in flight is held (gated, abortable, not written).
    pub held: Option<String>,
    /// The rings' targets could not be read back from their layout records: why.
    pub layout_missing: Option<String>,
}

impl Observed {
    /// `prior content of 3 targets is unknown (a, b, c)`, or None when every prior is known.
    pub fn priors_problem(&self) -> Option<String> {
        let named = self.priors_missing.len();
        let unnamed = usize::try_from(self.priors_lost_unnamed).unwrap_or(usize::MAX);
        match (named, unnamed) {
            (0, 0) => None,
            (0, n) => Some(format!(
                "{n} prior records were lost from the store for targets that cannot be named"
            )),
            (n, 0) => Some(format!(
                "prior content of {n} targets is unknown ({})",
                bounded_list(&self.priors_missing)
            )),
            (n, m) => Some(format!(
                "prior content of {n} targets is unknown ({}), and {m} more records were lost",
                bounded_list(&self.priors_missing)
            )),
        }
    }
}

/// `2/3 early`: the current ring's position and name.
pub(crate) fn ring_progress(status: &ConfigRolloutStatus) -> Option<String> {
    let name = status.current_ring.as_deref()?;
    let index = status.rings.iter().position(|r| r.name == name)?;
    Some(format!(
        "{}/{} {name}",
        index.saturating_add(1),
        status.rings.len()
    ))
}

fn ring_label(status: &ConfigRolloutStatus, ring: &RingStatus) -> String {
    let index = status
        .rings
        .iter()
        .position(|r| r.name == ring.name)
        .unwrap_or(0);
    format!(
        "ring {} ({}/{})",
        ring.name,
        index.saturating_add(1),
        status.rings.len()
    )
}

/// One word on health: Healthy, Progressing, Degraded, Failing or Unknown.
pub(crate) fn health(
    status: &ConfigRolloutStatus,
    plan: &Plan,
    observed: &Observed,
) -> &'static str {
    match status.phase {
        Some(Phase::Succeeded) if observed.drifted.is_empty() => "Healthy",
        Some(Phase::Succeeded) | Some(Phase::RolledBack) => "Degraded",
        Some(Phase::RollingBack) | Some(Phase::Failed) => "Failing",
        Some(Phase::Progressing) | Some(Phase::Paused) => match active(status) {
            Some(ring) if ring.phase == RingPhase::Verifying => {
                if !currently_failing(ring, plan).is_empty()
                    || ring.gates.iter().any(|g| g.consecutive_failures > 0)
                {
                    "Failing"
                } else if observed.workloads_ready && all_passing(ring, plan) {
                    "Healthy"
                } else {
                    "Progressing"
                }
            }
            _ => "Progressing",
        },
        Some(Phase::Pending) | None => "Unknown",
    }
}

fn active(status: &ConfigRolloutStatus) -> Option<&RingStatus> {
    let name = status.current_ring.as_deref()?;
    status.rings.iter().find(|r| r.name == name)
}

/// One human sentence: what is happening and why.
pub(crate) fn message(status: &ConfigRolloutStatus, plan: &Plan, observed: &Observed) -> String {
    let revision = status.revision.as_deref().unwrap_or("-");
    let mut sentence = match status.phase {
        None | Some(Phase::Pending) => match (&observed.waiting_revision, observed.paused) {
            (Some(next), true) => format!("paused before revision {next} starts"),
            _ => "waiting to start".to_string(),
        },
        Some(Phase::Paused) => match active(status) {
            Some(ring) => format!(
                "{}: paused; set spec.paused to false to resume",
                ring_label(status, ring)
            ),
            None => "paused; set spec.paused to false to resume".to_string(),
        },
        Some(Phase::Progressing) => match active(status) {
            Some(ring) => progressing(status, ring, plan, observed),
            None => format!("rolling out revision {revision}"),
        },
        Some(Phase::Succeeded) => {
            let targets: u64 = status.rings.iter().map(|r| u64::from(r.target_count)).sum();
            format!(
                "revision {revision} rolled out to all {} rings ({targets} targets)",
                status.rings.len()
            )
        }
        Some(Phase::RollingBack) => {
            let why = status.rollback.as_ref().map_or("", |r| r.message.as_str());
            format!(
                "rolling back revision {revision} ({why}): {} targets left to restore",
                observed.left_to_restore
            )
        }
        Some(Phase::RolledBack) => {
            let why = status.rollback.as_ref().map_or("", |r| r.message.as_str());
            format!(
                "revision {revision} rolled back ({why}); change the config or request a retry to roll out again"
            )
        }
        Some(Phase::Failed) if status.rollback.as_ref().is_some_and(|r| r.unrestored > 0) => {
            let rollback = status.rollback.as_ref();
            let unrestored = rollback.map_or(0, |r| r.unrestored);
            let named = rollback.map_or(String::new(), |r| {
                let mut names = r.unrestored_targets.join(", ");
                let more = usize::try_from(unrestored)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(r.unrestored_targets.len());
                if more > 0 {
                    names.push_str(&format!(" and {more} more"));
                }
                names
            });
            format!(
                "revision {revision}: rollback incomplete, {unrestored} targets not restored because their prior content is unknown ({named}); restore them by hand, then request a retry or change the config"
            )
        }
        Some(Phase::Failed) => {
            let why = status
                .history
                .first()
                .filter(|h| h.revision == revision && h.outcome == Phase::Failed)
                .and_then(|h| h.message.as_deref())
                .unwrap_or("a ring failed");
            format!(
                "revision {revision} failed ({why}); nothing was restored: request an abort to roll back or a retry to run it again"
            )
        }
    };
    if let Some(next) = &observed.waiting_revision
        && !matches!(status.phase, None | Some(Phase::Pending))
    {
        sentence.push_str(&format!("; revision {next} waits"));
    }
    if observed.paused
        && !matches!(
            status.phase,
            None | Some(Phase::Pending) | Some(Phase::Paused)
        )
    {
        sentence.push_str("; spec.paused is set");
    }
    if matches!(status.phase, Some(Phase::Progressing) | Some(Phase::Paused))
        && let Some(problem) = observed.priors_problem()
    {
        sentence.push_str(&format!(
            "; holding, nothing more is written: {problem}; request an abort to restore the rest"
        ));
    }
    if let Some(why) = &observed.layout_missing {
        sentence.push_str(&format!(
            "; holding, nothing more is written: the ring layout is unknown ({why}); an abort restores every recorded target"
        ));
    }
    if let Some(reason) = &observed.held {
        sentence.push_str(&format!(
            "; the spec is invalid ({reason}): nothing more is written, the written rings stay gated and an abort rolls back"
        ));
    }
    if !observed.drifted.is_empty() {
        sentence.push_str(&format!("; drifted: {}", drift_list(&observed.drifted)));
    }
    sentence
}

/// How many items a message names before it says "and N more": messages,
/// conditions and event notes stay short whatever the size of the fleet.
pub(crate) const LIST_LIMIT: usize = 5;

/// `a, b, c, d, e and 9995 more`.
pub(crate) fn bounded_list<S: AsRef<str>>(items: &[S]) -> String {
    let shown: Vec<&str> = items.iter().take(LIST_LIMIT).map(AsRef::as_ref).collect();
    let mut out = shown.join(", ");
    if items.len() > LIST_LIMIT {
        out.push_str(&format!(" and {} more", items.len() - LIST_LIMIT));
    }
    out
}

/// `cell-a (changed by kubectl-edit), cell-b (deleted)`, bounded.
pub(crate) fn drift_list(drifted: &[(String, Option<String>)]) -> String {
    let mut out = drifted
        .iter()
        .take(LIST_LIMIT)
        .map(|(ns, manager)| match manager {
            Some(m) => format!("{ns} (changed by {m})"),
            None => format!("{ns} (changed)"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    if drifted.len() > LIST_LIMIT {
        out.push_str(&format!(" and {} more", drifted.len() - LIST_LIMIT));
    }
    out
}

fn progressing(
    status: &ConfigRolloutStatus,
    ring: &RingStatus,
    plan: &Plan,
    observed: &Observed,
) -> String {
    let label = ring_label(status, ring);
    let bake = plan
        .rings
        .iter()
        .find(|r| r.name == ring.name)
        .map_or(Duration::ZERO, |r| r.bake);
    match ring.phase {
        RingPhase::Applying => {
            let waiting: Vec<&str> = plan
                .gates
                .iter()
                .filter(|g| {
                    g.needs_baseline
                        && gate_status(ring, &g.name).is_none_or(|s| s.baseline.is_none())
                })
                .map(|g| g.name.as_str())
                .collect();
            if waiting.is_empty() {
                format!(
                    "{label}: writing revision {}, {} of {} targets updated",
                    status.revision.as_deref().unwrap_or("-"),
                    ring.updated,
                    ring.target_count
                )
            } else {
                format!(
                    "{label}: measuring the baseline of gate {} before writing",
                    waiting.join(", ")
                )
            }
        }
        RingPhase::Verifying => {
            let failing = currently_failing(ring, plan);
            if let Some(gate) = failing.first() {
                let limit = plan
                    .gates
                    .iter()
                    .find(|g| g.name == gate.name)
                    .map_or(1, |g| g.failure_limit);
                return format!(
                    "{label}: gate {} failing ({} of {limit}): {}",
                    gate.name,
                    gate.consecutive_failures,
                    gate.message.as_deref().unwrap_or("no detail")
                );
            }
            if !observed.workloads_ready {
                return format!(
                    "{label}: waiting for workloads to roll out (progress deadline {})",
                    format_duration(plan.progress_deadline)
                );
            }
            let waiting = not_passing(ring, plan);
            match &ring.healthy_since {
                Some(since) => {
                    // Elapsed as of the latest evaluation, so the sentence changes only with the status.
                    let latest = ring
                        .gates
                        .iter()
                        .filter_map(|g| g.last_evaluated.as_ref().map(|t| t.0))
                        .max()
                        .unwrap_or(since.0);
                    format!(
                        "{label}: baking, {} of {} healthy",
                        format_duration(elapsed(since.0, latest)),
                        format_duration(bake)
                    )
                }
                None if waiting.is_empty() => {
                    format!("{label}: baking for {}", format_duration(bake))
                }
                None => format!(
                    "{label}: baking, 0s of {} healthy; waiting for gate {}",
                    format_duration(bake),
                    waiting.join(", ")
                ),
            }
        }
        _ => label,
    }
}

/// `1h30m`, `3m12s`, `15m`, `500ms`, `0s`: Go style, as in the spec.
pub(crate) fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        let millis = d.subsec_millis();
        return if millis == 0 {
            "0s".to_string()
        } else {
            format!("{millis}ms")
        };
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_spec() {
        assert_eq!(format_duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(format_duration(Duration::from_secs(900)), "15m");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
