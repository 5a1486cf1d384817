//! Ring resolution: which namespaces each ring targets, label selectors, and
//! whether this rollout may write there at all.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};

use super::invalid::Invalid;
use super::model::{ClusterInfo, NamespaceInfo, Settings, World, split_target, target_key};
use crate::api::{
    ALLOW_FROM_LABEL, CLUSTER_LABEL, ConfigRolloutSpec, LOCAL_CLUSTER, Ring, RingStatus,
};

/// One ring's targets as resolved when a revision starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResolvedRing {
    pub name: String,
    pub targets: Vec<String>,
    /// Namespaces this ring selected that an earlier ring already holds.
    pub duplicates: Vec<String>,
    /// Selected namespaces being deleted: never targets.
    pub terminating: Vec<String>,
    /// Listed namespaces that do not exist.
    pub missing: Vec<String>,
}

impl ResolvedRing {
    pub fn from_status(ring: &RingStatus) -> Self {
        Self {
            name: ring.name.clone(),
            targets: ring.targets.clone(),
            duplicates: ring.duplicates.clone(),
            terminating: Vec::new(),
            missing: Vec::new(),
        }
    }
}

/// Resolves every ring against the namespaces that exist now, in each of its clusters. A
/// namespace belongs to the first ring that selects it; terminating namespaces are never
/// targets. Explicitly listed namespaces or clusters that do not exist, clusters that
/// cannot be reached (their namespaces are unknown), and rings left with no target, make
/// the spec invalid: nothing is written for a ring that cannot be what its author meant.
pub(crate) fn resolve(
    spec: &ConfigRolloutSpec,
    world: &World,
) -> Result<Vec<ResolvedRing>, Invalid> {
    for ring in &spec.rings {
        for cluster in ring_clusters(ring, &world.clusters)?.into_iter().flatten() {
            if let Some(why) = world.cluster_unreachable(&cluster) {
                return Err(Invalid::new(
                    "ClusterUnreachable",
                    format!(
                        "ring {}: {why}; its namespaces cannot be resolved until it answers",
                        ring.name
                    ),
                ));
            }
        }
    }
    let rings = select(spec, world)?;
    let missing: Vec<&str> = rings
        .iter()
        .flat_map(|r| &r.missing)
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(Invalid::new(
            "NamespaceNotFound",
            format!("listed namespaces do not exist: {}", missing.join(", ")),
        ));
    }
    if let Some(empty) = rings.iter().find(|r| r.targets.is_empty()) {
        let message = if empty.duplicates.is_empty() {
            format!("ring {} selects no namespace", empty.name)
        } else {
            format!(
                "ring {} has no target: every namespace it selects belongs to an earlier ring ({})",
                empty.name,
                empty.duplicates.join(", ")
            )
        };
        return Err(Invalid::new("NoTargets", message));
    }
    Ok(rings)
}

/// The clusters a ring's namespaces are in (None: local), in the order listed, or by name
/// for a selector. A listed cluster that is not registered makes the spec invalid.
pub(crate) fn ring_clusters(
    ring: &Ring,
    clusters: &BTreeMap<String, ClusterInfo>,
) -> Result<Vec<Option<String>>, Invalid> {
    if let Some(selector) = &ring.cluster_selector {
        let selector = parse_selector(selector)
            .map_err(|e| invalid_selector(&ring.name, &format!("clusterSelector: {e}")))?;
        return Ok(clusters
            .iter()
            .filter(|(_, c)| selector.matches(&c.labels))
            .map(|(name, _)| Some(name.clone()))
            .collect());
    }
    let Some(list) = &ring.clusters else {
        return Ok(vec![None]);
    };
    let mut out: Vec<Option<String>> = Vec::new();
    let mut unknown = Vec::new();
    for name in list {
        let cluster = (name != LOCAL_CLUSTER).then(|| name.clone());
        if out.contains(&cluster) {
            continue;
        }
        if cluster.is_some() && !clusters.contains_key(name) {
            unknown.push(name.as_str());
        }
        out.push(cluster);
    }
    if !unknown.is_empty() {
        return Err(Invalid::new(
            "ClusterNotFound",
            format!(
                "ring {}: clusters {} are not registered (a Secret labelled {CLUSTER_LABEL}=true in the operator's namespace registers one)",
                ring.name,
                unknown.join(", ")
            ),
        ));
    }
    Ok(out)
}

