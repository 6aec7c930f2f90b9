//! `slavealloc serve`: reads the configuration, wires the store, renderer
//! and HTTP adapter, binds, prints `listening on http://ADDR` on stderr, and
//! serves until SIGTERM or SIGINT (in-flight requests finish).
//!
//! Configuration precedence: command-line flags, then environment
//! variables (`SLAVEALLOC_*`), then the TOML files (`--config`, repeated:
//! later files win key by key), then the built-in defaults (SQLite
//! `slavealloc.db` in the working directory, `127.0.0.1:8010`). Production
//! and staging differ only by a small file each over a shared one
//! (fixtures/slavealloc.toml, fixtures/production.toml, fixtures/staging.toml).
//!
//! The daemon listens before its database answers: the schema is checked
//! (and created where missing) by a background task that retries with
//! backoff and logs why; until it succeeds every request that needs the
//! database gets 503 with that reason.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};

use crate::poller::{holder_name, BalanceConfig, PollConfig, PollSettings, Poller};
use serde::Deserialize;
use slavealloc_domain::{BalanceCount, DumpStore, Host, LiveStore, StoreError, TacRenderer};
use slavealloc_http_warp::admission::AdmissionLimits;
use slavealloc_http_warp::auth::Scope;
use slavealloc_http_warp::render_pool::{BlockingRenderPool, DEFAULT_RENDER_BUDGET, DEFAULT_RENDER_THREADS};
use slavealloc_http_warp::{
    listening_line, AllowedHosts, Guard, Limits, Readiness, ServerConfig, Services, Tokens, UiFilter,
};
use slavealloc_http_warp::{Deadline, PollerMetrics};
use slavealloc_store_sql::{Cluster, SqlOptions, SqlStore};
use slavealloc_tac_minijinja::{BuiltinTemplate, MinijinjaRenderer, RendererConfig};
use slavealloc_tac_signing::{SigningRenderer, TacSigner};
use warp::filters::BoxedFilter;

/// The database when none is configured: SQLite in the working directory,
/// created with its schema if missing, as the original's default.
pub const DEFAULT_DB: &str = "sqlite:slavealloc.db";
/// The address when none is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8010";
/// Connections to a SQLite database when `[database] max_connections` is
/// not set (10 for the network databases).
pub const SQLITE_CONNECTIONS: u32 = 2;

/// Options of `slavealloc serve`. Each can also be set in the environment
/// (`SLAVEALLOC_...`) or in the configuration file; flags win over the
/// environment, which wins over the file.
#[derive(Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file; repeat it (or separate with commas) to
    /// layer an instance's file over a base one, later files winning key by
    /// key (see fixtures/slavealloc.toml and fixtures/production.toml).
    #[arg(
        long,
        short = 'c',
        env = "SLAVEALLOC_CONFIG",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub config: Vec<PathBuf>,
    /// Database URL: sqlite:FILE, mysql://..., postgres://... [default: sqlite:slavealloc.db].
    /// Give it again for each server of one database (a PostgreSQL primary
    /// and its standbys, Galera nodes): the daemon follows whichever takes
    /// writes
    #[arg(long, short = 'D', env = "SLAVEALLOC_DB", value_name = "URL")]
    pub db: Vec<String>,
    /// Address to listen on, HOST:PORT (port 0: any free port) [default: 127.0.0.1:8010]
    #[arg(long, env = "SLAVEALLOC_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Path prefix everything is served under, e.g. /slavealloc behind nginx [default: /]
    #[arg(long, env = "SLAVEALLOC_BASE_URL", value_name = "PATH")]
    pub base_url: Option<String>,
    /// Do not serve the web UI.
    #[arg(long, env = "SLAVEALLOC_NO_UI", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub no_ui: Option<bool>,
    /// Do not serve /gettac and /api/gettac (an API-only instance).
    #[arg(long, env = "SLAVEALLOC_NO_ALLOCATOR", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub no_allocator: Option<bool>,
    /// Serve a fresh temporary SQLite database loaded with the sample fleet,
    /// deleted at exit: a working allocator, API and UI in one command.
    #[arg(long, env = "SLAVEALLOC_DEMO", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub demo: Option<bool>,
    /// The host name written in every tac's header [default: this host's name]
    #[arg(long, env = "SLAVEALLOC_FQDN", value_name = "NAME")]
    pub fqdn: Option<String>,
    /// A reverse proxy whose X-Real-IP header names the client, for the
    /// audit and allocation logs (repeat, or separate with commas) [default: none]
    #[arg(
        long = "trusted-proxy",
        env = "SLAVEALLOC_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "IP"
    )]
    pub trusted_proxies: Vec<IpAddr>,
    /// Serve open writes (no write tokens) on an address other than
    /// loopback: without it the daemon refuses to start so.
    #[arg(long, env = "SLAVEALLOC_OPEN_WRITES", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub open_writes: Option<bool>,
    /// Sign every tac with this ed25519 private key (PKCS#8 PEM, from
    /// `slavealloc keygen`; must not be readable by group or others) [default: unsigned]
    #[arg(long, env = "SLAVEALLOC_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
}

/// The configuration file. Every key is optional; unknown keys are an
/// error, so that a typo is not silently ignored.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Database URL, or the URLs of the servers of one database.
    pub db: Option<DbUrls>,
    /// HOST:PORT.
    pub listen: Option<String>,
    /// Path prefix.
    pub base_url: Option<String>,
    /// Do not serve the web UI.
    pub no_ui: Option<bool>,
    /// Do not serve /gettac.
    pub no_allocator: Option<bool>,
    /// Serve the demo fleet.
    pub demo: Option<bool>,
    /// Host name for tac headers.
    pub fqdn: Option<String>,
    /// The most requests one group-commit transaction decides.
    pub batch_limit: Option<usize>,
    /// Reverse proxies whose `X-Real-IP` header names the client.
    pub trusted_proxies: Option<Vec<IpAddr>>,
    /// Writes without tokens on a non-loopback address.
    pub open_writes: Option<bool>,
    /// Host names the API and UI answer to besides `fqdn`, `localhost`
    /// and IP addresses; `["*"]`: any.
    pub allowed_hosts: Option<Vec<String>>,
    /// Origins (`https://name[:port]`) whose pages may write.
    pub trusted_origins: Option<Vec<String>>,
    /// Timeouts and the connection cap.
    #[serde(default)]
    pub server: ServerLimitsConfig,
    /// Tac rendering: `default_template` ("buildslave" or
    /// "buildbot-worker"), `no_idleizer` (name fragments) and
    /// `signing_key` (a private key file).
    #[serde(default)]
    pub tac: Option<TacConfig>,
    /// Connection pool settings.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// Tokens by name: `name = "secret"` (an admin token) or
    /// `[tokens.name]` with `secret` and `scope`; none: writes are open.
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenConfig>,
    /// Polling the masters' Buildbot data API.
    #[serde(default)]
    pub poll: PollConfig,
    /// How the allocator counts peers.
    #[serde(default)]
    pub balance: BalanceConfig,
    /// How long the audit log keeps what.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Drains and disables with an end.
    #[serde(default)]
    pub holds: HoldsConfig,
}

