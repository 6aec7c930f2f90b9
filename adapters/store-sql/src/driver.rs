//! What the shared code needs from a backend: a way to run SQL text with
//! typed parameters and get rows of domain [`Value`]s back.
//!
//! The shared modules (`inventory`, `allocation`, `dump`) build every query
//! once, from the schema metadata, with [`Sql`]. The transaction code is
//! written once too ([`Tx`] for [`Conn`], binding with [`query`]); each
//! backend module (`sqlite`, `mysql`, `postgres`) implements [`Db`] with its
//! connection setup, DDL and locks, and [`SqlxBackend`] with what truly
//! differs: decoding, error codes, rows affected and the inserted id.

use std::fmt::{self, Write as _};

use async_trait::async_trait;
use slavealloc_domain::schema::Value;
use slavealloc_domain::StoreError;
use sqlx::migrate::{AppliedMigration, Migrator};

use crate::{Backend, Cluster, PoolStats};

/// A bound parameter. Typed even when NULL, because PostgreSQL wants to
/// know the type of every parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param {
    /// A 32-bit integer (every integer column of the schema is one).
    Int(Option<i32>),
    /// A boolean.
    Bool(Option<bool>),
    /// A string.
    Text(Option<String>),
    /// A 64-bit integer (the rebuild's millisecond times).
    BigInt(Option<i64>),
}

/// How a result column is decoded. Integers of any width decode to
/// [`Value::Int`]; NULL to [`Value::Null`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Out {
    Int,
    Bool,
    Text,
}

/// What kind of connection a piece of work needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Statements on a pooled connection, each on its own: single reads.
    Read,
    /// One read-only transaction that sees a single consistent state.
    Consistent,
    /// A read-write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so it never fails half-way for want of it.
    Write,
    /// A read-write transaction that keeps every other writer out of every
    /// table from its first statement to its commit, so that what it reads
    /// stays what is there until it commits (`dbinit --force`: dump, then
    /// replace). PostgreSQL locks the tables, MySQL runs it SERIALIZABLE
    /// (its reads take next-key locks), SQLite is `BEGIN IMMEDIATE`.
    Exclusive,
}

/// The SQL differences that the shared query builders need to know.
#[derive(Debug)]
pub(crate) struct Dialect {
    /// `$1, $2, ...` (PostgreSQL) rather than `?`.
    pub numbered_params: bool,
    /// How an allocation serialises with the others of its pools.
    pub pool_lock: PoolLock,
    /// Appended to the read of a row that is about to be updated or deleted.
    pub row_lock: &'static str,
    /// Whether the store itself keeps `slave_loads` (every allocation
    /// applies its moves, and [`crate::loads`] recounts it): on MariaDB
    /// and PostgreSQL, where a shared database may not allow triggers; on
    /// SQLite triggers keep it.
    pub store_keeps_loads: bool,
    /// How an `INSERT` replaces the row whose key it repeats.
    pub upsert: Upsert,
    /// One row holding 1 when the migrator's `_sqlx_migrations` table
    /// exists in the connected database, 0 when not.
    pub migrations_table_exists: &'static str,
}

/// How an allocation transaction keeps every other allocation of its pools
/// out until it commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolLock {
    /// Nothing to do: the write transaction itself excludes every other
    /// writer (SQLite's `BEGIN IMMEDIATE`).
    None,
    /// `SELECT ... FROM pools WHERE ... ORDER BY poolid` followed by this
    /// locking clause (PostgreSQL, a lone MariaDB/MySQL server).
    Select(&'static str),
    /// An upsert of the pools' rows in `pool_locks`, in `poolid` order: a
    /// row lock on the node, and a write that Galera certifies, so that
    /// allocations committed through different nodes of a cluster conflict
    /// (a MariaDB Galera node).
    Bump,
}

/// The spelling of "insert, or update the row with the same key".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upsert {
    /// MySQL and MariaDB: `ON DUPLICATE KEY UPDATE c = VALUES(c)`.
    OnDuplicateKey,
    /// PostgreSQL and SQLite: `ON CONFLICT (key) DO UPDATE SET c = excluded.c`.
    OnConflict,
}

