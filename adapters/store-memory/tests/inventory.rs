//! The Inventory service over the in-memory store: denormalized listings,
//! filters, checked writes.
#![allow(clippy::unwrap_used)] // a panic is the failure report a test wants

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::json;
use slavealloc_domain::schema::Value;
use slavealloc_domain::{Dump, FixedHost, Inventory, InventoryStore, SlaveFilter, StoreError, Table};
use slavealloc_store_memory::MemoryStore;

fn fleet() -> Dump {
    let lookup = |names: &[&str], id: &str| -> serde_json::Value {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| json!({ (id): i + 1, "name": n }))
            .collect()
    };
    let slave = |id: i32, name: &str, env: i32, purpose: i32, pool: i32, enabled: bool| {
        json!({"slaveid": id, "name": name, "distroid": 1, "bitsid": 1, "speedid": 1, "purposeid": purpose,
               "dcid": 1, "trustid": 1, "envid": env, "poolid": pool, "basedir": "/b", "locked_masterid": null,
               "custom_tplid": null, "enabled": enabled, "notes": null, "current_masterid": null})
    };
    serde_json::from_value(json!({"format": "slavealloc-dump", "version": 1, "tables": {
        "distros": lookup(&["ubuntu64"], "distroid"), "bitlengths": lookup(&["64"], "bitsid"),
        "speeds": lookup(&["fast"], "speedid"), "purposes": lookup(&["build", "tests"], "purposeid"),
        "datacenters": lookup(&["mdc1"], "dcid"), "trustlevels": lookup(&["core"], "trustid"),
        "environments": lookup(&["prod", "decomm"], "envid"), "pools": lookup(&["build-pool", "test-pool"], "poolid"),
        "masters": [{"masterid": 1, "nickname": "bm01", "fqdn": "bm01.example", "http_port": 0, "pb_port": 9001,
                     "dcid": 1, "poolid": 1, "enabled": true, "notes": null}],
        "slaves": [slave(1, "b-1", 1, 1, 1, true), slave(2, "t-1", 1, 2, 2, false), slave(3, "old-1", 2, 1, 1, true)],
    }}))
    .unwrap()
}

fn inventory() -> (Inventory, MemoryStore) {
    let store = MemoryStore::from_dump(&fleet()).unwrap();
    let host = Arc::new(FixedHost {
        now: SystemTime::UNIX_EPOCH,
        fqdn: "alloc".into(),
    });
    (Inventory::new(Arc::new(store.clone()), host), store)
}

fn names(rows: &[slavealloc_domain::Row]) -> Vec<&str> {
    rows.iter().map(|r| r["name"].as_text().unwrap()).collect()
}

#[tokio::test]
async fn slaves_are_denormalized_and_decomm_is_left_out() {
    let (inv, _) = inventory();
    let rows = inv.list(Table::Slaves, &SlaveFilter::default()).await.unwrap();
    assert_eq!(names(&rows), ["b-1", "t-1"]);
    assert_eq!(rows[0]["pool"], Value::Text("build-pool".into()));
    assert_eq!(rows[0]["environment"], Value::Text("prod".into()));
    assert_eq!(rows[0]["locked_master"], Value::Null);
    let all = inv
        .list(
            Table::Slaves,
            &SlaveFilter {
                include_decomm: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(names(&all), ["b-1", "t-1", "old-1"]);
    let masters = inv.list(Table::Masters, &SlaveFilter::default()).await.unwrap();
    assert_eq!(masters[0]["datacenter"], Value::Text("mdc1".into()));
}

#[tokio::test]
async fn filters_match_any_of_their_names() {
    let (inv, _) = inventory();
    let f = |pool: &[&str], enabled: Option<bool>| SlaveFilter {
        pool: pool.iter().map(|s| s.to_string()).collect(),
        enabled,
        ..Default::default()
    };
    let inv = &inv;
    let by = |f| async move {
        names(&inv.list(Table::Slaves, &f).await.unwrap())
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(by(f(&["test-pool"], None)).await, ["t-1"]);
    assert_eq!(by(f(&["test-pool", "build-pool"], None)).await, ["b-1", "t-1"]);
    assert_eq!(by(f(&[], Some(false))).await, ["t-1"]);
    assert!(by(f(&["nope"], None)).await.is_empty());
}

#[tokio::test]
async fn a_bad_put_changes_nothing_and_names_the_column() {
    let (inv, store) = inventory();
    let before = store.get(Table::Slaves, 1).await.unwrap();
    let body = json!({"poolid": 2, "enabled": "maybe"});
    let err = inv.update(Table::Slaves, 1, &changes(&body), "t").await.unwrap_err();
    assert!(matches!(&err, StoreError::Input(e) if e.column == "enabled"), "{err}");
    let body = json!({"poolid": 99});
    let err = inv.update(Table::Slaves, 1, &changes(&body), "t").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::InvalidReference { column, .. } if column == "poolid"),
        "{err}"
    );
    assert_eq!(store.get(Table::Slaves, 1).await.unwrap(), before);
}

#[tokio::test]
async fn byname_lookups_lower_case_slave_names() {
    let (inv, _) = inventory();
    let row = inv.find(Table::Slaves, "B-1").await.unwrap().unwrap();
    assert_eq!(row["slaveid"], Value::Int(1));
    assert!(
        inv.find(Table::Masters, "BM01").await.unwrap().is_none(),
        "only slave names are case-folded"
    );
}

/// A client's JSON body, decoded as the HTTP adapter decodes it.
fn changes(body: &serde_json::Value) -> slavealloc_domain::schema::Changes {
    serde_json::from_value(body.clone()).unwrap()
}
