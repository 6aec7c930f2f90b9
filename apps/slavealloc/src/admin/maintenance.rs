//! The maintenance subcommands: `drain`/`undrain` with a note and an end,
//! and `disable`, `enable`, `lock`, `notes`, `set` on several slaves at once
//! (names, `--from-file`, or the list filters), each one bulk write through
//! the API: all or nothing, and doing what is already so is success.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Map, Value as Json};
use slavealloc_domain::inventory::SlaveFilter;
use slavealloc_domain::schema::{Table, Value};
use slavealloc_domain::AdminApi;

use super::api::{LiveSelection, Term};

/// Which slaves a command is for.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Names given on the command line.
    pub names: Vec<String>,
    /// A file of names, one per line (`#` comments; `-` is stdin).
    pub from_file: Option<PathBuf>,
    /// Pool names.
    pub pool: Vec<String>,
    /// Environment names.
    pub environment: Vec<String>,
    /// Current master nicknames.
    pub master: Vec<String>,
    /// Not seen connected for this long, or never (needs the live fleet).
    pub stale: Option<Duration>,
}

impl Selection {
    /// Whether any list filter is given.
    pub fn has_filter(&self) -> bool {
        !self.pool.is_empty() || !self.environment.is_empty() || !self.master.is_empty() || self.stale.is_some()
    }
}

/// Names in a file: one per line, blank lines and `#` comments skipped.
fn names_in(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading names from standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading names from {}", path.display()))?
    };
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The bulk API's `select` for a selection. `--stale` is judged here on
/// the live facts the slave list carries, and sent as names.
async fn select(api: &dyn AdminApi, sel: &Selection) -> anyhow::Result<Json> {
    let mut names = sel.names.clone();
    if let Some(path) = &sel.from_file {
        names.extend(names_in(path)?);
    }
    match (names.is_empty(), sel.has_filter()) {
        (false, true) => bail!("give slave names or filters (--pool, --environment, --master, --stale), not both"),
        (true, false) => bail!("name the slaves: names, --from-file FILE, or --pool, --environment, --master, --stale"),
        (false, false) => return Ok(json!({"names": names})),
        (true, true) => {}
    }
    let Some(stale) = sel.stale else {
        return Ok(json!({"filter": {"pool": sel.pool, "environment": sel.environment, "master": sel.master}}));
    };
    let filter = SlaveFilter {
        pool: sel.pool.clone(),
        environment: sel.environment.clone(),
        ..SlaveFilter::default()
    };
    let rows = api.list(Table::Slaves, &filter).await?;
    if !rows.is_empty() && !rows.iter().any(|r| r.contains_key("live.state")) {
        bail!("--stale needs the daemon's live state: ask its API (-A)");
    }
    let live = LiveSelection {
        master: sel.master.clone(),
        connected: None,
        stale: Some(stale),
    };
    let now = std::time::SystemTime::now();
    let names: Vec<&str> = rows
        .iter()
        .filter(|r| live.keeps(r, now))
        .filter_map(|r| r.get("name").and_then(Value::as_text))
        .collect();
    if names.is_empty() {
        bail!("no slave matches those filters");
    }
    Ok(json!({"names": names}))
}

/// What a bulk command sets.
#[derive(Debug, Clone, Default)]
pub struct BulkWrite {
    /// Column (or name key) → value, as a PUT body.
    pub set: Map<String, Json>,
    /// The note kept in the audit (and, with `enabled: false`, the hold's).
    pub note: Option<String>,
    /// The hold's end (`2h`, a time).
    pub until: Option<String>,
    /// Show what would change; change nothing.
    pub dry_run: bool,
}

