//! What whole-list readers cost the daemon's memory (README, "Memory"):
//! the release daemon on a generated fleet (100,000 slaves by default)
//! answers one full `GET /api/slaves?include_decomm=1` to warm up; then
//! its `VmRSS` at rest is read, 32 readers on connections of their own
//! read the full list at once, for a few rounds, and after a pause its
//! `VmRSS` and peak `VmHWM` are read again (from /proc/PID/status).
//!
//! Every answer is parsed as it arrives (never held whole, so that the
//! readers' own memory stays small) and must be a JSON array of exactly
//! as many rows as the fleet has slaves; any other answer is counted as an
//! error and printed.
//!
//! ```text
//! cargo build --release -p slavealloc -p slavealloc-load
//! target/release/readers                       # SQLite, 100,000 slaves
//! target/release/readers --db mysql --readers 32 --rounds 3
//! ```
//! MariaDB and PostgreSQL are found as `slavealloc-load` finds them
//! (`SLAVEALLOC_TEST_MYSQL`, `SLAVEALLOC_TEST_POSTGRES`); the databases
//! made for the run are dropped afterwards.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use hyper::body::HttpBody;
use hyper::{Body, Request};
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use slavealloc_domain::{DumpStore, Table};
use slavealloc_fixtures::{generate_fleet, FleetSpec};
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

/// Memory of the slavealloc daemon under concurrent whole-list readers.
#[derive(Debug, Parser)]
struct Args {
    /// The database.
    #[arg(long, value_enum, default_value = "sqlite")]
    db: Db,
    /// Slaves in the generated fleet.
    #[arg(long, default_value_t = 100_000)]
    slaves: usize,
    /// Concurrent readers of the whole list.
    #[arg(long, default_value_t = 32)]
    readers: usize,
    /// How many times the readers all read it at once.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds to wait after the last round before RSS is read again.
    #[arg(long, default_value_t = 3)]
    settle: u64,
    /// The slavealloc binary [default: the one beside this program]
    #[arg(long)]
    bin: Option<PathBuf>,
}

