//! The target writer: server-side apply of a revision, exact restore of a prior, and the
//! observed form of a target the engine and the prior store work from.
//!
//! Exactness: a target must end up holding exactly the desired keys. Server-side apply under
//! `ringfence` (forced) sets our keys and drops keys we owned but no longer apply, but it cannot
//! drop keys another manager owns (e.g. a key the prior object had that the new config lacks).
//! So every apply is checked against its response, and what still differs is corrected by one
//! JSON merge patch under the same field manager. The same holds for the label and annotations
//! ringfence sets, which a restore puts back to their prior values (or removes).
//!
//! ConfigMap data: values that are valid UTF-8 go to `data`, other values to `binaryData`.
//! A source ConfigMap's `binaryData` keys holding UTF-8 text therefore land in `data`; the
//! bytes consumers read are identical, and the content hash covers bytes only.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::cache::Cache;
use super::error::{Error, api_code};
use super::priors::{PriorMeta, PriorStore};
use crate::api::{
    ConfigKind, FIELD_MANAGER, MANAGED_BY_LABEL, REVISION_ANNOTATION, ROLLOUT_ANNOTATION,
};
use crate::engine::{ResolvedConfig, RevisionKey, TargetState, revision_of};

/// Attempts for a write answered with 409 or 500 (kube's client already retries 429/503/504).
const WRITE_ATTEMPTS: u32 = 5;

/// A target's data in its exact stored representation (values as the API shows them).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// ConfigMap `data` (text), or Secret `data` (base64).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// ConfigMap `binaryData` (base64).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub binary_data: BTreeMap<String, String>,
}

impl Snapshot {
    /// The stored representation of a resolved configuration.
    pub fn of_config(config: &ResolvedConfig) -> Self {
        let mut out = Snapshot::default();
        for (k, v) in &config.data {
            match (config.kind, std::str::from_utf8(v)) {
                (ConfigKind::ConfigMap, Ok(text)) => {
                    out.data.insert(k.clone(), text.to_string());
                }
                (ConfigKind::ConfigMap, Err(_)) => {
                    out.binary_data.insert(k.clone(), B64.encode(v));
                }
                (ConfigKind::Secret, _) => {
                    out.data.insert(k.clone(), B64.encode(v));
                }
            }
        }
        out
    }

    /// A ConfigMap's data and binary data.
    pub fn of_config_map(cm: &ConfigMap) -> Self {
        Self {
            data: cm.data.clone().unwrap_or_default(),
            binary_data: cm
                .binary_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), B64.encode(&v.0)))
                .collect(),
        }
    }

    /// Key to raw bytes, as the engine hashes it. Undecodable base64 is hashed as its text.
    pub fn bytes(&self, kind: ConfigKind) -> BTreeMap<String, Vec<u8>> {
        let decode = |v: &String| B64.decode(v).unwrap_or_else(|_| v.clone().into_bytes());
        let mut out: BTreeMap<String, Vec<u8>> = match kind {
            ConfigKind::ConfigMap => self
                .data
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                .collect(),
            ConfigKind::Secret => self
                .data
                .iter()
                .map(|(k, v)| (k.clone(), decode(v)))
                .collect(),
        };
        out.extend(self.binary_data.iter().map(|(k, v)| (k.clone(), decode(v))));
        out
    }

    pub fn content_hash(&self, kind: ConfigKind, key: &RevisionKey) -> String {
        revision_of(
            &ResolvedConfig {
                kind,
                data: self.bytes(kind),
            },
            key,
        )
    }
}

/// A target object as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedTarget {
    pub snapshot: Snapshot,
    pub content_hash: String,
    pub revision: Option<String>,
    pub rollout: Option<String>,
    pub last_manager: Option<String>,
    /// Current values of the labels ringfence sets.
    pub owned_labels: BTreeMap<String, String>,
    /// Current values of the annotations ringfence sets.
    pub owned_annotations: BTreeMap<String, String>,
}

