//! What consumes `/metrics`, tested by the tools that consume it: the chart's alerts by
//! `promtool check rules` and `promtool test rules`, the Grafana dashboard's queries by
//! `promtool check rules`, the names both use against what a live controller serves, and
//! that output by `promtool check metrics`.
//!
//! Needs `promtool` (Debian's `prometheus` package ships it) and Python 3 with
//! `pip install helm-python-sdk kubernetes-validate`; the tests fail (never skip) without them.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use kube_emulator::RequestMatch;
use regex::Regex;
use serde_json::{Value, json};
use support::chart::{CHART, NAMESPACE, RELEASE, render_result};
use support::cluster::{Cluster, http_get, phase};

const PROMTOOL_INSTALL: &str = "apt-get install -y prometheus (Debian's package ships promtool)";
const UNIT_TESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/alerts/ringfence_test.yaml"
);
const DASHBOARD: &str = "files/dashboards/ringfence.json";

/// Runs promtool with `args` (and `stdin`), returning (success, stdout + stderr).
fn promtool(args: &[&str], dir: &Path, stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}); install it with {PROMTOOL_INSTALL}")
        });
    let mut input = child.stdin.take().expect("stdin is piped");
    if let Some(text) = stdin {
        input
            .write_all(text.as_bytes())
            .expect("promtool reads stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn objects(values: Value) -> Vec<Value> {
    let result = render_result(&values);
    if let Some(error) = result.get("error") {
        panic!("rendering with {values} failed: {error}");
    }
    result["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| o["object"].clone())
        .collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}, got {found:#?}");
    found[0]
}

fn dashboard_config_map(objects: &[Value]) -> Option<&Value> {
    objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["labels"]["grafana_dashboard"] == "1")
}

/// The alerting rule groups as Helm renders them with the alerts on.
fn rendered_rule_groups(values: Value) -> Value {
    let objects = objects(values);
    one(&objects, "PrometheusRule")["spec"]["groups"].clone()
}

/// Every PromQL expression of the dashboard, with Grafana's variables given values.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(Path::new(CHART).join(DASHBOARD)).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("every target has an expr");
            let expr = expr
                .replace("$__rate_interval", "2m")
                .replace("$__interval", "1m")
                .replace("$__range", "6h");
            assert!(!expr.contains('$'), "an unknown Grafana variable in {expr}");
            queries.push((
                panel["title"].as_str().unwrap_or_default().to_string(),
                expr,
            ));
        }
    }
    queries
}

