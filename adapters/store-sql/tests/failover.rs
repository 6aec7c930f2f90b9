//! A store over several servers of one database follows the one that takes
//! writes; a server that takes none refuses writes as a read-only replica
//! (503 in the daemon), never as an internal error.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use slavealloc_domain::schema::{Table, Value};
use slavealloc_domain::{Actor, AllocationError, DumpStore, InventoryStore, StoreError};
use slavealloc_store_contract::allocator;
use slavealloc_store_contract::fleet::one_pool;
use slavealloc_store_sql::{Backend, SqlOptions, SqlStore};
use slavealloc_store_sql_testing::TestDatabase;

/// A URL of `backend` on a port where nothing listens.
fn dead(backend: Backend) -> String {
    let port = slavealloc_store_sql_testing::servers::free_port();
    match backend {
        Backend::MySql => format!("mysql://root@127.0.0.1:{port}/slavealloc"),
        _ => format!("postgres://postgres@127.0.0.1:{port}/slavealloc"),
    }
}

fn actor() -> Actor {
    Actor {
        name: "test".to_owned(),
        at: std::time::SystemTime::now(),
    }
}

fn notes(text: &str) -> slavealloc_domain::schema::Row {
    [("notes".to_owned(), Value::Text(text.to_owned()))].into()
}

/// With the first server down, the store works on the second.
async fn a_dead_first_server_is_passed_over(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let dead = dead(backend);
    let store = SqlStore::open_lazy_any(&[&dead, db.url()], SqlOptions::default()).unwrap();
    store.ensure_schema().await.unwrap();
    store.replace_all(&one_pool(2).dump()).await.unwrap();
    let got = allocator(Arc::new(store.clone())).gettac("slave-1").await.unwrap();
    assert!(got.decision.master.is_some());
    let written = store.update(Table::Slaves, 1, notes("moved"), actor()).await;
    store.close().await;
    db.destroy().await;
    assert_eq!(written.unwrap()["notes"], Value::Text("moved".into()));
}

#[tokio::test]
async fn mariadb_a_dead_first_server_is_passed_over() {
    a_dead_first_server_is_passed_over(Backend::MySql).await;
}

#[tokio::test]
async fn postgres_a_dead_first_server_is_passed_over() {
    a_dead_first_server_is_passed_over(Backend::Postgres).await;
}

/// A PostgreSQL database whose transactions are read-only, as on a hot
/// standby: reads are served, writes refused as a read-only replica's, and
/// a store given it and a writable one writes to the writable one.
#[tokio::test]
async fn postgres_a_read_only_server_serves_reads_and_refuses_writes() {
    let (Some(replica), Some(primary)) = (
        TestDatabase::create(Backend::Postgres).await,
        TestDatabase::create(Backend::Postgres).await,
    ) else {
        return;
    };
    for db in [&replica, &primary] {
        let store = db.store().await;
        store.replace_all(&one_pool(2).dump()).await.unwrap();
        store.close().await;
    }
    replica
        .admin(&format!(
            "ALTER DATABASE {} SET default_transaction_read_only = on",
            replica.name()
        ))
        .await
        .unwrap();

    let alone = SqlStore::open_lazy(replica.url(), SqlOptions::default()).unwrap();
    let schema = alone.ensure_schema().await;
    let read = alone.list(Table::Slaves).await;
    let write = alone.update(Table::Slaves, 1, notes("x"), actor()).await;
    let gettac = allocator(Arc::new(alone.clone())).gettac("slave-1").await;
    let writable = alone.writable().await;
    alone.close().await;

    let both = SqlStore::open_lazy_any(&[replica.url(), primary.url()], SqlOptions::default()).unwrap();
    both.ensure_schema().await.unwrap();
    let followed = both.update(Table::Slaves, 1, notes("on the primary"), actor()).await;
    both.close().await;
    let on_primary = primary.store().await.get(Table::Slaves, 1).await.unwrap().unwrap();

    for db in [replica, primary] {
        db.admin(&format!(
            "ALTER DATABASE {} RESET default_transaction_read_only",
            db.name()
        ))
        .await
        .unwrap();
        db.destroy().await;
    }
    assert_eq!(schema, Ok(()), "a replica with the whole schema is served");
    assert_eq!(read.unwrap().len(), 2);
    assert_eq!(writable, Ok(false));
    let Err(StoreError::Unavailable(why)) = write else {
        panic!("a write on a replica: {write:?}")
    };
    assert!(why.contains("read-only replica"), "{why}");
    assert!(
        matches!(&gettac, Err(AllocationError::Storage(StoreError::Unavailable(why))) if why.contains("read-only replica")),
        "{gettac:?}"
    );
    assert_eq!(followed.unwrap()["notes"], Value::Text("on the primary".into()));
    assert_eq!(on_primary["notes"], Value::Text("on the primary".into()));
}

/// Several SQLite files are no servers of one database.
#[tokio::test]
async fn several_sqlite_files_are_refused() {
    let got = SqlStore::open_lazy_any(&["sqlite::memory:", "sqlite::memory:"], SqlOptions::default());
    assert!(matches!(got, Err(StoreError::Other(why)) if why.contains("SQLite")));
    let mixed = SqlStore::open_lazy_any(&["postgres://a/x", "mysql://b/x"], SqlOptions::default());
    assert!(matches!(mixed, Err(StoreError::Other(why)) if why.contains("different backends")));
}
