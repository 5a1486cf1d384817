//! The target writer: server-side apply of a revision and exact restore of a prior.
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

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Map, Value, json};

use super::calls::{for_each_namespace, with_retries};
use super::error::{Error, api_code};
use super::members::{Fleet, Place};
use super::observed::{ObservedTarget, Snapshot, fetch_target};
use super::priors::{FetchedPrior, PriorStore};
use super::record::PriorMeta;
use crate::api::{
    ConfigKind, FIELD_MANAGER, MANAGED_BY_LABEL, REVISION_ANNOTATION, ROLLOUT_ANNOTATION,
};
use crate::engine::{ResolvedConfig, RevisionKey};

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
            "kind": kind.as_str(),
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

/// Writes targets of one kind and name across namespaces.
#[derive(Clone)]
pub struct TargetWriter {
    fleet: Arc<Fleet>,
    kind: ConfigKind,
    name: String,
    /// Writes in flight at once (the engine sizes batches by `maxConcurrent`).
    parallelism: usize,
    key: RevisionKey,
}

impl TargetWriter {
    pub fn new(
        fleet: Arc<Fleet>,
        kind: ConfigKind,
        name: &str,
        parallelism: usize,
        key: RevisionKey,
    ) -> Self {
        Self {
            fleet,
            kind,
            name: name.to_string(),
            parallelism: parallelism.max(1),
            key,
        }
    }

    /// Makes the target `key` hold exactly `desired`, and remembers what it then
    /// holds in the cache. The apply sets ringfence's keys and drops those it owned; keys it
    /// cannot drop (owned by another manager) are removed by a merge patch after it. Until
    /// then the target's content does not hash to the revision, so a crash in between leaves
    /// a target that plainly does not hold it yet.
    pub async fn put(&self, key: &str, desired: &Desired) -> Result<(), Error> {
        let place = self.fleet.place(key)?;
        let namespace = place.namespace.as_str();
        let body = desired.apply_body(self.kind, &self.name, namespace);
        let apply = Patch::Apply(&body);
        let params = apply_params();
        let what = format!("apply {} {key}/{}", self.kind.as_str(), self.name);
        let mut held = match self.kind {
            ConfigKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(place.client.clone(), namespace);
                let cm = with_retries(&what, || api.patch(&self.name, &params, &apply)).await?;
                (
                    ObservedTarget::from_config_map(&cm, &self.key),
                    cm.metadata.resource_version,
                )
            }
            ConfigKind::Secret => {
                let api: Api<Secret> = Api::namespaced(place.client.clone(), namespace);
                let s = with_retries(&what, || api.patch(&self.name, &params, &apply)).await?;
                (
                    ObservedTarget::from_secret(&s, &self.key),
                    s.metadata.resource_version,
                )
            }
        };
        if let Some(patch) = desired.fixup(&held.0) {
            held = self.merge(&place, key, "correct", &patch).await?;
        }
        place
            .cache
            .wrote(self.kind, namespace, &self.name, Some((&held.0, held.1)));
        Ok(())
    }

    async fn merge(
        &self,
        place: &Place,
        key: &str,
        verb: &str,
        patch: &Value,
    ) -> Result<(ObservedTarget, Option<String>), Error> {
        let namespace = place.namespace.as_str();
        let what = format!("{verb} {} {key}/{}", self.kind.as_str(), self.name);
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let merge = Patch::Merge(patch);
        Ok(match self.kind {
            ConfigKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(place.client.clone(), namespace);
                let cm = with_retries(&what, || api.patch(&self.name, &pp, &merge)).await?;
                (
                    ObservedTarget::from_config_map(&cm, &self.key),
                    cm.metadata.resource_version,
                )
            }
            ConfigKind::Secret => {
                let api: Api<Secret> = Api::namespaced(place.client.clone(), namespace);
                let s = with_retries(&what, || api.patch(&self.name, &pp, &merge)).await?;
                (
                    ObservedTarget::from_secret(&s, &self.key),
                    s.metadata.resource_version,
                )
            }
        })
    }

    /// Deletes the target `key`; already absent is fine.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        let place = self.fleet.place(key)?;
        let namespace = place.namespace.as_str();
        let what = format!("delete {} {key}/{}", self.kind.as_str(), self.name);
        let dp = DeleteParams::default();
        let res = match self.kind {
            ConfigKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(place.client.clone(), namespace);
                with_retries(&what, || api.delete(&self.name, &dp))
                    .await
                    .map(drop)
            }
            ConfigKind::Secret => {
                let api: Api<Secret> = Api::namespaced(place.client.clone(), namespace);
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
            place.cache.wrote(self.kind, namespace, &self.name, None);
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
    /// each from its record read whole and verified; returns the failures. The engine asks
    /// only for targets not seen holding their prior, so a target the cache knows is not
    /// read first: a delete of what is already gone, or an apply of what is already held,
    /// changes nothing, and whether the rollback is complete is judged from what is
    /// observed next.
    pub async fn restore_batch(
        &self,
        namespaces: &[String],
        store: &PriorStore,
    ) -> Vec<(String, Error)> {
        self.for_each(namespaces, |ns| async move {
            let prior = store.fetch(&ns).await?;
            self.restore(&ns, prior).await
        })
        .await
    }

    async fn restore(&self, ns: &str, prior: FetchedPrior) -> Result<(), Error> {
        if !prior.meta.existed {
            return self.delete(ns).await;
        }
        let desired = Desired::prior(&prior.meta, prior.snapshot);
        // A target ringfence never wrote (its write failed) is not in the cache: look first,
        // so one that still holds its prior is seen to, and not written again.
        let place = self.fleet.place(ns)?;
        if place
            .cache
            .target(self.kind, &place.namespace, &self.name)
            .is_none()
            && let Some((held, version)) = fetch_target(
                &place.client,
                self.kind,
                &place.namespace,
                &self.name,
                &self.key,
            )
            .await?
            && desired.fixup(&held).is_none()
        {
            place.cache.wrote(
                self.kind,
                &place.namespace,
                &self.name,
                Some((&held, version)),
            );
            return Ok(());
        }
        self.put(ns, &desired).await
    }

    async fn for_each<'a, F, Fut>(&'a self, namespaces: &[String], op: F) -> Vec<(String, Error)>
    where
        F: Fn(String) -> Fut + 'a,
        Fut: Future<Output = Result<(), Error>> + 'a,
    {
        for_each_namespace(namespaces, self.parallelism, op).await
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_body_labels_and_annotates() {
        let c = ResolvedConfig {
            kind: ConfigKind::ConfigMap,
            data: BTreeMap::from([("k".to_string(), b"v".to_vec())]),
        };
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
}
