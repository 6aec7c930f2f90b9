//! Pure helpers of the pages: query parsing and link building, natural
//! sorting, text filtering, paging. No I/O, so they are unit-tested here.

use std::cmp::Ordering;
use std::time::SystemTime;

use slavealloc_domain::audit::format_at;
use slavealloc_domain::live::age;
use slavealloc_domain::{Row, Value};

/// A parsed query string. Parsing never fails: a malformed query is read as
/// far as it makes sense, and unknown or bad values fall back to defaults,
/// because a hand-edited URL should show a page, not an error.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(raw: &str) -> Self {
        Self(form_urlencoded::parse(raw.as_bytes()).into_owned().collect())
    }

    /// The first non-empty value of `key`, trimmed.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
            .find(|v| !v.is_empty())
    }

    pub(crate) fn text(&self, key: &str) -> String {
        self.get(key).unwrap_or_default().to_owned()
    }

    pub(crate) fn number(&self, key: &str) -> Option<usize> {
        self.get(key)?.parse().ok()
    }

    pub(crate) fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "on" | "true" | "yes"))
    }
}

/// Builds a query string from the pairs whose value is not empty.
pub(crate) fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        s.append_pair(k, v);
    }
    s.finish()
}

/// A path segment as the browser sent it, percent-decoded (warp hands
/// segments over as they came). A `+` stays a `+`: that is a query
/// string's space, not a path's.
pub(crate) fn decode_segment(segment: &str) -> String {
    let raw = format!("s={}", segment.replace('+', "%2B").replace('&', "%26"));
    form_urlencoded::parse(raw.as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// `path` with `?query` when the query is not empty.
pub(crate) fn href(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

pub(crate) use slavealloc_domain::reports::natural_cmp;

/// A value as a table shows it, borrowed from a row or a name map, so
/// that 10,000 rows can be filtered and sorted without copying them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Text(&'a str),
}

impl<'a> From<Option<&'a Value>> for Cell<'a> {
    fn from(v: Option<&'a Value>) -> Self {
        match v {
            None | Some(Value::Null) => Cell::Null,
            Some(Value::Bool(b)) => Cell::Bool(*b),
            Some(Value::Int(i)) => Cell::Int(*i),
            Some(Value::Text(s)) => Cell::Text(s),
        }
    }
}

impl Cell<'_> {
    /// The text a filter searches.
    pub(crate) fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Cell::Null => "".into(),
            Cell::Bool(true) => "yes".into(),
            Cell::Bool(false) => "no".into(),
            Cell::Int(i) => i.to_string().into(),
            Cell::Text(s) => (*s).into(),
        }
    }
}

/// Orders cells of one column: NULLs last in either direction, so the
/// rows that have a value stay on the first pages.
pub(crate) fn cmp_cells(a: Cell<'_>, b: Cell<'_>, desc: bool) -> Ordering {
    let ord = match (a, b) {
        (Cell::Null, Cell::Null) => return Ordering::Equal,
        (Cell::Null, _) => return Ordering::Greater,
        (_, Cell::Null) => return Ordering::Less,
        (Cell::Text(x), Cell::Text(y)) => natural_cmp(x, y),
        (Cell::Bool(x), Cell::Bool(y)) => x.cmp(&y),
        (Cell::Int(x), Cell::Int(y)) => x.cmp(&y),
        // Mixed kinds do not occur within one column.
        _ => Ordering::Equal,
    };
    if desc {
        ord.reverse()
    } else {
        ord
    }
}

