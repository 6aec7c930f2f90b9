//! The page handlers: read through the inventory's store, shape what the
//! templates show, render. Nothing here writes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use slavealloc_domain::inventory::DECOMMISSIONED_ENVIRONMENT;
use slavealloc_domain::schema::Kind;
use slavealloc_domain::{reports, AuditEntry, AuditQuery, Row, SlaveFilter, StoreError, Table, Value};
use warp::http::StatusCode;
use warp::reply::Response;

use crate::view::{display, href, natural_cmp, query, sort_rows, sorted_indices, Cell, Paging, Params, TextFilter};
use crate::Ui;

/// The slaves table's columns: (row key, header).
const SLAVE_COLUMNS: &[(&str, &str)] = &[
    ("name", "name"),
    ("distro", "distro"),
    ("bitlength", "bits"),
    ("speed", "speed"),
    ("datacenter", "DC"),
    ("trustlevel", "trust"),
    ("environment", "env"),
    ("purpose", "purpose"),
    ("pool", "pool"),
    ("current_master", "current master"),
    ("locked_master", "locked to"),
    ("notes", "notes"),
    ("enabled", "enabled"),
];

/// What the slaves' text filter searches: every column shown, and basedir.
const SLAVE_SEARCHED: &[&str] = &[
    "name",
    "distro",
    "bitlength",
    "speed",
    "datacenter",
    "trustlevel",
    "environment",
    "purpose",
    "pool",
    "current_master",
    "locked_master",
    "notes",
    "basedir",
];

const MASTER_COLUMNS: &[(&str, &str)] = &[
    ("nickname", "nickname"),
    ("fqdn", "web page"),
    ("pb_port", "pb port"),
    ("datacenter", "DC"),
    ("pool", "pool"),
    ("slaves", "slaves now"),
    ("locked", "locked"),
    ("notes", "notes"),
    ("enabled", "enabled"),
];

const MASTER_SEARCHED: &[&str] = &["nickname", "fqdn", "datacenter", "pool", "notes"];

/// Page sizes the slaves list offers.
const PAGE_SIZES: [usize; 4] = [50, 100, 250, 500];

/// The audit page's default and largest number of entries.
const AUDIT_DEFAULT: u32 = 100;
const AUDIT_MAX: u32 = 1000;

fn store_error(ui: &Ui, e: &StoreError) -> Response {
    tracing::warn!(error = %e, "a UI page could not read the database");
    let (status, title) = match e {
        StoreError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "The database did not answer"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "The database gave an error"),
    };
    ui.error(status, title, &e.to_string())
}

/// Unwraps a store result; an error ends the page with an error page.
macro_rules! try_page {
    ($ui:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return store_error($ui, &e),
        }
    };
}

fn text<'a>(row: &'a Row, key: &str) -> &'a str {
    row.get(key).and_then(Value::as_text).unwrap_or_default()
}

fn int(row: &Row, key: &str) -> Option<i64> {
    row.get(key).and_then(Value::as_int)
}

fn ui_path(ui: &Ui, page: &str) -> String {
    format!("{}/ui/{page}", ui.base)
}

