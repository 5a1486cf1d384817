//! The emulator as an SRE sees it through kubectl.

#[path = "support/tempdir.rs"]
mod tempdir;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};
use kube_emulator::{Emulator, EmulatorHandle};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const KUBECTL: &str = "/usr/bin/kubectl";

/// The CRDs the tests install, as `kubectl apply -f` takes them.
const CRD_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");

const DEADLINE: Duration = Duration::from_secs(30);

const ROLLOUT: &str = r#"
apiVersion: ringfence.dev/v1alpha1
kind: ConfigRollout
metadata:
  name: checkout-flags
spec:
  config: {kind: ConfigMap, name: checkout-flags, data: {retries: "3"}}
  rings:
    - name: canary
      namespaces: [cell-eu-1]
"#;

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// kubectl with its own kubeconfig and discovery cache.
struct Kubectl {
    dir: tempdir::TempDir,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn new(kubeconfig_text: String) -> Self {
        assert!(
            Path::new(KUBECTL).exists(),
            "{KUBECTL} is required by these tests (CI installs it); it is missing"
        );
        let dir = tempdir::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_text).unwrap();
        Kubectl { dir, kubeconfig }
    }

    fn admin(emu: &EmulatorHandle) -> Self {
        Self::new(emu.kubeconfig())
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(KUBECTL);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    async fn run_with(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self.command(args).spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish"))
            .unwrap();
        Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, "").await
    }

    /// Runs and expects success, returning stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.ok,
            "kubectl {args:?} failed:\n{}{}",
            out.stdout, out.stderr
        );
        out.stdout
    }
}

