//! The ports: what the domain needs from the outside, one trait per concern.
//!
//! Storage adapters implement [`AllocationStore`] (the hot path),
//! [`InventoryStore`] (the admin reads and writes of the REST API) and
//! [`DumpStore`] (whole-database export and import); a tac renderer
//! implements [`TacRenderer`], and a [`RenderExecutor`] says where it
//! runs; [`Host`] gives the time and the allocator's
//! host name, so that tests are deterministic.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::audit::{AuditEntry, AuditQuery, NewAuditEntry};
use crate::dump::Dump;
use crate::entities::{Master, MasterId, PoolId, Silo, Slave, SlaveId, SlavePassword, TacTemplate};
use crate::error::{RenderError, StoreError};
use crate::live::{BootRecord, Lease, LivePeers, LiveState, PollRecord};
use crate::name::SlaveName;
use crate::schema::{Row, Table};

/// Whether a unit of work will write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Read only: `/api/gettac`, `gettac -n`. Takes no locks.
    Peek,
    /// Will record allocations: must serialise against every other
    /// committing unit that touches the same pools.
    Commit,
}

/// Storage for allocations.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AllocationStore: Send + Sync {
    /// Starts a unit of work.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no connection can be had in time;
    /// [`StoreError::Retryable`] when the database asks for a retry.
    async fn begin(&self, intent: Intent) -> Result<Box<dyn AllocationUnit>, StoreError>;
}

/// One atomic allocation transaction: read a consistent [`Snapshot`], record
/// the decisions, commit. Dropping it without [`AllocationUnit::commit`]
/// rolls everything back.
///
/// With [`Intent::Commit`], from [`AllocationUnit::snapshot`] until commit or
/// drop, no other committing unit may read or change the allocation state of
/// the pools the snapshot covers (SQL: the pools' rows locked `FOR UPDATE`,
/// or SQLite's single writer; in memory: a lock). This is what keeps two
/// allocators, in one process or two, from deciding from the same counts.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AllocationUnit: Send {
    /// Loads what deciding for `names` needs (see [`Snapshot`] for exactly
    /// what). Called at most once per unit; names are distinct.
    ///
    /// # Errors
    /// [`StoreError::Retryable`] on deadlock or serialization failure,
    /// [`StoreError::Unavailable`] when the connection is lost, else
    /// [`StoreError::Other`].
    async fn snapshot(&mut self, names: &[SlaveName]) -> Result<Snapshot, StoreError>;

    /// The live facts of every slave of these (pool, silo)s, for
    /// [`crate::live::BalanceCount::Live`]; called after
    /// [`AllocationUnit::snapshot`], in the same unit, so under the same
    /// locks.
    ///
    /// # Errors
    /// As for [`AllocationUnit::snapshot`].
    async fn live_peers(&mut self, silos: &[(PoolId, Silo)]) -> Result<LivePeers, StoreError>;

    /// Sets `current_masterid` of each changed slave, appends the audit
    /// entries and replaces the boot record of each booted slave, inside
    /// the unit.
    ///
    /// # Errors
    /// As for [`AllocationUnit::snapshot`].
    async fn record(
        &mut self,
        changes: &[MasterChange],
        audit: &[NewAuditEntry],
        boots: &[BootRecord],
    ) -> Result<(), StoreError>;

    /// Makes everything recorded durable and releases the locks.
    ///
    /// # Errors
    /// As for [`AllocationUnit::snapshot`]; on error nothing was written.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// What the allocation rule needs to decide for a batch of slaves, read
/// consistently inside one [`AllocationUnit`].
///
/// Rows are behind [`Arc`]s so that they are shared rather than copied: a
/// store that keeps typed rows in memory hands out its own, and each
/// [`crate::rule::Decision`] shares the snapshot's. A snapshot is a
/// consistent view all the same: a store replaces a row it changes by a new
/// `Arc`, it never changes one it has handed out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The slave row for each requested name, in request order; `None` for
    /// an unknown name.
    pub slaves: Vec<Option<Arc<Slave>>>,
    /// Every master of every pool a found slave is in (enabled or not), and
    /// every master a found slave is locked to. Any order, no duplicates.
    pub masters: Vec<Arc<Master>>,
    /// Every `slave_passwords` row of those pools.
    pub passwords: Vec<Arc<SlavePassword>>,
    /// Every template a found slave names in `custom_tplid`.
    pub templates: Vec<Arc<TacTemplate>>,
    /// For each distinct (pool, silo) of the found slaves, how many slaves of
    /// that pool and silo have each master as `current_masterid` — all of
    /// them, the requesters included (the rule leaves each requester out of
    /// its own count).
    pub loads: Vec<SiloLoad>,
    /// The live facts of every slave of those (pool, silo)s, when the
    /// allocator counts on them ([`crate::live::BalanceCount::Live`]):
    /// read by [`AllocationUnit::live_peers`].
    pub live: Option<LivePeers>,
}

