//! A graceful drain against real Buildbot, with nobody touching a worker:
//! four workers under `runslave --supervise` connected to master bm09, one
//! of them in the middle of a slow build; `slavealloc drain bm09 --graceful
//! -m upgrade --until +40s`; every worker is connected to bm10 within 60 s,
//! the slow build finishes first (SUCCESS, its worker still on bm09 until
//! then), and at the end time bm09 is enabled again by itself and takes
//! the next new boot.
//!
//! Every process started here is owned by a guard and stopped when the test
//! ends, pass or fail.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use slavealloc_e2e::buildbot::{Master, WorkerAccount};
use slavealloc_e2e::daemon::Slavealloc;
use slavealloc_e2e::fleet;
use slavealloc_e2e::process::{run_bounded, ChildGuard};
use slavealloc_e2e::venv::Venv;
use slavealloc_e2e::workspace::binaries;
use tempfile::TempDir;

const LIMIT: Duration = Duration::from_secs(60);
/// Pool tests-win: bm09 and bm10 in fixtures/sample-fleet.json.
const BM09: i64 = 9;
const BM10: i64 = 10;
/// Enabled, unlocked slaves of one silo of tests-win, recorded on bm09.
const WORKERS: [&str; 4] = ["t-w1064-ix-002", "t-w1064-ix-004", "t-w1064-ix-006", "t-w1064-ix-008"];
/// A slave of the same silo that has never booted.
const NEWCOMER: &str = "t-w1064-ix-009";
/// The slow builder's `sleep` (master.cfg's default).
const SLOW_SECONDS: u64 = 15;

struct World {
    tmp: TempDir,
    masters: Vec<(i64, Master)>,
    slavealloc: Slavealloc,
    venv: &'static Venv,
}

/// A client with a deadline and no pooled connections: a request that
/// hangs, or a connection the master closed while idle, costs one check,
/// not the whole wait.
fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .max_idle_connections(0)
        .build()
}

fn try_get(url: &str) -> Option<Value> {
    let body = agent().get(url).call().ok()?.into_string().ok()?;
    serde_json::from_str(&body).ok()
}

fn get(url: &str) -> Value {
    let body = agent().get(url).call().unwrap().into_string().unwrap();
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
}

fn post(url: &str, body: &Value) -> Value {
    let r = agent()
        .post(url)
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    serde_json::from_str(&r.into_string().unwrap()).unwrap()
}

