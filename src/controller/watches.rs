//! The watches that re-trigger a rollout, and which rollouts each event concerns.
//!
//! Metadata only where the cache does not need the data, to keep memory flat:
//! - targets (ConfigMaps and Secrets labelled `app.kubernetes.io/managed-by=ringfence`),
//!   mapped back through their `ringfence.dev/rollout` annotation, and prior records; both
//!   feed the cache;
//! - source objects in the watched scope, mapped to rollouts whose `sourceRef` or
//!   `validationRef` names them;
//! - Deployments, StatefulSets and DaemonSets, mapped to rollouts whose workload selector
//!   matches them in one of their target namespaces;
//! - namespaces (also cached for their labels), mapped to rollouts not yet resolved or
//!   targeting them.

use std::collections::HashSet;
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::core::{
    DeserializeGuard, NamespaceResourceScope, PartialObjectMeta, Selector, SelectorExt,
};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::{ConfigKind, ConfigRollout, ROLLOUT_ANNOTATION, SourceRef};
use crate::engine::{self};

use super::cache;
use super::layout::Layouts;

pub(super) type RolloutStore = Store<DeserializeGuard<ConfigRollout>>;
type Refs = Vec<ObjectRef<DeserializeGuard<ConfigRollout>>>;

/// Resolves once `store` has listed, or false if its writer is gone. A kube store's
/// `wait_until_ready` begun before its watch has started is not always woken when it
/// becomes ready, so the wait is begun afresh every few milliseconds.
pub(crate) async fn store_ready<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(STORE_READY_POLL, store.wait_until_ready()).await {
            Ok(ready) => return ready.is_ok(),
            Err(_) => continue,
        }
    }
}

const STORE_READY_POLL: std::time::Duration = std::time::Duration::from_millis(20);
/// A full-object watch of managed targets that feeds the cache (which keeps only what the
/// engine needs) and triggers their rollouts.
pub(super) fn cached_stream<K>(
    client: &Client,
    config: watcher::Config,
    mut feed: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        .map_ok(move |event| {
            feed(&event);
            event
        })
        .touched_objects()
}

/// A metadata watch of prior records that feeds the cache and triggers their rollouts
/// (a record deleted by hand is noticed at once).
pub(super) fn record_stream<K>(
    client: &Client,
    kind: ConfigKind,
    cache: Arc<cache::Cache>,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<PartialObjectMeta<K>> = Api::all(client.clone());
    let config = watcher::Config::default().labels(crate::api::PRIORS_OF_LABEL);
    let mut first = true;
    watcher(api, config)
        .default_backoff()
        .map_ok(move |event| {
            let metas = match &event {
                watcher::Event::Init => watcher::Event::Init,
                watcher::Event::InitApply(o) => watcher::Event::InitApply(o.metadata.clone()),
                watcher::Event::InitDone => watcher::Event::InitDone,
                watcher::Event::Apply(o) => watcher::Event::Apply(o.metadata.clone()),
                watcher::Event::Delete(o) => watcher::Event::Delete(o.metadata.clone()),
            };
            cache.record_event(kind, &metas, &mut first);
            event
        })
        .touched_objects()
}

pub(super) fn meta_stream<K>(
    client: &Client,
    namespace: Option<&str>,
    config: watcher::Config,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<PartialObjectMeta<K>> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    watcher(api, config).default_backoff().touched_objects()
}

/// A managed target or prior record names its rollout in an annotation.
pub(super) fn by_annotation(
    obj: &impl Resource,
) -> Option<ObjectRef<DeserializeGuard<ConfigRollout>>> {
    let (ns, name) = obj.annotations().get(ROLLOUT_ANNOTATION)?.split_once('/')?;
    Some(ObjectRef::new(name).within(ns))
}

fn refs(store: &RolloutStore, keep: impl Fn(&ConfigRollout) -> bool) -> Refs {
    store
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|r| keep(r))
        .map(|r| ObjectRef::new(&r.name_any()).within(&r.namespace().unwrap_or_default()))
        .collect()
}

pub(super) fn by_source<K: Resource>(
    store: &RolloutStore,
    kind: ConfigKind,
    obj: &PartialObjectMeta<K>,
) -> Refs {
    let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    let names = |s: Option<&SourceRef>| s.is_some_and(|s| s.name == name);
    refs(store, |r| {
        let config = &r.spec.config;
        r.namespace().as_deref() == Some(ns.as_str())
            && ((config.kind == kind && names(config.source_ref.as_ref()))
                || (kind == ConfigKind::ConfigMap && names(config.validation_ref.as_ref()))
                // Labelling a gate's auth Secret may make the rollout valid.
                || (kind == ConfigKind::Secret
                    && r.spec.gates.iter().any(|g| {
                        names(g.prometheus.as_ref().and_then(|p| p.auth_secret_ref.as_ref()))
                    })))
    })
}

/// Whether `r` targets `ns`: its current layout does (from the layout index, not a scan
/// of every rollout's targets), or a ring lists it by name.
fn targets_namespace(
    r: &ConfigRollout,
    ns: &str,
    targeting: &HashSet<ObjectRef<ConfigRollout>>,
) -> bool {
    let ns = engine::split_target(ns).1;
    targeting.contains(&ObjectRef::from_obj(r)) || engine::listed(&r.spec).any(|t| t == ns)
}

