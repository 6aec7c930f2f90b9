//! The live fleet: what the machines and the Buildbot masters say, beside
//! what slavealloc handed out.
//!
//! `current_masterid` says which master a slave was *given* at its last
//! boot; it never expires. Three kinds of facts complete it, kept in the
//! rebuild's own tables:
//! - a [`BootRecord`] per slave: when it last asked for its tac, from
//!   which address, and which master it got;
//! - a [`Presence`] per slave: what the masters' Buildbot data API said of
//!   it at the last polls (connected where, since when, last seen);
//! - a [`MasterStatus`] per master: whether its API answered, and what it
//!   said; workers it reports that slavealloc does not know are kept as
//!   [`UnknownWorker`]s.
//!
//! The allocation rule can count on these instead of `current_masterid`
//! ([`BalanceCount::Live`], opt-in): [`counted_on`] says on which master, if
//! any, a slave counts as a peer. It stays a pure function of a snapshot
//! and a clock, so property tests drive it with a simulated clock.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::entities::{MasterId, PoolId, Silo, SlaveId};
use crate::ports::SiloLoad;

/// How the allocation rule counts a master's peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BalanceCount {
    /// The original's rule: the slaves whose `current_masterid` it is.
    #[default]
    Recorded,
    /// The slaves [`counted_on`] it: connected to it, or given it less than
    /// `lease` ago and not seen elsewhere since.
    Live {
        /// How long an allocation counts without the machine connecting.
        lease: Duration,
    },
}

/// The lease [`BalanceCount::Live`] gives an allocation by default: long
/// enough for a machine to boot, start its worker and be seen by a poll.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15 * 60);

/// A slave's last `/gettac`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootRecord {
    /// The slave.
    pub slaveid: SlaveId,
    /// When it asked.
    pub at: SystemTime,
    /// The client's address (the trusted proxy's `X-Real-IP` when behind
    /// one), if known.
    pub from: Option<String>,
    /// The master it was given; `None` when disabled.
    pub masterid: Option<MasterId>,
}

/// What the masters' polls said of one slave.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Presence {
    /// The slave.
    pub slaveid: SlaveId,
    /// The master whose last poll listed it as connected; `None` when no
    /// master does.
    pub connected_masterid: Option<MasterId>,
    /// Since the first poll of that master that saw it connected.
    pub connected_since: Option<SystemTime>,
    /// The master it was last seen connected to (still set after it
    /// disconnects).
    pub last_seen_masterid: Option<MasterId>,
    /// The last poll that saw it connected.
    pub last_seen: Option<SystemTime>,
    /// Buildbot's `paused` at that poll.
    pub paused: bool,
    /// Buildbot's `graceful` (shutting down after its build) at that poll.
    pub graceful: bool,
}

/// What the last polls of one master found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MasterStatus {
    /// The master.
    pub masterid: MasterId,
    /// Whether the last poll was answered.
    pub reachable: bool,
    /// When the last poll started, answered or not.
    pub last_poll: Option<SystemTime>,
    /// When the last answered poll started.
    pub last_success: Option<SystemTime>,
    /// Since when polls fail (the first failed poll after a success).
    pub unreachable_since: Option<SystemTime>,
    /// Why the last poll failed.
    pub error: Option<String>,
    /// The Buildbot version it reported.
    pub buildbot_version: Option<String>,
    /// How many workers it listed as connected at its last answered poll.
    pub connected: u32,
    /// How long the last poll took.
    pub poll_millis: u64,
}

/// A worker a master reports that slavealloc has no slave for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownWorker {
    /// The master reporting it.
    pub masterid: MasterId,
    /// The worker's name as Buildbot has it.
    pub name: String,
    /// Whether it was connected at that master's last answered poll.
    pub connected: bool,
    /// That poll.
    pub last_seen: SystemTime,
}

/// One worker of a master's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolledWorker {
    /// Its name.
    pub name: String,
    /// `connected_to` not empty.
    pub connected: bool,
    /// Buildbot's `paused`.
    pub paused: bool,
    /// Buildbot's `graceful`.
    pub graceful: bool,
}

/// A master's answer to a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollAnswer {
    /// The Buildbot version, when it says.
    pub buildbot_version: Option<String>,
    /// Every worker it lists.
    pub workers: Vec<PolledWorker>,
}

