//! Drains, disables with a note and an end, and bulk writes, through the
//! API on every store: what they write, what they answer, and that a bad
//! request changes nothing.

// Test helpers may unwrap: a panic is the failure report we want.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::{Harness, Kind};
use serde_json::{json, Value as Json};
use slavealloc_domain::{Dump, Row, Table, Value};
use slavealloc_http_warp::{ServerConfig, Tokens};

const TOKEN: &str = "relops-token-0123456789";

fn with_tokens() -> ServerConfig {
    ServerConfig {
        tokens: Tokens::new([("relops", TOKEN)]).unwrap(),
        ..ServerConfig::default()
    }
}

fn auth() -> String {
    format!("Bearer {TOKEN}")
}

async fn post(h: &Harness, path: &str, body: &Json) -> common::Resp {
    let auth = auth();
    h.request(
        "POST",
        path,
        Some(body.to_string().as_bytes()),
        &[("content-type", "application/json"), ("authorization", &auth)],
    )
    .await
}

async fn harness(kind: Kind) -> Option<Harness> {
    Harness::new(kind, with_tokens()).await
}

/// The fleet's rows, audit log aside: what "changed nothing" compares.
fn rows(mut dump: Dump) -> Dump {
    dump.tables.remove(&Table::AuditLog);
    dump
}

fn slave<'d>(dump: &'d Dump, name: &str) -> &'d Row {
    dump.tables[&Table::Slaves]
        .iter()
        .find(|r| r["name"] == Value::Text(name.into()))
        .unwrap()
}

