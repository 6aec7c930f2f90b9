//! The subcommands that go through the REST API, written against the
//! [`AdminApi`] port, with the original's messages: results on stdout,
//! what was done on stderr, failures as errors (exit status 1).

use std::collections::HashMap;
use std::io::Write;

use anyhow::{bail, Context};
use slavealloc_domain::inventory::SlaveFilter;
use slavealloc_domain::schema::{Kind, Row, Table, Value};
use slavealloc_domain::{reports, AdminApi, SlaveName};

use super::output::{cell, write_rows, write_table, Format};
use super::ListWhat;

/// Where a subcommand writes: results to `out`, messages to `err`.
pub struct Term<'a> {
    /// Results (a tac, a listing, notes).
    pub out: &'a mut dyn Write,
    /// What was done, warnings.
    pub err: &'a mut dyn Write,
}

impl std::fmt::Debug for Term<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Term").finish_non_exhaustive()
    }
}

fn text<'r>(row: &'r Row, column: &str) -> Option<&'r str> {
    row.get(column).and_then(Value::as_text).filter(|s| !s.is_empty())
}

fn int(row: &Row, column: &str) -> Option<i64> {
    row.get(column).and_then(Value::as_int)
}

/// A boolean column; old MySQL databases answer 0/1.
fn flag(row: &Row, column: &str) -> bool {
    match row.get(column) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Int(i)) => *i != 0,
        _ => false,
    }
}

fn id(row: &Row, column: &str) -> anyhow::Result<i32> {
    int(row, column)
        .and_then(|i| i32::try_from(i).ok())
        .with_context(|| format!("the server's row has no {column}"))
}

fn word(enabled: bool) -> &'static str {
    if enabled {
        "enabled"
    } else {
        "disabled"
    }
}

