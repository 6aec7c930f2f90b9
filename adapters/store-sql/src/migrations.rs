//! This rebuild's own tables (`audit_log`, SQLite's `slave_loads`, and
//! whatever comes next) are made and changed by versioned migrations, one
//! folder per backend (`migrations/<backend>/NNNN_name.sql`), run by sqlx's
//! migrator at start and recorded in the database's `_sqlx_migrations`
//! table. The original's tables are never migrated: they are created, when
//! missing, by `sql/<backend>/schema.sql` exactly as the original had them.
//!
//! The upgrade policy (ARCHITECTURE.md, "Schema evolution"): migrations are
//! additive only, so a build that knows fewer migrations than the database
//! has keeps serving it (a rolling upgrade of several daemons), and says so
//! through [`SchemaStatus`]. A migration that was applied but differs from
//! this build's, or one that failed half-way, stops the start with a
//! message that names it.
//!
//! Several daemons may start at once: PostgreSQL and MariaDB take the
//! migrator's advisory lock (on a connection of its own, closed afterwards,
//! so an error cannot leave the lock held by a pooled connection); on
//! SQLite the migrations are idempotent and a run that lost a race to
//! another process is run again.

use std::borrow::Cow;
use std::fmt;

use slavealloc_domain::StoreError;
use sqlx::migrate::{AppliedMigration, Migrate, MigrateError, Migrator};
use sqlx::pool::Pool;
use sqlx::{Connection as _, Database};

use crate::Backend;

static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
static MYSQL: Migrator = sqlx::migrate!("./migrations/mysql");
static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

/// The migrator's bookkeeping table.
pub(crate) const TABLE: &str = "_sqlx_migrations";

fn all(backend: Backend) -> &'static Migrator {
    match backend {
        Backend::Sqlite => &SQLITE,
        Backend::MySql => &MYSQL,
        Backend::Postgres => &POSTGRES,
    }
}

/// This build's migrations for `backend`, up to and including `up_to`
/// (all of them when `None`), tolerant of newer ones in the database.
pub(crate) fn migrator(backend: Backend, up_to: Option<i64>) -> Migrator {
    let migrations = all(backend)
        .iter()
        .filter(|m| up_to.is_none_or(|v| m.version <= v))
        .cloned()
        .collect::<Vec<_>>();
    // The fields are what `migrate!` fills in; sqlx offers no constructor
    // from a list, and the version is pinned in Cargo.lock.
    Migrator {
        migrations: Cow::Owned(migrations),
        ignore_missing: true,
        locking: true,
        no_tx: false,
    }
}

/// Runs `migrator` on a connection of its own, closed afterwards whatever
/// happened, so that a failure never leaves the migrator's session lock on
/// a connection the pool hands out again.
pub(crate) async fn apply<DB>(
    pool: &Pool<DB>,
    migrator: &Migrator,
    error: fn(sqlx::Error) -> StoreError,
) -> Result<(), StoreError>
where
    DB: Database,
    DB::Connection: Migrate,
{
    let mut conn = pool.acquire().await.map_err(error)?.detach();
    let result = apply_on(&mut conn, migrator, error).await;
    let _ = conn.close().await;
    result
}

/// Runs `migrator` on `conn`, which the caller closes afterwards.
pub(crate) async fn apply_on<C: Migrate>(
    conn: &mut C,
    migrator: &Migrator,
    error: fn(sqlx::Error) -> StoreError,
) -> Result<(), StoreError> {
    // `run_direct` is `run` on a connection: sqlx's own way around the
    // "Acquire is not general enough" error of `run` in generic code.
    migrator.run_direct(conn).await.map_err(|e| migrate_error(e, error))
}

/// The migrations recorded in the database and the one left half-done,
/// read on a pooled connection. The caller checks that the table exists.
pub(crate) async fn applied<DB>(
    pool: &Pool<DB>,
    error: fn(sqlx::Error) -> StoreError,
) -> Result<(Vec<AppliedMigration>, Option<i64>), StoreError>
where
    DB: Database,
    DB::Connection: Migrate,
{
    let mut conn = pool.acquire().await.map_err(error)?;
    let dirty = conn.dirty_version().await.map_err(|e| migrate_error(e, error))?;
    let applied = conn
        .list_applied_migrations()
        .await
        .map_err(|e| migrate_error(e, error))?;
    Ok((applied, dirty))
}

fn migrate_error(e: MigrateError, error: fn(sqlx::Error) -> StoreError) -> StoreError {
    match e {
        MigrateError::Execute(e) => error(e),
        MigrateError::ExecuteMigration(e, version) => match error(e) {
            StoreError::Other(why) => StoreError::Other(format!("schema migration {version} failed: {why}")),
            unavailable => unavailable,
        },
        MigrateError::VersionMismatch(version) => StoreError::Other(format!(
            "schema migration {version} in the database is not this build's migration {version}: \
             the database was migrated by a build with other migrations; refusing to start"
        )),
        MigrateError::Dirty(version) => StoreError::Other(format!(
            "schema migration {version} failed half-way on an earlier start: \
             finish or undo it by hand, then delete its row from {TABLE}"
        )),
        other => StoreError::Other(format!("schema migrations: {other}")),
    }
}

