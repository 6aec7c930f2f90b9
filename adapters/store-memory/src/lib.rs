//! # slavealloc-store-memory
//!
//! An in-memory implementation of every storage port of
//! `slavealloc-domain`: for property tests, the demo, benchmarks and tools
//! that embed the allocator without a database.
//!
//! Main design decision: generic [`Row`]s are the source of truth (so the
//! admin operations and dumps share one code path with the SQL stores'
//! semantics), and typed copies of slaves and masters plus a count of slaves
//! per (pool, silo, master) are kept beside them, updated on every write.
//! An allocation therefore never scans the fleet: its cost does not grow
//! with the number of slaves.
//!
//! One `tokio::sync::Mutex` guards the whole state; an allocation unit holds
//! it from `begin` to commit, which gives the same serialisation the SQL
//! stores get from row locks. A unit dropped without commit undoes its
//! writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use slavealloc_domain::audit::{AuditEntry, AuditQuery, NewAuditEntry};
use slavealloc_domain::entities::{Master, MasterId, PoolId, Silo, Slave, SlavePassword, TacTemplate};
use slavealloc_domain::ports::{AllocationUnit, MasterChange, SiloLoad, Snapshot};
use slavealloc_domain::schema::{from_row, Kind, Row, Table, Value};
use slavealloc_domain::{Actor, AllocationStore, Dump, DumpStore, Intent, InventoryStore, SlaveName, StoreError};
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

/// Count of slaves per master, for one pool and silo.
type Loads = HashMap<(PoolId, Silo), HashMap<MasterId, u32>>;