/// A slave name from the command line; a qualified one is refused, as the
/// original did.
fn slave_name(raw: &str) -> anyhow::Result<SlaveName> {
    SlaveName::parse(raw).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn find_slave(api: &dyn AdminApi, name: &SlaveName) -> anyhow::Result<(i32, Row)> {
    let Some(slave) = api.find(Table::Slaves, name.as_str()).await? else {
        bail!("No slave found named '{name}'.");
    };
    Ok((id(&slave, "slaveid")?, slave))
}

async fn find_master(api: &dyn AdminApi, nickname: &str) -> anyhow::Result<(i32, Row)> {
    let Some(master) = api.find(Table::Masters, nickname).await? else {
        bail!("No master found named '{nickname}'.");
    };
    Ok((id(&master, "masterid")?, master))
}

/// `'bm01' (bm01.example.com:9001)`
fn describe_master(master: &Row) -> String {
    format!(
        "'{}' ({}:{})",
        text(master, "nickname").unwrap_or_default(),
        text(master, "fqdn").unwrap_or_default(),
        cell(master.get("pb_port"))
    )
}

/// `gettac [-n] SLAVE...`: each slave's tac on stdout; with `commit`, the
/// allocation is recorded and reported on stderr. Stops at the first
/// slave without a tac.
pub async fn gettac(api: &dyn AdminApi, term: &mut Term<'_>, slaves: &[String], commit: bool) -> anyhow::Result<()> {
    // Every name is checked before anything is allocated.
    let names = slaves
        .iter()
        .map(|s| slave_name(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for name in &names {
        let tac = api.gettac(name, commit).await?;
        term.out.write_all(tac.as_bytes())?;
        if !tac.ends_with('\n') {
            writeln!(term.out)?;
        }
        term.out.flush()?;
        if !commit {
            continue;
        }
        let (_, slave) = find_slave(api, name).await?;
        let master = match int(&slave, "current_masterid").and_then(|i| i32::try_from(i).ok()) {
            Some(m) => api.get(Table::Masters, m).await?,
            None => None,
        };
        match master {
            Some(m) if flag(&slave, "enabled") => {
                writeln!(term.err, "Allocated '{name}' to {}", describe_master(&m))?;
            }
            _ => writeln!(term.err, "Slave '{name}' is disabled; no allocation made")?,
        }
    }
    Ok(())
}

/// `lock SLAVE MASTER`.
pub async fn lock(api: &dyn AdminApi, term: &mut Term<'_>, slave: &str, master: &str) -> anyhow::Result<()> {
    let name = slave_name(slave)?;
    let (slaveid, _) = find_slave(api, &name).await?;
    let (masterid, master) = find_master(api, master).await?;
    let changes = Row::from([("locked_masterid".to_owned(), Value::Int(masterid.into()))]);
    api.update(Table::Slaves, slaveid, changes).await?;
    writeln!(term.err, "Locked '{name}' to {}", describe_master(&master))?;
    Ok(())
}

/// `lock -u SLAVE` and `unlock SLAVE`.
pub async fn unlock(api: &dyn AdminApi, term: &mut Term<'_>, slave: &str) -> anyhow::Result<()> {
    let name = slave_name(slave)?;
    let (slaveid, row) = find_slave(api, &name).await?;
    if int(&row, "locked_masterid").is_none() {
        bail!("Slave '{name}' is not locked");
    }
    let changes = Row::from([("locked_masterid".to_owned(), Value::Null)]);
    api.update(Table::Slaves, slaveid, changes).await?;
    writeln!(term.err, "Slave '{name}' unlocked")?;
    Ok(())
}

/// `enable`/`disable SLAVE [-m MSG]`: sets `enabled` (and the notes, when
/// given) unless it already has that state.
pub async fn set_enabled(
    api: &dyn AdminApi,
    term: &mut Term<'_>,
    slave: &str,
    enabled: bool,
    message: Option<String>,
) -> anyhow::Result<()> {
    let name = slave_name(slave)?;
    let (slaveid, row) = find_slave(api, &name).await?;
    if enabled && message.is_none() {
        writeln!(term.err, "NOTE: not clearing slave notes")?;
    }
    if let Some(notes) = text(&row, "notes") {
        writeln!(term.err, "previous slave notes: '{notes}'")?;
    }
    if flag(&row, "enabled") == enabled {
        writeln!(term.err, "{name} is already {}", word(enabled))?;
        return Ok(());
    }
    let mut changes = Row::from([("enabled".to_owned(), Value::Bool(enabled))]);
    if let Some(m) = message {
        changes.insert("notes".into(), Value::Text(m));
    }
    api.update(Table::Slaves, slaveid, changes).await?;
    writeln!(term.err, "{name} {}", word(enabled))?;
    Ok(())
}

/// `notes SLAVE [-m MSG]`: prints the notes, or replaces them.
pub async fn notes(
    api: &dyn AdminApi,
    term: &mut Term<'_>,
    slave: &str,
    message: Option<String>,
) -> anyhow::Result<()> {
    let name = slave_name(slave)?;
    let (slaveid, row) = find_slave(api, &name).await?;
    let Some(message) = message else {
        if let Some(notes) = text(&row, "notes") {
            writeln!(term.out, "{notes}")?;
        }
        return Ok(());
    };
    writeln!(
        term.err,
        "previous slave notes: '{}'",
        text(&row, "notes").unwrap_or_default()
    )?;
    let changes = Row::from([("notes".to_owned(), Value::Text(message.clone()))]);
    api.update(Table::Slaves, slaveid, changes).await?;
    writeln!(term.err, "notes set to '{message}'")?;
    Ok(())
}

/// The live filters of `list slaves`, applied here to the `live.*` facts
/// the API's rows carry.
#[derive(Debug, Clone, Default)]
pub struct LiveSelection {
    /// Recorded master nicknames.
    pub master: Vec<String>,
    /// Connected now, or not.
    pub connected: Option<bool>,
    /// Not seen connected for this long, or never.
    pub stale: Option<std::time::Duration>,
}

impl LiveSelection {
    fn needs_live(&self) -> bool {
        self.connected.is_some() || self.stale.is_some()
    }

    pub(crate) fn keeps(&self, row: &Row, now: std::time::SystemTime) -> bool {
        let connected = text(row, "live.state") == Some("connected");
        let last_seen = text(row, "live.last_seen").and_then(|t| slavealloc_domain::audit::parse_at(t).ok());
        (self.master.is_empty() || text(row, "current_master").is_some_and(|m| self.master.iter().any(|w| w == m)))
            && self.connected.is_none_or(|c| c == connected)
            && self
                .stale
                .is_none_or(|age| !connected && slavealloc_domain::live::is_stale(last_seen, now, age))
    }
}

/// The live columns `list` adds when the rows carry live facts.
const LIVE_COLUMNS: [&str; 3] = ["live.state", "live.connected_master", "live.last_seen"];

/// `list slaves|masters`.
pub async fn list(
    api: &dyn AdminApi,
    term: &mut Term<'_>,
    what: ListWhat,
    pools: &[String],
    enabled: Option<bool>,
    live: &LiveSelection,
    format: Format,
) -> anyhow::Result<()> {
    let table = match what {
        ListWhat::Slaves => Table::Slaves,
        ListWhat::Masters => Table::Masters,
    };
    let mut columns: Vec<&str> = table.listing().iter().map(|(key, _)| *key).collect();
    let filter = SlaveFilter {
        pool: pools.to_vec(),
        enabled,
        ..SlaveFilter::default()
    };
    let mut rows = api.list(table, &filter).await?;
    // Filtered here too: masters have no server-side filter, and this way the
    // answer does not depend on which filters a server version knows.
    rows.retain(|r| {
        (pools.is_empty() || text(r, "pool").is_some_and(|p| pools.iter().any(|w| w == p)))
            && enabled.is_none_or(|e| flag(r, "enabled") == e)
    });
    let has_live = rows
        .iter()
        .any(|r| r.contains_key("live.state") || r.contains_key("live.reachable"));
    if live.needs_live() && !has_live && !rows.is_empty() {
        bail!("--connected, --disconnected and --stale need the daemon's live state: ask its API (-A)");
    }
    if table == Table::Slaves {
        let now = std::time::SystemTime::now();
        rows.retain(|r| live.keeps(r, now));
        if has_live {
            columns.extend(LIVE_COLUMNS);
        }
    } else if has_live {
        columns.extend(["live.reachable", "live.connected", "live.buildbot_version"]);
    }
    write_rows(term.out, format, &columns, &rows)?;
    Ok(())
}

/// What `history` asks for.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// A slave name or master nickname.
    pub name: Option<String>,
    /// An age or a time.
    pub since: Option<String>,
    /// An age or a time.
    pub until: Option<String>,
    /// Who.
    pub actor: Option<String>,
    /// `edit` or `allocation`.
    pub kind: Option<&'static str>,
    /// At most.
    pub limit: u32,
}

/// `history [NAME]`: audit entries, newest first, one line each.
pub async fn history(api: &dyn AdminApi, term: &mut Term<'_>, q: &HistoryQuery, format: Format) -> anyhow::Result<()> {
    let mut pairs: Vec<(String, String)> = vec![("limit".into(), q.limit.to_string())];
    let optional = [("since", &q.since), ("until", &q.until), ("actor", &q.actor)];
    pairs.extend(
        optional
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| ((*k).to_owned(), v.clone()))),
    );
    if let Some(kind) = q.kind {
        pairs.push(("kind".into(), kind.into()));
    }
    let entries = match &q.name {
        None => api.history(&pairs).await?,
        Some(name) => {
            let of = |table: &str| {
                let mut p = pairs.clone();
                p.extend([
                    ("table".to_owned(), table.to_owned()),
                    ("name".to_owned(), name.clone()),
                ]);
                p
            };
            match api.history(&of("slaves")).await? {
                Some(found) => Some(found),
                None => api.history(&of("masters")).await?,
            }
        }
    };
    let Some(entries) = entries else {
        bail!(
            "No slave or master found named '{}'.",
            q.name.as_deref().unwrap_or_default()
        );
    };
    if format == Format::Json {
        serde_json::to_writer_pretty(&mut *term.out, &entries)?;
        writeln!(term.out)?;
        return Ok(());
    }
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        v => v.to_string(),
    };
    let change = |e: &serde_json::Value| -> String {
        let (old, new) = (&e["old_values"], &e["new_values"]);
        match (old.as_object(), new.as_object()) {
            (None, Some(_)) => "created".to_owned(),
            (Some(_), None) => "deleted".to_owned(),
            (Some(o), Some(n)) => n
                .iter()
                .map(|(k, v)| format!("{k}: {} → {}", s(o.get(k).unwrap_or(&serde_json::Value::Null)), s(v)))
                .collect::<Vec<_>>()
                .join(", "),
            (None, None) => String::new(),
        }
    };
    let rows: Vec<Vec<String>> = entries
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                s(&e["at"]),
                s(&e["actor"]),
                s(&e["table_name"]),
                s(&e["name"]),
                change(e),
            ]
        })
        .collect();
    write_table(
        term.out,
        &["at", "actor", "table", "name", "change"].map(str::to_owned),
        &rows,
    )?;
    Ok(())
}

