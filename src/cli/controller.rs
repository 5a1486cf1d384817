//! `ringfence controller`: run the operator against the cluster in the kubeconfig, or the
//! one it runs in.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::{CommandError, Run};
use crate::controller::{Operator, Options, shutdown_signal};
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Kubeconfig to use; without it, KUBECONFIG, ~/.kube/config, then the in-cluster config.
    #[arg(long, env = "RINGFENCE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Watch the ConfigRollouts of this namespace only (default: all namespaces).
    #[arg(long, env = "RINGFENCE_NAMESPACE")]
    pub namespace: Option<String>,

    /// Namespaces whose ConfigRollouts may target any namespace (comma-separated).
    #[arg(long, env = "RINGFENCE_TRUSTED_NAMESPACES", value_delimiter = ',')]
    pub trusted_namespaces: Vec<String>,

    /// Address serving /metrics.
    #[arg(long, env = "RINGFENCE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Address serving /healthz and /readyz (may equal --metrics-addr).
    #[arg(long, env = "RINGFENCE_HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    pub health_addr: SocketAddr,

    /// Log output: text for people, json for log pipelines.
    #[arg(long, env = "RINGFENCE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// ConfigRollouts reconciled at once.
    #[arg(long, env = "RINGFENCE_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// This replica's name in events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
}

impl ControllerArgs {
    async fn client(&self) -> Result<Client, CommandError> {
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)?;
                Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
            }
            None => Config::infer().await?,
        };
        Ok(Client::try_from(config)?)
    }

    fn options(&self) -> Options {
        Options {
            namespace: self.namespace.clone(),
            trusted_namespaces: self
                .trusted_namespaces
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>(),
            concurrency: self.concurrency,
            metrics_addr: self.metrics_addr,
            health_addr: self.health_addr,
            instance: self.instance.clone(),
        }
    }
}

impl Run for ControllerArgs {
    fn run(self) -> Result<ExitCode, CommandError> {
        telemetry::init(self.log_format)?;
        // Once per process, before any TLS client is built.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(async move {
            let client = self.client().await?;
            let operator = Operator::new(client, self.options()).await?;
            operator
                .run(shutdown_signal(), |addrs| {
                    tracing::info!(?addrs, "serving health and metrics");
                })
                .await?;
            Ok(ExitCode::SUCCESS)
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};
    use crate::telemetry::LogFormat;

    #[test]
    fn controller_flags_parse() {
        let cli = Cli::try_parse_from([
            "ringfence",
            "controller",
            "--namespace=platform",
            "--trusted-namespaces=ops,platform",
            "--metrics-addr=127.0.0.1:9000",
            "--health-addr=127.0.0.1:9001",
            "--log-format=json",
            "--concurrency=3",
        ])
        .unwrap();
        let Command::Controller(args) = cli.command else {
            panic!("not controller: {cli:?}")
        };
        let options = args.options();
        assert_eq!(options.namespace.as_deref(), Some("platform"));
        assert_eq!(options.trusted_namespaces.len(), 2);
        assert_eq!(options.concurrency, 3);
        assert_eq!(args.log_format, LogFormat::Json);
        assert!(Cli::try_parse_from(["ringfence", "controller", "--concurrency=0"]).is_err());
    }
}
