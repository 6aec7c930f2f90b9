//! `runslave --supervise` as a service manager runs it: the real binary, a
//! tiny allocator on 127.0.0.1, and fake workers (shell scripts) that
//! record each start and then exit, or wait, as a test tells them.
//!
//! Nothing here asserts how fast anything is: each test waits, with a
//! generous deadline, for what runslave says or the worker records.
#![cfg(unix)]
// Test helpers outside #[test] functions: a panic is the failure report we want.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{script, Answer, Server};

const TAC_A: &str = "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n# generated: x on alloc\n\nbuildmaster_host = 'bm01.example.com'\nport = 9001\n";
const TAC_B: &str = "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n# generated: y on alloc\n\nbuildmaster_host = 'bm02.example.com'\nport = 9002\n";
const DISABLED: &str = "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n# generated: x on alloc\n\nimport sys\nprint(\"SLAVE DISABLED; NOT STARTING\")\nsys.exit(0)\n";

/// How long a test waits for something before it fails: long, because a
/// busy CI machine is slow, and reached only when something is wrong.
const DEADLINE: Duration = Duration::from_secs(60);

/// A fake worker: a script in a directory of its own that appends a line
/// `<its arguments> | <the tac's buildmaster_host line>` to `runs` at each
/// start, then runs `body` (`DIR` in either is its directory). `prelude` runs first (a trap, before the start
/// is recorded, so a test that saw the start may signal it).
struct Worker {
    dir: tempfile::TempDir,
    name: &'static str,
}

impl Worker {
    fn new(basedir: &Path, prelude: &str, body: &str) -> Self {
        Self::named("fake-worker", basedir, prelude, body)
    }