/// `whatif --drain M...`: the moves and the spreads, before and after.
pub async fn whatif(
    api: &dyn AdminApi,
    term: &mut Term<'_>,
    drain: &[String],
    add: &[String],
    format: Format,
) -> anyhow::Result<()> {
    let w = api.whatif(drain, add).await?;
    if format == Format::Json {
        serde_json::to_writer_pretty(&mut *term.out, &w)?;
        writeln!(term.out)?;
        return Ok(());
    }
    let s = |v: &serde_json::Value| v.as_str().map_or_else(|| "-".to_owned(), str::to_owned);
    let moves: Vec<Vec<String>> = w["moves"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            vec![
                s(&m["slave"]),
                s(&m["from"]),
                m["to"]
                    .as_str()
                    .map_or_else(|| format!("none: {}", s(&m["error"])), str::to_owned),
            ]
        })
        .collect();
    writeln!(term.out, "slaves that would move: {}", moves.len())?;
    if !moves.is_empty() {
        write_table(term.out, &["slave", "from", "to"].map(str::to_owned), &moves)?;
    }
    let locked: Vec<String> = w["staying_locked"].as_array().into_iter().flatten().map(s).collect();
    if !locked.is_empty() {
        writeln!(
            term.out,
            "locked to a drained master, would stay: {}",
            locked.join(", ")
        )?;
    }
    let counts = |v: &serde_json::Value| -> String {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{}={}", s(&p[0]), p[1]))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let spreads: Vec<Vec<String>> = w["spreads"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            vec![
                g["poolid"].to_string(),
                format!("{} (spread {})", counts(&g["before"]), g["spread_before"]),
                format!("{} (spread {})", counts(&g["after"]), g["spread_after"]),
            ]
        })
        .collect();
    if !spreads.is_empty() {
        write_table(term.out, &["pool", "before", "after"].map(str::to_owned), &spreads)?;
    }
    Ok(())
}

