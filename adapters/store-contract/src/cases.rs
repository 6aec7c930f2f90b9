//! The contract cases. Each takes a [`Harness`] on a fresh, empty store and
//! panics when the store breaks the contract; [`crate::contract_tests!`]
//! turns each into a test.
//!
//! They check what the ports' docs promise (`slavealloc_domain::ports`),
//! through the ports themselves and through the domain's `Allocator`.

// This module is test code: a failed unwrap is a failed case, with its
// message and line.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;
use slavealloc_domain::audit::{AuditKind, AuditQuery, NewAuditEntry};
use slavealloc_domain::inventory::NOTE_KEY;
use slavealloc_domain::lifecycle::{
    EndReason, HoldQuery, HoldTarget, LifecycleStore, NewHold, LIFECYCLE_KEY, RESUME_ACTOR,
};
use slavealloc_domain::live::{MasterStatus, PollRecord, Presence};
use slavealloc_domain::ports::{AllocationStore, DumpStore, InventoryStore, MasterChange, Snapshot};
use slavealloc_domain::schema::{Row, Table, Value};
use slavealloc_domain::testing::answered_poll as poll;
use slavealloc_domain::{Actor, AllocationError, BalanceCount, Intent, LiveStore, Reason, SlaveName, StoreError};

use crate::fleet::{int, one_pool, row, text, varied, Fleet};
use crate::{allocator_at, now, Harness, StoreFactory};

fn actor(name: &str) -> Actor {
    Actor {
        name: name.to_owned(),
        at: now(),
    }
}

/// `audit_log.at` for [`now`].
const NOW_AT: &str = "2023-11-14T22:13:20Z";

/// A client's JSON body, decoded as the HTTP adapter decodes it.
fn body(v: serde_json::Value) -> slavealloc_domain::schema::Changes {
    serde_json::from_value(v).unwrap()
}

async fn load<F: StoreFactory>(h: &Harness<F>, fleet: &Fleet) {
    h.store().replace_all(&fleet.dump()).await.unwrap();
}

async fn create<F: StoreFactory>(h: &Harness<F>, table: Table, v: serde_json::Value) -> Row {
    let row = table.parse_insert(&body(v)).unwrap();
    h.store().insert(table, row, actor("test")).await.unwrap()
}

fn id_of(table: Table, row: &Row) -> i32 {
    let id = row[table.id_column().unwrap()].as_int().unwrap();
    i32::try_from(id).unwrap()
}

async fn slave<F: StoreFactory>(h: &Harness<F>, id: i32) -> Row {
    h.store().get(Table::Slaves, id).await.unwrap().unwrap()
}

async fn current<F: StoreFactory>(h: &Harness<F>, slaveid: i32) -> Option<i64> {
    slave(h, slaveid).await["current_masterid"].as_int()
}

async fn audit_len<F: StoreFactory>(h: &Harness<F>) -> usize {
    let all = AuditQuery {
        limit: u32::MAX,
        ..AuditQuery::default()
    };
    h.store().audit(all).await.unwrap().len()
}

/// The master `gettac` gives `name`.
async fn gettac<F: StoreFactory>(h: &Harness<F>, name: &str) -> i32 {
    let a = h.allocator().gettac(name).await.unwrap();
    a.decision.master.unwrap().masterid
}

fn name(s: &str) -> SlaveName {
    SlaveName::parse(s).unwrap()
}

/// Counts per master of the given slaves' current masters.
async fn spread<F: StoreFactory>(h: &Harness<F>, slaveids: impl IntoIterator<Item = i32>) -> BTreeMap<i64, u32> {
    let mut counts = BTreeMap::new();
    for id in slaveids {
        if let Some(m) = current(h, id).await {
            *counts.entry(m).or_default() += 1;
        }
    }
    counts
}

fn pool_body() -> serde_json::Value {
    json!({"name": "pool-a"})
}

fn master_body(nickname: &str, pool: i64) -> serde_json::Value {
    json!({"nickname": nickname, "fqdn": format!("{nickname}.example.com"), "http_port": 8010,
           "pb_port": "9010", "dcid": 1, "poolid": pool})
}

fn slave_body(name: &str, pool: i64) -> serde_json::Value {
    json!({"name": name, "distroid": 1, "bitsid": 1, "speedid": 1, "purposeid": 1, "dcid": 1,
           "trustid": 1, "envid": 1, "poolid": pool, "basedir": "/builds/slave"})
}

// ---------------------------------------------------------------- inventory

/// A created row comes back with its id and every column of its table, and
/// `get`, `find_by_name` and `list` return the same row.
pub async fn inserted_rows_come_back_whole<F: StoreFactory>(h: Harness<F>) {
    load(&h, &Fleet::new()).await;
    let s = h.store();
    let pool = create(&h, Table::Pools, pool_body()).await;
    let poolid = id_of(Table::Pools, &pool);
    assert!(poolid > 3, "the new id follows the loaded ones: {pool:?}");
    assert_eq!(pool["name"], text("pool-a"));

    let master = create(&h, Table::Masters, master_body("bm-new", poolid.into())).await;
    let columns: Vec<&str> = Table::Masters.columns().iter().map(|c| c.name).collect();
    assert_eq!(master.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut sorted = columns.clone();
        sorted.sort_unstable();
        sorted
    });
    assert_eq!(master["enabled"], Value::Bool(true), "the default of enabled");
    assert_eq!(master["notes"], Value::Null);
    assert_eq!(
        master["pb_port"],
        int(9010),
        "a port given as text is stored as an integer"
    );
    let masterid = id_of(Table::Masters, &master);

    let slave = create(&h, Table::Slaves, slave_body("New-Slave", poolid.into())).await;
    assert_eq!(slave["name"], text("new-slave"));
    assert_eq!(slave["current_masterid"], Value::Null, "allocation state starts empty");
    assert_eq!(slave.len(), Table::Slaves.columns().len());

    assert_eq!(s.get(Table::Masters, masterid).await.unwrap(), Some(master.clone()));
    assert_eq!(
        s.find_by_name(Table::Masters, "bm-new").await.unwrap(),
        Some(master.clone())
    );
    assert_eq!(
        s.find_by_name(Table::Slaves, "new-slave").await.unwrap(),
        Some(slave.clone())
    );
    assert_eq!(s.find_by_name(Table::Masters, "bm-none").await.unwrap(), None);
    assert_eq!(s.get(Table::Masters, masterid + 100).await.unwrap(), None);

    let second = create(&h, Table::Masters, master_body("a-second", poolid.into())).await;
    let listed = s.list(Table::Masters).await.unwrap();
    assert_eq!(listed, [master, second], "lists are in primary-key order");

    let pw = h
        .store()
        .insert(
            Table::SlavePasswords,
            Table::SlavePasswords
                .parse_insert(&body(json!({"poolid": poolid, "password": "pw"})))
                .unwrap(),
            actor("test"),
        )
        .await
        .unwrap();
    assert_eq!(
        pw,
        row(&[
            ("distroid", Value::Null),
            ("password", text("pw")),
            ("poolid", int(poolid.into()))
        ])
    );
    assert_eq!(s.list(Table::SlavePasswords).await.unwrap(), [pw]);
}

/// An update writes the given columns, returns the whole row, and fails on
/// a missing row; an empty or idempotent update writes nothing.
pub async fn updates_write_what_changed_and_return_the_row<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(2)).await;
    let s = h.store();
    let changes = Table::Masters
        .parse_update(&body(
            json!({"notes": "draining", "enabled": false, "masterid": 99, "pool": "x"}),
        ))
        .unwrap();
    let updated = s.update(Table::Masters, 1, changes, actor("test")).await.unwrap();
    assert_eq!(updated["notes"], text("draining"));
    assert_eq!(updated["enabled"], Value::Bool(false));
    assert_eq!(updated["masterid"], int(1));
    assert_eq!(updated["nickname"], text("bm01"), "other columns are kept");
    assert_eq!(s.get(Table::Masters, 1).await.unwrap(), Some(updated.clone()));

    let audits = audit_len(&h).await;
    let same = s.update(Table::Masters, 1, Row::new(), actor("test")).await.unwrap();
    assert_eq!(same, updated);
    let again = row(&[("notes", text("draining"))]);
    assert_eq!(
        s.update(Table::Masters, 1, again, actor("test")).await.unwrap(),
        updated
    );
    assert_eq!(audit_len(&h).await, audits, "writing nothing audits nothing");

    let missing = s.update(Table::Masters, 77, Row::new(), actor("test")).await;
    assert_eq!(missing, Err(StoreError::NotFound));
    let missing = s
        .update(Table::Slaves, 77, row(&[("notes", text("x"))]), actor("test"))
        .await;
    assert_eq!(missing, Err(StoreError::NotFound));

    // Setting a slave's notes back to NULL.
    let s1 = s
        .update(Table::Slaves, 1, row(&[("notes", text("n"))]), actor("test"))
        .await
        .unwrap();
    assert_eq!(s1["notes"], text("n"));
    let s1 = s
        .update(Table::Slaves, 1, row(&[("notes", Value::Null)]), actor("test"))
        .await
        .unwrap();
    assert_eq!(s1["notes"], Value::Null);
}

