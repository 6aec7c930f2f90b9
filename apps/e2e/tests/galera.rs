//! Past one database server, on MariaDB Galera: a three-node cluster
//! started on loopback from the deployment's node configuration
//! (apps/slavealloc/deploy/galera/galera-node.cnf), one real `slavealloc
//! serve` per node as deployed, and the deployment's nginx cluster site in
//! front of the three.
//!
//! A boot storm of a fresh 2,000-slave fleet through all three daemons
//! stays balanced as if one daemon had served it; concurrent inventory
//! writes never fail with 500 and are seen at once through another node;
//! a node killed with SIGKILL in the middle of a storm costs the survivors
//! nothing but time, its own daemon answers 503 quickly and serves again
//! soon after the node rejoins by IST, nginx hides all of it from the
//! machines, and no allocation a machine was told of is lost.
//!
//! The 2 s and 5 s bounds are the requirements; the figures the
//! test prints (storm rate, the survivors' slowest answer, the time to
//! serve after rejoining) go to the README, not into assertions.

// Helpers outside #[test] functions too: a panic is the failure report here.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{deploy_dir, free_port, have};
use serde_json::{json, Value};
use slavealloc_e2e::daemon::Slavealloc;
use slavealloc_e2e::fleet::dbinit_into;
use slavealloc_e2e::nginx::{cluster_site, Nginx};
use slavealloc_e2e::workspace::binaries;
use slavealloc_fixtures::{generate_fleet, FleetSpec};
use slavealloc_store_sql_testing::galera::GaleraCluster;

/// The storm: 2,000 slaves booting at once, 64 at a time.
const SLAVES: usize = 2000;
const CLIENTS: usize = 64;
/// Longer than any answer may take: a survivor's deadline while the
/// cluster evicts a node is the suspect timeout (5 s) + 4 s.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);

/// One cluster at a time: two would share the machine's two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// 20 pools of 3 enabled masters, 5 silos each (100 pool×silo groups, as
/// many as the issue measured), nobody allocated yet: every gettac
/// allocates.
fn fresh_fleet() -> Value {
    let spec = FleetSpec {
        slaves: SLAVES,
        pools: 20,
        masters_per_pool: 4,
        disabled_masters_per_pool: 1,
        silos_per_pool: 5,
        locked_fraction: 0.0,
        disabled_fraction: 0.0,
        allocated_fraction: 0.0,
        seed: 13,
    };
    let mut dump = serde_json::to_value(generate_fleet(&spec)).unwrap();
    // Nothing to poll: the masters are not real here.
    for m in dump["tables"]["masters"].as_array_mut().unwrap() {
        m["http_port"] = json!(0);
    }
    dump
}

/// The cluster, the fleet loaded through its first node, and a daemon on
/// each node.
struct World {
    dir: tempfile::TempDir,
    cluster: GaleraCluster,
    daemons: Vec<Slavealloc>,
    names: Vec<String>,
    /// Master fqdn → masterid, to read a tac's master.
    masters: HashMap<String, i64>,
}

