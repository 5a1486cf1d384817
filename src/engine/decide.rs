//! `decide`: one step of the rollout state machine, its entry point and phase
//! transitions (see the module docs in `engine/mod.rs` for the states). The
//! status fields derived from where the transitions leave it are in `status`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::clock::{after, elapsed, stamp};
use super::gates::{
    active_ring, all_passing, apply_results, currently_failing, failed_gates, initial_gates,
    missing_baselines, next_due,
};
use super::invalid::Invalid;
use super::message::{self, LIST_LIMIT, bounded_list};
use super::model::{Action, Decision, EventNote, EventType, GatePurpose, Inputs, Request};
use super::rings::{
    ResolvedRing, alive_namespaces, check_clusters_permitted, check_permitted, check_unclaimed,
    resolve,
};
use super::rollback::{
    priors_lost_unnamed, priors_missing, priors_unknown, restamp_actions, restore_order,
    seen_holding_prior,
};
use super::status::{Outcome, reject, workloads_ready};
use super::validate::{Plan, plan};
use crate::api::{
    ConfigRolloutStatus, GateStatus, HandledRequests, HistoryEntry, Phase, PriorsStatus, RingPhase,
    RingStatus, RollbackStatus,
};

/// History entries kept in status, newest first.
const HISTORY_LIMIT: usize = 10;
/// How soon a step that waits for an unreachable cluster is decided again, should the
/// cluster's return not trigger it.
const UNREACHABLE_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// Decides what to do next from the persisted status and the observed world.
/// Pure: the same inputs always give the same decision, and a rollout whose
/// world already matches its status gets no actions and an unchanged status.
///
/// A spec that turns invalid while a revision is in flight does not strand it:
/// the revision is *held* ([`Plan::held`]): nothing more is written, the
/// written rings stay gated by the last valid gates, and an abort, a failing
/// gate or a rollback under way still restores every target.
pub fn decide(inputs: &Inputs) -> Decision {
    let invalid = match plan(inputs) {
        Ok(plan) => {
            let mut step = Step::new(inputs, &plan);
            match step.run() {
                Ok(()) => return step.finish(),
                Err(invalid) => invalid,
            }
        }
        Err(invalid) => invalid,
    };
    let Some(held) = Plan::held(inputs) else {
        return reject(inputs, &invalid);
    };
    let mut step = Step::new(inputs, &held);
    step.invalid = Some(invalid);
    step.run_held();
    step.finish()
}

/// One decision being built: the new status, the actions and events.
struct Step<'a> {
    inputs: &'a Inputs<'a>,
    plan: &'a Plan,
    status: ConfigRolloutStatus,
    actions: Vec<Action>,
    events: Vec<EventNote>,
    requeue_at: Option<Timestamp>,
    now: Time,
    /// Why the spec is invalid, while the revision in flight is held.
    invalid: Option<Invalid>,
    /// `namespace/name` of the rollout, as targets' rollout annotation carries it.
    key: String,
    /// Prior records this decision asks the controller to add.
    recording: usize,
    /// The rollback point moved on in this decision.
    rollback_point_moved: bool,
    /// The rings were resolved afresh in this decision (a lost layout no longer matters).
    resolved: bool,
    /// Why the step waits for a member cluster: the first target it cannot reach.
    waiting: Option<String>,
}

impl<'a> Step<'a> {
    fn new(inputs: &'a Inputs<'a>, plan: &'a Plan) -> Self {
        let mut status = inputs.status.clone();
        status.observed_generation = Some(inputs.rollout.generation);
        Self {
            inputs,
            plan,
            status,
            actions: Vec::new(),
            events: Vec::new(),
            requeue_at: None,
            now: stamp(inputs.now),
            invalid: None,
            key: format!("{}/{}", inputs.rollout.namespace, inputs.rollout.name),
            recording: 0,
            rollback_point_moved: false,
            resolved: false,
            waiting: None,
        }
    }

    /// Why target `key` cannot be written or observed now (its cluster does not answer),
    /// noted as what the step waits for.
    fn unreachable(&mut self, key: &str) -> bool {
        match self.inputs.world.unreachable(key) {
            Some(why) => {
                self.waiting.get_or_insert(why);
                true
            }
            None => false,
        }
    }

