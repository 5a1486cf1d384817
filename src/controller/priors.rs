//! The prior-content store: what each target held before the current rollback point first
//! overwrote it, kept durably so a rollback is exact.
//!
//! Layout: one record per target, beside it in the target's namespace, of the target's own
//! kind (a Secret's prior stays a Secret, in the namespace it lived in), named
//! [`record_name`]. A record holds the prior data exactly as stored (`data`/`binaryData`)
//! and, in the `ringfence.dev/prior` annotation, whether the target existed, the content
//! hash of that data, the revision and the ringfence labels and annotations it carried, and
//! the rollback point (epoch) it belongs to. So recording a batch costs one write per target,
//! whatever the size of the fleet, and a prior may be as large as the target itself. The
//! record format, and the parsed form the cache keeps, are in `record.rs`.
//!
//! Reads: a small batch reads each target to record on its own; a batch of a good part of
//! the rollout's targets reads them with one paginated list of the target's name, so a ring
//! of thousands costs a few reads instead of one per target. A restore reads each record.
//!
//! Guarantees:
//! - **Protected**: each record carries the finalizer [`PRIOR_FINALIZER`], so an ordinary
//!   `kubectl delete` (or a GitOps prune) only marks it; it stays readable until ringfence lets
//!   it go (when its rollout is gone). Records outlive a rollback point: the next one reuses
//!   them (an update), and a record of an older epoch never counts as a prior.
//! - **Verified**: a record whose annotation does not parse, or whose data does not hash to
//!   the recorded content hash, is unreadable and never restored from.
//! - **One owner per target**: the record is created before the target is first written,
//!   and creation is atomic in the API server, so when two rollouts race for a target exactly
//!   one records it, and only that one writes it.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::{Api, Client, ResourceExt};
use sha2::{Digest, Sha256};

use super::calls::for_each_namespace;
use super::error::{Error, api_code};
use super::members::Fleet;
use super::observed::{ObservedTarget, Snapshot, fetch_target, list_targets};
use super::record::{CachedRecord, PriorMeta, read_prior};
use crate::api::{
    CLUSTER_LABEL, ConfigKind, ConfigRollout, FIELD_MANAGER, MANAGED_BY_LABEL, PRIOR_ANNOTATION,
    PRIOR_FINALIZER, PRIORS_OF_LABEL, ROLLOUT_ANNOTATION, TARGET_NAMESPACE_LABEL,
};
use crate::engine::{RevisionKey, split_target};

const RECORD_PREFIX: &str = "ringfence-prior-";
/// Records written or read at once.
const PARALLELISM: usize = 32;
/// Page size when listing records.
const PAGE: u32 = 500;
/// Smallest batch whose priors are read by listing rather than one by one.
const LIST_AT_LEAST: usize = 64;

/// Name of the record of the target `config_name`, within the 253-character name limit.
pub fn record_name(config_name: &str) -> String {
    shortened(format!("{RECORD_PREFIX}{config_name}"), config_name)
}

/// Name of the record, in the hub, of the target `config_name` in `namespace` of member
/// `cluster`: unique per target, so two rollouts claiming it race for one name.
pub fn member_record_name(config_name: &str, cluster: &str, namespace: &str) -> String {
    let id = format!("{cluster}.{namespace}.{config_name}");
    shortened(format!("{RECORD_PREFIX}{id}"), &id)
}

/// `name`, cut to the 253-character limit with a digest of `id` when longer.
fn shortened(name: String, id: &str) -> String {
    if name.len() <= 253 {
        return name;
    }
    let digest = Sha256::digest(id.as_bytes());
    let short: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let keep = 253 - short.len() - 1;
    let head = name[..keep].trim_end_matches(['-', '.']);
    format!("{head}-{short}")
}

/// Where the record of one target lives in the hub.
struct RecordAt {
    namespace: String,
    name: String,
    /// The member cluster and namespace of a member's target.
    member: Option<(String, String)>,
}

