//! The Python virtualenv holding Buildbot (master and worker), created on
//! first use from `apps/e2e/requirements.txt`.
//!
//! It lives under the target directory (`<target>/e2e-venv`), outside the
//! clone, so that CI's fresh clones reuse it; it is rebuilt whenever
//! requirements.txt changes, and built from nothing on a fresh machine.
//! `SLAVEALLOC_E2E_VENV` puts it elsewhere, `SLAVEALLOC_E2E_PYTHON` picks the
//! interpreter that creates it (default `python3`).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::process::run_bounded;
use crate::workspace::{repo_dir, target_dir};
use crate::Result;

/// Written into the venv, with the requirements it was built from, once pip
/// has succeeded: a venv without it (an interrupted install) is rebuilt.
const STAMP: &str = ".slavealloc-e2e-requirements";

/// pip downloads about 30 packages; a generous bound still ends a hung
/// install.
const INSTALL_LIMIT: Duration = Duration::from_secs(900);

/// A ready virtualenv.
#[derive(Debug)]
pub struct Venv {
    dir: PathBuf,
}

impl Venv {
    /// The shared virtualenv, created or refreshed on first use in this
    /// process; other processes building it at the same time wait on a file
    /// lock instead of racing pip.
    pub fn shared() -> Result<&'static Venv> {
        static VENV: OnceLock<Result<Venv>> = OnceLock::new();
        VENV.get_or_init(|| {
            let dir = match std::env::var_os("SLAVEALLOC_E2E_VENV") {
                Some(dir) => PathBuf::from(dir),
                None => target_dir()?.join("e2e-venv"),
            };
            Venv::ensure(&dir, &repo_dir().join("apps/e2e/requirements.txt"))
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    /// Makes `dir` a virtualenv with exactly `requirements` installed.
    pub fn ensure(dir: &Path, requirements: &Path) -> Result<Venv> {
        let wanted =
            fs::read_to_string(requirements).map_err(|e| format!("cannot read {}: {e}", requirements.display()))?;
        let parent = dir.parent().ok_or_else(|| format!("{} has no parent", dir.display()))?;
        fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        let lock_path = dir.with_extension("lock");
        let lock = File::create(&lock_path).map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
        lock.lock()
            .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;

        let venv = Venv { dir: dir.to_path_buf() };
        if fs::read_to_string(dir.join(STAMP)).is_ok_and(|have| have == wanted) {
            return Ok(venv);
        }
        eprintln!(
            "slavealloc-e2e: creating the Buildbot virtualenv in {} (once; later runs reuse it)",
            dir.display()
        );
        let log = dir.with_extension("log");
        let python = std::env::var_os("SLAVEALLOC_E2E_PYTHON").unwrap_or_else(|| "python3".into());
        let steps: [(&str, Command); 2] = [
            ("python3 -m venv", {
                let mut c = Command::new(python);
                c.args(["-m", "venv", "--clear"]).arg(dir);
                c
            }),
            ("pip install", {
                let mut c = Command::new(venv.bin("python"));
                c.args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    "-r",
                ])
                .arg(requirements);
                c
            }),
        ];
        for (what, mut cmd) in steps {
            let done = run_bounded(what, &mut cmd, &log, INSTALL_LIMIT)?;
            if !done.status.success() {
                return Err(format!(
                    "{what} failed ({}) while creating the virtualenv {}:\n{}",
                    done.status,
                    dir.display(),
                    crate::process::tail(&log, 30)
                ));
            }
        }
        fs::write(dir.join(STAMP), &wanted).map_err(|e| format!("cannot write the venv stamp: {e}"))?;
        Ok(venv)
    }

    /// The path of an executable of the virtualenv, e.g. `buildbot-worker`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }
}
