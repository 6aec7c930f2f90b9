//! Drains and disables with a reason and an end: *holds*.
//!
//! A hold takes a master or a slave out of service with a note, the actor
//! who asked, when, and optionally until when. The original's `enabled`
//! column stays the switch everything reads (the original UI, `runslave.py`,
//! the allocation rule): holding a row sets `enabled = 0`, releasing it sets
//! `enabled = 1`. The note, actor, start, end and how the hold ended live in
//! the rebuild's own `holds` table.
//!
//! A hold with an end is released by whichever daemon first sees the end
//! pass ([`LifecycleStore::resume_due`]); the store ends the hold with a
//! conditional write, so that with several daemons on one database the row
//! is enabled and audited exactly once.
//!
//! Each change a hold makes is audited like any edit of `masters` or
//! `slaves`, with one more key in the entry's new values,
//! [`LIFECYCLE_KEY`], saying what happened (`drained: upgrade (until
//! 2026-12-02T10:00:00Z)`, `resumed: until reached`): that key is what makes
//! an entry a [`crate::audit::AuditKind::Lifecycle`] one.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::audit::{format_at, Actor, NewAuditEntry};
use crate::error::StoreError;
use crate::schema::{Row, Table, Value};

/// The audit entry key that marks a lifecycle entry and says what happened.
pub const LIFECYCLE_KEY: &str = "lifecycle";

/// The longest note a hold keeps: a reason, not a document.
pub const MAX_NOTE: usize = 1000;

/// What a hold holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldTarget {
    /// A master: drained, no slave is newly given it.
    Master,
    /// A slave: disabled, its tac starts no worker.
    Slave,
}

impl HoldTarget {
    /// The original's table whose `enabled` column the hold switches.
    pub fn table(self) -> Table {
        match self {
            HoldTarget::Master => Table::Masters,
            HoldTarget::Slave => Table::Slaves,
        }
    }

    /// As stored in `holds.target`.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldTarget::Master => "master",
            HoldTarget::Slave => "slave",
        }
    }

    /// Reads [`HoldTarget::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "master" => Some(HoldTarget::Master),
            "slave" => Some(HoldTarget::Slave),
            _ => None,
        }
    }

    /// The verb a person uses for holding one.
    fn verb(self) -> &'static str {
        match self {
            HoldTarget::Master => "drained",
            HoldTarget::Slave => "disabled",
        }
    }
}

/// What a person asks for when holding a master or slaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewHold {
    /// Why (required, at most [`MAX_NOTE`] characters).
    pub note: String,
    /// When the hold ends by itself; `None` holds until released.
    pub until: Option<SystemTime>,
    /// A master only: ask its Buildbot to shut its connected workers down
    /// gracefully, a few at a time, so that they move with nobody touching
    /// them.
    pub graceful: bool,
    /// Other checked columns written with `enabled`, in the same
    /// transaction (the original CLI's `disable -m` replaces the notes).
    #[serde(default)]
    pub also: Row,
}

impl NewHold {
    /// The open hold this makes of row `target_id`, started by `actor`
    /// (id 0 until the store gives it one).
    pub fn opened(&self, target: HoldTarget, target_id: i32, actor: &Actor) -> Hold {
        Hold {
            id: 0,
            target,
            target_id,
            note: self.note.clone(),
            actor: actor.name.clone(),
            started: actor.at,
            until: self.until,
            graceful: self.graceful,
            ended: None,
        }
    }

    /// Checks the hold against `now`.
    ///
    /// # Errors
    /// An empty or overlong note, an end not in the future, or a graceful
    /// hold of a slave; the message names the field.
    pub fn check(&self, target: HoldTarget, now: SystemTime) -> Result<(), String> {
        if self.note.trim().is_empty() {
            return Err("note: say why (-m NOTE), so that whoever finds it knows".to_owned());
        }
        if self.note.chars().count() > MAX_NOTE {
            return Err(format!("note: at most {MAX_NOTE} characters"));
        }
        if self.note.chars().any(char::is_control) {
            return Err("note: one line, no control characters".to_owned());
        }
        if self.until.is_some_and(|u| u <= now) {
            return Err("until: the end must be in the future".to_owned());
        }
        if self.graceful && target == HoldTarget::Slave {
            return Err("graceful: only a master's drain is graceful".to_owned());
        }
        Ok(())
    }
}