impl World {
    fn start() -> Option<World> {
        let cnf = deploy_dir().join("galera/galera-node.cnf");
        let cluster = GaleraCluster::start(3, Some(&cnf))?;
        let dir = tempfile::tempdir().unwrap();
        let dump = fresh_fleet();
        dbinit_into(dir.path(), &dump, &cluster.url(0, "")).unwrap();
        let names = column(&dump, "slaves", "name")
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let masters = dump["tables"]["masters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["fqdn"].as_str().unwrap().to_owned(), m["masterid"].as_i64().unwrap()))
            .collect();
        let daemons = (0..cluster.size())
            .map(|i| {
                let log_dir = dir.path().join(format!("daemon{}", i + 1));
                std::fs::create_dir_all(&log_dir).unwrap();
                let url = cluster.url(i, "");
                Slavealloc::start(&binaries().unwrap().slavealloc, &["--db", &url, "--no-ui"], &log_dir).unwrap()
            })
            .collect();
        Some(World {
            dir,
            cluster,
            daemons,
            names,
            masters,
        })
    }

    /// A counter of `SHOW STATUS` summed over the nodes.
    fn cluster_total(&self, variable: &str) -> u64 {
        (0..self.cluster.size())
            .filter_map(|i| self.cluster.status(i, variable)?.parse::<u64>().ok())
            .sum()
    }

    fn urls(&self) -> Vec<String> {
        self.daemons.iter().map(|d| d.url().to_owned()).collect()
    }

    /// Every slave row, read through daemon `via`.
    fn slaves(&self, via: usize) -> Vec<Value> {
        let body = ureq::get(&format!("{}/api/slaves", self.daemons[via].url()))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        let doc: Value = serde_json::from_str(&body).unwrap();
        doc.as_array().unwrap().clone()
    }

    /// Fails unless every pool×silo group is spread over its pool's
    /// enabled masters within one slave, each slave holding an enabled
    /// master of its pool.
    fn assert_balanced(&self) {
        let mut spread: BTreeMap<String, BTreeMap<i64, usize>> = BTreeMap::new();
        for s in self.slaves(0) {
            let silo = ["poolid", "distroid", "bitsid", "purposeid", "dcid", "trustid", "envid"]
                .map(|c| s[c].to_string())
                .join("/");
            let master = s["current_masterid"]
                .as_i64()
                .unwrap_or_else(|| panic!("every slave got a master: {s}"));
            *spread.entry(silo).or_default().entry(master).or_default() += 1;
        }
        assert_eq!(spread.len(), 100);
        let unbalanced: Vec<_> = spread
            .iter()
            .filter(|(_, m)| m.len() != 3 || m.values().max().unwrap() - m.values().min().unwrap() > 1)
            .collect();
        assert!(unbalanced.is_empty(), "unbalanced pool×silo groups: {unbalanced:?}");
    }

    /// Fails unless, for every slave whose latest gettac was answered 200,
    /// the database records the master that answer named.
    fn assert_recorded(&self, answers: &[Answer]) {
        let recorded: HashMap<String, Option<i64>> = self
            .slaves(0)
            .into_iter()
            .map(|s| (s["name"].as_str().unwrap().to_owned(), s["current_masterid"].as_i64()))
            .collect();
        let mut latest: HashMap<&str, &Answer> = HashMap::new();
        for a in answers {
            let newer = latest.get(a.name.as_str()).is_none_or(|l| l.started < a.started);
            if newer {
                latest.insert(&a.name, a);
            }
        }
        let mut checked = 0;
        for (name, a) in latest {
            if a.status == 200 {
                assert_eq!(
                    recorded[name], a.master,
                    "{name}: told {:?} through daemon {}, recorded otherwise",
                    a.master, a.via
                );
                checked += 1;
            }
        }
        assert!(checked > 0);
    }
}

fn column<'a>(dump: &'a Value, table: &str, col: &str) -> Vec<&'a Value> {
    dump["tables"][table]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r[col])
        .collect()
}

/// One request of a storm and its answer.
#[derive(Debug, Clone)]
struct Answer {
    name: String,
    /// Which target it went to.
    via: usize,
    status: u16,
    /// The masterid of the tac's `buildmaster_host`, for a 200.
    master: Option<i64>,
    body: String,
    started: Instant,
    took: Duration,
}

impl Answer {
    fn ended(&self) -> Instant {
        self.started + self.took
    }
}

/// `buildmaster_host = 'HOST'` of a tac.
fn tac_host(tac: &str) -> Option<&str> {
    tac.lines()
        .find_map(|l| l.strip_prefix("buildmaster_host = "))
        .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"'))
}

/// GET `url`: any status is an answer; no answer at all within
/// [`REQUEST_LIMIT`] fails the test (a hang is the failure mode this
/// guards against).
fn ask(agent: &ureq::Agent, url: &str) -> (u16, String) {
    match agent.get(url).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// Gettacs from [`CLIENTS`] threads, request `k` for slave
/// `names[k % len]` through `targets[(k + k / len) % targets.len()]` (so a
/// slave goes through another target each round), until every slave was
/// asked once or, with `until`, until it is set. Every answer is pushed
/// to `log` as it comes, for the caller to watch.
fn storm(
    targets: &[String],
    names: &[String],
    masters: &HashMap<String, i64>,
    until: Option<&AtomicBool>,
    log: &Mutex<Vec<Answer>>,
) {
    clients(|agent, k| {
        match until {
            None if k >= names.len() => return false,
            Some(stop) if stop.load(Ordering::Relaxed) => return false,
            _ => {}
        }
        let name = &names[k % names.len()];
        let via = (k + k / names.len()) % targets.len();
        let started = Instant::now();
        let (status, body) = ask(agent, &format!("{}/gettac/{name}", targets[via]));
        let took = started.elapsed();
        let master = (status == 200).then(|| {
            let host = tac_host(&body).unwrap_or_else(|| panic!("no master in: {body}"));
            masters[host]
        });
        let body = if status == 200 { String::new() } else { body };
        log.lock().unwrap().push(Answer {
            name: name.clone(),
            via,
            status,
            master,
            body,
            started,
            took,
        });
        true
    });
}

/// Runs `request(agent, k)` for k = 0, 1, 2... from [`CLIENTS`] threads,
/// each with its own keep-alive agent, until it answers false.
fn clients(request: impl Fn(&ureq::Agent, usize) -> bool + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                let agent = ureq::AgentBuilder::new().timeout(REQUEST_LIMIT).build();
                while request(&agent, next.fetch_add(1, Ordering::Relaxed)) {}
            });
        }
    });
}

