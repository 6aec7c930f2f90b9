//! `slavealloc`: the allocator daemon (`serve`) and the admin command line.
//! Everything is in the library; this only parses the arguments.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's malloc: it returns freed memory to the
/// system soon after, so a burst (32 readers of a 100,000-slave list, a
/// boot storm) does not leave the daemon holding its peak.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    slavealloc::run(slavealloc::Cli::parse()).await
}
