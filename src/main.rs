//! The `ringfence` binary: parse the command line, run it, map errors to exit code 2.

use std::process::ExitCode;

use clap::Parser;
use ringfence::cli::{Cli, Run};

fn main() -> ExitCode {
    match Cli::parse().command.run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ringfence: {:#}", anyhow::Error::from_boxed(error));
            ExitCode::from(2)
        }
    }
}
