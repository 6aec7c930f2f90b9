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
//! Tacs are rendered after the commit, in a task of their own per batch,
//! so the next batch's transaction never waits for this batch's templates.
//!
//! Why it cannot hang: the task is supervised. If it panics (a bug in a
//! store, the rule or a renderer), the requests it held are answered 503
//! (their reply channels are dropped) and a new task takes over the same
//! queue, so later requests are served as before.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use slavealloc_domain::{Allocation, AllocationError, Allocator, BootRequest, Intent, SlaveName, StoreError};

use crate::admission::{Admission, AdmissionLimits, Busy, Ticket};

/// Default cap on the requests one transaction decides: large enough that
/// a burst of boots shares a few transactions, small enough that one
/// transaction stays short.
pub const DEFAULT_BATCH_LIMIT: usize = 256;

/// The actor written to the audit entries of allocations. A batch holds
/// many clients' requests and the port takes one actor per batch, so the
/// entry says what wrote; the requester's address is in the daemon's log
/// line for the allocation.
pub const ALLOCATION_ACTOR: &str = slavealloc_domain::audit::ALLOCATION_ACTOR;

type Reply = oneshot::Sender<Result<Allocation, AllocationError>>;

struct Job {
    request: BootRequest,
    reply: Reply,
}

/// The queue to the group-commit task. Cheap to clone; the task ends when
/// every clone is dropped, after answering what was queued.
#[derive(Debug, Clone)]
pub struct Batcher {
    jobs: mpsc::Sender<Job>,
    sizes: BatchSizes,
    admission: Admission,
}

/// Sizes of the batches committed so far, for the metrics.
#[derive(Debug, Clone)]
pub(crate) struct BatchSizes(pub(crate) prometheus_client::metrics::histogram::Histogram);

impl Batcher {
    /// Starts the task; `limit` caps the names per transaction (at least 1).
    /// Requests are admitted with the default [`AdmissionLimits`].
    pub fn spawn(allocator: Allocator, limit: usize) -> Self {
        Self::spawn_with(allocator, limit, AdmissionLimits::default())
    }

    /// [`Batcher::spawn`] with these admission limits.
    pub fn spawn_with(allocator: Allocator, limit: usize, admission: AdmissionLimits) -> Self {
        let limit = limit.max(1);
        let admission = Admission::new(admission);
        // Room for a few batches: beyond that, callers wait to enqueue
        // (back-pressure instead of an unbounded queue).
        let (jobs, rx) = mpsc::channel(limit * 4);
        let sizes = BatchSizes(new_size_histogram());
        let task = Task {
            allocator,
            limit,
            sizes: sizes.clone(),
            admission: admission.clone(),
        };
        tokio::spawn(supervise(Arc::new(Mutex::new(rx)), task));
        Self { jobs, sizes, admission }
    }

    /// A place in the queue for one request, or when to come back; see
    /// [`crate::admission`].
    ///
    /// # Errors
    /// [`Busy`] when the queue already holds as much waiting as allowed.
    pub fn admit(&self) -> Result<Ticket, Busy> {
        self.admission.admit()
    }

