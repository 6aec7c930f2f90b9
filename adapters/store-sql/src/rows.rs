//! Rows as the schema metadata describes them: which columns to select,
//! how a [`Value`] becomes a typed [`Param`], and how selected values
//! become [`Row`]s and entities.

use slavealloc_domain::entities::{Master, Slave, SlavePassword, TacTemplate};
use slavealloc_domain::schema::{Column, InputError, Kind, Row, Table, Value};
use slavealloc_domain::StoreError;

use crate::driver::{Out, Param};

/// How a column is read.
pub(crate) fn out(column: &Column) -> Out {
    match column.kind {
        Kind::Id | Kind::Int | Kind::Port | Kind::Ref(_) => Out::Int,
        Kind::Bool => Out::Bool,
        Kind::Name | Kind::SlaveName | Kind::Text => Out::Text,
    }
}

/// Every column of `table`, for a `SELECT` list, and how to read them.
pub(crate) fn select_list(table: Table) -> (String, Vec<Out>) {
    let names: Vec<&str> = table.columns().iter().map(|c| c.name).collect();
    (names.join(", "), table.columns().iter().map(out).collect())
}

/// The row a `SELECT` of [`select_list`] returned.
pub(crate) fn to_row(table: Table, values: Vec<Value>) -> Row {
    table
        .columns()
        .iter()
        .zip(values)
        .map(|(c, v)| (c.name.to_owned(), v))
        .collect()
}

fn input(column: &str, problem: impl Into<String>) -> StoreError {
    StoreError::Input(InputError {
        column: column.to_owned(),
        problem: problem.into(),
    })
}

/// A value checked against its column and typed for binding.
///
/// # Errors
/// [`StoreError::Input`] naming `label` (the column, or where the row came
/// from) when the value is not of the column's type or does not fit.
pub(crate) fn param(column: &Column, value: &Value, label: &str) -> Result<Param, StoreError> {
    match (out(column), value) {
        (o, Value::Null) if column.nullable => Ok(match o {
            Out::Int => Param::Int(None),
            Out::Bool => Param::Bool(None),
            Out::Text => Param::Text(None),
        }),
        (_, Value::Null) => Err(input(label, "may not be null")),
        (Out::Int, Value::Int(i)) => i32::try_from(*i)
            .map(|i| Param::Int(Some(i)))
            .map_err(|_| input(label, format!("{i} does not fit a 32-bit integer"))),
        (Out::Bool, Value::Bool(b)) => Ok(Param::Bool(Some(*b))),
        (Out::Text, Value::Text(s)) if s.contains('\0') => Err(input(label, "may not contain a NUL character")),
        (Out::Text, Value::Text(s)) => Ok(Param::Text(Some(s.clone()))),
        (Out::Int, _) => Err(input(label, "must be an integer")),
        (Out::Bool, _) => Err(input(label, "must be a boolean")),
        (Out::Text, _) => Err(input(label, "must be a string")),
    }
}

/// Reads selected values in order, typed, for the entities the allocation
/// needs; a value of the wrong type is a broken database, not a panic.
struct Reader<'a> {
    values: std::slice::Iter<'a, Value>,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> Result<&'a Value, StoreError> {
        self.values
            .next()
            .ok_or_else(|| StoreError::Other(format!("{}: too few columns", self.what)))
    }

    fn bad(&self, want: &str, got: &Value) -> StoreError {
        StoreError::Other(format!("{}: expected {want}, found {got:?}", self.what))
    }

    fn int(&mut self) -> Result<i32, StoreError> {
        match self.next()? {
            Value::Int(i) => {
                i32::try_from(*i).map_err(|_| StoreError::Other(format!("{}: {i} out of range", self.what)))
            }
            v => Err(self.bad("an integer", &v.clone())),
        }
    }

    fn opt_int(&mut self) -> Result<Option<i32>, StoreError> {
        match self.next()? {
            Value::Null => Ok(None),
            Value::Int(i) => i32::try_from(*i)
                .map(Some)
                .map_err(|_| StoreError::Other(format!("{}: {i} out of range", self.what))),
            v => Err(self.bad("an integer or NULL", &v.clone())),
        }
    }

    fn text(&mut self) -> Result<String, StoreError> {
        match self.next()? {
            Value::Text(s) => Ok(s.clone()),
            v => Err(self.bad("a string", &v.clone())),
        }
    }

    fn opt_text(&mut self) -> Result<Option<String>, StoreError> {
        match self.next()? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            v => Err(self.bad("a string or NULL", &v.clone())),
        }
    }

    fn bool(&mut self) -> Result<bool, StoreError> {
        match self.next()? {
            Value::Bool(b) => Ok(*b),
            v => Err(self.bad("a boolean", &v.clone())),
        }
    }
}

