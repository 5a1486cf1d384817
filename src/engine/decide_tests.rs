//! Unit tests of `decide` and `gate_requests`, one per rule of the design's
//! "Semantics", named after the rule.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::model::*;
use super::testkit::*;
use super::{ResolvedConfig, decide, gate_requests};
use crate::api::{ALLOW_FROM_LABEL, FIELD_MANAGER, Phase, RingPhase, Verdict};

fn two_rings() -> Sim {
    Sim::new(spec_with_rings(&[
        ("canary", &["cell-a"]),
        ("broad", &["cell-b", "cell-c"]),
    ]))
}

fn condition<'a>(sim: &'a Sim, type_: &str) -> (&'a str, &'a str) {
    sim.status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map_or(("", ""), |c| (c.status.as_str(), c.reason.as_str()))
}

fn holds(sim: &Sim, namespace: &str, revision: &str) -> bool {
    sim.world
        .targets
        .get(namespace)
        .is_some_and(|t| t.content_hash.as_deref() == Some(revision))
}

fn event_reasons(decision: &Decision) -> Vec<&'static str> {
    decision.events.iter().map(|e| e.reason).collect()
}

fn writes(decision: &Decision) -> Vec<String> {
    decision
        .actions
        .iter()
        .flat_map(|a| match a {
            Action::WriteTargets { namespaces, .. } => namespaces.clone(),
            _ => Vec::new(),
        })
        .collect()
}

/// Steps until the status reaches `phase`, at most 50 times.
fn run_until(sim: &mut Sim, phase: Phase) {
    for _ in 0..50 {
        if sim.status.phase == Some(phase) {
            return;
        }
        sim.step();
    }
    panic!("never reached {phase:?}: {:?}", sim.status.message);
}

fn assert_invalid(sim: &mut Sim, reason: &str) -> Decision {
    let decision = sim.step();
    assert!(decision.actions.is_empty(), "{:?}", decision.actions);
    assert_eq!(decision.requeue_at, None);
    assert_eq!(
        condition(sim, "Valid"),
        ("False", reason),
        "{:?}",
        sim.status.message
    );
    decision
}

#[test]
fn unresolvable_config_is_invalid_and_writes_nothing() {
    let mut sim = two_rings();
    sim.world.config = Some(Err("ConfigMap platform/flags-source not found".into()));
    let decision = assert_invalid(&mut sim, "ConfigUnresolvable");
    assert_eq!(event_reasons(&decision), vec!["InvalidSpec"]);
    assert!(
        sim.status
            .message
            .as_deref()
            .unwrap_or("")
            .contains("not found")
    );
}

#[test]
fn invalid_duration_is_invalid_not_a_panic() {
    let mut sim = two_rings();
    sim.spec.rings[0].bake = "5 minutes".into();
    assert_invalid(&mut sim, "InvalidDuration");
    sim.spec.rings[0].bake = "5m".into();
    sim.spec.progress_deadline = "99999999999999999999h".into();
    assert_invalid(&mut sim, "InvalidDuration");
}

#[test]
fn ring_with_zero_targets_is_invalid() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"])]);
    spec.rings[0].namespaces = None;
    spec.rings[0].namespace_selector = Some(selector(&[("ring", "nowhere")]));
    let mut sim = Sim::new(spec);
    sim.world.namespaces.push(ns("cell-a"));
    assert_invalid(&mut sim, "NoTargets");
}

#[test]
fn target_namespace_must_permit_the_rollout() {
    let mut sim = two_rings();
    sim.settings.trusted_namespaces.clear();
    let decision = assert_invalid(&mut sim, "TargetNotPermitted");
    assert!(
        decision
            .status
            .message
            .unwrap_or_default()
            .contains("cell-a")
    );
    for n in &mut sim.world.namespaces {
        n.labels.insert(ALLOW_FROM_LABEL.into(), ROLLOUT_NS.into());
    }
    sim.step();
    assert_eq!(condition(&sim, "Valid").0, "True");
    assert_eq!(sim.status.phase, Some(Phase::Progressing));
}

#[test]
fn own_namespace_is_always_permitted() {
    let mut sim = Sim::new(spec_with_rings(&[("only", &[ROLLOUT_NS])]));
    sim.settings.trusted_namespaces.clear();
    sim.settings.trusted_namespaces.insert("elsewhere".into());
    sim.settle(20);
    assert_eq!(sim.status.phase, Some(Phase::Succeeded));
}

#[test]
fn target_claimed_by_another_rollout_is_a_conflict() {
    let mut sim = two_rings();
    sim.world
        .claimed_by_others
        .insert("cell-b".into(), "team/other".into());
    let decision = assert_invalid(&mut sim, "TargetConflict");
    assert!(
        decision
            .status
            .message
            .unwrap_or_default()
            .contains("team/other")
    );
}

#[test]
fn invalid_spec_event_is_published_once() {
    let mut sim = two_rings();
    sim.world.config = Some(Err("missing".into()));
    assert_eq!(event_reasons(&sim.step()), vec!["InvalidSpec"]);
    let again = sim.step();
    assert!(again.events.is_empty());
    assert_eq!(again.status, sim.status);
}

#[test]
fn new_revision_starts_first_ring_without_writing_yet() {
    let mut sim = two_rings();
    let decision = sim.step();
    assert!(
        decision.actions.is_empty(),
        "the start is persisted before any write"
    );
    assert_eq!(decision.requeue_at, Some(sim.now));
    assert_eq!(sim.status.phase, Some(Phase::Progressing));
    assert_eq!(sim.status.revision, Some(sim.revision()));
    assert_eq!(sim.status.rings[0].phase, RingPhase::Applying);
    assert_eq!(sim.status.rings[1].phase, RingPhase::Pending);
    assert_eq!(sim.status.ring_progress.as_deref(), Some("1/2 canary"));
    assert_eq!(event_reasons(&decision), vec!["RingStarted"]);
}

#[test]
fn spec_change_without_new_revision_does_not_restart() {
    let mut sim = two_rings();
    sim.settle(30);
    assert_eq!(sim.status.phase, Some(Phase::Succeeded));
    sim.spec.progress_deadline = "20m".into();
    sim.meta.generation += 1;
    let decision = sim.step();
    assert!(decision.actions.is_empty());
    assert_eq!(sim.status.phase, Some(Phase::Succeeded));
    assert_eq!(sim.status.observed_generation, Some(2));
}

