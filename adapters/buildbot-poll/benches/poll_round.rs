//! One `poll_round` over 100 simulated masters on loopback, each answering
//! a Buildbot 4.3-shaped workers list of 50 workers (about 33 KB) and its
//! `/config`, with no jitter, at concurrency 8 and 32.
//!
//! The fake masters are threads of this process: the figure is the
//! poller's cost plus the fakes', on the same cores, an upper bound on
//! what the poller itself costs against real masters on other machines
//! (whose own latency is what a real round waits for).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use slavealloc_buildbot_poll::{poll_round, PollOptions, PollTarget};

#[path = "../tests/support/mod.rs"]
mod support;

use support::{FakeMaster, Reply, CONFIG_4_3};

const MASTERS: usize = 100;
const WORKERS_PER_MASTER: usize = 50;

fn round(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let workers = workers_list();
    let masters: Vec<FakeMaster> = (0..MASTERS)
        .map(|_| {
            let workers = workers.clone();
            FakeMaster::start(move |seen| match seen.path.as_str() {
                "/api/v2/workers" => Reply::json(&workers),
                "/config" => Reply::json(CONFIG_4_3),
                _ => Reply::status(404, ""),
            })
        })
        .collect();
    let targets: Vec<PollTarget> = masters
        .iter()
        .enumerate()
        .map(|(i, m)| PollTarget::new(i32::try_from(i).unwrap_or(i32::MAX), format!("bm{i:03}"), m.url()))
        .collect();

    // Once outside the timing: every master answers, in full.
    let check = rt.block_on(poll_round(targets.clone(), &options(8)));
    for poll in &check {
        let report = poll.outcome.as_ref().expect("every simulated master answers");
        assert_eq!(report.workers.len(), WORKERS_PER_MASTER);
        assert_eq!(report.buildbot_version.as_deref(), Some("4.3.0"));
    }

    let mut group = c.benchmark_group("poll_round_100_masters");
    for concurrency in [8, 32] {
        let opts = options(concurrency);
        group.bench_with_input(BenchmarkId::new("concurrency", concurrency), &opts, |b, opts| {
            b.to_async(&rt).iter(|| poll_round(targets.clone(), opts));
        });
    }
    group.finish();
}

fn options(concurrency: usize) -> PollOptions {
    PollOptions {
        concurrency,
        jitter: Duration::ZERO,
        ..PollOptions::default()
    }
}

fn workers_list() -> String {
    let list = support::workers_json(WORKERS_PER_MASTER);
    eprintln!(
        "each simulated master answers {} workers in {} bytes",
        WORKERS_PER_MASTER,
        list.len()
    );
    list
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(30);
    targets = round
}
criterion_main!(benches);
