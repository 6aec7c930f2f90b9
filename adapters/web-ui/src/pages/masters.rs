//! `GET /ui/masters`: the masters and how many slaves each has; with the
//! live fleet, also whether its data API answers, how many workers it has
//! connected and its Buildbot version.

use super::live::{live_now, Judge, MasterLiveCell};
use super::*;

/// The masters table: the domain's listing, with the web page
/// (`fqdn:http_port`) instead of the two columns, and what the page counts
/// before the notes; with `live`, the polls' columns too.
fn master_columns(live: bool) -> Vec<(&'static str, &'static str)> {
    let mut columns: Vec<(&'static str, &'static str)> = Table::Masters
        .listing()
        .iter()
        .copied()
        .filter(|(key, _)| *key != "http_port")
        .map(|(key, header)| {
            if key == "fqdn" {
                (key, "web page")
            } else {
                (key, header)
            }
        })
        .collect();
    let notes = columns.iter().position(|(k, _)| *k == "notes").unwrap_or(columns.len());
    columns.splice(notes..notes, [("slaves", "slaves now"), ("locked", "locked")]);
    if live {
        // Connected beside recorded, so that the two read as a pair.
        let at = columns
            .iter()
            .position(|(k, _)| *k == "slaves")
            .map_or(notes, |i| i + 1);
        columns.insert(at, ("connected", "connected"));
        let notes = columns.iter().position(|(k, _)| *k == "notes").unwrap_or(columns.len());
        columns.splice(notes..notes, [("reachable", "data API"), ("buildbot", "buildbot")]);
    }
    columns
}

const MASTER_SEARCHED: &[&str] = &["nickname", "fqdn", "datacenter", "pool", "notes"];

/// How many slaves have each master as current and as locked master.
pub(super) async fn slaves_per_master(ui: &Ui) -> Result<(HashMap<i64, u64>, HashMap<i64, u64>), StoreError> {
    let (mut current, mut locked) = (HashMap::new(), HashMap::new());
    for r in ui.inventory.store().list(Table::Slaves).await? {
        if let Some(m) = int(&r, "current_masterid") {
            *current.entry(m).or_default() += 1;
        }
        if let Some(m) = int(&r, "locked_masterid") {
            *locked.entry(m).or_default() += 1;
        }
    }
    Ok((current, locked))
}

/// `GET /ui/masters`.
pub(crate) async fn masters(ui: &Ui, raw: &str) -> Response {
    let live = try_page!(ui, live_now(ui).await);
    let p = Params::parse(raw);
    let q = p.text("q");
    let pool = p.text("pool");
    let master_columns = master_columns(live.is_some());
    let sort = sort_key(&p, &master_columns, "nickname");
    let desc = p.get("dir") == Some("desc");
    let mut rows = try_page!(ui, ui.inventory.list(Table::Masters, &SlaveFilter::default()).await);
    let (current, locked) = try_page!(ui, slaves_per_master(ui).await);
    let lookups = try_page!(ui, Lookups::load(ui, &[Table::Datacenters, Table::Pools]).await);
    let total = rows.len();
    let judge = live.as_ref().map(|l| Judge::new(l, HashMap::new()));

    for r in &mut rows {
        let id = int(r, "masterid").unwrap_or_default();
        let count = |m: &HashMap<i64, u64>| Value::Int(m.get(&id).copied().unwrap_or(0).try_into().unwrap_or(i64::MAX));
        r.insert("slaves".into(), count(&current));
        r.insert("locked".into(), count(&locked));
        let port = int(r, "http_port").unwrap_or(0);
        let web = (port != 0).then(|| Value::Text(format!("http://{}:{port}", text(r, "fqdn"))));
        r.insert("web".into(), web.unwrap_or(Value::Null));
        if let Some(judge) = &judge {
            // What the live columns sort by: unreachable first, never
            // polled last (as every empty cell).
            let status = judge.master(int(r, "masterid"), port);
            let reachable = status.map_or(Value::Null, |s| Value::Int(i64::from(s.reachable)));
            let connected = status.map_or(Value::Null, |s| Value::Int(i64::from(s.connected)));
            let version = status
                .and_then(|s| s.buildbot_version.clone())
                .map_or(Value::Null, Value::Text);
            r.insert("reachable".into(), reachable);
            r.insert("connected".into(), connected);
            r.insert("buildbot".into(), version);
        }
    }
    let text_filter = TextFilter::new(&q);
    rows.retain(|r| text_filter.matches(r, MASTER_SEARCHED) && (pool.is_empty() || text(r, "pool") == pool));
    sort_rows(&mut rows, sort, desc, "nickname");
    // Beside the rows, in their order, rather than in them: the rows go to
    // the editor as the API has them.
    let lives: Vec<Option<MasterLiveCell>> = rows
        .iter()
        .map(|r| {
            let judge = judge.as_ref()?;
            let port = int(r, "http_port").unwrap_or(0);
            Some(MasterLiveCell::new(judge, judge.master(int(r, "masterid"), port), port))
        })
        .collect();

    let path = ui_path(ui, "masters");
    let link = |sort: &str, desc: bool| {
        href(
            &path,
            &query(&[
                ("q", &q),
                ("pool", &pool),
                ("sort", if sort == "nickname" { "" } else { sort }),
                ("dir", if desc { "desc" } else { "" }),
            ]),
        )
    };
    let columns = column_heads(&master_columns, sort, desc, link);
    let ctx = minijinja::context! {
        page => "masters",
        title => "Masters",
        rows => rows,
        lives => lives,
        total => total,
        columns => columns,
        filtered => !q.is_empty() || !pool.is_empty(),
        clear_href => path,
        f => minijinja::context! {
            q => q, pool => pool,
            sort => if sort == "nickname" { "" } else { sort }, dir => if desc { "desc" } else { "" },
        },
        options => minijinja::context! { pools => lookups.names(Table::Pools) },
        lookups => lookups,
        fields => editor_fields(Table::Masters),
    };
    ui.render(StatusCode::OK, "masters.html", ctx)
}
