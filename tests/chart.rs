//! The Helm chart, linted and rendered by real Helm (the v4 SDK, through
//! `tests/chart/helm_render.py`), every rendered object validated against the
//! Kubernetes 1.33 schemas, with the hardened pod settings, the RBAC shape and
//! the values schema's messages asserted; and `files/member-rbac.yaml`, the
//! RBAC users apply in member clusters, checked object by object and rule by
//! rule.
//!
//! Needs Python 3 with `pip install helm-python-sdk kubernetes-validate`; the
//! tests fail (never skip) without them.

mod support;

use serde_json::{Value, json};
use std::path::Path;
use support::chart::{CHART, NAMESPACE, RELEASE, helm, render_result};
use support::rbac::{Permissions, granted, used};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CRD_FILE: &str = "crds/configrollouts.ringfence.dev.yaml";
const CRD_COPY: &str = "charts/ringfence/files/configrollouts.ringfence.dev.yaml";
const MEMBER_RBAC: &str = "charts/ringfence/files/member-rbac.yaml";
/// Where `files/member-rbac.yaml` puts the member's ServiceAccount.
const MEMBER_NAMESPACE: &str = "ringfence-system";
const MEMBER: &str = "ringfence-member";

struct Rendered {
    objects: Vec<Value>,
    notes: String,
}

/// Renders with `values` over the defaults; every object is already a valid
/// 1.33 object, and the controller pod is checked to be hardened.
fn render(values: Value) -> Rendered {
    let result = render_result(&values);
    if let Some(error) = result.get("error") {
        panic!("rendering with {values} failed: {error}");
    }
    let objects = result["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| o["object"].clone())
        .collect();
    let rendered = Rendered {
        objects,
        notes: result["notes"].as_str().unwrap_or_default().to_owned(),
    };
    rendered.assert_hardened();
    rendered
}

fn render_error(values: Value) -> String {
    let result = render_result(&values);
    match result.get("error") {
        Some(Value::String(e)) => e.clone(),
        _ => panic!("values {values} were accepted"),
    }
}

impl Rendered {
    fn get(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    fn one(&self, kind: &str, name: &str) -> &Value {
        self.get(kind, name).unwrap_or_else(|| {
            panic!("no {kind} {name} among {:?}", self.kinds());
        })
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn kinds(&self) -> Vec<String> {
        self.objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    fn pod_spec(&self) -> &Value {
        &self.one("Deployment", RELEASE)["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Value {
        &self.pod_spec()["containers"][0]
    }

    fn args(&self) -> Vec<&str> {
        self.container()["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect()
    }

    fn assert_hardened(&self) {
        let pod = self.pod_spec();
        let psc = &pod["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true, "pod must run as non-root");
        assert_eq!(psc["runAsUser"], 65532);
        assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(
            pod["automountServiceAccountToken"], true,
            "the controller needs its token"
        );

        let c = self.container();
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["runAsNonRoot"], true);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        assert!(sc["capabilities"].get("add").is_none());
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    c["resources"][kind][resource].is_string(),
                    "missing resources.{kind}.{resource}"
                );
            }
        }
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["livenessProbe"]["httpGet"]["port"], "health");
        assert_eq!(self.args()[0], "controller");

        if let Some(sa) = self.get("ServiceAccount", RELEASE) {
            assert_eq!(sa["automountServiceAccountToken"], false);
        }
    }
}

fn rules(role: &Value) -> Vec<(Vec<String>, Vec<String>, Vec<String>)> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                strings(&r["apiGroups"]),
                strings(&r["resources"]),
                strings(&r["verbs"]),
            )
        })
        .collect()
}

fn grants(role: &Value, group: &str, resource: &str, verb: &str) -> bool {
    rules(role).iter().any(|(groups, resources, verbs)| {
        groups.iter().any(|g| g == group)
            && resources.iter().any(|r| r == resource)
            && verbs.iter().any(|v| v == verb)
    })
}

/// Where two JSON values first differ, as a path with both sides.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.keys()
                .chain(y.keys())
                .find_map(|k| match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => first_difference(p, q, &format!("{path}/{k}")),
                    (p, q) => Some(format!("{path}/{k}: {p:?} != {q:?}")),
                })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, &format!("{path}/{i}"))),
        // YAML round trips may turn `100.0` into `100`: the same number to the API server.
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ if a == b => None,
        _ => Some(format!("{path}: {a} != {b}")),
    }
}

