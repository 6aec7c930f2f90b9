//! # slavealloc-store-memory
//!
//! An in-memory implementation of every storage port of
//! `slavealloc-domain`: for property tests, the demo, benchmarks and tools
//! that embed the allocator without a database.
//!
//! Main design decision: generic [`Row`]s are the source of truth (so the
//! admin operations and dumps share one code path with the SQL stores'
//! semantics), and typed copies of the rows an allocation reads are kept
//! beside them, updated on every write: slaves by name, and per pool its
//! masters, its password rows and a count of its slaves per (silo, master).
//! The typed rows are `Arc`s that a [`Snapshot`] shares instead of copying
//! (a write replaces a row's `Arc`, never changes it), so an allocation
//! neither scans the fleet nor copies a row: its cost does not grow with
//! the number of slaves, and a one-slave snapshot is a handful of
//! reference-count increments and small vectors.
//!
//! One `tokio::sync::Mutex` guards the whole state; an allocation unit holds
//! it from `begin` to commit, which gives the same serialisation the SQL
//! stores get from row locks. A unit dropped without commit undoes its
//! writes.
//!
//! ## Embedding the allocator
//! Wire the domain's `Allocator` from this store, a renderer and a host:
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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use indexmap::IndexMap;
use slavealloc_domain::audit::{AuditEntry, AuditQuery, NewAuditEntry};
use slavealloc_domain::entities::{
    Master, MasterId, PoolId, Silo, Slave, SlaveId, SlavePassword, TacTemplate, TemplateId,
};
use slavealloc_domain::lifecycle::{
    bare_entry, enabled_change, ended_text, mark, EndReason, Ended, Hold, HoldQuery, HoldTarget, LifecycleStore,
    NewHold, RESUME_ACTOR,
};
use slavealloc_domain::live::{
    presence_after_poll, status_after_poll, BootRecord, Lease, LivePeers, LiveState, MasterStatus, PeerFacts,
    PollRecord, Presence, UnknownWorker,
};
use slavealloc_domain::ports::{AllocationUnit, MasterChange, SiloLoad, Snapshot};
use slavealloc_domain::schema::{from_row, Kind, Row, Table, Value};
use slavealloc_domain::{
    Actor, AllocationStore, Dump, DumpStore, Intent, InventoryStore, LiveStore, SaveReplaced, SlaveName, StoreError,
};
use tokio::sync::{Mutex, OwnedMutexGuard};

/// Every storage port, in memory. Cheap to clone: clones share the data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding a dump's rows.
    ///
    /// # Errors
    /// When the dump breaks the schema: a duplicate name or id, a reference
    /// to a missing row, a row that is not of its table's shape.
    pub fn from_dump(dump: &Dump) -> Result<Self, StoreError> {
        let mut state = State::default();
        state.append(dump)?;
        Ok(Self {
            state: Arc::new(Mutex::new(state)),
        })
    }
}

/// A map for the lookups of an allocation: foldhash instead of SipHash,
/// whose hashing was a fifth of an in-memory decision. Still seeded per
/// process (from address-space randomisation: foldhash is built without
/// `std`, see the workspace Cargo.toml), so names sent by clients cannot be
/// chosen to collide.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A slave's name as a map key, held inside the map when it is short, as
/// every name of a usual fleet is: finding a slave then reads the map's own
/// memory and not also a string elsewhere, which on a large fleet is one
/// cache miss less per allocation (benches/README.md).
#[derive(Debug, Clone)]
enum NameKey {
    Inline { len: u8, bytes: [u8; NameKey::INLINE] },
    Heap(Box<str>),
}

impl NameKey {
    /// The longest name held inline: the key is then 24 bytes, a `String`'s
    /// size.
    const INLINE: usize = 22;

