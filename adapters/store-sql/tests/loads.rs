//! The per-silo loads on MariaDB and PostgreSQL, where the store keeps
//! `slave_loads` itself: exact after allocations and after inventory writes
//! through the store, skewed by a writer behind its back only until the
//! next recount, which puts them right and reports it.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use sqlx::Connection as _;

use slavealloc_domain::schema::{Row, Table, Value};
use slavealloc_domain::{Actor, DumpStore, InventoryStore};
use slavealloc_fixtures::{generate_fleet, FleetSpec};
use slavealloc_store_contract::allocator;
use slavealloc_store_contract::fleet::one_pool;
use slavealloc_store_sql::Backend;
use slavealloc_store_sql_testing::TestDatabase;

fn actor() -> Actor {
    Actor {
        name: "test".to_owned(),
        at: std::time::SystemTime::now(),
    }
}

/// Runs `statement` on the test database through a connection of its own,
/// as another writer (the original daemon, an operator) would.
async fn behind_its_back(db: &TestDatabase, statement: &str) {
    match db.backend() {
        Backend::MySql => {
            let mut conn = sqlx::MySqlConnection::connect(db.url()).await.unwrap();
            sqlx::query(statement).execute(&mut conn).await.unwrap();
        }
        _ => {
            let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
            sqlx::query(statement).execute(&mut conn).await.unwrap();
        }
    }
}

async fn the_loads_stay_exact_through_allocations_and_the_stores_writes(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = db.store().await;
    let spec = FleetSpec {
        slaves: 400,
        pools: 3,
        ..FleetSpec::default()
    };
    let fleet = generate_fleet(&spec);
    store.replace_all(&fleet).await.unwrap();
    assert_eq!(store.reconcile_loads().await.unwrap(), 0, "the load recounted them");

    // Every slave boots, many move: the allocations kept the counts.
    let names: Vec<String> = fleet
        .rows(Table::Slaves)
        .iter()
        .map(|r| r["name"].as_text().unwrap().to_owned())
        .collect();
    let allocator = allocator(Arc::new(store.clone()));
    for chunk in names.chunks(25) {
        let chunk: Vec<_> = chunk
            .iter()
            .map(|n| slavealloc_domain::SlaveName::parse(n).unwrap())
            .collect();
        allocator
            .allocate(&chunk, slavealloc_domain::Intent::Commit, "test")
            .await
            .unwrap();
    }
    assert_eq!(store.reconcile_loads().await.unwrap(), 0, "allocations keep the counts");

    // A slave moved to another pool, one deleted, one added with a master,
    // through the store: each write recounts.
    let moved: Row = [("poolid".to_owned(), Value::Int(2))].into();
    store.update(Table::Slaves, 1, moved, actor()).await.unwrap();
    store.delete(Table::Slaves, 2, actor()).await.unwrap();
    assert_eq!(store.reconcile_loads().await.unwrap(), 0, "the store's writes recount");
    store.close().await;
    db.destroy().await;
}

#[tokio::test]
async fn mariadb_the_loads_stay_exact_through_allocations_and_the_stores_writes() {
    the_loads_stay_exact_through_allocations_and_the_stores_writes(Backend::MySql).await;
}

#[tokio::test]
async fn postgres_the_loads_stay_exact_through_allocations_and_the_stores_writes() {
    the_loads_stay_exact_through_allocations_and_the_stores_writes(Backend::Postgres).await;
}

/// Every slave of the pool put on master 1 behind the store's back: until
/// the recount the allocator sees the old, even counts; after it, the
/// truth (master 1 full, 2 and 3 empty), so the next slave goes to 2.
async fn a_write_behind_the_stores_back_skews_only_until_the_recount(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = db.store().await;
    store.replace_all(&one_pool(9).dump()).await.unwrap();
    let allocator = allocator(Arc::new(store.clone()));
    for n in 1..=9 {
        allocator.gettac(&format!("slave-{n}")).await.unwrap();
    }
    assert_eq!(store.reconcile_loads().await.unwrap(), 0);

    behind_its_back(&db, "UPDATE slaves SET current_masterid = 1").await;
    // slave-9 sits on master 1 with seven peers there; 2 and 3 hold none.
    let stale = allocator.peek("slave-9").await.unwrap();
    let before = stale.decision.master.as_ref().map(|m| m.masterid);
    assert_eq!(
        store.reconcile_loads().await.unwrap(),
        1,
        "the recount finds the pool wrong"
    );
    let fresh = allocator.peek("slave-9").await.unwrap();
    let after = fresh.decision.master.as_ref().map(|m| m.masterid);
    store.close().await;
    db.destroy().await;
    assert_eq!(after, Some(2), "after the recount: the emptiest master, lowest id");
    assert_ne!(before, after, "before it, the counts were the stale, even ones");
}

#[tokio::test]
async fn mariadb_a_write_behind_the_stores_back_skews_only_until_the_recount() {
    a_write_behind_the_stores_back_skews_only_until_the_recount(Backend::MySql).await;
}

#[tokio::test]
async fn postgres_a_write_behind_the_stores_back_skews_only_until_the_recount() {
    a_write_behind_the_stores_back_skews_only_until_the_recount(Backend::Postgres).await;
}
