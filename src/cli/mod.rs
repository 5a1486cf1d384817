//! The `ringfence` command line: one module per subcommand, each an arguments
//! type that implements [`Run`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod command;
pub mod controller;
pub mod crd;
pub mod demo;
pub mod emulator;
pub mod kubectl;
pub mod validate;

pub use command::{CommandError, Run};

/// Staged configuration rollouts for Kubernetes: canary rings, health gates, exact rollback.
#[derive(Debug, Parser)]
#[command(name = "ringfence", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Declares [`Command`] and its dispatch together, so that a new subcommand is
/// one line here (plus its module).
macro_rules! commands {
    ($($(#[$doc:meta])* $variant:ident($args:ty),)*) => {
        #[derive(Debug, Subcommand)]
        pub enum Command {
            $($(#[$doc])* $variant($args),)*
        }

        impl Run for Command {
            fn run(self) -> Result<ExitCode, CommandError> {
                match self {
                    $(Command::$variant(args) => args.run(),)*
                }
            }
        }
    };
}

commands! {
    /// Run the operator: reconcile ConfigRollouts in the cluster.
    Controller(controller::ControllerArgs),
    /// Print the ConfigRollout CustomResourceDefinition as YAML.
    Crd(crd::CrdArgs),
    /// Check ConfigRollout manifests offline, as the API server and the controller would.
    Validate(validate::ValidateArgs),
    /// Watch a staged rollout and an automatic rollback against an embedded API, no cluster needed.
    Demo(demo::DemoArgs),
    /// Serve an in-process Kubernetes API emulator on loopback, for kubectl and local runs.
    Emulator(emulator::EmulatorArgs),
    /// The kubectl plugin's commands (`kubectl ringfence ...` when installed as kubectl-ringfence).
    Kubectl(kubectl::KubectlArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn validate_takes_several_files() {
        let cli =
            Cli::try_parse_from(["ringfence", "validate", "-f", "a.yaml", "b.yaml", "-f", "-"])
                .unwrap();
        let Command::Validate(args) = cli.command else {
            panic!("not validate: {cli:?}")
        };
        assert_eq!(
            args.files,
            ["a.yaml", "b.yaml", "-"].map(std::path::PathBuf::from)
        );
        assert!(Cli::try_parse_from(["ringfence", "validate"]).is_err());
    }
}