/// One poll of one master, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollRecord {
    /// The master.
    pub masterid: MasterId,
    /// When the poll started.
    pub at: SystemTime,
    /// How long it took.
    pub duration: Duration,
    /// Its answer, or why there was none.
    pub outcome: Result<PollAnswer, String>,
}

/// Everything known of the live fleet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiveState {
    /// Per slave that ever booted through slavealloc.
    pub boots: Vec<BootRecord>,
    /// Per slave ever seen by a poll.
    pub presence: Vec<Presence>,
    /// Per master ever polled.
    pub masters: Vec<MasterStatus>,
    /// Workers masters report that slavealloc does not know.
    pub unknown: Vec<UnknownWorker>,
}

impl LiveState {
    /// The same facts keyed for lookups.
    pub fn index(&self) -> LiveIndex<'_> {
        LiveIndex {
            boots: self.boots.iter().map(|b| (b.slaveid, b)).collect(),
            presence: self.presence.iter().map(|p| (p.slaveid, p)).collect(),
            masters: self.masters.iter().map(|m| (m.masterid, m)).collect(),
        }
    }
}

/// A [`LiveState`] by slave and master id.
#[derive(Debug, Clone, Default)]
pub struct LiveIndex<'a> {
    /// Boot records by slave.
    pub boots: HashMap<SlaveId, &'a BootRecord>,
    /// Presence by slave.
    pub presence: HashMap<SlaveId, &'a Presence>,
    /// Status by master.
    pub masters: HashMap<MasterId, &'a MasterStatus>,
}

/// Whether a slave is connected, as far as slavealloc can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// A master's last answered poll lists it as connected.
    Connected,
    /// The master it was last seen on answers and does not list it
    /// connected.
    Disconnected,
    /// The master it was last seen on does not answer: it may be connected
    /// there still.
    Unknown,
    /// No poll has ever seen it.
    Never,
}

impl Liveness {
    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Connected => "connected",
            Liveness::Disconnected => "disconnected",
            Liveness::Unknown => "unknown",
            Liveness::Never => "never",
        }
    }
}

/// A slave's live facts, as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlaveLive {
    /// [`Liveness`].
    pub state: Liveness,
    /// The master it is connected to (or, when [`Liveness::Unknown`], was
    /// last seen on).
    pub connected_master: Option<MasterId>,
    /// Since when.
    #[serde(serialize_with = "opt_at_text")]
    pub connected_since: Option<SystemTime>,
    /// The last poll that saw it connected.
    #[serde(serialize_with = "opt_at_text")]
    pub last_seen: Option<SystemTime>,
    /// Its last `/gettac`.
    #[serde(serialize_with = "opt_at_text")]
    pub last_gettac: Option<SystemTime>,
    /// From where.
    pub last_gettac_from: Option<String>,
    /// Buildbot's `paused`.
    pub paused: bool,
    /// Buildbot's `graceful`.
    pub graceful: bool,
    /// Whether the master these facts come from answered a poll less than
    /// `fresh_for` ago.
    pub fresh: bool,
}

/// The live facts of one slave from an index, judged at `now`: facts from
/// a master that has not answered for `fresh_for` are not fresh.
pub fn slave_live(index: &LiveIndex<'_>, slaveid: SlaveId, now: SystemTime, fresh_for: Duration) -> SlaveLive {
    let boot = index.boots.get(&slaveid);
    let presence = index.presence.get(&slaveid);
    let seen_on = presence.and_then(|p| p.connected_masterid.or(p.last_seen_masterid));
    let status = seen_on.and_then(|m| index.masters.get(&m));
    let fresh = status
        .and_then(|s| s.last_success)
        .is_some_and(|t| age(now, t) < fresh_for);
    let state = match (presence, status) {
        (None, _) | (Some(Presence { last_seen: None, .. }), _) => Liveness::Never,
        (Some(_), Some(s)) if !s.reachable => Liveness::Unknown,
        (Some(p), _) if p.connected_masterid.is_some() => Liveness::Connected,
        (Some(_), _) => Liveness::Disconnected,
    };
    SlaveLive {
        state,
        connected_master: match state {
            Liveness::Connected => presence.and_then(|p| p.connected_masterid),
            Liveness::Unknown => seen_on,
            _ => None,
        },
        connected_since: presence
            .filter(|_| state == Liveness::Connected)
            .and_then(|p| p.connected_since),
        last_seen: presence.and_then(|p| p.last_seen),
        last_gettac: boot.map(|b| b.at),
        last_gettac_from: boot.and_then(|b| b.from.clone()),
        paused: presence.is_some_and(|p| p.paused),
        graceful: presence.is_some_and(|p| p.graceful),
        fresh,
    }
}

