//! The unit tests of `contrib/slavealloc_workers.py` (Python's stdlib
//! `unittest` against a throwaway HTTP server on loopback: good answers,
//! errors with and without the cache, the cache's mode and atomic
//! replacement, redirects, timeouts), run by `cargo test`: with python3
//! always (a missing python3 fails under CI=true), and with Python 2.7 as
//! well when one runs (`SLAVEALLOC_TEST_PYTHON2`, else `python2.7` on PATH),
//! since the helper promises to stay importable there.
//! worker_lists.rs runs the helper inside a real Buildbot master.

// Helpers outside #[test] functions too: a panic is the failure report here.
#![allow(clippy::unwrap_used)]

use std::ffi::OsString;
use std::process::{Command, Stdio};
use std::time::Duration;

use slavealloc_e2e::process::run_bounded;
use slavealloc_e2e::workspace::repo_dir;

/// The tests take about a second; the bound only ends a hung run.
const LIMIT: Duration = Duration::from_secs(120);

/// Whether `python --version` runs (a pyenv shim for a version that is
/// not selected is on PATH but does not run).
fn runs(python: &OsString) -> bool {
    Command::new(python)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs the helper's unit tests with `python`; asserts they all pass.
fn unit_tests(python: &OsString) {
    let dir = tempfile::tempdir().unwrap();
    let done = run_bounded(
        "python -m unittest",
        Command::new(python)
            .args(["-m", "unittest", "-v", "test_slavealloc_workers"])
            .current_dir(repo_dir().join("contrib"))
            // Leave no __pycache__ or .pyc in the source tree.
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        &dir.path().join("unittest.log"),
        LIMIT,
    )
    .unwrap();
    assert!(
        done.status.success(),
        "{python:?}: the helper's unit tests failed ({}):\n{}",
        done.status,
        done.output
    );
    // A run that found no test would pass too: count them.
    let ran: usize = done
        .output
        .lines()
        .find_map(|l| l.strip_prefix("Ran ")?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    assert!(ran >= 10, "{python:?} ran {ran} tests:\n{}", done.output);
}

#[test]
fn the_worker_list_helper_passes_its_unit_tests_on_python3() {
    let python: OsString = "python3".into();
    if !runs(&python) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 does not run, and CI=true"
        );
        eprintln!("SKIPPED: python3 does not run");
        return;
    }
    unit_tests(&python);
}

#[test]
fn the_worker_list_helper_passes_its_unit_tests_on_python2_when_there_is_one() {
    let python = std::env::var_os("SLAVEALLOC_TEST_PYTHON2").unwrap_or_else(|| "python2.7".into());
    if !runs(&python) {
        eprintln!("SKIPPED: no Python 2.7 ({python:?}; set SLAVEALLOC_TEST_PYTHON2 to run these)");
        return;
    }
    unit_tests(&python);
}
