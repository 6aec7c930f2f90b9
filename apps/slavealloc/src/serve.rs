//! `slavealloc serve`. (Being written: issue 3.)

use std::process::ExitCode;

/// Options of `slavealloc serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(_args: ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("serve is not built yet")
}