/// One record as listed (metadata only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    pub prior: Arc<PriorMeta>,
    pub resource_version: Option<String>,
}

/// The rollout's records, as listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Priors {
    /// Records of the current rollback point, by target namespace.
    pub current: BTreeMap<String, RecordMeta>,
    /// Records of earlier rollback points, reused (updated) when the target is recorded again.
    pub stale: BTreeMap<String, RecordMeta>,
    /// Records that cannot be trusted, with why.
    pub unreadable: BTreeMap<String, String>,
    /// Resource versions of every record, for updates.
    versions: BTreeMap<String, Option<String>>,
}

/// A prior fetched whole, for a restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedPrior {
    pub meta: PriorMeta,
    pub snapshot: Snapshot,
}

/// Why recording one target's prior failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Another rollout's record claims the target.
    #[error("target is claimed by rollout {0}")]
    Claimed(String),
    /// The target already carries this rollout's in-flight content: its real prior was lost.
    #[error("target already holds revision {0} of this rollout: its prior content was lost")]
    PriorLost(String),
    #[error(transparent)]
    Api(#[from] Error),
}

/// A rollout's prior store in the API.
pub struct PriorStore {
    fleet: Arc<Fleet>,
    kind: ConfigKind,
    config_name: String,
    uid: String,
    key: String,
    epoch: u64,
    stable: Option<String>,
    /// Keys the content hashes of Secret records, as it keys their targets' revisions.
    revision_key: RevisionKey,
}

impl PriorStore {
    pub fn new(
        fleet: Arc<Fleet>,
        rollout: &ConfigRollout,
        revision_key: RevisionKey,
    ) -> Result<Self, Error> {
        let uid = rollout
            .uid()
            .ok_or_else(|| Error::InvalidObject("ConfigRollout has no uid".into()))?;
        let status = rollout.status.as_ref();
        Ok(Self {
            fleet,
            kind: rollout.spec.config.kind,
            config_name: rollout.spec.config.name.clone(),
            uid,
            key: format!(
                "{}/{}",
                rollout.namespace().unwrap_or_default(),
                rollout.name_any()
            ),
            epoch: status
                .and_then(|s| s.priors.as_ref())
                .map_or(0, |p| p.epoch),
            stable: status.and_then(|s| s.stable_revision.clone()),
            revision_key,
        })
    }

    fn record_at(&self, key: &str) -> RecordAt {
        match split_target(key) {
            (None, ns) => RecordAt {
                namespace: ns.to_string(),
                name: record_name(&self.config_name),
                member: None,
            },
            (Some(cluster), ns) => RecordAt {
                namespace: self.fleet.namespace().to_string(),
                name: member_record_name(&self.config_name, cluster, ns),
                member: Some((cluster.to_string(), ns.to_string())),
            },
        }
    }

    fn client(&self) -> Client {
        self.fleet.hub().clone()
    }

    /// The rollout's records, sorted by rollback point, from the cache's parsed entries.
    pub fn priors(&self, entries: Vec<(String, Arc<CachedRecord>)>) -> Priors {
        let local_name = record_name(&self.config_name);
        let mut priors = Priors::default();
        for (ns, entry) in entries {
            let expected = match split_target(&ns).0 {
                None => entry.name == local_name,
                Some(_) => entry.name == self.record_at(&ns).name,
            };
            if !expected {
                continue;
            }
            priors
                .versions
                .insert(ns.clone(), entry.resource_version.clone());
            let prior = match &entry.prior {
                Ok(prior) => prior.clone(),
                Err(why) => {
                    priors.unreadable.insert(ns, why.clone());
                    continue;
                }
            };
            let record = RecordMeta {
                prior,
                resource_version: entry.resource_version.clone(),
            };
            if record.prior.epoch == self.epoch {
                priors.current.insert(ns, record);
            } else {
                priors.stale.insert(ns, record);
            }
        }
        // An unreadable record of an older rollback point is simply replaced.
        priors
            .unreadable
            .retain(|ns, _| !priors.stale.contains_key(ns));
        priors
    }

