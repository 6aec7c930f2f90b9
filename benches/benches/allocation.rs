//! One allocation decision on the in-memory store, for fleets of 1k, 10k
//! and 100k slaves (target: under 1 µs, and the 100k fleet within 1.5× of
//! the 1k fleet: the decision must not scan the fleet), and a whole
//! `Allocator::peek` (decision plus tac rendering) for reference.
//!
//! Each iteration asks for the next slave of the fleet in turn, so every
//! pool, silo and kind of answer (balanced, locked, disabled) is timed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use slavealloc_benches::{decide, MemoryFleet};
use slavealloc_domain::rule::Planner;
use slavealloc_domain::{AllocationStore, Allocator, FixedHost, Intent, SlaveName, Snapshot};
use slavealloc_tac_minijinja::MinijinjaRenderer;

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread tokio runtime")
}

/// Builds a fleet the first time a bench that needs it runs, so that a
/// filtered run (`cargo bench -- memory_decision/1000`) builds only its own.
fn fleet(cache: &mut Option<MemoryFleet>, size: usize) -> &MemoryFleet {
    cache.get_or_insert_with(|| MemoryFleet::generate(size).expect("the generated fleet loads"))
}

fn memory_decision(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("memory_decision");
    for size in SIZES {
        let mut cache = None;
        let mut i = 0;
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            let fleet = fleet(&mut cache, size);
            b.to_async(&rt).iter(|| {
                i += 1;
                decide(&fleet.store, fleet.name(i))
            });
        });
    }
    group.finish();
}

/// The decision's parts, to see what costs: the unit of work (lock),
/// the store's snapshot, and the rule (indexing the snapshot, deciding).
fn memory_decision_parts(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("memory_decision_parts");
    for size in [1_000, 100_000] {
        let mut cache = None;
        let (mut i, mut j, mut k) = (0, 0, 0);
        group.bench_function(BenchmarkId::new("begin", size), |b| {
            let fleet = fleet(&mut cache, size);
            b.to_async(&rt).iter(|| async {
                drop(fleet.store.begin(Intent::Peek).await);
            });
        });
        group.bench_function(BenchmarkId::new("begin_snapshot", size), |b| {
            let fleet = fleet(&mut cache, size);
            b.to_async(&rt).iter(|| {
                i += 1;
                let name = fleet.name(i);
                async move {
                    let mut unit = fleet.store.begin(Intent::Peek).await.expect("a unit");
                    unit.snapshot(std::slice::from_ref(name)).await
                }
            });
        });
        // Snapshots of the first thousand slaves, taken once.
        let snapshots: Vec<(SlaveName, Snapshot)> = {
            let fleet = fleet(&mut cache, size);
            rt.block_on(async {
                let mut out = vec![];
                for name in fleet.names.iter().take(1000) {
                    let mut unit = fleet.store.begin(Intent::Peek).await.expect("a unit");
                    let snapshot = unit.snapshot(std::slice::from_ref(name)).await.expect("a snapshot");
                    out.push((name.clone(), snapshot));
                }
                out
            })
        };
        group.bench_function(BenchmarkId::new("planner_new", size), |b| {
            b.iter(|| {
                j += 1;
                Planner::new(&snapshots[j % snapshots.len()].1)
            });
        });
        group.bench_function(BenchmarkId::new("planner_new_decide", size), |b| {
            b.iter(|| {
                k += 1;
                let (name, snapshot) = &snapshots[k % snapshots.len()];
                Planner::new(snapshot).decide(0, name)
            });
        });
    }
    group.finish();
}

fn memory_peek(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("memory_peek");
    for size in SIZES {
        let mut cache = None;
        let mut i = 0;
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            let fleet = fleet(&mut cache, size);
            let host = FixedHost {
                now: SystemTime::now(),
                fqdn: "slavealloc.example.com".into(),
            };
            let allocator = Allocator::new(
                Arc::new(fleet.store.clone()),
                Arc::new(MinijinjaRenderer::default()),
                Arc::new(host),
            );
            let allocator = &allocator;
            b.to_async(&rt).iter(|| {
                i += 1;
                allocator.peek(fleet.name(i).as_str())
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Modest times: the whole file runs in about a minute on two cores.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = memory_decision, memory_decision_parts, memory_peek
}
criterion_main!(benches);
