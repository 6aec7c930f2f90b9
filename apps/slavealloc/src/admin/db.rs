//! `dbinit`, `dbdump` and `dbcopy`: whole databases, through the
//! [`DumpStore`] port.
//!
//! The one rule they share: rows are never destroyed without a copy. A
//! database that holds rows is replaced only with `--force`, and then only
//! after a dump of it has been written (this replaces the original's nightly
//! cron dump, its only protection against an accidental `dbinit`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use anyhow::Context;
use slavealloc_domain::{Dump, DumpStore, StoreError};
use slavealloc_store_sql::SqlStore;
use time::macros::format_description;
use time::OffsetDateTime;

use super::dumpfile;

/// Opens a database by URL, creating the schema if it is missing.
///
/// # Errors
/// An unsupported URL or an unreachable database, with the URL (password
/// hidden) in the message.
pub async fn open(url: &str) -> anyhow::Result<SqlStore> {
    SqlStore::connect(url)
        .await
        .with_context(|| format!("cannot open the database {}", crate::redact::url(url)))
}

/// Opens a database that must exist and hold the slavealloc tables, for
/// reading: nothing is created, so a misspelt SQLite path in a backup job
/// is an error, not an empty dump.
///
/// # Errors
/// As for [`open`], and a database that is missing or has no tables.
pub async fn open_existing(url: &str) -> anyhow::Result<SqlStore> {
    SqlStore::open_existing(url)
        .await
        .with_context(|| format!("cannot read the database {}", crate::redact::url(url)))
}

/// `db status`: which of this build's schema migrations the database has.
/// Reads only. Returns whether every migration is applied unchanged.
///
/// # Errors
/// A bad URL, a missing SQLite file, an unreachable database.
pub async fn status(url: &str, out: &mut dyn Write) -> anyhow::Result<bool> {
    let options = slavealloc_store_sql::SqlOptions {
        create_missing: false,
        ..slavealloc_store_sql::SqlOptions::default()
    };
    let context = || format!("cannot read the database {}", crate::redact::url(url));
    let store = SqlStore::open_lazy(url, options).with_context(context)?;
    let status = store.schema_status().await.with_context(context)?;
    store.close().await;
    writeln!(out, "database: {} ({})", crate::redact::url(url), status.backend)?;
    match status.version() {
        Some(v) => writeln!(out, "schema version: {v}")?,
        None => writeln!(out, "schema version: none (no migrations recorded)")?,
    }
    for m in &status.migrations {
        let description = if m.description.is_empty() {
            "(not in this build)"
        } else {
            &m.description
        };
        writeln!(out, "{:>6}  {:<28} {}", m.version, description, m.state)?;
    }
    if status.newer_than_this_build() {
        writeln!(out, "the database is newer than this build: upgrade it")?;
    } else if !status.up_to_date() {
        writeln!(
            out,
            "migrations are pending: `slavealloc serve` or `slavealloc dbinit` applies them"
        )?;
    }
    Ok(status.up_to_date())
}

/// Where dumps of replaced rows go: beside a SQLite file, else in the
/// working directory, unless a directory is given.
#[derive(Debug, Clone)]
pub struct Backups {
    dir: PathBuf,
    stem: String,
}

