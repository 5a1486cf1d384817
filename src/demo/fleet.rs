//! The fleet story: a hub and two member clusters, each an emulator on loopback.
//!
//! The hub holds the controller, the rollout, its status and every prior record; the
//! members `eu-west-1` and `us-east-1` hold the cells (namespaces `cell-1`... in both,
//! each with a `checkout` Deployment played by its own [`kubelet`]) and are registered by
//! cluster Secrets in the hub. Three rings: `canary` (`eu-west-1/cell-1`), `eu` (the rest
//! of eu-west-1) and `us` (every cluster labelled `region=us-east-1`), gated by the demo's
//! error rate per cluster and namespace. Revision A rolls out everywhere; revision B
//! passes eu-west-1, regresses us-east-1 as soon as it is written there, the gate fails
//! the `us` ring and B is rolled back in both members. The story ends correctly only if
//! every target of both members holds exactly what it held before B.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kube_emulator::{Emulator, EmulatorHandle};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::kubelet;
use super::metrics_source::{ErrorRates, MetricsSource};
use super::scenario::{
    APP_SELECTOR, BASE_ERROR_RATE, CLUSTER_NAMESPACE, DemoError, DemoOptions, Outcome, Printer,
    REGRESSED_ERROR_RATE, ROLLOUT, ROLLOUT_NS, Timeline, apply_and_wait, bake_and_deadline,
    config_data, injected_at, io_err, kubeconfig_path, revision_of_data, rollback_summary,
    settled_beyond, start_controller, verdict_mark,
};
use crate::api::{
    ALLOW_FROM_LABEL, CLUSTER_LABEL, ConfigRollout, KUBECONFIG_KEY, PRIORS_OF_LABEL, Phase,
    REVISION_ANNOTATION, RingPhase,
};

/// The member clusters, by registered name (also their `region` label), and their cells.
const MEMBERS: [(&str, usize); 2] = [("eu-west-1", 3), ("us-east-1", 4)];
/// The region whose error rate revision B raises, and the ring that holds it.
const REGRESSED_REGION: &str = "us-east-1";
const REGRESSED_RING: &str = "us";
/// The label every cell namespace carries, which the `eu` and `us` rings select.
const CELL_LABEL: (&str, &str) = ("role", "cell");

fn cells(count: usize) -> impl Iterator<Item = String> {
    (1..=count).map(|i| format!("cell-{i}"))
}

/// A member's kubeconfig, next to the hub's: `<hub kubeconfig>.<cluster>`.
fn member_kubeconfig(hub: &Path, cluster: &str) -> PathBuf {
    let mut path = hub.as_os_str().to_owned();
    path.push(".");
    path.push(cluster);
    PathBuf::from(path)
}

fn rollout_manifest(metrics_url: &str, bake: &str, pricing: &str) -> Value {
    let cells = json!({"matchLabels": {CELL_LABEL.0: CELL_LABEL.1}});
    json!({
        "apiVersion": "ringfence.dev/v1alpha1",
        "kind": "ConfigRollout",
        "metadata": {"name": ROLLOUT, "namespace": ROLLOUT_NS},
        "spec": {
            "config": {"kind": "ConfigMap", "name": "checkout-flags", "data": config_data(pricing)},
            "rings": [
                {"name": "canary", "clusters": ["eu-west-1"], "namespaces": ["cell-1"], "bake": bake},
                // eu-west-1/cell-1 is selected again, and stays in canary.
                {"name": "eu", "clusters": ["eu-west-1"], "namespaceSelector": cells, "bake": bake, "maxConcurrent": 2},
                {
                    "name": REGRESSED_RING,
                    "clusterSelector": {"matchLabels": {"region": REGRESSED_REGION}},
                    "namespaceSelector": cells,
                    "bake": bake,
                    "maxConcurrent": "50%",
                },
            ],
            "workloads": {"selector": {"matchLabels": {"app": "checkout"}}, "restart": true},
            "gates": [{
                "name": "error-rate",
                "interval": "1s",
                "failureLimit": 2,
                "prometheus": {
                    "address": metrics_url,
                    "query": "avg(demo:http_error_ratio{cluster=~\"{{ clusters }}\",namespace=~\"{{ namespaces }}\"})",
                    "max": 0.05,
                    "maxIncrease": 0.02,
                    "onNoData": "wait",
                },
            }],
            "progressDeadline": "1m",
        },
    })
}

