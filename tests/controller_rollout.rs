//! The controller against the API emulator: a rollout from start to finish, what kubectl
//! shows, steady state, bad input, manual control, and secrets staying secret.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use ringfence::api::{
    ABORT_ANNOTATION, ConfigRollout, PROMOTE_ANNOTATION, RETRY_ANNOTATION, REVISION_ANNOTATION,
    RingPhase,
};
use serde_json::json;
use support::background::{self, Background};
use support::cluster::{Cluster, data, phase};

const NS: &str = "platform";

/// 12 cells: canary = cell-1, early = cell-2..5, broad = cell-6..12.
async fn twelve_cells(c: &Cluster) {
    c.namespace(NS, &[]).await;
    for i in 1..=12 {
        let ring = match i {
            1 => "canary",
            2..=5 => "early",
            _ => "broad",
        };
        c.namespace(
            &format!("cell-{i}"),
            &[("ring", ring), ("ringfence.dev/allow-from", NS)],
        )
        .await;
    }
}

fn three_rings(data: serde_json::Value) -> serde_json::Value {
    json!({
        "metadata": {"name": "flags"},
        "spec": {
            "config": {"name": "checkout-flags", "data": data},
            "rings": [
                {"name": "canary", "namespaces": ["cell-1"], "bake": "1s"},
                {"name": "early", "namespaceSelector": {"matchLabels": {"ring": "early"}}, "bake": "1s", "maxConcurrent": 2},
                {"name": "broad", "namespaceSelector": {"matchLabels": {"ring": "broad"}}, "bake": "1s", "maxConcurrent": "50%"},
            ],
        },
    })
}

/// Everything seen on the watches, ordered by the emulator's cluster-wide resourceVersion.
#[derive(Default)]
struct Timeline {
    /// (resourceVersion, ring index) of the first status showing ring k Promoted.
    promoted: BTreeMap<usize, u64>,
    /// (resourceVersion, namespace) of target writes carrying a revision annotation.
    target_writes: Vec<(u64, String, String)>,
}