/// The order of `items` by a key cell, ties by a second cell (ascending):
/// keys are read once per item, not once per comparison.
pub(crate) fn sorted_indices<'a, T>(
    items: &'a [T],
    key: impl Fn(&'a T) -> Cell<'a>,
    tie: impl Fn(&'a T) -> Cell<'a>,
    desc: bool,
) -> Vec<usize> {
    let mut keyed: Vec<(Cell<'a>, Cell<'a>, usize)> =
        items.iter().enumerate().map(|(i, t)| (key(t), tie(t), i)).collect();
    keyed.sort_by(|a, b| cmp_cells(a.0, b.0, desc).then_with(|| cmp_cells(a.1, b.1, false)));
    keyed.into_iter().map(|(_, _, i)| i).collect()
}

/// Sorts rows by one column, ties by `tie`.
pub(crate) fn sort_rows(rows: &mut Vec<Row>, key: &str, desc: bool, tie: &str) {
    let order = sorted_indices(rows, |r| Cell::from(r.get(key)), |r| Cell::from(r.get(tie)), desc);
    let mut slots: Vec<Option<Row>> = std::mem::take(rows).into_iter().map(Some).collect();
    *rows = order.into_iter().filter_map(|i| slots[i].take()).collect();
}

/// A case-insensitive text filter: every word must occur in one of the
/// given columns.
#[derive(Debug)]
pub(crate) struct TextFilter(Vec<String>);

impl TextFilter {
    pub(crate) fn new(q: &str) -> Self {
        Self(q.split_whitespace().map(str::to_lowercase).collect())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn matches(&self, row: &Row, columns: &[&str]) -> bool {
        self.matches_cells(columns.iter().map(|c| Cell::from(row.get(*c))))
    }

    pub(crate) fn matches_cells<'a>(&self, cells: impl Iterator<Item = Cell<'a>>) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let mut hay = String::new();
        for cell in cells {
            hay.push_str(&cell.text().to_lowercase());
            // A separator no word contains, so words never match across two
            // columns.
            hay.push('\u{1}');
        }
        self.0.iter().all(|w| hay.contains(w.as_str()))
    }
}

/// A value as the tables show it.
pub(crate) fn display(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::Int(i) => i.to_string(),
        Value::Text(s) => s.clone(),
    }
}

/// One page of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Paging {
    /// 1-based page number, clamped to the pages there are.
    pub page: usize,
    pub pages: usize,
    pub per: usize,
    pub total: usize,
    /// 1-based index of the first row shown (0 when there is none).
    pub first: usize,
    /// 1-based index of the last row shown.
    pub last: usize,
}

impl Paging {
    pub(crate) fn new(total: usize, per: usize, page: usize) -> Self {
        let per = per.max(1);
        let pages = total.div_ceil(per).max(1);
        let page = page.clamp(1, pages);
        let start = (page - 1) * per;
        let end = (start + per).min(total);
        Self {
            page,
            pages,
            per,
            total,
            first: if total == 0 { 0 } else { start + 1 },
            last: end,
        }
    }

    pub(crate) fn range(&self) -> std::ops::Range<usize> {
        self.first.saturating_sub(1)..self.last
    }
}

/// Escapes text for HTML text and quoted attribute values.
pub(crate) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The `thousands` template filter: `12345` → `12,345`.
pub(crate) fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// How long ago `then` was at `now`, as the pages say it: the same steps
/// as `app.js`'s `ago`, so a time reads the same rendered here or there. A
/// time ahead of `now` (another daemon's clock) is "just now".
pub(crate) fn ago(now: SystemTime, then: SystemTime) -> String {
    // Rounded as app.js rounds.
    let round = |n: u64, by: u64| (n + by / 2) / by;
    let s = age(now, then).as_secs();
    if s < 60 {
        return "just now".into();
    }
    let m = round(s, 60);
    if m < 60 {
        return format!("{m} min ago");
    }
    let h = round(m, 60);
    if h < 48 {
        return format!("{h} h ago");
    }
    format!("{} days ago", round(h, 24))
}

/// A moment as the pages show it: relative in the text, exact in the title,
/// machine-readable in `datetime`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Moment {
    /// RFC 3339 UTC, as the API writes times.
    pub at: String,
    /// `2026-12-01 07:00:00 UTC`.
    pub exact: String,
    /// `3 min ago`.
    pub ago: String,
}

