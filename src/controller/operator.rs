//! The operator: a `kube::runtime::Controller` for ConfigRollout, wired to its watches and
//! caches, the health and metrics server and the sweep of deleted rollouts' records. Its
//! reconcile (`reconcile.rs`) observes the world, lets the engine decide and carries the
//! decision out.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::ListParams;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::reflector::{self};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use crate::api::{ConfigKind, ConfigRollout};
use crate::engine::{AddressPolicy, Settings};
use crate::metrics::Metrics;
use crate::server::{self, Readiness};

use super::revision_key::{RevisionKeySource, load_revision_key};
use super::watches::{
    by_annotation, by_namespace, by_source, by_workload, cached_stream, meta_stream, record_stream,
    store_ready,
};
use super::{cache, context, events, gates, layout, members, priors, reconcile};

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
    /// Where cluster Secrets registering member clusters live (the operator's namespace);
    /// prior records of member targets are kept there too.
    pub cluster_namespace: String,
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
        // Only names and labels are read: a large cluster's managed fields need no memory.
        .modify(|ns| ns.managed_fields_mut().clear())
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

        let cache = Arc::new(cache::Cache::new(self.settings.revision_key.clone()));
        let fleet = Arc::new(members::Fleet::new(
            client.clone(),
            cache.clone(),
            self.options.cluster_namespace.clone(),
            self.settings.revision_key.clone(),
        ));
        let layouts: Arc<layout::Layouts> = Default::default();
        let (trigger, member_events) = futures::channel::mpsc::unbounded();
        let registry = members::Registry::new(
            trigger,
            store.clone(),
            layouts.clone(),
            Arc::new(events::Events::new(
                client.clone(),
                self.options.instance.clone(),
            )),
        );
        let registrations = tokio::spawn(members::watch_registrations(fleet.clone(), registry));
        controller = controller.reconcile_on(member_events);
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
            cache,
            fleet,
            layouts,
            written: Default::default(),
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
        registrations.abort();
        server.abort();
        Ok(())
    }
}
/// How often records of deleted rollouts are looked for (and once the caches synced).
const ORPHAN_SWEEP: std::time::Duration = std::time::Duration::from_secs(300);

/// Deleting a ConfigRollout leaves its targets as they are; its prior records, protected by
/// a finalizer, are let go here, and what this replica remembers of it is forgotten.
async fn release_orphans(ctx: Arc<context::Context>) {
    if !store_ready(&ctx.rollouts).await {
        return;
    }
    loop {
        let rollouts = ctx.rollouts.state();
        let live: HashSet<String> = rollouts.iter().filter_map(|g| g.uid()).collect();
        ctx.layouts.retain(&live);
        ctx.written.retain(
            &rollouts
                .iter()
                .map(|g| format!("{}/{}", g.namespace().unwrap_or_default(), g.name_any()))
                .collect(),
        );
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
    use std::time::Duration;

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