    /// Records the prior of each target in `namespaces` (read whole from the API just
    /// before), returning the failures by namespace. `scope` is how many namespaces the
    /// rollout concerns: a batch of a good part of them is read by one paginated list of
    /// the target's name, a smaller one target by target.
    pub async fn record(
        &self,
        namespaces: &[String],
        priors: &Priors,
        scope: usize,
    ) -> Vec<(String, RecordError)> {
        let mut todo: BTreeMap<Option<&str>, usize> = BTreeMap::new();
        for ns in namespaces
            .iter()
            .filter(|ns| !priors.current.contains_key(*ns))
        {
            *todo.entry(split_target(ns).0).or_default() += 1;
        }
        // Cluster by cluster: a large batch in one is read by a list there.
        let mut listed: BTreeMap<Option<String>, BTreeMap<String, ObservedTarget>> =
            BTreeMap::new();
        for (cluster, count) in todo {
            if !worth_listing(count, scope) {
                continue;
            }
            let Ok(client) = self.fleet.client_of(cluster) else {
                continue;
            };
            match list_targets(&client, self.kind, &self.config_name, &self.revision_key).await {
                Ok(found) => {
                    listed.insert(cluster.map(str::to_string), found);
                }
                Err(e) => tracing::debug!(error = %e, "reading targets one by one"),
            }
        }
        let listed = &listed;
        for_each_namespace(namespaces, PARALLELISM, |ns| async move {
            let (cluster, plain) = split_target(&ns);
            let found = listed
                .get(&cluster.map(str::to_string))
                .map(|targets| targets.get(plain));
            self.record_one(&ns, priors, found).await
        })
        .await
    }

    /// Records that the priors of `namespaces` are lost (a retry accepted it): each record
    /// is written anew with no content, so nothing is ever restored from it.
    pub async fn record_lost(
        &self,
        namespaces: &[String],
        priors: &Priors,
    ) -> Vec<(String, RecordError)> {
        let lost = PriorMeta {
            epoch: self.epoch,
            lost: true,
            ..PriorMeta::default()
        };
        let lost = &lost;
        for_each_namespace(namespaces, PARALLELISM, |ns| async move {
            let rv = priors.versions.get(&ns).cloned().flatten();
            match self.put(&ns, lost, &Snapshot::default(), rv.clone()).await {
                Err(RecordError::Api(Error::Kube { source, .. }))
                    if rv.is_none() && api_code(&source) == Some(409) =>
                {
                    self.take_over(&ns, lost, &Snapshot::default()).await
                }
                other => other,
            }
        })
        .await
    }

    /// Records the prior of target `ns`; `listed` is what a list of its cluster found
    /// (`Some(None)`: it has no such target), None when it was not listed.
    async fn record_one(
        &self,
        ns: &str,
        priors: &Priors,
        listed: Option<Option<&ObservedTarget>>,
    ) -> Result<(), RecordError> {
        if priors.current.contains_key(ns) {
            return Ok(());
        }
        let target = match listed {
            Some(found) => found.cloned(),
            None => {
                let place = self.fleet.place(ns)?;
                fetch_target(
                    &place.client,
                    self.kind,
                    &place.namespace,
                    &self.config_name,
                    &self.revision_key,
                )
                .await?
                .map(|(t, _)| t)
            }
        };
        if let Some(t) = &target
            && t.rollout.as_deref() == Some(self.key.as_str())
            && let Some(revision) = t.revision.as_deref()
            && Some(revision) != self.stable.as_deref()
        {
            return Err(RecordError::PriorLost(revision.to_string()));
        }
        let meta = PriorMeta::of(self.epoch, target.as_ref());
        let snapshot = target.map(|t| t.snapshot).unwrap_or_default();
        match priors.versions.get(ns) {
            Some(rv) => self.put(ns, &meta, &snapshot, rv.clone()).await,
            None => match self.put(ns, &meta, &snapshot, None).await {
                Err(RecordError::Api(Error::Kube { source, .. }))
                    if api_code(&source) == Some(409) =>
                {
                    self.take_over(ns, &meta, &snapshot).await
                }
                other => other,
            },
        }
    }

