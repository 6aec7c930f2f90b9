//! MariaDB/MySQL. Every connection runs at READ COMMITTED (InnoDB's default
//! REPEATABLE READ would keep showing an allocation the counts from its
//! first read, taken before it had its pool lock); exports ask for a
//! consistent snapshot explicitly. Deadlocks and lock wait timeouts are
//! [`StoreError::Retryable`].

use std::str::FromStr;

use async_trait::async_trait;
use slavealloc_domain::schema::Value;
use slavealloc_domain::StoreError;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions, MySqlQueryResult, MySqlRow};
use sqlx::{Connection as _, Executor as _, MySql, MySqlConnection, Row as _};

use sqlx::migrate::{AppliedMigration, Migrator};

use crate::driver::{connection_error, translate, Conn, Db, Dialect, Mode, Out, SqlxBackend, Target, Tx, Upsert};
use crate::{migrations, Backend, SqlOptions};

const SCHEMA: &str = include_str!("../sql/mysql/schema.sql");

static DIALECT: Dialect = Dialect {
    numbered_params: false,
    pool_lock: Some(" FOR UPDATE"),
    row_lock: " FOR UPDATE",
    loads_table: false,
    upsert: Upsert::OnDuplicateKey,
    migrations_table_exists: "SELECT COUNT(*) FROM information_schema.tables \
                              WHERE table_schema = DATABASE() AND table_name = '_sqlx_migrations'",
};

/// The named lock that daemons starting together queue on. sqlx's migrator
/// takes its own with `GET_LOCK(name, -1)`, which MariaDB answers at once
/// with NULL instead of waiting, so on MariaDB it excludes nobody.
const SCHEMA_LOCK: &str = "slavealloc.schema";
/// How long a daemon waits for another to finish migrating.
const SCHEMA_LOCK_WAIT_S: i32 = 60;

async fn ensure_schema_on(conn: &mut MySqlConnection, migrator: &Migrator) -> Result<(), StoreError> {
    let row = conn
        .fetch_one(
            sqlx::query("SELECT GET_LOCK(?, ?)")
                .bind(SCHEMA_LOCK)
                .bind(SCHEMA_LOCK_WAIT_S),
        )
        .await
        .map_err(error)?;
    let got: Option<i64> = row.try_get(0).map_err(error)?;
    if got != Some(1) {
        return Err(StoreError::Unavailable(format!(
            "another daemon held the schema lock {SCHEMA_LOCK} for {SCHEMA_LOCK_WAIT_S} s"
        )));
    }
    conn.execute(SCHEMA).await.map_err(error)?;
    migrations::apply_on(conn, migrator, error).await
}

#[derive(Debug)]
pub(crate) struct MySqlDb {
    /// Where it connects, for messages.
    target: Target,
    pool: MySqlPool,
}

fn error(e: sqlx::Error) -> StoreError {
    translate(e, |db| {
        let number = db.try_downcast_ref::<MySqlDatabaseError>()?.number();
        match number {
            // ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT
            1213 | 1205 => Some(StoreError::Retryable(db.message().to_owned())),
            // too many connections, server shutdown, gone away, lost
            // connection, connection killed
            1040 | 1053 | 2006 | 2013 | 1927 => Some(StoreError::Unavailable(db.message().to_owned())),
            _ => None,
        }
    })
}

/// Opens the pool without connecting.
pub(crate) fn open(url: &str, options: &SqlOptions) -> Result<MySqlDb, StoreError> {
    let connect = MySqlConnectOptions::from_str(url)
        .map_err(|e| StoreError::Other(format!("invalid MySQL URL: {e}")))?
        .charset("utf8mb4");
    let target = Target::new(connect.get_host(), connect.get_port(), connect.get_socket());
    let pool = MySqlPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .idle_timeout(options.idle_timeout)
        .max_lifetime(options.max_lifetime)
        .test_before_acquire(true)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .await?;
                Ok(())
            })
        })
        .connect_lazy_with(connect);
    Ok(MySqlDb { pool, target })
}

impl SqlxBackend for MySql {
    fn decode(row: &MySqlRow, out: &[Out]) -> Result<Vec<Value>, sqlx::Error> {
        out.iter()
            .enumerate()
            .map(|(i, o)| {
                Ok(match o {
                    Out::Int => row.try_get::<Option<i64>, _>(i)?.map_or(Value::Null, Value::Int),
                    Out::Bool => row.try_get::<Option<bool>, _>(i)?.map_or(Value::Null, Value::Bool),
                    // Unchecked: sqlx takes a column with a binary collation
                    // (utf8mb4_bin) for VARBINARY, but its bytes are UTF-8 text.
                    Out::Text => row
                        .try_get_unchecked::<Option<String>, _>(i)?
                        .map_or(Value::Null, Value::Text),
                })
            })
            .collect()
    }
    fn error(e: sqlx::Error) -> StoreError {
        error(e)
    }
    fn rows_affected(result: &MySqlQueryResult) -> u64 {
        result.rows_affected()
    }
    const RETURNING: bool = false;
    fn inserted_id(result: &MySqlQueryResult) -> Option<i64> {
        i64::try_from(result.last_insert_id()).ok()
    }
}

impl MySqlDb {
    /// A connection or transaction for `mode`, sqlx's error as it is.
    async fn start(&self, mode: Mode) -> Result<Conn<MySql>, sqlx::Error> {
        let conn = match mode {
            Mode::Read => Conn::Plain(self.pool.acquire().await?),
            // SET TRANSACTION applies to the next transaction only: the
            // session stays at READ COMMITTED.
            Mode::Consistent => Conn::Tx(
                self.pool
                    .begin_with(
                        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; \
                         START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
                    )
                    .await?,
            ),
            Mode::Write => Conn::Tx(self.pool.begin().await?),
            // SERIALIZABLE turns every read into a locking read with
            // next-key locks: other writers wait until the commit.
            Mode::Exclusive => Conn::Tx(
                self.pool
                    .begin_with("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE; START TRANSACTION")
                    .await?,
            ),
        };
        Ok(conn)
    }
}

#[async_trait]
impl Db for MySqlDb {
    fn pool_stats(&self) -> crate::PoolStats {
        crate::driver::pool_stats(&self.pool)
    }

    fn backend(&self) -> Backend {
        Backend::MySql
    }

    fn dialect(&self) -> &'static Dialect {
        &DIALECT
    }

    async fn begin(&self, mode: Mode) -> Result<Box<dyn Tx>, StoreError> {
        match self.start(mode).await {
            Ok(conn) => Ok(Box::new(conn)),
            Err(e) => Err(connection_error(&self.pool, e, &self.target, error).await),
        }
    }

    async fn ensure_schema(&self, migrator: &Migrator) -> Result<(), StoreError> {
        // A connection of its own, closed afterwards: closing it releases
        // the lock whatever happened.
        let mut conn = match self.pool.acquire().await {
            Ok(conn) => conn.detach(),
            Err(e) => return Err(connection_error(&self.pool, e, &self.target, error).await),
        };
        let result = ensure_schema_on(&mut conn, migrator).await;
        let _ = conn.close().await;
        result
    }

    async fn applied_migrations(&self) -> Result<(Vec<AppliedMigration>, Option<i64>), StoreError> {
        migrations::applied(&self.pool, error).await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
