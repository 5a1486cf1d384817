//! The controller in-process against the API emulator, gated by a real Prometheus that
//! scrapes a test exporter every second: a flat error rate promotes every ring, a ring that
//! regresses once it loads the new revision rolls everything back with the gate values that
//! caused it, a global incident is told apart from a regression by `compareTo: unchanged`,
//! and the time from a regression to the restored ring is measured.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use ringfence::api::{ConfigRollout, GateStatus, REVISION_ANNOTATION, RingPhase, Verdict};
use serde_json::{Value, json};
use support::background::{self, Background};
use support::cluster::{Cluster, data, phase};
use support::exporter::Exporter;
use support::prometheus::PrometheusServer;

const NS: &str = "platform";
const CONFIG: &str = "checkout-flags";
const GATE: &str = "error-rate";
/// The 5xx ratio over a 10 s rate window.
const QUERY: &str = r#"sum(rate(http_requests_total{namespace=~"{{ namespaces }}",code=~"5.."}[10s])) / sum(rate(http_requests_total{namespace=~"{{ namespaces }}"}[10s]))"#;
const RATE_WINDOW_SECONDS: f64 = 10.0;
const SCRAPE_SECONDS: f64 = 1.0;
const INTERVAL_SECONDS: f64 = 2.0;
const FAILURE_LIMIT: u32 = 2;
/// Error rate of every namespace before anything happens.
const NORMAL: f64 = 0.01;
/// Deadline for Prometheus to see a change: generous for a loaded machine.
const PROMETHEUS_WAIT: Duration = Duration::from_secs(120);

/// Ring 1 = cell-1, ring 2 = cell-2 and cell-3, ring 3 = cell-4..6.
const RINGS: [&[&str]; 3] = [
    &["cell-1"],
    &["cell-2", "cell-3"],
    &["cell-4", "cell-5", "cell-6"],
];

struct Env {
    cluster: Cluster,
    exporter: Arc<Exporter>,
    prometheus: PrometheusServer,
}

/// An exporter serving `cells` at the normal error rate, a Prometheus that has averaged
/// them over a baseline window already, and a running controller.
async fn start(cells: &[String]) -> Env {
    let exporter = Exporter::start().await;
    for cell in cells {
        exporter.set_error_rate(cell, NORMAL);
    }
    let prometheus = PrometheusServer::start(&[exporter.addr()]).await;
    // `before` baselines average the query over `baselineWindow`: wait until that has data.
    let averaged = format!("avg_over_time(({})[10s:1s])", ratio_of(cells));
    prometheus
        .wait_for(&averaged, |v| near(v, NORMAL), PROMETHEUS_WAIT)
        .await;
    let mut cluster = Cluster::start().await;
    cluster.namespace(NS, &[]).await;
    for cell in cells {
        cluster
            .namespace(cell, &[("ringfence.dev/allow-from", NS)])
            .await;
    }
    cluster.start_controller().await;
    Env {
        cluster,
        exporter: Arc::new(exporter),
        prometheus,
    }
}

impl Env {
    /// Applies rollout `flags` over the three rings with these bakes, gated by the
    /// error-rate query with these thresholds.
    async fn apply_flags(&self, bakes: [&str; 3], thresholds: &Thresholds) {
        let rollout = rollout(
            "flags",
            self.prometheus.address(),
            three_rings(bakes),
            thresholds,
        );
        self.cluster.apply_rollout(NS, rollout).await;
    }
}

fn ratio_of(namespaces: &[String]) -> String {
    QUERY.replace("{{ namespaces }}", &namespaces.join("|"))
}

fn all_cells() -> Vec<String> {
    RINGS.concat().iter().map(|c| c.to_string()).collect()
}

/// Within 2% (rate extrapolation near a change is not exact).
fn near(value: f64, target: f64) -> bool {
    (value - target).abs() <= target * 0.02 + 1e-9
}

/// Prior content of every cell except cell-3, which has no target before the rollout.
async fn priors(c: &Cluster) -> BTreeMap<String, Option<BTreeMap<String, String>>> {
    let mut priors = BTreeMap::new();
    for (i, cell) in RINGS.concat().iter().enumerate() {
        if *cell == "cell-3" {
            priors.insert(cell.to_string(), None);
            continue;
        }
        let value = format!("{}", i + 1);
        c.config_map(cell, CONFIG, &[("retries", &value), ("cell", cell)])
            .await;
        let cm = c.get_config_map(cell, CONFIG).await.unwrap();
        priors.insert(cell.to_string(), Some(data(&cm)));
    }
    priors
}

