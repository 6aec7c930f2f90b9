//! Dumps written by the original Python `dbdump`: a pickle (protocol 0 from
//! cPickle's default, or 2) of `{table: [row dicts]}`.
//!
//! The rows are taken as the original's SQLAlchemy returned them: Python 2
//! `str` (bytes; UTF-8, else Latin-1) or `unicode` strings, `int`/`long`
//! numbers, booleans as `True`/`False` or as 0/1 (MySQL's `TINYINT`),
//! `None`. Every value is checked against the schema here, so a pickle that
//! does not fit is refused with the table, row and column named, before any
//! database is touched.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context};
use serde_pickle::{DeOptions, HashableValue, Value as Pickled};
use slavealloc_domain::schema::{Kind, Row, Table, Value};
use slavealloc_domain::Dump;

/// Whether `bytes` look like a pickle: protocol 2+ starts with the PROTO
/// opcode, protocol 0 and 1 dicts with MARK or EMPTY_DICT.
pub fn looks_like_pickle(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(0x80 | b'(' | b'}'))
}

/// Reads an original dump into a [`Dump`].
///
/// # Errors
/// Not a pickle of a dict of lists of dicts; an unknown table or column; a
/// value the column does not accept; a required column missing.
pub fn read(bytes: &[u8]) -> anyhow::Result<Dump> {
    let value = serde_pickle::value_from_slice(bytes, DeOptions::new()).context("not a readable pickle")?;
    let Pickled::Dict(tables) = value else {
        bail!("the pickle holds no dict of tables");
    };
    let mut dump = Dump::default();
    for (key, rows) in tables {
        let name = key_name(&key)?;
        let table: Table = name.parse().map_err(|e| anyhow!("{e}"))?;
        let (Pickled::List(rows) | Pickled::Tuple(rows)) = rows else {
            bail!("table {name}: not a list of rows");
        };
        let rows = rows
            .into_iter()
            .enumerate()
            .map(|(i, row)| convert_row(table, row).with_context(|| format!("table {name}, row {}", i + 1)))
            .collect::<anyhow::Result<Vec<Row>>>()?;
        dump.tables.insert(table.name().to_owned(), rows);
    }
    dump.sort();
    Ok(dump)
}

fn key_name(key: &HashableValue) -> anyhow::Result<String> {
    match key {
        HashableValue::String(s) => Ok(s.clone()),
        HashableValue::Bytes(b) => Ok(text(b)),
        other => bail!("a key that is not a name: {other:?}"),
    }
}

/// Python 2 `str` as text: UTF-8 when it is, else Latin-1 (every byte a
/// character), which is what a MySQL `latin1` column held.
fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.iter().map(|b| char::from(*b)).collect(),
    }
}

fn convert_row(table: Table, row: Pickled) -> anyhow::Result<Row> {
    let Pickled::Dict(fields) = row else {
        bail!("not a dict");
    };
    let mut values: BTreeMap<String, Pickled> = BTreeMap::new();
    for (k, v) in fields {
        values.insert(key_name(&k)?, v);
    }
    if let Some(unknown) = values.keys().find(|k| table.column(k).is_none()) {
        bail!("unknown column {unknown:?}");
    }
    let mut out = Row::new();
    for c in table.columns() {
        let value = match values.remove(c.name) {
            Some(v) => scalar(v).with_context(|| format!("column {}", c.name))?,
            // Older schemas lacked some nullable columns (custom_tplid, ...).
            None if c.nullable => Value::Null,
            None => bail!("column {} is missing", c.name),
        };
        let value = match (c.kind, value) {
            (Kind::Bool, Value::Int(i @ (0 | 1))) => Value::Bool(i == 1),
            (_, v) => v,
        };
        // The same checks a client's value gets, so nothing a backend would
        // truncate or refuse gets through. Slave names are lower-cased, as
        // machines are looked up lower-cased.
        let json = serde_json::to_value(&value)?;
        out.insert(c.name.to_owned(), c.parse(&json).map_err(|e| anyhow!("{e}"))?);
    }
    Ok(out)
}

fn scalar(v: Pickled) -> anyhow::Result<Value> {
    Ok(match v {
        Pickled::None => Value::Null,
        Pickled::Bool(b) => Value::Bool(b),
        Pickled::I64(i) => Value::Int(i),
        Pickled::String(s) => Value::Text(s),
        Pickled::Bytes(b) => Value::Text(text(&b)),
        other => bail!("a value of an unexpected type: {other:?}"),
    })
}
