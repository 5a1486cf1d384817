//! The chart's RBAC is exactly what the controller needs: the controller runs as the
//! chart's ServiceAccount, authorized only by the rendered roles, through rollouts that
//! exercise every kind of write (targets of both kinds, priors, workload restarts, a
//! rollback, events, status, the Lease). It is never denied, and every grant is used.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use ringfence::api::RETRY_ANNOTATION;
use ringfence::leader::Timing;
use serde_json::{Value, json};
use support::chart::{NAMESPACE, render_result};
use support::cluster::{Cluster, Replica, phase};
use support::rbac::{granted, used};

const NS: &str = "platform";
const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// The chart rendered with default values.
fn render() -> Vec<Value> {
    let result = render_result(&json!({}));
    assert!(result.get("error").is_none(), "render failed: {result}");
    result["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| o["object"].clone())
        .collect()
}

/// Cells 1..=3 in rings of 1 and 2; cell-1 starts with both targets, the others without.
/// Every cell runs a Deployment; cell-1 also a StatefulSet and a DaemonSet.
async fn cells(c: &Cluster) {
    c.namespace(NS, &[]).await;
    for i in 1..=3 {
        let ns = format!("cell-{i}");
        c.namespace(&ns, &[("ringfence.dev/allow-from", NS)]).await;
        c.deployment(&ns, "web", &[("app", "web")]).await;
    }
    c.config_map("cell-1", "checkout-flags", &[("retries", "1")])
        .await;
    c.emu
        .apply(&json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "checkout-secret", "namespace": "cell-1"},
            "stringData": {"token": "old"},
        }))
        .expect("secret");
    c.emu
        .apply(&json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "secret-source", "namespace": NS},
            "stringData": {"token": "new"},
        }))
        .expect("source secret");
    let template = json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    });
    c.emu
        .apply(&json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "cell-1", "labels": {"app": "web"}},
            "spec": {"replicas": 1, "serviceName": "db",
                     "selector": {"matchLabels": {"app": "web"}}, "template": template},
        }))
        .expect("statefulset");
    c.emu
        .apply(&json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "cell-1", "labels": {"app": "web"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template},
        }))
        .expect("daemonset");
}

