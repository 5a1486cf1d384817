//! Gate scheduling (which evaluations are due) and verdict bookkeeping
//! (folding the providers' results into the ring's gate statuses).
//!
//! A ring's gates are evaluated in two ways: once with [`GatePurpose::Baseline`]
//! while the ring is Applying and nothing is written yet (only gates judged
//! against their value before the ring was touched), then with
//! [`GatePurpose::Check`] every `interval` while the ring is Verifying.

use k8s_openapi::jiff::Timestamp;

use super::clock::{after, stamp};
use super::model::{GatePurpose, GateRequest, GateResult, Inputs};
use super::validate::{GatePlan, Plan, plan};
use crate::api::{ConfigRolloutStatus, GateStatus, Phase, RingPhase, RingStatus, Verdict};

/// The evaluations due now, for the controller to run before [`super::decide`].
/// Nothing is due while the spec is invalid or paused, or when the persisted
/// status is not progressing the current revision.
pub fn gate_requests(inputs: &Inputs) -> Vec<GateRequest> {
    // While the spec is invalid, a written ring stays gated by the last valid gates.
    let (plan, held) = match plan(inputs) {
        Ok(plan) => (plan, false),
        Err(_) => match Plan::held(inputs) {
            Some(plan) => (plan, true),
            None => return Vec::new(),
        },
    };
    let status = inputs.status;
    if (inputs.spec.paused && !held)
        || status.phase != Some(Phase::Progressing)
        || status.revision.as_deref() != Some(plan.revision.as_str())
    {
        return Vec::new();
    }
    let Some((index, ring)) = active_ring(status) else {
        return Vec::new();
    };
    // What a partitioned cluster's metrics say is not evidence: no gate is evaluated
    // (the step marks them Inconclusive).
    if ring
        .targets
        .iter()
        .any(|t| inputs.world.unreachable(t).is_some())
    {
        return Vec::new();
    }
    let purpose = match ring.phase {
        RingPhase::Applying if !held => GatePurpose::Baseline,
        RingPhase::Verifying => GatePurpose::Check,
        _ => return Vec::new(),
    };
    let unchanged = unchanged_namespaces(status, inputs, &plan);
    plan.gates
        .iter()
        .filter(|gate| is_due(ring, gate, purpose, inputs.now))
        .map(|gate| GateRequest {
            gate: gate.name.clone(),
            ring: index,
            ring_name: ring.name.clone(),
            purpose,
            revision: plan.revision.clone(),
            namespaces: ring.targets.clone(),
            unchanged_namespaces: unchanged.clone(),
            baseline: gate_status(ring, &gate.name).and_then(|g| g.baseline),
            definition: gate.definition.clone(),
        })
        .collect()
}

fn rollout_key(inputs: &Inputs) -> String {
    format!("{}/{}", inputs.rollout.namespace, inputs.rollout.name)
}

/// The ring being written or verified, if any.
pub(crate) fn active_ring(status: &ConfigRolloutStatus) -> Option<(usize, &RingStatus)> {
    status
        .rings
        .iter()
        .enumerate()
        .find(|(_, r)| matches!(r.phase, RingPhase::Applying | RingPhase::Verifying))
}

fn unchanged_namespaces(status: &ConfigRolloutStatus, inputs: &Inputs, plan: &Plan) -> Vec<String> {
    status
        .rings
        .iter()
        .flat_map(|r| r.targets.iter())
        .filter(|ns| {
            !inputs
                .world
                .targets
                .get(*ns)
                .is_some_and(|t| t.holds_revision(&plan.revision, &rollout_key(inputs)))
        })
        .cloned()
        .collect()
}

pub(crate) fn gate_status<'a>(ring: &'a RingStatus, name: &str) -> Option<&'a GateStatus> {
    ring.gates.iter().find(|g| g.name == name)
}

/// The gate's status in `ring`, added first when the gate is new to the spec.
fn gate_status_mut<'a>(ring: &'a mut RingStatus, name: &str) -> Option<&'a mut GateStatus> {
    if !ring.gates.iter().any(|g| g.name == name) {
        ring.gates.push(GateStatus {
            name: name.to_string(),
            ..GateStatus::default()
        });
    }
    ring.gates.iter_mut().find(|g| g.name == name)
}

/// Fresh gate statuses for a ring that starts: every gate listed, none evaluated.
pub(crate) fn initial_gates(plan: &Plan) -> Vec<GateStatus> {
    plan.gates
        .iter()
        .map(|g| GateStatus {
            name: g.name.clone(),
            ..GateStatus::default()
        })
        .collect()
}

/// When `gate` is next due in `ring`, or None when it never will be for this purpose.
fn due_at(ring: &RingStatus, gate: &GatePlan, purpose: GatePurpose) -> Option<Due> {
    let status = gate_status(ring, &gate.name);
    let last = status.and_then(|g| g.last_evaluated.as_ref()).map(|t| t.0);
    match purpose {
        GatePurpose::Baseline => {
            if !gate.needs_baseline || status.is_some_and(|g| g.baseline.is_some()) {
                return None;
            }
            Some(last.map_or(Due::Now, |t| Due::At(after(t, gate.interval))))
        }
        GatePurpose::Check => {
            let checked = status.is_some_and(|g| g.verdict.is_some());
            match (checked, last) {
                (true, Some(t)) => Some(Due::At(after(t, gate.interval))),
                _ => Some(Due::Now),
            }
        }
    }
}

