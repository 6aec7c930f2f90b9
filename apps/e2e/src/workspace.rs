//! Where things are: the repository, the target directory, and the
//! workspace's binaries the tests run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::Result;

/// The repository root (this crate lives in `apps/e2e`).
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The profile directory the running test was built into
/// (`<target>/debug`): a test executable lives in `<profile>/deps/`.
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate the test executable: {e}"))?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{} is not in <target>/<profile>/deps/", exe.display()))
}

/// The target directory (`<target>`, the parent of the profile directory),
/// where state worth keeping between runs lives, such as the virtualenv.
pub fn target_dir() -> Result<PathBuf> {
    let profile = profile_dir()?;
    profile
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{} has no parent", profile.display()))
}

/// The workspace binaries the end-to-end tests run.
#[derive(Debug)]
pub struct Binaries {
    /// `slavealloc` (the daemon and admin command line).
    pub slavealloc: PathBuf,
    /// `runslave` (the boot-time client).
    pub runslave: PathBuf,
}

/// Builds `slavealloc` and `runslave` (once per test process) and returns
/// their paths.
///
/// A test may not rely on `cargo test` having built another package's
/// binaries (`cargo test -p slavealloc-e2e` does not), nor on them being
/// fresh, so it asks cargo, which does nothing when they are up to date.
/// `SLAVEALLOC_E2E_BIN_DIR` points at prebuilt binaries instead.
pub fn binaries() -> Result<&'static Binaries> {
    static BINARIES: OnceLock<Result<Binaries>> = OnceLock::new();
    BINARIES.get_or_init(build_binaries).as_ref().map_err(Clone::clone)
}

fn build_binaries() -> Result<Binaries> {
    let dir = match std::env::var_os("SLAVEALLOC_E2E_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(repo_dir())
                .args(["build", "--quiet", "-p", "slavealloc", "-p", "runslave", "--bins"]);
            // The same profile directory as this test, so `cargo test
            // --release` tests release binaries.
            let profile = profile_dir()?;
            if profile.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().map_err(|e| format!("cannot run cargo build: {e}"))?;
            if !status.success() {
                return Err(format!("cargo build -p slavealloc -p runslave failed: {status}"));
            }
            profile
        }
    };
    let binaries = Binaries {
        slavealloc: dir.join("slavealloc"),
        runslave: dir.join("runslave"),
    };
    for bin in [&binaries.slavealloc, &binaries.runslave] {
        if !bin.is_file() {
            return Err(format!("{} does not exist", bin.display()));
        }
    }
    Ok(binaries)
}
