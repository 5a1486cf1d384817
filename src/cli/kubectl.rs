//! The kubectl plugin's commands: `ringfence kubectl ...`, and `kubectl ringfence ...` when
//! the binary is installed (or linked) as `kubectl-ringfence` on the PATH.
//!
//! Exit codes: 0 done; 1 the answer is no (an invalid plan, a request that means nothing
//! now, refused or unanswered); 2 the command could not run (no such rollout, no cluster,
//! a file that is not a ConfigRollout).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::command::{CommandError, Run};
use crate::api::parse_duration;
use crate::demo::Style;
use crate::engine::{Request, RevisionKey, Settings};
use crate::plugin::get::{self, Display, Format};
use crate::plugin::requests::{self, Ask};
use crate::plugin::{Connection, PluginError, Session, history, plan};
use crate::stdout::print;

/// The name the binary answers to as a kubectl plugin.
pub const PLUGIN_NAME: &str = "kubectl-ringfence";

/// Live rollouts, manual control, history and plans, as kubectl plugin commands.
#[derive(Debug, clap::Parser)]
pub struct KubectlArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace of the rollout (default: the context's namespace).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Rollouts of every namespace (`get` without a name).
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// A tree per rollout: rings, gates, conditions, rollback; one line each without NAME.
    Get(GetArgs),
    /// Hold the rollout where it is (sets spec.paused).
    Pause(RequestArgs),
    /// Let a paused rollout go on (clears spec.paused).
    Resume(RequestArgs),
    /// End the current ring's bake now (refused while a gate is failing).
    Promote(RequestArgs),
    /// Roll the revision in flight back now.
    Abort(RequestArgs),
    /// Run a RolledBack or Failed revision again from the first ring.
    Retry(RequestArgs),
    /// The revisions, how and when each ended, and why.
    History(HistoryArgs),
    /// What the rollout would do if it started now: rings, skipped namespaces, key-level diffs.
    Plan(PlanArgs),
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    pub name: Option<String>,
    /// Keep watching: redraws in place on a terminal, appends what changed otherwise.
    #[arg(short = 'w', long)]
    pub watch: bool,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Format,
}

#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    pub name: String,
    /// Wait until the controller answered, and print how.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "5m", value_parser = duration)]
    pub timeout: Duration,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    pub name: String,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Format,
}

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["name", "filename"]))]
pub struct PlanArgs {
    /// An applied rollout.
    pub name: Option<String>,
    /// A ConfigRollout manifest (`-` reads stdin).
    #[arg(short = 'f', long, value_name = "FILE")]
    pub filename: Option<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Format,
    /// Namespaces the operator trusts to target any namespace (its --trusted-namespaces).
    #[arg(long, value_delimiter = ',')]
    pub trusted_namespaces: Vec<String>,
    /// Where the operator's cluster Secrets are (its --cluster-namespace): rings in member
    /// clusters are resolved through them, with your read access to those Secrets.
    #[arg(long, default_value = "ringfence-system")]
    pub cluster_namespace: String,
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

fn style() -> Style {
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal();
    Style { color }
}

impl Run for KubectlArgs {
    fn run(self) -> Result<ExitCode, CommandError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(runtime.block_on(self.run_async())?)
    }
}

