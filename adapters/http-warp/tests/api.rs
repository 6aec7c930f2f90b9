//! Filter-level tests of every route and every error, over the sample
//! fleet in memory (`warp::test`, no socket). The same behaviour against
//! SQLite and MariaDB, through a real socket, is in `live.rs`.
// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::{Harness, Kind, PEER};
use serde_json::{json, Value as Json};
use slavealloc_domain::Table;
use slavealloc_http_warp::{Readiness, ServerConfig, Tokens};
use warp::Filter;

const TOKEN: &str = "relops-token-0123456789";

fn with_tokens() -> ServerConfig {
    ServerConfig {
        tokens: Tokens::new([("relops", TOKEN)]).unwrap(),
        ..ServerConfig::default()
    }
}

async fn gettac_commits_the_allocation_and_answers_the_tac_as_text(kind: Kind) {
    let Some(h) = Harness::new(kind, ServerConfig::default()).await else {
        return;
    };
    let r = h.get("/gettac/BLD-LINUX64-SPOT-003").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert!(
        r.body.starts_with("# AUTOMATICALLY GENERATED - DO NOT MODIFY\n"),
        "{}",
        r.body
    );
    assert!(r.body.contains("slave=bld-linux64-spot-003\n"), "{}", r.body);

    let slave = h.row("slaves", 3).await;
    let master = h.row("masters", slave["current_masterid"].as_i64().unwrap()).await;
    assert!(
        r.body.contains(&format!(
            "master={}:{}",
            master["fqdn"].as_str().unwrap(),
            master["pb_port"]
        )),
        "{}",
        r.body
    );
    assert_eq!(master["poolid"], 1);
    assert_eq!(master["enabled"], true);
    h.finish().await;
}

async fn gettac_says_no_allocation_for_unknown_and_invalid_names(kind: Kind) {
    let Some(h) = Harness::new(kind, ServerConfig::default()).await else {
        return;
    };
    for name in [
        "no-such-slave",
        "bld-linux64-spot-003.build.mozilla.org",
        "a%20b",
        "x'y",
    ] {
        let r = h.get(&format!("/gettac/{name}")).await;
        assert_eq!((r.status, r.body.as_str()), (404, "no allocation available"), "{name}");
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        // The reason is in a header, for the admin command line; it never
        // echoes what the client sent.
        let reason = r.header("x-slavealloc-reason").unwrap_or_default();
        let expected = if name == "no-such-slave" {
            "no slave has this name"
        } else {
            "not a slave name"
        };
        assert!(reason.starts_with(expected), "{name}: {reason:?}");
        assert!(
            !reason.contains("build.mozilla") && !reason.contains("x'y"),
            "{name}: {reason:?}"
        );
    }
    h.finish().await;
}

async fn a_disabled_slave_gets_the_disabled_tac_and_loses_its_master(kind: Kind) {
    let Some(h) = Harness::new(kind, ServerConfig::default()).await else {
        return;
    };
    // t-w1064-ix-007 is disabled but still on bm10.
    let r = h.get("/gettac/t-w1064-ix-007").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("DISABLED t-w1064-ix-007"), "{}", r.body);
    assert_eq!(h.row("slaves", 41).await["current_masterid"], Json::Null);
    h.finish().await;
}

async fn api_gettac_answers_json_and_commits_nothing(kind: Kind) {
    let Some(h) = Harness::new(kind, ServerConfig::default()).await else {
        return;
    };
    let before = h.dump().await;
    let r = h.get("/api/gettac/bld-linux64-spot-006").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    let j = r.json();
    assert_eq!(j["success"], true);
    assert!(j["tac"].as_str().unwrap().contains("slave=bld-linux64-spot-006\n"));
    let r = h.get("/api/gettac/nobody").await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"success": false, "error": "no slave has this name"}))
    );
    assert_eq!(h.dump().await, before);
    h.finish().await;
}

