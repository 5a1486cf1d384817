//! Member clusters: registered by Secrets labelled `ringfence.dev/cluster=true` in the
//! operator's namespace, each holding a kubeconfig, and reached from the hub (the cluster
//! ringfence runs in).
//!
//! Each member gets its own clients, a probe and watches of its namespaces (metadata) and
//! managed targets feeding its own [`Cache`]. A member is *reachable* only while its probe
//! answers and its watches have listed since it last came back; otherwise the engine is
//! told why it is not, and never takes what it last saw there for current health.
//!
//! Targets are addressed by target key (`cluster/namespace` in a member, `namespace`
//! locally); [`Fleet::place`] says where one lives. Prior records of member targets live in
//! the hub, in the operator's namespace ([`Fleet::record_place`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ObjectReference, Secret};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::cache::{self, Cache};
use super::error::Error;
use super::events::Events;
use super::layout::Layouts;
use super::watches::{RolloutStore, by_annotation, by_workload_in, rollouts_of_namespace};
use crate::api::{
    ALLOW_FROM_LABEL, CLUSTER_LABEL, CLUSTER_NAME_LABEL, ConfigKind, ConfigRollout, KUBECONFIG_KEY,
    LOCAL_CLUSTER,
};
use crate::engine::{
    ClusterInfo, EventNote, EventType, NamespaceInfo, RevisionKey, TargetState, split_target,
    target_key,
};

/// How often a member is probed, and how long a probe may take.
const PROBE_EVERY: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a member's first lists may take before it counts as unreachable.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests to a member (not watches) give up after this long without an answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Trigger = mpsc::UnboundedSender<ObjectRef<DeserializeGuard<ConfigRollout>>>;

/// Where a target (or a record) lives: which API server, which namespace, which cache.
pub struct Place {
    pub client: Client,
    pub namespace: String,
    pub cache: Arc<Cache>,
}

/// The hub and its member clusters.
pub struct Fleet {
    client: Client,
    cache: Arc<Cache>,
    /// Where cluster Secrets, and the prior records of member targets, live.
    namespace: String,
    members: RwLock<BTreeMap<String, Arc<Member>>>,
    revision_key: RevisionKey,
}

