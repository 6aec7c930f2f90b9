//! Holds ([`slavealloc_domain::lifecycle`]), once for every backend: each
//! call one transaction holding the `enabled` writes (through the same
//! locked row update as any edit), the `holds` rows and the audit entries.
//!
//! The end of a due hold is taken with `UPDATE holds ... WHERE id = ? AND
//! ended_ms IS NULL`: a second daemon doing the same waits on the row lock
//! and then matches no row (InnoDB and PostgreSQL re-read the row for the
//! update; SQLite has one writer), so it enables and audits nothing.

use std::time::{Duration, SystemTime};

use slavealloc_domain::lifecycle::{
    bare_entry, enabled_change, ended_text, mark, EndReason, Ended, Hold, HoldQuery, HoldTarget, NewHold, RESUME_ACTOR,
};
use slavealloc_domain::{Actor, NewAuditEntry, StoreError, Value};

use crate::driver::{Db, Dialect, Mode, Out, Param, Sql, Tx};
use crate::inventory::{update_in, write_audit};

const COLUMNS: &str =
    "id, target, target_id, note, actor, started_ms, until_ms, graceful, ended_ms, ended_by, end_reason";
const OUT: [Out; 11] = [
    Out::Int,
    Out::Text,
    Out::Int,
    Out::Text,
    Out::Text,
    Out::Int,
    Out::Int,
    Out::Bool,
    Out::Int,
    Out::Text,
    Out::Text,
];

fn ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn time(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn broken(what: &str) -> StoreError {
    StoreError::Other(format!("a holds row with a bad {what}"))
}

fn to_hold(v: &[Value]) -> Result<Hold, StoreError> {
    let text = |i: usize| v[i].as_text().map(str::to_owned);
    let int = |i: usize| v[i].as_int();
    let ended = match (int(8), text(10)) {
        (Some(at), Some(reason)) => Some(Ended {
            at: time(at),
            by: text(9).unwrap_or_default(),
            reason: EndReason::parse(&reason).ok_or_else(|| broken("end_reason"))?,
        }),
        _ => None,
    };
    Ok(Hold {
        id: int(0).ok_or_else(|| broken("id"))?,
        target: text(1)
            .as_deref()
            .and_then(HoldTarget::parse)
            .ok_or_else(|| broken("target"))?,
        target_id: int(2)
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| broken("target_id"))?,
        note: text(3).unwrap_or_default(),
        actor: text(4).unwrap_or_default(),
        started: time(int(5).ok_or_else(|| broken("started_ms"))?),
        until: int(6).map(time),
        graceful: matches!(v[7], Value::Bool(true)),
        ended,
    })
}

/// The open holds of these rows, locked until the transaction ends.
async fn open_holds(tx: &mut dyn Tx, d: &Dialect, target: HoldTarget, ids: &[i32]) -> Result<Vec<Hold>, StoreError> {
    let mut found = Vec::new();
    for chunk in ids.chunks(crate::inventory::MAX_PARAMS) {
        let mut sql = Sql::new(d, &format!("SELECT {COLUMNS} FROM holds WHERE target = "));
        sql.param(Param::Text(Some(target.as_str().to_owned())))
            .push(" AND ended_ms IS NULL AND target_id IN (")
            .params(chunk.iter().map(|i| Param::Int(Some(*i))))
            .push(")")
            .push(d.row_lock);
        for row in tx.fetch(&sql, &OUT).await? {
            found.push(to_hold(&row)?);
        }
    }
    Ok(found)
}

/// Ends one open hold; false when it had already ended (another daemon).
async fn end_hold(tx: &mut dyn Tx, d: &Dialect, id: i64, ended: &Ended) -> Result<bool, StoreError> {
    let mut sql = Sql::new(d, "UPDATE holds SET ended_ms = ");
    sql.param(Param::BigInt(Some(ms(ended.at))))
        .push(", ended_by = ")
        .param(Param::Text(Some(ended.by.clone())))
        .push(", end_reason = ")
        .param(Param::Text(Some(ended.reason.as_str().to_owned())))
        .push(" WHERE id = ")
        .param(Param::BigInt(Some(id)))
        .push(" AND ended_ms IS NULL");
    Ok(tx.execute(&sql).await? == 1)
}

/// Sets `enabled` on one row and answers its lifecycle audit entry.
async fn switch(
    tx: &mut dyn Tx,
    d: &Dialect,
    target: HoldTarget,
    id: i32,
    changes: &slavealloc_domain::Row,
    what: &str,
    actor: &Actor,
) -> Result<NewAuditEntry, StoreError> {
    let table = target.table();
    let (old, new) = update_in(tx, d, table, id, changes).await?;
    Ok(
        match NewAuditEntry::for_write(table, id.into(), Some(&old), Some(&new), actor) {
            Some(entry) => mark(entry, what),
            None => bare_entry(target, id, what, actor),
        },
    )
}

