//! `GET /ui/slaves`: the filtered, sorted, paged slaves table; with the
//! live fleet, also where each slave is connected and when it was last
//! seen, and the API's live filters. Rows can be selected (`app.js`) and
//! changed together through `POST /api/slaves/bulk`; the page gives the
//! selection the names of every matching slave, so that "select all"
//! means exactly what the filters show.

use slavealloc_domain::maintenance::MAX_BULK;

use super::live::{live_now, Judge, SlaveJudged, SlaveLiveCell, Stale};
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

/// The columns the live fleet adds, after the current master: sortable as
/// the others, though no row holds them.
const LIVE_COLUMNS: [(&str, &str); 2] = [("connected", "connected"), ("last_seen", "last seen")];

/// What the "not seen for" filter offers (`stale=`), as (value, label).
const STALE_CHOICES: [(&str, &str); 4] = [
    ("1d", "1 day"),
    ("7d", "7 days"),
    ("30d", "30 days"),
    ("never", "never seen"),
];

/// The slaves table's columns: the domain's listing, and the live ones.
fn slave_columns(live: bool) -> Vec<(&'static str, &'static str)> {
    let mut columns = Table::Slaves.listing().to_vec();
    if live {
        let at = columns
            .iter()
            .position(|(k, _)| *k == "current_master")
            .map_or(columns.len(), |i| i + 1);
        columns.splice(at..at, LIVE_COLUMNS);
    }
    columns
}

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
    /// The live filters, with the API's names and meaning (empty: none;
    /// always empty without the live fleet): `connected` is `1` or `0`,
    /// `connected_master` a nickname, `stale` an age like `7d` or `never`.
    connected: String,
    connected_master: String,
    stale: String,
    /// `stale`, parsed once for every row.
    stale_filter: Option<Stale>,
    sort: &'static str,
    desc: bool,
    page: usize,
    per: usize,
}

