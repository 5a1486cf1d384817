//! `ringfence controller`: run the operator against the cluster in the kubeconfig, or the
//! one it runs in.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Args};
use futures::FutureExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::{oneshot, watch};

use super::command::{CommandError, Run};
use crate::controller::{Operator, Options, RevisionKeySource, shutdown_signal};
use crate::engine::{AddressPolicy, HostPattern};
use crate::leader::{LeaderElection, LeaderElectionArgs};
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

    /// Hosts, `*.suffix` names, addresses and CIDRs gates may call (comma-separated; empty:
    /// any address but the refused ones: link-local, cloud metadata, loopback, the API server).
    #[arg(long, env = "RINGFENCE_GATE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub gate_allowed_hosts: Vec<HostPattern>,

    /// Secret holding the key for Secret revisions (data key `key`).
    #[arg(
        long,
        env = "RINGFENCE_REVISION_KEY_SECRET",
        default_value = "ringfence-revision-key"
    )]
    pub revision_key_secret: String,

    /// Namespace of the revision key Secret (in a pod: its own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "ringfence-system")]
    pub revision_key_namespace: String,

    /// Namespace of the Secrets registering member clusters, and of member targets' prior
    /// records (default: the revision key's namespace, the operator's own).
    #[arg(long, env = "RINGFENCE_CLUSTER_NAMESPACE")]
    pub cluster_namespace: Option<String>,

    /// Generate the revision key Secret when it does not exist (false: it must exist).
    #[arg(long, env = "RINGFENCE_REVISION_KEY_GENERATE", default_value_t = true, action = ArgAction::Set)]
    pub revision_key_generate: bool,

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

    /// Target writes (and prior records) in flight at once per rollout: the controller
    /// writes a ring of thousands at the API server's speed; lower it to spare a small one.
    #[arg(long, env = "RINGFENCE_MAX_INFLIGHT_WRITES", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_inflight_writes: u16,

    /// This replica's name in events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,

    // Boxed to keep `Command` small.
    #[command(flatten)]
    pub leader_election: Box<LeaderElectionArgs>,
}