    fn new(name: &str) -> Self {
        match u8::try_from(name.len()) {
            Ok(len) if name.len() <= Self::INLINE => {
                let mut bytes = [0; Self::INLINE];
                bytes[..name.len()].copy_from_slice(name.as_bytes());
                Self::Inline { len, bytes }
            }
            _ => Self::Heap(name.into()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Always valid: the bytes were copied from a `str`.
            Self::Inline { len, bytes } => std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default(),
            Self::Heap(name) => name,
        }
    }
}

const _: () = assert!(std::mem::size_of::<NameKey>() == std::mem::size_of::<String>());

impl std::borrow::Borrow<str> for NameKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for NameKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for NameKey {}

/// As `str`'s, which `Borrow<str>` requires.
impl std::hash::Hash for NameKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

/// What an allocation reads of one pool, kept up to date on every write.
#[derive(Debug, Default, Clone)]
struct PoolIndex {
    /// The pool's masters, in masterid order.
    masters: Vec<Arc<Master>>,
    /// The pool's `slave_passwords` rows, in insertion order.
    passwords: Vec<Arc<SlavePassword>>,
    /// Per silo, how many of the pool's slaves have each master as
    /// `current_masterid` (masters with no slave left out).
    loads: FastMap<Silo, Vec<(MasterId, u32)>>,
}

#[derive(Debug, Default, Clone)]
struct State {
    /// Source of truth: rows by table and id. `slave_passwords`, which has
    /// no id, is keyed by insertion order.
    rows: BTreeMap<Table, BTreeMap<i32, Row>>,
    /// Unique name column value → id, per table.
    names: HashMap<Table, HashMap<String, i32>>,
    /// The largest id ever given per table: ids are never reused.
    last_id: HashMap<Table, i32>,
    /// Typed slaves by name: one lookup per requested name. An index map
    /// keeps its hash table to 8-byte indices (1 MiB for 100k slaves, so it
    /// stays in cache) and its entries in one dense vector, in slaveid
    /// order after a bulk load.
    slaves: IndexMap<NameKey, Arc<Slave>, foldhash::fast::RandomState>,
    masters: BTreeMap<MasterId, Arc<Master>>,
    templates: HashMap<TemplateId, Arc<TacTemplate>>,
    pools: FastMap<PoolId, PoolIndex>,
    audit: Vec<AuditEntry>,
    live: LiveTables,
    /// The rebuild's `holds`, in id order (id = index + 1).
    holds: Vec<Hold>,
}

/// The rebuild's live-fleet tables ([`slavealloc_domain::live`]).
#[derive(Debug, Default, Clone)]
struct LiveTables {
    boots: HashMap<SlaveId, BootRecord>,
    presence: HashMap<SlaveId, Presence>,
    masters: BTreeMap<MasterId, MasterStatus>,
    unknown: BTreeMap<(MasterId, String), UnknownWorker>,
    leases: HashMap<String, Lease>,
}

fn other(e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(e.to_string())
}

fn int(row: &Row, column: &str) -> Option<i64> {
    row.get(column).and_then(Value::as_int)
}

impl State {
    fn table(&self, table: Table) -> impl Iterator<Item = &Row> {
        self.rows.get(&table).into_iter().flat_map(BTreeMap::values)
    }

    fn get(&self, table: Table, id: i32) -> Option<&Row> {
        self.rows.get(&table).and_then(|t| t.get(&id))
    }

    fn exists(&self, table: Table, id: i64) -> bool {
        i32::try_from(id).is_ok_and(|id| self.get(table, id).is_some())
    }

    /// Checks a row about to be written: every reference resolves and the
    /// name column stays unique.
    fn check(&self, table: Table, id: Option<i32>, row: &Row) -> Result<(), StoreError> {
        for c in table.columns() {
            if let (Kind::Ref(target), Some(Value::Int(v))) = (c.kind, row.get(c.name)) {
                if !self.exists(target, *v) {
                    return Err(StoreError::InvalidReference {
                        column: c.name.to_owned(),
                        table: target.name().to_owned(),
                        id: *v,
                    });
                }
            }
        }
        if let Some(col) = table.name_column() {
            if let Some(Value::Text(name)) = row.get(col) {
                let holder = self.names.get(&table).and_then(|n| n.get(name));
                if holder.is_some_and(|h| Some(*h) != id) {
                    return Err(StoreError::Duplicate(format!("{table}.{col} {name:?} already exists")));
                }
            }
        }
        Ok(())
    }

    /// Stores a checked row (replacing any with its key) and refreshes the
    /// typed copies and counts.
    fn put(&mut self, table: Table, key: i32, row: Row) -> Result<(), StoreError> {
        self.unindex(table, key);
        match table {
            Table::Slaves => {
                let s: Slave = from_row(&row).map_err(other)?;
                if let Some(m) = s.current_masterid {
                    self.count(s.poolid, s.silo(), m);
                }
                self.slaves.insert(NameKey::new(&s.name), Arc::new(s));
            }
            Table::Masters => {
                self.masters.insert(key, Arc::new(from_row(&row).map_err(other)?));
            }
            Table::TacTemplates => {
                self.templates.insert(key, Arc::new(from_row(&row).map_err(other)?));
            }
            _ => {}
        }
        if let Some(Value::Text(name)) = table.name_column().and_then(|c| row.get(c)) {
            self.names.entry(table).or_default().insert(name.clone(), key);
        }
        let last = self.last_id.entry(table).or_default();
        *last = (*last).max(key);
        self.rows.entry(table).or_default().insert(key, row);
        match table {
            Table::Masters => self.reindex_masters(),
            Table::SlavePasswords => self.reindex_passwords()?,
            _ => {}
        }
        Ok(())
    }