fn metric_names(expressions: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    let name = Regex::new(r"\b(ringfence_[a-z0-9_]+|up)\b").unwrap();
    expressions
        .into_iter()
        .flat_map(|e| {
            name.captures_iter(&e)
                .map(|c| c[1].to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn rule_expressions(groups: &Value) -> Vec<String> {
    groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect()
}

/// Sample names a classic text exposition can hold, from its `# TYPE` lines: every family
/// is described even before it has a sample.
fn served_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

#[test]
fn alerts_and_dashboard_are_off_by_default_and_render_when_enabled() {
    let defaults = objects(json!({}));
    assert!(defaults.iter().all(|o| o["kind"] != "PrometheusRule"));
    assert!(dashboard_config_map(&defaults).is_none());

    let enabled = objects(json!({
        "prometheusRule": {
            "enabled": true,
            "labels": {"release": "prometheus"},
            "alertLabels": {"team": "platform"},
            "job": "ringfence-pods",
        },
        "grafanaDashboard": {
            "enabled": true,
            "namespace": "monitoring",
            "annotations": {"grafana_folder": "Platform"},
        },
        "serviceMonitor": {"enabled": true},
    }));
    let rule = one(&enabled, "PrometheusRule");
    assert_eq!(rule["metadata"]["namespace"], NAMESPACE);
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let rules: Vec<&Value> = rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "RingfenceRollbackStarted",
            "RingfenceRollbackStuck",
            "RingfenceRollbackIncomplete",
            "RingfenceRolloutStalled",
            "RingfenceReconcileErrors",
            "RingfenceControllerDown",
            "RingfenceNoLeader",
        ]
    );
    for r in &rules {
        assert_eq!(r["labels"]["team"], "platform", "{r}");
        let expr = r["expr"].as_str().unwrap();
        let selectors = expr.matches('{').count();
        assert_eq!(
            expr.matches(r#"job="ringfence-pods""#).count(),
            selectors,
            "every selector is scoped to the job: {expr}"
        );
    }

    let dashboard = dashboard_config_map(&enabled).expect("the dashboard ConfigMap");
    assert_eq!(dashboard["metadata"]["namespace"], "monitoring");
    assert_eq!(
        dashboard["metadata"]["annotations"]["grafana_folder"],
        "Platform"
    );
    let file = std::fs::read_to_string(Path::new(CHART).join(DASHBOARD)).unwrap();
    assert_eq!(
        dashboard["data"]["ringfence.json"]
            .as_str()
            .unwrap()
            .trim_end(),
        file.trim_end(),
        "the ConfigMap carries the dashboard file unchanged"
    );

    let monitor = one(&enabled, "ServiceMonitor");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["honorLabels"], true,
        "per-rollout series keep their own namespace label"
    );
}

#[test]
fn values_schema_rejects_bad_alert_settings() {
    for (values, message) in [
        (
            json!({"prometheusRule": {"stalledFor": "1.5m"}}),
            "at '/prometheusRule/stalledFor': '1.5m' does not match pattern",
        ),
        (
            json!({"prometheusRule": {"enabled": "yes"}}),
            "at '/prometheusRule/enabled': got string, want boolean",
        ),
        (
            json!({"grafanaDashboard": {"label": {}}}),
            "additional properties 'label' not allowed",
        ),
    ] {
        let result = render_result(&values);
        let error = result["error"].as_str().unwrap_or_else(|| {
            panic!("{values} rendered instead of failing");
        });
        assert!(
            error.contains(message),
            "{values}: expected {message:?} in:\n{error}"
        );
    }
}

#[test]
fn alerts_pass_promtool_check_and_unit_tests() {
    let groups = rendered_rule_groups(json!({"prometheusRule": {"enabled": true}}));
    assert!(
        rule_expressions(&groups)
            .iter()
            .all(|e| e.contains(&format!(r#"job="{RELEASE}-metrics""#))),
        "the unit tests' series are the job the release's ServiceMonitor scrapes"
    );
    let dir = support::tempdir::tempdir().unwrap();
    // JSON is YAML: the rule groups exactly as Helm rendered them.
    std::fs::write(
        dir.path().join("rules.yaml"),
        json!({ "groups": groups }).to_string(),
    )
    .unwrap();
    let (ok, out) = promtool(&["check", "rules", "rules.yaml"], dir.path(), None);
    assert!(ok, "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS: 7 rules found"), "{out}");

    std::fs::copy(UNIT_TESTS, dir.path().join("ringfence_test.yaml")).unwrap();
    let (ok, out) = promtool(&["test", "rules", "ringfence_test.yaml"], dir.path(), None);
    assert!(ok, "promtool test rules:\n{out}");

    // The unit tests exercise every alert, firing and silent.
    let unit_tests = std::fs::read_to_string(UNIT_TESTS).unwrap();
    for alert in alert_names(&groups) {
        let fires = Regex::new(&format!(
            r"alertname: {alert}\n\s+exp_alerts:\n\s+- exp_labels"
        ))
        .unwrap();
        let silent = format!("alertname: {alert}\n        exp_alerts: []");
        assert!(fires.is_match(&unit_tests), "no test where {alert} fires");
        assert!(
            unit_tests.contains(&silent),
            "no test where {alert} is silent"
        );
    }
}

fn alert_names(groups: &Value) -> Vec<String> {
    groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| r["alert"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_dashboard_query_parses() {
    let queries = dashboard_queries();
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| json!({"record": format!("dashboard:query_{i}"), "expr": expr}))
        .collect();
    let dir = support::tempdir::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dashboard.yaml"),
        json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    let (ok, out) = promtool(&["check", "rules", "dashboard.yaml"], dir.path(), None);
    assert!(ok, "a dashboard query does not parse:\n{out}\n{queries:#?}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );
    let all: String = queries.iter().map(|(_, e)| format!("{e}\n")).collect();
    for wanted in [
        "ringfence_rollouts)",
        "ringfence_rollbacks_total",
        "ringfence_gate_evaluations_total",
        "histogram_quantile(0.5, sum by (le) (rate(ringfence_rollback_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(ringfence_rollback_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(ringfence_reconcile_duration_seconds_bucket",
        "ringfence_reconcile_errors_total",
    ] {
        assert!(all.contains(wanted), "no dashboard query uses {wanted}");
    }
}

/// A live controller's `/metrics`, as a scraper that does not ask for OpenMetrics (curl,
/// promtool) gets it, passes `promtool check metrics`, and serves every metric the alerts
/// and the dashboard name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_pass_promtool_and_cover_alerts_and_dashboard() {
    let mut c = Cluster::start().await;
    c.namespace("platform", &[]).await;
    c.namespace("cell-1", &[("ringfence.dev/allow-from", "platform")])
        .await;
    c.start_controller().await;
    // One failed status write, so that the reconcile error family has a sample.
    c.emu.faults().fail_next(
        1,
        RequestMatch::any()
            .resource("configrollouts")
            .subresource("status"),
        500,
    );
    c.apply_rollout(
        "platform",
        json!({
            "metadata": {"name": "flags"},
            "spec": {
                "config": {"name": "flags", "data": {"a": "1"}},
                "rings": [{"name": "one", "namespaces": ["cell-1"]}],
            },
        }),
    )
    .await;
    c.wait_rollout("platform", "flags", "Succeeded", |r| {
        phase(r) == "Succeeded"
    })
    .await;
    let addr = c.metrics_addr.expect("metrics address");
    let response = http_get(addr, "/metrics").await;
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let dir = support::tempdir::tempdir().unwrap();
    let (ok, out) = promtool(&["check", "metrics"], dir.path(), Some(body));
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}\n{body}"
    );
    assert!(
        body.contains(
            r#"ringfence_rollout_info{namespace="platform",name="flags",phase="Succeeded"} 1"#
        ),
        "{body}"
    );

    let mut served = served_names(body);
    // Prometheus' own series for every target.
    served.insert("up".to_string());
    let groups = rendered_rule_groups(json!({"prometheusRule": {"enabled": true}}));
    let alert_names = metric_names(rule_expressions(&groups));
    let dashboard_names = metric_names(dashboard_queries().into_iter().map(|(_, e)| e));
    assert!(alert_names.len() >= 8 && dashboard_names.len() >= 8);
    for name in alert_names.iter().chain(&dashboard_names) {
        assert!(
            served.contains(name),
            "{name} is used by the alerts or the dashboard but not served:\n{body}"
        );
    }
    assert_eq!(
        RELEASE, "ringfence",
        "the unit tests' job is ringfence-metrics"
    );
}
