//! `GET /ui/slaves`: the filtered, sorted, paged slaves table.

use super::*;

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

/// Page sizes the slaves list offers.
const PAGE_SIZES: [usize; 4] = [50, 100, 250, 500];

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
            sort: sort_key(p, Table::Slaves.listing(), "name"),
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
    let columns = column_heads(Table::Slaves.listing(), sq.sort, sq.desc, |k, d| {
        href(&path, &sq.link(k, d, 1))
    });
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
        fields => editor_fields(Table::Slaves),
    };
    ui.render(StatusCode::OK, "slaves.html", ctx)
}
