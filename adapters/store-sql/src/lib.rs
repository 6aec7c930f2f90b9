//! # slavealloc-store-sql
//!
//! The storage ports of `slavealloc-domain` ([`AllocationStore`],
//! [`InventoryStore`], [`DumpStore`]) on SQLite, MariaDB/MySQL and
//! PostgreSQL, with sqlx. The backend is chosen at run time from the URL's
//! scheme: `sqlite:`, `mysql:`/`mariadb:`, `postgres:`/`postgresql:`.
//!
//! Main design decision: one crate, and every query written once. The
//! shared modules build their SQL from the schema metadata of the domain
//! crate (`Table::columns()`), so there is one `INSERT`, one snapshot read,
//! one dump loader for all three databases, and one transaction
//! implementation. Each backend module (`sqlite`, `mysql`, `postgres`)
//! holds only what truly differs: its connection setup, its DDL
//! (`sql/<backend>/schema.sql`, `migrations/<backend>/`), its way of
//! decoding values, its transaction start, its lock clause, its error codes
//! and how an insert reports its id. No module mixes backends with `cfg` or
//! macros.
//!
//! The schema is the original's (docs/compatibility.md §1), so an existing slavealloc
//! database works unchanged; the only addition is the `audit_log` table.
//!
//! SQLite URLs follow sqlx: `sqlite://slavealloc.db` and
//! `sqlite:slavealloc.db` are relative to the working directory,
//! `sqlite:///var/lib/slavealloc.db` is absolute, `sqlite::memory:` is a
//! private in-memory database.
#![deny(missing_docs)]

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use slavealloc_domain::audit::{AuditEntry, AuditQuery};
use slavealloc_domain::lifecycle::{Hold, HoldQuery, HoldTarget, LifecycleStore, NewHold};
use slavealloc_domain::live::{Lease, LiveState, PollRecord};
use slavealloc_domain::ports::AllocationUnit;
use slavealloc_domain::schema::{Row, Table, Value};
use slavealloc_domain::{
    Actor, AllocationStore, Dump, DumpStore, Intent, InventoryStore, LiveStore, SaveReplaced, StoreError,
};

mod allocation;
mod driver;
mod dump;
mod failover;
mod inventory;
mod lifecycle;
mod live;
mod loads;
mod migrations;
mod mysql;
mod paging;
mod postgres;
mod retry;
mod rows;
mod sqlite;

use driver::{Db, Mode, Out, Sql};
pub use migrations::{MigrationState, MigrationStatus, SchemaStatus};

/// Tables a backend may keep besides the domain's (see `migrations/`).
const STORE_TABLES: [&str; 9] = [
    "slave_loads",
    "pool_locks",
    "holds",
    "slave_boots",
    "slave_presence",
    "master_status",
    "unknown_workers",
    "leases",
    migrations::TABLE,
];

/// The database kinds this crate speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// SQLite (a file, or `:memory:`).
    Sqlite,
    /// MariaDB or MySQL.
    MySql,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The backend a database URL names, from its scheme.
    ///
    /// # Errors
    /// [`StoreError::Other`] for any other scheme.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let scheme = url.split(':').next().unwrap_or_default().to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "mysql" | "mariadb" => Ok(Backend::MySql),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(StoreError::Other(format!(
                "unsupported database URL scheme {scheme:?}: use sqlite:, mysql:, mariadb:, postgres: or postgresql:"
            ))),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::MySql => "mysql",
            Backend::Postgres => "postgres",
        })
    }
}

/// Connection pool settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlOptions {
    /// The most connections the pool opens.
    pub max_connections: u32,
    /// How long a caller waits for a connection before
    /// [`StoreError::Unavailable`]: short, so that a dead database is
    /// reported at once rather than after the client gave up.
    pub acquire_timeout: Duration,
    /// Idle connections are closed after this long, before the server's
    /// own idle limit (MySQL's `wait_timeout`) closes them under us.
    pub idle_timeout: Option<Duration>,
    /// Connections are replaced after this long whatever their use, as the
    /// original's `pool_recycle` did.
    pub max_lifetime: Option<Duration>,
    /// Applies (and expects) this build's schema migrations only up to this
    /// version; `None`, the default, for all. For rolling-upgrade tests: a
    /// store limited to an earlier version behaves as the build that had
    /// only those migrations.
    pub migrations_up_to: Option<i64>,
    /// Whether a SQLite file that does not exist is created (the default).
    /// Read-only work (`dbdump`, `db status`) says no, so that a misspelt
    /// path is an error rather than an empty database.
    pub create_missing: bool,
    /// `wsrep_sync_wait` set on every connection to a Galera node (a bit
    /// mask: 1, the default, makes reads and transaction starts wait until
    /// the node has applied every write the cluster acknowledged before
    /// them); `None` leaves the server's setting.
    pub galera_sync_wait: Option<u32>,
}