    /// Removes a row and everything derived from it.
    fn remove(&mut self, table: Table, key: i32) -> Option<Row> {
        self.unindex(table, key);
        let row = self.rows.get_mut(&table).and_then(|t| t.remove(&key));
        match table {
            Table::Masters => self.reindex_masters(),
            // Rows already in the store convert; nothing can fail here.
            Table::SlavePasswords => drop(self.reindex_passwords()),
            _ => {}
        }
        row
    }

    fn unindex(&mut self, table: Table, key: i32) {
        let Some(old) = self.get(table, key).cloned() else {
            return;
        };
        if let Some(Value::Text(name)) = table.name_column().and_then(|c| old.get(c)) {
            if let Some(n) = self.names.get_mut(&table) {
                n.remove(name);
            }
        }
        match table {
            Table::Slaves => {
                let name = old.get("name").and_then(Value::as_text);
                if let Some(s) = name.and_then(|n| self.slaves.swap_remove(n)) {
                    if let Some(m) = s.current_masterid {
                        self.uncount(s.poolid, s.silo(), m);
                    }
                }
            }
            Table::Masters => {
                self.masters.remove(&key);
            }
            Table::TacTemplates => {
                self.templates.remove(&key);
            }
            _ => {}
        }
    }

    fn count(&mut self, pool: PoolId, silo: Silo, master: MasterId) {
        let counts = self.pools.entry(pool).or_default().loads.entry(silo).or_default();
        match counts.iter_mut().find(|(m, _)| *m == master) {
            Some((_, n)) => *n += 1,
            None => counts.push((master, 1)),
        }
    }

    fn uncount(&mut self, pool: PoolId, silo: Silo, master: MasterId) {
        let Some(counts) = self.pools.get_mut(&pool).and_then(|p| p.loads.get_mut(&silo)) else {
            return;
        };
        if let Some(i) = counts.iter().position(|(m, _)| *m == master) {
            counts[i].1 -= 1;
            if counts[i].1 == 0 {
                counts.swap_remove(i);
            }
        }
    }

    /// Rebuilds every pool's list of masters: masters are few and rarely
    /// written, so the simplest correct index wins.
    fn reindex_masters(&mut self) {
        for pool in self.pools.values_mut() {
            pool.masters.clear();
        }
        for m in self.masters.values() {
            self.pools.entry(m.poolid).or_default().masters.push(Arc::clone(m));
        }
    }

    /// Rebuilds every pool's list of password rows from the rows.
    fn reindex_passwords(&mut self) -> Result<(), StoreError> {
        let passwords: Vec<SlavePassword> = self
            .table(Table::SlavePasswords)
            .map(from_row)
            .collect::<Result<_, _>>()
            .map_err(other)?;
        for pool in self.pools.values_mut() {
            pool.passwords.clear();
        }
        for p in passwords {
            self.pools.entry(p.poolid).or_default().passwords.push(Arc::new(p));
        }
        Ok(())
    }

    fn next_id(&self, table: Table) -> i32 {
        self.last_id.get(&table).copied().unwrap_or(0) + 1
    }

    fn insert(&mut self, table: Table, mut row: Row) -> Result<(i32, Row), StoreError> {
        // Rows carry every column: a create does not give state columns
        // (`current_masterid`), which start NULL.
        for c in table.columns().iter().filter(|c| c.nullable) {
            row.entry(c.name.to_owned()).or_insert(Value::Null);
        }
        let key = match table.id_column() {
            Some(id_col) => match int(&row, id_col) {
                Some(id) => i32::try_from(id).map_err(|_| other(format!("{table}.{id_col} {id} is out of range")))?,
                None => {
                    let id = self.next_id(table);
                    row.insert(id_col.to_owned(), Value::Int(id.into()));
                    id
                }
            },
            None => self.next_id(table),
        };
        if table.id_column().is_some() && self.get(table, key).is_some() {
            return Err(StoreError::Duplicate(format!("{table} id {key} already exists")));
        }
        self.check(table, Some(key), &row)?;
        self.put(table, key, row.clone())?;
        Ok((key, row))
    }

    fn append(&mut self, dump: &Dump) -> Result<(), StoreError> {
        for table in Table::ALL {
            for row in dump.rows(table) {
                if table == Table::AuditLog {
                    let entry: AuditEntry = AuditEntry::from_row(row)?;
                    self.audit.push(entry);
                    continue;
                }
                let mut row = row.clone();
                // Dumps name every column; fill what an older dump may lack.
                for c in table.columns().iter().filter(|c| c.nullable) {
                    row.entry(c.name.to_owned()).or_insert(Value::Null);
                }
                self.insert(table, row)?;
            }
        }
        self.pack_slaves();
        Ok(())
    }