#[test]
fn changed_rings_restart_the_revision_from_the_first_ring() {
    let mut sim = two_rings();
    sim.settle(30);
    assert_eq!(sim.status.phase, Some(Phase::Succeeded));
    sim.spec
        .rings
        .push(spec_with_rings(&[("late", &["cell-d"])]).rings.remove(0));
    sim.world.namespaces.push(ns("cell-d"));
    let restart = sim.step();
    assert_eq!(event_reasons(&restart), vec!["RingStarted"]);
    assert_eq!(sim.status.rings.len(), 3);
    sim.settle(30);
    assert_eq!(sim.status.phase, Some(Phase::Succeeded));
    assert!(holds(&sim, "cell-d", &sim.revision()));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn rings_resolve_first_ring_wins_and_record_duplicates() {
    let mut sim = Sim::new(spec_with_rings(&[
        ("canary", &["cell-a"]),
        ("broad", &["cell-a", "cell-b"]),
    ]));
    sim.step();
    assert_eq!(sim.status.rings[1].targets, vec!["cell-b"]);
    assert_eq!(sim.status.rings[1].duplicates, vec!["cell-a"]);
    sim.settle(30);
    assert_eq!(sim.status.phase, Some(Phase::Succeeded));
}

#[test]
fn relabelled_namespace_cannot_jump_rings() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"]), ("broad", &["cell-b"])]);
    spec.rings[1].namespaces = None;
    spec.rings[1].namespace_selector = Some(selector(&[("ring", "broad")]));
    let mut sim = Sim::new(spec);
    sim.world.namespaces = vec![
        ns("cell-a"),
        ns_labelled("cell-b", &[("ring", "broad")]),
        ns_labelled("cell-c", &[("ring", "later")]),
    ];
    sim.step();
    sim.world.namespaces[2]
        .labels
        .insert("ring".into(), "broad".into());
    sim.settle(30);
    assert_eq!(sim.status.phase, Some(Phase::Succeeded));
    assert_eq!(sim.status.rings[1].targets, vec!["cell-b"]);
    assert!(!sim.world.targets.contains_key("cell-c"));
}

#[test]
fn terminating_namespace_is_not_a_target() {
    let mut sim = two_rings();
    sim.world.namespaces[2].terminating = true;
    sim.settle(30);
    assert_eq!(sim.status.rings[1].targets, vec!["cell-b"]);
    assert!(!sim.world.targets.contains_key("cell-c"));
}

#[test]
fn applying_records_priors_then_writes_at_most_max_concurrent() {
    let mut spec = spec_with_rings(&[("all", &["a", "b", "c", "d", "e"])]);
    spec.rings[0].max_concurrent = Some(IntOrString::String("40%".into()));
    let mut sim = Sim::new(spec);
    sim.step();
    let first = sim.step();
    assert_eq!(
        first.actions[0],
        Action::RecordPriors {
            namespaces: ["a", "b"].map(String::from).to_vec()
        },
        "the priors of the batch only: recording costs what the batch does"
    );
    assert_eq!(writes(&first), vec!["a", "b"], "40% of 5, rounded up");
    let second = sim.step();
    assert_eq!(
        second.actions[0],
        Action::RecordPriors {
            namespaces: ["c", "d"].map(String::from).to_vec()
        }
    );
    assert_eq!(writes(&second), vec!["c", "d"]);
    assert_eq!(
        sim.status.rings[0].updated, 2,
        "counted as observed before this batch"
    );
    assert_eq!(writes(&sim.step()), vec!["e"]);
    sim.step();
    assert_eq!(
        sim.status.rings[0].phase,
        RingPhase::Promoted,
        "without gates or bake, judged by the step that sees every target written"
    );
}

#[test]
fn failed_write_is_retried_and_nothing_persisted() {
    let mut sim = two_rings();
    sim.step();
    let before = sim.status.clone();
    sim.fail_at = Some(1);
    sim.step();
    assert_eq!(
        sim.status, before,
        "status is not written when an action failed"
    );
    assert!(sim.world.priors.contains_key("cell-a"));
    let retry = sim.step();
    assert_eq!(writes(&retry), vec!["cell-a"]);
    assert!(retry.actions.len() == 1, "priors are not recorded twice");
}

#[test]
fn promotion_is_persisted_before_the_next_ring_is_written() {
    let mut sim = two_rings();
    for _ in 0..2 {
        sim.step();
    }
    assert_eq!(sim.status.rings[0].phase, RingPhase::Applying);
    assert_eq!(sim.status.rings[0].updated, 0);
    let promote = sim.step();
    assert_eq!(event_reasons(&promote), vec!["RingPromoted", "RingStarted"]);
    assert!(promote.actions.is_empty());
    assert_eq!(sim.status.rings[0].phase, RingPhase::Promoted);
    assert_eq!(sim.status.rings[1].phase, RingPhase::Applying);
    assert_eq!(writes(&sim.step()), vec!["cell-b", "cell-c"]);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn ring_is_promoted_only_after_healthy_for_the_whole_bake() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"]), ("broad", &["cell-b"])]);
    spec.rings[0].bake = "10m".into();
    spec.gates = vec![webhook_gate("smoke", "1m", 3)];
    let mut sim = Sim::new(spec);
    sim.settle(10);
    assert_eq!(sim.status.rings[0].phase, RingPhase::Verifying);
    let since = sim.status.rings[0].healthy_since.clone().map(|t| t.0);
    assert_eq!(since, Some(sim.now));
    sim.advance(300);
    sim.settle(10);
    assert!(
        sim.status
            .message
            .as_deref()
            .unwrap_or("")
            .contains("baking, 5m of 10m healthy"),
        "{:?}",
        sim.status.message
    );
    sim.verdicts.insert("smoke".into(), Verdict::Inconclusive);
    sim.advance(60);
    sim.settle(10);
    assert_eq!(
        sim.status.rings[0].healthy_since, None,
        "inconclusive breaks the bake"
    );
    sim.verdicts.clear();
    sim.advance(60);
    sim.settle(10);
    sim.advance(540);
    sim.settle(10);
    assert_eq!(
        sim.status.rings[0].phase,
        RingPhase::Verifying,
        "bake restarted after the break"
    );
    sim.advance(60);
    sim.settle(10);
    assert_eq!(sim.status.rings[0].phase, RingPhase::Promoted);
}