/// One registered member cluster.
struct Member {
    secret: String,
    /// The cluster's labels and the namespace it lets target it: edited in place, as a
    /// label change must not reconnect.
    labels: RwLock<(BTreeMap<String, String>, Option<String>)>,
    /// Digest of the kubeconfig: a changed one reconnects.
    config: String,
    /// The request client, or why the kubeconfig cannot be used.
    client: Result<Client, String>,
    cache: Arc<Cache>,
    namespaces: RwLock<Namespaces>,
    state: RwLock<Reach>,
    task: Option<tokio::task::AbortHandle>,
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[derive(Clone, Debug)]
enum Reach {
    /// Probe answers and the watches listed since it last came back.
    Reachable,
    Unreachable(String),
}

/// A member's namespaces as last listed, by name.
#[derive(Default)]
struct Namespaces {
    live: HashMap<String, NamespaceInfo>,
    relist: Option<HashMap<String, NamespaceInfo>>,
    /// Its namespaces and targets were all listed at least once: what the caches hold
    /// was seen, not assumed.
    synced: bool,
}

/// A cluster Secret, read: its cluster's name, labels, permission and kubeconfig.
#[derive(Debug, PartialEq)]
struct Registration {
    name: String,
    labels: BTreeMap<String, String>,
    allow_from: Option<String>,
    kubeconfig: Result<String, String>,
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn registration(secret: &Secret) -> Result<Registration, String> {
    let labels = secret.labels();
    let name = labels
        .get(CLUSTER_NAME_LABEL)
        .cloned()
        .unwrap_or_else(|| secret.name_any());
    if !is_dns_label(&name) || name == LOCAL_CLUSTER {
        return Err(format!(
            "cluster name {name:?} (from {CLUSTER_NAME_LABEL} or the Secret's name) must be a DNS label other than {LOCAL_CLUSTER}"
        ));
    }
    let kubeconfig = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KUBECONFIG_KEY))
        .ok_or_else(|| format!("the Secret has no key {KUBECONFIG_KEY}"))
        .and_then(|b| {
            String::from_utf8(b.0.clone()).map_err(|_| format!("{KUBECONFIG_KEY} is not UTF-8"))
        });
    Ok(Registration {
        name,
        labels: labels
            .iter()
            .filter(|(k, _)| !k.starts_with("ringfence.dev/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        allow_from: labels.get(ALLOW_FROM_LABEL).cloned(),
        kubeconfig,
    })
}

/// Checks a member's kubeconfig holds its credentials inline: no exec plugin, auth
/// provider or file, which would run or read things on the controller's host.
pub fn check_kubeconfig(text: &str) -> Result<Kubeconfig, String> {
    let config =
        Kubeconfig::from_yaml(text).map_err(|e| format!("kubeconfig does not parse: {e}"))?;
    for auth in &config.auth_infos {
        let Some(info) = &auth.auth_info else {
            continue;
        };
        let refused = [
            (info.exec.is_some(), "an exec plugin"),
            (info.auth_provider.is_some(), "an auth provider"),
            (info.token_file.is_some(), "tokenFile"),
            (
                info.client_certificate.is_some(),
                "client-certificate (a file)",
            ),
            (info.client_key.is_some(), "client-key (a file)"),
        ];
        if let Some((_, what)) = refused.iter().find(|(set, _)| *set) {
            return Err(format!(
                "user {} uses {what}: a member's credentials must be inline (token or client-certificate-data)",
                auth.name
            ));
        }
    }
    for cluster in &config.clusters {
        if cluster
            .cluster
            .as_ref()
            .is_some_and(|c| c.certificate_authority.is_some())
        {
            return Err(format!(
                "cluster {} uses certificate-authority (a file): use certificate-authority-data",
                cluster.name
            ));
        }
    }
    Ok(config)
}

/// Clients for a member: one for requests (which must not hang on a partition) and one for
/// watches (which stay open for minutes).
pub async fn member_clients(text: &str) -> Result<(Client, Client), String> {
    let kubeconfig = check_kubeconfig(text)?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("kubeconfig cannot be used: {e}"))?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    let watches = Client::try_from(config.clone()).map_err(|e| format!("client: {e}"))?;
    config.read_timeout = Some(REQUEST_TIMEOUT);
    config.write_timeout = Some(REQUEST_TIMEOUT);
    let requests = Client::try_from(config).map_err(|e| format!("client: {e}"))?;
    Ok((requests, watches))
}

fn digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Fleet {
    pub fn new(
        client: Client,
        cache: Arc<Cache>,
        namespace: String,
        revision_key: RevisionKey,
    ) -> Self {
        Self {
            client,
            cache,
            namespace,
            members: RwLock::default(),
            revision_key,
        }
    }

    /// The namespace cluster Secrets and member targets' prior records live in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn member(&self, cluster: &str) -> Option<Arc<Member>> {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(cluster)
            .cloned()
    }

    /// Where target `key` lives; an error when its cluster is not registered or its
    /// kubeconfig cannot be used.
    pub fn place(&self, key: &str) -> Result<Place, Error> {
        let (cluster, namespace) = split_target(key);
        let Some(cluster) = cluster else {
            return Ok(Place {
                client: self.client.clone(),
                namespace: namespace.to_string(),
                cache: self.cache.clone(),
            });
        };
        let member = self
            .member(cluster)
            .ok_or_else(|| Error::ClusterUnreachable {
                cluster: cluster.to_string(),
                why: "not registered".to_string(),
            })?;
        let client = member
            .client
            .clone()
            .map_err(|why| Error::ClusterUnreachable {
                cluster: cluster.to_string(),
                why,
            })?;
        Ok(Place {
            client,
            namespace: namespace.to_string(),
            cache: member.cache.clone(),
        })
    }

