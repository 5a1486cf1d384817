//! The `ConfigRollout` API (group `ringfence.dev`, version `v1alpha1`).

mod duration;
mod rollout;
mod spec;
mod status;

pub use duration::{DurationError, parse_duration};
pub use rollout::*;
pub use spec::*;
pub use status::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

/// Field manager for every write the controller makes.
pub const FIELD_MANAGER: &str = "ringfence";
/// Label on every object the controller manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Annotation naming the rollout (`namespace/name`) that wrote a target.
pub const ROLLOUT_ANNOTATION: &str = "ringfence.dev/rollout";
/// Annotation with the revision a target or pod template holds.
pub const REVISION_ANNOTATION: &str = "ringfence.dev/revision";
/// Namespace label that lets rollouts from the named namespace write into it.
pub const ALLOW_FROM_LABEL: &str = "ringfence.dev/allow-from";
/// Manual control annotations on a ConfigRollout; the value is a request id.
pub const PROMOTE_ANNOTATION: &str = "ringfence.dev/promote";
pub const ABORT_ANNOTATION: &str = "ringfence.dev/abort";
pub const RETRY_ANNOTATION: &str = "ringfence.dev/retry";
/// Label of a prior record, with the owning rollout's uid (names can be longer than a
/// label value allows).
pub const PRIORS_OF_LABEL: &str = "ringfence.dev/priors-of";
/// Annotation with a prior record's metadata as JSON.
pub const PRIOR_ANNOTATION: &str = "ringfence.dev/prior";
/// Keeps a prior record readable until ringfence lets it go.
pub const PRIOR_FINALIZER: &str = "ringfence.dev/prior-protection";
/// Label on layout records: the uid of the rollout whose rings they hold.
pub const LAYOUT_OF_LABEL: &str = "ringfence.dev/layout-of";
/// Label (`"true"`) of a Secret in the operator's namespace that registers a member cluster;
/// on a prior record of a member cluster's target, the name of that cluster.
pub const CLUSTER_LABEL: &str = "ringfence.dev/cluster";
/// Label of a cluster Secret naming the cluster (default: the Secret's name).
pub const CLUSTER_NAME_LABEL: &str = "ringfence.dev/cluster-name";
/// Key of a cluster Secret holding the member's kubeconfig.
pub const KUBECONFIG_KEY: &str = "kubeconfig";
/// Label on a prior record of a member cluster's target: the target's namespace there.
pub const TARGET_NAMESPACE_LABEL: &str = "ringfence.dev/target-namespace";
/// The name rings use for the cluster ringfence runs in.
pub const LOCAL_CLUSTER: &str = "local";

/// The ConfigRollout CRD: kube's derived CRD, with its schema made into one a
/// real kube-apiserver accepts and evaluates as intended (see [`make_structural`]).
///
/// Use this rather than `ConfigRollout::crd()` wherever the CRD is installed.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = ConfigRollout::crd();
    for version in &mut crd.spec.versions {
        let Some(props) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let mut schema =
            serde_json::to_value(&*props).expect("a JSONSchemaProps always serializes");
        make_structural(&mut schema);
        *props = serde_json::from_value(schema).expect("make_structural keeps the schema's shape");
    }
    crd
}

/// The CRD as YAML, exactly as committed under `crds/`.
pub fn crd_yaml() -> String {
    serde_saphyr::to_string(&crd()).expect("the CRD always serializes")
}

/// Rewrites what schemars derives for Rust types into what kube-apiserver means:
///
/// - no `nullable`: an `Option` is absent, never `null`. Without `nullable`, the
///   API server prunes a `null` before defaulting and validation, so `has()` in
///   CEL rules means "set" (with `nullable` a `null` would count as present);
/// - no `null` in `enum`s (a leftover of `Option<enum>`);
/// - the unsigned formats (`uint32`, ...) are not Kubernetes formats: they become
///   `int32`/`int64` (a `u32` field is bounded to `int32`'s range by its `maximum`
///   or by what the controller writes).
fn make_structural(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.remove("nullable");
            if let Some(Value::Array(values)) = map.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            let format = match map.get("format").and_then(Value::as_str) {
                Some("uint8" | "uint16" | "uint32" | "int8" | "int16") => Some("int32"),
                Some("uint64" | "uint") => Some("int64"),
                _ => None,
            };
            if let Some(format) = format {
                map.insert("format".into(), format.into());
            }
            map.values_mut().for_each(make_structural);
        }
        Value::Array(items) => items.iter_mut().for_each(make_structural),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        let crd = serde_json::to_value(crd()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a serde_json::Map<String, Value>>) {
        match v {
            Value::Object(m) => {
                out.push(m);
                m.values().for_each(|c| walk(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
            _ => {}
        }
    }

    #[test]
    fn schema_has_no_nullable_null_enum_or_unsigned_format() {
        let s = schema();
        let mut nodes = Vec::new();
        walk(&s, &mut nodes);
        for node in nodes {
            assert!(!node.contains_key("nullable"), "nullable left in {node:?}");
            if let Some(Value::Array(e)) = node.get("enum") {
                assert!(e.iter().all(|v| !v.is_null()), "null in enum {node:?}");
            }
            if let Some(f) = node.get("format").and_then(Value::as_str) {
                assert!(
                    ["int32", "int64", "double", "float", "date-time", "byte"].contains(&f),
                    "format {f} is not a Kubernetes format"
                );
            }
        }
    }

    #[test]
    fn failure_limit_is_an_int32_from_1() {
        let s = schema();
        let fl =
            &s["properties"]["spec"]["properties"]["gates"]["items"]["properties"]["failureLimit"];
        assert_eq!(fl["format"], "int32");
        assert_eq!(fl["minimum"], 1.0);
        assert_eq!(fl["maximum"], 100.0);
    }

    #[test]
    fn max_concurrent_is_int_or_string_with_bounds() {
        let s = schema();
        let mc =
            &s["properties"]["spec"]["properties"]["rings"]["items"]["properties"]["maxConcurrent"];
        assert_eq!(mc["x-kubernetes-int-or-string"], true);
        assert_eq!(mc["minimum"], 1.0);
        assert_eq!(mc["pattern"], PERCENT_PATTERN);
        assert!(mc.get("type").is_none());
    }

    #[test]
    fn conditions_are_a_map_keyed_by_type() {
        let s = schema();
        let conditions = &s["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"])
        );
    }

    #[test]
    fn crd_names_and_top_level_description() {
        let crd = crd();
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["cro".to_string()][..])
        );
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["ringfence".to_string()][..])
        );
        let desc = schema()["description"].as_str().unwrap().to_string();
        assert!(desc.starts_with("A ConfigRollout"), "{desc}");
        let v = &crd.spec.versions[0];
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<_> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.name.to_uppercase(), c.priority.unwrap_or(0)))
            .collect();
        assert_eq!(
            columns,
            [
                ("REVISION", 0),
                ("PHASE", 0),
                ("RING", 0),
                ("HEALTH", 0),
                ("MESSAGE", 1),
                ("AGE", 0)
            ]
            .map(|(n, p)| (n.to_string(), p))
        );
    }
}