/// The ConfigRollout the NOTES tell the user to apply (a heredoc, indented).
fn notes_example(notes: &str) -> String {
    let body = notes
        .split_once("<<'YAML'\n")
        .and_then(|(_, rest)| rest.split_once("\n  YAML"))
        .map(|(body, _)| body)
        .expect("NOTES show an example ConfigRollout in a heredoc");
    body.lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn chart_crd_is_a_copy_of_the_generated_crd() {
    let generated = std::fs::read(Path::new(ROOT).join(CRD_FILE)).expect(CRD_FILE);
    let copy = std::fs::read(Path::new(ROOT).join(CRD_COPY)).expect(CRD_COPY);
    assert!(
        generated == copy,
        "the chart's CRD differs from {CRD_FILE}; refresh it with:\n  cp {CRD_FILE} {CRD_COPY}"
    );
}

#[test]
fn chart_lints_strictly() {
    let report = helm(&["lint", CHART]);
    assert_eq!(
        report["errors"],
        json!([]),
        "helm lint --strict: {report:#}"
    );
    let findings: Vec<&Value> = report["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_u64() >= Some(2))
        .collect();
    assert!(findings.is_empty(), "helm lint --strict: {findings:#?}");
}

#[test]
fn default_values_render_a_leader_elected_controller() {
    let r = render(json!({}));

    let crd = r.one("CustomResourceDefinition", "configrollouts.ringfence.dev");
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let mut bare = crd.clone();
    let meta = bare["metadata"].as_object_mut().unwrap();
    meta.remove("labels");
    meta.remove("annotations");
    let file = std::fs::read_to_string(Path::new(ROOT).join(CRD_FILE)).expect(CRD_FILE);
    let generated: Value = serde_saphyr::from_str(&file).expect("CRD YAML");
    if let Some(difference) = first_difference(&bare, &generated, "") {
        panic!("the rendered CRD is not the generated one: {difference}");
    }

    let deployment = r.one("Deployment", RELEASE);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let args = r.args();
    for expected in [
        "--leader-elect",
        "--leader-elect-lease-name=ringfence",
        "--leader-elect-namespace=ringfence-system",
        "--leader-elect-lease-duration=15s",
        "--leader-elect-renew-deadline=10s",
        "--leader-elect-retry-period=2s",
        "--log-format=json",
        "--metrics-addr=0.0.0.0:8080",
        "--health-addr=0.0.0.0:8081",
        "--revision-key-secret=ringfence-revision-key",
        "--revision-key-namespace=ringfence-system",
        "--cluster-namespace=ringfence-system",
    ] {
        assert!(args.contains(&expected), "missing {expected} in {args:?}");
    }
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--gate-allowed-hosts")
                || a.starts_with("--revision-key-generate")),
        "default address policy; the key is generated: {args:?}"
    );
    let key_role = r.one("Role", "ringfence-revision-key");
    assert_eq!(key_role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        key_role["rules"][0]["resourceNames"],
        json!(["ringfence-revision-key"]),
        "reads only the key Secret"
    );
    assert!(grants(key_role, "", "secrets", "create"));
    assert!(
        !args.iter().any(|a| a.starts_with("--namespace")),
        "watches all namespaces by default"
    );
    assert_eq!(
        r.container()["image"],
        "ghcr.io/ringfence/ringfence:0.1.0",
        "tag defaults to appVersion"
    );

    let cluster_role = r.one("ClusterRole", RELEASE);
    for (group, resource, verb) in [
        ("ringfence.dev", "configrollouts", "watch"),
        ("ringfence.dev", "configrollouts/status", "patch"),
        ("", "configmaps", "patch"),
        ("", "secrets", "delete"),
        ("apps", "deployments", "patch"),
        ("events.k8s.io", "events", "create"),
        ("", "namespaces", "list"),
    ] {
        assert!(
            grants(cluster_role, group, resource, verb),
            "ClusterRole lacks {verb} {resource}"
        );
    }
    for (group, resource) in [("", "namespaces"), ("apps", "deployments")] {
        assert!(
            !grants(cluster_role, group, resource, "get"),
            "{resource} are read from caches and lists only"
        );
    }
    assert!(
        !grants(cluster_role, "coordination.k8s.io", "leases", "update"),
        "leases belong in a Role"
    );
    assert!(
        !grants(cluster_role, "ringfence.dev", "configrollouts", "patch"),
        "only status is written"
    );
    for rule in cluster_role["rules"].as_array().unwrap() {
        for field in ["apiGroups", "resources", "verbs"] {
            assert!(
                !rule[field].as_array().unwrap().contains(&json!("*")),
                "wildcard in {rule}"
            );
        }
    }

    let lease_role = r.one("Role", "ringfence-leader-election");
    assert_eq!(lease_role["metadata"]["namespace"], NAMESPACE);
    for verb in ["get", "create", "update"] {
        assert!(grants(lease_role, "coordination.k8s.io", "leases", verb));
    }
    let binding = r.one("RoleBinding", "ringfence-leader-election");
    assert_eq!(binding["subjects"][0]["name"], RELEASE);
    assert_eq!(
        r.one("ClusterRoleBinding", RELEASE)["subjects"][0]["namespace"],
        NAMESPACE
    );

    let service = r.one("Service", "ringfence-metrics");
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    for kind in ["ServiceMonitor", "PodDisruptionBudget", "NetworkPolicy"] {
        assert!(r.of_kind(kind).is_empty(), "{kind} is off by default");
    }
    let example = notes_example(&r.notes);
    let validator = ringfence::validation::ManifestValidator::new().expect("CRD compiles");
    let reports = validator
        .check_text(&example)
        .unwrap_or_else(|e| panic!("NOTES example: {e}\n{example}"));
    assert_eq!(reports.len(), 1, "{example}");
    assert!(
        reports[0].violations.is_empty(),
        "the NOTES example is not a valid ConfigRollout: {:?}",
        reports[0].violations
    );
    assert!(r.notes.contains("rollout status deployment/ringfence"));
    assert!(
        r.notes.contains("files/member-rbac.yaml")
            && r.notes.contains(
                "kubectl -n ringfence-system label secret eu-west-1 ringfence.dev/cluster=true"
            ),
        "NOTES say how to register a member cluster:\n{}",
        r.notes
    );
}