    /// Copies every typed slave into fresh allocations, in slaveid order.
    /// Loaded row by row, each slave was allocated among its generic row
    /// (about 2 kB apart); packed, a 100k fleet's typed slaves take a few
    /// thousand pages instead of tens of thousands, so finding one less
    /// often misses the TLB as well as the cache.
    fn pack_slaves(&mut self) {
        let mut slaves: Vec<Arc<Slave>> = self.slaves.drain(..).map(|(_, s)| s).collect();
        slaves.sort_unstable_by_key(|s| s.slaveid);
        for s in slaves {
            self.slaves.insert(NameKey::new(&s.name), Arc::new(Slave::clone(&s)));
        }
    }

    fn references_to(&self, table: Table, id: i32) -> Vec<String> {
        table
            .referenced_by()
            .into_iter()
            .filter(|(t, c)| self.table(*t).any(|r| int(r, c.name) == Some(id.into())))
            .map(|(t, c)| format!("{}.{}", t.name(), c.name))
            .collect()
    }

    /// Each row of `ids` before and after `changes`, every one checked.
    fn planned_updates(&self, table: Table, ids: &[i32], changes: &Row) -> Result<Vec<(Row, Row)>, StoreError> {
        if ids.len() > 1 && table.name_column().is_some_and(|n| changes.contains_key(n)) {
            return Err(StoreError::Duplicate(format!(
                "{table}: one name cannot be given to {} rows",
                ids.len()
            )));
        }
        ids.iter()
            .map(|id| {
                table.check_changes(*id, changes)?;
                let old = self.get(table, *id).cloned().ok_or(StoreError::NotFound)?;
                let mut new = old.clone();
                new.extend(changes.clone());
                self.check(table, Some(*id), &new)?;
                Ok((old, new))
            })
            .collect()
    }

    fn record_audit(&mut self, entry: NewAuditEntry) {
        let id = self.audit.last().map_or(1, |e| e.id + 1);
        self.audit.push(AuditEntry { id, entry });
    }

    fn snapshot(&self, names: &[SlaveName]) -> Snapshot {
        let mut snapshot = Snapshot {
            slaves: names.iter().map(|n| self.slaves.get(n.as_str()).cloned()).collect(),
            ..Snapshot::default()
        };
        // A snapshot is usually for one slave (the allocation bench's
        // case): its pool, silo, lock and template are the sets, with no
        // vector to build.
        match snapshot.slaves.as_slice() {
            [Some(s)] => {
                let (pool, silo, locked, template) = (s.poolid, s.silo(), s.locked_masterid, s.custom_tplid);
                self.fill(
                    &mut snapshot,
                    &[pool],
                    &[(pool, silo)],
                    locked.as_slice(),
                    template.as_slice(),
                );
            }
            slaves => {
                let found = || slaves.iter().flatten();
                let pools = sorted_set(found().map(|s| s.poolid));
                let silos = sorted_set(found().map(|s| (s.poolid, s.silo())));
                let locked = sorted_set(found().filter_map(|s| s.locked_masterid));
                let templates = sorted_set(found().filter_map(|s| s.custom_tplid));
                self.fill(&mut snapshot, &pools, &silos, &locked, &templates);
            }
        }
        snapshot
    }

