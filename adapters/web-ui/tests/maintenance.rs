//! The UI's maintenance pages through `warp::test`, over the in-memory
//! store with the sample fleet: a master's page, the audit page's filters
//! and cursor, and what the slaves page gives the selection and the bulk
//! dialog. What the scripts do with them (select, preview, apply, drain) is
//! the real-browser test's, `apps/slavealloc/tests/browser.rs`.

// Test helpers may unwrap: a panic is the failure report we want.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::SystemTime;

use slavealloc_domain::lifecycle::HoldTarget;
use slavealloc_domain::{Dump, FixedHost, HoldRequest, Inventory, Maintenance, Table, Writer};
use slavealloc_fixtures::{generate_fleet, sample_fleet, FleetSpec};
use slavealloc_store_memory::MemoryStore;
use slavealloc_web_ui::{routes, UiConfig};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

/// A note as hostile as a person can type one (one line: a hold takes no
/// control characters).
const EVIL: &str = r#"</script><script>alert(1)</script> & "double" 'single'"#;
const EVIL_ESCAPED: &str =
    "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;double&quot; &#39;single&#39;";

const BASE: &str = "/relops/sa";

fn host() -> Arc<FixedHost> {
    Arc::new(FixedHost {
        now: SystemTime::now(),
        fqdn: "slavealloc.test".into(),
    })
}

struct Fleet {
    inventory: Inventory,
    maintenance: Maintenance,
}

fn fleet(dump: &Dump) -> Fleet {
    let store = Arc::new(MemoryStore::from_dump(dump).unwrap());
    let inventory = Inventory::new(store.clone(), host());
    let maintenance = Maintenance::new(inventory.clone(), store, host());
    Fleet { inventory, maintenance }
}

fn ui(inventory: Inventory) -> BoxedFilter<(Response,)> {
    let config = UiConfig {
        base_url: BASE.into(),
        ..UiConfig::default()
    };
    warp::path("ui").and(routes(config, inventory)).boxed()
}

async fn get(filter: &BoxedFilter<(Response,)>, path: &str) -> (StatusCode, String) {
    let res = warp::test::request().path(path).reply(filter).await;
    let body = String::from_utf8(res.body().to_vec()).unwrap();
    (res.status(), body)
}

/// Every `href`, `src` and `action` of a page is under the base (or an
/// absolute link to a master's own web page).
fn assert_under_base(path: &str, body: &str) {
    for attr in [" href=\"", " src=\"", " action=\""] {
        for chunk in body.split(attr).skip(1) {
            let url = &chunk[..chunk.find('"').unwrap()];
            assert!(
                url.starts_with(&format!("{BASE}/")) || url.starts_with("http://"),
                "{path}: {attr}{url}"
            );
        }
    }
}

