//! The UI's pages through `warp::test`, over the in-memory store loaded
//! with the sample fleet (and a generated 10,000-slave fleet for paging).
//! The real-browser test is `browser.rs`.

// Test helpers may unwrap: a panic is the failure report we want.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::SystemTime;

use slavealloc_domain::ports::MockInventoryStore;
use slavealloc_domain::{Allocator, Dump, FixedHost, Inventory, StoreError};
use slavealloc_fixtures::{generate_fleet, sample_fleet, FleetSpec};
use slavealloc_store_memory::MemoryStore;
use slavealloc_tac_minijinja::MinijinjaRenderer;
use slavealloc_web_ui::{routes, UiConfig};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

fn host() -> Arc<FixedHost> {
    Arc::new(FixedHost {
        now: SystemTime::now(),
        fqdn: "slavealloc.test".into(),
    })
}

fn fleet(dump: &Dump) -> (Arc<MemoryStore>, Inventory) {
    let store = Arc::new(MemoryStore::from_dump(dump).unwrap());
    (store.clone(), Inventory::new(store, host()))
}

/// The UI mounted as the daemon mounts it: at `/ui`, seeing the rest.
fn ui(inventory: Inventory, base: &str) -> BoxedFilter<(Response,)> {
    let config = UiConfig {
        base_url: base.into(),
        ..UiConfig::default()
    };
    warp::path("ui").and(routes(config, inventory)).boxed()
}

async fn get(filter: &BoxedFilter<(Response,)>, path: &str) -> (StatusCode, String) {
    let res = warp::test::request().path(path).reply(filter).await;
    let body = String::from_utf8(res.body().to_vec()).unwrap();
    (res.status(), body)
}

/// The names of the slaves rows of a slaves page, in order.
fn slave_rows(html: &str) -> Vec<String> {
    html.split("<tr data-id=\"")
        .skip(1)
        .map(|chunk| {
            let name = chunk.split("data-name=\"").nth(1).unwrap();
            name[..name.find('"').unwrap()].to_owned()
        })
        .collect()
}

#[tokio::test]
async fn every_page_renders_the_sample_fleet() {
    let (_, inv) = fleet(&sample_fleet());
    let ui = ui(inv, "");
    for (path, expect) in [
        ("/ui/", "How a slave gets its master"),
        ("/ui/slaves", "bld-linux64-spot-001"),
        ("/ui/masters", "buildbot-master01.bb.releng.use1.mozilla.com"),
        ("/ui/silos", "Spread over masters"),
        ("/ui/audit", "latest changes"),
    ] {
        let (status, body) = get(&ui, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(body.starts_with("<!doctype html>"), "{path}");
        assert!(body.contains(expect), "{path} lacks {expect:?}");
    }
}

#[tokio::test]
async fn pages_are_live_and_locked_down() {
    let (_, inv) = fleet(&sample_fleet());
    let res = warp::test::request().path("/ui/slaves").reply(&ui(inv, "")).await;
    let h = res.headers();
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("script-src 'self' 'unsafe-inline'"));
}

