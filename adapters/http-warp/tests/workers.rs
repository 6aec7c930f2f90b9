//! `GET /api/masters/<name>/workers`, the worker lists Buildbot masters
//! load: who is listed and with which password (the one the slave's tac
//! carries), who may read them (admin and master tokens only, never
//! without tokens), what a master token may not do, the Python format read
//! back by a real python3, and every bad request's answer.
// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Harness, Kind, Resp};
use serde_json::{json, Value as Json};
use slavealloc_domain::{Dump, Table, Value};
use slavealloc_fixtures::sample_fleet;
use slavealloc_http_warp::auth::Scope;
use slavealloc_http_warp::{ServerConfig, Tokens};

const ADMIN: &str = "Bearer admin-secret-0123456789";
const OPERATOR: &str = "Bearer operator-secret-012345";
const VIEWER: &str = "Bearer viewer-secret-01234567";
const MASTER: &str = "Bearer bm09-master-secret-0123";

/// The sample fleet's win10 password: quotes and a backslash.
const WIN10_PW: &str = r#"w10-p@ss'word"\"#;

fn scoped() -> ServerConfig {
    ServerConfig {
        tokens: Tokens::with_scopes([
            ("relops", "admin-secret-0123456789", Scope::Admin),
            ("buildduty", "operator-secret-012345", Scope::Operator),
            ("viewer", "viewer-secret-01234567", Scope::Secrets),
            ("bm09", "bm09-master-secret-0123", Scope::Master),
        ])
        .unwrap(),
        ..ServerConfig::default()
    }
}

async fn get_as(h: &Harness, path: &str, token: Option<&str>) -> Resp {
    let headers: Vec<(&str, &str)> = token.map(|t| ("authorization", t)).into_iter().collect();
    h.request("GET", path, None, &headers).await
}

async fn write_as(h: &Harness, method: &str, path: &str, body: &Json, token: &str) -> Resp {
    h.request(
        method,
        path,
        Some(body.to_string().as_bytes()),
        &[("content-type", "application/json"), ("authorization", token)],
    )
    .await
}

