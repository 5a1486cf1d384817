//! `ringfence demo` tells both stories correctly (CI also runs the default one
//! through the binary, exactly as the README's quick start says).

#[path = "support/tempdir.rs"]
mod tempdir;

use ringfence::demo::{self, DemoOptions, Scenario, Style};

async fn run(scenario: Scenario) -> demo::Outcome {
    let dir = tempdir::tempdir().unwrap();
    demo::run(DemoOptions {
        scenario,
        speed: 4.0,
        keep: false,
        style: Style { color: false },
        kubeconfig: Some(dir.path().join("kubeconfig")),
    })
    .await
    .expect("the demo runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_scenario_ends_with_revision_b_everywhere() {
    let outcome = run(Scenario::Success).await;
    assert!(outcome.correct, "{}", outcome.summary.join("\n"));
    assert!(
        !outcome.summary.iter().any(|l| l.contains("rollback of")),
        "{}",
        outcome.summary.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_scenario_rolls_back_to_revision_a() {
    let outcome = run(Scenario::Regression).await;
    assert!(outcome.correct, "{}", outcome.summary.join("\n"));
    let summary = outcome.summary.join("\n");
    assert!(
        summary.contains("rollback of") && summary.contains("GateFailed"),
        "{summary}"
    );
}
