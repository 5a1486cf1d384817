//! What the controller remembers between reconciles, fed by watches, so a reconcile reads
//! the fleet from memory instead of listing it:
//!
//! - **targets**: every ConfigMap and Secret labelled `app.kubernetes.io/managed-by=ringfence`
//!   (prior records excepted), kept as the engine's [`TargetState`] (content hash, ringfence's
//!   annotations, last field manager): a full-object watch whose data is hashed and dropped;
//! - **records**: every prior record's identity and parsed prior, by owning rollout.
//!
//! A target that leaves the watch's selector (a restore that puts back a prior without
//! ringfence's label) is kept as last seen; a deleted one is forgotten. The controller also
//! writes through what its own writes returned, so the next reconcile does not wait for the
//! watch. An entry is only ever replaced by a newer resourceVersion.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher::Event;
use tokio::sync::watch;

use super::observed::ObservedTarget;
use super::record::{CachedRecord, owner, target_of};
use crate::api::{ConfigKind, FIELD_MANAGER, MANAGED_BY_LABEL, PRIORS_OF_LABEL};
use crate::engine::{RevisionKey, TargetState};

/// A target as last seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub state: TargetState,
    pub resource_version: Option<String>,
}

type TargetKey = (ConfigKind, String, String);

#[derive(Default)]
struct Targets {
    live: HashMap<TargetKey, Seen>,
    /// Relists in progress, one per watch (kind): swapped in whole when each completes.
    relist: HashMap<ConfigKind, HashMap<TargetKey, Seen>>,
}

type RecordsByOwner = HashMap<String, HashMap<String, Arc<CachedRecord>>>;

#[derive(Default)]
struct Records {
    /// Rollout uid → namespace → record.
    live: RecordsByOwner,
    relist: Option<RecordsByOwner>,
}

/// The shared cache; `ready` reads true once every watch has listed once.
pub struct Cache {
    targets: RwLock<Targets>,
    /// One per record watch: ConfigMap records, then Secret records.
    records: [RwLock<Records>; 2],
    synced: watch::Sender<u8>,
    /// Keys the content hashes of target Secrets.
    revision_key: RevisionKey,
}

fn slot(kind: ConfigKind) -> usize {
    match kind {
        ConfigKind::ConfigMap => 0,
        ConfigKind::Secret => 1,
    }
}

/// How many watches feed the cache: target ConfigMaps, target Secrets, record
/// ConfigMaps, record Secrets.
const FEEDS: u8 = 4;

/// Whether `a` is older than `b`; versions that do not parse as numbers are not compared.
fn older(a: Option<&str>, b: Option<&str>) -> bool {
    match (
        a.and_then(|v| v.parse::<u64>().ok()),
        b.and_then(|v| v.parse::<u64>().ok()),
    ) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

fn managed(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == FIELD_MANAGER)
}

impl Cache {
    pub fn new(revision_key: RevisionKey) -> Self {
        Self {
            targets: RwLock::default(),
            records: [RwLock::default(), RwLock::default()],
            synced: watch::Sender::new(0),
            revision_key,
        }
    }

