//! The allocation unit of work ([`AllocationUnit`]), once for every backend.
//!
//! A committing unit is one write transaction. On MariaDB and PostgreSQL
//! it locks the rows of the pools its slaves are in (on a Galera node it
//! writes their rows of `pool_locks` instead: a write, unlike a read's
//! lock, is certified across the cluster), in ascending `poolid` order (so
//! two units never wait for each other in a circle), then reads
//! the slaves again and counts the loads under that lock: two allocators,
//! in one process or in two, serialise per pool and never decide from the
//! same counts. Both run at READ COMMITTED, so every read after the lock
//! sees what the previous holder committed. On SQLite the transaction
//! starts with `BEGIN IMMEDIATE`, which already excludes every other writer.
//!
//! A batch of names costs a fixed number of queries whatever its size: the
//! slaves by name, the pool lock, the slaves again, then masters, passwords,
//! templates and one grouped count.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use slavealloc_domain::audit::NewAuditEntry;
use slavealloc_domain::entities::{MasterId, PoolId, Silo, Slave};
use slavealloc_domain::live::{BootRecord, LivePeers};
use slavealloc_domain::ports::{AllocationUnit, MasterChange, SiloLoad, Snapshot};
use slavealloc_domain::schema::{Table, Value};
use slavealloc_domain::{Intent, SlaveName, StoreError};

use crate::driver::{Db, Dialect, Mode, Out, Param, PoolLock, Sql, Tx};
use crate::inventory::{write_audit, MAX_PARAMS};
use crate::retry::Conflicts;
use crate::rows::{master, password, select_list, slave, template};

/// How many times the pool set may grow while locking (a slave moved to
/// another pool between the reads) before the unit asks to be retried.
const LOCK_ROUNDS: usize = 3;

/// Starts a unit of work.
pub(crate) async fn begin(
    db: Arc<dyn Db>,
    conflicts: Arc<Conflicts>,
    intent: Intent,
) -> Result<Box<dyn AllocationUnit>, StoreError> {
    let mode = match intent {
        // A peek reads the slaves, then their pools' masters, passwords and
        // loads: in one read-only transaction, so that all of it is one
        // state of the database, as a committing unit's reads are.
        Intent::Peek => Mode::Consistent,
        Intent::Commit => Mode::Write,
    };
    if intent == Intent::Commit {
        // A retry after a conflict: wait, with jitter, before competing again.
        conflicts.wait_turn().await;
    }
    let tx = conflicts.noted(db.begin(mode).await)?;
    Ok(Box::new(SqlUnit {
        db,
        tx,
        intent,
        conflicts,
        silos: HashMap::new(),
    }))
}

/// One allocation transaction.
///
/// A conflict (which the allocator retries with a new unit) is reported
/// after a jittered pause ([`Conflicts`]), so that the retry does not
/// collide again with the same transactions.
struct SqlUnit {
    db: Arc<dyn Db>,
    tx: Box<dyn Tx>,
    intent: Intent,
    conflicts: Arc<Conflicts>,
    /// Each slave of the snapshot's pool and silo, for the counts that
    /// its move changes.
    silos: HashMap<i32, (PoolId, Silo)>,
}

pub(crate) fn int(v: i32) -> Param {
    Param::Int(Some(v))
}

fn distinct_pools(slaves: &[Slave]) -> BTreeSet<PoolId> {
    slaves.iter().map(|s| s.poolid).collect()
}

async fn slaves_by_name(tx: &mut dyn Tx, d: &Dialect, names: &[SlaveName]) -> Result<Vec<Slave>, StoreError> {
    let (columns, out) = select_list(Table::Slaves);
    let mut found = Vec::with_capacity(names.len());
    for chunk in names.chunks(MAX_PARAMS) {
        let mut sql = Sql::new(d, &format!("SELECT {columns} FROM slaves WHERE name IN ("));
        sql.params(chunk.iter().map(|n| Param::Text(Some(n.as_str().to_owned()))))
            .push(")");
        for values in tx.fetch(&sql, &out).await? {
            found.push(slave(&values)?);
        }
    }
    Ok(found)
}

