//! A store factory for the contract suite: a fresh database per store on
//! the local test servers (or a fresh SQLite file), dropped after the case.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use async_trait::async_trait;
use slavealloc_store_contract::StoreFactory;
use slavealloc_store_sql::{Backend, SqlStore};
use slavealloc_store_sql_testing::TestDatabase;

/// Makes [`SqlStore`]s on fresh databases of one backend.
#[derive(Debug)]
pub struct FreshDatabases {
    backend: Backend,
    made: Mutex<Vec<(TestDatabase, SqlStore)>>,
}

impl FreshDatabases {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            made: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl StoreFactory for FreshDatabases {
    type Store = SqlStore;

    async fn fresh(&self) -> Option<SqlStore> {
        let db = TestDatabase::create(self.backend).await?;
        let store = db.store().await;
        self.made.lock().unwrap().push((db, store.clone()));
        Some(store)
    }

    async fn cleanup(&self) {
        let made = std::mem::take(&mut *self.made.lock().unwrap());
        for (db, store) in made {
            store.close().await;
            db.destroy().await;
        }
    }
}
