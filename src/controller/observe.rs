//! Observe: build the engine's [`World`] from the API, with few requests per reconcile
//! (the rollout's source, one list of targets by name, one list of prior shards, and three
//! workload lists when the rollout has workloads). Namespaces come from the watch cache.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::ListParams;
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::context::Context;
use super::error::Error;
use super::priors::{PriorState, PriorStore};
use super::targets::ObservedTarget;
use super::workloads;
use crate::api::{ConfigKind, ConfigRollout};
use crate::engine::{NamespaceInfo, ResolvedConfig, TargetState, World};

/// The world, plus the raw observations the actions need.
pub struct Observed {
    pub world: World,
    /// Target objects by namespace, as listed.
    pub targets: BTreeMap<String, ObservedTarget>,
    pub priors: PriorState,
}

pub fn rollout_key(rollout: &ConfigRollout) -> String {
    format!(
        "{}/{}",
        rollout.namespace().unwrap_or_default(),
        rollout.name_any()
    )
}

/// Resolves `spec.config`: inline data, or the source object's data.
pub async fn resolve_config(
    ctx: &Context,
    rollout: &ConfigRollout,
) -> Result<Result<ResolvedConfig, String>, Error> {
    let config = &rollout.spec.config;
    let ns = rollout.namespace().unwrap_or_default();
    match (&config.data, &config.source_ref, config.kind) {
        (Some(_), _, ConfigKind::Secret) => Ok(Err(
            "a Secret is rolled out from sourceRef only: inline data would put secret values in the ConfigRollout".into(),
        )),
        (Some(data), _, ConfigKind::ConfigMap) => Ok(Ok(ResolvedConfig {
            kind: ConfigKind::ConfigMap,
            data: data.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect(),
        })),
        (None, Some(source), ConfigKind::ConfigMap) => {
            let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
            let found = api
                .get_opt(&source.name)
                .await
                .map_err(|e| Error::kube("read source ConfigMap", e))?;
            Ok(match found {
                None => Err(format!("source ConfigMap {ns}/{} not found", source.name)),
                Some(cm) => {
                    let t = ObservedTarget::from_config_map(&cm, &ctx.settings.revision_key);
                    Ok(ResolvedConfig {
                        kind: ConfigKind::ConfigMap,
                        data: t.snapshot.bytes(ConfigKind::ConfigMap),
                    })
                }
            })
        }
        (None, Some(source), ConfigKind::Secret) => {
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            let found = api.get_opt(&source.name).await.map_err(|e| Error::kube("read source Secret", e))?;
            Ok(match found {
                None => Err(format!("source Secret {ns}/{} not found", source.name)),
                Some(s) => Ok(ResolvedConfig {
                    kind: ConfigKind::Secret,
                    data: s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect(),
                }),
            })
        }
        (None, None, _) => Ok(Err("spec.config sets neither data nor sourceRef".into())),
    }
}

/// Namespaces any ring could resolve to: recorded targets, explicit lists and selector matches.
pub fn candidate_namespaces(
    rollout: &ConfigRollout,
    namespaces: &[NamespaceInfo],
) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = rollout
        .status
        .iter()
        .flat_map(|s| &s.rings)
        .flat_map(|r| r.targets.iter().cloned())
        .collect();
    for ring in &rollout.spec.rings {
        out.extend(ring.namespaces.iter().flatten().cloned());
        if let Some(selector) = ring
            .namespace_selector
            .clone()
            .and_then(|s| Selector::try_from(s).ok())
        {
            out.extend(
                namespaces
                    .iter()
                    .filter(|n| selector.matches(&n.labels))
                    .map(|n| n.name.clone()),
            );
        }
    }
    out
}

