//! Properties of allocation through the domain `Allocator` on the in-memory
//! store, for random fleets, random starting states and random request
//! orders.
//!
//! A fleet is small (a few pools, up to four masters each, some disabled;
//! up to 40 slaves drawn from up to three silos, with random speeds, since
//! speed is not part of the silo) and starts in an arbitrary state: any
//! slave may hold any master, even another pool's or a disabled one. The
//! requests are every slave once in a random order and random letter case,
//! with unknown and invalid names mixed in.
//!
//! What "balanced" means needs care. The rule counts every slave of the
//! pool×silo holding a master as load on it, locked ones included, so a
//! master loaded by locked slaves cannot be evened out; and a slave that
//! holds a master when the round starts but is disabled (or locked
//! elsewhere) drops that load only when it asks, possibly after others
//! balanced around it. So the balance property is stated for a round that
//! starts once every locked and disabled slave has asked (they never move
//! again), and as water-filling: every enabled master of the pool that got
//! a balanced slave carries at most one more slave, locked ones included,
//! than the least loaded enabled master. With no slave locked onto an
//! enabled master of the pool this is the plain statement: the per-master
//! counts differ by at most one.

// Helpers of a test file: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use slavealloc_domain::schema::{to_row, Row, Table, Value};
use slavealloc_domain::testing::answered_poll;
use slavealloc_domain::testing::PlainRenderer;
use slavealloc_domain::{
    Allocation, AllocationError, Allocator, AuditEntry, AuditQuery, BalanceCount, Dump, DumpStore, FixedHost, Intent,
    InventoryStore, LiveStore, Master, MasterId, PoolId, Reason, Silo, Slave, SlaveName, SlavePassword,
};
use slavealloc_store_memory::MemoryStore;

// The properties compare tacs between runs, not their contents: the
// domain's PlainRenderer is a deterministic function of its input.

#[derive(Debug, Clone)]
struct Fleet {
    masters: Vec<Master>,
    slaves: Vec<Slave>,
    passwords: Vec<SlavePassword>,
}

impl Fleet {
    fn dump(&self) -> Dump {
        let mut dump = Dump::default();
        // Every silo attribute and speed takes the ids 1 and 2.
        for table in Table::LOOKUPS {
            let Some(id_column) = table.id_column() else { continue };
            let pools = self.masters.iter().map(|m| m.poolid).max().unwrap_or(0);
            let ids = if table == Table::Pools { pools.max(1) } else { 2 };
            let rows = (1..=ids)
                .map(|id| {
                    Row::from([
                        (id_column.to_owned(), Value::Int(id.into())),
                        ("name".to_owned(), Value::Text(format!("{table}{id}"))),
                    ])
                })
                .collect();
            dump.tables.insert(table, rows);
        }
        let rows = |table: Table, rows: Vec<Row>| (table, rows);
        dump.tables.extend([
            rows(
                Table::Masters,
                self.masters.iter().map(|m| to_row(m).unwrap()).collect(),
            ),
            rows(Table::Slaves, self.slaves.iter().map(|s| to_row(s).unwrap()).collect()),
            rows(
                Table::SlavePasswords,
                self.passwords.iter().map(|p| to_row(p).unwrap()).collect(),
            ),
        ]);
        dump
    }

    fn slave(&self, name: &str) -> Option<&Slave> {
        self.slaves.iter().find(|s| s.name == name)
    }

    fn master(&self, id: MasterId) -> &Master {
        self.masters.iter().find(|m| m.masterid == id).unwrap()
    }

    fn candidates(&self, pool: PoolId) -> Vec<MasterId> {
        self.masters
            .iter()
            .filter(|m| m.poolid == pool && m.enabled)
            .map(|m| m.masterid)
            .collect()
    }
}

/// Per slave: (pool, silo template, speed, enabled, locked master, current
/// master); pools, silos and masters as raw numbers reduced modulo the
/// fleet's counts, so that every combination is valid and shrinks well.
type RawSlave = (usize, usize, i32, bool, Option<usize>, Option<usize>);