/// What each ring selects, with what it cannot target and why; only a malformed
/// selector or an unknown cluster is an error here.
pub(crate) fn select(
    spec: &ConfigRolloutSpec,
    world: &World,
) -> Result<Vec<ResolvedRing>, Invalid> {
    let by_name: BTreeMap<&str, &NamespaceInfo> = world
        .namespaces
        .iter()
        .map(|ns| (ns.name.as_str(), ns))
        .collect();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut rings = Vec::with_capacity(spec.rings.len());
    for ring in &spec.rings {
        let mut missing = Vec::new();
        let mut selected: Vec<&NamespaceInfo> = Vec::new();
        let namespace_selector = match &ring.namespace_selector {
            Some(s) => Some(parse_selector(s).map_err(|e| invalid_selector(&ring.name, &e))?),
            None => None,
        };
        for cluster in ring_clusters(ring, &world.clusters)? {
            let cluster = cluster.as_deref();
            if let Some(list) = &ring.namespaces {
                let mut seen = BTreeSet::new();
                for name in list {
                    if !seen.insert(name.as_str()) {
                        continue;
                    }
                    let key = target_key(cluster, name);
                    match by_name.get(key.as_str()) {
                        Some(ns) => selected.push(*ns),
                        None => missing.push(key),
                    }
                }
            } else if let Some(selector) = &namespace_selector {
                selected.extend(
                    by_name
                        .values()
                        .filter(|ns| {
                            ns.cluster.as_deref() == cluster && selector.matches(&ns.labels)
                        })
                        .copied(),
                );
            }
        }
        let mut targets = Vec::new();
        let mut duplicates = Vec::new();
        let mut terminating = Vec::new();
        for ns in selected {
            if ns.terminating {
                terminating.push(ns.name.clone());
            } else if taken.contains(&ns.name) {
                duplicates.push(ns.name.clone());
            } else {
                taken.insert(ns.name.clone());
                targets.push(ns.name.clone());
            }
        }
        rings.push(ResolvedRing {
            name: ring.name.clone(),
            targets,
            duplicates,
            terminating,
            missing,
        });
    }
    Ok(rings)
}

/// Checks every selector in the spec so a malformed one is reported even
/// while a recorded layout is in use.
pub(crate) fn check_selectors(spec: &ConfigRolloutSpec) -> Result<(), Invalid> {
    for ring in &spec.rings {
        if let Some(selector) = &ring.namespace_selector {
            parse_selector(selector).map_err(|e| invalid_selector(&ring.name, &e))?;
        }
        if let Some(selector) = &ring.cluster_selector {
            parse_selector(selector)
                .map_err(|e| invalid_selector(&ring.name, &format!("clusterSelector: {e}")))?;
        }
        if ring.namespaces.is_none() && ring.namespace_selector.is_none() {
            return Err(Invalid::new(
                "InvalidRing",
                format!(
                    "ring {} sets neither namespaces nor namespaceSelector",
                    ring.name
                ),
            ));
        }
    }
    Ok(())
}

fn invalid_selector(ring: &str, error: &str) -> Invalid {
    Invalid::new("InvalidSelector", format!("ring {ring}: {error}"))
}

