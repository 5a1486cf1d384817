//! The layout records: every ring's targets for a rollout's current revision, stored
//! beside the rollout so its status stays small at any fleet size.
//!
//! The engine's [`Layout`] document is split over ConfigMaps in the rollout's namespace,
//! owned by the rollout (the garbage collector removes them with it). Each record is
//! named after the document's hash, so a new layout is only ever created, never
//! updated: status names the hash of the one in force, and older ones are pruned once
//! a status naming the new one is persisted. A layout is read back only when its parts
//! are all present and hash to what status names; otherwise the rollout holds
//! (`LayoutMissing`) rather than guess where its targets are.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde::{Deserialize, Serialize};

use super::error::{Error, api_code};
use crate::api::{
    ConfigRollout, FIELD_MANAGER, LAYOUT_OF_LABEL, LayoutStatus, MANAGED_BY_LABEL,
    ROLLOUT_ANNOTATION,
};
use crate::engine::{Layout, hash_of};

/// Annotation on layout records: [`PartMeta`] as JSON.
const LAYOUT_ANNOTATION: &str = "ringfence.dev/layout";
/// The data key holding a record's part of the document.
const DOCUMENT_KEY: &str = "layout";
/// Bytes of the document per record, well under the API's 1 MiB object limit:
/// 10,000 targets of the longest namespace names fit in two records.
const PART_BYTES: usize = 512 * 1024;

/// Which part of which document a record holds.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct PartMeta {
    hash: String,
    part: usize,
    parts: usize,
}

fn record_name(uid: &str, hash: &str, part: usize) -> String {
    let short = hash.get(..12).unwrap_or(hash);
    format!("ringfence-layout-{uid}-{short}-{part}")
}

/// Splits a document into parts of at most `limit` bytes, at character boundaries.
fn split(document: &str, limit: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = document;
    loop {
        let mut end = rest.len().min(limit.max(4));
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (part, tail) = rest.split_at(end);
        parts.push(part);
        if tail.is_empty() {
            return parts;
        }
        rest = tail;
    }
}

/// Puts a document together from records, or says why it cannot be trusted.
fn assemble(records: &[ConfigMap], hash: &str) -> Result<Layout, String> {
    let mut parts: BTreeMap<usize, &str> = BTreeMap::new();
    let mut expected = None;
    for record in records {
        let Some(meta) = record
            .annotations()
            .get(LAYOUT_ANNOTATION)
            .and_then(|a| serde_json::from_str::<PartMeta>(a).ok())
            .filter(|m| m.hash == hash)
        else {
            continue;
        };
        expected = Some(meta.parts);
        let text = record
            .data
            .as_ref()
            .and_then(|d| d.get(DOCUMENT_KEY))
            .map_or("", String::as_str);
        parts.insert(meta.part, text);
    }
    let Some(expected) = expected else {
        return Err("no layout record holds it".into());
    };
    if let Some(missing) = (0..expected).find(|i| !parts.contains_key(i)) {
        return Err(format!(
            "layout record part {} of {expected} is missing",
            missing + 1
        ));
    }
    let document: String = parts.range(..expected).map(|(_, p)| *p).collect();
    Layout::decode(&document, hash)
}

struct Known {
    hash: String,
    layout: Arc<Layout>,
    rollout: ObjectRef<ConfigRollout>,
}

/// The layouts this controller wrote or read, by rollout uid, and which rollouts target
/// each namespace (what namespace and workload events are mapped by).
#[derive(Default)]
pub struct Layouts {
    inner: RwLock<Index>,
}

#[derive(Default)]
struct Index {
    known: HashMap<String, Known>,
    by_namespace: HashMap<String, BTreeSet<String>>,
}

impl Index {
    fn remember(&mut self, uid: &str, known: Known) {
        self.forget(uid);
        for ring in &known.layout.rings {
            for ns in &ring.targets {
                self.by_namespace
                    .entry(ns.clone())
                    .or_default()
                    .insert(uid.to_string());
            }
        }
        self.known.insert(uid.to_string(), known);
    }

    fn forget(&mut self, uid: &str) {
        let Some(old) = self.known.remove(uid) else {
            return;
        };
        for ns in old.layout.rings.iter().flat_map(|r| &r.targets) {
            if let Some(uids) = self.by_namespace.get_mut(ns) {
                uids.remove(uid);
                if uids.is_empty() {
                    self.by_namespace.remove(ns);
                }
            }
        }
    }
}