fn fleet() -> impl Strategy<Value = Fleet> {
    let pools = vec(vec(prop::bool::weighted(0.7), 1..=4), 1..=3);
    let silos = vec([1..=2i32, 1..=2, 1..=2, 1..=2, 1..=2, 1..=2], 1..=3);
    let slave = (
        0..3usize,
        0..3usize,
        1..=2i32,
        prop::bool::weighted(0.85),
        prop::option::weighted(0.15, 0..12usize),
        prop::option::of(0..12usize),
    );
    let specific = vec((0..3usize, 1..=2i32), 0..3);
    (pools, silos, vec(slave, 1..=40), specific)
        .prop_map(|(pools, silos, raw, specific)| build(pools, silos, raw, specific))
}

fn build(pools: Vec<Vec<bool>>, silos: Vec<[i32; 6]>, raw: Vec<RawSlave>, specific: Vec<(usize, i32)>) -> Fleet {
    let mut masters = vec![];
    for (p, flags) in pools.iter().enumerate() {
        for enabled in flags {
            let masterid = masters.len() as i32 + 1;
            masters.push(Master {
                masterid,
                nickname: format!("bm{masterid:02}"),
                fqdn: format!("bm{masterid:02}.example.com"),
                http_port: 8000 + masterid,
                pb_port: 9000 + masterid,
                dcid: 1,
                poolid: p as i32 + 1,
                enabled: *enabled,
                notes: None,
            });
        }
    }
    let master = |i: usize| masters[i % masters.len()].masterid;
    let slaves = raw
        .into_iter()
        .enumerate()
        .map(|(i, (pool, silo, speed, enabled, locked, current))| {
            let [distroid, bitsid, purposeid, dcid, trustid, envid] = silos[silo % silos.len()];
            Slave {
                slaveid: i as i32 + 1,
                name: format!("slave-{:02}", i + 1),
                distroid,
                bitsid,
                speedid: speed,
                purposeid,
                dcid,
                trustid,
                envid,
                poolid: (pool % pools.len()) as i32 + 1,
                basedir: "/builds/worker".into(),
                locked_masterid: locked.map(master),
                custom_tplid: None,
                enabled,
                notes: None,
                current_masterid: current.map(master),
            }
        })
        .collect();
    // Every pool has a wildcard password, so no request fails for want of one.
    let mut passwords: Vec<SlavePassword> = (1..=pools.len() as i32)
        .map(|poolid| SlavePassword {
            poolid,
            distroid: None,
            password: format!("pool{poolid}"),
        })
        .collect();
    let specific: BTreeSet<(i32, i32)> = specific
        .into_iter()
        .map(|(p, d)| ((p % pools.len()) as i32 + 1, d))
        .collect();
    passwords.extend(specific.into_iter().map(|(poolid, distro)| SlavePassword {
        poolid,
        distroid: Some(distro),
        password: format!("pool{poolid}-distro{distro}"),
    }));
    Fleet {
        masters,
        slaves,
        passwords,
    }
}

/// A name no slave has: unknown (in either case), fully qualified, or not a
/// host name at all.
fn stranger() -> impl Strategy<Value = String> {
    prop_oneof![
        "ghost-[a-z0-9]{1,6}",
        "GHOST-[A-Z0-9]{1,6}",
        "slave-[0-9]{3}",
        "[a-z]{1,6}\\.example\\.com",
        "[a-z]{0,3}[ /'%é]{1,2}",
        Just(String::new()),
    ]
}

#[derive(Debug, Clone)]
struct Scenario {
    fleet: Fleet,
    /// A permutation of the slaves' indices: the order they ask in.
    order: Vec<usize>,
    /// Per slave: whether it asks in upper case.
    upper: Vec<bool>,
    /// Unknown or invalid names, each asked at some point of the round.
    strangers: Vec<(Index, String)>,
}

