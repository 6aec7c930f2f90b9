//! Load benchmark of `slavealloc serve` (README, "Performance"): on
//! generated fleets (10,000 slaves by default; `--slaves 5000,50000` runs
//! several sizes), with 64 keep-alive connections, measures /healthz and
//! /gettac requests per second, their ratio, gettac's median and
//! 99th-percentile latency, on SQLite, MariaDB and PostgreSQL, and the
//! daemon's peak RSS (`VmHWM` of /proc/PID/status).
//!
//! It runs the real release binary, as deployed (one log line per
//! allocation included), and generates load from one thread of its own,
//! so that the daemon keeps the machine's other core. Every phase is
//! bounded in time and every request goes to 127.0.0.1.
//!
//! It also checks that the daemon stayed correct under that load, from the
//! database once the daemon has stopped, and fails (exit status 1, saying
//! which run and what was wrong) if it did not:
//! - every 200's master recorded: each gettac answer (warm-up and measured
//!   phase) is read for the slave it names and the master host and port its
//!   `buildmaster_host` and `port` lines name, or for the disabled tac; for
//!   each slave, what its last 200 named must be its `current_masterid`
//!   (that master's fqdn and `pb_port`, or NULL for a disabled tac);
//! - spread ≤ 1: in each pool × silo with an enabled master, the slaves on
//!   the pool's enabled masters ([`slavealloc_domain::reports::silo_spreads`],
//!   locked slaves included, since the rule counts them) differ by at most
//!   one, and every enabled unlocked slave is on one of them. A master
//!   loaded beyond that by slaves locked to it alone is what the rule
//!   cannot even out (water-filling: the store-memory property tests), so
//!   it is reported but not a failure;
//! - the per-silo loads kept in `slave_loads` are what a recount from
//!   `slaves` gives (MariaDB and PostgreSQL; SQLite keeps them by triggers).
//!
//! The rule only promises the spread once every slave has asked since the
//! last change, which the warm-up (every slave once) ensures; answers are
//! ordered as they arrive, which is the order of their commits as long as
//! the fleet has more slaves than there are connections (a slave is asked
//! for again only a fleet's worth of requests later).
//!
//! ```text
//! cargo build --release -p slavealloc -p slavealloc-load
//! target/release/slavealloc-load                          # all three databases
//! target/release/slavealloc-load --db sqlite --seconds 5
//! target/release/slavealloc-load --slaves 5000,50000 --seconds 5
//! ```
//! MariaDB and PostgreSQL are found through `SLAVEALLOC_TEST_MYSQL`
//! (default `mysql://root@127.0.0.1:3306`) and `SLAVEALLOC_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432`); the benchmark creates its
//! own databases and drops them afterwards.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use hyper::{Body, Request};
use slavealloc_domain::reports::{silo_of, silo_spreads};
use slavealloc_domain::{DumpStore, FixedHost, Inventory, Row, SlaveFilter, Table, Value};
use slavealloc_fixtures::{generate_fleet, FleetSpec};
use slavealloc_store_sql::{Backend, SqlStore};
use slavealloc_store_sql_testing::TestDatabase;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Db {
    Sqlite,
    Mysql,
    Postgres,
}

impl Db {
    fn label(self) -> &'static str {
        match self {
            Db::Sqlite => "SQLite",
            Db::Mysql => "MariaDB",
            Db::Postgres => "PostgreSQL",
        }
    }
}

/// Load benchmark of the slavealloc daemon.
#[derive(Debug, Parser)]
struct Args {
    /// Databases to run against, in order.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,mysql,postgres")]
    db: Vec<Db>,
    /// Fleet sizes to run, in order (slaves in each generated fleet).
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    slaves: Vec<usize>,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds each measured phase lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The slavealloc binary [default: the one beside this program]
    #[arg(long)]
    bin: Option<PathBuf>,
}

