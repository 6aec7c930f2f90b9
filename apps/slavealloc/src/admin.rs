//! The admin subcommands: the original's command line (docs/compatibility.md §6) and
//! a few new ones.
//!
//! Two families. `dbinit`, `dbdump`, `dbimport` and `dbcopy` work on a
//! database directly (`-D/--db`), through the domain's [`slavealloc_domain::DumpStore`] port.
//! `gettac`, `lock`, `enable`, `list`, ... go through a running allocator's
//! REST API (`-A/--api`) through the domain's [`AdminApi`] port, so their
//! logic ([`api`]) is tested in process over [`slavealloc_domain::LocalAdmin`].

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use slavealloc_domain::AdminApi;

pub mod api;
pub mod db;
mod dumpfile;
pub mod import;
pub mod maintenance;
mod output;
mod pickle;

pub use output::Format;

/// The default database: the original's `sqlite:///slavealloc.db`, a
/// SQLite file in the working directory.
pub const DEFAULT_DB: &str = "sqlite:slavealloc.db";
/// The default REST API base.
pub const DEFAULT_API: &str = "http://127.0.0.1:8010/api";

/// `-A/--api` and `--token`, taken by the subcommands that talk to the REST
/// API (after their name) and, as in the original, before the subcommand's
/// name; only those subcommands take them.
#[derive(Debug, Clone, Default, Args)]
pub struct ApiArgs {
    /// The allocator's REST API base URL (`/gettac` is found next to it)
    /// [env: SLAVEALLOC_API] [default: http://127.0.0.1:8010/api]
    #[arg(short = 'A', long = "api", value_name = "URL")]
    pub api: Option<String>,
    /// A write token, sent as `Authorization: Bearer <token>` [env: SLAVEALLOC_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
}

impl ApiArgs {
    /// These, else `outer` (given before the subcommand's name), else the
    /// environment, else the default: the command line wins over the
    /// environment wherever on it they are.
    fn resolve(&self, outer: &ApiArgs) -> (String, Option<String>) {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let api = (self.api.clone().or_else(|| outer.api.clone()))
            .or_else(|| env("SLAVEALLOC_API"))
            .unwrap_or_else(|| DEFAULT_API.to_owned());
        let token = (self.token.clone().or_else(|| outer.token.clone())).or_else(|| env("SLAVEALLOC_TOKEN"));
        (api, token)
    }
}

/// `-D/--db`, for the subcommands that work on a database directly.
#[derive(Debug, Clone, Args)]
pub struct DbArg {
    /// Database URL: sqlite://FILE, mysql://USER@HOST/DB or
    /// postgres://USER@HOST/DB.
    #[arg(short = 'D', long = "db", env = "SLAVEALLOC_DB", default_value = DEFAULT_DB)]
    pub db: String,
}

/// The admin subcommands: those on a database, those through the REST API,
/// and a few of their own.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    #[command(flatten)]
    Database(DatabaseCommand),
    #[command(flatten)]
    Api(ApiCommand),
    /// The database's schema.
    #[command(subcommand)]
    Db(DbCommand),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Print the version and exit.
    Version,
}

/// The subcommands that work on a database directly (`-D/--db`).
#[derive(Debug, Subcommand)]
pub enum DatabaseCommand {
    /// Create the schema in a database, optionally loading a dump (JSON from
    /// dbdump, or a pickle from the original Python dbdump).
    ///
    /// A database that already holds rows is left alone unless --force; with
    /// --force, a dump of what is about to be replaced is written first.
    Dbinit(DbinitArgs),
    /// Dump every table as versioned JSON, rows in primary-key order.
    Dbdump(DbdumpArgs),
    /// Add slaves, masters and passwords from the original's CSV files, in
    /// one transaction: one bad row and nothing is written.
    Dbimport(import::ImportArgs),
    /// Copy a whole database to another, of any backend (refresh staging from
    /// production).
    Dbcopy(DbcopyArgs),
}