/// Records an event about the rollout the way the operator does (events.k8s.io, kube's recorder).
async fn record_event(emu: &EmulatorHandle, k: &Kubectl) {
    use k8s_openapi::api::core::v1::ObjectReference;
    use kube::runtime::events::{Event, EventType, Recorder};
    let uid = k
        .ok(&[
            "get",
            "configrollout",
            "checkout-flags",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .await;
    let reference = ObjectReference {
        api_version: Some("ringfence.dev/v1alpha1".into()),
        kind: Some("ConfigRollout".into()),
        name: Some("checkout-flags".into()),
        namespace: Some("default".into()),
        uid: Some(uid),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Normal,
        reason: "RingPromoted".into(),
        note: Some("ring canary promoted".into()),
        action: "Promote".into(),
        secondary: None,
    };
    Recorder::new(emu.client(), "ringfence".into())
        .publish(&event, &reference)
        .await
        .unwrap();
}

fn header(table: &str) -> Vec<&str> {
    table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_patch_describe_delete() {
    let emu = Emulator::builder().start().await.unwrap();
    let k = Kubectl::admin(&emu);

    let out = k.ok(&["apply", "-f", CRD_DIR]).await;
    assert!(
        out.contains("configrollouts.ringfence.dev created"),
        "{out}"
    );
    let out = k.run_with(&["apply", "-f", "-"], ROLLOUT).await;
    assert!(
        out.ok
            && out
                .stdout
                .contains("configrollout.ringfence.dev/checkout-flags created"),
        "{}{}",
        out.stdout,
        out.stderr
    );

    let table = k.ok(&["get", "configrollouts"]).await;
    assert_eq!(
        header(&table),
        ["NAME", "REVISION", "PHASE", "RING", "HEALTH", "AGE"],
        "{table}"
    );
    assert!(
        table.lines().nth(1).unwrap().starts_with("checkout-flags"),
        "{table}"
    );
    k.ok(&["get", "cro"]).await;

    let status = json!({"status": {
        "phase": "Progressing", "revision": "5d41402a", "currentRing": "canary", "ringProgress": "1/1 canary", "health": "Healthy",
        "message": "writing ring canary",
        "conditions": [{"type": "Healthy", "status": "True"}]
    }});
    let out = k
        .ok(&[
            "patch",
            "configrollout",
            "checkout-flags",
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ])
        .await;
    assert!(out.contains("patched"), "{out}");

    let wide = k.ok(&["get", "configrollouts", "-o", "wide"]).await;
    assert_eq!(
        header(&wide),
        [
            "NAME", "REVISION", "PHASE", "RING", "HEALTH", "MESSAGE", "AGE"
        ],
        "{wide}"
    );
    let row: Vec<&str> = wide.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..5],
        ["checkout-flags", "5d41402a", "Progressing", "1/1", "canary"],
        "{wide}"
    );
    assert!(wide.contains("writing ring canary"), "{wide}");

    let yaml = k
        .ok(&["get", "configrollout", "checkout-flags", "-o", "yaml"])
        .await;
    assert!(yaml.contains("kind: ConfigRollout"), "{yaml}");
    assert!(yaml.contains("phase: Progressing"), "{yaml}");
    assert!(yaml.contains("generation: 1"), "{yaml}");

    record_event(&emu, &k).await;
    let described = k.ok(&["describe", "configrollout", "checkout-flags"]).await;
    for needle in [
        "Name:         checkout-flags",
        "Namespace:    default",
        "Phase:",
        "Progressing",
        "Events:",
        "RingPromoted",
        "ring canary promoted",
    ] {
        assert!(
            described.contains(needle),
            "{needle:?} missing from:\n{described}"
        );
    }

    let changed = ROLLOUT.replace("retries: \"3\"", "retries: \"4\"");
    let out = k.run_with(&["apply", "-f", "-"], &changed).await;
    assert!(
        out.ok && out.stdout.contains("configured"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let generation = k
        .ok(&[
            "get",
            "configrollout",
            "checkout-flags",
            "-o",
            "jsonpath={.metadata.generation}",
        ])
        .await;
    assert_eq!(generation, "2");

    let out = k.ok(&["delete", "configrollout", "checkout-flags"]).await;
    assert!(out.contains("deleted"), "{out}");
    let out = k.run(&["get", "configrollouts"]).await;
    assert!(
        out.ok && out.stderr.contains("No resources found"),
        "{}{}",
        out.stdout,
        out.stderr
    );

    // Built-in kinds through kubectl's typed (protobuf) commands.
    k.ok(&["create", "namespace", "cell-eu-1"]).await;
    k.ok(&[
        "create",
        "configmap",
        "flags",
        "-n",
        "cell-eu-1",
        "--from-literal=a=b",
    ])
    .await;
    let cms = k.ok(&["get", "configmaps", "-n", "cell-eu-1"]).await;
    assert_eq!(header(&cms), ["NAME", "DATA", "AGE"], "{cms}");
    let nss = k.ok(&["get", "namespaces"]).await;
    assert_eq!(header(&nss), ["NAME", "STATUS", "AGE"], "{nss}");
    k.ok(&["delete", "namespace", "cell-eu-1"]).await;
    let out = k.run(&["get", "namespace", "cell-eu-1"]).await;
    assert!(!out.ok && out.stderr.contains("NotFound"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_sees_a_change() {
    let emu = Emulator::builder().start().await.unwrap();
    let k = Kubectl::admin(&emu);
    k.ok(&["apply", "-f", CRD_DIR]).await;
    assert!(k.run_with(&["apply", "-f", "-"], ROLLOUT).await.ok);

    let mut child = k.command(&["get", "configrollouts", "-w"]).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("kubectl get -w printed nothing in time")
            .unwrap()
            .expect("kubectl get -w ended")
    };
    let first = next_line().await;
    assert!(first.starts_with("NAME"), "{first}");
    let row = next_line().await;
    assert!(row.starts_with("checkout-flags"), "{row}");

    let status = json!({"status": {"phase": "RollingBack"}}).to_string();
    k.ok(&[
        "patch",
        "configrollout",
        "checkout-flags",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ])
    .await;
    loop {
        let line = next_line().await;
        if line.contains("RollingBack") {
            assert!(line.starts_with("checkout-flags"), "{line}");
            break;
        }
    }
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_rejected_by_admission_prints_the_field_error() {
    let emu = Emulator::builder()
        .admission(kube_emulator::validation::admission_hook())
        .start()
        .await
        .unwrap();
    let k = Kubectl::admin(&emu);
    k.ok(&["apply", "-f", CRD_DIR]).await;
    let bad = ROLLOUT.replace(
        "namespaces: [cell-eu-1]",
        "namespaces: [cell-eu-1]\n      bake: \"15\"",
    );
    let out = k.run_with(&["apply", "-f", "-"], &bad).await;
    assert!(!out.ok, "{}", out.stdout);
    assert!(out.stderr.contains("ConfigRollout"), "{}", out.stderr);
    assert!(out.stderr.contains("is invalid"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("spec.rings[0].bake: Invalid value: \"15\": must be a duration"),
        "{}",
        out.stderr
    );
    let out = k.run(&["get", "configrollouts"]).await;
    assert!(out.stderr.contains("No resources found"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_can_i_answers_from_rbac() {
    let emu = Emulator::builder()
        .authorization(true)
        .start()
        .await
        .unwrap();
    let admin = emu.client();
    let nss: Api<Namespace> = Api::all(admin.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
    )
    .await
    .unwrap();
    let roles: Api<Role> = Api::namespaced(admin.clone(), "team");
    roles
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "config-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]
        })).unwrap())
        .await
        .unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(admin, "team");
    bindings
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "ci-reads-config"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "config-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "ci", "namespace": "team"}]
        })).unwrap())
        .await
        .unwrap();

    let token = emu.service_account_token("team", "ci");
    let k = Kubectl::new(emu.kubeconfig_for_token(&token));
    let yes = k
        .run(&["auth", "can-i", "list", "configmaps", "-n", "team"])
        .await;
    assert!(yes.ok, "{}{}", yes.stdout, yes.stderr);
    assert_eq!(yes.stdout.trim(), "yes");
    let no = k
        .run(&["auth", "can-i", "delete", "configmaps", "-n", "team"])
        .await;
    assert!(!no.ok);
    assert_eq!(no.stdout.trim(), "no");
    let elsewhere = k
        .run(&["auth", "can-i", "list", "configmaps", "-n", "default"])
        .await;
    assert_eq!(elsewhere.stdout.trim(), "no");

    let forbidden = k.run(&["get", "configmaps", "-n", "default"]).await;
    assert!(!forbidden.ok);
    assert!(
        forbidden.stderr.contains(
            "User \"system:serviceaccount:team:ci\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\""
        ),
        "{}",
        forbidden.stderr
    );
    let admin = Kubectl::admin(&emu);
    assert_eq!(
        admin
            .ok(&["auth", "can-i", "delete", "namespaces"])
            .await
            .trim(),
        "yes"
    );
}