/// `[holds]`: drains and disables with a note and an end.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HoldsConfig {
    /// How often every daemon looks for holds whose end has passed (an
    /// age, default `10s`): how late after its end a master comes back.
    pub check_every: Option<String>,
    /// How many workers of a graceful drain are asked to shut down at a
    /// time, per master (default 2): the rest keep building meanwhile.
    pub graceful_pace: Option<usize>,
}

/// Default of `[holds] check_every`.
pub const DEFAULT_HOLD_CHECK: Duration = Duration::from_secs(10);

/// Default of `[holds] graceful_pace`.
pub const DEFAULT_GRACEFUL_PACE: usize = 2;

/// `[audit]`: retention.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Allocation entries older than this many days are pruned (default
    /// 90; 0 keeps them forever). Edits are always kept.
    pub allocations_days: Option<u64>,
}

/// Default of `[audit] allocations_days`.
pub const DEFAULT_ALLOCATIONS_DAYS: u64 = 90;

/// One entry of `[tokens]`.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TokenConfig {
    /// `name = "secret"`: an admin token, as before scopes existed.
    Admin(String),
    /// `[tokens.name]`: `secret = "..."`, `scope = "admin" | "operator" |
    /// "secrets" | "master"` (a Buildbot master's token: reads worker
    /// lists only).
    Scoped {
        /// The secret.
        secret: String,
        /// What it may do.
        scope: Scope,
    },
}

/// `[tac]`: how tacs are rendered and signed. The renderer's part becomes a
/// [`RendererConfig`]; the signing key is the daemon's, read here.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TacConfig {
    /// The template for slaves without a custom one.
    pub default_template: Option<BuiltinTemplate>,
    /// Name fragments of slaves whose tac has no idleizer.
    pub no_idleizer: Option<Vec<String>>,
    /// The ed25519 private key (PKCS#8 PEM) every tac is signed with.
    pub signing_key: Option<PathBuf>,
}

impl TacConfig {
    /// The renderer's configuration: what is set here over its defaults.
    fn renderer(&self) -> RendererConfig {
        let defaults = RendererConfig::default();
        RendererConfig {
            default_template: self.default_template.unwrap_or(defaults.default_template),
            no_idleizer: self.no_idleizer.clone().unwrap_or(defaults.no_idleizer),
        }
    }
}

/// `[database]`: the connection pool.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The most connections.
    pub max_connections: Option<u32>,
    /// How long a request waits for a connection, in milliseconds.
    pub acquire_timeout_ms: Option<u64>,
    /// Idle connections are closed after this many seconds.
    pub idle_timeout_s: Option<u64>,
    /// Connections are replaced after this many seconds (the original's
    /// `pool_recycle`).
    pub max_lifetime_s: Option<u64>,
    /// How long a request waits for the database before 503, in ms.
    pub deadline_ms: Option<u64>,
    /// `wsrep_sync_wait` on this daemon's connections when the database is
    /// a Galera node: 1 (the default) makes every read wait until the node
    /// has applied what the cluster acknowledged before it; 0 reads what
    /// the node has.
    pub galera_sync_wait: Option<u32>,
    /// How often, in seconds, the daemon recounts the per-silo loads from
    /// `slaves` on MariaDB and PostgreSQL (default 60): the longest a write
    /// by someone else (the original daemon, an operator's SQL) can skew
    /// the balance.
    pub reconcile_interval_s: Option<u64>,
}

/// `[server]`: how long clients may take, how many may connect.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerLimitsConfig {
    /// Milliseconds for a request's head, and for an idle keep-alive
    /// connection's next request.
    pub header_read_timeout_ms: Option<u64>,
    /// Milliseconds from a request's head to its answer.
    pub request_timeout_ms: Option<u64>,
    /// Seconds a read or write may make no progress.
    pub io_timeout_s: Option<u64>,
    /// The most connections at once.
    pub max_connections: Option<usize>,
    /// Milliseconds of waiting the `/gettac` queue may hold before
    /// requests are answered 503 with `Retry-After`.
    pub gettac_max_wait_ms: Option<u64>,
    /// The most `/gettac` requests waiting at once.
    pub gettac_max_queued: Option<usize>,
}

/// `db` in the configuration file: one URL, or several servers of one
/// database.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum DbUrls {
    /// One server.
    One(String),
    /// Servers of one database, of which the daemon follows the one that
    /// takes writes.
    Several(Vec<String>),
}

impl DbUrls {
    fn into_vec(self) -> Vec<String> {
        match self {
            DbUrls::One(url) => vec![url],
            DbUrls::Several(urls) => urls,
        }
    }
}

/// Everything resolved: flags over environment over file over defaults.
#[derive(Debug)]
pub struct Settings {
    /// Database URLs, one per server of the database (`None` for the
    /// demo's temporary database).
    pub db: Option<Vec<String>>,
    /// HOST:PORT.
    pub listen: String,
    /// Path prefix.
    pub base_url: String,
    /// Serve the UI.
    pub ui: bool,
    /// Serve /gettac.
    pub allocator: bool,
    /// Host name for tac headers.
    pub fqdn: String,
    /// Group-commit cap.
    pub batch_limit: usize,
    /// How much waiting the `/gettac` queue may hold.
    pub admission: AdmissionLimits,
    /// Renderer configuration.
    pub tac: RendererConfig,
    /// The key every tac is signed with, if any.
    pub signing_key: Option<PathBuf>,
    /// Pool options.
    pub pool: SqlOptions,
    /// Request deadline for database calls.
    pub deadline: Duration,
    /// Whether the deadline was configured (`deadline_ms`) rather than
    /// the default, which a Galera node raises above its suspect timeout.
    pub deadline_configured: bool,
    /// How often the per-silo loads are recounted from `slaves`.
    pub reconcile_interval: Duration,
    /// Write tokens.
    pub tokens: Tokens,
    /// Reverse proxies whose `X-Real-IP` header names the client.
    pub trusted_proxies: Vec<IpAddr>,
    /// Cross-origin protection and the Host check.
    pub guard: Guard,
    /// Timeouts and the connection cap.
    pub limits: Limits,
    /// Polling the masters.
    pub poll: PollSettings,
    /// How peers are counted.
    pub balance: BalanceCount,
    /// Allocation entries are kept this long (`None`: forever).
    pub keep_allocations: Option<Duration>,
    /// How often holds whose end passed are resumed.
    pub hold_check: Duration,
    /// Workers of a graceful drain asked to shut down at a time.
    pub graceful_pace: usize,
}

/// Reads the file named by `--config` (if any) and merges it with the
/// flags and environment that clap already merged.
///
/// # Errors
/// An unreadable or invalid file, `--demo` together with `--db`, or a weak
/// token.
pub fn settings(args: &ServeArgs) -> anyhow::Result<Settings> {
    resolve(args, read_configs(&args.config)?)
}