/// A delete removes the row; a second delete finds nothing.
pub async fn deletes_remove_the_row<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(2)).await;
    let s = h.store();
    s.delete(Table::Slaves, 2, actor("test")).await.unwrap();
    assert_eq!(s.get(Table::Slaves, 2).await.unwrap(), None);
    assert_eq!(s.find_by_name(Table::Slaves, "slave-2").await.unwrap(), None);
    assert_eq!(
        s.delete(Table::Slaves, 2, actor("test")).await,
        Err(StoreError::NotFound)
    );
    let ids: Vec<i64> = s
        .list(Table::Slaves)
        .await
        .unwrap()
        .iter()
        .map(|r| r["slaveid"].as_int().unwrap())
        .collect();
    assert_eq!(ids, [1]);
}

/// A name another row has is refused on create and on update, and nothing
/// is written; keeping one's own name is fine.
pub async fn duplicate_names_are_refused<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(2)).await;
    let s = h.store();
    let before = s.export().await.unwrap();

    let dup = Table::Pools.parse_insert(&body(json!({"name": "pools-2"}))).unwrap();
    assert!(matches!(
        s.insert(Table::Pools, dup, actor("t")).await,
        Err(StoreError::Duplicate(_))
    ));
    let dup = Table::Slaves.parse_insert(&body(slave_body("slave-1", 1))).unwrap();
    assert!(matches!(
        s.insert(Table::Slaves, dup, actor("t")).await,
        Err(StoreError::Duplicate(_))
    ));
    let rename = row(&[("nickname", text("bm02"))]);
    assert!(matches!(
        s.update(Table::Masters, 1, rename, actor("t")).await,
        Err(StoreError::Duplicate(_))
    ));
    let rename = row(&[("name", text("pools-1")), ("notes", text("ignored"))]);
    let rename = Table::Pools
        .parse_update(&body(serde_json::to_value(&rename).unwrap()))
        .unwrap();
    assert!(matches!(
        s.update(Table::Pools, 3, rename, actor("t")).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(s.export().await.unwrap(), before, "nothing was written");

    let own = row(&[("nickname", text("bm01")), ("fqdn", text("moved.example.com"))]);
    let kept = s.update(Table::Masters, 1, own, actor("t")).await.unwrap();
    assert_eq!(kept["fqdn"], text("moved.example.com"));
}

/// A reference to a missing row is refused naming the column, the table
/// and the id; nothing is written.
pub async fn bad_references_are_refused_naming_the_column<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(2)).await;
    let s = h.store();
    let before = s.export().await.unwrap();

    let master = Table::Masters.parse_insert(&body(master_body("bm-x", 99))).unwrap();
    assert_eq!(
        s.insert(Table::Masters, master, actor("t")).await,
        Err(StoreError::InvalidReference {
            column: "poolid".into(),
            table: "pools".into(),
            id: 99
        })
    );
    let lock = row(&[("locked_masterid", int(77))]);
    assert_eq!(
        s.update(Table::Slaves, 1, lock, actor("t")).await,
        Err(StoreError::InvalidReference {
            column: "locked_masterid".into(),
            table: "masters".into(),
            id: 77
        })
    );
    let template = row(&[("notes", text("x")), ("custom_tplid", int(5))]);
    assert_eq!(
        s.update(Table::Slaves, 1, template, actor("t")).await,
        Err(StoreError::InvalidReference {
            column: "custom_tplid".into(),
            table: "tac_templates".into(),
            id: 5
        })
    );
    assert_eq!(s.export().await.unwrap(), before, "nothing was written");

    let lock = row(&[("locked_masterid", int(2))]);
    assert_eq!(
        s.update(Table::Slaves, 1, lock, actor("t")).await.unwrap()["locked_masterid"],
        int(2)
    );
}

/// The log is read by time: `since` keeps the entries written at or after
/// it (to the second), newest first, on every store, so that "the last
/// hour" never reads the whole log.
pub async fn the_audit_log_is_read_by_time<F: StoreFactory>(h: Harness<F>) {
    load(&h, &Fleet::new()).await;
    let s = h.store();
    let pool = create(&h, Table::Pools, json!({"name": "timed"})).await;
    let id = id_of(Table::Pools, &pool);
    let at = |hours: u64| now() + std::time::Duration::from_secs(3600 * hours);
    for (hours, name) in [(1, "one"), (2, "two"), (3, "three")] {
        let who = Actor {
            name: "t".into(),
            at: at(hours),
        };
        s.update(Table::Pools, id, row(&[("name", text(name))]), who)
            .await
            .unwrap();
    }
    let since = |t: std::time::SystemTime| AuditQuery {
        table: Some(Table::Pools),
        since: Some(t),
        limit: 10,
        ..AuditQuery::default()
    };
    let names = |entries: Vec<slavealloc_domain::AuditEntry>| -> Vec<Value> {
        entries
            .iter()
            .map(|e| e.entry.new_values.as_ref().unwrap()["name"].clone())
            .collect()
    };
    assert_eq!(
        names(s.audit(since(at(2))).await.unwrap()),
        [text("three"), text("two")]
    );
    let just_after = at(2) + std::time::Duration::from_secs(1);
    assert_eq!(names(s.audit(since(just_after)).await.unwrap()), [text("three")]);
    assert_eq!(s.audit(since(at(4))).await.unwrap(), []);
    // The creation, an hour before the first rename, counts from `now`.
    assert_eq!(s.audit(since(now())).await.unwrap().len(), 4);
    let other_table = AuditQuery {
        table: Some(Table::Masters),
        ..since(now())
    };
    assert_eq!(s.audit(other_table).await.unwrap(), []);
}

/// A row that does not fit the schema is refused the same way by every
/// store, naming the column, whoever built it (the memory store used to
/// take unknown keys, id changes and mistyped values the SQL stores
/// refuse); nothing is written.
pub async fn rows_that_do_not_fit_the_schema_are_refused_by_every_store<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(2)).await;
    let s = h.store();
    let before = s.export().await.unwrap();
    let column_of = |r: Result<slavealloc_domain::Row, StoreError>| match r {
        Err(StoreError::Input(e)) => e.column,
        other => panic!("not refused as input: {other:?}"),
    };
    let updates = [
        (row(&[("no_such_column", int(1))]), "no_such_column"),
        (row(&[("slaveid", int(9)), ("notes", text("moved"))]), "slaveid"),
        (row(&[("poolid", text("one"))]), "poolid"),
        (row(&[("enabled", int(1))]), "enabled"),
        (row(&[("name", Value::Null)]), "name"),
        (row(&[("notes", text("a\0b"))]), "notes"),
        (row(&[("poolid", int(1 << 40))]), "poolid"),
    ];
    for (changes, column) in updates {
        let what = format!("{changes:?}");
        assert_eq!(
            column_of(s.update(Table::Slaves, 1, changes, actor("t")).await),
            column,
            "{what}"
        );
    }
    let mut master = Table::Masters.parse_insert(&body(master_body("bm-x", 1))).unwrap();
    master.insert("rogue".into(), int(1));
    assert_eq!(column_of(s.insert(Table::Masters, master, actor("t")).await), "rogue");
    assert_eq!(s.export().await.unwrap(), before, "nothing was written");

    // Giving a row its own id is no change.
    let same = row(&[("slaveid", int(1)), ("notes", text("kept"))]);
    assert_eq!(
        s.update(Table::Slaves, 1, same, actor("t")).await.unwrap()["notes"],
        text("kept")
    );
}

