//! `GET /ui/audit`: the audit log, with the rows it names, filtered as
//! `GET /api/audit` filters (table, row, since, until, actor, kind) and paged
//! with the same cursor: the id the page before ended at.

use slavealloc_domain::audit::AuditKind;
use slavealloc_domain::lifecycle::LIFECYCLE_KEY;

use super::*;

/// The audit page's default and largest number of entries.
const AUDIT_DEFAULT: u32 = 100;
const AUDIT_MAX: u32 = 1000;

#[derive(Debug, Serialize)]
pub(super) struct AuditView {
    id: i64,
    at: String,
    actor: String,
    table: String,
    row_id: i64,
    /// The row's name (slave name, master nickname, ...), when known.
    row_name: Option<String>,
    /// This row's history.
    row_href: String,
    /// `"created"`, `"deleted"`, `"changed"`, `"allocated"` for a change
    /// of a slave's current master only, or `"lifecycle"` for a drain, a
    /// disable with a note, or their end.
    kind: &'static str,
    /// What a lifecycle entry says happened (`drained: upgrade (until
    /// ...)`, `resumed: released`).
    lifecycle: Option<String>,
    changes: Vec<Change>,
}

#[derive(Debug, Serialize)]
pub(super) struct Change {
    column: String,
    old: Option<String>,
    new: Option<String>,
}

/// Reads audit entries and names what they refer to.
pub(super) async fn audit_view(ui: &Ui, q: AuditQuery) -> Result<Vec<AuditView>, StoreError> {
    let entries = ui.inventory.store().audit(q).await?;
    // Name every table the entries touch or refer to, each listed once.
    let mut tables = BTreeSet::new();
    for e in &entries {
        let Ok(table) = e.entry.table_name.parse::<Table>() else {
            continue;
        };
        tables.insert(table);
        for row in [&e.entry.old_values, &e.entry.new_values].into_iter().flatten() {
            for col in row.keys() {
                if let Some(Kind::Ref(target)) = table.column(col).map(|c| c.kind) {
                    tables.insert(target);
                }
            }
        }
    }
    let tables: Vec<Table> = tables.into_iter().collect();
    let names = Lookups::load(ui, &tables).await?;
    let audit_path = ui_path(ui, "audit");

    Ok(entries.iter().map(|e| entry_view(e, &names, &audit_path)).collect())
}

fn entry_view(entry: &AuditEntry, names: &Lookups, audit_path: &str) -> AuditView {
    let e = &entry.entry;
    let table = e.table_name.parse::<Table>().ok();
    let fmt = |col: &str, v: &Value| -> String {
        let referenced = table.and_then(|t| t.column(col)).and_then(|c| match c.kind {
            Kind::Ref(target) => Some(target),
            _ => None,
        });
        match (referenced, v) {
            (Some(target), Value::Int(id)) => match names.name_of(target, *id) {
                Some(n) => format!("{n} (#{id})"),
                None => format!("#{id}"),
            },
            (_, Value::Null) => "∅".to_owned(),
            _ => display(v),
        }
    };
    let keys: BTreeSet<&String> = e
        .old_values
        .iter()
        .chain(&e.new_values)
        .flat_map(|r| r.keys())
        .collect();
    let changes: Vec<Change> = keys
        .into_iter()
        .map(|k| Change {
            column: k.clone(),
            old: e.old_values.as_ref().and_then(|r| r.get(k)).map(|v| fmt(k, v)),
            new: e.new_values.as_ref().and_then(|r| r.get(k)).map(|v| fmt(k, v)),
        })
        .collect();
    // A drain, a disable with a note or their end says what happened under
    // its own key: shown as the entry's text, not as a column.
    let lifecycle = (AuditKind::of(e) == AuditKind::Lifecycle)
        .then(|| e.new_values.as_ref()?.get(LIFECYCLE_KEY).map(display))
        .flatten();
    let changes: Vec<Change> = changes.into_iter().filter(|c| c.column != LIFECYCLE_KEY).collect();
    let kind = match (&e.old_values, &e.new_values) {
        _ if lifecycle.is_some() => "lifecycle",
        (None, Some(_)) => "created",
        (Some(_), None) => "deleted",
        _ if changes.len() == 1 && changes[0].column == "current_masterid" => "allocated",
        _ => "changed",
    };
    // A deleted row is named from the values it had.
    let own_name = table.and_then(|t| {
        let name_col = t.name_column()?;
        names
            .name_of(t, e.row_id)
            .map(str::to_owned)
            .or_else(|| e.old_values.as_ref()?.get(name_col)?.as_text().map(str::to_owned))
    });
    AuditView {
        id: entry.id,
        at: e.at.clone(),
        actor: e.actor.clone(),
        table: e.table_name.clone(),
        row_id: e.row_id,
        row_name: own_name,
        row_href: href(
            audit_path,
            &query(&[("table", &e.table_name), ("row", &e.row_id.to_string())]),
        ),
        kind,
        lifecycle,
        changes,
    }
}

/// The audit page's filters as given, each kept as text so that the form
/// shows what was typed, even when it is refused.
#[derive(Debug, Default, Serialize)]
struct AuditFilters {
    table: String,
    /// An id, or a name (of `table`; without one, a slave's, else a
    /// master's). `name=` is read here too, as the API spells it.
    row: String,
    /// An age (`1d`) or a time (`2026-12-01T00:00:00Z`).
    since: String,
    until: String,
    actor: String,
    /// `allocation`, `edit`, `lifecycle` or empty.
    kind: String,
    limit: u32,
    /// The id the page before ended at: entries older than it.
    cursor: String,
}