#[test]
fn watch_namespace_confines_writes_to_roles() {
    let r = render(
        json!({"watchNamespace": "team-a", "rbac": {"targetNamespaces": ["cell-1", "team-a"]}}),
    );
    assert!(r.args().contains(&"--namespace=team-a"));

    let cluster_role = r.one("ClusterRole", RELEASE);
    assert!(grants(cluster_role, "", "namespaces", "list"));
    assert!(
        grants(cluster_role, "", "secrets", "watch"),
        "targets are watched everywhere"
    );
    for (group, resource, verb) in [
        ("", "configmaps", "patch"),
        ("", "secrets", "delete"),
        ("apps", "deployments", "patch"),
        ("ringfence.dev", "configrollouts", "watch"),
        ("ringfence.dev", "configrollouts/status", "patch"),
        ("events.k8s.io", "events", "create"),
    ] {
        assert!(
            !grants(cluster_role, group, resource, verb),
            "cluster-wide {verb} {resource}"
        );
    }

    let roles: Vec<&Value> = r
        .of_kind("Role")
        .into_iter()
        .filter(|role| role["metadata"]["name"] == RELEASE)
        .collect();
    let mut namespaces: Vec<&str> = roles
        .iter()
        .map(|role| {
            let ns = role["metadata"]["namespace"].as_str().unwrap();
            if ns == NAMESPACE {
                // Member clusters' prior records and cluster Secret events only
                // (watch_namespace_grants_member_records_in_the_release_namespace).
                assert!(!grants(role, "apps", "deployments", "patch"));
                return ns;
            }
            assert!(grants(role, "", "configmaps", "patch"));
            assert!(grants(role, "apps", "deployments", "patch"));
            let watched = ns == "team-a";
            assert_eq!(
                grants(role, "ringfence.dev", "configrollouts/status", "patch"),
                watched
            );
            assert_eq!(
                grants(role, "ringfence.dev", "configrollouts", "watch"),
                watched
            );
            assert_eq!(grants(role, "events.k8s.io", "events", "create"), watched);
            ns
        })
        .collect();
    namespaces.sort();
    assert_eq!(
        namespaces,
        ["cell-1", NAMESPACE, "team-a"],
        "one Role per namespace, no duplicates"
    );
    assert_eq!(
        r.of_kind("RoleBinding").len(),
        5,
        "two target bindings, the release namespace one, the leases one and the revision key one"
    );
}

/// What the controller writes in the release namespace for member clusters: the prior
/// records of their targets (created, replaced, their finalizer released by a merge
/// patch, deleted) and the Warning Event on a refused cluster Secret.
const MEMBER_RECORD_WRITES: [(&str, &str, &str); 10] = [
    ("", "configmaps", "create"),
    ("", "configmaps", "update"),
    ("", "configmaps", "patch"),
    ("", "configmaps", "delete"),
    ("", "secrets", "create"),
    ("", "secrets", "update"),
    ("", "secrets", "patch"),
    ("", "secrets", "delete"),
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
];

