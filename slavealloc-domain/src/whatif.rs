//! What if: where the slaves of some masters would go if those masters
//! were drained, computed in memory from one reading of the tables, with
//! the allocation rule itself ([`Planner`]); nothing is written.
//!
//! The affected slaves are the enabled, unlocked slaves whose current
//! master is drained; they are decided one after another in name order,
//! as if each rebooted, each decision moving the counts the next one sees.
//! Slaves locked to a drained master stay there (a lock wins whatever the
//! master's state) and are listed as such.
//!
//! A master can be added too ([`plan`]): then every enabled, unlocked slave
//! of its pool is affected, as if the whole pool rebooted onto the new
//! layout.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use crate::entities::{Master, MasterId, PoolId, Silo, Slave, SlavePassword, TacTemplate};
use crate::ports::{SiloLoad, Snapshot};
use crate::rule::Planner;
use crate::SlaveName;

/// Where one affected slave would go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    /// The slave.
    pub slave: String,
    /// Its master now.
    pub from: String,
    /// The master it would get; `None` with `error` when it would get none.
    pub to: Option<String>,
    /// Why it would get none (no enabled master left in its pool, ...).
    pub error: Option<String>,
}

/// How one pool × silo's slaves spread over its enabled masters, before
/// and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpreadChange {
    /// The pool.
    pub poolid: PoolId,
    /// The silo.
    pub silo: Silo,
    /// Slaves per enabled master now (nickname, count), by nickname.
    pub before: Vec<(String, u32)>,
    /// The same after the drain, the drained masters left out.
    pub after: Vec<(String, u32)>,
    /// Largest minus smallest count now.
    pub spread_before: u32,
    /// The same after.
    pub spread_after: u32,
}

/// The answer of [`drain`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WhatIf {
    /// The masters drained, by nickname.
    pub drained: Vec<String>,
    /// The hypothetical masters added, by nickname.
    pub added: Vec<String>,
    /// Every affected slave, by name.
    pub moves: Vec<Move>,
    /// Slaves locked to a drained master: they would stay.
    pub staying_locked: Vec<String>,
    /// The pool × silo groups the moves touch.
    pub spreads: Vec<SpreadChange>,
}

/// Why a what-if cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhatIfError {
    /// No master has that nickname.
    #[error("no master is named {0:?}")]
    UnknownMaster(String),
    /// A master to add to a pool that does not exist.
    #[error("no pool is named {0:?}")]
    UnknownPool(String),
    /// A master to add that has a nickname already taken.
    #[error("a master is already named {0:?}")]
    TakenNickname(String),
}

/// A master that does not exist yet, for [`plan`]: its nickname and pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMaster {
    /// Its nickname (not one in use).
    pub nickname: String,
    /// The pool it would serve.
    pub poolid: PoolId,
}

/// What draining the masters named `nicknames` would do, from these rows.
///
/// # Errors
/// [`WhatIfError::UnknownMaster`] for a nickname that names no master.
pub fn drain(
    masters: &[Master],
    slaves: &[Slave],
    passwords: &[SlavePassword],
    templates: &[TacTemplate],
    nicknames: &[String],
) -> Result<WhatIf, WhatIfError> {
    plan(masters, slaves, passwords, templates, nicknames, &[])
}