/// How a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Released by a person (`undrain`, `enable`).
    Released,
    /// Its end passed; released by a daemon.
    UntilReached,
    /// A newer hold of the same row replaced it.
    Superseded,
}

impl EndReason {
    /// As stored in `holds.end_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Released => "released",
            EndReason::UntilReached => "until_reached",
            EndReason::Superseded => "superseded",
        }
    }

    /// Reads [`EndReason::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "released" => Some(EndReason::Released),
            "until_reached" => Some(EndReason::UntilReached),
            "superseded" => Some(EndReason::Superseded),
            _ => None,
        }
    }
}

/// The end of a hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    /// When.
    pub at: SystemTime,
    /// Who: a person, or `slavealloc` for an end that passed.
    pub by: String,
    /// How.
    pub reason: EndReason,
}

/// One hold, open or ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Primary key of `holds`.
    pub id: i64,
    /// A master or a slave.
    pub target: HoldTarget,
    /// Its id (`masterid` or `slaveid`).
    pub target_id: i32,
    /// Why.
    pub note: String,
    /// Who asked.
    pub actor: String,
    /// Since when.
    pub started: SystemTime,
    /// Until when, if it ends by itself.
    pub until: Option<SystemTime>,
    /// Whether the master's workers are being shut down gracefully.
    pub graceful: bool,
    /// How it ended; `None` while it holds.
    pub ended: Option<Ended>,
}

impl Hold {
    /// Whether it still holds.
    pub fn is_open(&self) -> bool {
        self.ended.is_none()
    }

    /// Whether its end has passed at `now` while it still holds.
    pub fn is_due(&self, now: SystemTime) -> bool {
        self.is_open() && self.until.is_some_and(|u| u <= now)
    }

    /// What the audit entry of its start says.
    pub fn started_text(&self) -> String {
        let until = self
            .until
            .map(|u| format!(" (until {})", format_at(u)))
            .unwrap_or_default();
        let graceful = if self.graceful { " gracefully" } else { "" };
        format!("{}{graceful}: {}{until}", self.target.verb(), self.note)
    }
}

/// A hold as the API shows it: times as `2026-12-02T10:00:00Z`, the
/// row's name beside its id.
pub fn hold_json(hold: &Hold, name: Option<&str>) -> serde_json::Value {
    let time = |t: SystemTime| serde_json::Value::String(format_at(t));
    serde_json::json!({
        "id": hold.id,
        "target": hold.target,
        "target_id": hold.target_id,
        "name": name,
        "note": hold.note,
        "actor": hold.actor,
        "started": time(hold.started),
        "until": hold.until.map(time),
        "graceful": hold.graceful,
        "open": hold.is_open(),
        "ended": hold.ended.as_ref().map(|e| serde_json::json!({
            "at": time(e.at),
            "by": e.by,
            "reason": e.reason,
        })),
    })
}

/// What the audit entry of an end says.
pub fn ended_text(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Released => "resumed: released",
        EndReason::UntilReached => "resumed: until reached",
        EndReason::Superseded => "superseded",
    }
}

/// The actor of an end that passed.
pub const RESUME_ACTOR: &str = "slavealloc";

/// Which holds to read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldQuery {
    /// Only of masters, or only of slaves.
    pub target: Option<HoldTarget>,
    /// Only of this row (with `target`).
    pub target_id: Option<i32>,
    /// Only those still holding.
    pub open_only: bool,
    /// At most this many, newest first (0: no limit).
    pub limit: u32,
}

impl HoldQuery {
    /// Whether `hold` is one this query selects (limit aside): what every
    /// store's filter agrees with.
    pub fn selects(&self, hold: &Hold) -> bool {
        self.target.is_none_or(|t| t == hold.target)
            && self.target_id.is_none_or(|id| id == hold.target_id)
            && (!self.open_only || hold.is_open())
    }
}

