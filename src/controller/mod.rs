//! The operator: a `kube::runtime::Controller` for ConfigRollout whose reconcile observes the
//! world, lets the engine decide and carries the decision out.
//!
//! Watches that re-trigger a rollout (metadata only, to keep memory flat):
//! - targets (ConfigMaps and Secrets labelled `app.kubernetes.io/managed-by=ringfence`),
//!   mapped back through their `ringfence.dev/rollout` annotation;
//! - source objects in the watched scope, mapped to rollouts whose `sourceRef` or
//!   `validationRef` names them;
//! - Deployments, StatefulSets and DaemonSets, mapped to rollouts whose workload selector
//!   matches them in one of their target namespaces;
//! - namespaces (also cached for their labels), mapped to rollouts not yet resolved or
//!   targeting them.

mod cache;
mod calls;
mod context;
mod error;
mod events;
mod gates;
mod layout;
mod observe;
mod observed;
mod priors;
mod reconcile;
mod revision_key;
mod status;
mod targets;
mod workloads;

pub use error::Error;
pub use observe::{observe_uncached, rollout_key};
pub use priors::record_name;
pub use revision_key::{REVISION_KEY_FIELD, RevisionKeySource, load_revision_key};

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::ListParams;
use kube::core::{
    DeserializeGuard, NamespaceResourceScope, PartialObjectMeta, Selector, SelectorExt,
};
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::watch;

use crate::api::{ConfigKind, ConfigRollout, ROLLOUT_ANNOTATION, SourceRef};
use crate::engine::{AddressPolicy, Scope, Settings};
use crate::metrics::Metrics;
use crate::server::{self, Readiness};
use layout::Layouts;

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Watch the rollouts of this namespace only (targets may live anywhere).
    pub namespace: Option<String>,
    /// Namespaces whose rollouts may target any namespace.
    pub trusted_namespaces: BTreeSet<String>,
    /// Where the key for Secret revisions comes from.
    pub revision_key: RevisionKeySource,
    /// Where gates may call.
    pub gate_addresses: AddressPolicy,
    /// Rollouts reconciled at once.
    pub concurrency: u16,
    /// Target writes in flight at once per rollout.
    pub max_inflight_writes: usize,
    pub metrics_addr: SocketAddr,
    pub health_addr: SocketAddr,
    /// Names this replica in events (the pod name in a cluster).
    pub instance: Option<String>,
    /// Leadership signal from [`crate::leader::LeaderElection::subscribe`]: rollouts are
    /// reconciled (and anything written) only while it reads `true`; watches and `/readyz`
    /// do not depend on it. `None` always leads.
    pub leader: Option<watch::Receiver<bool>>,
}

