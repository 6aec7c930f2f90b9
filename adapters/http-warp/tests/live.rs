//! Tests through a real socket: `serve` on 127.0.0.1:0 and an HTTP client.
//! The OpenAPI document is checked against the live server, in-flight
//! requests survive a graceful shutdown, and two daemons on one database
//! allocating concurrently keep every silo balanced.
// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use common::{services, store, Kind, Resp, Store};
use hyper::{Body, Client, Method, Request};
use serde_json::{json, Value as Json};
use slavealloc_domain::ports::AllocationUnit;
use slavealloc_domain::{AllocationStore, Intent, StoreError};
use slavealloc_fixtures::{generate_fleet, sample_fleet, FleetSpec};
use slavealloc_http_warp::{routes, serve, ServerConfig};
use slavealloc_store_memory::MemoryStore;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

/// A daemon on a real socket, stopped by [`Server::stop`].
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(store: Arc<dyn Store>, config: ServerConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let filter = routes(services(store), config);
        let task = tokio::spawn(async move {
            serve(listener, filter, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self { addr, stop, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

async fn http(method: &str, url: &str, body: Option<Vec<u8>>) -> Resp {
    let req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(url)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, Body::from))
        .unwrap();
    let r = Client::new().request(req).await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = hyper::body::to_bytes(r.into_body()).await.unwrap();
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// A concrete request for one documented route: the path with its
/// parameters filled in, and a body.
struct Probe {
    path: &'static str,
    method: &'static str,
    url: String,
    body: Option<Json>,
}

/// For every documented (path, method), requests that should succeed and
/// requests that should fail; each answer's status must be documented for
/// that route, and every route must be probed.
#[tokio::test]
async fn every_documented_route_answers_with_a_documented_status() {
    let Some((store, db)) = store(Kind::Sqlite, &sample_fleet()).await else {
        return;
    };
    let server = Server::start(store, ServerConfig::default()).await;
    let doc: Json = serde_json::from_str(slavealloc_http_warp::handlers::OPENAPI).unwrap();
    let live = http("GET", &server.url("/api/openapi.json"), None).await.json();
    assert_eq!(live["paths"], doc["paths"], "the served document is the shipped one");

    let p = |path, method, url: &str, body: Option<Json>| Probe {
        path,
        method,
        url: url.to_owned(),
        body,
    };
    let slave = json!({"name": "new-slave", "distroid": 1, "bitsid": 1, "speedid": 1, "purposeid": 1, "dcid": 1,
        "trustid": 1, "envid": 1, "poolid": 1, "basedir": "/b"});
    let probes = vec![
        p("/", "get", "/", None),
        p("/gettac/{slave}", "get", "/gettac/bld-linux64-spot-003", None),
        p("/gettac/{slave}", "get", "/gettac/nobody", None),
        p("/healthz", "get", "/healthz", None),
        p("/metrics", "get", "/metrics", None),
        p("/api/", "get", "/api/", None),
        p("/api/openapi.json", "get", "/api/openapi.json", None),
        p("/api/gettac/{slave}", "get", "/api/gettac/bld-linux64-spot-006", None),
        p("/api/gettac/{slave}", "get", "/api/gettac/nobody", None),
        p("/api/audit", "get", "/api/audit?table=slaves&limit=5", None),
        p("/api/audit", "get", "/api/audit?limit=0", None),
        p("/api/drift", "get", "/api/drift", None),
        p("/api/whatif", "get", "/api/whatif?drain=bm01", None),
        p("/api/whatif", "get", "/api/whatif?drain=nobody", None),
        p("/api/whatif", "get", "/api/whatif", None),
        p("/api/whatif", "get", "/api/whatif?add=bm99@build-linux", None),
        p("/api/holds", "get", "/api/holds?open=1", None),
        p("/api/holds", "get", "/api/holds?open=x", None),
        p(
            "/api/masters/{master}/drain",
            "get",
            "/api/masters/bm02/drain?byname=1",
            None,
        ),
        p("/api/masters/{master}/drain", "get", "/api/masters/999/drain", None),
        p(
            "/api/{table}/{id}/{action}",
            "post",
            "/api/masters/bm02/drain?byname=1",
            Some(json!({"note": "upgrade", "until": "2h"})),
        ),
        p(
            "/api/{table}/{id}/{action}",
            "post",
            "/api/masters/2/drain",
            Some(json!({})),
        ),
        p("/api/{table}/{id}/{action}", "post", "/api/masters/2/undrain", None),
        p(
            "/api/{table}/{id}/{action}",
            "post",
            "/api/pools/1/drain",
            Some(json!({"note": "x"})),
        ),
        p(
            "/api/slaves/bulk",
            "post",
            "/api/slaves/bulk",
            Some(json!({"select": {"names": ["bld-linux64-spot-001"]}, "set": {"notes": "n"}, "dry_run": true})),
        ),
        p(
            "/api/slaves/bulk",
            "post",
            "/api/slaves/bulk",
            Some(json!({"select": {}, "set": {}})),
        ),
        p("/api/{table}", "get", "/api/slaves?connected=1&stale=7d", None),
        p("/api/{table}", "get", "/api/slaves?stale=never", None),
        // Without tokens nobody reads worker lists (tests/workers.rs has the rest).
        p(
            "/api/masters/{master}/workers",
            "get",
            "/api/masters/bm01/workers",
            None,
        ),
        p("/api/{table}", "get", "/api/slaves?pool=build-linux&enabled=1", None),
        p("/api/{table}", "get", "/api/slaves?enabled=x", None),
        p("/api/{table}", "get", "/api/nosuch", None),
        p("/api/{table}", "post", "/api/slaves", Some(slave.clone())),
        p("/api/{table}", "post", "/api/slaves", Some(slave)),
        p("/api/{table}", "post", "/api/pools", Some(json!({"name": 7}))),
        p("/api/{table}", "post", "/api/nosuch", Some(json!({}))),
        p("/api/{table}/{id}", "get", "/api/masters/1", None),
        p("/api/{table}/{id}", "get", "/api/masters/bm02?byname=1", None),
        p("/api/{table}/{id}", "get", "/api/masters/999", None),
        p("/api/{table}/{id}", "get", "/api/masters/x", None),
        p(
            "/api/{table}/{id}",
            "put",
            "/api/masters/1",
            Some(json!({"notes": "n"})),
        ),
        p(
            "/api/{table}/{id}",
            "put",
            "/api/masters/1",
            Some(json!({"nickname": "bm02"})),
        ),
        p(
            "/api/{table}/{id}",
            "put",
            "/api/masters/1",
            Some(json!({"pb_port": "x"})),
        ),
        p(
            "/api/{table}/{id}",
            "put",
            "/api/masters/999",
            Some(json!({"notes": "n"})),
        ),
        p("/api/{table}/{id}", "delete", "/api/masters/1", None),
        p("/api/{table}/{id}", "delete", "/api/speeds/999", None),
        p("/api/{table}/{id}", "delete", "/api/speeds/x", None),
    ];

    let mut probed = BTreeSet::new();
    for probe in &probes {
        let r = http(
            &probe.method.to_uppercase(),
            &server.url(&probe.url),
            probe.body.as_ref().map(|b| b.to_string().into_bytes()),
        )
        .await;
        let documented = &doc["paths"][probe.path][probe.method]["responses"];
        assert!(
            documented.is_object(),
            "{} {} is not documented",
            probe.method,
            probe.path
        );
        assert!(
            documented.get(r.status.to_string()).is_some(),
            "{} {} answered {} ({}), documented: {:?}",
            probe.method,
            probe.url,
            r.status,
            r.body.chars().take(200).collect::<String>(),
            documented.as_object().unwrap().keys().collect::<Vec<_>>()
        );
        probed.insert((probe.path, probe.method));
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                probed.contains(&(path.as_str(), method.as_str())),
                "{method} {path} is never probed"
            );
        }
    }
    server.stop().await;
    if let Some(db) = db {
        db.destroy().await;
    }
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_refused_over_a_real_socket() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::from_dump(&sample_fleet()).unwrap());
    let server = Server::start(Arc::clone(&store), ServerConfig::default()).await;
    let before = store.export().await.unwrap();
    let body = format!("{{\"notes\": \"{}\"}}", "x".repeat(2 * 1024 * 1024)).into_bytes();
    let r = http("PUT", &server.url("/api/slaves/1"), Some(body)).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(store.export().await.unwrap(), before);
    // The connection pool of the server is still fine.
    assert_eq!(http("GET", &server.url("/healthz"), None).await.status, 200);
    server.stop().await;
}

/// A store whose allocation transactions wait until the test lets them
/// go, and say when one is waiting.
struct Gated {
    inner: MemoryStore,
    entered: tokio::sync::mpsc::UnboundedSender<()>,
    gate: Semaphore,
}

#[async_trait]
impl AllocationStore for Gated {
    async fn begin(&self, intent: Intent) -> Result<Box<dyn AllocationUnit>, StoreError> {
        let _ = self.entered.send(());
        self.gate.acquire().await.unwrap().forget();
        self.inner.begin(intent).await
    }
}

#[async_trait]
impl slavealloc_domain::InventoryStore for Gated {
    async fn list(&self, t: slavealloc_domain::Table) -> Result<Vec<slavealloc_domain::Row>, StoreError> {
        self.inner.list(t).await
    }
    async fn get(&self, t: slavealloc_domain::Table, id: i32) -> Result<Option<slavealloc_domain::Row>, StoreError> {
        self.inner.get(t, id).await
    }
    async fn find_by_name(
        &self,
        t: slavealloc_domain::Table,
        name: &str,
    ) -> Result<Option<slavealloc_domain::Row>, StoreError> {
        self.inner.find_by_name(t, name).await
    }
    async fn insert(
        &self,
        t: slavealloc_domain::Table,
        row: slavealloc_domain::Row,
        a: slavealloc_domain::Actor,
    ) -> Result<slavealloc_domain::Row, StoreError> {
        self.inner.insert(t, row, a).await
    }
    async fn update(
        &self,
        t: slavealloc_domain::Table,
        id: i32,
        row: slavealloc_domain::Row,
        a: slavealloc_domain::Actor,
    ) -> Result<slavealloc_domain::Row, StoreError> {
        self.inner.update(t, id, row, a).await
    }
    async fn update_many(
        &self,
        t: slavealloc_domain::Table,
        ids: &[i32],
        row: slavealloc_domain::Row,
        note: Option<String>,
        dry_run: bool,
        a: slavealloc_domain::Actor,
    ) -> Result<Vec<(slavealloc_domain::Row, slavealloc_domain::Row)>, StoreError> {
        self.inner.update_many(t, ids, row, note, dry_run, a).await
    }
    async fn delete(
        &self,
        t: slavealloc_domain::Table,
        id: i32,
        a: slavealloc_domain::Actor,
    ) -> Result<(), StoreError> {
        self.inner.delete(t, id, a).await
    }
    async fn audit(&self, q: slavealloc_domain::AuditQuery) -> Result<Vec<slavealloc_domain::AuditEntry>, StoreError> {
        self.inner.audit(q).await
    }
    async fn prune_allocations(&self, before: std::time::SystemTime, batch: u32) -> Result<u64, StoreError> {
        self.inner.prune_allocations(before, batch).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[async_trait]
impl slavealloc_domain::LiveStore for Gated {
    async fn record_poll(&self, poll: &slavealloc_domain::live::PollRecord) -> Result<(), StoreError> {
        self.inner.record_poll(poll).await
    }
    async fn live_state(&self) -> Result<slavealloc_domain::live::LiveState, StoreError> {
        self.inner.live_state().await
    }
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: std::time::SystemTime,
        ttl: std::time::Duration,
    ) -> Result<slavealloc_domain::live::Lease, StoreError> {
        self.inner.take_lease(name, holder, now, ttl).await
    }
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.inner.release_lease(name, holder).await
    }
}

#[async_trait]
impl slavealloc_domain::LifecycleStore for Gated {
    async fn hold(
        &self,
        target: slavealloc_domain::HoldTarget,
        ids: &[i32],
        hold: &slavealloc_domain::NewHold,
        actor: slavealloc_domain::Actor,
    ) -> Result<Vec<slavealloc_domain::Hold>, StoreError> {
        self.inner.hold(target, ids, hold, actor).await
    }
    async fn release(
        &self,
        target: slavealloc_domain::HoldTarget,
        ids: &[i32],
        also: &slavealloc_domain::Row,
        actor: slavealloc_domain::Actor,
    ) -> Result<Vec<slavealloc_domain::Hold>, StoreError> {
        self.inner.release(target, ids, also, actor).await
    }
    async fn holds(
        &self,
        query: &slavealloc_domain::lifecycle::HoldQuery,
    ) -> Result<Vec<slavealloc_domain::Hold>, StoreError> {
        self.inner.holds(query).await
    }
    async fn resume_due(&self, now: std::time::SystemTime) -> Result<Vec<slavealloc_domain::Hold>, StoreError> {
        self.inner.resume_due(now).await
    }
}

#[async_trait]
impl slavealloc_domain::DumpStore for Gated {
    async fn export(&self) -> Result<slavealloc_domain::Dump, StoreError> {
        self.inner.export().await
    }
    async fn replace_all(&self, d: &slavealloc_domain::Dump) -> Result<(), StoreError> {
        self.inner.replace_all(d).await
    }
    async fn replace_all_saving<'s>(
        &self,
        d: &slavealloc_domain::Dump,
        save: &'s (dyn slavealloc_domain::SaveReplaced + 's),
    ) -> Result<(), StoreError> {
        self.inner.replace_all_saving(d, save).await
    }
    async fn append(&self, d: &slavealloc_domain::Dump) -> Result<(), StoreError> {
        self.inner.append(d).await
    }
    async fn row_count(&self) -> Result<u64, StoreError> {
        self.inner.row_count().await
    }
}