/// A row still referred to cannot be deleted, and the error says by what.
pub async fn referenced_rows_cannot_be_deleted<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(2)).await;
    let s = h.store();
    gettac(&h, "slave-1").await;
    let before = s.export().await.unwrap();

    match s.delete(Table::Pools, 1, actor("t")).await {
        Err(StoreError::Referenced(why)) => {
            for by in ["masters.poolid", "slaves.poolid", "slave_passwords.poolid"] {
                assert!(why.contains(by), "{why:?} names {by}");
            }
        }
        other => panic!("deleting a used pool: {other:?}"),
    }
    match s.delete(Table::Masters, 1, actor("t")).await {
        Err(StoreError::Referenced(why)) => assert!(why.contains("slaves.current_masterid"), "{why}"),
        other => panic!("deleting a master with slaves: {other:?}"),
    }
    assert_eq!(s.export().await.unwrap(), before, "nothing was written");

    // Unused rows go.
    s.delete(Table::Pools, 3, actor("t")).await.unwrap();
    s.delete(Table::Masters, 4, actor("t")).await.unwrap();
    assert_eq!(s.get(Table::Masters, 4).await.unwrap(), None);
}

/// Each write appends one audit entry in its transaction: a create keeps
/// the new row, an update the changed columns, a delete the old row.
pub async fn every_write_is_audited<F: StoreFactory>(h: Harness<F>) {
    load(&h, &Fleet::new()).await;
    let s = h.store();
    assert_eq!(audit_len(&h).await, 0, "loading a dump audits nothing");
    let pool = create(&h, Table::Pools, json!({"name": "audited"})).await;
    let id = id_of(Table::Pools, &pool);
    let rename = row(&[("name", text("renamed"))]);
    s.update(Table::Pools, id, rename, actor("alice")).await.unwrap();
    s.delete(Table::Pools, id, actor("bob")).await.unwrap();
    // Refused writes leave no entry.
    let _ = s.delete(Table::Pools, id, actor("bob")).await;
    let _ = s
        .update(Table::Pools, 1, row(&[("name", text("pools-2"))]), actor("eve"))
        .await;

    let query = AuditQuery {
        table: Some(Table::Pools),
        row_id: Some(id.into()),
        since: None,
        limit: 10,
        ..AuditQuery::default()
    };
    let entries = s.audit(query.clone()).await.unwrap();
    let got: Vec<&NewAuditEntry> = entries.iter().map(|e| &e.entry).collect();
    let entry = |actor: &str, old: Option<Row>, new: Option<Row>| NewAuditEntry {
        at: NOW_AT.into(),
        actor: actor.into(),
        table_name: "pools".into(),
        row_id: id.into(),
        old_values: old,
        new_values: new,
    };
    let renamed = row(&[("name", text("renamed")), ("poolid", int(id.into()))]);
    assert_eq!(
        got,
        [
            &entry("bob", Some(renamed), None),
            &entry(
                "alice",
                Some(row(&[("name", text("audited"))])),
                Some(row(&[("name", text("renamed"))]))
            ),
            &entry("test", None, Some(pool)),
        ],
        "newest first"
    );
    assert!(entries[0].id > entries[1].id && entries[1].id > entries[2].id);

    let newest = s.audit(AuditQuery { limit: 1, ..query }).await.unwrap();
    assert_eq!(newest, entries[..1]);
    let none = AuditQuery {
        table: Some(Table::Masters),
        row_id: None,
        since: None,
        limit: 10,
        ..AuditQuery::default()
    };
    assert_eq!(s.audit(none).await.unwrap(), []);
    assert_eq!(audit_len(&h).await, 3);
}

/// Text with quotes, backslashes, newlines and non-ASCII characters,
/// booleans, NULLs and port limits are stored and read back exactly.
pub async fn values_round_trip_exactly<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(1)).await;
    let s = h.store();
    let odd = "C:\\builds\\'slave' \"x\"\n\ttab — Zürich ☃ 𝄞 %(name)s {{ x }}";
    let changes = row(&[
        ("basedir", text(odd)),
        ("notes", text(odd)),
        ("enabled", Value::Bool(false)),
    ]);
    let written = s.update(Table::Slaves, 1, changes, actor("t")).await.unwrap();
    assert_eq!(written["basedir"], text(odd));
    assert_eq!(written["enabled"], Value::Bool(false));
    let read = s.get(Table::Slaves, 1).await.unwrap().unwrap();
    assert_eq!(read, written);

    let ports = row(&[("http_port", int(0)), ("pb_port", int(65535))]);
    let m = s.update(Table::Masters, 1, ports, actor("t")).await.unwrap();
    assert_eq!((m["http_port"].clone(), m["pb_port"].clone()), (int(0), int(65535)));
    let entries = s
        .audit(AuditQuery {
            table: Some(Table::Slaves),
            row_id: Some(1),
            since: None,
            limit: 1,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(entries[0].entry.new_values.as_ref().unwrap()["notes"], text(odd));
}

// --------------------------------------------------------------- allocation

/// Slaves are spread evenly over the enabled masters of their pool, each
/// silo on its own.
pub async fn balances_within_pool_and_silo<F: StoreFactory>(h: Harness<F>) {
    let mut fleet = one_pool(9);
    for id in 7..=9 {
        fleet.set(Table::Slaves, id, "distroid", int(2));
    }
    // Speed is not part of the silo.
    fleet.set(Table::Slaves, 2, "speedid", int(3));
    load(&h, &fleet).await;
    let mut got = Vec::new();
    for n in 1..=9 {
        got.push(gettac(&h, &format!("slave-{n}")).await);
    }
    assert_eq!(got, [1, 2, 3, 1, 2, 3, 1, 2, 3]);
    for id in 1..=9 {
        assert_eq!(
            current(&h, id).await,
            Some(got[(id - 1) as usize].into()),
            "slave {id} recorded"
        );
    }
}

/// Among equally loaded masters the lowest masterid wins, whatever the
/// order of the rows.
pub async fn ties_go_to_the_lowest_masterid<F: StoreFactory>(h: Harness<F>) {
    let mut fleet = Fleet::new();
    fleet
        .master(7, 1, true)
        .master(5, 1, true)
        .master(6, 1, true)
        .password(1, None, "pw")
        .slave(1, "slave-1", 1)
        .slave(2, "slave-2", 1);
    load(&h, &fleet).await;
    assert_eq!(gettac(&h, "slave-1").await, 5);
    assert_eq!(gettac(&h, "slave-2").await, 6);
}

/// Disabled masters get no new slaves; a pool with no enabled master gives
/// no allocation and records nothing.
pub async fn disabled_masters_are_not_candidates<F: StoreFactory>(h: Harness<F>) {
    let mut fleet = one_pool(4);
    fleet
        .set(Table::Masters, 1, "enabled", Value::Bool(false))
        .master(5, 2, false)
        .password(2, None, "pw2")
        .slave(9, "lonely", 2);
    load(&h, &fleet).await;
    let mut got = Vec::new();
    for n in 1..=4 {
        got.push(gettac(&h, &format!("slave-{n}")).await);
    }
    assert_eq!(got, [2, 3, 2, 3]);
    let err = h.allocator().gettac("lonely").await.unwrap_err();
    assert!(matches!(err, AllocationError::NoMaster { poolid: 2, .. }), "{err:?}");
    assert!(err.is_no_allocation());
    assert_eq!(current(&h, 9).await, None);
}

/// A slave does not count against its own master: asking again keeps it
/// where it is.
pub async fn the_requester_is_not_its_own_peer<F: StoreFactory>(h: Harness<F>) {
    let mut fleet = one_pool(3);
    fleet
        .set(Table::Masters, 3, "enabled", Value::Bool(false))
        .set(Table::Slaves, 1, "current_masterid", int(2))
        .set(Table::Slaves, 2, "current_masterid", int(1));
    load(&h, &fleet).await;
    // slave-1 on master 2: masters 1 and 2 each have one *other* slave…
    // (slave-2 on 1, nobody else on 2) so 2 has 0 peers and 1 has 1.
    assert_eq!(gettac(&h, "slave-1").await, 2);
    assert_eq!(gettac(&h, "slave-1").await, 2, "stable on repeated requests");
    assert_eq!(gettac(&h, "slave-2").await, 1);
    assert_eq!(spread(&h, 1..=3).await, BTreeMap::from([(1, 1), (2, 1)]));
}

/// A locked slave gets its master, even a disabled one in another pool.
pub async fn a_locked_master_wins_even_when_disabled<F: StoreFactory>(h: Harness<F>) {
    let mut fleet = one_pool(2);
    fleet
        .master(9, 2, false)
        .set(Table::Slaves, 2, "locked_masterid", int(9));
    load(&h, &fleet).await;
    let a = h.allocator().gettac("slave-2").await.unwrap();
    assert_eq!(a.decision.reason, Reason::Locked);
    assert_eq!(a.decision.master.as_ref().unwrap().masterid, 9);
    assert!(a.tac.contains("master=bm09.example.com:9009"), "{}", a.tac);
    assert_eq!(current(&h, 2).await, Some(9));
    // The locked slave is not a peer in pool 1's counts for master 1.
    assert_eq!(gettac(&h, "slave-1").await, 1);
}

/// A disabled slave gets the disabled tac and its current master cleared.
pub async fn a_disabled_slave_loses_its_master<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(2)).await;
    assert_eq!(gettac(&h, "slave-1").await, 1);
    let s = h.store();
    s.update(
        Table::Slaves,
        1,
        row(&[("enabled", Value::Bool(false))]),
        actor("relops"),
    )
    .await
    .unwrap();
    let a = h.allocator().gettac("slave-1").await.unwrap();
    assert_eq!(a.decision.reason, Reason::Disabled);
    assert_eq!(a.decision.master, None);
    assert!(a.tac.contains("DISABLED slave-1"), "{}", a.tac);
    assert_eq!(current(&h, 1).await, None);
    // Its old master is free again.
    assert_eq!(gettac(&h, "slave-2").await, 1);
}

