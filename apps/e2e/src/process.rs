//! Child processes that are always stopped, commands with a time limit, and
//! polling with a deadline.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::Result;

/// How often [`wait_until`] and [`run_bounded`] look again.
const POLL: Duration = Duration::from_millis(100);

/// How long a child has to exit after SIGTERM before it gets SIGKILL.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// A child process that is killed and reaped when the guard is dropped, so a
/// panicking test leaves nothing running.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
}

impl ChildGuard {
    /// Spawns `cmd`; `name` appears in every error about it.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        let child = cmd.spawn().map_err(|e| format!("cannot start {name} ({cmd:?}): {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has already ended.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .map_err(|e| format!("cannot check whether {} is still running: {e}", self.name))
    }

    /// Mutable access to the child, e.g. to take its stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // SIGTERM first, so that a daemon shuts down as in production (and
        // removes what it keeps in temporary directories); SIGKILL if it is
        // still there after a while, since a test must never leave it behind.
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), "TERM");
            let stopped = wait_until("a stopped child", STOP_LIMIT, || {
                Ok(self.child.try_wait().ok().flatten().map(|_| ()))
            });
            if stopped.is_err() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

/// Calls `probe` until it returns `Some`, at most until `limit` has passed;
/// the error names `what` was awaited. The last probe runs after the
/// deadline, so a slow machine never fails a check that just succeeded.
pub fn wait_until<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        let past_deadline = Instant::now() >= deadline;
        if let Some(v) = probe()? {
            return Ok(v);
        }
        if past_deadline {
            return Err(format!("gave up after {limit:?} waiting for {what}"));
        }
        thread::sleep(POLL);
    }
}

/// What [`run_bounded`] saw.
#[derive(Debug)]
pub struct Finished {
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output and standard error, interleaved as written.
    pub output: String,
}

/// Runs `cmd` to completion with its standard output and error written to
/// `log` (a file, not a pipe: a daemon that the command leaves behind may
/// hold a pipe open forever), killing it if it runs longer than `limit`.
pub fn run_bounded(name: &str, cmd: &mut Command, log: &Path, limit: Duration) -> Result<Finished> {
    let out = File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("cannot reuse {}: {e}", log.display()))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut guard = ChildGuard::spawn(name, cmd)?;
    let status = wait_until(&format!("{name} to finish"), limit, || guard.exited())?;
    let output = std::fs::read_to_string(log).map_err(|e| format!("cannot read {}: {e}", log.display()))?;
    Ok(Finished { status, output })
}

/// Whether process `pid` exists and is not a zombie (Linux `/proc`).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name in parentheses, which
        // may itself contain spaces and parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// The live processes descended from `pid` (its children, theirs, ...),
/// read from Linux `/proc`: what a process that does not daemonize leaves
/// behind should it be killed outright.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The parent's pid is the second field after the parenthesized
        // command name, which may itself contain spaces and parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        if let (Some(state), Some(Ok(parent))) = (fields.first(), fields.get(1).map(|p| p.parse::<u32>())) {
            if *state != "Z" {
                parents.push((child, parent));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (child, _) in parents.iter().filter(|(_, p)| *p == parent) {
            if !found.contains(child) {
                found.push(*child);
                frontier.push(*child);
            }
        }
    }
    found
}

/// Sends `signal` (e.g. `"TERM"`, `"KILL"`) to `pid` with kill(1): the
/// workspace forbids the unsafe code a libc call would need.
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// The last `lines` lines of the file at `path`, or a note why there are
/// none; used to explain a failure.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            format!(
                "--- {} (last {} lines) ---\n{}",
                path.display(),
                lines,
                all[from..].join("\n")
            )
        }
        Err(e) => format!("--- {}: {e} ---", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_returns_the_first_value_and_times_out_with_the_reason() {
        let mut n = 0;
        let got = wait_until("n to reach 3", Duration::from_secs(10), || {
            n += 1;
            Ok((n >= 3).then_some(n))
        });
        assert_eq!(got, Ok(3));
        let err = wait_until::<()>("never", Duration::ZERO, || Ok(None)).unwrap_err();
        assert!(err.contains("waiting for never"), "{err}");
        let err = wait_until::<()>("x", Duration::from_secs(10), || Err("broken".into())).unwrap_err();
        assert_eq!(err, "broken");
    }

    #[test]
    fn a_dropped_guard_kills_its_child() {
        let guard = ChildGuard::spawn("sleep", Command::new("sleep").arg("600")).unwrap();
        let pid = guard.id();
        assert!(pid_alive(pid));
        drop(guard);
        assert!(!pid_alive(pid));
    }

    #[test]
    fn descendants_are_children_and_grandchildren() {
        let guard = ChildGuard::spawn(
            "sh",
            Command::new("sh")
                .args(["-c", "(sleep 600; true) & sleep 600; wait"])
                .stderr(Stdio::null()),
        )
        .unwrap();
        // A subshell with its sleep, and a sleep.
        let found = wait_until("three processes under sh", Duration::from_secs(10), || {
            let found = descendants(guard.id());
            Ok((found.len() == 3).then_some(found))
        })
        .unwrap();
        assert!(found.iter().all(|pid| pid_alive(*pid)));
        assert!(!found.contains(&guard.id()));
        for pid in &found {
            signal(*pid, "KILL");
        }
        drop(guard);
        wait_until("the killed processes to be gone", Duration::from_secs(10), || {
            Ok(found.iter().all(|pid| !pid_alive(*pid)).then_some(()))
        })
        .unwrap();
    }

    #[test]
    fn run_bounded_captures_output_and_kills_what_overruns() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("out.log");
        let done = run_bounded(
            "sh",
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            &log,
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(done.status.code(), Some(3));
        assert!(
            done.output.contains("out") && done.output.contains("err"),
            "{}",
            done.output
        );
        let err = run_bounded("sleep", Command::new("sleep").arg("600"), &log, Duration::ZERO).unwrap_err();
        assert!(err.contains("sleep to finish"), "{err}");
    }
}
