//! Patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902), an
//! approximation of strategic merge patch, and parsing of apply bodies.
//!
//! Strategic merge patch is a JSON merge patch in which the lists the
//! built-in kinds declare mergeable (containers, env, volumes, ports,
//! conditions, owner references by key; finalizers as a set) merge item by
//! item, and the directives kubectl sends are honoured (`$patch: delete` and
//! `replace`, `$deleteFromPrimitiveList/…`) or dropped when they only order
//! or prune (`$setElementOrder/…`, `$retainKeys`).

use serde_json::Value;

use crate::fields::{ListType, Schema};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Why a patch was refused: a body that does not parse (400) or a patch that cannot apply (422).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PatchError {
    Malformed(String),
    Failed(String),
}

fn parse_json(body: &[u8]) -> Result<Value, PatchError> {
    serde_json::from_slice(body).map_err(|e| PatchError::Malformed(e.to_string()))
}

/// An apply body: YAML, of which JSON is a subset.
pub(crate) fn parse_apply_body(body: &[u8]) -> Result<Value, PatchError> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(body).map_err(|e| PatchError::Malformed(e.to_string()))?;
    let value: Value =
        serde_saphyr::from_str(text).map_err(|e| PatchError::Malformed(e.to_string()))?;
    if !value.is_object() {
        return Err(PatchError::Malformed(
            "apply patch must be an object".to_string(),
        ));
    }
    Ok(value)
}

pub(crate) fn merge_patch(target: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let patch = parse_json(body)?;
    if !patch.is_object() {
        return Err(PatchError::Malformed(
            "merge patch must be a JSON object".into(),
        ));
    }
    let mut out = target.clone();
    json_patch::merge(&mut out, &patch);
    Ok(out)
}

pub(crate) fn json_patch(target: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let patch: json_patch::Patch =
        serde_json::from_slice(body).map_err(|e| PatchError::Malformed(e.to_string()))?;
    let mut out = target.clone();
    json_patch::patch(&mut out, &patch).map_err(|e| PatchError::Failed(e.to_string()))?;
    Ok(out)
}

pub(crate) fn strategic_patch(
    target: &Value,
    body: &[u8],
    schema: &Schema,
) -> Result<Value, PatchError> {
    let patch = parse_json(body)?;
    if !patch.is_object() {
        return Err(PatchError::Malformed(
            "strategic merge patch must be a JSON object".into(),
        ));
    }
    let mut out = target.clone();
    strategic_merge(&mut out, &patch, schema, &mut Vec::new());
    Ok(out)
}

fn directive(v: &Value) -> Option<&str> {
    v.get("$patch").and_then(Value::as_str)
}

/// The patch value with directive keys removed, as it is stored.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|i| directive(i).is_none())
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

enum Step {
    Remove,
    Recurse,
    MergeList(ListType),
    Set,
}

fn strategic_merge(target: &mut Value, patch: &Value, schema: &Schema, names: &mut Vec<String>) {
    if directive(patch) == Some("replace") || !target.is_object() {
        *target = strip_directives(patch);
        return;
    }
    let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) else {
        *target = strip_directives(patch);
        return;
    };
    for (k, pv) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(gone)) = (t.get_mut(field), pv.as_array()) {
                items.retain(|i| !gone.contains(i));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        names.push(k.clone());
        let step = match (t.get(k), pv) {
            (_, Value::Null) => Step::Remove,
            (_, v) if directive(v) == Some("delete") => Step::Remove,
            (Some(Value::Object(_)), Value::Object(_)) => Step::Recurse,
            (Some(Value::Array(_)), Value::Array(_)) => Step::MergeList(schema.list_type(names)),
            _ => Step::Set,
        };
        match step {
            Step::Remove => {
                t.remove(k);
            }
            Step::Recurse => {
                if let Some(cur) = t.get_mut(k) {
                    strategic_merge(cur, pv, schema, names);
                }
            }
            Step::MergeList(list_type) => {
                if let (Some(Value::Array(cur)), Value::Array(items)) = (t.get_mut(k), pv) {
                    merge_list(cur, items, &list_type, schema, names);
                }
            }
            Step::Set => {
                t.insert(k.clone(), strip_directives(pv));
            }
        }
        names.pop();
    }
}