fn permissions(triples: &[(&str, &str, &str)]) -> Permissions {
    triples
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect()
}

#[test]
fn watch_namespace_grants_member_records_in_the_release_namespace() {
    // The release namespace is neither watched nor a target namespace: a Role of its
    // own grants exactly the member clusters' record and event writes.
    let r = render(json!({"watchNamespace": "team-a", "rbac": {"targetNamespaces": ["cell-1"]}}));
    let role = r
        .of_kind("Role")
        .into_iter()
        .find(|role| {
            role["metadata"]["name"] == RELEASE && role["metadata"]["namespace"] == NAMESPACE
        })
        .unwrap_or_else(|| panic!("no Role {RELEASE} in {NAMESPACE} among {:?}", r.kinds()));
    assert_eq!(granted(&[role]), permissions(&MEMBER_RECORD_WRITES));
    let binding = r
        .of_kind("RoleBinding")
        .into_iter()
        .find(|b| b["metadata"]["name"] == RELEASE && b["metadata"]["namespace"] == NAMESPACE)
        .expect("the release namespace Role is bound");
    assert_eq!(binding["roleRef"]["name"], RELEASE);
    assert_eq!(binding["subjects"][0]["name"], RELEASE);
    assert_eq!(binding["subjects"][0]["namespace"], NAMESPACE);

    // Watched, or a target namespace too: the same Role also grants those writes.
    for values in [
        json!({"watchNamespace": NAMESPACE}),
        json!({"watchNamespace": "team-a", "rbac": {"targetNamespaces": [NAMESPACE]}}),
    ] {
        let r = render(values.clone());
        let roles: Vec<&Value> = r
            .of_kind("Role")
            .into_iter()
            .filter(|role| {
                role["metadata"]["name"] == RELEASE && role["metadata"]["namespace"] == NAMESPACE
            })
            .collect();
        assert_eq!(
            roles.len(),
            1,
            "{values}: one Role in the release namespace"
        );
        let granted = granted(&roles);
        for permission in permissions(&MEMBER_RECORD_WRITES) {
            assert!(
                granted.contains(&permission),
                "{values}: lacks {permission:?}"
            );
        }
        assert!(
            grants(roles[0], "", "configmaps", "patch")
                && grants(roles[0], "apps", "deployments", "patch"),
            "{values}: still a target namespace"
        );
    }

    // Without watchNamespace the ClusterRole covers them; no Role is needed.
    let r = render(json!({}));
    let cluster_role = r.one("ClusterRole", RELEASE);
    for (group, resource, verb) in MEMBER_RECORD_WRITES {
        assert!(
            grants(cluster_role, group, resource, verb),
            "ClusterRole lacks {verb} {resource}"
        );
    }
    assert!(r.get("Role", RELEASE).is_none());
}

