//! The live fleet against real Buildbot: `slavealloc serve` polls two real
//! Buildbot 4.3 masters' data API (`[poll] interval = "1s"`) and its API
//! says which worker is connected where, which disconnected and when it
//! was last seen, which are connected elsewhere than recorded (drift), and
//! that a stopped master is unreachable and its workers' liveness unknown,
//! not "disconnected".
//!
//! Every process started here is owned by a guard and stopped when the test
//! ends, pass or fail.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use slavealloc_e2e::buildbot::{Master, WorkerAccount, WorkerGuard};
use slavealloc_e2e::daemon::Slavealloc;
use slavealloc_e2e::fleet;
use slavealloc_e2e::process::{run_bounded, wait_until};
use slavealloc_e2e::venv::Venv;
use slavealloc_e2e::workspace::binaries;
use tempfile::TempDir;

const LIMIT: Duration = Duration::from_secs(60);
/// Pool tests-win and its two masters in fixtures/sample-fleet.json.
const BM09: i64 = 9;
const BM10: i64 = 10;
const FIRST: &str = "t-w1064-ix-001";
const SECOND: &str = "t-w1064-ix-002";
struct World {
    venv: &'static Venv,
    tmp: TempDir,
    masters: Vec<(i64, Master)>,
    slavealloc: Slavealloc,
}

impl World {
    /// bm09 and bm10 real, every other master of the fixture without a web
    /// port (so not polled), slavealloc polling every second.
    fn start() -> World {
        let venv = Venv::shared().expect("the Buildbot virtualenv");
        let bins = binaries().expect("the slavealloc and runslave binaries");
        let tmp = tempfile::tempdir().unwrap();
        let mut dump = fleet::sample_fleet().unwrap();
        let accounts = [FIRST, SECOND].map(|name| WorkerAccount::new(name, &fleet::password_of(&dump, name).unwrap()));
        let starting: Vec<_> = [BM09, BM10]
            .iter()
            .map(|id| {
                (
                    *id,
                    Master::spawn(venv, tmp.path(), &format!("bm{id:02}"), &accounts).unwrap(),
                )
            })
            .collect();
        let masters: Vec<(i64, Master)> = starting.into_iter().map(|(id, m)| (id, m.ready().unwrap())).collect();
        let real: Vec<(i64, &Master)> = masters.iter().map(|(id, m)| (*id, m)).collect();
        fleet::point_at(&mut dump, &real, &[FIRST, SECOND], &tmp.path().join("workers"));
        let db = fleet::dbinit(tmp.path(), &dump).unwrap();
        let config = tmp.path().join("slavealloc.toml");
        fs::write(
            &config,
            "[tac]\ndefault_template = \"buildbot-worker\"\n\n[poll]\ninterval = \"1s\"\njitter = \"0\"\ntimeout = \"3s\"\n",
        )
        .unwrap();
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
        .unwrap();
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
        let dir = self.tmp.path().join("workers").join(slave);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// runslave writes the tac; the worker is started from it.
    fn boot(&self, slave: &str) -> WorkerGuard {
        let guard = WorkerGuard::new(self.venv, &self.basedir(slave));
        let done = run_bounded(
            "runslave",
            Command::new(&binaries().unwrap().runslave)
                .arg("--allocator-url")
                .arg(format!("{}/gettac/SLAVE", self.slavealloc.url()))
                .args(["--slavename", slave, "--no-start", "--basedir"])
                .arg(self.basedir(slave)),
            &self.tmp.path().join(format!("runslave-{slave}.log")),
            LIMIT,
        )
        .unwrap();
        assert!(done.status.success(), "runslave {slave}: {}", done.output);
        guard
    }

    fn start_worker(&self, guard: &WorkerGuard) {
        let started = guard.start().unwrap();
        assert!(started.status.success(), "{}\n{}", started.output, guard.log_tail());
    }

    fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.slavealloc.url());
        serde_json::from_str(&ureq::get(&url).call().unwrap().into_string().unwrap()).unwrap()
    }

    fn slave(&self, name: &str) -> Value {
        self.get(&format!("/api/slaves/{name}?byname=1"))
    }

    /// Waits until `what` holds of the API's answers, at most a few polls.
    fn wait(&self, what: &str, mut check: impl FnMut(&World) -> bool) {
        wait_until(what, Duration::from_secs(20), || Ok(check(self).then_some(())))
            .unwrap_or_else(|e| panic!("{e}\n{}", self.slavealloc.log_tail()));
    }
}

