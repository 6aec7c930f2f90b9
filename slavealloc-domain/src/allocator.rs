//! The allocation service: the rule, storage and rendering put together.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::audit::NewAuditEntry;
use crate::entities::{PoolId, Silo};
use crate::error::{AllocationError, RenderError, StoreError};
use crate::live::{BalanceCount, BootRecord};
use crate::name::SlaveName;
use crate::ports::{
    Actor, AllocationStore, Host, InlineRender, Intent, MasterChange, RenderExecutor, TacBody, TacHeader, TacRenderer,
    TacRequest, TacValues,
};
use crate::rule::{Decision, Explanation, Planner, Reason};
use crate::schema::{Row, Table, Value};

/// How many times a unit of work that hit a deadlock, a serialization
/// failure or a Galera certification conflict is run in all before the
/// error is reported. A boot storm through several Galera nodes makes
/// conflicts routine: each daemon commits one batch at a time, and the
/// batches of three daemons touch the same pools, so a batch may lose to
/// the others many times in a row (a 2,000-slave storm through three nodes
/// sees about a hundred aborts). The store pauses (with jitter, growing
/// with the run) before each retry, and the request's deadline bounds the
/// whole; a retry costs nothing where there is no conflict.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 30;

/// A decision and the tac that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// What was decided and why.
    pub decision: Decision,
    /// The rendered buildbot.tac.
    pub tac: String,
}

/// Decides, records and renders allocations.
///
/// In that order, and rendering outside the unit of work: a batch is
/// decided from one snapshot, recorded and committed, and only then are its
/// tacs rendered, through the [`RenderExecutor`] (inline unless
/// [`Allocator::with_render_executor`] says otherwise). So the allocation
/// locks are held for the decisions only, never while a template runs, and
/// a slow or failing template cannot delay other slaves' allocations, in
/// this process or in another sharing the database.
///
/// **A render failure after the commit keeps the recorded master.** The
/// slave's `current_masterid` (and the audit log) then names the master it
/// was given although it got an error instead of a tac. That is what
/// happens anyway when a slave gets its tac and fails to boot; the next
/// `gettac` decides again (the rule leaves the slave out of its own
/// silo's count, so the answer is the same master while nothing else
/// changes). Undoing it would need a second transaction that races other
/// allocations; recording it keeps the counts honest for the batch's other
/// slaves, which were decided with this one accepted.
///
/// Holds its ports as trait objects, so one `Allocator` type serves every
/// storage backend and can be shared between request handlers (`Arc` it or
/// clone it: clones share the ports).
#[derive(Clone)]
pub struct Allocator {
    store: Arc<dyn AllocationStore>,
    renderer: Arc<dyn TacRenderer>,
    executor: Arc<dyn RenderExecutor>,
    host: Arc<dyn Host>,
    max_attempts: u32,
    count: BalanceCount,
}

impl std::fmt::Debug for Allocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allocator")
            .field("max_attempts", &self.max_attempts)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

type Results = Vec<Result<Allocation, AllocationError>>;

/// Decisions recorded (or peeked) by [`Allocator::decide`] whose tacs are
/// not rendered yet.
#[derive(Debug)]
pub struct Decided {
    header: TacHeader,
    secrets: Secrets,
    decisions: Vec<Result<Decision, AllocationError>>,
    /// For each name given, the index of its distinct name's decision.
    positions: Vec<usize>,
}

impl Allocator {
    /// An allocator over these ports.
    pub fn new(store: Arc<dyn AllocationStore>, renderer: Arc<dyn TacRenderer>, host: Arc<dyn Host>) -> Self {
        Self {
            store,
            renderer,
            executor: Arc::new(InlineRender),
            host,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            count: BalanceCount::Recorded,
        }
    }

    /// Sets how peers are counted (default: [`BalanceCount::Recorded`],
    /// the original's rule).
    pub fn with_balance(mut self, count: BalanceCount) -> Self {
        self.count = count;
        self
    }

    /// Sets where tacs are rendered (default: [`InlineRender`]).
    pub fn with_render_executor(mut self, executor: Arc<dyn RenderExecutor>) -> Self {
        self.executor = executor;
        self
    }

