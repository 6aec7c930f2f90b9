//! `dbimport`: slaves, masters and passwords from the original's CSV files
//! (and its `production-masters.json`), lookup names created on the fly.
//!
//! The whole import is planned in memory against an export of the current
//! database, every row checked as the REST API would check it, and written
//! with one [`DumpStore::append`], one transaction: a bad row anywhere
//! aborts with its file, line and column, and nothing is written.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value as Json};
use slavealloc_domain::schema::{Changes, InputError, Row, Table, Value};
use slavealloc_domain::{Dump, DumpStore};

use super::DbArg;

/// Options of `dbimport`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).multiple(true)
    .args(["slave_data", "master_data", "master_json", "password_data"])))]
pub struct ImportArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// CSV of slaves (columns: name, basedir, distro, bitlength, purpose,
    /// datacenter, trustlevel, speed, environment, pool).
    #[arg(long)]
    pub slave_data: Option<PathBuf>,
    /// CSV of masters (columns: nickname, fqdn, http_port, pb_port,
    /// datacenter, pool); an empty http_port means none (0).
    #[arg(long, conflicts_with = "master_json")]
    pub master_data: Option<PathBuf>,
    /// JSON of masters, e.g. production-masters.json (disabled masters are
    /// skipped; datacentre scl/mv/mpt becomes scl1/mtv1/sjc1, the pool is
    /// `<first role>-<datacenter>`).
    #[arg(long)]
    pub master_json: Option<PathBuf>,
    /// CSV of passwords (columns: pool, distro, password); a distro of `*`
    /// means every distro of the pool. The pool must exist or be created by
    /// this import.
    #[arg(long)]
    pub password_data: Option<PathBuf>,
    /// Create the new slaves and masters enabled (they are disabled
    /// otherwise).
    #[arg(long)]
    pub enable: bool,
}

const SLAVE_COLUMNS: &[&str] = &[
    "name",
    "basedir",
    "distro",
    "bitlength",
    "purpose",
    "datacenter",
    "trustlevel",
    "speed",
    "environment",
    "pool",
];
const MASTER_COLUMNS: &[&str] = &["nickname", "fqdn", "http_port", "pb_port", "datacenter", "pool"];
const PASSWORD_COLUMNS: &[&str] = &["pool", "distro", "password"];

/// The CSV column that carries each lookup-backed schema column.
const SLAVE_LOOKUPS: &[(&str, Table, &str)] = &[
    ("distro", Table::Distros, "distroid"),
    ("bitlength", Table::Bitlengths, "bitsid"),
    ("purpose", Table::Purposes, "purposeid"),
    ("datacenter", Table::Datacenters, "dcid"),
    ("trustlevel", Table::Trustlevels, "trustid"),
    ("speed", Table::Speeds, "speedid"),
    ("environment", Table::Environments, "envid"),
    ("pool", Table::Pools, "poolid"),
];
const MASTER_LOOKUPS: &[(&str, Table, &str)] = &[
    ("datacenter", Table::Datacenters, "dcid"),
    ("pool", Table::Pools, "poolid"),
];

/// Where a row came from, for error messages: `file:line`, or `file,
/// master #N` for JSON.
struct Place(String);

impl Place {
    fn column(&self, column: &str, problem: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("{}: column {column:?}: {problem}", self.0)
    }
}

/// The import being planned: what the database holds and what will be
/// added.
struct Plan {
    /// Lookup table → name → id, existing and planned.
    names: HashMap<Table, HashMap<String, i64>>,
    /// The largest id per table, existing and planned.
    last_id: HashMap<Table, i64>,
    /// Unique names of slaves and masters → where they were first seen.
    taken: HashMap<(Table, String), String>,
    /// `(poolid, distroid)` of every password row → where it was seen.
    passwords: HashMap<(i64, Option<i64>), String>,
    added: BTreeMap<Table, Vec<Row>>,
    enabled: bool,
}