#[test]
fn cluster_namespace_is_the_release_namespace() {
    let result = helm(&[
        "render",
        CHART,
        "--name",
        RELEASE,
        "--namespace",
        "ops",
        "--values",
        "{}",
    ]);
    assert!(result.get("error").is_none(), "render failed: {result}");
    let deployment = result["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["object"])
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    let cluster_namespaces: Vec<&Value> = args
        .iter()
        .filter(|a| a.as_str().unwrap().starts_with("--cluster-namespace"))
        .collect();
    assert_eq!(
        cluster_namespaces,
        [&json!("--cluster-namespace=ops")],
        "{args:?}"
    );
}

/// The documents of `files/member-rbac.yaml`.
fn member_rbac() -> Vec<Value> {
    let path = Path::new(ROOT).join(MEMBER_RBAC);
    let text = std::fs::read_to_string(&path).expect(MEMBER_RBAC);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{MEMBER_RBAC} is not YAML: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// What a member must grant ringfence: exactly what the hub grants it for targets.
fn member_permissions() -> Permissions {
    let mut out = Permissions::new();
    let mut add = |group: &str, resources: &[&str], verbs: &[&str]| {
        for r in resources {
            for v in verbs {
                out.insert((group.to_string(), r.to_string(), v.to_string()));
            }
        }
    };
    add("", &["namespaces"], &["list", "watch"]);
    add(
        "",
        &["configmaps", "secrets"],
        &["get", "list", "watch", "create", "patch", "delete"],
    );
    add(
        "apps",
        &["deployments", "statefulsets", "daemonsets"],
        &["list", "watch", "patch"],
    );
    out
}

/// The Python with `kubernetes-validate`, found as `tests/support/chart.rs` finds it.
fn python() -> std::path::PathBuf {
    if let Some(python) = std::env::var_os("RINGFENCE_TEST_PYTHON") {
        return python.into();
    }
    let venv = Path::new(ROOT).join("target/test-venv/bin/python3");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

#[test]
fn member_rbac_holds_exactly_the_members_objects() {
    let docs = member_rbac();
    let of_kind = |kind: &str| -> &Value {
        let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "{MEMBER_RBAC}: one {kind}");
        found[0]
    };
    let mut kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Secret",
            "ServiceAccount"
        ],
        "{MEMBER_RBAC} holds exactly these objects"
    );

    let sa = of_kind("ServiceAccount");
    assert_eq!(sa["metadata"]["name"], MEMBER);
    assert_eq!(sa["metadata"]["namespace"], MEMBER_NAMESPACE);
    assert_eq!(
        sa["automountServiceAccountToken"], false,
        "no pod runs as it"
    );

    let role = of_kind("ClusterRole");
    assert_eq!(role["metadata"]["name"], MEMBER);
    assert_eq!(granted(&[role]), member_permissions());
    for rule in role["rules"].as_array().unwrap() {
        for field in ["apiGroups", "resources", "verbs"] {
            assert!(
                !rule[field].as_array().unwrap().contains(&json!("*")),
                "wildcard in {rule}"
            );
        }
        for verb in ["escalate", "bind", "impersonate"] {
            assert!(
                !rule["verbs"].as_array().unwrap().contains(&json!(verb)),
                "{verb} in {rule}"
            );
        }
        for field in ["resourceNames", "nonResourceURLs"] {
            assert!(rule.get(field).is_none(), "{field} in {rule}");
        }
    }
    assert!(role.get("aggregationRule").is_none());

    let binding = of_kind("ClusterRoleBinding");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": MEMBER})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": MEMBER, "namespace": MEMBER_NAMESPACE}])
    );

    let token = of_kind("Secret");
    assert_eq!(token["type"], "kubernetes.io/service-account-token");
    assert_eq!(token["metadata"]["namespace"], MEMBER_NAMESPACE);
    assert_eq!(
        token["metadata"]["annotations"]["kubernetes.io/service-account.name"],
        MEMBER
    );
    assert!(
        token.get("data").is_none() && token.get("stringData").is_none(),
        "the token controller fills it"
    );

    // Every object is a valid 1.33 object (strict: unknown fields fail).
    let script = r#"
import json, sys
import kubernetes_validate
for doc in json.load(sys.stdin):
    try:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)
    except kubernetes_validate.ValidationError as e:
        sys.exit(f"{doc['kind']} {doc['metadata']['name']}: {e.message} at {'/'.join(str(p) for p in e.path)}")
