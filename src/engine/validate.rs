//! What admission cannot check, turned into a [`Plan`] the state machine
//! reads: the resolved configuration's revision and every duration parsed.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::gate_access::check_gates;
use super::invalid::Invalid;
use super::model::Inputs;
use super::revision::{ResolvedConfig, revision_of};
use super::rings::check_selectors;
use crate::api::{
    ConfigKind, ConfigRolloutSpec, Gate, LastValidSpec, Phase, WorkloadSpec, parse_duration,
};
use crate::validation::data::{self, Origin, RULES_KEY};

/// The spec, checked and parsed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    pub revision: String,
    pub progress_deadline: Duration,
    pub rings: Vec<RingPlan>,
    pub gates: Vec<GatePlan>,
    pub workloads: Option<WorkloadSpec>,
    pub automatic_rollback: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RingPlan {
    pub name: String,
    pub bake: Duration,
    pub max_concurrent: MaxConcurrent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MaxConcurrent {
    All,
    Count(u32),
    Percent(u32),
}

impl MaxConcurrent {
    /// Targets written at a time in a ring of `targets`: percentages round
    /// up, and at least one target is always written.
    pub fn batch(self, targets: usize) -> usize {
        let n = match self {
            MaxConcurrent::All => targets,
            MaxConcurrent::Count(c) => usize::try_from(c).unwrap_or(usize::MAX),
            MaxConcurrent::Percent(p) => {
                let p = usize::try_from(p).unwrap_or(100);
                targets.saturating_mul(p).div_ceil(100)
            }
        };
        n.max(1)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GatePlan {
    pub name: String,
    pub interval: Duration,
    pub failure_limit: u32,
    /// Judged relative to the ring's value before it was written: with `compareTo:
    /// before`, and with `unchanged` as the fallback where no unchanged namespaces are left.
    pub needs_baseline: bool,
    pub definition: Gate,
}

impl Plan {
    /// The plan a revision in flight is held to while the spec is invalid: the
    /// persisted revision, judged by the last valid spec's gates, workloads,
    /// progress deadline and rollback policy. Nothing is written from it but
    /// restores. None when nothing is in flight.
    pub fn held(inputs: &Inputs) -> Option<Self> {
        let status = inputs.status;
        let revision = status.revision.clone()?;
        if !matches!(
            status.phase,
            Some(Phase::Progressing | Phase::Paused | Phase::RollingBack | Phase::Failed)
        ) {
            return None;
        }
        let last = status
            .last_valid_spec
            .clone()
            .unwrap_or_else(|| LastValidSpec {
                automatic_rollback: inputs.spec.rollback.automatic,
                ..LastValidSpec::default()
            });
        Some(Self {
            revision,
            progress_deadline: parse_duration(&last.progress_deadline).unwrap_or(Duration::MAX),
            rings: status
                .rings
                .iter()
                .map(|r| RingPlan {
                    name: r.name.clone(),
                    bake: Duration::MAX,
                    max_concurrent: MaxConcurrent::All,
                })
                .collect(),
            gates: last
                .gates
                .iter()
                .filter_map(|g| gate_plan(g).ok())
                .collect(),
            workloads: last.workloads,
            automatic_rollback: last.automatic_rollback,
        })
    }
}

/// The judging rules of a valid spec, kept in status for [`Plan::held`].
pub(crate) fn last_valid_spec(spec: &ConfigRolloutSpec, generation: i64) -> LastValidSpec {
    LastValidSpec {
        generation,
        gates: spec.gates.clone(),
        workloads: spec.workloads.clone(),
        progress_deadline: spec.progress_deadline.clone(),
        automatic_rollback: spec.rollback.automatic,
    }
}

/// Checks what only the controller can: the configuration resolved, every
/// duration parses, selectors are well formed. Ring targets are checked when
/// they are resolved or used (see `rings`).
pub(crate) fn plan(inputs: &Inputs) -> Result<Plan, Invalid> {
    let spec = inputs.spec;
    let config = match &inputs.world.config {
        Some(Ok(config)) => config,
        Some(Err(why)) => {
            return Err(Invalid::new(
                "ConfigUnresolvable",
                format!("configuration {} cannot be read: {why}", spec.config.name),
            ));
        }
        None => {
            return Err(Invalid::new(
                "ConfigUnresolvable",
                format!("configuration {} has not been read yet", spec.config.name),
            ));
        }
    };
    let progress_deadline = duration("progressDeadline", &spec.progress_deadline)?;
    let rings = spec
        .rings
        .iter()
        .map(|ring| {
            Ok(RingPlan {
                name: ring.name.clone(),
                bake: duration(&format!("rings[{}].bake", ring.name), &ring.bake)?,
                max_concurrent: max_concurrent(&ring.name, ring.max_concurrent.as_ref())?,
            })
        })
        .collect::<Result<Vec<_>, Invalid>>()?;
    if rings.is_empty() {
        return Err(Invalid::new(
            "NoRings",
            "the rollout has no rings".to_string(),
        ));
    }
    let gates = spec
        .gates
        .iter()
        .map(gate_plan)
        .collect::<Result<Vec<_>, Invalid>>()?;
    check_selectors(spec)?;
    check_data(inputs, config)?;
    check_gates(inputs)?;
    Ok(Plan {
        revision: revision_of(config, &inputs.settings.revision_key),
        progress_deadline,
        rings,
        gates,
        workloads: spec.workloads.clone(),
        automatic_rollback: spec.rollback.automatic,
    })
}

/// The data passes kube-apiserver's rules and the rollout's own, before any ring is written.
fn check_data(inputs: &Inputs, config: &ResolvedConfig) -> Result<(), Invalid> {
    let spec = &inputs.spec.config;
    let (rules, rules_origin) = match (&spec.validation_ref, &inputs.world.validation) {
        (None, _) => (
            spec.validation.as_slice(),
            "spec.config.validation".to_string(),
        ),
        (Some(r), Some(Ok(rules))) => (
            rules.as_slice(),
            format!("ConfigMap {} {RULES_KEY}", r.name),
        ),
        (Some(r), Some(Err(why))) => {
            return Err(Invalid::new(
                "ConfigUnresolvable",
                format!(
                    "validation rules in ConfigMap {} cannot be read: {why}",
                    r.name
                ),
            ));
        }
        (Some(r), None) => {
            return Err(Invalid::new(
                "ConfigUnresolvable",
                format!(
                    "validation rules in ConfigMap {} have not been read yet",
                    r.name
                ),
            ));
        }
    };
    let data_origin = match &spec.source_ref {
        Some(source) => format!("{} {} data", kind_name(config.kind), source.name),
        None => "spec.config.data".to_string(),
    };
    let problems = data::check(config.kind, &config.data, rules);
    if problems.is_empty() {
        return Ok(());
    }
    let origin = Origin {
        data: &data_origin,
        rules: &rules_origin,
    };
    let reason = if problems.iter().any(data::DataProblem::is_rule_problem) {
        "ValidationRuleInvalid"
    } else {
        "ConfigDataInvalid"
    };
    Err(Invalid::new(reason, data::summary(&problems, &origin)))
}

fn kind_name(kind: ConfigKind) -> &'static str {
    match kind {
        ConfigKind::ConfigMap => "ConfigMap",
        ConfigKind::Secret => "Secret",
    }
}

fn gate_plan(gate: &Gate) -> Result<GatePlan, Invalid> {
    let interval = duration(&format!("gates[{}].interval", gate.name), &gate.interval)?;
    if interval < Duration::from_secs(1) {
        return Err(Invalid::new(
            "InvalidDuration",
            format!(
                "gates[{}].interval must be at least 1s, not {}",
                gate.name, gate.interval
            ),
        ));
    }
    if let Some(p) = &gate.prometheus {
        duration(
            &format!("gates[{}].prometheus.timeout", gate.name),
            &p.timeout,
        )?;
        duration(
            &format!("gates[{}].prometheus.baselineWindow", gate.name),
            &p.baseline_window,
        )?;
    }
    if let Some(w) = &gate.webhook {
        duration(&format!("gates[{}].webhook.timeout", gate.name), &w.timeout)?;
    }
    let needs_baseline = gate
        .prometheus
        .as_ref()
        .is_some_and(|p| p.max_increase.is_some() || p.max_ratio.is_some());
    Ok(GatePlan {
        name: gate.name.clone(),
        interval,
        failure_limit: gate.failure_limit.max(1),
        needs_baseline,
        definition: gate.clone(),
    })
}

fn duration(field: &str, value: &str) -> Result<Duration, Invalid> {
    parse_duration(value).map_err(|e| Invalid::new("InvalidDuration", format!("{field}: {e}")))
}

fn max_concurrent(ring: &str, value: Option<&IntOrString>) -> Result<MaxConcurrent, Invalid> {
    let invalid = |v: &str| {
        Invalid::new(
            "InvalidMaxConcurrent",
            format!(
                "rings[{ring}].maxConcurrent {v:?} must be a positive integer or a percentage from 1% to 100%"
            ),
        )
    };
    match value {
        None => Ok(MaxConcurrent::All),
        Some(IntOrString::Int(n)) => u32::try_from(*n)
            .ok()
            .filter(|n| *n >= 1)
            .map(MaxConcurrent::Count)
            .ok_or_else(|| invalid(&n.to_string())),
        Some(IntOrString::String(s)) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<u32>().ok())
            .filter(|p| (1..=100).contains(p))
            .map(MaxConcurrent::Percent)
            .ok_or_else(|| invalid(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_concurrent_percentage_rounds_up_and_is_at_least_one() {
        assert_eq!(MaxConcurrent::Percent(25).batch(5), 2);
        assert_eq!(MaxConcurrent::Percent(1).batch(3), 1);
        assert_eq!(MaxConcurrent::Percent(100).batch(3), 3);
        assert_eq!(MaxConcurrent::Count(2).batch(5), 2);
        assert_eq!(MaxConcurrent::All.batch(0), 1);
        assert_eq!(
            max_concurrent("r", Some(&IntOrString::String("25%".into()))),
            Ok(MaxConcurrent::Percent(25))
        );
        assert!(max_concurrent("r", Some(&IntOrString::String("0%".into()))).is_err());
        assert!(max_concurrent("r", Some(&IntOrString::String("3".into()))).is_err());
        assert!(max_concurrent("r", Some(&IntOrString::Int(0))).is_err());
    }
}
