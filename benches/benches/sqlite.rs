//! `gettac` (decide, record, commit, render) on SQLite for a 10k-slave
//! fleet: a file database in WAL mode, as `slavealloc serve` uses by
//! default; `peek` (no write) for reference.
//!
//! Each iteration asks for the next slave of the fleet in turn. Once every
//! slave has asked, most answers change nothing and commit without a
//! write; the first pass moves many slaves. Both are in the figure, as
//! both happen in production (a mass reboot, then steady state).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use slavealloc_benches::slave_names;
use slavealloc_domain::{Allocator, DumpStore, FixedHost};
use slavealloc_fixtures::{generate_fleet, FleetSpec};
use slavealloc_store_sql::SqlStore;
use slavealloc_tac_minijinja::MinijinjaRenderer;

const SLAVES: usize = 10_000;

fn sqlite_gettac(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let dump = generate_fleet(&FleetSpec::with_slaves(SLAVES));
    let names = slave_names(&dump);
    let store = rt.block_on(async {
        let store = SqlStore::connect(&url).await.expect("the SQLite database opens");
        store.replace_all(&dump).await.expect("the fleet loads");
        store
    });
    let host = FixedHost {
        now: SystemTime::now(),
        fqdn: "slavealloc.example.com".into(),
    };
    let allocator = Allocator::new(
        Arc::new(store.clone()),
        Arc::new(MinijinjaRenderer::default()),
        Arc::new(host),
    );
    let allocator = &allocator;
    let mut group = c.benchmark_group("sqlite_10k");
    for (id, commit) in [("gettac", true), ("peek", false)] {
        let mut i = 0;
        group.bench_function(id, |b| {
            b.to_async(&rt).iter(|| {
                i += 1;
                let name = names[i % names.len()].as_str();
                async move {
                    let answer = if commit {
                        allocator.gettac(name).await
                    } else {
                        allocator.peek(name).await
                    };
                    answer.expect("every generated slave gets an answer")
                }
            });
        });
    }
    group.finish();
    rt.block_on(store.close());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(30);
    targets = sqlite_gettac
}
criterion_main!(benches);
