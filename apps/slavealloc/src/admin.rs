//! The admin subcommands. (Being written: issue 4.)

use std::process::ExitCode;

/// The admin subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Print the version and exit.
    Version,
}

/// Runs one admin subcommand.
pub async fn run(cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AdminCommand::Version => println!("slavealloc {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(ExitCode::SUCCESS)
}
