//! Observe: build the engine's [`World`] with few requests per reconcile, none of which grows
//! with the fleet: the rollout's source, and the workloads of its target namespaces when it
//! has workloads. Namespaces, targets and prior records come from the watch caches.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::ListParams;
use kube::core::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, ResourceExt};

use super::context::Context;
use super::error::Error;
use super::members;
use super::observed::{ObservedTarget, Snapshot, list_targets};
use super::priors::{PriorStore, Priors, RecordMeta};
use super::workloads;
use crate::api::{ConfigKind, ConfigRollout, ConfigRolloutStatus, ValidationRule};
use crate::engine::{
    NamespaceInfo, ResolvedConfig, RevisionKey, Scope, TargetState, World, split_target, target_key,
};
use crate::validation::data::RULES_KEY;

/// The world, plus the prior records the actions need.
pub struct Observed {
    pub world: World,
    pub priors: Priors,
    /// The persisted status, with the rings' targets filled in from the layout records.
    pub status: ConfigRolloutStatus,
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
    client: &Client,
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
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            let found = api
                .get_opt(&source.name)
                .await
                .map_err(|e| Error::kube("read source ConfigMap", e))?;
            Ok(match found {
                None => Err(format!("source ConfigMap {ns}/{} not found", source.name)),
                Some(cm) => Ok(ResolvedConfig {
                    kind: ConfigKind::ConfigMap,
                    data: Snapshot::of_config_map(&cm).bytes(ConfigKind::ConfigMap),
                }),
            })
        }
        (None, Some(source), ConfigKind::Secret) => {
            let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
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

/// Reads the rules of `spec.config.validationRef`: a YAML list under [`RULES_KEY`] of a
/// ConfigMap in the rollout's namespace. None when the rollout has no `validationRef`.
pub async fn resolve_validation(
    client: &Client,
    rollout: &ConfigRollout,
) -> Result<Option<Result<Vec<ValidationRule>, String>>, Error> {
    let Some(reference) = &rollout.spec.config.validation_ref else {
        return Ok(None);
    };
    let ns = rollout.namespace().unwrap_or_default();
    let found = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get_opt(&reference.name)
        .await
        .map_err(|e| Error::kube("read validation ConfigMap", e))?;
    Ok(Some(match found {
        None => Err(format!("ConfigMap {ns}/{} not found", reference.name)),
        Some(cm) => parse_rules(cm.data.as_ref().and_then(|d| d.get(RULES_KEY))),
    }))
}

fn parse_rules(text: Option<&String>) -> Result<Vec<ValidationRule>, String> {
    let text = text.ok_or_else(|| format!("it has no key {RULES_KEY}"))?;
    serde_saphyr::from_str(text).map_err(|e| {
        format!(
            "{RULES_KEY} is not a list of rules: {}",
            e.without_snippet()
        )
    })
}

/// Namespaces any ring could resolve to: recorded targets, explicit lists and selector matches.
pub fn candidate_namespaces(
    rollout: &ConfigRollout,
    status: &ConfigRolloutStatus,
    namespaces: &[NamespaceInfo],
) -> BTreeSet<String> {
    let scope = Scope::new(&rollout.spec, &status.rings, []);
    let selected = namespaces
        .iter()
        .filter(|n| scope.contains(&n.name, &n.labels))
        .map(|n| n.name.as_str());
    scope
        .named()
        .iter()
        .map(String::as_str)
        .chain(selected)
        .map(str::to_string)
        .collect()
}

/// The namespaces this rollout can concern, in the hub and in every member: those its
/// rings list or select, those its layout holds and those it holds records in. Only these
/// are copied out of the caches, so a reconcile does not cost a copy of every namespace
/// in a large fleet.
fn namespaces(
    ctx: &Context,
    rollout: &ConfigRollout,
    status: &ConfigRolloutStatus,
    recorded: &BTreeMap<String, RecordMeta>,
) -> Vec<NamespaceInfo> {
    let scope = Scope::new(
        &rollout.spec,
        &status.rings,
        recorded.keys().map(String::as_str),
    );
    let mut out: Vec<NamespaceInfo> = ctx
        .namespaces
        .state()
        .iter()
        .filter(|ns| scope.contains(ns.metadata.name.as_deref().unwrap_or_default(), ns.labels()))
        .map(|ns| namespace_info(&ns.metadata))
        .collect();
    out.extend(
        ctx.fleet
            .namespaces(|ns| scope.contains(&ns.name, &ns.labels)),
    );
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn namespace_info(meta: &ObjectMeta) -> NamespaceInfo {
    NamespaceInfo {
        name: meta.name.clone().unwrap_or_default(),
        cluster: None,
        labels: meta.labels.clone().unwrap_or_default(),
        terminating: meta.deletion_timestamp.is_some(),
    }
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
    rollout_exists_in_api(&ctx.client, ns, name).await
}

async fn rollout_exists_in_api(client: &Client, ns: &str, name: &str) -> Result<bool, Error> {
    let api: Api<ConfigRollout> = Api::namespaced(client.clone(), ns);
    Ok(api
        .get_metadata_opt(name)
        .await
        .map_err(|e| Error::kube("look up claiming rollout", e))?
        .is_some())
}

/// What a new revision of `rollout` would start from, read from the API rather than
/// from watch caches: a world without priors or gate results, and the current data of
/// each existing target by target key (for a diff; a Secret's is decoded bytes). Member
/// clusters are read through the cluster Secrets in `cluster_namespace`, when a ring
/// names clusters.
pub async fn observe_uncached(
    client: &Client,
    rollout: &ConfigRollout,
    revision_key: &RevisionKey,
    cluster_namespace: &str,
) -> Result<(World, BTreeMap<String, BTreeMap<String, Vec<u8>>>), Error> {
    let key = rollout_key(rollout);
    let config = resolve_config(client, rollout).await?;
    let validation = resolve_validation(client, rollout).await?;
    let mut namespaces: Vec<NamespaceInfo> = Api::<Namespace>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await
        .map_err(|e| Error::kube("list namespaces", e))?
        .items
        .iter()
        .map(|ns| namespace_info(&ns.metadata))
        .collect();
    let (kind, name) = (rollout.spec.config.kind, &rollout.spec.config.name);
    let multi = rollout
        .spec
        .rings
        .iter()
        .any(|r| r.clusters.is_some() || r.cluster_selector.is_some());
    let mut clusters = BTreeMap::new();
    let mut member_targets: Vec<(String, ObservedTarget)> = Vec::new();
    if multi {
        for member in members::read_members(client, cluster_namespace).await? {
            let mut info = member.info;
            if let Some(c) = &member.client {
                match read_member(c, &member.name, kind, name, revision_key).await {
                    Ok((ns, targets)) => {
                        namespaces.extend(ns);
                        member_targets.extend(targets);
                    }
                    Err(why) => info.unreachable = Some(why),
                }
            }
            clusters.insert(member.name, info);
        }
    }
    namespaces.sort_by(|a, b| a.name.cmp(&b.name));
    let candidates = candidate_namespaces(rollout, &ConfigRolloutStatus::default(), &namespaces);
    // One list of the target's name across namespaces, whatever the number of rings.
    let by_name = ListParams::default().fields(&format!("metadata.name={name}"));
    let found: Vec<(String, ObservedTarget)> = match kind {
        ConfigKind::ConfigMap => Api::<ConfigMap>::all(client.clone())
            .list(&by_name)
            .await
            .map_err(|e| Error::kube("list targets", e))?
            .items
            .iter()
            .map(|cm| {
                (
                    cm.namespace().unwrap_or_default(),
                    ObservedTarget::from_config_map(cm, revision_key),
                )
            })
            .collect(),
        ConfigKind::Secret => Api::<Secret>::all(client.clone())
            .list(&by_name)
            .await
            .map_err(|e| Error::kube("list targets", e))?
            .items
            .iter()
            .map(|s| {
                (
                    s.namespace().unwrap_or_default(),
                    ObservedTarget::from_secret(s, revision_key),
                )
            })
            .collect(),
    };
    let mut targets = BTreeMap::new();
    let mut contents = BTreeMap::new();
    let mut claimed_by_others = BTreeMap::new();
    let found = found.into_iter().chain(member_targets);
    for (ns, target) in found.filter(|(ns, _)| candidates.contains(ns)) {
        if let Some((other_ns, other)) = target
            .rollout
            .as_deref()
            .filter(|o| *o != key)
            .and_then(|o| o.split_once('/'))
            && rollout_exists_in_api(client, other_ns, other).await?
        {
            claimed_by_others.insert(ns.clone(), format!("{other_ns}/{other}"));
        }
        targets.insert(ns.clone(), target.state());
        contents.insert(ns, target.snapshot.bytes(kind));
    }
    let workloads = match &rollout.spec.workloads {
        Some(w) => workloads::observe(client, &w.selector, &candidates).await?,
        None => BTreeMap::new(),
    };
    let world = World {
        config: Some(config),
        validation,
        namespaces,
        clusters,
        targets,
        workloads,
        claimed_by_others,
        ..World::default()
    };
    Ok((world, contents))
}

/// A member's namespaces and targets named `name`, keyed `cluster/namespace`, or why they
/// could not be read.
async fn read_member(
    client: &Client,
    cluster: &str,
    kind: ConfigKind,
    name: &str,
    revision_key: &RevisionKey,
) -> Result<(Vec<NamespaceInfo>, Vec<(String, ObservedTarget)>), String> {
    let namespaces = Api::<Namespace>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await
        .map_err(|e| format!("cluster {cluster} cannot be read: {e}"))?
        .items
        .iter()
        .map(|ns| NamespaceInfo {
            name: target_key(
                Some(cluster),
                ns.metadata.name.as_deref().unwrap_or_default(),
            ),
            cluster: Some(cluster.to_string()),
            ..namespace_info(&ns.metadata)
        })
        .collect();
    let targets = list_targets(client, kind, name, revision_key)
        .await
        .map_err(|e| format!("cluster {cluster} cannot be read: {e}"))?
        .into_iter()
        .map(|(ns, t)| (target_key(Some(cluster), &ns), t))
        .collect();
    Ok((namespaces, targets))
}

/// Everything the engine needs, except gate results.
pub async fn observe(ctx: &Context, rollout: &ConfigRollout) -> Result<Observed, Error> {
    let key = rollout_key(rollout);
    let config = resolve_config(&ctx.client, rollout).await?;
    let validation = resolve_validation(&ctx.client, rollout).await?;
    let (status, layout_missing) = read_layout(ctx, rollout).await?;
    let uid = rollout.uid().unwrap_or_default();
    let priors = PriorStore::new(
        ctx.fleet.clone(),
        rollout,
        ctx.settings.revision_key.clone(),
    )?
    .priors(ctx.cache.records(&uid));
    let namespaces = namespaces(ctx, rollout, &status, &priors.current);
    let candidates = candidate_namespaces(rollout, &status, &namespaces);
    let mut unreadable_priors = priors.unreadable.clone();
    for (ns, (version, why)) in ctx.unreadable_priors(&uid) {
        let same = priors
            .current
            .get(&ns)
            .is_some_and(|r| r.resource_version.as_deref() == Some(version.as_str()));
        if same {
            unreadable_priors.insert(ns, why);
        }
    }

    // Targets of this rollout's rings, and every target it holds a record of (a superseded
    // revision may have written outside today's rings): from the cache, no request.
    let (kind, name) = (rollout.spec.config.kind, &rollout.spec.config.name);
    let mut interest = candidates.clone();
    interest.extend(priors.current.keys().cloned());
    let mut target_states: BTreeMap<String, TargetState> = BTreeMap::new();
    let mut claimed_by_others = BTreeMap::new();
    for ns in &interest {
        // A target of a member not listed yet is unknown, not absent.
        let Some(state) = ctx.fleet.target(kind, ns, name) else {
            continue;
        };
        if let Some(other) = state.rollout.as_deref().filter(|o| *o != key)
            && rollout_exists(ctx, other).await?
        {
            claimed_by_others.insert(ns.clone(), other.to_string());
        }
        target_states.insert(ns.clone(), state);
    }

    let clusters = ctx.fleet.clusters();
    let workloads = match &rollout.spec.workloads {
        Some(w) => fleet_workloads(ctx, &w.selector, &candidates, &clusters).await?,
        None => BTreeMap::new(),
    };

    let world = World {
        config: Some(config),
        validation,
        namespaces,
        clusters,
        targets: target_states,
        priors: priors
            .current
            .iter()
            .filter(|(ns, _)| !unreadable_priors.contains_key(*ns))
            .map(|(ns, r)| (ns.clone(), r.prior.record()))
            .collect(),
        unreadable_priors,
        workloads,
        layout_missing,
        claimed_by_others,
        gate_results: Vec::new(),
        gate_credentials: BTreeMap::new(),
    };
    Ok(Observed {
        world,
        priors,
        status,
    })
}

/// Workloads of the candidate targets, cluster by cluster; a member that cannot be reached
/// is skipped (the engine does not judge its rings while it is so).
async fn fleet_workloads(
    ctx: &Context,
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    candidates: &BTreeSet<String>,
    clusters: &BTreeMap<String, crate::engine::ClusterInfo>,
) -> Result<BTreeMap<String, Vec<crate::engine::WorkloadState>>, Error> {
    let mut by_cluster: BTreeMap<Option<&str>, BTreeSet<String>> = BTreeMap::new();
    for key in candidates {
        let (cluster, ns) = split_target(key);
        by_cluster
            .entry(cluster)
            .or_default()
            .insert(ns.to_string());
    }
    let mut out = BTreeMap::new();
    for (cluster, namespaces) in by_cluster {
        if let Some(c) = cluster
            && clusters.get(c).is_none_or(|i| i.unreachable.is_some())
        {
            continue;
        }
        let Ok(client) = ctx.fleet.client_of(cluster) else {
            continue;
        };
        let found = workloads::observe(&client, selector, &namespaces)
            .await
            .map_err(|e| match (e, cluster) {
                (Error::Kube { action, source }, Some(c)) => Error::Kube {
                    action: format!("{action} in cluster {c}"),
                    source,
                },
                (other, _) => other,
            })?;
        for (ns, list) in found {
            out.insert(target_key(cluster, &ns), list);
        }
    }
    Ok(out)
}

/// The persisted status with every ring's targets read back from the layout records
/// `status.layout` names, or with none and why they could not be read.
async fn read_layout(
    ctx: &Context,
    rollout: &ConfigRollout,
) -> Result<(ConfigRolloutStatus, Option<String>), Error> {
    let mut status = rollout.status.clone().unwrap_or_default();
    let missing = match &status.layout {
        None if status.rings.is_empty() => None,
        None => Some("status names no layout record".to_string()),
        Some(want) => match ctx.layouts.read(&ctx.client, rollout, want).await? {
            Ok(layout) => layout.fill(&mut status).err(),
            Err(why) => Some(why),
        },
    };
    Ok((status, missing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConfigRolloutSpec, RingStatus};
    use serde_json::json;

    #[test]
    fn validation_rules_parse_from_yaml_or_say_why_not() {
        let text = "- key: settings.json\n  format: json\n  schema: {type: object}\n- keyPattern: '*.yaml'\n  format: yaml\n".to_string();
        let rules = parse_rules(Some(&text)).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1].key_pattern.as_deref(), Some("*.yaml"));
        assert_eq!(
            parse_rules(None).unwrap_err(),
            "it has no key validation.yaml"
        );
        let bad = "- key: a\n  format: xml\n".to_string();
        assert!(parse_rules(Some(&bad)).unwrap_err().contains("xml"));
    }

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
        let rollout = ConfigRollout::new("r", spec);
        let status = ConfigRolloutStatus {
            rings: vec![RingStatus {
                name: "old".into(),
                targets: vec!["cell-0".into()],
                ..RingStatus::default()
            }],
            ..ConfigRolloutStatus::default()
        };
        let ns = |name: &str, ring: &str| NamespaceInfo {
            name: name.into(),
            cluster: None,
            labels: BTreeMap::from([("ring".to_string(), ring.to_string())]),
            terminating: false,
        };
        let got = candidate_namespaces(
            &rollout,
            &status,
            &[ns("cell-2", "broad"), ns("cell-3", "other")],
        );
        assert_eq!(
            got,
            BTreeSet::from(["cell-0".into(), "cell-1".into(), "cell-2".into()])
        );
    }
}