/// A selector as kube-core matches it, with Kubernetes semantics: every
/// `matchLabels` entry and every expression must hold, and an empty selector
/// matches everything. Its shape is checked first: kube-core accepts `In` with
/// an empty list (matching nothing) and values on `Exists`, which the API server
/// refuses, and its errors name neither the key nor the operator.
pub(crate) fn parse_selector(selector: &LabelSelector) -> Result<Selector, String> {
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(format!(
                    "operator {} on {} needs values",
                    expr.operator, expr.key
                ));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(format!(
                    "operator {} on {} takes no values",
                    expr.operator, expr.key
                ));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => return Err(format!("unknown selector operator {other:?}")),
        }
    }
    Selector::try_from(selector.clone()).map_err(|e| e.to_string())
}

/// The namespaces a rollout can concern: those its rings list or select, those
/// its status's rings hold and those it holds prior records in. The controller
/// observes only these, and maps namespace events to rollouts by them.
#[derive(Debug)]
pub(crate) struct Scope<'a> {
    /// Target keys named explicitly.
    named: BTreeSet<String>,
    /// Namespaces listed by rings whose clusters are chosen by a selector, in any cluster.
    listed_anywhere: BTreeSet<&'a str>,
    /// The rings' selectors that parse: a malformed one (the spec is invalid) selects nothing.
    selectors: Vec<Selector>,
}

impl<'a> Scope<'a> {
    pub fn new(
        spec: &'a ConfigRolloutSpec,
        rings: &'a [RingStatus],
        recorded: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut named: BTreeSet<String> = rings
            .iter()
            .flat_map(|r| &r.targets)
            .map(String::clone)
            .chain(recorded.into_iter().map(str::to_string))
            .collect();
        let mut listed_anywhere = BTreeSet::new();
        for ring in &spec.rings {
            let Some(list) = &ring.namespaces else {
                continue;
            };
            if ring.cluster_selector.is_some() {
                listed_anywhere.extend(list.iter().map(String::as_str));
                continue;
            }
            let clusters: Vec<Option<&str>> = match &ring.clusters {
                None => vec![None],
                Some(cs) => cs
                    .iter()
                    .map(|c| (c != LOCAL_CLUSTER).then_some(c.as_str()))
                    .collect(),
            };
            for cluster in clusters {
                named.extend(list.iter().map(|ns| target_key(cluster, ns)));
            }
        }
        let selectors = spec
            .rings
            .iter()
            .filter_map(|r| r.namespace_selector.as_ref())
            .filter_map(|s| parse_selector(s).ok())
            .collect();
        Self {
            named,
            listed_anywhere,
            selectors,
        }
    }

    /// The target keys named explicitly: listed by a ring, a ring's target in status, or
    /// holding a prior record. They need not exist.
    pub fn named(&self) -> &BTreeSet<String> {
        &self.named
    }

    /// Whether the namespace with target key `key` and `labels` is in scope.
    pub fn contains(&self, key: &str, labels: &BTreeMap<String, String>) -> bool {
        self.named.contains(key)
            || self.listed_anywhere.contains(split_target(key).1)
            || self.selectors.iter().any(|s| s.matches(labels))
    }
}

/// The namespaces the spec's rings list by name.
pub(crate) fn listed(spec: &ConfigRolloutSpec) -> impl Iterator<Item = &String> {
    spec.rings
        .iter()
        .flat_map(|r| r.namespaces.iter().flatten())
}

