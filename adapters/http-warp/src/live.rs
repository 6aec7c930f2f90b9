//! The live fleet in the API: the `live` object of slave and master rows,
//! the live filters of `/api/slaves`, and `/api/drift`.
//!
//! The rows stay the original's (the original UI PUTs them back whole, and
//! a key that is not a column is ignored); `live` is one more key beside
//! them, computed from [`LiveState`] at the moment of the request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value as Json};
use slavealloc_domain::audit::format_at;
use slavealloc_domain::live::{is_stale, parse_age, slave_live, LiveIndex, LiveState, Liveness};
use slavealloc_domain::schema::{Row, Value};
use slavealloc_domain::{Host, LiveStore};

use crate::models::ApiError;

/// What the API needs to show the live fleet.
#[derive(Clone)]
pub struct LiveServices {
    /// Where the live state is kept.
    pub store: Arc<dyn LiveStore>,
    /// Facts from a master that has not answered for this long are not
    /// fresh (twice the poll interval, say).
    pub fresh_for: Duration,
    /// The clock the facts are judged by.
    pub host: Arc<dyn Host>,
}

impl std::fmt::Debug for LiveServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveServices")
            .field("fresh_for", &self.fresh_for)
            .finish_non_exhaustive()
    }
}

/// The live filters of `GET /api/slaves`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveFilter {
    /// Current (recorded) master nicknames.
    pub master: Vec<String>,
    /// Nicknames of the masters they are connected to now.
    pub connected_master: Vec<String>,
    /// Connected now (`Some(true)`), or not (`Some(false)`: disconnected,
    /// unknown or never seen).
    pub connected: Option<bool>,
    /// Not seen connected for this long, or never.
    pub stale: Option<Duration>,
}

impl LiveFilter {
    /// The live filters among a query's pairs.
    ///
    /// # Errors
    /// 400 for a `connected` that is not 0 or 1, or a `stale` that is not
    /// an age like `7d`.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let mut f = Self::default();
        for (k, v) in pairs {
            match k.as_str() {
                "master" => f.master.push(v.clone()),
                "connected_master" => f.connected_master.push(v.clone()),
                "connected" => {
                    f.connected = Some(match v.as_str() {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => return Err(ApiError::bad_request("connected: must be 0 or 1")),
                    })
                }
                "stale" => f.stale = Some(parse_age(v).map_err(|e| ApiError::bad_request(format!("stale: {e}")))?),
                _ => {}
            }
        }
        Ok(f)
    }

    /// Whether it filters on live facts at all (and so needs them).
    pub fn needs_live(&self) -> bool {
        !self.connected_master.is_empty() || self.connected.is_some() || self.stale.is_some()
    }

    /// Whether it filters at all.
    pub fn is_empty(&self) -> bool {
        self.master.is_empty() && !self.needs_live()
    }
}

/// Judges live facts at one moment, with master nicknames at hand.
pub(crate) struct Judge<'a> {
    index: LiveIndex<'a>,
    nicknames: HashMap<i32, String>,
    now: SystemTime,
    fresh_for: Duration,
}

fn int(row: &Row, column: &str) -> Option<i64> {
    row.get(column).and_then(Value::as_int)
}

fn id32(row: &Row, column: &str) -> Option<i32> {
    int(row, column).and_then(|v| i32::try_from(v).ok())
}

impl<'a> Judge<'a> {
    /// A judge of `state` at `now`; `masters` are rows with `masterid` and
    /// `nickname`.
    pub(crate) fn new(state: &'a LiveState, masters: &[Row], now: SystemTime, fresh_for: Duration) -> Self {
        let nicknames = masters
            .iter()
            .filter_map(|m| Some((id32(m, "masterid")?, m.get("nickname")?.as_text()?.to_owned())))
            .collect();
        Self {
            index: state.index(),
            nicknames,
            now,
            fresh_for,
        }
    }

    fn nickname(&self, id: Option<i32>) -> Json {
        id.map_or(Json::Null, |id| {
            Json::String(self.nicknames.get(&id).cloned().unwrap_or_else(|| id.to_string()))
        })
    }

    /// The `live` object of a slave row.
    pub(crate) fn slave(&self, row: &Row) -> Json {
        let Some(slaveid) = id32(row, "slaveid") else {
            return Json::Null;
        };
        let live = slave_live(&self.index, slaveid, self.now, self.fresh_for);
        let mut object = match serde_json::to_value(&live) {
            Ok(Json::Object(o)) => o,
            _ => Map::new(),
        };
        object.insert("connected_masterid".to_owned(), json!(live.connected_master));
        object.insert("connected_master".to_owned(), self.nickname(live.connected_master));
        Json::Object(object)
    }

    /// The `live` object of a master row.
    pub(crate) fn master(&self, row: &Row) -> Json {
        let status = id32(row, "masterid").and_then(|id| self.index.masters.get(&id));
        let Some(s) = status else {
            return json!({"polled": false, "reachable": null, "last_poll": null, "last_success": null,
                          "error": null, "connected": null, "buildbot_version": null, "fresh": false});
        };
        let at = |t: Option<SystemTime>| t.map(format_at);
        json!({
            "polled": true,
            "reachable": s.reachable,
            "last_poll": at(s.last_poll),
            "last_success": at(s.last_success),
            "unreachable_since": at(s.unreachable_since),
            "error": s.error,
            "connected": s.connected,
            "buildbot_version": s.buildbot_version,
            "poll_ms": s.poll_millis,
            "fresh": s.last_success.is_some_and(|t| slavealloc_domain::live::age(self.now, t) < self.fresh_for),
        })
    }

    /// Whether a slave row passes the live filters.
    pub(crate) fn keeps(&self, filter: &LiveFilter, row: &Row) -> bool {
        let text = |c: &str| row.get(c).and_then(Value::as_text).unwrap_or_default();
        if !filter.master.is_empty() && !filter.master.iter().any(|m| m == text("current_master")) {
            return false;
        }
        if !filter.needs_live() {
            return true;
        }
        let Some(slaveid) = id32(row, "slaveid") else {
            return false;
        };
        let live = slave_live(&self.index, slaveid, self.now, self.fresh_for);
        let connected = live.state == Liveness::Connected;
        if filter.connected.is_some_and(|want| want != connected) {
            return false;
        }
        if !filter.connected_master.is_empty() {
            let on = live
                .connected_master
                .filter(|_| connected)
                .and_then(|m| self.nicknames.get(&m));
            if !on.is_some_and(|n| filter.connected_master.contains(n)) {
                return false;
            }
        }
        filter
            .stale
            .is_none_or(|age| !connected && is_stale(live.last_seen, self.now, age))
    }
}

/// Rows as JSON objects, each with `live` beside its columns.
pub(crate) fn with_live(rows: Vec<Row>, live: impl Fn(&Row) -> Json) -> Vec<Json> {
    rows.into_iter()
        .map(|row| {
            let extra = live(&row);
            let mut object: Map<String, Json> = row
                .into_iter()
                .map(|(k, v)| (k, serde_json::to_value(v).unwrap_or(Json::Null)))
                .collect();
            object.insert("live".to_owned(), extra);
            Json::Object(object)
        })
        .collect()
}