/// A member cluster of the story.
struct Member {
    name: &'static str,
    cells: Vec<String>,
    emulator: EmulatorHandle,
    kubeconfig: PathBuf,
}

impl Member {
    fn client(&self) -> Client {
        self.emulator.client()
    }
}

pub async fn run(options: DemoOptions) -> Result<Outcome, DemoError> {
    let hub = Emulator::builder()
        .admission(kube_emulator::validation::admission_hook())
        .start()
        .await?;
    let kubeconfig = kubeconfig_path(&options);
    hub.write_kubeconfig(&kubeconfig)?;
    let mut members = Vec::new();
    for (name, count) in MEMBERS {
        let emulator = Emulator::builder().start().await?;
        let path = member_kubeconfig(&kubeconfig, name);
        emulator.write_kubeconfig(&path)?;
        members.push(Member {
            name,
            cells: cells(count).collect(),
            emulator,
            kubeconfig: path,
        });
    }
    let style = options.style;
    let mut printer = Printer::new(style);
    printer.say(
        &style.bold("ringfence demo: a configuration rollout across a hub and two member clusters"),
    );
    printer.say(&format!(
        "kubeconfig (hub, controller and rollout): {}",
        kubeconfig.display()
    ));
    for m in &members {
        printer.say(&format!(
            "kubeconfig ({}, {} cells): {}",
            m.name,
            m.cells.len(),
            m.kubeconfig.display()
        ));
    }
    printer.say(&format!(
        "watch along: kubectl --kubeconfig {} get configrollouts -A -w",
        kubeconfig.display()
    ));

    let client = hub.client();
    hub.apply(&serde_json::to_value(crate::api::crd()).map_err(io_err)?)?;
    for ns in [ROLLOUT_NS, CLUSTER_NAMESPACE] {
        create_namespace(&client, ns, json!({})).await?;
    }
    let rates = ErrorRates::default();
    for m in &members {
        create_cells(m, &rates).await?;
        register(&client, m).await?;
    }
    let metrics = MetricsSource::start(rates.clone()).await?;

    let revision_key = crate::engine::RevisionKey::generate();
    let (stop, controller) = start_controller(client.clone(), revision_key.clone()).await?;
    let kubelets: Vec<_> = members
        .iter()
        .map(|m| {
            tokio::spawn(kubelet::run(
                m.client(),
                APP_SELECTOR.to_string(),
                Duration::from_millis(500),
            ))
        })
        .collect();

    let (bake, deadline) = bake_and_deadline(options.speed);
    let mut timeline = Timeline {
        started: Some(Instant::now()),
        ..Default::default()
    };
    let rollouts: Api<ConfigRollout> = Api::namespaced(client.clone(), ROLLOUT_NS);

    printer.say(&style.bold("\nrevision A: pricing-engine v1, to eu-west-1 then us-east-1"));
    let manifest = rollout_manifest(&metrics.url(), &bake, "v1");
    let a = apply_and_wait(
        &rollouts,
        &mut printer,
        &mut timeline,
        deadline,
        manifest,
        |s| s.phase == Some(Phase::Succeeded),
    )
    .await?;
    let revision_a = a.revision.clone().unwrap_or_default();
    // What every target holds before B: what the rollback must restore exactly.
    let mut priors = BTreeMap::new();
    for m in &members {
        for cell in &m.cells {
            priors.insert((m.name, cell.clone()), target_data(m, cell).await?);
        }
    }

    printer.say(&style.bold(&format!(
        "\nrevision B: pricing-engine v2, which regresses {REGRESSED_REGION} only"
    )));
    let injector = members
        .iter()
        .find(|m| m.name == REGRESSED_REGION)
        .map(|m| {
            tokio::spawn(inject_regression(
                m.client(),
                m.cells.clone(),
                rates.clone(),
                revision_a.clone(),
            ))
        });
    let manifest = rollout_manifest(&metrics.url(), &bake, "v2");
    let b = apply_and_wait(
        &rollouts,
        &mut printer,
        &mut timeline,
        deadline,
        manifest,
        |s| settled_beyond(s, &revision_a),
    )
    .await?;
    let injected_at = injected_at(injector).await;

    // Read back every target from its own member: data exactly as before B.
    let mut targets = Vec::new();
    for m in &members {
        for cell in &m.cells {
            let now = target_data(m, cell).await?;
            let ok = now.is_some()
                && now == priors[&(m.name, cell.clone())]
                && revision_of_data(now.as_ref(), &revision_key) == revision_a;
            targets.push((m.name, format!("{}/{cell}", m.name), ok));
        }
    }
    let hub_records = Api::<ConfigMap>::namespaced(client.clone(), CLUSTER_NAMESPACE)
        .list_metadata(&ListParams::default().labels(PRIORS_OF_LABEL))
        .await?
        .items
        .len();

    let rollback = b.rollback.as_ref();
    let failed_ring = b
        .rings
        .iter()
        .find(|r| r.phase == RingPhase::Failed)
        .map(|r| r.name.clone())
        .or_else(|| {
            let message = rollback?.message.strip_prefix("ring ")?;
            Some(message.split_once(':')?.0.to_string())
        });
    let failed_clusters: Vec<String> = b
        .rings
        .iter()
        .find(|r| Some(&r.name) == failed_ring.as_ref())
        .map(|r| {
            let mut out: Vec<String> = Vec::new();
            for t in &r.first_targets {
                if let Some((c, _)) = t.split_once('/')
                    && !out.iter().any(|o| o == c)
                {
                    out.push(c.to_string());
                }
            }
            out
        })
        .unwrap_or_default();
    let reason = rollback.map(|r| r.reason.as_str()).unwrap_or("-");

    let mut summary = vec![style.bold("\nsummary"), "timeline:".to_string()];
    summary.extend(timeline.entries.iter().cloned());
    if let Some(rollback) = rollback {
        summary.extend(rollback_summary(rollback));
    }
    if let Some(ring) = &failed_ring {
        let clusters = match failed_clusters.as_slice() {
            [] => "the hub".to_string(),
            names => format!("cluster {}", names.join(", ")),
        };
        summary.push(format!("  ring {ring} failed in {clusters}: {reason}"));
    }
    if let Some(at) = injected_at {
        summary.push(format!(
            "  from the injected regression in {REGRESSED_REGION} to the rollout RolledBack: {:.1}s",
            at.elapsed().as_secs_f64()
        ));
    }
    for (_, target, ok) in &targets {
        let mark = verdict_mark(style, *ok);
        summary.push(format!(
            "  {target:<18} holds its prior, revision {revision_a}: {mark}"
        ));
    }
    let mut restored = Vec::new();
    for m in &members {
        let of: Vec<bool> = targets
            .iter()
            .filter(|(c, _, _)| *c == m.name)
            .map(|(_, _, ok)| *ok)
            .collect();
        let ok = of.iter().filter(|ok| **ok).count();
        restored.push(format!("{} {ok}/{}", m.name, of.len()));
    }
    summary.push(format!(
        "  restored: {} targets; the hub holds no targets, only the rollout and the prior records ({hub_records} in {CLUSTER_NAMESPACE})",
        restored.join(", ")
    ));
    let correct = b.phase == Some(Phase::RolledBack)
        && reason == "GateFailed"
        && failed_ring.as_deref() == Some(REGRESSED_RING)
        && failed_clusters == [REGRESSED_REGION]
        && targets.iter().all(|(_, _, ok)| *ok);
    let names: Vec<&str> = members.iter().map(|m| m.name).collect();
    summary.push(if correct {
        style.green(&format!(
            "demo finished as expected: both clusters ({}) restored, every target holds revision {revision_a} again",
            names.join(" and ")
        ))
    } else {
        style.red("demo did NOT end as expected")
    });
    for line in &summary {
        printer.say(line);
    }

    if options.keep {
        printer.say("the emulators keep running (Ctrl-C to stop); try:");
        printer.say(&format!(
            "  hub:       kubectl --kubeconfig {} describe configrollout -n {ROLLOUT_NS} {ROLLOUT}",
            kubeconfig.display()
        ));
        for m in &members {
            printer.say(&format!(
                "  {:<10} kubectl --kubeconfig {} get configmap checkout-flags -n cell-1 -o yaml",
                format!("{}:", m.name),
                m.kubeconfig.display()
            ));
        }
        crate::controller::shutdown_signal().await;
    }
    let _ = stop.send(());
    let _ = controller.await;
    for task in kubelets {
        task.abort();
    }
    hub.shutdown().await;
    for m in members {
        m.emulator.shutdown().await;
        if options.kubeconfig.is_none() {
            let _ = std::fs::remove_file(&m.kubeconfig);
        }
    }
    if options.kubeconfig.is_none() {
        let _ = std::fs::remove_file(&kubeconfig);
    }
    Ok(Outcome { correct, summary })
}

