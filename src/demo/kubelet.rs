//! Plays the kubelet and the Deployment controller for the demo: the emulator
//! runs no pods, so a changed pod template is reported rolled out after a short delay.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

/// Reports every Deployment with `selector` rolled out `delay` after its spec changed.
pub async fn run(client: Client, selector: String, delay: Duration) {
    let api: Api<Deployment> = Api::all(client.clone());
    let mut pending: BTreeMap<(String, String, i64), Instant> = BTreeMap::new();
    loop {
        if let Ok(list) = api.list(&ListParams::default().labels(&selector)).await {
            for d in list {
                let generation = d.metadata.generation.unwrap_or(0);
                let observed = d
                    .status
                    .as_ref()
                    .and_then(|s| s.observed_generation)
                    .unwrap_or(0);
                if observed >= generation {
                    continue;
                }
                let ns = d.namespace().unwrap_or_default();
                let key = (ns.clone(), d.name_any(), generation);
                let since = *pending.entry(key.clone()).or_insert_with(Instant::now);
                if since.elapsed() < delay {
                    continue;
                }
                let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let status = json!({"status": {
                    "observedGeneration": generation,
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                    "readyReplicas": replicas,
                    "availableReplicas": replicas,
                }});
                let ns_api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
                if ns_api
                    .patch_status(
                        &d.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&status),
                    )
                    .await
                    .is_ok()
                {
                    pending.remove(&key);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
