//! `runslave --supervise`: the worker in the foreground, started again with
//! a new tac each time it exits.
//!
//! Why: a Buildbot master being drained asks its workers to shut down;
//! a daemonized worker then stays down until the machine reboots. Run in
//! the foreground under runslave, its exit is the moment to ask the
//! allocator again, which may now name another master.
//!
//! Main design decision: **one process owns the worker**. runslave catches
//! SIGTERM and SIGINT (signal-hook), forwards them to the worker it started
//! and, once that has exited, exits 0 without starting it again; the worker
//! gets a process group of its own so that a terminal's Ctrl-C reaches it
//! once, through runslave, and never looks like a crash to restart after.
//! Every wait (backoff, DO_NOT_START, a disabled slave, download retries)
//! is cut short by the signal.
//!
//! The same rules as one start apply before every start: DO_NOT_START holds
//! it, a failed download falls back to the cached tac (and stops runslave
//! with the usual exit status when there is none), a disabled slave's tac
//! starts nothing.

// Without Unix signals only the stub `run` below is built (it refuses).
#![cfg_attr(not(unix), allow(dead_code))]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The pause before each start after a worker exited: nothing after a long
/// run, else a wait that doubles with each short run in a row, up to a cap.
///
/// A worker that exits at once (a broken tac, a master that refuses it, a
/// missing Python module) would otherwise be started, and the allocator
/// asked, many times a second on every machine of the fleet.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    min_run: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff whose first pause is `first`, doubling up to `max`, for
    /// runs shorter than `min_run`.
    pub(crate) fn new(first: Duration, max: Duration, min_run: Duration) -> Self {
        Backoff {
            first,
            max: max.max(first),
            min_run,
            next: Duration::ZERO,
        }
    }

    /// The pause before the next start, after a run of `ran` (zero for a
    /// disabled tac, which ran nothing).
    pub(crate) fn after(&mut self, ran: Duration) -> Duration {
        self.next = if ran >= self.min_run {
            Duration::ZERO
        } else if self.next.is_zero() {
            self.first
        } else {
            (self.next * 2).min(self.max)
        };
        self.next
    }
}

/// How the worker is run in the foreground: a program, its arguments, and
/// the directory it runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invocation {
    program: PathBuf,
    args: Vec<String>,
    dir: Option<PathBuf>,
}

impl Invocation {
    /// The foreground form of the worker command `cmd` (split on white
    /// space) for `basedir`.
    ///
    /// `buildbot-worker` (and any other command) runs as `<cmd> start
    /// --nodaemon <basedir>`: that `start` runs twistd in its own process,
    /// so the process runslave waits for is the worker.
    ///
    /// A command that is just `buildslave` (a name or a path) becomes the
    /// `twistd` beside it, run in the base directory as `twistd --nodaemon
    /// --no_save --pidfile= --logfile=twistd.log -y buildbot.tac`, because
    /// `buildslave start` had no `--nodaemon` before buildslave 0.8.9 and
    /// the fleet's builds are older (0.8.4-pre-moz2); twistd is what
    /// `buildslave start` runs itself, and the one beside it has the same
    /// Python and packages. `--logfile` is what `buildslave start` gives (a
    /// tac's own log observer wins over it, as before). `--pidfile=` writes
    /// no twistd.pid: runslave and the service manager know the process,
    /// `buildslave stop` would only cause a restart, and a stale twistd.pid
    /// whose number a later boot reused makes twistd refuse to start
    /// ("Another twistd server is running"), for ever.
    pub(crate) fn foreground(cmd: &str, basedir: &Path) -> Result<Self, String> {
        let mut words = cmd.split_whitespace();
        let program = words.next().ok_or_else(|| "the worker command is empty".to_owned())?;
        let rest: Vec<String> = words.map(str::to_owned).collect();
        let program = PathBuf::from(program);
        if rest.is_empty() && program.file_name().is_some_and(|n| n == "buildslave") {
            return Ok(Invocation {
                program: program.with_file_name("twistd"),
                args: [
                    "--nodaemon",
                    "--no_save",
                    "--pidfile=",
                    "--logfile=twistd.log",
                    "-y",
                    super::TAC,
                ]
                .map(str::to_owned)
                .to_vec(),
                dir: Some(basedir.to_path_buf()),
            });
        }
        let mut args = rest;
        args.extend(["start".to_owned(), "--nodaemon".to_owned()]);
        args.push(basedir.to_string_lossy().into_owned());
        Ok(Invocation {
            program,
            args,
            dir: None,
        })
    }

    /// The command to spawn.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        command
    }
}

impl std::fmt::Display for Invocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.program.display())?;
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        if let Some(dir) = &self.dir {
            write!(f, " (in {})", dir.display())?;
        }
        Ok(())
    }
}

#[cfg(unix)]
pub(crate) use unix::run;

