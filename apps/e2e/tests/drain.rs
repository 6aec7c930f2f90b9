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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use slavealloc_e2e::buildbot::{Master, WorkerAccount};
use slavealloc_e2e::daemon::Slavealloc;
use slavealloc_e2e::fleet;
use slavealloc_e2e::process::{run_bounded, tail};
use slavealloc_e2e::runslave::Supervised;
use slavealloc_e2e::venv::Venv;
use slavealloc_e2e::workspace::binaries;
use tempfile::TempDir;

const LIMIT: Duration = Duration::from_secs(60);
/// Pool tests-win: bm09 and bm10 in fixtures/sample-fleet.json.
const BM09: i64 = 9;
const BM10: i64 = 10;
/// Enabled, unlocked slaves of one silo of tests-win recorded on bm09 in
/// the fixture, so that their first tac names bm09 with nothing changed
/// (t-w1064-ix-001, 003, 005 and 007 are recorded on bm10, 003 locked to it
/// and 007 disabled).
const WORKERS: [&str; 4] = ["t-w1064-ix-002", "t-w1064-ix-004", "t-w1064-ix-006", "t-w1064-ix-008"];
/// A slave of the same silo that has never booted.
const NEWCOMER: &str = "t-w1064-ix-009";
/// How long the slow builder's build sleeps (master.cfg reads it from
/// e2e.json).
const SLOW_SECONDS: u64 = 15;
/// `--until +40s`.
const UNTIL: Duration = Duration::from_secs(40);
/// How late after its end bm09 may come back: `[holds] check_every` is 1 s.
const RESUME_SLACK: Duration = Duration::from_secs(5);

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
    let body = agent()
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .into_string()
        .unwrap();
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

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