impl Scenario {
    fn name(&self, i: usize) -> String {
        let name = &self.fleet.slaves[i].name;
        if self.upper[i] {
            name.to_uppercase()
        } else {
            name.clone()
        }
    }

    /// The round: every slave once, in order, with the strangers mixed in.
    fn round(&self) -> Vec<String> {
        let mut requests: Vec<String> = self.order.iter().map(|i| self.name(*i)).collect();
        for (at, name) in &self.strangers {
            requests.insert(at.index(requests.len() + 1), name.clone());
        }
        requests
    }

    /// The locked and disabled slaves, in round order, then the round.
    fn settled_round(&self) -> Vec<String> {
        let settle = self.order.iter().filter(|i| {
            let s = &self.fleet.slaves[**i];
            !s.enabled || s.locked_masterid.is_some()
        });
        settle.map(|i| self.name(*i)).chain(self.round()).collect()
    }
}

fn scenario() -> impl Strategy<Value = Scenario> {
    fleet()
        .prop_flat_map(|fleet| {
            let n = fleet.slaves.len();
            (
                Just(fleet),
                Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
                vec(any::<bool>(), n),
                vec((any::<Index>(), stranger()), 0..4),
            )
        })
        .prop_map(|(fleet, order, upper, strangers)| Scenario {
            fleet,
            order,
            upper,
            strangers,
        })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

fn allocator(store: &MemoryStore) -> Allocator {
    let host = FixedHost {
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_300_000_000),
        fqdn: "slavealloc.example.com".into(),
    };
    Allocator::new(Arc::new(store.clone()), Arc::new(PlainRenderer), Arc::new(host))
}

/// What an allocation can change: the slaves' rows and the audit log (its
/// unit of work writes nothing else), which only grows, so its newest entry
/// tells whether it changed. Cheaper than a full export at every step.
#[derive(Debug, Clone, PartialEq)]
struct State {
    slaves: Vec<Row>,
    newest_audit: Option<AuditEntry>,
}

async fn state(store: &MemoryStore) -> State {
    let newest = AuditQuery {
        table: None,
        row_id: None,
        since: None,
        limit: 1,
        ..AuditQuery::default()
    };
    State {
        slaves: store.list(Table::Slaves).await.unwrap(),
        newest_audit: store.audit(newest).await.unwrap().pop(),
    }
}

/// Each slave's `current_masterid`, by name: the only column requests
/// change (the others are the fleet's).
fn currents(state: &State) -> BTreeMap<String, Option<MasterId>> {
    state
        .slaves
        .iter()
        .map(|r| {
            let name = r["name"].as_text().unwrap().to_owned();
            let current = r["current_masterid"].as_int().map(|m| MasterId::try_from(m).unwrap());
            (name, current)
        })
        .collect()
}

/// One `gettac` and what it changed.
#[derive(Debug)]
struct Step {
    request: String,
    result: Result<slavealloc_domain::Allocation, AllocationError>,
    /// Whether no slave row and no audit entry changed.
    unchanged: bool,
    currents_before: BTreeMap<String, Option<MasterId>>,
    currents_after: BTreeMap<String, Option<MasterId>>,
}

impl Step {
    fn current_after(&self, name: &str) -> Option<MasterId> {
        self.currents_after[name]
    }
}

/// Runs `requests` one `gettac` at a time on a fresh store holding `fleet`;
/// returns the steps and the final export.
fn one_by_one(fleet: &Fleet, requests: &[String]) -> (Vec<Step>, Dump) {
    runtime().block_on(async {
        let store = MemoryStore::from_dump(&fleet.dump()).unwrap();
        let allocator = allocator(&store);
        let mut before = state(&store).await;
        let mut steps = vec![];
        for request in requests {
            let result = allocator.gettac(request).await;
            let after = state(&store).await;
            steps.push(Step {
                request: request.clone(),
                result,
                unchanged: after == before,
                currents_before: currents(&before),
                currents_after: currents(&after),
            });
            before = after;
        }
        (steps, store.export().await.unwrap())
    })
}