impl World {
    fn start() -> World {
        let venv = Venv::shared().expect("the Buildbot virtualenv");
        let bins = binaries().expect("the slavealloc and runslave binaries");
        let tmp = tempfile::tempdir().unwrap();
        let mut dump = fleet::sample_fleet().unwrap();
        let names = WORKERS.iter().chain([&NEWCOMER]);
        let accounts: Vec<WorkerAccount> = names
            .clone()
            .map(|n| WorkerAccount::new(n, &fleet::password_of(&dump, n).unwrap()))
            .collect();
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
        let slaves: Vec<&str> = names.clone().copied().collect();
        fleet::point_at(&mut dump, &real, &slaves, &tmp.path().join("workers"));
        let db = fleet::dbinit(tmp.path(), &dump).unwrap();
        let config = tmp.path().join("slavealloc.toml");
        fs::write(
            &config,
            "[tac]\ndefault_template = \"buildbot-worker\"\n\n[poll]\ninterval = \"1s\"\njitter = \"0\"\ntimeout = \"3s\"\n\n\
             [holds]\ncheck_every = \"1s\"\ngraceful_pace = 2\n",
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
            tmp,
            masters,
            slavealloc,
            venv,
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

    /// `runslave --supervise` for `slave`, as its systemd unit runs it
    /// (short pauses between restarts, for the test).
    fn supervise(&self, slave: &str) -> ChildGuard {
        let log = fs::File::create(self.tmp.path().join(format!("runslave-{slave}.log"))).unwrap();
        ChildGuard::spawn(
            "runslave --supervise",
            Command::new(&binaries().unwrap().runslave)
                .arg("--allocator-url")
                .arg(format!("{}/gettac/SLAVE", self.slavealloc.url()))
                .args(["--slavename", slave, "--supervise", "-v"])
                .args(["--min-run", "1", "--restart-delay", "0.2", "--max-restart-delay", "1"])
                .arg("--buildslave-cmd")
                .arg(self.venv.bin("buildbot-worker"))
                .arg("--basedir")
                .arg(self.basedir(slave))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
        .unwrap()
    }

    fn api(&self, path: &str) -> String {
        format!("{}{path}", self.slavealloc.url())
    }

    /// The master `worker` is connected to, as the masters' own REST API
    /// says (`connected_to` non-empty).
    fn where_connected(&self, worker: &str) -> Option<i64> {
        [BM09, BM10].into_iter().find(|id| {
            try_get(&format!("{}/workers", self.master(*id).api_url())).is_some_and(|doc| {
                doc["workers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|w| w["name"] == worker && w["connected_to"].as_array().is_some_and(|c| !c.is_empty()))
            })
        })
    }

    fn fail(&self, what: &str) -> ! {
        let workers = try_get(&format!("{}/workers", self.master(BM09).api_url()));
        eprintln!("bm09's workers: {workers:?}");
        let runslave =
            fs::read_to_string(self.tmp.path().join(format!("runslave-{}.log", WORKERS[0]))).unwrap_or_default();
        panic!(
            "{what}\n--- slavealloc ---\n{}\n--- bm09 ---\n{}\n--- runslave {} ---\n{runslave}",
            self.slavealloc.log_tail(),
            self.master(BM09).log_tail(),
            WORKERS[0]
        )
    }

    fn wait(&self, what: &str, limit: Duration, mut done: impl FnMut(&World) -> bool) {
        let start = Instant::now();
        while !done(self) {
            if start.elapsed() > limit {
                self.fail(&format!("{what}: not within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Starts the slow builder on `master` and answers the build's number.
fn force_slow_build(master: &Master) -> i64 {
    let builders = get(&format!("{}/builders?name=slow", master.api_url()));
    let builderid = builders["builders"][0]["builderid"].as_i64().unwrap();
    let answer = post(
        &format!("{}/forceschedulers/force-slow", master.api_url()),
        &json!({"jsonrpc": "2.0", "method": "force", "params": {"builderid": builderid.to_string()}, "id": 1}),
    );
    assert!(answer["error"].is_null(), "force: {answer}");
    builderid
}

#[test]
fn a_graceful_drain_moves_every_worker_after_its_build_and_the_master_comes_back() {
    let world = World::start();
    let _supervised: Vec<ChildGuard> = WORKERS.iter().map(|w| world.supervise(w)).collect();
    world.wait("all four workers on bm09", LIMIT, |w| {
        WORKERS.iter().all(|n| w.where_connected(n) == Some(BM09))
    });

    // A slow build on one of them.
    let bm09 = world.master(BM09);
    let builderid = force_slow_build(bm09);
    let mut builder = None;
    world.wait("the slow build to start", LIMIT, |w| {
        let builds = get(&format!("{}/builds?builderid={builderid}", w.master(BM09).api_url()));
        builder = builds["builds"][0]["workerid"].as_i64();
        builder.is_some()
    });
    let build_url = format!("{}/builds?builderid={builderid}", bm09.api_url());
    let worker = get(&format!("{}/workers/{}", bm09.api_url(), builder.unwrap()));
    let busy = worker["workers"][0]["name"].as_str().unwrap().to_owned();

    // The drain: one command, nobody touches a worker.
    let started = Instant::now();
    let drain = run_bounded(
        "slavealloc drain",
        Command::new(&binaries().unwrap().slavealloc).args([
            "drain",
            "bm09",
            "--graceful",
            "-m",
            "upgrade",
            "--until",
            "+40s",
            "-A",
            &world.api("/api"),
        ]),
        &world.tmp.path().join("drain.log"),
        LIMIT,
    )
    .unwrap();
    assert!(drain.status.success(), "drain: {}", drain.output);
    assert!(drain.output.contains("drained gracefully"), "{}", drain.output);

    let mut progress_seen = Vec::new();
    let mut busy_left_while_building = false;
    world.wait("every worker on bm10", LIMIT, |w| {
        let status = get(&w.api("/api/masters/bm09/drain?byname=1"));
        assert_eq!(status["hold"]["note"], "upgrade", "{status}");
        if let Some(n) = status["progress"]["connected"].as_u64() {
            progress_seen.push(n);
        }
        let build = get(&build_url);
        let complete = build["builds"][0]["complete"] == true;
        if !complete && w.where_connected(&busy) == Some(BM10) {
            busy_left_while_building = true;
        }
        WORKERS.iter().all(|n| w.where_connected(n) == Some(BM10))
    });
    let took = started.elapsed();
    eprintln!("graceful drain of 4 workers (one in a {SLOW_SECONDS} s build, pace 2): {took:.1?}");
    assert!(!busy_left_while_building, "{busy} moved before its build was done");
    let build = get(&build_url);
    assert_eq!(build["builds"][0]["complete"], true, "{build}");
    assert_eq!(build["builds"][0]["results"], 0, "the build finished, SUCCESS: {build}");
    // The status follows the polls: it counted the workers still connected
    // while they left (its first reading may precede bm09's first poll).
    assert!(
        progress_seen.iter().any(|n| *n >= 2) && progress_seen.windows(2).any(|w| w[1] < w[0]),
        "progress went down: {progress_seen:?}"
    );

    // At the end time bm09 comes back by itself, and takes the next boot.
    world.wait("bm09 enabled again at its end", LIMIT, |w| {
        get(&w.api("/api/masters/9"))["enabled"] == true
    });
    let entries = get(&world.api("/api/audit?kind=lifecycle"));
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["new_values"]["lifecycle"] == "resumed: until reached" && e["actor"] == "slavealloc"),
        "{entries}"
    );
    let tac = ureq::get(&world.api(&format!("/gettac/{NEWCOMER}")))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let port = world.master(BM09).pb_port();
    assert!(
        tac.contains(&format!("port = {port}")) || tac.contains(&port.to_string()),
        "{tac}"
    );
}
