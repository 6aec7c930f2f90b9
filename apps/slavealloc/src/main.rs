//! `slavealloc`: the allocator daemon (`serve`) and the admin command line.
//! Everything is in the library; this only parses the arguments.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    slavealloc::run(slavealloc::Cli::parse()).await
}
