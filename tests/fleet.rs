//! A fleet: a second revision of a 3,000-target rollout completes (the prior store has no
//! size cliff), with a bounded number of API requests per target written and a status
//! whose size does not grow with the targets; and a large ring, whose priors are read by
//! listing, rolls back exactly.

mod support;

use std::collections::BTreeMap;
use std::time::Instant;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use ringfence::api::REVISION_ANNOTATION;
use serde_json::json;
use support::cluster::{Cluster, condition, data, phase};

const NS: &str = "platform";
const CELLS: usize = 3000;

fn ring_of(i: usize) -> &'static str {
    match i % 100 {
        0 => "canary",
        1..=9 => "early",
        _ => "broad",
    }
}

async fn fleet(c: &Cluster) {
    c.namespace(NS, &[]).await;
    let api = Api::<Namespace>::all(c.client.clone());
    stream::iter(0..CELLS)
        .for_each_concurrent(32, |i| {
            let api = api.clone();
            async move {
                let ns: Namespace = serde_json::from_value(json!({"metadata": {
                    "name": format!("cell-{i:05}"),
                    "labels": {"ring": ring_of(i), "ringfence.dev/allow-from": NS},
                }}))
                .unwrap();
                api.create(&PostParams::default(), &ns)
                    .await
                    .expect("namespace created");
            }
        })
        .await;
}

