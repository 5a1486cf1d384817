//! Test support: spec builders and a simulated controller and API world that
//! carries out decisions the way the real controller does (actions in order,
//! status persisted only when every action succeeded), checking the safety
//! invariants as it goes.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;

use super::model::*;
pub(crate) use super::revision::tests::test_key;
use super::{Layout, ResolvedConfig, decide, gate_requests, hash_of, revision_of};
use crate::api::{
    ConfigKind, ConfigRolloutSpec, ConfigRolloutStatus, ConfigSpec, FIELD_MANAGER, Gate, Phase,
    PrometheusGate, RingPhase, RollbackPolicy, Verdict, WebhookGate, WorkloadSpec,
};

pub(crate) const ROLLOUT_NS: &str = "platform";

pub(crate) fn ns(name: &str) -> NamespaceInfo {
    NamespaceInfo {
        name: name.to_string(),
        ..NamespaceInfo::default()
    }
}

pub(crate) fn ns_labelled(name: &str, labels: &[(&str, &str)]) -> NamespaceInfo {
    NamespaceInfo {
        name: name.to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..NamespaceInfo::default()
    }
}

/// A spec with explicitly listed namespaces per ring and no bake.
pub(crate) fn spec_with_rings(rings: &[(&str, &[&str])]) -> ConfigRolloutSpec {
    ConfigRolloutSpec {
        config: ConfigSpec {
            kind: ConfigKind::ConfigMap,
            name: "flags".into(),
            data: Some([("retries".to_string(), "3".to_string())].into()),
            source_ref: None,
            validation: Vec::new(),
            validation_ref: None,
        },
        rings: rings
            .iter()
            .map(|(name, namespaces)| crate::api::Ring {
                name: name.to_string(),
                namespaces: Some(namespaces.iter().map(|n| n.to_string()).collect()),
                namespace_selector: None,
                clusters: None,
                cluster_selector: None,
                bake: "0s".into(),
                max_concurrent: None,
            })
            .collect(),
        workloads: None,
        gates: Vec::new(),
        progress_deadline: "10m".into(),
        rollback: RollbackPolicy { automatic: true },
        paused: false,
    }
}

pub(crate) fn selector(labels: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        match_expressions: None,
    }
}

/// A webhook gate: judged without a baseline.
pub(crate) fn webhook_gate(name: &str, interval: &str, failure_limit: u32) -> Gate {
    Gate {
        name: name.into(),
        interval: interval.into(),
        failure_limit,
        prometheus: None,
        webhook: Some(WebhookGate {
            url: "http://smoke.platform/check".into(),
            timeout: "10s".into(),
        }),
    }
}

/// A Prometheus gate judged against the ring's value before it was written.
pub(crate) fn baseline_gate(name: &str, interval: &str, failure_limit: u32) -> Gate {
    Gate {
        name: name.into(),
        interval: interval.into(),
        failure_limit,
        prometheus: Some(PrometheusGate {
            address: "http://prometheus.monitoring:9090".into(),
            query: "sum(rate(errors[1m]))".into(),
            max: None,
            max_increase: Some(0.005),
            max_ratio: None,
            compare_to: crate::api::CompareTo::Before,
            baseline_window: "5m".into(),
            on_no_data: crate::api::OnNoData::Wait,
            timeout: "10s".into(),
            auth_secret_ref: None,
        }),
        webhook: None,
    }
}

pub(crate) fn workloads(restart: bool) -> WorkloadSpec {
    WorkloadSpec {
        selector: selector(&[("app", "checkout")]),
        restart,
    }
}

pub(crate) fn resolved(spec: &ConfigRolloutSpec) -> ResolvedConfig {
    ResolvedConfig {
        kind: spec.config.kind,
        data: spec
            .config
            .data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect(),
    }
}

