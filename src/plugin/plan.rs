//! `kubectl ringfence plan -f FILE | NAME`: what the rollout would do if its revision
//! started now, against the live cluster.
//!
//! The controller's own observation reads the cluster ([`observe_uncached`]) and the
//! engine's own decision and ring selection judge it ([`preview`]); this module only adds
//! the key-level diff per target and the rendering. A Secret's values never leave
//! [`diff`]: its keys are listed as added, changed or removed, nothing more.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::core::Selector;
use serde::Serialize;

use super::{PluginError, Session, short_duration, split_target};
use crate::api::{ALLOW_FROM_LABEL, ConfigKind, ConfigRollout};
use crate::controller::{observe_uncached, rollout_key};
use crate::engine::{Inputs, Preview, Settings, Skip, World, preview};
use crate::validation::ManifestValidator;
use crate::validation::manifest::parse_documents;

/// How one key changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    Added,
    Changed,
    Removed,
}

/// One key that differs; values only for ConfigMaps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyChange {
    pub key: String,
    pub change: Change,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
}

/// A ConfigMap value as text; binary data is only sized.
fn shown(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) => text.to_string(),
        Err(_) => format!("<{} bytes of binary data>", value.len()),
    }
}

/// The keys that differ between what a target holds (None: it does not exist) and the
/// new data. For a Secret no value, nor anything derived from one, is kept.
pub fn diff(
    kind: ConfigKind,
    current: Option<&BTreeMap<String, Vec<u8>>>,
    new: &BTreeMap<String, Vec<u8>>,
) -> Vec<KeyChange> {
    let empty = BTreeMap::new();
    let current = current.unwrap_or(&empty);
    let value = |v: &[u8]| match kind {
        ConfigKind::ConfigMap => Some(shown(v)),
        ConfigKind::Secret => None,
    };
    let mut out = Vec::new();
    for (key, new_value) in new {
        match current.get(key) {
            None => out.push(KeyChange {
                key: key.clone(),
                change: Change::Added,
                old: None,
                new: value(new_value),
            }),
            Some(old) if old != new_value => out.push(KeyChange {
                key: key.clone(),
                change: Change::Changed,
                old: value(old),
                new: value(new_value),
            }),
            Some(_) => {}
        }
    }
    for (key, old) in current {
        if !new.contains_key(key) {
            out.push(KeyChange {
                key: key.clone(),
                change: Change::Removed,
                old: value(old),
                new: None,
            });
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetPlan {
    /// The member cluster the target is in, `local` for the cluster ringfence runs in.
    pub cluster: String,
    pub namespace: String,
    /// `create`, `update` or `unchanged` (same content; only taken over).
    pub action: &'static str,
    pub keys: Vec<KeyChange>,
    /// `Kind/name` of the workloads whose pods would restart.
    pub restarts: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SkippedNamespace {
    /// The member cluster the namespace is in, `local` for the cluster ringfence runs in.
    pub cluster: String,
    pub namespace: String,
    /// Duplicate, Terminating, Missing, NotPermitted or ClaimedByAnotherRollout.
    pub reason: &'static str,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RingPlan {
    pub name: String,
    /// The ring's `clusters`, as the spec lists them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clusters: Option<Vec<String>>,
    /// The ring's `clusterSelector` in kubectl's `-l` syntax.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bake: Option<String>,
    /// Targets written at a time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    pub targets: Vec<TargetPlan>,
    pub skipped: Vec<SkippedNamespace>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GateTiming {
    pub name: String,
    pub interval: String,
    pub failure_limit: u32,
    /// interval x failureLimit: how long a failing gate takes to fail a ring.
    pub fails_a_ring_after: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimingPlan {
    /// The sum of the bakes: no rollout of this spec reaches every ring sooner.
    pub minimum: String,
    pub minimum_seconds: u64,
    pub progress_deadline: String,
    pub gates: Vec<GateTiming>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    pub reason: String,
    pub message: String,
}

/// The whole plan, as `-o json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// `namespace/name`.
    pub rollout: String,
    pub kind: ConfigKind,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<Refused>,
    pub rings: Vec<RingPlan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timing: Option<TimingPlan>,
}

/// A label selector as `kubectl -l` takes it.
fn selector_text(selector: &LabelSelector) -> String {
    Selector::try_from(selector.clone())
        .map_or_else(|e| format!("<invalid: {e}>"), |s| s.to_string())
}

fn skipped(key: &str, skip: Skip, rollout_namespace: &str) -> SkippedNamespace {
    let (reason, detail) = match skip {
        Skip::Duplicate => ("Duplicate", "an earlier ring holds it".to_string()),
        Skip::Terminating => ("Terminating", "the namespace is being deleted".to_string()),
        Skip::Missing => ("Missing", "the namespace does not exist".to_string()),
        Skip::NotPermitted => (
            "NotPermitted",
            format!("not permitted: it is not labelled {ALLOW_FROM_LABEL}={rollout_namespace}"),
        ),
        Skip::ClaimedBy(owner) => (
            "ClaimedByAnotherRollout",
            format!("the target there is managed by {owner}"),
        ),
    };
    let (cluster, namespace) = split_target(key);
    SkippedNamespace {
        cluster: cluster.to_string(),
        namespace: namespace.to_string(),
        reason,
        detail,
    }
}

/// The plan from the engine's preview and what was observed.
pub fn build(
    rollout: &ConfigRollout,
    preview: &Preview,
    world: &World,
    contents: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
) -> Plan {
    let config = &rollout.spec.config;
    let namespace = rollout.namespace().unwrap_or_default();
    let new = world.config.as_ref().and_then(|c| c.as_ref().ok());
    let restart = rollout.spec.workloads.as_ref().is_some_and(|w| w.restart);
    let timing = preview.timing.as_ref();
    let rings = preview
        .rings
        .iter()
        .enumerate()
        .map(|(i, ring)| {
            let ring_timing = timing.and_then(|t| t.rings.get(i));
            let spec = rollout.spec.rings.iter().find(|r| r.name == ring.name);
            RingPlan {
                name: ring.name.clone(),
                clusters: spec.and_then(|r| r.clusters.clone()),
                cluster_selector: spec
                    .and_then(|r| r.cluster_selector.as_ref())
                    .map(selector_text),
                bake: ring_timing.map(|(_, bake, _)| short_duration(*bake)),
                batch: ring_timing.map(|(_, _, batch)| *batch),
                targets: ring
                    .targets
                    .iter()
                    .map(|ns| {
                        let current = contents.get(ns);
                        let keys =
                            new.map_or_else(Vec::new, |new| diff(config.kind, current, &new.data));
                        let action = match (current, keys.is_empty()) {
                            (None, _) => "create",
                            (Some(_), false) => "update",
                            (Some(_), true) => "unchanged",
                        };
                        let restarts = world
                            .workloads
                            .get(ns)
                            .into_iter()
                            .flatten()
                            .filter(|w| {
                                restart
                                    && w.stamped_revision.as_deref() != preview.revision.as_deref()
                            })
                            .map(|w| format!("{:?}/{}", w.kind, w.name))
                            .collect();
                        let (cluster, namespace) = split_target(ns);
                        TargetPlan {
                            cluster: cluster.to_string(),
                            namespace: namespace.to_string(),
                            action,
                            keys,
                            restarts,
                        }
                    })
                    .collect(),
                skipped: ring
                    .skipped
                    .iter()
                    .map(|(ns, skip)| skipped(ns, skip.clone(), &namespace))
                    .collect(),
            }
        })
        .collect();
    let timing = timing.map(|t| {
        let minimum: Duration = t.rings.iter().map(|(_, bake, _)| *bake).sum();
        TimingPlan {
            minimum: short_duration(minimum),
            minimum_seconds: minimum.as_secs(),
            progress_deadline: short_duration(t.progress_deadline),
            gates: t
                .gates
                .iter()
                .map(|(name, interval, limit)| GateTiming {
                    name: name.clone(),
                    interval: short_duration(*interval),
                    failure_limit: *limit,
                    fails_a_ring_after: short_duration(interval.saturating_mul(*limit)),
                })
                .collect(),
        }
    });
    Plan {
        rollout: rollout_key(rollout),
        kind: config.kind,
        name: config.name.clone(),
        // A Secret's revision is keyed by a key only the operator holds: not known here.
        revision: preview
            .revision
            .clone()
            .filter(|_| config.kind == ConfigKind::ConfigMap),
        valid: preview.invalid.is_none(),
        invalid: preview.invalid.as_ref().map(|r| Refused {
            reason: r.reason.clone(),
            message: r.message.clone(),
        }),
        rings,
        timing,
    }
}

/// A value on one line, bounded, quoted as Rust would (escapes visible).
fn quote(value: &str) -> String {
    const MAX: usize = 60;
    let mut text: String = value.chars().take(MAX).collect();
    if value.chars().count() > MAX {
        text.push('…');
    }
    format!("{text:?}")
}

/// The headers of a ring's target columns.
const CLUSTER: &str = "CLUSTER";
const NAMESPACE: &str = "NAMESPACE";

pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan for configrollout {}: {:?} {}, revision {}",
        plan.rollout,
        plan.kind,
        plan.name,
        plan.revision
            .as_deref()
            .unwrap_or("keyed by the operator (a Secret's)")
    );
    // One column each for the cluster and the namespace of every ring's targets.
    let width = |header: &str, cell: fn(&str, &str) -> usize| {
        plan.rings
            .iter()
            .flat_map(|r| {
                let targets = r.targets.iter().map(|t| cell(&t.cluster, &t.namespace));
                targets.chain(r.skipped.iter().map(|s| cell(&s.cluster, &s.namespace)))
            })
            .chain([header.len()])
            .max()
            .unwrap_or(0)
    };
    let cw = width(CLUSTER, |c, _| c.chars().count());
    let nw = width(NAMESPACE, |_, n| n.chars().count());
    for ring in &plan.rings {
        let mut about = Vec::new();
        if let Some(clusters) = &ring.clusters {
            about.push(format!("clusters {}", clusters.join(",")));
        }
        if let Some(selector) = &ring.cluster_selector {
            about.push(format!("clusterSelector {selector}"));
        }
        if let Some(bake) = &ring.bake {
            about.push(format!("bake {bake}"));
        }
        if let Some(batch) = ring.batch {
            about.push(format!("{batch} at a time"));
        }
        let n = ring.targets.len();
        let _ = writeln!(
            out,
            "ring {} ({n} target{}{}{})",
            ring.name,
            if n == 1 { "" } else { "s" },
            if about.is_empty() { "" } else { ", " },
            about.join(", ")
        );
        if !ring.targets.is_empty() || !ring.skipped.is_empty() {
            let _ = writeln!(out, "  {CLUSTER:<cw$}  {NAMESPACE:<nw$}  ACTION");
        }
        for target in &ring.targets {
            let _ = writeln!(
                out,
                "  {:<cw$}  {:<nw$}  {}",
                target.cluster, target.namespace, target.action
            );
            for key in &target.keys {
                let line = match (&key.change, &key.old, &key.new) {
                    (Change::Added, _, Some(new)) => format!("+ {}: {}", key.key, quote(new)),
                    (Change::Changed, Some(old), Some(new)) => {
                        format!("~ {}: {} -> {}", key.key, quote(old), quote(new))
                    }
                    (Change::Removed, Some(old), _) => format!("- {}: {}", key.key, quote(old)),
                    (Change::Added, ..) => format!("+ {} (added)", key.key),
                    (Change::Changed, ..) => format!("~ {} (changed)", key.key),
                    (Change::Removed, ..) => format!("- {} (removed)", key.key),
                };
                let _ = writeln!(out, "      {line}");
            }
            if !target.restarts.is_empty() {
                let _ = writeln!(out, "      restarts {}", target.restarts.join(", "));
            }
        }
        for skip in &ring.skipped {
            let _ = writeln!(
                out,
                "  {:<cw$}  {:<nw$}  skipped: {}",
                skip.cluster, skip.namespace, skip.detail
            );
        }
    }
    if let Some(timing) = &plan.timing {
        let _ = writeln!(
            out,
            "takes at least {} (the bakes); a ring fails when its workloads are not rolled out within {}",
            timing.minimum, timing.progress_deadline
        );
        for gate in &timing.gates {
            let _ = writeln!(
                out,
                "gate {} fails a ring after {} failing checks {} apart ({})",
                gate.name, gate.failure_limit, gate.interval, gate.fails_a_ring_after
            );
        }
    }
    match &plan.invalid {
        None => {
            let _ = writeln!(out, "valid: the controller would start this revision");
        }
        Some(refused) => {
            let _ = writeln!(
                out,
                "invalid ({}): {}; nothing would be written",
                refused.reason, refused.message
            );
        }
    }
    out
}

/// Reads the one ConfigRollout in `path` and checks it as `ringfence validate` does.
/// Problems are the lines `FILE: NAME: FIELD: problem`.
pub fn read_manifest(path: &Path) -> Result<Result<ConfigRollout, Vec<String>>, PluginError> {
    let label = path.display().to_string();
    let text = if label == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| PluginError::Input(format!("{label}: cannot read: {e}")))?;
    let documents = parse_documents(&text)
        .map_err(|e| PluginError::Input(format!("{label}: invalid YAML at {e}")))?;
    let rollouts: Vec<(usize, &serde_json::Value)> = documents
        .iter()
        .enumerate()
        .filter(|(_, d)| d.get("kind").and_then(|k| k.as_str()) == Some("ConfigRollout"))
        .collect();
    let (number, document) = match rollouts.as_slice() {
        [one] => *one,
        [] => {
            let kinds: Vec<&str> = documents
                .iter()
                .map(|d| d.get("kind").and_then(|k| k.as_str()).unwrap_or("no kind"))
                .collect();
            return Err(PluginError::Input(if kinds.is_empty() {
                format!("{label}: no manifest in this file")
            } else {
                format!(
                    "{label}: not a ConfigRollout manifest (found {})",
                    kinds.join(", ")
                )
            }));
        }
        more => {
            return Err(PluginError::Input(format!(
                "{label}: holds {} ConfigRollouts; plan takes one",
                more.len()
            )));
        }
    };
    let validator = ManifestValidator::new().map_err(|e| PluginError::Input(e.to_string()))?;
    let report = validator.check_document(number + 1, document);
    if !report.violations.is_empty() {
        return Ok(Err(report
            .violations
            .iter()
            .map(|v| {
                let field = if v.field.is_empty() {
                    "(object)"
                } else {
                    &v.field
                };
                format!("{label}: {}: {field}: {}", report.name, v.message)
            })
            .collect()));
    }
    serde_json::from_value(document.clone())
        .map(Ok)
        .map_err(|e| PluginError::Input(format!("{label}: {}: {e}", report.name)))
}

/// Observes the cluster for `rollout` and plans it.
pub async fn plan(
    session: &Session,
    mut rollout: ConfigRollout,
    settings: &Settings,
    cluster_namespace: &str,
) -> Result<Plan, PluginError> {
    if rollout.metadata.namespace.is_none() {
        rollout.metadata.namespace = Some(session.namespace.clone());
    }
    let (world, contents) = observe_uncached(
        &session.client,
        &rollout,
        &settings.revision_key,
        cluster_namespace,
    )
    .await
    .map_err(|e| match e {
        crate::controller::Error::Kube { action, source } => session.error(&action, source),
        other => PluginError::Input(other.to_string()),
    })?;
    let meta = crate::engine::RolloutMeta {
        namespace: rollout.namespace().unwrap_or_default(),
        name: rollout.name_any(),
        generation: rollout.metadata.generation.unwrap_or(1),
        ..Default::default()
    };
    let status = rollout.status.clone().unwrap_or_default();
    let preview = preview(&Inputs {
        rollout: &meta,
        spec: &rollout.spec,
        status: &status,
        world: &world,
        settings,
        now: Timestamp::now(),
    });
    Ok(build(&rollout, &preview, &world, &contents))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{NamespaceInfo, ResolvedConfig, RingPreview, WorkloadKind, WorkloadState};
    use serde_json::json;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_config_map_diff_shows_each_key_and_its_values() {
        let current = data(&[("retries", "1"), ("same", "x"), ("old", "gone")]);
        let new = data(&[("retries", "3"), ("same", "x"), ("fresh", "v2")]);
        let d = diff(ConfigKind::ConfigMap, Some(&current), &new);
        let summary: Vec<(String, Change, Option<String>, Option<String>)> = d
            .into_iter()
            .map(|k| (k.key, k.change, k.old, k.new))
            .collect();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            summary,
            [
                ("fresh".into(), Change::Added, None, s("v2")),
                ("retries".into(), Change::Changed, s("1"), s("3")),
                ("old".into(), Change::Removed, s("gone"), None),
            ]
        );
        assert_eq!(diff(ConfigKind::ConfigMap, None, &new).len(), 3);
        assert!(diff(ConfigKind::ConfigMap, Some(&new), &new).is_empty());
    }

    #[test]
    fn a_secret_diff_names_keys_only() {
        let current = data(&[("password", "hunter2"), ("user", "admin")]);
        let new = data(&[("password", "correct-horse"), ("token", "t0k3n")]);
        let d = diff(ConfigKind::Secret, Some(&current), &new);
        assert_eq!(d.len(), 3);
        assert!(d.iter().all(|k| k.old.is_none() && k.new.is_none()));
        let plan = Plan {
            rollout: "p/s".into(),
            kind: ConfigKind::Secret,
            name: "s".into(),
            revision: None,
            valid: true,
            invalid: None,
            rings: vec![RingPlan {
                name: "one".into(),
                clusters: None,
                cluster_selector: None,
                bake: None,
                batch: None,
                targets: vec![TargetPlan {
                    cluster: "local".into(),
                    namespace: "c1".into(),
                    action: "update",
                    keys: d,
                    restarts: vec![],
                }],
                skipped: vec![],
            }],
            timing: None,
        };
        let out = text(&plan) + &serde_json::to_string(&plan).unwrap();
        for secret in ["hunter2", "admin", "correct-horse", "t0k3n"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(
            text(&plan)
                .contains("~ password (changed)\n      + token (added)\n      - user (removed)")
        );
    }

    #[test]
    fn long_and_multiline_values_stay_on_one_line() {
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(100);
        assert_eq!(
            quote(&long),
            format!("{:?}", format!("{}…", "x".repeat(60)))
        );
        assert_eq!(shown(&[0xff, 0xfe]), "<2 bytes of binary data>");
    }

    #[test]
    fn the_plan_has_per_target_diffs_restarts_skips_and_timing() {
        let rollout: ConfigRollout = serde_json::from_value(json!({
            "apiVersion": "ringfence.dev/v1alpha1",
            "kind": "ConfigRollout",
            "metadata": {"name": "flags", "namespace": "platform"},
            "spec": {
                "config": {"name": "flags", "data": {"retries": "3"}},
                "rings": [
                    {"name": "one", "namespaces": ["c1", "c2"], "bake": "1m"},
                    {"name": "two", "namespaces": ["c3"], "bake": "90s"},
                ],
                "workloads": {"selector": {"matchLabels": {"app": "x"}}, "restart": true},
                "gates": [{"name": "smoke", "interval": "30s", "failureLimit": 2, "webhook": {"url": "http://x"}}],
            },
        }))
        .unwrap();
        let allowed = |name: &str| NamespaceInfo {
            name: name.into(),
            labels: [(ALLOW_FROM_LABEL.to_string(), "platform".to_string())].into(),
            ..Default::default()
        };
        let world = World {
            config: Some(Ok(ResolvedConfig {
                kind: ConfigKind::ConfigMap,
                data: data(&[("retries", "3")]),
            })),
            namespaces: vec![
                allowed("c1"),
                allowed("c2"),
                NamespaceInfo {
                    name: "c3".into(),
                    ..Default::default()
                },
            ],
            workloads: [(
                "c1".to_string(),
                vec![WorkloadState {
                    kind: WorkloadKind::Deployment,
                    name: "app".into(),
                    stamped_revision: None,
                    rolled_out: true,
                }],
            )]
            .into(),
            ..World::default()
        };
        let contents = [
            ("c1".to_string(), data(&[("retries", "1")])),
            ("c2".to_string(), data(&[("retries", "3")])),
        ]
        .into();
        let meta = crate::engine::RolloutMeta {
            namespace: "platform".into(),
            name: "flags".into(),
            generation: 1,
            ..Default::default()
        };
        let status = Default::default();
        let preview = preview(&Inputs {
            rollout: &meta,
            spec: &rollout.spec,
            status: &status,
            world: &world,
            settings: &Settings::new(crate::engine::RevisionKey::generate()),
            now: Timestamp::from_second(1_700_000_000).unwrap(),
        });
        let plan = build(&rollout, &preview, &world, &contents);
        let out = text(&plan);
        let revision = plan.revision.clone().unwrap();
        assert_eq!(
            out,
            format!(
                "\
plan for configrollout platform/flags: ConfigMap flags, revision {revision}
ring one (2 targets, bake 1m, 2 at a time)
  CLUSTER  NAMESPACE  ACTION
  local    c1         update
      ~ retries: \"1\" -> \"3\"
      restarts Deployment/app
  local    c2         unchanged
ring two (0 targets, bake 1m30s, 1 at a time)
  CLUSTER  NAMESPACE  ACTION
  local    c3         skipped: not permitted: it is not labelled ringfence.dev/allow-from=platform
takes at least 2m30s (the bakes); a ring fails when its workloads are not rolled out within 10m
gate smoke fails a ring after 2 failing checks 30s apart (1m)
invalid (TargetNotPermitted): namespaces c3 do not allow rollouts from platform (label them ringfence.dev/allow-from=platform); nothing would be written
"
            )
        );
        assert!(!plan.valid);
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["rings"][1]["skipped"][0]["reason"], "NotPermitted");
        assert_eq!(json["rings"][1]["skipped"][0]["cluster"], "local");
        assert_eq!(json["timing"]["minimumSeconds"], 150);
    }

    #[test]
    fn the_plan_names_each_targets_cluster_and_each_rings_clusters() {
        let rollout: ConfigRollout = serde_json::from_value(json!({
            "apiVersion": "ringfence.dev/v1alpha1",
            "kind": "ConfigRollout",
            "metadata": {"name": "flags", "namespace": "platform"},
            "spec": {
                "config": {"name": "flags", "data": {"retries": "3"}},
                "rings": [
                    {"name": "one", "namespaces": ["checkout"], "clusters": ["eu-west-1", "local"]},
                    {"name": "two", "namespaces": ["cart"],
                     "clusterSelector": {"matchLabels": {"region": "us"},
                                         "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}},
                ],
            },
        }))
        .unwrap();
        let preview = Preview {
            revision: Some("r1".into()),
            invalid: None,
            rings: vec![
                RingPreview {
                    name: "one".into(),
                    targets: vec!["eu-west-1/checkout".into(), "checkout".into()],
                    skipped: vec![],
                },
                RingPreview {
                    name: "two".into(),
                    targets: vec!["us-east-2/cart".into()],
                    skipped: vec![("us-west-10/cart".into(), Skip::Missing)],
                },
            ],
            timing: None,
        };
        let world = World {
            config: Some(Ok(ResolvedConfig {
                kind: ConfigKind::ConfigMap,
                data: data(&[("retries", "3")]),
            })),
            ..World::default()
        };
        let contents = [("checkout".to_string(), data(&[("retries", "3")]))].into();
        let plan = build(&rollout, &preview, &world, &contents);
        assert_eq!(
            text(&plan),
            "\
plan for configrollout platform/flags: ConfigMap flags, revision r1
ring one (2 targets, clusters eu-west-1,local)
  CLUSTER     NAMESPACE  ACTION
  eu-west-1   checkout   create
      + retries: \"3\"
  local       checkout   unchanged
ring two (1 target, clusterSelector region=us,tier in (a,b))
  CLUSTER     NAMESPACE  ACTION
  us-east-2   cart       create
      + retries: \"3\"
  us-west-10  cart       skipped: the namespace does not exist
valid: the controller would start this revision
"
        );
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["rings"][0]["clusters"], json!(["eu-west-1", "local"]));
        assert_eq!(
            json["rings"][0]["targets"][0],
            json!({"cluster": "eu-west-1", "namespace": "checkout", "action": "create",
                   "keys": [{"key": "retries", "change": "added", "new": "3"}], "restarts": []})
        );
        assert_eq!(json["rings"][0]["targets"][1]["cluster"], "local");
        assert_eq!(
            json["rings"][1]["clusterSelector"],
            "region=us,tier in (a,b)"
        );
        assert_eq!(json["rings"][1]["skipped"][0]["cluster"], "us-west-10");
        assert!(json["rings"][1].get("clusters").is_none());
    }
}