    /// Adds to `snapshot` the masters, passwords, templates and loads of
    /// these pools, silos, locks and templates (each without duplicates).
    fn fill(
        &self,
        snapshot: &mut Snapshot,
        pools: &[PoolId],
        silos: &[(PoolId, Silo)],
        locked: &[MasterId],
        templates: &[TemplateId],
    ) {
        let of_pools = || pools.iter().filter_map(|p| self.pools.get(p));
        let masters = of_pools().map(|p| p.masters.len()).sum::<usize>() + locked.len();
        snapshot.masters.reserve_exact(masters);
        for pool in of_pools() {
            snapshot.masters.extend(pool.masters.iter().cloned());
            snapshot.passwords.extend(pool.passwords.iter().cloned());
        }
        // A locked master of one of the pools is already in.
        let outside = locked
            .iter()
            .filter_map(|id| self.masters.get(id))
            .filter(|m| !pools.contains(&m.poolid));
        snapshot.masters.extend(outside.cloned());
        snapshot
            .templates
            .extend(templates.iter().filter_map(|id| self.templates.get(id)).cloned());
        snapshot.loads = silos
            .iter()
            .map(|&(poolid, silo)| SiloLoad {
                poolid,
                silo,
                per_master: self
                    .pools
                    .get(&poolid)
                    .and_then(|p| p.loads.get(&silo))
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect();
    }

    /// The live facts of every slave of these (pool, silo)s.
    fn live_peers(&self, silos: &[(PoolId, Silo)]) -> LivePeers {
        let peers = self
            .slaves
            .values()
            .filter(|s| silos.binary_search(&(s.poolid, s.silo())).is_ok())
            .map(|s| {
                let boot = self.live.boots.get(&s.slaveid);
                let presence = self.live.presence.get(&s.slaveid);
                PeerFacts {
                    slaveid: s.slaveid,
                    poolid: s.poolid,
                    silo: s.silo(),
                    current_masterid: s.current_masterid,
                    allocated_at: boot.filter(|b| b.masterid == s.current_masterid).map(|b| b.at),
                    connected: presence.and_then(|p| p.connected_masterid.zip(p.last_seen)),
                }
            })
            .collect();
        LivePeers {
            peers,
            unreachable_since: self
                .live
                .masters
                .values()
                .filter_map(|m| m.unreachable_since.map(|t| (m.masterid, t)))
                .collect(),
        }
    }

    fn record_poll(&mut self, poll: &PollRecord) {
        let before = self.live.masters.get(&poll.masterid).cloned();
        let Ok(answer) = &poll.outcome else {
            let status = status_after_poll(before.as_ref(), poll, 0);
            self.live.masters.insert(poll.masterid, status);
            return;
        };
        let mut reported = Vec::new();
        let mut unknown = Vec::new();
        for w in &answer.workers {
            match self.slaves.get(w.name.to_ascii_lowercase().as_str()) {
                Some(s) => reported.push((s.slaveid, w)),
                None => unknown.push(w),
            }
        }
        let listed: std::collections::HashSet<SlaveId> = reported.iter().map(|(id, _)| *id).collect();
        let relevant: HashMap<SlaveId, Presence> = self
            .live
            .presence
            .values()
            .filter(|p| p.connected_masterid == Some(poll.masterid) || listed.contains(&p.slaveid))
            .map(|p| (p.slaveid, p.clone()))
            .collect();
        for p in presence_after_poll(poll.masterid, poll.at, &relevant, &reported) {
            self.live.presence.insert(p.slaveid, p);
        }
        self.live.unknown.retain(|(m, _), _| *m != poll.masterid);
        for w in unknown {
            self.live.unknown.insert(
                (poll.masterid, w.name.clone()),
                UnknownWorker {
                    masterid: poll.masterid,
                    name: w.name.clone(),
                    connected: w.connected,
                    last_seen: poll.at,
                },
            );
        }
        let connected = answer.workers.iter().filter(|w| w.connected).count();
        let status = status_after_poll(before.as_ref(), poll, u32::try_from(connected).unwrap_or(u32::MAX));
        self.live.masters.insert(poll.masterid, status);
    }

    /// Sets one slave's current master; returns the previous one.
    fn set_current(&mut self, slaveid: i32, to: Option<MasterId>) -> Result<Option<MasterId>, StoreError> {
        let mut row = self.get(Table::Slaves, slaveid).cloned().ok_or(StoreError::NotFound)?;
        let from = int(&row, "current_masterid").and_then(|m| MasterId::try_from(m).ok());
        row.insert(
            "current_masterid".into(),
            to.map_or(Value::Null, |m| Value::Int(m.into())),
        );
        self.put(Table::Slaves, slaveid, row)?;
        Ok(from)
    }
}

/// The distinct items, sorted, for `binary_search`.
fn sorted_set<T: Ord>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut set: Vec<T> = items.collect();
    set.sort_unstable();
    set.dedup();
    set
}

#[async_trait]
impl AllocationStore for MemoryStore {
    async fn begin(&self, _intent: Intent) -> Result<Box<dyn AllocationUnit>, StoreError> {
        let guard = Arc::clone(&self.state).lock_owned().await;
        Ok(Box::new(MemoryUnit {
            guard,
            undo: Vec::new(),
            boots_undo: Vec::new(),
            audit_len: None,
        }))
    }
}

/// A unit of work holding the store's lock; undoes its writes when dropped
/// uncommitted.
struct MemoryUnit {
    guard: OwnedMutexGuard<State>,
    /// `(slaveid, previous current_masterid)`, in write order.
    undo: Vec<(i32, Option<MasterId>)>,
    /// `(slaveid, previous boot record)`, in write order.
    boots_undo: Vec<(SlaveId, Option<BootRecord>)>,
    /// The audit log's length before the first record, once recorded.
    audit_len: Option<usize>,
}

#[async_trait]
impl AllocationUnit for MemoryUnit {
    async fn snapshot(&mut self, names: &[SlaveName]) -> Result<Snapshot, StoreError> {
        Ok(self.guard.snapshot(names))
    }

    async fn live_peers(&mut self, silos: &[(PoolId, Silo)]) -> Result<LivePeers, StoreError> {
        let silos = sorted_set(silos.iter().copied());
        Ok(self.guard.live_peers(&silos))
    }

