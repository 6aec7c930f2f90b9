//! A long table read a page at a time, by key
//! ([`slavealloc_domain::InventoryStore::list_page`]): each page is its own
//! short read, so that a slow reader of a 100,000-slave list holds neither
//! the whole table nor a connection between pages.

use slavealloc_domain::schema::{Row, Table};
use slavealloc_domain::StoreError;

use crate::driver::{Db, Mode, Param, Sql};
use crate::inventory;
use crate::rows::{select_list, to_row};

/// At most `limit` rows with a key above `after`, in key order.
pub(crate) async fn list_page(
    db: &dyn Db,
    table: Table,
    after: Option<i64>,
    limit: usize,
) -> Result<Vec<Row>, StoreError> {
    let Some(id) = table.id_column() else {
        return match after {
            None => inventory::list(db, table).await,
            Some(_) => Ok(Vec::new()),
        };
    };
    // Keys are 32-bit: an `after` beyond them leaves nothing, one below
    // them leaves everything.
    let after = match after.map(i32::try_from) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(_)) if after.is_some_and(|a| a < 0) => None,
        Some(Err(_)) => return Ok(Vec::new()),
    };
    let d = db.dialect();
    let (columns, out) = select_list(table);
    let mut sql = Sql::new(d, &format!("SELECT {columns} FROM {table}"));
    if let Some(a) = after {
        sql.push(&format!(" WHERE {id} > ")).param(Param::Int(Some(a)));
    }
    sql.push(&format!(" ORDER BY {id} LIMIT {limit}"));
    let mut tx = db.begin(Mode::Read).await?;
    let rows = tx.fetch(&sql, &out).await?;
    Ok(rows.into_iter().map(|v| to_row(table, v)).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use slavealloc_domain::{DumpStore, InventoryStore, Table};
    use slavealloc_fixtures::{generate_fleet, FleetSpec};

    use crate::SqlStore;

    /// Pages that follow the key add up to the whole table, in order.
    #[tokio::test]
    async fn pages_add_up_to_the_list() {
        let store = SqlStore::connect("sqlite::memory:").await.unwrap();
        store
            .replace_all(&generate_fleet(&FleetSpec::with_slaves(1234)))
            .await
            .unwrap();
        let store: Arc<dyn InventoryStore> = Arc::new(store);
        for table in [Table::Slaves, Table::Masters, Table::SlavePasswords] {
            let whole = store.list(table).await.unwrap();
            let mut paged = Vec::new();
            let mut after = None;
            loop {
                let page = store.list_page(table, after, 100).await.unwrap();
                let id = table.id_column();
                after = id.and_then(|id| page.last()?.get(id)?.as_int());
                let last = page.len() < 100 || id.is_none();
                paged.extend(page);
                if last {
                    break;
                }
            }
            assert_eq!(paged, whole, "{table}");
        }
        assert!(store
            .list_page(Table::Slaves, Some(i64::MAX), 10)
            .await
            .unwrap()
            .is_empty());
    }
}
