//! The live fleet in the UI's pages through `warp::test`: the sample fleet
//! in the in-memory store, polls simulated with `LiveStore::record_poll`,
//! judged at a fixed clock. The real-browser test is
//! `apps/slavealloc/tests/browser.rs`.

// Test helpers may unwrap: a panic is the failure report we want.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use slavealloc_domain::live::{Lease, LiveState, PollAnswer, PollRecord, PolledWorker};
use slavealloc_domain::{FixedHost, Inventory, LiveStore, StoreError};
use slavealloc_fixtures::sample_fleet;
use slavealloc_store_memory::MemoryStore;
use slavealloc_web_ui::{routes, routes_with_live, LiveSource, UiConfig};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

/// The clock every page judges the polls by.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn ago(secs: u64) -> SystemTime {
    now() - Duration::from_secs(secs)
}

const MINUTE: u64 = 60;
const DAY: u64 = 86_400;

/// A hostile worker name, as any remote master may report.
const HOSTILE: &str = "<script>alert(1)</script>";

fn host() -> Arc<FixedHost> {
    Arc::new(FixedHost {
        now: now(),
        fqdn: "slavealloc.test".into(),
    })
}

fn answered(masterid: i32, at: SystemTime, workers: &[(&str, bool)]) -> PollRecord {
    PollRecord {
        masterid,
        at,
        duration: Duration::from_millis(12),
        outcome: Ok(PollAnswer {
            buildbot_version: Some("4.3.0".into()),
            workers: workers
                .iter()
                .map(|&(name, connected)| PolledWorker {
                    name: name.into(),
                    connected,
                    paused: false,
                    graceful: false,
                })
                .collect(),
        }),
    }
}

fn failed(masterid: i32, at: SystemTime, why: &str) -> PollRecord {
    PollRecord {
        outcome: Err(why.into()),
        ..answered(masterid, at, &[])
    }
}

/// The sample fleet after these polls (fresh for 5 minutes, at [`now`]):
/// - bm01 (build-linux), a minute ago: spot-001 (recorded there),
///   spot-002 (recorded on bm02) and spot-003 (on no master) of its pool,
///   tst-linux64-ec2-001 of tests-linux, and a hostile unknown worker;
/// - bm02, two days ago: spot-008; since a minute ago it does not answer;
/// - bm04 (try-linux), ten days ago try-003; half a minute ago only try-006;
/// - bm05, an hour ago (not fresh): try-001;
/// - bm12 has no web page (http_port 0), bm03 was never polled.
async fn polled_fleet() -> (Arc<MemoryStore>, Inventory) {
    let store = Arc::new(MemoryStore::from_dump(&sample_fleet()).unwrap());
    for poll in [
        answered(
            1,
            ago(MINUTE),
            &[
                ("bld-linux64-spot-001", true),
                ("bld-linux64-spot-002", true),
                ("bld-linux64-spot-003", true),
                ("tst-linux64-ec2-001", true),
                (HOSTILE, true),
            ],
        ),
        answered(2, ago(2 * DAY), &[("bld-linux64-spot-008", true)]),
        failed(2, ago(MINUTE), "connection refused <b>"),
        answered(4, ago(10 * DAY), &[("try-linux64-spot-003", true)]),
        answered(4, ago(30), &[("try-linux64-spot-006", true)]),
        answered(5, ago(60 * MINUTE), &[("try-linux64-spot-001", true)]),
    ] {
        store.record_poll(&poll).await.unwrap();
    }
    (store.clone(), Inventory::new(store, host()))
}

fn live_ui(store: Arc<dyn LiveStore>, inventory: Inventory) -> BoxedFilter<(Response,)> {
    let source = LiveSource {
        store,
        fresh_for: Duration::from_secs(5 * MINUTE),
        host: host(),
    };
    warp::path("ui")
        .and(routes_with_live(UiConfig::default(), inventory, Some(source)))
        .boxed()
}

