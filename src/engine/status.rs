//! The derived status: what `decide` computes from the status its transitions
//! left and the observed world (ring counts, prior-record counts, drift, the
//! conditions, health, progress and message), and the status of a rejected spec.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::clock::stamp;
use super::conditions::{self, Desired, Truth};
use super::gates::{active_ring, all_passing, currently_failing};
use super::invalid::Invalid;
use super::layout;
use super::message::{self, Observed, drift_list};
use super::model::{Decision, EventNote, EventType, Inputs, World};
use super::rings::alive_namespaces;
use super::rollback::{priors_lost_unnamed, priors_missing, seen_holding_prior};
use super::validate::{Plan, last_valid_spec};
use crate::api::{ConfigRolloutStatus, FIELD_MANAGER, Phase, PriorsStatus, RingPhase, RingStatus};

/// What a decision's transitions left, to derive the rest of the status from.
pub(crate) struct Outcome<'a> {
    pub inputs: &'a Inputs<'a>,
    pub plan: &'a Plan,
    /// The status after the transitions.
    pub status: ConfigRolloutStatus,
    /// The transitions' events; derived changes add theirs.
    pub events: Vec<EventNote>,
    pub now: Time,
    /// `namespace/name` of the rollout, as targets' rollout annotation carries it.
    pub key: &'a str,
    /// Why the spec is invalid, while the revision in flight is held.
    pub invalid: Option<&'a Invalid>,
    /// Why the rings' targets are unknown, unless the rings were resolved afresh.
    pub layout_missing: Option<&'a str>,
    /// Prior records the decision asks the controller to add.
    pub recording: usize,
    /// The rollback point moved on in the decision.
    pub rollback_point_moved: bool,
    /// Why the decision waits for a member cluster, if it does.
    pub waiting: Option<&'a str>,
}

