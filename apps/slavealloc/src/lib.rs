//! # slavealloc
//!
//! The allocator daemon (`serve`) and the admin command line, as a library
//! so that other release tools and tests start the whole daemon the way
//! the binary does ([`serve::launch`], [`serve::Daemon`]) and reuse the
//! admin operations over any [`slavealloc_domain::AdminApi`] ([`admin`]).
//! The `slavealloc` binary only parses its arguments and calls [`run`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The exit codes every subcommand keeps to, listed in `--help`.
pub const EXIT_CODES: &str = "Exit codes:
  0  done, or already so (enabling an enabled slave, locking to its lock)
  1  not done: refused by the server or the database, not found, unreachable;
     `drift`: the fleet drifted; `db status`: migrations pending or differing
  2  a usage error (an unknown option, a missing argument)";

pub mod admin;
pub mod keygen;
pub mod poller;
pub mod redact;
pub mod serve;

/// Hands each Buildbot worker its master.
#[derive(Debug, Parser)]
#[command(name = "slavealloc", version, about, propagate_version = true, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// `-A/--api` and `--token` before the subcommand's name, as the
    /// original took them; only the REST API subcommands use them.
    #[command(flatten)]
    api: admin::ApiArgs,
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

/// Runs one parsed command line; errors are printed as one line on stderr.
pub async fn run(cli: Cli) -> ExitCode {
    let outer_api = cli.api.api.is_some() || cli.api.token.is_some();
    let uses_api = matches!(cli.command, Command::Admin(admin::AdminCommand::Api(_)));
    let result = match cli.command {
        _ if outer_api && !uses_api => Err(anyhow::anyhow!(
            "-A/--api and --token are options of the REST API subcommands (gettac, lock, list, ...) only"
        )),
        Command::Serve(args) => serve::run(args).await,
        Command::Keygen(args) => keygen::run(&args),
        Command::Admin(cmd) => admin::run(cmd, cli.api).await,
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