/// A time as the API writes it: RFC 3339 UTC, as `audit_log.at`.
fn at_text<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::audit::format_at(*t))
}

fn opt_at_text<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => at_text(t, s),
        None => s.serialize_none(),
    }
}

/// How long ago `then` was at `now`; zero when `then` is in the future
/// (another daemon's clock ahead of ours).
pub fn age(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or_default()
}

/// Whether a slave last seen at `last_seen` (never: `None`) is stale at
/// `now`: not seen for `older_than`, or never.
pub fn is_stale(last_seen: Option<SystemTime>, now: SystemTime, older_than: Duration) -> bool {
    last_seen.is_none_or(|t| age(now, t) >= older_than)
}

/// What [`counted_on`] needs to know of one slave of a pool and silo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerFacts {
    /// The slave.
    pub slaveid: SlaveId,
    /// Its pool.
    pub poolid: PoolId,
    /// Its silo.
    pub silo: Silo,
    /// Its `current_masterid`.
    pub current_masterid: Option<MasterId>,
    /// When it was given that master: its last boot's time, when that boot
    /// gave it `current_masterid`.
    pub allocated_at: Option<SystemTime>,
    /// The master whose last poll lists it connected, and when that was.
    pub connected: Option<(MasterId, SystemTime)>,
}

/// The live facts an allocation in [`BalanceCount::Live`] decides from,
/// read in the same unit of work as the rest of its snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LivePeers {
    /// Every slave of every (pool, silo) of the snapshot's found slaves.
    pub peers: Vec<PeerFacts>,
    /// Since when each master of those pools has not answered its polls
    /// (masters that answer, or were never polled, left out).
    pub unreachable_since: Vec<(MasterId, SystemTime)>,
}

/// On which master, if any, a slave counts as a peer at `now`:
/// - the master it is connected to, unless that master has not answered
///   for longer than `lease` (its last word is too old to trust);
/// - else, or when it was given a master after it was last seen connected
///   (it rebooted and asked), the master it was given, if less than
///   `lease` ago;
/// - else none: an allocation that expired without the machine connecting
///   no longer holds a place.
pub fn counted_on(
    peer: &PeerFacts,
    unreachable_since: impl Fn(MasterId) -> Option<SystemTime>,
    now: SystemTime,
    lease: Duration,
) -> Option<MasterId> {
    let connected = peer
        .connected
        .filter(|(m, _)| unreachable_since(*m).is_none_or(|since| age(now, since) <= lease));
    let allocated = peer
        .current_masterid
        .zip(peer.allocated_at)
        .filter(|(_, at)| age(now, *at) < lease);
    match (connected, allocated) {
        (Some((_, seen)), Some((given, at))) if at > seen => Some(given),
        (Some((on, _)), _) => Some(on),
        (None, Some((given, _))) => Some(given),
        (None, None) => None,
    }
}

/// The live counts per (pool, silo) and master, and where each peer counts:
/// what a [`crate::rule::Planner`] in [`BalanceCount::Live`] decides from.
pub fn live_loads(live: &LivePeers, now: SystemTime, lease: Duration) -> (Vec<SiloLoad>, HashMap<SlaveId, MasterId>) {
    let down: HashMap<MasterId, SystemTime> = live.unreachable_since.iter().copied().collect();
    let mut counts: HashMap<(PoolId, Silo), HashMap<MasterId, u32>> = HashMap::new();
    let mut on = HashMap::new();
    for peer in &live.peers {
        let group = counts.entry((peer.poolid, peer.silo)).or_default();
        if let Some(m) = counted_on(peer, |m| down.get(&m).copied(), now, lease) {
            *group.entry(m).or_default() += 1;
            on.insert(peer.slaveid, m);
        }
    }
    let loads = counts
        .into_iter()
        .map(|((poolid, silo), per)| {
            let mut per_master: Vec<(MasterId, u32)> = per.into_iter().collect();
            per_master.sort_unstable();
            SiloLoad {
                poolid,
                silo,
                per_master,
            }
        })
        .collect();
    (loads, on)
}