impl Outcome<'_> {
    /// The status with its derived fields (counts, conditions, health, progress and
    /// message), and the events that the change of them calls for.
    pub(crate) fn derive(mut self) -> (ConfigRolloutStatus, Vec<EventNote>) {
        let world = self.inputs.world;
        let layout_known = self.layout_missing.is_none();
        if layout_known {
            layout::summarize(&mut self.status);
        }
        if let Some(revision) = self.status.revision.clone().filter(|_| layout_known) {
            for ring in &mut self.status.rings {
                let updated = ring
                    .targets
                    .iter()
                    .filter(|ns| {
                        world
                            .targets
                            .get(*ns)
                            .is_some_and(|t| t.holds_revision(&revision, self.key))
                    })
                    .count();
                ring.updated = u32::try_from(updated).unwrap_or(u32::MAX);
            }
        }
        if !self.rollback_point_moved {
            let found = u32::try_from(world.priors.len() + world.unreadable_priors.len())
                .unwrap_or(u32::MAX);
            let recording = u32::try_from(self.recording).unwrap_or(u32::MAX);
            if found > 0 || recording > 0 || self.status.priors.is_some() {
                let priors = self.status.priors.get_or_insert_with(PriorsStatus::default);
                priors.recorded = priors.recorded.max(found).saturating_add(recording);
            }
        }
        if self.invalid.is_none() {
            self.status.last_valid_spec = Some(last_valid_spec(
                self.inputs.spec,
                self.inputs.rollout.generation,
            ));
        }
        let in_flight = matches!(
            self.status.phase,
            Some(Phase::Progressing | Phase::Paused | Phase::RollingBack)
        );
        let priors_missing = if in_flight {
            priors_missing(world, self.key, self.status.stable_revision.as_deref())
        } else {
            Vec::new()
        };
        let priors_lost_unnamed = if in_flight {
            priors_lost_unnamed(self.inputs.status, world, priors_missing.len())
        } else {
            0
        };
        let workloads_ready =
            active_ring(&self.status).is_some_and(|(_, r)| workloads_ready(self.plan, world, r));
        let left_to_restore = if self.status.phase == Some(Phase::RollingBack) {
            world
                .priors
                .iter()
                .filter(|(ns, p)| !seen_holding_prior(world, ns, p))
                .count()
        } else {
            0
        };
        let observed = Observed {
            drifted: self.drifted(),
            workloads_ready,
            left_to_restore,
            waiting_revision: (self.status.revision.as_deref()
                != Some(self.plan.revision.as_str()))
            .then(|| self.plan.revision.clone()),
            paused: self.inputs.spec.paused,
            priors_missing,
            priors_lost_unnamed,
            held: self.invalid.as_ref().map(|i| i.reason.to_string()),
            layout_missing: self.layout_missing.map(str::to_string),
        };
        let old_ready = conditions::get(&self.inputs.status.conditions, conditions::READY).cloned();
        let generation = self.inputs.rollout.generation;
        let targets: u64 = self
            .status
            .rings
            .iter()
            .map(|r| u64::from(r.target_count))
            .sum();
        let valid = match &self.invalid {
            Some(invalid) => Desired {
                type_: conditions::VALID,
                status: Truth::False,
                reason: invalid.reason,
                message: invalid.message.clone(),
            },
            None => Desired {
                type_: conditions::VALID,
                status: Truth::True,
                reason: "Accepted",
                message: format!(
                    "{} rings, {targets} targets",
                    self.status.rings.len().max(self.plan.rings.len())
                ),
            },
        };
        if let Some(invalid) = &self.invalid
            && invalid_is_new(self.inputs, invalid)
        {
            self.events.push(invalid_event(invalid));
        }
        for desired in [
            valid,
            self.progressing_condition(&observed),
            self.healthy_condition(workloads_ready),
            self.ready_condition(&observed),
            self.rolled_back_condition(),
        ] {
            conditions::set(&mut self.status.conditions, desired, generation, &self.now);
        }
        // Waiting for a member cluster is announced once, when it starts.
        if let Some(progressing) = conditions::get(&self.status.conditions, conditions::PROGRESSING)
            && progressing.reason == "ClusterUnreachable"
            && conditions::get(&self.inputs.status.conditions, conditions::PROGRESSING)
                .is_none_or(|old| old.reason != progressing.reason)
        {
            self.events.push(EventNote {
                type_: EventType::Warning,
                reason: "ClusterUnreachable",
                note: progressing.message.clone(),
            });
        }
        if let Some(ready) = conditions::get(&self.status.conditions, conditions::READY)
            && ready.reason == "Drifted"
            && old_ready
                .is_none_or(|old| old.reason != ready.reason || old.message != ready.message)
        {
            let note = format!(
                "targets changed outside the rollout: {}",
                drift_list(&observed.drifted)
            );
            self.events.push(EventNote {
                type_: EventType::Warning,
                reason: "TargetDrifted",
                note,
            });
        }
        self.status.ring_progress = message::ring_progress(&self.status);
        self.status.health = Some(message::health(&self.status, self.plan, &observed).to_string());
        self.status.message = Some(message::message(&self.status, self.plan, &observed));
        if self.status.phase.is_none() {
            self.status.phase = Some(Phase::Pending);
        }
        (self.status, self.events)
    }

    /// Targets of written rings that someone else changed: reported, never
    /// silently overwritten outside a rollout.
    fn drifted(&self) -> Vec<(String, Option<String>)> {
        let Some(revision) = self.status.revision.as_deref() else {
            return Vec::new();
        };
        if !matches!(
            self.status.phase,
            Some(Phase::Progressing)
                | Some(Phase::Paused)
                | Some(Phase::Succeeded)
                | Some(Phase::Failed)
        ) {
            return Vec::new();
        }
        let alive = alive_namespaces(&self.inputs.world.namespaces);
        let mut seen = BTreeSet::new();
        self.status
            .rings
            .iter()
            .filter(|r| matches!(r.phase, RingPhase::Verifying | RingPhase::Promoted))
            .flat_map(|r| r.targets.iter())
            .filter(|ns| alive.contains(ns.as_str()) && seen.insert(ns.as_str()))
            .filter_map(|ns| {
                let target = self.inputs.world.targets.get(ns);
                let foreign = target
                    .and_then(|t| t.last_manager.as_deref())
                    .filter(|m| *m != FIELD_MANAGER)
                    .map(str::to_string);
                let same = target.is_some_and(|t| t.holds_revision(revision, self.key));
                (!same || foreign.is_some()).then(|| (ns.clone(), foreign))
            })
            .collect()
    }

    fn progressing_condition(&self, observed: &Observed) -> Desired {
        let blocked = match (&self.invalid, observed.priors_problem()) {
            (Some(invalid), _) => Some((
                "InvalidSpec",
                format!(
                    "the spec is invalid ({}): nothing more is written; the written rings stay gated and an abort rolls back",
                    invalid.reason
                ),
            )),
            (None, Some(problem)) if self.status.phase != Some(Phase::RollingBack) => Some((
                "PriorsMissing",
                format!("nothing more is written: {problem}; an abort restores the rest"),
            )),
            _ => observed.layout_missing.as_ref().map(|why| {
                (
                    "LayoutMissing",
                    format!(
                        "nothing more is written: the ring layout is unknown ({why}); an abort restores every recorded target, a new revision starts over"
                    ),
                )
            }),
        };
        let blocked = blocked.or_else(|| {
            self.waiting.map(|why| {
                let what = if self.status.phase == Some(Phase::RollingBack) {
                    "the rollback"
                } else {
                    "the ring"
                };
                (
                    "ClusterUnreachable",
                    format!("{what} waits: {why}; nothing is written there until it answers"),
                )
            })
        });
        if let Some((reason, message)) = blocked
            && matches!(
                self.status.phase,
                Some(Phase::Progressing) | Some(Phase::Paused) | Some(Phase::RollingBack)
            )
        {
            return Desired {
                type_: conditions::PROGRESSING,
                status: Truth::False,
                reason,
                message,
            };
        }
        let (status, reason, message) = match self.status.phase {
            Some(Phase::Progressing) => match active_ring(&self.status) {
                Some((_, r)) if r.phase == RingPhase::Verifying => (
                    Truth::True,
                    "RingVerifying",
                    format!("ring {} is verifying", r.name),
                ),
                Some((_, r)) => (
                    Truth::True,
                    "RingApplying",
                    format!("ring {} is being written", r.name),
                ),
                None => (Truth::True, "Progressing", "rolling out".to_string()),
            },
            Some(Phase::RollingBack) => (
                Truth::True,
                "RollingBack",
                "restoring prior content".to_string(),
            ),
            Some(Phase::Paused) => (Truth::False, "Paused", "spec.paused is set".to_string()),
            Some(Phase::Succeeded) => (
                Truth::False,
                "RolloutComplete",
                "every ring is promoted".to_string(),
            ),
            Some(Phase::RolledBack) => (
                Truth::False,
                "RolledBack",
                "the revision was rolled back".to_string(),
            ),
            Some(Phase::Failed) => (
                Truth::False,
                "RolloutFailed",
                "a ring failed; waiting for abort or retry".to_string(),
            ),
            Some(Phase::Pending) | None if self.inputs.spec.paused => {
                (Truth::False, "Paused", "spec.paused is set".to_string())
            }
            Some(Phase::Pending) | None => {
                (Truth::Unknown, "NotStarted", "waiting to start".to_string())
            }
        };
        Desired {
            type_: conditions::PROGRESSING,
            status,
            reason,
            message,
        }
    }

    fn healthy_condition(&self, workloads_ready: bool) -> Desired {
        let rollback_reason = || -> &'static str {
            match self.status.rollback.as_ref().map(|r| r.reason.as_str()) {
                Some("Aborted") => "Aborted",
                Some("ProgressDeadlineExceeded") => "ProgressDeadlineExceeded",
                _ => "GateFailed",
            }
        };
        let (status, reason, message) = match self.status.phase {
            Some(Phase::Succeeded) => (
                Truth::True,
                "RolloutComplete",
                "every ring passed its gates".to_string(),
            ),
            Some(Phase::RollingBack) | Some(Phase::RolledBack) => (
                Truth::False,
                rollback_reason(),
                self.status
                    .rollback
                    .as_ref()
                    .map_or(String::new(), |r| r.message.clone()),
            ),
            Some(Phase::Failed) => (Truth::False, "RolloutFailed", "a ring failed".to_string()),
            Some(Phase::Progressing) | Some(Phase::Paused) => match active_ring(&self.status) {
                Some((_, ring)) if ring.phase == RingPhase::Verifying => {
                    let failing = currently_failing(ring, self.plan);
                    if let Some(gate) = failing.first() {
                        (
                            Truth::False,
                            "GateFailing",
                            format!("gate {} is failing", gate.name),
                        )
                    } else if !workloads_ready {
                        (
                            Truth::Unknown,
                            "WorkloadsRollingOut",
                            "workloads are rolling out".to_string(),
                        )
                    } else if all_passing(ring, self.plan) {
                        (
                            Truth::True,
                            "GatesPassing",
                            format!("ring {} is healthy", ring.name),
                        )
                    } else {
                        (
                            Truth::Unknown,
                            "Evaluating",
                            "waiting for gate verdicts".to_string(),
                        )
                    }
                }
                _ => (
                    Truth::Unknown,
                    "NotEvaluated",
                    "gates are evaluated once a ring is written".to_string(),
                ),
            },
            Some(Phase::Pending) | None => {
                (Truth::Unknown, "NotStarted", "waiting to start".to_string())
            }
        };
        Desired {
            type_: conditions::HEALTHY,
            status,
            reason,
            message,
        }
    }

    fn ready_condition(&self, observed: &Observed) -> Desired {
        let (status, reason, message) = if !observed.drifted.is_empty() {
            (
                Truth::False,
                "Drifted",
                format!(
                    "changed outside the rollout: {}",
                    drift_list(&observed.drifted)
                ),
            )
        } else {
            match self.status.phase {
                Some(Phase::Succeeded) => (
                    Truth::True,
                    "RolloutComplete",
                    format!(
                        "every target holds revision {}",
                        self.status.revision.as_deref().unwrap_or("-")
                    ),
                ),
                Some(Phase::Progressing) | Some(Phase::Paused) => (
                    Truth::False,
                    "RolloutInProgress",
                    "not every ring is promoted yet".to_string(),
                ),
                Some(Phase::RollingBack) => (
                    Truth::False,
                    "RollingBack",
                    "restoring prior content".to_string(),
                ),
                Some(Phase::RolledBack) => (
                    Truth::False,
                    "RolledBack",
                    "the revision was rolled back".to_string(),
                ),
                Some(Phase::Failed) => (Truth::False, "RolloutFailed", "a ring failed".to_string()),
                Some(Phase::Pending) | None => {
                    (Truth::False, "NotStarted", "waiting to start".to_string())
                }
            }
        };
        Desired {
            type_: conditions::READY,
            status,
            reason,
            message,
        }
    }

    fn rolled_back_condition(&self) -> Desired {
        let (status, reason, message) = match (self.status.phase, self.status.rollback.as_ref()) {
            (Some(Phase::Failed), Some(rollback)) if rollback.unrestored > 0 => (
                Truth::False,
                "PriorsMissing",
                format!(
                    "revision {} was not fully rolled back: {} targets kept it because their prior content is unknown ({}{})",
                    rollback.revision,
                    rollback.unrestored,
                    rollback.unrestored_targets.join(", "),
                    match usize::try_from(rollback.unrestored)
                        .unwrap_or(usize::MAX)
                        .saturating_sub(rollback.unrestored_targets.len())
                    {
                        0 => String::new(),
                        more => format!(" and {more} more"),
                    }
                ),
            ),
            (Some(Phase::RolledBack), Some(rollback)) => (
                Truth::True,
                match rollback.reason.as_str() {
                    "Aborted" => "Aborted",
                    "ProgressDeadlineExceeded" => "ProgressDeadlineExceeded",
                    _ => "GateFailed",
                },
                format!(
                    "revision {} rolled back: {}",
                    rollback.revision, rollback.message
                ),
            ),
            (Some(Phase::RollingBack), _) => (
                Truth::False,
                "RollingBack",
                "rollback in progress".to_string(),
            ),
            _ => (
                Truth::False,
                "NotRolledBack",
                "the current revision was not rolled back".to_string(),
            ),
        };
        Desired {
            type_: conditions::ROLLED_BACK,
            status,
            reason,
            message,
        }
    }
}