async fn create_namespace(client: &Client, name: &str, labels: Value) -> Result<(), DemoError> {
    let ns = json!({"metadata": {"name": name, "labels": labels}});
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(ns).map_err(io_err)?,
        )
        .await?;
    Ok(())
}

/// A member's cells, each with a consumer Deployment and the base error rate.
async fn create_cells(member: &Member, rates: &ErrorRates) -> Result<(), DemoError> {
    let client = member.client();
    for cell in &member.cells {
        create_namespace(&client, cell, json!({CELL_LABEL.0: CELL_LABEL.1})).await?;
        let deployment = json!({
            "metadata": {"name": "checkout", "labels": {"app": "checkout"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "checkout"}},
                "template": {
                    "metadata": {"labels": {"app": "checkout"}},
                    "spec": {"containers": [{"name": "checkout", "image": "checkout:1.0"}]},
                },
            },
        });
        Api::<Deployment>::namespaced(client.clone(), cell)
            .create(
                &PostParams::default(),
                &serde_json::from_value(deployment).map_err(io_err)?,
            )
            .await?;
        rates.set_in(member.name, cell, BASE_ERROR_RATE);
    }
    Ok(())
}

/// Registers `member` in the hub: a cluster Secret with its kubeconfig, its region and
/// tier as the cluster's labels, letting the rollout's namespace target it.
async fn register(hub: &Client, member: &Member) -> Result<(), DemoError> {
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": member.name, "namespace": CLUSTER_NAMESPACE, "labels": {
            CLUSTER_LABEL: "true",
            ALLOW_FROM_LABEL: ROLLOUT_NS,
            "region": member.name,
            "tier": "prod",
        }},
        "stringData": {KUBECONFIG_KEY: member.emulator.kubeconfig()},
    });
    let secret: Secret = serde_json::from_value(secret).map_err(io_err)?;
    Api::<Secret>::namespaced(hub.clone(), CLUSTER_NAMESPACE)
        .patch(
            member.name,
            &PatchParams::apply("ringfence-demo").force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

/// The data of a member's target, or None when it does not exist.
async fn target_data(
    member: &Member,
    cell: &str,
) -> Result<Option<BTreeMap<String, String>>, DemoError> {
    let api: Api<ConfigMap> = Api::namespaced(member.client(), cell);
    Ok(api
        .get_opt("checkout-flags")
        .await?
        .map(|cm| cm.data.unwrap_or_default()))
}

/// Raises the error rate of every cell of `cells` in the regressed region once one of
/// them holds a revision other than `stable`; returns when it did.
async fn inject_regression(
    client: Client,
    cells: Vec<String>,
    rates: ErrorRates,
    stable: String,
) -> Option<Instant> {
    loop {
        for cell in &cells {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), cell);
            let revision = api
                .get_opt("checkout-flags")
                .await
                .ok()
                .flatten()
                .and_then(|cm| cm.metadata.annotations?.get(REVISION_ANNOTATION).cloned());
            if revision.is_some_and(|r| r != stable) {
                for cell in &cells {
                    rates.set_in(REGRESSED_REGION, cell, REGRESSED_ERROR_RATE);
                }
                return Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