/// The presence rows one poll of `masterid` changes, given what was known
/// before: every presence row connected to that master and the rows of the
/// slaves it reports (`reported`: slave id and what the master said).
///
/// A slave it lists as connected is connected there (since the first such
/// poll), seen now; one it no longer lists as connected, or no longer
/// lists at all, is disconnected (its last sighting kept); a slave
/// connected to another master and listed here as not connected is left
/// alone, since that other master is the one that knows.
pub fn presence_after_poll(
    masterid: MasterId,
    at: SystemTime,
    before: &HashMap<SlaveId, Presence>,
    reported: &[(SlaveId, &PolledWorker)],
) -> Vec<Presence> {
    let mut after: HashMap<SlaveId, Presence> = HashMap::new();
    for (slaveid, worker) in reported {
        let old = before.get(slaveid);
        let here = old.is_some_and(|p| p.connected_masterid == Some(masterid));
        if worker.connected {
            after.insert(
                *slaveid,
                Presence {
                    slaveid: *slaveid,
                    connected_masterid: Some(masterid),
                    connected_since: if here {
                        old.and_then(|p| p.connected_since)
                    } else {
                        Some(at)
                    },
                    last_seen_masterid: Some(masterid),
                    last_seen: Some(at),
                    paused: worker.paused,
                    graceful: worker.graceful,
                },
            );
        } else if let Some(old) = old.filter(|_| here) {
            after.insert(*slaveid, disconnected(old));
        }
    }
    let listed: std::collections::HashSet<SlaveId> = reported.iter().map(|(id, _)| *id).collect();
    for old in before.values() {
        if old.connected_masterid == Some(masterid) && !listed.contains(&old.slaveid) {
            after.insert(old.slaveid, disconnected(old));
        }
    }
    let mut rows: Vec<Presence> = after
        .into_values()
        .filter(|p| before.get(&p.slaveid) != Some(p))
        .collect();
    rows.sort_unstable_by_key(|p| p.slaveid);
    rows
}

fn disconnected(old: &Presence) -> Presence {
    Presence {
        connected_masterid: None,
        connected_since: None,
        paused: false,
        graceful: false,
        ..old.clone()
    }
}

/// A master's status after one poll, given its status before (`None`: never
/// polled) and, for an answered poll, how many known and unknown workers
/// it listed as connected.
pub fn status_after_poll(before: Option<&MasterStatus>, poll: &PollRecord, connected: u32) -> MasterStatus {
    let millis = u64::try_from(poll.duration.as_millis()).unwrap_or(u64::MAX);
    match &poll.outcome {
        Ok(answer) => MasterStatus {
            masterid: poll.masterid,
            reachable: true,
            last_poll: Some(poll.at),
            last_success: Some(poll.at),
            unreachable_since: None,
            error: None,
            buildbot_version: answer
                .buildbot_version
                .clone()
                .or_else(|| before.and_then(|b| b.buildbot_version.clone())),
            connected,
            poll_millis: millis,
        },
        Err(why) => MasterStatus {
            masterid: poll.masterid,
            reachable: false,
            last_poll: Some(poll.at),
            last_success: before.and_then(|b| b.last_success),
            unreachable_since: before.and_then(|b| b.unreachable_since).or(Some(poll.at)),
            error: Some(why.clone()),
            buildbot_version: before.and_then(|b| b.buildbot_version.clone()),
            connected: before.map_or(0, |b| b.connected),
            poll_millis: millis,
        },
    }
}

/// A slave connected where slavealloc did not send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriftedSlave {
    /// Its name.
    pub name: String,
    /// Its pool.
    pub pool: String,
    /// Its `current_masterid`'s nickname, if any.
    pub recorded_master: Option<String>,
    /// The master it is connected to.
    pub connected_master: String,
    /// That master's pool.
    pub connected_pool: String,
}