impl ObservedTarget {
    fn from_parts(
        kind: ConfigKind,
        meta: &ObjectMeta,
        snapshot: Snapshot,
        key: &RevisionKey,
    ) -> Self {
        let pick =
            |m: &Option<BTreeMap<String, String>>, keys: &[&str]| -> BTreeMap<String, String> {
                m.iter()
                    .flatten()
                    .filter(|(k, _)| keys.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
        let owned_annotations = pick(
            &meta.annotations,
            &[ROLLOUT_ANNOTATION, REVISION_ANNOTATION],
        );
        Self {
            content_hash: snapshot.content_hash(kind, key),
            snapshot,
            revision: owned_annotations.get(REVISION_ANNOTATION).cloned(),
            rollout: owned_annotations.get(ROLLOUT_ANNOTATION).cloned(),
            last_manager: last_manager(meta.managed_fields.as_deref().unwrap_or_default()),
            owned_labels: pick(&meta.labels, &[MANAGED_BY_LABEL]),
            owned_annotations,
        }
    }

    pub fn from_config_map(cm: &ConfigMap, key: &RevisionKey) -> Self {
        let snapshot = Snapshot::of_config_map(cm);
        Self::from_parts(ConfigKind::ConfigMap, &cm.metadata, snapshot, key)
    }

    pub fn from_secret(secret: &Secret, key: &RevisionKey) -> Self {
        let snapshot = Snapshot {
            data: secret
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), B64.encode(&v.0)))
                .collect(),
            binary_data: BTreeMap::new(),
        };
        Self::from_parts(ConfigKind::Secret, &secret.metadata, snapshot, key)
    }

    pub fn state(&self) -> TargetState {
        TargetState {
            exists: true,
            revision: self.revision.clone(),
            content_hash: Some(self.content_hash.clone()),
            rollout: self.rollout.clone(),
            last_manager: self.last_manager.clone(),
        }
    }
}

/// The manager of the most recent Update or Apply, by the entries' `time`.
pub fn last_manager(entries: &[ManagedFieldsEntry]) -> Option<String> {
    entries
        .iter()
        .filter(|e| matches!(e.operation.as_deref(), Some("Update" | "Apply")))
        .filter(|e| e.manager.is_some())
        .max_by_key(|e| e.time.as_ref().map(|t| t.0))
        .and_then(|e| e.manager.clone())
}

/// Exactly what a target must hold after a write or restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub snapshot: Snapshot,
    /// Labels ringfence sets: Some = this value, None = absent.
    pub labels: BTreeMap<String, Option<String>>,
    pub annotations: BTreeMap<String, Option<String>>,
}