impl Upsert {
    /// What follows an `INSERT ... VALUES (...)` so that a row whose `key`
    /// exists has its `columns` replaced instead.
    pub fn tail(self, key: &[&str], columns: &[&str]) -> String {
        match self {
            Upsert::OnDuplicateKey => {
                let set: Vec<String> = columns.iter().map(|c| format!("{c} = VALUES({c})")).collect();
                format!(" ON DUPLICATE KEY UPDATE {}", set.join(", "))
            }
            Upsert::OnConflict => {
                let set: Vec<String> = columns.iter().map(|c| format!("{c} = excluded.{c}")).collect();
                format!(" ON CONFLICT ({}) DO UPDATE SET {}", key.join(", "), set.join(", "))
            }
        }
    }
}

/// A SQL statement being built: text plus its parameters, placeholders
/// written in the dialect's style.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    pub text: String,
    pub params: Vec<Param>,
    numbered: bool,
}

impl Sql {
    pub fn new(dialect: &Dialect, text: &str) -> Self {
        Self {
            text: text.to_owned(),
            params: Vec::new(),
            numbered: dialect.numbered_params,
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends one placeholder bound to `param`.
    pub fn param(&mut self, param: Param) -> &mut Self {
        self.params.push(param);
        if self.numbered {
            // Writing to a String cannot fail.
            let _ = write!(self.text, "${}", self.params.len());
        } else {
            self.text.push('?');
        }
        self
    }

    /// Appends comma-separated placeholders, one per parameter.
    pub fn params(&mut self, params: impl IntoIterator<Item = Param>) -> &mut Self {
        for (i, p) in params.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.param(p);
        }
        self
    }
}

/// A backend: a connection pool plus what differs per database.
#[async_trait]
pub(crate) trait Db: Send + Sync + fmt::Debug {
    fn backend(&self) -> Backend;
    fn dialect(&self) -> &'static Dialect;
    /// A connection or transaction for `mode`.
    async fn begin(&self, mode: Mode) -> Result<Box<dyn Tx>, StoreError>;
    /// Creates the original's tables and indexes that are missing, then
    /// applies `migrator`'s migrations that are not yet recorded.
    async fn ensure_schema(&self, migrator: &Migrator) -> Result<(), StoreError>;
    /// The migrations the database records, and the one left half-done.
    /// Only called once the migrator's table is known to exist.
    async fn applied_migrations(&self) -> Result<(Vec<AppliedMigration>, Option<i64>), StoreError>;
    /// After rows were inserted with their ids given, makes the table's next
    /// generated id follow the largest one (PostgreSQL sequences; the other
    /// backends do that by themselves).
    async fn sync_id_sequence(&self, _tx: &mut dyn Tx, _table: &str, _id_column: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn close(&self);
    /// The connection pool's state, for monitoring.
    fn pool_stats(&self) -> PoolStats;
    /// The cluster the server is a node of, as the last new connection
    /// found it; `None` for a lone server or before the first connection.
    fn cluster(&self) -> Option<Cluster> {
        None
    }
    /// Whether the server takes writes now (not a hot standby, not
    /// read-only).
    async fn writable(&self) -> Result<bool, StoreError> {
        Ok(true)
    }
}

/// A backend's connection: a pooled one for reads that need no transaction,
/// or a transaction (rolled back when dropped uncommitted).
pub(crate) enum Conn<DB: sqlx::Database> {
    Plain(sqlx::pool::PoolConnection<DB>),
    Tx(sqlx::Transaction<'static, DB>),
}

impl<DB: sqlx::Database> Conn<DB> {
    /// The connection to run a statement on.
    pub(crate) fn get(&mut self) -> &mut DB::Connection {
        match self {
            Conn::Plain(c) => c,
            Conn::Tx(t) => t,
        }
    }