impl ControllerArgs {
    /// The client, and the API server's addresses, which gates may not call.
    async fn client(&self) -> Result<(Client, Vec<HostPattern>), CommandError> {
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)?;
                Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
            }
            None => Config::infer().await?,
        };
        let api_server = api_server_hosts(&config).await;
        Ok((Client::try_from(config)?, api_server))
    }

    fn options(&self, leader: Option<watch::Receiver<bool>>) -> Options {
        Options {
            cluster_namespace: self
                .cluster_namespace
                .clone()
                .unwrap_or_else(|| self.revision_key_namespace.clone()),
            namespace: self.namespace.clone(),
            trusted_namespaces: self
                .trusted_namespaces
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>(),
            revision_key: RevisionKeySource::Secret {
                namespace: self.revision_key_namespace.clone(),
                name: self.revision_key_secret.clone(),
                create: self.revision_key_generate,
            },
            gate_addresses: AddressPolicy::new(self.gate_allowed_hosts.clone()),
            concurrency: self.concurrency,
            max_inflight_writes: usize::from(self.max_inflight_writes),
            metrics_addr: self.metrics_addr,
            health_addr: self.health_addr,
            instance: self.instance.clone(),
            leader,
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
            let (client, api_server) = self.client().await?;
            let options = |leader| {
                let mut options = self.options(leader);
                for host in &api_server {
                    options.gate_addresses.refuse_api_server(host.clone());
                }
                options
            };
            let Some(config) = self.leader_election.config()? else {
                Operator::new(client, options(None))
                    .await?
                    .run(shutdown_signal(), log_listen)
                    .await?;
                return Ok(ExitCode::SUCCESS);
            };
            let election = LeaderElection::new(client.clone(), config)?;
            tracing::info!(identity = election.identity(), "competing for leadership");
            let operator = Operator::new(client, options(Some(election.subscribe()))).await?;
            // The Lease is released only once the operator stopped writing.
            let (stopped, release) = oneshot::channel::<()>();
            let mut election = tokio::spawn(election.run(release.map(|_| ())));
            let operator = operator.run(shutdown_signal(), log_listen);
            tokio::select! {
                result = operator => {
                    let _ = stopped.send(());
                    result?;
                    election.await??;
                    Ok(ExitCode::SUCCESS)
                }
                // Before shutdown the election ends only by losing the Lease or panicking:
                // exit, so a fresh process competes again without in-flight reconciles.
                ended = &mut election => {
                    match ended {
                        Ok(Err(e)) => tracing::error!(error = %e, "exiting"),
                        Ok(Ok(())) => tracing::error!("leader election stopped; exiting"),
                        Err(e) => tracing::error!(error = %e, "leader election task failed; exiting"),
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        })
    }
}

/// The API server's host from the client configuration, the addresses it resolves to, and
/// in a pod the `kubernetes` Service's address.
async fn api_server_hosts(config: &Config) -> Vec<HostPattern> {
    let mut hosts = Vec::new();
    let url = &config.cluster_url;
    if let Some(host) = url.host() {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(pattern) = host.parse::<HostPattern>() {
            hosts.push(pattern);
        }
        let port = url.port_u16().unwrap_or(443);
        if let Ok(addrs) = tokio::net::lookup_host((host, port)).await {
            hosts.extend(addrs.map(|a| HostPattern::Net(crate::engine::Cidr::host(a.ip()))));
        }
    }
    if let Some(ip) = std::env::var("KUBERNETES_SERVICE_HOST")
        .ok()
        .and_then(|h| h.parse::<std::net::IpAddr>().ok())
    {
        hosts.push(HostPattern::Net(crate::engine::Cidr::host(ip)));
    }
    hosts
}

fn log_listen(addrs: &[std::net::SocketAddr]) {
    tracing::info!(?addrs, "serving health and metrics");
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::RevisionKeySource;
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
            "--gate-allowed-hosts=prometheus.monitoring,*.gates.svc,10.0.0.0/8",
            "--revision-key-secret=rk",
            "--revision-key-namespace=ops",
            "--revision-key-generate=false",
        ])
        .unwrap();
        let Command::Controller(args) = cli.command else {
            panic!("not controller: {cli:?}")
        };
        let options = args.options(None);
        assert_eq!(options.namespace.as_deref(), Some("platform"));
        assert_eq!(options.trusted_namespaces.len(), 2);
        assert_eq!(options.concurrency, 3);
        assert_eq!(options.gate_addresses.allowed().len(), 3);
        assert!(matches!(
            &options.revision_key,
            RevisionKeySource::Secret { namespace, name, create: false }
                if namespace == "ops" && name == "rk"
        ));
        let err = Cli::try_parse_from([
            "ringfence",
            "controller",
            "--gate-allowed-hosts=10.0.0.0/40",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--gate-allowed-hosts") && err.contains("prefix"),
            "{err}"
        );
        assert_eq!(args.log_format, LogFormat::Json);
        assert!(Cli::try_parse_from(["ringfence", "controller", "--concurrency=0"]).is_err());
        assert!(args.leader_election.config().unwrap().is_none());
    }

    #[test]
    fn leader_election_flags_are_the_charts() {
        let cli = Cli::try_parse_from([
            "ringfence",
            "controller",
            "--leader-elect",
            "--leader-elect-lease-name=ringfence",
            "--leader-elect-namespace=ringfence-system",
            "--leader-elect-lease-duration=15s",
            "--leader-elect-renew-deadline=10s",
            "--leader-elect-retry-period=2s",
        ])
        .unwrap();
        let Command::Controller(args) = cli.command else {
            panic!("not controller: {cli:?}")
        };
        let config = args.leader_election.config().unwrap().expect("enabled");
        assert_eq!(config.lease_name, "ringfence");
        assert_eq!(config.namespace, "ringfence-system");
        assert_eq!(config.timing.lease_duration.as_secs(), 15);
        let cli = Cli::try_parse_from([
            "ringfence",
            "controller",
            "--leader-elect",
            "--leader-elect-renew-deadline=20s",
        ])
        .unwrap();
        let Command::Controller(args) = cli.command else {
            panic!("not controller: {cli:?}")
        };
        assert!(
            args.leader_election.config().is_err(),
            "a renew deadline beyond the lease duration is rejected"
        );
    }
}