impl Desired {
    pub fn revision(config: &ResolvedConfig, revision: &str, rollout_key: &str) -> Self {
        Self {
            snapshot: Snapshot::of_config(config),
            labels: BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                Some(FIELD_MANAGER.to_string()),
            )]),
            annotations: BTreeMap::from([
                (
                    ROLLOUT_ANNOTATION.to_string(),
                    Some(rollout_key.to_string()),
                ),
                (REVISION_ANNOTATION.to_string(), Some(revision.to_string())),
            ]),
        }
    }

    pub fn prior(entry: &PriorMeta, snapshot: Snapshot) -> Self {
        let restore = |keys: &[&str], prior: &BTreeMap<String, String>| {
            keys.iter()
                .map(|k| (k.to_string(), prior.get(*k).cloned()))
                .collect()
        };
        Self {
            snapshot,
            labels: restore(&[MANAGED_BY_LABEL], &entry.labels),
            annotations: restore(
                &[ROLLOUT_ANNOTATION, REVISION_ANNOTATION],
                &entry.annotations,
            ),
        }
    }

    /// Server-side apply body.
    pub fn apply_body(&self, kind: ConfigKind, name: &str, namespace: &str) -> Value {
        let present = |m: &BTreeMap<String, Option<String>>| -> Map<String, Value> {
            m.iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), Value::String(v.clone()))))
                .collect()
        };
        let mut body = json!({
            "apiVersion": "v1",
            "kind": kind_name(kind),
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": present(&self.labels),
                "annotations": present(&self.annotations),
            },
            "data": self.snapshot.data,
        });
        if kind == ConfigKind::ConfigMap {
            body["binaryData"] = json!(self.snapshot.binary_data);
        }
        body
    }

    /// A merge patch bringing `actual` to exactly this, or None when it already is.
    pub fn fixup(&self, actual: &ObservedTarget) -> Option<Value> {
        let mut patch = Map::new();
        for (field, want, have) in [
            ("data", &self.snapshot.data, &actual.snapshot.data),
            (
                "binaryData",
                &self.snapshot.binary_data,
                &actual.snapshot.binary_data,
            ),
        ] {
            let diff = map_diff(want, have);
            if !diff.is_empty() {
                patch.insert(field.to_string(), Value::Object(diff));
            }
        }
        let mut meta = Map::new();
        for (field, want, have) in [
            ("labels", &self.labels, &actual.owned_labels),
            ("annotations", &self.annotations, &actual.owned_annotations),
        ] {
            let diff: Map<String, Value> = want
                .iter()
                .filter(|(k, v)| have.get(*k) != v.as_ref())
                .map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String)))
                .collect();
            if !diff.is_empty() {
                meta.insert(field.to_string(), Value::Object(diff));
            }
        }
        if !meta.is_empty() {
            patch.insert("metadata".to_string(), Value::Object(meta));
        }
        (!patch.is_empty()).then_some(Value::Object(patch))
    }
}

fn map_diff(
    want: &BTreeMap<String, String>,
    have: &BTreeMap<String, String>,
) -> Map<String, Value> {
    let mut diff = Map::new();
    for (k, v) in want {
        if have.get(k) != Some(v) {
            diff.insert(k.clone(), Value::String(v.clone()));
        }
    }
    for k in have.keys() {
        if !want.contains_key(k) {
            diff.insert(k.clone(), Value::Null);
        }
    }
    diff
}

fn kind_name(kind: ConfigKind) -> &'static str {
    match kind {
        ConfigKind::ConfigMap => "ConfigMap",
        ConfigKind::Secret => "Secret",
    }
}

/// Runs an API call, retrying 409 and 500 with jittered exponential backoff.
pub async fn with_retries<T, F, Fut>(what: &str, mut call: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if matches!(api_code(&e), Some(409 | 500)) && attempt < WRITE_ATTEMPTS => {
                let base = 50u64 << attempt;
                let jitter = rand::random_range(0..=base);
                tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                attempt += 1;
            }
            Err(e) => return Err(Error::kube(what, e)),
        }
    }
}

/// Writes targets of one kind and name across namespaces.
#[derive(Clone)]
pub struct TargetWriter {
    client: Client,
    cache: Arc<Cache>,
    kind: ConfigKind,
    name: String,
    /// Writes in flight at once (the engine sizes batches by `maxConcurrent`).
    parallelism: usize,
    key: RevisionKey,
}

impl TargetWriter {
    pub fn new(
        client: Client,
        cache: Arc<Cache>,
        kind: ConfigKind,
        name: &str,
        parallelism: usize,
        key: RevisionKey,
    ) -> Self {
        Self {
            client,
            cache,
            kind,
            name: name.to_string(),
            parallelism: parallelism.max(1),
            key,
        }
    }