async fn drain_a_master_with_a_note_and_an_end_then_undrain_it(kind: Kind) {
    let Some(h) = harness(kind).await else { return };
    let r = post(
        &h,
        "/api/masters/bm02/drain?byname=1",
        &json!({"note": "kernel upgrade", "until": "2h", "graceful": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["success"], true);
    assert_eq!(j["hold"]["name"], "bm02");
    assert_eq!(j["hold"]["note"], "kernel upgrade");
    assert_eq!(j["hold"]["actor"], "relops");
    assert_eq!(j["hold"]["graceful"], true);
    assert!(j["hold"]["until"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        j["slaves"],
        json!(["bld-linux64-spot-002", "bld-linux64-spot-008"]),
        "the slaves it still has"
    );
    assert_eq!(
        h.row("masters", 2).await["enabled"],
        false,
        "the original's column says drained"
    );

    let status = h.get("/api/masters/bm02/drain?byname=1").await.json();
    assert_eq!(status["hold"]["note"], "kernel upgrade");
    assert_eq!(status["progress"]["connected"], 0, "nothing polled: none connected");
    let holds = h.get("/api/holds?target=master&open=1").await.json();
    assert_eq!(holds.as_array().unwrap().len(), 1);

    let lifecycle = h.get("/api/audit?kind=lifecycle").await.json();
    let said = lifecycle[0]["new_values"]["lifecycle"].as_str().unwrap();
    assert!(said.starts_with("drained gracefully: kernel upgrade (until "), "{said}");

    let r = post(&h, "/api/masters/2/undrain", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["ended"][0]["ended"]["reason"], "released");
    assert_eq!(h.row("masters", 2).await["enabled"], true);
    assert_eq!(h.get("/api/masters/2/drain").await.json()["hold"], Json::Null);
    let r = post(&h, "/api/masters/2/undrain", &json!({})).await;
    assert_eq!(
        (r.status, r.json()["ended"].clone()),
        (200, json!([])),
        "already so: success"
    );
    h.finish().await;
}

async fn bad_drains_change_nothing_and_say_why(kind: Kind) {
    let Some(h) = harness(kind).await else { return };
    let before = h.dump().await;
    let cases = [
        (json!({"until": "2h"}), 400, "note"),
        (json!({"note": "x", "until": "tomorrow"}), 400, "until"),
        (json!({"note": "x", "until": "2020-01-01T00:00:00Z"}), 400, "future"),
        (json!({"note": "x", "colour": "red"}), 400, "colour"),
        (json!({"note": "x", "graceful": "yes"}), 400, "boolean"),
    ];
    for (body, status, says) in cases {
        let r = post(&h, "/api/masters/2/drain", &body).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert!(r.error().contains(says), "{body}: {}", r.body);
    }
    let r = post(&h, "/api/slaves/1/disable", &json!({"note": "x", "graceful": true})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post(&h, "/api/masters/999/drain", &json!({"note": "x"})).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = post(&h, "/api/pools/1/drain", &json!({"note": "x"})).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = h
        .request(
            "POST",
            "/api/masters/2/drain",
            Some(br#"{"note": "x"}"#),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(r.status, 401, "no token, no drain: {}", r.body);
    assert_eq!(h.dump().await, before, "nothing written");
    h.finish().await;
}

async fn a_slave_is_disabled_with_a_note_and_enabled(kind: Kind) {
    let Some(h) = harness(kind).await else { return };
    let r = post(
        &h,
        "/api/slaves/bld-linux64-spot-001/disable?byname=1",
        &json!({"note": "bad disk, bug 123", "until": "+30min"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(h.row("slaves", 1).await["enabled"], false);
    let holds = h.get("/api/holds?target=slave").await.json();
    assert_eq!(holds[0]["name"], "bld-linux64-spot-001");
    assert_eq!(holds[0]["note"], "bad disk, bug 123");
    let r = post(&h, "/api/slaves/1/enable", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(h.row("slaves", 1).await["enabled"], true);
    h.finish().await;
}

async fn bulk_disable_by_filter_is_one_write_and_a_bad_one_changes_nothing(kind: Kind) {
    let Some(h) = harness(kind).await else { return };
    let select = json!({"filter": {"pool": ["tests-linux"], "environment": ["prod"]}});
    let dry = post(
        &h,
        "/api/slaves/bulk",
        &json!({"select": select, "set": {"enabled": false}, "note": "rack move", "until": "1d", "dry_run": true}),
    )
    .await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    let dry = dry.json();
    let matched = dry["matched"].as_array().unwrap().len();
    assert!(matched >= 2, "{dry}");
    assert_eq!(dry["dry_run"], true);
    let before = h.dump().await;
    assert!(
        slave(&before, dry["matched"][0].as_str().unwrap())["enabled"] == Value::Bool(true),
        "the dry run wrote nothing"
    );

    let r = post(
        &h,
        "/api/slaves/bulk",
        &json!({"select": select, "set": {"enabled": false}, "note": "rack move", "until": "1d"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["matched"], dry["matched"]);
    assert_eq!(j["holds"], matched);
    let after = h.dump().await;
    for name in j["matched"].as_array().unwrap() {
        assert_eq!(slave(&after, name.as_str().unwrap())["enabled"], Value::Bool(false));
    }
    let open = h.get("/api/holds?target=slave&open=1").await.json();
    assert_eq!(open.as_array().unwrap().len(), matched);

    // A pool move with a name key, and a bad value in it: nothing at all.
    let before = rows(h.dump().await);
    let bad = [
        json!({"select": select, "set": {"pool": "no-such-pool"}}),
        json!({"select": select, "set": {"poolid": 999}}),
        json!({"select": select, "set": {"name": "same-for-all"}}),
        json!({"select": select, "set": {"colour": "red"}}),
        json!({"select": select, "set": {}}),
        json!({"select": {"filter": {}}, "set": {"notes": "x"}}),
        json!({"select": {"names": ["bld-linux64-spot-001", "no-such-slave"]}, "set": {"notes": "x"}}),
        json!({"select": select, "set": {"notes": "x"}, "until": "1d"}),
        json!({"select": select, "set": {"enabled": false, "poolid": 999}, "note": "n"}),
        json!({"select": {"names": "bld-linux64-spot-001"}, "set": {"notes": "x"}}),
    ];
    for body in bad {
        let r = post(&h, "/api/slaves/bulk", &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(!r.error().is_empty());
    }
    assert_eq!(rows(h.dump().await), before, "nothing written by a bad bulk");

    let r = post(
        &h,
        "/api/slaves/bulk",
        &json!({"select": {"names": ["bld-linux64-spot-001", "BLD-LINUX64-SPOT-002"]}, "set": {"environment": "staging"}, "note": "to staging"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["changed"].as_array().unwrap().len(), 2, "{j}");
    assert_eq!(j["changed"][0]["new"]["envid"], 2);
    let edits = h.get("/api/audit?kind=edit&actor=relops").await.json();
    assert!(edits
        .as_array()
        .unwrap()
        .iter()
        .take(2)
        .all(|e| e["new_values"]["note"] == "to staging"));
    h.finish().await;
}

/// The sample fleet with 200 more slaves in pool `try-linux`, environment
/// `qa`.
fn with_200_more() -> Dump {
    let mut fleet = slavealloc_fixtures::sample_fleet();
    let slaves = fleet.tables.get_mut(&Table::Slaves).unwrap();
    let template = slaves[0].clone();
    for n in 0..200 {
        let mut row = template.clone();
        row.insert("slaveid".into(), Value::Int(1000 + n));
        row.insert("name".into(), Value::Text(format!("try-linux64-ec2-{n:03}")));
        row.insert("poolid".into(), Value::Int(2));
        row.insert("envid".into(), Value::Int(4));
        row.insert("current_masterid".into(), Value::Null);
        slaves.push(row);
    }
    fleet
}

async fn a_bulk_disable_of_200_slaves_is_one_transaction_and_one_audit_batch(kind: Kind) {
    let Some(h) = Harness::with_fleet(kind, &with_200_more(), with_tokens()).await else {
        return;
    };
    let select = json!({"filter": {"pool": ["try-linux"], "environment": ["qa"]}});
    let before = rows(h.dump().await);
    let r = post(
        &h,
        "/api/slaves/bulk",
        &json!({"select": select, "set": {"enabled": false, "pool": "no-such-pool"}, "note": "x"}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post(
        &h,
        "/api/slaves/bulk",
        &json!({"select": select, "set": {"custom_tplid": 999}}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(rows(h.dump().await), before, "a bad value changes none of the 200");

    let r = post(
        &h,
        "/api/slaves/bulk",
        &json!({"select": select, "set": {"enabled": false}, "note": "AMI rebuild", "until": "4h"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["matched"].as_array().unwrap().len(), 200);
    let after = h.dump().await;
    let disabled = after.tables[&Table::Slaves]
        .iter()
        .filter(|r| r["poolid"] == Value::Int(2) && r["enabled"] == Value::Bool(false))
        .count();
    assert_eq!(disabled, 200);
    let entries = h.get("/api/audit?kind=lifecycle&limit=500").await.json();
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 200);
    let at = &entries[0]["at"];
    assert!(
        entries.iter().all(|e| &e["at"] == at && e["actor"] == "relops"),
        "one batch: one time, one actor"
    );
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(ids[0] - ids[199], 199, "written together: consecutive ids");
    h.finish().await;
}

on_every_store!(
    drain_a_master_with_a_note_and_an_end_then_undrain_it,
    bad_drains_change_nothing_and_say_why,
    a_slave_is_disabled_with_a_note_and_enabled,
    bulk_disable_by_filter_is_one_write_and_a_bad_one_changes_nothing,
    a_bulk_disable_of_200_slaves_is_one_transaction_and_one_audit_batch,
);