    /// Sets how many times a unit of work is tried when the database reports
    /// a deadlock or serialization failure (at least once).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Allocates a master to `name`, records it, and returns the tac: what
    /// `GET /gettac/<name>` answers.
    ///
    /// # Errors
    /// [`AllocationError::is_no_allocation`] errors for an invalid or
    /// unknown name or no candidate master; the others for broken data,
    /// templates or storage. Nothing is recorded on a storage error; on a
    /// template error the decision was recorded (see [`Allocator`]).
    pub async fn gettac(&self, name: &str) -> Result<Allocation, AllocationError> {
        self.one(name, None, Intent::Commit, "gettac", Secrets::Shown).await
    }

    /// [`Allocator::gettac`] for a machine asking from `from`, which its
    /// boot record keeps.
    ///
    /// # Errors
    /// As for [`Allocator::gettac`].
    pub async fn gettac_from(&self, name: &str, from: Option<IpAddr>) -> Result<Allocation, AllocationError> {
        self.one(name, from, Intent::Commit, "gettac", Secrets::Shown).await
    }

    /// Like [`Allocator::gettac`] but records nothing: what
    /// `GET /api/gettac/<name>` answers.
    ///
    /// # Errors
    /// As for [`Allocator::gettac`].
    pub async fn peek(&self, name: &str) -> Result<Allocation, AllocationError> {
        self.one(name, None, Intent::Peek, "peek", Secrets::Shown).await
    }

    /// Like [`Allocator::peek`] but the tac shows the password as
    /// [`REDACTED_PASSWORD`]: for readers who may see the decision but not
    /// the pool's secret. The decision still carries the password row.
    ///
    /// # Errors
    /// As for [`Allocator::gettac`].
    pub async fn preview(&self, name: &str) -> Result<Allocation, AllocationError> {
        self.one(name, None, Intent::Peek, "peek", Secrets::Redacted).await
    }

    /// [`Allocator::preview`] with the reasons: the same decision (nothing
    /// recorded), and why each master of the slave's pool was or was not
    /// chosen. The tac shows the password only with `secrets`.
    ///
    /// # Errors
    /// As for [`Allocator::gettac`].
    pub async fn explain(&self, name: &str, secrets: bool) -> Result<(Allocation, Explanation), AllocationError> {
        let name = SlaveName::parse(name)?;
        let (header, decisions, explanations) = self.explain_attempt(std::slice::from_ref(&name)).await?;
        let explanation = explanations.into_iter().next().flatten();
        let secrets = if secrets { Secrets::Shown } else { Secrets::Redacted };
        let mut results = self.render_decisions(header, secrets, decisions).await;
        let allocation = results
            .pop()
            .unwrap_or(Err(AllocationError::UnknownSlave(name.clone())))?;
        let explanation = explanation.ok_or(AllocationError::UnknownSlave(name))?;
        Ok((allocation, explanation))
    }

    async fn one(
        &self,
        name: &str,
        from: Option<IpAddr>,
        intent: Intent,
        actor: &str,
        secrets: Secrets,
    ) -> Result<Allocation, AllocationError> {
        let name = SlaveName::parse(name)?;
        let request = [BootRequest {
            name: name.clone(),
            from,
        }];
        let mut decided = self.decide_requests(&request, intent, actor).await?;
        decided.secrets = secrets;
        let mut results = self.render(decided).await;
        results.pop().unwrap_or(Err(AllocationError::UnknownSlave(name)))
    }

    /// Allocates for many slaves in one unit of work, as if their requests
    /// had been served one after another in this order — the group commit a
    /// busy server uses. A name given twice gets the same answer twice.
    ///
    /// `actor` is written to the audit entry of each allocation that changes
    /// a slave's master (the requester's address, say).
    ///
    /// # Errors
    /// A [`StoreError`] when the unit of work as a whole failed (after
    /// retrying deadlocks up to the configured attempts); nothing was
    /// recorded then. Otherwise one result per name; a name whose tac could
    /// not be rendered has its decision recorded all the same (see
    /// [`Allocator`]).
    pub async fn allocate(&self, names: &[SlaveName], intent: Intent, actor: &str) -> Result<Results, StoreError> {
        let decided = self.decide(names, intent, actor).await?;
        Ok(self.render(decided).await)
    }

    /// The first half of [`Allocator::allocate`]: decides, records and
    /// commits (for [`Intent::Commit`]), and returns the decisions to
    /// [`Allocator::render`]. A group commit calls the halves separately,
    /// so that the next batch's transaction need not wait for this batch's
    /// templates.
    ///
    /// # Errors
    /// As for [`Allocator::allocate`].
    pub async fn decide(&self, names: &[SlaveName], intent: Intent, actor: &str) -> Result<Decided, StoreError> {
        let requests: Vec<BootRequest> = names
            .iter()
            .map(|name| BootRequest {
                name: name.clone(),
                from: None,
            })
            .collect();
        self.decide_requests(&requests, intent, actor).await
    }

