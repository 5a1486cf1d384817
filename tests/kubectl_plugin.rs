//! `kubectl ringfence`: the real kubectl runs the binary as its plugin (linked as
//! `kubectl-ringfence` on the PATH) against the emulator, on rollouts the real controller
//! drives, including while paused and during a rollback.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use ringfence::api::{ConfigRollout, RingPhase};
use serde_json::{Value, json};
use support::background::{self, Background};
use support::cluster::{Cluster, phase};
use support::tempdir::{TempDir, tempdir};
use tokio::io::{AsyncBufReadExt, BufReader};

const NS: &str = "platform";
const KUBECTL: &str = "/usr/bin/kubectl";

/// kubectl with the plugin on its PATH and a kubeconfig for the emulator.
struct Kubectl {
    dir: TempDir,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn new(c: &Cluster) -> Self {
        assert!(
            Path::new(KUBECTL).exists(),
            "{KUBECTL} is required by this test (CI installs it); it is missing"
        );
        let dir = tempdir().unwrap();
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_ringfence"),
            dir.path().join("kubectl-ringfence"),
        )
        .unwrap();
        c.emu
            .write_kubeconfig(dir.path().join("kubeconfig"))
            .unwrap();
        Self { dir }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let path = format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = tokio::process::Command::new(KUBECTL);
        cmd.args(args)
            .env("PATH", path)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env_remove("NO_COLOR")
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().await.expect("kubectl runs");
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!(
            "$ kubectl {}\n{}{}(exit {})",
            args.join(" "),
            run.stdout,
            run.stderr,
            run.code
        );
        assert!(
            !run.stderr.contains("panicked") && !run.stderr.contains("backtrace"),
            "{}",
            run.stderr
        );
        run
    }

    /// Runs a command that must succeed; its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert_eq!(run.code, 0, "kubectl {args:?} failed:\n{}", run.stderr);
        run.stdout
    }

    /// Starts a long-running command; its stdout lines are collected as they come.
    fn spawn(&self, args: &[&str]) -> (Arc<Mutex<Vec<String>>>, tokio::process::Child, Background) {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("kubectl starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        let reader = background::spawn(async move {
            let mut stdout = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        (lines, child, reader)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

async fn cells(c: &Cluster, names: &[&str]) {
    c.namespace(NS, &[]).await;
    for name in names {
        c.namespace(name, &[("ringfence.dev/allow-from", NS)]).await;
        c.config_map(name, "flags", &[("retries", "1")]).await;
    }
}

/// Ring one is cell-1 (1s bake); ring two is cell-2 and cell-3 (an hour's bake), gated by
/// the webhook.
fn rollout(retries: &str, webhook: &str) -> Value {
    json!({
        "metadata": {"name": "flags"},
        "spec": {
            "config": {"name": "flags", "data": {"retries": retries}},
            "rings": [
                {"name": "one", "namespaces": ["cell-1"], "bake": "1s"},
                {"name": "two", "namespaces": ["cell-2", "cell-3"], "bake": "1h"},
            ],
            "gates": [{"name": "smoke", "interval": "1s", "failureLimit": 2, "webhook": {"url": webhook}}],
        },
    })
}

fn ring_verifying(name: &'static str) -> impl Fn(&ConfigRollout) -> bool {
    move |r| {
        phase(r) == "Progressing"
            && r.status.as_ref().is_some_and(|s| {
                s.rings
                    .iter()
                    .any(|ring| ring.name == name && ring.phase == RingPhase::Verifying)
            })
    }
}

fn revision(r: &ConfigRollout) -> String {
    r.status
        .as_ref()
        .and_then(|s| s.revision.clone())
        .unwrap_or_default()
}

/// The id a request command printed (`...=ID)`).
fn request_id(stdout: &str, annotation: &str) -> String {
    let start = stdout
        .find(&format!("{annotation}="))
        .unwrap_or_else(|| panic!("no {annotation} in {stdout}"))
        + annotation.len()
        + 1;
    stdout[start..]
        .split(')')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_history_follow_a_rollout_through_its_rollback() {
    let mut c = Cluster::start().await;
    cells(&c, &["cell-1", "cell-2", "cell-3"]).await;
    let kubectl = Kubectl::new(&c);

    let plugins = kubectl.ok(&["plugin", "list"]).await;
    assert!(
        plugins.contains(&kubectl.path("kubectl-ringfence").display().to_string()),
        "{plugins}"
    );

    let fail = Arc::new(AtomicBool::new(false));
    let webhook = support::webhook::serve(fail.clone()).await;
    c.start_controller().await;
    c.apply_rollout(NS, rollout("3", &webhook)).await;
    let (watched, _watch, _reader) = kubectl.spawn(&["ringfence", "get", "flags", "-n", NS, "-w"]);
    let r = c
        .wait_rollout(NS, "flags", "ring two verifying", ring_verifying("two"))
        .await;
    let rev = revision(&r);

    let tree = kubectl.ok(&["ringfence", "get", "flags", "-n", NS]).await;
    assert!(
        tree.starts_with(&format!(
            "platform/flags  revision {rev}  Progressing  ring 2/2 two"
        )),
        "{tree}"
    );
    assert!(tree.contains("ring one  Promoted    1/1 updated"), "{tree}");
    assert!(tree.contains("ring two  Verifying   2/2 updated"), "{tree}");
    assert!(tree.contains("gate smoke  Pass"), "{tree}");
    assert!(
        !tree.contains('\x1b'),
        "no colour codes into a pipe: {tree}"
    );
    let list = kubectl.ok(&["ringfence", "get", "-A"]).await;
    assert!(
        list.starts_with("NAMESPACE  NAME   REVISION")
            && list.contains(&format!("platform   flags  {rev}")),
        "{list}"
    );

    // The gate fails while cell-2 cannot be restored: the rollback stays in progress.
    c.fail_config_map_writes("cell-2", 500);
    fail.store(true, Ordering::Relaxed);
    c.wait_rollout(NS, "flags", "RollingBack", |r| phase(r) == "RollingBack")
        .await;
    let tree = kubectl.ok(&["ringfence", "get", "flags", "-n", NS]).await;
    assert!(
        tree.contains(&format!("revision {rev}  RollingBack")),
        "{tree}"
    );
    assert!(
        tree.contains(&format!("rollback of {rev}: GateFailed")) && tree.contains("in progress"),
        "{tree}"
    );
    assert!(
        tree.contains("gate smoke  Fail") && tree.contains("failures 2/2"),
        "{tree}"
    );
    let history = kubectl
        .ok(&["ringfence", "history", "flags", "-n", NS])
        .await;
    assert!(
        history.contains(&format!("{rev}  RollingBack (now)")) && history.contains("GateFailed: "),
        "{history}"
    );
    let abort = kubectl
        .run(&["ringfence", "abort", "flags", "-n", NS])
        .await;
    assert_eq!(abort.code, 1, "an abort means nothing during a rollback");
    assert!(
        abort
            .stdout
            .contains("abort means nothing while the rollout is RollingBack"),
        "{}",
        abort.stdout
    );

    c.emu.faults().clear();
    c.wait_rollout(NS, "flags", "RolledBack", |r| phase(r) == "RolledBack")
        .await;
    let completed = format!("rollback of {rev} completed: GateFailed");
    c.wait_for(
        NS,
        "flags",
        "the watch to show the completed rollback",
        || {
            let done = watched
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(&completed));
            async move { done }
        },
    )
    .await;
    let lines = watched.lock().unwrap().join("\n");
    eprintln!("--- get -w:\n{lines}");
    for seen in [
        format!("flags revision {rev} Progressing, ring 2/2 two"),
        "gate smoke in two: Fail".to_string(),
        format!("flags revision {rev} RollingBack"),
        format!("rollback of {rev} started: GateFailed"),
        format!("flags revision {rev} RolledBack"),
    ] {
        assert!(lines.contains(&seen), "{seen:?} not in the watch:\n{lines}");
    }

    let history = kubectl
        .ok(&["ringfence", "history", "flags", "-n", NS])
        .await;
    let row = history
        .lines()
        .find(|l| l.starts_with(&rev))
        .unwrap_or_else(|| panic!("{history}"));
    assert!(
        row.contains("RolledBack") && row.contains("GateFailed: "),
        "{history}"
    );
    let json = kubectl
        .ok(&["ringfence", "get", "flags", "-n", NS, "-o", "json"])
        .await;
    let object: ConfigRollout = serde_json::from_str(&json).unwrap();
    assert_eq!(phase(&object), "RolledBack");
    let yaml = kubectl
        .ok(&["ringfence", "get", "flags", "-n", NS, "-o", "yaml"])
        .await;
    let object: ConfigRollout = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(revision(&object), rev);

    // Retried with the gate healthy again, the revision rolls forward from ring one.
    fail.store(false, Ordering::Relaxed);
    let retry = kubectl
        .ok(&["ringfence", "retry", "flags", "-n", NS, "--wait"])
        .await;
    let id = request_id(&retry, "ringfence.dev/retry");
    assert!(
        retry.contains(&format!("retry {id} handled: Progressing")),
        "{retry}"
    );
    let r = c.rollout(NS, "flags").await;
    let handled = r.status.as_ref().and_then(|s| s.handled_requests.clone());
    assert_eq!(handled.and_then(|h| h.retry), Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_wait_until_the_controller_answers() {
    let mut c = Cluster::start().await;
    cells(&c, &["cell-1", "cell-2", "cell-3"]).await;
    let kubectl = Kubectl::new(&c);
    let webhook = support::webhook::serve_fixed(false).await;
    c.start_controller().await;
    let mut manifest = rollout("3", &webhook);
    manifest["spec"]["rings"][0]["bake"] = json!("1h");
    c.apply_rollout(NS, manifest.clone()).await;
    c.wait_rollout(NS, "flags", "ring one verifying", ring_verifying("one"))
        .await;

    let pause = kubectl
        .ok(&["ringfence", "pause", "flags", "-n", NS, "--wait"])
        .await;
    assert!(
        pause.contains("configrollout platform/flags: set spec.paused=true")
            && pause.contains("pause observed: Paused"),
        "{pause}"
    );
    assert_eq!(phase(&c.rollout(NS, "flags").await), "Paused");
    let again = kubectl.ok(&["ringfence", "pause", "flags", "-n", NS]).await;
    assert!(
        again.contains("nothing to do: spec.paused is already true"),
        "{again}"
    );
    let tree = kubectl.ok(&["ringfence", "get", "flags", "-n", NS]).await;
    assert!(
        tree.contains("  Paused") && tree.contains("spec.paused"),
        "{tree}"
    );

    // A promotion asked while paused waits for the resume, then ends ring one's bake.
    let promote = kubectl
        .ok(&["ringfence", "promote", "flags", "-n", NS])
        .await;
    assert!(
        promote.contains("note: the rollout is paused: the bake ends once it is resumed"),
        "{promote}"
    );
    let id = request_id(&promote, "ringfence.dev/promote");
    let resume = kubectl
        .ok(&["ringfence", "resume", "flags", "-n", NS, "--wait"])
        .await;
    assert!(resume.contains("resume observed: "), "{resume}");
    let r = c
        .wait_rollout(NS, "flags", "ring two verifying", ring_verifying("two"))
        .await;
    assert_eq!(
        r.status
            .and_then(|s| s.handled_requests)
            .and_then(|h| h.promote),
        Some(id)
    );

    let promote = kubectl
        .ok(&["ringfence", "promote", "flags", "-n", NS, "--wait"])
        .await;
    let id = request_id(&promote, "ringfence.dev/promote");
    assert!(
        promote.contains(&format!("promote {id} handled: ")),
        "{promote}"
    );
    c.wait_rollout(NS, "flags", "Succeeded", |r| phase(r) == "Succeeded")
        .await;
    let refused = kubectl
        .run(&["ringfence", "promote", "flags", "-n", NS])
        .await;
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stdout
            .contains("not sent: promote means nothing while the rollout is Succeeded"),
        "{}",
        refused.stdout
    );
    let resume = kubectl
        .ok(&["ringfence", "resume", "flags", "-n", NS])
        .await;
    assert!(resume.contains("nothing to do"), "{resume}");

    // A new revision, aborted in ring one.
    manifest["spec"]["config"]["data"]["retries"] = json!("4");
    c.apply_rollout(NS, manifest).await;
    c.wait_rollout(NS, "flags", "ring one verifying", ring_verifying("one"))
        .await;
    let abort = kubectl
        .ok(&["ringfence", "abort", "flags", "-n", NS, "--wait"])
        .await;
    let id = request_id(&abort, "ringfence.dev/abort");
    assert!(
        abort.contains(&format!("abort {id} handled: RollingBack"))
            || abort.contains(&format!("abort {id} handled: RolledBack")),
        "{abort}"
    );
    c.wait_rollout(NS, "flags", "RolledBack", |r| phase(r) == "RolledBack")
        .await;
    let history = kubectl
        .ok(&["ringfence", "history", "flags", "-n", NS])
        .await;
    assert!(history.contains("Aborted: abort requested"), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_shows_the_cluster_of_each_target() {
    let c = Cluster::start().await;
    c.namespace(NS, &[]).await;
    let kubectl = Kubectl::new(&c);
    c.apply_rollout(
        NS,
        json!({
            "metadata": {"name": "flags"},
            "spec": {
                "config": {"name": "flags", "data": {"retries": "3"}},
                "rings": [{"name": "eu", "namespaces": ["checkout"], "clusters": ["eu-west-1", "local"]}],
            },
        }),
    )
    .await;
    // No controller: the status is what a rollout spanning two clusters would hold.
    Api::<ConfigRollout>::namespaced(c.client.clone(), NS)
        .patch_status(
            "flags",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "observedGeneration": 1,
                "revision": "abcd",
                "phase": "Progressing",
                "ringProgress": "1/1 eu",
                "rings": [{"name": "eu", "phase": "Verifying", "targetCount": 2, "updated": 1,
                           "firstTargets": ["eu-west-1/checkout", "checkout"]}],
            }})),
        )
        .await
        .expect("status patched");

    let tree = kubectl.ok(&["ringfence", "get", "flags", "-n", NS]).await;
    let lines: Vec<&str> = tree.lines().collect();
    let ring = lines
        .iter()
        .position(|l| l.contains("ring eu  Verifying   1/2 updated"))
        .unwrap_or_else(|| panic!("{tree}"));
    let table = &lines[ring + 1..ring + 4];
    let cells: Vec<Vec<&str>> = table
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        cells,
        [
            ["CLUSTER", "NAMESPACE"],
            ["eu-west-1", "checkout"],
            ["local", "checkout"]
        ],
        "{tree}"
    );
    let column = |l: &str, cell: &str| l.find(cell).unwrap_or_else(|| panic!("{tree}"));
    assert_eq!(
        column(table[0], "CLUSTER"),
        column(table[1], "eu-west-1"),
        "{tree}"
    );
    assert_eq!(
        column(table[0], "CLUSTER"),
        column(table[2], "local"),
        "{tree}"
    );
    assert_eq!(
        column(table[0], "NAMESPACE"),
        column(table[1], "checkout"),
        "{tree}"
    );
    assert_eq!(
        column(table[0], "NAMESPACE"),
        column(table[2], "checkout"),
        "{tree}"
    );

    // Structured output is the object itself: the target keys as the status holds them.
    let json = kubectl
        .ok(&["ringfence", "get", "flags", "-n", NS, "-o", "json"])
        .await;
    let object: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        object["status"]["rings"][0]["firstTargets"],
        json!(["eu-west-1/checkout", "checkout"])
    );
}