/// Where one migration stands in a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationState {
    /// Applied, and the same as this build's.
    Applied,
    /// This build has it; the database does not yet.
    Pending,
    /// Applied by a build that knows migrations this one does not: fine
    /// (migrations are additive), but this build is the older one.
    Newer,
    /// Applied, but its SQL differs from this build's.
    Changed,
    /// Started and not finished (a failure on a backend whose DDL is not
    /// transactional).
    Failed,
}

impl fmt::Display for MigrationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MigrationState::Applied => "applied",
            MigrationState::Pending => "pending",
            MigrationState::Newer => "applied by a newer build",
            MigrationState::Changed => "applied, but differs from this build's",
            MigrationState::Failed => "failed half-way",
        })
    }
}

/// One migration and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Its version (per backend).
    pub version: i64,
    /// What it does, from its file name; empty for a migration this build
    /// does not have.
    pub description: String,
    /// Where it stands.
    pub state: MigrationState,
}

/// A database's schema version as this build sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The backend.
    pub backend: Backend,
    /// Every migration this build has or the database recorded, by version.
    pub migrations: Vec<MigrationStatus>,
}

impl SchemaStatus {
    /// Whether the database has migrations this build does not know (it
    /// keeps serving: they are additive).
    pub fn newer_than_this_build(&self) -> bool {
        self.migrations.iter().any(|m| m.state == MigrationState::Newer)
    }

    /// Whether every migration of this build is applied, unchanged.
    pub fn up_to_date(&self) -> bool {
        self.migrations
            .iter()
            .all(|m| matches!(m.state, MigrationState::Applied | MigrationState::Newer))
    }

    /// The highest version applied, if any.
    pub fn version(&self) -> Option<i64> {
        self.migrations
            .iter()
            .filter(|m| matches!(m.state, MigrationState::Applied | MigrationState::Newer))
            .map(|m| m.version)
            .max()
    }
}

/// What `applied` (and `dirty`) mean against this build's migrations.
pub(crate) fn status(
    backend: Backend,
    up_to: Option<i64>,
    applied: &[AppliedMigration],
    dirty: Option<i64>,
) -> SchemaStatus {
    let ours = migrator(backend, up_to);
    let mut migrations: Vec<MigrationStatus> = ours
        .iter()
        .map(|m| {
            let state = match applied.iter().find(|a| a.version == m.version) {
                _ if dirty == Some(m.version) => MigrationState::Failed,
                Some(a) if a.checksum == m.checksum => MigrationState::Applied,
                Some(_) => MigrationState::Changed,
                None => MigrationState::Pending,
            };
            MigrationStatus {
                version: m.version,
                description: m.description.to_string(),
                state,
            }
        })
        .collect();
    let theirs = applied
        .iter()
        .map(|a| a.version)
        .chain(dirty)
        .filter(|v| !ours.version_exists(*v));
    for version in theirs {
        if migrations.iter().all(|m| m.version != version) {
            migrations.push(MigrationStatus {
                version,
                description: String::new(),
                state: if dirty == Some(version) {
                    MigrationState::Failed
                } else {
                    MigrationState::Newer
                },
            });
        }
    }
    migrations.sort_by_key(|m| m.version);
    SchemaStatus { backend, migrations }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(version: i64, checksum: &[u8]) -> AppliedMigration {
        AppliedMigration {
            version,
            checksum: Cow::Owned(checksum.to_vec()),
        }
    }

    fn ours(version: i64) -> Vec<u8> {
        all(Backend::Postgres)
            .iter()
            .find(|m| m.version == version)
            .unwrap()
            .checksum
            .to_vec()
    }

    #[test]
    fn every_backend_has_the_audit_log_first_and_versions_in_order() {
        for backend in [Backend::Sqlite, Backend::MySql, Backend::Postgres] {
            let versions: Vec<i64> = all(backend).iter().map(|m| m.version).collect();
            assert_eq!(versions.first(), Some(&1), "{backend}");
            assert!(versions.windows(2).all(|w| w[0] < w[1]), "{backend}: {versions:?}");
            assert_eq!(all(backend).iter().next().unwrap().description, "audit log");
        }
    }

    #[test]
    fn a_fresh_database_has_everything_pending_and_newer_ones_are_named() {
        let fresh = status(Backend::Postgres, None, &[], None);
        assert!(fresh.migrations.iter().all(|m| m.state == MigrationState::Pending));
        assert!(!fresh.up_to_date());
        assert_eq!(fresh.version(), None);

        let up_to_one = status(
            Backend::Postgres,
            Some(1),
            &[applied(1, &ours(1)), applied(2, &ours(2))],
            None,
        );
        let states: Vec<_> = up_to_one.migrations.iter().map(|m| (m.version, m.state)).collect();
        assert_eq!(states, [(1, MigrationState::Applied), (2, MigrationState::Newer)]);
        assert!(up_to_one.up_to_date() && up_to_one.newer_than_this_build());
        assert_eq!(up_to_one.version(), Some(2));

        let changed = status(Backend::Postgres, None, &[applied(1, b"other")], Some(2));
        let states: Vec<_> = changed.migrations.iter().map(|m| m.state).collect();
        assert_eq!(states[..2], [MigrationState::Changed, MigrationState::Failed]);
    }
}