#[derive(Debug, Default, Clone)]
struct State {
    /// Source of truth: rows by table and id. `slave_passwords`, which has
    /// no id, is keyed by insertion order.
    rows: BTreeMap<Table, BTreeMap<i32, Row>>,
    /// Unique name column value → id, per table.
    names: HashMap<Table, HashMap<String, i32>>,
    /// The largest id ever given per table: ids are never reused.
    last_id: HashMap<Table, i32>,
    slaves: HashMap<i32, Slave>,
    slave_ids: HashMap<String, i32>,
    masters: BTreeMap<MasterId, Master>,
    templates: HashMap<i32, TacTemplate>,
    passwords: Vec<SlavePassword>,
    loads: Loads,
    audit: Vec<AuditEntry>,
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
                    *self
                        .loads
                        .entry((s.poolid, s.silo()))
                        .or_default()
                        .entry(m)
                        .or_default() += 1;
                }
                self.slave_ids.insert(s.name.clone(), key);
                self.slaves.insert(key, s);
            }
            Table::Masters => {
                self.masters.insert(key, from_row(&row).map_err(other)?);
            }
            Table::TacTemplates => {
                self.templates.insert(key, from_row(&row).map_err(other)?);
            }
            _ => {}
        }
        if let Some(Value::Text(name)) = table.name_column().and_then(|c| row.get(c)) {
            self.names.entry(table).or_default().insert(name.clone(), key);
        }
        let last = self.last_id.entry(table).or_default();
        *last = (*last).max(key);
        self.rows.entry(table).or_default().insert(key, row);
        if table == Table::SlavePasswords {
            self.reload_passwords()?;
        }
        Ok(())
    }

    /// Removes a row and everything derived from it.
    fn remove(&mut self, table: Table, key: i32) -> Option<Row> {
        self.unindex(table, key);
        let row = self.rows.get_mut(&table).and_then(|t| t.remove(&key));
        if table == Table::SlavePasswords {
            // Rows already in the store convert; nothing can fail here.
            let _ = self.reload_passwords();
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
                if let Some(s) = self.slaves.remove(&key) {
                    self.slave_ids.remove(&s.name);
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

    fn uncount(&mut self, pool: PoolId, silo: Silo, master: MasterId) {
        if let Some(n) = self.loads.get_mut(&(pool, silo)).and_then(|c| c.get_mut(&master)) {
            *n = n.saturating_sub(1);
        }
    }

    fn reload_passwords(&mut self) -> Result<(), StoreError> {
        self.passwords = self
            .table(Table::SlavePasswords)
            .map(from_row)
            .collect::<Result<_, _>>()
            .map_err(other)?;
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
        for name in dump.tables.keys() {
            name.parse::<Table>().map_err(|e| StoreError::Other(e.to_string()))?;
        }
        for table in Table::ALL {
            for row in dump.rows(table) {
                if table == Table::AuditLog {
                    let entry: AuditEntry = audit_from_row(row)?;
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
        Ok(())
    }

    fn references_to(&self, table: Table, id: i32) -> Vec<String> {
        table
            .referenced_by()
            .into_iter()
            .filter(|(t, c)| self.table(*t).any(|r| int(r, c.name) == Some(id.into())))
            .map(|(t, c)| format!("{}.{}", t.name(), c.name))
            .collect()
    }

    fn record_audit(&mut self, entry: NewAuditEntry) {
        let id = self.audit.last().map_or(1, |e| e.id + 1);
        self.audit.push(AuditEntry { id, entry });
    }

    fn snapshot(&self, names: &[SlaveName]) -> Snapshot {
        let slaves: Vec<Option<Slave>> = names
            .iter()
            .map(|n| {
                self.slave_ids
                    .get(n.as_str())
                    .and_then(|id| self.slaves.get(id))
                    .cloned()
            })
            .collect();
        let found = || slaves.iter().flatten();
        // A snapshot is usually for one slave: sorted vectors of a few ids
        // cost far less than hashing every master and password row against
        // a HashSet (the allocation bench's profile).
        let pools = sorted_set(found().map(|s| s.poolid));
        let locked = sorted_set(found().filter_map(|s| s.locked_masterid));
        let tpls = sorted_set(found().filter_map(|s| s.custom_tplid));
        let silos = sorted_set(found().map(|s| (s.poolid, s.silo())));
        let has = |set: &[i32], id: i32| set.binary_search(&id).is_ok();
        Snapshot {
            masters: self
                .masters
                .values()
                .filter(|m| has(&pools, m.poolid) || has(&locked, m.masterid))
                .cloned()
                .collect(),
            passwords: self
                .passwords
                .iter()
                .filter(|p| has(&pools, p.poolid))
                .cloned()
                .collect(),
            templates: tpls.iter().filter_map(|id| self.templates.get(id)).cloned().collect(),
            loads: silos
                .into_iter()
                .map(|(poolid, silo)| SiloLoad {
                    poolid,
                    silo,
                    per_master: self
                        .loads
                        .get(&(poolid, silo))
                        .map(|c| c.iter().map(|(m, n)| (*m, *n)).collect())
                        .unwrap_or_default(),
                })
                .collect(),
            slaves,
        }
    }

    /// Sets one slave's current master; returns the previous one.
    fn set_current(&mut self, slaveid: i32, to: Option<MasterId>) -> Result<Option<MasterId>, StoreError> {
        let mut row = self.get(Table::Slaves, slaveid).cloned().ok_or(StoreError::NotFound)?;
        let from = self.slaves.get(&slaveid).and_then(|s| s.current_masterid);
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

fn audit_from_row(row: &Row) -> Result<AuditEntry, StoreError> {
    let text = |c: &str| row.get(c).and_then(Value::as_text).map(str::to_owned);
    let json = |c: &str| -> Result<Option<Row>, StoreError> {
        text(c).map(|t| serde_json::from_str(&t).map_err(other)).transpose()
    };
    Ok(AuditEntry {
        id: int(row, "id").ok_or_else(|| other("audit_log row without id"))?,
        entry: NewAuditEntry {
            at: text("at").unwrap_or_default(),
            actor: text("actor").unwrap_or_default(),
            table_name: text("table_name").unwrap_or_default(),
            row_id: int(row, "row_id").unwrap_or_default(),
            old_values: json("old_values")?,
            new_values: json("new_values")?,
        },
    })
}

fn audit_to_row(e: &AuditEntry) -> Result<Row, StoreError> {
    let json = |v: &Option<Row>| -> Result<Value, StoreError> {
        v.as_ref().map_or(Ok(Value::Null), |r| {
            serde_json::to_string(r).map(Value::Text).map_err(other)
        })
    };
    Ok([
        ("id".to_owned(), Value::Int(e.id)),
        ("at".to_owned(), Value::Text(e.entry.at.clone())),
        ("actor".to_owned(), Value::Text(e.entry.actor.clone())),
        ("table_name".to_owned(), Value::Text(e.entry.table_name.clone())),
        ("row_id".to_owned(), Value::Int(e.entry.row_id)),
        ("old_values".to_owned(), json(&e.entry.old_values)?),
        ("new_values".to_owned(), json(&e.entry.new_values)?),
    ]
    .into())
}

#[async_trait]
impl AllocationStore for MemoryStore {
    async fn begin(&self, _intent: Intent) -> Result<Box<dyn AllocationUnit>, StoreError> {
        let guard = Arc::clone(&self.state).lock_owned().await;
        Ok(Box::new(MemoryUnit {
            guard,
            undo: Vec::new(),
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
    /// The audit log's length before the first record, once recorded.
    audit_len: Option<usize>,
}

#[async_trait]
impl AllocationUnit for MemoryUnit {
    async fn snapshot(&mut self, names: &[SlaveName]) -> Result<Snapshot, StoreError> {
        Ok(self.guard.snapshot(names))
    }

    async fn record(&mut self, changes: &[MasterChange], audit: &[NewAuditEntry]) -> Result<(), StoreError> {
        self.audit_len.get_or_insert(self.guard.audit.len());
        for c in changes {
            let from = self.guard.set_current(c.slaveid, c.to)?;
            self.undo.push((c.slaveid, from));
        }
        for e in audit {
            self.guard.record_audit(e.clone());
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.undo.clear();
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
        if let Some(len) = self.audit_len {
            self.guard.audit.truncate(len);
        }
    }
}

#[async_trait]
impl InventoryStore for MemoryStore {
    async fn list(&self, table: Table) -> Result<Vec<Row>, StoreError> {
        if table == Table::AuditLog {
            return self.state.lock().await.audit.iter().map(audit_to_row).collect();
        }
        Ok(self.state.lock().await.table(table).cloned().collect())
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
        let mut state = self.state.lock().await;
        let (key, row) = state.insert(table, row)?;
        let row_id = if table.id_column().is_some() { key.into() } else { 0 };
        if let Some(e) = NewAuditEntry::for_write(table, row_id, None, Some(&row), &actor) {
            state.record_audit(e);
        }
        Ok(row)
    }

    async fn update(&self, table: Table, id: i32, changes: Row, actor: Actor) -> Result<Row, StoreError> {
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
            .filter(|e| query.table.as_ref().is_none_or(|t| *t == e.entry.table_name))
            .filter(|e| query.row_id.is_none_or(|id| id == e.entry.row_id))
            .take(query.limit as usize)
            .cloned()
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl DumpStore for MemoryStore {
    async fn export(&self) -> Result<Dump, StoreError> {
        let state = self.state.lock().await;
        let mut dump = Dump::default();
        for table in Table::ALL {
            let rows = match table {
                Table::AuditLog => state.audit.iter().map(audit_to_row).collect::<Result<_, _>>()?,
                _ => state.table(table).cloned().collect(),
            };
            dump.tables.insert(table.name().to_owned(), rows);
        }
        dump.sort();
        Ok(dump)
    }

    async fn replace_all(&self, dump: &Dump) -> Result<(), StoreError> {
        let mut fresh = State::default();
        fresh.append(dump)?;
        *self.state.lock().await = fresh;
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