    /// A record already exists though the listing showed none: ours (a listing that lagged)
    /// is updated unless it already serves this rollback point; another rollout's is a claim.
    async fn take_over(
        &self,
        ns: &str,
        meta: &PriorMeta,
        snapshot: &Snapshot,
    ) -> Result<(), RecordError> {
        let at = self.record_at(ns);
        let client = self.client();
        let found = match self.kind {
            ConfigKind::ConfigMap => get_meta::<ConfigMap>(&client, &at.namespace, &at.name).await,
            ConfigKind::Secret => get_meta::<Secret>(&client, &at.namespace, &at.name).await,
        }?;
        let Some(found) = found else {
            return self.put(ns, meta, snapshot, None).await;
        };
        let owner = found.labels.as_ref().and_then(|l| l.get(PRIORS_OF_LABEL));
        if owner != Some(&self.uid) {
            let claimant = found
                .annotations
                .as_ref()
                .and_then(|a| a.get(ROLLOUT_ANNOTATION))
                .cloned()
                .unwrap_or_else(|| "unknown".to_string());
            return Err(RecordError::Claimed(claimant));
        }
        let epoch = read_prior(&found).ok().map(|p| p.epoch);
        if epoch == Some(self.epoch) && !meta.lost {
            return Ok(());
        }
        self.put(ns, meta, snapshot, found.resource_version).await
    }

    fn record_meta(
        &self,
        ns: &str,
        prior: &PriorMeta,
        resource_version: Option<String>,
    ) -> Result<ObjectMeta, Error> {
        record_metadata(
            &self.record_at(ns),
            &self.uid,
            &self.key,
            prior,
            resource_version,
        )
    }

    /// Creates the record (no resource version) or replaces it (guarded by one).
    async fn put(
        &self,
        ns: &str,
        prior: &PriorMeta,
        snapshot: &Snapshot,
        resource_version: Option<String>,
    ) -> Result<(), RecordError> {
        let at = self.record_at(ns);
        let name = at.name.clone();
        let replace = resource_version.is_some();
        let metadata = self.record_meta(ns, prior, resource_version)?;
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        let result = match self.kind {
            ConfigKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(self.client(), &at.namespace);
                let cm = ConfigMap {
                    metadata,
                    data: Some(snapshot.data.clone()),
                    binary_data: Some(
                        snapshot
                            .binary_data
                            .iter()
                            .map(|(k, v)| (k.clone(), ByteString(decode_b64(v))))
                            .collect(),
                    ),
                    ..ConfigMap::default()
                };
                if replace {
                    api.replace(&name, &pp, &cm).await.map(|o| o.metadata)
                } else {
                    api.create(&pp, &cm).await.map(|o| o.metadata)
                }
            }
            ConfigKind::Secret => {
                let api: Api<Secret> = Api::namespaced(self.client(), &at.namespace);
                let secret = Secret {
                    metadata,
                    data: Some(
                        snapshot
                            .data
                            .iter()
                            .map(|(k, v)| (k.clone(), ByteString(decode_b64(v))))
                            .collect(),
                    ),
                    ..Secret::default()
                };
                if replace {
                    api.replace(&name, &pp, &secret).await.map(|o| o.metadata)
                } else {
                    api.create(&pp, &secret).await.map(|o| o.metadata)
                }
            }
        };
        let written = result
            .map_err(|e| RecordError::Api(Error::kube(format!("record prior {ns}/{name}"), e)))?;
        self.fleet.hub_cache().recorded(self.kind, &written);
        Ok(())
    }

    /// Reads a record whole and checks it: its data must hash to the recorded content hash.
    pub async fn fetch(&self, ns: &str) -> Result<FetchedPrior, Error> {
        let at = self.record_at(ns);
        let name = at.name.as_str();
        let what = format!("read prior {}/{name}", at.namespace);
        let (meta, snapshot) = match self.kind {
            ConfigKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(self.client(), &at.namespace);
                let cm = api
                    .get_opt(name)
                    .await
                    .map_err(|e| Error::kube(&what, e))?
                    .ok_or_else(|| Error::MissingPrior(ns.to_string()))?;
                let t = ObservedTarget::from_config_map(&cm, &self.revision_key);
                (cm.metadata, t.snapshot)
            }
            ConfigKind::Secret => {
                let api: Api<Secret> = Api::namespaced(self.client(), &at.namespace);
                let s = api
                    .get_opt(name)
                    .await
                    .map_err(|e| Error::kube(&what, e))?
                    .ok_or_else(|| Error::MissingPrior(ns.to_string()))?;
                let t = ObservedTarget::from_secret(&s, &self.revision_key);
                (s.metadata, t.snapshot)
            }
        };
        verify(
            ns,
            self.kind,
            self.epoch,
            &self.uid,
            &meta,
            snapshot,
            &self.revision_key,
        )
    }
}

