//! # slavealloc-http-warp
//!
//! The daemon's HTTP interface: `GET /gettac/<slave>` for booting machines,
//! the original JSON REST API under `/api` (plus create, delete, audit and an
//! OpenAPI document), `/healthz` and `/metrics`, and a place to mount the web
//! UI at `/ui`. Everything lives under a configurable base path, so the
//! daemon can sit behind nginx at `/slavealloc/` as well as at `/`.
//!
//! Main design decision: **group commit**. Every `/gettac` request is queued
//! to one batcher task ([`batcher`]) that takes whatever has arrived (up to a
//! cap), decides the whole batch with the domain's
//! [`Allocator::allocate`](slavealloc_domain::Allocator::allocate) in one
//! transaction, and answers each request only after the commit. The domain's
//! planner decides a batch exactly as it would decide the same requests one
//! after another, so every guarantee of one-transaction-per-request holds
//! (atomic, balanced, safe across daemons sharing a database) at a fraction
//! of the transactions.
//!
//! Layout follows warp's own examples: [`filters`] (routing only),
//! [`handlers`] (each returns its own status code), [`models`] (query and
//! error shapes), and one `recover` per namespace in [`rejections`] that
//! renders what no route answered (404, 405): JSON under `/api`, plain text
//! elsewhere.
//!
//! The store is never waited on for long: every database call is bounded by
//! [`ServerConfig::db_deadline`] and answered with 503 beyond it, so a client
//! learns that the database is down in about a second instead of hanging on
//! a connection pool's default timeout.
//!
//! ## Start-up line
//! The binary prints `listening on http://IP:PORT` on stderr once its socket
//! is bound (see [`listening_line`]); tests and scripts wait for that line
//! instead of sleeping.

pub mod admission;
pub mod auth;
pub mod batcher;
pub mod filters;
pub mod guard;
pub mod handlers;
pub mod holds;
pub mod live;
pub mod metrics;
pub mod models;
pub mod rejections;
pub mod render_pool;
mod stream;
pub mod workers;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::service::{service_fn, Service};
use slavealloc_domain::{
    AllocationStore, Allocator, Host, Inventory, InventoryStore, LifecycleStore, LiveStore, Maintenance, TacRenderer,
};
use warp::filters::BoxedFilter;
use warp::Filter;

pub use auth::Tokens;
pub use guard::{AllowedHosts, Guard};
pub use metrics::{PollerMetrics, PoolState};

/// The line the daemon prints once it listens: `listening on http://ADDR`.
/// Tests and scripts wait for it, so its wording is part of the interface.
pub fn listening_line(addr: SocketAddr) -> String {
    format!("listening on http://{addr}")
}

/// The address of the client at the other end of the TCP connection,
/// attached to every request by [`serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// A filter serving the web UI: mounted at `<base>/ui`, it sees only the
/// path after `/ui` (`warp::path::end()` matches `/ui/`).
pub type UiFilter = BoxedFilter<(warp::reply::Response,)>;

/// Reports the store's connection pool, for `/metrics`.
pub type PoolStateFn = Arc<dyn Fn() -> Option<PoolState> + Send + Sync>;

/// Whether the database is ready for requests (its schema checked), and if
/// not, why. The daemon starts listening before the database answers; until
/// someone marks it ready, every request that needs the database gets 503
/// with the reason, at once.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<RwLock<Option<String>>>);

impl Readiness {
    /// Ready from the start: for stores that need no preparation.
    pub fn ready() -> Self {
        Self::default()
    }

    /// Not ready yet, for `reason`.
    pub fn not_ready(reason: impl Into<String>) -> Self {
        Self(Arc::new(RwLock::new(Some(reason.into()))))
    }

    /// Marks it ready: requests go to the database from now on.
    pub fn set_ready(&self) {
        if let Ok(mut r) = self.0.write() {
            *r = None;
        }
    }

    /// Records why it is still not ready (the latest attempt's error).
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        if let Ok(mut r) = self.0.write() {
            *r = Some(reason.into());
        }
    }

    /// `Err(reason)` while not ready.
    ///
    /// # Errors
    /// The reason it is not ready.
    pub fn check(&self) -> Result<(), String> {
        match self.0.read() {
            Ok(r) => r.clone().map_or(Ok(()), Err),
            Err(_) => Err("readiness state poisoned".to_owned()),
        }
    }
}

