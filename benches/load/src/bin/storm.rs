//! Boot-storm benchmark (issue 14, "A calm boot storm"): a fleet rebooting
//! at once through a real nginx (the shipped cluster site) over three
//! release daemons on one MariaDB server.
//!
//! Every slave is one task that behaves as `runslave` does at boot: a new
//! connection, `GET /gettac/<name>`, and on a 503 or 429 with
//! `Retry-After` a pause of that long plus up to a second of its own before
//! asking again; any other failure is an error. Two scenarios:
//!
//! - **calm**: 10,000 slaves whose boots finish at random instants over
//!   `--window-s` seconds (a data centre powering up); every slave must be
//!   answered within 10 s of the first boot.
//! - **over capacity**: 20,000 slaves all at once, daemons with a
//!   deliberately small database pool (one connection each,
//!   `--over-db-connections`) and a short admission queue (200 ms,
//!   `--over-max-wait-ms`):
//!   the daemons must pace the storm with `Retry-After` so that every
//!   slave gets its tac in the end, with no error.
//!
//! After each, the bench checks what every 200 named against the database
//! (each slave's last tac names the master recorded for it) and the spread
//! of every pool × silo, and sums `/metrics` of the daemons: admitted,
//! refused, and the most requests queued at once (sampled every 50 ms).
//! A violated check makes it exit 1.
//!
//! ```text
//! cargo build --release -p slavealloc -p slavealloc-load
//! target/release/slavealloc-storm
//! target/release/slavealloc-storm --scenario calm --window-s 2
//! ```
//! Needs nginx on PATH and MariaDB at `SLAVEALLOC_TEST_MYSQL` (default
//! `mysql://root@127.0.0.1:3306`); the bench creates its own database and
//! drops it afterwards.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use hyper::{Body, Request};
use rand::{Rng, SeedableRng};
use slavealloc_domain::DumpStore;
use slavealloc_e2e::nginx::{cluster_site, Nginx};
use slavealloc_fixtures::{generate_fleet, FleetSpec};
use slavealloc_load::checks::{read_back, slave_names, Answers, Spread};
use slavealloc_load::daemon::{binary, Daemon};
use slavealloc_store_sql::{Backend, SqlStore};
use slavealloc_store_sql_testing::TestDatabase;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Calm,
    Over,
    Both,
}

/// Boot-storm benchmark through nginx over three daemons on one MariaDB.
#[derive(Debug, Parser)]
struct Args {
    /// Which storms to run.
    #[arg(long, value_enum, default_value = "both")]
    scenario: Scenario,
    /// Slaves in the calm storm.
    #[arg(long, default_value_t = 10_000)]
    slaves: usize,
    /// Seconds over which the calm storm's boots arrive.
    #[arg(long, default_value_t = 5.0)]
    window_s: f64,
    /// Slaves in the over-capacity storm (all at once).
    #[arg(long, default_value_t = 20_000)]
    over_slaves: usize,
    /// Database connections of each daemon in the over-capacity storm.
    #[arg(long, default_value_t = 1)]
    over_db_connections: u32,
    /// `[server] gettac_max_wait_ms` of each daemon in the over-capacity
    /// storm: a short queue as well as a small pool, so that the storm is
    /// more than the daemons admit on this machine's fast local MariaDB.
    #[arg(long, default_value_t = 200)]
    over_max_wait_ms: u64,
    /// Requests in flight at once, at most (file descriptors: each is a
    /// socket here, one in nginx and one in a daemon).
    #[arg(long, default_value_t = 6000)]
    concurrency: usize,
    /// Daemons behind nginx.
    #[arg(long, default_value_t = 3)]
    daemons: usize,
    /// Seconds between the daemons being ready and the storm.
    #[arg(long, default_value_t = 5)]
    settle_s: u64,
    /// The slavealloc binary [default: the one beside this program]
    #[arg(long)]
    bin: Option<PathBuf>,
}