    /// [`Allocator::decide`] for requests that say where they come from,
    /// which the boot records keep (a name asked twice keeps the last
    /// address).
    ///
    /// # Errors
    /// As for [`Allocator::allocate`].
    pub async fn decide_requests(
        &self,
        requests: &[BootRequest],
        intent: Intent,
        actor: &str,
    ) -> Result<Decided, StoreError> {
        let (distinct, positions) = dedupe(requests);
        let mut attempt = 1;
        let (header, decisions) = loop {
            match self.attempt(&distinct, intent, actor).await {
                Err(StoreError::Retryable(_)) if attempt < self.max_attempts => attempt += 1,
                other => break other?,
            }
        };
        Ok(Decided {
            header,
            secrets: Secrets::Shown,
            decisions,
            positions,
        })
    }

    /// The second half of [`Allocator::allocate`]: renders the tacs of
    /// `decided`, through the [`RenderExecutor`]; one result per name given
    /// to [`Allocator::decide`]. The unit of work is over by then: no lock
    /// is held while a template runs.
    pub async fn render(&self, decided: Decided) -> Results {
        let Decided {
            header,
            secrets,
            decisions,
            positions,
        } = decided;
        let results = self.render_decisions(header, secrets, decisions).await;
        positions.into_iter().map(|i| results[i].clone()).collect()
    }

    /// A peek that also explains each decision.
    async fn explain_attempt(
        &self,
        names: &[SlaveName],
    ) -> Result<
        (
            TacHeader,
            Vec<Result<Decision, AllocationError>>,
            Vec<Option<Explanation>>,
        ),
        StoreError,
    > {
        let mut unit = self.store.begin(Intent::Peek).await?;
        let snapshot = self.read_snapshot(&mut *unit, names).await?;
        drop(unit);
        let header = TacHeader {
            generated: self.host.now(),
            host: self.host.fqdn(),
        };
        let planner = Planner::counting(&snapshot, self.count, header.generated);
        let decisions: Vec<_> = names.iter().enumerate().map(|(i, n)| planner.decide(i, n)).collect();
        let explanations = decisions
            .iter()
            .map(|d| d.as_ref().ok().map(|d| planner.explain(d)))
            .collect();
        Ok((header, decisions, explanations))
    }

    /// The snapshot for `names`, with the live facts when peers are counted
    /// on them.
    async fn read_snapshot(
        &self,
        unit: &mut dyn crate::ports::AllocationUnit,
        names: &[SlaveName],
    ) -> Result<crate::ports::Snapshot, StoreError> {
        let mut snapshot = unit.snapshot(names).await?;
        if matches!(self.count, BalanceCount::Live { .. }) {
            let mut silos: Vec<(PoolId, Silo)> =
                snapshot.slaves.iter().flatten().map(|s| (s.poolid, s.silo())).collect();
            silos.sort_unstable();
            silos.dedup();
            snapshot.live = Some(unit.live_peers(&silos).await?);
        }
        Ok(snapshot)
    }