"#;
    use std::io::Write;
    let python = python();
    let mut child = std::process::Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): pip install kubernetes-validate",
                python.display()
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&docs).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{MEMBER_RBAC} is not valid for Kubernetes 1.33: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// In a member (the emulator, authorizing by RBAC), the ServiceAccount of
/// `files/member-rbac.yaml` can make every call ringfence makes there, uses every grant
/// in doing so, and nothing more: no reads by name of namespaces, no updates, no other
/// resources, no collection deletes, no RBAC.
#[tokio::test]
async fn member_rbac_grants_exactly_what_ringfence_does_in_a_member() {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
    use k8s_openapi::api::rbac::v1::Role;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
    use kube_emulator::Emulator;

    let emu = Emulator::builder()
        .authorization(true)
        .start()
        .await
        .expect("emulator");
    for ns in [MEMBER_NAMESPACE, "checkout"] {
        emu.apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .expect("namespace");
    }
    let text = std::fs::read_to_string(Path::new(ROOT).join(MEMBER_RBAC)).expect(MEMBER_RBAC);
    assert_eq!(emu.apply_manifest(&text).expect(MEMBER_RBAC), 4);
    let template = json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    });
    let selector = json!({"matchLabels": {"app": "web"}});
    for (kind, extra) in [
        ("Deployment", json!({"replicas": 1})),
        ("StatefulSet", json!({"replicas": 1, "serviceName": "web"})),
        ("DaemonSet", json!({})),
    ] {
        let mut spec = json!({"selector": selector, "template": template});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        emu.apply(&json!({
            "apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": "web", "namespace": "checkout", "labels": {"app": "web"}},
            "spec": spec,
        }))
        .expect("workload");
    }

    let client = emu.client_for_token(&emu.service_account_token(MEMBER_NAMESPACE, MEMBER));
    let lp = ListParams::default();
    let wp = WatchParams::default().timeout(1);
    let apply = PatchParams::apply("ringfence").force();
    let stamp = Patch::Merge(json!({"spec": {"template": {"metadata": {
        "annotations": {"ringfence.dev/revision": "abc"}}}}}));

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.list(&lp).await.expect("list namespaces");
    drop(namespaces.watch(&wp, "0").await.expect("watch namespaces"));

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "checkout");
    Api::<ConfigMap>::all(client.clone())
        .list(&lp)
        .await
        .expect("list configmaps");
    drop(
        Api::<ConfigMap>::all(client.clone())
            .watch(&wp, "0")
            .await
            .expect("watch configmaps"),
    );
    let target = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "checkout-flags"}, "data": {"retries": "3"}});
    config_maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(target.clone()).unwrap(),
        )
        .await
        .expect("create configmap");
    config_maps
        .get("checkout-flags")
        .await
        .expect("get configmap");
    config_maps
        .patch("checkout-flags", &apply, &Patch::Apply(&target))
        .await
        .expect("apply configmap");
    config_maps
        .delete("checkout-flags", &DeleteParams::default())
        .await
        .expect("delete configmap");

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "checkout");
    Api::<Secret>::all(client.clone())
        .list(&lp)
        .await
        .expect("list secrets");
    drop(
        Api::<Secret>::all(client.clone())
            .watch(&wp, "0")
            .await
            .expect("watch secrets"),
    );
    let target = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "checkout-secret"}, "stringData": {"token": "new"}});
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(target.clone()).unwrap(),
        )
        .await
        .expect("create secret");
    secrets.get("checkout-secret").await.expect("get secret");
    secrets
        .patch("checkout-secret", &apply, &Patch::Apply(&target))
        .await
        .expect("apply secret");
    secrets
        .delete("checkout-secret", &DeleteParams::default())
        .await
        .expect("delete secret");

    macro_rules! workloads {
        ($kind:ty) => {
            let all: Api<$kind> = Api::all(client.clone());
            all.list(&lp).await.expect("list workloads");
            drop(all.watch(&wp, "0").await.expect("watch workloads"));
            let api: Api<$kind> = Api::namespaced(client.clone(), "checkout");
            api.list(&ListParams::default().labels("app=web"))
                .await
                .expect("list workloads by selector");
            api.patch("web", &PatchParams::default(), &stamp)
                .await
                .expect("restart stamp");
        };
    }
    workloads!(Deployment);
    workloads!(StatefulSet);
    workloads!(DaemonSet);

    let user = format!("system:serviceaccount:{MEMBER_NAMESPACE}:{MEMBER}");
    let used = used(&emu.request_log().entries(), &user);
    let docs = member_rbac();
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    assert_eq!(
        used,
        granted(&[role]),
        "the member's ClusterRole grants exactly what ringfence uses there"
    );
    assert_eq!(used, member_permissions());

    // Nothing beyond that.
    let forbidden = |r: Result<(), kube::Error>, what: &str| match r {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403, got {other:?}"),
    };
    forbidden(namespaces.get("checkout").await.map(drop), "get namespace");
    let mut cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "other"}, "data": {"a": "1"}}))
    .unwrap();
    config_maps
        .create(&PostParams::default(), &cm)
        .await
        .expect("create");
    cm.data = Some([("a".to_string(), "2".to_string())].into());
    forbidden(
        config_maps
            .replace("other", &PostParams::default(), &cm)
            .await
            .map(drop),
        "update configmap",
    );
    forbidden(
        Api::<Service>::namespaced(client.clone(), "checkout")
            .list(&lp)
            .await
            .map(drop),
        "list services",
    );
    forbidden(
        config_maps
            .delete_collection(&DeleteParams::default(), &lp)
            .await
            .map(drop),
        "delete every configmap",
    );
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "mine"},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
    }))
    .unwrap();
    forbidden(
        Api::<Role>::namespaced(client.clone(), "checkout")
            .create(&PostParams::default(), &role)
            .await
            .map(drop),
        "create role",
    );
    emu.shutdown().await;
}