/// Unknown and invalid names get no allocation and change nothing; names
/// are matched lower-cased.
pub async fn unknown_names_allocate_nothing<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(1)).await;
    let before = h.store().export().await.unwrap();
    for bad in ["no-such-slave", "slave-1.example.com", ""] {
        let err = h.allocator().gettac(bad).await.unwrap_err();
        assert!(err.is_no_allocation(), "{bad:?}: {err:?}");
    }
    assert!(matches!(
        h.allocator().gettac("no-such-slave").await,
        Err(AllocationError::UnknownSlave(_))
    ));
    assert_eq!(h.store().export().await.unwrap(), before, "nothing was written");
    assert_eq!(gettac(&h, "SLAVE-1").await, 1);
}

/// The distro's password row beats the pool's wildcard; a pool with
/// neither is an error that records nothing.
pub async fn a_distro_password_beats_the_wildcard<F: StoreFactory>(h: Harness<F>) {
    let mut fleet = one_pool(2);
    fleet
        .password(1, Some(2), "distro-2-secret")
        .password(2, Some(3), "other-pool")
        .set(Table::Slaves, 2, "distroid", int(2))
        .master(5, 3, true)
        .slave(3, "no-password", 3);
    load(&h, &fleet).await;
    let passwd = |a: &slavealloc_domain::Allocation| a.decision.password.as_ref().unwrap().password.clone();
    let a1 = h.allocator().gettac("slave-1").await.unwrap();
    assert_eq!(passwd(&a1), "pool-1-secret");
    let a2 = h.allocator().gettac("slave-2").await.unwrap();
    assert_eq!(passwd(&a2), "distro-2-secret");
    assert!(a2.tac.contains("passwd=distro-2-secret"));
    let err = h.allocator().gettac("no-password").await.unwrap_err();
    assert!(matches!(err, AllocationError::NoPassword { poolid: 3, .. }), "{err:?}");
    assert!(!err.is_no_allocation());
    assert_eq!(current(&h, 3).await, None);
}

/// A slave's custom template reaches the renderer.
pub async fn a_custom_template_is_used<F: StoreFactory>(h: Harness<F>) {
    let mut fleet = one_pool(2);
    fleet
        .template(4, "worker", "%(buildmaster_host)r")
        .set(Table::Slaves, 2, "custom_tplid", int(4));
    load(&h, &fleet).await;
    let a = h.allocator().gettac("slave-2").await.unwrap();
    assert_eq!(a.decision.template.as_ref().map(|t| t.name.as_str()), Some("worker"));
    assert!(a.tac.contains("template=worker"));
    let plain = h.allocator().gettac("slave-1").await.unwrap();
    assert_eq!(plain.decision.template, None);
}

/// `peek` answers what `gettac` would, and records nothing.
pub async fn peek_records_nothing<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(2)).await;
    let before = h.store().export().await.unwrap();
    let peeked = h.allocator().peek("slave-1").await.unwrap();
    let again = h.allocator().peek("slave-2").await.unwrap();
    assert_eq!(peeked.decision.master.as_ref().unwrap().masterid, 1);
    assert_eq!(
        again.decision.master.as_ref().unwrap().masterid,
        1,
        "the first peek moved nobody"
    );
    assert_eq!(h.store().export().await.unwrap(), before, "nothing was written");
    let got = h.allocator().gettac("slave-1").await.unwrap();
    assert_eq!(got.decision, peeked.decision);
}

/// An allocation that changes a slave's master is audited as a change of
/// `current_masterid`; one that changes nothing is not.
pub async fn gettac_audits_the_change<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(1)).await;
    gettac(&h, "slave-1").await;
    gettac(&h, "slave-1").await;
    let entries = h
        .store()
        .audit(AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0].entry;
    assert_eq!(
        (e.table_name.as_str(), e.row_id, e.actor.as_str(), e.at.as_str()),
        ("slaves", 1, "gettac", NOW_AT)
    );
    assert_eq!(e.old_values, Some(row(&[("current_masterid", Value::Null)])));
    assert_eq!(
        e.new_values,
        Some(row(&[("current_masterid", int(1)), ("reason", text("balanced"))])),
        "the entry keeps the rule's reason"
    );
}

/// A batch through `Allocator::allocate` decides as if its requests came
/// one after another, and records all of them.
pub async fn batches_decide_like_sequential_requests<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(6)).await;
    let mut names: Vec<SlaveName> = (1..=6).map(|n| name(&format!("slave-{n}"))).collect();
    names.push(name("unknown"));
    names.push(name("slave-1"));
    let results = h.allocator().allocate(&names, Intent::Commit, "batch").await.unwrap();
    let masters: Vec<Option<i32>> = results
        .iter()
        .map(|r| r.as_ref().ok().map(|a| a.decision.master.as_ref().unwrap().masterid))
        .collect();
    assert_eq!(
        masters,
        [Some(1), Some(2), Some(3), Some(1), Some(2), Some(3), None, Some(1)]
    );
    assert!(matches!(results[6], Err(AllocationError::UnknownSlave(_))));
    assert_eq!(spread(&h, 1..=6).await, BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
    let audited = h
        .store()
        .audit(AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(audited.len(), 6);
    assert!(audited.iter().all(|e| e.entry.actor == "batch"));
}

/// A unit dropped without commit leaves no trace, and releases its locks.
pub async fn an_uncommitted_unit_changes_nothing<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(2)).await;
    let before = h.store().export().await.unwrap();
    {
        let mut unit = h.store().begin(Intent::Commit).await.unwrap();
        let snap = unit.snapshot(&[name("slave-1")]).await.unwrap();
        assert_eq!(snap.slaves[0].as_ref().unwrap().slaveid, 1);
        let change = MasterChange {
            slaveid: 1,
            from: None,
            to: Some(2),
        };
        let entry = NewAuditEntry::for_write(
            Table::Slaves,
            1,
            Some(&row(&[("current_masterid", Value::Null)])),
            Some(&row(&[("current_masterid", int(2))])),
            &actor("dropped"),
        )
        .unwrap();
        let boot = slavealloc_domain::live::BootRecord {
            slaveid: 1,
            at: now(),
            from: None,
            masterid: Some(2),
        };
        unit.record(&[change], &[entry], &[boot]).await.unwrap();
    }
    assert_eq!(h.store().export().await.unwrap(), before, "nothing was written");
    assert!(
        h.store().live_state().await.unwrap().boots.is_empty(),
        "no boot record either"
    );
    assert_eq!(gettac(&h, "slave-1").await, 1, "the next unit is not blocked");
}

/// A slave moved twice in one record (two requests for it in one batch)
/// ends where the last change put it, and the loads agree.
pub async fn a_slave_moved_twice_in_one_record_ends_at_the_last<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(6)).await;
    let mut unit = h.store().begin(Intent::Commit).await.unwrap();
    let snap = unit.snapshot(&[name("slave-1")]).await.unwrap();
    assert_eq!(snap.slaves[0].as_ref().unwrap().slaveid, 1);
    let moves = [
        MasterChange {
            slaveid: 1,
            from: None,
            to: Some(2),
        },
        MasterChange {
            slaveid: 1,
            from: Some(2),
            to: Some(3),
        },
    ];
    unit.record(&moves, &[], &[]).await.unwrap();
    unit.commit().await.unwrap();
    assert_eq!(current(&h, 1).await, Some(3));
    // The next slave of the silo is balanced against slave-1 on master 3.
    let mut unit = h.store().begin(Intent::Peek).await.unwrap();
    let snap = unit.snapshot(&[name("slave-2")]).await.unwrap();
    let loads: Vec<(i32, u32)> = snap
        .loads
        .iter()
        .flat_map(|l| l.per_master.iter().copied())
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(loads, [(3, 1)]);
}

