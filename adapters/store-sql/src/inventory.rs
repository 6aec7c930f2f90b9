//! The admin reads and writes ([`slavealloc_domain::InventoryStore`]), once
//! for every backend.
//!
//! Each write is one transaction that reads the row it changes (locked),
//! checks references and unique names itself — so that the error names the
//! column, as the REST API promises — writes, and appends its audit entry.
//! The database's own constraints stay in place behind those checks, for
//! races and for other writers.

use std::time::SystemTime;

use slavealloc_domain::audit::{
    format_at, lifecycle_marker, AuditEntry, AuditKind, AuditQuery, NewAuditEntry, ALLOCATION_ACTOR,
};
use slavealloc_domain::schema::{Column, DefaultValue, InputError, Kind, Row, Table, Value};
use slavealloc_domain::{Actor, Dump, StoreError};

use crate::driver::{Db, Dialect, Mode, Out, Param, Sql, Tx};
use crate::rows::{param, select_list, to_row};

/// At most this many rows per multi-row `INSERT`, to stay far below every
/// backend's limit on parameters per statement.
pub(crate) const MAX_PARAMS: usize = 900;

fn input(column: &str, problem: &str) -> StoreError {
    StoreError::Input(InputError {
        column: column.to_owned(),
        problem: problem.to_owned(),
    })
}

fn other(e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(e.to_string())
}

/// Puts rows in dump order; only `slave_passwords`, which has no key,
/// needs it after `ORDER BY` (backends sort NULLs differently).
pub(crate) fn sort_rows(table: Table, rows: Vec<Row>) -> Vec<Row> {
    if table.id_column().is_some() {
        return rows;
    }
    let mut dump = Dump::default();
    dump.tables.insert(table, rows);
    dump.sort();
    dump.tables.remove(&table).unwrap_or_default()
}

/// Every row of a table, in key order.
pub(crate) async fn select_all(tx: &mut dyn Tx, d: &Dialect, table: Table) -> Result<Vec<Row>, StoreError> {
    let (columns, out) = select_list(table);
    let order = table
        .id_column()
        .map(|id| format!(" ORDER BY {id}"))
        .unwrap_or_default();
    let sql = Sql::new(d, &format!("SELECT {columns} FROM {table}{order}"));
    let rows = tx.fetch(&sql, &out).await?;
    Ok(sort_rows(table, rows.into_iter().map(|v| to_row(table, v)).collect()))
}

/// One row by id; `lock` locks it until the transaction ends.
async fn select_one(
    tx: &mut dyn Tx,
    d: &Dialect,
    table: Table,
    id: i32,
    lock: bool,
) -> Result<Option<Row>, StoreError> {
    let Some(id_column) = table.id_column() else {
        return Ok(None);
    };
    let (columns, out) = select_list(table);
    let mut sql = Sql::new(d, &format!("SELECT {columns} FROM {table} WHERE {id_column} = "));
    sql.param(Param::Int(Some(id)));
    if lock {
        sql.push(d.row_lock);
    }
    Ok(tx.fetch(&sql, &out).await?.pop().map(|v| to_row(table, v)))
}

