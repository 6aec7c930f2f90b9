//! `GET /ui/`: the fleet at a glance, pools, and the latest changes; with
//! the live fleet, how many slaves are connected now beside how many are
//! recorded on a master, and which masters do not answer their polls.

use super::audit::audit_view;
use super::live::{live_now, Judge};
use super::*;

/// The most audit entries of the last hour the dashboard reads: a whole
/// fleet rebooting twice. Beyond it the counts say "at least".
const RECENT_ENTRIES: u32 = 100_000;

/// Allocations recorded in the audit log since `cutoff`: the entries of
/// `slaves` that set `current_masterid` to a master, read with the log's
/// time bound (only the hour's entries, never the whole log). The flag says
/// the cap was reached.
async fn allocations_since(ui: &Ui, cutoff: SystemTime) -> Result<(Vec<i64>, bool), StoreError> {
    let entries = ui
        .inventory
        .store()
        .audit(AuditQuery {
            table: Some(Table::Slaves),
            row_id: None,
            since: Some(cutoff),
            limit: RECENT_ENTRIES,
            ..AuditQuery::default()
        })
        .await?;
    let allocated = entries
        .iter()
        .filter(|e| {
            e.entry
                .new_values
                .as_ref()
                .and_then(|v| v.get("current_masterid"))
                .is_some_and(|v| v.as_int().is_some())
        })
        .map(|e| e.entry.row_id)
        .collect();
    Ok((allocated, entries.len() >= RECENT_ENTRIES as usize))
}

/// A pool's line on the dashboard: the domain's summary and a link to its
/// slaves.
#[derive(Debug, Serialize)]
struct PoolLine {
    #[serde(flatten)]
    summary: reports::PoolSummary,
    href: String,
    /// With the live fleet: its slaves connected now, and its polled masters
    /// that do not answer.
    live: Option<PoolLive>,
}

#[derive(Debug, Default, Clone, Serialize)]
struct PoolLive {
    connected: u64,
    unreachable: u64,
    connected_href: String,
}

/// The live counts of the whole fleet.
#[derive(Debug, Default, Serialize)]
struct LiveCounts {
    connected: u64,
    /// Masters with a data API that a poll was recorded for.
    polled: u64,
    unreachable: u64,
    /// Per pool id.
    #[serde(skip)]
    per_pool: HashMap<i64, PoolLive>,
}

fn live_counts(judge: &Judge<'_>, slaves: &[Row], masters: &[Row]) -> LiveCounts {
    let mut counts = LiveCounts::default();
    for s in slaves {
        if judge.is_connected(s) {
            counts.connected += 1;
            if let Some(pool) = int(s, "poolid") {
                counts.per_pool.entry(pool).or_default().connected += 1;
            }
        }
    }
    for m in masters {
        if let Some(status) = judge.master(int(m, "masterid"), int(m, "http_port").unwrap_or(0)) {
            counts.polled += 1;
            if !status.reachable {
                counts.unreachable += 1;
                if let Some(pool) = int(m, "poolid") {
                    counts.per_pool.entry(pool).or_default().unreachable += 1;
                }
            }
        }
    }
    counts
}

/// `GET /ui/` — the dashboard.
pub(crate) async fn dashboard(ui: &Ui) -> Response {
    let slaves = try_page!(ui, ui.inventory.store().list(Table::Slaves).await);
    let masters = try_page!(ui, ui.inventory.store().list(Table::Masters).await);
    let lookups = try_page!(ui, Lookups::load(ui, &[Table::Environments]).await);
    let cutoff = SystemTime::now() - Duration::from_secs(3600);
    let (allocated, truncated) = try_page!(ui, allocations_since(ui, cutoff).await);
    let recent = try_page!(
        ui,
        audit_view(
            ui,
            AuditQuery {
                table: None,
                row_id: None,
                since: None,
                limit: 8,
                ..AuditQuery::default()
            }
        )
        .await
    );

    let live = try_page!(ui, live_now(ui).await);

    let is_true = |r: &Row, k: &str| r.get(k) == Some(&Value::Bool(true));
    let slaves_path = ui_path(ui, "slaves");
    let pools = try_page!(ui, ui.inventory.store().list(Table::Pools).await);
    let live_counts = live
        .as_ref()
        .map(|l| live_counts(&Judge::new(l, HashMap::new()), &slaves, &masters));
    // Summaries are by name; the live counts by id.
    let pool_ids: HashMap<&str, i64> = pools
        .iter()
        .filter_map(|p| Some((p.get("name")?.as_text()?, int(p, "poolid")?)))
        .collect();
    let per_pool: Vec<PoolLine> = reports::pool_summaries(&pools, &slaves, &masters, &allocated)
        .into_iter()
        .map(|summary| PoolLine {
            href: href(&slaves_path, &query(&[("pool", &summary.pool)])),
            live: live_counts.as_ref().map(|c| PoolLive {
                connected_href: href(&slaves_path, &query(&[("pool", &summary.pool), ("connected", "1")])),
                ..pool_ids
                    .get(summary.pool.as_str())
                    .and_then(|id| c.per_pool.get(id))
                    .cloned()
                    .unwrap_or_default()
            }),
            summary,
        })
        .collect();

    let decomm_env = lookups
        .0
        .get(Table::Environments.name())
        .and_then(|envs| envs.iter().find(|e| e.name == DECOMMISSIONED_ENVIRONMENT))
        .map(|e| e.id);
    let decomm = slaves
        .iter()
        .filter(|s| decomm_env.is_some() && int(s, "envid") == decomm_env)
        .count();
    let ctx = minijinja::context! {
        page => "dashboard",
        title => "Dashboard",
        counts => minijinja::context! {
            slaves => slaves.len(),
            enabled => slaves.iter().filter(|s| is_true(s, "enabled")).count(),
            disabled => slaves.iter().filter(|s| !is_true(s, "enabled")).count(),
            decomm => decomm,
            on_master => slaves.iter().filter(|s| int(s, "current_masterid").is_some()).count(),
            locked => slaves.iter().filter(|s| int(s, "locked_masterid").is_some()).count(),
            masters => masters.len(),
            masters_enabled => masters.iter().filter(|m| is_true(m, "enabled")).count(),
            pools => per_pool.len(),
            allocated_last_hour => allocated.len(),
            allocated_distinct => allocated.iter().collect::<BTreeSet<_>>().len(),
            allocated_truncated => truncated,
        },
        per_pool => per_pool,
        live => live_counts,
        recent => recent,
        decomm_name => DECOMMISSIONED_ENVIRONMENT,
    };
    ui.render(StatusCode::OK, "dashboard.html", ctx)
}