async fn polled_ui() -> BoxedFilter<(Response,)> {
    let (store, inv) = polled_fleet().await;
    live_ui(store, inv)
}

async fn get(filter: &BoxedFilter<(Response,)>, path: &str) -> (StatusCode, String) {
    let res = warp::test::request().path(path).reply(filter).await;
    let body = String::from_utf8(res.body().to_vec()).unwrap();
    (res.status(), body)
}

/// The names of the rows of a slaves page, in order.
fn slave_rows(html: &str) -> Vec<String> {
    html.split("<tr data-id=\"")
        .skip(1)
        .map(|chunk| {
            let name = chunk.split("data-name=\"").nth(1).unwrap();
            name[..name.find('"').unwrap()].to_owned()
        })
        .collect()
}

/// The HTML of the table row named `name` (a slave or a master).
fn row<'a>(html: &'a str, name: &str) -> &'a str {
    let start = html
        .find(&format!("data-name=\"{name}\""))
        .unwrap_or_else(|| panic!("no row {name}"));
    let rest = &html[start..];
    &rest[..rest.find("</tr>").unwrap()]
}

/// The text between the tags of the first element with class `class`
/// inside `html`, tags removed.
fn cell_text(html: &str, class: &str) -> String {
    let start = html
        .find(&format!("class=\"{class}"))
        .unwrap_or_else(|| panic!("no {class} in {html}"));
    let rest = &html[start..];
    let rest = &rest[rest.find('>').unwrap() + 1..rest.find("</td>").unwrap()];
    let mut text = String::new();
    let mut in_tag = false;
    for c in rest.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn the_slaves_table_says_where_each_slave_is_connected_and_when_it_was_seen() {
    let ui = polled_ui().await;
    let (status, body) = get(&ui, "/ui/slaves").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#"<th class="col-connected""#) && body.contains(r#"<th class="col-last_seen""#));

    let connected = |name: &str| cell_text(row(&body, name), "col-connected");
    let seen = |name: &str| cell_text(row(&body, name), "col-last-seen");
    assert_eq!(connected("bld-linux64-spot-001"), "bm01");
    assert!(row(&body, "bld-linux64-spot-001").contains("live live-connected\""));
    assert_eq!(seen("bld-linux64-spot-001"), "1 min ago");
    assert!(
        row(&body, "bld-linux64-spot-002").contains("live-elsewhere")
            && row(&body, "bld-linux64-spot-002").contains("recorded on bm02"),
        "connected elsewhere than recorded is marked"
    );
    assert_eq!(
        connected("bld-linux64-spot-008"),
        "unknown",
        "its master does not answer"
    );
    assert_eq!(connected("try-linux64-spot-003"), "disconnected");
    assert_eq!(seen("try-linux64-spot-003"), "10 days ago");
    let exact = format!(
        "title=\"{}",
        slavealloc_domain::audit::format_at(ago(10 * DAY))
            .replace('T', " ")
            .replace('Z', " UTC")
    );
    assert!(
        row(&body, "try-linux64-spot-003").contains(&exact),
        "the exact time in the title"
    );
    assert_eq!(
        connected("try-linux64-spot-001"),
        "bm05 not fresh",
        "bm05 last answered an hour ago"
    );
    assert_eq!(connected("panda-0001"), "never");
    assert_eq!(seen("panda-0001"), "never");
}

#[tokio::test]
async fn live_filters_mean_what_the_apis_mean_and_keep_paging() {
    let ui = polled_ui().await;
    let names = |q: &'static str| {
        let ui = ui.clone();
        async move {
            let (status, body) = get(&ui, &format!("/ui/slaves?{q}")).await;
            assert_eq!(status, StatusCode::OK, "{q}: {body}");
            let mut names = slave_rows(&body);
            names.sort();
            names
        }
    };
    let on_bm01 = [
        "bld-linux64-spot-001",
        "bld-linux64-spot-002",
        "bld-linux64-spot-003",
        "tst-linux64-ec2-001",
    ];
    let mut connected: Vec<&str> = on_bm01.to_vec();
    connected.extend(["try-linux64-spot-001", "try-linux64-spot-006"]);
    connected.sort_unstable();
    assert_eq!(names("connected=1").await, connected);
    assert_eq!(names("connected_master=bm01").await, on_bm01);
    assert_eq!(
        names("master=bm01").await,
        [
            "bld-linux64-spot-001",
            "bld-linux64-spot-004",
            "bld-linux64-spot-007",
            "bld-linux64-spot-010"
        ],
        "master is the recorded current master"
    );
    assert_eq!(names("master=bm01&connected=1").await, ["bld-linux64-spot-001"]);

    // 60 slaves outside the decommissioned environment, 6 connected.
    let not_connected = names("connected=0&per=500").await;
    assert_eq!(not_connected.len(), 54);
    assert!(not_connected.iter().all(|n| !connected.contains(&n.as_str())));
    let seen_recently = |list: &[String]| {
        (
            list.contains(&"bld-linux64-spot-008".to_owned()),
            list.contains(&"try-linux64-spot-003".to_owned()),
        )
    };
    let stale_1d = names("stale=1d&per=500").await;
    assert_eq!((stale_1d.len(), seen_recently(&stale_1d)), (54, (true, true)));
    let stale_7d = names("stale=7d&per=500").await;
    assert_eq!(
        (stale_7d.len(), seen_recently(&stale_7d)),
        (53, (false, true)),
        "seen 2 days ago is not stale for 7d"
    );
    let never = names("stale=never&per=500").await;
    assert_eq!((never.len(), seen_recently(&never)), (52, (false, false)));
    assert_eq!(names("stale=36h&per=500").await.len(), 54, "any age the API takes");

    // Paging keeps the live filter in its links.
    let (_, page1) = get(&ui, "/ui/slaves?connected=0&per=50").await;
    assert_eq!(slave_rows(&page1).len(), 50);
    assert!(
        page1.contains(r#"href="/ui/slaves?connected=0&amp;per=50&amp;page=2""#),
        "the next page keeps the filter"
    );
    assert!(page1.contains(r#"<option value="0" selected>not connected</option>"#));
    let (_, page2) = get(&ui, "/ui/slaves?connected=0&per=50&page=2").await;
    assert_eq!(slave_rows(&page2).len(), 4);
    assert!(page2.contains("matching"));
}

#[tokio::test]
async fn the_live_columns_sort() {
    let ui = polled_ui().await;
    let (_, body) = get(&ui, "/ui/slaves?sort=connected").await;
    let names = slave_rows(&body);
    assert_eq!(
        names[..8],
        [
            "bld-linux64-spot-001",
            "bld-linux64-spot-002",
            "bld-linux64-spot-003",
            "tst-linux64-ec2-001",
            "try-linux64-spot-006",
            "try-linux64-spot-001",
            "bld-linux64-spot-008",
            "try-linux64-spot-003",
        ],
        "connected by master, then unknown, then disconnected, never seen last"
    );
    assert!(
        body.contains(r#"href="/ui/slaves?sort=connected&amp;dir=desc""#),
        "a second click reverses"
    );

    let (_, oldest) = get(&ui, "/ui/slaves?sort=last_seen").await;
    assert_eq!(
        slave_rows(&oldest)[..2],
        ["try-linux64-spot-003", "bld-linux64-spot-008"]
    );
    let (_, newest) = get(&ui, "/ui/slaves?sort=last_seen&dir=desc").await;
    assert_eq!(
        slave_rows(&newest)[..9],
        [
            "try-linux64-spot-006",
            "bld-linux64-spot-001",
            "bld-linux64-spot-002",
            "bld-linux64-spot-003",
            "tst-linux64-ec2-001",
            "try-linux64-spot-001",
            "bld-linux64-spot-008",
            "try-linux64-spot-003",
            // Never seen: last also in descending order, by name.
            "b-2012-ix-001",
        ]
    );
}

#[tokio::test]
async fn the_masters_table_shows_the_polls() {
    let ui = polled_ui().await;
    let (status, body) = get(&ui, "/ui/masters").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reach = |nick: &str| cell_text(row(&body, nick), "col-reachable");
    assert_eq!(reach("bm01"), "reachable");
    assert!(row(&body, "bm01").contains(">4.3.0<"), "its Buildbot version");
    assert!(
        row(&body, "bm01").contains(r#"href="/ui/slaves?connected_master=bm01&amp;decomm=1""#),
        "its connected count links to its connected slaves"
    );
    assert!(
        reach("bm02").starts_with("unreachable since 1 min ago"),
        "{}",
        reach("bm02")
    );
    assert!(
        row(&body, "bm02").contains(r#"title="connection refused &lt;b&gt;""#),
        "the last error, escaped, in the title"
    );
    assert_eq!(reach("bm05"), "reachable not fresh");
    assert_eq!(reach("bm03"), "not polled");
    assert_eq!(reach("bm12"), "not polled");
    assert!(row(&body, "bm12").contains("http_port is 0"));

    let (_, sorted) = get(&ui, "/ui/masters?sort=reachable").await;
    let first = sorted.split("<tr data-id=\"").nth(1).unwrap();
    assert!(first.contains(r#"data-name="bm02""#), "unreachable first");
}

#[tokio::test]
async fn the_drift_page_lists_what_differs_from_the_record() {
    let ui = polled_ui().await;
    let (status, body) = get(&ui, "/ui/drift").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#"aria-current="page">Drift</a>"#));
    let section = |id: &str| {
        let start = body.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no {id}"));
        &body[start..start + body[start..].find("</section>").unwrap()]
    };
    let elsewhere = section("drift-elsewhere");
    assert_eq!(slave_links(elsewhere), ["bld-linux64-spot-002", "bld-linux64-spot-003"]);
    assert!(elsewhere.contains(r#"<td class="mono">bm02</td>"#) && elsewhere.contains(r#"<td class="mono">none</td>"#));
    let other = section("drift-other-pool");
    assert_eq!(slave_links(other), ["tst-linux64-ec2-001"]);
    assert!(other.contains("tests-linux") && other.contains("build-linux"));
    let unknown = section("drift-unknown");
    assert!(unknown.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{unknown}");
    assert!(
        !body.contains(HOSTILE),
        "a remote master's string is text, never markup"
    );
    assert!(
        section("unreachable").contains("bm02"),
        "the masters left out are named"
    );
    assert!(!body.contains(r#"id="no-drift""#));

    // build-linux's spot-001..003 silo: three connected to bm01, none to
    // bm02 (its facts do not count while it does not answer).
    assert!(body.contains("spread 3"), "{body}");
    assert!(body.contains(r#"href="/ui/slaves?pool=build-linux&amp;connected_master=bm01&amp;decomm=1"#));
    let (_, imbalanced) = get(&ui, "/ui/drift?imbalanced=1").await;
    assert_eq!(
        imbalanced.matches("<article class=\"spread imbalanced\"").count(),
        imbalanced.matches("<article").count()
    );
}

/// The slave names a drift table links to.
fn slave_links(html: &str) -> Vec<String> {
    html.split(r#"<a href="/ui/slaves?q="#)
        .skip(1)
        .map(|c| c[c.find('>').unwrap() + 1..c.find("</a>").unwrap()].to_owned())
        .collect()
}

#[tokio::test]
async fn no_drift_and_no_polls_say_so() {
    let store = Arc::new(MemoryStore::from_dump(&sample_fleet()).unwrap());
    let ui = live_ui(store.clone(), Inventory::new(store.clone(), host()));
    let (_, body) = get(&ui, "/ui/drift").await;
    assert!(body.contains("No master has been polled yet"), "{body}");

    store
        .record_poll(&answered(1, ago(MINUTE), &[("bld-linux64-spot-001", true)]))
        .await
        .unwrap();
    let (status, body) = get(&ui, "/ui/drift").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains(r#"id="no-drift""#) && body.contains("No drift:"),
        "{body}"
    );
    assert!(!body.contains("id=\"drift-") && body.contains("groups balanced"));
}

#[tokio::test]
async fn the_dashboard_counts_connected_beside_recorded() {
    let ui = polled_ui().await;
    let (_, body) = get(&ui, "/ui/").await;
    let number = |id: &str| {
        let rest = body.split(&format!("id=\"{id}\">")).nth(1).unwrap();
        rest[..rest.find('<').unwrap()].to_owned()
    };
    assert_eq!(number("count-connected"), "6");
    assert_eq!(number("count-unreachable"), "1", "bm02");
    assert!(body.contains("1<small> / 4</small>"), "of bm01, bm02, bm04, bm05");
    let pool = |name: &str| {
        let start = body.find(&format!("?pool={name}\">")).unwrap();
        &body[start..start + body[start..].find("</tr>").unwrap()]
    };
    assert!(
        pool("build-linux").contains(r#"connected=1">3</a>"#),
        "{}",
        pool("build-linux")
    );
    assert!(pool("build-linux").contains("· 1 unreachable"));
    assert!(!pool("try-linux").contains("unreachable"));
    assert!(pool("try-linux").contains(r#"connected=1">2</a>"#));
    assert!(pool("tests-linux").contains(r#"connected=1">1</a>"#));
}

#[tokio::test]
async fn without_a_live_source_pages_are_as_before() {
    let (_, inv) = polled_fleet().await;
    let ui = warp::path("ui").and(routes(UiConfig::default(), inv)).boxed();
    let (_, slaves) = get(&ui, "/ui/slaves?connected=1&stale=7d&connected_master=bm01").await;
    assert_eq!(slave_rows(&slaves).len(), 60, "the live filters are ignored");
    assert!(!slaves.contains("matching"));
    for (path, absent) in [
        ("/ui/slaves", "col-connected"),
        ("/ui/slaves", "name=\"connected\""),
        ("/ui/slaves", "/ui/drift"),
        ("/ui/masters", "col-reachable"),
        ("/ui/masters", "data API"),
        ("/ui/", "count-connected"),
    ] {
        let (status, body) = get(&ui, path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!body.contains(absent), "{path} has {absent}");
    }
    let (status, body) = get(&ui, "/ui/drift").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("keeps no live state"));
}

#[tokio::test]
async fn hostile_live_queries_still_show_a_page() {
    let ui = polled_ui().await;
    for path in [
        "/ui/slaves?connected=maybe&stale=forever&connected_master=%3Cscript%3Ealert(1)%3C/script%3E",
        "/ui/slaves?stale=99999999999999999999w&sort=last_seen&dir=sideways",
        "/ui/masters?sort=reachable&dir=desc",
        "/ui/drift?imbalanced=maybe",
    ] {
        let (status, body) = get(&ui, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(!body.contains("<script>"), "{path}");
    }
    let (_, body) = get(&ui, "/ui/slaves?stale=forever").await;
    assert_eq!(slave_rows(&body).len(), 60, "a bad age is no filter");
}

/// A live store whose database is down.
struct Down;

#[async_trait]
impl LiveStore for Down {
    async fn record_poll(&self, _: &PollRecord) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn live_state(&self) -> Result<LiveState, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn take_lease(&self, _: &str, _: &str, _: SystemTime, _: Duration) -> Result<Lease, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn release_lease(&self, _: &str, _: &str) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
}

#[tokio::test]
async fn a_live_store_failure_is_an_error_page() {
    let (_, inv) = polled_fleet().await;
    let ui = live_ui(Arc::new(Down), inv);
    for path in ["/ui/", "/ui/slaves", "/ui/masters", "/ui/drift"] {
        let (status, body) = get(&ui, path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(body.contains("connection refused"), "{path}: {body}");
    }
    let (status, _) = get(&ui, "/ui/silos").await;
    assert_eq!(status, StatusCode::OK, "a page without live facts does not read them");
}
