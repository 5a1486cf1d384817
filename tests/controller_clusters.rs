//! Rings across clusters against three API emulators: a hub, where the controller, the
//! rollouts, their status and every prior record live, and two member clusters registered
//! by cluster Secrets in the hub.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kube_emulator::{Emulator, EmulatorHandle};
use ringfence::api::{ABORT_ANNOTATION, ConfigRollout, PRIORS_OF_LABEL, RETRY_ANNOTATION};
use serde_json::{Value, json};
use support::cluster::{CLUSTER_NAMESPACE, Cluster, condition, data, phase};
use support::webhook::serve;

const NS: &str = "platform";
const NAME: &str = "checkout-flags";

/// The hub and its two members, `eu` and `us`.
struct Fleet {
    hub: Cluster,
    eu: EmulatorHandle,
    us: EmulatorHandle,
}

async fn member() -> EmulatorHandle {
    Emulator::builder().start().await.expect("member starts")
}

async fn namespace(client: &Client, name: &str, labels: &[(&str, &str)]) {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
}

async fn config_map(client: &Client, ns: &str, value: &str) {
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": NAME, "namespace": ns},
        "data": {"retries": value},
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .expect("configmap created");
}

/// What each target holds: its `retries`, or None where it does not exist.
async fn retries(client: &Client, ns: &str) -> Option<String> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(NAME)
        .await
        .expect("target read")
        .map(|cm| data(&cm).get("retries").cloned().unwrap_or_default())
}

/// Registers `member` as cluster `name` with `labels`, letting rollouts from `platform`
/// target it.
async fn register(hub: &Cluster, name: &str, member: &EmulatorHandle, labels: &[(&str, &str)]) {
    let mut all: BTreeMap<&str, &str> = labels.iter().copied().collect();
    all.insert("ringfence.dev/cluster", "true");
    all.insert("ringfence.dev/allow-from", NS);
    register_with(hub, name, &member.kubeconfig(), all).await;
}

async fn register_with(hub: &Cluster, name: &str, kubeconfig: &str, labels: BTreeMap<&str, &str>) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": CLUSTER_NAMESPACE, "labels": labels},
        "stringData": {"kubeconfig": kubeconfig},
    }))
    .unwrap();
    Api::<Secret>::namespaced(hub.client.clone(), CLUSTER_NAMESPACE)
        .patch(
            name,
            &PatchParams::apply("test-user").force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("cluster Secret applied");
}

/// Hub: `cell-0` holds `hub-0`. eu: `cell-1` holds `eu-1`, `cell-2` has none. us:
/// `cell-1` holds `us-1`, `cell-3` holds `us-3`, both labelled `app=checkout`.
async fn fleet() -> Fleet {
    let mut hub = Cluster::start().await;
    hub.namespace(NS, &[]).await;
    hub.namespace(CLUSTER_NAMESPACE, &[]).await;
    hub.namespace("cell-0", &[("ringfence.dev/allow-from", NS)])
        .await;
    config_map(&hub.client, "cell-0", "hub-0").await;
    let eu = member().await;
    let us = member().await;
    let (euc, usc) = (eu.client(), us.client());
    namespace(&euc, "cell-1", &[]).await;
    namespace(&euc, "cell-2", &[]).await;
    config_map(&euc, "cell-1", "eu-1").await;
    for ns in ["cell-1", "cell-3"] {
        namespace(&usc, ns, &[("app", "checkout")]).await;
        config_map(&usc, ns, &format!("us-{}", &ns[5..])).await;
    }
    register(&hub, "eu", &eu, &[("tier", "canary")]).await;
    register(&hub, "us", &us, &[("tier", "prod")]).await;
    hub.start_controller().await;
    Fleet { hub, eu, us }
}

/// Three rings: the hub, then eu by name, then every prod cluster by label. The ring
/// `two` is gated by a webhook that fails it while told to.
fn rollout(url: &str, value: &str, bake_two: &str, deadline: &str) -> Value {
    json!({
        "metadata": {"name": "flags"},
        "spec": {
            "config": {"name": NAME, "data": {"retries": value}},
            "progressDeadline": deadline,
            "rings": [
                {"name": "hub", "namespaces": ["cell-0"]},
                {"name": "one", "clusters": ["eu"], "namespaces": ["cell-1", "cell-2"]},
                {
                    "name": "two",
                    "clusterSelector": {"matchLabels": {"tier": "prod"}},
                    "namespaceSelector": {"matchLabels": {"app": "checkout"}},
                    "bake": bake_two,
                },
            ],
            "gates": [{"name": "smoke", "interval": "1s", "webhook": {"url": url, "timeout": "2s"}}],
        },
    })
}

