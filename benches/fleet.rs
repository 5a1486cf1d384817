//! Fleet scale: the controller against the in-process API emulator, each figure a ratio to
//! baselines measured in the same run on the same emulator:
//!
//! - **limit**: the same N server-side-apply writes sent 16 in flight by a plain kube client
//!   (the API server's own write capacity);
//! - **kubectl**: `kubectl apply --server-side --validate=false` of the same N objects.
//!
//! Scenarios: (1) one rollout of N targets in 3 rings (1% / 9% / 90%, bake 0, no gates),
//! revisions 1, 2 and 3 each to Succeeded; (2) a rollback of N targets, each holding a
//! distinct 10 KiB prior, triggered by a webhook gate failing in the last ring, every target
//! checked afterwards; (3) 1,000 rollouts of 10 targets each over 10,000 namespaces, all to
//! Succeeded, then a minute of steady state with every watch dropped and re-listed
//! repeatedly (the equivalent of many resync periods): writes and reconciles counted.
//!
//! The controller runs as its own process (`ringfence controller`), so its peak RSS is its
//! own. `cargo bench --bench fleet` runs N = 1,000 and 10,000; `RINGFENCE_BENCH_SCALE=0.1`
//! (or a first argument) scales every N down, `RINGFENCE_BENCH_SCENARIOS=1,3` runs only
//! those scenarios, and `RINGFENCE_BENCH_LOG=info` with `RINGFENCE_BENCH_LOG_FILE=PATH`
//! keeps the controller's log.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Json;
use axum::http::StatusCode;
use axum::routing::post;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kube_emulator::{Emulator, EmulatorHandle};
use ringfence::api::ConfigRollout;
use serde_json::{Value, json};

const IN_FLIGHT: usize = 16;
const NS: &str = "platform";

