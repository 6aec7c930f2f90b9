//! `/metrics`: Prometheus metrics with `prometheus-client`.
//!
//! Route labels are route *templates* (`/api/{table}/{id}`), never raw
//! paths, so a scanner walking random URLs cannot grow the label set.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::admission::AdmissionMetrics;
use crate::PoolStateFn;

/// A connection pool's state, as the store reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    /// Open connections, idle or in use.
    pub size: u32,
    /// Open connections waiting for work.
    pub idle: u32,
    /// The most connections the pool opens.
    pub max: u32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AllocationLabels {
    pool: String,
    master: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MasterLabels {
    master: String,
    pool: String,
}

/// What this daemon's poller of the masters reports: whether it holds
/// the lease, its rounds and their polls. Cheap to clone: clones share the
/// metrics.
#[derive(Debug, Clone)]
pub struct PollerMetrics {
    holding: Gauge,
    rounds: Counter,
    polls: Family<PollLabels, Counter>,
    round_seconds: Histogram,
}

impl Default for PollerMetrics {
    fn default() -> Self {
        Self {
            holding: Gauge::default(),
            rounds: Counter::default(),
            polls: Family::default(),
            // 1 ms .. ~16 s
            round_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        }
    }
}

impl PollerMetrics {
    /// Whether this daemon holds the poller's lease now.
    pub fn set_holding(&self, holding: bool) {
        self.holding.set(i64::from(holding));
    }

    /// One round done: how many masters answered, how many did not, and
    /// how long it took.
    pub fn round(&self, answered: u64, failed: u64, seconds: f64) {
        self.rounds.inc();
        self.polls.get_or_create(&PollLabels { outcome: "ok" }).inc_by(answered);
        self.polls
            .get_or_create(&PollLabels { outcome: "error" })
            .inc_by(failed);
        self.round_seconds.observe(seconds);
    }
}

/// The live fleet as gauges, refreshed from the live state at each scrape.
#[derive(Debug, Default)]
struct LiveGauges {
    connected: Family<MasterLabels, Gauge>,
    connected_per_pool: Family<PoolOnly, Gauge>,
    reachable: Family<MasterLabels, Gauge>,
    unreachable_masters: Gauge,
    stale_slaves: Gauge,
    poll_seconds: Family<MasterLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolOnly {
    pool: String,
}

/// One master's live facts for [`Metrics::set_live`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MasterGauge {
    pub master: String,
    pub pool: String,
    pub polled: bool,
    pub reachable: bool,
    pub connected: u32,
    pub poll_seconds: f64,
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    allocations: Family<AllocationLabels, Counter>,
    allocation_seconds: Histogram,
    db_up: Gauge,
    pool_connections: Family<ConnectionLabels, Gauge>,
    pool_max: Gauge,
    pool_state: Option<PoolStateFn>,
    live: LiveGauges,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric; `batch_sizes` is the group-commit task's.
    pub(crate) fn new(
        pool_state: Option<PoolStateFn>,
        batch_sizes: Histogram,
        poller: Option<PollerMetrics>,
        admission: &AdmissionMetrics,
    ) -> Self {
        let mut registry = Registry::with_prefix("slavealloc");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        let allocations = Family::<AllocationLabels, Counter>::default();
        registry.register(
            "allocations",
            "Allocations committed by /gettac, by pool id, master nickname and reason",
            allocations.clone(),
        );
        // 0.5 ms .. ~4 s
        let allocation_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "allocation_duration_seconds",
            "Time from a /gettac request's arrival to its committed answer",
            allocation_seconds.clone(),
        );
        registry.register(
            "allocation_batch_size",
            "Requests decided per group-commit transaction",
            batch_sizes,
        );
        register_admission(&mut registry, admission);
        let db_up = Gauge::default();
        registry.register(
            "database_up",
            "1 when the last database call succeeded or failed for a reason other than unavailability, else 0",
            db_up.clone(),
        );
        let pool_connections = Family::<ConnectionLabels, Gauge>::default();
        registry.register(
            "database_pool_connections",
            "Open database connections, by state (idle, in_use)",
            pool_connections.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "database_pool_max_connections",
            "The most connections the database pool opens",
            pool_max.clone(),
        );
        if let Some(p) = poller {
            registry.register(
                "poller_lease_held",
                "1 while this daemon holds the lease that makes it the one polling the masters",
                p.holding,
            );
            registry.register("poller_rounds", "Poll rounds this daemon ran", p.rounds);
            registry.register(
                "poller_polls",
                "Polls of a master's data API this daemon made, by outcome (ok, error)",
                p.polls,
            );
            registry.register(
                "poller_round_duration_seconds",
                "Time one round over every master took",
                p.round_seconds,
            );
        }
        let live = LiveGauges::default();
        registry.register(
            "live_connected_workers",
            "Workers connected to each master at its last answered poll, by master and pool",
            live.connected.clone(),
        );
        registry.register(
            "live_pool_connected_workers",
            "Workers connected to the masters of each pool",
            live.connected_per_pool.clone(),
        );
        registry.register(
            "live_master_reachable",
            "1 when the master's last poll was answered, 0 when not (never-polled masters left out)",
            live.reachable.clone(),
        );
        registry.register(
            "live_unreachable_masters",
            "Masters whose last poll was not answered",
            live.unreachable_masters.clone(),
        );
        registry.register(
            "live_stale_slaves",
            "Enabled slaves not seen connected for 7 days, or never",
            live.stale_slaves.clone(),
        );
        registry.register(
            "live_poll_duration_seconds",
            "How long each master's last poll took",
            live.poll_seconds.clone(),
        );
        Self {
            registry,
            requests,
            allocations,
            allocation_seconds,
            db_up,
            pool_connections,
            pool_max,
            pool_state,
            live,
        }
    }

    /// Replaces the live gauges with these facts.
    pub(crate) fn set_live(&self, masters: &[MasterGauge], stale_slaves: u64) {
        let l = &self.live;
        l.connected.clear();
        l.connected_per_pool.clear();
        l.reachable.clear();
        l.poll_seconds.clear();
        let mut unreachable = 0;
        for m in masters.iter().filter(|m| m.polled) {
            let labels = MasterLabels {
                master: m.master.clone(),
                pool: m.pool.clone(),
            };
            l.connected.get_or_create(&labels).set(m.connected.into());
            l.connected_per_pool
                .get_or_create(&PoolOnly { pool: m.pool.clone() })
                .inc_by(m.connected.into());
            l.reachable.get_or_create(&labels).set(i64::from(m.reachable));
            l.poll_seconds.get_or_create(&labels).set(m.poll_seconds);
            unreachable += i64::from(!m.reachable);
        }
        l.unreachable_masters.set(unreachable);
        l.stale_slaves.set(i64::try_from(stale_slaves).unwrap_or(i64::MAX));
    }

    /// Counts one answered request.
    pub(crate) fn request(&self, route: &'static str, method: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method: method_of(method),
                status,
            })
            .inc();
    }

    /// Counts one committed allocation and its latency.
    pub(crate) fn allocation(&self, poolid: i32, master: &str, reason: &'static str, seconds: f64) {
        self.allocations
            .get_or_create(&AllocationLabels {
                pool: poolid.to_string(),
                master: master.to_owned(),
                reason,
            })
            .inc();
        self.allocation_seconds.observe(seconds);
    }

    /// Records whether the database answered.
    pub(crate) fn database_up(&self, up: bool) {
        self.db_up.set(i64::from(up));
    }

    /// The exposition text.
    pub(crate) fn render(&self) -> String {
        if let Some(state) = self.pool_state.as_ref().and_then(|f| f()) {
            let set = |state: &'static str, v: u32| {
                self.pool_connections
                    .get_or_create(&ConnectionLabels { state })
                    .set(v.into());
            };
            set("idle", state.idle);
            set("in_use", state.size.saturating_sub(state.idle));
            self.pool_max.set(state.max.into());
        }
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        text
    }
}

