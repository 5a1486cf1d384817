//! Prometheus metrics (text exposition format). Every label has a bounded set of values:
//! gate evaluations are labelled by provider type (`prometheus`, `webhook`) rather than by
//! the user-chosen gate name, and errors by category, never by message. Per-rollout series
//! (`ringfence_rollout_*`) carry only the rollout's namespace and name, its phase, its current
//! ring and a rollback reason: one series per rollout and family, never one per target.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;

use crate::api::{ConfigRollout, Phase, Verdict, parse_duration};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GateLabels {
    gate: &'static str,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutPhaseLabels {
    namespace: String,
    name: String,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutRingLabels {
    namespace: String,
    name: String,
    ring: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutReasonLabels {
    namespace: String,
    name: String,
    reason: &'static str,
}

/// Gate provider types, the `gate` label's only values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateProvider {
    Prometheus,
    Webhook,
    /// A request for a gate the spec no longer has.
    Unknown,
}

/// The controller's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    promotions: Counter,
    rollbacks: Family<ReasonLabels, Counter>,
    gate_evaluations: Family<GateLabels, Counter>,
    reconcile_duration: Histogram,
    rollback_duration: Histogram,
    reconcile_errors: Family<CategoryLabels, Counter>,
    rollbacks_incomplete: Counter,
    leadership: Arc<OnceLock<watch::Receiver<bool>>>,
}

/// Counts rollouts by phase from the controller's cache at scrape time, so deleted
/// rollouts never linger in the gauge.
#[derive(Debug)]
struct RolloutPhases(Store<DeserializeGuard<ConfigRollout>>);

const PHASES: [&str; 8] = [
    "Pending",
    "Progressing",
    "Paused",
    "Succeeded",
    "RollingBack",
    "RolledBack",
    "Failed",
    "Unknown",
];

fn phase_name(phase: Option<Phase>) -> &'static str {
    match phase {
        Some(Phase::Pending) => "Pending",
        Some(Phase::Progressing) => "Progressing",
        Some(Phase::Paused) => "Paused",
        Some(Phase::Succeeded) => "Succeeded",
        Some(Phase::RollingBack) => "RollingBack",
        Some(Phase::RolledBack) => "RolledBack",
        Some(Phase::Failed) => "Failed",
        None => "Unknown",
    }
}

impl Collector for RolloutPhases {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let family = Family::<PhaseLabels, Gauge>::default();
        for phase in PHASES {
            family.get_or_create(&PhaseLabels { phase }).set(0);
        }
        for guard in self.0.state() {
            let phase = guard
                .0
                .as_ref()
                .ok()
                .and_then(|r| r.status.as_ref())
                .and_then(|s| s.phase);
            family
                .get_or_create(&PhaseLabels {
                    phase: phase_name(phase),
                })
                .inc();
        }
        let metric = encoder.encode_descriptor(
            "ringfence_rollouts",
            "ConfigRollouts by phase",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}

/// The rollback reasons a label may carry; anything else is `Other`.
fn rollback_reason(reason: &str) -> &'static str {
    match reason {
        "GateFailed" => "GateFailed",
        "ProgressDeadlineExceeded" => "ProgressDeadlineExceeded",
        "Aborted" => "Aborted",
        _ => "Other",
    }
}

fn seconds(time: &Time) -> f64 {
    time.0.as_millisecond() as f64 / 1000.0
}

/// Per-rollout series for alerts that name a rollout, computed from the controller's cache
/// at scrape time. They read only the phase, conditions, current ring, rollback and spec,
/// never the per-target parts of the status, so a scrape costs one pass over the rollouts.
#[derive(Debug)]
struct RolloutSeries(Store<DeserializeGuard<ConfigRollout>>);

#[derive(Default)]
struct Series {
    info: Vec<(RolloutPhaseLabels, f64)>,
    transition: Vec<(RolloutLabels, f64)>,
    ring_started: Vec<(RolloutRingLabels, f64)>,
    ring_limit: Vec<(RolloutRingLabels, f64)>,
    rollback_started: Vec<(RolloutReasonLabels, f64)>,
    rollback_completed: Vec<(RolloutLabels, f64)>,
}