fn normalized(mut s: Snapshot) -> Snapshot {
    s.masters.sort_by_key(|m| m.masterid);
    s.passwords
        .sort_by(|a, b| (a.poolid, a.distroid, &a.password).cmp(&(b.poolid, b.distroid, &b.password)));
    s.templates.sort_by_key(|t| t.tplid);
    s.loads.sort_by_key(|l| (l.poolid, l.silo));
    for l in &mut s.loads {
        l.per_master.retain(|(_, n)| *n > 0);
        l.per_master.sort_unstable();
    }
    s
}

/// The snapshot carries exactly what the port's docs list: the slaves in
/// request order, the masters of their pools plus their locked masters, the
/// passwords of their pools, their templates, and the loads of their
/// pool×silos counting every slave.
pub async fn the_snapshot_holds_what_the_rule_needs<F: StoreFactory>(h: Harness<F>) {
    let mut fleet = varied();
    fleet
        .master(7, 3, true)
        .password(3, None, "pool-3")
        .set(Table::Slaves, 9, "locked_masterid", int(7))
        .set(Table::Slaves, 1, "current_masterid", int(1))
        .set(Table::Slaves, 2, "current_masterid", int(1))
        .set(Table::Slaves, 3, "current_masterid", int(2))
        .set(Table::Slaves, 7, "current_masterid", int(3));
    load(&h, &fleet).await;
    let names = [
        name("tst-2"),
        name("nobody"),
        name("slave-1"),
        name("tst-1"),
        name("win-1"),
    ];
    for intent in [Intent::Peek, Intent::Commit] {
        let mut unit = h.store().begin(intent).await.unwrap();
        let snap = normalized(unit.snapshot(&names).await.unwrap());
        drop(unit);
        let ids: Vec<Option<i32>> = snap.slaves.iter().map(|s| s.as_ref().map(|s| s.slaveid)).collect();
        assert_eq!(ids, [Some(10), None, Some(1), Some(9), Some(7)], "{intent:?}");
        let masters: Vec<i32> = snap.masters.iter().map(|m| m.masterid).collect();
        // Pools 1 and 2, plus master 7 of pool 3 that tst-1 is locked to
        // (tst-2's lock, master 4, is in pool 1 anyway).
        assert_eq!(masters, [1, 2, 3, 4, 5, 6, 7], "{intent:?}");
        let passwords: Vec<&str> = snap.passwords.iter().map(|p| p.password.as_str()).collect();
        assert_eq!(
            passwords,
            ["pool-1-secret", "pool-1-distro-2", "pool-2-secret"],
            "{intent:?}"
        );
        let templates: Vec<i32> = snap.templates.iter().map(|t| t.tplid).collect();
        assert_eq!(templates, [1], "{intent:?}");
        let silo1 = snap.slaves[2].as_ref().unwrap().silo();
        let silo2 = snap.slaves[4].as_ref().unwrap().silo();
        let loads: Vec<(i32, _, Vec<(i32, u32)>)> = snap
            .loads
            .iter()
            .map(|l| (l.poolid, l.silo, l.per_master.clone()))
            .collect();
        assert_eq!(
            loads,
            [
                (1, silo1, vec![(1, 2), (2, 1)]),
                (1, silo2, vec![(3, 1)]),
                (2, silo1, vec![]),
            ],
            "{intent:?}"
        );
    }
}

/// Two allocators on one store, many requests at once: every pool×silo
/// ends up balanced and no request fails.
pub async fn concurrent_gettacs_stay_balanced<F: StoreFactory>(h: Harness<F>) {
    let mut fleet = one_pool(40);
    for id in 21..=40 {
        fleet.set(Table::Slaves, id, "purposeid", int(2));
    }
    load(&h, &fleet).await;
    let allocators = [h.allocator(), h.allocator()];
    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=40 {
        let allocator = allocators[n % 2].clone();
        tasks.spawn(async move { allocator.gettac(&format!("slave-{n}")).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    for silo in [1..=20, 21..=40] {
        let counts = spread(&h, silo.clone()).await;
        assert_eq!(counts.values().sum::<u32>(), 20);
        let (min, max) = (counts.values().min().unwrap(), counts.values().max().unwrap());
        assert!(counts.len() == 3 && max - min <= 1, "{silo:?}: {counts:?}");
    }
}

// -------------------------------------------------------------------- dumps

/// Export, then `replace_all` into a fresh store: the fresh store exports
/// the same dump, and its new rows get ids above the loaded ones.
pub async fn export_then_replace_all_reproduces_the_store<F: StoreFactory>(h: Harness<F>) {
    load(&h, &varied()).await;
    for n in ["slave-1", "slave-2", "win-1", "tst-1", "tst-2", "tst-3"] {
        h.allocator().gettac(n).await.unwrap();
    }
    create(&h, Table::Pools, json!({"name": "audited-pool"})).await;
    let dump = h.store().export().await.unwrap();
    for table in Table::ALL {
        assert!(dump.tables.contains_key(&table), "the dump has {table}");
    }
    assert!(!dump.rows(Table::AuditLog).is_empty());
    let mut sorted = dump.clone();
    sorted.sort();
    assert_eq!(sorted, dump, "exports are in dump order");

    let other = h.another_store().await;
    other.replace_all(&dump).await.unwrap();
    let copy = other.export().await.unwrap();
    assert_eq!(copy, dump);
    assert_eq!(
        serde_json::to_string(&copy).unwrap(),
        serde_json::to_string(&dump).unwrap()
    );
    assert_eq!(other.row_count().await.unwrap(), h.store().row_count().await.unwrap());

    let max_master = dump
        .rows(Table::Masters)
        .iter()
        .filter_map(|r| r["masterid"].as_int())
        .max()
        .unwrap();
    let fresh = Table::Masters
        .parse_insert(&body(master_body("bm-after-load", 1)))
        .unwrap();
    let fresh = other.insert(Table::Masters, fresh, actor("t")).await.unwrap();
    assert!(fresh["masterid"].as_int().unwrap() > max_master, "{fresh:?}");
    let audit = other
        .audit(AuditQuery {
            limit: 1,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let max_audit = dump
        .rows(Table::AuditLog)
        .iter()
        .filter_map(|r| r["id"].as_int())
        .max()
        .unwrap();
    assert!(audit[0].id > max_audit);
}

/// `replace_all` leaves only the dump's rows.
pub async fn replace_all_discards_what_was_there<F: StoreFactory>(h: Harness<F>) {
    load(&h, &varied()).await;
    gettac(&h, "slave-1").await;
    let small = one_pool(1).dump();
    h.store().replace_all(&small).await.unwrap();
    let got = h.store().export().await.unwrap();
    assert_eq!(got, small);
    let total: usize = small.tables.values().map(Vec::len).sum();
    assert_eq!(h.store().row_count().await.unwrap(), total as u64);
}

/// A `replace_all` with a bad row fails as a whole: the store is as before.
pub async fn a_failed_replace_all_changes_nothing<F: StoreFactory>(h: Harness<F>) {
    load(&h, &varied()).await;
    let before = h.store().export().await.unwrap();
    let mut bad = one_pool(2);
    bad.set(Table::Slaves, 2, "poolid", int(42));
    let err = h.store().replace_all(&bad.dump()).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidReference { id: 42, .. }), "{err:?}");
    assert_eq!(h.store().export().await.unwrap(), before);
}

/// `append` adds rows with their ids next to the existing ones, and refuses
/// a dump with a duplicate or a dangling reference as a whole.
pub async fn append_keeps_ids_and_refuses_bad_rows<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(2)).await;
    let s = h.store();
    let mut more = slavealloc_domain::Dump::default();
    more.tables.insert(
        Table::Pools,
        vec![row(&[("poolid", int(10)), ("name", text("appended"))])],
    );
    more.tables.insert(
        Table::Masters,
        vec![{
            let mut m = Fleet::new();
            m.master(20, 10, true);
            m.dump().rows(Table::Masters)[0].clone()
        }],
    );
    s.append(&more).await.unwrap();
    assert_eq!(
        s.get(Table::Pools, 10).await.unwrap().unwrap()["name"],
        text("appended")
    );
    assert_eq!(s.get(Table::Masters, 20).await.unwrap().unwrap()["poolid"], int(10));
    assert_eq!(
        s.get(Table::Slaves, 1).await.unwrap().unwrap()["name"],
        text("slave-1"),
        "existing rows stay"
    );

    let before = s.export().await.unwrap();
    let count = s.row_count().await.unwrap();
    // The first row is fine, the second a duplicate name: neither lands.
    let mut dup = slavealloc_domain::Dump::default();
    dup.tables.insert(
        Table::Pools,
        vec![
            row(&[("poolid", int(11)), ("name", text("fine"))]),
            row(&[("poolid", int(12)), ("name", text("appended"))]),
        ],
    );
    assert!(matches!(s.append(&dup).await, Err(StoreError::Duplicate(_))));
    let mut dup_id = slavealloc_domain::Dump::default();
    dup_id.tables.insert(
        Table::Pools,
        vec![row(&[("poolid", int(1)), ("name", text("new-name"))])],
    );
    assert!(matches!(s.append(&dup_id).await, Err(StoreError::Duplicate(_))));
    let mut dangling = slavealloc_domain::Dump::default();
    dangling.tables.insert(
        Table::Pools,
        vec![row(&[("poolid", int(13)), ("name", text("fine-too"))])],
    );
    dangling.tables.insert(
        Table::SlavePasswords,
        vec![row(&[
            ("poolid", int(99)),
            ("distroid", Value::Null),
            ("password", text("x")),
        ])],
    );
    match s.append(&dangling).await {
        Err(StoreError::InvalidReference { column, table, id }) => {
            assert_eq!((table.as_str(), id), ("pools", 99));
            assert!(column.contains("poolid"), "{column}");
        }
        other => panic!("a dangling reference: {other:?}"),
    }
    assert_eq!(s.export().await.unwrap(), before, "nothing was written");
    assert_eq!(s.row_count().await.unwrap(), count);
}

/// `row_count` counts the rows of every table, the audit log included.
pub async fn row_count_counts_every_table<F: StoreFactory>(h: Harness<F>) {
    let s = h.store();
    assert_eq!(s.row_count().await.unwrap(), 0, "a fresh store is empty");
    let fleet = varied().dump();
    s.replace_all(&fleet).await.unwrap();
    let rows: usize = fleet.tables.values().map(Vec::len).sum();
    assert_eq!(s.row_count().await.unwrap(), rows as u64);
    create(&h, Table::Pools, json!({"name": "one-more"})).await;
    assert_eq!(
        s.row_count().await.unwrap(),
        rows as u64 + 2,
        "the row and its audit entry"
    );
}

/// Every gettac leaves a boot record (when, from where, which master), in
/// its own transaction; a peek leaves none.
pub async fn boots_are_recorded_with_their_address<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(3)).await;
    let a = h.allocator();
    a.gettac_from("slave-1", Some([192, 0, 2, 1].into())).await.unwrap();
    a.gettac_from("slave-2", Some("2001:db8::2".parse().unwrap()))
        .await
        .unwrap();
    a.peek("slave-3").await.unwrap();
    let live = h.store().live_state().await.unwrap();
    let boots: Vec<(i32, Option<&str>, Option<i32>, SystemTime)> = live
        .boots
        .iter()
        .map(|b| (b.slaveid, b.from.as_deref(), b.masterid, b.at))
        .collect();
    assert_eq!(
        boots,
        [
            (1, Some("192.0.2.1"), Some(1), now()),
            (2, Some("2001:db8::2"), Some(2), now())
        ]
    );
    // Asking again replaces the record.
    a.gettac("slave-1").await.unwrap();
    let live = h.store().live_state().await.unwrap();
    assert_eq!(live.boots[0].from, None);
    assert_eq!(live.boots.len(), 2);
    // A restore replaces the fleet: the ids may name other slaves now.
    h.store()
        .record_poll(&poll(1, now(), &[("slave-1", true)]))
        .await
        .unwrap();
    load(&h, &one_pool(3)).await;
    assert_eq!(
        h.store().live_state().await.unwrap(),
        Default::default(),
        "no facts survive a restore"
    );
}