    /// The client of `cluster` (None: the hub).
    pub fn client_of(&self, cluster: Option<&str>) -> Result<Client, Error> {
        Ok(self.place(&target_key(cluster, ""))?.client)
    }

    /// The client of the hub.
    pub fn hub(&self) -> &Client {
        &self.client
    }

    /// The hub's cache (of its targets, and of every prior record).
    pub fn hub_cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// What the engine knows of each registered member.
    pub fn clusters(&self) -> BTreeMap<String, ClusterInfo> {
        let members = self.members.read().unwrap_or_else(|p| p.into_inner());
        members
            .iter()
            .map(|(name, m)| {
                let (labels, allow_from) =
                    m.labels.read().unwrap_or_else(|p| p.into_inner()).clone();
                let unreachable = match (
                    &m.client,
                    &*m.state.read().unwrap_or_else(|p| p.into_inner()),
                ) {
                    (Err(why), _) => Some(format!(
                        "its cluster Secret {} is unusable: {why}",
                        m.secret
                    )),
                    (Ok(_), Reach::Reachable) => None,
                    (Ok(_), Reach::Unreachable(why)) => Some(why.clone()),
                };
                (
                    name.clone(),
                    ClusterInfo {
                        labels,
                        allow_from,
                        unreachable,
                    },
                )
            })
            .collect()
    }