/// The answers of `targets[via]` other than 200, summarized.
fn failures(answers: &[Answer], via: usize) -> Vec<String> {
    answers
        .iter()
        .filter(|a| a.via == via && a.status != 200)
        .map(|a| format!("{} {} after {:?}: {}", a.name, a.status, a.took, a.body.trim()))
        .collect()
}

fn slowest(answers: &[Answer], via: usize) -> Duration {
    answers
        .iter()
        .filter(|a| a.via == via)
        .map(|a| a.took)
        .max()
        .unwrap_or_default()
}

fn run_cluster_test(test: impl FnOnce(&mut World)) {
    let _serial = serial();
    let Some(mut world) = World::start() else {
        return;
    };
    test(&mut world);
}

#[test]
fn a_boot_storm_across_three_galera_nodes_stays_balanced_and_writes_never_fail() {
    run_cluster_test(|world| {
        let log = Mutex::new(Vec::new());
        let started = Instant::now();
        storm(&world.urls(), &world.names, &world.masters, None, &log);
        let took = started.elapsed();
        let answers = log.into_inner().unwrap();
        eprintln!(
            "Galera storm: {SLAVES} gettacs over 3 daemons, {CLIENTS} at a time, in {took:.1?} ({:.0}/s); slowest {:?}; \
             conflicts the daemons retried: {} certification failures, {} brute-force aborts",
            SLAVES as f64 / took.as_secs_f64(),
            (0..3).map(|v| slowest(&answers, v)).max().unwrap(),
            world.cluster_total("wsrep_local_cert_failures"),
            world.cluster_total("wsrep_local_bf_aborts"),
        );
        assert_eq!(answers.len(), SLAVES);
        for via in 0..3 {
            let failed = failures(&answers, via);
            assert!(
                failed.is_empty(),
                "daemon {via} failed {} gettacs: {failed:?}\n{}",
                failed.len(),
                world.daemons[via].log_warnings(20)
            );
        }
        world.assert_recorded(&answers);
        world.assert_balanced();
        concurrent_puts_are_seen_through_another_node(world);
    });
}

/// 300 PUTs, 64 at a time, through all three daemons, each changing one
/// slave's notes; right after each 200, a GET of that slave through the
/// next daemon (another node) sees the new notes.
fn concurrent_puts_are_seen_through_another_node(world: &World) {
    const PUTS: usize = 300;
    let urls = world.urls();
    let ids: Vec<i64> = world
        .slaves(0)
        .iter()
        .map(|s| s["slaveid"].as_i64().unwrap())
        .take(PUTS)
        .collect();
    let outcomes = Mutex::new(Vec::new());
    clients(|agent, k| {
        let Some(id) = ids.get(k) else { return false };
        let notes = format!("put {k} through node {}", k % 3 + 1);
        let put = agent
            .put(&format!("{}/api/slaves/{id}", urls[k % 3]))
            .set("content-type", "application/json")
            .send_string(&json!({ "notes": notes }).to_string());
        let status = match put {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, r)) => {
                let body = r.into_string().unwrap_or_default();
                outcomes.lock().unwrap().push(Err(format!("PUT {id}: {code} {body}")));
                assert_ne!(code, 500, "PUT {id}: {body}");
                return true;
            }
            Err(e) => panic!("PUT {id}: {e}"),
        };
        assert_eq!(status, 200);
        let other = &urls[(k + 1) % 3];
        let (code, body) = ask(agent, &format!("{other}/api/slaves/{id}"));
        assert_eq!(code, 200, "{body}");
        let seen: Value = serde_json::from_str(&body).unwrap();
        let seen = &seen["notes"];
        outcomes.lock().unwrap().push(if *seen == json!(notes) {
            Ok(())
        } else {
            Err(format!("{id}: {seen} through another node, not {notes:?}"))
        });
        true
    });
    let outcomes = outcomes.into_inner().unwrap();
    let failed: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    eprintln!(
        "Galera PUTs: {PUTS} concurrent through 3 nodes, {} not 200 or not seen",
        failed.len()
    );
    assert_eq!(outcomes.len(), PUTS);
    assert!(failed.is_empty(), "{failed:?}");
}