/// The cluster a database server is a node of, as the store found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cluster {
    /// A MariaDB Galera node.
    Galera {
        /// How long the cluster waits for a silent node before it evicts
        /// it (`evs.suspect_timeout`): commits on every node wait that long
        /// after a node died.
        suspect_timeout: Duration,
    },
}

impl Default for SqlOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(2),
            idle_timeout: Some(Duration::from_secs(120)),
            max_lifetime: Some(Duration::from_secs(400)),
            migrations_up_to: None,
            create_missing: true,
            galera_sync_wait: Some(1),
        }
    }
}

/// Every storage port on one SQL database. Cheap to clone: clones share
/// the connection pool.
///
/// Connections are checked before each use, so a server that closed idle
/// connections (or was restarted) costs a reconnect, not an error.
#[derive(Clone)]
pub struct SqlStore {
    db: Arc<dyn Db>,
    migrations_up_to: Option<i64>,
    /// The current run of conflicting transactions, for their backoff.
    conflicts: Arc<retry::Conflicts>,
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.db.backend())
            .finish_non_exhaustive()
    }
}

/// A connection pool's state: what `/metrics` reports as the database
/// pool's gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections, idle or in use.
    pub size: u32,
    /// Open connections waiting for work.
    pub idle: u32,
    /// The most connections the pool opens.
    pub max: u32,
}

impl SqlStore {
    /// The connection pool's state now.
    pub fn pool_stats(&self) -> PoolStats {
        self.db.pool_stats()
    }

    /// Connects with default [`SqlOptions`] and creates the schema if it is
    /// missing.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached in
    /// time; [`StoreError::Other`] for a bad URL or a failed schema creation.
    pub async fn connect(url: &str) -> Result<SqlStore, StoreError> {
        Self::connect_with(url, SqlOptions::default()).await
    }

    /// Connects and creates the schema if it is missing.
    ///
    /// # Errors
    /// As for [`SqlStore::connect`].
    pub async fn connect_with(url: &str, options: SqlOptions) -> Result<SqlStore, StoreError> {
        let store = Self::open_lazy(url, options)?;
        store.ensure_schema().await?;
        Ok(store)
    }

    /// Builds the connection pool without connecting, so that a daemon can
    /// start while its database is down; call [`SqlStore::ensure_schema`]
    /// (with retries) before serving.
    ///
    /// # Errors
    /// [`StoreError::Other`] for a URL that names no supported backend or
    /// cannot be parsed.
    pub fn open_lazy(url: &str, options: SqlOptions) -> Result<SqlStore, StoreError> {
        Self::open_lazy_any(&[url], options)
    }

    /// [`SqlStore::open_lazy`] over several servers of one database, of
    /// which one takes writes (a PostgreSQL primary and its standbys, the
    /// nodes of a Galera cluster): the store works on the first that takes
    /// writes, and after a failure follows whichever takes writes then (a
    /// promoted standby), without a restart. With no server taking writes
    /// it still reads from one; writes then fail with
    /// [`StoreError::Unavailable`].
    ///
    /// # Errors
    /// As for [`SqlStore::open_lazy`]; also no URL, or URLs of different
    /// backends, or several SQLite files.
    pub fn open_lazy_any(urls: &[&str], options: SqlOptions) -> Result<SqlStore, StoreError> {
        let Some(first) = urls.first() else {
            return Err(StoreError::Other("no database URL".to_owned()));
        };
        let backend = Backend::from_url(first)?;
        let mut servers = Vec::with_capacity(urls.len());
        for url in urls {
            if Backend::from_url(url)? != backend {
                return Err(StoreError::Other(format!(
                    "the database URLs name different backends ({backend} and {})",
                    Backend::from_url(url)?
                )));
            }
            let db: Arc<dyn Db> = match backend {
                Backend::Sqlite if urls.len() > 1 => {
                    return Err(StoreError::Other(
                        "several database URLs are servers of one database: SQLite has one file".to_owned(),
                    ))
                }
                Backend::Sqlite => Arc::new(sqlite::open(url, &options)?),
                Backend::MySql => Arc::new(mysql::open(url, &options)?),
                Backend::Postgres => Arc::new(postgres::open(url, &options)?),
            };
            servers.push(db);
        }
        let db = if servers.len() == 1 {
            servers.remove(0)
        } else {
            Arc::new(failover::FailoverDb::new(servers))
        };
        Ok(SqlStore {
            db,
            migrations_up_to: options.migrations_up_to,
            conflicts: Arc::default(),
        })
    }

