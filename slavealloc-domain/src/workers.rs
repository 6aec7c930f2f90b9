//! The workers a Buildbot master must accept, each with the password it
//! logs in with: what a master's `c['workers']` is made of, derived from
//! the same rule that writes the tacs, so that the two cannot disagree.
//!
//! A master accepts:
//! - every *enabled* slave of its pool, whatever that slave's current
//!   master: any of them may be balanced onto it at its next boot;
//! - every enabled slave *locked* to it, from whatever pool: a lock wins
//!   over the pool ([`crate::rule`]).
//!
//! Disabled slaves are left out: their tac refuses to start, so they never
//! log in. Each worker's password is the one its tac carries,
//! [`rule::choose_password`]: its own pool's row for its distro, else its
//! pool's wildcard row (for a slave locked in from another pool, that
//! other pool's password). A slave with no password row gets no tac
//! either; it is listed apart ([`WorkerList::missing_password`]) for an
//! operator to fix, never given a made-up password.

use std::sync::Arc;

use serde::Serialize;

use crate::entities::{Master, MasterId, Slave, SlaveId, SlavePassword};
use crate::error::StoreError;
use crate::inventory::Inventory;
use crate::rule;
use crate::schema::{from_row, Row, Table, Value};

/// The workers one master accepts (see the [module](self) docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerList {
    /// The master's nickname.
    pub master: String,
    /// The master's id.
    pub masterid: MasterId,
    /// The name of the master's pool.
    pub pool: String,
    /// The workers, by name.
    pub workers: Vec<Worker>,
    /// Slaves that would be workers of this master but have no password
    /// row, by name: they cannot boot until one is added.
    pub missing_password: Vec<String>,
}

/// One worker of a [`WorkerList`].
///
/// Its `Debug` leaves the password out, so that a log line never shows it.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Worker {
    /// The slave's name: the worker name its tac logs in with.
    pub name: String,
    /// The password its tac logs in with.
    pub password: String,
    /// The slave's id.
    pub slaveid: SlaveId,
    /// Whether it is locked to this master (rather than only in its pool).
    pub locked: bool,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field("slaveid", &self.slaveid)
            .field("locked", &self.locked)
            .finish_non_exhaustive()
    }
}

/// How a request names a master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterKey<'a> {
    /// By `masterid`.
    Id(MasterId),
    /// By `nickname`.
    Nickname(&'a str),
}

impl<'a> MasterKey<'a> {
    /// A path segment as the `/api/masters` routes read it: purely
    /// numeric is a masterid, anything else a nickname. Digits too large
    /// for an id are an id no master has (`None`).
    pub fn parse(segment: &'a str) -> Option<Self> {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            segment.parse().ok().map(MasterKey::Id)
        } else {
            Some(MasterKey::Nickname(segment))
        }
    }
}

/// The worker list of `master`, whose pool is called `pool`, from every
/// slave and every password row (any order; the list is sorted by name).
pub fn worker_list(master: &Master, pool: &str, slaves: &[Slave], passwords: &[Arc<SlavePassword>]) -> WorkerList {
    let mut workers = Vec::new();
    let mut missing_password = Vec::new();
    for slave in slaves {
        let locked = slave.locked_masterid == Some(master.masterid);
        if !slave.enabled || !(locked || slave.poolid == master.poolid) {
            continue;
        }
        match rule::choose_password(slave, passwords) {
            Some(p) => workers.push(Worker {
                name: slave.name.clone(),
                password: p.password.clone(),
                slaveid: slave.slaveid,
                locked,
            }),
            None => missing_password.push(slave.name.clone()),
        }
    }
    workers.sort_by(|a, b| a.name.cmp(&b.name));
    missing_password.sort();
    WorkerList {
        master: master.nickname.clone(),
        masterid: master.masterid,
        pool: pool.to_owned(),
        workers,
        missing_password,
    }
}

impl Inventory {
    /// The worker list of the master `key` names ([`worker_list`]), read
    /// through the inventory port: the master, its pool, every slave and
    /// every password row. `Ok(None)` when no master is so named.
    ///
    /// The four reads are not one transaction: a slave changed meanwhile
    /// may show as it was before or after the change, as it would in two
    /// listings made one after the other.
    ///
    /// # Errors
    /// The store's; [`StoreError::Other`] for a row that does not make an
    /// entity, or a master whose pool does not exist (a broken database).
    pub async fn worker_list(&self, key: MasterKey<'_>) -> Result<Option<WorkerList>, StoreError> {
        let store = self.store();
        let row = match key {
            MasterKey::Id(id) => store.get(Table::Masters, id).await?,
            MasterKey::Nickname(nickname) => store.find_by_name(Table::Masters, nickname).await?,
        };
        let Some(row) = row else { return Ok(None) };
        let master: Master = entity(Table::Masters, &row)?;
        let pool = store
            .get(Table::Pools, master.poolid)
            .await?
            .and_then(|r| r.get("name").and_then(Value::as_text).map(str::to_owned))
            .ok_or_else(|| {
                StoreError::Other(format!(
                    "master {:?} is in pool {}, which does not exist",
                    master.nickname, master.poolid
                ))
            })?;
        let slaves = store
            .list(Table::Slaves)
            .await?
            .iter()
            .map(|r| entity(Table::Slaves, r))
            .collect::<Result<Vec<Slave>, _>>()?;
        let passwords = store
            .list(Table::SlavePasswords)
            .await?
            .iter()
            .map(|r| entity(Table::SlavePasswords, r).map(Arc::new))
            .collect::<Result<Vec<Arc<SlavePassword>>, _>>()?;
        Ok(Some(worker_list(&master, &pool, &slaves, &passwords)))
    }
}