/// What the daemon serves and how; the binary builds it from its
/// configuration, tests build it directly.
pub struct ServerConfig {
    /// Path prefix everything lives under (`/` or `/slavealloc`); a
    /// trailing slash is ignored.
    pub base_url: String,
    /// Named write tokens; empty means writes are open, as in the original.
    pub tokens: Tokens,
    /// Serve `/gettac` and `/api/gettac` (false for `--no-allocator`).
    pub allocator_enabled: bool,
    /// The web UI, mounted at `<base>/ui` when present.
    pub ui: Option<UiFilter>,
    /// The most requests one group-commit transaction decides.
    pub batch_limit: usize,
    /// How long a request waits for the database before it is answered
    /// with 503. Keep the store's own connect timeout below it. Shared: the
    /// daemon raises it once it finds its database is a cluster node whose
    /// commits may wait for the cluster to evict a dead node.
    pub db_deadline: Deadline,
    /// Whether the database is ready yet.
    pub readiness: Readiness,
    /// The store's connection pool state, for `/metrics`, if it has one.
    pub pool_state: Option<PoolStateFn>,
    /// Reverse proxies (nginx on the same host, say) whose `X-Real-IP`
    /// header names the client: the audit log and the allocation log record
    /// that address instead of the proxy's. Empty: the header is ignored, so
    /// a client cannot claim another's address.
    pub trusted_proxies: Vec<IpAddr>,
    /// Cross-origin protection and the `Host` check (see [`guard`]).
    pub guard: Guard,
    /// This daemon's poller of the masters, for `/metrics`, if it runs one.
    pub poller: Option<metrics::PollerMetrics>,
    /// How much waiting the `/gettac` queue may hold before requests are
    /// answered 503 with `Retry-After` (see [`admission`]).
    pub admission: admission::AdmissionLimits,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("base_url", &self.base_url)
            .field("tokens", &self.tokens)
            .field("allocator_enabled", &self.allocator_enabled)
            .field("ui", &self.ui.is_some())
            .field("batch_limit", &self.batch_limit)
            .field("db_deadline", &self.db_deadline)
            .field("readiness", &self.readiness)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("guard", &self.guard)
            .field("admission", &self.admission)
            .finish_non_exhaustive()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            base_url: "/".to_owned(),
            tokens: Tokens::default(),
            allocator_enabled: true,
            ui: None,
            batch_limit: batcher::DEFAULT_BATCH_LIMIT,
            db_deadline: Deadline::new(DEFAULT_DB_DEADLINE),
            readiness: Readiness::ready(),
            pool_state: None,
            trusted_proxies: Vec::new(),
            guard: Guard::default(),
            poller: None,
            admission: admission::AdmissionLimits::default(),
        }
    }
}

/// Default for [`ServerConfig::db_deadline`]: a client learns that the
/// database is down well within two seconds.
pub const DEFAULT_DB_DEADLINE: Duration = Duration::from_millis(1500);

/// How long requests wait for the database: one value shared by the
/// handlers and whoever may change it while they serve. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Deadline(Arc<std::sync::atomic::AtomicU64>);

impl Deadline {
    /// A deadline of `d` (at least a millisecond).
    pub fn new(d: Duration) -> Self {
        Deadline(Arc::new(std::sync::atomic::AtomicU64::new(Self::millis(d))))
    }

