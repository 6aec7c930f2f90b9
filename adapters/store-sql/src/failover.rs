//! One store over several database servers of which one takes writes (a
//! PostgreSQL primary and its hot standbys, or the nodes of a cluster): it
//! works on one of them, and when that one stops answering or refuses a
//! write as read-only, it looks for the one that takes writes and follows
//! it. So after `pg_ctl promote` of a standby, a daemon given both URLs
//! recovers without a restart.
//!
//! The servers are probed only after a failure, at most once per
//! [`PROBE_EVERY`], each within [`PROBE_WITHIN`]: a fleet of requests
//! against a dead primary does not turn into a fleet of probes.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use slavealloc_domain::schema::Value;
use slavealloc_domain::StoreError;
use sqlx::migrate::{AppliedMigration, Migrator};

use crate::driver::{Db, Dialect, Mode, Out, Sql, Tx};
use crate::{Backend, Cluster, PoolStats};

/// The longest a probe of one server may take.
const PROBE_WITHIN: Duration = Duration::from_millis(1000);
/// How often the servers are probed while none takes writes.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Several servers, one followed.
pub(crate) struct FailoverDb {
    servers: Vec<Arc<dyn Db>>,
    /// The server in use.
    current: AtomicUsize,
    /// The server in use failed since the last probe.
    suspect: Arc<AtomicBool>,
    /// One probe at a time, and when the last one was.
    probing: tokio::sync::Mutex<Option<Instant>>,
}

impl fmt::Debug for FailoverDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailoverDb")
            .field("servers", &self.servers.len())
            .field("current", &self.current.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl FailoverDb {
    /// Follows the first of `servers` that takes writes, once probed; until
    /// then the first. `servers` is not empty and of one backend.
    pub(crate) fn new(servers: Vec<Arc<dyn Db>>) -> Self {
        FailoverDb {
            servers,
            current: AtomicUsize::new(0),
            suspect: Arc::new(AtomicBool::new(true)),
            probing: tokio::sync::Mutex::new(None),
        }
    }

    fn current(&self) -> &Arc<dyn Db> {
        &self.servers[self.current.load(Ordering::Acquire) % self.servers.len()]
    }

    /// When the server in use failed, finds the one that takes writes,
    /// starting with the one in use, and follows it; keeps the one in use
    /// when none does (a standby still serves reads).
    async fn follow(&self) {
        if !self.suspect.load(Ordering::Acquire) {
            return;
        }
        let mut last = self.probing.lock().await;
        if !self.suspect.load(Ordering::Acquire) || last.is_some_and(|at| at.elapsed() < PROBE_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let start = self.current.load(Ordering::Acquire);
        for step in 0..self.servers.len() {
            let i = (start + step) % self.servers.len();
            if let Ok(Ok(true)) = tokio::time::timeout(PROBE_WITHIN, self.servers[i].writable()).await {
                self.current.store(i, Ordering::Release);
                self.suspect.store(false, Ordering::Release);
                return;
            }
        }
    }

    /// Notes a failure that a switch to another server may cure.
    fn check<T>(suspect: &AtomicBool, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if matches!(result, Err(StoreError::Unavailable(_))) {
            suspect.store(true, Ordering::Release);
        }
        result
    }
}

/// A transaction on the server in use, whose failures make it suspect.
struct Watched {
    tx: Box<dyn Tx>,
    suspect: Arc<AtomicBool>,
}

#[async_trait]
impl Tx for Watched {
    async fn fetch(&mut self, sql: &Sql, out: &[Out]) -> Result<Vec<Vec<Value>>, StoreError> {
        FailoverDb::check(&self.suspect, self.tx.fetch(sql, out).await)
    }
    async fn execute(&mut self, sql: &Sql) -> Result<u64, StoreError> {
        FailoverDb::check(&self.suspect, self.tx.execute(sql).await)
    }
    async fn insert(&mut self, sql: &Sql, id_column: &str) -> Result<i64, StoreError> {
        FailoverDb::check(&self.suspect, self.tx.insert(sql, id_column).await)
    }
    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let Watched { tx, suspect } = *self;
        FailoverDb::check(&suspect, tx.commit().await)
    }
}

#[async_trait]
impl Db for FailoverDb {
    fn backend(&self) -> Backend {
        self.servers[0].backend()
    }

    fn dialect(&self) -> &'static Dialect {
        self.servers[0].dialect()
    }

    async fn begin(&self, mode: Mode) -> Result<Box<dyn Tx>, StoreError> {
        self.follow().await;
        let db = Arc::clone(self.current());
        let tx = Self::check(&self.suspect, db.begin(mode).await)?;
        Ok(Box::new(Watched {
            tx,
            suspect: Arc::clone(&self.suspect),
        }))
    }

    async fn ensure_schema(&self, migrator: &Migrator) -> Result<(), StoreError> {
        self.follow().await;
        Self::check(&self.suspect, self.current().ensure_schema(migrator).await)
    }

    async fn applied_migrations(&self) -> Result<(Vec<AppliedMigration>, Option<i64>), StoreError> {
        self.follow().await;
        Self::check(&self.suspect, self.current().applied_migrations().await)
    }

    async fn sync_id_sequence(&self, tx: &mut dyn Tx, table: &str, id_column: &str) -> Result<(), StoreError> {
        self.current().sync_id_sequence(tx, table, id_column).await
    }

    async fn close(&self) {
        for server in &self.servers {
            server.close().await;
        }
    }

    fn pool_stats(&self) -> PoolStats {
        self.current().pool_stats()
    }

    fn cluster(&self) -> Option<Cluster> {
        self.current().cluster()
    }

    async fn writable(&self) -> Result<bool, StoreError> {
        self.follow().await;
        Self::check(&self.suspect, self.current().writable().await)
    }
}