    /// Decides for `names` in one unit of work and, for a commit, records
    /// and commits; the unit is over when this returns.
    async fn attempt(
        &self,
        requests: &[BootRequest],
        intent: Intent,
        actor: &str,
    ) -> Result<(TacHeader, Vec<Result<Decision, AllocationError>>), StoreError> {
        let names: Vec<SlaveName> = requests.iter().map(|r| r.name.clone()).collect();
        let mut unit = self.store.begin(intent).await?;
        let mut snapshot = unit.snapshot(&names).await?;
        let header = TacHeader {
            generated: self.host.now(),
            host: self.host.fqdn(),
        };
        if matches!(self.count, BalanceCount::Live { .. }) {
            let mut silos: Vec<(PoolId, Silo)> =
                snapshot.slaves.iter().flatten().map(|s| (s.poolid, s.silo())).collect();
            silos.sort_unstable();
            silos.dedup();
            snapshot.live = Some(unit.live_peers(&silos).await?);
        }
        let mut planner = Planner::counting(&snapshot, self.count, header.generated);
        let mut decisions = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let decision = planner.decide(i, name);
            if let Ok(d) = &decision {
                planner.accept(d);
            }
            decisions.push(decision);
        }
        if intent == Intent::Commit {
            let stamp = Actor {
                name: actor.to_owned(),
                at: header.generated,
            };
            let decided: Vec<(MasterChange, Reason)> = decisions
                .iter()
                .flatten()
                .filter_map(|d| Some((d.change()?, d.reason)))
                .collect();
            let audit: Vec<_> = decided.iter().filter_map(|(c, r)| audit_entry(c, *r, &stamp)).collect();
            let changes: Vec<MasterChange> = decided.into_iter().map(|(c, _)| c).collect();
            let boots: Vec<BootRecord> = requests
                .iter()
                .zip(&decisions)
                .filter_map(|(r, d)| {
                    let d = d.as_ref().ok()?;
                    Some(BootRecord {
                        slaveid: d.slave.slaveid,
                        at: header.generated,
                        from: r.from.map(|ip| ip.to_string()),
                        masterid: d.master.as_ref().map(|m| m.masterid),
                    })
                })
                .collect();
            if !changes.is_empty() || !boots.is_empty() {
                unit.record(&changes, &audit, &boots).await?;
            }
            unit.commit().await?;
        } else {
            // A peek holds no locks, but does hold a connection.
            drop(unit);
        }
        Ok((header, decisions))
    }

    /// Renders the tac of every decision, through the executor.
    async fn render_decisions(
        &self,
        header: TacHeader,
        secrets: Secrets,
        decisions: Vec<Result<Decision, AllocationError>>,
    ) -> Results {
        let requests: Vec<TacRequest> = decisions
            .iter()
            .flatten()
            .map(|d| tac_request(d, header.clone(), secrets))
            .collect();
        let mut tacs = self
            .executor
            .render_all(Arc::clone(&self.renderer), requests)
            .await
            .into_iter();
        decisions
            .into_iter()
            .map(|decision| {
                let decision = decision?;
                let tac = tacs.next().unwrap_or_else(|| {
                    Err(RenderError::Invalid {
                        template: "(render executor)".to_owned(),
                        message: "the render executor gave no answer".to_owned(),
                    })
                })?;
                Ok(Allocation { decision, tac })
            })
            .collect()
    }
}

/// One machine's request for its tac.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootRequest {
    /// The slave asking.
    pub name: SlaveName,
    /// The address it asks from, if known.
    pub from: Option<IpAddr>,
}

/// The distinct requests in first-seen order (each with its name's last
/// address), and for each input request the index of its distinct one.
fn dedupe(requests: &[BootRequest]) -> (Vec<BootRequest>, Vec<usize>) {
    let mut index: HashMap<&SlaveName, usize> = HashMap::with_capacity(requests.len());
    let mut distinct: Vec<BootRequest> = Vec::with_capacity(requests.len());
    let positions = requests
        .iter()
        .map(|r| {
            let i = *index.entry(&r.name).or_insert_with(|| {
                distinct.push(r.clone());
                distinct.len() - 1
            });
            if r.from.is_some() {
                distinct[i].from = r.from;
            }
            i
        })
        .collect();
    (distinct, positions)
}

/// What a tac may show of the pool's password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secrets {
    Shown,
    Redacted,
}

/// The password a [`Allocator::preview`] tac shows.
pub const REDACTED_PASSWORD: &str = "***";

fn tac_request(decision: &Decision, header: TacHeader, secrets: Secrets) -> TacRequest {
    let slavename = decision.slave.name.clone();
    let body = match (&decision.master, &decision.password) {
        (Some(master), Some(password)) => TacBody::Enabled {
            template: decision.template.as_deref().cloned(),
            values: TacValues {
                buildmaster_host: master.fqdn.clone(),
                port: master.pb_port,
                slavename,
                basedir: decision.slave.basedir.clone(),
                passwd: match secrets {
                    Secrets::Shown => password.password.clone(),
                    Secrets::Redacted => REDACTED_PASSWORD.to_owned(),
                },
            },
        },
        _ => TacBody::Disabled { slavename },
    };
    TacRequest { header, body }
}

