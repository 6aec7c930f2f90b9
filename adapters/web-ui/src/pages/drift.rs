//! `GET /ui/drift`: where the live fleet differs from what slavealloc
//! recorded, as `GET /api/drift` reports it (`live::drift`): slaves
//! connected elsewhere than their current master, slaves connected to a
//! master of another pool, workers no slave is known for, and how each
//! pool × silo's connected slaves spread over the pool's masters.

use slavealloc_domain::live::DriftedSlave;

use super::live::{live_now, Judge};
use super::silos::{spread_group, SpreadGroup};
use super::*;
use crate::view::Moment;

/// A drifted slave with links to it and to where it is.
#[derive(Debug, Serialize)]
struct DriftLine {
    #[serde(flatten)]
    slave: DriftedSlave,
    href: String,
    connected_href: String,
}

/// A worker a master reports that no slave is known for.
#[derive(Debug, Serialize)]
struct UnknownLine {
    /// As Buildbot has it: any string a remote master sends.
    name: String,
    master: String,
    connected: bool,
    last_seen: Moment,
}

/// `GET /ui/drift`.
pub(crate) async fn drift(ui: &Ui, raw: &str) -> Response {
    let Some(live) = try_page!(ui, live_now(ui).await) else {
        return ui.error(
            StatusCode::NOT_FOUND,
            "No live fleet",
            "This daemon keeps no live state (it does not poll the Buildbot masters), so there is nothing to \
             compare what it recorded with.",
        );
    };
    let p = Params::parse(raw);
    let only_imbalanced = p.flag("imbalanced");
    // As /api/drift reads them: the decommissioned are not expected
    // anywhere.
    let slaves = try_page!(ui, ui.inventory.list(Table::Slaves, &SlaveFilter::default()).await);
    let masters = try_page!(ui, ui.inventory.list(Table::Masters, &SlaveFilter::default()).await);
    let report = slavealloc_domain::live::drift(&slaves, &masters, &live.state);
    let judge = Judge::new(&live, HashMap::new());

    let (mut polled, mut unreachable) = (0, Vec::new());
    for m in &masters {
        if let Some(status) = judge.master(int(m, "masterid"), int(m, "http_port").unwrap_or(0)) {
            polled += 1;
            if !status.reachable {
                unreachable.push(text(m, "nickname").to_owned());
            }
        }
    }
    unreachable.sort_by(|a, b| natural_cmp(a, b));

    let slaves_path = ui_path(ui, "slaves");
    let masters_path = ui_path(ui, "masters");
    let line = |slave: DriftedSlave| DriftLine {
        href: href(&slaves_path, &query(&[("q", &slave.name), ("decomm", "1")])),
        connected_href: href(&masters_path, &query(&[("q", &slave.connected_master)])),
        slave,
    };
    let elsewhere: Vec<DriftLine> = report.elsewhere.into_iter().map(line).collect();
    let other_pool: Vec<DriftLine> = report.other_pool.into_iter().map(line).collect();
    let mut unknown: Vec<UnknownLine> = report
        .unknown
        .into_iter()
        .map(|u| UnknownLine {
            last_seen: Moment::new(live.now, u.last_seen),
            name: u.name,
            master: u.master,
            connected: u.connected,
        })
        .collect();
    unknown.sort_by(|a, b| natural_cmp(&a.master, &b.master).then_with(|| natural_cmp(&a.name, &b.name)));

    let mut groups: Vec<SpreadGroup> = report
        .spreads
        .into_iter()
        .map(|g| spread_group(g, &slaves_path, "connected_master"))
        .collect();
    let group_count = groups.len();
    let imbalanced_count = groups.iter().filter(|g| g.imbalanced).count();
    if only_imbalanced {
        groups.retain(|g| g.imbalanced);
    }
    let drift_count = elsewhere.len() + other_pool.len() + unknown.len();
    let ctx = minijinja::context! {
        page => "drift",
        title => "Drift",
        elsewhere => elsewhere,
        other_pool => other_pool,
        unknown => unknown,
        groups => groups,
        group_count => group_count,
        imbalanced_count => imbalanced_count,
        no_drift => drift_count == 0 && imbalanced_count == 0,
        polled => polled,
        unreachable => unreachable,
        f => minijinja::context! { imbalanced => only_imbalanced },
        imbalanced_href => href(&ui_path(ui, "drift"), &query(&[("imbalanced", "1")])),
    };
    ui.render(StatusCode::OK, "drift.html", ctx)
}