fn rollout(value: &str) -> serde_json::Value {
    let ring = |name: &str| json!({"name": name, "namespaceSelector": {"matchLabels": {"ring": name}}, "bake": "0s"});
    json!({
        "metadata": {"name": "fleet"},
        "spec": {
            "config": {"name": "fleet-flags", "data": {"value": value, "padding": "x".repeat(512)}},
            "rings": [ring("canary"), ring("early"), ring("broad")],
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_revision_of_three_thousand_targets_completes() {
    let mut c = Cluster::start().await;
    fleet(&c).await;
    c.start_controller().await;
    let mut revisions = Vec::new();
    for value in ["1", "2"] {
        let seq = c.emu.request_log().last_seq();
        let started = Instant::now();
        c.apply_rollout(NS, rollout(value)).await;
        let r = c
            .wait_rollout(NS, "fleet", &format!("revision {value} Succeeded"), |r| {
                phase(r) == "Succeeded"
                    && r.status.as_ref().and_then(|s| s.observed_generation)
                        == r.metadata.generation
                    && r.status
                        .as_ref()
                        .and_then(|s| s.history.first())
                        .is_some_and(|h| {
                            h.revision == r.status.as_ref().unwrap().revision.clone().unwrap()
                        })
            })
            .await;
        let revision = r.status.as_ref().and_then(|s| s.revision.clone()).unwrap();
        assert!(!revisions.contains(&revision), "a new revision each time");
        revisions.push(revision.clone());
        let requests = c
            .emu
            .request_log()
            .since(seq)
            .into_iter()
            .filter(|q| q.resource == "configmaps" && q.verb != "watch")
            .count();
        let status_bytes = serde_json::to_vec(&r.status).unwrap().len();
        eprintln!(
            "revision {value}: {CELLS} targets in {:.1?}, {requests} ConfigMap requests ({:.2} per target), status {status_bytes} bytes",
            started.elapsed(),
            requests as f64 / CELLS as f64
        );
        // Read the target (its prior), record it, write it, plus a little per reconcile.
        assert!(
            requests <= CELLS * 4,
            "{requests} requests for {CELLS} targets"
        );
        // Ring membership lives in the layout records: status grows with rings, not targets.
        assert!(status_bytes <= 8 * 1024, "status is {status_bytes} bytes");
        let targets: BTreeMap<String, String> =
            Api::<k8s_openapi::api::core::v1::ConfigMap>::all(c.client.clone())
                .list(&ListParams::default().fields("metadata.name=fleet-flags"))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|cm| {
                    (
                        cm.namespace().unwrap_or_default(),
                        cm.annotations()
                            .get(REVISION_ANNOTATION)
                            .cloned()
                            .unwrap_or_default(),
                    )
                })
                .collect();
        assert_eq!(targets.len(), CELLS);
        assert!(targets.values().all(|rev| *rev == revision));
    }
}

/// A ring large enough that its priors are read by one paginated list, not target by
/// target: every prior (distinct contents, and absence) is restored exactly, and a record
/// edited after it was written is never restored from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_ring_rolls_back_exactly_from_listed_priors() {
    const CELLS: usize = 1200;
    const TAMPERED: usize = 4;
    let cell = |i: usize| format!("big-{i:04}");
    let mut c = Cluster::start().await;
    c.namespace(NS, &[]).await;
    let api = Api::<Namespace>::all(c.client.clone());
    stream::iter(0..CELLS)
        .for_each_concurrent(32, |i| {
            let (api, c) = (api.clone(), &c);
            async move {
                let ring = if i % 10 == 0 { "one" } else { "two" };
                let ns: Namespace = serde_json::from_value(json!({"metadata": {
                    "name": cell(i),
                    "labels": {"ring": ring, "ringfence.dev/allow-from": NS},
                }}))
                .unwrap();
                api.create(&PostParams::default(), &ns)
                    .await
                    .expect("namespace created");
                // Every other cell holds its own prior; the rest have none.
                if i % 2 == 0 {
                    let value = format!("prior-{i}");
                    c.config_map(&cell(i), "big-flags", &[("value", &value)])
                        .await;
                }
            }
        })
        .await;
    c.start_controller().await;
    let fail = Arc::new(AtomicBool::new(false));
    let url = support::webhook::serve(fail.clone()).await;
    let ring = |name: &str, bake: &str| json!({"name": name, "namespaceSelector": {"matchLabels": {"ring": name}}, "bake": bake});
    let seq = c.emu.request_log().last_seq();
    c.apply_rollout(
        NS,
        json!({
            "metadata": {"name": "big"},
            "spec": {
                "config": {"name": "big-flags", "data": {"value": "new"}},
                "rings": [ring("one", "0s"), ring("two", "1h")],
                "gates": [{"name": "smoke", "interval": "1s", "webhook": {"url": url}}],
            },
        }),
    )
    .await;
    c.wait_rollout(NS, "big", "ring two baking", |r| {
        r.status.as_ref().is_some_and(|s| {
            s.rings
                .get(1)
                .is_some_and(|ring| ring.healthy_since.is_some() && ring.updated == 1080)
        })
    })
    .await;
    // Ring two's priors came from a list: no read of each of its 1,080 targets.
    let reads = c
        .emu
        .request_log()
        .since(seq)
        .into_iter()
        .filter(|q| q.resource == "configmaps" && q.verb == "get" && q.name == "big-flags")
        .count();
    assert!(
        reads < CELLS / 4,
        "{reads} target reads for {CELLS} targets"
    );
    Api::<ConfigMap>::namespaced(c.client.clone(), &cell(TAMPERED))
        .patch(
            "ringfence-prior-big-flags",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"value": "tampered"}})),
        )
        .await
        .expect("record edited");
    fail.store(true, Ordering::Relaxed);
    let r = c
        .wait_rollout(NS, "big", "Failed: rollback incomplete", |r| {
            phase(r) == "Failed"
        })
        .await;
    let (_, reason, message) = condition(&r, "RolledBack");
    assert_eq!(reason, "PriorsMissing");
    assert!(message.contains(&cell(TAMPERED)), "{message}");
    let targets = c.targets("big-flags").await;
    for i in 0..CELLS {
        let held = targets.get(&cell(i)).map(data);
        if i == TAMPERED {
            let new = BTreeMap::from([("value".to_string(), "new".to_string())]);
            assert_eq!(held, Some(new), "never restored from a tampered record");
        } else if i % 2 == 0 {
            let want = BTreeMap::from([("value".to_string(), format!("prior-{i}"))]);
            assert_eq!(held, Some(want), "{} restored", cell(i));
        } else {
            assert_eq!(held, None, "{} had no target: deleted again", cell(i));
        }
    }
}