/// The configuration files layered in order: each is checked on its own
/// (an unknown key is named with its file), then their tables are merged,
/// a later file's keys replacing an earlier one's and its tables merging
/// into the earlier's key by key.
fn read_configs(paths: &[PathBuf]) -> anyhow::Result<FileConfig> {
    let mut merged = toml::Table::new();
    for path in paths {
        let what = || format!("while reading the configuration file {}", path.display());
        let text = std::fs::read_to_string(path).with_context(|| format!("while reading {}", path.display()))?;
        toml::from_str::<FileConfig>(&text).with_context(what)?;
        let table: toml::Table = toml::from_str(&text).with_context(what)?;
        merge(&mut merged, table);
    }
    let layers: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    FileConfig::deserialize(toml::Value::Table(merged))
        .with_context(|| format!("while layering the configuration files {}", layers.join(", ")))
}

/// Merges `over` into `base`: tables key by key, anything else replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
fn read_config(path: &Path) -> anyhow::Result<FileConfig> {
    read_configs(&[path.to_path_buf()])
}

fn resolve(args: &ServeArgs, file: FileConfig) -> anyhow::Result<Settings> {
    let demo = args.demo.or(file.demo).unwrap_or(false);
    if demo && !args.db.is_empty() {
        bail!("--demo serves a temporary database of its own: drop --db (or SLAVEALLOC_DB)");
    }
    let db = if demo {
        None
    } else {
        let urls = if args.db.is_empty() {
            file.db.map(DbUrls::into_vec).unwrap_or_default()
        } else {
            args.db.clone()
        };
        Some(if urls.is_empty() {
            vec![DEFAULT_DB.to_owned()]
        } else {
            urls
        })
    };
    let sqlite = db
        .as_ref()
        .is_none_or(|urls| urls.iter().any(|url| url.starts_with("sqlite:")));
    let defaults = SqlOptions {
        // SQLite has one writer and a local file: two connections let a
        // read run beside the write, and each more connection only adds
        // its own page cache to the daemon's memory.
        max_connections: if sqlite {
            SQLITE_CONNECTIONS
        } else {
            SqlOptions::default().max_connections
        },
        // Below the request deadline, so a dead database is a 503 from the
        // pool rather than from the deadline.
        acquire_timeout: Duration::from_millis(1000),
        ..SqlOptions::default()
    };
    let d = &file.database;
    let pool = SqlOptions {
        max_connections: d.max_connections.unwrap_or(defaults.max_connections),
        acquire_timeout: d
            .acquire_timeout_ms
            .map_or(defaults.acquire_timeout, Duration::from_millis),
        idle_timeout: d.idle_timeout_s.map(Duration::from_secs).or(defaults.idle_timeout),
        max_lifetime: d.max_lifetime_s.map(Duration::from_secs).or(defaults.max_lifetime),
        galera_sync_wait: match d.galera_sync_wait {
            // MariaDB's mask: a bit each for reads, updates and deletes,
            // inserts and replaces, and SHOW.
            Some(mask) if mask > 15 => bail!("[database] galera_sync_wait is a mask of 0 to 15, not {mask}"),
            set => set.or(defaults.galera_sync_wait),
        },
        ..defaults
    };
    let deadline = d
        .deadline_ms
        .map_or(slavealloc_http_warp::DEFAULT_DB_DEADLINE, Duration::from_millis);
    let tokens = Tokens::with_scopes(file.tokens.into_iter().map(|(name, t)| match t {
        TokenConfig::Admin(secret) => (name, secret, Scope::Admin),
        TokenConfig::Scoped { secret, scope } => (name, secret, scope),
    }))
    .context("while reading [tokens]")?;
    let listen = args
        .listen
        .clone()
        .or(file.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let open_writes = args.open_writes.or(file.open_writes).unwrap_or(false);
    if !tokens.required() && !open_writes && !is_loopback(&listen) {
        bail!(
            "refusing to serve open writes on {listen}: configure [tokens], listen on 127.0.0.1, \
             or set open_writes = true (--open-writes) if anyone who reaches {listen} may change the fleet"
        );
    }
    let fqdn = check_host_name(args.fqdn.clone().or(file.fqdn).unwrap_or_else(host_name))
        .context("fqdn (give --fqdn or fqdn = \"...\" in the configuration)")?;
    let mut names = vec![fqdn.clone(), listen.clone()];
    names.extend(file.allowed_hosts.unwrap_or_default());
    let guard = Guard {
        trusted_origins: file.trusted_origins.unwrap_or_default(),
        allowed_hosts: AllowedHosts::from_names(names),
    };
    let poll = file.poll.resolve()?;
    let balance = file.balance.resolve()?;
    let defaults = Limits::default();
    let l = &file.server;
    let limits = Limits {
        header_read_timeout: l
            .header_read_timeout_ms
            .map_or(defaults.header_read_timeout, Duration::from_millis),
        request_timeout: l
            .request_timeout_ms
            .map_or(defaults.request_timeout, Duration::from_millis),
        io_timeout: l.io_timeout_s.map_or(defaults.io_timeout, Duration::from_secs),
        max_connections: l.max_connections.unwrap_or(defaults.max_connections),
    };
    let admission = admission_limits(l)?;
    Ok(Settings {
        db,
        listen,
        base_url: args
            .base_url
            .clone()
            .or(file.base_url)
            .unwrap_or_else(|| "/".to_owned()),
        ui: !args.no_ui.or(file.no_ui).unwrap_or(false),
        allocator: !args.no_allocator.or(file.no_allocator).unwrap_or(false),
        fqdn,
        batch_limit: file
            .batch_limit
            .unwrap_or(slavealloc_http_warp::batcher::DEFAULT_BATCH_LIMIT),
        admission,
        tac: file.tac.as_ref().map(TacConfig::renderer).unwrap_or_default(),
        signing_key: args
            .signing_key
            .clone()
            .or_else(|| file.tac.and_then(|t| t.signing_key)),
        pool,
        deadline,
        deadline_configured: d.deadline_ms.is_some(),
        reconcile_interval: Duration::from_secs(d.reconcile_interval_s.unwrap_or(DEFAULT_RECONCILE_S).max(1)),
        tokens,
        trusted_proxies: if args.trusted_proxies.is_empty() {
            file.trusted_proxies.unwrap_or_default()
        } else {
            args.trusted_proxies.clone()
        },
        guard,
        limits,
        poll,
        balance,
        keep_allocations: match file.audit.allocations_days.unwrap_or(DEFAULT_ALLOCATIONS_DAYS) {
            0 => None,
            days => Some(Duration::from_secs(days.saturating_mul(86_400))),
        },
        hold_check: match file.holds.check_every.as_deref() {
            None => DEFAULT_HOLD_CHECK,
            Some(text) => {
                slavealloc_domain::live::parse_age(text).map_err(|e| anyhow::anyhow!("[holds] check_every: {e}"))?
            }
        },
        graceful_pace: match file.holds.graceful_pace {
            None => DEFAULT_GRACEFUL_PACE,
            Some(0) => anyhow::bail!("[holds] graceful_pace: at least 1"),
            Some(n) => n,
        },
    })
}

/// `[server] gettac_max_wait_ms` and `gettac_max_queued`, checked.
fn admission_limits(l: &ServerLimitsConfig) -> anyhow::Result<AdmissionLimits> {
    let defaults = AdmissionLimits::default();
    let max_queued = match l.gettac_max_queued {
        None => defaults.max_queued,
        Some(0) => anyhow::bail!("[server] gettac_max_queued: at least 1 (0 would refuse every /gettac)"),
        Some(n) => n,
    };
    Ok(AdmissionLimits {
        max_wait: l.gettac_max_wait_ms.map_or(defaults.max_wait, Duration::from_millis),
        max_queued,
    })
}

/// Whether `listen` (HOST:PORT) is reachable from this host only.
fn is_loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `name` if it is a host name: dot-separated labels of ASCII letters,
/// digits and hyphens (not first or last), 1 to 63 bytes each, 253 in all.
/// The fqdn goes into HTTP headers and onto the header lines of every tac
/// (a Python file, where line 2 may be read as a coding cookie): nothing
/// else may get there.
fn check_host_name(name: String) -> anyhow::Result<String> {
    if name.is_empty() || name.len() > 253 {
        anyhow::bail!("{name:?} is not a host name: it must be 1 to 253 characters long");
    }
    for label in name.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            anyhow::bail!(
                "{name:?} is not a host name: each dot-separated part must be 1 to 63 letters, digits or hyphens, not starting or ending with a hyphen"
            );
        }
    }
    Ok(name)
}

