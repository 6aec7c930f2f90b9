//! The live-fleet tables ([`slavealloc_domain::live`]), once for every
//! backend: boot records written inside the allocation transaction, poll
//! results written by the one daemon holding the poller's lease, and that
//! lease.
//!
//! What a poll changes is decided by the domain
//! ([`presence_after_poll`], [`status_after_poll`]) from the rows read in
//! the same transaction, so every backend (and the in-memory store) agrees
//! on it; SQL only reads and writes rows.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use slavealloc_domain::entities::{MasterId, PoolId, Silo, SlaveId};
use slavealloc_domain::live::{
    presence_after_poll, status_after_poll, BootRecord, Lease, LivePeers, LiveState, MasterStatus, PeerFacts,
    PollRecord, Presence, UnknownWorker,
};
use slavealloc_domain::StoreError;

use crate::allocation::{int, push_silos, SILO_KEY};
use crate::driver::{Db, Dialect, Mode, Out, Param, Sql, Tx};
use crate::inventory::MAX_PARAMS;

/// The tables of facts about slaves and masters (all but `leases`).
pub(crate) const FACT_TABLES: [&str; 4] = ["slave_boots", "slave_presence", "master_status", "unknown_workers"];

/// Milliseconds since the epoch, as the tables keep times.
fn ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn time(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn big(t: Option<SystemTime>) -> Param {
    Param::BigInt(t.map(ms))
}

fn opt_int(v: Option<i32>) -> Param {
    Param::Int(v)
}

fn narrow(v: &slavealloc_domain::Value) -> Result<Option<i32>, StoreError> {
    v.as_int()
        .map(|n| i32::try_from(n).map_err(|_| StoreError::Other(format!("id {n} out of range"))))
        .transpose()
}

fn id(v: &slavealloc_domain::Value) -> Result<i32, StoreError> {
    narrow(v)?.ok_or_else(|| StoreError::Other("a NULL id in a live-fleet table".to_owned()))
}

fn at(v: &slavealloc_domain::Value) -> Option<SystemTime> {
    v.as_int().map(time)
}

fn flag(v: &slavealloc_domain::Value) -> bool {
    matches!(v, slavealloc_domain::Value::Bool(true))
}

fn text(v: &slavealloc_domain::Value) -> Option<String> {
    v.as_text().map(str::to_owned)
}

/// Inserts `rows` of `columns` into `table`, replacing the rows whose `key`
/// exists, a few hundred per statement.
async fn upsert(
    tx: &mut dyn Tx,
    d: &Dialect,
    table: &str,
    key: &[&str],
    columns: &[&str],
    rows: Vec<Vec<Param>>,
) -> Result<(), StoreError> {
    let replaced: Vec<&str> = columns.iter().copied().filter(|c| !key.contains(c)).collect();
    let tail = d.upsert.tail(key, &replaced);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut sql = Sql::new(d, &format!("INSERT INTO {table} ({}) VALUES ", columns.join(", ")));
        for (i, row) in rows.by_ref().take(MAX_PARAMS / columns.len()).enumerate() {
            sql.push(if i == 0 { "(" } else { ", (" }).params(row).push(")");
        }
        sql.push(&tail);
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// Replaces the boot records of these slaves (inside the allocation unit).
pub(crate) async fn record_boots(tx: &mut dyn Tx, d: &Dialect, boots: &[BootRecord]) -> Result<(), StoreError> {
    let rows = boots
        .iter()
        .map(|b| {
            vec![
                int(b.slaveid),
                Param::BigInt(Some(ms(b.at))),
                Param::Text(b.from.clone()),
                opt_int(b.masterid),
            ]
        })
        .collect();
    upsert(
        tx,
        d,
        "slave_boots",
        &["slaveid"],
        &["slaveid", "at_ms", "from_addr", "masterid"],
        rows,
    )
    .await
}

/// Since when each master that does not answer has not answered.
async fn unreachable_since(tx: &mut dyn Tx, d: &Dialect) -> Result<Vec<(MasterId, SystemTime)>, StoreError> {
    let sql = Sql::new(
        d,
        "SELECT masterid, unreachable_since_ms FROM master_status WHERE unreachable_since_ms IS NOT NULL",
    );
    tx.fetch(&sql, &[Out::Int, Out::Int])
        .await?
        .iter()
        .map(|r| Ok((id(&r[0])?, at(&r[1]).unwrap_or(SystemTime::UNIX_EPOCH))))
        .collect()
}

/// The live facts of every slave of these (pool, silo)s (inside the
/// allocation unit, under its locks).
pub(crate) async fn peers(tx: &mut dyn Tx, d: &Dialect, silos: &[(PoolId, Silo)]) -> Result<LivePeers, StoreError> {
    let mut live = LivePeers {
        peers: Vec::new(),
        unreachable_since: unreachable_since(tx, d).await?,
    };
    let silos: Vec<&(PoolId, Silo)> = silos.iter().collect();
    let key: Vec<String> = SILO_KEY.iter().map(|c| format!("s.{c}")).collect();
    for chunk in silos.chunks(MAX_PARAMS / SILO_KEY.len()) {
        let mut sql = Sql::new(
            d,
            &format!(
                "SELECT s.slaveid, {}, s.current_masterid, b.at_ms, b.masterid, p.connected_masterid, p.last_seen_ms \
                 FROM slaves s LEFT JOIN slave_boots b ON b.slaveid = s.slaveid \
                 LEFT JOIN slave_presence p ON p.slaveid = s.slaveid WHERE (",
                key.join(", ")
            ),
        );
        push_silos(&mut sql, chunk, "s.");
        sql.push(")");
        for r in tx.fetch(&sql, &[Out::Int; 13]).await? {
            let current = narrow(&r[8])?;
            let booted_to = narrow(&r[10])?;
            live.peers.push(PeerFacts {
                slaveid: id(&r[0])?,
                poolid: id(&r[1])?,
                silo: Silo {
                    distroid: id(&r[2])?,
                    bitsid: id(&r[3])?,
                    purposeid: id(&r[4])?,
                    dcid: id(&r[5])?,
                    trustid: id(&r[6])?,
                    envid: id(&r[7])?,
                },
                current_masterid: current,
                allocated_at: at(&r[9]).filter(|_| booted_to == current),
                connected: narrow(&r[11])?.zip(at(&r[12])),
            });
        }
    }
    Ok(live)
}

const PRESENCE_COLUMNS: [&str; 7] = [
    "slaveid",
    "connected_masterid",
    "connected_since_ms",
    "last_seen_masterid",
    "last_seen_ms",
    "paused",
    "graceful",
];

fn presence(r: &[slavealloc_domain::Value]) -> Result<Presence, StoreError> {
    Ok(Presence {
        slaveid: id(&r[0])?,
        connected_masterid: narrow(&r[1])?,
        connected_since: at(&r[2]),
        last_seen_masterid: narrow(&r[3])?,
        last_seen: at(&r[4]),
        paused: flag(&r[5]),
        graceful: flag(&r[6]),
    })
}

const PRESENCE_OUT: [Out; 7] = [Out::Int, Out::Int, Out::Int, Out::Int, Out::Int, Out::Bool, Out::Bool];

const STATUS_COLUMNS: [&str; 9] = [
    "masterid",
    "reachable",
    "last_poll_ms",
    "last_success_ms",
    "unreachable_since_ms",
    "error",
    "buildbot_version",
    "connected",
    "poll_ms",
];

const STATUS_OUT: [Out; 9] = [
    Out::Int,
    Out::Bool,
    Out::Int,
    Out::Int,
    Out::Int,
    Out::Text,
    Out::Text,
    Out::Int,
    Out::Int,
];

fn status(r: &[slavealloc_domain::Value]) -> Result<MasterStatus, StoreError> {
    Ok(MasterStatus {
        masterid: id(&r[0])?,
        reachable: flag(&r[1]),
        last_poll: at(&r[2]),
        last_success: at(&r[3]),
        unreachable_since: at(&r[4]),
        error: text(&r[5]),
        buildbot_version: text(&r[6]),
        connected: u32::try_from(r[7].as_int().unwrap_or(0)).unwrap_or(0),
        poll_millis: u64::try_from(r[8].as_int().unwrap_or(0)).unwrap_or(0),
    })
}

/// A message or version as the tables keep it: bounded, whatever a master
/// sent.
fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Records one poll in one transaction.
pub(crate) async fn record_poll(db: &dyn Db, poll: &PollRecord) -> Result<(), StoreError> {
    let d = db.dialect();
    let mut tx = db.begin(Mode::Write).await?;
    let mut sql = Sql::new(
        d,
        &format!(
            "SELECT {} FROM master_status WHERE masterid = ",
            STATUS_COLUMNS.join(", ")
        ),
    );
    sql.param(int(poll.masterid)).push(d.row_lock);
    let before = match tx.fetch(&sql, &STATUS_OUT).await?.first() {
        Some(r) => Some(status(r)?),
        None => None,
    };
    let connected = match &poll.outcome {
        Ok(answer) => {
            let names: Vec<String> = answer.workers.iter().map(|w| w.name.to_ascii_lowercase()).collect();
            let ids = slave_ids(&mut *tx, d, &names).await?;
            let mut reported = Vec::new();
            let mut unknown = Vec::new();
            for (w, name) in answer.workers.iter().zip(&names) {
                match ids.get(name) {
                    Some(id) => reported.push((*id, w)),
                    None => unknown.push(w),
                }
            }
            let listed: Vec<SlaveId> = reported.iter().map(|(id, _)| *id).collect();
            let before = presence_of(&mut *tx, d, poll.masterid, &listed).await?;
            let rows = presence_after_poll(poll.masterid, poll.at, &before, &reported)
                .into_iter()
                .map(|p| {
                    vec![
                        int(p.slaveid),
                        opt_int(p.connected_masterid),
                        big(p.connected_since),
                        opt_int(p.last_seen_masterid),
                        big(p.last_seen),
                        Param::Bool(Some(p.paused)),
                        Param::Bool(Some(p.graceful)),
                    ]
                })
                .collect();
            upsert(&mut *tx, d, "slave_presence", &["slaveid"], &PRESENCE_COLUMNS, rows).await?;
            let mut sql = Sql::new(d, "DELETE FROM unknown_workers WHERE masterid = ");
            sql.param(int(poll.masterid));
            tx.execute(&sql).await?;
            let mut seen = std::collections::HashSet::new();
            let rows = unknown
                .into_iter()
                .filter(|w| seen.insert(bounded(&w.name, 255)))
                .map(|w| {
                    vec![
                        int(poll.masterid),
                        Param::Text(Some(bounded(&w.name, 255))),
                        Param::Bool(Some(w.connected)),
                        Param::BigInt(Some(ms(poll.at))),
                    ]
                })
                .collect();
            upsert(
                &mut *tx,
                d,
                "unknown_workers",
                &["masterid", "name"],
                &["masterid", "name", "connected", "last_seen_ms"],
                rows,
            )
            .await?;
            u32::try_from(answer.workers.iter().filter(|w| w.connected).count()).unwrap_or(u32::MAX)
        }
        Err(_) => 0,
    };
    let s = status_after_poll(before.as_ref(), poll, connected);
    let row = vec![
        int(s.masterid),
        Param::Bool(Some(s.reachable)),
        big(s.last_poll),
        big(s.last_success),
        big(s.unreachable_since),
        Param::Text(s.error.as_deref().map(|e| bounded(e, 1000))),
        Param::Text(s.buildbot_version.as_deref().map(|v| bounded(v, 120))),
        Param::Int(Some(i32::try_from(s.connected).unwrap_or(i32::MAX))),
        Param::BigInt(Some(i64::try_from(s.poll_millis).unwrap_or(i64::MAX))),
    ];
    upsert(&mut *tx, d, "master_status", &["masterid"], &STATUS_COLUMNS, vec![row]).await?;
    tx.commit().await
}

/// The slave ids of these (lower-case) names.
async fn slave_ids(tx: &mut dyn Tx, d: &Dialect, names: &[String]) -> Result<HashMap<String, SlaveId>, StoreError> {
    let mut ids = HashMap::new();
    for chunk in names.chunks(MAX_PARAMS) {
        let mut sql = Sql::new(d, "SELECT slaveid, name FROM slaves WHERE name IN (");
        sql.params(chunk.iter().map(|n| Param::Text(Some(n.clone())))).push(")");
        for r in tx.fetch(&sql, &[Out::Int, Out::Text]).await? {
            if let Some(name) = text(&r[1]) {
                ids.insert(name, id(&r[0])?);
            }
        }
    }
    Ok(ids)
}

/// The presence rows connected to `masterid` and those of `listed`.
async fn presence_of(
    tx: &mut dyn Tx,
    d: &Dialect,
    masterid: MasterId,
    listed: &[SlaveId],
) -> Result<HashMap<SlaveId, Presence>, StoreError> {
    let columns = PRESENCE_COLUMNS.join(", ");
    let mut rows = HashMap::new();
    let mut sql = Sql::new(
        d,
        &format!("SELECT {columns} FROM slave_presence WHERE connected_masterid = "),
    );
    sql.param(int(masterid)).push(d.row_lock);
    let mut statements = vec![sql];
    for chunk in listed.chunks(MAX_PARAMS) {
        let mut sql = Sql::new(d, &format!("SELECT {columns} FROM slave_presence WHERE slaveid IN ("));
        sql.params(chunk.iter().map(|s| int(*s))).push(")").push(d.row_lock);
        statements.push(sql);
    }
    for sql in statements {
        for r in tx.fetch(&sql, &PRESENCE_OUT).await? {
            let p = presence(&r)?;
            rows.insert(p.slaveid, p);
        }
    }
    Ok(rows)
}

/// Everything the live tables hold of slaves and masters that exist.
pub(crate) async fn state(db: &dyn Db) -> Result<LiveState, StoreError> {
    let d = db.dialect();
    let mut tx = db.begin(Mode::Consistent).await?;
    let mut live = LiveState::default();
    let sql = Sql::new(
        d,
        "SELECT b.slaveid, b.at_ms, b.from_addr, b.masterid FROM slave_boots b \
         JOIN slaves s ON s.slaveid = b.slaveid ORDER BY b.slaveid",
    );
    for r in tx.fetch(&sql, &[Out::Int, Out::Int, Out::Text, Out::Int]).await? {
        live.boots.push(BootRecord {
            slaveid: id(&r[0])?,
            at: at(&r[1]).unwrap_or(SystemTime::UNIX_EPOCH),
            from: text(&r[2]),
            masterid: narrow(&r[3])?,
        });
    }
    let columns: Vec<String> = PRESENCE_COLUMNS.iter().map(|c| format!("p.{c}")).collect();
    let sql = Sql::new(
        d,
        &format!(
            "SELECT {} FROM slave_presence p JOIN slaves s ON s.slaveid = p.slaveid ORDER BY p.slaveid",
            columns.join(", ")
        ),
    );
    for r in tx.fetch(&sql, &PRESENCE_OUT).await? {
        live.presence.push(presence(&r)?);
    }
    let columns: Vec<String> = STATUS_COLUMNS.iter().map(|c| format!("m.{c}")).collect();
    let sql = Sql::new(
        d,
        &format!(
            "SELECT {} FROM master_status m JOIN masters x ON x.masterid = m.masterid ORDER BY m.masterid",
            columns.join(", ")
        ),
    );
    for r in tx.fetch(&sql, &STATUS_OUT).await? {
        live.masters.push(status(&r)?);
    }
    let sql = Sql::new(
        d,
        "SELECT u.masterid, u.name, u.connected, u.last_seen_ms FROM unknown_workers u \
         JOIN masters x ON x.masterid = u.masterid ORDER BY u.masterid, u.name",
    );
    for r in tx.fetch(&sql, &[Out::Int, Out::Text, Out::Bool, Out::Int]).await? {
        live.unknown.push(UnknownWorker {
            masterid: id(&r[0])?,
            name: text(&r[1]).unwrap_or_default(),
            connected: flag(&r[2]),
            last_seen: at(&r[3]).unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    Ok(live)
}

async fn read_lease(tx: &mut dyn Tx, d: &Dialect, name: &str, lock: &str) -> Result<Option<Lease>, StoreError> {
    let mut sql = Sql::new(d, "SELECT holder, expires_ms FROM leases WHERE name = ");
    sql.param(Param::Text(Some(name.to_owned()))).push(lock);
    Ok(tx.fetch(&sql, &[Out::Text, Out::Int]).await?.first().map(|r| Lease {
        name: name.to_owned(),
        holder: text(&r[0]).unwrap_or_default(),
        expires: at(&r[1]).unwrap_or(SystemTime::UNIX_EPOCH),
    }))
}

/// Takes or renews a lease (see `LiveStore::take_lease`).
pub(crate) async fn take_lease(
    db: &dyn Db,
    name: &str,
    holder: &str,
    now: SystemTime,
    ttl: Duration,
) -> Result<Lease, StoreError> {
    let d = db.dialect();
    let mut tx = db.begin(Mode::Write).await?;
    let current = read_lease(&mut *tx, d, name, d.row_lock).await?;
    let ours = Lease {
        name: name.to_owned(),
        holder: holder.to_owned(),
        expires: now + ttl,
    };
    let write = match &current {
        Some(l) if l.holder != holder && l.expires > now => return Ok(l.clone()),
        Some(_) => {
            let mut sql = Sql::new(d, "UPDATE leases SET holder = ");
            sql.param(Param::Text(Some(ours.holder.clone())))
                .push(", expires_ms = ")
                .param(Param::BigInt(Some(ms(ours.expires))))
                .push(" WHERE name = ")
                .param(Param::Text(Some(name.to_owned())));
            sql
        }
        None => {
            let mut sql = Sql::new(d, "INSERT INTO leases (name, holder, expires_ms) VALUES (");
            sql.params([
                Param::Text(Some(name.to_owned())),
                Param::Text(Some(ours.holder.clone())),
                Param::BigInt(Some(ms(ours.expires))),
            ])
            .push(")");
            sql
        }
    };
    match tx.execute(&write).await {
        Ok(_) => {}
        // Another daemon inserted the first row meanwhile: it holds it.
        Err(StoreError::Duplicate(_)) => {
            drop(tx);
            let mut tx = db.begin(Mode::Read).await?;
            return read_lease(&mut *tx, d, name, "")
                .await?
                .ok_or_else(|| StoreError::Retryable("the lease changed while it was taken".to_owned()));
        }
        Err(e) => return Err(e),
    }
    tx.commit().await?;
    Ok(ours)
}

/// Gives a lease up if `holder` holds it.
pub(crate) async fn release_lease(db: &dyn Db, name: &str, holder: &str) -> Result<(), StoreError> {
    let d = db.dialect();
    let mut tx = db.begin(Mode::Write).await?;
    let mut sql = Sql::new(d, "DELETE FROM leases WHERE name = ");
    sql.param(Param::Text(Some(name.to_owned())))
        .push(" AND holder = ")
        .param(Param::Text(Some(holder.to_owned())));
    tx.execute(&sql).await?;
    tx.commit().await
}