fn shown(v: &Json) -> String {
    match v {
        Json::Null => "-".to_owned(),
        Json::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// One bulk write for the selection: the API's report.
pub async fn bulk_report(api: &dyn AdminApi, sel: &Selection, write: &BulkWrite) -> anyhow::Result<Json> {
    let request = json!({
        "select": select(api, sel).await?,
        "set": write.set,
        "note": write.note,
        "until": write.until,
        "dry_run": write.dry_run,
    });
    Ok(api.bulk(request).await?)
}

/// One bulk write for the selection; prints each change on stdout and a
/// summary on stderr.
pub async fn bulk(
    api: &dyn AdminApi,
    term: &mut Term<'_>,
    sel: &Selection,
    write: &BulkWrite,
    verb: &str,
) -> anyhow::Result<()> {
    let report = bulk_report(api, sel, write).await?;
    let matched = report["matched"].as_array().map_or(0, Vec::len);
    let changed = report["changed"].as_array().cloned().unwrap_or_default();
    for c in &changed {
        let (old, new) = (&c["old"], &c["new"]);
        let columns: Vec<String> = new
            .as_object()
            .map(|n| {
                n.iter()
                    .map(|(k, v)| format!("{k} {} -> {}", shown(&old[k]), shown(v)))
                    .collect()
            })
            .unwrap_or_default();
        writeln!(
            term.out,
            "{}: {}",
            c["name"].as_str().unwrap_or_default(),
            columns.join(", ")
        )?;
    }
    let holds = report["holds"].as_u64().unwrap_or(0);
    let held = if holds > 0 {
        format!(", {holds} hold(s)")
    } else {
        String::new()
    };
    let dry = if write.dry_run {
        " (dry run: nothing written)"
    } else {
        ""
    };
    writeln!(
        term.err,
        "{verb}: {matched} slave(s) matched, {} changed{held}{dry}",
        changed.len()
    )?;
    Ok(())
}

/// Reads `KEY=VALUE` as a PUT body's entry: `true`/`false` are booleans,
/// `null` or nothing is null, digits for an `...id` column a number, the
/// rest text (names: `pool=tests-linux`).
pub fn assignment(text: &str) -> anyhow::Result<(String, Json)> {
    let Some((key, value)) = text.split_once('=') else {
        bail!("{text:?} is not KEY=VALUE (environment=staging)");
    };
    let key = key.trim();
    if key.is_empty() {
        bail!("{text:?}: the key is empty");
    }
    let value = match value {
        "true" => Json::Bool(true),
        "false" => Json::Bool(false),
        "" | "null" => Json::Null,
        v if key.ends_with("id") && v.parse::<i64>().is_ok() => json!(v.parse::<i64>()?),
        v => Json::String(v.to_owned()),
    };
    Ok((key.to_owned(), value))
}

/// What `drain` asks for.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    /// Why.
    pub note: String,
    /// When it ends by itself.
    pub until: Option<String>,
    /// Shut the master's workers down gracefully through Buildbot.
    pub graceful: bool,
    /// Follow its progress until no worker is connected to it, checking
    /// this often.
    pub watch: Option<Duration>,
}

/// `drain MASTER -m NOTE [--until T] [--graceful] [--watch]`.
pub async fn drain(api: &dyn AdminApi, term: &mut Term<'_>, nickname: &str, d: &Drain) -> anyhow::Result<()> {
    let body = json!({"note": d.note, "until": d.until, "graceful": d.graceful});
    let answer = api.act(Table::Masters, nickname, "drain", body).await?;
    let hold = &answer["hold"];
    let until = hold["until"]
        .as_str()
        .map(|u| format!(" until {u}"))
        .unwrap_or_default();
    let how = if d.graceful { " gracefully" } else { "" };
    writeln!(term.err, "Master '{nickname}' drained{how}{until}: {}", d.note)?;
    super::api::list_slaves_on(api, term, nickname).await?;
    let Some(every) = d.watch else { return Ok(()) };
    let mut last = None;
    loop {
        let status = api.drain_status(nickname).await?;
        if status["hold"].is_null() {
            writeln!(term.err, "The drain of '{nickname}' has ended.")?;
            return Ok(());
        }
        let Some(connected) = status["progress"]["connected"].as_u64() else {
            bail!("--watch needs the daemon's live state ([poll] enabled): it is what says who is connected");
        };
        if last != Some(connected) {
            writeln!(term.err, "{connected} worker(s) still connected to '{nickname}'")?;
            last = Some(connected);
        }
        if connected == 0 {
            writeln!(term.err, "No worker is connected to '{nickname}' any more.")?;
            return Ok(());
        }
        tokio::time::sleep(every).await;
    }
}

/// `undrain MASTER`: enables it again and ends its drain.
pub async fn undrain(api: &dyn AdminApi, term: &mut Term<'_>, nickname: &str) -> anyhow::Result<()> {
    let answer = api.act(Table::Masters, nickname, "undrain", json!({})).await?;
    match answer["ended"].as_array().and_then(|e| e.first()) {
        Some(hold) => writeln!(
            term.err,
            "Master '{nickname}' undrained (drained by {} since {}: {})",
            hold["actor"].as_str().unwrap_or_default(),
            hold["started"].as_str().unwrap_or_default(),
            hold["note"].as_str().unwrap_or_default()
        )?,
        None => writeln!(term.err, "Master '{nickname}' is enabled; it was not drained")?,
    }
    Ok(())
}

/// `enable`/`disable SLAVE [-m MSG]` for one slave, with the original's
/// messages (its previous notes, "already disabled"), through the same
/// bulk write as many slaves.
pub async fn set_enabled_one(
    api: &dyn AdminApi,
    term: &mut Term<'_>,
    slave: &str,
    write: &BulkWrite,
) -> anyhow::Result<()> {
    let enabled = write.set.get("enabled") == Some(&Json::Bool(true));
    let word = if enabled { "enabled" } else { "disabled" };
    let name = slavealloc_domain::SlaveName::parse(slave).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(row) = api.find(Table::Slaves, name.as_str()).await? else {
        bail!("No slave found named '{name}'.");
    };
    if enabled && write.note.is_none() {
        writeln!(term.err, "NOTE: not clearing slave notes")?;
    }
    if let Some(notes) = row.get("notes").and_then(Value::as_text).filter(|n| !n.is_empty()) {
        writeln!(term.err, "previous slave notes: '{notes}'")?;
    }
    // Already so, and nothing else asked: nothing to write (no token needed).
    let is_enabled = matches!(row.get("enabled"), Some(Value::Bool(true)) | Some(Value::Int(1)));
    if is_enabled == enabled && write.note.is_none() && write.until.is_none() && !enabled {
        writeln!(term.err, "{name} is already {word}")?;
        return Ok(());
    }
    let sel = Selection {
        names: vec![name.to_string()],
        ..Selection::default()
    };
    let report = bulk_report(api, &sel, write).await?;
    let changed = report["changed"].as_array().is_some_and(|c| !c.is_empty());
    if changed {
        writeln!(term.err, "{name} {word}")?;
    } else {
        writeln!(term.err, "{name} is already {word}")?;
    }
    if let Some(until) = &write.until {
        writeln!(term.err, "{name} comes back by itself at the end ({until})")?;
    }
    Ok(())
}

/// The slave notes `-m` replaces, as the original's `enable`/`disable -m`
/// did, beside `enabled`.
pub fn enabled_write(enabled: bool, message: Option<String>, until: Option<String>, dry_run: bool) -> BulkWrite {
    let mut set = Map::new();
    set.insert("enabled".into(), Json::Bool(enabled));
    if let Some(m) = &message {
        set.insert("notes".into(), Json::String(m.clone()));
    }
    BulkWrite {
        set,
        note: message,
        until,
        dry_run,
    }
}