impl Layouts {
    fn cached(&self, uid: &str, hash: &str) -> Option<Arc<Layout>> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .known
            .get(uid)
            .filter(|k| k.hash == hash)
            .map(|k| k.layout.clone())
    }

    fn remember(&self, rollout: &ConfigRollout, uid: &str, hash: &str, layout: Arc<Layout>) {
        let known = Known {
            hash: hash.to_string(),
            layout,
            rollout: ObjectRef::from_obj(rollout),
        };
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.remember(uid, known);
    }

    /// Forgets the layouts of rollouts whose uid is not in `live`.
    pub fn retain(&self, live: &HashSet<String>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<String> = inner
            .known
            .keys()
            .filter(|uid| !live.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            inner.forget(&uid);
        }
    }

    /// The rollouts whose current layout targets `namespace`.
    pub fn targeting(&self, namespace: &str) -> Vec<ObjectRef<ConfigRollout>> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .filter_map(|uid| inner.known.get(uid).map(|k| k.rollout.clone()))
            .collect()
    }

    /// The layout `want` names: from memory when this controller wrote or read it, else
    /// from its records (one list). `Ok(Err(why))` when the records cannot give it.
    pub async fn read(
        &self,
        client: &Client,
        rollout: &ConfigRollout,
        want: &LayoutStatus,
    ) -> Result<Result<Arc<Layout>, String>, Error> {
        let uid = rollout.uid().unwrap_or_default();
        if let Some(layout) = self.cached(&uid, &want.hash) {
            return Ok(Ok(layout));
        }
        let api: Api<ConfigMap> =
            Api::namespaced(client.clone(), &rollout.namespace().unwrap_or_default());
        let records = api
            .list(&ListParams::default().labels(&format!("{LAYOUT_OF_LABEL}={uid}")))
            .await
            .map_err(|e| Error::kube("read the ring layout", e))?
            .items;
        Ok(assemble(&records, &want.hash).map(|layout| {
            let layout = Arc::new(layout);
            self.remember(rollout, &uid, &want.hash, layout.clone());
            layout
        }))
    }

    /// Stores `layout` unless its records already exist. Runs before the status naming
    /// it is written, so status never names a layout that is not stored.
    pub async fn write(
        &self,
        client: &Client,
        rollout: &ConfigRollout,
        layout: &Layout,
    ) -> Result<String, Error> {
        let uid = rollout.uid().unwrap_or_default();
        let document = layout.encode();
        let hash = hash_of(&document);
        if self.cached(&uid, &hash).is_some() {
            return Ok(hash);
        }
        let api: Api<ConfigMap> =
            Api::namespaced(client.clone(), &rollout.namespace().unwrap_or_default());
        let parts = split(&document, PART_BYTES);
        for (part, text) in parts.iter().enumerate() {
            let record = layout_record(rollout, &uid, &hash, part, parts.len(), text);
            match api.create(&PostParams::default(), &record).await {
                Ok(_) => {}
                // Named after the hash: an existing record is this part, from an earlier try.
                Err(e) if api_code(&e) == Some(409) => {}
                Err(e) => return Err(Error::kube("write the ring layout", e)),
            }
        }
        self.remember(rollout, &uid, &hash, Arc::new(layout.clone()));
        Ok(hash)
    }

    /// Deletes the rollout's layout records other than those of `keep`. Best effort: a
    /// record left behind is never read (its hash is not the one in status).
    pub async fn prune(&self, client: &Client, rollout: &ConfigRollout, keep: &str) {
        let uid = rollout.uid().unwrap_or_default();
        let api: Api<ConfigMap> =
            Api::namespaced(client.clone(), &rollout.namespace().unwrap_or_default());
        let listed = match api
            .list_metadata(&ListParams::default().labels(&format!("{LAYOUT_OF_LABEL}={uid}")))
            .await
        {
            Ok(list) => list.items,
            Err(e) => {
                tracing::warn!(error = %e, "could not list old layout records");
                return;
            }
        };
        for record in listed {
            let current = record
                .annotations()
                .get(LAYOUT_ANNOTATION)
                .and_then(|a| serde_json::from_str::<PartMeta>(a).ok())
                .is_some_and(|m| m.hash == keep);
            if current {
                continue;
            }
            let name = record.name_any();
            if let Err(e) = api.delete(&name, &DeleteParams::default()).await
                && api_code(&e) != Some(404)
            {
                tracing::warn!(record = %name, error = %e, "could not delete an old layout record");
            }
        }
    }
}

