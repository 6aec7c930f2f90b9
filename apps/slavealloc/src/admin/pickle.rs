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
    let bytes = protocol0_quotes_as_hex(bytes);
    let value = serde_pickle::value_from_slice(&bytes, DeOptions::new()).context("not a readable pickle")?;
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
        dump.tables.insert(table, rows);
    }
    dump.sort();
    Ok(dump)
}

/// Protocol 0 opcodes whose argument is one line; `c` and `i` take two.
const LINE_ARGUMENT: &[u8] = b"ILFSVpgP";
/// Protocol 0 opcodes without an argument.
const NO_ARGUMENT: &[u8] = b"(.02NRabdlostu}])e";

/// Python 2's `cPickle` writes a protocol-0 `str` as its `repr`, which
/// escapes a quote with a backslash when the text holds both kinds
/// (`S'it\'s "here"'`), an escape serde-pickle does not know. This rewrites
/// the two quote escapes of every `STRING` argument as `\x27` and `\x22`,
/// which it does, walking the opcodes so that nothing else is touched.
/// Anything that is not plain protocol 0 (a binary opcode) is returned as
/// it came, for serde-pickle to read or refuse.
fn protocol0_quotes_as_hex(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&op, after)) = rest.split_first() {
        out.push(op);
        rest = after;
        let lines = match op {
            b'c' | b'i' => 2,
            op if LINE_ARGUMENT.contains(&op) => 1,
            op if NO_ARGUMENT.contains(&op) => 0,
            _ => return std::borrow::Cow::Borrowed(bytes),
        };
        for _ in 0..lines {
            let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                return std::borrow::Cow::Borrowed(bytes);
            };
            let (line, after) = rest.split_at(end + 1);
            if op == b'S' {
                unescape_quotes(line, &mut out);
            } else {
                out.extend_from_slice(line);
            }
            rest = after;
        }
        if op == b'.' {
            out.extend_from_slice(rest);
            break;
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Copies a `repr` literal, `\'` and `\"` written as hex escapes; every
/// other escape (`\\` included) is kept whole so that its second byte is
/// never read as the start of one.
fn unescape_quotes(line: &[u8], out: &mut Vec<u8>) {
    let mut bytes = line.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'\'') => out.extend_from_slice(b"\\x27"),
            Some(b'"') => out.extend_from_slice(b"\\x22"),
            Some(&other) => out.extend_from_slice(&[b'\\', other]),
            None => out.push(b'\\'),
        }
    }
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
        let given = slavealloc_domain::schema::Given::from(&value);
        out.insert(c.name.to_owned(), c.parse(&given).map_err(|e| anyhow!("{e}"))?);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What `fixtures/pickle/make_py27_pickles.py` put in its dump.
    const TEMPLATE: &str =
        "# it's \"quoted\"\nbasedir = r'%(basedir)s'\npath = 'C:\\\\builds\\\\' + \"it\\'s\"\n\tdone\n";
    const NOTES: &str = "bug 1234: it's \"flaky\" \\' caf\u{e9}";

    fn text_of(dump: &Dump, table: Table, column: &str) -> String {
        match dump.rows(table)[0].get(column) {
            Some(Value::Text(t)) => t.clone(),
            other => panic!("{column}: {other:?}"),
        }
    }

    /// Bug: a template or note holding both quote kinds, which Python 2's
    /// cPickle writes as `S'...\'...'`, was refused ("literal is invalid").
    #[test]
    fn a_python27_protocol0_dump_with_both_quote_kinds_reads_exactly() {
        let bytes = include_bytes!("../../../../fixtures/pickle/python27-quotes-proto0.pkl");
        let dump = read(bytes).unwrap();
        assert_eq!(text_of(&dump, Table::TacTemplates, "template"), TEMPLATE);
        assert_eq!(text_of(&dump, Table::Masters, "notes"), NOTES);
    }

    #[test]
    fn only_string_arguments_are_rewritten() {
        // A backslash-quote outside a STRING argument (here a GET's
        // argument, which no pickler writes) is left for serde-pickle to
        // judge; an escaped backslash before a quote stays a backslash.
        assert_eq!(&*protocol0_quotes_as_hex(b"S'a\\'b'\n."), b"S'a\\x27b'\n.");
        assert_eq!(&*protocol0_quotes_as_hex(b"S'a\\\\'\n."), b"S'a\\\\'\n.");
        assert_eq!(&*protocol0_quotes_as_hex(b"g\\'\n."), b"g\\'\n.");
        // Binary pickles (protocol 2) pass untouched.
        let binary = b"\x80\x02}q\x00.";
        assert!(matches!(protocol0_quotes_as_hex(binary), std::borrow::Cow::Borrowed(_)));
    }
}
