//! Group commit for `/gettac`: one task decides every request that has
//! arrived since the last transaction, in one transaction.
//!
//! Why it is safe: [`Allocator::allocate`] decides a batch as if its
//! requests had been served one after another, from one snapshot read under
//! the same locks a single request takes, and commits it atomically. A batch
//! is therefore indistinguishable from the same requests served one per
//! transaction, except that it costs one round of locks and one commit.
//!
//! Why it is fast: while one batch commits, the next requests queue up, so
//! under load each transaction carries many decisions, and with no load a
//! lone request is decided at once (the task never waits to fill a batch).

use tokio::sync::{mpsc, oneshot};

use slavealloc_domain::{Allocation, AllocationError, Allocator, Intent, SlaveName, StoreError};

/// Default cap on the requests one transaction decides: large enough that
/// a burst of boots shares a few transactions, small enough that one
/// transaction stays short.
pub const DEFAULT_BATCH_LIMIT: usize = 256;

/// The actor written to the audit entries of allocations. A batch holds
/// many clients' requests and the port takes one actor per batch, so the
/// entry says what wrote; the requester's address is in the daemon's log
/// line for the allocation.
pub const ALLOCATION_ACTOR: &str = "gettac";

type Reply = oneshot::Sender<Result<Allocation, AllocationError>>;

struct Job {
    name: SlaveName,
    reply: Reply,
}

/// The queue to the group-commit task. Cheap to clone; the task ends when
/// every clone is dropped, after answering what was queued.
#[derive(Debug, Clone)]
pub struct Batcher {
    jobs: mpsc::Sender<Job>,
    sizes: BatchSizes,
}

/// Sizes of the batches committed so far, for the metrics.
#[derive(Debug, Clone)]
pub(crate) struct BatchSizes(pub(crate) prometheus_client::metrics::histogram::Histogram);

impl Batcher {
    /// Starts the task; `limit` caps the names per transaction (at least 1).
    pub fn spawn(allocator: Allocator, limit: usize) -> Self {
        let limit = limit.max(1);
        // Room for a few batches: beyond that, callers wait to enqueue
        // (back-pressure instead of an unbounded queue).
        let (jobs, rx) = mpsc::channel(limit * 4);
        let sizes = BatchSizes(new_size_histogram());
        tokio::spawn(run(rx, allocator, limit, sizes.clone()));
        Self { jobs, sizes }
    }

    /// Allocates for `name` in the next batch and waits for its commit.
    ///
    /// # Errors
    /// As [`Allocator::gettac`]; a whole batch's storage failure is every
    /// request's [`AllocationError::Storage`].
    pub async fn allocate(&self, name: SlaveName) -> Result<Allocation, AllocationError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || AllocationError::Storage(StoreError::Other("the allocation task has stopped".to_owned()));
        self.jobs.send(Job { name, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub(crate) fn sizes(&self) -> &BatchSizes {
        &self.sizes
    }
}

fn new_size_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1.0, 2.0, 10,
    ))
}

async fn run(mut rx: mpsc::Receiver<Job>, allocator: Allocator, limit: usize, sizes: BatchSizes) {
    let mut jobs = Vec::with_capacity(limit);
    while rx.recv_many(&mut jobs, limit).await > 0 {
        sizes.0.observe(jobs.len() as f64);
        let names: Vec<SlaveName> = jobs.iter().map(|j| j.name.clone()).collect();
        match allocator.allocate(&names, Intent::Commit, ALLOCATION_ACTOR).await {
            Ok(results) => {
                for (job, result) in jobs.drain(..).zip(results) {
                    // A client that went away simply misses its answer.
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(AllocationError::Storage(e.clone())));
                }
            }
        }
        jobs.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::SystemTime;

    use async_trait::async_trait;
    use slavealloc_domain::ports::{AllocationUnit, MockTacRenderer};
    use slavealloc_domain::{AllocationStore, FixedHost};
    use slavealloc_fixtures::{generate_fleet, FleetSpec};
    use slavealloc_store_memory::MemoryStore;

    use super::*;

    /// Counts the transactions the batcher opens.
    struct Counting {
        inner: MemoryStore,
        begins: AtomicUsize,
    }

    #[async_trait]
    impl AllocationStore for Counting {
        async fn begin(&self, intent: Intent) -> Result<Box<dyn AllocationUnit>, StoreError> {
            self.begins.fetch_add(1, Ordering::SeqCst);
            self.inner.begin(intent).await
        }
    }

    /// 40 never-allocated slaves of one silo, over 4 masters, and their
    /// names.
    fn fleet() -> (Arc<Counting>, Vec<SlaveName>) {
        let spec = FleetSpec {
            slaves: 40,
            pools: 1,
            masters_per_pool: 4,
            disabled_masters_per_pool: 0,
            silos_per_pool: 1,
            locked_fraction: 0.0,
            disabled_fraction: 0.0,
            allocated_fraction: 0.0,
            seed: 1,
        };
        let dump = generate_fleet(&spec);
        let names = dump
            .rows(slavealloc_domain::Table::Slaves)
            .iter()
            .map(|r| SlaveName::parse(r["name"].as_text().unwrap()).unwrap())
            .collect();
        let store = Arc::new(Counting {
            inner: MemoryStore::from_dump(&dump).unwrap(),
            begins: AtomicUsize::new(0),
        });
        (store, names)
    }

    /// Queues a request for every slave before the task starts, so the
    /// task finds them all waiting, exactly as under load.
    async fn run_queued(
        store: Arc<Counting>,
        names: Vec<SlaveName>,
        limit: usize,
    ) -> Vec<Result<Allocation, AllocationError>> {
        let mut renderer = MockTacRenderer::new();
        renderer.expect_render().returning(|_| Ok("tac".to_owned()));
        let host = Arc::new(FixedHost {
            now: SystemTime::UNIX_EPOCH,
            fqdn: "h".into(),
        });
        let allocator = Allocator::new(store, Arc::new(renderer), host);
        let (tx, rx) = mpsc::channel(64);
        let mut answers = Vec::new();
        for name in names {
            let (reply, answer) = oneshot::channel();
            tx.send(Job { name, reply }).await.unwrap();
            answers.push(answer);
        }
        drop(tx);
        run(rx, allocator, limit, BatchSizes(new_size_histogram())).await;
        let mut results = Vec::new();
        for a in answers {
            results.push(a.await.unwrap());
        }
        results
    }

    fn per_master(results: &[Result<Allocation, AllocationError>]) -> Vec<usize> {
        let mut counts = std::collections::BTreeMap::new();
        for r in results {
            let master = r.as_ref().unwrap().decision.master.as_ref().unwrap().masterid;
            *counts.entry(master).or_insert(0) += 1;
        }
        counts.into_values().collect()
    }

    #[tokio::test]
    async fn requests_waiting_together_share_one_transaction_and_stay_balanced() {
        let (store, names) = fleet();
        let results = run_queued(Arc::clone(&store), names, DEFAULT_BATCH_LIMIT).await;
        assert_eq!(store.begins.load(Ordering::SeqCst), 1);
        assert_eq!(per_master(&results), [10, 10, 10, 10]);
    }

    #[tokio::test]
    async fn the_limit_caps_a_transaction() {
        let (store, names) = fleet();
        let results = run_queued(Arc::clone(&store), names, 16).await;
        assert_eq!(store.begins.load(Ordering::SeqCst), 3, "16 + 16 + 8");
        assert_eq!(per_master(&results), [10, 10, 10, 10]);
    }
}