    /// The deadline now.
    pub fn get(&self) -> Duration {
        Duration::from_millis(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Changes it for every request from now on.
    pub fn set(&self, d: Duration) {
        self.0.store(Self::millis(d), std::sync::atomic::Ordering::Relaxed);
    }

    fn millis(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
    }
}

impl From<Duration> for Deadline {
    fn from(d: Duration) -> Self {
        Deadline::new(d)
    }
}

/// The domain services the daemon drives.
#[derive(Debug, Clone)]
pub struct Services {
    /// Allocations for `/gettac` and `/api/gettac`.
    pub allocator: Allocator,
    /// The tables for the REST API, `/healthz` and `/api/audit`.
    pub inventory: Inventory,
    /// The live fleet, for the `live` objects, the live filters and
    /// `/api/drift`; `None` leaves them out.
    pub live: Option<live::LiveServices>,
    /// Drains, disables with a note, bulk writes; `None` answers their
    /// routes with 404.
    pub maintenance: Option<Maintenance>,
}

impl Services {
    /// The services over a store's two ports (usually one store, twice):
    /// the allocator renders with `renderer`, and the inventory checks
    /// every template written with the same renderer, so that one refused
    /// at save time is one that would fail at boot (wiring the two by hand,
    /// tests used to forget the check).
    pub fn new(
        allocation: Arc<dyn AllocationStore>,
        inventory: Arc<dyn InventoryStore>,
        renderer: Arc<dyn TacRenderer>,
        host: Arc<dyn Host>,
    ) -> Self {
        Self {
            allocator: Allocator::new(allocation, renderer.clone(), host.clone()),
            inventory: Inventory::new(inventory, host).with_template_check(renderer),
            live: None,
            maintenance: None,
        }
    }

    /// Shows the live fleet kept in `store`; facts from a master that has
    /// not answered for `fresh_for` are marked not fresh.
    pub fn with_live(mut self, store: Arc<dyn LiveStore>, fresh_for: Duration, host: Arc<dyn Host>) -> Self {
        self.live = Some(live::LiveServices { store, fresh_for, host });
        self
    }

    /// Keeps drains and disables with a note and an end in `store`, and
    /// takes bulk writes.
    pub fn with_lifecycle(mut self, store: Arc<dyn LifecycleStore>, host: Arc<dyn Host>) -> Self {
        self.maintenance = Some(Maintenance::new(self.inventory.clone(), store, host));
        self
    }
}

/// Everything a handler needs, shared by all requests.
#[derive(Debug)]
pub struct AppState {
    pub(crate) services: Services,
    pub(crate) batcher: batcher::Batcher,
    pub(crate) tokens: Tokens,
    pub(crate) base: String,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) db_deadline: Deadline,
    pub(crate) readiness: Readiness,
    pub(crate) ui_mounted: bool,
    pub(crate) api_index: String,
    pub(crate) openapi: String,
    pub(crate) trusted_proxies: Arc<[IpAddr]>,
    pub(crate) guard: Guard,
}

/// The whole daemon as one warp filter: every route, rejections rendered,
/// `Cache-Control: no-cache` on every answer, request metrics recorded.
///
/// Spawns the group-commit task, so it must be called inside a tokio
/// runtime; the task ends when the filter (every clone of it) is dropped.
pub fn routes(services: Services, config: ServerConfig) -> BoxedFilter<(warp::reply::Response,)> {
    let base = normalize_base(&config.base_url);
    let batcher = batcher::Batcher::spawn_with(services.allocator.clone(), config.batch_limit, config.admission);
    let metrics = metrics::Metrics::new(
        config.pool_state.clone(),
        batcher.sizes().0.clone(),
        config.poller.clone(),
        batcher.admission().metrics(),
    );
    let state = Arc::new(AppState {
        api_index: handlers::api_index_html(&base),
        openapi: handlers::openapi_json(&base),
        services,
        batcher,
        tokens: config.tokens,
        metrics,
        db_deadline: config.db_deadline,
        readiness: config.readiness,
        ui_mounted: config.ui.is_some(),
        trusted_proxies: config.trusted_proxies.into(),
        guard: config.guard,
        base,
    });
    filters::app(state, config.allocator_enabled, config.ui)
}

/// `/`, `/foo`, `/foo/` → `""`, `/foo`, `/foo`: the prefix to put before
/// every absolute path the daemon writes (redirects, links).
pub(crate) fn normalize_base(base: &str) -> String {
    let segments: Vec<&str> = base.split('/').filter(|s| !s.is_empty()).collect();
    if segments.is_empty() {
        String::new()
    } else {
        format!("/{}", segments.join("/"))
    }
}

/// How long clients may take and how many may be connected at once: what
/// keeps a slow or hostile client from holding the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// From the moment the server waits for a request's head to its end.
    /// hyper starts this clock also while a keep-alive connection waits for
    /// its next request, so it is the idle keep-alive timeout too: keep a
    /// proxy's upstream keep-alive shorter (the shipped nginx sites do).
    pub header_read_timeout: Duration,
    /// From a request's head to its answer (body read, handler run);
    /// answered with 503 beyond it.
    pub request_timeout: Duration,
    /// A connection on which a read or a write makes no progress for this
    /// long is closed: a client that stops reading its answer, or stalls
    /// its body, gives its connection back.
    pub io_timeout: Duration,
    /// The most connections served at once; more are answered 503 and
    /// closed. Keep it below the process's file-descriptor limit.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

/// The answer to a connection over [`Limits::max_connections`], written
/// without reading its request.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 21\r\n\r\ntoo many connections\n";

/// How many over-capacity connections are being answered at once; beyond
/// it they are closed without an answer.
const MAX_REFUSALS: usize = 64;

/// Serves `filter` on an already bound listener with the default
/// [`Limits`] until `shutdown` completes, then lets in-flight requests
/// finish. Each request carries the client's address as a [`PeerAddr`]
/// extension.
///
/// # Errors
/// Never today; the `Result` is kept for callers.
pub async fn serve(
    listener: tokio::net::TcpListener,
    filter: BoxedFilter<(warp::reply::Response,)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), hyper::Error> {
    serve_with(listener, filter, shutdown, Limits::default()).await
}

/// [`serve`] with these limits.
///
/// # Errors
/// Never today: a failed `accept` (the file-descriptor limit, say) is
/// logged and retried after a pause, and a failed connection only ends
/// that connection.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    filter: BoxedFilter<(warp::reply::Response,)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> Result<(), hyper::Error> {
    let service = warp::service(filter);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let refusals = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSALS));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let limits = Arc::new(limits);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connections so the set does not grow with the
        // connections served.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the
                // connections being served free descriptors.
                tracing::warn!(error = %e, "accept failed; pausing");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small request/response exchanges: waiting for Nagle only adds latency.
        let _ = stream.set_nodelay(true);
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
                tokio::spawn(refuse(stream, permit));
            }
            continue;
        };
        let service = service.clone();
        let limits = Arc::clone(&limits);
        let stopping = stopping.clone();
        connections.spawn(async move {
            connection(stream, PeerAddr(peer), service, &limits, stopping).await;
            drop(slot);
        });
    }
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection until it closes, a limit closes it, or the server
/// stops (then its request in flight finishes first).
async fn connection<S>(
    stream: tokio::net::TcpStream,
    peer: PeerAddr,
    service: S,
    limits: &Limits,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) where
    S: Service<hyper::Request<hyper::Body>, Response = warp::reply::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut io = tokio_io_timeout::TimeoutStream::new(stream);
    io.set_read_timeout(Some(limits.io_timeout));
    io.set_write_timeout(Some(limits.io_timeout));
    let request_timeout = limits.request_timeout;
    let handler = service_fn(move |mut req: hyper::Request<hyper::Body>| {
        req.extensions_mut().insert(peer);
        let answer = service.clone().call(req);
        async move {
            Ok::<_, Infallible>(match tokio::time::timeout(request_timeout, answer).await {
                Ok(Ok(r)) => r,
                Ok(Err(never)) => match never {},
                Err(_) => too_slow(request_timeout),
            })
        }
    });
    let conn = hyper::server::conn::Http::new()
        .http1_only(true)
        .http1_header_read_timeout(limits.header_read_timeout)
        .serve_connection(Box::pin(io), handler);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopping.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // A client that hung up or timed out: its business, not an error.
        tracing::debug!(peer = %peer.0, error = %e, "connection ended");
    }
}