/// How the slaves of one pool and silo are spread over masters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiloLoad {
    /// The pool.
    pub poolid: PoolId,
    /// The silo.
    pub silo: Silo,
    /// `(masterid, number of slaves whose current_masterid is it)`; masters
    /// with no slave may be left out.
    pub per_master: Vec<(MasterId, u32)>,
}

/// A change of one slave's `current_masterid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterChange {
    /// The slave.
    pub slaveid: SlaveId,
    /// Its `current_masterid` before.
    pub from: Option<MasterId>,
    /// Its `current_masterid` after.
    pub to: Option<MasterId>,
}

/// Renders a buildbot.tac.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait TacRenderer: Send + Sync {
    /// Renders the whole file, header included.
    ///
    /// # Errors
    /// [`RenderError::UnknownPlaceholder`] when a template names a value
    /// that [`TacValues`] does not have; [`RenderError::Invalid`] when it
    /// cannot be parsed or evaluated. Never an empty or partial tac.
    fn render(&self, request: &TacRequest) -> Result<String, RenderError>;

    /// Checks a custom template's text before it is stored, so a broken
    /// template is refused when saved rather than when a slave boots. The
    /// default accepts everything.
    ///
    /// # Errors
    /// As for [`TacRenderer::render`].
    fn check_template(&self, _text: &str) -> Result<(), RenderError> {
        Ok(())
    }
}

/// Where and how [`TacRenderer::render`] runs for the tacs of one
/// allocation batch.
///
/// The [`crate::Allocator`] calls it after the batch's unit of work has
/// committed (or, for a peek, ended), so a slow template never holds the
/// allocation locks. The default, [`InlineRender`], renders on the calling
/// task; a server runs renders on a bounded thread pool with a time budget
/// so that one bad template fails only its own slaves.
#[async_trait]
pub trait RenderExecutor: Send + Sync {
    /// One result per request, in order: the tac, or why there is none.
    /// Never fewer results than requests (a missing one is reported by the
    /// allocator as a render error).
    async fn render_all(
        &self,
        renderer: Arc<dyn TacRenderer>,
        requests: Vec<TacRequest>,
    ) -> Vec<Result<String, RenderError>>;
}

/// Renders on the calling task, one request after another: for tests, the
/// CLI and any caller without a thread pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct InlineRender;

#[async_trait]
impl RenderExecutor for InlineRender {
    async fn render_all(
        &self,
        renderer: Arc<dyn TacRenderer>,
        requests: Vec<TacRequest>,
    ) -> Vec<Result<String, RenderError>> {
        requests.iter().map(|r| renderer.render(r)).collect()
    }
}

/// What a tac is generated from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TacRequest {
    /// When and where it was generated, for the header.
    pub header: TacHeader,
    /// What follows the header.
    pub body: TacBody,
}

/// The tac header's facts: `# generated: <ctime> on <fqdn>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TacHeader {
    /// Generation time.
    pub generated: SystemTime,
    /// The allocator's host name.
    pub host: String,
}

/// What follows the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TacBody {
    /// The slave is disabled: a program that says so and exits 0.
    Disabled {
        /// The slave's name, for the message.
        slavename: String,
    },
    /// A worker configuration.
    Enabled {
        /// The slave's custom template, or `None` for the default one.
        template: Option<TacTemplate>,
        /// The values to substitute.
        values: TacValues,
    },
}

/// The values a tac template is filled with; the names are the original's
/// placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TacValues {
    /// The master's fqdn.
    pub buildmaster_host: String,
    /// The master's pb_port.
    pub port: i32,
    /// The slave's name.
    pub slavename: String,
    /// The slave's basedir.
    pub basedir: String,
    /// The slave's password.
    pub passwd: String,
}