/// Adds what happened to an audit entry, making it a lifecycle entry.
pub fn mark(mut entry: NewAuditEntry, what: &str) -> NewAuditEntry {
    entry
        .new_values
        .get_or_insert_with(Row::new)
        .insert(LIFECYCLE_KEY.to_owned(), Value::Text(what.to_owned()));
    entry
}

/// The lifecycle entry of a row whose `enabled` did not change (a hold of
/// a row already disabled, the end of a hold of a row enabled by hand).
pub fn bare_entry(target: HoldTarget, id: i32, what: &str, actor: &Actor) -> NewAuditEntry {
    mark(
        NewAuditEntry {
            at: format_at(actor.at),
            actor: actor.name.clone(),
            table_name: target.table().name().to_owned(),
            row_id: id.into(),
            old_values: None,
            new_values: None,
        },
        what,
    )
}

/// The `enabled` change a hold makes (`false`) or its end makes (`true`),
/// with the other columns written alongside.
pub fn enabled_change(enabled: bool, also: &Row) -> Row {
    let mut changes = also.clone();
    changes.insert("enabled".to_owned(), Value::Bool(enabled));
    changes
}

/// Reads an end as a person gives it: an age from `now` (`2h`, `+5min`,
/// `90m`, `1d`) or a time (`2026-12-02T10:00:00Z`, any RFC 3339 offset).
///
/// # Errors
/// Anything else, with what is understood.
pub fn parse_until(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    let text = text.trim();
    let age = text.strip_prefix('+').unwrap_or(text);
    let age = age
        .strip_suffix("min")
        .map_or_else(|| age.to_owned(), |n| format!("{n}m"));
    if let Ok(d) = crate::live::parse_age(&age) {
        return Ok(now + d);
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|_| {
            format!("until: {text:?} is neither an age (30m, +5min, 2h, 1d) nor a time (2026-12-02T10:00:00Z)")
        })
}

/// How long until `until` from `now` (zero once passed).
pub fn remaining(until: SystemTime, now: SystemTime) -> Duration {
    until.duration_since(now).unwrap_or_default()
}

/// The workers of a gracefully drained master to ask to shut down now.
/// `connected` are the names its Buildbot lists as connected, `asked` those
/// already asked: an asked worker still connected is still finishing its
/// build, and at most `pace` are at once, so that the rest of the master
/// keeps building meanwhile. In name order, so that a drain goes the same
/// way every time.
pub fn graceful_asks<'a>(
    connected: &'a [String],
    asked: &std::collections::HashSet<String>,
    pace: usize,
) -> Vec<&'a str> {
    let mut waiting: Vec<&str> = connected
        .iter()
        .map(String::as_str)
        .filter(|w| !asked.contains(*w))
        .collect();
    waiting.sort_unstable();
    waiting.dedup();
    let in_flight = connected.iter().filter(|w| asked.contains(*w)).count();
    waiting.truncate(pace.saturating_sub(in_flight));
    waiting
}