/// A record's metadata: labels, the rollout annotation, the prior and the finalizer.
fn record_metadata(
    at: &RecordAt,
    uid: &str,
    key: &str,
    prior: &PriorMeta,
    resource_version: Option<String>,
) -> Result<ObjectMeta, Error> {
    let json = serde_json::to_string(prior).map_err(|e| Error::Priors(e.to_string()))?;
    let mut labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), FIELD_MANAGER.to_string()),
        (PRIORS_OF_LABEL.to_string(), uid.to_string()),
    ]);
    if let Some((cluster, namespace)) = &at.member {
        labels.insert(CLUSTER_LABEL.to_string(), cluster.clone());
        labels.insert(TARGET_NAMESPACE_LABEL.to_string(), namespace.clone());
    }
    Ok(ObjectMeta {
        name: Some(at.name.clone()),
        namespace: Some(at.namespace.clone()),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([
            (ROLLOUT_ANNOTATION.to_string(), key.to_string()),
            (PRIOR_ANNOTATION.to_string(), json),
        ])),
        finalizers: Some(vec![PRIOR_FINALIZER.to_string()]),
        resource_version,
        ..ObjectMeta::default()
    })
}

/// Checks a fetched record: ours, of this rollback point, its data as recorded.
fn verify(
    ns: &str,
    kind: ConfigKind,
    epoch: u64,
    uid: &str,
    meta: &ObjectMeta,
    snapshot: Snapshot,
    revision_key: &RevisionKey,
) -> Result<FetchedPrior, Error> {
    let unreadable = |why: String| Error::UnreadablePrior {
        namespace: ns.to_string(),
        why,
    };
    if meta
        .labels
        .as_ref()
        .and_then(|l| l.get(PRIORS_OF_LABEL))
        .map(String::as_str)
        != Some(uid)
    {
        return Err(unreadable("the record belongs to another rollout".into()));
    }
    let prior = read_prior(meta).map_err(unreadable)?;
    if prior.epoch != epoch {
        return Err(Error::MissingPrior(ns.to_string()));
    }
    if prior.existed {
        let hash = snapshot.content_hash(kind, revision_key);
        if prior.content_hash.as_deref() != Some(hash.as_str()) {
            return Err(unreadable(
                "its data does not match its recorded content hash".into(),
            ));
        }
    }
    Ok(FetchedPrior {
        meta: prior,
        snapshot,
    })
}

/// Whether `batch` of `of` objects is read faster by listing all of them in pages than by
/// one read each.
fn worth_listing(batch: usize, of: usize) -> bool {
    batch >= LIST_AT_LEAST && batch.saturating_mul(4) >= of
}

fn decode_b64(v: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(v)
        .unwrap_or_else(|_| v.as_bytes().to_vec())
}

