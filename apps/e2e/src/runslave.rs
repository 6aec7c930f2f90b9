//! `runslave --supervise`, as a build machine's service manager runs it:
//! it stays in the foreground, runs the worker as its child (`buildbot-worker
//! start --nodaemon`, which writes no `twistd.pid`) and starts it again,
//! with a new tac, each time it exits.

use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::process::{descendants, pid_alive, signal, wait_until, ChildGuard};
use crate::Result;

/// runslave forwards SIGTERM to the worker and exits once it is gone; a
/// worker stops in about a second.
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// A running `runslave --supervise` and whatever it started, stopped when
/// dropped.
///
/// Stopping is what a service manager does: SIGTERM to runslave, which
/// forwards it to the worker. The worker is not daemonized, so nothing on
/// disk names it: its pid is read from `/proc` (the processes under
/// runslave) before the signal, and whatever of them is still alive once
/// runslave is gone (runslave needed SIGKILL, or did not forward) is
/// killed too, so no worker goes on reconnecting after the test.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    guard: Option<ChildGuard>,
}

/// How a [`Supervised::stop`] went.
#[derive(Debug)]
pub struct Stopped {
    /// runslave's exit status.
    pub status: ExitStatus,
    /// The processes runslave had started that outlived it (killed since).
    pub left_behind: Vec<u32>,
}

impl Supervised {
    /// Spawns `cmd` (a `runslave --supervise ...`); `name` appears in every
    /// error about it.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        Ok(Self {
            name: name.to_owned(),
            guard: Some(ChildGuard::spawn(name, cmd)?),
        })
    }

    /// runslave's pid.
    pub fn id(&self) -> Option<u32> {
        self.guard.as_ref().map(ChildGuard::id)
    }

    /// Sends SIGTERM to runslave and waits for it to exit; says how it
    /// exited and which of its processes outlived it (killed since). An
    /// error if it did not exit within a while (it is killed then).
    pub fn stop(&mut self) -> Result<Stopped> {
        let Some(mut guard) = self.guard.take() else {
            return Err(format!("{} was stopped already", self.name));
        };
        let (status, left_behind) = terminate(&mut guard);
        match status {
            Some(status) => Ok(Stopped { status, left_behind }),
            None => Err(format!(
                "{} did not exit within {STOP_LIMIT:?} of SIGTERM (killed, with {left_behind:?})",
                self.name
            )),
        }
    }
}

/// SIGTERM to runslave, then SIGKILL if it has not exited within
/// [`STOP_LIMIT`]; then SIGKILL to every process seen under it meanwhile
/// that is still alive. Answers runslave's status if it exited by itself,
/// and those processes.
fn terminate(guard: &mut ChildGuard) -> (Option<ExitStatus>, Vec<u32>) {
    let pid = guard.id();
    let mut seen = descendants(pid);
    signal(pid, "TERM");
    let status = wait_until("runslave to exit after SIGTERM", STOP_LIMIT, || {
        let status = guard.exited()?;
        if status.is_none() {
            // A worker started just before the signal is one more to watch.
            for p in descendants(pid) {
                if !seen.contains(&p) {
                    seen.push(p);
                }
            }
        }
        Ok(status)
    })
    .ok();
    if status.is_none() {
        let _ = guard.child_mut().kill();
        let _ = guard.child_mut().wait();
    }
    let left_behind: Vec<u32> = seen.into_iter().filter(|p| pid_alive(*p)).collect();
    for p in &left_behind {
        signal(*p, "KILL");
    }
    (status, left_behind)
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            terminate(&mut guard);
        }
    }
}
