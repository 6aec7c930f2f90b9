//! The allocation rule, as pure functions over a [`Snapshot`].
//!
//! For one slave (docs/compatibility.md §2):
//! 1. disabled → a disabled tac, and `current_masterid` becomes NULL;
//! 2. the password is the pool's row for the slave's distro, else the pool's
//!    wildcard (NULL distro) row; none at all is an error;
//! 3. a locked master wins, whatever its state;
//! 4. otherwise the enabled master of the slave's pool with the fewest
//!    *peers* — other slaves of the same pool and silo whose current master
//!    it is — ties to the lowest masterid; no candidate → no allocation.
//!
//! [`Planner`] applies the rule to a batch as if the requests were served one
//! after another: each accepted decision moves its slave in the counts the
//! next decision sees. That is what lets a server decide many requests from
//! one snapshot and commit them in one transaction, with the same result as
//! one transaction per request.
//!
//! Rows are shared, not copied: a [`Snapshot`] holds its rows behind
//! [`Arc`]s and a [`Decision`] holds the same `Arc`s, so deciding allocates
//! nothing (the in-memory store hands out the rows it keeps, and the
//! sub-microsecond decision in benches/README.md depends on it).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::entities::{Master, MasterId, PoolId, Silo, Slave, SlaveId, SlavePassword, TacTemplate};
use crate::error::AllocationError;
use crate::live::{live_loads, BalanceCount};
use crate::name::SlaveName;
use crate::ports::{MasterChange, SiloLoad, Snapshot};

/// Why a slave got the answer it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// The least loaded enabled master of its pool.
    Balanced,
    /// Its `locked_masterid`.
    Locked,
    /// The slave is disabled: no master.
    Disabled,
}

impl Reason {
    /// `balanced`, `locked` or `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Balanced => "balanced",
            Reason::Locked => "locked",
            Reason::Disabled => "disabled",
        }
    }
}

/// Why one master of the pool was or was not chosen ([`Planner::explain`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MasterVerdict {
    /// The master.
    pub masterid: MasterId,
    /// Its nickname.
    pub nickname: String,
    /// Whether it takes new slaves.
    pub enabled: bool,
    /// The slave's peers counted on it (its pool and silo, itself left out).
    pub peers: u32,
    /// Whether it is the slave's master.
    pub chosen: bool,
    /// Why, in words.
    pub why: String,
}

/// Why a slave gets the master it gets: what `GET
/// /api/gettac/<slave>?explain=1` and `slavealloc why` show.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Explanation {
    /// The slave's name.
    pub slave: String,
    /// Its pool.
    pub poolid: PoolId,
    /// Its silo.
    pub silo: Silo,
    /// Balanced, locked or disabled.
    pub reason: Reason,
    /// The chosen master's nickname.
    pub master: Option<String>,
    /// How peers were counted: `recorded` or `live`.
    pub count: &'static str,
    /// Every master of its pool (and the one it is locked to), by masterid.
    pub masters: Vec<MasterVerdict>,
}

/// The outcome of the rule for one slave.
///
/// Its rows are the [`Snapshot`]'s, shared: cloning a decision or taking
/// one from a snapshot copies no row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The slave as it was before this decision.
    pub slave: Arc<Slave>,
    /// The master it gets; `None` exactly when [`Reason::Disabled`].
    pub master: Option<Arc<Master>>,
    /// Why.
    pub reason: Reason,
    /// The password row whose `password` goes into the tac; `None` when
    /// disabled.
    pub password: Option<Arc<SlavePassword>>,
    /// The slave's custom template, if it has one.
    pub template: Option<Arc<TacTemplate>>,
}

impl Decision {
    /// The write this decision needs, if it changes `current_masterid`.
    pub fn change(&self) -> Option<MasterChange> {
        let to = self.master.as_ref().map(|m| m.masterid);
        (to != self.slave.current_masterid).then_some(MasterChange {
            slaveid: self.slave.slaveid,
            from: self.slave.current_masterid,
            to,
        })
    }
}