#[tokio::test]
async fn masters_page_links_web_pages_and_counts_slaves() {
    let (_, inv) = fleet(&sample_fleet());
    let (_, body) = get(&ui(inv, ""), "/ui/masters").await;
    // http_port 8001 gives a link; bm12 has http_port 0 and none.
    assert!(body.contains(r#"href="http://buildbot-master01.bb.releng.use1.mozilla.com:8001""#));
    assert!(!body.contains("http://buildbot-master12.bb.releng.mdc2.mozilla.com:"));
    assert!(body.contains("(no web page)"));
    let counts = SampleCounts::new();
    let bm01 = body.split(r#"data-name="bm01""#).nth(1).unwrap();
    assert!(
        bm01.starts_with(&format!(r#" data-slaves="{}""#, counts.on_bm01)),
        "{}",
        &bm01[..60]
    );
    assert!(body.contains(r#"data-action="drain""#));
}

struct SampleCounts {
    on_bm01: usize,
}

impl SampleCounts {
    fn new() -> Self {
        let dump = sample_fleet();
        let slaves = &dump.tables[&slavealloc_domain::Table::Slaves];
        Self {
            on_bm01: slaves
                .iter()
                .filter(|s| s["current_masterid"].as_int() == Some(1))
                .count(),
        }
    }
}

#[tokio::test]
async fn slaves_are_paged_sorted_and_filtered_on_ten_thousand() {
    let (_, inv) = fleet(&generate_fleet(&FleetSpec::with_slaves(10_000)));
    let ui = ui(inv, "");

    let (status, first) = get(&ui, "/ui/slaves").await;
    assert_eq!(status, StatusCode::OK);
    let names = slave_rows(&first);
    assert_eq!(names.len(), 100, "one page of 100");
    assert!(first.contains("of <strong>10,000</strong>"));
    let mut sorted = names.clone();
    sorted.sort_by(|a, b| natural(a, b));
    assert_eq!(names, sorted, "name order, natural");

    let (_, last) = get(&ui, "/ui/slaves?page=100").await;
    assert!(last.contains("page 100 of 100"));
    assert_eq!(slave_rows(&last).len(), 100);
    assert!(!slave_rows(&last).iter().any(|n| names.contains(n)));

    let (_, big) = get(&ui, "/ui/slaves?per=500&sort=pool&dir=desc").await;
    assert_eq!(slave_rows(&big).len(), 500);
    assert!(big.contains(r#"aria-sort="descending""#));

    // Every generated name contains its number: a text filter finds one.
    let one = &names[0];
    let (_, found) = get(&ui, &format!("/ui/slaves?q={one}")).await;
    assert!(slave_rows(&found).contains(one));
    assert!(found.contains("matching"));

    let (_, disabled) = get(&ui, "/ui/slaves?enabled=no&per=500").await;
    let n = slave_rows(&disabled).len();
    assert!(n > 0 && n < 500, "2% of 10,000 are disabled, got {n}");
    assert!(!disabled.contains("<span class=\"badge on\">yes</span>"));
}

fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    // Generated names share one prefix and zero-padded numbers, so plain
    // order is natural order here.
    a.cmp(b)
}

#[tokio::test]
async fn nonsense_queries_still_show_a_page() {
    let (_, inv) = fleet(&sample_fleet());
    let ui = ui(inv, "");
    for path in [
        "/ui/slaves?page=-3&per=1000000&sort=%3Cscript%3E&dir=up&enabled=maybe&pool=nope",
        "/ui/slaves?q=%FF%FE&%zz",
        "/ui/masters?sort=evil&dir=",
        "/ui/silos?pool=nope&imbalanced=maybe",
        "/ui/audit?table=nope&row=x&limit=999999999999",
        "/ui/audit?row=bld-linux64-spot-001",
    ] {
        let (status, body) = get(&ui, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(!body.contains("<script>"), "{path}");
    }
    let (_, body) = get(&ui, "/ui/audit?table=nope").await;
    assert!(body.contains("There is no table &quot;nope&quot;."), "{body}");
}

#[tokio::test]
async fn values_from_the_database_are_escaped_in_html_and_in_the_json_block() {
    let (_, inv) = fleet(&sample_fleet());
    let evil = "</script><script>alert(1)</script> & \"quoted\"";
    let body = serde_json::json!({ "notes": evil });
    inv.update(slavealloc_domain::Table::Slaves, 1, &changes(&body), "test")
        .await
        .unwrap();
    let (_, html) = get(&ui(inv, ""), "/ui/slaves").await;
    assert!(!html.contains("<script>alert(1)"));
    assert!(!html.contains("</script><script>"));
    assert!(html.contains("&lt;/script&gt;"), "the notes cell shows the text");
}

#[tokio::test]
async fn every_link_respects_the_base_url() {
    let (_, inv) = fleet(&sample_fleet());
    let ui = ui(inv, "/relops/slavealloc/");
    for path in [
        "/ui/",
        "/ui/slaves",
        "/ui/masters",
        "/ui/silos",
        "/ui/audit",
        "/ui/audit?kind=lifecycle&since=1d",
        "/ui/masters/bm01",
        "/ui/masters/nope",
        "/ui/nope",
    ] {
        let (_, body) = get(&ui, path).await;
        for attr in [" href=\"", " src=\"", " action=\""] {
            for chunk in body.split(attr).skip(1) {
                let url = &chunk[..chunk.find('"').unwrap()];
                assert!(
                    url.starts_with("/relops/slavealloc/") || url.starts_with("http://"),
                    "{path}: {attr}{url}"
                );
            }
        }
        assert!(
            body.contains(r#"data-base="/relops/slavealloc""#),
            "{path}: the API base for the script"
        );
    }
}

#[tokio::test]
async fn assets_are_embedded_and_unknown_paths_are_html_404s() {
    let (_, inv) = fleet(&sample_fleet());
    let ui = ui(inv, "");
    for (path, ctype) in [
        ("/ui/static/app.js", "text/javascript; charset=utf-8"),
        ("/ui/static/app.css", "text/css; charset=utf-8"),
        ("/ui/static/icon.svg", "image/svg+xml"),
    ] {
        let res = warp::test::request().path(path).reply(&ui).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(res.headers()["content-type"], ctype);
        assert!(!res.body().is_empty());
    }
    let (status, body) = get(&ui, "/ui/static/nope.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no such asset"));
    let (status, body) = get(&ui, "/ui/nope/deeper").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("There is no such page"));
    // Not ours: rejected, for the daemon's other routes.
    assert!(warp::test::request().path("/api/slaves").filter(&ui).await.is_err());
    assert!(warp::test::request()
        .method("POST")
        .path("/ui/slaves")
        .filter(&ui)
        .await
        .is_err());
}

#[tokio::test]
async fn audit_page_names_rows_and_references_and_filters_by_row() {
    let (_, inv) = fleet(&sample_fleet());
    // slave 1 moves from build-linux (1) to try-linux (2).
    let body = serde_json::json!({ "poolid": 2, "enabled": false });
    inv.update(slavealloc_domain::Table::Slaves, 1, &changes(&body), "relops-token")
        .await
        .unwrap();
    let body = serde_json::json!({ "notes": "hello" });
    inv.update(slavealloc_domain::Table::Masters, 2, &changes(&body), "relops-token")
        .await
        .unwrap();
    let ui = ui(inv, "");

    let (_, all) = get(&ui, "/ui/audit").await;
    assert!(all.contains("<strong>2</strong> latest changes"));
    assert!(all.contains("relops-token"));
    assert!(all.contains("<strong>bld-linux64-spot-001</strong>"));
    assert!(
        all.contains("<del>build-linux (#1)</del> → <ins>try-linux (#2)</ins>"),
        "{all}"
    );
    assert!(all.contains("<del>yes</del> → <ins>no</ins>"));

    for filter in ["table=slaves&row=1", "table=slaves&row=bld-linux64-spot-001"] {
        let (_, one) = get(&ui, &format!("/ui/audit?{filter}")).await;
        assert!(one.contains("<strong>1</strong> latest changes"), "{filter}");
        assert!(
            one.contains("bld-linux64-spot-001") && !one.contains("hello"),
            "{filter}"
        );
    }
    let (_, none) = get(&ui, "/ui/audit?table=slaves&row=no-such-slave").await;
    assert!(none.contains("There is no slaves row named &quot;no-such-slave&quot;."));
}

#[tokio::test]
async fn dashboard_counts_allocations_of_the_last_hour() {
    let (store, inv) = fleet(&sample_fleet());
    let allocator = Allocator::new(store.clone(), Arc::new(MinijinjaRenderer::default()), host());
    // bld-linux64-spot-003 has no current master: allocating it is a change.
    allocator.gettac("bld-linux64-spot-003").await.unwrap();
    let (_, body) = get(&ui(inv, ""), "/ui/").await;
    let allocated = body.split(r#"id="count-allocated">"#).nth(1).unwrap();
    assert!(allocated.starts_with("1<"), "{}", &allocated[..20]);
    let slaves = body.split(r#"id="count-slaves">"#).nth(1).unwrap();
    assert!(slaves.starts_with("62<"), "{}", &slaves[..20]);
}

#[tokio::test]
async fn silos_page_shows_imbalance() {
    let mut dump = generate_fleet(&FleetSpec {
        slaves: 40,
        pools: 1,
        masters_per_pool: 2,
        disabled_masters_per_pool: 0,
        silos_per_pool: 1,
        ..FleetSpec::default()
    });
    // Everybody on the first master: a spread of 40.
    for s in dump.tables.get_mut(&slavealloc_domain::Table::Slaves).unwrap() {
        s.insert("current_masterid".into(), slavealloc_domain::Value::Int(1));
        s.insert("locked_masterid".into(), slavealloc_domain::Value::Null);
    }
    let (_, inv) = fleet(&dump);
    let ui = ui(inv, "");
    let (status, body) = get(&ui, "/ui/silos").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("1 of 1 groups imbalanced"), "{body}");
    assert!(body.contains("spread 40"));
    assert!(body.contains(r#"style="width: 100%""#) && body.contains(r#"style="width: 0%""#));
}

#[tokio::test]
async fn a_database_failure_is_an_error_page_not_a_panic() {
    let mut store = MockInventoryStore::new();
    store
        .expect_list()
        .returning(|_| Err(StoreError::Unavailable("connection refused".into())));
    store
        .expect_audit()
        .returning(|_| Err(StoreError::Unavailable("connection refused".into())));
    let inv = Inventory::new(Arc::new(store), host());
    let ui = ui(inv, "");
    for path in [
        "/ui/",
        "/ui/slaves",
        "/ui/masters",
        "/ui/masters/bm01",
        "/ui/silos",
        "/ui/audit",
    ] {
        let (status, body) = get(&ui, path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(
            body.contains("database unavailable: connection refused"),
            "{path}: {body}"
        );
    }
}

/// A database that never answers.
struct Hanging;

#[async_trait::async_trait]
impl slavealloc_domain::InventoryStore for Hanging {
    async fn list(&self, _: slavealloc_domain::Table) -> Result<Vec<slavealloc_domain::Row>, StoreError> {
        std::future::pending().await
    }
    async fn get(&self, _: slavealloc_domain::Table, _: i32) -> Result<Option<slavealloc_domain::Row>, StoreError> {
        std::future::pending().await
    }
    async fn find_by_name(
        &self,
        _: slavealloc_domain::Table,
        _: &str,
    ) -> Result<Option<slavealloc_domain::Row>, StoreError> {
        std::future::pending().await
    }
    async fn insert(
        &self,
        _: slavealloc_domain::Table,
        _: slavealloc_domain::Row,
        _: slavealloc_domain::Actor,
    ) -> Result<slavealloc_domain::Row, StoreError> {
        std::future::pending().await
    }
    async fn update(
        &self,
        _: slavealloc_domain::Table,
        _: i32,
        _: slavealloc_domain::Row,
        _: slavealloc_domain::Actor,
    ) -> Result<slavealloc_domain::Row, StoreError> {
        std::future::pending().await
    }
    async fn update_many(
        &self,
        _: slavealloc_domain::Table,
        _: &[i32],
        _: slavealloc_domain::Row,
        _: Option<String>,
        _: bool,
        _: slavealloc_domain::Actor,
    ) -> Result<Vec<(slavealloc_domain::Row, slavealloc_domain::Row)>, StoreError> {
        std::future::pending().await
    }
    async fn delete(&self, _: slavealloc_domain::Table, _: i32, _: slavealloc_domain::Actor) -> Result<(), StoreError> {
        std::future::pending().await
    }
    async fn audit(&self, _: slavealloc_domain::AuditQuery) -> Result<Vec<slavealloc_domain::AuditEntry>, StoreError> {
        std::future::pending().await
    }
    async fn prune_allocations(&self, _: std::time::SystemTime, _: u32) -> Result<u64, StoreError> {
        std::future::pending().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_database_that_does_not_answer_gives_503_within_the_deadline() {
    let config = UiConfig {
        db_deadline: Some(std::time::Duration::from_millis(50)),
        ..UiConfig::default()
    };
    let ui = warp::path("ui")
        .and(routes(config, Inventory::new(Arc::new(Hanging), host())))
        .boxed();
    for path in [
        "/ui/",
        "/ui/slaves",
        "/ui/masters",
        "/ui/masters/bm01",
        "/ui/silos",
        "/ui/audit",
    ] {
        let (status, body) = get(&ui, path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(body.contains("No answer within 50 ms"), "{path}: {body}");
    }
}

/// The inline editor's fields come with the page, made from the domain's
/// schema: every updatable column, with the table its choices come from,
/// and nothing kept by hand in app.js.
#[tokio::test]
async fn the_editors_fields_are_the_schemas_updatable_columns() {
    let (_, inv) = fleet(&sample_fleet());
    let ui = ui(inv, "");
    for (path, table) in [
        ("/ui/slaves", slavealloc_domain::Table::Slaves),
        ("/ui/masters", slavealloc_domain::Table::Masters),
    ] {
        let (_, body) = get(&ui, path).await;
        let start = body.find(r#"<script type="application/json" id="page-data">"#).unwrap();
        let json = &body[start..];
        let json = &json[json.find('>').unwrap() + 1..json.find("</script>").unwrap()];
        let data: serde_json::Value = serde_json::from_str(json).unwrap();
        let fields = data["fields"].as_array().unwrap();
        let wanted: Vec<&str> = table.columns().iter().filter(|c| c.updatable).map(|c| c.name).collect();
        let got: Vec<&str> = fields.iter().map(|f| f["col"].as_str().unwrap()).collect();
        assert_eq!(got, wanted, "{path}");
        for (f, c) in fields.iter().zip(table.columns().iter().filter(|c| c.updatable)) {
            assert_eq!(f["label"], c.title, "{path}: {}", c.name);
            if let slavealloc_domain::schema::Kind::Ref(t) = c.kind {
                assert_eq!(f["list"], t.name(), "{path}: {}", c.name);
            }
        }
    }
    let app = include_str!("../assets/app.js");
    assert!(
        !app.contains("'distroid'") && !app.contains("'pb_port'"),
        "no column list in app.js"
    );
}

/// A client's JSON body, decoded as the HTTP adapter decodes it.
fn changes(body: &serde_json::Value) -> slavealloc_domain::schema::Changes {
    serde_json::from_value(body.clone()).unwrap()
}