/// Holds and their ends, for every store. Each call is one transaction
/// together with the `enabled` writes and audit entries it makes.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait LifecycleStore: Send + Sync {
    /// Holds these rows: each gets `enabled = 0` and a new open hold (an
    /// open hold it had ends as superseded), and one lifecycle audit entry.
    /// All or nothing: an id without a row fails the whole call.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for a missing row; [`StoreError::Unavailable`]
    /// or [`StoreError::Other`]; nothing written.
    async fn hold(
        &self,
        target: HoldTarget,
        ids: &[i32],
        hold: &NewHold,
        actor: Actor,
    ) -> Result<Vec<Hold>, StoreError>;

    /// Ends the open holds of these rows and enables them (`enabled = 1`),
    /// whether or not they were held; answers the holds it ended. Enabling a
    /// row already enabled and not held writes nothing.
    ///
    /// # Errors
    /// As for [`LifecycleStore::hold`].
    async fn release(&self, target: HoldTarget, ids: &[i32], also: &Row, actor: Actor)
        -> Result<Vec<Hold>, StoreError>;

    /// Holds, newest first.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Other`].
    async fn holds(&self, query: &HoldQuery) -> Result<Vec<Hold>, StoreError>;

    /// Ends every open hold whose end is at or before `now` and enables its
    /// row, each exactly once however many daemons call this at the same
    /// time (audited by [`RESUME_ACTOR`] as `resumed: until reached`);
    /// answers the holds this call ended.
    ///
    /// # Errors
    /// As for [`LifecycleStore::holds`]; holds ended before the error stay
    /// ended.
    async fn resume_due(&self, now: SystemTime) -> Result<Vec<Hold>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_666_000)
    }

    #[test]
    fn until_reads_ages_and_times() {
        assert_eq!(parse_until("2h", now()), Ok(now() + Duration::from_secs(7200)));
        assert_eq!(parse_until("+5min", now()), Ok(now() + Duration::from_secs(300)));
        assert_eq!(parse_until("90m", now()), Ok(now() + Duration::from_secs(5400)));
        let t = parse_until("2026-12-02T10:00:00Z", now()).unwrap();
        assert_eq!(format_at(t), "2026-12-02T10:00:00Z");
        let t = parse_until("2026-12-02T12:00:00+02:00", now()).unwrap();
        assert_eq!(format_at(t), "2026-12-02T10:00:00Z");
        let e = parse_until("tomorrow", now()).unwrap_err();
        assert!(e.contains("neither an age"), "{e}");
        assert!(parse_until("0m", now()).is_err());
    }

    #[test]
    fn a_hold_needs_a_note_and_a_future_end() {
        let hold = |note: &str, until: Option<SystemTime>, graceful| NewHold {
            note: note.to_owned(),
            until,
            graceful,
            also: Row::new(),
        };
        let m = HoldTarget::Master;
        assert!(hold("upgrade", Some(now() + Duration::from_secs(1)), true)
            .check(m, now())
            .is_ok());
        assert!(hold("  ", None, false).check(m, now()).unwrap_err().starts_with("note"));
        assert!(hold("x", Some(now()), false)
            .check(m, now())
            .unwrap_err()
            .starts_with("until"));
        assert!(hold("a\nb", None, false).check(m, now()).is_err());
        assert!(hold(&"x".repeat(MAX_NOTE + 1), None, false).check(m, now()).is_err());
        assert!(hold("x", None, true)
            .check(HoldTarget::Slave, now())
            .unwrap_err()
            .starts_with("graceful"));
    }

    #[test]
    fn the_start_text_says_note_end_and_grace() {
        let h = Hold {
            id: 1,
            target: HoldTarget::Master,
            target_id: 2,
            note: "upgrade".into(),
            actor: "relops".into(),
            started: now(),
            until: Some(now() + Duration::from_secs(3600)),
            graceful: true,
            ended: None,
        };
        assert_eq!(
            h.started_text(),
            "drained gracefully: upgrade (until 2025-12-02T10:00:00Z)"
        );
        assert!(!h.is_due(now()));
        assert!(h.is_due(now() + Duration::from_secs(3600)));
    }

    #[test]
    fn a_graceful_drain_asks_a_few_workers_at_a_time() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
        let connected = names(&["w4", "w2", "w1", "w3"]);
        let none = std::collections::HashSet::new();
        assert_eq!(graceful_asks(&connected, &none, 2), ["w1", "w2"]);
        let asked: std::collections::HashSet<String> = names(&["w1", "w2"]).into_iter().collect();
        assert!(graceful_asks(&connected, &asked, 2).is_empty(), "two still finishing");
        let connected = names(&["w4", "w2", "w3"]);
        assert_eq!(graceful_asks(&connected, &asked, 2), ["w3"], "w1 left: one more");
        assert_eq!(graceful_asks(&[], &asked, 2), Vec::<&str>::new());
    }

    #[test]
    fn marking_makes_a_lifecycle_entry() {
        let actor = Actor {
            name: "relops".into(),
            at: now(),
        };
        let e = bare_entry(HoldTarget::Slave, 7, "disabled: broken disk", &actor);
        assert_eq!(e.table_name, "slaves");
        assert_eq!(
            e.new_values.unwrap().get(LIFECYCLE_KEY),
            Some(&Value::Text("disabled: broken disk".into()))
        );
    }
}
