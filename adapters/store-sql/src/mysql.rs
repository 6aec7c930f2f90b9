//! MariaDB/MySQL. Every connection runs at READ COMMITTED (InnoDB's default
//! REPEATABLE READ would keep showing an allocation the counts from its
//! first read, taken before it had its pool lock); exports ask for a
//! consistent snapshot explicitly. Deadlocks and lock wait timeouts are
//! [`StoreError::Retryable`].
//!
//! A server that is a Galera node (`wsrep_on`) gets `wsrep_sync_wait` set on
//! every connection ([`SqlOptions::galera_sync_wait`]), so that a read
//! through any node sees every write the cluster acknowledged before it;
//! its suspect timeout is read once per connection, for the daemon's
//! deadline ([`crate::SqlStore::cluster`]).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use slavealloc_domain::schema::Value;
use slavealloc_domain::StoreError;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions, MySqlQueryResult, MySqlRow};
use sqlx::{Connection as _, Executor as _, MySql, MySqlConnection, Row as _};

use sqlx::migrate::{AppliedMigration, Migrator};

use crate::driver::{
    begin_on, connection_error, translate, Conn, Db, Dialect, Mode, Out, PoolLock, SqlxBackend, Target, Tx, Upsert,
};
use crate::{migrations, Backend, Cluster, SqlOptions};

const SCHEMA: &str = include_str!("../sql/mysql/schema.sql");

static DIALECT: Dialect = Dialect {
    numbered_params: false,
    pool_lock: PoolLock::Select(" FOR UPDATE"),
    row_lock: " FOR UPDATE",
    store_keeps_loads: true,
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

/// A Galera node's settings that the daemon adapts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Galera {
    /// How long the cluster waits for a silent node before it evicts it;
    /// commits on every node wait that long for a node that died.
    suspect_timeout: Duration,
}

#[derive(Debug)]
pub(crate) struct MySqlDb {
    /// Where it connects, for messages.
    target: Target,
    pool: MySqlPool,
    /// What the last new connection found: `Some(None)` for a server that
    /// is not a Galera node, `None` before the first connection.
    galera: Arc<std::sync::Mutex<Option<Option<Galera>>>>,
}

fn error(e: sqlx::Error) -> StoreError {
    translate(e, |db| {
        let number = db.try_downcast_ref::<MySqlDatabaseError>()?.number();
        let message = db.message();
        match number {
            // ER_LOCK_DEADLOCK (also a Galera certification failure or a
            // transaction aborted by a replicated one), ER_LOCK_WAIT_TIMEOUT
            1213 | 1205 => Some(StoreError::Retryable(message.to_owned())),
            // ER_UNKNOWN_COM_ERROR: what a Galera node answers while it is
            // joining, or cut off from the primary component
            1047 => Some(StoreError::Unavailable(format!(
                "the Galera node is not ready (not synced with the cluster's primary component): {message}"
            ))),
            // ER_OPTION_PREVENTS_STATEMENT (--read-only), ER_READ_ONLY_MODE
            1290 | 1836 => Some(StoreError::Unavailable(format!(
                "read-only replica: writes go to the primary ({message})"
            ))),
            // too many connections, server shutdown, gone away, lost
            // connection, connection killed
            1040 | 1053 | 2006 | 2013 | 1927 => Some(StoreError::Unavailable(message.to_owned())),
            _ => None,
        }
    })
}

/// What a new connection learns about a Galera node, and sets on it.
async fn prepare_connection(conn: &mut MySqlConnection, sync_wait: Option<u32>) -> Result<Option<Galera>, sqlx::Error> {
    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await?;
    // MySQL proper has no wsrep variables: no row, not an error.
    let wsrep = conn
        .fetch_optional("SHOW VARIABLES LIKE 'wsrep_on'")
        .await?
        .map(|row| row.try_get_unchecked::<String, _>(1))
        .transpose()?;
    if !wsrep.is_some_and(|on| on.eq_ignore_ascii_case("ON")) {
        return Ok(None);
    }
    if let Some(mask) = sync_wait {
        conn.execute(format!("SET SESSION wsrep_sync_wait = {mask}").as_str())
            .await?;
    }
    let options: String = conn
        .fetch_one("SELECT @@wsrep_provider_options")
        .await?
        .try_get_unchecked(0)?;
    Ok(Some(Galera {
        suspect_timeout: provider_option(&options, "evs.suspect_timeout")
            .and_then(iso_duration)
            .unwrap_or(GALERA_DEFAULT_SUSPECT),
    }))
}