impl Plan {
    fn new(current: &Dump, enabled: bool) -> Self {
        let mut plan = Plan {
            names: HashMap::new(),
            last_id: HashMap::new(),
            taken: HashMap::new(),
            passwords: HashMap::new(),
            added: BTreeMap::new(),
            enabled,
        };
        for table in Table::ALL {
            let id_col = table.id_column();
            for row in current.rows(table) {
                let id = id_col.and_then(|c| row.get(c)).and_then(Value::as_int);
                if let Some(id) = id {
                    let last = plan.last_id.entry(table).or_default();
                    *last = (*last).max(id);
                }
                let name = table.name_column().and_then(|c| row.get(c)).and_then(Value::as_text);
                match (table, name, id) {
                    (t, Some(n), Some(id)) if t.is_lookup() => {
                        plan.names.entry(t).or_default().insert(n.to_owned(), id);
                    }
                    (Table::Slaves | Table::Masters, Some(n), _) => {
                        plan.taken.insert((table, n.to_owned()), "in the database".into());
                    }
                    _ => {}
                }
                if table == Table::SlavePasswords {
                    let int = |c: &str| row.get(c).and_then(Value::as_int);
                    if let Some(pool) = int("poolid") {
                        plan.passwords.insert((pool, int("distroid")), "in the database".into());
                    }
                }
            }
        }
        plan
    }

    fn next_id(&mut self, table: Table) -> i64 {
        let last = self.last_id.entry(table).or_default();
        *last += 1;
        *last
    }

    fn known(&self, table: Table, name: &str) -> Option<i64> {
        self.names.get(&table).and_then(|n| n.get(name)).copied()
    }

    /// The id of `name` in a lookup table, planning a new row when absent.
    fn lookup(&mut self, table: Table, name: &str, place: &Place, column: &str) -> anyhow::Result<i64> {
        if let Some(id) = self.known(table, name) {
            return Ok(id);
        }
        let body = json!({ "name": name });
        let mut row = parse(table, &body).map_err(|e| place.column(column, e.problem))?;
        let id = self.next_id(table);
        if let Some(id_col) = table.id_column() {
            row.insert(id_col.to_owned(), Value::Int(id));
        }
        self.names.entry(table).or_default().insert(name.to_owned(), id);
        self.added.entry(table).or_default().push(row);
        Ok(id)
    }

    /// Claims a unique name, refusing one the database or this import
    /// already has.
    fn claim(&mut self, table: Table, name: &str, place: &Place, column: &str) -> anyhow::Result<()> {
        let what = if table == Table::Slaves { "slave" } else { "master" };
        if let Some(first) = self.taken.get(&(table, name.to_owned())) {
            return Err(place.column(column, format!("{what} {name:?} already exists ({first})")));
        }
        self.taken.insert((table, name.to_owned()), format!("at {}", place.0));
        Ok(())
    }

    fn add(&mut self, table: Table, mut row: Row) {
        if let Some(id_col) = table.id_column() {
            let id = self.next_id(table);
            row.insert(id_col.to_owned(), Value::Int(id));
        }
        self.added.entry(table).or_default().push(row);
    }

    fn slave(&mut self, place: &Place, fields: &HashMap<String, String>) -> anyhow::Result<()> {
        let mut body = Map::new();
        body.insert("name".into(), json!(fields["name"]));
        body.insert("basedir".into(), json!(fields["basedir"]));
        body.insert("enabled".into(), json!(self.enabled));
        for (csv_col, table, column) in SLAVE_LOOKUPS {
            let id = self.lookup(*table, &fields[*csv_col], place, csv_col)?;
            body.insert((*column).into(), json!(id));
        }
        let row = parse(Table::Slaves, &Json::Object(body)).map_err(|e| place.column(csv_column(&e), &e.problem))?;
        let name = row.get("name").and_then(Value::as_text).unwrap_or_default().to_owned();
        self.claim(Table::Slaves, &name, place, "name")?;
        self.add(Table::Slaves, row);
        Ok(())
    }