async fn every_table_lists_its_rows_and_slaves_and_masters_are_denormalized(kind: Kind) {
    let Some(h) = Harness::new(kind, ServerConfig::default()).await else {
        return;
    };
    let fleet = slavealloc_fixtures::sample_fleet();
    for table in Table::EXPOSED {
        let r = h.get(&format!("/api/{table}?include_decomm=1")).await;
        assert_eq!(r.status, 200, "{table}: {}", r.body);
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        let rows = r.json();
        assert_eq!(rows.as_array().unwrap().len(), fleet.rows(table).len(), "{table}");
    }
    let slaves = h.get("/api/slaves").await.json();
    let s1 = slaves.as_array().unwrap().iter().find(|s| s["slaveid"] == 1).unwrap();
    for (key, want) in [
        ("pool", json!("build-linux")),
        ("environment", json!("prod")),
        ("current_master", json!("bm01")),
        ("locked_master", Json::Null),
        ("enabled", json!(true)),
    ] {
        assert_eq!(s1[key], want, "{key}");
    }
    let masters = h.get("/api/masters").await.json();
    assert_eq!(masters[0]["pool"], "build-linux");
    assert!(masters[0]["datacenter"].is_string());
    h.finish().await;
}

async fn slave_filters_and_the_decommissioned_environment(kind: Kind) {
    let Some(h) = Harness::new(kind, ServerConfig::default()).await else {
        return;
    };
    let names = |r: common::Resp| -> Vec<String> {
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = names(h.get("/api/slaves").await);
    assert_eq!(all.len(), 60, "the two decomm tegras are left out");
    assert!(!all.iter().any(|n| n == "tegra-001"));
    assert_eq!(names(h.get("/api/slaves?include_decomm=1").await).len(), 62);
    assert_eq!(
        names(h.get("/api/slaves?environment=decomm&include_decomm=1").await),
        ["tegra-001", "tegra-002"]
    );
    assert_eq!(
        names(h.get("/api/slaves?environment=staging").await),
        ["tst-linux64-ec2-011", "tst-linux64-ec2-012"]
    );
    let osx_and_mobile = names(h.get("/api/slaves?pool=tests-osx&pool=tests-mobile").await);
    assert_eq!(osx_and_mobile.len(), 6 + 7);
    assert_eq!(
        names(h.get("/api/slaves?enabled=0").await),
        ["tst-linux64-ec2-004", "t-w1064-ix-007"]
    );
    assert_eq!(
        names(h.get("/api/slaves?pool=tests-win&enabled=1&purpose=build").await),
        ["b-2012-ix-001"]
    );
    let r = h.get("/api/slaves?enabled=maybe").await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("enabled"));
    h.finish().await;
}

async fn one_row_by_id_or_by_name_and_an_empty_object_when_missing(kind: Kind) {
    let Some(h) = Harness::new(kind, ServerConfig::default()).await else {
        return;
    };
    let r = h.get("/api/masters/2").await;
    assert_eq!(r.json()["nickname"], "bm02");
    assert!(r.json().get("pool").is_none(), "a single row is plain");
    assert_eq!(h.get("/api/masters/bm12?byname=1").await.json()["masterid"], 12);
    assert_eq!(h.get("/api/slaves/PANDA-0001?byname=1").await.json()["slaveid"], 54);
    assert_eq!(h.get("/api/pools/tests-osx?byname=1").await.json()["poolid"], 5);
    for path in ["/api/pools/999", "/api/pools/nope?byname=1", "/api/slaves/a.b?byname=1"] {
        let r = h.get(path).await;
        assert_eq!((r.status, r.json()), (404, json!({})), "{path}");
    }
    let r = h.get("/api/pools/abc").await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("id"));
    h.finish().await;
}

/// The original web UI's sequence: load every table, then PUT back a whole
/// denormalized slave row (names, `success` from an earlier answer, its own
/// `custom_template` key) with a new pool from a text box and the enabled
/// box unticked.
async fn the_original_ui_request_sequence_works_unchanged(kind: Kind) {
    let Some(h) = Harness::new(kind, ServerConfig::default()).await else {
        return;
    };
    for table in Table::EXPOSED {
        assert_eq!(h.get(&format!("/api/{table}")).await.status, 200);
    }
    let slaves = h.get("/api/slaves").await.json();
    let mut row = slaves
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slaveid"] == 19)
        .unwrap()
        .clone();
    let before = h.row("slaves", 19).await;
    row["poolid"] = json!("2");
    row["pool"] = json!("try-linux");
    row["enabled"] = json!(false);
    row["success"] = json!(true);
    row["custom_template"] = Json::Null;
    row["current_masterid"] = json!(1); // state: must not be written
    let r = h.send("PUT", "/api/slaves/19", &row).await;
    assert_eq!((r.status, &r.json()["success"]), (200, &json!(true)), "{}", r.body);

    let after = h.row("slaves", 19).await;
    let mut want = before.clone();
    want["poolid"] = json!(2);
    want["enabled"] = json!(false);
    assert_eq!(after, want);
    h.finish().await;
}