    /// The namespaces of every member as last listed, keyed `cluster/namespace`.
    pub fn namespaces(&self, keep: impl Fn(&NamespaceInfo) -> bool) -> Vec<NamespaceInfo> {
        let members = self.members.read().unwrap_or_else(|p| p.into_inner());
        members
            .values()
            .flat_map(|m| {
                let ns = m.namespaces.read().unwrap_or_else(|p| p.into_inner());
                ns.live
                    .values()
                    .filter(|n| keep(n))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The state of target `name` at `key`: None when it was never seen (a member not
    /// listed yet). A local or listed target ringfence has not seen does not exist.
    pub fn target(&self, kind: ConfigKind, key: &str, name: &str) -> Option<TargetState> {
        match split_target(key) {
            (None, ns) => Some(self.cache.target(kind, ns, name).unwrap_or_default()),
            (Some(cluster), ns) => {
                let member = self.member(cluster)?;
                let synced = member
                    .namespaces
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .synced;
                match member.cache.target(kind, ns, name) {
                    Some(state) => Some(state),
                    None if synced => Some(TargetState::default()),
                    None => None,
                }
            }
        }
    }

    /// Registers, updates or replaces the member a cluster Secret describes; a Secret that
    /// cannot be used is reported on itself, and rollouts naming it are told why.
    async fn register(self: &Arc<Self>, secret: &Secret, ctx: &Registry) {
        let name = secret.name_any();
        let reg = match registration(secret) {
            Ok(reg) => reg,
            Err(why) => {
                self.forget_secret(&name);
                ctx.warn(secret, &why).await;
                return;
            }
        };
        let config = reg.kubeconfig.as_deref().map(digest).unwrap_or_default();
        let unchanged = self
            .member(&reg.name)
            .filter(|m| m.secret == name && m.config == config);
        if let Some(member) = unchanged {
            // Labels or permission changed: the connection stays.
            *member.labels.write().unwrap_or_else(|p| p.into_inner()) =
                (reg.labels, reg.allow_from);
            ctx.trigger_all();
            return;
        }
        let clients = match &reg.kubeconfig {
            Ok(text) => member_clients(text).await,
            Err(why) => Err(why.clone()),
        };
        if let Err(why) = &clients {
            ctx.warn(secret, why).await;
        }
        self.forget_secret(&name);
        let cache = Arc::new(Cache::new(self.revision_key.clone()));
        let mut member = Member {
            secret: name,
            labels: RwLock::new((reg.labels, reg.allow_from)),
            config,
            client: clients
                .as_ref()
                .map(|(r, _)| r.clone())
                .map_err(String::clone),
            cache,
            namespaces: RwLock::default(),
            state: RwLock::new(Reach::Unreachable("not connected yet".to_string())),
            task: None,
        };
        if let Ok((requests, watches)) = clients {
            let task = tokio::spawn(connect(
                Arc::downgrade(self),
                reg.name.clone(),
                requests,
                watches,
                member.cache.clone(),
                ctx.clone(),
            ));
            member.task = Some(task.abort_handle());
        }
        self.members
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(reg.name, Arc::new(member));
        ctx.trigger_all();
    }

    /// The member named `cluster` if it is the one whose cache is `cache`: a connection of
    /// a member since replaced speaks for nobody.
    fn member_of(&self, cluster: &str, cache: &Arc<Cache>) -> Option<Arc<Member>> {
        self.member(cluster)
            .filter(|m| Arc::ptr_eq(&m.cache, cache))
    }

    /// Drops the member registered by Secret `secret`, if any.
    fn forget_secret(&self, secret: &str) -> bool {
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        let before = members.len();
        members.retain(|_, m| m.secret != secret);
        members.len() != before
    }

    fn set_reach(&self, cluster: &str, cache: &Arc<Cache>, reach: Reach) -> bool {
        let Some(member) = self.member_of(cluster, cache) else {
            return false;
        };
        if matches!(reach, Reach::Reachable) {
            member
                .namespaces
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .synced = true;
        }
        let mut state = member.state.write().unwrap_or_else(|p| p.into_inner());
        let changed = !matches!(
            (&*state, &reach),
            (Reach::Reachable, Reach::Reachable) | (Reach::Unreachable(_), Reach::Unreachable(_))
        );
        *state = reach;
        changed
    }

    fn namespace_event(
        &self,
        cluster: &str,
        cache: &Arc<Cache>,
        event: &watcher::Event<PartialObjectMeta<Namespace>>,
    ) {
        let Some(member) = self.member_of(cluster, cache) else {
            return;
        };
        let info = |ns: &PartialObjectMeta<Namespace>| NamespaceInfo {
            name: target_key(Some(cluster), &ns.name_any()),
            cluster: Some(cluster.to_string()),
            labels: ns.metadata.labels.clone().unwrap_or_default(),
            terminating: ns.metadata.deletion_timestamp.is_some(),
        };
        let mut namespaces = member.namespaces.write().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Init => namespaces.relist = Some(HashMap::new()),
            watcher::Event::InitApply(ns) => {
                if let Some(relist) = namespaces.relist.as_mut() {
                    relist.insert(ns.name_any(), info(ns));
                }
            }
            watcher::Event::InitDone => {
                if let Some(relist) = namespaces.relist.take() {
                    namespaces.live = relist;
                }
            }
            watcher::Event::Apply(ns) => {
                namespaces.live.insert(ns.name_any(), info(ns));
            }
            watcher::Event::Delete(ns) => {
                namespaces.live.remove(&ns.name_any());
            }
        }
    }
}

/// What the member connections share: how to trigger rollouts and report on Secrets.
#[derive(Clone)]
pub struct Registry {
    trigger: Trigger,
    rollouts: RolloutStore,
    layouts: Arc<Layouts>,
    events: Arc<Events>,
}

impl Registry {
    pub fn new(
        trigger: Trigger,
        rollouts: RolloutStore,
        layouts: Arc<Layouts>,
        events: Arc<Events>,
    ) -> Self {
        Self {
            trigger,
            rollouts,
            layouts,
            events,
        }
    }

    fn send(&self, r: ObjectRef<DeserializeGuard<ConfigRollout>>) {
        let _ = self.trigger.unbounded_send(r);
    }

    /// A member came or went, or changed: every rollout is looked at again (rare, and a
    /// rollout that does not name the cluster decides nothing new).
    fn trigger_all(&self) {
        for r in self.rollouts.state() {
            self.send(ObjectRef::from_obj(&*r));
        }
    }

    async fn warn(&self, secret: &Secret, why: &str) {
        tracing::warn!(secret = %secret.name_any(), error = why, "cluster Secret cannot be used");
        let regarding: ObjectReference = secret.object_ref(&());
        let note = EventNote {
            type_: EventType::Warning,
            reason: "InvalidClusterConfig",
            note: why.to_string(),
        };
        self.events.publish(&regarding, &[note]).await;
        self.trigger_all();
    }
}

/// Keeps a member connected: probes it, watches its namespaces and managed targets, and
/// says whether it is reachable; on any failure it starts over from the probe.
async fn connect(
    fleet: std::sync::Weak<Fleet>,
    cluster: String,
    requests: Client,
    watches: Client,
    cache: Arc<Cache>,
    registry: Registry,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let failure = connected(&fleet, &cluster, &requests, &watches, &cache, &registry).await;
        let Some(fleet) = fleet.upgrade() else { return };
        tracing::warn!(cluster, error = %failure, "member cluster unreachable");
        if fleet.set_reach(&cluster, &cache, Reach::Unreachable(failure)) {
            registry.trigger_all();
        }
        drop(fleet);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn probe(client: &Client) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
    }
}

/// One connection: returns why it ended.
async fn connected(
    fleet: &std::sync::Weak<Fleet>,
    cluster: &str,
    requests: &Client,
    watches: &Client,
    cache: &Arc<Cache>,
    registry: &Registry,
) -> String {
    if let Err(why) = probe(requests).await {
        return why;
    }
    let managed = watcher::Config::default().labels(&cache::targets_selector());
    let (feed_cm, feed_secret) = (cache.clone(), cache.clone());
    let (mut first_cm, mut first_secret) = (true, true);
    let cms = watcher(Api::<ConfigMap>::all(watches.clone()), managed.clone())
        .map_ok(move |e| {
            feed_cm.config_map(&e, &mut first_cm);
            Seen::of(&e, by_annotation)
        })
        .boxed();
    let secrets = watcher(Api::<Secret>::all(watches.clone()), managed)
        .map_ok(move |e| {
            feed_secret.secret(&e, &mut first_secret);
            Seen::of(&e, by_annotation)
        })
        .boxed();
    let fleet_ns = fleet.clone();
    let name = cluster.to_string();
    let ns_cache = cache.clone();
    let layouts = registry.layouts.clone();
    let rollouts = registry.rollouts.clone();
    let namespaces = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(watches.clone()),
        watcher::Config::default(),
    )
    .map_ok(move |e| {
        if let Some(fleet) = fleet_ns.upgrade() {
            fleet.namespace_event(&name, &ns_cache, &e);
        }
        let mut seen = Seen::of(&e, |_| None);
        if let watcher::Event::Apply(ns) | watcher::Event::Delete(ns) = &e {
            let key = target_key(Some(&name), &ns.name_any());
            seen.rollouts = rollouts_of_namespace(&rollouts, &layouts, &key);
        }
        seen
    })
    .boxed();
    // Workloads consuming targets are watched (metadata only) so a rollout waiting for
    // them to roll out is triggered, as in the hub; a list of them does not gate reachability.
    let workloads = futures::stream::select_all([
        workload_stream::<Deployment>(watches, cluster, registry),
        workload_stream::<StatefulSet>(watches, cluster, registry),
        workload_stream::<DaemonSet>(watches, cluster, registry),
    ]);
    let mut events = futures::stream::select_all([cms, secrets, namespaces, workloads.boxed()]);
    let mut listed = 0u8;
    let sync_by = tokio::time::Instant::now() + SYNC_TIMEOUT;
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.next() => match event {
                None => return "watches ended".to_string(),
                Some(Err(e)) => return format!("watch failed: {e}"),
                Some(Ok(seen)) => {
                    for r in seen.rollouts {
                        registry.send(r);
                    }
                    if seen.listed {
                        listed = listed.saturating_add(1);
                        if listed == 3 {
                            let Some(fleet) = fleet.upgrade() else { return String::new() };
                            tracing::info!(cluster, "member cluster reachable");
                            if fleet.set_reach(cluster, cache, Reach::Reachable) {
                                registry.trigger_all();
                            }
                        }
                    }
                }
            },
            _ = tick.tick() => {
                if listed < 3 && tokio::time::Instant::now() >= sync_by {
                    return format!("its namespaces and targets were not listed within {}s", SYNC_TIMEOUT.as_secs());
                }
                if let Err(why) = probe(requests).await {
                    return why;
                }
            }
        }
    }
}