/// Plays kubelet and the workload controllers: every workload is rolled out and ready.
async fn kubelet(client: Client, stop: Arc<AtomicBool>) {
    let pp = PatchParams::default();
    while !stop.load(Ordering::Relaxed) {
        for i in 1..=3 {
            let ns = format!("cell-{i}");
            let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
            for d in deployments
                .list(&Default::default())
                .await
                .into_iter()
                .flatten()
            {
                let status = json!({"status": {
                    "observedGeneration": d.metadata.generation,
                    "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2,
                }});
                let _ = deployments
                    .patch_status(&d.name_any(), &pp, &Patch::Merge(&status))
                    .await;
            }
            let sets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
            for s in sets.list(&Default::default()).await.into_iter().flatten() {
                let status = json!({"status": {
                    "observedGeneration": s.metadata.generation,
                    "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                }});
                let _ = sets
                    .patch_status(&s.name_any(), &pp, &Patch::Merge(&status))
                    .await;
            }
            let daemons = Api::<DaemonSet>::namespaced(client.clone(), &ns);
            for d in daemons
                .list(&Default::default())
                .await
                .into_iter()
                .flatten()
            {
                let status = json!({"status": {
                    "observedGeneration": d.metadata.generation,
                    "currentNumberScheduled": 1, "desiredNumberScheduled": 1,
                    "numberMisscheduled": 0, "numberReady": 1,
                    "updatedNumberScheduled": 1, "numberAvailable": 1,
                }});
                let _ = daemons
                    .patch_status(&d.name_any(), &pp, &Patch::Merge(&status))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn rollout(name: &str, config: Value, url: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "config": config,
            "rings": [
                {"name": "one", "namespaces": ["cell-1"], "bake": "1s"},
                {"name": "two", "namespaces": ["cell-2", "cell-3"], "bake": "1s"},
            ],
            "gates": [{"name": "smoke", "interval": "1s", "webhook": {"url": url, "timeout": "2s"}}],
            "workloads": {"selector": {"matchLabels": {"app": "web"}}, "restart": true},
            "progressDeadline": "60s",
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_rbac_is_exactly_what_the_controller_uses() {
    let c = Cluster::start_authorized().await;
    c.namespace(NAMESPACE, &[]).await;
    let objects = render();
    let rbac: Vec<&Value> = objects
        .iter()
        .filter(|o| RBAC_KINDS.contains(&o["kind"].as_str().unwrap_or("")))
        .collect();
    for obj in &rbac {
        c.emu.apply(obj).unwrap_or_else(|e| panic!("{obj}: {e}"));
    }
    let sa = rbac
        .iter()
        .find(|o| o["kind"] == "ServiceAccount")
        .and_then(|o| o["metadata"]["name"].as_str())
        .expect("a ServiceAccount is rendered");
    cells(&c).await;

    let stop = Arc::new(AtomicBool::new(false));
    let kubelet = tokio::spawn(kubelet(c.client.clone(), stop.clone()));
    let fail = Arc::new(AtomicBool::new(true));
    let url = support::webhook::serve(fail.clone()).await;

    let token = c.emu.service_account_token(NAMESPACE, sa);
    let timing = Timing {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(250),
    };
    let mut replica =
        Replica::start(c.emu.client_for_token(&token), "rbac", NAMESPACE, timing).await;
    replica.wait_leading(Duration::from_secs(30)).await;

    // Both target kinds roll back from ring two: priors recorded and extended, targets
    // written, restored and deleted, workloads restarted.
    for (name, config) in [
        (
            "checkout-flags",
            json!({"kind": "ConfigMap", "name": "checkout-flags", "data": {"retries": "7"}}),
        ),
        (
            "checkout-secret",
            json!({"kind": "Secret", "name": "checkout-secret", "sourceRef": {"name": "secret-source"}}),
        ),
    ] {
        c.apply_rollout(NS, rollout(name, config, &url)).await;
        c.wait_rollout(NS, name, "RolledBack from ring two", |r| {
            phase(r) == "RolledBack"
        })
        .await;
    }
    // Fixed: rolled out again it succeeds; another rollout reads its content from a
    // source ConfigMap.
    fail.store(false, Ordering::Relaxed);
    c.config_map(NS, "flags-source", &[("retries", "9")]).await;
    for (name, config) in [
        (
            "checkout-flags",
            json!({"kind": "ConfigMap", "name": "checkout-flags", "data": {"retries": "8"}}),
        ),
        (
            "sourced-flags",
            json!({"kind": "ConfigMap", "name": "sourced-flags", "sourceRef": {"name": "flags-source"}}),
        ),
    ] {
        c.apply_rollout(NS, rollout(name, config, &url)).await;
        c.wait_rollout(NS, name, "Succeeded", |r| {
            phase(r) == "Succeeded"
                && r.status.as_ref().and_then(|s| s.observed_generation) == r.metadata.generation
        })
        .await;
    }
    // The Secret rollout retried: its prior records, kept from the rollback, are updated.
    c.annotate_rollout(NS, "checkout-secret", RETRY_ANNOTATION, "again")
        .await;
    c.wait_rollout(NS, "checkout-secret", "Succeeded on retry", |r| {
        phase(r) == "Succeeded"
    })
    .await;
    replica.kill().await;
    stop.store(true, Ordering::Relaxed);
    kubelet.await.unwrap();

    let user = format!("system:serviceaccount:{NAMESPACE}:{sa}");
    let used = used(&c.emu.request_log().entries(), &user);
    let roles: Vec<&Value> = rbac
        .iter()
        .copied()
        .filter(|o| matches!(o["kind"].as_str(), Some("ClusterRole" | "Role")))
        .collect();
    let granted = granted(&roles);
    let unused: Vec<_> = granted.difference(&used).collect();
    println!("used by the controller:");
    for p in &used {
        println!("  {p:?}");
    }
    assert!(
        unused.is_empty(),
        "granted but never used:\n{}",
        unused
            .iter()
            .map(|p| format!("  {p:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
