//! `GET /ui/audit`: the audit log, with the rows it names.

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
    /// `"created"`, `"deleted"`, `"changed"`, or `"allocated"` for a change
    /// of a slave's current master only.
    kind: &'static str,
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
    let kind = match (&e.old_values, &e.new_values) {
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
        changes,
    }
}

/// `GET /ui/audit`.
pub(crate) async fn audit(ui: &Ui, raw: &str) -> Response {
    let p = Params::parse(raw);
    let table_name = p.text("table");
    let row = p.text("row");
    let limit = p
        .number("limit")
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(AUDIT_DEFAULT)
        .clamp(1, AUDIT_MAX);
    let table = table_name.parse::<Table>().ok();
    let mut notice = None;
    if !table_name.is_empty() && table.is_none() {
        notice = Some(format!("There is no table {table_name:?}."));
    }
    // A row is an id, or a name looked up in the chosen table.
    let row_id = if row.is_empty() {
        None
    } else if let Ok(id) = row.parse::<i64>() {
        Some(id)
    } else {
        match table.filter(|t| t.name_column().is_some()) {
            Some(t) => match try_page!(ui, ui.inventory.find(t, &row).await) {
                Some(found) => t.id_column().and_then(|c| int(&found, c)),
                None => {
                    notice = Some(format!("There is no {} row named {row:?}.", t.name()));
                    None
                }
            },
            None => {
                notice = Some("To find a row by name, choose its table first.".to_owned());
                None
            }
        }
    };
    let entries = if notice.is_some() {
        Vec::new()
    } else {
        let q = AuditQuery {
            table,
            row_id,
            since: None,
            limit,
            ..AuditQuery::default()
        };
        try_page!(ui, audit_view(ui, q).await)
    };
    let mut tables: Vec<&str> = Table::EXPOSED.iter().map(|t| t.name()).collect();
    tables.push(Table::SlavePasswords.name());
    let ctx = minijinja::context! {
        page => "audit",
        title => "Audit",
        entries => entries,
        tables => tables,
        notice => notice,
        f => minijinja::context! { table => table_name, row => row, limit => limit },
        limits => [50, 100, 250, 1000],
        clear_href => ui_path(ui, "audit"),
    };
    ui.render(StatusCode::OK, "audit.html", ctx)
}
