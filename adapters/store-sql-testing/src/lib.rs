//! # slavealloc-store-sql-testing
//!
//! Fresh databases for tests, here so that every crate's tests that need a
//! real database get one the same way (see DEVELOPERS.md, "Databases for
//! tests").
//!
//! Each [`TestDatabase`] is a new, uniquely named database on the local
//! MariaDB or PostgreSQL server (or a new SQLite file), removed by
//! [`TestDatabase::destroy`]. The servers are found through
//! `SLAVEALLOC_TEST_MYSQL` and `SLAVEALLOC_TEST_POSTGRES`. When a server
//! cannot be reached, [`TestDatabase::create`] panics if `CI=true` (a CI run
//! must never pass by skipping) and otherwise says why and returns `None`,
//! for the caller to skip.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Connection as _, Executor as _};

use slavealloc_store_sql::{Backend, SqlOptions, SqlStore};

#[cfg(unix)]
pub mod galera;
#[cfg(unix)]
pub mod replica;
#[cfg(unix)]
pub mod servers;

// A crate of its own rather than a feature of slavealloc-store-sql: a
// feature that some members enable and others do not gives the store two
// builds, and `cargo run -p slavealloc` after a workspace build recompiled
// it and everything above it (newcomer bug 7).

/// The MariaDB server tests use, unless `SLAVEALLOC_TEST_MYSQL` says
/// otherwise.
pub const DEFAULT_MYSQL: &str = "mysql://root@127.0.0.1:3306";
/// The PostgreSQL server tests use, unless `SLAVEALLOC_TEST_POSTGRES` says
/// otherwise.
pub const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";

/// Whether this is a CI run, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The server URL (no database) tests use for `backend`; `None` for SQLite.
pub fn server_url(backend: Backend) -> Option<String> {
    let (var, default) = match backend {
        Backend::Sqlite => return None,
        Backend::MySql => ("SLAVEALLOC_TEST_MYSQL", DEFAULT_MYSQL),
        Backend::Postgres => ("SLAVEALLOC_TEST_POSTGRES", DEFAULT_POSTGRES),
    };
    Some(std::env::var(var).unwrap_or_else(|_| default.to_owned()))
}

/// `server` with its path (database) replaced by `database`, query kept.
fn with_database(server: &str, database: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (server, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

/// A unique name: `slavealloc_test_<pid>_<time>_<n>`, short enough for
/// MariaDB's 64-character limit.
fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "slavealloc_test_{}_{:x}_{}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// One fresh database.
#[derive(Debug)]
pub struct TestDatabase {
    backend: Backend,
    name: String,
    url: String,
    admin_url: Option<String>,
    file: Option<PathBuf>,
}

fn unreachable(backend: Backend, why: &str) -> Option<TestDatabase> {
    if in_ci() {
        panic!("the {backend} test server is unreachable and CI=true, so this test may not be skipped: {why}");
    }
    eprintln!("skipping: the {backend} test server is unreachable ({why}); see DEVELOPERS.md");
    None
}

impl TestDatabase {
    /// Creates an empty database (no schema yet); `None` when the server is
    /// unreachable outside CI.
    ///
    /// # Panics
    /// When the server is unreachable and `CI=true`, or when it refuses to
    /// create a database.
    pub async fn create(backend: Backend) -> Option<TestDatabase> {
        let name = unique_name();
        let Some(server) = server_url(backend) else {
            let file = std::env::temp_dir().join(format!("{name}.db"));
            return Some(TestDatabase {
                backend,
                url: format!("sqlite://{}", file.display()),
                name,
                admin_url: None,
                file: Some(file),
            });
        };
        let create = match backend {
            Backend::MySql => format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"),
            _ => format!("CREATE DATABASE {name}"),
        };
        let admin_url = match backend {
            Backend::Postgres => with_database(&server, "postgres"),
            _ => server.clone(),
        };
        if let Err(why) = admin(backend, &admin_url, &create).await {
            return unreachable(backend, &why);
        }
        Some(TestDatabase {
            backend,
            url: with_database(&server, &name),
            name,
            admin_url: Some(admin_url),
            file: None,
        })
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server URL for admin connections of the tests' own (`None` for
    /// SQLite).
    pub fn admin_url(&self) -> Option<&str> {
        self.admin_url.as_deref()
    }

    /// Its backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A store on it (schema created), with default options.
    ///
    /// # Panics
    /// When it cannot connect: the server was reachable a moment ago.
    pub async fn store(&self) -> SqlStore {
        self.store_with(SqlOptions::default()).await
    }

    /// A store on it (schema created).
    ///
    /// # Panics
    /// As for [`TestDatabase::store`].
    pub async fn store_with(&self, options: SqlOptions) -> SqlStore {
        match SqlStore::connect_with(&self.url, options).await {
            Ok(store) => store,
            Err(e) => panic!("cannot open the {} test database {}: {e}", self.backend, self.name),
        }
    }

    /// Runs one statement on the server with a separate admin connection,
    /// outside any store: for tests that act behind a store's back (killing
    /// its connections, inspecting the catalog).
    ///
    /// # Errors
    /// The server's error, as text.
    pub async fn admin(&self, statement: &str) -> Result<(), String> {
        match &self.admin_url {
            Some(url) => admin(self.backend, url, statement).await,
            None => Err("SQLite has no server".to_owned()),
        }
    }

    /// Drops the database (or deletes the file). Close the stores on it
    /// first; PostgreSQL's drop ends the connections still open.
    pub async fn destroy(self) {
        if let Some(file) = &self.file {
            for suffix in ["", "-wal", "-shm"] {
                let mut path = file.clone().into_os_string();
                path.push(suffix);
                // A file the database never created is fine to miss.
                let _ = std::fs::remove_file(path);
            }
            return;
        }
        let drop = match self.backend {
            Backend::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            _ => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        if let Err(e) = self.admin(&drop).await {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

async fn admin(backend: Backend, url: &str, statement: &str) -> Result<(), String> {
    let timeout = Duration::from_secs(5);
    let run = async {
        match backend {
            Backend::MySql => {
                let mut conn = sqlx::MySqlConnection::connect(url).await?;
                conn.execute(statement).await?;
                conn.close().await
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(url).await?;
                conn.execute(statement).await?;
                conn.close().await
            }
            Backend::Sqlite => Ok(()),
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_replace_the_path_and_keep_the_query() {
        assert_eq!(
            with_database("mysql://root@127.0.0.1:3306", "x"),
            "mysql://root@127.0.0.1:3306/x"
        );
        assert_eq!(
            with_database("mysql://root@127.0.0.1:3306/", "x"),
            "mysql://root@127.0.0.1:3306/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/postgres?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
    }

    #[test]
    fn names_are_unique_and_short() {
        let (a, b) = (unique_name(), unique_name());
        assert_ne!(a, b);
        assert!(a.len() <= 64, "{a}");
    }
}
