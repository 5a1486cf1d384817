//! `ringfence demo` tells every story correctly (CI also runs the default one
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_scenario_rolls_back_both_regions() {
    let outcome = run(Scenario::Fleet).await;
    let summary = outcome.summary.join("\n");
    assert!(outcome.correct, "{summary}");
    assert!(
        summary.contains("rollback of") && summary.contains("GateFailed"),
        "{summary}"
    );
    assert!(
        summary
            .lines()
            .any(|l| l.contains("ring us failed in cluster us-east-1") && l.contains("GateFailed")),
        "the summary names the failing ring's cluster: {summary}"
    );
    assert!(
        summary.contains("both clusters (eu-west-1 and us-east-1) restored"),
        "{summary}"
    );
}