    pub(crate) fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Allocates for `name` in the next batch and waits for its commit.
    ///
    /// # Errors
    /// As [`Allocator::gettac`]; a whole batch's storage failure is every
    /// request's [`AllocationError::Storage`]; a request whose batch
    /// panicked gets [`StoreError::Unavailable`] (503: try again).
    pub async fn allocate(&self, name: SlaveName, from: Option<IpAddr>) -> Result<Allocation, AllocationError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || {
            AllocationError::Storage(StoreError::Unavailable(
                "the allocation task failed and is being restarted".to_owned(),
            ))
        };
        let request = BootRequest { name, from };
        self.jobs.send(Job { request, reply }).await.map_err(|_| stopped())?;
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

/// Runs the group-commit task, and a new one each time it panics. Ends
/// when the queue is closed (every [`Batcher`] dropped) or the runtime
/// shuts down.
async fn supervise(rx: Arc<Mutex<mpsc::Receiver<Job>>>, task: Task) {
    loop {
        let worker = tokio::spawn(run(Arc::clone(&rx), task.clone()));
        match worker.await {
            Err(e) if e.is_panic() => {
                tracing::error!("the group-commit task panicked; its requests got 503; restarting it");
            }
            _ => return,
        }
    }
}

/// What the group-commit task works with.
#[derive(Clone)]
struct Task {
    allocator: Allocator,
    limit: usize,
    sizes: BatchSizes,
    admission: Admission,
}

async fn run(rx: Arc<Mutex<mpsc::Receiver<Job>>>, task: Task) {
    let Task {
        allocator,
        limit,
        sizes,
        admission,
    } = task;
    // A tokio mutex is not poisoned by a panic: the next task takes the
    // same queue.
    let mut rx = rx.lock().await;
    let mut jobs = Vec::with_capacity(limit);
    while rx.recv_many(&mut jobs, limit).await > 0 {
        sizes.0.observe(jobs.len() as f64);
        let requests: Vec<BootRequest> = jobs.iter().map(|j| j.request.clone()).collect();
        // On a panic in here `jobs` is dropped while unwinding, and with it
        // the reply channels: every waiting request is answered.
        let started = std::time::Instant::now();
        let decided = allocator
            .decide_requests(&requests, Intent::Commit, ALLOCATION_ACTOR)
            .await;
        if decided.is_ok() {
            admission.observe(requests.len(), started.elapsed());
        }
        let replies: Vec<Reply> = jobs.drain(..).map(|j| j.reply).collect();
        match decided {
            Ok(decided) => {
                let allocator = allocator.clone();
                // Same on a panic while rendering: the replies are dropped.
                tokio::spawn(async move {
                    let results = allocator.render(decided).await;
                    for (reply, result) in replies.into_iter().zip(results) {
                        // A client that went away simply misses its answer.
                        let _ = reply.send(result);
                    }
                });
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(AllocationError::Storage(e.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
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
            tx.send(Job {
                request: BootRequest { name, from: None },
                reply,
            })
            .await
            .unwrap();
            answers.push(answer);
        }
        drop(tx);
        let task = Task {
            allocator,
            limit,
            sizes: BatchSizes(new_size_histogram()),
            admission: Admission::new(AdmissionLimits::default()),
        };
        run(Arc::new(Mutex::new(rx)), task).await;
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

    /// Panics on the first `begin`, then behaves.
    struct PanicsOnce {
        inner: MemoryStore,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl AllocationStore for PanicsOnce {
        async fn begin(&self, intent: Intent) -> Result<Box<dyn AllocationUnit>, StoreError> {
            assert!(self.calls.fetch_add(1, Ordering::SeqCst) > 0, "a store bug");
            self.inner.begin(intent).await
        }
    }

    /// Panics on its first render (a mock would stay poisoned after it).
    struct RendererPanicsOnce(AtomicUsize);

    impl slavealloc_domain::TacRenderer for RendererPanicsOnce {
        fn render(&self, _: &slavealloc_domain::ports::TacRequest) -> Result<String, slavealloc_domain::RenderError> {
            assert!(self.0.fetch_add(1, Ordering::SeqCst) > 0, "a renderer bug");
            Ok("tac".to_owned())
        }
    }

    fn allocator(store: Arc<dyn AllocationStore>, renderer: MockTacRenderer) -> Allocator {
        let host = Arc::new(FixedHost {
            now: SystemTime::UNIX_EPOCH,
            fqdn: "h".into(),
        });
        Allocator::new(store, Arc::new(renderer), host)
    }

    /// Fails the test instead of hanging it.
    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(30), f)
            .await
            .expect("the batcher never answered")
    }

    #[tokio::test]
    async fn a_panicking_store_gets_503_and_the_task_is_restarted() {
        let (counting, names) = fleet();
        let store = Arc::new(PanicsOnce {
            inner: counting.inner.clone(),
            calls: AtomicUsize::new(0),
        });
        let mut renderer = MockTacRenderer::new();
        renderer.expect_render().returning(|_| Ok("tac".to_owned()));
        let batcher = Batcher::spawn(allocator(store, renderer), DEFAULT_BATCH_LIMIT);
        let first = within(batcher.allocate(names[0].clone(), None)).await;
        assert!(
            matches!(first, Err(AllocationError::Storage(StoreError::Unavailable(_)))),
            "{first:?}"
        );
        let second = within(batcher.allocate(names[0].clone(), None)).await.unwrap();
        assert_eq!(second.tac, "tac");
    }

    #[tokio::test]
    async fn a_panicking_renderer_gets_503_and_later_requests_are_served() {
        let (counting, names) = fleet();
        let host = Arc::new(FixedHost {
            now: SystemTime::UNIX_EPOCH,
            fqdn: "h".into(),
        });
        let renderer = Arc::new(RendererPanicsOnce(AtomicUsize::new(0)));
        let batcher = Batcher::spawn(Allocator::new(counting, renderer, host), DEFAULT_BATCH_LIMIT);
        let first = within(batcher.allocate(names[0].clone(), None)).await;
        assert!(
            matches!(first, Err(AllocationError::Storage(StoreError::Unavailable(_)))),
            "{first:?}"
        );
        for name in &names[1..4] {
            assert_eq!(within(batcher.allocate(name.clone(), None)).await.unwrap().tac, "tac");
        }
    }
}