fn workload_stream<K>(
    client: &Client,
    cluster: &str,
    registry: &Registry,
) -> futures::stream::BoxStream<'static, Result<Seen, watcher::Error>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (rollouts, layouts) = (registry.rollouts.clone(), registry.layouts.clone());
    let cluster = cluster.to_string();
    watcher(
        Api::<PartialObjectMeta<K>>::all(client.clone()),
        watcher::Config::default(),
    )
    .map_ok(move |e| Seen {
        rollouts: match &e {
            watcher::Event::Apply(o) | watcher::Event::Delete(o) => {
                by_workload_in(&rollouts, &layouts, Some(&cluster), o)
            }
            _ => Vec::new(),
        },
        listed: false,
    })
    .boxed()
}

/// What one member watch event says: which rollouts it concerns, and whether a list ended.
struct Seen {
    rollouts: Vec<ObjectRef<DeserializeGuard<ConfigRollout>>>,
    listed: bool,
}

impl Seen {
    fn of<K>(
        event: &watcher::Event<K>,
        rollout: impl Fn(&K) -> Option<ObjectRef<DeserializeGuard<ConfigRollout>>>,
    ) -> Self {
        match event {
            watcher::Event::InitDone => Seen {
                rollouts: Vec::new(),
                listed: true,
            },
            watcher::Event::Apply(o) | watcher::Event::Delete(o) => Seen {
                rollouts: rollout(o).into_iter().collect(),
                listed: false,
            },
            _ => Seen {
                rollouts: Vec::new(),
                listed: false,
            },
        }
    }
}