fn scale() -> f64 {
    std::env::args()
        .nth(1)
        .filter(|a| !a.starts_with('-'))
        .or_else(|| std::env::var("RINGFENCE_BENCH_SCALE").ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// Whether scenario `n` runs: all of them, unless `RINGFENCE_BENCH_SCENARIOS` lists some
/// (e.g. `1,3`).
fn runs(n: usize) -> bool {
    std::env::var("RINGFENCE_BENCH_SCENARIOS").map_or(true, |list| {
        list.split(',').any(|s| s.trim() == n.to_string())
    })
}

fn cell(i: usize) -> String {
    format!("cell-{i:05}")
}

fn ring_of(i: usize) -> &'static str {
    match i % 100 {
        0 => "canary",
        1..=9 => "early",
        _ => "broad",
    }
}

struct Bench {
    emu: EmulatorHandle,
    client: Client,
    kubeconfig: std::path::PathBuf,
    controller: Option<Child>,
    metrics: Option<String>,
    _dir: tempdir::TempDir,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct TempDir(pub std::path::PathBuf);
    impl TempDir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!("ringfence-fleet-{}", std::process::id()));
            std::fs::create_dir_all(&path).expect("temp dir");
            Self(path)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Bench {
    async fn start(cells: usize) -> Self {
        let emu = Emulator::builder()
            .admission(kube_emulator::validation::admission_hook())
            .start()
            .await
            .expect("emulator starts");
        emu.apply(&serde_json::to_value(ringfence::api::crd()).unwrap())
            .expect("CRD installs");
        let client = emu.client();
        let dir = tempdir::TempDir::new();
        let kubeconfig = dir.0.join("kubeconfig");
        emu.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        let bench = Self {
            emu,
            client,
            kubeconfig,
            controller: None,
            metrics: None,
            _dir: dir,
        };
        bench.namespaces(cells).await;
        bench
    }

    async fn namespaces(&self, cells: usize) {
        let api = Api::<Namespace>::all(self.client.clone());
        let names = std::iter::once((NS.to_string(), "none"))
            .chain((0..cells).map(|i| (cell(i), ring_of(i))));
        stream::iter(names)
            .for_each_concurrent(IN_FLIGHT, |(name, ring)| {
                let api = api.clone();
                async move {
                    let ns: Namespace = serde_json::from_value(json!({"metadata": {
                        "name": name, "labels": {"ring": ring},
                    }}))
                    .unwrap();
                    api.create(&PostParams::default(), &ns)
                        .await
                        .expect("namespace");
                }
            })
            .await;
    }

    /// The limit: N server-side applies, 16 in flight, by a plain client.
    async fn limit(&self, cells: usize, name: &str, data: impl Fn(usize) -> Value) -> Duration {
        let started = Instant::now();
        stream::iter(0..cells)
            .for_each_concurrent(IN_FLIGHT, |i| {
                let api = Api::<ConfigMap>::namespaced(self.client.clone(), &cell(i));
                let body = json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": cell(i)},
                    "data": data(i),
                });
                async move {
                    api.patch(
                        name,
                        &PatchParams::apply("bench").force(),
                        &Patch::Apply(&body),
                    )
                    .await
                    .expect("baseline write");
                }
            })
            .await;
        started.elapsed()
    }

    /// kubectl's own speed at the same writes.
    fn kubectl(&self, cells: usize, name: &str) -> Duration {
        let items: Vec<Value> = (0..cells)
            .map(|i| {
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": cell(i)},
                    "data": {"value": "1", "padding": "x".repeat(512)}})
            })
            .collect();
        let file = self._dir.0.join(format!("{name}.json"));
        std::fs::write(
            &file,
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": items}))
                .unwrap(),
        )
        .expect("manifest written");
        let started = Instant::now();
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["apply", "--server-side", "--validate=false", "-f"])
            .arg(&file)
            .stdout(Stdio::null())
            .output()
            .expect("kubectl runs (it must be installed)");
        assert!(
            out.status.success(),
            "kubectl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        started.elapsed()
    }

    fn start_controller(&mut self) {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_ringfence"))
            .arg("controller")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .arg(format!("--health-addr=127.0.0.1:{}", free_port()))
            .arg(format!("--trusted-namespaces={NS}"))
            .arg(format!("--revision-key-namespace={NS}"))
            .arg("--gate-allowed-hosts=127.0.0.1/32")
            .arg("--concurrency=16")
            .env(
                "RUST_LOG",
                std::env::var("RINGFENCE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(controller_log())
            .spawn()
            .expect("controller starts");
        self.controller = Some(child);
        self.metrics = Some(format!("127.0.0.1:{port}"));
    }

    /// Peak resident set of the controller process so far, in MiB.
    fn controller_peak_mib(&self) -> f64 {
        let pid = self.controller.as_ref().map_or(0, Child::id);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    async fn metric(&self, name: &str) -> f64 {
        let Some(addr) = &self.metrics else {
            return 0.0;
        };
        let body = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .ok()
            .map(|r| r.text());
        let body = match body {
            Some(t) => t.await.unwrap_or_default(),
            None => String::new(),
        };
        body.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn apply(&self, rollout: Value) {
        let name = rollout["metadata"]["name"].as_str().unwrap().to_string();
        let mut body = rollout;
        body["apiVersion"] = json!("ringfence.dev/v1alpha1");
        body["kind"] = json!("ConfigRollout");
        body["metadata"]["namespace"] = json!(NS);
        Api::<ConfigRollout>::namespaced(self.client.clone(), NS)
            .patch(
                &name,
                &PatchParams::apply("bench").force(),
                &Patch::Apply(&body),
            )
            .await
            .expect("rollout applied");
    }

    /// Waits until `name` is in `phase` for its current generation and revision.
    async fn wait(&self, name: &str, phase: &str) -> ConfigRollout {
        let api = Api::<ConfigRollout>::namespaced(self.client.clone(), NS);
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            if let Ok(r) = api.get(name).await {
                let s = r.status.clone().unwrap_or_default();
                let done = s.phase.map(|p| format!("{p:?}")).as_deref() == Some(phase)
                    && s.observed_generation == r.metadata.generation
                    && s.history.first().map(|h| &h.revision) == s.revision.as_ref();
                if done {
                    return r;
                }
            }
            assert!(Instant::now() < deadline, "{name} never reached {phase}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn requests(&self, since: u64, resource: &str) -> usize {
        self.emu
            .request_log()
            .since(since)
            .iter()
            .filter(|r| r.resource == resource && r.verb != "watch")
            .count()
    }

    fn writes(&self, since: u64) -> usize {
        self.emu
            .request_log()
            .since(since)
            .iter()
            .filter(|r| r.is_write() && r.resource != "events" && r.resource != "leases")
            .count()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The controller's log: discarded, unless `RINGFENCE_BENCH_LOG_FILE` names a file for it.
fn controller_log() -> Stdio {
    std::env::var_os("RINGFENCE_BENCH_LOG_FILE")
        .and_then(|path| std::fs::File::create(path).ok())
        .map_or_else(Stdio::null, Stdio::from)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn rings(gates: Value) -> Value {
    let ring = |name: &str| json!({"name": name, "namespaceSelector": {"matchLabels": {"ring": name}}, "bake": "0s"});
    json!({"rings": [ring("canary"), ring("early"), ring("broad")], "gates": gates})
}

struct Row {
    scenario: String,
    wall: Duration,
    limit: Duration,
    kubectl: Option<Duration>,
    per_target: f64,
    status_kib: f64,
    rss_mib: f64,
}

fn print(rows: &[Row]) {
    println!(
        "\n| scenario | wall | x limit | x kubectl | requests / target | status | controller peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        let ratio = |b: Duration| r.wall.as_secs_f64() / b.as_secs_f64().max(1e-9);
        println!(
            "| {} | {:.2}s | {:.2} | {} | {:.2} | {:.1} KiB | {:.1} MiB |",
            r.scenario,
            r.wall.as_secs_f64(),
            ratio(r.limit),
            r.kubectl
                .map_or("-".to_string(), |k| format!("{:.2}", ratio(k))),
            r.per_target,
            r.status_kib,
            r.rss_mib
        );
    }
}

async fn one_rollout(cells: usize, rows: &mut Vec<Row>) {
    let mut b = Bench::start(cells).await;
    let padding = "x".repeat(512);
    let limit = b
        .limit(
            cells,
            "limit-flags",
            |_| json!({"value": "1", "padding": padding}),
        )
        .await;
    let kubectl = b.kubectl(cells, "kubectl-flags");
    b.start_controller();
    for revision in 1..=3 {
        let seq = b.emu.request_log().last_seq();
        let started = Instant::now();
        let mut spec = rings(json!([]));
        spec["config"] = json!({"name": "fleet-flags", "data": {"value": revision.to_string(), "padding": padding}});
        b.apply(json!({"metadata": {"name": "fleet"}, "spec": spec}))
            .await;
        let r = b.wait("fleet", "Succeeded").await;
        let wall = started.elapsed();
        rows.push(Row {
            scenario: format!("1: {cells} targets, revision {revision}"),
            wall,
            limit,
            kubectl: Some(kubectl),
            per_target: b.requests(seq, "configmaps") as f64 / cells as f64,
            status_kib: serde_json::to_vec(&r.status).unwrap().len() as f64 / 1024.0,
            rss_mib: b.controller_peak_mib(),
        });
    }
}

async fn rollback(cells: usize, rows: &mut Vec<Row>) {
    let mut b = Bench::start(cells).await;
    // Every cell holds its own distinct 10 KiB prior.
    let prior =
        |i: usize| json!({"value": format!("prior-{i}"), "blob": format!("{i:010}").repeat(1024)});
    b.limit(cells, "rb-flags", prior).await;
    let limit = b
        .limit(
            cells,
            "limit-flags",
            |i| json!({"value": "1", "blob": format!("{i:010}").repeat(1024)}),
        )
        .await;
    let fail = Arc::new(AtomicBool::new(true));
    let url = webhook(fail.clone()).await;
    b.start_controller();
    let mut spec = rings(json!([{"name": "smoke", "interval": "1s", "webhook": {"url": url}}]));
    spec["config"] = json!({"name": "rb-flags", "data": {"value": "new"}});
    let seq = b.emu.request_log().last_seq();
    b.apply(json!({"metadata": {"name": "rb"}, "spec": spec}))
        .await;
    let r = b.wait("rb", "RolledBack").await;
    let took = b.metric("ringfence_rollback_duration_seconds_sum").await;
    let targets: BTreeMap<String, BTreeMap<String, String>> =
        Api::<ConfigMap>::all(b.client.clone())
            .list(&ListParams::default().fields("metadata.name=rb-flags"))
            .await
            .expect("targets listed")
            .items
            .into_iter()
            .map(|cm| {
                (
                    cm.namespace().unwrap_or_default(),
                    cm.data.unwrap_or_default(),
                )
            })
            .collect();
    for i in 0..cells {
        let want: BTreeMap<String, String> = serde_json::from_value(prior(i)).unwrap();
        assert_eq!(
            targets.get(&cell(i)),
            Some(&want),
            "{} restored exactly",
            cell(i)
        );
    }
    rows.push(Row {
        scenario: format!("2: rollback of {cells} distinct 10 KiB priors"),
        wall: Duration::from_secs_f64(took),
        limit,
        kubectl: None,
        per_target: b.requests(seq, "configmaps") as f64 / cells as f64,
        status_kib: serde_json::to_vec(&r.status).unwrap().len() as f64 / 1024.0,
        rss_mib: b.controller_peak_mib(),
    });
}

async fn webhook(fail: Arc<AtomicBool>) -> String {
    let router = Router::new().route(
        "/check",
        post(move |Json(body): Json<Value>| {
            let fail = fail.load(Ordering::Relaxed);
            async move {
                if fail && body["ring"] == "broad" && body["purpose"] == "check" {
                    (StatusCode::INTERNAL_SERVER_ERROR, "broad is failing")
                } else {
                    (StatusCode::OK, "ok")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.ok() });
    format!("http://{addr}/check")
}

async fn many_rollouts(rollouts: usize, rows: &mut Vec<Row>) {
    let per = 10;
    let cells = rollouts * per;
    let mut b = Bench::start(cells).await;
    let limit = b
        .limit(cells, "limit-flags", |_| json!({"value": "1"}))
        .await;
    b.start_controller();
    let seq = b.emu.request_log().last_seq();
    let started = Instant::now();
    stream::iter(0..rollouts)
        .for_each_concurrent(IN_FLIGHT, |r| {
            let namespaces: Vec<String> = (r * per..(r + 1) * per).map(cell).collect();
            let b = &b;
            async move {
                b.apply(json!({"metadata": {"name": format!("r{r:04}")}, "spec": {
                    "config": {"name": format!("flags-{r:04}"), "data": {"value": "1"}},
                    "rings": [{"name": "all", "namespaces": namespaces}],
                }}))
                .await;
            }
        })
        .await;
    for r in 0..rollouts {
        b.wait(&format!("r{r:04}"), "Succeeded").await;
    }
    let wall = started.elapsed();
    let per_target = b.requests(seq, "configmaps") as f64 / cells as f64;
    // Where the requests of many small rollouts go, per rollout.
    let mut by_kind: BTreeMap<(String, String), usize> = BTreeMap::new();
    for q in b.emu.request_log().since(seq) {
        if q.verb != "watch" {
            *by_kind
                .entry((q.verb.clone(), q.resource.clone()))
                .or_default() += 1;
        }
    }
    let breakdown: Vec<String> = by_kind
        .iter()
        .map(|((verb, resource), n)| {
            format!("{verb} {resource} {:.1}", *n as f64 / rollouts as f64)
        })
        .collect();
    println!("3: requests per rollout: {}", breakdown.join(", "));
    println!(
        "3: {} reconciles taking {:.1}s in all, {} failed",
        b.metric("ringfence_reconcile_duration_seconds_count").await,
        b.metric("ringfence_reconcile_duration_seconds_sum").await,
        b.metric("ringfence_reconcile_errors_total").await
    );
    // Steady state: every watch dropped and re-listed every 5 s for a minute.
    let quiet = b.emu.request_log().last_seq();
    let reconciles = b.metric("ringfence_reconcile_duration_seconds_count").await;
    let window = Duration::from_secs(60);
    let until = Instant::now() + window;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(5)).await;
        b.emu.faults().close_watches();
    }
    let writes = b.writes(quiet);
    let reconciled = b.metric("ringfence_reconcile_duration_seconds_count").await - reconciles;
    println!(
        "3: steady state over {}s with watches re-listed every 5s: {writes} writes, {:.0} reconciles per minute",
        window.as_secs(),
        reconciled * 60.0 / window.as_secs_f64()
    );
    rows.push(Row {
        scenario: format!("3: {rollouts} rollouts x {per} targets"),
        wall,
        limit,
        kubectl: None,
        per_target,
        status_kib: 0.0,
        rss_mib: b.controller_peak_mib(),
    });
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let scale = scale();
    let n = |full: usize| ((full as f64 * scale).round() as usize).max(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut rows = Vec::new();
        if runs(1) {
            for cells in [n(1000), n(10_000)] {
                one_rollout(cells, &mut rows).await;
                print(&rows);
            }
        }
        if runs(2) {
            rollback(n(10_000), &mut rows).await;
            print(&rows);
        }
        if runs(3) {
            many_rollouts(n(1000), &mut rows).await;
            print(&rows);
        }
    });
}