/// `why SLAVE`: the decision and every master's verdict.
pub async fn why(api: &dyn AdminApi, term: &mut Term<'_>, slave: &str) -> anyhow::Result<()> {
    let name = SlaveName::parse(slave).map_err(|e| anyhow::anyhow!("{e}"))?;
    let why = api.explain(&name).await?;
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        v => v.to_string(),
    };
    writeln!(
        term.out,
        "{}: {} → {} (pool {}, peers counted: {})",
        s(&why["slave"]),
        s(&why["reason"]),
        s(&why["master"]),
        s(&why["poolid"]),
        s(&why["count"])
    )?;
    let rows: Vec<Vec<String>> = why["masters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            vec![
                format!("{}{}", if m["chosen"] == true { "* " } else { "  " }, s(&m["nickname"])),
                if m["enabled"] == true { "enabled" } else { "disabled" }.to_owned(),
                s(&m["peers"]),
                s(&m["why"]),
            ]
        })
        .collect();
    let header = ["  master", "state", "peers", "why"].map(str::to_owned);
    write_table(term.out, &header, &rows)?;
    Ok(())
}

/// `drift`: the live fleet's drift report; exits 1 when there is any.
pub async fn drift(api: &dyn AdminApi, term: &mut Term<'_>, format: Format) -> anyhow::Result<()> {
    let report = api.drift().await?;
    let list = |key: &str| report[key].as_array().cloned().unwrap_or_default();
    let (elsewhere, other_pool, unknown) = (list("elsewhere"), list("other_pool"), list("unknown"));
    let imbalanced: Vec<serde_json::Value> = list("spreads")
        .into_iter()
        .filter(|s| s["spread"].as_u64().unwrap_or(0) > 1)
        .collect();
    if format == Format::Json {
        serde_json::to_writer_pretty(&mut *term.out, &report)?;
        writeln!(term.out)?;
    } else {
        let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
        let section =
            |out: &mut dyn Write, title: &str, header: &[&str], rows: Vec<Vec<String>>| -> anyhow::Result<()> {
                writeln!(out, "{title}: {}", rows.len())?;
                if !rows.is_empty() {
                    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
                    write_table(out, &header, &rows)?;
                }
                Ok(())
            };
        let slaves = |rows: &[serde_json::Value]| -> Vec<Vec<String>> {
            rows.iter()
                .map(|d| {
                    vec![
                        s(&d["name"]),
                        s(&d["pool"]),
                        s(&d["recorded_master"]),
                        s(&d["connected_master"]),
                        s(&d["connected_pool"]),
                    ]
                })
                .collect()
        };
        let header = ["slave", "pool", "recorded", "connected to", "its pool"];
        section(
            &mut *term.out,
            "connected elsewhere than recorded",
            &header,
            slaves(&elsewhere),
        )?;
        section(
            &mut *term.out,
            "connected to a master of another pool",
            &header,
            slaves(&other_pool),
        )?;
        let unknown_rows = unknown
            .iter()
            .map(|u| {
                vec![
                    s(&u["name"]),
                    s(&u["master"]),
                    u["connected"].to_string(),
                    s(&u["last_seen"]),
                ]
            })
            .collect();
        section(
            &mut *term.out,
            "unknown workers",
            &["worker", "master", "connected", "last seen"],
            unknown_rows,
        )?;
        let spread_rows = imbalanced
            .iter()
            .map(|g| {
                let silo: Vec<String> = g["silo"].as_array().into_iter().flatten().map(s).collect();
                vec![s(&g["pool"]), silo.join(" "), g["spread"].to_string()]
            })
            .collect();
        section(
            &mut *term.out,
            "pool × silo groups whose connected slaves spread by more than 1",
            &["pool", "silo", "spread"],
            spread_rows,
        )?;
    }
    if !(elsewhere.is_empty() && other_pool.is_empty() && unknown.is_empty() && imbalanced.is_empty()) {
        bail!(Drifted);
    }
    Ok(())
}

/// `drift` found some: exit 1 without another message.
#[derive(Debug)]
pub struct Drifted;

impl std::fmt::Display for Drifted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the live fleet has drifted from what was recorded")
    }
}

impl std::error::Error for Drifted {}

