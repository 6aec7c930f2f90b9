//! The schema as data: every table, its columns, their kinds, which ones a
//! client may write, and what they refer to.
//!
//! The REST API, the dump format and the generic storage operations all work
//! on [`Row`]s described by this metadata, so that the limits on values are
//! checked once, here, identically for every storage backend (a value one
//! backend would truncate or refuse is refused before it reaches any).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::name::{SlaveName, MAX_NAME_LEN};

/// The largest text value, in bytes: MariaDB's `TEXT`.
pub const MAX_TEXT_BYTES: usize = 65_535;

/// A table of the schema. Ordered by name, so that a dump's tables are in
/// name order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// `distros`
    Distros,
    /// `datacenters`
    Datacenters,
    /// `bitlengths`
    Bitlengths,
    /// `speeds`
    Speeds,
    /// `purposes`
    Purposes,
    /// `trustlevels`
    Trustlevels,
    /// `environments`
    Environments,
    /// `pools`
    Pools,
    /// `tac_templates`
    TacTemplates,
    /// `masters`
    Masters,
    /// `slaves`
    Slaves,
    /// `slave_passwords` (never exposed through the REST API)
    SlavePasswords,
    /// `audit_log`: added by this rebuild; the original tables are unchanged.
    AuditLog,
}

/// What a column holds, which decides how input is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The table's integer primary key, assigned by the store.
    Id,
    /// A 32-bit integer.
    Int,
    /// A TCP port: an integer from 0 to 65535.
    Port,
    /// An id of a row of another table.
    Ref(Table),
    /// `VARCHAR(128)`: 1 to 128 characters.
    Name,
    /// A slave name: [`SlaveName`] rules (lower-cased on write).
    SlaveName,
    /// `TEXT`: at most [`MAX_TEXT_BYTES`] bytes.
    Text,
    /// A boolean.
    Bool,
}

/// One column of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Column name, as in the original schema.
    pub name: &'static str,
    /// What it holds.
    pub kind: Kind,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// Whether `PUT /api/<table>/<id>` writes it.
    pub updatable: bool,
    /// Whether a create (`POST`, import) may set it. False for ids and for
    /// allocation state.
    pub insertable: bool,
    /// The value a create gets when it does not give one.
    pub default: Option<DefaultValue>,
    /// For a reference: the key the denormalized listing adds with the
    /// referenced row's name (`distroid` → `distro`).
    pub label: Option<&'static str>,
    /// What people call it (`bitsid` → "bits"): the web UI's field names.
    pub title: &'static str,
    /// What NULL means here, when it may be NULL ("not locked").
    pub when_null: Option<&'static str>,
}

/// A column default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// `true`
    True,
    /// `NULL`
    Null,
}

/// A stored value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A string.
    Text(String),
}

impl Value {
    /// The integer, if it is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The string, if it is one.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// A row: column name to value, in column-name order so that JSON output
/// and dumps are deterministic.
pub type Row = BTreeMap<String, Value>;

/// A value a client sent that a column does not accept. The message names
/// the column; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{column}: {problem}")]
pub struct InputError {
    /// The offending column (or `body` for the body as a whole).
    pub column: String,
    /// What is wrong, in words.
    pub problem: String,
}

impl InputError {
    /// The problem with one column (or key) of a client's input.
    pub fn new(column: &str, problem: impl Into<String>) -> Self {
        Self {
            column: column.to_owned(),
            problem: problem.into(),
        }
    }
}

/// An unknown table name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("no such table: {0}")]
pub struct UnknownTable(pub String);

const fn col(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        nullable: false,
        updatable: false,
        insertable: !matches!(kind, Kind::Id),
        default: None,
        label: None,
        title: name,
        when_null: None,
    }
}

const fn titled(mut c: Column, title: &'static str) -> Column {
    c.title = title;
    c
}

const fn null_means(mut c: Column, meaning: &'static str) -> Column {
    c.when_null = Some(meaning);
    c
}

const fn upd(mut c: Column) -> Column {
    c.updatable = true;
    c
}

const fn nullable(mut c: Column) -> Column {
    c.nullable = true;
    c.default = Some(DefaultValue::Null);
    c
}

/// A reference's label, which is also what people call it unless
/// [`titled`] says otherwise.
const fn labelled(mut c: Column, label: &'static str) -> Column {
    c.label = Some(label);
    c.title = label;
    c
}

const fn state(mut c: Column) -> Column {
    c.insertable = false;
    c
}