/// A worker a master reports that slavealloc has no slave for, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownWorkerReport {
    /// The master reporting it.
    pub master: String,
    /// The worker's name.
    pub name: String,
    /// Whether it is connected there.
    pub connected: bool,
    /// The poll that reported it.
    #[serde(serialize_with = "at_text")]
    pub last_seen: SystemTime,
}

/// Where the live fleet differs from what slavealloc recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// Connected to a master of their pool other than their recorded one.
    pub elsewhere: Vec<DriftedSlave>,
    /// Connected to a master of another pool (other than the one they are
    /// locked to, which is where a lock sends them).
    pub other_pool: Vec<DriftedSlave>,
    /// Workers masters report that slavealloc does not know.
    pub unknown: Vec<UnknownWorkerReport>,
    /// Per pool × silo, how the *connected* slaves spread over the pool's
    /// masters (the recorded spread is [`crate::reports::silo_spreads`]).
    pub spreads: Vec<crate::reports::SiloSpread>,
}

/// The drift report of denormalized slave rows and plain master rows (as
/// [`crate::reports::silo_spreads`] takes them) against the live state.
/// Only facts from masters that answer their polls count: a slave last
/// seen on an unreachable master is not known to be anywhere.
pub fn drift(slaves: &[crate::schema::Row], masters: &[crate::schema::Row], live: &LiveState) -> Drift {
    use crate::schema::Value;
    let int = |r: &crate::schema::Row, c: &str| r.get(c).and_then(Value::as_int);
    let txt = |r: &crate::schema::Row, c: &str| r.get(c).and_then(Value::as_text).map(str::to_owned);
    let master_of: HashMap<i64, &crate::schema::Row> =
        masters.iter().filter_map(|m| Some((int(m, "masterid")?, m))).collect();
    let nickname = |id: i64| {
        master_of
            .get(&id)
            .and_then(|m| txt(m, "nickname"))
            .unwrap_or_else(|| id.to_string())
    };
    let reachable: HashMap<MasterId, bool> = live.masters.iter().map(|m| (m.masterid, m.reachable)).collect();
    let connected: HashMap<i64, i64> = live
        .presence
        .iter()
        .filter_map(|p| {
            let m = p.connected_masterid?;
            reachable
                .get(&m)
                .copied()
                .unwrap_or(false)
                .then_some((i64::from(p.slaveid), i64::from(m)))
        })
        .collect();
    let pool_name = |poolid: Option<i64>| {
        slaves
            .iter()
            .find(|s| int(s, "poolid") == poolid)
            .and_then(|s| txt(s, "pool"))
            .or_else(|| poolid.map(|p| p.to_string()))
            .unwrap_or_default()
    };
    let (mut elsewhere, mut other_pool) = (Vec::new(), Vec::new());
    let mut live_rows = Vec::with_capacity(slaves.len());
    for s in slaves {
        let on = int(s, "slaveid").and_then(|id| connected.get(&id).copied());
        let mut row = s.clone();
        row.insert("current_masterid".to_owned(), on.map_or(Value::Null, Value::Int));
        live_rows.push(row);
        let Some(on) = on else { continue };
        let recorded = int(s, "current_masterid");
        let on_pool = master_of.get(&on).and_then(|m| int(m, "poolid"));
        let entry = || DriftedSlave {
            name: txt(s, "name").unwrap_or_default(),
            pool: txt(s, "pool").unwrap_or_default(),
            recorded_master: recorded.map(nickname),
            connected_master: nickname(on),
            connected_pool: pool_name(on_pool),
        };
        if on_pool != int(s, "poolid") {
            if int(s, "locked_masterid") != Some(on) {
                other_pool.push(entry());
            }
        } else if recorded != Some(on) {
            elsewhere.push(entry());
        }
    }
    let by_name = |a: &DriftedSlave, b: &DriftedSlave| crate::reports::natural_cmp(&a.name, &b.name);
    elsewhere.sort_by(by_name);
    other_pool.sort_by(by_name);
    Drift {
        elsewhere,
        other_pool,
        unknown: live
            .unknown
            .iter()
            .map(|u| UnknownWorkerReport {
                master: nickname(i64::from(u.masterid)),
                name: u.name.clone(),
                connected: u.connected,
                last_seen: u.last_seen,
            })
            .collect(),
        spreads: crate::reports::silo_spreads(&live_rows, masters),
    }
}