impl World {
    fn start() -> World {
        let venv = Venv::shared().expect("the Buildbot virtualenv");
        let bins = binaries().expect("the slavealloc and runslave binaries");
        let tmp = tempfile::tempdir().unwrap();
        let mut dump = fleet::sample_fleet().unwrap();
        let names: Vec<&str> = WORKERS.iter().chain([&NEWCOMER]).copied().collect();
        let accounts: Vec<WorkerAccount> = names
            .iter()
            .map(|n| WorkerAccount::new(n, &fleet::password_of(&dump, n).unwrap()))
            .collect();
        let starting: Vec<_> = [BM09, BM10]
            .iter()
            .map(|id| {
                let name = format!("bm{id:02}");
                let mut e2e = Master::e2e_json(&name, &accounts);
                e2e["slow_seconds"] = json!(SLOW_SECONDS);
                (
                    *id,
                    Master::spawn_with(venv, tmp.path(), &name, "master.cfg", &e2e, &[]).unwrap(),
                )
            })
            .collect();
        let masters: Vec<(i64, Master)> = starting.into_iter().map(|(id, m)| (id, m.ready().unwrap())).collect();
        let real: Vec<(i64, &Master)> = masters.iter().map(|(id, m)| (*id, m)).collect();
        fleet::point_at(&mut dump, &real, &names, &tmp.path().join("workers"));
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

    fn runslave_log(&self, slave: &str) -> PathBuf {
        self.tmp.path().join(format!("runslave-{slave}.log"))
    }

    /// `runslave --supervise` for `slave`, as its systemd unit runs it
    /// (short pauses between restarts, for the test).
    fn supervise(&self, slave: &str) -> Supervised {
        let log = fs::File::create(self.runslave_log(slave)).unwrap();
        Supervised::spawn(
            &format!("runslave --supervise {slave}"),
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

    /// The slavealloc side of `slave`'s next tac: why it would get which
    /// master, each master of its pool with its peers (nothing recorded).
    fn explain(&self, slave: &str) -> Value {
        get(&self.api(&format!("/api/gettac/{slave}?explain=1")))["explain"].clone()
    }

    /// Panics with `what` and what explains it: the daemon's log (its
    /// polls, its requests to Buildbot), both masters' logs and worker
    /// lists, one runslave's log.
    fn fail(&self, what: &str) -> ! {
        let workers = |id: i64| {
            try_get(&format!("{}/workers", self.master(id).api_url()))
                .map_or_else(|| "(no answer)".to_owned(), |doc| doc["workers"].to_string())
        };
        panic!(
            "{what}\n--- slavealloc ---\n{}\n--- bm09 ---\n{}\nworkers: {}\n--- bm10 ---\n{}\nworkers: {}\n{}",
            self.slavealloc.log_tail(),
            self.master(BM09).log_tail(),
            workers(BM09),
            self.master(BM10).log_tail(),
            workers(BM10),
            tail(&self.runslave_log(WORKERS[0]), 20),
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

/// Each master of `explain`'s list by nickname, with its peer count.
fn peers(explain: &Value) -> Vec<(String, u64)> {
    explain["masters"]
        .as_array()
        .unwrap_or_else(|| panic!("no masters: {explain}"))
        .iter()
        .map(|m| (m["nickname"].as_str().unwrap().to_owned(), m["peers"].as_u64().unwrap()))
        .collect()
}

fn peers_on(explain: &Value, nickname: &str) -> u64 {
    peers(explain)
        .into_iter()
        .find(|(n, _)| n == nickname)
        .unwrap_or_else(|| panic!("{nickname} not in {explain}"))
        .1
}

/// Starts the slow builder on `master` and answers its builderid.
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
    // Declared after the world: dropped (stopped) before the masters.
    let mut supervised: Vec<Supervised> = WORKERS.iter().map(|w| world.supervise(w)).collect();
    world.wait("all four workers on bm09", LIMIT, |w| {
        WORKERS.iter().all(|n| w.where_connected(n) == Some(BM09))
    });
    // What a new slave of their silo would see now: the four on bm09.
    let before = world.explain(NEWCOMER);
    assert_eq!(peers_on(&before, "bm09"), 4, "{before}");
    let bm10_before = peers_on(&before, "bm10");

    // A slow build on one of them.
    let bm09 = world.master(BM09);
    let builderid = force_slow_build(bm09);
    let build_url = format!("{}/builds?builderid={builderid}", bm09.api_url());
    let mut workerid = None;
    world.wait("the slow build to start", LIMIT, |_| {
        workerid = get(&build_url)["builds"][0]["workerid"].as_i64();
        workerid.is_some()
    });
    let worker = get(&format!("{}/workers/{}", bm09.api_url(), workerid.unwrap()));
    let busy = worker["workers"][0]["name"].as_str().unwrap().to_owned();
    assert!(WORKERS.contains(&busy.as_str()), "{worker}");

    // The drain: one command, and nobody touches a worker from here on.
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
    // The hold exists from here: its end is 40 s after some moment between
    // `started` and now.
    let drained = Instant::now();
    assert!(drain.status.success(), "drain: {}", drain.output);
    assert!(drain.output.contains("drained gracefully"), "{}", drain.output);

    let mut readings: Vec<(u64, Vec<String>)> = Vec::new();
    let mut busy_left_while_building = false;
    let mut busy_on_bm10_at = None;
    world.wait("every worker on bm10", LIMIT, |w| {
        let status = get(&w.api("/api/masters/bm09/drain?byname=1"));
        assert_eq!(status["hold"]["note"], "upgrade", "{status}");
        assert_eq!(status["hold"]["graceful"], true, "{status}");
        if let Some(n) = status["progress"]["connected"].as_u64() {
            let names: Vec<String> = serde_json::from_value(status["progress"]["workers"].clone()).unwrap();
            if readings.last().is_none_or(|(last, _)| *last != n) {
                readings.push((n, names));
            }
        }
        let complete = get(&build_url)["builds"][0]["complete"] == true;
        // One reading per worker and iteration: a worker that reconnects
        // between two readings must not count as on bm10 in one and not
        // in the other.
        let places: Vec<(&str, Option<i64>)> = WORKERS.iter().map(|n| (*n, w.where_connected(n))).collect();
        let on_bm10 = |name: &str| places.iter().any(|(n, at)| *n == name && *at == Some(BM10));
        if busy_on_bm10_at.is_none() && on_bm10(&busy) {
            busy_on_bm10_at = Some(unix_now());
            busy_left_while_building = !complete;
        }
        WORKERS.iter().all(|n| on_bm10(n))
    });
    let took = started.elapsed();
    eprintln!(
        "graceful drain of 4 workers (one in a {SLOW_SECONDS} s build, pace 2): all on bm10 {took:.1?} after `drain`"
    );

    // The busy worker finished its build on bm09 first.
    assert!(!busy_left_while_building, "{busy} moved before its build was done");
    let build = get(&build_url)["builds"][0].clone();
    assert_eq!(build["complete"], true, "{build}");
    assert_eq!(build["results"], 0, "the build finished, SUCCESS: {build}");
    let complete_at = build["complete_at"].as_f64().unwrap();
    let on_bm10_at = busy_on_bm10_at.unwrap();
    assert!(
        complete_at <= on_bm10_at,
        "{busy}'s build completed at {complete_at}, after it was seen on bm10 at {on_bm10_at:.1}"
    );

    // The status followed the polls: it named the workers still connected
    // (all of them ours) while they left, down to none (its first reading
    // may precede bm09's first poll since the drain).
    for (n, names) in &readings {
        assert_eq!(*n as usize, names.len(), "{readings:?}");
        assert!(names.iter().all(|w| WORKERS.contains(&w.as_str())), "{readings:?}");
    }
    let counts: Vec<u64> = readings.iter().map(|(n, _)| *n).collect();
    assert!(
        counts.iter().any(|n| *n >= 2) && counts.windows(2).any(|w| w[1] < w[0]),
        "progress went down: {readings:?}"
    );
    world.wait(
        "the drain status to count no worker on bm09",
        Duration::from_secs(10),
        |w| get(&w.api("/api/masters/bm09/drain?byname=1"))["progress"]["connected"] == 0,
    );

    // At its end bm09 comes back by itself: not before, and at most a few
    // seconds after.
    let deadline = drained + UNTIL + RESUME_SLACK;
    world.wait(
        "bm09 enabled again at its end",
        deadline.saturating_duration_since(Instant::now()),
        |w| {
            let enabled = get(&w.api("/api/masters/9"))["enabled"] == true;
            if enabled && started.elapsed() < UNTIL {
                w.fail(&format!(
                    "bm09 enabled {:.1?} after the drain, before its end",
                    started.elapsed()
                ));
            }
            enabled
        },
    );
    let entries = get(&world.api("/api/audit?kind=lifecycle"));
    assert!(
        entries.as_array().unwrap().iter().any(|e| e["table_name"] == "masters"
            && e["row_id"] == BM09
            && e["new_values"]["lifecycle"] == "resumed: until reached"
            && e["actor"] == "slavealloc"),
        "{entries}"
    );
    assert!(
        get(&world.api("/api/masters/bm09/drain?byname=1"))["hold"].is_null(),
        "the hold has ended"
    );

    // The next new boot gets bm09: of its pool and silo, bm09 has none of
    // its peers now and bm10 the four more it took.
    let after = world.explain(NEWCOMER);
    assert_eq!(after["reason"], "balanced", "{after}");
    assert_eq!(after["master"], "bm09", "{after}");
    assert_eq!(peers_on(&after, "bm09"), 0, "{after}");
    assert_eq!(peers_on(&after, "bm10"), bm10_before + 4, "{after}");
    let basedir = world.basedir(NEWCOMER);
    let boot = run_bounded(
        "runslave --no-start",
        Command::new(&binaries().unwrap().runslave)
            .arg("--allocator-url")
            .arg(format!("{}/gettac/SLAVE", world.slavealloc.url()))
            .args(["--slavename", NEWCOMER, "--no-start", "--basedir"])
            .arg(&basedir),
        &world.runslave_log(NEWCOMER),
        LIMIT,
    )
    .unwrap();
    assert!(boot.status.success(), "runslave {NEWCOMER}: {}", boot.output);
    let tac = fs::read_to_string(basedir.join("buildbot.tac")).unwrap();
    let port = format!("port = {}", world.master(BM09).pb_port());
    assert!(
        tac.lines().any(|l| l.trim() == port),
        "{NEWCOMER}'s tac, not {port}:\n{tac}"
    );
    let slave = get(&world.api(&format!("/api/slaves/{NEWCOMER}?byname=1")));
    assert_eq!(slave["current_masterid"], BM09, "{slave}");

    // Stopped as a service manager would: runslave takes its worker down
    // with it.
    for (name, mut runslave) in WORKERS.iter().zip(supervised.drain(..)) {
        let stopped = runslave.stop().unwrap();
        assert!(
            stopped.status.success() && stopped.left_behind.is_empty(),
            "runslave {name}: {stopped:?}\n{}",
            tail(&world.runslave_log(name), 20)
        );
    }
}
