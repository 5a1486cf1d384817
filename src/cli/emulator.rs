//! `ringfence emulator`: a local Kubernetes API to point kubectl at.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::command::{CommandError, Run};
use kube_emulator::Emulator;

#[derive(Debug, clap::Args)]
pub struct EmulatorArgs {
    /// Where to write the kubeconfig that points at the emulator.
    #[arg(long, env = "RINGFENCE_EMULATOR_KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Loopback port to listen on (a free one when 0).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Directory of manifests (e.g. CRDs) to install before serving.
    #[arg(long)]
    pub crds: Option<PathBuf>,
}

impl Run for EmulatorArgs {
    fn run(self) -> Result<ExitCode, CommandError> {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(serve(self))?;
        Ok(ExitCode::SUCCESS)
    }
}

async fn serve(args: EmulatorArgs) -> anyhow::Result<()> {
    let handle = Emulator::builder()
        .port(args.port)
        .admission(kube_emulator::validation::admission_hook())
        .start()
        .await
        .context("starting the emulator")?;
    handle
        .write_kubeconfig(&args.kubeconfig)
        .with_context(|| format!("writing {}", args.kubeconfig.display()))?;
    if let Some(dir) = &args.crds {
        let n = handle
            .apply_dir(dir)
            .with_context(|| format!("installing manifests from {}", dir.display()))?;
        println!("Installed {n} objects from {}", dir.display());
    }
    let kubeconfig = args.kubeconfig.display();
    println!("Kubernetes API emulator listening on {}", handle.url());
    println!("Kubeconfig written to {kubeconfig}");
    println!("Try: kubectl --kubeconfig {kubeconfig} get namespaces");
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    handle.shutdown().await;
    Ok(())
}