fn reader<'a>(values: &'a [Value], what: &'static str) -> Reader<'a> {
    Reader {
        values: values.iter(),
        what,
    }
}

/// A slave from a `SELECT` of [`select_list`]`(Table::Slaves)`.
pub(crate) fn slave(values: &[Value]) -> Result<Slave, StoreError> {
    let mut r = reader(values, "slaves row");
    Ok(Slave {
        slaveid: r.int()?,
        name: r.text()?,
        distroid: r.int()?,
        bitsid: r.int()?,
        speedid: r.int()?,
        purposeid: r.int()?,
        dcid: r.int()?,
        trustid: r.int()?,
        envid: r.int()?,
        poolid: r.int()?,
        basedir: r.text()?,
        locked_masterid: r.opt_int()?,
        custom_tplid: r.opt_int()?,
        enabled: r.bool()?,
        notes: r.opt_text()?,
        current_masterid: r.opt_int()?,
    })
}

/// A master from a `SELECT` of [`select_list`]`(Table::Masters)`.
pub(crate) fn master(values: &[Value]) -> Result<Master, StoreError> {
    let mut r = reader(values, "masters row");
    Ok(Master {
        masterid: r.int()?,
        nickname: r.text()?,
        fqdn: r.text()?,
        http_port: r.int()?,
        pb_port: r.int()?,
        dcid: r.int()?,
        poolid: r.int()?,
        enabled: r.bool()?,
        notes: r.opt_text()?,
    })
}

/// A password row from a `SELECT` of [`select_list`]`(Table::SlavePasswords)`.
pub(crate) fn password(values: &[Value]) -> Result<SlavePassword, StoreError> {
    let mut r = reader(values, "slave_passwords row");
    Ok(SlavePassword {
        poolid: r.int()?,
        distroid: r.opt_int()?,
        password: r.text()?,
    })
}

/// A template from a `SELECT` of [`select_list`]`(Table::TacTemplates)`.
pub(crate) fn template(values: &[Value]) -> Result<TacTemplate, StoreError> {
    let mut r = reader(values, "tac_templates row");
    Ok(TacTemplate {
        tplid: r.int()?,
        name: r.text()?,
        template: r.text()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_readers_follow_the_column_order_of_the_schema() {
        // The readers are positional: this pins them to Table::columns().
        let names = |t: Table| t.columns().iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(
            names(Table::Slaves),
            [
                "slaveid",
                "name",
                "distroid",
                "bitsid",
                "speedid",
                "purposeid",
                "dcid",
                "trustid",
                "envid",
                "poolid",
                "basedir",
                "locked_masterid",
                "custom_tplid",
                "enabled",
                "notes",
                "current_masterid"
            ]
        );
        assert_eq!(
            names(Table::Masters),
            [
                "masterid",
                "nickname",
                "fqdn",
                "http_port",
                "pb_port",
                "dcid",
                "poolid",
                "enabled",
                "notes"
            ]
        );
        assert_eq!(names(Table::SlavePasswords), ["poolid", "distroid", "password"]);
        assert_eq!(names(Table::TacTemplates), ["tplid", "name", "template"]);
    }

    #[test]
    fn params_are_checked_against_their_column() {
        let enabled = Table::Slaves.column("enabled").unwrap();
        let notes = Table::Slaves.column("notes").unwrap();
        let poolid = Table::Slaves.column("poolid").unwrap();
        assert_eq!(param(notes, &Value::Null, "notes").unwrap(), Param::Text(None));
        assert_eq!(
            param(enabled, &Value::Bool(false), "enabled").unwrap(),
            Param::Bool(Some(false))
        );
        let err = |c, v| match param(c, &v, "x") {
            Err(StoreError::Input(e)) => e.problem,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(poolid, Value::Null), "may not be null");
        assert_eq!(err(enabled, Value::Int(1)), "must be a boolean");
        assert_eq!(
            err(poolid, Value::Int(1 << 40)),
            "1099511627776 does not fit a 32-bit integer"
        );
        assert_eq!(
            err(notes, Value::Text("a\0b".into())),
            "may not contain a NUL character"
        );
    }

    #[test]
    fn unknown_keys_are_refused_before_they_reach_sql() {
        // Column names are written into SQL text: only the schema's own may
        // ever get there (the stores check with `Table::check_stored`).
        let row: Row = [("name; DROP TABLE slaves".to_owned(), Value::Int(1))].into();
        assert!(Table::Pools.check_stored(&row).is_err());
    }
}
