//! `events.k8s.io/v1` Events are stored as core `v1` Events, as on a real
//! server, so events recorded through either API show in both (kube's
//! event recorder writes the former, `kubectl describe` reads the latter).

use serde_json::{Value, json};

/// Fields named differently in the two APIs: (`events.k8s.io`, core).
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(mut obj: Value, api_version: &str, from_events: bool) -> Value {
    if let Some(map) = obj.as_object_mut() {
        for (events, core) in RENAMED {
            let (from, to) = if from_events {
                (events, core)
            } else {
                (core, events)
            };
            if let Some(v) = map.remove(*from) {
                map.insert(to.to_string(), v);
            }
        }
        map.insert("apiVersion".into(), json!(api_version));
        map.insert("kind".into(), json!("Event"));
    }
    obj
}

/// An `events.k8s.io/v1` Event in its stored, core form.
pub(crate) fn event_to_core(obj: Value) -> Value {
    rename(obj, "v1", true)
}

/// A stored core Event as `events.k8s.io/v1` shows it.
pub(crate) fn event_from_core(obj: &Value) -> Value {
    rename(obj.clone(), "events.k8s.io/v1", false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let e = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "regarding": {"kind": "ConfigRollout", "name": "x"},
            "note": "ring canary promoted", "reason": "Promoted", "type": "Normal",
            "reportingController": "ringfence"
        });
        let core = event_to_core(e.clone());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "x");
        assert_eq!(core["message"], "ring canary promoted");
        assert_eq!(core["reportingComponent"], "ringfence");
        assert_eq!(event_from_core(&core), e);
    }
}
