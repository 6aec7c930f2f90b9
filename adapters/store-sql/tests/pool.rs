//! Waiting for a connection: a pool whose connections are all busy is a
//! queue, waited on past the acquire timeout (a Galera survivor's commits
//! stall for seconds while the cluster evicts a dead node); a server that
//! cannot be reached is refused fast, and faster still once it is known to
//! be down, so that the requests queued behind it are not each kept for the
//! whole acquire timeout.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use slavealloc_domain::{AllocationStore, Intent, StoreError};
use slavealloc_store_sql::{Backend, SqlOptions, SqlStore};
use slavealloc_store_sql_testing::TestDatabase;

const ACQUIRE: Duration = Duration::from_millis(300);

fn one_connection() -> SqlOptions {
    SqlOptions {
        max_connections: 1,
        acquire_timeout: ACQUIRE,
        ..SqlOptions::default()
    }
}

async fn a_busy_pool_is_waited_on_past_its_acquire_timeout(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = db.store_with(one_connection()).await;
    let held = store.begin(Intent::Commit).await.unwrap();
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let unit = store.begin(Intent::Commit).await;
            (unit.map(drop), started.elapsed())
        })
    };
    // Three acquire timeouts with the only connection in use, then it is
    // released (rolled back).
    tokio::time::sleep(ACQUIRE * 3).await;
    drop(held);
    let (got, waited) = waiting.await.unwrap();
    store.close().await;
    db.destroy().await;
    assert_eq!(got, Ok(()), "the queued unit gets the connection");
    assert!(waited >= ACQUIRE * 2, "it waited past the acquire timeout: {waited:?}");
}

#[tokio::test]
async fn mariadb_a_busy_pool_is_waited_on_past_its_acquire_timeout() {
    a_busy_pool_is_waited_on_past_its_acquire_timeout(Backend::MySql).await;
}

#[tokio::test]
async fn postgres_a_busy_pool_is_waited_on_past_its_acquire_timeout() {
    a_busy_pool_is_waited_on_past_its_acquire_timeout(Backend::Postgres).await;
}

async fn a_server_known_down_is_refused_at_once(url: String) {
    let options = SqlOptions {
        acquire_timeout: Duration::from_secs(2),
        ..SqlOptions::default()
    };
    let store = SqlStore::open_lazy(&url, options).unwrap();
    let first = store.begin(Intent::Commit).await.map(drop);
    let Err(StoreError::Unavailable(why)) = first else {
        panic!("{first:?}")
    };
    assert!(why.contains("cannot connect to 127.0.0.1:"), "{why}");
    // Known down now: each next request is refused in a fraction of the
    // acquire timeout, with the same explanation.
    for _ in 0..5 {
        let started = Instant::now();
        let next = store.begin(Intent::Commit).await.map(drop);
        let took = started.elapsed();
        assert!(
            matches!(&next, Err(StoreError::Unavailable(w)) if w.contains("cannot connect")),
            "{next:?}"
        );
        assert!(took < Duration::from_secs(1), "refused after {took:?}");
    }
}

#[tokio::test]
async fn mariadb_a_server_known_down_is_refused_at_once() {
    let port = slavealloc_store_sql_testing::servers::free_port();
    a_server_known_down_is_refused_at_once(format!("mysql://root@127.0.0.1:{port}/slavealloc")).await;
}

#[tokio::test]
async fn postgres_a_server_known_down_is_refused_at_once() {
    let port = slavealloc_store_sql_testing::servers::free_port();
    a_server_known_down_is_refused_at_once(format!("postgres://postgres@127.0.0.1:{port}/slavealloc")).await;
}