/// Galera's default `evs.suspect_timeout`.
const GALERA_DEFAULT_SUSPECT: Duration = Duration::from_secs(5);

/// The value of `key` in `wsrep_provider_options` (`a = 1; b = PT5S; ...`).
fn provider_option<'o>(options: &'o str, key: &str) -> Option<&'o str> {
    options.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// An ISO 8601 duration of hours, minutes and seconds, as Galera writes
/// them (`PT5S`, `PT1M30S`, `PT0.5S`).
fn iso_duration(text: &str) -> Option<Duration> {
    let mut rest = text.strip_prefix("PT")?;
    let mut seconds = 0.0_f64;
    while !rest.is_empty() {
        let end = rest.find(|c: char| c.is_ascii_alphabetic())?;
        let n: f64 = rest[..end].parse().ok()?;
        seconds += n * match &rest[end..=end] {
            "H" => 3600.0,
            "M" => 60.0,
            "S" => 1.0,
            _ => return None,
        };
        rest = &rest[end + 1..];
    }
    Duration::try_from_secs_f64(seconds).ok()
}

/// Opens the pool without connecting.
pub(crate) fn open(url: &str, options: &SqlOptions) -> Result<MySqlDb, StoreError> {
    let connect = MySqlConnectOptions::from_str(url)
        .map_err(|e| StoreError::Other(format!("invalid MySQL URL: {e}")))?
        .charset("utf8mb4");
    let target = Target::new(connect.get_host(), connect.get_port(), connect.get_socket());
    let galera = Arc::new(std::sync::Mutex::new(None));
    let (seen, sync_wait) = (Arc::clone(&galera), options.galera_sync_wait);
    let pool = MySqlPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .idle_timeout(options.idle_timeout)
        .max_lifetime(options.max_lifetime)
        .test_before_acquire(true)
        .after_connect(move |conn, _| {
            let seen = Arc::clone(&seen);
            Box::pin(async move {
                let galera = prepare_connection(conn, sync_wait).await?;
                *seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(galera);
                Ok(())
            })
        })
        .connect_lazy_with(connect);
    Ok(MySqlDb { pool, target, galera })
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

    fn cluster(&self) -> Option<Cluster> {
        let seen = *self.galera.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.flatten().map(|g| Cluster::Galera {
            suspect_timeout: g.suspect_timeout,
        })
    }

    async fn writable(&self) -> Result<bool, StoreError> {
        let mut conn = self.begin(Mode::Read).await?;
        let row = conn
            .fetch(&crate::driver::Sql::new(&DIALECT, "SELECT @@read_only"), &[Out::Int])
            .await?;
        Ok(matches!(row.first().and_then(|r| r.first()), Some(Value::Int(0))))
    }

    fn dialect(&self) -> &'static Dialect {
        &DIALECT
    }

    async fn begin(&self, mode: Mode) -> Result<Box<dyn Tx>, StoreError> {
        let conn = begin_on(&self.pool, &self.target, error, || self.start(mode)).await?;
        Ok(Box::new(conn))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn galera_durations_are_read_as_galera_writes_them() {
        assert_eq!(iso_duration("PT5S"), Some(Duration::from_secs(5)));
        assert_eq!(iso_duration("PT1M30S"), Some(Duration::from_secs(90)));
        assert_eq!(iso_duration("PT0.5S"), Some(Duration::from_millis(500)));
        assert_eq!(iso_duration("PT1H"), Some(Duration::from_secs(3600)));
        assert_eq!(iso_duration("5"), None);
        assert_eq!(iso_duration("PT5X"), None);
        assert_eq!(iso_duration("PT5"), None);
    }

    #[test]
    fn a_provider_option_is_found_among_the_others() {
        let options = "base_dir = /var/lib/mysql/; evs.suspect_timeout = PT3S; evs.inactive_timeout = PT15S";
        assert_eq!(provider_option(options, "evs.suspect_timeout"), Some("PT3S"));
        assert_eq!(provider_option(options, "evs.inactive_timeout"), Some("PT15S"));
        assert_eq!(provider_option(options, "gmcast.segment"), None);
    }
}
