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
//!
//! ```
//! use std::sync::Arc;
//! use std::time::SystemTime;
//!
//! use slavealloc_domain::{Allocator, Dump, FixedHost, Reason};
//! use slavealloc_store_memory::MemoryStore;
//! use slavealloc_tac_minijinja::MinijinjaRenderer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A tiny fleet: one pool with two masters and one slave, as a dump.
//! let lookup = |id: &str, name: &str| serde_json::json!([{ (id): 1, "name": name }]);
//! let fleet: Dump = serde_json::from_value(serde_json::json!({
//!     "format": "slavealloc-dump", "version": 1,
//!     "tables": {
//!         "distros": lookup("distroid", "ubuntu64"), "bitlengths": lookup("bitsid", "64"),
//!         "speeds": lookup("speedid", "fast"), "purposes": lookup("purposeid", "tests"),
//!         "datacenters": lookup("dcid", "mdc1"), "trustlevels": lookup("trustid", "try"),
//!         "environments": lookup("envid", "prod"), "pools": lookup("poolid", "tests-pool"),
//!         "masters": [
//!             {"masterid": 1, "nickname": "bm01", "fqdn": "bm01.example.com", "http_port": 8001,
//!              "pb_port": 9001, "dcid": 1, "poolid": 1, "enabled": true, "notes": null},
//!             {"masterid": 2, "nickname": "bm02", "fqdn": "bm02.example.com", "http_port": 8002,
//!              "pb_port": 9002, "dcid": 1, "poolid": 1, "enabled": true, "notes": null}],
//!         "slaves": [
//!             {"slaveid": 1, "name": "tst-linux64-01", "distroid": 1, "bitsid": 1, "speedid": 1,
//!              "purposeid": 1, "dcid": 1, "trustid": 1, "envid": 1, "poolid": 1,
//!              "basedir": "/builds/worker", "locked_masterid": null, "custom_tplid": null,
//!              "enabled": true, "notes": null, "current_masterid": null}],
//!         "slave_passwords": [{"poolid": 1, "distroid": null, "password": "s3cret"}]
//!     }
//! }))?;
//!
//! let store = Arc::new(MemoryStore::from_dump(&fleet)?);
//! let host = Arc::new(FixedHost { now: SystemTime::now(), fqdn: "slavealloc.example.com".into() });
//! let allocator = Allocator::new(store, Arc::new(MinijinjaRenderer::default()), host);
//!
//! // Machines may report their name in upper case.
//! let allocation = allocator.gettac("TST-LINUX64-01").await?;
//! assert_eq!(allocation.decision.master.as_ref().map(|m| m.nickname.as_str()), Some("bm01"));
//! assert_eq!(allocation.decision.reason, Reason::Balanced);
//! assert!(allocation.tac.starts_with("# AUTOMATICALLY GENERATED - DO NOT MODIFY"));
//! assert!(allocation.tac.contains("'bm01.example.com'"));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod access;
pub mod admin;
pub mod allocator;
pub mod audit;
pub mod dump;
pub mod entities;
pub mod error;
pub mod inventory;
pub mod name;
pub mod ports;
pub mod rule;
pub mod schema;

pub use access::{Permission, Writer};
pub use admin::{AdminApi, AdminError, LocalAdmin};
pub use allocator::{Allocation, Allocator, Decided};
pub use audit::{AuditEntry, AuditQuery, NewAuditEntry};
pub use dump::Dump;
pub use entities::{Master, MasterId, PoolId, Silo, Slave, SlaveId, SlavePassword, TacTemplate};
pub use error::{AllocationError, RenderError, StoreError};
pub use inventory::{Inventory, SlaveFilter};
pub use name::SlaveName;
pub use ports::{
    Actor, AllocationStore, AllocationUnit, DumpStore, FixedHost, Host, InlineRender, Intent, InventoryStore,
    RenderExecutor, SaveReplaced, Snapshot, TacRenderer,
};
pub use rule::{Decision, Reason};
pub use schema::{Row, Table, Value};
