//! How long the UI takes to render its pages for a 10,000-slave fleet, on
//! the in-memory store (the UI's own cost) and on SQLite (what a daemon
//! with the default database pays). `cargo bench -p slavealloc-web-ui`.

use std::sync::Arc;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, Criterion};
use slavealloc_domain::{DumpStore, FixedHost, Inventory, InventoryStore};
use slavealloc_fixtures::{generate_fleet, FleetSpec};
use slavealloc_store_memory::MemoryStore;
use slavealloc_store_sql::SqlStore;
use slavealloc_web_ui::{routes, UiConfig};
use warp::Filter;

const PAGES: [&str; 6] = [
    "/ui/slaves",
    "/ui/slaves?q=0042&sort=pool&dir=desc",
    "/ui/slaves?page=50&per=500",
    "/ui/masters",
    "/ui/silos",
    "/ui/",
];

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

    for (store_name, store) in [("memory", memory), ("sqlite", sqlite)] {
        let ui = warp::path("ui")
            .and(routes(UiConfig::default(), Inventory::new(store, host.clone())))
            .boxed();
        let mut group = c.benchmark_group(format!("ui-10k-{store_name}"));
        group.sample_size(10);
        for page in PAGES {
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