#[test]
fn failure_limit_consecutive_fails_fail_the_ring_and_inconclusive_neither_counts_nor_resets() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"])]);
    spec.rings[0].bake = "1h".into();
    spec.gates = vec![webhook_gate("smoke", "1m", 2)];
    let mut sim = Sim::new(spec);
    sim.settle(10);
    sim.verdicts.insert("smoke".into(), Verdict::Fail);
    sim.advance(60);
    sim.settle(10);
    assert_eq!(sim.status.rings[0].gates[0].consecutive_failures, 1);
    assert_eq!(sim.status.health.as_deref(), Some("Failing"));
    sim.verdicts.insert("smoke".into(), Verdict::Inconclusive);
    sim.advance(60);
    sim.settle(10);
    assert_eq!(sim.status.rings[0].gates[0].consecutive_failures, 1);
    sim.verdicts.insert("smoke".into(), Verdict::Fail);
    sim.advance(60);
    let decision = sim.step();
    assert_eq!(sim.status.phase, Some(Phase::RollingBack));
    assert!(
        decision.actions.is_empty(),
        "restores start once RollingBack is persisted"
    );
    assert_eq!(
        event_reasons(&decision),
        vec!["GateFailed", "RollbackStarted"]
    );
    let rollback = sim
        .status
        .rollback
        .clone()
        .unwrap_or_else(|| panic!("rollback status"));
    assert_eq!(rollback.reason, "GateFailed");
    assert_eq!(
        rollback.gates[0].value,
        Some(0.2),
        "the values that caused it"
    );
}

#[test]
fn pass_resets_the_failure_counter() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"])]);
    spec.rings[0].bake = "1h".into();
    spec.gates = vec![webhook_gate("smoke", "1m", 2)];
    let mut sim = Sim::new(spec);
    sim.settle(10);
    for verdict in [Verdict::Fail, Verdict::Pass, Verdict::Fail] {
        sim.verdicts.insert("smoke".into(), verdict);
        sim.advance(60);
        sim.settle(10);
    }
    assert_eq!(sim.status.phase, Some(Phase::Progressing));
    assert_eq!(sim.status.rings[0].gates[0].consecutive_failures, 1);
}

#[test]
fn baseline_is_measured_and_persisted_before_the_ring_is_written() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"])]);
    spec.gates = vec![
        baseline_gate("errors", "30s", 1),
        webhook_gate("smoke", "30s", 1),
    ];
    let mut sim = Sim::new(spec);
    sim.step();
    let requests = gate_requests(&sim.inputs());
    assert_eq!(
        requests.len(),
        1,
        "only gates judged against a baseline need one"
    );
    assert_eq!(requests[0].purpose, GatePurpose::Baseline);
    assert_eq!(requests[0].namespaces, vec!["cell-a"]);
    let stored = sim.step();
    assert!(
        stored.actions.is_empty(),
        "the baseline is persisted before writing"
    );
    assert_eq!(sim.status.rings[0].gates[0].baseline, Some(0.01));
    assert!(gate_requests(&sim.inputs()).is_empty());
    assert_eq!(writes(&sim.step()), vec!["cell-a"]);
    sim.step();
    let checks = gate_requests(&sim.inputs());
    assert_eq!(checks.len(), 2);
    assert!(checks.iter().all(|r| r.purpose == GatePurpose::Check));
    assert_eq!(checks[0].baseline, Some(0.01));
}

#[test]
fn missing_baseline_holds_the_ring_and_is_retried_each_interval() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"])]);
    spec.gates = vec![baseline_gate("errors", "30s", 1)];
    let mut sim = Sim::new(spec);
    sim.step();
    let mut world = sim.world.clone();
    world.gate_results = vec![GateResult {
        gate: "errors".into(),
        ring: 0,
        purpose: GatePurpose::Baseline,
        verdict: Verdict::Inconclusive,
        value: None,
        baseline: None,
        threshold: None,
        message: "prometheus unreachable".into(),
        at: sim.now,
    }];
    let inputs = Inputs {
        world: &world,
        ..sim.inputs()
    };
    let decision = decide(&inputs);
    assert!(writes(&decision).is_empty());
    assert_eq!(
        decision.requeue_at,
        sim.now
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(30))
            .ok()
    );
    assert!(
        decision
            .status
            .message
            .unwrap_or_default()
            .contains("measuring the baseline")
    );
}

#[test]
fn gates_are_checked_every_interval() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"])]);
    spec.rings[0].bake = "1h".into();
    spec.gates = vec![
        webhook_gate("smoke", "30s", 1),
        webhook_gate("slow", "5m", 1),
    ];
    let mut sim = Sim::new(spec);
    sim.settle(10);
    assert!(gate_requests(&sim.inputs()).is_empty());
    sim.advance(30);
    let due: Vec<String> = gate_requests(&sim.inputs())
        .into_iter()
        .map(|r| r.gate)
        .collect();
    assert_eq!(due, vec!["smoke"]);
    let decision = sim.step();
    assert_eq!(
        decision.requeue_at,
        sim.now
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(30))
            .ok()
    );
}

#[test]
fn progress_deadline_fails_the_ring_when_workloads_do_not_roll_out() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"])]);
    spec.workloads = Some(workloads(false));
    let mut sim = Sim::new(spec);
    sim.world.workloads.insert(
        "cell-a".into(),
        vec![WorkloadState {
            kind: WorkloadKind::Deployment,
            name: "checkout".into(),
            stamped_revision: None,
            rolled_out: false,
        }],
    );
    let decision = sim.settle(10);
    assert_eq!(sim.status.rings[0].phase, RingPhase::Verifying);
    let deadline = sim
        .now
        .checked_add(k8s_openapi::jiff::SignedDuration::from_mins(10))
        .ok();
    assert_eq!(decision.requeue_at, deadline);
    sim.now = deadline.unwrap_or(sim.now);
    let failed = sim.step();
    assert_eq!(
        event_reasons(&failed),
        vec!["ProgressDeadlineExceeded", "RollbackStarted"]
    );
    sim.settle(10);
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
    assert_eq!(
        condition(&sim, "RolledBack"),
        ("True", "ProgressDeadlineExceeded")
    );
}

#[test]
fn restart_stamps_workloads_with_the_revision() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"])]);
    spec.workloads = Some(workloads(true));
    let mut sim = Sim::new(spec);
    for _ in 0..2 {
        sim.step();
    }
    let stamp = sim.step();
    assert_eq!(
        stamp.actions,
        vec![Action::StampWorkloads {
            namespace: "cell-a".into(),
            revision: sim.revision(),
            workloads: vec![(WorkloadKind::Deployment, "checkout".into())],
        }]
    );
    sim.step();
    assert_eq!(
        sim.status.rings[0].phase,
        RingPhase::Verifying,
        "waits for the restart to roll out"
    );
    sim.advance(5);
    sim.settle(10);
    assert_eq!(sim.status.phase, Some(Phase::Succeeded));
}