/// The list, asserting a 200 JSON answer.
async fn list(h: &Harness, master: &str) -> Json {
    let r = get_as(h, &format!("/api/masters/{master}/workers"), Some(MASTER)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

/// `(name, password, locked)` of every worker, in the answer's order.
fn workers(list: &Json) -> Vec<(String, String, bool)> {
    list["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_owned(),
                w["password"].as_str().unwrap().to_owned(),
                w["locked"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn worker<'a>(list: &'a Json, name: &str) -> Option<&'a Json> {
    list["workers"].as_array().unwrap().iter().find(|w| w["name"] == name)
}

async fn lists_the_pool_and_the_locked_slaves_with_their_tacs_password(kind: Kind) {
    let Some(h) = Harness::new(kind, scoped()).await else {
        return;
    };
    let before = h.dump().await;
    let l = list(&h, "bm09").await;
    assert_eq!((l["master"].clone(), l["masterid"].clone()), (json!("bm09"), json!(9)));
    assert_eq!(l["pool"], "tests-win");
    assert_eq!(l["missing_password"], json!([]));

    // Every enabled slave of pool 4, whatever its current master, by name.
    let mut expected: Vec<String> = before
        .rows(Table::Slaves)
        .iter()
        .filter(|s| s["poolid"] == Value::Int(4) && s["enabled"] == Value::Bool(true))
        .map(|s| s["name"].as_text().unwrap().to_owned())
        .collect();
    expected.sort();
    let got = workers(&l);
    assert_eq!(got.iter().map(|w| w.0.clone()).collect::<Vec<_>>(), expected);
    assert!(worker(&l, "t-w1064-ix-007").is_none(), "a disabled slave is listed");
    // The distro's row beats the wildcard; the wildcard for the others.
    assert_eq!(worker(&l, "t-w1064-ix-009").unwrap()["password"], WIN10_PW);
    assert_eq!(worker(&l, "b-2012-ix-001").unwrap()["password"], "win-any-pw");
    // Locked to bm10: on bm09's list as a pool member, on bm10's as locked.
    assert_eq!(worker(&l, "t-w1064-ix-003").unwrap()["locked"], false);
    assert_eq!(
        worker(&list(&h, "bm10").await, "t-w1064-ix-003").unwrap()["locked"],
        true
    );
    // The same password as each one's tac (admin tokens see it in previews).
    for (name, password, _) in &got {
        let r = get_as(&h, &format!("/api/gettac/{name}"), Some(ADMIN)).await;
        let tac = r.json()["tac"].as_str().unwrap().to_owned();
        assert!(tac.contains(&format!("passwd={password}\n")), "{name}: {tac}");
    }
    // By masterid, the same list; reading wrote nothing.
    assert_eq!(list(&h, "9").await, l);
    assert_eq!(h.dump().await, before);

    // A slave of another pool locked to bm09 joins, with its own pool's
    // password (the one its tac carries); a disabled one leaves.
    let r = write_as(&h, "PUT", "/api/slaves/3", &json!({"locked_masterid": 9}), ADMIN).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = write_as(&h, "PUT", "/api/slaves/45", &json!({"enabled": false}), ADMIN).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A slave in a pool without any password row cannot log in: listed
    // apart, never with a made-up password.
    let pool = write_as(&h, "POST", "/api/pools", &json!({"name": "no-passwords"}), ADMIN).await;
    assert_eq!(pool.status, 201, "{}", pool.body);
    let poolid = pool.json()["poolid"].clone();
    let r = write_as(
        &h,
        "PUT",
        "/api/slaves/46",
        &json!({"poolid": poolid, "locked_masterid": 9}),
        ADMIN,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let l = list(&h, "bm09").await;
    let locked = worker(&l, "bld-linux64-spot-003").unwrap();
    assert_eq!(
        (locked["password"].clone(), locked["locked"].clone()),
        (json!("bld-Linux-pw"), json!(true))
    );
    assert_eq!(locked["slaveid"], 3);
    assert!(worker(&l, "t-w1064-ix-011").is_none(), "a disabled slave is listed");
    assert!(worker(&l, "t-w1064-ix-012").is_none());
    assert_eq!(l["missing_password"], json!(["t-w1064-ix-012"]));
    let names: Vec<String> = workers(&l).into_iter().map(|w| w.0).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "workers are sorted by name");
    h.finish().await;
}

on_every_store!(lists_the_pool_and_the_locked_slaves_with_their_tacs_password);

#[tokio::test]
async fn only_admin_and_master_tokens_read_worker_lists() {
    let open = Harness::new(Kind::Memory, ServerConfig::default()).await.unwrap();
    for path in ["/api/masters/bm09/workers", "/api/masters/nobody/workers?format=xml"] {
        let r = open.get(path).await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        let why = r.error();
        assert!(
            why.contains("admin or master scope") && !why.contains(WIN10_PW),
            "{why}"
        );
    }
    open.finish().await;

    let h = Harness::new(Kind::Memory, scoped()).await.unwrap();
    let path = "/api/masters/bm09/workers";
    for token in [None, Some("Bearer not-a-token-at-all")] {
        let r = get_as(&h, path, token).await;
        assert_eq!(r.status, 401, "{token:?}: {}", r.body);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert!(!r.body.contains(WIN10_PW));
    }
    for (token, scope) in [(OPERATOR, "operator"), (VIEWER, "secrets")] {
        let r = get_as(&h, path, Some(token)).await;
        assert_eq!(r.status, 403, "{scope}: {}", r.body);
        let why = r.error();
        assert!(why.contains(scope) && why.contains("admin or master scope"), "{why}");
        assert!(!r.body.contains("w10-p@ss"), "{scope} saw a password");
    }
    for token in [ADMIN, MASTER] {
        let r = get_as(&h, path, Some(token)).await;
        assert_eq!(r.status, 200, "{token}: {}", r.body);
        assert!(r.json()["workers"].as_array().unwrap().len() > 5);
    }
    h.finish().await;
}

#[tokio::test]
async fn a_master_token_may_do_nothing_else() {
    let h = Harness::new(Kind::Memory, scoped()).await.unwrap();
    let before = h.dump().await;
    for (method, path, body) in [
        ("PUT", "/api/slaves/3", json!({"notes": "x"})),
        ("PUT", "/api/masters/9", json!({"enabled": false})),
        ("POST", "/api/pools", json!({"name": "p"})),
        ("DELETE", "/api/speeds/1", json!({})),
    ] {
        let r = write_as(&h, method, path, &body, MASTER).await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
        assert!(r.error().contains("may only read worker lists"), "{}", r.body);
    }
    assert_eq!(h.dump().await, before, "a master token wrote");
    // No password in previews either.
    let r = get_as(&h, "/api/gettac/t-w1064-ix-009", Some(MASTER)).await;
    let tac = r.json()["tac"].as_str().unwrap().to_owned();
    assert!(tac.contains("passwd=***") && !tac.contains("w10-p@ss"), "{tac}");
    h.finish().await;
}

/// Passwords and names that break naive quoting in Python, JSON, shells
/// and HTML.
const HOSTILE: [&str; 6] = [
    r#"it's "quoted" \ back\\slash \N{BULLET} \x41"#,
    "line one\nline two\r\n\ttabbed\u{b}\u{c}\u{7f}",
    "ünïcødé € 😀 \u{2028}\u{feff}",
    "'''triple''' \"\"\" ]), __import__('os').system('id') #",
    "",
    "{0} %s %(passwd)r {{ x }}",
];

/// The sample fleet with hostile passwords on pool 4 (tests-win), and a
/// hostile pool name and master nickname.
fn hostile_fleet() -> Dump {
    let mut fleet = sample_fleet();
    let rows = fleet.tables.get_mut(&Table::SlavePasswords).unwrap();
    rows.retain(|r| r["poolid"] != Value::Int(4));
    let rows_of_pool_4 = [
        (Value::Null, HOSTILE[0]),
        (Value::Int(3), HOSTILE[1]),
        (Value::Int(4), HOSTILE[4]),
    ];
    for (distro, password) in rows_of_pool_4 {
        rows.push(
            [
                ("poolid".to_owned(), Value::Int(4)),
                ("distroid".to_owned(), distro),
                ("password".to_owned(), Value::Text(password.to_owned())),
            ]
            .into(),
        );
    }
    // A slave whose distro has no row of its own gets the wildcard.
    let slaves = fleet.tables.get_mut(&Table::Slaves).unwrap();
    slaves
        .iter_mut()
        .find(|s| s["slaveid"] == Value::Int(44))
        .unwrap()
        .insert("distroid".into(), Value::Int(1));
    let pool = fleet.tables.get_mut(&Table::Pools).unwrap();
    pool.iter_mut()
        .find(|p| p["poolid"] == Value::Int(4))
        .unwrap()
        .insert("name".into(), Value::Text(HOSTILE[2].to_owned()));
    let masters = fleet.tables.get_mut(&Table::Masters).unwrap();
    masters
        .iter_mut()
        .find(|m| m["masterid"] == Value::Int(9))
        .unwrap()
        .insert("nickname".into(), Value::Text(format!("bm09 {}", HOSTILE[3])));
    fleet
}

/// Reads a `?format=python` answer with python3: `ast.parse`, then
/// `ast.literal_eval` of each assignment's value; the values as JSON.
/// `None` when python3 is missing outside CI.
fn literal_eval(source: &str) -> Option<Json> {
    const READER: &str = r#"
import ast, json, sys
source = sys.stdin.buffer.read().decode("ascii")
values = {}
for node in ast.parse(source).body:
    assert isinstance(node, ast.Assign) and len(node.targets) == 1, ast.dump(node)
    values[node.targets[0].id] = ast.literal_eval(node.value)
json.dump(values, sys.stdout)
"#;
    let child = Command::new("python3")
        .args(["-c", READER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED: python3 cannot run ({e})");
            return None;
        }
        Err(e) => panic!("python3 is needed under CI=true: {e}"),
    };
    child.stdin.take().unwrap().write_all(source.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python3 could not read the source: {}\n{source}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[tokio::test]
async fn the_python_format_reads_back_in_python3_as_the_json_says() {
    let h = Harness::with_fleet(Kind::Memory, &hostile_fleet(), scoped())
        .await
        .unwrap();
    let json = list(&h, "9").await;
    // Every hostile password is in the list, so every one is checked.
    let passwords: Vec<String> = workers(&json).into_iter().map(|w| w.1).collect();
    for p in [HOSTILE[0], HOSTILE[1], HOSTILE[4]] {
        assert!(passwords.iter().any(|q| q == p), "{p:?} not in {passwords:?}");
    }

    let r = get_as(&h, "/api/masters/9/workers?format=python", Some(MASTER)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/x-python; charset=utf-8"));
    assert!(r.body.is_ascii(), "{}", r.body);
    assert!(r.body.starts_with("# "), "{}", r.body);
    let Some(read) = literal_eval(&r.body) else {
        return h.finish().await;
    };
    let pairs: Vec<Json> = workers(&json).into_iter().map(|w| json!([w.0, w.1])).collect();
    assert_eq!(
        read,
        json!({
            "MASTER": json["master"],
            "MASTERID": 9,
            "POOL": HOSTILE[2],
            "WORKERS": pairs,
            "MISSING_PASSWORD": [],
        })
    );

    // The other hostile strings as a master name (percent-encoded in the
    // path) and a missing password list.
    for (i, s) in HOSTILE.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
        let nickname = format!("m{i} {s}");
        let r = write_as(&h, "PUT", "/api/masters/10", &json!({"nickname": nickname}), ADMIN).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = get_as(&h, "/api/masters/10/workers?format=python", Some(MASTER)).await;
        let Some(read) = literal_eval(&r.body) else { break };
        assert_eq!(read["MASTER"], nickname);
    }
    let pool = write_as(&h, "POST", "/api/pools", &json!({"name": "bare"}), ADMIN).await;
    let poolid = pool.json()["poolid"].clone();
    let r = write_as(&h, "PUT", "/api/masters/10", &json!({"poolid": poolid}), ADMIN).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = write_as(&h, "PUT", "/api/slaves/3", &json!({"poolid": poolid}), ADMIN).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = get_as(&h, "/api/masters/10/workers?format=python", Some(MASTER)).await;
    if let Some(read) = literal_eval(&r.body) {
        // t-w1064-ix-003 stays: it is locked to this master, and its
        // password is its own pool's.
        assert_eq!(read["WORKERS"], json!([["t-w1064-ix-003", HOSTILE[1]]]));
        assert_eq!(read["MISSING_PASSWORD"], json!(["bld-linux64-spot-003"]));
    }
    h.finish().await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let h = Harness::new(Kind::Memory, scoped()).await.unwrap();
    let error = |status: u16, needle: &'static str| {
        move |r: Resp| {
            assert_eq!(r.status, status, "{}", r.body);
            let why = r.error();
            assert!(why.contains(needle), "{why:?} does not say {needle:?}");
        }
    };
    for (path, check) in [
        ("/api/masters/bm99/workers", error(404, "no master is named \"bm99\"")),
        ("/api/masters/999/workers", error(404, "no master is named \"999\"")),
        ("/api/masters/99999999999/workers", error(404, "no master")),
        ("/api/masters/bm09/workers?format=xml", error(400, "json or python")),
        ("/api/masters/bm09/workers?format=", error(400, "json or python")),
        (
            "/api/masters/bm09/workers?format=json&format=python",
            error(400, "more than once"),
        ),
        ("/api/masters/bm09/workers?fromat=python", error(400, "\"fromat\"")),
        (
            "/api/masters/bm09/workers?pool=tests-win",
            error(400, "takes only format"),
        ),
        ("/api/masters/bm%zz/workers", error(400, "percent-encoded")),
        ("/api/masters/bm%ff/workers", error(400, "percent-encoded")),
    ] {
        check(get_as(&h, path, Some(MASTER)).await);
    }
    // Other methods on the route: 405, and nothing is read or written.
    for method in ["PUT", "POST", "DELETE"] {
        let r = write_as(&h, method, "/api/masters/bm09/workers", &json!({}), ADMIN).await;
        assert_eq!(r.status, 405, "{method}: {}", r.body);
    }
    // A nickname that needs percent-encoding is found by it.
    let r = write_as(&h, "PUT", "/api/masters/9", &json!({"nickname": "bm 09/é"}), ADMIN).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = get_as(&h, "/api/masters/bm%2009%2F%C3%A9/workers", Some(MASTER)).await;
    assert_eq!(
        (r.status, r.json()["master"].clone()),
        (200, json!("bm 09/é")),
        "{}",
        r.body
    );
    h.finish().await;
}
