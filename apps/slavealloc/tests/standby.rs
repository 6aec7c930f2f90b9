#![allow(clippy::unwrap_used)]
//! `slavealloc serve` on a PostgreSQL primary and its synchronous hot
//! standby (`PostgresPair`, private servers this test starts): a read-only
//! daemon on the standby, and two allocating daemons that lose their
//! primary to a SIGKILL mid-storm and follow the standby once it is
//! promoted, without a restart.
//!
//! These never skip under `CI=true`: the pair's harness panics when it
//! cannot start the servers.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{get, get_within, request, until_ok, Daemon};
use serde_json::json;
use slavealloc_domain::schema::{Table, Value};
use slavealloc_domain::{DumpStore, InventoryStore};
use slavealloc_fixtures::{generate_fleet, FleetSpec};
use slavealloc_store_sql::SqlStore;
use slavealloc_store_sql_testing::replica::PostgresPair;
use tokio::sync::{Notify, Semaphore};
use tokio::task::block_in_place;

/// No poller: the fleets' masters are made-up hosts, and polling them would
/// only add writes and log lines that have nothing to do with the story.
fn quiet_config(dir: &Path) -> String {
    let path = dir.join("standby.toml");
    std::fs::write(&path, "[poll]\nenabled = false\n").unwrap();
    path.to_str().unwrap().to_owned()
}