    /// Whether `key` exists to be written or restored: a live namespace, or one in a
    /// cluster that cannot be reached now (never taken for gone).
    fn live(&self, alive: &std::collections::BTreeSet<&str>, key: &str) -> bool {
        alive.contains(key) || self.inputs.world.unreachable(key).is_some()
    }

    /// Why the rings' targets are unknown: their layout records could not be read.
    fn layout_missing(&self) -> Option<&'a str> {
        (!self.resolved)
            .then_some(self.inputs.world.layout_missing.as_deref())
            .flatten()
    }

    /// Whether `ns` holds this revision as written by this rollout: the content,
    /// and the annotations that claim it (a target that merely has identical
    /// content is taken over like any other).
    fn holds_revision(&self, ns: &str) -> bool {
        self.inputs
            .world
            .targets
            .get(ns)
            .is_some_and(|t| t.holds_revision(self.revision(), &self.key))
    }

    fn new_rollback_point(&mut self) {
        let epoch = self.status.priors.as_ref().map_or(0, |p| p.epoch);
        self.status.priors = Some(PriorsStatus {
            epoch: epoch.saturating_add(1),
            recorded: 0,
        });
        self.recording = 0;
        self.rollback_point_moved = true;
    }

    fn phase(&self) -> Option<Phase> {
        self.status.phase
    }

    fn revision(&self) -> &str {
        &self.plan.revision
    }

    fn event(&mut self, type_: EventType, reason: &'static str, note: String) {
        self.events.push(EventNote {
            type_,
            reason,
            note,
        });
    }

    fn requeue(&mut self, at: Option<Timestamp>) {
        if let Some(at) = at {
            self.requeue_at = Some(self.requeue_at.map_or(at, |r| r.min(at)));
        }
    }

    /// A transition was recorded: decide again right after it is persisted.
    fn requeue_now(&mut self) {
        self.requeue(Some(self.inputs.now));
    }

    /// The id of a request not acted on yet.
    fn pending_request(&self, request: Request) -> Option<String> {
        let done = self
            .status
            .handled_requests
            .as_ref()
            .and_then(|h| request.handled(h));
        request
            .asked(&self.inputs.rollout.requests)
            .filter(|id| Some(*id) != done)
            .map(str::to_string)
    }

    fn mark_handled(&mut self, request: Request, id: String) {
        let handled = self
            .status
            .handled_requests
            .get_or_insert_with(HandledRequests::default);
        match request {
            Request::Promote => handled.promote = Some(id),
            Request::Abort => handled.abort = Some(id),
            Request::Retry => handled.retry = Some(id),
        }
    }

    /// Records requests that mean nothing in `phase` as handled, so a stale
    /// annotation never fires later by surprise. Requests that only wait (a
    /// retry during a rollback, anything while paused) stay pending.
    fn drop_meaningless_requests(&mut self, phase: Option<Phase>) {
        for request in Request::ALL {
            if request.means_nothing_in(phase)
                && let Some(id) = self.pending_request(request)
            {
                self.mark_handled(request, id);
            }
        }
    }

    fn run(&mut self) -> Result<(), Invalid> {
        let phase = self.phase();
        if phase == Some(Phase::RollingBack) {
            // A rollback is finished first, whatever else changed: pausing or a
            // new revision must not leave targets half restored.
            self.drop_meaningless_requests(phase);
            self.roll_back();
            return Ok(());
        }
        if matches!(phase, Some(Phase::Progressing) | Some(Phase::Paused)) {
            let recorded: Vec<ResolvedRing> = self
                .status
                .rings
                .iter()
                .map(ResolvedRing::from_status)
                .collect();
            check_permitted(
                &recorded,
                &self.inputs.rollout.namespace,
                self.inputs.world,
                self.inputs.settings,
            )?;
            check_unclaimed(&recorded, &self.inputs.world.claimed_by_others)?;
        }
        // Abort is the one request a pause does not hold: restoring is the safe direction.
        if self.abort_if_requested(phase) {
            return Ok(());
        }
        if self.inputs.spec.paused {
            if matches!(phase, Some(Phase::Progressing) | Some(Phase::Paused))
                && phase != Some(Phase::Paused)
            {
                self.status.phase = Some(Phase::Paused);
                self.status.paused_at = Some(self.now.clone());
                let note = format!("revision {} paused", self.revision());
                self.event(EventType::Normal, "RolloutPaused", note);
            }
            return Ok(());
        }
        if phase == Some(Phase::Paused) {
            self.resume();
            return Ok(());
        }
        self.drop_meaningless_requests(phase);
        if self.status.revision.as_deref() != Some(self.revision()) {
            return self.start();
        }
        if let Some(id) = self.pending_request(Request::Retry)
            && matches!(phase, Some(Phase::RolledBack) | Some(Phase::Failed))
        {
            self.mark_handled(Request::Retry, id);
            // A retry accepts that priors it cannot know are lost, so it can roll forward.
            let unknown = priors_unknown(
                self.inputs.world,
                &self.key,
                self.status.stable_revision.as_deref(),
            );
            if !unknown.is_empty() {
                self.recording = self.recording.saturating_add(unknown.len());
                self.actions.push(Action::RecordLostPriors {
                    namespaces: unknown,
                });
            }
            return self.start();
        }
        let layout_changed = !self.status.rings.iter().map(|r| &r.name).eq(self
            .plan
            .rings
            .iter()
            .map(|r| &r.name));
        if layout_changed && matches!(phase, Some(Phase::Progressing) | Some(Phase::Succeeded)) {
            // Rings were added, removed or renamed: the recorded layout no longer
            // says where the revision belongs, so it restarts from the first ring.
            return self.start();
        }
        // Without its targets a ring can be neither written nor judged; an abort (which
        // restores from the prior records alone) or a new revision still proceeds.
        if phase == Some(Phase::Progressing) && self.layout_missing().is_none() {
            self.progress();
        }
        Ok(())
    }

    /// Begins the rollback a pending abort asks for, where one means something.
    fn abort_if_requested(&mut self, phase: Option<Phase>) -> bool {
        let Some(id) = self.pending_request(Request::Abort) else {
            return false;
        };
        if !matches!(
            phase,
            Some(Phase::Progressing) | Some(Phase::Paused) | Some(Phase::Failed)
        ) {
            return false;
        }
        self.mark_handled(Request::Abort, id.clone());
        let gates = active_ring(&self.status)
            .map(|(_, r)| r.gates.clone())
            .unwrap_or_default();
        self.begin_rollback("Aborted", format!("abort requested ({id})"), gates);
        true
    }

    /// A revision in flight under an invalid spec: restores go on, an abort or a
    /// failing gate rolls back, and nothing else is written.
    fn run_held(&mut self) {
        let phase = self.phase();
        self.drop_meaningless_requests(phase);
        if phase == Some(Phase::RollingBack) {
            self.roll_back();
            return;
        }
        if self.abort_if_requested(phase) {
            return;
        }
        if phase != Some(Phase::Progressing) || self.layout_missing().is_some() {
            return;
        }
        match active_ring(&self.status).map(|(i, r)| (i, r.phase)) {
            Some((index, RingPhase::Verifying)) => self.verify(index),
            Some((index, RingPhase::Applying)) => self.apply(index),
            _ => {}
        }
    }

    /// Starts (or restarts) the spec's revision from the first ring. Priors are
    /// kept: the rollback point stays the last stable content.
    fn start(&mut self) -> Result<(), Invalid> {
        let world = self.inputs.world;
        check_clusters_permitted(
            self.inputs.spec,
            &self.inputs.rollout.namespace,
            &world.clusters,
            self.inputs.settings,
        )?;
        let layout = resolve(self.inputs.spec, world)?;
        check_permitted(
            &layout,
            &self.inputs.rollout.namespace,
            world,
            self.inputs.settings,
        )?;
        check_unclaimed(&layout, &world.claimed_by_others)?;
        let superseded = match (self.phase(), self.status.revision.as_deref()) {
            (Some(Phase::Progressing), Some(old)) if old != self.revision() => {
                Some(old.to_string())
            }
            _ => None,
        };
        self.status.revision = Some(self.revision().to_string());
        self.status.phase = Some(Phase::Progressing);
        self.status.paused_at = None;
        self.resolved = true;
        self.status.rings = layout
            .into_iter()
            .map(|r| RingStatus {
                name: r.name,
                targets: r.targets,
                duplicates: r.duplicates,
                ..RingStatus::default()
            })
            .collect();
        if let Some(old) = superseded {
            let note = format!("revision {} supersedes {old}", self.revision());
            self.event(EventType::Normal, "RolloutSuperseded", note);
        }
        self.start_ring(0);
        self.requeue_now();
        Ok(())
    }

    fn start_ring(&mut self, index: usize) {
        let gates = initial_gates(self.plan);
        let total = self.status.rings.len();
        let Some(ring) = self.status.rings.get_mut(index) else {
            return;
        };
        ring.phase = RingPhase::Applying;
        ring.started_at = Some(self.now.clone());
        ring.healthy_since = None;
        ring.promoted_at = None;
        ring.paused_seconds = 0;
        ring.gates = gates;
        let name = ring.name.clone();
        self.status.current_ring = Some(name.clone());
        let note = format!(
            "ring {name} ({}/{total}) started for revision {}",
            index.saturating_add(1),
            self.revision()
        );
        self.event(EventType::Normal, "RingStarted", note);
    }

    /// Back from a pause: the bake and the progress deadline do not count the
    /// time spent paused, so both move on by it.
    fn resume(&mut self) {
        let paused_for = self
            .status
            .paused_at
            .take()
            .map_or(std::time::Duration::ZERO, |t| elapsed(t.0, self.inputs.now));
        if let Some(index) = active_ring(&self.status).map(|(i, _)| i)
            && let Some(ring) = self.status.rings.get_mut(index)
        {
            ring.healthy_since = ring
                .healthy_since
                .as_ref()
                .map(|t| Time(after(t.0, paused_for).unwrap_or(t.0)));
            ring.paused_seconds = ring.paused_seconds.saturating_add(paused_for.as_secs());
        }
        self.status.phase = Some(Phase::Progressing);
        let note = format!("revision {} resumed", self.revision());
        self.event(EventType::Normal, "RolloutResumed", note);
        self.requeue_now();
    }

    fn progress(&mut self) {
        let Some(index) = self
            .status
            .rings
            .iter()
            .position(|r| r.phase != RingPhase::Promoted)
        else {
            self.succeed();
            return;
        };
        match self.status.rings.get(index).map(|r| r.phase) {
            Some(RingPhase::Applying) => self.apply(index),
            Some(RingPhase::Verifying) => self.verify(index),
            // Only reachable from a hand-edited status: start the ring over.
            _ => {
                self.start_ring(index);
                self.requeue_now();
            }
        }
    }

    /// Applying: baselines first (persisted before anything is written), then
    /// priors, then at most `maxConcurrent` targets per decision. A ring whose
    /// targets are not all written within `progressDeadline` fails. Nothing is
    /// written while a prior this revision needs is unknown, or while held.
    fn apply(&mut self, index: usize) {
        let world = self.inputs.world;
        let held = self.invalid.is_some();
        let Some(ring) = self.status.rings.get_mut(index) else {
            return;
        };
        if !held {
            let baselines_changed = apply_results(
                ring,
                index,
                GatePurpose::Baseline,
                self.plan,
                &world.gate_results,
            );
            if !missing_baselines(ring, self.plan).is_empty() {
                let due = next_due(ring, self.plan, GatePurpose::Baseline, self.inputs.now);
                self.requeue(due);
                return;
            }
            if baselines_changed {
                // The ring starts for real once its baselines are in: a slow metrics
                // source must not eat into the progress deadline.
                ring.started_at = Some(self.now.clone());
                self.requeue_now();
                return;
            }
        }
        let ring = ring.clone();
        let alive = alive_namespaces(&world.namespaces);
        let live_targets: Vec<&String> = ring
            .targets
            .iter()
            .filter(|ns| self.live(&alive, ns))
            .collect();
        // A target whose cluster cannot be reached is never taken as written: the ring
        // waits for it, and its write is retried once the cluster answers.
        let mut pending: Vec<String> = Vec::new();
        for ns in &live_targets {
            if self.unreachable(ns) || !self.holds_revision(ns) {
                pending.push(ns.to_string());
            }
        }
        if pending.is_empty() {
            if let Some(ring) = self.status.rings.get_mut(index) {
                ring.phase = RingPhase::Verifying;
            }
            // Without gates the ring is judged from this same observation, so one with
            // nothing to wait for is promoted in this step (the next ring's writes still
            // wait for that to be persisted); gates are first evaluated in the next step.
            if self.plan.gates.is_empty() {
                self.verify(index);
            } else {
                self.requeue_now();
            }
            return;
        }
        if let Some(deadline) = self.deadline(&ring) {
            if deadline <= self.inputs.now {
                let detail = format!(
                    "{} of {} targets not written within {}",
                    pending.len(),
                    live_targets.len(),
                    message::format_duration(self.plan.progress_deadline)
                );
                let gates = ring.gates.clone();
                self.fail_ring(index, "ProgressDeadlineExceeded", detail, gates);
                return;
            }
            self.requeue(Some(deadline));
        }
        if held
            || !priors_unknown(world, &self.key, self.status.stable_revision.as_deref()).is_empty()
        {
            return;
        }
        let batch = self
            .plan
            .rings
            .get(index)
            .map_or(1, |r| r.max_concurrent.batch(ring.targets.len()));
        let batch: Vec<String> = pending
            .into_iter()
            .filter(|ns| world.unreachable(ns).is_none())
            .take(batch)
            .collect();
        if batch.is_empty() {
            // Only targets of unreachable clusters are left: a member coming back triggers
            // the next step; the requeue is a backstop.
            self.requeue(after(self.inputs.now, UNREACHABLE_RECHECK));
            return;
        }
        let unrecorded: Vec<String> = batch
            .iter()
            .filter(|ns| !world.priors.contains_key(ns.as_str()))
            .cloned()
            .collect();
        if !unrecorded.is_empty() {
            self.recording = self.recording.saturating_add(unrecorded.len());
            self.actions.push(Action::RecordPriors {
                namespaces: unrecorded,
            });
        }
        self.actions.push(Action::WriteTargets {
            revision: self.plan.revision.clone(),
            namespaces: batch,
        });
        self.requeue_now();
    }

    /// When `ring` fails for not being written and healthy in time: its start
    /// plus `progressDeadline`, plus the time it spent paused.
    fn deadline(&self, ring: &RingStatus) -> Option<Timestamp> {
        let extended = self
            .plan
            .progress_deadline
            .checked_add(std::time::Duration::from_secs(ring.paused_seconds))?;
        after(ring.started_at.as_ref()?.0, extended)
    }

    fn verify(&mut self, index: usize) {
        let world = self.inputs.world;
        let now = self.inputs.now;
        let Some(ring) = self.status.rings.get_mut(index) else {
            return;
        };
        apply_results(
            ring,
            index,
            GatePurpose::Check,
            self.plan,
            &world.gate_results,
        );
        let failed: Vec<GateStatus> = failed_gates(ring, self.plan).into_iter().cloned().collect();
        if !failed.is_empty() {
            let detail = failed
                .iter()
                .map(|g| {
                    format!(
                        "gate {}: {}",
                        g.name,
                        g.message.as_deref().unwrap_or("failed")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            let gates = ring.gates.clone();
            self.fail_ring(index, "GateFailed", detail, gates);
            return;
        }
        let unreachable = ring.targets.iter().find_map(|t| world.unreachable(t));
        if let Some(why) = &unreachable {
            // A partition is never healthy: what the gates would say is unknown.
            for gate in &mut ring.gates {
                gate.verdict = Some(crate::api::Verdict::Inconclusive);
                gate.message = Some(why.clone());
            }
            if ring.unreachable_since.is_none() {
                ring.unreachable_since = Some(self.now.clone());
            }
            ring.healthy_since = None;
        } else {
            ring.unreachable_since = None;
        }
        let ring_snapshot = ring.clone();
        if let Some(why) = unreachable {
            self.waiting.get_or_insert(why.clone());
            let since = ring_snapshot
                .unreachable_since
                .as_ref()
                .map_or(now, |t| t.0);
            let deadline = after(since, self.plan.progress_deadline);
            if deadline.is_some_and(|d| d <= now) {
                let detail = format!(
                    "{why}, for {}",
                    message::format_duration(self.plan.progress_deadline)
                );
                self.fail_ring(
                    index,
                    "ProgressDeadlineExceeded",
                    detail,
                    ring_snapshot.gates,
                );
                return;
            }
            self.refuse_promote(&why);
            self.requeue(deadline);
            self.requeue(after(now, UNREACHABLE_RECHECK));
            return;
        }
        let ready = workloads_ready(self.plan, world, &ring_snapshot);
        let deadline = self.deadline(&ring_snapshot);
        if !ready && deadline.is_some_and(|d| d <= now) {
            let detail = format!(
                "workloads of ring {} not rolled out within {}",
                ring_snapshot.name,
                message::format_duration(self.plan.progress_deadline)
            );
            self.fail_ring(
                index,
                "ProgressDeadlineExceeded",
                detail,
                ring_snapshot.gates,
            );
            return;
        }
        let held = self.invalid.is_some();
        if let Some(spec) = &self.plan.workloads
            && spec.restart
            && !held
        {
            let alive = alive_namespaces(&world.namespaces);
            for ns in ring_snapshot
                .targets
                .iter()
                .filter(|ns| alive.contains(ns.as_str()))
            {
                let stale: Vec<_> = world
                    .workloads
                    .get(ns)
                    .into_iter()
                    .flatten()
                    .filter(|w| w.stamped_revision.as_deref() != Some(self.plan.revision.as_str()))
                    .map(|w| (w.kind, w.name.clone()))
                    .collect();
                if !stale.is_empty() {
                    self.actions.push(Action::StampWorkloads {
                        namespace: ns.clone(),
                        revision: self.plan.revision.clone(),
                        workloads: stale,
                    });
                }
            }
        }
        let healthy = ready && all_passing(&ring_snapshot, self.plan);
        let now_stamp = self.now.clone();
        let Some(ring) = self.status.rings.get_mut(index) else {
            return;
        };
        if !healthy {
            ring.healthy_since = None;
        } else if ring.healthy_since.is_none() {
            ring.healthy_since = Some(now_stamp);
        }
        let healthy_since = ring.healthy_since.clone();
        if held {
            // Promotion would lead to writes the invalid spec cannot say are wanted.
            self.refuse_promote("the spec is invalid");
            let gate_due = self
                .status
                .rings
                .get(index)
                .and_then(|r| next_due(r, self.plan, GatePurpose::Check, now));
            self.requeue(gate_due);
            if !ready {
                self.requeue(deadline);
            }
            return;
        }
        if let Some(id) = self.pending_request(Request::Promote) {
            self.mark_handled(Request::Promote, id.clone());
            let failing: Vec<String> = self
                .status
                .rings
                .get(index)
                .map(|r| {
                    currently_failing(r, self.plan)
                        .into_iter()
                        .map(|g| g.name.clone())
                        .collect()
                })
                .unwrap_or_default();
            if failing.is_empty() {
                self.promote(index, Some(id));
                return;
            }
            let note = format!(
                "promote request {id} refused: gate {} is failing in ring {}",
                failing.join(", "),
                ring_snapshot.name
            );
            self.event(EventType::Warning, "PromoteRefused", note);
        }
        let bake = self
            .plan
            .rings
            .get(index)
            .map_or(std::time::Duration::ZERO, |r| r.bake);
        let bake_end = healthy_since.as_ref().and_then(|t| after(t.0, bake));
        if healthy && bake_end.is_some_and(|end| end <= now) {
            self.promote(index, None);
            return;
        }
        if !self.actions.is_empty() {
            self.requeue_now();
        }
        let gate_due = self
            .status
            .rings
            .get(index)
            .and_then(|r| next_due(r, self.plan, GatePurpose::Check, now));
        self.requeue(gate_due);
        if healthy {
            self.requeue(bake_end);
        }
        if !ready {
            self.requeue(deadline);
        }
    }

    /// Answers a pending promote request with a refusal, saying why.
    fn refuse_promote(&mut self, why: &str) {
        if let Some(id) = self.pending_request(Request::Promote) {
            self.mark_handled(Request::Promote, id.clone());
            let note = format!("promote request {id} refused: {why}");
            self.event(EventType::Warning, "PromoteRefused", note);
        }
    }

    fn promote(&mut self, index: usize, request: Option<String>) {
        let total = self.status.rings.len();
        let now = self.now.clone();
        let Some(ring) = self.status.rings.get_mut(index) else {
            return;
        };
        ring.phase = RingPhase::Promoted;
        ring.promoted_at = Some(now);
        let name = ring.name.clone();
        let how = request.map_or(String::new(), |id| format!(" on request {id}"));
        let note = format!(
            "ring {name} ({}/{total}) promoted{how}",
            index.saturating_add(1)
        );
        self.event(EventType::Normal, "RingPromoted", note);
        let next = index.saturating_add(1);
        if next < total {
            self.start_ring(next);
        } else {
            self.succeed();
        }
        self.requeue_now();
    }

    fn succeed(&mut self) {
        let revision = self.revision().to_string();
        self.status.phase = Some(Phase::Succeeded);
        self.status.stable_revision = Some(revision.clone());
        let targets: usize = self.status.rings.iter().map(|r| r.targets.len()).sum();
        self.push_history(Phase::Succeeded, format!("rolled out to {targets} targets"));
        let note = format!("revision {revision} rolled out to every ring");
        self.event(EventType::Normal, "RolloutSucceeded", note);
        self.new_rollback_point();
        self.requeue_now();
    }

    fn fail_ring(
        &mut self,
        index: usize,
        reason: &'static str,
        detail: String,
        gates: Vec<GateStatus>,
    ) {
        self.actions.clear();
        let name = match self.status.rings.get_mut(index) {
            Some(ring) => {
                ring.phase = RingPhase::Failed;
                ring.healthy_since = None;
                ring.name.clone()
            }
            None => String::new(),
        };
        let message = format!("ring {name}: {detail}");
        self.event(EventType::Warning, reason, message.clone());
        if self.plan.automatic_rollback {
            self.begin_rollback(reason, message, gates);
        } else {
            self.status.phase = Some(Phase::Failed);
            self.push_history(Phase::Failed, message.clone());
            self.event(EventType::Warning, "RolloutFailed", message);
        }
    }

    /// Enters RollingBack; restoring starts with the next decision, once this
    /// transition is persisted.
    fn begin_rollback(&mut self, reason: &'static str, message: String, gates: Vec<GateStatus>) {
        let revision = self
            .status
            .revision
            .clone()
            .unwrap_or_else(|| self.revision().to_string());
        self.status.phase = Some(Phase::RollingBack);
        self.status.paused_at = None;
        self.status.rollback = Some(RollbackStatus {
            revision: revision.clone(),
            reason: reason.to_string(),
            message: message.clone(),
            started_at: Some(self.now.clone()),
            completed_at: None,
            gates,
            unrestored: 0,
            unrestored_targets: Vec::new(),
        });
        self.event(
            EventType::Warning,
            "RollbackStarted",
            format!("rolling back revision {revision}: {message}"),
        );
        self.requeue_now();
    }

    /// RollingBack: restore every target that has a prior until each is
    /// observed holding it, re-stamp restarted workloads, then RolledBack.
    /// Targets whose prior is unknown are never written; when any is left the
    /// rollback ends as Failed, naming them, never as RolledBack.
    fn roll_back(&mut self) {
        let world = self.inputs.world;
        let order = restore_order(&self.status, &world.priors);
        let alive = alive_namespaces(&world.namespaces);
        let live: Vec<String> = order
            .into_iter()
            .filter(|ns| self.live(&alive, ns))
            .collect();
        let unrestored: Vec<String> = live
            .iter()
            .filter(|ns| {
                !world.unreadable_priors.contains_key(ns.as_str())
                    && world
                        .priors
                        .get(*ns)
                        .is_some_and(|p| !p.lost && !seen_holding_prior(world, ns, p))
            })
            .cloned()
            .collect();
        // A target of a cluster that cannot be reached is restored once it answers; until
        // then the rollback is not complete.
        let mut waiting = false;
        let mut pending = Vec::with_capacity(unrestored.len());
        for ns in unrestored {
            if self.unreachable(&ns) {
                waiting = true;
            } else {
                pending.push(ns);
            }
        }
        let restart = self.plan.workloads.as_ref().is_some_and(|w| w.restart);
        let mut stamps = if restart {
            restamp_actions(
                &live,
                &world.priors,
                &world.workloads,
                self.status.stable_revision.as_deref(),
            )
        } else {
            Vec::new()
        };
        stamps.retain(|stamp| match stamp {
            Action::StampWorkloads { namespace, .. } if self.unreachable(namespace) => {
                waiting = true;
                false
            }
            _ => true,
        });
        if !pending.is_empty() || !stamps.is_empty() {
            if !pending.is_empty() {
                self.actions.push(Action::RestoreTargets {
                    namespaces: pending,
                });
            }
            self.actions.extend(stamps);
            self.requeue_now();
            return;
        }
        if waiting {
            self.requeue(after(self.inputs.now, UNREACHABLE_RECHECK));
            return;
        }
        let missing = priors_missing(world, &self.key, self.status.stable_revision.as_deref());
        let unnamed = priors_lost_unnamed(self.inputs.status, world, missing.len());
        let now = self.now.clone();
        for ring in &mut self.status.rings {
            if matches!(
                ring.phase,
                RingPhase::Applying | RingPhase::Verifying | RingPhase::Promoted
            ) {
                ring.phase = RingPhase::RolledBack;
                ring.healthy_since = None;
            }
        }
        let (revision, why) = match self.status.rollback.as_mut() {
            Some(rollback) => {
                rollback.completed_at = Some(now);
                (rollback.revision.clone(), rollback.message.clone())
            }
            None => (
                self.status.revision.clone().unwrap_or_default(),
                "rolled back".to_string(),
            ),
        };
        if missing.is_empty() && unnamed == 0 {
            self.status.phase = Some(Phase::RolledBack);
            self.push_history(Phase::RolledBack, why.clone());
            let note = format!("revision {revision} rolled back: {why}");
            self.event(EventType::Warning, "RollbackCompleted", note);
            self.new_rollback_point();
            self.requeue_now();
            return;
        }
        let unrestored = u32::try_from(missing.len())
            .unwrap_or(u32::MAX)
            .saturating_add(unnamed);
        let names: Vec<String> = missing.iter().take(LIST_LIMIT).cloned().collect();
        let detail = if missing.is_empty() {
            format!("{unnamed} prior records were lost for targets that cannot be named")
        } else {
            format!(
                "{unrestored} targets not restored, their prior content is unknown: {}",
                bounded_list(&missing)
            )
        };
        if let Some(rollback) = self.status.rollback.as_mut() {
            rollback.unrestored = unrestored;
            rollback.unrestored_targets = names;
        }
        // The deficit is reported now; a later abort judges only what it can see.
        if let Some(priors) = self.status.priors.as_mut() {
            let found = world.priors.len() + world.unreadable_priors.len();
            priors.recorded = u32::try_from(found).unwrap_or(u32::MAX);
        }
        self.status.phase = Some(Phase::Failed);
        self.push_history(Phase::Failed, format!("rollback incomplete: {detail}"));
        let note = format!("revision {revision} rollback incomplete ({why}): {detail}");
        self.event(EventType::Warning, "RollbackIncomplete", note);
        self.requeue_now();
    }

    fn push_history(&mut self, outcome: Phase, message: String) {
        let Some(revision) = self.status.revision.clone() else {
            return;
        };
        let started_at = self.status.rings.first().and_then(|r| r.started_at.clone());
        self.status.history.insert(
            0,
            HistoryEntry {
                revision,
                outcome,
                started_at,
                finished_at: Some(self.now.clone()),
                message: Some(message),
            },
        );
        self.status.history.truncate(HISTORY_LIMIT);
    }

    /// The decision: the transitions' actions, and their status with its derived fields.
    fn finish(self) -> Decision {
        let layout_missing = self.layout_missing();
        let (status, events) = Outcome {
            inputs: self.inputs,
            plan: self.plan,
            status: self.status,
            events: self.events,
            now: self.now,
            key: &self.key,
            invalid: self.invalid.as_ref(),
            layout_missing,
            recording: self.recording,
            rollback_point_moved: self.rollback_point_moved,
            waiting: self.waiting.as_deref(),
        }
        .derive();
        Decision {
            actions: self.actions,
            status,
            events,
            requeue_at: self.requeue_at,
        }
    }
}
