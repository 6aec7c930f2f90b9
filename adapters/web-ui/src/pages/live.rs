//! The live fleet as the pages show it: one read of the live state per
//! page, judged at one moment by the domain's rules (`live::slave_live`),
//! so that a page and `GET /api/slaves` agree on who is connected.

use slavealloc_domain::live::{
    age, is_stale, parse_age, slave_live, LiveIndex, LiveState, Liveness, MasterStatus, SlaveLive,
};
use slavealloc_domain::MasterId;

use super::*;
use crate::view::Moment;

/// The live state and the moment it is judged at.
pub(super) struct LiveNow {
    pub(super) state: LiveState,
    pub(super) now: SystemTime,
    pub(super) fresh_for: Duration,
}

/// Reads the live state when the UI has a source; `None` without one.
pub(super) async fn live_now(ui: &Ui) -> Result<Option<LiveNow>, StoreError> {
    let Some(source) = &ui.live else {
        return Ok(None);
    };
    Ok(Some(LiveNow {
        state: source.store.live_state().await?,
        now: source.host.now(),
        fresh_for: source.fresh_for,
    }))
}

/// A slave's live facts, judged for the page's filters and sort. The whole
/// fleet is judged, so this stays cheap; only the rows shown become
/// [`SlaveLiveCell`]s.
#[derive(Debug, Clone)]
pub(super) struct SlaveJudged {
    live: SlaveLive,
    /// The nickname of `live.connected_master`.
    master: Option<String>,
    /// Connected to another master than its recorded current one.
    elsewhere: bool,
    /// What the "connected" column sorts by: connected first (by master),
    /// then unknown, then disconnected; never seen is `None`, last either
    /// way, as every empty cell.
    connected_order: Option<String>,
}

impl SlaveJudged {
    /// The cell [`crate::view::sorted_indices`] sorts by for `key`, if it
    /// is a live column.
    pub(super) fn sort_cell(&self, key: &str) -> Option<Cell<'_>> {
        match key {
            "connected" => Some(self.connected_order.as_deref().map_or(Cell::Null, Cell::Text)),
            "last_seen" => Some(self.live.last_seen.map_or(Cell::Null, |t| {
                Cell::Int(
                    t.duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
                )
            })),
            _ => None,
        }
    }

    /// The master it is connected to now, if it is.
    pub(super) fn connected_master(&self) -> Option<&str> {
        self.master
            .as_deref()
            .filter(|_| self.live.state == Liveness::Connected)
    }

    /// What its row shows, judged at `now`.
    pub(super) fn cell(&self, now: SystemTime) -> SlaveLiveCell {
        let moment = |t: Option<SystemTime>| t.map(|t| Moment::new(now, t));
        SlaveLiveCell {
            state: self.live.state.as_str(),
            master: self.master.clone(),
            fresh: self.live.fresh,
            elsewhere: self.elsewhere,
            since: moment(self.live.connected_since),
            last_seen: moment(self.live.last_seen),
            last_gettac: moment(self.live.last_gettac),
            last_gettac_from: self.live.last_gettac_from.clone(),
            paused: self.live.paused,
            graceful: self.live.graceful,
        }
    }
}

/// A slave's live facts as its row shows them.
#[derive(Debug, Clone, Serialize)]
pub(super) struct SlaveLiveCell {
    /// `connected`, `disconnected`, `unknown` or `never`.
    state: &'static str,
    /// The master it is connected to (when `unknown`: last seen on).
    master: Option<String>,
    /// Whether that master answered a poll within the freshness window.
    fresh: bool,
    /// Connected to another master than its recorded current one.
    elsewhere: bool,
    since: Option<Moment>,
    last_seen: Option<Moment>,
    last_gettac: Option<Moment>,
    last_gettac_from: Option<String>,
    paused: bool,
    graceful: bool,
}

/// The live state indexed for one page, with master nicknames.
pub(super) struct Judge<'a> {
    index: LiveIndex<'a>,
    nicknames: HashMap<MasterId, String>,
    pub(super) now: SystemTime,
    fresh_for: Duration,
}

impl<'a> Judge<'a> {
    /// `nicknames`: master id → nickname.
    pub(super) fn new(live: &'a LiveNow, nicknames: HashMap<MasterId, String>) -> Self {
        Self {
            index: live.state.index(),
            nicknames,
            now: live.now,
            fresh_for: live.fresh_for,
        }
    }