#[tokio::test]
async fn shutdown_lets_the_requests_in_flight_finish() {
    let (entered, mut waiting) = tokio::sync::mpsc::unbounded_channel();
    let gated = Arc::new(Gated {
        inner: MemoryStore::from_dump(&sample_fleet()).unwrap(),
        entered,
        gate: Semaphore::new(0),
    });
    let store: Arc<dyn Store> = gated.clone();
    let server = Server::start(store, ServerConfig::default()).await;
    let url = server.url("/gettac/bld-linux64-spot-003");
    let request = tokio::spawn(async move { http("GET", &url, None).await });
    waiting.recv().await.unwrap(); // the allocation is in its transaction

    let addr = server.addr;
    let _ = server.stop.send(());
    gated.gate.add_permits(1);
    let r = request.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("slave=bld-linux64-spot-003\n"));
    server.task.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "a stopped server accepts no connection"
    );
}

/// Every slave of a fresh fleet asks at once, half through each of two
/// daemons with their own connection pools on one database: every pool and
/// silo ends up spread evenly over its masters, as if the requests had
/// been served one by one.
async fn two_daemons_allocating_concurrently_stay_balanced(kind: Kind) {
    let spec = FleetSpec {
        slaves: 480,
        pools: 2,
        masters_per_pool: 4,
        disabled_masters_per_pool: 1,
        silos_per_pool: 3,
        locked_fraction: 0.0,
        disabled_fraction: 0.0,
        allocated_fraction: 0.0,
        seed: 7,
    };
    let fleet = generate_fleet(&spec);
    let Some((store_a, db)) = store(kind, &fleet).await else {
        return;
    };
    let store_b: Arc<dyn Store> = match &db {
        Some(db) => Arc::new(db.store().await),
        None => Arc::clone(&store_a),
    };
    let a = Server::start(Arc::clone(&store_a), ServerConfig::default()).await;
    let b = Server::start(store_b, ServerConfig::default()).await;

    let names: Vec<String> = fleet
        .rows(slavealloc_domain::Table::Slaves)
        .iter()
        .map(|r| r["name"].as_text().unwrap().to_owned())
        .collect();
    // 64 clients at a time, as the load benchmark does.
    let clients = Arc::new(Semaphore::new(64));
    let mut requests = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let url = if i % 2 == 0 { a.url("") } else { b.url("") };
        let name = name.clone();
        let clients = Arc::clone(&clients);
        requests.push(tokio::spawn(async move {
            let _client = clients.acquire_owned().await.unwrap();
            http("GET", &format!("{url}/gettac/{name}"), None).await
        }));
    }
    for r in requests {
        let r = r.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }

    let slaves = http("GET", &a.url("/api/slaves"), None).await.json();
    let masters = http("GET", &a.url("/api/masters"), None).await.json();
    let enabled: BTreeSet<i64> = masters
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["enabled"] == true)
        .map(|m| m["masterid"].as_i64().unwrap())
        .collect();
    // (pool, silo) -> master -> slaves
    let mut spread: BTreeMap<String, BTreeMap<i64, usize>> = BTreeMap::new();
    for s in slaves.as_array().unwrap() {
        let silo = ["poolid", "distroid", "bitsid", "purposeid", "dcid", "trustid", "envid"]
            .map(|c| s[c].to_string())
            .join("/");
        let master = s["current_masterid"].as_i64().expect("every slave got a master");
        assert!(enabled.contains(&master), "{s}");
        *spread.entry(silo).or_default().entry(master).or_default() += 1;
    }
    assert_eq!(spread.len(), 6);
    for (silo, per_master) in &spread {
        assert_eq!(per_master.len(), 3, "{silo}: {per_master:?}");
        let (min, max) = (per_master.values().min().unwrap(), per_master.values().max().unwrap());
        assert!(max - min <= 1, "{silo} is unbalanced: {per_master:?}");
    }
    a.stop().await;
    b.stop().await;
    if let Some(db) = db {
        db.destroy().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_sqlite_file_stay_balanced() {
    two_daemons_allocating_concurrently_stay_balanced(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_mariadb_database_stay_balanced() {
    two_daemons_allocating_concurrently_stay_balanced(Kind::MySql).await;
}
