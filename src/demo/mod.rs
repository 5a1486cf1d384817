//! `ringfence demo`: a real staged rollout without a cluster.
//!
//! The binary starts the API emulator on loopback, installs the CRD, creates
//! nine cell namespaces in three rings with a consumer Deployment each, serves
//! scripted error rates over the Prometheus HTTP API, and runs the real
//! controller in-process against it. Revision A rolls out through every ring;
//! then revision B passes the canary, its error rate regresses in the early
//! ring, the gate fails and B is rolled back. The demo succeeds only if every
//! cell holds revision A again at the end.

mod kubelet;
mod metrics_source;
mod scenario;
mod view;

use std::path::PathBuf;
use std::time::Duration;

pub use metrics_source::{ErrorRates, MetricsSource};
pub use scenario::{Outcome, Scenario};
pub use view::Style;

/// How the demo runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub scenario: Scenario,
    /// Scales bake times: 2.0 runs the bakes twice as fast.
    pub speed: f64,
    /// Leave the emulator running at the end until Ctrl-C.
    pub keep: bool,
    pub style: Style,
    /// Where to write the kubeconfig (a temporary directory when unset).
    pub kubeconfig: Option<PathBuf>,
}

/// Why the demo could not tell its story.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the API emulator: {0}")]
    Emulator(#[from] kube_emulator::EmulatorError),
    #[error("cannot start the controller: {0}")]
    Controller(#[from] crate::controller::RunError),
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

pub async fn run(options: DemoOptions) -> Result<Outcome, DemoError> {
    scenario::run(options).await
}