    async fn record(
        &mut self,
        changes: &[MasterChange],
        audit: &[NewAuditEntry],
        boots: &[BootRecord],
    ) -> Result<(), StoreError> {
        self.audit_len.get_or_insert(self.guard.audit.len());
        for c in changes {
            let from = self.guard.set_current(c.slaveid, c.to)?;
            self.undo.push((c.slaveid, from));
        }
        for e in audit {
            self.guard.record_audit(e.clone());
        }
        for b in boots {
            let before = self.guard.live.boots.insert(b.slaveid, b.clone());
            self.boots_undo.push((b.slaveid, before));
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.undo.clear();
        self.boots_undo.clear();
        self.audit_len = None;
        Ok(())
    }
}

impl Drop for MemoryUnit {
    fn drop(&mut self) {
        while let Some((slaveid, from)) = self.undo.pop() {
            // Restoring a value this unit itself replaced cannot fail.
            let _ = self.guard.set_current(slaveid, from);
        }
        while let Some((slaveid, before)) = self.boots_undo.pop() {
            match before {
                Some(b) => self.guard.live.boots.insert(slaveid, b),
                None => self.guard.live.boots.remove(&slaveid),
            };
        }
        if let Some(len) = self.audit_len {
            self.guard.audit.truncate(len);
        }
    }
}

#[async_trait]
impl InventoryStore for MemoryStore {
    async fn list(&self, table: Table) -> Result<Vec<Row>, StoreError> {
        if table == Table::AuditLog {
            return self.state.lock().await.audit.iter().map(AuditEntry::to_row).collect();
        }
        Ok(self.state.lock().await.table(table).cloned().collect())
    }

    async fn list_page(&self, table: Table, after: Option<i64>, limit: usize) -> Result<Vec<Row>, StoreError> {
        if table == Table::AuditLog || table.id_column().is_none() {
            let rows = self.list(table).await?;
            let id = table.id_column();
            let above = |r: &Row| match (after, id) {
                (None, _) => true,
                (Some(a), Some(id)) => r.get(id).and_then(Value::as_int).is_some_and(|k| k > a),
                (Some(_), None) => false,
            };
            return Ok(rows.into_iter().filter(above).take(limit).collect());
        }
        // Keys are i32: an `after` beyond them leaves nothing.
        let from = match after.map(|a| a.saturating_add(1)) {
            None => i32::MIN,
            Some(a) => match i32::try_from(a) {
                Ok(a) => a,
                Err(_) if a < 0 => i32::MIN,
                Err(_) => return Ok(Vec::new()),
            },
        };
        let state = self.state.lock().await;
        let rows = state.rows.get(&table).into_iter().flat_map(|t| t.range(from..));
        Ok(rows.take(limit).map(|(_, r)| r.clone()).collect())
    }

    async fn get(&self, table: Table, id: i32) -> Result<Option<Row>, StoreError> {
        Ok(self.state.lock().await.get(table, id).cloned())
    }

    async fn find_by_name(&self, table: Table, name: &str) -> Result<Option<Row>, StoreError> {
        let state = self.state.lock().await;
        let id = state.names.get(&table).and_then(|n| n.get(name));
        Ok(id.and_then(|id| state.get(table, *id)).cloned())
    }

    async fn insert(&self, table: Table, row: Row, actor: Actor) -> Result<Row, StoreError> {
        table.check_stored(&row)?;
        let mut state = self.state.lock().await;
        let (key, row) = state.insert(table, row)?;
        let row_id = if table.id_column().is_some() { key.into() } else { 0 };
        if let Some(e) = NewAuditEntry::for_write(table, row_id, None, Some(&row), &actor) {
            state.record_audit(e);
        }
        Ok(row)
    }

    async fn update(&self, table: Table, id: i32, changes: Row, actor: Actor) -> Result<Row, StoreError> {
        table.check_changes(id, &changes)?;
        let mut state = self.state.lock().await;
        let old = state.get(table, id).cloned().ok_or(StoreError::NotFound)?;
        let mut new = old.clone();
        new.extend(changes);
        state.check(table, Some(id), &new)?;
        state.put(table, id, new.clone())?;
        if let Some(e) = NewAuditEntry::for_write(table, id.into(), Some(&old), Some(&new), &actor) {
            state.record_audit(e);
        }
        Ok(new)
    }

    async fn update_many(
        &self,
        table: Table,
        ids: &[i32],
        changes: Row,
        note: Option<String>,
        dry_run: bool,
        actor: Actor,
    ) -> Result<Vec<(Row, Row)>, StoreError> {
        let mut state = self.state.lock().await;
        // Everything is checked before anything is put: all or nothing.
        let written = state.planned_updates(table, ids, &changes)?;
        if dry_run {
            return Ok(written);
        }
        for (id, (old, new)) in ids.iter().zip(&written) {
            state.put(table, *id, new.clone())?;
            if let Some(e) = NewAuditEntry::for_write(table, (*id).into(), Some(old), Some(new), &actor) {
                state.record_audit(slavealloc_domain::inventory::with_note(e, note.as_deref()));
            }
        }
        Ok(written)
    }