/// The subcommands that go through a running allocator's REST API
/// (`-A/--api`, `--token`).
#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// Print the buildbot.tac of each slave, allocating it a master.
    Gettac(GettacArgs),
    /// Lock a slave to a master (`lock SLAVE MASTER`), several with `--to
    /// MASTER`, or unlock them with -u.
    Lock(LockArgs),
    /// Unlock a locked slave.
    Unlock(SlaveArgs),
    /// Enable slaves, ending their disables; -m replaces their notes.
    Enable(EnableArgs),
    /// Disable slaves (their tac then starts no worker); with -m NOTE the
    /// disable keeps the note (and replaces the slave notes, as the
    /// original did) and may end by itself (--until).
    Disable(EnableArgs),
    /// Print a slave's notes, or set them on several with -m.
    Notes(EnableArgs),
    /// Set columns of several slaves by name: `set SLAVE... environment=staging
    /// pool=tests-linux` (names, not ids; `locked_master=` unlocks).
    Set(SetArgs),
    /// List slaves or masters.
    List(ListArgs),
    /// Show one slave or master, every column, with the names of what it
    /// refers to.
    Show(ShowArgs),
    /// Drain a master with a note (and an end): no slave is newly given it;
    /// with --graceful its workers are shut down through Buildbot, a few at
    /// a time, and move by themselves (runslave --supervise).
    Drain(DrainArgs),
    /// End a master's drain: enable it again.
    Undrain(MasterArgs),
    /// The silo × pool report: how many slaves each silo has in each pool.
    Silos(SilosArgs),
    /// Where the slaves of these masters would go if they were drained, and
    /// each pool × silo's spread before and after. Writes nothing.
    Whatif(WhatifArgs),
    /// What changed: the audit log, newest first, of one slave or master or
    /// of everything.
    History(HistoryArgs),
    /// Why a slave gets the master it gets: every master of its pool, its
    /// peer count and why it was or was not chosen. Records nothing.
    Why(SlaveArgs),
    /// Where the live fleet differs from what was recorded: slaves
    /// connected elsewhere, in another pool, unknown workers, the live
    /// spread. Exits 1 when there is drift.
    Drift(SilosArgs),
}

impl ApiCommand {
    /// Its `-A/--api` and `--token`.
    fn api_args(&self) -> &ApiArgs {
        match self {
            ApiCommand::Gettac(a) => &a.api,
            ApiCommand::Lock(a) => &a.api,
            ApiCommand::Unlock(a) | ApiCommand::Why(a) => &a.api,
            ApiCommand::Whatif(a) => &a.api,
            ApiCommand::History(a) => &a.api,
            ApiCommand::Enable(a) | ApiCommand::Disable(a) | ApiCommand::Notes(a) => &a.api,
            ApiCommand::Set(a) => &a.api,
            ApiCommand::Undrain(a) => &a.api,
            ApiCommand::List(a) => &a.api,
            ApiCommand::Show(a) => &a.api,
            ApiCommand::Drain(a) => &a.api,
            ApiCommand::Silos(a) | ApiCommand::Drift(a) => &a.api,
        }
    }
}

/// `db ...`: the database itself.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Print which of this build's schema migrations the database has (and
    /// any a newer build applied). Reads only; exits 1 while some are
    /// pending or differ from this build's.
    Status(DbArg),
}

/// Options of `dbinit`.
#[derive(Debug, Args)]
pub struct DbinitArgs {
    #[command(flatten)]
    db: DbArg,
    /// A dump to load: JSON from dbdump, or a pickle from the original's.
    dumpfile: Option<std::path::PathBuf>,
    /// Replace a database that already holds rows (after dumping them).
    #[arg(long)]
    force: bool,
    /// Where the dump of replaced rows goes [default: beside the SQLite file,
    /// or the working directory].
    #[arg(long)]
    backup_dir: Option<std::path::PathBuf>,
}

/// Options of `dbdump`.
#[derive(Debug, Args)]
pub struct DbdumpArgs {
    #[command(flatten)]
    db: DbArg,
    /// The file to write [default: standard output].
    dumpfile: Option<std::path::PathBuf>,
}

/// Options of `dbcopy`.
#[derive(Debug, Args)]
pub struct DbcopyArgs {
    /// The database to copy.
    #[arg(long)]
    from: String,
    /// The database to replace.
    #[arg(long)]
    to: String,
    /// Replace a target that already holds rows (after dumping them).
    #[arg(long)]
    force: bool,
    /// Where the dump of replaced rows goes [default: beside the SQLite file,
    /// or the working directory].
    #[arg(long)]
    backup_dir: Option<std::path::PathBuf>,
}

/// Options of `gettac`.
#[derive(Debug, Args)]
pub struct GettacArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Slave host names (unqualified).
    #[arg(required = true)]
    slaves: Vec<String>,
    /// Don't actually allocate: show the tac without recording anything.
    #[arg(short = 'n', long = "noop")]
    noop: bool,
}

