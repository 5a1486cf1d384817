//! The `ringfence` binary: parse the command line, run it, map errors to exit code 2.
//!
//! Installed (or linked) as `kubectl-ringfence`, it is the kubectl plugin: kubectl runs
//! it for `kubectl ringfence ...` with the arguments after the plugin name.

use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use ringfence::cli::kubectl::{KubectlArgs, PLUGIN_NAME};
use ringfence::cli::{Cli, CommandError, Run};

fn main() -> ExitCode {
    let invoked_as = std::env::args_os()
        .next()
        .and_then(|arg0| Path::new(&arg0).file_name().map(|n| n.to_os_string()));
    let plugin = invoked_as.is_some_and(|name| name == PLUGIN_NAME);
    let (program, result) = if plugin {
        ("kubectl ringfence", run_plugin())
    } else {
        ("ringfence", Cli::parse().command.run())
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{program}: {:#}", anyhow::Error::from_boxed(error));
            ExitCode::from(2)
        }
    }
}

fn run_plugin() -> Result<ExitCode, CommandError> {
    let matches = KubectlArgs::command()
        .name("kubectl ringfence")
        .bin_name("kubectl ringfence")
        .get_matches();
    let args = KubectlArgs::from_arg_matches(&matches).map_err(|e| e.exit())?;
    args.run()
}