impl AuditFilters {
    fn parse(p: &Params) -> Self {
        Self {
            table: p.text("table"),
            row: p.get("row").or_else(|| p.get("name")).unwrap_or_default().to_owned(),
            since: p.text("since"),
            until: p.text("until"),
            actor: p.text("actor"),
            kind: p.text("kind"),
            limit: p
                .number("limit")
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(AUDIT_DEFAULT)
                .clamp(1, AUDIT_MAX),
            cursor: p.text("cursor"),
        }
    }

    /// This view's query string, at another cursor.
    fn link(&self, cursor: &str) -> String {
        let limit = if self.limit == AUDIT_DEFAULT {
            String::new()
        } else {
            self.limit.to_string()
        };
        query(&[
            ("table", &self.table),
            ("row", &self.row),
            ("since", &self.since),
            ("until", &self.until),
            ("actor", &self.actor),
            ("kind", &self.kind),
            ("limit", &limit),
            ("cursor", cursor),
        ])
    }

    fn is_filtered(&self) -> bool {
        [
            &self.table,
            &self.row,
            &self.since,
            &self.until,
            &self.actor,
            &self.kind,
        ]
        .iter()
        .any(|v| !v.is_empty())
    }
}

/// A time filter as the API reads it: an age back from `now`, or a time.
fn audit_time(key: &str, text: &str, now: SystemTime) -> Result<Option<SystemTime>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(age) = slavealloc_domain::live::parse_age(text) {
        return Ok(Some(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH)));
    }
    slavealloc_domain::audit::parse_at(text)
        .map(Some)
        .map_err(|_| format!("{key}: {text:?} is neither an age (30m, 2h, 1d) nor a time (2026-12-01T07:00:00Z)."))
}

/// The kinds the page filters on, as (value, label).
const KINDS: [(&str, &str); 3] = [
    ("allocation", "allocations"),
    ("edit", "edits"),
    ("lifecycle", "drains and disables"),
];

/// `GET /ui/audit`.
pub(crate) async fn audit(ui: &Ui, raw: &str) -> Response {
    let f = AuditFilters::parse(&Params::parse(raw));
    let now = SystemTime::now();
    let mut notices = Vec::new();
    let mut table = f.table.parse::<Table>().ok();
    if !f.table.is_empty() && table.is_none() {
        notices.push(format!("There is no table {:?}.", f.table));
    }
    let mut time = |key: &str, text: &str| {
        audit_time(key, text, now).unwrap_or_else(|e| {
            notices.push(e);
            None
        })
    };
    let since = time("since", &f.since);
    let until = time("until", &f.until);
    let kind = AuditKind::parse(&f.kind);
    if !f.kind.is_empty() && kind.is_none() {
        notices.push(format!("kind: {:?} is none of allocation, edit, lifecycle.", f.kind));
    }
    let before = f.cursor.parse::<i64>().ok();
    if !f.cursor.is_empty() && before.is_none() {
        notices.push("cursor: must be the id an earlier page ended at.".to_owned());
    }
    // A row is an id, or a name looked up in the chosen table; without
    // one, a slave's name, else a master's nickname.
    let row_id = if f.row.is_empty() {
        None
    } else if let Ok(id) = f.row.parse::<i64>() {
        Some(id)
    } else {
        let candidates: Vec<Table> = match table {
            Some(t) if t.name_column().is_some() => vec![t],
            Some(_) => Vec::new(),
            None if f.table.is_empty() => vec![Table::Slaves, Table::Masters],
            None => Vec::new(),
        };
        let mut found = None;
        for t in candidates.iter().copied() {
            if let Some(row) = try_page!(ui, ui.inventory.find(t, &f.row).await) {
                found = t.id_column().and_then(|c| int(&row, c)).map(|id| (t, id));
                break;
            }
        }
        match (found, table) {
            (Some((t, id)), _) => {
                table = Some(t);
                Some(id)
            }
            (None, Some(t)) if t.name_column().is_some() => {
                notices.push(format!("There is no {} row named {:?}.", t.name(), f.row));
                None
            }
            (None, Some(_)) => {
                notices.push("This table's rows have no names: give an id.".to_owned());
                None
            }
            (None, None) => {
                if notices.is_empty() {
                    notices.push(format!("No slave or master is named {:?}.", f.row));
                }
                None
            }
        }
    };
    let entries = if notices.is_empty() {
        let q = AuditQuery {
            table,
            row_id,
            since,
            until,
            actor: (!f.actor.is_empty()).then(|| f.actor.clone()),
            kind,
            before,
            limit: f.limit,
        };
        try_page!(ui, audit_view(ui, q).await)
    } else {
        Vec::new()
    };
    let path = ui_path(ui, "audit");
    // A full page may have older entries after it: the next page starts
    // below its last entry.
    let older = (entries.len() == f.limit as usize)
        .then(|| entries.last().map(|e| href(&path, &f.link(&e.id.to_string()))))
        .flatten();
    let newest = before.map(|_| href(&path, &f.link("")));
    let mut tables: Vec<&str> = Table::EXPOSED.iter().map(|t| t.name()).collect();
    tables.push(Table::SlavePasswords.name());
    let mut limits = vec![50, 100, 250, 1000];
    if !limits.contains(&f.limit) {
        limits.push(f.limit);
        limits.sort_unstable();
    }
    let ctx = minijinja::context! {
        page => "audit",
        title => "Audit",
        entries => entries,
        tables => tables,
        kinds => KINDS,
        notice => (!notices.is_empty()).then(|| notices.join(" ")),
        filtered => f.is_filtered(),
        older_href => older,
        newest_href => newest,
        f => f,
        limits => limits,
        clear_href => path,
    };
    ui.render(StatusCode::OK, "audit.html", ctx)
}