const fn default_true(mut c: Column) -> Column {
    c.default = Some(DefaultValue::True);
    c
}

macro_rules! lookup_columns {
    ($id:literal) => {
        &[col($id, Kind::Id), upd(col("name", Kind::Name))]
    };
}

const DISTROS: &[Column] = lookup_columns!("distroid");
const DATACENTERS: &[Column] = lookup_columns!("dcid");
const BITLENGTHS: &[Column] = lookup_columns!("bitsid");
const SPEEDS: &[Column] = lookup_columns!("speedid");
const PURPOSES: &[Column] = lookup_columns!("purposeid");
const TRUSTLEVELS: &[Column] = lookup_columns!("trustid");
const ENVIRONMENTS: &[Column] = lookup_columns!("envid");
const POOLS: &[Column] = lookup_columns!("poolid");

const TAC_TEMPLATES: &[Column] = &[
    col("tplid", Kind::Id),
    upd(col("name", Kind::Name)),
    upd(col("template", Kind::Text)),
];

const SLAVE_PASSWORDS: &[Column] = &[
    col("poolid", Kind::Ref(Table::Pools)),
    nullable(col("distroid", Kind::Ref(Table::Distros))),
    col("password", Kind::Text),
];

const MASTERS: &[Column] = &[
    col("masterid", Kind::Id),
    upd(col("nickname", Kind::Name)),
    upd(col("fqdn", Kind::Text)),
    upd(titled(col("http_port", Kind::Port), "http port (0 = none)")),
    upd(titled(col("pb_port", Kind::Port), "pb port")),
    upd(labelled(col("dcid", Kind::Ref(Table::Datacenters)), "datacenter")),
    upd(labelled(col("poolid", Kind::Ref(Table::Pools)), "pool")),
    upd(default_true(col("enabled", Kind::Bool))),
    upd(nullable(col("notes", Kind::Text))),
];

const SLAVES: &[Column] = &[
    col("slaveid", Kind::Id),
    col("name", Kind::SlaveName),
    upd(labelled(col("distroid", Kind::Ref(Table::Distros)), "distro")),
    upd(titled(
        labelled(col("bitsid", Kind::Ref(Table::Bitlengths)), "bitlength"),
        "bits",
    )),
    // The original's PUT ignored speed; writing it is harmless to its UI,
    // which sends back the value it read, and lets ours edit it.
    upd(labelled(col("speedid", Kind::Ref(Table::Speeds)), "speed")),
    upd(labelled(col("purposeid", Kind::Ref(Table::Purposes)), "purpose")),
    upd(labelled(col("dcid", Kind::Ref(Table::Datacenters)), "datacenter")),
    upd(titled(
        labelled(col("trustid", Kind::Ref(Table::Trustlevels)), "trustlevel"),
        "trust level",
    )),
    upd(labelled(col("envid", Kind::Ref(Table::Environments)), "environment")),
    upd(labelled(col("poolid", Kind::Ref(Table::Pools)), "pool")),
    upd(col("basedir", Kind::Text)),
    upd(titled(
        null_means(
            labelled(
                nullable(col("locked_masterid", Kind::Ref(Table::Masters))),
                "locked_master",
            ),
            "not locked",
        ),
        "locked to master",
    )),
    upd(titled(
        null_means(
            nullable(col("custom_tplid", Kind::Ref(Table::TacTemplates))),
            "default template",
        ),
        "tac template",
    )),
    upd(default_true(col("enabled", Kind::Bool))),
    upd(nullable(col("notes", Kind::Text))),
    state(labelled(
        nullable(col("current_masterid", Kind::Ref(Table::Masters))),
        "current_master",
    )),
];

const AUDIT_LOG: &[Column] = &[
    col("id", Kind::Id),
    col("at", Kind::Name),
    col("actor", Kind::Text),
    col("table_name", Kind::Name),
    col("row_id", Kind::Int),
    nullable(col("old_values", Kind::Text)),
    nullable(col("new_values", Kind::Text)),
];

/// The slaves listing, as the web UI's table and `slavealloc list slaves`
/// show it: (key of a denormalized row, short header), in the original
/// UI's order.
const SLAVE_LISTING: &[(&str, &str)] = &[
    ("name", "name"),
    ("distro", "distro"),
    ("bitlength", "bits"),
    ("speed", "speed"),
    ("datacenter", "DC"),
    ("trustlevel", "trust"),
    ("environment", "env"),
    ("purpose", "purpose"),
    ("pool", "pool"),
    ("current_master", "current master"),
    ("locked_master", "locked to"),
    ("notes", "notes"),
    ("enabled", "enabled"),
];

