//! Buildbot masters fed their workers by slavealloc, end to end: `slavealloc
//! serve` with a `master` token, a Buildbot 4.3 master whose master.cfg
//! (apps/e2e/buildbot/master-slavealloc.cfg) loads its workers through
//! contrib/slavealloc_workers.py, and real workers whose tacs runslave
//! fetched from the same daemon. A worker with the password slavealloc
//! handed out connects; one with another password is refused; a slave added
//! later connects after `buildbot reconfig`; and with slavealloc stopped a
//! reconfig keeps the workers, from the helper's cache.
//!
//! The fleet is fixtures/sample-fleet.json with pool `tests-win`'s bm09
//! pointed at the real master (bm10 disabled, so balanced slaves go to
//! bm09). Its win10 slaves' password is `w10-p@ss'word"\`: a worker only
//! logs in if every quote and backslash survived slavealloc's JSON, the
//! helper and Buildbot, and the tac.
//!
//! Every process started here is owned by a guard and stopped when the test
//! ends, pass or fail.

// Helpers outside #[test] functions too: a panic is the failure report here.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use slavealloc_e2e::buildbot::{Master, WorkerGuard};
use slavealloc_e2e::daemon::Slavealloc;
use slavealloc_e2e::fleet;
use slavealloc_e2e::process::{pid_alive, run_bounded, Finished};
use slavealloc_e2e::venv::Venv;
use slavealloc_e2e::workspace::{binaries, repo_dir};
use tempfile::TempDir;

/// A worker logs in a second or so after it starts; the bound only ends a
/// worker that never will.
const CONNECT_LIMIT: Duration = Duration::from_secs(60);
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";
const MASTER_TOKEN: &str = "e2e-bm09-master-token-0123";

/// The master under test and its pool's other master.
const BM09: i64 = 9;
const BM10: i64 = 10;
/// Pool tests-win, no lock: balanced onto bm09 once bm10 is disabled.
const BALANCED: &str = "t-w1064-ix-009";
/// Of pool build-linux, locked to bm09 in the test's fleet: listed with its
/// own pool's password.
const LOCKED_IN: &str = "bld-linux64-spot-003";
/// On bm09's list, but its worker is given another password.
const IMPOSTOR: &str = "t-w1064-ix-011";
/// Added through the API once the master runs.
const LATECOMER: &str = "t-w1064-ix-099";

/// The daemon, a master loading its workers from it, a scratch directory.
struct World {
    venv: &'static Venv,
    tmp: TempDir,
    slavealloc: Option<Slavealloc>,
    master: Master,
}

impl World {
    fn start() -> World {
        let venv = Venv::shared().expect("the Buildbot virtualenv");
        let bins = binaries().expect("the slavealloc and runslave binaries");
        let tmp = tempfile::tempdir().unwrap();
        let mut dump = fleet::sample_fleet().unwrap();
        let tables = &mut dump["tables"];
        for name in [BALANCED, LOCKED_IN, IMPOSTOR] {
            slave_row_mut(tables, name)["basedir"] = json!(basedir_of(tmp.path(), name));
        }
        slave_row_mut(tables, LOCKED_IN)["locked_masterid"] = json!(BM09);
        let db = fleet::dbinit(tmp.path(), &dump).unwrap();

        let config = tmp.path().join("slavealloc.toml");
        fs::write(
            &config,
            format!(
                "[tac]\ndefault_template = \"buildbot-worker\"\n\
                 [tokens]\nrelops = \"{ADMIN_TOKEN}\"\n\
                 [tokens.bm09]\nsecret = \"{MASTER_TOKEN}\"\nscope = \"master\"\n"
            ),
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
        .expect("slavealloc serve");

        // The master's token in a file only its user reads, with the
        // newline an editor leaves.
        let token_file = tmp.path().join("slavealloc.token");
        fs::write(&token_file, format!("{MASTER_TOKEN}\n")).unwrap();
        fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).unwrap();
        let e2e = json!({
            "title": "bm09",
            "slavealloc": slavealloc.url(),
            "master": "bm09",
            "token_file": token_file,
            "cache": tmp.path().join("bm09-workers.json"),
        });
        let contrib = repo_dir().join("contrib");
        let master = Master::spawn_with(
            venv,
            tmp.path(),
            "bm09",
            "master-slavealloc.cfg",
            &e2e,
            &[("PYTHONPATH", contrib.as_os_str())],
        )
        .and_then(|m| m.ready())
        .unwrap_or_else(|e| panic!("{e}\n{}", slavealloc.log_tail()));

        let world = World {
            venv,
            tmp,
            slavealloc: Some(slavealloc),
            master,
        };
        // The master is up: point bm09 at it, and take bm10 out of the
        // balance, as an admin would.
        let port = world.master.pb_port();
        world.admin(
            "PUT",
            &format!("/masters/{BM09}"),
            &json!({"fqdn": "127.0.0.1", "pb_port": port}),
        );
        world.admin("PUT", &format!("/masters/{BM10}"), &json!({"enabled": false}));
        world
    }