/// The entry of one allocation: the `current_masterid` change, and in the
/// new values the rule's reason (`balanced`, `locked`, `disabled`), so that
/// "why did it go there" is answered from history too.
fn audit_entry(change: &MasterChange, reason: Reason, actor: &Actor) -> Option<NewAuditEntry> {
    let row = |m: Option<i32>| -> Row {
        [(
            "current_masterid".to_owned(),
            m.map_or(Value::Null, |id| Value::Int(id.into())),
        )]
        .into()
    };
    NewAuditEntry::for_write(
        Table::Slaves,
        change.slaveid.into(),
        Some(&row(change.from)),
        Some(&row(change.to)),
        actor,
    )
    .map(|mut entry| {
        if let Some(new) = entry.new_values.as_mut() {
            new.insert(REASON_KEY.to_owned(), Value::Text(reason.as_str().to_owned()));
        }
        entry
    })
}

/// The key of an allocation entry's new values that keeps the rule's reason.
pub const REASON_KEY: &str = "reason";

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use mockall::predicate::eq;
    use mockall::Sequence;

    use super::*;
    use crate::entities::{Master, Slave, SlavePassword};
    use crate::ports::{
        FixedHost, MasterChange, MockAllocationStore, MockAllocationUnit, MockTacRenderer, SiloLoad, Snapshot,
    };

    fn slave(current: Option<i32>, enabled: bool) -> Slave {
        Slave {
            slaveid: 7,
            name: "s1".into(),
            distroid: 1,
            bitsid: 1,
            speedid: 1,
            purposeid: 1,
            dcid: 1,
            trustid: 1,
            envid: 1,
            poolid: 1,
            basedir: "/b".into(),
            locked_masterid: None,
            custom_tplid: None,
            enabled,
            notes: None,
            current_masterid: current,
        }
    }

    fn snapshot(s: Slave) -> Snapshot {
        Snapshot {
            loads: vec![SiloLoad {
                poolid: 1,
                silo: s.silo(),
                per_master: vec![],
            }],
            slaves: vec![Some(Arc::new(s))],
            masters: vec![Arc::new(Master {
                masterid: 3,
                nickname: "bm03".into(),
                fqdn: "bm03.example".into(),
                http_port: 0,
                pb_port: 9003,
                dcid: 1,
                poolid: 1,
                enabled: true,
                notes: None,
            })],
            passwords: vec![Arc::new(SlavePassword {
                poolid: 1,
                distroid: None,
                password: "pw".into(),
            })],
            templates: vec![],
            live: None,
        }
    }

    fn host() -> Arc<FixedHost> {
        Arc::new(FixedHost {
            now: SystemTime::UNIX_EPOCH,
            fqdn: "alloc.example".into(),
        })
    }

    fn renderer() -> Arc<MockTacRenderer> {
        let mut r = MockTacRenderer::new();
        r.expect_render().returning(|req| Ok(format!("{:?}", req.body)));
        Arc::new(r)
    }

    /// A store whose units hand out `snap` and expect `record` `records` times.
    fn store(snap: Snapshot, records: usize, commits: usize) -> MockAllocationStore {
        let mut store = MockAllocationStore::new();
        store.expect_begin().returning(move |_| {
            let mut unit = MockAllocationUnit::new();
            let snap = snap.clone();
            unit.expect_snapshot().times(1).returning(move |_| Ok(snap.clone()));
            unit.expect_record().times(records).returning(|_, _, _| Ok(()));
            unit.expect_commit().times(commits).returning(|| Ok(()));
            Ok(Box::new(unit))
        });
        store
    }

    #[tokio::test]
    async fn gettac_records_a_changed_master_once_and_commits() {
        let mut store = MockAllocationStore::new();
        store.expect_begin().with(eq(Intent::Commit)).times(1).returning(|_| {
            let mut seq = Sequence::new();
            let mut unit = MockAllocationUnit::new();
            unit.expect_snapshot()
                .times(1)
                .in_sequence(&mut seq)
                .returning(|_| Ok(snapshot(slave(None, true))));
            unit.expect_record()
                .withf(|changes, audit, boots| {
                    changes
                        == [MasterChange {
                            slaveid: 7,
                            from: None,
                            to: Some(3),
                        }]
                        && audit.len() == 1
                        && audit[0].actor == "gettac"
                        && boots
                            == [BootRecord {
                                slaveid: 7,
                                at: SystemTime::UNIX_EPOCH,
                                from: Some("192.0.2.7".into()),
                                masterid: Some(3),
                            }]
                })
                .times(1)
                .in_sequence(&mut seq)
                .returning(|_, _, _| Ok(()));
            unit.expect_commit().times(1).in_sequence(&mut seq).returning(|| Ok(()));
            Ok(Box::new(unit))
        });
        let a = Allocator::new(Arc::new(store), renderer(), host())
            .gettac_from("S1", Some([192, 0, 2, 7].into()))
            .await
            .unwrap();
        assert_eq!(a.decision.master.unwrap().masterid, 3);
    }

    #[tokio::test]
    async fn an_unchanged_master_records_only_the_boot() {
        let mut store = MockAllocationStore::new();
        store.expect_begin().times(1).returning(|_| {
            let mut unit = MockAllocationUnit::new();
            unit.expect_snapshot().returning(|_| Ok(snapshot(slave(Some(3), true))));
            unit.expect_record()
                .withf(|changes, audit, boots| {
                    changes.is_empty() && audit.is_empty() && boots.len() == 1 && boots[0].from.is_none()
                })
                .times(1)
                .returning(|_, _, _| Ok(()));
            unit.expect_commit().times(1).returning(|| Ok(()));
            Ok(Box::new(unit))
        });
        Allocator::new(Arc::new(store), renderer(), host())
            .gettac("s1")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_disabled_slave_has_its_current_master_cleared_once() {
        let mut store = MockAllocationStore::new();
        store.expect_begin().returning(|_| {
            let mut unit = MockAllocationUnit::new();
            unit.expect_snapshot()
                .returning(|_| Ok(snapshot(slave(Some(3), false))));
            unit.expect_record()
                .withf(|changes, _, _| {
                    changes
                        == [MasterChange {
                            slaveid: 7,
                            from: Some(3),
                            to: None,
                        }]
                })
                .times(1)
                .returning(|_, _, _| Ok(()));
            unit.expect_commit().times(1).returning(|| Ok(()));
            Ok(Box::new(unit))
        });
        let a = Allocator::new(Arc::new(store), renderer(), host())
            .gettac("s1")
            .await
            .unwrap();
        assert!(a.tac.starts_with("Disabled"));
    }

    #[tokio::test]
    async fn peek_neither_records_nor_commits() {
        let store = store(snapshot(slave(None, true)), 0, 0);
        let a = Allocator::new(Arc::new(store), renderer(), host())
            .peek("s1")
            .await
            .unwrap();
        assert_eq!(a.decision.master.unwrap().masterid, 3);
    }

    #[tokio::test]
    async fn invalid_names_never_reach_the_store() {
        let store = MockAllocationStore::new(); // any call would panic: no expectations
        let err = Allocator::new(Arc::new(store), renderer(), host())
            .gettac("a.b")
            .await
            .unwrap_err();
        assert!(err.is_no_allocation());
    }

    #[tokio::test]
    async fn tacs_are_rendered_after_the_commit() {
        let mut seq = Sequence::new();
        let mut unit = MockAllocationUnit::new();
        unit.expect_snapshot()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(snapshot(slave(None, true))));
        unit.expect_record()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(()));
        unit.expect_commit().times(1).in_sequence(&mut seq).returning(|| Ok(()));
        let mut r = MockTacRenderer::new();
        r.expect_render()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok("tac".to_owned()));
        let mut store = MockAllocationStore::new();
        store.expect_begin().times(1).return_once(move |_| Ok(Box::new(unit)));
        let a = Allocator::new(Arc::new(store), Arc::new(r), host())
            .gettac("s1")
            .await
            .unwrap();
        assert_eq!(a.tac, "tac");
    }

    #[tokio::test]
    async fn a_peek_renders_after_its_unit_is_dropped() {
        let mut seq = Sequence::new();
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut unit = MockAllocationUnit::new();
        unit.expect_snapshot()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(snapshot(slave(None, true))));
        let mut r = MockTacRenderer::new();
        let seen = Arc::clone(&dropped);
        r.expect_render().times(1).returning(move |_| {
            // The unit (and its connection) is gone by now.
            assert!(seen.load(std::sync::atomic::Ordering::SeqCst));
            Ok("tac".to_owned())
        });
        let mut store = MockAllocationStore::new();
        let on_drop = Arc::clone(&dropped);
        store.expect_begin().times(1).return_once(move |_| {
            Ok(Box::new(DropFlag {
                inner: unit,
                flag: on_drop,
            }))
        });
        Allocator::new(Arc::new(store), Arc::new(r), host())
            .peek("s1")
            .await
            .unwrap();
    }

    /// A unit that raises a flag when it is dropped.
    struct DropFlag {
        inner: MockAllocationUnit,
        flag: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[async_trait::async_trait]
    impl crate::ports::AllocationUnit for DropFlag {
        async fn snapshot(&mut self, names: &[SlaveName]) -> Result<Snapshot, StoreError> {
            self.inner.snapshot(names).await
        }
        async fn live_peers(&mut self, silos: &[(PoolId, Silo)]) -> Result<crate::live::LivePeers, StoreError> {
            self.inner.live_peers(silos).await
        }
        async fn record(
            &mut self,
            changes: &[MasterChange],
            audit: &[NewAuditEntry],
            boots: &[BootRecord],
        ) -> Result<(), StoreError> {
            self.inner.record(changes, audit, boots).await
        }
        async fn commit(self: Box<Self>) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_template_error_after_the_commit_keeps_the_decision() {
        // The decision is recorded and committed once; the template error
        // is the slave's answer.
        let store = store(snapshot(slave(None, true)), 1, 1);
        let mut r = MockTacRenderer::new();
        r.expect_render().times(1).returning(|_| {
            Err(crate::error::RenderError::UnknownPlaceholder {
                template: "t".into(),
                placeholder: "x".into(),
            })
        });
        let err = Allocator::new(Arc::new(store), Arc::new(r), host())
            .gettac("s1")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AllocationError::Template(crate::error::RenderError::UnknownPlaceholder { template, .. }) if template == "t"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_render_executor_that_answers_too_little_is_a_template_error() {
        struct Silent;
        #[async_trait::async_trait]
        impl RenderExecutor for Silent {
            async fn render_all(
                &self,
                _: Arc<dyn TacRenderer>,
                _: Vec<TacRequest>,
            ) -> Vec<Result<String, crate::error::RenderError>> {
                Vec::new()
            }
        }
        let store = store(snapshot(slave(None, true)), 1, 1);
        let err = Allocator::new(Arc::new(store), renderer(), host())
            .with_render_executor(Arc::new(Silent))
            .gettac("s1")
            .await
            .unwrap_err();
        assert!(matches!(err, AllocationError::Template(_)), "{err:?}");
    }

    #[tokio::test]
    async fn deadlocks_are_retried_a_bounded_number_of_times() {
        let mut store = MockAllocationStore::new();
        store
            .expect_begin()
            .times(3)
            .returning(|_| Err(StoreError::Retryable("deadlock".into())));
        let err = Allocator::new(Arc::new(store), renderer(), host())
            .with_max_attempts(3)
            .gettac("s1")
            .await
            .unwrap_err();
        assert_eq!(err, AllocationError::Storage(StoreError::Retryable("deadlock".into())));
    }

    #[tokio::test]
    async fn a_retry_that_succeeds_answers_normally() {
        let mut store = MockAllocationStore::new();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        store.expect_begin().times(2).returning(move |_| {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                return Err(StoreError::Retryable("40001".into()));
            }
            let mut unit = MockAllocationUnit::new();
            unit.expect_snapshot().returning(|_| Ok(snapshot(slave(None, true))));
            unit.expect_record().times(1).returning(|_, _, _| Ok(()));
            unit.expect_commit().times(1).returning(|| Ok(()));
            Ok(Box::new(unit))
        });
        let a = Allocator::new(Arc::new(store), renderer(), host())
            .gettac("s1")
            .await
            .unwrap();
        assert_eq!(a.decision.master.unwrap().masterid, 3);
    }

    #[tokio::test]
    async fn unavailable_storage_is_not_retried() {
        let mut store = MockAllocationStore::new();
        store
            .expect_begin()
            .times(1)
            .returning(|_| Err(StoreError::Unavailable("refused".into())));
        let err = Allocator::new(Arc::new(store), renderer(), host())
            .gettac("s1")
            .await
            .unwrap_err();
        assert!(matches!(err, AllocationError::Storage(StoreError::Unavailable(_))));
    }

    #[tokio::test]
    async fn duplicate_names_in_a_batch_share_one_decision() {
        let store = store(snapshot(slave(None, true)), 1, 1);
        let n = SlaveName::parse("s1").unwrap();
        let results = Allocator::new(Arc::new(store), renderer(), host())
            .allocate(&[n.clone(), n], Intent::Commit, "batch")
            .await
            .unwrap();
        assert_eq!(results[0], results[1]);
    }
}
