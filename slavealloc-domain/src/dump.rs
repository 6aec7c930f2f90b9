//! The dump format: every table's rows, versioned, deterministic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::schema::{Row, Table};

/// The `format` field of every dump.
pub const DUMP_FORMAT: &str = "slavealloc-dump";
/// The current dump version.
pub const DUMP_VERSION: u32 = 1;

/// `{"format": "slavealloc-dump", "version": 1, "tables": {...}}`: rows keyed
/// by table name, each table's rows in primary-key order
/// (`slave_passwords`, which has none, by pool, distro, password), each
/// row's columns in name order. Two stores holding the same data produce
/// byte-identical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dump {
    /// Always [`DUMP_FORMAT`].
    pub format: String,
    /// [`DUMP_VERSION`] when written by this version.
    pub version: u32,
    /// Table → rows. A dump naming a table this build does not know is
    /// refused when it is read.
    pub tables: BTreeMap<Table, Vec<Row>>,
}

impl Default for Dump {
    fn default() -> Self {
        Self {
            format: DUMP_FORMAT.to_owned(),
            version: DUMP_VERSION,
            tables: BTreeMap::new(),
        }
    }
}

impl Dump {
    /// The rows of one table (empty when absent).
    pub fn rows(&self, table: Table) -> &[Row] {
        self.tables.get(&table).map(Vec::as_slice).unwrap_or_default()
    }

    /// Puts every table's rows in dump order; stores call it before
    /// returning an export.
    pub fn sort(&mut self) {
        for (table, rows) in &mut self.tables {
            let key_columns: Vec<&'static str> = match table {
                Table::SlavePasswords => vec!["poolid", "distroid", "password"],
                t => t.id_column().into_iter().collect(),
            };
            rows.sort_by(|a, b| {
                // Value's derived order puts NULL first, as SQL's ascending order does.
                key_columns
                    .iter()
                    .map(|c| a.get(*c).cmp(&b.get(*c)))
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Value;

    #[test]
    fn sorts_rows_by_key_and_passwords_by_pool_distro_password() {
        let r = |pairs: &[(&str, Value)]| -> Row { pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect() };
        let mut d = Dump::default();
        d.tables.insert(
            Table::Pools,
            vec![r(&[("poolid", Value::Int(3))]), r(&[("poolid", Value::Int(1))])],
        );
        d.tables.insert(
            Table::SlavePasswords,
            vec![
                r(&[
                    ("poolid", Value::Int(1)),
                    ("distroid", Value::Int(2)),
                    ("password", Value::Text("b".into())),
                ]),
                r(&[
                    ("poolid", Value::Int(1)),
                    ("distroid", Value::Null),
                    ("password", Value::Text("a".into())),
                ]),
            ],
        );
        d.sort();
        assert_eq!(d.rows(Table::Pools)[0]["poolid"], Value::Int(1));
        assert_eq!(d.rows(Table::SlavePasswords)[0]["distroid"], Value::Null);
        assert_eq!(
            serde_json::to_string(&Dump::default()).unwrap(),
            r#"{"format":"slavealloc-dump","version":1,"tables":{}}"#
        );
    }
}