    /// Commits a transaction; a plain connection has nothing to commit.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Conn::Plain(_) => Ok(()),
            Conn::Tx(t) => t.commit().await,
        }
    }
}

/// What differs between the backends' sqlx types, for the one
/// transaction implementation ([`Tx`] for [`Conn`]).
pub(crate) trait SqlxBackend: sqlx::Database {
    /// Decodes a row's columns as `out` says.
    fn decode(row: &Self::Row, out: &[Out]) -> Result<Vec<Value>, sqlx::Error>;
    /// Translates an sqlx error with the backend's error codes.
    fn error(e: sqlx::Error) -> StoreError;
    /// The rows a statement affected.
    fn rows_affected(result: &Self::QueryResult) -> u64;
    /// Whether an `INSERT` gives its id with `RETURNING` (PostgreSQL)
    /// rather than in its result ([`SqlxBackend::inserted_id`]).
    const RETURNING: bool;
    /// The id the row an `INSERT` made got, from its result.
    fn inserted_id(result: &Self::QueryResult) -> Option<i64>;
}

/// `sql` with its parameters bound: the same on every backend.
pub(crate) fn query<DB>(sql: &Sql) -> sqlx::query::Query<'_, DB, <DB as sqlx::Database>::Arguments<'_>>
where
    DB: sqlx::Database,
    for<'q> Option<i32>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<bool>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sql.params.iter().fold(sqlx::query(&sql.text), |q, p| match p {
        Param::Int(v) => q.bind(*v),
        Param::Bool(v) => q.bind(*v),
        Param::Text(v) => q.bind(v.as_deref()),
        Param::BigInt(v) => q.bind(*v),
    })
}

#[async_trait]
impl<DB> Tx for Conn<DB>
where
    DB: SqlxBackend,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> Option<i32>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<bool>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    async fn fetch(&mut self, sql: &Sql, out: &[Out]) -> Result<Vec<Vec<Value>>, StoreError> {
        let rows = query::<DB>(sql).fetch_all(self.get()).await.map_err(DB::error)?;
        rows.iter().map(|r| DB::decode(r, out).map_err(DB::error)).collect()
    }

    async fn execute(&mut self, sql: &Sql) -> Result<u64, StoreError> {
        let result = query::<DB>(sql).execute(self.get()).await.map_err(DB::error)?;
        Ok(DB::rows_affected(&result))
    }

    async fn insert(&mut self, sql: &Sql, id_column: &str) -> Result<i64, StoreError> {
        if !DB::RETURNING {
            let result = query::<DB>(sql).execute(self.get()).await.map_err(DB::error)?;
            return DB::inserted_id(&result).ok_or_else(|| StoreError::Other(format!("INSERT gave no {id_column}")));
        }
        let mut returning = sql.clone();
        returning.push(&format!(" RETURNING {id_column}"));
        let row = self.fetch(&returning, &[Out::Int]).await?.pop().unwrap_or_default();
        row.first()
            .and_then(Value::as_int)
            .ok_or_else(|| StoreError::Other(format!("INSERT returned no {id_column}")))
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        (*self).commit().await.map_err(DB::error)
    }
}

/// The state of any backend's sqlx pool.
pub(crate) fn pool_stats<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> PoolStats {
    PoolStats {
        size: pool.size(),
        idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
        max: pool.options().get_max_connections(),
    }
}

/// The longest [`start_queued`] waits on a pool whose connections are all
/// busy. A request's own deadline ends the wait first; this bounds callers
/// without one (the poller, the command line).
const QUEUE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether every connection the pool may open is open and in use: its
/// acquire timeout then means a queue, not a server that cannot be
/// reached (sqlx would have opened another connection).
fn saturated<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> bool {
    pool.size() >= pool.options().get_max_connections() && pool.num_idle() == 0
}

