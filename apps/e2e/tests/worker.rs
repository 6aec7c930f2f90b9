//! A real Buildbot worker, end to end: Buildbot masters on loopback,
//! `slavealloc serve` with those masters in a pool of the sample fleet and
//! the `buildbot-worker` template as its default, `runslave` writing a
//! machine's buildbot.tac, `buildbot-worker` started from it, and the
//! master's REST API saying the worker is connected. This is the proof that
//! the tacs slavealloc writes really run.
//!
//! The fleet is fixtures/sample-fleet.json, with pool `tests-win`'s two
//! masters (bm09, bm10) pointed at two real masters. Its win10 slaves'
//! password is `w10-p@ss'word"\`, so a worker only logs in if every quote
//! and backslash survived the trip into Python.
//!
//! Every process started here is owned by a guard and stopped when the test
//! ends, pass or fail.

// Helpers outside #[test] functions too: a panic is the failure report here.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use slavealloc_e2e::buildbot::{Master, WorkerAccount, WorkerGuard};
use slavealloc_e2e::daemon::Slavealloc;
use slavealloc_e2e::fleet;
use slavealloc_e2e::process::{run_bounded, Finished};
use slavealloc_e2e::venv::Venv;
use slavealloc_e2e::workspace::binaries;
use tempfile::TempDir;

/// A worker logs in a second or so after it starts; the bound only ends a
/// worker that never will.
const CONNECT_LIMIT: Duration = Duration::from_secs(60);
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// The pool whose masters the test replaces with real ones, and their ids.
const POOL: i64 = 4;
const BM09: i64 = 9;
const BM10: i64 = 10;
/// Balanced: no lock, no current master.
const BALANCED: &str = "t-w1064-ix-009";
/// Locked to bm10 in the fixture.
const LOCKED: &str = "t-w1064-ix-003";
/// Given the legacy template below.
const LEGACY: &str = "t-w1064-ix-010";
/// Disabled in the fixture.
const DISABLED: &str = "t-w1064-ix-007";

/// A custom template in the original's `%(name)r` syntax, as existing
/// databases hold them, for today's `buildbot-worker`. `%%` is a literal %.
const LEGACY_TEMPLATE: &str = r#"# A custom template in the original's syntax; keeps 100%% of the log.
import os

from buildbot_worker.bot import Worker
from twisted.application import service
from twisted.python.log import FileLogObserver, ILogObserver
from twisted.python.logfile import LogFile

basedir = %(basedir)r
buildmaster_host = %(buildmaster_host)r
port = %(port)r
slavename = %(slavename)r
passwd = %(passwd)r

application = service.Application('buildbot-worker')
logfile = LogFile.fromFullPath(os.path.join(basedir, 'twistd.log'), rotateLength=1000000, maxRotatedFiles=10)
application.setComponent(ILogObserver, FileLogObserver(logfile).emit)
s = Worker(buildmaster_host, port, slavename, passwd, basedir, 600, umask=0o022, maxdelay=300)
s.setServiceParent(application)
"#;

/// Masters, an allocator and a scratch directory for one test.
struct World {
    venv: &'static Venv,
    tmp: TempDir,
    masters: Vec<(i64, Master)>,
    slavealloc: Slavealloc,
}

