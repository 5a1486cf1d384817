//! Command-line interface of the `ringfence` binary.

#[cfg(feature = "emulator")]
mod emulator;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ringfence", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve an in-process Kubernetes API emulator on loopback, for kubectl and local runs.
    #[cfg(feature = "emulator")]
    Emulator(emulator::EmulatorArgs),
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            #[cfg(feature = "emulator")]
            Command::Emulator(args) => emulator::run(args).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