/// What draining the masters named `nicknames` and adding the masters
/// `added` would do, from these rows.
///
/// # Errors
/// [`WhatIfError::UnknownMaster`] for a nickname that names no master;
/// [`WhatIfError::TakenNickname`] for an added master whose nickname is in
/// use.
pub fn plan(
    masters: &[Master],
    slaves: &[Slave],
    passwords: &[SlavePassword],
    templates: &[TacTemplate],
    nicknames: &[String],
    added: &[NewMaster],
) -> Result<WhatIf, WhatIfError> {
    let mut with_added: Vec<Master> = masters.to_vec();
    let first_new = masters.iter().map(|m| m.masterid).max().unwrap_or(0) + 1;
    for (masterid, a) in (first_new..).zip(added) {
        if with_added.iter().any(|m| m.nickname == a.nickname) {
            return Err(WhatIfError::TakenNickname(a.nickname.clone()));
        }
        with_added.push(Master {
            masterid,
            nickname: a.nickname.clone(),
            fqdn: format!("{}.hypothetical", a.nickname),
            http_port: 0,
            pb_port: 0,
            dcid: 0,
            poolid: a.poolid,
            enabled: true,
            notes: None,
        });
    }
    let existing = masters.iter().map(|m| m.masterid).max().unwrap_or(0);
    let masters = with_added.as_slice();
    let grown: BTreeSet<PoolId> = added.iter().map(|a| a.poolid).collect();
    let mut drained = BTreeSet::new();
    for n in nicknames {
        let m = masters
            .iter()
            .find(|m| &m.nickname == n)
            .ok_or_else(|| WhatIfError::UnknownMaster(n.clone()))?;
        drained.insert(m.masterid);
    }
    let nickname = |id: MasterId| {
        masters
            .iter()
            .find(|m| m.masterid == id)
            .map_or_else(|| id.to_string(), |m| m.nickname.clone())
    };
    let on_drained = |s: &&Slave| s.enabled && s.current_masterid.is_some_and(|m| drained.contains(&m));
    let in_grown_pool = |s: &&Slave| s.enabled && grown.contains(&s.poolid);
    let mut affected: Vec<&Slave> = slaves
        .iter()
        .filter(|s| on_drained(s) || in_grown_pool(s))
        .filter(|s| s.locked_masterid.is_none())
        .collect();
    affected.sort_by(|a, b| a.name.cmp(&b.name));
    let staying_locked = slaves
        .iter()
        .filter(on_drained)
        .filter(|s| s.locked_masterid.is_some_and(|m| drained.contains(&m)))
        .map(|s| s.name.clone())
        .collect();

    let groups: BTreeSet<(PoolId, Silo)> = affected.iter().map(|s| (s.poolid, s.silo())).collect();
    let counts = |of: &dyn Fn(&Slave) -> Option<MasterId>| -> BTreeMap<(PoolId, Silo), BTreeMap<MasterId, u32>> {
        let mut c: BTreeMap<(PoolId, Silo), BTreeMap<MasterId, u32>> = BTreeMap::new();
        for s in slaves.iter().filter(|s| groups.contains(&(s.poolid, s.silo()))) {
            if let Some(m) = of(s) {
                *c.entry((s.poolid, s.silo())).or_default().entry(m).or_default() += 1;
            }
        }
        c
    };
    let before = counts(&|s: &Slave| s.current_masterid);
    let snapshot = Snapshot {
        slaves: affected.iter().map(|s| Some(Arc::new((*s).clone()))).collect(),
        masters: masters
            .iter()
            .map(|m| {
                Arc::new(Master {
                    enabled: m.enabled && !drained.contains(&m.masterid),
                    ..m.clone()
                })
            })
            .collect(),
        passwords: passwords.iter().cloned().map(Arc::new).collect(),
        templates: templates.iter().cloned().map(Arc::new).collect(),
        loads: before
            .iter()
            .map(|((poolid, silo), per)| SiloLoad {
                poolid: *poolid,
                silo: *silo,
                per_master: per.iter().map(|(m, n)| (*m, *n)).collect(),
            })
            .collect(),
        live: None,
    };
    let mut planner = Planner::new(&snapshot);
    let mut moved: BTreeMap<String, Option<MasterId>> = BTreeMap::new();
    let mut moves = Vec::with_capacity(affected.len());
    for (i, s) in affected.iter().enumerate() {
        let from = s.current_masterid.map(nickname).unwrap_or_default();
        let decided = SlaveName::parse(&s.name)
            .map_err(|e| e.to_string())
            .and_then(|name| planner.decide(i, &name).map_err(|e| e.to_string()));
        match decided {
            Ok(d) => {
                planner.accept(&d);
                let to = d.master.as_ref().map(|m| m.masterid);
                moved.insert(s.name.clone(), to);
                moves.push(Move {
                    slave: s.name.clone(),
                    from,
                    to: to.map(nickname),
                    error: None,
                });
            }
            Err(error) => {
                moved.insert(s.name.clone(), None);
                moves.push(Move {
                    slave: s.name.clone(),
                    from,
                    to: None,
                    error: Some(error),
                });
            }
        }
    }
    let after = counts(&|s: &Slave| moved.get(&s.name).copied().unwrap_or(s.current_masterid));
    // Moves that are no moves (a slave of a grown pool staying put) are
    // left out.
    moves.retain(|m| m.error.is_some() || m.to.as_deref() != Some(m.from.as_str()));
    // Before: the masters as they are; after: the drained left out, the
    // added in.
    let enabled_of = |pool: PoolId, after: bool| -> Vec<&Master> {
        masters
            .iter()
            .filter(|m| m.poolid == pool && m.enabled)
            .filter(|m| {
                if after {
                    !drained.contains(&m.masterid)
                } else {
                    m.masterid <= existing
                }
            })
            .collect()
    };
    let spreads = groups
        .iter()
        .map(|&(poolid, silo)| {
            let per = |table: &BTreeMap<(PoolId, Silo), BTreeMap<MasterId, u32>>, exclude: bool| {
                let mut v: Vec<(String, u32)> = enabled_of(poolid, exclude)
                    .iter()
                    .map(|m| {
                        let n = table.get(&(poolid, silo)).and_then(|c| c.get(&m.masterid)).copied();
                        (m.nickname.clone(), n.unwrap_or(0))
                    })
                    .collect();
                v.sort();
                v
            };
            let spread = |v: &[(String, u32)]| {
                let n = || v.iter().map(|(_, n)| *n);
                n().max().zip(n().min()).map_or(0, |(a, b)| a - b)
            };
            let (b, a) = (per(&before, false), per(&after, true));
            SpreadChange {
                poolid,
                silo,
                spread_before: spread(&b),
                spread_after: spread(&a),
                before: b,
                after: a,
            }
        })
        .collect();
    Ok(WhatIf {
        drained: nicknames.to_vec(),
        added: added.iter().map(|a| a.nickname.clone()).collect(),
        moves,
        staying_locked,
        spreads,
    })
}
