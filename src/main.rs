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