/// `show NAME`: a slave, else a master, with every column and the names of
/// the rows it refers to.
pub async fn show(api: &dyn AdminApi, term: &mut Term<'_>, name: &str, format: Format) -> anyhow::Result<()> {
    let slave = match SlaveName::parse(name) {
        Ok(n) => api.find(Table::Slaves, n.as_str()).await?,
        Err(_) => None,
    };
    let (table, row) = match slave {
        Some(row) => (Table::Slaves, row),
        None => match api.find(Table::Masters, name).await? {
            Some(row) => (Table::Masters, row),
            None => bail!("No slave or master found named '{name}'."),
        },
    };
    let mut lines: Vec<(String, Value)> = Vec::new();
    let mut names: HashMap<(Table, i64), Value> = HashMap::new();
    for c in table.columns() {
        let value = row.get(c.name).cloned().unwrap_or(Value::Null);
        lines.push((c.name.to_owned(), value.clone()));
        let (Kind::Ref(target), Some(label), Some(ref_id)) = (c.kind, c.label, value.as_int()) else {
            if let Some(label) = c.label {
                lines.push((label.to_owned(), Value::Null));
            }
            continue;
        };
        let label_value = match names.get(&(target, ref_id)) {
            Some(v) => v.clone(),
            None => {
                let found = match i32::try_from(ref_id) {
                    Ok(i) => api.get(target, i).await?,
                    Err(_) => None,
                };
                let name_column = target.name_column().unwrap_or("name");
                let v = found.and_then(|r| r.get(name_column).cloned()).unwrap_or(Value::Null);
                names.insert((target, ref_id), v.clone());
                v
            }
        };
        lines.push((label.to_owned(), label_value));
    }
    // The live facts the daemon's API adds, after the columns.
    lines.extend(
        row.iter()
            .filter(|(k, _)| k.starts_with("live."))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    match format {
        Format::Table => {
            let rows: Vec<Vec<String>> = lines
                .iter()
                .map(|(k, v)| vec![format!("{k}:"), cell(Some(v))])
                .collect();
            let (header, body) = rows
                .split_first()
                .map_or((Vec::new(), &[][..]), |(h, b)| (h.clone(), b));
            write_table(term.out, &header, body)?;
        }
        Format::Json | Format::Csv => {
            let row: Row = lines.into_iter().collect();
            let columns: Vec<&str> = row.keys().map(String::as_str).collect();
            match format {
                Format::Json => {
                    serde_json::to_writer_pretty(&mut *term.out, &row)?;
                    writeln!(term.out)?;
                }
                _ => write_rows(term.out, format, &columns, std::slice::from_ref(&row))?,
            }
        }
    }
    Ok(())
}

/// After a drain: lists the slaves still on the master (they move when
/// they next boot, or at once under `runslave --supervise` with a graceful
/// drain), and warns about slaves locked to it, which keep getting it.
pub(crate) async fn list_slaves_on(api: &dyn AdminApi, term: &mut Term<'_>, nickname: &str) -> anyhow::Result<()> {
    let (masterid, _) = find_master(api, nickname).await?;
    let filter = SlaveFilter {
        include_decomm: true,
        ..SlaveFilter::default()
    };
    let slaves = api.list(Table::Slaves, &filter).await?;
    let on = |column: &str| -> Vec<&str> {
        slaves
            .iter()
            .filter(|s| int(s, column) == Some(masterid.into()))
            .filter_map(|s| text(s, "name"))
            .collect()
    };
    let current = on("current_masterid");
    for name in &current {
        writeln!(term.out, "{name}")?;
    }
    match current.len() {
        0 => writeln!(term.err, "No slave is on '{nickname}'.")?,
        n => writeln!(
            term.err,
            "{n} slave(s) still on '{nickname}'; they move to another master when they next boot."
        )?,
    }
    let locked = on("locked_masterid");
    if !locked.is_empty() {
        writeln!(
            term.err,
            "Warning: locked to '{nickname}', so still given it while locked: {}",
            locked.join(", ")
        )?;
    }
    Ok(())
}

/// `silos`: one row per allocation silo, a column per pool with the number
/// of slaves, and the total.
pub async fn silos(api: &dyn AdminApi, term: &mut Term<'_>, format: Format) -> anyhow::Result<()> {
    // Every slave, as the UI's report counts them: the decommissioned
    // environment is a silo of its own.
    let every = SlaveFilter {
        include_decomm: true,
        ..SlaveFilter::default()
    };
    let report = reports::silo_report(&api.list(Table::Slaves, &every).await?);
    let rows: Vec<Row> = report
        .rows
        .iter()
        .map(|r| {
            let mut row: Row = report
                .attributes
                .iter()
                .zip(&r.silo)
                .map(|(a, v)| ((*a).to_owned(), Value::Text(v.clone())))
                .collect();
            for (pool, n) in report.pools.iter().zip(&r.counts) {
                row.insert(pool.clone(), Value::Int(i64::try_from(*n).unwrap_or(i64::MAX)));
            }
            row.insert("total".into(), Value::Int(i64::try_from(r.total).unwrap_or(i64::MAX)));
            row
        })
        .collect();
    let columns: Vec<&str> = report
        .attributes
        .iter()
        .copied()
        .chain(report.pools.iter().map(String::as_str))
        .chain(["total"])
        .collect();
    write_rows(term.out, format, &columns, &rows)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use serde_json::json;
    use slavealloc_domain::testing::PlainRenderer;
    use slavealloc_domain::{Allocator, Dump, FixedHost, Inventory, LocalAdmin};
    use slavealloc_store_memory::MemoryStore;

    use super::*;

    fn fleet() -> Dump {
        let lookup = |id: &str, name: &str| json!([{ (id): 1, "name": name }]);
        let slave = |id: i32, name: &str, notes: serde_json::Value, locked: serde_json::Value| {
            json!({"slaveid": id, "name": name, "distroid": 1, "bitsid": 1, "speedid": 1, "purposeid": 1,
                   "dcid": 1, "trustid": 1, "envid": 1, "poolid": 1, "basedir": "/builds/slave",
                   "locked_masterid": locked, "custom_tplid": null, "enabled": true, "notes": notes,
                   "current_masterid": null})
        };
        serde_json::from_value(json!({
            "format": "slavealloc-dump", "version": 1,
            "tables": {
                "distros": lookup("distroid", "ubuntu64"), "bitlengths": lookup("bitsid", "64"),
                "speeds": lookup("speedid", "fast"), "purposes": lookup("purposeid", "tests"),
                "datacenters": lookup("dcid", "mdc1"), "trustlevels": lookup("trustid", "try"),
                "environments": lookup("envid", "prod"), "pools": lookup("poolid", "tests-pool"),
                "masters": [
                    {"masterid": 1, "nickname": "bm01", "fqdn": "bm01.example.com", "http_port": 8001,
                     "pb_port": 9001, "dcid": 1, "poolid": 1, "enabled": true, "notes": null},
                    {"masterid": 2, "nickname": "bm02", "fqdn": "bm02.example.com", "http_port": 8002,
                     "pb_port": 9002, "dcid": 1, "poolid": 1, "enabled": true, "notes": null}],
                "slaves": [slave(1, "tst-01", json!("bug 123"), json!(null)),
                           slave(2, "tst-02", json!(null), json!(2))],
                "slave_passwords": [{"poolid": 1, "distroid": null, "password": "pw"}]
            }
        }))
        .unwrap()
    }

    fn admin() -> LocalAdmin {
        let store = Arc::new(MemoryStore::from_dump(&fleet()).unwrap());
        let host = Arc::new(FixedHost {
            now: SystemTime::UNIX_EPOCH,
            fqdn: "alloc.example".into(),
        });
        let allocator = Allocator::new(store.clone(), Arc::new(PlainRenderer), host.clone());
        let inventory = Inventory::new(store.clone(), host.clone());
        let maintenance = slavealloc_domain::Maintenance::new(inventory.clone(), store, host);
        LocalAdmin::new(allocator, inventory, "test").with_maintenance(maintenance)
    }

    /// What a subcommand wrote: (stdout, stderr, error).
    struct Ran {
        out: String,
        err: String,
        error: Option<String>,
    }

    macro_rules! run {
        ($f:ident($api:expr $(, $arg:expr)*)) => {{
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let result = {
                let mut term = Term { out: &mut out, err: &mut err };
                $f($api, &mut term $(, $arg)*).await
            };
            Ran {
                out: String::from_utf8(out).unwrap(),
                err: String::from_utf8(err).unwrap(),
                error: result.err().map(|e| format!("{e:#}")),
            }
        }};
    }

    async fn slave(api: &LocalAdmin, name: &str) -> Row {
        api.find(Table::Slaves, name).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn gettac_commits_unless_noop_and_says_where() {
        let api = admin();
        let r = run!(gettac(&api, &["tst-01".into()], false));
        assert_eq!(
            r.out,
            "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n# generated: 0 on alloc.example\n\n\
             master=bm01.example.com:9001\nslave=tst-01\nbasedir=/builds/slave\npasswd=pw\ntemplate=default\n"
        );
        assert_eq!(r.err, "");
        assert_eq!(slave(&api, "tst-01").await["current_masterid"], Value::Null);

        let r = run!(gettac(&api, &["TST-01".into(), "tst-02".into()], true));
        assert_eq!(r.error, None);
        assert_eq!(
            r.err,
            "Allocated 'tst-01' to 'bm01' (bm01.example.com:9001)\nAllocated 'tst-02' to 'bm02' (bm02.example.com:9002)\n"
        );
        assert_eq!(slave(&api, "tst-01").await["current_masterid"], Value::Int(1));
    }

    #[tokio::test]
    async fn gettac_refuses_qualified_names_before_allocating_anything() {
        let api = admin();
        let r = run!(gettac(&api, &["tst-01".into(), "tst-02.example.com".into()], true));
        assert!(r.error.unwrap().contains("give the unqualified hostname"));
        assert_eq!(r.out, "");
        assert_eq!(slave(&api, "tst-01").await["current_masterid"], Value::Null);
        let r = run!(gettac(&api, &["nosuch".into()], true));
        assert!(r.error.unwrap().contains("no allocation available for nosuch"));
    }

    #[tokio::test]
    async fn disable_and_enable_report_as_the_original() {
        let api = admin();
        let r = run!(set_enabled(&api, "tst-01", false, Some("bug 456: bad disk".into())));
        assert_eq!(r.err, "previous slave notes: 'bug 123'\ntst-01 disabled\n");
        let row = slave(&api, "tst-01").await;
        assert_eq!(row["enabled"], Value::Bool(false));
        assert_eq!(row["notes"], Value::Text("bug 456: bad disk".into()));

        let r = run!(set_enabled(&api, "tst-01", false, Some("ignored".into())));
        assert_eq!(
            r.err,
            "previous slave notes: 'bug 456: bad disk'\ntst-01 is already disabled\n"
        );
        assert_eq!(
            slave(&api, "tst-01").await["notes"],
            Value::Text("bug 456: bad disk".into())
        );

        let r = run!(set_enabled(&api, "tst-01", true, None));
        assert_eq!(
            r.err,
            "NOTE: not clearing slave notes\nprevious slave notes: 'bug 456: bad disk'\ntst-01 enabled\n"
        );
        assert_eq!(slave(&api, "tst-01").await["enabled"], Value::Bool(true));

        let r = run!(set_enabled(&api, "nosuch", true, Some("x".into())));
        assert_eq!(r.error.as_deref(), Some("No slave found named 'nosuch'."));
        let r = run!(set_enabled(&api, "a.b", true, Some("x".into())));
        assert!(r.error.unwrap().contains("give the unqualified hostname"));
    }

    #[tokio::test]
    async fn notes_print_and_set() {
        let api = admin();
        assert_eq!(run!(notes(&api, "tst-01", None)).out, "bug 123\n");
        assert_eq!(run!(notes(&api, "tst-02", None)).out, "");
        let r = run!(notes(&api, "tst-02", Some("reimaged".into())));
        assert_eq!(r.err, "previous slave notes: ''\nnotes set to 'reimaged'\n");
        assert_eq!(run!(notes(&api, "tst-02", None)).out, "reimaged\n");
    }

    #[tokio::test]
    async fn lock_and_unlock() {
        let api = admin();
        let r = run!(lock(&api, "tst-01", "bm02"));
        assert_eq!(r.err, "Locked 'tst-01' to 'bm02' (bm02.example.com:9002)\n");
        assert_eq!(slave(&api, "tst-01").await["locked_masterid"], Value::Int(2));
        let r = run!(lock(&api, "tst-01", "bm99"));
        assert_eq!(r.error.as_deref(), Some("No master found named 'bm99'."));
        assert_eq!(run!(unlock(&api, "tst-01")).err, "Slave 'tst-01' unlocked\n");
        assert_eq!(slave(&api, "tst-01").await["locked_masterid"], Value::Null);
        let r = run!(unlock(&api, "tst-01"));
        assert_eq!(r.error.as_deref(), Some("Slave 'tst-01' is not locked"));
    }

    #[tokio::test]
    async fn list_filters_and_formats() {
        let api = admin();
        set_enabled(
            &api,
            &mut Term {
                out: &mut Vec::new(),
                err: &mut Vec::new(),
            },
            "tst-02",
            false,
            None,
        )
        .await
        .unwrap();
        let r = run!(list(
            &api,
            ListWhat::Slaves,
            &[],
            Some(false),
            &LiveSelection::default(),
            Format::Csv
        ));
        assert_eq!(
            r.out,
            "name,distro,bitlength,speed,datacenter,trustlevel,environment,purpose,pool,current_master,locked_master,notes,enabled\n\
             tst-02,ubuntu64,64,fast,mdc1,try,prod,tests,tests-pool,,bm02,,false\n"
        );
        let r = run!(list(
            &api,
            ListWhat::Masters,
            &["other-pool".into()],
            None,
            &LiveSelection::default(),
            Format::Table
        ));
        assert_eq!(
            r.out,
            "nickname  fqdn  http_port  pb_port  datacenter  pool  notes  enabled\n"
        );
        let r = run!(list(
            &api,
            ListWhat::Masters,
            &[],
            None,
            &LiveSelection::default(),
            Format::Json
        ));
        let masters: Vec<Row> = serde_json::from_str(&r.out).unwrap();
        assert_eq!(masters.len(), 2);
        assert_eq!(masters[0]["pool"], Value::Text("tests-pool".into()));
    }

    #[tokio::test]
    async fn show_names_what_a_row_refers_to() {
        let api = admin();
        let r = run!(show(&api, "tst-02", Format::Table));
        assert!(
            r.out.contains("locked_masterid:   2\nlocked_master:     bm02\n"),
            "{}",
            r.out
        );
        assert!(r.out.contains("pool:              tests-pool\n"), "{}", r.out);
        let r = run!(show(&api, "bm01", Format::Json));
        let row: Row = serde_json::from_str(&r.out).unwrap();
        assert_eq!(row["datacenter"], Value::Text("mdc1".into()));
        let r = run!(show(&api, "nothing", Format::Table));
        assert_eq!(r.error.as_deref(), Some("No slave or master found named 'nothing'."));
    }

    #[tokio::test]
    async fn drain_disables_the_master_with_a_note_and_lists_its_slaves() {
        use crate::admin::maintenance::{drain, undrain, Drain};
        let api = admin();
        run!(gettac(&api, &["tst-01".into(), "tst-02".into()], true));
        let d = Drain {
            note: "kernel upgrade".into(),
            until: Some("2h".into()),
            ..Drain::default()
        };
        let r = run!(drain(&api, "bm02", &d));
        assert_eq!(r.out, "tst-02\n");
        assert!(
            r.err.starts_with(
                "Master 'bm02' drained until 1970-01-01T02:00:00Z: kernel upgrade\n1 slave(s) still on 'bm02'"
            ),
            "{}",
            r.err
        );
        assert!(
            r.err
                .contains("locked to 'bm02', so still given it while locked: tst-02"),
            "{}",
            r.err
        );
        let master = api.find(Table::Masters, "bm02").await.unwrap().unwrap();
        assert_eq!(master["enabled"], Value::Bool(false));
        let r = run!(drain(&api, "bm02", &Drain::default()));
        assert!(r.error.unwrap().contains("note"), "a drain says why");
        let r = run!(undrain(&api, "bm02"));
        assert!(
            r.err
                .starts_with("Master 'bm02' undrained (drained by test since 1970-01-01T00:00:00Z: kernel upgrade)"),
            "{}",
            r.err
        );
        let master = api.find(Table::Masters, "bm02").await.unwrap().unwrap();
        assert_eq!(master["enabled"], Value::Bool(true));
        let r = run!(undrain(&api, "bm02"));
        assert_eq!(r.error, None, "already so is success");
        assert_eq!(r.err, "Master 'bm02' is enabled; it was not drained\n");
    }

    #[tokio::test]
    async fn several_slaves_are_disabled_with_a_note_and_set_by_name() {
        use crate::admin::maintenance::{assignment, bulk, enabled_write, BulkWrite, Selection};
        let api = admin();
        let both = Selection {
            names: vec!["tst-01".into(), "tst-02".into()],
            ..Selection::default()
        };
        let write = enabled_write(false, Some("rack 4".into()), Some("1d".into()), true);
        let r = run!(bulk(&api, &both, &write, "disable"));
        assert_eq!(
            r.err,
            "disable: 2 slave(s) matched, 2 changed, 2 hold(s) (dry run: nothing written)\n"
        );
        assert!(
            r.out
                .contains("tst-01: enabled true -> false, notes \"bug 123\" -> \"rack 4\""),
            "{}",
            r.out
        );
        assert!(
            flag(&slave(&api, "tst-01").await, "enabled"),
            "a dry run writes nothing"
        );
        let write = enabled_write(false, Some("rack 4".into()), Some("1d".into()), false);
        let r = run!(bulk(&api, &both, &write, "disable"));
        assert_eq!(r.error, None);
        assert!(!flag(&slave(&api, "tst-02").await, "enabled"));
        assert_eq!(slave(&api, "tst-02").await["notes"], Value::Text("rack 4".into()));
        let r = run!(bulk(&api, &both, &write, "disable"));
        assert!(
            r.err.starts_with("disable: 2 slave(s) matched, 0 changed"),
            "already so: {}",
            r.err
        );

        let (k, v) = assignment("locked_master=").unwrap();
        let set = BulkWrite {
            set: [(k, v)].into_iter().collect(),
            ..BulkWrite::default()
        };
        let r = run!(bulk(&api, &both, &set, "set"));
        assert_eq!(r.out, "tst-02: locked_masterid 2 -> -\n");
        assert!(assignment("pool").is_err());
        let pool = Selection {
            pool: vec!["tests-pool".into()],
            ..Selection::default()
        };
        let r = run!(bulk(&api, &pool, &enabled_write(true, None, None, false), "enable"));
        assert_eq!(r.err, "enable: 2 slave(s) matched, 2 changed, 2 hold(s)\n");
        let r = run!(bulk(
            &api,
            &Selection::default(),
            &enabled_write(true, None, None, false),
            "enable"
        ));
        assert!(r.error.unwrap().starts_with("name the slaves"));
        let mixed = Selection {
            names: vec!["tst-01".into()],
            pool: vec!["tests-pool".into()],
            ..Selection::default()
        };
        assert!(run!(bulk(&api, &mixed, &set, "set"))
            .error
            .unwrap()
            .contains("not both"));
        let missing = Selection {
            names: vec!["tst-01".into(), "nope".into()],
            ..Selection::default()
        };
        let r = run!(bulk(&api, &missing, &set, "set"));
        assert!(r.error.unwrap().contains("no slave is named nope"));
    }

    #[tokio::test]
    async fn silos_count_slaves_per_pool() {
        let api = admin();
        let r = run!(silos(&api, Format::Table));
        assert_eq!(
            r.out,
            "environment  purpose  distro    bitlength  datacenter  trustlevel  tests-pool  total\n\
             prod         tests    ubuntu64  64         mdc1        try         2           2\n"
        );
    }
}