/// Keeps every other allocation of `pools` out until this transaction ends,
/// taking the pools in ascending order (so that two units never wait for
/// each other in a circle).
pub(crate) async fn lock_pools(
    tx: &mut dyn Tx,
    d: &Dialect,
    lock: PoolLock,
    pools: &BTreeSet<PoolId>,
) -> Result<(), StoreError> {
    match lock {
        PoolLock::None => {}
        PoolLock::Select(clause) => {
            let mut sql = Sql::new(d, "SELECT poolid FROM pools WHERE poolid IN (");
            sql.params(pools.iter().map(|p| int(*p)))
                .push(") ORDER BY poolid")
                .push(clause);
            tx.fetch(&sql, &[Out::Int]).await?;
        }
        PoolLock::Bump => {
            // A multi-row INSERT locks its rows in the order of its VALUES.
            let mut sql = Sql::new(d, "INSERT INTO pool_locks (poolid, bumps) VALUES ");
            for (i, pool) in pools.iter().enumerate() {
                sql.push(if i == 0 { "(" } else { ", (" })
                    .param(int(*pool))
                    .push(", 1)");
            }
            sql.push(" ON DUPLICATE KEY UPDATE bumps = bumps + 1");
            tx.execute(&sql).await?;
        }
    }
    Ok(())
}

/// How `db` keeps other allocations out of a pool: a lock taken by a read
/// stays on its Galera node, so there the rows of `pool_locks` are
/// written instead; elsewhere the read's lock adds no row to write.
pub(crate) fn pool_lock(db: &dyn Db) -> PoolLock {
    if db.cluster().is_some() {
        PoolLock::Bump
    } else {
        db.dialect().pool_lock
    }
}

/// A `slave_loads` row (or a count of `slaves` in its shape): the pool,
/// the silo, the master and the count.
pub(crate) fn load_row(row: &[Value]) -> Result<(PoolId, Silo, MasterId, i64), StoreError> {
    let n: Vec<i64> = row.iter().map(|v| v.as_int().unwrap_or_default()).collect();
    if n.len() != SILO_KEY.len() + 2 {
        return Err(StoreError::Other(format!("a load row of {} columns", n.len())));
    }
    let narrow = |i: usize| i32::try_from(n[i]).map_err(|_| StoreError::Other(format!("id {} out of range", n[i])));
    let silo = Silo {
        distroid: narrow(1)?,
        bitsid: narrow(2)?,
        purposeid: narrow(3)?,
        dcid: narrow(4)?,
        trustid: narrow(5)?,
        envid: narrow(6)?,
    };
    Ok((narrow(0)?, silo, narrow(7)?, n[8]))
}

/// The `slaves` columns that make a (pool, silo).
pub(crate) const SILO_KEY: [&str; 7] = ["poolid", "distroid", "bitsid", "purposeid", "dcid", "trustid", "envid"];

/// Appends `(poolid = ? AND distroid = ? ...) OR (...)`, one group per
/// (pool, silo), on the columns of `alias` (`""` or `"s."`).
pub(crate) fn push_silos(sql: &mut Sql, silos: &[&(PoolId, Silo)], alias: &str) {
    for (i, (pool, s)) in silos.iter().enumerate() {
        sql.push(if i == 0 { "(" } else { " OR (" });
        let values = [*pool, s.distroid, s.bitsid, s.purposeid, s.dcid, s.trustid, s.envid];
        for (j, (column, value)) in SILO_KEY.iter().zip(values).enumerate() {
            sql.push(&format!("{}{alias}{column} = ", if j == 0 { "" } else { " AND " }))
                .param(int(value));
        }
        sql.push(")");
    }
}

