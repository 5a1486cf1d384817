//! `ringfence demo`: watch a staged rollout and an automatic rollback, no cluster needed.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use super::command::{CommandError, Run};
use crate::demo::{self, DemoOptions, Scenario, Style};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Which story to tell.
    #[arg(long, value_enum, default_value = "regression")]
    scenario: Scenario,
    /// Scale bake times (2 = twice as fast).
    #[arg(long, default_value_t = 1.0, value_parser = parse_speed)]
    speed: f64,
    /// Keep the emulator running at the end, until Ctrl-C, to explore with kubectl.
    #[arg(long)]
    keep: bool,
    /// No colours (also when NO_COLOR is set or stdout is not a terminal).
    #[arg(long)]
    no_color: bool,
    /// Write the kubeconfig here instead of a temporary file.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

fn parse_speed(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.1..=10.0).contains(&v) => Ok(v),
        _ => Err(format!("{text:?} is not a speed from 0.1 to 10")),
    }
}

impl Run for DemoArgs {
    fn run(self) -> Result<ExitCode, CommandError> {
        let color = !self.no_color
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::io::stdout().is_terminal();
        let options = DemoOptions {
            scenario: self.scenario,
            speed: self.speed,
            keep: self.keep,
            style: Style { color },
            kubeconfig: self.kubeconfig,
        };
        let runtime = tokio::runtime::Runtime::new()?;
        let outcome = runtime.block_on(demo::run(options))?;
        Ok(if outcome.correct {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}
