//! How long `GET /api/audit`'s queries take on a million audit entries:
//! a fresh database per backend (MariaDB and PostgreSQL from the test
//! servers, SQLite in a temporary file) gets the sample fleet and 1,000,000
//! entries over 90 days (nine in ten allocations by `gettac`, the rest
//! edits by five people, one in a hundred of those a drain), then each
//! query of the history view runs five times through the store the daemon
//! uses; the median is printed. The databases are dropped afterwards.
//!
//! ```sh
//! cargo run --release -p slavealloc-load --bin audit-million
//! cargo run --release -p slavealloc-load --bin audit-million -- --entries 200000 --backend mysql
//! ```

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Parser;
use slavealloc_domain::audit::{format_at, AuditEntry, AuditKind, AuditQuery, NewAuditEntry, ALLOCATION_ACTOR};
use slavealloc_domain::lifecycle::LIFECYCLE_KEY;
use slavealloc_domain::{DumpStore, InventoryStore, Row, Table, Value};
use slavealloc_store_sql::{Backend, SqlStore};
use slavealloc_store_sql_testing::TestDatabase;

#[derive(Parser)]
struct Args {
    /// How many entries.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u32,
    /// Only this backend: sqlite, mysql or postgres.
    #[arg(long)]
    backend: Option<String>,
}

const DAYS: u64 = 90;
const PEOPLE: [&str; 5] = ["relops", "catlee", "dustin", "aki", "nthomas"];

/// The `n`th of `total` entries: spread evenly over the last 90 days.
fn entry(n: u32, total: u32, now: SystemTime) -> AuditEntry {
    let span = Duration::from_secs(DAYS * 86_400);
    let age = span.mul_f64(1.0 - f64::from(n) / f64::from(total));
    let at = format_at(now - age);
    let slave = i64::from(n % 60) + 1;
    let values = |pairs: &[(&str, Value)]| -> Option<Row> {
        Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
    };
    let (actor, table, row_id, old, new) = if n % 10 != 0 {
        let to = i64::from(n % 14) + 1;
        (
            ALLOCATION_ACTOR.to_owned(),
            "slaves",
            slave,
            values(&[("current_masterid", Value::Int((to % 14) + 1))]),
            values(&[
                ("current_masterid", Value::Int(to)),
                ("reason", Value::Text("balanced".into())),
            ]),
        )
    } else if n % 1000 == 0 {
        (
            PEOPLE[(n as usize / 10) % PEOPLE.len()].to_owned(),
            "masters",
            i64::from(n % 14) + 1,
            values(&[("enabled", Value::Bool(true))]),
            values(&[
                ("enabled", Value::Bool(false)),
                (LIFECYCLE_KEY, Value::Text("drained: upgrade".into())),
            ]),
        )
    } else {
        (
            PEOPLE[(n as usize / 10) % PEOPLE.len()].to_owned(),
            "slaves",
            slave,
            values(&[("notes", Value::Null)]),
            values(&[("notes", Value::Text(format!("bug {n}")))]),
        )
    };
    AuditEntry {
        id: i64::from(n) + 1,
        entry: NewAuditEntry {
            at,
            actor,
            table_name: table.to_owned(),
            row_id,
            old_values: old,
            new_values: new,
        },
    }
}

/// Loads the fleet and the entries, 50,000 per transaction.
async fn fill(store: &SqlStore, total: u32, now: SystemTime) -> anyhow::Result<()> {
    store.replace_all(&slavealloc_fixtures::sample_fleet()).await?;
    let started = Instant::now();
    let mut n = 0;
    while n < total {
        let end = (n + 50_000).min(total);
        let rows = (n..end)
            .map(|i| entry(i, total, now).to_row())
            .collect::<Result<Vec<_>, _>>()?;
        let mut dump = slavealloc_domain::Dump::default();
        dump.tables.insert(Table::AuditLog, rows);
        store.append(&dump).await.context("appending audit entries")?;
        n = end;
    }
    eprintln!("  loaded {total} entries in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The median of five runs of one query, and how many entries it found.
async fn time(store: &SqlStore, query: &AuditQuery) -> anyhow::Result<(Duration, usize)> {
    let mut runs = Vec::new();
    let mut found = 0;
    for _ in 0..5 {
        let started = Instant::now();
        found = store.audit(query.clone()).await?.len();
        runs.push(started.elapsed());
    }
    runs.sort();
    Ok((runs[2], found))
}

fn queries(now: SystemTime, total: u32) -> Vec<(&'static str, AuditQuery)> {
    let page = |f: &dyn Fn(&mut AuditQuery)| {
        let mut q = AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        };
        f(&mut q);
        q
    };
    let day = Duration::from_secs(86_400);
    vec![
        ("newest 100", page(&|_| {})),
        ("since 1d", page(&|q| q.since = Some(now - day))),
        (
            "yesterday, edits",
            page(&|q| {
                q.since = Some(now - 2 * day);
                q.until = Some(now - day);
                q.kind = Some(AuditKind::Edit);
            }),
        ),
        (
            "actor relops, edits",
            page(&|q| {
                q.actor = Some("relops".into());
                q.kind = Some(AuditKind::Edit);
            }),
        ),
        (
            "one slave (table+id)",
            page(&|q| {
                q.table = Some(Table::Slaves);
                q.row_id = Some(7);
            }),
        ),
        ("lifecycle (drains)", page(&|q| q.kind = Some(AuditKind::Lifecycle))),
        (
            "a page mid-log (cursor)",
            page(&|q| q.before = Some(i64::from(total / 2))),
        ),
        (
            "one hour 30 days ago",
            page(&|q| {
                q.since = Some(now - 30 * day);
                q.until = Some(now - 30 * day + Duration::from_secs(3600));
            }),
        ),
    ]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let now = SystemTime::now();
    let backends = [
        ("sqlite", Backend::Sqlite),
        ("mysql", Backend::MySql),
        ("postgres", Backend::Postgres),
    ];
    for (name, backend) in backends {
        if args.backend.as_deref().is_some_and(|b| b != name) {
            continue;
        }
        let Some(db) = TestDatabase::create(backend).await else {
            eprintln!("{name}: no server; skipped");
            continue;
        };
        eprintln!("{name}:");
        let store = db.store().await;
        fill(&store, args.entries, now).await?;
        println!("| {name} | query | median | found |");
        println!("|---|---|---|---|");
        for (label, q) in queries(now, args.entries) {
            let (median, found) = time(&store, &q).await?;
            println!(
                "| {name} | {label} | {:.1} ms | {found} |",
                median.as_secs_f64() * 1000.0
            );
        }
        store.close().await;
        db.destroy().await;
    }
    Ok(())
}
