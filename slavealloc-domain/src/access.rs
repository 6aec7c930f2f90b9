//! Who may change what.
//!
//! Every slave runs the tac this service renders, so the columns that
//! decide the code a slave runs (`tac_templates`, `slaves.custom_tplid`)
//! or where it sends its password (`masters.fqdn`, `masters.pb_port`) are
//! worth more than the day-to-day ones. A writer has a [`Permission`]:
//!
//! | permission | may write |
//! | --- | --- |
//! | [`Permission::Operator`] | `slaves`: `enabled`, `notes`, `locked_masterid`, `poolid`, `envid`; `masters`: `enabled`, `notes` (enable, disable, lock, notes, pool and environment moves, drains) |
//! | [`Permission::Admin`] | everything, every create and every delete |
//! | [`Permission::Open`] (no tokens configured) | everything but the code: no write of `tac_templates`, no change of `slaves.custom_tplid` |
//!
//! A key whose value equals the stored one is not a write of it (the
//! original UI PUTs whole rows back): [`Inventory`](crate::Inventory) drops
//! such keys before it checks, and never writes them.

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::schema::Table;

/// What a writer may change; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// No tokens are configured: writes are open, as in the original,
    /// except the code slaves run.
    Open,
    /// Day-to-day fleet work.
    Operator,
    /// Everything.
    Admin,
}

impl Permission {
    /// Its name in configuration and messages.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Open => "open",
            Permission::Operator => "operator",
            Permission::Admin => "admin",
        }
    }
}

/// Who writes: the name the audit log records and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    /// The audit log's actor (a token's name, or the client's address).
    pub name: String,
    /// What they may write.
    pub permission: Permission,
}

impl Writer {
    /// An admin: in-process callers that hold the database anyway (the
    /// admin command line on a database URL, embedders).
    pub fn admin(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            permission: Permission::Admin,
        }
    }
}

/// What a write does to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation<'a> {
    /// A new row.
    Create,
    /// Changes of these columns (unchanged keys already dropped).
    Update(&'a [&'a str]),
    /// Removing a row.
    Delete,
}

/// Whether a column decides the code a slave runs.
pub fn is_code(table: Table, column: &str) -> bool {
    matches!(table, Table::TacTemplates) || (table == Table::Slaves && column == "custom_tplid")
}

/// The permission a change of `column` needs from a token holder.
pub fn needed_for(table: Table, column: &str) -> Permission {
    match (table, column) {
        (Table::Slaves, "enabled" | "notes" | "locked_masterid" | "poolid" | "envid")
        | (Table::Masters, "enabled" | "notes") => Permission::Operator,
        _ => Permission::Admin,
    }
}

/// Checks that `permission` allows `operation` on `table`.
///
/// # Errors
/// [`StoreError::Forbidden`] naming the first column or operation it does
/// not allow and what would.
pub fn check(table: Table, operation: Operation<'_>, permission: Permission) -> Result<(), StoreError> {
    let t = table.name();
    match permission {
        Permission::Admin => Ok(()),
        Permission::Open => {
            let code = match operation {
                Operation::Create | Operation::Delete => is_code(table, ""),
                Operation::Update(columns) => columns.iter().any(|c| is_code(table, c)),
            };
            if code {
                Err(StoreError::Forbidden(format!(
                    "{t}: templates decide the code every slave runs; writing them needs an admin token \
                     (configure [tokens] in the daemon's configuration)"
                )))
            } else {
                Ok(())
            }
        }
        Permission::Operator => match operation {
            Operation::Create => Err(forbidden(format!("creating {t} rows"))),
            Operation::Delete => Err(forbidden(format!("deleting {t} rows"))),
            Operation::Update(columns) => match columns.iter().find(|c| needed_for(table, c) > permission) {
                Some(c) => Err(forbidden(format!("writing {t}.{c}"))),
                None => Ok(()),
            },
        },
    }
}

fn forbidden(what: String) -> StoreError {
    StoreError::Forbidden(format!("{what} needs an admin token; this token is an operator's"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(table: Table, columns: &[&str], p: Permission) -> Result<(), StoreError> {
        check(table, Operation::Update(columns), p)
    }

    #[test]
    fn operators_do_fleet_work_and_nothing_that_changes_code_or_addresses() {
        let op = Permission::Operator;
        update(
            Table::Slaves,
            &["enabled", "notes", "locked_masterid", "poolid", "envid"],
            op,
        )
        .unwrap();
        update(Table::Masters, &["enabled", "notes"], op).unwrap();
        for (table, column) in [
            (Table::Slaves, "custom_tplid"),
            (Table::Slaves, "basedir"),
            (Table::Slaves, "distroid"),
            (Table::Masters, "fqdn"),
            (Table::Masters, "pb_port"),
            (Table::Masters, "poolid"),
            (Table::TacTemplates, "template"),
            (Table::Pools, "name"),
        ] {
            let e = update(table, &[column, "notes"], op).unwrap_err();
            assert!(e.to_string().contains(column) && e.to_string().contains("admin"), "{e}");
        }
        for table in [Table::Masters, Table::Pools, Table::Slaves, Table::TacTemplates] {
            assert!(check(table, Operation::Create, op).is_err(), "{table:?}");
            assert!(check(table, Operation::Delete, op).is_err(), "{table:?}");
        }
    }

    #[test]
    fn open_writes_never_reach_the_code() {
        let open = Permission::Open;
        update(Table::Masters, &["fqdn", "pb_port"], open).unwrap();
        update(Table::Slaves, &["basedir", "enabled"], open).unwrap();
        check(Table::Masters, Operation::Create, open).unwrap();
        for e in [
            update(Table::Slaves, &["notes", "custom_tplid"], open).unwrap_err(),
            update(Table::TacTemplates, &["name"], open).unwrap_err(),
            check(Table::TacTemplates, Operation::Create, open).unwrap_err(),
            check(Table::TacTemplates, Operation::Delete, open).unwrap_err(),
        ] {
            assert!(e.to_string().contains("admin token"), "{e}");
        }
    }

    #[test]
    fn admins_may_do_everything() {
        for table in Table::ALL {
            for c in table.columns() {
                update(table, &[c.name], Permission::Admin).unwrap();
            }
            check(table, Operation::Create, Permission::Admin).unwrap();
            check(table, Operation::Delete, Permission::Admin).unwrap();
        }
    }
}