/// One storm to run.
struct Storm {
    label: &'static str,
    slaves: usize,
    window: Duration,
    db_connections: Option<u32>,
    max_wait_ms: Option<u64>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = binary(args.bin.as_deref())?;
    let mut storms = Vec::new();
    if args.scenario != Scenario::Over {
        storms.push(Storm {
            label: "calm",
            slaves: args.slaves,
            window: Duration::from_secs_f64(args.window_s),
            db_connections: None,
            max_wait_ms: None,
        });
    }
    if args.scenario != Scenario::Calm {
        storms.push(Storm {
            label: "over capacity",
            slaves: args.over_slaves,
            window: Duration::ZERO,
            db_connections: Some(args.over_db_connections),
            max_wait_ms: Some(args.over_max_wait_ms),
        });
    }
    println!(
        "{} daemons behind nginx on one MariaDB; at most {} requests in flight",
        args.daemons, args.concurrency
    );
    println!(
        "| storm | slaves | arrivals over | DB connections per daemon | admission wait | all answered after | request p50 | request p99 | boot-to-tac p99 | errors | 503s with Retry-After | most asks by one slave | admitted | refused | most queued | spread ≤ 1 | every 200 recorded |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut failed = Vec::new();
    for storm in &storms {
        failed.extend(run_storm(&args, &bin, storm).await?);
    }
    if !failed.is_empty() {
        for f in &failed {
            eprintln!("FAILED: {f}");
        }
        std::process::exit(1);
    }
    Ok(())
}

/// What one slave's boot went through.
#[derive(Debug, Default)]
struct Boot {
    /// Latency of the request that got the tac.
    last_request: Duration,
    /// When that request was sent, from the storm's start.
    last_sent: Duration,
    /// From its boot to its tac.
    to_tac: Duration,
    /// When it got its tac, from the storm's start.
    done_at: Duration,
    asks: usize,
    paced: usize,
    errors: usize,
    got_tac: bool,
}

/// One storm on a fresh database, daemons and nginx; the failed checks.
async fn run_storm(args: &Args, bin: &Path, storm: &Storm) -> anyhow::Result<Vec<String>> {
    let fleet = generate_fleet(&FleetSpec::with_slaves(storm.slaves));
    let names = slave_names(&fleet);
    let Some(db) = TestDatabase::create(Backend::MySql).await else {
        bail!("MariaDB is unreachable (SLAVEALLOC_TEST_MYSQL)");
    };
    let store = SqlStore::connect(db.url()).await.context("while creating the schema")?;
    store.replace_all(&fleet).await.context("while loading the fleet")?;
    store.close().await;

    let dir = std::env::temp_dir().join(format!("slavealloc-storm-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("serve.toml");
    let mut text = "trusted_proxies = [\"127.0.0.1\"]\n[server]\nmax_connections = 4096\n".to_owned();
    if let Some(ms) = storm.max_wait_ms {
        text.push_str(&format!("gettac_max_wait_ms = {ms}\n"));
    }
    if let Some(n) = storm.db_connections {
        text.push_str(&format!("[database]\nmax_connections = {n}\n"));
    }
    std::fs::write(&config, text)?;
    let config = config.to_string_lossy().into_owned();
    let mut daemons = Vec::new();
    for i in 0..args.daemons {
        let d = Daemon::start(bin, db.url(), &["--config", &config], &dir, &format!("daemon{i}.log")).await?;
        daemons.push(d);
    }
    let urls: Vec<String> = daemons.iter().map(|d| format!("http://{}", d.addr)).collect();
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir)?;
    let port = free_port()?;
    let site = cluster_site(&nginx_dir, port, &urls).map_err(anyhow::Error::msg)?;
    let nginx = Nginx::start(&nginx_dir, &[site], &[port]).map_err(anyhow::Error::msg)?;
    let front: std::net::SocketAddr = ([127, 0, 0, 1], port).into();

    // In production the daemons have been up for hours when a data centre
    // reboots: let their start-up work (the poller's first round, the
    // lease) pass before the storm.
    tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
    let addrs: Vec<std::net::SocketAddr> = daemons.iter().map(|d| d.addr).collect();
    let most_queued = Arc::new(AtomicUsize::new(0));
    let sampler = tokio::spawn(sample_queued(addrs.clone(), Arc::clone(&most_queued)));

    let answers = Arc::new(Mutex::new(Answers::new(Arc::clone(&names))));
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let start = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let mut tasks = Vec::with_capacity(names.len());
    for k in 0..names.len() {
        let at = start + storm.window.mul_f64(rng.gen_range(0.0..=1.0));
        let (names, answers, gate) = (Arc::clone(&names), Arc::clone(&answers), Arc::clone(&gate));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            boot(front, &names[k], k, start, &gate, &answers).await
        }));
    }
    let mut boots = Vec::with_capacity(tasks.len());
    for t in tasks {
        boots.push(t.await.unwrap_or_default());
    }
    sampler.abort();
    let totals = Totals::of(&addrs).await;
    let error_log = nginx.error_log();
    drop(nginx);
    for d in daemons {
        d.stop().await?;
    }

    let store = SqlStore::connect(db.url())
        .await
        .context("while reopening the database")?;
    let (slave_rows, master_rows) = read_back(&store).await?;
    store.close().await;
    db.destroy().await;
    let _ = std::fs::remove_dir_all(&dir);

    let answers = std::mem::take(&mut *answers.lock().unwrap_or_else(PoisonError::into_inner));
    let recorded = answers.check(&slave_rows, &master_rows);
    let spread = Spread::check(&slave_rows, &master_rows);
    let mut requests: Vec<Duration> = boots.iter().filter(|b| b.got_tac).map(|b| b.last_request).collect();
    let mut to_tac: Vec<Duration> = boots.iter().filter(|b| b.got_tac).map(|b| b.to_tac).collect();
    requests.sort_unstable();
    to_tac.sort_unstable();
    let all_after = boots.iter().map(|b| b.done_at).max().unwrap_or_default();
    let errors: usize = boots.iter().map(|b| b.errors).sum();
    let paced: usize = boots.iter().map(|b| b.paced).sum();
    let untold = boots.iter().filter(|b| !b.got_tac).count();
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!(
        "| {} | {} | {:.1} s | {} | {} | {:.2} s | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        storm.label,
        storm.slaves,
        storm.window.as_secs_f64(),
        storm
            .db_connections
            .map_or("10 (default)".to_owned(), |n| n.to_string()),
        storm
            .max_wait_ms
            .map_or("1000 ms (default)".to_owned(), |ms| format!("{ms} ms")),
        all_after.as_secs_f64(),
        ms(quantile(&requests, 50)),
        ms(quantile(&requests, 99)),
        ms(quantile(&to_tac, 99)),
        errors,
        paced,
        boots.iter().map(|b| b.asks).max().unwrap_or_default(),
        totals.admitted,
        totals.refused,
        most_queued.load(Ordering::Relaxed),
        if spread.ok() { "yes" } else { "NO" },
        if recorded.ok() && untold == 0 { "yes" } else { "NO" },
    );
    eprintln!(
        "  ({}) in the daemons: {:.1} ms from arrival to committed answer on average, {:.1} allocations per transaction",
        storm.label,
        totals.allocation_seconds * 1e3 / totals.allocations.max(1.0),
        totals.allocations / totals.batches.max(1.0)
    );
    eprintln!("  ({}) {}", storm.label, slowest_when(&boots));
    eprintln!("  ({}) spread ≤ 1: {}", storm.label, spread.line());
    eprintln!("  ({}) every 200's master recorded: {}", storm.label, recorded.line());
    let mut failed = Vec::new();
    let label = storm.label;
    if !spread.ok() {
        failed.push(format!("({label}) spread ≤ 1: {}", spread.line()));
    }
    if !recorded.ok() {
        failed.push(format!("({label}) every 200's master recorded: {}", recorded.line()));
    }
    if untold > 0 {
        failed.push(format!("({label}) {untold} slaves never got their tac"));
    }
    if errors > 0 {
        failed.push(format!("({label}) {errors} errors (not 200, not paced)"));
        eprintln!("  ({label}) nginx error log (tail):\n{}", tail(&error_log, 10));
    }
    Ok(failed)
}

