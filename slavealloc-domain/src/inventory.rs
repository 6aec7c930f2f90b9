//! The admin service behind the REST API and the web UI: listings with
//! names filled in, filters, and checked writes.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::access::{self, Operation, Writer};
use crate::error::StoreError;
use crate::ports::{Actor, Host, InventoryStore, TacRenderer};
use crate::schema::{Changes, Given, InputError, Kind, Row, Table, Value};

/// The environment whose slaves the slave list leaves out unless asked.
pub const DECOMMISSIONED_ENVIRONMENT: &str = "decomm";

/// Filters of `GET /api/slaves`. Each list filter matches any of its names;
/// an empty list matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaveFilter {
    /// Environment names.
    pub environment: Vec<String>,
    /// Purpose names.
    pub purpose: Vec<String>,
    /// Pool names.
    pub pool: Vec<String>,
    /// Only enabled (`Some(true)`) or disabled (`Some(false)`) slaves.
    pub enabled: Option<bool>,
    /// Keep slaves of the [`DECOMMISSIONED_ENVIRONMENT`].
    pub include_decomm: bool,
}

/// The key of a bulk write's audit entries that keeps the note it was given.
pub const NOTE_KEY: &str = "note";

/// Adds a bulk write's note to one of its audit entries.
pub fn with_note(mut entry: crate::audit::NewAuditEntry, note: Option<&str>) -> crate::audit::NewAuditEntry {
    if let Some(note) = note {
        entry
            .new_values
            .get_or_insert_with(Row::new)
            .insert(NOTE_KEY.to_owned(), Value::Text(note.to_owned()));
    }
    entry
}

/// What a write did with the keys of its body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriteReport {
    /// The columns it wrote a new value into.
    pub changed: Vec<String>,
    /// The keys it did not write because they are not columns a client
    /// writes (ids, the listing's names, `live`, unknown keys). Keys of
    /// updatable columns whose value was already so are in neither list.
    pub ignored: Vec<String>,
}

/// Reads and writes of the exposed tables, as the REST API offers them.
///
/// Holds its ports as trait objects; clones share them.
#[derive(Clone)]
pub struct Inventory {
    store: Arc<dyn InventoryStore>,
    host: Arc<dyn Host>,
    renderer: Option<Arc<dyn TacRenderer>>,
}

impl std::fmt::Debug for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inventory").finish_non_exhaustive()
    }
}

/// Names of rows by table and id, for denormalized listings.
type Names = HashMap<Table, HashMap<i64, String>>;

impl Inventory {
    /// An inventory over a store; `host` stamps audit entries.
    pub fn new(store: Arc<dyn InventoryStore>, host: Arc<dyn Host>) -> Self {
        Self {
            store,
            host,
            renderer: None,
        }
    }

    /// Checks templates written to `tac_templates` with this renderer, so
    /// that a broken template is refused when it is saved rather than when a
    /// slave boots.
    pub fn with_template_check(mut self, renderer: Arc<dyn TacRenderer>) -> Self {
        self.renderer = Some(renderer);
        self
    }

    /// The store, for callers that need a port operation this service does
    /// not wrap (audit queries, health checks).
    pub fn store(&self) -> &Arc<dyn InventoryStore> {
        &self.store
    }

    /// Every row of `table`. `slaves` and `masters` are denormalized: each
    /// reference column's row name is added under the column's label
    /// (`distroid` → `distro`, `locked_masterid` → `locked_master`, ...).
    /// `slaves` is filtered by `filter`; other tables ignore it.
    ///
    /// # Errors
    /// The store's.
    pub async fn list(&self, table: Table, filter: &SlaveFilter) -> Result<Vec<Row>, StoreError> {
        let shape = self.row_shape(table, filter).await?;
        let rows = self.store.list(table).await?;
        Ok(rows.into_iter().filter_map(|r| shape.apply(r)).collect())
    }

    /// How [`Inventory::list`] shows each row of `table`, for a caller that
    /// reads the rows itself a page at a time ([`InventoryStore::list_page`])
    /// and must answer exactly as the whole list would.
    ///
    /// # Errors
    /// The store's, reading the names.
    pub async fn row_shape(&self, table: Table, filter: &SlaveFilter) -> Result<RowShape, StoreError> {
        let names = if matches!(table, Table::Slaves | Table::Masters) {
            self.names(table).await?
        } else {
            Names::new()
        };
        Ok(RowShape {
            table,
            names,
            filter: filter.clone(),
        })
    }

    async fn names(&self, table: Table) -> Result<Names, StoreError> {
        let mut names = Names::new();
        for c in table.columns() {
            let Kind::Ref(target) = c.kind else { continue };
            if c.label.is_none() || names.contains_key(&target) {
                continue;
            }
            let (id_col, name_col) = match (target.id_column(), target.name_column()) {
                (Some(i), Some(n)) => (i, n),
                _ => continue,
            };
            let map = self
                .store
                .list(target)
                .await?
                .iter()
                .filter_map(|r| Some((r.get(id_col)?.as_int()?, r.get(name_col)?.as_text()?.to_owned())))
                .collect();
            names.insert(target, map);
        }
        Ok(names)
    }