/// The masters listing (`slavealloc list masters`; the web UI's table adds
/// what it counts and links `fqdn:http_port`).
const MASTER_LISTING: &[(&str, &str)] = &[
    ("nickname", "nickname"),
    ("fqdn", "fqdn"),
    ("http_port", "http port"),
    ("pb_port", "pb port"),
    ("datacenter", "DC"),
    ("pool", "pool"),
    ("notes", "notes"),
    ("enabled", "enabled"),
];

impl Table {
    /// The columns a listing of this table shows, as (key of a
    /// denormalized row, short header): the one definition the web UI and
    /// the command line share. Empty for tables without one.
    pub fn listing(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Table::Slaves => SLAVE_LISTING,
            Table::Masters => MASTER_LISTING,
            _ => &[],
        }
    }

    /// Every table, in the order a dump loads them (referenced tables first).
    pub const ALL: [Table; 13] = [
        Table::Distros,
        Table::Datacenters,
        Table::Bitlengths,
        Table::Speeds,
        Table::Purposes,
        Table::Trustlevels,
        Table::Environments,
        Table::Pools,
        Table::TacTemplates,
        Table::Masters,
        Table::Slaves,
        Table::SlavePasswords,
        Table::AuditLog,
    ];

    /// The eight `(id, name)` lookup tables.
    pub const LOOKUPS: [Table; 8] = [
        Table::Distros,
        Table::Datacenters,
        Table::Bitlengths,
        Table::Speeds,
        Table::Purposes,
        Table::Trustlevels,
        Table::Environments,
        Table::Pools,
    ];

    /// The tables the REST API serves under `/api/<table>`, in the order its
    /// index page lists them.
    pub const EXPOSED: [Table; 11] = [
        Table::Slaves,
        Table::Masters,
        Table::Distros,
        Table::Datacenters,
        Table::Bitlengths,
        Table::Speeds,
        Table::Purposes,
        Table::Trustlevels,
        Table::Environments,
        Table::Pools,
        Table::TacTemplates,
    ];

    /// The SQL table name.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Distros => "distros",
            Table::Datacenters => "datacenters",
            Table::Bitlengths => "bitlengths",
            Table::Speeds => "speeds",
            Table::Purposes => "purposes",
            Table::Trustlevels => "trustlevels",
            Table::Environments => "environments",
            Table::Pools => "pools",
            Table::TacTemplates => "tac_templates",
            Table::Masters => "masters",
            Table::Slaves => "slaves",
            Table::SlavePasswords => "slave_passwords",
            Table::AuditLog => "audit_log",
        }
    }

    /// The columns, in the original's order.
    pub const fn columns(self) -> &'static [Column] {
        match self {
            Table::Distros => DISTROS,
            Table::Datacenters => DATACENTERS,
            Table::Bitlengths => BITLENGTHS,
            Table::Speeds => SPEEDS,
            Table::Purposes => PURPOSES,
            Table::Trustlevels => TRUSTLEVELS,
            Table::Environments => ENVIRONMENTS,
            Table::Pools => POOLS,
            Table::TacTemplates => TAC_TEMPLATES,
            Table::Masters => MASTERS,
            Table::Slaves => SLAVES,
            Table::SlavePasswords => SLAVE_PASSWORDS,
            Table::AuditLog => AUDIT_LOG,
        }
    }

    /// The integer primary key, or `None` for `slave_passwords`, which has
    /// none.
    pub fn id_column(self) -> Option<&'static str> {
        self.columns().iter().find(|c| c.kind == Kind::Id).map(|c| c.name)
    }

    /// The unique name column that `?byname=1` looks up: `nickname` for
    /// masters, `name` for the lookup tables, slaves and templates.
    pub fn name_column(self) -> Option<&'static str> {
        match self {
            Table::Masters => Some("nickname"),
            Table::SlavePasswords | Table::AuditLog => None,
            _ => Some("name"),
        }
    }

    /// A column by name.
    pub fn column(self, name: &str) -> Option<&'static Column> {
        self.columns().iter().find(|c| c.name == name)
    }

    /// Whether the REST API serves this table.
    pub fn is_exposed(self) -> bool {
        Table::EXPOSED.contains(&self)
    }

    /// Whether it is one of the eight `(id, name)` lookup tables.
    pub fn is_lookup(self) -> bool {
        Table::LOOKUPS.contains(&self)
    }

    /// The `(table, column)` pairs that refer to rows of this table; a row
    /// they still refer to cannot be deleted.
    pub fn referenced_by(self) -> Vec<(Table, &'static Column)> {
        Table::ALL
            .iter()
            .flat_map(|t| t.columns().iter().map(move |c| (*t, c)))
            .filter(|(_, c)| c.kind == Kind::Ref(self))
            .collect()
    }

    /// Checks a client's JSON object for a `PUT`: keeps the updatable
    /// columns it carries, checked and converted, and ignores every other
    /// key, as the original did (its UI sends back whole denormalized rows).
    ///
    /// # Errors
    /// The first column whose value is not acceptable.
    pub fn parse_update(self, body: &Changes) -> Result<Row, InputError> {
        self.columns()
            .iter()
            .filter(|c| c.updatable)
            .filter_map(|c| body.get(c.name).map(|v| Ok((c.name.to_owned(), c.parse(v)?))))
            .collect()
    }

    /// Checks a row a store is asked to write, whatever built it: every key
    /// is a column of this table and every value fits it (NULL only where
    /// allowed, integers in 32 bits, no NUL character in text). Every store
    /// refuses the same rows this way; the checks of a client's values
    /// (names, ports, lengths) are [`Table::parse_update`]'s and
    /// [`Table::parse_insert`]'s.
    ///
    /// # Errors
    /// The first key that is no column, or the first value that does not fit.
    pub fn check_stored(self, row: &Row) -> Result<(), InputError> {
        for (key, value) in row {
            let column = self
                .column(key)
                .ok_or_else(|| InputError::new(key, format!("{self} has no such column")))?;
            let fits = match (column.kind, value) {
                (_, Value::Null) => column.nullable || Err(InputError::new(key, "may not be null"))?,
                (Kind::Id | Kind::Int | Kind::Port | Kind::Ref(_), Value::Int(i)) => i32::try_from(*i)
                    .map(|_| true)
                    .map_err(|_| InputError::new(key, format!("{i} does not fit a 32-bit integer")))?,
                (Kind::Bool, Value::Bool(_)) => true,
                (Kind::Name | Kind::SlaveName | Kind::Text, Value::Text(t)) => {
                    !t.contains('\0') || Err(InputError::new(key, "may not contain a NUL character"))?
                }
                _ => false,
            };
            if !fits {
                let want = match column.kind {
                    Kind::Bool => "a boolean",
                    Kind::Name | Kind::SlaveName | Kind::Text => "a string",
                    _ => "an integer",
                };
                return Err(InputError::new(key, format!("must be {want}")));
            }
        }
        Ok(())
    }

    /// [`Table::check_stored`] for the changes of an update of row `id`,
    /// which may not change the row's id.
    ///
    /// # Errors
    /// As for [`Table::check_stored`], and an id column given another id.
    pub fn check_changes(self, id: i32, changes: &Row) -> Result<(), InputError> {
        self.check_stored(changes)?;
        match self.id_column().and_then(|c| changes.get(c).map(|v| (c, v))) {
            Some((c, v)) if *v != Value::Int(id.into()) => Err(InputError::new(c, "cannot be changed")),
            _ => Ok(()),
        }
    }

    /// Checks a client's JSON object for a create: every insertable column,
    /// with defaults for the ones left out; other keys are ignored.
    ///
    /// # Errors
    /// A required column missing, or the first value not acceptable.
    pub fn parse_insert(self, body: &Changes) -> Result<Row, InputError> {
        let mut row = Row::new();
        for c in self.columns().iter().filter(|c| c.insertable) {
            let value = match (body.get(c.name), c.default) {
                (Some(v), _) => c.parse(v)?,
                (None, Some(DefaultValue::True)) => Value::Bool(true),
                (None, Some(DefaultValue::Null)) => Value::Null,
                (None, None) => return Err(InputError::new(c.name, "is required")),
            };
            row.insert(c.name.to_owned(), value);
        }
        Ok(row)
    }
}

