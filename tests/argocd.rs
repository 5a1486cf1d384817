//! The chart's Argo CD health check (`charts/ringfence/argocd/health.lua`), run by a real
//! Lua 5.4 interpreter on live ConfigRollouts as the controller drives them through every
//! phase against the API emulator; and `kubectl wait` on a rollout, as README.md tells CI
//! pipelines to use it.
//!
//! Needs `lua5.4` (`apt-get install -y lua5.4`) and kubectl at /usr/bin/kubectl; the tests
//! fail (never skip) without them.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ringfence::api::{ConfigRollout, RingPhase};
use serde_json::{Value, json};
use support::cluster::{Cluster, http_get, phase};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/ringfence/argocd/health.lua"
);
const KUBECTL: &str = "/usr/bin/kubectl";
const NS: &str = "platform";
const HEALTH_KEY: &str = "resource.customizations.health.ringfence.dev_ConfigRollout";

/// A Lua table constructor for a JSON value, as Argo CD hands the object to the script
/// (`null` fields are absent).
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

/// The script's verdict on `object`: (status, message).
fn health(object: &Value) -> (String, String) {
    let dir = support::tempdir::tempdir().unwrap();
    let harness = dir.path().join("harness.lua");
    std::fs::write(
        &harness,
        format!(
            "obj = {}\nlocal hs = dofile({})\nio.write(hs.status, \"\\n\", hs.message or \"\")\n",
            lua_literal(object),
            lua_string(SCRIPT),
        ),
    )
    .unwrap();
    let out = Command::new("lua5.4")
        .arg(&harness)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run lua5.4 ({e}); install it with `apt-get install -y lua5.4`")
        });
    assert!(
        out.status.success(),
        "health.lua failed on {object:#}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 verdict");
    let (status, message) = text.split_once('\n').expect("status and message");
    (status.to_string(), message.to_string())
}

async fn live(c: &Cluster, name: &str) -> Value {
    serde_json::to_value(c.rollout(NS, name).await).unwrap()
}

/// The script's verdict on the live object; the message is the status' own when it has one.
async fn assert_health(c: &Cluster, name: &str, want: &str) -> Value {
    let object = live(c, name).await;
    let (status, message) = health(&object);
    assert_eq!(status, want, "{name}: {message}\n{object:#}");
    if let Some(own) = object["status"]["message"].as_str()
        && object["status"]["observedGeneration"] == object["metadata"]["generation"]
    {
        assert_eq!(message, own, "{name} carries the status message");
    }
    object
}

/// Two rings; the webhook fails ring `two` while told to. Ring two bakes for an hour, so
/// a rollout stays Progressing there until the gate fails.
fn rollout(name: &str, cells: [&str; 2], webhook: &str, automatic: bool) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "config": {"name": name, "data": {"retries": "3"}},
            "rings": [
                {"name": "one", "namespaces": [cells[0]]},
                {"name": "two", "namespaces": [cells[1]], "bake": "1h"},
            ],
            "gates": [{"name": "smoke", "interval": "1s", "webhook": {"url": webhook}}],
            "rollback": {"automatic": automatic},
        },
    })
}

/// Ring two is written and baking: a failing gate now starts a rollback.
fn in_ring_two(r: &ConfigRollout) -> bool {
    phase(r) == "Progressing"
        && r.status.as_ref().is_some_and(|s| {
            s.rings
                .iter()
                .any(|ring| ring.name == "two" && ring.phase == RingPhase::Verifying)
        })
}

fn kubectl(kubeconfig: &Path, command: &str) -> Child {
    assert!(
        Path::new(KUBECTL).exists(),
        "{KUBECTL} is required by this test; it is missing"
    );
    Command::new("sh")
        .arg("-c")
        .arg(command.replacen("kubectl", KUBECTL, 1))
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh runs")
}