/// What one phase measured.
#[derive(Debug)]
struct Stats {
    ok: usize,
    errors: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Stats {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("slavealloc"),
    };
    if !bin.exists() {
        bail!("{} not found: cargo build --release -p slavealloc", bin.display());
    }
    println!(
        "{} connections; {} s per phase; every slave asks once first (a boot storm), then the fleet is running",
        args.connections, args.seconds
    );
    println!(
        "| fleet | database | /healthz req/s | gettac req/s | gettac/healthz | gettac p50 | gettac p99 | errors | peak RSS |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut failed = Vec::new();
    for slaves in &args.slaves {
        for db in &args.db {
            failed.extend(measure(&args, &bin, *slaves, *db).await?);
        }
    }
    if !failed.is_empty() {
        bail!("the daemon was wrong under load:\n  {}", failed.join("\n  "));
    }
    Ok(())
}

/// One row of the table: `slaves` slaves on `db`, then its checks; returns
/// what the checks found wrong.
async fn measure(args: &Args, bin: &Path, slaves: usize, db: Db) -> anyhow::Result<Vec<String>> {
    let spec = FleetSpec::with_slaves(slaves);
    let fleet = generate_fleet(&spec);
    let names: Arc<Vec<String>> = Arc::new(
        fleet
            .rows(Table::Slaves)
            .iter()
            .filter_map(|r| r.get("name").and_then(|v| v.as_text()).map(str::to_owned))
            .collect(),
    );
    let fleet_label = format!("{slaves} slaves, {} masters", spec.pools * spec.masters_per_pool);
    let dir = tempfile_dir()?;
    let (url, test_db) = match db {
        Db::Sqlite => (format!("sqlite://{}", dir.join("load.db").display()), None),
        Db::Mysql | Db::Postgres => {
            let backend = if db == Db::Mysql {
                Backend::MySql
            } else {
                Backend::Postgres
            };
            let Some(t) = TestDatabase::create(backend).await else {
                println!("| {fleet_label} | {} | (server unreachable: skipped) |", db.label());
                return Ok(Vec::new());
            };
            (t.url().to_owned(), Some(t))
        }
    };
    let store = SqlStore::connect(&url).await.context("while creating the schema")?;
    store.replace_all(&fleet).await.context("while loading the fleet")?;
    store.close().await;

    let daemon = Daemon::start(bin, &url, &dir).await?;
    let seconds = Duration::from_secs(args.seconds);
    // Warm-up: every slave asks once (a boot storm: most allocations
    // write), then the measured phases. Bounded by a rate no backend
    // falls below (100 gettacs a second), so a large fleet is not cut off.
    let warm_limit = Duration::from_secs(60).max(Duration::from_secs((slaves / 100) as u64));
    // Every 200 of both gettac phases is read, the last one of each slave kept.
    let answers = Arc::new(Mutex::new(Answers::new(Arc::clone(&names))));
    let warm = run(
        daemon.addr,
        args.connections,
        warm_limit,
        gettac(&names),
        Some(names.len()),
        Some(Arc::clone(&answers)),
    )
    .await;
    let health = run(
        daemon.addr,
        args.connections,
        seconds,
        |_| "/healthz".to_owned(),
        None,
        None,
    )
    .await;
    let tac = run(
        daemon.addr,
        args.connections,
        seconds,
        gettac(&names),
        None,
        Some(Arc::clone(&answers)),
    )
    .await;
    let rss = daemon.peak_rss_kib()?;
    let batch = mean_batch(daemon.addr).await;
    daemon.stop().await?;
    // The counts the allocations kept through the storm and the steady
    // state must be what a recount from `slaves` gives.
    let store = SqlStore::connect(&url).await.context("while reopening the database")?;
    let inventory = Inventory::new(
        Arc::new(store.clone()),
        Arc::new(FixedHost {
            now: SystemTime::now(),
            fqdn: "load".to_owned(),
        }),
    );
    // Every slave, denormalized as the reports read them (the
    // decommissioned environment is a silo of its own).
    let every = SlaveFilter {
        include_decomm: true,
        ..SlaveFilter::default()
    };
    let slave_rows = inventory
        .list(Table::Slaves, &every)
        .await
        .context("while reading slaves")?;
    let master_rows = inventory
        .store()
        .list(Table::Masters)
        .await
        .context("while reading masters")?;
    let wrong = store.reconcile_loads().await.context("while recounting the loads")?;
    store.close().await;
    if let Some(t) = test_db {
        t.destroy().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "| {fleet_label} | {} | {:.0} | {:.0} | {:.2} | {:.2} ms | {:.2} ms | {} | {:.1} MiB |",
        db.label(),
        health.rate(),
        tac.rate(),
        tac.rate() / health.rate(),
        tac.p50.as_secs_f64() * 1e3,
        tac.p99.as_secs_f64() * 1e3,
        health.errors + tac.errors + warm.errors,
        rss as f64 / 1024.0
    );
    let mut failed = Vec::new();
    let run_label = format!("({db:?}, {slaves})");
    let answers = std::mem::take(&mut *answers.lock().unwrap_or_else(PoisonError::into_inner));
    let recorded = answers.check(&slave_rows, &master_rows);
    eprintln!("  {run_label} every 200's master recorded: {}", recorded.line());
    if !recorded.ok() {
        failed.push(format!("{run_label} every 200's master recorded: {}", recorded.line()));
    }
    eprintln!(
        "  {run_label} reading the 200s: {} answers, {:.0} ns each ({:.1} % of the gettac phases)",
        answers.read,
        answers.cost.as_secs_f64() * 1e9 / answers.read.max(1) as f64,
        answers.cost.as_secs_f64() * 100.0 / (warm.elapsed + tac.elapsed).as_secs_f64()
    );
    let spread = Spread::check(&slave_rows, &master_rows);
    eprintln!("  {run_label} spread ≤ 1: {}", spread.line());
    if !spread.ok() {
        failed.push(format!("{run_label} spread ≤ 1: {}", spread.line()));
    }
    if db != Db::Sqlite && wrong != 0 {
        failed.push(format!("{run_label} per-silo loads WRONG in {wrong} pools"));
    }
    eprintln!("  ({db:?}, {slaves}) mean group-commit batch: {batch:.1} requests per transaction");
    eprintln!(
        "  ({db:?}, {slaves}) per-silo loads after the run: {}",
        if db == Db::Sqlite {
            "kept by triggers".to_owned()
        } else if wrong == 0 {
            "exact (a recount from slaves changed nothing)".to_owned()
        } else {
            format!("WRONG in {wrong} pools")
        }
    );
    eprintln!(
        "  ({db:?}, {slaves}) warm-up: {} gettacs in {:.2} s ({:.0}/s, p50 {:.2} ms, p99 {:.2} ms)",
        warm.ok,
        warm.elapsed.as_secs_f64(),
        warm.rate(),
        warm.p50.as_secs_f64() * 1e3,
        warm.p99.as_secs_f64() * 1e3
    );
    Ok(failed)
}

/// Requests per group-commit transaction so far, from /metrics.
async fn mean_batch(addr: std::net::SocketAddr) -> f64 {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return f64::NAN;
    };
    let Ok((mut sender, conn)) = hyper::client::conn::handshake(stream).await else {
        return f64::NAN;
    };
    tokio::spawn(conn);
    let Ok(req) = Request::get("/metrics").header("host", "load").body(Body::empty()) else {
        return f64::NAN;
    };
    let Ok(resp) = sender.send_request(req).await else {
        return f64::NAN;
    };
    let Ok(body) = hyper::body::to_bytes(resp.into_body()).await else {
        return f64::NAN;
    };
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    value("slavealloc_allocation_batch_size_sum ") / value("slavealloc_allocation_batch_size_count ")
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("slavealloc-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Request `i` asks for slave `i mod n`: every slave in turn, as a boot
/// storm would.
fn gettac(names: &Arc<Vec<String>>) -> impl Fn(usize) -> String + Clone + Send + 'static {
    let names = Arc::clone(names);
    move |i| format!("/gettac/{}", names[i % names.len()])
}

/// `connections` workers on keep-alive connections send requests for
/// `path(i)` until `limit` has passed (or `count` requests are done); each
/// 200's body goes to `answers`, if given, as request `i`'s.
async fn run<F>(
    addr: std::net::SocketAddr,
    connections: usize,
    limit: Duration,
    path: F,
    count: Option<usize>,
    answers: Option<Arc<Mutex<Answers>>>,
) -> Stats
where
    F: Fn(usize) -> String + Clone + Send + 'static,
{
    let start = Instant::now();
    let deadline = start + limit;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (path, next, answers) = (path.clone(), Arc::clone(&next), answers.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            'connect: while Instant::now() < deadline {
                let Ok(stream) = TcpStream::connect(addr).await else {
                    errors += 1;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let Ok((mut sender, conn)) = hyper::client::conn::handshake(stream).await else {
                    errors += 1;
                    continue;
                };
                tokio::spawn(conn);
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if count.is_some_and(|c| i >= c) {
                        break 'connect;
                    }
                    let req = Request::get(path(i)).header("host", "load").body(Body::empty());
                    let Ok(req) = req else { break 'connect };
                    let sent = Instant::now();
                    let Ok(resp) = sender.send_request(req).await else {
                        errors += 1;
                        continue 'connect;
                    };
                    let ok = resp.status().is_success();
                    let body = match hyper::body::to_bytes(resp.into_body()).await {
                        Ok(body) if ok => body,
                        _ => {
                            errors += 1;
                            continue;
                        }
                    };
                    latencies.push(sent.elapsed());
                    if let Some(answers) = &answers {
                        let read = Instant::now();
                        let mut a = answers.lock().unwrap_or_else(PoisonError::into_inner);
                        a.note(i, &body);
                        a.cost += read.elapsed();
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        if let Ok((l, e)) = w.await {
            all.extend(l);
            errors += e;
        }
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    let at = |q: usize| all.get(all.len() * q / 100).copied().unwrap_or_default();
    Stats {
        ok: all.len(),
        errors,
        elapsed,
        p50: at(50),
        p99: at(99),
    }
}

/// What a gettac answer names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    /// The master of this index of [`Answers::masters`].
    Master(usize),
    /// The disabled tac: no master.
    Disabled,
}

/// The gettac 200s as they arrive: per slave, what the last one named.
#[derive(Debug, Default)]
struct Answers {
    /// The fleet's slaves; request `i` asks for `names[i % len]`.
    names: Arc<Vec<String>>,
    /// The masters (host, port) answers named so far: a fleet has few, so
    /// each answer costs a short search rather than an allocation.
    masters: Vec<(String, u16)>,
    /// Per slave (index in `names`), what its last 200 named.
    last: Vec<Option<Named>>,
    /// 200s read.
    read: usize,
    /// 200s that named another slave than the one asked for, or could not
    /// be read, with the first few of them.
    bad: usize,
    bad_examples: Vec<String>,
    /// Time spent in [`Answers::note`], to show that it is small.
    cost: Duration,
}

/// One enabled slave's tac, as far as the checks read it.
#[derive(Debug, PartialEq, Eq)]
struct TacMaster<'a> {
    slave: &'a str,
    host: &'a str,
    port: u16,
}

/// Reads an answered tac: `Some(None)` for the disabled tac, `Some(Some(_))`
/// for an enabled slave's (`slavename` or `workername`, `buildmaster_host`
/// and `port` assignments, as the templates of adapters/tac-minijinja write
/// them, values as Python literals), `None` for anything else. A few
/// substring searches from the start of the text (the assignments come
/// right after the header): no regex, no allocation.
fn read_tac(body: &[u8]) -> Option<Option<TacMaster<'_>>> {
    let text = std::str::from_utf8(body).ok()?;
    if !text.starts_with("# AUTOMATICALLY GENERATED - DO NOT MODIFY\n") {
        return None;
    }
    let value = |key: &str| {
        let at = text.find(key)? + key.len();
        let rest = &text[at..];
        Some(rest[..rest.find('\n').unwrap_or(rest.len())].trim_end())
    };
    let Some(host) = value("\nbuildmaster_host = ") else {
        return text.contains("SLAVE DISABLED; NOT STARTING").then_some(None);
    };
    let slave = value("\nslavename = ").or_else(|| value("\nworkername = "))?;
    Some(Some(TacMaster {
        slave: python_str(slave)?,
        host: python_str(host)?,
        port: value("\nport = ")?.parse().ok()?,
    }))
}

/// The text of a Python string literal without escapes (`'x'` or `"x"`).
fn python_str(literal: &str) -> Option<&str> {
    let quote = literal.chars().next().filter(|q| *q == '\'' || *q == '"')?;
    let inner = literal.strip_prefix(quote)?.strip_suffix(quote)?;
    (!inner.contains(['\\', quote])).then_some(inner)
}

impl Answers {
    fn new(names: Arc<Vec<String>>) -> Self {
        Self {
            last: vec![None; names.len()],
            names,
            ..Self::default()
        }
    }

    /// Request `i` was answered 200 with `body`.
    fn note(&mut self, i: usize, body: &[u8]) {
        self.read += 1;
        let k = i % self.names.len().max(1);
        let asked = self.names.get(k).map_or("", String::as_str);
        let named = match read_tac(body) {
            Some(None) => Named::Disabled,
            Some(Some(tac)) if tac.slave == asked => {
                let known = self.masters.iter().position(|(h, p)| h == tac.host && *p == tac.port);
                Named::Master(known.unwrap_or_else(|| {
                    self.masters.push((tac.host.to_owned(), tac.port));
                    self.masters.len() - 1
                }))
            }
            other => {
                self.bad += 1;
                if self.bad_examples.len() < 3 {
                    let what = match other {
                        Some(Some(tac)) => format!("named slave {}", tac.slave),
                        _ => format!(
                            "unreadable: {:?}",
                            String::from_utf8_lossy(&body[..body.len().min(120)])
                        ),
                    };
                    self.bad_examples.push(format!("the 200 for {asked} {what}"));
                }
                return;
            }
        };
        if let Some(last) = self.last.get_mut(k) {
            *last = Some(named);
        }
    }

    /// Compares each slave's last 200 with its `current_masterid` in
    /// these slave and master rows.
    fn check(&self, slaves: &[Row], masters: &[Row]) -> Recorded {
        let int = |r: &Row, c: &str| r.get(c).and_then(Value::as_int);
        let text = |r: &Row, c: &str| r.get(c).and_then(Value::as_text).unwrap_or_default().to_owned();
        let master_of: HashMap<i64, (String, u16)> = masters
            .iter()
            .filter_map(|m| {
                let port = u16::try_from(int(m, "pb_port")?).ok()?;
                Some((int(m, "masterid")?, (text(m, "fqdn"), port)))
            })
            .collect();
        let in_db: HashMap<String, Option<i64>> = slaves
            .iter()
            .map(|s| (text(s, "name"), int(s, "current_masterid")))
            .collect();
        let mut out = Recorded {
            bad_answers: self.bad,
            examples: self.bad_examples.clone(),
            ..Recorded::default()
        };
        let show = |m: Option<&(String, u16)>| m.map_or("no master".to_owned(), |(h, p)| format!("{h}:{p}"));
        for (name, last) in self.names.iter().zip(&self.last) {
            let Some(last) = last else {
                out.unanswered += 1;
                continue;
            };
            out.checked += 1;
            let expected = match last {
                Named::Master(m) => self.masters.get(*m),
                Named::Disabled => None,
            };
            let Some(current) = in_db.get(name).copied() else {
                out.mismatches += 1;
                out.examples.push(format!("{name} is not in the database"));
                continue;
            };
            let recorded = current.and_then(|id| master_of.get(&id));
            if recorded != expected || (current.is_some() && recorded.is_none()) {
                out.mismatches += 1;
                if out.examples.len() < 5 {
                    let db = current.map_or_else(
                        || "no master".to_owned(),
                        |id| {
                            master_of
                                .get(&id)
                                .map_or(format!("unknown master {id}"), |m| show(Some(m)))
                        },
                    );
                    out.examples.push(format!(
                        "{name}: last 200 named {}, the database has {db}",
                        show(expected)
                    ));
                }
            }
        }
        out
    }
}

/// What [`Answers::check`] found.
#[derive(Debug, Default)]
struct Recorded {
    checked: usize,
    mismatches: usize,
    /// Slaves without a 200 (an error on each request for them).
    unanswered: usize,
    bad_answers: usize,
    examples: Vec<String>,
}

impl Recorded {
    fn ok(&self) -> bool {
        self.mismatches == 0 && self.bad_answers == 0 && self.checked > 0
    }

    fn line(&self) -> String {
        let unanswered = match self.unanswered {
            0 => String::new(),
            n => format!(", {n} without a 200 unchecked"),
        };
        if self.ok() {
            format!("yes ({} slaves checked{unanswered})", self.checked)
        } else {
            format!(
                "NO: {} of {} slaves recorded another master than their last 200 named, {} 200s named another slave or were unreadable{unanswered}; {}",
                self.mismatches,
                self.checked,
                self.bad_answers,
                self.examples.join("; ")
            )
        }
    }
}

/// The spread of every pool × silo, as the allocation rule keeps it.
#[derive(Debug, Default)]
struct Spread {
    /// Groups whose pool has an enabled master.
    groups: usize,
    /// Largest spread over a group's enabled masters that hold one of its
    /// balanced (enabled, unlocked) slaves, from the least loaded enabled
    /// master.
    worst: u64,
    /// Largest spread over all of a group's enabled masters, as the silos
    /// report shows it (locked slaves can make it larger than `worst`).
    worst_reported: u64,
    /// Groups over 1 only because of slaves locked to a master.
    locked_only: usize,
    /// Balanced slaves on no enabled master of their pool.
    stranded: usize,
    examples: Vec<String>,
}

impl Spread {
    /// Spreads from denormalized slave rows and plain master rows. The
    /// rule counts every slave of the pool × silo on a master as its load,
    /// locked ones included, and moves only the enabled unlocked ones; so
    /// once all have asked, every enabled master that holds one of those
    /// carries at most one more than the least loaded enabled master
    /// (exactly spread ≤ 1 when no locked slave weighs on one).
    fn check(slaves: &[Row], masters: &[Row]) -> Spread {
        let int = |r: &Row, c: &str| r.get(c).and_then(Value::as_int);
        let text = |r: &Row, c: &str| r.get(c).and_then(Value::as_text).unwrap_or_default().to_owned();
        let by_nickname: HashMap<String, &Row> = masters.iter().map(|m| (text(m, "nickname"), m)).collect();
        let mut members: BTreeMap<(String, Vec<String>), Vec<&Row>> = BTreeMap::new();
        for s in slaves {
            members.entry((text(s, "pool"), silo_of(s))).or_default().push(s);
        }
        let balanced = |s: &Row| s.get("enabled") == Some(&Value::Bool(true)) && int(s, "locked_masterid").is_none();
        let mut out = Spread::default();
        for g in silo_spreads(slaves, masters) {
            let enabled: Vec<_> = g
                .masters
                .iter()
                .filter(|m| m.enabled)
                .filter_map(|m| Some((m, int(by_nickname.get(&m.nickname)?, "masterid")?)))
                .collect();
            let Some(min) = enabled.iter().map(|(m, _)| m.slaves).min() else {
                continue;
            };
            out.groups += 1;
            out.worst_reported = out.worst_reported.max(g.spread);
            let group = members
                .get(&(g.pool.clone(), g.silo.clone()))
                .map_or(&[][..], Vec::as_slice);
            let holds_balanced = |id: i64| {
                group
                    .iter()
                    .any(|s| balanced(s) && int(s, "current_masterid") == Some(id))
            };
            let worst = enabled
                .iter()
                .filter(|(_, id)| holds_balanced(*id))
                .map(|(m, _)| m.slaves - min)
                .max()
                .unwrap_or(0);
            out.worst = out.worst.max(worst);
            if g.spread > 1 && worst <= 1 {
                out.locked_only += 1;
            }
            let stranded = group
                .iter()
                .filter(|s| balanced(s))
                .filter(|s| !int(s, "current_masterid").is_some_and(|c| enabled.iter().any(|(_, id)| *id == c)))
                .count();
            out.stranded += stranded;
            if (worst > 1 || stranded > 0) && out.examples.len() < 5 {
                let loads: Vec<String> = g
                    .masters
                    .iter()
                    .map(|m| {
                        format!(
                            "{}{}={}",
                            m.nickname,
                            if m.enabled { "" } else { " (disabled)" },
                            m.slaves
                        )
                    })
                    .collect();
                out.examples.push(format!(
                    "{} {}: {}, {} unallocated, {} elsewhere, {stranded} enabled unlocked slaves on no enabled master",
                    g.pool,
                    g.silo.join("/"),
                    loads.join(" "),
                    g.unallocated,
                    g.elsewhere
                ));
            }
        }
        out
    }

    fn ok(&self) -> bool {
        self.worst <= 1 && self.stranded == 0 && self.groups > 0
    }

    fn line(&self) -> String {
        let locked = match self.locked_only {
            0 => String::new(),
            n => format!(
                "; {n} groups over 1 (at most {}) only by slaves locked to their master",
                self.worst_reported
            ),
        };
        if self.ok() {
            format!(
                "yes (worst spread {} over {} (pool, silo) groups{locked})",
                self.worst, self.groups
            )
        } else {
            format!(
                "NO: worst spread {} over {} (pool, silo) groups, {} enabled unlocked slaves on no enabled master of their pool{locked}; {}",
                self.worst,
                self.groups,
                self.stranded,
                self.examples.join("; ")
            )
        }
    }
}

/// The daemon under test.
struct Daemon {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Daemon {
    async fn start(bin: &Path, url: &str, dir: &Path) -> anyhow::Result<Daemon> {
        let log = std::fs::File::create(dir.join("daemon.log"))?;
        let mut child = Command::new(bin)
            .args(["serve", "--db", url, "--listen", "127.0.0.1:0", "--no-ui"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("while starting the daemon")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .context("the daemon did not start within 60 s")??
                .context("the daemon exited before listening")?;
            if let Some(a) = line.strip_prefix("listening on http://") {
                break a.parse()?;
            }
        };
        // Keep draining the log (one line per allocation), as a deployed
        // daemon's journal would.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        // Ready once the schema check has passed.
        let start = Instant::now();
        loop {
            let r = run(
                addr,
                1,
                Duration::from_millis(200),
                |_| "/healthz".to_owned(),
                Some(1),
                None,
            )
            .await;
            if r.ok == 1 {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("the daemon's database was not ready within 30 s");
            }
        }
        Ok(Daemon { child, addr })
    }

    fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("the daemon has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc/PID/status")
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The renderer's golden tacs, so that the reader follows the templates.
    const GOLDEN: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../adapters/tac-minijinja/tests/golden/"
    );

    fn golden(name: &str) -> Vec<u8> {
        std::fs::read(format!("{GOLDEN}{name}")).expect("a golden tac of adapters/tac-minijinja")
    }

    #[test]
    fn both_templates_name_their_slave_and_master() {
        for (name, slave) in [
            ("buildslave.tac", "tst-linux64-ec2-001"),
            ("buildbot-worker.tac", "tst-linux64-ec2-001"),
            ("buildslave-no-idleizer.tac", "panda-0123"),
        ] {
            let master = TacMaster {
                slave,
                host: "bm01.build.example.com",
                port: 9001,
            };
            assert_eq!(read_tac(&golden(name)), Some(Some(master)), "{name}");
        }
        assert_eq!(read_tac(&golden("disabled.tac")), Some(None));
    }

    #[test]
    fn anything_else_is_unreadable() {
        let tac = golden("buildslave.tac");
        assert_eq!(read_tac(b"no allocation available"), None);
        assert_eq!(read_tac(&tac[1..]), None, "no header");
        let text = String::from_utf8(tac).expect("UTF-8");
        let escaped = text.replace("'tst-linux64-ec2-001'", "'tst\\x41'");
        assert_eq!(read_tac(escaped.as_bytes()), None, "an escape is not read");
        let no_port = text.replace("\nport = 9001", "\nport = x");
        assert_eq!(read_tac(no_port.as_bytes()), None);
    }

    #[test]
    fn the_last_answer_of_each_slave_is_kept() {
        let names = Arc::new(vec!["a".to_owned(), "b".to_owned()]);
        let mut answers = Answers::new(names);
        let tac = |slave: &str, host: &str| {
            format!(
                "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n#\n\nbuildmaster_host = '{host}'\nport = 9001\nslavename = '{slave}'\n"
            )
        };
        answers.note(0, tac("a", "m1").as_bytes());
        answers.note(1, tac("b", "m1").as_bytes());
        answers.note(2, tac("a", "m2").as_bytes());
        answers.note(3, tac("a", "m2").as_bytes());
        assert_eq!(answers.last, [Some(Named::Master(1)), Some(Named::Master(0))]);
        assert_eq!((answers.read, answers.bad), (4, 1), "request 3 asked for b");
    }

    fn row(cells: &[(&str, Value)]) -> Row {
        cells.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    fn master(id: i64, enabled: bool) -> Row {
        row(&[
            ("masterid", Value::Int(id)),
            ("nickname", Value::Text(format!("bm{id}"))),
            ("fqdn", Value::Text(format!("bm{id}.example.com"))),
            ("pb_port", Value::Int(9000 + id)),
            ("poolid", Value::Int(1)),
            ("enabled", Value::Bool(enabled)),
        ])
    }

    /// A denormalized slave of pool 1, silo `ubuntu`.
    fn slave(n: usize, on: Option<i64>, locked: bool) -> Row {
        let id = |v: Option<i64>| v.map_or(Value::Null, Value::Int);
        let mut r = row(&[
            ("name", Value::Text(format!("s{n}"))),
            ("poolid", Value::Int(1)),
            ("pool", Value::Text("pool".into())),
            ("distro", Value::Text("ubuntu".into())),
            ("enabled", Value::Bool(true)),
            ("current_masterid", id(on)),
            ("locked_masterid", id(on.filter(|_| locked))),
        ]);
        r.insert("environment".into(), Value::Text("prod".into()));
        r
    }

    #[test]
    fn the_spread_is_what_the_rule_can_balance() {
        let masters = [master(1, true), master(2, true), master(3, false)];
        let free = [
            slave(1, Some(1), false),
            slave(2, Some(1), false),
            slave(3, Some(2), false),
        ];
        let check = |extra: &[Row]| Spread::check(&[&free[..], extra].concat(), &masters);
        assert!(check(&[]).ok(), "2 and 1");
        let three = check(&[slave(4, Some(1), false)]);
        assert_eq!((three.ok(), three.worst), (false, 2), "3 and 1");
        let locked = check(&[
            slave(4, Some(1), true),
            slave(5, Some(1), true),
            slave(6, Some(1), true),
        ]);
        assert!(!locked.ok(), "bm1 holds balanced slaves besides its locked ones");
        let only_locked = Spread::check(
            &[
                slave(1, Some(1), true),
                slave(2, Some(1), true),
                slave(4, Some(1), true),
                slave(3, Some(2), false),
            ],
            &masters,
        );
        assert!(only_locked.ok(), "{}", only_locked.line());
        assert_eq!((only_locked.worst_reported, only_locked.locked_only), (2, 1));
        let disabled_master = check(&[slave(4, Some(3), false)]);
        assert_eq!(
            (disabled_master.ok(), disabled_master.stranded),
            (false, 1),
            "on a disabled master"
        );
        assert_eq!(check(&[]).groups, 1);
    }

    #[test]
    fn each_slave_must_hold_what_its_last_200_named() {
        let names = Arc::new(vec!["s1".to_owned(), "s2".to_owned()]);
        let mut answers = Answers::new(names);
        let tac = |slave: &str, m: i64| {
            format!(
                "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n#\n\nbuildmaster_host = 'bm{m}.example.com'\nport = {}\nslavename = '{slave}'\n",
                9000 + m
            )
        };
        answers.note(0, tac("s1", 1).as_bytes());
        let masters = [master(1, true), master(2, true)];
        let first = answers.check(&[slave(1, Some(1), false), slave(2, Some(2), false)], &masters);
        assert_eq!(
            (first.checked, first.unanswered, first.ok()),
            (1, 1, true),
            "{}",
            first.line()
        );
        answers.note(1, &golden("disabled.tac"));
        let wrong = answers.check(&[slave(1, Some(2), false), slave(2, Some(2), false)], &masters);
        assert_eq!(
            (wrong.checked, wrong.mismatches, wrong.ok()),
            (2, 2, false),
            "{}",
            wrong.line()
        );
    }
}
