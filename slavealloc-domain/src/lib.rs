//! # slavealloc-domain
//!
//! The heart of slavealloc: which Buildbot master each build machine
//! ("slave") gets when it boots, and the ports through which that decision
//! reads and records its state and renders the machine's `buildbot.tac`.
//!
//! This crate does no I/O. Storage, templating and transport are ports —
//! traits in [`ports`] — implemented by adapter crates beside it
//! (`slavealloc-store-sql`, `slavealloc-store-memory`,
//! `slavealloc-tac-minijinja`, ...). The main design decision: the
//! allocation rule is a pure function of a [`ports::Snapshot`] that a store
//! reads inside one atomic unit of work, so the rule is tested without a
//! database, every backend gets exactly the same rule, and a server can
//! decide a whole batch of requests from one snapshot and commit them
//! together ([`rule::Planner`]).
//!
//! ## The rule, in short
//! A slave belongs to a *pool* (which masters it may use) and a *silo*
//! (distro, bitlength, purpose, datacenter, trust level, environment). At
//! boot it is given, in order of precedence: nothing if it is disabled (its
//! tac refuses to start); the master it is *locked* to, whatever that
//! master's state; else the enabled master of its pool that serves the
//! fewest other slaves of its pool and silo, ties to the lowest masterid.
//! See [`rule`] for the details.
//!
//! ## Embedding the allocator
//! Wire an [`Allocator`] from a store, a renderer and a [`ports::Host`]:
//! for example `slavealloc-store-memory`'s `MemoryStore` (or
//! `slavealloc-store-sql`'s `SqlStore`), `slavealloc-tac-minijinja`'s
//! `MinijinjaRenderer` and a [`FixedHost`], then call
//! [`Allocator::gettac`]. The runnable example is in
//! `slavealloc-store-memory`'s documentation: it lives there because this
//! crate depends on no adapter, not even for its tests.
#![deny(missing_docs)]

pub mod access;
pub mod admin;
pub mod allocator;
pub mod audit;
pub mod dump;
pub mod entities;
pub mod error;
pub mod inventory;
pub mod lifecycle;
pub mod live;
pub mod maintenance;
pub mod name;
pub mod ports;
pub mod reports;
pub mod rule;
pub mod schema;
pub mod testing;
pub mod whatif;
pub mod workers;

pub use access::{Permission, Writer};
pub use admin::{AdminApi, AdminError, LocalAdmin};
pub use allocator::{Allocation, Allocator, BootRequest, Decided};
pub use audit::{AuditEntry, AuditQuery, NewAuditEntry};
pub use dump::Dump;
pub use entities::{Master, MasterId, PoolId, Silo, Slave, SlaveId, SlavePassword, TacTemplate};
pub use error::{AllocationError, RenderError, StoreError};
pub use inventory::{Inventory, RowShape, SlaveFilter, WriteReport};
pub use lifecycle::{Hold, HoldTarget, LifecycleStore, NewHold};
pub use live::BalanceCount;
pub use maintenance::{BulkReport, BulkRequest, HoldRequest, Maintenance};
pub use name::SlaveName;
pub use ports::{
    Actor, AllocationStore, AllocationUnit, DumpStore, FixedHost, Host, InlineRender, Intent, InventoryStore,
    LiveStore, RenderExecutor, SaveReplaced, Snapshot, TacRenderer,
};
pub use rule::{Decision, Explanation, MasterVerdict, Reason};
pub use schema::{Row, Table, Value};
pub use workers::{MasterKey, Worker, WorkerList};
