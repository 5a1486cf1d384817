//! `ringfence crd`: the CRD as YAML, e.g. `ringfence crd | kubectl apply -f -`.

use std::process::ExitCode;

use super::command::{CommandError, Run};

#[derive(Debug, clap::Args)]
pub struct CrdArgs {}

impl Run for CrdArgs {
    fn run(self) -> Result<ExitCode, CommandError> {
        crate::stdout::print(&crate::api::crd_yaml())?;
        Ok(ExitCode::SUCCESS)
    }
}
