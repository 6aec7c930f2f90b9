//! `GET /ui/masters/<nickname>`: one master, what is on it, its drain and
//! its history.
//!
//! The drain itself (note, actor, since, until, graceful) and its progress
//! (the workers still connected) are not rendered here: this crate reads the
//! inventory and the live fleet only, and holds live behind the API's
//! maintenance service. The page carries the master's id and `app.js` reads
//! `GET /api/masters/<id>/drain`, again every few seconds, into the drain
//! panel, so that what it shows is what the API answers.

use super::audit::audit_view;
use super::live::{live_now, Judge, MasterLiveCell};
use super::masters::slaves_per_master;
use super::*;

/// How many of the slaves on the master the page names; the rest are a link
/// to the slaves list.
const NAMED_SLAVES: usize = 60;

/// How many audit entries of the master the page shows.
const HISTORY: u32 = 20;

/// `GET /ui/masters/<nickname>` (a masterid is taken too, for links made
/// from ids).
pub(crate) async fn master(ui: &Ui, name: &str) -> Response {
    let live = try_page!(ui, live_now(ui).await);
    let masters = try_page!(ui, ui.inventory.list(Table::Masters, &SlaveFilter::default()).await);
    let found = masters.iter().find(|m| text(m, "nickname") == name).or_else(|| {
        let id = name.parse::<i64>().ok()?;
        masters.iter().find(|m| int(m, "masterid") == Some(id))
    });
    let Some(m) = found else {
        return ui.error(
            StatusCode::NOT_FOUND,
            "No such master",
            &format!("No master is named {name:?}. The Masters tab lists them all."),
        );
    };
    let mut m = m.clone();
    let id = int(&m, "masterid").unwrap_or_default();
    let nickname = text(&m, "nickname").to_owned();
    let (current, locked) = try_page!(ui, slaves_per_master(ui).await);
    let count = |map: &HashMap<i64, u64>| map.get(&id).copied().unwrap_or(0);
    let port = int(&m, "http_port").unwrap_or(0);
    let web = (port != 0).then(|| Value::Text(format!("http://{}:{port}", text(&m, "fqdn"))));
    m.insert("web".into(), web.unwrap_or(Value::Null));

    let slaves = try_page!(ui, ui.inventory.store().list(Table::Slaves).await);
    let mut on_it: Vec<&str> = slaves
        .iter()
        .filter(|s| int(s, "current_masterid") == Some(id))
        .map(|s| text(s, "name"))
        .collect();
    on_it.sort_by(|a, b| natural_cmp(a, b));
    on_it.truncate(NAMED_SLAVES);

    let live_cell = live.as_ref().map(|l| {
        let judge = Judge::new(l, HashMap::new());
        MasterLiveCell::new(&judge, judge.master(Some(id), port), port)
    });
    let history = try_page!(
        ui,
        audit_view(
            ui,
            AuditQuery {
                table: Some(Table::Masters),
                row_id: Some(id),
                limit: HISTORY,
                ..AuditQuery::default()
            }
        )
        .await
    );

    let slaves_path = ui_path(ui, "slaves");
    let ctx = minijinja::context! {
        page => "masters",
        title => nickname,
        m => m,
        slaves_now => count(&current),
        locked => count(&locked),
        on_it => on_it,
        live_cell => live_cell,
        history => history,
        slaves_href => href(&slaves_path, &query(&[("master", &nickname), ("decomm", "1")])),
        locked_href => href(&slaves_path, &query(&[("locked", &nickname), ("decomm", "1")])),
        connected_href => href(&slaves_path, &query(&[("connected_master", &nickname), ("decomm", "1")])),
        history_href => href(&ui_path(ui, "audit"), &query(&[("table", "masters"), ("row", &id.to_string())])),
        masters_href => ui_path(ui, "masters"),
    };
    ui.render(StatusCode::OK, "master.html", ctx)
}
