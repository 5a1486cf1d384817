//! The status writer: one JSON merge patch to the status subresource under field manager
//! `ringfence`, only when the engine's status differs from the persisted one, and guarded by
//! the resourceVersion the decision was based on (a stale decision gets a 409, not a write).

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Map, Value, json};

use super::error::Error;
use crate::api::{ConfigRollout, ConfigRolloutStatus, FIELD_MANAGER};

/// RFC 7386 merge patch turning `old` into `new`; None when they are equal.
pub fn merge_diff(old: &Value, new: &Value) -> Option<Value> {
    if old == new {
        return None;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) => {
                        if let Some(d) = merge_diff(ov, nv) {
                            patch.insert(k.clone(), d);
                        }
                    }
                    None => {
                        patch.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            Some(Value::Object(patch))
        }
        // Arrays and scalars are replaced whole; an object replacing a non-object must not
        // carry nulls, which a merge patch would drop.
        (_, n) => Some(n.clone()),
    }
}

/// Writes `desired` if it differs from `rollout`'s status, guarded by the rollout's
/// resourceVersion; returns the rollout as written, or None when nothing differed.
pub async fn write(
    api: &Api<ConfigRollout>,
    rollout: &ConfigRollout,
    desired: &ConfigRolloutStatus,
) -> Result<Option<ConfigRollout>, Error> {
    let current = rollout.status.clone().unwrap_or_default();
    if &current == desired {
        return Ok(None);
    }
    let old = serde_json::to_value(&current).unwrap_or(Value::Null);
    let new = serde_json::to_value(desired).unwrap_or(Value::Null);
    let Some(diff) = merge_diff(&old, &new) else {
        return Ok(None);
    };
    let patch = json!({
        "metadata": {"resourceVersion": rollout.resource_version()},
        "status": diff,
    });
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    api.patch_status(&rollout.name_any(), &pp, &Patch::Merge(&patch))
        .await
        .map(Some)
        .map_err(|e| Error::kube("write status", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(target: &mut Value, patch: &Value) {
        match (target.as_object_mut(), patch.as_object()) {
            (Some(t), Some(p)) => {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        apply(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
            _ => *target = patch.clone(),
        }
    }

    #[test]
    fn diff_round_trips_and_clears_removed_fields() {
        let old = json!({"phase": "Progressing", "currentRing": "a", "rollback": {"reason": "x", "gates": [1]}, "rings": [1, 2]});
        let new = json!({"phase": "Succeeded", "rollback": {"reason": "x", "gates": []}, "rings": [1, 2, 3]});
        let patch = merge_diff(&old, &new).unwrap();
        assert_eq!(patch["currentRing"], Value::Null);
        assert!(
            patch.get("rollback").unwrap().get("reason").is_none(),
            "unchanged fields are left out"
        );
        let mut result = old.clone();
        apply(&mut result, &patch);
        assert_eq!(result, new);
        assert_eq!(merge_diff(&new, &new), None);
    }

    #[test]
    fn equal_status_is_a_no_op() {
        let a = ConfigRolloutStatus::default();
        let old = serde_json::to_value(&a).unwrap();
        assert_eq!(merge_diff(&old, &old), None);
    }
}
