//! The live fleet in the JSON API: the `live` object of slave and master
//! rows, the live filters of `/api/slaves`, `/api/drift`, and the original
//! UI's PUT of a whole row (live object and all) writing only its columns.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::SystemTime;

use common::{Harness, Kind};
use serde_json::{json, Value as Json};
use slavealloc_http_warp::ServerConfig;

/// A poll of master `masterid` now, listing `workers` as `(name, connected)`.
fn poll(masterid: i32, workers: &[(&str, bool)]) -> slavealloc_domain::live::PollRecord {
    slavealloc_domain::testing::answered_poll(masterid, SystemTime::now(), workers)
}

fn names(rows: &Json) -> Vec<&str> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect()
}

/// In the sample fleet t-w1064-ix-001 is recorded on bm10 and -002 on bm09.
async fn polled(kind: Kind) -> Option<Harness> {
    let h = Harness::new(kind, ServerConfig::default()).await?;
    let r = h.get("/gettac/t-w1064-ix-004").await;
    assert_eq!(r.status, 200);
    h.store
        .record_poll(&poll(
            10,
            &[
                ("t-w1064-ix-001", true),
                ("t-w1064-ix-002", true),
                ("<script>x</script>", true),
            ],
        ))
        .await
        .unwrap();
    h.store
        .record_poll(&poll(9, &[("t-w1064-ix-004", false)]))
        .await
        .unwrap();
    Some(h)
}

#[tokio::test]
async fn rows_carry_the_live_facts() {
    for kind in [Kind::Memory, Kind::Sqlite] {
        let Some(h) = polled(kind).await else { continue };
        let one = h.get("/api/slaves/t-w1064-ix-001?byname=1").await.json();
        let live = &one["live"];
        assert_eq!(live["state"], "connected", "{one}");
        assert_eq!(
            (live["connected_master"].as_str(), live["connected_masterid"].as_i64()),
            (Some("bm10"), Some(10))
        );
        assert!(live["fresh"].as_bool().unwrap() && !live["graceful"].as_bool().unwrap());
        assert!(live["connected_since"].as_str().unwrap().ends_with('Z'));
        let booted = h.get("/api/slaves/t-w1064-ix-004?byname=1").await.json();
        assert_eq!(booted["live"]["state"], "never", "listed but never seen connected");
        assert!(booted["live"]["last_gettac"].is_string(), "{booted}");
        let never = h.get("/api/slaves/t-w1064-ix-009?byname=1").await.json();
        assert_eq!(
            (never["live"]["state"].as_str(), &never["live"]["last_gettac"]),
            (Some("never"), &Json::Null)
        );

        let master = h.get("/api/masters/10").await.json();
        assert_eq!(master["live"]["reachable"], true);
        assert_eq!(
            master["live"]["connected"], 3,
            "the unknown worker counts as connected: {master}"
        );
        let unpolled = h.get("/api/masters/1").await.json();
        assert_eq!(unpolled["live"]["polled"], false);
        let listed = h.get("/api/masters").await.json();
        assert!(listed.as_array().unwrap().iter().all(|m| m["live"].is_object()));
        h.finish().await;
    }
}

#[tokio::test]
async fn slaves_filter_on_live_facts() {
    let h = polled(Kind::Memory).await.unwrap();
    let get = |q: &'static str| {
        let h = &h;
        async move {
            let r = h.get(&format!("/api/slaves?{q}")).await;
            assert_eq!(r.status, 200, "{q}: {}", r.body);
            r.json()
        }
    };
    assert_eq!(names(&get("connected=1").await), ["t-w1064-ix-001", "t-w1064-ix-002"]);
    assert_eq!(names(&get("connected_master=bm10&pool=tests-win").await).len(), 2);
    assert_eq!(names(&get("connected=1&master=bm09").await), ["t-w1064-ix-002"]);
    let stale = get("stale=7d&pool=tests-win").await;
    assert!(!names(&stale).contains(&"t-w1064-ix-001"));
    assert!(names(&stale).contains(&"t-w1064-ix-009"), "never seen is stale");
    let recorded = get("master=bm10").await;
    assert!(recorded
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["current_master"] == "bm10"));
    for bad in ["connected=maybe", "stale=soon", "stale=0d"] {
        let r = h.get(&format!("/api/slaves?{bad}")).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.error().contains(bad.split('=').next().unwrap()), "{}", r.body);
    }
}