/// The page's JSON block for app.js.
fn page_data(body: &str) -> serde_json::Value {
    let start = body.find(r#"<script type="application/json" id="page-data">"#).unwrap();
    let json = &body[start..];
    let json = &json[json.find('>').unwrap() + 1..json.find("</script>").unwrap()];
    serde_json::from_str(json).unwrap()
}

/// The `data-entry` ids of an audit page's rows, in order, with their
/// kinds.
fn audit_rows(body: &str) -> Vec<(String, i64)> {
    body.split("<tr class=\"audit-")
        .skip(1)
        .map(|chunk| {
            let kind = chunk[..chunk.find('"').unwrap()].to_owned();
            let id = chunk.split("data-entry=\"").nth(1).unwrap();
            (kind, id[..id.find('"').unwrap()].parse().unwrap())
        })
        .collect()
}

fn hold(note: &str) -> HoldRequest {
    HoldRequest {
        note: note.into(),
        until: Some("2h".into()),
        graceful: true,
    }
}

#[tokio::test]
async fn a_masters_page_is_under_the_base_and_escapes_what_people_wrote() {
    let f = fleet(&sample_fleet());
    let notes = serde_json::json!({ "notes": EVIL });
    f.inventory
        .update(Table::Masters, 6, &serde_json::from_value(notes).unwrap(), "relops")
        .await
        .unwrap();
    let ui = ui(f.inventory.clone());

    let (status, body) = get(&ui, "/ui/masters/bm06").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_under_base("/ui/masters/bm06", &body);
    assert!(body.contains(EVIL_ESCAPED), "the notes, escaped");
    assert!(!body.contains("<script>alert(1)"));
    // What app.js reads the drain with, and the dialog it drains with.
    assert!(body.contains(r#"id="drain-panel" data-masterid="6""#), "{body}");
    assert!(body.contains(r#"id="master" data-id="6" data-name="bm06""#));
    assert!(body.contains(r#"id="drain-dialog""#) && body.contains(r#"data-action="drain""#));
    assert!(!body.contains(r#"data-action="undrain""#), "bm06 is enabled");
    // Its history holds the edit, and the link to the rest of it is ours.
    assert!(body.contains(&format!(r#"href="{BASE}/ui/audit?table=masters&amp;row=6""#)));
    assert!(
        body.contains(&format!("<del>∅</del> → <ins>{EVIL_ESCAPED}</ins>")),
        "{body}"
    );
    assert!(body.contains(&format!(r#"href="{BASE}/ui/slaves?master=bm06&amp;decomm=1""#)));

    // A disabled master offers Undrain; a master is found by id too.
    let (_, bm03) = get(&ui, "/ui/masters/3").await;
    assert!(bm03.contains(r#"data-name="bm03""#) && bm03.contains(r#"data-action="undrain""#));

    // The masters list links every nickname to its page.
    let (_, list) = get(&ui, "/ui/masters").await;
    assert!(list.contains(&format!(r#"href="{BASE}/ui/masters/bm06""#)));
    assert!(list.contains(r#"data-action="undrain""#), "bm03 and bm13");

    // No such master: an HTML 404 that names it, escaped.
    let (status, body) = get(&ui, "/ui/masters/bm%3Cb%3E%22x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("No master is named &quot;bm&lt;b&gt;\\&quot;x&quot;."),
        "{body}"
    );
    assert_under_base("/ui/masters/nope", &body);
}

#[tokio::test]
async fn the_audit_page_filters_by_kind_actor_time_and_row_and_pages_with_a_cursor() {
    let f = fleet(&sample_fleet());
    let relops = Writer::admin("relops");
    f.maintenance
        .hold(HoldTarget::Master, &[6], &hold(EVIL), &relops)
        .await
        .unwrap();
    let disable = HoldRequest {
        graceful: false,
        ..hold("failing disks")
    };
    f.maintenance
        .hold(HoldTarget::Slave, &[1, 2], &disable, &relops)
        .await
        .unwrap();
    let notes = serde_json::json!({ "notes": "reimaged" });
    f.inventory
        .update(Table::Slaves, 3, &serde_json::from_value(notes).unwrap(), "other")
        .await
        .unwrap();
    let ui = ui(f.inventory.clone());

    let (_, all) = get(&ui, "/ui/audit").await;
    assert_under_base("/ui/audit", &all);
    let kinds: Vec<String> = audit_rows(&all).into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["changed", "lifecycle", "lifecycle", "lifecycle"], "{all}");
    // What a drain says is its own text, escaped; `enabled` is a change.
    assert!(
        all.contains(&format!(
            r#"<span class="lifecycle-text">drained gracefully: {EVIL_ESCAPED} (until "#
        )),
        "{all}"
    );
    assert!(!all.contains("<script>alert(1)"));
    assert!(all.contains("<del>yes</del> → <ins>no</ins>"));
    assert!(!all.contains(r#"<span class="col">lifecycle</span>"#));

    let (_, lifecycle) = get(&ui, "/ui/audit?kind=lifecycle").await;
    assert_eq!(audit_rows(&lifecycle).len(), 3);
    assert!(audit_rows(&lifecycle).iter().all(|(k, _)| k == "lifecycle"));
    assert!(lifecycle.contains(r#"<option value="lifecycle" selected>"#));
    let (_, edits) = get(&ui, "/ui/audit?kind=edit").await;
    assert_eq!(audit_rows(&edits).len(), 1);
    let (_, other) = get(&ui, "/ui/audit?actor=other").await;
    assert_eq!(audit_rows(&other), audit_rows(&edits), "by actor");
    let (_, recent) = get(&ui, "/ui/audit?since=1d").await;
    assert_eq!(audit_rows(&recent).len(), 4);
    let (_, old) = get(&ui, "/ui/audit?until=2000-01-01T00:00:00Z").await;
    assert!(audit_rows(&old).is_empty() && old.contains("No change recorded for this filter"));
    // A row by name without a table: a slave's, else a master's.
    let (_, bm06) = get(&ui, "/ui/audit?row=bm06").await;
    assert_eq!(audit_rows(&bm06).len(), 1, "{bm06}");
    let (_, spot) = get(&ui, "/ui/audit?name=bld-linux64-spot-001").await;
    assert_eq!(audit_rows(&spot).len(), 1);

    // What cannot be read is said, not ignored, and nothing is listed.
    for (query, says) in [
        ("since=banana", "since: &quot;banana&quot; is neither an age"),
        ("kind=nope", "kind: &quot;nope&quot; is none of"),
        ("cursor=x", "cursor: must be the id"),
        ("row=nobody", "No slave or master is named &quot;nobody&quot;."),
    ] {
        let (status, body) = get(&ui, &format!("/ui/audit?{query}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains(says), "{query}: {body}");
        assert!(audit_rows(&body).is_empty(), "{query}");
    }

    // Pages of two: the next starts below the last entry shown, with the
    // same filters, and says so.
    let (_, first) = get(&ui, "/ui/audit?kind=lifecycle&limit=2").await;
    let page1 = audit_rows(&first);
    assert_eq!(page1.len(), 2);
    let last = page1[1].1;
    let older = format!(r#"href="{BASE}/ui/audit?kind=lifecycle&amp;limit=2&amp;cursor={last}""#);
    assert!(first.contains(&older), "{first}");
    assert!(
        first.contains(r#"<option selected>2</option>"#),
        "the odd limit stays chosen"
    );
    let (_, second) = get(&ui, &format!("/ui/audit?kind=lifecycle&limit=2&cursor={last}")).await;
    let page2 = audit_rows(&second);
    assert_eq!(page2.len(), 1);
    assert!(page2[0].1 < last, "older than the page before");
    assert!(second.contains("older changes"));
    assert!(
        second.contains(&format!(r#"href="{BASE}/ui/audit?kind=lifecycle&amp;limit=2""#)),
        "back to the newest"
    );
    assert!(second.contains(r#"<span class="off">older ›</span>"#), "the last page");
}

#[tokio::test]
async fn the_slaves_page_gives_the_selection_its_rows_and_every_matching_name() {
    let f = fleet(&sample_fleet());
    let ui = ui(f.inventory.clone());
    let (_, body) = get(&ui, "/ui/slaves").await;
    assert_under_base("/ui/slaves", &body);
    assert!(body.contains(r#"<input type="checkbox" class="row-select" aria-label="Select bld-linux64-spot-001">"#));
    assert!(body.contains(r#"id="select-page" aria-label="Select every slave on this page""#));
    assert!(body.contains(r#"id="action-bar""#) && body.contains(r#"id="bulk-dialog""#));
    let data = page_data(&body);
    let names: Vec<&str> = data["all_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let rows: Vec<&str> = data["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, rows, "one page holds them all, in its order");
    // The bulk dialog's choices are names, as the bulk API takes them.
    assert!(body.contains(r#"<option value="bm06">bm06</option>"#));
    assert!(body.contains(r#"<option value="bm03">bm03 (disabled)</option>"#));

    // Filtered: the names of every matching slave, over all pages.
    let (_, spot) = get(&ui, "/ui/slaves?q=spot&per=50&page=2").await;
    let all = page_data(&spot)["all_names"].as_array().unwrap().len();
    assert!(
        all > 0 && spot.contains(&format!("select all {all} matching")),
        "{spot}"
    );

    // More than one bulk change may touch: no names, and the button says why.
    let big = fleet(&generate_fleet(&FleetSpec::with_slaves(1_500)));
    let (_, body) = get(&self::ui(big.inventory), "/ui/slaves").await;
    assert_eq!(page_data(&body)["all_names"], serde_json::Value::Null);
    assert!(
        body.contains("disabled title=\"1,500 slaves match; one change takes at most 1,000"),
        "{}",
        &body[body.find("select-all").unwrap()..][..300]
    );
}

#[tokio::test]
async fn the_tac_dialog_has_its_why_panel_on_every_page() {
    let f = fleet(&sample_fleet());
    let ui = ui(f.inventory.clone());
    for path in ["/ui/", "/ui/slaves", "/ui/masters/bm01"] {
        let (_, body) = get(&ui, path).await;
        assert!(
            body.contains(r#"<section id="why-panel" class="why" aria-labelledby="why-title">"#),
            "{path}"
        );
    }
}
