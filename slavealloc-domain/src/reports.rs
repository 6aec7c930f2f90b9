//! Reports over the fleet, written once for the web UI and the command
//! line: the one definition of a slave's silo as a report shows it, and the
//! silo × pool report.
//!
//! Reports read denormalized slave rows ([`crate::Inventory::list`] with
//! the decommissioned environment included): the silo is the names of the
//! slave's attributes, as an operator reads them.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::schema::{Row, Table, Value};

/// The columns of `slaves` that make a slave's allocation silo, in the
/// order reports show them: the other slaves of its pool with the same
/// values are its peers ([`crate::entities::Silo`], [`crate::rule`]).
/// Speed is not one: the allocator never looked at it, although the
/// original's report showed it.
pub const SILO_COLUMNS: [&str; 6] = ["envid", "purposeid", "distroid", "bitsid", "dcid", "trustid"];

/// The keys of [`SILO_COLUMNS`] in a denormalized slave row: `environment`,
/// `purpose`, `distro`, `bitlength`, `datacenter`, `trustlevel`.
pub fn silo_labels() -> [&'static str; 6] {
    SILO_COLUMNS.map(|c| Table::Slaves.column(c).and_then(|c| c.label).unwrap_or(c))
}

/// A denormalized slave row's silo, as its attributes' names (empty for a
/// missing one).
pub fn silo_of(slave: &Row) -> Vec<String> {
    silo_labels()
        .iter()
        .map(|k| slave.get(*k).and_then(Value::as_text).unwrap_or_default().to_owned())
        .collect()
}

/// The silo × pool report: how many slaves each silo has in each pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiloReport {
    /// The silo's attributes, as [`silo_labels`].
    pub attributes: [&'static str; 6],
    /// Every pool that has a slave, in [`natural_cmp`] order.
    pub pools: Vec<String>,
    /// One row per silo, in [`natural_cmp`] order of its attributes.
    pub rows: Vec<SiloRow>,
    /// Slaves per pool, in the pools' order.
    pub pool_totals: Vec<u64>,
    /// Every slave counted.
    pub total: u64,
}

/// One silo of a [`SiloReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiloRow {
    /// Its attributes' names, as [`SiloReport::attributes`].
    pub silo: Vec<String>,
    /// Slaves per pool, in [`SiloReport::pools`]' order.
    pub counts: Vec<u64>,
    /// Its slaves in every pool.
    pub total: u64,
}

/// The silo × pool report of these denormalized slave rows.
pub fn silo_report(slaves: &[Row]) -> SiloReport {
    let pool_of = |s: &Row| s.get("pool").and_then(Value::as_text).unwrap_or_default().to_owned();
    let mut pools: Vec<String> = slaves
        .iter()
        .map(pool_of)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    pools.sort_by(|a, b| natural_cmp(a, b));
    let column: BTreeMap<&str, usize> = pools.iter().enumerate().map(|(i, p)| (p.as_str(), i)).collect();
    let mut by_silo: BTreeMap<Vec<String>, Vec<u64>> = BTreeMap::new();
    for s in slaves {
        let counts = by_silo.entry(silo_of(s)).or_insert_with(|| vec![0; pools.len()]);
        counts[column[pool_of(s).as_str()]] += 1;
    }
    let mut rows: Vec<SiloRow> = by_silo
        .into_iter()
        .map(|(silo, counts)| SiloRow {
            total: counts.iter().sum(),
            silo,
            counts,
        })
        .collect();
    rows.sort_by(|a, b| cmp_all(&a.silo, &b.silo));
    let pool_totals = (0..pools.len())
        .map(|i| rows.iter().map(|r| r.counts[i]).sum())
        .collect();
    SiloReport {
        attributes: silo_labels(),
        pools,
        rows,
        pool_totals,
        total: slaves.len() as u64,
    }
}

/// How one pool's slaves of one silo are spread over the pool's masters now:
/// what the allocator balances, so a large spread means slaves have not
/// rebooted since a change, or a master was drained or locked to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiloSpread {
    /// The pool's name.
    pub pool: String,
    /// The silo, as [`silo_labels`].
    pub silo: Vec<String>,
    /// Its slaves.
    pub slaves: u64,
    /// Of which enabled.
    pub enabled: u64,
    /// The pool's masters in [`natural_cmp`] order of nickname, with how
    /// many of the group are on each.
    pub masters: Vec<MasterLoad>,
    /// Slaves of the group on no master now.
    pub unallocated: u64,
    /// Slaves on a master of another pool (locked there, or moved to this
    /// pool since they last booted).
    pub elsewhere: u64,
    /// Largest minus smallest count over the pool's enabled masters.
    pub spread: u64,
}