/// Which slaves: names, a file of names, or the list filters.
#[derive(Debug, Clone, Default, Args)]
pub struct SelectArgs {
    /// Slave names.
    slaves: Vec<String>,
    /// Also the names in FILE, one per line (`#` comments; `-`: standard
    /// input).
    #[arg(long, value_name = "FILE")]
    from_file: Option<std::path::PathBuf>,
    /// Instead of names: the slaves of this pool (repeatable).
    #[arg(long)]
    pool: Vec<String>,
    /// Instead of names: the slaves of this environment (repeatable).
    #[arg(long)]
    environment: Vec<String>,
    /// Instead of names: the slaves whose current master is this one
    /// (repeatable).
    #[arg(long)]
    master: Vec<String>,
    /// Instead of names: the slaves not seen connected for this long (7d),
    /// or never.
    #[arg(long, value_parser = slavealloc_domain::live::parse_age)]
    stale: Option<std::time::Duration>,
    /// Show what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
}

impl SelectArgs {
    fn selection(&self, names: Vec<String>) -> maintenance::Selection {
        maintenance::Selection {
            names,
            from_file: self.from_file.clone(),
            pool: self.pool.clone(),
            environment: self.environment.clone(),
            master: self.master.clone(),
            stale: self.stale,
        }
    }

    /// One slave named, nothing else: the original's form.
    fn single(&self) -> Option<&str> {
        let plain = self.from_file.is_none()
            && self.pool.is_empty()
            && self.environment.is_empty()
            && self.master.is_empty()
            && self.stale.is_none()
            && !self.dry_run;
        match self.slaves.as_slice() {
            [one] if plain => Some(one),
            _ => None,
        }
    }
}

/// Options of `lock`.
#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// `SLAVE MASTER`; with --to or -u, the slaves.
    #[command(flatten)]
    select: SelectArgs,
    /// Lock the slaves named (or filtered) to this master.
    #[arg(long, value_name = "MASTER", conflicts_with = "unlock")]
    to: Option<String>,
    /// Unlock instead.
    #[arg(short = 'u', long)]
    unlock: bool,
}

/// Options of `set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Slave names and KEY=VALUE assignments.
    #[command(flatten)]
    select: SelectArgs,
    /// Why: kept in each audit entry.
    #[arg(short = 'm', long = "message")]
    message: Option<String>,
}

/// A master's nickname alone.
#[derive(Debug, Args)]
pub struct MasterArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The master's nickname.
    master: String,
}

/// A slave name alone.
#[derive(Debug, Args)]
pub struct SlaveArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The slave.
    slave: String,
}

/// Options of `history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// A slave name or a master nickname; none: everything.
    name: Option<String>,
    /// Only entries at or after this: an age (90m, 1d, 2w) or a UTC time
    /// (2026-12-01T07:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Only entries at or before this (same forms).
    #[arg(long)]
    until: Option<String>,
    /// Only entries by this actor (a token's name, an address, gettac).
    #[arg(long)]
    actor: Option<String>,
    /// Only edits (no allocations).
    #[arg(long, conflicts_with = "allocations")]
    edits: bool,
    /// Only allocations.
    #[arg(long)]
    allocations: bool,
    /// At most this many entries.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[command(flatten)]
    format: FormatArgs,
}

/// Options of `whatif`.
#[derive(Debug, Args)]
pub struct WhatifArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// A master to drain, by nickname (repeatable).
    #[arg(long, required_unless_present = "add")]
    drain: Vec<String>,
    /// A master to add, as NICKNAME@POOL (repeatable): its pool's slaves
    /// rebalance onto it.
    #[arg(long, value_name = "NICKNAME@POOL")]
    add: Vec<String>,
    #[command(flatten)]
    format: FormatArgs,
}

/// Options of `enable`, `disable` and `notes`.
#[derive(Debug, Args)]
pub struct EnableArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    select: SelectArgs,
    /// Why (disable: the disable's note); also the new slave notes.
    #[arg(short = 'm', long = "message")]
    message: Option<String>,
    /// disable -m only: when the slaves come back by themselves (2h,
    /// +30min, 1d, or a time like 2026-12-02T10:00:00Z).
    #[arg(long, requires = "message")]
    until: Option<String>,
}

/// What `list` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListWhat {
    /// Slaves (those of the decommissioned environment left out).
    Slaves,
    /// Masters.
    Masters,
}

/// Options of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Slaves or masters.
    what: ListWhat,
    /// Only those of this pool (repeatable).
    #[arg(long)]
    pool: Vec<String>,
    /// Only enabled ones.
    #[arg(long, conflicts_with = "disabled")]
    enabled: bool,
    /// Only disabled ones.
    #[arg(long)]
    disabled: bool,
    /// Only slaves whose recorded (current) master is this one (repeatable).
    #[arg(long)]
    master: Vec<String>,
    /// Only slaves connected to a master now (as the last polls saw).
    #[arg(long, conflicts_with = "disconnected")]
    connected: bool,
    /// Only slaves not connected now (disconnected, unknown or never seen).
    #[arg(long)]
    disconnected: bool,
    /// Only slaves not seen connected for this long (30m, 36h, 7d, 2w), or
    /// never.
    #[arg(long, value_parser = slavealloc_domain::live::parse_age)]
    stale: Option<std::time::Duration>,
    #[command(flatten)]
    format: FormatArgs,
}

