//! The controller against the API emulator when things go wrong: failing gates and
//! workloads roll back exactly, a controller killed at any point resumes correctly, and
//! injected API faults do not break the invariants.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::ResourceExt;
use kube_emulator::RequestMatch;
use ringfence::api::{ConfigRollout, REVISION_ANNOTATION};
use serde_json::{Value, json};
use support::cluster::{Cluster, data, phase};
use support::webhook::serve_fixed;

const NS: &str = "platform";

/// Cells 1..=6: ring one = 1, ring two = 2..=3, ring three = 4..=6. Odd cells start with
/// their own prior value; cell-3 and cell-6 start without the target.
async fn cells(c: &Cluster) {
    c.namespace(NS, &[]).await;
    for i in 1..=6 {
        let ns = format!("cell-{i}");
        c.namespace(&ns, &[("ringfence.dev/allow-from", NS), ("app", "cells")])
            .await;
        match i {
            3 | 6 => {}
            _ => {
                let prior = format!("prior-{i}");
                c.config_map(
                    &ns,
                    "checkout-flags",
                    &[("retries", &prior), ("legacy", "on")],
                )
                .await;
            }
        }
    }
}

fn priors() -> BTreeMap<String, Option<BTreeMap<String, String>>> {
    (1..=6)
        .map(|i| {
            let data = match i {
                3 | 6 => None,
                _ => Some(BTreeMap::from([
                    ("legacy".to_string(), "on".to_string()),
                    ("retries".to_string(), format!("prior-{i}")),
                ])),
            };
            (format!("cell-{i}"), data)
        })
        .collect()
}

fn rollout(gates: Value) -> Value {
    json!({
        "metadata": {"name": "flags"},
        "spec": {
            "config": {"name": "checkout-flags", "data": {"retries": "7"}},
            "rings": [
                {"name": "one", "namespaces": ["cell-1"], "bake": "1s"},
                {"name": "two", "namespaces": ["cell-2", "cell-3"], "bake": "1s"},
                {"name": "three", "namespaces": ["cell-4", "cell-5", "cell-6"], "bake": "1s"},
            ],
            "gates": gates,
        },
    })
}

/// Every target holds exactly its prior content, or is absent (invariant 2).
async fn assert_priors_restored(c: &Cluster) {
    for (ns, prior) in priors() {
        let cm = c.get_config_map(&ns, "checkout-flags").await;
        match prior {
            None => assert!(
                cm.is_none(),
                "{ns} did not exist before and must be deleted"
            ),
            Some(want) => {
                let cm = cm.unwrap_or_else(|| panic!("{ns} must exist"));
                assert_eq!(data(&cm), want, "{ns} data");
                assert!(
                    cm.annotations().get(REVISION_ANNOTATION).is_none(),
                    "{ns} revision annotation"
                );
                assert!(
                    cm.labels().get("app.kubernetes.io/managed-by").is_none(),
                    "{ns} managed-by label"
                );
            }
        }
    }
}

/// Either every target holds the revision (Succeeded) or every one its prior (RolledBack);
/// on a violation, the rollout and the request log are dumped first.
async fn assert_consistent_end(c: &Cluster, r: &ConfigRollout) {
    let check = std::panic::AssertUnwindSafe(check_end(c, r));
    if let Err(panic) = futures::FutureExt::catch_unwind(check).await {
        c.dump(NS, "flags").await;
        std::panic::resume_unwind(panic);
    }
}