    /// One plain row by id; `Ok(None)` when absent.
    ///
    /// # Errors
    /// The store's.
    pub async fn get(&self, table: Table, id: i32) -> Result<Option<Row>, StoreError> {
        self.store.get(table, id).await
    }

    /// One plain row by its name column (slave names are lower-cased
    /// first); `Ok(None)` when absent.
    ///
    /// # Errors
    /// The store's.
    pub async fn find(&self, table: Table, name: &str) -> Result<Option<Row>, StoreError> {
        let name = if table == Table::Slaves {
            name.to_ascii_lowercase()
        } else {
            name.to_owned()
        };
        self.store.find_by_name(table, &name).await
    }

    /// Writes the updatable columns `body` carries into row `id`, ignoring
    /// every other key (see [`Table::parse_update`]), as an admin.
    ///
    /// # Errors
    /// As for [`Inventory::update_as`].
    pub async fn update(&self, table: Table, id: i32, body: &Changes, actor: &str) -> Result<Row, StoreError> {
        self.update_as(table, id, body, &Writer::admin(actor)).await
    }

    /// Writes the updatable columns `body` carries into row `id` if
    /// `writer` may: keys whose value equals the stored one are dropped
    /// first and never written, so a client that sends a whole row back
    /// writes only what it changed (see [`access`]).
    ///
    /// # Errors
    /// [`StoreError::Input`] for a bad value, [`StoreError::Forbidden`]
    /// for a change the writer may not make (nothing written either way),
    /// and the store's errors ([`StoreError::NotFound`],
    /// [`StoreError::Duplicate`], [`StoreError::InvalidReference`]).
    pub async fn update_as(&self, table: Table, id: i32, body: &Changes, writer: &Writer) -> Result<Row, StoreError> {
        self.update_reported(table, id, body, writer).await.map(|(row, _)| row)
    }

    /// [`Inventory::update_as`], answering also what it did with each key
    /// of `body`. A reference given by its name alone (`"environment":
    /// "prod"` without `envid`) is taken when that name is a real row's.
    ///
    /// # Errors
    /// As for [`Inventory::update_as`]; a name key naming no row is
    /// [`StoreError::Input`].
    pub async fn update_reported(
        &self,
        table: Table,
        id: i32,
        body: &Changes,
        writer: &Writer,
    ) -> Result<(Row, WriteReport), StoreError> {
        let (body, taken) = self.resolve_names(table, body).await?;
        let mut changes = table.parse_update(&body)?;
        let current = self.store.get(table, id).await?.ok_or(StoreError::NotFound)?;
        changes.retain(|column, value| current.get(column) != Some(value));
        let columns: Vec<&str> = changes.keys().map(String::as_str).collect();
        access::check(table, Operation::Update(&columns), writer.permission)?;
        let report = WriteReport {
            changed: changes.keys().cloned().collect(),
            ignored: body
                .keys()
                .filter(|k| !taken.contains(k) && !table.column(k).is_some_and(|c| c.updatable))
                .cloned()
                .collect(),
        };
        if changes.is_empty() {
            return Ok((current, report));
        }
        self.check_template(table, &changes)?;
        let row = self.store.update(table, id, changes, self.actor(&writer.name)).await?;
        Ok((row, report))
    }

    /// `body` with each updatable reference that is given by its name only
    /// (the listing's key, `environment` for `envid`) given by its id, and
    /// the name keys so taken.
    /// A PUT body checked into the changes it makes to any row of `table`
    /// (name keys resolved, types checked, `writer` allowed every column),
    /// for a write of many rows.
    ///
    /// # Errors
    /// [`StoreError::Input`] naming the key; [`StoreError::Forbidden`].
    pub async fn checked_changes(&self, table: Table, body: &Changes, writer: &Writer) -> Result<Row, StoreError> {
        let (body, taken) = self.resolve_names(table, body).await?;
        if let Some(k) = body
            .keys()
            .find(|k| !taken.contains(k) && !table.column(k).is_some_and(|c| c.updatable))
        {
            return Err(InputError::new(k, "is not a column that can be set").into());
        }
        let changes = table.parse_update(&body)?;
        let columns: Vec<&str> = changes.keys().map(String::as_str).collect();
        access::check(table, Operation::Update(&columns), writer.permission)?;
        self.check_template(table, &changes)?;
        Ok(changes)
    }

