//! Admission of custom resources: the CRD schema's `default`s, then a
//! validation hook supplied by the embedding program (such as
//! [`crate::validation::admission_hook`], the CRD's own schema and CEL rules).

use std::sync::Arc;

use serde_json::Value;

use crate::status::ApiError;

pub use crate::validation::schema::FieldViolation;

/// Validates a custom resource after defaulting: called with the CRD object,
/// the version written and the object; violations reject the write with 422.
pub type AdmissionHook = Arc<dyn Fn(&Value, &str, &Value) -> Vec<FieldViolation> + Send + Sync>;

/// The 422 the API server returns for these violations.
pub(crate) fn rejection(
    group: &str,
    kind: &str,
    name: &str,
    violations: &[FieldViolation],
) -> ApiError {
    ApiError::invalid(
        group,
        kind,
        name,
        violations
            .iter()
            .map(|v| (v.field.clone(), v.reason.clone(), v.message.clone()))
            .collect(),
    )
}

/// Fills in the schema's `default`s for absent fields, as structural
/// defaulting does: in every object present, for each property with a default.
pub(crate) fn apply_defaults(schema: &Value, obj: &mut Value) {
    match obj {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, prop) in props {
                    if !map.contains_key(name)
                        && let Some(default) = prop.get("default")
                    {
                        map.insert(name.clone(), default.clone());
                    }
                    if let Some(child) = map.get_mut(name) {
                        apply_defaults(prop, child);
                    }
                }
            }
            if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                let declared = schema.get("properties").and_then(Value::as_object);
                for (name, child) in map.iter_mut() {
                    if declared.is_none_or(|d| !d.contains_key(name)) {
                        apply_defaults(extra, child);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_defaults(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_fill_absent_fields_only() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "paused": {"type": "boolean", "default": false},
            "rings": {"type": "array", "items": {"type": "object", "properties": {
                "bake": {"type": "string", "default": "5m"}
            }}}
        }}}});
        let mut obj = json!({"spec": {"paused": true, "rings": [{"name": "a"}, {"bake": "1m"}]}});
        apply_defaults(&schema, &mut obj);
        assert_eq!(obj["spec"]["paused"], true);
        assert_eq!(obj["spec"]["rings"][0]["bake"], "5m");
        assert_eq!(obj["spec"]["rings"][1]["bake"], "1m");
        let mut empty = json!({});
        apply_defaults(&schema, &mut empty);
        assert_eq!(empty, json!({}));
    }

    #[test]
    fn rejection_reads_like_the_api_server() {
        let err = rejection(
            "ringfence.dev",
            "ConfigRollout",
            "x",
            &[FieldViolation::new(
                "spec.replicas",
                "FieldValueInvalid",
                "Invalid value: -1: must be >= 0",
            )],
        );
        assert_eq!(err.code, 422);
        assert_eq!(
            err.message,
            "ConfigRollout.ringfence.dev \"x\" is invalid: spec.replicas: Invalid value: -1: must be >= 0"
        );
        let v = err.to_value();
        assert_eq!(v["details"]["causes"][0]["reason"], "FieldValueInvalid");
        assert_eq!(v["details"]["kind"], "ConfigRollout");
    }
}
