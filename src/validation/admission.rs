//! The API emulator's admission of custom resources: the same schema and CEL
//! validator as `ringfence validate`, so there is one implementation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::schema::{CompiledCrd, FieldViolation, reason};
use crate::emulator::AdmissionHook;

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

    #[test]
    fn rejects_a_config_rollout_the_schema_rejects() {
        let crd = serde_json::to_value(crate::api::crd()).unwrap();
        let hook = admission_hook();
        let bad = json!({
            "apiVersion": "ringfence.dev/v1alpha1", "kind": "ConfigRollout",
            "metadata": {"name": "x", "namespace": "default"},
            "spec": {"config": {"name": "cfg", "data": {"a": "b"}},
                     "rings": [{"name": "canary", "namespaces": ["a"], "bake": "15"}]},
        });
        let violations = hook(&crd, "v1alpha1", &bad);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].field, "spec.rings[0].bake");
        let mut good = bad.clone();
        good["spec"]["rings"][0]["bake"] = json!("15s");
        assert_eq!(hook(&crd, "v1alpha1", &good), vec![]);
    }
}
