//! SQLite: a file created if missing, in WAL mode (readers never wait for
//! the writer) with a busy timeout (writers queue rather than fail), foreign
//! keys enforced. Every write transaction starts with `BEGIN IMMEDIATE`, so
//! it holds the single write lock from its first statement: allocations are
//! serialised by that lock, and a transaction never fails half-way because
//! another one upgraded to a writer first.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use slavealloc_domain::schema::Value;
use slavealloc_domain::StoreError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteQueryResult, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row as _, Sqlite};

use sqlx::migrate::{AppliedMigration, Migrator};

use crate::driver::{translate, Conn, Db, Dialect, Mode, Out, PoolLock, Sql, SqlxBackend, Tx, Upsert};
use crate::{migrations, Backend, SqlOptions};

const SCHEMA: &str = include_str!("../sql/sqlite/schema.sql");
const LOADS: &str = include_str!("../sql/sqlite/loads.sql");

/// How long a writer waits for the write lock before its transaction is
/// reported as [`StoreError::Retryable`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

static DIALECT: Dialect = Dialect {
    numbered_params: false,
    pool_lock: PoolLock::None,
    row_lock: "",
    store_keeps_loads: false,
    upsert: Upsert::OnConflict,
    migrations_table_exists: "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
};

#[derive(Debug)]
pub(crate) struct SqliteDb {
    pool: SqlitePool,
}

impl SqliteDb {
    /// Runs the schema script in one write transaction: BEGIN IMMEDIATE
    /// queues for the write lock instead of failing half-way.
    async fn create_schema(&self) -> Result<(), StoreError> {
        let mut tx = self.begin(Mode::Write).await?;
        // sqlx runs every statement of a parameterless SQLite query in turn.
        tx.execute(&Sql::new(&DIALECT, SCHEMA)).await?;
        tx.commit().await
    }
}

fn error(e: sqlx::Error) -> StoreError {
    translate(e, |db| {
        let code: i32 = db.code()?.parse().ok()?;
        // SQLITE_BUSY and SQLITE_LOCKED, with their extended codes: the
        // write lock was not had within the busy timeout.
        matches!(code & 0xff, 5 | 6).then(|| StoreError::Retryable(db.message().to_owned()))
    })
}

/// Creates the database file, empty (which SQLite takes for an empty
/// database), readable by its owner only: it holds the slave passwords in
/// the clear, and SQLite gives the -wal and -shm files it creates beside it
/// the database file's mode. A file that exists is left as it is.
fn create_private(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt as _;
    // Any error (a file that exists, a missing directory) is SQLite's to
    // report when it connects, as it would without this.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
}

/// Opens the pool without connecting.
pub(crate) fn open(url: &str, options: &SqlOptions) -> Result<SqliteDb, StoreError> {
    let connect = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Other(format!("invalid SQLite URL: {e}")))?
        .create_if_missing(options.create_missing)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true);
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    if !in_memory && options.create_missing {
        create_private(connect.get_filename());
    } else if !in_memory && !connect.get_filename().exists() {
        return Err(StoreError::Other(format!(
            "there is no SQLite database {}",
            connect.get_filename().display()
        )));
    }
    let pool = SqlitePoolOptions::new().acquire_timeout(options.acquire_timeout);
    // An in-memory database lives only as long as a connection to it: keep
    // exactly one, forever.
    let pool = if in_memory {
        pool.max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        pool.max_connections(options.max_connections)
            .idle_timeout(options.idle_timeout)
            .max_lifetime(options.max_lifetime)
    };
    Ok(SqliteDb {
        pool: pool.test_before_acquire(true).connect_lazy_with(connect),
    })
}

impl SqlxBackend for Sqlite {
    fn decode(row: &SqliteRow, out: &[Out]) -> Result<Vec<Value>, sqlx::Error> {
        out.iter()
            .enumerate()
            .map(|(i, o)| {
                Ok(match o {
                    Out::Int => row.try_get::<Option<i64>, _>(i)?.map_or(Value::Null, Value::Int),
                    Out::Bool => row.try_get::<Option<bool>, _>(i)?.map_or(Value::Null, Value::Bool),
                    Out::Text => row.try_get::<Option<String>, _>(i)?.map_or(Value::Null, Value::Text),
                })
            })
            .collect()
    }
    fn error(e: sqlx::Error) -> StoreError {
        error(e)
    }
    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
    const RETURNING: bool = false;
    fn inserted_id(result: &SqliteQueryResult) -> Option<i64> {
        Some(result.last_insert_rowid())
    }
}

#[async_trait]
impl Db for SqliteDb {
    fn pool_stats(&self) -> crate::PoolStats {
        crate::driver::pool_stats(&self.pool)
    }

    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn dialect(&self) -> &'static Dialect {
        &DIALECT
    }

    async fn begin(&self, mode: Mode) -> Result<Box<dyn Tx>, StoreError> {
        let conn = match mode {
            Mode::Read => Conn::Plain(self.pool.acquire().await.map_err(error)?),
            // A deferred transaction reads from one WAL snapshot.
            Mode::Consistent => Conn::Tx(self.pool.begin().await.map_err(error)?),
            Mode::Write | Mode::Exclusive => Conn::Tx(self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(error)?),
        };
        Ok(Box::new(conn))
    }

    async fn ensure_schema(&self, migrator: &Migrator) -> Result<(), StoreError> {
        // Connections opening a brand-new file race to switch it to WAL, and
        // SQLite answers the loser SQLITE_BUSY at once, without waiting out
        // the busy timeout: so several daemons starting together retry here.
        let started = std::time::Instant::now();
        loop {
            match self.create_schema().await {
                Err(StoreError::Retryable(_)) if started.elapsed() < BUSY_TIMEOUT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                done => break done?,
            }
        }
        // SQLite has no lock for the migrator to take: a daemon that lost
        // the race to record a migration runs again and finds it recorded
        // (the migrations are idempotent).
        loop {
            match migrations::apply(&self.pool, migrator, error).await {
                Err(_) if started.elapsed() < BUSY_TIMEOUT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                done => break done?,
            }
        }
        let mut tx = self.begin(Mode::Write).await?;
        tx.execute(&Sql::new(&DIALECT, LOADS)).await?;
        tx.commit().await
    }

    async fn applied_migrations(&self) -> Result<(Vec<AppliedMigration>, Option<i64>), StoreError> {
        migrations::applied(&self.pool, error).await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