impl Series {
    fn add(&mut self, rollout: &ConfigRollout) {
        let labels = RolloutLabels {
            namespace: rollout.namespace().unwrap_or_default(),
            name: rollout.name_any(),
        };
        let status = rollout.status.as_ref();
        let phase = status.and_then(|s| s.phase);
        self.info.push((
            RolloutPhaseLabels {
                namespace: labels.namespace.clone(),
                name: labels.name.clone(),
                phase: phase_name(phase),
            },
            1.0,
        ));
        let Some(status) = status else { return };
        if let Some(latest) = status
            .conditions
            .iter()
            .map(|c| seconds(&c.last_transition_time))
            .reduce(f64::max)
        {
            self.transition.push((labels.clone(), latest));
        }
        if matches!(phase, Some(Phase::Progressing) | Some(Phase::Paused))
            && let Some(ring) = status.current_ring.as_deref()
        {
            let ring_labels = RolloutRingLabels {
                namespace: labels.namespace.clone(),
                name: labels.name.clone(),
                ring: ring.to_string(),
            };
            // Time spent paused extends a ring's progress deadline, so it moves the start on.
            if let Some(progress) = status.rings.iter().find(|r| r.name == ring)
                && let Some(started) = &progress.started_at
            {
                let started = seconds(started) + progress.paused_seconds as f64;
                self.ring_started.push((ring_labels.clone(), started));
            }
            if let Some(limit) = ring_time_limit(rollout, ring) {
                self.ring_limit.push((ring_labels, limit.as_secs_f64()));
            }
        }
        if let Some(rollback) = &status.rollback {
            if let Some(started) = &rollback.started_at {
                self.rollback_started.push((
                    RolloutReasonLabels {
                        namespace: labels.namespace.clone(),
                        name: labels.name.clone(),
                        reason: rollback_reason(&rollback.reason),
                    },
                    seconds(started),
                ));
            }
            if let Some(completed) = &rollback.completed_at {
                self.rollback_completed.push((labels, seconds(completed)));
            }
        }
    }
}

/// The longest a ring should take by its settings: the progress deadline for its workloads,
/// its bake, and one interval of the slowest gate for the first verdict. None when a
/// duration does not parse (the rollout is then reported invalid instead).
fn ring_time_limit(rollout: &ConfigRollout, ring: &str) -> Option<Duration> {
    let spec = &rollout.spec;
    let bake = parse_duration(&spec.rings.iter().find(|r| r.name == ring)?.bake).ok()?;
    let deadline = parse_duration(&spec.progress_deadline).ok()?;
    let mut slowest = Duration::ZERO;
    for gate in &spec.gates {
        slowest = slowest.max(parse_duration(&gate.interval).ok()?);
    }
    deadline.checked_add(bake)?.checked_add(slowest)
}

fn encode_gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(L, f64)],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for RolloutSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut series = Series::default();
        for guard in self.0.state() {
            if let Ok(rollout) = &guard.0 {
                series.add(rollout);
            }
        }
        let s = Some(&Unit::Seconds);
        encode_gauges(
            &mut encoder,
            "ringfence_rollout_info",
            "1 for every ConfigRollout, labelled with its phase",
            None,
            &series.info,
        )?;
        encode_gauges(
            &mut encoder,
            "ringfence_rollout_last_transition_timestamp",
            "When a condition of the rollout last changed status",
            s,
            &series.transition,
        )?;
        encode_gauges(
            &mut encoder,
            "ringfence_rollout_ring_started_timestamp",
            "When the current ring of a progressing or paused rollout started, moved on by the time it spent paused",
            s,
            &series.ring_started,
        )?;
        encode_gauges(
            &mut encoder,
            "ringfence_rollout_ring_time_limit",
            "Longest the current ring should take by its settings: progressDeadline, plus its bake, plus the longest gate interval",
            s,
            &series.ring_limit,
        )?;
        encode_gauges(
            &mut encoder,
            "ringfence_rollout_rollback_started_timestamp",
            "When the rollout's latest rollback started, by reason",
            s,
            &series.rollback_started,
        )?;
        encode_gauges(
            &mut encoder,
            "ringfence_rollout_rollback_completed_timestamp",
            "When the rollout's latest rollback restored its last target",
            s,
            &series.rollback_completed,
        )
    }
}