const PATH: &str = "/api/slaves?include_decomm=1";

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = binary(args.bin.as_deref())?;
    let fleet = generate_fleet(&FleetSpec::with_slaves(args.slaves));
    let expected = fleet.rows(Table::Slaves).len();
    let dir = std::env::temp_dir().join(format!("slavealloc-readers-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (url, test_db) = match args.db {
        Db::Sqlite => (format!("sqlite://{}", dir.join("readers.db").display()), None),
        Db::Mysql | Db::Postgres => {
            let backend = if args.db == Db::Mysql {
                Backend::MySql
            } else {
                Backend::Postgres
            };
            let t = TestDatabase::create(backend)
                .await
                .with_context(|| format!("the {backend} test server is unreachable"))?;
            (t.url().to_owned(), Some(t))
        }
    };
    let store = SqlStore::connect(&url).await.context("while creating the schema")?;
    store.replace_all(&fleet).await.context("while loading the fleet")?;
    store.close().await;
    drop(fleet);

    let daemon = Daemon::start(&bin, &url, &[], &dir, "daemon.log").await?;
    let outcome = readers(&args, &daemon, expected).await;
    daemon.stop().await?;
    if let Some(t) = test_db {
        t.destroy().await;
    }
    // The daemon's log stays for a run that failed.
    let m = outcome.with_context(|| format!("the daemon's log is in {}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{} slaves on {:?}; {} readers x {} rounds of GET {PATH}",
        args.slaves, args.db, args.readers, args.rounds
    );
    println!("| database | RSS at rest | peak (VmHWM) | RSS after | after / at rest | round time | answers |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {:?} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.2} | {:.2} s | {} |",
        args.db,
        mib(m.at_rest),
        mib(m.peak),
        mib(m.after),
        m.after as f64 / m.at_rest as f64,
        m.round.as_secs_f64(),
        if m.errors.is_empty() {
            format!("all {} complete ({expected} rows each)", args.readers * args.rounds)
        } else {
            format!("ERROR: {} of {} wrong", m.errors.len(), args.readers * args.rounds)
        }
    );
    for e in &m.errors {
        eprintln!("  error: {e}");
    }
    if !m.errors.is_empty() {
        bail!("{} answers were not the whole list", m.errors.len());
    }
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// What one run measured (KiB).
struct Measured {
    at_rest: u64,
    peak: u64,
    after: u64,
    round: Duration,
    errors: Vec<String>,
}

async fn readers(args: &Args, daemon: &Daemon, expected: usize) -> anyhow::Result<Measured> {
    let warm = read_list(daemon.addr).await;
    if warm != Ok(expected) {
        bail!("the warm-up read gave {warm:?}, not {expected} rows");
    }
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let at_rest = daemon.status_kib("VmRSS:")?;
    let mut errors = Vec::new();
    let mut slowest = Duration::ZERO;
    for round in 0..args.rounds {
        let started = Instant::now();
        let tasks: Vec<_> = (0..args.readers)
            .map(|_| tokio::spawn(read_list(daemon.addr)))
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await {
                Ok(Ok(n)) if n == expected => {}
                Ok(Ok(n)) => errors.push(format!("round {round} reader {i}: {n} rows, not {expected}")),
                Ok(Err(e)) => errors.push(format!("round {round} reader {i}: {e}")),
                Err(e) => errors.push(format!("round {round} reader {i}: {e}")),
            }
        }
        slowest = slowest.max(started.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    Ok(Measured {
        at_rest,
        peak: daemon.status_kib("VmHWM:")?,
        after: daemon.status_kib("VmRSS:")?,
        round: slowest,
        errors,
    })
}

/// Why a read was not a whole list.
#[derive(Debug, PartialEq)]
struct ReadError(String);

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn failed(e: impl fmt::Display) -> ReadError {
    ReadError(e.to_string())
}

/// Reads the whole list on a connection of its own: how many rows its
/// answer held, parsed as the chunks arrive.
async fn read_list(addr: std::net::SocketAddr) -> Result<usize, ReadError> {
    let stream = TcpStream::connect(addr).await.map_err(failed)?;
    let (mut sender, conn) = hyper::client::conn::handshake(stream).await.map_err(failed)?;
    tokio::spawn(conn);
    // An IP address: the daemon's DNS-rebinding guard refuses other names under /api.
    let req = Request::get(PATH)
        .header("host", addr.to_string())
        .body(Body::empty())
        .map_err(failed)?;
    let resp = sender.send_request(req).await.map_err(failed)?;
    if !resp.status().is_success() {
        return Err(ReadError(format!("status {}", resp.status())));
    }
    let mut body = resp.into_body();
    // The parser reads on a thread of its own from the chunks sent to it,
    // a few in flight, so that no reader holds a whole answer.
    let (tx, rx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(4);
    let parser = tokio::task::spawn_blocking(move || {
        count_rows(ChunkReader {
            rx,
            chunk: bytes::Bytes::new(),
        })
    });
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(failed)?;
        if tx.send(chunk).is_err() {
            break;
        }
    }
    drop(tx);
    parser.await.map_err(failed)?
}

/// The chunks of a body as a [`Read`].
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<bytes::Bytes>,
    chunk: bytes::Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.recv() {
                Ok(c) => self.chunk = c,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        bytes::Buf::advance(&mut self.chunk, n);
        Ok(n)
    }
}

/// The number of objects in a JSON array, checked for validity without
/// keeping them.
fn count_rows(reader: impl Read) -> Result<usize, ReadError> {
    struct Count;
    impl<'de> Visitor<'de> for Count {
        type Value = usize;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of row objects")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while seq.next_element::<Object>()?.is_some() {
                n += 1;
            }
            Ok(n)
        }
    }
    /// A JSON object, checked and dropped.
    struct Object;
    impl<'de> serde::Deserialize<'de> for Object {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Keys;
            impl<'de> Visitor<'de> for Keys {
                type Value = Object;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a row object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(Object)
                }
            }
            d.deserialize_map(Keys)
        }
    }
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(reader));
    let n = (&mut de).deserialize_seq(Count).map_err(failed)?;
    de.end().map_err(failed)?;
    Ok(n)
}