/// The password row for `slave`: its pool's row for its distro, else its
/// pool's wildcard row.
pub fn choose_password<'p>(slave: &Slave, passwords: &'p [Arc<SlavePassword>]) -> Option<&'p Arc<SlavePassword>> {
    let of_pool = || passwords.iter().filter(|p| p.poolid == slave.poolid);
    of_pool()
        .find(|p| p.distroid == Some(slave.distroid))
        .or_else(|| of_pool().find(|p| p.distroid.is_none()))
}

/// The least loaded candidate, ties to the lowest masterid; `None` when
/// there is no candidate.
pub fn choose_master<'m>(
    candidates: impl IntoIterator<Item = &'m Arc<Master>>,
    load: impl Fn(MasterId) -> u32,
) -> Option<&'m Arc<Master>> {
    candidates.into_iter().min_by_key(|m| (load(m.masterid), m.masterid))
}

/// Applies the rule to the slaves of one [`Snapshot`], in order.
///
/// Lookups scan the snapshot's vectors rather than building maps: a
/// snapshot holds a handful of masters, templates and silos, and building
/// hash maps for them cost more than every scan of a decision together.
/// The loads are borrowed from the snapshot until the first
/// [`Planner::accept`] that moves a slave, so a planner that only decides
/// copies nothing.
#[derive(Debug)]
pub struct Planner<'s> {
    snapshot: &'s Snapshot,
    /// The snapshot's loads, moved by each accepted decision.
    loads: Cow<'s, [SiloLoad]>,
    /// In [`BalanceCount::Live`]: the master each peer counts on, moved
    /// with the loads; `None` when peers count on their `current_masterid`.
    counted: Option<HashMap<SlaveId, MasterId>>,
}

impl<'s> Planner<'s> {
    /// A planner over a snapshot; it copies nothing.
    pub fn new(snapshot: &'s Snapshot) -> Self {
        Self {
            snapshot,
            loads: Cow::Borrowed(&snapshot.loads),
            counted: None,
        }
    }

    /// A planner that counts peers as `count` says, at `now`. With
    /// [`BalanceCount::Live`] the loads come from the snapshot's
    /// [`Snapshot::live`] facts ([`live_loads`]); a snapshot without them
    /// counts as [`Planner::new`] does.
    pub fn counting(snapshot: &'s Snapshot, count: BalanceCount, now: SystemTime) -> Self {
        match (count, &snapshot.live) {
            (BalanceCount::Live { lease }, Some(live)) => {
                let (loads, counted) = live_loads(live, now, lease);
                Self {
                    snapshot,
                    loads: Cow::Owned(loads),
                    counted: Some(counted),
                }
            }
            _ => Self::new(snapshot),
        }
    }

    /// The master `slave` counts on now, for its own count and for moving it.
    fn counts_on(&self, slave: &Slave) -> Option<MasterId> {
        match &self.counted {
            Some(counted) => counted.get(&slave.slaveid).copied(),
            None => slave.current_masterid,
        }
    }

