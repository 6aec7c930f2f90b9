//! What only the SQL store has to prove, against the real servers:
//! allocations serialised per pool across connection pools, a pool that
//! survives killed connections, the schema of docs/compatibility.md §1, a database
//! created by the original working unchanged, and clear errors when the
//! database is down.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use slavealloc_domain::schema::{Table, Value};
use slavealloc_domain::{AllocationStore, DumpStore, InventoryStore, StoreError};
use slavealloc_store_contract::allocator;
use slavealloc_store_contract::fleet::{int, one_pool, Fleet};
use slavealloc_store_sql::{Backend, SqlOptions, SqlStore};
use slavealloc_store_sql_testing::TestDatabase;
use sqlx::{Connection as _, Executor as _, Row as _};

// ---------------------------------------------------------------- concurrency

/// Two pools (1: masters 1–3; 2: masters 5–6 and disabled 7), two silos in
/// each, 50 slaves per pool×silo: 200 slaves.
fn two_pools() -> Fleet {
    let mut fleet = Fleet::new();
    fleet
        .master(1, 1, true)
        .master(2, 1, true)
        .master(3, 1, true)
        .master(5, 2, true)
        .master(6, 2, true)
        .master(7, 2, false)
        .password(1, None, "one")
        .password(2, None, "two");
    for n in 1..=200 {
        let pool = if n <= 100 { 1 } else { 2 };
        fleet.slave(n, &format!("slave-{n}"), pool);
        if n % 2 == 0 {
            fleet.set(Table::Slaves, n, "distroid", int(2));
        }
    }
    fleet
}