/// 1 while this replica leads: it holds the Lease, or runs without leader election.
#[derive(Debug)]
struct Leadership(Arc<OnceLock<watch::Receiver<bool>>>);

impl Collector for Leadership {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let leads = self.0.get().is_none_or(|leader| *leader.borrow());
        let metric = encoder.encode_descriptor(
            "ringfence_leader",
            "1 while this replica leads (holds the leader Lease, or runs without leader election)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(leads)).encode(metric)
    }
}

impl Metrics {
    pub fn new(rollouts: Store<DeserializeGuard<ConfigRollout>>) -> Self {
        let mut registry = Registry::default();
        let promotions = Counter::default();
        let rollbacks = Family::<ReasonLabels, Counter>::default();
        let gate_evaluations = Family::<GateLabels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let rollback_duration = Histogram::new(exponential_buckets(0.25, 2.0, 14));
        let reconcile_errors = Family::<CategoryLabels, Counter>::default();
        let rollbacks_incomplete = Counter::default();
        let leadership = Arc::new(OnceLock::new());
        // Every label set the controller can count starts at zero, so that a scrape shows
        // each family and `increase()` sees the first rollback, not only the second.
        for reason in ["GateFailed", "ProgressDeadlineExceeded", "Aborted", "Other"] {
            let _ = rollbacks.get_or_create(&ReasonLabels { reason });
        }
        for gate in ["prometheus", "webhook", "unknown"] {
            for verdict in ["Pass", "Fail", "Inconclusive"] {
                let _ = gate_evaluations.get_or_create(&GateLabels { gate, verdict });
            }
        }
        let sub = registry.sub_registry_with_prefix("ringfence");
        sub.register("ring_promotions", "Rings promoted", promotions.clone());
        sub.register(
            "rollbacks",
            "Rollbacks started, by reason",
            rollbacks.clone(),
        );
        sub.register(
            "gate_evaluations",
            "Gate evaluations by provider type and verdict",
            gate_evaluations.clone(),
        );
        sub.register_with_unit(
            "reconcile_duration",
            "Duration of one reconcile",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        sub.register_with_unit(
            "rollback_duration",
            "From the rollback decision (the failing verdict that reached failureLimit, or abort) to the last target restored",
            Unit::Seconds,
            rollback_duration.clone(),
        );
        sub.register(
            "reconcile_errors",
            "Failed reconciles by category",
            reconcile_errors.clone(),
        );
        sub.register(
            "rollbacks_incomplete",
            "Rollbacks that ended without restoring every target: a prior content was unknown",
            rollbacks_incomplete.clone(),
        );
        registry.register_collector(Box::new(RolloutPhases(rollouts.clone())));
        registry.register_collector(Box::new(RolloutSeries(rollouts)));
        registry.register_collector(Box::new(Leadership(leadership.clone())));
        Self {
            registry,
            promotions,
            rollbacks,
            gate_evaluations,
            reconcile_duration,
            rollback_duration,
            reconcile_errors,
            rollbacks_incomplete,
            leadership,
        }
    }

    /// Reports `ringfence_leader` from this signal (see [`crate::controller::Options::leader`]);
    /// until it is set, the replica counts as leading. Only the first signal is kept.
    pub fn follow_leadership(&self, leader: watch::Receiver<bool>) {
        let _ = self.leadership.set(leader);
    }

    pub fn promoted(&self) {
        self.promotions.inc();
    }

    /// `reason` is the status' rollback reason; anything unexpected is counted as `Other`.
    pub fn rollback_started(&self, reason: &str) {
        let reason = rollback_reason(reason);
        self.rollbacks.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn rollback_completed(&self, took: Duration) {
        self.rollback_duration.observe(took.as_secs_f64());
    }

    /// A rollback ended without restoring every target because a prior content was unknown.
    pub fn rollback_incomplete(&self) {
        self.rollbacks_incomplete.inc();
    }

    pub fn gate_evaluated(&self, provider: GateProvider, verdict: Verdict) {
        let gate = match provider {
            GateProvider::Prometheus => "prometheus",
            GateProvider::Webhook => "webhook",
            GateProvider::Unknown => "unknown",
        };
        let verdict = match verdict {
            Verdict::Pass => "Pass",
            Verdict::Fail => "Fail",
            Verdict::Inconclusive => "Inconclusive",
        };
        self.gate_evaluations
            .get_or_create(&GateLabels { gate, verdict })
            .inc();
    }

    pub fn reconciled(&self, took: Duration) {
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    pub fn reconcile_failed(&self, category: &'static str) {
        self.reconcile_errors
            .get_or_create(&CategoryLabels { category })
            .inc();
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// The classic Prometheus text format (0.0.4), for scrapers that do not ask for
    /// OpenMetrics, and for `promtool check metrics`.
    pub fn render_prometheus_text(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;

    #[test]
    fn text_has_every_family_with_bounded_labels() {
        let (store, _writer) = reflector::store::<DeserializeGuard<ConfigRollout>>();
        let m = Metrics::new(store);
        m.promoted();
        m.rollback_started("GateFailed");
        m.rollback_started("something a user wrote");
        m.gate_evaluated(GateProvider::Webhook, Verdict::Fail);
        m.reconciled(Duration::from_millis(20));
        m.rollback_completed(Duration::from_secs(3));
        m.reconcile_failed("conflict");
        m.rollback_incomplete();
        let text = m.render().unwrap();
        for needle in [
            "ringfence_ring_promotions_total 1",
            "ringfence_rollbacks_total{reason=\"GateFailed\"} 1",
            "ringfence_rollbacks_total{reason=\"Other\"} 1",
            "ringfence_rollbacks_total{reason=\"Aborted\"} 0",
            "ringfence_gate_evaluations_total{gate=\"prometheus\",verdict=\"Inconclusive\"} 0",
            "ringfence_gate_evaluations_total{gate=\"webhook\",verdict=\"Fail\"} 1",
            "ringfence_reconcile_duration_seconds_count 1",
            "ringfence_rollback_duration_seconds_sum 3",
            "ringfence_reconcile_errors_total{category=\"conflict\"} 1",
            "ringfence_rollouts{phase=\"Succeeded\"} 0",
            "ringfence_rollbacks_incomplete_total 1",
            "ringfence_leader 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    fn rollout(value: serde_json::Value) -> ConfigRollout {
        serde_json::from_value(value).unwrap()
    }

    fn store_of(rollouts: Vec<ConfigRollout>) -> Store<DeserializeGuard<ConfigRollout>> {
        let (store, mut writer) = reflector::store::<DeserializeGuard<ConfigRollout>>();
        for r in rollouts {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(DeserializeGuard(
                Ok(r),
            )));
        }
        store
    }

    fn samples(text: &str, family: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{family}{{")))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn per_rollout_series_come_from_phase_conditions_ring_and_rollback() {
        let base = |name: &str, status: serde_json::Value| {
            rollout(serde_json::json!({
                "apiVersion": "ringfence.dev/v1alpha1", "kind": "ConfigRollout",
                "metadata": {"namespace": "platform", "name": name, "generation": 1},
                "spec": {
                    "config": {"name": "flags", "data": {}},
                    "rings": [
                        {"name": "canary", "namespaces": ["cell-1"], "bake": "5m"},
                        {"name": "broad", "namespaces": ["cell-2"], "bake": "30m"},
                    ],
                    "gates": [
                        {"name": "a", "interval": "30s", "webhook": {"url": "http://x"}},
                        {"name": "b", "interval": "2m", "webhook": {"url": "http://x"}},
                    ],
                    "progressDeadline": "10m",
                },
                "status": status,
            }))
        };
        let progressing = base(
            "moving",
            serde_json::json!({
                "phase": "Progressing",
                "currentRing": "broad",
                "rings": [
                    {"name": "canary", "phase": "Promoted", "startedAt": "2025-01-01T00:00:00Z"},
                    {"name": "broad", "phase": "Verifying", "startedAt": "2025-01-01T00:10:00Z", "pausedSeconds": 60},
                ],
                "conditions": [
                    {"type": "Valid", "status": "True", "reason": "Accepted", "message": "",
                     "lastTransitionTime": "2025-01-01T00:00:00Z"},
                    {"type": "Progressing", "status": "True", "reason": "RingVerifying", "message": "",
                     "lastTransitionTime": "2025-01-01T00:00:05Z"},
                ],
            }),
        );
        let rolled_back = base(
            "back",
            serde_json::json!({
                "phase": "RolledBack",
                "currentRing": "canary",
                "rollback": {
                    "revision": "r1", "reason": "a reason nobody expected", "message": "m",
                    "startedAt": "2025-01-01T01:00:00Z", "completedAt": "2025-01-01T01:00:30Z",
                },
            }),
        );
        let unstarted = base("new", serde_json::Value::Null);
        let m = Metrics::new(store_of(vec![progressing, rolled_back, unstarted]));
        let text = m.render().unwrap();
        let t0 = 1_735_689_600.0; // 2025-01-01T00:00:00Z
        let mut info = samples(&text, "ringfence_rollout_info");
        info.sort();
        assert_eq!(
            info,
            [
                r#"ringfence_rollout_info{namespace="platform",name="back",phase="RolledBack"} 1.0"#,
                r#"ringfence_rollout_info{namespace="platform",name="moving",phase="Progressing"} 1.0"#,
                r#"ringfence_rollout_info{namespace="platform",name="new",phase="Unknown"} 1.0"#,
            ]
        );
        assert_eq!(
            samples(&text, "ringfence_rollout_last_transition_timestamp_seconds"),
            [format!(
                r#"ringfence_rollout_last_transition_timestamp_seconds{{namespace="platform",name="moving"}} {:.1}"#,
                t0 + 5.0
            )]
        );
        assert_eq!(
            samples(&text, "ringfence_rollout_ring_started_timestamp_seconds"),
            [format!(
                r#"ringfence_rollout_ring_started_timestamp_seconds{{namespace="platform",name="moving",ring="broad"}} {:.1}"#,
                t0 + 600.0 + 60.0
            )],
            "the current ring's start, moved on by its paused time"
        );
        assert_eq!(
            samples(&text, "ringfence_rollout_ring_time_limit_seconds"),
            [
                r#"ringfence_rollout_ring_time_limit_seconds{namespace="platform",name="moving",ring="broad"} 2520.0"#
            ],
            "10m deadline + 30m bake + the 2m gate interval; none once the ring is not in progress"
        );
        assert_eq!(
            samples(
                &text,
                "ringfence_rollout_rollback_started_timestamp_seconds"
            ),
            [format!(
                r#"ringfence_rollout_rollback_started_timestamp_seconds{{namespace="platform",name="back",reason="Other"}} {:.1}"#,
                t0 + 3600.0
            )]
        );
        assert_eq!(
            samples(
                &text,
                "ringfence_rollout_rollback_completed_timestamp_seconds"
            ),
            [format!(
                r#"ringfence_rollout_rollback_completed_timestamp_seconds{{namespace="platform",name="back"}} {:.1}"#,
                t0 + 3630.0
            )]
        );
    }

    #[test]
    fn leader_gauge_follows_the_leadership_signal() {
        let (store, _writer) = reflector::store::<DeserializeGuard<ConfigRollout>>();
        let m = Metrics::new(store);
        let (tx, rx) = watch::channel(false);
        m.follow_leadership(rx);
        assert!(m.render().unwrap().contains("\nringfence_leader 0\n"));
        tx.send_replace(true);
        assert!(m.render().unwrap().contains("\nringfence_leader 1\n"));
    }

    #[test]
    fn classic_text_names_counters_with_their_total_suffix() {
        let (store, _writer) = reflector::store::<DeserializeGuard<ConfigRollout>>();
        let text = Metrics::new(store).render_prometheus_text().unwrap();
        assert!(text.contains("# TYPE ringfence_rollbacks_incomplete_total counter"));
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }
}
