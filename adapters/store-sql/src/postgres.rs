//! PostgreSQL, at its default READ COMMITTED. Allocations lock their pools'
//! rows `FOR NO KEY UPDATE`: that excludes other allocations but not the
//! `KEY SHARE` locks that foreign key checks take, so creating a slave in a
//! pool never waits for an allocation. Serialization failures, deadlocks
//! and lock timeouts are [`StoreError::Retryable`]. A write on a hot
//! standby is [`StoreError::Unavailable`], "read-only replica".

use std::str::FromStr;

use async_trait::async_trait;
use slavealloc_domain::schema::{Table, Value};
use slavealloc_domain::StoreError;
use sqlx::postgres::{PgConnectOptions, PgDatabaseError, PgPool, PgPoolOptions, PgQueryResult, PgRow};
use sqlx::{Column as _, Executor as _, PgConnection, Postgres, Row as _, TypeInfo as _};

use sqlx::migrate::{AppliedMigration, Migrator};

use crate::driver::{
    begin_on, connection_error, translate, Conn, Db, Dialect, Mode, Out, PoolLock, Sql, SqlxBackend, Target, Tx, Upsert,
};
use crate::{migrations, Backend, SqlOptions};

const SCHEMA: &str = include_str!("../sql/postgres/schema.sql");

/// Taken while the schema is created, so that two daemons starting at once
/// do not both create the same table (PostgreSQL's `IF NOT EXISTS` is not
/// safe against that race). The number is arbitrary but fixed.
const SCHEMA_LOCK: i64 = 0x0005_1a4e_a110;

static DIALECT: Dialect = Dialect {
    numbered_params: true,
    pool_lock: PoolLock::Select(" FOR NO KEY UPDATE"),
    row_lock: " FOR UPDATE",
    store_keeps_loads: true,
    upsert: Upsert::OnConflict,
    migrations_table_exists: "SELECT COUNT(*) FROM information_schema.tables \
                              WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'",
};

#[derive(Debug)]
pub(crate) struct PgDb {
    /// Where it connects, for messages.
    target: Target,
    pool: PgPool,
}

fn error(e: sqlx::Error) -> StoreError {
    translate(e, |db| {
        let code = db.try_downcast_ref::<PgDatabaseError>()?.code();
        match code {
            // serialization_failure, deadlock_detected, lock_not_available
            "40001" | "40P01" | "55P03" => Some(StoreError::Retryable(db.message().to_owned())),
            // read_only_sql_transaction: a hot standby
            "25006" => Some(StoreError::Unavailable(format!(
                "read-only replica: writes go to the primary ({})",
                db.message()
            ))),
            // connection exceptions, shutdowns, too many connections
            c if c.starts_with("08") || c.starts_with("57P") || c == "53300" => {
                Some(StoreError::Unavailable(db.message().to_owned()))
            }
            _ => None,
        }
    })
}

/// Opens the pool without connecting.
pub(crate) fn open(url: &str, options: &SqlOptions) -> Result<PgDb, StoreError> {
    let connect =
        PgConnectOptions::from_str(url).map_err(|e| StoreError::Other(format!("invalid PostgreSQL URL: {e}")))?;
    let target = Target::new(connect.get_host(), connect.get_port(), connect.get_socket());
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .idle_timeout(options.idle_timeout)
        .max_lifetime(options.max_lifetime)
        .test_before_acquire(true)
        .connect_lazy_with(connect);
    Ok(PgDb { pool, target })
}

impl SqlxBackend for Postgres {
    fn decode(row: &PgRow, out: &[Out]) -> Result<Vec<Value>, sqlx::Error> {
        out.iter()
            .enumerate()
            .map(|(i, o)| {
                Ok(match o {
                    // Columns are INTEGER, counts BIGINT: PostgreSQL decodes
                    // each only as its own width.
                    Out::Int => match row.column(i).type_info().name() {
                        "INT8" => row.try_get::<Option<i64>, _>(i)?,
                        "INT2" => row.try_get::<Option<i16>, _>(i)?.map(i64::from),
                        _ => row.try_get::<Option<i32>, _>(i)?.map(i64::from),
                    }
                    .map_or(Value::Null, Value::Int),
                    Out::Bool => row.try_get::<Option<bool>, _>(i)?.map_or(Value::Null, Value::Bool),
                    Out::Text => row.try_get::<Option<String>, _>(i)?.map_or(Value::Null, Value::Text),
                })
            })
            .collect()
    }
    fn error(e: sqlx::Error) -> StoreError {
        error(e)
    }
    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
    const RETURNING: bool = true;
    fn inserted_id(_: &PgQueryResult) -> Option<i64> {
        None
    }
}

impl PgDb {
    /// A connection or transaction for `mode`, sqlx's error as it is.
    async fn start(&self, mode: Mode) -> Result<Conn<Postgres>, sqlx::Error> {
        let conn = match mode {
            Mode::Read => Conn::Plain(self.pool.acquire().await?),
            Mode::Consistent => Conn::Tx(
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?,
            ),
            Mode::Write => Conn::Tx(self.pool.begin().await?),
            // EXCLUSIVE lets readers in and keeps every writer out.
            Mode::Exclusive => {
                let tables: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
                Conn::Tx(
                    self.pool
                        .begin_with(format!("BEGIN; LOCK TABLE {} IN EXCLUSIVE MODE", tables.join(", ")))
                        .await?,
                )
            }
        };
        Ok(conn)
    }
}

#[async_trait]
impl Db for PgDb {
    fn pool_stats(&self) -> crate::PoolStats {
        crate::driver::pool_stats(&self.pool)
    }

    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn writable(&self) -> Result<bool, StoreError> {
        let mut conn = self.begin(Mode::Read).await?;
        let row = conn
            .fetch(
                &Sql::new(
                    &DIALECT,
                    "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'",
                ),
                &[Out::Bool],
            )
            .await?;
        Ok(matches!(row.first().and_then(|r| r.first()), Some(Value::Bool(true))))
    }

    fn dialect(&self) -> &'static Dialect {
        &DIALECT
    }

    async fn begin(&self, mode: Mode) -> Result<Box<dyn Tx>, StoreError> {
        let conn = begin_on(&self.pool, &self.target, error, || self.start(mode)).await?;
        Ok(Box::new(conn))
    }

    async fn ensure_schema(&self, migrator: &Migrator) -> Result<(), StoreError> {
        let mut tx = match self.pool.begin().await {
            Ok(tx) => tx,
            Err(e) => return Err(connection_error(&self.pool, e, &self.target, error).await),
        };
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(error)?;
        let conn: &mut PgConnection = &mut tx;
        conn.execute(SCHEMA).await.map_err(error)?;
        tx.commit().await.map_err(error)?;
        migrations::apply(&self.pool, migrator, error).await
    }

    async fn applied_migrations(&self) -> Result<(Vec<AppliedMigration>, Option<i64>), StoreError> {
        migrations::applied(&self.pool, error).await
    }

    async fn sync_id_sequence(&self, tx: &mut dyn Tx, table: &str, id_column: &str) -> Result<(), StoreError> {
        // The next generated id is one above the largest stored one.
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence('{table}', '{id_column}'), \
             COALESCE(MAX({id_column}), 0) + 1, false) FROM {table}"
        );
        tx.fetch(&Sql::new(&DIALECT, &sql), &[Out::Int]).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
