//! SQLite keeps the per (pool, silo, master) slave counts in `slave_loads`,
//! maintained by triggers. These tests write `slaves` behind the store's
//! back — as the original Python daemon or an operator's `sqlite3` shell
//! would — and check that the counts stay exact, that a start repairs
//! counts that drifted anyway, and that allocation decides from them.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use slavealloc_domain::schema::Table;
use slavealloc_domain::DumpStore;
use slavealloc_store_contract::allocator;
use slavealloc_store_contract::fleet::{int, one_pool, Fleet};
use slavealloc_store_sql::{Backend, SqlStore};
use slavealloc_store_sql_testing::TestDatabase;
use sqlx::{Connection as _, Executor as _, SqliteConnection};

/// `(poolid, distroid, bitsid, purposeid, dcid, trustid, envid, masterid,
/// slaves)`, sorted.
type Loads = Vec<(i64, i64, i64, i64, i64, i64, i64, i64, i64)>;

const KEY: &str = "poolid, distroid, bitsid, purposeid, dcid, trustid, envid";

async fn kept(conn: &mut SqliteConnection) -> Loads {
    sqlx::query_as(&format!(
        "SELECT {KEY}, masterid, slaves FROM slave_loads WHERE slaves > 0 ORDER BY {KEY}, masterid"
    ))
    .fetch_all(conn)
    .await
    .unwrap()
}

async fn counted(conn: &mut SqliteConnection) -> Loads {
    sqlx::query_as(&format!(
        "SELECT {KEY}, current_masterid, COUNT(*) FROM slaves WHERE current_masterid IS NOT NULL \
         GROUP BY {KEY}, current_masterid ORDER BY {KEY}, current_masterid"
    ))
    .fetch_all(conn)
    .await
    .unwrap()
}

/// Pool 1 (masters 1–4, 4 disabled) with 12 slaves, pool 2 (masters 5, 6)
/// empty, a second distro.
fn fleet() -> Fleet {
    let mut fleet = one_pool(12);
    fleet.master(5, 2, true).master(6, 2, true).password(2, None, "two");
    for n in 1..=12 {
        fleet.set(Table::Slaves, n, "current_masterid", int(n % 3 + 1));
    }
    fleet
}

async fn sqlite_with_fleet() -> (TestDatabase, SqlStore, SqliteConnection) {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let store = db.store().await;
    store.replace_all(&fleet().dump()).await.unwrap();
    let conn = SqliteConnection::connect(db.url()).await.unwrap();
    (db, store, conn)
}

#[tokio::test]
async fn counts_follow_every_kind_of_write_to_slaves() {
    let (db, store, mut conn) = sqlite_with_fleet().await;
    assert_eq!(kept(&mut conn).await, counted(&mut conn).await, "after the import");
    assert!(!kept(&mut conn).await.is_empty());

    let writes = [
        "UPDATE slaves SET current_masterid = 2 WHERE slaveid = 1",
        "UPDATE slaves SET current_masterid = NULL WHERE slaveid = 2",
        "UPDATE slaves SET current_masterid = 4 WHERE slaveid IN (3, 4, 5)",
        "UPDATE slaves SET distroid = 2 WHERE slaveid IN (6, 7)",
        "UPDATE slaves SET poolid = 2, current_masterid = 5 WHERE slaveid = 8",
        "UPDATE slaves SET poolid = 2 WHERE slaveid = 9",
        "UPDATE slaves SET current_masterid = current_masterid WHERE slaveid = 10",
        "UPDATE slaves SET notes = 'moved' WHERE slaveid = 11",
        "DELETE FROM slaves WHERE slaveid IN (11, 12)",
        "INSERT INTO slaves (slaveid, name, distroid, bitsid, speedid, purposeid, dcid, trustid, envid, poolid, \
         basedir, enabled, current_masterid) VALUES (13, 'new-1', 1, 1, 1, 1, 1, 1, 1, 2, '/b', 1, 6)",
        "INSERT INTO slaves (slaveid, name, distroid, bitsid, speedid, purposeid, dcid, trustid, envid, poolid, \
         basedir, enabled) VALUES (14, 'new-2', 1, 1, 1, 1, 1, 1, 1, 2, '/b', 1)",
        "UPDATE slaves SET current_masterid = NULL",
    ];
    for write in writes {
        conn.execute(write).await.unwrap();
        assert_eq!(kept(&mut conn).await, counted(&mut conn).await, "after {write}");
    }
    assert_eq!(kept(&mut conn).await, vec![]);

    conn.close().await.unwrap();
    store.close().await;
    db.destroy().await;
}

#[tokio::test]
async fn a_start_rebuilds_counts_that_drifted() {
    let (db, store, mut conn) = sqlite_with_fleet().await;
    // Someone dropped a trigger and wrote behind it, and scribbled on the
    // counts.
    conn.execute("DROP TRIGGER slave_loads_update").await.unwrap();
    conn.execute("UPDATE slaves SET current_masterid = 1").await.unwrap();
    conn.execute("UPDATE slave_loads SET slaves = 99 WHERE masterid = 2")
        .await
        .unwrap();
    assert_ne!(kept(&mut conn).await, counted(&mut conn).await);

    let restarted = SqlStore::connect(db.url()).await.unwrap();
    assert_eq!(kept(&mut conn).await, counted(&mut conn).await);
    conn.execute("UPDATE slaves SET current_masterid = 3 WHERE slaveid = 1")
        .await
        .unwrap();
    assert_eq!(kept(&mut conn).await, counted(&mut conn).await, "the trigger is back");

    conn.close().await.unwrap();
    restarted.close().await;
    store.close().await;
    db.destroy().await;
}

#[tokio::test]
async fn allocation_balances_on_counts_written_by_another_writer() {
    let (db, store, mut conn) = sqlite_with_fleet().await;
    // Another allocator put every slave but the last on masters 1 and 2.
    conn.execute("UPDATE slaves SET current_masterid = 1 + slaveid % 2 WHERE slaveid < 12")
        .await
        .unwrap();
    conn.execute("UPDATE slaves SET current_masterid = NULL WHERE slaveid = 12")
        .await
        .unwrap();
    let allocation = allocator(Arc::new(store.clone())).gettac("slave-12").await.unwrap();
    assert_eq!(allocation.decision.master.as_ref().map(|m| m.masterid), Some(3));
    assert_eq!(kept(&mut conn).await, counted(&mut conn).await);

    conn.close().await.unwrap();
    store.close().await;
    db.destroy().await;
}

#[tokio::test]
async fn drop_all_leaves_no_table_behind() {
    let (db, store, mut conn) = sqlite_with_fleet().await;
    store.drop_all().await.unwrap();
    let left: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, Vec::<String>::new());
    conn.close().await.unwrap();
    store.close().await;
    db.destroy().await;
}