    async fn resolve_names(&self, table: Table, body: &Changes) -> Result<(Changes, Vec<String>), StoreError> {
        let mut resolved = body.clone();
        let mut taken = Vec::new();
        for c in table.columns().iter().filter(|c| c.updatable) {
            let (Kind::Ref(target), Some(label)) = (c.kind, c.label) else {
                continue;
            };
            let Some(given) = body.get(label).filter(|_| !body.contains_key(c.name)) else {
                continue;
            };
            let id = match given {
                Given::Null if c.nullable => Given::Null,
                Given::Text(name) => {
                    let row = self
                        .find(target, name)
                        .await?
                        .ok_or_else(|| InputError::new(label, format!("no {target} row is named {name:?}")))?;
                    let id = target.id_column().and_then(|col| row.get(col)).and_then(Value::as_int);
                    Given::Int(id.ok_or_else(|| StoreError::Other(format!("a {target} row without its id")))?)
                }
                _ => return Err(InputError::new(label, format!("must name a {target} row")).into()),
            };
            resolved.insert(c.name.to_owned(), id);
            taken.push(label.to_owned());
        }
        Ok((resolved, taken))
    }

    /// Creates a row from `body` (see [`Table::parse_insert`]) as an admin
    /// and returns it with its id.
    ///
    /// # Errors
    /// As for [`Inventory::create_as`].
    pub async fn create(&self, table: Table, body: &Changes, actor: &str) -> Result<Row, StoreError> {
        self.create_as(table, body, &Writer::admin(actor)).await
    }

    /// Creates a row from `body` if `writer` may.
    ///
    /// # Errors
    /// As for [`Inventory::update_as`].
    pub async fn create_as(&self, table: Table, body: &Changes, writer: &Writer) -> Result<Row, StoreError> {
        access::check(table, Operation::Create, writer.permission)?;
        let row = table.parse_insert(body)?;
        self.check_template(table, &row)?;
        self.store.insert(table, row, self.actor(&writer.name)).await
    }

    /// Deletes row `id` as an admin.
    ///
    /// # Errors
    /// As for [`Inventory::delete_as`].
    pub async fn delete(&self, table: Table, id: i32, actor: &str) -> Result<(), StoreError> {
        self.delete_as(table, id, &Writer::admin(actor)).await
    }

    /// Deletes row `id` if `writer` may.
    ///
    /// # Errors
    /// [`StoreError::Forbidden`]; [`StoreError::NotFound`];
    /// [`StoreError::Referenced`] when other rows still refer to it.
    pub async fn delete_as(&self, table: Table, id: i32, writer: &Writer) -> Result<(), StoreError> {
        access::check(table, Operation::Delete, writer.permission)?;
        self.store.delete(table, id, self.actor(&writer.name)).await
    }

    fn actor(&self, name: &str) -> Actor {
        Actor {
            name: name.to_owned(),
            at: self.host.now(),
        }
    }

    fn check_template(&self, table: Table, row: &Row) -> Result<(), StoreError> {
        let (Table::TacTemplates, Some(renderer), Some(Value::Text(text))) =
            (table, &self.renderer, row.get("template"))
        else {
            return Ok(());
        };
        renderer.check_template(text).map_err(|e| {
            StoreError::Input(crate::schema::InputError {
                column: "template".into(),
                problem: e.to_string(),
            })
        })
    }
}

/// A listing's view of its rows: names beside the ids of slaves and
/// masters, slaves filtered (see [`Inventory::row_shape`]).
#[derive(Debug, Clone)]
pub struct RowShape {
    table: Table,
    names: Names,
    filter: SlaveFilter,
}

impl RowShape {
    /// The row as the listing shows it, or `None` when the filter leaves
    /// it out.
    pub fn apply(&self, row: Row) -> Option<Row> {
        if !matches!(self.table, Table::Slaves | Table::Masters) {
            return Some(row);
        }
        let row = denormalize(self.table, row, &self.names);
        (self.table != Table::Slaves || keeps(&self.filter, &row)).then_some(row)
    }
}

fn denormalize(table: Table, mut row: Row, names: &Names) -> Row {
    for c in table.columns() {
        let (Kind::Ref(target), Some(label)) = (c.kind, c.label) else {
            continue;
        };
        let name = row
            .get(c.name)
            .and_then(Value::as_int)
            .and_then(|id| names.get(&target)?.get(&id).cloned())
            .map_or(Value::Null, Value::Text);
        row.insert(label.to_owned(), name);
    }
    row
}

fn keeps(filter: &SlaveFilter, row: &Row) -> bool {
    let name_in = |label: &str, wanted: &[String]| {
        wanted.is_empty()
            || row
                .get(label)
                .and_then(Value::as_text)
                .is_some_and(|n| wanted.iter().any(|w| w == n))
    };
    let environment = row.get("environment").and_then(Value::as_text);
    (filter.include_decomm || environment != Some(DECOMMISSIONED_ENVIRONMENT))
        && name_in("environment", &filter.environment)
        && name_in("purpose", &filter.purpose)
        && name_in("pool", &filter.pool)
        && filter
            .enabled
            .is_none_or(|e| row.get("enabled") == Some(&Value::Bool(e)))
}
