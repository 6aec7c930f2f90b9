//! Whole-database export and import ([`slavealloc_domain::DumpStore`]),
//! once for every backend.
//!
//! A load checks the whole dump against what the database holds before it
//! writes anything, so that its error names the first bad row (rather than
//! whatever constraint the database trips over first), then inserts many
//! rows per statement, all in one transaction.

use std::collections::{HashMap, HashSet};

use slavealloc_domain::schema::{Column, InputError, Kind, Row, Table, Value};
use slavealloc_domain::{Dump, SaveReplaced, StoreError};

use crate::driver::{Db, Dialect, Mode, Out, Param, Sql, Tx};
use crate::inventory::{select_all, MAX_PARAMS};
use crate::rows::param;

/// Every row of every table, in dump order, from one consistent read.
pub(crate) async fn export(db: &dyn Db) -> Result<Dump, StoreError> {
    let mut tx = db.begin(Mode::Consistent).await?;
    let mut dump = Dump::default();
    for table in Table::ALL {
        let rows = select_all(&mut *tx, db.dialect(), table).await?;
        dump.tables.insert(table, rows);
    }
    tx.commit().await?;
    dump.sort();
    Ok(dump)
}

/// How many rows all tables hold together.
pub(crate) async fn row_count(db: &dyn Db) -> Result<u64, StoreError> {
    let counts: Vec<String> = Table::ALL
        .iter()
        .map(|t| format!("(SELECT COUNT(*) FROM {t})"))
        .collect();
    let sql = Sql::new(db.dialect(), &format!("SELECT {}", counts.join(" + ")));
    let mut tx = db.begin(Mode::Read).await?;
    let total = tx.fetch(&sql, &[Out::Int]).await?.pop().unwrap_or_default();
    let total = total.first().and_then(Value::as_int).unwrap_or_default();
    u64::try_from(total).map_err(|_| StoreError::Other(format!("row count {total} is negative")))
}

/// Loads a dump: into an emptied database (`replace`), or beside what is
/// there.
pub(crate) async fn load(db: &dyn Db, dump: &Dump, replace: bool) -> Result<(), StoreError> {
    if replace {
        return load_saving(db, dump, None).await;
    }
    load_in(db, dump, false, None).await
}

/// Replaces every row with the dump's; with `save`, hands it the rows being
/// replaced first, read in the same transaction, which keeps other writers
/// out until it commits ([`Mode::Exclusive`]).
pub(crate) async fn load_saving(db: &dyn Db, dump: &Dump, save: Option<&dyn SaveReplaced>) -> Result<(), StoreError> {
    load_in(db, dump, true, save).await
}

async fn load_in(db: &dyn Db, dump: &Dump, replace: bool, save: Option<&dyn SaveReplaced>) -> Result<(), StoreError> {
    let d = db.dialect();
    let mode = if save.is_some() { Mode::Exclusive } else { Mode::Write };
    let mut tx = db.begin(mode).await?;
    if let Some(save) = save {
        let mut replaced = Dump::default();
        for table in Table::ALL {
            let rows = select_all(&mut *tx, d, table).await?;
            replaced.tables.insert(table, rows);
        }
        replaced.sort();
        // On error the transaction is dropped, and so rolled back.
        save.save(&replaced)?;
    }
    let mut known = if replace {
        Known::default()
    } else {
        Known::read(&mut *tx, d).await?
    };
    let plan = plan(dump, &mut known)?;
    if replace {
        for table in Table::ALL.iter().rev() {
            tx.execute(&Sql::new(d, &format!("DELETE FROM {table}"))).await?;
        }
        // The live facts are about the rows replaced: the same ids may name
        // other slaves and masters now. The poller's lease is about the
        // daemons, and stays. Holds name the replaced rows' ids too.
        for table in crate::live::FACT_TABLES.iter().chain(&["holds"]) {
            tx.execute(&Sql::new(d, &format!("DELETE FROM {table}"))).await?;
        }
    }
    for (table, rows) in &plan {
        insert_rows(&mut *tx, d, *table, rows).await?;
    }
    for table in Table::ALL {
        if let Some(id_column) = table.id_column() {
            db.sync_id_sequence(&mut *tx, table.name(), id_column).await?;
        }
    }
    tx.commit().await
}