enum Due {
    Now,
    /// None: beyond the representable range, i.e. never.
    At(Option<Timestamp>),
}

fn is_due(ring: &RingStatus, gate: &GatePlan, purpose: GatePurpose, now: Timestamp) -> bool {
    match due_at(ring, gate, purpose) {
        Some(Due::Now) => true,
        Some(Due::At(Some(t))) => t <= now,
        Some(Due::At(None)) | None => false,
    }
}

/// The earliest time a gate of `ring` is due again, for `requeue_at`. A gate
/// that is due now but got no result is retried one interval later, so a
/// provider that returns nothing cannot make the controller spin.
pub(crate) fn next_due(
    ring: &RingStatus,
    plan: &Plan,
    purpose: GatePurpose,
    now: Timestamp,
) -> Option<Timestamp> {
    plan.gates
        .iter()
        .filter_map(|gate| match due_at(ring, gate, purpose)? {
            Due::Now => after(now, gate.interval),
            Due::At(t) => t.map(|t| t.max(now)),
        })
        .min()
}

/// Baselines still missing before `ring` may be written.
pub(crate) fn missing_baselines<'a>(ring: &RingStatus, plan: &'a Plan) -> Vec<&'a str> {
    plan.gates
        .iter()
        .filter(|g| {
            g.needs_baseline && gate_status(ring, &g.name).is_none_or(|s| s.baseline.is_none())
        })
        .map(|g| g.name.as_str())
        .collect()
}

/// Folds the results for ring `index` and `purpose` into its gate statuses, oldest
/// first. A result no newer than the last one recorded is ignored, so passing
/// the same results twice never counts a failure twice. Returns whether anything changed.
pub(crate) fn apply_results(
    ring: &mut RingStatus,
    index: usize,
    purpose: GatePurpose,
    plan: &Plan,
    results: &[GateResult],
) -> bool {
    let mut relevant: Vec<&GateResult> = results
        .iter()
        .filter(|r| {
            r.ring == index && r.purpose == purpose && plan.gates.iter().any(|g| g.name == r.gate)
        })
        .collect();
    relevant.sort_by_key(|r| r.at);
    let before = ring.gates.clone();
    for result in relevant {
        let at = stamp(result.at);
        let Some(status) = gate_status_mut(ring, &result.gate) else {
            continue;
        };
        match purpose {
            GatePurpose::Baseline => {
                if status.baseline.is_some()
                    || status.last_evaluated.as_ref().is_some_and(|t| at.0 <= t.0)
                {
                    continue;
                }
                status.baseline = finite(result.value);
                status.last_evaluated = Some(at);
                status.message = Some(result.message.clone());
            }
            GatePurpose::Check => {
                if status.verdict.is_some()
                    && status.last_evaluated.as_ref().is_some_and(|t| at.0 <= t.0)
                {
                    continue;
                }
                status.verdict = Some(result.verdict);
                status.value = finite(result.value);
                if let Some(baseline) = finite(result.baseline) {
                    status.baseline = Some(baseline);
                }
                status.threshold = finite(result.threshold);
                status.consecutive_failures = match result.verdict {
                    Verdict::Pass => 0,
                    Verdict::Fail => status.consecutive_failures.saturating_add(1),
                    // No data says nothing about the config: it neither counts nor forgives.
                    Verdict::Inconclusive => status.consecutive_failures,
                };
                status.last_evaluated = Some(at);
                status.message = Some(result.message.clone());
            }
        }
    }
    ring.gates != before
}

fn finite(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite())
}

/// Gates of `ring` that reached their failure limit.
pub(crate) fn failed_gates<'a>(ring: &'a RingStatus, plan: &Plan) -> Vec<&'a GateStatus> {
    plan.gates
        .iter()
        .filter_map(|g| {
            gate_status(ring, &g.name).filter(|s| s.consecutive_failures >= g.failure_limit)
        })
        .collect()
}

/// Whether every gate's latest verdict is Pass (vacuously true without gates).
pub(crate) fn all_passing(ring: &RingStatus, plan: &Plan) -> bool {
    plan.gates
        .iter()
        .all(|g| gate_status(ring, &g.name).is_some_and(|s| s.verdict == Some(Verdict::Pass)))
}

/// Gates whose latest verdict is Fail.
pub(crate) fn currently_failing<'a>(ring: &'a RingStatus, plan: &Plan) -> Vec<&'a GateStatus> {
    plan.gates
        .iter()
        .filter_map(|g| gate_status(ring, &g.name).filter(|s| s.verdict == Some(Verdict::Fail)))
        .collect()
}

/// Gates not (yet) passing, by name: what the bake is waiting for.
pub(crate) fn not_passing<'a>(ring: &RingStatus, plan: &'a Plan) -> Vec<&'a str> {
    plan.gates
        .iter()
        .filter(|g| gate_status(ring, &g.name).is_none_or(|s| s.verdict != Some(Verdict::Pass)))
        .map(|g| g.name.as_str())
        .collect()
}
