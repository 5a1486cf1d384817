//! What a new revision would do if it started now, for `kubectl ringfence plan`: the
//! engine's own decision on a fresh status says whether the spec is valid, and the
//! engine's ring selection says where each namespace lands and why one would not be written.

use std::time::Duration;

use super::conditions::VALID;
use super::decide::decide;
use super::model::{Inputs, NamespaceInfo};
use super::rings::{permitted, select};
use super::validate::plan;
use crate::api::{ConfigRolloutSpec, ConfigRolloutStatus};

/// A rollout's plan against the observed world.
#[derive(Clone, Debug, PartialEq)]
pub struct Preview {
    /// Content hash of the resolved configuration (None when it cannot be read).
    pub revision: Option<String>,
    /// Why the controller would refuse the spec (its `Valid=False` reason and message).
    pub invalid: Option<Refusal>,
    pub rings: Vec<RingPreview>,
    /// None when the spec does not parse that far.
    pub timing: Option<Timing>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingPreview {
    pub name: String,
    /// Namespaces the ring would write, in order.
    pub targets: Vec<String>,
    /// Namespaces the ring selects but would not write.
    pub skipped: Vec<(String, Skip)>,
}

/// Why a selected namespace is not a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// An earlier ring holds it.
    Duplicate,
    /// It is being deleted.
    Terminating,
    /// Listed explicitly but does not exist.
    Missing,
    /// It does not allow rollouts from the rollout's namespace.
    NotPermitted,
    /// Another ConfigRollout (`namespace/name`) manages the target there.
    ClaimedBy(String),
}

/// The durations that bound how long the rollout takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    pub progress_deadline: Duration,
    /// Per ring: bake, and targets written at a time.
    pub rings: Vec<(String, Duration, usize)>,
    /// Per gate: interval and failure limit.
    pub gates: Vec<(String, Duration, u32)>,
}

