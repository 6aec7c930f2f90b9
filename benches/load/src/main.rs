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
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use hyper::{Body, Request};
use slavealloc_domain::{DumpStore, Table};
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
    for slaves in &args.slaves {
        for db in &args.db {
            measure(&args, &bin, *slaves, *db).await?;
        }
    }
    Ok(())
}

/// One row of the table: `slaves` slaves on `db`.
async fn measure(args: &Args, bin: &Path, slaves: usize, db: Db) -> anyhow::Result<()> {
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
                return Ok(());
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
    let warm = run(
        daemon.addr,
        args.connections,
        warm_limit,
        gettac(&names),
        Some(names.len()),
    )
    .await;
    let health = run(daemon.addr, args.connections, seconds, |_| "/healthz".to_owned(), None).await;
    let tac = run(daemon.addr, args.connections, seconds, gettac(&names), None).await;
    let rss = daemon.peak_rss_kib()?;
    let batch = mean_batch(daemon.addr).await;
    daemon.stop().await?;
    // The counts the allocations kept through the storm and the steady
    // state must be what a recount from `slaves` gives.
    let store = SqlStore::connect(&url).await.context("while reopening the database")?;
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
    Ok(())
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
/// `path(i)` until `limit` has passed (or `count` requests are done).
async fn run<F>(addr: std::net::SocketAddr, connections: usize, limit: Duration, path: F, count: Option<usize>) -> Stats
where
    F: Fn(usize) -> String + Clone + Send + 'static,
{
    let start = Instant::now();
    let deadline = start + limit;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (path, next) = (path.clone(), Arc::clone(&next));
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
                    if hyper::body::to_bytes(resp.into_body()).await.is_err() || !ok {
                        errors += 1;
                        continue;
                    }
                    latencies.push(sent.elapsed());
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
            let r = run(addr, 1, Duration::from_millis(200), |_| "/healthz".to_owned(), Some(1)).await;
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
