//! Schema migrations on every backend: daemons starting together record
//! each migration once, a database made before migrations keeps its
//! audit log, a build that knows fewer migrations than its database keeps
//! allocating (the rolling-upgrade policy), and a changed migration stops
//! the start with a message that names it.
#![allow(clippy::unwrap_used)]

use std::str::FromStr as _;
use std::sync::Arc;

use slavealloc_domain::schema::Table;
use slavealloc_domain::{DumpStore, StoreError};
use slavealloc_store_contract::allocator;
use slavealloc_store_contract::fleet::one_pool;
use slavealloc_store_sql::{Backend, MigrationState, SqlOptions, SqlStore};
use slavealloc_store_sql_testing::TestDatabase;
use sqlx::{ConnectOptions as _, Connection as _, Executor as _};

const BACKENDS: [Backend; 3] = [Backend::Sqlite, Backend::MySql, Backend::Postgres];

/// Runs `sql` (statements separated by `;`) on the test database, behind
/// every store's back.
async fn execute(db: &TestDatabase, sql: &str) {
    match db.backend() {
        Backend::Sqlite => {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(db.url()).unwrap();
            let mut c = options.create_if_missing(true).connect().await.unwrap();
            c.execute(sql).await.unwrap();
            c.close().await.unwrap();
        }
        Backend::MySql => {
            let mut c = sqlx::MySqlConnection::connect(db.url()).await.unwrap();
            c.execute(sql).await.unwrap();
            c.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(db.url()).await.unwrap();
            c.execute(sql).await.unwrap();
            c.close().await.unwrap();
        }
    }
}

/// The number of migrations this build has for `backend`, from a fresh
/// store's status.
async fn latest(store: &SqlStore) -> i64 {
    store.schema_status().await.unwrap().version().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daemons_starting_together_apply_each_migration_once() {
    for backend in BACKENDS {
        let Some(db) = TestDatabase::create(backend).await else {
            continue;
        };
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let url = db.url().to_owned();
            tasks.spawn(async move { SqlStore::connect(&url).await });
        }
        let mut stores = Vec::new();
        while let Some(done) = tasks.join_next().await {
            stores.push(done.unwrap().unwrap_or_else(|e| panic!("{backend}: {e}")));
        }
        let status = stores[0].schema_status().await.unwrap();
        assert_eq!(stores[0].row_count().await, Ok(0), "{backend}");
        assert!(status.up_to_date(), "{backend}: {status:?}");
        assert!(
            status.migrations.iter().all(|m| m.state == MigrationState::Applied),
            "{backend}: {status:?}"
        );
        assert_eq!(status.migrations[0].description, "audit log");
        for store in stores {
            store.close().await;
        }
        db.destroy().await;
    }
}

#[tokio::test]
async fn a_database_made_before_migrations_keeps_its_audit_log() {
    for backend in BACKENDS {
        let Some(db) = TestDatabase::create(backend).await else {
            continue;
        };
        // What the previous release's start made: the original's tables
        // and an audit_log, with no record of migrations.
        let (original, audit) = match backend {
            Backend::Sqlite => (
                include_str!("../sql/sqlite/schema.sql"),
                include_str!("../migrations/sqlite/0001_audit_log.sql"),
            ),
            Backend::MySql => (
                include_str!("../sql/mysql/schema.sql"),
                include_str!("../migrations/mysql/0001_audit_log.sql"),
            ),
            Backend::Postgres => (
                include_str!("../sql/postgres/schema.sql"),
                include_str!("../migrations/postgres/0001_audit_log.sql"),
            ),
        };
        execute(&db, original).await;
        execute(&db, audit).await;
        execute(
            &db,
            "INSERT INTO audit_log (at, actor, table_name, row_id, old_values, new_values) \
             VALUES ('2026-11-30T07:00:00Z', 'relops', 'slaves', 1, NULL, '{}')",
        )
        .await;
        let store = SqlStore::connect(db.url()).await.unwrap();
        let status = store.schema_status().await.unwrap();
        let audit = store.export().await.unwrap().rows(Table::AuditLog).len();
        store.close().await;
        db.destroy().await;
        assert!(status.up_to_date(), "{backend}: {status:?}");
        assert_eq!(audit, 1, "{backend}: the audit log was adopted, not replaced");
    }
}

#[tokio::test]
async fn a_build_with_fewer_migrations_keeps_allocating_on_a_newer_database() {
    for backend in BACKENDS {
        let Some(db) = TestDatabase::create(backend).await else {
            continue;
        };
        let newer = db.store().await;
        newer.replace_all(&one_pool(6).dump()).await.unwrap();
        let version = latest(&newer).await;
        assert!(
            version >= 2,
            "{backend}: a rolling upgrade needs two migrations to test"
        );
        newer.close().await;

        // The previous build: every migration but the last.
        let older = SqlStore::connect_with(
            db.url(),
            SqlOptions {
                migrations_up_to: Some(version - 1),
                ..SqlOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{backend}: the older build refused the newer database: {e}"));
        let status = older.schema_status().await.unwrap();
        let allocated = allocator(Arc::new(older.clone())).gettac("slave-1").await;
        older.close().await;
        db.destroy().await;
        assert!(
            status.newer_than_this_build() && status.up_to_date(),
            "{backend}: {status:?}"
        );
        assert_eq!(status.migrations.last().unwrap().state, MigrationState::Newer);
        let allocated = allocated.unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert!(allocated.decision.master.is_some(), "{backend}");
    }
}

#[tokio::test]
async fn a_changed_migration_stops_the_start_and_says_which() {
    for backend in BACKENDS {
        let Some(db) = TestDatabase::create(backend).await else {
            continue;
        };
        db.store().await.close().await;
        let zero = if backend == Backend::Postgres {
            "'\\x00'"
        } else {
            "X'00'"
        };
        execute(
            &db,
            &format!("UPDATE _sqlx_migrations SET checksum = {zero} WHERE version = 1"),
        )
        .await;
        let started = SqlStore::connect(db.url()).await;
        let status = SqlStore::open_lazy(db.url(), SqlOptions::default())
            .unwrap()
            .schema_status()
            .await
            .unwrap();
        db.destroy().await;
        match started {
            Err(StoreError::Other(why)) => assert!(
                why.contains("schema migration 1") && why.contains("refusing to start"),
                "{backend}: {why}"
            ),
            other => panic!("{backend}: {other:?}"),
        }
        assert_eq!(status.migrations[0].state, MigrationState::Changed, "{backend}");
    }
}