fn namespaces(ctx: &Context) -> Vec<NamespaceInfo> {
    let mut out: Vec<NamespaceInfo> = ctx
        .namespaces
        .state()
        .iter()
        .map(|ns| NamespaceInfo {
            name: ns.name_any(),
            labels: ns.labels().clone(),
            terminating: ns.metadata.deletion_timestamp.is_some(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

async fn list_targets(
    ctx: &Context,
    rollout: &ConfigRollout,
) -> Result<BTreeMap<String, ObservedTarget>, Error> {
    let lp = ListParams::default().fields(&format!("metadata.name={}", rollout.spec.config.name));
    let pairs: Vec<(String, ObservedTarget)> = match rollout.spec.config.kind {
        ConfigKind::ConfigMap => Api::<ConfigMap>::all(ctx.client.clone())
            .list(&lp)
            .await
            .map_err(|e| Error::kube("list targets", e))?
            .items
            .iter()
            .filter(|cm| cm.name_any() == rollout.spec.config.name)
            .map(|cm| {
                (
                    cm.namespace().unwrap_or_default(),
                    ObservedTarget::from_config_map(cm, &ctx.settings.revision_key),
                )
            })
            .collect(),
        ConfigKind::Secret => Api::<Secret>::all(ctx.client.clone())
            .list(&lp)
            .await
            .map_err(|e| Error::kube("list targets", e))?
            .items
            .iter()
            .filter(|s| s.name_any() == rollout.spec.config.name)
            .map(|s| {
                (
                    s.namespace().unwrap_or_default(),
                    ObservedTarget::from_secret(s, &ctx.settings.revision_key),
                )
            })
            .collect(),
    };
    Ok(pairs.into_iter().collect())
}

/// Whether the rollout `namespace/name` exists.
async fn rollout_exists(ctx: &Context, key: &str) -> Result<bool, Error> {
    let Some((ns, name)) = key.split_once('/') else {
        return Ok(false);
    };
    let watched = ctx.watch_namespace.as_deref().is_none_or(|w| w == ns);
    if watched {
        return Ok(ctx.rollouts.get(&ObjectRef::new(name).within(ns)).is_some());
    }
    let api: Api<ConfigRollout> = Api::namespaced(ctx.client.clone(), ns);
    Ok(api
        .get_metadata_opt(name)
        .await
        .map_err(|e| Error::kube("look up claiming rollout", e))?
        .is_some())
}

/// Everything the engine needs, except gate results.
pub async fn observe(ctx: &Context, rollout: &ConfigRollout) -> Result<Observed, Error> {
    let key = rollout_key(rollout);
    let config = resolve_config(ctx, rollout).await?;
    let namespaces = namespaces(ctx);
    let candidates = candidate_namespaces(rollout, &namespaces);
    let targets = list_targets(ctx, rollout).await?;
    let priors = PriorStore::new(ctx.client.clone(), rollout)?.load().await?;

    let mut target_states: BTreeMap<String, TargetState> = candidates
        .iter()
        .map(|ns| (ns.clone(), TargetState::default()))
        .collect();
    let mut claimed_by_others = BTreeMap::new();
    for (ns, target) in &targets {
        target_states.insert(ns.clone(), target.state());
        if let Some(other) = target.rollout.as_deref().filter(|o| *o != key)
            && rollout_exists(ctx, other).await?
        {
            claimed_by_others.insert(ns.clone(), other.to_string());
        }
    }

    let workloads = match &rollout.spec.workloads {
        Some(w) => workloads::observe(&ctx.client, &w.selector, &candidates).await?,
        None => BTreeMap::new(),
    };

    let world = World {
        config: Some(config),
        namespaces,
        targets: target_states,
        priors: priors
            .targets
            .iter()
            .map(|(ns, e)| (ns.clone(), e.record()))
            .collect(),
        workloads,
        claimed_by_others,
        gate_results: Vec::new(),
        gate_credentials: BTreeMap::new(),
    };
    Ok(Observed {
        world,
        targets,
        priors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConfigRolloutSpec;
    use serde_json::json;

    #[test]
    fn candidates_cover_lists_selectors_and_recorded_targets() {
        let spec: ConfigRolloutSpec = serde_json::from_value(json!({
            "config": {"name": "flags", "data": {"a": "1"}},
            "rings": [
                {"name": "canary", "namespaces": ["cell-1"]},
                {"name": "broad", "namespaceSelector": {"matchLabels": {"ring": "broad"}}},
            ],
        }))
        .unwrap();
        let mut rollout = ConfigRollout::new("r", spec);
        rollout.status = Some(
            serde_json::from_value(
                json!({"rings": [{"name": "old", "phase": "Promoted", "targets": ["cell-0"]}]}),
            )
            .unwrap(),
        );
        let ns = |name: &str, ring: &str| NamespaceInfo {
            name: name.into(),
            labels: BTreeMap::from([("ring".to_string(), ring.to_string())]),
            terminating: false,
        };
        let got = candidate_namespaces(&rollout, &[ns("cell-2", "broad"), ns("cell-3", "other")]);
        assert_eq!(
            got,
            BTreeSet::from(["cell-0".into(), "cell-1".into(), "cell-2".into()])
        );
    }
}