/// A poll connects, keeps and disconnects workers, keeps unknown ones,
/// and a failed poll leaves what was known but marks the master
/// unreachable since its first failure.
pub async fn polls_record_presence_status_and_unknown_workers<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(3)).await;
    let s = h.store();
    let t = |secs: u64| now() + Duration::from_secs(secs);
    s.record_poll(&poll(
        1,
        t(0),
        &[("slave-1", true), ("SLAVE-2", true), ("stranger", true)],
    ))
    .await
    .unwrap();
    s.record_poll(&poll(1, t(30), &[("slave-1", true), ("slave-2", false)]))
        .await
        .unwrap();
    let live = s.live_state().await.unwrap();
    let by: BTreeMap<i32, &Presence> = live.presence.iter().map(|p| (p.slaveid, p)).collect();
    assert_eq!(by[&1].connected_masterid, Some(1));
    assert_eq!(
        by[&1].connected_since,
        Some(t(0)),
        "connected since the first poll that saw it"
    );
    assert_eq!(by[&1].last_seen, Some(t(30)));
    assert_eq!(by[&2].connected_masterid, None, "listed as not connected: disconnected");
    assert_eq!((by[&2].last_seen, by[&2].last_seen_masterid), (Some(t(0)), Some(1)));
    assert!(!by.contains_key(&3), "never seen");
    assert!(live.unknown.is_empty(), "the stranger is gone from the second answer");
    let status = &live.masters[0];
    assert!(status.reachable);
    assert_eq!((status.connected, status.last_success), (1, Some(t(30))));
    assert_eq!(status.buildbot_version.as_deref(), Some("4.3.0"));

    s.record_poll(&poll(2, t(40), &[("stranger", false), ("slave-3", true)]))
        .await
        .unwrap();
    let failed = |at| PollRecord {
        outcome: Err("connection refused".to_owned()),
        ..poll(1, at, &[])
    };
    s.record_poll(&failed(t(60))).await.unwrap();
    s.record_poll(&failed(t(90))).await.unwrap();
    let live = s.live_state().await.unwrap();
    let status: BTreeMap<i32, &MasterStatus> = live.masters.iter().map(|m| (m.masterid, m)).collect();
    assert!(!status[&1].reachable);
    assert_eq!(status[&1].unreachable_since, Some(t(60)));
    assert_eq!(status[&1].last_success, Some(t(30)));
    assert_eq!(status[&1].error.as_deref(), Some("connection refused"));
    let one = live.presence.iter().find(|p| p.slaveid == 1).unwrap();
    assert_eq!(one.connected_masterid, Some(1), "a failed poll keeps what was known");
    assert_eq!(live.unknown.len(), 1);
    assert_eq!(
        (
            live.unknown[0].masterid,
            live.unknown[0].name.as_str(),
            live.unknown[0].connected
        ),
        (2, "stranger", false)
    );
    // A slave that moves to another master is connected there.
    s.record_poll(&poll(2, t(120), &[("slave-1", true)])).await.unwrap();
    let live = s.live_state().await.unwrap();
    let one = live.presence.iter().find(|p| p.slaveid == 1).unwrap();
    assert_eq!((one.connected_masterid, one.connected_since), (Some(2), Some(t(120))));
}

