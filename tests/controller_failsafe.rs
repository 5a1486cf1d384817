//! The fail-safe rules against the API emulator: a rollback is exact or says loudly what it
//! could not restore, abort and rollback work whatever happened to the spec, write errors
//! reach the status, identical targets are taken over, and a target has one owner.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use kube_emulator::RequestMatch;
use ringfence::api::{ABORT_ANNOTATION, ConfigRollout, REVISION_ANNOTATION, ROLLOUT_ANNOTATION};
use ringfence::api::{LAYOUT_OF_LABEL, PRIORS_OF_LABEL};
use ringfence::controller::record_name;
use serde_json::{Value, json};
use support::background;
use support::cluster::{Cluster, condition, data, phase};
use support::webhook::serve;

const NS: &str = "platform";

/// cell-1 (ring one) and cell-2 (ring two) hold their own prior; cell-3 (ring two) has none.
async fn cells(c: &Cluster) {
    c.namespace(NS, &[]).await;
    for i in 1..=3 {
        let ns = format!("cell-{i}");
        c.namespace(&ns, &[("ringfence.dev/allow-from", NS)]).await;
        if i != 3 {
            c.config_map(&ns, "checkout-flags", &[("retries", &format!("prior-{i}"))])
                .await;
        }
    }
}

fn prior(i: usize) -> Option<BTreeMap<String, String>> {
    (i != 3).then(|| BTreeMap::from([("retries".to_string(), format!("prior-{i}"))]))
}

/// Ring two bakes for an hour, gated by a webhook that fails ring two when told to.
fn rollout(url: &str, config: Value) -> Value {
    json!({
        "metadata": {"name": "flags"},
        "spec": {
            "config": config,
            "rings": [
                {"name": "one", "namespaces": ["cell-1"], "bake": "1s"},
                {"name": "two", "namespaces": ["cell-2", "cell-3"], "bake": "1h"},
            ],
            "gates": [{"name": "smoke", "interval": "1s", "webhook": {"url": url, "timeout": "2s"}}],
        },
    })
}

fn inline() -> Value {
    json!({"name": "checkout-flags", "data": {"retries": "7"}})
}

fn ring_two_baking(r: &ConfigRollout) -> bool {
    r.status.as_ref().is_some_and(|s| {
        s.rings
            .get(1)
            .is_some_and(|ring| ring.healthy_since.is_some() && ring.updated == 2)
    })
}

async fn holds(c: &Cluster, i: usize, want: Option<BTreeMap<String, String>>) {
    let cm = c
        .get_config_map(&format!("cell-{i}"), "checkout-flags")
        .await;
    match want {
        None => assert!(cm.is_none(), "cell-{i} must be absent"),
        Some(want) => {
            let cm = cm.unwrap_or_else(|| panic!("cell-{i} must exist"));
            assert_eq!(data(&cm), want, "cell-{i}");
        }
    }
}

async fn restored_exactly(c: &Cluster, i: usize) {
    holds(c, i, prior(i)).await;
    if let Some(cm) = c
        .get_config_map(&format!("cell-{i}"), "checkout-flags")
        .await
    {
        assert!(
            cm.annotations().get(REVISION_ANNOTATION).is_none(),
            "cell-{i}"
        );
        assert!(
            cm.annotations().get(ROLLOUT_ANNOTATION).is_none(),
            "cell-{i}"
        );
    }
}