    fn slavealloc(&self) -> &Slavealloc {
        self.slavealloc.as_ref().expect("slavealloc is running")
    }

    /// A write through the REST API with the admin token; its answer.
    fn admin(&self, method: &str, path: &str, body: &Value) -> Value {
        let url = format!("{}/api{path}", self.slavealloc().url());
        let answer = ureq::request(method, &url)
            .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
            .into_string()
            .unwrap();
        serde_json::from_str(&answer).unwrap()
    }

    fn basedir(&self, slave: &str) -> PathBuf {
        let dir = PathBuf::from(basedir_of(self.tmp.path(), slave));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// runslave --no-start for `slave`, then the worker started from the
    /// tac it wrote, as a machine's boot would; the worker's guard.
    fn boot(&self, slave: &str) -> WorkerGuard {
        let basedir = self.basedir(slave);
        let worker = WorkerGuard::new(self.venv, &basedir);
        let done = run_bounded(
            "runslave",
            Command::new(&binaries().unwrap().runslave)
                .arg("--allocator-url")
                .arg(format!("{}/gettac/SLAVE", self.slavealloc().url()))
                .args(["--slavename", slave, "--basedir"])
                .arg(&basedir)
                .arg("--no-start"),
            &self.tmp.path().join(format!("runslave-{slave}.log")),
            COMMAND_LIMIT,
        )
        .unwrap();
        assert!(done.status.success(), "runslave {slave} failed: {}", done.output);
        let started = worker.start().unwrap();
        assert!(
            started.status.success(),
            "buildbot-worker start {slave}: {}\n{}",
            started.output,
            worker.log_tail()
        );
        worker
    }

    fn wait_connected(&self, slave: &str, worker: &WorkerGuard) {
        if let Err(e) = self.master.wait_connected(slave, CONNECT_LIMIT) {
            panic!("{e}\n{}", worker.log_tail());
        }
    }

    fn reconfig(&self) -> Finished {
        let done = self.master.reconfig().unwrap();
        assert!(
            done.status.success(),
            "buildbot reconfig failed ({}): {}\n{}",
            done.status,
            done.output,
            self.master.log_tail()
        );
        done
    }
}

fn basedir_of(root: &Path, slave: &str) -> String {
    root.join("workers").join(slave).display().to_string()
}

fn slave_row_mut<'a>(tables: &'a mut Value, name: &str) -> &'a mut Value {
    fleet::slave_row_mut(tables, name).unwrap()
}