async fn insert_rows(tx: &mut dyn Tx, d: &Dialect, table: Table, rows: &[Vec<Param>]) -> Result<(), StoreError> {
    let columns: Vec<&str> = table.columns().iter().map(|c| c.name).collect();
    let per_statement = (MAX_PARAMS / columns.len()).max(1);
    for chunk in rows.chunks(per_statement) {
        let mut sql = Sql::new(d, &format!("INSERT INTO {table} ({}) VALUES ", columns.join(", ")));
        for (i, row) in chunk.iter().enumerate() {
            sql.push(if i == 0 { "(" } else { ", (" })
                .params(row.iter().cloned())
                .push(")");
        }
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// The ids and names a table holds (or will once the rows checked so far
/// are in).
#[derive(Debug, Default)]
struct Known {
    ids: HashMap<Table, HashSet<i32>>,
    names: HashMap<Table, HashSet<String>>,
}

impl Known {
    async fn read(tx: &mut dyn Tx, d: &Dialect) -> Result<Self, StoreError> {
        let mut known = Known::default();
        for table in Table::ALL {
            let Some(id_column) = table.id_column() else {
                continue;
            };
            let (select, out) = match table.name_column() {
                Some(name) => (format!("{id_column}, {name}"), vec![Out::Int, Out::Text]),
                None => (id_column.to_owned(), vec![Out::Int]),
            };
            for row in tx
                .fetch(&Sql::new(d, &format!("SELECT {select} FROM {table}")), &out)
                .await?
            {
                if let Some(id) = row.first().and_then(Value::as_int).and_then(|i| i32::try_from(i).ok()) {
                    known.ids.entry(table).or_default().insert(id);
                }
                if let Some(name) = row.get(1).and_then(Value::as_text) {
                    known.names.entry(table).or_default().insert(name.to_owned());
                }
            }
        }
        Ok(known)
    }

    fn has_id(&self, table: Table, id: i64) -> bool {
        i32::try_from(id).is_ok_and(|id| self.ids.get(&table).is_some_and(|ids| ids.contains(&id)))
    }

    fn next_id(&self, table: Table) -> i32 {
        self.ids
            .get(&table)
            .and_then(|ids| ids.iter().max())
            .map_or(1, |m| m.saturating_add(1))
    }
}

fn input(column: String, problem: String) -> StoreError {
    StoreError::Input(InputError { column, problem })
}

/// Each table's rows, as parameters in column order, in load order.
type Plan = Vec<(Table, Vec<Vec<Param>>)>;

/// Checks every row of the dump, in load order, against what is known and
/// the rows before it; returns the parameters of each table's rows.
fn plan(dump: &Dump, known: &mut Known) -> Result<Plan, StoreError> {
    let mut plan = Vec::new();
    for table in Table::ALL {
        let rows = dump.rows(table);
        if rows.is_empty() {
            continue;
        }
        let mut params = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            params.push(check_row(table, i, row, known)?);
        }
        plan.push((table, params));
    }
    Ok(plan)
}

fn check_row(table: Table, index: usize, row: &Row, known: &mut Known) -> Result<Vec<Param>, StoreError> {
    let what = match table.id_column().and_then(|c| Some((c, row.get(c)?.as_int()?))) {
        Some((c, id)) => format!("{table} row {} ({c} {id})", index + 1),
        None => format!("{table} row {}", index + 1),
    };
    if let Some(key) = row.keys().find(|k| table.column(k).is_none()) {
        return Err(input(
            format!("{table}.{key}"),
            format!("{what}: {table} has no such column"),
        ));
    }
    let mut params = Vec::with_capacity(table.columns().len());
    let mut new_id = None;
    let mut new_name = None;
    for c in table.columns() {
        let value = match (row.get(c.name), c.kind) {
            (Some(v), _) => v.clone(),
            (None, Kind::Id) => Value::Int(known.next_id(table).into()),
            (None, _) if c.nullable => Value::Null,
            (None, _) => return Err(input(format!("{table}.{}", c.name), format!("{what}: is required"))),
        };
        let p = param(c, &value, c.name).map_err(|e| match e {
            StoreError::Input(e) => input(format!("{table}.{}", e.column), format!("{what}: {}", e.problem)),
            e => e,
        })?;
        check_value(table, c, &value, &what, known)?;
        match (c.kind, &value) {
            (Kind::Id, Value::Int(id)) => new_id = i32::try_from(*id).ok(),
            (_, Value::Text(name)) if Some(c.name) == table.name_column() => new_name = Some(name.clone()),
            _ => {}
        }
        params.push(p);
    }
    if let Some(id) = new_id {
        known.ids.entry(table).or_default().insert(id);
    }
    if let Some(name) = new_name {
        known.names.entry(table).or_default().insert(name);
    }
    Ok(params)
}

/// The checks the database would make, made first so that the error can
/// name the row.
fn check_value(table: Table, c: &Column, value: &Value, what: &str, known: &Known) -> Result<(), StoreError> {
    match (c.kind, value) {
        (Kind::Id, Value::Int(id)) if known.has_id(table, *id) => {
            Err(StoreError::Duplicate(format!("{what}: {table} id {id} already exists")))
        }
        (Kind::Ref(target), Value::Int(id)) if !known.has_id(target, *id) => Err(StoreError::InvalidReference {
            column: format!("{} of {what}", c.name),
            table: target.name().to_owned(),
            id: *id,
        }),
        (_, Value::Text(name))
            if Some(c.name) == table.name_column() && known.names.get(&table).is_some_and(|n| n.contains(name)) =>
        {
            Err(StoreError::Duplicate(format!(
                "{what}: {table}.{} {name:?} already exists",
                c.name
            )))
        }
        (_, Value::Text(json)) if matches!(c.name, "old_values" | "new_values") && table == Table::AuditLog => {
            serde_json::from_str::<Row>(json)
                .map(|_| ())
                .map_err(|e| input(format!("{table}.{}", c.name), format!("{what}: not a JSON object: {e}")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, Value)]) -> Row {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    fn pool(id: i64, name: &str) -> Row {
        row(&[("poolid", Value::Int(id)), ("name", Value::Text(name.into()))])
    }

    #[test]
    fn the_first_bad_row_is_named() {
        let mut dump = Dump::default();
        dump.tables
            .insert(Table::Pools, vec![pool(1, "a"), pool(2, "b"), pool(3, "a")]);
        match plan(&dump, &mut Known::default()) {
            Err(StoreError::Duplicate(m)) => assert_eq!(m, "pools row 3 (poolid 3): pools.name \"a\" already exists"),
            other => panic!("{other:?}"),
        }
        dump.tables.insert(Table::Pools, vec![pool(1, "a")]);
        dump.tables.insert(
            Table::SlavePasswords,
            vec![row(&[
                ("poolid", Value::Int(7)),
                ("distroid", Value::Null),
                ("password", Value::Text("pw".into())),
            ])],
        );
        match plan(&dump, &mut Known::default()) {
            Err(StoreError::InvalidReference { column, table, id }) => {
                assert_eq!(
                    (column.as_str(), table.as_str(), id),
                    ("poolid of slave_passwords row 1", "pools", 7)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ids_already_there_are_duplicates_and_missing_ids_are_assigned() {
        let mut known = Known::default();
        known.ids.entry(Table::Pools).or_default().insert(4);
        let mut dump = Dump::default();
        dump.tables.insert(Table::Pools, vec![pool(4, "x")]);
        assert!(matches!(plan(&dump, &mut known), Err(StoreError::Duplicate(_))));
        dump.tables
            .insert(Table::Pools, vec![row(&[("name", Value::Text("y".into()))])]);
        let planned = plan(&dump, &mut known).unwrap();
        assert_eq!(planned[0].1[0][0], Param::Int(Some(5)));
    }

    #[test]
    fn nulls_fill_missing_nullable_columns_and_bad_types_are_refused() {
        let mut dump = Dump::default();
        dump.tables.insert(Table::Pools, vec![pool(1, "a")]);
        dump.tables.insert(
            Table::SlavePasswords,
            vec![row(&[
                ("poolid", Value::Int(1)),
                ("password", Value::Text("pw".into())),
            ])],
        );
        let planned = plan(&dump, &mut Known::default()).unwrap();
        assert_eq!(
            planned[1].1[0],
            [Param::Int(Some(1)), Param::Int(None), Param::Text(Some("pw".into()))]
        );
        dump.tables
            .insert(Table::Pools, vec![row(&[("poolid", Value::Text("1".into()))])]);
        match plan(&dump, &mut Known::default()) {
            Err(StoreError::Input(e)) => {
                assert_eq!(e.column, "pools.poolid");
                assert_eq!(e.problem, "pools row 1: must be an integer");
            }
            other => panic!("{other:?}"),
        }
    }
}