/// Previews `inputs.spec` as a new revision: `inputs.status` is ignored (rings are
/// resolved afresh when a revision starts) and a pause does not hide what would happen.
pub fn preview(inputs: &Inputs) -> Preview {
    let spec = ConfigRolloutSpec {
        paused: false,
        ..inputs.spec.clone()
    };
    let status = ConfigRolloutStatus::default();
    let fresh = Inputs {
        spec: &spec,
        status: &status,
        ..inputs.clone()
    };
    let decision = decide(&fresh);
    let invalid = decision
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == VALID && c.status == "False")
        .map(|c| Refusal {
            reason: c.reason.clone(),
            message: c.message.clone(),
        });
    let parsed = plan(&fresh).ok();
    let world = inputs.world;
    let namespace = &inputs.rollout.namespace;
    let find = |name: &str| -> Option<&NamespaceInfo> {
        world.namespaces.iter().find(|ns| ns.name == name)
    };
    let rings = select(&spec, world)
        .unwrap_or_default()
        .into_iter()
        .map(|ring| {
            let mut targets = Vec::new();
            let mut skipped = Vec::new();
            for name in ring.targets {
                let allowed = find(&name)
                    .is_none_or(|ns| permitted(ns, namespace, &world.clusters, inputs.settings));
                if !allowed {
                    skipped.push((name, Skip::NotPermitted));
                } else if let Some(owner) = world.claimed_by_others.get(&name) {
                    skipped.push((name, Skip::ClaimedBy(owner.clone())));
                } else {
                    targets.push(name);
                }
            }
            skipped.extend(ring.duplicates.into_iter().map(|n| (n, Skip::Duplicate)));
            skipped.extend(ring.terminating.into_iter().map(|n| (n, Skip::Terminating)));
            skipped.extend(ring.missing.into_iter().map(|n| (n, Skip::Missing)));
            RingPreview {
                name: ring.name,
                targets,
                skipped,
            }
        })
        .collect::<Vec<_>>();
    let timing = parsed.as_ref().map(|plan| Timing {
        progress_deadline: plan.progress_deadline,
        rings: plan
            .rings
            .iter()
            .zip(&rings)
            .map(|(r, resolved)| {
                let batch = r.max_concurrent.batch(resolved.targets.len());
                (r.name.clone(), r.bake, batch)
            })
            .collect(),
        gates: plan
            .gates
            .iter()
            .map(|g| (g.name.clone(), g.interval, g.failure_limit))
            .collect(),
    });
    Preview {
        revision: parsed.map(|p| p.revision),
        invalid,
        rings,
        timing,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::api::{ALLOW_FROM_LABEL, ConfigKind};
    use crate::engine::{ResolvedConfig, RolloutMeta, Settings, World};

    fn ns(name: &str, labels: &[(&str, &str)], terminating: bool) -> NamespaceInfo {
        NamespaceInfo {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            terminating,
            cluster: None,
        }
    }

    fn run(spec: serde_json::Value, world: World) -> Preview {
        let spec: ConfigRolloutSpec = serde_json::from_value(spec).unwrap();
        let rollout = RolloutMeta {
            namespace: "platform".into(),
            name: "flags".into(),
            generation: 1,
            ..RolloutMeta::default()
        };
        let status = ConfigRolloutStatus::default();
        let settings = Settings::new(crate::engine::RevisionKey::generate());
        preview(&Inputs {
            rollout: &rollout,
            spec: &spec,
            status: &status,
            world: &world,
            settings: &settings,
            now: Timestamp::from_second(1_700_000_000).unwrap(),
        })
    }

    fn world(namespaces: Vec<NamespaceInfo>) -> World {
        World {
            config: Some(Ok(ResolvedConfig {
                kind: ConfigKind::ConfigMap,
                data: BTreeMap::from([("a".to_string(), b"1".to_vec())]),
            })),
            namespaces,
            ..World::default()
        }
    }

    const ALLOW: (&str, &str) = (ALLOW_FROM_LABEL, "platform");

    #[test]
    fn each_skipped_namespace_says_why_and_the_refusal_is_the_engines() {
        let spec = serde_json::json!({
            "paused": true,
            "config": {"name": "flags", "data": {"a": "1"}},
            "rings": [
                {"name": "one", "namespaces": ["cell-1", "gone"], "bake": "1m"},
                {"name": "two", "namespaceSelector": {"matchLabels": {"ring": "two"}}, "bake": "2m", "maxConcurrent": "50%"},
            ],
            "gates": [{"name": "smoke", "interval": "10s", "failureLimit": 3, "webhook": {"url": "http://x"}}],
        });
        let mut w = world(vec![
            ns("cell-1", &[ALLOW, ("ring", "two")], false),
            ns("cell-2", &[ALLOW, ("ring", "two")], false),
            ns("cell-3", &[("ring", "two")], false),
            ns("cell-4", &[ALLOW, ("ring", "two")], true),
            ns("cell-5", &[ALLOW, ("ring", "two")], false),
        ]);
        w.claimed_by_others
            .insert("cell-5".into(), "other/rollout".into());
        let p = run(spec.clone(), w.clone());
        assert_eq!(p.rings[0].targets, ["cell-1"]);
        assert_eq!(p.rings[0].skipped, [("gone".to_string(), Skip::Missing)]);
        assert_eq!(p.rings[1].targets, ["cell-2"]);
        assert_eq!(
            p.rings[1].skipped,
            [
                ("cell-3".to_string(), Skip::NotPermitted),
                (
                    "cell-5".to_string(),
                    Skip::ClaimedBy("other/rollout".into())
                ),
                ("cell-1".to_string(), Skip::Duplicate),
                ("cell-4".to_string(), Skip::Terminating),
            ]
        );
        let refusal = p.invalid.unwrap();
        assert_eq!(refusal.reason, "NamespaceNotFound", "{refusal:?}");
        let timing = p.timing.unwrap();
        assert_eq!(
            timing.rings,
            [
                ("one".to_string(), Duration::from_secs(60), 1),
                ("two".to_string(), Duration::from_secs(120), 1)
            ]
        );
        assert_eq!(
            timing.gates,
            [("smoke".to_string(), Duration::from_secs(10), 3)]
        );

        // Without the missing namespace, the next refusal is the guard's.
        let mut spec = spec;
        spec["rings"][0]["namespaces"] = serde_json::json!(["cell-1"]);
        let p = run(spec.clone(), w.clone());
        assert_eq!(p.invalid.unwrap().reason, "TargetNotPermitted");

        spec["rings"][1]["namespaces"] = serde_json::json!(["cell-2"]);
        spec["rings"][1]
            .as_object_mut()
            .unwrap()
            .remove("namespaceSelector");
        let p = run(spec, w);
        assert_eq!(p.invalid, None);
        assert!(p.revision.is_some());
    }
}