#[tokio::test]
async fn drift_lists_what_differs_from_the_record() {
    let h = polled(Kind::Memory).await.unwrap();
    let d = h.get("/api/drift").await.json();
    let elsewhere: Vec<(&str, &str, &str)> = d["elsewhere"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["recorded_master"].as_str().unwrap(),
                e["connected_master"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(elsewhere, [("t-w1064-ix-002", "bm09", "bm10")]);
    assert_eq!(d["other_pool"], json!([]));
    assert_eq!(d["unknown"][0]["name"], "<script>x</script>");
    assert_eq!(d["unknown"][0]["master"], "bm10");
    let win = d["spreads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["pool"] == "tests-win" && s["masters"].as_array().unwrap().iter().any(|m| m["slaves"] == 2))
        .unwrap_or_else(|| panic!("no live spread of the two connected: {d}"));
    assert_eq!(win["spread"], 2);
}

#[tokio::test]
async fn the_original_uis_put_of_a_whole_row_ignores_the_live_object() {
    for kind in [Kind::Memory, Kind::Sqlite] {
        let Some(h) = polled(kind).await else { continue };
        for (table, id) in [("slaves", 35), ("masters", 10)] {
            let before = h.dump().await;
            // What Backbone sends: the model as it was read, one field edited.
            let mut row = h.row(table, id).await;
            assert!(row["live"].is_object());
            row["notes"] = json!("edited in the original UI");
            let r = h
                .request(
                    "PUT",
                    &format!("/api/{table}/{id}"),
                    Some(row.to_string().as_bytes()),
                    &[],
                )
                .await;
            assert_eq!(
                (r.status, &r.json()["success"]),
                (200, &json!(true)),
                "{table}: {}",
                r.body
            );
            assert_eq!(r.json()["changed"], json!(["notes"]), "{}", r.body);
            let ignored = r.json()["ignored"].clone();
            assert!(ignored.as_array().unwrap().contains(&json!("live")), "{ignored}");
            let after = h.row(table, id).await;
            assert_eq!(after["notes"], "edited in the original UI");
            let mut expected = before.clone();
            let t: slavealloc_domain::Table = table.parse().unwrap();
            let id_col = t.id_column().unwrap();
            for r in expected.tables.get_mut(&t).unwrap() {
                if r.get(id_col) == Some(&slavealloc_domain::Value::Int(id)) {
                    r.insert(
                        "notes".into(),
                        slavealloc_domain::Value::Text("edited in the original UI".into()),
                    );
                }
            }
            let mut now = h.dump().await;
            now.tables.remove(&slavealloc_domain::Table::AuditLog);
            expected.tables.remove(&slavealloc_domain::Table::AuditLog);
            assert_eq!(now, expected, "only the notes changed");
        }
        h.finish().await;
    }
}

#[tokio::test]
async fn explain_says_why_and_agrees_with_the_tac() {
    let h = Harness::new(Kind::Memory, ServerConfig::default()).await.unwrap();
    let r = h.get("/api/gettac/t-w1064-ix-009?explain=1").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    let why = &body["explain"];
    assert_eq!(why["reason"], "balanced");
    let master = why["master"].as_str().unwrap();
    let fqdn = format!("buildbot-master{}", &master[2..]);
    assert!(body["tac"].as_str().unwrap().contains(&fqdn), "{body}");
    let masters = why["masters"].as_array().unwrap();
    assert_eq!(masters.len(), 2, "bm09 and bm10: {why}");
    assert_eq!(masters.iter().filter(|m| m["chosen"] == true).count(), 1);
    assert!(masters.iter().all(|m| m["why"].is_string() && m["peers"].is_u64()));
    let locked = h.get("/api/gettac/t-w1064-ix-003?explain=1").await.json();
    assert_eq!(locked["explain"]["reason"], "locked");
    // Nothing recorded, and the next real allocation agrees.
    let tac = h.get("/gettac/t-w1064-ix-009").await.body;
    assert!(tac.contains(&fqdn));
    // Without explain=1 the answer is as before; a stray key is named.
    assert!(h
        .get("/api/gettac/t-w1064-ix-009?_=123")
        .await
        .json()
        .get("explain")
        .is_none());
    let bad = h.get("/api/gettac/t-w1064-ix-009?explian=1").await;
    assert_eq!(bad.status, 400);
    assert!(bad.error().contains("explian"), "{}", bad.body);
    h.finish().await;
}

#[tokio::test]
async fn writes_say_what_they_did_and_take_names_for_ids() {
    let h = Harness::new(Kind::Memory, ServerConfig::default()).await.unwrap();
    let put = |body: Json| {
        let h = &h;
        async move {
            h.request("PUT", "/api/slaves/35", Some(body.to_string().as_bytes()), &[])
                .await
        }
    };
    let envs = h.get("/api/environments").await.json();
    let before = h.row("slaves", 35).await;
    let other = envs
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["envid"] != before["envid"] && e["name"] != "decomm")
        .unwrap()
        .clone();
    let r = put(json!({"environment": other["name"], "notes": before["notes"], "current_master": "bm01", "bogus": 1}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["changed"], json!(["envid"]), "{}", r.body);
    assert_eq!(
        r.json()["ignored"],
        json!(["bogus", "current_master"]),
        "the name key taken is not ignored: {}",
        r.body
    );
    assert_eq!(h.row("slaves", 35).await["envid"], other["envid"]);
    // Doing what is already so changes nothing and says so.
    let r = put(json!({"environment": other["name"]})).await;
    assert_eq!(
        (r.json()["changed"].clone(), r.json()["ignored"].clone()),
        (json!([]), json!([]))
    );
    // A name that is no row changes nothing; an id key wins over its name.
    let dump = h.dump().await;
    let r = put(json!({"environment": "no-such-env", "notes": "x"})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.error().contains("no-such-env"), "{}", r.body);
    assert_eq!(h.dump().await, dump, "nothing written");
    let r = put(json!({"environment": "no-such-env", "envid": before["envid"]})).await;
    assert_eq!(
        (r.status, r.json()["changed"].clone()),
        (200, json!(["envid"])),
        "{}",
        r.body
    );
    h.finish().await;
}

#[tokio::test]
async fn a_list_refuses_a_filter_it_does_not_know() {
    let h = Harness::new(Kind::Memory, ServerConfig::default()).await.unwrap();
    for (path, key) in [
        ("/api/slaves?pools=tests-win", "pools"),
        ("/api/masters?pool=x", "pool"),
    ] {
        let r = h.get(path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(r.error().contains(key), "{}", r.body);
    }
    assert_eq!(
        h.get("/api/slaves?_=1700000000&pool=tests-win").await.status,
        200,
        "jQuery's cache-buster"
    );
    assert_eq!(h.get("/api/masters?_=1").await.status, 200);
    h.finish().await;
}

#[tokio::test]
async fn whatif_says_where_a_drained_masters_slaves_would_go_and_writes_nothing() {
    let h = Harness::new(Kind::Memory, ServerConfig::default()).await.unwrap();
    let before = h.dump().await;
    let r = h.get("/api/whatif?drain=bm09").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let w = r.json();
    let moves = w["moves"].as_array().unwrap();
    // Pool tests-win: the enabled slaves on bm09 all go to bm10, its other master.
    let names: Vec<&str> = moves.iter().map(|m| m["slave"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"t-w1064-ix-002") && names.contains(&"t-w1064-ix-004"),
        "{w}"
    );
    assert!(moves.iter().all(|m| m["from"] == "bm09" && m["to"] == "bm10"), "{w}");
    let spread = &w["spreads"][0];
    assert!(
        spread["after"].as_array().unwrap().iter().all(|m| m[0] != "bm09"),
        "{spread}"
    );
    assert_eq!(h.dump().await, before, "nothing written");
    // Both of the pool's masters: nowhere to go, said per slave.
    let w = h.get("/api/whatif?drain=bm09&drain=bm10").await.json();
    assert!(
        w["moves"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["to"].is_null() && m["error"].is_string()),
        "{w}"
    );
    assert!(
        w["staying_locked"]
            .as_array()
            .unwrap()
            .contains(&json!("t-w1064-ix-003")),
        "{w}"
    );
    assert_eq!(h.get("/api/whatif?drain=bm99").await.status, 404);
    assert_eq!(h.get("/api/whatif").await.status, 400);
    assert_eq!(h.get("/api/whatif?drian=bm09").await.status, 400);

    // A master added to tests-win: its pool rebalances onto it, nothing
    // written; a taken nickname, an unknown pool, a bad form are refused.
    let w = h.get("/api/whatif?add=bm99@tests-win").await.json();
    assert_eq!(w["added"], json!(["bm99"]), "{w}");
    let moves = w["moves"].as_array().unwrap();
    assert!(moves.iter().filter(|m| m["to"] == "bm99").count() >= 3, "{w}");
    assert!(moves.iter().all(|m| m["from"] != m["to"]), "only real moves: {w}");
    let after = &w["spreads"][0]["after"];
    assert!(after.as_array().unwrap().iter().any(|m| m[0] == "bm99"), "{w}");
    assert!(!w["spreads"][0]["before"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m[0] == "bm99"));
    assert!(
        w["spreads"][0]["spread_after"].as_u64() <= w["spreads"][0]["spread_before"].as_u64(),
        "{w}"
    );
    assert_eq!(h.get("/api/whatif?add=bm09@tests-win").await.status, 404);
    assert_eq!(h.get("/api/whatif?add=bm99@no-pool").await.status, 404);
    assert_eq!(h.get("/api/whatif?add=bm99").await.status, 400);
    assert_eq!(h.dump().await, before, "nothing written");
    h.finish().await;
}

#[tokio::test]
async fn the_audit_log_pages_by_cursor_with_names_beside_ids() {
    let h = Harness::new(Kind::Memory, ServerConfig::default()).await.unwrap();
    for n in 1..=5 {
        let body = json!({"notes": format!("note {n}")});
        let r = h
            .request("PUT", "/api/slaves/35", Some(body.to_string().as_bytes()), &[])
            .await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(h.get("/gettac/t-w1064-ix-009").await.status, 200);
    let page = h.get("/api/audit?name=t-w1064-ix-001&kind=edit&limit=2&since=1d").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let entries = page.json();
    assert_eq!(entries.as_array().unwrap().len(), 2);
    assert!(entries
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["name"] == "t-w1064-ix-001" && e["row_id"] == 35));
    let cursor = page.header("x-slavealloc-next-cursor").unwrap().to_owned();
    let next = h
        .get(&format!(
            "/api/audit?name=t-w1064-ix-001&kind=edit&limit=10&cursor={cursor}"
        ))
        .await
        .json();
    assert_eq!(next.as_array().unwrap().len(), 3, "the other three: {next}");
    assert!(next[0]["id"].as_i64().unwrap() < cursor.parse::<i64>().unwrap());
    let allocations = h.get("/api/audit?kind=allocation").await.json();
    assert_eq!(allocations[0]["name"], "t-w1064-ix-009");
    assert_eq!(h.get("/api/audit?name=nobody").await.status, 404);
    for bad in ["kind=lifecycles", "since=yesterday", "cursor=x", "who=me"] {
        let r = h.get(&format!("/api/audit?{bad}")).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    h.finish().await;
}