impl Moment {
    pub(crate) fn new(now: SystemTime, then: SystemTime) -> Self {
        let at = format_at(then);
        Self {
            exact: at.replace('T', " ").replace('Z', " UTC"),
            ago: ago(now, then),
            at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_reads_numbers_as_numbers() {
        let mut names = vec!["tst-10", "tst-2", "TST-1", "tst-02b", "tst", "bld-9"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, ["bld-9", "tst", "TST-1", "tst-2", "tst-02b", "tst-10"]);
        assert_eq!(
            natural_cmp("a007", "a7"),
            Ordering::Greater,
            "equal value: the longer text last"
        );
    }

    #[test]
    fn nulls_sort_last_both_ways() {
        let mut rows: Vec<Row> = [Some("b"), None, Some("a")]
            .iter()
            .enumerate()
            .map(|(i, v)| {
                Row::from([
                    ("name".to_owned(), Value::Text(format!("s{i}"))),
                    ("pool".to_owned(), v.map_or(Value::Null, |v| Value::Text(v.into()))),
                ])
            })
            .collect();
        let pools = |rows: &[Row]| rows.iter().map(|r| display(&r["pool"])).collect::<Vec<_>>();
        sort_rows(&mut rows, "pool", false, "name");
        assert_eq!(pools(&rows), ["a", "b", ""]);
        sort_rows(&mut rows, "pool", true, "name");
        assert_eq!(pools(&rows), ["b", "a", ""]);
    }

    #[test]
    fn text_filter_needs_every_word_within_one_column() {
        let row = Row::from([
            ("name".to_owned(), Value::Text("tst-linux64-0042".into())),
            ("pool".to_owned(), Value::Text("tests-pool".into())),
            ("notes".to_owned(), Value::Null),
        ]);
        let cols = ["name", "pool", "notes"];
        assert!(TextFilter::new("").matches(&row, &cols));
        assert!(TextFilter::new("LINUX64 tests").matches(&row, &cols));
        assert!(!TextFilter::new("linux64 builds").matches(&row, &cols));
        assert!(
            !TextFilter::new("0042tests").matches(&row, &cols),
            "no match across columns"
        );
    }

    #[test]
    fn paging_clamps_and_counts_from_one() {
        assert_eq!(
            Paging::new(250, 100, 3),
            Paging {
                page: 3,
                pages: 3,
                per: 100,
                total: 250,
                first: 201,
                last: 250
            }
        );
        assert_eq!(Paging::new(250, 100, 99).page, 3);
        assert_eq!(Paging::new(250, 100, 0).page, 1);
        let empty = Paging::new(0, 100, 5);
        assert_eq!((empty.page, empty.pages, empty.first, empty.last), (1, 1, 0, 0));
        assert!(empty.range().is_empty());
        assert_eq!(Paging::new(250, 100, 2).range(), 100..200);
    }

    #[test]
    fn params_never_fail_and_links_drop_empty_values() {
        let p = Params::parse("q=tst+linux&page=x&pool=&pool=b%26c&decomm=1&%zz");
        assert_eq!(p.get("q"), Some("tst linux"));
        assert_eq!(p.number("page"), None);
        assert_eq!(p.get("pool"), Some("b&c"));
        assert!(p.flag("decomm"));
        assert_eq!(
            query(&[("q", "a b"), ("pool", ""), ("sort", "pool")]),
            "q=a+b&sort=pool"
        );
        assert_eq!(href("/ui/slaves", ""), "/ui/slaves");
    }

    #[test]
    fn path_segments_are_percent_decoded_and_keep_plus() {
        assert_eq!(decode_segment("bm01"), "bm01");
        assert_eq!(decode_segment("a%20b+c%2Fd"), "a b+c/d");
        assert_eq!(decode_segment("%zz&x=1"), "%zz&x=1");
    }

    #[test]
    fn html_escaping_covers_text_and_attributes() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>/"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;/"
        );
    }

    #[test]
    fn ago_reads_like_the_scripts() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(10_000_000);
        let before = |secs: u64| now - std::time::Duration::from_secs(secs);
        assert_eq!(ago(now, before(59)), "just now");
        assert_eq!(ago(now, before(3 * 60 + 10)), "3 min ago");
        assert_eq!(ago(now, before(90 * 60)), "2 h ago");
        assert_eq!(ago(now, before(47 * 3600)), "47 h ago");
        assert_eq!(ago(now, before(10 * 86_400)), "10 days ago");
        assert_eq!(
            ago(now, now + std::time::Duration::from_secs(30)),
            "just now",
            "a clock ahead of ours"
        );
        let m = Moment::new(now, before(0));
        assert_eq!(m.at, "1970-04-26T17:46:40Z");
        assert_eq!(m.exact, "1970-04-26 17:46:40 UTC");
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(-1_234_567), "-1,234,567");
    }
}