/// `--format`.
#[derive(Debug, Args)]
pub struct FormatArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Options of `show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// A slave name or a master nickname.
    name: String,
    /// Output format (`table`: one `column: value` line each).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Options of `drain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The master's nickname.
    master: String,
    /// Why (required: whoever finds the master drained reads it).
    #[arg(short = 'm', long = "message", required = true)]
    message: String,
    /// When it comes back by itself: 2h, +30min, 1d, or a time like
    /// 2026-12-02T10:00:00Z.
    #[arg(long)]
    until: Option<String>,
    /// Ask the master's Buildbot to shut its workers down gracefully
    /// (after their build), a few at a time.
    #[arg(long)]
    graceful: bool,
    /// Follow the drain until no worker is connected to the master.
    #[arg(long)]
    watch: bool,
    /// How often --watch asks (hidden: for tests).
    #[arg(long, hide = true, default_value = "2s", value_parser = slavealloc_domain::live::parse_age)]
    watch_every: std::time::Duration,
}

/// Options of `silos`.
#[derive(Debug, Args)]
pub struct SilosArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    format: FormatArgs,
}

/// Options of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

/// Runs one admin subcommand.
///
/// # Errors
/// The subcommand's, in words.
pub async fn run(cmd: AdminCommand, outer: ApiArgs) -> anyhow::Result<ExitCode> {
    // Not locked: dbimport's progress bar writes to stderr too.
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    let mut term = api::Term {
        out: &mut stdout,
        err: &mut stderr,
    };
    match cmd {
        AdminCommand::Database(DatabaseCommand::Dbinit(a)) => {
            let store = db::open(&a.db.db).await?;
            let backups = db::Backups::new(&a.db.db, a.backup_dir);
            db::dbinit(&store, a.dumpfile.as_deref(), a.force, &backups, term.err).await?;
        }
        AdminCommand::Database(DatabaseCommand::Dbdump(a)) => {
            let store = db::open_existing(&a.db.db).await?;
            db::dbdump(&store, a.dumpfile.as_deref(), term.out).await?;
        }
        AdminCommand::Database(DatabaseCommand::Dbimport(a)) => {
            let store = db::open(&a.db.db).await?;
            import::dbimport(&store, &a, term.err).await?;
        }
        AdminCommand::Database(DatabaseCommand::Dbcopy(a)) => {
            let from = db::open_existing(&a.from).await?;
            let to = db::open(&a.to).await?;
            let backups = db::Backups::new(&a.to, a.backup_dir);
            db::dbcopy(&from, &to, a.force, &backups, term.err).await?;
        }
        AdminCommand::Db(DbCommand::Status(a)) => {
            if !db::status(&a.db, term.out).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        AdminCommand::Completions(a) => {
            let mut cmd = <crate::Cli as clap::CommandFactory>::command();
            clap_complete::generate(a.shell, &mut cmd, "slavealloc", term.out);
        }
        AdminCommand::Version => writeln!(term.out, "slavealloc {}", env!("CARGO_PKG_VERSION"))?,
        AdminCommand::Api(cmd) => {
            let (api, token) = cmd.api_args().resolve(&outer);
            let client = slavealloc_client_http::HttpAdmin::new(&api, token);
            run_api(cmd, &client, &mut term).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a subcommand that goes through the REST API.
async fn run_api(cmd: ApiCommand, client: &dyn AdminApi, term: &mut api::Term<'_>) -> anyhow::Result<()> {
    match cmd {
        ApiCommand::Gettac(a) => api::gettac(client, term, &a.slaves, !a.noop).await,
        ApiCommand::Lock(a) => lock(client, term, a).await,
        ApiCommand::Unlock(a) => api::unlock(client, term, &a.slave).await,
        ApiCommand::Enable(a) => {
            if a.until.is_some() {
                anyhow::bail!("--until: only a disable ends by itself");
            }
            let write = maintenance::enabled_write(true, a.message, None, a.select.dry_run);
            if let Some(slave) = a.select.single() {
                return maintenance::set_enabled_one(client, term, slave, &write).await;
            }
            let sel = a.select.selection(a.select.slaves.clone());
            maintenance::bulk(client, term, &sel, &write, "enable").await
        }
        ApiCommand::Disable(a) => {
            let write = maintenance::enabled_write(false, a.message, a.until, a.select.dry_run);
            if let Some(slave) = a.select.single() {
                return maintenance::set_enabled_one(client, term, slave, &write).await;
            }
            let sel = a.select.selection(a.select.slaves.clone());
            maintenance::bulk(client, term, &sel, &write, "disable").await
        }
        ApiCommand::Notes(a) => match (a.select.single(), a.message) {
            (Some(slave), message) => api::notes(client, term, slave, message).await,
            (None, None) => anyhow::bail!("notes: -m NOTES to set them on several slaves"),
            (None, Some(m)) => {
                let write = maintenance::BulkWrite {
                    set: [("notes".to_owned(), serde_json::Value::String(m))]
                        .into_iter()
                        .collect(),
                    note: None,
                    until: None,
                    dry_run: a.select.dry_run,
                };
                let sel = a.select.selection(a.select.slaves.clone());
                maintenance::bulk(client, term, &sel, &write, "notes").await
            }
        },
        ApiCommand::Set(a) => {
            let (assignments, names): (Vec<String>, Vec<String>) =
                a.select.slaves.iter().cloned().partition(|s| s.contains('='));
            if assignments.is_empty() {
                anyhow::bail!("set: say what to set, as KEY=VALUE (environment=staging)");
            }
            let set = assignments
                .iter()
                .map(|s| maintenance::assignment(s))
                .collect::<anyhow::Result<_>>()?;
            let write = maintenance::BulkWrite {
                set,
                note: a.message,
                until: None,
                dry_run: a.select.dry_run,
            };
            maintenance::bulk(client, term, &a.select.selection(names), &write, "set").await
        }
        ApiCommand::Undrain(a) => maintenance::undrain(client, term, &a.master).await,
        ApiCommand::List(a) => {
            let enabled = match (a.enabled, a.disabled) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let live = api::LiveSelection {
                master: a.master,
                connected: match (a.connected, a.disconnected) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                stale: a.stale,
            };
            api::list(client, term, a.what, &a.pool, enabled, &live, a.format.format).await
        }
        ApiCommand::Show(a) => api::show(client, term, &a.name, a.format).await,
        ApiCommand::Drain(a) => {
            let d = maintenance::Drain {
                note: a.message,
                until: a.until,
                graceful: a.graceful,
                watch: a.watch.then_some(a.watch_every),
            };
            maintenance::drain(client, term, &a.master, &d).await
        }
        ApiCommand::Silos(a) => api::silos(client, term, a.format.format).await,
        ApiCommand::Drift(a) => api::drift(client, term, a.format.format).await,
        ApiCommand::Why(a) => api::why(client, term, &a.slave).await,
        ApiCommand::Whatif(a) => api::whatif(client, term, &a.drain, &a.add, a.format.format).await,
        ApiCommand::History(a) => {
            let kind = match (a.edits, a.allocations) {
                (true, _) => Some("edit"),
                (_, true) => Some("allocation"),
                _ => None,
            };
            let query = api::HistoryQuery {
                name: a.name,
                since: a.since,
                until: a.until,
                actor: a.actor,
                kind,
                limit: a.limit,
            };
            api::history(client, term, &query, a.format.format).await
        }
    }
}

/// `lock SLAVE MASTER` (the original's), `lock --to MASTER SLAVES...`,
/// `lock -u SLAVE...`.
async fn lock(client: &dyn AdminApi, term: &mut api::Term<'_>, a: LockArgs) -> anyhow::Result<()> {
    let s = &a.select;
    match (&a.to, a.unlock, s.slaves.as_slice()) {
        (None, false, [slave, master])
            if !s.selection(Vec::new()).has_filter() && s.from_file.is_none() && !s.dry_run =>
        {
            api::lock(client, term, slave, master).await
        }
        (None, false, _) => anyhow::bail!("lock SLAVE MASTER, or lock --to MASTER SLAVE... (or filters)"),
        (None, true, [slave]) if s.single().is_some() => api::unlock(client, term, slave).await,
        (to, unlock, _) => {
            let master = if unlock {
                serde_json::Value::Null
            } else {
                serde_json::Value::String(to.clone().unwrap_or_default())
            };
            let write = maintenance::BulkWrite {
                set: [("locked_master".to_owned(), master)].into_iter().collect(),
                note: None,
                until: None,
                dry_run: s.dry_run,
            };
            let verb = if unlock { "unlock" } else { "lock" };
            maintenance::bulk(client, term, &s.selection(s.slaves.clone()), &write, verb).await
        }
    }
}