/// The machine the allocator runs on: its clock and its name.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait Host: Send + Sync {
    /// The current time.
    fn now(&self) -> SystemTime;
    /// The allocator's fully qualified host name.
    fn fqdn(&self) -> String;
}

/// A [`Host`] that always answers the same: for tests and golden files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedHost {
    /// What [`Host::now`] answers.
    pub now: SystemTime,
    /// What [`Host::fqdn`] answers.
    pub fqdn: String,
}

impl Host for FixedHost {
    fn now(&self) -> SystemTime {
        self.now
    }
    fn fqdn(&self) -> String {
        self.fqdn.clone()
    }
}

pub use crate::audit::Actor;

/// The admin reads and writes behind the REST API, on generic [`Row`]s
/// described by [`Table`]'s metadata. Rows the store returns carry every
/// column of the table; lists are in primary-key order.
///
/// Every write runs in one transaction together with the audit entry it
/// appends (see [`crate::audit::NewAuditEntry::for_write`]).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait InventoryStore: Send + Sync {
    /// Every row of `table`, in primary-key order.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Other`].
    async fn list(&self, table: Table) -> Result<Vec<Row>, StoreError>;

    /// At most `limit` rows of `table` whose primary key is above `after`
    /// (from the first when `None`), in primary-key order: a long listing
    /// read a page at a time, so that no reader holds a whole fleet. A
    /// table without a primary key is one page: every row for `None`,
    /// none after. The default reads the whole table; stores override it.
    ///
    /// # Errors
    /// As for [`InventoryStore::list`].
    async fn list_page(&self, table: Table, after: Option<i64>, limit: usize) -> Result<Vec<Row>, StoreError> {
        let Some(id) = table.id_column() else {
            return if after.is_none() {
                self.list(table).await
            } else {
                Ok(Vec::new())
            };
        };
        let above =
            |r: &Row| after.is_none_or(|a| r.get(id).and_then(crate::schema::Value::as_int).is_some_and(|k| k > a));
        Ok(self.list(table).await?.into_iter().filter(above).take(limit).collect())
    }

    /// One row by primary key; `Ok(None)` when absent.
    ///
    /// # Errors
    /// As for [`InventoryStore::list`].
    async fn get(&self, table: Table, id: i32) -> Result<Option<Row>, StoreError>;

    /// One row by its unique name column ([`Table::name_column`]); `Ok(None)`
    /// when absent or when the table has none.
    ///
    /// # Errors
    /// As for [`InventoryStore::list`].
    async fn find_by_name(&self, table: Table, name: &str) -> Result<Option<Row>, StoreError>;

    /// Creates a row from checked values ([`Table::parse_insert`]) and
    /// returns it whole, id included.
    ///
    /// # Errors
    /// [`StoreError::Duplicate`] for a unique key, [`StoreError::InvalidReference`]
    /// for a reference to a missing row; nothing written.
    async fn insert(&self, table: Table, row: Row, actor: Actor) -> Result<Row, StoreError>;

    /// Writes checked values ([`Table::parse_update`]) into one row and
    /// returns it whole. An empty `changes` writes nothing but still fails
    /// on a missing row.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Duplicate`],
    /// [`StoreError::InvalidReference`]; nothing written.
    async fn update(&self, table: Table, id: i32, changes: Row, actor: Actor) -> Result<Row, StoreError>;

    /// Writes the same checked changes into several rows of one table in
    /// one transaction, all or nothing, one audit entry per changed row
    /// (carrying `note`, see [`crate::inventory::with_note`]); answers each
    /// row before and after. A dry run checks and answers the same and
    /// keeps nothing.
    ///
    /// # Errors
    /// As for [`InventoryStore::update`], for any of the rows; nothing
    /// written.
    async fn update_many(
        &self,
        table: Table,
        ids: &[i32],
        changes: Row,
        note: Option<String>,
        dry_run: bool,
        actor: Actor,
    ) -> Result<Vec<(Row, Row)>, StoreError>;

    /// Deletes one row.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Referenced`] naming what still
    /// refers to it (see [`Table::referenced_by`]); nothing written.
    async fn delete(&self, table: Table, id: i32, actor: Actor) -> Result<(), StoreError>;

    /// Audit entries, newest first.
    ///
    /// # Errors
    /// As for [`InventoryStore::list`].
    async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;

    /// Deletes allocation entries (actor [`crate::audit::ALLOCATION_ACTOR`])
    /// written before `before`, oldest first, at most `batch` of them in
    /// one transaction; answers how many. Edits are never pruned.
    ///
    /// # Errors
    /// As for [`InventoryStore::list`].
    async fn prune_allocations(&self, before: SystemTime, batch: u32) -> Result<u64, StoreError>;

    /// A cheap round trip to the database, for health checks.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] with the reason.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The live fleet's state (see [`crate::live`]): what the pollers of the