fn finished(child: Child) -> (bool, String) {
    let out = child.wait_with_output().expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The `kubectl wait` lines of README.md's CI section, with a test-sized timeout.
fn readme_waits() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let waits: Vec<String> = readme
        .lines()
        .filter(|l| l.starts_with("kubectl wait "))
        .map(|l| l.replace("--timeout=30m", "--timeout=90s"))
        .collect();
    assert_eq!(waits.len(), 2, "README.md shows both kubectl waits");
    assert!(
        waits.iter().all(|w| w.contains("--timeout=90s")),
        "{waits:?}"
    );
    waits
}

fn metric_lines(text: &str, family: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with(family) && l.contains(r#"name="flags""#))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_a_live_rollout_through_every_phase() {
    let mut c = Cluster::start().await;
    c.namespace(NS, &[]).await;
    for cell in ["cell-1", "cell-2", "cell-3", "cell-4", "cell-5"] {
        c.namespace(cell, &[("ringfence.dev/allow-from", NS)]).await;
    }
    let fail = Arc::new(AtomicBool::new(false));
    let webhook = support::webhook::serve(fail.clone()).await;
    let dir = support::tempdir::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    c.emu.write_kubeconfig(&kubeconfig).unwrap();

    // No controller yet: no status, so Argo CD waits, and so does kubectl.
    c.apply_rollout(NS, rollout("flags", ["cell-1", "cell-2"], &webhook, true))
        .await;
    c.apply_rollout(
        NS,
        json!({
            "metadata": {"name": "checkout-flags"},
            "spec": {
                "config": {"name": "checkout-flags", "data": {"retries": "3"}},
                "rings": [{"name": "one", "namespaces": ["cell-5"]}],
            },
        }),
    )
    .await;
    let (status, message) = health(&live(&c, "flags").await);
    assert_eq!(
        (status.as_str(), message.as_str()),
        ("Progressing", "Waiting for the controller to report status")
    );
    let waits: Vec<Child> = readme_waits()
        .iter()
        .map(|w| kubectl(&kubeconfig, w))
        .collect();
    c.start_controller().await;

    // kubectl wait returns once the rollout is Ready and Succeeded.
    for wait in waits {
        let (ok, out) = tokio::task::spawn_blocking(move || finished(wait))
            .await
            .unwrap();
        assert!(ok, "kubectl wait failed:\n{out}");
        assert!(
            out.contains("configrollout.ringfence.dev/checkout-flags condition met"),
            "{out}"
        );
    }
    assert_eq!(phase(&c.rollout(NS, "checkout-flags").await), "Succeeded");
    assert_health(&c, "checkout-flags", "Healthy").await;

    c.wait_rollout(NS, "flags", "baking in ring two", in_ring_two)
        .await;
    assert_health(&c, "flags", "Progressing").await;

    // A spec change the controller has not observed yet is still waited for.
    c.kill_controller().await;
    let mut paused = rollout("flags", ["cell-1", "cell-2"], &webhook, true);
    paused["spec"]["paused"] = json!(true);
    c.apply_rollout(NS, paused).await;
    let (status, message) = health(&live(&c, "flags").await);
    assert_eq!(status, "Progressing");
    assert!(
        message.starts_with("Waiting for the controller to observe generation"),
        "{message}"
    );
    c.start_controller().await;
    c.wait_rollout(NS, "flags", "Paused", |r| phase(r) == "Paused")
        .await;
    assert_health(&c, "flags", "Suspended").await;

    c.apply_rollout(NS, rollout("flags", ["cell-1", "cell-2"], &webhook, true))
        .await;
    c.wait_rollout(NS, "flags", "baking in ring two again", in_ring_two)
        .await;

    // The gate fails while ring two's target cannot be restored: the rollback stays in
    // progress until the API accepts the writes again.
    c.fail_config_map_writes("cell-2", 500);
    fail.store(true, Ordering::Relaxed);
    c.wait_rollout(NS, "flags", "RollingBack", |r| phase(r) == "RollingBack")
        .await;
    assert_health(&c, "flags", "Progressing").await;
    let metrics = http_get(c.metrics_addr.unwrap(), "/metrics").await;
    assert_eq!(
        metric_lines(
            &metrics,
            "ringfence_rollout_rollback_started_timestamp_seconds"
        )
        .len(),
        1,
        "{metrics}"
    );
    assert!(
        metric_lines(
            &metrics,
            "ringfence_rollout_rollback_started_timestamp_seconds"
        )[0]
        .contains(r#"reason="GateFailed""#)
    );
    assert!(
        metric_lines(
            &metrics,
            "ringfence_rollout_rollback_completed_timestamp_seconds"
        )
        .is_empty(),
        "the rollback is not complete: {metrics}"
    );

    c.emu.faults().clear();
    c.wait_rollout(NS, "flags", "RolledBack", |r| phase(r) == "RolledBack")
        .await;
    assert_health(&c, "flags", "Degraded").await;
    let metrics = http_get(c.metrics_addr.unwrap(), "/metrics").await;
    assert_eq!(
        metric_lines(
            &metrics,
            "ringfence_rollout_rollback_completed_timestamp_seconds"
        )
        .len(),
        1,
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"ringfence_rollout_info{namespace="platform",name="flags",phase="RolledBack"} 1"#
        ),
        "{metrics}"
    );

    // kubectl wait does not take a rolled-back rollout for a succeeded one.
    let rolled_back = kubectl(
        &kubeconfig,
        "kubectl wait --for=jsonpath='{.status.phase}'=Succeeded configrollout/flags -n platform --timeout=2s",
    );
    let (ok, out) = tokio::task::spawn_blocking(move || finished(rolled_back))
        .await
        .unwrap();
    assert!(!ok, "kubectl wait passed on a rolled-back rollout:\n{out}");

    // Without automatic rollback a failing ring stops the rollout as Failed.
    c.apply_rollout(NS, rollout("manual", ["cell-3", "cell-4"], &webhook, false))
        .await;
    c.wait_rollout(NS, "manual", "Failed", |r| phase(r) == "Failed")
        .await;
    assert_health(&c, "manual", "Degraded").await;
}

#[tokio::test]
async fn health_reports_invalid_specs_drift_and_unknown_phases() {
    let base = |status: Value| {
        json!({
            "apiVersion": "ringfence.dev/v1alpha1", "kind": "ConfigRollout",
            "metadata": {"namespace": NS, "name": "flags", "generation": 3},
            "status": status,
        })
    };
    let condition = |type_: &str, status: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": "R", "message": message,
               "lastTransitionTime": "2025-01-01T00:00:00Z"})
    };
    for (status, want, message) in [
        (
            json!({"observedGeneration": 3, "phase": "Pending", "message": "invalid spec",
                   "conditions": [condition("Valid", "False", "no target")]}),
            "Degraded",
            "invalid spec",
        ),
        (
            json!({"observedGeneration": 3, "phase": "Succeeded", "message": "done",
                   "conditions": [condition("Ready", "False", "changed outside the rollout: cell-1")]}),
            "Degraded",
            "changed outside the rollout: cell-1",
        ),
        (
            json!({"observedGeneration": 2, "phase": "Succeeded", "message": "done",
                   "conditions": [condition("Ready", "True", "")]}),
            "Progressing",
            "Waiting for the controller to observe generation 3",
        ),
        (
            json!({"observedGeneration": 3, "phase": "Exploded"}),
            "Unknown",
            "Unknown phase Exploded",
        ),
    ] {
        assert_eq!(
            health(&base(status.clone())),
            (want.to_string(), message.to_string()),
            "{status}"
        );
    }
}

/// README.md's `argocd-cm` snippet carries the chart's script verbatim.
#[test]
fn readme_argocd_snippet_is_the_chart_script() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let script = std::fs::read_to_string(SCRIPT).unwrap();
    let start = readme
        .find(&format!("  {HEALTH_KEY}: |\n"))
        .expect("README.md shows the argocd-cm key");
    let body: String = readme[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert_eq!(body.trim_end(), script.trim_end());
}