pub(crate) fn t0() -> Timestamp {
    "2025-01-01T00:00:00Z"
        .parse()
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A target holding content `hash`, written by `manager`.
pub(crate) fn target(hash: &str, manager: &str) -> TargetState {
    TargetState {
        exists: true,
        revision: Some(hash.to_string()),
        content_hash: Some(hash.to_string()),
        rollout: None,
        last_manager: Some(manager.to_string()),
    }
}

/// The simulated controller plus API world.
#[derive(Clone, Debug)]
pub(crate) struct Sim {
    pub meta: RolloutMeta,
    pub spec: ConfigRolloutSpec,
    /// Status as persisted in the API.
    pub status: ConfigRolloutStatus,
    pub world: World,
    pub settings: Settings,
    pub now: Timestamp,
    /// What providers answer to checks, per gate (Pass when absent).
    pub verdicts: BTreeMap<String, Verdict>,
    /// Every event published.
    pub events: Vec<EventNote>,
    /// Fault injection for the next step: the action at this index fails.
    pub fail_at: Option<usize>,
    /// Safety invariant violations seen so far.
    pub violations: Vec<String>,
    /// Content of every target when the rollback point was last set.
    snapshot: BTreeMap<String, Option<String>>,
    /// Targets written since the rollback point was set.
    touched: BTreeSet<String>,
    /// The layout records, by hash.
    pub layouts: BTreeMap<String, Layout>,
}

impl Sim {
    /// A rollout in `platform` (trusted) over the listed rings; every ring
    /// namespace exists, and has a workload when the spec has workloads.
    pub fn new(spec: ConfigRolloutSpec) -> Self {
        let mut namespaces: BTreeSet<String> = BTreeSet::new();
        for ring in &spec.rings {
            namespaces.extend(ring.namespaces.iter().flatten().cloned());
        }
        let world = World {
            config: Some(Ok(resolved(&spec))),
            namespaces: namespaces.iter().map(|n| ns(n)).collect(),
            ..World::default()
        };
        let mut sim = Self {
            meta: RolloutMeta {
                namespace: ROLLOUT_NS.into(),
                name: "flags".into(),
                generation: 1,
                requests: Requests::default(),
            },
            spec,
            status: ConfigRolloutStatus::default(),
            world,
            settings: Settings {
                trusted_namespaces: [ROLLOUT_NS.to_string()].into(),
                ..Settings::new(test_key())
            },
            now: t0(),
            verdicts: BTreeMap::new(),
            events: Vec::new(),
            fail_at: None,
            violations: Vec::new(),
            snapshot: BTreeMap::new(),
            touched: BTreeSet::new(),
            layouts: BTreeMap::new(),
        };
        if sim.spec.workloads.is_some() {
            for n in &namespaces {
                sim.world.workloads.insert(
                    n.clone(),
                    vec![WorkloadState {
                        kind: WorkloadKind::Deployment,
                        name: "checkout".into(),
                        stamped_revision: None,
                        rolled_out: true,
                    }],
                );
            }
        }
        sim.reset_rollback_point();
        sim
    }

    pub fn revision(&self) -> String {
        revision_of(&resolved(&self.spec), &self.settings.revision_key)
    }

    pub fn inputs(&self) -> Inputs<'_> {
        Inputs {
            rollout: &self.meta,
            spec: &self.spec,
            status: &self.status,
            world: &self.world,
            settings: &self.settings,
            now: self.now,
        }
    }

    /// Changes the configuration: a new revision.
    pub fn set_config(&mut self, value: &str) {
        self.spec.config.data = Some([("retries".to_string(), value.to_string())].into());
        self.world.config = Some(Ok(resolved(&self.spec)));
        self.meta.generation = self.meta.generation.saturating_add(1);
    }

    pub fn advance(&mut self, secs: i64) {
        self.now = self
            .now
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs))
            .unwrap_or(self.now);
        // Workloads finish rolling out while time passes.
        for list in self.world.workloads.values_mut() {
            for w in list {
                w.rolled_out = true;
            }
        }
    }

    /// One reconcile: evaluate due gates, decide, act, persist.
    pub fn step(&mut self) -> Decision {
        let requests = gate_requests(&self.inputs());
        self.world.gate_results = requests.iter().map(|r| self.evaluate(r)).collect();
        let decision = decide(&self.inputs());
        self.world.gate_results.clear();
        let fail_at = self.fail_at.take();
        for (i, action) in decision.actions.iter().enumerate() {
            if fail_at == Some(i) {
                return decision;
            }
            self.execute(action);
        }
        // The layout is stored before the status naming it, as the controller does.
        if let Some(layout) = &decision.status.layout
            && (decision.status.layout != self.status.layout || self.world.layout_missing.is_some())
        {
            let rings = Layout::of(&decision.status);
            if hash_of(&rings.encode()) == layout.hash {
                self.layouts.insert(layout.hash.clone(), rings);
            }
        }
        // As the API server would store it: whole seconds, through JSON, and the rings'
        // targets read back from the layout records.
        let persisted = serde_json::to_value(&decision.status)
            .ok()
            .and_then(|v| serde_json::from_value::<ConfigRolloutStatus>(v).ok())
            .map(|status| self.read_layout(status));
        match persisted {
            Some(status) => {
                if status != decision.status {
                    self.violations
                        .push("status does not survive a round trip through the API".into());
                }
                let epoch = |s: &ConfigRolloutStatus| s.priors.as_ref().map_or(0, |p| p.epoch);
                if epoch(&status) != epoch(&self.status) {
                    // As the controller reads them: records of an older rollback point do not count.
                    if !matches!(
                        status.phase,
                        Some(Phase::Succeeded) | Some(Phase::RolledBack)
                    ) {
                        self.violations
                            .push(format!("rollback point moved in phase {:?}", status.phase));
                    }
                    self.world.priors.clear();
                    self.status = status;
                    self.reset_rollback_point();
                } else {
                    self.status = status;
                }
            }
            None => self.violations.push("status does not serialize".into()),
        }
        self.events.extend(decision.events.iter().cloned());
        self.check_rollback_complete();
        decision
    }

    /// Fills the rings' targets in from the layout records, as the controller reads them.
    fn read_layout(&mut self, mut status: ConfigRolloutStatus) -> ConfigRolloutStatus {
        self.world.layout_missing = match &status.layout {
            None => None,
            Some(want) => match self.layouts.get(&want.hash) {
                Some(layout) => layout.fill(&mut status).err(),
                None => Some("no layout record holds it".into()),
            },
        };
        status
    }

    /// Deletes every layout record: the rings' targets are unknown from the next step.
    pub fn lose_layout(&mut self) {
        self.layouts.clear();
        let status = self.status.clone();
        self.status = self.read_layout(status);
        for ring in &mut self.status.rings {
            ring.targets.clear();
            ring.duplicates.clear();
        }
    }

    /// Steps until nothing is left to do now, at most `max` times.
    pub fn settle(&mut self, max: usize) -> Decision {
        let mut decision = self.step();
        for _ in 0..max {
            let immediate =
                !decision.actions.is_empty() || decision.requeue_at.is_some_and(|t| t <= self.now);
            if !immediate {
                break;
            }
            decision = self.step();
        }
        decision
    }

    fn evaluate(&self, request: &GateRequest) -> GateResult {
        let (verdict, value) = match request.purpose {
            GatePurpose::Baseline => (Verdict::Pass, Some(0.01)),
            GatePurpose::Check => {
                let verdict = self
                    .verdicts
                    .get(&request.gate)
                    .copied()
                    .unwrap_or(Verdict::Pass);
                let value = match verdict {
                    Verdict::Pass => Some(0.011),
                    Verdict::Fail => Some(0.2),
                    Verdict::Inconclusive => None,
                };
                (verdict, value)
            }
        };
        GateResult {
            gate: request.gate.clone(),
            ring: request.ring,
            purpose: request.purpose,
            verdict,
            value,
            baseline: request.baseline,
            threshold: request.baseline.map(|b| b + 0.005),
            message: format!("{} {verdict:?}", request.gate),
            at: self.now,
        }
    }

    fn execute(&mut self, action: &Action) {
        let touches = match action {
            Action::RecordPriors { namespaces }
            | Action::RecordLostPriors { namespaces }
            | Action::WriteTargets { namespaces, .. }
            | Action::RestoreTargets { namespaces } => namespaces.clone(),
            Action::StampWorkloads { namespace, .. } => vec![namespace.clone()],
        };
        for n in touches {
            if let Some(why) = self.world.unreachable(&n) {
                self.violations
                    .push(format!("{action:?} reached for {n}, but {why}"));
            }
        }
        match action {
            Action::RecordPriors { namespaces } => {
                for n in namespaces {
                    if let Some(t) = self.world.targets.get(n)
                        && t.rollout.as_deref() == Some("platform/flags")
                        && t.revision.is_some()
                        && t.revision != self.status.stable_revision
                    {
                        self.violations.push(format!(
                            "{n} recorded as its own prior while holding {:?} of this rollout",
                            t.revision
                        ));
                    }
                    let prior = match self.world.targets.get(n) {
                        Some(t) if t.exists => PriorRecord {
                            existed: true,
                            content_hash: t.content_hash.clone(),
                            revision: t.revision.clone(),
                            lost: false,
                        },
                        _ => PriorRecord::default(),
                    };
                    self.world.priors.insert(n.clone(), prior);
                }
            }
            Action::RecordLostPriors { namespaces } => {
                for n in namespaces {
                    self.world.unreadable_priors.remove(n);
                    let lost = PriorRecord {
                        lost: true,
                        ..PriorRecord::default()
                    };
                    self.world.priors.insert(n.clone(), lost);
                }
            }
            Action::WriteTargets {
                revision,
                namespaces,
            } => {
                self.check_write_allowed(revision, namespaces);
                for n in namespaces {
                    if !self.world.priors.contains_key(n) {
                        self.violations
                            .push(format!("{n} written without a prior record"));
                    }
                    self.touched.insert(n.clone());
                    let mut state = target(revision, FIELD_MANAGER);
                    state.rollout = Some(format!("{ROLLOUT_NS}/flags"));
                    self.world.targets.insert(n.clone(), state);
                }
            }
            Action::RestoreTargets { namespaces } => {
                if self.status.phase != Some(Phase::RollingBack) {
                    self.violations
                        .push("restore before RollingBack was persisted".into());
                }
                for n in namespaces {
                    match self.world.priors.get(n).cloned() {
                        Some(prior) if prior.lost => self
                            .violations
                            .push(format!("restore of {n}, whose prior is lost")),
                        Some(prior) if prior.existed => {
                            let state = TargetState {
                                exists: true,
                                revision: prior.revision,
                                content_hash: prior.content_hash,
                                rollout: None,
                                last_manager: Some(FIELD_MANAGER.into()),
                            };
                            self.world.targets.insert(n.clone(), state);
                        }
                        Some(_) => {
                            self.world.targets.remove(n);
                        }
                        None => self
                            .violations
                            .push(format!("restore of {n} without a prior record")),
                    }
                }
            }
            Action::StampWorkloads {
                namespace,
                revision,
                workloads,
            } => {
                for w in self
                    .world
                    .workloads
                    .get_mut(namespace)
                    .into_iter()
                    .flatten()
                {
                    if workloads
                        .iter()
                        .any(|(k, name)| *k == w.kind && *name == w.name)
                        && w.stamped_revision.as_deref() != Some(revision.as_str())
                    {
                        w.stamped_revision = Some(revision.clone());
                        w.rolled_out = false;
                    }
                }
            }
        }
    }

    /// Takes the current content of every target as the rollback point (call
    /// after changing targets by hand in a test).
    pub fn reset_rollback_point(&mut self) {
        self.touched.clear();
        self.snapshot = self
            .world
            .namespaces
            .iter()
            .map(|n| {
                let content = self
                    .world
                    .targets
                    .get(&n.name)
                    .and_then(|t| t.content_hash.clone());
                (n.name.clone(), content)
            })
            .collect();
    }

    /// Invariant 1: a write of revision R to a target of ring k happens only
    /// while the persisted status has R with every earlier ring promoted and
    /// ring k Applying.
    fn check_write_allowed(&mut self, revision: &str, namespaces: &[String]) {
        let status = &self.status;
        if status.revision.as_deref() != Some(revision) || status.phase != Some(Phase::Progressing)
        {
            self.violations.push(format!(
                "write of {revision} while persisted status is {:?} {:?}",
                status.revision, status.phase
            ));
            return;
        }
        for n in namespaces {
            let Some(k) = status.rings.iter().position(|r| r.targets.contains(n)) else {
                self.violations
                    .push(format!("write to {n}, which no persisted ring holds"));
                continue;
            };
            let earlier_promoted = status
                .rings
                .iter()
                .take(k)
                .all(|r| r.phase == RingPhase::Promoted);
            let applying = status
                .rings
                .get(k)
                .is_some_and(|r| r.phase == RingPhase::Applying);
            if !earlier_promoted || !applying {
                self.violations.push(format!(
                    "write to {n} of ring {k} before earlier rings were promoted"
                ));
            }
        }
    }

    /// Invariant 2: once RolledBack is persisted, every target written since
    /// the rollback point holds exactly its content from then (or is absent).
    fn check_rollback_complete(&mut self) {
        if self.status.phase != Some(Phase::RolledBack) {
            return;
        }
        for n in &self.touched {
            let now = self
                .world
                .targets
                .get(n)
                .filter(|t| t.exists)
                .and_then(|t| t.content_hash.clone());
            let then = self.snapshot.get(n).cloned().flatten();
            if now != then {
                self.violations.push(format!(
                    "after rollback {n} holds {now:?}, not its prior {then:?}"
                ));
            }
        }
    }
}
