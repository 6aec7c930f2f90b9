//! The page handlers: read through the inventory's store, shape what the
//! templates show, render. Nothing here writes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use slavealloc_domain::inventory::DECOMMISSIONED_ENVIRONMENT;
use slavealloc_domain::schema::Kind;
use slavealloc_domain::{reports, AuditEntry, AuditQuery, Row, SlaveFilter, StoreError, Table, Value};
use warp::http::StatusCode;
use warp::reply::Response;

use crate::view::{display, href, natural_cmp, query, sort_rows, sorted_indices, Cell, Paging, Params, TextFilter};
use crate::Ui;

/// One field of the inline editor, as `app.js` builds it.
#[derive(Debug, Serialize)]
struct EditorField {
    col: &'static str,
    label: &'static str,
    /// For a reference: the lookup table its choices come from.
    list: Option<&'static str>,
    /// `bool`, `int` or `text` (a reference is a select of `list`).
    #[serde(rename = "type")]
    kind: &'static str,
    nullable: bool,
    /// The choice that means NULL, for a nullable reference.
    none: Option<&'static str>,
    size: Option<&'static str>,
}

/// The editor's fields of `table`: its updatable columns, from the domain's
/// schema (no copy of them in `app.js`).
fn editor_fields(table: Table) -> Vec<EditorField> {
    table
        .columns()
        .iter()
        .filter(|c| c.updatable)
        .map(|c| EditorField {
            col: c.name,
            label: c.title,
            list: match c.kind {
                Kind::Ref(t) => Some(t.name()),
                _ => None,
            },
            kind: match c.kind {
                Kind::Bool => "bool",
                Kind::Int | Kind::Port => "int",
                _ => "text",
            },
            nullable: c.nullable,
            none: c.when_null.or(c.nullable.then_some("none")),
            size: (c.kind == Kind::Text).then_some("wider"),
        })
        .collect()
}

fn store_error(ui: &Ui, e: &StoreError) -> Response {
    tracing::warn!(error = %e, "a UI page could not read the database");
    let (status, title) = match e {
        StoreError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "The database did not answer"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "The database gave an error"),
    };
    ui.error(status, title, &e.to_string())
}

/// Unwraps a store result; an error ends the page with an error page.
macro_rules! try_page {
    ($ui:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return store_error($ui, &e),
        }
    };
}

fn text<'a>(row: &'a Row, key: &str) -> &'a str {
    row.get(key).and_then(Value::as_text).unwrap_or_default()
}

fn int(row: &Row, key: &str) -> Option<i64> {
    row.get(key).and_then(Value::as_int)
}

fn ui_path(ui: &Ui, page: &str) -> String {
    format!("{}/ui/{page}", ui.base)
}