/// Without Unix signals there is no way to stop the worker gracefully.
#[cfg(not(unix))]
pub(crate) fn run(
    _args: &super::Args,
    _log: &super::Log,
    _client: &super::Client,
    _url: &url::Url,
) -> Result<std::process::ExitCode, super::Stop> {
    Err(super::Stop {
        msg: "--supervise needs a Unix system".into(),
        code: 2,
    })
}

#[cfg(unix)]
mod unix {
    use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
    use std::process::{Child, Command, ExitCode, ExitStatus};
    use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
    use std::time::{Duration, Instant};

    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;
    use url::Url;

    use super::{Backoff, Invocation};
    use crate::{
        command_for, describe_tac, duration, obtain_tac, wait_while_held, Args, Client, Log, Obtained, Pause, Stop, TAC,
    };

    /// How often runslave looks whether the worker has exited: an exit is
    /// noticed this late at most, which does not matter, and few wake-ups
    /// keep it idle on every build machine. Why it polls rather than blocks:
    /// see [`Supervisor::wait`].
    const REAP_INTERVAL: Duration = Duration::from_millis(500);

    /// What the main thread and the signal thread share.
    #[derive(Debug, Default)]
    struct State {
        /// The first SIGTERM or SIGINT received, if any: no more starts.
        stop: Option<i32>,
        /// The running worker.
        worker: Option<Child>,
    }

    /// The worker's keeper: starts it, waits for it, and forwards SIGTERM
    /// and SIGINT to it from a thread of its own.
    #[derive(Debug, Default)]
    struct Supervisor {
        state: Mutex<State>,
        /// Wakes the main thread when a signal came.
        woken: Condvar,
    }

    impl Supervisor {
        /// Catches SIGTERM and SIGINT for the rest of runslave's life; the
        /// thread that receives them forwards each to the worker, if one runs.
        fn install() -> std::io::Result<Arc<Self>> {
            let supervisor = Arc::new(Supervisor::default());
            let mut signals = Signals::new([SIGTERM, SIGINT])?;
            let shared = Arc::clone(&supervisor);
            std::thread::Builder::new().name("signals".into()).spawn(move || {
                for signal in signals.forever() {
                    shared.received(signal);
                }
            })?;
            Ok(supervisor)
        }

        fn lock(&self) -> MutexGuard<'_, State> {
            // A panic elsewhere must not keep the worker from being stopped.
            self.state.lock().unwrap_or_else(PoisonError::into_inner)
        }

        fn received(&self, signal: i32) {
            let mut state = self.lock();
            state.stop.get_or_insert(signal);
            if let Some(worker) = state.worker.as_mut() {
                forward(worker, signal);
            }
            self.woken.notify_all();
        }

        fn stopping(&self) -> bool {
            self.lock().stop.is_some()
        }

        /// Starts the worker, unless a signal came first (`Ok(false)`).
        /// Under the lock, so a signal that comes meanwhile is forwarded to it.
        fn spawn(&self, command: &mut Command) -> std::io::Result<bool> {
            let mut state = self.lock();
            if state.stop.is_some() {
                return Ok(false);
            }
            state.worker = Some(command.spawn()?);
            Ok(true)
        }

        /// Waits until the worker has exited.
        ///
        /// It is reaped with `try_wait` under the lock rather than by a
        /// blocking `wait`: once reaped its pid may be reused, and the signal
        /// thread, which forwards under the same lock, must never signal a
        /// stranger.
        fn wait(&self) -> std::io::Result<ExitStatus> {
            let mut state = self.lock();
            loop {
                let Some(worker) = state.worker.as_mut() else {
                    return Err(std::io::Error::other("no worker runs"));
                };
                if let Some(status) = worker.try_wait()? {
                    state.worker = None;
                    return Ok(status);
                }
                state = self
                    .woken
                    .wait_timeout(state, REAP_INTERVAL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
    }

    impl Pause for Supervisor {
        fn pause(&self, how_long: Duration) -> bool {
            let deadline = Instant::now() + how_long;
            let mut state = self.lock();
            while state.stop.is_none() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return true;
                }
                state = self
                    .woken
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            false
        }
    }

    /// Sends `signal` on to the worker. By the `kill` command: the
    /// workspace forbids `unsafe`, signal-hook only receives signals, and
    /// rustix's `process` feature would change a crate the allocator is built
    /// from too (apps/slavealloc/tests/build.rs). Should `kill` not run, the
    /// worker is killed outright: a stop must not wait for ever.
    fn forward(worker: &mut Child, signal: i32) {
        let name = if signal == SIGINT { "INT" } else { "TERM" };
        let pid = worker.id().to_string();
        match Command::new("kill").args(["-s", name, &pid]).status() {
            Ok(status) if status.success() => {}
            // It may have exited meanwhile (it is reaped under our lock, so
            // the pid is still its own): try_wait will tell.
            Ok(status) => eprintln!("runslave: kill -s {name} {pid}: {}", describe(status)),
            Err(e) => {
                eprintln!("runslave: cannot run kill ({e}); killing worker {pid} with SIGKILL");
                let _ = worker.kill();
            }
        }
    }

    /// "exited with status N" or "was killed by signal N".
    fn describe(status: ExitStatus) -> String {
        match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            (None, None) => format!("ended ({status})"),
        }
    }

