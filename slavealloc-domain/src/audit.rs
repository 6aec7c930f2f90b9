//! The audit log: who changed which row, when, from what to what.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::error::StoreError;
use crate::schema::{Row, Table, Value};

/// Who did a write, and when: stamped on the audit entry the store appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// A token's name, or the client's remote address.
    pub name: String,
    /// When.
    pub at: SystemTime,
}

/// `audit_log.at`: UTC, second precision, so that text order is time order
/// on every backend.
const AT_FORMAT: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// Formats a time as stored in `audit_log.at`.
pub fn format_at(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(AT_FORMAT)
        .unwrap_or_else(|_| "0000-00-00T00:00:00Z".to_owned())
}

/// One stored audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Primary key, increasing.
    pub id: i64,
    /// The entry's content.
    #[serde(flatten)]
    pub entry: NewAuditEntry,
}

/// An audit entry before the store gives it an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    /// When, as [`format_at`] writes it.
    pub at: String,
    /// A token's name, a remote address, or the command that wrote.
    pub actor: String,
    /// The table written.
    pub table_name: String,
    /// The id of the row written (0 for `slave_passwords`, which has none).
    pub row_id: i64,
    /// The changed columns before (the whole row for a delete; none for a
    /// create).
    pub old_values: Option<Row>,
    /// The changed columns after (the whole row for a create; none for a
    /// delete).
    pub new_values: Option<Row>,
}

impl AuditEntry {
    /// An `audit_log` row (as stores and dumps hold it: the changes as JSON
    /// text) as an entry.
    ///
    /// # Errors
    /// [`StoreError::Other`] for a row without an id or whose values are not
    /// JSON objects: a broken database, not a panic.
    pub fn from_row(row: &Row) -> Result<Self, StoreError> {
        let text = |c: &str| row.get(c).and_then(Value::as_text).unwrap_or_default().to_owned();
        let int = |c: &str| row.get(c).and_then(Value::as_int);
        let json = |c: &str| -> Result<Option<Row>, StoreError> {
            match row.get(c) {
                Some(Value::Text(t)) => serde_json::from_str(t)
                    .map(Some)
                    .map_err(|e| StoreError::Other(format!("audit_log {c} is not a JSON object: {e}"))),
                _ => Ok(None),
            }
        };
        Ok(AuditEntry {
            id: int("id").ok_or_else(|| StoreError::Other("an audit_log row without id".to_owned()))?,
            entry: NewAuditEntry {
                at: text("at"),
                actor: text("actor"),
                table_name: text("table_name"),
                row_id: int("row_id").unwrap_or_default(),
                old_values: json("old_values")?,
                new_values: json("new_values")?,
            },
        })
    }

    /// The entry as an `audit_log` row: what [`AuditEntry::from_row`] reads.
    ///
    /// # Errors
    /// [`StoreError::Other`] if a value cannot be written as JSON.
    pub fn to_row(&self) -> Result<Row, StoreError> {
        let json = |v: &Option<Row>| -> Result<Value, StoreError> {
            v.as_ref().map_or(Ok(Value::Null), |r| {
                serde_json::to_string(r)
                    .map(Value::Text)
                    .map_err(|e| StoreError::Other(e.to_string()))
            })
        };
        let e = &self.entry;
        Ok([
            ("id".to_owned(), Value::Int(self.id)),
            ("at".to_owned(), Value::Text(e.at.clone())),
            ("actor".to_owned(), Value::Text(e.actor.clone())),
            ("table_name".to_owned(), Value::Text(e.table_name.clone())),
            ("row_id".to_owned(), Value::Int(e.row_id)),
            ("old_values".to_owned(), json(&e.old_values)?),
            ("new_values".to_owned(), json(&e.new_values)?),
        ]
        .into())
    }
}

impl NewAuditEntry {
    /// The entry for a write of one row: a create (`old` is `None`), a
    /// delete (`new` is `None`) or an update, where only the columns whose
    /// value changed are kept. `None` when an update changed nothing.
    pub fn for_write(table: Table, row_id: i64, old: Option<&Row>, new: Option<&Row>, actor: &Actor) -> Option<Self> {
        let (old_values, new_values) = match (old, new) {
            (Some(old), Some(new)) => {
                let changed = |k: &String| old.get(k) != new.get(k);
                let keys: Vec<&String> = old.keys().chain(new.keys()).filter(|k| changed(k)).collect();
                if keys.is_empty() {
                    return None;
                }
                let pick = |row: &Row| -> Row {
                    keys.iter()
                        .map(|k| ((*k).clone(), row.get(*k).cloned().unwrap_or(Value::Null)))
                        .collect()
                };
                (Some(pick(old)), Some(pick(new)))
            }
            (old, new) => (old.cloned(), new.cloned()),
        };
        Some(Self {
            at: format_at(actor.at),
            actor: actor.name.clone(),
            table_name: table.name().to_owned(),
            row_id,
            old_values,
            new_values,
        })
    }
}

