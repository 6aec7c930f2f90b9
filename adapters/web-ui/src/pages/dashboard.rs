//! `GET /ui/`: the fleet at a glance, pools, and the latest changes.

use super::audit::audit_view;
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
                limit: 8
            }
        )
        .await
    );

    let is_true = |r: &Row, k: &str| r.get(k) == Some(&Value::Bool(true));
    let slaves_path = ui_path(ui, "slaves");
    let pools = try_page!(ui, ui.inventory.store().list(Table::Pools).await);
    let per_pool: Vec<PoolLine> = reports::pool_summaries(&pools, &slaves, &masters, &allocated)
        .into_iter()
        .map(|summary| PoolLine {
            href: href(&slaves_path, &query(&[("pool", &summary.pool)])),
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
        recent => recent,
        decomm_name => DECOMMISSIONED_ENVIRONMENT,
    };
    ui.render(StatusCode::OK, "dashboard.html", ctx)
}