impl KubectlArgs {
    async fn run_async(self) -> Result<ExitCode, PluginError> {
        let connection = Connection {
            kubeconfig: self.kubeconfig,
            context: self.context,
            namespace: self.namespace,
            all_namespaces: self.all_namespaces,
        };
        // A manifest that is not valid needs no cluster to say so.
        let manifest = match &self.command {
            PluginCommand::Plan(PlanArgs {
                filename: Some(path),
                ..
            }) => match plan::read_manifest(path)? {
                Ok(rollout) => Some(rollout),
                Err(problems) => {
                    eprint!(
                        "{}",
                        problems
                            .iter()
                            .map(|p| format!("{p}\n"))
                            .collect::<String>()
                    );
                    return Ok(ExitCode::from(1));
                }
            },
            _ => None,
        };
        let session = Session::connect(&connection).await?;
        let yes_no = |ok: bool| ExitCode::from(if ok { 0 } else { 1 });
        match self.command {
            PluginCommand::Get(args) => {
                if args.watch {
                    let display = if std::io::stdout().is_terminal() {
                        Display::Redraw
                    } else {
                        Display::Append
                    };
                    get::watch(
                        &session,
                        args.name.as_deref(),
                        args.output,
                        display,
                        style(),
                    )
                    .await?;
                } else {
                    print(&get::get(&session, args.name.as_deref(), args.output, style()).await?)?;
                }
                Ok(ExitCode::SUCCESS)
            }
            PluginCommand::Pause(args) => request(&session, args, Ask::Pause).await.map(yes_no),
            PluginCommand::Resume(args) => request(&session, args, Ask::Resume).await.map(yes_no),
            PluginCommand::Promote(args) => request(&session, args, Ask::Request(Request::Promote))
                .await
                .map(yes_no),
            PluginCommand::Abort(args) => request(&session, args, Ask::Request(Request::Abort))
                .await
                .map(yes_no),
            PluginCommand::Retry(args) => request(&session, args, Ask::Request(Request::Retry))
                .await
                .map(yes_no),
            PluginCommand::History(args) => {
                let rollout = session.rollout(&args.name).await?;
                let rows = history::rows(&rollout);
                print(&match args.output {
                    Format::Text => history::table(&rows),
                    Format::Json => to_json(&rows)?,
                    Format::Yaml => to_yaml(&rows)?,
                })?;
                Ok(ExitCode::SUCCESS)
            }
            PluginCommand::Plan(args) => {
                let rollout = match (manifest, &args.name) {
                    (Some(rollout), _) => rollout,
                    (None, Some(name)) => session.rollout(name).await?,
                    (None, None) => {
                        return Err(PluginError::Input("plan needs NAME or -f FILE".into()));
                    }
                };
                // Only the operator holds the revision key: a Secret plan shows no revision.
                let settings = Settings {
                    trusted_namespaces: args.trusted_namespaces.into_iter().collect(),
                    ..Settings::new(RevisionKey::generate())
                };
                let plan =
                    plan::plan(&session, rollout, &settings, &args.cluster_namespace).await?;
                print(&match args.output {
                    Format::Text => plan::text(&plan),
                    Format::Json => to_json(&plan)?,
                    Format::Yaml => to_yaml(&plan)?,
                })?;
                Ok(yes_no(plan.valid))
            }
        }
    }
}

async fn request(session: &Session, args: RequestArgs, ask: Ask) -> Result<bool, PluginError> {
    let wait = args.wait.then_some(args.timeout);
    requests::run(session, &args.name, ask, wait, |line| {
        let _ = print(&format!("{line}\n"));
    })
    .await
}

fn to_json(value: &impl serde::Serialize) -> Result<String, PluginError> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(|e| PluginError::Input(e.to_string()))
}

fn to_yaml(value: &impl serde::Serialize) -> Result<String, PluginError> {
    serde_saphyr::to_string(value).map_err(|e| PluginError::Input(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[test]
    fn plugin_commands_take_kubectl_flags_anywhere() {
        KubectlArgs::command().debug_assert();
        let args = KubectlArgs::try_parse_from([
            PLUGIN_NAME,
            "promote",
            "flags",
            "-n",
            "platform",
            "--wait",
            "--timeout",
            "30s",
            "--context",
            "ctx",
        ])
        .unwrap();
        assert_eq!(args.namespace.as_deref(), Some("platform"));
        assert_eq!(args.context.as_deref(), Some("ctx"));
        let PluginCommand::Promote(r) = args.command else {
            panic!("not promote")
        };
        assert!(r.wait);
        assert_eq!(r.timeout, Duration::from_secs(30));
        let args =
            KubectlArgs::try_parse_from([PLUGIN_NAME, "-A", "get", "-w", "-o", "yaml"]).unwrap();
        assert!(args.all_namespaces);
        assert!(
            KubectlArgs::try_parse_from([PLUGIN_NAME, "plan"]).is_err(),
            "plan needs a name or -f"
        );
        assert!(KubectlArgs::try_parse_from([PLUGIN_NAME, "plan", "x", "-f", "y"]).is_err());
    }
}