fn merge_list(
    cur: &mut Vec<Value>,
    items: &[Value],
    list_type: &ListType,
    schema: &Schema,
    names: &mut Vec<String>,
) {
    if items.iter().any(|i| directive(i) == Some("replace")) {
        *cur = items
            .iter()
            .filter(|i| directive(i).is_none())
            .map(strip_directives)
            .collect();
        return;
    }
    match list_type {
        ListType::Map(keys) => {
            // Strategic merge patch keys items by their first merge key only.
            let Some(key) = keys.first() else {
                *cur = items.iter().map(strip_directives).collect();
                return;
            };
            for item in items {
                let pos = item
                    .get(key)
                    .and_then(|kv| cur.iter().position(|c| c.get(key) == Some(kv)));
                match (directive(item), pos) {
                    (Some("delete"), Some(p)) => {
                        cur.remove(p);
                    }
                    (Some("delete"), None) => {}
                    (_, Some(p)) => strategic_merge(&mut cur[p], item, schema, names),
                    (_, None) => cur.push(strip_directives(item)),
                }
            }
        }
        ListType::Set => {
            for item in items {
                if !cur.contains(item) {
                    cur.push(item.clone());
                }
            }
        }
        ListType::Atomic => *cur = items.iter().map(strip_directives).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml"),
            Some(PatchType::Apply)
        );
        assert_eq!(PatchType::from_content_type("text/plain"), None);
    }

    #[test]
    fn merge_and_json_patches() {
        let obj = json!({"data": {"a": "1", "b": "2"}});
        let merged = merge_patch(&obj, br#"{"data": {"a": null, "c": "3"}}"#).unwrap();
        assert_eq!(merged, json!({"data": {"b": "2", "c": "3"}}));
        let patched = json_patch(
            &obj,
            br#"[{"op": "replace", "path": "/data/a", "value": "9"}]"#,
        )
        .unwrap();
        assert_eq!(patched["data"]["a"], "9");
        assert!(matches!(
            json_patch(
                &obj,
                br#"[{"op": "test", "path": "/data/a", "value": "x"}]"#
            ),
            Err(PatchError::Failed(_))
        ));
        assert!(matches!(
            merge_patch(&obj, b"{nope"),
            Err(PatchError::Malformed(_))
        ));
        assert!(matches!(
            merge_patch(&obj, b"[1]"),
            Err(PatchError::Malformed(_))
        ));
    }

    #[test]
    fn strategic_lists_merge_by_key() {
        let obj = json!({
            "metadata": {"finalizers": ["a"]},
            "spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "v1", "env": [{"name": "X", "value": "1"}]},
                {"name": "side", "image": "s1"}
            ]}}}
        });
        let patch = br#"{
            "metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}],
                "containers": [
                    {"name": "app", "image": "v2", "env": [{"name": "Y", "value": "2"}]},
                    {"name": "side", "$patch": "delete"}
                ]
            }}}
        }"#;
        let out = strategic_patch(&obj, patch, &Schema::builtin()).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "app", "image": "v2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}])
        );
    }

    #[test]
    fn apply_bodies_are_yaml_or_json() {
        let y = parse_apply_body(b"apiVersion: v1\nkind: ConfigMap\ndata:\n  a: \"1\"\n").unwrap();
        assert_eq!(y["data"]["a"], "1");
        let j = parse_apply_body(br#"{"kind": "ConfigMap"}"#).unwrap();
        assert_eq!(j["kind"], "ConfigMap");
        assert!(parse_apply_body(b"- a\n- b\n").is_err());
    }
}
