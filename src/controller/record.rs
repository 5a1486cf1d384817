//! The prior record's format, shared by the prior store that writes and reads records and
//! the cache that keeps every record's metadata: what the `ringfence.dev/prior` annotation
//! says, parsed once when a record is seen rather than at every reconcile.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::observed::ObservedTarget;
use crate::api::{CLUSTER_LABEL, PRIOR_ANNOTATION, PRIORS_OF_LABEL, TARGET_NAMESPACE_LABEL};
use crate::engine::{PriorRecord, target_key};

/// What a record says about the prior, beside the data itself.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PriorMeta {
    /// Rollback point the record belongs to (`status.priors.epoch`).
    pub epoch: u64,
    pub existed: bool,
    /// The engine's content hash of the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    /// `ringfence.dev/revision` the target carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Prior values of the labels ringfence sets (absent key = label was absent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Prior values of the annotations ringfence sets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The real prior was lost and a retry accepted it: never restored from.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
}

impl PriorMeta {
    pub fn of(epoch: u64, target: Option<&ObservedTarget>) -> Self {
        match target {
            None => Self {
                epoch,
                ..Self::default()
            },
            Some(t) => Self {
                epoch,
                existed: true,
                content_hash: Some(t.content_hash.clone()),
                revision: t.revision.clone(),
                labels: t.owned_labels.clone(),
                annotations: t.owned_annotations.clone(),
                lost: false,
            },
        }
    }

    pub fn record(&self) -> PriorRecord {
        PriorRecord {
            existed: self.existed,
            content_hash: self.content_hash.clone(),
            revision: self.revision.clone(),
            lost: self.lost,
        }
    }
}

/// A record as the cache keeps it: what identifies it and its parsed prior.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedRecord {
    pub name: String,
    pub resource_version: Option<String>,
    /// The prior it records, or why it cannot be read.
    pub prior: Result<Arc<PriorMeta>, String>,
}

impl CachedRecord {
    pub fn of(meta: &ObjectMeta) -> Self {
        Self {
            name: meta.name.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone(),
            prior: read_prior(meta).map(Arc::new),
        }
    }
}

/// The target key a record is of: a member cluster's target's record lives in the hub and
/// names its cluster and namespace in labels; any other sits beside its target.
pub fn target_of(meta: &ObjectMeta) -> String {
    let labels = meta.labels.as_ref();
    let member = labels.and_then(|l| Some((l.get(CLUSTER_LABEL)?, l.get(TARGET_NAMESPACE_LABEL)?)));
    match member {
        Some((cluster, ns)) => target_key(Some(cluster), ns),
        None => meta.namespace.clone().unwrap_or_default(),
    }
}

/// The uid of the rollout that owns the record.
pub fn owner(meta: &ObjectMeta) -> Option<String> {
    meta.labels.as_ref()?.get(PRIORS_OF_LABEL).cloned()
}

/// What a record's annotation says, or why it cannot be read.
pub fn read_prior(meta: &ObjectMeta) -> Result<PriorMeta, String> {
    let json = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(PRIOR_ANNOTATION))
        .ok_or_else(|| format!("{PRIOR_ANNOTATION} is missing"))?;
    serde_json::from_str(json).map_err(|e| format!("malformed {PRIOR_ANNOTATION}: {e}"))
}
