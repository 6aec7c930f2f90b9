//! What the HTTP tests share: a daemon over a fresh store loaded with the
//! sample fleet, requests through `warp::test` or a real socket, and the
//! store's contents for "nothing changed" checks.
#![allow(dead_code)] // each test binary uses its own part

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value as Json;
pub use slavealloc_domain::testing::PlainRenderer;
use slavealloc_domain::{AllocationStore, Dump, DumpStore, FixedHost, InventoryStore, LifecycleStore, LiveStore};
use slavealloc_http_warp::{routes, ServerConfig, Services};
use slavealloc_store_memory::MemoryStore;
use slavealloc_store_sql::{Backend, SqlStore};
use slavealloc_store_sql_testing::TestDatabase;
use warp::filters::BoxedFilter;
use warp::reply::Response;

/// Every storage port in one object.
pub trait Store: AllocationStore + InventoryStore + DumpStore + LiveStore + LifecycleStore {}
impl<T: AllocationStore + InventoryStore + DumpStore + LiveStore + LifecycleStore> Store for T {}

/// The domain services over a store.
pub fn services(store: Arc<dyn Store>) -> Services {
    let host = Arc::new(FixedHost {
        now: SystemTime::now(),
        fqdn: "slavealloc.test".into(),
    });
    Services::new(store.clone(), store.clone(), Arc::new(PlainRenderer), host.clone())
        .with_live(store.clone(), std::time::Duration::from_secs(60), host.clone())
        .with_lifecycle(store, host)
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: warp::http::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The JSON error body's message, checking its shape.
    pub fn error(&self) -> String {
        let j = self.json();
        assert_eq!(j["success"], Json::Bool(false), "{}", self.body);
        j["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {}", self.body))
            .to_owned()
    }
}

/// Where a test's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Sqlite,
    MySql,
}

/// Runs each test against every store: memory, SQLite, MariaDB (skipped
/// outside CI when the server is down; never in CI).
#[allow(unused_macros)] // each test binary uses its own part
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::Kind;
            #[tokio::test]
            async fn memory() {
                super::$name(Kind::Memory).await
            }
            #[tokio::test]
            async fn sqlite() {
                super::$name(Kind::Sqlite).await
            }
            #[tokio::test]
            async fn mariadb() {
                super::$name(Kind::MySql).await
            }
        }
    )*};
}

/// A fresh store of `kind` holding `fleet`, and the database to drop
/// afterwards; `None` when the server is unreachable outside CI.
pub async fn store(kind: Kind, fleet: &Dump) -> Option<(Arc<dyn Store>, Option<TestDatabase>)> {
    let backend = match kind {
        Kind::Memory => return Some((Arc::new(MemoryStore::from_dump(fleet).unwrap()), None)),
        Kind::Sqlite => Backend::Sqlite,
        Kind::MySql => Backend::MySql,
    };
    let db = TestDatabase::create(backend).await?;
    let store: SqlStore = db.store().await;
    store.replace_all(fleet).await.unwrap();
    Some((Arc::new(store), Some(db)))
}

/// A daemon as a filter, over a store.
pub struct Harness {
    pub filter: BoxedFilter<(Response,)>,
    pub store: Arc<dyn Store>,
    db: Option<TestDatabase>,
}

pub const PEER: &str = "10.1.2.3:40000";

impl Harness {
    /// The sample fleet in a fresh store of `kind`.
    pub async fn new(kind: Kind, config: ServerConfig) -> Option<Self> {
        let (store, db) = store(kind, &slavealloc_fixtures::sample_fleet()).await?;
        let filter = routes(services(Arc::clone(&store)), config);
        Some(Self { filter, store, db })
    }

    /// `fleet` in a fresh store of `kind`.
    pub async fn with_fleet(kind: Kind, fleet: &Dump, config: ServerConfig) -> Option<Self> {
        let (store, db) = store(kind, fleet).await?;
        let filter = routes(services(Arc::clone(&store)), config);
        Some(Self { filter, store, db })
    }

    /// Drops the test database.
    pub async fn finish(self) {
        drop(self.filter);
        drop(self.store);
        if let Some(db) = self.db {
            db.destroy().await;
        }
    }

    pub async fn request(&self, method: &str, path: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> Resp {
        let mut req = warp::test::request()
            .method(method)
            .path(path)
            .remote_addr(PEER.parse::<SocketAddr>().unwrap());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let r = req.reply(&self.filter).await;
        Resp {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: String::from_utf8_lossy(r.body()).into_owned(),
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request("GET", path, None, &[]).await
    }

    pub async fn send(&self, method: &str, path: &str, body: &Json) -> Resp {
        self.request(
            method,
            path,
            Some(body.to_string().as_bytes()),
            &[("content-type", "application/json")],
        )
        .await
    }

    pub async fn dump(&self) -> Dump {
        self.store.export().await.unwrap()
    }

    pub async fn row(&self, table: &str, id: i64) -> Json {
        let r = self.get(&format!("/api/{table}/{id}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }
}