    fn stopped(log: &Log) -> Result<ExitCode, Stop> {
        log.info("stopped by a signal; the worker is not started again");
        Ok(ExitCode::SUCCESS)
    }

    /// `runslave --supervise`: start the worker in the foreground, and again
    /// each time it exits, with a new tac, until SIGTERM or SIGINT.
    pub(crate) fn run(args: &Args, log: &Log, client: &Client, url: &Url) -> Result<ExitCode, Stop> {
        let supervisor = Supervisor::install().map_err(|e| Stop::from(format!("cannot catch SIGTERM: {e}")))?;
        let mut backoff = Backoff::new(
            duration(args.restart_delay),
            duration(args.max_restart_delay),
            duration(args.min_run),
        );
        let tac_path = args.basedir.join(TAC);
        // Said once per stretch of disabled tacs, not at every look.
        let mut said_disabled = false;
        let mut start = 0u64;
        loop {
            if !wait_while_held(&args.basedir, duration(args.poll_interval), log, &*supervisor) {
                return stopped(log);
            }
            if obtain_tac(url, client, args, log, &*supervisor)? == Obtained::Stopped {
                return stopped(log);
            }
            if describe_tac(&tac_path, &client.slavename, log, !said_disabled) {
                said_disabled = true;
                let wait = backoff.after(Duration::ZERO);
                log.info(&format!("still disabled; asking again in {:.2}s", wait.as_secs_f64()));
                if !supervisor.pause(wait) {
                    return stopped(log);
                }
                continue;
            }
            said_disabled = false;
            start += 1;
            let invocation =
                Invocation::foreground(&command_for(args, &tac_path), &args.basedir).map_err(Stop::from)?;
            log.info(&format!("start {start}: running {invocation}"));
            let mut command = invocation.command();
            // Its own process group: a terminal's Ctrl-C reaches the worker
            // only as runslave forwards it, so it is known to be a stop.
            command.process_group(0);
            let begun = Instant::now();
            match supervisor.spawn(&mut command) {
                Ok(true) => {}
                Ok(false) => return stopped(log),
                Err(e) => return Err(Stop::from(format!("cannot run {invocation}: {e}"))),
            }
            let status = supervisor
                .wait()
                .map_err(|e| Stop::from(format!("waiting for {invocation}: {e}")))?;
            let ran = begun.elapsed().as_secs_f64();
            if supervisor.stopping() {
                log.info(&format!("the worker {} after {ran:.1}s", describe(status)));
                return stopped(log);
            }
            let wait = backoff.after(begun.elapsed());
            let again = if wait.is_zero() {
                "now".to_owned()
            } else {
                format!("in {:.2}s", wait.as_secs_f64())
            };
            let msg = format!(
                "the worker (start {start}) {} after {ran:.1}s; fetching a new tac and starting it again {again}",
                describe(status)
            );
            // A worker that fails is worth a line in the journal without
            // -v, as the one-shot start says a failing start command.
            if status.success() {
                log.info(&msg);
            } else {
                eprintln!("runslave: {msg}");
            }
            if !supervisor.pause(wait) {
                return stopped(log);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_over_short_runs_up_to_the_cap_and_a_long_run_resets_it() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(500), ms(1000));
        let short = ms(10);
        let waits: Vec<Duration> = (0..5).map(|_| backoff.after(short)).collect();
        assert_eq!(waits, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        assert_eq!(backoff.after(ms(1000)), Duration::ZERO, "a long run restarts at once");
        assert_eq!(backoff.after(short), ms(100), "and starts the count over");
        assert_eq!(
            backoff.after(Duration::ZERO),
            ms(200),
            "a disabled tac counts as a short run"
        );
    }

    #[test]
    fn the_foreground_worker_is_start_nodaemon_or_twistd_for_buildslave() {
        let basedir = Path::new("/builds/slave");
        let worker = Invocation::foreground("buildbot-worker", basedir).unwrap();
        assert_eq!(worker.to_string(), "buildbot-worker start --nodaemon /builds/slave");
        let wrapped = Invocation::foreground("/usr/local/bin/wrap -x", basedir).unwrap();
        assert_eq!(
            wrapped.to_string(),
            "/usr/local/bin/wrap -x start --nodaemon /builds/slave"
        );
        let legacy = Invocation::foreground("/tools/buildbot/bin/buildslave", basedir).unwrap();
        assert_eq!(
            legacy.to_string(),
            "/tools/buildbot/bin/twistd --nodaemon --no_save --pidfile= --logfile=twistd.log -y buildbot.tac \
             (in /builds/slave)"
        );
        let on_path = Invocation::foreground("buildslave", basedir).unwrap();
        assert_eq!(on_path.program, PathBuf::from("twistd"));
        assert!(Invocation::foreground("  ", basedir).is_err());
    }
}