impl Backups {
    /// The backup place for the database at `url`.
    pub fn new(url: &str, dir: Option<PathBuf>) -> Self {
        let sqlite_file = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .map(|rest| rest.split('?').next().unwrap_or_default())
            .filter(|p| !p.is_empty() && !p.starts_with(":memory:"))
            .map(PathBuf::from);
        let (default_dir, stem) = match sqlite_file {
            Some(file) => (
                file.parent().map(Path::to_path_buf).unwrap_or_default(),
                file.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            None => {
                let db = url
                    .split('?')
                    .next()
                    .unwrap_or_default()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default();
                let db: String = db
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                    .collect();
                (PathBuf::new(), format!("slavealloc-{db}"))
            }
        };
        let dir = dir.unwrap_or(default_dir);
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        Self { dir, stem }
    }

    /// Writes `dump` to a new file named for the database, the operation and
    /// the time, and returns its path.
    ///
    /// # Errors
    /// When it cannot be written; then nothing must be replaced.
    pub fn write(&self, dump: &Dump, operation: &str) -> anyhow::Result<PathBuf> {
        let stamp = OffsetDateTime::now_utc()
            .format(format_description!("[year][month][day]T[hour][minute][second]Z"))
            .context("formatting the time")?;
        let bytes = dumpfile::to_bytes(dump)?;
        let mut n = 0;
        loop {
            let suffix = if n == 0 { String::new() } else { format!("-{n}") };
            let path = self
                .dir
                .join(format!("{}.before-{operation}-{stamp}{suffix}.json", self.stem));
            if !path.exists() {
                dumpfile::write_atomically(&path, &bytes, true)
                    .context("cannot write the dump of the rows about to be replaced; nothing was changed")?;
                return Ok(path);
            }
            n += 1;
        }
    }
}

fn row_count(dump: &Dump) -> usize {
    dump.tables.values().map(Vec::len).sum()
}

/// Replaces every row of `store` with `dump`'s. A database that holds rows
/// is refused unless `force`; with `force`, its rows are dumped first, read
/// in the same transaction as the replacement, which keeps other writers out
/// until it commits: a write committed by another client meanwhile is in the
/// dump or survives, never lost. Says where the dump went.
async fn replace_guarded(
    store: &dyn DumpStore,
    dump: &Dump,
    force: bool,
    backups: &Backups,
    operation: &str,
    failed: &str,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    // What the save step did, for the message once the replacement commits.
    let saved: Mutex<Option<(usize, PathBuf)>> = Mutex::new(None);
    let refused: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let save = |replaced: &Dump| -> Result<(), StoreError> {
        let rows = row_count(replaced);
        if rows == 0 {
            return Ok(());
        }
        let outcome = if force {
            backups.write(replaced, operation).map(|path| {
                *saved.lock().unwrap_or_else(PoisonError::into_inner) = Some((rows, path));
            })
        } else {
            Err(anyhow::anyhow!(
                "the database already holds {rows} rows, which {operation} would replace: give --force to replace them (a dump of them is written first)"
            ))
        };
        outcome.map_err(|e| {
            let message = format!("{e:#}");
            *refused.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
            StoreError::Other(message)
        })
    };
    if let Err(e) = store.replace_all_saving(dump, &save).await {
        if let Some(refusal) = refused.into_inner().unwrap_or_else(PoisonError::into_inner) {
            return Err(refusal);
        }
        return Err(anyhow::Error::new(e).context(failed.to_owned()));
    }
    if let Some((rows, path)) = saved.into_inner().unwrap_or_else(PoisonError::into_inner) {
        writeln!(
            err,
            "{operation}: the {rows} rows being replaced were dumped to {}",
            path.display()
        )?;
    }
    Ok(())
}

/// `dbinit [DUMPFILE]`: the schema exists (the store created it when
/// opened); this loads the dump, or empties the database, in one
/// transaction.
///
/// # Errors
/// An unusable dump file (nothing touched); a non-empty database without
/// `force`; a dump the database refuses (nothing changed).
pub async fn dbinit(
    store: &dyn DumpStore,
    dumpfile: Option<&Path>,
    force: bool,
    backups: &Backups,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    // The file is read and checked before the database is touched.
    let dump = match dumpfile {
        Some(path) => dumpfile::read(path)?,
        None => Dump::default(),
    };
    let failed = "loading the dump failed; the database is unchanged";
    replace_guarded(store, &dump, force, backups, "dbinit", failed, err).await?;
    writeln!(err, "dbinit: the database holds {} rows", row_count(&dump))?;
    Ok(())
}

/// `dbdump [DUMPFILE]`: every table as JSON, to the file (written whole or
/// not at all) or to `out`.
///
/// # Errors
/// The store's, or the file's.
pub async fn dbdump(store: &dyn DumpStore, dumpfile: Option<&Path>, out: &mut dyn Write) -> anyhow::Result<()> {
    let bytes = dumpfile::to_bytes(&store.export().await?)?;
    match dumpfile {
        Some(path) => dumpfile::write_atomically(path, &bytes, false),
        None => out.write_all(&bytes).context("writing the dump"),
    }
}

/// `dbcopy --from URL --to URL`: replaces the target's rows with the
/// source's, ids kept, in one transaction.
///
/// # Errors
/// As for [`dbinit`].
pub async fn dbcopy(
    from: &dyn DumpStore,
    to: &dyn DumpStore,
    force: bool,
    backups: &Backups,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    let dump = from.export().await.context("reading the source database")?;
    let failed = "writing the target database failed; it is unchanged";
    replace_guarded(to, &dump, force, backups, "dbcopy", failed, err).await?;
    writeln!(err, "dbcopy: copied {} rows", row_count(&dump))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use slavealloc_store_memory::MemoryStore;

    use super::*;

    #[test]
    fn backups_go_beside_the_sqlite_file_or_in_the_working_directory() {
        let b = Backups::new("sqlite:///var/lib/slavealloc/prod.db?mode=rwc", None);
        assert_eq!(
            (b.dir.as_path(), b.stem.as_str()),
            (Path::new("/var/lib/slavealloc"), "prod.db")
        );
        let b = Backups::new("sqlite://slavealloc.db", None);
        assert_eq!((b.dir.as_path(), b.stem.as_str()), (Path::new("."), "slavealloc.db"));
        let b = Backups::new("mysql://root:pw@db/slavealloc_prod?ssl=false", Some("/backups".into()));
        assert_eq!(
            (b.dir.as_path(), b.stem.as_str()),
            (Path::new("/backups"), "slavealloc-slavealloc_prod")
        );
    }

    fn pools(names: &[&str]) -> Dump {
        let mut d = Dump::default();
        let rows = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                [
                    ("poolid".to_owned(), slavealloc_domain::Value::Int(i as i64 + 1)),
                    ("name".to_owned(), slavealloc_domain::Value::Text((*n).into())),
                ]
                .into()
            })
            .collect();
        d.tables.insert(slavealloc_domain::Table::Pools, rows);
        d
    }

    #[tokio::test]
    async fn replacing_rows_needs_force_and_leaves_a_dump_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let backups = Backups::new("mysql://x/db", Some(dir.path().into()));
        let source = MemoryStore::from_dump(&pools(&["new"])).unwrap();
        let target = MemoryStore::from_dump(&pools(&["old", "older"])).unwrap();
        let mut err = Vec::new();
        let refused = dbcopy(&source, &target, false, &backups, &mut err).await.unwrap_err();
        assert!(refused.to_string().contains("holds 2 rows"), "{refused}");
        assert_eq!(target.row_count().await.unwrap(), 2);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        dbcopy(&source, &target, true, &backups, &mut err).await.unwrap();
        assert_eq!(target.export().await.unwrap(), source.export().await.unwrap());
        let backup = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
        let saved = dumpfile::read(&backup).unwrap();
        assert_eq!(saved.rows(slavealloc_domain::Table::Pools).len(), 2);
        assert!(String::from_utf8(err).unwrap().contains(&backup.display().to_string()));
    }

    #[tokio::test]
    async fn a_bad_dump_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.json");
        std::fs::write(
            &bad,
            "{\"format\": \"slavealloc-dump\", \"version\": 1, \"tables\": {\"slaves\": [{}]}}",
        )
        .unwrap();
        let store = MemoryStore::from_dump(&pools(&["keep"])).unwrap();
        let backups = Backups::new("sqlite::memory:", Some(dir.path().into()));
        let e = dbinit(&store, Some(&bad), true, &backups, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("unchanged"), "{e:#}");
        assert_eq!(
            store.export().await.unwrap(),
            MemoryStore::from_dump(&pools(&["keep"]))
                .unwrap()
                .export()
                .await
                .unwrap()
        );
    }
}
