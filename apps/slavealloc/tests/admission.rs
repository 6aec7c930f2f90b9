//! A boot storm bigger than the allocation queue may hold, against the real
//! daemon on the real MariaDB: the daemon answers what it cannot take soon
//! with 503 and a `Retry-After`, machines that come back when told all get
//! their tac, and `/metrics` counts what was admitted and refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{get, get_within, until_ok, Daemon};
use slavealloc_domain::schema::Table;
use slavealloc_domain::DumpStore;
use slavealloc_fixtures::{generate_fleet, FleetSpec};
use slavealloc_store_sql::Backend;
use slavealloc_store_sql_testing::TestDatabase;

/// Machines rebooting together.
const SLAVES: usize = 400;

/// What one machine went through: the 503s' `Retry-After`s, then its tac.
struct Boot {
    retry_afters: Vec<u64>,
    tac: String,
}

/// Up to a second, as runslave adds to a `Retry-After` of its own.
fn jitter() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    Duration::from_nanos(u64::from(nanos))
}

/// One machine, as runslave does it: asks, waits as long as a 503 says
/// (plus its own jitter), asks again.
async fn boot(url: String) -> Boot {
    let mut retry_afters = Vec::new();
    loop {
        let r = get_within(&url, Duration::from_secs(30)).await;
        match r.status {
            200 => {
                return Boot {
                    retry_afters,
                    tac: r.body,
                }
            }
            503 => {
                assert!(r.body.starts_with("busy: "), "{}", r.body);
                let after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&after), "Retry-After: {after}");
                retry_afters.push(after);
                assert!(retry_afters.len() < 20, "{url}: still refused after {retry_afters:?}");
                tokio::time::sleep(Duration::from_secs(after) + jitter()).await;
            }
            other => panic!("{url}: {other}: {}", r.body),
        }
    }
}

/// `name value` from the exposition text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_over_the_queue_is_paced_with_retry_after_and_every_machine_gets_its_tac() {
    let Some(db) = TestDatabase::create(Backend::MySql).await else {
        return;
    };
    let spec = FleetSpec {
        slaves: SLAVES,
        pools: 2,
        masters_per_pool: 4,
        disabled_masters_per_pool: 0,
        silos_per_pool: 2,
        locked_fraction: 0.0,
        disabled_fraction: 0.0,
        allocated_fraction: 0.0,
        seed: 14,
    };
    let fleet = generate_fleet(&spec);
    let store = db.store().await;
    store.replace_all(&fleet).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Hardly any waiting allowed (tens of requests at this machine's
    // rate): a storm of 400 at once must be paced.
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, "[server]\ngettac_max_wait_ms = 20\n").unwrap();
    let d = Daemon::start(
        &["--db", db.url(), "--config", config.to_str().unwrap(), "--no-ui"],
        &[],
        dir.path(),
    )
    .await;
    until_ok(&d.url("/healthz"), Duration::from_secs(30)).await;
    let names: Vec<String> = fleet
        .rows(Table::Slaves)
        .iter()
        .map(|r| r["name"].as_text().unwrap().to_owned())
        .collect();
    let boots: Vec<_> = names
        .iter()
        .map(|n| tokio::spawn(boot(d.url(&format!("/gettac/{n}")))))
        .collect();
    let mut refusals = 0;
    let mut tacs = BTreeMap::new();
    for (name, b) in names.iter().zip(boots) {
        let b = b.await.unwrap();
        refusals += b.retry_afters.len();
        tacs.insert(name.clone(), b.tac);
    }
    assert!(
        refusals > 0,
        "a storm of {SLAVES} with 20 ms of waiting allowed was never paced"
    );
    eprintln!("{SLAVES} machines: {refusals} refusals before every one had its tac");
    eprintln!(
        "decision rate as admission saw it: {:.0}/s",
        metric(&get(&d.url("/metrics")).await.body, "slavealloc_gettac_decision_rate")
    );

    let text = get(&d.url("/metrics")).await.body;
    assert_eq!(metric(&text, "slavealloc_gettac_admitted_total"), SLAVES as f64);
    assert_eq!(metric(&text, "slavealloc_gettac_refused_total"), refusals as f64);
    assert_eq!(metric(&text, "slavealloc_gettac_queued"), 0.0);
    assert!(metric(&text, "slavealloc_gettac_decision_rate") > 0.0);

    // Every tac names the master the database recorded for its slave.
    let dump = store.export().await.unwrap();
    let masters: BTreeMap<i64, String> = dump
        .rows(Table::Masters)
        .iter()
        .map(|m| {
            let addr = format!(
                "buildmaster_host = '{}'\nport = {}\n",
                m["fqdn"].as_text().unwrap(),
                m["pb_port"].as_int().unwrap()
            );
            (m["masterid"].as_int().unwrap(), addr)
        })
        .collect();
    for s in dump.rows(Table::Slaves) {
        let name = s["name"].as_text().unwrap();
        let master = &masters[&s["current_masterid"].as_int().unwrap()];
        assert!(
            tacs[name].contains(master.as_str()),
            "{name}: {master} not in {}",
            tacs[name]
        );
    }
    d.stop().await;
    store.close().await;
    db.destroy().await;
}