async fn list_meta<K>(client: &Client, selector: &str) -> Result<Vec<ObjectMeta>, Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let mut out = Vec::new();
    let mut lp = ListParams::default().labels(selector).limit(PAGE);
    loop {
        let page = api
            .list_metadata(&lp)
            .await
            .map_err(|e| Error::kube("list prior records", e))?;
        out.extend(
            page.items
                .into_iter()
                .map(|m: PartialObjectMeta<K>| m.metadata),
        );
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(out),
        }
    }
}

async fn get_meta<K>(client: &Client, ns: &str, name: &str) -> Result<Option<ObjectMeta>, Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.get_metadata_opt(name)
        .await
        .map(|m| m.map(|m| m.metadata))
        .map_err(|e| Error::kube(format!("read prior {ns}/{name}"), e))
}

/// Lets go of the records of rollouts that no longer exist: their finalizer is removed
/// and they are deleted. A record whose uid is in `live` is kept without a look; any other
/// is let go only once its rollout is confirmed gone (or replaced by one with another uid).
/// Returns how many were let go.
pub async fn release_orphans(
    client: &Client,
    live: &std::collections::HashSet<String>,
) -> Result<usize, Error> {
    let mut released = 0;
    for kind in [ConfigKind::ConfigMap, ConfigKind::Secret] {
        let metas = match kind {
            ConfigKind::ConfigMap => list_meta::<ConfigMap>(client, PRIORS_OF_LABEL).await,
            ConfigKind::Secret => list_meta::<Secret>(client, PRIORS_OF_LABEL).await,
        }?;
        for meta in metas {
            let Some(uid) = meta.labels.as_ref().and_then(|l| l.get(PRIORS_OF_LABEL)) else {
                continue;
            };
            if live.contains(uid) || rollout_lives(client, &meta, uid).await? {
                continue;
            }
            let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
                continue;
            };
            release(client, kind, ns, name, &meta).await?;
            released += 1;
        }
    }
    Ok(released)
}

/// Whether the rollout a record names still exists with the record's uid. Unknown
/// (unreadable, not permitted) counts as alive: a record is never let go on a guess.
async fn rollout_lives(client: &Client, meta: &ObjectMeta, uid: &str) -> Result<bool, Error> {
    let Some((ns, name)) = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROLLOUT_ANNOTATION))
        .and_then(|k| k.split_once('/'))
    else {
        return Ok(true);
    };
    let api: Api<kube::core::DeserializeGuard<ConfigRollout>> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(found)) => Ok(found.uid().as_deref() == Some(uid)),
        Ok(None) => Ok(false),
        Err(e) => {
            tracing::debug!(error = %e, "cannot tell whether a record's rollout exists");
            Ok(true)
        }
    }
}