impl Ord for Table {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name().cmp(other.name())
    }
}

impl PartialOrd for Table {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Table {
    type Err = UnknownTable;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Table::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownTable(s.to_owned()))
    }
}

impl Column {
    /// Checks and converts one JSON value for this column.
    ///
    /// Integers accept JSON integers or strings of decimal digits (the
    /// original UI sent ports from text boxes); booleans accept `true`,
    /// `false`, `1` and `0`; NULL only where the column is nullable; no
    /// string may hold a NUL character (PostgreSQL refuses them, so every
    /// backend does).
    ///
    /// # Errors
    /// An [`InputError`] naming this column.
    pub fn parse(&self, v: &Given) -> Result<Value, InputError> {
        let err = |p: &str| Err(InputError::new(self.name, p));
        match (self.kind, v) {
            (_, Given::Null) if self.nullable => Ok(Value::Null),
            (_, Given::Null) => err("may not be null"),
            (Kind::Id | Kind::Int | Kind::Ref(_), _) => Ok(Value::Int(self.parse_int(v)?.into())),
            (Kind::Port, _) => match self.parse_int(v)? {
                p @ 0..=65535 => Ok(Value::Int(p.into())),
                _ => err("must be a port number from 0 to 65535"),
            },
            (Kind::Bool, Given::Bool(b)) => Ok(Value::Bool(*b)),
            (Kind::Bool, Given::Int(1)) => Ok(Value::Bool(true)),
            (Kind::Bool, Given::Int(0)) => Ok(Value::Bool(false)),
            (Kind::Bool, _) => err("must be true, false, 1 or 0"),
            (Kind::Name | Kind::SlaveName | Kind::Text, Given::Text(s)) => self.parse_text(s),
            (Kind::Name | Kind::SlaveName | Kind::Text, _) => err("must be a string"),
        }
    }