    /// Master nicknames from loaded lookups.
    pub(super) fn nicknames(lookups: &Lookups) -> HashMap<MasterId, String> {
        lookups
            .0
            .get(Table::Masters.name())
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| Some((MasterId::try_from(m.id).ok()?, m.name.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn nickname(&self, id: MasterId) -> String {
        self.nicknames.get(&id).cloned().unwrap_or_else(|| format!("#{id}"))
    }

    /// The live facts of a slave row whose recorded current master is
    /// `recorded` (a nickname).
    pub(super) fn slave(&self, row: &Row, recorded: Option<&str>) -> Option<SlaveJudged> {
        let slaveid = int(row, "slaveid").and_then(|id| i32::try_from(id).ok())?;
        let live = slave_live(&self.index, slaveid, self.now, self.fresh_for);
        let master = live.connected_master.map(|m| self.nickname(m));
        let connected_order = match (live.state, &master) {
            (Liveness::Connected, Some(m)) => Some(format!("0 {m}")),
            (Liveness::Unknown, m) => Some(format!("1 {}", m.as_deref().unwrap_or_default())),
            (Liveness::Disconnected, _) => Some("2".to_owned()),
            _ => None,
        };
        Some(SlaveJudged {
            elsewhere: live.state == Liveness::Connected && master.as_deref() != recorded,
            master,
            connected_order,
            live,
        })
    }

    /// Whether a slave row is connected now: [`Judge::slave`]'s verdict
    /// without the names, for pages that only count.
    pub(super) fn is_connected(&self, row: &Row) -> bool {
        int(row, "slaveid")
            .and_then(|id| i32::try_from(id).ok())
            .is_some_and(|id| slave_live(&self.index, id, self.now, self.fresh_for).state == Liveness::Connected)
    }

    /// What a poll said of a master with `http_port`: `None` when it was
    /// never polled, or cannot be (no web page, so no data API).
    pub(super) fn master(&self, masterid: Option<i64>, http_port: i64) -> Option<&'a MasterStatus> {
        let id = MasterId::try_from(masterid?).ok()?;
        self.index.masters.get(&id).copied().filter(|_| http_port != 0)
    }

    /// Whether a master that answered at `last_success` did so within the
    /// freshness window.
    pub(super) fn is_fresh(&self, last_success: Option<SystemTime>) -> bool {
        last_success.is_some_and(|t| age(self.now, t) < self.fresh_for)
    }
}

/// The `stale` filter: not connected and not seen for an age, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stale {
    /// Not seen connected for this long (never seen included), as the
    /// API's `stale=7d`.
    For(Duration),
    /// Never seen connected by any poll.
    Never,
}

impl Stale {
    /// `never`, or an age like `7d`; anything else is no filter.
    pub(super) fn parse(text: &str) -> Option<Self> {
        match text {
            "never" => Some(Stale::Never),
            _ => parse_age(text).ok().map(Stale::For),
        }
    }

    pub(super) fn keeps(self, slave: &SlaveJudged, now: SystemTime) -> bool {
        slave.live.state != Liveness::Connected
            && match self {
                Stale::For(older_than) => is_stale(slave.live.last_seen, now, older_than),
                Stale::Never => slave.live.last_seen.is_none(),
            }
    }
}

/// A master's live status as its row shows it.
#[derive(Debug, Clone, Serialize)]
pub(super) struct MasterLiveCell {
    /// `reachable`, `unreachable` or `not polled`.
    pub(super) state: &'static str,
    /// Why it was not polled, when not.
    pub(super) why_not: Option<&'static str>,
    pub(super) unreachable_since: Option<Moment>,
    pub(super) error: Option<String>,
    pub(super) last_poll: Option<Moment>,
    pub(super) last_success: Option<Moment>,
    pub(super) poll_millis: u64,
    /// Whether its last answer is within the freshness window.
    pub(super) fresh: bool,
}

impl MasterLiveCell {
    pub(super) fn new(judge: &Judge<'_>, status: Option<&MasterStatus>, http_port: i64) -> Self {
        let moment = |t: Option<SystemTime>| t.map(|t| Moment::new(judge.now, t));
        let Some(s) = status else {
            return Self {
                state: "not polled",
                why_not: Some(if http_port == 0 {
                    "http_port is 0: it has no web page, so no data API to poll"
                } else {
                    "no poll of this master has been recorded yet"
                }),
                unreachable_since: None,
                error: None,
                last_poll: None,
                last_success: None,
                poll_millis: 0,
                fresh: false,
            };
        };
        Self {
            state: if s.reachable { "reachable" } else { "unreachable" },
            why_not: None,
            unreachable_since: moment(s.unreachable_since.filter(|_| !s.reachable)),
            error: s.error.clone().filter(|_| !s.reachable),
            last_poll: moment(s.last_poll),
            last_success: moment(s.last_success),
            poll_millis: s.poll_millis,
            fresh: judge.is_fresh(s.last_success),
        }
    }
}