/// Thresholds of the error-rate gate; `max: None` leaves the ceiling out.
struct Thresholds {
    max: Option<f64>,
    max_increase: f64,
    compare_to: &'static str,
}

fn rollout(name: &str, address: &str, rings: Value, t: &Thresholds) -> Value {
    let mut prometheus = json!({
        "address": address,
        "query": QUERY,
        "maxIncrease": t.max_increase,
        "compareTo": t.compare_to,
        "baselineWindow": "10s",
        "onNoData": "wait",
    });
    if let Some(max) = t.max {
        prometheus["max"] = json!(max);
    }
    json!({
        "metadata": {"name": name},
        "spec": {
            "config": {"name": CONFIG, "data": {"retries": "9", "pricing-engine": "v2"}},
            "rings": rings,
            "gates": [{
                "name": GATE,
                "interval": format!("{INTERVAL_SECONDS}s"),
                "failureLimit": FAILURE_LIMIT,
                "prometheus": prometheus,
            }],
        },
    })
}

fn three_rings(bakes: [&str; 3]) -> Value {
    let names = ["canary", "early", "broad"];
    Value::Array(
        (0..3)
            .map(|i| json!({"name": names[i], "namespaces": RINGS[i], "bake": bakes[i]}))
            .collect(),
    )
}

fn ring_phase(r: &ConfigRollout, index: usize) -> Option<RingPhase> {
    r.status
        .as_ref()
        .and_then(|s| s.rings.get(index))
        .map(|ring| ring.phase)
}

fn ring_gate(r: &ConfigRollout, index: usize) -> Option<&GateStatus> {
    r.status
        .as_ref()
        .and_then(|s| s.rings.get(index))
        .and_then(|ring| ring.gates.iter().find(|g| g.name == GATE))
}