async fn check_end(c: &Cluster, r: &ConfigRollout) {
    let status = r.status.clone().unwrap_or_default();
    match phase(r).as_str() {
        "Succeeded" => {
            let rev = status.revision.unwrap();
            for i in 1..=6 {
                let cm = c
                    .get_config_map(&format!("cell-{i}"), "checkout-flags")
                    .await
                    .unwrap();
                assert_eq!(
                    data(&cm),
                    BTreeMap::from([("retries".to_string(), "7".to_string())]),
                    "cell-{i}"
                );
                assert_eq!(cm.annotations().get(REVISION_ANNOTATION), Some(&rev));
            }
        }
        "RolledBack" => assert_priors_restored(c).await,
        other => panic!("unexpected end phase {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_webhook_in_ring_two_restores_exact_priors() {
    let mut c = Cluster::start().await;
    cells(&c).await;
    let url = serve_fixed(true).await;
    c.start_controller().await;
    let seq = c.emu.request_log().last_seq();
    c.apply_rollout(
        NS,
        rollout(
            json!([{"name": "smoke", "interval": "1s", "webhook": {"url": url, "timeout": "2s"}}]),
        ),
    )
    .await;
    let r = c
        .wait_rollout(NS, "flags", "RolledBack", |r| phase(r) == "RolledBack")
        .await;
    assert_priors_restored(&c).await;
    let rollback = r.status.as_ref().and_then(|s| s.rollback.clone()).unwrap();
    assert!(
        serde_json::to_string(&rollback)
            .unwrap()
            .contains("error rate 12% in ring two"),
        "{rollback:?}"
    );
    // Ring three was never touched.
    let writes = c.controller_writes_since(seq);
    assert!(
        !writes.iter().any(|w| w.contains("configmaps/ cell-4")
            || w.contains("cell-5")
            || w.contains("cell-6")),
        "{writes:#?}"
    );
    // The metric has sub-second resolution (status timestamps have seconds).
    let metrics = support::cluster::http_get(c.metrics_addr.unwrap(), "/metrics").await;
    let took = metrics
        .lines()
        .find(|l| l.starts_with("ringfence_rollback_duration_seconds_sum"))
        .unwrap_or("");
    eprintln!("rollback decision to last restore: {took}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_gate_fails_at_the_deadline_and_passes_when_slow_but_healthy() {
    let mut c = Cluster::start().await;
    cells(&c).await;
    for i in 1..=6 {
        c.deployment(&format!("cell-{i}"), "web", &[("app", "web")])
            .await;
    }
    c.start_controller().await;
    let mut spec = rollout(json!([]));
    spec["spec"]["workloads"] =
        json!({"selector": {"matchLabels": {"app": "web"}}, "restart": true});
    spec["spec"]["progressDeadline"] = json!("3s");
    c.apply_rollout(NS, spec.clone()).await;
    // Never ready: ring one fails at the deadline and is rolled back.
    let r = c
        .wait_rollout(NS, "flags", "RolledBack at the deadline", |r| {
            phase(r) == "RolledBack"
        })
        .await;
    assert_eq!(
        r.status
            .as_ref()
            .and_then(|s| s.rollback.as_ref())
            .map(|b| b.reason.as_str()),
        Some("ProgressDeadlineExceeded")
    );
    assert_priors_restored(&c).await;

    // Slow but healthy: a "kubelet" marks deployments ready a second after each stamp.
    let stop = Arc::new(AtomicBool::new(false));
    let kubelet = {
        let stop = stop.clone();
        let client = c.client.clone();
        tokio::spawn(async move {
            use k8s_openapi::api::apps::v1::Deployment;
            use kube::api::{Api, Patch, PatchParams};
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                for i in 1..=6 {
                    let api = Api::<Deployment>::namespaced(client.clone(), &format!("cell-{i}"));
                    if let Ok(d) = api.get("web").await {
                        let status = json!({"status": {
                            "observedGeneration": d.metadata.generation,
                            "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2,
                        }});
                        let _ = api
                            .patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
                            .await;
                    }
                }
            }
        })
    };
    spec["spec"]["config"]["data"] = json!({"retries": "7", "v": "2"});
    spec["spec"]["progressDeadline"] = json!("30s");
    c.apply_rollout(NS, spec).await;
    c.wait_rollout(NS, "flags", "Succeeded with slow workloads", |r| {
        phase(r) == "Succeeded"
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    kubelet.await.unwrap();
}

/// Kills and restarts the controller after the first write following each of `points`.
async fn crash_run(points: &[usize], fail_ring_two: bool) {
    let mut c = Cluster::start().await;
    cells(&c).await;
    let url = serve_fixed(fail_ring_two).await;
    c.start_controller().await;
    c.apply_rollout(
        NS,
        rollout(json!([{"name": "smoke", "interval": "1s", "webhook": {"url": url}}])),
    )
    .await;
    let base = c.emu.request_log().last_seq();
    for &point in points {
        let deadline = tokio::time::Instant::now() + support::cluster::DEADLINE;
        loop {
            if c.controller_writes_since(base).len() >= point {
                break;
            }
            let r = c.rollout(NS, "flags").await;
            if matches!(phase(&r).as_str(), "Succeeded" | "RolledBack")
                || tokio::time::Instant::now() > deadline
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        c.kill_controller().await;
        c.start_controller().await;
    }
    let r = c
        .wait_rollout(NS, "flags", "an end state", |r| {
            let done = matches!(phase(r).as_str(), "Succeeded" | "RolledBack");
            done && r.status.as_ref().and_then(|s| s.observed_generation) == r.metadata.generation
        })
        .await;
    let expected = if fail_ring_two {
        "RolledBack"
    } else {
        "Succeeded"
    };
    assert_eq!(phase(&r), expected);
    assert_consistent_end(&c, &r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_at_every_write_resume_correctly() {
    // Count the distinct write points of an undisturbed run first.
    let mut c = Cluster::start().await;
    cells(&c).await;
    let url = serve_fixed(true).await;
    c.start_controller().await;
    let base = c.emu.request_log().last_seq();
    c.apply_rollout(
        NS,
        rollout(json!([{"name": "smoke", "interval": "1s", "webhook": {"url": url}}])),
    )
    .await;
    c.wait_rollout(NS, "flags", "RolledBack", |r| phase(r) == "RolledBack")
        .await;
    let total = c.controller_writes_since(base).len();
    drop(c);
    eprintln!("{total} controller writes in an undisturbed rollout with rollback");
    for point in 1..=total {
        crash_run(&[point], true).await;
    }
    crash_run(&[2, 5, 9], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_do_not_break_invariants() {
    for seed in 0..20u64 {
        let mut c = Cluster::start().await;
        cells(&c).await;
        let url = serve_fixed(seed % 2 == 0).await;
        c.start_controller().await;
        c.apply_rollout(
            NS,
            rollout(json!([{"name": "smoke", "interval": "1s", "webhook": {"url": url}}])),
        )
        .await;
        // Faults start once the test's own writes are done: ~10% of the controller's writes fail.
        for (i, code) in [500u16, 409, 429].into_iter().enumerate() {
            c.emu.faults().fail_fraction(
                0.033,
                RequestMatch::any().verb("patch"),
                code,
                seed * 10 + i as u64,
            );
        }
        c.emu
            .faults()
            .fail_fraction(0.03, RequestMatch::any().verb("create"), 500, seed * 10 + 7);
        let dropper = {
            let faults = c.emu.faults().clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    faults.close_watches();
                }
            })
        };
        let r = c
            .wait_rollout(NS, "flags", &format!("an end state (seed {seed})"), |r| {
                matches!(phase(r).as_str(), "Succeeded" | "RolledBack")
                    && r.status.as_ref().and_then(|s| s.observed_generation)
                        == r.metadata.generation
            })
            .await;
        dropper.abort();
        c.emu.faults().clear();
        assert_consistent_end(&c, &r).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_rollout_watch_is_retried_with_backoff_then_recovers() {
    let mut c = Cluster::start().await;
    cells(&c).await;
    c.start_controller().await;
    let failing = |verb| RequestMatch::any().verb(verb).resource("configrollouts");
    c.emu.faults().fail_fraction(1.0, failing("list"), 500, 1);
    c.emu.faults().fail_fraction(1.0, failing("watch"), 500, 2);
    let seq = c.emu.request_log().last_seq();
    c.emu.faults().close_watches();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let attempts = c
        .emu
        .request_log()
        .since(seq)
        .iter()
        .filter(|r| r.resource == "configrollouts" && matches!(r.verb.as_str(), "list" | "watch"))
        .count();
    // Exponential backoff from 0.8 s allows about four attempts in 5 s; retrying at once
    // would make thousands.
    assert!(
        (1..=10).contains(&attempts),
        "{attempts} list/watch attempts in 5 s"
    );

    c.emu.faults().clear();
    c.apply_rollout(NS, rollout(json!([]))).await;
    let r = c
        .wait_rollout(NS, "flags", "Succeeded once the API answers", |r| {
            phase(r) == "Succeeded"
        })
        .await;
    check_end(&c, &r).await;
}