    async fn delete(&self, table: Table, id: i32, actor: Actor) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        if state.get(table, id).is_none() {
            return Err(StoreError::NotFound);
        }
        let refs = state.references_to(table, id);
        if !refs.is_empty() {
            return Err(StoreError::Referenced(format!(
                "{table} {id} is referred to by {}",
                refs.join(", ")
            )));
        }
        let old = state.remove(table, id).ok_or(StoreError::NotFound)?;
        if let Some(e) = NewAuditEntry::for_write(table, id.into(), Some(&old), None, &actor) {
            state.record_audit(e);
        }
        Ok(())
    }

    async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let state = self.state.lock().await;
        Ok(state
            .audit
            .iter()
            .rev()
            .filter(|e| query.selects(e))
            .take(query.limit as usize)
            .cloned()
            .collect())
    }

    async fn prune_allocations(&self, before: SystemTime, batch: u32) -> Result<u64, StoreError> {
        let cutoff = slavealloc_domain::audit::format_at(before);
        let mut state = self.state.lock().await;
        let mut left = batch;
        // Oldest first: the log is in id order.
        state.audit.retain(|e| {
            let old = e.entry.actor == slavealloc_domain::audit::ALLOCATION_ACTOR && e.entry.at < cutoff;
            if old && left > 0 {
                left -= 1;
                false
            } else {
                true
            }
        });
        Ok(u64::from(batch - left))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl LiveStore for MemoryStore {
    async fn record_poll(&self, poll: &PollRecord) -> Result<(), StoreError> {
        self.state.lock().await.record_poll(poll);
        Ok(())
    }

    async fn live_state(&self) -> Result<LiveState, StoreError> {
        let state = self.state.lock().await;
        let live = &state.live;
        // Rows of slaves deleted since are not facts about the fleet.
        let exists = |id: &SlaveId| state.get(Table::Slaves, *id).is_some();
        let mut boots: Vec<BootRecord> = live.boots.values().filter(|b| exists(&b.slaveid)).cloned().collect();
        boots.sort_unstable_by_key(|b| b.slaveid);
        let mut presence: Vec<Presence> = live.presence.values().filter(|p| exists(&p.slaveid)).cloned().collect();
        presence.sort_unstable_by_key(|p| p.slaveid);
        Ok(LiveState {
            boots,
            presence,
            masters: live.masters.values().cloned().collect(),
            unknown: live.unknown.values().cloned().collect(),
        })
    }

    async fn take_lease(&self, name: &str, holder: &str, now: SystemTime, ttl: Duration) -> Result<Lease, StoreError> {
        let mut state = self.state.lock().await;
        let leases = &mut state.live.leases;
        let free = leases.get(name).is_none_or(|l| l.holder == holder || l.expires <= now);
        if free {
            leases.insert(
                name.to_owned(),
                Lease {
                    name: name.to_owned(),
                    holder: holder.to_owned(),
                    expires: now + ttl,
                },
            );
        }
        leases
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::Other("the lease vanished".to_owned()))
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        if state.live.leases.get(name).is_some_and(|l| l.holder == holder) {
            state.live.leases.remove(name);
        }
        Ok(())
    }
}

impl State {
    /// Sets `enabled` on one row (checked to exist) and records its
    /// lifecycle audit entry.
    fn switch(&mut self, target: HoldTarget, id: i32, changes: Row, what: &str, actor: &Actor, always: bool) {
        let table = target.table();
        let Some(old) = self.get(table, id).cloned() else {
            return;
        };
        let mut new = old.clone();
        new.extend(changes);
        let entry = match NewAuditEntry::for_write(table, id.into(), Some(&old), Some(&new), actor) {
            Some(e) => {
                // Checked before (check_exist, check_also): nothing to break.
                let _ = self.put(table, id, new);
                Some(mark(e, what))
            }
            None => always.then(|| bare_entry(target, id, what, actor)),
        };
        if let Some(e) = entry {
            self.record_audit(e);
        }
    }

    /// Ends the open holds of these rows; answers them, ended.
    fn end_holds(&mut self, target: HoldTarget, ids: &[i32], ended: &Ended) -> Vec<Hold> {
        self.holds
            .iter_mut()
            .filter(|h| h.is_open() && h.target == target && ids.contains(&h.target_id))
            .map(|h| {
                h.ended = Some(ended.clone());
                h.clone()
            })
            .collect()
    }

    fn check_exist(&self, target: HoldTarget, ids: &[i32]) -> Result<(), StoreError> {
        match ids.iter().all(|id| self.get(target.table(), *id).is_some()) {
            true => Ok(()),
            false => Err(StoreError::NotFound),
        }
    }