/// A member as read once, for a plan: its name, what the engine knows of it, and a client
/// when its kubeconfig can be used.
pub struct ReadMember {
    pub name: String,
    pub info: ClusterInfo,
    pub client: Option<Client>,
}

/// The member clusters registered in `namespace` of the hub, read with one list (no watch,
/// no probe: a member's own reads say whether it answers).
pub async fn read_members(hub: &Client, namespace: &str) -> Result<Vec<ReadMember>, Error> {
    let secrets = Api::<Secret>::namespaced(hub.clone(), namespace)
        .list(&kube::api::ListParams::default().labels(&format!("{CLUSTER_LABEL}=true")))
        .await
        .map_err(|e| Error::kube(format!("list cluster Secrets in {namespace}"), e))?;
    let mut out = Vec::new();
    for secret in &secrets.items {
        let Ok(reg) = registration(secret) else {
            continue;
        };
        let clients = match &reg.kubeconfig {
            Ok(text) => member_clients(text).await,
            Err(why) => Err(why.clone()),
        };
        let (client, unreachable) = match clients {
            Ok((requests, _)) => (Some(requests), None),
            Err(why) => (
                None,
                Some(format!(
                    "its cluster Secret {} is unusable: {why}",
                    secret.name_any()
                )),
            ),
        };
        out.push(ReadMember {
            name: reg.name,
            info: ClusterInfo {
                labels: reg.labels,
                allow_from: reg.allow_from,
                unreachable,
            },
            client,
        });
    }
    Ok(out)
}

