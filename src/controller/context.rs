//! What every reconcile shares.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::reflector::Store;

use super::events::Events;
use super::gates::GateEvaluator;
use crate::api::ConfigRollout;
use crate::engine::Settings;
use crate::metrics::Metrics;

pub struct Context {
    pub client: Client,
    pub events: Events,
    pub metrics: std::sync::Arc<Metrics>,
    pub gates: GateEvaluator,
    pub settings: Settings,
    /// The controller's cache of rollouts (for "claimed by another rollout" and trigger mapping).
    pub rollouts: Store<DeserializeGuard<ConfigRollout>>,
    /// Namespace labels, from a metadata-only watch.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// The one namespace whose rollouts are watched, if not all.
    pub watch_namespace: Option<String>,
    /// Consecutive failed reconciles per rollout (`namespace/name`), for backoff.
    pub failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// Counts a failure and returns how many happened in a row.
    pub fn failed(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}
