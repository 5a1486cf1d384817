//! The resource types the emulator serves: built-in kinds plus the custom
//! resources registered by storing a `CustomResourceDefinition`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde_json::Value;

/// One served resource (a plural name in a group), across its versions.
#[derive(Debug, Clone)]
pub(crate) struct ResourceType {
    pub group: String,
    /// Served versions; the first is the preferred (storage) one.
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status_subresource: bool,
    /// Review kinds that are computed on `create` and never stored.
    pub create_only: bool,
    /// The defining CRD, for custom resources.
    pub crd: Option<Arc<Value>>,
    /// The core resource whose objects this one shows in another form
    /// (`events.k8s.io` Events are core Events).
    pub stored_as: Option<&'static str>,
}

impl ResourceType {
    /// The registry key: `plural` or `plural.group`.
    pub fn key(&self) -> String {
        crate::status::group_resource(&self.group, &self.plural)
    }

    /// Where the store keeps the objects.
    pub fn bucket(&self) -> String {
        self.stored_as.map_or_else(|| self.key(), str::to_string)
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    pub fn preferred_version(&self) -> &str {
        self.versions.first().map(String::as_str).unwrap_or("v1")
    }

    pub fn is_custom(&self) -> bool {
        self.crd.is_some()
    }

    /// The CRD's `spec.versions[]` entry for `version`.
    pub fn crd_version(&self, version: &str) -> Option<&Value> {
        self.crd
            .as_deref()?
            .pointer("/spec/versions")?
            .as_array()?
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(version))
    }

    /// The OpenAPI schema a custom resource version declares.
    pub fn schema(&self, version: &str) -> Option<&Value> {
        self.crd_version(version)?
            .pointer("/schema/openAPIV3Schema")
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        if self.create_only {
            vec!["create"]
        } else {
            vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
    create_only: bool,
    stored_as: Option<&'static str>,
}

const fn kind(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> Builtin {
    Builtin {
        group,
        version,
        plural,
        kind,
        namespaced,
        short_names: &[],
        categories: &[],
        status: false,
        create_only: false,
        stored_as: None,
    }
}

const fn short(mut b: Builtin, names: &'static [&'static str]) -> Builtin {
    b.short_names = names;
    b
}

const fn in_all(mut b: Builtin) -> Builtin {
    b.categories = &["all"];
    b
}

const fn with_status(mut b: Builtin) -> Builtin {
    b.status = true;
    b
}

const fn stored_as(mut b: Builtin, core: &'static str) -> Builtin {
    b.stored_as = Some(core);
    b
}

const fn review(mut b: Builtin) -> Builtin {
    b.create_only = true;
    b
}

const BUILTINS: &[Builtin] = &[
    with_status(short(
        kind("", "v1", "namespaces", "Namespace", false),
        &["ns"],
    )),
    short(kind("", "v1", "configmaps", "ConfigMap", true), &["cm"]),
    kind("", "v1", "secrets", "Secret", true),
    in_all(short(kind("", "v1", "services", "Service", true), &["svc"])),
    short(
        kind("", "v1", "serviceaccounts", "ServiceAccount", true),
        &["sa"],
    ),
    short(kind("", "v1", "events", "Event", true), &["ev"]),
    stored_as(
        short(
            kind("events.k8s.io", "v1", "events", "Event", true),
            &["ev"],
        ),
        "events",
    ),
    in_all(with_status(short(
        kind("apps", "v1", "deployments", "Deployment", true),
        &["deploy"],
    ))),
    in_all(with_status(short(
        kind("apps", "v1", "statefulsets", "StatefulSet", true),
        &["sts"],
    ))),
    in_all(with_status(short(
        kind("apps", "v1", "daemonsets", "DaemonSet", true),
        &["ds"],
    ))),
    kind("coordination.k8s.io", "v1", "leases", "Lease", true),
    with_status(short(
        kind(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
        ),
        &["crd", "crds"],
    )),
    kind("rbac.authorization.k8s.io", "v1", "roles", "Role", true),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
    ),
    with_status(short(
        kind(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
        ),
        &["pdb"],
    )),
    short(
        kind(
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "NetworkPolicy",
            true,
        ),
        &["netpol"],
    ),
    review(kind(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
    )),
    review(kind(
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "SubjectAccessReview",
        false,
    )),
];

/// Singular name as the API server derives it for built-in kinds.
fn singular_of(kind: &str) -> String {
    kind.to_lowercase()
}

fn builtin_types() -> Vec<ResourceType> {
    BUILTINS
        .iter()
        .map(|b| ResourceType {
            group: b.group.to_string(),
            versions: vec![b.version.to_string()],
            plural: b.plural.to_string(),
            singular: singular_of(b.kind),
            kind: b.kind.to_string(),
            namespaced: b.namespaced,
            short_names: b.short_names.iter().map(|s| s.to_string()).collect(),
            categories: b.categories.iter().map(|s| s.to_string()).collect(),
            status_subresource: b.status,
            create_only: b.create_only,
            crd: None,
            stored_as: b.stored_as,
        })
        .collect()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The resource a CRD defines, or why it cannot be served.
pub(crate) fn resource_from_crd(crd: &Value) -> Result<ResourceType, String> {
    let spec = crd.get("spec").ok_or("spec: Required value")?;
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .filter(|g| !g.is_empty())
        .ok_or("spec.group: Required value")?;
    let names = spec.get("names").ok_or("spec.names: Required value")?;
    let plural = names
        .get("plural")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .ok_or("spec.names.plural: Required value")?;
    let kind = names
        .get("kind")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or("spec.names.kind: Required value")?;
    let expected_name = format!("{plural}.{group}");
    if crate::meta::name(crd) != expected_name {
        return Err(format!(
            "metadata.name: Invalid value: \"{}\": must be spec.names.plural+\".\"+spec.group",
            crate::meta::name(crd)
        ));
    }
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .ok_or(
            "spec.versions: Invalid value: must have exactly one version marked as storage version",
        )?;
    let mut served: Vec<String> = Vec::new();
    let mut status = false;
    for v in versions {
        let Some(name) = v.get("name").and_then(Value::as_str) else {
            return Err("spec.versions[].name: Required value".into());
        };
        if v.pointer("/subresources/status").is_some() {
            status = true;
        }
        if !v.get("served").and_then(Value::as_bool).unwrap_or(false) {
            continue;
        }
        if v.get("storage").and_then(Value::as_bool).unwrap_or(false) {
            served.insert(0, name.to_string());
        } else {
            served.push(name.to_string());
        }
    }
    let namespaced = match spec.get("scope").and_then(Value::as_str) {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => {
            return Err(
                "spec.scope: Unsupported value: supported values: \"Cluster\", \"Namespaced\""
                    .into(),
            );
        }
    };
    Ok(ResourceType {
        group: group.to_string(),
        versions: served,
        plural: plural.to_string(),
        singular: names
            .get("singular")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase()),
        kind: kind.to_string(),
        namespaced,
        short_names: strings(names.get("shortNames")),
        categories: strings(names.get("categories")),
        status_subresource: status,
        create_only: false,
        crd: Some(Arc::new(crd.clone())),
        stored_as: None,
    })
}

/// All served resource types, keyed by `plural.group`.
pub(crate) struct Registry {
    types: RwLock<Arc<HashMap<String, Arc<ResourceType>>>>,
}

impl Registry {
    pub fn new() -> Self {
        let types = builtin_types()
            .into_iter()
            .map(|t| (t.key(), Arc::new(t)))
            .collect();
        Registry {
            types: RwLock::new(Arc::new(types)),
        }
    }