/// Errors that stop the operator.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "the ConfigRollout CRD is not installed (configrollouts.ringfence.dev); install it with `ringfence crd | kubectl apply -f -` or the Helm chart"
    )]
    CrdMissing,
    #[error("cannot reach the Kubernetes API: {0}")]
    Api(#[source] kube::Error),
    #[error("cannot serve health and metrics: {0}")]
    Listen(#[source] std::io::Error),
    #[error("cannot build the HTTP client for gates: {0}")]
    Http(#[source] reqwest::Error),
    #[error("{0}")]
    RevisionKey(String),
}

type RolloutStore = Store<DeserializeGuard<ConfigRollout>>;
type Refs = Vec<ObjectRef<DeserializeGuard<ConfigRollout>>>;

/// A configured operator, ready to run.
pub struct Operator {
    client: Client,
    options: Options,
    settings: Settings,
    readiness: Readiness,
}

impl Operator {
    /// Checks the CRD is installed (listing in the watched namespace only, if any, as that
    /// is all a namespaced install may read) and loads the revision key.
    pub async fn new(client: Client, options: Options) -> Result<Self, RunError> {
        let api: Api<ConfigRollout> = match &options.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Err(RunError::CrdMissing),
            Err(e) => return Err(RunError::Api(e)),
        }
        let settings = Settings {
            trusted_namespaces: options.trusted_namespaces.clone(),
            revision_key: load_revision_key(&client, &options.revision_key).await?,
            gate_addresses: options.gate_addresses.clone(),
        };
        Ok(Self {
            client,
            options,
            settings,
            readiness: Readiness::default(),
        })
    }

    /// `/healthz` and `/readyz` answer `ready` once the caches have synced.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Runs until `shutdown` resolves, then lets in-flight reconciles finish.
    /// `on_listen` receives the bound health/metrics addresses.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        on_listen: impl FnOnce(&[SocketAddr]) + Send,
    ) -> Result<(), RunError> {
        let shutdown = shutdown.boxed().shared();
        let client = self.client.clone();
        let rollouts: Api<DeserializeGuard<ConfigRollout>> = match &self.options.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let mut controller = Controller::new(rollouts, watcher::Config::default())
            .with_config(ControllerConfig::default().concurrency(self.options.concurrency));
        if let Some(leader) = &self.options.leader {
            controller = controller.reconcile_all_on(leadership_gained(leader.clone()));
        }
        let store = controller.store();

        let (ns_store, ns_writer) = reflector::store::<PartialObjectMeta<Namespace>>();
        let namespaces = watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(ns_writer)
        .touched_objects();

        let metrics = Arc::new(Metrics::new(store.clone()));
        if let Some(leader) = &self.options.leader {
            metrics.follow_leadership(leader.clone());
        }
        let (addrs, serve) = server::bind(
            self.options.health_addr,
            self.options.metrics_addr,
            self.readiness.clone(),
            metrics.clone(),
            shutdown.clone(),
        )
        .await
        .map_err(RunError::Listen)?;
        on_listen(&addrs);
        let server = tokio::spawn(serve);

        let ctx = Arc::new(context::Context {
            client: client.clone(),
            events: events::Events::new(client.clone(), self.options.instance.clone()),
            metrics,
            gates: gates::GateEvaluator::new(self.settings.gate_addresses.clone())
                .map_err(RunError::Http)?,
            settings: self.settings.clone(),
            rollouts: store.clone(),
            namespaces: ns_store,
            watch_namespace: self.options.namespace.clone(),
            failures: Default::default(),
            leader: self.options.leader.clone(),
            corrupt_priors: Default::default(),
            cache: Arc::new(cache::Cache::new(self.settings.revision_key.clone())),
            layouts: Default::default(),
            max_inflight_writes: self.options.max_inflight_writes,
        });

        let ready = self.readiness.clone();
        let (s1, s2, s3) = (store.clone(), ctx.namespaces.clone(), ctx.cache.clone());
        tokio::spawn(async move {
            if store_ready(&s1).await && store_ready(&s2).await {
                s3.wait_until_ready().await;
                ready.set_ready();
                tracing::info!("caches synced, ready");
            }
        });
        tokio::spawn(release_orphans(ctx.clone()));

        let managed = watcher::Config::default().labels(&cache::targets_selector());
        let scope = self.options.namespace.clone();
        let (st_cm, st_secret, st_deploy, st_sts, st_ds, st_ns) = (
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
        );
        let cache = ctx.cache.clone();
        let (layouts_st_deploy, layouts_st_sts, layouts_st_ds, layouts_st_ns) = (
            ctx.layouts.clone(),
            ctx.layouts.clone(),
            ctx.layouts.clone(),
            ctx.layouts.clone(),
        );
        controller
            .watches_stream(
                cached_stream::<ConfigMap>(&client, managed.clone(), {
                    let cache = cache.clone();
                    let mut first = true;
                    move |e| cache.config_map(e, &mut first)
                }),
                |o| by_annotation(&o),
            )
            .watches_stream(
                cached_stream::<Secret>(&client, managed, {
                    let cache = cache.clone();
                    let mut first = true;
                    move |e| cache.secret(e, &mut first)
                }),
                |o| by_annotation(&o),
            )
            .watches_stream(
                record_stream::<ConfigMap>(&client, ConfigKind::ConfigMap, cache.clone()),
                |o| by_annotation(&o),
            )
            .watches_stream(
                record_stream::<Secret>(&client, ConfigKind::Secret, cache.clone()),
                |o| by_annotation(&o),
            )
            .watches_stream(
                meta_stream::<ConfigMap>(&client, scope.as_deref(), Default::default()),
                move |o| by_source(&st_cm, ConfigKind::ConfigMap, &o),
            )
            .watches_stream(
                meta_stream::<Secret>(&client, scope.as_deref(), Default::default()),
                move |o| by_source(&st_secret, ConfigKind::Secret, &o),
            )
            .watches_stream(
                meta_stream::<Deployment>(&client, None, Default::default()),
                move |o| by_workload(&st_deploy, &layouts_st_deploy, &o),
            )
            .watches_stream(
                meta_stream::<StatefulSet>(&client, None, Default::default()),
                move |o| by_workload(&st_sts, &layouts_st_sts, &o),
            )
            .watches_stream(
                meta_stream::<DaemonSet>(&client, None, Default::default()),
                move |o| by_workload(&st_ds, &layouts_st_ds, &o),
            )
            .watches_stream(namespaces, move |o| {
                by_namespace(&st_ns, &layouts_st_ns, &o)
            })
            .graceful_shutdown_on(shutdown)
            .run(reconcile::reconcile, reconcile::error_policy, ctx)
            .for_each(|res| async move {
                if let Err(e) = res {
                    match e {
                        kube::runtime::controller::Error::ReconcilerFailed(..) => {}
                        kube::runtime::controller::Error::QueueError(e) => {
                            tracing::warn!(error = %e, "watch failed, retrying")
                        }
                        other => tracing::debug!(error = %other, "controller"),
                    }
                }
            })
            .await;
        tracing::info!("controller stopped");
        server.abort();
        Ok(())
    }
}

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