/// 200 gettacs at once through two allocators, each on its own store (its
/// own connection pool) on one database: no error, and every pool×silo
/// ends balanced over its enabled masters.
async fn two_pools_stay_balanced(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    // Requests queue for a connection while others hold their pool's lock;
    // this test is about correctness, so let them queue.
    let options = SqlOptions {
        acquire_timeout: Duration::from_secs(120),
        ..SqlOptions::default()
    };
    let (a, b) = (db.store_with(options.clone()).await, db.store_with(options).await);
    a.replace_all(&two_pools().dump()).await.unwrap();
    let allocators = [allocator(Arc::new(a.clone())), allocator(Arc::new(b.clone()))];
    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=200 {
        let allocator = allocators[n % 2].clone();
        tasks.spawn(async move { allocator.gettac(&format!("slave-{n}")).await });
    }
    let mut errors = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done.unwrap() {
            errors.push(e);
        }
    }

    let slaves = b.list(Table::Slaves).await.unwrap();
    a.close().await;
    b.close().await;
    db.destroy().await;
    assert_eq!(errors, [], "no request failed");
    let mut per_silo: BTreeMap<(i64, i64), BTreeMap<i64, u32>> = BTreeMap::new();
    for s in &slaves {
        let key = (s["poolid"].as_int().unwrap(), s["distroid"].as_int().unwrap());
        let master = s["current_masterid"].as_int().expect("every slave got a master");
        *per_silo.entry(key).or_default().entry(master).or_default() += 1;
    }
    let enabled = |pool| if pool == 1 { vec![1, 2, 3] } else { vec![5, 6] };
    assert_eq!(per_silo.len(), 4);
    for ((pool, distro), counts) in per_silo {
        assert_eq!(
            counts.keys().copied().collect::<Vec<_>>(),
            enabled(pool),
            "pool {pool} distro {distro}"
        );
        let (min, max) = (counts.values().min().unwrap(), counts.values().max().unwrap());
        assert!(max - min <= 1, "pool {pool} distro {distro}: {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_two_pools_stay_balanced() {
    two_pools_stay_balanced(Backend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_pools_stay_balanced() {
    two_pools_stay_balanced(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_pools_stay_balanced() {
    two_pools_stay_balanced(Backend::Sqlite).await;
}

/// Runs `statement` on an admin connection to the test database and
/// returns the first column of each row as text.
async fn admin_query(db: &TestDatabase, statement: &str) -> Vec<String> {
    match db.backend() {
        Backend::MySql => {
            let mut c = sqlx::MySqlConnection::connect(db.url()).await.unwrap();
            let rows = c.fetch_all(statement).await.unwrap();
            rows.iter()
                .map(|r| r.try_get_unchecked::<String, _>(0).unwrap())
                .collect()
        }
        _ => {
            let mut c = sqlx::PgConnection::connect(db.url()).await.unwrap();
            let rows = c.fetch_all(statement).await.unwrap();
            rows.iter().map(|r| r.get::<String, _>(0)).collect()
        }
    }
}

/// A connection of the test's own, beside the store's.
enum Holder {
    MySql(sqlx::MySqlConnection),
    Postgres(sqlx::PgConnection),
}

impl Holder {
    async fn connect(db: &TestDatabase) -> Self {
        match db.backend() {
            Backend::MySql => Holder::MySql(sqlx::MySqlConnection::connect(db.url()).await.unwrap()),
            _ => Holder::Postgres(sqlx::PgConnection::connect(db.url()).await.unwrap()),
        }
    }

    async fn run(&mut self, sql: &str) {
        match self {
            Holder::MySql(c) => {
                c.execute(sql).await.unwrap();
            }
            Holder::Postgres(c) => {
                c.execute(sql).await.unwrap();
            }
        }
    }
}

/// An allocation waits for the pool lock held by another transaction and
/// then decides from what that transaction committed, not from the counts
/// it could have read before.
async fn an_allocation_waits_for_the_pool_lock(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = db.store().await;
    store.replace_all(&one_pool(3).dump()).await.unwrap();
    // Another allocator: holds pool 1 and puts slaves 1 and 2 on master 1.
    let waiting = match backend {
        // Not INNODB_TRX: MariaDB may wait for this row lock in the
        // optimizer's "Statistics" phase while reporting the transaction as
        // RUNNING. The holder's statement is done, so a pools lock still
        // executing is the store's, waiting.
        Backend::MySql => {
            "SELECT CAST(COUNT(*) AS CHAR) FROM information_schema.PROCESSLIST \
             WHERE DB = DATABASE() AND COMMAND <> 'Sleep' AND ID <> CONNECTION_ID() \
             AND INFO LIKE 'SELECT poolid FROM pools%FOR UPDATE'"
        }
        _ => {
            "SELECT COUNT(*)::text FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND datname = current_database()"
        }
    };
    let mut holder = Holder::connect(&db).await;
    holder.run("BEGIN").await;
    holder.run("SELECT poolid FROM pools WHERE poolid = 1 FOR UPDATE").await;
    holder
        .run("UPDATE slaves SET current_masterid = 1 WHERE slaveid IN (1, 2)")
        .await;
    // As this build's allocator does, it keeps the pool's loads too.
    holder.run("DELETE FROM slave_loads WHERE poolid = 1").await;
    holder
        .run(
            "INSERT INTO slave_loads SELECT poolid, distroid, bitsid, purposeid, dcid, trustid, envid, \
             current_masterid, COUNT(*) FROM slaves WHERE poolid = 1 AND current_masterid IS NOT NULL \
             GROUP BY poolid, distroid, bitsid, purposeid, dcid, trustid, envid, current_masterid",
        )
        .await;

    let alloc = allocator(Arc::new(store.clone()));
    let request = tokio::spawn(async move { alloc.gettac("slave-3").await });
    // Wait (bounded) until the request is blocked on the lock.
    let mut blocked = false;
    for _ in 0..600 {
        if admin_query(&db, waiting).await.first().is_some_and(|n| n != "0") {
            blocked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(blocked, "the allocation never waited for the pool lock");
    assert!(!request.is_finished());
    holder.run("COMMIT").await;

    let got = request.await.unwrap().unwrap();
    store.close().await;
    db.destroy().await;
    assert_eq!(
        got.decision.master.unwrap().masterid,
        2,
        "master 1 has two slaves once the holder committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_allocation_waits_for_the_pool_lock() {
    an_allocation_waits_for_the_pool_lock(Backend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_allocation_waits_for_the_pool_lock() {
    an_allocation_waits_for_the_pool_lock(Backend::Postgres).await;
}

// ------------------------------------------------------------ pool health

/// The server kills every connection of the store's pool (as MySQL's
/// `wait_timeout` or a restart would); the next calls still succeed.
async fn survives_killed_connections(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = db.store().await;
    store.replace_all(&one_pool(4).dump()).await.unwrap();
    // Several connections open and idle in the pool.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let s = store.clone();
        tasks.spawn(async move { s.export().await.unwrap() });
    }
    while tasks.join_next().await.is_some() {}

    let kill_all = match backend {
        Backend::MySql => format!(
            "SELECT CAST(ID AS CHAR) FROM information_schema.PROCESSLIST WHERE DB = '{}' AND ID <> CONNECTION_ID()",
            db.name()
        ),
        _ => format!(
            "SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            db.name()
        ),
    };
    let killed = admin_query(&db, &kill_all).await;
    if backend == Backend::MySql {
        for id in &killed {
            db.admin(&format!("KILL {id}")).await.unwrap();
        }
    }
    assert!(!killed.is_empty(), "the store had connections to kill");

    let pools = store.list(Table::Pools).await;
    let allocated = allocator(Arc::new(store.clone())).gettac("slave-1").await;
    let pinged = store.ping().await;
    store.close().await;
    db.destroy().await;
    assert_eq!(pools.unwrap().len(), 3);
    assert_eq!(allocated.unwrap().decision.master.unwrap().masterid, 1);
    assert_eq!(pinged, Ok(()));
}

#[tokio::test]
async fn mariadb_survives_killed_connections() {
    survives_killed_connections(Backend::MySql).await;
}

#[tokio::test]
async fn postgres_survives_killed_connections() {
    survives_killed_connections(Backend::Postgres).await;
}

/// A database that cannot be reached is `Unavailable`, from `connect` and
/// from every call on a lazily opened store; opening lazily itself works.
#[tokio::test]
async fn a_dead_database_is_unavailable() {
    let options = SqlOptions {
        acquire_timeout: Duration::from_millis(300),
        ..SqlOptions::default()
    };
    // Port 9 (discard) has no listener here: connections are refused.
    for url in [
        "mysql://root@127.0.0.1:9/slavealloc",
        "postgres://postgres@127.0.0.1:9/slavealloc",
    ] {
        let err = SqlStore::connect_with(url, options.clone()).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{url}: {err:?}");
        let lazy = SqlStore::open_lazy(url, options.clone()).unwrap();
        assert!(matches!(lazy.ping().await, Err(StoreError::Unavailable(_))), "{url}");
        assert!(
            matches!(lazy.list(Table::Pools).await, Err(StoreError::Unavailable(_))),
            "{url}"
        );
        assert!(matches!(
            lazy.begin(slavealloc_domain::Intent::Commit).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(
            matches!(lazy.ensure_schema().await, Err(StoreError::Unavailable(_))),
            "{url}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}/no/such/dir/x.db", dir.path().display());
    assert!(SqlStore::connect_with(&missing, options.clone()).await.is_err());
    for bad in ["oracle://x", "mysql://[not a url", "sqlite://x.db?mode=bogus"] {
        assert!(
            matches!(SqlStore::open_lazy(bad, options.clone()), Err(StoreError::Other(_))),
            "{bad}"
        );
    }
}

// ------------------------------------------------------------------ schema

/// SQLite: a file created if missing, in WAL mode; the schema is created
/// once and `ensure_schema` again keeps the rows; `drop_all` empties the
/// database of tables.
#[tokio::test]
async fn sqlite_file_is_created_in_wal_mode_and_schema_creation_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let url = format!("sqlite://{}", path.display());
    let store = SqlStore::connect(&url).await.unwrap();
    assert!(path.exists());
    assert_eq!(store.backend(), Backend::Sqlite);
    store.replace_all(&one_pool(2).dump()).await.unwrap();
    store.ensure_schema().await.unwrap();
    let again = SqlStore::connect(&url).await.unwrap();
    assert_eq!(
        again.list(Table::Slaves).await.unwrap().len(),
        2,
        "rows survive a second ensure_schema"
    );

    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'slaves' AND sql IS NOT NULL ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(indexes, ["slave_poolid", "slave_silo"]);

    again.drop_all().await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(tables, Vec::<String>::new());
    again.ensure_schema().await.unwrap();
    assert_eq!(again.row_count().await.unwrap(), 0);
}

/// The mode bits of `path`'s permissions.
fn file_mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A SQLite database holds the slave passwords in the clear: a file the
/// store creates is 0600, and SQLite gives its -wal and -shm files the
/// database file's mode. A file that exists keeps its mode.
#[tokio::test]
async fn a_new_sqlite_file_and_its_wal_and_shm_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let store = SqlStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.replace_all(&one_pool(2).dump()).await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let file = dir.path().join(format!("fresh.db{suffix}"));
        assert_eq!(file_mode(&file), 0o600, "{}", file.display());
    }
    store.close().await;

    let existing = dir.path().join("shared.db");
    std::fs::write(&existing, b"").unwrap();
    std::fs::set_permissions(&existing, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let store = SqlStore::connect(&format!("sqlite://{}", existing.display()))
        .await
        .unwrap();
    store.close().await;
    assert_eq!(file_mode(&existing), 0o640, "an existing file's mode is left alone");
}

// Several daemons starting at once: tests/migrations.rs.

/// The original schema (docs/compatibility.md §1) as MariaDB describes it: per table, its engine, then per
/// column `name type NULL|NOT NULL [PK] [AUTO] [UNIQUE] [-> table.column]`,
/// then its secondary indexes.
const ORIGINAL_SCHEMA: &str = "
audit_log InnoDB
  id int(11) NOT NULL PK AUTO
  at varchar(128) NOT NULL
  actor text NOT NULL
  table_name varchar(128) NOT NULL
  row_id int(11) NOT NULL
  old_values text NULL
  new_values text NULL
  index audit_log_at (at)
  index audit_log_row (table_name, row_id)
bitlengths InnoDB
  bitsid int(11) NOT NULL PK AUTO
  name varchar(128) NOT NULL UNIQUE
datacenters InnoDB
  dcid int(11) NOT NULL PK AUTO
  name varchar(128) NOT NULL UNIQUE
distros InnoDB
  distroid int(11) NOT NULL PK AUTO
  name varchar(128) NOT NULL UNIQUE
environments InnoDB
  envid int(11) NOT NULL PK AUTO
  name varchar(128) NOT NULL UNIQUE
masters InnoDB
  masterid int(11) NOT NULL PK AUTO
  nickname varchar(128) NOT NULL UNIQUE
  fqdn text NOT NULL
  http_port int(11) NOT NULL
  pb_port int(11) NOT NULL
  dcid int(11) NOT NULL -> datacenters.dcid
  poolid int(11) NOT NULL -> pools.poolid
  enabled tinyint(1) NOT NULL
  notes text NULL
pools InnoDB
  poolid int(11) NOT NULL PK AUTO
  name varchar(128) NOT NULL UNIQUE
purposes InnoDB
  purposeid int(11) NOT NULL PK AUTO
  name varchar(128) NOT NULL UNIQUE
slave_passwords InnoDB
  poolid int(11) NOT NULL -> pools.poolid
  distroid int(11) NULL -> distros.distroid
  password text NOT NULL
slaves InnoDB
  slaveid int(11) NOT NULL PK AUTO
  name varchar(128) NOT NULL UNIQUE
  distroid int(11) NOT NULL -> distros.distroid
  bitsid int(11) NOT NULL -> bitlengths.bitsid
  speedid int(11) NOT NULL -> speeds.speedid
  purposeid int(11) NOT NULL -> purposes.purposeid
  dcid int(11) NOT NULL -> datacenters.dcid
  trustid int(11) NOT NULL -> trustlevels.trustid
  envid int(11) NOT NULL -> environments.envid
  poolid int(11) NOT NULL -> pools.poolid
  basedir text NOT NULL
  locked_masterid int(11) NULL -> masters.masterid
  custom_tplid int(11) NULL -> tac_templates.tplid
  enabled tinyint(1) NOT NULL
  notes text NULL
  current_masterid int(11) NULL -> masters.masterid
  index slave_poolid (poolid)
  index slave_silo (distroid, bitsid, speedid, purposeid, dcid, trustid, envid)
speeds InnoDB
  speedid int(11) NOT NULL PK AUTO
  name varchar(128) NOT NULL UNIQUE
tac_templates InnoDB
  tplid int(11) NOT NULL PK AUTO
  name varchar(128) NOT NULL UNIQUE
  template text NOT NULL
trustlevels InnoDB
  trustid int(11) NOT NULL PK AUTO
  name varchar(128) NOT NULL UNIQUE
";

/// The schema of database `name` in [`ORIGINAL_SCHEMA`]'s notation, read
/// from information_schema.
async fn describe_mariadb(conn: &mut sqlx::MySqlConnection, name: &str) -> String {
    let text =
        |r: &sqlx::mysql::MySqlRow, i: usize| r.try_get_unchecked::<Option<String>, _>(i).unwrap().unwrap_or_default();
    // The migrator's own bookkeeping table is sqlx's, not the schema's;
    // the live-fleet tables are the rebuild's alone (its migrations).
    let tables = sqlx::query(
        "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? \
         AND TABLE_NAME NOT IN ('_sqlx_migrations', 'slave_boots', 'slave_presence', 'master_status', \
         'unknown_workers', 'leases', 'holds', 'pool_locks', 'slave_loads')",
    )
    .bind(name)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    // Sorted here: information_schema's collation puts '_' after letters.
    let mut tables: Vec<(String, String)> = tables.iter().map(|t| (text(t, 0), text(t, 1))).collect();
    tables.sort();
    let mut out = String::from("\n");
    for (table, engine) in &tables {
        out += &format!("{table} {engine}\n");
        let columns = sqlx::query(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY, EXTRA FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        )
        .bind(name)
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        for c in &columns {
            let column = text(c, 0);
            let mut line = format!(
                "  {column} {} {}",
                text(c, 1),
                if text(c, 2) == "YES" { "NULL" } else { "NOT NULL" }
            );
            let key = text(c, 3);
            if key == "PRI" {
                line += " PK";
            }
            if text(c, 4).contains("auto_increment") {
                line += " AUTO";
            }
            let unique = sqlx::query(
                "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 AND NON_UNIQUE = 0 AND INDEX_NAME <> 'PRIMARY' AND COLUMN_NAME = ?",
            )
            .bind(name)
            .bind(table)
            .bind(&column)
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .get::<i64, _>(0);
            if unique > 0 {
                line += " UNIQUE";
            }
            let fk = sqlx::query(
                "SELECT REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND COLUMN_NAME = ? AND REFERENCED_TABLE_NAME IS NOT NULL",
            )
            .bind(name)
            .bind(table)
            .bind(&column)
            .fetch_optional(&mut *conn)
            .await
            .unwrap();
            if let Some(fk) = fk {
                line += &format!(" -> {}.{}", text(&fk, 0), text(&fk, 1));
            }
            out += &line;
            out.push('\n');
        }
        // Named secondary indexes (InnoDB adds one per foreign key; those
        // carry the constraint's generated name and are not part of §1).
        let indexes = sqlx::query(
            "SELECT INDEX_NAME, GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX SEPARATOR ', ') \
             FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 1 \
             AND INDEX_NAME IN ('slave_silo', 'slave_poolid', 'audit_log_row', 'audit_log_at') GROUP BY INDEX_NAME ORDER BY INDEX_NAME",
        )
        .bind(name)
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        for i in &indexes {
            out += &format!("  index {} ({})\n", text(i, 0), text(i, 1));
        }
    }
    out
}

/// The schema `SqlStore` creates on MariaDB is the original's (docs/compatibility.md §1, plus
/// `audit_log`), checked in information_schema.
#[tokio::test]
async fn mariadb_schema_matches_the_original() {
    let Some(db) = TestDatabase::create(Backend::MySql).await else {
        return;
    };
    let store = db.store().await;
    store.ensure_schema().await.unwrap();
    let mut conn = sqlx::MySqlConnection::connect(db.url()).await.unwrap();
    let described = describe_mariadb(&mut conn, db.name()).await;
    conn.close().await.unwrap();
    store.close().await;
    db.destroy().await;
    assert_eq!(described, ORIGINAL_SCHEMA);
}

/// The DDL SQLAlchemy emitted for the original on MySQL: no server default
/// for `enabled`, CHECK constraints on booleans, the database's default
/// (case-insensitive, 3-byte utf8) collation, unnamed constraints.
const SQLALCHEMY_DDL: &[&str] = &[
    "CREATE TABLE distros (distroid INTEGER NOT NULL AUTO_INCREMENT, name VARCHAR(128) NOT NULL, PRIMARY KEY (distroid), UNIQUE (name)) ENGINE=InnoDB",
    "CREATE TABLE datacenters (dcid INTEGER NOT NULL AUTO_INCREMENT, name VARCHAR(128) NOT NULL, PRIMARY KEY (dcid), UNIQUE (name)) ENGINE=InnoDB",
    "CREATE TABLE bitlengths (bitsid INTEGER NOT NULL AUTO_INCREMENT, name VARCHAR(128) NOT NULL, PRIMARY KEY (bitsid), UNIQUE (name)) ENGINE=InnoDB",
    "CREATE TABLE speeds (speedid INTEGER NOT NULL AUTO_INCREMENT, name VARCHAR(128) NOT NULL, PRIMARY KEY (speedid), UNIQUE (name)) ENGINE=InnoDB",
    "CREATE TABLE purposes (purposeid INTEGER NOT NULL AUTO_INCREMENT, name VARCHAR(128) NOT NULL, PRIMARY KEY (purposeid), UNIQUE (name)) ENGINE=InnoDB",
    "CREATE TABLE trustlevels (trustid INTEGER NOT NULL AUTO_INCREMENT, name VARCHAR(128) NOT NULL, PRIMARY KEY (trustid), UNIQUE (name)) ENGINE=InnoDB",
    "CREATE TABLE environments (envid INTEGER NOT NULL AUTO_INCREMENT, name VARCHAR(128) NOT NULL, PRIMARY KEY (envid), UNIQUE (name)) ENGINE=InnoDB",
    "CREATE TABLE pools (poolid INTEGER NOT NULL AUTO_INCREMENT, name VARCHAR(128) NOT NULL, PRIMARY KEY (poolid), UNIQUE (name)) ENGINE=InnoDB",
    "CREATE TABLE tac_templates (tplid INTEGER NOT NULL AUTO_INCREMENT, name VARCHAR(128) NOT NULL, template TEXT NOT NULL, PRIMARY KEY (tplid), UNIQUE (name)) ENGINE=InnoDB",
    "CREATE TABLE masters (masterid INTEGER NOT NULL AUTO_INCREMENT, nickname VARCHAR(128) NOT NULL, fqdn TEXT NOT NULL, \
     http_port INTEGER NOT NULL, pb_port INTEGER NOT NULL, dcid INTEGER NOT NULL, poolid INTEGER NOT NULL, enabled BOOL NOT NULL, \
     notes TEXT, PRIMARY KEY (masterid), UNIQUE (nickname), FOREIGN KEY(dcid) REFERENCES datacenters (dcid), \
     FOREIGN KEY(poolid) REFERENCES pools (poolid), CHECK (enabled IN (0, 1))) ENGINE=InnoDB",
    "CREATE TABLE slaves (slaveid INTEGER NOT NULL AUTO_INCREMENT, name VARCHAR(128) NOT NULL, distroid INTEGER NOT NULL, \
     bitsid INTEGER NOT NULL, speedid INTEGER NOT NULL, purposeid INTEGER NOT NULL, dcid INTEGER NOT NULL, trustid INTEGER NOT NULL, \
     envid INTEGER NOT NULL, poolid INTEGER NOT NULL, basedir TEXT NOT NULL, locked_masterid INTEGER, custom_tplid INTEGER, \
     enabled BOOL NOT NULL, notes TEXT, current_masterid INTEGER, PRIMARY KEY (slaveid), UNIQUE (name), \
     FOREIGN KEY(distroid) REFERENCES distros (distroid), FOREIGN KEY(bitsid) REFERENCES bitlengths (bitsid), \
     FOREIGN KEY(speedid) REFERENCES speeds (speedid), FOREIGN KEY(purposeid) REFERENCES purposes (purposeid), \
     FOREIGN KEY(dcid) REFERENCES datacenters (dcid), FOREIGN KEY(trustid) REFERENCES trustlevels (trustid), \
     FOREIGN KEY(envid) REFERENCES environments (envid), FOREIGN KEY(poolid) REFERENCES pools (poolid), \
     FOREIGN KEY(locked_masterid) REFERENCES masters (masterid), FOREIGN KEY(custom_tplid) REFERENCES tac_templates (tplid), \
     FOREIGN KEY(current_masterid) REFERENCES masters (masterid), CHECK (enabled IN (0, 1))) ENGINE=InnoDB",
    "CREATE INDEX slave_silo ON slaves (distroid, bitsid, speedid, purposeid, dcid, trustid, envid)",
    "CREATE INDEX slave_poolid ON slaves (poolid)",
    "CREATE TABLE slave_passwords (poolid INTEGER NOT NULL, distroid INTEGER, password TEXT NOT NULL, \
     FOREIGN KEY(poolid) REFERENCES pools (poolid), FOREIGN KEY(distroid) REFERENCES distros (distroid)) ENGINE=InnoDB",
];

/// A database the original created (and filled) works unchanged: the store
/// only adds `audit_log`, reads the original rows, allocates, and writes.
#[tokio::test]
async fn a_database_created_by_the_original_works_unchanged() {
    let Some(db) = TestDatabase::create(Backend::MySql).await else {
        return;
    };
    db.admin(&format!(
        "ALTER DATABASE {} CHARACTER SET utf8 COLLATE utf8_general_ci",
        db.name()
    ))
    .await
    .unwrap();
    let mut conn = sqlx::MySqlConnection::connect(db.url()).await.unwrap();
    for ddl in SQLALCHEMY_DDL {
        conn.execute(*ddl).await.unwrap();
    }
    // Rows as the original's dbimport wrote them.
    for sql in [
        "INSERT INTO distros (name) VALUES ('ubuntu64'), ('win10')",
        "INSERT INTO datacenters (name) VALUES ('scl3')",
        "INSERT INTO bitlengths (name) VALUES ('64')",
        "INSERT INTO speeds (name) VALUES ('fast')",
        "INSERT INTO purposes (name) VALUES ('build')",
        "INSERT INTO trustlevels (name) VALUES ('core')",
        "INSERT INTO environments (name) VALUES ('prod')",
        "INSERT INTO pools (name) VALUES ('build-scl3')",
        "INSERT INTO masters (nickname, fqdn, http_port, pb_port, dcid, poolid, enabled, notes) VALUES \
         ('bm81', 'bm81.build.scl3.mozilla.com', 8001, 9001, 1, 1, 1, NULL), \
         ('bm82', 'bm82.build.scl3.mozilla.com', 8001, 9001, 1, 1, 0, 'down')",
        "INSERT INTO slaves (name, distroid, bitsid, speedid, purposeid, dcid, trustid, envid, poolid, basedir, \
         locked_masterid, custom_tplid, enabled, notes, current_masterid) VALUES \
         ('bld-linux64-ec2-001', 1, 1, 1, 1, 1, 1, 1, 1, '/builds/slave', NULL, NULL, 1, NULL, NULL)",
        "INSERT INTO slave_passwords (poolid, distroid, password) VALUES (1, NULL, 'pass')",
    ] {
        conn.execute(sql).await.unwrap();
    }
    let before_tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();

    let store = db.store().await;
    let got = allocator(Arc::new(store.clone())).gettac("BLD-LINUX64-EC2-001").await;
    let slaves = store.list(Table::Slaves).await.unwrap();
    let masters = store.list(Table::Masters).await.unwrap();
    let renamed = store
        .update(
            Table::Masters,
            2,
            [("notes".to_owned(), Value::Text("back up".into()))].into(),
            slavealloc_domain::Actor {
                name: "t".into(),
                at: std::time::SystemTime::UNIX_EPOCH,
            },
        )
        .await;
    let duplicate = store
        .update(
            Table::Masters,
            2,
            [("nickname".to_owned(), Value::Text("bm81".into()))].into(),
            slavealloc_domain::Actor {
                name: "t".into(),
                at: std::time::SystemTime::UNIX_EPOCH,
            },
        )
        .await;
    let dump = store.export().await.unwrap();
    let after_tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    store.close().await;
    db.destroy().await;

    assert_eq!(got.unwrap().decision.master.unwrap().nickname, "bm81");
    assert_eq!(slaves[0]["current_masterid"], int(1));
    assert_eq!(slaves[0]["enabled"], Value::Bool(true));
    assert_eq!(masters[1]["enabled"], Value::Bool(false));
    assert_eq!(renamed.unwrap()["notes"], Value::Text("back up".into()));
    assert!(matches!(duplicate, Err(StoreError::Duplicate(_))));
    assert_eq!(dump.rows(Table::AuditLog).len(), 2, "the gettac and the notes change");
    let added: BTreeSet<_> = after_tables.iter().filter(|t| !before_tables.contains(t)).collect();
    let ours = [
        "_sqlx_migrations",
        "audit_log",
        "holds",
        "leases",
        "master_status",
        "pool_locks",
        "slave_boots",
        "slave_loads",
        "slave_presence",
        "unknown_workers",
    ]
    .map(str::to_owned);
    assert_eq!(added, ours.iter().collect(), "only this rebuild's own tables are added");
}

// ------------------------------------------------- dbinit --force: one transaction

/// A dump of one pool, `name`, with id `poolid`.
fn pool_dump(poolid: i64, name: &str) -> slavealloc_domain::Dump {
    let mut dump = slavealloc_domain::Dump::default();
    let row = [
        ("poolid".to_owned(), Value::Int(poolid)),
        ("name".to_owned(), Value::Text(name.into())),
    ]
    .into();
    dump.tables.insert(Table::Pools, vec![row]);
    dump
}

/// `dbinit --force` and `dbcopy --force` dump the rows they replace and
/// replace them: a write another client commits after the dump was read is
/// either in that dump or survives the replacement. Here the writer starts
/// once the dump has been read and gets a bounded while to commit before the
/// replacement goes on; whether it committed then, later or never, its row
/// must not be lost.
async fn a_write_during_a_forced_replace_is_dumped_or_survives(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let replacer = db.store().await;
    let writer = db.store().await;
    replacer.replace_all(&pool_dump(1, "old")).await.unwrap();

    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let write = tokio::spawn(async move {
        // Waits (in a blocking thread) for the replacer's read.
        let started = tokio::task::spawn_blocking(move || started_rx.recv()).await.unwrap();
        assert!(started.is_ok(), "the save step never ran");
        let written = writer.append(&pool_dump(99, "raced")).await;
        let _ = done_tx.send(());
        writer.close().await;
        written
    });
    let saved = std::sync::Mutex::new(None);
    let done_rx = std::sync::Mutex::new(done_rx);
    let save = |replaced: &slavealloc_domain::Dump| {
        *saved.lock().unwrap() = Some(replaced.clone());
        started_tx.send(()).unwrap();
        // Long enough for a writer that is not kept out to commit; one that
        // is kept out goes on after the replacement.
        let _ = done_rx.lock().unwrap().recv_timeout(Duration::from_secs(3));
        Ok(())
    };
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(replacer.replace_all_saving(&pool_dump(5, "new"), &save))
    })
    .unwrap();
    let written = write.await.unwrap();
    let after = replacer.export().await.unwrap();
    replacer.close().await;
    db.destroy().await;

    let names = |dump: &slavealloc_domain::Dump| -> BTreeSet<String> {
        dump.rows(Table::Pools)
            .iter()
            .filter_map(|r| r.get("name").and_then(Value::as_text).map(str::to_owned))
            .collect()
    };
    let saved = saved
        .into_inner()
        .unwrap()
        .expect("the save step got the replaced rows");
    assert!(names(&saved).contains("old"), "{saved:?}");
    if written.is_ok() {
        assert!(
            names(&saved).contains("raced") || names(&after).contains("raced"),
            "{backend:?}: the committed write is in neither the dump ({:?}) nor the database ({:?})",
            names(&saved),
            names(&after)
        );
    }
    assert!(names(&after).contains("new"), "{after:?}");
    assert!(!names(&after).contains("old"), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_a_write_during_a_forced_replace_is_dumped_or_survives() {
    a_write_during_a_forced_replace_is_dumped_or_survives(Backend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_write_during_a_forced_replace_is_dumped_or_survives() {
    a_write_during_a_forced_replace_is_dumped_or_survives(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_write_during_a_forced_replace_is_dumped_or_survives() {
    a_write_during_a_forced_replace_is_dumped_or_survives(Backend::Sqlite).await;
}

// ------------------------------------------------- peeks: one state

/// A peek (`/api/gettac`, `gettac -n`) reads in one consistent transaction:
/// a write committed while it is open does not show in its later reads, so
/// the slaves, masters and loads it decides from are one state of the
/// database. A new peek sees the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peek_reads_one_state_of_the_database() {
    use slavealloc_domain::{Actor, Intent, SlaveName};
    for backend in [Backend::Sqlite, Backend::MySql, Backend::Postgres] {
        let Some(db) = TestDatabase::create(backend).await else {
            continue;
        };
        let store = db.store().await;
        store.replace_all(&one_pool(4).dump()).await.unwrap();
        let names = [SlaveName::parse("slave-1").unwrap()];
        let mut peek = AllocationStore::begin(&store, Intent::Peek).await.unwrap();
        let first = peek.snapshot(&names).await.unwrap().loads;
        // Behind the peek's back, two peers move to master 1 (committed).
        for id in [2, 3] {
            let moved = [("current_masterid".to_owned(), Value::Int(1))].into();
            let who = Actor {
                name: "t".into(),
                at: std::time::SystemTime::now(),
            };
            InventoryStore::update(&store, Table::Slaves, id, moved, who)
                .await
                .unwrap();
        }
        let second = peek.snapshot(&names).await.unwrap().loads;
        drop(peek);
        let mut again = AllocationStore::begin(&store, Intent::Peek).await.unwrap();
        let fresh = again.snapshot(&names).await.unwrap().loads;
        drop(again);
        store.close().await;
        db.destroy().await;
        assert_eq!(
            second, first,
            "{backend}: the open peek still sees the state it began with"
        );
        assert_ne!(fresh, first, "{backend}: a new peek sees the write");
    }
}