pub(super) fn by_workload<K: Resource>(
    store: &RolloutStore,
    layouts: &Layouts,
    obj: &PartialObjectMeta<K>,
) -> Refs {
    by_workload_in(store, layouts, None, obj)
}

/// [`by_workload`] for a workload of `cluster` (None: the hub).
pub(super) fn by_workload_in<K: Resource>(
    store: &RolloutStore,
    layouts: &Layouts,
    cluster: Option<&str>,
    obj: &PartialObjectMeta<K>,
) -> Refs {
    let ns = engine::target_key(cluster, &obj.namespace().unwrap_or_default());
    let targeting: HashSet<_> = layouts.targeting(&ns).into_iter().collect();
    refs(store, |r| {
        r.spec.workloads.as_ref().is_some_and(|w| {
            Selector::try_from(w.selector.clone()).is_ok_and(|s| s.matches(obj.labels()))
        }) && targets_namespace(r, &ns, &targeting)
    })
}

pub(super) fn by_namespace(
    store: &RolloutStore,
    layouts: &Layouts,
    obj: &PartialObjectMeta<Namespace>,
) -> Refs {
    rollouts_of_namespace(store, layouts, &obj.name_any())
}

/// The rollouts a change of the namespace with target key `key` concerns: those not
/// resolved yet and those targeting it.
pub(super) fn rollouts_of_namespace(store: &RolloutStore, layouts: &Layouts, key: &str) -> Refs {
    let targeting: HashSet<_> = layouts.targeting(key).into_iter().collect();
    refs(store, |r| {
        r.status.as_ref().is_none_or(|s| s.rings.is_empty())
            || targets_namespace(r, key, &targeting)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConfigRolloutSpec;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;
    use serde_json::json;
    use std::time::Duration;

    fn store_with(rollouts: Vec<ConfigRollout>) -> RolloutStore {
        let (store, mut writer) = reflector::store::<DeserializeGuard<ConfigRollout>>();
        for r in rollouts {
            writer.apply_watcher_event(&watcher::Event::Apply(DeserializeGuard(Ok(r))));
        }
        store
    }

    fn rollout(ns: &str, name: &str, spec: serde_json::Value) -> ConfigRollout {
        let mut r = ConfigRollout::new(
            name,
            serde_json::from_value::<ConfigRolloutSpec>(spec).unwrap(),
        );
        r.metadata.namespace = Some(ns.into());
        r
    }

    #[test]
    fn triggers_map_back_to_the_right_rollout() {
        let a = rollout(
            "platform",
            "a",
            json!({
                "config": {"name": "flags", "sourceRef": {"name": "src"}},
                "rings": [{"name": "r", "namespaces": ["cell-1"]}],
                "workloads": {"selector": {"matchLabels": {"app": "web"}}},
            }),
        );
        let b = rollout(
            "platform",
            "b",
            json!({"config": {"name": "other", "data": {}, "validationRef": {"name": "rules"}}, "rings": [{"name": "r", "namespaces": ["cell-2"]}]}),
        );
        let store = store_with(vec![a, b]);
        let meta = |ns: &str,
                    name: &str,
                    labels: serde_json::Value,
                    ann: serde_json::Value|
         -> PartialObjectMeta<ConfigMap> {
            serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"namespace": ns, "name": name, "labels": labels, "annotations": ann},
            }))
            .unwrap()
        };
        let target = meta(
            "cell-1",
            "flags",
            json!({}),
            json!({ROLLOUT_ANNOTATION: "platform/a"}),
        );
        assert_eq!(
            by_annotation(&target),
            Some(ObjectRef::new("a").within("platform"))
        );
        assert_eq!(
            by_annotation(&meta(
                "x",
                "y",
                json!({}),
                json!({ROLLOUT_ANNOTATION: "garbage"})
            )),
            None
        );

        let src = meta("platform", "src", json!({}), json!({}));
        assert_eq!(
            by_source(&store, ConfigKind::ConfigMap, &src),
            vec![ObjectRef::new("a").within("platform")]
        );
        assert!(by_source(&store, ConfigKind::Secret, &src).is_empty());
        let rules = meta("platform", "rules", json!({}), json!({}));
        assert_eq!(
            by_source(&store, ConfigKind::ConfigMap, &rules),
            vec![ObjectRef::new("b").within("platform")]
        );

        let web = meta("cell-1", "web", json!({"app": "web"}), json!({}));
        assert_eq!(by_workload(&store, &Layouts::default(), &web).len(), 1);
        let elsewhere = meta("cell-9", "web", json!({"app": "web"}), json!({}));
        assert!(by_workload(&store, &Layouts::default(), &elsewhere).is_empty());
    }

    #[tokio::test]
    async fn a_store_wait_begun_before_the_list_resolves_once_it_is_listed() {
        let (store, mut writer) = reflector::store::<DeserializeGuard<ConfigRollout>>();
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { store_ready(&store).await }
        });
        tokio::task::yield_now().await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let ready = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(matches!(ready, Ok(Ok(true))), "{ready:?}");

        let (store, writer) = reflector::store::<DeserializeGuard<ConfigRollout>>();
        drop(writer);
        let gone = tokio::time::timeout(Duration::from_secs(5), store_ready(&store)).await;
        assert_eq!(
            gone.ok(),
            Some(false),
            "a store whose writer is gone never lists"
        );
    }
}