    /// Resolves once every watch has completed its first list.
    pub async fn wait_until_ready(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|n| *n >= FEEDS).await;
    }

    fn first_sync(&self, first: &mut bool) {
        if std::mem::take(first) {
            self.synced.send_modify(|n| *n = n.saturating_add(1));
        }
    }

    /// The target `name` in `namespace`, if ringfence has seen it.
    pub fn target(&self, kind: ConfigKind, namespace: &str, name: &str) -> Option<TargetState> {
        let targets = self.targets.read().unwrap_or_else(|p| p.into_inner());
        targets
            .live
            .get(&(kind, namespace.to_string(), name.to_string()))
            .map(|s| s.state.clone())
    }

    /// Remembers what a write returned (None: the target was deleted).
    pub fn wrote(
        &self,
        kind: ConfigKind,
        namespace: &str,
        name: &str,
        written: Option<(&ObservedTarget, Option<String>)>,
    ) {
        let key = (kind, namespace.to_string(), name.to_string());
        let mut targets = self.targets.write().unwrap_or_else(|p| p.into_inner());
        match written {
            None => {
                targets.live.remove(&key);
            }
            Some((t, rv)) => insert_newer(
                &mut targets.live,
                key,
                Seen {
                    state: t.state(),
                    resource_version: rv,
                },
            ),
        }
    }

    fn target_event(
        &self,
        kind: ConfigKind,
        event: &Event<(ObjectMeta, ObservedTarget)>,
        first: &mut bool,
    ) {
        let mut targets = self.targets.write().unwrap_or_else(|p| p.into_inner());
        let key = |meta: &ObjectMeta| {
            (
                kind,
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            )
        };
        let seen = |meta: &ObjectMeta, t: &ObservedTarget| Seen {
            state: t.state(),
            resource_version: meta.resource_version.clone(),
        };
        match event {
            Event::Init => {
                targets.relist.insert(kind, HashMap::new());
            }
            Event::InitApply((meta, t)) => {
                if let Some(relist) = targets.relist.get_mut(&kind) {
                    relist.insert(key(meta), seen(meta, t));
                }
            }
            Event::InitDone => {
                if let Some(relist) = targets.relist.remove(&kind) {
                    targets.live.retain(|k, _| k.0 != kind);
                    targets.live.extend(relist);
                }
                drop(targets);
                self.first_sync(first);
            }
            Event::Apply((meta, t)) => insert_newer(&mut targets.live, key(meta), seen(meta, t)),
            Event::Delete((meta, t)) => {
                if managed(meta) {
                    targets.live.remove(&key(meta));
                } else {
                    // It left the selector (e.g. restored without ringfence's label): keep it as last seen.
                    insert_newer(&mut targets.live, key(meta), seen(meta, t));
                }
            }
        }
    }

    /// Feeds a target ConfigMap watch event.
    pub fn config_map(&self, event: &Event<ConfigMap>, first: &mut bool) {
        let event = map_event(event, |cm| {
            (
                cm.metadata.clone(),
                ObservedTarget::from_config_map(cm, &self.revision_key),
            )
        });
        self.target_event(ConfigKind::ConfigMap, &event, first);
    }

    /// Feeds a target Secret watch event.
    pub fn secret(&self, event: &Event<Secret>, first: &mut bool) {
        let event = map_event(event, |s| {
            (
                s.metadata.clone(),
                ObservedTarget::from_secret(s, &self.revision_key),
            )
        });
        self.target_event(ConfigKind::Secret, &event, first);
    }

    /// The records a rollout owns, by target key.
    pub fn records(&self, uid: &str) -> Vec<(String, Arc<CachedRecord>)> {
        self.records
            .iter()
            .flat_map(|r| {
                let records = r.read().unwrap_or_else(|p| p.into_inner());
                records
                    .live
                    .get(uid)
                    .map(|m| {
                        m.iter()
                            .map(|(ns, r)| (ns.clone(), r.clone()))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Remembers a record of `kind` as written.
    pub fn recorded(&self, kind: ConfigKind, meta: &ObjectMeta) {
        let Some(uid) = owner(meta) else { return };
        let mut records = self.records[slot(kind)]
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let ns = target_of(meta);
        let slot = records.live.entry(uid).or_default();
        let newer = slot.get(&ns).is_none_or(|old| {
            !older(
                meta.resource_version.as_deref(),
                old.resource_version.as_deref(),
            )
        });
        if newer {
            slot.insert(ns, Arc::new(CachedRecord::of(meta)));
        }
    }

    /// Feeds a record watch event of `kind` (metadata only).
    pub fn record_event(&self, kind: ConfigKind, event: &Event<ObjectMeta>, first: &mut bool) {
        let mut records = self.records[slot(kind)]
            .write()
            .unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Init => records.relist = Some(HashMap::new()),
            Event::InitApply(meta) => {
                if let (Some(relist), Some(uid)) = (records.relist.as_mut(), owner(meta)) {
                    relist
                        .entry(uid)
                        .or_default()
                        .insert(target_of(meta), Arc::new(CachedRecord::of(meta)));
                }
            }
            Event::InitDone => {
                if let Some(relist) = records.relist.take() {
                    records.live = relist;
                }
                drop(records);
                self.first_sync(first);
            }
            Event::Apply(meta) => {
                drop(records);
                self.recorded(kind, meta);
            }
            Event::Delete(meta) => {
                if let Some(uid) = owner(meta)
                    && let Some(slot) = records.live.get_mut(&uid)
                {
                    slot.remove(&target_of(meta));
                    if slot.is_empty() {
                        records.live.remove(&uid);
                    }
                }
            }
        }
    }
}

fn insert_newer(map: &mut HashMap<TargetKey, Seen>, key: TargetKey, seen: Seen) {
    let newer = map.get(&key).is_none_or(|old| {
        !older(
            seen.resource_version.as_deref(),
            old.resource_version.as_deref(),
        )
    });
    if newer {
        map.insert(key, seen);
    }
}

fn map_event<K, T>(event: &Event<K>, f: impl Fn(&K) -> T) -> Event<T> {
    match event {
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(f(o)),
        Event::InitDone => Event::InitDone,
        Event::Apply(o) => Event::Apply(f(o)),
        Event::Delete(o) => Event::Delete(f(o)),
    }
}

/// The label selector of the target watches: managed, and not a prior record.
pub fn targets_selector() -> String {
    format!("{MANAGED_BY_LABEL}={FIELD_MANAGER},!{PRIORS_OF_LABEL}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(ns: &str, rv: &str, value: &str, labelled: bool) -> ConfigMap {
        let labels = if labelled {
            json!({MANAGED_BY_LABEL: FIELD_MANAGER})
        } else {
            json!({})
        };
        serde_json::from_value(json!({
            "metadata": {"name": "flags", "namespace": ns, "resourceVersion": rv, "labels": labels},
            "data": {"k": value},
        }))
        .unwrap()
    }

    fn hash(c: &Cache, ns: &str) -> Option<String> {
        c.target(ConfigKind::ConfigMap, ns, "flags")
            .and_then(|t| t.content_hash)
    }

    #[test]
    fn watch_events_keep_the_newest_state_and_forget_deleted_targets() {
        let cache = Cache::new(RevisionKey::generate());
        let mut first = true;
        cache.config_map(&Event::Init, &mut first);
        cache.config_map(&Event::InitApply(cm("a", "5", "one", true)), &mut first);
        assert_eq!(
            hash(&cache, "a"),
            None,
            "not visible before the list completes"
        );
        cache.config_map(&Event::InitDone, &mut first);
        let one = hash(&cache, "a");
        assert!(one.is_some());
        cache.config_map(&Event::Apply(cm("a", "7", "two", true)), &mut first);
        let two = hash(&cache, "a");
        assert_ne!(one, two);
        cache.config_map(&Event::Apply(cm("a", "6", "stale", true)), &mut first);
        assert_eq!(
            hash(&cache, "a"),
            two,
            "an older version never replaces a newer one"
        );
        cache.config_map(&Event::Delete(cm("a", "8", "three", false)), &mut first);
        assert!(
            hash(&cache, "a").is_some(),
            "left the selector: kept as last seen"
        );
        cache.config_map(&Event::Apply(cm("b", "9", "x", true)), &mut first);
        cache.config_map(&Event::Delete(cm("b", "10", "x", true)), &mut first);
        assert_eq!(hash(&cache, "b"), None, "deleted");
        assert_eq!(*cache.synced.borrow(), 1, "one watch of four listed");
    }

    #[test]
    fn records_are_kept_by_owner() {
        let cache = Cache::new(RevisionKey::generate());
        let mut first = true;
        let meta = |ns: &str, uid: &str| -> ObjectMeta {
            serde_json::from_value(json!({
                "name": "ringfence-prior-flags", "namespace": ns, "resourceVersion": "3",
                "labels": {PRIORS_OF_LABEL: uid},
            }))
            .unwrap()
        };
        let cm = ConfigKind::ConfigMap;
        let mut other = true;
        cache.record_event(cm, &Event::Init, &mut first);
        cache.record_event(cm, &Event::InitApply(meta("a", "u1")), &mut first);
        // The Secret records' watch lists at the same time: it must not lose these.
        cache.record_event(ConfigKind::Secret, &Event::Init, &mut other);
        cache.record_event(ConfigKind::Secret, &Event::InitDone, &mut other);
        cache.record_event(cm, &Event::InitDone, &mut first);
        cache.record_event(cm, &Event::Apply(meta("b", "u1")), &mut first);
        cache.record_event(cm, &Event::Apply(meta("c", "u2")), &mut first);
        assert_eq!(cache.records("u1").len(), 2);
        cache.record_event(cm, &Event::Delete(meta("a", "u1")), &mut first);
        assert_eq!(cache.records("u1").len(), 1);
        assert_eq!(cache.records("u2").len(), 1);
    }
}