/// The slave a request names, as the fleet defines it (only its current
/// master changes while requests run).
fn requested<'f>(fleet: &'f Fleet, request: &str) -> Option<&'f Slave> {
    SlaveName::parse(request).ok().and_then(|n| fleet.slave(n.as_str()))
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

proptest! {
    // 128 cases keep the file near ten seconds in a debug build;
    // PROPTEST_CASES=5000 runs a longer search.
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// (a) Once every slave of a pool×silo has asked (after the locked and
    /// disabled ones settled), its enabled masters are balanced as the rule
    /// can balance them: water-filling, see the module docs.
    #[test]
    fn a_round_balances_every_pool_and_silo(s in scenario()) {
        let (steps, _) = one_by_one(&s.fleet, &s.settled_round());
        let last = steps.last().unwrap();
        let state: Vec<Slave> = s
            .fleet
            .slaves
            .iter()
            .map(|x| Slave { current_masterid: last.current_after(&x.name), ..x.clone() })
            .collect();
        let mut cells: BTreeMap<(PoolId, Silo), Vec<&Slave>> = BTreeMap::new();
        for slave in &state {
            cells.entry((slave.poolid, slave.silo())).or_default().push(slave);
        }
        for ((pool, silo), members) in cells {
            let candidates = s.fleet.candidates(pool);
            if candidates.is_empty() {
                continue;
            }
            let total = |m: MasterId| members.iter().filter(|x| x.current_masterid == Some(m)).count();
            let balanced = |x: &&&Slave| x.enabled && x.locked_masterid.is_none();
            let min = candidates.iter().map(|m| total(*m)).min().unwrap();
            for m in &candidates {
                if members.iter().filter(balanced).any(|x| x.current_masterid == Some(*m)) {
                    prop_assert!(
                        total(*m) <= min + 1,
                        "pool {pool} silo {silo:?}: master {m} holds {} slaves, the least loaded {min}", total(*m)
                    );
                }
            }
            // Every balanced slave ends on one of the pool's enabled masters.
            for x in members.iter().filter(balanced) {
                prop_assert!(x.current_masterid.is_some_and(|m| candidates.contains(&m)), "{x:?}");
            }
            // The plain form, when no locked slave weighs on a candidate.
            let locked_on_candidates = members
                .iter()
                .any(|x| x.enabled && x.locked_masterid.is_some_and(|m| candidates.contains(&m)));
            if !locked_on_candidates {
                let counts: Vec<usize> = candidates.iter().map(|m| total(*m)).collect();
                let spread = counts.iter().max().unwrap() - counts.iter().min().unwrap();
                prop_assert!(spread <= 1, "pool {pool} silo {silo:?}: counts {counts:?}");
            }
        }
    }

    /// Every balanced decision is the rule applied to a naive recount of the
    /// database before it: the enabled master of the pool with the fewest
    /// other slaves of the pool and silo, ties to the lowest masterid. This
    /// checks the store's incremental counts against the definition.
    #[test]
    fn balanced_decisions_match_a_naive_recount(s in scenario()) {
        for step in one_by_one(&s.fleet, &s.round()).0 {
            let Some(slave) = requested(&s.fleet, &step.request) else { continue };
            if !slave.enabled || slave.locked_masterid.is_some() {
                continue;
            }
            let before = &step.currents_before;
            let peers = |m: MasterId| {
                s.fleet
                    .slaves
                    .iter()
                    .filter(|x| x.slaveid != slave.slaveid && x.poolid == slave.poolid && x.silo() == slave.silo())
                    .filter(|x| before[&x.name] == Some(m))
                    .count()
            };
            let want = s.fleet.candidates(slave.poolid).into_iter().min_by_key(|m| (peers(*m), *m));
            match (&step.result, want) {
                (Ok(a), Some(m)) => {
                    prop_assert_eq!(a.decision.reason, Reason::Balanced);
                    prop_assert_eq!(a.decision.master.as_ref().map(|x| x.masterid), Some(m), "{}", step.request);
                    prop_assert_eq!(step.current_after(&slave.name), Some(m));
                }
                (Err(AllocationError::NoMaster { poolid, .. }), None) => {
                    prop_assert_eq!(*poolid, slave.poolid);
                    prop_assert!(step.unchanged, "a refusal changed a slave or the audit log");
                }
                (got, want) => prop_assert!(false, "{}: got {got:?}, want master {want:?}", step.request),
            }
        }
    }

    /// (b) A locked slave always gets its locked master, whatever that
    /// master's state or pool, and holds it afterwards.
    #[test]
    fn locked_slaves_always_get_their_master(s in scenario()) {
        for step in one_by_one(&s.fleet, &s.round()).0 {
            let Some(slave) = requested(&s.fleet, &step.request) else { continue };
            let (Some(locked), true) = (slave.locked_masterid, slave.enabled) else { continue };
            let a = step.result.as_ref().unwrap();
            prop_assert_eq!(a.decision.reason, Reason::Locked);
            prop_assert_eq!(a.decision.master.as_deref(), Some(s.fleet.master(locked)));
            prop_assert_eq!(step.current_after(&slave.name), Some(locked));
        }
    }

    /// (c) A disabled slave is told so, never holds a master after asking,
    /// locked or not.
    #[test]
    fn disabled_slaves_never_hold_a_master(s in scenario()) {
        let mut asked = BTreeSet::new();
        for step in one_by_one(&s.fleet, &s.round()).0 {
            if let Some(slave) = requested(&s.fleet, &step.request) {
                asked.insert(slave.name.clone());
                if !slave.enabled {
                    let a = step.result.as_ref().unwrap();
                    prop_assert_eq!(a.decision.reason, Reason::Disabled);
                    prop_assert_eq!(&a.decision.master, &None);
                    prop_assert_eq!(step.current_after(&slave.name), None);
                }
            }
            // ... and no later request gives one back.
            for x in s.fleet.slaves.iter().filter(|x| !x.enabled && asked.contains(&x.name)) {
                prop_assert_eq!(step.current_after(&x.name), None, "{} after {}", x.name, step.request);
            }
        }
    }

    /// (d) An unknown or invalid name never gets an allocation and changes
    /// nothing: not a slave, not the audit log.
    #[test]
    fn unknown_names_never_allocate_and_change_nothing(s in scenario()) {
        for step in one_by_one(&s.fleet, &s.round()).0 {
            if requested(&s.fleet, &step.request).is_some() {
                continue;
            }
            match &step.result {
                Err(e @ (AllocationError::UnknownSlave(_) | AllocationError::InvalidName(_))) => {
                    prop_assert!(e.is_no_allocation());
                }
                other => prop_assert!(false, "{:?} answered {other:?}", step.request),
            }
            prop_assert!(step.unchanged, "{:?} changed a slave or the audit log", step.request);
        }
    }

    /// (e) One batch through `Allocator::allocate` gives the same answers,
    /// tacs included, and leaves the same database (audit log included) as
    /// the same requests one `gettac` at a time.
    #[test]
    fn a_batch_decides_as_the_same_requests_one_by_one(s in scenario()) {
        // A batch takes parsed names, and answers a repeated name once.
        let mut seen = BTreeSet::new();
        let names: Vec<SlaveName> = s
            .round()
            .iter()
            .filter_map(|r| SlaveName::parse(r).ok())
            .filter(|n| seen.insert(n.clone()))
            .collect();
        let requests: Vec<String> = names.iter().map(|n| n.as_str().to_owned()).collect();
        let (steps, one_by_one_state) = one_by_one(&s.fleet, &requests);
        let (batch, state) = runtime().block_on(async {
            let store = MemoryStore::from_dump(&s.fleet.dump()).unwrap();
            let results = allocator(&store).allocate(&names, Intent::Commit, "gettac").await.unwrap();
            (results, store.export().await.unwrap())
        });
        prop_assert_eq!(batch.len(), steps.len());
        for (got, step) in batch.iter().zip(&steps) {
            prop_assert_eq!(got, &step.result, "{}", step.request);
        }
        prop_assert_eq!(state, one_by_one_state);
    }

    /// (f) Live counting, with a simulated clock: when the polls confirm
    /// every slave connected where it was sent, counting on the live facts
    /// decides exactly as the original's rule, however much time passes
    /// between boots (connected machines never expire); and when no
    /// machine ever connects, every allocation stops counting once its
    /// lease is over, so a boot after a long quiet goes to the pool's
    /// lowest enabled master whatever the recorded counts say.
    #[test]
    fn live_counts_follow_the_polls_and_the_clock(s in scenario(), gaps in vec(0u64..3_600, 64)) {
        let lease = Duration::from_secs(900);
        let live = BalanceCount::Live { lease };
        runtime().block_on(async {
            let recorded = MemoryStore::from_dump(&s.fleet.dump()).unwrap();
            let confirmed = MemoryStore::from_dump(&s.fleet.dump()).unwrap();
            let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_300_000_000);
            let mut now = start;
            confirm_connections(&confirmed, &s.fleet, now).await;
            for (step, request) in s.round().iter().enumerate() {
                now += Duration::from_secs(gaps[step % gaps.len()]);
                let want = allocator(&recorded).gettac(request).await;
                let got = allocator_at(&confirmed, now, live).gettac(request).await;
                let master = |r: &Result<Allocation, AllocationError>| {
                    r.as_ref().map(|a| a.decision.master.as_ref().map(|m| m.masterid)).map_err(Clone::clone)
                };
                prop_assert_eq!(master(&got), master(&want), "{} at +{:?}", request, now.duration_since(start));
                confirm_connections(&confirmed, &s.fleet, now).await;
            }
            // Nobody connects: after a lease of quiet, each balanced boot goes
            // where the live counts (only this round's fresh boots) send it.
            let silent = MemoryStore::from_dump(&s.fleet.dump()).unwrap();
            let later = start + Duration::from_secs(86_400);
            for request in s.round() {
                let Some(slave) = requested(&s.fleet, &request) else { continue };
                if !slave.enabled || slave.locked_masterid.is_some() {
                    continue;
                }
                let candidates = s.fleet.candidates(slave.poolid);
                let Some(lowest) = candidates.iter().min() else { continue };
                let got = allocator_at(&silent, later, live).peek(&request).await.unwrap();
                prop_assert_eq!(got.decision.master.map(|m| m.masterid), Some(*lowest), "{}", request);
            }
            Ok(())
        })?;
    }
}

/// [`allocator`] with its clock at `now`, counting peers as `count` says.
fn allocator_at(store: &MemoryStore, now: SystemTime, count: BalanceCount) -> Allocator {
    let host = FixedHost {
        now,
        fqdn: "slavealloc.example.com".into(),
    };
    Allocator::new(Arc::new(store.clone()), Arc::new(PlainRenderer), Arc::new(host)).with_balance(count)
}

/// Polls every master at `now`, each listing as connected exactly the
/// slaves whose current master it is.
async fn confirm_connections(store: &MemoryStore, fleet: &Fleet, now: SystemTime) {
    let slaves = store.list(Table::Slaves).await.unwrap();
    for m in &fleet.masters {
        let names: Vec<&str> = slaves
            .iter()
            .filter(|r| r.get("current_masterid") == Some(&Value::Int(m.masterid.into())))
            .filter_map(|r| r.get("name").and_then(Value::as_text))
            .collect();
        let workers: Vec<(&str, bool)> = names.iter().map(|n| (*n, true)).collect();
        let poll = answered_poll(m.masterid, now, &workers);
        store.record_poll(&poll).await.unwrap();
    }
}