async fn release(
    client: &Client,
    kind: ConfigKind,
    ns: &str,
    name: &str,
    meta: &ObjectMeta,
) -> Result<(), Error> {
    let finalizers: Vec<&String> = meta
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != PRIOR_FINALIZER)
        .collect();
    let patch = Patch::Merge(serde_json::json!({
        "metadata": {"finalizers": finalizers, "resourceVersion": meta.resource_version},
    }));
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    let what = format!("release prior {ns}/{name}");
    let ok_if_gone = |r: Result<(), kube::Error>| match r {
        Err(e) if api_code(&e) == Some(404) => Ok(()),
        other => other.map_err(|e| Error::kube(&what, e)),
    };
    match kind {
        ConfigKind::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
            ok_if_gone(api.patch(name, &pp, &patch).await.map(drop))?;
            ok_if_gone(api.delete(name, &DeleteParams::default()).await.map(drop))
        }
        ConfigKind::Secret => {
            let api: Api<Secret> = Api::namespaced(client.clone(), ns);
            ok_if_gone(api.patch(name, &pp, &patch).await.map(drop))?;
            ok_if_gone(api.delete(name, &DeleteParams::default()).await.map(drop))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn observed(data: &BTreeMap<String, String>) -> ObservedTarget {
        let cm = ConfigMap {
            data: Some(data.clone()),
            ..ConfigMap::default()
        };
        ObservedTarget::from_config_map(&cm, &key())
    }

    fn local_record(ns: &str) -> RecordAt {
        RecordAt {
            namespace: ns.to_string(),
            name: record_name("flags"),
            member: None,
        }
    }

    fn key() -> RevisionKey {
        RevisionKey::new(vec![1; RevisionKey::MIN_LEN]).unwrap()
    }

    /// Ways a record can be damaged after it was written.
    #[derive(Clone, Debug)]
    enum Damage {
        None,
        EditValue(usize),
        DropKey(usize),
        AddKey,
        MangleAnnotation(usize),
        DropAnnotation,
        OtherEpoch,
        OtherOwner,
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            Just(Damage::None),
            any::<usize>().prop_map(Damage::EditValue),
            any::<usize>().prop_map(Damage::DropKey),
            Just(Damage::AddKey),
            any::<usize>().prop_map(Damage::MangleAnnotation),
            Just(Damage::DropAnnotation),
            Just(Damage::OtherEpoch),
            Just(Damage::OtherOwner),
        ]
    }

    proptest! {
        /// Whatever happens to a record by accident or a careless edit, reading it back either
        /// fails or yields exactly what was recorded: a wrong restore is never the outcome.
        /// (A forged record, annotation and data rewritten to agree, is for RBAC to prevent.)
        #[test]
        fn a_damaged_record_is_never_read_as_a_different_prior(
            data in prop::collection::btree_map("[a-z.]{1,8}", "[ -~]{0,16}", 1..6),
            damage in damage(),
        ) {
            let target = observed(&data);
            let prior = PriorMeta::of(3, Some(&target));
            let mut meta =
                record_metadata(&local_record("cell-1"), "uid-1", "platform/flags", &prior, None).unwrap();
            let mut snapshot = target.snapshot.clone();
            let keys: Vec<String> = snapshot.data.keys().cloned().collect();
            let annotations = meta.annotations.as_mut().unwrap();
            match &damage {
                Damage::None => {}
                Damage::EditValue(i) => {
                    let k = &keys[i % keys.len()];
                    snapshot.data.entry(k.clone()).and_modify(|v| v.push('!'));
                }
                Damage::DropKey(i) => {
                    snapshot.data.remove(&keys[i % keys.len()]);
                }
                Damage::AddKey => {
                    snapshot.data.insert("zz-added".into(), "x".into());
                }
                Damage::MangleAnnotation(i) => {
                    let json = annotations.get_mut(PRIOR_ANNOTATION).unwrap();
                    let cut = i % json.len();
                    json.truncate(cut);
                }
                Damage::DropAnnotation => {
                    annotations.remove(PRIOR_ANNOTATION);
                }
                Damage::OtherEpoch => {
                    let other = PriorMeta { epoch: 2, ..prior.clone() };
                    annotations.insert(PRIOR_ANNOTATION.into(), serde_json::to_string(&other).unwrap());
                }
                Damage::OtherOwner => {
                    meta.labels.as_mut().unwrap().insert(PRIORS_OF_LABEL.into(), "uid-2".into());
                }
            }
            let read = verify("cell-1", ConfigKind::ConfigMap, 3, "uid-1", &meta, snapshot, &key());
            match read {
                Ok(got) => {
                    prop_assert_eq!(&got.meta, &prior);
                    prop_assert_eq!(&got.snapshot, &target.snapshot);
                }
                Err(_) => prop_assert!(!matches!(damage, Damage::None)),
            }
        }
    }

    #[test]
    fn record_names_fit_the_name_limit() {
        assert_eq!(record_name("flags"), "ringfence-prior-flags");
        let long = "a".repeat(253);
        let name = record_name(&long);
        assert!(name.len() <= 253, "{}", name.len());
        assert_ne!(record_name(&long), record_name(&"b".repeat(253)));
    }
}