/// A lease row: which daemon does a job that only one may do (polling the
/// masters), until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub name: String,
    /// The daemon holding it.
    pub holder: String,
    /// When it lapses unless renewed.
    pub expires: SystemTime,
}

/// Reads an age like `7d`, `36h`, `90m`, `30s`, `2w` or `500ms`.
///
/// # Errors
/// Anything else, or zero.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not an age like 500ms, 30s, 90m, 36h, 7d or 2w");
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    if unit == "ms" {
        return if n == 0 {
            Err(bad())
        } else {
            Ok(Duration::from_millis(n))
        };
    }
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(unit_secs) {
        Some(0) | None => Err(bad()),
        Some(secs) => Ok(Duration::from_secs(secs)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(900);

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn silo() -> Silo {
        Silo {
            distroid: 1,
            bitsid: 1,
            purposeid: 1,
            dcid: 1,
            trustid: 1,
            envid: 1,
        }
    }

    fn peer(current: Option<MasterId>, allocated: Option<u64>, connected: Option<(MasterId, u64)>) -> PeerFacts {
        PeerFacts {
            slaveid: 1,
            poolid: 1,
            silo: silo(),
            current_masterid: current,
            allocated_at: allocated.map(t),
            connected: connected.map(|(m, s)| (m, t(s))),
        }
    }

    #[test]
    fn where_a_peer_counts() {
        let up = |_| None;
        let now = t(10_000);
        let cases = [
            (
                "a fresh allocation counts",
                peer(Some(1), Some(9_500), None),
                up,
                Some(1),
            ),
            ("an expired one does not", peer(Some(1), Some(9_000), None), up, None),
            (
                "a connection counts",
                peer(Some(1), Some(100), Some((2, 9_990))),
                up,
                Some(2),
            ),
            (
                "a boot after the last sighting counts where it was sent",
                peer(Some(1), Some(9_995), Some((2, 9_990))),
                up,
                Some(1),
            ),
            (
                "a connection seen after the boot wins",
                peer(Some(1), Some(9_980), Some((2, 9_990))),
                up,
                Some(2),
            ),
            ("no facts at all: nowhere", peer(Some(1), None, None), up, None),
        ];
        for (what, p, down, want) in cases {
            assert_eq!(counted_on(&p, down, now, LEASE), want, "{what}");
        }
        let down_since = |since: u64| move |m: MasterId| (m == 2).then_some(t(since));
        let on_down = peer(Some(2), Some(100), Some((2, 5_000)));
        assert_eq!(
            counted_on(&on_down, down_since(9_500), now, LEASE),
            Some(2),
            "a master down for less than the lease still holds its workers"
        );
        assert_eq!(
            counted_on(&on_down, down_since(5_000), now, LEASE),
            None,
            "a master down for longer than the lease holds none"
        );
    }

    #[test]
    fn loads_count_each_peer_once() {
        let live = LivePeers {
            peers: vec![
                PeerFacts {
                    slaveid: 1,
                    ..peer(Some(1), Some(9_900), None)
                },
                PeerFacts {
                    slaveid: 2,
                    ..peer(Some(1), Some(1), Some((2, 9_999)))
                },
                PeerFacts {
                    slaveid: 3,
                    ..peer(Some(1), Some(1), None)
                },
            ],
            unreachable_since: vec![],
        };
        let (loads, on) = live_loads(&live, t(10_000), LEASE);
        assert_eq!(loads.len(), 1);
        assert_eq!(loads[0].per_master, [(1, 1), (2, 1)]);
        assert_eq!((on.get(&1), on.get(&2), on.get(&3)), (Some(&1), Some(&2), None));
    }

    #[test]
    fn liveness_tells_unknown_from_disconnected() {
        let presence = Presence {
            slaveid: 1,
            connected_masterid: None,
            last_seen_masterid: Some(2),
            last_seen: Some(t(10)),
            ..Presence::default()
        };
        let mut status = MasterStatus {
            masterid: 2,
            reachable: true,
            last_success: Some(t(100)),
            ..MasterStatus::default()
        };
        let judge = |p: &Presence, s: &MasterStatus| {
            let state = LiveState {
                presence: vec![p.clone()],
                masters: vec![s.clone()],
                ..LiveState::default()
            };
            slave_live(&state.index(), 1, t(110), Duration::from_secs(60))
        };
        let live = judge(&presence, &status);
        assert_eq!(
            (live.state, live.fresh, live.last_seen),
            (Liveness::Disconnected, true, Some(t(10)))
        );
        status.reachable = false;
        let live = judge(&presence, &status);
        assert_eq!((live.state, live.connected_master), (Liveness::Unknown, Some(2)));
        let connected = Presence {
            connected_masterid: Some(2),
            connected_since: Some(t(5)),
            ..presence
        };
        status.reachable = true;
        let live = judge(&connected, &status);
        assert_eq!((live.state, live.connected_since), (Liveness::Connected, Some(t(5))));
        let none = slave_live(&LiveState::default().index(), 1, t(0), Duration::from_secs(60));
        assert_eq!((none.state, none.fresh), (Liveness::Never, false));
    }

    fn worker(name: &str, connected: bool) -> PolledWorker {
        PolledWorker {
            name: name.into(),
            connected,
            paused: false,
            graceful: connected,
        }
    }

    #[test]
    fn a_poll_connects_keeps_and_disconnects() {
        let was = |id, on: Option<MasterId>, since| Presence {
            slaveid: id,
            connected_masterid: on,
            connected_since: on.map(|_| t(since)),
            last_seen_masterid: Some(on.unwrap_or(1)),
            last_seen: Some(t(since)),
            ..Presence::default()
        };
        let before: HashMap<SlaveId, Presence> = [
            (1, was(1, Some(1), 10)), // still connected: keeps its since
            (2, was(2, Some(1), 10)), // listed, not connected: disconnects
            (3, was(3, Some(1), 10)), // no longer listed: disconnects
            (4, was(4, Some(2), 10)), // on another master, listed here idle: untouched
        ]
        .into();
        let (w1, w2, w4, w5) = (
            worker("a", true),
            worker("b", false),
            worker("d", false),
            worker("e", true),
        );
        let reported = [(1, &w1), (2, &w2), (4, &w4), (5, &w5)];
        let rows = presence_after_poll(1, t(100), &before, &reported);
        let by: HashMap<SlaveId, &Presence> = rows.iter().map(|p| (p.slaveid, p)).collect();
        assert_eq!(by[&1].connected_since, Some(t(10)));
        assert_eq!(by[&1].last_seen, Some(t(100)));
        assert!(by[&1].graceful);
        assert_eq!((by[&2].connected_masterid, by[&2].last_seen), (None, Some(t(10))));
        assert_eq!(by[&3].connected_masterid, None);
        assert!(!by.contains_key(&4));
        assert_eq!(
            (by[&5].connected_masterid, by[&5].connected_since),
            (Some(1), Some(t(100)))
        );
    }

    #[test]
    fn a_failed_poll_keeps_what_was_known() {
        let ok = PollRecord {
            masterid: 1,
            at: t(10),
            duration: Duration::from_millis(5),
            outcome: Ok(PollAnswer {
                buildbot_version: Some("4.3.0".into()),
                workers: vec![],
            }),
        };
        let up = status_after_poll(None, &ok, 7);
        assert!(up.reachable && up.connected == 7 && up.unreachable_since.is_none());
        let failed = |at| PollRecord {
            at: t(at),
            outcome: Err("timed out".into()),
            ..ok.clone()
        };
        let down = status_after_poll(Some(&up), &failed(20), 0);
        let still = status_after_poll(Some(&down), &failed(30), 0);
        assert_eq!(
            (
                still.reachable,
                still.unreachable_since,
                still.last_success,
                still.connected
            ),
            (false, Some(t(20)), Some(t(10)), 7)
        );
        assert_eq!(still.buildbot_version.as_deref(), Some("4.3.0"));
        assert_eq!(status_after_poll(Some(&still), &ok, 1).unreachable_since, None);
    }

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_age("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "7", "d", "0d", "7y", "-1d", "99999999999999999999w"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
        assert!(is_stale(None, t(0), Duration::from_secs(1)));
        assert!(!is_stale(Some(t(5)), t(6), Duration::from_secs(2)));
        assert!(is_stale(Some(t(5)), t(7), Duration::from_secs(2)));
    }
}
