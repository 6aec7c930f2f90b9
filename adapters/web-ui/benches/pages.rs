//! How long the UI takes to render its pages for a 10,000-slave fleet, on
//! the in-memory store (the UI's own cost), on SQLite (what a daemon
//! with the default database pays), and on the in-memory store with the
//! live fleet (every master polled, listing its slaves as connected).
//! `cargo bench -p slavealloc-web-ui`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use slavealloc_domain::live::{PollAnswer, PollRecord, PolledWorker};
use slavealloc_domain::{DumpStore, FixedHost, Inventory, InventoryStore, LiveStore, Table, Value};
use slavealloc_fixtures::{generate_fleet, FleetSpec};
use slavealloc_store_memory::MemoryStore;
use slavealloc_store_sql::SqlStore;
use slavealloc_web_ui::{routes_with_live, LiveSource, UiConfig};
use warp::Filter;

const PAGES: [&str; 6] = [
    "/ui/slaves",
    "/ui/slaves?q=0042&sort=pool&dir=desc",
    "/ui/slaves?page=50&per=500",
    "/ui/masters",
    "/ui/silos",
    "/ui/",
];

/// The pages the live fleet adds to, or makes.
const LIVE_PAGES: [&str; 3] = [
    "/ui/slaves?connected=1&sort=last_seen&dir=desc",
    "/ui/slaves?stale=7d&sort=connected",
    "/ui/drift",
];

/// One answered poll per master of `fleet`, listing its current slaves as
/// connected.
fn polls(fleet: &slavealloc_domain::Dump, at: SystemTime) -> Vec<PollRecord> {
    let int = |r: &slavealloc_domain::Row, c: &str| r.get(c).and_then(Value::as_int);
    fleet
        .rows(Table::Masters)
        .iter()
        .filter_map(|m| int(m, "masterid"))
        .map(|id| PollRecord {
            masterid: i32::try_from(id).expect("a master id"),
            at,
            duration: Duration::from_millis(10),
            outcome: Ok(PollAnswer {
                buildbot_version: Some("4.3.0".into()),
                workers: fleet
                    .rows(Table::Slaves)
                    .iter()
                    .filter(|s| int(s, "current_masterid") == Some(id))
                    .filter_map(|s| s.get("name")?.as_text())
                    .map(|name| PolledWorker {
                        name: name.to_owned(),
                        connected: true,
                        paused: false,
                        graceful: false,
                    })
                    .collect(),
            }),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let fleet = generate_fleet(&FleetSpec::with_slaves(10_000));
    let host = Arc::new(FixedHost {
        now: SystemTime::now(),
        fqdn: "bench".into(),
    });
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sqlite: Arc<dyn InventoryStore> = rt.block_on(async {
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let store = SqlStore::connect(&url).await.expect("SQLite opens");
        store.replace_all(&fleet).await.expect("the fleet loads");
        Arc::new(store)
    });
    let memory: Arc<dyn InventoryStore> = Arc::new(MemoryStore::from_dump(&fleet).expect("the fleet loads"));
    let polled = Arc::new(MemoryStore::from_dump(&fleet).expect("the fleet loads"));
    rt.block_on(async {
        for poll in polls(&fleet, SystemTime::now()) {
            polled.record_poll(&poll).await.expect("a poll is recorded");
        }
    });
    let live = LiveSource {
        store: polled.clone(),
        fresh_for: Duration::from_secs(600),
        host: host.clone(),
    };

    for (store_name, store, live) in [
        ("memory", memory, None),
        ("sqlite", sqlite, None),
        ("memory-live", polled as Arc<dyn InventoryStore>, Some(live)),
    ] {
        let pages: Vec<&str> = PAGES
            .iter()
            .chain(live.as_ref().map_or(&[][..], |_| &LIVE_PAGES[..]))
            .copied()
            .collect();
        let ui = warp::path("ui")
            .and(routes_with_live(
                UiConfig::default(),
                Inventory::new(store, host.clone()),
                live,
            ))
            .boxed();
        let mut group = c.benchmark_group(format!("ui-10k-{store_name}"));
        group.sample_size(10);
        for page in pages {
            group.bench_function(page, |b| {
                b.to_async(&rt).iter(|| async {
                    let res = warp::test::request().path(page).reply(&ui).await;
                    assert_eq!(res.status(), 200, "{page}");
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