/// A filter on the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Only entries of this table.
    pub table: Option<Table>,
    /// Only entries of this row id.
    pub row_id: Option<i64>,
    /// Only entries written at or after this time (to the second, as `at`
    /// is stored), so that "the last hour" reads the last hour, not the
    /// whole log.
    pub since: Option<SystemTime>,
    /// Only entries written at or before this time (to the second).
    #[serde(default)]
    pub until: Option<SystemTime>,
    /// Only entries of this actor (a token's name, an address, `gettac`).
    #[serde(default)]
    pub actor: Option<String>,
    /// Only allocations, or only edits.
    #[serde(default)]
    pub kind: Option<AuditKind>,
    /// Only entries older than this entry id: the cursor of the next page
    /// (the id of the last entry of the page before).
    #[serde(default)]
    pub before: Option<i64>,
    /// At most this many (the API caps it).
    pub limit: u32,
}

/// The actor of every allocation's audit entry; no token may have it as its
/// name, so that an entry by it is an allocation.
pub const ALLOCATION_ACTOR: &str = "gettac";

/// What kind of write an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditKind {
    /// A slave given another master by `/gettac` (actor [`ALLOCATION_ACTOR`]).
    Allocation,
    /// Anything a person or a tool wrote, holds aside.
    Edit,
    /// A drain, a disable with a note, or their end (an entry whose new
    /// values carry [`crate::lifecycle::LIFECYCLE_KEY`]).
    Lifecycle,
}

impl AuditKind {
    /// The kind of an entry.
    pub fn of(entry: &NewAuditEntry) -> Self {
        if entry.actor == ALLOCATION_ACTOR {
            AuditKind::Allocation
        } else if entry
            .new_values
            .as_ref()
            .is_some_and(|v| v.contains_key(crate::lifecycle::LIFECYCLE_KEY))
        {
            AuditKind::Lifecycle
        } else {
            AuditKind::Edit
        }
    }

    /// Reads `allocation`, `edit` or `lifecycle`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "allocation" => Some(AuditKind::Allocation),
            "edit" => Some(AuditKind::Edit),
            "lifecycle" => Some(AuditKind::Lifecycle),
            _ => None,
        }
    }
}

/// The text every lifecycle entry's stored `new_values` JSON contains (and
/// no other entry's: a `"` inside a value is escaped), for stores that
/// filter on the text.
pub fn lifecycle_marker() -> String {
    format!("%\"{}\":%", crate::lifecycle::LIFECYCLE_KEY)
}

impl AuditQuery {
    /// Whether `entry` is one this query selects (limit aside): what every
    /// store's filter must agree with.
    pub fn selects(&self, entry: &AuditEntry) -> bool {
        let e = &entry.entry;
        self.table.is_none_or(|t| t.name() == e.table_name)
            && self.row_id.is_none_or(|id| id == e.row_id)
            && self
                .since
                .is_none_or(|since| e.at.as_str() >= format_at(since).as_str())
            && self
                .until
                .is_none_or(|until| e.at.as_str() <= format_at(until).as_str())
            && self.actor.as_ref().is_none_or(|a| *a == e.actor)
            && self.kind.is_none_or(|k| k == AuditKind::of(e))
            && self.before.is_none_or(|b| entry.id < b)
    }
}

/// Reads a time as stored in `audit_log.at` (`2026-11-30T07:00:00Z`).
///
/// # Errors
/// Any other spelling.
pub fn parse_at(text: &str) -> Result<SystemTime, String> {
    time::PrimitiveDateTime::parse(text, AT_FORMAT)
        .map(|t| t.assume_utc().into())
        .map_err(|e| format!("{text:?} is not a time like 2026-11-30T07:00:00Z ({e})"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn actor() -> Actor {
        Actor {
            name: "relops".into(),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_080_000),
        }
    }

    fn row(pairs: &[(&str, Value)]) -> Row {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    #[test]
    fn update_keeps_only_changed_columns() {
        let old = row(&[
            ("poolid", Value::Int(1)),
            ("enabled", Value::Bool(true)),
            ("basedir", Value::Text("/b".into())),
        ]);
        let new = row(&[
            ("poolid", Value::Int(2)),
            ("enabled", Value::Bool(true)),
            ("basedir", Value::Text("/b".into())),
        ]);
        let e = NewAuditEntry::for_write(Table::Slaves, 7, Some(&old), Some(&new), &actor()).unwrap();
        assert_eq!(e.old_values, Some(row(&[("poolid", Value::Int(1))])));
        assert_eq!(e.new_values, Some(row(&[("poolid", Value::Int(2))])));
        assert_eq!(e.at, "2025-11-25T14:13:20Z");
        assert_eq!(
            (e.table_name.as_str(), e.row_id, e.actor.as_str()),
            ("slaves", 7, "relops")
        );
        assert!(NewAuditEntry::for_write(Table::Slaves, 7, Some(&old), Some(&old), &actor()).is_none());
    }

    #[test]
    fn create_and_delete_keep_the_whole_row() {
        let r = row(&[("name", Value::Text("p".into()))]);
        let c = NewAuditEntry::for_write(Table::Pools, 1, None, Some(&r), &actor()).unwrap();
        assert_eq!((c.old_values, c.new_values), (None, Some(r.clone())));
        let d = NewAuditEntry::for_write(Table::Pools, 1, Some(&r), None, &actor()).unwrap();
        assert_eq!((d.old_values, d.new_values), (Some(r), None));
    }
}