fn layout_record(
    rollout: &ConfigRollout,
    uid: &str,
    hash: &str,
    part: usize,
    parts: usize,
    text: &str,
) -> ConfigMap {
    let meta = PartMeta {
        hash: hash.to_string(),
        part,
        parts,
    };
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(record_name(uid, hash, part)),
            namespace: rollout.namespace(),
            labels: Some(
                [
                    (MANAGED_BY_LABEL.to_string(), FIELD_MANAGER.to_string()),
                    (LAYOUT_OF_LABEL.to_string(), uid.to_string()),
                ]
                .into(),
            ),
            annotations: Some(
                [
                    (
                        ROLLOUT_ANNOTATION.to_string(),
                        format!(
                            "{}/{}",
                            rollout.namespace().unwrap_or_default(),
                            rollout.name_any()
                        ),
                    ),
                    (
                        LAYOUT_ANNOTATION.to_string(),
                        serde_json::to_string(&meta).unwrap_or_default(),
                    ),
                ]
                .into(),
            ),
            owner_references: rollout.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        data: Some([(DOCUMENT_KEY.to_string(), text.to_string())].into()),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::LayoutRing;

    fn rollout() -> ConfigRollout {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ringfence.dev/v1alpha1", "kind": "ConfigRollout",
            "metadata": {"name": "flags", "namespace": "platform", "uid": "u-1"},
            "spec": {"config": {"kind": "ConfigMap", "name": "flags", "data": {"a": "1"}},
                     "rings": [{"name": "all", "namespaces": ["a"]}]},
        }))
        .unwrap()
    }

    fn layout(n: usize) -> Layout {
        Layout {
            rings: vec![LayoutRing {
                name: "all".into(),
                targets: (0..n).map(|i| format!("cell-ñ-{i:05}")).collect(),
                duplicates: Vec::new(),
            }],
        }
    }

    fn records(layout: &Layout, limit: usize) -> (String, Vec<ConfigMap>) {
        let document = layout.encode();
        let hash = hash_of(&document);
        let parts = split(&document, limit);
        let records = parts
            .iter()
            .enumerate()
            .map(|(i, p)| layout_record(&rollout(), "u-1", &hash, i, parts.len(), p))
            .collect();
        (hash, records)
    }

    #[test]
    fn a_layout_split_over_records_reads_back_whole() {
        let big = layout(10_000);
        let (hash, recs) = records(&big, PART_BYTES);
        assert_eq!(recs.len(), 1, "10,000 short names fit in one record");
        let (hash2, recs2) = records(&big, 1000);
        assert_eq!(hash, hash2);
        assert!(recs2.len() > 100);
        let mut shuffled = recs2.clone();
        shuffled.reverse();
        assert_eq!(assemble(&shuffled, &hash).unwrap(), big);
        let size = serde_json::to_vec(&recs[0]).unwrap().len();
        assert!(size < 1024 * 1024, "a record is {size} bytes");
    }

    #[test]
    fn a_layout_with_a_part_missing_or_damaged_is_not_read() {
        let (hash, mut recs) = records(&layout(500), 1000);
        let removed = recs.remove(3);
        let err = assemble(&recs, &hash).unwrap_err();
        assert!(err.contains("part 4 of"), "{err}");
        recs.insert(3, removed);
        recs[3]
            .data
            .as_mut()
            .unwrap()
            .insert(DOCUMENT_KEY.into(), "x".repeat(10));
        let err = assemble(&recs, &hash).unwrap_err();
        assert!(err.contains("hash"), "{err}");
        let err = assemble(&recs, "another").unwrap_err();
        assert_eq!(err, "no layout record holds it");
    }

    #[test]
    fn the_index_maps_namespaces_to_the_rollouts_targeting_them() {
        let layouts = Layouts::default();
        let r = rollout();
        layouts.remember(&r, "u-1", "h1", Arc::new(layout(3)));
        assert_eq!(layouts.targeting("cell-ñ-00002").len(), 1);
        assert!(layouts.targeting("elsewhere").is_empty());
        layouts.remember(&r, "u-1", "h2", Arc::new(layout(1)));
        assert!(
            layouts.targeting("cell-ñ-00002").is_empty(),
            "a new layout replaces the old one"
        );
        layouts.remember(&r, "u-2", "h3", Arc::new(layout(3)));
        layouts.retain(&HashSet::from(["u-2".to_string()]));
        assert_eq!(
            layouts.inner.read().unwrap().known.len(),
            1,
            "u-1 is forgotten"
        );
        assert_eq!(layouts.targeting("cell-ñ-00002").len(), 1);
        layouts.retain(&HashSet::new());
        assert!(layouts.targeting("cell-ñ-00002").is_empty());
        assert!(layouts.inner.read().unwrap().by_namespace.is_empty());
    }
}
