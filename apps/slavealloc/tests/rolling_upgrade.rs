//! The upgrade policy through a whole daemon (ARCHITECTURE.md, "Schema
//! evolution"): on MariaDB and PostgreSQL (and SQLite), a database migrated
//! by this build still serves allocations through a daemon that knows only
//! the previous migrations, as during a rolling upgrade of several daemons.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use slavealloc::serve::{launch, ServeArgs};
use slavealloc_domain::DumpStore;
use slavealloc_store_sql::{Backend, SqlStore};
use slavealloc_store_sql_testing::TestDatabase;

/// GETs `path` until it answers 200 (the daemon checks its schema in the
/// background), then returns the body.
async fn get_ok(addr: std::net::SocketAddr, path: &str) -> String {
    let client = hyper::Client::new();
    let uri: hyper::Uri = format!("http://{addr}{path}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(uri.clone()).await {
            let status = r.status();
            let body = hyper::body::to_bytes(r.into_body()).await.unwrap();
            if status == 200 {
                return String::from_utf8_lossy(&body).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "{path}: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_daemon_serves_a_database_this_build_migrated() {
    for backend in [Backend::MySql, Backend::Postgres, Backend::Sqlite] {
        let Some(db) = TestDatabase::create(backend).await else {
            continue;
        };
        // This build migrates the database and loads a fleet.
        let store = SqlStore::connect(db.url()).await.unwrap();
        store.replace_all(&slavealloc_fixtures::sample_fleet()).await.unwrap();
        let latest = store.schema_status().await.unwrap().version().unwrap();
        store.close().await;

        // The previous build: every migration but the last.
        let args = ServeArgs {
            db: vec![db.url().to_owned()],
            fqdn: Some("slavealloc.test".into()),
            ..ServeArgs::default()
        };
        let mut settings = slavealloc::serve::settings(&args).unwrap();
        settings.pool.migrations_up_to = Some(latest - 1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(async move {
            launch(&settings, listener, async {
                let _ = stopped.await;
            })
            .await
        });
        let tac = get_ok(addr, "/gettac/bld-linux64-spot-003").await;
        let health = get_ok(addr, "/healthz").await;
        let _ = stop.send(());
        daemon.await.unwrap().unwrap();
        db.destroy().await;
        assert!(tac.contains("slavename = 'bld-linux64-spot-003'"), "{backend}: {tac}");
        assert_eq!(health.trim(), "ok", "{backend}");
    }
}