/// With `count = live`, ten slaves given master 1 that never connect stop
/// counting once their lease is over, and the next slave of their silo
/// goes to master 1; the original's rule, on the same data, still counts
/// them.
pub async fn live_counts_forget_allocations_that_never_connected<F: StoreFactory>(h: Harness<F>) {
    let mut fleet = Fleet::new();
    fleet.master(1, 1, true).master(2, 1, false).password(1, None, "pw");
    for id in 1..=16 {
        fleet.slave(id, &format!("slave-{id}"), 1);
    }
    load(&h, &fleet).await;
    let s = h.store();
    let store = Arc::clone(s) as Arc<dyn AllocationStore>;
    let lease = Duration::from_secs(900);
    let live = BalanceCount::Live { lease };
    let t0 = now();
    for n in 1..=10 {
        let a = allocator_at(Arc::clone(&store), t0, live)
            .gettac(&format!("slave-{n}"))
            .await;
        assert_eq!(a.unwrap().decision.master.unwrap().masterid, 1);
    }
    let enable = |id: i32, on: bool| {
        let s = Arc::clone(s);
        async move {
            s.update(Table::Masters, id, row(&[("enabled", Value::Bool(on))]), actor("test"))
                .await
                .unwrap();
        }
    };
    enable(1, false).await;
    enable(2, true).await;
    for n in 11..=15 {
        let a = allocator_at(Arc::clone(&store), t0, live)
            .gettac(&format!("slave-{n}"))
            .await;
        assert_eq!(a.unwrap().decision.master.unwrap().masterid, 2);
    }
    enable(1, true).await;
    let workers: Vec<(String, bool)> = (11..=15).map(|n| (format!("slave-{n}"), true)).collect();
    let workers: Vec<(&str, bool)> = workers.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    let later = t0 + Duration::from_secs(3600);
    s.record_poll(&poll(2, later, &workers)).await.unwrap();
    s.record_poll(&poll(1, later, &[])).await.unwrap();

    let peek = |at, count| {
        let store = Arc::clone(&store);
        async move {
            let a = allocator_at(store, at, count).peek("slave-16").await.unwrap();
            a.decision.master.unwrap().masterid
        }
    };
    assert_eq!(
        peek(later, BalanceCount::Recorded).await,
        2,
        "the original's rule: 10 on bm01, 5 on bm02"
    );
    assert_eq!(
        peek(later, live).await,
        1,
        "the ten never connected and their lease is over"
    );
    assert_eq!(
        peek(t0 + Duration::from_secs(60), live).await,
        2,
        "within the lease the ten still hold their places"
    );
    let a = allocator_at(Arc::clone(&store), later, live)
        .gettac("slave-16")
        .await
        .unwrap();
    assert_eq!(a.decision.master.unwrap().masterid, 1);
    assert_eq!(current(&h, 16).await, Some(1));
}

/// The poller's lease: one holder at a time, renewed by its holder, taken
/// over when it lapses or is released.
pub async fn the_lease_has_one_holder_at_a_time<F: StoreFactory>(h: Harness<F>) {
    let s = h.store();
    let ttl = Duration::from_secs(60);
    let t = |secs: u64| now() + Duration::from_secs(secs);
    let a = s.take_lease("poller", "daemon-a", t(0), ttl).await.unwrap();
    assert_eq!((a.holder.as_str(), a.expires), ("daemon-a", t(60)));
    let b = s.take_lease("poller", "daemon-b", t(10), ttl).await.unwrap();
    assert_eq!(b.holder, "daemon-a", "held: b sees a");
    let renewed = s.take_lease("poller", "daemon-a", t(30), ttl).await.unwrap();
    assert_eq!(renewed.expires, t(90));
    let b = s.take_lease("poller", "daemon-b", t(91), ttl).await.unwrap();
    assert_eq!(b.holder, "daemon-b", "lapsed: b takes it");
    let a = s.take_lease("poller", "daemon-a", t(92), ttl).await.unwrap();
    assert_eq!(a.holder, "daemon-b");
    s.release_lease("poller", "daemon-a").await.unwrap();
    assert_eq!(
        s.take_lease("poller", "daemon-a", t(93), ttl).await.unwrap().holder,
        "daemon-b",
        "only the holder releases"
    );
    s.release_lease("poller", "daemon-b").await.unwrap();
    assert_eq!(
        s.take_lease("poller", "daemon-a", t(94), ttl).await.unwrap().holder,
        "daemon-a"
    );
    let other = s.take_lease("janitor", "daemon-b", t(94), ttl).await.unwrap();
    assert_eq!(other.holder, "daemon-b", "leases are per job");
}

/// `explain` gives the master the next `gettac` gives, with one chosen
/// master holding the fewest peers, and records nothing itself.
pub async fn explain_agrees_with_the_allocation_that_follows<F: StoreFactory>(h: Harness<F>) {
    let mut fleet = one_pool(9);
    fleet.set(Table::Masters, 2, "enabled", Value::Bool(false));
    fleet.set(Table::Slaves, 4, "locked_masterid", int(2));
    fleet.set(Table::Slaves, 5, "enabled", Value::Bool(false));
    for id in 7..=9 {
        fleet.set(Table::Slaves, id, "distroid", int(2));
    }
    load(&h, &fleet).await;
    let a = h.allocator();
    for n in 1..=9 {
        let name = format!("slave-{n}");
        let before = h.store().export().await.unwrap();
        let (_, why) = a.explain(&name, false).await.unwrap();
        assert_eq!(h.store().export().await.unwrap(), before, "explain records nothing");
        let got = a.gettac(&name).await.unwrap();
        let master = got.decision.master.as_ref().map(|m| m.nickname.clone());
        assert_eq!(why.master, master, "{name}");
        assert_eq!(why.reason, got.decision.reason, "{name}");
        let chosen: Vec<_> = why.masters.iter().filter(|m| m.chosen).collect();
        match why.reason {
            Reason::Disabled => assert!(chosen.is_empty(), "{name}: {why:?}"),
            Reason::Locked => assert_eq!(chosen[0].masterid, 2, "{name}"),
            Reason::Balanced => {
                assert_eq!(chosen.len(), 1, "{name}: {why:?}");
                let fewest = why.masters.iter().filter(|m| m.enabled).map(|m| m.peers).min();
                assert_eq!(Some(chosen[0].peers), fewest, "{name}: {why:?}");
                assert!(why.masters.iter().any(|m| !m.enabled && m.why.contains("disabled")));
            }
        }
    }
}

/// The log is queried by actor, kind (allocations, edits), a time window
/// and a cursor, the same way on every store: pages by cursor cover the
/// whole selection once, newest first.
pub async fn the_audit_log_is_queried_by_actor_kind_window_and_cursor<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(4)).await;
    let s = h.store();
    let at = |hours: u64| now() + Duration::from_secs(3600 * hours);
    for (hours, who, notes) in [
        (1, "alice", "a1"),
        (2, "bob", "b1"),
        (3, "alice", "a2"),
        (4, "alice", "a3"),
    ] {
        let actor = Actor {
            name: who.into(),
            at: at(hours),
        };
        s.update(Table::Slaves, 1, row(&[("notes", text(notes))]), actor)
            .await
            .unwrap();
    }
    for n in 1..=4 {
        gettac(&h, &format!("slave-{n}")).await;
    }
    let notes = |entries: &[slavealloc_domain::AuditEntry]| -> Vec<Value> {
        entries
            .iter()
            .map(|e| e.entry.new_values.as_ref().unwrap()["notes"].clone())
            .collect()
    };
    let q = |f: &dyn Fn(&mut AuditQuery)| {
        let mut q = AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        };
        f(&mut q);
        q
    };
    let alice = s.audit(q(&|q| q.actor = Some("alice".into()))).await.unwrap();
    assert_eq!(notes(&alice), [text("a3"), text("a2"), text("a1")]);
    let allocations = s.audit(q(&|q| q.kind = Some(AuditKind::Allocation))).await.unwrap();
    assert_eq!(allocations.len(), 4);
    assert!(allocations.iter().all(|e| e.entry.actor == "gettac"));
    let edits = s.audit(q(&|q| q.kind = Some(AuditKind::Edit))).await.unwrap();
    assert_eq!(edits.len(), 4);
    let window = s
        .audit(q(&|q| {
            q.since = Some(at(2));
            q.until = Some(at(3));
        }))
        .await
        .unwrap();
    assert_eq!(notes(&window), [text("a2"), text("b1")]);
    // Pages of two through the edits: each entry once, in order.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .audit(q(&|q| {
                q.kind = Some(AuditKind::Edit);
                q.before = cursor;
                q.limit = 2;
            }))
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        cursor = page.last().map(|e| e.id);
        seen.extend(page);
    }
    assert_eq!(seen, edits);
    assert_eq!(s.audit(q(&|q| q.before = Some(1))).await.unwrap(), []);
}

/// Retention: allocation entries older than the cutoff go, oldest first and
/// a bounded batch at a time; edits stay, however old.
pub async fn old_allocations_are_pruned_in_batches_and_edits_kept<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(6)).await;
    let s = h.store();
    for n in 1..=6 {
        gettac(&h, &format!("slave-{n}")).await;
    }
    s.update(Table::Slaves, 1, row(&[("notes", text("old edit"))]), actor("relops"))
        .await
        .unwrap();
    let later = now() + Duration::from_secs(3600);
    assert_eq!(
        s.prune_allocations(now(), 100).await.unwrap(),
        0,
        "none is older than the cutoff"
    );
    assert_eq!(s.prune_allocations(later, 4).await.unwrap(), 4, "a batch at most");
    assert_eq!(s.prune_allocations(later, 4).await.unwrap(), 2);
    assert_eq!(s.prune_allocations(later, 4).await.unwrap(), 0);
    let left = s
        .audit(AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].entry.actor, "relops");
}

