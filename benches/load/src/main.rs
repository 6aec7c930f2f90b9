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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use hyper::{Body, Request};
use slavealloc_domain::DumpStore;
use slavealloc_fixtures::{generate_fleet, FleetSpec};
use slavealloc_load::checks::{read_back, slave_names, Answers, Spread};
use slavealloc_load::daemon::{binary, Daemon};
use slavealloc_store_sql::{Backend, SqlStore};
use slavealloc_store_sql_testing::TestDatabase;
use tokio::net::TcpStream;

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
    let bin = binary(args.bin.as_deref())?;
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
    let names = slave_names(&fleet);
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

    let daemon = Daemon::start(bin, &url, &[], &dir, "daemon.log").await?;
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
    let (slave_rows, master_rows) = read_back(&store).await.context("while reading the fleet back")?;
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