    /// Makes the target in `namespace` hold exactly `desired`, and remembers what it then
    /// holds in the cache. The apply sets ringfence's keys and drops those it owned; keys it
    /// cannot drop (owned by another manager) are removed by a merge patch after it. Until
    /// then the target's content does not hash to the revision, so a crash in between leaves
    /// a target that plainly does not hold it yet.
    pub async fn put(&self, namespace: &str, desired: &Desired) -> Result<(), Error> {
        let body = desired.apply_body(self.kind, &self.name, namespace);
        let apply = Patch::Apply(&body);
        let params = apply_params();
        let what = format!("apply {} {namespace}/{}", kind_name(self.kind), self.name);
        let mut held = match self.kind {
            ConfigKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
                let cm = with_retries(&what, || api.patch(&self.name, &params, &apply)).await?;
                (
                    ObservedTarget::from_config_map(&cm, &self.key),
                    cm.metadata.resource_version,
                )
            }
            ConfigKind::Secret => {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
                let s = with_retries(&what, || api.patch(&self.name, &params, &apply)).await?;
                (
                    ObservedTarget::from_secret(&s, &self.key),
                    s.metadata.resource_version,
                )
            }
        };
        if let Some(patch) = desired.fixup(&held.0) {
            held = self.merge(namespace, "correct", &patch).await?;
        }
        self.cache
            .wrote(self.kind, namespace, &self.name, Some((&held.0, held.1)));
        Ok(())
    }

    async fn merge(
        &self,
        namespace: &str,
        verb: &str,
        patch: &Value,
    ) -> Result<(ObservedTarget, Option<String>), Error> {
        let what = format!("{verb} {} {namespace}/{}", kind_name(self.kind), self.name);
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let merge = Patch::Merge(patch);
        Ok(match self.kind {
            ConfigKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
                let cm = with_retries(&what, || api.patch(&self.name, &pp, &merge)).await?;
                (
                    ObservedTarget::from_config_map(&cm, &self.key),
                    cm.metadata.resource_version,
                )
            }
            ConfigKind::Secret => {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
                let s = with_retries(&what, || api.patch(&self.name, &pp, &merge)).await?;
                (
                    ObservedTarget::from_secret(&s, &self.key),
                    s.metadata.resource_version,
                )
            }
        })
    }

    /// Deletes the target in `namespace`; already absent is fine.
    pub async fn delete(&self, namespace: &str) -> Result<(), Error> {
        let what = format!("delete {} {namespace}/{}", kind_name(self.kind), self.name);
        let dp = DeleteParams::default();
        let res = match self.kind {
            ConfigKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
                with_retries(&what, || api.delete(&self.name, &dp))
                    .await
                    .map(drop)
            }
            ConfigKind::Secret => {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
                with_retries(&what, || api.delete(&self.name, &dp))
                    .await
                    .map(drop)
            }
        };
        let res = match res {
            Err(Error::Kube { source, .. }) if api_code(&source) == Some(404) => Ok(()),
            other => other,
        };
        if res.is_ok() {
            self.cache.wrote(self.kind, namespace, &self.name, None);
        }
        res
    }

    /// Writes the revision to every namespace of a batch, concurrently; returns the failures.
    pub async fn write_batch(
        &self,
        namespaces: &[String],
        desired: &Desired,
    ) -> Vec<(String, Error)> {
        self.for_each(namespaces, |ns| async move { self.put(&ns, desired).await })
            .await
    }

    /// Restores every namespace to its recorded prior (deleting targets that did not exist),
    /// each from its record read whole and verified; returns the failures.
    pub async fn restore_batch(
        &self,
        namespaces: &[String],
        store: &PriorStore,
    ) -> Vec<(String, Error)> {
        self.for_each(namespaces, |ns| async move {
            let prior = store.fetch(&ns).await?;
            // A target ringfence never managed is not in the cache: look before writing,
            // so one that still holds its prior is seen to, and not written again.
            let current = fetch_target(&self.client, self.kind, &ns, &self.name, &self.key).await?;
            if !prior.meta.existed {
                return match current {
                    None => {
                        self.cache.wrote(self.kind, &ns, &self.name, None);
                        Ok(())
                    }
                    Some(_) => self.delete(&ns).await,
                };
            }
            let desired = Desired::prior(&prior.meta, prior.snapshot);
            if let Some((t, rv)) = &current
                && desired.fixup(t).is_none()
            {
                self.cache
                    .wrote(self.kind, &ns, &self.name, Some((t, rv.clone())));
                return Ok(());
            }
            self.put(&ns, &desired).await
        })
        .await
    }

    async fn for_each<'a, F, Fut>(&'a self, namespaces: &[String], op: F) -> Vec<(String, Error)>
    where
        F: Fn(String) -> Fut + 'a,
        Fut: Future<Output = Result<(), Error>> + 'a,
    {
        for_each_namespace(namespaces, self.parallelism, op).await
    }
}

