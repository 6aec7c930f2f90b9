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

pub mod auth;
pub mod batcher;
pub mod filters;
pub mod handlers;
pub mod metrics;
pub mod models;
pub mod rejections;
pub mod render_pool;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::server::conn::{AddrIncoming, AddrStream};
use hyper::service::{make_service_fn, service_fn, Service};
use slavealloc_domain::{Allocator, Inventory};
use warp::filters::BoxedFilter;
use warp::Filter;

pub use auth::Tokens;
pub use metrics::PoolState;

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
    /// with 503. Keep the store's own connect timeout below it.
    pub db_deadline: Duration,
    /// Whether the database is ready yet.
    pub readiness: Readiness,
    /// The store's connection pool state, for `/metrics`, if it has one.
    pub pool_state: Option<PoolStateFn>,
    /// Reverse proxies (nginx on the same host, say) whose `X-Real-IP`
    /// header names the client: the audit log and the allocation log record
    /// that address instead of the proxy's. Empty: the header is ignored, so
    /// a client cannot claim another's address.
    pub trusted_proxies: Vec<IpAddr>,
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
            db_deadline: DEFAULT_DB_DEADLINE,
            readiness: Readiness::ready(),
            pool_state: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Default for [`ServerConfig::db_deadline`]: a client learns that the
/// database is down well within two seconds.
pub const DEFAULT_DB_DEADLINE: Duration = Duration::from_millis(1500);

/// The domain services the daemon drives.
#[derive(Debug, Clone)]
pub struct Services {
    /// Allocations for `/gettac` and `/api/gettac`.
    pub allocator: Allocator,
    /// The tables for the REST API, `/healthz` and `/api/audit`.
    pub inventory: Inventory,
}

/// Everything a handler needs, shared by all requests.
#[derive(Debug)]
pub struct AppState {
    pub(crate) services: Services,
    pub(crate) batcher: batcher::Batcher,
    pub(crate) tokens: Tokens,
    pub(crate) base: String,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) db_deadline: Duration,
    pub(crate) readiness: Readiness,
    pub(crate) ui_mounted: bool,
    pub(crate) api_index: String,
    pub(crate) openapi: String,
    pub(crate) trusted_proxies: Arc<[IpAddr]>,
}

/// The whole daemon as one warp filter: every route, rejections rendered,
/// `Cache-Control: no-cache` on every answer, request metrics recorded.
///
/// Spawns the group-commit task, so it must be called inside a tokio
/// runtime; the task ends when the filter (every clone of it) is dropped.
pub fn routes(services: Services, config: ServerConfig) -> BoxedFilter<(warp::reply::Response,)> {
    let base = normalize_base(&config.base_url);
    let batcher = batcher::Batcher::spawn(services.allocator.clone(), config.batch_limit);
    let metrics = metrics::Metrics::new(config.pool_state.clone(), batcher.sizes().0.clone());
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

/// Serves `filter` on an already bound listener until `shutdown` completes,
/// then lets in-flight requests finish. Each request carries the client's
/// address as a [`PeerAddr`] extension.
///
/// # Errors
/// When the listener cannot be handed to hyper, or the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    filter: BoxedFilter<(warp::reply::Response,)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), hyper::Error> {
    let mut incoming = AddrIncoming::from_listener(listener)?;
    // Small request/response exchanges: waiting for Nagle only adds latency.
    incoming.set_nodelay(true);
    let service = warp::service(filter);
    let make = make_service_fn(move |conn: &AddrStream| {
        let peer = PeerAddr(conn.remote_addr());
        let service = service.clone();
        async move {
            Ok::<_, Infallible>(service_fn(move |mut req: hyper::Request<hyper::Body>| {
                req.extensions_mut().insert(peer);
                service.clone().call(req)
            }))
        }
    });
    hyper::Server::builder(incoming)
        .serve(make)
        .with_graceful_shutdown(shutdown)
        .await
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