fn register_admission(registry: &mut Registry, a: &AdmissionMetrics) {
    registry.register(
        "gettac_admitted",
        "/gettac requests admitted to the allocation queue",
        a.admitted.clone(),
    );
    registry.register(
        "gettac_refused",
        "/gettac requests answered 503 with Retry-After because the allocation queue was full",
        a.refused.clone(),
    );
    registry.register(
        "gettac_queued",
        "/gettac requests admitted and not yet answered",
        a.queued.clone(),
    );
    registry.register(
        "gettac_decision_rate",
        "Allocations per second the database has been deciding, as admission expects",
        a.rate.clone(),
    );
}

/// The method as a label: one of a fixed set, so that a client sending
/// made-up methods cannot grow `/metrics` (HTTP allows any token there).
pub(crate) fn method_of(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// The route template of a request path (the base path already removed):
/// bounded label values for [`Metrics::request`].
pub(crate) fn route_of(path: &str) -> &'static str {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [] => "/",
        ["gettac", _] => "/gettac/{slave}",
        ["healthz"] => "/healthz",
        ["metrics"] => "/metrics",
        ["ui", ..] => "/ui",
        ["api"] => "/api/",
        ["api", "gettac", _] => "/api/gettac/{slave}",
        ["api", "audit"] => "/api/audit",
        ["api", "openapi.json"] => "/api/openapi.json",
        ["api", "masters", _, "workers"] => "/api/masters/{master}/workers",
        ["api", "drift"] => "/api/drift",
        ["api", "whatif"] => "/api/whatif",
        ["api", "holds"] => "/api/holds",
        ["api", "slaves", "bulk"] => "/api/slaves/bulk",
        ["api", _, _, "drain" | "undrain" | "disable" | "enable"] => "/api/{table}/{id}/{action}",
        ["api", _] => "/api/{table}",
        ["api", _, _] => "/api/{table}/{id}",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templates() {
        let cases = [
            ("/", "/"),
            ("/gettac/x", "/gettac/{slave}"),
            ("/api/", "/api/"),
            ("/api/slaves", "/api/{table}"),
            ("/api/slaves/3", "/api/{table}/{id}"),
            ("/api/gettac/x", "/api/gettac/{slave}"),
            ("/api/masters/bm01/workers", "/api/masters/{master}/workers"),
            ("/api/masters/bm01/drain", "/api/{table}/{id}/{action}"),
            ("/api/slaves/bulk", "/api/slaves/bulk"),
            ("/ui/static/app.js", "/ui"),
            ("/etc/passwd/x", "other"),
        ];
        for (path, want) in cases {
            assert_eq!(route_of(path), want, "{path}");
        }
    }

    #[test]
    fn methods_are_a_fixed_set() {
        for m in ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"] {
            assert_eq!(method_of(m), m);
        }
        for junk in ["PATCH", "get", "XYZZY", "TRACE", ""] {
            assert_eq!(method_of(junk), "other", "{junk}");
        }
    }
}
