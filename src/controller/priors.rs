//! Durable record of what each target held before the current rollback point first overwrote it.
//!
//! Layout: per rollout, shard objects in the rollout's namespace (`<rollout>-ringfence-priors`,
//! `-priors-1`, ...), owned by the rollout and labelled with its uid. They are ConfigMaps, or
//! Secrets when the rollout's kind is Secret, so secret data only ever lives in Secrets.
//! Shard 0 holds the index (`index.json`: target namespace → existed, hashes, snapshot key and
//! the metadata ringfence overwrites). Snapshots are content-addressed and deduplicated; a
//! snapshot's JSON is cut into chunks (`s-<key>-<n>`) placed first-fit into shards so that no
//! object nears the 1 MiB limit. The index is written last and with the shard's resourceVersion,
//! so two writers cannot lose an entry and a reader never sees an entry without its snapshot.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{Error, api_code};
use super::targets::{ObservedTarget, Snapshot};
use crate::api::{ConfigKind, ConfigRollout, FIELD_MANAGER, MANAGED_BY_LABEL};
use crate::engine::PriorRecord;

/// Label with the owning rollout's uid (names can be longer than a label value allows).
pub const PRIORS_OF_LABEL: &str = "ringfence.dev/priors-of";
/// Annotation with a shard's position.
pub const SHARD_ANNOTATION: &str = "ringfence.dev/priors-shard";
const INDEX_KEY: &str = "index.json";
/// Bytes of keys and values per shard: far enough under 1 MiB for metadata and encoding overhead.
pub const SHARD_BUDGET: usize = 768 * 1024;
/// Largest piece of one snapshot stored under a single key.
pub const CHUNK_SIZE: usize = 256 * 1024;
/// Attempts at an optimistic-concurrency write before giving up for this reconcile.
const RECORD_ATTEMPTS: u32 = 5;