fn too_slow(limit: Duration) -> warp::reply::Response {
    let mut r = warp::http::Response::new(hyper::Body::from(format!(
        "the request took longer than {} ms\n",
        limit.as_millis()
    )));
    *r.status_mut() = warp::http::StatusCode::SERVICE_UNAVAILABLE;
    r
}

/// Answers a connection over the cap with 503 and closes it, bounded in
/// time so that a client that never reads cannot keep it.
async fn refuse(mut stream: tokio::net::TcpStream, permit: tokio::sync::OwnedSemaphorePermit) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let answer = async {
        stream.write_all(OVER_CAPACITY).await?;
        stream.shutdown().await?;
        // Read what the client sent before closing, so that the close is a
        // FIN and not a reset that could discard the answer.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
    drop(permit);
}

/// A filter extracting the client's address: the [`PeerAddr`] that
/// [`serve`] attaches, else warp's own (set by `warp::test`).
pub(crate) fn peer() -> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Clone {
    warp::ext::optional::<PeerAddr>()
        .and(warp::addr::remote())
        .map(|ext: Option<PeerAddr>, remote: Option<SocketAddr>| ext.map(|p| p.0).or(remote))
}

/// A filter extracting the client's address: the peer's, or the
/// `X-Real-IP` header's when the peer is one of the `trusted` proxies (which
/// set that header themselves, overwriting whatever the client sent).
pub(crate) fn client(trusted: Arc<[IpAddr]>) -> impl Filter<Extract = (Option<IpAddr>,), Error = Infallible> + Clone {
    peer()
        .and(warp::header::headers_cloned())
        .map(move |peer: Option<SocketAddr>, headers: warp::http::HeaderMap| {
            let peer = peer.map(|p| p.ip());
            let forwarded = || {
                headers
                    .get("x-real-ip")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<IpAddr>().ok())
            };
            match peer {
                Some(ip) if trusted.contains(&ip) => forwarded().or(peer),
                _ => peer,
            }
        })
}
