//! The demo's single-cluster stories, told against the emulator and the real
//! controller, and the pieces every story shares (the fleet's is in
//! `fleet.rs`).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::kubelet;
use super::metrics_source::{ErrorRates, MetricsSource};
use super::view::{self, Style};
use crate::api::{ConfigRollout, ConfigRolloutStatus, FIELD_MANAGER, Phase, REVISION_ANNOTATION};
use crate::controller::{Operator, Options, RevisionKeySource};
use kube_emulator::Emulator;

/// How the demo runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub scenario: Scenario,
    /// Scales bake times: 2.0 runs the bakes twice as fast.
    pub speed: f64,
    /// Leave the emulator running at the end until Ctrl-C.
    pub keep: bool,
    pub style: Style,
    /// Where to write the kubeconfig (a temporary directory when unset).
    pub kubeconfig: Option<PathBuf>,
}

/// Why the demo could not tell its story.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the API emulator: {0}")]
    Emulator(#[from] kube_emulator::EmulatorError),
    #[error("cannot start the controller: {0}")]
    Controller(#[from] crate::controller::RunError),
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

/// Which story to tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Revision A, then revision B, both roll out everywhere.
    Success,
    /// Revision B regresses the early ring and is rolled back.
    Regression,
    /// A hub and two member clusters: revision B regresses in us-east-1 only and is
    /// rolled back in both.
    Fleet,
}

/// How the story ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Every cell holds the revision the story should end on.
    pub correct: bool,
    pub summary: Vec<String>,
}

pub(super) const ROLLOUT_NS: &str = "platform";
pub(super) const ROLLOUT: &str = "checkout-flags";
pub(super) const APP_SELECTOR: &str = "app=checkout";
pub(super) const BASE_ERROR_RATE: f64 = 0.002;
const LOOPBACK_ANY_PORT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
pub(super) const REGRESSED_ERROR_RATE: f64 = 0.08;
/// Where the controller looks for cluster Secrets.
pub(super) const CLUSTER_NAMESPACE: &str = "ringfence-system";

/// The rings: name and cells.
fn rings() -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("canary", vec!["cell-canary-1".to_string()]),
        (
            "early",
            (1..=3).map(|i| format!("cell-early-{i}")).collect(),
        ),
        (
            "broad",
            (1..=5).map(|i| format!("cell-broad-{i}")).collect(),
        ),
    ]
}

pub(super) fn config_data(pricing: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("retries".to_string(), "3".to_string()),
        ("pricing-engine".to_string(), pricing.to_string()),
    ])
}

fn rollout_manifest(metrics_url: &str, bake: &str, pricing: &str) -> Value {
    json!({
        "apiVersion": "ringfence.dev/v1alpha1",
        "kind": "ConfigRollout",
        "metadata": {"name": ROLLOUT, "namespace": ROLLOUT_NS},
        "spec": {
            "config": {"kind": "ConfigMap", "name": "checkout-flags", "data": config_data(pricing)},
            "rings": [
                {"name": "canary", "namespaces": ["cell-canary-1"], "bake": bake},
                {"name": "early", "namespaceSelector": {"matchLabels": {"ring": "early"}}, "bake": bake, "maxConcurrent": 2},
                {"name": "broad", "namespaceSelector": {"matchLabels": {"ring": "broad"}}, "bake": bake, "maxConcurrent": "50%"},
            ],
            "workloads": {"selector": {"matchLabels": {"app": "checkout"}}, "restart": true},
            "gates": [{
                "name": "error-rate",
                "interval": "1s",
                "failureLimit": 2,
                "prometheus": {
                    "address": metrics_url,
                    "query": "avg(demo:http_error_ratio{namespace=~\"{{ namespaces }}\"})",
                    "max": 0.05,
                    "maxIncrease": 0.02,
                    "onNoData": "wait",
                },
            }],
            "progressDeadline": "1m",
        },
    })
}

/// Prints the live view: redrawn in place on a terminal, changed lines only otherwise.
pub(super) struct Printer {
    style: Style,
    tty: bool,
    drawn: usize,
    last: Vec<String>,
}

impl Printer {
    pub(super) fn new(style: Style) -> Self {
        Self {
            style,
            tty: std::io::stdout().is_terminal(),
            drawn: 0,
            last: Vec::new(),
        }
    }

    pub(super) fn say(&mut self, line: &str) {
        self.drawn = 0;
        self.last.clear();
        println!("{line}");
    }