    fn master(&self, id: MasterId) -> Option<&'s Arc<Master>> {
        self.snapshot.masters.iter().find(|m| m.masterid == id)
    }

    fn silo_load(&self, pool: PoolId, silo: Silo) -> Option<&SiloLoad> {
        self.loads.iter().find(|l| l.poolid == pool && l.silo == silo)
    }

    /// The decision for the `index`-th slave of the snapshot, named `name`,
    /// given every decision [`Planner::accept`]ed so far.
    ///
    /// # Errors
    /// [`AllocationError::UnknownSlave`], [`AllocationError::NoPassword`],
    /// [`AllocationError::MissingLockedMaster`], [`AllocationError::NoMaster`],
    /// [`AllocationError::MissingTemplate`].
    pub fn decide(&self, index: usize, name: &SlaveName) -> Result<Decision, AllocationError> {
        let slave = self
            .snapshot
            .slaves
            .get(index)
            .and_then(Option::as_ref)
            .ok_or_else(|| AllocationError::UnknownSlave(name.clone()))?;
        if !slave.enabled {
            return Ok(Decision {
                slave: Arc::clone(slave),
                master: None,
                reason: Reason::Disabled,
                password: None,
                template: None,
            });
        }
        let password = choose_password(slave, &self.snapshot.passwords).ok_or_else(|| AllocationError::NoPassword {
            slave: name.clone(),
            poolid: slave.poolid,
            distroid: slave.distroid,
        })?;
        let (master, reason) = match slave.locked_masterid {
            Some(id) => {
                let locked = self.master(id).ok_or_else(|| AllocationError::MissingLockedMaster {
                    slave: name.clone(),
                    masterid: id,
                })?;
                (locked, Reason::Locked)
            }
            None => (self.balanced(slave, name)?, Reason::Balanced),
        };
        let template = match slave.custom_tplid {
            Some(id) => Some(self.snapshot.templates.iter().find(|t| t.tplid == id).ok_or_else(|| {
                AllocationError::MissingTemplate {
                    slave: name.clone(),
                    tplid: id,
                }
            })?),
            None => None,
        };
        Ok(Decision {
            slave: Arc::clone(slave),
            master: Some(Arc::clone(master)),
            reason,
            password: Some(Arc::clone(password)),
            template: template.cloned(),
        })
    }

    /// How many peers of `slave` count on master `m`: the others of its
    /// pool and silo (the requester is not its own peer).
    fn peers(&self, slave: &Slave, m: MasterId) -> u32 {
        let all = self
            .silo_load(slave.poolid, slave.silo())
            .and_then(|l| l.per_master.iter().find(|(id, _)| *id == m))
            .map_or(0, |(_, n)| *n);
        all.saturating_sub(u32::from(self.counts_on(slave) == Some(m)))
    }

    /// Why `decision` (this planner's, for the same slave) chose what it
    /// chose: every master of the slave's pool, and the one it is locked to,
    /// with its state, its peer count and why it was or was not chosen.
    pub fn explain(&self, decision: &Decision) -> Explanation {
        let slave = &decision.slave;
        let chosen = decision.master.as_ref().map(|m| m.masterid);
        let best = self
            .snapshot
            .masters
            .iter()
            .filter(|m| m.enabled && m.poolid == slave.poolid)
            .map(|m| self.peers(slave, m.masterid))
            .min();
        let mut masters: Vec<MasterVerdict> = self
            .snapshot
            .masters
            .iter()
            .filter(|m| m.poolid == slave.poolid || slave.locked_masterid == Some(m.masterid))
            .map(|m| {
                let peers = self.peers(slave, m.masterid);
                let why = match (decision.reason, chosen == Some(m.masterid)) {
                    (Reason::Disabled, _) => "the slave is disabled: no master".to_owned(),
                    (Reason::Locked, true) => "the slave is locked to it".to_owned(),
                    (Reason::Locked, false) => "not considered: the slave is locked to another master".to_owned(),
                    (Reason::Balanced, true) => format!("chosen: the fewest peers ({peers})"),
                    (Reason::Balanced, false) if !m.enabled => "disabled: not a candidate".to_owned(),
                    (Reason::Balanced, false) if m.poolid != slave.poolid => "of another pool".to_owned(),
                    (Reason::Balanced, false) if Some(peers) == best => {
                        "as few peers, but a higher masterid".to_owned()
                    }
                    (Reason::Balanced, false) => format!("more peers ({peers} > {})", best.unwrap_or(0)),
                };
                MasterVerdict {
                    masterid: m.masterid,
                    nickname: m.nickname.clone(),
                    enabled: m.enabled,
                    peers,
                    chosen: chosen == Some(m.masterid),
                    why,
                }
            })
            .collect();
        masters.sort_by_key(|m| m.masterid);
        Explanation {
            slave: slave.name.clone(),
            poolid: slave.poolid,
            silo: slave.silo(),
            reason: decision.reason,
            master: decision.master.as_ref().map(|m| m.nickname.clone()),
            count: if self.counted.is_some() { "live" } else { "recorded" },
            masters,
        }
    }

    fn balanced(&self, slave: &Slave, name: &SlaveName) -> Result<&'s Arc<Master>, AllocationError> {
        let peers = |m: MasterId| self.peers(slave, m);
        let candidates = self
            .snapshot
            .masters
            .iter()
            .filter(|m| m.enabled && m.poolid == slave.poolid);
        choose_master(candidates, peers).ok_or_else(|| AllocationError::NoMaster {
            slave: name.clone(),
            poolid: slave.poolid,
        })
    }

    /// Moves the decided slave in the counts that later decisions see. Call
    /// it for each decision that will be recorded.
    pub fn accept(&mut self, decision: &Decision) {
        let to = decision.master.as_ref().map(|m| m.masterid);
        let from = self.counts_on(&decision.slave);
        if from == to {
            return;
        }
        if let Some(counted) = &mut self.counted {
            // Given a master just now: it counts there for a whole lease.
            match to {
                Some(m) => counted.insert(decision.slave.slaveid, m),
                None => counted.remove(&decision.slave.slaveid),
            };
        }
        let change = MasterChange {
            slaveid: decision.slave.slaveid,
            from,
            to,
        };
        let (poolid, silo) = (decision.slave.poolid, decision.slave.silo());
        let loads = self.loads.to_mut();
        let index = match loads.iter().position(|l| l.poolid == poolid && l.silo == silo) {
            Some(i) => i,
            None => {
                loads.push(SiloLoad {
                    poolid,
                    silo,
                    per_master: Vec::new(),
                });
                loads.len() - 1
            }
        };
        let counts = &mut loads[index].per_master;
        if let Some((_, n)) = change
            .from
            .and_then(|from| counts.iter_mut().find(|(id, _)| *id == from))
        {
            *n = n.saturating_sub(1);
        }
        if let Some(to) = change.to {
            match counts.iter_mut().find(|(id, _)| *id == to) {
                Some((_, n)) => *n += 1,
                None => counts.push((to, 1)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(id: MasterId, pool: PoolId, enabled: bool) -> Arc<Master> {
        Arc::new(Master {
            masterid: id,
            nickname: format!("bm{id:02}"),
            fqdn: format!("bm{id:02}.example"),
            http_port: 8000 + id,
            pb_port: 9000 + id,
            dcid: 1,
            poolid: pool,
            enabled,
            notes: None,
        })
    }

    fn slave(id: i32, pool: PoolId) -> Slave {
        Slave {
            slaveid: id,
            name: format!("s{id}"),
            distroid: 1,
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

    fn pw(pool: PoolId, distro: Option<i32>, p: &str) -> Arc<SlavePassword> {
        Arc::new(SlavePassword {
            poolid: pool,
            distroid: distro,
            password: p.into(),
        })
    }

    fn name(s: &str) -> SlaveName {
        SlaveName::parse(s).unwrap()
    }

    type Outcome = Result<(Option<MasterId>, Reason, Option<String>), AllocationError>;

    /// Decides for one slave of `snap` (index 0).
    fn check(snap: &Snapshot) -> Outcome {
        Planner::new(snap).decide(0, &name("s1")).map(|d| {
            (
                d.master.map(|m| m.masterid),
                d.reason,
                d.password.map(|p| p.password.clone()),
            )
        })
    }

    fn snap(s: Slave, masters: Vec<Arc<Master>>, loads: &[(MasterId, u32)]) -> Snapshot {
        Snapshot {
            loads: vec![SiloLoad {
                poolid: s.poolid,
                silo: s.silo(),
                per_master: loads.to_vec(),
            }],
            slaves: vec![Some(Arc::new(s))],
            masters,
            passwords: vec![pw(1, None, "pw")],
            templates: vec![],
            live: None,
        }
    }

    #[test]
    fn the_rule_table() {
        let ms = || {
            vec![
                master(1, 1, true),
                master(2, 1, true),
                master(3, 1, false),
                master(4, 2, true),
            ]
        };
        let ok = Some("pw".to_owned());
        let cases: Vec<(&str, Snapshot, Outcome)> = vec![
            (
                "ties go to the lowest masterid",
                snap(slave(1, 1), ms(), &[]),
                Ok((Some(1), Reason::Balanced, ok.clone())),
            ),
            (
                "fewest peers wins",
                snap(slave(1, 1), ms(), &[(1, 3), (2, 2)]),
                Ok((Some(2), Reason::Balanced, ok.clone())),
            ),
            (
                "disabled masters are not candidates",
                snap(slave(1, 1), ms(), &[(1, 1), (2, 1)]),
                Ok((Some(1), Reason::Balanced, ok.clone())),
            ),
            (
                "the requester is not its own peer",
                snap(
                    Slave {
                        current_masterid: Some(1),
                        ..slave(1, 1)
                    },
                    ms(),
                    &[(1, 2), (2, 1)],
                ),
                Ok((Some(1), Reason::Balanced, ok.clone())),
            ),
            (
                "a locked master wins even when disabled",
                snap(
                    Slave {
                        locked_masterid: Some(3),
                        ..slave(1, 1)
                    },
                    ms(),
                    &[],
                ),
                Ok((Some(3), Reason::Locked, ok.clone())),
            ),
            (
                "a disabled slave gets no master and needs no password",
                Snapshot {
                    passwords: vec![],
                    ..snap(
                        Slave {
                            enabled: false,
                            current_masterid: Some(2),
                            ..slave(1, 1)
                        },
                        ms(),
                        &[],
                    )
                },
                Ok((None, Reason::Disabled, None)),
            ),
            (
                "no enabled master in the pool",
                snap(slave(1, 1), vec![master(3, 1, false)], &[]),
                Err(AllocationError::NoMaster {
                    slave: name("s1"),
                    poolid: 1,
                }),
            ),
            (
                "no password row",
                Snapshot {
                    passwords: vec![pw(2, None, "other pool")],
                    ..snap(slave(1, 1), ms(), &[])
                },
                Err(AllocationError::NoPassword {
                    slave: name("s1"),
                    poolid: 1,
                    distroid: 1,
                }),
            ),
            (
                "a distro-specific password beats the wildcard, in either order",
                Snapshot {
                    passwords: vec![pw(1, None, "any"), pw(1, Some(1), "mine"), pw(1, Some(2), "theirs")],
                    ..snap(slave(1, 1), ms(), &[])
                },
                Ok((Some(1), Reason::Balanced, Some("mine".into()))),
            ),
            (
                "a dangling lock is an error, not a panic",
                snap(
                    Slave {
                        locked_masterid: Some(99),
                        ..slave(1, 1)
                    },
                    ms(),
                    &[],
                ),
                Err(AllocationError::MissingLockedMaster {
                    slave: name("s1"),
                    masterid: 99,
                }),
            ),
            (
                "a dangling template is an error",
                snap(
                    Slave {
                        custom_tplid: Some(5),
                        ..slave(1, 1)
                    },
                    ms(),
                    &[],
                ),
                Err(AllocationError::MissingTemplate {
                    slave: name("s1"),
                    tplid: 5,
                }),
            ),
            (
                "unknown slave",
                Snapshot {
                    slaves: vec![None],
                    ..Snapshot::default()
                },
                Err(AllocationError::UnknownSlave(name("s1"))),
            ),
        ];
        for (what, snapshot, want) in cases {
            assert_eq!(check(&snapshot), want, "{what}");
        }
    }

    #[test]
    fn a_decision_shares_the_snapshots_rows() {
        let snapshot = Snapshot {
            templates: vec![Arc::new(TacTemplate {
                tplid: 5,
                name: "custom".into(),
                template: "x".into(),
            })],
            ..snap(
                Slave {
                    custom_tplid: Some(5),
                    ..slave(1, 1)
                },
                vec![master(1, 1, true)],
                &[],
            )
        };
        let planner = Planner::new(&snapshot);
        let d = planner.decide(0, &name("s1")).unwrap();
        fn same<T>(a: &Option<Arc<T>>, b: &Arc<T>) -> bool {
            a.as_ref().is_some_and(|a| Arc::ptr_eq(a, b))
        }
        assert!(Arc::ptr_eq(&d.slave, snapshot.slaves[0].as_ref().unwrap()));
        assert!(same(&d.master, &snapshot.masters[0]));
        assert!(same(&d.password, &snapshot.passwords[0]));
        assert!(same(&d.template, &snapshot.templates[0]));
        // Deciding alone copies not even the loads.
        assert!(matches!(planner.loads, Cow::Borrowed(_)));
    }

    #[test]
    fn accepted_decisions_move_the_counts_for_the_next_one() {
        let slaves: Vec<Slave> = (1..=4).map(|i| slave(i, 1)).collect();
        let snapshot = Snapshot {
            loads: vec![SiloLoad {
                poolid: 1,
                silo: slaves[0].silo(),
                per_master: vec![],
            }],
            slaves: slaves.into_iter().map(|s| Some(Arc::new(s))).collect(),
            masters: vec![master(1, 1, true), master(2, 1, true)],
            passwords: vec![pw(1, None, "pw")],
            templates: vec![],
            live: None,
        };
        let mut planner = Planner::new(&snapshot);
        let mut got = vec![];
        for i in 0..4 {
            let d = planner.decide(i, &name(&format!("s{}", i + 1))).unwrap();
            planner.accept(&d);
            got.push(d.master.unwrap().masterid);
        }
        assert_eq!(got, [1, 2, 1, 2]);
    }

    #[test]
    fn live_counts_forget_allocations_that_never_connected() {
        use crate::live::{LivePeers, PeerFacts};
        use std::time::Duration;
        let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let now = at(100_000);
        let lease = Duration::from_secs(900);
        let requester = slave(100, 1);
        let silo = requester.silo();
        // Ten slaves given master 1 an hour ago, never seen; five connected to 2.
        let mut peers: Vec<PeerFacts> = (1..=10)
            .map(|id| PeerFacts {
                slaveid: id,
                poolid: 1,
                silo,
                current_masterid: Some(1),
                allocated_at: Some(at(100_000 - 3_600)),
                connected: None,
            })
            .collect();
        peers.extend((11..=15).map(|id| PeerFacts {
            slaveid: id,
            poolid: 1,
            silo,
            current_masterid: Some(2),
            allocated_at: Some(at(1)),
            connected: Some((2, at(99_990))),
        }));
        let snapshot = Snapshot {
            live: Some(LivePeers {
                peers,
                unreachable_since: vec![],
            }),
            ..snap(
                requester,
                vec![master(1, 1, true), master(2, 1, true)],
                &[(1, 10), (2, 5)],
            )
        };
        let decide = |count| {
            Planner::counting(&snapshot, count, now)
                .decide(0, &name("s100"))
                .unwrap()
                .master
                .unwrap()
                .masterid
        };
        assert_eq!(decide(BalanceCount::Recorded), 2, "the original's rule");
        assert_eq!(
            decide(BalanceCount::Live { lease }),
            1,
            "expired allocations count nowhere"
        );
        // Within the lease the ten still hold their places.
        let fresh = Planner::counting(&snapshot, BalanceCount::Live { lease }, at(100_000 - 3_600 + 60));
        assert_eq!(fresh.decide(0, &name("s100")).unwrap().master.unwrap().masterid, 2);
    }

    #[test]
    fn live_accepts_move_the_live_counts() {
        use crate::live::LivePeers;
        let slaves: Vec<Slave> = (1..=4)
            .map(|i| Slave {
                // Long-expired allocations to master 2 count nowhere.
                current_masterid: Some(2),
                ..slave(i, 1)
            })
            .collect();
        let snapshot = Snapshot {
            loads: vec![],
            live: Some(LivePeers::default()),
            slaves: slaves.into_iter().map(|s| Some(Arc::new(s))).collect(),
            masters: vec![master(1, 1, true), master(2, 1, true)],
            passwords: vec![pw(1, None, "pw")],
            templates: vec![],
        };
        let lease = std::time::Duration::from_secs(900);
        let mut planner = Planner::counting(&snapshot, BalanceCount::Live { lease }, SystemTime::UNIX_EPOCH);
        let got: Vec<MasterId> = (0..4)
            .map(|i| {
                let d = planner.decide(i, &name(&format!("s{}", i + 1))).unwrap();
                planner.accept(&d);
                d.master.unwrap().masterid
            })
            .collect();
        assert_eq!(got, [1, 2, 1, 2], "each accepted decision counts where it was sent");
    }
}