fn failing_rollout(automatic: bool) -> Sim {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"]), ("broad", &["cell-b", "cell-c"])]);
    spec.gates = vec![webhook_gate("smoke", "30s", 1)];
    spec.rings[1].bake = "1h".into();
    spec.workloads = Some(workloads(true));
    spec.rollback.automatic = automatic;
    let mut sim = Sim::new(spec);
    // cell-a held other content, cell-b held the stable revision, cell-c had none.
    sim.world
        .targets
        .insert("cell-a".into(), target("handmade", "kubectl"));
    sim.world
        .targets
        .insert("cell-b".into(), target("stable0", FIELD_MANAGER));
    for list in sim.world.workloads.values_mut() {
        list[0].stamped_revision = Some("stable0".into());
    }
    sim.status.stable_revision = Some("stable0".into());
    sim.reset_rollback_point();
    for _ in 0..20 {
        sim.step();
        sim.advance(1);
        if sim
            .status
            .rings
            .get(1)
            .is_some_and(|r| r.phase == RingPhase::Verifying && r.healthy_since.is_some())
        {
            break;
        }
    }
    sim.verdicts.insert("smoke".into(), Verdict::Fail);
    sim.advance(30);
    sim
}

#[test]
fn rollback_restores_every_prior_then_completes_when_observed() {
    let mut sim = failing_rollout(true);
    sim.step();
    assert_eq!(sim.status.phase, Some(Phase::RollingBack));
    let restore = sim.step();
    assert_eq!(
        restore.actions[0],
        Action::RestoreTargets {
            namespaces: ["cell-b", "cell-c", "cell-a"].map(String::from).to_vec()
        },
        "current ring first, then earlier rings"
    );
    assert!(restore.actions.contains(&Action::StampWorkloads {
        namespace: "cell-a".into(),
        revision: "handmade".into(),
        workloads: vec![(WorkloadKind::Deployment, "checkout".into())],
    }));
    assert_eq!(
        sim.status.phase,
        Some(Phase::RollingBack),
        "not complete until observed"
    );
    let done = sim.step();
    assert_eq!(event_reasons(&done), vec!["RollbackCompleted"]);
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
    assert!(holds(&sim, "cell-a", "handmade") && holds(&sim, "cell-b", "stable0"));
    assert!(
        !sim.world.targets.contains_key("cell-c"),
        "absent before, absent after"
    );
    assert_eq!(condition(&sim, "RolledBack"), ("True", "GateFailed"));
    let rollback = sim
        .status
        .rollback
        .clone()
        .unwrap_or_else(|| panic!("rollback status"));
    assert!(rollback.started_at.is_some() && rollback.completed_at.is_some());
    assert_eq!(sim.status.history[0].outcome, Phase::RolledBack);
    assert!(
        sim.world.priors.is_empty(),
        "the rollback point moved on with RolledBack"
    );
    let steady = sim.step();
    assert!(steady.actions.is_empty() && steady.events.is_empty() && steady.requeue_at.is_none());
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn rollback_finishes_even_when_the_spec_becomes_invalid() {
    let mut sim = failing_rollout(true);
    sim.step();
    assert_eq!(sim.status.phase, Some(Phase::RollingBack));
    sim.world.config = Some(Err("source deleted".into()));
    sim.spec.rings[0].bake = "soon".into();
    let restore = sim.step();
    assert!(matches!(
        restore.actions.first(),
        Some(Action::RestoreTargets { .. })
    ));
    assert_eq!(event_reasons(&restore), vec!["InvalidSpec"]);
    assert_eq!(condition(&sim, "Valid").0, "False");
    run_until(&mut sim, Phase::RolledBack);
    assert!(holds(&sim, "cell-b", "stable0"));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn rolled_back_revision_is_not_retried_until_retry_requested() {
    let mut sim = failing_rollout(true);
    sim.step();
    sim.verdicts.clear();
    run_until(&mut sim, Phase::RolledBack);
    sim.settle(10);
    sim.advance(3600);
    sim.settle(10);
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
    sim.meta.requests.retry = Some("r1".into());
    let retry = sim.step();
    assert_eq!(sim.status.phase, Some(Phase::Progressing));
    assert_eq!(sim.status.rings[0].phase, RingPhase::Applying);
    assert_eq!(event_reasons(&retry), vec!["RingStarted"]);
    assert_eq!(
        sim.status
            .handled_requests
            .as_ref()
            .and_then(|h| h.retry.clone()),
        Some("r1".into())
    );
    for _ in 0..4 {
        sim.advance(1);
        sim.settle(30);
    }
    sim.advance(3600);
    sim.settle(30);
    assert_eq!(
        sim.status.phase,
        Some(Phase::Succeeded),
        "{:?}",
        sim.status.message
    );
}

#[test]
fn without_automatic_rollback_a_failure_stops_as_failed() {
    let mut sim = failing_rollout(false);
    let decision = sim.step();
    assert_eq!(sim.status.phase, Some(Phase::Failed));
    assert_eq!(
        event_reasons(&decision),
        vec!["GateFailed", "RolloutFailed"]
    );
    assert!(
        sim.status
            .message
            .as_deref()
            .unwrap_or("")
            .contains("request an abort")
    );
    let idle = sim.settle(5);
    assert!(idle.actions.is_empty() && idle.requeue_at.is_none());
    assert!(holds(&sim, "cell-b", &sim.revision()), "nothing restored");
    sim.meta.requests.abort = Some("a1".into());
    run_until(&mut sim, Phase::RolledBack);
    assert!(holds(&sim, "cell-b", "stable0"));
    assert_eq!(condition(&sim, "RolledBack"), ("True", "Aborted"));
}

#[test]
fn success_sets_stable_revision_and_history_then_forgets_priors() {
    let mut sim = two_rings();
    run_until(&mut sim, Phase::Succeeded);
    assert_eq!(sim.status.stable_revision, Some(sim.revision()));
    assert_eq!(sim.status.history[0].outcome, Phase::Succeeded);
    assert!(sim.events.iter().any(|e| e.reason == "RolloutSucceeded"));
    assert_eq!(condition(&sim, "Ready"), ("True", "RolloutComplete"));
    assert_eq!(sim.status.health.as_deref(), Some("Healthy"));
    assert_eq!(
        sim.status.priors.as_ref().map(|p| (p.epoch, p.recorded)),
        Some((1, 0)),
        "records of the old rollback point stop counting"
    );
    assert!(sim.world.priors.is_empty());
    assert!(sim.step().actions.is_empty());
}

#[test]
fn history_keeps_the_ten_newest() {
    let mut sim = Sim::new(spec_with_rings(&[("only", &["cell-a"])]));
    for i in 0..12 {
        sim.set_config(&i.to_string());
        sim.settle(20);
        sim.advance(1);
    }
    assert_eq!(sim.status.history.len(), 10);
    assert_eq!(sim.status.history[0].revision, sim.revision());
}

#[test]
fn paused_holds_writes_and_gates() {
    let mut sim = two_rings();
    sim.step();
    sim.spec.paused = true;
    let pause = sim.step();
    assert_eq!(event_reasons(&pause), vec!["RolloutPaused"]);
    assert_eq!(sim.status.phase, Some(Phase::Paused));
    assert_eq!(condition(&sim, "Progressing"), ("False", "Paused"));
    let held = sim.step();
    assert!(held.actions.is_empty() && held.events.is_empty() && held.requeue_at.is_none());
    assert!(gate_requests(&sim.inputs()).is_empty());
    sim.spec.paused = false;
    assert_eq!(event_reasons(&sim.step()), vec!["RolloutResumed"]);
    sim.settle(20);
    assert_eq!(sim.status.phase, Some(Phase::Succeeded));
}

#[test]
fn paused_time_does_not_count_toward_the_bake() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"])]);
    spec.rings[0].bake = "10m".into();
    spec.gates = vec![webhook_gate("smoke", "1m", 1)];
    let mut sim = Sim::new(spec);
    sim.settle(10);
    sim.advance(240);
    sim.settle(10);
    sim.spec.paused = true;
    sim.step();
    sim.advance(3600);
    sim.step();
    sim.spec.paused = false;
    sim.step();
    sim.settle(10);
    assert_eq!(
        sim.status.rings[0].phase,
        RingPhase::Verifying,
        "4m baked before the pause, 0 during it"
    );
    assert_eq!(sim.status.rings[0].paused_seconds, 3600);
    sim.advance(360);
    sim.settle(10);
    assert_eq!(sim.status.phase, Some(Phase::Succeeded));
}

#[test]
fn promote_request_ends_the_bake_once() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"]), ("broad", &["cell-b"])]);
    spec.rings[0].bake = "1h".into();
    spec.rings[1].bake = "1h".into();
    let mut sim = Sim::new(spec);
    sim.settle(10);
    sim.meta.requests.promote = Some("p1".into());
    let promote = sim.step();
    assert_eq!(event_reasons(&promote), vec!["RingPromoted", "RingStarted"]);
    assert_eq!(sim.status.rings[0].phase, RingPhase::Promoted);
    sim.settle(10);
    assert_eq!(
        sim.status.rings[1].phase,
        RingPhase::Verifying,
        "the same request id is not acted on twice"
    );
}