/// One slave's boot, as runslave does it. Gives up (an error) after ten
/// minutes of pacing or ten failures.
async fn boot(
    front: std::net::SocketAddr,
    name: &str,
    k: usize,
    start: Instant,
    gate: &Semaphore,
    answers: &Mutex<Answers>,
) -> Boot {
    let booted = Instant::now();
    let mut b = Boot::default();
    let mut paced_for = Duration::ZERO;
    while b.errors < 10 && paced_for < Duration::from_secs(600) {
        b.asks += 1;
        let sent = Instant::now();
        let answer = {
            let Ok(_permit) = gate.acquire().await else {
                b.errors += 1;
                return b;
            };
            ask(front, name).await
        };
        match answer {
            Some((200, _, body)) => {
                b.last_request = sent.elapsed();
                b.last_sent = sent - start;
                b.to_tac = booted.elapsed();
                b.done_at = start.elapsed();
                b.got_tac = true;
                answers.lock().unwrap_or_else(PoisonError::into_inner).note(k, &body);
                return b;
            }
            Some((503 | 429, Some(after), _)) => {
                b.paced += 1;
                let wait = Duration::from_secs(after.min(60)) + own_jitter();
                paced_for += wait;
                tokio::time::sleep(wait).await;
            }
            _ => {
                b.errors += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    b
}

/// Up to a second of runslave's own, so that slaves told the same
/// `Retry-After` do not come back in step.
fn own_jitter() -> Duration {
    Duration::from_millis(rand::thread_rng().gen_range(0..1000))
}

/// `GET /gettac/<name>` on a new connection: status, `Retry-After`, body.
async fn ask(front: std::net::SocketAddr, name: &str) -> Option<(u16, Option<u64>, bytes::Bytes)> {
    let exchange = async {
        let stream = TcpStream::connect(front).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::handshake(stream).await.ok()?;
        tokio::spawn(conn);
        let req = Request::get(format!("/gettac/{name}"))
            .header("host", "slavealloc.example.com")
            .body(Body::empty())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        let status = resp.status().as_u16();
        let after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = hyper::body::to_bytes(resp.into_body()).await.ok()?;
        Some((status, after, body))
    };
    // runslave's default --timeout.
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .ok()
        .flatten()
}

/// `GET path` of one daemon, as text.
async fn fetch_text(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::handshake(stream).await.ok()?;
    tokio::spawn(conn);
    let req = Request::get(path).header("host", "storm").body(Body::empty()).ok()?;
    let resp = sender.send_request(req).await.ok()?;
    let body = hyper::body::to_bytes(resp.into_body()).await.ok()?;
    Some(String::from_utf8_lossy(&body).into_owned())
}

/// `name value` from an exposition text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Every 50 ms, the requests queued over all daemons; keeps the most.
async fn sample_queued(addrs: Vec<std::net::SocketAddr>, most: Arc<AtomicUsize>) {
    loop {
        let mut sum = 0.0;
        for a in &addrs {
            if let Some(text) = fetch_text(*a, "/metrics").await {
                sum += metric(&text, "slavealloc_gettac_queued").unwrap_or(0.0);
            }
        }
        most.fetch_max(sum as usize, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the daemons' `/metrics` say of a storm, summed over them.
#[derive(Debug, Default)]
struct Totals {
    admitted: f64,
    refused: f64,
    /// Seconds from arrival to committed answer, over all allocations.
    allocation_seconds: f64,
    allocations: f64,
    batches: f64,
}

impl Totals {
    /// Sums every daemon's counters.
    async fn of(addrs: &[std::net::SocketAddr]) -> Totals {
        let mut t = Totals::default();
        for a in addrs {
            let Some(text) = fetch_text(*a, "/metrics").await else {
                continue;
            };
            let m = |name: &str| metric(&text, name).unwrap_or(0.0);
            t.admitted += m("slavealloc_gettac_admitted_total");
            t.refused += m("slavealloc_gettac_refused_total");
            t.allocation_seconds += m("slavealloc_allocation_duration_seconds_sum");
            t.allocations += m("slavealloc_allocation_duration_seconds_count");
            t.batches += m("slavealloc_allocation_batch_size_count");
        }
        t
    }
}

/// When the slowest 1% of the tac requests were sent: spread over the
/// storm (the machine is short of CPU) or bunched (a stall somewhere).
fn slowest_when(boots: &[Boot]) -> String {
    let mut done: Vec<&Boot> = boots.iter().filter(|b| b.got_tac).collect();
    done.sort_unstable_by_key(|b| std::cmp::Reverse(b.last_request));
    let slow = &done[..done.len().div_ceil(100)];
    let mut per_half_second = std::collections::BTreeMap::<u128, usize>::new();
    for b in slow {
        *per_half_second.entry(b.last_sent.as_millis() / 500).or_default() += 1;
    }
    let busiest = per_half_second.iter().max_by_key(|(_, n)| **n);
    match busiest {
        Some((slot, n)) => format!(
            "slowest 1% ({} requests, from {:.0} ms): {} of them sent in the 500 ms from {:.1} s, the rest over {} other half-seconds",
            slow.len(),
            slow.last().map_or(0.0, |b| b.last_request.as_secs_f64() * 1e3),
            n,
            *slot as f64 / 2.0,
            per_half_second.len() - 1
        ),
        None => "no answers".to_owned(),
    }
}

fn quantile(sorted: &[Duration], q: usize) -> Duration {
    sorted.get(sorted.len() * q / 100).copied().unwrap_or_default()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