/// Watches the cluster Secrets in `fleet`'s namespace and keeps the members in step.
pub async fn watch_registrations(fleet: Arc<Fleet>, registry: Registry) {
    let api: Api<Secret> = Api::namespaced(fleet.client.clone(), &fleet.namespace);
    let config = watcher::Config::default().labels(&format!("{CLUSTER_LABEL}=true"));
    let mut relisted: Option<Vec<String>> = None;
    let stream = watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Err(e) => tracing::warn!(error = %e, "watching cluster Secrets, retrying"),
            Ok(watcher::Event::Init) => relisted = Some(Vec::new()),
            Ok(watcher::Event::InitApply(secret)) => {
                if let Some(seen) = relisted.as_mut() {
                    seen.push(secret.name_any());
                }
                fleet.register(&secret, &registry).await;
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(seen) = relisted.take() {
                    let gone: Vec<String> = fleet
                        .members
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .values()
                        .map(|m| m.secret.clone())
                        .filter(|s| !seen.contains(s))
                        .collect();
                    for secret in gone {
                        fleet.forget_secret(&secret);
                    }
                    registry.trigger_all();
                }
            }
            Ok(watcher::Event::Apply(secret)) => fleet.register(&secret, &registry).await,
            Ok(watcher::Event::Delete(secret)) => {
                if fleet.forget_secret(&secret.name_any()) {
                    tracing::info!(secret = %secret.name_any(), "member cluster unregistered");
                    registry.trigger_all();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(name: &str, labels: &[(&str, &str)], kubeconfig: Option<&str>) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        if let Some(k) = kubeconfig {
            s.data = Some(BTreeMap::from([(
                KUBECONFIG_KEY.to_string(),
                ByteString(k.as_bytes().to_vec()),
            )]));
        }
        s
    }

    const INLINE: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: m\n  cluster: {server: 'https://127.0.0.1:6443', certificate-authority-data: ''}\nusers:\n- name: u\n  user: {token: abc}\ncontexts:\n- name: c\n  context: {cluster: m, user: u}\ncurrent-context: c\n";

    #[test]
    fn a_cluster_secret_names_labels_and_permits() {
        let s = secret(
            "eu-west-1-secret",
            &[
                (CLUSTER_LABEL, "true"),
                (CLUSTER_NAME_LABEL, "eu-west-1"),
                (ALLOW_FROM_LABEL, "checkout"),
                ("tier", "prod"),
            ],
            Some(INLINE),
        );
        let reg = registration(&s).unwrap();
        assert_eq!(reg.name, "eu-west-1");
        assert_eq!(reg.labels, BTreeMap::from([("tier".into(), "prod".into())]));
        assert_eq!(reg.allow_from.as_deref(), Some("checkout"));
        assert!(reg.kubeconfig.is_ok());
        let by_name = registration(&secret("us-east-1", &[(CLUSTER_LABEL, "true")], None)).unwrap();
        assert_eq!(by_name.name, "us-east-1");
        assert!(
            by_name
                .kubeconfig
                .unwrap_err()
                .contains("no key kubeconfig")
        );
        for bad in ["local", "Upper", "-x"] {
            let err = registration(&secret("s", &[(CLUSTER_NAME_LABEL, bad)], None)).unwrap_err();
            assert!(err.contains("DNS label"), "{bad}: {err}");
        }
    }

    #[test]
    fn kubeconfigs_must_hold_their_credentials_inline() {
        assert!(check_kubeconfig(INLINE).is_ok());
        let exec = INLINE.replace(
            "user: {token: abc}",
            "user: {exec: {command: aws, apiVersion: client.authentication.k8s.io/v1}}",
        );
        assert!(check_kubeconfig(&exec).unwrap_err().contains("exec plugin"));
        let file = INLINE.replace("user: {token: abc}", "user: {tokenFile: /var/run/token}");
        assert!(check_kubeconfig(&file).unwrap_err().contains("tokenFile"));
        let ca = INLINE.replace(
            "certificate-authority-data: ''",
            "certificate-authority: /ca.crt",
        );
        assert!(
            check_kubeconfig(&ca)
                .unwrap_err()
                .contains("certificate-authority")
        );
        assert!(
            check_kubeconfig("clusters: 3")
                .unwrap_err()
                .contains("does not parse")
        );
    }
}