#[test]
fn the_api_shows_where_real_workers_are_connected() {
    let mut world = World::start();

    // Booted through slavealloc: connected where it was sent, within a poll.
    let first = world.boot(FIRST);
    world.start_worker(&first);
    let given = world.slave(FIRST)["current_masterid"].as_i64().unwrap();
    world.master(given).wait_connected(FIRST, LIMIT).unwrap();
    let nickname = format!("bm{given:02}");
    world.wait("the first worker to show as connected", |w| {
        w.slave(FIRST)["live"]["state"] == "connected"
    });
    let live = world.slave(FIRST)["live"].clone();
    assert_eq!(live["connected_master"], json!(nickname), "{live}");
    assert_eq!(live["fresh"], json!(true));
    assert_eq!(live["last_gettac_from"], json!("127.0.0.1"));
    assert!(
        live["connected_since"].is_string() && live["last_gettac"].is_string(),
        "{live}"
    );
    let master = world.get(&format!("/api/masters/{given}"));
    assert_eq!(master["live"]["reachable"], json!(true), "{master}");
    assert_eq!(master["live"]["buildbot_version"], json!("4.3.0"));
    let connected = world.get(&format!("/api/slaves?connected=1&connected_master={nickname}"));
    let names: Vec<&str> = connected
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [FIRST]);

    // Started by hand against the other master: drift.
    let second = world.boot(SECOND);
    let recorded = world.slave(SECOND)["current_masterid"].as_i64().unwrap();
    let other = if recorded == BM09 { BM10 } else { BM09 };
    let tac_path = world.basedir(SECOND).join("buildbot.tac");
    let tac = fs::read_to_string(&tac_path).unwrap();
    let port_line = tac.lines().find(|l| l.starts_with("port = ")).unwrap().to_owned();
    let tac = tac.replace(&port_line, &format!("port = {}", world.master(other).pb_port()));
    fs::write(&tac_path, tac).unwrap();
    world.start_worker(&second);
    world.master(other).wait_connected(SECOND, LIMIT).unwrap();
    world.wait("the drift report to list the second worker", |w| {
        w.get("/api/drift")["elsewhere"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == SECOND && d["connected_master"] == json!(format!("bm{other:02}")))
    });

    // Stopped: disconnected, with its last sighting kept.
    drop(first);
    world.wait("the first worker to show as disconnected", |w| {
        w.slave(FIRST)["live"]["state"] == "disconnected"
    });
    assert!(world.slave(FIRST)["live"]["last_seen"].is_string());
    let stale = world.get("/api/slaves?connected=0&pool=tests-win");
    assert!(stale.as_array().unwrap().iter().any(|s| s["name"] == FIRST));

    // A stopped master: unreachable, and its worker's liveness unknown.
    let index = world.masters.iter().position(|(id, _)| *id == other).unwrap();
    drop(world.masters.remove(index));
    world.wait("the stopped master to show as unreachable", |w| {
        w.get(&format!("/api/masters/{other}"))["live"]["reachable"] == json!(false)
    });
    let live = world.slave(SECOND)["live"].clone();
    assert_eq!(live["state"], json!("unknown"), "not known to be disconnected: {live}");
    assert!(world.get(&format!("/api/masters/{other}"))["live"]["error"].is_string());
    drop(second);
}
