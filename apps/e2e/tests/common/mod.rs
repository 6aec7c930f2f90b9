//! Helpers shared by the deployment tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use slavealloc_e2e::daemon::Slavealloc;
use slavealloc_e2e::process::{run_bounded, Finished};
use slavealloc_e2e::workspace::{binaries, repo_dir};

pub const LIMIT: Duration = Duration::from_secs(120);

pub fn deploy_dir() -> PathBuf {
    repo_dir().join("apps/slavealloc/deploy")
}

pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether `tool` is on PATH. When it is not, a check that needs it is
/// skipped, except under CI=true for the tools that scripts/test.sh
/// installs, where a missing tool is a broken CI machine.
pub fn have(tool: &str, required_in_ci: bool) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            !(required_in_ci && std::env::var("CI").as_deref() == Ok("true")),
            "{tool} is not installed, and CI=true: scripts/test.sh installs it"
        );
        eprintln!("SKIPPED: {tool} is not installed");
    }
    found
}

pub fn run(name: &str, cmd: &mut Command, dir: &Path) -> Finished {
    run_bounded(name, cmd, &dir.join(format!("{}.log", name.replace(' ', "-"))), LIMIT).unwrap()
}

/// A SQLite database in `dir` loaded with the sample fleet; its URL.
pub fn sample_db(dir: &Path) -> String {
    let db = format!("sqlite://{}", dir.join("slavealloc.db").display());
    let done = run(
        "dbinit",
        Command::new(&binaries().unwrap().slavealloc)
            .args(["dbinit", "--db", &db])
            .arg(repo_dir().join("fixtures/sample-fleet.json")),
        dir,
    );
    assert!(done.status.success(), "{}", done.output);
    db
}

pub fn start_daemon(dir: &Path, db: &str) -> Slavealloc {
    Slavealloc::start(&binaries().unwrap().slavealloc, &["--db", db], dir).unwrap()
}

/// An HTTP answer: status, headers we look at, body.
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

/// GET without following redirects; any status is an answer.
pub fn get(url: &str) -> Answer {
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let resp = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    Answer {
        status: resp.status(),
        location: resp.header("Location").map(str::to_owned),
        body: resp.into_string().unwrap(),
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