/// What one target held before its first overwrite.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    pub existed: bool,
    /// The engine's content hash of the data (what [`PriorRecord::content_hash`] reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    /// Key of the snapshot with the exact data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// `ringfence.dev/revision` the target carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Prior values of the labels ringfence sets (absent key = label was absent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Prior values of the annotations ringfence sets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl IndexEntry {
    pub fn record(&self) -> PriorRecord {
        PriorRecord {
            existed: self.existed,
            content_hash: self.content_hash.clone(),
            revision: self.revision.clone(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
struct Index {
    targets: BTreeMap<String, IndexEntry>,
    /// Snapshot key → number of chunks.
    snapshots: BTreeMap<String, u32>,
}

/// The store's logical content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriorState {
    pub targets: BTreeMap<String, IndexEntry>,
    /// Snapshot key → snapshot.
    pub snapshots: BTreeMap<String, Snapshot>,
}

impl PriorState {
    /// Adds the prior of a target unless one is recorded already: the first overwrite's prior is the one that counts.
    pub fn add(&mut self, namespace: &str, target: Option<&ObservedTarget>) -> bool {
        if self.targets.contains_key(namespace) {
            return false;
        }
        let entry = match target {
            None => IndexEntry::default(),
            Some(t) => {
                let key = snapshot_key(&t.snapshot);
                self.snapshots
                    .entry(key.clone())
                    .or_insert_with(|| t.snapshot.clone());
                IndexEntry {
                    existed: true,
                    content_hash: Some(t.content_hash.clone()),
                    snapshot: Some(key),
                    revision: t.revision.clone(),
                    labels: t.owned_labels.clone(),
                    annotations: t.owned_annotations.clone(),
                }
            }
        };
        self.targets.insert(namespace.to_string(), entry);
        true
    }

    /// The snapshot a target's entry points at.
    pub fn snapshot_of(&self, entry: &IndexEntry) -> Option<&Snapshot> {
        entry.snapshot.as_ref().and_then(|k| self.snapshots.get(k))
    }
}

/// Content address of a snapshot.
pub fn snapshot_key(snapshot: &Snapshot) -> String {
    let json = serde_json::to_vec(snapshot).unwrap_or_default();
    let digest = Sha256::digest(&json);
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn chunk_key(key: &str, n: u32) -> String {
    format!("s-{key}-{n}")
}

fn size(data: &BTreeMap<String, String>) -> usize {
    data.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Cuts `s` into pieces of at most `max` bytes on char boundaries.
fn chunks(s: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (head, tail) = rest.split_at(end);
        out.push(head);
        rest = tail;
    }
    if out.is_empty() {
        out.push("");
    }
    out
}

/// Reads the logical state back from shard contents (shard 0 first).
pub fn decode(shards: &[BTreeMap<String, String>]) -> Result<PriorState, Error> {
    let Some(index) = shards.first().and_then(|s| s.get(INDEX_KEY)) else {
        return Ok(PriorState::default());
    };
    let index: Index = serde_json::from_str(index)
        .map_err(|e| Error::Priors(format!("index does not parse: {e}")))?;
    let mut snapshots = BTreeMap::new();
    for (key, count) in &index.snapshots {
        let mut json = String::new();
        for n in 0..*count {
            let ck = chunk_key(key, n);
            let piece = shards
                .iter()
                .find_map(|s| s.get(&ck))
                .ok_or_else(|| Error::Priors(format!("snapshot {key} misses chunk {n}")))?;
            json.push_str(piece);
        }
        let snapshot: Snapshot = serde_json::from_str(&json)
            .map_err(|e| Error::Priors(format!("snapshot {key} does not parse: {e}")))?;
        snapshots.insert(key.clone(), snapshot);
    }
    Ok(PriorState {
        targets: index.targets,
        snapshots,
    })
}

/// Lays `state` out over shards, keeping chunks where they already are so that recording a
/// new target rewrites as few objects as possible. Unreferenced snapshots are dropped.
pub fn layout(
    current: &[BTreeMap<String, String>],
    state: &PriorState,
) -> Result<Vec<BTreeMap<String, String>>, Error> {
    let mut index = Index {
        targets: state.targets.clone(),
        snapshots: BTreeMap::new(),
    };
    let referenced: BTreeMap<&String, &Snapshot> = state
        .targets
        .values()
        .filter_map(|e| e.snapshot.as_ref())
        .filter_map(|k| state.snapshots.get(k).map(|s| (k, s)))
        .collect();

    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for (key, snapshot) in &referenced {
        let json = serde_json::to_string(snapshot).map_err(|e| Error::Priors(e.to_string()))?;
        let pieces = chunks(&json, CHUNK_SIZE);
        index.snapshots.insert((*key).clone(), pieces.len() as u32);
        for (n, piece) in pieces.into_iter().enumerate() {
            wanted.insert(chunk_key(key, n as u32), piece.to_string());
        }
    }

    let mut shards: Vec<BTreeMap<String, String>> = current
        .iter()
        .map(|s| {
            s.iter()
                .filter(|(k, v)| wanted.get(*k) == Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .collect();
    if shards.is_empty() {
        shards.push(BTreeMap::new());
    }
    for s in &shards {
        for k in s.keys() {
            wanted.remove(k);
        }
    }
    let index_json = serde_json::to_string(&index).map_err(|e| Error::Priors(e.to_string()))?;
    let index_size = INDEX_KEY.len() + index_json.len();
    if index_size > SHARD_BUDGET {
        return Err(Error::Priors(format!(
            "the index for {} targets exceeds the {SHARD_BUDGET}-byte shard budget",
            index.targets.len()
        )));
    }
    // Reserve the index's room in shard 0 before placing chunks.
    let room = |i: usize, s: &BTreeMap<String, String>| {
        let reserved = if i == 0 { index_size } else { 0 };
        SHARD_BUDGET.saturating_sub(size(s) + reserved)
    };
    if size(&shards[0]) + index_size > SHARD_BUDGET {
        // Shard 0 overflowed as the index grew: move its chunks out to make room.
        let moved: Vec<(String, String)> = std::mem::take(&mut shards[0]).into_iter().collect();
        wanted.extend(moved);
    }
    for (k, v) in wanted {
        let need = k.len() + v.len();
        let slot = (0..shards.len()).find(|&i| room(i, &shards[i]) >= need);
        let i = match slot {
            Some(i) => i,
            None => {
                shards.push(BTreeMap::new());
                shards.len() - 1
            }
        };
        shards[i].insert(k, v);
    }
    shards[0].insert(INDEX_KEY.to_string(), index_json);
    while shards.len() > 1 && shards.last().is_some_and(BTreeMap::is_empty) {
        shards.pop();
    }
    Ok(shards)
}

/// Name of shard `n` of a rollout's store, within the 253-character name limit.
pub fn shard_name(rollout: &str, n: usize) -> String {
    let suffix = if n == 0 {
        "-ringfence-priors".to_string()
    } else {
        format!("-ringfence-priors-{n}")
    };
    if rollout.len() + suffix.len() <= 253 {
        return format!("{rollout}{suffix}");
    }
    let digest = Sha256::digest(rollout.as_bytes());
    let short: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let keep = 253 - suffix.len() - short.len() - 1;
    let mut head = &rollout[..keep];
    head = head.trim_end_matches(['-', '.']);
    format!("{head}-{short}{suffix}")
}

/// One stored shard as read from the API.
#[derive(Clone, Debug)]
struct Shard {
    name: String,
    resource_version: Option<String>,
    data: BTreeMap<String, String>,
}

/// A rollout's prior store in the API.
pub struct PriorStore {
    client: Client,
    kind: ConfigKind,
    namespace: String,
    rollout: String,
    owner: OwnerReference,
    uid: String,
}

impl PriorStore {
    pub fn new(client: Client, rollout: &ConfigRollout) -> Result<Self, Error> {
        let owner = rollout
            .controller_owner_ref(&())
            .ok_or_else(|| Error::InvalidObject("ConfigRollout has no uid".into()))?;
        Ok(Self {
            client,
            kind: rollout.spec.config.kind,
            namespace: rollout.namespace().unwrap_or_default(),
            rollout: rollout.name_any(),
            uid: owner.uid.clone(),
            owner,
        })
    }

    fn selector(&self) -> String {
        format!("{PRIORS_OF_LABEL}={}", self.uid)
    }

    fn meta(&self, n: usize, resource_version: Option<String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(shard_name(&self.rollout, n)),
            namespace: Some(self.namespace.clone()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), FIELD_MANAGER.to_string()),
                (PRIORS_OF_LABEL.to_string(), self.uid.clone()),
            ])),
            annotations: Some(BTreeMap::from([(
                SHARD_ANNOTATION.to_string(),
                n.to_string(),
            )])),
            owner_references: Some(vec![self.owner.clone()]),
            resource_version,
            ..ObjectMeta::default()
        }
    }

    async fn read(&self) -> Result<Vec<Shard>, Error> {
        let lp = ListParams::default().labels(&self.selector());
        let mut shards: Vec<(usize, Shard)> = match self.kind {
            ConfigKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
                let list = api
                    .list(&lp)
                    .await
                    .map_err(|e| Error::kube("list prior shards", e))?;
                list.items
                    .into_iter()
                    .map(|cm| {
                        (
                            shard_index(&cm.metadata),
                            to_shard(cm.metadata, cm.data.unwrap_or_default()),
                        )
                    })
                    .collect()
            }
            ConfigKind::Secret => {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
                let list = api
                    .list(&lp)
                    .await
                    .map_err(|e| Error::kube("list prior shards", e))?;
                list.items
                    .into_iter()
                    .map(|s| {
                        let data = s
                            .data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                            .collect();
                        (shard_index(&s.metadata), to_shard(s.metadata, data))
                    })
                    .collect()
            }
        };
        shards.sort_by_key(|(n, _)| *n);
        Ok(shards.into_iter().map(|(_, s)| s).collect())
    }

    /// The recorded state.
    pub async fn load(&self) -> Result<PriorState, Error> {
        let shards = self.read().await?;
        decode(&shards.into_iter().map(|s| s.data).collect::<Vec<_>>())
    }

    /// Records the prior of each target not recorded yet (None = the target does not exist).
    pub async fn record(
        &self,
        targets: &[(String, Option<&ObservedTarget>)],
    ) -> Result<PriorState, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let shards = self.read().await?;
            let contents: Vec<_> = shards.iter().map(|s| s.data.clone()).collect();
            let mut state = decode(&contents)?;
            let mut changed = false;
            for (ns, target) in targets {
                changed |= state.add(ns, *target);
            }
            if !changed {
                return Ok(state);
            }
            let laid = layout(&contents, &state)?;
            match self.write(&shards, &laid).await {
                Ok(()) => return Ok(state),
                Err(e) if is_conflict(&e) && attempt < RECORD_ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes changed shards, overflow shards first and shard 0 (the index) last.
    async fn write(
        &self,
        current: &[Shard],
        laid: &[BTreeMap<String, String>],
    ) -> Result<(), Error> {
        for n in (0..laid.len().max(current.len())).rev() {
            let old = current.get(n);
            let new = laid.get(n).cloned().unwrap_or_default();
            if old.is_some_and(|o| o.data == new) {
                continue;
            }
            let rv = old.and_then(|o| o.resource_version.clone());
            self.put(n, rv, new).await?;
        }
        Ok(())
    }

    async fn put(
        &self,
        n: usize,
        resource_version: Option<String>,
        data: BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let name = shard_name(&self.rollout, n);
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        let exists = resource_version.is_some();
        let meta = self.meta(n, resource_version);
        let result = match self.kind {
            ConfigKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
                let cm = ConfigMap {
                    metadata: meta,
                    data: Some(data),
                    ..ConfigMap::default()
                };
                if exists {
                    api.replace(&name, &pp, &cm).await.map(drop)
                } else {
                    api.create(&pp, &cm).await.map(drop)
                }
            }
            ConfigKind::Secret => {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
                let secret = Secret {
                    metadata: meta,
                    data: Some(
                        data.into_iter()
                            .map(|(k, v)| (k, ByteString(v.into_bytes())))
                            .collect(),
                    ),
                    ..Secret::default()
                };
                if exists {
                    api.replace(&name, &pp, &secret).await.map(drop)
                } else {
                    api.create(&pp, &secret).await.map(drop)
                }
            }
        };
        result.map_err(|e| Error::kube(format!("write prior shard {name}"), e))
    }

    /// Deletes every shard: the rollback point moved on.
    pub async fn forget(&self) -> Result<(), Error> {
        for shard in self.read().await? {
            let res = match self.kind {
                ConfigKind::ConfigMap => {
                    Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace)
                        .delete(&shard.name, &DeleteParams::default())
                        .await
                        .map(drop)
                }
                ConfigKind::Secret => {
                    Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
                        .delete(&shard.name, &DeleteParams::default())
                        .await
                        .map(drop)
                }
            };
            match res {
                Ok(()) => {}
                Err(e) if api_code(&e) == Some(404) => {}
                Err(e) => return Err(Error::kube(format!("delete prior shard {}", shard.name), e)),
            }
        }
        Ok(())
    }
}