/// Appends audit entries, many per statement.
pub(crate) async fn write_audit(tx: &mut dyn Tx, d: &Dialect, entries: &[NewAuditEntry]) -> Result<(), StoreError> {
    const COLUMNS: usize = 6;
    for chunk in entries.chunks(MAX_PARAMS / COLUMNS) {
        let mut sql = Sql::new(
            d,
            "INSERT INTO audit_log (at, actor, table_name, row_id, old_values, new_values) VALUES ",
        );
        for (i, e) in chunk.iter().enumerate() {
            let json = |r: &Option<Row>| r.as_ref().map(serde_json::to_string).transpose().map_err(other);
            let row_id =
                i32::try_from(e.row_id).map_err(|_| other(format!("audit row_id {} out of range", e.row_id)))?;
            sql.push(if i == 0 { "(" } else { ", (" })
                .params([
                    Param::Text(Some(e.at.clone())),
                    Param::Text(Some(e.actor.clone())),
                    Param::Text(Some(e.table_name.clone())),
                    Param::Int(Some(row_id)),
                    Param::Text(json(&e.old_values)?),
                    Param::Text(json(&e.new_values)?),
                ])
                .push(")");
        }
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// `SELECT (SELECT COUNT(*) FROM t1 WHERE c1 = ?), ...`: several existence
/// checks in one round trip.
async fn counts(tx: &mut dyn Tx, d: &Dialect, checks: &[(Table, &str, i32)]) -> Result<Vec<i64>, StoreError> {
    if checks.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = Sql::new(d, "SELECT ");
    for (i, (table, column, id)) in checks.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push(&format!("(SELECT COUNT(*) FROM {table} WHERE {column} = "))
            .param(Param::Int(Some(*id)))
            .push(")");
    }
    let row = tx
        .fetch(&sql, &vec![Out::Int; checks.len()])
        .await?
        .pop()
        .unwrap_or_default();
    Ok(row.iter().map(|v| v.as_int().unwrap_or(0)).collect())
}

/// Checks that each reference among `columns` of `row` names an existing
/// row; the first that does not is the error.
async fn check_references(
    tx: &mut dyn Tx,
    d: &Dialect,
    row: &Row,
    columns: &[&'static Column],
) -> Result<(), StoreError> {
    let mut refs = Vec::new();
    for c in columns {
        let (Kind::Ref(target), Some(Value::Int(id))) = (c.kind, row.get(c.name)) else {
            continue;
        };
        let missing = || StoreError::InvalidReference {
            column: c.name.to_owned(),
            table: target.name().to_owned(),
            id: *id,
        };
        let (Some(target_id), Ok(id32)) = (target.id_column(), i32::try_from(*id)) else {
            return Err(missing());
        };
        refs.push((c, target, target_id, id32, missing()));
    }
    let checks: Vec<_> = refs.iter().map(|(_, t, col, id, _)| (*t, *col, *id)).collect();
    let found = counts(tx, d, &checks).await?;
    match refs.into_iter().zip(found).find(|(_, n)| *n == 0) {
        Some((r, _)) => Err(r.4),
        None => Ok(()),
    }
}

/// Checks that `row`'s name is not another row's.
async fn check_unique(
    tx: &mut dyn Tx,
    d: &Dialect,
    table: Table,
    row: &Row,
    own_id: Option<i32>,
) -> Result<(), StoreError> {
    let (Some(name_column), Some(id_column)) = (table.name_column(), table.id_column()) else {
        return Ok(());
    };
    let Some(Value::Text(name)) = row.get(name_column) else {
        return Ok(());
    };
    let mut sql = Sql::new(d, &format!("SELECT {id_column} FROM {table} WHERE {name_column} = "));
    sql.param(Param::Text(Some(name.clone())));
    let holders = tx.fetch(&sql, &[Out::Int]).await?;
    let own = own_id.map(i64::from);
    if holders.iter().any(|h| h.first().and_then(Value::as_int) != own) {
        return Err(StoreError::Duplicate(format!(
            "{table}.{name_column} {name:?} already exists"
        )));
    }
    Ok(())
}

/// Every row of `table`, in primary-key order.
pub(crate) async fn list(db: &dyn Db, table: Table) -> Result<Vec<Row>, StoreError> {
    let mut tx = db.begin(Mode::Read).await?;
    select_all(&mut *tx, db.dialect(), table).await
}

/// One row by primary key.
pub(crate) async fn get(db: &dyn Db, table: Table, id: i32) -> Result<Option<Row>, StoreError> {
    let mut tx = db.begin(Mode::Read).await?;
    select_one(&mut *tx, db.dialect(), table, id, false).await
}

/// One row by its name column.
pub(crate) async fn find_by_name(db: &dyn Db, table: Table, name: &str) -> Result<Option<Row>, StoreError> {
    let Some(name_column) = table.name_column() else {
        return Ok(None);
    };
    let (columns, out) = select_list(table);
    let mut sql = Sql::new(
        db.dialect(),
        &format!("SELECT {columns} FROM {table} WHERE {name_column} = "),
    );
    sql.param(Param::Text(Some(name.to_owned())));
    let mut tx = db.begin(Mode::Read).await?;
    let rows = tx.fetch(&sql, &out).await?;
    // A database whose collation ignores case could match more than asked.
    Ok(rows
        .into_iter()
        .map(|v| to_row(table, v))
        .find(|r| r.get(name_column).and_then(Value::as_text) == Some(name)))
}

/// Creates a row.
pub(crate) async fn insert(db: &dyn Db, table: Table, mut row: Row, actor: Actor) -> Result<Row, StoreError> {
    // Column names are written into SQL text: only the schema's may get there.
    table.check_stored(&row)?;
    let id_column = table.id_column();
    if let Some(c) = id_column {
        if row.get(c) == Some(&Value::Null) {
            row.remove(c);
        }
    }
    for c in table.columns().iter().filter(|c| c.kind != Kind::Id) {
        if row.contains_key(c.name) {
            continue;
        }
        let value = match c.default {
            Some(DefaultValue::True) => Value::Bool(true),
            Some(DefaultValue::Null) => Value::Null,
            None if c.nullable => Value::Null,
            None => return Err(input(c.name, "is required")),
        };
        row.insert(c.name.to_owned(), value);
    }
    let columns: Vec<&'static Column> = table.columns().iter().filter(|c| row.contains_key(c.name)).collect();
    let params = columns
        .iter()
        .map(|c| param(c, &row[c.name], c.name))
        .collect::<Result<Vec<_>, _>>()?;
    let explicit_id = id_column.and_then(|c| row.get(c)).and_then(Value::as_int);

    let d = db.dialect();
    let mut tx = db.begin(Mode::Write).await?;
    check_references(&mut *tx, d, &row, &columns).await?;
    check_unique(
        &mut *tx,
        d,
        table,
        &row,
        explicit_id.and_then(|i| i32::try_from(i).ok()),
    )
    .await?;
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    let mut sql = Sql::new(d, &format!("INSERT INTO {table} ({}) VALUES (", names.join(", ")));
    sql.params(params).push(")");
    let id = match (id_column, explicit_id) {
        (Some(c), Some(id)) => {
            let id32 = i32::try_from(id).map_err(|_| input(c, "does not fit a 32-bit integer"))?;
            if select_one(&mut *tx, d, table, id32, false).await?.is_some() {
                return Err(StoreError::Duplicate(format!("{table} id {id} already exists")));
            }
            tx.execute(&sql).await?;
            db.sync_id_sequence(&mut *tx, table.name(), c).await?;
            id
        }
        (Some(c), None) => tx.insert(&sql, c).await?,
        (None, _) => {
            tx.execute(&sql).await?;
            0
        }
    };
    let new = match id_column {
        Some(_) => {
            let id32 = i32::try_from(id).map_err(|_| other(format!("{table}: generated id {id} out of range")))?;
            select_one(&mut *tx, d, table, id32, false)
                .await?
                .ok_or_else(|| other(format!("{table} row {id} vanished after its insert")))?
        }
        None => row,
    };
    if let Some(entry) = NewAuditEntry::for_write(table, id, None, Some(&new), &actor) {
        write_audit(&mut *tx, d, &[entry]).await?;
    }
    tx.commit().await?;
    Ok(new)
}

/// Writes changes into one row.
pub(crate) async fn update(db: &dyn Db, table: Table, id: i32, changes: Row, actor: Actor) -> Result<Row, StoreError> {
    check_params(table, &changes)?;
    let d = db.dialect();
    let mut tx = db.begin(Mode::Write).await?;
    let (old, new) = update_in(&mut *tx, d, table, id, &changes).await?;
    if let Some(entry) = NewAuditEntry::for_write(table, id.into(), Some(&old), Some(&new), &actor) {
        write_audit(&mut *tx, d, &[entry]).await?;
    }
    tx.commit().await?;
    Ok(new)
}

/// Writes the same changes into several rows in one transaction, one audit
/// entry per changed row (carrying `note`); a dry run rolls it all back.
pub(crate) async fn update_many(
    db: &dyn Db,
    table: Table,
    ids: &[i32],
    changes: Row,
    note: Option<String>,
    dry_run: bool,
    actor: Actor,
) -> Result<Vec<(Row, Row)>, StoreError> {
    for id in ids {
        table.check_changes(*id, &changes)?;
    }
    check_params(table, &changes)?;
    let d = db.dialect();
    let mut tx = db.begin(Mode::Write).await?;
    let mut written = Vec::with_capacity(ids.len());
    let mut entries = Vec::new();
    for id in ids {
        let (old, new) = update_in(&mut *tx, d, table, *id, &changes).await?;
        if let Some(entry) = NewAuditEntry::for_write(table, (*id).into(), Some(&old), Some(&new), &actor) {
            entries.push(slavealloc_domain::inventory::with_note(entry, note.as_deref()));
        }
        written.push((old, new));
    }
    if dry_run {
        // Dropped uncommitted: rolled back, with the locks it took.
        return Ok(written);
    }
    write_audit(&mut *tx, d, &entries).await?;
    tx.commit().await?;
    Ok(written)
}

/// Checks that each value fits its column before a transaction starts.
fn check_params(table: Table, changes: &Row) -> Result<(), StoreError> {
    for (k, v) in changes {
        if let Some(c) = table.column(k) {
            param(c, v, c.name)?;
        }
    }
    Ok(())
}

/// Writes changes into one row inside `tx`: the row read locked, references
/// and unique names checked, only changed columns written. Answers the row
/// before and after.
pub(crate) async fn update_in(
    tx: &mut dyn Tx,
    d: &Dialect,
    table: Table,
    id: i32,
    changes: &Row,
) -> Result<(Row, Row), StoreError> {
    table.check_changes(id, changes)?;
    let id_column = table.id_column().ok_or(StoreError::NotFound)?;
    let old = select_one(tx, d, table, id, true).await?.ok_or(StoreError::NotFound)?;
    let changed: Vec<&'static Column> = table
        .columns()
        .iter()
        .filter(|c| changes.get(c.name).is_some_and(|v| old.get(c.name) != Some(v)))
        .collect();
    if changed.is_empty() {
        return Ok((old.clone(), old));
    }
    let mut new = old.clone();
    new.extend(changes.clone());
    check_references(tx, d, &new, &changed).await?;
    if changed.iter().any(|c| Some(c.name) == table.name_column()) {
        check_unique(tx, d, table, &new, Some(id)).await?;
    }
    let mut sql = Sql::new(d, &format!("UPDATE {table} SET "));
    for (i, c) in changed.iter().enumerate() {
        sql.push(&format!("{}{} = ", if i == 0 { "" } else { ", " }, c.name))
            .param(param(c, &new[c.name], c.name)?);
    }
    sql.push(&format!(" WHERE {id_column} = ")).param(Param::Int(Some(id)));
    tx.execute(&sql).await?;
    let new = select_one(tx, d, table, id, false).await?.ok_or(StoreError::NotFound)?;
    Ok((old, new))
}

/// Deletes one row that nothing refers to.
pub(crate) async fn delete(db: &dyn Db, table: Table, id: i32, actor: Actor) -> Result<(), StoreError> {
    let id_column = table.id_column().ok_or(StoreError::NotFound)?;
    let d = db.dialect();
    let mut tx = db.begin(Mode::Write).await?;
    let old = select_one(&mut *tx, d, table, id, true)
        .await?
        .ok_or(StoreError::NotFound)?;
    let referrers = table.referenced_by();
    let checks: Vec<_> = referrers.iter().map(|(t, c)| (*t, c.name, id)).collect();
    let found = counts(&mut *tx, d, &checks).await?;
    let referring: Vec<String> = referrers
        .iter()
        .zip(found)
        .filter(|(_, n)| *n > 0)
        .map(|((t, c), _)| format!("{}.{}", t.name(), c.name))
        .collect();
    if !referring.is_empty() {
        return Err(StoreError::Referenced(format!(
            "{table} {id} is referred to by {}",
            referring.join(", ")
        )));
    }
    let mut sql = Sql::new(d, &format!("DELETE FROM {table} WHERE {id_column} = "));
    sql.param(Param::Int(Some(id)));
    tx.execute(&sql).await?;
    if let Some(entry) = NewAuditEntry::for_write(table, id.into(), Some(&old), None, &actor) {
        write_audit(&mut *tx, d, &[entry]).await?;
    }
    tx.commit().await
}

/// Audit entries, newest first.
pub(crate) async fn audit(db: &dyn Db, query: AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
    if query.limit == 0 || query.before.is_some_and(|b| b <= 1) {
        return Ok(Vec::new());
    }
    let row_id = match query.row_id.map(i32::try_from) {
        Some(Err(_)) => return Ok(Vec::new()),
        Some(Ok(id)) => Some(id),
        None => None,
    };
    let (columns, out) = select_list(Table::AuditLog);
    let mut sql = Sql::new(db.dialect(), &format!("SELECT {columns} FROM audit_log WHERE 1 = 1"));
    if let Some(table) = query.table {
        sql.push(" AND table_name = ")
            .param(Param::Text(Some(table.name().to_owned())));
    }
    if let Some(id) = row_id {
        sql.push(" AND row_id = ").param(Param::Int(Some(id)));
    }
    // `at` is UTC text in one format, so text order is time order, and the
    // audit_log_at index answers it.
    if let Some(since) = query.since {
        sql.push(" AND at >= ").param(Param::Text(Some(format_at(since))));
    }
    if let Some(until) = query.until {
        sql.push(" AND at <= ").param(Param::Text(Some(format_at(until))));
    }
    if let Some(actor) = &query.actor {
        sql.push(" AND actor = ").param(Param::Text(Some(actor.clone())));
    }
    match query.kind {
        Some(AuditKind::Allocation) => {
            sql.push(" AND actor = ")
                .param(Param::Text(Some(ALLOCATION_ACTOR.to_owned())));
        }
        Some(AuditKind::Edit) => {
            sql.push(" AND actor <> ")
                .param(Param::Text(Some(ALLOCATION_ACTOR.to_owned())))
                .push(" AND (new_values IS NULL OR new_values NOT LIKE ")
                .param(Param::Text(Some(lifecycle_marker())))
                .push(")");
        }
        Some(AuditKind::Lifecycle) => {
            sql.push(" AND actor <> ")
                .param(Param::Text(Some(ALLOCATION_ACTOR.to_owned())))
                .push(" AND new_values LIKE ")
                .param(Param::Text(Some(lifecycle_marker())));
        }
        None => {}
    }
    // A cursor beyond every id excludes nothing.
    if let Some(Ok(before)) = query.before.map(i32::try_from) {
        sql.push(" AND id < ").param(Param::Int(Some(before)));
    }
    sql.push(&format!(" ORDER BY id DESC LIMIT {}", query.limit));
    let mut tx = db.begin(Mode::Read).await?;
    tx.fetch(&sql, &out)
        .await?
        .into_iter()
        .map(|v| AuditEntry::from_row(&to_row(Table::AuditLog, v)))
        .collect()
}

/// Deletes at most `batch` allocation entries older than `before`, oldest
/// first: their ids read first, then deleted by id (MariaDB takes no LIMIT
/// in an IN subquery), in one transaction.
pub(crate) async fn prune_allocations(db: &dyn Db, before: SystemTime, batch: u32) -> Result<u64, StoreError> {
    let d = db.dialect();
    let mut tx = db.begin(Mode::Write).await?;
    let mut sql = Sql::new(d, "SELECT id FROM audit_log WHERE actor = ");
    sql.param(Param::Text(Some(ALLOCATION_ACTOR.to_owned())))
        .push(" AND at < ")
        .param(Param::Text(Some(format_at(before))))
        .push(&format!(" ORDER BY id LIMIT {}", batch.min(MAX_PARAMS as u32)));
    let ids: Vec<i32> = tx
        .fetch(&sql, &[Out::Int])
        .await?
        .iter()
        .filter_map(|r| r[0].as_int().and_then(|i| i32::try_from(i).ok()))
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    let mut sql = Sql::new(d, "DELETE FROM audit_log WHERE id IN (");
    sql.params(ids.iter().map(|i| Param::Int(Some(*i)))).push(")");
    let deleted = tx.execute(&sql).await?;
    tx.commit().await?;
    Ok(deleted)
}

/// A round trip to the database.
pub(crate) async fn ping(db: &dyn Db) -> Result<(), StoreError> {
    let unavailable = |e: StoreError| match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m),
        e => StoreError::Unavailable(e.to_string()),
    };
    let mut tx = db.begin(Mode::Read).await.map_err(unavailable)?;
    tx.fetch(&Sql::new(db.dialect(), "SELECT 1"), &[Out::Int])
        .await
        .map_err(unavailable)?;
    Ok(())
}