    fn parse_int(&self, v: &Given) -> Result<i32, InputError> {
        let parsed = match v {
            Given::Int(i) => i32::try_from(*i).ok(),
            Given::Text(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
            _ => None,
        };
        parsed.ok_or_else(|| InputError::new(self.name, "must be an integer (a 32-bit number or a string of digits)"))
    }

    fn parse_text(&self, s: &str) -> Result<Value, InputError> {
        if s.contains('\0') {
            return Err(InputError::new(self.name, "may not contain a NUL character"));
        }
        match self.kind {
            Kind::SlaveName => SlaveName::parse(s)
                .map(|n| Value::Text(n.as_str().to_owned()))
                .map_err(|e| InputError::new(self.name, e.to_string())),
            Kind::Name if s.is_empty() => Err(InputError::new(self.name, "may not be empty")),
            Kind::Name if s.chars().count() > MAX_NAME_LEN => Err(InputError::new(
                self.name,
                format!("is longer than {MAX_NAME_LEN} characters"),
            )),
            _ if s.len() > MAX_TEXT_BYTES => Err(InputError::new(
                self.name,
                format!("is longer than {MAX_TEXT_BYTES} bytes"),
            )),
            _ => Ok(Value::Text(s.to_owned())),
        }
    }
}

/// A value a client gave for a column, before it is checked: what a REST
/// body, a CSV cell or another tool's call hands the domain. Deserializes
/// from any JSON value, so a transport decodes into it without the domain
/// taking JSON.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Given {
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A string.
    Text(String),
    /// Anything else (a fraction, a list, an object): refused by every
    /// column.
    Other(serde::de::IgnoredAny),
}

impl From<&Value> for Given {
    fn from(v: &Value) -> Self {
        match v {
            Value::Null => Given::Null,
            Value::Bool(b) => Given::Bool(*b),
            Value::Int(i) => Given::Int(*i),
            Value::Text(t) => Given::Text(t.clone()),
        }
    }
}

/// A client's values by column name, for [`Table::parse_update`] and
/// [`Table::parse_insert`] (keys that are no column are ignored there).
pub type Changes = BTreeMap<String, Given>;

/// The [`Changes`] that would write `row` as it is.
pub fn changes_of(row: &Row) -> Changes {
    row.iter().map(|(k, v)| (k.clone(), Given::from(v))).collect()
}

/// Converts a row into a typed entity ([`crate::entities`]).
///
/// # Errors
/// When the row lacks a column the entity needs or holds a value of another
/// type: a store bug, reported rather than panicked on.
pub fn from_row<T: serde::de::DeserializeOwned>(row: &Row) -> Result<T, serde_json::Error> {
    serde_json::to_value(row).and_then(serde_json::from_value)
}