/// The slaves of each (pool, silo) per current master, from `slave_loads`
/// (kept by triggers on SQLite, by the store elsewhere: see
/// [`crate::loads`]): a few point reads, whatever the pool's size.
///
/// The silos are an OR of equalities rather than a row-value `IN`: with
/// several silos SQLite scans the whole table for the latter, and uses
/// `slave_loads`' key for the former, as do MariaDB and PostgreSQL.
async fn loads(tx: &mut dyn Tx, d: &Dialect, silos: &BTreeSet<(PoolId, Silo)>) -> Result<Vec<SiloLoad>, StoreError> {
    let key = SILO_KEY.join(", ");
    let mut per_silo: BTreeMap<(PoolId, Silo), Vec<(MasterId, u32)>> = silos.iter().map(|k| (*k, Vec::new())).collect();
    let silos: Vec<_> = silos.iter().collect();
    for chunk in silos.chunks(MAX_PARAMS / SILO_KEY.len()) {
        let mut sql = Sql::new(d, &format!("SELECT {key}, masterid, slaves FROM slave_loads WHERE ("));
        push_silos(&mut sql, chunk, "");
        sql.push(") AND slaves > 0");
        for row in tx.fetch(&sql, &[Out::Int; 9]).await? {
            let (pool, silo, master, count) = load_row(&row)?;
            if let Some(masters) = per_silo.get_mut(&(pool, silo)) {
                masters.push((master, u32::try_from(count).unwrap_or(u32::MAX)));
            }
        }
    }
    Ok(per_silo
        .into_iter()
        .map(|((poolid, silo), per_master)| SiloLoad {
            poolid,
            silo,
            per_master,
        })
        .collect())
}

impl SqlUnit {
    /// The slaves for `names`, with their pools locked when committing.
    async fn locked_slaves(&mut self, names: &[SlaveName]) -> Result<Vec<Slave>, StoreError> {
        let d = self.db.dialect();
        let mut slaves = slaves_by_name(&mut *self.tx, d, names).await?;
        if d.pool_lock == PoolLock::None || self.intent != Intent::Commit {
            return Ok(slaves);
        }
        let lock = pool_lock(&*self.db);
        let mut locked = BTreeSet::new();
        for _ in 0..LOCK_ROUNDS {
            let missing: BTreeSet<PoolId> = distinct_pools(&slaves).difference(&locked).copied().collect();
            if missing.is_empty() {
                return Ok(slaves);
            }
            lock_pools(&mut *self.tx, d, lock, &missing).await?;
            locked.extend(missing);
            // Read again: what another allocator committed while we waited.
            slaves = slaves_by_name(&mut *self.tx, d, names).await?;
        }
        Err(StoreError::Retryable(
            "slaves kept moving between pools while their pools were locked".to_owned(),
        ))
    }
}

// Every step notes a conflict (a deadlock, a certification failure)
// wherever it surfaces, so that the next committing unit of this store
// waits its turn: a Galera node reports a certification loss at whatever
// statement follows it.
#[async_trait]
impl AllocationUnit for SqlUnit {
    async fn snapshot(&mut self, names: &[SlaveName]) -> Result<Snapshot, StoreError> {
        let read = self.read_snapshot(names).await;
        self.conflicts.noted(read)
    }

    async fn live_peers(&mut self, silos: &[(PoolId, Silo)]) -> Result<LivePeers, StoreError> {
        let read = crate::live::peers(&mut *self.tx, self.db.dialect(), silos).await;
        self.conflicts.noted(read)
    }

    async fn record(
        &mut self,
        changes: &[MasterChange],
        audit: &[NewAuditEntry],
        boots: &[BootRecord],
    ) -> Result<(), StoreError> {
        let written = self.write_record(changes, audit, boots).await;
        self.conflicts.noted(written)
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let SqlUnit { tx, conflicts, .. } = *self;
        conflicts.committed(tx.commit().await)
    }
}