    fn master(&mut self, place: &Place, fields: &HashMap<String, String>) -> anyhow::Result<()> {
        let http_port = match fields["http_port"].as_str() {
            "" => "0",
            p => p,
        };
        let mut body = Map::new();
        body.insert("nickname".into(), json!(fields["nickname"]));
        body.insert("fqdn".into(), json!(fields["fqdn"]));
        body.insert("http_port".into(), json!(http_port));
        body.insert("pb_port".into(), json!(fields["pb_port"]));
        body.insert("enabled".into(), json!(self.enabled));
        for (csv_col, table, column) in MASTER_LOOKUPS {
            let id = self.lookup(*table, &fields[*csv_col], place, csv_col)?;
            body.insert((*column).into(), json!(id));
        }
        let row = parse(Table::Masters, &Json::Object(body)).map_err(|e| place.column(csv_column(&e), &e.problem))?;
        self.claim(Table::Masters, &fields["nickname"], place, "nickname")?;
        self.add(Table::Masters, row);
        Ok(())
    }

    fn password(&mut self, place: &Place, fields: &HashMap<String, String>) -> anyhow::Result<()> {
        let pool = &fields["pool"];
        let poolid = self
            .known(Table::Pools, pool)
            .ok_or_else(|| place.column("pool", format!("unknown pool {pool:?}")))?;
        let distro = &fields["distro"];
        let distroid = match distro.as_str() {
            "*" => None,
            d => Some(
                self.known(Table::Distros, d)
                    .ok_or_else(|| place.column("distro", format!("unknown distro {d:?} (use * for every distro)")))?,
            ),
        };
        if let Some(first) = self.passwords.get(&(poolid, distroid)) {
            return Err(place.column(
                "distro",
                format!("pool {pool:?} already has a password for distro {distro:?} ({first})"),
            ));
        }
        let body = json!({"poolid": poolid, "distroid": distroid, "password": fields["password"]});
        let row = parse(Table::SlavePasswords, &body).map_err(|e| place.column(csv_column(&e), &e.problem))?;
        self.passwords.insert((poolid, distroid), format!("at {}", place.0));
        self.add(Table::SlavePasswords, row);
        Ok(())
    }

    fn count(&self, table: Table) -> usize {
        self.added.get(&table).map_or(0, Vec::len)
    }
}

fn parse(table: Table, body: &Json) -> Result<Row, InputError> {
    let changes: Changes = serde_json::from_value(body.clone()).unwrap_or_default();
    table.parse_insert(&changes)
}

/// The CSV column a schema column's value came from.
fn csv_column(e: &InputError) -> &str {
    let lookup = SLAVE_LOOKUPS.iter().find(|(_, _, column)| *column == e.column);
    lookup.map_or(e.column.as_str(), |(csv_col, _, _)| csv_col)
}

/// Reads a CSV file with a header row naming at least `required`; calls `f`
/// with each record's place and fields (trimmed).
fn each_record(
    path: &Path,
    required: &[&str],
    mut f: impl FnMut(&Place, &HashMap<String, String>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(file);
    let shown = path.display();
    let headers: Vec<String> = reader
        .headers()
        .with_context(|| format!("{shown}:1: cannot read the header row"))?
        .iter()
        .map(str::to_owned)
        .collect();
    if let Some(missing) = required.iter().find(|c| !headers.iter().any(|h| h == *c)) {
        bail!(
            "{shown}:1: missing column {missing:?} (the header row has: {})",
            headers.join(", ")
        );
    }
    let progress = progress_bar(size);
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, csv::Position::line);
            anyhow!("{shown}:{line}: {e}")
        })?;
        let (line, byte) = record.position().map_or((0, 0), |p| (p.line(), p.byte()));
        let place = Place(format!("{shown}:{line}"));
        let fields: HashMap<String, String> = headers
            .iter()
            .zip(record.iter())
            .map(|(h, v)| (h.clone(), v.to_owned()))
            .collect();
        f(&place, &fields)?;
        progress.set_position(byte);
    }
    progress.finish_and_clear();
    Ok(())
}

/// A progress bar on stderr for a large file, when stderr is a terminal;
/// otherwise one that draws nothing.
fn progress_bar(bytes: u64) -> ProgressBar {
    if bytes < 256 * 1024 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(bytes);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes}") {
        bar.set_style(style);
    }
    bar.set_message("dbimport");
    bar
}