#[test]
fn optional_objects_render_when_enabled() {
    let r = render(json!({
        "serviceMonitor": {"enabled": true, "labels": {"release": "prometheus"}},
        "podDisruptionBudget": {"enabled": true},
        "networkPolicy": {
            "enabled": true,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [{"port": 443}]}],
        },
    }));
    let monitor = r.one("ServiceMonitor", RELEASE);
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(
        r.one("PodDisruptionBudget", RELEASE)["spec"]["maxUnavailable"],
        1
    );
    let policy = r.one("NetworkPolicy", RELEASE);
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], "metrics");
    assert_eq!(
        policy["spec"]["egress"][0]["ports"][0]["port"], 53,
        "DNS stays open"
    );

    let ingress_only = render(json!({"networkPolicy": {"enabled": true}}));
    let policy = ingress_only.one("NetworkPolicy", RELEASE);
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    assert!(policy["spec"].get("egress").is_none());
}

#[test]
fn custom_image_and_controller_settings() {
    let r = render(json!({
        "image": {"repository": "registry.example/ops/ringfence", "tag": "1.2.3", "pullPolicy": "Always"},
        "trustedNamespaces": ["platform", "sre"],
        "logFormat": "text",
        "extraArgs": ["--concurrency=8"],
        "gateAllowedHosts": ["prometheus.monitoring", "*.gates.svc", "10.20.0.0/16"],
        "revisionKey": {"existingSecret": "my-key"},
    }));
    let c = r.container();
    assert_eq!(c["image"], "registry.example/ops/ringfence:1.2.3");
    assert_eq!(c["imagePullPolicy"], "Always");
    let args = r.args();
    for expected in [
        "--trusted-namespaces=platform,sre",
        "--log-format=text",
        "--concurrency=8",
        "--gate-allowed-hosts=prometheus.monitoring,*.gates.svc,10.20.0.0/16",
        "--revision-key-secret=my-key",
        "--revision-key-generate=false",
    ] {
        assert!(args.contains(&expected), "missing {expected} in {args:?}");
    }
    // A given key is only read: no create.
    let key_role = r.one("Role", "ringfence-revision-key");
    assert_eq!(key_role["rules"][0]["resourceNames"], json!(["my-key"]));
    assert!(!grants(key_role, "", "secrets", "create"));
}

#[test]
fn single_replica_without_leader_election() {
    let r = render(json!({"replicaCount": 1, "leaderElection": {"enabled": false}}));
    assert_eq!(r.one("Deployment", RELEASE)["spec"]["replicas"], 1);
    assert!(!r.args().iter().any(|a| a.starts_with("--leader-elect")));
    assert!(
        r.get("Role", "ringfence-leader-election").is_none(),
        "no lease permissions"
    );

    let error = render_error(json!({"replicaCount": 2, "leaderElection": {"enabled": false}}));
    assert!(
        error.contains("replicaCount > 1 needs leaderElection.enabled=true"),
        "{error}"
    );
}

#[test]
fn crds_install_false_leaves_the_crd_out() {
    let r = render(json!({"crds": {"install": false}}));
    assert!(r.of_kind("CustomResourceDefinition").is_empty());
    assert!(r.notes.contains("install the CRD"), "{}", r.notes);
}

#[test]
fn values_schema_rejects_wrong_values_with_clear_messages() {
    for (values, message) in [
        (
            json!({"replicaCount": "two"}),
            "at '/replicaCount': got string, want integer",
        ),
        (
            json!({"logFormat": "xml"}),
            "at '/logFormat': value must be one of 'json', 'text'",
        ),
        (
            json!({"replicas": 3}),
            "additional properties 'replicas' not allowed",
        ),
        (
            json!({"leaderElection": {"leaseDuration": "15"}}),
            "at '/leaderElection/leaseDuration': '15' does not match pattern",
        ),
        (
            json!({"watchNamespace": "Team_A"}),
            "at '/watchNamespace': 'Team_A' does not match pattern",
        ),
        (
            json!({"crds": {"install": "yes"}}),
            "at '/crds/install': got string, want boolean",
        ),
        (
            json!({"image": {"pullPolicy": "Sometimes"}}),
            "at '/image/pullPolicy': value must be one of",
        ),
    ] {
        let error = render_error(values.clone());
        assert!(
            error.contains(message),
            "{values}: expected {message:?} in:\n{error}"
        );
    }
}