    fn named(name: &'static str, basedir: &Path, prelude: &str, body: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        script(
            &dir.path().join(name),
            &format!(
                "#!/bin/sh\n{}\necho \"$* | $(grep buildmaster_host '{}/buildbot.tac') | $(pwd)\" >> '{d}/runs'\n{}\n",
                prelude.replace("DIR", &d.to_string()),
                basedir.display(),
                body.replace("DIR", &d.to_string()),
            ),
        );
        Worker { dir, name }
    }

    fn cmd(&self) -> String {
        self.dir.path().join(self.name).to_string_lossy().into_owned()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// One line per start so far.
    fn runs(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("runs"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// A worker body that waits (at most 30 s, so that a failed test leaves no
/// process for ever) until it is signalled, and records the signal.
const TRAP: &str = "trap 'echo TERM >> DIR/signals; kill $! 2>/dev/null; exit 0' TERM\n\
                    trap 'echo INT >> DIR/signals; kill $! 2>/dev/null; exit 0' INT";
const WAIT: &str = "sleep 30 &\nwait $!";

/// A running `runslave --supervise -v` and everything it said on stderr.
struct Supervised {
    child: Child,
    log: Arc<Mutex<String>>,
    eof: mpsc::Receiver<()>,
}

/// Starts runslave supervising `worker`, with short pauses (later `extra`
/// options win).
fn supervise(server: &Server, basedir: &Path, worker: &Worker, extra: &[&str]) -> Supervised {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runslave"))
        .args(["--supervise", "-v", "-a", &server.url, "-n", "tst-linux64-01", "-d"])
        .arg(basedir)
        .args(["-c", &worker.cmd(), "--retries", "0", "--timeout", "5"])
        .args([
            "--poll-interval",
            "0.05",
            "--restart-delay",
            "0.01",
            "--max-restart-delay",
            "0.05",
        ])
        .args(["--min-run", "30"])
        .args(extra)
        .env_remove("RUNSLAVE_ALLOCATOR_URL")
        .env_remove("RUNSLAVE_POLL_INTERVAL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let log = Arc::new(Mutex::new(String::new()));
    let (done, eof) = mpsc::channel();
    let shared = Arc::clone(&log);
    thread::spawn(move || {
        for line in stderr.lines() {
            let Ok(line) = line else { break };
            let mut log = shared.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
        let _ = done.send(());
    });
    Supervised { child, log, eof }
}

impl Supervised {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `done` holds, failing the test at [`DEADLINE`].
    fn wait_for(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !done(&self.log()) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("runslave exited ({status}) before {what}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {DEADLINE:?}; runslave said:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (`TERM`, `INT`) to runslave and waits until it has
    /// exited; its status and everything it said.
    fn signal(mut self, signal: &str) -> (ExitStatus, String) {
        let sent = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "runslave did not exit within {DEADLINE:?} of SIG{signal}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        };
        // The rest of what it said (a worker left running would hold the
        // pipe open: then what was read so far).
        let _ = self.eof.recv_timeout(DEADLINE);
        (status, self.log())
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `done` holds, failing at [`DEADLINE`].
fn eventually(what: &str, s: &mut Supervised, done: impl Fn() -> bool) {
    s.wait_for(what, |_| done());
}

#[test]
fn a_worker_that_exits_is_started_again_with_a_new_tac() {
    // The allocator names bm01 first, then bm02 (bm01 is being drained).
    let server = Server::start(Answer::Sequence(&[TAC_A, TAC_B]));
    let basedir = tempfile::tempdir().unwrap();
    let worker = Worker::new(basedir.path(), "", "exit 3");
    let mut s = supervise(&server, basedir.path(), &worker, &[]);
    eventually("a second start", &mut s, || worker.runs().len() >= 2);
    let (status, log) = s.signal("TERM");
    assert_eq!(status.code(), Some(0), "{log}");

    let runs = worker.runs();
    let foreground = format!("start --nodaemon {} |", basedir.path().display());
    assert!(runs[0].starts_with(&foreground), "{runs:?}");
    assert!(
        runs[0].contains("bm01.example.com"),
        "the first start saw tac A: {runs:?}"
    );
    assert!(
        runs[1].contains("bm02.example.com"),
        "the second start saw tac B: {runs:?}"
    );
    assert!(
        server.requests() >= runs.len(),
        "a new tac was asked for before every start: {} requests, {} starts",
        server.requests(),
        runs.len()
    );
    // -v: why it restarts, and the master the new tac names.
    assert!(log.contains("the worker (start 1) exited with status 3"), "{log}");
    assert!(log.contains("is to connect to master bm01.example.com:9001"), "{log}");
    assert!(log.contains("is to connect to master bm02.example.com:9002"), "{log}");
}

#[test]
fn do_not_start_made_while_the_worker_runs_holds_the_restart_until_removed() {
    let server = Server::start(Answer::Ok(TAC_A));
    let basedir = tempfile::tempdir().unwrap();
    // Runs until the test creates `go` (30 s at most).
    let worker = Worker::new(
        basedir.path(),
        "",
        "i=0\nwhile [ ! -e DIR/go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
    );
    let mut s = supervise(&server, basedir.path(), &worker, &[]);
    eventually("the first start", &mut s, || worker.runs().len() == 1);

    let flag = basedir.path().join("DO_NOT_START");
    std::fs::write(&flag, "held for bug 123").unwrap();
    std::fs::write(worker.path("go"), "").unwrap();
    s.wait_for("the hold to be seen twice", |log| {
        log.split_once("waiting until")
            .is_some_and(|(_, after)| after.contains("still exists"))
    });
    assert_eq!(worker.runs().len(), 1, "no restart while DO_NOT_START exists");
    assert_eq!(server.requests(), 1, "nor a fetch");

    std::fs::remove_file(&flag).unwrap();
    eventually("the restart", &mut s, || worker.runs().len() >= 2);
    assert!(server.requests() >= 2);
    let (status, log) = s.signal("TERM");
    assert_eq!(status.code(), Some(0), "{log}");
}

#[test]
fn a_signal_while_held_ends_runslave_without_a_fetch() {
    let server = Server::start(Answer::Ok(TAC_A));
    let basedir = tempfile::tempdir().unwrap();
    std::fs::write(basedir.path().join("DO_NOT_START"), "").unwrap();
    let worker = Worker::new(basedir.path(), "", "exit 0");
    let mut s = supervise(&server, basedir.path(), &worker, &[]);
    s.wait_for("the hold", |log| log.contains("still exists"));
    let (status, log) = s.signal("TERM");
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(server.requests(), 0);
    assert!(worker.runs().is_empty());
}

/// The pauses runslave announced, in order ("in 0.05s", "now").
fn pauses(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once("starting it again ").map(|(_, p)| p.to_owned()))
        .collect()
}

#[test]
fn the_pause_doubles_over_quick_exits_up_to_the_cap_and_a_long_run_starts_it_over() {
    let server = Server::start(Answer::Ok(TAC_A));
    let basedir = tempfile::tempdir().unwrap();
    // Starts 1-4 and 6-7 exit at once; the fifth runs past --min-run.
    let worker = Worker::new(
        basedir.path(),
        "",
        "n=$(wc -l < DIR/runs)\nif [ $((n)) -eq 5 ]; then sleep 4; fi\nexit 0",
    );
    let extra = [
        "--min-run",
        "3",
        "--restart-delay",
        "0.05",
        "--max-restart-delay",
        "0.2",
    ];
    let mut s = supervise(&server, basedir.path(), &worker, &extra);
    s.wait_for("seven restarts", |log| pauses(log).len() >= 7);
    let (status, log) = s.signal("TERM");
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(
        pauses(&log)[..7],
        ["in 0.05s", "in 0.10s", "in 0.20s", "in 0.20s", "now", "in 0.05s", "in 0.10s"],
        "{log}"
    );
    assert!(worker.runs().len() >= 7);
}

#[test]
fn sigterm_and_sigint_stop_the_worker_and_runslave_without_a_restart() {
    for signal in ["TERM", "INT"] {
        let server = Server::start(Answer::Ok(TAC_A));
        let basedir = tempfile::tempdir().unwrap();
        let worker = Worker::new(basedir.path(), TRAP, WAIT);
        let mut s = supervise(&server, basedir.path(), &worker, &[]);
        eventually("the start", &mut s, || worker.runs().len() == 1);
        let (status, log) = s.signal(signal);
        assert_eq!(status.code(), Some(0), "SIG{signal}: {log}");
        assert_eq!(
            std::fs::read_to_string(worker.path("signals")).unwrap_or_default(),
            format!("{signal}\n"),
            "the worker got SIG{signal} once: {log}"
        );
        assert_eq!(worker.runs().len(), 1, "SIG{signal}: not started again: {log}");
        assert_eq!(server.requests(), 1, "SIG{signal}: nothing fetched after it");
        assert!(!log.contains("starting it again"), "SIG{signal}: {log}");
        assert!(log.contains("the worker exited with status 0"), "SIG{signal}: {log}");
    }
}

#[test]
fn a_disabled_slave_keeps_runslave_waiting_and_starts_no_worker() {
    let server = Server::start(Answer::Ok(DISABLED));
    let basedir = tempfile::tempdir().unwrap();
    let worker = Worker::new(basedir.path(), "", "exit 0");
    let mut s = supervise(&server, basedir.path(), &worker, &[]);
    eventually("a few looks", &mut s, || server.requests() >= 4);
    let (status, log) = s.signal("TERM");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(worker.runs().is_empty(), "no worker for a disabled slave: {log}");
    assert_eq!(
        log.matches("tst-linux64-01 is disabled in slavealloc").count(),
        1,
        "said plainly, once: {log}"
    );
    assert!(log.contains("still disabled; asking again"), "{log}");

    // Enabled again: the worker starts with the tac that came.
    let server = Server::start(Answer::Sequence(&[DISABLED, DISABLED, TAC_A]));
    let basedir = tempfile::tempdir().unwrap();
    let worker = Worker::new(basedir.path(), "", "exit 0");
    let mut s = supervise(&server, basedir.path(), &worker, &[]);
    eventually("the start once enabled", &mut s, || !worker.runs().is_empty());
    let (status, log) = s.signal("TERM");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(worker.runs()[0].contains("bm01.example.com"), "{:?}", worker.runs());
    assert_eq!(log.matches("is disabled in slavealloc").count(), 1, "{log}");
}

/// The original's tacs import `buildslave.bot`; old `buildslave start` has
/// no `--nodaemon`, so runslave runs the twistd beside it in the base
/// directory.
#[test]
fn a_buildslave_command_runs_the_twistd_beside_it_in_the_foreground() {
    const LEGACY: &str = "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n# generated: x on alloc\n\nfrom buildslave.bot import BuildSlave\nbuildmaster_host = 'bm01.example.com'\nport = 9001\n";
    let server = Server::start(Answer::Ok(LEGACY));
    let basedir = tempfile::tempdir().unwrap();
    let twistd = Worker::named("twistd", basedir.path(), "", "exit 0");
    let buildslave = twistd.path("buildslave");
    script(&buildslave, "#!/bin/sh\necho \"$*\" >> \"$0.ran\"\n");
    let mut s = supervise(&server, basedir.path(), &twistd, &["-c", buildslave.to_str().unwrap()]);
    eventually("twistd's start", &mut s, || !twistd.runs().is_empty());
    let (status, log) = s.signal("TERM");
    assert_eq!(status.code(), Some(0), "{log}");
    let runs = twistd.runs();
    // The tempdir may be reached through a symbolic link: compare the real path.
    let real = basedir.path().canonicalize().unwrap();
    assert_eq!(
        runs[0],
        format!(
            "--nodaemon --no_save --pidfile= --logfile=twistd.log -y buildbot.tac | buildmaster_host = 'bm01.example.com' | {}",
            real.display()
        ),
        "{log}"
    );
    assert!(!twistd.path("buildslave.ran").exists(), "buildslave itself is not run");
}
