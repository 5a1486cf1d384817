//! `ringfence demo`: a real staged rollout without a cluster.
//!
//! The binary starts the API emulator on loopback, installs the CRD, creates
//! nine cell namespaces in three rings with a consumer Deployment each, serves
//! scripted error rates over the Prometheus HTTP API, and runs the real
//! controller in-process against it. Revision A rolls out through every ring;
//! then revision B passes the canary, its error rate regresses in the early
//! ring, the gate fails and B is rolled back. The demo succeeds only if every
//! cell holds revision A again at the end.
//!
//! `--scenario fleet` tells the same story across clusters (`fleet.rs`): a hub
//! emulator runs the controller and two member emulators hold the cells; B
//! regresses one region and is rolled back in both.

mod fleet;
mod kubelet;
mod metrics_source;
mod scenario;
mod view;

pub use metrics_source::{ErrorRates, MetricsSource};
pub use scenario::{DemoError, DemoOptions, Outcome, Scenario};
pub use view::Style;

/// Tells the story `options` asks for.
pub async fn run(options: DemoOptions) -> Result<Outcome, DemoError> {
    match options.scenario {
        Scenario::Fleet => fleet::run(options).await,
        Scenario::Success | Scenario::Regression => scenario::run(options).await,
    }
}