/// Buildbot masters write and the API reads, and the lease that elects
/// the one daemon that polls.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait LiveStore: Send + Sync {
    /// Records one poll of one master in one transaction: its status and,
    /// when it answered, the presence of every worker it lists (slaves it
    /// listed as connected before and does not now become disconnected;
    /// names without a slave are kept as unknown workers). A failed poll
    /// leaves the presence of the master's workers as it was.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Other`]; nothing written.
    async fn record_poll(&self, poll: &PollRecord) -> Result<(), StoreError>;

    /// Everything known of the live fleet.
    ///
    /// # Errors
    /// As for [`LiveStore::record_poll`].
    async fn live_state(&self) -> Result<LiveState, StoreError>;

    /// Takes or renews the lease `name` for `holder` until `now + ttl`
    /// when it is free, lapsed or already `holder`'s, atomically against
    /// every other daemon on the database; answers the lease as it stands
    /// afterwards (another holder's, when it is not ours).
    ///
    /// # Errors
    /// As for [`LiveStore::record_poll`].
    async fn take_lease(&self, name: &str, holder: &str, now: SystemTime, ttl: Duration) -> Result<Lease, StoreError>;

    /// Gives the lease up if `holder` holds it, so that another daemon
    /// takes it at once instead of after it lapses.
    ///
    /// # Errors
    /// As for [`LiveStore::record_poll`].
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
}

/// What [`DumpStore::replace_all_saving`] calls with the rows it is about to
/// replace, inside its transaction; an error aborts the replacement.
pub trait SaveReplaced: Send + Sync {
    /// Saves `replaced`, or refuses with the reason.
    ///
    /// # Errors
    /// Whatever stops the replacement.
    fn save(&self, replaced: &Dump) -> Result<(), StoreError>;
}

impl<F: Fn(&Dump) -> Result<(), StoreError> + Send + Sync> SaveReplaced for F {
    fn save(&self, replaced: &Dump) -> Result<(), StoreError> {
        self(replaced)
    }
}

/// Whole-database export and import: backups, `dbinit DUMP`, `dbcopy`,
/// `dbimport`.
// The named lifetime of replace_all_saving is what mockall and async_trait
// agree on; the parentheses it needs trip unused_parens in the mock.
#[cfg_attr(any(test, feature = "mocks"), allow(unused_parens))]
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait DumpStore: Send + Sync {
    /// Every row of every table of [`Table::ALL`], rows in primary-key order.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Other`].
    async fn export(&self) -> Result<Dump, StoreError>;

    /// Replaces the contents of every table with the dump's, ids kept, in
    /// one transaction; afterwards new rows get ids above the largest
    /// loaded.
    ///
    /// # Errors
    /// Any; on error nothing changed.
    async fn replace_all(&self, dump: &Dump) -> Result<(), StoreError>;

    /// [`DumpStore::replace_all`] that first hands the rows it is about to
    /// replace to `save` (which writes the backup, or refuses), all in one
    /// transaction that keeps other writers out from the read to the commit:
    /// a write another client commits meanwhile is either in what `save` got
    /// or survives the replacement, never lost between the two.
    ///
    /// # Errors
    /// `save`'s error, or any other; on error nothing changed.
    async fn replace_all_saving<'s>(&self, dump: &Dump, save: &'s (dyn SaveReplaced + 's)) -> Result<(), StoreError>;

    /// Inserts the dump's rows, ids kept, next to the existing ones, in one
    /// transaction.
    ///
    /// # Errors
    /// [`StoreError::Duplicate`] or [`StoreError::InvalidReference`] naming
    /// the first bad row; on error nothing changed.
    async fn append(&self, dump: &Dump) -> Result<(), StoreError>;

    /// How many rows all tables hold together (dbinit refuses a non-empty
    /// database without `--force`).
    ///
    /// # Errors
    /// As for [`DumpStore::export`].
    async fn row_count(&self) -> Result<u64, StoreError>;
}
