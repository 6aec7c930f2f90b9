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