    /// The cluster the server in use is a node of, as the last new
    /// connection found it (so: after [`SqlStore::ensure_schema`]); `None`
    /// for a lone server.
    pub fn cluster(&self) -> Option<Cluster> {
        self.db.cluster()
    }

    /// Whether the server in use takes writes (it is no hot standby and not
    /// read-only).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when it cannot be reached.
    pub async fn writable(&self) -> Result<bool, StoreError> {
        self.db.writable().await
    }

    /// Opens a database that must already hold the slavealloc tables, for
    /// reading it (`dbdump`, `dbcopy`'s source): nothing is created, not
    /// even a SQLite file, and a database without the tables is an error.
    ///
    /// # Errors
    /// [`StoreError::Other`] for a bad URL, a SQLite file that does not
    /// exist or a database without the tables; [`StoreError::Unavailable`]
    /// when it cannot be reached.
    pub async fn open_existing(url: &str) -> Result<SqlStore, StoreError> {
        let options = SqlOptions {
            create_missing: false,
            ..SqlOptions::default()
        };
        let store = Self::open_lazy(url, options)?;
        let dialect = store.db.dialect();
        let mut conn = store.db.begin(Mode::Read).await?;
        // One row at most: counting would read every slave.
        let probe = format!("SELECT slaveid FROM {} LIMIT 1", Table::Slaves.name());
        match conn.fetch(&Sql::new(dialect, &probe), &[Out::Int]).await {
            Err(StoreError::Other(why)) => Err(StoreError::Other(format!(
                "the database has no slavealloc tables (create them with `slavealloc dbinit`): {why}"
            ))),
            other => other.map(|_| store.clone()),
        }
    }

    /// Creates the original's tables and indexes that are missing, then
    /// applies the schema migrations of this rebuild's own tables that the
    /// database has not recorded yet (see [`SqlStore::schema_status`]).
    /// Leaves existing tables and their rows alone, except SQLite's
    /// `slave_loads` counts, which it recomputes from `slaves`. Safe to
    /// call again, and from several processes at once.
    ///
    /// On a server that takes no writes (a hot standby), it only checks
    /// that the schema is there, with every migration this build has.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached;
    /// [`StoreError::Other`] when a migration fails, or one the database
    /// recorded differs from this build's, or a read-only server's schema
    /// lacks some.
    pub async fn ensure_schema(&self) -> Result<(), StoreError> {
        if !self.db.writable().await? {
            return self.check_replica_schema().await;
        }
        let migrator = migrations::migrator(self.db.backend(), self.migrations_up_to);
        self.db.ensure_schema(&migrator).await?;
        if self.migrations_up_to.is_none() {
            self.reconcile_loads().await?;
        }
        Ok(())
    }

    /// Recounts the per-silo loads (`slave_loads`) from `slaves` where this
    /// store keeps them (MariaDB, PostgreSQL; triggers keep them on
    /// SQLite), pool by pool under each pool's allocation lock, and answers
    /// how many pools' counts were wrong. Every allocation keeps them, and
    /// this store's inventory writes recount them; a daemon runs this at
    /// start and every `[database] reconcile_interval_s` for the writers
    /// that are not this store (the original daemon, an operator's SQL).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached;
    /// [`StoreError::Retryable`] when it kept conflicting with allocations.
    pub async fn reconcile_loads(&self) -> Result<u64, StoreError> {
        self.conflicts.retrying(|| loads::reconcile(&*self.db)).await
    }

    /// After a write that went through: recounts the loads when it `moved`
    /// slaves between pools, silos or masters (a write of notes moves
    /// nobody). The write stands whatever happens here; a failed recount is
    /// left to the next one.
    async fn recount_after<T>(&self, moved: bool, written: Result<T, StoreError>) -> Result<T, StoreError> {
        if moved && written.is_ok() {
            let _ = self.reconcile_loads().await;
        }
        written
    }