/// The confused-deputy guard: a rollout may write into its own namespace, into
/// namespaces labelled `ringfence.dev/allow-from=<its namespace>`, into a member cluster
/// whose cluster Secret carries that label, or anywhere when its namespace is trusted by
/// the operator's settings. Namespaces that no longer exist, and clusters no longer
/// registered, are not checked: nothing is written there.
pub(crate) fn check_permitted(
    rings: &[ResolvedRing],
    rollout_namespace: &str,
    world: &World,
    settings: &Settings,
) -> Result<(), Invalid> {
    if settings.trusted_namespaces.contains(rollout_namespace) {
        return Ok(());
    }
    let by_name: BTreeMap<&str, &NamespaceInfo> = world
        .namespaces
        .iter()
        .map(|ns| (ns.name.as_str(), ns))
        .collect();
    let mut clusters: BTreeSet<&str> = BTreeSet::new();
    let mut namespaces: Vec<&str> = Vec::new();
    for target in rings.iter().flat_map(|r| r.targets.iter()) {
        match split_target(target).0 {
            Some(cluster) => {
                if world
                    .clusters
                    .get(cluster)
                    .is_some_and(|c| !cluster_permitted(c, rollout_namespace, settings))
                {
                    clusters.insert(cluster);
                }
            }
            None => {
                if by_name
                    .get(target.as_str())
                    .is_some_and(|ns| !permitted(ns, rollout_namespace, &world.clusters, settings))
                {
                    namespaces.push(target);
                }
            }
        }
    }
    if clusters.is_empty() && namespaces.is_empty() {
        return Ok(());
    }
    let mut parts = Vec::new();
    if !namespaces.is_empty() {
        parts.push(format!(
            "namespaces {} do not allow rollouts from {rollout_namespace} (label them {ALLOW_FROM_LABEL}={rollout_namespace})",
            namespaces.join(", ")
        ));
    }
    if !clusters.is_empty() {
        parts.push(format!(
            "clusters {} do not allow rollouts from {rollout_namespace} (label their cluster Secrets {ALLOW_FROM_LABEL}={rollout_namespace})",
            clusters.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    Err(Invalid::new("TargetNotPermitted", parts.join("; ")))
}

/// Checks the spec's named and selected clusters before any of them is resolved, so a
/// cluster the rollout may not target is refused even while it cannot be reached.
pub(crate) fn check_clusters_permitted(
    spec: &ConfigRolloutSpec,
    rollout_namespace: &str,
    clusters: &BTreeMap<String, ClusterInfo>,
    settings: &Settings,
) -> Result<(), Invalid> {
    let mut denied = BTreeSet::new();
    for ring in &spec.rings {
        for cluster in ring_clusters(ring, clusters)?.into_iter().flatten() {
            if clusters
                .get(&cluster)
                .is_some_and(|c| !cluster_permitted(c, rollout_namespace, settings))
            {
                denied.insert(cluster);
            }
        }
    }
    if denied.is_empty() {
        return Ok(());
    }
    Err(Invalid::new(
        "TargetNotPermitted",
        format!(
            "clusters {} do not allow rollouts from {rollout_namespace} (label their cluster Secrets {ALLOW_FROM_LABEL}={rollout_namespace})",
            denied.into_iter().collect::<Vec<_>>().join(", ")
        ),
    ))
}

fn cluster_permitted(cluster: &ClusterInfo, rollout_namespace: &str, settings: &Settings) -> bool {
    settings.trusted_namespaces.contains(rollout_namespace)
        || cluster.allow_from.as_deref() == Some(rollout_namespace)
}

/// Whether a rollout in `rollout_namespace` may write into `ns`: in a member cluster, as
/// its cluster Secret allows.
pub(crate) fn permitted(
    ns: &NamespaceInfo,
    rollout_namespace: &str,
    clusters: &BTreeMap<String, ClusterInfo>,
    settings: &Settings,
) -> bool {
    if let Some(cluster) = &ns.cluster {
        return clusters
            .get(cluster)
            .is_some_and(|c| cluster_permitted(c, rollout_namespace, settings));
    }
    settings.trusted_namespaces.contains(rollout_namespace)
        || ns.name == rollout_namespace
        || ns.labels.get(ALLOW_FROM_LABEL).map(String::as_str) == Some(rollout_namespace)
}

/// Targets another ConfigRollout already manages are never taken over.
pub(crate) fn check_unclaimed(
    rings: &[ResolvedRing],
    claimed_by_others: &BTreeMap<String, String>,
) -> Result<(), Invalid> {
    let conflicts: Vec<String> = rings
        .iter()
        .flat_map(|r| r.targets.iter())
        .filter_map(|target| {
            claimed_by_others
                .get(target)
                .map(|owner| format!("{target} (managed by {owner})"))
        })
        .collect();
    if conflicts.is_empty() {
        return Ok(());
    }
    Err(Invalid::new(
        "TargetConflict",
        format!(
            "targets already managed by another rollout: {}",
            conflicts.join(", ")
        ),
    ))
}

/// A namespace that still exists and is not being deleted: the only kind written or restored.
pub(crate) fn alive_namespaces(namespaces: &[NamespaceInfo]) -> BTreeSet<&str> {
    namespaces
        .iter()
        .filter(|ns| !ns.terminating)
        .map(|ns| ns.name.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;
    use crate::engine::testkit::{ns, ns_labelled, selector, spec_with_rings, test_key};

    fn world(namespaces: Vec<NamespaceInfo>) -> World {
        World {
            namespaces,
            ..World::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if values.is_empty() {
                None
            } else {
                Some(values.iter().map(|v| v.to_string()).collect())
            },
        }
    }

    #[test]
    fn selector_follows_kubernetes_semantics() {
        let l = labels(&[("ring", "early"), ("tier", "gold")]);
        let sel =
            |match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>| LabelSelector {
                match_labels: if match_labels.is_empty() {
                    None
                } else {
                    Some(labels(match_labels))
                },
                match_expressions: if exprs.is_empty() { None } else { Some(exprs) },
            };
        let matches = |selector: LabelSelector| parse_selector(&selector).map(|s| s.matches(&l));
        assert_eq!(matches(sel(&[], vec![])), Ok(true));
        assert_eq!(matches(sel(&[("ring", "early")], vec![])), Ok(true));
        assert_eq!(matches(sel(&[("ring", "broad")], vec![])), Ok(false));
        assert_eq!(
            matches(sel(&[], vec![expr("tier", "In", &["gold", "x"])])),
            Ok(true)
        );
        assert_eq!(
            matches(sel(&[], vec![expr("tier", "NotIn", &["gold"])])),
            Ok(false)
        );
        assert_eq!(
            matches(sel(&[], vec![expr("zone", "NotIn", &["a"])])),
            Ok(true)
        );
        assert_eq!(
            matches(sel(&[], vec![expr("zone", "Exists", &[])])),
            Ok(false)
        );
        assert_eq!(
            matches(sel(&[], vec![expr("zone", "DoesNotExist", &[])])),
            Ok(true)
        );
        assert!(matches(sel(&[], vec![expr("zone", "Near", &[])])).is_err());
        assert!(matches(sel(&[], vec![expr("zone", "In", &[])])).is_err());
        // kube-core alone would take these two; the API server refuses them.
        let empty_in = LabelSelectorRequirement {
            values: Some(Vec::new()),
            ..expr("zone", "In", &[])
        };
        assert!(matches(sel(&[], vec![empty_in])).is_err());
        assert!(matches(sel(&[], vec![expr("zone", "Exists", &["a"])])).is_err());
    }

    #[test]
    fn malformed_selector_is_invalid_and_names_the_ring() {
        let mut spec = spec_with_rings(&[("canary", &["a"]), ("broad", &[])]);
        spec.rings[1].namespaces = None;
        spec.rings[1].namespace_selector = Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![expr("zone", "Near", &[])]),
        });
        let err = check_selectors(&spec).unwrap_err();
        assert_eq!(err.reason, "InvalidSelector");
        assert!(err.message.starts_with("ring broad: "), "{}", err.message);
        let err = resolve(&spec, &world(vec![ns("a")])).unwrap_err();
        assert_eq!(err.reason, "InvalidSelector");
    }

    #[test]
    fn scope_covers_lists_selectors_status_targets_and_records() {
        let mut spec = spec_with_rings(&[("canary", &["cell-1"]), ("broad", &[])]);
        spec.rings[1].namespaces = None;
        spec.rings[1].namespace_selector = Some(selector(&[("ring", "broad")]));
        let rings = vec![RingStatus {
            name: "old".into(),
            targets: vec!["cell-0".into()],
            ..RingStatus::default()
        }];
        let scope = Scope::new(&spec, &rings, ["cell-9"]);
        assert_eq!(
            scope.named(),
            &BTreeSet::from(["cell-0".to_string(), "cell-1".into(), "cell-9".into()])
        );
        let none = BTreeMap::new();
        for name in ["cell-0", "cell-1", "cell-9"] {
            assert!(scope.contains(name, &none), "{name}");
        }
        assert!(scope.contains("cell-2", &labels(&[("ring", "broad")])));
        assert!(!scope.contains("cell-3", &labels(&[("ring", "other")])));
        assert!(!scope.contains("cell-3", &none));
    }

    #[test]
    fn malformed_selector_puts_nothing_in_scope() {
        let mut spec = spec_with_rings(&[("broad", &[])]);
        spec.rings[0].namespaces = None;
        spec.rings[0].namespace_selector = Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![expr("ring", "In", &[])]),
        });
        let scope = Scope::new(&spec, &[], []);
        assert!(scope.named().is_empty());
        assert!(!scope.contains("cell-1", &labels(&[("ring", "broad")])));
        assert!(!scope.contains("cell-1", &BTreeMap::new()));
    }

    #[test]
    fn first_ring_wins_and_duplicates_are_reported() {
        let spec = spec_with_rings(&[("canary", &["a"]), ("rest", &["a", "b"])]);
        let rings = resolve(&spec, &world(vec![ns("a"), ns("b")])).unwrap();
        assert_eq!(rings[0].targets, vec!["a"]);
        assert_eq!(rings[1].targets, vec!["b"]);
        assert_eq!(rings[1].duplicates, vec!["a"]);
    }

    #[test]
    fn terminating_namespaces_are_not_targets() {
        let spec = spec_with_rings(&[("canary", &["a", "b"])]);
        let mut b = ns("b");
        b.terminating = true;
        let rings = resolve(&spec, &world(vec![ns("a"), b])).unwrap();
        assert_eq!(rings[0].targets, vec!["a"]);
    }

    #[test]
    fn ring_with_zero_targets_is_invalid() {
        let spec = spec_with_rings(&[("canary", &["a"]), ("rest", &["a"])]);
        let err = resolve(&spec, &world(vec![ns("a")])).unwrap_err();
        assert_eq!(err.reason, "NoTargets");
        assert!(err.message.contains("rest"));
    }

    #[test]
    fn missing_listed_namespace_is_invalid() {
        let spec = spec_with_rings(&[("canary", &["a", "ghost"])]);
        let err = resolve(&spec, &world(vec![ns("a")])).unwrap_err();
        assert_eq!(err.reason, "NamespaceNotFound");
        assert!(err.message.contains("ghost"));
    }

    #[test]
    fn permission_own_namespace_allow_label_or_trusted() {
        let rings = vec![ResolvedRing {
            name: "r".into(),
            targets: vec!["platform".into(), "cell-a".into(), "cell-b".into()],
            duplicates: vec![],
            terminating: vec![],
            missing: vec![],
        }];
        let namespaces = world(vec![
            ns("platform"),
            ns_labelled("cell-a", &[(ALLOW_FROM_LABEL, "platform")]),
            ns_labelled("cell-b", &[(ALLOW_FROM_LABEL, "other")]),
        ]);
        let err = check_permitted(&rings, "platform", &namespaces, &Settings::new(test_key()))
            .unwrap_err();
        assert_eq!(err.reason, "TargetNotPermitted");
        assert!(err.message.contains("cell-b") && !err.message.contains("cell-a,"));
        let trusted = Settings {
            trusted_namespaces: ["platform".to_string()].into(),
            ..Settings::new(test_key())
        };
        assert!(check_permitted(&rings, "platform", &namespaces, &trusted).is_ok());
    }
}
