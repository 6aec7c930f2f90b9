//! `slave_loads` on MariaDB and PostgreSQL, where no trigger keeps it: the
//! count of each (pool, silo)'s slaves per current master, which every
//! allocation reads instead of counting the pool's slaves (so its cost does
//! not grow with the fleet).
//!
//! Three things keep it exact. Every allocation applies its own moves
//! ([`apply_moves`]) inside its transaction, under its pools' lock, as the
//! rest of its writes. Every write of the inventory through this store, and
//! every start, recounts it ([`reconcile`]). And every daemon recounts it
//! every `[database] reconcile_interval_s`: a writer that is not this
//! store (the original daemon, an operator's SQL, an older daemon during a
//! rolling upgrade) leaves the counts wrong for at most that long.
//!
//! A recount goes pool by pool, each under the pool's allocation lock (so no
//! allocation of the pool runs meanwhile), and writes only a pool whose
//! counts differ.

use std::collections::{BTreeMap, HashMap};

use slavealloc_domain::entities::{MasterId, PoolId, Silo};
use slavealloc_domain::ports::MasterChange;
use slavealloc_domain::StoreError;

use crate::allocation::{int, load_row, lock_pools, pool_lock, SILO_KEY};
use crate::driver::{Db, Dialect, Mode, Out, Param, Sql, Tx, Upsert};
use crate::inventory::MAX_PARAMS;

/// One count: (pool, silo, master) → slaves.
type Counts = BTreeMap<(PoolId, Silo, MasterId), i64>;

/// The columns of a `slave_loads` row, in order.
const COLUMNS: usize = SILO_KEY.len() + 2;

/// Adds `changes` (each slave's move from one master to another) to the
/// counts, in the allocation's transaction.
pub(crate) async fn apply_moves(
    tx: &mut dyn Tx,
    d: &Dialect,
    changes: &[MasterChange],
    silos: &HashMap<i32, (PoolId, Silo)>,
) -> Result<(), StoreError> {
    let mut deltas = Counts::new();
    for c in changes {
        let Some(&(pool, silo)) = silos.get(&c.slaveid) else {
            return Err(StoreError::Other(format!(
                "slave {} moved without being read first",
                c.slaveid
            )));
        };
        if let Some(from) = c.from {
            *deltas.entry((pool, silo, from)).or_default() -= 1;
        }
        if let Some(to) = c.to {
            *deltas.entry((pool, silo, to)).or_default() += 1;
        }
    }
    deltas.retain(|_, n| *n != 0);
    let deltas: Vec<_> = deltas.into_iter().collect();
    for chunk in deltas.chunks(MAX_PARAMS / COLUMNS) {
        let mut sql = insert_rows(d, chunk);
        sql.push(
            match d.upsert {
                Upsert::OnDuplicateKey => " ON DUPLICATE KEY UPDATE slaves = slaves + VALUES(slaves)".to_owned(),
                Upsert::OnConflict => format!(
                    " ON CONFLICT ({}, masterid) DO UPDATE SET slaves = slave_loads.slaves + excluded.slaves",
                    SILO_KEY.join(", ")
                ),
            }
            .as_str(),
        );
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// `INSERT INTO slave_loads (...) VALUES (...), ...` for `rows`.
fn insert_rows(d: &Dialect, rows: &[((PoolId, Silo, MasterId), i64)]) -> Sql {
    let mut sql = Sql::new(
        d,
        &format!(
            "INSERT INTO slave_loads ({}, masterid, slaves) VALUES ",
            SILO_KEY.join(", ")
        ),
    );
    for (i, ((pool, s, master), n)) in rows.iter().enumerate() {
        sql.push(if i == 0 { "(" } else { ", (" });
        for v in [
            *pool,
            s.distroid,
            s.bitsid,
            s.purposeid,
            s.dcid,
            s.trustid,
            s.envid,
            *master,
        ] {
            sql.param(int(v)).push(", ");
        }
        sql.param(Param::BigInt(Some(*n))).push(")");
    }
    sql
}

/// Recounts `slave_loads` from `slaves`, pool by pool; answers how many
/// pools' counts were wrong (and are now right). Nothing to do where
/// triggers keep the table.
pub(crate) async fn reconcile(db: &dyn Db) -> Result<u64, StoreError> {
    let d = db.dialect();
    if !d.store_keeps_loads {
        return Ok(0);
    }
    let mut tx = db.begin(Mode::Read).await?;
    // Pools the slaves name, also one missing from `pools` (an operator's
    // write): its counts are rebuilt too.
    let pools = tx
        .fetch(
            &Sql::new(
                d,
                "SELECT poolid FROM pools UNION SELECT DISTINCT poolid FROM slaves \
                 UNION SELECT DISTINCT poolid FROM slave_loads",
            ),
            &[Out::Int],
        )
        .await?;
    drop(tx);
    let mut pools: Vec<PoolId> = pools
        .iter()
        .filter_map(|r| r.first().and_then(|v| v.as_int()))
        .filter_map(|p| i32::try_from(p).ok())
        .collect();
    pools.sort_unstable();
    pools.dedup();
    let mut fixed = 0;
    for pool in pools {
        if reconcile_pool(db, pool).await? {
            fixed += 1;
        }
    }
    Ok(fixed)
}

/// Recounts one pool under its allocation lock; true when it was wrong.
async fn reconcile_pool(db: &dyn Db, pool: PoolId) -> Result<bool, StoreError> {
    let d = db.dialect();
    let mut tx = db.begin(Mode::Write).await?;
    lock_pools(&mut *tx, d, pool_lock(db), &std::collections::BTreeSet::from([pool])).await?;
    let key = SILO_KEY.join(", ");
    let mut counted = Sql::new(
        d,
        &format!("SELECT {key}, current_masterid, COUNT(*) FROM slaves WHERE poolid = "),
    );
    counted.param(int(pool)).push(&format!(
        " AND current_masterid IS NOT NULL GROUP BY {key}, current_masterid"
    ));
    let counted = counts(tx.fetch(&counted, &[Out::Int; COLUMNS]).await?)?;
    let mut kept = Sql::new(
        d,
        &format!("SELECT {key}, masterid, slaves FROM slave_loads WHERE slaves <> 0 AND poolid = "),
    );
    kept.param(int(pool));
    let kept = counts(tx.fetch(&kept, &[Out::Int; COLUMNS]).await?)?;
    if counted == kept {
        return Ok(false);
    }
    let mut clear = Sql::new(d, "DELETE FROM slave_loads WHERE poolid = ");
    clear.param(int(pool));
    tx.execute(&clear).await?;
    let rows: Vec<_> = counted.into_iter().collect();
    for chunk in rows.chunks(MAX_PARAMS / COLUMNS) {
        tx.execute(&insert_rows(d, chunk)).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Rows of (silo key, master, count) as counts.
fn counts(rows: Vec<Vec<slavealloc_domain::schema::Value>>) -> Result<Counts, StoreError> {
    let mut out = Counts::new();
    for row in rows {
        let (pool, silo, master, n) = load_row(&row)?;
        out.insert((pool, silo, master), n);
    }
    Ok(out)
}
