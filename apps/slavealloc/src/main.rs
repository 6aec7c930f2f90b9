//! `slavealloc`: the allocator daemon (`serve`) and the admin command line.
//!
//! This binary only parses arguments, reads configuration, wires adapters
//! and calls one library function per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin;
mod keygen;
mod serve;

/// Hands each Buildbot worker its master.
#[derive(Debug, Parser)]
#[command(name = "slavealloc", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    admin: admin::GlobalArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the allocator daemon: /gettac, the REST API, the web UI.
    Serve(serve::ServeArgs),
    /// Make the ed25519 key pair that signs tacs (signing_key in the tac table) and
    /// that `runslave --pubkey` checks them with.
    Keygen(keygen::KeygenArgs),
    #[command(flatten)]
    Admin(admin::AdminCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Keygen(args) => keygen::run(&args),
        Command::Admin(cmd) => admin::run(cmd, cli.admin).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One clear line, no backtrace: the cause chain in words.
            eprintln!("slavealloc: {e:#}");
            ExitCode::FAILURE
        }
    }
}