    /// Checks the columns written beside `enabled` on every row.
    fn check_also(&self, target: HoldTarget, ids: &[i32], also: &Row) -> Result<(), StoreError> {
        if also.is_empty() {
            return Ok(());
        }
        self.planned_updates(target.table(), ids, &enabled_change(true, also))
            .map(drop)
    }
}

#[async_trait]
impl LifecycleStore for MemoryStore {
    async fn hold(
        &self,
        target: HoldTarget,
        ids: &[i32],
        hold: &NewHold,
        actor: Actor,
    ) -> Result<Vec<Hold>, StoreError> {
        let mut state = self.state.lock().await;
        state.check_exist(target, ids)?;
        state.check_also(target, ids, &hold.also)?;
        let superseded = Ended {
            at: actor.at,
            by: actor.name.clone(),
            reason: EndReason::Superseded,
        };
        state.end_holds(target, ids, &superseded);
        let mut made = Vec::with_capacity(ids.len());
        for id in ids {
            let h = Hold {
                id: i64::try_from(state.holds.len()).unwrap_or(i64::MAX) + 1,
                ..hold.opened(target, *id, &actor)
            };
            state.switch(
                target,
                *id,
                enabled_change(false, &hold.also),
                &h.started_text(),
                &actor,
                true,
            );
            state.holds.push(h.clone());
            made.push(h);
        }
        Ok(made)
    }

    async fn release(
        &self,
        target: HoldTarget,
        ids: &[i32],
        also: &Row,
        actor: Actor,
    ) -> Result<Vec<Hold>, StoreError> {
        let mut state = self.state.lock().await;
        state.check_exist(target, ids)?;
        state.check_also(target, ids, also)?;
        let ended = Ended {
            at: actor.at,
            by: actor.name.clone(),
            reason: EndReason::Released,
        };
        let released = state.end_holds(target, ids, &ended);
        for id in ids {
            let held = released.iter().any(|h| h.target_id == *id);
            state.switch(
                target,
                *id,
                enabled_change(true, also),
                ended_text(EndReason::Released),
                &actor,
                held,
            );
        }
        Ok(released)
    }

    async fn holds(&self, query: &HoldQuery) -> Result<Vec<Hold>, StoreError> {
        let state = self.state.lock().await;
        let limit = if query.limit == 0 {
            usize::MAX
        } else {
            query.limit as usize
        };
        Ok(state
            .holds
            .iter()
            .rev()
            .filter(|h| query.selects(h))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn resume_due(&self, now: SystemTime) -> Result<Vec<Hold>, StoreError> {
        let mut state = self.state.lock().await;
        let actor = Actor {
            name: RESUME_ACTOR.to_owned(),
            at: now,
        };
        let ended = Ended {
            at: now,
            by: RESUME_ACTOR.to_owned(),
            reason: EndReason::UntilReached,
        };
        let due: Vec<usize> = (0..state.holds.len()).filter(|i| state.holds[*i].is_due(now)).collect();
        let mut resumed = Vec::with_capacity(due.len());
        for i in due {
            state.holds[i].ended = Some(ended.clone());
            let h = state.holds[i].clone();
            state.switch(
                h.target,
                h.target_id,
                enabled_change(true, &Row::new()),
                ended_text(EndReason::UntilReached),
                &actor,
                true,
            );
            resumed.push(h);
        }
        Ok(resumed)
    }
}

/// Every table's rows, as [`DumpStore::export`] gives them.
fn export_state(state: &State) -> Result<Dump, StoreError> {
    let mut dump = Dump::default();
    for table in Table::ALL {
        let rows = match table {
            Table::AuditLog => state.audit.iter().map(AuditEntry::to_row).collect::<Result<_, _>>()?,
            _ => state.table(table).cloned().collect(),
        };
        dump.tables.insert(table, rows);
    }
    dump.sort();
    Ok(dump)
}

#[async_trait]
impl DumpStore for MemoryStore {
    async fn export(&self) -> Result<Dump, StoreError> {
        export_state(&*self.state.lock().await)
    }

    async fn replace_all(&self, dump: &Dump) -> Result<(), StoreError> {
        let mut fresh = State::default();
        fresh.append(dump)?;
        *self.state.lock().await = fresh;
        Ok(())
    }

    async fn replace_all_saving<'s>(&self, dump: &Dump, save: &'s (dyn SaveReplaced + 's)) -> Result<(), StoreError> {
        let mut fresh = State::default();
        fresh.append(dump)?;
        // The lock is held from the read to the swap: no write in between.
        let mut state = self.state.lock().await;
        save.save(&export_state(&state)?)?;
        *state = fresh;
        Ok(())
    }

    async fn append(&self, dump: &Dump) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        let mut next = state.clone();
        next.append(dump)?;
        *state = next;
        Ok(())
    }

    async fn row_count(&self) -> Result<u64, StoreError> {
        let state = self.state.lock().await;
        let rows: usize = state.rows.values().map(BTreeMap::len).sum();
        Ok((rows + state.audit.len()) as u64)
    }
}