/// Whether the workloads of `ring` are rolled out, and stamped with the
/// plan's revision when `restart` is on.
pub(crate) fn workloads_ready(plan: &Plan, world: &World, ring: &RingStatus) -> bool {
    let Some(spec) = &plan.workloads else {
        return true;
    };
    let alive = alive_namespaces(&world.namespaces);
    ring.targets
        .iter()
        .filter(|ns| alive.contains(ns.as_str()))
        .filter_map(|ns| world.workloads.get(ns))
        .flatten()
        .all(|w| {
            w.rolled_out
                && (!spec.restart || w.stamped_revision.as_deref() == Some(plan.revision.as_str()))
        })
}

/// An invalid spec: nothing is written, `Valid=False` says why, and the
/// InvalidSpec event is published once per distinct problem.
pub(crate) fn reject(inputs: &Inputs, invalid: &Invalid) -> Decision {
    let mut status = inputs.status.clone();
    let generation = inputs.rollout.generation;
    let now = stamp(inputs.now);
    status.observed_generation = Some(generation);
    if status.phase.is_none() {
        status.phase = Some(Phase::Pending);
    }
    conditions::set(
        &mut status.conditions,
        Desired {
            type_: conditions::VALID,
            status: Truth::False,
            reason: invalid.reason,
            message: invalid.message.clone(),
        },
        generation,
        &now,
    );
    conditions::set(
        &mut status.conditions,
        Desired {
            type_: conditions::PROGRESSING,
            status: Truth::False,
            reason: "InvalidSpec",
            message: "nothing is written until the spec is fixed".to_string(),
        },
        generation,
        &now,
    );
    status.health = Some("Unknown".to_string());
    status.message = Some(format!(
        "invalid spec ({}): {}",
        invalid.reason, invalid.message
    ));
    let events = if invalid_is_new(inputs, invalid) {
        vec![invalid_event(invalid)]
    } else {
        Vec::new()
    };
    Decision {
        actions: Vec::new(),
        status,
        events,
        requeue_at: None,
    }
}

/// Whether the persisted status does not already report this problem.
fn invalid_is_new(inputs: &Inputs, invalid: &Invalid) -> bool {
    conditions::get(&inputs.status.conditions, conditions::VALID).is_none_or(|c| {
        c.status != "False" || c.reason != invalid.reason || c.message != invalid.message
    })
}

fn invalid_event(invalid: &Invalid) -> EventNote {
    EventNote {
        type_: EventType::Warning,
        reason: "InvalidSpec",
        note: invalid.message.clone(),
    }
}