/// Runs `start` (an acquire or a begin on `pool`) again when it timed out
/// only because every connection was busy. The pool's acquire timeout is
/// short so that a dead server is a 503 at once; a busy pool is not dead,
/// and while a Galera cluster evicts a node every connection of a
/// survivor waits seconds on its commit: the requests queued behind them
/// should wait too, until their deadline, rather than fail.
async fn start_queued<DB, T, F, Fut>(pool: &sqlx::Pool<DB>, mut start: F) -> Result<T, sqlx::Error>
where
    DB: sqlx::Database,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let began = std::time::Instant::now();
    loop {
        match start().await {
            Err(sqlx::Error::PoolTimedOut) if saturated(pool) && began.elapsed() < QUEUE_LIMIT => continue,
            other => return other,
        }
    }
}

/// A connection, inside a transaction or not. Dropping a transaction
/// without [`Tx::commit`] rolls it back.
#[async_trait]
pub(crate) trait Tx: Send {
    /// Runs a query and decodes every row as `out` says.
    async fn fetch(&mut self, sql: &Sql, out: &[Out]) -> Result<Vec<Vec<Value>>, StoreError>;
    /// Runs a statement; returns the number of rows affected.
    async fn execute(&mut self, sql: &Sql) -> Result<u64, StoreError>;
    /// Runs an `INSERT` of one row into a table whose generated id column is
    /// `id_column`, and returns the id it got.
    async fn insert(&mut self, sql: &Sql, id_column: &str) -> Result<i64, StoreError>;
    /// Makes the transaction's writes durable (nothing for a plain
    /// connection).
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// Translates an sqlx error. `classify` gives the backend's reading of a
/// database error code, when it has one.
/// Where a backend connects, for messages, and the last explanation of a
/// connection timeout.
#[derive(Debug)]
pub(crate) struct Target {
    /// `host:port`, or the socket path.
    name: String,
    /// When the cause of a timeout was last found, and what it was.
    explained: std::sync::Mutex<Option<(std::time::Instant, String)>>,
    /// Whether the last explanation was that the server cannot be
    /// reached, until a connection is had again.
    unreachable: std::sync::atomic::AtomicBool,
}

impl Target {
    pub(crate) fn new(host: &str, port: u16, socket: Option<&std::path::PathBuf>) -> Self {
        let name = match socket {
            Some(path) => path.display().to_string(),
            None if host.contains(':') => format!("[{host}]:{port}"),
            None => format!("{host}:{port}"),
        };
        Target {
            name,
            explained: std::sync::Mutex::new(None),
            unreachable: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn recent_explanation(&self) -> Option<String> {
        let last = self.explained.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        last.as_ref()
            .filter(|(at, _)| at.elapsed() < EXPLAIN_EVERY)
            .map(|(_, why)| why.clone())
    }

    fn remember(&self, why: &str) {
        let mut last = self.explained.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *last = Some((std::time::Instant::now(), why.to_owned()));
    }
}

/// The longest a connection attempt made to explain a timeout may take.
const EXPLAIN_WITHIN: std::time::Duration = std::time::Duration::from_millis(500);
/// How long one explanation serves every request that times out: when
/// the pool is exhausted, a probe per request would add connections to an
/// overloaded server.
const EXPLAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Translates an error of getting a connection. sqlx retries a refused
/// connection until the acquire timeout and then says only that it timed
/// out, which drops the one thing an operator needs: so one direct attempt
/// (at most one a second per pool) finds the cause (refused, no such host,
/// bad password, TLS) and names the server.
pub(crate) async fn connection_error<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    e: sqlx::Error,
    target: &Target,
    error: fn(sqlx::Error) -> StoreError,
) -> StoreError {
    use sqlx::{ConnectOptions as _, Connection as _};
    let name = &target.name;
    if !matches!(e, sqlx::Error::PoolTimedOut) {
        return match error(e) {
            StoreError::Unavailable(why) => StoreError::Unavailable(format!("{name}: {why}")),
            other => other,
        };
    }
    if let Some(why) = target.recent_explanation() {
        return StoreError::Unavailable(why);
    }
    let waited = pool.options().get_acquire_timeout().as_millis();
    let (why, unreachable) = match tokio::time::timeout(EXPLAIN_WITHIN, pool.connect_options().connect()).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            (format!("every connection to {name} stayed busy for {waited} ms"), false)
        }
        Ok(Err(cause)) => (format!("cannot connect to {name}: {cause}"), true),
        Err(_) => (format!("{name} did not answer within {waited} ms"), true),
    };
    target.remember(&why);
    target
        .unreachable
        .store(unreachable, std::sync::atomic::Ordering::Relaxed);
    StoreError::Unavailable(why)
}