async fn event_reasons(c: &Cluster) -> Vec<String> {
    Api::<Event>::namespaced(c.client.clone(), NS)
        .list(&ListParams::default())
        .await
        .expect("events listed")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

/// Deletes the rollout's prior records as `kubectl delete cm -l ringfence.dev/priors-of=UID`
/// would, in every cell; with `strip`, also removes their finalizers so they are really gone.
async fn delete_records(c: &Cluster, uid: &str, strip: bool) {
    for i in 1..=3 {
        let api = Api::<ConfigMap>::namespaced(c.client.clone(), &format!("cell-{i}"));
        let lp = ListParams::default().labels(&format!("{PRIORS_OF_LABEL}={uid}"));
        api.delete_collection(&DeleteParams::default(), &lp)
            .await
            .expect("records deleted");
        if strip {
            let name = record_name("checkout-flags");
            if api.get_opt(&name).await.expect("record read").is_some() {
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                )
                .await
                .expect("finalizer removed");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_prior_records_stay_readable_and_the_rollback_is_exact() {
    let mut c = Cluster::start().await;
    cells(&c).await;
    let fail = Arc::new(AtomicBool::new(false));
    let url = serve(fail.clone()).await;
    c.start_controller().await;
    c.apply_rollout(NS, rollout(&url, inline())).await;
    let r = c
        .wait_rollout(NS, "flags", "ring two baking", ring_two_baking)
        .await;
    delete_records(&c, &r.uid().unwrap(), false).await;
    let record = c
        .get_config_map("cell-2", &record_name("checkout-flags"))
        .await
        .expect("a deleted record stays readable while the rollout needs it");
    assert!(record.metadata.deletion_timestamp.is_some());
    fail.store(true, Ordering::Relaxed);
    let r = c
        .wait_rollout(NS, "flags", "RolledBack", |r| phase(r) == "RolledBack")
        .await;
    for i in 1..=3 {
        restored_exactly(&c, i).await;
    }
    assert_eq!(condition(&r, "RolledBack").0, "True");

    // Deleting the rollout leaves the targets as they are and lets its records go.
    Api::<ConfigRollout>::namespaced(c.client.clone(), NS)
        .delete("flags", &DeleteParams::default())
        .await
        .expect("rollout deleted");
    c.kill_controller().await;
    c.start_controller().await;
    c.wait_for(NS, "flags", "records let go", || async {
        let mut left = 0;
        for i in 1..=3 {
            let name = record_name("checkout-flags");
            left += usize::from(
                c.get_config_map(&format!("cell-{i}"), &name)
                    .await
                    .is_some(),
            );
        }
        left == 0
    })
    .await;
    for i in 1..=3 {
        restored_exactly(&c, i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_really_gone_are_never_reported_as_rolled_back() {
    let mut c = Cluster::start().await;
    cells(&c).await;
    let fail = Arc::new(AtomicBool::new(false));
    let url = serve(fail.clone()).await;
    c.start_controller().await;
    c.apply_rollout(NS, rollout(&url, inline())).await;
    c.wait_rollout(NS, "flags", "ring two baking", ring_two_baking)
        .await;
    // Only ring two's records are lost: ring one's survive.
    for i in [2, 3] {
        let api = Api::<ConfigMap>::namespaced(c.client.clone(), &format!("cell-{i}"));
        let name = record_name("checkout-flags");
        api.delete(&name, &DeleteParams::default())
            .await
            .expect("deleted");
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("finalizer removed");
        assert!(api.get_opt(&name).await.unwrap().is_none());
    }
    fail.store(true, Ordering::Relaxed);
    let r = c
        .wait_rollout(NS, "flags", "Failed: rollback incomplete", |r| {
            phase(r) == "Failed"
        })
        .await;
    restored_exactly(&c, 1).await;
    let seven = Some(BTreeMap::from([("retries".to_string(), "7".to_string())]));
    holds(&c, 2, seven.clone()).await;
    holds(&c, 3, seven).await;
    let (status, reason, message) = condition(&r, "RolledBack");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "PriorsMissing")
    );
    assert!(
        message.contains("cell-2") && message.contains("cell-3"),
        "{message}"
    );
    let sentence = r.status.as_ref().and_then(|s| s.message.clone()).unwrap();
    assert!(sentence.contains("rollback incomplete"), "{sentence}");
    eprintln!("status message: {sentence}");
    assert!(
        event_reasons(&c)
            .await
            .contains(&"RollbackIncomplete".to_string())
    );
    let metrics = support::cluster::http_get(c.metrics_addr.unwrap(), "/metrics").await;
    assert!(
        metrics.contains("ringfence_rollbacks_incomplete_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_record_is_never_restored_from() {
    let mut c = Cluster::start().await;
    cells(&c).await;
    let fail = Arc::new(AtomicBool::new(false));
    let url = serve(fail.clone()).await;
    c.start_controller().await;
    c.apply_rollout(NS, rollout(&url, inline())).await;
    c.wait_rollout(NS, "flags", "ring two baking", ring_two_baking)
        .await;
    Api::<ConfigMap>::namespaced(c.client.clone(), "cell-2")
        .patch(
            &record_name("checkout-flags"),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"retries": "tampered"}})),
        )
        .await
        .expect("record edited");
    fail.store(true, Ordering::Relaxed);
    let r = c
        .wait_rollout(NS, "flags", "Failed: rollback incomplete", |r| {
            phase(r) == "Failed"
        })
        .await;
    restored_exactly(&c, 1).await;
    restored_exactly(&c, 3).await;
    holds(
        &c,
        2,
        Some(BTreeMap::from([("retries".to_string(), "7".to_string())])),
    )
    .await;
    let (_, reason, message) = condition(&r, "RolledBack");
    assert_eq!(reason, "PriorsMissing");
    assert!(message.contains("cell-2"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_source_holds_the_rollout_and_abort_still_restores() {
    let mut c = Cluster::start().await;
    cells(&c).await;
    c.config_map(NS, "flags-source", &[("retries", "7")]).await;
    let url = serve(Arc::new(AtomicBool::new(false))).await;
    c.start_controller().await;
    let source = json!({"name": "checkout-flags", "sourceRef": {"name": "flags-source"}});
    c.apply_rollout(NS, rollout(&url, source)).await;
    c.wait_rollout(NS, "flags", "ring two baking", ring_two_baking)
        .await;
    Api::<ConfigMap>::namespaced(c.client.clone(), NS)
        .delete("flags-source", &DeleteParams::default())
        .await
        .expect("source deleted");
    let r = c
        .wait_rollout(NS, "flags", "held: Valid=False", |r| {
            condition(r, "Valid").1 == "ConfigUnresolvable"
        })
        .await;
    assert_eq!(phase(&r), "Progressing");
    assert_eq!(condition(&r, "Progressing").1, "InvalidSpec");
    eprintln!(
        "held: {}",
        r.status.as_ref().and_then(|s| s.message.clone()).unwrap()
    );
    c.annotate_rollout(NS, "flags", ABORT_ANNOTATION, "abort-1")
        .await;
    let r = c
        .wait_rollout(NS, "flags", "RolledBack after abort", |r| {
            phase(r) == "RolledBack"
        })
        .await;
    assert_eq!(condition(&r, "RolledBack").1, "Aborted");
    for i in 1..=3 {
        restored_exactly(&c, i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_read_is_reported_in_status_and_the_rollout_resumes_when_it_works() {
    let mut c = Cluster::start().await;
    cells(&c).await;
    c.config_map(NS, "flags-source", &[("retries", "7")]).await;
    c.start_controller().await;
    c.emu.faults().fail_fraction(
        1.0,
        RequestMatch::any()
            .verb("get")
            .resource("configmaps")
            .namespace(NS)
            .name("flags-source"),
        403,
        1,
    );
    let source = json!({"name": "checkout-flags", "sourceRef": {"name": "flags-source"}});
    let mut spec = rollout("http://127.0.0.1:9/unused", source);
    spec["spec"]["gates"] = json!([]);
    spec["spec"]["rings"][1]["bake"] = json!("1s");
    c.apply_rollout(NS, spec).await;
    let r = c
        .wait_rollout(NS, "flags", "ReadFailed in status", |r| {
            condition(r, "Progressing").1 == "ReadFailed"
        })
        .await;
    let (truth, _, message) = condition(&r, "Progressing");
    assert_eq!(truth, "False");
    assert!(message.contains("read source ConfigMap"), "{message}");
    assert!(message.to_lowercase().contains("forbidden"), "{message}");
    assert!(event_reasons(&c).await.contains(&"ReadFailed".to_string()));
    for i in 1..=3 {
        holds(&c, i, prior(i)).await;
    }
    c.emu.faults().clear();
    let r = c
        .wait_rollout(NS, "flags", "Succeeded once reads work", |r| {
            phase(r) == "Succeeded"
        })
        .await;
    assert_ne!(condition(&r, "Progressing").1, "ReadFailed");
    let want = BTreeMap::from([("retries".to_string(), "7".to_string())]);
    for i in 1..=3 {
        holds(&c, i, Some(want.clone())).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_written_ring_stays_gated_after_its_source_is_deleted() {
    let mut c = Cluster::start().await;
    cells(&c).await;
    c.config_map(NS, "flags-source", &[("retries", "7")]).await;
    let fail = Arc::new(AtomicBool::new(false));
    let url = serve(fail.clone()).await;
    c.start_controller().await;
    let source = json!({"name": "checkout-flags", "sourceRef": {"name": "flags-source"}});
    c.apply_rollout(NS, rollout(&url, source)).await;
    c.wait_rollout(NS, "flags", "ring two baking", ring_two_baking)
        .await;
    Api::<ConfigMap>::namespaced(c.client.clone(), NS)
        .delete("flags-source", &DeleteParams::default())
        .await
        .expect("source deleted");
    c.wait_rollout(NS, "flags", "held", |r| condition(r, "Valid").0 == "False")
        .await;
    fail.store(true, Ordering::Relaxed);
    let r = c
        .wait_rollout(NS, "flags", "RolledBack by the gate", |r| {
            phase(r) == "RolledBack"
        })
        .await;
    assert_eq!(condition(&r, "RolledBack").1, "GateFailed");
    for i in 1..=3 {
        restored_exactly(&c, i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_target_is_taken_over_not_drifted() {
    let mut c = Cluster::start().await;
    c.namespace(NS, &[]).await;
    c.config_map(NS, "checkout-flags", &[("retries", "7")])
        .await;
    c.start_controller().await;
    c.apply_rollout(
        NS,
        json!({
            "metadata": {"name": "flags"},
            "spec": {
                "config": inline(),
                "rings": [{"name": "one", "namespaces": [NS]}],
            },
        }),
    )
    .await;
    let r = c
        .wait_rollout(NS, "flags", "Succeeded", |r| phase(r) == "Succeeded")
        .await;
    assert_eq!(
        condition(&r, "Ready").0,
        "True",
        "{:?}",
        condition(&r, "Ready")
    );
    let cm = c.get_config_map(NS, "checkout-flags").await.unwrap();
    assert_eq!(
        cm.annotations().get(ROLLOUT_ANNOTATION).map(String::as_str),
        Some("platform/flags")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_errors_reach_the_status_and_the_deadline_fails_the_ring() {
    let mut c = Cluster::start().await;
    cells(&c).await;
    c.start_controller().await;
    c.emu.faults().fail_fraction(
        1.0,
        RequestMatch::any()
            .verb("patch")
            .resource("configmaps")
            .namespace("cell-2")
            .name("checkout-flags"),
        403,
        1,
    );
    let mut spec = rollout("http://127.0.0.1:9/unused", inline());
    spec["spec"]["gates"] = json!([]);
    spec["spec"]["progressDeadline"] = json!("4s");
    c.apply_rollout(NS, spec).await;
    let r = c
        .wait_rollout(NS, "flags", "WriteForbidden in status", |r| {
            condition(r, "Progressing").1 == "WriteForbidden"
        })
        .await;
    let (_, _, message) = condition(&r, "Progressing");
    assert!(message.contains("targets failed (cell-2)"), "{message}");
    assert!(message.to_lowercase().contains("forbidden"), "{message}");
    assert!(
        event_reasons(&c)
            .await
            .contains(&"WriteForbidden".to_string())
    );
    let r = c
        .wait_rollout(NS, "flags", "RolledBack at the deadline", |r| {
            phase(r) == "RolledBack"
        })
        .await;
    let rollback = r.status.and_then(|s| s.rollback).unwrap();
    assert_eq!(rollback.reason, "ProgressDeadlineExceeded");
    assert!(
        rollback.message.contains("not written within 4s"),
        "{rollback:?}"
    );
    for i in 1..=3 {
        restored_exactly(&c, i).await;
    }
    let metrics = support::cluster::http_get(c.metrics_addr.unwrap(), "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ringfence_reconcile_errors_total{category=\"forbidden\"}")),
        "{metrics}"
    );
}

/// Namespace → every rollout annotation its target carried.
type Owners = Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>;

/// Records, per namespace, every rollout annotation the target named `shared` ever carried.
fn owners_over_time(client: Client) -> (Owners, background::Background) {
    let seen: Owners = Default::default();
    let api = Api::<ConfigMap>::all(client);
    let config = watcher::Config::default().fields("metadata.name=shared");
    let sink = seen.clone();
    let task = background::spawn(
        watcher(api, config)
            .default_backoff()
            .applied_objects()
            .for_each(move |cm| {
                if let Ok(cm) = cm
                    && let Some(owner) = cm.annotations().get(ROLLOUT_ANNOTATION)
                {
                    sink.lock()
                        .unwrap()
                        .entry(cm.namespace().unwrap_or_default())
                        .or_default()
                        .insert(owner.clone());
                }
                async {}
            }),
    );
    (seen, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rollouts_racing_for_one_target_have_exactly_one_writer() {
    const SEEDS: usize = 50;
    let mut c = Cluster::start().await;
    let (owners, _watch) = owners_over_time(c.client.clone());
    for i in 0..SEEDS {
        c.namespace(&format!("race-{i}"), &[]).await;
    }
    c.start_controller().await;
    let racer = |name: &str, value: &str| {
        json!({
            "metadata": {"name": name},
            "spec": {
                "config": {"name": "shared", "data": {"owner": value}},
                "rings": [{"name": "one", "namespaces": []}],
            },
        })
    };
    futures::future::join_all((0..SEEDS).map(|i| {
        let ns = format!("race-{i}");
        let (mut a, mut b) = (racer("a", "a"), racer("b", "b"));
        a["spec"]["rings"][0]["namespaces"] = json!([ns]);
        b["spec"]["rings"][0]["namespaces"] = json!([ns]);
        let c = &c;
        async move {
            futures::join!(c.apply_rollout(&ns, a), c.apply_rollout(&ns, b));
        }
    }))
    .await;
    for i in 0..SEEDS {
        let ns = format!("race-{i}");
        let api = Api::<ConfigRollout>::namespaced(c.client.clone(), &ns);
        c.wait_for(&ns, "a", "one winner, one TargetConflict", || async {
            let (Ok(a), Ok(b)) = (api.get("a").await, api.get("b").await) else {
                return false;
            };
            let conflict = |r: &ConfigRollout| condition(r, "Valid").1 == "TargetConflict";
            (phase(&a) == "Succeeded" && conflict(&b)) || (phase(&b) == "Succeeded" && conflict(&a))
        })
        .await;
        let cm = c.get_config_map(&ns, "shared").await.unwrap();
        let winner = cm.annotations().get(ROLLOUT_ANNOTATION).cloned().unwrap();
        let want = if winner.ends_with("/a") { "a" } else { "b" };
        assert_eq!(data(&cm)["owner"], want, "{ns}");
    }
    let owners = owners.lock().unwrap().clone();
    for (ns, seen) in &owners {
        assert_eq!(seen.len(), 1, "{ns} was written by {seen:?}");
    }
    assert_eq!(owners.len(), SEEDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_layout_holds_the_rollout_in_status_and_abort_still_restores() {
    let mut c = Cluster::start().await;
    cells(&c).await;
    let url = serve(Arc::new(AtomicBool::new(false))).await;
    c.start_controller().await;
    c.apply_rollout(NS, rollout(&url, inline())).await;
    let r = c
        .wait_rollout(NS, "flags", "ring two baking", ring_two_baking)
        .await;
    let status = r.status.clone().unwrap();
    assert_eq!(status.rings[1].target_count, 2);
    assert_eq!(status.rings[1].first_targets, ["cell-2", "cell-3"]);
    assert_eq!(status.layout.as_ref().map(|l| l.targets), Some(3));
    let uid = r.uid().unwrap();
    let layouts = Api::<ConfigMap>::namespaced(c.client.clone(), NS);
    let lp = ListParams::default().labels(&format!("{LAYOUT_OF_LABEL}={uid}"));
    assert_eq!(layouts.list(&lp).await.unwrap().items.len(), 1);

    // Lost while no controller runs: the next one cannot know the rings' targets.
    c.kill_controller().await;
    layouts
        .delete_collection(&DeleteParams::default(), &lp)
        .await
        .expect("layout deleted");
    c.start_controller().await;
    let r = c
        .wait_rollout(NS, "flags", "Progressing=False LayoutMissing", |r| {
            condition(r, "Progressing").1 == "LayoutMissing"
        })
        .await;
    assert_eq!(phase(&r), "Progressing");
    let (_, _, message) = condition(&r, "Progressing");
    assert!(message.contains("no layout record holds it"), "{message}");
    assert_eq!(
        r.status.as_ref().unwrap().rings[1].target_count,
        2,
        "the counts stay"
    );

    c.annotate_rollout(NS, "flags", ABORT_ANNOTATION, "after-loss")
        .await;
    c.wait_rollout(NS, "flags", "RolledBack", |r| phase(r) == "RolledBack")
        .await;
    for i in 1..=3 {
        restored_exactly(&c, i).await;
    }
}