/// How often records of deleted rollouts are looked for (and once the caches synced).
const ORPHAN_SWEEP: std::time::Duration = std::time::Duration::from_secs(300);

/// Deleting a ConfigRollout leaves its targets as they are; its prior records, protected by
/// a finalizer, are let go here, and the layouts remembered for it are forgotten.
async fn release_orphans(ctx: Arc<context::Context>) {
    if !store_ready(&ctx.rollouts).await {
        return;
    }
    loop {
        let live: HashSet<String> = ctx
            .rollouts
            .state()
            .iter()
            .filter_map(|g| g.uid())
            .collect();
        ctx.layouts.retain(&live);
        if ctx.leads() {
            match priors::release_orphans(&ctx.client, &live).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(records = n, "let go of prior records of deleted rollouts"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for prior records of deleted rollouts")
                }
            }
        }
        tokio::time::sleep(ORPHAN_SWEEP).await;
    }
}

/// One item each time the signal turns from "follow" to "lead"; ends with the election.
fn leadership_gained(mut leader: watch::Receiver<bool>) -> impl Stream<Item = ()> + Send {
    let leading = *leader.borrow_and_update();
    futures::stream::unfold((leader, leading), |(mut leader, mut leading)| async move {
        loop {
            leader.changed().await.ok()?;
            let now = *leader.borrow_and_update();
            let gained = now && !leading;
            leading = now;
            if gained {
                return Some(((), (leader, leading)));
            }
        }
    })
}

/// A full-object watch of managed targets that feeds the cache (which keeps only what the
/// engine needs) and triggers their rollouts.
fn cached_stream<K>(
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
fn record_stream<K>(
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

fn meta_stream<K>(
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
fn by_annotation(obj: &impl Resource) -> Option<ObjectRef<DeserializeGuard<ConfigRollout>>> {
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

fn by_source<K: Resource>(
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
    targeting.contains(&ObjectRef::from_obj(r)) || Scope::new(&r.spec, &[], []).named().contains(ns)
}

fn by_workload<K: Resource>(
    store: &RolloutStore,
    layouts: &Layouts,
    obj: &PartialObjectMeta<K>,
) -> Refs {
    let ns = obj.namespace().unwrap_or_default();
    let targeting: HashSet<_> = layouts.targeting(&ns).into_iter().collect();
    refs(store, |r| {
        r.spec.workloads.as_ref().is_some_and(|w| {
            Selector::try_from(w.selector.clone()).is_ok_and(|s| s.matches(obj.labels()))
        }) && targets_namespace(r, &ns, &targeting)
    })
}

fn by_namespace(
    store: &RolloutStore,
    layouts: &Layouts,
    obj: &PartialObjectMeta<Namespace>,
) -> Refs {
    let ns = obj.name_any();
    let targeting: HashSet<_> = layouts.targeting(&ns).into_iter().collect();
    refs(store, |r| {
        r.status.as_ref().is_none_or(|s| s.rings.is_empty())
            || targets_namespace(r, &ns, &targeting)
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConfigRolloutSpec;
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

    #[tokio::test]
    async fn gaining_leadership_triggers_once_per_term() {
        let (tx, rx) = watch::channel(false);
        let gained = leadership_gained(rx);
        futures::pin_mut!(gained);
        tx.send_replace(true);
        assert_eq!(gained.next().await, Some(()));
        tx.send_replace(false);
        let quiet = tokio::time::timeout(Duration::from_millis(20), gained.next()).await;
        assert!(quiet.is_err(), "losing leadership triggers nothing");
        tx.send_replace(true);
        assert_eq!(gained.next().await, Some(()), "a new term triggers again");
        drop(tx);
        assert_eq!(gained.next().await, None, "ends with the election");
    }
}