/// cell-1 and cell-2 hold different content, cell-3 none; cell-4 does not allow rollouts
/// from the platform namespace.
async fn plan_cluster() -> (Cluster, Kubectl) {
    let c = Cluster::start().await;
    c.namespace(NS, &[]).await;
    for (cell, ring) in [("cell-1", "one"), ("cell-2", "two"), ("cell-3", "two")] {
        c.namespace(cell, &[("ringfence.dev/allow-from", NS), ("ring", ring)])
            .await;
    }
    c.namespace("cell-4", &[("ring", "two")]).await;
    c.config_map("cell-1", "flags", &[("retries", "1"), ("legacy", "on")])
        .await;
    c.config_map("cell-2", "flags", &[("retries", "3"), ("timeout", "5s")])
        .await;
    c.deployment("cell-1", "checkout", &[("app", "checkout")])
        .await;
    let kubectl = Kubectl::new(&c);
    (c, kubectl)
}

const PLAN_MANIFEST: &str = "\
apiVersion: ringfence.dev/v1alpha1
kind: ConfigRollout
metadata: {name: flags, namespace: platform}
spec:
  config:
    name: flags
    data: {retries: \"3\", timeout: 10s}
  rings:
    - {name: one, namespaces: [cell-1], bake: 5m}
    - {name: two, namespaceSelector: {matchLabels: {ring: two}}, bake: 10m, maxConcurrent: 50%}
  workloads: {selector: {matchLabels: {app: checkout}}, restart: true}
  gates:
    - {name: smoke, interval: 20s, failureLimit: 3, webhook: {url: 'http://smoke.platform/check'}}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_each_targets_own_diff_and_what_is_skipped() {
    let (c, kubectl) = plan_cluster().await;
    let file = kubectl.path("rollout.yaml");
    std::fs::write(&file, PLAN_MANIFEST).unwrap();
    let file = file.display().to_string();

    let run = kubectl.run(&["ringfence", "plan", "-f", &file]).await;
    assert_eq!(run.code, 1, "cell-4 is not permitted: the plan is invalid");
    let out = run.stdout;
    for expected in [
        "ring one (1 target, bake 5m, 1 at a time)\n  CLUSTER  NAMESPACE  ACTION\n  local    cell-1     update\n      ~ retries: \"1\" -> \"3\"\n      + timeout: \"10s\"\n      - legacy: \"on\"\n      restarts Deployment/checkout\n",
        "ring two (2 targets, bake 10m, 1 at a time)\n  CLUSTER  NAMESPACE  ACTION\n  local    cell-2     update\n      ~ timeout: \"5s\" -> \"10s\"\n",
        "  local    cell-3     create\n      + retries: \"3\"\n      + timeout: \"10s\"\n",
        "  local    cell-4     skipped: not permitted: it is not labelled ringfence.dev/allow-from=platform\n",
        "takes at least 15m (the bakes); a ring fails when its workloads are not rolled out within 10m\n",
        "gate smoke fails a ring after 3 failing checks 20s apart (1m)\n",
        "invalid (TargetNotPermitted): namespaces cell-4 do not allow rollouts from platform",
    ] {
        assert!(out.contains(expected), "{expected:?} not in:\n{out}");
    }

    let json = kubectl
        .run(&["ringfence", "plan", "-f", &file, "-o", "json"])
        .await;
    assert_eq!(json.code, 1);
    let plan: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(plan["valid"], false);
    assert_eq!(plan["invalid"]["reason"], "TargetNotPermitted");
    assert_eq!(plan["rings"][1]["skipped"][0]["namespace"], "cell-4");
    assert_eq!(plan["rings"][1]["skipped"][0]["cluster"], "local");
    assert_eq!(plan["rings"][0]["targets"][0]["cluster"], "local");
    assert_eq!(plan["rings"][0]["targets"][0]["namespace"], "cell-1");
    assert_eq!(plan["rings"][1]["skipped"][0]["reason"], "NotPermitted");
    assert_eq!(plan["rings"][1]["targets"][0]["keys"][0]["old"], "5s");
    assert_eq!(plan["timing"]["minimumSeconds"], 900);

    // Trusted, or once cell-4 allows it, the same plan is valid.
    let trusted = kubectl
        .ok(&["ringfence", "plan", "-f", &file, "--trusted-namespaces", NS])
        .await;
    assert!(
        trusted.contains("  local    cell-4     create\n")
            && trusted.ends_with("valid: the controller would start this revision\n"),
        "{trusted}"
    );

    // An applied rollout plans as its manifest does.
    let manifest: Value = serde_saphyr::from_str(PLAN_MANIFEST).unwrap();
    c.apply_rollout(NS, manifest).await;
    let applied = kubectl.run(&["ringfence", "plan", "flags", "-n", NS]).await;
    assert_eq!(applied.code, 1);
    assert_eq!(applied.stdout, out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_plan_never_shows_a_value() {
    const NEW: &str = "n3w-Pa55w0rd-77aa";
    const OLD: &str = "0ld-Pa55w0rd-33bb";
    const REMOVED: &str = "r3m0ved-T0ken-99cc";
    let (c, kubectl) = plan_cluster().await;
    let secret = |ns: &str, name: &str, data: &[(&str, &str)]| -> Secret {
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), json!(b64(v))))
            .collect();
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "data": data}))
            .unwrap()
    };
    for (ns, name, data) in [
        (
            NS,
            "creds-source",
            vec![("password", NEW), ("user", "svc-checkout")],
        ),
        (
            "cell-1",
            "creds",
            vec![
                ("password", OLD),
                ("token", REMOVED),
                ("user", "svc-checkout"),
            ],
        ),
    ] {
        Api::<Secret>::namespaced(c.client.clone(), ns)
            .create(&PostParams::default(), &secret(ns, name, &data))
            .await
            .unwrap();
    }
    let file = kubectl.path("secret.yaml");
    std::fs::write(
        &file,
        "apiVersion: ringfence.dev/v1alpha1\nkind: ConfigRollout\nmetadata: {name: creds, namespace: platform}\nspec:\n  config: {kind: Secret, name: creds, sourceRef: {name: creds-source}}\n  rings:\n    - {name: one, namespaces: [cell-1, cell-2]}\n",
    )
    .unwrap();
    let file = file.display().to_string();
    let mut all = String::new();
    for format in ["text", "json", "yaml"] {
        let run = kubectl
            .run(&["ringfence", "plan", "-f", &file, "-o", format])
            .await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        all.push_str(&run.stdout);
        all.push_str(&run.stderr);
    }
    assert!(
        all.contains("~ password (changed)") && all.contains("- token (removed)"),
        "{all}"
    );
    assert!(
        all.contains("+ password (added)") && all.contains("+ user (added)"),
        "{all}"
    );
    for value in [NEW, OLD, REMOVED, "svc-checkout"] {
        for form in [value.to_string(), b64(value)] {
            assert!(!all.contains(&form), "{form} shown:\n{all}");
        }
    }
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_one_line_and_a_non_zero_exit() {
    let (c, kubectl) = plan_cluster().await;
    let manifest: Value = serde_saphyr::from_str(PLAN_MANIFEST).unwrap();
    c.apply_rollout(NS, manifest).await;
    let one_line = |run: &Run, code: i32, expected: &str| {
        assert_eq!(run.code, code, "{}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(
            run.stderr.contains(expected),
            "{expected:?} not in {}",
            run.stderr
        );
    };

    for command in ["get", "history", "pause", "abort", "plan"] {
        let run = kubectl.run(&["ringfence", command, "nope", "-n", NS]).await;
        one_line(
            &run,
            2,
            "configrollout \"nope\" not found in namespace platform",
        );
    }
    let run = kubectl.run(&["ringfence", "get", "flags"]).await;
    one_line(
        &run,
        2,
        "not found in namespace default (there is one in namespace platform: add -n platform)",
    );

    let not_a_rollout = kubectl.path("configmap.yaml");
    std::fs::write(
        &not_a_rollout,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    )
    .unwrap();
    let run = kubectl
        .run(&[
            "ringfence",
            "plan",
            "-f",
            &not_a_rollout.display().to_string(),
        ])
        .await;
    one_line(&run, 2, "not a ConfigRollout manifest (found ConfigMap)");

    let invalid = kubectl.path("invalid.yaml");
    std::fs::write(&invalid, PLAN_MANIFEST.replace("bake: 5m", "bake: soon")).unwrap();
    let run = kubectl
        .run(&["ringfence", "plan", "-f", &invalid.display().to_string()])
        .await;
    one_line(&run, 1, "flags: spec.rings[0].bake: ");

    let missing = kubectl.path("missing.yaml").display().to_string();
    let run = kubectl.run(&["ringfence", "plan", "-f", &missing]).await;
    one_line(&run, 2, "missing.yaml: cannot read: ");

    // A kubeconfig whose API server is gone.
    let unreachable = kubectl.path("unreachable");
    let config = std::fs::read_to_string(kubectl.path("kubeconfig")).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let server = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_string();
    std::fs::write(
        &unreachable,
        config.replace(&server, &format!("http://{closed}")),
    )
    .unwrap();
    let unreachable = unreachable.display().to_string();
    for args in [
        vec!["ringfence", "get", "-n", NS, "--kubeconfig", &unreachable],
        vec![
            "ringfence",
            "get",
            "flags",
            "-w",
            "-n",
            NS,
            "--kubeconfig",
            &unreachable,
        ],
        vec![
            "ringfence",
            "plan",
            "flags",
            "-n",
            NS,
            "--kubeconfig",
            &unreachable,
        ],
    ] {
        let run = kubectl.run(&args).await;
        one_line(
            &run,
            2,
            &format!("cannot reach the Kubernetes API at http://{closed}"),
        );
    }
    let run = kubectl
        .run(&["ringfence", "get", "--kubeconfig", &missing])
        .await;
    one_line(&run, 2, "cannot load the kubeconfig: ");
}
