//! `GET /ui/silos`: the silo × pool report and the spread of each pool and
//! silo over its masters.

use super::*;

#[derive(Debug, Serialize)]
struct SpreadGroup {
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
    imbalanced: bool,
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
    let lookups = try_page!(ui, Lookups::load(ui, SLAVE_LOOKUPS).await);
    let report = reports::silo_report(&slaves);

    // Per pool × allocation silo: the spread over the pool's masters.
    let mut groups: HashMap<(Option<i64>, Vec<String>), Vec<&Row>> = HashMap::new();
    for s in &slaves {
        groups
            .entry((int(s, "poolid"), reports::silo_of(s)))
            .or_default()
            .push(s);
    }
    let slaves_path = ui_path(ui, "slaves");
    let mut spread: Vec<SpreadGroup> = groups
        .into_iter()
        .map(|((poolid, silo), members)| {
            let pool = poolid
                .and_then(|id| lookups.name_of(Table::Pools, id))
                .unwrap_or_default();
            let pool_masters: Vec<&Row> = masters.iter().filter(|m| int(m, "poolid") == poolid).collect();
            spread_group(pool, silo, &members, &pool_masters, &slaves_path)
        })
        .collect();
    spread.sort_by(|a, b| natural_cmp(&a.pool, &b.pool).then_with(|| reports::cmp_all(&a.silo, &b.silo)));
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

fn spread_group(pool: &str, silo: Vec<String>, members: &[&Row], masters: &[&Row], slaves_path: &str) -> SpreadGroup {
    let mut masters: Vec<&Row> = masters.to_vec();
    masters.sort_by(|a, b| natural_cmp(text(a, "nickname"), text(b, "nickname")));
    let mut on: HashMap<i64, u64> = HashMap::new();
    let (mut unallocated, mut enabled) = (0, 0);
    for s in members {
        if s.get("enabled") == Some(&Value::Bool(true)) {
            enabled += 1;
        }
        match int(s, "current_masterid") {
            Some(m) => *on.entry(m).or_default() += 1,
            None => unallocated += 1,
        }
    }
    let count = |m: &Row| int(m, "masterid").and_then(|id| on.get(&id)).copied().unwrap_or(0);
    let is_enabled = |m: &Row| m.get("enabled") == Some(&Value::Bool(true));
    let in_pool: u64 = masters.iter().map(|m| count(m)).sum();
    let elsewhere = (members.len() as u64).saturating_sub(unallocated + in_pool);
    let enabled_counts: Vec<u64> = masters.iter().filter(|m| is_enabled(m)).map(|m| count(m)).collect();
    let spread = match (enabled_counts.iter().max(), enabled_counts.iter().min()) {
        (Some(max), Some(min)) => max - min,
        _ => 0,
    };
    let max = masters.iter().map(|m| count(m)).max().unwrap_or(0).max(1);
    let group_query = |master: &str| {
        let mut pairs = vec![("pool", pool), ("master", master), ("decomm", "1")];
        pairs.extend(reports::silo_labels().into_iter().zip(silo.iter().map(String::as_str)));
        href(slaves_path, &query(&pairs))
    };
    SpreadGroup {
        pool: pool.to_owned(),
        masters: masters
            .iter()
            .map(|m| {
                let nickname = text(m, "nickname");
                let count = count(m);
                MasterBar {
                    nickname: nickname.to_owned(),
                    enabled: is_enabled(m),
                    count,
                    percent: count * 100 / max,
                    href: group_query(nickname),
                }
            })
            .collect(),
        href: group_query(""),
        silo,
        slaves: members.len() as u64,
        enabled,
        unallocated,
        elsewhere,
        spread,
        imbalanced: spread > 1,
    }
}