impl SiloSpread {
    /// More than the one slave of difference the allocator keeps to.
    pub fn imbalanced(&self) -> bool {
        self.spread > 1
    }
}

/// One master of a [`SiloSpread`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MasterLoad {
    /// Its nickname.
    pub nickname: String,
    /// Whether it takes new slaves.
    pub enabled: bool,
    /// The group's slaves on it now.
    pub slaves: u64,
}

/// The spread of every pool × silo group of these denormalized slave rows
/// over the pool's masters (plain `masters` rows), in pool then silo order.
pub fn silo_spreads(slaves: &[Row], masters: &[Row]) -> Vec<SiloSpread> {
    let int = |r: &Row, c: &str| r.get(c).and_then(Value::as_int);
    let mut groups: BTreeMap<(Option<i64>, Vec<String>), Vec<&Row>> = BTreeMap::new();
    for s in slaves {
        groups.entry((int(s, "poolid"), silo_of(s))).or_default().push(s);
    }
    let mut spreads: Vec<SiloSpread> = groups
        .into_iter()
        .map(|((poolid, silo), members)| {
            let mut pool_masters: Vec<&Row> = masters.iter().filter(|m| int(m, "poolid") == poolid).collect();
            let nickname = |m: &Row| {
                m.get("nickname")
                    .and_then(Value::as_text)
                    .unwrap_or_default()
                    .to_owned()
            };
            pool_masters.sort_by(|a, b| natural_cmp(&nickname(a), &nickname(b)));
            let mut on: BTreeMap<i64, u64> = BTreeMap::new();
            let (mut unallocated, mut enabled) = (0, 0);
            for s in &members {
                if s.get("enabled") == Some(&Value::Bool(true)) {
                    enabled += 1;
                }
                match int(s, "current_masterid") {
                    Some(m) => *on.entry(m).or_default() += 1,
                    None => unallocated += 1,
                }
            }
            let loads: Vec<MasterLoad> = pool_masters
                .iter()
                .map(|m| MasterLoad {
                    nickname: nickname(m),
                    enabled: m.get("enabled") == Some(&Value::Bool(true)),
                    slaves: int(m, "masterid").and_then(|id| on.get(&id)).copied().unwrap_or(0),
                })
                .collect();
            let in_pool: u64 = loads.iter().map(|m| m.slaves).sum();
            let counts = || loads.iter().filter(|m| m.enabled).map(|m| m.slaves);
            let spread = counts().max().zip(counts().min()).map_or(0, |(max, min)| max - min);
            SiloSpread {
                pool: members[0]
                    .get("pool")
                    .and_then(Value::as_text)
                    .unwrap_or_default()
                    .to_owned(),
                silo,
                slaves: members.len() as u64,
                enabled,
                elsewhere: (members.len() as u64).saturating_sub(unallocated + in_pool),
                unallocated,
                masters: loads,
                spread,
            }
        })
        .collect();
    spreads.sort_by(|a, b| natural_cmp(&a.pool, &b.pool).then_with(|| cmp_all(&a.silo, &b.silo)));
    spreads
}

/// One pool at a glance: its slaves and masters, and how many of its slaves
/// were allocated recently.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolSummary {
    /// The pool's name.
    pub pool: String,
    /// Its slaves.
    pub slaves: u64,
    /// Of which enabled.
    pub enabled: u64,
    /// Of which on a master now.
    pub on_master: u64,
    /// Its masters.
    pub masters: u64,
    /// Of which enabled.
    pub masters_enabled: u64,
    /// Allocations of its slaves among `allocated` (see [`pool_summaries`]).
    pub allocated: u64,
}