fn host_name() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// The real clock and this host's name.
#[derive(Debug)]
struct SystemHost {
    fqdn: String,
}

impl Host for SystemHost {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    fn fqdn(&self) -> String {
        self.fqdn.clone()
    }
}

/// `slavealloc serve`: settings, logging, [`Daemon::build`], bind, the
/// listening line, serve until SIGTERM or SIGINT.
///
/// # Errors
/// Bad settings, an unreadable signing key, a demo database that cannot be
/// made, an address that cannot be bound.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let settings = settings(&args)?;
    tracing::info!(
        db = settings.db.as_ref().map_or("(demo)".to_owned(), |urls| {
            urls.iter().map(|u| crate::redact::url(u)).collect::<Vec<_>>().join(" ")
        }),
        base_url = %settings.base_url,
        tokens = ?settings.tokens,
        "starting"
    );
    // Built before anything listens: a daemon that would hand out
    // unsigned tacs when asked to sign them must not start.
    let daemon = Daemon::build(&settings).await?;
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("while binding {}", settings.listen))?;
    let addr = listener.local_addr().context("while reading the bound address")?;
    // The one line tests and scripts wait for (see listening_line).
    eprintln!("{}", listening_line(addr));
    daemon.serve(listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The whole daemon from [`Settings`], on a listener the caller bound,
/// until `shutdown` completes: what `slavealloc serve` runs, for tests,
/// benchmarks and tools that start the daemon in process.
///
/// # Errors
/// As for [`Daemon::build`], and a failure to serve.
pub async fn launch(
    settings: &Settings,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Daemon::build(settings).await?.serve(listener, shutdown).await
}

/// A daemon wired and ready to serve: its store, renderer, services, UI
/// and routes, as the settings say.
#[derive(Debug)]
pub struct Daemon {
    store: SqlStore,
    routes: BoxedFilter<(warp::reply::Response,)>,
    limits: Limits,
    /// Polls the masters while serving, when `[poll]` says so.
    poller: Option<Poller>,
    /// Prunes old allocation entries while serving.
    pruner: Option<Pruner>,
    /// Resumes holds whose end passed.
    resumer: Periodic,
    reconciler: Option<Periodic>,
    /// The demo's database lives in a directory removed when the daemon is.
    _demo_dir: Option<tempfile::TempDir>,
}

impl Daemon {
    /// Opens the store (the schema is checked in the background, see
    /// [`Readiness`]; the demo's database is made and filled at once),
    /// reads the signing key, and wires renderer, services, UI and routes.
    ///
    /// # Errors
    /// A bad database URL, a demo database that cannot be made, an
    /// unreadable or world-readable signing key.
    pub async fn build(settings: &Settings) -> anyhow::Result<Daemon> {
        let deadline = Deadline::new(settings.deadline);
        let (store, readiness, demo_dir) = open_store(settings, &deadline).await?;
        let signer = settings.signing_key.as_deref().map(read_signing_key).transpose()?;
        let minijinja: Arc<dyn TacRenderer> = Arc::new(MinijinjaRenderer::new(settings.tac.clone()));
        let renderer: Arc<dyn TacRenderer> = match signer {
            Some(signer) => Arc::new(SigningRenderer::new(minijinja, signer)),
            None => minijinja,
        };
        let host: Arc<dyn Host> = Arc::new(SystemHost {
            fqdn: settings.fqdn.clone(),
        });
        let live: Arc<dyn LiveStore> = Arc::new(store.clone());
        // Facts older than two rounds mean the poller has stopped or the
        // master no longer answers.
        let fresh_for = settings.poll.interval * 2;
        let mut services = Services::new(Arc::new(store.clone()), Arc::new(store.clone()), renderer, host.clone())
            .with_live(Arc::clone(&live), fresh_for, host.clone())
            .with_lifecycle(Arc::new(store.clone()), host.clone());
        services.allocator = services.allocator.with_balance(settings.balance);
        let pruner = settings.keep_allocations.map(|keep| Pruner {
            store: store.clone(),
            keep,
            readiness: readiness.clone(),
        });
        let resumer = Periodic {
            store: store.clone(),
            every: settings.hold_check,
            readiness: readiness.clone(),
        };
        let reconciler = settings.allocator.then(|| Periodic {
            store: store.clone(),
            every: settings.reconcile_interval,
            readiness: readiness.clone(),
        });
        let poller_metrics = settings.poll.enabled.then(PollerMetrics::default);
        let poller = poller_metrics.clone().map(|metrics| Poller {
            metrics,
            settings: settings.poll.clone(),
            inventory: Arc::new(store.clone()),
            live,
            host: host.clone(),
            holder: holder_name(&settings.fqdn),
            readiness: readiness.clone(),
            lifecycle: Some(Arc::new(store.clone())),
            graceful_pace: settings.graceful_pace,
        });
        // Stored templates render after the commit on a few blocking
        // threads, each batch within a budget well inside the request
        // deadline, so a bad template answers its own slaves 500 and nobody
        // else waits.
        let render_pool = BlockingRenderPool::new(DEFAULT_RENDER_THREADS, render_budget(settings.deadline));
        services.allocator = services.allocator.with_render_executor(Arc::new(render_pool));

        // ---- web UI (slavealloc-web-ui), mounted at <base>/ui ----
        let ui: Option<UiFilter> = settings.ui.then(|| {
            // Pages wait for the database no longer than API requests do.
            let config = slavealloc_web_ui::UiConfig {
                base_url: settings.base_url.clone(),
                write_auth: settings.tokens.required(),
                db_deadline: Some(settings.deadline),
            };
            // The pages judge the live fleet as the API does: same store,
            // freshness window and clock.
            let live = services.live.as_ref().map(|l| slavealloc_web_ui::LiveSource {
                store: l.store.clone(),
                fresh_for: l.fresh_for,
                host: l.host.clone(),
            });
            slavealloc_web_ui::routes_with_live(config, services.inventory.clone(), live)
        });
        // ---- end of web UI ----

        let config = ServerConfig {
            base_url: settings.base_url.clone(),
            tokens: settings.tokens.clone(),
            allocator_enabled: settings.allocator,
            ui,
            batch_limit: settings.batch_limit,
            admission: settings.admission,
            db_deadline: deadline,
            readiness,
            pool_state: Some(pool_state(store.clone())),
            trusted_proxies: settings.trusted_proxies.clone(),
            guard: settings.guard.clone(),
            poller: poller_metrics,
        };
        Ok(Daemon {
            routes: slavealloc_http_warp::routes(services, config),
            store,
            limits: settings.limits.clone(),
            poller,
            pruner,
            resumer,
            reconciler,
            _demo_dir: demo_dir,
        })
    }

    /// The store it serves, for callers that look behind its back.
    pub fn store(&self) -> &SqlStore {
        &self.store
    }

    /// Serves on `listener` until `shutdown` completes and the requests
    /// in flight are answered, then closes the database.
    ///
    /// # Errors
    /// A failure to serve.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let polling = self.poller.map(|p| tokio::spawn(p.run(stopped.clone())));
        let pruning = self.pruner.map(|p| tokio::spawn(p.run(stopped.clone())));
        let reconciling = self
            .reconciler
            .map(|r| tokio::spawn(r.run(stopped.clone(), reconcile_round)));
        let resuming = tokio::spawn(self.resumer.run(stopped, resume_round));
        let shutdown = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let served = slavealloc_http_warp::serve_with(listener, self.routes, shutdown, self.limits).await;
        if let Some(polling) = polling {
            // It gives its lease up on the way out; a round in flight is
            // bounded by the poll timeout.
            if tokio::time::timeout(Duration::from_secs(30), polling).await.is_err() {
                tracing::warn!("the poller did not stop in time");
            }
        }
        if let Some(pruning) = pruning {
            pruning.abort();
        }
        resuming.abort();
        if let Some(reconciling) = reconciling {
            reconciling.abort();
        }
        served.context("while serving")?;
        self.store.close().await;
        Ok(())
    }
}

