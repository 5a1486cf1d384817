//! The Helm chart through real Helm (the v4 SDK, via `tests/chart/helm_render.py`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/ringfence");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/chart/helm_render.py");
const INSTALL: &str = "./test.sh, which installs them in target/test-venv, or pip install helm-python-sdk kubernetes-validate";
/// The release name and namespace the README's `helm install` uses.
pub const RELEASE: &str = "ringfence";
pub const NAMESPACE: &str = "ringfence-system";

/// The Python with the Helm SDK: `RINGFENCE_TEST_PYTHON` (which `./test.sh` sets), else
/// the virtual environment `./test.sh` makes, else `python3`.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("RINGFENCE_TEST_PYTHON") {
        return python.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python3");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

/// Runs `helm_render.py` with `args` and returns the JSON it prints.
pub fn helm(args: &[&str]) -> Value {
    let python = python();
    let out = Command::new(&python)
        .arg(SCRIPT)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}): {INSTALL}", python.display()));
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