/// Every pool (plain `pools` rows) with its slaves and masters (plain
/// rows), and the allocations `allocated` lists (slave ids, one per
/// allocation, e.g. those of the last hour's audit log), in
/// [`natural_cmp`] order of name.
pub fn pool_summaries(pools: &[Row], slaves: &[Row], masters: &[Row], allocated: &[i64]) -> Vec<PoolSummary> {
    let int = |r: &Row, c: &str| r.get(c).and_then(Value::as_int);
    let is_true = |r: &Row, c: &str| r.get(c) == Some(&Value::Bool(true));
    let mut per_pool: BTreeMap<i64, PoolSummary> = pools
        .iter()
        .filter_map(|p| {
            let name = p.get("name").and_then(Value::as_text)?.to_owned();
            Some((
                int(p, "poolid")?,
                PoolSummary {
                    pool: name,
                    ..PoolSummary::default()
                },
            ))
        })
        .collect();
    let mut pool_of: BTreeMap<i64, i64> = BTreeMap::new();
    for s in slaves {
        let Some(poolid) = int(s, "poolid") else { continue };
        if let Some(id) = int(s, "slaveid") {
            pool_of.insert(id, poolid);
        }
        if let Some(sum) = per_pool.get_mut(&poolid) {
            sum.slaves += 1;
            sum.enabled += u64::from(is_true(s, "enabled"));
            sum.on_master += u64::from(int(s, "current_masterid").is_some());
        }
    }
    for m in masters {
        if let Some(sum) = int(m, "poolid").and_then(|p| per_pool.get_mut(&p)) {
            sum.masters += 1;
            sum.masters_enabled += u64::from(is_true(m, "enabled"));
        }
    }
    for id in allocated {
        if let Some(sum) = pool_of.get(id).and_then(|p| per_pool.get_mut(p)) {
            sum.allocated += 1;
        }
    }
    let mut summaries: Vec<PoolSummary> = per_pool.into_values().collect();
    summaries.sort_by(|a, b| natural_cmp(&a.pool, &b.pool));
    summaries
}

/// [`natural_cmp`] of two silos, attribute by attribute.
pub fn cmp_all<S: AsRef<str>>(a: &[S], b: &[S]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| natural_cmp(x.as_ref(), y.as_ref()))
        .find(|o| o.is_ne())
        .unwrap_or_else(|| a.len().cmp(&b.len()))
}