impl SlaveQuery {
    /// `live`: whether the live filters and columns exist; without them a
    /// hand-written `connected=1` is ignored, as any unknown parameter.
    fn parse(p: &Params, live: bool) -> Self {
        let enabled = match p.get("enabled") {
            Some("yes" | "1" | "true") => "yes",
            Some("no" | "0" | "false") => "no",
            _ => "",
        };
        let connected = match p.get("connected") {
            Some("1" | "yes" | "true") if live => "1",
            Some("0" | "no" | "false") if live => "0",
            _ => "",
        };
        let live_text = |key: &str| if live { p.text(key) } else { String::new() };
        let stale = live_text("stale");
        Self {
            q: p.text("q"),
            pool: p.text("pool"),
            environment: p.text("environment"),
            purpose: p.text("purpose"),
            enabled: enabled.into(),
            exact: EXACT_FILTERS.iter().map(|(param, _)| p.text(param)).collect(),
            decomm: p.flag("decomm"),
            connected: connected.into(),
            connected_master: live_text("connected_master"),
            // A bad age shows the page unfiltered, as a bad page number.
            stale_filter: Stale::parse(&stale),
            stale: if Stale::parse(&stale).is_some() {
                stale
            } else {
                String::new()
            },
            sort: sort_key(p, &slave_columns(live), "name"),
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
            ("connected", self.connected.as_str()),
            ("connected_master", &self.connected_master),
            ("stale", &self.stale),
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

    /// Whether a row's live facts pass the live filters (as the API's
    /// `LiveFilter`: connected means a master's last answered poll lists
    /// it; stale means not connected and not seen for the age, or never).
    fn keeps_live(&self, slave: &SlaveJudged, now: SystemTime) -> bool {
        let on = slave.connected_master();
        (match self.connected.as_str() {
            "1" => on.is_some(),
            "0" => on.is_none(),
            _ => true,
        }) && (self.connected_master.is_empty() || on == Some(self.connected_master.as_str()))
            && self.stale_filter.is_none_or(|stale| stale.keeps(slave, now))
    }

    fn has_live_filter(&self) -> bool {
        !(self.connected.is_empty() && self.connected_master.is_empty() && self.stale.is_empty())
    }

    fn is_filtered(&self) -> bool {
        !(self.q.is_empty()
            && self.pool.is_empty()
            && self.environment.is_empty()
            && self.purpose.is_empty()
            && self.enabled.is_empty()
            && self.exact.iter().all(String::is_empty)
            && !self.has_live_filter())
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
    let live = try_page!(ui, live_now(ui).await);
    let sq = SlaveQuery::parse(&Params::parse(raw), live.is_some());
    let all = try_page!(ui, ui.inventory.store().list(Table::Slaves).await);
    let lookups = try_page!(ui, Lookups::load(ui, SLAVE_LOOKUPS).await);
    let names = SlaveNames::new(&lookups);
    let judge = live.as_ref().map(|l| Judge::new(l, Judge::nicknames(&lookups)));

    let text_filter = TextFilter::new(&sq.q);
    // Each row with its live cell, judged once: the filters, the sort and
    // the page all read it.
    let matching: Vec<(&Row, Option<SlaveJudged>)> = all
        .iter()
        .filter(|r| sq.keeps(r, &names))
        .filter_map(|r| {
            let judged = judge.as_ref().and_then(|j| {
                let recorded = match names.cell(r, "current_master") {
                    Cell::Text(m) => Some(m),
                    _ => None,
                };
                j.slave(r, recorded)
            });
            if let Some(j) = &judge {
                // A row without facts (no slaveid) passes no live filter.
                let kept = judged
                    .as_ref()
                    .map_or(!sq.has_live_filter(), |s| sq.keeps_live(s, j.now));
                if !kept {
                    return None;
                }
            }
            let connected = judged.as_ref().and_then(SlaveJudged::connected_master);
            let found = text_filter.is_empty()
                || text_filter.matches_cells(
                    SLAVE_SEARCHED
                        .iter()
                        .map(|k| names.cell(r, k))
                        .chain(connected.map(Cell::Text)),
                );
            found.then_some((r, judged))
        })
        .collect();
    let order = sorted_indices(
        &matching,
        |(r, judged)| {
            judged
                .as_ref()
                .and_then(|c| c.sort_cell(sq.sort))
                .unwrap_or_else(|| names.cell(r, sq.sort))
        },
        |(r, _)| Cell::from(r.get("name")),
        sq.desc,
    );
    let paging = Paging::new(matching.len(), sq.per, sq.page);
    let enabled = matching
        .iter()
        .filter(|(r, _)| r.get("enabled") == Some(&Value::Bool(true)))
        .count();
    // "Select all matching" takes these names to the bulk API: the very
    // slaves this view lists (text and live filters included, which the
    // API's own filter cannot say), and only as many as one bulk change may
    // touch.
    let matching_names: Option<Vec<&str>> =
        (matching.len() <= MAX_BULK).then(|| order.iter().map(|&i| text(matching[i].0, "name")).collect());
    let rows: Vec<Row> = order[paging.range()]
        .iter()
        .map(|&i| names.denormalize(matching[i].0))
        .collect();
    // Beside the rows rather than in them: the rows go to the editor as
    // the API has them.
    let lives: Vec<Option<SlaveLiveCell>> = order[paging.range()]
        .iter()
        .map(|&i| Some(matching[i].1.as_ref()?.cell(judge.as_ref()?.now)))
        .collect();

    let path = ui_path(ui, "slaves");
    let at = |page: usize| href(&path, &sq.link(sq.sort, sq.desc, page));
    let pager = Pager {
        first: (paging.page > 1).then(|| at(1)),
        prev: (paging.page > 1).then(|| at(paging.page - 1)),
        next: (paging.page < paging.pages).then(|| at(paging.page + 1)),
        last: (paging.page < paging.pages).then(|| at(paging.pages)),
    };
    let columns = column_heads(&slave_columns(live.is_some()), sq.sort, sq.desc, |k, d| {
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
    // With the live filters the current master is a select box of its
    // own, not a chip.
    let is_chip = |param: &str| live.is_none() || param != "master";
    let chips: Vec<Chip> = EXACT_FILTERS
        .iter()
        .zip(&sq.exact)
        .enumerate()
        .filter(|(_, ((param, _), v))| !v.is_empty() && is_chip(param))
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
        lives => lives,
        live_filters => minijinja::context! {
            master => master,
            connected => sq.connected,
            connected_master => sq.connected_master,
            stale => sq.stale,
        },
        stale_choices => stale_choices(&sq.stale),
        options => minijinja::context! {
            pools => lookups.names(Table::Pools),
            environments => lookups.names(Table::Environments),
            purposes => lookups.names(Table::Purposes),
            masters => lookups.names(Table::Masters),
        },
        lookups => lookups,
        fields => editor_fields(Table::Slaves),
        matching_names => matching_names,
        max_bulk => MAX_BULK,
    };
    ui.render(StatusCode::OK, "slaves.html", ctx)
}

/// The "not seen for" choices, with a hand-written age (`stale=36h`) kept
/// as one more, so that the form does not drop it.
fn stale_choices(current: &str) -> Vec<(String, String)> {
    let mut choices: Vec<(String, String)> = STALE_CHOICES
        .iter()
        .map(|(v, l)| ((*v).to_owned(), (*l).to_owned()))
        .collect();
    if !current.is_empty() && !choices.iter().any(|(v, _)| v == current) {
        choices.push((current.to_owned(), current.to_owned()));
    }
    choices
}
