//! Shared by the integration tests: requests, renderers and the Python
//! interpreters that judge the output.
#![allow(dead_code)] // each test file uses a different part

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use slavealloc_domain::ports::{TacBody, TacHeader, TacRequest, TacValues};
use slavealloc_domain::TacTemplate;

/// The header's time in golden files: Sun Nov  8 14:10:44 2026 UTC.
pub const GOLDEN_TIME: u64 = 1_794_147_044;
/// The header's host in golden files.
pub const GOLDEN_HOST: &str = "slavealloc.example.com";

pub fn header() -> TacHeader {
    TacHeader {
        generated: UNIX_EPOCH + Duration::from_secs(GOLDEN_TIME),
        host: GOLDEN_HOST.to_owned(),
    }
}

pub fn values(slavename: &str, basedir: &str, passwd: &str) -> TacValues {
    TacValues {
        buildmaster_host: "bm01.build.example.com".to_owned(),
        port: 9001,
        slavename: slavename.to_owned(),
        basedir: basedir.to_owned(),
        passwd: passwd.to_owned(),
    }
}

pub fn enabled(template: Option<TacTemplate>, values: TacValues) -> TacRequest {
    TacRequest {
        header: header(),
        body: TacBody::Enabled { template, values },
    }
}

pub fn disabled(slavename: &str) -> TacRequest {
    TacRequest {
        header: header(),
        body: TacBody::Disabled {
            slavename: slavename.to_owned(),
        },
    }
}

pub fn stored(name: &str, text: &str) -> TacTemplate {
    TacTemplate {
        tplid: 7,
        name: name.to_owned(),
        template: text.to_owned(),
    }
}

/// A legacy template as the original's databases hold them: Python `%`
/// placeholders, every value through `%r` except the port, and a `%%`.
pub const LEGACY_TEMPLATE: &str = "\
from twisted.application import service
from buildbot_worker.bot import Worker

buildmaster_host = %(buildmaster_host)r
port = %(port)d
workername = %(slavename)r
passwd = %(passwd)r
basedir = %(basedir)r
# 100%% of the values above are Python literals
application = service.Application('buildbot-worker')
s = Worker(buildmaster_host, port, workername, passwd, basedir, 600)
s.setServiceParent(application)
";

/// The same in minijinja, with a conditional, a filter and a concatenation,
/// all of which must still come out as literals.
pub const MINIJINJA_TEMPLATE: &str = "\
{#- a stored minijinja template -#}
from twisted.application import service
from buildbot_worker.bot import Worker

buildmaster_host = {{ buildmaster_host }}
port = {{ port }}
workername = {{ slavename }}
passwd = {{ passwd }}
basedir = {{ basedir }}
logdir = {{ basedir ~ '/logs' }}
{%- if port > 9000 %}
high_port = True
{%- endif %}
application = service.Application('buildbot-worker')
s = Worker(buildmaster_host, port, workername, passwd, basedir, 600)
s.setServiceParent(application)
";

/// `python3`: required; the tests fail without it. Resolved to the real
/// executable once, because wrappers such as pyenv's shims cost a tenth of
/// a second per start.
pub fn python3() -> &'static str {
    static FOUND: OnceLock<String> = OnceLock::new();
    FOUND.get_or_init(|| {
        let found = interpreter("python3", 3);
        found.unwrap_or_else(|| panic!("these tests need python3 on PATH"))
    })
}

/// A Python 2.7 interpreter, if there is one: `$SLAVEALLOC_TEST_PYTHON2`,
/// `python2` or `python2.7`. The buildslave templates and the disabled tac
/// target Python 2 too, but few machines still have it, so its checks are
/// skipped (with a note) when none is found.
pub fn python2() -> Option<&'static str> {
    static FOUND: OnceLock<Option<String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let candidates = std::env::var("SLAVEALLOC_TEST_PYTHON2")
                .ok()
                .into_iter()
                .chain(["python2".to_owned(), "python2.7".to_owned()]);
            let found = candidates.into_iter().find_map(|p| interpreter(&p, 2));
            if found.is_none() {
                eprintln!("note: no Python 2 found (set SLAVEALLOC_TEST_PYTHON2); Python 2 checks skipped");
            }
            found
        })
        .as_deref()
}

/// python3, and python2 when there is one.
pub fn pythons() -> Vec<&'static str> {
    std::iter::once(python3()).chain(python2()).collect()
}

/// The executable behind `python` if it is Python `major`.
fn interpreter(python: &str, major: u32) -> Option<String> {
    let out = Command::new(python)
        .args(["-c", "import sys; print(sys.version_info[0]); print(sys.executable)"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let stdout = String::from_utf8(out.stdout).ok()?;
    let mut lines = stdout.lines();
    (lines.next()?.trim().parse() == Ok(major)).then(|| lines.next().map(str::to_owned))?
}

pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// Runs `python` with `args`, feeding `stdin`.
pub fn run(python: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(python)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// One tac for `check_tac.py`.
#[derive(Debug, serde::Serialize)]
pub struct Case {
    pub name: String,
    /// Rendered from the values under test.
    pub tac: String,
    /// The same template rendered from harmless values.
    pub reference: String,
    /// Module-level variables and the values they must hold.
    pub expected: serde_json::Value,
}

/// Runs `check_tac.py` on `cases` under every Python; the error lists what
/// it found.
pub fn check_tacs(cases: &[Case]) -> Result<(), String> {
    let input = serde_json::to_string(cases).unwrap();
    let script = script("check_tac.py");
    for python in pythons() {
        let out = run(python, &[script.to_str().unwrap()], &input);
        if !out.status.success() {
            return Err(format!("{python}: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    Ok(())
}

/// Executes `tac` under `python` against stand-in modules (`run_tac.py`)
/// and returns what it constructed and called.
pub fn run_tac(python: &str, tac: &str) -> serde_json::Value {
    let out = run(python, &[script("run_tac.py").to_str().unwrap()], tac);
    assert!(
        out.status.success(),
        "{python} failed to run the tac: {}\n{tac}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The golden file `name`: compared with `actual`, or rewritten when
/// `UPDATE_GOLDEN=1`.
pub fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
    assert!(
        expected == actual,
        "{} differs from the rendered tac (UPDATE_GOLDEN=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

/// When the file was generated, for tests that need a time other than the
/// golden one.
pub fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}