impl World {
    /// Starts a real master for each of `master_ids` (the pool's masters, in
    /// order), accepting `slaves` with their fixture passwords, then loads
    /// the sample fleet pointing those masters at them and starts
    /// slavealloc on it.
    fn start(master_ids: &[i64], slaves: &[&str]) -> World {
        let venv = Venv::shared().expect("the Buildbot virtualenv");
        let bins = binaries().expect("the slavealloc and runslave binaries");
        let tmp = tempfile::tempdir().unwrap();
        let mut dump = fleet::sample_fleet().unwrap();

        let accounts: Vec<WorkerAccount> = slaves
            .iter()
            .map(|name| WorkerAccount::new(name, &fleet::password_of(&dump, name).unwrap()))
            .collect();
        // Every master accepts every worker of the test, so a worker sent to
        // the wrong master would connect there, and the test would see it.
        let starting: Vec<_> = master_ids
            .iter()
            .map(|id| {
                let start = Master::spawn(venv, tmp.path(), &format!("bm{id:02}"), &accounts);
                (*id, start.expect("a Buildbot master process"))
            })
            .collect();
        let masters: Vec<(i64, Master)> = starting
            .into_iter()
            .map(|(id, m)| (id, m.ready().expect("a running Buildbot master")))
            .collect();

        let tables = &mut dump["tables"];
        for m in tables["masters"].as_array_mut().unwrap() {
            if let Some((_, real)) = masters.iter().find(|(id, _)| m["masterid"] == *id) {
                assert_eq!(m["poolid"], POOL);
                m["fqdn"] = json!("127.0.0.1");
                m["pb_port"] = json!(real.pb_port());
            }
        }
        for name in slaves {
            let s = slave_row_mut(tables, name);
            s["basedir"] = json!(basedir_of(tmp.path(), name));
        }
        tables["tac_templates"]
            .as_array_mut()
            .unwrap()
            .push(json!({"tplid": 100, "name": "legacy-buildbot-worker", "template": LEGACY_TEMPLATE}));
        slave_row_mut(tables, LEGACY)["custom_tplid"] = json!(100);

        let db = fleet::dbinit(tmp.path(), &dump).unwrap();

        let config = tmp.path().join("slavealloc.toml");
        fs::write(&config, "[tac]\ndefault_template = \"buildbot-worker\"\n").unwrap();
        let slavealloc = Slavealloc::start(
            &bins.slavealloc,
            &[
                "--config".as_ref(),
                config.as_os_str(),
                "--db".as_ref(),
                db.as_ref(),
                "--no-ui".as_ref(),
            ],
            tmp.path(),
        )
        .expect("slavealloc serve");
        World {
            venv,
            tmp,
            masters,
            slavealloc,
        }
    }

    fn master(&self, id: i64) -> &Master {
        &self.masters.iter().find(|(i, _)| *i == id).unwrap().1
    }

    fn basedir(&self, slave: &str) -> PathBuf {
        let dir = PathBuf::from(basedir_of(self.tmp.path(), slave));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Runs runslave for `slave` with `extra` options, as a machine's boot
    /// script would.
    fn runslave(&self, slave: &str, extra: &[&str]) -> Finished {
        let bins = binaries().unwrap();
        let done = run_bounded(
            "runslave",
            Command::new(&bins.runslave)
                .arg("--allocator-url")
                .arg(format!("{}/gettac/SLAVE", self.slavealloc.url()))
                .args(["--slavename", slave, "--basedir"])
                .arg(self.basedir(slave))
                .args(extra),
            &self.tmp.path().join(format!("runslave-{slave}.log")),
            COMMAND_LIMIT,
        )
        .unwrap();
        assert!(done.status.success(), "runslave {slave} failed: {}", done.output);
        done
    }

    /// The slave's row through the REST API.
    fn slave(&self, name: &str) -> Value {
        let url = format!("{}/api/slaves/{name}?byname=1", self.slavealloc.url());
        let body = ureq::get(&url).call().unwrap().into_string().unwrap();
        serde_json::from_str(&body).unwrap()
    }

    /// Asserts that `worker` is connected to master `id` and to no other.
    fn assert_connected_to(&self, worker: &str, id: i64, guard: &WorkerGuard) {
        let master = self.master(id);
        if let Err(e) = master.wait_connected(worker, CONNECT_LIMIT) {
            panic!("{e}\n{}\n{}", guard.log_tail(), self.slavealloc.log_tail());
        }
        for (other_id, other) in &self.masters {
            if *other_id != id {
                assert!(
                    !other.is_connected(worker).unwrap(),
                    "{worker} is also connected to {}",
                    other.name()
                );
            }
        }
    }
}

fn basedir_of(root: &Path, slave: &str) -> String {
    // A quote and a space in every base directory: the tac must carry them
    // as a Python literal.
    root.join("workers")
        .join(format!("{slave} (it's here)"))
        .display()
        .to_string()
}

fn slave_row_mut<'a>(tables: &'a mut Value, name: &str) -> &'a mut Value {
    fleet::slave_row_mut(tables, name).unwrap()
}