impl SqlUnit {
    async fn read_snapshot(&mut self, names: &[SlaveName]) -> Result<Snapshot, StoreError> {
        if names.is_empty() {
            return Ok(Snapshot::default());
        }
        let slaves = self.locked_slaves(names).await?;
        self.silos = slaves.iter().map(|s| (s.slaveid, (s.poolid, s.silo()))).collect();
        let d = self.db.dialect();
        let tx = &mut *self.tx;
        let pools = distinct_pools(&slaves);
        let locked: BTreeSet<MasterId> = slaves.iter().filter_map(|s| s.locked_masterid).collect();
        let templates: BTreeSet<i32> = slaves.iter().filter_map(|s| s.custom_tplid).collect();
        let silos: BTreeSet<(PoolId, Silo)> = slaves.iter().map(|s| (s.poolid, s.silo())).collect();
        let mut by_name: HashMap<String, Slave> = slaves.into_iter().map(|s| (s.name.clone(), s)).collect();
        let mut snapshot = Snapshot {
            slaves: names.iter().map(|n| by_name.remove(n.as_str()).map(Arc::new)).collect(),
            ..Snapshot::default()
        };
        if pools.is_empty() {
            return Ok(snapshot);
        }

        let (columns, out) = select_list(Table::Masters);
        let mut sql = Sql::new(d, &format!("SELECT {columns} FROM masters WHERE poolid IN ("));
        sql.params(pools.iter().map(|p| int(*p))).push(")");
        if !locked.is_empty() {
            sql.push(" OR masterid IN (")
                .params(locked.iter().map(|m| int(*m)))
                .push(")");
        }
        for values in tx.fetch(&sql, &out).await? {
            snapshot.masters.push(Arc::new(master(&values)?));
        }

        let (columns, out) = select_list(Table::SlavePasswords);
        let mut sql = Sql::new(d, &format!("SELECT {columns} FROM slave_passwords WHERE poolid IN ("));
        sql.params(pools.iter().map(|p| int(*p))).push(")");
        for values in tx.fetch(&sql, &out).await? {
            snapshot.passwords.push(Arc::new(password(&values)?));
        }

        if !templates.is_empty() {
            let (columns, out) = select_list(Table::TacTemplates);
            let mut sql = Sql::new(d, &format!("SELECT {columns} FROM tac_templates WHERE tplid IN ("));
            sql.params(templates.iter().map(|t| int(*t))).push(")");
            for values in tx.fetch(&sql, &out).await? {
                snapshot.templates.push(Arc::new(template(&values)?));
            }
        }

        snapshot.loads = loads(tx, d, &silos).await?;
        Ok(snapshot)
    }

    async fn write_record(
        &mut self,
        changes: &[MasterChange],
        audit: &[NewAuditEntry],
        boots: &[BootRecord],
    ) -> Result<(), StoreError> {
        let d = self.db.dialect();
        // One UPDATE for the whole batch (a CASE on the slave), not one per
        // new master: the batch holds its pools' locks while it writes,
        // and in a boot storm it moves slaves to many masters at once.
        // A slave asked for twice in one batch ends where its last
        // decision put it (CASE would take the first).
        let mut last: BTreeMap<i32, Option<MasterId>> = BTreeMap::new();
        for c in changes {
            last.insert(c.slaveid, c.to);
        }
        let last: Vec<(i32, Option<MasterId>)> = last.into_iter().collect();
        for chunk in last.chunks(MAX_PARAMS / 3) {
            let mut sql = Sql::new(d, "UPDATE slaves SET current_masterid = CASE slaveid");
            for (slaveid, to) in chunk {
                sql.push(" WHEN ")
                    .param(int(*slaveid))
                    .push(" THEN ")
                    .param(Param::Int(*to));
            }
            sql.push(" END WHERE slaveid IN (")
                .params(chunk.iter().map(|(slaveid, _)| int(*slaveid)))
                .push(")");
            self.tx.execute(&sql).await?;
        }
        if d.store_keeps_loads {
            crate::loads::apply_moves(&mut *self.tx, d, changes, &self.silos).await?;
        }
        write_audit(&mut *self.tx, d, audit).await?;
        crate::live::record_boots(&mut *self.tx, d, boots).await
    }
}