fn ring_targets(r: &ConfigRollout) -> Vec<Vec<String>> {
    r.status
        .iter()
        .flat_map(|s| &s.rings)
        .map(|ring| ring.first_targets.clone())
        .collect()
}

/// Every target holds exactly what it held before the rollout.
async fn assert_priors(f: &Fleet) {
    assert_eq!(
        retries(&f.hub.client, "cell-0").await.as_deref(),
        Some("hub-0")
    );
    assert_eq!(
        retries(&f.eu.client(), "cell-1").await.as_deref(),
        Some("eu-1")
    );
    assert_eq!(retries(&f.eu.client(), "cell-2").await, None, "had none");
    assert_eq!(
        retries(&f.us.client(), "cell-1").await.as_deref(),
        Some("us-1")
    );
    assert_eq!(
        retries(&f.us.client(), "cell-3").await.as_deref(),
        Some("us-3")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_gate_in_a_members_ring_rolls_back_every_cluster_exactly() {
    let f = fleet().await;
    let fail = Arc::new(AtomicBool::new(true));
    let url = serve(fail.clone()).await;
    // Ring two bakes briefly: its gate fails at the first check, and after the retry it
    // passes.
    f.hub
        .apply_rollout(NS, rollout(&url, "new", "3s", "10m"))
        .await;
    let r = f
        .hub
        .wait_rollout(NS, "flags", "rolled back", |r| phase(r) == "RolledBack")
        .await;
    assert_eq!(
        ring_targets(&r),
        vec![
            vec!["cell-0".to_string()],
            vec!["eu/cell-1".into(), "eu/cell-2".into()],
            vec!["us/cell-1".into(), "us/cell-3".into()],
        ]
    );
    assert_eq!(
        r.status.as_ref().unwrap().rollback.as_ref().unwrap().reason,
        "GateFailed"
    );
    assert_priors(&f).await;

    // Priors and status live in the hub: the members' records are in the operator's
    // namespace, and no member holds a record of its own.
    let uid = r.uid().unwrap();
    let by_owner = ListParams::default().labels(&format!("{PRIORS_OF_LABEL}={uid}"));
    let hub_records = Api::<ConfigMap>::namespaced(f.hub.client.clone(), CLUSTER_NAMESPACE)
        .list_metadata(&by_owner)
        .await
        .unwrap();
    assert_eq!(hub_records.items.len(), 4, "one per member target");
    for m in [&f.eu, &f.us] {
        let records = Api::<ConfigMap>::all(m.client())
            .list_metadata(&ListParams::default().labels(PRIORS_OF_LABEL))
            .await
            .unwrap();
        assert!(records.items.is_empty());
    }

    // A retry with a passing gate rolls out to all three rings.
    fail.store(false, Ordering::Relaxed);
    f.hub
        .annotate_rollout(NS, "flags", RETRY_ANNOTATION, "r1")
        .await;
    f.hub
        .wait_rollout(NS, "flags", "succeeded", |r| phase(r) == "Succeeded")
        .await;
    assert_eq!(
        retries(&f.hub.client, "cell-0").await.as_deref(),
        Some("new")
    );
    for (m, ns) in [
        (&f.eu, "cell-1"),
        (&f.eu, "cell-2"),
        (&f.us, "cell-1"),
        (&f.us, "cell-3"),
    ] {
        assert_eq!(
            retries(&m.client(), ns).await.as_deref(),
            Some("new"),
            "{ns}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_member_holds_its_ring_then_fails_it_and_the_rollback_waits_for_it() {
    let f = fleet().await;
    let url = serve(Arc::new(AtomicBool::new(false))).await;
    f.hub
        .apply_rollout(NS, rollout(&url, "new", "1h", "15s"))
        .await;
    f.hub
        .wait_for(NS, "flags", "ring two written", || async {
            retries(&f.us.client(), "cell-3").await.as_deref() == Some("new")
        })
        .await;
    f.us.faults().partition(true);

    // Held: the ring is not promoted, its gate is Inconclusive, status names the cluster.
    let held = f
        .hub
        .wait_rollout(NS, "flags", "ring two waits for us", |r| {
            condition(r, "Progressing").1 == "ClusterUnreachable"
        })
        .await;
    eprintln!(
        "partitioned: Progressing={:?}\nring two: {}",
        condition(&held, "Progressing"),
        serde_json::to_string(&held.status.as_ref().unwrap().rings[2]).unwrap()
    );
    assert_eq!(phase(&held), "Progressing");
    let two = &held.status.as_ref().unwrap().rings[2];
    assert_eq!(format!("{:?}", two.phase), "Verifying");
    assert_eq!(format!("{:?}", two.gates[0].verdict), "Some(Inconclusive)");
    assert!(
        condition(&held, "Progressing")
            .2
            .contains("cluster us cannot be reached")
    );

    // The deadline fails the ring; the rollback restores the hub and eu, then waits.
    let rolling = f
        .hub
        .wait_rollout(NS, "flags", "rolling back, waiting for us", |r| {
            phase(r) == "RollingBack"
                && condition(r, "Progressing").2.contains("the rollback waits")
        })
        .await;
    let rollback = rolling.status.as_ref().unwrap().rollback.clone().unwrap();
    assert_eq!(rollback.reason, "ProgressDeadlineExceeded");
    assert!(
        rollback.message.contains("cluster us"),
        "{}",
        rollback.message
    );
    f.hub
        .wait_for(NS, "flags", "hub and eu restored", || async {
            retries(&f.hub.client, "cell-0").await.as_deref() == Some("hub-0")
                && retries(&f.eu.client(), "cell-1").await.as_deref() == Some("eu-1")
                && retries(&f.eu.client(), "cell-2").await.is_none()
        })
        .await;
    assert_eq!(phase(&f.hub.rollout(NS, "flags").await), "RollingBack");

    let back = Instant::now();
    f.us.faults().partition(false);
    f.hub
        .wait_rollout(NS, "flags", "rolled back", |r| phase(r) == "RolledBack")
        .await;
    eprintln!(
        "member back to rollback complete: {} ms",
        back.elapsed().as_millis()
    );
    assert_priors(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_secret_deleted_mid_rollout_holds_the_rollout_until_it_is_back() {
    let f = fleet().await;
    let url = serve(Arc::new(AtomicBool::new(false))).await;
    let mut spec = rollout(&url, "new", "1h", "10m");
    spec["spec"]["rings"][1]["bake"] = json!("1h");
    f.hub.apply_rollout(NS, spec).await;
    f.hub
        .wait_for(NS, "flags", "eu written", || async {
            retries(&f.eu.client(), "cell-2").await.as_deref() == Some("new")
        })
        .await;
    Api::<Secret>::namespaced(f.hub.client.clone(), CLUSTER_NAMESPACE)
        .delete("eu", &DeleteParams::default())
        .await
        .unwrap();
    f.hub
        .wait_rollout(NS, "flags", "ring one waits for eu", |r| {
            condition(r, "Progressing")
                .2
                .contains("cluster eu is not registered")
        })
        .await;
    // An abort restores what it can reach, and is not complete without eu.
    f.hub
        .annotate_rollout(NS, "flags", ABORT_ANNOTATION, "a1")
        .await;
    f.hub
        .wait_for(NS, "flags", "hub restored", || async {
            retries(&f.hub.client, "cell-0").await.as_deref() == Some("hub-0")
        })
        .await;
    let waiting = f.hub.rollout(NS, "flags").await;
    assert_eq!(phase(&waiting), "RollingBack");
    assert_eq!(
        retries(&f.eu.client(), "cell-2").await.as_deref(),
        Some("new")
    );
    register(&f.hub, "eu", &f.eu, &[("tier", "canary")]).await;
    f.hub
        .wait_rollout(NS, "flags", "rolled back", |r| phase(r) == "RolledBack")
        .await;
    assert_priors(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_does_not_allow_the_rollout_is_never_written() {
    let f = fleet().await;
    let url = serve(Arc::new(AtomicBool::new(false))).await;
    let labels = BTreeMap::from([("ringfence.dev/cluster", "true"), ("tier", "prod")]);
    register_with(&f.hub, "us", &f.us.kubeconfig(), labels).await;
    let seq = f.us.request_log().last_seq();
    f.hub
        .apply_rollout(NS, rollout(&url, "new", "1s", "10m"))
        .await;
    let r = f
        .hub
        .wait_rollout(NS, "flags", "not permitted", |r| {
            condition(r, "Valid").1 == "TargetNotPermitted"
        })
        .await;
    let message = condition(&r, "Valid").2;
    assert!(
        message.contains("clusters us") && message.contains("ringfence.dev/allow-from=platform"),
        "{message}"
    );
    let writes: Vec<_> =
        f.us.request_log()
            .since(seq)
            .into_iter()
            .filter(|r| r.is_write())
            .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert_eq!(
        retries(&f.hub.client, "cell-0").await.as_deref(),
        Some("hub-0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_secret_with_a_bad_kubeconfig_is_reported_not_fatal() {
    let f = fleet().await;
    let exec = "apiVersion: v1\nkind: Config\nclusters:\n- name: m\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: u\n  user: {exec: {command: aws, apiVersion: client.authentication.k8s.io/v1}}\ncontexts:\n- name: c\n  context: {cluster: m, user: u}\ncurrent-context: c\n";
    let labels = BTreeMap::from([
        ("ringfence.dev/cluster", "true"),
        ("ringfence.dev/allow-from", NS),
        ("tier", "prod"),
    ]);
    register_with(&f.hub, "us", exec, labels).await;
    let url = serve(Arc::new(AtomicBool::new(false))).await;
    f.hub
        .apply_rollout(NS, rollout(&url, "new", "1s", "10m"))
        .await;
    let r = f
        .hub
        .wait_rollout(NS, "flags", "refused, naming the Secret", |r| {
            condition(r, "Valid").1 == "ClusterUnreachable"
        })
        .await;
    let message = condition(&r, "Valid").2;
    assert!(
        message.contains("cluster Secret us") && message.contains("exec plugin"),
        "{message}"
    );
    let events = Api::<Event>::namespaced(f.hub.client.clone(), CLUSTER_NAMESPACE);
    f.hub
        .wait_for(NS, "flags", "an event on the Secret", || async {
            events
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items.iter().any(|e| {
                        e.reason.as_deref() == Some("InvalidClusterConfig")
                            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("us")
                    })
                })
                .unwrap_or(false)
        })
        .await;
    // The controller keeps serving the others: a fixed Secret lets the rollout go on.
    register(&f.hub, "us", &f.us, &[("tier", "prod")]).await;
    f.hub
        .wait_rollout(NS, "flags", "succeeded", |r| phase(r) == "Succeeded")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_resolves_rings_in_member_clusters_and_names_their_clusters() {
    let f = fleet().await;
    let dir = support::tempdir::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    f.hub.emu.write_kubeconfig(&kubeconfig).unwrap();
    let manifest = dir.path().join("rollout.yaml");
    let mut spec = rollout("http://smoke.platform/check", "new", "1m", "10m");
    spec["apiVersion"] = json!("ringfence.dev/v1alpha1");
    spec["kind"] = json!("ConfigRollout");
    spec["metadata"]["namespace"] = json!(NS);
    std::fs::write(&manifest, serde_json::to_string(&spec).unwrap()).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringfence"))
        .args(["kubectl", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["plan", "-o", "json", "-f"])
        .arg(&manifest)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_str(&stdout).unwrap();
    let targets: Vec<Vec<(String, String, String)>> = plan["rings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ring| {
            ring["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
                    (s("cluster"), s("namespace"), s("action"))
                })
                .collect()
        })
        .collect();
    let t = |c: &str, ns: &str, a: &str| (c.to_string(), ns.to_string(), a.to_string());
    assert_eq!(
        targets,
        vec![
            vec![t("local", "cell-0", "update")],
            vec![t("eu", "cell-1", "update"), t("eu", "cell-2", "create")],
            vec![t("us", "cell-1", "update"), t("us", "cell-3", "update")],
        ],
        "{stdout}"
    );
}