#[test]
fn a_master_accepts_exactly_the_workers_slavealloc_lists() {
    let started = Instant::now();
    // Declared before every worker guard, so dropped after them: a guard
    // finds its worker through the twistd.pid in world's scratch directory.
    let mut world = World::start();
    // Every enabled slave of tests-win (12 of 13) and the one locked in.
    world
        .master
        .wait_for_log("slavealloc_workers: 13 workers for master bm09", CONNECT_LIMIT)
        .unwrap();
    // The helper's cache holds passwords: only the master's user reads it.
    let cache = fs::metadata(world.tmp.path().join("bm09-workers.json")).unwrap();
    assert_eq!(cache.permissions().mode() & 0o777, 0o600);

    // The password slavealloc put in each tac is the one the master holds.
    let balanced = world.boot(BALANCED);
    world.wait_connected(BALANCED, &balanced);
    let locked_in = world.boot(LOCKED_IN);
    world.wait_connected(LOCKED_IN, &locked_in);

    // A worker with a name on the list and another password is refused.
    let impostor_dir = world.basedir(IMPOSTOR);
    let impostor = WorkerGuard::new(world.venv, &impostor_dir);
    let created = run_bounded(
        "buildbot-worker create-worker",
        Command::new(world.venv.bin("buildbot-worker"))
            .arg("create-worker")
            .arg(&impostor_dir)
            .arg(format!("127.0.0.1:{}", world.master.pb_port()))
            .args([IMPOSTOR, "not-the-pool-password"]),
        &world.tmp.path().join("create-worker.log"),
        COMMAND_LIMIT,
    )
    .unwrap();
    assert!(created.status.success(), "create-worker: {}", created.output);
    // --quiet: plain `start` would wait 10 s for a login that never comes.
    let launched = run_bounded(
        "buildbot-worker start --quiet",
        Command::new(world.venv.bin("buildbot-worker"))
            .args(["start", "--quiet"])
            .arg(&impostor_dir),
        &world.tmp.path().join("impostor-start.log"),
        COMMAND_LIMIT,
    )
    .unwrap();
    assert!(launched.status.success(), "buildbot-worker start: {}", launched.output);
    world
        .master
        .wait_for_log(&format!("invalid login from user '{IMPOSTOR}'"), CONNECT_LIMIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", impostor.log_tail()));
    assert!(!world.master.is_connected(IMPOSTOR).unwrap(), "{IMPOSTOR} logged in");
    assert!(world.master.is_connected(BALANCED).unwrap() && world.master.is_connected(LOCKED_IN).unwrap());

    // A slave added after the master started is unknown to it until a
    // reconfig fetches the list again; then its worker logs in.
    let row = json!({"name": LATECOMER, "distroid": 3, "bitsid": 2, "speedid": 1, "purposeid": 2,
        "dcid": 1, "trustid": 1, "envid": 1, "poolid": 4, "basedir": basedir_of(world.tmp.path(), LATECOMER)});
    world.admin("POST", "/slaves", &row);
    assert!(
        world.master.is_connected(LATECOMER).is_err(),
        "known before the reconfig"
    );
    world.reconfig();
    assert!(
        world
            .master
            .log()
            .contains("slavealloc_workers: 14 workers for master bm09"),
        "{}",
        world.master.log_tail()
    );
    let latecomer = world.boot(LATECOMER);
    world.wait_connected(LATECOMER, &latecomer);

    // slavealloc down: a reconfig keeps the list from the helper's cache,
    // says so in the master's log, and disconnects nobody.
    drop(world.slavealloc.take());
    world.reconfig();
    let log = world.master.log();
    assert!(
        log.contains("cannot reach slavealloc") && log.contains("using the 14 workers cached in"),
        "{}",
        world.master.log_tail()
    );
    for slave in [BALANCED, LOCKED_IN, LATECOMER] {
        assert!(world.master.is_connected(slave).unwrap(), "{slave} was disconnected");
    }
    // Every worker stops with its guard: none outlives the test.
    let guards = [balanced, locked_in, impostor, latecomer];
    let pids: Vec<u32> = guards.iter().filter_map(WorkerGuard::running_pid).collect();
    assert_eq!(pids.len(), guards.len(), "a worker is not running");
    drop(guards);
    for pid in pids {
        assert!(!pid_alive(pid), "worker {pid} outlived its guard");
    }
    eprintln!("worker lists end to end: {:.1} s", started.elapsed().as_secs_f64());
}