async fn enabled<F: StoreFactory>(h: &Harness<F>, table: Table, id: i32) -> bool {
    h.store().get(table, id).await.unwrap().unwrap()["enabled"] == Value::Bool(true)
}

async fn lifecycle_entries<F: StoreFactory>(h: &Harness<F>) -> Vec<slavealloc_domain::AuditEntry> {
    let q = AuditQuery {
        kind: Some(AuditKind::Lifecycle),
        limit: 100,
        ..AuditQuery::default()
    };
    h.store().audit(q).await.unwrap()
}

fn said(e: &slavealloc_domain::AuditEntry) -> String {
    let v = e.entry.new_values.as_ref().unwrap();
    v[LIFECYCLE_KEY].as_text().unwrap().to_owned()
}

/// A drain with a note and an end: the master is disabled (the original's
/// column), the hold keeps note, actor and end, a second drain supersedes
/// the first, and when the end passes two daemons resuming at the same
/// moment enable it and audit it exactly once.
pub async fn a_drain_ends_by_itself_exactly_once<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(2)).await;
    let s = h.store();
    let end = now() + Duration::from_secs(300);
    let drain = |note: &str| NewHold {
        note: note.to_owned(),
        until: Some(end),
        graceful: true,
        also: Row::new(),
    };
    let first = s
        .hold(HoldTarget::Master, &[2], &drain("upgrade"), actor("relops"))
        .await
        .unwrap();
    assert!(!enabled(&h, Table::Masters, 2).await);
    assert_eq!(
        (
            first[0].note.as_str(),
            first[0].actor.as_str(),
            first[0].until,
            first[0].graceful
        ),
        ("upgrade", "relops", Some(end), true)
    );
    let second = s
        .hold(HoldTarget::Master, &[2], &drain("upgrade, again"), actor("ops2"))
        .await
        .unwrap();
    let all = s
        .holds(&HoldQuery {
            target: Some(HoldTarget::Master),
            target_id: Some(2),
            ..HoldQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], second[0], "newest first");
    assert_eq!(all[1].ended.as_ref().unwrap().reason, EndReason::Superseded);
    let open = HoldQuery {
        open_only: true,
        ..HoldQuery::default()
    };
    assert_eq!(s.holds(&open).await.unwrap().len(), 1);

    assert!(s.resume_due(end - Duration::from_secs(1)).await.unwrap().is_empty());
    assert!(!enabled(&h, Table::Masters, 2).await, "not before its end");
    let (a, b) = tokio::join!(s.resume_due(end), s.resume_due(end));
    let resumed = a.unwrap().len() + b.unwrap().len();
    assert_eq!(resumed, 1, "one of the two daemons resumes it");
    assert!(enabled(&h, Table::Masters, 2).await);
    assert!(s.holds(&open).await.unwrap().is_empty());
    let entries = lifecycle_entries(&h).await;
    let texts: Vec<String> = entries.iter().map(said).collect();
    assert_eq!(
        texts,
        [
            "resumed: until reached".to_owned(),
            "drained gracefully: upgrade, again (until 2023-11-14T22:18:20Z)".to_owned(),
            "drained gracefully: upgrade (until 2023-11-14T22:18:20Z)".to_owned(),
        ]
    );
    assert_eq!(entries[0].entry.actor, RESUME_ACTOR);
    assert_eq!(
        entries[2].entry.new_values.as_ref().unwrap()["enabled"],
        Value::Bool(false)
    );
    let edits = AuditQuery {
        kind: Some(AuditKind::Edit),
        limit: 100,
        ..AuditQuery::default()
    };
    assert!(
        s.audit(edits).await.unwrap().is_empty(),
        "lifecycle entries are not edits"
    );
    assert!(s.resume_due(end + Duration::from_secs(60)).await.unwrap().is_empty());
}

/// Disabling slaves with a note is all or nothing (an id without a row
/// holds none), and enabling them ends their holds; enabling a slave that
/// is neither held nor disabled writes nothing.
pub async fn disables_with_a_note_are_all_or_nothing_and_released_by_enable<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(3)).await;
    let s = h.store();
    let hold = NewHold {
        note: "broken disk".into(),
        until: None,
        graceful: false,
        also: row(&[("notes", text("broken disk"))]),
    };
    let before = audit_len(&h).await;
    assert!(matches!(
        s.hold(HoldTarget::Slave, &[1, 99], &hold, actor("relops")).await,
        Err(StoreError::NotFound)
    ));
    assert!(enabled(&h, Table::Slaves, 1).await, "nothing held");
    assert_eq!(audit_len(&h).await, before);
    let bad_also = NewHold {
        also: row(&[("poolid", int(77))]),
        ..hold.clone()
    };
    assert!(s
        .hold(HoldTarget::Slave, &[1, 2], &bad_also, actor("relops"))
        .await
        .is_err());
    assert!(
        enabled(&h, Table::Slaves, 1).await,
        "a bad column beside enabled holds nothing"
    );
    assert_eq!(audit_len(&h).await, before);
    s.hold(HoldTarget::Slave, &[1, 2], &hold, actor("relops"))
        .await
        .unwrap();
    assert_eq!(
        slave(&h, 2).await["notes"],
        text("broken disk"),
        "written beside enabled"
    );
    assert!(!enabled(&h, Table::Slaves, 1).await && !enabled(&h, Table::Slaves, 2).await);
    let released = s
        .release(HoldTarget::Slave, &[1, 2, 3], &Row::new(), actor("relops"))
        .await
        .unwrap();
    assert_eq!(released.len(), 2);
    assert!(released
        .iter()
        .all(|h| h.ended.as_ref().unwrap().reason == EndReason::Released));
    assert!(enabled(&h, Table::Slaves, 1).await && enabled(&h, Table::Slaves, 2).await);
    let texts: Vec<String> = lifecycle_entries(&h).await.iter().map(said).collect();
    assert_eq!(
        texts,
        [
            "resumed: released",
            "resumed: released",
            "disabled: broken disk",
            "disabled: broken disk"
        ],
        "slave 3 was neither held nor disabled: no entry"
    );
}

/// One write into many rows: a bad value in it changes nothing, a dry run
/// answers what would change and keeps nothing, and the real one writes
/// every row with one audit entry each carrying the note.
pub async fn bulk_updates_are_one_transaction<F: StoreFactory>(h: Harness<F>) {
    load(&h, &one_pool(4)).await;
    let s = h.store();
    let ids = [1, 2, 3, 4];
    let before = audit_len(&h).await;
    let bad = row(&[("notes", text("moved")), ("poolid", int(77))]);
    let e = s
        .update_many(Table::Slaves, &ids, bad, None, false, actor("relops"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::InvalidReference { .. }), "{e:?}");
    assert_eq!(
        s.update_many(
            Table::Slaves,
            &[1, 99],
            row(&[("notes", text("x"))]),
            None,
            false,
            actor("r")
        )
        .await
        .unwrap_err(),
        StoreError::NotFound
    );
    let dry = s
        .update_many(
            Table::Slaves,
            &ids,
            row(&[("notes", text("moved"))]),
            None,
            true,
            actor("relops"),
        )
        .await
        .unwrap();
    assert_eq!(dry.len(), 4);
    assert_eq!(dry[0].1["notes"], text("moved"));
    for id in ids {
        assert_ne!(slave(&h, id).await["notes"], text("moved"), "nothing kept");
    }
    assert_eq!(audit_len(&h).await, before);
    s.update_many(
        Table::Slaves,
        &ids,
        row(&[("notes", text("moved"))]),
        Some("rack 4 move".into()),
        false,
        actor("relops"),
    )
    .await
    .unwrap();
    for id in ids {
        assert_eq!(slave(&h, id).await["notes"], text("moved"));
    }
    let entries = s
        .audit(AuditQuery {
            limit: 100,
            since: Some(now()),
            actor: Some("relops".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 4);
    assert!(entries
        .iter()
        .all(|e| e.entry.new_values.as_ref().unwrap()[NOTE_KEY] == text("rack 4 move")));
}