/// Every target holds exactly what it held before (or is absent), without our annotation.
async fn assert_restored(c: &Cluster, priors: &BTreeMap<String, Option<BTreeMap<String, String>>>) {
    for (cell, prior) in priors {
        let cm = c.get_config_map(cell, CONFIG).await;
        assert_eq!(cm.as_ref().map(data), *prior, "{cell} holds its prior data");
        if let Some(cm) = cm {
            assert!(
                !cm.annotations().contains_key(REVISION_ANNOTATION),
                "{cell} keeps no revision annotation"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flat_error_rate_promotes_every_ring() {
    let env = start(&all_cells()).await;
    let c = &env.cluster;
    priors(c).await;
    let thresholds = Thresholds {
        max: Some(0.05),
        max_increase: 0.02,
        compare_to: "before",
    };
    env.apply_flags(["3s", "3s", "3s"], &thresholds).await;
    let r = c
        .wait_rollout(NS, "flags", "Succeeded", |r| phase(r) == "Succeeded")
        .await;
    let status = r.status.as_ref().unwrap();
    let revision = status.revision.clone().unwrap();
    for cell in all_cells() {
        let cm = c.get_config_map(&cell, CONFIG).await.unwrap();
        assert_eq!(
            cm.annotations().get(REVISION_ANNOTATION),
            Some(&revision),
            "{cell}"
        );
        assert_eq!(data(&cm)["retries"], "9", "{cell}");
    }
    for (i, ring) in status.rings.iter().enumerate() {
        assert_eq!(ring.phase, RingPhase::Promoted, "ring {i}");
        let gate = ring_gate(&r, i).expect("the gate was evaluated");
        assert_eq!(gate.verdict, Some(Verdict::Pass), "ring {i}: {gate:?}");
        let baseline = gate.baseline.expect("a baseline");
        assert!(near(baseline, NORMAL), "ring {i}: {gate:?}");
        assert!(near(gate.value.unwrap(), NORMAL), "ring {i}: {gate:?}");
    }
}

/// Consumers of `cells` fail `rate` of their requests as soon as they load a new revision,
/// for as long as the returned guard lives.
fn regress_on_load(env: &Env, cells: &'static [&'static str], rate: f64) -> Background {
    let exporter = env.exporter.clone();
    let targets = watcher(
        Api::<ConfigMap>::all(env.cluster.client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={CONFIG}")),
    );
    background::spawn(
        targets
            .default_backoff()
            .applied_objects()
            .for_each(move |cm| {
                if let Ok(cm) = cm
                    && cm.annotations().contains_key(REVISION_ANNOTATION)
                    && let Some(ns) = cm.namespace()
                    && cells.contains(&ns.as_str())
                {
                    exporter.set_error_rate(&ns, rate);
                }
                async {}
            }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_that_regresses_on_the_new_revision_rolls_everything_back() {
    const REGRESSED: f64 = 0.2;
    let env = start(&all_cells()).await;
    let c = &env.cluster;
    let priors = priors(c).await;
    let _regression = regress_on_load(&env, RINGS[1], REGRESSED);
    let thresholds = Thresholds {
        max: Some(0.5),
        max_increase: 0.15,
        compare_to: "before",
    };
    // Ring 2 bakes long enough that only the regression can end it.
    env.apply_flags(["3s", "5m", "3s"], &thresholds).await;
    let r = c
        .wait_rollout(NS, "flags", "RolledBack", |r| phase(r) == "RolledBack")
        .await;
    assert_restored(c, &priors).await;
    assert_eq!(ring_phase(&r, 0), Some(RingPhase::RolledBack));

    let status = r.status.as_ref().unwrap();
    let rollback = status.rollback.as_ref().expect("rollback status");
    let cause = rollback
        .gates
        .iter()
        .find(|g| g.name == GATE)
        .unwrap_or_else(|| panic!("the gate is named in the rollback: {rollback:?}"));
    let ring = ring_gate(&r, 1).expect("ring 2 gate status");
    for gate in [cause, ring] {
        assert_eq!(gate.verdict, Some(Verdict::Fail), "{gate:?}");
        assert!(gate.consecutive_failures >= FAILURE_LIMIT, "{gate:?}");
        let (value, baseline, threshold) = (
            gate.value.unwrap(),
            gate.baseline.unwrap(),
            gate.threshold.unwrap(),
        );
        assert!(
            near(baseline, NORMAL),
            "baseline of ring 2 before: {gate:?}"
        );
        assert!(
            (threshold - (baseline + thresholds.max_increase)).abs() < 1e-9,
            "threshold = baseline + maxIncrease: {gate:?}"
        );
        // The 10 s rate window may still be moving from 1% to 20% at the failing check.
        assert!(
            value > threshold && value <= REGRESSED * 1.02,
            "value between the threshold and the regressed rate: {gate:?}"
        );
    }
    // Ring 3 was never touched.
    let ring3 = &status.rings[2];
    assert_eq!(ring3.updated, 0, "{ring3:?}");
}

/// A rise of every namespace's error rate while ring 1 verifies: only the baseline rule decides.
async fn global_rise(compare_to: &'static str) -> ConfigRollout {
    const INCIDENT: f64 = 0.1;
    let env = start(&all_cells()).await;
    let c = &env.cluster;
    let priors = priors(c).await;
    let thresholds = Thresholds {
        max: None,
        max_increase: 0.02,
        compare_to,
    };
    // Ring 1 and 2 bake long enough for ring 3's `before` baseline to be taken after the
    // incident has filled the rate window and the baseline window (10 s each).
    env.apply_flags(["15s", "15s", "3s"], &thresholds).await;
    c.wait_rollout(NS, "flags", "ring 1 verifying", |r| {
        ring_phase(r, 0) == Some(RingPhase::Verifying)
    })
    .await;
    for cell in all_cells() {
        env.exporter.set_error_rate(&cell, INCIDENT);
    }
    let r = c
        .wait_rollout(NS, "flags", "a final phase", |r| {
            matches!(phase(r).as_str(), "Succeeded" | "RolledBack")
        })
        .await;
    if phase(&r) == "RolledBack" {
        assert_restored(c, &priors).await;
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_incident_is_not_blamed_on_the_change_when_comparing_to_unchanged_cells() {
    let r = global_rise("unchanged").await;
    assert_eq!(
        phase(&r),
        "Succeeded",
        "{:#?}",
        r.status.as_ref().map(|s| &s.rings)
    );
    // Ring 1 was judged against the unchanged cells, which saw the same incident; the last
    // ring, with none left, against its own value before it was written.
    let first = ring_gate(&r, 0).unwrap();
    assert!(
        first
            .message
            .as_deref()
            .unwrap_or("")
            .ends_with("unchanged namespaces now"),
        "{first:?}"
    );
    let last = ring_gate(&r, 2).unwrap();
    assert!(
        last.message
            .as_deref()
            .unwrap_or("")
            .contains("baseline recorded before the ring was written"),
        "{last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_incident_rolls_back_when_comparing_to_before() {
    let r = global_rise("before").await;
    assert_eq!(
        phase(&r),
        "RolledBack",
        "{:#?}",
        r.status.as_ref().map(|s| &s.rings)
    );
    let rollback = r.status.as_ref().unwrap().rollback.as_ref().unwrap();
    let cause = rollback.gates.iter().find(|g| g.name == GATE).unwrap();
    assert!(near(cause.baseline.unwrap(), NORMAL), "{cause:?}");
    assert!(cause.value.unwrap() > cause.threshold.unwrap(), "{cause:?}");
}

/// Detection runs: `RINGFENCE_DETECTION_RUNS`, 10 unless set.
fn detection_runs() -> usize {
    std::env::var("RINGFENCE_DETECTION_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .max(1)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_time_from_regression_to_restored_ring() {
    const REGRESSED: f64 = 0.2;
    const MAX_INCREASE: f64 = 0.02;
    let runs = detection_runs();
    let cells: Vec<[String; 2]> = (0..runs)
        .map(|run| [format!("detect-{run}-a"), format!("detect-{run}-b")])
        .collect();
    let env = start(&cells.concat()).await;
    let c = &env.cluster;
    let thresholds = Thresholds {
        max: None,
        max_increase: MAX_INCREASE,
        compare_to: "before",
    };
    let prior = BTreeMap::from([("retries".to_string(), "1".to_string())]);
    let mut seconds = Vec::new();
    for (run, ring) in cells.iter().enumerate() {
        for cell in ring {
            c.config_map(cell, CONFIG, &[("retries", "1")]).await;
        }
        let name = format!("detect-{run}");
        let rings = json!([{"name": "ring", "namespaces": ring, "bake": "10m"}]);
        c.apply_rollout(
            NS,
            rollout(&name, env.prometheus.address(), rings, &thresholds),
        )
        .await;
        c.wait_rollout(NS, &name, "verifying with a passing check", |r| {
            ring_phase(r, 0) == Some(RingPhase::Verifying)
                && ring_gate(r, 0).is_some_and(|g| g.verdict == Some(Verdict::Pass))
        })
        .await;
        // Regressions do not wait for a check: spread this run's over the interval after one.
        let phase = INTERVAL_SECONDS * run as f64 / runs as f64;
        tokio::time::sleep(Duration::from_secs_f64(phase)).await;
        let regressed = Instant::now();
        for cell in ring {
            env.exporter.set_error_rate(cell, REGRESSED);
        }
        let prior = &prior;
        c.wait_for(NS, &name, "the ring restored", || async move {
            let mut restored = true;
            for cell in ring {
                let cm = c.get_config_map(cell, CONFIG).await;
                restored &= cm.is_some_and(|cm| {
                    data(&cm) == *prior && !cm.annotations().contains_key(REVISION_ANNOTATION)
                });
            }
            restored
        })
        .await;
        let elapsed = regressed.elapsed().as_secs_f64();
        eprintln!(
            "detection run {}: {elapsed:.2} s (regression {phase:.1} s after a passing check)",
            run + 1
        );
        assert!(elapsed < 60.0, "run {}: {elapsed:.2} s", run + 1);
        seconds.push(elapsed);
    }
    seconds.sort_by(f64::total_cmp);
    // The 10 s rate window must move this far from the baseline before the ratio crosses it.
    let crossing = RATE_WINDOW_SECONDS * MAX_INCREASE / (REGRESSED - NORMAL);
    let bound = SCRAPE_SECONDS + f64::from(FAILURE_LIMIT) * INTERVAL_SECONDS + crossing;
    let best = crossing + f64::from(FAILURE_LIMIT - 1) * INTERVAL_SECONDS;
    eprintln!(
        "detection over {runs} runs: median {:.2} s, p90 {:.2} s; bound from the settings: {SCRAPE_SECONDS} s scrape + {FAILURE_LIMIT} x {INTERVAL_SECONDS} s interval + {crossing:.2} s for the {RATE_WINDOW_SECONDS} s rate window to cross baseline + {MAX_INCREASE} = {bound:.2} s; a check right after the crossing is scraped allows {best:.2} s",
        percentile(&seconds, 0.5),
        percentile(&seconds, 0.9),
    );
}
