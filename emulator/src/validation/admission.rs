//! Admission of custom resources against their CRD's structural schema and CEL
//! rules, as an [`AdmissionHook`] for the emulator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::schema::{CompiledCrd, FieldViolation, reason};
use crate::admission::AdmissionHook;

/// A hook that validates against the CRD's own schema, compiling each CRD
/// (by name and resourceVersion) once.
pub fn admission_hook() -> AdmissionHook {
    let cache: Mutex<HashMap<String, Arc<CompiledCrd>>> = Mutex::new(HashMap::new());
    Arc::new(move |crd: &Value, version: &str, object: &Value| {
        let key = format!(
            "{}@{}",
            crd["metadata"]["name"].as_str().unwrap_or_default(),
            crd["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
        );
        let compiled = {
            let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(&key) {
                Some(c) => Ok(c.clone()),
                None => CompiledCrd::new(crd).map(|c| {
                    let c = Arc::new(c);
                    cache.insert(key, c.clone());
                    c
                }),
            }
        };
        let result = compiled.and_then(|c| c.validate(version, object));
        match result {
            Ok((_, violations)) => violations,
            Err(e) => vec![FieldViolation::new(
                "",
                reason::INVALID,
                format!("the CustomResourceDefinition's schema cannot be used: {e}"),
            )],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(max: i64) -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com", "resourceVersion": max.to_string()},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {
                            "size": {"type": "integer", "maximum": max}}}}}}}]}
        })
    }

    #[test]
    fn rejects_what_the_schema_rejects_and_recompiles_a_changed_crd() {
        let hook = admission_hook();
        let widget = |size: i64| {
            json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w"}, "spec": {"size": size}})
        };
        let violations = hook(&crd(3), "v1", &widget(5));
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].field, "spec.size");
        assert_eq!(hook(&crd(3), "v1", &widget(2)), vec![]);
        assert_eq!(
            hook(&crd(9), "v1", &widget(5)),
            vec![],
            "a new resourceVersion is a new schema"
        );
    }
}