/// The releng-specific reading of production-masters.json, as the
/// original's: enabled masters only, IT datacenter names, pool
/// `<first role>-<datacenter>`.
fn each_json_master(
    path: &Path,
    mut f: impl FnMut(&Place, &HashMap<String, String>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {shown}"))?;
    let masters: Vec<Map<String, Json>> =
        serde_json::from_str(&text).with_context(|| format!("{shown}: not a JSON list of masters"))?;
    for (i, m) in masters.iter().enumerate() {
        let name = m.get("name").and_then(Json::as_str).unwrap_or("?");
        let place = Place(format!("{shown}, master #{} ({name})", i + 1));
        if m.get("enabled").and_then(Json::as_bool) == Some(false) {
            continue;
        }
        let string = |key: &str| -> anyhow::Result<String> {
            match m.get(key) {
                Some(Json::String(s)) => Ok(s.clone()),
                Some(Json::Number(n)) => Ok(n.to_string()),
                Some(Json::Null) | None if key == "http_port" => Ok(String::new()),
                _ => Err(place.column(key, "is missing or not a string or number")),
            }
        };
        let datacentre = string("datacentre")?;
        let datacenter = match datacentre.as_str() {
            "scl" => "scl1",
            "mv" => "mtv1",
            "mpt" => "sjc1",
            other => {
                return Err(place.column(
                    "datacentre",
                    format!("unknown datacentre {other:?} (known: scl, mv, mpt)"),
                ))
            }
        };
        let role = m
            .get("roles")
            .and_then(Json::as_array)
            .and_then(|r| r.first())
            .and_then(Json::as_str)
            .ok_or_else(|| place.column("roles", "has no first role"))?;
        let fields = HashMap::from([
            ("nickname".to_owned(), string("name")?),
            (
                "fqdn".to_owned(),
                string("hostname")?.replace("build.scl1.mozilla.com", "build.mozilla.org"),
            ),
            ("http_port".to_owned(), string("http_port")?),
            ("pb_port".to_owned(), string("pb_port")?),
            ("datacenter".to_owned(), datacenter.to_owned()),
            ("pool".to_owned(), format!("{role}-{datacenter}")),
        ]);
        f(&place, &fields)?;
    }
    Ok(())
}

/// Runs `dbimport`.
///
/// # Errors
/// The first bad row (file, line, column), or the store's refusal; nothing
/// is written in either case.
pub async fn dbimport(store: &dyn DumpStore, args: &ImportArgs, err: &mut dyn Write) -> anyhow::Result<()> {
    let current = store.export().await.context("reading the database")?;
    let mut plan = Plan::new(&current, args.enable);
    // Masters and slaves first: a password row may name a pool they create.
    if let Some(path) = &args.master_data {
        each_record(path, MASTER_COLUMNS, |place, fields| plan.master(place, fields))?;
    }
    if let Some(path) = &args.master_json {
        each_json_master(path, |place, fields| plan.master(place, fields))?;
    }
    if let Some(path) = &args.slave_data {
        each_record(path, SLAVE_COLUMNS, |place, fields| plan.slave(place, fields))?;
    }
    if let Some(path) = &args.password_data {
        each_record(path, PASSWORD_COLUMNS, |place, fields| plan.password(place, fields))?;
    }
    let mut dump = Dump::default();
    for (table, rows) in &plan.added {
        dump.tables.insert(*table, rows.clone());
    }
    store
        .append(&dump)
        .await
        .context("the database refused the import; nothing was written")?;
    let lookups: usize = Table::LOOKUPS.iter().map(|t| plan.count(*t)).sum();
    writeln!(
        err,
        "dbimport: added {} masters, {} slaves, {} passwords and {lookups} lookup names ({})",
        plan.count(Table::Masters),
        plan.count(Table::Slaves),
        plan.count(Table::SlavePasswords),
        if args.enable {
            "enabled"
        } else {
            "disabled: use --enable to import them enabled"
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use slavealloc_store_memory::MemoryStore;

    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/import")
    }

    fn args(slaves: Option<&str>, masters: Option<&str>, passwords: Option<&str>) -> ImportArgs {
        let path = |f: Option<&str>| f.map(|f| fixtures().join(f));
        ImportArgs {
            db: DbArg { db: String::new() },
            slave_data: path(slaves),
            master_data: path(masters),
            master_json: None,
            password_data: path(passwords),
            enable: false,
        }
    }

    async fn import(store: &MemoryStore, a: &ImportArgs) -> anyhow::Result<()> {
        dbimport(store, a, &mut Vec::new()).await
    }

    #[tokio::test]
    async fn imports_rows_with_lookups_created_and_disabled_by_default() {
        let store = MemoryStore::new();
        import(
            &store,
            &args(Some("slaves.csv"), Some("masters.csv"), Some("passwords.csv")),
        )
        .await
        .unwrap();
        let dump = store.export().await.unwrap();
        let slaves = dump.rows(Table::Slaves);
        assert_eq!(slaves.len(), 4);
        assert!(slaves.iter().all(|s| s["enabled"] == Value::Bool(false)));
        assert_eq!(slaves[0]["name"], Value::Text("tst-linux64-01".into()));
        assert_eq!(slaves[0]["current_masterid"], Value::Null);
        let masters = dump.rows(Table::Masters);
        assert_eq!(masters.len(), 3);
        assert_eq!(masters[2]["http_port"], Value::Int(0), "an empty http_port is none");
        let passwords = dump.rows(Table::SlavePasswords);
        assert!(
            passwords.iter().any(|p| p["distroid"] == Value::Null),
            "* is every distro"
        );
        assert_eq!(dump.rows(Table::Pools).len(), 2);

        // A second import adds to the first, ids continuing.
        import(&store, &args(Some("more-slaves.csv"), None, None))
            .await
            .unwrap();
        let dump = store.export().await.unwrap();
        assert_eq!(dump.rows(Table::Slaves).last().unwrap()["slaveid"], Value::Int(5));
    }

    #[tokio::test]
    async fn a_bad_row_names_file_line_and_column_and_writes_nothing() {
        let store = MemoryStore::new();
        import(
            &store,
            &args(Some("slaves.csv"), Some("masters.csv"), Some("passwords.csv")),
        )
        .await
        .unwrap();
        let before = store.export().await.unwrap();
        let cases: &[(ImportArgs, &str)] = &[
            (
                args(Some("bad/missing-column.csv"), None, None),
                "missing-column.csv:1: missing column \"basedir\"",
            ),
            (
                args(Some("bad/duplicate-name.csv"), None, None),
                "duplicate-name.csv:3: column \"name\": slave \"tst-new-01\" already exists (at ",
            ),
            (
                args(Some("slaves.csv"), None, None),
                "slaves.csv:2: column \"name\": slave \"tst-linux64-01\" already exists (in the database)",
            ),
            (
                args(None, Some("bad/port.csv"), None),
                "port.csv:3: column \"pb_port\": must be an integer",
            ),
            (
                args(None, None, Some("bad/unknown-pool.csv")),
                "unknown-pool.csv:2: column \"pool\": unknown pool \"nosuch-pool\"",
            ),
            (
                args(Some("bad/qualified-name.csv"), None, None),
                "qualified-name.csv:3: column \"name\": slave name \"tst-new-02.build.example.com\" contains '.'",
            ),
            (args(Some("bad/short-row.csv"), None, None), "short-row.csv:3: "),
        ];
        for (a, want) in cases {
            let e = format!("{:#}", import(&store, a).await.unwrap_err());
            assert!(e.contains(want), "{e}\nshould contain\n{want}");
            assert_eq!(store.export().await.unwrap(), before, "{want}: nothing written");
        }
    }

    #[tokio::test]
    async fn production_masters_json_is_read_as_the_original_did() {
        let store = MemoryStore::new();
        let mut a = args(None, None, None);
        a.master_json = Some(fixtures().join("production-masters.json"));
        a.enable = true;
        import(&store, &a).await.unwrap();
        let dump = store.export().await.unwrap();
        let masters = dump.rows(Table::Masters);
        assert_eq!(masters.len(), 2, "the disabled master is skipped");
        assert_eq!(
            masters[0]["fqdn"],
            Value::Text("buildbot-master01.build.mozilla.org".into())
        );
        assert_eq!(masters[0]["enabled"], Value::Bool(true));
        let pools: Vec<_> = dump.rows(Table::Pools).iter().map(|p| p["name"].clone()).collect();
        assert_eq!(
            pools,
            [Value::Text("build-scl1".into()), Value::Text("tests-mtv1".into())]
        );
    }
}