    fn show(&mut self, status: &ConfigRolloutStatus) {
        let lines = view::render(status, self.style);
        if lines == self.last {
            return;
        }
        let mut out = std::io::stdout().lock();
        if self.tty {
            if self.drawn > 0 {
                let _ = write!(out, "\x1b[{}A\x1b[J", self.drawn);
            }
            for line in &lines {
                let _ = writeln!(out, "{line}");
            }
            self.drawn = lines.len();
        } else {
            for line in lines.iter().filter(|l| !self.last.contains(l)) {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = out.flush();
        self.last = lines;
    }
}

/// Ring transitions seen, for the summary's timeline.
#[derive(Default)]
pub(super) struct Timeline {
    pub(super) started: Option<Instant>,
    pub(super) seen: BTreeMap<(String, String), String>,
    pub(super) entries: Vec<String>,
}

impl Timeline {
    fn observe(&mut self, status: &ConfigRolloutStatus) {
        let elapsed = self
            .started
            .map(|s| s.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        let revision = status.revision.clone().unwrap_or_default();
        for ring in &status.rings {
            let phase = format!("{:?}", ring.phase);
            let key = (revision.clone(), ring.name.clone());
            if self.seen.get(&key) != Some(&phase) {
                self.seen.insert(key, phase.clone());
                self.entries.push(format!(
                    "  {elapsed:>6.1}s  revision {revision}  ring {:<7} {phase}",
                    ring.name
                ));
            }
        }
    }
}

/// Where the (hub's) kubeconfig goes: `--kubeconfig`, or a temporary file.
pub(super) fn kubeconfig_path(options: &DemoOptions) -> PathBuf {
    match &options.kubeconfig {
        Some(path) => path.clone(),
        None => {
            std::env::temp_dir().join(format!("ringfence-demo-{}.kubeconfig", std::process::id()))
        }
    }
}

/// The real controller, in-process against `client`, until `stop` is sent.
pub(super) async fn start_controller(
    client: Client,
    revision_key: crate::engine::RevisionKey,
) -> Result<
    (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ),
    DemoError,
> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = Operator::new(
        client,
        Options {
            namespace: None,
            trusted_namespaces: Default::default(),
            revision_key: RevisionKeySource::Fixed(revision_key),
            // The demo's metrics source listens on loopback, which gates may not call by default.
            gate_addresses: crate::engine::AddressPolicy::new(vec![
                crate::engine::HostPattern::Net(crate::engine::Cidr::host(LOOPBACK_ANY_PORT.ip())),
            ]),
            concurrency: 4,
            max_inflight_writes: 32,
            cluster_namespace: CLUSTER_NAMESPACE.to_string(),
            metrics_addr: LOOPBACK_ANY_PORT,
            health_addr: LOOPBACK_ANY_PORT,
            instance: Some("ringfence-demo".to_string()),
            leader: None,
        },
    )
    .await?;
    let controller = tokio::spawn(async move {
        // The demo reads the outcome from the API; a controller error shows there as a
        // rollout that does not finish.
        let _ = operator
            .run(
                async {
                    let _ = stopped.await;
                },
                |_| {},
            )
            .await;
    });
    Ok((stop, controller))
}

/// The single-cluster stories: `success` and `regression`.
pub async fn run(options: DemoOptions) -> Result<Outcome, DemoError> {
    let emulator = Emulator::builder()
        .admission(kube_emulator::validation::admission_hook())
        .start()
        .await?;
    let kubeconfig = kubeconfig_path(&options);
    emulator.write_kubeconfig(&kubeconfig)?;
    let style = options.style;
    let mut printer = Printer::new(style);
    printer.say(
        &style.bold(
            "ringfence demo: a staged configuration rollout against an embedded Kubernetes API",
        ),
    );
    printer.say(&format!("kubeconfig: {}", kubeconfig.display()));
    printer.say(&format!(
        "watch along: kubectl --kubeconfig {} get configrollouts -A -w",
        kubeconfig.display()
    ));

    let client = emulator.client();
    emulator.apply(&serde_json::to_value(crate::api::crd()).map_err(io_err)?)?;
    let rates = ErrorRates::default();
    create_cells(&client, &rates).await?;
    let metrics = MetricsSource::start(rates.clone()).await?;

    let revision_key = crate::engine::RevisionKey::generate();
    let (stop, controller) = start_controller(client.clone(), revision_key.clone()).await?;
    let kubelet = tokio::spawn(kubelet::run(
        client.clone(),
        APP_SELECTOR.to_string(),
        Duration::from_millis(500),
    ));

    let (bake, deadline) = bake_and_deadline(options.speed);
    let mut timeline = Timeline {
        started: Some(Instant::now()),
        ..Default::default()
    };
    let rollouts: Api<ConfigRollout> = Api::namespaced(client.clone(), ROLLOUT_NS);

    printer.say(&style.bold("\nrevision A: pricing-engine v1"));
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

    printer.say(&style.bold("\nrevision B: pricing-engine v2"));
    let injector = (options.scenario == Scenario::Regression).then(|| {
        tokio::spawn(inject_regression(
            client.clone(),
            rates.clone(),
            revision_a.clone(),
        ))
    });
    let (expected_end, expected_revision) = match options.scenario {
        Scenario::Success => (Phase::Succeeded, None),
        // The fleet's story is told by `super::fleet::run`; it too ends rolled back.
        Scenario::Regression | Scenario::Fleet => (Phase::RolledBack, Some(revision_a.clone())),
    };
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
    let expected_revision =
        expected_revision.unwrap_or_else(|| b.revision.clone().unwrap_or_default());
    let cells = check_cells(&client, &expected_revision, &revision_key).await?;

    let mut summary = vec![style.bold("\nsummary"), "timeline:".to_string()];
    summary.extend(timeline.entries.iter().cloned());
    if let Some(rollback) = &b.rollback {
        summary.extend(rollback_summary(rollback));
    }
    if let Some(at) = injected_at {
        summary.push(format!(
            "  from the injected regression to the rollout RolledBack: {:.1}s",
            at.elapsed().as_secs_f64()
        ));
    }
    let correct = b.phase == Some(expected_end) && cells.iter().all(|(_, ok)| *ok);
    for (ns, ok) in &cells {
        let mark = verdict_mark(style, *ok);
        summary.push(format!(
            "  {ns:<14} holds revision {expected_revision}: {mark}"
        ));
    }
    summary.push(if correct {
        style.green(&format!(
            "demo finished as expected: every cell holds revision {expected_revision}"
        ))
    } else {
        style.red("demo did NOT end as expected")
    });
    for line in &summary {
        printer.say(line);
    }

    if options.keep {
        printer.say(&format!(
            "the emulator keeps running; try: kubectl --kubeconfig {} describe configrollout -n {ROLLOUT_NS} {ROLLOUT}   (Ctrl-C to stop)",
            kubeconfig.display()
        ));
        crate::controller::shutdown_signal().await;
    }
    let _ = stop.send(());
    let _ = controller.await;
    kubelet.abort();
    emulator.shutdown().await;
    if options.kubeconfig.is_none() {
        let _ = std::fs::remove_file(&kubeconfig);
    }
    Ok(Outcome { correct, summary })
}

/// The rings' bake at `speed`, and how long a revision may take to finish.
pub(super) fn bake_and_deadline(speed: f64) -> (String, Duration) {
    let bake_secs = (4.0 / speed.max(0.01)).round().max(1.0) as u64;
    (
        format!("{bake_secs}s"),
        Duration::from_secs(60 + 12 * bake_secs),
    )
}

/// The rollback's lines of the summary: reason and message, the gate values that
/// caused it, and how long restoring took.
pub(super) fn rollback_summary(rollback: &crate::api::RollbackStatus) -> Vec<String> {
    let mut summary = vec![format!(
        "rollback of {}: {} — {}",
        rollback.revision, rollback.reason, rollback.message
    )];
    for gate in &rollback.gates {
        summary.push(format!(
            "  gate {}: value {} threshold {} baseline {}",
            gate.name,
            fmt_opt(gate.value),
            fmt_opt(gate.threshold),
            fmt_opt(gate.baseline)
        ));
    }
    if let (Some(start), Some(end)) = (&rollback.started_at, &rollback.completed_at) {
        // Status timestamps have whole seconds: "0s" would read as instant.
        let took = match end.0.as_second() - start.0.as_second() {
            0 => "under a second".to_string(),
            secs => format!("about {secs}s"),
        };
        summary.push(format!(
            "  rollback took {took} from the decision to the last target restored"
        ));
    }
    summary
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.4}"))
        .unwrap_or_else(|| "-".to_string())
}

async fn create_cells(client: &Client, rates: &ErrorRates) -> Result<(), DemoError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let pp = PostParams::default();
    namespaces
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": ROLLOUT_NS}})).map_err(io_err)?,
        )
        .await?;
    for (ring, cells) in rings() {
        for cell in cells {
            let ns = json!({"metadata": {"name": cell, "labels": {
                "ring": ring,
                crate::api::ALLOW_FROM_LABEL: ROLLOUT_NS,
            }}});
            namespaces
                .create(&pp, &serde_json::from_value(ns).map_err(io_err)?)
                .await?;
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
            let api: Api<Deployment> = Api::namespaced(client.clone(), &cell);
            api.create(&pp, &serde_json::from_value(deployment).map_err(io_err)?)
                .await?;
            rates.set(&cell, BASE_ERROR_RATE);
        }
    }
    Ok(())
}