/// Id → name of every row of the lookup tables, the masters (nickname) and
/// the templates: what the inline editors offer in their select boxes and
/// what the audit page names references by.
#[derive(Debug, Default, Serialize)]
struct Lookups(BTreeMap<&'static str, Vec<Choice>>);

#[derive(Debug, Clone, Serialize)]
struct Choice {
    id: i64,
    name: String,
    /// Masters only: the pool, so that the lock editor lists the slave's
    /// own pool's masters first.
    #[serde(skip_serializing_if = "Option::is_none")]
    poolid: Option<i64>,
    /// Masters only.
    #[serde(skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
}

impl Lookups {
    async fn load(ui: &Ui, tables: &[Table]) -> Result<Self, StoreError> {
        let mut map = BTreeMap::new();
        for &table in tables {
            let (Some(id_col), Some(name_col)) = (table.id_column(), table.name_column()) else {
                continue;
            };
            let mut choices: Vec<Choice> = ui
                .inventory
                .store()
                .list(table)
                .await?
                .iter()
                .filter_map(|r| {
                    Some(Choice {
                        id: int(r, id_col)?,
                        name: r.get(name_col)?.as_text()?.to_owned(),
                        poolid: (table == Table::Masters).then(|| int(r, "poolid")).flatten(),
                        enabled: (table == Table::Masters).then(|| r.get("enabled") == Some(&Value::Bool(true))),
                    })
                })
                .collect();
            choices.sort_by(|a, b| natural_cmp(&a.name, &b.name));
            map.insert(table.name(), choices);
        }
        Ok(Self(map))
    }

    fn names(&self, table: Table) -> Vec<String> {
        self.0
            .get(table.name())
            .map(|c| c.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default()
    }

    fn name_of(&self, table: Table, id: i64) -> Option<&str> {
        self.0
            .get(table.name())?
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.name.as_str())
    }
}

/// Everything a slave editor may offer.
const SLAVE_LOOKUPS: &[Table] = &[
    Table::Distros,
    Table::Bitlengths,
    Table::Speeds,
    Table::Purposes,
    Table::Datacenters,
    Table::Trustlevels,
    Table::Environments,
    Table::Pools,
    Table::Masters,
    Table::TacTemplates,
];

/// Resolves the names a slave row refers to, on demand. The store lists
/// plain rows; naming all 10,000 of them up front (as the REST API's
/// denormalized list does) costs more than the rest of the page, so only
/// the rows shown are denormalized.
struct SlaveNames {
    /// (label, column, id → name) per labelled reference of `slaves`.
    refs: Vec<(&'static str, &'static str, HashMap<i64, String>)>,
}

impl SlaveNames {
    /// From lookups holding every table in [`SLAVE_LOOKUPS`].
    fn new(lookups: &Lookups) -> Self {
        let refs = Table::Slaves
            .columns()
            .iter()
            .filter_map(|c| match (c.kind, c.label) {
                (Kind::Ref(target), Some(label)) => {
                    let names = lookups
                        .0
                        .get(target.name())
                        .map(|cs| cs.iter().map(|c| (c.id, c.name.clone())).collect())
                        .unwrap_or_default();
                    Some((label, c.name, names))
                }
                _ => None,
            })
            .collect();
        Self { refs }
    }

    /// What the slaves table shows under `key`: a reference's name by its
    /// label (`pool`, `current_master`, ...), else the row's own column.
    fn cell<'a>(&'a self, row: &'a Row, key: &str) -> Cell<'a> {
        match self.refs.iter().find(|(label, _, _)| *label == key) {
            Some((_, column, names)) => int(row, column)
                .and_then(|id| names.get(&id))
                .map_or(Cell::Null, |n| Cell::Text(n)),
            None => Cell::from(row.get(key)),
        }
    }

    /// A copy of the row with every reference's name added under its label,
    /// as `GET /api/slaves` has it.
    fn denormalize(&self, row: &Row) -> Row {
        let mut out = row.clone();
        for (label, _, _) in &self.refs {
            let name = match self.cell(row, label) {
                Cell::Text(n) => Value::Text(n.to_owned()),
                _ => Value::Null,
            };
            out.insert((*label).to_owned(), name);
        }
        out
    }
}

#[derive(Debug, Serialize)]
struct ColumnHead {
    key: &'static str,
    label: &'static str,
    href: String,
    /// `"asc"`, `"desc"` or `""`.
    sorted: &'static str,
}

fn column_heads(
    columns: &[(&'static str, &'static str)],
    sort: &str,
    desc: bool,
    link: impl Fn(&str, bool) -> String,
) -> Vec<ColumnHead> {
    columns
        .iter()
        .map(|&(key, label)| {
            let current = key == sort;
            ColumnHead {
                key,
                label,
                // A second click on the sorted column reverses it.
                href: link(key, current && !desc),
                sorted: match (current, desc) {
                    (false, _) => "",
                    (true, false) => "asc",
                    (true, true) => "desc",
                },
            }
        })
        .collect()
}

fn sort_key(p: &Params, columns: &[(&'static str, &'static str)], default: &'static str) -> &'static str {
    p.get("sort")
        .and_then(|s| columns.iter().find(|(k, _)| *k == s))
        .map_or(default, |(k, _)| k)
}

mod audit;
mod dashboard;
mod drift;
mod live;
mod master;
mod masters;
mod silos;
mod slaves;

pub(crate) use audit::audit;
pub(crate) use dashboard::dashboard;
pub(crate) use drift::drift;
pub(crate) use master::master;
pub(crate) use masters::masters;
pub(crate) use silos::silos;
pub(crate) use slaves::slaves;