#[test]
fn promote_request_does_not_override_a_failing_gate() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"])]);
    spec.rings[0].bake = "1h".into();
    spec.gates = vec![webhook_gate("smoke", "1m", 3)];
    let mut sim = Sim::new(spec);
    sim.settle(10);
    sim.verdicts.insert("smoke".into(), Verdict::Fail);
    sim.advance(60);
    sim.settle(10);
    sim.meta.requests.promote = Some("p1".into());
    let refused = sim.step();
    assert_eq!(event_reasons(&refused), vec!["PromoteRefused"]);
    assert_eq!(sim.status.rings[0].phase, RingPhase::Verifying);
    assert_eq!(
        sim.status
            .handled_requests
            .as_ref()
            .and_then(|h| h.promote.clone()),
        Some("p1".into())
    );
}

#[test]
fn abort_request_rolls_back_now_even_while_paused() {
    let mut sim = two_rings();
    for _ in 0..4 {
        sim.step();
    }
    sim.spec.paused = true;
    sim.step();
    sim.meta.requests.abort = Some("a1".into());
    let abort = sim.step();
    assert_eq!(event_reasons(&abort), vec!["RollbackStarted"]);
    assert!(abort.actions.is_empty());
    run_until(&mut sim, Phase::RolledBack);
    assert!(!sim.world.targets.contains_key("cell-a"));
    assert!(!sim.world.targets.contains_key("cell-b"));
    assert_eq!(
        sim.status.rollback.as_ref().map(|r| r.reason.as_str()),
        Some("Aborted")
    );
}

#[test]
fn new_revision_supersedes_from_first_ring_and_keeps_the_rollback_point() {
    let mut sim = failing_rollout(true);
    sim.verdicts.clear();
    sim.advance(1);
    let first = sim.revision();
    sim.set_config("4");
    let supersede = sim.step();
    assert_eq!(
        event_reasons(&supersede),
        vec!["RolloutSuperseded", "RingStarted"]
    );
    assert_eq!(sim.status.rings[0].phase, RingPhase::Applying);
    assert_eq!(sim.status.rings[1].phase, RingPhase::Pending);
    assert!(
        holds(&sim, "cell-b", &first),
        "ring broad still holds the superseded revision"
    );
    // The new revision fails in its first ring: everything goes back to before the first.
    sim.verdicts.insert("smoke".into(), Verdict::Fail);
    for _ in 0..6 {
        sim.step();
    }
    run_until(&mut sim, Phase::RolledBack);
    assert!(holds(&sim, "cell-a", "handmade") && holds(&sim, "cell-b", "stable0"));
    assert!(!sim.world.targets.contains_key("cell-c"));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn new_revision_during_rollback_waits_for_it_to_finish() {
    let mut sim = failing_rollout(true);
    sim.step();
    assert_eq!(sim.status.phase, Some(Phase::RollingBack));
    let failed = sim.revision();
    sim.set_config("5");
    sim.step();
    assert_eq!(sim.status.phase, Some(Phase::RollingBack));
    assert_eq!(sim.status.revision, Some(failed));
    run_until(&mut sim, Phase::RolledBack);
    sim.step();
    assert_eq!(sim.status.revision, Some(sim.revision()));
    assert_eq!(sim.status.phase, Some(Phase::Progressing));
}

#[test]
fn drift_is_reported_once_and_not_overwritten() {
    let mut sim = two_rings();
    sim.settle(30);
    sim.world
        .targets
        .insert("cell-b".into(), target("edited", "kubectl-edit"));
    let drift = sim.step();
    assert!(drift.actions.is_empty(), "never silently overwritten");
    assert_eq!(event_reasons(&drift), vec!["TargetDrifted"]);
    assert!(drift.events[0].note.contains("kubectl-edit"));
    assert_eq!(condition(&sim, "Ready"), ("False", "Drifted"));
    assert_eq!(sim.status.health.as_deref(), Some("Degraded"));
    let again = sim.step();
    assert!(again.events.is_empty() && again.actions.is_empty());
    assert_eq!(again.status, sim.status);
}

#[test]
fn requeue_is_the_earliest_of_bake_end_gate_and_deadline_and_none_when_done() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"])]);
    spec.rings[0].bake = "2m".into();
    spec.gates = vec![webhook_gate("smoke", "5m", 1)];
    let mut sim = Sim::new(spec);
    let baking = sim.settle(10);
    assert_eq!(
        baking.requeue_at,
        sim.now
            .checked_add(k8s_openapi::jiff::SignedDuration::from_mins(2))
            .ok()
    );
    sim.advance(120);
    sim.settle(10);
    let done = sim.settle(10);
    assert_eq!(sim.status.phase, Some(Phase::Succeeded));
    assert_eq!(done.requeue_at, None);
}