async fn bad_requests_get_clear_errors_and_change_nothing(kind: Kind) {
    let Some(h) = Harness::new(kind, ServerConfig::default()).await else {
        return;
    };
    let before = h.dump().await;
    let huge = format!("{{\"notes\": \"{}\"}}", "x".repeat(1024 * 1024 + 1));
    let long_text = json!({"notes": "x".repeat(65_536)}).to_string();
    let long_name = json!({"name": "p".repeat(129)}).to_string();
    let cases: Vec<(&str, &str, Option<&str>, u16, &str)> = vec![
        ("PUT", "/api/slaves/1", Some("{"), 400, "JSON"),
        ("PUT", "/api/slaves/1", Some("[1]"), 400, "object"),
        ("PUT", "/api/slaves/1", Some("3"), 400, "object"),
        ("PUT", "/api/slaves/1", Some(""), 400, "JSON"),
        ("PUT", "/api/slaves/1", Some(r#"{"poolid": "three"}"#), 400, "poolid"),
        ("PUT", "/api/slaves/1", Some(r#"{"poolid": 1.5}"#), 400, "poolid"),
        ("PUT", "/api/slaves/1", Some(r#"{"poolid": 999}"#), 400, "poolid"),
        (
            "PUT",
            "/api/slaves/1",
            Some(r#"{"locked_masterid": 999}"#),
            400,
            "locked_masterid",
        ),
        ("PUT", "/api/slaves/1", Some(r#"{"enabled": "yes"}"#), 400, "enabled"),
        ("PUT", "/api/slaves/1", Some(r#"{"basedir": null}"#), 400, "basedir"),
        (
            "PUT",
            "/api/slaves/1",
            Some(r#"{"basedir": "a\u0000b"}"#),
            400,
            "basedir",
        ),
        ("PUT", "/api/slaves/1", Some(long_text.as_str()), 400, "notes"),
        ("PUT", "/api/slaves/1", Some(huge.as_str()), 413, "larger"),
        ("PUT", "/api/masters/1", Some(r#"{"pb_port": 70000}"#), 400, "pb_port"),
        (
            "PUT",
            "/api/masters/1",
            Some(r#"{"nickname": "bm02"}"#),
            409,
            "duplicate",
        ),
        ("PUT", "/api/pools/1", Some(long_name.as_str()), 400, "name"),
        ("PUT", "/api/slaves/999", Some(r#"{"notes": "x"}"#), 404, "no such row"),
        ("PUT", "/api/slaves/abc", Some(r#"{"notes": "x"}"#), 400, "id"),
        ("PUT", "/api/nosuch/1", Some(r#"{"name": "x"}"#), 404, "not found"),
        (
            "PUT",
            "/api/slave_passwords/1",
            Some(r#"{"password": "x"}"#),
            404,
            "not found",
        ),
        ("GET", "/api/audit_log", None, 404, "not found"),
        ("GET", "/api/nosuch", None, 404, "not found"),
        ("PATCH", "/api/slaves/1", Some("{}"), 405, "method"),
        ("DELETE", "/api/slaves", None, 405, "method"),
        ("POST", "/api/slaves/1", Some("{}"), 405, "method"),
        ("PUT", "/api/gettac/bld-linux64-spot-001", Some("{}"), 405, "method"),
        (
            "POST",
            "/api/pools",
            Some(r#"{"name": "build-linux"}"#),
            409,
            "duplicate",
        ),
        ("POST", "/api/pools", Some(r#"{}"#), 400, "name"),
        ("POST", "/api/pools", Some(r#"{"name": ""}"#), 400, "name"),
        (
            "POST",
            "/api/slaves",
            Some(
                r#"{"name": "new-slave", "distroid": 1, "bitsid": 1, "speedid": 1, "purposeid": 1, "dcid": 1,
                    "trustid": 1, "envid": 1, "poolid": 999, "basedir": "/b"}"#,
            ),
            400,
            "poolid",
        ),
        (
            "POST",
            "/api/slaves",
            Some(
                r#"{"name": "new.slave", "distroid": 1, "bitsid": 1, "speedid": 1, "purposeid": 1, "dcid": 1,
                    "trustid": 1, "envid": 1, "poolid": 1, "basedir": "/b"}"#,
            ),
            400,
            "name",
        ),
        ("DELETE", "/api/pools/1", None, 409, "use"),
        ("DELETE", "/api/masters/1", None, 409, "use"),
        // Without tokens nobody may write templates (SECURITY.md).
        ("DELETE", "/api/tac_templates/1", None, 403, "admin token"),
        ("DELETE", "/api/pools/999", None, 404, "no such row"),
        ("DELETE", "/api/pools/x", None, 400, "id"),
    ];
    for (method, path, body, status, says) in cases {
        let r = h.request(method, path, body.map(str::as_bytes), &[]).await;
        let shown = if r.body.len() > 200 { &r.body[..200] } else { &r.body };
        assert_eq!(r.status, status, "{method} {path}: {shown}");
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{method} {path}");
        let error = r.error();
        assert!(
            error.to_lowercase().contains(&says.to_lowercase()),
            "{method} {path}: {error:?} should mention {says:?}"
        );
    }
    assert_eq!(h.dump().await, before, "a refused request wrote something");
    h.finish().await;
}

async fn unknown_paths_and_methods_outside_the_api_answer_in_plain_text(kind: Kind) {
    let Some(h) = Harness::new(kind, ServerConfig::default()).await else {
        return;
    };
    let r = h.get("/nowhere").await;
    assert_eq!((r.status, r.body.as_str()), (404, "not found"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    let r = h.request("POST", "/gettac/bld-linux64-spot-001", None, &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(h.request("DELETE", "/healthz", None, &[]).await.status, 405);
    h.finish().await;
}

async fn post_creates_and_delete_removes(kind: Kind) {
    let Some(h) = Harness::new(kind, ServerConfig::default()).await else {
        return;
    };
    let r = h
        .send("POST", "/api/pools", &json!({"name": "new-pool", "ignored": 1}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["poolid"].as_i64().unwrap();
    assert_eq!(r.json(), json!({"poolid": id, "name": "new-pool"}));
    assert_eq!(r.header("location"), Some(format!("/api/pools/{id}").as_str()));
    assert_eq!(h.row("pools", id).await["name"], "new-pool");

    let slave = json!({"name": "W64-New-01", "distroid": 3, "bitsid": 2, "speedid": 1, "purposeid": 2,
        "dcid": 1, "trustid": 1, "envid": 1, "poolid": id, "basedir": "C:\\slave", "enabled": 0});
    let r = h.send("POST", "/api/slaves", &slave).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    assert_eq!(
        (created["name"].clone(), created["enabled"].clone()),
        (json!("w64-new-01"), json!(false))
    );
    assert_eq!(created["current_masterid"], Json::Null);

    let r = h.request("DELETE", &format!("/api/pools/{id}"), None, &[]).await;
    assert_eq!(r.status, 409, "a pool with a slave stays: {}", r.body);
    let sid = created["slaveid"].as_i64().unwrap();
    let r = h.request("DELETE", &format!("/api/slaves/{sid}"), None, &[]).await;
    assert_eq!((r.status, r.json()), (200, json!({"success": true})));
    let r = h.request("DELETE", &format!("/api/pools/{id}"), None, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(h.get(&format!("/api/pools/{id}")).await.status, 404);
    h.finish().await;
}

/// Newcomer bug 6: `PUT .../NAME?byname=1` answered with advice to add the
/// `?byname=1` it had. Writes by name work as reads by name do.
async fn puts_and_deletes_by_name(kind: Kind) {
    let Some(h) = Harness::new(kind, ServerConfig::default()).await else {
        return;
    };
    let notes = json!({"notes": "by name"});
    let r = h.send("PUT", "/api/slaves/bld-linux64-spot-003?byname=1", &notes).await;
    assert_eq!((r.status, &r.json()["changed"]), (200, &json!(["notes"])), "{}", r.body);
    let row = h.get("/api/slaves/bld-linux64-spot-003?byname=1").await.json();
    assert_eq!(row["notes"], "by name");
    let r = h.send("PUT", "/api/slaves/no-such-slave?byname=1", &notes).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = h.send("PUT", "/api/slaves/bld-linux64-spot-003", &notes).await;
    assert_eq!(r.status, 400, "a name without ?byname=1 is still no id: {}", r.body);

    let r = h.send("POST", "/api/pools", &json!({"name": "short-lived"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = h.request("DELETE", "/api/pools/short-lived?byname=1", None, &[]).await;
    assert_eq!((r.status, r.json()), (200, json!({"success": true})), "{}", r.body);
    assert_eq!(h.get("/api/pools/short-lived?byname=1").await.status, 404);
    h.finish().await;
}

async fn with_tokens_writes_need_one_and_reads_and_gettac_do_not(kind: Kind) {
    let Some(h) = Harness::new(kind, with_tokens()).await else {
        return;
    };
    let before = h.dump().await;
    let body = br#"{"notes": "by someone"}"#;
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong-token-0123456789")],
        vec![("authorization", "Basic cmVsb3BzOnB3")],
        vec![("authorization", TOKEN)],
    ] {
        for (method, path) in [
            ("PUT", "/api/slaves/1"),
            ("POST", "/api/pools"),
            ("DELETE", "/api/slaves/1"),
        ] {
            let r = h.request(method, path, Some(body), &headers).await;
            assert_eq!(r.status, 401, "{method} {path} {headers:?}");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
            assert!(r.error().contains("Bearer"));
        }
    }
    assert_eq!(h.dump().await, before);

    assert_eq!(h.get("/api/slaves").await.status, 200);
    assert_eq!(h.get("/api/audit").await.status, 200);
    assert_eq!(h.get("/gettac/bld-linux64-spot-001").await.status, 200);

    let auth = format!("Bearer {TOKEN}");
    let r = h
        .request("PUT", "/api/slaves/1", Some(body), &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let audit = h.get("/api/audit?table=slaves&id=1&limit=1").await.json();
    assert_eq!(audit[0]["actor"], "relops");
    assert_eq!(audit[0]["new_values"], json!({"notes": "by someone"}));
    assert!(!h.get("/api/audit").await.body.contains(TOKEN));
    h.finish().await;
}

async fn the_audit_log_records_writes_and_allocations_newest_first(kind: Kind) {
    let Some(h) = Harness::new(kind, ServerConfig::default()).await else {
        return;
    };
    let r = h
        .send("PUT", "/api/slaves/3", &json!({"notes": "bug 123", "enabled": true}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(h.get("/gettac/bld-linux64-spot-003").await.status, 200);
    let master = h.row("slaves", 3).await["current_masterid"].clone();

    let entries = h.get("/api/audit?table=slaves&id=3").await.json();
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0]["actor"], "gettac");
    assert_eq!(entries[0]["old_values"], json!({"current_masterid": null}));
    assert_eq!(
        entries[0]["new_values"],
        json!({"current_masterid": master, "reason": "balanced"})
    );
    assert_eq!(
        entries[1]["actor"],
        PEER.split(':').next().unwrap(),
        "without tokens the actor is the address"
    );
    assert_eq!(entries[1]["old_values"], json!({"notes": null}));
    assert_eq!(entries[1]["new_values"], json!({"notes": "bug 123"}));
    assert!(entries[0]["id"].as_i64() > entries[1]["id"].as_i64());

    assert_eq!(h.get("/api/audit?limit=1").await.json().as_array().unwrap().len(), 1);
    assert_eq!(h.get("/api/audit?table=masters").await.json(), json!([]));
    for bad in ["/api/audit?limit=0", "/api/audit?table=nosuch", "/api/audit?id=x"] {
        assert_eq!(h.get(bad).await.status, 400, "{bad}");
    }
    h.finish().await;
}

async fn health_and_metrics(kind: Kind) {
    let Some(h) = Harness::new(kind, ServerConfig::default()).await else {
        return;
    };
    let r = h.get("/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    assert_eq!(h.get("/gettac/bld-linux64-spot-003").await.status, 200);
    assert_eq!(h.get("/gettac/nobody").await.status, 404);
    let r = h.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    for line in [
        r#"slavealloc_http_requests_total{route="/gettac/{slave}",method="GET",status="200"} 1"#,
        r#"slavealloc_http_requests_total{route="/gettac/{slave}",method="GET",status="404"} 1"#,
        r#"slavealloc_http_requests_total{route="/healthz",method="GET",status="200"} 1"#,
        r#"slavealloc_allocations_total{pool="1",master="#,
        "slavealloc_allocation_duration_seconds_count 1",
        "slavealloc_allocation_batch_size_count 2", // the unknown name went through a transaction too
        "slavealloc_database_up 1",
    ] {
        assert!(r.body.contains(line), "missing {line:?} in\n{}", r.body);
    }
    h.finish().await;
}

async fn the_api_index_documents_every_route_and_lists_the_tables(kind: Kind) {
    let Some(h) = Harness::new(kind, ServerConfig::default()).await else {
        return;
    };
    let r = h.get("/api/").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    for table in Table::EXPOSED {
        assert!(r.body.contains(&format!("href=\"/api/{table}\"")), "{table}");
    }
    for route in [
        "/gettac/",
        "/api/gettac/",
        "byname=1",
        "PUT",
        "POST",
        "DELETE",
        "/api/audit",
        "/healthz",
        "/metrics",
    ] {
        assert!(r.body.contains(route), "{route}");
    }
    assert_eq!(h.get("/api").await.status, 200);

    // The OpenAPI document describes every table's columns from the
    // domain's schema, not from a hand-kept copy.
    let doc = h.get("/api/openapi.json").await.json();
    for table in Table::EXPOSED {
        let props = &doc["components"]["schemas"][table.name()]["properties"];
        for c in table.columns() {
            let kind = match c.kind {
                slavealloc_domain::schema::Kind::Bool => "boolean",
                slavealloc_domain::schema::Kind::Name
                | slavealloc_domain::schema::Kind::SlaveName
                | slavealloc_domain::schema::Kind::Text => "string",
                _ => "integer",
            };
            assert_eq!(props[c.name]["type"], kind, "{table}.{}", c.name);
            assert_eq!(props[c.name]["readOnly"], !c.updatable, "{table}.{}", c.name);
            if let Some(label) = c.label {
                assert_eq!(props[label]["type"], "string", "{table}.{label}");
            }
        }
    }
    h.finish().await;
}

async fn everything_lives_under_the_base_url(kind: Kind) {
    let ui = warp::path::end()
        .map(|| warp::reply::html("the ui"))
        .map(warp::Reply::into_response)
        .boxed();
    let Some(h) = Harness::new(
        kind,
        ServerConfig {
            base_url: "/slavealloc/".into(),
            ui: Some(ui),
            ..ServerConfig::default()
        },
    )
    .await
    else {
        return;
    };
    assert_eq!(h.get("/slavealloc/gettac/bld-linux64-spot-003").await.status, 200);
    assert_eq!(h.get("/slavealloc/api/pools").await.status, 200);
    assert_eq!(h.get("/slavealloc/healthz").await.status, 200);
    assert_eq!(h.get("/gettac/bld-linux64-spot-003").await.status, 404);
    assert_eq!(h.get("/api/pools").await.status, 404);
    let r = h.get("/slavealloc/").await;
    assert_eq!((r.status, r.header("location")), (302, Some("/slavealloc/ui/")));
    assert_eq!(h.get("/slavealloc/ui/").await.body, "the ui");
    assert!(h
        .get("/slavealloc/api/")
        .await
        .body
        .contains("href=\"/slavealloc/api/slaves\""));
    let doc = h.get("/slavealloc/api/openapi.json").await.json();
    assert_eq!(doc["servers"][0]["url"], "/slavealloc");
    let r = h.send("POST", "/slavealloc/api/pools", &json!({"name": "p"})).await;
    assert!(r.header("location").unwrap().starts_with("/slavealloc/api/pools/"));

    let Some(plain) = Harness::new(kind, ServerConfig::default()).await else {
        return;
    };
    let r = plain.get("/").await;
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("/api/")),
        "no UI: the API index"
    );
    plain.finish().await;
    h.finish().await;
}

async fn without_the_allocator_there_is_no_gettac(kind: Kind) {
    let Some(h) = Harness::new(
        kind,
        ServerConfig {
            allocator_enabled: false,
            ..ServerConfig::default()
        },
    )
    .await
    else {
        return;
    };
    assert_eq!(h.get("/gettac/bld-linux64-spot-003").await.status, 404);
    assert_eq!(h.get("/api/gettac/bld-linux64-spot-003").await.status, 404);
    assert_eq!(h.get("/api/slaves").await.status, 200);
    h.finish().await;
}

async fn until_the_database_is_ready_requests_get_503_with_the_reason(kind: Kind) {
    let readiness = Readiness::not_ready("cannot reach the database: connection refused");
    let Some(h) = Harness::new(
        kind,
        ServerConfig {
            readiness: readiness.clone(),
            ..ServerConfig::default()
        },
    )
    .await
    else {
        return;
    };
    let before = h.dump().await;
    let r = h.get("/gettac/bld-linux64-spot-003").await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("connection refused"), "{}", r.body);
    let r = h.get("/api/slaves").await;
    assert_eq!(r.status, 503);
    assert!(r.error().contains("connection refused"));
    assert_eq!(h.send("PUT", "/api/slaves/1", &json!({"notes": "x"})).await.status, 503);
    assert_eq!(h.get("/healthz").await.status, 503);
    assert!(h.get("/metrics").await.body.contains("slavealloc_database_up 0"));
    assert_eq!(h.get("/api/").await.status, 200, "no database needed");
    assert_eq!(h.dump().await, before);

    readiness.set_ready();
    assert_eq!(h.get("/gettac/bld-linux64-spot-003").await.status, 200);
    assert_eq!(h.get("/healthz").await.status, 200);
    h.finish().await;
}

/// The actor of the newest audit entry of slave 3 after a PUT sent with
/// `headers`.
async fn actor_of_a_put(h: &Harness, headers: &[(&str, &str)]) -> Json {
    let mut headers = headers.to_vec();
    headers.push(("content-type", "application/json"));
    let body = json!({"notes": format!("{headers:?}")}).to_string();
    let r = h.request("PUT", "/api/slaves/3", Some(body.as_bytes()), &headers).await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.get("/api/audit?table=slaves&id=3&limit=1").await.json()[0]["actor"].clone()
}

/// Behind nginx every peer is 127.0.0.1: with the proxy trusted, the audit
/// names the client nginx put in `X-Real-IP`; without, a client cannot
/// claim another's address with that header.
#[tokio::test]
async fn a_trusted_proxy_names_the_client_and_an_untrusted_one_cannot() {
    let peer = PEER.split(':').next().unwrap();
    let trusting = ServerConfig {
        trusted_proxies: vec![peer.parse().unwrap()],
        ..ServerConfig::default()
    };
    let h = Harness::new(Kind::Memory, trusting).await.unwrap();
    assert_eq!(actor_of_a_put(&h, &[("x-real-ip", "192.0.2.7")]).await, "192.0.2.7");
    assert_eq!(
        actor_of_a_put(&h, &[("x-real-ip", " 2001:db8::5 ")]).await,
        "2001:db8::5"
    );
    assert_eq!(actor_of_a_put(&h, &[("x-real-ip", "not an address")]).await, peer);
    assert_eq!(actor_of_a_put(&h, &[]).await, peer);
    h.finish().await;

    let h = Harness::new(Kind::Memory, ServerConfig::default()).await.unwrap();
    assert_eq!(actor_of_a_put(&h, &[("x-real-ip", "192.0.2.7")]).await, peer);
    h.finish().await;

    let elsewhere = ServerConfig {
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..ServerConfig::default()
    };
    let h = Harness::new(Kind::Memory, elsewhere).await.unwrap();
    assert_eq!(actor_of_a_put(&h, &[("x-real-ip", "192.0.2.7")]).await, peer);
    h.finish().await;
}

on_every_store!(
    gettac_commits_the_allocation_and_answers_the_tac_as_text,
    gettac_says_no_allocation_for_unknown_and_invalid_names,
    a_disabled_slave_gets_the_disabled_tac_and_loses_its_master,
    api_gettac_answers_json_and_commits_nothing,
    every_table_lists_its_rows_and_slaves_and_masters_are_denormalized,
    slave_filters_and_the_decommissioned_environment,
    one_row_by_id_or_by_name_and_an_empty_object_when_missing,
    the_original_ui_request_sequence_works_unchanged,
    bad_requests_get_clear_errors_and_change_nothing,
    unknown_paths_and_methods_outside_the_api_answer_in_plain_text,
    post_creates_and_delete_removes,
    puts_and_deletes_by_name,
    with_tokens_writes_need_one_and_reads_and_gettac_do_not,
    the_audit_log_records_writes_and_allocations_newest_first,
    health_and_metrics,
    the_api_index_documents_every_route_and_lists_the_tables,
    everything_lives_under_the_base_url,
    without_the_allocator_there_is_no_gettac,
    until_the_database_is_ready_requests_get_503_with_the_reason,
);