/// Loads `fleet` through the primary (creating the schema there) and waits
/// until the standby has replayed it.
async fn load(pair: &PostgresPair, fleet: &slavealloc_domain::Dump) {
    let store = SqlStore::connect(&pair.primary_url()).await.unwrap();
    store.replace_all(fleet).await.unwrap();
    store.close().await;
    block_in_place(|| pair.wait_replayed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_on_the_standby_serves_reads_and_refuses_writes_as_a_read_only_replica() {
    let Some(pair) = block_in_place(PostgresPair::start) else {
        return;
    };
    load(&pair, &slavealloc_fixtures::sample_fleet()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = quiet_config(dir.path());
    let standby = pair.standby_url();
    let d = Daemon::start(
        &["--db", &standby, "--no-allocator", "--config", &config],
        &[],
        dir.path(),
    )
    .await;
    until_ok(&d.url("/healthz"), Duration::from_secs(20)).await;
    let fast = Duration::from_secs(10);

    let slaves = get_within(&d.url("/api/slaves?include_decomm=1"), fast).await;
    assert_eq!(slaves.status, 200, "{}", slaves.body);
    assert_eq!(slaves.json().as_array().unwrap().len(), 62, "the whole sample fleet");
    for path in ["/api/masters", "/api/pools", "/api/slaves/1", "/api/audit", "/ui/"] {
        let r = get_within(&d.url(path), fast).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    }
    let before = (
        get(&d.url("/api/slaves?include_decomm=1")).await.json(),
        get(&d.url("/api/masters")).await.json(),
        get(&d.url("/api/audit")).await.json(),
    );

    let mut new_slave = get(&d.url("/api/slaves/1")).await.json();
    for key in ["slaveid", "live", "current_masterid"] {
        new_slave.as_object_mut().unwrap().remove(key);
    }
    new_slave["name"] = json!("never-written");
    let writes = [
        ("PUT", "/api/slaves/1", Some(json!({"notes": "on a replica"}))),
        ("POST", "/api/slaves", Some(new_slave)),
        ("DELETE", "/api/slaves/2", None),
        ("POST", "/api/slaves/3/disable", Some(json!({"note": "on a replica"}))),
        (
            "POST",
            "/api/masters/1/drain",
            Some(json!({"note": "on a replica", "until": "1h"})),
        ),
    ];
    for (method, path, body) in writes {
        let r = tokio::time::timeout(fast, request(method, &d.url(path), body, &[]))
            .await
            .unwrap_or_else(|_| panic!("{method} {path} was not answered within {fast:?}"));
        assert_eq!(r.status, 503, "{method} {path}: {}", r.body);
        assert_eq!(r.json()["success"], false, "{method} {path}: {}", r.body);
        assert!(r.body.contains("read-only replica"), "{method} {path}: {}", r.body);
    }
    let after = (
        get(&d.url("/api/slaves?include_decomm=1")).await.json(),
        get(&d.url("/api/masters")).await.json(),
        get(&d.url("/api/audit")).await.json(),
    );
    assert!(before == after, "a refused write changed nothing");

    // --no-allocator: no route hands out a tac, not even a peek.
    let r = get_within(&d.url("/gettac/bld-linux64-spot-003"), fast).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = get_within(&d.url("/api/gettac/bld-linux64-spot-003"), fast).await;
    assert_eq!(r.status, 404, "{}", r.body);

    let (status, log) = d.stop().await;
    assert!(status.success(), "{log}");
    assert!(
        !log.contains("storage error"),
        "no write was taken for an internal error: {log}"
    );
}

/// Which master a tac sends its slave to, by the `buildmaster_host` and
/// `port` lines every template has.
fn master_in_tac(tac: &str, masters: &HashMap<(String, i64), i64>) -> Option<i64> {
    let value = |key: &str| {
        tac.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(" = "))
            .map(|v| v.trim().trim_matches('\'').to_owned())
    };
    let host = value("buildmaster_host")?;
    let port = value("port")?.parse().ok()?;
    masters.get(&(host, port)).copied()
}

/// The storm's phases, by what the servers are doing.
const PHASES: [&str; 4] = [
    "before the kill",
    "primary killed, standby not promoted yet",
    "while pg_ctl promote runs",
    "after pg_ctl promote returned",
];

/// How far the storm has got, and when the primary died and the standby
/// took over.
#[derive(Default)]
struct Storm {
    served: AtomicUsize,
    /// 200s answered in each of [`PHASES`].
    ok: [AtomicUsize; 4],
    /// 503s, likewise.
    unavailable: [AtomicUsize; 4],
    /// What the 503s said, each reason once, by phase.
    reasons: [Mutex<BTreeSet<String>>; 4],
    /// When the SIGKILL was sent.
    killed: OnceLock<Instant>,
    /// When `pg_ctl promote` was started: the standby may take writes
    /// before it returns, which it sees only on its next poll.
    promoting: OnceLock<Instant>,
    /// When `pg_ctl promote -w` returned.
    promoted: OnceLock<Instant>,
    /// The longest any request took to be answered.
    slowest: Mutex<Duration>,
    /// The first 200 each daemon answered once the promotion started.
    first_since_promoting: [Mutex<Option<Instant>>; 2],
    half_served: Notify,
}

impl Storm {
    fn phase(&self) -> usize {
        [&self.killed, &self.promoting, &self.promoted]
            .iter()
            .filter(|t| t.get().is_some())
            .count()
    }
}

/// No answer takes longer than this, dead primary or not: the daemon's
/// database deadline is 1.5 s.
const REQUEST_BOUND: Duration = Duration::from_secs(10);
/// How long after the promotion every slave must have had its tac.
const RECOVERY_BOUND: Duration = Duration::from_secs(30);

/// One slave's gettacs on daemon `which` until one answers 200: the master
/// its tac names. 503s are retried; anything else, a request that hangs, or
/// no 200 within [`RECOVERY_BOUND`] of the promotion is the error returned.
async fn gettac_until_served(
    storm: Arc<Storm>,
    url: String,
    which: usize,
    total: usize,
    masters: Arc<HashMap<(String, i64), i64>>,
) -> Result<i64, String> {
    let started = Instant::now();
    loop {
        let sent = Instant::now();
        let r = tokio::time::timeout(REQUEST_BOUND, get(&url))
            .await
            .map_err(|_| format!("{url} was not answered within {REQUEST_BOUND:?}"))?;
        {
            let mut slowest = storm.slowest.lock().unwrap();
            *slowest = (*slowest).max(sent.elapsed());
        }
        match r.status {
            200 => {
                let master =
                    master_in_tac(&r.body, &masters).ok_or_else(|| format!("{url}: no known master in {}", r.body))?;
                storm.ok[storm.phase()].fetch_add(1, Ordering::SeqCst);
                if storm.promoting.get().is_some() {
                    let mut first = storm.first_since_promoting[which].lock().unwrap();
                    first.get_or_insert_with(Instant::now);
                }
                if storm.served.fetch_add(1, Ordering::SeqCst) + 1 == total / 2 {
                    storm.half_served.notify_one();
                }
                return Ok(master);
            }
            503 => {
                let phase = storm.phase();
                storm.unavailable[phase].fetch_add(1, Ordering::SeqCst);
                // Ports and the like make each reason differ a little: its
                // start says what kind it is.
                let reason: String = r.body.chars().take(90).collect();
                storm.reasons[phase].lock().unwrap().insert(reason);
                let gave_up = match storm.promoted.get() {
                    Some(at) => at.elapsed() > RECOVERY_BOUND,
                    // The bound if the promotion never comes.
                    None => started.elapsed() > Duration::from_secs(90),
                };
                if gave_up {
                    return Err(format!("{url} still answers 503: {}", r.body));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return Err(format!("{url} answered {other}: {}", r.body)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_follow_the_promoted_standby_and_lose_no_acknowledged_allocation() {
    let Some(pair) = block_in_place(PostgresPair::start) else {
        return;
    };
    let spec = FleetSpec {
        slaves: 600,
        pools: 2,
        masters_per_pool: 4,
        disabled_masters_per_pool: 1,
        silos_per_pool: 3,
        locked_fraction: 0.0,
        disabled_fraction: 0.0,
        allocated_fraction: 0.0,
        seed: 13,
    };
    let fleet = generate_fleet(&spec);
    load(&pair, &fleet).await;
    let masters: HashMap<(String, i64), i64> = fleet
        .rows(Table::Masters)
        .iter()
        .map(|m| {
            let text = |c: &str| m[c].as_text().unwrap().to_owned();
            let int = |c: &str| m[c].as_int().unwrap();
            ((text("fqdn"), int("pb_port")), int("masterid"))
        })
        .collect();
    let enabled: BTreeSet<i64> = fleet
        .rows(Table::Masters)
        .iter()
        .filter(|m| m["enabled"] == Value::Bool(true))
        .map(|m| m["masterid"].as_int().unwrap())
        .collect();
    let names: Vec<String> = fleet
        .rows(Table::Slaves)
        .iter()
        .map(|r| r["name"].as_text().unwrap().to_owned())
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let config = quiet_config(dir.path());
    let (primary, standby) = (pair.primary_url(), pair.standby_url());
    let args = ["--db", &primary, "--db", &standby, "--config", &config];
    let daemons = [
        Daemon::start(&args, &[], dir.path()).await,
        Daemon::start(&args, &[], dir.path()).await,
    ];
    for d in &daemons {
        until_ok(&d.url("/healthz"), Duration::from_secs(20)).await;
    }

    let storm = Arc::new(Storm::default());
    let masters = Arc::new(masters);
    let clients = Arc::new(Semaphore::new(32));
    let mut requests = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let which = i % 2;
        let url = daemons[which].url(&format!("/gettac/{name}"));
        let (storm, masters, clients) = (Arc::clone(&storm), Arc::clone(&masters), Arc::clone(&clients));
        let total = names.len();
        requests.push(tokio::spawn(async move {
            let _client = clients.acquire_owned().await.unwrap();
            gettac_until_served(storm, url, which, total, masters).await
        }));
    }

    if tokio::time::timeout(Duration::from_secs(60), storm.half_served.notified())
        .await
        .is_err()
    {
        panic!("half the fleet was not served within 60 s: {}", daemons[0].log());
    }
    // Marked first: requests cut off by the kill may be answered before
    // kill_primary returns, and count as after it.
    let killed = Instant::now();
    storm.killed.set(killed).unwrap();
    block_in_place(|| pair.kill_primary());
    // The standby is promoted by hand, as an operator (or a failover tool
    // after its own timeout) would: long enough for both daemons to find
    // the primary gone and answer 503 meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let promoting = Instant::now();
    storm.promoting.set(promoting).unwrap();
    block_in_place(|| pair.promote_standby());
    let promoted = Instant::now();
    storm.promoted.set(promoted).unwrap();

    let mut failures = Vec::new();
    let mut given: HashMap<String, i64> = HashMap::new();
    for (name, r) in names.iter().zip(requests) {
        match r.await.unwrap() {
            Ok(master) => {
                given.insert(name.clone(), master);
            }
            Err(why) => failures.push(why),
        }
    }
    let logs = || daemons.iter().map(Daemon::log).collect::<Vec<_>>().join("\n----\n");
    assert!(
        failures.is_empty(),
        "{} slaves not served: {failures:#?}\n{}",
        failures.len(),
        logs()
    );

    let recovered = storm
        .first_since_promoting
        .each_ref()
        .map(|t| t.lock().unwrap().map(|t| t.duration_since(promoting)));
    eprintln!(
        "standby failover: {} slaves on 2 daemons; SIGKILL to promote start {:?}, pg_ctl promote -w took {:?}; \
         first 200 after the promote started: daemon 1 {:?}, daemon 2 {:?}; slowest answer {:?}",
        given.len(),
        promoting.duration_since(killed),
        promoted.duration_since(promoting),
        recovered[0],
        recovered[1],
        *storm.slowest.lock().unwrap(),
    );
    for (i, phase) in PHASES.iter().enumerate() {
        eprintln!(
            "  {phase}: {} answered 200, {} answered 503",
            storm.ok[i].load(Ordering::SeqCst),
            storm.unavailable[i].load(Ordering::SeqCst)
        );
        for reason in storm.reasons[i].lock().unwrap().iter() {
            eprintln!("    503: {reason}");
        }
    }
    for (i, r) in recovered.iter().enumerate() {
        assert!(
            r.is_some(),
            "daemon {} served nothing after the promotion: {}",
            i + 1,
            daemons[i].log()
        );
    }

    // What the promoted standby holds: every acknowledged allocation.
    let store = SqlStore::connect(&standby).await.unwrap();
    let slaves = store.list(Table::Slaves).await.unwrap();
    store.close().await;
    let mut lost = Vec::new();
    // (pool, silo) -> master -> slaves
    let mut spread: BTreeMap<String, BTreeMap<i64, usize>> = BTreeMap::new();
    for s in &slaves {
        let name = s["name"].as_text().unwrap();
        let current = s["current_masterid"].as_int();
        if current != given.get(name).copied() {
            lost.push(format!(
                "{name}: the tac said {:?}, the database says {current:?}",
                given.get(name)
            ));
        }
        let silo = ["poolid", "distroid", "bitsid", "purposeid", "dcid", "trustid", "envid"]
            .map(|c| format!("{:?}", s[c]))
            .join("/");
        let master = current.expect("every slave got a master");
        assert!(enabled.contains(&master), "{name} is on disabled master {master}");
        *spread.entry(silo).or_default().entry(master).or_default() += 1;
    }
    assert!(lost.is_empty(), "acknowledged allocations lost: {lost:#?}");
    assert_eq!(spread.len(), 6, "{spread:?}");
    for (silo, per_master) in &spread {
        assert_eq!(per_master.len(), 3, "{silo}: {per_master:?}");
        let (min, max) = (per_master.values().min().unwrap(), per_master.values().max().unwrap());
        assert!(max - min <= 1, "{silo} is unbalanced: {per_master:?}");
    }

    for d in daemons {
        let (status, log) = d.stop().await;
        assert!(status.success(), "{log}");
    }
}