/// Every rendered object (but the ServiceMonitor, whose CRD is not ours) is
/// accepted by the API: created through the emulator with the admin client.
#[tokio::test]
async fn rendered_objects_are_created_in_the_emulator() {
    use kube::api::{Api, DynamicObject, PostParams};
    use kube::core::GroupVersionKind;
    use kube::discovery::{Scope, pinned_kind};
    use kube_emulator::Emulator;

    for values in [
        json!({}),
        json!({
            "watchNamespace": "team-a",
            "rbac": {"targetNamespaces": ["cell-1"]},
            "podDisruptionBudget": {"enabled": true},
            "networkPolicy": {"enabled": true, "egress": [{"ports": [{"port": 443}]}]},
            "serviceMonitor": {"enabled": true},
        }),
    ] {
        let emu = Emulator::builder().start().await.expect("emulator");
        let client = emu.client();
        for ns in [NAMESPACE, "team-a", "cell-1"] {
            emu.apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
                .expect("namespace");
        }
        let mut objects = render(values.clone()).objects;
        // The CRD first, as Helm orders it.
        objects.sort_by_key(|o| o["kind"] != "CustomResourceDefinition");
        for object in objects.iter().filter(|o| o["kind"] != "ServiceMonitor") {
            let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
                Some((g, v)) => (g, v),
                None => ("", object["apiVersion"].as_str().unwrap()),
            };
            let gvk = GroupVersionKind::gvk(group, version, object["kind"].as_str().unwrap());
            let (resource, caps) = pinned_kind(&client, &gvk)
                .await
                .unwrap_or_else(|e| panic!("{gvk:?} not served: {e}"));
            let api: Api<DynamicObject> =
                match (caps.scope, object["metadata"]["namespace"].as_str()) {
                    (Scope::Namespaced, Some(ns)) => {
                        Api::namespaced_with(client.clone(), ns, &resource)
                    }
                    (Scope::Namespaced, None) => {
                        panic!("{} has no namespace", object["metadata"]["name"])
                    }
                    (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
                };
            let obj: DynamicObject = serde_json::from_value(object.clone()).expect("object");
            api.create(&PostParams::default(), &obj)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "creating {} {:?} ({values}): {e}",
                        gvk.kind, obj.metadata.name
                    )
                });
        }
        // The CRD is served once created.
        let crs = GroupVersionKind::gvk("ringfence.dev", "v1alpha1", "ConfigRollout");
        pinned_kind(&client, &crs)
            .await
            .expect("ConfigRollouts are served");
        emu.shutdown().await;
    }
}

/// Leader election as the chart's ServiceAccount, authorized only by the
/// rendered lease Role: it is never denied, and it uses every verb granted.
#[tokio::test]
async fn leader_election_needs_exactly_the_charts_lease_role() {
    use kube_emulator::Emulator;
    use ringfence::leader::{LeaderConfig, LeaderElection, Timing};
    use std::time::Duration;

    let emu = Emulator::builder()
        .authorization(true)
        .start()
        .await
        .expect("emulator");
    emu.apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))
        .expect("namespace");
    let r = render(json!({}));
    let role = r.one("Role", "ringfence-leader-election");
    emu.apply(role).expect("role");
    emu.apply(r.one("RoleBinding", "ringfence-leader-election"))
        .expect("binding");
    let token = emu.service_account_token(NAMESPACE, RELEASE);
    let timing = Timing {
        lease_duration: Duration::from_secs(1),
        renew_deadline: Duration::from_millis(600),
        retry_period: Duration::from_millis(100),
    };
    let elector = |identity: &str| {
        let config = LeaderConfig {
            lease_name: "ringfence".into(),
            namespace: NAMESPACE.into(),
            identity: identity.into(),
            timing,
        };
        let election = LeaderElection::new(emu.client_for_token(&token), config).expect("timing");
        let mut signal = election.subscribe();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(election.run(async {
            let _ = stopped.await;
        }));
        async move {
            tokio::time::timeout(Duration::from_secs(5), signal.wait_for(|l| *l))
                .await
                .expect("becomes leader")
                .expect("election running");
            (stop, task)
        }
    };
    // The first creates the Lease and renews it; the second takes it over
    // after the first released it.
    let (stop, first) = elector("first").await;
    tokio::time::sleep(timing.retry_period * 3).await;
    let second = elector("second");
    stop.send(()).unwrap();
    first.await.unwrap().expect("clean shutdown");
    let (stop, second) = second.await;
    stop.send(()).unwrap();
    second.await.unwrap().expect("clean shutdown");

    let user = format!("system:serviceaccount:{NAMESPACE}:{RELEASE}");
    let used = used(&emu.request_log().entries(), &user);
    let granted = granted(&[role]);
    println!("leader election used: {used:?}");
    assert_eq!(
        used, granted,
        "the lease Role grants exactly what election uses"
    );
    emu.shutdown().await;
}