/// Id → name of every row of the lookup tables, the masters (nickname) and
/// the templates: what the inline editors offer in their select boxes and
/// what the audit page names references by.
#[derive(Debug, Default, Serialize)]
struct Lookups(BTreeMap<&'static str, Vec<Choice>>);

#[derive(Debug, Clone, Serialize)]
struct Choice {
    id: i64,
    name: String,
    /// Masters only: the pool, so that the lock editor lists the slave's
    /// own pool's masters first.
    #[serde(skip_serializing_if = "Option::is_none")]
    poolid: Option<i64>,
    /// Masters only.
    #[serde(skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
}

impl Lookups {
    async fn load(ui: &Ui, tables: &[Table]) -> Result<Self, StoreError> {
        let mut map = BTreeMap::new();
        for &table in tables {
            let (Some(id_col), Some(name_col)) = (table.id_column(), table.name_column()) else {
                continue;
            };
            let mut choices: Vec<Choice> = ui
                .inventory
                .store()
                .list(table)
                .await?
                .iter()
                .filter_map(|r| {
                    Some(Choice {
                        id: int(r, id_col)?,
                        name: r.get(name_col)?.as_text()?.to_owned(),
                        poolid: (table == Table::Masters).then(|| int(r, "poolid")).flatten(),
                        enabled: (table == Table::Masters).then(|| r.get("enabled") == Some(&Value::Bool(true))),
                    })
                })
                .collect();
            choices.sort_by(|a, b| natural_cmp(&a.name, &b.name));
            map.insert(table.name(), choices);
        }
        Ok(Self(map))
    }

    fn names(&self, table: Table) -> Vec<String> {
        self.0
            .get(table.name())
            .map(|c| c.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default()
    }

    fn name_of(&self, table: Table, id: i64) -> Option<&str> {
        self.0
            .get(table.name())?
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.name.as_str())
    }
}

/// Everything a slave editor may offer.
const SLAVE_LOOKUPS: &[Table] = &[
    Table::Distros,
    Table::Bitlengths,
    Table::Speeds,
    Table::Purposes,
    Table::Datacenters,
    Table::Trustlevels,
    Table::Environments,
    Table::Pools,
    Table::Masters,
    Table::TacTemplates,
];

/// Resolves the names a slave row refers to, on demand. The store lists
/// plain rows; naming all 10,000 of them up front (as the REST API's
/// denormalized list does) costs more than the rest of the page, so only
/// the rows shown are denormalized.
struct SlaveNames {
    /// (label, column, id → name) per labelled reference of `slaves`.
    refs: Vec<(&'static str, &'static str, HashMap<i64, String>)>,
}

impl SlaveNames {
    /// From lookups holding every table in [`SLAVE_LOOKUPS`].
    fn new(lookups: &Lookups) -> Self {
        let refs = Table::Slaves
            .columns()
            .iter()
            .filter_map(|c| match (c.kind, c.label) {
                (Kind::Ref(target), Some(label)) => {
                    let names = lookups
                        .0
                        .get(target.name())
                        .map(|cs| cs.iter().map(|c| (c.id, c.name.clone())).collect())
                        .unwrap_or_default();
                    Some((label, c.name, names))
                }
                _ => None,
            })
            .collect();
        Self { refs }
    }

    /// What the slaves table shows under `key`: a reference's name by its
    /// label (`pool`, `current_master`, ...), else the row's own column.
    fn cell<'a>(&'a self, row: &'a Row, key: &str) -> Cell<'a> {
        match self.refs.iter().find(|(label, _, _)| *label == key) {
            Some((_, column, names)) => int(row, column)
                .and_then(|id| names.get(&id))
                .map_or(Cell::Null, |n| Cell::Text(n)),
            None => Cell::from(row.get(key)),
        }
    }

    /// A copy of the row with every reference's name added under its label,
    /// as `GET /api/slaves` has it.
    fn denormalize(&self, row: &Row) -> Row {
        let mut out = row.clone();
        for (label, _, _) in &self.refs {
            let name = match self.cell(row, label) {
                Cell::Text(n) => Value::Text(n.to_owned()),
                _ => Value::Null,
            };
            out.insert((*label).to_owned(), name);
        }
        out
    }
}

#[derive(Debug, Serialize)]
struct ColumnHead {
    key: &'static str,
    label: &'static str,
    href: String,
    /// `"asc"`, `"desc"` or `""`.
    sorted: &'static str,
}

fn column_heads(
    columns: &[(&'static str, &'static str)],
    sort: &str,
    desc: bool,
    link: impl Fn(&str, bool) -> String,
) -> Vec<ColumnHead> {
    columns
        .iter()
        .map(|&(key, label)| {
            let current = key == sort;
            ColumnHead {
                key,
                label,
                // A second click on the sorted column reverses it.
                href: link(key, current && !desc),
                sorted: match (current, desc) {
                    (false, _) => "",
                    (true, false) => "asc",
                    (true, true) => "desc",
                },
            }
        })
        .collect()
}

fn sort_key(p: &Params, columns: &[(&'static str, &'static str)], default: &'static str) -> &'static str {
    p.get("sort")
        .and_then(|s| columns.iter().find(|(k, _)| *k == s))
        .map_or(default, |(k, _)| k)
}

/// Exact-match filters of the slaves page beyond the select boxes, as
/// (query parameter, row key): the silo report links to a pool × silo's
/// slaves with them, and the masters page to a master's slaves.
const EXACT_FILTERS: &[(&str, &str)] = &[
    ("distro", "distro"),
    ("bitlength", "bitlength"),
    ("speed", "speed"),
    ("datacenter", "datacenter"),
    ("trustlevel", "trustlevel"),
    ("master", "current_master"),
    ("locked", "locked_master"),
];

/// The slaves page's query: what is filtered, how it is sorted, which page.
#[derive(Debug, Clone)]
struct SlaveQuery {
    q: String,
    pool: String,
    environment: String,
    purpose: String,
    /// `""`, `"yes"` or `"no"`.
    enabled: String,
    /// Values of [`EXACT_FILTERS`], in its order (empty: no filter).
    exact: Vec<String>,
    decomm: bool,
    sort: &'static str,
    desc: bool,
    page: usize,
    per: usize,
}

impl SlaveQuery {
    fn parse(p: &Params) -> Self {
        let enabled = match p.get("enabled") {
            Some("yes" | "1" | "true") => "yes",
            Some("no" | "0" | "false") => "no",
            _ => "",
        };
        Self {
            q: p.text("q"),
            pool: p.text("pool"),
            environment: p.text("environment"),
            purpose: p.text("purpose"),
            enabled: enabled.into(),
            exact: EXACT_FILTERS.iter().map(|(param, _)| p.text(param)).collect(),
            decomm: p.flag("decomm"),
            sort: sort_key(p, SLAVE_COLUMNS, "name"),
            desc: p.get("dir") == Some("desc"),
            page: p.number("page").unwrap_or(1),
            per: p.number("per").filter(|n| PAGE_SIZES.contains(n)).unwrap_or(100),
        }
    }

    /// The query string of this view with another sort and page, and
    /// without the exact filter at index `drop` (for a chip's remove link).
    fn link_without(&self, sort: &str, desc: bool, page: usize, drop: Option<usize>) -> String {
        let page = if page > 1 { page.to_string() } else { String::new() };
        let per = if self.per == 100 {
            String::new()
        } else {
            self.per.to_string()
        };
        let mut pairs = vec![
            ("q", self.q.as_str()),
            ("pool", &self.pool),
            ("environment", &self.environment),
            ("purpose", &self.purpose),
            ("enabled", &self.enabled),
        ];
        for (i, ((param, _), value)) in EXACT_FILTERS.iter().zip(&self.exact).enumerate() {
            if Some(i) != drop {
                pairs.push((param, value));
            }
        }
        pairs.extend([
            ("decomm", if self.decomm { "1" } else { "" }),
            ("sort", if sort == "name" { "" } else { sort }),
            ("dir", if desc { "desc" } else { "" }),
            ("per", &per),
            ("page", &page),
        ]);
        query(&pairs)
    }

    fn link(&self, sort: &str, desc: bool, page: usize) -> String {
        self.link_without(sort, desc, page, None)
    }

    /// Whether a row passes every filter but the text filter.
    fn keeps(&self, row: &Row, names: &SlaveNames) -> bool {
        let is = |key: &str, want: &str| want.is_empty() || names.cell(row, key) == Cell::Text(want);
        let decomm = names.cell(row, "environment") == Cell::Text(DECOMMISSIONED_ENVIRONMENT);
        // Asking for the decommissioned environment by name shows it.
        (!decomm || self.decomm || !self.environment.is_empty())
            && is("pool", &self.pool)
            && is("environment", &self.environment)
            && is("purpose", &self.purpose)
            && match self.enabled.as_str() {
                "yes" => row.get("enabled") == Some(&Value::Bool(true)),
                "no" => row.get("enabled") == Some(&Value::Bool(false)),
                _ => true,
            }
            && EXACT_FILTERS
                .iter()
                .zip(&self.exact)
                .all(|((_, key), want)| is(key, want))
    }

    fn is_filtered(&self) -> bool {
        !(self.q.is_empty()
            && self.pool.is_empty()
            && self.environment.is_empty()
            && self.purpose.is_empty()
            && self.enabled.is_empty()
            && self.exact.iter().all(String::is_empty))
    }
}

/// An active exact filter, shown as a removable chip.
#[derive(Debug, Serialize)]
struct Chip {
    param: &'static str,
    value: String,
    remove_href: String,
}

#[derive(Debug, Serialize)]
struct Pager {
    first: Option<String>,
    prev: Option<String>,
    next: Option<String>,
    last: Option<String>,
}

/// `GET /ui/slaves`.
pub(crate) async fn slaves(ui: &Ui, raw: &str) -> Response {
    let sq = SlaveQuery::parse(&Params::parse(raw));
    let all = try_page!(ui, ui.inventory.store().list(Table::Slaves).await);
    let lookups = try_page!(ui, Lookups::load(ui, SLAVE_LOOKUPS).await);
    let names = SlaveNames::new(&lookups);

    let text_filter = TextFilter::new(&sq.q);
    let matching: Vec<&Row> = all
        .iter()
        .filter(|r| {
            sq.keeps(r, &names)
                && (text_filter.is_empty()
                    || text_filter.matches_cells(SLAVE_SEARCHED.iter().map(|k| names.cell(r, k))))
        })
        .collect();
    let order = sorted_indices(
        &matching,
        |r| names.cell(r, sq.sort),
        |r| Cell::from(r.get("name")),
        sq.desc,
    );
    let paging = Paging::new(matching.len(), sq.per, sq.page);
    let enabled = matching
        .iter()
        .filter(|r| r.get("enabled") == Some(&Value::Bool(true)))
        .count();
    let rows: Vec<Row> = order[paging.range()]
        .iter()
        .map(|&i| names.denormalize(matching[i]))
        .collect();

    let path = ui_path(ui, "slaves");
    let at = |page: usize| href(&path, &sq.link(sq.sort, sq.desc, page));
    let pager = Pager {
        first: (paging.page > 1).then(|| at(1)),
        prev: (paging.page > 1).then(|| at(paging.page - 1)),
        next: (paging.page < paging.pages).then(|| at(paging.page + 1)),
        last: (paging.page < paging.pages).then(|| at(paging.pages)),
    };
    let columns = column_heads(SLAVE_COLUMNS, sq.sort, sq.desc, |k, d| href(&path, &sq.link(k, d, 1)));
    // After a drain the list shows a disabled master's slaves: say what
    // happens to them.
    let master = EXACT_FILTERS
        .iter()
        .zip(&sq.exact)
        .find(|((param, _), _)| *param == "master")
        .map_or("", |(_, v)| v.as_str());
    let notice = lookups
        .0
        .get(Table::Masters.name())
        .and_then(|ms| ms.iter().find(|m| !master.is_empty() && m.name == master))
        .filter(|m| m.enabled == Some(false))
        .map(|m| {
            format!(
                "{} is disabled: the allocator gives it no more slaves, and these move to another master of their \
                 pool when they next reboot (unless locked to it).",
                m.name
            )
        });
    let chips: Vec<Chip> = EXACT_FILTERS
        .iter()
        .zip(&sq.exact)
        .enumerate()
        .filter(|(_, (_, v))| !v.is_empty())
        .map(|(i, ((param, _), value))| Chip {
            param,
            value: value.clone(),
            remove_href: href(&path, &sq.link_without(sq.sort, sq.desc, 1, Some(i))),
        })
        .collect();
    let ctx = minijinja::context! {
        page => "slaves",
        title => "Slaves",
        rows => rows,
        columns => columns,
        paging => paging,
        pager => pager,
        matching_enabled => enabled,
        filtered => sq.is_filtered(),
        chips => chips,
        notice => notice,
        clear_href => path,
        f => minijinja::context! {
            q => sq.q, pool => sq.pool, environment => sq.environment, purpose => sq.purpose,
            enabled => sq.enabled, decomm => sq.decomm,
            sort => if sq.sort == "name" { "" } else { sq.sort }, dir => if sq.desc { "desc" } else { "" },
            per => sq.per,
        },
        page_sizes => PAGE_SIZES,
        options => minijinja::context! {
            pools => lookups.names(Table::Pools),
            environments => lookups.names(Table::Environments),
            purposes => lookups.names(Table::Purposes),
        },
        lookups => lookups,
    };
    ui.render(StatusCode::OK, "slaves.html", ctx)
}

/// How many slaves have each master as current and as locked master.
async fn slaves_per_master(ui: &Ui) -> Result<(HashMap<i64, u64>, HashMap<i64, u64>), StoreError> {
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
    let p = Params::parse(raw);
    let q = p.text("q");
    let pool = p.text("pool");
    let sort = sort_key(&p, MASTER_COLUMNS, "nickname");
    let desc = p.get("dir") == Some("desc");
    let mut rows = try_page!(ui, ui.inventory.list(Table::Masters, &SlaveFilter::default()).await);
    let (current, locked) = try_page!(ui, slaves_per_master(ui).await);
    let lookups = try_page!(ui, Lookups::load(ui, &[Table::Datacenters, Table::Pools]).await);
    let total = rows.len();

    for r in &mut rows {
        let id = int(r, "masterid").unwrap_or_default();
        let count = |m: &HashMap<i64, u64>| Value::Int(m.get(&id).copied().unwrap_or(0).try_into().unwrap_or(i64::MAX));
        r.insert("slaves".into(), count(&current));
        r.insert("locked".into(), count(&locked));
        let port = int(r, "http_port").unwrap_or(0);
        let web = (port != 0).then(|| Value::Text(format!("http://{}:{port}", text(r, "fqdn"))));
        r.insert("web".into(), web.unwrap_or(Value::Null));
    }
    let text_filter = TextFilter::new(&q);
    rows.retain(|r| text_filter.matches(r, MASTER_SEARCHED) && (pool.is_empty() || text(r, "pool") == pool));
    sort_rows(&mut rows, sort, desc, "nickname");

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
    let columns = column_heads(MASTER_COLUMNS, sort, desc, link);
    let ctx = minijinja::context! {
        page => "masters",
        title => "Masters",
        rows => rows,
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
    };
    ui.render(StatusCode::OK, "masters.html", ctx)
}

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

#[derive(Debug, Default, Serialize)]
struct PoolSummary {
    pool: String,
    slaves: u64,
    enabled: u64,
    on_master: u64,
    masters: u64,
    masters_enabled: u64,
    allocated_last_hour: u64,
    href: String,
}

/// `GET /ui/` — the dashboard.
pub(crate) async fn dashboard(ui: &Ui) -> Response {
    let slaves = try_page!(ui, ui.inventory.store().list(Table::Slaves).await);
    let masters = try_page!(ui, ui.inventory.store().list(Table::Masters).await);
    let lookups = try_page!(ui, Lookups::load(ui, &[Table::Pools, Table::Environments]).await);
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
    let mut per_pool: HashMap<i64, PoolSummary> = lookups
        .0
        .get(Table::Pools.name())
        .into_iter()
        .flatten()
        .map(|p| {
            let summary = PoolSummary {
                pool: p.name.clone(),
                href: href(&slaves_path, &query(&[("pool", &p.name)])),
                ..PoolSummary::default()
            };
            (p.id, summary)
        })
        .collect();
    let mut pool_of: HashMap<i64, i64> = HashMap::new();
    for s in &slaves {
        let Some(poolid) = int(s, "poolid") else { continue };
        if let Some(id) = int(s, "slaveid") {
            pool_of.insert(id, poolid);
        }
        let Some(sum) = per_pool.get_mut(&poolid) else { continue };
        sum.slaves += 1;
        sum.enabled += u64::from(is_true(s, "enabled"));
        sum.on_master += u64::from(int(s, "current_masterid").is_some());
    }
    for m in &masters {
        let Some(sum) = int(m, "poolid").and_then(|p| per_pool.get_mut(&p)) else {
            continue;
        };
        sum.masters += 1;
        sum.masters_enabled += u64::from(is_true(m, "enabled"));
    }
    for id in &allocated {
        if let Some(sum) = pool_of.get(id).and_then(|p| per_pool.get_mut(p)) {
            sum.allocated_last_hour += 1;
        }
    }
    let mut per_pool: Vec<PoolSummary> = per_pool.into_values().collect();
    per_pool.sort_by(|a, b| natural_cmp(&a.pool, &b.pool));

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

#[derive(Debug, Serialize)]
struct AuditView {
    id: i64,
    at: String,
    actor: String,
    table: String,
    row_id: i64,
    /// The row's name (slave name, master nickname, ...), when known.
    row_name: Option<String>,
    /// This row's history.
    row_href: String,
    /// `"created"`, `"deleted"`, `"changed"`, or `"allocated"` for a change
    /// of a slave's current master only.
    kind: &'static str,
    changes: Vec<Change>,
}

#[derive(Debug, Serialize)]
struct Change {
    column: String,
    old: Option<String>,
    new: Option<String>,
}

/// Reads audit entries and names what they refer to.
async fn audit_view(ui: &Ui, q: AuditQuery) -> Result<Vec<AuditView>, StoreError> {
    let entries = ui.inventory.store().audit(q).await?;
    // Name every table the entries touch or refer to, each listed once.
    let mut tables = BTreeSet::new();
    for e in &entries {
        let Ok(table) = e.entry.table_name.parse::<Table>() else {
            continue;
        };
        tables.insert(table);
        for row in [&e.entry.old_values, &e.entry.new_values].into_iter().flatten() {
            for col in row.keys() {
                if let Some(Kind::Ref(target)) = table.column(col).map(|c| c.kind) {
                    tables.insert(target);
                }
            }
        }
    }
    let tables: Vec<Table> = tables.into_iter().collect();
    let names = Lookups::load(ui, &tables).await?;
    let audit_path = ui_path(ui, "audit");

    Ok(entries.iter().map(|e| entry_view(e, &names, &audit_path)).collect())
}

fn entry_view(entry: &AuditEntry, names: &Lookups, audit_path: &str) -> AuditView {
    let e = &entry.entry;
    let table = e.table_name.parse::<Table>().ok();
    let fmt = |col: &str, v: &Value| -> String {
        let referenced = table.and_then(|t| t.column(col)).and_then(|c| match c.kind {
            Kind::Ref(target) => Some(target),
            _ => None,
        });
        match (referenced, v) {
            (Some(target), Value::Int(id)) => match names.name_of(target, *id) {
                Some(n) => format!("{n} (#{id})"),
                None => format!("#{id}"),
            },
            (_, Value::Null) => "∅".to_owned(),
            _ => display(v),
        }
    };
    let keys: BTreeSet<&String> = e
        .old_values
        .iter()
        .chain(&e.new_values)
        .flat_map(|r| r.keys())
        .collect();
    let changes: Vec<Change> = keys
        .into_iter()
        .map(|k| Change {
            column: k.clone(),
            old: e.old_values.as_ref().and_then(|r| r.get(k)).map(|v| fmt(k, v)),
            new: e.new_values.as_ref().and_then(|r| r.get(k)).map(|v| fmt(k, v)),
        })
        .collect();
    let kind = match (&e.old_values, &e.new_values) {
        (None, Some(_)) => "created",
        (Some(_), None) => "deleted",
        _ if changes.len() == 1 && changes[0].column == "current_masterid" => "allocated",
        _ => "changed",
    };
    // A deleted row is named from the values it had.
    let own_name = table.and_then(|t| {
        let name_col = t.name_column()?;
        names
            .name_of(t, e.row_id)
            .map(str::to_owned)
            .or_else(|| e.old_values.as_ref()?.get(name_col)?.as_text().map(str::to_owned))
    });
    AuditView {
        id: entry.id,
        at: e.at.clone(),
        actor: e.actor.clone(),
        table: e.table_name.clone(),
        row_id: e.row_id,
        row_name: own_name,
        row_href: href(
            audit_path,
            &query(&[("table", &e.table_name), ("row", &e.row_id.to_string())]),
        ),
        kind,
        changes,
    }
}

/// `GET /ui/audit`.
pub(crate) async fn audit(ui: &Ui, raw: &str) -> Response {
    let p = Params::parse(raw);
    let table_name = p.text("table");
    let row = p.text("row");
    let limit = p
        .number("limit")
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(AUDIT_DEFAULT)
        .clamp(1, AUDIT_MAX);
    let table = table_name.parse::<Table>().ok();
    let mut notice = None;
    if !table_name.is_empty() && table.is_none() {
        notice = Some(format!("There is no table {table_name:?}."));
    }
    // A row is an id, or a name looked up in the chosen table.
    let row_id = if row.is_empty() {
        None
    } else if let Ok(id) = row.parse::<i64>() {
        Some(id)
    } else {
        match table.filter(|t| t.name_column().is_some()) {
            Some(t) => match try_page!(ui, ui.inventory.find(t, &row).await) {
                Some(found) => t.id_column().and_then(|c| int(&found, c)),
                None => {
                    notice = Some(format!("There is no {} row named {row:?}.", t.name()));
                    None
                }
            },
            None => {
                notice = Some("To find a row by name, choose its table first.".to_owned());
                None
            }
        }
    };
    let entries = if notice.is_some() {
        Vec::new()
    } else {
        let q = AuditQuery {
            table,
            row_id,
            since: None,
            limit,
        };
        try_page!(ui, audit_view(ui, q).await)
    };
    let mut tables: Vec<&str> = Table::EXPOSED.iter().map(|t| t.name()).collect();
    tables.push(Table::SlavePasswords.name());
    let ctx = minijinja::context! {
        page => "audit",
        title => "Audit",
        entries => entries,
        tables => tables,
        notice => notice,
        f => minijinja::context! { table => table_name, row => row, limit => limit },
        limits => [50, 100, 250, 1000],
        clear_href => ui_path(ui, "audit"),
    };
    ui.render(StatusCode::OK, "audit.html", ctx)
}