/// Converts a typed entity into a row.
///
/// # Errors
/// Never for the entities of this crate; the `Result` is serde's.
pub fn to_row<T: Serialize>(entity: &T) -> Result<Row, serde_json::Error> {
    serde_json::to_value(entity).and_then(serde_json::from_value)
}

#[cfg(test)]
mod tests {
    /// A client's JSON body, as the HTTP adapter decodes it.
    fn given(v: serde_json::Value) -> Changes {
        serde_json::from_value(v).unwrap()
    }

    use serde_json::json;

    use super::*;

    fn update(table: Table, body: serde_json::Value) -> Result<Row, InputError> {
        table.parse_update(&given(body))
    }

    #[test]
    fn put_keeps_updatable_columns_and_ignores_the_rest() {
        let row = update(
            Table::Slaves,
            json!({"slaveid": 9, "name": "x", "poolid": "3", "enabled": 0, "pool": "p", "success": true, "speed": "fast", "speedid": 2,
                   "custom_template": null, "current_masterid": 4, "notes": null}),
        )
        .unwrap();
        let want: Row = [
            ("enabled".to_owned(), Value::Bool(false)),
            ("notes".to_owned(), Value::Null),
            ("poolid".to_owned(), Value::Int(3)),
            ("speedid".to_owned(), Value::Int(2)),
        ]
        .into();
        assert_eq!(row, want);
    }

    #[test]
    fn bad_values_name_their_column() {
        let cases = [
            (json!({"poolid": 1.5}), "poolid"),
            (json!({"poolid": "-1"}), "poolid"),
            (json!({"poolid": 4_294_967_296_i64}), "poolid"),
            (json!({"poolid": null}), "poolid"),
            (json!({"enabled": "yes"}), "enabled"),
            (json!({"enabled": 2}), "enabled"),
            (json!({"basedir": 7}), "basedir"),
            (json!({"basedir": "a\u{0}b"}), "basedir"),
            (json!({"notes": "x".repeat(MAX_TEXT_BYTES + 1)}), "notes"),
        ];
        for (body, column) in cases {
            assert_eq!(
                update(Table::Slaves, body.clone()).unwrap_err().column,
                column,
                "{body}"
            );
        }
        assert_eq!(
            update(Table::Masters, json!({"pb_port": 70000})).unwrap_err().column,
            "pb_port"
        );
        assert_eq!(
            update(Table::Masters, json!({"nickname": ""})).unwrap_err().column,
            "nickname"
        );
        assert_eq!(
            update(Table::Pools, json!({"name": "p".repeat(129)}))
                .unwrap_err()
                .column,
            "name"
        );
    }

    #[test]
    fn insert_fills_defaults_and_requires_the_rest() {
        let row = Table::Masters
            .parse_insert(&given(
                json!({"nickname": "bm01", "fqdn": "bm01.example", "http_port": 8001, "pb_port": "9001",
                       "dcid": 1, "poolid": 2}),
            ))
            .unwrap();
        assert_eq!(row["enabled"], Value::Bool(true));
        assert_eq!(row["notes"], Value::Null);
        assert_eq!(row["pb_port"], Value::Int(9001));
        assert!(!row.contains_key("masterid"));
        let missing = Table::Masters
            .parse_insert(&given(json!({"nickname": "bm01"})))
            .unwrap_err();
        assert_eq!(missing.column, "fqdn");
    }

    #[test]
    fn slave_names_are_lower_cased_on_create() {
        let body = json!({"name": "W64-Slave", "distroid": 1, "bitsid": 1, "speedid": 1, "purposeid": 1,
                          "dcid": 1, "trustid": 1, "envid": 1, "poolid": 1, "basedir": "C:\\slave"});
        let row = Table::Slaves.parse_insert(&given(body)).unwrap();
        assert_eq!(row["name"], Value::Text("w64-slave".into()));
        assert!(!row.contains_key("current_masterid"));
    }

    #[test]
    fn references_are_known_for_delete_checks() {
        let by: Vec<_> = Table::Pools
            .referenced_by()
            .iter()
            .map(|(t, c)| (t.name(), c.name))
            .collect();
        assert_eq!(
            by,
            [
                ("masters", "poolid"),
                ("slaves", "poolid"),
                ("slave_passwords", "poolid")
            ]
        );
    }

    #[test]
    fn table_names_round_trip() {
        for t in Table::ALL {
            assert_eq!(t.name().parse::<Table>().unwrap(), t);
        }
        assert!("users".parse::<Table>().is_err());
    }
}