fn rv(meta: &kube::core::ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The timeline, recorded for as long as the guards live.
fn record_timeline(c: &Cluster) -> (Arc<Mutex<Timeline>>, [Background; 2]) {
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let t = timeline.clone();
    let rollouts = watcher(
        Api::<ConfigRollout>::namespaced(c.client.clone(), NS),
        watcher::Config::default(),
    );
    let rollouts = background::spawn(rollouts.default_backoff().applied_objects().for_each(
        move |r| {
            if let Ok(r) = r {
                let mut t = t.lock().unwrap();
                for (k, ring) in r.status.iter().flat_map(|s| &s.rings).enumerate() {
                    if ring.phase == RingPhase::Promoted {
                        t.promoted.entry(k).or_insert(rv(&r.metadata));
                    }
                }
            }
            async {}
        },
    ));
    let t = timeline.clone();
    let targets = watcher(
        Api::<ConfigMap>::all(c.client.clone()),
        watcher::Config::default().fields("metadata.name=checkout-flags"),
    );
    let targets = background::spawn(targets.default_backoff().applied_objects().for_each(
        move |cm| {
            if let Ok(cm) = cm
                && let Some(rev) = cm.annotations().get(REVISION_ANNOTATION)
            {
                t.lock().unwrap().target_writes.push((
                    rv(&cm.metadata),
                    cm.namespace().unwrap_or_default(),
                    rev.clone(),
                ));
            }
            async {}
        },
    ));
    (timeline, [rollouts, targets])
}

fn ring_of(ns: &str) -> usize {
    match ns.trim_start_matches("cell-").parse::<u32>().unwrap_or(0) {
        1 => 0,
        2..=5 => 1,
        _ => 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_rings_over_twelve_cells_succeed_in_order() {
    let mut c = Cluster::start().await;
    twelve_cells(&c).await;
    let (timeline, _recording) = record_timeline(&c);
    c.start_controller().await;
    let seq = c.emu.request_log().last_seq();
    c.apply_rollout(NS, three_rings(json!({"retries": "3"})))
        .await;
    let r = c
        .wait_rollout(NS, "flags", "Succeeded", |r| phase(r) == "Succeeded")
        .await;
    let revision = r.status.as_ref().and_then(|s| s.revision.clone()).unwrap();

    let targets = c.targets("checkout-flags").await;
    assert_eq!(targets.len(), 12);
    for (ns, cm) in &targets {
        assert_eq!(
            data(cm),
            BTreeMap::from([("retries".to_string(), "3".to_string())]),
            "{ns}"
        );
        assert_eq!(
            cm.annotations().get(REVISION_ANNOTATION),
            Some(&revision),
            "{ns}"
        );
        assert_eq!(
            cm.labels()
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("ringfence")
        );
    }

    // Invariant 1: no target of ring k+1 written before ring k's promotion was persisted.
    let t = timeline.lock().unwrap();
    for (at, ns, rev) in &t.target_writes {
        if rev != &revision {
            continue;
        }
        let ring = ring_of(ns);
        if ring > 0 {
            let promoted = t.promoted.get(&(ring - 1)).copied().unwrap_or(u64::MAX);
            assert!(
                *at > promoted,
                "{ns} (ring {ring}) written at rv {at} before ring {} promoted at rv {promoted}",
                ring - 1
            );
        }
    }
    drop(t);

    let writes = c.controller_writes_since(seq);
    eprintln!(
        "controller writes for a 3-ring/12-namespace rollout: {}",
        writes.len()
    );
    let requests = c.emu.request_log().since(seq).len();
    eprintln!("all API requests during the rollout (controller and test): {requests}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_shows_the_columns_and_steady_state_is_quiet() {
    let mut c = Cluster::start().await;
    twelve_cells(&c).await;
    c.start_controller().await;
    c.apply_rollout(NS, three_rings(json!({"retries": "5"})))
        .await;
    c.wait_rollout(NS, "flags", "Succeeded", |r| phase(r) == "Succeeded")
        .await;

    let dir = support::tempdir::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    c.emu.write_kubeconfig(&kubeconfig).unwrap();
    let out = std::process::Command::new("/usr/bin/kubectl")
        .args([
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "get",
            "cro",
            "-n",
            NS,
            "-o",
            "wide",
        ])
        .output()
        .expect("kubectl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for column in ["REVISION", "PHASE", "RING", "HEALTH", "MESSAGE", "AGE"] {
        assert!(text.contains(column), "{column} missing:\n{text}");
    }
    assert!(text.contains("Succeeded") && text.contains("3/3"), "{text}");

    // Invariant 4: after Succeeded, a minute of watches re-listing every five
    // seconds (the resyncs) and of time passing causes no writes.
    let seq = c.emu.request_log().last_seq();
    for _ in 0..12 {
        c.emu.faults().close_watches();
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let writes = c.controller_writes_since(seq);
    assert!(writes.is_empty(), "writes at steady state: {writes:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_with_no_writes_until_fixed() {
    let mut c = Cluster::start().await;
    c.namespace(NS, &[]).await;
    c.namespace("foreign", &[]).await;
    c.namespace("cell-1", &[("ringfence.dev/allow-from", NS)])
        .await;
    c.start_controller().await;
    let seq = c.emu.request_log().last_seq();
    let mut rollout = json!({
        "metadata": {"name": "flags"},
        "spec": {
            "config": {"name": "checkout-flags", "data": {"a": "1"}},
            "rings": [
                {"name": "one", "namespaceSelector": {"matchLabels": {"ring": "nowhere"}}},
            ],
        },
    });
    c.apply_rollout(NS, rollout.clone()).await;
    let invalid = |r: &ConfigRollout| {
        r.status
            .iter()
            .flat_map(|s| &s.conditions)
            .any(|c| c.type_ == "Valid" && c.status == "False")
    };
    let r = c
        .wait_rollout(NS, "flags", "Valid=False for an empty selector", invalid)
        .await;
    let msg = r
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Valid")
        .unwrap()
        .message
        .clone();
    assert!(!msg.is_empty());

    rollout["spec"]["rings"] = json!([{"name": "one", "namespaces": ["foreign"]}]);
    c.apply_rollout(NS, rollout.clone()).await;
    let r = c
        .wait_rollout(NS, "flags", "Valid=False for a foreign namespace", |r| {
            invalid(r)
                && r.status.as_ref().and_then(|s| s.observed_generation) == r.metadata.generation
        })
        .await;
    let msg = r
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Valid")
        .unwrap()
        .message
        .clone();
    assert!(msg.contains("foreign"), "{msg}");
    let target_writes: Vec<_> = c
        .controller_writes_since(seq)
        .into_iter()
        .filter(|w| w.contains("configmaps"))
        .collect();
    assert!(target_writes.is_empty(), "{target_writes:#?}");

    rollout["spec"]["rings"] = json!([{"name": "one", "namespaces": ["cell-1"], "bake": "1s"}]);
    c.apply_rollout(NS, rollout).await;
    c.wait_rollout(NS, "flags", "Succeeded after the fix", |r| {
        phase(r) == "Succeeded"
    })
    .await;
    assert!(
        c.get_config_map("foreign", "checkout-flags")
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_promote_abort_and_retry() {
    let mut c = Cluster::start().await;
    twelve_cells(&c).await;
    for i in 1..=12 {
        c.config_map(&format!("cell-{i}"), "checkout-flags", &[("retries", "1")])
            .await;
    }
    c.start_controller().await;
    let mut rollout = three_rings(json!({"retries": "9"}));
    rollout["spec"]["rings"][0]["bake"] = json!("1h");
    c.apply_rollout(NS, rollout.clone()).await;
    c.wait_rollout(NS, "flags", "canary verifying", |r| {
        r.status
            .iter()
            .flat_map(|s| &s.rings)
            .next()
            .is_some_and(|ring| ring.phase == RingPhase::Verifying)
    })
    .await;

    rollout["spec"]["paused"] = json!(true);
    c.apply_rollout(NS, rollout.clone()).await;
    c.wait_rollout(NS, "flags", "Paused", |r| phase(r) == "Paused")
        .await;
    c.annotate_rollout(NS, "flags", PROMOTE_ANNOTATION, "p1")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = c.rollout(NS, "flags").await;
    assert_eq!(phase(&r), "Paused", "a paused rollout holds");
    assert_eq!(
        data(&c.get_config_map("cell-2", "checkout-flags").await.unwrap())["retries"],
        "1"
    );

    rollout["spec"]["paused"] = json!(false);
    c.apply_rollout(NS, rollout.clone()).await;
    c.annotate_rollout(NS, "flags", PROMOTE_ANNOTATION, "p2")
        .await;
    c.wait_rollout(NS, "flags", "canary promoted", |r| {
        r.status
            .iter()
            .flat_map(|s| &s.rings)
            .next()
            .is_some_and(|ring| ring.phase == RingPhase::Promoted)
    })
    .await;

    c.annotate_rollout(NS, "flags", ABORT_ANNOTATION, "a1")
        .await;
    c.wait_rollout(NS, "flags", "RolledBack", |r| phase(r) == "RolledBack")
        .await;
    for i in 1..=12 {
        let cm = c
            .get_config_map(&format!("cell-{i}"), "checkout-flags")
            .await
            .unwrap();
        assert_eq!(data(&cm)["retries"], "1", "cell-{i} restored");
        assert!(
            cm.annotations().get(REVISION_ANNOTATION).is_none(),
            "cell-{i} annotation removed"
        );
    }

    rollout["spec"]["rings"][0]["bake"] = json!("1s");
    c.apply_rollout(NS, rollout).await;
    c.annotate_rollout(NS, "flags", RETRY_ANNOTATION, "r1")
        .await;
    c.wait_rollout(NS, "flags", "Succeeded on retry", |r| {
        phase(r) == "Succeeded"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_data_stays_out_of_status_events_and_metrics() {
    const SECRET_VALUE: &str = "s3cr3t-Value-9f8e7d";
    let mut c = Cluster::start().await;
    c.namespace(NS, &[]).await;
    c.namespace("cell-1", &[("ringfence.dev/allow-from", NS)])
        .await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "db-creds-source", "namespace": NS},
        "stringData": {},
        "data": {"password": base64_encode(SECRET_VALUE)},
    }))
    .unwrap();
    Api::<Secret>::namespaced(c.client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    c.start_controller().await;
    c.apply_rollout(
        NS,
        json!({
            "metadata": {"name": "creds"},
            "spec": {
                "config": {"kind": "Secret", "name": "db-creds", "sourceRef": {"name": "db-creds-source"}},
                "rings": [{"name": "one", "namespaces": ["cell-1"], "bake": "1s"}],
            },
        }),
    )
    .await;
    c.wait_rollout(NS, "creds", "Succeeded", |r| phase(r) == "Succeeded")
        .await;
    let target = Api::<Secret>::namespaced(c.client.clone(), "cell-1")
        .get("db-creds")
        .await
        .unwrap();
    assert_eq!(target.data.unwrap()["password"].0, SECRET_VALUE.as_bytes());

    let r = c.rollout(NS, "creds").await;
    let status = serde_json::to_string(&r.status).unwrap();
    let encoded = base64_encode(SECRET_VALUE);
    assert!(
        !status.contains(SECRET_VALUE) && !status.contains(&encoded),
        "{status}"
    );
    let events = Api::<Event>::all(c.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let events = serde_json::to_string(&events.items).unwrap();
    assert!(!events.contains(SECRET_VALUE) && !events.contains(&encoded));
    let metrics = support::cluster::http_get(c.metrics_addr.unwrap(), "/metrics").await;
    assert!(metrics.contains("ringfence_rollouts"));
    assert!(!metrics.contains(SECRET_VALUE) && !metrics.contains(&encoded));
    let priors_in_config_maps = Api::<ConfigMap>::namespaced(c.client.clone(), NS)
        .list(&ListParams::default().labels("ringfence.dev/priors-of"))
        .await
        .unwrap();
    assert!(
        priors_in_config_maps.items.is_empty(),
        "secret priors never go to ConfigMaps"
    );
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_that_turns_invalid_mid_rollout_writes_nothing_more() {
    let mut c = Cluster::start().await;
    c.namespace(NS, &[]).await;
    for cell in ["cell-1", "cell-2"] {
        c.namespace(cell, &[("ringfence.dev/allow-from", NS)]).await;
    }
    let rules =
        |maximum: u32| format!("- key: retries\n  format: int\n  schema: {{maximum: {maximum}}}\n");
    c.config_map(NS, "flags-schema", &[("validation.yaml", &rules(10))])
        .await;
    c.start_controller().await;
    let mut rollout = json!({
        "metadata": {"name": "flags"},
        "spec": {
            "config": {"name": "checkout-flags", "data": {"retries": "3"},
                       "validationRef": {"name": "flags-schema"}},
            "rings": [
                {"name": "canary", "namespaces": ["cell-1"], "bake": "1h"},
                {"name": "broad", "namespaces": ["cell-2"]},
            ],
        },
    });
    c.apply_rollout(NS, rollout.clone()).await;
    c.wait_rollout(NS, "flags", "canary baking", |r| {
        r.status.as_ref().is_some_and(|s| {
            s.rings
                .first()
                .is_some_and(|ring| ring.phase == RingPhase::Verifying)
        })
    })
    .await;

    let seq = c.emu.request_log().last_seq();
    rollout["spec"]["config"]["data"] = json!({"retries": "11"});
    c.apply_rollout(NS, rollout.clone()).await;
    let r = c
        .wait_rollout(NS, "flags", "Valid=False for data over the maximum", |r| {
            r.status.as_ref().is_some_and(|s| {
                s.observed_generation == r.metadata.generation
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Valid" && c.reason == "ConfigDataInvalid")
            })
        })
        .await;
    // The revision in flight is held; the Valid condition says why.
    let message = r
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Valid")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("spec.config.data[\"retries\"]: 11 is greater than the maximum of 10"),
        "{message}"
    );
    let events = Api::<Event>::namespaced(c.client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("InvalidSpec")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("maximum of 10"))),
        "{:#?}",
        events.items
    );
    let target_writes: Vec<_> = c
        .controller_writes_since(seq)
        .into_iter()
        .filter(|w| w.contains("configmaps"))
        .collect();
    assert!(target_writes.is_empty(), "{target_writes:#?}");
    assert_eq!(
        data(&c.get_config_map("cell-1", "checkout-flags").await.unwrap())["retries"],
        "3"
    );
    assert!(c.get_config_map("cell-2", "checkout-flags").await.is_none());

    // Loosening the rules in the ConfigMap alone re-checks the rollout: the new revision goes out.
    Api::<ConfigMap>::namespaced(c.client.clone(), NS)
        .patch(
            "flags-schema",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"data": {"validation.yaml": rules(20)}})),
        )
        .await
        .unwrap();
    c.wait_for(NS, "flags", "canary holds the new revision", || async {
        c.get_config_map("cell-1", "checkout-flags")
            .await
            .is_some_and(|cm| data(&cm)["retries"] == "11")
    })
    .await;
}
