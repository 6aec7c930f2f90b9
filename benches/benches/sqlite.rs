//! `gettac` (decide, record, commit, render) on SQLite for a 10k-slave
//! fleet: a file database in WAL mode, as `slavealloc serve` uses by
//! default; `peek` (no write) for reference; and, side by side in the same
//! run, `original_sql`: the original's rule (ORIGINAL.md §2) as the plain
//! SQL of one process, no ORM and no tac, on a copy of the same fleet, the
//! baseline an embedder compares the allocator with.
//!
//! Each iteration asks for the next slave of the fleet in turn. Once every
//! slave has asked, most answers change nothing and commit without a
//! write; the first pass moves many slaves. Both are in the figure, as
//! both happen in production (a mass reboot, then steady state).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use slavealloc_benches::slave_names;
use slavealloc_domain::{Allocator, DumpStore, FixedHost};
use slavealloc_fixtures::{generate_fleet, FleetSpec};
use slavealloc_store_sql::SqlStore;
use slavealloc_tac_minijinja::MinijinjaRenderer;

/// The two fleets: the load benchmark's 10k slaves in 4 pools of 2,500, and
/// 5,000 slaves in 21 pools of 4 masters (84, as in issue 14's table), where
/// the original's counting reads a smaller pool.
fn sqlite_gettac(c: &mut Criterion) {
    fleet_gettac(c, "sqlite_10k", &FleetSpec::with_slaves(10_000));
    let small_pools = FleetSpec {
        pools: 21,
        ..FleetSpec::with_slaves(5_000)
    };
    fleet_gettac(c, "sqlite_5k_84_masters", &small_pools);
}

fn fleet_gettac(c: &mut Criterion, group_name: &str, spec: &FleetSpec) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let dump = generate_fleet(spec);
    let names = slave_names(&dump);
    let store = rt.block_on(async {
        let store = SqlStore::connect(&url).await.expect("the SQLite database opens");
        store.replace_all(&dump).await.expect("the fleet loads");
        store
    });
    let host = FixedHost {
        now: SystemTime::now(),
        fqdn: "slavealloc.example.com".into(),
    };
    let allocator = Allocator::new(
        Arc::new(store.clone()),
        Arc::new(MinijinjaRenderer::default()),
        Arc::new(host),
    );
    let allocator = &allocator;
    let mut group = c.benchmark_group(group_name);
    for (id, commit) in [("gettac", true), ("peek", false)] {
        let mut i = 0;
        group.bench_function(id, |b| {
            b.to_async(&rt).iter(|| {
                i += 1;
                let name = names[i % names.len()].as_str();
                async move {
                    let answer = if commit {
                        allocator.gettac(name).await
                    } else {
                        allocator.peek(name).await
                    };
                    answer.expect("every generated slave gets an answer")
                }
            });
        });
    }
    let original = rt.block_on(OriginalSql::open(&dir.path().join("original.db"), &dump));
    let original = &original;
    let mut i = 0;
    group.bench_function("original_sql", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            let name = names[i % names.len()].as_str();
            async move { original.gettac(name).await }
        });
    });
    group.finish();
    rt.block_on(store.close());
}

/// The original allocation, as plain SQL on its own SQLite file (WAL, as
/// the allocator's): the slave, its password, its pool's enabled masters by
/// the load of the slave's silo peers (lowest load, then lowest masterid),
/// the master's address, and the commit of `current_masterid`, in one
/// transaction. The silo is the original's (distro, bitlength, purpose,
/// datacenter, trust level, environment); nothing is rendered.
struct OriginalSql {
    pool: sqlx::SqlitePool,
}

impl OriginalSql {
    async fn open(path: &std::path::Path, dump: &slavealloc_domain::Dump) -> OriginalSql {
        // The same schema and rows as the allocator's, loaded by the store.
        let url = format!("sqlite://{}", path.display());
        let store = SqlStore::connect(&url).await.expect("the SQLite database opens");
        store.replace_all(dump).await.expect("the fleet loads");
        store.close().await;
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("the baseline's connection");
        OriginalSql { pool }
    }

    /// The answer's master host and port, and the password; `None` when
    /// the slave gets no allocation.
    async fn gettac(&self, name: &str) -> Option<(String, i64, String)> {
        use sqlx::Row as _;
        let mut tx = self.pool.begin().await.expect("BEGIN");
        let slave = sqlx::query(
            "SELECT slaveid, poolid, distroid, bitsid, purposeid, dcid, trustid, envid, locked_masterid, enabled \
             FROM slaves WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .expect("the slave")?;
        let id = |c: &str| slave.get::<Option<i64>, _>(c);
        if !slave.get::<bool, _>("enabled") {
            // A disabled slave gets the disabled tac and loses its master.
            sqlx::query("UPDATE slaves SET current_masterid = NULL WHERE slaveid = ?")
                .bind(id("slaveid"))
                .execute(&mut *tx)
                .await
                .expect("the disabled slave's write");
            tx.commit().await.expect("COMMIT");
            return None;
        }
        let password: String = sqlx::query_scalar(
            "SELECT password FROM slave_passwords WHERE poolid = ? AND (distroid = ? OR distroid IS NULL) \
             ORDER BY distroid IS NULL LIMIT 1",
        )
        .bind(id("poolid"))
        .bind(id("distroid"))
        .fetch_optional(&mut *tx)
        .await
        .expect("the password")
        .unwrap_or_default();
        let master: Option<i64> = match id("locked_masterid") {
            Some(locked) => Some(locked),
            None => {
                // The peers' count per master, through the original's
                // `slave_silo` index, then the least loaded enabled master.
                let loads: Vec<(Option<i64>, i64)> = sqlx::query_as(
                    "SELECT current_masterid, COUNT(*) FROM slaves WHERE distroid = ? AND bitsid = ? \
                     AND purposeid = ? AND dcid = ? AND trustid = ? AND envid = ? AND poolid = ? \
                     AND slaveid <> ? GROUP BY current_masterid",
                )
                .bind(id("distroid"))
                .bind(id("bitsid"))
                .bind(id("purposeid"))
                .bind(id("dcid"))
                .bind(id("trustid"))
                .bind(id("envid"))
                .bind(id("poolid"))
                .bind(id("slaveid"))
                .fetch_all(&mut *tx)
                .await
                .expect("the peers' loads");
                let candidates: Vec<i64> =
                    sqlx::query_scalar("SELECT masterid FROM masters WHERE poolid = ? AND enabled ORDER BY masterid")
                        .bind(id("poolid"))
                        .fetch_all(&mut *tx)
                        .await
                        .expect("the candidates");
                let load = |m: i64| loads.iter().find(|(c, _)| *c == Some(m)).map_or(0, |(_, n)| *n);
                candidates.into_iter().min_by_key(|m| (load(*m), *m))
            }
        };
        let master = master?;
        let (fqdn, port): (String, i64) = sqlx::query_as("SELECT fqdn, pb_port FROM masters WHERE masterid = ?")
            .bind(master)
            .fetch_one(&mut *tx)
            .await
            .expect("the master");
        sqlx::query("UPDATE slaves SET current_masterid = ? WHERE slaveid = ?")
            .bind(master)
            .bind(id("slaveid"))
            .execute(&mut *tx)
            .await
            .expect("the commit's write");
        tx.commit().await.expect("COMMIT");
        Some((fqdn, port, password))
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(30);
    targets = sqlite_gettac
}
criterion_main!(benches);