#[test]
fn workers_connect_to_the_master_slavealloc_names() {
    let world = World::start(&[BM09, BM10], &[BALANCED, LOCKED, LEGACY]);

    // The buildbot-worker template, balanced: runslave --no-start writes the
    // tac, then the worker is started from it as runslave would.
    let balanced = WorkerGuard::new(world.venv, &world.basedir(BALANCED));
    let done = world.runslave(BALANCED, &["--no-start"]);
    assert!(
        balanced.running_pid().is_none(),
        "--no-start started a worker: {}",
        done.output
    );
    let tac = fs::read_to_string(world.basedir(BALANCED).join("buildbot.tac")).unwrap();
    assert!(tac.contains("Application('buildbot-worker')"), "{tac}");
    let started = balanced.start().unwrap();
    assert!(
        started.status.success(),
        "buildbot-worker start: {}\n{}",
        started.output,
        balanced.log_tail()
    );
    let chosen = world.slave(BALANCED)["current_masterid"].as_i64().unwrap();
    assert!([BM09, BM10].contains(&chosen), "{BALANCED} was given master {chosen}");
    world.assert_connected_to(BALANCED, chosen, &balanced);

    // Locked to bm10: it goes there whatever the balance says.
    let locked = WorkerGuard::new(world.venv, &world.basedir(LOCKED));
    world.runslave(LOCKED, &["--no-start"]);
    let started = locked.start().unwrap();
    assert!(
        started.status.success(),
        "buildbot-worker start: {}\n{}",
        started.output,
        locked.log_tail()
    );
    assert_eq!(world.slave(LOCKED)["current_masterid"], BM10);
    world.assert_connected_to(LOCKED, BM10, &locked);

    // A legacy %(name)r template, through runslave's whole boot sequence:
    // runslave itself starts the worker with the venv's buildbot-worker.
    let legacy = WorkerGuard::new(world.venv, &world.basedir(LEGACY));
    let buildbot_worker = world.venv.bin("buildbot-worker");
    world.runslave(LEGACY, &["--buildslave-cmd", buildbot_worker.to_str().unwrap()]);
    let tac = fs::read_to_string(world.basedir(LEGACY).join("buildbot.tac")).unwrap();
    assert!(tac.contains("keeps 100% of the log"), "{tac}");
    let chosen = world.slave(LEGACY)["current_masterid"].as_i64().unwrap();
    world.assert_connected_to(LEGACY, chosen, &legacy);

    // All three are still connected: nothing displaced anything.
    assert!(world.master(BM10).is_connected(LOCKED).unwrap());
    assert!(legacy.running_pid().is_some() && balanced.running_pid().is_some());
}

#[test]
fn a_disabled_slaves_tac_does_not_start_a_worker_and_says_why() {
    let world = World::start(&[BM09, BM10], &[DISABLED]);
    let worker = WorkerGuard::new(world.venv, &world.basedir(DISABLED));
    world.runslave(DISABLED, &["--no-start"]);
    let tac = fs::read_to_string(world.basedir(DISABLED).join("buildbot.tac")).unwrap();
    assert!(tac.starts_with("# AUTOMATICALLY GENERATED - DO NOT MODIFY"), "{tac}");

    // `buildbot-worker start` runs the tac, which says why it stops; the
    // start command then gives up waiting for a worker that never came.
    let started = worker.start().unwrap();
    assert!(
        started.output.contains("SLAVE DISABLED; NOT STARTING"),
        "buildbot-worker start did not say why: {}",
        started.output
    );
    assert!(
        worker.running_pid().is_none(),
        "a worker runs for a disabled slave: {}",
        started.output
    );
    for (_, master) in &world.masters {
        assert!(!master.is_connected(DISABLED).unwrap());
    }
    // And slavealloc recorded that the slave is on no master.
    assert_eq!(world.slave(DISABLED)["current_masterid"], Value::Null);
}
