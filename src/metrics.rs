//! Prometheus metrics (text exposition format). Every label has a bounded set of values:
//! gate evaluations are labelled by provider type (`prometheus`, `webhook`) rather than by
//! the user-chosen gate name, and errors by category, never by message.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::api::{ConfigRollout, Phase, Verdict};

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
        registry.register_collector(Box::new(RolloutPhases(rollouts)));
        Self {
            registry,
            promotions,
            rollbacks,
            gate_evaluations,
            reconcile_duration,
            rollback_duration,
            reconcile_errors,
            rollbacks_incomplete,
        }
    }

    pub fn rollback_incomplete(&self) {
        self.rollbacks_incomplete.inc();
    }

    pub fn promoted(&self) {
        self.promotions.inc();
    }

    /// `reason` is the status' rollback reason; anything unexpected is counted as `Other`.
    pub fn rollback_started(&self, reason: &str) {
        let reason = match reason {
            "GateFailed" => "GateFailed",
            "ProgressDeadlineExceeded" => "ProgressDeadlineExceeded",
            "Aborted" => "Aborted",
            _ => "Other",
        };
        self.rollbacks.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn rollback_completed(&self, took: Duration) {
        self.rollback_duration.observe(took.as_secs_f64());
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

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
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
        let text = m.render().unwrap();
        for needle in [
            "ringfence_ring_promotions_total 1",
            "ringfence_rollbacks_total{reason=\"GateFailed\"} 1",
            "ringfence_rollbacks_total{reason=\"Other\"} 1",
            "ringfence_gate_evaluations_total{gate=\"webhook\",verdict=\"Fail\"} 1",
            "ringfence_reconcile_duration_seconds_count 1",
            "ringfence_rollback_duration_seconds_sum 3",
            "ringfence_reconcile_errors_total{category=\"conflict\"} 1",
            "ringfence_rollouts{phase=\"Succeeded\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