    /// What a read-only server must have for this build to serve from it.
    async fn check_replica_schema(&self) -> Result<(), StoreError> {
        let status = self.schema_status().await?;
        let missing: Vec<String> = status
            .migrations
            .iter()
            .filter(|m| m.state != MigrationState::Applied && m.state != MigrationState::Newer)
            .map(|m| format!("{} {}", m.version, m.description))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Other(format!(
                "the server is a read-only replica whose schema lacks this build's migrations {} \
                 (start a daemon on the primary first: it applies them)",
                missing.join(", ")
            )))
        }
    }

    /// Which schema migrations the database has, against this build's:
    /// what `slavealloc db status` prints, and what a daemon checks at
    /// start to say that it is older than its database. Reads only.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached.
    pub async fn schema_status(&self) -> Result<SchemaStatus, StoreError> {
        let dialect = self.db.dialect();
        let mut conn = self.db.begin(Mode::Read).await?;
        let exists = conn
            .fetch(&Sql::new(dialect, dialect.migrations_table_exists), &[Out::Int])
            .await?;
        drop(conn);
        let recorded = matches!(exists.first().and_then(|r| r.first()), Some(Value::Int(n)) if *n > 0);
        let (applied, dirty) = if recorded {
            self.db.applied_migrations().await?
        } else {
            (Vec::new(), None)
        };
        Ok(migrations::status(
            self.db.backend(),
            self.migrations_up_to,
            &applied,
            dirty,
        ))
    }

    /// Drops every table of the schema, rows and all (`dbinit --force`).
    /// [`SqlStore::ensure_schema`] creates them again.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Other`].
    pub async fn drop_all(&self) -> Result<(), StoreError> {
        let mut conn = self.db.begin(Mode::Read).await?;
        // The store's own tables, which no domain table refers to, then the
        // domain's, referring tables first, so that no foreign key is left
        // dangling.
        let tables = STORE_TABLES
            .iter()
            .copied()
            .chain(Table::ALL.iter().rev().map(|t| t.name()));
        for table in tables {
            conn.execute(&Sql::new(self.db.dialect(), &format!("DROP TABLE IF EXISTS {table}")))
                .await?;
        }
        Ok(())
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// Closes every connection of the pool (and of its clones); calls made
    /// afterwards fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.db.close().await;
    }
}

#[async_trait]
impl AllocationStore for SqlStore {
    async fn begin(&self, intent: Intent) -> Result<Box<dyn AllocationUnit>, StoreError> {
        allocation::begin(Arc::clone(&self.db), Arc::clone(&self.conflicts), intent).await
    }
}

/// Whether writing `row` into `table` can change the per-silo loads: a
/// slave's pool, silo or master.
fn moves_loads(table: Table, row: &Row) -> bool {
    table == Table::Slaves
        && row
            .keys()
            .any(|c| c == "current_masterid" || allocation::SILO_KEY.contains(&c.as_str()))
}

#[async_trait]
impl InventoryStore for SqlStore {
    async fn list(&self, table: Table) -> Result<Vec<Row>, StoreError> {
        inventory::list(&*self.db, table).await
    }

    async fn list_page(&self, table: Table, after: Option<i64>, limit: usize) -> Result<Vec<Row>, StoreError> {
        paging::list_page(&*self.db, table, after, limit).await
    }

    async fn get(&self, table: Table, id: i32) -> Result<Option<Row>, StoreError> {
        inventory::get(&*self.db, table, id).await
    }

    async fn find_by_name(&self, table: Table, name: &str) -> Result<Option<Row>, StoreError> {
        inventory::find_by_name(&*self.db, table, name).await
    }

    async fn insert(&self, table: Table, row: Row, actor: Actor) -> Result<Row, StoreError> {
        let written = self
            .conflicts
            .retrying(|| inventory::insert(&*self.db, table, row.clone(), actor.clone()))
            .await;
        self.recount_after(moves_loads(table, &row), written).await
    }

    async fn update(&self, table: Table, id: i32, changes: Row, actor: Actor) -> Result<Row, StoreError> {
        let written = self
            .conflicts
            .retrying(|| inventory::update(&*self.db, table, id, changes.clone(), actor.clone()))
            .await;
        self.recount_after(moves_loads(table, &changes), written).await
    }