/// Deletes allocation entries older than `keep`, a batch at a time, every
/// ten minutes; every daemon runs it (two pruning at once only find less
/// to delete).
#[derive(Debug)]
struct Pruner {
    store: SqlStore,
    keep: Duration,
    readiness: Readiness,
}

/// Entries deleted per transaction: short enough that no allocation waits
/// behind it for long.
const PRUNE_BATCH: u32 = 500;

impl Pruner {
    async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut pause = Duration::from_secs(60);
        loop {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
            pause = Duration::from_secs(600);
            if self.readiness.check().is_err() {
                continue;
            }
            let before = SystemTime::now()
                .checked_sub(self.keep)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let mut pruned = 0;
            loop {
                match slavealloc_domain::InventoryStore::prune_allocations(&self.store, before, PRUNE_BATCH).await {
                    Ok(n) => {
                        pruned += n;
                        if n < u64::from(PRUNE_BATCH) || *stop.borrow() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot prune old allocation entries");
                        break;
                    }
                }
            }
            if pruned > 0 {
                tracing::info!(pruned, "old allocation entries pruned");
            }
        }
    }
}

/// A chore every daemon repeats every `every` while its database is ready:
/// resuming the holds whose end passed ([`resume_round`]), recounting the
/// per-silo loads ([`reconcile_round`]).
#[derive(Debug)]
struct Periodic {
    store: SqlStore,
    every: Duration,
    readiness: Readiness,
}

impl Periodic {
    async fn run<F, Fut>(self, mut stop: tokio::sync::watch::Receiver<bool>, mut round: F)
    where
        F: FnMut(SqlStore) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.every) => {}
                _ = stop.changed() => return,
            }
            if self.readiness.check().is_err() {
                continue;
            }
            round(self.store.clone()).await;
        }
    }
}