#[test]
fn decide_is_idempotent_and_steady_state_writes_nothing() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"]), ("broad", &["cell-b"])]);
    spec.rings[0].bake = "10m".into();
    spec.gates = vec![webhook_gate("smoke", "1m", 1)];
    let mut sim = Sim::new(spec);
    for _ in 0..12 {
        assert_eq!(decide(&sim.inputs()), decide(&sim.inputs()));
        sim.step();
    }
    // Baking, nothing due: no actions and the status as persisted.
    let baking = decide(&sim.inputs());
    assert!(baking.actions.is_empty() && baking.events.is_empty());
    assert_eq!(baking.status, sim.status);
    sim.advance(600);
    sim.settle(30);
    let steady = decide(&sim.inputs());
    assert_eq!(sim.status.phase, Some(Phase::Succeeded));
    assert!(steady.actions.is_empty() && steady.events.is_empty());
    assert_eq!(steady.status, sim.status);
}

#[test]
fn status_reports_progress_health_and_conditions() {
    let mut spec = spec_with_rings(&[
        ("canary", &["cell-a"]),
        ("early", &["cell-b", "cell-c", "cell-d"]),
    ]);
    spec.rings[1].max_concurrent = Some(IntOrString::Int(2));
    let mut sim = Sim::new(spec);
    for _ in 0..5 {
        sim.step();
    }
    assert_eq!(sim.status.ring_progress.as_deref(), Some("2/2 early"));
    assert_eq!(sim.status.rings[1].updated, 2);
    assert_eq!(
        sim.status.message.as_deref(),
        Some(
            format!(
                "ring early (2/2): writing revision {}, 2 of 3 targets updated",
                sim.revision()
            )
            .as_str()
        )
    );
    assert_eq!(sim.status.health.as_deref(), Some("Progressing"));
    assert_eq!(condition(&sim, "Progressing"), ("True", "RingApplying"));
    assert_eq!(condition(&sim, "Valid"), ("True", "Accepted"));
    assert!(
        sim.status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(1))
    );
    assert_eq!(sim.status.conditions.len(), 5);
}