    async fn update_many(
        &self,
        table: Table,
        ids: &[i32],
        changes: Row,
        note: Option<String>,
        dry_run: bool,
        actor: Actor,
    ) -> Result<Vec<(Row, Row)>, StoreError> {
        let written = self
            .conflicts
            .retrying(|| {
                inventory::update_many(
                    &*self.db,
                    table,
                    ids,
                    changes.clone(),
                    note.clone(),
                    dry_run,
                    actor.clone(),
                )
            })
            .await;
        self.recount_after(!dry_run && moves_loads(table, &changes), written)
            .await
    }

    async fn delete(&self, table: Table, id: i32, actor: Actor) -> Result<(), StoreError> {
        let written = self
            .conflicts
            .retrying(|| inventory::delete(&*self.db, table, id, actor.clone()))
            .await;
        self.recount_after(table == Table::Slaves, written).await
    }

    async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        inventory::audit(&*self.db, query).await
    }

    async fn prune_allocations(&self, before: SystemTime, batch: u32) -> Result<u64, StoreError> {
        self.conflicts
            .retrying(|| inventory::prune_allocations(&*self.db, before, batch))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        inventory::ping(&*self.db).await
    }
}

#[async_trait]
impl LiveStore for SqlStore {
    async fn record_poll(&self, poll: &PollRecord) -> Result<(), StoreError> {
        self.conflicts.retrying(|| live::record_poll(&*self.db, poll)).await
    }

    async fn live_state(&self) -> Result<LiveState, StoreError> {
        live::state(&*self.db).await
    }

    async fn take_lease(&self, name: &str, holder: &str, now: SystemTime, ttl: Duration) -> Result<Lease, StoreError> {
        live::take_lease(&*self.db, name, holder, now, ttl).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        live::release_lease(&*self.db, name, holder).await
    }
}

#[async_trait]
impl LifecycleStore for SqlStore {
    async fn hold(
        &self,
        target: HoldTarget,
        ids: &[i32],
        hold: &NewHold,
        actor: Actor,
    ) -> Result<Vec<Hold>, StoreError> {
        self.conflicts
            .retrying(|| lifecycle::hold(&*self.db, target, ids, hold, actor.clone()))
            .await
    }

    async fn release(
        &self,
        target: HoldTarget,
        ids: &[i32],
        also: &Row,
        actor: Actor,
    ) -> Result<Vec<Hold>, StoreError> {
        self.conflicts
            .retrying(|| lifecycle::release(&*self.db, target, ids, also, actor.clone()))
            .await
    }

    async fn holds(&self, query: &HoldQuery) -> Result<Vec<Hold>, StoreError> {
        lifecycle::holds(&*self.db, query).await
    }

    async fn resume_due(&self, now: SystemTime) -> Result<Vec<Hold>, StoreError> {
        self.conflicts.retrying(|| lifecycle::resume_due(&*self.db, now)).await
    }
}

#[async_trait]
impl DumpStore for SqlStore {
    async fn export(&self) -> Result<Dump, StoreError> {
        dump::export(&*self.db).await
    }

    async fn replace_all(&self, dump: &Dump) -> Result<(), StoreError> {
        let written = dump::load(&*self.db, dump, true).await;
        self.recount_after(true, written).await
    }

    async fn replace_all_saving<'s>(&self, dump: &Dump, save: &'s (dyn SaveReplaced + 's)) -> Result<(), StoreError> {
        let written = dump::load_saving(&*self.db, dump, Some(save)).await;
        self.recount_after(true, written).await
    }

    async fn append(&self, dump: &Dump) -> Result<(), StoreError> {
        let written = dump::load(&*self.db, dump, false).await;
        self.recount_after(true, written).await
    }

    async fn row_count(&self) -> Result<u64, StoreError> {
        dump::row_count(&*self.db).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_picks_the_backend() {
        let cases = [
            ("sqlite:slavealloc.db", Backend::Sqlite),
            ("sqlite::memory:", Backend::Sqlite),
            ("mysql://root@127.0.0.1/slavealloc", Backend::MySql),
            ("mariadb://root@127.0.0.1/slavealloc", Backend::MySql),
            ("postgres://postgres@127.0.0.1/slavealloc", Backend::Postgres),
            ("PostgreSQL://postgres@127.0.0.1/slavealloc", Backend::Postgres),
        ];
        for (url, want) in cases {
            assert_eq!(Backend::from_url(url).unwrap(), want, "{url}");
        }
        assert!(matches!(Backend::from_url("oracle://x"), Err(StoreError::Other(_))));
        assert!(matches!(Backend::from_url("slavealloc.db"), Err(StoreError::Other(_))));
    }
}
