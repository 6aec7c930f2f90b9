//! `GET /ui/silos`: the silo × pool report and the spread of each pool and
//! silo over its masters.

use super::*;

#[derive(Debug, Serialize)]
pub(super) struct SpreadGroup {
    pool: String,
    silo: Vec<String>,
    slaves: u64,
    enabled: u64,
    masters: Vec<MasterBar>,
    /// Slaves of the group on no master now.
    unallocated: u64,
    /// Slaves on a master of another pool (locked there, or moved to this
    /// pool since they last booted).
    elsewhere: u64,
    /// Largest minus smallest count over the pool's enabled masters.
    spread: u64,
    pub(super) imbalanced: bool,
    /// The slaves list of this group.
    href: String,
}

#[derive(Debug, Serialize)]
struct MasterBar {
    nickname: String,
    enabled: bool,
    count: u64,
    /// Bar length in percent of the group's largest count.
    percent: u64,
    href: String,
}

/// `GET /ui/silos`.
pub(crate) async fn silos(ui: &Ui, raw: &str) -> Response {
    let p = Params::parse(raw);
    let pool_filter = p.text("pool");
    let only_imbalanced = p.flag("imbalanced");
    // Every slave, denormalized: the decommissioned environment is a
    // silo of its own.
    let every = SlaveFilter {
        include_decomm: true,
        ..SlaveFilter::default()
    };
    let slaves = try_page!(ui, ui.inventory.list(Table::Slaves, &every).await);
    let masters = try_page!(ui, ui.inventory.store().list(Table::Masters).await);
    let report = reports::silo_report(&slaves);

    // Per pool × allocation silo: the spread over the pool's masters.
    let slaves_path = ui_path(ui, "slaves");
    let mut spread: Vec<SpreadGroup> = reports::silo_spreads(&slaves, &masters)
        .into_iter()
        .map(|g| spread_group(g, &slaves_path, "master"))
        .collect();
    let group_count = spread.len();
    let imbalanced_count = spread.iter().filter(|g| g.imbalanced).count();
    spread.retain(|g| (pool_filter.is_empty() || g.pool == pool_filter) && (!only_imbalanced || g.imbalanced));

    let ctx = minijinja::context! {
        page => "silos",
        title => "Silos",
        pools => report.pools,
        report => report.rows,
        pool_totals => report.pool_totals,
        slave_total => report.total,
        report_columns => report.attributes,
        allocation_columns => report.attributes,
        groups => spread,
        group_count => group_count,
        imbalanced_count => imbalanced_count,
        f => minijinja::context! { pool => pool_filter, imbalanced => only_imbalanced },
        imbalanced_href => href(&ui_path(ui, "silos"), &query(&[("imbalanced", "1")])),
    };
    ui.render(StatusCode::OK, "silos.html", ctx)
}

/// A group as the page draws it: a bar per master and links to its slaves,
/// each master's by `master_param` (`master` for the recorded spread,
/// `connected_master` for the live one).
pub(super) fn spread_group(g: reports::SiloSpread, slaves_path: &str, master_param: &str) -> SpreadGroup {
    let max = g.masters.iter().map(|m| m.slaves).max().unwrap_or(0).max(1);
    let group_query = |master: &str| {
        let mut pairs = vec![("pool", g.pool.as_str()), (master_param, master), ("decomm", "1")];
        pairs.extend(
            reports::silo_labels()
                .into_iter()
                .zip(g.silo.iter().map(String::as_str)),
        );
        href(slaves_path, &query(&pairs))
    };
    SpreadGroup {
        masters: g
            .masters
            .iter()
            .map(|m| MasterBar {
                nickname: m.nickname.clone(),
                enabled: m.enabled,
                count: m.slaves,
                percent: m.slaves * 100 / max,
                href: group_query(&m.nickname),
            })
            .collect(),
        href: group_query(""),
        imbalanced: g.imbalanced(),
        pool: g.pool,
        silo: g.silo,
        slaves: g.slaves,
        enabled: g.enabled,
        unallocated: g.unallocated,
        elsewhere: g.elsewhere,
        spread: g.spread,
    }
}