#[test]
fn failed_revision_superseded_keeps_the_rollback_point() {
    let mut sim = failing_rollout(false);
    sim.step();
    assert_eq!(sim.status.phase, Some(Phase::Failed));
    sim.set_config("6");
    sim.verdicts.clear();
    sim.step();
    assert_eq!(sim.status.phase, Some(Phase::Progressing));
    assert_eq!(
        sim.world.priors.len(),
        3,
        "priors of the failed revision are kept"
    );
    sim.step();
    sim.meta.requests.abort = Some("a1".into());
    run_until(&mut sim, Phase::RolledBack);
    assert!(holds(&sim, "cell-a", "handmade") && holds(&sim, "cell-b", "stable0"));
    assert!(!sim.world.targets.contains_key("cell-c"));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn retry_during_rollback_waits_for_it_to_finish() {
    let mut sim = failing_rollout(true);
    sim.step();
    sim.meta.requests.retry = Some("r1".into());
    sim.verdicts.clear();
    run_until(&mut sim, Phase::RolledBack);
    assert_eq!(
        sim.status
            .handled_requests
            .as_ref()
            .and_then(|h| h.retry.clone()),
        None
    );
    run_until(&mut sim, Phase::Progressing);
    assert_eq!(
        sim.status
            .handled_requests
            .as_ref()
            .and_then(|h| h.retry.clone()),
        Some("r1".into())
    );
}

/// A rollout whose canary (cell-a) and broad ring (cell-b, cell-c) were written and
/// are baking; the gate passes until a test makes it fail.
fn written_and_baking() -> Sim {
    let mut sim = failing_rollout(true);
    sim.verdicts.clear();
    sim.step();
    assert_eq!(sim.status.phase, Some(Phase::Progressing));
    sim
}

fn restored(decision: &Decision) -> Vec<String> {
    decision
        .actions
        .iter()
        .flat_map(|a| match a {
            Action::RestoreTargets { namespaces } => namespaces.clone(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn a_lost_prior_record_is_never_reported_as_rolled_back() {
    let mut sim = written_and_baking();
    sim.world.priors.remove("cell-b");
    sim.verdicts.insert("smoke".into(), Verdict::Fail);
    sim.advance(30);
    let mut restores = Vec::new();
    for _ in 0..10 {
        let d = sim.step();
        restores.extend(restored(&d));
    }
    assert!(
        !restores.contains(&"cell-b".to_string()),
        "nothing is written where the prior is unknown: {restores:?}"
    );
    assert!(restores.contains(&"cell-a".to_string()) && restores.contains(&"cell-c".to_string()));
    assert!(holds(&sim, "cell-a", "handmade") && !sim.world.targets.contains_key("cell-c"));
    assert_eq!(sim.status.phase, Some(Phase::Failed));
    assert_eq!(condition(&sim, "RolledBack"), ("False", "PriorsMissing"));
    let rollback = sim.status.rollback.clone().unwrap();
    assert_eq!(
        (rollback.unrestored, rollback.unrestored_targets),
        (1, vec!["cell-b".to_string()])
    );
    assert!(sim.events.iter().any(|e| e.reason == "RollbackIncomplete"));
    assert!(!sim.events.iter().any(|e| e.reason == "RollbackCompleted"));
    let message = sim.status.message.clone().unwrap();
    assert!(
        message.contains("rollback incomplete") && message.contains("cell-b"),
        "{message}"
    );
    let steady = sim.step();
    assert!(steady.actions.is_empty() && steady.events.is_empty());
}

#[test]
fn an_unreadable_prior_record_is_never_restored_from() {
    let mut sim = written_and_baking();
    sim.world.unreadable_priors.insert(
        "cell-c".into(),
        "its data does not match its recorded content hash".into(),
    );
    sim.verdicts.insert("smoke".into(), Verdict::Fail);
    sim.advance(30);
    let mut restores = Vec::new();
    for _ in 0..10 {
        restores.extend(restored(&sim.step()));
    }
    assert!(!restores.contains(&"cell-c".to_string()), "{restores:?}");
    assert_eq!(sim.status.phase, Some(Phase::Failed));
    assert_eq!(condition(&sim, "RolledBack"), ("False", "PriorsMissing"));
}

#[test]
fn records_lost_without_a_name_still_fail_the_rollback() {
    let mut sim = written_and_baking();
    // The store counted a record nobody can find, and no target names it.
    if let Some(p) = sim.status.priors.as_mut() {
        p.recorded += 1;
    }
    sim.verdicts.insert("smoke".into(), Verdict::Fail);
    sim.advance(30);
    run_until(&mut sim, Phase::Failed);
    assert_eq!(condition(&sim, "RolledBack"), ("False", "PriorsMissing"));
    assert_eq!(sim.status.rollback.as_ref().map(|r| r.unrestored), Some(1));
    assert!(
        holds(&sim, "cell-a", "handmade"),
        "every known prior is restored"
    );
}

#[test]
fn a_lost_record_holds_the_next_ring_and_says_so() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"]), ("broad", &["cell-b"])]);
    spec.rings[0].bake = "1m".into();
    let mut sim = Sim::new(spec);
    sim.settle(10);
    assert_eq!(sim.status.rings[0].phase, RingPhase::Verifying);
    sim.world.priors.clear();
    sim.advance(120);
    let mut written = Vec::new();
    for _ in 0..10 {
        written.extend(writes(&sim.step()));
    }
    assert!(written.is_empty(), "{written:?}");
    assert_eq!(sim.status.phase, Some(Phase::Progressing));
    assert_eq!(condition(&sim, "Progressing"), ("False", "PriorsMissing"));
    assert!(sim.status.message.clone().unwrap().contains("cell-a"));
    sim.meta.requests.abort = Some("now".into());
    run_until(&mut sim, Phase::Failed);
    assert_eq!(condition(&sim, "RolledBack"), ("False", "PriorsMissing"));
}

#[test]
fn abort_works_when_the_spec_turns_invalid() {
    let mut sim = written_and_baking();
    sim.world.config = Some(Err("source ConfigMap platform/src not found".into()));
    let held = sim.step();
    assert!(held.actions.is_empty(), "{:?}", held.actions);
    assert_eq!(condition(&sim, "Valid"), ("False", "ConfigUnresolvable"));
    assert_eq!(condition(&sim, "Progressing"), ("False", "InvalidSpec"));
    assert_eq!(sim.status.phase, Some(Phase::Progressing));
    assert!(
        sim.status
            .message
            .clone()
            .unwrap()
            .contains("an abort rolls back")
    );
    sim.meta.requests.abort = Some("a1".into());
    run_until(&mut sim, Phase::RolledBack);
    assert!(holds(&sim, "cell-a", "handmade") && holds(&sim, "cell-b", "stable0"));
    assert!(!sim.world.targets.contains_key("cell-c"));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_written_ring_stays_gated_by_the_last_valid_gates() {
    let mut sim = written_and_baking();
    // The gate's interval is edited into something that does not parse, and the
    // source disappears: the last valid gate keeps judging the written ring.
    sim.spec.gates[0].interval = "soon".into();
    sim.world.config = Some(Err("source ConfigMap platform/src not found".into()));
    sim.advance(30);
    let requests = gate_requests(&sim.inputs());
    assert_eq!(requests.len(), 1, "still gated");
    assert_eq!(requests[0].definition.interval, "30s");
    sim.step();
    assert_eq!(sim.status.phase, Some(Phase::Progressing));
    sim.verdicts.insert("smoke".into(), Verdict::Fail);
    sim.advance(30);
    run_until(&mut sim, Phase::RolledBack);
    assert!(holds(&sim, "cell-a", "handmade"));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_held_ring_is_not_promoted() {
    let mut sim = written_and_baking();
    sim.world.config = Some(Err("gone".into()));
    sim.meta.requests.promote = Some("p1".into());
    sim.advance(7200);
    for _ in 0..5 {
        sim.step();
        sim.advance(30);
    }
    assert_eq!(sim.status.phase, Some(Phase::Progressing));
    assert_eq!(sim.status.rings[1].phase, RingPhase::Verifying);
    assert!(sim.events.iter().any(|e| e.reason == "PromoteRefused"));
}

#[test]
fn an_identical_target_is_taken_over_not_drifted() {
    let mut sim = Sim::new(spec_with_rings(&[("only", &["cell-a"])]));
    let revision = sim.revision();
    let mut identical = target(&revision, "kubectl-client-side-apply");
    identical.revision = None;
    sim.world.targets.insert("cell-a".into(), identical);
    sim.reset_rollback_point();
    let first = sim.step();
    let second = sim.step();
    assert_eq!(
        writes(&first).len() + writes(&second).len(),
        1,
        "claimed like any other"
    );
    sim.settle(10);
    assert_eq!(sim.status.phase, Some(Phase::Succeeded));
    assert_eq!(condition(&sim, "Ready"), ("True", "RolloutComplete"));
    assert_eq!(
        sim.world.targets["cell-a"].rollout.as_deref(),
        Some("platform/flags")
    );
}

#[test]
fn a_ring_that_cannot_be_written_fails_at_the_progress_deadline() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"]), ("broad", &["cell-b"])]);
    spec.progress_deadline = "2m".into();
    let mut sim = Sim::new(spec);
    for _ in 0..6 {
        // Every write batch fails (the action list is priors, then the write).
        sim.fail_at = Some(0);
        sim.step();
        sim.advance(30);
    }
    assert_eq!(sim.status.rings[0].phase, RingPhase::Failed);
    assert_eq!(
        sim.status.rollback.as_ref().map(|r| r.reason.as_str()),
        Some("ProgressDeadlineExceeded")
    );
    assert!(
        sim.status
            .rollback
            .as_ref()
            .unwrap()
            .message
            .contains("not written within 2m"),
        "{:?}",
        sim.status.rollback
    );
}

#[test]
fn the_prior_count_follows_the_records() {
    let mut sim = two_rings();
    sim.settle(30);
    assert_eq!(sim.status.phase, Some(Phase::Succeeded));
    let mut sim = written_and_baking();
    assert_eq!(sim.status.priors.as_ref().map(|p| p.recorded), Some(3));
    sim.step();
    assert_eq!(sim.status.priors.as_ref().map(|p| p.recorded), Some(3));
}

fn int_rule(key: &str, maximum: i64) -> crate::api::ValidationRule {
    crate::api::ValidationRule {
        key: Some(key.into()),
        key_pattern: None,
        format: crate::api::ValueFormat::Int,
        schema: Some(serde_json::json!({"maximum": maximum})),
    }
}

#[test]
fn data_the_api_server_would_refuse_is_invalid_before_ring_one() {
    let mut sim = two_rings();
    sim.spec.config.data = Some([("bad key/with slash".to_string(), "1".to_string())].into());
    sim.world.config = Some(Ok(resolved(&sim.spec)));
    let decision = assert_invalid(&mut sim, "ConfigDataInvalid");
    assert_eq!(event_reasons(&decision), vec!["InvalidSpec"]);
    let message = sim.status.message.clone().unwrap_or_default();
    assert!(
        message.contains("spec.config.data[\"bad key/with slash\"]: a valid config key"),
        "{message}"
    );
    assert!(sim.world.targets.values().all(|t| !t.exists));
}

#[test]
fn data_that_turns_invalid_mid_rollout_writes_nothing_more() {
    let mut sim = two_rings();
    sim.spec.rings[0].bake = "1h".into();
    sim.spec.config.validation = vec![int_rule("retries", 10)];
    sim.settle(10);
    let first = sim.revision();
    assert!(holds(&sim, "cell-a", &first), "ring canary is written");
    assert!(!sim.world.targets.contains_key("cell-b"));

    sim.set_config("11");
    let decision = assert_invalid(&mut sim, "ConfigDataInvalid");
    assert_eq!(
        decision.events[0].note,
        "spec.config.data[\"retries\"]: 11 is greater than the maximum of 10"
    );
    // The bake of the old revision ends: still nothing is written, in any ring.
    sim.advance(7200);
    for _ in 0..5 {
        let decision = sim.step();
        assert!(writes(&decision).is_empty(), "{:?}", decision.actions);
    }
    assert!(holds(&sim, "cell-a", &first));
    assert!(!sim.world.targets.contains_key("cell-b") && !sim.world.targets.contains_key("cell-c"));

    // Fixed data is a new revision that starts again from the first ring.
    sim.set_config("5");
    sim.settle(10);
    assert_eq!(condition(&sim, "Valid").0, "True");
    assert!(holds(&sim, "cell-a", &sim.revision()));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_secret_value_is_never_in_status_or_events() {
    const VALUE: &str = "9999-s3cr3t";
    let mut sim = two_rings();
    sim.spec.config.kind = crate::api::ConfigKind::Secret;
    sim.spec.config.data = None;
    sim.spec.config.source_ref = Some(crate::api::SourceRef {
        name: "creds".into(),
    });
    sim.spec.config.validation = vec![int_rule("port", 10), int_rule("retries", 10)];
    sim.world.config = Some(Ok(ResolvedConfig {
        kind: crate::api::ConfigKind::Secret,
        data: [
            ("port".to_string(), VALUE.as_bytes().to_vec()),
            ("retries".to_string(), b"9999".to_vec()),
        ]
        .into(),
    }));
    let decision = assert_invalid(&mut sim, "ConfigDataInvalid");
    let status = serde_json::to_string(&sim.status).unwrap();
    let events = format!("{:?}", decision.events);
    for text in [&status, &events] {
        assert!(!text.contains("9999"), "{text}");
    }
    assert!(
        status.contains(
            "Secret creds data[\\\"retries\\\"]: violates \\\"maximum\\\" (schema location /maximum)"
        ),
        "{status}"
    );
    assert!(status.contains("Secret creds data[\\\"port\\\"]: is not a 64-bit integer"));
}

#[test]
fn rules_from_a_validation_ref_are_waited_for_and_applied() {
    let mut sim = two_rings();
    sim.spec.config.validation_ref = Some(crate::api::SourceRef {
        name: "flags-schema".into(),
    });
    assert_invalid(&mut sim, "ConfigUnresolvable");
    sim.world.validation = Some(Err("ConfigMap platform/flags-schema not found".into()));
    assert_invalid(&mut sim, "ConfigUnresolvable");

    let mut broken = int_rule("retries", 10);
    broken.key_pattern = Some("*".into());
    sim.world.validation = Some(Ok(vec![broken]));
    assert_invalid(&mut sim, "ValidationRuleInvalid");
    assert!(sim.status.message.as_deref().unwrap_or("").contains(
        "ConfigMap flags-schema validation.yaml[0]: set exactly one of key and keyPattern"
    ));

    sim.world.validation = Some(Ok(vec![int_rule("retries", 2)]));
    assert_invalid(&mut sim, "ConfigDataInvalid");
    sim.world.validation = Some(Ok(vec![int_rule("retries", 3)]));
    sim.settle(10);
    assert!(holds(&sim, "cell-a", &sim.revision()));
}

#[test]
fn a_lost_layout_holds_the_rollout_and_an_abort_still_restores_every_target() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"]), ("broad", &["cell-b", "cell-c"])]);
    spec.rings[0].bake = "1m".into();
    let mut sim = Sim::new(spec);
    sim.settle(10);
    assert_eq!(sim.status.rings[0].phase, RingPhase::Verifying);
    assert_eq!(sim.status.rings[1].target_count, 2);
    sim.lose_layout();
    sim.advance(120);
    let mut written = Vec::new();
    for _ in 0..10 {
        written.extend(writes(&sim.step()));
    }
    assert!(written.is_empty(), "nothing is written blind: {written:?}");
    assert_eq!(sim.status.phase, Some(Phase::Progressing));
    assert_eq!(condition(&sim, "Progressing"), ("False", "LayoutMissing"));
    assert!(
        sim.status
            .message
            .clone()
            .unwrap()
            .contains("ring layout is unknown")
    );
    assert_eq!(
        sim.status.rings[1].target_count, 2,
        "the counts in status are kept"
    );
    sim.meta.requests.abort = Some("a1".into());
    run_until(&mut sim, Phase::RolledBack);
    assert!(
        !sim.world.targets.contains_key("cell-a"),
        "restored from its record"
    );
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_new_revision_starts_over_with_a_fresh_layout_after_one_was_lost() {
    let mut spec = spec_with_rings(&[("canary", &["cell-a"]), ("broad", &["cell-b"])]);
    spec.rings[0].bake = "1m".into();
    let mut sim = Sim::new(spec);
    sim.settle(10);
    sim.lose_layout();
    sim.step();
    assert_eq!(condition(&sim, "Progressing"), ("False", "LayoutMissing"));
    sim.set_config("2");
    for _ in 0..4 {
        sim.settle(10);
        sim.advance(120);
    }
    assert_eq!(
        sim.status.phase,
        Some(Phase::Succeeded),
        "{:?}",
        sim.status.message
    );
    assert!(sim.world.layout_missing.is_none());
    let revision = sim.revision();
    assert!(
        ["cell-a", "cell-b"]
            .iter()
            .all(|ns| holds(&sim, ns, &revision))
    );
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}
