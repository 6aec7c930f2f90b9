//! Buildbot masters and workers, run from the virtualenv.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::process::{pid_alive, run_bounded, signal, tail, wait_until, ChildGuard, Finished};
use crate::venv::Venv;
use crate::workspace::repo_dir;
use crate::Result;

/// A master starts in about 3 s on the 2-core CI machine; the bound only
/// ends a master that will never come up.
const MASTER_START_LIMIT: Duration = Duration::from_secs(120);

/// `buildbot-worker start` gives up by itself after 10 s; `stop` waits up
/// to 10 s for the process to go.
const WORKER_COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// A worker name and the password the master expects from it.
#[derive(Debug, Clone)]
pub struct WorkerAccount {
    /// The worker (slave) name.
    pub name: String,
    /// Its password.
    pub password: String,
}

impl WorkerAccount {
    /// A name and password.
    pub fn new(name: &str, password: &str) -> Self {
        Self {
            name: name.to_owned(),
            password: password.to_owned(),
        }
    }
}

/// A master process that has been started but may not be ready yet; start
/// several, then wait for each, so that they boot in parallel.
#[derive(Debug)]
pub struct StartingMaster {
    name: String,
    dir: PathBuf,
    venv_buildbot: PathBuf,
    guard: ChildGuard,
}

/// `buildbot reconfig` waits for the master to say the new configuration is
/// in place; the bound only ends one that never will.
const RECONFIG_LIMIT: Duration = Duration::from_secs(120);

/// A running Buildbot master on loopback, stopped when dropped.
#[derive(Debug)]
pub struct Master {
    name: String,
    dir: PathBuf,
    pb_port: u16,
    www_port: u16,
    venv_buildbot: PathBuf,
    guard: ChildGuard,
}

impl Master {
    /// Creates a master directory `parent/name` from `apps/e2e/buildbot/`
    /// accepting `workers`, and starts `buildbot start --nodaemon` in it.
    pub fn spawn(venv: &Venv, parent: &Path, name: &str, workers: &[WorkerAccount]) -> Result<StartingMaster> {
        Self::spawn_with(venv, parent, name, "master.cfg", &Self::e2e_json(name, workers), &[])
    }

    /// What `master.cfg` reads from `e2e.json`: the title and the workers
    /// it accepts; a test may add the optional keys (`slow_seconds`) before
    /// [`Master::spawn_with`].
    pub fn e2e_json(name: &str, workers: &[WorkerAccount]) -> Value {
        json!({
            "title": name,
            "workers": workers.iter().map(|w| json!({"name": w.name, "password": w.password})).collect::<Vec<_>>(),
        })
    }

    /// Creates a master directory `parent/name` whose `master.cfg` is
    /// `apps/e2e/buildbot/<config_file>` and whose `e2e.json` is `e2e`
    /// (what that master.cfg reads), and starts `buildbot start
    /// --nodaemon` in it with `env` added to its environment.
    pub fn spawn_with(
        venv: &Venv,
        parent: &Path,
        name: &str,
        config_file: &str,
        e2e: &Value,
        env: &[(&str, &OsStr)],
    ) -> Result<StartingMaster> {
        let dir = parent.join(name);
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let source = repo_dir().join("apps/e2e/buildbot");
        for (from, to) in [(config_file, "master.cfg"), ("buildbot.tac", "buildbot.tac")] {
            fs::copy(source.join(from), dir.join(to)).map_err(|e| format!("cannot copy {from}: {e}"))?;
        }
        fs::write(dir.join("e2e.json"), e2e.to_string()).map_err(|e| format!("cannot write e2e.json: {e}"))?;
        let console = fs::File::create(dir.join("console.log")).map_err(|e| format!("cannot create a log: {e}"))?;
        let console_err = console.try_clone().map_err(|e| format!("cannot reuse a log: {e}"))?;
        let guard = ChildGuard::spawn(
            &format!("buildbot master {name}"),
            Command::new(venv.bin("buildbot"))
                .args(["start", "--nodaemon"])
                .arg(&dir)
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(console)
                .stderr(console_err),
        )?;
        Ok(StartingMaster {
            name: name.to_owned(),
            dir,
            venv_buildbot: venv.bin("buildbot"),
            guard,
        })
    }

    /// The master's name (its title, and the directory it runs in).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The port workers connect to.
    pub fn pb_port(&self) -> u16 {
        self.pb_port
    }

    /// The port of its web server (the `http_port` slavealloc polls).
    pub fn www_port(&self) -> u16 {
        self.www_port
    }