/// Compares strings the way people read host names: runs of digits by
/// value (`tst-2` before `tst-10`), letters case-insensitively.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (whole_a, whole_b) = (a, b);
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            // Equal to a reader (`a07` and `a7`, `A` and `a`): still a total
            // order, so that sorting is deterministic.
            (None, None) => return whole_a.len().cmp(&whole_b.len()).then_with(|| whole_a.cmp(whole_b)),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (ra, rb) = (run(a), run(b));
                let strip = |s: &'_ [u8]| -> usize { s.iter().take_while(|c| **c == b'0').count() };
                let (na, nb) = (&a[strip(&a[..ra])..ra], &b[strip(&b[..rb])..rb]);
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[ra..];
                b = &b[rb..];
            }
            (Some(x), Some(y)) => {
                let ord = x.to_ascii_lowercase().cmp(&y.to_ascii_lowercase());
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::Slave;
    use crate::schema::from_row;

    fn slave(pool: &str, env: &str, distro: &str) -> Row {
        [
            ("pool", pool),
            ("environment", env),
            ("purpose", "tests"),
            ("distro", distro),
            ("bitlength", "64"),
            ("datacenter", "mdc1"),
            ("trustlevel", "core"),
            ("speed", "fast"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::Text(v.to_owned())))
        .collect()
    }

    #[test]
    fn the_report_silo_is_the_allocators() {
        // Every column of the rule's Silo, and nothing else.
        let ids: Row = SILO_COLUMNS
            .iter()
            .enumerate()
            .map(|(i, c)| ((*c).to_owned(), Value::Int(i as i64 + 1)))
            .collect();
        let mut row = ids.clone();
        for (k, v) in [
            ("slaveid", Value::Int(1)),
            ("name", Value::Text("s".into())),
            ("speedid", Value::Int(99)),
            ("poolid", Value::Int(1)),
            ("basedir", Value::Text("/b".into())),
            ("locked_masterid", Value::Null),
            ("custom_tplid", Value::Null),
            ("enabled", Value::Bool(true)),
            ("notes", Value::Null),
            ("current_masterid", Value::Null),
        ] {
            row.insert(k.to_owned(), v);
        }
        let slave: Slave = from_row(&row).unwrap();
        let silo = slave.silo();
        let values = [
            silo.envid,
            silo.purposeid,
            silo.distroid,
            silo.bitsid,
            silo.dcid,
            silo.trustid,
        ];
        assert_eq!(values, [1, 2, 3, 4, 5, 6]);
        assert_eq!(
            silo_labels(),
            [
                "environment",
                "purpose",
                "distro",
                "bitlength",
                "datacenter",
                "trustlevel"
            ]
        );
    }

    #[test]
    fn the_spread_is_over_the_pools_enabled_masters() {
        let master = |id: i64, nick: &str, enabled: bool| -> Row {
            [
                ("masterid".to_owned(), Value::Int(id)),
                ("nickname".to_owned(), Value::Text(nick.into())),
                ("poolid".to_owned(), Value::Int(1)),
                ("enabled".to_owned(), Value::Bool(enabled)),
            ]
            .into()
        };
        let on = |m: Option<i64>| {
            let mut s = slave("p", "prod", "ubuntu64");
            s.insert("poolid".into(), Value::Int(1));
            s.insert("enabled".into(), Value::Bool(true));
            s.insert("current_masterid".into(), m.map_or(Value::Null, Value::Int));
            s
        };
        let slaves = [
            on(Some(1)),
            on(Some(1)),
            on(Some(1)),
            on(Some(2)),
            on(None),
            on(Some(9)),
        ];
        let masters = [
            master(2, "bm10", true),
            master(1, "bm9", true),
            master(3, "bm11", false),
        ];
        let spreads = silo_spreads(&slaves, &masters);
        assert_eq!(spreads.len(), 1);
        let g = &spreads[0];
        let loads: Vec<(&str, u64)> = g.masters.iter().map(|m| (m.nickname.as_str(), m.slaves)).collect();
        assert_eq!(
            loads,
            [("bm9", 3), ("bm10", 1), ("bm11", 0)],
            "natural order of nicknames"
        );
        assert_eq!((g.slaves, g.unallocated, g.elsewhere), (6, 1, 1));
        assert_eq!(g.spread, 2, "over the enabled masters only");
        assert!(g.imbalanced());
    }

    #[test]
    fn pools_are_summed_up_with_their_recent_allocations() {
        let row =
            |pairs: &[(&str, Value)]| -> Row { pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect() };
        let pools = [
            row(&[("poolid", Value::Int(1)), ("name", Value::Text("pool-10".into()))]),
            row(&[("poolid", Value::Int(2)), ("name", Value::Text("pool-2".into()))]),
        ];
        let slave = |id: i64, pool: i64, enabled: bool, on: Option<i64>| {
            row(&[
                ("slaveid", Value::Int(id)),
                ("poolid", Value::Int(pool)),
                ("enabled", Value::Bool(enabled)),
                ("current_masterid", on.map_or(Value::Null, Value::Int)),
            ])
        };
        let slaves = [
            slave(1, 1, true, Some(1)),
            slave(2, 1, false, None),
            slave(3, 2, true, Some(2)),
        ];
        let masters = [
            row(&[
                ("masterid", Value::Int(1)),
                ("poolid", Value::Int(1)),
                ("enabled", Value::Bool(true)),
            ]),
            row(&[
                ("masterid", Value::Int(2)),
                ("poolid", Value::Int(2)),
                ("enabled", Value::Bool(false)),
            ]),
        ];
        let sums = pool_summaries(&pools, &slaves, &masters, &[1, 1, 3]);
        let names: Vec<&str> = sums.iter().map(|s| s.pool.as_str()).collect();
        assert_eq!(names, ["pool-2", "pool-10"]);
        let p10 = &sums[1];
        assert_eq!(
            (
                p10.slaves,
                p10.enabled,
                p10.on_master,
                p10.masters,
                p10.masters_enabled,
                p10.allocated
            ),
            (2, 1, 1, 1, 1, 2)
        );
        assert_eq!((sums[0].masters_enabled, sums[0].allocated), (0, 1));
    }

    #[test]
    fn the_report_counts_each_silo_per_pool_in_natural_order() {
        let slaves = [
            slave("pool-10", "prod", "ubuntu64"),
            slave("pool-2", "prod", "ubuntu64"),
            slave("pool-2", "prod", "ubuntu64"),
            slave("pool-2", "decomm", "win10"),
        ];
        let report = silo_report(&slaves);
        assert_eq!(report.pools, ["pool-2", "pool-10"]);
        assert_eq!(report.rows.len(), 2, "speed makes no silo of its own");
        assert_eq!(report.rows[0].silo[0], "decomm");
        assert_eq!(report.rows[1].counts, [2, 1]);
        assert_eq!(report.rows[1].total, 3);
        assert_eq!(report.pool_totals, [3, 1]);
        assert_eq!(report.total, 4);
    }
}