    fn snapshot(&self) -> Arc<HashMap<String, Arc<ResourceType>>> {
        match self.types.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn modify(&self, f: impl FnOnce(&mut HashMap<String, Arc<ResourceType>>)) {
        let mut guard = match self.types.write() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut next = (**guard).clone();
        f(&mut next);
        *guard = Arc::new(next);
    }

    /// The resource served at `/apis/{group}/{version}/{plural}`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        let t = self
            .snapshot()
            .get(&crate::status::group_resource(group, plural))?
            .clone();
        t.versions.iter().any(|v| v == version).then_some(t)
    }

    pub fn by_key(&self, key: &str) -> Option<Arc<ResourceType>> {
        self.snapshot().get(key).cloned()
    }

    pub fn all(&self) -> Vec<Arc<ResourceType>> {
        let mut all: Vec<_> = self.snapshot().values().cloned().collect();
        all.sort_by(|a, b| (&a.group, &a.plural).cmp(&(&b.group, &b.plural)));
        all
    }

    /// Groups and their served versions, preferred version first.
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.all() {
            let versions = groups.entry(t.group.clone()).or_default();
            for v in &t.versions {
                if !versions.contains(v) {
                    versions.push(v.clone());
                }
            }
        }
        groups
    }

    pub fn register(&self, t: ResourceType) {
        self.modify(|types| {
            types.insert(t.key(), Arc::new(t));
        });
    }

    pub fn unregister(&self, key: &str) {
        self.modify(|types| {
            if types.get(key).is_some_and(|t| t.is_custom()) {
                types.remove(key);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crd_becomes_a_resource() {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1beta1", "served": true, "storage": false},
                    {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}}
                ]
            }
        });
        let t = resource_from_crd(&crd).unwrap();
        assert_eq!(t.versions, vec!["v1", "v1beta1"]);
        assert!(t.status_subresource);
        assert_eq!(t.singular, "widget");
        let registry = Registry::new();
        registry.register(t);
        assert!(
            registry
                .lookup("example.com", "v1beta1", "widgets")
                .is_some()
        );
        assert!(registry.lookup("example.com", "v2", "widgets").is_none());
        registry.unregister("widgets.example.com");
        assert!(registry.lookup("example.com", "v1", "widgets").is_none());
        registry.unregister("configmaps");
        assert!(registry.lookup("", "v1", "configmaps").is_some());
    }
}