/// How long a request waits for a connection while its server is known
/// to be unreachable. A connection on a LAN takes milliseconds: the first
/// request after the server is back still gets one, and the requests
/// queued behind a dead server (a daemon's allocation batches run one
/// after the other) are each refused in a fraction of a second rather
/// than after the whole acquire timeout each.
const WHILE_UNREACHABLE: std::time::Duration = std::time::Duration::from_millis(250);

/// A connection or transaction from `start` (an acquire or a begin on
/// `pool`), with sqlx's errors explained by [`connection_error`]: a
/// saturated pool is queued on ([`start_queued`]), a server known to be
/// unreachable is given [`WHILE_UNREACHABLE`] only.
pub(crate) async fn begin_on<DB, T, F, Fut>(
    pool: &sqlx::Pool<DB>,
    target: &Target,
    error: fn(sqlx::Error) -> StoreError,
    start: F,
) -> Result<T, StoreError>
where
    DB: sqlx::Database,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    use std::sync::atomic::Ordering;
    let attempt = start_queued(pool, start);
    let result = if target.unreachable.load(Ordering::Relaxed) {
        tokio::time::timeout(WHILE_UNREACHABLE, attempt)
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
    } else {
        attempt.await
    };
    match result {
        Ok(conn) => {
            target.unreachable.store(false, Ordering::Relaxed);
            Ok(conn)
        }
        Err(e) => Err(connection_error(pool, e, target, error).await),
    }
}

pub(crate) fn translate(
    e: sqlx::Error,
    classify: impl FnOnce(&dyn sqlx::error::DatabaseError) -> Option<StoreError>,
) -> StoreError {
    use sqlx::error::ErrorKind;
    match e {
        sqlx::Error::Database(db) => {
            if let Some(known) = classify(db.as_ref()) {
                return known;
            }
            match db.kind() {
                ErrorKind::UniqueViolation => StoreError::Duplicate(db.message().to_owned()),
                // The stores check references before writing, so this is a
                // race with a concurrent write; on a delete it is exactly
                // "still in use".
                ErrorKind::ForeignKeyViolation => StoreError::Referenced(db.message().to_owned()),
                _ => StoreError::Other(db.to_string()),
            }
        }
        sqlx::Error::PoolTimedOut => StoreError::Unavailable("no database connection could be had in time".to_owned()),
        sqlx::Error::PoolClosed => StoreError::Unavailable("the connection pool is closed".to_owned()),
        e @ (sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed) => {
            StoreError::Unavailable(e.to_string())
        }
        e => StoreError::Other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_dialect() {
        let numbered = Dialect {
            numbered_params: true,
            pool_lock: PoolLock::None,
            row_lock: "",
            store_keeps_loads: false,
            upsert: Upsert::OnConflict,
            migrations_table_exists: "",
        };
        let mut sql = Sql::new(&numbered, "SELECT 1 FROM t WHERE a = ");
        sql.param(Param::Int(Some(1)))
            .push(" AND b IN (")
            .params([Param::Text(None), Param::Bool(Some(true))])
            .push(")");
        assert_eq!(sql.text, "SELECT 1 FROM t WHERE a = $1 AND b IN ($2, $3)");
        assert_eq!(sql.params.len(), 3);

        let plain = Dialect {
            numbered_params: false,
            ..numbered
        };
        let mut sql = Sql::new(&plain, "VALUES (");
        sql.params([Param::Int(None), Param::Int(Some(2))]).push(")");
        assert_eq!(sql.text, "VALUES (?, ?)");
    }
}
