//! What every subcommand is: arguments that run.

use std::process::ExitCode;

/// What a subcommand fails with when it cannot do its job at all (its findings,
/// such as invalid manifests, are its exit code instead).
pub type CommandError = Box<dyn std::error::Error + Send + Sync>;

/// A subcommand, run from its parsed arguments.
pub trait Run {
    fn run(self) -> Result<ExitCode, CommandError>;
}
