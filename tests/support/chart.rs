//! The Helm chart through real Helm (the v4 SDK, via `tests/chart/helm_render.py`).

use std::process::Command;

use serde_json::Value;

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/ringfence");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/chart/helm_render.py");
const INSTALL: &str = "pip install helm-python-sdk kubernetes-validate";
/// The release name and namespace the README's `helm install` uses.
pub const RELEASE: &str = "ringfence";
pub const NAMESPACE: &str = "ringfence-system";

/// Runs `helm_render.py` with `args` and returns the JSON it prints.
pub fn helm(args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg(SCRIPT)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): install Python 3, then `{INSTALL}`"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(3), "{stderr}");
    assert!(
        out.status.success(),
        "helm_render.py {args:?} failed:\n{stderr}"
    );
    serde_json::from_slice(&out.stdout).expect("helm_render.py prints JSON")
}

/// The render of the chart as [`RELEASE`] in [`NAMESPACE`] with `values` over the
/// defaults: `objects` (each validated against the Kubernetes schemas) and `notes`, or
/// an `error`.
pub fn render_result(values: &Value) -> Value {
    helm(&[
        "render",
        CHART,
        "--name",
        RELEASE,
        "--namespace",
        NAMESPACE,
        "--values",
        &values.to_string(),
    ])
}