/// A stored row as its entity; a row that is not one is a store bug.
fn entity<T: serde::de::DeserializeOwned>(table: Table, row: &Row) -> Result<T, StoreError> {
    from_row(row).map_err(|e| StoreError::Other(format!("a {table} row is not readable: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(id: MasterId, pool: i32) -> Master {
        Master {
            masterid: id,
            nickname: format!("bm{id:02}"),
            fqdn: format!("bm{id:02}.example"),
            http_port: 0,
            pb_port: 9000 + id,
            dcid: 1,
            poolid: pool,
            enabled: true,
            notes: None,
        }
    }

    fn slave(id: SlaveId, name: &str, pool: i32, distro: i32) -> Slave {
        Slave {
            slaveid: id,
            name: name.to_owned(),
            distroid: distro,
            bitsid: 1,
            speedid: 1,
            purposeid: 1,
            dcid: 1,
            trustid: 1,
            envid: 1,
            poolid: pool,
            basedir: "/b".into(),
            locked_masterid: None,
            custom_tplid: None,
            enabled: true,
            notes: None,
            current_masterid: None,
        }
    }

    fn pw(pool: i32, distro: Option<i32>, p: &str) -> Arc<SlavePassword> {
        Arc::new(SlavePassword {
            poolid: pool,
            distroid: distro,
            password: p.into(),
        })
    }

    #[test]
    fn pool_members_and_locked_slaves_with_the_password_their_tac_carries() {
        let m = master(1, 1);
        let mut elsewhere = slave(5, "c-other-pool-locked", 2, 1);
        elsewhere.locked_masterid = Some(1);
        let mut disabled = slave(6, "d-disabled", 1, 1);
        disabled.enabled = false;
        let mut disabled_locked = slave(7, "e-disabled-locked", 2, 1);
        disabled_locked.enabled = false;
        disabled_locked.locked_masterid = Some(1);
        let mut on_another_master = slave(8, "f-current-elsewhere", 1, 1);
        on_another_master.current_masterid = Some(2);
        let slaves = [
            slave(2, "b-wildcard", 1, 1),
            slave(1, "a-distro", 1, 2),
            elsewhere,
            disabled,
            disabled_locked,
            on_another_master,
            slave(9, "g-other-pool", 2, 1),
            slave(10, "h-no-password", 3, 1),
        ];
        let mut no_password_locked = slave(11, "i-no-password-locked", 3, 1);
        no_password_locked.locked_masterid = Some(1);
        let slaves: Vec<Slave> = slaves.into_iter().chain([no_password_locked]).collect();
        let passwords = [pw(1, None, "any"), pw(1, Some(2), "distro2"), pw(2, None, "pool2")];
        let list = worker_list(&m, "build", &slaves, &passwords);
        let got: Vec<(&str, &str, bool)> = list
            .workers
            .iter()
            .map(|w| (w.name.as_str(), w.password.as_str(), w.locked))
            .collect();
        assert_eq!(
            got,
            [
                ("a-distro", "distro2", false),
                ("b-wildcard", "any", false),
                ("c-other-pool-locked", "pool2", true),
                ("f-current-elsewhere", "any", false),
            ]
        );
        assert_eq!(list.missing_password, ["i-no-password-locked"]);
        assert_eq!(
            (list.master.as_str(), list.masterid, list.pool.as_str()),
            ("bm01", 1, "build")
        );
    }

    #[test]
    fn a_workers_debug_never_shows_its_password() {
        let w = Worker {
            name: "s".into(),
            password: "hunter2-secret".into(),
            slaveid: 1,
            locked: false,
        };
        assert!(!format!("{w:?}").contains("hunter2"));
    }

    #[test]
    fn numeric_segments_are_ids() {
        assert_eq!(MasterKey::parse("12"), Some(MasterKey::Id(12)));
        assert_eq!(MasterKey::parse("bm12"), Some(MasterKey::Nickname("bm12")));
        assert_eq!(MasterKey::parse("-1"), Some(MasterKey::Nickname("-1")));
        assert_eq!(MasterKey::parse("99999999999"), None);
        assert_eq!(MasterKey::parse(""), Some(MasterKey::Nickname("")));
    }
}