pub(crate) async fn hold(
    db: &dyn Db,
    target: HoldTarget,
    ids: &[i32],
    hold: &NewHold,
    actor: Actor,
) -> Result<Vec<Hold>, StoreError> {
    let d = db.dialect();
    let mut tx = db.begin(Mode::Write).await?;
    let superseded = Ended {
        at: actor.at,
        by: actor.name.clone(),
        reason: EndReason::Superseded,
    };
    for old in open_holds(&mut *tx, d, target, ids).await? {
        end_hold(&mut *tx, d, old.id, &superseded).await?;
    }
    let mut made = Vec::with_capacity(ids.len());
    let mut audit = Vec::with_capacity(ids.len());
    for id in ids {
        let mut h = hold.opened(target, *id, &actor);
        let changes = enabled_change(false, &hold.also);
        audit.push(switch(&mut *tx, d, target, *id, &changes, &h.started_text(), &actor).await?);
        let mut sql = Sql::new(
            d,
            "INSERT INTO holds (target, target_id, note, actor, started_ms, until_ms, graceful) VALUES (",
        );
        sql.params([
            Param::Text(Some(target.as_str().to_owned())),
            Param::Int(Some(*id)),
            Param::Text(Some(h.note.clone())),
            Param::Text(Some(h.actor.clone())),
            Param::BigInt(Some(ms(h.started))),
            Param::BigInt(h.until.map(ms)),
            Param::Bool(Some(h.graceful)),
        ])
        .push(")");
        h.id = tx.insert(&sql, "id").await?;
        made.push(h);
    }
    write_audit(&mut *tx, d, &audit).await?;
    tx.commit().await?;
    Ok(made)
}

pub(crate) async fn release(
    db: &dyn Db,
    target: HoldTarget,
    ids: &[i32],
    also: &slavealloc_domain::Row,
    actor: Actor,
) -> Result<Vec<Hold>, StoreError> {
    let d = db.dialect();
    let mut tx = db.begin(Mode::Write).await?;
    let ended = Ended {
        at: actor.at,
        by: actor.name.clone(),
        reason: EndReason::Released,
    };
    let mut released = open_holds(&mut *tx, d, target, ids).await?;
    for h in &mut released {
        end_hold(&mut *tx, d, h.id, &ended).await?;
        h.ended = Some(ended.clone());
    }
    let mut audit = Vec::new();
    for id in ids {
        let held = released.iter().any(|h| h.target_id == *id);
        let changes = enabled_change(true, also);
        let entry = switch(
            &mut *tx,
            d,
            target,
            *id,
            &changes,
            ended_text(EndReason::Released),
            &actor,
        )
        .await?;
        // Enabling what was neither held nor disabled is no event.
        if held || entry.old_values.is_some() {
            audit.push(entry);
        }
    }
    write_audit(&mut *tx, d, &audit).await?;
    tx.commit().await?;
    Ok(released)
}

pub(crate) async fn holds(db: &dyn Db, query: &HoldQuery) -> Result<Vec<Hold>, StoreError> {
    let d = db.dialect();
    let mut sql = Sql::new(d, &format!("SELECT {COLUMNS} FROM holds WHERE 1 = 1"));
    if let Some(t) = query.target {
        sql.push(" AND target = ")
            .param(Param::Text(Some(t.as_str().to_owned())));
    }
    if let Some(id) = query.target_id {
        sql.push(" AND target_id = ").param(Param::Int(Some(id)));
    }
    if query.open_only {
        sql.push(" AND ended_ms IS NULL");
    }
    sql.push(" ORDER BY id DESC");
    if query.limit > 0 {
        sql.push(&format!(" LIMIT {}", query.limit));
    }
    let mut tx = db.begin(Mode::Read).await?;
    tx.fetch(&sql, &OUT).await?.iter().map(|r| to_hold(r)).collect()
}

pub(crate) async fn resume_due(db: &dyn Db, now: SystemTime) -> Result<Vec<Hold>, StoreError> {
    let d = db.dialect();
    let mut sql = Sql::new(
        d,
        &format!("SELECT {COLUMNS} FROM holds WHERE ended_ms IS NULL AND until_ms IS NOT NULL AND until_ms <= "),
    );
    sql.param(Param::BigInt(Some(ms(now)))).push(" ORDER BY id");
    let due: Vec<Hold> = {
        let mut tx = db.begin(Mode::Read).await?;
        tx.fetch(&sql, &OUT)
            .await?
            .iter()
            .map(|r| to_hold(r))
            .collect::<Result<_, _>>()?
    };
    let actor = Actor {
        name: RESUME_ACTOR.to_owned(),
        at: now,
    };
    let ended = Ended {
        at: now,
        by: RESUME_ACTOR.to_owned(),
        reason: EndReason::UntilReached,
    };
    let mut resumed = Vec::new();
    // One transaction per hold: a row deleted meanwhile fails only its own.
    for mut h in due {
        let mut tx = db.begin(Mode::Write).await?;
        if !end_hold(&mut *tx, d, h.id, &ended).await? {
            continue;
        }
        let changes = enabled_change(true, &slavealloc_domain::Row::new());
        match switch(
            &mut *tx,
            d,
            h.target,
            h.target_id,
            &changes,
            ended_text(EndReason::UntilReached),
            &actor,
        )
        .await
        {
            Ok(entry) => write_audit(&mut *tx, d, &[entry]).await?,
            // The row is gone: the hold ends with nothing to enable.
            Err(StoreError::NotFound) => {}
            Err(e) => return Err(e),
        }
        tx.commit().await?;
        h.ended = Some(ended.clone());
        resumed.push(h);
    }
    Ok(resumed)
}
