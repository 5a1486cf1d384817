//! The observed form of a target, which the engine, the cache and the prior store work
//! from: its data in the exact stored representation and the metadata ringfence sets.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::api::ListParams;
use kube::{Api, Client};
use serde::{Deserialize, Serialize};

use super::error::Error;
use crate::api::{ConfigKind, MANAGED_BY_LABEL, REVISION_ANNOTATION, ROLLOUT_ANNOTATION};
use crate::engine::{ResolvedConfig, RevisionKey, TargetState, revision_of};

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

/// Reads a target whole, with its resourceVersion: None when it does not exist.
pub async fn fetch_target(
    client: &Client,
    kind: ConfigKind,
    namespace: &str,
    name: &str,
    key: &RevisionKey,
) -> Result<Option<(ObservedTarget, Option<String>)>, Error> {
    let what = format!("read {} {namespace}/{name}", kind.as_str());
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

/// Reads whole every target named `name`, across namespaces, in pages: a large batch of
/// targets costs a few requests instead of one each. The list is one consistent snapshot, so
/// a namespace missing from it has no such target.
pub async fn list_targets(
    client: &Client,
    kind: ConfigKind,
    name: &str,
    key: &RevisionKey,
) -> Result<BTreeMap<String, ObservedTarget>, Error> {
    let what = format!("list {} {name}", kind.as_str());
    let mut out = BTreeMap::new();
    let mut params = ListParams::default()
        .fields(&format!("metadata.name={name}"))
        .limit(LIST_PAGE);
    loop {
        let next = match kind {
            ConfigKind::ConfigMap => {
                let page = Api::<ConfigMap>::all(client.clone())
                    .list(&params)
                    .await
                    .map_err(|e| Error::kube(&what, e))?;
                for cm in &page.items {
                    let ns = cm.metadata.namespace.clone().unwrap_or_default();
                    out.insert(ns, ObservedTarget::from_config_map(cm, key));
                }
                page.metadata.continue_
            }
            ConfigKind::Secret => {
                let page = Api::<Secret>::all(client.clone())
                    .list(&params)
                    .await
                    .map_err(|e| Error::kube(&what, e))?;
                for s in &page.items {
                    let ns = s.metadata.namespace.clone().unwrap_or_default();
                    out.insert(ns, ObservedTarget::from_secret(s, key));
                }
                page.metadata.continue_
            }
        };
        match next.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

/// Objects per page when listing targets.
const LIST_PAGE: u32 = 500;

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