    /// Base URL of the master's REST API.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v2", self.www_port)
    }

    /// Whether the master's REST API lists `worker` as connected to it
    /// (`connected_to` non-empty). A worker the master does not know is an
    /// error.
    pub fn is_connected(&self, worker: &str) -> Result<bool> {
        let url = format!("{}/workers", self.api_url());
        let body = ureq::get(&url)
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?
            .into_string()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let doc: Value = serde_json::from_str(&body).map_err(|e| format!("GET {url}: not JSON ({e}): {body}"))?;
        let entry = doc["workers"]
            .as_array()
            .and_then(|ws| ws.iter().find(|w| w["name"] == worker))
            .ok_or_else(|| format!("master {} does not know worker {worker}: {body}", self.name))?;
        Ok(entry["connected_to"].as_array().is_some_and(|c| !c.is_empty()))
    }

    /// Polls the REST API until `worker` is connected, at most `limit`.
    pub fn wait_connected(&self, worker: &str, limit: Duration) -> Result<()> {
        wait_until(
            &format!("worker {worker} to connect to master {}", self.name),
            limit,
            || Ok(self.is_connected(worker)?.then_some(())),
        )
        .map_err(|e| format!("{e}\n{}", self.log_tail()))
    }

    /// The end of the master's log, to explain a failure.
    pub fn log_tail(&self) -> String {
        tail(&self.dir.join("twistd.log"), 20)
    }

    /// The master's whole log (`twistd.log`) so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("twistd.log")).unwrap_or_default()
    }

    /// Polls the master's log until a line contains `needle`, at most
    /// `limit`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> Result<()> {
        wait_until(&format!("master {}'s log to say {needle:?}", self.name), limit, || {
            Ok(self.log().contains(needle).then_some(()))
        })
        .map_err(|e| format!("{e}\n{}", self.log_tail()))
    }

    /// Runs `buildbot reconfig DIR`, as an operator would: it sends SIGHUP
    /// and follows the log until the master says the new configuration is
    /// in place (success) or that it keeps the previous one (failure). A
    /// `--nodaemon` master writes no `twistd.pid`, which the command
    /// needs: it is written here first.
    pub fn reconfig(&self) -> Result<Finished> {
        let pid = self.dir.join("twistd.pid");
        fs::write(&pid, self.guard.id().to_string()).map_err(|e| format!("cannot write {}: {e}", pid.display()))?;
        run_bounded(
            "buildbot reconfig",
            Command::new(&self.venv_buildbot).arg("reconfig").arg(&self.dir),
            &self.dir.join("reconfig.log"),
            RECONFIG_LIMIT,
        )
    }
}

impl StartingMaster {
    /// Waits until the master says it is running, and reads the ports the
    /// kernel gave it from its log.
    pub fn ready(mut self) -> Result<Master> {
        let log = self.dir.join("twistd.log");
        let name = self.name.clone();
        let text = wait_until(&format!("master {name} to start"), MASTER_START_LIMIT, || {
            if let Some(status) = self.guard.exited()? {
                return Err(format!(
                    "master {name} exited ({status}) while starting\n{}\n{}",
                    tail(&log, 30),
                    tail(&self.dir.join("console.log"), 30)
                ));
            }
            let text = fs::read_to_string(&log).unwrap_or_default();
            if text.contains("BuildMaster startup failed") {
                return Err(format!("master {name} failed to start\n{}", tail(&log, 30)));
            }
            Ok(text.contains("BuildMaster is running").then_some(text))
        })
        .map_err(|e| format!("{e}\n{}", tail(&log, 30)))?;
        let port_after = |marker: &str| -> Result<u16> {
            text.lines()
                .find_map(|l| l.split_once(marker).map(|(_, port)| port.trim().parse::<u16>()))
                .ok_or_else(|| format!("master {name}'s log does not say `{marker}`"))?
                .map_err(|e| format!("master {name}'s log has a bad port after `{marker}`: {e}"))
        };
        Ok(Master {
            pb_port: port_after("PBServerFactory starting on ")?,
            www_port: port_after("BuildbotSite starting on ")?,
            name: self.name,
            dir: self.dir,
            venv_buildbot: self.venv_buildbot,
            guard: self.guard,
        })
    }
}

/// Owns whatever worker runs (or may come to run) in one base directory:
/// `buildbot-worker start` daemonizes, so there is no child to kill; the
/// worker is found through the `twistd.pid` it writes. Create the guard
/// before anything can start the worker.
#[derive(Debug)]
pub struct WorkerGuard {
    basedir: PathBuf,
    buildbot_worker: PathBuf,
}

impl WorkerGuard {
    /// A guard for the worker of `basedir`, started with the venv's
    /// `buildbot-worker`.
    pub fn new(venv: &Venv, basedir: &Path) -> Self {
        Self {
            basedir: basedir.to_path_buf(),
            buildbot_worker: venv.bin("buildbot-worker"),
        }
    }

    /// Runs `buildbot-worker start BASEDIR`, as `runslave` would; its output
    /// goes to `BASEDIR/../<name>-start.log`.
    pub fn start(&self) -> Result<Finished> {
        let log = self.basedir.with_extension("start.log");
        run_bounded(
            "buildbot-worker start",
            Command::new(&self.buildbot_worker)
                .arg("start")
                .arg(&self.basedir)
                .current_dir(&self.basedir),
            &log,
            WORKER_COMMAND_LIMIT,
        )
    }

    /// The pid of a live worker process of this base directory, if any.
    pub fn running_pid(&self) -> Option<u32> {
        let pid = fs::read_to_string(self.basedir.join("twistd.pid")).ok()?;
        let pid: u32 = pid.trim().parse().ok()?;
        pid_alive(pid).then_some(pid)
    }

    /// The end of the worker's log, to explain a failure.
    pub fn log_tail(&self) -> String {
        tail(&self.basedir.join("twistd.log"), 20)
    }
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        let Some(pid) = self.running_pid() else { return };
        let log = self.basedir.with_extension("stop.log");
        let _ = run_bounded(
            "buildbot-worker stop",
            Command::new(&self.buildbot_worker).arg("stop").arg(&self.basedir),
            &log,
            WORKER_COMMAND_LIMIT,
        );
        if pid_alive(pid) {
            signal(pid, "KILL");
        }
    }
}