/// Runs `op` for every namespace, `parallelism` at a time; returns the failures by namespace.
pub async fn for_each_namespace<F, Fut, E>(
    namespaces: &[String],
    parallelism: usize,
    op: F,
) -> Vec<(String, E)>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    stream::iter(namespaces.iter().cloned().map(|ns| {
        let done = op(ns.clone());
        async move { (ns, done.await) }
    }))
    .buffer_unordered(parallelism)
    .filter_map(|(ns, r)| async move { r.err().map(|e| (ns, e)) })
    .collect()
    .await
}

/// Reads a target whole, with its resourceVersion: None when it does not exist.
pub async fn fetch_target(
    client: &Client,
    kind: ConfigKind,
    namespace: &str,
    name: &str,
    key: &RevisionKey,
) -> Result<Option<(ObservedTarget, Option<String>)>, Error> {
    let what = format!("read {} {namespace}/{name}", kind_name(kind));
    Ok(match kind {
        ConfigKind::ConfigMap => Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(&what, e))?
            .map(|cm| {
                (
                    ObservedTarget::from_config_map(&cm, key),
                    cm.metadata.resource_version,
                )
            }),
        ConfigKind::Secret => Api::<Secret>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(&what, e))?
            .map(|s| {
                (
                    ObservedTarget::from_secret(&s, key),
                    s.metadata.resource_version,
                )
            }),
    })
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn entry(manager: &str, op: &str, secs: i64) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(op.into()),
            time: Some(Time(Timestamp::from_second(secs).unwrap())),
            ..ManagedFieldsEntry::default()
        }
    }

    #[test]
    fn last_manager_is_the_latest_update_or_apply() {
        let entries = vec![
            entry("ringfence", "Apply", 100),
            entry("kubectl-edit", "Update", 200),
            entry("ringfence", "Apply", 150),
        ];
        assert_eq!(last_manager(&entries).as_deref(), Some("kubectl-edit"));
        assert_eq!(last_manager(&[]), None);
        let mut odd = entry("x", "Apply", 300);
        odd.operation = None;
        assert_eq!(
            last_manager(&[entry("ringfence", "Apply", 1), odd]).as_deref(),
            Some("ringfence")
        );
    }

    fn key() -> RevisionKey {
        RevisionKey::new(vec![1; RevisionKey::MIN_LEN]).unwrap()
    }

    fn config(kind: ConfigKind, data: &[(&str, &[u8])]) -> ResolvedConfig {
        ResolvedConfig {
            kind,
            data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
        }
    }

    #[test]
    fn config_map_text_goes_to_data_and_bytes_to_binary_data() {
        let c = config(
            ConfigKind::ConfigMap,
            &[("a", b"text"), ("b", &[0xff, 0x00])],
        );
        let s = Snapshot::of_config(&c);
        assert_eq!(s.data["a"], "text");
        assert_eq!(s.binary_data["b"], B64.encode([0xff, 0x00]));
        assert_eq!(s.bytes(ConfigKind::ConfigMap), c.data);
        assert_eq!(
            s.content_hash(ConfigKind::ConfigMap, &key()),
            revision_of(&c, &key())
        );
    }

    #[test]
    fn secret_data_is_base64_and_hash_matches_the_revision() {
        let c = config(ConfigKind::Secret, &[("token", b"hunter2")]);
        let s = Snapshot::of_config(&c);
        assert_eq!(s.data["token"], B64.encode("hunter2"));
        assert_eq!(
            s.content_hash(ConfigKind::Secret, &key()),
            revision_of(&c, &key())
        );
    }

    #[test]
    fn apply_body_labels_and_annotates() {
        let c = config(ConfigKind::ConfigMap, &[("k", b"v")]);
        let d = Desired::revision(&c, "abc", "platform/flags");
        let body = d.apply_body(ConfigKind::ConfigMap, "flags", "cell-1");
        assert_eq!(body["metadata"]["labels"][MANAGED_BY_LABEL], "ringfence");
        assert_eq!(
            body["metadata"]["annotations"][ROLLOUT_ANNOTATION],
            "platform/flags"
        );
        assert_eq!(body["metadata"]["annotations"][REVISION_ANNOTATION], "abc");
        assert_eq!(body["data"]["k"], "v");
    }

    #[test]
    fn fixup_removes_foreign_keys_and_restores_metadata() {
        let prior_entry = PriorMeta {
            existed: true,
            annotations: BTreeMap::from([(REVISION_ANNOTATION.to_string(), "old".to_string())]),
            ..PriorMeta::default()
        };
        let prior = Snapshot {
            data: BTreeMap::from([("keep".to_string(), "1".to_string())]),
            binary_data: BTreeMap::new(),
        };
        let desired = Desired::prior(&prior_entry, prior);
        let actual = ObservedTarget {
            snapshot: Snapshot {
                data: BTreeMap::from([
                    ("keep".to_string(), "1".to_string()),
                    ("added".to_string(), "x".to_string()),
                ]),
                binary_data: BTreeMap::new(),
            },
            owned_labels: BTreeMap::from([(MANAGED_BY_LABEL.to_string(), "ringfence".to_string())]),
            owned_annotations: BTreeMap::from([
                (REVISION_ANNOTATION.to_string(), "new".to_string()),
                (ROLLOUT_ANNOTATION.to_string(), "p/r".to_string()),
            ]),
            ..ObservedTarget::default()
        };
        let patch = desired.fixup(&actual).unwrap();
        assert_eq!(
            patch,
            json!({
                "data": {"added": null},
                "metadata": {
                    "labels": {MANAGED_BY_LABEL: null},
                    "annotations": {REVISION_ANNOTATION: "old", ROLLOUT_ANNOTATION: null},
                },
            })
        );
        let exact = ObservedTarget {
            snapshot: desired.snapshot.clone(),
            owned_annotations: BTreeMap::from([(
                REVISION_ANNOTATION.to_string(),
                "old".to_string(),
            )]),
            ..ObservedTarget::default()
        };
        assert_eq!(desired.fixup(&exact), None);
    }

    #[test]
    fn observed_config_map_reports_state() {
        let mut cm = ConfigMap::default();
        cm.metadata.annotations = Some(BTreeMap::from([
            (REVISION_ANNOTATION.to_string(), "r1".to_string()),
            (ROLLOUT_ANNOTATION.to_string(), "ns/x".to_string()),
            ("other".to_string(), "y".to_string()),
        ]));
        cm.data = Some(BTreeMap::from([("k".to_string(), "v".to_string())]));
        let t = ObservedTarget::from_config_map(&cm, &key());
        let state = t.state();
        assert!(state.exists);
        assert_eq!(state.revision.as_deref(), Some("r1"));
        assert_eq!(state.rollout.as_deref(), Some("ns/x"));
        assert_eq!(
            state.content_hash,
            Some(revision_of(
                &config(ConfigKind::ConfigMap, &[("k", b"v")]),
                &key()
            ))
        );
        assert!(!t.owned_annotations.contains_key("other"));
    }
}