#[test]
fn a_node_killed_in_a_storm_costs_the_survivors_only_time_and_nginx_hides_it() {
    if !have("nginx", true) {
        return;
    }
    run_cluster_test(|world| {
        const KILLED: usize = 2;
        let nginx_dir = world.dir.path().join("nginx");
        std::fs::create_dir_all(&nginx_dir).unwrap();
        let listen = free_port();
        let site = cluster_site(&nginx_dir, listen, &world.urls()).unwrap();
        let nginx = Nginx::start(&nginx_dir, &[site], &[listen]).unwrap();
        let mut targets = world.urls();
        targets.push(format!("http://127.0.0.1:{listen}"));
        let through_nginx = targets.len() - 1;

        let log = Mutex::new(Vec::new());
        let stop = AtomicBool::new(false);
        let (names, masters) = (world.names.clone(), world.masters.clone());
        let answered = || log.lock().unwrap().len();
        let mut kill_at = Instant::now();
        let mut synced_at = Instant::now();
        let mut restart_at = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| storm(&targets, &names, &masters, Some(&stop), &log));
            wait_for("a quarter of the storm", || answered() >= SLAVES / 4);
            kill_at = Instant::now();
            world.cluster.kill(KILLED);
            // The survivors evict it, then the killed daemon answers 503
            // for a while before the node comes back.
            wait_for("the survivors to evict the killed node", || {
                world.cluster.status(0, "wsrep_cluster_size").as_deref() == Some("2")
            });
            let evicted = answered();
            wait_for("more of the storm on two nodes", || answered() >= evicted + SLAVES / 4);
            restart_at = Instant::now();
            world.cluster.restart(KILLED);
            world.cluster.wait_synced(KILLED);
            synced_at = Instant::now();
            // Until the rejoined node's daemon has served a while.
            wait_for("the killed node's daemon to serve again", || {
                log.lock()
                    .unwrap()
                    .iter()
                    .filter(|a| a.via == KILLED && a.status == 200 && a.started > synced_at)
                    .count()
                    >= 50
            });
            stop.store(true, Ordering::Relaxed);
        });
        // Then the whole fleet boots once more through nginx, so that
        // every slave holds a master for the balance check below.
        let stormed = log.lock().unwrap().len();
        storm(&targets[through_nginx..], &names, &masters, None, &log);
        let mut answers = log.into_inner().unwrap();
        for a in &mut answers[stormed..] {
            a.via = through_nginx;
        }
        let nginx_log = nginx.error_log();
        drop(nginx);

        // The survivors: every answer 200, the slowest while the cluster
        // evicted the dead node.
        for via in (0..3).filter(|v| *v != KILLED) {
            let failed = failures(&answers, via);
            assert!(failed.is_empty(), "survivor daemon {via} failed: {failed:?}");
        }
        // Through nginx, no machine saw any of it.
        let failed = failures(&answers, through_nginx);
        assert!(failed.is_empty(), "through nginx: {failed:?}\n{nginx_log}");

        // The killed node's daemon: 503 within 2 s of the kill or of the
        // request (never a hang, never 500) until its node is back.
        let mut refused = 0;
        for a in answers.iter().filter(|a| a.via == KILLED && a.ended() > kill_at) {
            assert!(
                a.status == 200 || a.status == 503,
                "the killed node's daemon answered {}: {}",
                a.status,
                a.body
            );
            if a.status == 503 {
                refused += 1;
                let from = a.started.max(kill_at);
                let within = a.ended().duration_since(from);
                assert!(within <= Duration::from_secs(2), "a 503 after {within:?}: {}", a.body);
            }
            if a.started > kill_at && a.ended() < synced_at - Duration::from_secs(5) {
                assert_eq!(a.status, 503, "{} served through a dead node", a.name);
            }
        }
        assert!(refused > 0, "the killed node's daemon was asked while it was down");
        let back = answers
            .iter()
            .filter(|a| a.via == KILLED && a.status == 200 && a.started > kill_at)
            .map(Answer::ended)
            .min()
            .unwrap();
        let served_after = back.saturating_duration_since(synced_at);
        let eviction_stall = (0..3)
            .filter(|v| *v != KILLED)
            .map(|v| slowest(&answers, v))
            .max()
            .unwrap();
        eprintln!(
            "Galera node SIGKILL: {} gettacs over 3 daemons and nginx; survivors all 200 (slowest {eviction_stall:.1?}), \
             nginx all 200 (slowest {:.1?}), killed node's daemon {refused} × 503 (slowest {:.1?}), \
             its node synced {:.1?} after the restart began (wsrep-recover, IST), the daemon serving \
             {served_after:.1?} after that",
            answers.len(),
            slowest(&answers, through_nginx),
            answers
                .iter()
                .filter(|a| a.via == KILLED && a.status == 503)
                .map(|a| a.took)
                .max()
                .unwrap_or_default(),
            synced_at.duration_since(restart_at)
        );
        assert!(
            served_after <= Duration::from_secs(5),
            "served {served_after:?} after rejoining"
        );

        // Nothing a machine was told is lost, and the balance held.
        world.assert_recorded(&answers);
        world.assert_balanced();
    });
}

/// Polls `done` every 50 ms; fails after two minutes.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(120), "{what}: not within 2 min");
        std::thread::sleep(Duration::from_millis(50));
    }
}
