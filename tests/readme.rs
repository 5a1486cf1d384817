//! README.md cannot go stale: every command in its `console` blocks is run
//! here or by CI, and every full ConfigRollout in it is valid.
//!
//! - `ringfence ...` runs the built binary from the repository root.
//! - `kubectl ...` runs against the API emulator holding the CRD and the
//!   README's example rollout.
//! - `cargo ...` and `./test.sh` must be a line of `.ci/run`, which CI executes.
//! - `helm ...` must install the chart under the release name and namespace
//!   that the chart tests render and validate (`tests/support/chart.rs`).
//! - `kubectl ringfence ...` in the plugin's transcripts must parse; what the
//!   commands do is tested in `tests/kubectl_plugin.rs`.

#[path = "support/tempdir.rs"]
mod tempdir;

use std::path::{Path, PathBuf};
use std::process::Command;

use kube_emulator::Emulator;
use ringfence::validation::ManifestValidator;

const KUBECTL: &str = "/usr/bin/kubectl";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: impl AsRef<Path>) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Fenced blocks as (info string, body).
fn blocks(markdown: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_string(), String::new())),
            (Some(_), Some(_)) => out.extend(current.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(current.is_none(), "README.md has an unclosed code block");
    out
}

fn commands(markdown: &str) -> Vec<String> {
    blocks(markdown)
        .into_iter()
        .filter(|(info, _)| info == "console")
        .flat_map(|(_, body)| {
            body.lines()
                .filter_map(|l| l.strip_prefix("$ ").map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn sh(command: &str, envs: &[(&str, &Path)]) -> (bool, String) {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command).current_dir(root());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("sh runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_command_is_covered() {
    let readme = read("README.md");
    let ci = read(".ci/run");
    let chart_support = read("tests/support/chart.rs");
    let commands = commands(&readme);
    assert!(commands.len() >= 10, "too few commands found: {commands:?}");
    for command in &commands {
        let program = command.split_whitespace().next().unwrap_or_default();
        match program {
            "cargo" | "./test.sh" => assert!(
                ci.lines().any(|l| l.trim() == command),
                "`{command}` from README.md is not run by .ci/run"
            ),
            "helm" => {
                assert_eq!(
                    command,
                    "helm install ringfence charts/ringfence -n ringfence-system --create-namespace",
                    "README.md's helm command must match what the chart tests render"
                );
                assert!(
                    chart_support.contains(r#"RELEASE: &str = "ringfence";"#)
                        && chart_support.contains(r#"NAMESPACE: &str = "ringfence-system";"#)
                        && root().join("charts/ringfence/Chart.yaml").exists()
                );
            }
            "ringfence" | "kubectl" => {}
            other => panic!("README.md command `{command}` runs `{other}`, which no test covers"),
        }
    }
}

#[test]
fn ringfence_commands_work() {
    let binary = env!("CARGO_BIN_EXE_ringfence");
    for command in commands(&read("README.md")) {
        if let Some(args) = command.strip_prefix("ringfence ") {
            let (ok, out) = sh(&format!("{binary} {args}"), &[]);
            assert!(ok, "`{command}` failed:\n{out}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_commands_work_against_the_example() {
    assert!(
        Path::new(KUBECTL).exists(),
        "{KUBECTL} is required by this test (CI installs it); it is missing"
    );
    let emulator = Emulator::builder()
        .admission(kube_emulator::validation::admission_hook())
        .start()
        .await
        .unwrap();
    emulator
        .apply(&serde_json::to_value(ringfence::api::crd()).unwrap())
        .unwrap();
    emulator
        .apply_manifest("apiVersion: v1\nkind: Namespace\nmetadata: {name: platform}\n")
        .unwrap();
    emulator
        .apply_manifest(&read("examples/checkout-flags.yaml"))
        .unwrap();
    let dir = tempdir::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emulator.write_kubeconfig(&kubeconfig).unwrap();
    let cache = dir.path().join("cache");
    let mut ran = 0;
    for command in commands(&read("README.md")) {
        if command.starts_with("kubectl ") {
            let command = command.replacen(
                "kubectl",
                &format!("{KUBECTL} --cache-dir {}", cache.display()),
                1,
            );
            let (ok, out) = sh(&command, &[("KUBECONFIG", &kubeconfig)]);
            assert!(ok, "`{command}` failed:\n{out}");
            ran += 1;
        }
    }
    assert!(ran >= 5, "only {ran} kubectl commands in README.md");
}

/// The plugin's transcripts are shown in `text` blocks (their output comes from a demo
/// run, not from the bare example): every command in them must still parse as written.
#[test]
fn every_plugin_command_in_the_readme_parses() {
    use clap::Parser;
    let mut parsed = 0;
    for (_, body) in blocks(&read("README.md")) {
        for line in body.lines() {
            let Some(args) = line.strip_prefix("$ kubectl ringfence ") else {
                continue;
            };
            let argv = std::iter::once("kubectl-ringfence").chain(args.split_whitespace());
            if let Err(e) = ringfence::cli::kubectl::KubectlArgs::try_parse_from(argv) {
                panic!("`{line}` from README.md does not parse:\n{e}");
            }
            parsed += 1;
        }
    }
    assert!(parsed >= 8, "only {parsed} plugin commands in README.md");
}

#[test]
fn every_full_rollout_in_the_readme_is_valid() {
    let validator = ManifestValidator::new().unwrap();
    let mut checked = 0;
    for (info, body) in blocks(&read("README.md")) {
        if info == "yaml" && body.contains("kind: ConfigRollout") {
            let reports = validator.check_text(&body).unwrap();
            for report in reports {
                assert!(
                    report.violations.is_empty(),
                    "{}: {:?}",
                    report.name,
                    report.violations
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

#[test]
fn readme_example_is_the_example_file() {
    let example = read("examples/checkout-flags.yaml");
    let example: String = example
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        blocks(&read("README.md"))
            .iter()
            .any(|(info, body)| info == "yaml" && *body == example),
        "README.md must show examples/checkout-flags.yaml verbatim (without its comment header)"
    );
}