/// Brings back the masters and slaves whose hold has reached its end.
/// Every daemon runs it; the store resumes each hold once however many
/// race for it.
async fn resume_round(store: SqlStore) {
    match slavealloc_domain::LifecycleStore::resume_due(&store, SystemTime::now()).await {
        Ok(resumed) => {
            for h in resumed {
                tracing::info!(target = h.target.as_str(), id = h.target_id, note = %h.note, "hold ended: until reached");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot resume holds whose end passed"),
    }
}

/// `[database] reconcile_interval_s` when it is not set.
const DEFAULT_RECONCILE_S: u64 = 60;

/// Recounts the per-silo loads from `slaves` (where the store keeps them:
/// MariaDB, PostgreSQL), so that a write by someone else skews the balance
/// for at most one interval. Every allocating daemon runs it; a recount
/// that finds the counts right writes nothing.
async fn reconcile_round(store: SqlStore) {
    match store.reconcile_loads().await {
        Ok(0) => {}
        Ok(pools) => tracing::warn!(
            pools,
            "the per-silo loads differed from the slaves table (written by something other than \
             this daemon's allocations and API): recounted"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot recount the per-silo loads"),
    }
}

/// The configured database, checked in the background, or the demo's,
/// made and filled now.
async fn open_store(
    settings: &Settings,
    deadline: &Deadline,
) -> anyhow::Result<(SqlStore, Readiness, Option<tempfile::TempDir>)> {
    match &settings.db {
        Some(urls) => {
            let any: Vec<&str> = urls.iter().map(String::as_str).collect();
            let store = SqlStore::open_lazy_any(&any, settings.pool.clone()).with_context(|| {
                let shown: Vec<String> = urls.iter().map(|u| crate::redact::url(u)).collect();
                format!("while opening {}", shown.join(" "))
            })?;
            let readiness = Readiness::not_ready("the database schema has not been checked yet");
            let adapt = (!settings.deadline_configured).then(|| deadline.clone());
            tokio::spawn(prepare(store.clone(), readiness.clone(), adapt));
            Ok((store, readiness, None))
        }
        None => {
            let dir = tempfile::tempdir().context("while creating the demo's directory")?;
            let url = format!("sqlite://{}", dir.path().join("demo.db").display());
            let store = SqlStore::connect_with(&url, settings.pool.clone())
                .await
                .context("while creating the demo database")?;
            store
                .replace_all(&slavealloc_fixtures::sample_fleet())
                .await
                .context("while loading the sample fleet")?;
            tracing::info!(db = %url, "demo: the sample fleet in a temporary SQLite database, deleted at exit");
            Ok((store, Readiness::ready(), Some(dir)))
        }
    }
}

/// Reads the signing key, refusing one that group or others may read: the
/// key makes tacs every machine of the fleet runs.
fn read_signing_key(path: &Path) -> anyhow::Result<TacSigner> {
    let meta = std::fs::metadata(path).with_context(|| format!("while reading the signing key {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "the signing key {} is readable by group or others (mode {mode:04o}): chmod 600 it",
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let signer = TacSigner::from_pem_file(path).context("while reading the signing key")?;
    tracing::info!(key = %path.display(), "every tac is signed");
    Ok(signer)
}

/// Checks (and creates where missing) the schema, retrying with backoff
/// until it succeeds; marks the daemon ready then.
async fn prepare(store: SqlStore, readiness: Readiness, deadline: Option<Deadline>) {
    let mut delay = Duration::from_millis(250);
    loop {
        match store.ensure_schema().await {
            Ok(()) => {
                log_schema(&store).await;
                if let Some(deadline) = deadline {
                    adapt_deadline(&store, &deadline);
                }
                readiness.set_ready();
                tracing::info!("database ready");
                return;
            }
            Err(e) => {
                // Readiness reports it as "database unavailable: WHY": the
                // reason alone, so that it is said once.
                let why = match &e {
                    StoreError::Unavailable(why) => why.clone(),
                    other => format!("cannot prepare the database schema: {other}"),
                };
                tracing::warn!(error = %why, retry_in_ms = delay.as_millis() as u64, "database not ready");
                readiness.set_not_ready(why);
                tokio::time::sleep(delay).await;
                // Capped low so that a database that comes back is noticed
                // within a couple of seconds.
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// How much longer than its suspect timeout a Galera node's requests may
/// wait: the cluster needs about a second past the timeout to evict a dead
/// node and settle, and the commit that waited is then certified and may
/// need a retry.
const GALERA_DEADLINE_MARGIN: Duration = Duration::from_secs(4);

/// Raises the default deadline on a Galera node above the cluster's
/// suspect timeout: after a node dies, commits on every node wait that long
/// for the cluster to evict it, and a shorter deadline would answer 503 on
/// the healthy nodes.
fn adapt_deadline(store: &SqlStore, deadline: &Deadline) {
    if let Some(Cluster::Galera { suspect_timeout }) = store.cluster() {
        let wanted = suspect_timeout + GALERA_DEADLINE_MARGIN;
        if wanted > deadline.get() {
            deadline.set(wanted);
        }
        tracing::info!(
            suspect_timeout_ms = suspect_timeout.as_millis() as u64,
            deadline_ms = deadline.get().as_millis() as u64,
            "the database is a Galera node: requests wait past its suspect timeout"
        );
    }
}

/// Says which schema version the database is at, and warns when it is
/// newer than this build: during a rolling upgrade that is expected (the
/// migrations are additive), after one it means this daemon was missed.
async fn log_schema(store: &SqlStore) {
    match store.schema_status().await {
        Ok(status) if status.newer_than_this_build() => tracing::warn!(
            schema_version = status.version(),
            "the database has schema migrations this build does not know; serving it \
             (migrations are additive), but this daemon is older than its database: upgrade it"
        ),
        Ok(status) => tracing::info!(schema_version = status.version(), "database schema up to date"),
        Err(e) => tracing::warn!(error = %e, "cannot read the schema version"),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr; a second init (tests) is harmless.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = term.recv() => {},
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutting down: finishing the requests in flight");
}

/// Reads the store's connection pool for `/metrics`.
fn pool_state(store: SqlStore) -> slavealloc_http_warp::PoolStateFn {
    Arc::new(move || {
        let s = store.pool_stats();
        Some(slavealloc_http_warp::PoolState {
            size: s.size,
            idle: s.idle,
            max: s.max,
        })
    })
}

/// How long one batch's templates may render: the default budget, but at
/// most half the request deadline, so that a slave whose template is too
/// slow is told so (500 naming the template) before its request times out.
fn render_budget(deadline: Duration) -> Duration {
    DEFAULT_RENDER_BUDGET.min(deadline / 2)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(argv: &[&str]) -> ServeArgs {
        Cli::try_parse_from(std::iter::once("serve").chain(argv.iter().copied()))
            .unwrap()
            .serve
    }

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_fqdn_must_be_a_host_name() {
        let ok = resolve(
            &parse(&["--fqdn", "slavealloc.db.scl3.mozilla.com"]),
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(ok.fqdn, "slavealloc.db.scl3.mozilla.com");
        for bad in [
            "x\n# -*- coding: utf-7 -*-",
            "coding:utf-7",
            "a b",
            "",
            "-a.example",
            "a..b",
            &"a".repeat(64),
            &format!("{}.b", ["a"; 127].join(".")),
        ] {
            let e = resolve(&parse(&[&format!("--fqdn={bad}")]), FileConfig::default()).unwrap_err();
            let message = format!("{e:#}");
            assert!(
                message.contains("is not a host name") && !message.contains('\n'),
                "{bad:?}: {message}"
            );
            let e = resolve(&ServeArgs::default(), file(&format!("fqdn = {bad:?}"))).unwrap_err();
            assert!(format!("{e:#}").contains("fqdn"), "{bad:?}: {e:#}");
        }
    }

    #[test]
    fn defaults_without_flags_or_file() {
        let s = resolve(&ServeArgs::default(), FileConfig::default()).unwrap();
        assert_eq!(first_db(&s), Some(DEFAULT_DB));
        assert_eq!(s.listen, DEFAULT_LISTEN);
        assert_eq!(s.base_url, "/");
        assert!(s.ui && s.allocator);
        assert!(!s.tokens.required());
        assert!(s.pool.acquire_timeout < s.deadline);
        assert_eq!(s.pool.max_connections, SQLITE_CONNECTIONS);
        let mysql = resolve(&parse(&["--db", "mysql://db/x"]), FileConfig::default()).unwrap();
        assert_eq!(mysql.pool.max_connections, 10);
        let set = resolve(&ServeArgs::default(), file("[database]\nmax_connections = 5")).unwrap();
        assert_eq!(set.pool.max_connections, 5);
    }

    #[test]
    fn live_fleet_and_retention_settings() {
        let s = resolve(&ServeArgs::default(), FileConfig::default()).unwrap();
        assert_eq!(s.keep_allocations, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(s.balance, BalanceCount::Recorded);
        assert!(s.poll.enabled);
        assert_eq!(s.poll.interval, Duration::from_secs(30));
        let text = "[audit]\nallocations_days = 0\n[balance]\ncount = \"live\"\nlease = \"5m\"\n\
                    [poll]\ninterval = \"10s\"\njitter = \"0\"\n[poll.masters.bm09]\nurl = \"https://bm09.example.com/api/v2/workers\"\n";
        let s = resolve(&ServeArgs::default(), file(text)).unwrap();
        assert_eq!(s.keep_allocations, None, "0 keeps them forever");
        assert_eq!(
            s.balance,
            BalanceCount::Live {
                lease: Duration::from_secs(300)
            }
        );
        assert_eq!(
            (s.poll.interval, s.poll.options.jitter),
            (Duration::from_secs(10), Duration::ZERO)
        );
        assert_eq!(s.poll.urls["bm09"], "https://bm09.example.com/api/v2/workers");
        for bad in [
            "[balance]\ncount = \"magic\"",
            "[poll]\ninterval = \"soon\"",
            "[poll.masters.bm09]\nurl = \"ftp://x/\"",
            "[poll]\nauth_header = \"Authorization\"",
            "[poll]\nurl_template = \"http://{host}/\"",
        ] {
            assert!(resolve(&ServeArgs::default(), file(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_win_over_the_file() {
        let f = || {
            file(
                r#"db = "mysql://u:p@db/slavealloc"
                   listen = "0.0.0.0:1080"
                   open_writes = true
                   base_url = "/slavealloc"
                   no_ui = true
                   no_allocator = true"#,
            )
        };
        let s = resolve(&parse(&[]), f()).unwrap();
        assert_eq!(first_db(&s), Some("mysql://u:p@db/slavealloc"));
        assert_eq!(
            (s.listen.as_str(), s.base_url.as_str(), s.ui, s.allocator),
            ("0.0.0.0:1080", "/slavealloc", false, false)
        );
        let s = resolve(
            &parse(&[
                "--db",
                "sqlite:x.db",
                "--listen",
                "127.0.0.1:0",
                "--base-url",
                "/",
                "--no-ui=false",
                "--no-allocator=0",
            ]),
            f(),
        )
        .unwrap();
        assert_eq!(first_db(&s), Some("sqlite:x.db"));
        assert_eq!(
            (s.listen.as_str(), s.base_url.as_str(), s.ui, s.allocator),
            ("127.0.0.1:0", "/", true, true)
        );
        assert!(!resolve(&parse(&["--no-ui"]), FileConfig::default()).unwrap().ui);
    }

    /// The first database URL the settings name.
    fn first_db(s: &Settings) -> Option<&str> {
        s.db.as_ref().and_then(|urls| urls.first()).map(String::as_str)
    }

    #[test]
    fn several_servers_of_one_database_are_given_by_flag_or_file() {
        let flags = parse(&["--db", "postgres://a/x", "--db", "postgres://b/x"]);
        let s = resolve(&flags, FileConfig::default()).unwrap();
        assert_eq!(s.db.unwrap(), ["postgres://a/x", "postgres://b/x"]);
        let file: FileConfig = toml::from_str(r#"db = ["postgres://a/x", "postgres://b/x"]"#).unwrap();
        let s = resolve(&parse(&[]), file).unwrap();
        assert_eq!(s.db.unwrap(), ["postgres://a/x", "postgres://b/x"]);
        // A flag replaces the file's list as a whole.
        let file: FileConfig = toml::from_str(r#"db = ["postgres://a/x", "postgres://b/x"]"#).unwrap();
        let s = resolve(&parse(&["--db", "postgres://c/x"]), file).unwrap();
        assert_eq!(s.db.unwrap(), ["postgres://c/x"]);
    }

    #[test]
    fn a_configured_deadline_is_kept_on_a_cluster() {
        let s = resolve(&parse(&[]), FileConfig::default()).unwrap();
        assert!(!s.deadline_configured, "the default adapts to a Galera node");
        let file: FileConfig = toml::from_str("[database]\ndeadline_ms = 2500").unwrap();
        let s = resolve(&parse(&[]), file).unwrap();
        assert_eq!((s.deadline, s.deadline_configured), (Duration::from_millis(2500), true));
    }

    #[test]
    fn loads_are_recounted_every_minute_unless_configured() {
        let s = resolve(&parse(&[]), FileConfig::default()).unwrap();
        assert_eq!(s.reconcile_interval, Duration::from_secs(60));
        let file: FileConfig = toml::from_str("[database]\nreconcile_interval_s = 5").unwrap();
        let s = resolve(&parse(&[]), file).unwrap();
        assert_eq!(s.reconcile_interval, Duration::from_secs(5));
    }

    #[test]
    fn galera_sync_wait_defaults_to_causal_reads_and_can_be_set() {
        let s = resolve(&parse(&[]), FileConfig::default()).unwrap();
        assert_eq!(s.pool.galera_sync_wait, Some(1));
        let file: FileConfig = toml::from_str("[database]\ngalera_sync_wait = 0").unwrap();
        let s = resolve(&parse(&[]), file).unwrap();
        assert_eq!(s.pool.galera_sync_wait, Some(0));
        let file: FileConfig = toml::from_str("[database]\ngalera_sync_wait = 16").unwrap();
        let err = resolve(&parse(&[]), file).unwrap_err().to_string();
        assert!(err.contains("galera_sync_wait is a mask of 0 to 15"), "{err}");
    }

    #[test]
    fn the_fixture_files_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
        for (name, port) in [("production.toml", "1080"), ("staging.toml", "1079")] {
            let f = read_configs(&[root.join("slavealloc.toml"), root.join(name)]).unwrap();
            let s = resolve(&ServeArgs::default(), f).unwrap();
            assert!(s.listen.ends_with(port), "{name}: {}", s.listen);
            assert!(first_db(&s).unwrap().starts_with("mysql://"), "{name}");
            assert_eq!(
                s.pool.max_lifetime,
                Some(Duration::from_secs(400)),
                "{name}: pool_recycle"
            );
            assert_eq!(
                s.trusted_proxies,
                ["127.0.0.1", "::1"].map(|a| a.parse::<IpAddr>().unwrap()),
                "{name}"
            );
        }
    }

    #[test]
    fn an_instance_file_layers_over_the_base_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.toml");
        let over = dir.path().join("over.toml");
        std::fs::write(
            &base,
            "listen = \"127.0.0.1:1\"\nfqdn = \"base.example\"\n[database]\nmax_connections = 3\nidle_timeout_s = 9\n",
        )
        .unwrap();
        std::fs::write(&over, "listen = \"127.0.0.1:2\"\n[database]\nmax_connections = 7\n").unwrap();
        let s = resolve(
            &ServeArgs::default(),
            read_configs(&[base.clone(), over.clone()]).unwrap(),
        )
        .unwrap();
        assert_eq!((s.listen.as_str(), s.fqdn.as_str()), ("127.0.0.1:2", "base.example"));
        assert_eq!(s.pool.max_connections, 7, "the overlay's key wins");
        assert_eq!(
            s.pool.idle_timeout,
            Some(Duration::from_secs(9)),
            "the base's other keys stay"
        );
        // Flags (and so the environment) still win over both files.
        let flags = parse(&["--listen", "127.0.0.1:3"]);
        let s = resolve(&flags, read_configs(&[base, over.clone()]).unwrap()).unwrap();
        assert_eq!(s.listen, "127.0.0.1:3");
        // A mistake is named with its own file.
        std::fs::write(&over, "lisen = 1\n").unwrap();
        let err = format!("{:#}", read_configs(&[over]).unwrap_err());
        assert!(err.contains("over.toml") && err.contains("lisen"), "{err}");
    }

    #[test]
    fn trusted_proxies_come_from_flags_over_the_file_and_bad_ones_are_refused() {
        let f = || file(r#"trusted_proxies = ["10.0.0.1"]"#);
        let ip = |a: &str| a.parse::<IpAddr>().unwrap();
        assert_eq!(resolve(&parse(&[]), f()).unwrap().trusted_proxies, [ip("10.0.0.1")]);
        let s = resolve(&parse(&["--trusted-proxy", "127.0.0.1,::1"]), f()).unwrap();
        assert_eq!(s.trusted_proxies, [ip("127.0.0.1"), ip("::1")]);
        assert!(Cli::try_parse_from(["serve", "--trusted-proxy", "nginx.local"]).is_err());
        assert!(toml::from_str::<FileConfig>(r#"trusted_proxies = ["not-an-ip"]"#).is_err());
    }

    #[test]
    fn tokens_and_renderer_settings_come_from_the_file() {
        let s = resolve(
            &ServeArgs::default(),
            file(
                r#"[tac]
                   default_template = "buildbot-worker"
                   no_idleizer = ["panda-"]
                   [tokens]
                   relops = "0123456789abcdef0123""#,
            ),
        )
        .unwrap();
        assert!(s.tokens.required());
        assert_eq!(s.tac.no_idleizer, ["panda-"]);
        assert_eq!(s.tac.default_template.name(), "buildbot-worker");
        assert!(
            !format!("{s:?}").contains("0123456789abcdef0123"),
            "settings never show secrets"
        );
        let scoped = resolve(
            &ServeArgs::default(),
            file(
                r#"[tokens]
                   admin = "0123456789abcdef0123"
                   [tokens.buildduty]
                   secret = "fedcba9876543210fedc"
                   scope = "operator"
                   [tokens.bm01]
                   secret = "0a1b2c3d4e5f6a7b8c9d"
                   scope = "master""#,
            ),
        )
        .unwrap();
        assert_eq!(
            format!("{:?}", scoped.tokens),
            r#"{"admin": "admin", "bm01": "master", "buildduty": "operator"}"#
        );
        assert!(toml::from_str::<FileConfig>("[tokens.x]\nsecret = \"0123456789abcdef\"\nscope = \"root\"").is_err());
        let weak = resolve(&ServeArgs::default(), file("[tokens]\nrelops = \"pw\"")).unwrap_err();
        assert!(!format!("{weak:#}").contains("\"pw\""), "{weak:#}");
    }

    #[test]
    fn the_signing_key_comes_from_the_flag_over_the_tac_table() {
        let f = || file("[tac]\nsigning_key = \"/etc/slavealloc/tac.key\"\nno_idleizer = []");
        let s = resolve(&parse(&[]), f()).unwrap();
        assert_eq!(s.signing_key.as_deref(), Some(Path::new("/etc/slavealloc/tac.key")));
        assert!(s.tac.no_idleizer.is_empty());
        assert_eq!(s.tac.default_template, RendererConfig::default().default_template);
        let s = resolve(&parse(&["--signing-key", "k.pem"]), f()).unwrap();
        assert_eq!(s.signing_key.as_deref(), Some(Path::new("k.pem")));
        assert_eq!(resolve(&parse(&[]), FileConfig::default()).unwrap().signing_key, None);
        assert!(toml::from_str::<FileConfig>("[tac]\nsigning_kee = \"x\"").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_signing_key_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tac.key");
        let (private, _) = slavealloc_tac_signing::generate_key_pair().unwrap();
        std::fs::write(&path, private).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = format!("{:#}", read_signing_key(&path).unwrap_err());
        assert!(err.contains("readable by group or others (mode 0640)"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_signing_key(&path).is_ok());
        std::fs::write(&path, "not a key").unwrap();
        assert!(format!("{:#}", read_signing_key(&path).unwrap_err()).contains("private key"));
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        assert!(
            toml::from_str::<FileConfig>("lisen = \"x\"").is_err(),
            "typos are errors"
        );
        assert!(toml::from_str::<FileConfig>("[tac]\ndefault_template = \"nope\"").is_err());
        let dir = tempfile::tempdir().unwrap();
        let err = read_config(&dir.path().join("missing.toml")).unwrap_err();
        assert!(format!("{err:#}").contains("missing.toml"));
    }

    #[test]
    fn open_writes_on_a_reachable_address_need_saying_so() {
        let refused = resolve(&parse(&["--listen", "0.0.0.0:8010"]), FileConfig::default()).unwrap_err();
        let why = format!("{refused:#}");
        assert!(why.contains("open_writes") && why.contains("[tokens]"), "{why}");
        assert!(!why.contains('\n'), "one line: {why}");
        for listen in ["10.0.0.5:1080", "[::]:1080", "slavealloc.example.com:80"] {
            assert!(
                resolve(&parse(&["--listen", listen]), FileConfig::default()).is_err(),
                "{listen}"
            );
        }
        for listen in ["127.0.0.1:0", "127.0.0.2:1080", "[::1]:1080", "localhost:8010"] {
            resolve(&parse(&["--listen", listen]), FileConfig::default()).unwrap();
        }
        resolve(
            &parse(&["--listen", "0.0.0.0:8010", "--open-writes"]),
            FileConfig::default(),
        )
        .unwrap();
        resolve(&parse(&["--listen", "0.0.0.0:8010"]), file("open_writes = true")).unwrap();
        resolve(
            &parse(&["--listen", "0.0.0.0:8010"]),
            file("[tokens]\nrelops = \"0123456789abcdef0123\""),
        )
        .unwrap();
    }

    #[test]
    fn the_guard_allows_the_fqdn_the_listen_address_and_the_listed_names() {
        let s = resolve(
            &parse(&["--fqdn", "slavealloc.example.com", "--listen", "127.0.0.1:8010"]),
            file(
                r#"allowed_hosts = ["alias.example.com"]
                   trusted_origins = ["https://tools.example.com"]
                   [server]
                   header_read_timeout_ms = 2000
                   max_connections = 50"#,
            ),
        )
        .unwrap();
        for host in [
            "slavealloc.example.com",
            "alias.example.com:443",
            "127.0.0.1:8010",
            "localhost",
        ] {
            assert!(s.guard.allowed_hosts.allows(Some(host)), "{host}");
        }
        assert!(!s.guard.allowed_hosts.allows(Some("rebind.example.net")));
        assert_eq!(s.guard.trusted_origins, ["https://tools.example.com"]);
        assert_eq!(s.limits.header_read_timeout, Duration::from_secs(2));
        assert_eq!(s.limits.max_connections, 50);
        assert_eq!(s.limits.request_timeout, Limits::default().request_timeout);
        let any = resolve(&ServeArgs::default(), file(r#"allowed_hosts = ["*"]"#)).unwrap();
        assert!(any.guard.allowed_hosts.allows(Some("anything.example")));
        assert!(toml::from_str::<FileConfig>("[server]\nheader_timeout = 1").is_err());
    }

    #[test]
    fn gettac_admission_is_configured_in_server_and_zero_queued_is_refused() {
        let d = resolve(&ServeArgs::default(), file("")).unwrap();
        assert_eq!(d.admission, AdmissionLimits::default());
        let s = resolve(
            &ServeArgs::default(),
            file("[server]\ngettac_max_wait_ms = 250\ngettac_max_queued = 100"),
        )
        .unwrap();
        assert_eq!(s.admission.max_wait, Duration::from_millis(250));
        assert_eq!(s.admission.max_queued, 100);
        let zero = resolve(&ServeArgs::default(), file("[server]\ngettac_max_queued = 0")).unwrap_err();
        assert!(zero.to_string().contains("gettac_max_queued"), "{zero}");
    }

    #[test]
    fn demo_has_its_own_database() {
        let s = resolve(&parse(&["--demo"]), file("db = \"mysql://db/x\"")).unwrap();
        assert_eq!(s.db, None);
        assert!(resolve(&parse(&["--demo", "--db", "sqlite:x.db"]), FileConfig::default()).is_err());
    }
}