pub(super) fn io_err(e: serde_json::Error) -> DemoError {
    DemoError::Io(std::io::Error::other(e))
}

/// Raises the early ring's error rate once its first cell holds a revision
/// other than `stable`; returns when it did.
async fn inject_regression(client: Client, rates: ErrorRates, stable: String) -> Option<Instant> {
    let early = rings().into_iter().find(|(name, _)| *name == "early")?.1;
    loop {
        for cell in &early {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), cell);
            let revision = api
                .get_opt("checkout-flags")
                .await
                .ok()
                .flatten()
                .and_then(|cm| cm.metadata.annotations?.get(REVISION_ANNOTATION).cloned());
            if revision.is_some_and(|r| r != stable) {
                for cell in &early {
                    rates.set(cell, REGRESSED_ERROR_RATE);
                }
                return Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Applies `manifest` as the rollout, then waits until its status satisfies `done`.
pub(super) async fn apply_and_wait(
    rollouts: &Api<ConfigRollout>,
    printer: &mut Printer,
    timeline: &mut Timeline,
    timeout: Duration,
    manifest: Value,
    done: impl Fn(&ConfigRolloutStatus) -> bool,
) -> Result<ConfigRolloutStatus, DemoError> {
    rollouts
        .patch(
            ROLLOUT,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(manifest),
        )
        .await?;
    wait_for(rollouts, printer, timeline, timeout, done).await
}

/// Whether a revision other than `stable` has finished: rolled out, rolled back or failed.
pub(super) fn settled_beyond(status: &ConfigRolloutStatus, stable: &str) -> bool {
    status.revision.as_deref() != Some(stable)
        && matches!(
            status.phase,
            Some(Phase::Succeeded | Phase::RolledBack | Phase::Failed)
        )
}

/// Stops a regression injector, returning when it injected (None: it never did).
pub(super) async fn injected_at(
    injector: Option<tokio::task::JoinHandle<Option<Instant>>>,
) -> Option<Instant> {
    let task = injector?;
    task.abort();
    task.await.ok().flatten()
}

/// `ok` or `WRONG`, for the summary's per-target lines.
pub(super) fn verdict_mark(style: Style, ok: bool) -> String {
    if ok {
        style.green("ok")
    } else {
        style.red("WRONG")
    }
}

pub(super) async fn wait_for(
    rollouts: &Api<ConfigRollout>,
    printer: &mut Printer,
    timeline: &mut Timeline,
    timeout: Duration,
    done: impl Fn(&ConfigRolloutStatus) -> bool,
) -> Result<ConfigRolloutStatus, DemoError> {
    let started = Instant::now();
    loop {
        if let Some(status) = rollouts.get_opt(ROLLOUT).await?.and_then(|r| r.status) {
            timeline.observe(&status);
            printer.show(&status);
            if done(&status) {
                return Ok(status);
            }
        }
        if started.elapsed() > timeout {
            return Err(DemoError::Timeout(
                timeout,
                "the rollout to finish".to_string(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every cell's `checkout-flags` and whether it holds exactly `revision`.
async fn check_cells(
    client: &Client,
    revision: &str,
    key: &crate::engine::RevisionKey,
) -> Result<Vec<(String, bool)>, DemoError> {
    let mut out = Vec::new();
    for (_, cells) in rings() {
        for cell in cells {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &cell);
            let ok = api
                .get_opt("checkout-flags")
                .await?
                .is_some_and(|cm| revision_of_data(cm.data.as_ref(), key) == revision);
            out.push((cell, ok));
        }
    }
    Ok(out)
}

/// The revision a ConfigMap holding `data` is on, by content.
pub(super) fn revision_of_data(
    data: Option<&BTreeMap<String, String>>,
    key: &crate::engine::RevisionKey,
) -> String {
    let config = crate::engine::ResolvedConfig {
        kind: crate::api::ConfigKind::ConfigMap,
        data: data
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect(),
    };
    crate::engine::revision_of(&config, key)
}