fn is_conflict(e: &Error) -> bool {
    // 409: resourceVersion moved or the shard was created meanwhile.
    matches!(e, Error::Kube { source, .. } if api_code(source) == Some(409))
}

fn shard_index(meta: &ObjectMeta) -> usize {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(SHARD_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX)
}

fn to_shard(meta: ObjectMeta, data: BTreeMap<String, String>) -> Shard {
    Shard {
        name: meta.name.unwrap_or_default(),
        resource_version: meta.resource_version,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(data: &[(&str, &str)]) -> ObservedTarget {
        ObservedTarget {
            snapshot: Snapshot {
                data: data
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                binary_data: BTreeMap::new(),
            },
            content_hash: "h".into(),
            ..ObservedTarget::default()
        }
    }

    #[test]
    fn identical_priors_share_one_snapshot() {
        let a = target(&[("k", "v")]);
        let b = target(&[("k", "v")]);
        let c = target(&[("k", "other")]);
        let mut state = PriorState::default();
        state.add("ns-a", Some(&a));
        state.add("ns-b", Some(&b));
        state.add("ns-c", Some(&c));
        state.add("ns-d", None);
        assert_eq!(state.snapshots.len(), 2);
        assert!(!state.targets["ns-d"].existed);
        let shards = layout(&[], &state).unwrap();
        assert_eq!(shards.len(), 1);
        assert_eq!(decode(&shards).unwrap(), state);
    }

    #[test]
    fn first_recorded_prior_wins() {
        let mut state = PriorState::default();
        assert!(state.add("ns", None));
        assert!(!state.add("ns", Some(&target(&[("k", "new")]))));
        assert!(!state.targets["ns"].existed);
    }

    #[test]
    fn large_priors_split_across_shards_under_budget() {
        let mut state = PriorState::default();
        for i in 0..6 {
            // ~900 KiB each, multi-byte characters included to exercise char boundaries.
            let big: String = format!("{i}é").repeat(300 * 1024);
            state.add(&format!("ns-{i}"), Some(&target(&[("blob", &big)])));
        }
        let shards = layout(&[], &state).unwrap();
        assert!(shards.len() >= 6, "{} shards", shards.len());
        for s in &shards {
            assert!(size(s) <= SHARD_BUDGET, "shard of {} bytes", size(s));
        }
        assert!(shards[0].contains_key(INDEX_KEY));
        assert_eq!(decode(&shards).unwrap(), state);
    }

    #[test]
    fn adding_a_target_keeps_existing_chunks_in_place() {
        let mut state = PriorState::default();
        let big = "x".repeat(600 * 1024);
        state.add("a", Some(&target(&[("k", &big)])));
        let first = layout(&[], &state).unwrap();
        state.add("b", Some(&target(&[("k", &"y".repeat(600 * 1024))])));
        let second = layout(&first, &state).unwrap();
        for (k, v) in first.iter().skip(1).flatten() {
            assert!(
                second.iter().skip(1).any(|s| s.get(k) == Some(v)),
                "chunk {k} moved"
            );
        }
        assert_eq!(decode(&second).unwrap(), state);
    }

    #[test]
    fn dropped_targets_free_their_snapshots() {
        let mut state = PriorState::default();
        state.add("a", Some(&target(&[("k", "v")])));
        let shards = layout(&[], &state).unwrap();
        state.targets.clear();
        let shards = layout(&shards, &state).unwrap();
        assert_eq!(shards.len(), 1);
        assert_eq!(shards[0].len(), 1);
    }

    #[test]
    fn missing_chunk_is_an_error_not_a_panic() {
        let mut state = PriorState::default();
        state.add("a", Some(&target(&[("k", "v")])));
        let mut shards = layout(&[], &state).unwrap();
        shards[0].retain(|k, _| k == INDEX_KEY);
        assert!(matches!(decode(&shards), Err(Error::Priors(_))));
        assert!(decode(&[BTreeMap::from([(INDEX_KEY.to_string(), "{".to_string())])]).is_err());
    }

    #[test]
    fn shard_names_fit_the_name_limit() {
        assert_eq!(shard_name("flags", 0), "flags-ringfence-priors");
        assert_eq!(shard_name("flags", 2), "flags-ringfence-priors-2");
        let long = "a".repeat(250);
        let name = shard_name(&long, 12);
        assert!(name.len() <= 253);
        assert_ne!(shard_name(&long, 12), shard_name(&"b".repeat(250), 12));
    }

    #[test]
    fn chunks_respect_char_boundaries() {
        let s = "é".repeat(10);
        let parts = chunks(&s, 3);
        assert!(parts.iter().all(|p| p.len() <= 3));
        assert_eq!(parts.concat(), s);
    }
}
